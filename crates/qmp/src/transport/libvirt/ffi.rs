//! libvirt's C API, loaded at run time.
//!
//! The prototypes below are declared by hand from libvirt's public headers
//! (`libvirt/libvirt-host.h`, `libvirt-domain.h`, `libvirt-event.h`,
//! `libvirt-qemu.h`, `virterror.h`), so building needs neither the headers
//! nor the library: `libvirt.so.0` and `libvirt-qemu.so.0` are opened with
//! `dlopen` the first time a libvirt transport is used, and stay loaded for
//! the life of the process.

// Names follow the C API they stand for.
#![allow(non_camel_case_types, non_snake_case)]

use std::ffi::{c_char, c_int, c_longlong, c_uint, c_void, CStr};
use std::sync::OnceLock;

use libloading::Library;

use super::LibvirtError;

/// `virConnectPtr`: an opaque connection.
pub(super) type virConnectPtr = *mut c_void;
/// `virDomainPtr`: an opaque domain handle.
pub(super) type virDomainPtr = *mut c_void;

/// `struct _virError` (`virterror.h`). Only `code` and `message` are read;
/// the rest is declared so the layout is the real one.
#[repr(C)]
pub(super) struct virError {
    pub code: c_int,
    pub domain: c_int,
    pub message: *mut c_char,
    pub level: c_int,
    pub conn: virConnectPtr,
    pub dom: virDomainPtr,
    pub str1: *mut c_char,
    pub str2: *mut c_char,
    pub str3: *mut c_char,
    pub int1: c_int,
    pub int2: c_int,
    pub net: *mut c_void,
}

/// `virFreeCallback`.
pub(super) type virFreeCallback = unsafe extern "C" fn(opaque: *mut c_void);
/// `virErrorFunc`.
pub(super) type virErrorFunc = unsafe extern "C" fn(user: *mut c_void, error: *mut virError);
/// `virEventTimeoutCallback`.
pub(super) type virEventTimeoutCallback = unsafe extern "C" fn(timer: c_int, opaque: *mut c_void);
/// `virConnectCloseFunc`.
pub(super) type virConnectCloseFunc =
    unsafe extern "C" fn(conn: virConnectPtr, reason: c_int, opaque: *mut c_void);
/// `virConnectDomainEventGenericCallback`: what
/// `virConnectDomainEventRegisterAny` is declared to take; the real
/// callback's type depends on the event id.
pub(super) type virConnectDomainEventGenericCallback =
    unsafe extern "C" fn(conn: virConnectPtr, dom: virDomainPtr, opaque: *mut c_void);
/// `virConnectDomainEventCallback`, the callback of
/// `VIR_DOMAIN_EVENT_ID_LIFECYCLE`.
pub(super) type virConnectDomainEventCallback = unsafe extern "C" fn(
    conn: virConnectPtr,
    dom: virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) -> c_int;
/// `virConnectDomainQemuMonitorEventCallback` (`libvirt-qemu.h`).
pub(super) type virConnectDomainQemuMonitorEventCallback = unsafe extern "C" fn(
    conn: virConnectPtr,
    dom: virDomainPtr,
    event: *const c_char,
    seconds: c_longlong,
    micros: c_uint,
    details: *const c_char,
    opaque: *mut c_void,
);

/// `VIR_CONNECT_LIST_DOMAINS_ACTIVE`.
pub(super) const VIR_CONNECT_LIST_DOMAINS_ACTIVE: c_uint = 1;
/// `VIR_DOMAIN_EVENT_ID_LIFECYCLE`.
pub(super) const VIR_DOMAIN_EVENT_ID_LIFECYCLE: c_int = 0;
/// `VIR_DOMAIN_EVENT_STOPPED`, a lifecycle event.
pub(super) const VIR_DOMAIN_EVENT_STOPPED: c_int = 5;
/// `VIR_DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT`: the command is QMP.
pub(super) const VIR_DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT: c_uint = 0;
/// `VIR_DOMAIN_QEMU_AGENT_COMMAND_DEFAULT`: the timeout configured for the
/// domain's agent (`virsh guest-agent-timeout`).
pub(super) const VIR_DOMAIN_QEMU_AGENT_COMMAND_DEFAULT: c_int = -1;
/// `VIR_UUID_STRING_BUFLEN`.
pub(super) const VIR_UUID_STRING_BUFLEN: usize = 36 + 1;

