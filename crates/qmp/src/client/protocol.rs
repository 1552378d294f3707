//! The protocol state of a client, without I/O: requests in flight and the
//! routing of replies by id, the queue of events and its bounds, the window
//! of in-band requests when out-of-band execution is on, the greeting, the
//! guest agent resynchronisation and the life of the connection
//! ([`Runstate`]).
//!
//! [`Protocol`] starts no thread, never blocks and calls no transport and
//! no code of the user: frames go in ([`Protocol::receive`]), messages to
//! send come out ([`Protocol::next_to_send`]), and results, queued items
//! and callbacks due wait to be taken. After each call, [`Protocol::take_wake`]
//! says who may have something new to look at, so that a driver can wake
//! them.
//!
//! # Drivers
//!
//! The driver of [`Client`](super::Client) is a reader thread and a writer
//! thread ([`super::driver`]), the state in a mutex between them. A
//! session that sends one command needs no thread: owning the state
//! outright, it can write what [`Protocol::next_to_send`] hands out
//! ([`encode_for_qemu`](super::limits::encode_for_qemu) makes the bytes),
//! poll(2) the socket, split what it reads into frames
//! ([`Decoder`](crate::Decoder)) and hand each to [`Protocol::receive`]
//! (then [`Protocol::reply`] or [`Protocol::event`]), until
//! [`Protocol::take_result`] has the reply: the loop a C client runs, on
//! the caller's thread. The handshake ([`super::handshake`]) works through
//! [`Client::submit`](super::Client::submit) and
//! [`Pending::wait`](super::Pending::wait), whichever driver answers them.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::OwnedFd;

use serde_json::Value;

use super::error::{Error, StartError};
use super::queue::Queue;
use super::{handshake, Incoming, Request, STRAY_REPLY};
use crate::framing::{truncate, FrameError};
use crate::message::{Event, Greeting, Message, Object, Reply};

/// How much of an unexpected message goes into warnings and errors.
pub(super) const TEXT_IN_MESSAGES: usize = 200;

/// The life of a connection, from the first byte to the end.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Runstate {
    /// Connected; the next frame is the server's greeting.
    AwaitingGreeting,
    /// Connected: requests go out, replies and events come in.
    Running,
    /// Writing failed (the peer went away, say): nothing more is sent, and
    /// the requests already written still get the replies that arrive
    /// before the end of the stream.
    Draining,
    /// The connection ended: every request still waiting failed, nothing
    /// more is sent.
    Closed {
        /// Why, when the transport said (ssh's message, say).
        reason: Option<String>,
    },
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
    /// Whether `id` went on the wire (see [`Protocol::set_in_order`]).
    id_sent: bool,
    oob: bool,
    logged: bool,
    /// The reply may be kept as text ([`Request::text_reply`]).
    text: bool,
    written: bool,
    late: Late,
    /// Where the result goes instead of a [`Pending`](super::Pending)
    /// ([`Client::submit_with`](super::Client::submit_with)).
    reply_to: Option<Callback>,
}

/// A result handler of [`Client::submit_with`](super::Client::submit_with).
pub(crate) struct Callback(pub(crate) Box<dyn FnOnce(Result<Reply, Error>) + Send>);

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Callback")
    }
}

/// A message to send.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A request.
    Message {
        seq: u64,
        oob: bool,
        logged: bool,
        msg: Object,
        fds: Vec<OwnedFd>,
    },
    /// Bytes that are not a message (a guest agent's `0xFF`).
    Raw(Vec<u8>),
}

/// What [`Protocol::next_to_send`] has for the writer.
#[derive(Debug)]
pub(crate) enum Next {
    /// This, now.
    Send(Outgoing),
    /// Nothing for now (nothing queued, or the window is full).
    Idle,
    /// Nothing ever again: the connection is closed, or writing failed.
    Stop,
}

/// A frame after [`Protocol::receive`]: handled, or a reply or an event
/// to be shown to the taps first and then given back
/// ([`Protocol::reply`], [`Protocol::event`]).
#[derive(Debug)]
pub(crate) enum Inbound {
    /// Nothing more to do.
    Handled,
    /// A reply, for [`Protocol::reply`].
    Reply(Reply),
    /// An event, for [`Protocol::event`].
    Event(Event),
}

