//! The libvirt transport against the real libvirtd (started by
//! `scripts/install-deps.sh` when it is not running) and real transient
//! TCG domains, each with a QMP socket of the test's own beside libvirt's
//! monitor ("the side socket"), to compare answers and to cause events.
//!
//! Every domain is destroyed when its test ends, on failure too. Every wait
//! is bounded.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use qmp_client::transport::libvirt::{
    list_domains, DomainMatch, LibvirtError, LibvirtTransport, MatchedBy,
};
use qmp_client::transport::{Closer, Handshake, Received, Sink, Transport};
use qmp_client::Object;
use qmp_test_support::libvirt::{ensure_libvirtd, unique_name, virsh, TestDomain, URI};

/// How long any single wait on the transport may take (the harness's own
/// waits, for domains and side sockets, are [`qmp_test_support::libvirt::WAIT`]).
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- harness

/// Set in the environment of a test run again in a process of its own.
const ALONE: &str = "QMP_TEST_LIBVIRT_ALONE";

/// Whether this is the test's own process (see [`run_alone`]).
fn alone() -> bool {
    std::env::var_os(ALONE).is_some()
}

/// Run test `name` again, alone in a new process of this test binary (so
/// no other test's sessions or threads are there), under `wrapper` (a
/// command taking the rest as its arguments, or nothing); fail if it fails.
fn run_alone(name: &str, wrapper: &[&str]) {
    let name = &qmp_test_support::test_name(module_path!(), name);
    let exe = std::env::current_exe().expect("test binary");
    let (program, args) = match wrapper.split_first() {
        Some((first, rest)) => (
            first.to_string(),
            rest.iter().map(|a| a.to_string()).collect(),
        ),
        None => (exe.display().to_string(), Vec::new()),
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    if !wrapper.is_empty() {
        cmd.arg(&exe);
    }
    let out = cmd
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(ALONE, "1")
        .stdin(Stdio::null())
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} failed in its own process: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the tests open on a [`TestDomain`] (a type of the support crate).
trait Open {
    /// The libvirt transport to the domain's monitor.
    fn open(&self) -> LibvirtTransport;
}

impl Open for TestDomain {
    fn open(&self) -> LibvirtTransport {
        LibvirtTransport::open(Some(URI), &self.name, false).expect("open the libvirt transport")
    }
}

/// An open transport whose source is read by a thread of the test, so that
/// every wait can be bounded.
struct Session {
    sink: Box<dyn Sink>,
    closer: Closer,
    rx: Receiver<Option<Received>>,
    reader: Option<JoinHandle<()>>,
    handshake: Handshake,
}

impl Session {
    fn new(t: LibvirtTransport) -> Session {
        let handshake = t.handshake();
        let halves = Box::new(t).split().expect("split");
        let (tx, rx) = mpsc::channel();
        let mut source = halves.source;
        let reader = std::thread::spawn(move || loop {
            let item = source.receive(&mut |_| {}).expect("receive");
            let end = item.is_none();
            if tx.send(item).is_err() || end {
                return;
            }
        });
        Session {
            sink: halves.sink,
            closer: halves.closer,
            rx,
            reader: Some(reader),
            handshake,
        }
    }

    fn send(&mut self, json: &str) {
        let msg: Object = serde_json::from_str(json).expect("test JSON");
        self.sink
            .send(&msg, &qmp_client::encode(&msg), &[])
            .expect("send");
    }

    /// The next message; `None` at the end of the stream.
    fn next(&self) -> Option<Object> {
        match self.rx.recv_timeout(WAIT) {
            Ok(Some(Received::Frame(Ok(obj)))) => Some(obj),
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) | Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => panic!("nothing received within {WAIT:?}"),
        }
    }

    /// The next message that is not an event.
    fn reply(&self) -> Object {
        loop {
            let msg = self.next().expect("a reply, not the end of the stream");
            if !msg.contains_key("event") {
                return msg;
            }
        }
    }

    /// Send `json` and return its reply.
    fn execute(&mut self, json: &str) -> Object {
        self.send(json);
        self.reply()
    }

    /// The next event named `name` (replies are not expected meanwhile).
    fn event(&self, name: &str) -> Object {
        loop {
            let msg = self
                .next()
                .unwrap_or_else(|| panic!("the stream ended before {name}"));
            if msg["event"] == name {
                return msg;
            }
        }
    }

    /// Wait (bounded) for the end of the stream.
    fn expect_end(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "the stream did not end");
            match self.rx.recv_timeout(WAIT) {
                Ok(Some(_)) => {}
                Ok(None) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => panic!("the stream did not end within {WAIT:?}"),
            }
        }
    }

    /// Close and wait (bounded) for the reader thread to end.
    fn close(&mut self) {
        (self.closer)();
        if let Some(reader) = self.reader.take() {
            join_within(reader, WAIT);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        (self.closer)();
        if let Some(reader) = self.reader.take() {
            if !std::thread::panicking() {
                join_within(reader, WAIT);
            }
        }
    }
}

