//! `qmp-mcp` driven by real MCP clients nobody here wrote: the MCP
//! Inspector's CLI (`@modelcontextprotocol/inspector` 0.17.5, one call per
//! process) and, for sessions of several calls, the official TypeScript
//! SDK's client it is built on (`tests/data/session.mjs`), both installed
//! by `scripts/install-deps.sh` at a fixed place (a test fails, never
//! skips, when they are missing). The VMs are real: QEMU with a second
//! monitor of the test's own (to cause events, and to check what the VM
//! did), and transient libvirt domains.
//!
//! Every client process has a hard time limit (killed, then a failure);
//! nothing waits by sleeping.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use qmp_test_support::peer::Peer;
use qmp_test_support::{libvirt, proc};

/// Where `scripts/install-deps.sh` installs the pinned Inspector.
const INSPECTOR_PREFIX: &str = "/opt/qmp-shell-tests/mcp-inspector-0.17.5";

/// Hard limit of one client process.
const T: Duration = Duration::from_secs(90);

fn inspector() -> PathBuf {
    let bin = Path::new(INSPECTOR_PREFIX).join("node_modules/.bin/mcp-inspector");
    assert!(
        bin.exists(),
        "the MCP Inspector is missing at {}: run scripts/install-deps.sh",
        bin.display()
    );
    bin
}

fn server() -> &'static str {
    env!("CARGO_BIN_EXE_qmp-mcp")
}

/// A private HOME (and cache) for the server, which caches schema facts.
fn home() -> TempDir {
    tempfile::Builder::new()
        .prefix("qmp-mcp-home-")
        .tempdir()
        .expect("tempdir")
}

/// Wait for `child` (killed past [`T`]); its standard output and error.
/// (Standard output read here unless the caller took it.)
fn finish(mut child: Child, what: &str) -> (std::process::ExitStatus, String, String) {
    let out = child.stdout.take();
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut out) = out {
            let _ = out.read_to_string(&mut s);
        }
        s
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > T {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {T:?}; killed");
        }
        thread::sleep(Duration::from_millis(10));
    };
    (
        status,
        out_reader.join().expect("stdout reader"),
        err_reader.join().expect("stderr reader"),
    )
}

/// Start the Inspector's CLI on `qmp-mcp SERVER_ARGS...` for `method`
/// (`--method ...` and what follows); do not wait.
fn spawn_inspector(home: &Path, server_args: &[&str], method: &[&str]) -> Child {
    Command::new(inspector())
        .arg("--cli")
        .arg(server())
        .args(server_args)
        .args(method)
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env_remove("QMP_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the MCP Inspector")
}

/// The Inspector's JSON answer to `method`.
fn inspect(home: &Path, server_args: &[&str], method: &[&str]) -> Value {
    let child = spawn_inspector(home, server_args, method);
    let (status, out, err) = finish(child, "the MCP Inspector");
    assert!(
        status.success(),
        "inspector {method:?}: {status}\n{out}\n{err}"
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}\n{err}"))
}

/// The `tools/call` arguments for `tool` with `args` (`key=value`, values
/// JSON when they parse as such, as the Inspector takes them).
fn call_args(tool: &str, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["--method", "tools/call", "--tool-name", tool]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if !args.is_empty() {
        v.push("--tool-arg".into());
        v.extend(args.iter().map(|s| s.to_string()));
    }
    v
}

/// Call `tool` through the Inspector on `qmp-mcp SERVER_ARGS...`.
fn call(home: &Path, server_args: &[&str], tool: &str, args: &[&str]) -> Value {
    let method = call_args(tool, args);
    let method: Vec<&str> = method.iter().map(String::as_str).collect();
    inspect(home, server_args, &method)
}

