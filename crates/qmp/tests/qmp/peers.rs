//! Integration tests against real QMP peers: qemu-system-x86_64,
//! qemu-storage-daemon and qemu-ga.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use qmp_client::{
    command, Address, Client, ClientOptions, Error, Incoming, Listener, Object, Request,
};
use qmp_test_support::peer as common;
use qmp_test_support::stray;
use serde_json::Value;

const T: Option<Duration> = Some(Duration::from_secs(20));

fn connect(peer: &common::Peer) -> Client {
    Client::connect(
        &Address::Unix(peer.socket.clone()),
        ClientOptions::default(),
    )
    .expect("connect")
}

fn obj(text: &str) -> Object {
    serde_json::from_str(text).expect("test JSON")
}

/// Wait for an event named `name`, keeping everything seen.
fn wait_event(client: &Client, name: &str) -> Vec<Incoming> {
    let mut seen = Vec::new();
    while let Some(item) = client.next_incoming(T) {
        let done = matches!(&item, Incoming::Event(e) if e.name() == Some(name));
        seen.push(item);
        if done {
            return seen;
        }
    }
    panic!("no {name} event; saw {seen:?}");
}

#[test]
fn qemu_greeting_and_query_status() {
    let peer = common::qemu();
    let client = connect(&peer);
    let greeting = client.greeting().expect("greeting");
    let (major, _minor, _micro) = greeting.version().expect("version");
    assert!(major >= 2, "{:?}", greeting.body);
    assert!(greeting.capabilities().iter().any(|c| c == "oob"));

    let reply = client.execute("query-status", None, T).unwrap();
    assert!(!reply.is_error());
    assert!(reply.assigned_id);
    let status = reply
        .ret()
        .and_then(|r| r.get("status"))
        .and_then(Value::as_str);
    assert_eq!(status, Some("running"));
    assert!(reply.id().and_then(Value::as_u64).is_some());
    assert!(client.is_connected());
}

