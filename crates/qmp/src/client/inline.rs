//! The inline driver: a connection over a UNIX or TCP socket driven by the
//! thread that waits on it, with no reader or writer thread.
//!
//! A one-command or scripted session spends its life waiting for replies.
//! With [`ClientOptions::inline`](super::ClientOptions::inline) whoever
//! waits (a [`Pending`](super::Pending), the handshake,
//! [`Client::drive`](super::Client::drive)) does the I/O meanwhile: it
//! hands what the protocol has to send to the socket (as much as is
//! queued, in one send) and reads what arrived (large reads), routing each
//! frame exactly as the reader thread of a threaded client does (same
//! taps, callbacks and log). No thread starts and no reply crosses threads.
//!
//! Sends and receives never block (`MSG_DONTWAIT`); the waits are poll(2)
//! over the socket and the descriptors the caller watches (a signal's
//! self-pipe, a doorbell), so a signal or a ring ends a wait at once. The
//! socket itself stays blocking, for the closer's shutdown(2) and for
//! whoever takes it over.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use super::driver::{RawLog, Shared, TEXT_REPLIES};
use super::protocol::{Next, Outgoing, Protocol};
use crate::framing::{Decoder, Frame};

/// Size of each read: a whole schema reply in a few reads.
const READ_CHUNK: usize = 64 * 1024;

/// Bytes queued for the socket beyond which no more messages are taken
/// from the protocol until some are sent.
const MAX_QUEUED: usize = 256 * 1024;

/// A descriptor an inline client watches while it waits, and what it
/// means when it becomes readable.
#[derive(Clone)]
pub struct Interrupt {
    /// The descriptor (the read end of a signal's self-pipe, say). The
    /// client only polls it; whoever owns it drains it.
    pub fd: RawFd,
    /// Asked when `fd` is readable: `true` ends the wait with
    /// [`Error::Interrupted`](super::Error::Interrupted) (and a session
    /// being started fails with it).
    pub stop: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl std::fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interrupt").field("fd", &self.fd).finish()
    }
}

/// Bytes to send, with the descriptors that go with their first byte.
struct Chunk {
    bytes: Vec<u8>,
    sent: usize,
    fds: Vec<OwnedFd>,
}

/// The I/O state of an inline connection.
pub(crate) struct Inline {
    sock: OwnedFd,
    decoder: Decoder,
    buf: Vec<u8>,
    out: VecDeque<Chunk>,
    queued: usize,
    /// The peer ended the stream, or reading failed.
    eof: bool,
    log: Option<RawLog>,
}

/// What a round of [`Inline::round`] saw: which of the descriptors it
/// watched are readable.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Round {
    /// Bit `i`: the `i`-th is (the first 64).
    ready: u64,
}

impl Round {
    /// Whether the `i`-th watched descriptor is readable.
    pub(crate) fn is_ready(&self, i: usize) -> bool {
        i < 64 && self.ready & (1 << i) != 0
    }
}

impl Inline {
    /// Drive `sock` (a connected UNIX or TCP socket), refusing messages
    /// longer than `max_message`.
    pub(crate) fn new(sock: OwnedFd, max_message: usize) -> Inline {
        let mut decoder = Decoder::new(max_message);
        decoder.text_replies(Some(TEXT_REPLIES));
        Inline {
            sock,
            decoder,
            buf: Vec::new(),
            out: VecDeque::new(),
            queued: 0,
            eof: false,
            log: None,
        }
    }

