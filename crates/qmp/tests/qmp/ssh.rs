//! The ssh transport against a real sshd on 127.0.0.1 and a real QEMU:
//! QMP through `ssh://`, and each way it can fail.

use std::io::{self, BufRead, BufReader};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::Duration;

use qmp_client::transport::ssh::{SshError, SshErrorKind, SshMonitor, SshOptions, SshTransport};
use qmp_client::transport::{Closer, Received, Sink, Transport};
use qmp_client::{Address, Object};
use qmp_test_support::peer as common;
use qmp_test_support::silent;
use qmp_test_support::sshd::{Sshd, HOST};
use serde_json::Value;

/// Bound on every wait.
const T: Duration = Duration::from_secs(20);

fn opts(command: &str) -> SshOptions {
    SshOptions {
        timeout: Some(T),
        ..SshOptions::with_command_line(command).expect("ssh command")
    }
}

fn connect(sshd: &Sshd, socket: &Path) -> io::Result<SshTransport> {
    SshTransport::connect_with(&opts(&sshd.ssh_command()), None, HOST, None, socket)
}

fn obj(text: &str) -> Object {
    serde_json::from_str(text).expect("test JSON")
}

fn ssh_kind(err: &io::Error) -> Option<SshErrorKind> {
    SshError::from_io(err).map(SshError::kind)
}

/// A split transport whose source is read by a thread, so that every wait
/// is bounded.
struct Session {
    sink: Box<dyn Sink>,
    closer: Closer,
    rx: Receiver<io::Result<Option<Received>>>,
    reader: Option<JoinHandle<()>>,
}

