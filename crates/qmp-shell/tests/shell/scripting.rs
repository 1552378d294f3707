//! Scripting against a real QEMU (`-M none`): `-c`, `--json`,
//! `--exit-status`, comment lines, and pipelined replies in input order.
//!
//! Every run has a hard timeout; timing is never asserted.

use crate::common;
use qmp_test_support::sshd;

use std::process::Output;

use common::{json_lines, ours, run_shell, show, text, Peer, SHELL_TIMEOUT};
use serde_json::Value;

/// Run our shell on `peer` with `args` (the socket is appended) and `stdin`.
fn shell(peer: &Peer, args: &[&str], stdin: &str) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.push(peer.socket_str());
    run_shell(&ours(), &all, stdin, SHELL_TIMEOUT)
}

#[track_caller]
fn assert_status(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit status {code}\n{}",
        show(out)
    );
}

fn is_return(v: &Value) -> bool {
    v.as_object().is_some_and(|o| o.contains_key("return"))
}

fn error_class(v: &Value) -> Option<&str> {
    v.get("error")?.get("class")?.as_str()
}

// ---------------------------------------------------------------------------
// -c
// ---------------------------------------------------------------------------

#[test]
fn c_runs_several_commands_in_order_and_exits() {
    let peer = Peer::qemu_none();
    // Standard input is not read when -c is given.
    let out = shell(
        &peer,
        &[
            "-c",
            "query-name",
            "-c",
            "qom-get path=/machine property=type",
            "-c",
            "query-status",
        ],
        "query-version\n",
    );
    assert_status(&out, 0);
    assert_eq!(
        text(&out.stdout),
        "{\"return\": {}}\n\
         {\"return\": \"none-machine\"}\n\
         {\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}}\n",
        "{}",
        show(&out)
    );
    assert!(out.stderr.is_empty(), "{}", show(&out));
}

#[test]
fn c_with_an_error_reply_exits_3_and_runs_the_rest() {
    let peer = Peer::qemu_none();
    let out = shell(
        &peer,
        &[
            "-c",
            "query-name",
            "-c",
            "no-such-command",
            "-c",
            "query-status",
        ],
        "",
    );
    assert_status(&out, 3);
    let replies = json_lines(&out.stdout);
    assert_eq!(replies.len(), 3, "{}", show(&out));
    assert!(is_return(&replies[0]), "{}", show(&out));
    assert_eq!(
        error_class(&replies[1]),
        Some("CommandNotFound"),
        "{}",
        show(&out)
    );
    assert!(is_return(&replies[2]), "{}", show(&out));
}

#[test]
fn c_with_a_parse_error_exits_3() {
    let peer = Peer::qemu_none();
    let out = shell(&peer, &["-c", "query-name extra", "-c", "query-name"], "");
    assert_status(&out, 3);
    assert_eq!(text(&out.stdout), "{\"return\": {}}\n", "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("Error while parsing command line: ") && err.contains("command format: "),
        "{}",
        show(&out)
    );
}

#[test]
fn c_with_hmp() {
    let peer = Peer::qemu_none();
    let out = shell(
        &peer,
        &["-H", "-c", "info version", "-c", "no-such-hmp-command"],
        "",
    );
    // An unknown HMP command is text in a successful QMP reply.
    assert_status(&out, 0);
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains("Welcome"),
        "no banner with -c\n{}",
        show(&out)
    );
    assert!(
        !stdout.contains("(QEMU)"),
        "no prompt with -c\n{}",
        show(&out)
    );
    let version = stdout.find(char::is_numeric);
    let unknown = stdout.find("unknown command: 'no-such-hmp-command'");
    assert!(
        matches!((version, unknown), (Some(v), Some(u)) if v < u),
        "version, then the unknown command, in order\n{}",
        show(&out)
    );

    // With --json, HMP replies are JSON lines too.
    let out = shell(&peer, &["-H", "--json", "-c", "info version"], "");
    assert_status(&out, 0);
    let replies = json_lines(&out.stdout);
    assert_eq!(replies.len(), 1, "{}", show(&out));
    assert!(
        replies[0]["return"]
            .as_str()
            .is_some_and(|s| s.ends_with("\r\n")),
        "{}",
        show(&out)
    );
}

// ---------------------------------------------------------------------------
// --json
// ---------------------------------------------------------------------------

