//! `qmp-shell-wrap`: start QEMU with its QMP monitor connected to us.
//!
//! The socket lives in a private (0700) temporary directory. QEMU is started
//! directly (no shell in between) with `-qmp unix:SOCKET` appended, in its own
//! process group (so a Ctrl-C meant for the shell never reaches it) and with
//! a parent-death signal. The wrap is a child subreaper, and learns QEMU's
//! pid from the socket (SO_PEERCRED), so it finds QEMU even when what it
//! started is a launcher script that does not `exec`, or QEMU daemonized
//! itself. Whatever way the session ends (end of input, `quit`, a signal),
//! QEMU is asked to `quit` over QMP, then signalled (its process group, then
//! SIGKILL after a grace period), and the directory is removed: nothing is
//! left running.
//!
//! With `--serve PATH`, other QMP clients can attach to the same QEMU on
//! PATH while the shell runs ([`qmp_client::router`], as `qmp-proxy` does); they
//! are disconnected and PATH removed when the shell ends, before QEMU is
//! stopped.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{CommandFactory as _, Parser as _};
use qmp_client::router::RouterOptions;
use qmp_client::{Client, Listener};

use crate::app::{cannot_start, die, die_as, run_session, SessionIo, Source};
use crate::cli::{self, WrapArgs, SHELL_ONLY_OPTIONS};
use crate::connect::{client_options, SharedLog};
use crate::proxy::share;
use crate::signals;
use crate::wording::client_error;

/// The QEMU started when no command line is given.
pub(crate) const DEFAULT_QEMU: &str = "qemu-system-x86_64";

/// How long QEMU gets to connect to our socket.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long QEMU gets to answer `quit` and exit.
const QUIT_GRACE: Duration = Duration::from_secs(3);

/// How long QEMU gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

const USAGE: &str = "qmp-shell-wrap [-h] [-H] [-v] [-p] [-l LOGFILE] [OPTIONS] [--] [QEMU ARGV...]";

/// `path` as a value inside a QEMU option list: commas doubled.
pub(crate) fn qemu_option_value(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// The QEMU argv for the wrap's arguments: the default binary when none is
/// given, a leading `--` dropped, and the `-qmp` option appended.
pub(crate) fn qemu_argv(mut command: Vec<String>, socket: &Path) -> Vec<String> {
    if command.first().map(String::as_str) == Some("--") {
        command.remove(0);
    }
    if command.is_empty() {
        command.push(DEFAULT_QEMU.to_string());
    }
    command.push("-qmp".to_string());
    command.push(format!("unix:{}", qemu_option_value(socket)));
    command
}

/// The pid of the process at the other end of a UNIX socket.
fn peer_pid(stream: &UnixStream) -> Option<i32> {
    // SAFETY: getsockopt(2) writes at most `len` bytes into `cred`.
    unsafe {
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        let rc = libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        );
        (rc == 0 && cred.pid > 0).then_some(cred.pid)
    }
}

/// Whether `pid` has exited (reaping it when it is our child).
fn gone(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid(2) with WNOHANG never blocks.
    match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
        r if r == pid => return true,
        0 => return false,
        _ => {}
    }
    // Not our child (yet): does it exist, and is it more than a zombie?
    // SAFETY: kill(pid, 0) only probes.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned))
        })
        .is_none_or(|state| state == "Z" || state == "X")
}

/// Reap every child that has exited (orphans reparented to us included).
fn reap_all() {
    let mut status = 0;
    // SAFETY: waitpid(2) with WNOHANG never blocks.
    while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
}

/// What to signal to stop QEMU: the process group we started and the
/// process that connected to our socket. Shared with the emergency
/// cleanup.
#[derive(Clone)]
struct Targets {
    pgid: i32,
    /// The peer's pid once known, 0 before.
    peer: Arc<AtomicI32>,
}

