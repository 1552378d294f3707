//! Shared helpers for the integration tests: real QMP peers (QEMU, the
//! storage daemon, the guest agent), the binaries under test, the reference
//! implementation, and a way to run a shell with a hard timeout.
//!
//! Every peer lives in its own temporary directory; dropping the [`Peer`]
//! kills the process and removes the directory, also when a test panics.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub mod term;

pub use qmp_test_support::proc::{dead_socket, freeze, listening, thaw, wait_until};

/// How long a peer may take to start listening.
pub const PEER_START_TIMEOUT: Duration = Duration::from_secs(20);
/// A generous bound for one shell session in a test.
pub const SHELL_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Programs
// ---------------------------------------------------------------------------

/// Our `qmp-shell`.
pub fn ours() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_qmp-shell"))
}

/// Our `qmp-shell-wrap`.
pub fn ours_wrap() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_qmp-shell-wrap"))
}

/// Our `qmp-shell`, as a command to add arguments to.
pub fn ours_cmd() -> Command {
    Command::new(ours())
}

/// Our `qmp-shell-wrap`, as a command to add arguments to.
pub fn ours_wrap_cmd() -> Command {
    Command::new(ours_wrap())
}

// ---------------------------------------------------------------------------
// The reference: Python qemu.qmp 0.0.6, run as a module, never from PATH
// ---------------------------------------------------------------------------

/// The `qemu.qmp` release the project replaces.
pub const REFERENCE_VERSION: &str = "0.0.6";

/// SHA-256 of `qemu/qmp/qmp_shell.py` in qemu.qmp 0.0.6, in the form the
/// wheel's `RECORD` lists it (URL-safe base64, no padding).
pub const REFERENCE_SHELL_SHA256: &str = "D8J4WA4F-dVcrLBIRbs5TBonj_Ha45Ryg5lZUOmYcZo";

/// The environment variable naming the Python interpreter that has the
/// reference installed (default: `python3` on `PATH`). Whatever it names
/// is verified like the default.
pub const REFERENCE_PYTHON_VAR: &str = "QMP_REFERENCE_PYTHON";

/// The verified reference installation.
#[derive(Debug, Clone)]
pub struct ReferencePython {
    /// The interpreter itself (`sys.executable`: no pyenv shim in front).
    pub python: PathBuf,
    /// Where `qemu.qmp.qmp_shell` was imported from.
    pub module: PathBuf,
}

/// What the test binary asks the interpreter, once: the distribution's
/// version, its console-script entry points, and whether the imported
/// `qmp_shell` module is the file the distribution installed, unchanged.
const VERIFY_REFERENCE: &str = r#"
import sys, os, hashlib, base64
import importlib.metadata as m
d = m.distribution("qemu.qmp")
import qemu.qmp.qmp_shell as s
f = os.path.realpath(s.__file__)
owned = [p for p in (d.files or []) if os.path.realpath(d.locate_file(p)) == f]
with open(f, "rb") as fh:
    digest = base64.urlsafe_b64encode(hashlib.sha256(fh.read()).digest()).rstrip(b"=").decode()
eps = {e.name: e.value for e in d.entry_points if e.group == "console_scripts"}
print("executable=" + sys.executable)
print("version=" + d.version)
print("module=" + f)
print("installed-by-distribution=" + str(bool(owned)))
print("record-sha256=" + (owned[0].hash.value if owned and owned[0].hash else ""))
print("sha256=" + digest)
print("qmp-shell=" + eps.get("qmp-shell", ""))
print("qmp-shell-wrap=" + eps.get("qmp-shell-wrap", ""))
"#;

/// The reference's interpreter, found and verified once per test binary
/// (shared by every test of it that runs the reference).
///
/// Panics, saying what is wrong and how to fix it, unless the interpreter
/// (`$QMP_REFERENCE_PYTHON`, or `python3` on `PATH`) imports
/// `qemu.qmp.qmp_shell` from the `qemu.qmp` distribution, version
/// [`REFERENCE_VERSION`], with the file unchanged and the entry points
/// `qmp-shell = qemu.qmp.qmp_shell:main` and
/// `qmp-shell-wrap = qemu.qmp.qmp_shell:main_wrap`. A `qmp-shell` on
/// `PATH` plays no part: it may well be ours (`cargo install`).
pub fn reference_python() -> &'static ReferencePython {
    static P: OnceLock<ReferencePython> = OnceLock::new();
    P.get_or_init(find_reference_python)
}

