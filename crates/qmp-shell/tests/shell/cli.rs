//! The `qmp-shell` command line against real peers: `--version`, `--help`,
//! every address form (UNIX path, `HOST:PORT`, `[IPv6]:PORT`, `QMP_SOCKET`),
//! usage errors, `-N` with the guest agent, the storage daemon, and HMP mode.

use crate::common;

use std::process::Output;
use std::time::Duration;

use common::*;

const T: Duration = SHELL_TIMEOUT;

fn assert_ok(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "{}", show(out));
}

/// The banner of a QMP session with QEMU 7.2, as the reference prints it.
const QMP_BANNER: &str = "Welcome to the QMP low-level shell!\nConnected to QEMU 7.";

// ---------------------------------------------------------------------------
// --version, --help
// ---------------------------------------------------------------------------

#[test]
fn version_prints_name_and_version() {
    let out = run_shell(&ours(), &["--version"], "", T);
    assert_ok(&out);
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("qmp-shell {}", env!("CARGO_PKG_VERSION"))),
        "{}",
        show(&out)
    );
    // The commit follows when known (see packaging.rs).
    let re = regex::Regex::new(r"^qmp-shell \d+\.\d+\.\d+( \(rev [0-9a-f]{10}\))?\n$").unwrap();
    assert!(re.is_match(&stdout), "{}", show(&out));
}

#[test]
fn help_lists_reference_options_and_exit_statuses() {
    let out = run_shell(&ours(), &["--help"], "", T);
    assert_ok(&out);
    let help = text(&out.stdout);
    for opt in [
        "-H, --hmp",
        "-v, --verbose",
        "-p, --pretty",
        "-l, --logfile",
        "-N, --skip-negotiation",
        "qmp_server",
        "QMP_SOCKET",
    ] {
        assert!(help.contains(opt), "--help lacks {opt:?}:\n{help}");
    }
    assert!(help.contains("Exit status:"), "{help}");
    for code in ["0", "1", "2", "3"] {
        let re = regex::Regex::new(&format!(r"(?m)^\s+{code}\s+\S")).unwrap();
        assert!(
            re.is_match(&help),
            "--help does not document exit status {code}:\n{help}"
        );
    }
    // The short form works too.
    let short = run_shell(&ours(), &["-h"], "", T);
    assert_ok(&short);
    assert!(text(&short.stdout).contains("-N"), "{}", show(&short));
}

// ---------------------------------------------------------------------------
// Address forms
// ---------------------------------------------------------------------------

#[test]
fn unix_path_address() {
    let peer = Peer::qemu_none();
    let out = run_shell(&ours(), &[peer.socket_str()], "query-status\n", T);
    assert_ok(&out);
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with(QMP_BANNER), "{}", show(&out));
    assert!(
        stdout
            .contains(r#"{"return": {"status": "running", "singlestep": false, "running": true}}"#),
        "{}",
        show(&out)
    );
}

