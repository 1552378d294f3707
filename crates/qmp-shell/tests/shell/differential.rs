//! Differential tests: our `qmp-shell` against the reference (Python
//! qemu.qmp 0.0.6), byte for byte.
//!
//! Each scenario starts two identical fresh peers (commands change the
//! peer's state, and a monitor serves one client at a time), feeds the same
//! session (a file of `tests/data/`) on standard input to the reference and
//! to ours, and requires identical stdout, stderr and exit status.
//!
//! One intended difference is applied to the reference's output before
//! comparing: the parse-error hint line, where the reference forgets the
//! closing `]` (docs/compatibility.md). Sessions with events are compared
//! after two more, documented, steps: the reference's events (Python dict
//! reprs) are rewritten as the JSON ours prints, and event timestamps are
//! masked in both outputs (two peers never stop at the same microsecond).
//!
//! The reference is the Python module `qemu.qmp.qmp_shell` of the
//! `qemu.qmp` 0.0.6 distribution, run by its interpreter and verified
//! (`common::reference_python`), never a `qmp-shell` found on `PATH`, which
//! may be ours. `infra_reference_is_not_ours` proves the two differ.
//!
//! `QMP_DIFF_CANDIDATE=reference cargo test -p qmp-shell --test shell
//! differential::` runs the reference against itself instead of ours: use
//! it to check that a new case is deterministic before blaming our shell. Such a run never passes: a
//! compared test whose two reference runs agree fails all the same, saying
//! that ours was not compared (so the variable, left set, cannot make the
//! suite vouch for ours).
//!
//! Cases where the reference is wrong (the defects listed in
//! docs/compatibility.md) are not compared: the `fixed_*` tests below check
//! our documented behaviour for them instead, and the `difference_*` and
//! `wrap_*` tests assert both outputs where we differ on purpose.

use crate::common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
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
fn candidate() -> (Command, &'static str) {
    match std::env::var("QMP_DIFF_CANDIDATE").as_deref() {
        Ok("reference") => (reference(), "reference#2"),
        Ok("ours") | Err(_) => (ours_cmd(), "ours"),
        Ok(other) => panic!("QMP_DIFF_CANDIDATE must be `ours` or `reference`, not {other:?}"),
    }
}

/// Called once a comparison found no difference: with the reference as
/// the candidate that only proves the case deterministic, never that ours
/// matches, so the test fails saying so.
#[track_caller]
fn verdict_on_ours(cand_name: &str, what: &str) {
    assert!(
        !cand_name.starts_with("reference"),
        "QMP_DIFF_CANDIDATE=reference: {what}: the reference agreed with itself (the case \
         is deterministic); OURS WAS NOT COMPARED. Unset QMP_DIFF_CANDIDATE to test ours."
    );
}

/// The reference's banner for `flags`: the welcome line, then `Connected
/// to QEMU X.Y.Z` and an empty line, or with `-N` just `Connected`.
/// Returns the rest of `stdout` after it, if it is there.
fn after_reference_banner<'a>(flags: &[&str], stdout: &'a str) -> Option<&'a str> {
    let welcome = if flags.iter().any(|f| *f == "-H" || *f == "--hmp") {
        "Welcome to the HMP shell!\n"
    } else {
        "Welcome to the QMP low-level shell!\n"
    };
    let rest = stdout.strip_prefix(welcome)?;
    if flags
        .iter()
        .any(|f| *f == "-N" || *f == "--skip-negotiation")
    {
        return rest.strip_prefix("Connected\n");
    }
    let (version, body) = rest
        .strip_prefix("Connected to QEMU ")?
        .split_once("\n\n")?;
    let numbers: Vec<&str> = version.split('.').collect();
    (numbers.len() == 3 && numbers.iter().all(|n| n.parse::<u32>().is_ok())).then_some(body)
}

