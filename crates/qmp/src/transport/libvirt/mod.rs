//! A QMP session through libvirt, for a domain (VM) that libvirt manages.
//!
//! libvirt holds QEMU's only QMP monitor; its passthrough API carries our
//! commands to that monitor (`virDomainQemuMonitorCommand`, what
//! `virsh qemu-monitor-command` uses) and QEMU's events back
//! (`virConnectDomainQemuMonitorEventRegister`), or commands to the guest
//! agent (`virDomainQemuAgentCommand`). libvirt's own client library does
//! all the talking to libvirtd, locally or remotely (`qemu+ssh://...`).
//!
//! That library is loaded when first needed (`libvirt.so.0`,
//! `libvirt-qemu.so.0`), not linked: this crate builds without libvirt's
//! development files, and programs built from it run where libvirt is not
//! installed, failing with [`LibvirtError::LibraryMissing`] only when a
//! libvirt transport is asked for.
//!
//! ```no_run
//! use qmp_client::transport::libvirt::LibvirtTransport;
//! use qmp_client::transport::{Received, Transport};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let t = LibvirtTransport::open(None, "vm1", false)?;
//! eprintln!("{}", t.taint_notice());
//! let mut halves = Box::new(t).split()?;
//! let cmd = qmp_client::command("query-status", None);
//! halves.sink.send(&cmd, &qmp_client::encode(&cmd), &[])?;
//! if let Some(Received::Frame(Ok(reply))) = halves.source.receive(&mut |_| {})? {
//!     println!("{}", serde_json::to_string(&reply)?);
//! }
//! (halves.closer)();
//! # Ok(())
//! # }
//! ```
//!
//! # How messages are carried
//!
//! * Each message given to the sink is one libvirt call, made on the
//!   sending thread; the reply is queued for the source. libvirt puts its
//!   own `"id"` on the command (and refuses one already there), so the
//!   message goes without its id and the reply gets it back, where QEMU
//!   would have put it.
//! * A failed call (say, libvirt's job lock timed out) becomes an error
//!   reply, `{"id": ..., "error": {"class": "GenericError", "desc": MESSAGE}}`,
//!   and the session carries on; a lost connection to libvirtd or a domain
//!   that stopped ends the source instead, as QEMU closing its socket would.
//! * Events are rebuilt as QEMU sends them:
//!   `{"timestamp": {"seconds": S, "microseconds": US}, "event": NAME, "data": {...}}`.
//!   They and the replies come through different paths inside libvirt,
//!   so an event QEMU sent just before a reply may be received just after
//!   it; the transport's [`Transport::syncer`] waits for such events (one
//!   round trip to libvirtd), and [`crate::Client::sync`] calls it.
//! * `human-monitor-command` goes through as QMP, so its reply is QEMU's own.
//! * Agent mode: libvirt synchronises with the agent before each command;
//!   `guest-sync-delimited` is sent as `guest-sync`, and the source reports
//!   [`Received::Delimiter`] before its reply, as the agent would.
//! * libvirt already negotiated capabilities with QEMU: the handshake is
//!   [`Handshake::Negotiated`], with a greeting made from `query-version`.

mod event_loop;
mod ffi;

use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_longlong, c_uint, c_void, CStr, CString};
use std::io;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;

use self::ffi::{code, virConnectPtr, virDomainPtr, Lib, VirErr};
use super::{Closer, Halves, Handshake, Received, Sink, Source, Syncer, Transport};
use crate::framing::{Decoder, FrameError};
use crate::message::{empty_return, generic_error, Greeting, Object};
use crate::plumbing::lock;

/// The URI used when none is given and `$LIBVIRT_DEFAULT_URI` is unset.
pub const DEFAULT_URI: &str = "qemu:///system";

/// Why a libvirt session could not be opened. Every message is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LibvirtError {
    /// libvirt's client library could not be loaded.
    #[error(
        "cannot load libvirt's client library {library} ({reason}); install it: \
         apt-get install libvirt0 (Debian, Ubuntu) or dnf install libvirt-libs (Fedora, RHEL)"
    )]
    LibraryMissing {
        /// The file that could not be loaded, e.g. `libvirt.so.0`.
        library: String,
        /// Why, as the dynamic loader said.
        reason: String,
    },
    /// The connection to libvirt failed.
    #[error("cannot connect to libvirt at {uri}: {message}")]
    CannotConnect {
        /// The URI, and where it came from when the caller gave none.
        uri: String,
        /// libvirt's message.
        message: String,
    },
    /// libvirt (or the system) refused access.
    #[error("permission denied by libvirt at {uri}: {message}")]
    PermissionDenied {
        /// The URI, and where it came from when the caller gave none.
        uri: String,
        /// libvirt's message.
        message: String,
    },
    /// No domain has that name, UUID or id.
    #[error(
        "no domain {domain} at {uri} (tried as name, UUID and id; `virsh list --all` shows them)"
    )]
    NoSuchDomain {
        /// The domain as given.
        domain: String,
        /// The URI, and where it came from when the caller gave none.
        uri: String,
    },
    /// The text names different domains as an id, a UUID and a name (a
    /// domain called `37` beside another whose id is 37, say): nothing is
    /// opened.
    #[error("{}", ambiguity(domain, uri, matches))]
    Ambiguous {
        /// The domain as given.
        domain: String,
        /// The URI, and where it came from when the caller gave none.
        uri: String,
        /// What the text matched, in the order tried (id, UUID, name).
        matches: Vec<DomainMatch>,
    },
    /// The domain exists but QEMU is not running.
    #[error("domain {domain} is not running (start it with `virsh start {domain}`)")]
    NotRunning {
        /// The domain's name.
        domain: String,
    },
    /// Agent mode: the domain has no guest agent channel, or no agent is
    /// listening on it.
    #[error("domain {domain} has no guest agent to talk to: {message}")]
    NoAgent {
        /// The domain's name.
        domain: String,
        /// libvirt's message.
        message: String,
    },
    /// QEMU did not answer `query-version` in time (it is stopped, say).
    #[error(
        "QEMU of domain {domain} did not answer within {} s (is its process stopped or hung?)",
        timeout.as_secs_f64()
    )]
    NoAnswer {
        /// The domain's name.
        domain: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// Any other failure reported by libvirt.
    #[error("libvirt: {message}")]
    Libvirt {
        /// What failed, with libvirt's message.
        message: String,
    },
}

/// How a domain was found from the text that named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedBy {
    /// As its numeric id (running domains have one).
    Id,
    /// As its UUID.
    Uuid,
    /// As its name.
    Name,
}

impl std::fmt::Display for MatchedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MatchedBy::Id => "id",
            MatchedBy::Uuid => "UUID",
            MatchedBy::Name => "name",
        })
    }
}

/// One domain that a text matched, and as what
/// ([`LibvirtError::Ambiguous`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainMatch {
    /// What the text matched: the domain's id, UUID or name.
    pub by: MatchedBy,
    /// The domain's name.
    pub name: String,
    /// The domain's UUID.
    pub uuid: String,
}

