//! A blocking QMP client over any [`Transport`], with a reader thread and a
//! writer thread.
//!
//! [`Client::submit`] queues a request and returns at once with a
//! [`Pending`]; the writer thread sends requests in order, and the reader
//! thread routes each reply to the request waiting for it (by id) and queues
//! events and warnings ([`Incoming`]). Many requests may be in flight at
//! once (pipelining). When the server enabled out-of-band execution, at most
//! [`OOB_INBAND_WINDOW`] in-band requests are left unanswered at a time, so
//! an `exec-oob` request never waits behind them in a suspended monitor.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::address::Address;
use crate::framing::{encode, truncate, FrameError};
use crate::message::{command, Event, Greeting, Message, Object, Reply};
use crate::plumbing::lock;
use crate::transport::ssh::{SshOptions, SshTransport};
use crate::transport::{
    Closer, Handshake, Received, Sink, Source, StreamTransport, Syncer, Transport,
};

/// How much of an unexpected message goes into warnings and errors.
const TEXT_IN_MESSAGES: usize = 200;

/// In-band requests left unanswered at most when out-of-band execution is
/// on. QEMU stops reading a monitor whose queue holds 8 in-band requests,
/// and would then not see an out-of-band one either.
pub const OOB_INBAND_WINDOW: usize = 7;

/// Events kept at most in the queue of a client (older ones are dropped,
/// with a warning).
pub const MAX_QUEUED_EVENTS: usize = 100_000;

/// Memory that queued events may take at most (estimated with
/// [`approx_heap_size`]), so that a flood of small events cannot exhaust
/// memory before the count bound is reached.
pub const MAX_QUEUED_EVENT_BYTES: usize = 32 << 20;

/// The warning for a reply without an id. Every request a [`Client`] sends
/// carries an id, and QEMU copies it into the reply, so a reply without one
/// answers no request of this session: QEMU 7.2 passes the reply to a
/// command of a client that disconnected before it came on to the next
/// client. Such a reply is dropped with this warning (and the reply).
pub const STRAY_REPLY: &str = "ignoring a reply without an id: it answers no request of this \
     session (QEMU passes on the late reply of a client that disconnected)";

/// How long to wait for a reply to the probe sent when no greeting came, to
/// tell a guest agent (which answers at once) from a busy monitor; less
/// when the greeting's own bound is shorter.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Options for [`Client`] construction.
pub struct ClientOptions {
    /// Expect a greeting first (`false` for qemu-ga, which sends none).
    pub read_greeting: bool,
    /// Send `qmp_capabilities` after the greeting (`false` for qemu-ga).
    pub negotiate: bool,
    /// Enable out-of-band execution when the greeting offers it, as QEMU's
    /// own clients do. Default: on.
    pub oob: bool,
    /// How long to wait for the greeting, and then for the `qmp_capabilities`
    /// reply. `None` waits forever. Default: 10 seconds. Over `ssh://`
    /// ([`Client::connect`]), it bounds ssh's set-up and the greeting
    /// together.
    pub greeting_timeout: Option<Duration>,
    /// Largest message accepted from a socket, in bytes ([`Client::connect`]
    /// only). Default: 256 MiB.
    pub max_message: usize,
    /// Where to log traffic: every message sent (compact JSON, exactly as
    /// sent) and received (raw text, trailing whitespace trimmed), one per
    /// line, flushed after each line. Write errors are ignored.
    pub log: Option<Box<dyn Write + Send>>,
    /// Resynchronise with a guest agent first: send a `0xFF` byte and
    /// `guest-sync-delimited`, and drop everything received before its
    /// reply. A best effort: when the agent refuses, or is not a guest
    /// agent, or does not answer within `greeting_timeout`, a warning is
    /// queued and the session goes on. Default: off.
    pub guest_sync: bool,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            read_greeting: true,
            negotiate: true,
            oob: true,
            greeting_timeout: Some(Duration::from_secs(10)),
            max_message: crate::transport::stream::DEFAULT_MAX_MESSAGE,
            log: None,
            guest_sync: false,
        }
    }
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("read_greeting", &self.read_greeting)
            .field("negotiate", &self.negotiate)
            .field("oob", &self.oob)
            .field("greeting_timeout", &self.greeting_timeout)
            .field("max_message", &self.max_message)
            .field("log", &self.log.as_ref().map(|_| "..."))
            .field("guest_sync", &self.guest_sync)
            .finish()
    }
}

/// Something the reader thread queued besides replies.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// An asynchronous event.
    Event(Event),
    /// The reply to a request that was abandoned with
    /// [`Pending::abandon`]`(true)`.
    LateReply(Reply),
    /// Something unexpected that did not belong to any request: an undecodable
    /// frame, a reply with an unknown id, an unknown kind of message, events
    /// dropped from a full queue.
    Warning(String),
}

/// Errors of [`Client`] operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error, e.g. while connecting.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// No valid greeting: the connection closed first, the wait timed out, or
    /// something else arrived. Displays the reason only.
    #[error("{0}")]
    NoGreeting(String),
    /// `qmp_capabilities` failed. Displays the reason only.
    #[error("{0}")]
    Negotiation(String),
    /// The connection is closed.
    #[error("Disconnected")]
    Disconnected,
    /// No reply arrived within the given time.
    #[error("timed out after {0:?} waiting for a reply")]
    Timeout(Duration),
    /// An undecodable frame arrived where a reply was expected, or similar.
    #[error("{0}")]
    Protocol(String),
    /// The request could not be sent as asked (e.g. file descriptors over a
    /// transport that cannot carry them); the connection is still usable.
    #[error("{0}")]
    Unsupported(String),
}

/// A request to send: a message, and how to send it.
#[derive(Debug)]
pub struct Request {
    msg: Object,
    fds: Vec<OwnedFd>,
    logged: bool,
}

impl Request {
    /// A request for `msg` (a command object; an `"id"` is added when it
    /// has none).
    pub fn new(msg: Object) -> Request {
        Request {
            msg,
            fds: Vec::new(),
            logged: true,
        }
    }

    /// Attach file descriptors (SCM_RIGHTS); they are closed once sent.
    pub fn with_fds(mut self, fds: Vec<OwnedFd>) -> Request {
        self.fds = fds;
        self
    }

    /// Keep this request and its reply out of the traffic log (for requests
    /// the user did not ask for, such as a background schema fetch).
    pub fn unlogged(mut self) -> Request {
        self.logged = false;
        self
    }

    /// The message to send.
    pub fn message(&self) -> &Object {
        &self.msg
    }

    /// Whether this is an out-of-band request (`"exec-oob"`).
    pub fn is_oob(&self) -> bool {
        self.msg.contains_key("exec-oob")
    }
}

/// What happens to the reply of an abandoned request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Late {
    /// Still awaited.
    No,
    /// Discard it.
    Drop,
    /// Queue it as [`Incoming::LateReply`].
    Report,
}

/// A request, from submission until its reply.
#[derive(Debug)]
struct Waiter {
    seq: u64,
    id: Value,
    assigned: bool,
    oob: bool,
    logged: bool,
    written: bool,
    late: Late,
    /// Where the result goes instead of a [`Pending`] ([`Client::submit_with`]).
    reply_to: Option<Callback>,
}

/// A result handler of [`Client::submit_with`].
struct Callback(Box<dyn FnOnce(Result<Reply, Error>) + Send>);

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Callback")
    }
}

/// A message waiting for the writer thread.
#[derive(Debug)]
enum Outgoing {
    Message {
        seq: u64,
        oob: bool,
        logged: bool,
        msg: Object,
        fds: Vec<OwnedFd>,
    },
    Raw(Vec<u8>),
}

#[derive(Debug, Default)]
struct State {
    /// The reader thread is running.
    connected: bool,
    /// Writing failed: nothing more can be sent.
    write_failed: bool,
    /// Why the connection ended, when the transport said.
    end_reason: Option<String>,
    /// The greeting (or why there is none), once the reader saw it.
    greeting: Option<Result<Greeting, String>>,
    awaiting_greeting: bool,
    /// Requests submitted and not yet answered, in submission order.
    waiting: VecDeque<Waiter>,
    /// Results not yet collected, by request sequence number.
    done: HashMap<u64, Result<Reply, Error>>,
    /// Messages not yet written.
    outgoing: VecDeque<Outgoing>,
    /// In-band requests written and not yet answered.
    inband_in_flight: usize,
    /// At most this many in-band requests unanswered (out-of-band on).
    window: Option<usize>,
    /// Queued items, with the size of each event as received.
    incoming: VecDeque<(Incoming, usize)>,
    queued_events: usize,
    queued_event_bytes: usize,
    dropped_events: u64,
    /// While resynchronising with a guest agent: the id of the
    /// `guest-sync-delimited` request; other replies are stale.
    syncing: Option<Value>,
    /// Unanswered requests kept out of the log.
    unlogged: usize,
    /// Results for [`Client::submit_with`] callbacks, to be run once the
    /// lock is released ([`Shared::run_due`]).
    due: Vec<(Callback, Result<Reply, Error>)>,
}