/// `virErrorNumber` values this module tells apart.
pub(super) mod code {
    use std::ffi::c_int;
    pub const VIR_ERR_INVALID_DOMAIN: c_int = 7;
    pub const VIR_ERR_OPERATION_FAILED: c_int = 9;
    pub const VIR_ERR_OPERATION_DENIED: c_int = 29;
    pub const VIR_ERR_SYSTEM_ERROR: c_int = 38;
    pub const VIR_ERR_NO_DOMAIN: c_int = 42;
    pub const VIR_ERR_AUTH_FAILED: c_int = 45;
    pub const VIR_ERR_OPERATION_INVALID: c_int = 55;
    pub const VIR_ERR_ARGUMENT_UNSUPPORTED: c_int = 74;
    pub const VIR_ERR_AUTH_CANCELLED: c_int = 79;
    pub const VIR_ERR_AGENT_UNRESPONSIVE: c_int = 86;
    pub const VIR_ERR_ACCESS_DENIED: c_int = 88;
    pub const VIR_ERR_AUTH_UNAVAILABLE: c_int = 94;
    pub const VIR_ERR_AGENT_UNSYNCED: c_int = 97;
}

/// The client library's file names, as the dynamic loader looks them up.
pub(super) const LIBVIRT_SO: &str = "libvirt.so.0";
pub(super) const LIBVIRT_QEMU_SO: &str = "libvirt-qemu.so.0";
/// GLib, which libvirt (6.1 and later) runs its default event loop on; used
/// only to run the loop's pending clean-ups when the last user stops it.
const GLIB_SO: &str = "libglib-2.0.so.0";

