//! The threaded driver of a [`Protocol`]: a reader thread that feeds it
//! the frames a transport's [`Source`] receives, a writer thread that hands
//! what it has to send to the [`Sink`], and the condition variables that
//! the client's callers wait on.
//!
//! The protocol state sits in a mutex; every change to it goes through
//! [`Shared::update`], which then wakes whoever the change concerns, runs
//! the callbacks whose results came and tells the taps when the connection
//! ended, all without the lock held. The taps and the traffic log live
//! here, on the I/O side: the protocol state never calls out.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::inline::{Inline, Interrupt};
use super::limits::encode_for_qemu;
use super::protocol::{Callback, Inbound, Next, Outgoing, Protocol, Wake};
use super::queue::approx_heap_size;
use super::taps::{Tapped, Taps};
use super::Error;
use crate::framing::FrameError;
use crate::message::{Object, Reply};
use crate::plumbing::lock;
use crate::transport::{Closer, Halves, Received, Sink, Source};

/// The user's notification ([`Client::set_notify`](super::Client::set_notify)).
pub(crate) type Notify = Arc<dyn Fn() + Send + Sync>;
/// Where the traffic is logged.
pub(crate) type Log = Box<dyn Write + Send>;

/// What the client's threads and its callers share.
pub(crate) struct Shared {
    /// The protocol state; change it with [`Shared::update`].
    pub(crate) state: Mutex<Protocol>,
    /// Signalled when a result is stored, the greeting arrives or the
    /// connection drops.
    pub(crate) replies: Condvar,
    /// Signalled when something is queued for the caller or the connection
    /// drops.
    pub(crate) incoming: Condvar,
    /// Signalled when there may be something for the writer thread to do.
    writer: Condvar,
    notify: Mutex<Option<Notify>>,
    log: Mutex<Option<Log>>,
    /// Ends the connection (the transport's).
    pub(crate) closer: Closer,
    /// Event taps ([`Client::tap_events`](super::Client::tap_events)).
    pub(crate) taps: Taps,
    /// The I/O of an inline connection, done by whoever waits; `None` when
    /// the reader and writer threads do it.
    pub(crate) inline: Option<Mutex<Inline>>,
    /// What ends the waits of an inline connection early.
    pub(crate) interrupt: Option<Interrupt>,
    /// Threads napping on `replies` while another drives an inline
    /// connection.
    napping: AtomicUsize,
}

/// How a [`Shared::wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// Something may have changed: look again.
    Again,
    /// The deadline passed.
    TimedOut,
    /// The [`Interrupt`] said to stop.
    Interrupted,
}

/// How long a waiter of an inline connection sleeps while another thread
/// does its I/O (woken earlier by what that thread routes).
const OTHER_DRIVER_NAP: Duration = Duration::from_millis(10);

