//! The engine's decisions, tested in-process: an [`Engine`] printing to a
//! recording [`Output`], talking to a scripted peer on a socketpair, driven
//! by the pipe driver ([`script::run`]) or line by line. Real peers are the
//! integration tests' business; these check the engine's logic, fast.
//!
//! No assertion depends on timing: a peer that misbehaves makes the
//! engine's own `--timeout` (a minute) end the session, and the test fail.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use qmp_client::{Client, ClientOptions, Object};
use serde_json::{json, Value};

use super::{Config, Engine, WINDOW};
use crate::cli::exit;
use crate::doorbell::Doorbell;
use crate::output::Output;
use crate::script::{self, Lines};

/// The bound on every wait, in the engine (`--timeout`) and in the peer:
/// a test that goes wrong fails rather than hangs.
const BOUND: Duration = Duration::from_secs(60);

/// What the engine printed, one call of [`Output`] each.
#[derive(Clone, Debug, PartialEq)]
enum Out {
    /// Text for standard output.
    Text(String),
    /// A reply (or an event `/wait` returned) on standard output.
    Reply(Value),
    /// A command echoed (`-v`).
    Echo(Value),
    /// An event.
    Event(Value),
    /// A message for standard error: its text and, as `--json` would
    /// print it, its object.
    Err(String, Value),
}

/// An [`Output`] that records what it is asked to print. Standard output
/// fails with `fail_with` once `writes_left` writes were made.
#[derive(Clone)]
struct Recorded {
    log: Arc<Mutex<Vec<Out>>>,
    writes_left: Arc<AtomicUsize>,
    fail_with: io::ErrorKind,
}

impl Recorded {
    fn new() -> Recorded {
        Recorded::failing_after(usize::MAX, io::ErrorKind::BrokenPipe)
    }

    fn failing_after(writes: usize, kind: io::ErrorKind) -> Recorded {
        Recorded {
            log: Arc::default(),
            writes_left: Arc::new(AtomicUsize::new(writes)),
            fail_with: kind,
        }
    }

    /// A write to standard output: it fails once the writes allowed are
    /// used up.
    fn write(&self, out: Out) -> io::Result<()> {
        let left = self.writes_left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(io::Error::new(self.fail_with, "standard output is closed"));
        }
        self.writes_left.store(left - 1, Ordering::SeqCst);
        self.log.lock().unwrap().push(out);
        Ok(())
    }

    fn all(&self) -> Vec<Out> {
        self.log.lock().unwrap().clone()
    }

    /// What went to standard output, in order (text, replies, events,
    /// echoes).
    fn stdout(&self) -> Vec<Out> {
        self.all()
            .into_iter()
            .filter(|o| !matches!(o, Out::Err(..)))
            .collect()
    }

    /// The replies printed, in order.
    fn replies(&self) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter_map(|o| match o {
                Out::Reply(v) => Some(v),
                _ => None,
            })
            .collect()
    }

    /// What went to standard error, as text.
    fn stderr(&self) -> String {
        self.all()
            .into_iter()
            .filter_map(|o| match o {
                Out::Err(text, _) => Some(text),
                _ => None,
            })
            .collect()
    }

    /// The class of each error object standard error was given.
    fn error_classes(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .filter_map(|o| match o {
                Out::Err(_, obj) => obj["error"]["class"].as_str().map(str::to_owned),
                _ => None,
            })
            .collect()
    }
}

impl Output for Recorded {
    fn text(&mut self, text: &str) -> io::Result<()> {
        self.write(Out::Text(text.to_owned()))
    }

    fn reply(&mut self, body: Object) -> io::Result<()> {
        self.write(Out::Reply(Value::Object(body)))
    }

    fn echo(&mut self, command: &Object) -> io::Result<()> {
        self.write(Out::Echo(Value::Object(command.clone())))
    }

    fn event(&mut self, body: Object) -> io::Result<()> {
        self.write(Out::Event(Value::Object(body)))
    }