#[test]
fn qemu_error_reply_and_user_ids() {
    let peer = common::qemu();
    let client = connect(&peer);
    let reply = client.execute("no-such-command", None, T).unwrap();
    assert!(reply.is_error());
    assert_eq!(reply.error_class(), Some("CommandNotFound"));
    assert!(reply.error_desc().unwrap().contains("no-such-command"));

    let mut msg = command("query-name", None);
    msg.insert("id".into(), obj(r#"{"mine": [1, "two"]}"#).into());
    let reply = client.call(msg, T).unwrap();
    assert!(!reply.assigned_id);
    assert_eq!(
        reply.id(),
        Some(&Value::Object(obj(r#"{"mine": [1, "two"]}"#)))
    );

    // Bad arguments are an error reply, not a protocol error.
    let reply = client
        .execute("query-status", Some(obj(r#"{"bogus": 1}"#)), T)
        .unwrap();
    assert_eq!(reply.error_class(), Some("GenericError"));
}

#[test]
fn qemu_pipelining_100_requests() {
    let peer = common::qemu();
    let client = connect(&peer);
    let mut pending = Vec::new();
    for i in 0..100 {
        let mut msg = if i % 2 == 0 {
            command("query-status", None)
        } else {
            command("query-name", None)
        };
        if i % 3 == 0 {
            msg.insert("id".into(), Value::from(1000 + i));
        }
        pending.push((i, client.send(msg).unwrap()));
    }
    for (i, p) in pending {
        let id = p.id().clone();
        let reply = p.wait(T).unwrap();
        assert_eq!(reply.id(), Some(&id));
        assert_eq!(reply.assigned_id, i % 3 != 0);
        let ret = reply.ret().expect("return");
        if i % 2 == 0 {
            assert!(ret.get("status").is_some(), "{i}: {ret}");
        } else {
            assert!(ret.get("status").is_none(), "{i}: {ret}");
        }
    }
}

/// Without out-of-band execution and with `in_order`, QEMU gets the
/// client's in-band requests without the ids the client gives them, and
/// answers them in order: a hundred pipelined requests (some with the
/// caller's ids, some failing) each get their own reply; on the wire, ids
/// only on `qmp_capabilities` and where the caller gave one.
#[test]
fn qemu_in_order_requests_go_without_ids() {
    let peer = common::qemu();
    let log_path = peer.path().join("in-order.log");
    let opts = ClientOptions {
        oob: false,
        in_order: true,
        log: Some(Box::new(std::fs::File::create(&log_path).unwrap())),
        ..ClientOptions::default()
    };
    let client = Client::connect(&Address::Unix(peer.socket.clone()), opts).unwrap();
    assert!(!client.oob_enabled());
    let mine = |i: usize| Value::from(format!("mine-{i}"));
    let mut pending = Vec::new();
    for i in 0..100 {
        let mut msg = match i % 3 {
            0 => command("query-status", None),
            1 => command("query-name", None),
            _ => command("no-such-command", None),
        };
        if i % 7 == 0 {
            msg.insert("id".into(), mine(i));
        }
        pending.push((i, client.send(msg).unwrap()));
    }
    for (i, p) in pending {
        let reply = p.wait(T).unwrap();
        assert_eq!(reply.assigned_id, i % 7 != 0, "{i}");
        assert_eq!(reply.id(), (i % 7 == 0).then(|| mine(i)).as_ref(), "{i}");
        match i % 3 {
            0 => assert!(
                reply.ret().is_some_and(|r| r.get("status").is_some()),
                "{i}"
            ),
            1 => assert!(
                reply.ret().is_some_and(|r| r.get("status").is_none()),
                "{i}"
            ),
            _ => assert_eq!(reply.error_class(), Some("CommandNotFound"), "{i}"),
        }
    }
    assert!(client.drain_notices().is_empty());
    let text = std::fs::read_to_string(&log_path).unwrap();
    let sent: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("{\"execute\""))
        .collect();
    assert_eq!(sent.len(), 101, "{text}");
    assert_eq!(sent[0], r#"{"execute":"qmp_capabilities","id":1}"#);
    for (i, line) in sent[1..].iter().enumerate() {
        assert_eq!(line.contains("\"id\""), i % 7 == 0, "{line}");
    }
}

#[test]
fn qemu_shared_between_threads() {
    let peer = common::qemu();
    let client = Arc::new(connect(&peer));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let client = Arc::clone(&client);
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let r = client.execute("query-status", None, T).unwrap();
                    assert!(r.ret().is_some());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn qemu_stop_event_and_notify() {
    let peer = common::qemu();
    let client = connect(&peer);
    let notified = Arc::new(AtomicUsize::new(0));
    let n = Arc::clone(&notified);
    client.set_notify(Arc::new(move || {
        n.fetch_add(1, Ordering::SeqCst);
    }));
    let reply = client.execute("stop", None, T).unwrap();
    assert!(reply.ret().is_some(), "{:?}", reply.body);
    let seen = wait_event(&client, "STOP");
    assert!(notified.load(Ordering::SeqCst) >= 1);
    // The event has the usual shape.
    let Some(Incoming::Event(ev)) = seen.last() else {
        panic!()
    };
    assert!(ev.body.get("timestamp").is_some());

    // drain_incoming returns RESUME once it has been queued: the notify
    // callback tells when something arrived (bounded by T, no polling
    // clock; it also fires for replies, so the loop drains again).
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    client.set_notify(Arc::new(move || {
        let _ = tx.lock().unwrap().send(());
    }));
    let reply = client.execute("cont", None, T).unwrap();
    assert!(reply.ret().is_some(), "{:?}", reply.body);
    let mut drained = Vec::new();
    loop {
        drained.extend(client.drain_incoming());
        if drained
            .iter()
            .any(|i| matches!(i, Incoming::Event(e) if e.name() == Some("RESUME")))
        {
            break;
        }
        assert!(
            rx.recv_timeout(T.unwrap()).is_ok(),
            "nothing more was queued, and no RESUME among {drained:?}"
        );
    }
    // Only RESUME arrived after `cont`.
    assert!(
        drained
            .iter()
            .all(|i| matches!(i, Incoming::Event(e) if e.name() == Some("RESUME"))),
        "{drained:?}"
    );
}

#[test]
fn qemu_quit_disconnects() {
    let mut peer = common::qemu();
    let client = connect(&peer);
    let reply = client.execute("quit", None, T).unwrap();
    assert!(reply.ret().is_some());
    wait_event(&client, "SHUTDOWN");
    // After EOF, the queue ends and sends fail.
    while client.next_incoming(T).is_some() {}
    assert!(!client.is_connected());
    assert!(matches!(
        client.execute("query-status", None, T),
        Err(Error::Disconnected)
    ));
    assert!(peer.wait_exit(Duration::from_secs(20)));
}

#[test]
fn qemu_close_fails_waiters() {
    let peer = common::qemu();
    let client = Arc::new(connect(&peer));
    // QEMU is frozen, so the command cannot have been answered when the
    // client is closed: the waiter must get Disconnected.
    peer.freeze();
    let p = client.send(command("query-status", None)).unwrap();
    client.close();
    let outcome = p.wait(T);
    peer.thaw();
    assert!(matches!(outcome, Err(Error::Disconnected)), "{outcome:?}");
    assert!(!client.is_connected());
    assert!(matches!(
        client.send(command("query-status", None)),
        Err(Error::Disconnected)
    ));
}

#[test]
fn qemu_large_reply_and_size_limit() {
    let peer = common::qemu();
    let client = connect(&peer);
    let reply = client.execute("query-qmp-schema", None, T).unwrap();
    let schema = reply.ret().and_then(Value::as_array).expect("array");
    assert!(schema.len() > 100);
    drop(client);

    let opts = ClientOptions {
        max_message: 8192,
        ..ClientOptions::default()
    };
    let client = Client::connect(&Address::Unix(peer.socket.clone()), opts).unwrap();
    match client.execute("query-qmp-schema", None, T) {
        Err(Error::Protocol(reason)) => assert!(reason.to_string().contains("8192"), "{reason}"),
        r => panic!("{r:?}"),
    }
    // The stream stays usable after the oversized reply.
    let reply = client.execute("query-status", None, T).unwrap();
    assert!(reply.ret().is_some());
    assert!(client.drain_incoming().is_empty());
}

/// The cap on one message: 256 MiB unless configured, and applied to the
/// message's exact size (its JSON text, without the line end). A reply of
/// exactly the cap passes; with a cap one byte smaller, the same reply is a
/// protocol error and the connection stays usable.
#[test]
fn message_cap_default_and_exact_boundary() {
    assert_eq!(ClientOptions::default().max_message, 256 << 20);

    let peer = common::qemu();
    // The size of the `query-commands` reply, as QEMU writes it: logged as
    // received, without the line end.
    let log_path = peer.path().join("sizes.log");
    let opts = ClientOptions {
        log: Some(Box::new(std::fs::File::create(&log_path).unwrap())),
        ..ClientOptions::default()
    };
    let client = Client::connect(&Address::Unix(peer.socket.clone()), opts).unwrap();
    let reply = client.execute("query-commands", None, T).unwrap();
    assert!(reply.ret().is_some());
    drop(client);
    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 5, "{log}");
    let size = lines[4].len();
    assert!(size > 1000, "{}", lines[4]);
    // The greeting and the other replies are much smaller.
    assert!(lines[..4].iter().all(|l| l.len() < size), "{log}");

    // The same session (same ids, same bytes) with the cap at `size`...
    let capped = |cap: usize| {
        let opts = ClientOptions {
            max_message: cap,
            ..ClientOptions::default()
        };
        Client::connect(&Address::Unix(peer.socket.clone()), opts).unwrap()
    };
    let client = capped(size);
    let reply = client.execute("query-commands", None, T).unwrap();
    assert!(reply.ret().and_then(Value::as_array).is_some());
    drop(client);
    // ...and one byte below it.
    let client = capped(size - 1);
    match client.execute("query-commands", None, T) {
        Err(Error::Protocol(reason)) => {
            assert!(
                reason.to_string().contains(&(size - 1).to_string()),
                "{reason}"
            )
        }
        r => panic!("expected the reply to be refused, got {r:?}"),
    }
    let reply = client.execute("query-status", None, T).unwrap();
    assert!(reply.ret().is_some());
}

/// A client of `peer` logging its traffic to a file in the peer's
/// directory, and that file's path.
fn logged_client(peer: &common::Peer) -> (Client, std::path::PathBuf) {
    let log_path = peer.path().join("traffic.log");
    let opts = ClientOptions {
        log: Some(Box::new(std::fs::File::create(&log_path).unwrap())),
        ..ClientOptions::default()
    };
    let client = Client::connect(&Address::Unix(peer.socket.clone()), opts).unwrap();
    (client, log_path)
}

/// `query-qmp-schema` (200 KB) asked with `text_reply`: kept as the text
/// QEMU sent, read the same as the tree of the same reply; logged as any
/// reply (and not when the request is unlogged); small replies and
/// requests that did not ask come as trees.
#[test]
fn qemu_schema_reply_kept_as_text_when_asked() {
    let peer = common::qemu();
    let (client, log_path) = logged_client(&peer);
    let ask = |request: Request| client.submit(request).unwrap().wait(T).unwrap();
    let schema = || Request::new(command("query-qmp-schema", None));

    let kept = ask(schema().text_reply());
    let text = kept.text().expect("the schema kept as text").to_owned();
    assert!(text.len() > 100_000, "{}", text.len());
    assert!(kept.assigned_id && !kept.is_error());
    assert!(!kept.body.contains_key("return"), "{:?}", kept.body);
    let tree = ask(schema());
    assert!(tree.text().is_none());
    assert!(tree.ret().is_some_and(Value::is_array));
    assert_eq!(kept.ret(), tree.ret());
    let id = kept.id().cloned().unwrap();
    let mut body = kept.into_body();
    assert_eq!(body.get("id"), Some(&id));
    body.insert("id".into(), tree.id().unwrap().clone());
    assert_eq!(body, tree.body);
    // Exactly what QEMU sent.
    assert_eq!(serde_json::from_str::<Object>(&text).unwrap(), {
        let mut b = body.clone();
        b.insert("id".into(), id);
        b
    });

    let hidden = ask(schema().text_reply().unlogged());
    assert!(hidden.text().is_some());
    let small = ask(Request::new(command("query-status", None)).text_reply());
    assert!(small.text().is_none() && small.ret().is_some());

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.lines().any(|l| l == text),
        "the kept reply is logged as received"
    );
    let schemas = log.lines().filter(|l| l.contains("\"meta-type\"")).count();
    assert_eq!(schemas, 2, "the unlogged one is not");
}

#[test]
fn qemu_log_file_gets_every_line() {
    let peer = common::qemu();
    let (client, log_path) = logged_client(&peer);
    client.execute("query-status", None, T).unwrap();
    let mut msg = command("query-name", None);
    msg.insert("id".into(), Value::from(7));
    client.call(msg, T).unwrap();
    // Logged before the reply is routed, so it is complete now.
    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7, "{text}");
    assert!(lines[0].starts_with("{\"QMP\": {"), "{}", lines[0]);
    assert_eq!(
        lines[1],
        r#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]},"id":1}"#
    );
    assert_eq!(lines[2], r#"{"return": {}, "id": 1}"#);
    assert_eq!(lines[3], r#"{"execute":"query-status","id":2}"#);
    assert!(lines[4].contains("\"running\""));
    assert_eq!(lines[5], r#"{"execute":"query-name","id":7}"#);
    assert!(lines[6].ends_with("\"id\": 7}"), "{}", lines[6]);
    assert!(lines.iter().all(|l| !l.ends_with('\r')));
    for l in lines {
        serde_json::from_str::<Value>(l).unwrap();
    }
}

#[test]
fn storage_daemon_session() {
    let peer = common::storage_daemon();
    let client = connect(&peer);
    assert!(client.greeting().and_then(|g| g.version()).is_some());
    let reply = client.execute("query-version", None, T).unwrap();
    assert!(reply.ret().and_then(|r| r.get("qemu")).is_some());
    let reply = client
        .execute(
            "human-monitor-command",
            Some(obj(r#"{"command-line": "info status"}"#)),
            T,
        )
        .unwrap();
    assert_eq!(reply.error_class(), Some("CommandNotFound"));
    let reply = client
        .execute(
            "blockdev-add",
            Some(obj(r#"{"driver": "null-co", "node-name": "n0"}"#)),
            T,
        )
        .unwrap();
    assert!(reply.ret().is_some(), "{:?}", reply.body);
    let reply = client.execute("query-named-block-nodes", None, T).unwrap();
    assert!(reply.ret().unwrap().to_string().contains("\"n0\""));
}

#[test]
fn guest_agent_without_greeting() {
    let peer = common::guest_agent();
    let opts = ClientOptions {
        read_greeting: false,
        negotiate: false,
        ..ClientOptions::default()
    };
    let client = Client::connect(&Address::Unix(peer.socket.clone()), opts).unwrap();
    assert!(client.greeting().is_none());
    let reply = client.execute("guest-ping", None, T).unwrap();
    assert_eq!(reply.ret(), Some(&Value::Object(Object::new())));
    let reply = client.execute("guest-info", None, T).unwrap();
    assert!(reply.ret().and_then(|r| r.get("version")).is_some());
    // A blocked command is an error reply.
    let reply = client
        .execute(
            "guest-file-open",
            Some(obj(r#"{"path": "/etc/hostname"}"#)),
            T,
        )
        .unwrap();
    assert!(reply.is_error(), "{:?}", reply.body);
}

#[test]
fn guest_agent_with_default_options_times_out_on_greeting() {
    let peer = common::guest_agent();
    let opts = ClientOptions {
        greeting_timeout: Some(Duration::from_millis(300)),
        ..ClientOptions::default()
    };
    let err = Client::connect(&Address::Unix(peer.socket.clone()), opts).unwrap_err();
    assert!(matches!(err, Error::NoGreeting(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "no greeting: this looks like a guest agent, which sends none (use -N)"
    );
}

#[test]
fn guest_agent_resync_is_a_best_effort() {
    // An agent that refuses guest-sync-delimited: a warning, and the
    // session goes on.
    let peer = common::guest_agent_blocking("guest-sync-delimited");
    let opts = ClientOptions {
        read_greeting: false,
        negotiate: false,
        guest_sync: true,
        ..ClientOptions::default()
    };
    let client = Client::connect(&Address::Unix(peer.socket.clone()), opts).unwrap();
    match client.drain_incoming().as_slice() {
        [Incoming::Warning(w)] => assert!(
            w.starts_with("guest agent resynchronisation (guest-sync-delimited) failed: ")
                && w.contains("has been disabled")
                && w.ends_with("; carrying on without it"),
            "{w}"
        ),
        other => panic!("{other:?}"),
    }
    let reply = client.execute("guest-ping", None, T).unwrap();
    assert_eq!(reply.ret(), Some(&Value::Object(Object::new())));
}

#[test]
fn guest_agent_option_on_a_qmp_monitor_says_so_quickly() {
    let peer = common::qemu();
    let opts = ClientOptions {
        read_greeting: false,
        negotiate: false,
        guest_sync: true,
        // Far longer than the test may take: the greeting ends the wait.
        greeting_timeout: Some(Duration::from_secs(600)),
        ..ClientOptions::default()
    };
    let client = Client::connect(&Address::Unix(peer.socket.clone()), opts).unwrap();
    let items = client.drain_incoming();
    assert!(
        items
            .iter()
            .any(|i| matches!(i, Incoming::Warning(w) if w.contains("not a guest agent"))),
        "{items:?}"
    );
}

#[test]
fn qemu_negotiates_oob_when_offered() {
    let peer = common::qemu();
    let client = connect(&peer);
    assert!(client.oob_enabled());
    let reply = client
        .call(obj(r#"{"exec-oob": "query-yank"}"#), T)
        .unwrap();
    assert!(reply.ret().is_some(), "{:?}", reply.body);
    let opts = ClientOptions {
        oob: false,
        ..ClientOptions::default()
    };
    drop(client);
    let client = Client::connect(&Address::Unix(peer.socket.clone()), opts).unwrap();
    assert!(!client.oob_enabled());
}

#[test]
fn connect_errors_keep_the_os_error() {
    let os_error = |e: Error| match e {
        Error::Io(e) => e.raw_os_error(),
        other => panic!("{other:?}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    let err = Client::connect(&Address::Unix(missing), ClientOptions::default()).unwrap_err();
    assert_eq!(os_error(err), Some(libc::ENOENT));

    // A socket file nobody listens on.
    let stale = dir.path().join("stale.sock");
    common::dead_socket(&stale);
    let err = Client::connect(&Address::Unix(stale), ClientOptions::default()).unwrap_err();
    assert_eq!(os_error(err), Some(libc::ECONNREFUSED));
}

#[test]
fn listener_accepts_qemu_in_client_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrap.sock");
    let listener = Listener::bind(&path).unwrap();
    let child = Command::new("qemu-system-x86_64")
        .args(["-M", "none", "-display", "none", "-nodefaults", "-qmp"])
        .arg(format!("unix:{}", path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(child);
    let stream = listener
        .accept(Duration::from_secs(20), &mut || {
            matches!(child.0.try_wait(), Ok(Some(_)))
        })
        .unwrap()
        .expect("QEMU connected");
    let client = Client::from_unix_stream(stream, ClientOptions::default()).unwrap();
    assert!(client.greeting().is_some());
    let reply = client.execute("query-status", None, T).unwrap();
    assert!(reply.ret().is_some());
    client.execute("quit", None, T).unwrap();
    drop(client);
    let status = child.0.wait().unwrap();
    assert!(status.success());
}

#[test]
fn listener_gives_up_when_child_exits() {
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::bind(&dir.path().join("w.sock")).unwrap();
    // `false` exits at once without connecting.
    let mut child = Command::new("false").spawn().unwrap();
    let r = listener
        .accept(Duration::from_secs(20), &mut || {
            matches!(child.try_wait(), Ok(Some(_)))
        })
        .unwrap();
    assert!(r.is_none());
}

/// A reply without an id is not ours: the next session's negotiation and
/// first command get their own replies, and the stray one is dropped with
/// one warning, never taken for the answer to a request.
#[test]
fn a_stray_reply_from_a_client_that_left_is_not_taken_for_ours() {
    let peer = common::qemu();
    let mut strays = 0;
    for _ in 0..stray::TRIES {
        let client = stray::after_a_stray_reply(&peer.socket, || connect(&peer));
        let reply = client.execute("query-status", None, T).unwrap();
        assert_eq!(
            reply.ret().and_then(|r| r.get("status")),
            Some(&Value::from("running")),
            "{:?}",
            reply.body
        );
        let notices = client.drain_notices();
        for notice in &notices {
            match notice {
                Incoming::Warning(w) if w.starts_with(qmp_client::client::STRAY_REPLY) => {
                    assert!(w.contains("\"return\":[{"), "{w}");
                    strays += 1;
                }
                other => panic!("unexpected {other:?} (all: {notices:?})"),
            }
        }
        assert!(notices.len() <= 1, "{notices:?}");
        client.close();
        if strays > 0 {
            return;
        }
    }
    panic!(
        "QEMU never passed on a stray reply in {} tries",
        stray::TRIES
    );
}