fn find_reference_python() -> ReferencePython {
    for old in ["QMP_SHELL_REFERENCE", "QMP_SHELL_WRAP_REFERENCE"] {
        assert!(
            std::env::var_os(old).is_none(),
            "{old} is no longer used: the reference is run as the Python module \
             qemu.qmp.qmp_shell; unset it (set {REFERENCE_PYTHON_VAR} to choose the \
             interpreter)"
        );
    }
    let (python, origin) = match std::env::var_os(REFERENCE_PYTHON_VAR) {
        Some(p) => (PathBuf::from(p), format!("${REFERENCE_PYTHON_VAR}")),
        None => (
            which("python3").unwrap_or_else(|| {
                panic!(
                    "python3 is not on PATH: the reference qmp-shell (qemu.qmp \
                     {REFERENCE_VERSION}) runs on it; run scripts/install-deps.sh"
                )
            }),
            "python3 on PATH".to_string(),
        ),
    };
    let mut cmd = Command::new(&python);
    cmd.args(["-I", "-c", VERIFY_REFERENCE]);
    let out = run_with_timeout(cmd, b"", Duration::from_secs(60));
    let report = text(&out.stdout);
    let field = |key: &str| -> Option<String> {
        report
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
    };
    let fail = |what: &str| -> ! {
        panic!(
            "THE REFERENCE IS NOT qemu.qmp {REFERENCE_VERSION}: {what}.\n\
             Interpreter: {} ({origin}).\n\
             Install it with `bash scripts/install-deps.sh` (or `python3 -m pip install \
             qemu.qmp=={REFERENCE_VERSION}`), or point {REFERENCE_PYTHON_VAR} at a Python \
             that has it.\n{}",
            python.display(),
            show(&out)
        )
    };
    if !out.status.success() || field("version").is_none() {
        fail("this program is not a Python interpreter that can import qemu.qmp.qmp_shell");
    }
    let version = field("version").unwrap_or_default();
    if version != REFERENCE_VERSION {
        fail(&format!("the installed distribution is version {version}"));
    }
    if field("installed-by-distribution").as_deref() != Some("True") {
        fail("qemu.qmp.qmp_shell is not imported from the file the distribution installed");
    }
    let digest = field("sha256").unwrap_or_default();
    if digest != REFERENCE_SHELL_SHA256
        || field("record-sha256").as_deref() != Some(REFERENCE_SHELL_SHA256)
    {
        fail("qemu/qmp/qmp_shell.py is not the file released in qemu.qmp 0.0.6 (its SHA-256 differs)");
    }
    for (name, entry) in [
        ("qmp-shell", "qemu.qmp.qmp_shell:main"),
        ("qmp-shell-wrap", "qemu.qmp.qmp_shell:main_wrap"),
    ] {
        if field(name).as_deref() != Some(entry) {
            fail(&format!("the entry point {name} is not {entry}"));
        }
    }
    let executable = field("executable").unwrap_or_default();
    let python = if executable.is_empty() {
        python
    } else {
        PathBuf::from(executable)
    };
    ReferencePython {
        python,
        module: PathBuf::from(field("module").unwrap_or_default()),
    }
}

/// A command running one entry point of the reference, as its console
/// script does (`sys.argv[0]` is the program's name, which argparse shows
/// in the usage line). `-I`: no user site, no `PYTHON*` variables, no
/// current directory on `sys.path`, so nothing can shadow the module.
fn reference_entry(program: &str, function: &str) -> Command {
    let py = reference_python();
    let mut cmd = Command::new(&py.python);
    cmd.args([
        "-I",
        "-c",
        &format!(
            "import sys; from qemu.qmp.qmp_shell import {function}; \
             sys.argv[0] = '{program}'; sys.exit({function}())"
        ),
    ]);
    cmd
}

/// The reference `qmp-shell`: `python3 -I -c '... qemu.qmp.qmp_shell.main()'`
/// (the `qmp-shell` entry point of qemu.qmp 0.0.6), verified once.
pub fn reference() -> Command {
    reference_entry("qmp-shell", "main")
}