    fn message(&mut self, text: &str, object: Object) {
        self.log
            .lock()
            .unwrap()
            .push(Out::Err(text.to_owned(), Value::Object(object)));
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.writes_left.load(Ordering::SeqCst) == 0 {
            return Err(io::Error::new(self.fail_with, "standard output is closed"));
        }
        Ok(())
    }
}

/// The server's end of the socketpair: a QMP server as the test scripts
/// it. The shell's own look-ups (`query-commands`, `query-qmp-schema`,
/// for deprecation facts) are answered with an error on the way, so the
/// session has no schema, and are not counted as commands received.
struct Peer {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Peer {
    /// The next command the shell sent, or `None` once it hung up.
    fn recv(&mut self) -> Option<Object> {
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let msg: Object = serde_json::from_str(&line).expect("the shell sends JSON objects");
            let name = msg.get("execute").and_then(Value::as_str);
            if matches!(name, Some("query-commands" | "query-qmp-schema")) {
                self.error(&msg, "CommandNotFound", "not here");
                continue;
            }
            return Some(msg);
        }
    }

    /// The next command, which must be `name`.
    fn expect(&mut self, name: &str) -> Object {
        let msg = self
            .recv()
            .unwrap_or_else(|| panic!("hung up before {name}"));
        assert_eq!(msg["execute"], json!(name), "{msg:?}");
        msg
    }

    fn send(&mut self, msg: Value) {
        // A peer whose shell went away has nothing more to say.
        let _ = self
            .writer
            .write_all(format!("{msg}\r\n").as_bytes())
            .and_then(|()| self.writer.flush());
    }

    /// Answer `request` with `ret`.
    fn reply(&mut self, request: &Object, ret: Value) {
        self.send(json!({"return": ret, "id": request["id"]}));
    }

    /// Answer `request` with an error.
    fn error(&mut self, request: &Object, class: &str, desc: &str) {
        self.send(json!({"error": {"class": class, "desc": desc}, "id": request["id"]}));
    }

    fn event(&mut self, name: &str, data: Value) {
        self.send(json!({
            "event": name,
            "data": data,
            "timestamp": {"seconds": 1, "microseconds": 2}
        }));
    }

    /// Every command until the shell hangs up, answered with `{}`; returns
    /// their names.
    fn answer_all(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        while let Some(msg) = self.recv() {
            self.reply(&msg, json!({}));
            names.push(msg["execute"].as_str().unwrap_or_default().to_owned());
        }
        names
    }
}

/// A session with `cfg` against a peer running `script` after the
/// greeting and negotiation, printing to `out`. The peer's result comes
/// from the handle once the engine is gone (it hung up).
fn session<T: Send + 'static>(
    cfg: Config,
    out: &Recorded,
    script: impl FnOnce(&mut Peer) -> T + Send + 'static,
) -> (Engine, JoinHandle<T>) {
    session_with(ClientOptions::default(), cfg, out, script)
}

/// [`session`] with a client made with `opts`.
fn session_with<T: Send + 'static>(
    opts: ClientOptions,
    mut cfg: Config,
    out: &Recorded,
    script: impl FnOnce(&mut Peer) -> T + Send + 'static,
) -> (Engine, JoinHandle<T>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    theirs.set_read_timeout(Some(BOUND)).unwrap();
    let peer = thread::spawn(move || {
        let mut peer = Peer {
            reader: BufReader::new(theirs.try_clone().unwrap()),
            writer: theirs,
        };
        peer.send(json!({"QMP": {
            "version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""},
            "capabilities": []
        }}));
        let negotiate = peer.expect("qmp_capabilities");
        peer.reply(&negotiate, json!({}));
        script(&mut peer)
    });
    let client = Client::from_unix_stream(ours, opts).unwrap();
    cfg.timeout = cfg.timeout.or(Some(BOUND));
    let engine = Engine::new(
        Arc::new(client),
        cfg,
        Box::new(out.clone()),
        Arc::new(Doorbell::new()),
    );
    (engine, peer)
}

/// Input lines, as from a pipe.
fn lines(lines: &[&str]) -> Lines {
    let lines: Vec<_> = lines.iter().map(|l| Ok(l.to_string())).collect();
    Box::new(lines.into_iter())
}

