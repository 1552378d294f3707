//! What must never happen, against real QEMU and qemu-ga: a session that
//! hangs when it ends early with input still queued, a file that is not
//! ours changing mode, a panic when standard output or error cannot be
//! written; and the rules that go with them: transactions all or nothing,
//! clear hints, sensible option checks.
//!
//! Hangs are caught by the harness: every run is bounded by
//! [`SHELL_TIMEOUT`] and killed (failing the test) past it.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

fn shell_cmd(args: &[&str], home: &Path) -> Command {
    let mut cmd = Command::new(ours());
    shell_env(&mut cmd, home);
    cmd.args(args);
    cmd
}

/// Run `cmd` with standard output and error sent to `out` and `err` when
/// given (piped and collected otherwise), `input` on standard input.
fn run_redirected(
    mut cmd: Command,
    input: &[u8],
    out: Option<File>,
    err: Option<File>,
) -> (std::process::ExitStatus, String, String) {
    let piped = |f: Option<File>| f.map(Stdio::from).unwrap_or_else(Stdio::piped);
    cmd.stdout(piped(out)).stderr(piped(err));
    let out = run_configured(cmd, input, Input::Close, SHELL_TIMEOUT);
    (out.status, text(&out.stdout), text(&out.stderr))
}

fn lines(n: usize, line: &str) -> String {
    (0..n).map(|_| format!("{line}\n")).collect()
}

fn log_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}")))
        .collect()
}

// ---------------------------------------------------------------------------
// Ending early with input still queued
// ---------------------------------------------------------------------------

#[test]
fn quit_near_the_top_of_a_long_script_ends_the_session() {
    let peer = Peer::qemu_none();
    let home = tempfile::tempdir().unwrap();
    let input = format!("query-status\nquit\n{}", lines(2000, "query-name"));
    // Standard input stays open: the session must end on its own.
    let out = run_with_input_open(
        shell_cmd(&[peer.socket_str()], home.path()),
        input.as_bytes(),
        SHELL_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(text(&out.stderr), "Disconnected\n", "{}", show(&out));
    assert!(
        text(&out.stdout).ends_with("(QEMU) {\"return\": {}}\n(QEMU) "),
        "{}",
        show(&out)
    );
}

#[test]
fn closed_standard_output_ends_the_session_with_status_1() {
    // `qmp-shell --json SOCK < 10k-lines | head -1`
    let peer = Peer::qemu_none();
    let home = tempfile::tempdir().unwrap();
    let mut cmd = shell_cmd(&["--json", peer.socket_str()], home.path());
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(lines(10_000, "query-name").as_bytes());
        stdin
    });
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is gone (stdout dropped above), like `head` exiting.
    assert_eq!(first, "{\"return\": {}}\n");
    let out = wait_child(
        child,
        "qmp-shell after its stdout was closed",
        SHELL_TIMEOUT,
    );
    drop(feeder.join());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    // A reader that left needs no explanation, and nothing panicked.
    assert_eq!(stderr, "");
}

#[test]
fn a_peer_that_stops_answering_is_bounded_by_timeout_with_input_queued() {
    let peer = Peer::qemu_none();
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut cmd = shell_cmd(
        &[
            "--timeout",
            "1",
            "-l",
            log.to_str().unwrap(),
            peer.socket_str(),
        ],
        home.path(),
    );
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Frozen once negotiated: from then on QEMU answers nothing.
    wait_until("negotiation in the log", SHELL_TIMEOUT, || {
        log_lines(&log).len() >= 3
    });
    freeze(peer.pid());
    // Standard input stays open, with input queued.
    let out = feed_and_wait(
        child,
        "qmp-shell --timeout 1",
        lines(10_000, "query-name").as_bytes(),
        Input::HoldOpen,
        SHELL_TIMEOUT,
    );
    thaw(peer.pid());
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(text(&out.stderr), "ERROR: no reply within 1 s\n");
}

// ---------------------------------------------------------------------------
// Standard output and error that cannot be written
// ---------------------------------------------------------------------------

#[test]
fn full_standard_output_is_status_1_not_a_panic() {
    let peer = Peer::qemu_none();
    let home = tempfile::tempdir().unwrap();
    let cmd = shell_cmd(&[peer.socket_str()], home.path());
    let full = File::create("/dev/full").unwrap();
    let (status, _, err) = run_redirected(cmd, b"query-status\n", Some(full), None);
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        "ERROR: cannot write to standard output: No space left on device (os error 28)\n"
    );
}