#[test]
fn json_prints_exactly_one_line_per_reply() {
    let peer = Peer::qemu_none();
    // One line per reply, even for the 200 KB schema (-p does not go with
    // --json: cli.rs). A parse error prints an error object, so that
    // output lines stay aligned with input lines.
    let input = "query-status\n\
                 query-name\n\
                 qom-list path=/machine\n\
                 query-qmp-schema\n\
                 no-such-command\n\
                 query-name unparsable\n\
                 query-version\n";
    let out = shell(&peer, &["--json"], input);
    assert_status(&out, 0);
    let replies = json_lines(&out.stdout);
    assert_eq!(replies.len(), 7, "{}", show(&out));
    for (i, reply) in replies.iter().enumerate() {
        let obj = reply.as_object().expect("each reply is an object");
        assert!(
            obj.contains_key("return") || obj.contains_key("error"),
            "reply {i} is neither a return nor an error: {reply}"
        );
        assert!(
            !obj.contains_key("id"),
            "the id the client assigned is not shown: {reply}"
        );
    }
    assert_eq!(replies[0]["return"]["status"], "running");
    assert!(replies[2]["return"].is_array());
    assert!(replies[3]["return"]
        .as_array()
        .is_some_and(|a| a.len() > 100));
    assert_eq!(error_class(&replies[4]), Some("CommandNotFound"));
    assert_eq!(error_class(&replies[5]), Some("ParseError"));
    assert_eq!(
        replies[5]["error"]["desc"],
        "Expected a key=value pair, got 'unparsable'"
    );
    assert!(replies[6]["return"]["qemu"]["major"].is_u64());
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("Welcome") && !stdout.contains("(QEMU)"));
    // Compact, as json.dumps() without indent.
    assert!(!stdout.contains("\n    "), "{}", show(&out));
    // Standard error is JSON lines too: the parse error, as on stdout.
    assert_eq!(
        json_lines(&out.stderr),
        [replies[5].clone()],
        "{}",
        show(&out)
    );
}

#[test]
fn json_standard_error_is_json_lines() {
    let peer = Peer::qemu_none();
    // A deprecation warning, a parse error, a /wait that times out, events,
    // and end of input inside a transaction.
    let input = "drive-backup device=nothing target=/nonexistent sync=full\n\
                 query-name (\n\
                 /wait --timeout=0.5 STOP\n\
                 stop\n\
                 cont\n\
                 transaction(\n\
                 abort\n";
    let cache = tempfile::tempdir().unwrap();
    let out = common::run_shell_env(
        &ours(),
        &["--json", peer.socket_str()],
        input,
        SHELL_TIMEOUT,
        &[("XDG_CACHE_HOME", cache.path().to_str().unwrap())],
    );
    assert_status(&out, 0);
    let lines = json_lines(&out.stderr);
    let kinds: Vec<String> = lines
        .iter()
        .map(|l| {
            let obj = l.as_object().expect("one object per line");
            match obj.keys().find(|k| *k != "timestamp" && *k != "data") {
                Some(k) if k == "event" => format!("event {}", l["event"].as_str().unwrap()),
                Some(k) if k == "error" => format!("error {}", error_class(l).unwrap()),
                Some(k) => k.clone(),
                None => l.to_string(),
            }
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "warning",
            "error ParseError",
            "error Timeout",
            "event STOP",
            "event RESUME",
            "error ParseError"
        ],
        "{}",
        show(&out)
    );
    assert_eq!(
        lines[0]["warning"],
        "command drive-backup is deprecated (QMP schema)",
        "{}",
        show(&out)
    );
    assert_eq!(
        lines[2]["error"]["desc"],
        "/wait: no STOP event within 0.5 s"
    );
    assert_eq!(
        lines[5]["error"]["desc"],
        "end of input inside a transaction: 1 action not sent"
    );
}

#[test]
fn json_connection_errors_and_a_full_stdout_are_json_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    let out = run_shell(
        &ours(),
        &["--json", "-c", "query-name", missing.to_str().unwrap()],
        "",
        SHELL_TIMEOUT,
    );
    assert_status(&out, 1);
    assert_eq!(text(&out.stdout), "");
    let lines = json_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{}", show(&out));
    assert_eq!(error_class(&lines[0]), Some("ConnectError"));
    assert!(
        lines[0]["error"]["desc"]
            .as_str()
            .unwrap()
            .starts_with("Couldn't connect to "),
        "{}",
        show(&out)
    );
    // Standard output that cannot be written.
    let peer = Peer::qemu_none();
    let mut cmd = std::process::Command::new("sh");
    cmd.args([
        "-c",
        r#"exec "$0" --json -c query-name "$1" > /dev/full"#,
        ours().to_str().unwrap(),
        peer.socket_str(),
    ]);
    let out = common::run_program(cmd, &[], "", SHELL_TIMEOUT);
    assert_status(&out, 1);
    let lines = json_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{}", show(&out));
    assert!(
        lines[0]["error"]["desc"]
            .as_str()
            .unwrap()
            .starts_with("cannot write to standard output: "),
        "{}",
        show(&out)
    );
}

