//! `qmp-proxy` and `qmp-shell-wrap --serve` with real peers: QEMU, our
//! shell, the reference shell and raw socket clients at once; QEMU killed
//! under the proxy; signals; `--retry`; an `ssh://` target through a real
//! sshd on 127.0.0.1; `--domain`: a libvirt domain's monitor shared through
//! the real libvirtd.

use crate::common;
use qmp_test_support::libvirt;
use qmp_test_support::silent;
use qmp_test_support::sshd;
use qmp_test_support::stray;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Bound on every wait.
const T: Duration = Duration::from_secs(30);

fn proxy_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_qmp-proxy"))
}

fn private_dir() -> tempfile::TempDir {
    // Short: a socket path is limited to 107 bytes.
    tempfile::Builder::new()
        .prefix("qmp-px-")
        .tempdir_in(std::env::temp_dir())
        .expect("tempdir")
}

/// A running `qmp-proxy` serving on `DIR/p.sock`.
struct Proxy {
    run: Running,
    listen: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Start it; do not wait.
    fn spawn(target: &str, extra: &[&str], env: &[(&str, &str)]) -> Proxy {
        let mut args = extra.to_vec();
        args.push(target);
        Proxy::spawn_args(&args, env)
    }

    /// Start it with `--listen DIR/p.sock` and `args`; do not wait.
    fn spawn_args(args: &[&str], env: &[(&str, &str)]) -> Proxy {
        let dir = private_dir();
        let listen = dir.path().join("p.sock");
        let mut all = vec!["--listen", listen.to_str().unwrap()];
        all.extend_from_slice(args);
        Proxy {
            run: Running::start(&proxy_bin(), &all, env),
            listen,
            _dir: dir,
        }
    }

    /// Start it on libvirt domain `domain` (`--domain DOMAIN` and
    /// `extra`) and wait until it listens.
    fn domain(domain: &str, extra: &[&str]) -> Proxy {
        let mut args = vec!["--domain", domain];
        args.extend_from_slice(extra);
        let mut p = Proxy::spawn_args(&args, &[]);
        p.wait_listening();
        p
    }

