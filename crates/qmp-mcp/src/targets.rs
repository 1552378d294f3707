//! The targets the server serves, and their connections.
//!
//! Each target connects on first use, through `qmp-shell`'s own connection
//! code ([`qmp_shell::connect`]); connecting, like every call to a
//! [`Client`], blocks, and so runs on tokio's blocking pool, never on the
//! runtime's thread. A target that cannot be reached, or whose VM went
//! away, is reported by the tools that use it, and the next use tries to
//! connect again; the other targets are served meanwhile.
//!
//! With `--all-domains`, the running domains of each URI are listed when
//! first needed, again whenever the `targets` tool runs, and when a tool
//! names a target not known yet; domains that appear are added (a domain
//! that stops stays listed, and is reported as unreachable).
//!
//! Each connection keeps the events QEMU sent (the last [`MAX_EVENTS`]),
//! for `wait_event`: an event counts from the start of the last `execute`
//! or `hmp` call on that target, so that `execute stop` then
//! `wait_event STOP` finds the STOP that came with the reply.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qmp_client::{Client, Event, EventTap, Tapped};
use qmp_shell::cli::{Common, TargetArgs};
use qmp_shell::connect::{self, Retry, Target};
use qmp_shell::store::SchemaStore;
use tokio::sync::Notify;

/// Events kept per connection for `wait_event`.
pub const MAX_EVENTS: usize = 1000;

/// How the targets are reached.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `-N`: the targets are guest agents.
    pub guest_agent: bool,
    /// How long a reply (and a greeting) is waited for.
    pub timeout: Duration,
}

/// Every target, and the libvirt URIs whose running domains are targets
/// too (`--all-domains`).
pub struct Pool {
    settings: Settings,
    state: Mutex<PoolState>,
    /// `--all-domains`: the URIs to list, and how many there are (labels
    /// say the URI when there are several).
    scans: Vec<Option<String>>,
}

#[derive(Default)]
struct PoolState {
    slots: Vec<Arc<Slot>>,
    /// The last listing of each scanned URI failed: why (by URI index).
    scan_errors: Vec<Option<String>>,
    scanned: bool,
}

/// One target.
pub struct Slot {
    /// Its name for the tools: the address as given, the domain's name (as
    /// given, or as listed), or `URI/NAME` with several URIs.
    pub label: String,
    /// What to connect to.
    pub target: Target,
    conn: tokio::sync::Mutex<Conn>,
    /// The taint note was printed.
    noted: std::sync::atomic::AtomicBool,
}

/// A target's connection state.
enum Conn {
    /// Not connected: never tried, or the last attempt failed.
    Idle,
    /// Connected (the client may have been disconnected since).
    Up(Arc<Live>),
}

/// A live connection to a target.
pub struct Live {
    /// The client.
    pub client: Arc<Client>,
    /// The server's schema and the facts derived from it, fetched when
    /// first needed.
    pub store: SchemaStore,
    /// QEMU's version, from the greeting (`7.2.0`, with the package in
    /// parentheses when there is one).
    pub version: Option<String>,
    /// Events for `wait_event`.
    pub events: Arc<Events>,
    _tap: EventTap,
}

/// What a tool gets from [`Pool::live`]: the connection, and a note when it
/// had to be made again.
pub struct Use {
    /// The connection.
    pub live: Arc<Live>,
    /// Set when the connection was lost and made again for this use.
    pub note: Option<String>,
}

impl Pool {
    /// The targets of `args`. Addresses that do not parse are the error.
    pub fn new(args: &TargetArgs, settings: Settings) -> Result<Pool, String> {
        let mut slots = Vec::new();
        let mut scans = Vec::new();
        if args.all_domains {
            scans = connect::uris(&args.connect);
        } else if !args.domain.is_empty() {
            let uris = connect::uris(&args.connect);
            for uri in &uris {
                for name in &args.domain {
                    slots.push(Arc::new(Slot::new(
                        connect::domain_label(uri.as_deref(), name, uris.len()),
                        Target::Domain {
                            domain: name.clone(),
                            uri: uri.clone(),
                        },
                    )));
                }
            }
        } else {
            for text in &args.qmp_servers {
                slots.push(Arc::new(Slot::new(
                    text.clone(),
                    connect::address_target(text)?,
                )));
            }
        }
        let scan_errors = vec![None; scans.len()];
        Ok(Pool {
            settings,
            state: Mutex::new(PoolState {
                slots,
                scan_errors,
                scanned: false,
            }),
            scans,
        })
    }