#[test]
fn tcp_host_port_address() {
    let (_peer, port) = qemu_tcp4_monitor();
    let addr = format!("127.0.0.1:{port}");
    let out = run_shell(&ours(), &[&addr], "query-status\n", T);
    assert_ok(&out);
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with(QMP_BANNER), "{}", show(&out));
    assert!(stdout.contains(r#""status": "running""#), "{}", show(&out));
    // `localhost` resolves too.
    let addr = format!("localhost:{port}");
    let out = run_shell(&ours(), &[&addr], "query-name\n", T);
    assert_ok(&out);
    assert!(
        text(&out.stdout).contains(r#"{"return": {}}"#),
        "{}",
        show(&out)
    );
}

/// `[::1]:PORT`. This machine must have an IPv6 loopback: the test fails
/// (rather than skipping) when it has none.
#[test]
fn tcp_ipv6_bracketed_address() {
    assert!(
        std::fs::read_to_string("/proc/net/if_inet6")
            .map(|s| s
                .lines()
                .any(|l| l.starts_with("00000000000000000000000000000001")))
            .unwrap_or(false),
        "no IPv6 loopback (::1) on this machine: this test needs one"
    );
    // QEMU's `-qmp tcp:[::1]:PORT` shorthand does not strip the brackets
    // ("address resolution failed for [::1]"): spell the chardev out.
    let peer = Peer::qemu_with_args(&[
        "-M",
        "none",
        "-chardev",
        "socket,id=m6,host=::1,port=0,server=on,wait=off,ipv6=on",
        "-mon",
        "chardev=m6,mode=control",
    ]);
    let port = qemu_tcp_port(&peer, "m6");
    let addr = format!("[::1]:{port}");
    let out = run_shell(&ours(), &[&addr], "query-status\n", T);
    assert_ok(&out);
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with(QMP_BANNER), "{}", show(&out));
    assert!(stdout.contains(r#""status": "running""#), "{}", show(&out));
}

#[test]
fn qmp_socket_env_is_the_default_address() {
    let peer = Peer::qemu_none();
    let out = run_shell_env(
        &ours(),
        &[],
        "query-status\n",
        T,
        &[("QMP_SOCKET", peer.socket_str())],
    );
    assert_ok(&out);
    assert!(text(&out.stdout).starts_with(QMP_BANNER), "{}", show(&out));
    assert!(
        text(&out.stdout).contains(r#""status": "running""#),
        "{}",
        show(&out)
    );
}

#[test]
fn address_argument_wins_over_qmp_socket() {
    let peer = Peer::qemu_none();
    let bogus = peer.dir().join("no-such.sock");
    let out = run_shell_env(
        &ours(),
        &[peer.socket_str()],
        "query-status\n",
        T,
        &[("QMP_SOCKET", bogus.to_str().unwrap())],
    );
    assert_ok(&out);
    assert!(
        text(&out.stdout).contains(r#""status": "running""#),
        "{}",
        show(&out)
    );
    // And the reverse: only QMP_SOCKET names the bogus path, so it is used.
    let out = run_shell_env(
        &ours(),
        &[],
        "",
        T,
        &[("QMP_SOCKET", bogus.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!("ERROR: Couldn't connect to {}: ", bogus.display())),
        "{}",
        show(&out)
    );
}

#[test]
fn missing_address_is_a_usage_error() {
    let out = run_shell(&ours(), &[], "", T);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(err.starts_with("usage: qmp-shell "), "{}", show(&out));
    assert!(err.contains("qmp-shell: error: "), "{}", show(&out));
    assert!(out.stdout.is_empty(), "{}", show(&out));
}

/// The usage error `out` printed under `--json`: exit 2, nothing on
/// standard output, and on standard error exactly one line, a JSON value.
#[track_caller]
fn json_usage_error(out: &Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(2), "{}", show(out));
    assert!(out.stdout.is_empty(), "{}", show(out));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{}", show(out));
    serde_json::from_str(&err).unwrap_or_else(|e| panic!("not one JSON line ({e})\n{}", show(out)))
}

#[test]
fn usage_errors_under_json_are_json_lines() {
    // Found by clap (an unknown option, a conflict) and after it (no
    // address, a bad port, a value against another), in qmp-shell and
    // qmp-shell-wrap.
    let wrap = std::path::PathBuf::from(env!("CARGO_BIN_EXE_qmp-shell-wrap"));
    let cases: [(std::path::PathBuf, &[&str], &str); 5] = [
        (
            ours(),
            &["--json", "--bogus", "/tmp/s"],
            "unexpected argument '--bogus' found",
        ),
        (
            ours(),
            &["--json"],
            "the following arguments are required: qmp_server",
        ),
        (ours(), &["--json", "a:b"], "Bad port number: a:b"),
        (
            wrap.clone(),
            &["--json", "-p", "--", "true"],
            "cannot be used with '--pretty'",
        ),
        (
            wrap,
            &["--json", "--color", "always", "true"],
            "cannot be used with '--json'",
        ),
    ];
    for (bin, args, message) in cases {
        let out = run_shell(&bin, args, "", T);
        let line = json_usage_error(&out);
        assert_eq!(line["error"]["class"], "UsageError", "{line}");
        let desc = line["error"]["desc"].as_str().unwrap_or_default();
        assert!(desc.contains(message), "{args:?}: {desc}");
    }
    // After `--`, `--json` is not an option: the error is worded for people.
    let out = run_shell(&ours(), &["--bogus", "--", "--json"], "", T);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        text(&out.stderr).starts_with("usage: qmp-shell "),
        "{}",
        show(&out)
    );
}

#[test]
fn bad_port_is_a_usage_error() {
    let out = run_shell(&ours(), &["a:b"], "", T);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{}", show(&out));
    assert!(lines[0].starts_with("usage: qmp-shell "), "{}", show(&out));
    assert_eq!(lines[1], "qmp-shell: error: Bad port number: a:b");
}

#[test]
fn port_out_of_range_is_a_usage_error() {
    let out = run_shell(&ours(), &["host:99999"], "", T);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        text(&out.stderr).ends_with("qmp-shell: error: Bad port number: host:99999\n"),
        "{}",
        show(&out)
    );
}

/// Options that contradict each other (or one that is ignored beside
/// another) are refused before anything is done, in all three programs, and
/// every usage error looks the same: the usage line, then `PROGRAM: error:
/// MESSAGE`, exit 2, nothing on standard output; clap's errors too (they
/// used to print `error: ...` in clap's layout beside the argparse layout
/// of the others). With `--json`, the one JSON line `{"error": {"class":
/// "UsageError", "desc": MESSAGE}}` instead. Against a live QEMU, so that
/// options taken would show.
#[test]
fn conflicting_options_are_refused_and_usage_errors_look_alike() {
    let qemu = Peer::qemu_none();
    let sock = qemu.socket_str();
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.sock");
    dead_socket(&dead);
    let dead = dead.to_str().unwrap();
    let listen = dir.path().join("p.sock");
    let listen = listen.to_str().unwrap();
    let shell = "qmp-shell [-h] [-H] [-v] [-p] [-l LOGFILE] [-N] [OPTIONS] qmp_server";
    let wrap = "qmp-shell-wrap [-h] [-H] [-v] [-p] [-l LOGFILE] [OPTIONS] [--] [QEMU ARGV...]";
    let proxy = "qmp-proxy [-h] [-l LOGFILE] [OPTIONS] --listen PATH TARGET\n       \
                 qmp-proxy [-h] [-l LOGFILE] [OPTIONS] --listen PATH --domain DOMAIN [--connect URI]";
    let qemu_argv = ["--", "qemu-system-x86_64", "-M", "none", "-display", "none"];
    let cases: Vec<(std::path::PathBuf, &str, Vec<&str>, &str)> = vec![
        (
            ours(),
            shell,
            vec!["-N", "-H", "-c", "info status", sock],
            "the argument '--skip-negotiation' cannot be used with '--hmp'",
        ),
        (
            ours(),
            shell,
            vec!["--list", "-c", "query-status"],
            "the argument '--list' cannot be used with '--command <CMD>'",
        ),
        (
            ours(),
            shell,
            vec!["--list", "--timeout", "5"],
            "the argument '--list' cannot be used with '--timeout <SECONDS>'",
        ),
        (
            ours(),
            shell,
            vec!["--json", "-v", "-c", "query-status", sock],
            "the argument '--json' cannot be used with '--verbose'",
        ),
        (
            ours(),
            shell,
            vec!["--json", "-p", "-c", "query-status", sock],
            "the argument '--json' cannot be used with '--pretty'",
        ),
        (
            ours(),
            shell,
            vec!["--json", "--color", "always", "-c", "query-status", sock],
            "the argument '--color always' cannot be used with '--json' \
             (JSON lines are never coloured)",
        ),
        (
            ours(),
            shell,
            vec!["--retry-delay", "0.1", "-c", "query-status", sock],
            "the following required arguments were not provided: --retry <N>",
        ),
        (
            ours(),
            shell,
            vec!["--domain", "", "-c", "query-status"],
            "invalid value '' for '--domain <DOMAIN>': an empty name: \
             give a domain's name, UUID or id",
        ),
        (
            ours(),
            shell,
            vec!["--hmpp", sock],
            "unexpected argument '--hmpp' found (a similar argument exists: '--hmp')",
        ),
        (ours(), shell, vec!["a:b"], "Bad port number: a:b"),
        (
            ours_wrap(),
            wrap,
            [&["--json", "-p", "-c", "query-status"][..], &qemu_argv].concat(),
            "the argument '--json' cannot be used with '--pretty'",
        ),
        (
            ours_wrap(),
            wrap,
            [
                &["--json", "--color", "always", "-c", "query-status"][..],
                &qemu_argv,
            ]
            .concat(),
            "the argument '--color always' cannot be used with '--json' \
             (JSON lines are never coloured)",
        ),
        (
            ours_wrap(),
            wrap,
            [&["-N"][..], &qemu_argv].concat(),
            "-N is a qmp-shell option; qmp-shell-wrap does not take it \
             (it always talks QMP to the QEMU it starts)",
        ),
        (
            proxy_bin(),
            proxy,
            vec!["--retry-delay", "1", "--listen", listen, dead],
            "the following required arguments were not provided: --retry <N>",
        ),
        (
            proxy_bin(),
            proxy,
            vec!["--listen", listen],
            "the following required arguments were not provided: <TARGET>",
        ),
        (
            proxy_bin(),
            proxy,
            vec!["--max-clients", "0", "--listen", listen, dead],
            "--max-clients must be at least 1",
        ),
    ];
    for (bin, usage, args, message) in cases {
        let out = run_shell(&bin, &args, "", T);
        let program = bin.file_name().unwrap().to_str().unwrap();
        if args
            .iter()
            .take_while(|a| **a != "--")
            .any(|a| *a == "--json")
        {
            // Asked for JSON lines on standard error: the usage error is one.
            assert_eq!(
                json_usage_error(&out),
                serde_json::json!({"error": {"class": "UsageError", "desc": message}}),
                "{program} {args:?}"
            );
        } else {
            assert_eq!(
                (out.status.code(), text(&out.stdout), text(&out.stderr)),
                (
                    Some(2),
                    String::new(),
                    format!("usage: {usage}\n{program}: error: {message}\n")
                ),
                "{program} {args:?}\n{}",
                show(&out)
            );
        }
    }
    // Nothing was created, nothing is listening.
    assert!(std::fs::symlink_metadata(listen).is_err());
    // Options that go together still do.
    let out = run_shell(
        &ours(),
        &["--json", "--color", "never", "-c", "query-name", sock],
        "",
        T,
    );
    assert_ok(&out);
    let out = run_shell(
        &ours(),
        &[
            "--retry",
            "1",
            "--retry-delay",
            "0.1",
            "-c",
            "query-name",
            sock,
        ],
        "",
        T,
    );
    assert_ok(&out);
}

fn proxy_bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_qmp-proxy"))
}

#[test]
fn connection_refused_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody.sock");
    let out = run_shell(&ours(), &[path.to_str().unwrap()], "", T);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{}", show(&out));
    assert!(
        err.starts_with(&format!("ERROR: Couldn't connect to {}: ", path.display())),
        "{}",
        show(&out)
    );
}

// ---------------------------------------------------------------------------
// Other peers
// ---------------------------------------------------------------------------

#[test]
fn skip_negotiation_with_guest_agent() {
    let peer = Peer::guest_agent();
    let out = run_shell(&ours(), &["-N", peer.socket_str()], "guest-ping\n", T);
    assert_ok(&out);
    assert_eq!(
        text(&out.stdout),
        "Welcome to the QMP low-level shell!\nConnected\n(QEMU) {\"return\": {}}\n(QEMU) \n",
        "{}",
        show(&out)
    );
    assert!(out.stderr.is_empty(), "{}", show(&out));
}

#[test]
fn storage_daemon_blockdev_add() {
    let peer = Peer::storage_daemon();
    let out = run_shell(
        &ours(),
        &[peer.socket_str()],
        "blockdev-add driver=null-co node-name=n0\nquery-named-block-nodes\n",
        T,
    );
    assert_ok(&out);
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(stdout.starts_with(QMP_BANNER), "{}", show(&out));
    assert_eq!(lines[3], "(QEMU) {\"return\": {}}", "{}", show(&out));
    let json = lines[4].strip_prefix("(QEMU) ").expect("prompt");
    let v: serde_json::Value = serde_json::from_str(json).expect("reply is JSON");
    let nodes = v["return"].as_array().expect("a list of nodes");
    assert!(
        nodes
            .iter()
            .any(|n| n["node-name"] == "n0" && n["drv"] == "null-co"),
        "{}",
        show(&out)
    );
}

// ---------------------------------------------------------------------------
// HMP
// ---------------------------------------------------------------------------

#[test]
fn hmp_on_machine_without_cpus() {
    let peer = Peer::qemu_none();
    let out = run_shell(
        &ours(),
        &["-H", peer.socket_str()],
        "info version\ncpu 0\ncpu x\n",
        T,
    );
    assert_ok(&out);
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("Welcome to the HMP shell!\nConnected to QEMU 7."),
        "{}",
        show(&out)
    );
    let body: Vec<&str> = stdout.lines().skip(3).collect();
    assert!(body[0].starts_with("(QEMU) 7.2."), "{}", show(&out));
    assert_eq!(body[1], " (QEMU) bad CPU index", "{}", show(&out));
    assert_eq!(
        body[2],
        "(QEMU) cpu command takes an integer argument",
        "{}",
        show(&out)
    );
    assert_eq!(body[3], "(QEMU) ", "{}", show(&out));
}