/// The message of [`LibvirtError::Ambiguous`], one line.
fn ambiguity(domain: &str, uri: &str, matches: &[DomainMatch]) -> String {
    let what: Vec<String> = matches
        .iter()
        .map(|m| match m.by {
            MatchedBy::Uuid => format!("the UUID of domain {}", m.name),
            by => format!("the {by} of domain {} (UUID {})", m.name, m.uuid),
        })
        .collect();
    format!(
        "domain {domain} is ambiguous at {uri}: it is {}; give the UUID of the one you mean",
        what.join(" and ")
    )
}

/// How [`LibvirtTransport::open_with`] opens a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// With the guest agent rather than QEMU's monitor.
    pub agent: bool,
    /// Monitor: do not ask QEMU for its version, so there is no greeting
    /// ([`Handshake::Negotiated`]`(None)`) and one call to QEMU less (for
    /// a run of one command with no banner, that is half the calls).
    pub skip_greeting: bool,
    /// Monitor: give QEMU at most this long to answer the `query-version`
    /// that makes the greeting (libvirt itself would wait for ever on a
    /// QEMU that is stopped or hung); then the error is
    /// [`LibvirtError::NoAnswer`], and a thread of its own waits for the
    /// call to return and closes the connection. `None`: wait as long as
    /// libvirt does. Connecting to libvirt is not bounded by it (libvirt
    /// bounds it, and may ask for a password meanwhile); the guest agent's
    /// `guest-ping` has a bound of its own.
    pub greeting_timeout: Option<Duration>,
}

/// A running domain, as listed by [`list_domains`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    /// The domain's name.
    pub name: String,
    /// Its id (running domains have one).
    pub id: u32,
    /// Its UUID, in the usual 36-character form.
    pub uuid: String,
}

/// The running domains at `uri` (default: `$LIBVIRT_DEFAULT_URI`, else
/// [`DEFAULT_URI`]), by id.
pub fn list_domains(uri: Option<&str>) -> Result<Vec<DomainInfo>, LibvirtError> {
    let lib = ffi::lib()?;
    let uri = ResolvedUri::new(uri);
    let conn = Connection::open(lib, &uri)?;
    let mut list: *mut virDomainPtr = std::ptr::null_mut();
    // SAFETY: a live connection and a valid out-pointer; on success libvirt
    // stores a malloc'ed array of `n` domain references in `list`.
    let n = unsafe {
        (lib.virConnectListAllDomains)(conn.ptr, &mut list, ffi::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
    };
    if n < 0 {
        return Err(classify(
            lib.take_error(),
            &uri.described,
            "cannot list domains",
        ));
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: `i < n`, within the array; each element is a reference
        // we own, released when `dom` drops.
        let dom = Domain {
            lib,
            ptr: unsafe { *list.add(i) },
        };
        out.push(DomainInfo {
            name: dom.name(),
            id: dom.id().unwrap_or(0),
            uuid: dom.uuid(),
        });
    }
    // SAFETY: the array was allocated by libvirt with malloc; its elements
    // were released above.
    unsafe { libc::free(list.cast()) };
    out.sort_by(|a, b| (a.id, &a.name).cmp(&(b.id, &b.name)));
    Ok(out)
}

/// A QMP session with a libvirt domain's monitor, or its guest agent.
///
/// See the [module documentation](self).
pub struct LibvirtTransport {
    session: Arc<Session>,
    greeting: Option<Greeting>,
    domain: String,
    uri: String,
}

impl std::fmt::Debug for LibvirtTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibvirtTransport")
            .field("domain", &self.domain)
            .field("uri", &self.uri)
            .field("agent", &self.session.agent)
            .finish_non_exhaustive()
    }
}

impl LibvirtTransport {
    /// Connect to libvirt at `uri` (default: `$LIBVIRT_DEFAULT_URI`, else
    /// [`DEFAULT_URI`]) and open `domain`, given as a name, a UUID or a
    /// numeric id: an all-digit string is tried as an id and a name, a
    /// UUID-shaped one as a UUID and a name. When those are different
    /// domains (a domain called `37` beside another whose id is 37) the
    /// error is [`LibvirtError::Ambiguous`], and nothing is opened: virsh
    /// would take the id.
    ///
    /// With `agent` false the session is with QEMU's monitor: this asks
    /// QEMU for its version to make the greeting. With `agent` true it is
    /// with the guest agent, checked with a `guest-ping`.
    ///
    /// libvirt may ask for credentials on the terminal, as virsh does, when
    /// the server requires some (never for `qemu:///system` as root, nor
    /// for `qemu+ssh://` with keys).
    pub fn open(
        uri: Option<&str>,
        domain: &str,
        agent: bool,
    ) -> Result<LibvirtTransport, LibvirtError> {
        let opts = OpenOptions {
            agent,
            ..OpenOptions::default()
        };
        LibvirtTransport::open_with(uri, domain, &opts)
    }

    /// [`LibvirtTransport::open`], as `opts` say.
    pub fn open_with(
        uri: Option<&str>,
        domain: &str,
        opts: &OpenOptions,
    ) -> Result<LibvirtTransport, LibvirtError> {
        let OpenOptions {
            agent,
            skip_greeting,
            greeting_timeout: timeout,
        } = *opts;
        let lib = ffi::lib()?;
        let uri = ResolvedUri::new(uri);
        let conn = Connection::open(lib, &uri)?;
        let dom = lookup(&conn, domain, &uri.described)?;
        let name = dom.name();
        let not_running = || LibvirtError::NotRunning {
            domain: name.clone(),
        };
        if agent || skip_greeting {
            // The monitor's query-version below says as much, in one call
            // less; guest-ping's errors would not.
            match dom.is_active() {
                Ok(true) => {}
                Ok(false) => return Err(not_running()),
                Err(e) => return Err(classify(e, &uri.described, "cannot get the domain's state")),
            }
        }
        let handles = Arc::new(Handles { dom, conn });
        let greeting = if agent {
            let ping = CString::from(c"{\"execute\":\"guest-ping\"}");
            match handles.agent_command(&ping, AGENT_PING_TIMEOUT) {
                Ok(_) => None,
                Err(e) if !handles.alive() => return Err(not_running_or(e, &uri, &name)),
                Err(e) if is_agent_error(&e) => {
                    return Err(LibvirtError::NoAgent {
                        domain: name,
                        message: e.message,
                    })
                }
                Err(e) => return Err(classify(e, &uri.described, "guest-ping failed")),
            }
        } else if skip_greeting {
            None
        } else {
            let caller = Arc::clone(&handles);
            let call = move || {
                let cmd = CString::from(c"{\"execute\":\"query-version\"}");
                caller.monitor_command(&cmd, &[])
            };
            let Some(result) = bounded(timeout, call)? else {
                return Err(LibvirtError::NoAnswer {
                    domain: name,
                    timeout: timeout.unwrap_or_default(),
                });
            };
            let text = match result {
                Ok(text) => text,
                Err(e) if !handles.alive() => return Err(not_running_or(e, &uri, &name)),
                Err(e) => return Err(classify(e, &uri.described, "query-version failed")),
            };
            Some(greeting_from(&text).map_err(|message| LibvirtError::Libvirt { message })?)
        };
        let session = Arc::new(Session {
            lib,
            handles: Mutex::new(Some(Arc::clone(&handles))),
            callbacks: Mutex::new(Callbacks::default()),
            queue: Arc::new(Queue::default()),
            agent,
        });
        // From here on, dropping `session` deregisters what was registered.
        session
            .register(&handles)
            .map_err(|e| classify(e, &uri.described, "cannot register for events"))?;
        drop(handles);
        Ok(LibvirtTransport {
            session,
            greeting,
            domain: name,
            uri: uri.described,
        })
    }

