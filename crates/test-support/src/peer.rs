//! Real QMP peers for integration tests: each runs in its own temporary
//! directory and is killed when dropped, so a failing test leaks nothing.

use crate::proc;

pub use crate::proc::dead_socket;

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
        proc::freeze(self.pid());
    }

    /// Let a frozen peer run again (SIGCONT).
    pub fn thaw(&self) {
        proc::thaw(self.pid());
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
