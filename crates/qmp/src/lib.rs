//! QEMU Machine Protocol (QMP): message types, framing without I/O, and a
//! blocking client.
//!
//! * [`message`]: [`Greeting`], [`Reply`], [`Event`], [`Message::classify`] and
//!   [`command`], pure data.
//! * [`framing`]: [`Decoder`] splits a byte stream into JSON objects
//!   incrementally, with a size limit and no recursion; [`encode`] writes one.
//! * [`address`]: [`Address`], a UNIX socket path or `HOST:PORT`, parsed like
//!   the reference `qmp-shell`, plus QEMU's `unix:PATH` and `tcp:HOST:PORT`
//!   and `ssh://[USER@]HOST[:PORT]/PATH`.
//! * [`transport`]: the [`Transport`] trait and its implementations: byte
//!   streams ([`StreamTransport`]) and a remote socket reached through the
//!   system `ssh` ([`transport::ssh::SshTransport`]).
//! * [`client`]: [`Client`], a thread-safe blocking client over any
//!   transport, with a reader and a writer thread, pipelining
//!   ([`Client::send`] returns a [`Pending`]), out-of-band commands and an
//!   event queue ([`Client::drain_incoming`]). Its protocol state is kept
//!   apart from the threads that drive it (no I/O inside). Its errors keep
//!   their causes: print [`Error`] with its
//!   [`source`](std::error::Error::source) chain.
//! * [`server`]: [`Listener`], for letting QEMU connect to us
//!   (`-qmp unix:PATH`).
//! * [`router`]: [`Router`], one monitor shared by many clients: serves
//!   full QMP sessions on a UNIX socket on top of one [`Client`] (ids
//!   rewritten, events to everyone), as `qmp-proxy` does.
//!
//! # Example
//!
//! See also `examples/query_status.rs`
//! (`cargo run -p qmp-client --example query_status -- /path/to/qmp.sock`).
//!
//! ```no_run
//! use qmp_client::{Address, Client, ClientOptions};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let addr: Address = "/tmp/qmp.sock".parse()?;
//! let client = Client::connect(&addr, ClientOptions::default())?;
//! if let Some((major, minor, micro)) = client.greeting().and_then(|g| g.version()) {
//!     println!("QEMU {major}.{minor}.{micro}");
//! }
//! let reply = client.execute("query-status", None, Some(Duration::from_secs(5)))?;
//! println!("{}", serde_json::to_string(&reply.body)?);
//! for item in client.drain_incoming() {
//!     println!("{item:?}");
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod address;
pub mod client;
pub mod framing;
pub mod message;
mod plumbing;
pub mod router;
pub mod server;
pub mod transport;

pub use address::{Address, AddressError};
pub use client::{
    Client, ClientOptions, Error, EventTap, GreetingHook, Incoming, Interrupt, Pending, Request,
    ServerError, StartError, Tapped,
};
pub use framing::{encode, Decoder, Frame, FrameError};
pub use message::{command, Event, Greeting, Message, Object, Reply};
pub use router::{Router, RouterOptions};
pub use server::Listener;
pub use transport::{Handshake, StreamTransport, Transport};