#[test]
fn hmp_cpu_switches_current_cpu() {
    let peer = Peer::qemu_pc();
    let out = run_shell(
        &ours(),
        &["-H", peer.socket_str()],
        "info cpus\ncpu 1\ninfo cpus\ncpu 5\n",
        T,
    );
    assert_ok(&out);
    let stdout = text(&out.stdout);
    // QEMU marks the current CPU with `* ` and the others with two spaces;
    // HMP lines end with `\r\n`.
    let re_cpu = |n: u32, current: bool| {
        regex::Regex::new(&format!(
            r"(?m)(^|\(QEMU\) ){}CPU #{n}: thread_id=\d+\r$",
            if current { r"\* " } else { "  " }
        ))
        .unwrap()
    };
    // Before `cpu 1`, CPU #0 is current; afterwards CPU #1.
    let (before, after) = stdout
        .split_once("(QEMU) (QEMU) ")
        .unwrap_or_else(|| panic!("`cpu 1` printed something: {}", show(&out)));
    assert!(re_cpu(0, true).is_match(before), "{}", show(&out));
    assert!(re_cpu(1, false).is_match(before), "{}", show(&out));
    assert!(re_cpu(0, false).is_match(after), "{}", show(&out));
    assert!(re_cpu(1, true).is_match(after), "{}", show(&out));
    assert!(stdout.contains("(QEMU) bad CPU index\n"), "{}", show(&out));
}
