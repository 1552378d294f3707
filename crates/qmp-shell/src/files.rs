//! Opening the files that may hold secrets (the `-l` log, the history,
//! `/record` recordings) and nothing else: regular files the user owns are
//! created and kept mode 0600; a device, a FIFO, `/dev/stderr` or somebody
//! else's file is written to as it is and never chmod'ed; a symlink planted
//! by another user in a sticky directory such as `/tmp` is not followed.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::FromRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The type of the file open on `fd` (a standard stream), if fstat(2)
/// can tell.
pub fn file_type_of(fd: impl std::os::fd::AsFd) -> Option<std::fs::FileType> {
    let file = File::from(fd.as_fd().try_clone_to_owned().ok()?);
    file.metadata().ok().map(|m| m.file_type())
}

/// Mode of the files this module creates.
const PRIVATE: u32 = 0o600;

/// How [`open_private`] treats existing content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Start the file afresh (a regular file is truncated).
    Truncate,
    /// Write after what is there.
    Append,
    /// Refuse an existing regular file (an error of kind
    /// [`io::ErrorKind::AlreadyExists`]), untouched: never truncated nor
    /// chmod'ed. A device, a FIFO or our own standard output or error is
    /// written to (after what is there), as with [`Existing::Append`].
    Refuse,
}

/// `~/.qmp-shell_history`, shared with the reference.
pub fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| Path::new(&home).join(".qmp-shell_history"))
}

/// Open `path` for writing a file that may hold secrets.
///
/// * A new file is created with mode 0600; the descriptor is `O_CLOEXEC`.
/// * An existing regular file owned by the user is tightened to 0600 and,
///   with [`Existing::Truncate`], emptied; with [`Existing::Refuse`] any
///   existing regular file is an error and is left as it is.
/// * Anything else (a device such as `/dev/null`, a FIFO, a terminal, a
///   file of another user that we may write) is written to as it is: never
///   chmod'ed, never truncated. So is our own standard output or error
///   (`/dev/stderr`), even when it is a regular file: it is shared, not
///   restarted.
/// * A symlink is followed, except one owned by another user in a sticky
///   directory (the `/tmp` symlink attack), which is refused.
pub fn open_private(path: &Path, existing: Existing) -> io::Result<File> {
    if existing == Existing::Refuse {
        // O_EXCL: created here, or it was there (even a symlink, which
        // O_EXCL never follows).
        match OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(PRIVATE)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
        {
            Ok(file) => return Ok(file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        // What is there: a regular file is refused before it is opened,
        // and so never touched. (Should one appear in between, it is
        // written after what is there: still never truncated.) A dangling
        // symlink is followed as below, creating its target.
        if let Ok(meta) = std::fs::metadata(path) {
            let ours = [libc::STDOUT_FILENO, libc::STDERR_FILENO]
                .into_iter()
                .any(|fd| same_file(&meta, fd));
            if meta.file_type().is_file() && !ours {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ));
            }
        }
    }
    // Always O_APPEND: each line goes at the end, even if something else
    // writes to the same file.
    let open = |flags| {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(PRIVATE)
            .custom_flags(flags)
            .open(path)
    };
    let file = match open(libc::O_CLOEXEC | libc::O_NOFOLLOW) {
        Ok(file) => file,
        // ELOOP: the last component is a symlink (EACCES when the kernel's
        // own protected_symlinks refused it first).
        Err(e)
            if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::EACCES))
                && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) =>
        {
            check_symlink(path)?;
            open(libc::O_CLOEXEC)?
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    // `/dev/stderr`, `/dev/fd/1` and the like: our own standard output or
    // error, whatever it is. Write to it as it is, sharing its offset.
    for std_fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        if same_file(&meta, std_fd) {
            // SAFETY: dup(2) of a descriptor we hold; the new one is ours.
            let fd = unsafe { libc::fcntl(std_fd, libc::F_DUPFD_CLOEXEC, 3) };
            if fd >= 0 {
                // SAFETY: `fd` was just created and is owned by nobody else.
                return Ok(unsafe { File::from_raw_fd(fd) });
            }
        }
    }
    // SAFETY: geteuid(2) cannot fail.
    let me = unsafe { libc::geteuid() };
    // With `Refuse`, a regular file here was created just now (through a
    // dangling symlink), mode 0600, or appeared since the check: either
    // way it is left as it is.
    if meta.file_type().is_file() && meta.uid() == me && existing != Existing::Refuse {
        if meta.mode() & 0o777 != PRIVATE {
            file.set_permissions(std::fs::Permissions::from_mode(PRIVATE))?;
        }
        if existing == Existing::Truncate {
            file.set_len(0)?;
        }
    }
    Ok(file)
}

