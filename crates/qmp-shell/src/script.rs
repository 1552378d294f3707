//! The driver for input that is not a terminal: a pipe, a file, or `-c`.
//!
//! A thread reads lines into a bounded [`LineQueue`]; the engine takes
//! them as fast as it can send them (pipelining) and prints replies in
//! input order. Input whose reads cannot block (the `-c` commands, a
//! regular file) needs no thread: [`run_inline`] reads it as the engine
//! takes it. Neither side ever blocks on the other in a way that ending
//! the session could depend on: the queue can be closed from either end
//! at any time, and the engine sleeps only on its doorbell. Unless the
//! session is quiet (`-c`, `--json`), the banner and a prompt before each
//! line are printed (and a newline at end of input), as the reference does
//! on a pipe.

use std::collections::VecDeque;
use std::io::BufRead;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use crate::doorbell::Doorbell;
use crate::session::Engine;
use crate::signals;

/// Lines read ahead at most.
const READ_AHEAD: usize = 1024;

/// Bytes of lines read ahead at most (a longer line still goes into an
/// empty queue).
const READ_AHEAD_BYTES: usize = 16 << 20;

/// Bytes an input line may have at most (the largest message QEMU takes in
/// one piece is as large); a longer one is skipped, with an error, up to its
/// end, and never held in memory whole.
pub const MAX_LINE: usize = 64 << 20;

/// Where input lines come from: each a line, or why it could not be read.
pub type Lines = Box<dyn Iterator<Item = Result<String, String>> + Send>;

/// Lines of standard input (or any reader): split at `\n` only, like
/// Python's `input()`; a line that is not UTF-8, or longer than
/// [`MAX_LINE`], is reported, not fatal. A read error ends the input, after
/// a message.
pub fn reader_lines<R: BufRead + Send + 'static>(mut reader: R) -> Lines {
    let mut failed = false;
    Box::new(std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let mut buf = Vec::new();
        match read_line_bounded(&mut reader, &mut buf, MAX_LINE) {
            Ok(None) => None,
            Ok(Some(false)) => Some(Err(format!(
                "input line longer than {} MiB; it was skipped",
                MAX_LINE >> 20
            ))),
            Ok(Some(true)) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                Some(
                    String::from_utf8(buf)
                        .map_err(|_| "input line is not valid UTF-8; it was skipped".to_string()),
                )
            }
            Err(err) => {
                failed = true;
                Some(Err(format!("reading input: {err}")))
            }
        }
    }))
}

/// Read one line (up to and with its `\n`) into `buf`, holding at most
/// `limit` bytes of it: `Ok(None)` at the end of input, `Ok(Some(true))`
/// for a line, `Ok(Some(false))` for a line longer than `limit`, read to
/// its end and dropped.
fn read_line_bounded<R: BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Option<bool>> {
    let mut any = false;
    let mut fits = true;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if chunk.is_empty() {
            return Ok(any.then_some(fits));
        }
        any = true;
        let (len, end) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if fits {
            let line_len = buf.len() + len - usize::from(end);
            if line_len > limit {
                fits = false;
                *buf = Vec::new();
            } else {
                buf.extend_from_slice(&chunk[..len]);
            }
        }
        reader.consume(len);
        if end {
            return Ok(Some(fits));
        }
    }
}

/// What [`LineQueue::pop`] found.
#[derive(Debug, PartialEq)]
pub enum Pop {
    /// The next line.
    Line(Result<String, String>),
    /// Nothing yet.
    Empty,
    /// Input ended and every line was taken.
    Ended,
}

#[derive(Default)]
struct QueueState {
    lines: VecDeque<Result<String, String>>,
    /// The bytes of the lines queued.
    bytes: usize,
    ended: bool,
    closed: bool,
}

fn line_bytes(line: &Result<String, String>) -> usize {
    line.as_ref().map_or(0, String::len)
}

/// A bounded queue of input lines between a reader thread and the engine.
/// The reader waits when it is full; [`close`](LineQueue::close) releases
/// it at once, whatever is buffered.
pub struct LineQueue {
    state: Mutex<QueueState>,
    space: Condvar,
    bell: Arc<Doorbell>,
}