/// The reference `qmp-shell-wrap` (entry point `qemu.qmp.qmp_shell:main_wrap`).
pub fn reference_wrap() -> Command {
    reference_entry("qmp-shell-wrap", "main_wrap")
}

/// Look a program up on `PATH`, then in the sbin directories (where
/// `qemu-ga` lives and which a non-root `PATH` may lack).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return Some(candidate);
        }
    }
    None
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn require(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| panic!("`{name}` not found: run scripts/install-deps.sh"))
}

// ---------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------

/// A real QMP (or guest-agent) server in a private temporary directory.
pub struct Peer {
    child: Child,
    /// Declared after `child` so that the directory outlives the process
    /// handle; `Drop` kills the process before the directory goes.
    dir: tempfile::TempDir,
    socket: PathBuf,
    second: Option<PathBuf>,
    name: String,
}

impl Peer {
    /// `qemu-system-x86_64 -M none`: QMP, no CPUs, no devices.
    pub fn qemu_none() -> Peer {
        Peer::qemu_with_args(&["-M", "none"])
    }

    /// `-M pc -S -smp 2`: a paused PC with two CPUs (for HMP `cpu N`).
    pub fn qemu_pc() -> Peer {
        Peer::qemu_with_args(&["-M", "pc", "-S", "-smp", "2", "-accel", "tcg"])
    }

    /// QEMU with custom extra arguments (`-display none -nodefaults` and the
    /// QMP monitor on `qmp.sock` are added).
    pub fn qemu_with_args(args: &[&str]) -> Peer {
        Peer::qemu_inner(args, false)
    }

    /// QEMU with two QMP monitors: [`Peer::socket`] (`a.sock`) for the shell
    /// and [`Peer::second_socket`] (`b.sock`) for the test, to cause events
    /// (with [`qmp_raw`]) while the shell is connected.
    pub fn qemu_two_monitors(args: &[&str]) -> Peer {
        Peer::qemu_inner(args, true)
    }

    fn qemu_inner(args: &[&str], two: bool) -> Peer {
        let dir = tempdir("qemu");
        let (socket, second) = if two {
            (dir.path().join("a.sock"), Some(dir.path().join("b.sock")))
        } else {
            (dir.path().join("qmp.sock"), None)
        };
        let mut cmd = Command::new(require("qemu-system-x86_64"));
        cmd.args(args).args(["-display", "none", "-nodefaults"]);
        for s in std::iter::once(&socket).chain(second.iter()) {
            cmd.arg("-qmp")
                .arg(format!("unix:{},server=on,wait=off", s.display()));
        }
        Peer::spawn("qemu-system-x86_64", cmd, dir, socket, second)
    }

    /// `qemu-storage-daemon` with a QMP monitor on `qsd.sock`.
    pub fn storage_daemon() -> Peer {
        let dir = tempdir("qsd");
        let socket = dir.path().join("qsd.sock");
        let mut cmd = Command::new(require("qemu-storage-daemon"));
        cmd.arg("--chardev")
            .arg(format!(
                "socket,path={},server=on,wait=off,id=c0",
                socket.display()
            ))
            .args(["--monitor", "chardev=c0"]);
        Peer::spawn("qemu-storage-daemon", cmd, dir, socket, None)
    }

    /// `qemu-ga` listening on `qga.sock` (no greeting: use `-N`). Its state
    /// and pid files stay inside the private directory, so it runs as root
    /// without touching `/var/run`.
    pub fn guest_agent() -> Peer {
        Peer::guest_agent_blocking(
            "guest-exec,guest-file-open,guest-shutdown,guest-set-user-password",
        )
    }

    /// `qemu-ga` with the commands in `blocked` (comma-separated) disabled.
    pub fn guest_agent_blocking(blocked: &str) -> Peer {
        let dir = tempdir("qga");
        let socket = dir.path().join("qga.sock");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("mkdir state");
        let mut cmd = Command::new(require("qemu-ga"));
        cmd.args(["-m", "unix-listen", "-p"])
            .arg(&socket)
            .arg("-t")
            .arg(&state)
            .arg("-f")
            .arg(dir.path().join("qga.pid"))
            .args(["-b", blocked]);
        Peer::spawn("qemu-ga", cmd, dir, socket, None)
    }