    /// One round: send what the protocol has, then wait (until `deadline`)
    /// for the socket or one of `watch`, and read and route what came.
    pub(crate) fn round(
        &mut self,
        shared: &Shared,
        deadline: Option<Instant>,
        watch: &[RawFd],
    ) -> Round {
        if self.flush(shared) {
            // Sending freed a result (a refused request) or failed: let the
            // caller look before waiting.
            return Round::default();
        }
        let mut fds = Vec::with_capacity(watch.len() + 1);
        let sock = !self.eof;
        if sock {
            let mut events = libc::POLLIN;
            if !self.out.is_empty() {
                events |= libc::POLLOUT;
            }
            fds.push(pollfd(self.sock.as_raw_fd(), events));
        }
        fds.extend(watch.iter().map(|fd| pollfd(*fd, libc::POLLIN)));
        if fds.is_empty() && deadline.is_none() {
            return Round::default();
        }
        let timeout = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Rounded up: never wake just before the deadline.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
            }
        };
        // SAFETY: poll(2) on `fds.len()` pollfds that live across the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n <= 0 {
            // Timed out, or a signal (whose handler wrote to a watched
            // pipe, if it matters): the caller looks again.
            return Round::default();
        }
        let (own, others) = if sock {
            (Some(fds[0].revents), &fds[1..])
        } else {
            (None, &fds[..])
        };
        if let Some(revents) = own {
            if revents & libc::POLLOUT != 0 {
                self.flush(shared);
            }
            if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                self.read(shared);
                // Replies free places in the window: the next requests go
                // now, so the server works while the caller prints.
                self.flush(shared);
            }
        }
        let ready = others
            .iter()
            .take(64)
            .enumerate()
            .filter(|(_, p)| p.revents != 0)
            .fold(0, |bits, (i, _)| bits | 1 << i);
        Round { ready }
    }

    /// Send what the protocol has, as much as the socket takes now; what
    /// that frees (a refused request, a failed write) notifies as always.
    pub(crate) fn send_queued(&mut self, shared: &Shared) {
        self.flush(shared);
    }

    /// Take what the protocol has to send and send as much of it as the
    /// socket takes now. Returns `true` when a request was refused or
    /// writing failed (results the caller may be waiting for).
    fn flush(&mut self, shared: &Shared) -> bool {
        let mut news = false;
        loop {
            while self.queued < MAX_QUEUED {
                match shared.update(Protocol::next_to_send) {
                    Next::Send(item) => news |= self.queue(shared, item),
                    Next::Idle | Next::Stop => break,
                }
            }
            let Some(chunk) = self.out.front_mut() else {
                return news;
            };
            match send_now(self.sock.as_raw_fd(), chunk) {
                Ok(n) => {
                    chunk.sent += n;
                    self.queued -= n;
                    if chunk.sent == chunk.bytes.len() {
                        self.out.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return news,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.out.clear();
                    self.queued = 0;
                    shared.update(Protocol::write_failed);
                    return true;
                }
            }
        }
    }

    /// Queue `item` for the socket, logged as the writer thread logs it.
    /// Returns `true` when the request was refused instead (descriptors
    /// were refused already, when submitted, on a socket that cannot pass
    /// them).
    fn queue(&mut self, shared: &Shared, item: Outgoing) -> bool {
        let (bytes, fds) = match item {
            Outgoing::Raw(bytes) => (bytes, Vec::new()),
            Outgoing::Message {
                seq,
                logged,
                msg,
                fds,
                ..
            } => {
                let Some(bytes) = shared.encoded(seq, logged, &msg) else {
                    return true;
                };
                (bytes, fds)
            }
        };
        self.queued += bytes.len();
        match self.out.back_mut() {
            // Descriptors go with the first byte of their own message.
            Some(last) if fds.is_empty() => last.bytes.extend_from_slice(&bytes),
            _ => self.out.push_back(Chunk {
                bytes,
                sent: 0,
                fds,
            }),
        }
        false
    }

    /// Read once and route every complete frame.
    fn read(&mut self, shared: &Shared) {
        // Received into the spare capacity: no need to clear it first.
        self.buf.clear();
        self.buf.reserve(READ_CHUNK);
        let spare = self.buf.spare_capacity_mut();
        // SAFETY: recv(2) writes at most `spare.len()` bytes into `spare`.
        let n = unsafe {
            libc::recv(
                self.sock.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) {
                return;
            }
            // An OS error on a socket just means the peer went away.
            self.eof = true;
            shared.disconnect(None);
            return;
        }
        if n == 0 {
            self.eof = true;
            shared.disconnect(None);
            return;
        }
        // SAFETY: recv(2) initialised the first `n` bytes.
        unsafe { self.buf.set_len(n as usize) };
        self.decoder.feed(&self.buf);
        let log = self.log.get_or_insert_with(|| RawLog::new(shared));
        loop {
            let frame = self
                .decoder
                .next_frame_with_raw(&mut |raw| log.raw(shared, raw));
            match frame {
                Some(Frame::Message(frame)) => log.deliver(shared, frame),
                Some(Frame::Reply(reply)) => log.deliver_text(shared, reply),
                None => break,
            }
        }
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Send what `chunk` has left without waiting: the descriptors (once)
/// with its first byte.
fn send_now(sock: RawFd, chunk: &mut Chunk) -> io::Result<usize> {
    let bytes = &chunk.bytes[chunk.sent..];
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    if chunk.fds.is_empty() {
        // SAFETY: send(2) of a buffer of the length given.
        let n = unsafe { libc::send(sock, bytes.as_ptr().cast(), bytes.len(), flags) };
        return if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        };
    }
    let raw: Vec<RawFd> = chunk.fds.iter().map(AsRawFd::as_raw_fd).collect();
    let n = crate::transport::stream::sendmsg_with_fds(sock, bytes, &raw, flags)?;
    // Sent with the first byte: ours to close now.
    chunk.fds.clear();
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::Error;
    use super::*;
    use crate::message::Object;

    fn inline(opts: ClientOptions) -> ClientOptions {
        ClientOptions {
            inline: true,
            ..opts
        }
    }

    /// A peer that answers each request line with its command name, after
    /// an event.
    fn echo(s: UnixStream) {
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            let v: Value = serde_json::from_str(&line).unwrap();
            let out = format!(
                "{{\"event\": \"E\", \"data\": {{\"n\": {}}}}}\r\n{{\"return\": {}, \"id\": {}}}\r\n",
                v["id"], v["execute"], v["id"]
            );
            if w.write_all(out.as_bytes()).is_err() {
                return;
            }
            line.clear();
        }
    }

    #[test]
    fn no_thread_runs_and_pipelined_requests_get_their_replies_in_order() {
        let log = Buf::default();
        let opts = inline(ClientOptions {
            log: Some(Box::new(log.clone())),
            ..no_handshake()
        });
        let client = pair(opts, echo);
        assert!(client.is_inline());
        assert!(lock(&client.threads).is_empty());
        let pending: Vec<Pending> = (0..500)
            .map(|i| client.send(command(&format!("c{i}"), None)).unwrap())
            .collect();
        for (i, p) in pending.into_iter().enumerate() {
            let r = p.wait(T).unwrap();
            assert_eq!(r.ret(), Some(&Value::from(format!("c{i}"))));
        }
        let events: Vec<Incoming> = client.drain_incoming();
        assert_eq!(events.len(), 500);
        let text = String::from_utf8(lock(&log.0).clone()).unwrap();
        // Each request and each reply and event, one line each.
        assert_eq!(text.lines().count(), 1500, "{text}");
        assert!(
            text.starts_with("{\"execute\":\"c0\",\"id\":1}\n"),
            "{text}"
        );
    }

    #[test]
    fn send_queued_puts_requests_on_the_wire_before_anyone_waits() {
        let (tx, rx) = std::sync::mpsc::channel();
        let client = pair(inline(no_handshake()), move |mut s| {
            let line = read_line(&mut s);
            let v: Value = serde_json::from_str(&line).unwrap();
            tx.send(line).unwrap();
            let reply = format!("{{\"return\": {}, \"id\": {}}}\r\n", v["execute"], v["id"]);
            s.write_all(reply.as_bytes()).unwrap();
        });
        let pending = client.send(command("first", None)).unwrap();
        client.send_queued();
        // Nobody drives the client: the request went out all the same.
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(line, "{\"execute\":\"first\",\"id\":1}");
        // Sent once: waiting for the reply sends nothing more.
        let r = pending.wait(T).unwrap();
        assert_eq!(r.ret(), Some(&Value::from("first")));
        // Nothing queued: nothing to send, and no wait.
        client.send_queued();
        assert_eq!(client.in_flight(), 0);
    }

    #[test]
    fn a_request_larger_than_the_socket_buffer_goes_whole() {
        let client = pair(inline(no_handshake()), echo);
        let mut args = Object::new();
        args.insert("blob".into(), Value::from("x".repeat(4 << 20)));
        let r = client.execute("big", Some(args), T).unwrap();
        assert_eq!(r.ret(), Some(&Value::from("big")));
        assert_eq!(
            client.execute("small", None, T).unwrap().ret(),
            Some(&Value::from("small"))
        );
    }

    #[test]
    fn the_greeting_and_negotiation_and_the_end_of_the_stream() {
        let client = pair(inline(ClientOptions::default()), |mut s| {
            s.write_all(
                b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n",
            )
            .unwrap();
            let line = read_line(&mut s);
            assert!(
                line.contains("qmp_capabilities") && line.contains("oob"),
                "{line}"
            );
            s.write_all(b"{\"return\": {}, \"id\": 1}\r\n").unwrap();
            read_line(&mut s);
        });
        assert!(client.oob_enabled());
        assert!(client.greeting().is_some());
        let r = client.execute("x", None, T);
        assert!(matches!(r, Err(Error::Disconnected)), "{r:?}");
        assert!(!client.is_connected());
        assert!(client.next_incoming(T).is_none());
    }

    #[test]
    fn an_interrupt_ends_the_start_and_the_waits() {
        let (read, write) = crate::plumbing::pipe(0).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let interrupt = {
            let stop = Arc::clone(&stop);
            Interrupt {
                fd: read.as_raw_fd(),
                stop: Arc::new(move || stop.load(std::sync::atomic::Ordering::SeqCst)),
            }
        };
        let ring = |stop_now: bool| {
            stop.store(stop_now, std::sync::atomic::Ordering::SeqCst);
            // SAFETY: write(2) of one byte from a live buffer.
            unsafe { libc::write(write.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        };
        // A peer that never greets: the start is given up at once.
        let (a, _b) = UnixStream::pair().unwrap();
        let opts = ClientOptions {
            interrupt: Some(interrupt.clone()),
            greeting_timeout: None,
            ..inline(ClientOptions::default())
        };
        ring(true);
        let e = Client::from_unix_stream(a, opts).unwrap_err();
        assert!(matches!(e, Error::Interrupted), "{e:?}");
        // A peer that never answers: the wait is given up.
        let (a, _b) = UnixStream::pair().unwrap();
        let opts = ClientOptions {
            interrupt: Some(interrupt),
            ..inline(no_handshake())
        };
        let client = Client::from_unix_stream(a, opts).unwrap();
        let e = client.execute("x", None, None).unwrap_err();
        assert!(matches!(e, Error::Interrupted), "{e:?}");
        // A byte that does not mean "stop" only ends a drive().
        let mut byte = [0u8; 1];
        // SAFETY: read(2) into a live one-byte buffer.
        unsafe { libc::read(read.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
        ring(false);
        assert!(!client.drive(None, &[]));
    }

    #[test]
    fn descriptors_are_refused_over_tcp_and_the_connection_goes_on() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let s: UnixStream = {
                use std::os::fd::{FromRawFd, IntoRawFd};
                // SAFETY: the descriptor is moved, not shared (the peer
                // only reads lines and writes bytes).
                unsafe { UnixStream::from_raw_fd(s.into_raw_fd()) }
            };
            echo(s);
        });
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let client = Client::from_tcp_stream(s, inline(no_handshake())).unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        let r = client
            .submit(Request::new(command("add-fd", None)).with_fds(vec![f.into()]))
            .and_then(|p| p.wait(T));
        assert!(
            matches!(&r, Err(Error::Unsupported(w)) if w.contains("cannot pass")),
            "{r:?}"
        );
        assert_eq!(
            client.execute("ok", None, T).unwrap().ret(),
            Some(&Value::from("ok"))
        );
        client.close();
        t.join().unwrap();
    }
}