/// Whether `meta` describes the file open on descriptor `fd`.
fn same_file(meta: &std::fs::Metadata, fd: libc::c_int) -> bool {
    // SAFETY: fstat(2) fills the zeroed struct on success.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && st.st_dev == meta.dev() && st.st_ino == meta.ino()
    }
}

/// Refuse a symlink owned by someone else in a sticky directory (as
/// Linux's `fs.protected_symlinks` does): in `/tmp`, another user could
/// point it at one of our files.
fn check_symlink(path: &Path) -> io::Result<()> {
    let link = std::fs::symlink_metadata(path)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = std::fs::metadata(parent)?;
    // SAFETY: geteuid(2) cannot fail.
    let me = unsafe { libc::geteuid() };
    let sticky = dir.mode() & libc::S_ISVTX != 0;
    if sticky && link.uid() != me && link.uid() != dir.uid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "refusing to follow {}: a symlink of another user in a sticky directory",
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::symlink;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn new_file_is_0600_and_existing_is_tightened_and_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        open_private(&p, Existing::Truncate)
            .unwrap()
            .write_all(b"one\n")
            .unwrap();
        assert_eq!(mode(&p), 0o600);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        open_private(&p, Existing::Append)
            .unwrap()
            .write_all(b"two\n")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\ntwo\n");
        assert_eq!(mode(&p), 0o600);
        open_private(&p, Existing::Truncate).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
    }

    #[test]
    fn devices_and_symlinks_to_them_are_left_alone() {
        let before = mode(Path::new("/dev/null"));
        open_private(Path::new("/dev/null"), Existing::Truncate)
            .unwrap()
            .write_all(b"x")
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("history");
        symlink("/dev/null", &link).unwrap();
        open_private(&link, Existing::Truncate)
            .unwrap()
            .write_all(b"x")
            .unwrap();
        assert_eq!(mode(Path::new("/dev/null")), before);
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn fifo_is_not_chmod_ed() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        // A reader, so that opening for writing does not block.
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        open_private(&fifo, Existing::Truncate).unwrap();
        drop(reader);
        assert_eq!(mode(&fifo), 0o644);
    }

    #[test]
    fn another_users_symlink_in_a_sticky_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let link = dir.path().join("log");
        symlink(&victim, &link).unwrap();
        // SAFETY: geteuid(2) cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            // Root can give the symlink to another user, as an attacker's.
            let c = std::ffi::CString::new(link.to_str().unwrap()).unwrap();
            // SAFETY: lchown(2) with a valid NUL-terminated path.
            assert_eq!(unsafe { libc::lchown(c.as_ptr(), 65534, 65534) }, 0);
            let e = open_private(&link, Existing::Truncate).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
            assert!(e.to_string().contains("sticky directory"), "{e}");
            assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        }
        // Our own symlink there is followed.
        let c = std::ffi::CString::new(link.to_str().unwrap()).unwrap();
        // SAFETY: as above.
        let me = unsafe { libc::geteuid() };
        // SAFETY: lchown(2) with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::lchown(c.as_ptr(), me, me) }, 0);
        open_private(&link, Existing::Truncate).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "");
    }

    #[test]
    fn refuse_leaves_an_existing_file_alone_and_writes_to_devices() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rec");
        open_private(&p, Existing::Refuse)
            .unwrap()
            .write_all(b"new\n")
            .unwrap();
        assert_eq!(mode(&p), 0o600);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = open_private(&p, Existing::Refuse).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        // Through a symlink too; neither is changed.
        let link = dir.path().join("link");
        symlink(&p, &link).unwrap();
        let e = open_private(&link, Existing::Refuse).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new\n");
        assert_eq!(mode(&p), 0o644);
        // A device is no file to protect.
        open_private(Path::new("/dev/null"), Existing::Refuse).unwrap();
        // A dangling symlink: its target is created.
        let target = dir.path().join("target");
        let dangling = dir.path().join("dangling");
        symlink(&target, &dangling).unwrap();
        open_private(&dangling, Existing::Refuse)
            .unwrap()
            .write_all(b"x")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "x");
        assert_eq!(mode(&target), 0o600);
    }

    #[test]
    fn dangling_symlink_in_a_normal_directory_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real");
        let link = dir.path().join("link");
        symlink(&target, &link).unwrap();
        open_private(&link, Existing::Truncate).unwrap();
        assert_eq!(mode(&target), 0o600);
    }
}
