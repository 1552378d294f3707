//! One command, many VMs: fan-out against dozens of real QEMUs, a dead
//! socket, a QEMU that stops answering, error replies; text and `--json`
//! output tagged with the right target; the exit status and the summary.

use crate::common;
use crate::hostile_server;
use qmp_test_support::silent;
use qmp_test_support::sshd;
use qmp_test_support::stray;

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
        h[0]["error"]["desc"].as_str().unwrap().contains(
            "no greeting within 2 s, nor an answer to a guest-agent probe within 1 s more"
        ),
        "{}",
        h[0]
    );
    // With --json, standard error is JSON lines: the summary too.
    assert_eq!(
        json_lines(&out.stderr),
        [
            serde_json::json!({"summary": {"targets": 5, "answered": 0, "failed": 3,
            "unreachable": 2, "interrupted": 0, "stopped": 0, "not-run": 0}})
        ],
        "{}",
        show(&out)
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
    let shell_with = |json: bool, redirect: &str| {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg("-c")
            .arg(format!(
                "\"$0\" \"$@\" {redirect}; echo \"status=${{PIPESTATUS[0]}}\" >&2"
            ))
            .arg(ours())
            .args(json.then_some("--json"))
            .args(&args)
            .env("XDG_CACHE_HOME", cache.path());
        run_with_timeout(cmd, b"", SHELL_TIMEOUT)
    };
    let shell = |redirect: &str| shell_with(false, redirect);
    // With --json, the summary is a JSON line like every other.
    let out = shell_with(true, "> /dev/full");
    let err = text(&out.stderr);
    let (summary, status) = err.split_once('\n').unwrap();
    assert_eq!(status, "status=1\n", "{}", show(&out));
    assert_eq!(
        serde_json::from_str::<Value>(summary).unwrap(),
        serde_json::json!({"summary": {"targets": 6, "answered": 0, "failed": 0,
            "unreachable": 0, "interrupted": 0, "stopped": 6, "not-run": 0,
            "why": "cannot write to standard output: No space left on device (os error 28)"}}),
        "{}",
        show(&out)
    );
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

/// `--read-only` fans out too: on every target what could change the VM is
/// refused, and each QEMU's own trace (`handle_qmp_command`) shows that it
/// received nothing but the negotiation and reads; each is still running
/// (asked through its second monitor).
#[test]
fn read_only_reaches_no_target() {
    let dir = tempfile::tempdir().unwrap();
    let traces: Vec<std::path::PathBuf> = (0..3)
        .map(|k| dir.path().join(format!("trace{k}")))
        .collect();
    let peers: Vec<Peer> = traces
        .iter()
        .map(|t| {
            Peer::qemu_two_monitors(&[
                "-M",
                "none",
                "-trace",
                "handle_qmp_command",
                "-D",
                t.to_str().unwrap(),
            ])
        })
        .collect();
    let mut args: Vec<&str> = vec![
        "--read-only",
        "-j",
        "2",
        "-c",
        "stop",
        "-c",
        r#"{"execute": "query-status", "exec-oob": "quit"}"#,
        "-c",
        "transaction( abort )",
        "-c",
        "/oob migrate-pause",
        "-c",
        "query-status",
    ];
    args.extend(peers.iter().map(Peer::socket_str));
    let out = run(&args, "");
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let stdout = text(&out.stdout);
    for p in &peers {
        assert!(
            stdout.contains(&format!(
                "{}: {{\"return\": {{\"status\": \"running\", \"singlestep\": false, \
                 \"running\": true}}}}\n",
                p.socket_str()
            )),
            "{}",
            show(&out)
        );
    }
    let stderr = text(&out.stderr);
    for name in ["stop", "quit", "transaction", "migrate-pause"] {
        assert_eq!(
            stderr
                .matches(&format!("refused by --read-only: {name} "))
                .count(),
            peers.len(),
            "{name} refused once per target\n{}",
            show(&out)
        );
    }
    for (p, t) in peers.iter().zip(&traces) {
        let status = qmp_raw(p.second_socket(), &[r#"{"execute": "query-status"}"#]);
        assert!(status[0].contains("\"running\": true"), "{status:?}");
        let received: Vec<Value> = std::fs::read_to_string(t)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once(" req: "))
            .map(|(_, req)| serde_json::from_str(req).unwrap())
            .collect();
        assert!(
            received
                .iter()
                .filter(|r| r["execute"] == "query-status")
                .count()
                >= 2,
            "{received:?}"
        );
        for req in &received {
            let names: Vec<&str> = ["execute", "exec-oob"]
                .iter()
                .filter_map(|k| req[*k].as_str())
                .collect();
            assert!(
                !names.is_empty()
                    && names.iter().all(|n| *n == "qmp_capabilities"
                        || n.starts_with("query-")
                        || n.starts_with("x-query-")),
                "{} received {req}",
                p.socket_str()
            );
        }
    }
}

/// How many connections the servers of [`jobs_never_exceed_n_connections`]
/// have open, the most at once, and how many have ended.
#[derive(Default)]
struct Open {
    now: usize,
    most: usize,
    ended: usize,
    /// The connections counted open, by number, with their sockets.
    open: Vec<(usize, std::os::unix::net::UnixStream)>,
    accepted: usize,
}

impl Open {
    /// A connection was accepted: its number. Those the shell closed count
    /// as closed from then on (it closes one before it opens the next),
    /// whether or not their threads saw the end yet.
    fn opened(&mut self, socket: std::os::unix::net::UnixStream) -> usize {
        let gone: Vec<usize> = self
            .open
            .iter()
            .filter(|(_, s)| hostile_server::client_gone(s))
            .map(|(n, _)| *n)
            .collect();
        for n in gone {
            self.closed(n);
        }
        self.accepted += 1;
        self.now += 1;
        self.most = self.most.max(self.now);
        self.open.push((self.accepted, socket));
        self.accepted
    }

    /// Connection `n` ended (counted once, however it is seen).
    fn closed(&mut self, n: usize) {
        if let Some(at) = self.open.iter().position(|(m, _)| *m == n) {
            self.open.remove(at);
            self.now -= 1;
            self.ended += 1;
        }
    }
}

/// `-j N` never has more than N connections open at once, and does use N.
/// Each target is a listener of the test's own that greets like QEMU and
/// counts its connection from accept(2) to the shell closing it (the test
/// cannot count a real QEMU's connections exactly); a connection the shell
/// closed is counted closed when the next one is accepted, even if its
/// thread has not seen the end yet. To make "uses N"
/// certain, not a matter of timing, a server answers the shell's first
/// command only once N connections are open (or all the targets left are).
#[test]
fn jobs_never_exceed_n_connections() {
    use std::sync::{Arc, Condvar, Mutex};
    const TARGETS: usize = 7;
    for jobs in [1usize, 3] {
        let state = Arc::new((Mutex::new(Open::default()), Condvar::new()));
        let servers: Vec<hostile_server::Server> = (0..TARGETS)
            .map(|_| {
                let state = Arc::clone(&state);
                hostile_server::serve(move |c| {
                    let (lock, cv) = &*state;
                    let me = lock.lock().unwrap().opened(c.socket());
                    cv.notify_all();
                    c.handshake();
                    let mut first = true;
                    while let Some((name, id)) = c.read_command() {
                        if first {
                            first = false;
                            let st = lock.lock().unwrap();
                            let _ = cv
                                .wait_timeout_while(st, SHELL_TIMEOUT, |st| {
                                    st.now < jobs.min(TARGETS - st.ended)
                                })
                                .unwrap();
                        }
                        let ret = if name == "query-name" {
                            "{\"name\": \"t\"}"
                        } else {
                            "{}"
                        };
                        c.reply(&id, ret);
                    }
                    lock.lock().unwrap().closed(me);
                    cv.notify_all();
                })
            })
            .collect();
        let j = jobs.to_string();
        let mut args: Vec<&str> = vec!["-j", &j, "-c", "query-name", "-c", "query-status"];
        args.extend(servers.iter().map(|s| s.addr()));
        let out = run(&args, "");
        assert_eq!(out.status.code(), Some(0), "-j {jobs}\n{}", show(&out));
        assert_eq!(
            text(&out.stdout)
                .matches(": {\"return\": {\"name\": \"t\"}}\n")
                .count(),
            TARGETS,
            "{}",
            show(&out)
        );
        for s in servers {
            s.join();
        }
        let st = state.0.lock().unwrap();
        assert_eq!(st.ended, TARGETS);
        assert_eq!(
            st.most, jobs,
            "-j {jobs}: the most connections open at once"
        );
    }
}

/// The late reply of a client that left, which QEMU passes on to the next
/// client, is no answer to a target's command: every target gets its own
/// reply, and the one that got the stray says so once, tagged.
#[test]
fn a_stray_reply_is_dropped_on_its_target_alone() {
    let raced = Peer::qemu_with_args(&["-M", "none", "-name", "raced"]);
    let other = Peer::qemu_with_args(&["-M", "none", "-name", "other"]);
    let (a, b) = (raced.socket_str(), other.socket_str());
    let warning = format!(
        "{a}: warning: {}: {{\"return\":[{{",
        qmp_client::client::STRAY_REPLY
    );
    for _ in 0..stray::TRIES {
        let out =
            stray::after_a_stray_reply(raced.socket(), || run(&["-c", "query-name", a, b], ""));
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let mut stdout: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
        stdout.sort();
        let mut expected = vec![
            format!("{a}: {{\"return\": {{\"name\": \"raced\"}}}}"),
            format!("{b}: {{\"return\": {{\"name\": \"other\"}}}}"),
        ];
        expected.sort();
        assert_eq!(stdout, expected, "{}", show(&out));
        let stderr = text(&out.stderr);
        let mut lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.pop(),
            Some("qmp-shell: 2 targets: 2 answered, 0 with failed commands, 0 unreachable or lost"),
            "{}",
            show(&out)
        );
        match lines[..] {
            [] => continue,
            [line] if line.starts_with(&warning) => return,
            _ => panic!("{}", show(&out)),
        }
    }
    panic!(
        "QEMU never passed on a stray reply in {} tries",
        stray::TRIES
    );
}

/// An `ssh://` target whose host never speaks SSH is given up on within
/// `--timeout` (the harness's kill timeout is the bound), tagged and
/// counted unreachable; the others are served.
#[test]
fn an_ssh_target_that_never_speaks_is_given_up_on_in_time() {
    let peer = silent::SilentPeer::start();
    let qemu = Peer::qemu_with_args(&["-M", "none", "-name", "up"]);
    let silent = peer.address("/run/qmp.sock");
    let cache = tempfile::tempdir().unwrap();
    let command = silent::SilentPeer::ssh_command(None);
    let out = run_shell_env(
        &ours(),
        &[
            "--timeout",
            "1",
            "-c",
            "query-name",
            &silent,
            qemu.socket_str(),
        ],
        "",
        std::time::Duration::from_secs(20),
        &[
            ("XDG_CACHE_HOME", cache.path().to_str().unwrap()),
            ("QMP_SSH_COMMAND", command.as_str()),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        text(&out.stdout),
        format!(
            "{}: {{\"return\": {{\"name\": \"up\"}}}}\n",
            qemu.socket_str()
        )
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{silent}: ERROR: Couldn't connect to {silent}: Failed to establish connection: \
             ssh: no connection to 127.0.0.1 within 1 s\n"
        )),
        "{}",
        show(&out)
    );
    assert!(
        stderr.ends_with(
            "qmp-shell: 2 targets: 1 answered, 0 with failed commands, 1 unreachable or lost\n"
        ),
        "{}",
        show(&out)
    );
}

