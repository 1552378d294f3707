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
//!
//! # Inside
//!
//! This module is the transport over the forwarding; `process` starts,
//! watches and stops the ssh process, `forward` checks the target and
//! makes the `-L` specification and the private directory, `error`
//! classifies ssh's messages into an [`SshError`].

mod error;
mod forward;
mod process;

use std::fmt;
use std::io;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self::error::spawn_error;
use self::forward::{check_target, forward_field, PrivateDir};
use self::process::{spawn, wait_ready, Owner, Ready, Shared, StderrLog, READY};
use super::{Closer, Halves, Received, Source, StreamTransport, Transport};
use crate::address::Address;
use crate::plumbing::lock;

pub use self::error::{SshError, SshErrorKind};
pub use self::forward::abort_setups;

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
        let mut child = dir
            .spawn(|| spawn(cmd))
            .map_err(|e| spawn_error(program, e))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