impl Targets {
    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our process group and on the peer pid.
        unsafe {
            libc::kill(-self.pgid, sig);
            let peer = self.peer.load(Ordering::SeqCst);
            if peer > 0 {
                libc::kill(peer, sig);
            }
        }
    }
}

/// The QEMU we started: the direct child (QEMU itself, or a launcher), its
/// process group, and the process that connected to our socket.
struct Qemu {
    child: Child,
    targets: Targets,
}

impl Qemu {
    fn pids(&self) -> Vec<i32> {
        let pgid = self.targets.pgid;
        let mut pids = vec![pgid];
        let peer = self.targets.peer.load(Ordering::SeqCst);
        if peer > 0 && peer != pgid {
            pids.push(peer);
        }
        pids
    }

    /// Everything gone: the direct child, the connected peer, and every
    /// member of the process group.
    fn all_gone(&self) -> bool {
        reap_all();
        // SAFETY: kill(-pgid, 0) only probes the group.
        let group_gone = unsafe { libc::kill(-self.targets.pgid, 0) } != 0;
        group_gone && self.pids().into_iter().all(gone)
    }

    fn wait_gone(&self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        loop {
            if self.all_gone() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop QEMU: `quit` over QMP (no "terminating on signal" message),
    /// then SIGTERM to its process group and itself, then SIGKILL.
    fn stop(&mut self, client: Option<&Client>) {
        if let Some(client) = client.filter(|c| c.is_connected()) {
            let _ = client.execute("quit", None, Some(QUIT_GRACE));
        }
        if !self.wait_gone(QUIT_GRACE) {
            self.targets.signal(libc::SIGTERM);
            if !self.wait_gone(TERM_GRACE) {
                self.targets.signal(libc::SIGKILL);
                self.wait_gone(TERM_GRACE);
            }
        }
        let _ = self.child.try_wait();
        reap_all();
    }
}

/// With `--json`: QEMU's standard error, each line as `{"qemu": LINE}` on
/// ours, so that it stays JSON Lines. The receiver hears when QEMU's end
/// closed.
fn forward_stderr(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<()> {
    let (done, closed) = std::sync::mpsc::channel();
    let _ = std::thread::Builder::new()
        .name("qemu-stderr".to_owned())
        .spawn(move || {
            let mut reader = std::io::BufReader::new(stderr);
            let mut line = Vec::new();
            loop {
                line.clear();
                // A line 64 KiB long at most (longer ones come in pieces).
                let mut bounded = std::io::Read::take(&mut reader, 64 << 10);
                match std::io::BufRead::read_until(&mut bounded, b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line);
                        let mut obj = qmp_client::Object::new();
                        obj.insert("qemu".to_owned(), text.trim_end_matches('\n').into());
                        crate::output::eprint_object(obj);
                    }
                }
            }
            let _ = done.send(());
        });
    closed
}

/// The `qmp-shell-wrap` program; returns the exit status.
pub fn main() -> i32 {
    if let Some(code) = crate::generate::run_if_asked(WrapArgs::command, &crate::manual::WRAP) {
        return code;
    }
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    cli::json_stderr_if_asked(&argv);
    let args = WrapArgs::try_parse_from(argv)
        .unwrap_or_else(|e| cli::exit_on_clap_error("qmp-shell-wrap", USAGE, &e));
    crate::output::set_json_stderr(args.common.json);
    if let Err(msg) = args.common.check() {
        cli::usage_error("qmp-shell-wrap", USAGE, &msg);
    }
    if let Some(first) = args.command.first() {
        let option = first.split('=').next().unwrap_or(first);
        if SHELL_ONLY_OPTIONS.contains(&option) {
            cli::usage_error(
                "qmp-shell-wrap",
                USAGE,
                &format!(
                    "{option} is a qmp-shell option; qmp-shell-wrap does not take it \
                     (it always talks QMP to the QEMU it starts)"
                ),
            );
        }
    }
    let source = Source::of(&args.common, &args.commands);
    signals::install(!source.interactive());
    // Orphans of what we start (a daemonized QEMU) become our children.
    // SAFETY: prctl(2) with plain integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let log = match SharedLog::open_option(args.common.logfile.as_deref()) {
        Ok(log) => log,
        Err(msg) => return die(&msg),
    };
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
    if args.common.json {
        command.stderr(Stdio::piped());
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) if err.kind() == ErrorKind::NotFound => {
            return die(&format!("QEMU executable '{}' not found.", argv[0]));
        }
        Err(err) => return die(&format!("cannot start '{}': {err}", argv[0])),
    };
    let qemu_stderr = child.stderr.take().map(forward_stderr);
    let targets = Targets {
        pgid: child.id() as i32,
        peer: Arc::new(AtomicI32::new(0)),
    };
    {
        let targets = targets.clone();
        let dir: PathBuf = dir.path().to_path_buf();
        signals::on_emergency(Box::new(move || {
            targets.signal(libc::SIGKILL);
            let _ = std::fs::remove_dir_all(&dir);
        }));
    }
    let mut qemu = Qemu { child, targets };

    let mut client = None;
    let code = (|| {
        let mut exited = None;
        let mut give_up = || {
            if signals::terminating().is_some() {
                return true;
            }
            match qemu.child.try_wait() {
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
                if let Some(sig) = signals::terminating() {
                    return 128 + sig;
                }
                let status = exited.map(|s| s.to_string()).unwrap_or_default();
                // What QEMU said about it first.
                if let Some(done) = &qemu_stderr {
                    let _ = done.recv_timeout(Duration::from_secs(1));
                }
                return die_as(
                    "ConnectError",
                    &format!("QEMU exited before connecting ({status})"),
                );
            }
            Err(err) if err.kind() == ErrorKind::TimedOut => {
                return die_as(
                    "ConnectError",
                    &format!("QEMU did not connect within {} s", ACCEPT_TIMEOUT.as_secs()),
                )
            }
            Err(err) => {
                return die_as(
                    "ConnectError",
                    &format!("waiting for QEMU to connect: {err}"),
                )
            }
        };
        if let Some(pid) = peer_pid(&stream) {
            qemu.targets.peer.store(pid, Ordering::SeqCst);
        }
        let opts = client_options(args.common.timeout, true, log.as_ref());
        let c = match Client::from_unix_stream(stream, opts) {
            Ok(c) => Arc::new(c),
            Err(err) => {
                return die_as(
                    "ConnectError",
                    &format!("QEMU connected but {}", client_error(&err)),
                )
            }
        };
        client = Some(Arc::clone(&c));
        // --serve: share this QEMU with other clients while the shell runs.
        let router = match &args.serve {
            Some(path) => match share(&c, path, RouterOptions::default()) {
                Ok(router) => Some(router),
                Err(msg) => return die(&msg),
            },
            None => None,
        };
        let io = match SessionIo::new(&args.common, source, c.is_inline()) {
            Ok(io) => io,
            Err(err) => return cannot_start(&err),
        };
        let code = run_session(
            c,
            &args.common,
            args.commands.clone(),
            false,
            Some(argv.clone()),
            None,
            io,
        );
        // Before QEMU is stopped: the other clients are disconnected and
        // the socket removed.
        if let Some(router) = router {
            router.stop();
        }
        code
    })();
    qemu.stop(client.as_deref());
    if let Some(c) = &client {
        c.close();
    }
    drop(listener);
    if let Err(err) = dir.close() {
        crate::output::eprint(&format!(
            "warning: could not remove the socket directory: {err}\n"
        ));
    }
    signals::restore_terminal();
    code
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn commas_in_the_socket_path_are_doubled() {
        let s = Path::new("/tmp/a,b/qmp.sock");
        assert_eq!(qemu_argv(vec![], s)[2], "unix:/tmp/a,,b/qmp.sock");
    }
}