    fn spawn(
        name: &str,
        mut cmd: Command,
        dir: tempfile::TempDir,
        socket: PathBuf,
        second: Option<PathBuf>,
    ) -> Peer {
        let log = File::create(dir.path().join("peer.stderr")).expect("create peer log");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup peer log"))
            .stderr(log)
            .current_dir(dir.path());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e} (run scripts/install-deps.sh)"));
        let mut peer = Peer {
            child,
            dir,
            socket,
            second,
            name: name.to_string(),
        };
        let sockets: Vec<PathBuf> = std::iter::once(peer.socket.clone())
            .chain(peer.second.clone())
            .collect();
        for s in sockets {
            peer.wait_ready(&s);
        }
        peer
    }

    /// Wait until `socket` exists and accepts a connection. The probe closes
    /// its connection at once, which frees the (single-client) monitor.
    fn wait_ready(&mut self, socket: &Path) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "{} exited early ({status}) before listening on {}; its output:\n{}",
                    self.name,
                    socket.display(),
                    self.log()
                );
            }
            // Listening, as the kernel sees it: no probe connection, which
            // a single-client monitor could still be busy with when the
            // test's own client arrives.
            if socket.exists() && listening(socket) {
                return;
            }
            if start.elapsed() > PEER_START_TIMEOUT {
                panic!(
                    "{} did not accept connections on {} within {:?}; its output:\n{}",
                    self.name,
                    socket.display(),
                    PEER_START_TIMEOUT,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The socket the shell connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The socket as a `&str` (for argument lists).
    pub fn socket_str(&self) -> &str {
        self.socket.to_str().expect("socket path is UTF-8")
    }

    /// The second monitor of [`Peer::qemu_two_monitors`].
    pub fn second_socket(&self) -> &Path {
        self.second
            .as_deref()
            .expect("this peer has one monitor; use Peer::qemu_two_monitors")
    }

    /// The peer's private directory (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Wait (bounded) for the peer to exit on its own, e.g. after `quit`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return Some(st);
            }
            if start.elapsed() > timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the peer wrote on stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("peer.stderr")).unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // `dir` (TempDir) removes the directory when dropped after this.
    }
}

/// A QEMU (`-M none`, its QMP monitor on `socket`) started by the test
/// itself, on a socket path of its choosing, without waiting for it to
/// listen (the program under test is to find it coming). Killed when
/// dropped, also when an assertion fails first.
pub struct OwnQemu(Child);

impl OwnQemu {
    pub fn start(socket: &Path) -> OwnQemu {
        let child = Command::new(require("qemu-system-x86_64"))
            .args(["-M", "none", "-display", "none", "-nodefaults", "-qmp"])
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu-system-x86_64");
        OwnQemu(child)
    }
}

impl Drop for OwnQemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tempdir(kind: &str) -> tempfile::TempDir {
    // Short paths: a UNIX socket path is limited to 107 bytes.
    tempfile::Builder::new()
        .prefix(&format!("qmp-{kind}-"))
        .tempdir_in(std::env::temp_dir())
        .expect("create temporary directory")
}

// ---------------------------------------------------------------------------
// Running a shell
// ---------------------------------------------------------------------------

/// Run `bin args...` with `stdin` fed through a pipe, collect its output,
/// and kill it (then panic) if it runs longer than `timeout`.
///
/// The environment is made reproducible: `HOME` is a fresh empty directory
/// (the reference reads and writes `~/.qmp-shell_history`), `QMP_SOCKET` is
/// removed, and the locale is `C.UTF-8`.
pub fn run_shell(bin: &Path, args: &[&str], stdin: &str, timeout: Duration) -> Output {
    run_shell_env(bin, args, stdin, timeout, &[])
}

/// [`run_shell`] with extra environment variables.
pub fn run_shell_env(
    bin: &Path,
    args: &[&str],
    stdin: &str,
    timeout: Duration,
    env: &[(&str, &str)],
) -> Output {
    run_program_env(Command::new(bin), args, stdin, timeout, env)
}

/// [`run_shell`] for a prepared command (program and leading arguments),
/// such as [`reference`].
pub fn run_program(cmd: Command, args: &[&str], stdin: &str, timeout: Duration) -> Output {
    run_program_env(cmd, args, stdin, timeout, &[])
}

