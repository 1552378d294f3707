//! A QMP UNIX socket on another machine, reached through the system `ssh`
//! (as git and rsync reach their remotes): `ssh://[USER@]HOST[:PORT]/PATH`.
//!
//! # How
//!
//! OpenSSH's `-W` (forward standard input and output) would be the natural
//! tool, but it only takes `HOST:PORT`: OpenSSH 9.2 (Debian 12) parses
//! `ssh -W /path/qmp.sock` without complaint, forwards nothing and never
//! exits. What does reach a remote UNIX socket with nothing but sshd on the
//! other side is stream-local forwarding, `-L LOCAL_SOCKET:REMOTE_SOCKET`
//! (OpenSSH 6.7 and later; `AllowStreamLocalForwarding`, on by default, on
//! the server). So [`SshTransport::connect`] runs
//!
//! ```text
//! ssh [QMP_SSH_COMMAND options] -N -T -a -x -o BatchMode=yes -o LogLevel=INFO
//!     -o ExitOnForwardFailure=yes -o ClearAllForwardings=no
//!     -o ControlMaster=no -o ControlPath=none
//!     -o PermitLocalCommand=yes -o "LocalCommand=echo qmp-ssh-ready"
//!     -L PRIVATE_DIR/s:REMOTE_PATH [-p PORT] [-l USER] -- HOST
//! ```
//!
//! with standard input from `/dev/null` and standard output and error on
//! pipes. ssh runs `LocalCommand` once it has logged in and bound the local
//! socket, so the `qmp-ssh-ready` line on its standard output says the
//! forwarding is ready: no polling. The transport then connects to the
//! local socket, removes it and its private directory (mode 0700) at once,
//! and carries QMP over that connection; ssh opens the channel to the
//! remote socket when the connection arrives.
//!
//! `LogLevel=INFO` is there because ssh reports a channel that could not be
//! opened (a missing remote socket) at that level, which a configured
//! `LogLevel ERROR` would hide; ssh's messages are captured, never shown
//! as such. In the `-L` specification, `:` and `\` in the paths are
//! escaped with `\` and `%` is doubled, since OpenSSH (9.2 here) expands
//! `%` tokens and `${VAR}` in forwarding paths; a remote path containing
//! `${` cannot be expressed and is refused.
//!
//! OpenSSH takes the first value it gets for each option, and the options
//! of `QMP_SSH_COMMAND` come first, so they override the defaults above:
//! `QMP_SSH_COMMAND='ssh -o BatchMode=no'` lets ssh ask for a password.
//! Options in `ssh_config` files come after the command line, so they do
//! not.
//!
//! # Passwords: `BatchMode=yes` by default
//!
//! ssh asks for passwords and host-key confirmations on `/dev/tty`, not on
//! the pipes, so prompting is possible when there is a terminal. But QMP
//! clients mostly run from scripts, and a prompt that nobody answers would
//! hang until the readiness timeout. So ssh runs with `BatchMode=yes`: keys
//! (or an agent) are needed, and a missing key or unknown host key fails at
//! once with ssh's message. Set `QMP_SSH_COMMAND='ssh -o BatchMode=no'` to
//! type a password at the terminal (within [`SshOptions::timeout`]).
//!
//! # Errors
//!
//! ssh's standard error is captured (the last [`STDERR_LINES`] lines, read
//! by a thread so that a talkative ssh never blocks) and classified into an
//! [`SshError`]: ssh not installed, authentication failed, host key
//! verification failed, remote socket missing or refusing, forwarding
//! prohibited by the server, host unreachable, timeout, or ssh's own last
//! line. Every message is one line. It reaches the caller as an
//! [`io::Error`] whose inner error is the [`SshError`]
//! ([`SshError::from_io`] gets it back):
//!
//! * from [`SshTransport::connect`], when ssh exits before the forwarding is
//!   ready (authentication, host key, unreachable host...);
//! * from [`Source::receive`], when the stream ends and ssh said why (the
//!   remote socket is missing: the server speaks first, so this shows as
//!   the end of the stream before the greeting; or the ssh connection
//!   broke). An end of stream with ssh still running and silent (QEMU
//!   closed the socket) stays a plain end of stream, as after
//!   the [`Closer`] was called;
//! * from [`SshMonitor::failure`] at any time.
//!
//! # Process lifetime
//!
//! The closer (and dropping the transport, or all its halves, unsplit or
//! split) shuts the connection down, sends ssh `SIGTERM` (ssh then stops
//! its `ProxyCommand`, if any), escalates to `SIGKILL` if it has not exited
//! after [`KILL_GRACE`], and reaps it: no zombie. If the calling process
//! dies, ssh gets `SIGKILL` (`PR_SET_PDEATHSIG`). That signal fires when
//! the *thread* that forked exits, so ssh is started from a dedicated
//! thread that lives as long as the process. ssh ignores `SIGINT` and
//! `SIGQUIT`, so Ctrl-C at the terminal (meant for the shell) does not end
//! the connection.
//!
//! A set-up still under way when the process exits (a signal during it:
//! the caller stops waiting and exits, the thread that runs the set-up
//! with it) is ended by [`abort_setups`]: ssh is stopped and reaped and
//! the private directory removed. It runs at `exit(3)` (registered with
//! `atexit(3)` at the first set-up), so every ordinary exit path is
//! covered; a program that ends with `_exit(2)` calls it first.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::fs::DirBuilder;
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::{Closer, Halves, Received, Source, StreamTransport, Transport};
use crate::address::Address;
use crate::plumbing::{lock, pipe};

/// The environment variable that replaces the ssh program and its leading
/// options, split like a shell command line (as git's `GIT_SSH_COMMAND`).
pub const COMMAND_ENV: &str = "QMP_SSH_COMMAND";

