//! A libvirt connection and a domain reference (both released when
//! dropped), and the calls that carry one command to QEMU's monitor or to
//! the guest agent.

use std::ffi::{c_char, c_int, c_uint, CStr, CString};
use std::os::fd::RawFd;

use super::error::{is_permission_denied, LibvirtError};
use super::event_loop;
use super::ffi::{self, virConnectPtr, virDomainPtr, Lib, VirErr};
use super::lookup::ResolvedUri;

/// Why file descriptors cannot go to the monitor through this libvirt.
pub(super) const NO_FD_PASSING: &str =
    "this libvirt cannot pass file descriptors (libvirt 7.2 or later can)";

/// A libvirt connection; closed when dropped. Holds the event loop running.
pub(super) struct Connection {
    pub(super) lib: &'static Lib,
    pub(super) ptr: virConnectPtr,
    /// Dropped after the connection is closed (fields drop after `drop`).
    pub(super) _loop: event_loop::LoopGuard,
}

// SAFETY: libvirt connections may be used from any thread, concurrently
// (libvirt is thread-safe since 0.6); the pointer is released once, in Drop.
unsafe impl Send for Connection {}
// SAFETY: as above.
unsafe impl Sync for Connection {}

impl Connection {
    pub(super) fn open(lib: &'static Lib, uri: &ResolvedUri) -> Result<Connection, LibvirtError> {
        let cannot = |message: String| LibvirtError::CannotConnect {
            uri: uri.described.clone(),
            message,
        };
        let curi = CString::new(uri.uri.as_str())
            .map_err(|_| cannot("the URI contains a NUL byte".to_owned()))?;
        // The loop must run while the connection is open (keepalive, events)
        // and until its watches are cleaned up after it closes.
        let guard = event_loop::acquire(lib)?;
        // SAFETY: a NUL-terminated URI and libvirt's own default
        // authentication callbacks.
        let ptr = unsafe { (lib.virConnectOpenAuth)(curi.as_ptr(), lib.auth_default.0, 0) };
        if ptr.is_null() {
            let e = lib.take_error();
            return Err(if is_permission_denied(&e) {
                LibvirtError::PermissionDenied {
                    uri: uri.described.clone(),
                    message: e.message,
                }
            } else {
                cannot(e.message)
            });
        }
        Ok(Connection {
            lib,
            ptr,
            _loop: guard,
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: our reference, released once.
        if unsafe { (self.lib.virConnectClose)(self.ptr) } < 0 {
            let _ = self.lib.take_error();
        }
    }
}

/// A domain reference; released when dropped.
pub(super) struct Domain {
    pub(super) lib: &'static Lib,
    pub(super) ptr: virDomainPtr,
}

// SAFETY: as for Connection: libvirt objects are thread-safe.
unsafe impl Send for Domain {}
// SAFETY: as above.
unsafe impl Sync for Domain {}

impl Drop for Domain {
    fn drop(&mut self) {
        // SAFETY: our reference, released once.
        if unsafe { (self.lib.virDomainFree)(self.ptr) } < 0 {
            let _ = self.lib.take_error();
        }
    }
}

impl Domain {
    pub(super) fn name(&self) -> String {
        // SAFETY: a valid domain; the result is null or a string owned by
        // the domain object, copied at once.
        unsafe {
            let p = (self.lib.virDomainGetName)(self.ptr);
            if p.is_null() {
                let _ = self.lib.take_error();
                return String::new();
            }
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }

    pub(super) fn id(&self) -> Option<u32> {
        // SAFETY: a valid domain.
        let id = unsafe { (self.lib.virDomainGetID)(self.ptr) };
        (id != c_uint::MAX).then_some(id)
    }

    pub(super) fn uuid(&self) -> String {
        let mut buf = [0 as c_char; ffi::VIR_UUID_STRING_BUFLEN];
        // SAFETY: `buf` has the VIR_UUID_STRING_BUFLEN bytes libvirt writes
        // (36 characters and a NUL).
        if unsafe { (self.lib.virDomainGetUUIDString)(self.ptr, buf.as_mut_ptr()) } < 0 {
            let _ = self.lib.take_error();
            return String::new();
        }
        // SAFETY: libvirt wrote a NUL-terminated string into `buf`.
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    pub(super) fn is_active(&self) -> Result<bool, VirErr> {
        // SAFETY: a valid domain.
        match unsafe { (self.lib.virDomainIsActive)(self.ptr) } {
            0 => Ok(false),
            n if n > 0 => Ok(true),
            _ => Err(self.lib.take_error()),
        }
    }
}

/// The domain and its connection. Fields drop in order: the domain is
/// released before the connection is closed.
pub(super) struct Handles {
    pub(super) dom: Domain,
    pub(super) conn: Connection,
}

impl Handles {
    /// One QMP command through libvirt: the reply's text.
    pub(super) fn monitor_command(&self, cmd: &CStr, fds: &[RawFd]) -> Result<Vec<u8>, VirErr> {
        let lib = self.dom.lib;
        let mut result: *mut c_char = std::ptr::null_mut();
        let rc = if fds.is_empty() {
            // SAFETY: a valid domain, a NUL-terminated command and an
            // out-pointer for the malloc'ed reply.
            unsafe {
                (lib.virDomainQemuMonitorCommand)(
                    self.dom.ptr,
                    cmd.as_ptr(),
                    &mut result,
                    ffi::VIR_DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT,
                )
            }
        } else {
            // The sink checks `Session::passes_fds` before calling.
            let Some(with_files) = lib.virDomainQemuMonitorCommandWithFiles else {
                return Err(VirErr {
                    code: 0,
                    message: NO_FD_PASSING.to_owned(),
                });
            };
            let Ok(count) = c_uint::try_from(fds.len()) else {
                return Err(VirErr {
                    code: 0,
                    message: "too many file descriptors".to_owned(),
                });
            };
            // SAFETY: as above, plus `count` descriptors at `fds` (libvirt
            // only reads them; it takes the pointer as non-const) and no
            // returned descriptors asked for (both out-pointers null, as
            // libvirt requires).
            unsafe {
                with_files(
                    self.dom.ptr,
                    cmd.as_ptr(),
                    count,
                    fds.as_ptr().cast_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    &mut result,
                    ffi::VIR_DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT,
                )
            }
        };
        // SAFETY: on success `result` is a malloc'ed string we own; on
        // failure it is left null (and freeing null is skipped).
        let text = unsafe { ffi::take_c_bytes(result) };
        if rc < 0 {
            return Err(lib.take_error());
        }
        Ok(text.unwrap_or_default())
    }

    /// One guest agent command through libvirt: the reply's text.
    pub(super) fn agent_command(&self, cmd: &CStr, timeout: c_int) -> Result<Vec<u8>, VirErr> {
        let lib = self.dom.lib;
        // SAFETY: a valid domain and a NUL-terminated command; the result
        // is null (error) or a malloc'ed string we own.
        let result =
            unsafe { (lib.virDomainQemuAgentCommand)(self.dom.ptr, cmd.as_ptr(), timeout, 0) };
        // SAFETY: as just said.
        match unsafe { ffi::take_c_bytes(result) } {
            Some(text) => Ok(text),
            None => Err(lib.take_error()),
        }
    }

    /// After a failed call: whether the connection and the domain are still
    /// there (the failure was the command's own).
    pub(super) fn alive(&self) -> bool {
        let lib = self.conn.lib;
        // SAFETY: a valid connection.
        let conn_alive = unsafe { (lib.virConnectIsAlive)(self.conn.ptr) } == 1;
        let alive = conn_alive && matches!(self.dom.is_active(), Ok(true));
        let _ = lib.take_error();
        alive
    }
}
