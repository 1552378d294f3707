//! `-l LOGFILE`: a JSON-lines log of every QMP message, mode 0600, flushed
//! line by line (the reference never writes one: docs/compatibility.md).

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const T: Duration = SHELL_TIMEOUT;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The log as parsed JSON values, one per line; every line must parse.
fn read_log(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read log {}: {e}", path.display()));
    assert!(text.ends_with('\n'), "log does not end a line:\n{text}");
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("log line {} is not JSON ({e}): {line:?}\n{text}", i + 1)
            })
        })
        .collect()
}

fn index_of(log: &[Value], what: &str, pred: impl Fn(&Value) -> bool) -> usize {
    log.iter()
        .position(pred)
        .unwrap_or_else(|| panic!("log lacks {what}: {log:#?}"))
}

/// The checks shared by the tests: the greeting and the capabilities
/// exchange come first, and every command is logged before its reply (the
/// next reply with its id; without one, when the command went without:
/// QEMU answers those in order).
fn check_session(log: &[Value], commands: &[&str]) {
    assert!(
        log[0].get("QMP").is_some(),
        "first line is not the greeting"
    );
    assert_eq!(log[1]["execute"], "qmp_capabilities", "{log:#?}");
    assert!(log[2].get("return").is_some(), "{log:#?}");
    assert_eq!(log[2]["id"], log[1]["id"], "{log:#?}");
    let mut last_reply = 2;
    for cmd in commands {
        let sent = index_of(log, &format!("the command {cmd}"), |v| v["execute"] == *cmd);
        let id = log[sent]["id"].clone();
        let reply = sent
            + 1
            + index_of(&log[sent + 1..], &format!("the reply to {cmd}"), |v| {
                (v.get("return").is_some() || v.get("error").is_some()) && v["id"] == id
            });
        assert!(
            reply > last_reply,
            "replies logged out of order at {cmd}: {log:#?}"
        );
        last_reply = reply;
    }
}

#[test]
fn log_records_every_message_in_order_with_mode_0600() {
    let peer = Peer::qemu_none();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("qmp.log");
    let out = run_shell(
        &ours(),
        &["-l", log_path.to_str().unwrap(), peer.socket_str()],
        "query-status\nno-such-command\nstop\ncont\n",
        T,
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(mode(&log_path), 0o600);
    let log = read_log(&log_path);
    check_session(&log, &["query-status", "no-such-command", "stop", "cont"]);

    // The replies are those the shell printed.
    let status = log
        .iter()
        .find(|v| v["return"]["status"].is_string())
        .expect("query-status reply");
    assert_eq!(status["return"]["status"], "running");
    let error = log
        .iter()
        .find(|v| v.get("error").is_some())
        .expect("error reply");
    assert_eq!(error["error"]["class"], "CommandNotFound");
    // Events: STOP after `stop` was sent, RESUME after `cont` was sent.
    let stop_sent = index_of(&log, "stop", |v| v["execute"] == "stop");
    let cont_sent = index_of(&log, "cont", |v| v["execute"] == "cont");
    let stop_ev = index_of(&log, "the STOP event", |v| v["event"] == "STOP");
    let resume_ev = index_of(&log, "the RESUME event", |v| v["event"] == "RESUME");
    assert!(stop_sent < stop_ev && cont_sent < resume_ev && stop_ev < resume_ev);
    // Nothing but messages: greeting, commands, replies, events.
    for v in &log {
        assert!(
            ["QMP", "execute", "return", "error", "event"]
                .iter()
                .any(|k| v.get(*k).is_some()),
            "unexpected log line {v}"
        );
    }
    assert_eq!(
        log.len(),
        1 + 2 + 4 * 2 + 2,
        "greeting, capabilities, 4 commands and replies, 2 events: {log:#?}"
    );
}

/// The sessions of a log appended to by several runs: the lines of each,
/// split at its greeting (every line must be JSON).
fn sessions(text: &str) -> Vec<Vec<Value>> {
    let mut sessions: Vec<Vec<Value>> = Vec::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line:?}\n{text}"));
        if v.get("QMP").is_some() {
            sessions.push(Vec::new());
        }
        sessions
            .last_mut()
            .unwrap_or_else(|| panic!("log does not start with a greeting:\n{text}"))
            .push(v);
    }
    sessions
}

