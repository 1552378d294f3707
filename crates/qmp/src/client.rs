//! A blocking QMP client with a reader thread.
//!
//! [`Client`] writes commands from the caller's thread and reads everything the
//! server sends on a background thread, which routes replies to the requests
//! waiting for them ([`Pending`]) and queues events and warnings
//! ([`Incoming`]). Many requests may be in flight at once (pipelining).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::address::Address;
use crate::framing::{encode, truncate, Decoder, FrameError};
use crate::message::{command, Event, Greeting, Message, Object, Reply};

/// Size of each read from the socket.
const READ_CHUNK: usize = 16 * 1024;

/// How much of an unexpected message goes into warnings and errors.
const TEXT_IN_MESSAGES: usize = 200;

/// Options for [`Client`] construction.
pub struct ClientOptions {
    /// Expect a greeting first (`false` for qemu-ga, which sends none).
    pub read_greeting: bool,
    /// Send `qmp_capabilities` after the greeting (`false` for qemu-ga).
    pub negotiate: bool,
    /// How long to wait for the greeting, and then for the `qmp_capabilities`
    /// reply. `None` waits forever. Default: 10 seconds.
    pub greeting_timeout: Option<Duration>,
    /// Largest message accepted from the server, in bytes. Default: 256 MiB.
    pub max_message: usize,
    /// Where to log traffic: every message sent (compact JSON, exactly as
    /// sent) and received (raw text, trailing whitespace trimmed), one per
    /// line, flushed after each line. Write errors are ignored.
    pub log: Option<Box<dyn Write + Send>>,
    /// Resynchronise with a guest agent before anything else: send a `0xFF`
    /// byte and `guest-sync-delimited`, drop every byte up to the `0xFF` the
    /// agent puts before its reply, and every reply until the one carrying
    /// our sync id. Stale bytes left in the channel are thus discarded.
    /// Bounded by `greeting_timeout`. Default: off.
    pub guest_sync: bool,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            read_greeting: true,
            negotiate: true,
            greeting_timeout: Some(Duration::from_secs(10)),
            max_message: 256 << 20,
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
            .field("greeting_timeout", &self.greeting_timeout)
            .field("max_message", &self.max_message)
            .field("log", &self.log.as_ref().map(|_| "..."))
            .finish()
    }
}

/// Something the reader thread queued besides replies.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// An asynchronous event.
    Event(Event),
    /// Something unexpected that did not belong to any request: an undecodable
    /// frame, a reply with an unknown id, an unknown kind of message.
    Warning(String),
}

/// Errors of [`Client`] operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error, e.g. while connecting. OS errors display Python-style:
    /// `[Errno 2] No such file or directory`.
    #[error("{}", python_io_error(.0))]
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
}

/// Format an I/O error like Python's `OSError.__str__`: `[Errno N] strerror`
/// for OS errors, Rust's text otherwise.
pub fn python_io_error(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => {
            let text = io::Error::from_raw_os_error(code).to_string();
            let suffix = format!(" (os error {code})");
            let text = text.strip_suffix(&suffix).unwrap_or(&text);
            format!("[Errno {code}] {text}")
        }
        None => err.to_string(),
    }
}

/// A connected socket of either kind.
#[derive(Debug)]
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }

    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tcp(s) => s.set_read_timeout(t),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.write_all(buf),
            Stream::Tcp(s) => s.write_all(buf),
        }
    }
}

/// A request waiting for its reply, in send order.
#[derive(Debug)]
struct Waiter {
    seq: u64,
    id: Value,
    assigned: bool,
    /// The caller gave up (timed out or dropped its [`Pending`]).
    abandoned: bool,
}

#[derive(Debug, Default)]
struct State {
    connected: bool,
    /// Outstanding requests, oldest first.
    waiting: VecDeque<Waiter>,
    /// Results not yet collected, by request sequence number.
    done: Vec<(u64, Result<Reply, Error>)>,
    incoming: VecDeque<Incoming>,
}

type Notify = Arc<dyn Fn() + Send + Sync>;
type Log = Box<dyn Write + Send>;

