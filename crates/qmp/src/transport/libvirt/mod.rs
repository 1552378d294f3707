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
//!   [`Received::Delimiter`](super::Received::Delimiter) before its reply, as
//!   the agent would.
//! * libvirt already negotiated capabilities with QEMU: the handshake is
//!   [`Handshake::Negotiated`], with a greeting made from `query-version`.
//!
//! # Inside
//!
//! This module opens the session ([`LibvirtTransport::open_with`]); `lookup`
//! finds the URI and the domain (the ambiguity rule is there), `connection`
//! holds libvirt's handles and makes the command calls, `events` registers
//! for QEMU's events and the domain's end and waits for them
//! ([`Transport::syncer`]), `queue` carries replies and events to the
//! source, `session` is the source and the sink, `messages` turns QMP into
//! what libvirt takes and back, `error` says what failed; `ffi` loads
//! libvirt and `event_loop` runs its event loop.

mod connection;
mod error;
mod event_loop;
mod events;
mod ffi;
mod lookup;
mod messages;
mod queue;
mod session;

use std::ffi::{c_int, CString};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self::connection::{Connection, Handles};
use self::error::{classify, is_agent_error, not_running_or};
use self::events::Callbacks;
use self::lookup::{lookup, ResolvedUri};
use self::messages::greeting_from;
use self::queue::Queue;
use self::session::{LibvirtSink, LibvirtSource, Session};
use super::{Closer, Halves, Handshake, Syncer, Transport};
use crate::message::Greeting;

pub use self::error::{DomainMatch, LibvirtError, MatchedBy};
pub use self::lookup::{list_domains, DomainInfo};

/// The URI used when none is given and `$LIBVIRT_DEFAULT_URI` is unset.
pub const DEFAULT_URI: &str = "qemu:///system";

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

/// How long the `guest-ping` at open time may take, in seconds.
const AGENT_PING_TIMEOUT: c_int = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taint_notices() {
        assert_eq!(
            taint_notice("vm1", false),
            "note: libvirt marks domain vm1 as tainted (custom-monitor) when its monitor is used directly"
        );
        assert!(taint_notice("vm1", true).contains("custom-ga-command"));
    }
}
