//! `qmp-shell --domain NAME [--connect URI]` (the built binary) against
//! the real libvirtd and real transient TCG domains, locally and through a
//! private sshd (`qemu+ssh://`).
//!
//! Each domain has a QMP socket of the test's own beside libvirt's monitor
//! (the side socket): the same input through `--domain` and through the
//! side socket must give the same standard output and exit status, and
//! standard error differs only by libvirt's taint notice. The side socket
//! also causes events behind libvirt's back.
//!
//! Every shell run has a hard time limit; nothing waits by sleeping: a wait
//! is for an outcome (output, a file, a socket), bounded. Domains are
//! destroyed when their test ends, on failure too.

use crate::common;
use qmp_test_support::libvirt;
use qmp_test_support::sshd;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::term::Term;
use common::{ours, run_shell_env, show, text, without_timestamps, Running};
use libvirt::{virsh_ok, TestDomain, URI, WAIT};

/// Hard limit of one shell run.
const T: Duration = Duration::from_secs(60);

/// The notice the shell prints once on standard error for `domain`.
fn notice(domain: &str) -> String {
    format!(
        "note: libvirt marks domain {domain} as tainted (custom-monitor) \
         when its monitor is used directly\n"
    )
}

/// [`notice`] with `--json`: one JSON line.
fn json_notice(domain: &str) -> String {
    format!(
        "{{\"note\": \"libvirt marks domain {domain} as tainted (custom-monitor) \
         when its monitor is used directly\"}}\n"
    )
}

/// Run the shell with `args` and `stdin`.
fn shell(args: &[&str], stdin: &str) -> Output {
    run_shell_env(&ours(), args, stdin, T, &[])
}

/// Run the shell on `dom` through libvirt at `uri`, then `args`.
fn through_uri(uri: &str, dom: &TestDomain, args: &[&str], stdin: &str) -> Output {
    let mut all = vec!["--domain", &dom.name, "--connect", uri];
    all.extend_from_slice(args);
    shell(&all, stdin)
}

/// Run the shell on `dom` through the local libvirtd.
fn through_libvirt(dom: &TestDomain, args: &[&str], stdin: &str) -> Output {
    through_uri(URI, dom, args, stdin)
}

/// Run the shell on `dom`'s side socket.
fn through_socket(dom: &TestDomain, args: &[&str], stdin: &str) -> Output {
    let side = dom.side();
    let mut all: Vec<&str> = args.to_vec();
    all.push(&side);
    shell(&all, stdin)
}

/// `libvirt` and `socket` ran the same input: same exit status and
/// standard output (timestamps aside), and standard error the same after
/// the taint notice, which comes once, first.
fn assert_same(what: &str, domain: &str, libvirt: &Output, socket: &Output) {
    assert_eq!(
        libvirt.status.code(),
        socket.status.code(),
        "{what}: exit status\n--- through libvirt ---\n{}\n--- through the socket ---\n{}",
        show(libvirt),
        show(socket)
    );
    assert_eq!(
        without_timestamps(&text(&libvirt.stdout)),
        without_timestamps(&text(&socket.stdout)),
        "{what}: standard output\n--- through libvirt ---\n{}\n--- through the socket ---\n{}",
        show(libvirt),
        show(socket)
    );
    let err = without_timestamps(&text(&libvirt.stderr));
    // With --json (standard error in JSON lines), the notice is one too.
    let notice = match err.starts_with('{') {
        true => json_notice(domain),
        false => notice(domain),
    };
    assert_eq!(
        err.strip_prefix(&notice),
        Some(without_timestamps(&text(&socket.stderr)).as_str()),
        "{what}: standard error: the notice, then the socket's\n{}",
        show(libvirt)
    );
}

/// Standard output and error of a run that must have failed with exit 1
/// and one `ERROR:` line, nothing else.
fn assert_error(out: &Output, expected: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", show(out));
    assert!(out.stdout.is_empty(), "{}", show(out));
    assert_eq!(
        text(&out.stderr),
        format!("ERROR: {expected}\n"),
        "{}",
        show(out)
    );
}

// ---------------------------------------------------------------------------
// A shell on pipes, fed line by line
// ---------------------------------------------------------------------------

/// The shell with `args`, its standard input written as the test goes and
/// its standard output read as it comes.
fn live_shell(args: &[&str]) -> Running {
    Running::start(&ours(), args, &[])
}

// ---------------------------------------------------------------------------
// The same input through libvirt and through a socket
// ---------------------------------------------------------------------------