struct Shared {
    state: Mutex<State>,
    /// Signalled when a result is stored or the connection drops.
    replies: Condvar,
    /// Signalled when something is queued in `incoming` or the connection drops.
    incoming: Condvar,
    notify: Mutex<Option<Notify>>,
    log: Mutex<Option<Log>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

    fn notify(&self) {
        let f = lock(&self.notify).clone();
        if let Some(f) = f {
            f();
        }
    }

    fn queue(&self, item: Incoming) {
        lock(&self.state).incoming.push_back(item);
        self.incoming.notify_all();
        self.notify();
    }

    /// Mark the connection closed and fail every outstanding request.
    fn disconnect(&self) {
        {
            let mut st = lock(&self.state);
            if !st.connected && st.waiting.is_empty() {
                return;
            }
            st.connected = false;
            let waiting = std::mem::take(&mut st.waiting);
            for w in waiting {
                if !w.abandoned {
                    st.done.push((w.seq, Err(Error::Disconnected)));
                }
            }
        }
        self.replies.notify_all();
        self.incoming.notify_all();
        self.notify();
    }

    /// Route one decoded frame.
    fn route(&self, frame: Result<Object, FrameError>) {
        match frame {
            Ok(obj) => match Message::classify(obj) {
                Message::Reply(reply) => self.route_reply(reply),
                Message::Event(ev) => self.queue(Incoming::Event(ev)),
                Message::Greeting(g) => self.queue(Incoming::Warning(format!(
                    "ignoring unexpected greeting: {}",
                    compact(&g.body)
                ))),
                Message::Other(obj) => self.queue(Incoming::Warning(format!(
                    "ignoring unexpected message: {}",
                    compact(&obj)
                ))),
            },
            Err(e) => {
                let reason = e.to_string();
                let delivered = {
                    let mut st = lock(&self.state);
                    match st.waiting.pop_front() {
                        Some(w) => {
                            if !w.abandoned {
                                st.done.push((w.seq, Err(Error::Protocol(reason.clone()))));
                            }
                            true
                        }
                        None => false,
                    }
                };
                if delivered {
                    self.replies.notify_all();
                } else {
                    self.queue(Incoming::Warning(reason));
                }
            }
        }
    }

    fn route_reply(&self, mut reply: Reply) {
        let mut st = lock(&self.state);
        let index = match reply.id() {
            None => (!st.waiting.is_empty()).then_some(0),
            Some(id) => st.waiting.iter().position(|w| same_id(&w.id, id)),
        };
        match index.and_then(|i| st.waiting.remove(i)) {
            Some(w) => {
                if !w.abandoned {
                    reply.assigned_id = w.assigned;
                    st.done.push((w.seq, Ok(reply)));
                    drop(st);
                    self.replies.notify_all();
                }
            }
            None if !st.connected => {}
            None => {
                drop(st);
                let what = match reply.id() {
                    Some(id) => format!("ignoring reply with unknown id {}", compact_value(id)),
                    None => "ignoring reply with no request pending".to_owned(),
                };
                self.queue(Incoming::Warning(format!(
                    "{what}: {}",
                    compact(&reply.body)
                )));
            }
        }
    }
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

/// The writing side, serialized by a mutex so that the order of requests in
/// `State::waiting` is the order on the wire.
struct Writer {
    stream: Stream,
    next_id: u64,
}

/// A connected QMP client. `Send + Sync`: share it with `Arc`.
pub struct Client {
    shared: Arc<Shared>,
    writer: Mutex<Writer>,
    /// A handle used only to shut the socket down.
    control: Stream,
    greeting: Option<Greeting>,
    reader: Mutex<Option<JoinHandle<()>>>,
    reader_id: Option<ThreadId>,
    next_seq: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("greeting", &self.greeting)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

/// A request that was sent and whose reply has not been collected yet.
///
/// Dropping it without waiting is fine: its reply is discarded on arrival.
pub struct Pending {
    shared: Arc<Shared>,
    seq: u64,
    id: Value,
    finished: bool,
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
    /// The id used to route the reply (the caller's, or the one assigned).
    pub fn id(&self) -> &Value {
        &self.id
    }

