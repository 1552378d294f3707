//! Byte-stream transports: a UNIX or TCP socket, or the pipes of a child
//! process (such as `ssh`), split into JSON messages by the [`Decoder`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use super::{Closer, Halves, Received, Sink, Source, Transport};
use crate::framing::Decoder;
use crate::message::Object;

/// Size of each read.
const READ_CHUNK: usize = 16 * 1024;

/// Largest message accepted by default, in bytes.
pub const DEFAULT_MAX_MESSAGE: usize = 256 << 20;

/// Connect to the UNIX socket at `path`, waiting at most `timeout` (when
/// given) for the server to take the connection: `Ok(None)` when it did not.
///
/// A connect(2) to a listener whose queue of connections is full (a server
/// that is stopped or hung, with earlier clients still queued: QEMU keeps a
/// queue of one) otherwise blocks for ever. The wait is bounded with
/// `SO_SNDTIMEO`, which Linux applies to connect(2) on a UNIX socket, and
/// the option is cleared again once connected. Errors are connect(2)'s, as
/// [`UnixStream::connect`] gives them.
pub fn connect_unix(
    path: &std::path::Path,
    timeout: Option<std::time::Duration>,
) -> io::Result<Option<UnixStream>> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;

    let bytes = path.as_os_str().as_bytes();
    // SAFETY: a zeroed sockaddr_un is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let Some(timeout) = timeout else {
        return UnixStream::connect(path).map(Some);
    };
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        // Not a path connect(2) can take: std says why.
        return UnixStream::connect(path).map(Some);
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let set_timeout = |fd: RawFd, t: std::time::Duration| -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_usec: t.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: setsockopt(2) on a descriptor we own, with a timeval of
        // the size given.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: socket(2); the descriptor is owned by `fd` from here on.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // A zero timeval means "no timeout": wait at least a microsecond.
    set_timeout(
        fd.as_raw_fd(),
        timeout.max(std::time::Duration::from_micros(1)),
    )?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        // SAFETY: connect(2) with a sockaddr_un filled in above.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_un as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                set_timeout(fd.as_raw_fd(), left)?;
            }
            Some(libc::EAGAIN) | Some(libc::EINPROGRESS) => return Ok(None),
            _ => return Err(err),
        }
    }
    set_timeout(fd.as_raw_fd(), std::time::Duration::ZERO)?;
    Ok(Some(UnixStream::from(fd)))
}

/// Connect to `host`:`port` over TCP, waiting at most `timeout` in all for
/// the server to take the connection: `Ok(None)` when it did not.
///
/// A server that is stopped or hung, its queue of connections full, makes
/// the kernel drop the connection requests and retry them for minutes.
/// Each address `host` resolves to is tried in turn, as
/// [`TcpStream::connect`] does, within what is left of `timeout`; when none
/// connects, the last error is returned.
pub fn connect_tcp(
    host: &str,
    port: u16,
    timeout: std::time::Duration,
) -> io::Result<Option<TcpStream>> {
    use std::net::ToSocketAddrs;
    let deadline = std::time::Instant::now() + timeout;
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => return Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(None),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any addresses",
        )
    }))
}

/// A transport over a byte stream.
pub struct StreamTransport {
    reader: Box<dyn Read + Send>,
    writer: Box<dyn Write + Send>,
    /// The UNIX socket, for sending file descriptors.
    unix: Option<UnixStream>,
    closer: Closer,
    max_message: usize,
    delimiters: bool,
}

impl std::fmt::Debug for StreamTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTransport")
            .field("passes_fds", &self.unix.is_some())
            .field("max_message", &self.max_message)
            .field("delimiters", &self.delimiters)
            .finish_non_exhaustive()
    }
}

impl StreamTransport {
    /// A connected UNIX socket; it can pass file descriptors.
    pub fn unix(stream: UnixStream) -> io::Result<StreamTransport> {
        let control = stream.try_clone()?;
        let writer = stream.try_clone()?;
        let unix = stream.try_clone()?;
        let closer: Closer = Arc::new(move || {
            let _ = control.shutdown(Shutdown::Both);
        });
        Ok(StreamTransport {
            unix: Some(unix),
            ..StreamTransport::pipes(Box::new(stream), Box::new(writer), closer)
        })
    }