/// How long [`SshOptions::default`] waits for ssh to log in and set up the
/// forwarding.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the closer waits for ssh to exit after `SIGTERM` before it
/// sends `SIGKILL`.
pub const KILL_GRACE: Duration = Duration::from_millis(500);

/// How many of ssh's last standard-error lines are kept.
pub const STDERR_LINES: usize = 64;

/// The line that `LocalCommand` prints once the forwarding is ready.
const READY: &[u8] = b"qmp-ssh-ready";

/// Longest standard-error line kept, in bytes.
const MAX_LINE: usize = 1024;

/// How to run ssh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshOptions {
    /// The ssh program and its leading options, e.g. `["ssh", "-F",
    /// "/path/ssh_config"]`. An empty command is refused.
    pub command: Vec<String>,
    /// How long to wait for ssh to log in and set up the forwarding;
    /// `None` waits as long as ssh does.
    pub timeout: Option<Duration>,
}

impl Default for SshOptions {
    /// `ssh`, waiting [`DEFAULT_TIMEOUT`].
    fn default() -> SshOptions {
        SshOptions {
            command: vec!["ssh".to_owned()],
            timeout: Some(DEFAULT_TIMEOUT),
        }
    }
}

impl SshOptions {
    /// The command from `$QMP_SSH_COMMAND` when it is set and not blank,
    /// else `ssh`; [`DEFAULT_TIMEOUT`].
    pub fn from_env() -> io::Result<SshOptions> {
        match std::env::var_os(COMMAND_ENV) {
            None => Ok(SshOptions::default()),
            Some(value) => match value.to_str() {
                Some(line) => SshOptions::with_command_line(line),
                None => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{COMMAND_ENV} is not valid UTF-8"),
                )),
            },
        }
    }

    /// `line` split like a shell command line (quotes and backslashes as
    /// in `sh`, no expansions); a blank line means `ssh`.
    pub fn with_command_line(line: &str) -> io::Result<SshOptions> {
        let words = shell_words::split(line).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{COMMAND_ENV}: cannot split {line:?}: {e}"),
            )
        })?;
        if words.is_empty() {
            return Ok(SshOptions::default());
        }
        Ok(SshOptions {
            command: words,
            ..SshOptions::default()
        })
    }
}

/// What went wrong, as far as ssh's messages tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SshErrorKind {
    /// The ssh program could not be started (not installed, not found).
    NotInstalled,
    /// The server refused every key or password (`Permission denied`).
    Authentication,
    /// The server's host key is not the known one, or is unknown and
    /// strict checking is on.
    HostKey,
    /// The remote socket could not be opened: missing, nothing listens on
    /// it, or the server forbids forwarding to sockets (OpenSSH's sshd
    /// gives the same reason for all three).
    RemoteSocket,
    /// The server said forwarding is "administratively prohibited" (OpenSSH's
    /// sshd does not: it reports a forbidden socket forwarding as
    /// [`SshErrorKind::RemoteSocket`]).
    ForwardingProhibited,
    /// The host could not be reached: name not resolved, connection
    /// refused, timed out, closed during the handshake...
    Unreachable,
    /// ssh did not set up the forwarding within [`SshOptions::timeout`].
    Timeout,
    /// Anything else: ssh's last message, or its exit status.
    Other,
}

/// An ssh failure, with a one-line message that quotes ssh where it helps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshError {
    kind: SshErrorKind,
    message: String,
}

impl SshError {
    fn new(kind: SshErrorKind, message: String) -> SshError {
        // One line, whatever ssh wrote.
        let message = message
            .split(['\n', '\r'])
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        SshError { kind, message }
    }

    /// What went wrong.
    pub fn kind(&self) -> SshErrorKind {
        self.kind
    }

    /// The message, one line.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The [`SshError`] inside an [`io::Error`] made by this module.
    pub fn from_io(err: &io::Error) -> Option<&SshError> {
        err.get_ref()?.downcast_ref::<SshError>()
    }
}

impl fmt::Display for SshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SshError {}

impl From<SshError> for io::Error {
    fn from(err: SshError) -> io::Error {
        let kind = match err.kind {
            SshErrorKind::NotInstalled => io::ErrorKind::NotFound,
            SshErrorKind::Authentication
            | SshErrorKind::HostKey
            | SshErrorKind::ForwardingProhibited => io::ErrorKind::PermissionDenied,
            SshErrorKind::RemoteSocket => io::ErrorKind::ConnectionRefused,
            SshErrorKind::Unreachable => io::ErrorKind::HostUnreachable,
            SshErrorKind::Timeout => io::ErrorKind::TimedOut,
            SshErrorKind::Other => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

/// A QMP connection to a UNIX socket on another machine, through ssh. See
/// the [module documentation](self) for how it works.
///
/// It is a [`Transport`]: split it, or hand it to a client that runs on
/// transports. It cannot pass file descriptors.
pub struct SshTransport {
    inner: StreamTransport,
    owner: Arc<Owner>,
}

impl fmt::Debug for SshTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshTransport")
            .field("destination", &self.owner.shared.destination)
            .field("path", &self.owner.shared.path)
            .field("pid", &self.owner.shared.pid)
            .finish_non_exhaustive()
    }
}

impl SshTransport {
    /// Connect to the UNIX socket `path` on `host` through ssh, run as
    /// `$QMP_SSH_COMMAND` says ([`SshOptions::from_env`]). `user` and `port`
    /// are given to ssh as `-l` and `-p` when set. Returns once ssh has
    /// logged in and the connection to the forwarding is made; the remote
    /// socket itself is only opened then, so a missing one shows as an
    /// error from the source (see the [module documentation](self)).
    pub fn connect(
        user: Option<&str>,
        host: &str,
        port: Option<u16>,
        path: &Path,
    ) -> io::Result<SshTransport> {
        SshTransport::connect_with(&SshOptions::from_env()?, user, host, port, path)
    }

