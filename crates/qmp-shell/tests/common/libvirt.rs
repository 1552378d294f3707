//! libvirt for the shell's tests: the real libvirtd (started with the
//! project's `scripts/install-deps.sh` when it does not answer), and
//! transient TCG domains made for one test, each with a QMP socket of the
//! test's own beside libvirt's monitor ("the side socket"), to compare the
//! shell's output through libvirt with its output on a socket, and to cause
//! events. Every domain is destroyed when dropped, on failure too.
//!
//! Include it with `#[path = "common/libvirt.rs"] mod libvirt;`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The local libvirtd.
pub const URI: &str = "qemu:///system";
/// How long any single wait may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// Run `virsh -c URI ARGS...`.
pub fn virsh(args: &[&str]) -> Output {
    Command::new("virsh")
        .arg("-c")
        .arg(URI)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run virsh (install-deps.sh installs it): {e}"))
}

/// `virsh ARGS...`, which must succeed; its standard output.
pub fn virsh_ok(args: &[&str]) -> String {
    let out = virsh(args);
    assert!(
        out.status.success(),
        "virsh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn libvirtd_answers() -> bool {
    Command::new("virsh")
        .args(["-c", URI, "list"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// libvirtd must answer; if it does not, start it with the project's
/// script (once per process), else fail saying how to fix it.
pub fn ensure_libvirtd() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        if libvirtd_answers() {
            return Ok(());
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-deps.sh");
        let status = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if status.success() && libvirtd_answers() {
            Ok(())
        } else {
            Err(format!(
                "libvirtd does not answer on {URI}, and {} did not start it ({status}); \
                 run it as root and see its output",
                script.display()
            ))
        }
    });
    if let Err(e) = ready {
        panic!("{e}");
    }
}

/// A domain name no other test (nor another run) uses.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "qmp-shell-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// `agent`: with a guest agent channel (no guest runs an agent on it).
fn domain_xml(name: &str, dir: &Path, agent: bool) -> String {
    let channel = if agent {
        format!(
            "<channel type='unix'><source mode='bind' path='{}/agent.sock'/>\
             <target type='virtio' name='org.qemu.guest_agent.0'/></channel>",
            dir.display()
        )
    } else {
        String::new()
    };
    format!(
        "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n\
         <name>{name}</name><memory unit='MiB'>64</memory><vcpu>2</vcpu>\n\
         <os><type arch='x86_64' machine='pc'>hvm</type></os>\n\
         <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>{channel}</devices>\n\
         <qemu:commandline><qemu:arg value='-qmp'/>\
         <qemu:arg value='unix:{}/side.sock,server=on,wait=off'/></qemu:commandline>\n\
         </domain>\n",
        dir.display()
    )
}

/// A libvirt domain made for one test: transient and running, or defined
/// and stopped. Destroyed (and undefined) when dropped, on panic too.
pub struct TestDomain {
    pub name: String,
    dir: TempDir,
    defined: bool,
}

impl TestDomain {
    /// The domain, not created yet ([`TestDomain::create`] starts it).
    pub fn new(tag: &str, agent: bool) -> TestDomain {
        ensure_libvirtd();
        let dir = tempfile::tempdir().expect("tempdir");
        // QEMU runs as another process and must reach the side socket.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod 0755");
        let name = unique_name(tag);
        std::fs::write(
            dir.path().join("dom.xml"),
            domain_xml(&name, dir.path(), agent),
        )
        .expect("write dom.xml");
        TestDomain {
            name,
            dir,
            defined: false,
        }
    }

    /// A running transient domain whose side socket accepts connections.
    pub fn start(tag: &str) -> TestDomain {
        TestDomain::start_with(tag, false)
    }

    /// A running transient domain, with a guest agent channel if `agent`.
    pub fn start_with(tag: &str, agent: bool) -> TestDomain {
        let d = TestDomain::new(tag, agent);
        d.create();
        d
    }

    /// Create (start) the transient domain and wait for its side socket.
    pub fn create(&self) {
        let xml = self.dir.path().join("dom.xml");
        virsh_ok(&["create", xml.to_str().expect("utf-8 path")]);
        let deadline = Instant::now() + WAIT;
        while UnixStream::connect(self.side_path()).is_err() {
            assert!(Instant::now() < deadline, "the side socket never came up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A persistent domain that is not running.
    pub fn define(tag: &str) -> TestDomain {
        let mut d = TestDomain::new(tag, false);
        let xml = d.dir.path().join("dom.xml");
        virsh_ok(&["define", xml.to_str().expect("utf-8 path")]);
        d.defined = true;
        d
    }

    /// The side socket's path.
    pub fn side_path(&self) -> PathBuf {
        self.dir.path().join("side.sock")
    }

    /// The side socket's path, as a string.
    pub fn side(&self) -> String {
        self.side_path().to_str().expect("utf-8 path").to_owned()
    }

    /// A QMP client of the test's own on the side socket.
    pub fn side_monitor(&self) -> SideMonitor {
        SideMonitor::connect(&self.side_path())
    }

    /// The QEMU process's pid, from libvirt's pid file.
    pub fn qemu_pid(&self) -> i32 {
        let path = format!("/run/libvirt/qemu/{}.pid", self.name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.trim().parse().expect("a pid")
    }

    /// Stop QEMU's process (SIGSTOP) until the guard is dropped.
    pub fn freeze(&self) -> Frozen {
        let pid = self.qemu_pid();
        // SAFETY: kill(2) on the pid of the test's own QEMU.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP");
        Frozen(pid)
    }

    /// The domain's id and UUID, as virsh gives them.
    pub fn id_and_uuid(&self) -> (String, String) {
        let id = virsh_ok(&["domid", &self.name]).trim().to_owned();
        let uuid = virsh_ok(&["domuuid", &self.name]).trim().to_owned();
        (id, uuid)
    }
}

impl Drop for TestDomain {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.name]);
        if self.defined {
            let _ = virsh(&["undefine", &self.name]);
        }
    }
}

/// A QEMU process stopped with SIGSTOP; continued when dropped.
pub struct Frozen(i32);

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid that `freeze` stopped.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// A plain QMP client on the side socket: commands one at a time, events
/// kept aside.
pub struct SideMonitor {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    /// Events received while waiting for replies.
    pub events: Vec<serde_json::Value>,
}

impl SideMonitor {
    fn connect(path: &Path) -> SideMonitor {
        let stream = UnixStream::connect(path).expect("connect to the side socket");
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        let mut m = SideMonitor {
            writer: stream.try_clone().expect("clone"),
            reader: BufReader::new(stream),
            events: Vec::new(),
        };
        let greeting = m.next();
        assert!(greeting.get("QMP").is_some(), "greeting: {greeting}");
        let r = m.execute("qmp_capabilities");
        assert!(r.get("return").is_some(), "qmp_capabilities: {r}");
        m
    }

    fn next(&mut self) -> serde_json::Value {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .expect("read the side socket");
        assert!(n > 0, "the side socket closed");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
    }

    /// Run `command` (no arguments) and return its reply.
    pub fn execute(&mut self, command: &str) -> serde_json::Value {
        writeln!(self.writer, "{{\"execute\": \"{command}\"}}").expect("write the side socket");
        loop {
            let msg = self.next();
            if msg.get("event").is_some() {
                self.events.push(msg);
            } else {
                return msg;
            }
        }
    }
}
