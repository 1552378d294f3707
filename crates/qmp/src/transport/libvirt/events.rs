//! QEMU's events and the domain's end, from libvirt: registering for
//! them, the callbacks libvirt calls (on its event loop thread), the
//! events rebuilt as QEMU sends them, and the wait for the events sent
//! before the replies received so far ([`Session::sync`]).

use std::ffi::{c_char, c_int, c_longlong, c_uint, c_void, CStr};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use super::connection::Handles;
use super::event_loop;
use super::ffi::{self, virConnectPtr, virDomainPtr, VirErr};
use super::messages::event_item;
use super::queue::Queue;
use super::session::Session;
use crate::plumbing::lock;

/// How long a sync waits for libvirt's event loop to hand over the events
/// it holds (normally microseconds).
pub(super) const SETTLE_LIMIT: Duration = Duration::from_secs(1);

/// Ids of the callbacks registered on a connection.
#[derive(Default)]
pub(super) struct Callbacks {
    pub(super) close: bool,
    pub(super) lifecycle: Option<c_int>,
    pub(super) monitor: Option<c_int>,
}

/// A reference to `queue` for a libvirt callback's opaque pointer, released
/// by [`free_queue`].
pub(super) fn queue_ref(queue: &Arc<Queue>) -> *mut c_void {
    Arc::into_raw(Arc::clone(queue)).cast_mut().cast()
}

impl Session {
    /// Register for the loss of the connection, the domain's lifecycle and,
    /// for the monitor, all of QEMU's events.
    pub(super) fn register(&self, h: &Handles) -> Result<(), VirErr> {
        let lib = self.lib;
        let conn = h.conn.ptr;
        let mut cbs = lock(&self.callbacks);
        let opaque = queue_ref(&self.queue);
        // SAFETY: a live connection; `opaque` is a counted reference that
        // libvirt gives back to `free_queue` once it is done with it.
        let rc = unsafe {
            (lib.virConnectRegisterCloseCallback)(conn, on_close, opaque, Some(free_queue))
        };
        if rc < 0 {
            // SAFETY: not registered: the reference is still ours to release.
            unsafe { free_queue(opaque) };
            return Err(lib.take_error());
        }
        cbs.close = true;

        let opaque = queue_ref(&self.queue);
        let lifecycle: ffi::virConnectDomainEventCallback = on_lifecycle;
        // SAFETY: as above. libvirt calls the callback of a
        // VIR_DOMAIN_EVENT_ID_LIFECYCLE registration with the lifecycle
        // signature; the API takes it as the generic type, as C's
        // VIR_DOMAIN_EVENT_CALLBACK cast does.
        let id = unsafe {
            let generic: ffi::virConnectDomainEventGenericCallback = std::mem::transmute(lifecycle);
            (lib.virConnectDomainEventRegisterAny)(
                conn,
                h.dom.ptr,
                ffi::VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                generic,
                opaque,
                Some(free_queue),
            )
        };
        if id < 0 {
            // SAFETY: not registered (libvirt does not call the free function
            // of a failed registration).
            unsafe { free_queue(opaque) };
            return Err(lib.take_error());
        }
        cbs.lifecycle = Some(id);

        if !self.agent {
            let opaque = queue_ref(&self.queue);
            // SAFETY: as above; a null event name means every event.
            let id = unsafe {
                (lib.virConnectDomainQemuMonitorEventRegister)(
                    conn,
                    h.dom.ptr,
                    std::ptr::null(),
                    on_monitor_event,
                    opaque,
                    Some(free_queue),
                    0,
                )
            };
            if id < 0 {
                // SAFETY: not registered.
                unsafe { free_queue(opaque) };
                return Err(lib.take_error());
            }
            cbs.monitor = Some(id);
        }
        Ok(())
    }

    /// Wait until every event QEMU sent before the replies queued so far
    /// has been queued and handled by the source's reader.
    ///
    /// libvirtd relays QEMU's events from its event loop, its replies from
    /// worker threads: a reply may leave before an event QEMU sent first.
    /// But libvirtd queues that event (its loop's timer fires at once)
    /// before it wakes the worker, and so relays it in the loop iteration
    /// that sends the reply at the latest; a request read after that, in a
    /// later iteration, is answered after it. So one round trip through
    /// libvirtd (`virDomainIsActive`) brings every such event here. Here,
    /// libvirt's client library hands events over on the event loop
    /// thread: [`event_loop::settle`] lets them through. Then a marker
    /// goes into the queue behind them, and the wait is for the source's
    /// reader to get past it.
    pub(super) fn sync(&self, timeout: Option<Duration>) -> io::Result<()> {
        // Only for the monitor: the guest agent has no syncer.
        let Some(h) = self.handles() else {
            return Ok(());
        };
        if let Err(e) = h.dom.is_active() {
            return Err(io::Error::other(format!("libvirt: {}", e.message)));
        }
        drop(h);
        event_loop::settle(self.lib, SETTLE_LIMIT);
        self.queue.mark_and_wait(timeout)
    }
}

/// Release a reference made by [`queue_ref`].
pub(super) unsafe extern "C" fn free_queue(opaque: *mut c_void) {
    if !opaque.is_null() {
        // SAFETY: `opaque` came from `queue_ref` and is released once.
        drop(unsafe { Arc::from_raw(opaque.cast_const().cast::<Queue>()) });
    }
}

/// The queue behind a callback's opaque pointer.
///
/// # Safety
/// `opaque` must be null or a reference made by [`queue_ref`] that libvirt
/// has not released yet (it holds it until it calls `free_queue`).
pub(super) unsafe fn queue_of<'a>(opaque: *mut c_void) -> Option<&'a Queue> {
    // SAFETY: per the contract.
    unsafe { opaque.cast_const().cast::<Queue>().as_ref() }
}

pub(super) unsafe extern "C" fn on_close(
    _conn: virConnectPtr,
    _reason: c_int,
    opaque: *mut c_void,
) {
    // Nothing here panics; the guard is for the future.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the opaque pointer registered with this callback.
        if let Some(q) = unsafe { queue_of(opaque) } {
            q.end();
        }
    }));
}

pub(super) unsafe extern "C" fn on_lifecycle(
    _conn: virConnectPtr,
    _dom: virDomainPtr,
    event: c_int,
    _detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if event == ffi::VIR_DOMAIN_EVENT_STOPPED {
            // SAFETY: the opaque pointer registered with this callback.
            if let Some(q) = unsafe { queue_of(opaque) } {
                q.end();
            }
        }
    }));
    0
}

pub(super) unsafe extern "C" fn on_monitor_event(
    _conn: virConnectPtr,
    _dom: virDomainPtr,
    event: *const c_char,
    seconds: c_longlong,
    micros: c_uint,
    details: *const c_char,
    opaque: *mut c_void,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the opaque pointer registered with this callback.
        let Some(q) = (unsafe { queue_of(opaque) }) else {
            return;
        };
        if event.is_null() {
            return;
        }
        // SAFETY: libvirt passes NUL-terminated strings (details may be
        // null), valid for the duration of the call.
        let (name, details) = unsafe {
            (
                CStr::from_ptr(event).to_string_lossy(),
                (!details.is_null()).then(|| CStr::from_ptr(details).to_bytes()),
            )
        };
        q.push(event_item(&name, seconds, micros, details));
    }));
}