/// [`run_program`] with extra environment variables.
pub fn run_program_env(
    mut cmd: Command,
    args: &[&str],
    stdin: &str,
    timeout: Duration,
    env: &[(&str, &str)],
) -> Output {
    let home = tempdir("home");
    shell_env(&mut cmd, home.path());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_timeout(cmd, stdin.as_bytes(), timeout)
}

/// The reproducible environment of [`run_shell`], with `home` as `HOME`.
pub fn shell_env(cmd: &mut Command, home: &Path) {
    cmd.env("HOME", home)
        .env_remove("QMP_SOCKET")
        .env("LC_ALL", "C.UTF-8")
        .env("LANG", "C.UTF-8")
        .env("NO_COLOR", "1")
        .env_remove("PYTHONWARNINGS");
}

// ---------------------------------------------------------------------------
// A program running beside the test
// ---------------------------------------------------------------------------

/// The bound on each wait of [`Running::wait_stdout`] and its kin.
pub const OUTPUT_WAIT: Duration = Duration::from_secs(30);

/// A program running with piped standard streams: standard input written
/// as the test goes (until closed), standard output read as it comes (on a
/// thread, in chunks: a prompt ends without a newline), standard error
/// collected. Killed, if still running, when dropped.
pub struct Running {
    child: Child,
    name: String,
    stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
    stderr: Option<thread::JoinHandle<Vec<u8>>>,
    /// The private `HOME`, kept for as long as the program may use it.
    _home: tempfile::TempDir,
}

impl Running {
    /// Start `bin args...` in the reproducible environment of [`run_shell`]
    /// (a private empty `HOME`, kept until this is dropped), with `env`
    /// added.
    pub fn start(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
        let home = tempdir("home");
        let mut cmd = Command::new(bin);
        shell_env(&mut cmd, home.path());
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let name = bin
            .file_name()
            .map_or_else(|| bin.display().to_string(), |n| n.to_string_lossy().into());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdin = child.stdin.take();
        let mut out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match out.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let stderr = spawn_reader(child.stderr.take().expect("stderr"));
        Running {
            child,
            name,
            stdin,
            stdout: rx,
            seen: Vec::new(),
            stderr: Some(stderr),
            _home: home,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Write `text` to standard input.
    pub fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("write to {}: {e}", self.name));
        stdin.flush().expect("flush stdin");
    }

    /// Close standard input (end of input for the program).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Send signal `sig` to the program.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(
            rc,
            0,
            "kill {} with {sig}: {}",
            self.name,
            std::io::Error::last_os_error()
        );
    }

    /// The exit status, if the program has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Standard output so far (lossily as text).
    pub fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Wait (bounded by [`OUTPUT_WAIT`]) until the standard output so far
    /// satisfies `pred`; that output.
    #[track_caller]
    pub fn wait_stdout_until(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + OUTPUT_WAIT;
        loop {
            let seen = self.seen();
            if pred(&seen) {
                return seen;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(chunk) => self.seen.extend_from_slice(&chunk),
                Err(_) => panic!(
                    "timed out waiting for {what} on the stdout of {}; so far:\n{}",
                    self.name,
                    escape_visible(&self.seen)
                ),
            }
        }
    }

    /// Wait until standard output (everything read so far) contains `text`.
    #[track_caller]
    pub fn wait_stdout(&mut self, text: &str) -> String {
        self.wait_stdout_until(&format!("{text:?}"), |s| s.contains(text))
    }

    /// Wait until `needle` occurs `n` times on standard output.
    #[track_caller]
    pub fn wait_stdout_count(&mut self, needle: &str, n: usize) -> String {
        self.wait_stdout_until(&format!("{n} x {needle:?}"), |s| {
            s.matches(needle).count() >= n
        })
    }

    /// Wait (bounded by `timeout`; killed, then a panic, past it) for the
    /// program to exit, standard input left as it is: the status, all of
    /// standard output and standard error.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, String, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(st) = self.try_wait() {
                break st;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not exit within {timeout:?}; killed. stdout so far:\n{}",
                    self.name,
                    escape_visible(&self.seen)
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        // The rest of standard output: what is still in the pipe (a
        // grandchild holding it open is given up on after a pause).
        while let Ok(chunk) = self.stdout.recv_timeout(Duration::from_secs(5)) {
            self.seen.extend_from_slice(&chunk);
        }
        let err = self
            .stderr
            .take()
            .expect("stderr not yet collected")
            .join()
            .expect("stderr reader");
        (status, text(&std::mem::take(&mut self.seen)), text(&err))
    }

    /// Close standard input, then [`Running::wait_exit`].
    #[track_caller]
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, String, String) {
        self.close_stdin();
        self.wait_exit(timeout)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run a prepared command with piped stdio, bounded by `timeout`;
/// standard input gets `stdin`, then end of file.
pub fn run_with_timeout(cmd: Command, stdin: &[u8], timeout: Duration) -> Output {
    run_piped(cmd, stdin, Input::Close, timeout)
}

/// Run a prepared command whose standard input stays open (and fed
/// `stdin`) until it exits by itself: the program must end on its own
/// account (a `quit`, a lost connection, a timeout), with input still
/// queued. Bounded by `timeout`.
pub fn run_with_input_open(cmd: Command, stdin: &[u8], timeout: Duration) -> Output {
    run_piped(cmd, stdin, Input::HoldOpen, timeout)
}

/// What becomes of a program's standard input once it has been fed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Closed: the program reads end of file after the input.
    Close,
    /// Kept open until the program has exited.
    HoldOpen,
}