impl Session {
    fn new(transport: SshTransport) -> Session {
        let halves = Box::new(transport).split().expect("split");
        let mut source = halves.source;
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || loop {
            let item = source.receive(&mut |_| {});
            let end = !matches!(item, Ok(Some(_)));
            if tx.send(item).is_err() || end {
                break;
            }
        });
        Session {
            sink: halves.sink,
            closer: halves.closer,
            rx,
            reader: Some(reader),
        }
    }

    /// The next thing the source returned.
    fn next(&self) -> io::Result<Option<Received>> {
        self.rx
            .recv_timeout(T)
            .unwrap_or_else(|_| panic!("nothing received within {T:?}"))
    }

    fn next_object(&self) -> Object {
        match self.next() {
            Ok(Some(Received::Frame(Ok(obj)))) => obj,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    fn send(&mut self, text: &str) {
        let msg = obj(text);
        self.sink
            .send(&msg, &qmp_client::encode(&msg), &[])
            .expect("send");
    }

    /// Read the greeting and negotiate.
    fn negotiate(&mut self) -> Object {
        let greeting = self.next_object();
        assert!(greeting.contains_key("QMP"), "{greeting:?}");
        self.send(r#"{"execute": "qmp_capabilities"}"#);
        assert_eq!(self.next_object(), obj(r#"{"return": {}}"#));
        greeting
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        (self.closer)();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Whether process `pid` has exited (zombie or gone), waiting up to `T`
/// for it: a pidfd becomes readable when the process exits.
fn exits_within(pid: u32, timeout: Duration) -> bool {
    // SAFETY: pidfd_open(2) returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        // No such process: it is gone (and reaped).
        return io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // SAFETY: the descriptor was just created and is ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut pfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll(2) on one live descriptor.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    n == 1
}

/// Whether `pid` names no process at all (exited and reaped).
fn gone(pid: u32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

#[test]
fn greeting_negotiation_and_query_status_through_ssh() {
    let qemu = common::qemu();
    let sshd = Sshd::start();
    let text = format!("ssh://root@{HOST}{}", qemu.socket.display());
    let addr: Address = text.parse().expect("ssh address");
    let transport =
        SshTransport::connect_address(&addr, &opts(&sshd.ssh_command())).expect("connect");
    assert!(!transport.passes_fds());
    let mut s = Session::new(transport);

    let greeting = s.negotiate();
    let version = &greeting["QMP"]["version"]["qemu"]["major"];
    assert!(version.as_u64().is_some_and(|v| v >= 2), "{greeting:?}");

    s.send(r#"{"execute": "query-status", "id": 7}"#);
    let reply = s.next_object();
    assert_eq!(reply["id"], 7);
    assert_eq!(reply["return"]["status"], "running", "{reply:?}");
    // sshd saw our key.
    assert!(
        sshd.log()
            .iter()
            .any(|l| l.starts_with("Accepted publickey for root")),
        "{:?}",
        sshd.log()
    );
}

#[test]
fn remote_paths_with_colons_percents_and_backslashes_arrive_intact() {
    let qemu = common::qemu();
    let sshd = Sshd::start();
    // ssh's -L syntax splits at ':', unescapes '\\' and expands '%' tokens.
    let odd = sshd.dir().join("a:b%h\\c %%d");
    std::os::unix::fs::symlink(qemu.path(), &odd).expect("symlink");
    let mut s = Session::new(connect(&sshd, &odd.join("qmp.sock")).expect("connect"));
    s.negotiate();
    s.send(r#"{"execute": "query-status", "id": 1}"#);
    assert_eq!(s.next_object()["return"]["status"], "running");
}

#[test]
fn events_arrive_through_ssh() {
    let qemu = common::qemu();
    let sshd = Sshd::start();
    let mut s = Session::new(connect(&sshd, &qemu.socket).expect("connect"));
    s.negotiate();
    s.send(r#"{"execute": "stop", "id": 1}"#);
    s.send(r#"{"execute": "cont", "id": 2}"#);
    let mut seen = Vec::new();
    while !(seen
        .iter()
        .any(|m: &Object| m.get("event") == Some(&Value::from("RESUME")))
        && seen.iter().any(|m| m.get("id") == Some(&Value::from(2))))
    {
        seen.push(s.next_object());
    }
    let events: Vec<&str> = seen
        .iter()
        .filter_map(|m| m.get("event").and_then(Value::as_str))
        .collect();
    assert_eq!(events, ["STOP", "RESUME"], "{seen:?}");
    assert!(seen.iter().all(|m| !m.contains_key("error")), "{seen:?}");
}

#[test]
fn a_key_the_server_does_not_know_fails_authentication() {
    let qemu = common::qemu();
    let sshd = Sshd::start();
    let config = sshd.write_config("wrong_key_config", &sshd.other_key());
    let err = SshTransport::connect_with(
        &opts(&sshd.command_with(&config)),
        None,
        HOST,
        None,
        &qemu.socket,
    )
    .expect_err("the wrong key must be refused");
    assert_eq!(ssh_kind(&err), Some(SshErrorKind::Authentication), "{err}");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    let text = err.to_string();
    assert!(
        text.starts_with("ssh: authentication failed: root@127.0.0.1: Permission denied ("),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
}

#[test]
fn a_changed_host_key_fails_verification() {
    let qemu = common::qemu();
    let sshd = Sshd::start();
    // known_hosts says the server's key is another one.
    let other = std::fs::read_to_string(sshd.other_key().with_extension("pub")).unwrap();
    let mut fields = other.split_whitespace();
    let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
    let known = sshd.dir().join("known_hosts");
    std::fs::write(&known, format!("[127.0.0.1]:{} {kind} {key}\n", sshd.port)).unwrap();
    let command = format!(
        "{} -o StrictHostKeyChecking=yes -o UserKnownHostsFile={}",
        sshd.ssh_command(),
        known.display()
    );
    let err = SshTransport::connect_with(&opts(&command), None, HOST, None, &qemu.socket)
        .expect_err("a changed host key must be refused");
    assert_eq!(ssh_kind(&err), Some(SshErrorKind::HostKey), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "ssh: host key verification failed for {HOST}: Host key for [127.0.0.1]:{} has changed",
            sshd.port
        )),
        "{text}"
    );
    assert!(text.contains("Offending ED25519 key in"), "{text}");
    assert!(!text.contains('\n'), "{text}");
}

#[test]
fn a_missing_remote_socket_is_reported_by_the_source() {
    let sshd = Sshd::start();
    let missing = sshd.dir().join("no-such.sock");
    // ssh logs in; the socket is opened when the connection arrives.
    let transport = connect(&sshd, &missing).expect("ssh logs in");
    let monitor = transport.monitor();
    let s = Session::new(transport);
    let err = s.next().expect_err("end of stream with ssh's reason");
    assert_eq!(ssh_kind(&err), Some(SshErrorKind::RemoteSocket), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "ssh: cannot open the socket {} on {HOST} (it does not exist, nothing listens on it, \
             or the server forbids socket forwarding): channel ",
            missing.display()
        )) && text.ends_with("open failed: connect failed: open failed"),
        "{text}"
    );
    assert_eq!(
        monitor.failure().map(|e| e.kind()),
        Some(SshErrorKind::RemoteSocket)
    );
}

#[test]
fn a_refusing_remote_socket_is_reported_by_the_source() {
    let sshd = Sshd::start();
    let dead = sshd.dir().join("dead.sock");
    common::dead_socket(&dead);
    let s = Session::new(connect(&sshd, &dead).expect("ssh logs in"));
    let err = s.next().expect_err("end of stream with ssh's reason");
    assert_eq!(ssh_kind(&err), Some(SshErrorKind::RemoteSocket), "{err}");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
}

#[test]
fn a_server_without_socket_forwarding_says_so() {
    let qemu = common::qemu();
    let sshd = Sshd::start_with(&["AllowStreamLocalForwarding=no"]);
    let s = Session::new(connect(&sshd, &qemu.socket).expect("ssh logs in"));
    let err = s.next().expect_err("forwarding refused");
    // sshd gives the same reason as for a missing socket.
    assert_eq!(ssh_kind(&err), Some(SshErrorKind::RemoteSocket), "{err}");
    assert!(
        err.to_string()
            .contains("or the server forbids socket forwarding"),
        "{err}"
    );
}

#[test]
fn an_unreachable_port_is_reported_at_connect() {
    let sshd = Sshd::start();
    // Port 1 on 127.0.0.1: nothing listens there.
    let err = SshTransport::connect_with(
        &opts(&sshd.ssh_command()),
        None,
        HOST,
        Some(1),
        Path::new("/q.sock"),
    )
    .expect_err("nothing listens on port 1");
    assert_eq!(ssh_kind(&err), Some(SshErrorKind::Unreachable), "{err}");
    assert_eq!(
        err.to_string(),
        "ssh: connect to host 127.0.0.1 port 1: Connection refused"
    );
}

/// A host that takes the TCP connection and never speaks SSH: ssh would
/// wait for its greeting for ever; the transport gives up after its
/// timeout, with one line, and ssh is killed and reaped before it returns.
#[test]
fn a_host_that_never_speaks_ssh_times_out_and_ssh_is_reaped() {
    let peer = silent::SilentPeer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("ssh.pid");
    let opts = SshOptions {
        timeout: Some(Duration::from_secs(1)),
        ..SshOptions::with_command_line(&silent::SilentPeer::ssh_command(Some(&pid_file)))
            .expect("ssh command")
    };
    let err = SshTransport::connect_with(
        &opts,
        None,
        "127.0.0.1",
        Some(peer.port),
        Path::new("/q.sock"),
    )
    .expect_err("nobody speaks SSH there");
    assert_eq!(ssh_kind(&err), Some(SshErrorKind::Timeout), "{err}");
    assert_eq!(
        err.to_string(),
        "ssh: no connection to 127.0.0.1 within 1 s"
    );
    assert_eq!(peer.accepted(), 1);
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("the wrapper wrote ssh's pid")
        .trim()
        .parse()
        .expect("a pid");
    assert!(gone(pid), "ssh {pid} is still there (or a zombie)");
}

#[test]
fn closing_the_transport_stops_and_reaps_ssh() {
    let qemu = common::qemu();
    let sshd = Sshd::start();
    let transport = connect(&sshd, &qemu.socket).expect("connect");
    let monitor: SshMonitor = transport.monitor();
    let pid = monitor.pid();
    assert!(!gone(pid));
    let mut s = Session::new(transport);
    s.negotiate();

    (s.closer)();
    // The closer returns once ssh is reaped: no process, no zombie.
    assert!(gone(pid), "ssh {pid} still exists after close");
    assert!(monitor.exit_status().is_some());
    // The blocked reader saw a plain end of stream, not an error.
    assert!(matches!(s.next(), Ok(None)));
    assert!(monitor.failure().is_none());
    // Later sends fail; closing again is harmless.
    let msg = obj(r#"{"execute": "query-status"}"#);
    assert!(s.sink.send(&msg, &qmp_client::encode(&msg), &[]).is_err());
    (s.closer)();
}

#[test]
fn dropping_an_unsplit_transport_stops_ssh() {
    let qemu = common::qemu();
    let sshd = Sshd::start();
    let transport = connect(&sshd, &qemu.socket).expect("connect");
    let pid = transport.monitor().pid();
    drop(transport);
    assert!(gone(pid), "ssh {pid} still exists after drop");
}

#[test]
fn qemu_killed_under_the_transport_ends_the_stream() {
    let qemu = common::qemu();
    let sshd = Sshd::start();
    let transport = connect(&sshd, &qemu.socket).expect("connect");
    let monitor = transport.monitor();
    let mut s = Session::new(transport);
    s.negotiate();
    drop(qemu); // SIGKILL
    match s.next() {
        Ok(None) => {}
        other => panic!("expected the end of the stream, got {other:?}"),
    }
    // ssh itself is fine (it would serve another connection) until closed.
    assert!(monitor.failure().is_none());
    assert!(!gone(monitor.pid()));
}

#[test]
fn ctrl_c_at_the_terminal_does_not_end_the_session() {
    let qemu = common::qemu();
    let sshd = Sshd::start();
    let transport = connect(&sshd, &qemu.socket).expect("connect");
    let pid = transport.monitor().pid();
    let mut s = Session::new(transport);
    s.negotiate();
    // What the terminal sends the foreground process group on Ctrl-C and Ctrl-\.
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGINT);
        libc::kill(pid as libc::pid_t, libc::SIGQUIT);
    }
    // ssh must run to forward this; a pending fatal signal would end it first.
    s.send(r#"{"execute": "query-status", "id": 1}"#);
    assert_eq!(s.next_object()["return"]["status"], "running");
}

/// Set in the helper process of `ssh_dies_with_its_caller`.
const HELPER_ENV: &str = "QMP_SSH_TEST_HELPER";

#[test]
fn ssh_dies_with_its_caller() {
    if let Ok(spec) = std::env::var(HELPER_ENV) {
        // The helper: connect, say ssh's pid, and wait to be killed.
        let (command, socket) = spec.split_once('\n').expect("helper spec");
        let transport =
            SshTransport::connect_with(&opts(command), None, HOST, None, Path::new(socket))
                .expect("helper connect");
        println!("SSH_PID={}", transport.monitor().pid());
        let mut line = String::new();
        let _ = io::stdin().read_line(&mut line);
        return;
    }
    let qemu = common::qemu();
    let sshd = Sshd::start();
    let mut helper = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            &qmp_test_support::test_name(module_path!(), "ssh_dies_with_its_caller"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            HELPER_ENV,
            format!("{}\n{}", sshd.ssh_command(), qemu.socket.display()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start helper");
    let stdout = helper.stdout.take().expect("helper stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may have written "test NAME ... " before it.
            if let Some((_, pid)) = line.split_once("SSH_PID=") {
                let _ = tx.send(pid.parse::<u32>().ok());
                return;
            }
        }
        let _ = tx.send(None);
    });
    let pid = rx
        .recv_timeout(T)
        .expect("helper reports ssh's pid")
        .expect("helper connected");
    assert!(!gone(pid));
    helper.kill().expect("kill helper");
    helper.wait().expect("reap helper");
    assert!(exits_within(pid, T), "ssh {pid} outlived its killed caller");
}
