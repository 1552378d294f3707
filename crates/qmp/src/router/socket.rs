//! The router's listening socket, made with care: created mode 0600, never
//! through a symlink, never over anything but a stale socket, and removed
//! only while it is still the one we made. Plus receiving file descriptors
//! (SCM_RIGHTS) with data.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::transport::stream::connect_unix;

/// Most descriptors taken with one read (the kernel's own limit per
/// message is 253; the rest would be closed by it).
const MAX_FDS_PER_READ: usize = 253;

/// Bytes of the control buffer for [`MAX_FDS_PER_READ`] descriptors.
// SAFETY: CMSG_SPACE only computes a size.
const CONTROL_LEN: usize =
    unsafe { libc::CMSG_SPACE((MAX_FDS_PER_READ * std::mem::size_of::<RawFd>()) as libc::c_uint) }
        as usize;

/// A listening UNIX socket for the router's clients. Dropping it removes
/// the socket file, if the file at its path is still the one it created.
#[derive(Debug)]
pub struct ServeSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file we created.
    identity: (u64, u64),
}

/// Serialises the umask change of [`ServeSocket::bind`] within this
/// process's own calls.
static UMASK: Mutex<()> = Mutex::new(());

impl ServeSocket {
    /// Create and listen on a socket at `path`, mode 0600.
    ///
    /// `bind(2)` never follows a symlink and fails when anything exists at
    /// `path`; the file is created with mode 0600 from the start (the umask
    /// is tightened around the call; should a default ACL still open it up,
    /// it is chmod-ed to 0600 before listening). If something exists at
    /// `path`, it is replaced only when it is a socket nobody listens on
    /// (a connection to it is refused: a dead server's leftover);
    /// anything else — a live socket (one whose server is stopped or hung
    /// too: checking it waits at most a second), a regular file, a
    /// symlink, a directory — is an error and is left alone.
    pub fn bind(path: &Path) -> io::Result<ServeSocket> {
        let listener = match bind_private(path) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                remove_if_stale(path)?;
                bind_private(path)?
            }
            other => other?,
        };
        let meta = std::fs::symlink_metadata(path)?;
        if !meta.file_type().is_socket() {
            return Err(io::Error::other(format!(
                "{} was replaced while it was being created",
                path.display()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        listener.set_nonblocking(true)?;
        Ok(ServeSocket {
            listener,
            path: path.to_owned(),
            identity: (meta.dev(), meta.ino()),
        })
    }

    /// The path the socket is bound to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The listening socket (non-blocking).
    pub(crate) fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// A function that removes the socket file if it is still ours: for
    /// an emergency exit that cannot wait for the drop.
    pub fn remover(&self) -> Box<dyn Fn() + Send + Sync> {
        let path = self.path.clone();
        let identity = self.identity;
        Box::new(move || remove_if_ours(&path, identity))
    }
}

impl Drop for ServeSocket {
    fn drop(&mut self) {
        remove_if_ours(&self.path, self.identity);
    }
}

fn remove_if_ours(path: &Path, identity: (u64, u64)) {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() && (meta.dev(), meta.ino()) == identity {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `bind(2)` with the umask at 0177, so the socket file is born 0600.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    let _guard = UMASK.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: umask(2) cannot fail; the old mask is put back at once.
    let old = unsafe { libc::umask(0o177) };
    let result = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    result
}

/// How long [`remove_if_stale`] waits for a listener at the path to take
/// a connection. A socket nobody listens on refuses at once; one whose
/// server does not take the connection in this time is live all the same
/// (a stopped or hung server, its queue of connections full).
const STALE_CHECK: Duration = Duration::from_secs(1);

/// Something is at `path`: remove it if it is a stale socket, else say
/// what it is.
fn remove_if_stale(path: &Path) -> io::Result<()> {
    let shown = path.display();
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_socket() {
        let what = if meta.file_type().is_symlink() {
            "a symlink"
        } else if meta.is_dir() {
            "a directory"
        } else {
            "not a socket"
        };
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{shown} exists and is {what}; not replacing it"),
        ));
    }
    // Bounded: a listener that takes no connection (a stopped or hung
    // server, its queue full) would make connect(2) wait for ever.
    match connect_unix(path, Some(STALE_CHECK)) {
        Ok(Some(_)) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{shown} is in use: a server is listening on it"),
        )),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{shown} is in use: a server is listening on it, though it takes no \
                 connection within {} s (stopped or hung?)",
                STALE_CHECK.as_secs()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            // Nobody listens: a dead server's socket. Remove that very file.
            let again = std::fs::symlink_metadata(path)?;
            if (again.dev(), again.ino()) != (meta.dev(), meta.ino()) {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{shown} changed while it was being checked"),
                ));
            }
            std::fs::remove_file(path)
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("{shown} exists and cannot be checked ({e}); not replacing it"),
        )),
    }
}