    /// [`SshTransport::connect`] to an [`Address::Ssh`]; other addresses
    /// are refused ([`io::ErrorKind::InvalidInput`]).
    pub fn connect_address(addr: &Address, opts: &SshOptions) -> io::Result<SshTransport> {
        match addr {
            Address::Ssh {
                user,
                host,
                port,
                path,
            } => SshTransport::connect_with(opts, user.as_deref(), host, *port, path),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not an ssh:// address: {other}"),
            )),
        }
    }

    /// [`SshTransport::connect`] with explicit options.
    pub fn connect_with(
        opts: &SshOptions,
        user: Option<&str>,
        host: &str,
        port: Option<u16>,
        path: &Path,
    ) -> io::Result<SshTransport> {
        check_target(user, host, path)?;
        let Some((program, leading)) = opts.command.split_first() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the ssh command is empty",
            ));
        };
        let dir = PrivateDir::create()?;
        let local = dir.path.join("s");

        let mut forward = forward_field(&local);
        forward.push(":");
        forward.push(forward_field(path));
        let mut cmd = Command::new(program);
        cmd.args(leading)
            .args(["-N", "-T", "-a", "-x"])
            .args(["-o", "BatchMode=yes"])
            .args(["-o", "LogLevel=INFO"])
            .args(["-o", "ExitOnForwardFailure=yes"])
            .args(["-o", "ClearAllForwardings=no"])
            .args(["-o", "ControlMaster=no", "-o", "ControlPath=none"])
            .args(["-o", "PermitLocalCommand=yes"])
            .arg("-o")
            .arg(format!(
                "LocalCommand=echo {}",
                String::from_utf8_lossy(READY)
            ))
            .arg("-L")
            .arg(forward);
        if let Some(port) = port {
            cmd.arg("-p").arg(port.to_string());
        }
        if let Some(user) = user {
            cmd.arg("-l").arg(user);
        }
        cmd.arg("--").arg(host);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: between fork and exec only async-signal-safe calls
        // (prctl, getppid, signal) and no allocation.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent died before prctl: nobody would kill us.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                // Ctrl-C at the terminal is for the shell, not for ssh.
                libc::signal(libc::SIGINT, libc::SIG_IGN);
                libc::signal(libc::SIGQUIT, libc::SIG_IGN);
                Ok(())
            });
        }
        let destination = match user {
            Some(user) => format!("{user}@{host}"),
            None => host.to_owned(),
        };
        let mut child = spawn(cmd).map_err(|e| spawn_error(program, e))?;
        let pid = child.id();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let shared = Arc::new(Shared {
            pid,
            destination,
            path: path.to_owned(),
            stderr: Mutex::new(StderrLog::default()),
            status: Mutex::new(None),
            closed: AtomicBool::new(false),
        });
        let owner = Arc::new(Owner {
            shared: Arc::clone(&shared),
            child: Mutex::new(Some(child)),
            stdout: Mutex::new(None),
            control: Mutex::new(None),
            reader: Mutex::new(None),
        });
        // From here on, dropping `owner` stops ssh; so does an exit of
        // the process before the set-up is done.
        dir.watch(&owner);
        let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
            return Err(io::Error::other("ssh started without its pipes"));
        };
        owner.start_stderr_reader(stderr.into())?;

        match wait_ready(stdout, opts.timeout) {
            Ok(Ready::Yes(stdout)) => {
                // Kept open: ssh writes nothing more there, but should it,
                // it must not die of SIGPIPE.
                *lock(&owner.stdout) = Some(stdout);
            }
            Ok(Ready::Ended) => {
                // ssh exited (or closed its output) before the forwarding
                // was ready: its messages say why.
                owner.wait_exit(Duration::from_secs(2));
                return Err(owner
                    .failure()
                    .unwrap_or_else(|| {
                        SshError::new(
                            SshErrorKind::Other,
                            format!("ssh to {} ended before connecting", shared.destination),
                        )
                    })
                    .into());
            }
            Ok(Ready::TimedOut) => {
                owner.close();
                let last = shared.last_line();
                let mut message = format!(
                    "ssh: no connection to {} within {} s",
                    shared.destination,
                    opts.timeout.unwrap_or_default().as_secs_f64()
                );
                if let Some(last) = last {
                    message.push_str(&format!(" (last message: {last})"));
                }
                return Err(SshError::new(SshErrorKind::Timeout, message).into());
            }
            Err(e) => return Err(e),
        }

        let stream = UnixStream::connect(&local).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot connect to ssh's forwarding socket: {e}"),
            )
        })?;
        // The connection is made: nobody else needs the path.
        drop(dir);
        *lock(&owner.control) = Some(stream.try_clone()?);
        let reader = stream.try_clone()?;
        let closer_owner = Arc::clone(&owner);
        let closer: Closer = Arc::new(move || closer_owner.close());
        let inner = StreamTransport::pipes(Box::new(reader), Box::new(stream), closer);
        Ok(SshTransport { inner, owner })
    }

    /// Refuse messages longer than `limit` bytes; see
    /// [`StreamTransport::max_message`].
    pub fn max_message(mut self, limit: usize) -> SshTransport {
        self.inner = self.inner.max_message(limit);
        self
    }

    /// Report `0xFF` bytes (for a guest agent); see
    /// [`StreamTransport::delimiters`].
    pub fn delimiters(mut self, on: bool) -> SshTransport {
        self.inner = self.inner.delimiters(on);
        self
    }

    /// A handle on the ssh process that stays usable after the transport
    /// is split: its pid, its exit status, and why it failed. It does
    /// not keep ssh running.
    pub fn monitor(&self) -> SshMonitor {
        SshMonitor {
            shared: Arc::clone(&self.owner.shared),
        }
    }
}

