//! For the client's unit tests: a scripted peer over a socketpair (for
//! behaviour QEMU cannot produce on demand), and what the tests use.

pub(crate) use std::io::{self, BufRead, BufReader, Read, Write};
pub(crate) use std::os::unix::net::UnixStream;
pub(crate) use std::sync::{Arc, Mutex};
pub(crate) use std::thread;
pub(crate) use std::time::Duration;

pub(crate) use serde_json::Value;

pub(crate) use super::{Client, ClientOptions, Incoming, Pending, Request};
pub(crate) use crate::message::command;
pub(crate) use crate::plumbing::lock;

/// A client of a peer that runs `script` on the other end of a socketpair.
pub(crate) fn pair(
    opts: ClientOptions,
    script: impl FnOnce(UnixStream) + Send + 'static,
) -> Client {
    let (a, b) = UnixStream::pair().unwrap();
    thread::spawn(move || script(b));
    Client::from_unix_stream(a, opts).unwrap()
}

/// Options for a peer that neither greets nor negotiates.
pub(crate) fn no_handshake() -> ClientOptions {
    ClientOptions {
        read_greeting: false,
        negotiate: false,
        ..ClientOptions::default()
    }
}

/// The next line the client sent, without its newline.
pub(crate) fn read_line(s: &mut UnixStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
        out.push(b[0]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A bound for waits that should end at once (only a broken client hits it).
pub(crate) const T: Option<Duration> = Some(Duration::from_secs(30));

/// A log that keeps what is written to it.
#[derive(Clone, Default)]
pub(crate) struct Buf(pub(crate) Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        lock(&self.0).extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