/// Who may have something new since the last [`Protocol::take_wake`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wake {
    /// A result was stored, the greeting came, or the connection ended:
    /// whoever waits for a reply or the greeting.
    pub(crate) replies: bool,
    /// Something was queued for [`Client::drain_incoming`](super::Client::drain_incoming).
    pub(crate) incoming: bool,
    /// There may be something to send (a request queued, a place in the
    /// window freed).
    pub(crate) writer: bool,
    /// The user's notification ([`Client::set_notify`](super::Client::set_notify)).
    pub(crate) notify: bool,
    /// The connection ended (the taps are told).
    pub(crate) closed: bool,
}

/// The protocol state of one connection. See the [module
/// documentation](self).
#[derive(Debug)]
pub(crate) struct Protocol {
    run: Runstate,
    /// The greeting, or why there is none, until the handshake takes it.
    greeting: Option<Result<Greeting, StartError>>,
    /// Requests submitted and not yet answered, in submission order.
    waiting: VecDeque<Waiter>,
    /// Results not yet collected, by request sequence number.
    done: HashMap<u64, Result<Reply, Error>>,
    /// Results for [`Client::submit_with`](super::Client::submit_with)
    /// callbacks, to be run by the driver outside any lock.
    due: Vec<(Callback, Result<Reply, Error>)>,
    /// Messages not yet written.
    outgoing: VecDeque<Outgoing>,
    /// In-band requests written and not yet answered.
    inband_in_flight: usize,
    /// At most this many in-band requests unanswered (out-of-band on).
    window: Option<usize>,
    /// Events, late replies and warnings.
    queue: Queue,
    /// While resynchronising with a guest agent: the id of the
    /// `guest-sync-delimited` request; other replies are stale.
    syncing: Option<Value>,
    /// Unanswered requests kept out of the log.
    unlogged: usize,
    /// Whether file descriptors may be attached to requests.
    passes_fds: bool,
    /// See [`Protocol::set_in_order`].
    in_order: bool,
    next_id: u64,
    next_seq: u64,
    wake: Wake,
}

impl Protocol {
    /// The state of a connection just made: `awaiting_greeting` when the
    /// server's greeting comes first; `syncing` with the id of the
    /// `guest-sync-delimited` to be sent, when everything before its reply
    /// is stale; `passes_fds` when the transport carries file descriptors.
    pub(crate) fn new(
        awaiting_greeting: bool,
        syncing: Option<Value>,
        passes_fds: bool,
    ) -> Protocol {
        Protocol {
            run: if awaiting_greeting {
                Runstate::AwaitingGreeting
            } else {
                Runstate::Running
            },
            greeting: None,
            waiting: VecDeque::new(),
            done: HashMap::new(),
            due: Vec::new(),
            outgoing: VecDeque::new(),
            inband_in_flight: 0,
            window: None,
            queue: Queue::default(),
            syncing,
            unlogged: 0,
            passes_fds,
            in_order: false,
            next_id: 1,
            next_seq: 1,
            wake: Wake::default(),
        }
    }

    /// Where the connection is in its life.
    #[cfg(test)]
    pub(crate) fn runstate(&self) -> &Runstate {
        &self.run
    }

