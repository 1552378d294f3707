//! The shell against peers that misbehave, die, or never answer, and the
//! exit statuses.
//!
//! Each scenario of the hostile server (`hostile_server/`) has one defined
//! outcome. Fatal ones end with exactly one line on standard error and exit
//! status 1; recoverable ones report the problem and let the shell carry on.
//! None may panic, overflow the stack, hang (every run has a hard timeout) or
//! use memory beyond a small multiple of the message size.

use crate::common;
use crate::hostile_server;
use qmp_test_support::silent;
use qmp_test_support::stray;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{escape_visible, ours, run_shell, Peer, SHELL_TIMEOUT};
use hostile_server::{serve, Conn, Server, BANNER};

/// Run our shell on `server` with `args` (the address is appended).
fn shell(server: &Server, args: &[&str], stdin: &str) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.push(server.addr());
    run_shell(&ours(), &all, stdin, SHELL_TIMEOUT)
}

/// Assert exit status, standard output and standard error exactly.
#[track_caller]
fn expect(out: &Output, code: i32, stdout: &str, stderr: &str) {
    let ok = out.status.code() == Some(code)
        && out.stdout == stdout.as_bytes()
        && out.stderr == stderr.as_bytes();
    assert!(
        ok,
        "expected exit {code}, stdout\n{}\nstderr\n{}\ngot {:?}, stdout\n{}\nstderr\n{}",
        escape_visible(stdout.as_bytes()),
        escape_visible(stderr.as_bytes()),
        out.status,
        escape_visible(&out.stdout),
        escape_visible(&out.stderr),
    );
}

/// The pipe-mode transcript: banner, then `(QEMU) ` before each output chunk.
fn transcript(chunks: &[&str]) -> String {
    let mut s = BANNER.to_string();
    for c in chunks {
        s.push_str("(QEMU) ");
        s.push_str(c);
    }
    s
}

fn couldnt(server: &Server, reason: &str) -> String {
    format!("ERROR: Couldn't connect to {}: {reason}\n", server.addr())
}

/// A shell whose standard input the test feeds step by step.
struct Live {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Option<thread::JoinHandle<Vec<u8>>>,
    err: Option<thread::JoinHandle<Vec<u8>>>,
    _home: tempfile::TempDir,
}

