//! Real QMP peers for integration tests: each runs in its own temporary
//! directory and is killed when dropped, so a failing test leaks nothing.

#![allow(dead_code)]

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A running peer process and its socket.
pub struct Peer {
    child: Child,
    pub socket: PathBuf,
    pub dir: TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// Start `program args...` (with `{DIR}` in args replaced by the temporary
    /// directory), then wait until `socket_name` in it accepts a connection.
    pub fn start(program: &str, args: &[&str], socket_name: &str) -> Peer {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_str().expect("utf-8 tempdir").to_owned();
        let args: Vec<String> = args.iter().map(|a| a.replace("{DIR}", &d)).collect();
        let child = Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let socket = dir.path().join(socket_name);
        let mut peer = Peer { child, socket, dir };
        peer.wait_ready();
        peer
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("peer exited early: {status}");
            }
            assert!(Instant::now() < deadline, "peer socket never became ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The peer's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Freeze the peer (SIGSTOP) and return once every one of its threads is
    /// stopped: from then on it reads and answers nothing.
    pub fn freeze(&self) {
        let pid = self.pid();
        // SAFETY: kill(2) with a valid signal number.
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
        assert_eq!(rc, 0, "SIGSTOP: {}", std::io::Error::last_os_error());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let states: Vec<char> = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|tasks| {
                    tasks
                        .filter_map(|t| {
                            let stat = std::fs::read_to_string(t.ok()?.path().join("stat")).ok()?;
                            stat.rsplit_once(')')?.1.trim_start().chars().next()
                        })
                        .collect()
                })
                .unwrap_or_default();
            if !states.is_empty() && states.iter().all(|s| *s == 'T') {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "peer {pid} did not stop: {states:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Let a frozen peer run again (SIGCONT).
    pub fn thaw(&self) {
        // SAFETY: kill(2) with a valid signal number.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGCONT) };
        assert_eq!(rc, 0, "SIGCONT: {}", std::io::Error::last_os_error());
    }
}

/// `qemu-system-x86_64 -M none` with a QMP server socket `qmp.sock`.
pub fn qemu() -> Peer {
    Peer::start(
        "qemu-system-x86_64",
        &[
            "-M",
            "none",
            "-display",
            "none",
            "-nodefaults",
            "-qmp",
            "unix:{DIR}/qmp.sock,server=on,wait=off",
        ],
        "qmp.sock",
    )
}

/// `qemu-storage-daemon` with a QMP monitor on `qsd.sock`.
pub fn storage_daemon() -> Peer {
    Peer::start(
        "qemu-storage-daemon",
        &[
            "--chardev",
            "socket,path={DIR}/qsd.sock,server=on,wait=off,id=c0",
            "--monitor",
            "chardev=c0",
        ],
        "qsd.sock",
    )
}

/// `qemu-ga` listening on `qga.sock`.
pub fn guest_agent() -> Peer {
    guest_agent_blocking("guest-exec,guest-file-open,guest-shutdown,guest-set-user-password")
}

/// `qemu-ga` with the commands in `blocked` (comma-separated) disabled.
pub fn guest_agent_blocking(blocked: &str) -> Peer {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("state")).expect("mkdir state");
    let d = dir.path().to_str().expect("utf-8 tempdir").to_owned();
    let child = Command::new("qemu-ga")
        .args([
            "-m",
            "unix-listen",
            "-p",
            &format!("{d}/qga.sock"),
            "-t",
            &format!("{d}/state"),
            "-b",
            blocked,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start qemu-ga: {e}"));
    let socket = dir.path().join("qga.sock");
    let mut peer = Peer { child, socket, dir };
    peer.wait_ready();
    peer
}

/// Make `path` a UNIX socket file that nothing listens on, as a dead server
/// leaves behind: bound, never listening, closed. A connect to it is refused
/// (ECONNREFUSED) deterministically; a listener bound and then dropped could
/// still accept for an instant through a copy of its descriptor inherited by
/// a child that a concurrent test is forking.
pub fn dead_socket(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: socket(2), bind(2) and close(2) on a descriptor owned here; the
    // address is zeroed and the path checked to fit in sun_path.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        assert!(bytes.len() < addr.sun_path.len(), "socket path too long");
        for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        let rc = libc::bind(
            fd,
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(rc, 0, "bind {}: {err}", path.display());
    }
}
