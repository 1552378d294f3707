//! The forwarding's two ends: the remote target, checked and written as
//! ssh's `-L` wants it, and the private directory of the local socket.

use std::ffi::OsString;
use std::fs::DirBuilder;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Refuse what ssh would take for an option, or cannot carry.
pub(super) fn check_target(user: Option<&str>, host: &str, path: &Path) -> io::Result<()> {
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
pub(super) fn forward_field(path: &Path) -> OsString {
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

/// A private (0700) directory for the local end of the forwarding,
/// removed with what is in it when dropped.
pub(super) struct PrivateDir {
    pub(super) path: PathBuf,
}

impl PrivateDir {
    pub(super) fn create() -> io::Result<PrivateDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
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
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(PrivateDir { path }),
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

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path.join("s"));
        let _ = std::fs::remove_dir(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