    /// Start it and wait until it listens.
    fn start(target: &str, extra: &[&str], env: &[(&str, &str)]) -> Proxy {
        let mut p = Proxy::spawn(target, extra, env);
        p.wait_listening();
        p
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + T;
        while !listening(&self.listen) {
            if self.run.try_wait().is_some() {
                let (status, _, stderr) = self.run.wait_exit(T);
                panic!("qmp-proxy exited ({status}) before listening:\n{stderr}");
            }
            assert!(Instant::now() < deadline, "qmp-proxy never listened");
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn sock(&self) -> &str {
        self.listen.to_str().unwrap()
    }
}

/// A raw QMP client: lines in, lines out, every read bounded.
struct Raw {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Raw {
    fn negotiated(path: &Path) -> Raw {
        let s = UnixStream::connect(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        s.set_read_timeout(Some(T)).unwrap();
        let mut raw = Raw {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        };
        assert!(raw.line().starts_with("{\"QMP\""));
        assert_eq!(
            raw.send(r#"{"execute": "qmp_capabilities"}"#),
            "{\"return\": {}}\r\n"
        );
        raw
    }

    /// Connect and read the first line: `Some` if it is the greeting.
    fn connect_greeted(path: &Path) -> Option<Raw> {
        let s = UnixStream::connect(path).ok()?;
        s.set_read_timeout(Some(T)).ok()?;
        let mut raw = Raw {
            w: s.try_clone().ok()?,
            r: BufReader::new(s),
        };
        let mut line = String::new();
        raw.r.read_line(&mut line).ok()?;
        line.starts_with("{\"QMP\"").then_some(raw)
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Ok(0) => panic!("end of stream where a line was expected"),
            Ok(_) => line,
            Err(e) => panic!("no line within {T:?}: {e}"),
        }
    }

    fn send(&mut self, text: &str) -> String {
        self.w.write_all(text.as_bytes()).unwrap();
        self.line()
    }

    /// Send `text` with a file descriptor attached (SCM_RIGHTS); the reply.
    fn send_with_fd(&mut self, text: &str, fd: &impl std::os::fd::AsRawFd) -> String {
        let t = qmp_client::StreamTransport::unix(self.w.try_clone().unwrap()).unwrap();
        let mut halves = qmp_client::Transport::split(Box::new(t)).unwrap();
        let msg: qmp_client::Object = serde_json::from_str(text).unwrap();
        halves
            .sink
            .send(&msg, text.as_bytes(), &[fd.as_raw_fd()])
            .expect("sendmsg");
        self.line()
    }

    /// Read to the end of the stream (bounded).
    fn rest(&mut self) -> String {
        let mut rest = String::new();
        self.r.read_to_string(&mut rest).expect("end of stream");
        rest
    }

    /// Check ids of every kind through the proxy.
    fn check_ids(&mut self) {
        for id in [r#""str""#, "42", "1.5", r#"{"o": [null]}"#] {
            assert_eq!(
                self.send(&format!(r#"{{"execute": "query-name", "id": {id}}}"#)),
                format!("{{\"return\": {{}}, \"id\": {id}}}\r\n")
            );
        }
        assert_eq!(
            self.send(r#"{"execute": "query-name"}"#),
            "{\"return\": {}}\r\n"
        );
    }
}

/// Our shell (kept connected), the reference shell and a raw client, at
/// once through the proxy: each gets what it would get from QEMU
/// directly, and the events our shell causes reach the raw client.
#[test]
fn our_shell_the_reference_and_a_raw_client_at_once() {
    let qemu = Peer::qemu_none();
    let proxy = Proxy::start(qemu.socket_str(), &[], &[]);
    let mut raw = Raw::negotiated(&proxy.listen);

    let mut shell = Running::start(&ours(), &[proxy.sock()], &[]);
    shell.send("query-status\n");
    shell.wait_stdout("\"running\": true");
    // While ours is attached: the reference, start to finish.
    let ref_script = "query-name\nqom-list path=/machine\nquery-version\n";
    let ref_out = run_program(reference(), &[proxy.sock()], ref_script, SHELL_TIMEOUT);
    assert!(ref_out.status.success(), "{}", show(&ref_out));
    raw.check_ids();
    // Ours stops and resumes the VM; the events show at its empty lines,
    // and the raw client gets them too.
    shell.send("stop\n\ncont\n\nquery-status\n");
    let (status, ours_out, ours_err) = shell.finish(T);
    assert!(status.success(), "{ours_out}\n{ours_err}");
    let mut events = Vec::new();
    while events.len() < 2 {
        let v: Value = serde_json::from_str(&raw.line()).unwrap();
        if let Some(name) = v["event"].as_str() {
            events.push(name.to_owned());
        }
    }
    assert_eq!(events, ["STOP", "RESUME"]);
    raw.check_ids();

    // The same scripts directly against a QEMU of their own print the same.
    let direct = Peer::qemu_none();
    let ours_direct = run_shell(
        &ours(),
        &[direct.socket_str()],
        "query-status\nstop\n\ncont\n\nquery-status\n",
        SHELL_TIMEOUT,
    );
    assert_eq!(
        without_timestamps(&ours_out),
        without_timestamps(&text(&ours_direct.stdout))
    );
    assert!(ours_out.contains("\"event\": \"STOP\""), "{ours_out}");
    let ref_direct = run_program(
        reference(),
        &[direct.socket_str()],
        ref_script,
        SHELL_TIMEOUT,
    );
    if let Some(diff) = describe_difference(
        "stdout",
        "direct",
        &ref_direct.stdout,
        "through qmp-proxy",
        &ref_out.stdout,
    ) {
        panic!("{diff}");
    }
    assert!(text(&ref_out.stdout).contains("\"qemu\": {\"micro\""));
}

/// QEMU killed under the proxy: every client is disconnected, the proxy
/// exits 1 with a one-line reason and removes its socket.
#[test]
fn qemu_killed_under_the_proxy() {
    let qemu = Peer::qemu_none();
    let proxy = Proxy::start(qemu.socket_str(), &[], &[]);
    let mut raw = Raw::negotiated(&proxy.listen);
    let mut shell = Running::start(&ours(), &[proxy.sock()], &[]);
    shell.send("query-name\n");
    shell.wait_stdout("{\"return\": {}}");
    // SAFETY: kill(2) on the QEMU this test started.
    unsafe {
        libc::kill(qemu.pid() as i32, libc::SIGKILL);
    }
    assert_eq!(raw.rest(), "");
    let (status, _, stderr) = proxy.run.finish(T);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "ERROR: lost the connection to {}: ",
            qemu.socket_str()
        )),
        "{stderr}"
    );
    assert!(std::fs::symlink_metadata(&proxy.listen).is_err());
    shell.send("query-status\n");
    let (status, _, stderr) = shell.finish(T);
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr, "Disconnected\n");
}

fn signal_removes_the_socket(sig: i32) {
    let qemu = Peer::qemu_none();
    let proxy = Proxy::start(qemu.socket_str(), &[], &[]);
    let meta = std::fs::symlink_metadata(&proxy.listen).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o777, 0o600, "socket mode");
    let mut raw = Raw::negotiated(&proxy.listen);
    proxy.run.signal(sig);
    assert_eq!(raw.rest(), "");
    let (status, _, stderr) = proxy.run.finish(T);
    assert_eq!(status.code(), Some(128 + sig), "{stderr}");
    assert_eq!(stderr, "");
    assert!(std::fs::symlink_metadata(&proxy.listen).is_err());
    // QEMU is free for its next client.
    let replies = qmp_raw(qemu.socket(), &[r#"{"execute": "query-name"}"#]);
    assert_eq!(replies, ["{\"return\": {}}"]);
}

#[test]
fn sigterm_removes_the_socket() {
    signal_removes_the_socket(libc::SIGTERM);
}

#[test]
fn sigint_removes_the_socket() {
    signal_removes_the_socket(libc::SIGINT);
}

#[test]
fn sighup_removes_the_socket() {
    signal_removes_the_socket(libc::SIGHUP);
}

/// `--retry`: the proxy waits for QEMU to appear, and only then listens.
/// `qmp-proxy -l` appends: a proxy run that stops the VM, then another
/// that resumes it, leave both in the log, after what it held.
#[test]
fn the_proxy_log_is_appended_to() {
    let qemu = Peer::qemu_none();
    let dir = private_dir();
    let log = dir.path().join("audit.log");
    std::fs::write(&log, "{\"earlier\": true}\n").unwrap();
    for cmd in ["stop", "cont"] {
        let proxy = Proxy::start(qemu.socket_str(), &["-l", log.to_str().unwrap()], &[]);
        let out = run_shell(&ours(), &["-c", cmd, proxy.sock()], "", SHELL_TIMEOUT);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        proxy.run.signal(libc::SIGTERM);
        let (status, _, stderr) = proxy.run.finish(T);
        assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{stderr}");
    }
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(lines[0], serde_json::json!({"earlier": true}), "{lines:?}");
    let sent: Vec<&str> = lines
        .iter()
        .filter_map(|v| v["execute"].as_str())
        .filter(|name| ["stop", "cont"].contains(name))
        .collect();
    assert_eq!(sent, ["stop", "cont"], "{lines:?}");
    assert_eq!(lines.iter().filter(|v| v.get("QMP").is_some()).count(), 2);
}

#[test]
fn retry_waits_for_qemu() {
    let dir = private_dir();
    let target = dir.path().join("qmp.sock");
    // A dead socket: connecting is refused until QEMU replaces it.
    dead_socket(&target);
    let mut proxy = Proxy::spawn(
        target.to_str().unwrap(),
        &["--retry", "1000", "--retry-delay", "0.02"],
        &[],
    );
    let qemu = OwnQemu::start(&target);
    proxy.wait_listening();
    let mut raw = Raw::negotiated(&proxy.listen);
    raw.check_ids();
    proxy.run.signal(libc::SIGTERM);
    let (status, _, _) = proxy.run.finish(T);
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    drop(qemu);

    // Retries exhausted: the connection error, exit 1.
    let missing = dir.path().join("missing.sock");
    let proxy = Proxy::spawn(
        missing.to_str().unwrap(),
        &["--retry", "2", "--retry-delay", "0.01"],
        &[],
    );
    let (status, _, stderr) = proxy.run.finish(T);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.starts_with(&format!("ERROR: Couldn't connect to {}", missing.display())),
        "{stderr}"
    );
}

#[test]
fn refuses_to_listen_over_a_file() {
    let qemu = Peer::qemu_none();
    let dir = private_dir();
    let file = dir.path().join("p.sock");
    std::fs::write(&file, "precious").unwrap();
    let out = run_shell(
        &proxy_bin(),
        &["--listen", file.to_str().unwrap(), qemu.socket_str()],
        "",
        SHELL_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("exists and is not a socket; not replacing it"),
        "{}",
        show(&out)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
    // QEMU was let go.
    assert_eq!(
        qmp_raw(qemu.socket(), &[r#"{"execute": "query-name"}"#]),
        ["{\"return\": {}}"]
    );
}

/// Connections to the UNIX socket at `path` until its server's queue is
/// full (a non-blocking connect(2) says so with `EAGAIN`), held open.
fn fill_queue(path: &Path) -> Vec<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let mut held = Vec::new();
    loop {
        assert!(
            held.len() < 64,
            "the queue of {} never filled",
            path.display()
        );
        // SAFETY: socket(2); the descriptor is owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a zeroed sockaddr_un is valid; the path fits (checked).
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_os_str().as_bytes();
        assert!(bytes.len() < addr.sun_path.len());
        for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        // SAFETY: connect(2) with the address filled in above.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_un as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            assert_eq!(err.raw_os_error(), Some(libc::EAGAIN), "connect: {err}");
            return held;
        }
        held.push(fd);
    }
}

/// A socket at the `--listen` path whose server is stopped (a frozen
/// QEMU, its queue of connections full: connect(2) to it would wait for
/// ever) is live: qmp-proxy refuses it with one line and exit 1, within
/// the harness's kill timeout, and leaves it alone; twice in a row. Thawed,
/// that QEMU serves its clients as before.
#[test]
fn a_hung_server_at_the_listen_path_is_refused_in_time() {
    let target = Peer::qemu_none();
    let hung = Peer::qemu_none();
    freeze(hung.pid());
    let held = fill_queue(hung.socket());
    for _ in 0..2 {
        let out = run_shell(
            &proxy_bin(),
            &["--listen", hung.socket_str(), target.socket_str()],
            "",
            Duration::from_secs(15),
        );
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        assert_eq!(
            text(&out.stderr),
            format!(
                "ERROR: cannot listen on {0}: {0} is in use: a server is listening on it, \
                 though it takes no connection within 1 s (stopped or hung?)\n",
                hung.socket_str()
            ),
            "{}",
            show(&out)
        );
        assert!(std::fs::symlink_metadata(hung.socket())
            .unwrap()
            .file_type()
            .is_socket());
    }
    thaw(hung.pid());
    drop(held);
    assert_eq!(
        qmp_raw(hung.socket(), &[r#"{"execute": "query-name"}"#]),
        ["{\"return\": {}}"]
    );
    // The proxy let its target go too.
    assert_eq!(
        qmp_raw(target.socket(), &[r#"{"execute": "query-name"}"#]),
        ["{\"return\": {}}"]
    );
}

/// An `ssh://` target: QEMU's socket reached through a real sshd.
#[test]
fn ssh_target_through_a_real_sshd() {
    let qemu = Peer::qemu_none();
    let sshd = sshd::Sshd::start();
    let target = format!("ssh://{}{}", sshd::HOST, qemu.socket_str());
    let command = sshd.ssh_command();
    let proxy = Proxy::start(&target, &[], &[("QMP_SSH_COMMAND", &command)]);
    let mut raw = Raw::negotiated(&proxy.listen);
    raw.check_ids();
    // Descriptors cannot cross ssh: the command is refused, the session
    // goes on.
    let file = tempfile::tempfile().unwrap();
    let line = raw.send_with_fd(
        r#"{"execute": "getfd", "arguments": {"fdname": "f"}, "id": "fd"}"#,
        &file,
    );
    assert_eq!(
        line,
        "{\"id\": \"fd\", \"error\": {\"class\": \"GenericError\", \"desc\": \
         \"this connection cannot pass file descriptors (only a UNIX socket can)\"}}\r\n"
    );
    raw.check_ids();
    let out = run_shell(
        &ours(),
        &[proxy.sock(), "-c", "query-status"],
        "",
        SHELL_TIMEOUT,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("\"status\": \"running\""),
        "{}",
        show(&out)
    );
    proxy.run.signal(libc::SIGTERM);
    let (status, _, stderr) = proxy.run.finish(T);
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{stderr}");
}

/// `qmp-shell-wrap --serve`: a second client attaches beside the person
/// at the wrap's shell; both see the same VM, and the socket goes when the
/// shell ends.
#[test]
fn wrap_serve_lets_a_second_client_attach() {
    let dir = private_dir();
    let serve = dir.path().join("serve.sock");
    let tmp = private_dir();
    let mut wrap = Running::start(
        &ours_wrap(),
        &[
            "--serve",
            serve.to_str().unwrap(),
            "--",
            "qemu-system-x86_64",
            "-M",
            "none",
            "-display",
            "none",
            "-nodefaults",
        ],
        &[("TMPDIR", tmp.path().to_str().unwrap())],
    );
    wrap.wait_stdout("(QEMU) ");
    wait_until("the --serve socket", T, || listening(&serve));
    let meta = std::fs::symlink_metadata(&serve).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    let mut raw = Raw::negotiated(&serve);
    raw.check_ids();
    // The second client stops the VM; by the time it has the reply, the
    // wrap's shell has the STOP event (QEMU sends it first), and shows it
    // at an empty line.
    let mut got_reply = false;
    raw.w
        .write_all(br#"{"execute": "stop", "id": "s"}"#)
        .unwrap();
    while !got_reply {
        got_reply = raw.line().contains("\"id\": \"s\"");
    }
    wrap.send("\n");
    wrap.wait_stdout("\"event\": \"STOP\"");
    wrap.send("query-status\n");
    wrap.wait_stdout("\"status\": \"paused\"");
    let (status, _, stderr) = wrap.finish(T);
    assert!(status.success(), "{stderr}");
    assert_eq!(raw.rest(), "");
    assert!(
        std::fs::symlink_metadata(&serve).is_err(),
        "socket left behind"
    );
}

/// `--serve` over an existing file: the wrap says so, leaves the file
/// alone, and stops the QEMU it started.
#[test]
fn wrap_serve_refuses_an_existing_file_and_stops_qemu() {
    let dir = private_dir();
    let serve = dir.path().join("serve.sock");
    std::fs::write(&serve, "precious").unwrap();
    let tmp = private_dir();
    let out = run_shell_env(
        &ours_wrap(),
        &[
            "--serve",
            serve.to_str().unwrap(),
            "--",
            "qemu-system-x86_64",
            "-M",
            "none",
            "-display",
            "none",
            "-nodefaults",
        ],
        "query-status\n",
        SHELL_TIMEOUT,
        &[("TMPDIR", tmp.path().to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        format!(
            "ERROR: cannot listen on {0}: {0} exists and is not a socket; not replacing it\n",
            serve.display()
        )
    );
    assert_eq!(std::fs::read_to_string(&serve).unwrap(), "precious");
    // QEMU was stopped and the wrap's private directory removed.
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
}

// ---------------------------------------------------------------------------
// --domain: a libvirt domain's monitor, shared
// ---------------------------------------------------------------------------

/// The note the proxy prints once on standard error for `domain`.
fn taint_notice(domain: &str) -> String {
    format!(
        "note: libvirt marks domain {domain} as tainted (custom-monitor) \
         when its monitor is used directly\n"
    )
}

/// The next event on `raw`, skipping replies.
fn next_event(raw: &mut Raw) -> Value {
    loop {
        let v: Value = serde_json::from_str(&raw.line()).unwrap();
        if v.get("event").is_some() {
            return v;
        }
    }
}

/// The Python reference qmp-shell through `qmp-proxy --domain NAME`
/// answers `query-name` with the domain's name; two raw clients at once get
/// their own replies with their own ids, and both get the STOP and RESUME
/// that `virsh suspend` and `virsh resume` cause; file descriptors go
/// through libvirt; SIGTERM ends the proxy, removing its socket, with the
/// taint note printed once; the domain runs on, its monitor free for libvirt.
#[test]
fn domain_shared_with_the_reference_and_raw_clients() {
    let dom = libvirt::TestDomain::start("proxy");
    let proxy = Proxy::domain(&dom.name, &[]);
    let meta = std::fs::symlink_metadata(&proxy.listen).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "socket mode");
    let mut a = Raw::negotiated(&proxy.listen);
    let mut b = Raw::negotiated(&proxy.listen);

    let out = run_program(
        reference(),
        &[proxy.sock()],
        "query-name\nquery-status\n",
        SHELL_TIMEOUT,
    );
    assert!(out.status.success(), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("{{\"return\": {{\"name\": \"{}\"}}}}", dom.name)),
        "{stdout}"
    );
    assert!(stdout.contains("\"status\": \"running\""), "{stdout}");

    // Both clients' commands in flight at once, each with ids of its own
    // (the same id on both, too).
    for id in [r#""x""#, "1", r#"{"k": [2.50]}"#] {
        a.w.write_all(format!(r#"{{"execute": "query-name", "id": {id}}}"#).as_bytes())
            .unwrap();
        b.w.write_all(format!(r#"{{"execute": "query-status", "id": {id}}}"#).as_bytes())
            .unwrap();
        assert_eq!(
            a.line(),
            format!(
                "{{\"return\": {{\"name\": \"{}\"}}, \"id\": {id}}}\r\n",
                dom.name
            )
        );
        let line = b.line();
        assert!(
            line.starts_with("{\"return\": {\"status\": \"running\""),
            "{line}"
        );
        assert!(line.ends_with(&format!(", \"id\": {id}}}\r\n")), "{line}");
    }

    libvirt::virsh_ok(&["suspend", &dom.name]);
    assert_eq!(next_event(&mut a)["event"], "STOP");
    assert_eq!(next_event(&mut b)["event"], "STOP");
    libvirt::virsh_ok(&["resume", &dom.name]);
    assert_eq!(next_event(&mut a)["event"], "RESUME");
    assert_eq!(next_event(&mut b)["event"], "RESUME");

    // A descriptor sent with a command reaches QEMU through libvirt.
    let file = tempfile::tempfile().unwrap();
    assert_eq!(
        a.send_with_fd(
            r#"{"execute": "getfd", "arguments": {"fdname": "f0"}, "id": "fd"}"#,
            &file,
        ),
        "{\"return\": {}, \"id\": \"fd\"}\r\n"
    );
    assert_eq!(
        a.send(r#"{"execute": "closefd", "arguments": {"fdname": "f0"}}"#),
        "{\"return\": {}}\r\n"
    );

    proxy.run.signal(libc::SIGTERM);
    assert_eq!(a.rest(), "");
    assert_eq!(b.rest(), "");
    let (status, _, stderr) = proxy.run.finish(T);
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{stderr}");
    assert_eq!(stderr, taint_notice(&dom.name));
    assert!(std::fs::symlink_metadata(&proxy.listen).is_err());
    let state = libvirt::virsh_ok(&["domstate", &dom.name]);
    assert_eq!(state.trim(), "running");
    let reply = libvirt::virsh_ok(&[
        "qemu-monitor-command",
        &dom.name,
        r#"{"execute":"query-name"}"#,
    ]);
    assert!(reply.contains(&dom.name), "{reply}");
}

/// The domain destroyed under the proxy: a client gets what was on its
/// way, then the end of its connection; the proxy says so in one line after
/// the note, exits 1 and removes its socket. Ctrl-C (SIGINT) on another.
#[test]
fn domain_destroyed_under_the_proxy() {
    let dom = libvirt::TestDomain::start("proxy-gone");
    let proxy = Proxy::domain(&dom.name, &[]);
    let mut raw = Raw::negotiated(&proxy.listen);
    assert!(raw
        .send(r#"{"execute": "query-status", "id": 1}"#)
        .contains("\"id\": 1"));
    dom.destroy();
    // Only events (QEMU's SHUTDOWN, if libvirt relayed it) may come before
    // the end.
    for line in raw.rest().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(v.get("event").is_some(), "{line}");
    }
    let (status, _, stderr) = proxy.run.finish(T);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "{}ERROR: lost the connection to domain {}: the domain stopped\n",
            taint_notice(&dom.name),
            dom.name
        )
    );
    assert!(std::fs::symlink_metadata(&proxy.listen).is_err());

    let other = libvirt::TestDomain::start("proxy-int");
    let proxy = Proxy::domain(&other.name, &[]);
    let mut raw = Raw::negotiated(&proxy.listen);
    proxy.run.signal(libc::SIGINT);
    assert_eq!(raw.rest(), "");
    let (status, _, stderr) = proxy.run.finish(T);
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "{stderr}");
    assert_eq!(stderr, taint_notice(&other.name));
    assert!(std::fs::symlink_metadata(&proxy.listen).is_err());
}

/// `--domain` by UUID and by id (with `--connect`), named by its name
/// when it ends; an unknown domain is an error before anything listens.
#[test]
fn domain_by_uuid_and_id() {
    let dom = libvirt::TestDomain::start("proxy-ids");
    let (id, uuid) = dom.id_and_uuid();
    for spec in [uuid.as_str(), id.as_str()] {
        let proxy = Proxy::domain(spec, &["--connect", libvirt::URI]);
        let mut raw = Raw::negotiated(&proxy.listen);
        assert_eq!(
            raw.send(r#"{"execute": "query-name"}"#),
            format!("{{\"return\": {{\"name\": \"{}\"}}}}\r\n", dom.name)
        );
        proxy.run.signal(libc::SIGTERM);
        let (status, _, stderr) = proxy.run.finish(T);
        assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{spec}: {stderr}");
        assert_eq!(stderr, taint_notice(&dom.name), "{spec}");
    }

    let missing = libvirt::unique_name("missing");
    let proxy = Proxy::spawn_args(&["--domain", &missing], &[]);
    let (status, _, stderr) = proxy.run.finish(T);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("ERROR: no domain {missing} at ")),
        "{stderr}"
    );
    assert!(std::fs::symlink_metadata(&proxy.listen).is_err());
}

/// The late reply of a client that left QEMU before the proxy came, which
/// QEMU passes on to the proxy's connection, is nobody's: the proxy drops
/// it with one warning, and its clients get their own replies.
#[test]
fn a_stray_reply_reaches_no_client_of_the_proxy() {
    let peer = Peer::qemu_none();
    let warning = format!(
        "warning: {}: {{\"return\":[{{",
        qmp_client::client::STRAY_REPLY
    );
    for _ in 0..stray::TRIES {
        let mut proxy =
            stray::after_a_stray_reply(peer.socket(), || Proxy::spawn(peer.socket_str(), &[], &[]));
        proxy.wait_listening();
        let mut raw = Raw::negotiated(&proxy.listen);
        assert_eq!(
            raw.send(r#"{"execute": "query-status", "id": 1}"#),
            "{\"return\": {\"status\": \"running\", \"singlestep\": false, \
             \"running\": true}, \"id\": 1}\r\n"
        );
        assert_eq!(
            raw.send(r#"{"execute": "query-name"}"#),
            "{\"return\": {}}\r\n"
        );
        proxy.run.signal(libc::SIGTERM);
        let (status, _, stderr) = proxy.run.wait_exit(T);
        assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{stderr}");
        match stderr.lines().collect::<Vec<_>>()[..] {
            [] => continue,
            [line] if line.starts_with(&warning) => return,
            _ => panic!("{stderr}"),
        }
    }
    panic!(
        "QEMU never passed on a stray reply in {} tries",
        stray::TRIES
    );
}

/// `--max-clients`: one client too many is told why, instead of the
/// greeting, and the proxy says it turned one away; our shell shows the
/// reason in one line. Once a client leaves, the next one is served.
#[test]
fn a_client_turned_away_is_told_why_and_the_proxy_says_so() {
    let qemu = Peer::qemu_none();
    let proxy = Proxy::start(qemu.socket_str(), &["--max-clients", "1"], &[]);
    let mut first = Raw::negotiated(&proxy.listen);
    let refusal = "too many clients: this server serves at most 1 client at once";
    let mut second = UnixStream::connect(&proxy.listen).unwrap();
    second.set_read_timeout(Some(T)).unwrap();
    let mut got = String::new();
    second.read_to_string(&mut got).unwrap();
    assert_eq!(
        got,
        format!("{{\"error\": {{\"class\": \"GenericError\", \"desc\": \"{refusal}\"}}}}\r\n")
    );
    let out = run_shell(&ours(), &["-c", "query-name", proxy.sock()], "", T);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        format!(
            "ERROR: Couldn't connect to {}: the server refused the session: {refusal}\n",
            proxy.sock()
        )
    );
    assert_eq!(
        first.send(r#"{"execute": "query-name", "id": 1}"#),
        "{\"return\": {}, \"id\": 1}\r\n"
    );
    drop(first);
    let mut next = None;
    wait_until("a free place", T, || {
        let mut raw = Raw::connect_greeted(&proxy.listen);
        let greeted = raw.as_mut().is_some();
        next = raw;
        greeted
    });
    drop(next);
    proxy.run.signal(libc::SIGTERM);
    let (status, _, stderr) = proxy.run.finish(T);
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{stderr}");
    let warning = format!("warning: turned a client away: {refusal} (--max-clients)");
    assert!(
        stderr.lines().count() >= 2 && stderr.lines().all(|l| l == warning),
        "{stderr}"
    );
}

/// `qmp-proxy --timeout` bounds the whole connection to an `ssh://` target,
/// ssh's set-up included: a host that never speaks SSH ends the proxy with
/// one line and exit 1, within the harness's kill timeout, and nothing
/// listens.
#[test]
fn an_ssh_target_that_never_speaks_ends_the_proxy_in_time() {
    let peer = silent::SilentPeer::start();
    let target = peer.address("/run/qmp.sock");
    let command = silent::SilentPeer::ssh_command(None);
    let dir = private_dir();
    let listen = dir.path().join("p.sock");
    let out = run_program_env(
        std::process::Command::new(proxy_bin()),
        &[
            "--timeout",
            "1",
            "--listen",
            listen.to_str().unwrap(),
            &target,
        ],
        "",
        Duration::from_secs(20),
        &[("QMP_SSH_COMMAND", command.as_str())],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        format!(
            "ERROR: Couldn't connect to {target}: Failed to establish connection: \
             ssh: no connection to 127.0.0.1 within 1 s\n"
        )
    );
    assert!(std::fs::symlink_metadata(&listen).is_err());
}