impl Transport for SshTransport {
    fn split(self: Box<Self>) -> io::Result<Halves> {
        let this = *self;
        let halves = Box::new(this.inner).split()?;
        Ok(Halves {
            source: Box::new(SshSource {
                inner: halves.source,
                owner: Arc::clone(&this.owner),
            }),
            sink: halves.sink,
            closer: halves.closer,
        })
    }
}

/// Reports why ssh failed when the stream ends.
struct SshSource {
    inner: Box<dyn Source>,
    owner: Arc<Owner>,
}

impl Source for SshSource {
    fn receive(&mut self, raw: &mut dyn FnMut(&[u8])) -> io::Result<Option<Received>> {
        let result = self.inner.receive(raw);
        if matches!(result, Ok(Some(_))) || self.owner.shared.closed.load(Ordering::SeqCst) {
            return result;
        }
        // The end, or a read error: did ssh say why?
        match self.owner.failure() {
            Some(err) => Err(err.into()),
            None => result,
        }
    }
}

/// A handle on the ssh process of an [`SshTransport`]
/// ([`SshTransport::monitor`]).
#[derive(Clone)]
pub struct SshMonitor {
    shared: Arc<Shared>,
}

impl fmt::Debug for SshMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshMonitor")
            .field("pid", &self.shared.pid)
            .finish_non_exhaustive()
    }
}

impl SshMonitor {
    /// The process id of ssh.
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// ssh's exit status, once the transport has reaped it.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *lock(&self.shared.status)
    }

    /// Why ssh failed, if its messages (or its exit) say it did; `None`
    /// while all is well, and after the transport was closed on purpose.
    pub fn failure(&self) -> Option<SshError> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return None;
        }
        self.shared.failure()
    }
}

/// What the transport's parts and its monitors share.
struct Shared {
    pid: u32,
    /// `[USER@]HOST`, for messages.
    destination: String,
    /// The remote socket path.
    path: PathBuf,
    stderr: Mutex<StderrLog>,
    /// ssh's exit status once reaped.
    status: Mutex<Option<ExitStatus>>,
    /// Closed on purpose: the end of the stream is no failure.
    closed: AtomicBool,
}

impl Shared {
    fn failure(&self) -> Option<SshError> {
        let lines = self.lines();
        let status = *lock(&self.status);
        classify(&lines, status, &self.destination, &self.path)
    }

    /// The last [`STDERR_LINES`] lines ssh wrote on its standard error.
    fn lines(&self) -> Vec<String> {
        let mut log = lock(&self.stderr);
        log.drain();
        log.lines.iter().cloned().collect()
    }

    fn last_line(&self) -> Option<String> {
        let mut log = lock(&self.stderr);
        log.drain();
        log.lines.iter().rev().find(|l| meaningful(l)).cloned()
    }
}

/// Owns the ssh process: dropping the last reference stops it.
struct Owner {
    shared: Arc<Shared>,
    child: Mutex<Option<Child>>,
    /// ssh's standard output, once the ready line was read from it.
    stdout: Mutex<Option<ChildStdout>>,
    /// The connection to the forwarding, to shut it down.
    control: Mutex<Option<UnixStream>>,
    /// The standard-error reader thread and the write end of its wake-up
    /// pipe.
    reader: Mutex<Option<(JoinHandle<()>, OwnedFd)>>,
}

impl Owner {
    /// Start the thread that reads ssh's standard error, so that ssh never
    /// blocks on it; lines are kept in `shared.stderr`.
    fn start_stderr_reader(&self, stderr: OwnedFd) -> io::Result<()> {
        set_nonblocking(stderr.as_raw_fd())?;
        let (wake_read, wake_write) = pipe(0)?;
        lock(&self.shared.stderr).fd = Some(stderr.as_raw_fd());
        let shared = Arc::clone(&self.shared);
        let handle = std::thread::Builder::new()
            .name("qmp-ssh-stderr".to_owned())
            .spawn(move || stderr_reader(&shared, stderr, wake_read))?;
        *lock(&self.reader) = Some((handle, wake_write));
        Ok(())
    }

    /// Reap ssh if it has exited; `true` if it has.
    fn try_reap(&self) -> bool {
        let mut child = lock(&self.child);
        let Some(c) = child.as_mut() else {
            return true;
        };
        match c.try_wait() {
            Ok(Some(status)) => {
                *lock(&self.shared.status) = Some(status);
                *child = None;
                true
            }
            Ok(None) => false,
            Err(_) => {
                *child = None;
                true
            }
        }
    }

    /// Wait up to `timeout` for ssh to exit by itself, reaping it if it did.
    fn wait_exit(&self, timeout: Duration) -> bool {
        if self.try_reap() {
            return true;
        }
        let exited = wait_pid_exit(self.shared.pid, timeout);
        exited && self.try_reap()
    }

    fn failure(&self) -> Option<SshError> {
        self.try_reap();
        self.shared.failure()
    }