    /// The domain's name.
    pub fn domain_name(&self) -> &str {
        &self.domain
    }

    /// The URI connected to, and where it came from when the caller gave
    /// none (e.g. `qemu:///system (the default)`).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Whether this is a session with the guest agent rather than the
    /// monitor.
    pub fn is_agent(&self) -> bool {
        self.session.agent
    }

    /// The one-line notice to show the user: libvirt marks the domain as
    /// tainted once its monitor (or agent) is used behind its back.
    pub fn taint_notice(&self) -> String {
        taint_notice(&self.domain, self.session.agent)
    }
}

/// The notice for [`LibvirtTransport::taint_notice`].
pub fn taint_notice(domain: &str, agent: bool) -> String {
    if agent {
        format!(
            "note: libvirt marks domain {domain} as tainted (custom-ga-command) \
             when its guest agent is used directly"
        )
    } else {
        format!(
            "note: libvirt marks domain {domain} as tainted (custom-monitor) \
             when its monitor is used directly"
        )
    }
}

impl Transport for LibvirtTransport {
    fn handshake(&self) -> Handshake {
        Handshake::Negotiated(self.greeting.clone())
    }

    fn passes_fds(&self) -> bool {
        self.session.passes_fds()
    }

    fn syncer(&self) -> Option<Syncer> {
        // The guest agent sends no events.
        if self.session.agent {
            return None;
        }
        let session = Arc::clone(&self.session);
        Some(Arc::new(move |timeout| session.sync(timeout)))
    }

    fn split(self: Box<Self>) -> io::Result<Halves> {
        let session = self.session;
        let closing = Arc::clone(&session);
        let closer: Closer = Arc::new(move || closing.shutdown());
        Ok(Halves {
            source: Box::new(LibvirtSource {
                session: Arc::clone(&session),
                pending: None,
                raw_wanted: true,
            }),
            sink: Box::new(LibvirtSink { session }),
            closer,
        })
    }
}

/// How long a sync waits for libvirt's event loop to hand over the events
/// it holds (normally microseconds).
const SETTLE_LIMIT: Duration = Duration::from_secs(1);

/// Call `f` and return what it returns, or `Ok(None)` if it did not
/// return within `timeout` (it then goes on, on a thread of its own).
fn bounded<T: Send + 'static>(
    timeout: Option<Duration>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<Option<T>, LibvirtError> {
    let Some(timeout) = timeout else {
        return Ok(Some(f()));
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("libvirt-open".to_owned())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| LibvirtError::Libvirt {
            message: format!("cannot start a thread: {e}"),
        })?;
    Ok(rx.recv_timeout(timeout).ok())
}

/// Why file descriptors cannot go to the monitor through this libvirt.
const NO_FD_PASSING: &str = "this libvirt cannot pass file descriptors (libvirt 7.2 or later can)";

/// How long the `guest-ping` at open time may take, in seconds.
const AGENT_PING_TIMEOUT: c_int = 5;

/// The URI to connect to and how to name it in messages.
struct ResolvedUri {
    uri: String,
    described: String,
}

impl ResolvedUri {
    fn new(given: Option<&str>) -> ResolvedUri {
        if let Some(uri) = given {
            return ResolvedUri {
                uri: uri.to_owned(),
                described: uri.to_owned(),
            };
        }
        match std::env::var("LIBVIRT_DEFAULT_URI") {
            Ok(uri) if !uri.is_empty() => ResolvedUri {
                described: format!("{uri} (from $LIBVIRT_DEFAULT_URI)"),
                uri,
            },
            _ => ResolvedUri {
                uri: DEFAULT_URI.to_owned(),
                described: format!("{DEFAULT_URI} (the default)"),
            },
        }
    }
}

/// Turn a libvirt error into the [`LibvirtError`] it stands for.
fn classify(e: VirErr, uri: &str, what: &str) -> LibvirtError {
    if is_permission_denied(&e) {
        LibvirtError::PermissionDenied {
            uri: uri.to_owned(),
            message: e.message,
        }
    } else {
        LibvirtError::Libvirt {
            message: format!("{what}: {}", e.message),
        }
    }
}

/// Whether libvirt (or the system) refused access.
fn is_permission_denied(e: &VirErr) -> bool {
    matches!(
        e.code,
        code::VIR_ERR_ACCESS_DENIED
            | code::VIR_ERR_OPERATION_DENIED
            | code::VIR_ERR_AUTH_FAILED
            | code::VIR_ERR_AUTH_CANCELLED
            | code::VIR_ERR_AUTH_UNAVAILABLE
    ) || e.message.contains("Permission denied")
}

/// A call failed and the connection or the domain is gone: say which.
fn not_running_or(e: VirErr, uri: &ResolvedUri, domain: &str) -> LibvirtError {
    match e.code {
        code::VIR_ERR_OPERATION_INVALID | code::VIR_ERR_NO_DOMAIN => LibvirtError::NotRunning {
            domain: domain.to_owned(),
        },
        _ => LibvirtError::CannotConnect {
            uri: uri.described.clone(),
            message: e.message,
        },
    }
}

fn is_agent_error(e: &VirErr) -> bool {
    matches!(
        e.code,
        code::VIR_ERR_ARGUMENT_UNSUPPORTED
            | code::VIR_ERR_AGENT_UNRESPONSIVE
            | code::VIR_ERR_AGENT_UNSYNCED
    )
}

/// Whether `text` looks like a UUID (with or without dashes).
fn uuid_like(text: &str) -> bool {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    hex.len() == 32
        && hex.chars().all(|c| c.is_ascii_hexdigit())
        && (text.len() == 32 || text.len() == 36)
}

