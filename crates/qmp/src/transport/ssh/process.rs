//! The ssh process: started from a thread that lives as long as the
//! program (so that `PR_SET_PDEATHSIG` means the program's end), its
//! standard error kept by a thread of its own, the wait for its ready line,
//! and its end (`SIGTERM`, then `SIGKILL`, and reaped).

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::error::{classify, meaningful, SshError};
use super::{KILL_GRACE, STDERR_LINES};
use crate::plumbing::{lock, pipe};

/// The line that `LocalCommand` prints once the forwarding is ready.
pub(super) const READY: &[u8] = b"qmp-ssh-ready";

/// Longest standard-error line kept, in bytes.
pub(super) const MAX_LINE: usize = 1024;

/// What the transport's parts and its monitors share.
pub(super) struct Shared {
    pub(super) pid: u32,
    /// `[USER@]HOST`, for messages.
    pub(super) destination: String,
    /// The remote socket path.
    pub(super) path: PathBuf,
    pub(super) stderr: Mutex<StderrLog>,
    /// ssh's exit status once reaped.
    pub(super) status: Mutex<Option<ExitStatus>>,
    /// Closed on purpose: the end of the stream is no failure.
    pub(super) closed: AtomicBool,
}

impl Shared {
    pub(super) fn failure(&self) -> Option<SshError> {
        let lines = self.lines();
        let status = *lock(&self.status);
        classify(&lines, status, &self.destination, &self.path)
    }

    /// The last [`STDERR_LINES`] lines ssh wrote on its standard error.
    pub(super) fn lines(&self) -> Vec<String> {
        let mut log = lock(&self.stderr);
        log.drain();
        log.lines.iter().cloned().collect()
    }

    pub(super) fn last_line(&self) -> Option<String> {
        let mut log = lock(&self.stderr);
        log.drain();
        log.lines.iter().rev().find(|l| meaningful(l)).cloned()
    }
}

/// Owns the ssh process: dropping the last reference stops it.
pub(super) struct Owner {
    pub(super) shared: Arc<Shared>,
    pub(super) child: Mutex<Option<Child>>,
    /// ssh's standard output, once the ready line was read from it.
    pub(super) stdout: Mutex<Option<ChildStdout>>,
    /// The connection to the forwarding, to shut it down.
    pub(super) control: Mutex<Option<UnixStream>>,
    /// The standard-error reader thread and the write end of its wake-up
    /// pipe.
    pub(super) reader: Mutex<Option<(JoinHandle<()>, OwnedFd)>>,
}

impl Owner {
    /// Start the thread that reads ssh's standard error, so that ssh never
    /// blocks on it; lines are kept in `shared.stderr`.
    pub(super) fn start_stderr_reader(&self, stderr: OwnedFd) -> io::Result<()> {
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
    pub(super) fn try_reap(&self) -> bool {
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
    pub(super) fn wait_exit(&self, timeout: Duration) -> bool {
        if self.try_reap() {
            return true;
        }
        let exited = wait_pid_exit(self.shared.pid, timeout);
        exited && self.try_reap()
    }

    pub(super) fn failure(&self) -> Option<SshError> {
        self.try_reap();
        self.shared.failure()
    }

    /// Shut the connection down, stop ssh and reap it, stop the reader
    /// thread. Idempotent.
    pub(super) fn close(&self) {
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
                    // Reaped already (by abort_setups): the pid may be
                    // someone else's by now.
                    Err(_) => None,
                    Ok(None) => {
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
pub(super) struct StderrLog {
    /// The pipe (non-blocking), while the reader thread holds it open.
    /// Read only under the lock, so whoever holds it and drains has
    /// everything ssh wrote so far.
    pub(super) fd: Option<RawFd>,
    /// The end of the pipe was seen.
    pub(super) eof: bool,
    /// An unfinished line.
    pub(super) partial: Vec<u8>,
    pub(super) lines: VecDeque<String>,
}

impl StderrLog {
    /// Read whatever is available.
    pub(super) fn drain(&mut self) {
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

    pub(super) fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.partial);
                self.push_line(&line);
            } else if self.partial.len() < MAX_LINE {
                self.partial.push(b);
            }
        }
    }

    pub(super) fn push_line(&mut self, line: &[u8]) {
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

pub(super) fn stderr_reader(shared: &Shared, stderr: OwnedFd, wake: OwnedFd) {
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
pub(super) enum Ready {
    Yes(ChildStdout),
    Ended,
    TimedOut,
}

/// Read ssh's standard output until `LocalCommand` prints the ready line.
pub(super) fn wait_ready(mut stdout: ChildStdout, timeout: Option<Duration>) -> io::Result<Ready> {
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

pub(super) type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Start `cmd` from a thread that lives as long as the process, so that
/// `PR_SET_PDEATHSIG` (which fires when the forking *thread* exits) fires
/// only when the process does. Should that thread be missing, `cmd` is
/// started from the calling thread.
pub(super) fn spawn(cmd: Command) -> io::Result<Child> {
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
pub(super) fn wait_pid_exit(pid: u32, timeout: Duration) -> bool {
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
pub(super) fn wait_readable(fd: RawFd, deadline: Option<Instant>) -> io::Result<bool> {
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

pub(super) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
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
