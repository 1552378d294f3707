//! Differential tests: our `qmp-shell` against the reference (Python
//! qemu.qmp 0.0.6), byte for byte.
//!
//! Each scenario starts two identical fresh peers (commands change the
//! peer's state, and a monitor serves one client at a time), feeds the same
//! session (a file of `tests/data/`) on standard input to the reference and
//! to ours, and requires identical stdout, stderr and exit status.
//!
//! The one intended difference is applied to the reference's output before
//! comparing: the parse-error hint line, where the reference forgets the
//! closing `]` (REFERENCE.md).
//!
//! `QMP_DIFF_CANDIDATE=reference cargo test --test differential` runs the
//! reference against itself instead of ours: use it to check that a new case
//! is deterministic before blaming our shell.
//!
//! Cases where the reference is wrong (the defects listed in REFERENCE.md)
//! are not compared: the `fixed_*` tests below check our documented
//! behaviour for them instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::*;

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `qemu-system-x86_64 -M none`
    QemuNone,
    /// `qemu-system-x86_64 -M pc -S -smp 2 -accel tcg`
    QemuPc,
    /// `qemu-storage-daemon`
    StorageDaemon,
    /// `qemu-ga`
    GuestAgent,
}

impl Kind {
    fn start(self) -> Peer {
        match self {
            Kind::QemuNone => Peer::qemu_none(),
            Kind::QemuPc => Peer::qemu_pc(),
            Kind::StorageDaemon => Peer::storage_daemon(),
            Kind::GuestAgent => Peer::guest_agent(),
        }
    }
}