/// Find the domain that `spec` names, as an id (if it is all digits), a
/// UUID (if it looks like one) and a name. Matches that are one domain are
/// one; matches that are different domains (a domain called `37` beside
/// another whose id is 37) are [`LibvirtError::Ambiguous`]: acting on
/// either could be acting on a VM the user did not mean. This is the one
/// place where a domain given by the user is resolved.
fn lookup(conn: &Connection, spec: &str, uri: &str) -> Result<Domain, LibvirtError> {
    let lib = conn.lib;
    let not_found = || LibvirtError::NoSuchDomain {
        domain: spec.to_owned(),
        uri: uri.to_owned(),
    };
    let Ok(cspec) = CString::new(spec) else {
        return Err(not_found());
    };
    let mut ways = Vec::with_capacity(3);
    if let Ok(id) = spec.parse::<c_int>() {
        if id >= 0 {
            ways.push((MatchedBy::Id, id));
        }
    }
    if uuid_like(spec) {
        ways.push((MatchedBy::Uuid, 0));
    }
    ways.push((MatchedBy::Name, 0));
    let mut found: Vec<(MatchedBy, Domain)> = Vec::with_capacity(ways.len());
    for (by, id) in ways {
        // SAFETY: a live connection and a NUL-terminated string; libvirt
        // returns null or a new reference, released by `Domain`.
        let ptr = unsafe {
            match by {
                MatchedBy::Id => (lib.virDomainLookupByID)(conn.ptr, id),
                MatchedBy::Uuid => (lib.virDomainLookupByUUIDString)(conn.ptr, cspec.as_ptr()),
                MatchedBy::Name => (lib.virDomainLookupByName)(conn.ptr, cspec.as_ptr()),
            }
        };
        if !ptr.is_null() {
            found.push((by, Domain { lib, ptr }));
            continue;
        }
        let e = lib.take_error();
        match e.code {
            code::VIR_ERR_NO_DOMAIN | code::VIR_ERR_INVALID_DOMAIN => {}
            _ => return Err(classify(e, uri, "cannot look the domain up")),
        }
    }
    let uuids: Vec<String> = found.iter().map(|(_, d)| d.uuid()).collect();
    if uuids.iter().any(|u| *u != uuids[0]) {
        return Err(LibvirtError::Ambiguous {
            domain: spec.to_owned(),
            uri: uri.to_owned(),
            matches: found
                .iter()
                .zip(uuids)
                .map(|((by, d), uuid)| DomainMatch {
                    by: *by,
                    name: d.name(),
                    uuid,
                })
                .collect(),
        });
    }
    found
        .into_iter()
        .next()
        .map(|(_, d)| d)
        .ok_or_else(not_found)
}

/// A libvirt connection; closed when dropped. Holds the event loop running.
struct Connection {
    lib: &'static Lib,
    ptr: virConnectPtr,
    /// Dropped after the connection is closed (fields drop after `drop`).
    _loop: event_loop::LoopGuard,
}

// SAFETY: libvirt connections may be used from any thread, concurrently
// (libvirt is thread-safe since 0.6); the pointer is released once, in Drop.
unsafe impl Send for Connection {}
// SAFETY: as above.
unsafe impl Sync for Connection {}