impl Live {
    fn start(args: &[&str]) -> Live {
        let home = tempfile::tempdir().unwrap();
        let mut child = Command::new(ours())
            .args(args)
            .env("HOME", home.path())
            .env_remove("QMP_SOCKET")
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the shell");
        let collect = |mut r: Box<dyn Read + Send>| {
            thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                v
            })
        };
        Live {
            stdin: child.stdin.take(),
            out: Some(collect(Box::new(child.stdout.take().unwrap()))),
            err: Some(collect(Box::new(child.stderr.take().unwrap()))),
            child,
            _home: home,
        }
    }

    fn write(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Wait (bounded) for the shell to exit, first closing its standard
    /// input if `close_stdin`.
    fn finish(mut self, close_stdin: bool) -> Output {
        if close_stdin {
            self.stdin = None;
        }
        let deadline = Instant::now() + SHELL_TIMEOUT;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "the shell did not exit");
            thread::sleep(Duration::from_millis(5));
        };
        self.stdin = None;
        Output {
            status,
            stdout: self.out.take().unwrap().join().unwrap(),
            stderr: self.err.take().unwrap().join().unwrap(),
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait (bounded) until a line of the `-l` log satisfies `pred`.
fn wait_for_log(log: &Path, pred: impl Fn(&str) -> bool) {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(&pred) {
            return;
        }
        assert!(
            start.elapsed() < SHELL_TIMEOUT,
            "expected line not logged; log:\n{text}"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

// ---------------------------------------------------------------------------
// At connection time: all fatal, exit 1, nothing on stdout.
// ---------------------------------------------------------------------------

#[test]
fn close_before_greeting() {
    let server = serve(|_c: &mut Conn| {});
    let out = shell(&server, &[], "query-status\n");
    expect(
        &out,
        1,
        "",
        &couldnt(&server, "connection closed before the greeting"),
    );
    server.join();
}

#[test]
fn close_after_greeting() {
    let server = serve(|c| {
        c.greet();
        c.read_line();
    });
    let out = shell(&server, &[], "query-status\n");
    expect(
        &out,
        1,
        "",
        &couldnt(&server, "connection closed during capabilities negotiation"),
    );
    server.join();
}

#[test]
fn garbage_greeting() {
    let server = serve(|c| {
        c.send(b"SSH-2.0-OpenSSH_9.2p1\r\n");
        c.drain();
    });
    let out = shell(&server, &[], "query-status\n");
    expect(
        &out,
        1,
        "",
        &couldnt(
            &server,
            "expected a QMP greeting, got: invalid JSON (expected value at line 1 column 1): \
             SSH-2.0-OpenSSH_9.2p1",
        ),
    );
    server.join();
}

#[test]
fn json_greeting_that_is_not_qmp() {
    let server = serve(|c| {
        c.send(b"{\"hello\": \"world\"}\r\n");
        c.drain();
    });
    let out = shell(&server, &[], "query-status\n");
    expect(
        &out,
        1,
        "",
        &couldnt(
            &server,
            "expected a QMP greeting, got: {\"hello\":\"world\"}",
        ),
    );
    server.join();
}

/// The message says what the shell waited for: the greeting for
/// `--timeout`, then an answer to the probe that tells a guest agent
/// (which sends no greeting) for at most 1 s more, and no longer than
/// `--timeout` itself.
#[test]
fn greeting_never_comes_is_bounded_by_timeout() {
    for (timeout, probe) in [("1", "1"), ("0.3", "0.3")] {
        let server = serve(|c| c.drain());
        let out = shell(&server, &["--timeout", timeout], "query-status\n");
        expect(
            &out,
            1,
            "",
            &couldnt(
                &server,
                &format!(
                    "no greeting within {timeout} s, nor an answer to a guest-agent probe \
                     within {probe} s more (another client may be attached: QEMU serves one \
                     client per monitor at a time)"
                ),
            ),
        );
        server.join();
    }
}

#[test]
fn greeting_never_comes_default_bound_is_10_s() {
    // The bound is in the message: no need to read the clock.
    let server = serve(|c| c.drain());
    let out = shell(&server, &[], "query-status\n");
    expect(
        &out,
        1,
        "",
        &couldnt(
            &server,
            "no greeting within 10 s, nor an answer to a guest-agent probe within 1 s more \
             (another client may be attached: QEMU serves one client per monitor at a time)",
        ),
    );
    server.join();
}

#[test]
fn negotiation_refused() {
    let server = serve(|c| {
        c.greet();
        let (_, id) = c.read_command().unwrap();
        c.send(
            format!(
                "{{\"error\": {{\"class\": \"CommandNotFound\", \
                 \"desc\": \"The command qmp_capabilities has not been found\"}}{id}}}\r\n"
            )
            .as_bytes(),
        );
        c.drain();
    });
    let out = shell(&server, &[], "query-status\n");
    expect(
        &out,
        1,
        "",
        &couldnt(&server, "The command qmp_capabilities has not been found"),
    );
    server.join();
}

#[test]
fn negotiation_never_answered_is_bounded_by_timeout() {
    let server = serve(|c| {
        c.greet();
        c.drain();
    });
    let out = shell(&server, &["--timeout", "1"], "query-status\n");
    expect(
        &out,
        1,
        "",
        &couldnt(&server, "timed out waiting for the qmp_capabilities reply"),
    );
    server.join();
}

// ---------------------------------------------------------------------------
// While a command waits.
// ---------------------------------------------------------------------------

#[test]
fn half_a_reply_then_end_of_stream_is_disconnected() {
    let server = serve(|c| {
        c.handshake();
        c.read_command().unwrap();
        c.send(b"{\"return\": {\"status\": \"runn");
    });
    let out = shell(&server, &[], "query-status\nquery-version\n");
    expect(&out, 1, &transcript(&[""]), "Disconnected\n");
    server.join();
}

#[test]
fn end_of_stream_after_a_reply_is_disconnected_at_the_next_command() {
    let server = serve(|c| {
        c.handshake();
        let (_, id) = c.read_command().unwrap();
        c.reply(&id, "{}");
    });
    // The server goes away after answering the first command.
    let out = shell(&server, &[], "stop\nquery-status\n");
    expect(
        &out,
        1,
        &transcript(&["{\"return\": {}}\n", ""]),
        "Disconnected\n",
    );
    server.join();
}

/// A frame that cannot be a reply goes to the oldest waiting command as an
/// error; the shell goes on with the next command.
fn recoverable_frame(frame: &'static [u8], error: &str) {
    let make = || {
        serve(move |c| {
            c.handshake();
            c.read_command().unwrap();
            c.send(frame);
            let (_, id) = c.read_command().unwrap();
            c.reply(&id, "{\"ok\": 1}");
            c.drain();
        })
    };
    let stdout = transcript(&["", "{\"return\": {\"ok\": 1}}\n", "\n"]);
    let stderr = format!("ERROR: {error}\n");
    let server = make();
    let out = shell(&server, &[], "first\nsecond\n");
    expect(&out, 0, &stdout, &stderr);
    server.join();
    // It counts as a failed command.
    let server = make();
    let out = shell(&server, &["--exit-status"], "first\nsecond\n");
    expect(&out, 3, &stdout, &stderr);
    server.join();
}

#[test]
fn line_that_is_not_json() {
    recoverable_frame(
        b"this is not JSON\r\n",
        "invalid JSON (expected ident at line 1 column 2): this is not JSON",
    );
}

#[test]
fn broken_json_object() {
    recoverable_frame(
        b"{\"return\": {,}}\r\n",
        "invalid JSON (key must be a string at line 1 column 13): {\"return\": {,}}",
    );
}

#[test]
fn json_that_is_not_an_object() {
    recoverable_frame(b"[1, 2, 3]\r\n", "JSON value is not an object: [1, 2, 3]");
    recoverable_frame(b"42\r\n", "JSON value is not an object: 42");
}

#[test]
fn invalid_utf8() {
    recoverable_frame(
        b"{\"return\": \"caf\xe9\"}\r\n",
        "message is not valid UTF-8",
    );
}

#[test]
fn garbage_while_no_command_waits_is_a_warning() {
    let server = serve(|c| {
        c.handshake();
        c.send(b"garbage\r\n[1]\r\n{\"event\": \"SYNC\"}\r\n");
        let (_, id) = c.read_command().unwrap();
        c.reply(&id, "{}");
        c.drain();
    });
    let log = server.file("log");
    let mut shell = Live::start(&["-l", log.to_str().unwrap(), server.addr()]);
    // Frames are routed in order: once the event is logged, both bad
    // frames were handled with no command waiting.
    wait_for_log(&log, |l| l.contains("SYNC"));
    shell.write("x\n");
    let out = shell.finish(true);
    expect(
        &out,
        0,
        &transcript(&["{\"return\": {}}\n", "\n"]),
        "warning: invalid JSON (expected value at line 1 column 1): garbage\n\
         warning: JSON value is not an object: [1]\n",
    );
    server.join();
}

#[test]
fn nesting_200000_levels_deep() {
    const DEPTH: usize = 200_000;
    let server = serve(|c| {
        c.handshake();
        let (_, id) = c.read_command().unwrap();
        let mut msg = String::from("{\"return\": ");
        msg.push_str(&"[".repeat(DEPTH));
        msg.push_str(&"]".repeat(DEPTH));
        msg.push_str(&format!("{id}}}\r\n"));
        c.send(msg.as_bytes());
        let (_, id) = c.read_command().unwrap();
        c.reply(&id, "[[[[[[[[[[1]]]]]]]]]]");
        c.drain();
    });
    let out = shell(&server, &[], "deep\nshallow\n");
    let stdout = transcript(&["", "{\"return\": [[[[[[[[[[1]]]]]]]]]]}\n", "\n"]);
    let stderr = format!(
        "ERROR: invalid JSON (recursion limit exceeded at line 1 column 138): {{\"return\": {}...\n",
        "[".repeat(69)
    );
    expect(&out, 0, &stdout, &stderr);
    server.join();
}

#[test]
fn reply_dripped_one_byte_at_a_time() {
    let text = "x".repeat(2000);
    let expected = transcript(&[&format!("{{\"return\": {{\"text\": \"{text}\"}}}}\n"), "\n"]);
    let server = serve(move |c| {
        c.handshake();
        let (_, id) = c.read_command().unwrap();
        let msg = format!("{{\"return\": {{\"text\": \"{text}\"}}{id}}}\r\n");
        for b in msg.as_bytes() {
            c.send(&[*b]);
            thread::sleep(Duration::from_micros(200));
        }
        c.drain();
    });
    let out = shell(&server, &[], "slow\n");
    expect(&out, 0, &expected, "");
    server.join();
}

#[test]
fn twenty_thousand_events_before_a_reply() {
    const N: usize = 20_000;
    let server = serve(|c| {
        c.handshake();
        let (_, id) = c.read_command().unwrap();
        let mut burst = String::new();
        for i in 0..N {
            burst.push_str(&format!(
                "{{\"timestamp\": {{\"seconds\": 1, \"microseconds\": {i}}}, \
                 \"event\": \"TICK\", \"data\": {{\"i\": {i}}}}}\r\n"
            ));
        }
        burst.push_str(&format!("{{\"return\": {{}}{id}}}\r\n"));
        c.send(burst.as_bytes());
        c.drain();
    });
    // The empty line prints the events received so far.
    let out = shell(&server, &[], "x\n\n");
    let mut events = String::new();
    for i in 0..N {
        events.push_str(&format!(
            "{{\"timestamp\": {{\"seconds\": 1, \"microseconds\": {i}}}, \
             \"event\": \"TICK\", \"data\": {{\"i\": {i}}}}}\n"
        ));
    }
    let expected = transcript(&["{\"return\": {}}\n", &events, "\n"]);
    expect(&out, 0, &expected, "");
    server.join();
}

#[test]
fn reply_with_an_id_nobody_sent_is_a_warning() {
    let server = serve(|c| {
        c.handshake();
        let (_, id) = c.read_command().unwrap();
        c.send(b"{\"return\": {\"stray\": true}, \"id\": \"nobody\"}\r\n");
        c.reply(&id, "{\"mine\": true}");
        c.drain();
    });
    let out = shell(&server, &[], "x\n");
    expect(
        &out,
        0,
        &transcript(&["{\"return\": {\"mine\": true}}\n", "\n"]),
        "warning: ignoring reply with unknown id \"nobody\": \
         {\"return\":{\"stray\":true},\"id\":\"nobody\"}\n",
    );
    server.join();
}

#[test]
fn error_replies_with_fields_missing() {
    let bodies = [
        "{}",
        "{\"class\": \"GenericError\"}",
        "{\"desc\": \"no class\"}",
        "\"just a string\"",
        "null",
    ];
    let scenario = move |c: &mut Conn| {
        c.handshake();
        for body in bodies {
            let (_, id) = c.read_command().unwrap();
            c.send(format!("{{\"error\": {body}{id}}}\r\n").as_bytes());
        }
        c.drain();
    };
    let input = "a\nb\nc\nd\ne\n";

    // QMP mode prints each reply as it came; each one is a failed command.
    let server = serve(scenario);
    let out = shell(&server, &["--exit-status"], input);
    let replies: Vec<String> = bodies
        .iter()
        .map(|b| format!("{{\"error\": {b}}}\n"))
        .collect();
    let mut chunks: Vec<&str> = replies.iter().map(String::as_str).collect();
    chunks.push("\n");
    expect(&out, 3, &transcript(&chunks), "");
    server.join();

    // HMP mode formats what it can.
    let server = serve(scenario);
    let out = shell(&server, &["-H", "--exit-status"], input);
    let hmp_banner = BANNER.replace("QMP low-level", "HMP");
    let mut expected = hmp_banner;
    for line in [
        "Error: {}\n",
        "GenericError: {\"class\": \"GenericError\"}\n",
        "Error: no class\n",
        "{\"error\": \"just a string\"}\n",
        "{\"error\": null}\n",
        "\n",
    ] {
        expected.push_str("(QEMU) ");
        expected.push_str(line);
    }
    expect(&out, 3, &expected, "");
    server.join();
}

#[test]
fn server_that_never_answers_is_bounded_by_timeout() {
    let server = serve(|c| {
        c.handshake();
        c.drain();
    });
    let out = shell(
        &server,
        &["--timeout", "1"],
        "query-status\nquery-version\n",
    );
    expect(&out, 1, &transcript(&[""]), "ERROR: no reply within 1 s\n");
    server.join();
}

#[test]
fn server_that_never_answers_with_dash_c() {
    let server = serve(|c| {
        c.handshake();
        c.drain();
    });
    let out = shell(&server, &["--timeout", "0.5", "-c", "query-status"], "");
    expect(&out, 1, "", "ERROR: no reply within 0.5 s\n");
    server.join();
}

// ---------------------------------------------------------------------------
// A 64 MiB reply: printed whole, memory bounded.
// ---------------------------------------------------------------------------

#[test]
fn reply_of_64_mib_with_bounded_memory() {
    const SIZE: usize = 64 << 20;
    let server = serve(|c| {
        c.handshake();
        let (_, id) = c.read_command().unwrap();
        let mut msg = Vec::with_capacity(SIZE + 64);
        msg.extend_from_slice(b"{\"return\": \"");
        msg.resize(msg.len() + SIZE, b'a');
        msg.extend_from_slice(format!("\"{id}}}\r\n").as_bytes());
        c.send(&msg);
        drop(msg);
        c.drain();
    });
    let time = Path::new("/usr/bin/time");
    assert!(time.exists(), "/usr/bin/time is needed to measure memory");
    let out = run_shell(
        time,
        &[
            "-f",
            "%M",
            ours().to_str().unwrap(),
            "-c",
            "big",
            server.addr(),
        ],
        "",
        SHELL_TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    // stdout: exactly the reply.
    let prefix = b"{\"return\": \"";
    assert_eq!(out.stdout.len(), prefix.len() + SIZE + 3);
    assert!(out.stdout.starts_with(prefix));
    assert!(out.stdout.ends_with(b"\"}\n"));
    assert!(out.stdout[prefix.len()..prefix.len() + SIZE]
        .iter()
        .all(|&b| b == b'a'));
    // stderr: only the peak RSS in KiB from time(1).
    let peak_kib: usize = stderr
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("unexpected stderr: {stderr}"));
    let peak = peak_kib * 1024;
    eprintln!(
        "peak RSS for a 64 MiB reply: {} MiB ({:.1}x)",
        peak >> 20,
        peak as f64 / SIZE as f64
    );
    assert!(
        peak < 4 * SIZE,
        "peak RSS {} MiB is more than 4x the 64 MiB message",
        peak >> 20
    );
    server.join();
}

/// The documented cap on one message, 256 MiB: a reply one byte longer is
/// refused with a one-line error (the command counts as failed), the
/// memory it takes stays bounded by the cap (bytes beyond it are skipped,
/// not buffered), and the shell goes on with the next command. The shell has no option to lower its cap, so the test sends the
/// real size, in 1 MiB writes; the library's cap is tested at its exact
/// boundary, with a small configured value, in crates/qmp/tests/qmp/peers.rs.
#[test]
fn reply_one_byte_over_256_mib_is_refused() {
    const CAP: usize = 256 << 20;
    let server = serve(|c| {
        c.handshake();
        let (_, id) = c.read_command().unwrap();
        let head = b"{\"return\": \"".to_vec();
        let tail = format!("\"{id}}}");
        // The message (without its line end) is CAP + 1 bytes.
        let mut fill = CAP + 1 - head.len() - tail.len();
        c.send(&head);
        let chunk = vec![b'a'; 1 << 20];
        while fill > 0 {
            let n = fill.min(chunk.len());
            c.send(&chunk[..n]);
            fill -= n;
        }
        c.send(format!("{tail}\r\n").as_bytes());
        let (_, id) = c.read_command().unwrap();
        c.reply(&id, "{\"ok\": 1}");
        c.drain();
    });
    let time = Path::new("/usr/bin/time");
    assert!(time.exists(), "/usr/bin/time is needed to measure memory");
    let out = run_shell(
        time,
        &[
            "-q",
            "-f",
            "%M",
            ours().to_str().unwrap(),
            "--exit-status",
            server.addr(),
        ],
        "big\nsmall\n",
        SHELL_TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (errors, peak) = stderr
        .trim_end()
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("unexpected stderr: {stderr}"));
    assert_eq!(
        format!("{errors}\n"),
        format!("ERROR: message larger than the limit of {CAP} bytes, discarded\n"),
        "stderr: {stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        transcript(&["", "{\"return\": {\"ok\": 1}}\n", "\n"]),
        "stdout"
    );
    assert_eq!(out.status.code(), Some(3), "the big reply counts as failed");
    let peak_kib: usize = peak.parse().unwrap_or_else(|_| panic!("stderr: {stderr}"));
    // Up to the cap is buffered before the message is known to be too
    // large; nothing beyond it.
    assert!(
        peak_kib * 1024 < CAP + CAP / 2,
        "peak RSS {} MiB: more than the 256 MiB cap was held",
        peak_kib >> 10
    );
    server.join();
}

/// The documented bound of the event queue: at most 100000 events are kept
/// for the next empty line; older ones are dropped, with a warning that
/// says how many. 100005 events arrive before a reply: the empty line
/// prints the last 100000, in order.
#[test]
fn event_queue_keeps_the_last_100000() {
    // Events small enough that 100 000 of them stay under the memory bound:
    // the count bound is the one that applies.
    const KEPT: usize = 100_000;
    const SENT: usize = KEPT + 5;
    let event = |i: usize| format!("{{\"event\": \"E{i}\"}}");
    let server = serve(move |c| {
        c.handshake();
        let (_, id) = c.read_command().unwrap();
        let mut burst = String::new();
        for i in 0..SENT {
            burst.push_str(&event(i));
            burst.push_str("\r\n");
        }
        burst.push_str(&format!("{{\"return\": {{}}{id}}}\r\n"));
        c.send(burst.as_bytes());
        c.drain();
    });
    let out = shell(&server, &[], "x\n\n");
    let mut events = String::new();
    for i in SENT - KEPT..SENT {
        events.push_str(&event(i));
        events.push('\n');
    }
    let expected = transcript(&["{\"return\": {}}\n", &events, "\n"]);
    expect(
        &out,
        0,
        &expected,
        &format!(
            "warning: 5 older events were dropped (more than {KEPT} events or 32 MiB queued)\n"
        ),
    );
    server.join();
}

#[test]
fn event_queue_is_bounded_by_memory() {
    // 100 000 events of the usual shape take far more than 32 MiB once
    // parsed: the newest are kept, as many as fit, and the rest dropped.
    const SENT: usize = 100_000;
    let event = |i: usize| {
        format!(
            "{{\"timestamp\": {{\"seconds\": 1, \"microseconds\": {i}}}, \
             \"event\": \"TICK\", \"data\": {{\"i\": {i}}}}}"
        )
    };
    let server = serve(move |c| {
        c.handshake();
        let (_, id) = c.read_command().unwrap();
        let mut burst = String::new();
        for i in 0..SENT {
            burst.push_str(&event(i));
            burst.push_str("\r\n");
        }
        burst.push_str(&format!("{{\"return\": {{}}{id}}}\r\n"));
        c.send(burst.as_bytes());
        c.drain();
    });
    let out = shell(&server, &[], "x\n\n");
    let stdout = common::text(&out.stdout);
    let printed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("\"TICK\""))
        .map(|l| l.trim_start_matches("(QEMU) "))
        .collect();
    let kept = printed.len();
    assert!(kept > 1000 && kept < SENT, "{kept} events kept");
    // The newest ones, in order.
    for (n, line) in printed.iter().enumerate() {
        assert_eq!(*line, event(SENT - kept + n));
    }
    assert_eq!(
        common::text(&out.stderr),
        format!(
            "warning: {} older events were dropped (more than 100000 events or 32 MiB queued)\n",
            SENT - kept
        )
    );
    server.join();
}

// ---------------------------------------------------------------------------
// Real QEMU passing on the late reply of a client that left.
// ---------------------------------------------------------------------------

/// QEMU 7.2 sends the late reply of a client that disconnected (here a
/// `query-qmp-schema` without an id) to the next client, before its reply
/// to that client's `qmp_capabilities`, which carries an id (the command
/// of `-c` goes without one), so that reply is no answer of its own: the
/// negotiation and the command get theirs, and one warning says what was
/// dropped (before, it was taken for the reply to `qmp_capabilities`, and
/// the real one drew `ignoring reply with unknown id 1`).
#[test]
fn a_stray_reply_from_a_client_that_left_is_dropped_with_one_warning() {
    let peer = Peer::qemu_none();
    let warning = format!(
        "warning: {}: {{\"return\":[{{",
        qmp_client::client::STRAY_REPLY
    );
    for _ in 0..stray::TRIES {
        let out = stray::after_a_stray_reply(peer.socket(), || {
            run_shell(
                &ours(),
                &["-c", "query-status", peer.socket_str()],
                "",
                SHELL_TIMEOUT,
            )
        });
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ok = out.status.code() == Some(0)
            && out.stdout
                == b"{\"return\": {\"status\": \"running\", \"singlestep\": false, \
                     \"running\": true}}\n"
            && (stderr.is_empty() || (stderr.starts_with(&warning) && stderr.lines().count() == 1));
        assert!(ok, "{}", common::show(&out));
        if !stderr.is_empty() {
            return;
        }
    }
    panic!(
        "QEMU never passed on a stray reply in {} tries",
        stray::TRIES
    );
}

// ---------------------------------------------------------------------------
// An ssh:// host that takes the connection and never speaks SSH.
// ---------------------------------------------------------------------------

/// The whole connection, ssh's set-up included, is bounded by `--timeout`,
/// and by the greeting's 10 s without it: one line, exit 1. The bound is
/// the harness's kill timeout (ssh alone used to wait 60 s).
#[test]
fn an_ssh_host_that_never_speaks_is_given_up_on_in_time() {
    let peer = silent::SilentPeer::start();
    let command = silent::SilentPeer::ssh_command(None);
    let address = peer.address("/run/qmp.sock");
    for (args, bound, seconds) in [
        (&["--timeout", "1"][..], Duration::from_secs(20), "1"),
        (&[][..], Duration::from_secs(45), "10"),
    ] {
        let mut all = args.to_vec();
        all.extend(["-c", "query-status", address.as_str()]);
        let out = common::run_shell_env(
            &ours(),
            &all,
            "",
            bound,
            &[("QMP_SSH_COMMAND", command.as_str())],
        );
        expect(
            &out,
            1,
            "",
            &format!(
                "ERROR: Couldn't connect to {address}: Failed to establish connection: \
                 ssh: no connection to 127.0.0.1 within {seconds} s\n"
            ),
        );
    }
    assert_eq!(peer.accepted(), 2);
}

/// A signal while ssh is still setting up (its host never speaks SSH):
/// the program ends with 128+N, and nothing it started outlives it: ssh is
/// stopped and reaped, and its private directory (`qmp-ssh-PID-N-*` in
/// `$TMPDIR`, mode 0700) is gone. SIGINT, SIGTERM and SIGHUP; one target
/// with `-c` and on a pipe, fan-out, `qmp-proxy`; and two signals at once
/// (the emergency exit).
#[test]
fn a_signal_during_ssh_set_up_leaves_nothing_behind() {
    let peer = silent::SilentPeer::start();
    let address = peer.address("/run/qmp.sock");
    let qemu = Peer::qemu_none();
    let proxy = std::path::PathBuf::from(env!("CARGO_BIN_EXE_qmp-proxy"));
    let listen_dir = tempfile::tempdir().unwrap();
    let listen = listen_dir.path().join("p.sock");
    let cases: [(&str, &Path, Vec<&str>, &[i32]); 5] = [
        (
            "-c",
            &ours(),
            vec!["-c", "query-status", &address],
            &[libc::SIGTERM],
        ),
        ("a pipe", &ours(), vec![&address], &[libc::SIGINT]),
        (
            "fan-out",
            &ours(),
            vec!["-c", "query-name", &address, qemu.socket_str()],
            &[libc::SIGHUP],
        ),
        (
            "qmp-proxy",
            &proxy,
            vec!["--listen", listen.to_str().unwrap(), &address],
            &[libc::SIGTERM],
        ),
        (
            "two signals",
            &ours(),
            vec!["-c", "query-status", &address],
            &[libc::SIGTERM, libc::SIGTERM],
        ),
    ];
    for (case, bin, args, signals) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let pids = tempfile::tempdir().unwrap();
        let pid_file = pids.path().join("ssh.pid");
        let command = silent::SilentPeer::ssh_command(Some(&pid_file));
        let tmpdir = tmp.path().to_str().unwrap();
        let mut run = common::Running::start(
            bin,
            &args,
            &[("QMP_SSH_COMMAND", command.as_str()), ("TMPDIR", tmpdir)],
        );
        let private_dirs = || -> Vec<String> {
            std::fs::read_dir(tmp.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("qmp-ssh-"))
                .collect()
        };
        let mut ssh_pid = None;
        common::wait_until(&format!("{case}: ssh to start"), SHELL_TIMEOUT, || {
            ssh_pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok());
            ssh_pid.is_some() && !private_dirs().is_empty()
        });
        let ssh_pid = ssh_pid.unwrap();
        for &sig in signals {
            run.signal(sig);
        }
        let (status, _, stderr) = run.wait_exit(SHELL_TIMEOUT);
        assert_eq!(
            status.code(),
            Some(128 + signals[0]),
            "{case}: {status}\n{stderr}"
        );
        assert_eq!(private_dirs(), Vec::<String>::new(), "{case}: {stderr}");
        // Gone, not even a zombie: reaped by the program itself.
        let proc_dir = format!("/proc/{ssh_pid}");
        assert!(
            !Path::new(&proc_dir).exists(),
            "{case}: ssh ({ssh_pid}) outlived the program: {}",
            std::fs::read_to_string(format!("{proc_dir}/stat")).unwrap_or_default()
        );
    }
    assert!(!listen.exists());
}

