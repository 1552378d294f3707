//! One QMP monitor, many clients: a router that serves any number of QMP
//! sessions on a UNIX socket on top of one upstream [`Client`].
//!
//! QEMU serves one client per monitor. The router holds that one
//! connection (a [`Client`], which someone else may use at the same time:
//! `qmp-shell-wrap --serve` runs its own shell on it) and gives each
//! client that connects to its socket a full QMP session of its own:
//!
//! * **Greeting and negotiation.** A client gets the upstream's greeting,
//!   offering `oob` only when the upstream negotiated it. Until it sends a
//!   valid `qmp_capabilities`, every command gets the error QEMU gives
//!   (`CommandNotFound`, "Expecting capabilities negotiation with
//!   'qmp_capabilities'"); the router answers those itself, as it does
//!   anything QEMU would refuse without dispatching: input that is not a
//!   JSON object, and `exec-oob` from a client that did not enable `oob`.
//!   A later `qmp_capabilities` goes to QEMU, which refuses it in its own
//!   words.
//! * **Commands** are forwarded with their id removed, so that the
//!   upstream client assigns one of its own ([`Client::submit_with`]); the
//!   reply gets the client's id back (any JSON value, as the client sent
//!   it; no id if it sent none) and goes to that client only.
//!   Each client gets its replies in the order of its requests, as QEMU
//!   gives them: an error the router answers itself waits for the replies
//!   to the commands sent before it; only what QEMU takes for an
//!   out-of-band command (`exec-oob` without `execute`) is answered as
//!   soon as its reply comes.
//!   `exec-oob` passes through (to a client that enabled `oob`). File
//!   descriptors sent with a command (SCM_RIGHTS) are forwarded with it
//!   when the upstream is a UNIX socket; otherwise the command gets a
//!   `GenericError`.
//! * **Events** go to every client that has negotiated, in the order QEMU
//!   sent them relative to that client's replies ([`Client::tap_events`]).
//! * **Clients that go away** mid-command disturb nobody: their late
//!   replies are dropped. A client that half-closes (shuts down writing)
//!   still gets the replies to what it sent, then the connection closes,
//!   as with QEMU.
//! * **When the upstream goes away**, each client gets what was already
//!   queued for it (the reply to `quit` and the `SHUTDOWN` event, say),
//!   then its connection is closed; new connections are closed at once.
//!
//! Messages to clients are written as QEMU writes them (`", "` and `": "`
//! separators, non-ASCII as `\uXXXX`, `\r\n` after each).
//!
//! # Threads and backpressure
//!
//! One thread accepts connections. Each client has a reader thread
//! (socket → upstream) and a writer thread (its output queue → socket).
//! Replies and events are put in a client's queue by the upstream
//! client's reader thread, which never blocks on a client: a client whose
//! queue holds more than [`RouterOptions::max_queued_bytes`] (it does not
//! read) is disconnected. A client with
//! [`RouterOptions::max_in_flight`] commands unanswered is not read from
//! until one is answered, so no client can flood the shared monitor.
//! [`Router::stop`] (or dropping the router) closes every connection and
//! ends every thread.
//!
//! # Security
//!
//! Whoever can connect to the socket controls the VM, as with QEMU's own
//! socket. [`ServeSocket`] creates it with mode 0600.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use qmp_client::router::{Router, RouterOptions};
//! use qmp_client::{Address, Client, ClientOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let addr: Address = "/run/vm/qmp.sock".parse()?;
//! let client = Arc::new(Client::connect(&addr, ClientOptions::default())?);
//! let router = Router::serve(Arc::clone(&client), "/run/vm/shared.sock".as_ref(),
//!                            RouterOptions::default())?;
//! // ... any number of QMP clients use /run/vm/shared.sock ...
//! router.stop();
//! # Ok(())
//! # }
//! ```

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::client::{Client, EventTap, Request, Tapped};
use crate::framing::{Decoder, FrameError};
use crate::message::{self, Object};
use crate::plumbing::{lock, pipe};

use self::downstream::{Chunk, Downstream, Out};

mod downstream;
mod socket;
pub(crate) mod wire;

pub use socket::ServeSocket;

