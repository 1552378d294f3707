//! One command, many VMs: fan-out against dozens of real QEMUs, a dead
//! socket, a QEMU that stops answering, error replies; text and `--json`
//! output tagged with the right target; the exit status and the summary.

mod common;
#[path = "../../qmp/tests/common/sshd.rs"]
mod sshd;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use serde_json::Value;

/// How many QEMUs the big test starts.
const FLEET: usize = 24;

fn fleet(n: usize) -> Vec<Peer> {
    (0..n)
        .map(|k| Peer::qemu_with_args(&["-M", "none", "-name", &format!("vm{k}")]))
        .collect()
}

fn run(args: &[&str], stdin: &str) -> std::process::Output {
    let cache = tempfile::tempdir().unwrap();
    run_shell_env(
        &ours(),
        args,
        stdin,
        SHELL_TIMEOUT,
        &[("XDG_CACHE_HOME", cache.path().to_str().unwrap())],
    )
}

/// `--all-domains` on a host with one running domain: libvirt's built-in
/// test driver has exactly one (`test`), which is no QEMU, so it cannot be
/// reached over QMP. The summary counts it in the singular.
#[test]
fn one_target_is_counted_as_one() {
    let out = run(
        &[
            "--all-domains",
            "--connect",
            "test:///default",
            "-c",
            "query-name",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).ends_with(
            "qmp-shell: 1 target: 0 answered, 0 with failed commands, 1 unreachable or lost\n"
        ),
        "{}",
        show(&out)
    );
}

#[test]
fn every_reply_is_tagged_with_its_target() {
    let peers = fleet(FLEET);
    let mut args: Vec<&str> = vec!["-c", "query-name", "-c", "query-status"];
    args.extend(peers.iter().map(Peer::socket_str));
    let out = run(&args, "");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    // Per target, its lines in input order; the name is the target's own.
    let mut per: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text(&out.stdout).lines() {
        let (target, rest) = line.split_once(": ").expect("TARGET: line");
        per.entry(target.to_owned())
            .or_default()
            .push(rest.to_owned());
    }
    assert_eq!(per.len(), FLEET, "{}", show(&out));
    for (k, peer) in peers.iter().enumerate() {
        let lines = &per[peer.socket_str()];
        assert_eq!(
            lines,
            &[
                format!("{{\"return\": {{\"name\": \"vm{k}\"}}}}"),
                "{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}}"
                    .to_owned()
            ],
            "{}",
            show(&out)
        );
    }
    assert_eq!(
        text(&out.stderr),
        format!("qmp-shell: {FLEET} targets: {FLEET} answered, 0 with failed commands, 0 unreachable or lost\n")
    );
}

#[test]
fn dead_hung_and_failing_targets() {
    let peers = fleet(3);
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.sock");
    dead_socket(&dead);
    let hung = Peer::qemu_with_args(&["-M", "none", "-name", "hung"]);
    // Frozen: it accepts (the kernel does), greets nobody.
    freeze(hung.pid());
    let mut args = vec!["--timeout", "2", "--json", "-j", "3"];
    args.extend(peers.iter().map(Peer::socket_str));
    args.push(dead.to_str().unwrap());
    args.push(hung.socket_str());
    let out = run(&args, "query-name\nno-such-command\n");
    thaw(hung.pid());
    // Somebody unreachable: 1, whatever else failed.
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |t: &str| -> Vec<&Value> { lines.iter().filter(|v| v["target"] == t).collect() };
    for (k, peer) in peers.iter().enumerate() {
        let mine = of(peer.socket_str());
        assert_eq!(mine.len(), 2, "{}", show(&out));
        assert_eq!(mine[0]["return"]["name"], format!("vm{k}"));
        assert_eq!(mine[1]["error"]["class"], "CommandNotFound");
        // "target" first, then the reply's own members.
        let keys: Vec<&String> = mine[0].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["target", "return"]);
    }
    let d = of(dead.to_str().unwrap());
    assert_eq!(d.len(), 1, "{}", show(&out));
    assert_eq!(d[0]["error"]["class"], "ConnectError");
    assert!(
        d[0]["error"]["desc"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{}",
        d[0]
    );
    let h = of(hung.socket_str());
    assert_eq!(h.len(), 1, "{}", show(&out));
    assert_eq!(h[0]["error"]["class"], "ConnectError");
    assert!(
        h[0]["error"]["desc"]
            .as_str()
            .unwrap()
            .contains("timed out after 2 s waiting for the greeting"),
        "{}",
        h[0]
    );
    assert_eq!(
        text(&out.stderr),
        "qmp-shell: 5 targets: 0 answered, 3 with failed commands, 2 unreachable or lost\n"
    );
}