impl Shared {
    /// Change the protocol state with `f`; then, without the lock, wake
    /// whoever the change concerns, run the callbacks whose results came
    /// (in the order they came) and, when the connection ended, tell the
    /// taps.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut Protocol) -> R) -> R {
        let (result, wake, due) = {
            let mut p = lock(&self.state);
            let result = f(&mut p);
            (result, p.take_wake(), p.take_due())
        };
        self.wake(wake, due);
        result
    }

    fn wake(&self, wake: Wake, due: Vec<(Callback, Result<Reply, Error>)>) {
        // Inline, nobody sleeps on the condition variables but a thread
        // napping while another drives (a wake-up is a system call).
        let threaded = self.inline.is_none();
        if wake.replies && (threaded || self.napping.load(Ordering::SeqCst) > 0) {
            self.replies.notify_all();
        }
        if wake.incoming && threaded {
            self.incoming.notify_all();
        }
        if wake.writer && threaded {
            self.writer.notify_all();
        }
        if wake.notify {
            let f = lock(&self.notify).clone();
            if let Some(f) = f {
                f();
            }
        }
        for (callback, result) in due {
            (callback.0)(result);
        }
        if wake.closed {
            for tap in self.taps.all() {
                tap.closed();
            }
        }
    }

    /// Wait on `cond` (with the state `p` locked) until woken or
    /// `deadline`. For an inline connection, do its I/O meanwhile
    /// ([`Shared::drive`]).
    pub(crate) fn wait<'a>(
        &'a self,
        cond: &Condvar,
        p: MutexGuard<'a, Protocol>,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, Protocol>, Waited) {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return (p, Waited::TimedOut);
        }
        if self.inline.is_some() {
            drop(p);
            let waited = self.drive(deadline, &[]).0;
            return (lock(&self.state), waited);
        }
        let p = match deadline {
            None => cond.wait(p).unwrap_or_else(|e| e.into_inner()),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                cond.wait_timeout(p, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
        (p, Waited::Again)
    }

    /// One round of an inline connection's I/O on this thread: send what
    /// is queued, then wait until something arrives, `deadline`, or one of
    /// `watch` (or the interrupt's descriptor) is readable. Also says
    /// whether one of `watch` is. Without the lock of the state held.
    pub(crate) fn drive(&self, deadline: Option<Instant>, watch: &[RawFd]) -> (Waited, bool) {
        let Some(io) = &self.inline else {
            return (Waited::Again, false);
        };
        let mut fds: Vec<RawFd> = watch.to_vec();
        if let Some(i) = &self.interrupt {
            fds.push(i.fd);
        }
        let mut io = match io.try_lock() {
            Ok(io) => io,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => {
                // Another thread drives: what it routes wakes the condition
                // variables; nap on one of them.
                let nap = Instant::now() + OTHER_DRIVER_NAP;
                let until = deadline.map_or(nap, |d| d.min(nap));
                let p = lock(&self.state);
                // Counted with the state locked: whoever changes it next
                // sees the count and wakes us.
                self.napping.fetch_add(1, Ordering::SeqCst);
                let left = until.saturating_duration_since(Instant::now());
                drop(self.replies.wait_timeout(p, left));
                self.napping.fetch_sub(1, Ordering::SeqCst);
                return (Waited::Again, false);
            }
        };
        let ready = io.round(self, deadline, &fds);
        drop(io);
        let watched = (0..watch.len()).any(|i| ready.is_ready(i));
        let interrupted = self
            .interrupt
            .as_ref()
            .is_some_and(|i| ready.is_ready(watch.len()) && (i.stop)());
        let waited = if interrupted {
            Waited::Interrupted
        } else {
            Waited::Again
        };
        (waited, watched)
    }

    /// Inline: send what is queued, without waiting (see
    /// [`Client::send_queued`](super::Client::send_queued)). A request
    /// refused or a write failing meanwhile notifies as always.
    pub(crate) fn send_queued(&self) {
        let Some(io) = &self.inline else {
            return;
        };
        let mut io = match io.try_lock() {
            Ok(io) => io,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            // Another thread drives, and sends.
            Err(TryLockError::WouldBlock) => return,
        };
        io.send_queued(self);
    }

    /// Request `seq`'s message `msg` as QEMU takes it, logged (when
    /// `logged`) as sent; `None` when QEMU would refuse it unread: the
    /// request is then refused, and the connection goes on.
    pub(crate) fn encoded(&self, seq: u64, logged: bool, msg: &Object) -> Option<Vec<u8>> {
        match encode_for_qemu(msg) {
            Ok(bytes) => {
                if logged {
                    self.log_line(&bytes[..bytes.len() - 1]);
                }
                Some(bytes)
            }
            Err(why) => {
                self.update(|p| p.refused(seq, why));
                None
            }
        }
    }

    /// Call `f` whenever [`Wake::notify`] says so.
    pub(crate) fn set_notify(&self, f: Notify) {
        *lock(&self.notify) = Some(f);
    }

    /// Mark the connection closed (`reason`: the transport's explanation)
    /// and fail every outstanding request.
    pub(crate) fn disconnect(&self, reason: Option<io::Error>) {
        self.update(|p| p.close(reason));
    }

    pub(crate) fn log_line(&self, bytes: &[u8]) {
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

    /// Route a reply kept as text: as it is to a request that asked for
    /// that, else read into its object and routed as any frame.
    fn route_text(&self, reply: Reply) {
        if lock(&self.state).keeps_text(&reply) {
            self.update(|p| p.reply(reply));
        } else {
            self.route(Ok(reply.into_body()));
        }
    }

    /// Route one received frame, showing events to the taps first.
    fn route(&self, frame: Result<Object, FrameError>) {
        match self.update(|p| p.receive(frame)) {
            Inbound::Handled => {}
            Inbound::Reply(reply) => self.update(|p| p.reply(reply)),
            Inbound::Event(ev) => {
                // Sized outside the lock: the tree may be large.
                let size = approx_heap_size(&ev.body);
                for tap in self.taps.all() {
                    tap.show(Tapped::Event(&ev));
                }
                self.update(|p| p.event(ev, size));
            }
        }
    }
}

/// The traffic log of received frames, for either driver: each frame's
/// raw text is logged as it comes, or held until the frame says whether
/// it is logged (during a guest agent resync only the sync reply is, and
/// the replies to requests kept out of the log are not).
pub(crate) struct RawLog {
    logging: bool,
    held: Option<Vec<u8>>,
}

impl RawLog {
    /// For the frames of `shared`'s connection.
    pub(crate) fn new(shared: &Shared) -> RawLog {
        RawLog {
            logging: shared.has_log(),
            held: None,
        }
    }

    /// Whether anything is logged at all.
    pub(crate) fn logging(&self) -> bool {
        self.logging
    }

    /// The raw text of the frame being received.
    pub(crate) fn raw(&mut self, shared: &Shared, raw: &[u8]) {
        if !self.logging {
            return;
        }
        let depends = lock(&shared.state).log_depends_on_frame();
        if depends {
            self.held = Some(raw.to_vec());
        } else {
            shared.log_line(raw);
        }
    }

    /// The frame whose text came last: logged if it was held and is to be
    /// logged, then routed.
    pub(crate) fn deliver(&mut self, shared: &Shared, frame: Result<Object, FrameError>) {
        if let Some(raw) = self.held.take() {
            let logs = lock(&shared.state).logs(&frame);
            if logs {
                shared.log_line(&raw);
            }
        }
        shared.route(frame);
    }

    /// A reply kept as text whose text came last: logged if it was held
    /// and is to be logged, then routed.
    pub(crate) fn deliver_text(&mut self, shared: &Shared, reply: Reply) {
        if let Some(raw) = self.held.take() {
            let logs = lock(&shared.state).logs_text(&reply);
            if logs {
                shared.log_line(&raw);
            }
        }
        shared.route_text(reply);
    }
}

/// The state shared by a connection's drivers and its callers.
pub(crate) fn shared(
    protocol: Protocol,
    log: Option<Log>,
    closer: Closer,
    inline: Option<Inline>,
    interrupt: Option<Interrupt>,
) -> Arc<Shared> {
    Arc::new(Shared {
        state: Mutex::new(protocol),
        replies: Condvar::new(),
        incoming: Condvar::new(),
        writer: Condvar::new(),
        notify: Mutex::new(None),
        log: Mutex::new(log),
        closer,
        taps: Taps::default(),
        inline: inline.map(Mutex::new),
        interrupt,
        napping: AtomicUsize::new(0),
    })
}

/// Start the reader and writer threads of a connection whose state is
/// `protocol`, logging to `log`.
pub(crate) fn start(
    halves: Halves,
    protocol: Protocol,
    log: Option<Log>,
) -> Result<(Arc<Shared>, Vec<JoinHandle<()>>), Error> {
    let shared = shared(protocol, log, halves.closer.clone(), None, None);
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
    match writer {
        Ok(writer) => Ok((shared, vec![reader, writer])),
        Err(e) => {
            (shared.closer)();
            shared.disconnect(None);
            let _ = reader.join();
            Err(Error::Io(e))
        }
    }
}

/// Replies at least this long may be kept as text ([`Received::Text`]).
pub(crate) const TEXT_REPLIES: usize = 64 * 1024;

fn reader_loop(mut source: Box<dyn Source>, shared: &Shared) {
    let mut log = RawLog::new(shared);
    source.want_raw(log.logging());
    source.want_text(Some(TEXT_REPLIES));
    let reason = loop {
        let received = source.receive(&mut |raw| log.raw(shared, raw));
        match received {
            Ok(Some(Received::Frame(frame))) => log.deliver(shared, frame),
            Ok(Some(Received::Text(reply))) => log.deliver_text(shared, reply),
            Ok(Some(Received::Delimiter)) => {}
            Ok(None) => break None,
            // A transport's own explanation (ssh's message, say); an OS
            // error on a socket just means the peer went away.
            Err(e) if e.raw_os_error().is_none() => break Some(e),
            Err(_) => break None,
        }
    };
    shared.disconnect(reason);
}

fn writer_loop(mut sink: Box<dyn Sink>, shared: &Shared) {
    loop {
        let item = {
            let mut p = lock(&shared.state);
            loop {
                match p.next_to_send() {
                    Next::Send(item) => break item,
                    Next::Idle => p = shared.writer.wait(p).unwrap_or_else(|e| e.into_inner()),
                    Next::Stop => return,
                }
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
                let Some(bytes) = shared.encoded(seq, logged, &msg) else {
                    continue;
                };
                let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
                match sink.send(&msg, &bytes, &raw) {
                    Ok(()) => {}
                    // This request only: the connection is fine.
                    Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                        shared.update(|p| p.refused(seq, e.to_string()));
                    }
                    Err(_) => break,
                }
                drop(fds);
            }
        }
    }
    shared.update(Protocol::write_failed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::testing::*;

    #[test]
    fn messages_qemu_would_refuse_are_not_sent_and_the_connection_goes_on() {
        let arrays = |depth: usize| {
            let mut args = Object::new();
            let mut v = Value::Array(Vec::new());
            for _ in 1..depth {
                v = Value::Array(vec![v]);
            }
            args.insert("v".into(), v);
            args
        };
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
    fn unlogged_requests_stay_out_of_the_log() {
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