/// The reference's session on a peer worked, which a case meant to be
/// compared requires (two identical failures must not pass): no traceback,
/// its banner, a prompt for every line of `input` and one at its end (it
/// read all of it), and exit status 0.
#[track_caller]
fn assert_reference_session_worked(flags: &[&str], what: &str, input: &str, out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("Traceback"),
        "case {what} {flags:?} crashes the reference; move it to a fixed_* test:\n{err}"
    );
    let stdout = text(&out.stdout);
    let body = after_reference_banner(flags, &stdout).unwrap_or_else(|| {
        panic!(
            "case {what} {flags:?}: the reference printed no banner (it did not connect)\n{}",
            show(out)
        )
    });
    let lines = input.split_inclusive('\n').count();
    assert!(
        prompts(body) > lines,
        "case {what} {flags:?}: the reference did not read all {lines} lines\n{}",
        show(out)
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "case {what} {flags:?}: the reference's exit status\n{}",
        show(out)
    );
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
    differential_input(kind, flags, &format!("tests/data/{case}"), &input, false);
}

/// Run both shells on two fresh peers of `kind` with `flags` and `input`;
/// return the reference's output and the candidate's (name, output), after
/// checking that the reference's session worked.
fn run_pair(kind: Kind, flags: &[&str], what: &str, input: &str) -> (Output, &'static str, Output) {
    let (cand, cand_name) = candidate();

    let ref_peer = kind.start();
    let cand_peer = kind.start();

    let run = |cmd: Command, peer: &Peer| {
        let mut args: Vec<&str> = flags.to_vec();
        args.push(peer.socket_str());
        run_program(cmd, &args, input, SHELL_TIMEOUT)
    };
    let ref_out = run(reference(), &ref_peer);
    let cand_out = run(cand, &cand_peer);

    assert_reference_session_worked(flags, what, input, &ref_out);
    (ref_out, cand_name, cand_out)
}

/// [`differential`] on an `input` built by the test (`what` names it in
/// messages). With `events`, the outputs are compared after the event
/// normalisation described at the top of this file.
fn differential_input(kind: Kind, flags: &[&str], what: &str, input: &str, events: bool) -> Output {
    let (mut ref_out, cand_name, mut cand_out) = run_pair(kind, flags, what, input);
    if events {
        let pretty = flags.iter().any(|f| *f == "-p" || *f == "--pretty");
        ref_out.stdout = reference_events_as_json(&ref_out.stdout, pretty);
        if cand_name.starts_with("reference") {
            cand_out.stdout = reference_events_as_json(&cand_out.stdout, pretty);
        }
        ref_out.stdout = mask_timestamps(&ref_out.stdout);
        cand_out.stdout = mask_timestamps(&cand_out.stdout);
    }
    // Socket paths differ between the peers; none of the cases prints them,
    // but say so clearly if one ever does.
    let problems = compare(&ref_out, cand_name, &cand_out);
    if !problems.is_empty() {
        panic!(
            "scenario {kind:?} flags {flags:?} case {what}: {cand_name} differs from \
             the reference\n\n{}",
            problems.join("\n\n")
        );
    }
    verdict_on_ours(cand_name, &format!("{kind:?} {flags:?} {what}"));
    ref_out
}

// ---------------------------------------------------------------------------
// Events: from the reference's Python reprs to ours, timestamps masked
// ---------------------------------------------------------------------------