impl LineQueue {
    /// Start a thread reading `lines` into a new queue; `bell` rings for
    /// every line and at the end.
    pub fn spawn(lines: Lines, bell: Arc<Doorbell>) -> Arc<LineQueue> {
        let queue = Arc::new(LineQueue {
            state: Mutex::new(QueueState::default()),
            space: Condvar::new(),
            bell,
        });
        let q = Arc::clone(&queue);
        // Detached: a read blocked on an idle terminal or pipe cannot be
        // interrupted, and must not keep the session alive.
        let _ = thread::Builder::new()
            .name("input".to_owned())
            .spawn(move || {
                for line in lines {
                    if !q.push(line) {
                        return;
                    }
                }
                q.lock().ended = true;
                q.bell.ring();
            });
        queue
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add a line, waiting for room; `false` once the queue is closed.
    fn push(&self, line: Result<String, String>) -> bool {
        let mut st = self.lock();
        while (st.lines.len() >= READ_AHEAD
            || (!st.lines.is_empty() && st.bytes + line_bytes(&line) > READ_AHEAD_BYTES))
            && !st.closed
        {
            st = self.space.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.closed {
            return false;
        }
        st.bytes += line_bytes(&line);
        st.lines.push_back(line);
        drop(st);
        self.bell.ring();
        true
    }

    /// Take the next line without waiting.
    pub fn pop(&self) -> Pop {
        let mut st = self.lock();
        match st.lines.pop_front() {
            Some(line) => {
                st.bytes -= line_bytes(&line);
                drop(st);
                self.space.notify_all();
                Pop::Line(line)
            }
            None if st.ended => Pop::Ended,
            None => Pop::Empty,
        }
    }

    /// Stop reading: the reader thread ends at its next line, and what is
    /// buffered is dropped.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.lines.clear();
        st.bytes = 0;
        drop(st);
        self.space.notify_all();
    }
}

/// Where the driver takes its lines from.
enum Input {
    /// Read ahead by a thread of its own.
    Queue(Arc<LineQueue>),
    /// Read here, as they are taken: reads that cannot block.
    Inline(Lines),
}

impl Input {
    fn pop(&mut self) -> Pop {
        match self {
            Input::Queue(queue) => queue.pop(),
            Input::Inline(lines) => lines.next().map_or(Pop::Ended, Pop::Line),
        }
    }