    /// Shut the connection down, stop ssh and reap it, stop the reader
    /// thread. Idempotent.
    fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        if let Some(stream) = lock(&self.control).as_ref() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        {
            let mut guard = lock(&self.child);
            if let Some(mut child) = guard.take() {
                let pid = self.shared.pid as libc::pid_t;
                let status = match child.try_wait() {
                    Ok(Some(status)) => Some(status),
                    _ => {
                        // SAFETY: kill(2) on our unreaped child: the pid
                        // cannot have been reused.
                        unsafe { libc::kill(pid, libc::SIGTERM) };
                        if !wait_pid_exit(self.shared.pid, KILL_GRACE) {
                            let _ = child.kill();
                        }
                        child.wait().ok()
                    }
                };
                *lock(&self.shared.status) = status;
            }
        }
        let reader = lock(&self.reader).take();
        if let Some((handle, wake)) = reader {
            // SAFETY: write(2) of one byte from a live buffer on our pipe.
            unsafe { libc::write(wake.as_raw_fd(), b"x".as_ptr().cast(), 1) };
            let _ = handle.join();
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.close();
    }
}

/// ssh's standard error, as lines.
#[derive(Default)]
struct StderrLog {
    /// The pipe (non-blocking), while the reader thread holds it open.
    /// Read only under the lock, so whoever holds it and drains has
    /// everything ssh wrote so far.
    fd: Option<RawFd>,
    /// The end of the pipe was seen.
    eof: bool,
    /// An unfinished line.
    partial: Vec<u8>,
    lines: VecDeque<String>,
}

impl StderrLog {
    /// Read whatever is available.
    fn drain(&mut self) {
        let Some(fd) = self.fd else {
            return;
        };
        if self.eof {
            return;
        }
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: read(2) into a live buffer of the stated size; the fd
            // stays open while `self.fd` is set (the lock is held).
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                self.push(&buf[..n as usize]);
                continue;
            }
            if n == 0 {
                self.eof = true;
                if !self.partial.is_empty() {
                    let rest = std::mem::take(&mut self.partial);
                    self.push_line(&rest);
                }
                return;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return;
            }
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.partial);
                self.push_line(&line);
            } else if self.partial.len() < MAX_LINE {
                self.partial.push(b);
            }
        }
    }

    fn push_line(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r').trim_end();
        if text.is_empty() {
            return;
        }
        if self.lines.len() == STDERR_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(text.to_owned());
    }
}

fn stderr_reader(shared: &Shared, stderr: OwnedFd, wake: OwnedFd) {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: stderr.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll(2) on two live descriptors.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
        let mut log = lock(&shared.stderr);
        log.drain();
        if log.eof || fds[1].revents != 0 {
            break;
        }
    }
    let mut log = lock(&shared.stderr);
    log.drain();
    // Closed under the lock: no drain can be using it.
    log.fd = None;
    drop(stderr);
}

/// What the wait for the ready line found.
enum Ready {
    Yes(ChildStdout),
    Ended,
    TimedOut,
}

/// Read ssh's standard output until `LocalCommand` prints the ready line.
fn wait_ready(mut stdout: ChildStdout, timeout: Option<Duration>) -> io::Result<Ready> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        if !wait_readable(stdout.as_raw_fd(), deadline)? {
            return Ok(Ready::TimedOut);
        }
        let got = match stdout.read(&mut buf) {
            Ok(0) => return Ok(Ready::Ended),
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        seen.extend_from_slice(&buf[..got]);
        if seen.split(|b| *b == b'\n').any(|line| line == READY) {
            return Ok(Ready::Yes(stdout));
        }
        // Keep only the unfinished last line.
        if let Some(at) = seen.iter().rposition(|b| *b == b'\n') {
            seen.drain(..=at);
        }
        if seen.len() > 4096 {
            seen.clear();
        }
    }
}

/// Lines of ssh's that say nothing about a failure.
fn meaningful(line: &str) -> bool {
    !(line.starts_with("Warning: Permanently added")
        || line.starts_with("debug")
        || line.starts_with("Pseudo-terminal")
        || line.starts_with("Authenticated to")
        || line.chars().all(|c| c == '@'))
}

/// Why ssh failed, from its standard-error `lines` and exit `status`;
/// `None` if nothing says it did.
fn classify(
    lines: &[String],
    status: Option<ExitStatus>,
    destination: &str,
    path: &Path,
) -> Option<SshError> {
    let find = |needle: &str| lines.iter().find(|l| l.contains(needle));
    let with_ssh = |line: &str| {
        if line.starts_with("ssh: ") {
            line.to_owned()
        } else {
            format!("ssh: {line}")
        }
    };

    if let Some(line) = find("host key is known for")
        .or_else(|| find("has changed and you have requested strict checking"))
        .or_else(|| find("Host key verification failed"))
        .or_else(|| find("REMOTE HOST IDENTIFICATION HAS CHANGED"))
    {
        let mut message = format!("ssh: host key verification failed for {destination}");
        if !line.starts_with("Host key verification failed") {
            message.push_str(": ");
            message.push_str(
                line.trim_start_matches("WARNING: ")
                    .trim_matches([' ', '@']),
            );
        }
        if let Some(offending) = find("Offending ") {
            message.push_str(&format!(" ({offending})"));
        }
        return Some(SshError::new(SshErrorKind::HostKey, message));
    }
    if let Some(line) =
        find("Permission denied (").or_else(|| find("Too many authentication failures"))
    {
        return Some(SshError::new(
            SshErrorKind::Authentication,
            format!("ssh: authentication failed: {line}"),
        ));
    }
    if let Some(line) = find("open failed: administratively prohibited") {
        return Some(SshError::new(
            SshErrorKind::ForwardingProhibited,
            format!(
                "ssh: {destination} does not allow forwarding to its socket {} \
                 (AllowStreamLocalForwarding, or a restricted key): {line}",
                path.display()
            ),
        ));
    }
    if let Some(line) = find("open failed: connect failed") {
        return Some(SshError::new(
            SshErrorKind::RemoteSocket,
            format!(
                "ssh: cannot open the socket {} on {destination} (it does not exist, \
                 nothing listens on it, or the server forbids socket forwarding): {line}",
                path.display()
            ),
        ));
    }
    if let Some(line) = find("Could not resolve hostname")
        .or_else(|| find("ssh: connect to host"))
        .or_else(|| find("kex_exchange_identification"))
        .or_else(|| find("Connection closed by"))
        .or_else(|| find("Connection reset by"))
        .or_else(|| find("Connection timed out during banner exchange"))
    {
        return Some(SshError::new(SshErrorKind::Unreachable, with_ssh(line)));
    }
    // Nothing recognised: a failure only if ssh is gone.
    let status = status?;
    if let Some(line) = lines.iter().rev().find(|l| meaningful(l)) {
        return Some(SshError::new(SshErrorKind::Other, with_ssh(line)));
    }
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "exited".to_owned(),
    };
    Some(SshError::new(
        SshErrorKind::Other,
        format!("ssh to {destination} {how}"),
    ))
}