#[test]
fn error_replies_give_status_3_and_hmp_fans_out_too() {
    let peers = fleet(3);
    let mut args = vec!["-H", "-c", "info name", "-c", "nosuchcommand"];
    args.extend(peers.iter().map(Peer::socket_str));
    let out = run(&args, "");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    for (k, peer) in peers.iter().enumerate() {
        assert!(
            text(&out.stdout).contains(&format!("{}: vm{k}\n", peer.socket_str())),
            "{}",
            show(&out)
        );
    }
    let mut args = vec!["-c", "query-name", "-c", "stop-it-now"];
    args.extend(peers.iter().map(Peer::socket_str));
    let out = run(&args, "");
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        "qmp-shell: 3 targets: 0 answered, 3 with failed commands, 0 unreachable or lost\n"
    );
}

#[test]
fn fan_out_needs_commands_and_no_log() {
    let peers = fleet(2);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let out = run(
        &[
            "-l",
            log.to_str().unwrap(),
            "-c",
            "query-name",
            peers[0].socket_str(),
            peers[1].socket_str(),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("-l logs one connection"),
        "{}",
        show(&out)
    );
    assert!(!Path::new(&log).exists());
}

/// `-N` fans out to guest agents; `ssh://` addresses (through a real
/// sshd) sit beside local sockets, each tagged with its own address.
#[test]
fn guest_agents_and_ssh_addresses_fan_out_too() {
    let agents = [Peer::guest_agent(), Peer::guest_agent()];
    let mut args = vec!["-N", "--json", "-c", "guest-ping"];
    args.extend(agents.iter().map(Peer::socket_str));
    let out = run(&args, "");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    for a in &agents {
        assert!(
            text(&out.stdout).contains(&format!(
                "{{\"target\": \"{}\", \"return\": {{}}}}",
                a.socket_str()
            )),
            "{}",
            show(&out)
        );
    }

    let peers = fleet(2);
    let sshd = sshd::Sshd::start();
    let remote = format!("ssh://{}{}", sshd::HOST, peers[0].socket_str());
    let command = sshd.ssh_command();
    let cache = tempfile::tempdir().unwrap();
    let out = run_shell_env(
        &ours(),
        &["-c", "query-name", &remote, peers[1].socket_str()],
        "",
        SHELL_TIMEOUT,
        &[
            ("XDG_CACHE_HOME", cache.path().to_str().unwrap()),
            ("QMP_SSH_COMMAND", &command),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        text(&out.stdout).contains(&format!(
            "{remote}: {{\"return\": {{\"name\": \"vm0\"}}}}\n"
        )),
        "{}",
        show(&out)
    );
    assert!(
        text(&out.stdout).contains(&format!(
            "{}: {{\"return\": {{\"name\": \"vm1\"}}}}\n",
            peers[1].socket_str()
        )),
        "{}",
        show(&out)
    );
}

/// Standard output closed after one line (`| head -n 1`) or full: every
/// session stops, the summary says why once, the status is 1, and nothing
/// hangs with targets still queued.
#[test]
fn standard_output_closed_or_full_stops_every_target() {
    let peers = fleet(6);
    let mut args: Vec<&str> = vec!["-j", "2", "-c", "query-name", "-c", "query-status"];
    args.extend(peers.iter().map(Peer::socket_str));
    let cache = tempfile::tempdir().unwrap();
    let shell = |redirect: &str| {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg("-c")
            .arg(format!(
                "\"$0\" \"$@\" {redirect}; echo \"status=${{PIPESTATUS[0]}}\" >&2"
            ))
            .arg(ours())
            .args(&args)
            .env("XDG_CACHE_HOME", cache.path());
        run_with_timeout(cmd, b"", SHELL_TIMEOUT)
    };
    let out = shell("| head -n 1");
    assert_eq!(text(&out.stdout).lines().count(), 1, "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.ends_with("(standard output closed)\nstatus=1\n"),
        "{}",
        show(&out)
    );
    assert_eq!(err.lines().count(), 2, "{}", show(&out));

    let out = shell("> /dev/full");
    let err = text(&out.stderr);
    assert_eq!(
        err,
        "qmp-shell: 6 targets: 0 answered, 0 with failed commands, 0 unreachable or lost, \
         6 stopped (cannot write to standard output: No space left on device (os error 28))\n\
         status=1\n",
        "{}",
        show(&out)
    );
}
