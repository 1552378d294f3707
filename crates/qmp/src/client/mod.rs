//! A blocking QMP client over any [`Transport`], with a reader thread and a
//! writer thread, or over a socket with none ([`ClientOptions::inline`]:
//! whoever waits on the client does its I/O).
//!
//! [`Client::submit`] queues a request and returns at once with a
//! [`Pending`]; the writer thread sends requests in order, and the reader
//! thread routes each reply to the request waiting for it (by id) and queues
//! events and warnings ([`Incoming`]). Many requests may be in flight at
//! once (pipelining). When the server enabled out-of-band execution, at most
//! [`OOB_INBAND_WINDOW`] in-band requests are left unanswered at a time, so
//! an `exec-oob` request never waits behind them in a suspended monitor.
//!
//! # Inside
//!
//! * `protocol`: the protocol state, without I/O: requests in flight and
//!   the routing of replies, the event queue, the out-of-band window, the
//!   life of the connection (one `Runstate`). Frames go in, messages to
//!   send come out.
//! * `driver`: the reader and writer threads that drive that state over a
//!   [`Transport`], and the waits of the callers.
//! * `inline`: the driver without threads, for a UNIX or TCP socket: the
//!   waits send and read themselves.
//! * `handshake`: the greeting, the guest agent resynchronisation and the
//!   capabilities negotiation.
//! * `taps`: [`Client::tap_events`]. `queue`: the bounded event queue.
//!   `limits`: what QEMU accepts. `error`: [`Error`] and its causes.

use std::io::Write;
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::address::Address;
use crate::message::{command, Event, Greeting, Object, Reply};
use crate::plumbing::lock;
use crate::transport::ssh::{SshOptions, SshTransport};
use crate::transport::{StreamTransport, Syncer, Transport};

mod driver;
mod error;
mod handshake;
mod inline;
mod limits;
mod pending;
mod protocol;
mod queue;
mod taps;
#[cfg(test)]
mod testing;

pub use error::{Error, ServerError, StartError};
pub use inline::Interrupt;
pub use limits::{QEMU_MAX_MESSAGE, QEMU_MAX_NESTING};
pub use pending::Pending;
pub use queue::approx_heap_size;
pub use taps::{EventTap, Tapped};

use driver::{Shared, Waited};
use protocol::Callback;

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

/// The warning for a reply without an id. A [`Client`]'s requests carry
/// ids, which QEMU copies into its replies, so a reply without one answers
/// no request of this session, unless requests went without an id
/// ([`ClientOptions::in_order`]) and it is the turn of one of them: QEMU
/// 7.2 passes the reply to a command of a client that disconnected before
/// it came on to the next client (before the reply to that client's
/// `qmp_capabilities`, which always has its id). Such a reply is dropped
/// with this warning (and the reply).
pub const STRAY_REPLY: &str = "ignoring a reply without an id: it answers no request of this \
     session (QEMU passes on the late reply of a client that disconnected)";

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
    /// Run the connection on the caller's thread: no reader or writer
    /// thread; whoever waits on the client (a [`Pending`], the handshake,
    /// [`next_incoming`](Client::next_incoming), [`Client::drive`]) sends
    /// and reads meanwhile. For a program with one thread (a one-command
    /// session): nothing starts, no reply crosses threads. Taps, callbacks
    /// and the notification then run on the thread that waits. UNIX and
    /// TCP sockets only ([`Client::connect`], [`Client::from_unix_stream`],
    /// [`Client::from_tcp_stream`]), and not with `guest_sync`; other
    /// transports ignore it. Default: off.
    pub inline: bool,
    /// For an inline client: a descriptor its waits watch, and whether its
    /// becoming readable means "give up" ([`Error::Interrupted`]), for a
    /// signal's self-pipe. The start of the session is given up too.
    pub interrupt: Option<Interrupt>,
    /// Called once with the server's greeting, as soon as the
    /// capabilities negotiation is on its way (before its reply is
    /// awaited), for work that can overlap that round trip: reading what
    /// the caller keeps about this server, say. Not called when no
    /// greeting is read.
    pub on_greeting: Option<GreetingHook>,
    /// Once negotiated without out-of-band execution, send in-band
    /// requests without the ids the client gives them, and take a reply
    /// without an id for the answer to the oldest of them: a QMP monitor
    /// then answers in order, and each byte of a command costs QEMU time
    /// before it answers (about 7 µs a byte with QEMU 7.2: an id adds a
    /// fifth to the round trip of a short command). `qmp_capabilities`
    /// keeps its id: a reply QEMU passes on from a client that left comes
    /// before its reply, and is told apart by that (see [`STRAY_REPLY`]).
    /// Ids a request has when submitted are sent as ever. Default: off.
    pub in_order: bool,
}

/// See [`ClientOptions::on_greeting`].
pub type GreetingHook = Box<dyn FnOnce(&Greeting) + Send>;

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
            inline: false,
            interrupt: None,
            on_greeting: None,
            in_order: false,
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
            .field("inline", &self.inline)
            .field("interrupt", &self.interrupt)
            .field("on_greeting", &self.on_greeting.as_ref().map(|_| "..."))
            .field("in_order", &self.in_order)
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