fn spawn_error(program: &str, err: io::Error) -> io::Error {
    let from_env = std::env::var_os(COMMAND_ENV).is_some_and(|v| !v.is_empty());
    let source = if from_env {
        format!(" (from {COMMAND_ENV})")
    } else {
        String::new()
    };
    if err.kind() == io::ErrorKind::NotFound {
        return SshError::new(
            SshErrorKind::NotInstalled,
            format!(
                "cannot run {program}{source}: not found \
                 (install openssh-client, or set {COMMAND_ENV})"
            ),
        )
        .into();
    }
    SshError::new(
        SshErrorKind::Other,
        format!("cannot run {program}{source}: {err}"),
    )
    .into()
}

/// Refuse what ssh would take for an option, or cannot carry.
fn check_target(user: Option<&str>, host: &str, path: &Path) -> io::Result<()> {
    let invalid = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
    if host.is_empty() {
        return invalid("ssh: no host".to_owned());
    }
    if host.starts_with('-') || host.contains('\0') {
        return invalid(format!("ssh: bad host {host:?}"));
    }
    if let Some(user) = user {
        if user.is_empty() || user.starts_with('-') || user.contains('\0') {
            return invalid(format!("ssh: bad user name {user:?}"));
        }
    }
    if !path.is_absolute() {
        return invalid(format!(
            "ssh: the remote socket path must be absolute: {}",
            path.display()
        ));
    }
    let bytes = path.as_os_str().as_bytes();
    if bytes.contains(&0) {
        return invalid("ssh: the remote socket path contains a NUL byte".to_owned());
    }
    if bytes.windows(2).any(|w| w == b"${") {
        // ssh expands ${VAR} in forwarding paths, with no escape.
        return invalid(format!(
            "ssh: the remote socket path cannot contain '${{': {}",
            path.display()
        ));
    }
    Ok(())
}

/// `path` as one field of an ssh `-L` specification: `:` and `\` escaped
/// with `\`, a leading `[` too, `%` doubled (ssh expands `%` tokens in
/// forwarding paths).
fn forward_field(path: &Path) -> OsString {
    let mut out = Vec::new();
    for (i, &b) in path.as_os_str().as_bytes().iter().enumerate() {
        match b {
            b':' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            b'[' if i == 0 => out.extend_from_slice(b"\\["),
            b'%' => out.extend_from_slice(b"%%"),
            _ => out.push(b),
        }
    }
    OsString::from_vec(out)
}

/// The set-ups under way, for [`abort_setups`].
struct SetUps {
    /// Each set-up's number, private directory and, once ssh runs, ssh.
    list: Vec<(u64, PathBuf, Option<std::sync::Weak<Owner>>)>,
    /// [`abort_setups`] ran: the process is ending, no set-up starts.
    ended: bool,
}

static SETUPS: Mutex<SetUps> = Mutex::new(SetUps {
    list: Vec::new(),
    ended: false,
});

/// End every ssh set-up still under way: stop and reap its ssh, remove its
/// private directory; no set-up starts after it. For the exit of the
/// process, when threads still setting up would be cut short (a signal
/// during a connection attempt): it runs at `exit(3)` by itself, and a
/// program that ends with `_exit(2)` (an emergency exit) calls it first.
/// Connections already made are not touched (their ssh dies with the
/// process, `PR_SET_PDEATHSIG`).
pub fn abort_setups() {
    let taken = {
        let mut setups = lock(&SETUPS);
        setups.ended = true;
        std::mem::take(&mut setups.list)
    };
    for (_, path, owner) in taken {
        if let Some(owner) = owner.and_then(|o| o.upgrade()) {
            owner.close();
        }
        remove_private_dir(&path);
    }
}

extern "C" fn abort_setups_at_exit() {
    // Nothing may unwind out of an atexit handler.
    let _ = std::panic::catch_unwind(abort_setups);
}

fn remove_private_dir(path: &Path) {
    let _ = std::fs::remove_file(path.join("s"));
    let _ = std::fs::remove_dir(path);
}

/// A private (0700) directory for the local end of the forwarding,
/// removed with what is in it when dropped, or by [`abort_setups`].
struct PrivateDir {
    path: PathBuf,
    /// Its number among the set-ups under way.
    id: u64,
}