fn run_piped(mut cmd: Command, stdin: &[u8], input: Input, timeout: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    run_configured(cmd, stdin, input, timeout)
}

/// Run a prepared command with standard output and error as the caller set
/// them (whatever is piped is collected; the rest comes back empty) and
/// `stdin` fed through a pipe, then closed or held open; bounded by
/// `timeout`.
pub fn run_configured(mut cmd: Command, stdin: &[u8], input: Input, timeout: Duration) -> Output {
    let desc = format!("{:?}", cmd);
    cmd.stdin(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
    feed_and_wait(child, &desc, stdin, input, timeout)
}

/// Feed `stdin` to a running `child` started with piped standard input
/// (closing it after, or holding it open until the child has exited), and
/// collect as [`wait_child`] does.
pub fn feed_and_wait(
    mut child: Child,
    desc: &str,
    stdin: &[u8],
    input: Input,
    timeout: Duration,
) -> Output {
    let mut sin = child.stdin.take().expect("stdin");
    let bytes = stdin.to_vec();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let writer = thread::spawn(move || {
        // The program may exit before reading everything: ignore EPIPE.
        let _ = sin.write_all(&bytes);
        if input == Input::HoldOpen {
            // Keep the pipe open until the program is gone.
            let _ = done_rx.recv();
        }
        drop(sin);
    });
    let out = wait_child(child, desc, timeout);
    drop(done_tx);
    let _ = writer.join();
    out
}

/// Collect the status and output of a running `child` (its stdin taken or
/// closed by the caller; stdout and stderr read if piped and not taken,
/// empty otherwise); kill it, then panic, if it runs longer than `timeout`.
pub fn wait_child(mut child: Child, desc: &str, timeout: Duration) -> Output {
    let out_reader = child.stdout.take().map(spawn_reader);
    let err_reader = child.stderr.take().map(spawn_reader);
    let collect = |reader: Option<thread::JoinHandle<Vec<u8>>>| {
        reader
            .map(|r| r.join().unwrap_or_default())
            .unwrap_or_default()
    };
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = collect(out_reader);
            let stderr = collect(err_reader);
            panic!(
                "TIMEOUT: {desc} did not finish within {timeout:?}; killed.\n\
                 --- stdout so far ---\n{}\n--- stderr so far ---\n{}",
                escape_visible(&stdout),
                escape_visible(&stderr)
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: collect(out_reader),
        stderr: collect(err_reader),
    }
}

fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Bytes as text with everything that is not printable ASCII escaped
/// (`\r`, `\t`, `\xNN`, `\u{...}`), one output line per input line, so that
/// differences in invisible characters show up.
pub fn escape_visible(bytes: &[u8]) -> String {
    let mut out = String::new();
    let text = String::from_utf8_lossy(bytes);
    let invalid = std::str::from_utf8(bytes).is_err();
    if invalid {
        out.push_str("[not valid UTF-8; shown lossily]\n");
    }
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    out
}

/// A readable comparison of two outputs: the first differing line and both
/// texts in full, escaped. Returns `None` when they are equal.
pub fn describe_difference(
    what: &str,
    expected_name: &str,
    expected: &[u8],
    actual_name: &str,
    actual: &[u8],
) -> Option<String> {
    if expected == actual {
        return None;
    }
    let e = escape_visible(expected);
    let a = escape_visible(actual);
    let el: Vec<&str> = e.lines().collect();
    let al: Vec<&str> = a.lines().collect();
    let mut msg = format!("{what} differs ({expected_name} vs {actual_name})\n");
    let first = (0..el.len().max(al.len()))
        .find(|&i| el.get(i) != al.get(i))
        .unwrap_or(0);
    msg.push_str(&format!("first difference at line {}:\n", first + 1));
    msg.push_str(&format!(
        "  {expected_name:>9}: {}\n",
        el.get(first).copied().unwrap_or("<end of output>")
    ));
    msg.push_str(&format!(
        "  {actual_name:>9}: {}\n",
        al.get(first).copied().unwrap_or("<end of output>")
    ));
    let from = first.saturating_sub(3);
    msg.push_str("context (- expected, + actual, lines escaped):\n");
    for i in from..(first + 4).min(el.len().max(al.len())) {
        match (el.get(i), al.get(i)) {
            (Some(x), Some(y)) if x == y => msg.push_str(&format!("   {x}\n")),
            (x, y) => {
                if let Some(x) = x {
                    msg.push_str(&format!(" - {x}\n"));
                }
                if let Some(y) = y {
                    msg.push_str(&format!(" + {y}\n"));
                }
            }
        }
    }
    msg.push_str(&format!(
        "----- {what} of {expected_name} (escaped) -----\n{e}\n\
         ----- {what} of {actual_name} (escaped) -----\n{a}\n-----"
    ));
    Some(msg)
}

// ---------------------------------------------------------------------------
// Raw QMP
// ---------------------------------------------------------------------------

/// Speak QMP directly: read the greeting, negotiate, send each line and
/// collect the reply to it (events that arrive meanwhile are skipped).
/// Returns the replies, as received (without the line terminator).
pub fn qmp_raw(socket: &Path, lines: &[&str]) -> Vec<String> {
    qmp_raw_within(socket, lines, Duration::from_secs(20))
}

/// [`qmp_raw`], failing when any read waits longer than `timeout`.
pub fn qmp_raw_within(socket: &Path, lines: &[&str], timeout: Duration) -> Vec<String> {
    try_qmp_raw_within(socket, lines, timeout).unwrap_or_else(|e| panic!("qmp_raw: {e}"))
}

/// [`qmp_raw_within`], saying what went wrong instead of panicking (for a
/// monitor whose QEMU may be on its way out).
pub fn try_qmp_raw_within(
    socket: &Path,
    lines: &[&str],
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let at = socket.display();
    let stream = UnixStream::connect(socket).map_err(|e| format!("connect {at}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| format!("set_read_timeout: {e}"))?;
    let mut writer = stream
        .try_clone()
        .map_err(|e| format!("clone stream: {e}"))?;
    let mut reader = BufReader::new(stream);
    let greeting = read_json_line(&mut reader, socket)?;
    if !greeting.contains("\"QMP\"") {
        return Err(format!("expected a greeting from {at}, got {greeting}"));
    }
    let mut send = |line: &str| -> Result<String, String> {
        writer
            .write_all(line.as_bytes())
            .and_then(|_| writer.write_all(b"\n"))
            .map_err(|e| format!("write {line}: {e}"))?;
        loop {
            let reply = read_json_line(&mut reader, socket)?;
            let is_event = serde_json::from_str::<serde_json::Value>(&reply)
                .ok()
                .and_then(|v| v.as_object().map(|o| o.contains_key("event")))
                .unwrap_or(false);
            if !is_event {
                return Ok(reply);
            }
        }
    };
    let caps = send(r#"{"execute": "qmp_capabilities"}"#)?;
    if !caps.contains("\"return\"") {
        return Err(format!("qmp_capabilities failed: {caps}"));
    }
    lines.iter().map(|l| send(l)).collect()
}

fn read_json_line<R: BufRead>(reader: &mut R, socket: &Path) -> Result<String, String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Err(format!("{} closed the connection", socket.display())),
        Ok(_) => Ok(line.trim_end_matches(['\r', '\n']).to_string()),
        Err(e) => Err(format!("read from {}: {e}", socket.display())),
    }
}

/// Each line of `bytes` parsed as one JSON value; panics on a line that is
/// not exactly one JSON value.
#[track_caller]
pub fn json_lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    let all = text(bytes);
    all.lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| {
                panic!("not one JSON value per line ({e}): {line:?}\nwhole output:\n{all}")
            })
        })
        .collect()
}

