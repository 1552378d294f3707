//! Signals: what Ctrl-C, SIGTERM and SIGHUP mean, in one place.
//!
//! A thread of our own receives SIGINT, SIGTERM and SIGHUP and turns them
//! into state the session engine polls ([`interrupts`], [`terminating`]),
//! ringing the engine's doorbells so it notices at once. At a terminal,
//! SIGINT means "stop waiting" (the engine abandons the replies it awaits);
//! elsewhere, and for SIGTERM and SIGHUP always, it means "end the session"
//! with status 128 + the signal. The main thread returns through its normal
//! path, so the terminal is restored, the history saved and QEMU stopped;
//! should it not finish within [`GRACE`], the signal thread runs the
//! registered emergency cleanups, restores the terminal and exits itself.
//!
//! A session that runs on one thread (not at a terminal, on a monitor's
//! socket: see [`install_inline`]) has no signal thread: the handlers
//! themselves set that state and wake the waits through a self-pipe, and
//! SIGALRM stands for the grace.

use std::io::IsTerminal;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread;
use std::time::{Duration, Instant};

use qmp_client::Interrupt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::doorbell::Doorbell;

/// How long the main thread gets to end cleanly after SIGTERM or SIGHUP.
pub const GRACE: Duration = Duration::from_secs(5);

static INTERRUPTS: AtomicU64 = AtomicU64::new(0);
static TERMINATE: AtomicI32 = AtomicI32::new(0);
/// SIGINT ends the session (not at a terminal).
static INTERRUPT_ENDS: AtomicBool = AtomicBool::new(true);

/// The thread blocked in the line editor, if any (a `pthread_t`).
static READLINE_THREAD: Mutex<Option<libc::pthread_t>> = Mutex::new(None);

type Cleanup = Box<dyn Fn() + Send + Sync>;

struct Registry {
    bells: Vec<Weak<Doorbell>>,
    cleanups: Vec<Cleanup>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    bells: Vec::new(),
    cleanups: Vec::new(),
});

/// The terminal settings at start-up, restored on every exit path.
static TERMIOS: OnceLock<Option<libc::termios>> = OnceLock::new();

/// What [`echo_off`] changed, until [`echo_on`].
static QUIET: Mutex<Option<Quieted>> = Mutex::new(None);

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Start handling signals (once per process); remember the terminal's
/// settings. `interrupt_ends`: SIGINT ends the session (pipes, `-c`)
/// rather than abandoning a wait (a terminal).
pub fn install(interrupt_ends: bool) {
    INTERRUPT_ENDS.store(interrupt_ends, Ordering::SeqCst);
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        TERMIOS.get_or_init(save_terminal);
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
            return;
        };
        let _ = thread::Builder::new()
            .name("signals".to_owned())
            .spawn(move || {
                for sig in signals.forever() {
                    handle(sig);
                }
            });
    });
}

/// The self-pipe of [`install_inline`]: (read end, write end).
static WAKE: OnceLock<(OwnedFd, OwnedFd)> = OnceLock::new();

/// Handle signals with no thread of our own, for a session that runs on
/// one thread (an inline client, which does its I/O while it waits):
/// SIGINT, SIGTERM and SIGHUP all end the session (there is no terminal
/// session to go back to). The handlers set the state the engine polls
/// ([`terminating`]) and write to a pipe that the client's waits watch
/// (the [`Interrupt`] returned), so a signal ends any wait at once. A
/// second signal exits at once; and should the main thread not end within
/// [`GRACE`] (blocked writing to a full standard output, say), SIGALRM ends
/// the process as the signal thread of [`install`] would: the terminal
/// restored, exit status 128 + the signal. `None` (nothing installed) if
/// the pipe or the handlers cannot be set up: then use [`install`].
pub fn install_inline() -> Option<Interrupt> {
    TERMIOS.get_or_init(save_terminal);
    let (read, write) = match WAKE.get() {
        Some(pipe) => pipe,
        None => {
            let pipe = crate::doorbell::wake_pipe().ok()?;
            WAKE.get_or_init(|| pipe)
        }
    };
    let wake = write.as_raw_fd();
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        // SAFETY: the handler only does what a signal handler may: atomic
        // operations, write(2), alarm(2), and the emergency exit's
        // tcsetattr(3) and _exit(2).
        let registered = unsafe {
            signal_hook::low_level::register(sig, move || {
                if TERMINATE.swap(sig, Ordering::SeqCst) != 0 {
                    exit_from_handler(sig);
                }
                libc::write(wake, [1u8].as_ptr().cast(), 1);
                libc::alarm(GRACE.as_secs() as libc::c_uint);
            })
        };
        if registered.is_err() {
            return None;
        }
    }
    // SAFETY: as above.
    let alarm = unsafe {
        signal_hook::low_level::register(libc::SIGALRM, || {
            exit_from_handler(TERMINATE.load(Ordering::SeqCst))
        })
    };
    alarm.ok()?;
    Some(Interrupt {
        fd: read.as_raw_fd(),
        stop: Arc::new(|| terminating().is_some()),
    })
}