/// The shell compared with the reference: ours, unless
/// `QMP_DIFF_CANDIDATE=reference` (a determinism check of the cases).
fn candidate() -> (PathBuf, &'static str) {
    match std::env::var("QMP_DIFF_CANDIDATE").as_deref() {
        Ok("reference") => (reference(), "reference#2"),
        Ok("ours") | Err(_) => (ours(), "ours"),
        Ok(other) => panic!("QMP_DIFF_CANDIDATE must be `ours` or `reference`, not {other:?}"),
    }
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The session in `tests/data/NAME`, without its `##` comment lines.
fn case_input(name: &str) -> String {
    let path = data_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read case file {}: {e}", path.display()));
    text.split_inclusive('\n')
        .filter(|line| !line.starts_with("##"))
        .collect()
}

/// The reference's output with its known, intentionally fixed, typo
/// corrected: the parse-error hint line lacks its closing `]`.
fn expected_from_reference(stderr: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(stderr);
    text.replace(
        "[arg-name1=arg1] ... [arg-nameN=argN\n",
        "[arg-name1=arg1] ... [arg-nameN=argN]\n",
    )
    .into_bytes()
}

/// Compare two runs; returns every difference found, described.
fn compare(reference_out: &Output, cand_name: &str, cand_out: &Output) -> Vec<String> {
    let mut problems = Vec::new();
    let cand_is_reference = cand_name.starts_with("reference");
    let ref_stderr = expected_from_reference(&reference_out.stderr);
    let cand_stderr = if cand_is_reference {
        expected_from_reference(&cand_out.stderr)
    } else {
        cand_out.stderr.clone()
    };
    if let Some(d) = describe_difference(
        "stdout",
        "reference",
        &reference_out.stdout,
        cand_name,
        &cand_out.stdout,
    ) {
        problems.push(d);
    }
    if let Some(d) =
        describe_difference("stderr", "reference", &ref_stderr, cand_name, &cand_stderr)
    {
        problems.push(d);
    }
    if reference_out.status.code() != cand_out.status.code() {
        problems.push(format!(
            "exit status differs: reference {:?}, {cand_name} {:?}",
            reference_out.status, cand_out.status
        ));
    }
    problems
}

/// Run one scenario: `flags` and the session in `case` against two fresh
/// peers of `kind`, the reference on one and the candidate on the other.
fn differential(kind: Kind, flags: &[&str], case: &str) {
    let input = case_input(case);
    let (cand, cand_name) = candidate();

    let ref_peer = kind.start();
    let cand_peer = kind.start();

    let run = |bin: &Path, peer: &Peer| {
        let mut args: Vec<&str> = flags.to_vec();
        args.push(peer.socket_str());
        run_shell(bin, &args, &input, SHELL_TIMEOUT)
    };
    let ref_out = run(&reference(), &ref_peer);
    let cand_out = run(&cand, &cand_peer);

    // The reference must not crash on a case meant to be compared.
    let ref_err = String::from_utf8_lossy(&ref_out.stderr);
    assert!(
        !ref_err.contains("Traceback"),
        "case {case} {flags:?} crashes the reference; move it to a fixed_* test:\n{ref_err}"
    );

    // Socket paths differ between the peers; none of the cases prints them,
    // but say so clearly if one ever does.
    let problems = compare(&ref_out, cand_name, &cand_out);
    if !problems.is_empty() {
        panic!(
            "scenario {kind:?} flags {flags:?} case tests/data/{case}: {cand_name} differs from \
             the reference\n\n{}",
            problems.join("\n\n")
        );
    }
}

macro_rules! scenario {
    ($name:ident, $kind:expr, [$($flag:expr),*], $case:expr) => {
        #[test]
        fn $name() {
            differential($kind, &[$($flag),*], $case);
        }
    };
}

// ---------------------------------------------------------------------------
// Scenarios: QMP on -M none, with each combination of -v and -p
// ---------------------------------------------------------------------------

scenario!(qmp_basic, Kind::QemuNone, [], "qmp_basic.txt");
scenario!(qmp_basic_v, Kind::QemuNone, ["-v"], "qmp_basic.txt");
scenario!(qmp_basic_p, Kind::QemuNone, ["-p"], "qmp_basic.txt");
scenario!(qmp_basic_vp, Kind::QemuNone, ["-v", "-p"], "qmp_basic.txt");

scenario!(qmp_values, Kind::QemuNone, [], "qmp_values.txt");
scenario!(qmp_values_v, Kind::QemuNone, ["-v"], "qmp_values.txt");
scenario!(qmp_values_p, Kind::QemuNone, ["-p"], "qmp_values.txt");
scenario!(
    qmp_values_vp,
    Kind::QemuNone,
    ["-v", "-p"],
    "qmp_values.txt"
);

// 500 generated shorthand lines on which the parsers agree, as one session
// (see data/shorthand_cases.txt): the -v echo shows what was built. Not
// with -p: the reference crashes sorting dicts whose keys mix int and str.
scenario!(
    qmp_shorthand_cases_v,
    Kind::QemuNone,
    ["-v"],
    "shorthand_cases.txt"
);

scenario!(
    qmp_values_edge_v,
    Kind::QemuNone,
    ["-v"],
    "qmp_values_edge.txt"
);
scenario!(
    qmp_values_edge_vp,
    Kind::QemuNone,
    ["-v", "-p"],
    "qmp_values_edge.txt"
);

scenario!(qmp_parse_errors, Kind::QemuNone, [], "qmp_parse_errors.txt");
scenario!(
    qmp_parse_errors_v,
    Kind::QemuNone,
    ["-v"],
    "qmp_parse_errors.txt"
);
scenario!(
    qmp_parse_errors_p,
    Kind::QemuNone,
    ["-p"],
    "qmp_parse_errors.txt"
);
scenario!(
    qmp_parse_errors_vp,
    Kind::QemuNone,
    ["-v", "-p"],
    "qmp_parse_errors.txt"
);

scenario!(qmp_transactions, Kind::QemuNone, [], "qmp_transactions.txt");
scenario!(
    qmp_transactions_v,
    Kind::QemuNone,
    ["-v"],
    "qmp_transactions.txt"
);
scenario!(
    qmp_transactions_p,
    Kind::QemuNone,
    ["-p"],
    "qmp_transactions.txt"
);
scenario!(
    qmp_transactions_vp,
    Kind::QemuNone,
    ["-v", "-p"],
    "qmp_transactions.txt"
);

scenario!(qmp_blank, Kind::QemuNone, [], "qmp_blank.txt");
scenario!(qmp_blank_v, Kind::QemuNone, ["-v"], "qmp_blank.txt");
scenario!(qmp_blank_p, Kind::QemuNone, ["-p"], "qmp_blank.txt");
scenario!(qmp_blank_vp, Kind::QemuNone, ["-v", "-p"], "qmp_blank.txt");

scenario!(qmp_no_final_newline, Kind::QemuNone, [], "qmp_noeol.txt");
scenario!(
    qmp_no_final_newline_vp,
    Kind::QemuNone,
    ["-v", "-p"],
    "qmp_noeol.txt"
);

// Long option names are the reference's too.
scenario!(
    qmp_basic_long_options,
    Kind::QemuNone,
    ["--verbose", "--pretty"],
    "qmp_basic.txt"
);

// ---------------------------------------------------------------------------
// Scenarios: HMP, guest agent, storage daemon
// ---------------------------------------------------------------------------

scenario!(hmp_pc, Kind::QemuPc, ["-H"], "hmp.txt");
scenario!(hmp_pc_vp, Kind::QemuPc, ["-H", "-v", "-p"], "hmp.txt");
scenario!(hmp_pc_long_option, Kind::QemuPc, ["--hmp"], "hmp.txt");

scenario!(qga, Kind::GuestAgent, ["-N"], "qga.txt");
scenario!(qga_v, Kind::GuestAgent, ["-N", "-v"], "qga.txt");
scenario!(qga_vp, Kind::GuestAgent, ["-N", "-v", "-p"], "qga.txt");
scenario!(
    qga_long_option,
    Kind::GuestAgent,
    ["--skip-negotiation"],
    "qga.txt"
);

scenario!(qsd, Kind::StorageDaemon, [], "qsd.txt");
scenario!(qsd_v, Kind::StorageDaemon, ["-v"], "qsd.txt");
scenario!(qsd_p, Kind::StorageDaemon, ["-p"], "qsd.txt");
scenario!(qsd_vp, Kind::StorageDaemon, ["-v", "-p"], "qsd.txt");

// ---------------------------------------------------------------------------
// Command-line errors
// ---------------------------------------------------------------------------

const QUICK: Duration = Duration::from_secs(60);

fn run_both(args: &[&str]) -> (Output, String, Output) {
    let (cand, cand_name) = candidate();
    let r = run_shell(&reference(), args, "", QUICK);
    let c = run_shell(&cand, args, "", QUICK);
    (r, cand_name.to_string(), c)
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_string)
        .collect()
}

