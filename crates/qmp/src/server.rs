//! Listening for a QMP server that connects to us (QEMU's `-qmp unix:PATH`
//! without `server=on`), as `qmp-shell-wrap` does.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often `accept` polls its `give_up` callback.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A listening UNIX socket. The socket file is removed when it is dropped.
#[derive(Debug)]
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
}

impl Listener {
    /// Listen on `path`. A stale socket file already at `path` is removed first
    /// (as Python's asyncio does); any other kind of file is an error.
    pub fn bind(path: &Path) -> io::Result<Listener> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.file_type().is_socket() {
                std::fs::remove_file(path)?;
            }
        }
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        Ok(Listener {
            listener,
            path: path.to_owned(),
        })
    }

    /// The path this listener is bound to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wait for one connection, up to `timeout`. `give_up` is polled every
    /// 50 ms so the caller can stop waiting (e.g. when the QEMU child exited).
    ///
    /// Returns `Ok(None)` if `give_up()` returned `true`, and an error of kind
    /// [`io::ErrorKind::TimedOut`] on timeout. The returned stream is blocking.
    pub fn accept(
        &self,
        timeout: Duration,
        give_up: &mut dyn FnMut() -> bool,
    ) -> io::Result<Option<UnixStream>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false)?;
                    return Ok(Some(stream));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if give_up() {
                return Ok(None);
            }
            let wait = match deadline {
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "timed out waiting for a connection",
                        ));
                    }
                    (deadline - now).min(POLL_INTERVAL)
                }
                None => POLL_INTERVAL,
            };
            self.poll_readable(wait)?;
        }
    }

    /// Sleep until the listening socket is readable or `wait` elapses.
    fn poll_readable(&self, wait: Duration) -> io::Result<()> {
        let mut fds = libc::pollfd {
            fd: self.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(wait.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a valid pollfd for the duration of the call, and
        // the count passed is 1.
        let rc = unsafe { libc::poll(&mut fds, 1, ms) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        Ok(())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_times_out_gives_up_and_connects() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sock");
        let l = Listener::bind(&path).unwrap();
        let e = l
            .accept(Duration::from_millis(120), &mut || false)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);

        let mut n = 0;
        let r = l
            .accept(Duration::from_secs(10), &mut || {
                n += 1;
                n > 2
            })
            .unwrap();
        assert!(r.is_none());

        let _c = UnixStream::connect(&path).unwrap();
        let s = l.accept(Duration::from_secs(10), &mut || false).unwrap();
        assert!(s.is_some());

        // Rebinding over the stale socket works; drop removes the file.
        drop(l);
        assert!(!path.exists());
        drop(UnixListener::bind(&path).unwrap()); // leaves a stale socket file
        assert!(path.exists());
        let l2 = Listener::bind(&path).unwrap();
        drop(l2);
        assert!(!path.exists());
    }
}