/// Clients served at once by default; more are closed at once.
pub const DEFAULT_MAX_CLIENTS: usize = 64;

/// Largest message accepted from a client by default (QEMU's own limit on
/// a JSON token).
pub const DEFAULT_MAX_MESSAGE: usize = 64 << 20;

/// Bytes queued for a client by default before it is deemed not to read
/// and is disconnected.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 64 << 20;

/// Commands of one client unanswered at most by default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// Bytes read from a client at a time.
const READ_CHUNK: usize = 64 << 10;

/// Limits of a [`Router`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterOptions {
    /// Clients served at once; a connection beyond it is closed at once.
    pub max_clients: usize,
    /// Largest message accepted from a client, in bytes; a larger one is
    /// discarded and answered with an error.
    pub max_message: usize,
    /// Bytes queued for a client that does not read, at most; beyond it
    /// the client is disconnected. One message is always accepted into an
    /// empty queue, however large.
    pub max_queued_bytes: usize,
    /// Commands of one client forwarded and unanswered at most; its socket
    /// is not read while it has that many.
    pub max_in_flight: usize,
}

impl Default for RouterOptions {
    fn default() -> RouterOptions {
        RouterOptions {
            max_clients: DEFAULT_MAX_CLIENTS,
            max_message: DEFAULT_MAX_MESSAGE,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// Serves QMP clients on top of one upstream [`Client`]. See the
/// [module documentation](self).
pub struct Router {
    inner: Arc<Inner>,
    listening: Option<Listening>,
    tap: Option<EventTap>,
}

/// The socket of a router that has one, and its accept thread.
struct Listening {
    socket: Arc<ServeSocket>,
    accept: JoinHandle<()>,
    /// Wakes the accept thread (the write end of a pipe).
    wake: OwnedFd,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("path", &self.path())
            .field("clients", &self.clients())
            .finish_non_exhaustive()
    }
}

/// A function told of each client turned away ([`Router::on_turned_away`]).
type TurnedAway = Arc<dyn Fn(&str) + Send + Sync>;

/// What the router's threads share.
struct Inner {
    client: Arc<Client>,
    opts: RouterOptions,
    /// The greeting for clients, encoded.
    greeting: Arc<[u8]>,
    conns: Mutex<Conns>,
    /// Signalled when a client leaves.
    left: Condvar,
    turned_away: Mutex<Option<TurnedAway>>,
}

#[derive(Default)]
struct Conns {
    /// Clients connected (removed when their writer ends).
    list: Vec<Arc<Downstream>>,
    /// Threads of the accept loop's connections, joined on stop.
    threads: Vec<JoinHandle<()>>,
    stopping: bool,
    upstream_closed: bool,
}

impl Router {
    /// Bind `path` ([`ServeSocket::bind`]: mode 0600, no symlinks, only a
    /// stale socket replaced) and serve clients there on top of `client`,
    /// which must be a negotiated QMP session.
    pub fn serve(client: Arc<Client>, path: &Path, opts: RouterOptions) -> io::Result<Router> {
        let socket = ServeSocket::bind(path)?;
        Router::serve_socket(client, socket, opts)
    }

    /// Serve clients on an already bound `socket` (removed when the router
    /// stops).
    pub fn serve_socket(
        client: Arc<Client>,
        socket: ServeSocket,
        opts: RouterOptions,
    ) -> io::Result<Router> {
        let mut router = Router::new(client, opts);
        let socket = Arc::new(socket);
        let (read_end, write_end) = pipe(libc::O_NONBLOCK)?;
        let inner = Arc::clone(&router.inner);
        let listening = Arc::clone(&socket);
        let accept = thread::Builder::new()
            .name("qmp-router-accept".to_owned())
            .spawn(move || accept_loop(&inner, &listening, &read_end))?;
        router.listening = Some(Listening {
            socket,
            accept,
            wake: write_end,
        });
        Ok(router)
    }

    /// A router with no socket of its own: clients come through
    /// [`attach`](Router::attach) only.
    pub fn new(client: Arc<Client>, opts: RouterOptions) -> Router {
        let greeting =
            wire::encode(&wire::greeting(client.greeting(), client.oob_enabled())).into();
        let inner = Arc::new(Inner {
            client: Arc::clone(&client),
            opts,
            greeting,
            conns: Mutex::new(Conns::default()),
            left: Condvar::new(),
            turned_away: Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner);
        let tap = client.tap_events(move |tapped| {
            if let Some(inner) = weak.upgrade() {
                inner.tapped(tapped);
            }
        });
        Router {
            inner,
            listening: None,
            tap: Some(tap),
        }
    }

    /// Serve one more client, already connected (a socketpair, say).
    /// Refused (the stream is closed) when the router is stopping, the
    /// upstream is gone, or [`RouterOptions::max_clients`] are connected;
    /// in the last case the client is told first (see
    /// [`Router::on_turned_away`]).
    pub fn attach(&self, stream: UnixStream) -> io::Result<()> {
        self.inner.attach(stream)
    }

    /// Call `f` with a one-line reason each time a client is turned away
    /// because [`RouterOptions::max_clients`] are connected (for a log; it
    /// runs on the thread that accepts connections, so keep it short).
    /// The client itself gets, instead of the greeting, a QMP error naming
    /// the limit, `{"error": {"class": "GenericError", "desc": ...}}`,
    /// and the connection closes.
    pub fn on_turned_away(&self, f: impl Fn(&str) + Send + Sync + 'static) {
        *lock(&self.inner.turned_away) = Some(Arc::new(f));
    }

    /// The path of the socket, if the router has one.
    pub fn path(&self) -> Option<&Path> {
        self.listening.as_ref().map(|l| l.socket.path())
    }

    /// A function that removes the socket file if it is still the one the
    /// router created, for an emergency exit that cannot wait for
    /// [`stop`](Router::stop).
    pub fn socket_remover(&self) -> Option<Box<dyn Fn() + Send + Sync>> {
        self.listening.as_ref().map(|l| l.socket.remover())
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        lock(&self.inner.conns).list.len()
    }

    /// Whether the upstream connection has ended (clients are then
    /// disconnected once their queues are written, and new ones refused).
    pub fn upstream_closed(&self) -> bool {
        lock(&self.inner.conns).upstream_closed
    }

    /// Wait up to `timeout` until no client is connected (after the
    /// upstream went away: until every client got what was queued for it).
    /// Returns whether none is left.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut conns = lock(&self.inner.conns);
        while !conns.list.is_empty() {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return false;
            }
            conns = self
                .inner
                .left
                .wait_timeout(conns, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Stop: close the socket (removing its file), disconnect every client
    /// and end every thread. The upstream client is left as it is.
    pub fn stop(self) {
        // The drop does it all.
        drop(self);
    }

    /// Idempotent: run by the drop, which may follow a former call.
    fn shutdown(&mut self) {
        lock(&self.inner.conns).stopping = true;
        // The socket file is removed last, once every thread has ended.
        let socket = self.listening.take().map(|listening| {
            let Listening {
                socket,
                accept,
                wake,
            } = listening;
            // SAFETY: write(2) of one byte from a valid buffer on our pipe.
            unsafe {
                libc::write(wake.as_raw_fd(), [1u8].as_ptr().cast(), 1);
            }
            let _ = accept.join();
            socket
        });
        self.tap = None;
        let (list, threads) = {
            let mut conns = lock(&self.inner.conns);
            (
                std::mem::take(&mut conns.list),
                std::mem::take(&mut conns.threads),
            )
        };
        for ds in &list {
            ds.close();
        }
        for t in threads {
            let _ = t.join();
        }
        drop(socket);
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Inner {
    fn attach(self: &Arc<Self>, stream: UnixStream) -> io::Result<()> {
        let mut conns = lock(&self.conns);
        // Threads of clients gone since are joined now (they have ended).
        let (ended, running): (Vec<_>, Vec<_>) = std::mem::take(&mut conns.threads)
            .into_iter()
            .partition(JoinHandle::is_finished);
        conns.threads = running;
        for t in ended {
            let _ = t.join();
        }
        if conns.stopping || conns.upstream_closed {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the router is stopping",
            ));
        }
        if conns.list.len() >= self.opts.max_clients {
            drop(conns);
            let why = wire::too_many_clients(self.opts.max_clients);
            // Instead of the greeting; a client that does not even take
            // that much at once gets nothing.
            let reply = wire::encode(&message::generic_error(None, &why));
            // SAFETY: send(2) from a valid buffer of `reply.len()` bytes.
            unsafe {
                libc::send(
                    stream.as_raw_fd(),
                    reply.as_ptr().cast(),
                    reply.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                );
            }
            let tell = lock(&self.turned_away).clone();
            if let Some(tell) = tell {
                tell(&format!("turned a client away: {why}"));
            }
            return Err(io::Error::new(io::ErrorKind::ConnectionRefused, why));
        }
        let ds = Arc::new(Downstream {
            stream,
            out: Mutex::new(Out::default()),
            cond: Condvar::new(),
            max_queued: self.opts.max_queued_bytes,
        });
        let reader = {
            let inner = Arc::clone(self);
            let ds = Arc::clone(&ds);
            thread::Builder::new()
                .name("qmp-router-in".to_owned())
                .spawn(move || inner.read_client(&ds))?
        };
        let writer = {
            let inner = Arc::clone(self);
            let ds = Arc::clone(&ds);
            thread::Builder::new()
                .name("qmp-router-out".to_owned())
                .spawn(move || {
                    ds.write_loop();
                    lock(&inner.conns).list.retain(|d| !Arc::ptr_eq(d, &ds));
                    inner.left.notify_all();
                })
        };
        let writer = match writer {
            Ok(w) => w,
            Err(e) => {
                ds.close();
                let _ = reader.join();
                return Err(e);
            }
        };
        conns.list.push(ds);
        conns.threads.push(reader);
        conns.threads.push(writer);
        Ok(())
    }

    /// An event or the end of the upstream connection.
    fn tapped(&self, tapped: Tapped<'_>) {
        match tapped {
            Tapped::Event(ev) => {
                let conns = lock(&self.conns);
                if conns.list.is_empty() {
                    return;
                }
                let bytes: Arc<[u8]> = wire::encode(&ev.body).into();
                for ds in &conns.list {
                    ds.push_event(&bytes);
                }
            }
            Tapped::Closed => {
                let list = {
                    let mut conns = lock(&self.conns);
                    conns.upstream_closed = true;
                    conns.list.clone()
                };
                for ds in list {
                    ds.finish();
                }
            }
        }
    }

    /// A client's reader thread: greeting, then every message it sends.
    fn read_client(&self, ds: &Arc<Downstream>) {
        ds.push(Chunk::Shared(Arc::clone(&self.greeting)));
        let mut session = Session::default();
        let mut decoder = Decoder::new(self.opts.max_message);
        let mut buf = vec![0u8; READ_CHUNK];
        // Descriptors received with the start of a message not complete yet.
        let mut held: Vec<OwnedFd> = Vec::new();
        'read: loop {
            let mut fds = Vec::new();
            let n = match socket::recv_with_fds(&ds.stream, &mut buf, &mut fds) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            decoder.feed(&buf[..n]);
            let mut frames: Vec<(Result<Object, FrameError>, Vec<OwnedFd>)> =
                std::iter::from_fn(|| decoder.next_message())
                    .map(|f| (f, Vec::new()))
                    .collect();
            // Descriptors belong to the message the sender wrote with
            // them: the one this read ends in.
            if !held.is_empty() {
                match frames.first_mut() {
                    Some((_, first)) => first.append(&mut held),
                    None => held.append(&mut fds),
                }
            }
            if !fds.is_empty() {
                match frames.last_mut() {
                    Some((_, last)) if decoder.buffered() == 0 => last.append(&mut fds),
                    _ => held.append(&mut fds),
                }
            }
            for (frame, fds) in frames {
                if !self.handle(ds, &mut session, frame, fds) {
                    break 'read;
                }
            }
        }
        // No more input: answer what is in flight, then close.
        ds.finish();
    }

    /// Handle one message of a client; `false` when the client is closed.
    fn handle(
        &self,
        ds: &Arc<Downstream>,
        session: &mut Session,
        frame: Result<Object, FrameError>,
        fds: Vec<OwnedFd>,
    ) -> bool {
        let mut msg = match frame {
            Ok(msg) => msg,
            Err(e) => return ds.push_reply(&wire::frame_error(&e)),
        };
        if !session.negotiated {
            let outcome = wire::before_negotiation(&msg, self.client.oob_enabled());
            return match outcome.negotiated {
                Some(oob) => {
                    session.negotiated = true;
                    session.oob = oob;
                    ds.push_negotiated(wire::encode(&outcome.reply))
                }
                None => ds.push_reply(&outcome.reply),
            };
        }
        // QEMU executes what it takes for an out-of-band command at once,
        // and everything else in the order it came.
        let out_of_band = wire::is_oob(&msg);
        if msg.contains_key("exec-oob") && !session.oob {
            let desc = wire::check_request(&msg, false)
                .err()
                .unwrap_or_else(|| "QMP input member 'exec-oob' is unexpected".to_owned());
            let reply = message::generic_error(msg.get("id"), &desc);
            return if out_of_band {
                ds.push_now(&reply)
            } else {
                ds.push_reply(&reply)
            };
        }
        let id = msg.shift_remove("id");
        let Some(turn) = ds.await_room(self.opts.max_in_flight, !out_of_band) else {
            return false;
        };
        let weak: Weak<Downstream> = Arc::downgrade(ds);
        let their_id = id.clone();
        let request = Request::new(msg).with_fds(fds);
        let sent = self.client.submit_with(request, move |result| {
            if let Some(ds) = weak.upgrade() {
                ds.answer(result, their_id, turn);
            }
        });
        if let Err(e) = sent {
            ds.answer(Err(e), id, turn);
        }
        true
    }
}

/// The accept thread: until woken through `wake`.
fn accept_loop(inner: &Arc<Inner>, socket: &ServeSocket, wake: &OwnedFd) {
    let listener = socket.listener();
    loop {
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfds for the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[1].revents != 0 || lock(&inner.conns).stopping {
            return;
        }
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(false).is_ok() {
                        // A refused connection is closed by dropping it.
                        let _ = inner.attach(stream);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock: all taken. Anything else (ECONNABORTED, a
                // shortage of descriptors): try again at the next poll.
                Err(_) => break,
            }
        }
    }
}

/// A client's protocol state, kept by its reader thread.
#[derive(Debug, Default)]
struct Session {
    negotiated: bool,
    oob: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientOptions;
    use serde_json::Value;
    use std::io::{BufRead, BufReader, Read, Write};

    const T: Duration = Duration::from_secs(20);

    /// A scripted upstream that answers every command with its name, and
    /// sends an event `E` whenever a command is named `event`.
    fn upstream() -> Arc<Client> {
        let (a, b) = UnixStream::pair().unwrap();
        thread::spawn(move || {
            let mut w = b.try_clone().unwrap();
            let mut r = BufReader::new(b);
            w.write_all(
                b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \
                  \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n",
            )
            .unwrap();
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let v: Value = serde_json::from_str(&line).unwrap();
                let name = v.get("execute").or(v.get("exec-oob")).cloned();
                if name == Some(Value::from("event")) {
                    w.write_all(b"{\"event\": \"E\", \"data\": {\"x\": \"\xc3\xa9\"}}\r\n")
                        .unwrap();
                }
                let reply = serde_json::json!({"return": name, "id": v["id"]});
                w.write_all(format!("{reply}\r\n").as_bytes()).unwrap();
                line.clear();
            }
        });
        Arc::new(Client::from_unix_stream(a, ClientOptions::default()).unwrap())
    }

    struct Peer {
        w: UnixStream,
        r: BufReader<UnixStream>,
    }

    impl Peer {
        fn attach(router: &Router) -> Peer {
            let (a, b) = UnixStream::pair().unwrap();
            router.attach(a).unwrap();
            b.set_read_timeout(Some(T)).unwrap();
            Peer {
                w: b.try_clone().unwrap(),
                r: BufReader::new(b),
            }
        }

        fn line(&mut self) -> String {
            let mut line = String::new();
            self.r.read_line(&mut line).expect("a line within T");
            line
        }

        fn send(&mut self, text: &str) -> String {
            self.w.write_all(text.as_bytes()).unwrap();
            self.line()
        }
    }

    #[test]
    fn ids_negotiation_and_events_with_a_scripted_upstream() {
        let client = upstream();
        let router = Router::new(Arc::clone(&client), RouterOptions::default());
        let mut a = Peer::attach(&router);
        let mut b = Peer::attach(&router);
        assert!(a.line().contains("\"capabilities\": [\"oob\"]"));
        b.line();
        assert_eq!(
            a.send("{\"execute\": \"x\", \"id\": \"s\"}"),
            "{\"id\": \"s\", \"error\": {\"class\": \"CommandNotFound\", \"desc\": \
             \"Expecting capabilities negotiation with 'qmp_capabilities'\"}}\r\n"
        );
        assert_eq!(
            a.send("{\"execute\": \"qmp_capabilities\"}"),
            "{\"return\": {}}\r\n"
        );
        assert_eq!(
            a.send("{\"execute\": \"x\", \"id\": {\"k\": [1.50]}}\n"),
            "{\"return\": \"x\", \"id\": {\"k\": [1.50]}}\r\n"
        );
        assert_eq!(a.send("{\"execute\": \"y\"}"), "{\"return\": \"y\"}\r\n");
        // An event goes to a (negotiated), not to b (not yet).
        assert_eq!(
            a.send("{\"execute\": \"event\", \"id\": 5}"),
            "{\"event\": \"E\", \"data\": {\"x\": \"\\u00E9\"}}\r\n"
        );
        assert_eq!(a.line(), "{\"return\": \"event\", \"id\": 5}\r\n");
        assert_eq!(
            b.send("{\"execute\": \"qmp_capabilities\", \"id\": 1}"),
            "{\"return\": {}, \"id\": 1}\r\n"
        );
        assert_eq!(
            b.send("{\"execute\": \"z\", \"id\": 2}"),
            "{\"return\": \"z\", \"id\": 2}\r\n"
        );
        // Garbage, non-objects, exec-oob without oob.
        assert_eq!(
            b.send("[1]"),
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input must be a JSON object\"}}\r\n"
        );
        assert!(b.send("nonsense\n").contains("JSON parse error"));
        assert_eq!(
            b.send("{\"exec-oob\": \"q\", \"id\": 3}"),
            "{\"id\": 3, \"error\": {\"class\": \"GenericError\", \"desc\": \
             \"QMP input member 'exec-oob' is unexpected\"}}\r\n"
        );
        // The client's own use of the upstream is unaffected.
        let r = client.execute("own", None, Some(T)).unwrap();
        assert_eq!(r.ret(), Some(&Value::from("own")));
        drop(a);
        router.stop();
        let mut rest = Vec::new();
        let _ = b.r.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{rest:?}");
        assert!(client.is_connected());
    }

    #[test]
    fn a_client_that_does_not_read_is_disconnected() {
        let client = upstream();
        let opts = RouterOptions {
            max_queued_bytes: 4096,
            ..RouterOptions::default()
        };
        let router = Router::new(Arc::clone(&client), opts);
        let mut lazy = Peer::attach(&router);
        lazy.w
            .write_all(b"{\"execute\": \"qmp_capabilities\"}")
            .unwrap();
        let mut busy = Peer::attach(&router);
        busy.line();
        busy.send("{\"execute\": \"qmp_capabilities\"}");
        // Events pile up for `lazy`, which never reads; `busy` reads on.
        let mut events = 0;
        while router.clients() == 2 {
            assert!(events < 1_000_000, "the lazy client was never dropped");
            busy.w.write_all(b"{\"execute\": \"event\"}").unwrap();
            assert!(busy.line().contains("\"E\""));
            assert!(busy.line().contains("\"return\""));
            events += 1;
        }
        // It got what fitted, then the end of the stream.
        let mut all = Vec::new();
        lazy.r.read_to_end(&mut all).unwrap();
        assert!(all.starts_with(b"{\"QMP\""));
        drop(router);
    }

    #[test]
    fn router_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Router>();
    }
}
