//! The forwarding's two ends: the remote target, checked and written as
//! ssh's `-L` wants it, and the private directory of the local socket,
//! with the register of set-ups under way that [`abort_setups`] ends.

use std::ffi::OsString;
use std::fs::DirBuilder;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, SystemTime};

use super::process::Owner;
use crate::plumbing::lock;

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

/// One set-up under way.
struct SetUp {
    /// Its number.
    id: u64,
    /// Its private directory.
    path: PathBuf,
    /// ssh's pid, once started.
    pid: Option<u32>,
    /// Who owns ssh, once the set-up got that far.
    owner: Option<Weak<Owner>>,
}

/// The set-ups under way, for [`abort_setups`].
struct SetUps {
    list: Vec<SetUp>,
    /// ssh processes being started: [`abort_setups`] waits for their pids.
    spawning: usize,
    /// [`abort_setups`] ran: the process is ending, no set-up starts.
    ended: bool,
    /// ... and has finished: every set-up it found is gone.
    aborted: bool,
}

static SETUPS: Mutex<SetUps> = Mutex::new(SetUps {
    list: Vec::new(),
    spawning: 0,
    ended: false,
    aborted: false,
});

/// Rung when a start of ssh is over (its pid registered, or it failed),
/// and when [`abort_setups`] has finished.
static SPAWNED: Condvar = Condvar::new();

/// How long [`abort_setups`] waits for an ssh being started to have a pid.
const SPAWN_WAIT: Duration = Duration::from_secs(2);

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
        if setups.ended {
            // Another thread is at it (a second signal during the exit
            // that a first one began): return once it is done, so that
            // an exit right after this finds nothing left.
            let _ = SPAWNED
                .wait_timeout_while(setups, SPAWN_WAIT * 2, |s| !s.aborted)
                .unwrap_or_else(|e| e.into_inner());
            return;
        }
        setups.ended = true;
        // An ssh being started gets its pid first, so that it is stopped
        // and reaped here, not left to die of PR_SET_PDEATHSIG unreaped.
        let (mut setups, _) = SPAWNED
            .wait_timeout_while(setups, SPAWN_WAIT, |s| s.spawning > 0)
            .unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut setups.list)
    };
    for setup in taken {
        match setup.owner.and_then(|o| o.upgrade()) {
            Some(owner) => owner.close(),
            None => {
                if let Some(pid) = setup.pid {
                    stop_and_reap(pid);
                }
            }
        }
        remove_private_dir(&setup.path);
    }
    lock(&SETUPS).aborted = true;
    SPAWNED.notify_all();
}

/// Kill ssh (`pid`, our child, whose owner is not there yet) and reap it.
fn stop_and_reap(pid: u32) {
    // SAFETY: kill(2) and waitpid(2) on our own unreaped child; a failure
    // (already reaped by its Child) is harmless.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
        libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
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
pub(super) struct PrivateDir {
    pub(super) path: PathBuf,
    /// Its number among the set-ups under way.
    id: u64,
}

impl PrivateDir {
    pub(super) fn create() -> io::Result<PrivateDir> {
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
                    setups.list.push(SetUp {
                        id: n,
                        path: path.clone(),
                        pid: None,
                        owner: None,
                    });
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
    /// Start the set-up's ssh with `spawn`, its pid registered for
    /// [`abort_setups`] before anyone else sees the child; nothing starts
    /// once the process is ending.
    pub(super) fn spawn(&self, spawn: impl FnOnce() -> io::Result<Child>) -> io::Result<Child> {
        {
            let mut setups = lock(&SETUPS);
            if setups.ended {
                return Err(io::Error::other("the process is ending"));
            }
            setups.spawning += 1;
        }
        let child = spawn();
        let mut setups = lock(&SETUPS);
        setups.spawning -= 1;
        if let Ok(child) = &child {
            if let Some(setup) = setups.list.iter_mut().find(|s| s.id == self.id) {
                setup.pid = Some(child.id());
            }
        }
        SPAWNED.notify_all();
        child
    }

    /// The set-up's ssh has an owner: [`abort_setups`] stops it through
    /// it. Should the process be ending already, it is stopped at once.
    pub(super) fn watch(&self, owner: &Arc<Owner>) {
        let mut setups = lock(&SETUPS);
        let ended = setups.ended;
        if let Some(setup) = setups.list.iter_mut().find(|s| s.id == self.id) {
            setup.owner = Some(Arc::downgrade(owner));
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
        lock(&SETUPS).list.retain(|s| s.id != self.id);
        remove_private_dir(&self.path);
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