impl Connection {
    fn open(lib: &'static Lib, uri: &ResolvedUri) -> Result<Connection, LibvirtError> {
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
struct Domain {
    lib: &'static Lib,
    ptr: virDomainPtr,
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
    fn name(&self) -> String {
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

    fn id(&self) -> Option<u32> {
        // SAFETY: a valid domain.
        let id = unsafe { (self.lib.virDomainGetID)(self.ptr) };
        (id != c_uint::MAX).then_some(id)
    }

    fn uuid(&self) -> String {
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

    fn is_active(&self) -> Result<bool, VirErr> {
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
struct Handles {
    dom: Domain,
    conn: Connection,
}

impl Handles {
    /// One QMP command through libvirt: the reply's text.
    fn monitor_command(&self, cmd: &CStr, fds: &[RawFd]) -> Result<Vec<u8>, VirErr> {
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
    fn agent_command(&self, cmd: &CStr, timeout: c_int) -> Result<Vec<u8>, VirErr> {
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
    fn alive(&self) -> bool {
        let lib = self.conn.lib;
        // SAFETY: a valid connection.
        let conn_alive = unsafe { (lib.virConnectIsAlive)(self.conn.ptr) } == 1;
        let alive = conn_alive && matches!(self.dom.is_active(), Ok(true));
        let _ = lib.take_error();
        alive
    }
}

/// Ids of the callbacks registered on a connection.
#[derive(Default)]
struct Callbacks {
    close: bool,
    lifecycle: Option<c_int>,
    monitor: Option<c_int>,
}

/// What the halves of one session share.
struct Session {
    lib: &'static Lib,
    /// `None` once closed. Calls in progress hold their own reference, so
    /// closing never waits for one; the connection closes when the last
    /// reference goes.
    handles: Mutex<Option<Arc<Handles>>>,
    callbacks: Mutex<Callbacks>,
    queue: Arc<Queue>,
    agent: bool,
}

/// A reference to `queue` for a libvirt callback's opaque pointer, released
/// by [`free_queue`].
fn queue_ref(queue: &Arc<Queue>) -> *mut c_void {
    Arc::into_raw(Arc::clone(queue)).cast_mut().cast()
}

impl Session {
    fn handles(&self) -> Option<Arc<Handles>> {
        lock(&self.handles).clone()
    }

    /// Whether file descriptors can go with a command: to the monitor,
    /// through a libvirt that has `virDomainQemuMonitorCommandWithFiles`.
    fn passes_fds(&self) -> bool {
        !self.agent && self.lib.virDomainQemuMonitorCommandWithFiles.is_some()
    }

    /// Register for the loss of the connection, the domain's lifecycle and,
    /// for the monitor, all of QEMU's events.
    fn register(&self, h: &Handles) -> Result<(), VirErr> {
        let lib = self.lib;
        let conn = h.conn.ptr;
        let mut cbs = lock(&self.callbacks);
        let opaque = queue_ref(&self.queue);
        // SAFETY: a live connection; `opaque` is a counted reference that
        // libvirt gives back to `free_queue` once it is done with it.
        let rc = unsafe {
            (lib.virConnectRegisterCloseCallback)(conn, on_close, opaque, Some(free_queue))
        };
        if rc < 0 {
            // SAFETY: not registered: the reference is still ours to release.
            unsafe { free_queue(opaque) };
            return Err(lib.take_error());
        }
        cbs.close = true;

        let opaque = queue_ref(&self.queue);
        let lifecycle: ffi::virConnectDomainEventCallback = on_lifecycle;
        // SAFETY: as above. libvirt calls the callback of a
        // VIR_DOMAIN_EVENT_ID_LIFECYCLE registration with the lifecycle
        // signature; the API takes it as the generic type, as C's
        // VIR_DOMAIN_EVENT_CALLBACK cast does.
        let id = unsafe {
            let generic: ffi::virConnectDomainEventGenericCallback = std::mem::transmute(lifecycle);
            (lib.virConnectDomainEventRegisterAny)(
                conn,
                h.dom.ptr,
                ffi::VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                generic,
                opaque,
                Some(free_queue),
            )
        };
        if id < 0 {
            // SAFETY: not registered (libvirt does not call the free function
            // of a failed registration).
            unsafe { free_queue(opaque) };
            return Err(lib.take_error());
        }
        cbs.lifecycle = Some(id);

        if !self.agent {
            let opaque = queue_ref(&self.queue);
            // SAFETY: as above; a null event name means every event.
            let id = unsafe {
                (lib.virConnectDomainQemuMonitorEventRegister)(
                    conn,
                    h.dom.ptr,
                    std::ptr::null(),
                    on_monitor_event,
                    opaque,
                    Some(free_queue),
                    0,
                )
            };
            if id < 0 {
                // SAFETY: not registered.
                unsafe { free_queue(opaque) };
                return Err(lib.take_error());
            }
            cbs.monitor = Some(id);
        }
        Ok(())
    }

    /// Wait until every event QEMU sent before the replies queued so far
    /// has been queued and handled by the source's reader.
    ///
    /// libvirtd relays QEMU's events from its event loop, its replies from
    /// worker threads: a reply may leave before an event QEMU sent first.
    /// But libvirtd queues that event (its loop's timer fires at once)
    /// before it wakes the worker, and so relays it in the loop iteration
    /// that sends the reply at the latest; a request read after that, in a
    /// later iteration, is answered after it. So one round trip through
    /// libvirtd (`virDomainIsActive`) brings every such event here. Here,
    /// libvirt's client library hands events over on the event loop
    /// thread: [`event_loop::settle`] lets them through. Then a marker
    /// goes into the queue behind them, and the wait is for the source's
    /// reader to get past it.
    fn sync(&self, timeout: Option<Duration>) -> io::Result<()> {
        // Only for the monitor: the guest agent has no syncer.
        let Some(h) = self.handles() else {
            return Ok(());
        };
        if let Err(e) = h.dom.is_active() {
            return Err(io::Error::other(format!("libvirt: {}", e.message)));
        }
        drop(h);
        event_loop::settle(self.lib, SETTLE_LIMIT);
        self.queue.mark_and_wait(timeout)
    }

    /// End the session: the source returns end of stream, callbacks are
    /// deregistered, and the connection is closed (once no call is in
    /// progress on it), which stops the event thread if no other connection
    /// needs it. Idempotent.
    fn shutdown(&self) {
        self.queue.close();
        let Some(h) = lock(&self.handles).take() else {
            return;
        };
        let cbs = std::mem::take(&mut *lock(&self.callbacks));
        let lib = self.lib;
        let conn = h.conn.ptr;
        // SAFETY: a live connection and ids (or the callback) registered on
        // it; libvirt releases each opaque reference through `free_queue`.
        unsafe {
            if let Some(id) = cbs.monitor {
                (lib.virConnectDomainQemuMonitorEventDeregister)(conn, id);
            }
            if let Some(id) = cbs.lifecycle {
                (lib.virConnectDomainEventDeregisterAny)(conn, id);
            }
            if cbs.close {
                (lib.virConnectUnregisterCloseCallback)(conn, on_close);
            }
        }
        let _ = lib.take_error();
        drop(h);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Release a reference made by [`queue_ref`].
unsafe extern "C" fn free_queue(opaque: *mut c_void) {
    if !opaque.is_null() {
        // SAFETY: `opaque` came from `queue_ref` and is released once.
        drop(unsafe { Arc::from_raw(opaque.cast_const().cast::<Queue>()) });
    }
}

/// The queue behind a callback's opaque pointer.
///
/// # Safety
/// `opaque` must be null or a reference made by [`queue_ref`] that libvirt
/// has not released yet (it holds it until it calls `free_queue`).
unsafe fn queue_of<'a>(opaque: *mut c_void) -> Option<&'a Queue> {
    // SAFETY: per the contract.
    unsafe { opaque.cast_const().cast::<Queue>().as_ref() }
}

unsafe extern "C" fn on_close(_conn: virConnectPtr, _reason: c_int, opaque: *mut c_void) {
    // Nothing here panics; the guard is for the future.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the opaque pointer registered with this callback.
        if let Some(q) = unsafe { queue_of(opaque) } {
            q.end();
        }
    }));
}

unsafe extern "C" fn on_lifecycle(
    _conn: virConnectPtr,
    _dom: virDomainPtr,
    event: c_int,
    _detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if event == ffi::VIR_DOMAIN_EVENT_STOPPED {
            // SAFETY: the opaque pointer registered with this callback.
            if let Some(q) = unsafe { queue_of(opaque) } {
                q.end();
            }
        }
    }));
    0
}

unsafe extern "C" fn on_monitor_event(
    _conn: virConnectPtr,
    _dom: virDomainPtr,
    event: *const c_char,
    seconds: c_longlong,
    micros: c_uint,
    details: *const c_char,
    opaque: *mut c_void,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the opaque pointer registered with this callback.
        let Some(q) = (unsafe { queue_of(opaque) }) else {
            return;
        };
        if event.is_null() {
            return;
        }
        // SAFETY: libvirt passes NUL-terminated strings (details may be
        // null), valid for the duration of the call.
        let (name, details) = unsafe {
            (
                CStr::from_ptr(event).to_string_lossy(),
                (!details.is_null()).then(|| CStr::from_ptr(details).to_bytes()),
            )
        };
        q.push(event_item(&name, seconds, micros, details));
    }));
}

/// A message for the source: a frame, and its text when it is not to be
/// made from the object.
struct Item {
    frame: Result<Object, FrameError>,
    raw: Option<Vec<u8>>,
    /// A `0xFF` delimiter is received first (see `guest-sync-delimited`).
    delimited: bool,
}

impl Item {
    /// A JSON object, its text to be made from it, with no delimiter.
    fn object(obj: Object) -> Item {
        Item {
            frame: Ok(obj),
            raw: None,
            delimited: false,
        }
    }
}

/// What the queue holds.
enum Entry {
    /// A message for the source.
    Item(Item),
    /// A [`Session::sync`] waits for the source to get past this.
    Marker(u64),
}

#[derive(Default)]
struct QueueState {
    entries: VecDeque<Entry>,
    /// The connection or the domain is gone: end once `entries` is empty
    /// and no call is in progress.
    ended: bool,
    /// Closed: end now.
    closed: bool,
    /// Calls in progress, whose replies are still to come.
    calls: usize,
    /// The last marker queued.
    last_marker: u64,
    /// The last marker the source got past.
    passed: u64,
}

/// Replies and events on their way to the source.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

impl Queue {
    fn push(&self, item: Item) {
        let mut s = lock(&self.state);
        if !s.closed {
            s.entries.push_back(Entry::Item(item));
            self.ready.notify_all();
        }
    }

    fn end(&self) {
        lock(&self.state).ended = true;
        self.ready.notify_all();
    }

    fn close(&self) {
        let mut s = lock(&self.state);
        s.closed = true;
        s.entries.clear();
        self.ready.notify_all();
    }

    fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    fn ended(&self) -> bool {
        let s = lock(&self.state);
        s.ended || s.closed
    }

    fn begin_call(&self) {
        lock(&self.state).calls += 1;
    }

    /// A call returned, with its reply if it has one.
    fn end_call(&self, reply: Option<Item>) {
        let mut s = lock(&self.state);
        s.calls = s.calls.saturating_sub(1);
        if let (Some(item), false) = (reply, s.closed) {
            s.entries.push_back(Entry::Item(item));
        }
        self.ready.notify_all();
    }