/// Event timestamps differ from run to run: blank them out.
pub fn without_timestamps(s: &str) -> String {
    let re = regex::Regex::new(r#""seconds": \d+, "microseconds": \d+"#).unwrap();
    re.replace_all(s, r#""seconds": S, "microseconds": U"#)
        .into_owned()
}

/// Output bytes as text (lossily), for assertions.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A finished process's status, stdout and stderr with escapes visible:
/// the message of a failed assertion on its output.
pub fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        escape_visible(&out.stdout),
        escape_visible(&out.stderr)
    )
}

// ---------------------------------------------------------------------------
// Processes and ports
// ---------------------------------------------------------------------------

/// The kernel function each thread of `pid` sleeps in (`/proc/PID/task/*/wchan`).
pub fn thread_wchans(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("wchan")).ok())
        .collect()
}

/// A TCP port on 127.0.0.1 that refuses connections for as long as the
/// returned descriptor lives: it is bound (port chosen by the kernel) but
/// never listens, so a connection attempt is answered with a reset, and no
/// other program can take the port meanwhile (unlike a port bound, read and
/// released).
pub fn refusing_tcp_port() -> (std::os::fd::OwnedFd, u16) {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: socket(2), bind(2), getsockname(2) on a descriptor owned here,
    // with zeroed, correctly sized address structures.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let owned = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        addr.sin_port = 0;
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = libc::bind(
            fd,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            len,
        );
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let mut bound: libc::sockaddr_in = std::mem::zeroed();
        let mut blen = len;
        let rc = libc::getsockname(
            fd,
            &mut bound as *mut libc::sockaddr_in as *mut libc::sockaddr,
            &mut blen,
        );
        assert_eq!(rc, 0, "getsockname: {}", std::io::Error::last_os_error());
        (owned, u16::from_be(bound.sin_port))
    }
}