/// The emergency exit from a signal handler: the terminal restored (what
/// [`emergency_exit`] does that a handler may do), exit 128 + `sig`.
fn exit_from_handler(sig: i32) -> ! {
    restore_terminal();
    // SAFETY: _exit(2) ends the process at once.
    unsafe { libc::_exit(128 + sig) }
}

fn handle(sig: i32) {
    if sig == SIGINT && !INTERRUPT_ENDS.load(Ordering::SeqCst) {
        INTERRUPTS.fetch_add(1, Ordering::SeqCst);
        ring_all();
        return;
    }
    if TERMINATE.swap(sig, Ordering::SeqCst) != 0 {
        // A second signal: do not wait any longer.
        emergency_exit(sig);
    }
    ring_all();
    wake_readline();
    // The main thread normally ends the process well before this.
    let deadline = Instant::now() + GRACE;
    let _ = thread::Builder::new()
        .name("signal-grace".to_owned())
        .spawn(move || {
            while Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
                wake_readline();
            }
            emergency_exit(sig);
        });
}

/// Run the emergency cleanups, restore the terminal and exit 128 + `sig`.
fn emergency_exit(sig: i32) -> ! {
    let cleanups = std::mem::take(&mut registry().cleanups);
    for cleanup in cleanups {
        cleanup();
    }
    // _exit(2) skips what exit(3) runs: an ssh set-up under way leaves
    // neither ssh nor its directory behind.
    qmp_client::transport::ssh::abort_setups();
    restore_terminal();
    echo_on();
    // SAFETY: _exit(2) ends the process at once, whatever other threads do.
    unsafe { libc::_exit(128 + sig) }
}

fn ring_all() {
    let bells: Vec<Arc<Doorbell>> = registry().bells.iter().filter_map(Weak::upgrade).collect();
    for bell in bells {
        bell.ring();
    }
}

/// Ring `bell` whenever a signal arrives.
pub fn watch(bell: &Arc<Doorbell>) {
    let mut reg = registry();
    reg.bells.retain(|b| b.strong_count() > 0);
    reg.bells.push(Arc::downgrade(bell));
}

/// Run `cleanup` should the process have to exit from the signal thread
/// (the main thread did not end within [`GRACE`] of SIGTERM or SIGHUP).
pub fn on_emergency(cleanup: Cleanup) {
    registry().cleanups.push(cleanup);
}

/// Run `work` (a connection attempt, say, which may take up to its own
/// timeout) on a thread of its own and return its result, or `None` as
/// soon as a signal arrives (SIGTERM, SIGHUP or SIGINT, even where SIGINT
/// only means "stop waiting"): the caller goes on ending the process while
/// `work` finishes (its result is dropped).
pub fn unless_terminated<T, F>(work: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let interrupted = interrupts();
    let stop = move || terminating().is_some() || interrupts() != interrupted;
    if stop() {
        return None;
    }
    let bell = Arc::new(Doorbell::new());
    watch(&bell);
    let slot: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
    let work = Arc::new(Mutex::new(Some(work)));
    let spawned = {
        let (bell, slot, work) = (Arc::clone(&bell), Arc::clone(&slot), Arc::clone(&work));
        thread::Builder::new()
            .name("attempt".to_owned())
            .spawn(move || {
                let taken = work.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(work) = taken {
                    let value = work();
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
                    bell.ring();
                }
            })
    };
    if spawned.is_err() {
        // No thread to spare: do it here, uninterruptibly.
        let taken = work.lock().unwrap_or_else(|e| e.into_inner()).take();
        return taken.map(|work| work());
    }
    loop {
        let seen = bell.seen();
        if let Some(value) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Some(value);
        }
        if stop() {
            return None;
        }
        bell.wait(seen, None);
    }
}

/// How many SIGINTs arrived (at a terminal, where they abandon a wait).
pub fn interrupts() -> u64 {
    INTERRUPTS.load(Ordering::SeqCst)
}

/// The signal that asked the session to end, if any.
pub fn terminating() -> Option<i32> {
    match TERMINATE.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Mark the current thread as blocked in the line editor (`true`) or not.
/// While it is, [`wake_readline`] interrupts the editor.
pub fn in_readline(inside: bool) {
    let mut t = READLINE_THREAD.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: pthread_self(3) cannot fail.
    *t = inside.then(|| unsafe { libc::pthread_self() });
}

/// Whether a thread is in the line editor.
pub fn readline_active() -> bool {
    READLINE_THREAD
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_some()
}

/// Make the line editor return (as if Ctrl-C were pressed), so the main
/// thread sees that the session must end. A no-op when no thread is in
/// the editor.
pub fn wake_readline() {
    let t = *READLINE_THREAD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(thread) = t {
        // SAFETY: the thread registered itself and unregisters before it
        // ends; the editor's own SIGINT handler turns this into an
        // interrupted read.
        unsafe {
            libc::pthread_kill(thread, SIGINT);
        }
    }
}

fn save_terminal() -> Option<libc::termios> {
    if !std::io::stdin().is_terminal() {
        return None;
    }
    // SAFETY: tcgetattr(3) fills the zeroed struct on success.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        (libc::tcgetattr(libc::STDIN_FILENO, &mut t) == 0).then_some(t)
    }
}

