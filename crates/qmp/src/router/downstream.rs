//! One client of the router, as its writer sees it: the output queue
//! with its bound, the order in which replies must go (each client gets its
//! replies in the order of its requests), the commands in flight, and the
//! writer thread.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};

use serde_json::Value;

use super::wire;
use crate::client::Error;
use crate::message::{self, Object, Reply};
use crate::plumbing::lock;

/// Bytes of small messages gathered into one write.
pub(super) const WRITE_BATCH: usize = 64 << 10;

/// Bytes for a client: its own, or an event shared by every client.
pub(super) enum Chunk {
    Own(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Chunk {
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Own(v) => v,
            Chunk::Shared(s) => s,
        }
    }
}

/// A reply's place in a client's order of replies ([`Out::order`]).
pub(super) enum Slot {
    /// The reply to a command forwarded, not come yet.
    Awaited,
    /// A reply ready to go (nothing, for a command whose reply is lost with
    /// the upstream).
    Ready(Option<Vec<u8>>),
}

/// What is waiting to be written to a client, and its state.
#[derive(Default)]
pub(super) struct Out {
    pub(super) chunks: VecDeque<Chunk>,
    /// Bytes in `chunks` and held in `order`.
    pub(super) bytes: usize,
    /// Replies in the order of the client's requests, as QEMU gives them:
    /// a slot for each in-band command forwarded and not answered yet, and
    /// the answers that came after one (the router's own, or QEMU's to a
    /// later command), held until the replies before them are written.
    pub(super) order: VecDeque<Slot>,
    /// The turn of the slot at the front of `order`; turns count the
    /// slots ever made.
    pub(super) first_turn: u64,
    /// Commands forwarded and not answered yet.
    pub(super) in_flight: usize,
    /// Events are sent (the client negotiated).
    pub(super) negotiated: bool,
    /// The writer thread is writing chunks it took from the queue: new
    /// output must wait behind them.
    pub(super) writing: bool,
    /// No more input: close once everything is answered and written.
    pub(super) finishing: bool,
    /// Closed: nothing more is written; queued output is dropped.
    pub(super) closed: bool,
}

/// One client of the router.
pub(super) struct Downstream {
    pub(super) stream: UnixStream,
    pub(super) out: Mutex<Out>,
    /// Signalled when output is queued, a command answered, or the state
    /// changes.
    pub(super) cond: Condvar,
    pub(super) max_queued: usize,
}

impl Downstream {
    /// Queue `chunk`; `false` if the client is closed (now or before).
    pub(super) fn push(&self, chunk: Chunk) -> bool {
        let mut out = lock(&self.out);
        self.push_locked(&mut out, chunk)
    }

    pub(super) fn push_locked(&self, out: &mut Out, chunk: Chunk) -> bool {
        if out.closed {
            return false;
        }
        let len = chunk.bytes().len();
        if out.bytes > 0 && out.bytes + len > self.max_queued {
            // It does not read: let it go rather than hold the memory.
            self.close_locked(out);
            return false;
        }
        let mut chunk = chunk;
        if out.chunks.is_empty() && !out.writing {
            // Nothing ahead of it: write at once if the socket takes it
            // without waiting (saves waking the writer thread).
            let bytes = chunk.bytes();
            // SAFETY: send(2) from a valid buffer of `bytes.len()` bytes.
            let n = unsafe {
                libc::send(
                    self.stream.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                let n = n as usize;
                if n == bytes.len() {
                    return true;
                }
                chunk = Chunk::Own(bytes[n..].to_vec());
            } else {
                let err = io::Error::last_os_error();
                if !matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) {
                    self.close_locked(out);
                    return false;
                }
            }
        }
        out.bytes += chunk.bytes().len();
        out.chunks.push_back(chunk);
        self.cond.notify_all();
        true
    }

    /// Queue a reply of the router's own in its turn: after the replies to
    /// the in-band commands sent before it. `false` if the client is
    /// closed.
    pub(super) fn push_reply(&self, reply: &Object) -> bool {
        let bytes = wire::encode(reply);
        let mut out = lock(&self.out);
        if out.order.is_empty() {
            return self.push_locked(&mut out, Chunk::Own(bytes));
        }
        self.hold_locked(&mut out, Slot::Ready(Some(bytes)))
    }

    /// Queue a reply at once, ahead of replies still awaited (what QEMU
    /// answers on reading a message, as an out-of-band command).
    pub(super) fn push_now(&self, reply: &Object) -> bool {
        self.push(Chunk::Own(wire::encode(reply)))
    }

    /// Put `slot` at the end of the order; `false` if the client is closed
    /// (or is now, holding more than it may).
    pub(super) fn hold_locked(&self, out: &mut Out, slot: Slot) -> bool {
        if out.closed {
            return false;
        }
        if let Slot::Ready(Some(bytes)) = &slot {
            let len = bytes.len();
            if out.bytes > 0 && out.bytes + len > self.max_queued {
                self.close_locked(out);
                return false;
            }
            out.bytes += len;
        }
        out.order.push_back(slot);
        true
    }

    /// Write the replies at the front of the order that are ready.
    pub(super) fn release_locked(&self, out: &mut Out) {
        while let Some(Slot::Ready(_)) = out.order.front() {
            let Some(Slot::Ready(bytes)) = out.order.pop_front() else {
                break;
            };
            out.first_turn += 1;
            if let Some(bytes) = bytes {
                out.bytes -= bytes.len();
                if !self.push_locked(out, Chunk::Own(bytes)) {
                    return;
                }
            }
        }
    }