/// The TCP port QEMU chose for the monitor chardev `label` (configured with
/// port 0, so the kernel picks a free one and no other program can race
/// for it), read back from `query-chardev` on the peer's UNIX monitor:
/// `disconnected:tcp:HOST:PORT,server=on` while nobody is connected. QEMU
/// listens on it from start-up, before its UNIX monitor accepts.
pub fn qemu_tcp_port(peer: &Peer, label: &str) -> u16 {
    let reply = qmp_raw(peer.socket(), &[r#"{"execute": "query-chardev"}"#]);
    let v: serde_json::Value = serde_json::from_str(&reply[0]).expect("query-chardev reply");
    let filename = v["return"]
        .as_array()
        .expect("a list of chardevs")
        .iter()
        .find(|c| c["label"] == label)
        .and_then(|c| c["filename"].as_str())
        .unwrap_or_else(|| panic!("no chardev {label} in {}", reply[0]))
        .to_string();
    let port = filename
        .strip_suffix(",server=on")
        .and_then(|f| f.rsplit_once(':'))
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in chardev {label}: {filename:?}"));
    assert_ne!(port, 0, "{filename}");
    port
}

/// `-M none` with, beside its UNIX monitor, a QMP monitor on TCP at
/// 127.0.0.1 (chardev `tcp4`, its port chosen by the kernel): the peer and
/// that port.
pub fn qemu_tcp4_monitor() -> (Peer, u16) {
    let peer = Peer::qemu_with_args(&[
        "-M",
        "none",
        "-chardev",
        "socket,id=tcp4,host=127.0.0.1,port=0,server=on,wait=off",
        "-mon",
        "chardev=tcp4,mode=control",
    ]);
    let port = qemu_tcp_port(&peer, "tcp4");
    (peer, port)
}