/// A usage error: exit 2, nothing on stdout, the usage line first (ours may
/// list more options) and `error_line` last. With `allow_suffix`, ours may
/// add words after the reference's error line.
fn assert_usage_error(args: &[&str], error_line: &str) {
    assert_usage_error_ext(args, error_line, false)
}

fn assert_usage_error_ext(args: &[&str], error_line: &str, allow_suffix: bool) {
    let (r, cand_name, c) = run_both(args);
    for (name, out) in [("reference", &r), (cand_name.as_str(), &c)] {
        let err = lines(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name} {args:?}: exit status; stderr:\n{}",
            escape_visible(&out.stderr)
        );
        assert!(
            out.stdout.is_empty(),
            "{name} {args:?}: nothing on stdout expected, got:\n{}",
            escape_visible(&out.stdout)
        );
        assert!(
            err.first()
                .is_some_and(|l| l.starts_with("usage: qmp-shell ")),
            "{name} {args:?}: first stderr line should be the usage line:\n{}",
            escape_visible(&out.stderr)
        );
        let last = err.last().map(String::as_str).unwrap_or("");
        let ok = if allow_suffix && name != "reference" {
            last.starts_with(error_line)
        } else {
            last == error_line
        };
        assert!(
            ok,
            "{name} {args:?}: the last stderr line should be {}{error_line:?}; stderr:\n{}",
            if allow_suffix { "(or start with) " } else { "" },
            escape_visible(&out.stderr)
        );
    }
}

#[test]
fn cli_missing_address() {
    // Ours takes the address from QMP_SOCKET too (REFERENCE.md, defect 2)
    // and may say so after the reference's words.
    assert_usage_error_ext(
        &[],
        "qmp-shell: error: the following arguments are required: qmp_server",
        true,
    );
}

#[test]
fn cli_bad_port() {
    assert_usage_error(&["a:b"], "qmp-shell: error: Bad port number: a:b");
}

#[test]
fn cli_bad_port_with_flags() {
    assert_usage_error(
        &["-H", "-v", "localhost:port"],
        "qmp-shell: error: Bad port number: localhost:port",
    );
}

/// Connection failures are compared byte for byte.
fn assert_same_connect_error(args: &[&str]) {
    let (r, cand_name, c) = run_both(args);
    assert_eq!(
        r.status.code(),
        Some(1),
        "reference exit status for {args:?}"
    );
    assert!(
        String::from_utf8_lossy(&r.stderr).starts_with("ERROR: Couldn't connect to "),
        "reference stderr for {args:?}: {}",
        escape_visible(&r.stderr)
    );
    let problems = compare(&r, &cand_name, &c);
    assert!(
        problems.is_empty(),
        "{args:?}: {cand_name} differs from the reference\n\n{}",
        problems.join("\n\n")
    );
}