/// Join `thread`, failing if it runs for longer than `limit`.
fn join_within(thread: JoinHandle<()>, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !thread.is_finished() {
        assert!(
            Instant::now() < deadline,
            "a thread did not end within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    thread.join().expect("the thread panicked");
}

fn to_json(obj: &Object) -> String {
    serde_json::to_string(obj).expect("serialize")
}

fn keys(obj: &Object) -> Vec<&str> {
    obj.keys().map(String::as_str).collect()
}

/// Threads of this process, by name.
fn thread_names() -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let path = entry.expect("task entry").path().join("comm");
        if let Ok(name) = std::fs::read_to_string(path) {
            names.push(name.trim().to_owned());
        }
    }
    names.sort();
    names
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

// ------------------------------------------------------------------ tests

#[test]
fn query_status_and_hmp_equal_the_side_socket() {
    ensure_libvirtd();
    let dom = TestDomain::start("status");
    let mut side = dom.side_monitor();
    let t = dom.open();
    assert_eq!(t.domain_name(), dom.name);
    assert_eq!(t.uri(), URI);
    assert!(!t.is_agent());
    assert!(t.taint_notice().contains(&dom.name));
    let mut s = Session::new(t);

    // The greeting stands for QEMU's: same version, no capabilities (libvirt
    // negotiated none for us).
    let Handshake::Negotiated(Some(greeting)) = &s.handshake else {
        panic!(
            "expected a negotiated handshake with a greeting, got {:?}",
            s.handshake
        );
    };
    assert_eq!(
        greeting.body["QMP"]["version"],
        side.greeting["QMP"]["version"]
    );
    assert_eq!(greeting.body["QMP"]["capabilities"], serde_json::json!([]));

    let ours = s.execute(r#"{"execute":"query-status"}"#);
    let theirs = side.execute(r#"{"execute":"query-status"}"#);
    assert_eq!(to_json(&ours), to_json(&theirs));
    assert_eq!(ours["return"]["status"], "running");

    let hmp = r#"{"execute":"human-monitor-command","arguments":{"command-line":"info version"}}"#;
    assert_eq!(to_json(&s.execute(hmp)), to_json(&side.execute(hmp)));
    let hmp_cpu = r#"{"execute":"human-monitor-command","arguments":{"command-line":"info registers","cpu-index":1}}"#;
    let ours = s.execute(hmp_cpu);
    assert!(
        ours["return"].as_str().is_some_and(|t| t.contains("EAX=")),
        "{ours:?}"
    );
    s.close();
}

#[test]
fn ids_are_restored() {
    ensure_libvirtd();
    let dom = TestDomain::start("ids");
    let mut side = dom.side_monitor();
    let mut s = Session::new(dom.open());

    let r = s.execute(r#"{"execute":"query-status","id":"abc"}"#);
    assert_eq!(keys(&r), ["return", "id"]);
    assert_eq!(r["id"], "abc");

    let r = s.execute(r#"{"execute":"query-status","id":42}"#);
    assert_eq!(keys(&r), ["return", "id"]);
    assert_eq!(r["id"], 42);

    let r = s.execute(r#"{"execute":"query-status","id":{"nested":[1,2]}}"#);
    assert_eq!(r["id"], serde_json::json!({"nested": [1, 2]}));

    let r = s.execute(r#"{"execute":"query-status"}"#);
    assert_eq!(keys(&r), ["return"]);

    // Byte for byte what QEMU answers on its own socket, error replies too.
    for cmd in [
        r#"{"execute":"query-name","id":7}"#,
        r#"{"execute":"no-such-command","id":7}"#,
        r#"{"execute":"query-status","arguments":{"bogus":1},"id":"x"}"#,
    ] {
        assert_eq!(
            to_json(&s.execute(cmd)),
            to_json(&side.execute(cmd)),
            "{cmd}"
        );
    }
    s.close();
}

#[test]
fn an_unknown_command_gets_qmps_error() {
    ensure_libvirtd();
    let dom = TestDomain::start("unknown");
    let mut s = Session::new(dom.open());
    let r = s.execute(r#"{"execute":"no-such-command"}"#);
    assert_eq!(
        to_json(&r),
        r#"{"error":{"class":"CommandNotFound","desc":"The command no-such-command has not been found"}}"#
    );
    // The session carries on.
    assert!(s
        .execute(r#"{"execute":"query-status"}"#)
        .contains_key("return"));
    s.close();
}

#[test]
fn events_from_the_side_socket_arrive_as_qemu_sends_them() {
    ensure_libvirtd();
    let dom = TestDomain::start("events");
    let mut side = dom.side_monitor();
    let s = Session::new(dom.open());

    assert!(side.execute(r#"{"execute":"stop"}"#).contains_key("return"));
    let ours = s.event("STOP");
    let theirs = side.event("STOP");
    assert_eq!(keys(&ours), ["timestamp", "event"]);
    assert_eq!(
        keys(ours["timestamp"].as_object().expect("object")),
        ["seconds", "microseconds"]
    );
    assert_eq!(to_json(&ours), to_json(&theirs));

    assert!(side.execute(r#"{"execute":"cont"}"#).contains_key("return"));
    let ours = s.event("RESUME");
    let theirs = side.event("RESUME");
    assert_eq!(to_json(&ours), to_json(&theirs));

    drop(s);
}

/// QEMU sends STOP before its reply to `stop` (and RESUME before `cont`'s).
/// libvirt may deliver the event after the reply, but once the syncer
/// returned, it has been received.
#[test]
fn after_a_sync_the_events_sent_before_a_reply_are_received() {
    ensure_libvirtd();
    let dom = TestDomain::start("evorder");
    let t = dom.open();
    let sync = t.syncer().expect("a libvirt monitor session has a syncer");
    let mut s = Session::new(t);
    for i in 0..100 {
        for (cmd, event) in [("stop", "STOP"), ("cont", "RESUME")] {
            s.send(&format!(r#"{{"execute":"{cmd}","id":{i}}}"#));
            let mut seen = Vec::new();
            loop {
                let msg = s.next().expect("a message");
                let done = msg.contains_key("return");
                seen.push(msg);
                if done {
                    break;
                }
            }
            sync(Some(WAIT)).expect("sync");
            while let Ok(Some(Received::Frame(Ok(msg)))) = s.rx.try_recv() {
                seen.push(msg);
            }
            let events: Vec<String> = seen
                .iter()
                .filter_map(|m| m.get("event").and_then(|e| e.as_str()).map(str::to_owned))
                .collect();
            assert_eq!(events, [event], "round {i} ({cmd})");
        }
    }
    // The guest agent sends no events: nothing to wait for.
    drop(s);
}

#[test]
fn an_event_with_data_keeps_it() {
    ensure_libvirtd();
    let dom = TestDomain::start("evdata");
    let mut side = dom.side_monitor();
    let s = Session::new(dom.open());
    // system_reset makes QEMU send RESET with data {"guest": false, "reason": "host-qmp-system-reset"}.
    assert!(side
        .execute(r#"{"execute":"system_reset"}"#)
        .contains_key("return"));
    let ours = s.event("RESET");
    let theirs = side.event("RESET");
    assert_eq!(keys(&ours), ["timestamp", "event", "data"]);
    assert_eq!(to_json(&ours), to_json(&theirs));
}

#[test]
fn quit_gives_its_reply_then_shutdown_then_the_end() {
    ensure_libvirtd();
    let dom = TestDomain::start("quit");
    let mut s = Session::new(dom.open());
    s.send(r#"{"execute":"quit","id":1}"#);
    let mut got = Vec::new();
    while let Some(msg) = s.next() {
        got.push(msg);
    }
    let reply = got
        .iter()
        .position(|m| m.contains_key("return"))
        .unwrap_or_else(|| panic!("no reply to quit in {got:?}"));
    assert_eq!(to_json(&got[reply]), r#"{"return":{},"id":1}"#);
    // (A reply has no "event": indexing a map by a missing key panics.)
    assert!(
        got.iter()
            .any(|m| m.get("event").is_some_and(|e| e == "SHUTDOWN")),
        "no SHUTDOWN in {got:?}"
    );
    // The sink says so once the domain is gone.
    let msg: Object = serde_json::from_str(r#"{"execute":"query-status"}"#).expect("json");
    let e = s
        .sink
        .send(&msg, &qmp_client::encode(&msg), &[])
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    s.close();
}

#[test]
fn destroying_the_domain_ends_the_source() {
    ensure_libvirtd();
    let dom = TestDomain::start("destroy");
    let mut s = Session::new(dom.open());
    assert!(s
        .execute(r#"{"execute":"query-status"}"#)
        .contains_key("return"));
    dom.destroy();
    s.expect_end();
    s.close();
}

#[test]
fn losing_the_connection_to_libvirtd_ends_the_source() {
    ensure_libvirtd();
    let dom = TestDomain::start("lost");
    // libvirt's `ext` transport runs a command that carries the connection
    // on its standard input and output: here socat, to libvirtd's socket.
    // Killing it cuts the connection as a network failure would.
    let dir = dom.dir();
    let pid_file = dir.join("relay.pid");
    let script = dir.join("relay.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ > '{}'\nexec socat - UNIX-CONNECT:/run/libvirt/libvirt-sock\n",
            pid_file.display()
        ),
    )
    .expect("write relay.sh");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let uri = format!("qemu+ext:///system?command={}", script.display());
    let t = LibvirtTransport::open(Some(&uri), &dom.name, false).expect("open through the relay");
    let mut s = Session::new(t);
    assert!(s
        .execute(r#"{"execute":"query-status"}"#)
        .contains_key("return"));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("relay.pid")
        .trim()
        .parse()
        .expect("a pid");
    // SAFETY: kill(2) on the relay this test started (through libvirt).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    s.expect_end();
    s.close();
}

#[test]
fn file_descriptors_go_through_with_files() {
    ensure_libvirtd();
    let dom = TestDomain::start("fds");
    let t = dom.open();
    assert!(
        t.passes_fds(),
        "libvirt 9.0 has virDomainQemuMonitorCommandWithFiles"
    );
    let mut s = Session::new(t);
    let file = tempfile::tempfile().expect("tempfile");
    let msg: Object =
        serde_json::from_str(r#"{"execute":"getfd","arguments":{"fdname":"f0"},"id":"g"}"#)
            .expect("json");
    s.sink
        .send(&msg, &qmp_client::encode(&msg), &[file.as_raw_fd()])
        .expect("send with a descriptor");
    assert_eq!(to_json(&s.reply()), r#"{"return":{},"id":"g"}"#);
    // QEMU has it: closing it by name works once, then fails.
    let close = r#"{"execute":"closefd","arguments":{"fdname":"f0"}}"#;
    assert_eq!(to_json(&s.execute(close)), r#"{"return":{}}"#);
    assert!(s.execute(close).contains_key("error"));
    s.close();
}

#[test]
fn an_unknown_domain_is_named() {
    ensure_libvirtd();
    let name = unique_name("missing");
    let e = LibvirtTransport::open(Some(URI), &name, false).unwrap_err();
    assert!(matches!(e, LibvirtError::NoSuchDomain { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains(&name) && text.contains(URI), "{text}");
    // A UUID and an id nobody has.
    let e = LibvirtTransport::open(Some(URI), "00000000-0000-0000-0000-0000000000ff", false)
        .unwrap_err();
    assert!(matches!(e, LibvirtError::NoSuchDomain { .. }), "{e:?}");
    let e = LibvirtTransport::open(Some(URI), "999999", false).unwrap_err();
    assert!(matches!(e, LibvirtError::NoSuchDomain { .. }), "{e:?}");
}

#[test]
fn a_domain_is_found_by_id_and_uuid_too() {
    ensure_libvirtd();
    let dom = TestDomain::start("lookup");
    let info = list_domains(Some(URI))
        .expect("list domains")
        .into_iter()
        .find(|d| d.name == dom.name)
        .expect("the test domain is listed");
    for spec in [info.id.to_string(), info.uuid.clone()] {
        let t = LibvirtTransport::open(Some(URI), &spec, false).expect("open by id or uuid");
        assert_eq!(t.domain_name(), dom.name, "{spec}");
    }
}

/// A domain called like another domain's id: the text names two domains,
/// so it opens neither, and the error says which is which. Each stays
/// reachable by its UUID (and the first by its name).
#[test]
fn a_name_that_is_another_domains_id_is_ambiguous() {
    ensure_libvirtd();
    let first = TestDomain::start("ambiguous");
    let (id, first_uuid) = first.id_and_uuid();
    let second = TestDomain::named(&id, false);
    second.create();
    let (second_id, second_uuid) = second.id_and_uuid();
    let e = LibvirtTransport::open(Some(URI), &id, false).unwrap_err();
    assert_eq!(
        e,
        LibvirtError::Ambiguous {
            domain: id.clone(),
            uri: URI.to_owned(),
            matches: vec![
                DomainMatch {
                    by: MatchedBy::Id,
                    name: first.name.clone(),
                    uuid: first_uuid.clone(),
                },
                DomainMatch {
                    by: MatchedBy::Name,
                    name: id.clone(),
                    uuid: second_uuid.clone(),
                },
            ],
        }
    );
    assert_eq!(
        e.to_string(),
        format!(
            "domain {id} is ambiguous at {URI}: it is the id of domain {} (UUID {first_uuid}) \
             and the name of domain {id} (UUID {second_uuid}); give the UUID of the one you mean",
            first.name
        )
    );
    for (spec, name) in [
        (&first_uuid, &first.name),
        (&first.name, &first.name),
        (&second_uuid, &id),
    ] {
        let t = LibvirtTransport::open(Some(URI), spec, false).expect("open");
        assert_eq!(t.domain_name(), name, "{spec}");
    }
    // The second's own id names it alone.
    let t = LibvirtTransport::open(Some(URI), &second_id, false).expect("open by id");
    assert_eq!(t.domain_name(), id);
}

#[test]
fn a_stopped_domain_is_not_running() {
    ensure_libvirtd();
    let dom = TestDomain::define("stopped");
    let e = LibvirtTransport::open(Some(URI), &dom.name, false).unwrap_err();
    assert_eq!(
        e,
        LibvirtError::NotRunning {
            domain: dom.name.clone()
        }
    );
    assert!(e.to_string().contains("is not running"), "{e}");
}

#[test]
fn a_destroyed_transient_domain_is_gone() {
    ensure_libvirtd();
    let dom = TestDomain::start("gone");
    dom.destroy();
    let e = LibvirtTransport::open(Some(URI), &dom.name, false).unwrap_err();
    assert!(matches!(e, LibvirtError::NoSuchDomain { .. }), "{e:?}");
}

#[test]
fn a_bad_uri_cannot_connect() {
    ensure_libvirtd();
    for uri in ["qemu:///nowhere", "nosuchdriver:///x"] {
        let e = LibvirtTransport::open(Some(uri), "x", false).unwrap_err();
        assert!(
            matches!(e, LibvirtError::CannotConnect { .. }),
            "{uri}: {e:?}"
        );
        let text = e.to_string();
        assert!(text.contains(uri) && !text.contains('\n'), "{text}");
        let e = list_domains(Some(uri)).unwrap_err();
        assert!(
            matches!(e, LibvirtError::CannotConnect { .. }),
            "{uri}: {e:?}"
        );
    }
}

#[test]
fn agent_mode_without_an_agent_channel_says_so() {
    ensure_libvirtd();
    let dom = TestDomain::start("agent");
    let e = LibvirtTransport::open(Some(URI), &dom.name, true).unwrap_err();
    let LibvirtError::NoAgent { domain, message } = &e else {
        panic!("expected NoAgent, got {e:?}");
    };
    assert_eq!(domain, &dom.name);
    assert!(message.contains("agent"), "{message}");
    assert!(
        e.to_string()
            .starts_with(&format!("domain {} has no guest agent", dom.name)),
        "{e}"
    );
}

#[test]
fn agent_mode_with_no_agent_connected_says_so() {
    ensure_libvirtd();
    let dom = TestDomain::start_with("agentch", true);
    let e = LibvirtTransport::open(Some(URI), &dom.name, true).unwrap_err();
    let LibvirtError::NoAgent { message, .. } = &e else {
        panic!("expected NoAgent, got {e:?}");
    };
    assert!(message.contains("not connected"), "{message}");
    // The monitor is still there for a monitor session.
    let mut s = Session::new(dom.open());
    assert!(s
        .execute(r#"{"execute":"query-status"}"#)
        .contains_key("return"));
    s.close();
}

#[test]
fn a_missing_library_says_how_to_install_it() {
    if alone() {
        // libvirt.so.0 is an empty file here.
        let e = LibvirtTransport::open(Some(URI), "x", false).unwrap_err();
        let LibvirtError::LibraryMissing { library, .. } = &e else {
            panic!("expected LibraryMissing, got {e:?}");
        };
        assert_eq!(library, "libvirt.so.0");
        let text = e.to_string();
        assert!(
            text.contains("apt-get install libvirt0") && text.contains("dnf install libvirt-libs"),
            "{text}"
        );
        assert_eq!(list_domains(None).unwrap_err(), e);
        return;
    }
    // Again, in a private mount namespace where the library file is hidden
    // under an empty one (root only, as the suite runs).
    let hide = r#"lib=$(/sbin/ldconfig -p | awk '$1 == "libvirt.so.0" { print $NF; exit }')
        [ -n "$lib" ] || { echo "libvirt.so.0 not in the loader cache" >&2; exit 2; }
        mount --bind /dev/null "$(readlink -f "$lib")" && exec "$@""#;
    run_alone(
        "a_missing_library_says_how_to_install_it",
        &["unshare", "-m", "sh", "-c", hide, "sh"],
    );
}

#[test]
fn list_domains_has_the_test_domain() {
    ensure_libvirtd();
    let dom = TestDomain::start("list");
    let uuid = String::from_utf8(virsh(&["domuuid", &dom.name]).stdout).expect("utf-8");
    let id = String::from_utf8(virsh(&["domid", &dom.name]).stdout).expect("utf-8");
    let all = list_domains(Some(URI)).expect("list domains");
    let info = all
        .iter()
        .find(|d| d.name == dom.name)
        .unwrap_or_else(|| panic!("{} not in {all:?}", dom.name));
    assert_eq!(info.uuid, uuid.trim());
    assert_eq!(info.id.to_string(), id.trim());
    assert!(info.id > 0);
}

#[test]
fn closing_ends_every_thread_promptly_and_leaks_nothing() {
    if !alone() {
        // Threads and descriptors are counted for the whole process: no
        // other test may run there meanwhile.
        return run_alone("closing_ends_every_thread_promptly_and_leaks_nothing", &[]);
    }
    ensure_libvirtd();
    let dom = TestDomain::start("close");
    // Warm up: whatever libvirt opens once per process is opened now.
    Session::new(dom.open()).close();
    let threads = thread_names();
    let fds = open_fds();
    assert!(
        !threads.iter().any(|t| t == "libvirt-events"),
        "{threads:?}"
    );

    for _ in 0..10 {
        let mut s = Session::new(dom.open());
        assert!(s
            .execute(r#"{"execute":"query-status"}"#)
            .contains_key("return"));
        assert!(thread_names().iter().any(|t| t == "libvirt-events"));
        // The reader is blocked in receive and the event thread in libvirt's
        // loop: close must end both (the reader's join is bounded).
        s.close();
        // The sink fails once closed.
        let msg: Object = serde_json::from_str(r#"{"execute":"query-status"}"#).expect("json");
        let e = s
            .sink
            .send(&msg, &qmp_client::encode(&msg), &[])
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotConnected);
    }
    // Closing twice, or dropping the halves without closing, is fine too.
    let s = Session::new(dom.open());
    (s.closer)();
    drop(s);
    let t = dom.open();
    drop(Box::new(t).split().expect("split"));
    drop(dom.open());

    assert_eq!(thread_names(), threads);
    assert_eq!(open_fds(), fds, "descriptors leaked");
}

#[test]
fn sessions_can_overlap() {
    ensure_libvirtd();
    let dom = TestDomain::start("overlap");
    let mut a = Session::new(dom.open());
    let mut b = Session::new(dom.open());
    let mut side = dom.side_monitor();
    assert!(a.execute(r#"{"execute":"query-status","id":"a"}"#)["id"] == "a");
    a.close();
    // b still works, events included.
    assert!(b.execute(r#"{"execute":"query-status","id":"b"}"#)["id"] == "b");
    assert!(side.execute(r#"{"execute":"stop"}"#).contains_key("return"));
    assert_eq!(b.event("STOP")["event"], "STOP");
    b.close();
}