/// A request to send: a message, and how to send it.
#[derive(Debug)]
pub struct Request {
    msg: Object,
    fds: Vec<OwnedFd>,
    logged: bool,
    text: bool,
}

impl Request {
    /// A request for `msg` (a command object; an `"id"` is added when it
    /// has none).
    pub fn new(msg: Object) -> Request {
        Request {
            msg,
            fds: Vec::new(),
            logged: true,
            text: false,
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

    /// Let a large successful reply come as the text it arrived as
    /// ([`Reply::text`](crate::Reply::text)), its `"return"` read only
    /// when asked for: for a caller that prints the reply from its text.
    pub fn text_reply(mut self) -> Request {
        self.text = true;
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

/// A connected QMP client. `Send + Sync`: share it with `Arc`.
pub struct Client {
    shared: Arc<Shared>,
    syncer: Option<Syncer>,
    greeting: Option<Greeting>,
    oob: bool,
    passes_fds: bool,
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
                    None => Err(handshake::not_accepted(&opts)),
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
                    None => Err(handshake::not_accepted(&opts)),
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
        if opts.inline && !opts.guest_sync {
            return Client::open_inline(s.into(), true, opts, Instant::now());
        }
        let t = StreamTransport::unix(s)?
            .max_message(opts.max_message)
            .delimiters(opts.guest_sync);
        Client::open(Box::new(t), opts)
    }

    /// Use an already connected TCP socket.
    pub fn from_tcp_stream(s: TcpStream, opts: ClientOptions) -> Result<Client, Error> {
        if opts.inline && !opts.guest_sync {
            // Commands are small and latency matters more than packet count.
            let _ = s.set_nodelay(true);
            return Client::open_inline(s.into(), false, opts, Instant::now());
        }
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
        let (seq, id) = self.shared.update(|p| p.submit(request, None))?;
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
        let reply_to = Callback(Box::new(on_reply));
        self.shared
            .update(|p| p.submit(request, Some(reply_to)))
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
        let (id, tap) = self.shared.taps.add(f);
        if !self.is_connected() {
            tap.closed();
        }
        EventTap {
            shared: Arc::downgrade(&self.shared),
            id,
        }
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
        let mut p = lock(&self.shared.state);
        std::iter::from_fn(|| p.pop_incoming()).collect()
    }

    /// Take the queued warnings and late replies, leaving events queued
    /// (for a shell that prints events only when asked).
    pub fn drain_notices(&self) -> Vec<Incoming> {
        let mut p = lock(&self.shared.state);
        std::iter::from_fn(|| p.pop_notice()).collect()
    }

    /// Wait up to `timeout` (`None`: forever) for the next queued item.
    /// Returns `None` on timeout, or at once when the queue is empty and the
    /// connection is closed.
    pub fn next_incoming(&self, timeout: Option<Duration>) -> Option<Incoming> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut p = lock(&self.shared.state);
        loop {
            if let Some(item) = p.pop_incoming() {
                return Some(item);
            }
            if p.is_closed() {
                return None;
            }
            let (q, waited) = self.shared.wait(&self.shared.incoming, p, deadline);
            if waited != Waited::Again {
                return None;
            }
            p = q;
        }
    }

    /// Whether the connection runs on the threads that wait on it
    /// ([`ClientOptions::inline`]).
    pub fn is_inline(&self) -> bool {
        self.shared.inline.is_some()
    }

    /// For an inline client ([`ClientOptions::inline`]): do its I/O on this
    /// thread until something arrives from the server (routed: replies
    /// stored, callbacks, taps and the notification run here), `deadline`
    /// passes, or one of `watch` becomes readable (a doorbell's pipe, say);
    /// then return, also on a signal. Returns `true` when the
    /// [`Interrupt`] said to stop. A threaded client returns `false` at
    /// once: its threads do the I/O.
    pub fn drive(&self, deadline: Option<Instant>, watch: &[std::os::fd::RawFd]) -> bool {
        self.shared.drive(deadline, watch).0 == Waited::Interrupted
    }

    /// For an inline client ([`ClientOptions::inline`]): send what is
    /// queued for the server now, as far as the socket takes it without
    /// waiting, so that the server works on it while this thread does
    /// something else before its next [`drive`](Client::drive) (writes its
    /// output, say). Does nothing while another thread drives, nor for a
    /// threaded client, whose writer sends at once.
    pub fn send_queued(&self) {
        self.shared.send_queued();
    }

    /// Register a callback run (on the client's threads) whenever a reply
    /// arrives, something is queued for
    /// [`drain_incoming`](Client::drain_incoming), or the connection drops.
    /// Keep it cheap; it must not block on this client.
    pub fn set_notify(&self, f: Arc<dyn Fn() + Send + Sync>) {
        self.shared.set_notify(f);
    }

    /// `false` once the connection is closed (by either side).
    pub fn is_connected(&self) -> bool {
        !lock(&self.shared.state).is_closed()
    }

    /// Why the connection ended, when the transport gave a reason (ssh's
    /// message, say).
    pub fn end_reason(&self) -> Option<String> {
        lock(&self.shared.state).end_reason()
    }

    /// Requests submitted and not answered yet.
    pub fn in_flight(&self) -> usize {
        lock(&self.shared.state).in_flight()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::testing::*;

    #[test]
    fn client_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Client>();
        check::<Pending>();
    }

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
}