/// Run `input` through the pipe driver against a peer running `script`;
/// returns the exit status and the peer's result.
fn run<T: Send + 'static>(
    cfg: Config,
    out: &Recorded,
    input: &[&str],
    script: impl FnOnce(&mut Peer) -> T + Send + 'static,
) -> (i32, T) {
    let (engine, peer) = session(cfg, out, script);
    let code = script::run(engine, lines(input));
    (code, peer.join().expect("the peer does not panic"))
}

#[test]
fn pipelined_replies_are_printed_in_input_order() {
    let out = Recorded::new();
    let (code, ()) = run(
        Config::default(),
        &out,
        &["cmd-a", "cmd-b n=2", "cmd-c"],
        |peer| {
            // All three come before any reply: they were pipelined.
            let sent: Vec<Object> = (0..3).map(|_| peer.recv().unwrap()).collect();
            let names: Vec<&Value> = sent.iter().map(|m| &m["execute"]).collect();
            assert_eq!(names, [&json!("cmd-a"), &json!("cmd-b"), &json!("cmd-c")]);
            assert_eq!(sent[1]["arguments"], json!({"n": 2}));
            // Answered last to first.
            for (msg, n) in sent.iter().zip(1..4u8).rev() {
                peer.reply(msg, json!(n));
            }
            assert!(peer.recv().is_none());
        },
    );
    assert_eq!(code, exit::OK);
    assert_eq!(
        out.replies(),
        [
            json!({"return": 1}),
            json!({"return": 2}),
            json!({"return": 3})
        ]
    );
    assert_eq!(out.stderr(), "");
}