// ---------------------------------------------------------------------------
// Real QEMU killed with SIGKILL in the middle of a command.
// ---------------------------------------------------------------------------

#[test]
fn qemu_killed_mid_command() {
    let peer = Peer::qemu_none();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("qmp.log");
    let mut shell = Live::start(&["-l", log.to_str().unwrap(), peer.socket_str()]);
    // Many large replies in flight: the kill lands in the middle of them.
    shell.write(&"query-qmp-schema\n".repeat(200));

    // Kill QEMU as soon as the first schema reply is in the log.
    wait_for_log(&log, |l| l.starts_with("{\"return\": ["));
    let pid = peer.pid() as libc::pid_t;
    // SAFETY: kill(2) on the pid of a child process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);

    // The shell notices by itself, with its standard input still open.
    let out = shell.finish(false);
    let (status, stdout, stderr) = (out.status, out.stdout, out.stderr);
    assert_eq!(
        status.code(),
        Some(1),
        "stderr: {}",
        escape_visible(&stderr)
    );
    assert_eq!(escape_visible(&stderr), "Disconnected\\n\n");

    // Every line of the log is complete JSON; the received replies are
    // exactly those printed, in order.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.ends_with('\n'), "last log line incomplete");
    let mut received = Vec::new();
    for line in text.lines() {
        let mut v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line:.200}"));
        let obj = v.as_object_mut().unwrap();
        if obj.contains_key("return") || obj.contains_key("error") {
            obj.shift_remove("id");
            received.push(v);
        }
    }
    // The first reply is qmp_capabilities', which is not printed.
    assert_eq!(received.remove(0), serde_json::json!({"return": {}}));
    let stdout = String::from_utf8(stdout).unwrap();
    let body = stdout
        .strip_prefix("Welcome to the QMP low-level shell!\n")
        .and_then(|s| s.split_once("\n\n"))
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no banner: {stdout:.300}"));
    let printed: Vec<serde_json::Value> = body
        .split("(QEMU) ")
        .filter(|s| !s.is_empty())
        .map(|s| serde_json::from_str(s.trim_end()).expect("printed reply is JSON"))
        .collect();
    assert!(!printed.is_empty());
    assert!(
        printed.len() < 200,
        "QEMU answered everything before the kill"
    );
    assert_eq!(printed.len(), received.len());
    assert!(
        printed == received,
        "printed replies differ from logged ones"
    );
}