    /// A connected TCP socket.
    pub fn tcp(stream: TcpStream) -> io::Result<StreamTransport> {
        let control = stream.try_clone()?;
        let writer = stream.try_clone()?;
        // Commands are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let closer: Closer = Arc::new(move || {
            let _ = control.shutdown(Shutdown::Both);
        });
        Ok(StreamTransport::pipes(
            Box::new(stream),
            Box::new(writer),
            closer,
        ))
    }

    /// Any reader and writer (say, the pipes of a child process), with
    /// `closer` to end them (say, killing the child).
    pub fn pipes(
        reader: Box<dyn Read + Send>,
        writer: Box<dyn Write + Send>,
        closer: Closer,
    ) -> StreamTransport {
        StreamTransport {
            reader,
            writer,
            unix: None,
            closer,
            max_message: DEFAULT_MAX_MESSAGE,
            delimiters: false,
        }
    }

    /// Refuse messages longer than `limit` bytes (default 256 MiB): they are
    /// discarded and reported as [`crate::FrameError::TooLarge`].
    pub fn max_message(mut self, limit: usize) -> StreamTransport {
        self.max_message = limit;
        self
    }

    /// Report `0xFF` bytes as [`Received::Delimiter`] (for a guest agent),
    /// dropping any partial message before them.
    pub fn delimiters(mut self, on: bool) -> StreamTransport {
        self.delimiters = on;
        self
    }
}

impl Transport for StreamTransport {
    fn passes_fds(&self) -> bool {
        self.unix.is_some()
    }

    fn split(self: Box<Self>) -> io::Result<Halves> {
        let this = *self;
        Ok(Halves {
            source: Box::new(StreamSource {
                reader: this.reader,
                decoder: Decoder::new(this.max_message),
                buf: vec![0; READ_CHUNK],
                delimiters: this.delimiters,
                pending: Vec::new(),
                at_delimiter: false,
                eof: false,
            }),
            sink: Box::new(StreamSink {
                writer: this.writer,
                unix: this.unix,
            }),
            closer: this.closer,
        })
    }
}

struct StreamSource {
    reader: Box<dyn Read + Send>,
    decoder: Decoder,
    buf: Vec<u8>,
    delimiters: bool,
    /// Bytes read after a delimiter, not yet fed to the decoder.
    pending: Vec<u8>,
    /// A delimiter was found: it is reported once the complete frames
    /// before it have been.
    at_delimiter: bool,
    eof: bool,
}

impl StreamSource {
    /// Feed `bytes` to the decoder, stopping at a delimiter. Returns `true`
    /// when one was found (what follows it is kept in `pending`).
    fn feed(&mut self, bytes: &[u8]) -> bool {
        if self.delimiters {
            if let Some(at) = bytes.iter().position(|b| *b == 0xff) {
                self.decoder.feed(&bytes[..at]);
                self.pending.extend_from_slice(&bytes[at + 1..]);
                return true;
            }
        }
        self.decoder.feed(bytes);
        false
    }
}

impl Source for StreamSource {
    fn want_text(&mut self, min: Option<usize>) {
        self.decoder.text_replies(min);
    }

    fn receive(&mut self, raw: &mut dyn FnMut(&[u8])) -> io::Result<Option<Received>> {
        loop {
            if let Some(frame) = self.decoder.next_frame_with_raw(raw) {
                return Ok(Some(frame.into()));
            }
            if self.at_delimiter {
                // Whatever partial message came before the 0xFF is stale.
                self.at_delimiter = false;
                self.decoder.reset();
                return Ok(Some(Received::Delimiter));
            }
            if !self.pending.is_empty() {
                let pending = std::mem::take(&mut self.pending);
                self.at_delimiter = self.feed(&pending);
                continue;
            }
            if self.eof {
                return Ok(None);
            }
            let n = loop {
                match self.reader.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                self.eof = true;
                continue;
            }
            let chunk = std::mem::take(&mut self.buf);
            self.at_delimiter = self.feed(&chunk[..n]);
            self.buf = chunk;
        }
    }
}

struct StreamSink {
    writer: Box<dyn Write + Send>,
    unix: Option<UnixStream>,
}