#[test]
fn json_prints_events_on_stderr() {
    let peer = Peer::qemu_none();
    let out = shell(&peer, &["--json"], "stop\ncont\nquery-status\n");
    assert_status(&out, 0);
    let replies = json_lines(&out.stdout);
    assert_eq!(replies.len(), 3, "{}", show(&out));
    assert_eq!(replies[0], serde_json::json!({"return": {}}));
    assert_eq!(replies[1], serde_json::json!({"return": {}}));
    assert_eq!(replies[2]["return"]["running"], true);
    let events = json_lines(&out.stderr);
    let names: Vec<&str> = events
        .iter()
        .map(|e| {
            assert!(e["timestamp"]["seconds"].is_u64(), "event shape: {e}");
            e["event"].as_str().expect("an event name")
        })
        .collect();
    assert_eq!(names, ["STOP", "RESUME"], "{}", show(&out));
}

// ---------------------------------------------------------------------------
// --exit-status and comments
// ---------------------------------------------------------------------------

#[test]
fn exit_status_with_an_error_reply() {
    let peer = Peer::qemu_none();
    let input = "query-name\nno-such-command\nquery-status\n";
    let with = shell(&peer, &["--exit-status"], input);
    assert_status(&with, 3);
    let without = shell(&peer, &[], input);
    assert_status(&without, 0);
    // The flag changes the exit status only: same (reference) output.
    assert_eq!(
        text(&with.stdout),
        text(&without.stdout),
        "{}\n{}",
        show(&with),
        show(&without)
    );
    let stdout = text(&with.stdout);
    assert!(stdout.starts_with("Welcome to the QMP low-level shell!\n"));
    assert!(stdout.contains("(QEMU) {\"error\": {\"class\": \"CommandNotFound\""));

    let ok = shell(&peer, &["--exit-status"], "query-name\nquery-status\n");
    assert_status(&ok, 0);
}

#[test]
fn exit_status_with_a_parse_error() {
    let peer = Peer::qemu_none();
    let input = "query-name\nquery-name key\nquery-status\n";
    let with = shell(&peer, &["--exit-status"], input);
    assert_status(&with, 3);
    assert!(
        text(&with.stderr).contains("Error while parsing command line: "),
        "{}",
        show(&with)
    );
    let without = shell(&peer, &[], input);
    assert_status(&without, 0);
    let json = shell(&peer, &["--json", "--exit-status"], input);
    assert_status(&json, 3);
    let lines = json_lines(&json.stdout);
    assert_eq!(lines.len(), 3, "{}", show(&json));
    assert_eq!(error_class(&lines[1]), Some("ParseError"));
}

#[test]
fn comment_lines_are_skipped() {
    let peer = Peer::qemu_none();
    let input = "# a comment\nquery-name\n    # an indented comment\n#query-status\n";
    let out = shell(&peer, &["--json", "--exit-status"], input);
    assert_status(&out, 0);
    assert_eq!(text(&out.stdout), "{\"return\": {}}\n", "{}", show(&out));
    assert!(out.stderr.is_empty(), "{}", show(&out));

    let out = shell(&peer, &["-c", "# nothing", "-c", "query-name"], "");
    assert_status(&out, 0);
    assert_eq!(text(&out.stdout), "{\"return\": {}}\n", "{}", show(&out));
    assert!(out.stderr.is_empty(), "{}", show(&out));
}

// ---------------------------------------------------------------------------
// Pipelining
// ---------------------------------------------------------------------------

/// Line `i` of an order-checkable script, and a check of its reply: even
/// lines run an unknown HMP command named after `i` (a successful reply
/// quoting the name), odd lines ask for a missing QOM path named after `i`
/// (an error reply quoting the path).
fn numbered_command(i: usize) -> String {
    if i % 2 == 0 {
        format!("human-monitor-command command-line=\"nosuch{i}\"")
    } else {
        format!("qom-get path=/machine/missing{i} property=type")
    }
}

#[track_caller]
fn check_numbered_reply(i: usize, reply: &Value) {
    if i % 2 == 0 {
        assert_eq!(
            reply,
            &serde_json::json!({"return": format!("unknown command: 'nosuch{i}'\r\n")}),
            "reply {i} out of order"
        );
    } else {
        assert_eq!(
            error_class(reply),
            Some("DeviceNotFound"),
            "reply {i}: {reply}"
        );
        assert_eq!(
            reply["error"]["desc"],
            format!("Device '/machine/missing{i}' not found"),
            "reply {i} out of order"
        );
    }
}