/// Shorthand, transactions (multi-line and on one line), a raw JSON line,
/// error replies and a parse error, `help`, and the node removed at the
/// end so that the script can run again.
const SCRIPT: &str = "\
query-status
query-name
blockdev-add driver=null-co node-name=n0 size=1048576
transaction(
block-dirty-bitmap-add node=n0 name=b0
block-dirty-bitmap-add node=n0 name=b1 persistent=false
)
query-named-block-nodes
transaction( block-dirty-bitmap-remove node=n0 name=b0 )
block-dirty-bitmap-add node=n0 name=b1
no-such-command
qom-get path=/machine property=type
qom-list path=/machine/peripheral-anon
not=a=command x
{\"execute\": \"query-kvm\"}
help query-status
blockdev-del node-name=n0
";

#[test]
fn a_script_gives_the_same_output_as_on_a_socket() {
    let dom = TestDomain::start("script");
    for flags in [&[][..], &["-v"], &["-p"], &["-v", "-p"]] {
        let l = through_libvirt(&dom, flags, SCRIPT);
        let s = through_socket(&dom, flags, SCRIPT);
        assert_same(&format!("script with {flags:?}"), &dom.name, &l, &s);
        let out = text(&l.stdout);
        // Real outcomes, not two identical failures.
        assert!(out.contains("Connected to QEMU 7."), "{}", show(&l));
        assert!(
            out.contains("\"b0\"") && out.contains("\"b1\""),
            "{}",
            show(&l)
        );
        assert!(out.contains("CommandNotFound"), "{}", show(&l));
        assert!(out.contains("already exists"), "{}", show(&l));
        assert!(out.contains("query-status (command)"), "{}", show(&l));
        assert_eq!(l.status.code(), Some(0), "{}", show(&l));
    }
}

#[test]
fn hmp_gives_the_same_output_as_on_a_socket() {
    let dom = TestDomain::start("hmp");
    // (Not `info registers`: the vCPUs run, their registers change between
    // the two runs.)
    let script = "info version\ninfo status\ncpu 1\ninfo cpus\nno-such-hmp-command\ncpu 7\n";
    let l = through_libvirt(&dom, &["-H"], script);
    let s = through_socket(&dom, &["-H"], script);
    assert_same("HMP", &dom.name, &l, &s);
    let out = text(&l.stdout);
    assert!(
        out.starts_with("Welcome to the HMP shell!\nConnected to QEMU 7."),
        "{}",
        show(&l)
    );
    assert!(out.contains("VM status: running"), "{}", show(&l));
    assert!(out.contains("* CPU #1"), "{}", show(&l));
    assert!(
        out.contains("unknown command: 'no-such-hmp-command'"),
        "{}",
        show(&l)
    );
}

#[test]
fn dash_c_json_and_exit_status_as_on_a_socket() {
    let dom = TestDomain::start("scripting");
    let cases: [(&[&str], &str, Option<i32>); 5] = [
        (&["-c", "query-status", "-c", "query-name"], "", Some(0)),
        (
            &["-c", "query-status", "-c", "no-such-command"],
            "",
            Some(3),
        ),
        (
            &["--json"],
            "query-status\nno-such-command\nnot=a=command x\n",
            Some(0),
        ),
        (
            &["--json", "--exit-status"],
            "query-name\nno-such-command\n",
            Some(3),
        ),
        (&["--exit-status"], "query-name\n", Some(0)),
    ];
    for (args, stdin, code) in cases {
        let l = through_libvirt(&dom, args, stdin);
        let s = through_socket(&dom, args, stdin);
        assert_same(&format!("{args:?}"), &dom.name, &l, &s);
        assert_eq!(l.status.code(), code, "{args:?}: {}", show(&l));
    }
    let l = through_libvirt(&dom, &["--json"], "query-name\nno-such-command\n");
    assert_eq!(
        text(&l.stdout),
        format!(
            "{{\"return\": {{\"name\": \"{}\"}}}}\n{{\"error\": {{\"class\": \"CommandNotFound\", \
             \"desc\": \"The command no-such-command has not been found\"}}}}\n",
            dom.name
        ),
        "{}",
        show(&l)
    );
    let l = through_libvirt(&dom, &["-c", "query-name"], "");
    assert_eq!(
        text(&l.stdout),
        format!("{{\"return\": {{\"name\": \"{}\"}}}}\n", dom.name),
        "{}",
        show(&l)
    );
}

#[test]
fn quit_through_libvirt_as_on_a_socket() {
    let a = TestDomain::start("quit-a");
    let b = TestDomain::start("quit-b");
    let l = through_libvirt(&a, &[], "query-status\nquit\n");
    let s = through_socket(&b, &[], "query-status\nquit\n");
    assert_eq!(
        l.status.code(),
        s.status.code(),
        "{}\n{}",
        show(&l),
        show(&s)
    );
    assert_eq!(
        text(&l.stdout),
        text(&s.stdout),
        "{}\n{}",
        show(&l),
        show(&s)
    );
    assert!(
        text(&l.stdout).contains("(QEMU) {\"return\": {}}"),
        "{}",
        show(&l)
    );
    // QEMU is gone.
    let deadline = Instant::now() + WAIT;
    while !virsh_ok(&["list", "--all", "--name"])
        .lines()
        .all(|n| n != a.name)
    {
        assert!(Instant::now() < deadline, "domain {} still listed", a.name);
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

#[test]
fn events_at_empty_lines_of_a_script_as_on_a_socket() {
    let dom = TestDomain::start("events");
    let script = "stop\n\nquery-status\ncont\n\nquery-status\n";
    let l = through_libvirt(&dom, &[], script);
    let s = through_socket(&dom, &[], script);
    assert_same("stop/cont with empty lines", &dom.name, &l, &s);
    let out = without_timestamps(&text(&l.stdout));
    let stop = r#"{"timestamp": {"seconds": S, "microseconds": U}, "event": "STOP"}"#;
    let resume = r#"{"timestamp": {"seconds": S, "microseconds": U}, "event": "RESUME"}"#;
    let expected = format!(
        "(QEMU) {{\"return\": {{}}}}\n\
         (QEMU) {stop}\n\
         (QEMU) {{\"return\": {{\"status\": \"paused\", \"singlestep\": false, \"running\": false}}}}\n\
         (QEMU) {{\"return\": {{}}}}\n\
         (QEMU) {resume}\n\
         (QEMU) {{\"return\": {{\"status\": \"running\", \"singlestep\": false, \"running\": true}}}}\n\
         (QEMU) \n"
    );
    assert!(out.ends_with(&expected), "{}", show(&l));
    // --json: events on standard error, as JSON lines.
    let l = through_libvirt(&dom, &["--json"], script);
    let err = without_timestamps(&text(&l.stderr));
    assert_eq!(
        err,
        format!("{}{stop}\n{resume}\n", json_notice(&dom.name)),
        "{}",
        show(&l)
    );
    // Without empty lines, --json still prints the last commands' events
    // before it ends, as on the socket.
    for _ in 0..20 {
        let script = "stop\ncont\n";
        let l = through_libvirt(&dom, &["--json"], script);
        let s = through_socket(&dom, &["--json"], script);
        assert_same("--json stop/cont", &dom.name, &l, &s);
        let err = without_timestamps(&text(&l.stderr));
        assert_eq!(
            err,
            format!("{}{stop}\n{resume}\n", json_notice(&dom.name)),
            "{}",
            show(&l)
        );
    }
}

/// Send an empty line and `query-name` until `event` has been printed
/// before a `query-name` reply (it may take a moment to arrive).
fn empty_lines_until(live: &mut Running, replies: &mut usize, event: &str) {
    let needle = format!("\"event\": \"{event}\"");
    let deadline = Instant::now() + WAIT;
    loop {
        live.send("\nquery-name\n");
        *replies += 1;
        let out = live.wait_stdout_count("\"return\": {\"name\"", *replies);
        if out.contains(&needle) {
            let at = out.find(&needle).unwrap_or_default();
            let line_start = out[..at].rfind('\n').map_or(0, |i| i + 1);
            assert!(
                out[line_start..].starts_with("(QEMU) {\"timestamp\""),
                "the event is printed at an empty line, on a line of its own:\n{out}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{event} never printed; output:\n{out}"
        );
    }
}

#[test]
fn events_caused_behind_the_shells_back_arrive() {
    let dom = TestDomain::start("events-side");
    let mut live = live_shell(&["--domain", &dom.name, "--connect", URI]);
    live.send("query-name\n");
    let mut replies = 1;
    live.wait_stdout_count("\"return\": {\"name\"", replies);

    // Through the side socket, which libvirt knows nothing of.
    let mut side = dom.side_monitor();
    assert!(side.execute(r#"{"execute":"stop"}"#).contains_key("return"));
    empty_lines_until(&mut live, &mut replies, "STOP");

    // Through libvirt itself.
    virsh_ok(&["resume", &dom.name]);
    empty_lines_until(&mut live, &mut replies, "RESUME");
    drop(side);

    let (status, out, err) = live.finish(WAIT);
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
    assert_eq!(out.matches("\"event\": \"STOP\"").count(), 1, "{out}");
    assert_eq!(out.matches("\"event\": \"RESUME\"").count(), 1, "{out}");
    assert_eq!(err, notice(&dom.name));

    // And the reverse: the shell on the side socket sees what libvirt does.
    let mut live = live_shell(&[&dom.side()]);
    live.send("query-name\n");
    let mut replies = 1;
    live.wait_stdout_count("\"return\": {\"name\"", replies);
    virsh_ok(&["suspend", &dom.name]);
    empty_lines_until(&mut live, &mut replies, "STOP");
    let (status, out, _) = live.finish(WAIT);
    assert_eq!(status.code(), Some(0), "{out}");
}

// ---------------------------------------------------------------------------
// Log, timeout, taint notice, --retry
// ---------------------------------------------------------------------------

#[test]
fn the_log_has_the_messages_and_not_the_notice() {
    let dom = TestDomain::start("log");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("qmp.log");
    let l = through_libvirt(
        &dom,
        &["-l", log.to_str().unwrap()],
        "query-name\nno-such-command\n",
    );
    assert_eq!(l.status.code(), Some(0), "{}", show(&l));
    assert_eq!(text(&l.stderr), notice(&dom.name), "once, on stderr");
    assert!(!text(&l.stdout).contains("tainted"), "{}", show(&l));
    let logged = std::fs::read_to_string(&log).expect("read the log");
    // Commands are pipelined: a command may be logged before the reply to
    // the one before. Each direction is in order.
    let (sent, received): (Vec<&str>, Vec<&str>) =
        logged.lines().partition(|l| l.starts_with("{\"execute\""));
    // The ids are the client's own (the shell's unlogged look-ups, for the
    // deprecation checks, took some before): each reply carries its
    // command's.
    let id = |line: &str| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(line).expect("a JSON line")["id"].clone()
    };
    let (a, b) = (id(sent[0]), id(sent[1]));
    assert_eq!(
        sent,
        [
            format!(r#"{{"execute":"query-name","id":{a}}}"#).as_str(),
            format!(r#"{{"execute":"no-such-command","id":{b}}}"#).as_str()
        ],
        "{logged}"
    );
    assert_eq!(
        received,
        [
            format!(r#"{{"return":{{"name":"{}"}},"id":{a}}}"#, dom.name).as_str(),
            format!(r#"{{"id":{b},"error":{{"class":"CommandNotFound","desc":"The command no-such-command has not been found"}}}}"#).as_str()
        ],
        "{logged}"
    );
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn timeout_bounds_a_reply_and_the_greeting() {
    let dom = TestDomain::start("timeout");
    // A reply: QEMU stops answering in the middle of the session.
    let mut live = live_shell(&["--domain", &dom.name, "--timeout", "1"]);
    live.send("query-name\n");
    live.wait_stdout_count("\"return\"", 1);
    let frozen = dom.freeze();
    live.send("query-status\n");
    // The shell gives up on its own, standard input still open.
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(st) = live.try_wait() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "--timeout 1 did not end the shell"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    let (_, out, err) = live.finish(WAIT);
    assert!(!out.contains("status"), "{out}");
    assert_eq!(
        err,
        format!("{}ERROR: no reply within 1 s\n", notice(&dom.name))
    );

    // -c: the command's reply.
    let l = through_libvirt(&dom, &["--timeout", "0.5", "-c", "query-status"], "");
    assert_eq!(l.status.code(), Some(1), "{}", show(&l));
    assert_eq!(
        text(&l.stderr),
        format!("{}ERROR: no reply within 0.5 s\n", notice(&dom.name))
    );
    // With a banner, the version is asked for first (query-version): that
    // is bounded too.
    let l = through_libvirt(&dom, &["--timeout", "0.5"], "query-status\n");
    assert_error(
        &l,
        &format!(
            "QEMU of domain {} did not answer within 0.5 s (is its process stopped or hung?)",
            dom.name
        ),
    );
    drop(frozen);
    let l = through_libvirt(&dom, &["--timeout", "5", "-c", "query-status"], "");
    assert_eq!(l.status.code(), Some(0), "{}", show(&l));
}

#[test]
fn retry_waits_for_the_domain_to_start() {
    let dom = TestDomain::new("retry", false);
    let home = tempfile::tempdir().expect("tempdir");
    let child = Command::new(ours())
        .args([
            "--domain",
            &dom.name,
            "--retry",
            "300",
            "--retry-delay",
            "0.1",
        ])
        .args(["-c", "query-name"])
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qmp-shell");
    dom.create();
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        text(&out.stdout),
        format!("{{\"return\": {{\"name\": \"{}\"}}}}\n", dom.name)
    );
    assert_eq!(text(&out.stderr), notice(&dom.name));
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[test]
fn an_unknown_domain_is_named() {
    libvirt::ensure_libvirtd();
    let name = libvirt::unique_name("nosuch");
    let l = shell(
        &["--domain", &name, "--connect", URI, "-c", "query-status"],
        "",
    );
    assert_error(
        &l,
        &format!(
            "no domain {name} at {URI} (tried as name, UUID and id; `virsh list --all` shows them)"
        ),
    );
    // Without --connect: $LIBVIRT_DEFAULT_URI, and the message says so.
    let l = run_shell_env(
        &ours(),
        &["--domain", &name],
        "",
        T,
        &[("LIBVIRT_DEFAULT_URI", URI)],
    );
    assert_error(
        &l,
        &format!(
            "no domain {name} at {URI} (from $LIBVIRT_DEFAULT_URI) (tried as name, UUID and id; \
             `virsh list --all` shows them)"
        ),
    );
}

#[test]
fn a_domain_that_is_not_running_says_so() {
    let dom = TestDomain::define("stopped");
    let l = through_libvirt(&dom, &["-c", "query-status"], "");
    assert_error(
        &l,
        &format!(
            "domain {0} is not running (start it with `virsh start {0}`)",
            dom.name
        ),
    );
}

#[test]
fn libvirtd_unreachable_names_the_uri() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uri = format!(
        "qemu+unix:///system?socket={}/no-libvirtd.sock",
        dir.path().display()
    );
    let l = shell(&["--domain", "vm1", "--connect", &uri], "");
    assert_error(
        &l,
        &format!(
            "cannot connect to libvirt at {uri}: Failed to connect socket to \
             '{}/no-libvirtd.sock': No such file or directory",
            dir.path().display()
        ),
    );
    let l = shell(&["--list", "--connect", &uri], "");
    assert_eq!(l.status.code(), Some(1), "{}", show(&l));
    assert!(
        text(&l.stderr).starts_with(&format!("ERROR: cannot connect to libvirt at {uri}: ")),
        "{}",
        show(&l)
    );
    // A URI libvirt does not take.
    let l = shell(&["--domain", "vm1", "--connect", "qemu:///nowhere"], "");
    assert_eq!(l.status.code(), Some(1), "{}", show(&l));
    let err = text(&l.stderr);
    assert!(
        err.starts_with("ERROR: cannot connect to libvirt at qemu:///nowhere: ")
            && err.lines().count() == 1,
        "{}",
        show(&l)
    );
}

#[test]
fn a_read_only_connection_is_permission_denied() {
    let dom = TestDomain::start("readonly");
    let uri = "qemu+unix:///system?socket=/run/libvirt/libvirt-sock-ro";
    // The first call that needs write access names itself.
    for (args, stdin, call) in [
        (
            &["-c", "query-status"][..],
            "",
            "virConnectDomainQemuMonitorEventRegister",
        ),
        (&[], "query-status\n", "virDomainQemuMonitorCommand"),
    ] {
        let l = through_uri(uri, &dom, args, stdin);
        assert_error(
            &l,
            &format!(
                "permission denied by libvirt at {uri}: operation forbidden: \
                 read only access prevents {call}"
            ),
        );
    }
    // Listing only reads: it works there.
    let l = shell(&["--list", "--connect", uri], "");
    assert_eq!(l.status.code(), Some(0), "{}", show(&l));
    assert!(
        text(&l.stdout).lines().any(|n| n == dom.name),
        "{}",
        show(&l)
    );
}

#[test]
fn guest_agent_mode_without_an_agent_says_so() {
    let dom = TestDomain::start("noagent");
    let l = through_libvirt(&dom, &["-N", "-c", "guest-ping"], "");
    assert_error(
        &l,
        &format!(
            "domain {} has no guest agent to talk to: argument unsupported: \
             QEMU guest agent is not configured",
            dom.name
        ),
    );
    // A channel, but no agent behind it (no guest runs one).
    let dom = TestDomain::start_with("agentless", true);
    let l = through_libvirt(&dom, &["-N", "-c", "guest-ping"], "");
    assert_eq!(l.status.code(), Some(1), "{}", show(&l));
    let err = text(&l.stderr);
    assert!(
        err.starts_with(&format!(
            "ERROR: domain {} has no guest agent to talk to: ",
            dom.name
        )) && err.lines().count() == 1,
        "{}",
        show(&l)
    );
}

#[test]
fn usage_errors_and_qmp_socket() {
    let dom = TestDomain::start("usage");
    // An address on the command line does not go with --domain or --list.
    for args in [
        &["--domain", dom.name.as_str(), "/tmp/qmp.sock"][..],
        &["--list", "/tmp/qmp.sock"],
        &["--connect", URI],
        &["--domain", ""],
    ] {
        let out = shell(args, "");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
        assert!(out.stdout.is_empty(), "{}", show(&out));
    }
    // An address from QMP_SOCKET gives way to --domain.
    let bogus = "/nonexistent/qmp.sock";
    let out = run_shell_env(
        &ours(),
        &["--domain", &dom.name, "-c", "query-name"],
        "",
        T,
        &[("QMP_SOCKET", bogus)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(text(&out.stdout).contains(&dom.name), "{}", show(&out));
    // --help documents the options.
    let out = shell(&["--help"], "");
    let help = text(&out.stdout);
    for needle in [
        "--domain <DOMAIN>",
        "--connect <URI>",
        "--list",
        "qemu+ssh://",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

// ---------------------------------------------------------------------------
// --list
// ---------------------------------------------------------------------------

#[test]
fn list_shows_running_domains() {
    let dom = TestDomain::start("list");
    let stopped = TestDomain::define("list-stopped");
    let l = shell(&["--list", "--connect", URI], "");
    assert_eq!(l.status.code(), Some(0), "{}", show(&l));
    assert!(l.stderr.is_empty(), "{}", show(&l));
    let names: Vec<String> = text(&l.stdout).lines().map(str::to_owned).collect();
    assert!(names.contains(&dom.name), "{}", show(&l));
    assert!(!names.contains(&stopped.name), "{}", show(&l));
    // -v: ID UUID NAME.
    let (id, uuid) = dom.id_and_uuid();
    let l = shell(&["--list", "-v", "--connect", URI], "");
    assert_eq!(l.status.code(), Some(0), "{}", show(&l));
    let line = format!("{id} {uuid} {}", dom.name);
    assert!(
        text(&l.stdout).lines().any(|l| l == line),
        "{line:?}\n{}",
        show(&l)
    );
    // The domain is reachable by id and UUID too.
    for spec in [&id, &uuid] {
        let l = shell(&["--domain", spec, "-c", "query-name"], "");
        assert_eq!(l.status.code(), Some(0), "{}", show(&l));
        assert!(text(&l.stdout).contains(&dom.name), "{}", show(&l));
        assert_eq!(text(&l.stderr), notice(&dom.name));
    }
    // A host with no running domain (libvirt's own in-process test driver,
    // on a node description with none): --list prints nothing, and
    // --all-domains has nothing to do, which is no failure.
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node.xml");
    std::fs::write(&node, "<node/>\n").unwrap();
    let empty = format!("test://{}", node.display());
    let l = shell(&["--list", "--connect", &empty], "");
    assert_eq!(l.status.code(), Some(0), "{}", show(&l));
    assert!(l.stdout.is_empty(), "{}", show(&l));
    let l = shell(
        &["--all-domains", "--connect", &empty, "-c", "query-status"],
        "",
    );
    assert_eq!(l.status.code(), Some(0), "{}", show(&l));
    assert!(l.stdout.is_empty(), "{}", show(&l));
    assert_eq!(text(&l.stderr), "qmp-shell: no running domains\n");
}

// ---------------------------------------------------------------------------
// A remote libvirtd, over ssh
// ---------------------------------------------------------------------------

/// The `qemu+ssh://` URI of the local libvirtd through `sshd`. `command=`
/// runs ssh with `UserKnownHostsFile=/dev/null`, so the test's throwaway
/// host key stays out of root's known_hosts (`no_verify=1` would add it).
fn ssh_uri(sshd: &sshd::Sshd) -> String {
    let wrapper = sshd.dir().join("ssh-wrapper");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\nexec ssh -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \"$@\"\n",
    )
    .expect("write the ssh wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    format!(
        "qemu+ssh://root@127.0.0.1:{}/system?keyfile={}&no_verify=1&no_tty=1&command={}",
        sshd.port,
        sshd.client_key().display(),
        wrapper.display()
    )
}

#[test]
fn a_remote_libvirtd_over_ssh() {
    let dom = TestDomain::start("ssh");
    let sshd = sshd::Sshd::start();
    let uri = ssh_uri(&sshd);

    // The same script and events as on the socket.
    let script = format!("{SCRIPT}stop\n\ncont\n\n");
    let r = through_uri(&uri, &dom, &[], &script);
    let s = through_socket(&dom, &[], &script);
    assert_same("over ssh", &dom.name, &r, &s);
    assert_eq!(r.status.code(), Some(0), "{}", show(&r));
    let out = text(&r.stdout);
    assert!(
        out.contains("\"event\": \"STOP\"") && out.contains("\"event\": \"RESUME\""),
        "{}",
        show(&r)
    );

    // -c, HMP and --list over ssh.
    let r = through_uri(&uri, &dom, &["-c", "query-name"], "");
    assert_eq!(
        text(&r.stdout),
        format!("{{\"return\": {{\"name\": \"{}\"}}}}\n", dom.name),
        "{}",
        show(&r)
    );
    let r = through_uri(&uri, &dom, &["-H"], "info status\n");
    assert!(
        text(&r.stdout).contains("VM status: running"),
        "{}",
        show(&r)
    );
    let r = shell(&["--list", "--connect", &uri], "");
    assert_eq!(r.status.code(), Some(0), "{}", show(&r));
    assert!(
        text(&r.stdout).lines().any(|n| n == dom.name),
        "{}",
        show(&r)
    );

    // An unknown domain names the remote URI.
    let name = libvirt::unique_name("nosuch");
    let r = shell(&["--domain", &name, "--connect", &uri], "");
    assert_error(
        &r,
        &format!(
            "no domain {name} at {uri} (tried as name, UUID and id; `virsh list --all` shows them)"
        ),
    );
}

// ---------------------------------------------------------------------------
// On a terminal (tmux)
// ---------------------------------------------------------------------------

#[test]
fn on_a_terminal_completion_events_help_and_history() {
    let dom = TestDomain::start("term");
    let t = Term::launch(
        &ours(),
        &["--domain", &dom.name, "--connect", URI],
        &[],
        |_| {},
        "",
    )
    .with_deadline(WAIT);
    let screen = t.wait_line("(QEMU)");
    assert!(
        screen.contains("Welcome to the QMP low-level shell!"),
        "{screen}"
    );
    assert!(screen.contains("Connected to QEMU 7."), "{screen}");
    assert_eq!(
        screen.matches("tainted (custom-monitor)").count(),
        1,
        "{screen}"
    );

    // Completion from the schema, fetched through libvirt.
    t.tab_until("(QEMU)", "query-sta", "query-stat");
    t.tab_until("(QEMU)", "blockdev-add dri", "blockdev-add driver=");
    t.tab_until(
        "(QEMU)",
        "blockdev-add driver=null-c",
        "blockdev-add driver=null-co",
    );
    t.press(&["C-u"]);
    t.wait_line("(QEMU)");

    // A live event, printed above a half-typed line.
    t.type_text("query-na");
    t.wait_line("(QEMU) query-na");
    let mut side = dom.side_monitor();
    assert!(side.execute(r#"{"execute":"stop"}"#).contains_key("return"));
    let screen = t.wait_for("\"event\": \"STOP\"");
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("{\"timestamp\"") && l.ends_with("\"event\": \"STOP\"}")),
        "{screen}"
    );
    t.wait_line("(QEMU) query-na");
    t.line("me");
    t.wait_for(&format!("{{\"return\": {{\"name\": \"{}\"}}}}", dom.name));

    // help, from the schema.
    t.line("help query-status");
    t.wait_for("query-status (command)");
    t.wait_line("(QEMU)");

    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.screen());
    let history = std::fs::read_to_string(t.home().join(".qmp-shell_history")).expect("history");
    assert!(history.lines().any(|l| l == "query-name"), "{history:?}");
    assert!(
        history.lines().any(|l| l == "help query-status"),
        "{history:?}"
    );
}

// ---------------------------------------------------------------------------
// Fan-out over domains
// ---------------------------------------------------------------------------

#[test]
fn the_same_commands_on_several_domains() {
    let a = TestDomain::start("fan-a");
    let b = TestDomain::start("fan-b");
    let out = shell(
        &[
            "--domain",
            &a.name,
            "--domain",
            &b.name,
            "-c",
            "query-name",
            "-c",
            "query-status",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    for d in [&a, &b] {
        let name = format!("{}: {{\"return\": {{\"name\": \"{}\"}}}}", d.name, d.name);
        assert!(text(&out.stdout).contains(&name), "{}", show(&out));
        // The taint notice, tagged, once each.
        let tagged = format!("{}: {}", d.name, notice(&d.name));
        assert_eq!(
            text(&out.stderr).matches(&tagged).count(),
            1,
            "{}",
            show(&out)
        );
    }
    assert!(
        text(&out.stderr).ends_with(
            "qmp-shell: 2 targets: 2 answered, 0 with failed commands, 0 unreachable or lost\n"
        ),
        "{}",
        show(&out)
    );
    // Every running domain: ours among them (other tests' may be there).
    let out = shell(&["--all-domains", "--json", "-c", "query-name"], "");
    let names: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect();
    for d in [&a, &b] {
        assert!(
            names
                .iter()
                .any(|v| v["target"] == d.name.as_str() && v["return"]["name"] == d.name.as_str()),
            "{}",
            show(&out)
        );
    }
    // Two URIs (two ways to one libvirtd here): each target names its URI.
    let second = "qemu+unix:///system";
    let out = shell(
        &[
            "--domain",
            &a.name,
            "--connect",
            URI,
            "--connect",
            second,
            "-c",
            "query-name",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    for uri in [URI, second] {
        let line = format!(
            "{uri}/{}: {{\"return\": {{\"name\": \"{}\"}}}}",
            a.name, a.name
        );
        assert!(text(&out.stdout).contains(&line), "{}", show(&out));
    }
    // An unknown domain among others: unreachable, named.
    let out = shell(
        &[
            "--domain",
            &a.name,
            "--domain",
            "no-such-domain-here",
            "--json",
            "-c",
            "query-name",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stdout).contains(
            "\"target\": \"no-such-domain-here\", \"error\": {\"class\": \"ConnectError\""
        ),
        "{}",
        show(&out)
    );
}

// ---------------------------------------------------------------------------
// A domain named like another domain's id
// ---------------------------------------------------------------------------

/// A domain called like another's id (`37`), and one whose name has a space
/// and ends in that id (`strg 37`, which `for d in $(qmp-shell --list)`
/// would split): `--domain 37` names two domains and is refused, naming
/// them, with nothing sent (no taint notice), also with `--retry` (the
/// harness's kill timeout is the bound) and among several targets;
/// `--all-domains` and the README's loop reach each domain once.
#[test]
fn a_domain_named_like_another_domains_id_is_refused_as_ambiguous() {
    let first = TestDomain::start("by-id");
    let (id, first_uuid) = first.id_and_uuid();
    let second = TestDomain::named(&id, false);
    second.create();
    let spaced = TestDomain::named(&format!("{} {id}", libvirt::unique_name("strg")), false);
    spaced.create();
    let second_uuid = &second.uuid;
    let ambiguous = format!(
        "domain {id} is ambiguous at {URI}: it is the id of domain {} (UUID {first_uuid}) and \
         the name of domain {id} (UUID {second_uuid}); give the UUID of the one you mean",
        first.name
    );
    for extra in [&[][..], &["--retry", "10000", "--retry-delay", "1"]] {
        let mut args = vec!["--domain", &id, "--connect", URI, "-c", "query-name"];
        args.extend_from_slice(extra);
        assert_error(&shell(&args, ""), &ambiguous);
    }
    // Among several targets: that one is unreachable, the other answers.
    let out = shell(
        &[
            "--domain",
            &id,
            "--domain",
            &first.name,
            "--connect",
            URI,
            "--json",
            "-c",
            "query-name",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert!(
        lines.iter().any(|v| v["target"] == id.as_str()
            && v["error"]["class"] == "ConnectError"
            && v["error"]["desc"]
                .as_str()
                .is_some_and(|d| d.contains(&ambiguous))),
        "{}",
        show(&out)
    );
    assert!(
        lines
            .iter()
            .any(|v| v["target"] == first.name.as_str()
                && v["return"]["name"] == first.name.as_str()),
        "{}",
        show(&out)
    );
    // Every running domain: each of ours once, as itself.
    let out = shell(
        &[
            "--all-domains",
            "--connect",
            URI,
            "--json",
            "-c",
            "query-name",
        ],
        "",
    );
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    for name in [&first.name, &id, &spaced.name] {
        let mine: Vec<&Value> = lines
            .iter()
            .filter(|v| v["target"] == name.as_str())
            .collect();
        assert_eq!(mine.len(), 1, "{name}: {}", show(&out));
        assert_eq!(mine[0]["return"]["name"], name.as_str(), "{}", show(&out));
    }
    // The name with a space, as it is, and by the README's loop over
    // `--list -v` (the UUID names one domain; the name comes last).
    let out = shell(
        &[
            "--domain",
            &spaced.name,
            "--connect",
            URI,
            "-c",
            "query-name",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        text(&out.stdout),
        format!("{{\"return\": {{\"name\": \"{}\"}}}}\n", spaced.name)
    );
    let script = format!(
        "{0} --list -v --connect {URI} | while read -r id uuid name; do\n  \
           case \"$name\" in \"{1}\"|\"{2}\"|\"{3}\")\n    \
             {0} --connect {URI} --domain \"$uuid\" -c query-name 2>/dev/null;;\n  \
           esac\n\
         done",
        ours().display(),
        first.name,
        id,
        spaced.name
    );
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(&script);
    let out = common::run_program(sh, &[], "", T);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let mut names: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    names.sort();
    let mut expected: Vec<String> = [&first.name, &id, &spaced.name]
        .iter()
        .map(|n| format!("{{\"return\": {{\"name\": \"{n}\"}}}}"))
        .collect();
    expected.sort();
    assert_eq!(names, expected, "{}", show(&out));
}