    /// `true` once the connection ended.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.run, Runstate::Closed { .. })
    }

    /// Why the connection ended, when the transport said.
    pub(crate) fn end_reason(&self) -> Option<String> {
        match &self.run {
            Runstate::Closed { reason } => reason.clone(),
            _ => None,
        }
    }

    /// Who may have something new since the last call; resets.
    pub(crate) fn take_wake(&mut self) -> Wake {
        std::mem::take(&mut self.wake)
    }

    /// The callbacks whose results are in, in the order the results came;
    /// to be run without holding any lock.
    pub(crate) fn take_due(&mut self) -> Vec<(Callback, Result<Reply, Error>)> {
        std::mem::take(&mut self.due)
    }

    /// Requests submitted and not answered yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.waiting.len()
    }

    // ---- Requests

    /// Queue a request; returns its sequence number and id. With
    /// `reply_to`, the result goes to that callback instead of
    /// [`Protocol::take_result`].
    pub(crate) fn submit(
        &mut self,
        request: Request,
        reply_to: Option<Callback>,
    ) -> Result<(u64, Value), Error> {
        let oob = request.is_oob();
        let Request {
            mut msg,
            fds,
            logged,
            text,
        } = request;
        if !fds.is_empty() && !self.passes_fds {
            return Err(Error::Unsupported(
                crate::transport::stream::NO_FDS.to_owned(),
            ));
        }
        if msg
            .get("arguments")
            .and_then(Value::as_object)
            .is_some_and(|a| a.is_empty())
        {
            msg.shift_remove("arguments");
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if matches!(self.run, Runstate::Draining | Runstate::Closed { .. }) {
            return Err(Error::Disconnected);
        }
        let (id, assigned, id_sent) = match msg.get("id") {
            Some(id) => (id.clone(), false, true),
            None => {
                let id = Value::from(self.next_id);
                self.next_id += 1;
                // Answered in order, an in-band request needs no id: its
                // reply's place says whose it is.
                let id_sent = oob || !self.in_order;
                if id_sent {
                    msg.insert("id".to_owned(), id.clone());
                }
                (id, true, id_sent)
            }
        };
        self.waiting.push_back(Waiter {
            seq,
            id: id.clone(),
            assigned,
            id_sent,
            oob,
            logged,
            text,
            written: false,
            late: Late::No,
            reply_to,
        });
        if !logged {
            self.unlogged += 1;
        }
        self.outgoing.push_back(Outgoing::Message {
            seq,
            oob,
            logged,
            msg,
            fds,
        });
        self.wake.writer = true;
        Ok((seq, id))
    }

    /// Queue bytes that are not a message, to go before what is queued
    /// after them.
    pub(crate) fn push_raw(&mut self, bytes: Vec<u8>) {
        self.outgoing.push_back(Outgoing::Raw(bytes));
    }

    /// The next message to send: the first out-of-band request, else the
    /// oldest message if the window allows. A request handed out counts as
    /// written.
    pub(crate) fn next_to_send(&mut self) -> Next {
        if matches!(self.run, Runstate::Draining | Runstate::Closed { .. }) {
            return Next::Stop;
        }
        let Some(i) = self.next_sendable() else {
            return Next::Idle;
        };
        let item = self.outgoing.remove(i).expect("index from next_sendable");
        if let Outgoing::Message { seq, oob, .. } = &item {
            if let Some(w) = self.waiting.iter_mut().find(|w| w.seq == *seq) {
                w.written = true;
            }
            if !oob {
                self.inband_in_flight += 1;
            }
        }
        Next::Send(item)
    }

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

    /// Request `seq` was not sent, for `why` (the transport cannot carry
    /// it, or QEMU would refuse it); the connection is fine.
    pub(crate) fn refused(&mut self, seq: u64, why: String) {
        if let Some(i) = self.waiting.iter().position(|w| w.seq == seq) {
            let w = self.waiting.remove(i).expect("index from position");
            // Flagged written when handed out, so an in-band one frees its
            // place in the window.
            self.answered(&w);
            self.complete(w, Err(Error::Unsupported(why)));
        }
        self.wake.replies = true;
        self.wake.notify = true;
    }

    /// Writing failed (the peer closed, say). Requests not written fail at
    /// once; those written still get the replies received before the end
    /// of the stream ([`Protocol::close`] fails the rest).
    pub(crate) fn write_failed(&mut self) {
        if !self.is_closed() {
            self.run = Runstate::Draining;
        }
        self.outgoing.clear();
        for w in std::mem::take(&mut self.waiting) {
            if w.written {
                self.waiting.push_back(w);
                continue;
            }
            self.answered(&w);
            self.complete(w, Err(Error::Disconnected));
        }
        self.wake.replies = true;
        self.wake.notify = true;
    }

    /// The connection ended, with the transport's `reason` when it gave
    /// one: every request still waiting fails. The first end counts; later
    /// ones change nothing.
    pub(crate) fn close(&mut self, reason: Option<io::Error>) {
        if self.is_closed() {
            return;
        }
        let text = reason.as_ref().map(ToString::to_string);
        if self.run == Runstate::AwaitingGreeting {
            self.greeting = Some(Err(match reason {
                Some(e) => StartError::from_cause(e),
                None => StartError::words("connection closed before the greeting"),
            }));
        }
        self.run = Runstate::Closed { reason: text };
        self.outgoing.clear();
        for w in std::mem::take(&mut self.waiting) {
            self.complete(w, Err(Error::Disconnected));
        }
        self.inband_in_flight = 0;
        self.unlogged = 0;
        self.wake = Wake {
            replies: true,
            incoming: true,
            writer: true,
            notify: true,
            closed: true,
        };
    }

    /// Keep at most `window` in-band requests unanswered from now on.
    pub(crate) fn set_window(&mut self, window: usize) {
        self.window = Some(window);
    }

    /// With `in_order`, the server answers in-band requests in the order it
    /// got them (a QMP monitor without out-of-band execution): from now on
    /// the in-band requests the client numbers go without their id, and a
    /// reply without an id answers the oldest of them. Ids the caller gave
    /// still go, and route as ever.
    pub(crate) fn set_in_order(&mut self, in_order: bool) {
        self.in_order = in_order;
    }

    // ---- Results

    /// The result of request `seq`, if it arrived (once).
    pub(crate) fn take_result(&mut self, seq: u64) -> Option<Result<Reply, Error>> {
        self.done.remove(&seq)
    }

    /// Whether request `seq` can no longer get a result: the connection
    /// ended and it is not waiting (the end stores a result for every
    /// request waiting, so this is a safety net).
    pub(crate) fn is_lost(&self, seq: u64) -> bool {
        self.is_closed() && !self.waiting.iter().any(|w| w.seq == seq)
    }

    /// Stop waiting for request `seq`. With `report`, its reply is queued
    /// as [`Incoming::LateReply`] when it comes; otherwise it is discarded.
    /// A reply that already arrived is reported (or discarded) at once.
    pub(crate) fn abandon(&mut self, seq: u64, report: bool) {
        if let Some(result) = self.done.remove(&seq) {
            if let (Ok(reply), true) = (result, report) {
                self.push(Incoming::LateReply(reply), 0);
            }
            return;
        }
        if let Some(w) = self.waiting.iter_mut().find(|w| w.seq == seq) {
            w.late = if report { Late::Report } else { Late::Drop };
        }
    }

    /// Nobody wants the result of request `seq` any more.
    pub(crate) fn forget(&mut self, seq: u64) {
        if let Some(w) = self.waiting.iter_mut().find(|w| w.seq == seq) {
            w.late = Late::Drop;
        }
        self.done.remove(&seq);
    }

    /// Store the result of request `w`: for its [`Pending`](super::Pending),
    /// or for its callback. Abandoned requests' results are discarded.
    fn complete(&mut self, w: Waiter, result: Result<Reply, Error>) {
        match w.reply_to {
            Some(callback) => self.due.push((callback, result)),
            None if w.late == Late::No => {
                self.done.insert(w.seq, result);
            }
            None => {}
        }
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
    /// oldest written one that went with that id. A reply without an id
    /// answers the oldest written one that went without
    /// ([`Protocol::set_in_order`]); with none, no request: see
    /// [`STRAY_REPLY`].
    fn waiter_for(&self, id: Option<&Value>) -> Option<usize> {
        match id {
            Some(id) => self
                .waiting
                .iter()
                .position(|w| w.written && w.id_sent && same_id(&w.id, id)),
            None => self.waiting.iter().position(|w| w.written && !w.id_sent),
        }
    }

    // ---- The queue

    /// Queue `item` (`size`: an event's size as received).
    fn push(&mut self, item: Incoming, size: usize) {
        self.queue.push(item, size);
        self.wake.incoming = true;
        self.wake.notify = true;
    }

    /// Queue a warning.
    pub(crate) fn warn(&mut self, text: String) {
        self.push(Incoming::Warning(text), 0);
    }

    /// The oldest queued item.
    pub(crate) fn pop_incoming(&mut self) -> Option<Incoming> {
        self.queue.pop()
    }

    /// The oldest queued item that is not an event.
    pub(crate) fn pop_notice(&mut self) -> Option<Incoming> {
        self.queue.pop_notice()
    }

    // ---- The handshake

    /// The greeting, or why there is none, once it is known (once).
    pub(crate) fn take_greeting(&mut self) -> Option<Result<Greeting, StartError>> {
        self.greeting.take()
    }

    /// The greeting did not come in time: the next frame is not taken for
    /// it.
    pub(crate) fn stop_awaiting_greeting(&mut self) {
        if self.run == Runstate::AwaitingGreeting {
            self.run = Runstate::Running;
        }
    }

    /// The guest agent resynchronisation is over, one way or another.
    pub(crate) fn end_syncing(&mut self) {
        self.syncing = None;
    }

    // ---- Received frames

    /// Route one received frame. A reply or an event is given back, to be
    /// shown to the taps before it is routed ([`Protocol::reply`]) or
    /// queued ([`Protocol::event`]).
    pub(crate) fn receive(&mut self, frame: Result<Object, FrameError>) -> Inbound {
        if self.run == Runstate::AwaitingGreeting {
            self.greeting = Some(handshake::greeting_from(frame));
            self.run = Runstate::Running;
            self.wake.replies = true;
            return Inbound::Handled;
        }
        let syncing = self.syncing.is_some();
        match frame {
            Ok(obj) => match Message::classify(obj) {
                // While resynchronising, only the sync reply counts: no tap
                // is shown the stale ones.
                Message::Reply(reply) if syncing => {
                    self.reply(reply);
                    Inbound::Handled
                }
                Message::Reply(reply) => Inbound::Reply(reply),
                Message::Event(_) if syncing => Inbound::Handled,
                Message::Event(ev) => Inbound::Event(ev),
                Message::Greeting(g) => {
                    let text = if syncing {
                        "the server sent a QMP greeting: this is a QMP monitor, not a \
                         guest agent (leave out -N)"
                            .to_owned()
                    } else {
                        format!("ignoring unexpected greeting: {}", compact(&g.body))
                    };
                    self.warn(text);
                    Inbound::Handled
                }
                Message::Other(obj) => {
                    self.warn(format!("ignoring unexpected message: {}", compact(&obj)));
                    Inbound::Handled
                }
            },
            // Stale bytes before the agent's reply.
            Err(_) if syncing => Inbound::Handled,
            // An undecodable frame takes the place of the oldest reply
            // awaited.
            Err(e) => {
                match self.waiting.iter().position(|w| w.written) {
                    Some(i) => {
                        let w = self.waiting.remove(i).expect("index from position");
                        self.answered(&w);
                        self.complete(w, Err(Error::Protocol(e)));
                        self.wake.replies = true;
                        self.wake.writer = true;
                        self.wake.notify = true;
                    }
                    None => self.warn(e.to_string()),
                }
                Inbound::Handled
            }
        }
    }

    /// Whether a reply kept as text ([`Received::Text`](crate::transport::Received::Text))
    /// stays so: when it answers a request that asked for that
    /// ([`Request::text_reply`]). Otherwise it is to be read into its
    /// object and received as any frame ([`Protocol::receive`]).
    pub(crate) fn keeps_text(&self, reply: &Reply) -> bool {
        self.run != Runstate::AwaitingGreeting
            && self.syncing.is_none()
            && self
                .waiter_for(reply.id())
                .is_some_and(|i| self.waiting[i].text)
    }

    /// Route a reply to the request waiting for it.
    pub(crate) fn reply(&mut self, mut reply: Reply) {
        if let Some(sync_id) = &self.syncing {
            // Resynchronising: only the reply to our guest-sync-delimited counts.
            if reply.id().is_none_or(|id| !same_id(sync_id, id)) {
                return;
            }
        }
        let index = self.waiter_for(reply.id());
        match index.and_then(|i| self.waiting.remove(i)) {
            Some(w) => {
                self.answered(&w);
                self.wake.writer = true;
                reply.assigned_id = w.assigned;
                if w.reply_to.is_some() {
                    // For its callback, whatever became of the request.
                    self.complete(w, Ok(reply));
                    return;
                }
                match w.late {
                    Late::No => {
                        self.done.insert(w.seq, Ok(reply));
                        self.wake.replies = true;
                        self.wake.notify = true;
                    }
                    Late::Drop => {}
                    Late::Report => self.push(Incoming::LateReply(reply), 0),
                }
            }
            None if self.is_closed() => {}
            None => {
                let what = match reply.id() {
                    Some(id) => format!("ignoring reply with unknown id {}", compact_value(id)),
                    None => STRAY_REPLY.to_owned(),
                };
                self.warn(format!("{what}: {}", compact(&reply.body)));
            }
        }
    }

    /// Queue an event; `size` is its estimated size
    /// ([`approx_heap_size`](super::approx_heap_size)).
    pub(crate) fn event(&mut self, ev: Event, size: usize) {
        self.push(Incoming::Event(ev), size);
    }

    // ---- The traffic log

    /// Whether logging a frame depends on what it is (so its raw
    /// text is to be held until it is decoded): during a guest agent
    /// resynchronisation (only the sync reply is), or while a request kept
    /// out of the log is outstanding.
    pub(crate) fn log_depends_on_frame(&self) -> bool {
        self.unlogged > 0 || self.syncing.is_some()
    }

    /// [`Protocol::logs`] for a reply kept as text.
    pub(crate) fn logs_text(&self, reply: &Reply) -> bool {
        if let Some(sync_id) = &self.syncing {
            return reply.id().is_some_and(|id| same_id(sync_id, id));
        }
        self.waiter_for(reply.id())
            .is_none_or(|i| self.waiting[i].logged)
    }

    /// Whether a received frame goes into the log: not while
    /// resynchronising with a guest agent (stale bytes), except the sync
    /// reply itself; not the reply to a request kept out of the log.
    pub(crate) fn logs(&self, frame: &Result<Object, FrameError>) -> bool {
        let Ok(obj) = frame else {
            return self.syncing.is_none();
        };
        if let Some(sync_id) = &self.syncing {
            return obj.get("id").is_some_and(|id| same_id(sync_id, id));
        }
        if !(obj.contains_key("return") || obj.contains_key("error")) {
            return true;
        }
        self.waiter_for(obj.get("id"))
            .is_none_or(|i| self.waiting[i].logged)
    }
}

/// Compare a request id with a reply id. QEMU re-serializes ids, so numbers
/// are also compared by value.
pub(super) fn same_id(sent: &Value, got: &Value) -> bool {
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

/// `obj` as compact JSON, cut to [`TEXT_IN_MESSAGES`] characters.
pub(super) fn compact(obj: &Object) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::client::MAX_QUEUED_EVENTS;
    use crate::message::command;

    fn frame(text: &str) -> Result<Object, FrameError> {
        Ok(serde_json::from_str(text).unwrap())
    }

    /// The message `next_to_send` hands out, as compact JSON.
    fn sent(p: &mut Protocol) -> String {
        match p.next_to_send() {
            Next::Send(Outgoing::Message { msg, .. }) => serde_json::to_string(&msg).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    /// Route `text` as the driver does (taps aside).
    fn feed(p: &mut Protocol, text: &str) {
        match p.receive(frame(text)) {
            Inbound::Handled => {}
            Inbound::Reply(reply) => p.reply(reply),
            Inbound::Event(ev) => p.event(ev, 100),
        }
    }

    fn submit(p: &mut Protocol, msg: Object) -> u64 {
        p.submit(Request::new(msg), None).unwrap().0
    }

    /// The whole life of a session, driven by hand: no thread, no socket.
    #[test]
    fn a_session_driven_without_io() {
        let mut p = Protocol::new(true, None, false);
        assert_eq!(p.runstate(), &Runstate::AwaitingGreeting);
        feed(
            &mut p,
            r#"{"QMP": {"version": {}, "capabilities": ["oob"]}}"#,
        );
        assert!(p.take_wake().replies);
        let greeting = p.take_greeting().unwrap().unwrap();
        assert_eq!(greeting.capabilities(), ["oob"]);
        assert_eq!(p.runstate(), &Runstate::Running);

        let a = submit(&mut p, command("a", None));
        let mut mine = command("b", Some(Object::new()));
        mine.insert("id".into(), "mine".into());
        let b = submit(&mut p, mine);
        assert!(p.take_wake().writer);
        // Assigned ids count from 1; an empty "arguments" is left out.
        assert_eq!(sent(&mut p), r#"{"execute":"a","id":1}"#);
        assert_eq!(sent(&mut p), r#"{"execute":"b","id":"mine"}"#);
        assert!(matches!(p.next_to_send(), Next::Idle));
        assert_eq!(p.in_flight(), 2);

        // Replies go by id, whatever their order; events are queued.
        feed(&mut p, r#"{"return": 2, "id": "mine"}"#);
        feed(&mut p, r#"{"event": "E"}"#);
        let wake = p.take_wake();
        assert!(wake.replies && wake.incoming && wake.notify && !wake.closed);
        let r = p.take_result(b).unwrap().unwrap();
        assert_eq!((r.ret(), r.assigned_id), (Some(&Value::from(2)), false));
        assert!(p.take_result(a).is_none());
        assert!(matches!(p.pop_incoming(), Some(Incoming::Event(e)) if e.name() == Some("E")));

        // An undecodable frame takes the place of the oldest reply awaited.
        p.receive(Err(FrameError::InvalidUtf8));
        assert!(matches!(
            p.take_result(a),
            Some(Err(Error::Protocol(FrameError::InvalidUtf8)))
        ));
        // A reply nobody waits for is a warning.
        feed(&mut p, r#"{"return": {}}"#);
        assert!(
            matches!(p.pop_incoming(), Some(Incoming::Warning(w)) if w.starts_with(STRAY_REPLY))
        );

        let c = submit(&mut p, command("c", None));
        p.close(None);
        assert_eq!(p.runstate(), &Runstate::Closed { reason: None });
        assert!(p.take_wake().closed);
        assert!(matches!(p.take_result(c), Some(Err(Error::Disconnected))));
        assert!(matches!(p.next_to_send(), Next::Stop));
        assert!(matches!(
            p.submit(Request::new(command("d", None)), None),
            Err(Error::Disconnected)
        ));
    }

    /// In order (a monitor without out-of-band execution), the numbers the
    /// client gives in-band requests stay off the wire, and replies
    /// without an id answer those requests in turn, an abandoned one
    /// keeping its place; a caller's id and an out-of-band request's still
    /// go and route, and a number the client kept to itself routes nothing.
    #[test]
    fn in_order_requests_go_without_ids_and_replies_answer_them_in_turn() {
        let warned = |p: &mut Protocol, start: &str| matches!(p.pop_incoming(), Some(Incoming::Warning(w)) if w.starts_with(start));
        let mut p = Protocol::new(false, None, false);
        let caps = submit(&mut p, command("qmp_capabilities", None));
        assert_eq!(sent(&mut p), r#"{"execute":"qmp_capabilities","id":1}"#);
        // What comes before its reply without an id is no answer of ours.
        feed(&mut p, r#"{"return": "left over"}"#);
        assert!(warned(&mut p, STRAY_REPLY));
        feed(&mut p, r#"{"return": {}, "id": 1}"#);
        assert!(p.take_result(caps).unwrap().is_ok());

        p.set_in_order(true);
        let a = submit(&mut p, command("a", None));
        let mut mine = command("b", None);
        mine.insert("id".into(), "mine".into());
        let b = submit(&mut p, mine);
        let c = submit(&mut p, command("c", None));
        let mut oob = Object::new();
        oob.insert("exec-oob".into(), "x".into());
        let d = submit(&mut p, oob);
        // Out-of-band first, as ever.
        assert_eq!(sent(&mut p), r#"{"exec-oob":"x","id":4}"#);
        assert_eq!(sent(&mut p), r#"{"execute":"a"}"#);
        assert_eq!(sent(&mut p), r#"{"execute":"b","id":"mine"}"#);
        assert_eq!(sent(&mut p), r#"{"execute":"c"}"#);
        feed(&mut p, r#"{"return": "no", "id": 2}"#);
        assert!(warned(&mut p, "ignoring reply with unknown id 2"));
        feed(&mut p, r#"{"return": "D", "id": 4}"#);
        feed(&mut p, r#"{"return": "A"}"#);
        feed(&mut p, r#"{"return": "B", "id": "mine"}"#);
        feed(&mut p, r#"{"return": "C"}"#);
        for (seq, want, assigned) in [
            (a, "A", true),
            (b, "B", false),
            (c, "C", true),
            (d, "D", true),
        ] {
            let r = p.take_result(seq).unwrap().unwrap();
            assert_eq!(
                (r.ret(), r.assigned_id),
                (Some(&Value::from(want)), assigned)
            );
        }
        assert_eq!(p.in_flight(), 0);

        // A request given up on keeps its place: the next reply is its.
        let e = submit(&mut p, command("e", None));
        let f = submit(&mut p, command("f", None));
        assert_eq!(sent(&mut p), r#"{"execute":"e"}"#);
        assert_eq!(sent(&mut p), r#"{"execute":"f"}"#);
        p.abandon(e, false);
        feed(&mut p, r#"{"return": "E"}"#);
        feed(&mut p, r#"{"return": "F"}"#);
        assert!(p.take_result(e).is_none());
        let r = p.take_result(f).unwrap().unwrap();
        assert_eq!(r.ret(), Some(&Value::from("F")));
        // With none left that went without an id, one more is a stray.
        feed(&mut p, r#"{"return": {}}"#);
        assert!(warned(&mut p, STRAY_REPLY));
        assert!(p.pop_incoming().is_none());
    }

    /// With a window of 2: out-of-band requests go first, in-band ones
    /// wait for a place.
    #[test]
    fn the_window_holds_in_band_requests_back_and_lets_out_of_band_ones_pass() {
        let mut p = Protocol::new(false, None, false);
        p.set_window(2);
        for name in ["a", "b", "c"] {
            submit(&mut p, command(name, None));
        }
        let mut oob = Object::new();
        oob.insert("exec-oob".into(), "x".into());
        submit(&mut p, oob);
        assert_eq!(sent(&mut p), r#"{"exec-oob":"x","id":4}"#);
        assert_eq!(sent(&mut p), r#"{"execute":"a","id":1}"#);
        assert_eq!(sent(&mut p), r#"{"execute":"b","id":2}"#);
        assert!(matches!(p.next_to_send(), Next::Idle));
        // The out-of-band reply frees no place; an in-band one does.
        feed(&mut p, r#"{"return": {}, "id": 4}"#);
        assert!(matches!(p.next_to_send(), Next::Idle));
        feed(&mut p, r#"{"return": {}, "id": 1}"#);
        assert!(p.take_wake().writer);
        assert_eq!(sent(&mut p), r#"{"execute":"c","id":3}"#);
    }

    /// A failed write: what was written still gets its reply, the rest
    /// fails at once; the end of the stream closes with the transport's
    /// reason.
    #[test]
    fn draining_after_a_failed_write_then_closed_with_a_reason() {
        let mut p = Protocol::new(false, None, false);
        let a = submit(&mut p, command("a", None));
        let b = submit(&mut p, command("b", None));
        sent(&mut p);
        p.write_failed();
        assert_eq!(p.runstate(), &Runstate::Draining);
        assert!(matches!(p.take_result(b), Some(Err(Error::Disconnected))));
        assert!(matches!(p.next_to_send(), Next::Stop));
        assert!(matches!(
            p.submit(Request::new(command("c", None)), None),
            Err(Error::Disconnected)
        ));
        feed(&mut p, r#"{"return": 1, "id": 1}"#);
        assert!(p.take_result(a).unwrap().is_ok());
        p.close(Some(io::Error::other("ssh: the connection broke")));
        assert_eq!(p.end_reason().as_deref(), Some("ssh: the connection broke"));
        // The first end counts.
        p.close(Some(io::Error::other("later")));
        assert_eq!(p.end_reason().as_deref(), Some("ssh: the connection broke"));
    }

    /// The end before the greeting is the greeting's failure, with the
    /// transport's error kept.
    #[test]
    fn the_end_before_the_greeting_fails_it() {
        let mut p = Protocol::new(true, None, false);
        p.close(Some(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "ssh: cannot open the socket",
        )));
        let why = p.take_greeting().unwrap().unwrap_err();
        assert_eq!(why.to_string(), "ssh: cannot open the socket");
        let io = why.cause().and_then(|c| c.downcast_ref::<io::Error>());
        assert_eq!(
            io.map(io::Error::kind),
            Some(io::ErrorKind::ConnectionRefused)
        );

        let mut p = Protocol::new(true, None, false);
        p.close(None);
        let why = p.take_greeting().unwrap().unwrap_err();
        assert_eq!(why.to_string(), "connection closed before the greeting");
        // A greeting that does not come in time: the next frame is not one.
        let mut p = Protocol::new(true, None, false);
        p.stop_awaiting_greeting();
        feed(&mut p, r#"{"QMP": {}}"#);
        assert!(p.take_greeting().is_none());
        assert!(
            matches!(p.pop_incoming(), Some(Incoming::Warning(w)) if w.starts_with("ignoring unexpected greeting"))
        );
    }

    /// While resynchronising with a guest agent, only the sync reply
    /// counts and is logged.
    #[test]
    fn resynchronising_drops_what_came_before_the_sync_reply() {
        let sync = Value::from("qmp-sync-7");
        let mut p = Protocol::new(false, Some(sync.clone()), false);
        let mut msg = command("guest-sync-delimited", None);
        msg.insert("id".into(), sync);
        let s = submit(&mut p, msg);
        sent(&mut p);
        assert!(p.log_depends_on_frame());
        let stale = frame(r#"{"return": 3, "id": 1}"#);
        assert!(!p.logs(&stale));
        assert!(matches!(p.receive(stale), Inbound::Handled));
        assert!(matches!(
            p.receive(frame(r#"{"event": "E"}"#)),
            Inbound::Handled
        ));
        assert!(matches!(
            p.receive(Err(FrameError::InvalidUtf8)),
            Inbound::Handled
        ));
        let answer = frame(r#"{"return": 7, "id": "qmp-sync-7"}"#);
        assert!(p.logs(&answer));
        assert!(matches!(p.receive(answer), Inbound::Handled));
        assert!(p.take_result(s).unwrap().is_ok());
        assert!(p.pop_incoming().is_none());
        p.end_syncing();
        assert!(!p.log_depends_on_frame());
        feed(&mut p, r#"{"event": "E"}"#);
        assert!(p.pop_incoming().is_some());
    }

    /// A flood of events: the oldest are dropped, and the caller is told.
    #[test]
    fn the_event_queue_keeps_the_newest_and_says_how_many_went() {
        let mut p = Protocol::new(false, None, false);
        for _ in 0..MAX_QUEUED_EVENTS + 3 {
            p.event(
                Event {
                    body: Object::new(),
                },
                1,
            );
        }
        let Some(Incoming::Warning(w)) = p.pop_incoming() else {
            panic!()
        };
        assert!(w.starts_with("3 older events were dropped"), "{w}");
    }

    #[test]
    fn numeric_ids_compare_by_value() {
        let a: Value = serde_json::from_str("1.0").unwrap();
        let b: Value = serde_json::from_str("1").unwrap();
        assert!(same_id(&a, &b));
        assert!(!same_id(&Value::String("1".into()), &b));
    }
}