// ---------------------------------------------------------------------------
// Exit statuses.
// ---------------------------------------------------------------------------

#[test]
fn exit_0_at_end_of_input() {
    let server = serve(|c| {
        c.handshake();
        let (_, id) = c.read_command().unwrap();
        c.send(
            format!("{{\"error\": {{\"class\": \"GenericError\", \"desc\": \"no\"}}{id}}}\r\n")
                .as_bytes(),
        );
        c.drain();
    });
    // An error reply without --exit-status still ends with 0.
    let out = shell(&server, &[], "x\n");
    expect(
        &out,
        0,
        &transcript(&[
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}\n",
            "\n",
        ]),
        "",
    );
    server.join();
}

#[test]
fn exit_1_cannot_connect() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    let missing = missing.to_str().unwrap();
    let out = run_shell(&ours(), &[missing], "", SHELL_TIMEOUT);
    expect(
        &out,
        1,
        "",
        &format!(
            "ERROR: Couldn't connect to {missing}: Failed to establish connection: \
             [Errno 2] No such file or directory\n"
        ),
    );
}

#[test]
fn exit_2_usage() {
    let usage = "usage: qmp-shell [-h] [-H] [-v] [-p] [-l LOGFILE] [-N] [OPTIONS] qmp_server\n";
    let out = run_shell(&ours(), &["localhost:port"], "", SHELL_TIMEOUT);
    expect(
        &out,
        2,
        "",
        &format!("{usage}qmp-shell: error: Bad port number: localhost:port\n"),
    );
    let out = run_shell(&ours(), &["--bogus", "x.sock"], "", SHELL_TIMEOUT);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--bogus"), "{stderr}");
    let out = run_shell(&ours(), &[], "", SHELL_TIMEOUT);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn exit_3_with_dash_c_and_an_unknown_command() {
    let peer = Peer::qemu_none();
    let out = run_shell(
        &ours(),
        &[
            "-c",
            "no-such-command",
            "-c",
            "query-status",
            peer.socket_str(),
        ],
        "",
        SHELL_TIMEOUT,
    );
    expect(
        &out,
        3,
        "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \
         \"The command no-such-command has not been found\"}}\n\
         {\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}}\n",
        "",
    );
}

#[test]
fn exit_3_with_exit_status_and_a_parse_error() {
    let peer = Peer::qemu_none();
    let out = run_shell(
        &ours(),
        &["--exit-status", peer.socket_str()],
        "query-status foo\n",
        SHELL_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error while parsing command line: Expected a key=value pair, got 'foo'\n\
         command format: <command-name> [arg-name1=arg1] ... [arg-nameN=argN]\n"
    );
    // Without --exit-status the same session ends with 0.
    let out = run_shell(
        &ours(),
        &[peer.socket_str()],
        "query-status foo\n",
        SHELL_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn help_documents_the_exit_statuses() {
    for bin in [ours(), common::ours_wrap()] {
        let out = run_shell(&bin, &["--help"], "", SHELL_TIMEOUT);
        assert_eq!(out.status.code(), Some(0));
        let help = String::from_utf8_lossy(&out.stdout);
        for line in [
            "Exit status:",
            "  0  end of input",
            "  1  could not connect, the server went away, no reply within --timeout,",
            "  2  command-line usage error",
            "  3  with -c or --exit-status: at least one command got an error reply",
        ] {
            assert!(
                help.contains(line),
                "{} --help lacks {line:?}:\n{help}",
                bin.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Threads a session starts: only what its mode needs.
// ---------------------------------------------------------------------------

/// The names of the threads of process `pid` (`/proc/PID/task/*/comm`).
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim_end().to_owned())
        .collect();
    names.sort();
    names
}

/// Commands in each run of [`threads_mid_session`]: more than the shell
/// reads ahead, so that a thread reading them would still be there.
const MANY: usize = 1100;

/// Run our shell on a server that holds its first command unanswered
/// while the shell's threads are listed, then answers every command;
/// `stdin`: what the shell reads (a pipe is fed [`MANY`] commands).
/// Returns the thread names and the shell's output.
fn threads_mid_session(args: &[String], stdin: Stdio) -> (Vec<String>, Output) {
    let (arrived_tx, arrived) = std::sync::mpsc::channel();
    let (listed, listed_rx) = std::sync::mpsc::channel::<()>();
    let server = serve(move |c| {
        c.handshake();
        let (_, id) = c.read_command().unwrap();
        arrived_tx.send(()).unwrap();
        let _ = listed_rx.recv();
        c.reply(&id, "{}");
        while let Some((_, id)) = c.read_command() {
            c.reply(&id, "{}");
        }
    });
    let mut cmd = Command::new(ours());
    let home = tempfile::tempdir().unwrap();
    common::shell_env(&mut cmd, home.path());
    cmd.args(args)
        .arg(server.addr())
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // A pipe: the command, then held open until the threads are listed.
    let mut pipe = child.stdin.take();
    if let Some(pipe) = pipe.as_mut() {
        pipe.write_all("query-status\n".repeat(MANY).as_bytes())
            .unwrap();
    }
    let names = match arrived.recv_timeout(SHELL_TIMEOUT) {
        Ok(()) => thread_names(child.id()),
        Err(_) => Vec::new(),
    };
    drop(listed);
    drop(pipe);
    let out = common::wait_child(child, "qmp-shell", SHELL_TIMEOUT);
    server.join();
    (names, out)
}

/// `-c` commands, a script in a regular file and a pipe whose writer is
/// done (`<<< WORD`, `echo ... |`) are read on the main thread: no input
/// thread is started. A pipe still being written, whose reads may wait for
/// the writer, gets one.
#[test]
fn input_that_cannot_block_is_read_without_a_thread() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.txt");
    std::fs::write(&script, "query-status\n".repeat(MANY)).unwrap();
    let dash_c: Vec<String> = (0..MANY)
        .flat_map(|_| ["-c".to_owned(), "query-status".to_owned()])
        .collect();
    // A pipe written whole and closed before the shell starts (it fits in
    // the pipe's buffer).
    let (done, mut writer) = std::io::pipe().unwrap();
    writer
        .write_all("query-status\n".repeat(MANY).as_bytes())
        .unwrap();
    drop(writer);
    for (what, args, stdin) in [
        ("-c", dash_c, Stdio::null()),
        ("closed pipe", vec![], Stdio::from(done)),
        (
            "file",
            vec![],
            Stdio::from(std::fs::File::open(&script).unwrap()),
        ),
        ("pipe", vec![], Stdio::piped()),
    ] {
        let (names, out) = threads_mid_session(&args, stdin);
        assert!(!names.is_empty(), "{what}: the command never arrived");
        let reading = names.iter().any(|n| n == "input");
        assert_eq!(reading, what == "pipe", "{what}: threads {names:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout)
                .matches("{\"return\": {}}")
                .count(),
            MANY,
            "{what}: {out:?}"
        );
    }
}

/// With nothing cached about the server, the facts for its deprecation
/// warnings are fetched right after the first command, and its warnings
/// (so its reply) wait for them. A server that answers the command but
/// never the fetch must not make the shell deaf: SIGTERM ends it at once
/// (the kill timeout below is under the 5 s grace after which a stuck
/// program is cut short), with the status of the signal.
#[test]
fn a_signal_while_warnings_wait_for_a_silent_fetch_ends_the_shell_at_once() {
    let (fetched, fetch_seen) = std::sync::mpsc::channel();
    let server = serve(move |conn| {
        conn.handshake();
        while let Some(line) = conn.read_line() {
            let msg: serde_json::Value = serde_json::from_str(&line).unwrap();
            match msg["execute"].as_str().unwrap_or_default() {
                "query-status" => conn.reply(
                    &hostile_server::Id(msg.get("id").cloned()),
                    r#"{"status": "running", "singlestep": false, "running": true}"#,
                ),
                "query-commands" => conn.reply(
                    &hostile_server::Id(msg.get("id").cloned()),
                    r#"[{"name": "query-status"}]"#,
                ),
                // The schema, for the facts: never answered.
                "query-qmp-schema" => {
                    let _ = fetched.send(());
                }
                _ => {}
            }
        }
    });
    let cache = tempfile::tempdir().unwrap();
    let mut run = common::Running::start(
        &ours(),
        &[server.addr()],
        &[("XDG_CACHE_HOME", cache.path().to_str().unwrap())],
    );
    run.send("query-status\nquery-name\n");
    fetch_seen
        .recv_timeout(SHELL_TIMEOUT)
        .expect("the shell fetches the facts after the first command");
    run.signal(libc::SIGTERM);
    let (status, stdout, stderr) = run.wait_exit(Duration::from_secs(3));
    assert_eq!(status.code(), Some(143), "{status}\n{stdout}\n{stderr}");
}

/// The threads of the shell's process while it waits (its own thread
/// included).
fn threads_of(pid: u32) -> usize {
    qmp_test_support::proc::thread_states(pid).len()
}

/// A one-command session on a monitor's socket runs on one thread: the
/// client does its I/O while the engine waits for the reply, and a signal
/// ends that wait at once (its handler wakes the wait, no thread of ours
/// receives it). The same for a script read from a file.
#[test]
fn a_one_command_session_runs_on_one_thread_and_a_signal_ends_its_wait() {
    let cache = tempfile::tempdir().unwrap();
    let env = [("XDG_CACHE_HOME", cache.path().to_str().unwrap())];
    for (sig, stdin_file) in [(libc::SIGTERM, false), (libc::SIGINT, true)] {
        let (got, got_rx) = std::sync::mpsc::channel();
        // Greets, negotiates, takes the command and never answers it.
        let server = serve(move |conn| {
            conn.handshake();
            if let Some((name, _)) = conn.read_command() {
                let _ = got.send(name);
            }
            conn.drain();
        });
        let script = server.file("script");
        std::fs::write(&script, "query-status\n").unwrap();
        let mut cmd = common::ours_cmd();
        if stdin_file {
            cmd.arg(server.addr())
                .stdin(std::fs::File::open(&script).unwrap());
        } else {
            cmd.args(["-c", "query-status", server.addr()])
                .stdin(Stdio::null());
        }
        cmd.envs(env).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().unwrap();
        let name = got_rx.recv_timeout(SHELL_TIMEOUT);
        let threads = threads_of(child.id());
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        let out = common::wait_child(child, "the shell after a signal", Duration::from_secs(3));
        assert_eq!(name.as_deref(), Ok("query-status"), "{out:?}");
        assert_eq!(threads, 1, "threads of a one-command session; {out:?}");
        assert_eq!(out.status.code(), Some(128 + sig), "{out:?}");
        server.join();
    }
}

/// The same while the greeting is awaited: a real QEMU, frozen, has the
/// connection in its queue and says nothing; SIGTERM ends the wait at once.
#[test]
fn a_signal_ends_the_wait_for_the_greeting_of_a_frozen_qemu_on_one_thread() {
    let qemu = Peer::qemu_none();
    qmp_test_support::proc::freeze(qemu.pid());
    let child = common::ours_cmd()
        .args(["-c", "query-status", qemu.socket_str()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    qmp_test_support::proc::wait_until("the shell to wait", SHELL_TIMEOUT, || {
        stray::connection_pending(qemu.socket())
    });
    let threads = threads_of(child.id());
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = common::wait_child(child, "the shell after SIGTERM", Duration::from_secs(3));
    qmp_test_support::proc::thaw(qemu.pid());
    assert_eq!(threads, 1, "{out:?}");
    assert_eq!(out.status.code(), Some(143), "{out:?}");
    // QEMU serves the next client as usual.
    let out = run_shell(
        &ours(),
        &["-c", "query-status", qemu.socket_str()],
        "",
        SHELL_TIMEOUT,
    );
    assert!(out.status.success(), "{out:?}");
}