    /// Queue the reply to `qmp_capabilities` and start sending events,
    /// under one lock, so that no event comes before that reply.
    pub(super) fn push_negotiated(&self, reply: Vec<u8>) -> bool {
        let mut out = lock(&self.out);
        out.negotiated = true;
        self.push_locked(&mut out, Chunk::Own(reply))
    }

    pub(super) fn push_event(&self, bytes: &Arc<[u8]>) {
        let mut out = lock(&self.out);
        if out.negotiated {
            self.push_locked(&mut out, Chunk::Shared(Arc::clone(bytes)));
        }
    }

    /// Wait until fewer than `max` commands are in flight, then count one
    /// more; `None` if the client was closed meanwhile. An `in_band`
    /// command gets its turn in the order of replies (`Some(turn)`); an
    /// out-of-band one is answered whenever its reply comes (`Some(None)`).
    pub(super) fn await_room(&self, max: usize, in_band: bool) -> Option<Option<u64>> {
        let mut out = lock(&self.out);
        while out.in_flight >= max.max(1) && !out.closed {
            out = self.cond.wait(out).unwrap_or_else(|e| e.into_inner());
        }
        if out.closed {
            return None;
        }
        out.in_flight += 1;
        if !in_band {
            return Some(None);
        }
        let turn = out.first_turn + out.order.len() as u64;
        out.order.push_back(Slot::Awaited);
        Some(Some(turn))
    }

    /// The result of a forwarded command, whose id was `id`; `turn` is its
    /// place in the order of replies, if it has one.
    pub(super) fn answer(
        &self,
        result: Result<Reply, Error>,
        id: Option<Value>,
        turn: Option<u64>,
    ) {
        let reply = match result {
            Ok(reply) => {
                let mut body = reply.body;
                match &id {
                    Some(id) => {
                        body.insert("id".to_owned(), id.clone());
                    }
                    None => {
                        body.shift_remove("id");
                    }
                }
                Some(body)
            }
            // The upstream is gone; the connection ends once the queue is
            // written.
            Err(Error::Disconnected) => None,
            Err(e) => Some(message::generic_error(id.as_ref(), &e.to_string())),
        };
        let encoded = reply.as_ref().map(wire::encode);
        let mut out = lock(&self.out);
        out.in_flight = out.in_flight.saturating_sub(1);
        match turn {
            Some(turn) => {
                // No slot: the client was closed and its order dropped.
                let slot = turn
                    .checked_sub(out.first_turn)
                    .and_then(|i| usize::try_from(i).ok())
                    .filter(|&i| i < out.order.len() && !out.closed);
                if let Some(i) = slot {
                    out.bytes += encoded.as_ref().map_or(0, Vec::len);
                    out.order[i] = Slot::Ready(encoded);
                    self.release_locked(&mut out);
                }
            }
            None => {
                if let Some(bytes) = encoded {
                    self.push_locked(&mut out, Chunk::Own(bytes));
                }
            }
        }
        self.cond.notify_all();
    }

    /// No more input will be handled: close once every command is answered
    /// and the queue written. Stops the reader too.
    pub(super) fn finish(&self) {
        let mut out = lock(&self.out);
        out.finishing = true;
        self.cond.notify_all();
        drop(out);
        let _ = self.stream.shutdown(std::net::Shutdown::Read);
    }

    /// Close now, dropping whatever is queued.
    pub(super) fn close(&self) {
        let mut out = lock(&self.out);
        self.close_locked(&mut out);
    }

    pub(super) fn close_locked(&self, out: &mut Out) {
        if !out.closed {
            out.closed = true;
            out.chunks.clear();
            out.first_turn += out.order.len() as u64;
            out.order.clear();
            out.bytes = 0;
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
        }
        self.cond.notify_all();
    }

    /// The writer thread: write queued output until closed.
    pub(super) fn write_loop(&self) {
        let mut batch: Vec<Chunk> = Vec::new();
        let mut joined: Vec<u8> = Vec::new();
        let mut stream = &self.stream;
        loop {
            {
                let mut out = lock(&self.out);
                loop {
                    if out.closed {
                        return;
                    }
                    if !out.chunks.is_empty() {
                        break;
                    }
                    if out.finishing && out.in_flight == 0 {
                        self.close_locked(&mut out);
                        return;
                    }
                    out = self.cond.wait(out).unwrap_or_else(|e| e.into_inner());
                }
                let mut size = 0;
                while let Some(chunk) = out.chunks.pop_front() {
                    size += chunk.bytes().len();
                    out.bytes -= chunk.bytes().len();
                    batch.push(chunk);
                    if size >= WRITE_BATCH {
                        break;
                    }
                }
                out.writing = true;
            }
            let written = if batch.len() == 1 {
                stream.write_all(batch[0].bytes())
            } else {
                joined.clear();
                for chunk in &batch {
                    joined.extend_from_slice(chunk.bytes());
                }
                stream.write_all(&joined)
            };
            batch.clear();
            let mut out = lock(&self.out);
            out.writing = false;
            if written.is_err() {
                self.close_locked(&mut out);
                return;
            }
        }
    }
}