/// The loaded functions. Each pointer stays valid as long as the
/// [`Library`] it came from, which is kept here, in a static, for ever.
pub(super) struct Lib {
    pub virInitialize: unsafe extern "C" fn() -> c_int,
    pub virConnectOpenAuth: unsafe extern "C" fn(
        name: *const c_char,
        auth: *mut c_void,
        flags: c_uint,
    ) -> virConnectPtr,
    /// The value of `virConnectAuthPtrDefault`: prompts on the terminal
    /// for credentials, like virsh, only when the server asks for some.
    pub auth_default: AuthPtr,
    pub virConnectClose: unsafe extern "C" fn(conn: virConnectPtr) -> c_int,
    pub virConnectIsAlive: unsafe extern "C" fn(conn: virConnectPtr) -> c_int,
    pub virConnectListAllDomains: unsafe extern "C" fn(
        conn: virConnectPtr,
        domains: *mut *mut virDomainPtr,
        flags: c_uint,
    ) -> c_int,
    pub virDomainLookupByName:
        unsafe extern "C" fn(conn: virConnectPtr, name: *const c_char) -> virDomainPtr,
    pub virDomainLookupByUUIDString:
        unsafe extern "C" fn(conn: virConnectPtr, uuid: *const c_char) -> virDomainPtr,
    pub virDomainLookupByID: unsafe extern "C" fn(conn: virConnectPtr, id: c_int) -> virDomainPtr,
    pub virDomainFree: unsafe extern "C" fn(dom: virDomainPtr) -> c_int,
    pub virDomainIsActive: unsafe extern "C" fn(dom: virDomainPtr) -> c_int,
    pub virDomainGetName: unsafe extern "C" fn(dom: virDomainPtr) -> *const c_char,
    pub virDomainGetID: unsafe extern "C" fn(dom: virDomainPtr) -> c_uint,
    pub virDomainGetUUIDString: unsafe extern "C" fn(dom: virDomainPtr, buf: *mut c_char) -> c_int,
    pub virGetLastError: unsafe extern "C" fn() -> *mut virError,
    pub virResetLastError: unsafe extern "C" fn(),
    pub virSetErrorFunc: unsafe extern "C" fn(user: *mut c_void, handler: Option<virErrorFunc>),
    pub virEventRegisterDefaultImpl: unsafe extern "C" fn() -> c_int,
    pub virEventRunDefaultImpl: unsafe extern "C" fn() -> c_int,
    pub virEventAddTimeout: unsafe extern "C" fn(
        frequency: c_int,
        cb: virEventTimeoutCallback,
        opaque: *mut c_void,
        ff: Option<virFreeCallback>,
    ) -> c_int,
    pub virEventRemoveTimeout: unsafe extern "C" fn(timer: c_int) -> c_int,
    pub virConnectRegisterCloseCallback: unsafe extern "C" fn(
        conn: virConnectPtr,
        cb: virConnectCloseFunc,
        opaque: *mut c_void,
        freecb: Option<virFreeCallback>,
    ) -> c_int,
    pub virConnectUnregisterCloseCallback:
        unsafe extern "C" fn(conn: virConnectPtr, cb: virConnectCloseFunc) -> c_int,
    pub virConnectDomainEventRegisterAny: unsafe extern "C" fn(
        conn: virConnectPtr,
        dom: virDomainPtr,
        event_id: c_int,
        cb: virConnectDomainEventGenericCallback,
        opaque: *mut c_void,
        freecb: Option<virFreeCallback>,
    ) -> c_int,
    pub virConnectDomainEventDeregisterAny:
        unsafe extern "C" fn(conn: virConnectPtr, callback_id: c_int) -> c_int,
    // libvirt-qemu.so.0
    pub virDomainQemuMonitorCommand: unsafe extern "C" fn(
        dom: virDomainPtr,
        cmd: *const c_char,
        result: *mut *mut c_char,
        flags: c_uint,
    ) -> c_int,
    /// libvirt 7.2 and later.
    pub virDomainQemuMonitorCommandWithFiles: Option<
        unsafe extern "C" fn(
            dom: virDomainPtr,
            cmd: *const c_char,
            ninfiles: c_uint,
            infiles: *mut c_int,
            noutfiles: *mut c_uint,
            outfiles: *mut *mut c_int,
            result: *mut *mut c_char,
            flags: c_uint,
        ) -> c_int,
    >,
    pub virDomainQemuAgentCommand: unsafe extern "C" fn(
        dom: virDomainPtr,
        cmd: *const c_char,
        timeout: c_int,
        flags: c_uint,
    ) -> *mut c_char,
    pub virConnectDomainQemuMonitorEventRegister: unsafe extern "C" fn(
        conn: virConnectPtr,
        dom: virDomainPtr,
        event: *const c_char,
        cb: virConnectDomainQemuMonitorEventCallback,
        opaque: *mut c_void,
        freecb: Option<virFreeCallback>,
        flags: c_uint,
    ) -> c_int,
    pub virConnectDomainQemuMonitorEventDeregister:
        unsafe extern "C" fn(conn: virConnectPtr, callback_id: c_int) -> c_int,
    // libglib-2.0.so.0 (optional)
    /// `g_main_context_iteration(context, may_block)`.
    pub g_main_context_iteration:
        Option<unsafe extern "C" fn(context: *mut c_void, may_block: c_int) -> c_int>,
    _libvirt: Library,
    _qemu: Library,
    _glib: Option<Library>,
}

/// `virConnectAuthPtrDefault`'s value, a pointer to a static structure
/// inside libvirt that libvirt only reads.
#[derive(Clone, Copy)]
pub(super) struct AuthPtr(pub *mut c_void);

// SAFETY: the pointed-to structure is immutable static data of libvirt.
unsafe impl Send for AuthPtr {}
// SAFETY: as above: nothing writes to it.
unsafe impl Sync for AuthPtr {}

/// An error as libvirt reported it: its `virErrorNumber` and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VirErr {
    pub code: c_int,
    pub message: String,
}

static LIB: OnceLock<Result<Lib, LibvirtError>> = OnceLock::new();