/// Render `v` as Python's `json.dumps` does for the plain ASCII values an
/// event holds: separators `, ` and `: `; with `pretty`, keys sorted and an
/// indent of 4 (`{}` and `[]` stay empty).
fn py_dumps(v: &serde_json::Value, pretty: bool, level: usize) -> String {
    use serde_json::Value;
    let pad = |n: usize| " ".repeat(4 * n);
    match v {
        Value::Object(map) if !map.is_empty() => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            if pretty {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            let items: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{}: {}", py_json_string(k), py_dumps(v, pretty, level + 1)))
                .collect();
            if pretty {
                let inner: Vec<String> = items
                    .iter()
                    .map(|i| format!("{}{i}", pad(level + 1)))
                    .collect();
                format!("{{\n{}\n{}}}", inner.join(",\n"), pad(level))
            } else {
                format!("{{{}}}", items.join(", "))
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let items: Vec<String> = items
                .iter()
                .map(|i| py_dumps(i, pretty, level + 1))
                .collect();
            if pretty {
                let inner: Vec<String> = items
                    .iter()
                    .map(|i| format!("{}{i}", pad(level + 1)))
                    .collect();
                format!("[\n{}\n{}]", inner.join(",\n"), pad(level))
            } else {
                format!("[{}]", items.join(", "))
            }
        }
        Value::Object(_) => "{}".to_string(),
        Value::Array(_) => "[]".to_string(),
        Value::String(s) => py_json_string(s),
        other => other.to_string(),
    }
}

/// The reference prints each event as a Python dict repr (`{'event':
/// 'STOP', ...}`); ours prints JSON rendered like replies (documented
/// difference). Rewrite the reference's event reprs as that JSON. Only the
/// simple events these cases produce are handled (ASCII, no quotes inside,
/// no `True`/`False`/`None`); anything else fails loudly.
fn reference_events_as_json(stdout: &[u8], pretty: bool) -> Vec<u8> {
    let text = String::from_utf8(stdout.to_vec()).expect("the reference's stdout is UTF-8");
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let Some(at) = line.find("{'") else {
            out.push_str(line);
            continue;
        };
        let (before, repr) = line.split_at(at);
        let body = repr.trim_end_matches('\n');
        assert!(
            !body.contains('"')
                && !body.contains('\\')
                && !["True", "False", "None"].iter().any(|w| body.contains(w)),
            "an event repr this test cannot convert: {body}"
        );
        let value: serde_json::Value = serde_json::from_str(&body.replace('\'', "\""))
            .unwrap_or_else(|e| panic!("not an event repr ({e}): {body}"));
        assert!(value.get("event").is_some(), "not an event: {body}");
        out.push_str(before);
        out.push_str(&py_dumps(&value, pretty, 0));
        out.push_str(&repr[body.len()..]);
    }
    out.into_bytes()
}