#[test]
fn full_standard_error_is_ignored() {
    let peer = Peer::qemu_none();
    let home = tempfile::tempdir().unwrap();
    let full = || Some(File::create("/dev/full").unwrap());
    for args in [vec![], vec!["--json"]] {
        let mut cmd = shell_cmd(&args, home.path());
        cmd.arg(peer.socket_str());
        // A parse error, events and a warning-free session: stderr is
        // written in both modes (parse error; with --json, the events).
        let input = b"bad line\nstop\ncont\n\nquery-status\n";
        let (status, out, _) = run_redirected(cmd, input, None, full());
        assert_eq!(status.code(), Some(0), "{args:?}: {out}");
        assert!(out.contains("\"running\": true"), "{args:?}: {out}");
    }
    // Nowhere to say that it cannot connect: still status 1, no abort.
    let cmd = shell_cmd(&["/nonexistent/qmp.sock"], home.path());
    let (status, _, _) = run_redirected(cmd, b"", None, full());
    assert_eq!(status.code(), Some(1));
    // And a usage error: status 2.
    let cmd = shell_cmd(&["--no-such-option"], home.path());
    let (status, _, _) = run_redirected(cmd, b"", None, full());
    assert_eq!(status.code(), Some(2));
}

// ---------------------------------------------------------------------------
// Files that are not ours
// ---------------------------------------------------------------------------