/// `/record` on several targets would have every target's session open
/// the same file: it is refused with one line for all (not one per
/// target), a failed command on each (exit 3), and nothing is created;
/// `/play` runs on every target, and a `/record` inside the played file is
/// refused the same way. From `-c` and from standard input, in text and
/// with `--json` (one error object on standard error, and each target's
/// answer on standard output).
#[test]
fn record_is_refused_once_and_play_runs_on_every_target() {
    let peers = fleet(3);
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec.qmp");
    let inner = dir.path().join("inner.qmp");
    let play = dir.path().join("play.qmp");
    std::fs::write(
        &play,
        format!("query-name\n/record {}\nquery-status\n", inner.display()),
    )
    .unwrap();
    let refusal = |file: &Path| {
        format!(
            "ERROR: /record: not with several targets (each would write to {}); \
             record on one target, then /play the file on all\n",
            file.display()
        )
    };
    let record = format!("/record {}", rec.display());
    let play_it = format!("/play {}", play.display());
    let sockets: Vec<&str> = peers.iter().map(Peer::socket_str).collect();
    let summary =
        "qmp-shell: 3 targets: 0 answered, 3 with failed commands, 0 unreachable or lost\n";
    // -c, then the same lines on standard input, then /record off.
    let mut args = vec!["-c", record.as_str(), "-c", play_it.as_str()];
    args.extend(&sockets);
    let by_c = run(&args, "");
    let by_stdin = run(&sockets, &format!("{record}\n{play_it}\n"));
    for out in [&by_c, &by_stdin] {
        assert_eq!(out.status.code(), Some(3), "{}", show(out));
        assert_eq!(
            text(&out.stderr),
            format!("{}{}{summary}", refusal(&rec), refusal(&inner)),
            "{}",
            show(out)
        );
        for (k, socket) in sockets.iter().enumerate() {
            let stdout = text(&out.stdout);
            let prefix = format!("{socket}: ");
            let mine: Vec<&str> = stdout
                .lines()
                .filter_map(|l| l.strip_prefix(prefix.as_str()))
                .collect();
            assert_eq!(
                mine,
                [
                    format!("{{\"return\": {{\"name\": \"vm{k}\"}}}}"),
                    "{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}}"
                        .to_owned()
                ],
                "{}",
                show(out)
            );
        }
        assert!(!rec.exists() && !inner.exists(), "{}", show(out));
    }
    let mut args = vec!["-c", "/record off", "-c", "query-name"];
    args.extend(&sockets);
    let out = run(&args, "");
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        format!("ERROR: /record: not with several targets\n{summary}")
    );
    // --json: the refusal once on standard error, untagged; on standard
    // output each target's answer to the line.
    let mut args = vec!["--json", "-c", record.as_str(), "-c", "query-name"];
    args.extend(&sockets);
    let out = run(&args, "");
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let desc = refusal(&rec)
        .trim_end()
        .trim_start_matches("ERROR: ")
        .to_owned();
    let err = json_lines(&out.stderr);
    assert_eq!(
        err[0],
        serde_json::json!({"error": {"class": "GenericError", "desc": desc}}),
        "{}",
        show(&out)
    );
    assert_eq!(err.len(), 2, "{}", show(&out));
    assert_eq!(err[1]["summary"]["failed"], 3, "{}", show(&out));
    let answers = json_lines(&out.stdout);
    assert_eq!(answers.len(), 6, "{}", show(&out));
    for socket in &sockets {
        let mine: Vec<&Value> = answers.iter().filter(|a| a["target"] == *socket).collect();
        assert_eq!(mine.len(), 2, "{}", show(&out));
        assert_eq!(mine[0]["error"]["desc"], desc.as_str(), "{}", show(&out));
        assert!(mine[1]["return"].is_object(), "{}", show(&out));
    }
    assert!(!rec.exists());
}
