//! What must never happen, against real QEMU and qemu-ga: a session that
//! hangs when it ends early with input still queued, a file that is not
//! ours changing mode, a panic when standard output or error cannot be
//! written; and the rules that go with them: transactions all or nothing,
//! clear hints, sensible option checks.
//!
//! Hangs are caught by the harness: every run is bounded by
//! [`SHELL_TIMEOUT`] and killed (failing the test) past it.

use crate::common;

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

/// The kill timeout of a run whose promised bound is `--timeout 1`: it
/// must end well within it (the harness kills it, failing the test, past it).
const TIMEOUT_1_KILL: std::time::Duration = std::time::Duration::from_secs(5);

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
        TIMEOUT_1_KILL,
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

/// A log that is the user's own symlink in `/tmp` (a sticky directory):
/// followed, and its target appended to by each session, not truncated;
/// the symlink stays a symlink.
#[test]
fn our_own_log_symlink_in_a_sticky_directory_is_appended_to() {
    let peer = Peer::qemu_none();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let target = dir.path().join("audit.log");
    std::fs::write(&target, "{\"earlier\": true}\n").unwrap();
    let link = dir.path().join("qmp.log");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for cmd in ["stop", "cont"] {
        let out = run_shell(
            &ours(),
            &["-l", link.to_str().unwrap(), "-c", cmd, peer.socket_str()],
            "",
            SHELL_TIMEOUT,
        );
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    }
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(mode(&target), 0o600);
    let log = log_lines(&target);
    assert_eq!(log[0], serde_json::json!({"earlier": true}), "{log:?}");
    let sent: Vec<&str> = log
        .iter()
        .filter_map(|v| v["execute"].as_str())
        .filter(|name| *name != "qmp_capabilities")
        .collect();
    assert_eq!(sent, ["stop", "cont"], "{log:?}");
    assert_eq!(log.iter().filter(|v| v.get("QMP").is_some()).count(), 2);
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
            "ERROR: Couldn't connect to {}: no greeting within 1 s, nor an answer to a \
             guest-agent probe within 1 s more (another client may be attached: QEMU serves \
             one client per monitor at a time)\n",
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

// ---------------------------------------------------------------------------
// --read-only: nothing refused reaches the peer
// ---------------------------------------------------------------------------

/// What the test holds to be read-only, written independently of
/// `src/readonly.rs` (which must agree): queries and QOM reads.
fn reads_only(name: &str) -> bool {
    name.starts_with("query-")
        || name.starts_with("x-query-")
        || matches!(
            name,
            "qom-get"
                | "qom-list"
                | "qom-list-types"
                | "qom-list-properties"
                | "device-list-properties"
        )
}

/// QEMU (`-M none`) with two monitors that traces every request either
/// monitor receives (`handle_qmp_command`) into `trace`: QEMU's own record
/// of what reached it.
fn traced_qemu(trace: &Path) -> Peer {
    Peer::qemu_two_monitors(&[
        "-M",
        "none",
        "-trace",
        "handle_qmp_command",
        "-D",
        trace.to_str().unwrap(),
    ])
}

/// The requests in a `handle_qmp_command` trace, parsed.
fn traced_requests(trace: &Path) -> Vec<Value> {
    std::fs::read_to_string(trace)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(" req: ").map(|(_, req)| req.to_owned()))
        .map(|req| serde_json::from_str(&req).unwrap_or_else(|e| panic!("trace {req:?}: {e}")))
        .collect()
}

/// Every command a request names: `execute` and `exec-oob` (QEMU refuses a
/// request with both, but neither may name a refused command).
fn named_commands(req: &Value) -> Vec<String> {
    ["execute", "exec-oob"]
        .iter()
        .filter_map(|k| req.get(*k))
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .collect()
}

/// Whether `req` only reads (or is the negotiation): what --read-only may send.
fn harmless_request(req: &Value) -> bool {
    named_commands(req).iter().all(|name| {
        name == "qmp_capabilities"
            || reads_only(name)
            || (name == "human-monitor-command"
                && req["arguments"]["command-line"]
                    .as_str()
                    .and_then(|l| l.split_ascii_whitespace().next())
                    == Some("info"))
    })
}

/// The refusal lines on standard error: the command each names.
fn refused_names(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("refused by --read-only: ")?.1;
            Some(rest.split_once(' ')?.0.to_owned())
        })
        .collect()
}