impl State {
    /// Store the result of request `w`: for its [`Pending`], or for its
    /// callback (run later by [`Shared::run_due`]). Abandoned requests'
    /// results are discarded.
    fn complete(&mut self, w: Waiter, result: Result<Reply, Error>) {
        match w.reply_to {
            Some(callback) => self.due.push((callback, result)),
            None if w.late == Late::No => {
                self.done.insert(w.seq, result);
            }
            None => {}
        }
    }

    /// Fail every request still waiting and mark the connection closed.
    fn fail_all(&mut self) {
        self.connected = false;
        self.outgoing.clear();
        for w in std::mem::take(&mut self.waiting) {
            self.complete(w, Err(Error::Disconnected));
        }
        self.inband_in_flight = 0;
        self.unlogged = 0;
    }

    /// Queue `item`; `size` is an event's size as received. Beyond
    /// [`MAX_QUEUED_EVENTS`] events or [`MAX_QUEUED_EVENT_BYTES`] bytes of
    /// them, the oldest events are dropped (and counted).
    fn queue(&mut self, item: Incoming, size: usize) {
        if matches!(item, Incoming::Event(_)) {
            while self.queued_events > 0
                && (self.queued_events >= MAX_QUEUED_EVENTS
                    || self.queued_event_bytes + size > MAX_QUEUED_EVENT_BYTES)
            {
                let Some(at) = self
                    .incoming
                    .iter()
                    .position(|(i, _)| matches!(i, Incoming::Event(_)))
                else {
                    break;
                };
                if let Some((_, old)) = self.incoming.remove(at) {
                    self.queued_events -= 1;
                    self.queued_event_bytes -= old;
                    self.dropped_events += 1;
                }
            }
            self.queued_events += 1;
            self.queued_event_bytes += size;
            self.incoming.push_back((item, size));
        } else {
            self.incoming.push_back((item, 0));
        }
    }

    fn take_incoming(&mut self) -> Option<Incoming> {
        if self.dropped_events > 0 {
            let n = std::mem::take(&mut self.dropped_events);
            return Some(Incoming::Warning(format!(
                "{n} older {} dropped (more than {MAX_QUEUED_EVENTS} events \
                 or {} MiB queued)",
                if n == 1 { "event was" } else { "events were" },
                MAX_QUEUED_EVENT_BYTES >> 20
            )));
        }
        let (item, size) = self.incoming.pop_front()?;
        if matches!(item, Incoming::Event(_)) {
            self.queued_events -= 1;
            self.queued_event_bytes -= size;
        }
        Some(item)
    }

    /// The oldest queued item that is not an event.
    fn take_notice(&mut self) -> Option<Incoming> {
        // Everything queued but events is a notice.
        if self.incoming.len() == self.queued_events {
            return None;
        }
        let at = self
            .incoming
            .iter()
            .position(|(i, _)| !matches!(i, Incoming::Event(_)))?;
        self.incoming.remove(at).map(|(item, _)| item)
    }

    /// Book-keeping when request `w` left `waiting` with its result (a
    /// reply, or an error).
    fn answered(&mut self, w: &Waiter) {
        if w.written && !w.oob {
            self.inband_in_flight = self.inband_in_flight.saturating_sub(1);
        }
        if !w.logged {
            self.unlogged = self.unlogged.saturating_sub(1);
        }
    }

    /// Index in `waiting` of the request a reply with `id` answers: the
    /// oldest written one with that id. A reply without an id answers none
    /// (every request carries one): see [`STRAY_REPLY`].
    fn waiter_for(&self, id: Option<&Value>) -> Option<usize> {
        let id = id?;
        self.waiting
            .iter()
            .position(|w| w.written && same_id(&w.id, id))
    }

    /// Index in `waiting` of the request an undecodable frame takes the
    /// place of: the oldest written one.
    fn oldest_written(&self) -> Option<usize> {
        self.waiting.iter().position(|w| w.written)
    }

    /// Index of the next message the writer may send: the first
    /// out-of-band one, else the oldest if the window allows.
    fn next_sendable(&self) -> Option<usize> {
        if let Some(i) = self
            .outgoing
            .iter()
            .position(|o| matches!(o, Outgoing::Message { oob: true, .. }))
        {
            return Some(i);
        }
        match self.outgoing.front()? {
            Outgoing::Raw(_) => Some(0),
            Outgoing::Message { .. } => match self.window {
                Some(w) if self.inband_in_flight >= w => None,
                _ => Some(0),
            },
        }
    }
}

type Notify = Arc<dyn Fn() + Send + Sync>;
type Log = Box<dyn Write + Send>;

struct Shared {
    state: Mutex<State>,
    /// Signalled when a result is stored, the greeting arrives or the
    /// connection drops.
    replies: Condvar,
    /// Signalled when something is queued in `incoming` or the connection drops.
    incoming: Condvar,
    /// Signalled when there is something for the writer thread to do.
    writer: Condvar,
    notify: Mutex<Option<Notify>>,
    log: Mutex<Option<Log>>,
    closer: Closer,
    /// Event taps ([`Client::tap_events`]), by id.
    taps: Mutex<Vec<(u64, Arc<TapEntry>)>>,
    next_tap: AtomicU64,
}

/// A registered event tap.
struct TapEntry {
    f: Box<dyn Fn(Tapped<'_>) + Send + Sync>,
    /// [`Tapped::Closed`] was delivered (it is delivered once).
    closed: std::sync::atomic::AtomicBool,
}

impl TapEntry {
    fn closed(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            (self.f)(Tapped::Closed);
        }
    }
}

/// What an event tap ([`Client::tap_events`]) is shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tapped<'a> {
    /// An event, as it arrived (it is queued for
    /// [`Client::drain_incoming`] as usual).
    Event(&'a Event),
    /// The connection ended; nothing follows.
    Closed,
}

/// A registered event tap; dropping it removes the tap.
pub struct EventTap {
    shared: std::sync::Weak<Shared>,
    id: u64,
}

impl std::fmt::Debug for EventTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventTap").field("id", &self.id).finish()
    }
}

impl Drop for EventTap {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            lock(&shared.taps).retain(|(id, _)| *id != self.id);
        }
    }
}

impl Shared {
    fn log_line(&self, bytes: &[u8]) {
        let mut log = lock(&self.log);
        if let Some(w) = log.as_mut() {
            let _ = w.write_all(bytes);
            let _ = w.write_all(b"\n");
            let _ = w.flush();
        }
    }

    fn has_log(&self) -> bool {
        lock(&self.log).is_some()
    }

    fn notify(&self) {
        let f = lock(&self.notify).clone();
        if let Some(f) = f {
            f();
        }
    }

    /// Run the [`Client::submit_with`] callbacks whose results are in,
    /// outside the lock, in the order the results came.
    fn run_due(&self) {
        let due = {
            let mut st = lock(&self.state);
            if st.due.is_empty() {
                return;
            }
            std::mem::take(&mut st.due)
        };
        for (callback, result) in due {
            (callback.0)(result);
        }
    }

    /// The registered taps, to be called without holding a lock.
    fn taps(&self) -> Vec<Arc<TapEntry>> {
        lock(&self.taps)
            .iter()
            .map(|(_, t)| Arc::clone(t))
            .collect()
    }

    /// Mark the connection closed and fail every outstanding request.
    fn disconnect(&self, reason: Option<String>) {
        {
            let mut st = lock(&self.state);
            if !st.connected && st.waiting.is_empty() && st.greeting.is_some() {
                return;
            }
            if st.end_reason.is_none() {
                st.end_reason = reason;
            }
            st.fail_all();
            if st.awaiting_greeting && st.greeting.is_none() {
                let why = st
                    .end_reason
                    .clone()
                    .unwrap_or_else(|| "connection closed before the greeting".to_owned());
                st.greeting = Some(Err(why));
            }
        }
        self.replies.notify_all();
        self.incoming.notify_all();
        self.writer.notify_all();
        self.notify();
        self.run_due();
        for tap in self.taps() {
            tap.closed();
        }
    }

    /// Writing failed (the peer closed, say). Requests not written fail at
    /// once; those written still get the replies the reader finds before
    /// the end of the stream, which fails the rest.
    fn write_failed(&self) {
        {
            let mut st = lock(&self.state);
            st.write_failed = true;
            st.outgoing.clear();
            let waiting = std::mem::take(&mut st.waiting);
            for w in waiting {
                if w.written {
                    st.waiting.push_back(w);
                    continue;
                }
                st.answered(&w);
                st.complete(w, Err(Error::Disconnected));
            }
        }
        self.replies.notify_all();
        self.notify();
        self.run_due();
    }

    fn queue(&self, item: Incoming, size: usize) {
        lock(&self.state).queue(item, size);
        self.incoming.notify_all();
        self.notify();
    }