impl Sink for StreamSink {
    fn send(&mut self, _msg: &Object, encoded: &[u8], fds: &[RawFd]) -> io::Result<()> {
        if fds.is_empty() {
            return self.send_raw(encoded);
        }
        match &self.unix {
            Some(sock) => send_with_fds(sock, encoded, fds),
            None => Err(io::Error::new(io::ErrorKind::Unsupported, NO_FDS)),
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }
}

/// Write `bytes` on `sock`, the descriptors attached to the first byte
/// (SCM_RIGHTS), the rest as plain writes.
fn send_with_fds(sock: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let sent = loop {
        match sendmsg_with_fds(sock.as_raw_fd(), bytes, fds, libc::MSG_NOSIGNAL) {
            Ok(n) => break n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    };
    // The descriptors went with the first bytes; the rest is plain data.
    let mut w = sock;
    w.write_all(&bytes[sent..])
}

/// Why a message with descriptors cannot go over this connection.
pub(crate) const NO_FDS: &str =
    "this connection cannot pass file descriptors (only a UNIX socket can)";

/// One sendmsg(2) of `bytes` on socket `sock` with `flags`, the
/// descriptors attached (SCM_RIGHTS): how many bytes went.
pub(crate) fn sendmsg_with_fds(
    sock: RawFd,
    bytes: &[u8],
    fds: &[RawFd],
    flags: libc::c_int,
) -> io::Result<usize> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as libc::c_uint) } as usize;
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points to `space` bytes, enough for one cmsghdr
    // carrying `fds.len()` descriptors; CMSG_FIRSTHDR and CMSG_DATA stay
    // inside that buffer.
    let n = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as libc::c_uint) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), fd_bytes);
        libc::sendmsg(sock, &msg, flags)
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::FrameError;

    fn frames(t: StreamTransport) -> Vec<String> {
        let mut halves = Box::new(t).split().unwrap();
        let mut out = Vec::new();
        while let Some(r) = halves.source.receive(&mut |_| {}).unwrap() {
            out.push(match r {
                Received::Frame(Ok(obj)) => serde_json::to_string(&obj).unwrap(),
                Received::Frame(Err(FrameError::NotJson { text, .. })) => format!("bad {text}"),
                Received::Frame(Err(e)) => format!("err {e}"),
                Received::Delimiter => "FF".to_owned(),
                Received::Text(r) => format!("text {}", r.text().unwrap_or_default()),
            });
        }
        out
    }

    fn pipe_transport(input: &'static [u8], delimiters: bool) -> StreamTransport {
        StreamTransport::pipes(Box::new(input), Box::new(io::sink()), Arc::new(|| {}))
            .delimiters(delimiters)
    }

    #[test]
    fn delimiter_drops_the_partial_message_before_it() {
        let input = b"{\"return\": 1}\n{\"stale\": \xff{\"return\": 2}\n\xff\xff{\"return\": 3}";
        assert_eq!(
            frames(pipe_transport(input, true)),
            [
                r#"{"return":1}"#,
                "FF",
                r#"{"return":2}"#,
                "FF",
                "FF",
                r#"{"return":3}"#
            ]
        );
    }

    #[test]
    fn without_delimiters_0xff_is_just_bad_bytes() {
        let out = frames(pipe_transport(b"{\"a\": \"\xff\"}\n{\"b\": 1}", false));
        assert_eq!(out, ["err message is not valid UTF-8", r#"{"b":1}"#]);
    }

    #[test]
    fn fds_travel_over_a_unix_socket() {
        use std::os::fd::FromRawFd;
        let (a, b) = UnixStream::pair().unwrap();
        let t = StreamTransport::unix(a).unwrap();
        assert!(t.passes_fds());
        let mut halves = Box::new(t).split().unwrap();
        let file = tempfile::tempfile().unwrap();
        halves
            .sink
            .send(&Object::new(), b"{\"x\": 1}\n", &[file.as_raw_fd()])
            .unwrap();
        // Receive it by hand: one descriptor, and the bytes.
        let mut buf = [0u8; 64];
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: as in send_with_fds, with buffers of the stated sizes.
        let (n, fd) = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            let n = libc::recvmsg(b.as_raw_fd(), &mut msg, 0);
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            assert!(!cmsg.is_null());
            let mut fd: RawFd = -1;
            std::ptr::copy_nonoverlapping(
                libc::CMSG_DATA(cmsg),
                (&mut fd as *mut RawFd).cast::<u8>(),
                std::mem::size_of::<RawFd>(),
            );
            (n, fd)
        };
        assert_eq!(&buf[..n as usize], b"{\"x\": 1}\n");
        // SAFETY: the descriptor was just received and is ours.
        let mut received = unsafe { std::fs::File::from_raw_fd(fd) };
        received.write_all(b"hello").unwrap();
        let mut back = String::new();
        use std::io::Seek;
        let mut original = file;
        original.seek(io::SeekFrom::Start(0)).unwrap();
        original.read_to_string(&mut back).unwrap();
        assert_eq!(back, "hello");
    }

    #[test]
    fn tcp_cannot_pass_fds() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let t = StreamTransport::tcp(c).unwrap();
        assert!(!t.passes_fds());
        let mut halves = Box::new(t).split().unwrap();
        let e = halves.sink.send(&Object::new(), b"{}\n", &[0]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
    }
}
