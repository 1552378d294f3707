//! The start of a session: reading the greeting (or telling why there is
//! none), resynchronising with a guest agent, and negotiating
//! capabilities.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::driver::Waited;
use super::error::{Error, ServerError, StartError};
use super::inline::Inline;
use super::protocol::{compact, Protocol, TEXT_IN_MESSAGES};
use super::{driver, Client, ClientOptions, GreetingHook, Request, OOB_INBAND_WINDOW};
use crate::framing::{truncate, FrameError};
use crate::message::{command, Event, Greeting, Message, Object, Reply};
use crate::plumbing::lock;
use crate::transport::{Closer, Handshake, Transport};

/// How long to wait for a reply to the probe sent when no greeting came, to
/// tell a guest agent (which answers at once) from a busy monitor; less
/// when the greeting's own bound is shorter.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The greeting, from the first frame the server sent.
pub(crate) fn greeting_from(frame: Result<Object, FrameError>) -> Result<Greeting, StartError> {
    match frame {
        Ok(obj) => match Message::classify(obj) {
            Message::Greeting(g) => Ok(g),
            // A server that turns the client away says why (qmp-proxy with
            // all its clients served, say).
            Message::Reply(reply) if reply.id().is_none() && reply.is_error() => {
                let desc = reply
                    .error_desc()
                    .map(|d| truncate(d, TEXT_IN_MESSAGES))
                    .unwrap_or_else(|| compact(&reply.body));
                Err(StartError::context(
                    "the server refused the session",
                    ServerError::new(&reply, desc),
                ))
            }
            Message::Reply(Reply { body, .. })
            | Message::Event(Event { body })
            | Message::Other(body) => Err(StartError::words(format!(
                "expected a QMP greeting, got: {}",
                compact(&body)
            ))),
        },
        Err(e) => Err(StartError::context("expected a QMP greeting, got", e)),
    }
}