    /// Route one received frame.
    fn route(&self, frame: Result<Object, FrameError>) {
        let mut st = lock(&self.state);
        if st.awaiting_greeting && st.greeting.is_none() {
            st.greeting = Some(match frame {
                Ok(obj) => match Message::classify(obj) {
                    Message::Greeting(g) => Ok(g),
                    // A server that turns the client away says why (qmp-proxy
                    // with all its clients served, say).
                    Message::Reply(reply) if reply.id().is_none() && reply.is_error() => {
                        Err(format!(
                            "the server refused the session: {}",
                            reply
                                .error_desc()
                                .map(|d| truncate(d, TEXT_IN_MESSAGES))
                                .unwrap_or_else(|| compact(&reply.body))
                        ))
                    }
                    Message::Reply(Reply { body, .. })
                    | Message::Event(Event { body })
                    | Message::Other(body) => {
                        Err(format!("expected a QMP greeting, got: {}", compact(&body)))
                    }
                },
                Err(e) => Err(format!("expected a QMP greeting, got: {e}")),
            });
            drop(st);
            self.replies.notify_all();
            return;
        }
        match frame {
            Ok(obj) => match Message::classify(obj) {
                Message::Reply(reply) => self.route_reply(st, reply),
                Message::Event(ev) => {
                    if st.syncing.is_some() {
                        return;
                    }
                    drop(st);
                    // Sized outside the lock: the tree may be large.
                    let size = approx_heap_size(&ev.body);
                    for tap in self.taps() {
                        (tap.f)(Tapped::Event(&ev));
                    }
                    self.queue(Incoming::Event(ev), size);
                }
                Message::Greeting(g) => {
                    let text = if st.syncing.is_some() {
                        "the server sent a QMP greeting: this is a QMP monitor, not a \
                         guest agent (leave out -N)"
                            .to_owned()
                    } else {
                        format!("ignoring unexpected greeting: {}", compact(&g.body))
                    };
                    drop(st);
                    self.queue(Incoming::Warning(text), 0);
                }
                Message::Other(obj) => {
                    drop(st);
                    self.queue(
                        Incoming::Warning(format!(
                            "ignoring unexpected message: {}",
                            compact(&obj)
                        )),
                        0,
                    );
                }
            },
            Err(e) => {
                if st.syncing.is_some() {
                    // Stale bytes before the agent's reply.
                    return;
                }
                let reason = e.to_string();
                match st.oldest_written() {
                    Some(i) => {
                        let w = st.waiting.remove(i).expect("index from position");
                        st.answered(&w);
                        st.complete(w, Err(Error::Protocol(reason)));
                        drop(st);
                        self.replies.notify_all();
                        self.writer.notify_all();
                        self.notify();
                    }
                    None => {
                        drop(st);
                        self.queue(Incoming::Warning(reason), 0);
                    }
                }
            }
        }
    }

    fn route_reply(&self, mut st: MutexGuard<'_, State>, mut reply: Reply) {
        if let Some(sync_id) = st.syncing.clone() {
            // Resynchronising: only the reply to our guest-sync-delimited counts.
            if reply.id().is_none_or(|id| !same_id(&sync_id, id)) {
                return;
            }
        }
        let index = st.waiter_for(reply.id());
        match index.and_then(|i| st.waiting.remove(i)) {
            Some(w) if w.reply_to.is_some() => {
                st.answered(&w);
                reply.assigned_id = w.assigned;
                st.complete(w, Ok(reply));
                drop(st);
                self.writer.notify_all();
            }
            Some(w) => {
                st.answered(&w);
                match w.late {
                    Late::No => {
                        reply.assigned_id = w.assigned;
                        st.done.insert(w.seq, Ok(reply));
                        drop(st);
                        self.replies.notify_all();
                        self.writer.notify_all();
                        self.notify();
                    }
                    Late::Drop => {
                        drop(st);
                        self.writer.notify_all();
                    }
                    Late::Report => {
                        reply.assigned_id = w.assigned;
                        st.queue(Incoming::LateReply(reply), 0);
                        drop(st);
                        self.incoming.notify_all();
                        self.writer.notify_all();
                        self.notify();
                    }
                }
            }
            None if !st.connected => {}
            None => {
                drop(st);
                let what = match reply.id() {
                    Some(id) => format!("ignoring reply with unknown id {}", compact_value(id)),
                    None => STRAY_REPLY.to_owned(),
                };
                self.queue(
                    Incoming::Warning(format!("{what}: {}", compact(&reply.body))),
                    0,
                );
            }
        }
    }
}

/// An estimate of the heap memory a parsed JSON object takes (maps, their
/// entries and keys, strings, numbers kept as text, arrays), without
/// recursion.
pub fn approx_heap_size(obj: &Object) -> usize {
    // An IndexMap: its table and its entry vector, per entry a hash, a
    // key and a value, plus the allocator's rounding.
    const MAP: usize = 64;
    const ENTRY: usize = 96;
    const VALUE: usize = 32;
    let string = |len: usize| 16 + len.next_multiple_of(16);
    let mut total = MAP + obj.len() * ENTRY;
    let mut stack: Vec<&Value> = Vec::new();
    for (k, v) in obj {
        total += string(k.len());
        stack.push(v);
    }
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                total += MAP + map.len() * ENTRY;
                for (k, v) in map {
                    total += string(k.len());
                    stack.push(v);
                }
            }
            Value::Array(items) => {
                total += 24 + items.len() * VALUE;
                stack.extend(items);
            }
            Value::String(text) => total += string(text.len()),
            // arbitrary_precision keeps numbers as their text.
            Value::Number(n) => total += string(n.as_str().len()),
            Value::Bool(_) | Value::Null => {}
        }
    }
    total
}

/// A number for `guest-sync-delimited`, unlikely to be in stale replies.
fn sync_token() -> i64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    i64::from(std::process::id()) << 20 ^ i64::from(nanos >> 10)
}

/// The request id of the `guest-sync-delimited` carrying `token`.
fn sync_id(token: i64) -> Value {
    Value::String(format!("qmp-sync-{token}"))
}

/// Compare a request id with a reply id. QEMU re-serializes ids, so numbers
/// are also compared by value.
fn same_id(sent: &Value, got: &Value) -> bool {
    if sent == got {
        return true;
    }
    match (sent, got) {
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
        _ => false,
    }
}

fn compact(obj: &Object) -> String {
    truncate(
        &serde_json::to_string(obj).unwrap_or_default(),
        TEXT_IN_MESSAGES,
    )
}

fn compact_value(v: &Value) -> String {
    truncate(
        &serde_json::to_string(v).unwrap_or_default(),
        TEXT_IN_MESSAGES,
    )
}

/// A connected QMP client. `Send + Sync`: share it with `Arc`.
pub struct Client {
    shared: Arc<Shared>,
    syncer: Option<Syncer>,
    greeting: Option<Greeting>,
    oob: bool,
    passes_fds: bool,
    next_id: AtomicU64,
    next_seq: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("greeting", &self.greeting)
            .field("connected", &self.is_connected())
            .field("oob", &self.oob)
            .finish_non_exhaustive()
    }
}

/// A request that was submitted and whose reply has not been collected yet.
///
/// Dropping it without waiting is fine: its reply is discarded on arrival.
pub struct Pending {
    /// `None` for a [`Pending::resolved`] one.
    shared: Option<Arc<Shared>>,
    seq: u64,
    id: Value,
    finished: bool,
    ready: Option<Result<Reply, Error>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("seq", &self.seq)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// A request answered already, with `result`: for output that must keep
    /// its place among real replies.
    pub fn resolved(result: Result<Reply, Error>) -> Pending {
        Pending {
            shared: None,
            seq: 0,
            id: Value::Null,
            finished: false,
            ready: Some(result),
        }
    }

    /// The id used to route the reply (the caller's, or the one assigned).
    pub fn id(&self) -> &Value {
        &self.id
    }

    /// The result if it has arrived; `None` while the reply is awaited (or
    /// once the result was taken).
    pub fn try_take(&mut self) -> Option<Result<Reply, Error>> {
        if self.finished {
            return None;
        }
        let result = match &self.shared {
            None => self.ready.take(),
            Some(shared) => lock(&shared.state).done.remove(&self.seq),
        };
        if result.is_some() {
            self.finished = true;
        }
        result
    }