    fn close(&self) {
        if let Input::Queue(queue) = self {
            queue.close();
        }
    }
}

/// Run a session on `lines` (read by a thread of their own) and return
/// the exit status.
pub fn run(engine: Engine, lines: Lines) -> i32 {
    let bell = Arc::clone(engine.doorbell());
    let queue = LineQueue::spawn(lines, bell);
    drive(engine, Input::Queue(queue))
}

/// [`run`] for lines whose reading never blocks (`-c` commands, a regular
/// file): read on this thread as the engine takes them, with no thread to
/// start and no hand-off per line.
pub fn run_inline(engine: Engine, lines: Lines) -> i32 {
    drive(engine, Input::Inline(lines))
}

/// What [`prefetch_stdin`] read.
pub struct Prefetched {
    /// The bytes read.
    pub bytes: Vec<u8>,
    /// Whether they are all there is (the end of input was read).
    pub whole: bool,
}

/// Bytes [`prefetch_stdin`] reads at most.
const PREFETCH: usize = 1 << 20;

/// Read what standard input already holds, without waiting: while poll(2)
/// says a read would not block, up to [`PREFETCH`] bytes or the end of
/// input. A pipe whose writer is done (`<<< WORD`, `echo ... |`) is then
/// read whole, and needs no reader thread.
pub fn prefetch_stdin() -> Prefetched {
    use std::io::Read;
    let mut bytes = Vec::new();
    let mut stdin = std::io::stdin().lock();
    let mut chunk = [0u8; 16 << 10];
    while bytes.len() < PREFETCH {
        let mut fd = libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one pollfd that lives across the call; a
        // zero timeout never waits.
        let ready = unsafe { libc::poll(&mut fd, 1, 0) };
        if ready != 1 || fd.revents & (libc::POLLIN | libc::POLLHUP) == 0 {
            break;
        }
        match stdin.read(&mut chunk) {
            Ok(0) => return Prefetched { bytes, whole: true },
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            // Left to the reader, which reports it.
            Err(_) => break,
        }
    }
    Prefetched {
        bytes,
        whole: false,
    }
}

/// Whether standard input is a regular file (`< FILE`): its reads never
/// wait for a writer.
pub fn stdin_is_regular_file() -> bool {
    crate::files::file_type_of(std::io::stdin()).is_some_and(|t| t.is_file())
}

fn drive(mut engine: Engine, mut input: Input) -> i32 {
    let bell = Arc::clone(engine.doorbell());
    signals::watch(&bell);
    if engine.config().prompts {
        engine.banner();
        engine.queue_prompt();
    }
    let mut ended = false;
    loop {
        let seen = bell.seen();
        if let Some(sig) = signals::terminating() {
            engine.stop_with(128 + sig);
            break;
        }
        engine.pump();
        if engine.stopped().is_some() {
            break;
        }
        // The lines of a /play file come first, as if typed.
        if engine.play_next() {
            engine.queue_prompt();
            continue;
        }
        if engine.wants_input() && !ended {
            match input.pop() {
                Pop::Line(Ok(line)) => {
                    engine.line(&line);
                    engine.queue_prompt();
                    continue;
                }
                Pop::Line(Err(reason)) => {
                    engine.unreadable_line(&reason);
                    engine.queue_prompt();
                    continue;
                }
                Pop::Ended => {
                    ended = true;
                    engine.end_of_input();
                    if engine.config().prompts {
                        engine.queue_text("\n".to_owned());
                    }
                    continue;
                }
                Pop::Empty => {}
            }
        }
        if ended && engine.is_idle() {
            break;
        }
        // Prompts and replies so far go out before we sleep (and a closed
        // standard output shows up now).
        engine.flush();
        if engine.stopped().is_some() {
            break;
        }
        bell.wait(seen, engine.deadline());
    }
    input.close();
    let code = engine.exit_code();
    if engine.config().ends_process {
        // What dropping it would do that matters: the output's buffer
        // written out (a stopped session's too). The rest is the exit's.
        engine.flush_buffered();
        std::mem::forget(engine);
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_line_over_the_limit_is_skipped_to_its_end_and_never_held() {
        // A reader with a small buffer: the long line comes in many pieces.
        let input = format!("ab\n{}\ncd\n{}", "x".repeat(100), "y".repeat(9));
        let mut r = std::io::BufReader::with_capacity(7, input.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Some(true));
        assert_eq!(buf, b"ab\n");
        buf.clear();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Some(false));
        assert!(buf.capacity() <= 16, "{}", buf.capacity());
        buf.clear();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Some(true));
        assert_eq!(buf, b"cd\n");
        buf.clear();
        // The last line, without its newline, one byte over.
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Some(false));
        buf.clear();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), None);
        // Exactly the limit fits, with or without the newline.
        let mut r = std::io::BufReader::with_capacity(3, &b"12345678\n12345678"[..]);
        for _ in 0..2 {
            buf.clear();
            assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Some(true));
        }
    }

    #[test]
    fn closing_releases_a_reader_blocked_on_a_full_queue() {
        let bell = Arc::new(Doorbell::new());
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // An endless input: the reader fills the queue and waits for room.
        // The sender lives in the iterator: it is dropped when the reader
        // thread ends.
        let lines: Lines = Box::new(std::iter::repeat_with(move || {
            let _keep = &tx;
            Ok("x".to_owned())
        }));
        let queue = LineQueue::spawn(lines, Arc::clone(&bell));
        // Wait until it is full.
        let start = Instant::now();
        while queue.lock().lines.len() < READ_AHEAD {
            let seen = bell.seen();
            bell.wait(seen, Some(start + Duration::from_secs(30)));
        }
        assert!(matches!(queue.pop(), Pop::Line(Ok(_))));
        queue.close();
        assert_eq!(queue.pop(), Pop::Empty);
        // The reader thread ends (and drops the sender).
        assert!(rx.recv().is_err());
    }

    #[test]
    fn end_of_input_after_the_last_line() {
        let bell = Arc::new(Doorbell::new());
        let lines: Lines = Box::new(vec![Ok("a".to_owned()), Err("bad".to_owned())].into_iter());
        let queue = LineQueue::spawn(lines, Arc::clone(&bell));
        let mut got = Vec::new();
        loop {
            let seen = bell.seen();
            match queue.pop() {
                Pop::Line(l) => got.push(l),
                Pop::Ended => break,
                Pop::Empty => bell.wait(seen, None),
            }
        }
        assert_eq!(got, [Ok("a".to_owned()), Err("bad".to_owned())]);
    }
}
