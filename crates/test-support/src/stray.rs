//! A stray reply from real QEMU.
//!
//! QEMU 7.2 passes the reply to a command of a client that disconnected
//! before it came on to the next client of the monitor, where it answers
//! nothing (it has no id, or the old client's). [`after_a_stray_reply`]
//! makes that happen.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// How many times a test tries to make QEMU pass on a stray reply before it
/// gives up (nearly every try does).
pub const TRIES: usize = 10;

/// Bound on each wait.
const WAIT: Duration = Duration::from_secs(30);

/// A raw client of the monitor at `socket` negotiates; `next` starts and
/// must connect there (it waits in QEMU's listen backlog: QEMU serves one
/// client at a time); then the raw client sends `query-qmp-schema` without
/// an id and closes before QEMU has answered it. QEMU usually sends that
/// reply to `next`'s connection, after its greeting. Returns what `next`
/// returns.
pub fn after_a_stray_reply<T: Send>(socket: &Path, next: impl FnOnce() -> T + Send) -> T {
    let old = UnixStream::connect(socket).expect("connect the raw client");
    old.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut lines = BufReader::new(old.try_clone().expect("clone"));
    let mut line = String::new();
    lines.read_line(&mut line).expect("greeting");
    assert!(line.starts_with("{\"QMP\""), "{line}");
    (&old)
        .write_all(br#"{"execute": "qmp_capabilities"}"#)
        .expect("send");
    line.clear();
    lines.read_line(&mut line).expect("negotiated");
    assert_eq!(line, "{\"return\": {}}\r\n");
    std::thread::scope(|s| {
        let next = s.spawn(next);
        let start = Instant::now();
        while !connection_pending(socket) {
            assert!(start.elapsed() < WAIT, "the next client never connected");
            std::thread::sleep(Duration::from_millis(5));
        }
        (&old)
            .write_all(br#"{"execute": "query-qmp-schema"}"#)
            .expect("send");
        // Gone before QEMU answers (the schema takes it a few milliseconds).
        std::thread::sleep(Duration::from_millis(3));
        drop(lines);
        drop(old);
        next.join().expect("the next client")
    })
}

/// Whether a connection to the UNIX socket `socket` waits in its listen
/// backlog, not accepted yet (`/proc/net/unix`: a socket with the
/// listener's path in state `SS_CONNECTING`): a client's `connect` has
/// returned, and the server will take it when it next accepts.
pub fn connection_pending(socket: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    let path = socket.to_string_lossy();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8 && fields[5] == "02" && fields[7] == path
    })
}
