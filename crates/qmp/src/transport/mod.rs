//! Transports: whatever carries QMP messages between a client and a server.
//!
//! A [`Transport`] is split into a [`Source`] of received messages (read by
//! the client's reader thread), a [`Sink`] for messages to send (written by
//! its writer thread) and a [`Closer`] that ends both from any thread. The
//! client, and everything above it, only sees messages, so the same session
//! runs over a UNIX or TCP socket ([`stream`]), an ssh-forwarded socket, or a
//! middleman that carries messages rather than bytes (libvirt's monitor
//! passthrough).

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use crate::framing::FrameError;
use crate::message::{Greeting, Object, Reply};

pub mod libvirt;
pub mod ssh;
pub mod stream;

pub use ssh::SshTransport;
pub use stream::StreamTransport;

/// How a session begins on a transport.
#[derive(Debug, Clone, PartialEq)]
pub enum Handshake {
    /// A QMP server (or a guest agent) at the other end: the client reads
    /// the greeting and negotiates capabilities as its options say.
    Server,
    /// A middleman already negotiated with the server (libvirt does). No
    /// greeting is read and `qmp_capabilities` is not sent; `greeting`, if
    /// any, stands for the server's.
    Negotiated(Option<Greeting>),
}

/// Something a [`Source`] received.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// One complete frame: a JSON object, or why it is not one.
    Frame(Result<Object, FrameError>),
    /// A `0xFF` byte: a guest agent puts one before the reply to
    /// `guest-sync-delimited`; anything partial before it was dropped.
    Delimiter,
    /// A large successful reply kept as the text it arrived as
    /// ([`Reply::text`]); only after [`Source::want_text`].
    Text(Reply),
}

impl From<crate::framing::Frame> for Received {
    fn from(frame: crate::framing::Frame) -> Received {
        match frame {
            crate::framing::Frame::Message(result) => Received::Frame(result),
            crate::framing::Frame::Reply(reply) => Received::Text(reply),
        }
    }
}

/// The receiving half of a transport.
pub trait Source: Send {
    /// Block until the next message arrives. `Ok(None)` at end of stream
    /// (also after the [`Closer`] ran). `raw` is given the text of each frame as
    /// received (trailing whitespace trimmed), for logging.
    fn receive(&mut self, raw: &mut dyn FnMut(&[u8])) -> io::Result<Option<Received>>;

    /// Whether the `raw` given to [`Source::receive`] will use the text it
    /// is given (a reader that keeps no log says `false`, once, before it
    /// receives). A source that has to make that text (from messages that
    /// do not arrive as text) may then skip making it. The default does
    /// nothing; until told, a source makes it.
    fn want_raw(&mut self, _wanted: bool) {}

    /// Keep successful replies of at least `min` bytes as text
    /// ([`Received::Text`]) rather than building their tree of values,
    /// where the source receives text. The default does nothing (every
    /// frame comes as [`Received::Frame`]).
    fn want_text(&mut self, _min: Option<usize>) {}
}

/// The sending half of a transport.
pub trait Sink: Send {
    /// Send one message. `encoded` is `msg` as compact JSON followed by a
    /// newline ([`crate::encode`]); byte transports write it as is. `fds`
    /// are file descriptors to attach; a transport that cannot carry them
    /// fails with [`io::ErrorKind::Unsupported`] and sends nothing.
    fn send(&mut self, msg: &Object, encoded: &[u8], fds: &[RawFd]) -> io::Result<()>;

    /// Send raw bytes that are not a message (the guest agent's `0xFF`
    /// resynchronisation byte). Transports that carry messages rather than
    /// bytes ignore them.
    fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()>;
}

/// Makes sure, from any thread, that every event the server sent before
/// the replies the source has returned so far has been returned too (and
/// so handled by whoever reads the source), waiting at most the given time
/// (`None`: as long as it takes). See [`Transport::syncer`].
pub type Syncer = Arc<dyn Fn(Option<std::time::Duration>) -> io::Result<()> + Send + Sync>;

/// Ends a connection from any thread: a blocked [`Source::receive`] returns
/// end of stream, later sends fail. Idempotent.
pub type Closer = Arc<dyn Fn() + Send + Sync>;

/// The three parts of an opened transport.
pub struct Halves {
    /// What the reader thread reads from.
    pub source: Box<dyn Source>,
    /// What the writer thread writes to.
    pub sink: Box<dyn Sink>,
    /// Closes the connection.
    pub closer: Closer,
}

impl std::fmt::Debug for Halves {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Halves").finish_non_exhaustive()
    }
}

/// A connection that carries QMP messages.
pub trait Transport: Send {
    /// How a session begins on it.
    fn handshake(&self) -> Handshake {
        Handshake::Server
    }

    /// Whether file descriptors can be attached to messages (SCM_RIGHTS
    /// over a UNIX socket).
    fn passes_fds(&self) -> bool {
        false
    }

    /// For a transport that carries events apart from replies (libvirt's
    /// passthrough), a way to wait for the events sent before the replies
    /// received so far. `None` (the default) when the order of the stream
    /// already says so: an event sent before a reply is received first.
    fn syncer(&self) -> Option<Syncer> {
        None
    }

    /// Split into the halves the client's threads use.
    fn split(self: Box<Self>) -> io::Result<Halves>;
}