    /// Wait for the reply, up to `timeout` (`None`: forever, or until the
    /// connection drops). On [`Error::Timeout`] the request is abandoned and a
    /// late reply is discarded.
    pub fn wait(mut self, timeout: Option<Duration>) -> Result<Reply, Error> {
        let Some(shared) = self.shared.clone() else {
            self.finished = true;
            return self.ready.take().unwrap_or(Err(Error::Disconnected));
        };
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut st = lock(&shared.state);
        loop {
            if let Some(result) = st.done.remove(&self.seq) {
                self.finished = true;
                return result;
            }
            if !st.connected && !st.waiting.iter().any(|w| w.seq == self.seq) {
                // Should not happen (disconnect stores a result), but never hang.
                self.finished = true;
                return Err(Error::Disconnected);
            }
            match deadline {
                None => {
                    st = shared.replies.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        drop(st);
                        // Drop marks the request abandoned.
                        return Err(Error::Timeout(timeout.unwrap_or_default()));
                    }
                    st = shared
                        .replies
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    /// Stop waiting. With `report`, the reply is queued as
    /// [`Incoming::LateReply`] when it comes; otherwise it is discarded.
    /// A result that already arrived is reported (or discarded) at once.
    pub fn abandon(mut self, report: bool) {
        self.finished = true;
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let mut st = lock(&shared.state);
        if let Some(result) = st.done.remove(&self.seq) {
            if let (Ok(reply), true) = (result, report) {
                st.queue(Incoming::LateReply(reply), 0);
                drop(st);
                shared.incoming.notify_all();
                shared.notify();
            }
            return;
        }
        if let Some(w) = st.waiting.iter_mut().find(|w| w.seq == self.seq) {
            w.late = if report { Late::Report } else { Late::Drop };
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Some(shared) = &self.shared else {
            return;
        };
        let mut st = lock(&shared.state);
        if let Some(w) = st.waiting.iter_mut().find(|w| w.seq == self.seq) {
            w.late = Late::Drop;
        }
        st.done.remove(&self.seq);
    }
}

/// The server did not take the connection within `opts.greeting_timeout`.
fn not_accepted(opts: &ClientOptions) -> Error {
    Error::NoGreeting(format!(
        "timed out after {} s waiting for the server to accept the connection \
         (it takes no more: it may be hung)",
        opts.greeting_timeout.unwrap_or_default().as_secs_f64()
    ))
}

impl Client {
    /// Connect to `addr`, then read the greeting and negotiate as `opts` says.
    /// With `opts.greeting_timeout`, connecting to a UNIX or TCP socket is
    /// bounded by it as well (it fails with [`Error::NoGreeting`]).
    pub fn connect(addr: &Address, opts: ClientOptions) -> Result<Client, Error> {
        match addr {
            // Bounded like the greeting: a hung server may never take the
            // connection (its queue full), and connect(2) would wait for ever.
            Address::Unix(path) => {
                match crate::transport::stream::connect_unix(path, opts.greeting_timeout)? {
                    Some(s) => Client::from_unix_stream(s, opts),
                    None => Err(not_accepted(&opts)),
                }
            }
            Address::Tcp { host, port } => {
                let host: &str = if host.is_empty() { "localhost" } else { host };
                let stream = match opts.greeting_timeout {
                    Some(t) => crate::transport::stream::connect_tcp(host, *port, t)?,
                    None => Some(TcpStream::connect((host, *port))?),
                };
                match stream {
                    Some(s) => Client::from_tcp_stream(s, opts),
                    None => Err(not_accepted(&opts)),
                }
            }
            Address::Ssh { .. } => {
                // ssh's set-up and the greeting, together, within the
                // greeting's bound: a host that takes the TCP connection
                // and never speaks SSH is given up on in time.
                let started = Instant::now();
                let ssh = SshOptions {
                    timeout: opts.greeting_timeout,
                    ..SshOptions::from_env()?
                };
                let t = SshTransport::connect_address(addr, &ssh)?
                    .max_message(opts.max_message)
                    .delimiters(opts.guest_sync);
                Client::open_since(Box::new(t), opts, started)
            }
        }
    }

    /// Use an already connected UNIX socket (e.g. from [`crate::Listener`]).
    pub fn from_unix_stream(s: UnixStream, opts: ClientOptions) -> Result<Client, Error> {
        let t = StreamTransport::unix(s)?
            .max_message(opts.max_message)
            .delimiters(opts.guest_sync);
        Client::open(Box::new(t), opts)
    }

    /// Use an already connected TCP socket.
    pub fn from_tcp_stream(s: TcpStream, opts: ClientOptions) -> Result<Client, Error> {
        let t = StreamTransport::tcp(s)?
            .max_message(opts.max_message)
            .delimiters(opts.guest_sync);
        Client::open(Box::new(t), opts)
    }

    /// Start a session on any transport: read the greeting, resynchronise
    /// with a guest agent and negotiate, as the transport and `opts` say.
    pub fn open(transport: Box<dyn Transport>, opts: ClientOptions) -> Result<Client, Error> {
        Client::open_since(transport, opts, Instant::now())
    }

    /// [`Client::open`], the greeting awaited until
    /// [`ClientOptions::greeting_timeout`] after `started` (when connecting
    /// the transport began).
    fn open_since(
        transport: Box<dyn Transport>,
        mut opts: ClientOptions,
        started: Instant,
    ) -> Result<Client, Error> {
        let handshake = transport.handshake();
        let passes_fds = transport.passes_fds();
        let syncer = transport.syncer();
        let halves = transport.split()?;
        let (greeting, awaiting_greeting) = match &handshake {
            Handshake::Server => (None, opts.read_greeting),
            Handshake::Negotiated(g) => (g.clone().map(Ok), false),
        };
        // Resynchronising from the first byte: whatever arrives before the
        // sync reply is stale (a QMP greeting included, which says so).
        let sync_token = opts.guest_sync.then(sync_token);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                connected: true,
                awaiting_greeting,
                greeting,
                syncing: sync_token.map(sync_id),
                ..State::default()
            }),
            replies: Condvar::new(),
            incoming: Condvar::new(),
            writer: Condvar::new(),
            notify: Mutex::new(None),
            log: Mutex::new(opts.log.take()),
            closer: halves.closer.clone(),
            taps: Mutex::new(Vec::new()),
            next_tap: AtomicU64::new(1),
        });
        let reader = {
            let shared = Arc::clone(&shared);
            let source = halves.source;
            thread::Builder::new()
                .name("qmp-reader".to_owned())
                .spawn(move || reader_loop(source, &shared))?
        };
        let writer = {
            let shared = Arc::clone(&shared);
            let sink = halves.sink;
            thread::Builder::new()
                .name("qmp-writer".to_owned())
                .spawn(move || writer_loop(sink, &shared))
        };
        let writer = match writer {
            Ok(w) => w,
            Err(e) => {
                (shared.closer)();
                shared.disconnect(None);
                let _ = reader.join();
                return Err(Error::Io(e));
            }
        };
        let mut client = Client {
            threads: Mutex::new(vec![reader, writer]),
            shared,
            syncer,
            greeting: None,
            oob: false,
            passes_fds,
            next_id: AtomicU64::new(1),
            next_seq: AtomicU64::new(1),
        };
        // On error, dropping `client` closes the transport and joins.
        client.greeting = match &handshake {
            Handshake::Server if opts.read_greeting => {
                Some(client.await_greeting(opts.greeting_timeout, started)?)
            }
            Handshake::Server => None,
            Handshake::Negotiated(g) => g.clone(),
        };
        if let Some(token) = sync_token {
            client.guest_sync(token, opts.greeting_timeout);
        }
        if opts.negotiate && handshake == Handshake::Server {
            let offered = client
                .greeting
                .as_ref()
                .is_some_and(|g| g.capabilities().iter().any(|c| c == "oob"));
            let enable_oob = opts.oob && offered;
            client.negotiate(enable_oob, opts.greeting_timeout)?;
            if enable_oob {
                client.oob = true;
                lock(&client.shared.state).window = Some(OOB_INBAND_WINDOW);
            }
        }
        Ok(client)
    }