/// The loaded library, loading it on first use (once per process); also
/// silences libvirt's own error printing and registers its default event
/// loop implementation, before any connection is opened.
pub(super) fn lib() -> Result<&'static Lib, LibvirtError> {
    LIB.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn missing(library: &str, reason: impl std::fmt::Display) -> LibvirtError {
    LibvirtError::LibraryMissing {
        library: library.to_owned(),
        reason: reason.to_string().replace('\n', " "),
    }
}

/// Look up `name` in `lib` and copy out the function pointer.
///
/// # Safety
/// `T` must be the function's real type.
unsafe fn sym<T: Copy>(lib: &Library, file: &str, name: &str) -> Result<T, LibvirtError> {
    let mut cname = name.as_bytes().to_vec();
    cname.push(0);
    // SAFETY: the caller guarantees `T` is the symbol's type; the pointer
    // is copied out and only used while `lib` stays loaded (for ever).
    unsafe { lib.get::<T>(&cname) }
        .map(|s| *s)
        .map_err(|e| missing(file, format!("{name} not found: {e}")))
}

fn load() -> Result<Lib, LibvirtError> {
    // SAFETY: loading libvirt runs its initialisers, which have no
    // preconditions.
    let libvirt = unsafe { Library::new(LIBVIRT_SO) }.map_err(|e| missing(LIBVIRT_SO, e))?;
    // SAFETY: as above.
    let qemu = unsafe { Library::new(LIBVIRT_QEMU_SO) }.map_err(|e| missing(LIBVIRT_QEMU_SO, e))?;
    // SAFETY: as above; GLib is already loaded as libvirt's dependency.
    let glib = unsafe { Library::new(GLIB_SO) }.ok();
    let v = LIBVIRT_SO;
    let q = LIBVIRT_QEMU_SO;
    // SAFETY (every `sym` call below): each type is the prototype the
    // libvirt headers declare for that name, written out above.
    let lib = unsafe {
        let auth: *mut *mut c_void = sym(&libvirt, v, "virConnectAuthPtrDefault")?;
        Lib {
            virInitialize: sym(&libvirt, v, "virInitialize")?,
            virConnectOpenAuth: sym(&libvirt, v, "virConnectOpenAuth")?,
            // SAFETY: the symbol is the address of an initialised pointer
            // variable (`virConnectAuthPtr virConnectAuthPtrDefault`).
            auth_default: AuthPtr(*auth),
            virConnectClose: sym(&libvirt, v, "virConnectClose")?,
            virConnectIsAlive: sym(&libvirt, v, "virConnectIsAlive")?,
            virConnectListAllDomains: sym(&libvirt, v, "virConnectListAllDomains")?,
            virDomainLookupByName: sym(&libvirt, v, "virDomainLookupByName")?,
            virDomainLookupByUUIDString: sym(&libvirt, v, "virDomainLookupByUUIDString")?,
            virDomainLookupByID: sym(&libvirt, v, "virDomainLookupByID")?,
            virDomainFree: sym(&libvirt, v, "virDomainFree")?,
            virDomainIsActive: sym(&libvirt, v, "virDomainIsActive")?,
            virDomainGetName: sym(&libvirt, v, "virDomainGetName")?,
            virDomainGetID: sym(&libvirt, v, "virDomainGetID")?,
            virDomainGetUUIDString: sym(&libvirt, v, "virDomainGetUUIDString")?,
            virGetLastError: sym(&libvirt, v, "virGetLastError")?,
            virResetLastError: sym(&libvirt, v, "virResetLastError")?,
            virSetErrorFunc: sym(&libvirt, v, "virSetErrorFunc")?,
            virEventRegisterDefaultImpl: sym(&libvirt, v, "virEventRegisterDefaultImpl")?,
            virEventRunDefaultImpl: sym(&libvirt, v, "virEventRunDefaultImpl")?,
            virEventAddTimeout: sym(&libvirt, v, "virEventAddTimeout")?,
            virEventRemoveTimeout: sym(&libvirt, v, "virEventRemoveTimeout")?,
            virConnectRegisterCloseCallback: sym(&libvirt, v, "virConnectRegisterCloseCallback")?,
            virConnectUnregisterCloseCallback: sym(
                &libvirt,
                v,
                "virConnectUnregisterCloseCallback",
            )?,
            virConnectDomainEventRegisterAny: sym(&libvirt, v, "virConnectDomainEventRegisterAny")?,
            virConnectDomainEventDeregisterAny: sym(
                &libvirt,
                v,
                "virConnectDomainEventDeregisterAny",
            )?,
            virDomainQemuMonitorCommand: sym(&qemu, q, "virDomainQemuMonitorCommand")?,
            virDomainQemuMonitorCommandWithFiles: sym(
                &qemu,
                q,
                "virDomainQemuMonitorCommandWithFiles",
            )
            .ok(),
            virDomainQemuAgentCommand: sym(&qemu, q, "virDomainQemuAgentCommand")?,
            virConnectDomainQemuMonitorEventRegister: sym(
                &qemu,
                q,
                "virConnectDomainQemuMonitorEventRegister",
            )?,
            virConnectDomainQemuMonitorEventDeregister: sym(
                &qemu,
                q,
                "virConnectDomainQemuMonitorEventDeregister",
            )?,
            g_main_context_iteration: glib
                .as_ref()
                .and_then(|g| sym(g, GLIB_SO, "g_main_context_iteration").ok()),
            _libvirt: libvirt,
            _qemu: qemu,
            _glib: glib,
        }
    };
    // SAFETY: plain library calls with valid arguments: virInitialize has
    // no preconditions; a null user pointer and a handler that ignores its
    // arguments are valid for virSetErrorFunc; registering the default
    // event implementation happens once (this function runs once) and
    // before any connection is opened.
    unsafe {
        if (lib.virInitialize)() < 0 {
            return Err(LibvirtError::Libvirt {
                message: format!("virInitialize failed: {}", lib.take_error().message),
            });
        }
        (lib.virSetErrorFunc)(std::ptr::null_mut(), Some(ignore_error));
        if (lib.virEventRegisterDefaultImpl)() < 0 {
            return Err(LibvirtError::Libvirt {
                message: format!(
                    "cannot register libvirt's event loop: {}",
                    lib.take_error().message
                ),
            });
        }
    }
    Ok(lib)
}