    /// Wait for the reply, up to `timeout` (`None`: forever, or until the
    /// connection drops). On [`Error::Timeout`] the request is abandoned and a
    /// late reply is discarded.
    pub fn wait(mut self, timeout: Option<Duration>) -> Result<Reply, Error> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut st = lock(&self.shared.state);
        loop {
            if let Some(i) = st.done.iter().position(|(s, _)| *s == self.seq) {
                let (_, result) = st.done.swap_remove(i);
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
                    st = self
                        .shared
                        .replies
                        .wait(st)
                        .unwrap_or_else(|e| e.into_inner());
                }
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        drop(st);
                        // Drop marks the request abandoned.
                        return Err(Error::Timeout(timeout.unwrap_or_default()));
                    }
                    st = self
                        .shared
                        .replies
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut st = lock(&self.shared.state);
        if let Some(w) = st.waiting.iter_mut().find(|w| w.seq == self.seq) {
            w.abandoned = true;
        }
        st.done.retain(|(s, _)| *s != self.seq);
    }
}

impl Client {
    /// Connect to `addr`, then read the greeting and negotiate as `opts` says.
    pub fn connect(addr: &Address, opts: ClientOptions) -> Result<Client, Error> {
        match addr {
            Address::Unix(path) => Client::from_unix_stream(UnixStream::connect(path)?, opts),
            Address::Tcp { host, port } => {
                let host = if host.is_empty() { "localhost" } else { host };
                Client::from_tcp_stream(TcpStream::connect((host, *port))?, opts)
            }
            // Reached through `transport::ssh`, which this client does not
            // use yet (it runs on sockets, not on a `Transport`).
            Address::Ssh { .. } => Err(Error::Io(io::Error::new(
                io::ErrorKind::Unsupported,
                "ssh:// addresses need the transport-based client",
            ))),
        }
    }

    /// Use an already connected UNIX socket (e.g. from [`crate::Listener`]).
    pub fn from_unix_stream(s: UnixStream, opts: ClientOptions) -> Result<Client, Error> {
        Client::start(Stream::Unix(s), opts)
    }

    /// Use an already connected TCP socket.
    pub fn from_tcp_stream(s: TcpStream, opts: ClientOptions) -> Result<Client, Error> {
        Client::start(Stream::Tcp(s), opts)
    }