    /// The next item, waiting for one; `None` at the end. Markers are
    /// passed by: the source comes back for the next item only once it
    /// handled the one before, so everything before a marker is handled.
    fn pop(&self) -> Option<Item> {
        let mut s = lock(&self.state);
        loop {
            if s.closed {
                return None;
            }
            match s.entries.pop_front() {
                Some(Entry::Item(item)) => return Some(item),
                Some(Entry::Marker(n)) => {
                    s.passed = n;
                    self.ready.notify_all();
                    continue;
                }
                None => {}
            }
            if s.ended && s.calls == 0 {
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Queue a marker and wait (at most `timeout`) until the source got
    /// past it, or the queue closed or ran out.
    fn mark_and_wait(&self, timeout: Option<Duration>) -> io::Result<()> {
        let deadline = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
        let mut s = lock(&self.state);
        if s.closed {
            return Ok(());
        }
        s.last_marker += 1;
        let n = s.last_marker;
        s.entries.push_back(Entry::Marker(n));
        self.ready.notify_all();
        loop {
            // Ended, with nothing but markers left: the source has returned
            // (or is about to return) the end, and may not come back.
            let over =
                s.ended && s.calls == 0 && s.entries.iter().all(|e| matches!(e, Entry::Marker(_)));
            if s.passed >= n || s.closed || over {
                return Ok(());
            }
            s = match deadline {
                None => self.ready.wait(s).unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let now = std::time::Instant::now();
                    if now >= d {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "timed out waiting for libvirt's events",
                        ));
                    }
                    self.ready
                        .wait_timeout(s, d - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

struct LibvirtSource {
    session: Arc<Session>,
    /// A frame whose delimiter was just received.
    pending: Option<Item>,
    /// Whether `receive`'s `raw` is used ([`Source::want_raw`]): if not,
    /// the frames made here are not serialised for it.
    raw_wanted: bool,
}

impl Source for LibvirtSource {
    fn want_raw(&mut self, wanted: bool) {
        self.raw_wanted = wanted;
    }

    fn receive(&mut self, raw: &mut dyn FnMut(&[u8])) -> io::Result<Option<Received>> {
        let queue = &self.session.queue;
        Ok(if self.raw_wanted {
            next_received(queue, &mut self.pending, raw)
        } else {
            next_frame(queue, &mut self.pending, None)
        })
    }
}

/// The source's next message from `queue`, a delimiter first for a
/// delimited frame (which then waits in `pending`), its text given to `raw`.
fn next_received(
    queue: &Queue,
    pending: &mut Option<Item>,
    raw: &mut dyn FnMut(&[u8]),
) -> Option<Received> {
    next_frame(queue, pending, Some(raw))
}

/// Where [`Source::receive`] gives the text of a frame.
type RawText<'a> = &'a mut dyn FnMut(&[u8]);

/// [`next_received`], with the text made and given to `raw` only if there
/// is one.
fn next_frame(
    queue: &Queue,
    pending: &mut Option<Item>,
    raw: Option<RawText<'_>>,
) -> Option<Received> {
    let item = match pending.take() {
        Some(item) if !queue.is_closed() => item,
        _ => queue.pop()?,
    };
    if item.delimited {
        *pending = Some(Item {
            delimited: false,
            ..item
        });
        return Some(Received::Delimiter);
    }
    if let Some(raw) = raw {
        match (&item.raw, &item.frame) {
            (Some(text), _) => raw(text),
            (None, Ok(obj)) => raw(&serde_json::to_vec(obj).unwrap_or_default()),
            (None, Err(_)) => {}
        }
    }
    Some(Received::Frame(item.frame))
}

struct LibvirtSink {
    session: Arc<Session>,
}

impl Sink for LibvirtSink {
    fn send(&mut self, msg: &Object, encoded: &[u8], fds: &[RawFd]) -> io::Result<()> {
        let session = &self.session;
        let Some(handles) = session.handles() else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the libvirt session is closed",
            ));
        };
        if !fds.is_empty() && !session.passes_fds() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                if session.agent {
                    "libvirt cannot pass file descriptors to a guest agent"
                } else {
                    NO_FD_PASSING
                },
            ));
        }
        if session.queue.ended() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the domain stopped or the connection to libvirt was lost",
            ));
        }
        let id = msg.get("id");
        let (cmd, delimited) = libvirt_command(msg, encoded, session.agent);
        let Some(cmd) = cmd else {
            session.queue.push(Item::object(generic_error(
                id,
                "the message contains a NUL character",
            )));
            return Ok(());
        };
        session.queue.begin_call();
        let result = if session.agent {
            handles.agent_command(&cmd, ffi::VIR_DOMAIN_QEMU_AGENT_COMMAND_DEFAULT)
        } else {
            handles.monitor_command(&cmd, fds)
        };
        match result {
            Ok(text) => {
                let mut reply = reply_item(&text, id);
                reply.delimited = delimited;
                session.queue.end_call(Some(reply));
                Ok(())
            }
            Err(e) if !session.agent && is_quit(msg) && quit_went_through(&e, &handles) => {
                // QEMU answers `quit` with {"return": {}} and exits at once;
                // libvirt often loses that answer as the monitor closes
                // under it, and reports the closing instead.
                session.queue.end_call(Some(Item::object(empty_return(id))));
                Ok(())
            }
            Err(e) if !handles.alive() => {
                session.queue.end();
                session.queue.end_call(None);
                Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    format!("libvirt: {}", e.message),
                ))
            }
            Err(e) => {
                session
                    .queue
                    .end_call(Some(Item::object(generic_error(id, &e.message))));
                Ok(())
            }
        }
    }

    fn send_raw(&mut self, _bytes: &[u8]) -> io::Result<()> {
        // libvirt carries messages, not bytes (and resynchronises with the
        // guest agent itself before every command).
        Ok(())
    }
}

/// The command's name.
fn execute_name(msg: &Object) -> Option<&str> {
    msg.get("execute").and_then(Value::as_str)
}

/// Whether `msg` is QEMU's `quit`.
fn is_quit(msg: &Object) -> bool {
    execute_name(msg) == Some("quit")
}

/// After `quit` failed: whether it failed because QEMU quit (the monitor
/// closed, or the domain is gone), not for a reason of libvirt's own (say,
/// a job lock that timed out, where the domain is still up).
fn quit_went_through(e: &VirErr, handles: &Handles) -> bool {
    matches!(
        e.code,
        code::VIR_ERR_OPERATION_FAILED
            | code::VIR_ERR_SYSTEM_ERROR
            | code::VIR_ERR_OPERATION_INVALID
    ) || !handles.alive()
}

/// The command to give libvirt for `msg` (`None` if it cannot be a C
/// string), and whether its reply is to be preceded by a delimiter.
///
/// libvirt synchronises with a guest agent itself, before every command,
/// and would choke on the 0xFF that `guest-sync-delimited` makes the agent
/// send first: that command goes as `guest-sync`, and the source reports a
/// delimiter before its reply, as the agent would have sent them.
///
/// Everything else goes as it is, `human-monitor-command` included: as
/// QMP, not with libvirt's HMP flag (`VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP`).
/// QEMU's own reply then comes back unchanged, `{"return": TEXT}` or QEMU's
/// error with its class (a bad `cpu-index`, say), byte for byte what a
/// direct socket gets; with the flag libvirt builds the command itself and
/// hands back bare text, or an error of its own instead of QEMU's.
fn libvirt_command(msg: &Object, encoded: &[u8], agent: bool) -> (Option<CString>, bool) {
    if agent && execute_name(msg) == Some("guest-sync-delimited") {
        let mut m = msg.clone();
        m.insert("execute".to_owned(), Value::from("guest-sync"));
        (command_text(&m, &[]), true)
    } else {
        (command_text(msg, encoded), false)
    }
}

