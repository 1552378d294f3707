//! libvirt's default event loop, on a thread of its own.
//!
//! libvirt delivers events (QEMU's, the domain's lifecycle, the loss of the
//! connection) and keeps connections alive only while some thread runs
//! `virEventRunDefaultImpl` in a loop. One such thread serves every libvirt
//! connection of the process: each connection holds a [`LoopGuard`]; the
//! first starts the thread and the last one's drop stops it and waits for
//! it, so the thread never outlives the connections that need it.
//!
//! Stopping: a flag is set and a timer that fires at once is added, which
//! wakes the loop (adding a timer interrupts a blocked iteration). Before
//! it ends, the thread removes that timer and runs what libvirt left
//! pending: libvirt (6.1 and later, on GLib) frees removed timers and
//! watches, and so closes the sockets of closed connections, from idle
//! callbacks of the loop.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::ffi::Lib;
use super::LibvirtError;
use crate::plumbing::lock;

/// Most idle iterations run when the loop stops (each runs every pending
/// clean-up of one priority level; a handful are enough).
const MAX_DRAIN_ITERATIONS: usize = 1000;

struct Running {
    thread: JoinHandle<()>,
    stop: Arc<AtomicBool>,
    /// The wake-up timer, for the thread to remove before it ends.
    wake: Arc<Mutex<Option<c_int>>>,
}

struct State {
    users: usize,
    running: Option<Running>,
}

static STATE: Mutex<State> = Mutex::new(State {
    users: 0,
    running: None,
});

/// Keeps the event loop thread running while it exists.
pub(super) struct LoopGuard {
    lib: &'static Lib,
}

impl std::fmt::Debug for LoopGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoopGuard")
    }
}

/// Start the event loop thread if it is not running, and keep it running
/// until the returned guard is dropped.
pub(super) fn acquire(lib: &'static Lib) -> Result<LoopGuard, LibvirtError> {
    let mut state = lock(&STATE);
    if state.running.is_none() {
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Mutex::new(None));
        let (s, w) = (Arc::clone(&stop), Arc::clone(&wake));
        let thread = std::thread::Builder::new()
            .name("libvirt-events".to_owned())
            .spawn(move || run(lib, &s, &w))
            .map_err(|e| LibvirtError::Libvirt {
                message: format!("cannot start the libvirt event thread: {e}"),
            })?;
        state.running = Some(Running { thread, stop, wake });
    }
    state.users += 1;
    Ok(LoopGuard { lib })
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        let mut state = lock(&STATE);
        state.users = state.users.saturating_sub(1);
        if state.users > 0 {
            return;
        }
        let Some(running) = state.running.take() else {
            return;
        };
        if running.thread.thread().id() == std::thread::current().id() {
            // Cannot wait for ourselves: the loop ends after this iteration.
            running.stop.store(true, Ordering::SeqCst);
            return;
        }
        // SAFETY: `wake_up` ignores its arguments; a null opaque and no free
        // function are valid.
        let timer =
            unsafe { (self.lib.virEventAddTimeout)(0, wake_up, std::ptr::null_mut(), None) };
        if timer < 0 {
            let _ = self.lib.take_error();
        } else {
            *lock(&running.wake) = Some(timer);
        }
        running.stop.store(true, Ordering::SeqCst);
        if timer >= 0 {
            // The state stays locked: a connection opened meanwhile waits
            // for this thread to end, then starts a new one.
            let _ = running.thread.join();
        }
        // Without a wake-up timer the thread ends at its next event;
        // waiting for it could take for ever.
    }
}

/// What a [`settle`] timer and its caller share.
struct Ticks {
    lib: &'static Lib,
    state: Mutex<TickState>,
    changed: Condvar,
}

struct TickState {
    /// The timer's id, once added.
    timer: Option<c_int>,
    /// Iterations in which it fired.
    count: u32,
    /// It was removed (by its callback or by the caller).
    removed: bool,
}