/// The server did not take the connection within `opts.greeting_timeout`.
pub(crate) fn not_accepted(opts: &ClientOptions) -> Error {
    Error::NoGreeting(StartError::words(format!(
        "timed out after {} s waiting for the server to accept the connection \
         (it takes no more: it may be hung)",
        opts.greeting_timeout.unwrap_or_default().as_secs_f64()
    )))
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

impl Client {
    /// [`Client::open`], the greeting awaited until
    /// [`ClientOptions::greeting_timeout`] after `started` (when connecting
    /// the transport began).
    pub(crate) fn open_since(
        transport: Box<dyn Transport>,
        mut opts: ClientOptions,
        started: Instant,
    ) -> Result<Client, Error> {
        let handshake = transport.handshake();
        let passes_fds = transport.passes_fds();
        let syncer = transport.syncer();
        let halves = transport.split()?;
        let awaiting_greeting = handshake == Handshake::Server && opts.read_greeting;
        // Resynchronising from the first byte: whatever arrives before the
        // sync reply is stale (a QMP greeting included, which says so).
        let sync_token = opts.guest_sync.then(sync_token);
        let protocol = Protocol::new(awaiting_greeting, sync_token.map(sync_id), passes_fds);
        let (shared, threads) = driver::start(halves, protocol, opts.log.take())?;
        let client = Client {
            threads: std::sync::Mutex::new(threads),
            shared,
            syncer,
            greeting: None,
            oob: false,
            passes_fds,
        };
        client.start(handshake, sync_token, opts, started)
    }

    /// [`Client::open`] for a connected socket `sock` driven inline
    /// ([`ClientOptions::inline`]); `passes_fds` for a UNIX socket.
    pub(crate) fn open_inline(
        sock: OwnedFd,
        passes_fds: bool,
        mut opts: ClientOptions,
        started: Instant,
    ) -> Result<Client, Error> {
        let control = sock.try_clone()?;
        let closer: Closer = Arc::new(move || {
            // SAFETY: shutdown(2) on a descriptor we own.
            unsafe { libc::shutdown(control.as_raw_fd(), libc::SHUT_RDWR) };
        });
        let protocol = Protocol::new(opts.read_greeting, None, passes_fds);
        let io = Inline::new(sock, opts.max_message);
        let shared = driver::shared(
            protocol,
            opts.log.take(),
            closer,
            Some(io),
            opts.interrupt.clone(),
        );
        let client = Client {
            threads: std::sync::Mutex::new(Vec::new()),
            shared,
            syncer: None,
            greeting: None,
            oob: false,
            passes_fds,
        };
        client.start(Handshake::Server, None, opts, started)
    }

    /// Read the greeting, resynchronise with a guest agent and negotiate,
    /// as `handshake` and `opts` say.
    fn start(
        mut self,
        handshake: Handshake,
        sync_token: Option<i64>,
        opts: ClientOptions,
        started: Instant,
    ) -> Result<Client, Error> {
        let client = &mut self;
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
            client.negotiate(enable_oob, opts.greeting_timeout, opts.on_greeting)?;
            if enable_oob {
                client.oob = true;
                client.shared.update(|p| p.set_window(OOB_INBAND_WINDOW));
            } else if opts.in_order {
                client.shared.update(|p| p.set_in_order(true));
            }
        } else if let (Some(f), Some(g)) = (opts.on_greeting, &client.greeting) {
            f(g);
        }
        Ok(self)
    }

    fn await_greeting(
        &self,
        timeout: Option<Duration>,
        started: Instant,
    ) -> Result<Greeting, Error> {
        let deadline = timeout.and_then(|t| started.checked_add(t));
        let mut p = lock(&self.shared.state);
        loop {
            if let Some(g) = p.take_greeting() {
                return g.map_err(Error::NoGreeting);
            }
            let (q, waited) = self.shared.wait(&self.shared.replies, p, deadline);
            p = q;
            match waited {
                Waited::Again => {}
                Waited::Interrupted => return Err(Error::Interrupted),
                Waited::TimedOut => {
                    // Stop treating the next message as the greeting.
                    p.stop_awaiting_greeting();
                    drop(p);
                    let waited = timeout.unwrap_or_default();
                    return Err(Error::NoGreeting(StartError::words(
                        self.no_greeting_hint(waited),
                    )));
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
        self.shared.update(|p| p.push_raw(vec![0xff]));
        let result = self.submit(Request::new(msg)).and_then(|p| p.wait(timeout));
        self.shared.update(Protocol::end_syncing);
        let problem = match result {
            Ok(reply) if reply.ret().and_then(Value::as_i64) == Some(token) => return,
            Ok(reply) => match reply.error_desc() {
                Some(desc) => desc.to_owned(),
                None => format!("unexpected reply {}", compact(&reply.body)),
            },
            Err(Error::Timeout(_)) => "no answer".to_owned(),
            Err(e) => e.to_string(),
        };
        self.shared.update(|p| {
            p.warn(format!(
                "guest agent resynchronisation (guest-sync-delimited) failed: {problem}; \
                 carrying on without it"
            ))
        });
    }

    /// Send `qmp_capabilities` and wait for its reply; meanwhile (once the
    /// request is on its way) run `on_greeting`.
    fn negotiate(
        &self,
        oob: bool,
        timeout: Option<Duration>,
        on_greeting: Option<GreetingHook>,
    ) -> Result<(), Error> {
        let args = oob.then(|| {
            let mut a = Object::new();
            a.insert("enable".to_owned(), Value::from(vec![Value::from("oob")]));
            a
        });
        let sent = self.send(command("qmp_capabilities", args));
        if let (Ok(_), Some(f), Some(g)) = (&sent, on_greeting, &self.greeting) {
            // An inline client sends when it waits: send now.
            self.shared.drive(Some(Instant::now()), &[]);
            f(g);
        }
        let why = match sent.and_then(|p| p.wait(timeout)) {
            Ok(reply) if reply.ret().is_some() => return Ok(()),
            Ok(reply) => {
                let desc = reply
                    .error_desc()
                    .map(str::to_owned)
                    .unwrap_or_else(|| compact(&reply.body));
                if reply.is_error() {
                    StartError::from_cause(ServerError::new(&reply, desc))
                } else {
                    StartError::words(desc)
                }
            }
            Err(Error::Timeout(_)) => {
                StartError::words("timed out waiting for the qmp_capabilities reply")
            }
            Err(Error::Disconnected) => {
                StartError::words("connection closed during capabilities negotiation")
            }
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => StartError::from_cause(e),
        };
        Err(Error::Negotiation(why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::error::tests::chain;
    use crate::client::testing::*;
    use crate::client::OOB_INBAND_WINDOW;

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
        // The frame error is the cause, shown once in the chain.
        let texts = chain(&e);
        assert_eq!(texts[0], "expected a QMP greeting, got", "{texts:?}");
        assert!(texts[1].starts_with("invalid JSON"), "{texts:?}");
        assert_eq!(texts.len(), 2, "{texts:?}");
        let Error::NoGreeting(why) = &e else {
            unreachable!()
        };
        let frame = why.cause().and_then(|c| c.downcast_ref::<FrameError>());
        assert!(matches!(frame, Some(FrameError::NotJson { .. })), "{why:?}");
    }

    /// A server that turns the client away instead of greeting it: its
    /// error is the cause, and the chain says each thing once.
    #[test]
    fn a_refused_session_keeps_the_servers_error() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(
            b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"too many clients\"}}\r\n",
        )
        .unwrap();
        let e = Client::from_unix_stream(a, ClientOptions::default()).unwrap_err();
        assert_eq!(
            chain(&e),
            ["the server refused the session", "too many clients"]
        );
        let Error::NoGreeting(why) = &e else {
            panic!("{e:?}");
        };
        let refusal = why.cause().and_then(|c| c.downcast_ref::<ServerError>());
        assert_eq!(refusal.and_then(ServerError::class), Some("GenericError"));
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
        let Error::Negotiation(why) = &e else {
            panic!("{e:?}");
        };
        assert_eq!(why.to_string(), "nope");
        // QEMU's error reply is kept, shown once.
        let refusal = why.cause().and_then(|c| c.downcast_ref::<ServerError>());
        assert_eq!(
            refusal.and_then(ServerError::class),
            Some("CommandNotFound")
        );
        assert_eq!(chain(&e), ["nope"]);
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
}