/// The command text for libvirt: the message without its `"id"` (libvirt
/// adds its own and refuses a command that has one), as a C string; made
/// from `msg` unless `encoded` (its JSON text) can be used as it is.
/// `None` if it contains a NUL character (JSON text cannot, unescaped).
fn command_text(msg: &Object, encoded: &[u8]) -> Option<CString> {
    let bytes = if msg.contains_key("id") || encoded.is_empty() {
        serde_json::to_vec(&WithoutId(msg)).ok()?
    } else {
        encoded.trim_ascii_end().to_vec()
    };
    CString::new(bytes).ok()
}

/// A message serialised without its `"id"`, the other members in their
/// order: the same text as the message with the id removed.
struct WithoutId<'a>(&'a Object);

impl serde::Serialize for WithoutId<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().filter(|(k, _)| k.as_str() != "id"))
    }
}

/// Parse a reply's text as the decoder parses a socket's frames.
fn parse_frame(text: &[u8]) -> Result<Object, FrameError> {
    let mut decoder = Decoder::new(usize::MAX);
    decoder.feed(text);
    decoder.next_message().unwrap_or_else(|| {
        let text = String::from_utf8_lossy(text);
        Err(FrameError::NotJson {
            reason: if text.trim().is_empty() {
                "empty reply"
            } else {
                "incomplete JSON"
            }
            .to_owned(),
            text: crate::framing::truncate(&text, 80),
        })
    })
}

/// The reply from libvirt with the message's id restored.
fn reply_item(text: &[u8], id: Option<&Value>) -> Item {
    match parse_frame(text) {
        Ok(mut obj) => {
            restore_id(&mut obj, id);
            Item::object(obj)
        }
        Err(e) => Item {
            frame: Err(e),
            raw: Some(text.to_vec()),
            delimited: false,
        },
    }
}

/// Put the message's `id` (or none) on libvirt's reply. libvirt's own id
/// is replaced in place, so QEMU's key order is kept; when the reply has
/// none, the id goes where QEMU puts it: first in an error reply, last
/// otherwise.
fn restore_id(obj: &mut Object, id: Option<&Value>) {
    match id {
        None => {
            obj.shift_remove("id");
        }
        Some(id) => {
            if let Some(slot) = obj.get_mut("id") {
                *slot = id.clone();
            } else if obj.contains_key("error") {
                obj.shift_insert(0, "id".to_owned(), id.clone());
            } else {
                obj.insert("id".to_owned(), id.clone());
            }
        }
    }
}

/// An event as QEMU sends it, from what libvirt passes on: the name, the
/// timestamp and the `data` member's JSON text (absent when QEMU sent none).
fn event_item(name: &str, seconds: c_longlong, micros: c_uint, details: Option<&[u8]>) -> Item {
    let mut timestamp = Object::new();
    timestamp.insert("seconds".to_owned(), Value::from(seconds));
    timestamp.insert("microseconds".to_owned(), Value::from(micros));
    let mut obj = Object::new();
    obj.insert("timestamp".to_owned(), Value::Object(timestamp));
    obj.insert("event".to_owned(), Value::from(name));
    if let Some(details) = details.filter(|d| !d.trim_ascii().is_empty()) {
        // `data` is always an object in QMP; parsed as a socket's frames are
        // (no recursion, bounded depth).
        match parse_frame(details) {
            Ok(data) => {
                obj.insert("data".to_owned(), Value::Object(data));
            }
            Err(e) => {
                return Item {
                    frame: Err(e),
                    raw: Some(details.to_vec()),
                    delimited: false,
                }
            }
        }
    }
    Item::object(obj)
}