impl PrivateDir {
    fn create() -> io::Result<PrivateDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static AT_EXIT: std::sync::Once = std::sync::Once::new();
        AT_EXIT.call_once(|| {
            // SAFETY: atexit(3) with a function that lives for ever.
            unsafe { libc::atexit(abort_setups_at_exit) };
        });
        let tmp = std::env::temp_dir();
        // A socket path must fit in sun_path (108 bytes), and ssh expands
        // `%` and `${` in it: a temporary directory that could break either
        // is replaced by /tmp.
        let tmp_bytes = tmp.as_os_str().as_bytes();
        let base = if tmp.is_absolute()
            && tmp_bytes.len() <= 60
            && !tmp_bytes.iter().any(|b| b"%$:\\[".contains(b))
        {
            tmp
        } else {
            PathBuf::from("/tmp")
        };
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut last_err = None;
        for _ in 0..32 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("qmp-ssh-{}-{n}-{nanos:x}", std::process::id());
            let path = base.join(name);
            // Registered while the directory is made, so that an exit
            // meanwhile finds it.
            let mut setups = lock(&SETUPS);
            if setups.ended {
                return Err(io::Error::other("the process is ending"));
            }
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    setups.list.push((n, path.clone(), None));
                    return Ok(PrivateDir { path, id: n });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot create a directory in {}: {e}", base.display()),
                    ))
                }
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("cannot create a private directory")))
    }
}