    fn start(stream: Stream, mut opts: ClientOptions) -> Result<Client, Error> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                connected: true,
                ..State::default()
            }),
            replies: Condvar::new(),
            incoming: Condvar::new(),
            notify: Mutex::new(None),
            log: Mutex::new(opts.log.take()),
        });
        let mut decoder = Decoder::new(opts.max_message);
        let mut read_stream = stream.try_clone()?;
        let control = stream.try_clone()?;

        let greeting = if opts.read_greeting {
            let g = read_greeting(
                &mut read_stream,
                &mut decoder,
                &shared,
                opts.greeting_timeout,
            );
            if g.is_err() {
                control.shutdown();
            }
            Some(g?)
        } else {
            None
        };
        if opts.guest_sync {
            let mut writer = stream.try_clone()?;
            let synced = guest_sync(
                &mut writer,
                &mut read_stream,
                &mut decoder,
                &shared,
                opts.greeting_timeout,
            );
            if synced.is_err() {
                control.shutdown();
            }
            synced?;
        }
        read_stream.set_read_timeout(None)?;

        let reader_shared = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name("qmp-reader".to_owned())
            .spawn(move || reader_loop(read_stream, decoder, &reader_shared))?;
        let reader_id = Some(handle.thread().id());

        let client = Client {
            shared,
            writer: Mutex::new(Writer { stream, next_id: 1 }),
            control,
            greeting,
            reader: Mutex::new(Some(handle)),
            reader_id,
            next_seq: AtomicU64::new(1),
        };

        if opts.negotiate {
            match client.execute("qmp_capabilities", None, opts.greeting_timeout) {
                Ok(reply) if reply.ret().is_some() => {}
                Ok(reply) => {
                    let why = reply
                        .error_desc()
                        .map(str::to_owned)
                        .unwrap_or_else(|| compact(&reply.body));
                    return Err(Error::Negotiation(why));
                }
                Err(Error::Timeout(_)) => {
                    return Err(Error::Negotiation(
                        "timed out waiting for the qmp_capabilities reply".to_owned(),
                    ))
                }
                Err(Error::Disconnected) => {
                    return Err(Error::Negotiation(
                        "connection closed during capabilities negotiation".to_owned(),
                    ))
                }
                Err(e) => return Err(Error::Negotiation(e.to_string())),
            }
        }
        Ok(client)
    }

    /// The server's greeting (`None` when `read_greeting` was off).
    pub fn greeting(&self) -> Option<&Greeting> {
        self.greeting.as_ref()
    }

    /// Write one message and return at once; many may be in flight.
    ///
    /// If `msg` has no `"id"`, the client adds a unique integer id (counting
    /// from 1) and the reply gets `assigned_id = true`. Otherwise the given
    /// id routes the reply. Should a user id equal an assigned one, replies
    /// still pair correctly: QMP answers in order, and a reply goes to the
    /// oldest request waiting for its id.
    ///
    /// An empty `"arguments": {}` is left out on the wire: QMP treats it as
    /// absent, and QEMU's time per command grows with the bytes it parses
    /// (short messages keep pipelined scripts near the raw-socket limit).
    pub fn send(&self, mut msg: Object) -> Result<Pending, Error> {
        if msg
            .get("arguments")
            .and_then(Value::as_object)
            .is_some_and(|a| a.is_empty())
        {
            msg.shift_remove("arguments");
        }
        let mut writer = lock(&self.writer);
        let (id, assigned) = match msg.get("id") {
            Some(id) => (id.clone(), false),
            None => {
                let id = Value::from(writer.next_id);
                writer.next_id += 1;
                msg.insert("id".to_owned(), id.clone());
                (id, true)
            }
        };
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        {
            let mut st = lock(&self.shared.state);
            if !st.connected {
                return Err(Error::Disconnected);
            }
            st.waiting.push_back(Waiter {
                seq,
                id: id.clone(),
                assigned,
                abandoned: false,
            });
        }
        let pending = Pending {
            shared: Arc::clone(&self.shared),
            seq,
            id,
            finished: false,
        };
        let bytes = encode(&msg);
        self.shared.log_line(&bytes[..bytes.len() - 1]);
        match writer.stream.write_all(&bytes) {
            Ok(()) => Ok(pending),
            Err(e) => {
                drop(pending);
                let mut st = lock(&self.shared.state);
                st.waiting.retain(|w| w.seq != seq);
                if !st.connected
                    || matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::NotConnected
                    )
                {
                    Err(Error::Disconnected)
                } else {
                    Err(Error::Io(e))
                }
            }
        }
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

    /// Take everything queued so far (events and warnings), in arrival order.
    pub fn drain_incoming(&self) -> Vec<Incoming> {
        lock(&self.shared.state).incoming.drain(..).collect()
    }

    /// Wait up to `timeout` (`None`: forever) for the next queued item.
    /// Returns `None` on timeout, or at once when the queue is empty and the
    /// connection is closed.
    pub fn next_incoming(&self, timeout: Option<Duration>) -> Option<Incoming> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut st = lock(&self.shared.state);
        loop {
            if let Some(item) = st.incoming.pop_front() {
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

    /// Register a callback run on the reader thread whenever something is
    /// queued for [`drain_incoming`](Client::drain_incoming), and once when the
    /// connection drops. Keep it cheap; it must not block on this client's
    /// replies.
    pub fn set_incoming_notify(&self, f: Box<dyn Fn() + Send + Sync>) {
        *lock(&self.shared.notify) = Some(Arc::from(f));
    }

    /// `false` once the connection is closed (by either side).
    pub fn is_connected(&self) -> bool {
        lock(&self.shared.state).connected
    }

    /// Shut the socket down. Waiting requests get [`Error::Disconnected`].
    pub fn close(&self) {
        self.control.shutdown();
        self.shared.disconnect();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
        let handle = lock(&self.reader).take();
        if let Some(handle) = handle {
            // The last reference may be dropped by the notify callback on the
            // reader thread itself; never join ourselves.
            if Some(thread::current().id()) != self.reader_id {
                let _ = handle.join();
            }
        }
    }
}

/// One read bounded by `deadline`: `Some(n)` bytes (`Some(0)` at end of
/// stream), `None` once the deadline has passed. Interrupted reads are retried.
fn read_some(
    stream: &mut Stream,
    buf: &mut [u8],
    deadline: Option<Instant>,
) -> Result<Option<usize>, Error> {
    loop {
        match deadline {
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(None);
                }
                stream.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))?;
            }
            None => stream.set_read_timeout(None)?,
        }
        match stream.read(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(Error::Io(e)),
        }
    }
}