    fn await_greeting(
        &self,
        timeout: Option<Duration>,
        started: Instant,
    ) -> Result<Greeting, Error> {
        let deadline = timeout.and_then(|t| started.checked_add(t));
        let mut st = lock(&self.shared.state);
        loop {
            if let Some(g) = st.greeting.clone() {
                return g.map_err(Error::NoGreeting);
            }
            match deadline {
                None => {
                    st = self
                        .shared
                        .replies
                        .wait(st)
                        .unwrap_or_else(|e| e.into_inner())
                }
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        // Stop treating the next message as the greeting.
                        st.awaiting_greeting = false;
                        drop(st);
                        let waited = timeout.unwrap_or_default();
                        return Err(Error::NoGreeting(self.no_greeting_hint(waited)));
                    }
                    st = self
                        .shared
                        .replies
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    /// No greeting came within `waited`: tell a guest agent (which sends
    /// none and answers commands at once) from a monitor that serves
    /// another client, with a probe that waits at most [`PROBE_TIMEOUT`]
    /// more (at most `waited`). The message says both waits.
    fn no_greeting_hint(&self, waited: Duration) -> String {
        let probe_wait = PROBE_TIMEOUT.min(waited);
        let probe = self
            .submit(Request::new(command("guest-ping", None)).unlogged())
            .and_then(|p| p.wait(Some(probe_wait)));
        match probe {
            Ok(reply) if !reply.is_error() => {
                "no greeting: this looks like a guest agent, which sends none (use -N)".to_owned()
            }
            _ => format!(
                "no greeting within {} s, nor an answer to a guest-agent probe within {} s \
                 more (another client may be attached: QEMU serves one client per monitor \
                 at a time)",
                waited.as_secs_f64(),
                probe_wait.as_secs_f64()
            ),
        }
    }

    fn guest_sync(&self, token: i64, timeout: Option<Duration>) {
        let mut args = Object::new();
        args.insert("id".to_owned(), Value::from(token));
        let mut msg = command("guest-sync-delimited", Some(args));
        msg.insert("id".to_owned(), sync_id(token));
        lock(&self.shared.state)
            .outgoing
            .push_back(Outgoing::Raw(vec![0xff]));
        let result = self.submit(Request::new(msg)).and_then(|p| p.wait(timeout));
        lock(&self.shared.state).syncing = None;
        let problem = match result {
            Ok(reply) if reply.ret().and_then(Value::as_i64) == Some(token) => return,
            Ok(reply) => match reply.error_desc() {
                Some(desc) => desc.to_owned(),
                None => format!("unexpected reply {}", compact(&reply.body)),
            },
            Err(Error::Timeout(_)) => "no answer".to_owned(),
            Err(e) => e.to_string(),
        };
        self.shared.queue(
            Incoming::Warning(format!(
                "guest agent resynchronisation (guest-sync-delimited) failed: {problem}; \
                 carrying on without it"
            )),
            0,
        );
    }

    fn negotiate(&self, oob: bool, timeout: Option<Duration>) -> Result<(), Error> {
        let args = oob.then(|| {
            let mut a = Object::new();
            a.insert("enable".to_owned(), Value::from(vec![Value::from("oob")]));
            a
        });
        match self.execute("qmp_capabilities", args, timeout) {
            Ok(reply) if reply.ret().is_some() => Ok(()),
            Ok(reply) => {
                let why = reply
                    .error_desc()
                    .map(str::to_owned)
                    .unwrap_or_else(|| compact(&reply.body));
                Err(Error::Negotiation(why))
            }
            Err(Error::Timeout(_)) => Err(Error::Negotiation(
                "timed out waiting for the qmp_capabilities reply".to_owned(),
            )),
            Err(Error::Disconnected) => Err(Error::Negotiation(
                "connection closed during capabilities negotiation".to_owned(),
            )),
            Err(e) => Err(Error::Negotiation(e.to_string())),
        }
    }

    /// The server's greeting (`None` when `read_greeting` was off).
    pub fn greeting(&self) -> Option<&Greeting> {
        self.greeting.as_ref()
    }

    /// Whether out-of-band execution was negotiated.
    pub fn oob_enabled(&self) -> bool {
        self.oob
    }

    /// Whether file descriptors can be attached to requests.
    pub fn passes_fds(&self) -> bool {
        self.passes_fds
    }

    /// Queue a request and return at once; many may be in flight.
    ///
    /// If the message has no `"id"`, the client adds a unique integer id
    /// (counting from 1) and the reply gets `assigned_id = true`. Otherwise
    /// the given id routes the reply. Should a user id equal an assigned
    /// one, replies still pair correctly: QMP answers in order, and a reply
    /// goes to the oldest request waiting for its id.
    ///
    /// An empty `"arguments": {}` is left out on the wire: QMP treats it as
    /// absent, and QEMU's time per command grows with the bytes it parses
    /// (short messages keep pipelined scripts near the raw-socket limit).
    pub fn submit(&self, request: Request) -> Result<Pending, Error> {
        let (seq, id) = self.enqueue(request, None)?;
        Ok(Pending {
            shared: Some(Arc::clone(&self.shared)),
            seq,
            id,
            finished: false,
            ready: None,
        })
    }

    /// Like [`submit`](Client::submit), but the result goes to `on_reply`
    /// instead of a [`Pending`]: the reply (with `assigned_id` set as
    /// `submit` would), or the error that ended the wait
    /// ([`Error::Disconnected`] when the connection drops,
    /// [`Error::Unsupported`] when the transport refused the request,
    /// [`Error::Protocol`] when an undecodable frame took the reply's
    /// place). `on_reply` is called exactly once, on one of the client's
    /// threads (or the one that closes the client), without any lock of
    /// the client held; it must not block for long, as the client's reader
    /// waits for it. Results come in the order the server gave them.
    ///
    /// When the request cannot even be queued, the error is returned and
    /// `on_reply` is dropped uncalled. For relaying requests of other
    /// clients (a multiplexer such as [`crate::router`]) without a thread
    /// waiting for each reply.
    pub fn submit_with(
        &self,
        request: Request,
        on_reply: impl FnOnce(Result<Reply, Error>) + Send + 'static,
    ) -> Result<(), Error> {
        self.enqueue(request, Some(Callback(Box::new(on_reply))))
            .map(|_| ())
    }

    /// Register a tap that is shown every event as it arrives (on the
    /// client's reader thread, before it is queued for
    /// [`drain_incoming`](Client::drain_incoming), which is unchanged), and
    /// [`Tapped::Closed`] once when the connection ends (at once if it
    /// has ended already). Events dropped while resynchronising with a
    /// guest agent are not shown. Keep `f` cheap: the reader waits for it;
    /// it must not wait for replies of this client. Dropping the returned
    /// [`EventTap`] removes the tap. (To know where a reply came among the
    /// events, take it with [`submit_with`](Client::submit_with): its
    /// callback runs on the same thread, in the order of the wire.)
    pub fn tap_events(&self, f: impl Fn(Tapped<'_>) + Send + Sync + 'static) -> EventTap {
        let id = self.shared.next_tap.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(TapEntry {
            f: Box::new(f),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        lock(&self.shared.taps).push((id, Arc::clone(&entry)));
        if !self.is_connected() {
            entry.closed();
        }
        EventTap {
            shared: Arc::downgrade(&self.shared),
            id,
        }
    }

    /// Queue a request; returns its sequence number and id.
    fn enqueue(&self, request: Request, reply_to: Option<Callback>) -> Result<(u64, Value), Error> {
        let oob = request.is_oob();
        let Request {
            mut msg,
            fds,
            logged,
        } = request;
        if !fds.is_empty() && !self.passes_fds {
            return Err(Error::Unsupported(
                "this connection cannot pass file descriptors (only a UNIX socket can)".to_owned(),
            ));
        }
        if msg
            .get("arguments")
            .and_then(Value::as_object)
            .is_some_and(|a| a.is_empty())
        {
            msg.shift_remove("arguments");
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut st = lock(&self.shared.state);
        if !st.connected || st.write_failed {
            return Err(Error::Disconnected);
        }
        let (id, assigned) = match msg.get("id") {
            Some(id) => (id.clone(), false),
            None => {
                let id = Value::from(self.next_id.fetch_add(1, Ordering::Relaxed));
                msg.insert("id".to_owned(), id.clone());
                (id, true)
            }
        };
        st.waiting.push_back(Waiter {
            seq,
            id: id.clone(),
            assigned,
            oob,
            logged,
            written: false,
            late: Late::No,
            reply_to,
        });
        if !logged {
            st.unlogged += 1;
        }
        st.outgoing.push_back(Outgoing::Message {
            seq,
            oob,
            logged,
            msg,
            fds,
        });
        drop(st);
        self.shared.writer.notify_all();
        Ok((seq, id))
    }

    /// [`submit`](Client::submit) a plain message.
    pub fn send(&self, msg: Object) -> Result<Pending, Error> {
        self.submit(Request::new(msg))
    }

    /// Send `msg` and wait for its reply, up to `timeout` (`None`: forever).
    pub fn call(&self, msg: Object, timeout: Option<Duration>) -> Result<Reply, Error> {
        self.send(msg)?.wait(timeout)
    }

    /// Run command `name` with optional `args` and wait for its reply.
    pub fn execute(
        &self,
        name: &str,
        args: Option<Object>,
        timeout: Option<Duration>,
    ) -> Result<Reply, Error> {
        self.call(command(name, args), timeout)
    }

    /// Wait (at most `timeout`; `None`: as long as it takes) until every
    /// event the server sent before the replies received so far is queued.
    /// Over a socket that is always so (an event sent before a reply is
    /// read first) and this returns at once; over libvirt, events come on a
    /// path of their own and this waits for them (one round trip to
    /// libvirtd). A shell that prints the events caused by the commands
    /// before an empty line calls this first.
    pub fn sync(&self, timeout: Option<Duration>) -> Result<(), Error> {
        match &self.syncer {
            Some(sync) if self.is_connected() => sync(timeout).map_err(Error::Io),
            _ => Ok(()),
        }
    }

    /// Take everything queued so far (events, late replies and warnings),
    /// in arrival order.
    pub fn drain_incoming(&self) -> Vec<Incoming> {
        let mut st = lock(&self.shared.state);
        std::iter::from_fn(|| st.take_incoming()).collect()
    }

    /// Take the queued warnings and late replies, leaving events queued
    /// (for a shell that prints events only when asked).
    pub fn drain_notices(&self) -> Vec<Incoming> {
        let mut st = lock(&self.shared.state);
        std::iter::from_fn(|| st.take_notice()).collect()
    }

    /// Wait up to `timeout` (`None`: forever) for the next queued item.
    /// Returns `None` on timeout, or at once when the queue is empty and the
    /// connection is closed.
    pub fn next_incoming(&self, timeout: Option<Duration>) -> Option<Incoming> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut st = lock(&self.shared.state);
        loop {
            if let Some(item) = st.take_incoming() {
                return Some(item);
            }
            if !st.connected {
                return None;
            }
            st = match deadline {
                None => self
                    .shared
                    .incoming
                    .wait(st)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return None;
                    }
                    self.shared
                        .incoming
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Register a callback run (on the client's threads) whenever a reply
    /// arrives, something is queued for
    /// [`drain_incoming`](Client::drain_incoming), or the connection drops.
    /// Keep it cheap; it must not block on this client.
    pub fn set_notify(&self, f: Arc<dyn Fn() + Send + Sync>) {
        *lock(&self.shared.notify) = Some(f);
    }

    /// `false` once the connection is closed (by either side).
    pub fn is_connected(&self) -> bool {
        lock(&self.shared.state).connected
    }

    /// Why the connection ended, when the transport gave a reason (ssh's
    /// message, say).
    pub fn end_reason(&self) -> Option<String> {
        lock(&self.shared.state).end_reason.clone()
    }

    /// Requests submitted and not answered yet.
    pub fn in_flight(&self) -> usize {
        lock(&self.shared.state).waiting.len()
    }

    /// Close the connection. Waiting requests get [`Error::Disconnected`].
    pub fn close(&self) {
        (self.shared.closer)();
        self.shared.disconnect(None);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
        let me = thread::current().id();
        let handles = std::mem::take(&mut *lock(&self.threads));
        for handle in handles {
            // The last reference may be dropped by the notify callback on a
            // client thread itself; never join ourselves.
            if handle.thread().id() == me {
                continue;
            }
            let _ = handle.join();
        }
    }
}

fn reader_loop(mut source: Box<dyn Source>, shared: &Shared) {
    let logging = shared.has_log();
    source.want_raw(logging);
    // The raw text of the current frame when whether it is logged depends
    // on what it is: during a guest agent resync (only the sync reply is),
    // or while a request kept out of the log is outstanding.
    let mut held: Option<Vec<u8>> = None;
    let reason = loop {
        let received = source.receive(&mut |raw| {
            if !logging {
                return;
            }
            let st = lock(&shared.state);
            if st.unlogged > 0 || st.syncing.is_some() {
                held = Some(raw.to_vec());
            } else {
                drop(st);
                shared.log_line(raw);
            }
        });
        match received {
            Ok(Some(Received::Frame(frame))) => {
                if let Some(raw) = held.take() {
                    if logged(shared, &frame) {
                        shared.log_line(&raw);
                    }
                }
                shared.route(frame);
                shared.run_due();
            }
            Ok(Some(Received::Delimiter)) => {}
            Ok(None) => break None,
            // A transport's own explanation (ssh's message, say); an OS
            // error on a socket just means the peer went away.
            Err(e) if e.raw_os_error().is_none() => break Some(e.to_string()),
            Err(_) => break None,
        }
    };
    shared.disconnect(reason);
}

/// Whether a received frame goes into the log: not while resynchronising
/// with a guest agent (stale bytes), except the sync reply itself; not the
/// reply to a request kept out of the log.
fn logged(shared: &Shared, frame: &Result<Object, FrameError>) -> bool {
    let st = lock(&shared.state);
    let Ok(obj) = frame else {
        return st.syncing.is_none();
    };
    if let Some(sync_id) = &st.syncing {
        return obj.get("id").is_some_and(|id| same_id(sync_id, id));
    }
    if !(obj.contains_key("return") || obj.contains_key("error")) {
        return true;
    }
    st.waiter_for(obj.get("id"))
        .is_none_or(|i| st.waiting[i].logged)
}

fn writer_loop(mut sink: Box<dyn Sink>, shared: &Shared) {
    loop {
        let item = {
            let mut st = lock(&shared.state);
            loop {
                if !st.connected || st.write_failed {
                    return;
                }
                if let Some(i) = st.next_sendable() {
                    let item = st.outgoing.remove(i).expect("index from next_sendable");
                    if let Outgoing::Message { seq, oob, .. } = &item {
                        if let Some(w) = st.waiting.iter_mut().find(|w| w.seq == *seq) {
                            w.written = true;
                        }
                        if !oob {
                            st.inband_in_flight += 1;
                        }
                    }
                    break item;
                }
                st = shared.writer.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        };
        match item {
            Outgoing::Raw(bytes) => {
                if sink.send_raw(&bytes).is_err() {
                    break;
                }
            }
            Outgoing::Message {
                seq,
                logged,
                msg,
                fds,
                ..
            } => {
                let bytes = encode(&msg);
                let refused = beyond_qemu_limits(&bytes);
                if logged && refused.is_none() {
                    shared.log_line(&bytes[..bytes.len() - 1]);
                }
                let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
                let sent = match refused {
                    Some(why) => Err(io::Error::new(io::ErrorKind::Unsupported, why)),
                    None => sink.send(&msg, &bytes, &raw),
                };
                match sent {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                        // This request only: the connection is fine.
                        let mut st = lock(&shared.state);
                        if let Some(i) = st.waiting.iter().position(|w| w.seq == seq) {
                            let w = st.waiting.remove(i).expect("index from position");
                            // Flagged written when taken from `outgoing`
                            // above, so an in-band one frees its window slot.
                            st.answered(&w);
                            st.complete(w, Err(Error::Unsupported(e.to_string())));
                        }
                        drop(st);
                        shared.replies.notify_all();
                        shared.notify();
                        shared.run_due();
                    }
                    Err(_) => break,
                }
                drop(fds);
            }
        }
    }
    shared.write_failed();
}

/// Largest message QEMU's JSON parser accepts (`MAX_TOKEN_SIZE` of
/// `qobject/json-streamer.c`), in bytes.
pub const QEMU_MAX_MESSAGE: usize = 64 << 20;

/// Deepest nesting of objects and arrays QEMU's JSON parser accepts
/// (`MAX_NESTING`), the message's own object included.
pub const QEMU_MAX_NESTING: usize = 1024;

/// Why QEMU would refuse `encoded` (compact JSON and a newline) before
/// reading its id, if it would. Its error would then come without an id and
/// answer no request (see [`STRAY_REPLY`]), so such a message is not sent:
/// the request fails with [`Error::Unsupported`] instead.
fn beyond_qemu_limits(encoded: &[u8]) -> Option<String> {
    let len = encoded.trim_ascii_end().len();
    if len > QEMU_MAX_MESSAGE {
        return Some(format!(
            "not sent: the message is {len} bytes, more than QEMU accepts ({} MiB)",
            QEMU_MAX_MESSAGE >> 20
        ));
    }
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in encoded {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    (deepest > QEMU_MAX_NESTING).then(|| {
        format!(
            "not sent: the message nests {deepest} levels deep, more than QEMU accepts \
             ({QEMU_MAX_NESTING})"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};

    #[test]
    fn client_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Client>();
        check::<Pending>();
    }

    #[test]
    fn numeric_ids_compare_by_value() {
        let a: Value = serde_json::from_str("1.0").unwrap();
        let b: Value = serde_json::from_str("1").unwrap();
        assert!(same_id(&a, &b));
        assert!(!same_id(&Value::String("1".into()), &b));
    }

    /// A scripted peer over a socketpair, for behaviour QEMU cannot produce.
    fn pair(opts: ClientOptions, script: impl FnOnce(UnixStream) + Send + 'static) -> Client {
        let (a, b) = UnixStream::pair().unwrap();
        thread::spawn(move || script(b));
        Client::from_unix_stream(a, opts).unwrap()
    }

    fn no_handshake() -> ClientOptions {
        ClientOptions {
            read_greeting: false,
            negotiate: false,
            ..ClientOptions::default()
        }
    }

    fn read_line(s: &mut UnixStream) -> String {
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        while s.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
            out.push(b[0]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    const T: Option<Duration> = Some(Duration::from_secs(30));

    #[test]
    fn idless_replies_and_unknown_ids_warn_and_garbage_goes_to_the_oldest() {
        let client = pair(no_handshake(), |mut s| {
            read_line(&mut s);
            read_line(&mut s);
            read_line(&mut s);
            s.write_all(b"{\"return\": {}, \"id\": \"nope\"}\r\n")
                .unwrap();
            s.write_all(b"{\"event\": \"X\"}\r\n").unwrap();
            // No id: the late reply of another client, never ours.
            s.write_all(
                b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}\r\n",
            )
            .unwrap();
            s.write_all(b"{\"return\": {\"stray\": 1}}\r\n").unwrap();
            s.write_all(b"this is garbage\r\n").unwrap();
            s.write_all(b"{\"return\": 2, \"id\": 2}\r\n").unwrap();
            s.write_all(b"{\"return\": 3, \"id\": \"mine\"}\r\n")
                .unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
        });
        let p1 = client.send(command("a", None)).unwrap();
        let p2 = client.send(command("b", None)).unwrap();
        let mut m = command("c", None);
        m.insert("id".into(), "mine".into());
        let p3 = client.send(m).unwrap();
        assert!(matches!(p1.wait(T), Err(Error::Protocol(_))));
        let r2 = p2.wait(T).unwrap();
        assert!(r2.assigned_id);
        assert_eq!(r2.ret(), Some(&Value::from(2)));
        let r3 = p3.wait(T).unwrap();
        assert!(!r3.assigned_id);
        assert_eq!(r3.ret(), Some(&Value::from(3)));
        let notices = client.drain_notices();
        assert_eq!(notices.len(), 3, "{notices:?}");
        assert!(matches!(&notices[0], Incoming::Warning(w) if w.contains("unknown id \"nope\"")));
        for (notice, body) in notices[1..].iter().zip([
            r#"{"error":{"class":"GenericError","desc":"JSON parse error"}}"#,
            r#"{"return":{"stray":1}}"#,
        ]) {
            assert_eq!(
                notice,
                &Incoming::Warning(format!("{STRAY_REPLY}: {body}")),
                "{notices:?}"
            );
        }
        let inc = client.drain_incoming();
        assert_eq!(inc.len(), 1, "{inc:?}");
        assert!(matches!(&inc[0], Incoming::Event(e) if e.name() == Some("X")));
        client.close();
        assert!(matches!(
            client.send(command("d", None)),
            Err(Error::Disconnected)
        ));
        assert!(client.next_incoming(None).is_none());
    }

    #[test]
    fn messages_qemu_would_refuse_before_reading_their_id_are_not_sent() {
        let arrays = |depth: usize| {
            let mut args = Object::new();
            let mut v = Value::Array(Vec::new());
            for _ in 1..depth {
                v = Value::Array(vec![v]);
            }
            args.insert("v".into(), v);
            args
        };
        let nested = |depth: usize| encode(&command("x", Some(arrays(depth))));
        // The command object, "arguments" and the arrays.
        assert_eq!(beyond_qemu_limits(&nested(QEMU_MAX_NESTING - 2)), None);
        let why = beyond_qemu_limits(&nested(QEMU_MAX_NESTING - 1)).unwrap();
        assert!(why.contains("1025 levels deep"), "{why}");
        // Brackets inside strings do not count.
        let mut args = Object::new();
        args.insert("s".into(), Value::from("[{\\\"".repeat(2000)));
        assert_eq!(beyond_qemu_limits(&encode(&command("x", Some(args)))), None);
        let mut big = vec![b'x'; QEMU_MAX_MESSAGE + 1];
        big.push(b'\n');
        assert!(beyond_qemu_limits(&big).unwrap().contains("64 MiB"));

        let client = pair(no_handshake(), |mut s| {
            let line = read_line(&mut s);
            let v: Value = serde_json::from_str(&line).unwrap();
            s.write_all(format!("{{\"return\": {{}}, \"id\": {}}}\r\n", v["id"]).as_bytes())
                .unwrap();
            let _ = s.read_to_end(&mut Vec::new());
        });
        let r = client.execute("deep", Some(arrays(1100)), T);
        assert!(
            matches!(&r, Err(Error::Unsupported(w)) if w.starts_with("not sent: ")),
            "{r:?}"
        );
        // The connection is fine: the next request goes and is answered.
        assert!(client.execute("ok", None, T).is_ok());
    }

    #[test]
    fn eof_fails_pending_requests() {
        let client = pair(no_handshake(), |mut s| {
            read_line(&mut s);
        });
        let p = client.send(command("a", None)).unwrap();
        assert!(matches!(p.wait(None), Err(Error::Disconnected)));
        assert!(!client.is_connected());
    }

    /// The peer answers a request only once the test allows it, through a
    /// channel: no sleeps, so the order of events is certain.
    #[test]
    fn timed_out_then_late_reply_is_discarded_and_abandoned_one_reported() {
        let (go_tx, go_rx) = std::sync::mpsc::channel::<&'static [u8]>();
        let client = pair(no_handshake(), move |mut s| {
            while let Ok(reply) = go_rx.recv() {
                read_line(&mut s);
                s.write_all(reply).unwrap();
            }
            let _ = s.read_to_end(&mut Vec::new());
        });
        // A request whose wait times out: its late reply is discarded.
        let r = client.execute("a", None, Some(Duration::from_millis(1)));
        assert!(matches!(r, Err(Error::Timeout(_))));
        go_tx.send(b"{\"return\": 1, \"id\": 1}\r\n").unwrap();
        // An abandoned request with report: its reply is queued as late.
        let p = client.send(command("b", None)).unwrap();
        p.abandon(true);
        go_tx.send(b"{\"return\": 2, \"id\": 2}\r\n").unwrap();
        match client.next_incoming(T) {
            Some(Incoming::LateReply(r)) => {
                assert_eq!(r.ret(), Some(&Value::from(2)));
                assert!(r.assigned_id);
            }
            other => panic!("{other:?}"),
        }
        // The next request is answered normally, and nothing else was queued.
        let p = client.send(command("c", None)).unwrap();
        go_tx.send(b"{\"return\": 3, \"id\": 3}\r\n").unwrap();
        assert_eq!(p.wait(T).unwrap().ret(), Some(&Value::from(3)));
        assert!(client.drain_incoming().is_empty());
    }

    #[test]
    fn greeting_errors() {
        let opts = || ClientOptions {
            greeting_timeout: Some(Duration::from_millis(200)),
            ..ClientOptions::default()
        };
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let e = Client::from_unix_stream(a, opts()).unwrap_err();
        assert_eq!(e.to_string(), "connection closed before the greeting");

        let (a, _b) = UnixStream::pair().unwrap();
        let e = Client::from_unix_stream(a, opts()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no greeting within 0.2 s, nor an answer to a guest-agent probe within 0.2 s \
             more (another client may be attached: QEMU serves one client per monitor at \
             a time)"
        );

        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"{\"hello\": 1}\n").unwrap();
        let e = Client::from_unix_stream(a, opts()).unwrap_err();
        assert_eq!(e.to_string(), "expected a QMP greeting, got: {\"hello\":1}");

        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"SSH-2.0-OpenSSH\r\n").unwrap();
        let e = Client::from_unix_stream(a, opts()).unwrap_err();
        assert!(matches!(e, Error::NoGreeting(_)));
        assert!(e
            .to_string()
            .starts_with("expected a QMP greeting, got: invalid JSON"));
    }

    #[test]
    fn a_peer_that_answers_without_greeting_is_called_a_guest_agent() {
        let (a, b) = UnixStream::pair().unwrap();
        thread::spawn(move || {
            let mut r = BufReader::new(b.try_clone().unwrap());
            let mut w = b;
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let v: Value = serde_json::from_str(&line).unwrap();
                let reply = format!("{{\"return\": {{}}, \"id\": {}}}\n", v["id"]);
                w.write_all(reply.as_bytes()).unwrap();
                line.clear();
            }
        });
        let opts = ClientOptions {
            greeting_timeout: Some(Duration::from_millis(100)),
            ..ClientOptions::default()
        };
        let e = Client::from_unix_stream(a, opts).unwrap_err();
        assert!(e.to_string().contains("use -N"), "{e}");
    }

    #[test]
    fn negotiation_refused() {
        let (a, mut b) = UnixStream::pair().unwrap();
        thread::spawn(move || {
            b.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
                .unwrap();
            read_line(&mut b);
            b.write_all(
                b"{\"id\": 1, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"nope\"}}\r\n",
            )
            .unwrap();
            let _ = b.read_to_end(&mut Vec::new());
        });
        let e = Client::from_unix_stream(a, ClientOptions::default()).unwrap_err();
        assert!(matches!(&e, Error::Negotiation(d) if d == "nope"), "{e:?}");
    }

    /// With OOB offered, the client enables it, keeps at most
    /// OOB_INBAND_WINDOW in-band requests unanswered, and lets an
    /// out-of-band request overtake the ones held back.
    #[test]
    fn oob_negotiation_window_and_overtaking() {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let (a, b) = UnixStream::pair().unwrap();
        thread::spawn(move || {
            let mut w = b.try_clone().unwrap();
            let mut r = BufReader::new(b);
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": [\"oob\"]}}\r\n")
                .unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            tx.send(line.clone()).unwrap();
            w.write_all(b"{\"return\": {}, \"id\": 1}\r\n").unwrap();
            // Read everything the client sends until it stops (the window
            // is full), answering nothing; report each line.
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let v: Value = serde_json::from_str(&line).unwrap();
                tx.send(line.clone()).unwrap();
                if v.get("exec-oob").is_some() {
                    let reply = format!("{{\"return\": \"oob\", \"id\": {}}}\r\n", v["id"]);
                    w.write_all(reply.as_bytes()).unwrap();
                }
            }
        });
        let client = Client::from_unix_stream(a, ClientOptions::default()).unwrap();
        assert!(client.oob_enabled());
        let first = rx.recv().unwrap();
        assert!(first.contains("\"enable\":[\"oob\"]"), "{first}");
        let _held: Vec<Pending> = (0..20)
            .map(|_| client.send(command("query-status", None)).unwrap())
            .collect();
        // The peer sees exactly the window's worth of in-band requests...
        for _ in 0..OOB_INBAND_WINDOW {
            let line = rx.recv().unwrap();
            assert!(line.contains("query-status"), "{line}");
        }
        // ... and the next thing it reads is the out-of-band request,
        // although 13 in-band ones were queued before it.
        let mut oob = Object::new();
        oob.insert("exec-oob".into(), "query-yank".into());
        let reply = client.call(oob, T).unwrap();
        assert_eq!(reply.ret(), Some(&Value::from("oob")));
        let next = rx.recv().unwrap();
        assert!(next.contains("exec-oob"), "{next}");
    }

    #[test]
    fn many_events_before_a_reply() {
        let client = pair(no_handshake(), |mut s| {
            read_line(&mut s);
            let mut out = Vec::new();
            for i in 0..20000 {
                out.extend_from_slice(
                    format!("{{\"event\": \"E\", \"data\": {{\"i\": {i}}}}}\r\n").as_bytes(),
                );
            }
            out.extend_from_slice(b"{\"return\": {}, \"id\": 1}\r\n");
            s.write_all(&out).unwrap();
            let _ = s.read_to_end(&mut Vec::new());
        });
        let r = client.execute("x", None, T).unwrap();
        assert!(r.ret().is_some());
        assert_eq!(client.drain_incoming().len(), 20000);
    }

    #[test]
    fn event_queue_is_bounded_by_bytes() {
        // Events of about 64 KiB: far fewer than the count bound fit in
        // the byte bound.
        let per = 64 << 10;
        let n = MAX_QUEUED_EVENT_BYTES / per + 50;
        let client = pair(no_handshake(), move |mut s| {
            read_line(&mut s);
            let pad = "x".repeat(per);
            for i in 0..n {
                let ev =
                    format!("{{\"event\": \"E\", \"data\": {{\"i\": {i}, \"p\": \"{pad}\"}}}}\r\n");
                s.write_all(ev.as_bytes()).unwrap();
            }
            s.write_all(b"{\"return\": {}, \"id\": 1}\r\n").unwrap();
            let _ = s.read_to_end(&mut Vec::new());
        });
        client.execute("x", None, T).unwrap();
        let items = client.drain_incoming();
        let Incoming::Warning(w) = &items[0] else {
            panic!("{:?}", items[0]);
        };
        assert!(w.contains("older events were dropped"), "{w}");
        let kept = items.len() - 1;
        assert!(kept < n && kept * per <= MAX_QUEUED_EVENT_BYTES, "{kept}");
        assert!(kept * per > MAX_QUEUED_EVENT_BYTES / 2, "{kept}");
        // The newest events are the ones kept.
        let Incoming::Event(last) = items.last().unwrap() else {
            panic!()
        };
        assert_eq!(last.body["data"]["i"], Value::from(n - 1));
    }

    /// Taps see every event (the queue still gets them), stop seeing
    /// them once dropped, and are told once when the connection ends.
    #[test]
    fn event_taps_see_events_and_the_end() {
        let (go_tx, go_rx) = std::sync::mpsc::channel::<&'static [u8]>();
        let client = pair(no_handshake(), move |mut s| {
            while let Ok(bytes) = go_rx.recv() {
                s.write_all(bytes).unwrap();
            }
        });
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let tx2 = Mutex::new(tx.clone());
        let tap = client.tap_events(move |t| {
            let text = match t {
                Tapped::Event(e) => e.name().unwrap_or("?").to_owned(),
                Tapped::Closed => "closed".to_owned(),
            };
            lock(&tx2).send(format!("a:{text}")).unwrap();
        });
        let tx3 = Mutex::new(tx);
        let other = client.tap_events(move |t| {
            if let Tapped::Event(e) = t {
                lock(&tx3)
                    .send(format!("b:{}", e.name().unwrap_or("?")))
                    .unwrap();
            }
        });
        go_tx.send(b"{\"event\": \"ONE\"}\r\n").unwrap();
        let mut got = vec![rx.recv().unwrap(), rx.recv().unwrap()];
        got.sort();
        assert_eq!(got, ["a:ONE", "b:ONE"]);
        drop(other);
        go_tx.send(b"{\"event\": \"TWO\"}\r\n").unwrap();
        assert_eq!(rx.recv().unwrap(), "a:TWO");
        // The queue has both, as without taps.
        let mut names = Vec::new();
        while names.len() < 2 {
            match client.next_incoming(T) {
                Some(Incoming::Event(e)) => names.push(e.name().unwrap().to_owned()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(names, ["ONE", "TWO"]);
        drop(go_tx);
        assert_eq!(rx.recv().unwrap(), "a:closed");
        client.close();
        // Closed is told once; a tap added afterwards is told at once.
        assert!(rx.try_recv().is_err());
        let (late_tx, late_rx) = std::sync::mpsc::channel::<bool>();
        let late_tx = Mutex::new(late_tx);
        let _late = client.tap_events(move |t| {
            lock(&late_tx).send(t == Tapped::Closed).unwrap();
        });
        assert!(late_rx.try_recv().unwrap());
        drop(tap);
    }

    /// `submit_with` hands each result to its callback: replies in the
    /// order the server sent them, with `assigned_id`, and `Disconnected`
    /// for the ones never answered.
    #[test]
    fn submit_with_calls_back_with_each_result() {
        let (go_tx, go_rx) = std::sync::mpsc::channel::<&'static [u8]>();
        let client = pair(no_handshake(), move |mut s| {
            read_line(&mut s);
            read_line(&mut s);
            read_line(&mut s);
            if let Ok(bytes) = go_rx.recv() {
                s.write_all(bytes).unwrap();
            }
        });
        let (tx, rx) = std::sync::mpsc::channel::<(u32, Result<Reply, Error>)>();
        for n in 0..3 {
            let tx = Mutex::new(tx.clone());
            let mut msg = command("x", None);
            if n == 1 {
                msg.insert("id".into(), "mine".into());
            }
            client
                .submit_with(Request::new(msg), move |r| {
                    lock(&tx).send((n, r)).unwrap();
                })
                .unwrap();
        }
        // The second request first, then the first; the third never.
        go_tx
            .send(b"{\"return\": 2, \"id\": \"mine\"}\r\n{\"return\": 1, \"id\": 1}\r\n")
            .unwrap();
        let (n, r) = rx.recv().unwrap();
        let r = r.unwrap();
        assert_eq!(
            (n, r.ret(), r.assigned_id),
            (1, Some(&Value::from(2)), false)
        );
        let (n, r) = rx.recv().unwrap();
        let r = r.unwrap();
        assert_eq!(
            (n, r.ret(), r.assigned_id),
            (0, Some(&Value::from(1)), true)
        );
        drop(go_tx);
        let (n, r) = rx.recv().unwrap();
        assert_eq!(n, 2);
        assert!(matches!(r, Err(Error::Disconnected)), "{r:?}");
        // Once closed, nothing is queued and the callback is not called.
        let e = client.submit_with(Request::new(command("y", None)), |_| {
            panic!("called after a refused submit")
        });
        assert!(matches!(e, Err(Error::Disconnected)));
        assert!(client.drain_incoming().is_empty());
    }

    #[test]
    fn unlogged_requests_stay_out_of_the_log() {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                lock(&self.0).extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let log = Buf::default();
        let opts = ClientOptions {
            log: Some(Box::new(log.clone())),
            ..no_handshake()
        };
        let client = pair(opts, |b| {
            let mut r = BufReader::new(b.try_clone().unwrap());
            let mut w = b;
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let v: Value = serde_json::from_str(&line).unwrap();
                let reply = format!("{{\"return\": {}, \"id\": {}}}\n", v["execute"], v["id"]);
                w.write_all(reply.as_bytes()).unwrap();
                line.clear();
            }
        });
        client
            .submit(Request::new(command("hidden", None)).unlogged())
            .unwrap()
            .wait(T)
            .unwrap();
        client.execute("shown", None, T).unwrap();
        let text = String::from_utf8(lock(&log.0).clone()).unwrap();
        assert!(!text.contains("hidden"), "{text}");
        assert_eq!(text.matches("shown").count(), 2, "{text}");
    }
}
