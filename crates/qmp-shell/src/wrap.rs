//! `qmp-shell-wrap`: start QEMU with its QMP monitor connected to us.
//!
//! The socket lives in a private (0700) temporary directory. QEMU is started
//! directly (no shell in between) with `-qmp unix:SOCKET` appended, in its own
//! process group (so a Ctrl-C meant for the shell does not kill it) and with
//! a parent-death signal (so it never outlives us). Whatever way the session
//! ends (end of input, `quit`, a signal) QEMU is stopped and the directory
//! removed.

use std::io::ErrorKind;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser as _;
use qmp::{Client, Listener};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::app::{client_options, die, run_session};
use crate::cli::{exit, WrapArgs};

/// The QEMU started when no command line is given.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";

/// How long QEMU gets to connect to our socket.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long QEMU gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The QEMU argv for the wrap's arguments: the default binary when none is
/// given, a leading `--` dropped, and the `-qmp` option appended.
pub fn qemu_argv(mut command: Vec<String>, socket: &std::path::Path) -> Vec<String> {
    if command.first().map(String::as_str) == Some("--") {
        command.remove(0);
    }
    if command.is_empty() {
        command.push(DEFAULT_QEMU.to_string());
    }
    command.push("-qmp".to_string());
    command.push(format!("unix:{}", socket.display()));
    command
}

/// Stop QEMU: SIGTERM (QEMU's own clean shutdown), then SIGKILL.
fn stop_child(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// The signal being handled (0: none). Once set, the signal thread owns the
/// cleanup and the exit status (128 + signal).
static SIGNALLED: AtomicI32 = AtomicI32::new(0);

/// When a signal is being handled, leave the cleanup and the exit to the
/// signal thread: stopping QEMU makes the main thread see it exit (or
/// disconnect), and without this it would race to exit with status 1 and
/// an error message.
fn park_if_signalled() {
    while SIGNALLED.load(Ordering::SeqCst) != 0 {
        std::thread::park();
    }
}

/// Stop QEMU and remove the directory from a signal-handling thread.
fn cleanup_on_signals(pid: Arc<AtomicI32>, dir: PathBuf) {
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            SIGNALLED.store(sig, Ordering::SeqCst);
            let pid = pid.load(Ordering::SeqCst);
            if pid > 0 {
                // SAFETY: kill(2) on the child we started.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
                let deadline = Instant::now() + STOP_GRACE;
                // SAFETY: kill(pid, 0) only probes for existence.
                while Instant::now() < deadline && unsafe { libc::kill(pid, 0) } == 0 {
                    let mut status = 0;
                    // SAFETY: reaping our own child, non-blocking.
                    if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                // SAFETY: as above; harmless if it is already gone.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            let _ = std::fs::remove_dir_all(&dir);
            std::process::exit(128 + sig);
        }
    });
}

/// The `qmp-shell-wrap` program; returns the exit status.
pub fn main() -> i32 {
    let args = WrapArgs::parse();
    let dir = match tempfile::Builder::new()
        .prefix("qmp-shell-wrap-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
    {
        Ok(dir) => dir,
        Err(err) => return die(&format!("cannot create a private directory: {err}")),
    };
    let socket = dir.path().join("qmp.sock");
    let listener = match Listener::bind(&socket) {
        Ok(listener) => listener,
        Err(err) => return die(&format!("cannot listen on {}: {err}", socket.display())),
    };
    let argv = qemu_argv(args.command.clone(), &socket);
    let pid = Arc::new(AtomicI32::new(0));
    cleanup_on_signals(pid.clone(), dir.path().to_path_buf());

    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(Stdio::null())
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to send
    // SIGTERM to QEMU if we die first.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = match command.spawn() {
        Ok(child) => child,
        Err(err) if err.kind() == ErrorKind::NotFound => {
            return die(&format!("QEMU executable '{}' not found.", argv[0]));
        }
        Err(err) => return die(&format!("cannot start '{}': {err}", argv[0])),
    };
    pid.store(child.id() as i32, Ordering::SeqCst);
    let child = Arc::new(Mutex::new(child));

    let code = (|| {
        let mut exited = None;
        let mut give_up = || {
            let mut guard = child.lock().unwrap_or_else(|e| e.into_inner());
            match guard.try_wait() {
                Ok(Some(status)) => {
                    exited = Some(status);
                    true
                }
                _ => false,
            }
        };
        let stream = match listener.accept(ACCEPT_TIMEOUT, &mut give_up) {
            Ok(Some(stream)) => stream,
            Ok(None) => {
                park_if_signalled();
                let status = exited.map(|s| s.to_string()).unwrap_or_default();
                return die(&format!("QEMU exited before connecting ({status})"));
            }
            Err(err) if err.kind() == ErrorKind::TimedOut => {
                return die(&format!(
                    "QEMU did not connect within {} s",
                    ACCEPT_TIMEOUT.as_secs()
                ))
            }
            Err(err) => return die(&format!("waiting for QEMU to connect: {err}")),
        };
        let opts = match client_options(&args.common, true) {
            Ok(opts) => opts,
            Err(msg) => return die(&msg),
        };
        let client = match Client::from_unix_stream(stream, opts) {
            Ok(client) => client,
            Err(err) => return die(&format!("QEMU connected but {err}")),
        };
        run_session(client, &args.common, Vec::new(), false)
    })();
    park_if_signalled();

    let mut guard = child.lock().unwrap_or_else(|e| e.into_inner());
    stop_child(&mut guard);
    pid.store(0, Ordering::SeqCst);
    drop(listener);
    if let Err(err) = dir.close() {
        eprintln!("warning: could not remove the socket directory: {err}");
    }
    if code == exit::OK {
        exit::OK
    } else {
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn argv_defaults_and_appends_the_socket() {
        let s = Path::new("/tmp/d/qmp.sock");
        assert_eq!(
            qemu_argv(vec![], s),
            ["qemu-system-x86_64", "-qmp", "unix:/tmp/d/qmp.sock"]
        );
        assert_eq!(
            qemu_argv(vec!["--".into(), "qemu".into(), "-S".into()], s),
            ["qemu", "-S", "-qmp", "unix:/tmp/d/qmp.sock"]
        );
    }
}
