//! Process and socket helpers: waiting for what only the kernel can tell,
//! freezing a process, and sockets that are there but do not listen.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// How long [`freeze`] waits for every thread to stop.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(20);

/// Wait (polling, bounded by `timeout`) until `cond()` holds; panic with
/// `what` otherwise. For conditions that only the kernel can tell.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Whether a UNIX socket at `socket` is in the listening state, from the
/// kernel's table (`/proc/net/unix`, flag `__SO_ACCEPTCON`): no probe
/// connection, which a single-client monitor would have to serve first.
pub fn listening(socket: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    let path = socket.to_string_lossy();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8 && fields[3] == "00010000" && fields[7] == path
    })
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

/// The states (`R`, `S`, `T`...) of every thread of process `pid`.
pub fn thread_states(pid: u32) -> Vec<char> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.ok()?.path().join("stat")).ok()?;
            // `pid (comm) S ...`: the state follows the last `)`.
            stat.rsplit_once(')')?.1.trim_start().chars().next()
        })
        .collect()
}

/// Freeze process `pid` (SIGSTOP) and return once every one of its threads
/// is stopped: from then on it reads and answers nothing.
#[track_caller]
pub fn freeze(pid: u32) {
    // SAFETY: kill(2) with a valid signal number.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
    assert_eq!(rc, 0, "SIGSTOP {pid}: {}", std::io::Error::last_os_error());
    wait_until(
        &format!("every thread of {pid} to stop"),
        FREEZE_TIMEOUT,
        || {
            let states = thread_states(pid);
            !states.is_empty() && states.iter().all(|s| *s == 'T')
        },
    );
}

/// Let a process frozen by [`freeze`] run again (SIGCONT).
#[track_caller]
pub fn thaw(pid: u32) {
    // SAFETY: kill(2) with a valid signal number.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
    assert_eq!(rc, 0, "SIGCONT {pid}: {}", std::io::Error::last_os_error());
}