/// The complete lines of the `-l` log as JSON values (every complete line
/// must be one; a line still being written is left out).
fn log_values(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}")))
        .collect()
}

#[test]
fn pipelined_replies_come_back_in_input_order() {
    const N: usize = 500;
    let mut peer = Peer::qemu_none();

    // In flight together: QEMU is frozen (SIGSTOP) once the shell has
    // negotiated, so that it answers nothing; the shell must still send
    // commands of its input ahead (the -l log, written as messages go out,
    // shows them before any reply): as many as QEMU queues with
    // out-of-band execution on (which QEMU 7.2 offers, and the shell
    // negotiates), so that an exec-oob is never stuck behind them. Then
    // QEMU runs again and all the replies come back in input order. A
    // shell that waited for each reply before sending the next command
    // would never get past the first.
    const SCRIPT: usize = 50;
    const IN_FLIGHT: usize = qmp_client::client::OOB_INBAND_WINDOW;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("wire.log");
    let home = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(ours());
    common::shell_env(&mut cmd, home.path());
    cmd.args(["--json", "-l", log.to_str().unwrap(), peer.socket_str()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("start qmp-shell");
    // Standard output, line by line, as it comes.
    let (line_tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    // A first command, answered and printed: the shell's own look-ups
    // (deprecation checks, kept out of the log; with nothing cached they
    // go out after the first command, and its warnings come before its
    // reply) are done by then.
    let mut stdin = child.stdin.take().unwrap();
    {
        use std::io::Write;
        stdin.write_all(b"query-name\n").unwrap();
    }
    let first = lines
        .recv_timeout(SHELL_TIMEOUT)
        .expect("the first reply printed");
    let ready = |log: &[Value]| log.len() >= 5 && log[4].get("return").is_some();
    assert!(ready(&log_values(&log)), "{first}: {:#?}", log_values(&log));
    common::freeze(peer.pid());
    let script: String = (0..SCRIPT).map(|i| numbered_command(i) + "\n").collect();
    {
        use std::io::Write;
        stdin.write_all(script.as_bytes()).unwrap();
        drop(stdin);
    }
    common::wait_until(
        &format!("{IN_FLIGHT} commands sent to the frozen QEMU"),
        SHELL_TIMEOUT,
        || log_values(&log).len() >= 5 + IN_FLIGHT || child.try_wait().unwrap().is_some(),
    );
    let sent = log_values(&log);
    assert!(peer.is_running(), "QEMU died while frozen");
    common::thaw(peer.pid());
    assert_eq!(sent.len(), 5 + IN_FLIGHT, "{sent:#?}");
    for (i, v) in sent[5..].iter().enumerate() {
        assert!(
            v.get("execute").is_some(),
            "log line {}: only commands while QEMU is frozen, got {v}",
            i + 6
        );
    }
    let mut out = common::wait_child(child, "qmp-shell --json -l", SHELL_TIMEOUT);
    reader.join().unwrap();
    out.stdout = std::iter::once(first)
        .chain(lines.try_iter())
        .map(|l| l + "\n")
        .collect::<String>()
        .into_bytes();
    assert_status(&out, 0);
    let replies = json_lines(&out.stdout);
    assert_eq!(replies.len(), 1 + SCRIPT, "{}", show(&out));
    for (i, reply) in replies[1..].iter().enumerate() {
        check_numbered_reply(i, reply);
    }
    let all = log_values(&log);
    let first_reply = all[5..]
        .iter()
        .position(|v| v.get("execute").is_none())
        .map(|p| p + 5)
        .expect("replies in the log");
    assert!(
        first_reply >= 5 + IN_FLIGHT,
        "{IN_FLIGHT} commands went out before the first reply"
    );

    let mut input = String::new();
    for i in 0..N {
        input.push_str(&numbered_command(i));
        input.push('\n');
    }

    let out = shell(&peer, &["--json"], &input);
    assert_status(&out, 0);
    let replies = json_lines(&out.stdout);
    assert_eq!(replies.len(), N, "{}", show(&out));
    for (i, reply) in replies.iter().enumerate() {
        check_numbered_reply(i, reply);
    }

    // The reference format: banner, then a prompt before each reply.
    let out = shell(&peer, &[], &input);
    assert_status(&out, 0);
    let stdout = text(&out.stdout);
    let body = stdout
        .strip_prefix("Welcome to the QMP low-level shell!\n")
        .and_then(|s| s.split_once("\n\n").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("banner\n{}", show(&out)));
    let body = body
        .strip_suffix("(QEMU) \n")
        .unwrap_or_else(|| panic!("last prompt and newline\n{}", show(&out)));
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), N, "{}", show(&out));
    for (i, line) in lines.iter().enumerate() {
        let reply = line
            .strip_prefix("(QEMU) ")
            .unwrap_or_else(|| panic!("line {i} has no prompt: {line:?}"));
        let reply: Value = serde_json::from_str(reply).expect("a JSON reply after the prompt");
        check_numbered_reply(i, &reply);
    }

    // With -c, the same order (and exit status 3: half are errors).
    let commands: Vec<String> = (0..50).map(numbered_command).collect();
    let mut args: Vec<&str> = Vec::new();
    for c in &commands {
        args.push("-c");
        args.push(c);
    }
    let out = shell(&peer, &args, "");
    assert_status(&out, 3);
    let replies = json_lines(&out.stdout);
    assert_eq!(replies.len(), commands.len(), "{}", show(&out));
    for (i, reply) in replies.iter().enumerate() {
        check_numbered_reply(i, reply);
    }
}

// ---------------------------------------------------------------------------
// One target through ssh://
// ---------------------------------------------------------------------------

/// A whole `qmp-shell ssh://HOST/PATH` session through the private sshd,
/// on a pipe: exactly the banner, replies, events (at the empty lines) and
/// exit status expected, the same as the session run on a socket directly;
/// then through ssh with an error reply and `-c` (status 3).
#[test]
fn a_session_through_ssh_prints_exactly_what_a_direct_one_does() {
    let sshd = sshd::Sshd::start();
    let command = sshd.ssh_command();
    let remote_peer = Peer::qemu_with_args(&["-M", "none", "-name", "vm"]);
    let local_peer = Peer::qemu_with_args(&["-M", "none", "-name", "vm"]);
    let remote = format!("ssh://{}{}", sshd::HOST, remote_peer.socket_str());
    let input = "query-name\nstop\n\nquery-status\ncont\n\nnosuch\n";
    let run = |args: &[&str]| {
        common::run_shell_env(
            &ours(),
            args,
            input,
            SHELL_TIMEOUT,
            &[("QMP_SSH_COMMAND", &command)],
        )
    };
    let through_ssh = run(&[&remote]);
    let direct = run(&[local_peer.socket_str()]);
    let version = {
        let reply = common::qmp_raw(local_peer.socket(), &[r#"{"execute": "query-version"}"#]);
        let v: Value = serde_json::from_str(&reply[0]).unwrap();
        let q = &v["return"]["qemu"];
        format!("{}.{}.{}", q["major"], q["minor"], q["micro"])
    };
    let expected = format!(
        "Welcome to the QMP low-level shell!\nConnected to QEMU {version}\n\n\
         (QEMU) {{\"return\": {{\"name\": \"vm\"}}}}\n\
         (QEMU) {{\"return\": {{}}}}\n\
         (QEMU) {{\"timestamp\": {{\"seconds\": S, \"microseconds\": U}}, \"event\": \"STOP\"}}\n\
         (QEMU) {{\"return\": {{\"status\": \"paused\", \"singlestep\": false, \"running\": false}}}}\n\
         (QEMU) {{\"return\": {{}}}}\n\
         (QEMU) {{\"timestamp\": {{\"seconds\": S, \"microseconds\": U}}, \"event\": \"RESUME\"}}\n\
         (QEMU) {{\"error\": {{\"class\": \"CommandNotFound\", \"desc\": \"The command nosuch has not been found\"}}}}\n\
         (QEMU) \n"
    );
    for (name, out) in [("direct", &direct), ("ssh", &through_ssh)] {
        assert_status(out, 0);
        assert_eq!(
            common::without_timestamps(&text(&out.stdout)),
            expected,
            "{name}\n{}",
            show(out)
        );
        assert_eq!(text(&out.stderr), "", "{name}\n{}", show(out));
    }
    // The remote VM is running again, as the session left it.
    let status = common::qmp_raw(remote_peer.socket(), &[r#"{"execute": "query-status"}"#]);
    assert!(status[0].contains("\"running\": true"), "{status:?}");

    // Scripted through ssh: an error reply gives status 3, the rest runs.
    let out = common::run_shell_env(
        &ours(),
        &["-c", "nosuch", "-c", "query-name", &remote],
        "",
        SHELL_TIMEOUT,
        &[("QMP_SSH_COMMAND", &command)],
    );
    assert_status(&out, 3);
    assert_eq!(
        text(&out.stdout),
        "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command nosuch has \
         not been found\"}}\n{\"return\": {\"name\": \"vm\"}}\n",
        "{}",
        show(&out)
    );
}