impl PrivateDir {
    /// The set-up's ssh runs: [`abort_setups`] stops it too. Should the
    /// process be ending already, it is stopped at once.
    fn watch(&self, owner: &Arc<Owner>) {
        let mut setups = lock(&SETUPS);
        let ended = setups.ended;
        if let Some((_, _, slot)) = setups.list.iter_mut().find(|(id, ..)| *id == self.id) {
            *slot = Some(Arc::downgrade(owner));
            return;
        }
        drop(setups);
        if ended {
            owner.close();
        }
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        lock(&SETUPS).list.retain(|(id, ..)| *id != self.id);
        remove_private_dir(&self.path);
    }
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Start `cmd` from a thread that lives as long as the process, so that
/// `PR_SET_PDEATHSIG` (which fires when the forking *thread* exits) fires
/// only when the process does. Should that thread be missing, `cmd` is
/// started from the calling thread.
fn spawn(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        // If the thread cannot start, `rx` goes with it and sends fail.
        let _ = std::thread::Builder::new()
            .name("qmp-ssh-spawner".to_owned())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    let sent = lock(sender).send((cmd, reply_tx));
    match sent {
        Ok(()) => reply_rx
            .recv()
            .map_err(|_| io::Error::other("the thread that starts ssh is gone"))?,
        Err(mpsc::SendError((mut cmd, _))) => cmd.spawn(),
    }
}

/// Wait up to `timeout` for process `pid` (our unreaped child) to exit,
/// without reaping it. `false` if it has not, or if that cannot be told.
fn wait_pid_exit(pid: u32, timeout: Duration) -> bool {
    // SAFETY: pidfd_open(2) returns a new descriptor (close-on-exec) or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: the descriptor was just created and is ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // A pidfd is readable once the process exited.
    matches!(
        wait_readable(fd.as_raw_fd(), Some(Instant::now() + timeout)),
        Ok(true)
    )
}

/// Wait until `fd` is readable (or at its end, or in error): `true`; or
/// until `deadline` (`None`: no limit) has passed: `false`. Interrupted
/// waits are resumed.
fn wait_readable(fd: RawFd, deadline: Option<Instant>) -> io::Result<bool> {
    loop {
        let wait_ms = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX)
            }
        };
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one descriptor the caller keeps open.
        let n = unsafe { libc::poll(&mut pfd, 1, wait_ms) };
        if n > 0 {
            return Ok(true);
        }
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(2) on a live descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    fn kind_and_message(text: &str, status: Option<i32>) -> Option<(SshErrorKind, String)> {
        let status = status.map(|code| ExitStatus::from_raw(code << 8));
        classify(&lines(text), status, "root@h", Path::new("/run/q.sock"))
            .map(|e| (e.kind(), e.message().to_owned()))
    }

    #[test]
    fn authentication() {
        let got = kind_and_message(
            "Warning: Permanently added '[127.0.0.1]:5' (ED25519) to the list of known hosts.\n\
             root@127.0.0.1: Permission denied (publickey,password).",
            Some(255),
        );
        assert_eq!(
            got,
            Some((
                SshErrorKind::Authentication,
                "ssh: authentication failed: root@127.0.0.1: Permission denied (publickey,password)."
                    .to_owned()
            ))
        );
    }

    #[test]
    fn host_key_changed() {
        let text = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
            @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
            @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
            IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n\
            Offending ED25519 key in /tmp/kh:1\n\
            Host key for [127.0.0.1]:5 has changed and you have requested strict checking.\n\
            Host key verification failed.";
        let (kind, message) = kind_and_message(text, Some(255)).unwrap();
        assert_eq!(kind, SshErrorKind::HostKey);
        assert_eq!(
            message,
            "ssh: host key verification failed for root@h: Host key for [127.0.0.1]:5 has \
             changed and you have requested strict checking. (Offending ED25519 key in /tmp/kh:1)"
        );
        let (kind, message) = kind_and_message(
            "No ED25519 host key is known for h and you have requested strict checking.\n\
             Host key verification failed.",
            Some(255),
        )
        .unwrap();
        assert_eq!(kind, SshErrorKind::HostKey);
        assert!(
            message.ends_with(
                "No ED25519 host key is known for h and you have requested strict checking."
            ),
            "{message}"
        );
        let (_, message) = kind_and_message("Host key verification failed.", Some(255)).unwrap();
        assert_eq!(message, "ssh: host key verification failed for root@h");
    }

    #[test]
    fn remote_socket() {
        // ssh is still running: the line alone says it.
        let (kind, message) =
            kind_and_message("channel 1: open failed: connect failed: open failed", None).unwrap();
        assert_eq!(kind, SshErrorKind::RemoteSocket);
        assert_eq!(
            message,
            "ssh: cannot open the socket /run/q.sock on root@h (it does not exist, nothing \
             listens on it, or the server forbids socket forwarding): channel 1: open failed: \
             connect failed: open failed"
        );
        let (kind, _) = kind_and_message(
            "channel 2: open failed: administratively prohibited: open failed",
            None,
        )
        .unwrap();
        assert_eq!(kind, SshErrorKind::ForwardingProhibited);
    }

    #[test]
    fn unreachable() {
        for line in [
            "ssh: connect to host 127.0.0.1 port 1: Connection refused",
            "ssh: Could not resolve hostname nope.invalid: Name or service not known",
            "kex_exchange_identification: Connection closed by remote host",
            "Connection closed by 127.0.0.1 port 22",
        ] {
            let (kind, message) = kind_and_message(line, Some(255)).unwrap();
            assert_eq!(kind, SshErrorKind::Unreachable, "{line}");
            assert!(
                message.starts_with("ssh: ") && message.ends_with(line),
                "{message}"
            );
        }
    }

    #[test]
    fn other_failures_need_ssh_gone() {
        assert_eq!(kind_and_message("", None), None);
        assert_eq!(
            kind_and_message("Warning: Permanently added 'h' (ED25519) to the list", None),
            None
        );
        assert_eq!(kind_and_message("Welcome to our banner", None), None);
        assert_eq!(
            kind_and_message(
                "Welcome\nBad configuration option: permitlocalcommand",
                Some(255)
            ),
            Some((
                SshErrorKind::Other,
                "ssh: Bad configuration option: permitlocalcommand".to_owned()
            ))
        );
        assert_eq!(
            kind_and_message("", Some(3)),
            Some((
                SshErrorKind::Other,
                "ssh to root@h exited with status 3".to_owned()
            ))
        );
        let killed = classify(&[], Some(ExitStatus::from_raw(9)), "h", Path::new("/q"));
        assert_eq!(
            killed.map(|e| e.message().to_owned()),
            Some("ssh to h was killed by signal 9".to_owned())
        );
    }

    #[test]
    fn messages_are_one_line() {
        let e = SshError::new(SshErrorKind::Other, "a\r\nb\nc".to_owned());
        assert_eq!(e.to_string(), "a b c");
        let io: io::Error = e.into();
        assert_eq!(io.to_string(), "a b c");
        assert_eq!(
            SshError::from_io(&io).map(SshError::kind),
            Some(SshErrorKind::Other)
        );
        assert_eq!(SshError::from_io(&io::Error::other("x")), None);
    }

    #[test]
    fn forward_fields_escape_what_ssh_would_interpret() {
        let f = |p: &str| forward_field(Path::new(p)).into_string().unwrap();
        assert_eq!(f("/run/q.sock"), "/run/q.sock");
        assert_eq!(f("/a:b\\c%d"), "/a\\:b\\\\c%%d");
        assert_eq!(f("[x]/y"), "\\[x]/y");
        assert_eq!(f("/[x]"), "/[x]");
    }

    #[test]
    fn targets_that_ssh_would_misread_are_refused() {
        let p = Path::new("/q.sock");
        assert!(check_target(None, "h", p).is_ok());
        assert!(check_target(Some("u"), "h", p).is_ok());
        for (user, host, path) in [
            (None, "", "/q"),
            (None, "-oProxyCommand=x", "/q"),
            (Some("-x"), "h", "/q"),
            (Some(""), "h", "/q"),
            (None, "h", "q.sock"),
            (None, "h", "/a/${HOME}/q"),
            (None, "h", "/a\0b"),
            (None, "h\0", "/q"),
            (Some("u\0"), "h", "/q"),
        ] {
            let err = check_target(user, host, Path::new(path)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{host} {path}");
        }
    }

    #[test]
    fn command_lines_split_like_a_shell() {
        let o = SshOptions::with_command_line("ssh -F '/a b/config' -o \"BatchMode=no\"").unwrap();
        assert_eq!(
            o.command,
            ["ssh", "-F", "/a b/config", "-o", "BatchMode=no"]
        );
        assert_eq!(o.timeout, Some(DEFAULT_TIMEOUT));
        assert_eq!(
            SshOptions::with_command_line("  ").unwrap(),
            SshOptions::default()
        );
        let err = SshOptions::with_command_line("ssh 'unclosed").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().starts_with("QMP_SSH_COMMAND: "), "{err}");
    }

    #[test]
    fn ssh_that_is_not_installed() {
        let opts = SshOptions {
            command: vec!["/nonexistent/ssh".to_owned()],
            timeout: Some(Duration::from_secs(5)),
        };
        let err =
            SshTransport::connect_with(&opts, None, "h", None, Path::new("/q.sock")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            SshError::from_io(&err).map(SshError::kind),
            Some(SshErrorKind::NotInstalled)
        );
        assert!(
            err.to_string().starts_with("cannot run /nonexistent/ssh")
                && err.to_string().contains("install openssh-client"),
            "{err}"
        );
    }

    #[test]
    fn stderr_lines_are_bounded() {
        let mut log = StderrLog::default();
        for i in 0..(STDERR_LINES + 10) {
            log.push(format!("line {i}\r\n").as_bytes());
        }
        log.push(&vec![b'x'; 5000]);
        log.push(b"\n");
        assert_eq!(log.lines.len(), STDERR_LINES);
        assert_eq!(log.lines.back().map(String::len), Some(MAX_LINE));
        assert_eq!(log.lines.front().map(String::as_str), Some("line 11"));
    }
}