/// libvirt calls this for every error instead of printing it on stderr;
/// errors are read with `virGetLastError` where they happen.
unsafe extern "C" fn ignore_error(_user: *mut c_void, _error: *mut virError) {}

impl Lib {
    /// This thread's last libvirt error (libvirt keeps one per thread),
    /// then reset it. The message is made one line.
    pub fn take_error(&self) -> VirErr {
        // SAFETY: virGetLastError returns null or a pointer to this thread's
        // error object, valid until the next libvirt call on this thread;
        // the message is null or a NUL-terminated string. Everything is
        // copied before virResetLastError frees them.
        unsafe {
            let err = (self.virGetLastError)();
            let out = if err.is_null() {
                VirErr {
                    code: 0,
                    message: "unknown libvirt error".to_owned(),
                }
            } else {
                let message = if (*err).message.is_null() {
                    format!("libvirt error {}", (*err).code)
                } else {
                    one_line(&CStr::from_ptr((*err).message).to_string_lossy())
                };
                VirErr {
                    code: (*err).code,
                    message,
                }
            };
            (self.virResetLastError)();
            out
        }
    }
}

/// `text` on one line: line breaks become spaces, surrounding space trimmed.
pub(super) fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Copy a C string that libvirt allocated with `malloc` (without its NUL),
/// then free it.
///
/// # Safety
/// `ptr` must be null or a NUL-terminated string allocated with `malloc`
/// and owned by the caller.
pub(super) unsafe fn take_c_bytes(ptr: *mut c_char) -> Option<Vec<u8>> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: per the contract, a valid NUL-terminated string we own.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes().to_vec();
    // SAFETY: allocated with malloc and not used after this.
    unsafe { libc::free(ptr.cast()) };
    Some(bytes)
}