    /// How the targets are reached.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The targets known now.
    pub fn slots(&self) -> Vec<Arc<Slot>> {
        self.lock().slots.clone()
    }

    /// `--all-domains`: why listing each URI failed, if it did.
    pub fn scan_errors(&self) -> Vec<(Option<String>, String)> {
        let st = self.lock();
        self.scans
            .iter()
            .zip(&st.scan_errors)
            .filter_map(|(uri, e)| Some((uri.clone(), e.clone()?)))
            .collect()
    }

    /// `--all-domains`: list the running domains of every URI again and
    /// add those not known yet. Nothing to do without it.
    pub async fn rescan(&self) {
        if self.scans.is_empty() {
            return;
        }
        let scans = self.scans.clone();
        let listed = tokio::task::spawn_blocking(move || {
            scans
                .iter()
                .map(|uri| connect::running_domains(uri.as_deref()))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut st = self.lock();
        st.scanned = true;
        for (i, (uri, result)) in self.scans.iter().zip(listed).enumerate() {
            match result {
                Ok(domains) => {
                    st.scan_errors[i] = None;
                    // Labelled by name, opened by UUID (a name may be
                    // ambiguous: another domain's id, say).
                    for (name, uuid) in domains {
                        let label = connect::domain_label(uri.as_deref(), &name, self.scans.len());
                        if !st.slots.iter().any(|s| s.label == label) {
                            st.slots.push(Arc::new(Slot::new(
                                label,
                                Target::Domain {
                                    domain: uuid,
                                    uri: uri.clone(),
                                },
                            )));
                        }
                    }
                }
                Err(msg) => st.scan_errors[i] = Some(msg),
            }
        }
    }

    /// The target a tool names (`None`: the only one), listing domains
    /// again first when it is not known yet.
    pub async fn resolve(&self, name: Option<&str>) -> Result<Arc<Slot>, String> {
        let scanned = self.lock().scanned;
        if !scanned {
            self.rescan().await;
        }
        if let Ok(slot) = self.find(name) {
            return Ok(slot);
        }
        if scanned && name.is_some() {
            self.rescan().await;
        }
        self.find(name)
    }

    fn find(&self, name: Option<&str>) -> Result<Arc<Slot>, String> {
        let slots = self.slots();
        let labels = || {
            slots
                .iter()
                .map(|s| s.label.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match name {
            Some(name) => slots
                .iter()
                .find(|s| s.label == name)
                .cloned()
                .ok_or_else(|| {
                    if slots.is_empty() {
                        format!("unknown target '{name}': {}", self.none_text())
                    } else {
                        format!("unknown target '{name}'; the targets are: {}", labels())
                    }
                }),
            None => match slots.as_slice() {
                [one] => Ok(Arc::clone(one)),
                [] => Err(self.none_text()),
                _ => Err(format!(
                    "there are {} targets: say which with `target` (one of: {})",
                    slots.len(),
                    labels()
                )),
            },
        }
    }

    /// Why there is no target at all.
    fn none_text(&self) -> String {
        let errors = self.scan_errors();
        if errors.is_empty() {
            "no targets: no running domain was found (--all-domains)".to_owned()
        } else {
            let why: Vec<String> = errors.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>();
            format!("no targets: {}", why.join("; "))
        }
    }

    /// The connection to `slot`: the one it has, or a new one (the first
    /// time, after a failed attempt, or when the last one was lost). The
    /// error says why it cannot be had.
    pub async fn live(&self, slot: &Slot) -> Result<Use, String> {
        let mut conn = slot.conn.lock().await;
        let lost = match &*conn {
            Conn::Up(live) if live.client.is_connected() => {
                return Ok(Use {
                    live: Arc::clone(live),
                    note: None,
                })
            }
            Conn::Up(live) => Some(live.lost_reason()),
            Conn::Idle => None,
        };
        let target = slot.target.clone();
        let common = Common {
            timeout: Some(self.settings.timeout),
            ..Common::default()
        };
        let agent = self.settings.guest_agent;
        let retry = Retry {
            count: 0,
            delay: Duration::ZERO,
        };
        let attempt = tokio::task::spawn_blocking(move || {
            connect::connect(&target, &common, agent, true, retry)
        })
        .await
        .unwrap_or_else(|e| Err(format!("the connection attempt failed: {e}")));
        match attempt {
            Ok(connected) => {
                if let Some(notice) = &connected.notice {
                    if !slot.noted.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        let _ = writeln!(std::io::stderr(), "{notice}");
                    }
                }
                let live = Arc::new(Live::new(connected.client));
                *conn = Conn::Up(Arc::clone(&live));
                let note = lost.map(|why| {
                    format!(
                        "note: the connection to {} was lost ({why}) and made again; \
                         events from before are gone",
                        slot.label
                    )
                });
                Ok(Use { live, note })
            }
            Err(msg) => {
                *conn = Conn::Idle;
                Err(match lost {
                    Some(why) => format!(
                        "target {}: the connection was lost ({why}), and connecting again \
                         failed: {msg}",
                        slot.label
                    ),
                    None => format!("target {}: {msg}", slot.label),
                })
            }
        }
    }

    /// Close every connection (the end of the server).
    pub fn close_all(&self) {
        for slot in self.slots() {
            if let Ok(conn) = slot.conn.try_lock() {
                if let Conn::Up(live) = &*conn {
                    live.client.close();
                }
            }
        }
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("label", &self.label)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Slot {
    fn new(label: String, target: Target) -> Slot {
        Slot {
            label,
            target,
            conn: tokio::sync::Mutex::new(Conn::Idle),
            noted: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// `socket` or `domain`.
    pub fn kind(&self) -> &'static str {
        match self.target {
            Target::Address { .. } => "socket",
            Target::Domain { .. } => "domain",
        }
    }
}

impl Live {
    fn new(client: Client) -> Live {
        let version = client.greeting().and_then(|g| {
            let (major, minor, micro) = g.version()?;
            let package = g
                .body
                .get("QMP")
                .and_then(|q| q.get("version"))
                .and_then(|v| v.get("package"))
                .and_then(serde_json::Value::as_str)
                .map(str::trim)
                .unwrap_or_default();
            Some(if package.is_empty() {
                format!("{major}.{minor}.{micro}")
            } else {
                format!("{major}.{minor}.{micro} ({package})")
            })
        });
        let events = Arc::new(Events::default());
        let tapped = Arc::clone(&events);
        let tap = client.tap_events(move |t| tapped.tapped(t));
        Live {
            client: Arc::new(client),
            store: SchemaStore::new(),
            version,
            events,
            _tap: tap,
        }
    }

    /// Why the connection ended.
    pub fn lost_reason(&self) -> String {
        self.client
            .end_reason()
            .unwrap_or_else(|| "the VM or the connection went away".to_owned())
    }
}

/// The events of one connection, for `wait_event`.
#[derive(Default)]
pub struct Events {
    state: Mutex<EventState>,
    /// Woken on every event and at the end of the connection.
    pub notify: Notify,
}

#[derive(Default)]
struct EventState {
    /// Numbered events, oldest first.
    recent: VecDeque<(u64, Event)>,
    /// The number of the next event.
    next: u64,
    /// Events from this number on count for `wait_event`.
    mark: u64,
    closed: bool,
}

/// What [`Events::take`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// The event.
    Event(Event),
    /// None yet.
    Nothing,
    /// None, and none will come: the connection ended.
    Closed,
}

impl Events {
    fn lock(&self) -> std::sync::MutexGuard<'_, EventState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tapped(&self, tapped: Tapped<'_>) {
        {
            let mut st = self.lock();
            match tapped {
                Tapped::Event(ev) => {
                    let n = st.next;
                    st.next += 1;
                    st.recent.push_back((n, ev.clone()));
                    if st.recent.len() > MAX_EVENTS {
                        st.recent.pop_front();
                    }
                }
                Tapped::Closed => st.closed = true,
            }
        }
        self.notify.notify_waiters();
    }

    /// From now on, only events still to come count (a command is about
    /// to be sent).
    pub fn mark(&self) {
        let mut st = self.lock();
        st.mark = st.next;
    }

    /// The first event that counts and that `accept` accepts; it and those
    /// before it count no more.
    pub fn take(&self, accept: impl Fn(&Event) -> bool) -> Found {
        let mut st = self.lock();
        let mark = st.mark;
        let found = st
            .recent
            .iter()
            .find(|(n, ev)| *n >= mark && accept(ev))
            .map(|(n, ev)| (*n, ev.clone()));
        match found {
            Some((n, ev)) => {
                st.mark = n + 1;
                Found::Event(ev)
            }
            None if st.closed => Found::Closed,
            None => Found::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qmp_client::Object;

    fn event(name: &str) -> Event {
        let mut body = Object::new();
        body.insert("event".into(), name.into());
        Event { body }
    }

    #[test]
    fn events_count_from_the_mark_and_once() {
        let events = Events::default();
        events.tapped(Tapped::Event(&event("A")));
        events.mark();
        assert_eq!(events.take(|_| true), Found::Nothing);
        events.tapped(Tapped::Event(&event("STOP")));
        events.tapped(Tapped::Event(&event("RESUME")));
        let is = |name: &'static str| move |e: &Event| e.name() == Some(name);
        assert_eq!(events.take(is("RESUME")), Found::Event(event("RESUME")));
        // Taken, and the STOP before it passed.
        assert_eq!(events.take(is("STOP")), Found::Nothing);
        events.tapped(Tapped::Closed);
        assert_eq!(events.take(is("STOP")), Found::Closed);
    }

    #[test]
    fn at_most_max_events_are_kept() {
        let events = Events::default();
        for _ in 0..MAX_EVENTS + 5 {
            events.tapped(Tapped::Event(&event("X")));
        }
        assert_eq!(events.lock().recent.len(), MAX_EVENTS);
        assert_eq!(events.lock().recent[0].0, 5);
    }

    #[test]
    fn pool_of_addresses_and_domains() {
        let settings = Settings {
            guest_agent: false,
            timeout: Duration::from_secs(1),
        };
        let args = TargetArgs {
            qmp_servers: vec!["/a.sock".into(), "h:4444".into()],
            ..TargetArgs::default()
        };
        let pool = Pool::new(&args, settings.clone()).unwrap();
        let labels: Vec<String> = pool.slots().iter().map(|s| s.label.clone()).collect();
        assert_eq!(labels, ["/a.sock", "h:4444"]);
        assert!(pool.find(None).unwrap_err().contains("/a.sock, h:4444"));
        assert_eq!(pool.find(Some("h:4444")).unwrap().kind(), "socket");
        assert!(pool
            .find(Some("nope"))
            .unwrap_err()
            .starts_with("unknown target 'nope'"));
        let args = TargetArgs {
            domain: vec!["vm1".into()],
            connect: vec!["qemu:///system".into(), "qemu+ssh://h/system".into()],
            ..TargetArgs::default()
        };
        let pool = Pool::new(&args, settings).unwrap();
        let labels: Vec<String> = pool.slots().iter().map(|s| s.label.clone()).collect();
        assert_eq!(labels, ["qemu:///system/vm1", "qemu+ssh://h/system/vm1"]);
    }
}
