//! A misbehaving QMP server for the tests: one scenario per connection.
//!
//! [`serve`] listens on a UNIX socket in a private temporary directory and
//! runs the scenario closure, on its own thread, on the first connection.
//! The closure gets a [`Conn`] with helpers to speak (or break) QMP.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::Value;

/// The greeting of QEMU 7.2.0, as QEMU writes it.
pub const GREETING: &str =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \
     \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n";

/// What the shell prints first in pipe mode when greeted with [`GREETING`].
pub const BANNER: &str = "Welcome to the QMP low-level shell!\nConnected to QEMU 7.2.0\n\n";

/// One accepted connection.
pub struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    /// Write raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        // The shell may have gone already; a scenario never fails on that.
        let _ = self.writer.write_all(bytes);
        let _ = self.writer.flush();
    }

    /// Write the standard greeting.
    pub fn greet(&mut self) {
        self.send(GREETING.as_bytes());
    }

    /// Read one line from the client (`None` at end of stream).
    pub fn read_line(&mut self) -> Option<String> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(String::from_utf8_lossy(&line).trim_end().to_string()),
        }
    }

    /// Read one command: its `execute` name and its `id`.
    ///
    /// The look-ups the shell makes on its own before its first command
    /// (`query-commands`, `query-qmp-schema`, for the deprecation checks)
    /// are answered here, as a server without introspection would
    /// (`CommandNotFound`), and not returned: scenarios see the user's
    /// commands only.
    pub fn read_command(&mut self) -> Option<(String, Id)> {
        loop {
            let line = self.read_line()?;
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("hostile server: client sent non-JSON {line:?}: {e}"));
            let name = v["execute"].as_str().unwrap_or_default().to_string();
            let id = Id(v.get("id").cloned());
            if matches!(name.as_str(), "query-commands" | "query-qmp-schema") {
                self.send(
                    format!(
                        "{{\"error\": {{\"class\": \"CommandNotFound\", \
                         \"desc\": \"The command {name} has not been found\"}}{id}}}\r\n"
                    )
                    .as_bytes(),
                );
                continue;
            }
            return Some((name, id));
        }
    }

    /// Greet, read `qmp_capabilities` and accept it.
    pub fn handshake(&mut self) {
        self.greet();
        let (name, id) = self.read_command().expect("qmp_capabilities");
        assert_eq!(name, "qmp_capabilities");
        self.reply(&id, "{}");
    }

    /// Send `{"return": RET, "id": ID}` as QEMU would (without the id
    /// when the command had none).
    pub fn reply(&mut self, id: &Id, ret: &str) {
        self.send(format!("{{\"return\": {ret}{id}}}\r\n").as_bytes());
    }

    /// Another handle on the connection's socket (see [`client_gone`]).
    pub fn socket(&self) -> UnixStream {
        self.writer.try_clone().expect("clone")
    }

    /// Wait until the client closes its side (bounded), then return.
    pub fn drain(&mut self) {
        let _ = self
            .reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(60)));
        let _ = self.reader.read_to_end(&mut Vec::new());
    }
}

/// A command's `id`, as its reply carries it: shown as the reply's last
/// member (`, "id": ID`), or as nothing when the command had none (QEMU
/// answers in order, and the shell sends ids only where they are needed).
#[derive(Debug, Clone, PartialEq)]
pub struct Id(pub Option<Value>);

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(id) => write!(f, ", \"id\": {id}"),
            None => Ok(()),
        }
    }
}

/// Whether the client of `socket` has closed its side and left nothing
/// unread in it (looked at without blocking or reading).
pub fn client_gone(socket: &UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: recv(2) of at most one byte into `byte`, on a socket we own.
    let n = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0
}

/// A listening hostile server; dropping it removes the directory.
pub struct Server {
    dir: tempfile::TempDir,
    path: PathBuf,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    /// The socket path as a `&str`.
    pub fn addr(&self) -> &str {
        self.path.to_str().expect("UTF-8 path")
    }

    /// A path for a log file in the server's directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Wait for the scenario to finish, re-raising its panic if it failed.
    pub fn join(mut self) {
        if let Some(h) = self.handle.take() {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        }
    }
}

/// Listen on a fresh socket and run `scenario` on the first connection.
pub fn serve(scenario: impl FnOnce(&mut Conn) + Send + 'static) -> Server {
    let dir = tempfile::Builder::new()
        .prefix("qmp-hostile-")
        .tempdir_in(std::env::temp_dir())
        .expect("temporary directory");
    let path = dir.path().join("s.sock");
    let listener = UnixListener::bind(&path).expect("bind hostile server");
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let writer = stream.try_clone().expect("clone");
        let mut conn = Conn {
            reader: BufReader::new(stream),
            writer,
        };
        scenario(&mut conn);
    });
    Server {
        dir,
        path,
        handle: Some(handle),
    }
}