/// A log is an audit trail: `-l audit.log -c stop` then `-l audit.log -c
/// cont` keeps both sessions, after what the file held, and the file is
/// made 0600 (the reference truncates: a documented difference).
#[test]
fn an_existing_log_is_appended_to_and_made_0600() {
    let peer = Peer::qemu_none();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("audit.log");
    let old = "old content, not JSON\n".repeat(3);
    std::fs::write(&log_path, &old).unwrap();
    std::fs::set_permissions(&log_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log_s = log_path.to_str().unwrap();
    for (flag, cmd) in [("--logfile", "stop"), ("-l", "cont")] {
        let out = run_shell(&ours(), &[flag, log_s, "-c", cmd, peer.socket_str()], "", T);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        assert_eq!(mode(&log_path), 0o600);
    }
    let text = std::fs::read_to_string(&log_path).unwrap();
    let rest = text
        .strip_prefix(&old)
        .unwrap_or_else(|| panic!("what the log held is gone:\n{text}"));
    let sessions = sessions(rest);
    assert_eq!(sessions.len(), 2, "{rest}");
    check_session(&sessions[0], &["stop"]);
    check_session(&sessions[1], &["cont"]);
    assert!(sessions[0].iter().any(|v| v["event"] == "STOP"), "{rest}");
    assert!(sessions[1].iter().all(|v| v["execute"] != "stop"), "{rest}");
}

#[test]
fn log_with_hmp_and_skip_negotiation() {
    // HMP: the log holds the human-monitor-command actually sent.
    let peer = Peer::qemu_none();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("hmp.log");
    let out = run_shell(
        &ours(),
        &["-H", "-l", log_path.to_str().unwrap(), peer.socket_str()],
        "info version\n",
        T,
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let log = read_log(&log_path);
    let sent = index_of(&log, "human-monitor-command", |v| {
        v["execute"] == "human-monitor-command" && v["arguments"]["command-line"] == "info version"
    });
    let id = log[sent]["id"].clone();
    let reply = index_of(&log, "its reply", |v| {
        v["id"] == id && v["return"].is_string()
    });
    assert!(log[reply]["return"].as_str().unwrap().starts_with("7."));

    // -N with the guest agent: no greeting, no negotiation in the log.
    let ga = Peer::guest_agent();
    let log_path = dir.path().join("ga.log");
    let out = run_shell(
        &ours(),
        &["-N", "-l", log_path.to_str().unwrap(), ga.socket_str()],
        "guest-ping\n",
        T,
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(mode(&log_path), 0o600);
    let log = read_log(&log_path);
    // First the resynchronisation (docs/compatibility.md): the shell sends
    // `guest-sync-delimited` with a random id, and the agent answers with
    // that id (the 0xFF bytes around it are not messages and are not
    // logged). Then the command and its reply. No greeting, no negotiation.
    assert_eq!(
        log.len(),
        4,
        "sync, its reply, guest-ping, its reply: {log:#?}"
    );
    assert_eq!(log[0]["execute"], "guest-sync-delimited", "{log:#?}");
    let sync_id = &log[0]["arguments"]["id"];
    assert!(
        sync_id.is_u64() || sync_id.is_i64(),
        "the sync id is an integer: {log:#?}"
    );
    assert_eq!(
        &log[1]["return"], sync_id,
        "the agent echoed the sync id: {log:#?}"
    );
    assert_eq!(log[2]["execute"], "guest-ping", "{log:#?}");
    assert_eq!(log[3]["return"], serde_json::json!({}), "{log:#?}");
    assert_eq!(log[3]["id"], log[2]["id"], "{log:#?}");
    assert!(log.iter().all(|v| v.get("QMP").is_none()), "{log:#?}");
    assert!(
        log.iter().all(|v| v["execute"] != "qmp_capabilities"),
        "{log:#?}"
    );
}

/// Kill the shell with SIGKILL as soon as a reply is on its stdout: the log
/// already holds that reply (it is written line by line, not buffered).
#[test]
fn log_survives_sigkill() {
    let peer = Peer::qemu_none();
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("killed.log");
    let mut child = Command::new(ours())
        .args(["-l", log_path.to_str().unwrap(), peer.socket_str()])
        .env("HOME", home.path())
        .env_remove("QMP_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qmp-shell");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"query-status\n").unwrap();
    stdin.flush().unwrap();
    // Read stdout on a thread so that a hang fails the test, not the run.
    // It reads on to the end: a pipe closed early would end the shell
    // (stdout closed, at the next prompt) before the SIGKILL.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            if line.contains("\"status\"") {
                let _ = tx.send(line.clone());
            }
            line.clear();
        }
    });
    let got = rx.recv_timeout(Duration::from_secs(20));
    child.kill().expect("SIGKILL");
    let status = child.wait().unwrap();
    drop(stdin);
    let line = got.expect("the reply to query-status was not printed within 20 s");
    assert!(line.contains("\"running\""), "{line}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));

    assert_eq!(mode(&log_path), 0o600);
    let log = read_log(&log_path);
    check_session(&log, &["query-status"]);
    assert_eq!(log.len(), 5, "{log:#?}");
    assert_eq!(log[4]["return"]["status"], "running");
}

#[test]
fn unwritable_log_path_is_a_clear_error() {
    let peer = Peer::qemu_none();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("no-such-dir").join("qmp.log");
    // Fails (and kills the shell) past 5 s: a clear error, not a hang.
    let out = run_shell(
        &ours(),
        &["-l", log_path.to_str().unwrap(), peer.socket_str()],
        "query-status\n",
        Duration::from_secs(5),
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{}", show(&out));
    assert!(err.starts_with("ERROR: "), "{}", show(&out));
    assert!(
        err.contains(log_path.to_str().unwrap()) && err.contains("No such file or directory"),
        "{}",
        show(&out)
    );
    assert!(!log_path.exists());
    assert!(out.stdout.is_empty(), "{}", show(&out));

    // A directory as the log path: refused as well.
    let out = run_shell(
        &ours(),
        &["-l", dir.path().to_str().unwrap(), peer.socket_str()],
        "",
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{}", show(&out));
    assert!(err.starts_with("ERROR: "), "{}", show(&out));
}