/// The guest agent's resynchronisation (see [`ClientOptions::guest_sync`]).
fn guest_sync(
    writer: &mut Stream,
    stream: &mut Stream,
    decoder: &mut Decoder,
    shared: &Shared,
    timeout: Option<Duration>,
) -> Result<(), Error> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let id = i64::from(std::process::id()) << 20 ^ i64::from(nanos >> 10);
    let mut args = Object::new();
    args.insert("id".to_owned(), Value::from(id));
    let msg = crate::message::command("guest-sync-delimited", Some(args));
    let encoded = encode(&msg);
    shared.log_line(&encoded[..encoded.len().saturating_sub(1)]);
    writer.write_all(b"\xff")?;
    writer.write_all(&encoded)?;
    let failed = |why: &str| Error::Negotiation(format!("guest agent resynchronisation: {why}"));
    let mut buf = vec![0u8; READ_CHUNK];
    // Everything before the agent's 0xFF sentinel is stale: drop it.
    loop {
        let n = match read_some(stream, &mut buf, deadline)? {
            None => return Err(failed("timed out waiting for the 0xFF delimiter")),
            Some(0) => return Err(failed("connection closed")),
            Some(n) => n,
        };
        if let Some(at) = buf[..n].iter().position(|b| *b == 0xff) {
            decoder.feed(&buf[at + 1..n]);
            break;
        }
    }
    // Then replies, until the one with our id (older ones are stale too).
    loop {
        while let Some(frame) = decoder.next_message_with_raw(&mut |raw| shared.log_line(raw)) {
            if let Ok(obj) = frame {
                if let Some(ret) = obj.get("return") {
                    if ret.as_i64() == Some(id) {
                        return Ok(());
                    }
                }
            }
        }
        match read_some(stream, &mut buf, deadline)? {
            None => {
                return Err(failed(
                    "timed out waiting for the guest-sync-delimited reply",
                ))
            }
            Some(0) => return Err(failed("connection closed")),
            Some(n) => decoder.feed(&buf[..n]),
        }
    }
}

fn read_greeting(
    stream: &mut Stream,
    decoder: &mut Decoder,
    shared: &Shared,
    timeout: Option<Duration>,
) -> Result<Greeting, Error> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let timed_out = || Error::NoGreeting("timed out waiting for the greeting".to_owned());
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        if let Some(frame) = decoder.next_message_with_raw(&mut |raw| shared.log_line(raw)) {
            return match frame {
                Ok(obj) => match Message::classify(obj) {
                    Message::Greeting(g) => Ok(g),
                    Message::Reply(Reply { body, .. })
                    | Message::Event(crate::Event { body })
                    | Message::Other(body) => Err(Error::NoGreeting(format!(
                        "expected a QMP greeting, got: {}",
                        compact(&body)
                    ))),
                },
                Err(e) => Err(Error::NoGreeting(format!(
                    "expected a QMP greeting, got: {e}"
                ))),
            };
        }
        match read_some(stream, &mut buf, deadline)? {
            None => return Err(timed_out()),
            Some(0) => {
                return Err(Error::NoGreeting(
                    "connection closed before the greeting".to_owned(),
                ))
            }
            Some(n) => decoder.feed(&buf[..n]),
        }
    }
}