#[test]
fn an_empty_line_prints_the_events_that_came_before_it() {
    let out = Recorded::new();
    let (code, ()) = run(
        Config::default(),
        &out,
        &["cmd-a", "", "cmd-b", ""],
        |peer| {
            let a = peer.expect("cmd-a");
            peer.event("E1", json!({}));
            peer.reply(&a, json!("a"));
            // Nothing after the empty line is sent before the reply to
            // cmd-a was printed.
            let b = peer.expect("cmd-b");
            peer.event("E2", json!({}));
            peer.reply(&b, json!("b"));
            assert!(peer.recv().is_none());
        },
    );
    assert_eq!(code, exit::OK);
    let shown: Vec<Out> = out.stdout();
    let event = |name: &str| {
        Out::Event(
            json!({"event": name, "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}),
        )
    };
    assert_eq!(
        shown,
        [
            Out::Reply(json!({"return": "a"})),
            event("E1"),
            Out::Reply(json!({"return": "b"})),
            event("E2"),
        ]
    );
}

#[test]
fn events_without_an_empty_line_are_not_printed_on_a_pipe() {
    // As with the reference: events are printed at an empty line only.
    let out = Recorded::new();
    let (code, _) = run(Config::default(), &out, &["cmd-a"], |peer| {
        let a = peer.expect("cmd-a");
        peer.event("E1", json!({}));
        peer.reply(&a, json!({}));
        peer.answer_all()
    });
    assert_eq!(code, exit::OK);
    assert_eq!(out.stdout(), [Out::Reply(json!({"return": {}}))]);
}

/// Three commands, the second failing on the server, with `cfg`; returns
/// the exit status, the commands the peer received and what was printed.
fn with_a_failure(cfg: Config) -> (i32, Vec<String>, Recorded) {
    let out = Recorded::new();
    let (code, got) = run(cfg, &out, &["ok-1", "bad", "ok-2"], |peer| {
        let mut got = Vec::new();
        while let Some(msg) = peer.recv() {
            let name = msg["execute"].as_str().unwrap().to_owned();
            if name == "bad" {
                peer.error(&msg, "GenericError", "it failed");
            } else {
                peer.reply(&msg, json!({}));
            }
            got.push(name);
        }
        got
    });
    (code, got, out)
}

#[test]
fn a_failed_command_sets_the_exit_status_only_when_asked() {
    // By default (as the reference), a failed command does not count.
    let (code, got, out) = with_a_failure(Config::default());
    assert_eq!(code, exit::OK);
    assert_eq!(got, ["ok-1", "bad", "ok-2"]);
    assert_eq!(out.replies().len(), 3);

    // `--exit-status` (and `-c`): every command runs, the status says one
    // failed.
    let (code, got, out) = with_a_failure(Config {
        exit_status: true,
        ..Config::default()
    });
    assert_eq!(code, exit::COMMAND_FAILED);
    assert_eq!(got, ["ok-1", "bad", "ok-2"]);
    assert_eq!(
        out.replies()[1],
        json!({"error": {"class": "GenericError", "desc": "it failed"}})
    );
    assert_eq!(out.replies().len(), 3);

    // `-e`: the session stops at the failure; what follows is never sent.
    let (code, got, out) = with_a_failure(Config {
        exit_on_error: true,
        ..Config::default()
    });
    assert_eq!(code, exit::COMMAND_FAILED);
    assert_eq!(got, ["ok-1", "bad"]);
    assert_eq!(out.replies().len(), 2);
}

#[test]
fn a_line_that_does_not_parse_is_a_failed_command_that_is_never_sent() {
    let out = Recorded::new();
    let cfg = Config {
        exit_status: true,
        ..Config::default()
    };
    let (code, got) = run(cfg, &out, &["cmd-a x", "cmd-b"], |peer| peer.answer_all());
    assert_eq!(code, exit::COMMAND_FAILED);
    assert_eq!(got, ["cmd-b"]);
    assert!(
        out.stderr()
            .starts_with("Error while parsing command line: "),
        "{}",
        out.stderr()
    );
    assert_eq!(out.error_classes(), ["ParseError"]);
}

#[test]
fn a_transaction_is_sent_once_closed_as_one_command() {
    let out = Recorded::new();
    let (code, sent) = run(
        Config::default(),
        &out,
        &[
            "transaction(",
            "block-dirty-bitmap-add node=drive0 name=bitmap0",
            "abort",
            ")",
        ],
        |peer| {
            let msg = peer.expect("transaction");
            peer.reply(&msg, json!({}));
            assert!(peer.recv().is_none());
            msg
        },
    );
    assert_eq!(code, exit::OK);
    assert_eq!(
        sent["arguments"],
        json!({"actions": [
            {"type": "block-dirty-bitmap-add", "data": {"node": "drive0", "name": "bitmap0"}},
            {"type": "abort", "data": {}}
        ]})
    );
    assert_eq!(out.replies(), [json!({"return": {}})]);
}

#[test]
fn a_transaction_left_open_at_the_end_of_input_is_a_failure_and_not_sent() {
    let out = Recorded::new();
    let cfg = Config {
        exit_status: true,
        ..Config::default()
    };
    let (code, got) = run(cfg, &out, &["transaction(", "abort"], |peer| {
        peer.answer_all()
    });
    assert_eq!(code, exit::COMMAND_FAILED);
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(
        out.stderr(),
        "ERROR: end of input inside a transaction: 1 action not sent\n"
    );
}

#[test]
fn a_transaction_abandoned_with_ctrl_c_is_dropped_not_failed() {
    let out = Recorded::new();
    let cfg = Config {
        exit_status: true,
        ..Config::default()
    };
    let (mut engine, peer) = session(cfg, &out, |peer| peer.answer_all());
    for line in ["transaction(", "abort", "abort"] {
        engine.line(line);
    }
    assert!(engine.in_transaction());
    assert_eq!(engine.prompt(), "TRANS> ");
    // Ctrl-C at the `TRANS>` prompt.
    assert!(engine.abandon_transaction());
    assert!(!engine.in_transaction());
    assert!(!engine.abandon_transaction(), "nothing is left to abandon");
    // What follows runs as usual.
    engine.line("cmd-a");
    engine.end_of_input();
    assert!(!engine.settle(&|| false));
    let code = engine.exit_code();
    drop(engine);
    assert_eq!(peer.join().unwrap(), ["cmd-a"]);
    assert_eq!(code, exit::OK);
    assert_eq!(out.stderr(), "transaction abandoned: 2 actions not sent\n");
    assert_eq!(out.replies(), [json!({"return": {}})]);
}

#[test]
fn wait_returns_an_event_once() {
    let out = Recorded::new();
    let (code, _) = run(
        Config::default(),
        &out,
        &["cmd-a", "/wait E n=1", "/wait E", "/wait E"],
        |peer| {
            let a = peer.expect("cmd-a");
            peer.event("E", json!({"n": 1}));
            peer.event("E", json!({"n": 2}));
            peer.event("E", json!({"n": 3}));
            peer.reply(&a, json!({}));
            peer.answer_all()
        },
    );
    assert_eq!(code, exit::OK);
    let data: Vec<Value> = out.replies().iter().map(|r| r["data"].clone()).collect();
    // The first takes n=1 (its filter), the second the first one left
    // (n=2, not n=1 again), the third n=3.
    assert_eq!(
        data,
        [
            json!(null),
            json!({"n": 1}),
            json!({"n": 2}),
            json!({"n": 3})
        ]
    );
}

#[test]
fn wait_gives_up_after_its_timeout_and_the_session_goes_on() {
    let out = Recorded::new();
    let cfg = Config {
        exit_status: true,
        ..Config::default()
    };
    let (code, got) = run(
        cfg,
        &out,
        &["cmd-a", "/wait --timeout=0.05 NEVER", "cmd-b"],
        |peer| peer.answer_all(),
    );
    assert_eq!(code, exit::COMMAND_FAILED);
    assert_eq!(got, ["cmd-a", "cmd-b"]);
    assert_eq!(out.stderr(), "ERROR: /wait: no NEVER event within 0.05 s\n");
    assert_eq!(out.error_classes(), ["Timeout"]);
    assert_eq!(out.replies().len(), 2);
}

#[test]
fn a_lost_connection_ends_the_session_with_status_1() {
    let out = Recorded::new();
    // Input still queued after the connection goes.
    let input: Vec<String> = (0..50).map(|i| format!("cmd-{i}")).collect();
    let input: Vec<&str> = input.iter().map(String::as_str).collect();
    let (code, ()) = run(Config::default(), &out, &input, |peer| {
        let first = peer.expect("cmd-0");
        peer.reply(&first, json!({}));
        peer.expect("cmd-1");
        // Hangs up without answering.
    });
    assert_eq!(code, exit::FATAL);
    assert_eq!(out.replies(), [json!({"return": {}})]);
    assert!(out.stderr().starts_with("Disconnected"), "{}", out.stderr());
    assert_eq!(out.error_classes(), ["Disconnected"]);
}

#[test]
fn a_reply_that_never_comes_ends_the_session_at_the_timeout() {
    let out = Recorded::new();
    let cfg = Config {
        timeout: Some(Duration::from_millis(50)),
        ..Config::default()
    };
    // The peer takes the commands and never answers; the shell hangs up.
    let (code, got) = run(cfg, &out, &["cmd-a", "cmd-b"], |peer| {
        let mut got = Vec::new();
        while let Some(msg) = peer.recv() {
            got.push(msg["execute"].as_str().unwrap().to_owned());
        }
        got
    });
    assert_eq!(code, exit::FATAL);
    assert!(out.replies().is_empty());
    assert_eq!(out.stderr(), "ERROR: no reply within 0.05 s\n");
    assert_eq!(out.error_classes(), ["Timeout"]);
    // cmd-b went out too, pipelined, unless the timeout came first.
    assert_eq!(got[0], "cmd-a");
    assert!(got.len() <= 2, "{got:?}");
}

#[test]
fn a_closed_standard_output_ends_the_session_quietly_with_status_1() {
    // The reader went away (`| head -1`): one reply gets through.
    let out = Recorded::failing_after(1, io::ErrorKind::BrokenPipe);
    let input: Vec<String> = (0..2 * WINDOW + 100).map(|i| format!("cmd-{i}")).collect();
    let input: Vec<&str> = input.iter().map(String::as_str).collect();
    let (code, got) = run(Config::default(), &out, &input, |peer| peer.answer_all());
    assert_eq!(code, exit::FATAL);
    assert_eq!(out.replies(), [json!({"return": {}})]);
    // Nothing said about a reader that went away.
    assert_eq!(out.stderr(), "");
    // The session stopped sending: at most a window's worth went out.
    assert!(got.len() <= WINDOW + 1, "{} commands sent", got.len());
}

#[test]
fn a_failing_standard_output_is_reported_and_ends_the_session() {
    let out = Recorded::failing_after(0, io::ErrorKind::StorageFull);
    let (code, _) = run(Config::default(), &out, &["cmd-a", "cmd-b"], |peer| {
        peer.answer_all()
    });
    assert_eq!(code, exit::FATAL);
    assert!(out.replies().is_empty());
    assert!(
        out.stderr()
            .starts_with("ERROR: cannot write to standard output: "),
        "{}",
        out.stderr()
    );
}

#[test]
fn a_command_goes_to_the_server_before_the_output_is_flushed() {
    // An inline client sends when driven, and the engine drives it when it
    // waits; flushing the banner and the prompt comes before that wait,
    // and sends the command first: the server works on it meanwhile.
    let (tx, rx) = std::sync::mpsc::channel();
    let out = Recorded::new();
    let cfg = Config {
        prompts: true,
        ..Config::default()
    };
    let opts = ClientOptions {
        inline: true,
        ..ClientOptions::default()
    };
    let (mut engine, peer) = session_with(opts, cfg, &out, move |peer| {
        let cmd = peer.expect("query-status");
        tx.send(()).unwrap();
        peer.reply(&cmd, json!({"status": "running"}));
        peer.answer_all()
    });
    engine.banner();
    engine.queue_prompt();
    engine.line("query-status");
    engine.queue_prompt();
    engine.pump();
    engine.flush();
    // Nothing drove the client since: the flush sent the command.
    rx.recv_timeout(BOUND)
        .expect("the command went out with the flush");
    let texts: Vec<Out> = out.stdout();
    assert!(
        matches!(&texts[..], [Out::Text(banner), Out::Text(prompt)]
            if banner.starts_with("Welcome") && prompt == "(QEMU) "),
        "{texts:?}"
    );
    drop(engine);
    assert!(peer.join().unwrap().is_empty());
}

#[test]
fn read_only_refuses_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("created-by-fd");
    let fd_line = format!("/fd {} add-fd fdset-id=1", path.display());
    let out = Recorded::new();
    let cfg = Config {
        read_only: true,
        exit_status: true,
        ..Config::default()
    };
    let (code, got) = run(
        cfg,
        &out,
        &[
            "stop",
            "query-status",
            &fd_line,
            "/oob stop",
            r#"{"execute": "quit"}"#,
        ],
        |peer| peer.answer_all(),
    );
    assert_eq!(code, exit::COMMAND_FAILED);
    assert_eq!(got, ["query-status"]);
    assert_eq!(out.replies(), [json!({"return": {}})]);
    assert_eq!(out.error_classes(), ["ReadOnly"; 4]);
    assert!(
        out.stderr()
            .starts_with("ERROR: refused by --read-only: stop may change the VM"),
        "{}",
        out.stderr()
    );
    // `/fd` was refused before its file was opened (and created).
    assert!(!path.exists());
}

#[test]
fn verbose_echoes_each_command_before_its_reply() {
    let out = Recorded::new();
    let cfg = Config {
        verbose: true,
        ..Config::default()
    };
    let (code, _) = run(cfg, &out, &["cmd-a", "cmd-b"], |peer| peer.answer_all());
    assert_eq!(code, exit::OK);
    assert_eq!(
        out.stdout(),
        [
            Out::Echo(json!({"execute": "cmd-a", "arguments": {}})),
            Out::Reply(json!({"return": {}})),
            Out::Echo(json!({"execute": "cmd-b", "arguments": {}})),
            Out::Reply(json!({"return": {}})),
        ]
    );
}

#[test]
fn prompts_and_banner_on_a_pipe_as_the_reference_prints_them() {
    let out = Recorded::new();
    let cfg = Config {
        prompts: true,
        ..Config::default()
    };
    let (code, _) = run(cfg, &out, &["cmd-a"], |peer| peer.answer_all());
    assert_eq!(code, exit::OK);
    assert_eq!(
        out.stdout(),
        [
            Out::Text("Welcome to the QMP low-level shell!\nConnected to QEMU 7.2.0\n\n".into()),
            Out::Text("(QEMU) ".into()),
            Out::Reply(json!({"return": {}})),
            Out::Text("(QEMU) ".into()),
            Out::Text("\n".into()),
        ]
    );
}

#[test]
fn jobs_follows_a_job_until_it_ends() {
    let out = Recorded::new();
    let (code, polls) = run(Config::default(), &out, &["/jobs"], |peer| {
        let job = |status: &str, current: u64| {
            json!([{"id": "j0", "type": "backup", "status": status,
                    "current-progress": current, "total-progress": 4}])
        };
        let q = peer.expect("query-jobs");
        let m = peer.expect("query-migrate");
        peer.reply(&q, job("running", 1));
        peer.reply(&m, json!({}));
        peer.event(
            "JOB_STATUS_CHANGE",
            json!({"id": "j0", "status": "concluded"}),
        );
        let q = peer.expect("query-jobs");
        let m = peer.expect("query-migrate");
        peer.reply(&q, job("concluded", 4));
        peer.reply(&m, json!({}));
        2 + peer.answer_all().len()
    });
    assert_eq!(code, exit::OK);
    assert_eq!(polls, 2, "polled twice, then done");
    let line = |status: &str, current: u64, percent: u64| {
        json!({"job": "j0", "type": "backup", "status": status,
               "current-progress": current, "total-progress": 4, "percent": percent})
    };
    assert_eq!(
        out.replies(),
        [
            line("running", 1, 25),
            line("concluded", 4, 100),
            json!({"jobs": [line("concluded", 4, 100)]}),
        ]
    );
}

#[test]
fn play_runs_a_file_as_if_typed_and_ends_what_it_opened() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lines.qmp");
    std::fs::write(&file, "cmd-b\ntransaction(\nabort\n").unwrap();
    let play = format!("/play {}", file.display());
    let out = Recorded::new();
    let cfg = Config {
        exit_status: true,
        ..Config::default()
    };
    let (code, got) = run(cfg, &out, &["cmd-a", &play, "cmd-c"], |peer| {
        peer.answer_all()
    });
    assert_eq!(code, exit::COMMAND_FAILED);
    // The file's lines run in place of the /play line; the transaction
    // it left open is not sent.
    assert_eq!(got, ["cmd-a", "cmd-b", "cmd-c"]);
    assert_eq!(
        out.stderr(),
        format!(
            "ERROR: /play: {} ends inside a transaction: 1 action not sent\n",
            file.display()
        )
    );
}

#[test]
fn record_keeps_what_was_sent_and_comments_out_what_was_not() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rec.qmp");
    let record = format!("/record {}", file.display());
    let out = Recorded::new();
    let (code, _) = run(
        Config::default(),
        &out,
        &[
            &record,
            "cmd-a n=1",
            "cmd-b x",
            "transaction(",
            "abort",
            "transaction(",
            "abort",
            ")",
            " cmd-secret",
            "/record off",
            "cmd-c",
        ],
        |peer| peer.answer_all(),
    );
    assert_eq!(code, exit::OK);
    let text = std::fs::read_to_string(&file).unwrap();
    let body: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("# qmp-shell "))
        .collect();
    assert_eq!(
        body,
        [
            "# QEMU 7.2.0",
            "cmd-a n=1",
            "# not sent: cmd-b x",
            "# not sent: transaction(",
            "# not sent: abort",
            "transaction(",
            "abort",
            ")",
            "# (a line starting with a space: kept out of the recording)",
        ]
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}