/// The text of a tool result (its text items, one per line).
fn text(result: &Value) -> String {
    result["content"]
        .as_array()
        .unwrap_or_else(|| panic!("no content: {result}"))
        .iter()
        .map(|c| c["text"].as_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_error(result: &Value) -> bool {
    result["isError"] == json!(true)
}

/// The first text item of a result, parsed as JSON.
fn json_of(result: &Value) -> Value {
    let first = result["content"][0]["text"].as_str().unwrap_or_default();
    serde_json::from_str(first).unwrap_or_else(|e| panic!("not JSON ({e}): {result}"))
}

/// QEMU (`-M none`: no CPU to burn the machine's cores, and `stop` and
/// `cont` work all the same) with two monitors: `qmp.sock` for the server,
/// `side.sock` for the test, both listening.
fn qemu() -> Peer {
    let peer = Peer::start(
        "qemu-system-x86_64",
        &[
            "-M",
            "none",
            "-display",
            "none",
            "-nodefaults",
            "-qmp",
            "unix:{DIR}/qmp.sock,server=on,wait=off",
            "-qmp",
            "unix:{DIR}/side.sock,server=on,wait=off",
        ],
        "qmp.sock",
    );
    // QEMU opens the monitors one after the other: `qmp.sock` accepting
    // does not mean `side.sock` is there yet.
    let side = peer.dir.path().join("side.sock");
    proc::wait_until("QEMU's side socket", T, || proc::listening(&side));
    peer
}

fn sock(peer: &Peer) -> &str {
    peer.socket.to_str().expect("utf-8 path")
}

/// The test's own monitor on `peer`'s `side.sock`: run `commands`
/// (JSON texts), return their replies (events skipped).
fn side(peer: &Peer, commands: &[&str]) -> Vec<Value> {
    let s = UnixStream::connect(peer.dir.path().join("side.sock")).expect("side socket");
    s.set_read_timeout(Some(T)).expect("timeout");
    let mut w = s.try_clone().expect("clone");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).expect("greeting");
    let mut replies = Vec::new();
    for cmd in std::iter::once(r#"{"execute":"qmp_capabilities"}"#).chain(commands.iter().copied())
    {
        w.write_all(cmd.as_bytes()).expect("write");
        loop {
            line.clear();
            assert!(r.read_line(&mut line).expect("reply") > 0, "side closed");
            let v: Value = serde_json::from_str(&line).expect("JSON");
            if v.get("event").is_none() {
                replies.push(v);
                break;
            }
        }
    }
    replies.remove(0);
    replies
}

/// The VM's status, through the side monitor.
fn status(peer: &Peer) -> String {
    side(peer, &[r#"{"execute":"query-status"}"#])[0]["return"]["status"]
        .as_str()
        .expect("status")
        .to_owned()
}

#[test]
fn tools_list_shows_the_six_tools_with_schemas_and_annotations() {
    let vm = qemu();
    let home = home();
    let listed = inspect(home.path(), &[sock(&vm)], &["--method", "tools/list"]);
    let tools = listed["tools"].as_array().expect("tools");
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "targets",
            "describe",
            "execute",
            "hmp",
            "wait_event",
            "jobs"
        ]
    );
    for t in tools {
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
        assert!(!t["description"].as_str().unwrap().is_empty());
        // Read-only by default: every tool says so, execute says why.
        assert_eq!(t["annotations"]["readOnlyHint"], true, "{t}");
    }
    assert_eq!(tools[2]["inputSchema"]["required"], json!(["command"]));
    assert_eq!(
        tools[2]["inputSchema"]["properties"]["arguments"]["type"],
        "object"
    );
    assert!(tools[2]["description"]
        .as_str()
        .unwrap()
        .contains("READ-ONLY"));
    assert_eq!(
        tools[4]["inputSchema"]["properties"]["timeout"]["maximum"],
        60.0
    );

    let listed = inspect(
        home.path(),
        &["--allow-writes", sock(&vm)],
        &["--method", "tools/list"],
    );
    for t in listed["tools"].as_array().unwrap() {
        let writer = matches!(t["name"].as_str(), Some("execute" | "hmp"));
        assert_eq!(t["annotations"]["readOnlyHint"], !writer, "{t}");
        if writer {
            assert_eq!(t["annotations"]["destructiveHint"], true, "{t}");
        }
    }
}

/// `execute query-status` answers; `execute stop` is refused under the
/// default, and the VM runs on (seen through the second monitor); with
/// `--allow-writes` it pauses the VM.
#[test]
fn execute_answers_refuses_stop_by_default_and_stops_with_allow_writes() {
    let vm = qemu();
    let home = home();
    let r = call(
        home.path(),
        &[sock(&vm)],
        "execute",
        &["command=query-status"],
    );
    assert!(!is_error(&r), "{r}");
    assert_eq!(json_of(&r)["return"]["status"], "running", "{r}");

    let r = call(home.path(), &[sock(&vm)], "execute", &["command=stop"]);
    assert!(is_error(&r), "{r}");
    assert!(
        text(&r).starts_with("refused: stop may change the VM and this server is read-only"),
        "{r}"
    );
    assert_eq!(status(&vm), "running");
    // HMP too: only `info`.
    let r = call(home.path(), &[sock(&vm)], "hmp", &["command_line=stop"]);
    assert!(is_error(&r) && text(&r).contains("refused"), "{r}");
    assert_eq!(status(&vm), "running");
    let r = call(
        home.path(),
        &[sock(&vm)],
        "hmp",
        &["command_line=info status"],
    );
    assert!(!is_error(&r), "{r}");
    assert_eq!(text(&r), "VM status: running\n");

    let r = call(
        home.path(),
        &["--allow-writes", sock(&vm)],
        "execute",
        &["command=stop"],
    );
    assert!(!is_error(&r), "{r}");
    assert_eq!(json_of(&r), json!({"return": {}}));
    assert_eq!(status(&vm), "paused");
}

/// `describe query-status` gives the members and their types; a prefix
/// lists names; an unknown name is an error result.
#[test]
fn describe_gives_members_and_types() {
    let vm = qemu();
    let home = home();
    let r = call(
        home.path(),
        &[sock(&vm)],
        "describe",
        &["name=query-status"],
    );
    assert!(!is_error(&r), "{r}");
    let t = text(&r);
    for needed in [
        "query-status",
        "running: bool",
        "singlestep: bool",
        "status: enum",
        "paused",
    ] {
        assert!(t.contains(needed), "{needed}: {t}");
    }
    let r = call(home.path(), &[sock(&vm)], "describe", &["name=query-bl"]);
    assert!(!is_error(&r), "{r}");
    assert!(
        text(&r).contains("  query-block\n  query-block-exports\n"),
        "{r}"
    );
    let r = call(home.path(), &[sock(&vm)], "describe", &["name=STOP"]);
    assert!(text(&r).contains("STOP (event)"), "{r}");
    let r = call(home.path(), &[sock(&vm)], "describe", &["name=zzz"]);
    assert!(is_error(&r), "{r}");
    assert!(text(&r).contains("no command or event named 'zzz'"), "{r}");
}

/// `wait_event STOP` returns the STOP raised on the other monitor during
/// the call. The test stops and resumes the VM from its own monitor until
/// the call returns (it cannot know when the server is waiting).
#[test]
fn wait_event_returns_an_event_raised_on_another_monitor() {
    let vm = qemu();
    let home = home();
    let method = call_args("wait_event", &["event=STOP", "timeout=30"]);
    let method: Vec<&str> = method.iter().map(String::as_str).collect();
    let mut child = spawn_inspector(home.path(), &[sock(&vm)], &method);
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        assert!(start.elapsed() < T, "wait_event never returned");
        side(&vm, &[r#"{"execute":"stop"}"#, r#"{"execute":"cont"}"#]);
    }
    let (status, out, err) = finish(child, "the MCP Inspector");
    assert!(status.success(), "{out}\n{err}");
    let r: Value = serde_json::from_str(&out).expect("JSON");
    assert!(!is_error(&r), "{r}");
    let ev = json_of(&r);
    assert_eq!(ev["event"], "STOP", "{r}");
    assert!(ev["timestamp"]["seconds"].is_u64(), "{r}");

    // None in time: an error result that says so; a filter that no event
    // matches; an event the VM does not have.
    let r = call(
        home.path(),
        &[sock(&vm)],
        "wait_event",
        &["event=RESET", "timeout=0.5"],
    );
    assert!(is_error(&r), "{r}");
    assert!(text(&r).starts_with("no RESET event from target"), "{r}");
    let r = call(
        home.path(),
        &[sock(&vm)],
        "wait_event",
        &["event=stop", "timeout=1"],
    );
    assert!(is_error(&r), "{r}");
    assert!(
        text(&r).contains("has no event named stop (did you mean STOP?)"),
        "{r}"
    );
    let r = call(
        home.path(),
        &[sock(&vm)],
        "wait_event",
        &["event=STOP", "timeout=61"],
    );
    assert!(is_error(&r) && text(&r).contains("at most 60"), "{r}");
}

/// Bad input: an unknown tool, `arguments` that is not an object, an
/// unknown target, a refused command, an unknown argument, a missing one:
/// each an error result that says what is wrong.
#[test]
fn bad_input_is_an_error_result_with_a_clear_text() {
    let vm = qemu();
    let home = home();
    let s = sock(&vm);
    for (tool, args, expected) in [
        (
            "nosuch",
            &[][..],
            "unknown tool `nosuch`; the tools are: targets, describe, execute, hmp, \
             wait_event, jobs",
        ),
        (
            "execute",
            &["command=query-status", "arguments=5"],
            "execute: `arguments` must be a JSON object ({\"name\": value, ...}), not the \
             number 5",
        ),
        (
            "execute",
            &["command=query-status", "arguments=[1,2]"],
            "execute: `arguments` must be a JSON object ({\"name\": value, ...}), not an array",
        ),
        (
            "execute",
            &["command=query-status", "target=vm9"],
            &format!("unknown target 'vm9'; the targets are: {s}"),
        ),
        (
            "execute",
            &["command=quit"],
            "refused: quit may change the VM and this server is read-only; it was not sent \
             (qmp-mcp --allow-writes lets every command through)",
        ),
        (
            "execute",
            &["command=query-status", "argumnets={}"],
            "execute: unknown argument `argumnets` (it takes: command, arguments, target)",
        ),
        ("execute", &[], "execute: `command` is required"),
        (
            "wait_event",
            &["event=STOP"],
            "wait_event: `timeout` (seconds, at most 60) is required",
        ),
    ] {
        let r = call(home.path(), &[s], tool, args);
        assert!(is_error(&r), "{tool} {args:?}: {r}");
        assert_eq!(text(&r), expected, "{tool} {args:?}");
    }
    // The VM was never touched.
    assert_eq!(status(&vm), "running");
}

/// A QMP error is an error result carrying QEMU's class and desc.
#[test]
fn a_qmp_error_carries_class_and_desc() {
    let vm = qemu();
    let home = home();
    let r = call(
        home.path(),
        &[sock(&vm)],
        "execute",
        &["command=query-nothing"],
    );
    assert!(is_error(&r), "{r}");
    assert_eq!(
        json_of(&r),
        json!({"error": {"class": "CommandNotFound",
                         "desc": "The command query-nothing has not been found"}})
    );
    let r = call(
        home.path(),
        &[sock(&vm)],
        "execute",
        &[
            "command=qom-get",
            r#"arguments={"path": "/nowhere", "property": "type"}"#,
        ],
    );
    assert!(is_error(&r), "{r}");
    assert_eq!(json_of(&r)["error"]["class"], "DeviceNotFound", "{r}");
}

/// What the schema marks deprecated or unstable is warned about in the
/// result, after the reply.
#[test]
fn deprecation_and_unstable_warnings_in_the_result() {
    let vm = qemu();
    let home = home();
    let r = call(
        home.path(),
        &[sock(&vm)],
        "execute",
        &["command=x-query-roms"],
    );
    assert!(!is_error(&r), "{r}");
    let items = r["content"].as_array().unwrap();
    assert!(
        items[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("{\"return\""),
        "{r}"
    );
    assert_eq!(
        items[1]["text"],
        "warning: command x-query-roms is unstable (QMP schema)"
    );
    let r = call(
        home.path(),
        &["--allow-writes", sock(&vm)],
        "execute",
        &["command=eject", r#"arguments={"device": "cd0"}"#],
    );
    assert!(is_error(&r), "{r}");
    assert_eq!(json_of(&r)["error"]["class"], "DeviceNotFound", "{r}");
    assert_eq!(
        r["content"][1]["text"],
        "warning: argument 'device' of eject is deprecated (QMP schema)"
    );
}

/// Two targets: `target` is required and chooses; `targets` lists both
/// with their QEMU version, and one that cannot be reached says why.
#[test]
fn two_targets_need_target() {
    let a = qemu();
    let b = qemu();
    let home = home();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    let missing = missing.to_str().unwrap();
    let args = [sock(&a), sock(&b)];
    let r = call(home.path(), &args, "execute", &["command=query-status"]);
    assert!(is_error(&r), "{r}");
    assert_eq!(
        text(&r),
        format!(
            "there are 2 targets: say which with `target` (one of: {}, {})",
            sock(&a),
            sock(&b)
        )
    );
    let target = format!("target={}", sock(&b));
    let r = call(
        home.path(),
        &args,
        "execute",
        &["command=query-status", &target],
    );
    assert_eq!(json_of(&r)["return"]["status"], "running", "{r}");

    let r = call(home.path(), &[sock(&a), missing], "targets", &[]);
    assert!(!is_error(&r), "{r}");
    let listed = json_of(&r);
    assert_eq!(listed["mode"], "read-only");
    let t = listed["targets"].as_array().unwrap();
    assert_eq!(t.len(), 2, "{listed}");
    assert_eq!(t[0]["target"], sock(&a));
    assert_eq!(t[0]["state"], "connected");
    assert!(
        t[0]["qemu"].as_str().unwrap().starts_with("7.2."),
        "{listed}"
    );
    assert_eq!(t[1]["target"], missing);
    assert_eq!(t[1]["state"], "unreachable");
    assert!(
        t[1]["error"]
            .as_str()
            .unwrap()
            .contains("Couldn't connect to"),
        "{listed}"
    );
}

/// A session of several calls (the official SDK client), with the server
/// kept alive between them.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    _home: TempDir,
}

impl Session {
    fn start(server_args: &[&str]) -> Session {
        let home = home();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/session.mjs");
        inspector();
        let mut child = Command::new("node")
            .arg(script)
            .arg(INSPECTOR_PREFIX)
            .arg(server())
            .args(server_args)
            .env("HOME", home.path())
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .env_remove("QMP_SOCKET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node");
        let stdin = child.stdin.take();
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut s = Session {
            child,
            stdin,
            lines: rx,
            _home: home,
        };
        assert_eq!(s.next(), json!({"connected": true}));
        s
    }

    fn next(&mut self) -> Value {
        let line = self.lines.recv_timeout(T).expect("an answer in time");
        serde_json::from_str(&line).expect("JSON")
    }

    fn call(&mut self, name: &str, arguments: Value) -> Value {
        let line = json!({"name": name, "arguments": arguments}).to_string() + "\n";
        self.stdin
            .as_mut()
            .expect("open")
            .write_all(line.as_bytes())
            .expect("write");
        self.next()
    }

    /// End the session; the client must exit (after closing the server).
    fn end(mut self) {
        self.stdin = None;
        let start = Instant::now();
        while self.child.try_wait().expect("try_wait").is_none() {
            assert!(start.elapsed() < T, "the session did not end");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A VM killed mid-session: the call that finds it gone says so, the other
/// target is served on, `targets` reports it, and a later call tries again
/// (and reconnects to a new QEMU on the same socket).
#[test]
fn a_vm_killed_mid_session_while_the_other_target_serves() {
    let mut a = qemu();
    let b = qemu();
    let (sa, sb) = (sock(&a).to_owned(), sock(&b).to_owned());
    let mut s = Session::start(&[&sa, &sb]);
    for t in [&sa, &sb] {
        let r = s.call("execute", json!({"command": "query-name", "target": t}));
        assert_eq!(json_of(&r), json!({"return": {}}), "{r}");
    }
    // A wait in progress on A when it dies ends at once, saying so.
    let waiting = {
        let line = json!({"name": "wait_event",
                          "arguments": {"event": "RESET", "timeout": 60, "target": sa}})
        .to_string()
            + "\n";
        s.stdin
            .as_mut()
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
        // The kill may come before the server even reads the call; then
        // the call finds the VM gone instead. Either way: an error that
        // says the target went away.
        // SAFETY: kill(2) on the QEMU this test started.
        unsafe { libc::kill(a.pid() as i32, libc::SIGKILL) };
        assert!(a.wait_exit(T));
        s.next()
    };
    assert!(is_error(&waiting), "{waiting}");
    let t = text(&waiting);
    assert!(
        t.contains(&format!("target {sa}")) && (t.contains("went away") || t.contains("lost")),
        "{t}"
    );
    let r = s.call("execute", json!({"command": "query-status", "target": sa}));
    assert!(is_error(&r), "{r}");
    assert!(text(&r).contains(&format!("target {sa}")), "{r}");
    let r = s.call("execute", json!({"command": "query-name", "target": sb}));
    assert_eq!(json_of(&r), json!({"return": {}}), "{r}");
    let r = s.call("targets", json!({}));
    let listed = json_of(&r);
    assert_eq!(listed["targets"][0]["state"], "unreachable", "{listed}");
    assert_eq!(listed["targets"][1]["state"], "connected", "{listed}");
    // A new QEMU on A's socket (A's directory is kept): the next call
    // connects to it.
    let a2 = qemu_at(&sa);
    let r = s.call("execute", json!({"command": "query-name", "target": sa}));
    assert_eq!(json_of(&r), json!({"return": {}}), "{r}");
    s.end();
    drop(a2);
    drop(a);
}

/// A QEMU of the test's own listening on `socket`; killed when dropped.
struct OwnQemu(Child);

impl Drop for OwnQemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn qemu_at(socket: &str) -> OwnQemu {
    let _ = std::fs::remove_file(socket);
    let child = Command::new("qemu-system-x86_64")
        .args(["-M", "none", "-display", "none", "-nodefaults", "-qmp"])
        .arg(format!("unix:{socket},server=on,wait=off"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start QEMU");
    let own = OwnQemu(child);
    proc::wait_until("QEMU's socket", T, || proc::listening(Path::new(socket)));
    own
}

/// `--domain NAME`: the domain's monitor through libvirt: `query-name`
/// gives its name, `targets` its version, a `virsh suspend` during
/// `wait_event` is its STOP; the taint note goes to standard error.
#[test]
fn domain_through_libvirt() {
    let dom = libvirt::TestDomain::start("mcp");
    let home = home();
    let args = ["--domain", dom.name.as_str()];
    let r = call(home.path(), &args, "execute", &["command=query-name"]);
    assert!(!is_error(&r), "{r}");
    assert_eq!(json_of(&r), json!({"return": {"name": dom.name}}));
    let r = call(home.path(), &args, "targets", &[]);
    let listed = json_of(&r);
    assert_eq!(
        listed["targets"][0]["target"],
        dom.name.as_str(),
        "{listed}"
    );
    assert_eq!(listed["targets"][0]["kind"], "domain", "{listed}");
    assert_eq!(listed["targets"][0]["state"], "connected", "{listed}");

    let method = call_args("wait_event", &["event=STOP", "timeout=30"]);
    let method: Vec<&str> = method.iter().map(String::as_str).collect();
    let mut child = spawn_inspector(home.path(), &args, &method);
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        assert!(start.elapsed() < T, "wait_event never returned");
        libvirt::virsh_ok(&["suspend", &dom.name]);
        libvirt::virsh_ok(&["resume", &dom.name]);
    }
    let (status, out, err) = finish(child, "the MCP Inspector");
    assert!(status.success(), "{out}\n{err}");
    let r: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json_of(&r)["event"], "STOP", "{r}");
    // By UUID too, and stop refused by default: the domain runs on.
    let (_, uuid) = dom.id_and_uuid();
    let r = call(
        home.path(),
        &["--domain", &uuid],
        "execute",
        &["command=stop"],
    );
    assert!(is_error(&r), "{r}");
    assert_eq!(
        libvirt::virsh_ok(&["domstate", &dom.name]).trim(),
        "running"
    );
}

/// The server's own exits: end of input (the client went) is 0, SIGTERM
/// 143 and SIGINT 130, with a target connected; nothing is left behind
/// and the VM's monitor is free again.
#[test]
fn end_of_input_and_signals_end_the_server() {
    let vm = qemu();
    // A client that goes before the session even begins.
    let early = home();
    let child = Command::new(server())
        .arg(sock(&vm))
        .env("HOME", early.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qmp-mcp");
    let (status, out, err) = finish(child, "qmp-mcp");
    assert_eq!(
        (status.code(), out.as_str(), err.as_str()),
        (Some(0), "", "")
    );
    for sig in [None, Some(libc::SIGTERM), Some(libc::SIGINT)] {
        let home = home();
        let mut child = Command::new(server())
            .arg(sock(&vm))
            .env("HOME", home.path())
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qmp-mcp");
        let mut stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        for msg in [
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"}}}),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "execute", "arguments": {"command": "query-status"}}}),
        ] {
            stdin.write_all(format!("{msg}\n").as_bytes()).unwrap();
        }
        let mut line = String::new();
        let mut answered = false;
        while !answered {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "server closed early");
            answered = line.contains("\"id\":2") && line.contains("running");
        }
        match sig {
            None => drop(stdin),
            Some(sig) => {
                // SAFETY: kill(2) on our own child.
                unsafe { libc::kill(child.id() as i32, sig) };
            }
        }
        let (status, rest, err) = finish(child, "qmp-mcp");
        assert_eq!(
            status.code(),
            Some(sig.map_or(0, |s| 128 + s)),
            "{rest}\n{err}"
        );
        assert_eq!(err, "", "{sig:?}");
        // The monitor is free: the side monitor is not needed to tell, the
        // server's own socket takes a new client.
        let s = UnixStream::connect(&vm.socket).expect("monitor free");
        s.set_read_timeout(Some(T)).unwrap();
        let mut greeting = String::new();
        BufReader::new(s).read_line(&mut greeting).unwrap();
        assert!(greeting.starts_with("{\"QMP\""), "{greeting}");
    }
}

/// A VM that stops answering (SIGSTOP): a call gives up after `--timeout`
/// with an error result that says so, and once the VM answers again the
/// next call is served on the same connection.
#[test]
fn a_vm_that_stops_answering_times_out_and_recovers() {
    let vm = qemu();
    let mut s = Session::start(&["--timeout", "1", sock(&vm)]);
    let r = s.call("execute", json!({"command": "query-name"}));
    assert_eq!(json_of(&r), json!({"return": {}}), "{r}");
    vm.freeze();
    let r = s.call("execute", json!({"command": "query-status"}));
    vm.thaw();
    assert!(is_error(&r), "{r}");
    assert_eq!(
        text(&r),
        format!(
            "no reply from target {} within 1 s (qmp-mcp --timeout); the command may still \
             be running in QEMU",
            sock(&vm)
        )
    );
    let r = s.call("execute", json!({"command": "query-name"}));
    assert_eq!(json_of(&r), json!({"return": {}}), "{r}");
    s.end();
}