/// Read from `sock` into `buf`, appending any descriptors that came with
/// the data (SCM_RIGHTS, close-on-exec) to `fds`. `Ok(0)` at end of stream.
pub(crate) fn recv_with_fds(
    sock: &UnixStream,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; CONTROL_LEN.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = CONTROL_LEN as _;
    let n = loop {
        // SAFETY: msg points to a valid iovec over `buf` and a control
        // buffer of `CONTROL_LEN` bytes, both alive for the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled,
    // within msg_controllen; each SCM_RIGHTS payload holds whole RawFds
    // that are now ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let header = libc::CMSG_LEN(0) as usize;
                let len = ((*cmsg).cmsg_len as usize).saturating_sub(header);
                let count = len / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.add(i));
                    if fd >= 0 {
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn created_0600_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let s = ServeSocket::bind(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, 0o600);
        // A live socket is not replaced.
        let e = ServeSocket::bind(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        assert!(e.to_string().contains("in use"), "{e}");
        drop(s);
        assert!(std::fs::symlink_metadata(&path).is_err());
    }

    #[test]
    fn refuses_files_symlinks_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "keep").unwrap();
        let e = ServeSocket::bind(&file).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");

        // A symlink, dangling or not, is neither followed nor replaced.
        let target = dir.path().join("target");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = ServeSocket::bind(&link).unwrap_err();
        assert!(e.to_string().contains("a symlink"), "{e}");
        assert!(!target.exists());
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());

        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let e = ServeSocket::bind(&sub).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
    }

    #[test]
    fn replaces_a_stale_socket_and_leaves_a_foreign_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        // Bound and closed, never listening: connecting is refused.
        stale_socket(&path);
        let s = ServeSocket::bind(&path).unwrap();
        let ours = std::fs::symlink_metadata(&path).unwrap().ino();
        // Someone replaced our file: the drop leaves theirs.
        std::fs::remove_file(&path).unwrap();
        stale_socket(&path);
        let theirs = std::fs::symlink_metadata(&path).unwrap().ino();
        assert_ne!(ours, theirs);
        drop(s);
        assert_eq!(std::fs::symlink_metadata(&path).unwrap().ino(), theirs);
    }

    fn stale_socket(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_os_str().as_bytes();
        // SAFETY: socket/bind/close on a descriptor owned here, with a
        // zeroed address whose path was checked to fit.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0);
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            assert!(bytes.len() < addr.sun_path.len());
            for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
                *d = *s as libc::c_char;
            }
            let rc = libc::bind(
                fd,
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            );
            libc::close(fd);
            assert_eq!(rc, 0);
        }
    }

    #[test]
    fn descriptors_come_with_the_data() {
        let (a, b) = UnixStream::pair().unwrap();
        let t = crate::StreamTransport::unix(a).unwrap();
        let mut halves = crate::Transport::split(Box::new(t)).unwrap();
        let mut file = tempfile::tempfile().unwrap();
        halves
            .sink
            .send(&crate::Object::new(), b"{}\n", &[file.as_raw_fd()])
            .unwrap();
        let mut buf = [0u8; 16];
        let mut fds = Vec::new();
        let n = recv_with_fds(&b, &mut buf, &mut fds).unwrap();
        assert_eq!(&buf[..n], b"{}\n");
        assert_eq!(fds.len(), 1);
        let mut received = std::fs::File::from(fds.pop().unwrap());
        received.write_all(b"through").unwrap();
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(0)).unwrap();
        let mut back = String::new();
        file.read_to_string(&mut back).unwrap();
        assert_eq!(back, "through");
        // Plain data: no descriptors.
        drop(halves);
        let n = recv_with_fds(&b, &mut buf, &mut fds).unwrap();
        assert_eq!(n, 0);
        assert!(fds.is_empty());
    }
}