impl Ticks {
    /// Remove the timer, once (called with the state locked).
    fn remove(&self, state: &mut TickState) {
        if let (Some(timer), false) = (state.timer, state.removed) {
            state.removed = true;
            // SAFETY: a timer added by `settle` and not removed yet;
            // libvirt allows removing a timer from its own callback.
            if unsafe { (self.lib.virEventRemoveTimeout)(timer) } < 0 {
                let _ = self.lib.take_error();
            }
        }
    }
}

/// Wait (at most `limit`) until the event loop has gone around once more:
/// everything libvirt queued for it before this call, such as the events
/// that arrived before a reply, has then been dispatched.
///
/// libvirt's client library hands events over through a timer of the
/// loop that it sets to fire at once when it queues them; a timer added
/// now fires in the same iteration as that one, or a later one. So once
/// ours has fired twice, the iteration that dispatched theirs is over.
/// The timer removes itself then, so the loop does not spin on it.
pub(super) fn settle(lib: &'static Lib, limit: Duration) {
    let ticks = Arc::new(Ticks {
        lib,
        state: Mutex::new(TickState {
            timer: None,
            count: 0,
            removed: false,
        }),
        changed: Condvar::new(),
    });
    let opaque = Arc::into_raw(Arc::clone(&ticks))
        .cast_mut()
        .cast::<c_void>();
    // Held while adding, so the callback sees the timer's id.
    let mut state = lock(&ticks.state);
    // SAFETY: `opaque` is a counted reference that libvirt gives back to
    // `release_ticks` once the timer is removed (never for a failed
    // registration).
    let timer = unsafe { (lib.virEventAddTimeout)(0, tick, opaque, Some(release_ticks)) };
    if timer < 0 {
        drop(state);
        let _ = lib.take_error();
        // SAFETY: not registered: the reference is still ours.
        unsafe { release_ticks(opaque) };
        return;
    }
    state.timer = Some(timer);
    let deadline = Instant::now() + limit;
    while state.count < 2 {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        state = ticks
            .changed
            .wait_timeout(state, deadline - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    ticks.remove(&mut state);
}

/// A [`settle`] timer fired: count it; the second time, remove it.
unsafe extern "C" fn tick(_timer: c_int, opaque: *mut c_void) {
    // SAFETY: the reference registered with this timer, alive until
    // `release_ticks`.
    if let Some(ticks) = unsafe { opaque.cast_const().cast::<Ticks>().as_ref() } {
        let mut state = lock(&ticks.state);
        state.count += 1;
        if state.count >= 2 {
            ticks.remove(&mut state);
        }
        ticks.changed.notify_all();
    }
}

/// Release the reference held by a [`settle`] timer.
unsafe extern "C" fn release_ticks(opaque: *mut c_void) {
    if !opaque.is_null() {
        // SAFETY: made by `Arc::into_raw` in `settle`, released once.
        drop(unsafe { Arc::from_raw(opaque.cast_const().cast::<Ticks>()) });
    }
}

/// The wake-up timer's callback: firing is all it is for.
unsafe extern "C" fn wake_up(_timer: c_int, _opaque: *mut c_void) {}

fn run(lib: &'static Lib, stop: &AtomicBool, wake: &Mutex<Option<c_int>>) {
    while !stop.load(Ordering::SeqCst) {
        // SAFETY: the default implementation was registered when the
        // library was loaded.
        if unsafe { (lib.virEventRunDefaultImpl)() } < 0 {
            let _ = lib.take_error();
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if let Some(timer) = lock(wake).take() {
        // SAFETY: a timer this module added and has not removed.
        unsafe { (lib.virEventRemoveTimeout)(timer) };
    }
    if let Some(iterate) = lib.g_main_context_iteration {
        for _ in 0..MAX_DRAIN_ITERATIONS {
            // SAFETY: one non-blocking iteration of GLib's default context,
            // the one libvirt's default event loop runs on; no other thread
            // iterates it now.
            if unsafe { iterate(std::ptr::null_mut(), 0) } == 0 {
                break;
            }
        }
    }
}
