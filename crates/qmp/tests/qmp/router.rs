//! The router against a real QEMU: raw clients on its socket checking ids,
//! negotiation (against QEMU's own answers on a second monitor, byte for
//! byte), events, clients dying mid-command, out-of-band commands, file
//! descriptors, hostile input, and QEMU going away.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qmp_client::router::{Router, RouterOptions};
use qmp_client::{Address, Client, ClientOptions, Object, StreamTransport, Transport};
use qmp_test_support::proc::listening;
use serde_json::Value;

/// Bound on every wait.
const T: Duration = Duration::from_secs(20);

/// QEMU (`-M none`) with two monitors: `a.sock` for the router, `b.sock`
/// for the test to ask QEMU directly. Killed when dropped.
struct Qemu {
    child: Child,
    dir: tempfile::TempDir,
}

impl Qemu {
    fn start() -> Qemu {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-M", "none", "-display", "none", "-nodefaults"]);
        for name in ["a.sock", "b.sock"] {
            cmd.arg("-qmp").arg(format!(
                "unix:{},server=on,wait=off",
                dir.path().join(name).display()
            ));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start qemu-system-x86_64 (run scripts/install-deps.sh)");
        let mut qemu = Qemu { child, dir };
        // Listening, as the kernel sees it: no probe connection, which
        // the single-client monitor would have to serve first.
        let deadline = Instant::now() + T;
        for name in ["a.sock", "b.sock"] {
            let socket = qemu.path().join(name);
            while !listening(&socket) {
                if let Ok(Some(status)) = qemu.child.try_wait() {
                    panic!("QEMU exited early: {status}");
                }
                assert!(Instant::now() < deadline, "QEMU never listened on {name}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        qemu
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

fn upstream(socket: &Path) -> Arc<Client> {
    Arc::new(
        Client::connect(&Address::Unix(socket.to_owned()), ClientOptions::default())
            .expect("connect to QEMU"),
    )
}

/// A router serving on `DIR/proxy.sock` over QEMU's `a.sock`.
fn router(peer: &Qemu, opts: RouterOptions) -> (Arc<Client>, Router, PathBuf) {
    let client = upstream(&peer.path().join("a.sock"));
    let path = peer.path().join("proxy.sock");
    let router = Router::serve(Arc::clone(&client), &path, opts).expect("serve");
    (client, router, path)
}

/// A raw QMP client: lines in, lines out, every read bounded.
struct Raw {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Raw {
    fn connect(path: &Path) -> Raw {
        let s = UnixStream::connect(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        s.set_read_timeout(Some(T)).unwrap();
        Raw {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }

    /// Connect and read the greeting.
    fn greeted(path: &Path) -> Raw {
        let mut raw = Raw::connect(path);
        let g = raw.line();
        assert!(g.starts_with("{\"QMP\""), "{g}");
        raw
    }

    /// Connect, read the greeting and negotiate (`oob` if asked).
    fn negotiated(path: &Path, oob: bool) -> Raw {
        let mut raw = Raw::greeted(path);
        let cmd = if oob {
            r#"{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}"#
        } else {
            r#"{"execute": "qmp_capabilities"}"#
        };
        assert_eq!(raw.send(cmd), "{\"return\": {}}\r\n");
        raw
    }

    /// The next line, with its `\r\n`.
    fn line(&mut self) -> String {
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Ok(0) => panic!("end of stream where a line was expected"),
            Ok(_) => line,
            Err(e) => panic!("no line within {T:?}: {e}"),
        }
    }

    fn write(&mut self, text: &str) {
        self.w.write_all(text.as_bytes()).unwrap();
    }

    /// Send `text` and return the next line.
    fn send(&mut self, text: &str) -> String {
        self.write(text);
        self.line()
    }

    /// The next line that is not an event.
    fn reply(&mut self) -> Value {
        loop {
            let v: Value = serde_json::from_str(&self.line()).unwrap();
            if v.get("event").is_none() {
                return v;
            }
        }
    }

    /// Read until the end of the stream (bounded); what came.
    fn rest(&mut self) -> String {
        let mut rest = String::new();
        self.r
            .read_to_string(&mut rest)
            .expect("end of stream within T");
        rest
    }
}

#[test]
fn ids_of_every_kind_come_back_as_sent() {
    let peer = Qemu::start();
    let (_client, _router, path) = router(&peer, RouterOptions::default());
    let mut c = Raw::negotiated(&path, false);
    for id in [
        r#""a string""#,
        "7",
        "-3",
        "1.5",
        "18446744073709551616",
        r#"{"k": [1, {"n": null}]}"#,
        "[]",
        "null",
        "true",
    ] {
        let line = c.send(&format!(r#"{{"execute": "query-name", "id": {id}}}"#));
        assert_eq!(line, format!("{{\"return\": {{}}, \"id\": {id}}}\r\n"));
    }
    // No id: none in the reply.
    assert_eq!(
        c.send(r#"{"execute": "query-name"}"#),
        "{\"return\": {}}\r\n"
    );
    // An error reply keeps QEMU's layout, with the id put back.
    assert_eq!(
        c.send(r#"{"execute": "no-such", "id": "e"}"#),
        "{\"id\": \"e\", \"error\": {\"class\": \"CommandNotFound\", \"desc\": \
         \"The command no-such has not been found\"}}\r\n"
    );
}

/// Two clients pipelining with the same ids, and the upstream's own user
/// at the same time: each reply goes to its sender, in order.
#[test]
fn clients_with_the_same_ids_get_their_own_replies() {
    let peer = Qemu::start();
    let (client, _router, path) = router(&peer, RouterOptions::default());
    let workers: Vec<_> = ["query-name", "query-status", "query-version"]
        .into_iter()
        .map(|cmd| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut c = Raw::negotiated(&path, false);
                let mut batch = String::new();
                for i in 0..200 {
                    batch.push_str(&format!(r#"{{"execute": "{cmd}", "id": {i}}}"#));
                }
                c.write(&batch);
                for i in 0..200 {
                    let v = c.reply();
                    assert_eq!(v["id"], Value::from(i), "{cmd}: {v}");
                    let ret = &v["return"];
                    match cmd {
                        "query-name" => assert_eq!(ret, &serde_json::json!({})),
                        "query-status" => assert!(ret.get("status").is_some(), "{v}"),
                        _ => assert!(ret.get("qemu").is_some(), "{v}"),
                    }
                }
            })
        })
        .collect();
    for _ in 0..100 {
        let r = client
            .execute("query-status", None, Some(T))
            .expect("the upstream's own user");
        assert!(r.ret().is_some());
    }
    for w in workers {
        w.join().expect("client thread");
    }
    assert!(client.drain_notices().is_empty());
}

/// Before and after negotiation, the router answers as QEMU does: the
/// same bytes as QEMU's own monitor gives for the same input.
#[test]
fn negotiation_and_refusals_are_qemus_byte_for_byte() {
    let peer = Qemu::start();
    let (_client, _router, path) = router(&peer, RouterOptions::default());
    let mut ours = Raw::connect(&path);
    let mut qemu = Raw::connect(&peer.path().join("b.sock"));
    assert_eq!(ours.line(), qemu.line(), "greeting");
    let compare = |ours: &mut Raw, qemu: &mut Raw, input: &str| {
        let a = ours.send(input);
        let b = qemu.send(input);
        assert_eq!(a, b, "for {input}");
    };
    for input in [
        r#"{"execute": "query-status", "id": "a"}"#,
        r#"{"execute": "query-status"}"#,
        r#"{"execute": "no-such-command", "id": 1}"#,
        r#"{"exec-oob": "migrate-pause", "id": 2}"#,
        r#"{"id": 3}"#,
        r#"{"execute": 4, "id": 4}"#,
        r#"{"execute": "query-status", "arguments": [], "id": 5}"#,
        r#"{"execute": "query-status", "bogus": 1}"#,
        r#"{"execute": "qmp_capabilities", "arguments": {"enable": "oob"}, "id": 6}"#,
        r#"{"execute": "qmp_capabilities", "arguments": {"enable": [1]}}"#,
        r#"{"execute": "qmp_capabilities", "arguments": {"enable": ["foo"]}}"#,
        r#"{"execute": "qmp_capabilities", "arguments": {"bogus": 1}, "id": [7]}"#,
        "[1]\n",
        "\"text\"\n",
        // Negotiation, with an id.
        r#"{"execute": "qmp_capabilities", "id": {"n": 8}}"#,
        // After it: QEMU's own refusals.
        r#"{"execute": "qmp_capabilities", "id": 9}"#,
        r#"{"execute": "qmp_capabilities", "arguments": {"bogus": 1}}"#,
        r#"{"exec-oob": "migrate-pause", "id": 10}"#,
        r#"{"execute": "query-status", "exec-oob": "x", "id": 11}"#,
        r#"{"execute": "query-status", "bogus": 1, "id": 12}"#,
        r#"{"execute": "no-such-command", "id": 13}"#,
        "[2]\n",
        r#"{"execute": "query-name", "id": "é ✓ 😀"}"#,
    ] {
        compare(&mut ours, &mut qemu, input);
    }
    // A parse error: QEMU's wording of the reason differs; the kind does not.
    let a: Value = serde_json::from_str(&ours.send("nonsense\n")).unwrap();
    let b: Value = serde_json::from_str(&qemu.send("nonsense\n")).unwrap();
    assert_eq!(a["error"]["class"], b["error"]["class"]);
    assert!(a["error"]["desc"]
        .as_str()
        .unwrap()
        .starts_with("JSON parse error, "));
}

#[test]
fn oob_is_offered_as_upstream_negotiated_it_and_exec_oob_passes() {
    let peer = Qemu::start();
    let (_client, _router, path) = router(&peer, RouterOptions::default());
    let mut c = Raw::negotiated(&path, true);
    let mut direct = Raw::negotiated(&peer.path().join("b.sock"), true);
    // Executed out of band: QEMU's own error for migrate-pause outside
    // postcopy, not "does not support OOB" or "unexpected".
    let input = r#"{"exec-oob": "migrate-pause", "id": "o"}"#;
    let line = c.send(input);
    assert_eq!(line, direct.send(input));
    assert!(line.contains("postcopy-active"), "{line}");
    // In-band commands still work beside it.
    assert_eq!(
        c.send(r#"{"execute": "query-name", "id": "i"}"#),
        "{\"return\": {}, \"id\": \"i\"}\r\n"
    );

    // Over an upstream without oob, the greeting offers none and asking
    // for it is refused as QEMU refuses an unavailable capability.
    drop(direct);
    let plain = Arc::new(
        Client::connect(
            &Address::Unix(peer.path().join("b.sock")),
            ClientOptions {
                oob: false,
                ..ClientOptions::default()
            },
        )
        .expect("connect b.sock"),
    );
    let path2 = peer.path().join("plain.sock");
    let _r2 = Router::serve(plain, &path2, RouterOptions::default()).unwrap();
    let mut c2 = Raw::connect(&path2);
    assert!(c2.line().contains("\"capabilities\": []"));
    assert_eq!(
        c2.send(r#"{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}"#),
        "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Capability oob not available\"}}\r\n"
    );
}

/// Events go to every client that negotiated, and not to one that has
/// not (yet).
#[test]
fn events_reach_every_negotiated_client_only() {
    let peer = Qemu::start();
    let (client, _router, path) = router(&peer, RouterOptions::default());
    let mut a = Raw::negotiated(&path, false);
    let mut b = Raw::negotiated(&path, false);
    let mut late = Raw::greeted(&path);
    // a stops the VM: a gets its reply and STOP, b gets STOP.
    a.write(r#"{"execute": "stop", "id": "s"}"#);
    let mut seen = vec![a.line(), a.line()];
    seen.sort();
    assert!(
        seen[0].contains("\"return\": {}, \"id\": \"s\""),
        "{seen:?}"
    );
    assert!(seen[1].contains("\"event\": \"STOP\""), "{seen:?}");
    assert!(b.line().contains("\"event\": \"STOP\""));
    // The upstream's own user sees it too (its queue is unchanged).
    let mut got_stop = false;
    while let Some(item) = client.next_incoming(Some(T)) {
        if matches!(&item, qmp_client::Incoming::Event(e) if e.name() == Some("STOP")) {
            got_stop = true;
            break;
        }
    }
    assert!(got_stop);
    // A reply routed after the event (the reader hands an event to every
    // client before it routes the next message).
    assert_eq!(
        a.send(r#"{"execute": "query-name", "id": "n"}"#),
        "{\"return\": {}, \"id\": \"n\"}\r\n"
    );
    // The late client negotiates now: its first line is the reply, no STOP.
    assert_eq!(
        late.send(r#"{"execute": "qmp_capabilities"}"#),
        "{\"return\": {}}\r\n"
    );
    assert_eq!(
        late.send(r#"{"execute": "query-name", "id": 1}"#),
        "{\"return\": {}, \"id\": 1}\r\n"
    );
}

/// A client that goes away with commands in flight disturbs nobody: the
/// others get their replies, the upstream hears of nothing odd, and new
/// clients are served.
#[test]
fn a_client_dying_mid_command_disturbs_nobody() {
    let peer = Qemu::start();
    let (client, router, path) = router(&peer, RouterOptions::default());
    let mut other = Raw::negotiated(&path, false);
    for round in 0..3 {
        let mut dying = Raw::negotiated(&path, false);
        dying.write(
            r#"{"execute": "query-qmp-schema", "id": 1}{"execute": "query-qmp-schema", "id": 2}{"execute": "query-qmp-schema"}"#,
        );
        if round == 1 {
            // Half a message, then gone.
            dying.write(r#"{"execute": "query-sta"#);
        }
        drop(dying);
        let mut batch = String::new();
        for i in 0..50 {
            batch.push_str(&format!(
                r#"{{"execute": "query-status", "id": "r{round}-{i}"}}"#
            ));
        }
        other.write(&batch);
        for i in 0..50 {
            let v = other.reply();
            assert_eq!(v["id"], Value::from(format!("r{round}-{i}")), "{v}");
            assert_eq!(v["return"]["status"], Value::from("running"));
        }
    }
    // The upstream's own user: nothing unexpected was reported to it.
    let r = client.execute("query-name", None, Some(T)).unwrap();
    assert!(r.ret().is_some());
    assert!(client.drain_notices().is_empty());
    let mut fresh = Raw::negotiated(&path, false);
    assert!(fresh
        .send(r#"{"execute": "query-qmp-schema", "id": "big"}"#)
        .contains("\"id\": \"big\""));
    drop(fresh);
    drop(other);
    router.stop();
    assert!(
        std::fs::symlink_metadata(&path).is_err(),
        "socket left behind"
    );
}

#[test]
fn file_descriptors_are_forwarded() {
    let peer = Qemu::start();
    let (_client, _router, path) = router(&peer, RouterOptions::default());
    let stream = UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    let mut r = BufReader::new(stream.try_clone().unwrap());
    let mut sink = Box::new(StreamTransport::unix(stream).unwrap())
        .split()
        .unwrap()
        .sink;
    let mut line = String::new();
    let mut next = |r: &mut BufReader<UnixStream>| {
        line.clear();
        r.read_line(&mut line).expect("a line");
        line.clone()
    };
    let mut send = |text: &str, fds: &[i32]| {
        let msg: Object = serde_json::from_str(text).unwrap();
        sink.send(&msg, text.as_bytes(), fds).expect("send");
    };
    next(&mut r);
    send(r#"{"execute": "qmp_capabilities"}"#, &[]);
    assert_eq!(next(&mut r), "{\"return\": {}}\r\n");
    // No descriptor: QEMU says so.
    send(
        r#"{"execute": "getfd", "arguments": {"fdname": "f0"}, "id": 1}"#,
        &[],
    );
    let v: Value = serde_json::from_str(&next(&mut r)).unwrap();
    assert_eq!(v["id"], Value::from(1));
    assert!(
        v["error"]["desc"].as_str().unwrap().contains("SCM_RIGHTS"),
        "{v}"
    );
    // With one, QEMU takes it: getfd, then closefd by name works.
    let file = tempfile::tempfile().unwrap();
    send(
        r#"{"execute": "getfd", "arguments": {"fdname": "f0"}, "id": 2}"#,
        &[file.as_raw_fd()],
    );
    assert_eq!(next(&mut r), "{\"return\": {}, \"id\": 2}\r\n");
    send(
        r#"{"execute": "closefd", "arguments": {"fdname": "f0"}, "id": 3}"#,
        &[],
    );
    assert_eq!(next(&mut r), "{\"return\": {}, \"id\": 3}\r\n");
    // add-fd puts it in a set that query-fdsets lists.
    send(
        r#"{"execute": "add-fd", "arguments": {"opaque": "through the router"}, "id": 4}"#,
        &[file.as_raw_fd()],
    );
    let v: Value = serde_json::from_str(&next(&mut r)).unwrap();
    assert!(v["return"]["fdset-id"].is_u64(), "{v}");
    send(r#"{"execute": "query-fdsets", "id": 5}"#, &[]);
    let v: Value = serde_json::from_str(&next(&mut r)).unwrap();
    assert!(v.to_string().contains("through the router"), "{v}");
}

/// Garbage, huge messages, deep nesting, invalid UTF-8 and half messages
/// get errors or nothing, never a crash; the router serves on.
#[test]
fn hostile_clients_get_errors_and_the_router_serves_on() {
    let peer = Qemu::start();
    let opts = RouterOptions {
        max_message: 1 << 20,
        ..RouterOptions::default()
    };
    let (client, _router, path) = router(&peer, opts);
    let mut c = Raw::negotiated(&path, false);
    assert!(c.send("garbage\n").contains("JSON parse error"));
    let huge = format!(
        r#"{{"execute": "x", "arguments": {{"a": "{}"}}}}"#,
        "x".repeat(2 << 20)
    );
    let line = c.send(&huge);
    assert!(line.contains("larger than the limit"), "{line}");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(c.send(&deep).contains("JSON parse error"));
    c.w.write_all(b"{\"execute\": \"\xff\xfe\"}").unwrap();
    assert!(c.line().contains("UTF-8"));
    assert_eq!(
        c.send(r#"{"execute": "query-name", "id": "still"}"#),
        "{\"return\": {}, \"id\": \"still\"}\r\n"
    );
    for junk in [&b"{\"execute\": \"query-st"[..], b"\x00\x01\x02", b"}}}]]]"] {
        let mut j = Raw::greeted(&path);
        j.w.write_all(junk).unwrap();
        drop(j);
    }
    assert_eq!(
        c.send(r#"{"execute": "query-name", "id": "after"}"#),
        "{\"return\": {}, \"id\": \"after\"}\r\n"
    );
    assert!(client.is_connected());
}

/// A client that half-closes gets every reply, then the end; `quit` gets
/// its reply and SHUTDOWN before the end.
#[test]
fn half_close_and_quit_get_everything_before_the_end() {
    let peer = Qemu::start();
    let (client, router, path) = router(&peer, RouterOptions::default());
    let mut c = Raw::negotiated(&path, false);
    c.write(r#"{"execute": "query-name", "id": 1}{"execute": "query-qmp-schema", "id": 2}"#);
    c.w.shutdown(std::net::Shutdown::Write).unwrap();
    let rest = c.rest();
    let lines: Vec<&str> = rest.lines().collect();
    assert_eq!(lines.len(), 2, "{}", &rest[..rest.len().min(300)]);
    assert!(lines[1].ends_with("\"id\": 2}"));

    let mut q = Raw::negotiated(&path, false);
    let mut other = Raw::negotiated(&path, false);
    q.write(r#"{"execute": "quit", "id": "q"}"#);
    let rest = q.rest();
    assert!(
        rest.contains("{\"return\": {}, \"id\": \"q\"}\r\n"),
        "{rest}"
    );
    assert!(rest.contains("\"event\": \"SHUTDOWN\""), "{rest}");
    assert!(other.rest().contains("\"event\": \"SHUTDOWN\""));
    // The upstream is gone: new clients are closed at once.
    assert!(!client.is_connected());
    let mut after = Raw::connect(&path);
    assert_eq!(after.rest(), "");
    assert!(router.upstream_closed());
}

/// QEMU killed under the router: every client sees the end of its
/// stream, and the router says the upstream is gone.
#[test]
fn qemu_killed_under_the_router_disconnects_every_client() {
    let mut peer = Qemu::start();
    let (_client, router, path) = router(&peer, RouterOptions::default());
    let mut a = Raw::negotiated(&path, false);
    let mut b = Raw::greeted(&path);
    a.write(r#"{"execute": "query-qmp-schema", "id": 1}"#);
    peer.kill();
    let _ = a.rest();
    assert_eq!(b.rest(), "");
    assert!(router.upstream_closed());
    router.stop();
    assert!(std::fs::symlink_metadata(&path).is_err());
}

#[test]
fn the_socket_is_private_and_removed_on_stop() {
    let peer = Qemu::start();
    let (_client, router, path) = router(&peer, RouterOptions::default());
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o777, 0o600);
    let mut a = Raw::negotiated(&path, false);
    let mut b = Raw::greeted(&path);
    assert_eq!(router.clients(), 2);
    router.stop();
    assert_eq!(a.rest(), "");
    assert_eq!(b.rest(), "");
    assert!(std::fs::symlink_metadata(&path).is_err());
}

#[test]
fn too_many_clients_are_turned_away() {
    let peer = Qemu::start();
    let opts = RouterOptions {
        max_clients: 2,
        ..RouterOptions::default()
    };
    let (_client, router, path) = router(&peer, opts);
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    router.on_turned_away(move |why| {
        let _ = tx.lock().unwrap().send(why.to_owned());
    });
    let mut a = Raw::negotiated(&path, false);
    let _b = Raw::greeted(&path);
    // The third is told why, instead of the greeting, and let go.
    let mut c = Raw::connect(&path);
    assert_eq!(
        c.rest(),
        "{\"error\": {\"class\": \"GenericError\", \"desc\": \"too many clients: this \
         server serves at most 2 clients at once\"}}\r\n"
    );
    assert_eq!(
        rx.recv_timeout(T).as_deref(),
        Ok("turned a client away: too many clients: this server serves at most 2 clients at once")
    );
    // Our client says so in a word, the server's error as the cause.
    let e = Client::connect(&Address::Unix(path.clone()), ClientOptions::default()).unwrap_err();
    assert_eq!(e.to_string(), "the server refused the session");
    assert_eq!(
        std::error::Error::source(&e)
            .map(|c| c.to_string())
            .as_deref(),
        Some("too many clients: this server serves at most 2 clients at once")
    );
    assert_eq!(
        a.send(r#"{"execute": "query-name", "id": 1}"#),
        "{\"return\": {}, \"id\": 1}\r\n"
    );
}

/// A client's replies come in the order of its requests, as QEMU gives
/// them: the errors the router answers itself (input that is not an
/// object, invalid UTF-8, a request that mixes `execute` and `exec-oob`)
/// wait behind the replies to the commands sent before them. The same
/// bytes, in the same order, as QEMU's own monitor gives.
#[test]
fn replies_keep_the_order_of_the_requests_as_qemus_do() {
    let peer = Qemu::start();
    let (_client, _router, path) = router(&peer, RouterOptions::default());
    let mut ours = Raw::negotiated(&path, false);
    let mut qemu = Raw::negotiated(&peer.path().join("b.sock"), false);
    let input: &[u8] = b"{\"execute\": \"query-qmp-schema\"}[1]{\"foo\": 1}\
        {\"execute\": \"query-name\"}{\"execute\": \"\x80\"}\"text\"\n\
        {\"execute\": \"query-qmp-schema\", \"id\": 1}\
        {\"execute\": \"query-status\", \"exec-oob\": \"x\", \"id\": 2}[3]\
        {\"execute\": \"query-status\", \"id\": \"last\"}";
    for raw in [&mut ours, &mut qemu] {
        raw.w.write_all(input).unwrap();
    }
    let mut last = String::new();
    for i in 0..10 {
        let (a, b) = (ours.line(), qemu.line());
        assert!(
            a == b,
            "reply {i}: through the router {a:.200}, from QEMU {b:.200}"
        );
        last = a;
    }
    assert!(last.contains("\"id\": \"last\""), "{last}");
}