/// Put the terminal back as it was at start-up (echo, canonical mode),
/// if it was changed (so a shell in the background is not stopped by
/// SIGTTOU for nothing).
pub fn restore_terminal() {
    let Some(Some(saved)) = TERMIOS.get() else {
        return;
    };
    // SAFETY: tcgetattr/tcsetattr(3) on standard input with a zeroed struct
    // it fills, and settings tcgetattr returned earlier.
    unsafe {
        let mut now: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(libc::STDIN_FILENO, &mut now) == 0
            && now.c_lflag == saved.c_lflag
            && now.c_iflag == saved.c_iflag
            && now.c_oflag == saved.c_oflag
        {
            return;
        }
        libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
    }
}

/// How [`echo_off`] quiets the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quiet {
    /// Control keys echo as nothing visible: a `^C` after a progress bar
    /// that fills the line would wrap onto a line of its own, where
    /// clearing the bar does not reach it.
    ControlKeys,
    /// The shell is busy: what is typed is neither echoed nor edited by
    /// the terminal, so it reaches the line editor as typed at the next
    /// prompt (which shows it), and nothing printed meanwhile lands inside
    /// it; Ctrl-D and Ctrl-Z typed meanwhile act there too.
    TypeAhead,
}

/// What [`echo_off`] changed on the controlling terminal, until
/// [`echo_on`].
struct Quieted {
    tty: std::os::fd::OwnedFd,
    /// The local-mode flags it cleared.
    lflags: libc::tcflag_t,
    /// The suspend key it disabled.
    suspend: Option<libc::cc_t>,
}

/// Quiet the controlling terminal as `how` says, until [`echo_on`] (which
/// the emergency exit runs too). Ctrl-C still interrupts, and still
/// flushes what the terminal holds. Nothing is done when the process is
/// not in the terminal's foreground (it would be stopped for it) or has no
/// terminal.
pub fn echo_off(how: Quiet) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut quiet = QUIET.lock().unwrap_or_else(|e| e.into_inner());
    if quiet.is_some() {
        return;
    }
    // SAFETY: open(2) of a constant path; the descriptor is owned at once.
    let fd = unsafe {
        libc::open(
            c"/dev/tty".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return;
    }
    // SAFETY: `fd` was just opened and is not owned elsewhere.
    let tty = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: tcgetpgrp/getpgrp/tcgetattr/tcsetattr(3) on a terminal we
    // opened, with a zeroed struct tcgetattr fills.
    unsafe {
        if libc::tcgetpgrp(tty.as_raw_fd()) != libc::getpgrp() {
            return;
        }
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(tty.as_raw_fd(), &mut t) != 0 {
            return;
        }
        let (lflags, suspend) = match how {
            Quiet::ControlKeys => (t.c_lflag & libc::ECHOCTL, None),
            Quiet::TypeAhead => (
                t.c_lflag & (libc::ECHO | libc::ICANON),
                Some(t.c_cc[libc::VSUSP]),
            ),
        };
        t.c_lflag &= !lflags;
        if lflags & libc::ICANON != 0 {
            // Reads (by nobody while the shell is busy) return each key.
            t.c_cc[libc::VMIN] = 1;
            t.c_cc[libc::VTIME] = 0;
        }
        if suspend.is_some() {
            // _POSIX_VDISABLE: Ctrl-Z is a key, for the editor to act on.
            t.c_cc[libc::VSUSP] = 0;
        }
        if libc::tcsetattr(tty.as_raw_fd(), libc::TCSANOW, &t) != 0 {
            return;
        }
        *quiet = Some(Quieted {
            tty,
            lflags,
            suspend,
        });
    }
}

/// Undo [`echo_off`], if it changed anything.
pub fn echo_on() {
    use std::os::fd::AsRawFd;
    let Some(q) = QUIET.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    // SAFETY: tcgetattr/tcsetattr(3) on the terminal echo_off opened.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(q.tty.as_raw_fd(), &mut t) == 0 {
            t.c_lflag |= q.lflags;
            if let Some(key) = q.suspend {
                t.c_cc[libc::VSUSP] = key;
            }
            libc::tcsetattr(q.tty.as_raw_fd(), libc::TCSANOW, &t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unless_terminated_returns_the_result() {
        assert_eq!(unless_terminated(|| 6 * 7), Some(42));
        let held = Arc::new(Mutex::new(()));
        let guard = held.lock().unwrap();
        let h = Arc::clone(&held);
        let t = thread::spawn(move || unless_terminated(move || drop(h.lock())));
        thread::sleep(Duration::from_millis(20));
        drop(guard);
        assert_eq!(t.join().unwrap(), Some(()));
    }
}