/// Every command of QEMU's live schema that the allow list does not allow,
/// sent every way there is (shorthand, raw JSON with `execute`, with
/// `exec-oob`, hidden behind an allowed name in the other key, `/oob`),
/// plus transactions, `/fd` and HMP through `human-monitor-command`: each is
/// refused, QEMU's trace and the `-l` log show that none reached QEMU, and
/// the VM is still running (asked through the second monitor).
#[test]
fn read_only_lets_no_command_of_the_live_schema_through() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let log = dir.path().join("log");
    let peer = traced_qemu(&trace);
    let reply = qmp_raw(
        peer.second_socket(),
        &[r#"{"execute": "query-qmp-schema"}"#],
    );
    let schema: Value = serde_json::from_str(&reply[0]).unwrap();
    let commands: Vec<&Value> = schema["return"]
        .as_array()
        .expect("the schema is a list")
        .iter()
        .filter(|e| e["meta-type"] == "command")
        .collect();
    assert!(commands.len() > 150, "{} commands", commands.len());
    let mut refused = Vec::new();
    let mut oob = Vec::new();
    for c in &commands {
        let name = c["name"].as_str().unwrap().to_owned();
        let allowed = qmp_shell::readonly::allowed(&name, None, false);
        assert_eq!(
            allowed,
            reads_only(&name),
            "the allow list and this test disagree on whether {name} only reads"
        );
        if !allowed {
            if c["allow-oob"] == true {
                oob.push(name.clone());
            }
            refused.push(name);
        }
    }
    assert!(refused.iter().any(|n| n == "stop"), "{refused:?}");

    // Each line and the command its refusal must name.
    let mut script: Vec<(String, String)> = Vec::new();
    for name in &refused {
        script.push((name.clone(), name.clone()));
        script.push((format!(r#"{{"execute": "{name}"}}"#), name.clone()));
        script.push((format!(r#"{{"exec-oob": "{name}"}}"#), name.clone()));
        script.push((
            format!(r#"{{"execute": "query-status", "exec-oob": "{name}"}}"#),
            name.clone(),
        ));
        script.push((
            format!(r#"{{"exec-oob": "{name}", "execute": "query-status"}}"#),
            name.clone(),
        ));
    }
    for name in &oob {
        script.push((format!("/oob {name}"), name.clone()));
    }
    for (line, name) in [
        ("transaction( abort )", "transaction"),
        (
            r#"{"execute": "transaction", "arguments": {"actions": [{"type": "abort"}]}}"#,
            "transaction",
        ),
        ("/fd /dev/null add-fd fdset-id=1", "add-fd"),
        ("/fd --read-only /dev/null add-fd fdset-id=1", "add-fd"),
        ("/fd /dev/null getfd fdname=x", "getfd"),
        (
            "human-monitor-command command-line=stop",
            "human-monitor-command",
        ),
        (
            "human-monitor-command command-line='  quit'",
            "human-monitor-command",
        ),
        (
            r#"{"execute": "human-monitor-command", "arguments": {"command-line": "infox"}}"#,
            "human-monitor-command",
        ),
    ] {
        script.push((line.to_owned(), name.to_owned()));
    }
    let mut input: String = script.iter().map(|(l, _)| format!("{l}\n")).collect();
    // A multi-line transaction, then what must still work.
    input.push_str("transaction(\nabort\n)\nquery-status\n");
    let expected: Vec<String> = script
        .iter()
        .map(|(_, n)| n.clone())
        .chain(["transaction".to_owned()])
        .collect();

    let cache = tempfile::tempdir().unwrap();
    let out = run_shell_env(
        &ours(),
        &[
            "--read-only",
            "-l",
            log.to_str().unwrap(),
            peer.socket_str(),
        ],
        &input,
        SHELL_TIMEOUT,
        &[("XDG_CACHE_HOME", cache.path().to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stderr = text(&out.stderr);
    let names = refused_names(&stderr);
    if let Some(i) = (0..names.len().max(expected.len())).find(|&i| names.get(i) != expected.get(i))
    {
        panic!(
            "one refusal per line, naming the refused command: at line {} ({:?}) expected {:?}, \
             refused {:?}\n{}",
            i + 1,
            script.get(i).map(|(l, _)| l),
            expected.get(i),
            names.get(i),
            show(&out)
        );
    }
    assert_eq!(stderr.lines().count(), expected.len(), "{}", show(&out));
    assert!(
        text(&out.stdout).ends_with(
            "(QEMU) {\"return\": {\"status\": \"running\", \"singlestep\": false, \
             \"running\": true}}\n(QEMU) \n"
        ),
        "{}",
        show(&out)
    );
    // The VM runs, QEMU received nothing but reads, and the log agrees.
    let status = qmp_raw(peer.second_socket(), &[r#"{"execute": "query-status"}"#]);
    assert!(status[0].contains("\"running\": true"), "{status:?}");
    let received = traced_requests(&trace);
    assert!(
        received
            .iter()
            .filter(|r| r["execute"] == "query-status")
            .count()
            >= 2,
        "the trace shows both query-status requests: {received:?}"
    );
    for req in &received {
        assert!(harmless_request(req), "QEMU received {req}");
    }
    let logged: Vec<Value> = log_lines(&log)
        .into_iter()
        .filter(|m| m.get("execute").is_some() || m.get("exec-oob").is_some())
        .collect();
    assert!(
        logged.iter().any(|m| m["execute"] == "query-status"),
        "{logged:?}"
    );
    for req in &logged {
        assert!(harmless_request(req), "the log shows {req} sent");
    }
}

/// In HMP mode (`-H --read-only`) every HMP command QEMU lists in `help`,
/// but `info` and `cpu`, is refused, and QEMU's trace shows that only `info`
/// command lines reached it (`cpu N` probes the CPU with `info version`).
#[test]
fn read_only_hmp_lets_nothing_but_info_through() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let peer = traced_qemu(&trace);
    // The list from another QEMU of the same build: this one's trace is to
    // hold only what the shell sent.
    let reply = qmp_raw(
        Peer::qemu_none().socket(),
        &[r#"{"execute": "human-monitor-command", "arguments": {"command-line": "help"}}"#],
    );
    let help: Value = serde_json::from_str(&reply[0]).unwrap();
    let mut names: Vec<String> = help["return"]
        .as_str()
        .expect("help text")
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_lowercase()))
        .filter_map(|l| l.split_whitespace().next())
        .flat_map(|n| n.split('|'))
        .filter(|n| !n.is_empty() && *n != "info" && *n != "cpu")
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    for must in [
        "stop",
        "quit",
        "system_reset",
        "c",
        "cont",
        "savevm",
        "migrate",
    ] {
        assert!(names.iter().any(|n| n == must), "{must} in {names:?}");
    }
    let mut input: String = names.iter().map(|n| format!("{n}\n")).collect();
    input.push_str("cpu 0\ninfo status\n");
    let cache = tempfile::tempdir().unwrap();
    let out = run_shell_env(
        &ours(),
        &["-H", "--read-only", peer.socket_str()],
        &input,
        SHELL_TIMEOUT,
        &[("XDG_CACHE_HOME", cache.path().to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(refused_names(&text(&out.stderr)), names, "{}", show(&out));
    assert!(
        text(&out.stdout).ends_with("(QEMU) VM status: running\r\n (QEMU) \n"),
        "{}",
        show(&out)
    );
    let status = qmp_raw(peer.second_socket(), &[r#"{"execute": "query-status"}"#]);
    assert!(status[0].contains("\"running\": true"), "{status:?}");
    let received = traced_requests(&trace);
    let lines: Vec<&str> = received
        .iter()
        .filter_map(|r| r["arguments"]["command-line"].as_str())
        .collect();
    assert!(lines.contains(&"info status"), "{received:?}");
    for req in &received {
        assert!(harmless_request(req), "QEMU received {req}");
    }
}

/// The guest agent (`-N --read-only`): every command the agent offers that
/// the allow list does not allow is refused. The agent runs with each of
/// them disabled as well (so that a leak could do no harm on this machine),
/// and the shell reaches it through `socat -r`, which records every byte
/// the shell sent: only the protocol's `guest-sync-delimited` and reads.
#[test]
fn read_only_agent_lets_nothing_but_reads_through() {
    fn agent_reads_only(name: &str) -> bool {
        matches!(name, "guest-info" | "guest-ping") || name.starts_with("guest-get-")
    }
    let info = {
        let probe = Peer::guest_agent();
        let mut s = std::os::unix::net::UnixStream::connect(probe.socket()).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        s.write_all(b"{\"execute\": \"guest-info\"}\n").unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str::<Value>(&line).unwrap()
    };
    let names: Vec<String> = info["return"]["supported_commands"]
        .as_array()
        .expect("supported_commands")
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    let refused: Vec<String> = names
        .iter()
        .filter(|n| {
            let allowed = qmp_shell::readonly::allowed(n, None, true);
            assert_eq!(allowed, agent_reads_only(n), "{n}");
            !allowed
        })
        .cloned()
        .collect();
    for must in [
        "guest-shutdown",
        "guest-exec",
        "guest-set-time",
        "guest-fsfreeze-freeze",
    ] {
        assert!(refused.iter().any(|n| n == must), "{must} in {refused:?}");
    }
    let agent = Peer::guest_agent_blocking(&refused.join(","));
    let dir = tempfile::tempdir().unwrap();
    let tap = dir.path().join("tap.sock");
    let sent = dir.path().join("sent");
    let log = dir.path().join("log");
    let socat = Command::new(which("socat").expect("socat: run scripts/install-deps.sh"))
        .arg("-r")
        .arg(&sent)
        .arg(format!("UNIX-LISTEN:{}", tap.display()))
        .arg(format!("UNIX-CONNECT:{}", agent.socket().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start socat");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _socat = Kill(socat);
    wait_until("socat listening", SHELL_TIMEOUT, || listening(&tap));

    let mut input = String::new();
    let mut expected = Vec::new();
    for name in &refused {
        input.push_str(&format!(
            "{name}\n{{\"execute\": \"{name}\"}}\n{{\"execute\": \"guest-ping\", \"exec-oob\": \"{name}\"}}\n"
        ));
        expected.extend([name.clone(), name.clone(), name.clone()]);
    }
    input.push_str("guest-ping\n");
    let out = run_shell(
        &ours(),
        &[
            "-N",
            "--read-only",
            "-l",
            log.to_str().unwrap(),
            tap.to_str().unwrap(),
        ],
        &input,
        SHELL_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        refused_names(&text(&out.stderr)),
        expected,
        "{}",
        show(&out)
    );
    assert!(
        text(&out.stdout).ends_with("(QEMU) {\"return\": {}}\n(QEMU) \n"),
        "{}",
        show(&out)
    );
    // What went over the wire: JSON objects, some behind the 0xFF byte
    // that guest-sync-delimited puts first.
    let bytes: Vec<u8> = std::fs::read(&sent)
        .unwrap()
        .into_iter()
        .filter(|b| *b != 0xff)
        .collect();
    let wire: Vec<Value> = serde_json::Deserializer::from_slice(&bytes)
        .into_iter::<Value>()
        .map(|v| v.expect("the shell sent JSON"))
        .collect();
    assert!(
        wire.iter().any(|m| m["execute"] == "guest-ping"),
        "{wire:?}"
    );
    let harmless = |m: &Value| {
        named_commands(m)
            .iter()
            .all(|n| n == "guest-sync-delimited" || agent_reads_only(n))
    };
    for m in &wire {
        assert!(harmless(m), "the agent was sent {m}");
    }
    for m in log_lines(&log) {
        if m.get("execute").is_some() || m.get("exec-oob").is_some() {
            assert!(harmless(&m), "the log shows {m} sent");
        }
    }
}

// ---------------------------------------------------------------------------
// Promised bounds, as the harness's kill timeout
// ---------------------------------------------------------------------------

/// `--timeout 1` against a QEMU frozen (SIGSTOP) before the shell connects,
/// on a UNIX socket and on TCP: the kernel takes the first connections into
/// QEMU's queue and the greeting never comes; once the queue is full the
/// connection itself is never taken. Each run, with `-c` or on a pipe,
/// gives up with one line and status 1, well within 5 s; fan-out too.
#[test]
fn timeout_1_against_a_frozen_qemu_ends_within_5_s() {
    let (peer, port) = qemu_tcp4_monitor();
    freeze(peer.pid());
    let tcp = format!("127.0.0.1:{port}");
    for addr in [peer.socket_str(), tcp.as_str()] {
        let greeting = format!(
            "ERROR: Couldn't connect to {addr}: no greeting within 1 s, nor an answer to a \
             guest-agent probe within 1 s more (another client may be attached: QEMU serves \
             one client per monitor at a time)\n"
        );
        let not_taken = format!(
            "ERROR: Couldn't connect to {addr}: timed out after 1 s waiting for the server to \
             accept the connection (it takes no more: it may be hung)\n"
        );
        let mut seen = Vec::new();
        for run in 0..4 {
            let (args, input) = if run % 2 == 0 {
                (vec!["--timeout", "1", addr], "query-status\n")
            } else {
                (vec!["--timeout", "1", "-c", "query-status", addr], "")
            };
            let out = run_shell(&ours(), &args, input, TIMEOUT_1_KILL);
            assert_eq!(out.status.code(), Some(1), "{args:?}\n{}", show(&out));
            assert!(out.stdout.is_empty(), "{args:?}\n{}", show(&out));
            let err = text(&out.stderr);
            assert!(
                err == greeting || err == not_taken,
                "{args:?}, run {run}\n{}",
                show(&out)
            );
            seen.push(err == not_taken);
        }
        // QEMU queues one connection and the kernel one more.
        assert_eq!(seen, [false, false, true, true], "{addr}");
    }
    // Fan-out, one target at a time: the frozen QEMU's queue is full on
    // both sockets (1 s each), and another frozen QEMU (2 s: no greeting,
    // then a 1 s guest-agent probe).
    let other = Peer::qemu_none();
    freeze(other.pid());
    let out = run_shell(
        &ours(),
        &[
            "--timeout",
            "1",
            "-j",
            "1",
            "-c",
            "query-status",
            peer.socket_str(),
            &tcp,
            other.socket_str(),
        ],
        "",
        TIMEOUT_1_KILL,
    );
    thaw(peer.pid());
    thaw(other.pid());
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = text(&out.stderr);
    assert_eq!(
        err.matches("timed out after 1 s waiting for the server to accept the connection")
            .count(),
        2,
        "{}",
        show(&out)
    );
    assert_eq!(
        err.matches("no greeting within 1 s, nor an answer to a guest-agent probe within 1 s more")
            .count(),
        1,
        "{}",
        show(&out)
    );
    // Thawed, QEMU serves the next client as usual.
    let out = run_shell(&ours(), &["-c", "query-name", &tcp], "", SHELL_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

/// The 10 s greeting bound with no `--timeout`, against a real QEMU frozen
/// before the shell connects (it accepts, through the kernel, and never
/// greets): one clear line, status 1, within the bound and a margin.
#[test]
fn a_qemu_that_never_greets_is_given_up_on_after_10_s() {
    let peer = Peer::qemu_none();
    freeze(peer.pid());
    let out = run_shell(
        &ours(),
        &[peer.socket_str()],
        "query-status\n",
        std::time::Duration::from_secs(15),
    );
    thaw(peer.pid());
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        format!(
            "ERROR: Couldn't connect to {}: no greeting within 10 s, nor an answer to a \
             guest-agent probe within 1 s more (another client may be attached: QEMU serves \
             one client per monitor at a time)\n",
            peer.socket_str()
        ),
        "{}",
        show(&out)
    );
    assert!(out.stdout.is_empty(), "{}", show(&out));
}

// ---------------------------------------------------------------------------
// Raw JSON that never ends
// ---------------------------------------------------------------------------

/// End of input inside a raw JSON message, on a pipe and with `-c`: one
/// clear error, counted as a failed command (status 3 with
/// `--exit-status` and `-c`, 0 without), and nothing of it is sent.
#[test]
fn end_of_input_inside_raw_json_sends_nothing() {
    let peer = Peer::qemu_two_monitors(&["-M", "none"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let error = "ERROR: end of input inside a raw JSON message; it was not sent\n";
    let input = "query-name\n{\"execute\":\n\"stop\"\n";
    for (args, status) in [
        (vec![peer.socket_str()], 0),
        (vec!["--exit-status", peer.socket_str()], 3),
        (
            vec![
                "-l",
                log.to_str().unwrap(),
                "-c",
                "{\"execute\": \"stop\"",
                peer.socket_str(),
            ],
            3,
        ),
    ] {
        let stdin = if args.contains(&"-c") { "" } else { input };
        let out = run_shell(&ours(), &args, stdin, SHELL_TIMEOUT);
        assert_eq!(out.status.code(), Some(status), "{args:?}\n{}", show(&out));
        assert_eq!(text(&out.stderr), error, "{args:?}\n{}", show(&out));
    }
    let status = qmp_raw(peer.second_socket(), &[r#"{"execute": "query-status"}"#]);
    assert!(status[0].contains("\"running\": true"), "{status:?}");
    assert!(
        !std::fs::read_to_string(&log).unwrap().contains("stop"),
        "nothing sent"
    );
}

/// Feed `input` to the shell (stdin left open after it), wait (bounded)
/// until standard output has `until`, and return the shell's peak resident
/// memory (`VmHWM`, read while it still runs), then its whole output.
fn peak_memory_while_fed(
    args: &[&str],
    input: impl FnOnce(&mut dyn Write) + Send + 'static,
    until: &str,
) -> (u64, std::process::Output) {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = shell_cmd(args, home.path());
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        let mut w = std::io::BufWriter::with_capacity(1 << 16, &mut stdin);
        input(&mut w);
        let _ = w.flush();
        drop(w);
        // Held open: the shell must not end before its memory is read.
        let _ = done_rx.recv();
    });
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 65536];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while !text(&seen).contains(until) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.extend(chunk),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{until:?} never came (killed after 180 s); stdout:\n{}",
                    escape_visible(&seen[seen.len().saturating_sub(2000)..])
                );
            }
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    drop(done_tx);
    let _ = writer.join();
    let mut out = wait_child(child, "qmp-shell", SHELL_TIMEOUT);
    seen.extend(rx.try_iter().flatten());
    out.stdout = seen;
    (kib * 1024, out)
}

/// The most memory the shell may take while fed what never ends: far
/// below what it is fed, far above what it needs.
const MEMORY_BOUND: u64 = 128 << 20;
/// What it is fed.
const ENDLESS: usize = 160 << 20;

/// An unclosed `{` followed by 160 MiB that never closes it (lines of
/// numbers), then the end of the message and a command: one clear error
/// once QEMU's limit for a message is passed, the shell's peak memory stays
/// under 128 MiB, nothing of the message is sent, and the shell goes on.
/// Then the same as one line of 160 MiB without a newline (a string that
/// never ends): the line is skipped with one error and the shell goes on.
#[test]
fn an_unclosed_brace_that_never_ends_keeps_memory_bounded() {
    let peer = Peer::qemu_two_monitors(&["-M", "none", "-name", "vm"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let args = ["-l", log.to_str().unwrap(), peer.socket_str()];
    let reply = "{\"return\": {\"name\": \"vm\"}}\n";

    let (peak, out) = peak_memory_while_fed(
        &args,
        |w| {
            let line = format!("{}\n", "1,".repeat(32 * 1024));
            let _ = w.write_all(b"{\"execute\": \"stop\", \"arguments\": {\"x\": [\n");
            for _ in 0..ENDLESS / line.len() {
                if w.write_all(line.as_bytes()).is_err() {
                    return;
                }
            }
            let _ = w.write_all(b"0]}}\nquery-name\n");
        },
        reply,
    );
    assert!(peak < MEMORY_BOUND, "peak memory {} MiB", peak >> 20);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        "ERROR: raw JSON message larger than QEMU takes (64 MiB, 2097152 tokens); it was \
         not sent\n"
    );
    assert!(text(&out.stdout).ends_with(&format!("(QEMU) {reply}(QEMU) \n")));

    let (peak, out) = peak_memory_while_fed(
        &args,
        |w| {
            let chunk = vec![b'a'; 1 << 20];
            let _ = w.write_all(b"{\"execute\": \"stop\", \"arguments\": {\"x\": \"");
            for _ in 0..ENDLESS >> 20 {
                if w.write_all(&chunk).is_err() {
                    return;
                }
            }
            let _ = w.write_all(b"\"}}\nquery-name\n");
        },
        reply,
    );
    assert!(peak < MEMORY_BOUND, "peak memory {} MiB", peak >> 20);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        "ERROR: input line longer than 64 MiB; it was skipped\n"
    );
    assert!(text(&out.stdout).ends_with(&format!("(QEMU) {reply}(QEMU) \n")));

    let status = qmp_raw(peer.second_socket(), &[r#"{"execute": "query-status"}"#]);
    assert!(status[0].contains("\"running\": true"), "{status:?}");
    assert!(
        !std::fs::read_to_string(&log).unwrap().contains("stop"),
        "nothing of the message was sent"
    );
}