fn reader_loop(mut stream: Stream, mut decoder: Decoder, shared: &Shared) {
    let mut buf = vec![0u8; READ_CHUNK];
    // Frames already buffered (sent right after the greeting) come first.
    loop {
        while let Some(frame) = decoder.next_message_with_raw(&mut |raw| shared.log_line(raw)) {
            shared.route(frame);
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => decoder.feed(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    shared.disconnect();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Client>();
        check::<Pending>();
    }

    #[test]
    fn io_errors_display_python_style() {
        let e = Error::Io(io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(e.to_string(), "[Errno 2] No such file or directory");
        let e = Error::Io(io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert_eq!(e.to_string(), "[Errno 111] Connection refused");
        let e = Error::Io(io::Error::other("custom"));
        assert_eq!(e.to_string(), "custom");
        assert_eq!(Error::Disconnected.to_string(), "Disconnected");
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
        while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
            out.push(b[0]);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn idless_reply_and_garbage_go_to_oldest_and_unknown_ids_warn() {
        let client = pair(no_handshake(), |mut s| {
            read_line(&mut s);
            read_line(&mut s);
            read_line(&mut s);
            s.write_all(b"{\"return\": {}, \"id\": \"nope\"}\r\n")
                .unwrap();
            s.write_all(b"{\"event\": \"X\"}\r\n").unwrap();
            s.write_all(
                b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}\r\n",
            )
            .unwrap();
            s.write_all(b"this is garbage\r\n").unwrap();
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
        let t = Some(Duration::from_secs(10));
        let r1 = p1.wait(t).unwrap();
        assert_eq!(r1.error_desc(), Some("JSON parse error"));
        assert!(matches!(p2.wait(t), Err(Error::Protocol(_))));
        let r3 = p3.wait(t).unwrap();
        assert!(!r3.assigned_id);
        assert_eq!(r3.ret(), Some(&Value::from(3)));
        let inc = client.drain_incoming();
        assert_eq!(inc.len(), 2, "{inc:?}");
        assert!(matches!(&inc[0], Incoming::Warning(w) if w.contains("unknown id \"nope\"")));
        assert!(matches!(&inc[1], Incoming::Event(e) if e.name() == Some("X")));
        client.close();
        assert!(matches!(
            client.send(command("d", None)),
            Err(Error::Disconnected)
        ));
        assert!(client.next_incoming(None).is_none());
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

    #[test]
    fn timeout_then_late_reply_is_discarded() {
        let client = pair(no_handshake(), |mut s| {
            read_line(&mut s);
            thread::sleep(Duration::from_millis(300));
            s.write_all(b"{\"return\": 1}\r\n").unwrap();
            read_line(&mut s);
            s.write_all(b"{\"return\": 2}\r\n").unwrap();
            let _ = s.read_to_end(&mut Vec::new());
        });
        let r = client.execute("a", None, Some(Duration::from_millis(50)));
        assert!(matches!(r, Err(Error::Timeout(_))));
        thread::sleep(Duration::from_millis(400));
        let r = client
            .execute("b", None, Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(r.ret(), Some(&Value::from(2)));
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
        assert_eq!(e.to_string(), "timed out waiting for the greeting");

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
    fn negotiation_refused() {
        let (a, mut b) = UnixStream::pair().unwrap();
        thread::spawn(move || {
            b.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
                .unwrap();
            read_line(&mut b);
            b.write_all(b"{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"nope\"}}\r\n")
                .unwrap();
            let _ = b.read_to_end(&mut Vec::new());
        });
        let e = Client::from_unix_stream(a, ClientOptions::default()).unwrap_err();
        assert!(matches!(&e, Error::Negotiation(d) if d == "nope"), "{e:?}");
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
            out.extend_from_slice(b"{\"return\": {}}\r\n");
            s.write_all(&out).unwrap();
            let _ = s.read_to_end(&mut Vec::new());
        });
        let start = Instant::now();
        let r = client
            .execute("x", None, Some(Duration::from_secs(30)))
            .unwrap();
        assert!(r.ret().is_some());
        assert!(start.elapsed() < Duration::from_secs(10));
        assert_eq!(client.drain_incoming().len(), 20000);
    }
}
