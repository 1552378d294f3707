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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::ffi::Lib;
use super::LibvirtError;

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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

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