#[test]
fn cli_nonexistent_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.sock");
    let p = path.to_str().unwrap();
    assert_same_connect_error(&[p]);
    assert_same_connect_error(&["-H", p]);
    assert_same_connect_error(&["-N", p]);
    assert_same_connect_error(&["-v", "-p", p]);
}

#[test]
fn cli_socket_path_is_not_a_socket() {
    // connect(2) on a regular file: ECONNREFUSED.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain-file");
    std::fs::write(&path, b"").unwrap();
    assert_same_connect_error(&[path.to_str().unwrap()]);
}

#[test]
fn cli_socket_nobody_listens() {
    // A socket file left behind by a dead server: ECONNREFUSED too.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead.sock");
    dead_socket(&path);
    assert_same_connect_error(&[path.to_str().unwrap()]);
}

#[test]
fn cli_tcp_connection_refused() {
    // Bind then close a port so that nothing listens on it. The reason text
    // is asyncio's (`Connect call failed ('127.0.0.1', PORT)`); only the
    // prefix and the exit status are required to match.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let (r, cand_name, c) = run_both(&[&addr]);
    let prefix = format!("ERROR: Couldn't connect to {addr}: ");
    for (name, out) in [("reference", &r), (cand_name.as_str(), &c)] {
        assert_eq!(out.status.code(), Some(1), "{name} exit status");
        assert!(out.stdout.is_empty(), "{name} stdout: {:?}", out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(&prefix) && err.ends_with('\n') && err.lines().count() == 1,
            "{name} stderr should be one line starting with {prefix:?}, got:\n{}",
            escape_visible(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------------------
// Fixed behaviour: where the reference is wrong (REFERENCE.md, "Defects"),
// check what ours does instead. These always run ours.
// ---------------------------------------------------------------------------

/// Python's `json.dumps` of a string (ASCII only).
fn py_json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

fn ours_session(peer: &Peer, flags: &[&str], input: &str) -> Output {
    let mut args = flags.to_vec();
    args.push(peer.socket_str());
    run_shell(&ours(), &args, input, SHELL_TIMEOUT)
}

fn assert_contains(what: &str, haystack: &[u8], needle: &str) {
    assert!(
        text(haystack).contains(needle),
        "{what} should contain\n  {}\nbut is:\n{}",
        escape_visible(needle.as_bytes()),
        escape_visible(haystack)
    );
}

fn assert_no_traceback(out: &Output) {
    for (what, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let t = text(bytes);
        assert!(
            !t.contains("Traceback") && !t.contains("panicked"),
            "{what} shows a crash:\n{}",
            escape_visible(bytes)
        );
    }
}

/// HMP `info version` text, asked directly (no cpu-index, so it works on
/// any machine).
fn hmp_info_version(socket: &Path) -> String {
    let reply = qmp_raw(
        socket,
        &[r#"{"execute": "human-monitor-command", "arguments": {"command-line": "info version"}}"#],
    );
    let v: serde_json::Value = serde_json::from_str(&reply[0]).expect("JSON reply");
    v["return"]
        .as_str()
        .unwrap_or_else(|| panic!("unexpected reply {}", reply[0]))
        .to_string()
}

const HINT: &str = "command format: <command-name> [arg-name1=arg1] ... [arg-nameN=argN]\n";

#[test]
fn fixed_dotted_keys_followed_by_other_keys() {
    // Defect 4.
    let peer = Peer::qemu_none();
    let out = ours_session(
        &peer,
        &["-v"],
        "query-status a.b=1 c=2\n\
         query-status a.b=1 a.c=2\n\
         query-status a.b=1 x.y=2 a.c=3 z=4\n\
         query-status a.b.c=1 a.b.d=2 a.e=3\n\
         query-status a.b=1 a.b=2\n",
    );
    assert_no_traceback(&out);
    let o = &out.stdout;
    assert_contains(
        "stdout",
        o,
        "{\"execute\": \"query-status\", \"arguments\": {\"a\": {\"b\": 1}, \"c\": 2}}\n",
    );
    assert_contains(
        "stdout",
        o,
        "{\"execute\": \"query-status\", \"arguments\": {\"a\": {\"b\": 1, \"c\": 2}}}\n",
    );
    assert_contains(
        "stdout",
        o,
        "{\"execute\": \"query-status\", \"arguments\": {\"a\": {\"b\": 1, \"c\": 3}, \"x\": {\"y\": 2}, \"z\": 4}}\n",
    );
    assert_contains(
        "stdout",
        o,
        "{\"execute\": \"query-status\", \"arguments\": {\"a\": {\"b\": {\"c\": 1, \"d\": 2}, \"e\": 3}}}\n",
    );
    assert_contains(
        "stderr",
        &out.stderr,
        &format!("Error while parsing command line: Cannot set \"a.b\" multiple times\n{HINT}"),
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn fixed_quoted_strings() {
    // Defect 5: the text inside the quotes is sent, escapes resolved.
    let peer = Peer::qemu_none();
    let version = hmp_info_version(peer.socket());
    let out = ours_session(
        &peer,
        &["-v"],
        "human-monitor-command command-line=\"info version\"\n\
         human-monitor-command command-line='info version'\n\
         query-status x=\"a b\" y='c  d'\n\
         query-status x=\"say \\\"hi\\\"\" y='it\\'s'\n\
         query-status x=\"\"\n",
    );
    assert_no_traceback(&out);
    let o = &out.stdout;
    let reply = format!("{{\"return\": {}}}\n", py_json_string(&version));
    assert_eq!(
        text(o).matches(&reply).count(),
        2,
        "both quoted HMP commands should return the version {reply:?}; stdout:\n{}",
        escape_visible(o)
    );
    assert_contains(
        "stdout",
        o,
        "{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"info version\"}}\n",
    );
    assert_contains(
        "stdout",
        o,
        "{\"execute\": \"query-status\", \"arguments\": {\"x\": \"a b\", \"y\": \"c  d\"}}\n",
    );
    assert_contains(
        "stdout",
        o,
        "{\"execute\": \"query-status\", \"arguments\": {\"x\": \"say \\\"hi\\\"\", \"y\": \"it's\"}}\n",
    );
    assert_contains(
        "stdout",
        o,
        "{\"execute\": \"query-status\", \"arguments\": {\"x\": \"\"}}\n",
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn fixed_values_that_are_not_json() {
    // Defect 6: sets, bytes, NaN and infinities are parse errors, and the
    // shell carries on.
    let peer = Peer::qemu_none();
    let bad = [
        "query-status x={1,2}",
        "query-status x=[b'x']",
        "query-status x=[NaN]",
        "query-status x=[Infinity]",
        "query-status x=[-Infinity]",
        "query-status x={'a':{1,2}}",
    ];
    let input = format!("{}\nquery-status\n", bad.join("\n"));
    let out = ours_session(&peer, &[], &input);
    assert_no_traceback(&out);
    let err = text(&out.stderr);
    assert_eq!(
        err.matches("Error while parsing command line: ").count(),
        bad.len(),
        "one parse error per bad value expected; stderr:\n{}",
        escape_visible(&out.stderr)
    );
    assert_eq!(err.matches(HINT).count(), bad.len(), "hint lines:\n{err}");
    assert_contains(
        "stdout",
        &out.stdout,
        "(QEMU) {\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}}\n",
    );
    assert!(
        !text(&out.stdout).contains("NaN") && !text(&out.stdout).contains("Infinity"),
        "nothing should have been sent: {}",
        escape_visible(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn fixed_one_line_transaction_error() {
    // Defect 7: a parse error in `transaction( ... )` must not leave the
    // shell in TRANS> mode.
    let peer = Peer::qemu_none();
    let out = ours_session(
        &peer,
        &[],
        "transaction( abort x )\nquery-status\ntransaction( abort a=1 a=2 )\nquery-name\n",
    );
    assert_no_traceback(&out);
    let o = text(&out.stdout);
    assert!(
        !o.contains("TRANS>"),
        "no TRANS> prompt expected:\n{}",
        escape_visible(&out.stdout)
    );
    assert_contains(
        "stdout",
        &out.stdout,
        "(QEMU) {\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}}\n(QEMU) (QEMU) {\"return\": {}}\n(QEMU) \n",
    );
    assert_contains(
        "stderr",
        &out.stderr,
        &format!("Error while parsing command line: Expected a key=value pair, got 'x'\n{HINT}"),
    );
    assert_contains(
        "stderr",
        &out.stderr,
        &format!("Error while parsing command line: Cannot set \"a\" multiple times\n{HINT}"),
    );
}

#[test]
fn fixed_disconnect_after_quit() {
    // Defect 8: after `quit` the next command prints `Disconnected` and the
    // shell exits with status 1.
    let mut peer = Peer::qemu_none();
    let out = ours_session(&peer, &[], "quit\nquery-status\nquery-name\n");
    assert_no_traceback(&out);
    let o = text(&out.stdout);
    assert!(
        o.starts_with("Welcome to the QMP low-level shell!\nConnected to QEMU "),
        "banner:\n{}",
        escape_visible(&out.stdout)
    );
    assert!(
        o.ends_with("(QEMU) {\"return\": {}}\n(QEMU) "),
        "expected the quit reply then a prompt:\n{}",
        escape_visible(&out.stdout)
    );
    assert_eq!(
        text(&out.stderr),
        "Disconnected\n",
        "the one fatal line goes to stderr"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr:\n{}",
        escape_visible(&out.stderr)
    );
    assert!(
        peer.wait_exit(Duration::from_secs(10)).is_some(),
        "QEMU should have quit"
    );
}

#[test]
fn fixed_hmp_on_machine_without_cpus() {
    // Defect 3: HMP mode works on -M none.
    let peer = Peer::qemu_none();
    let version = hmp_info_version(peer.socket());
    let out = ours_session(&peer, &["-H"], "info version\ninfo name\nnosuch\n");
    assert_no_traceback(&out);
    let o = text(&out.stdout);
    assert!(
        o.starts_with("Welcome to the HMP shell!\nConnected to QEMU "),
        "banner:\n{}",
        escape_visible(&out.stdout)
    );
    assert_contains(
        "stdout",
        &out.stdout,
        &format!("(QEMU) {version} (QEMU) (QEMU) unknown command: 'nosuch'\r\n (QEMU) \n"),
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn fixed_hmp_cpu_without_argument() {
    // Defect 9: `cpu` alone is like `cpu x`.
    let peer = Peer::qemu_pc();
    let out = ours_session(&peer, &["-H"], "cpu\ninfo status\n");
    assert_no_traceback(&out);
    assert_contains(
        "stdout",
        &out.stdout,
        "(QEMU) cpu command takes an integer argument\n(QEMU) VM status: paused (prelaunch)\r\n (QEMU) \n",
    );
    assert_eq!(out.status.code(), Some(0));
}

// ---------------------------------------------------------------------------
// The test infrastructure itself
// ---------------------------------------------------------------------------

/// Waiting for a peer to be ready must leave the single-client monitor
/// free: a client connecting right after gets the greeting at once (every
/// read within 2 s).
#[test]
fn infra_monitor_free_after_readiness_probe() {
    for peer in [Peer::qemu_none(), Peer::storage_daemon()] {
        let replies = qmp_raw_within(
            peer.socket(),
            &[r#"{"execute": "query-version"}"#],
            Duration::from_secs(2),
        );
        assert!(replies[0].contains("\"return\""), "{replies:?}");
    }
}

#[test]
fn infra_guest_agent_answers() {
    use std::io::{BufRead, BufReader, Write};
    let peer = Peer::guest_agent();
    let mut s = std::os::unix::net::UnixStream::connect(peer.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"{\"execute\": \"guest-ping\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), "{\"return\": {}}");
}

#[test]
fn infra_two_monitors() {
    let peer = Peer::qemu_two_monitors(&["-M", "none"]);
    let a = qmp_raw(peer.socket(), &[r#"{"execute": "query-status"}"#]);
    let b = qmp_raw(
        peer.second_socket(),
        &[r#"{"execute": "stop"}"#, r#"{"execute": "query-status"}"#],
    );
    assert!(a[0].contains("\"running\": true"), "{a:?}");
    assert!(b[1].contains("\"running\": false"), "{b:?}");
}

#[test]
fn infra_peer_cleanup() {
    let (dir, pid) = {
        let peer = Peer::qemu_none();
        (peer.dir().to_path_buf(), peer.pid())
    };
    assert!(!dir.exists(), "{} should be removed", dir.display());
    // The process is reaped: no /proc entry, or not ours any more.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        !stat.contains("qemu-system"),
        "qemu {pid} still running: {stat}"
    );
}

#[test]
fn infra_run_shell_timeout_kills() {
    let r = std::panic::catch_unwind(|| {
        run_shell(
            Path::new("/bin/sleep"),
            &["30"],
            "",
            Duration::from_millis(300),
        )
    });
    let msg = r.expect_err("should time out");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("TIMEOUT"), "{msg}");
}

#[test]
fn infra_reference_is_installed() {
    let r = reference();
    assert!(r.is_file(), "{}", r.display());
    let w = reference_wrap();
    assert!(w.is_file(), "{}", w.display());
}