/// The greeting QEMU would have sent, from libvirt's `query-version` reply.
fn greeting_from(text: &[u8]) -> Result<Greeting, String> {
    let reply = parse_frame(text).map_err(|e| format!("query-version: {e}"))?;
    let Some(Value::Object(version)) = reply.get("return") else {
        return Err(format!(
            "query-version: unexpected reply: {}",
            crate::framing::truncate(&String::from_utf8_lossy(text), 80)
        ));
    };
    let mut qmp = Object::new();
    qmp.insert("version".to_owned(), Value::Object(version.clone()));
    qmp.insert("capabilities".to_owned(), Value::Array(Vec::new()));
    let mut body = Object::new();
    body.insert("QMP".to_owned(), Value::Object(qmp));
    Ok(Greeting { body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(text: &str) -> Object {
        serde_json::from_str(text).unwrap()
    }

    fn json(item: &Item) -> String {
        match &item.frame {
            Ok(o) => serde_json::to_string(o).unwrap(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn ids_are_restored_in_qemus_places() {
        let id = Value::from("x");
        let r = reply_item(br#"{"return":{"a":1},"id":"libvirt-7"}"#, Some(&id));
        assert_eq!(json(&r), r#"{"return":{"a":1},"id":"x"}"#);
        let r = reply_item(
            br#"{"id":"libvirt-7","error":{"class":"C","desc":"d"}}"#,
            Some(&Value::from(3)),
        );
        assert_eq!(json(&r), r#"{"id":3,"error":{"class":"C","desc":"d"}}"#);
        let r = reply_item(br#"{"return":{},"id":"libvirt-7"}"#, None);
        assert_eq!(json(&r), r#"{"return":{}}"#);
        // No id from libvirt (no "execute" in the command): QEMU's places.
        let r = reply_item(br#"{"error":{"class":"C","desc":"d"}}"#, Some(&id));
        assert_eq!(json(&r), r#"{"id":"x","error":{"class":"C","desc":"d"}}"#);
        let r = reply_item(br#"{"return":{}}"#, Some(&id));
        assert_eq!(json(&r), r#"{"return":{},"id":"x"}"#);
    }

    #[test]
    fn bad_replies_are_frame_errors_with_their_text() {
        let r = reply_item(b"{\"return\": ", None);
        assert!(
            matches!(r.frame, Err(FrameError::NotJson { .. })),
            "{}",
            json(&r)
        );
        assert_eq!(r.raw.as_deref(), Some(&b"{\"return\": "[..]));
        let r = reply_item(b"[1]", None);
        assert!(matches!(r.frame, Err(FrameError::NotAnObject { .. })));
        let r = reply_item(b"", None);
        assert!(r.frame.is_err());
        let r = reply_item(b"{\"a\": \"\xff\"}", None);
        assert_eq!(r.frame, Err(FrameError::InvalidUtf8));
        let deep = "[".repeat(100_000);
        let r = reply_item(deep.as_bytes(), None);
        assert!(r.frame.is_err());
    }

    #[test]
    fn error_replies_look_like_qemus() {
        let e = generic_error(Some(&Value::from(1)), "boom");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"id":1,"error":{"class":"GenericError","desc":"boom"}}"#
        );
        let e = generic_error(None, "boom");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"error":{"class":"GenericError","desc":"boom"}}"#
        );
    }

    #[test]
    fn events_are_rebuilt_like_qemus() {
        let e = event_item("STOP", 1700000000, 12, None);
        assert_eq!(
            json(&e),
            r#"{"timestamp":{"seconds":1700000000,"microseconds":12},"event":"STOP"}"#
        );
        let e = event_item(
            "SHUTDOWN",
            5,
            6,
            Some(br#"{"guest":false,"reason":"host-qmp-quit"}"#),
        );
        assert_eq!(
            json(&e),
            r#"{"timestamp":{"seconds":5,"microseconds":6},"event":"SHUTDOWN","data":{"guest":false,"reason":"host-qmp-quit"}}"#
        );
        let e = event_item("X", -1, 0, Some(b"{oops"));
        assert!(e.frame.is_err());
    }

    #[test]
    fn the_message_goes_without_its_id() {
        let m = obj(r#"{"execute":"query-status","id":"a"}"#);
        let c = command_text(&m, &crate::encode(&m)).unwrap();
        assert_eq!(c.to_str().unwrap(), r#"{"execute":"query-status"}"#);
        let m = obj(r#"{"execute":"query-status"}"#);
        let c = command_text(&m, &crate::encode(&m)).unwrap();
        assert_eq!(c.to_str().unwrap(), r#"{"execute":"query-status"}"#);
        let m = obj(r#"{"execute":"a\u0000b","id":1}"#);
        let c = command_text(&m, &crate::encode(&m)).unwrap();
        assert_eq!(c.to_str().unwrap(), r#"{"execute":"a\u0000b"}"#);
    }

    #[test]
    fn the_text_without_the_id_is_the_text_of_the_message_without_it() {
        for text in [
            r#"{"execute":"query-status","id":"a"}"#,
            r#"{"id":1,"execute":"x","arguments":{"id":2,"b":[1.50,{"id":3}]}}"#,
            r#"{"execute":"x","arguments":{"z":1,"a":2},"id":{"n":18446744073709551616}}"#,
            r#"{"id":null}"#,
            r#"{"execute":"a\u0000b\u00e9\"\\\n","id":1,"control":{"run-oob":true}}"#,
            r#"{"execute":"query-status"}"#,
            r#"{}"#,
        ] {
            let m = obj(text);
            let mut old = m.clone();
            old.shift_remove("id");
            assert_eq!(
                serde_json::to_vec(&WithoutId(&m)).unwrap(),
                serde_json::to_vec(&old).unwrap(),
                "{text}"
            );
        }
    }

    #[test]
    fn greeting_is_made_from_query_version() {
        let g = greeting_from(
            br#"{"return":{"qemu":{"micro":22,"minor":2,"major":7},"package":"Debian"},"id":"libvirt-1"}"#,
        )
        .unwrap();
        assert_eq!(g.version(), Some((7, 2, 22)));
        assert_eq!(
            serde_json::to_string(&g.body).unwrap(),
            r#"{"QMP":{"version":{"qemu":{"micro":22,"minor":2,"major":7},"package":"Debian"},"capabilities":[]}}"#
        );
        assert!(greeting_from(br#"{"error":{}}"#).is_err());
    }

    #[test]
    fn uuids_are_recognised() {
        assert!(uuid_like("737ba781-329d-41bb-8446-15ef507b3a17"));
        assert!(uuid_like("737ba781329d41bb844615ef507b3a17"));
        assert!(!uuid_like("vm1"));
        assert!(!uuid_like("737ba781-329d-41bb-8446-15ef507b3a1"));
    }

    #[test]
    fn the_queue_ends_after_pending_replies() {
        let q = Queue::default();
        q.begin_call();
        q.end();
        let item = Item {
            frame: Ok(obj(r#"{"return":{}}"#)),
            raw: None,
            delimited: false,
        };
        q.end_call(Some(item));
        assert!(q.pop().is_some());
        assert!(q.pop().is_none());
        let q = Queue::default();
        q.push(Item {
            frame: Ok(Object::new()),
            raw: None,
            delimited: false,
        });
        q.close();
        assert!(q.pop().is_none());
    }

    #[test]
    fn a_marker_is_passed_once_what_is_before_it_was_taken() {
        let q = Arc::new(Queue::default());
        q.push(Item {
            frame: Ok(obj(r#"{"event":"STOP"}"#)),
            raw: None,
            delimited: false,
        });
        let reader = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                let first = q.pop().map(|i| json(&i));
                // The marker is passed on the way to the next item.
                let second = q.pop().map(|i| json(&i));
                (first, second)
            })
        };
        q.mark_and_wait(Some(Duration::from_secs(20)))
            .expect("the reader gets past the marker");
        q.push(Item {
            frame: Ok(obj(r#"{"return":{}}"#)),
            raw: None,
            delimited: false,
        });
        let (first, second) = reader.join().expect("reader");
        assert_eq!(first.as_deref(), Some(r#"{"event":"STOP"}"#));
        assert_eq!(second.as_deref(), Some(r#"{"return":{}}"#));

        // Nobody reads: the wait is bounded; a closed queue ends it at once.
        let q = Queue::default();
        let e = q
            .mark_and_wait(Some(Duration::from_millis(10)))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        q.close();
        q.mark_and_wait(None).expect("closed: nothing to wait for");
        // An ended queue with nothing left: nothing to wait for either.
        let q = Queue::default();
        q.end();
        q.mark_and_wait(None).expect("ended");
    }

    #[test]
    fn guest_sync_delimited_goes_as_guest_sync_and_gets_a_delimiter() {
        let m = obj(r#"{"execute":"guest-sync-delimited","arguments":{"id":123},"id":"s"}"#);
        let (cmd, delimited) = libvirt_command(&m, &crate::encode(&m), true);
        assert!(delimited);
        assert_eq!(
            cmd.unwrap().to_str().unwrap(),
            r#"{"execute":"guest-sync","arguments":{"id":123}}"#
        );
        // On the monitor it is just an unknown command, sent as it is.
        let (cmd, delimited) = libvirt_command(&m, &crate::encode(&m), false);
        assert!(!delimited);
        assert_eq!(
            cmd.unwrap().to_str().unwrap(),
            r#"{"execute":"guest-sync-delimited","arguments":{"id":123}}"#
        );

        let q = Queue::default();
        let mut reply = reply_item(br#"{"return":123}"#, Some(&Value::from("s")));
        reply.delimited = true;
        q.push(reply);
        q.end();
        let mut pending = None;
        let mut raws = Vec::new();
        let mut raw = |b: &[u8]| raws.push(String::from_utf8_lossy(b).into_owned());
        assert_eq!(
            next_received(&q, &mut pending, &mut raw),
            Some(Received::Delimiter)
        );
        assert_eq!(
            next_received(&q, &mut pending, &mut raw),
            Some(Received::Frame(Ok(obj(r#"{"return":123,"id":"s"}"#))))
        );
        assert_eq!(next_received(&q, &mut pending, &mut raw), None);
        assert_eq!(raws, [r#"{"return":123,"id":"s"}"#]);
    }

    #[test]
    fn taint_notices() {
        assert_eq!(
            taint_notice("vm1", false),
            "note: libvirt marks domain vm1 as tainted (custom-monitor) when its monitor is used directly"
        );
        assert!(taint_notice("vm1", true).contains("custom-ga-command"));
    }
}