/// Replace the numbers of `"seconds": N` and `"microseconds": N` with `#`.
fn mask_timestamps(stdout: &[u8]) -> Vec<u8> {
    let re = regex::Regex::new(r#"("(?:seconds|microseconds)": )[0-9]+"#).expect("regex");
    re.replace_all(&text(stdout), "${1}#")
        .into_owned()
        .into_bytes()
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

// Info commands, `cpu N` then commands on that CPU, errors (data/hmp_more.txt).
scenario!(hmp_more_pc, Kind::QemuPc, ["-H"], "hmp_more.txt");
scenario!(
    hmp_more_pc_vp,
    Kind::QemuPc,
    ["-H", "-v", "-p"],
    "hmp_more.txt"
);

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
// Scenarios: events printed at empty lines, on a pipe
// ---------------------------------------------------------------------------

/// `stop`, empty line, `cont`, empty line: the reference prints STOP at the
/// first empty line and RESUME at the second (QEMU sends each event before
/// the reply to the command that caused it).
const STOP_CONT: &str = "stop\n\ncont\n\n";

#[test]
fn events_stop_cont() {
    differential_input(Kind::QemuNone, &[], "stop/cont", STOP_CONT, true);
}

#[test]
fn events_stop_cont_v() {
    differential_input(Kind::QemuNone, &["-v"], "stop/cont", STOP_CONT, true);
}

#[test]
fn events_stop_cont_p() {
    differential_input(Kind::QemuNone, &["-p"], "stop/cont", STOP_CONT, true);
}

#[test]
fn events_stop_cont_vp() {
    differential_input(Kind::QemuNone, &["-v", "-p"], "stop/cont", STOP_CONT, true);
}

/// On a paused PC (`-S`): `cont` starts it (RESUME), `stop` stops it (STOP).
#[test]
fn events_cont_stop_on_paused_pc() {
    differential_input(
        Kind::QemuPc,
        &[],
        "cont/stop on -S",
        "cont\n\nstop\n\nquery-status\n",
        true,
    );
}

/// `cont` (no event: already running) and an empty line, then 200 times
/// `stop`, empty line, `cont`, empty line: the reference prints exactly one
/// event at each of those 400 empty lines, STOP and RESUME in turn.
#[test]
fn events_one_per_empty_line_200_times() {
    let mut input = String::from("cont\n\n");
    for _ in 0..200 {
        input.push_str(STOP_CONT);
    }
    let reference = differential_input(Kind::QemuNone, &[], "200 x stop/cont", &input, true);
    // The case means what it says: the reference's own output.
    let stdout = text(&reference.stdout);
    let body = stdout
        .split_once("\n\n")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no banner\n{}", show(&reference)));
    let mut expected = String::from("(QEMU) {\"return\": {}}\n(QEMU) ");
    for _ in 0..200 {
        for event in ["STOP", "RESUME"] {
            expected.push_str(&format!(
                "(QEMU) {{\"return\": {{}}}}\n(QEMU) {{\"timestamp\": {{\"seconds\": #, \
                 \"microseconds\": #}}, \"event\": \"{event}\"}}\n"
            ));
        }
    }
    expected.push_str("(QEMU) \n");
    assert_eq!(body, expected, "the reference's session, events normalised");
}

// ---------------------------------------------------------------------------
// Command-line errors
// ---------------------------------------------------------------------------

const QUICK: Duration = Duration::from_secs(60);

fn run_both(args: &[&str]) -> (Output, String, Output) {
    let (cand, cand_name) = candidate();
    let r = run_program(reference(), args, "", QUICK);
    let c = run_program(cand, args, "", QUICK);
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
    verdict_on_ours(&cand_name, &format!("{args:?}"));
}

#[test]
fn cli_missing_address() {
    // Ours takes the address from QMP_SOCKET too (docs/compatibility.md)
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
    verdict_on_ours(&cand_name, &format!("{args:?}"));
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
    // A port held bound but never listening: refused, and nobody else can
    // take it meanwhile. The reason text is asyncio's (`Connect call failed
    // ('127.0.0.1', PORT)`); only the prefix and the exit status are
    // required to match.
    let (_held, port) = refusing_tcp_port();
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
    verdict_on_ours(&cand_name, &addr);
}

// ---------------------------------------------------------------------------
// Fixed behaviour: where the reference is wrong (docs/compatibility.md),
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
// Documented differences: both outputs asserted
// ---------------------------------------------------------------------------

/// `-p` sorts keys as strings. The reference sorts the keys of a Python
/// literal with integer keys (`{10: 1, 9: 2}`) numerically, since they are
/// still integers when `json.dumps(sort_keys=True)` sees them; ours has
/// turned them into JSON strings already (docs/compatibility.md). With
/// `-v -p` the echoed command shows the order; everything else is equal,
/// including a literal whose keys are strings from the start.
#[test]
fn difference_pretty_sorts_integer_keys_as_strings() {
    let input = "query-status x={10:1,9:2,100:{3:0,20:1}}\nquery-status x={\"10\":1,\"9\":2}\n";
    let frame = |x: &str| {
        format!(
            "(QEMU) {{\n    \"arguments\": {{\n        \"x\": {x}\n    }},\n    \
             \"execute\": \"query-status\"\n}}\n"
        )
    };
    let numeric = frame(
        "{\n            \"9\": 2,\n            \"10\": 1,\n            \"100\": {\n                \
         \"3\": 0,\n                \"20\": 1\n            }\n        }",
    );
    let as_strings = frame(
        "{\n            \"10\": 1,\n            \"100\": {\n                \"20\": 1,\n                \
         \"3\": 0\n            },\n            \"9\": 2\n        }",
    );
    let string_keys = frame("{\n            \"10\": 1,\n            \"9\": 2\n        }");

    let ref_peer = Peer::qemu_none();
    let our_peer = Peer::qemu_none();
    let r = run_program(
        reference(),
        &["-v", "-p", ref_peer.socket_str()],
        input,
        SHELL_TIMEOUT,
    );
    let o = ours_session(&our_peer, &["-v", "-p"], input);
    assert_no_traceback(&r);
    assert_no_traceback(&o);

    let ref_text = text(&r.stdout);
    let our_text = text(&o.stdout);
    assert_eq!(
        ref_text.matches(&numeric).count(),
        1,
        "reference\n{}",
        show(&r)
    );
    assert_eq!(
        ref_text.matches(&string_keys).count(),
        1,
        "reference\n{}",
        show(&r)
    );
    assert_eq!(
        our_text.matches(&as_strings).count(),
        1,
        "ours\n{}",
        show(&o)
    );
    assert_eq!(
        our_text.matches(&string_keys).count(),
        1,
        "ours\n{}",
        show(&o)
    );
    // That block is the only difference.
    let expected = ref_text.replace(&numeric, &as_strings);
    if let Some(d) = describe_difference(
        "stdout",
        "reference (integer keys re-sorted as strings)",
        expected.as_bytes(),
        "ours",
        &o.stdout,
    ) {
        panic!("{d}");
    }
    assert_eq!(o.stderr, r.stderr, "stderr\n{}\n{}", show(&r), show(&o));
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(r.status.code(), Some(0), "{}", show(&r));
}

// ---------------------------------------------------------------------------
// qmp-shell-wrap against the reference's qmp-shell-wrap
// ---------------------------------------------------------------------------

/// Run a wrap (`cmd`: ours or the reference's) with `flags`, QEMU argv
/// `qemu`, and `input` (of `lines` lines) on standard input, in a private
/// directory (the reference puts its socket in the current directory).
///
/// The reference does not stop QEMU at the end of input: it waits for QEMU
/// to exit on its own (documented defect). With `quit_side`, QEMU is told
/// to `quit` through that extra monitor once the wrap has read all its
/// input (the prompt after the last line is out) and closed its own QMP
/// connection (QEMU reports the wrap's chardev as `disconnected:`), so that
/// the reference can finish. Quitting earlier would make the reference
/// crash with a traceback when it closes the connection QEMU dropped.
fn run_wrap(
    mut cmd: Command,
    flags: &[&str],
    qemu: &[&str],
    input: &str,
    lines: usize,
    quit_side: Option<&Path>,
) -> Output {
    use std::io::{Read, Write};
    use std::process::Stdio;
    use std::sync::{Arc, Mutex};

    let cwd = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    shell_env(&mut cmd, home.path());
    cmd.args(flags)
        .arg("--")
        .args(qemu)
        .current_dir(cwd.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own, which the guard below kills whole should the
        // test fail midway: the reference wrap's QEMU is in it too.
        .process_group(0);
    let desc = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {desc}: {e}"));
    let mut group = GroupGuard(Some(child.id() as i32));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let out_reader = {
        let stdout = Arc::clone(&stdout);
        let mut pipe = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                stdout.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let err_reader = {
        let mut pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let mut quit_sent = false;
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if let (Some(side), false) = (quit_side, quit_sent) {
            let so_far = text(&stdout.lock().unwrap());
            if prompts(&so_far) > lines && wrap_monitor_disconnected(side) {
                // QEMU has been seen to drop a side-monitor client right
                // after its greeting, just after the one before it left
                // (a write then fails with EPIPE): such a try is made
                // again at the next turn.
                let quit = try_qmp_raw_within(side, &[r#"{"execute": "quit"}"#], SHELL_TIMEOUT);
                if let Ok(replies) = quit {
                    assert!(replies[0].contains("\"return\""), "quit: {replies:?}");
                    quit_sent = true;
                }
            }
        }
        if start.elapsed() > SHELL_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "TIMEOUT: {desc} did not finish within {SHELL_TIMEOUT:?}\n--- stdout ---\n{}",
                escape_visible(&stdout.lock().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    group.0 = None;
    let _ = writer.join();
    out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    let stdout = stdout.lock().unwrap().clone();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Kills a process group when dropped (unless disarmed with `None`): a
/// failed wrap test leaves no wrap and no QEMU behind.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: kill(2) on the group the test created.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// How many prompts (`(QEMU) ` or `TRANS> `) `stdout` holds: one per line
/// read, and one more for the end of input.
fn prompts(stdout: &str) -> usize {
    stdout.matches("(QEMU) ").count() + stdout.matches("TRANS> ").count()
}

/// Whether QEMU (asked through its monitor at `side`) reports the monitor
/// the wrap added (`-qmp unix:...qmp-shell-wrap-PID`, the one that is not
/// `side`) as disconnected. (Connected, QEMU names it just `unix:`.)
fn wrap_monitor_disconnected(side: &Path) -> bool {
    // A try that failed (see the quit in `run_wrap`) is made again.
    let Ok(reply) = try_qmp_raw_within(side, &[r#"{"execute": "query-chardev"}"#], SHELL_TIMEOUT)
    else {
        return false;
    };
    let v: serde_json::Value = serde_json::from_str(&reply[0]).expect("query-chardev reply");
    let side = side.to_str().unwrap();
    let others: Vec<&str> = v["return"]
        .as_array()
        .expect("query-chardev returns a list")
        .iter()
        .filter_map(|c| c["filename"].as_str())
        .filter(|f| !f.contains(side))
        .collect();
    assert_eq!(others.len(), 1, "one wrap monitor in {}", reply[0]);
    others[0].starts_with("disconnected:")
}

/// Our wrap against the reference's on the same QEMU command line and
/// session. Compared: standard output and the exit status. Two documented
/// differences are accounted for: the reference's banner says `Connected`
/// without the version (it drops QEMU's greeting when QEMU connects to it),
/// ours says `Connected to QEMU X.Y.Z` and an empty line as `qmp-shell`
/// does; and standard error is not compared (ours stops QEMU, which says so
/// there with its pid; the reference needs QEMU told to quit).
fn wrap_differential(flags: &[&str], machine: &[&str], case: &str) {
    let input = case_input(case);
    let lines = input.lines().count();
    let side_dir = tempfile::tempdir().unwrap();
    let run = |cmd: Command, name: &str, quit: bool| {
        let side = side_dir.path().join(format!("{name}-side.sock"));
        let side_arg = format!("unix:{},server=on,wait=off", side.display());
        let mut qemu = vec!["qemu-system-x86_64"];
        qemu.extend_from_slice(machine);
        qemu.extend_from_slice(&["-display", "none", "-nodefaults", "-qmp", &side_arg]);
        run_wrap(
            cmd,
            flags,
            &qemu,
            &input,
            lines,
            quit.then_some(side.as_path()),
        )
    };
    let r = run(reference_wrap(), "ref", true);
    let o = run(ours_wrap_cmd(), "ours", false);
    assert_no_traceback(&o);
    assert!(
        r.stderr.is_empty(),
        "the reference wrap should print nothing on stderr here\n{}",
        show(&r)
    );
    let welcome = if flags.contains(&"-H") {
        "Welcome to the HMP shell!\n"
    } else {
        "Welcome to the QMP low-level shell!\n"
    };
    let ref_text = text(&r.stdout);
    let ref_body = ref_text
        .strip_prefix(welcome)
        .and_then(|t| t.strip_prefix("Connected\n"))
        .unwrap_or_else(|| panic!("the reference wrap's banner\n{}", show(&r)));
    let our_text = text(&o.stdout);
    let our_body = our_text
        .strip_prefix(welcome)
        .and_then(|t| t.strip_prefix("Connected to QEMU "))
        .and_then(|t| t.split_once("\n\n"))
        .filter(|(version, _)| {
            version.split('.').count() == 3 && version.split('.').all(|n| n.parse::<u32>().is_ok())
        })
        .map(|(_, body)| body)
        .unwrap_or_else(|| panic!("our wrap's banner\n{}", show(&o)));
    assert!(
        prompts(ref_body) > lines,
        "the reference wrap did not run the whole session\n{}",
        show(&r)
    );
    if let Some(d) = describe_difference(
        "stdout after the banner",
        "reference wrap",
        ref_body.as_bytes(),
        "our wrap",
        our_body.as_bytes(),
    ) {
        panic!("{d}");
    }
    assert_eq!(r.status.code(), Some(0), "{}", show(&r));
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
}

#[test]
fn wrap_qmp_basic() {
    wrap_differential(&[], &["-M", "none"], "qmp_basic.txt");
}

#[test]
fn wrap_qmp_basic_vp() {
    wrap_differential(&["-v", "-p"], &["-M", "none"], "qmp_basic.txt");
}

#[test]
fn wrap_qmp_transactions() {
    wrap_differential(&[], &["-M", "none"], "qmp_transactions.txt");
}

#[test]
fn wrap_hmp_pc() {
    wrap_differential(
        &["-H"],
        &["-M", "pc", "-S", "-smp", "2", "-accel", "tcg"],
        "hmp.txt",
    );
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

/// The reference is the verified Python module, whatever `qmp-shell` is
/// on `PATH`.
#[test]
fn infra_reference_is_the_python_module() {
    let py = reference_python();
    assert!(py.python.is_file(), "{}", py.python.display());
    assert!(
        py.module.ends_with("qemu/qmp/qmp_shell.py"),
        "{}",
        py.module.display()
    );
    for cmd in [reference(), reference_wrap()] {
        assert_eq!(Path::new(cmd.get_program()), py.python.as_path());
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[..2], ["-I", "-c"], "{args:?}");
        assert!(
            args[2].contains("from qemu.qmp.qmp_shell import main"),
            "{args:?}"
        );
    }
}

/// Reference and candidate are different programs: the reference answers
/// `--help` with the argparse usage of qemu.qmp 0.0.6 and knows neither
/// `--version` nor `--json`; ours has all three. If the reference were
/// replaced by our binary (or the other way round), this fails.
#[test]
fn infra_reference_is_not_ours() {
    const REF_USAGE: &str = "usage: qmp-shell [-h] [-H] [-v] [-p] [-l LOGFILE] [-N] qmp_server";
    const REF_WRAP_USAGE: &str = "usage: qmp-shell-wrap [-h] [-H] [-v] [-p] [-l LOGFILE] ...";

    let first_line = |out: &Output| text(&out.stdout).lines().next().unwrap_or("").to_string();

    let r = run_program(reference(), &["--help"], "", QUICK);
    assert_eq!(r.status.code(), Some(0), "reference --help\n{}", show(&r));
    assert_eq!(first_line(&r), REF_USAGE, "reference --help\n{}", show(&r));
    let o = run_program(ours_cmd(), &["--help"], "", QUICK);
    assert_eq!(o.status.code(), Some(0), "ours --help\n{}", show(&o));
    assert_ne!(
        o.stdout, r.stdout,
        "ours and the reference print the same --help"
    );
    assert!(
        text(&o.stdout).contains("--json"),
        "ours --help\n{}",
        show(&o)
    );

    let r = run_program(reference(), &["--version"], "", QUICK);
    assert_eq!(
        r.status.code(),
        Some(2),
        "reference --version\n{}",
        show(&r)
    );
    assert!(r.stdout.is_empty(), "reference --version\n{}", show(&r));
    let o = run_program(ours_cmd(), &["--version"], "", QUICK);
    assert_eq!(o.status.code(), Some(0), "ours --version\n{}", show(&o));
    assert!(
        text(&o.stdout).starts_with("qmp-shell "),
        "ours --version\n{}",
        show(&o)
    );

    let r = run_program(reference(), &["--json", "x.sock"], "", QUICK);
    assert_eq!(r.status.code(), Some(2), "reference --json\n{}", show(&r));
    assert!(
        text(&r.stderr).ends_with("qmp-shell: error: unrecognized arguments: --json\n"),
        "reference --json\n{}",
        show(&r)
    );

    let r = run_program(reference_wrap(), &["--help"], "", QUICK);
    assert_eq!(
        r.status.code(),
        Some(0),
        "reference wrap --help\n{}",
        show(&r)
    );
    assert_eq!(
        first_line(&r),
        REF_WRAP_USAGE,
        "reference wrap --help\n{}",
        show(&r)
    );
    let o = run_program(ours_wrap_cmd(), &["--help"], "", QUICK);
    assert_eq!(o.status.code(), Some(0), "ours wrap --help\n{}", show(&o));
    assert_ne!(
        o.stdout, r.stdout,
        "ours and the reference wrap print the same --help"
    );

    // And the executables differ.
    let py = std::fs::canonicalize(&reference_python().python).unwrap();
    for bin in [ours(), ours_wrap()] {
        assert_ne!(std::fs::canonicalize(&bin).unwrap(), py);
    }
}