#[test]
fn logging_to_dev_null_leaves_its_mode_alone() {
    let peer = Peer::qemu_none();
    let before = mode(Path::new("/dev/null"));
    let out = run_shell(
        &ours(),
        &["-l", "/dev/null", peer.socket_str()],
        "query-name\n",
        SHELL_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(mode(Path::new("/dev/null")), before);
}

#[test]
fn logging_to_dev_stderr_shares_it_as_it_is() {
    let peer = Peer::qemu_none();
    let dir = tempfile::tempdir().unwrap();
    let err_path = dir.path().join("stderr.txt");
    std::fs::write(&err_path, "earlier\n").unwrap();
    std::fs::set_permissions(&err_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let home = tempfile::tempdir().unwrap();
    let cmd = shell_cmd(&["-l", "/dev/stderr", peer.socket_str()], home.path());
    let err = std::fs::OpenOptions::new()
        .append(true)
        .open(&err_path)
        .unwrap();
    let (status, out, _) = run_redirected(cmd, b"query-name\n", None, Some(err));
    assert_eq!(status.code(), Some(0), "{out}");
    // Not truncated, not chmod'ed: the log lines follow what was there.
    assert_eq!(mode(&err_path), 0o644);
    let content = std::fs::read_to_string(&err_path).unwrap();
    let mut lines = content.lines();
    assert_eq!(lines.next(), Some("earlier"));
    assert!(lines.next().unwrap().starts_with("{\"QMP\": "), "{content}");
    assert!(content.contains("{\"execute\":\"query-name\""), "{content}");
}

#[test]
fn a_symlink_of_another_user_in_a_sticky_directory_is_not_followed() {
    let peer = Peer::qemu_none();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let link = dir.path().join("qmp.log");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    // Hand the symlink to another user, as an attacker's would be.
    let c = std::ffi::CString::new(link.to_str().unwrap()).unwrap();
    // SAFETY: lchown(2) with a valid NUL-terminated path.
    let rc = unsafe { libc::lchown(c.as_ptr(), 65534, 65534) };
    assert_eq!(rc, 0, "lchown (the tests run as root)");
    let out = run_shell(
        &ours(),
        &["-l", link.to_str().unwrap(), peer.socket_str()],
        "query-name\n",
        SHELL_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("ERROR: cannot open log file ") && err.contains("sticky directory"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[test]
fn retry_does_not_start_the_log_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("later.sock");
    let log = dir.path().join("qmp.log");
    let home = tempfile::tempdir().unwrap();
    let mut cmd = shell_cmd(
        &[
            "--retry",
            "1000",
            "--retry-delay",
            "0.02",
            "-l",
            log.to_str().unwrap(),
            socket.to_str().unwrap(),
        ],
        home.path(),
    );
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // Once the shell sleeps between two attempts, the log was opened (and
    // started afresh) long before; a line written there now stands for
    // what earlier attempts would have logged.
    let pid = child.id();
    wait_until("the shell to sleep between attempts", SHELL_TIMEOUT, || {
        log.exists() && thread_wchans(pid).iter().any(|w| w.contains("nanosleep"))
    });
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(b"{\"earlier\": true}\n")
        .unwrap();
    let qemu = OwnQemu::start(&socket);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"query-name\n").unwrap();
    drop(stdin);
    let out = wait_child(child, "qmp-shell --retry -l", SHELL_TIMEOUT);
    drop(qemu);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let log = log_lines(&log);
    assert_eq!(log[0], serde_json::json!({"earlier": true}), "{log:?}");
    assert!(log[1].get("QMP").is_some(), "{log:?}");
    assert!(log.iter().any(|v| v["execute"] == "query-name"), "{log:?}");
}

// ---------------------------------------------------------------------------
// Transactions: all or nothing
// ---------------------------------------------------------------------------

#[test]
fn an_unterminated_transaction_is_an_error_and_nothing_is_sent() {
    let peer = Peer::qemu_none();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let input = "blockdev-add driver=null-co node-name=n0\n\
                 transaction(\n\
                 block-dirty-bitmap-add node=n0 name=b0\n";
    for args in [vec!["--exit-status"], vec!["--json", "--exit-status"]] {
        let mut all = args.clone();
        all.extend(["-l", log.to_str().unwrap(), peer.socket_str()]);
        let out = run_shell(&ours(), &all, input, SHELL_TIMEOUT);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", show(&out));
        let said = "end of input inside a transaction: 1 action not sent";
        if args.contains(&"--json") {
            // Standard error is JSON lines.
            let error = serde_json::json!({"error": {"class": "ParseError", "desc": said}});
            assert_eq!(json_lines(&out.stderr), [error], "{}", show(&out));
        } else {
            assert!(
                text(&out.stderr).contains(&format!("ERROR: {said}\n")),
                "{}",
                show(&out)
            );
        }
        assert!(
            log_lines(&log)
                .iter()
                .all(|v| v["execute"] != "transaction"),
            "nothing of the transaction went out"
        );
        if args.contains(&"--json") {
            let stdout = text(&out.stdout);
            let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
            assert_eq!(last["error"]["class"], "ParseError", "{stdout}");
        }
    }
    // With -c too.
    let out = run_shell(
        &ours(),
        &["-c", "transaction(", "-c", "stop", peer.socket_str()],
        "",
        SHELL_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    // QEMU was not stopped.
    let status = qmp_raw(peer.socket(), &[r#"{"execute": "query-status"}"#]);
    assert!(status[0].contains("\"running\": true"), "{status:?}");
}

#[test]
fn a_bad_line_inside_a_transaction_abandons_all_of_it() {
    let peer = Peer::qemu_none();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let input = "blockdev-add driver=null-co node-name=n0\n\
                 transaction(\n\
                 block-dirty-bitmap-add node=n0 name=b0\n\
                 block-dirty-bitmap-add oops\n\
                 block-dirty-bitmap-add node=n0 name=b1\n\
                 )\n\
                 query-block\n";
    let out = run_shell(
        &ours(),
        &["-l", log.to_str().unwrap(), peer.socket_str()],
        input,
        SHELL_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        "Error while parsing command line: Expected a key=value pair, got 'oops'\n\
         command format: <command-name> [arg-name1=arg1] ... [arg-nameN=argN]\n\
         transaction abandoned: 1 action not sent\n"
    );
    let sent: Vec<Value> = log_lines(&log)
        .into_iter()
        .filter(|v| v.get("execute").is_some())
        .collect();
    assert!(
        sent.iter().all(|v| v["execute"] != "transaction"),
        "{sent:?}"
    );
    // The lines after the bad one are commands of their own, as outside a
    // transaction: `block-dirty-bitmap-add` alone, then `)`.
    let names: Vec<&str> = sent.iter().filter_map(|v| v["execute"].as_str()).collect();
    assert_eq!(
        names,
        [
            "qmp_capabilities",
            "blockdev-add",
            "block-dirty-bitmap-add",
            ")",
            "query-block"
        ]
    );
}

// ---------------------------------------------------------------------------
// Hints, addresses and option checks
// ---------------------------------------------------------------------------

#[test]
fn a_busy_monitor_and_a_guest_agent_without_dash_n_are_explained() {
    let peer = Peer::qemu_none();
    let home = tempfile::tempdir().unwrap();
    // A first client holds the only monitor connection.
    let mut first = shell_cmd(&[peer.socket_str()], home.path());
    first
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut first = first.spawn().unwrap();
    let mut banner = String::new();
    let mut reader = BufReader::new(first.stdout.take().unwrap());
    reader.read_line(&mut banner).unwrap();
    assert_eq!(banner, "Welcome to the QMP low-level shell!\n");
    let out = run_shell(
        &ours(),
        &["--timeout", "1", peer.socket_str()],
        "",
        SHELL_TIMEOUT,
    );
    drop(first.stdin.take());
    let _ = first.wait();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        format!(
            "ERROR: Couldn't connect to {}: timed out after 1 s waiting for the greeting \
             (another client may be attached: QEMU serves one client per monitor at a time)\n",
            peer.socket_str()
        )
    );

    let ga = Peer::guest_agent();
    let out = run_shell(
        &ours(),
        &["--timeout", "1", ga.socket_str()],
        "",
        SHELL_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        format!(
            "ERROR: Couldn't connect to {}: no greeting: this looks like a guest agent, \
             which sends none (use -N)\n",
            ga.socket_str()
        )
    );
}

#[test]
fn unix_prefix_is_an_address() {
    let peer = Peer::qemu_none();
    let address = format!("unix:{}", peer.socket_str());
    let out = run_shell(
        &ours(),
        &["-c", "query-status", &address],
        "",
        SHELL_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(text(&out.stdout).contains("\"running\": true"));
}

#[test]
fn zero_timeout_and_empty_qmp_socket_are_usage_errors() {
    let out = run_shell(&ours(), &["--timeout", "0", "x.sock"], "", SHELL_TIMEOUT);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("must be more than 0"),
        "{}",
        show(&out)
    );
    let out = run_shell_env(&ours(), &[], "", SHELL_TIMEOUT, &[("QMP_SOCKET", "")]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("the following arguments are required: qmp_server"),
        "{}",
        show(&out)
    );
}

// ---------------------------------------------------------------------------
// The guest agent resynchronisation is a best effort
// ---------------------------------------------------------------------------

#[test]
fn an_agent_refusing_guest_sync_delimited_still_works() {
    let ga = Peer::guest_agent_blocking("guest-sync-delimited");
    let out = run_shell(
        &ours(),
        &["-N", "-c", "guest-ping", ga.socket_str()],
        "",
        SHELL_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stdout), "{\"return\": {}}\n");
    let err = text(&out.stderr);
    assert!(
        err.starts_with("warning: guest agent resynchronisation (guest-sync-delimited) failed: ")
            && err.ends_with("; carrying on without it\n"),
        "{err}"
    );
}

#[test]
fn dash_n_on_a_qmp_monitor_says_so_without_waiting() {
    // The greeting bound is far longer than the harness allows: the shell
    // must notice the greeting, not time out.
    let peer = Peer::qemu_none();
    let out = run_shell(
        &ours(),
        &[
            "-N",
            "--timeout",
            "600",
            "-c",
            "query-status",
            peer.socket_str(),
        ],
        "",
        SHELL_TIMEOUT,
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("this is a QMP monitor, not a guest agent (leave out -N)"),
        "{}",
        show(&out)
    );
}

// ---------------------------------------------------------------------------
// Raw JSON and help in scripts
// ---------------------------------------------------------------------------

#[test]
fn raw_json_and_help_work_in_scripts() {
    let peer = Peer::qemu_none();
    let out = run_shell(
        &ours(),
        &[
            "-c",
            r#"{"execute": "query-status", "id": "mine"}"#,
            "-c",
            "help query-status",
            "-c",
            "help",
            peer.socket_str(),
        ],
        "",
        SHELL_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(
            "{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}, \
             \"id\": \"mine\"}\nquery-status (command)\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("\nblockdev-add"), "{stdout}");
    // On a pipe with --json: one line per command, help as a string.
    let out = run_shell(
        &ours(),
        &["--json", peer.socket_str()],
        "{\"execute\":\n\"query-name\"}\nhelp query-name\n",
        SHELL_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let replies: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replies.len(), 2, "{}", show(&out));
    assert_eq!(replies[0], serde_json::json!({"return": {}}));
    assert!(replies[1]["return"]
        .as_str()
        .unwrap()
        .starts_with("query-name (command)"));
}

#[test]
fn hmp_cpu_failures_count_toward_exit_status() {
    let peer = Peer::qemu_pc();
    let out = run_shell(
        &ours(),
        &["-H", "-c", "cpu 9", "-c", "info version", peer.socket_str()],
        "",
        SHELL_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        text(&out.stdout).starts_with("bad CPU index\n7."),
        "{}",
        show(&out)
    );
    let out = run_shell(
        &ours(),
        &["-H", "-c", "cpu x", peer.socket_str()],
        "",
        SHELL_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(text(&out.stdout), "cpu command takes an integer argument\n");
}
