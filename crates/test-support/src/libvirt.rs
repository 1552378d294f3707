//! libvirt for integration tests: the real libvirtd (started with the
//! project's `scripts/install-deps.sh` when it does not answer), and
//! transient TCG domains made for one test, each with a QMP socket of the
//! test's own beside libvirt's monitor ("the side socket"), to compare what
//! comes through libvirt with what QEMU says on a socket, and to cause
//! events. Every domain is destroyed when dropped, on failure too.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tempfile::TempDir;

/// A QMP message: a JSON object.
pub type Object = Map<String, Value>;

/// The local libvirtd.
pub const URI: &str = "qemu:///system";
/// How long any single wait of the harness (a domain's side socket coming
/// up, a reply on it) may take; the tests' own waits too, unless they set
/// their own bound.
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

/// A domain name no other test (nor another run) uses:
/// `qmp-test-BINARY-TAG-PID-N`, BINARY being the test binary that runs
/// (`qmp`, `shell`, `inspector`).
pub fn unique_name(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let exe = std::env::current_exe().expect("the test binary's path");
    let stem = exe
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Cargo names it NAME-HASH.
    let binary = stem
        .rsplit_once('-')
        .map_or(stem.as_str(), |(name, _)| name);
    format!(
        "qmp-test-{binary}-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// `agent`: with a guest agent channel (no guest runs an agent on it).
fn domain_xml(name: &str, uuid: &str, dir: &Path, agent: bool) -> String {
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
         <name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>64</memory><vcpu>2</vcpu>\n\
         <os><type arch='x86_64' machine='pc'>hvm</type></os>\n\
         <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>{channel}</devices>\n\
         <qemu:commandline><qemu:arg value='-qmp'/>\
         <qemu:arg value='unix:{}/side.sock,server=on,wait=off'/></qemu:commandline>\n\
         </domain>\n",
        dir.display()
    )
}

/// A libvirt domain made for one test: transient and running
/// ([`TestDomain::start`]) or defined and stopped ([`TestDomain::define`]).
/// Destroyed (and undefined) when dropped, on panic too. virsh is given
/// its UUID, never its name, which may be another domain's id.
pub struct TestDomain {
    pub name: String,
    /// Its UUID, chosen by the test.
    pub uuid: String,
    dir: TempDir,
    defined: bool,
}

impl TestDomain {
    /// The domain, not created yet ([`TestDomain::create`] starts it).
    pub fn new(tag: &str, agent: bool) -> TestDomain {
        TestDomain::named(&unique_name(tag), agent)
    }

    /// The domain called `name`, which no other test may use (a name that
    /// is another domain's id, say), not created yet.
    pub fn named(name: &str, agent: bool) -> TestDomain {
        ensure_libvirtd();
        let dir = tempfile::tempdir().expect("tempdir");
        // QEMU runs as another process and must reach the side socket.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod 0755");
        let name = name.to_owned();
        let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .expect("a random UUID from the kernel")
            .trim()
            .to_owned();
        std::fs::write(
            dir.path().join("dom.xml"),
            domain_xml(&name, &uuid, dir.path(), agent),
        )
        .expect("write dom.xml");
        TestDomain {
            name,
            uuid,
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

    /// The test's temporary directory (the domain's XML, the side socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
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

    /// The domain's id, as virsh gives it, and its UUID.
    pub fn id_and_uuid(&self) -> (String, String) {
        let id = virsh_ok(&["domid", &self.uuid]).trim().to_owned();
        (id, self.uuid.clone())
    }

    /// Destroy the domain (a transient one is gone then); errors ignored.
    pub fn destroy(&self) {
        let _ = virsh(&["destroy", &self.uuid]);
    }
}

impl Drop for TestDomain {
    fn drop(&mut self) {
        self.destroy();
        if self.defined {
            let _ = virsh(&["undefine", &self.uuid]);
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
/// kept aside. QEMU ends every message with a line end.
pub struct SideMonitor {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    /// QEMU's greeting.
    pub greeting: Object,
    /// Events received while waiting for replies.
    pub events: Vec<Object>,
}

impl SideMonitor {
    fn connect(path: &Path) -> SideMonitor {
        let stream = UnixStream::connect(path).expect("connect to the side socket");
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone the side socket"));
        let mut side = SideMonitor {
            stream,
            reader,
            greeting: Object::new(),
            events: Vec::new(),
        };
        side.greeting = side.next();
        assert!(
            side.greeting.contains_key("QMP"),
            "greeting: {:?}",
            side.greeting
        );
        let r = side.execute(r#"{"execute":"qmp_capabilities"}"#);
        assert!(r.contains_key("return"), "qmp_capabilities: {r:?}");
        side
    }

    fn next(&mut self) -> Object {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .expect("read from the side socket");
        assert!(n > 0, "the side socket closed");
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("QEMU sends JSON objects ({e}): {line:?}"))
    }

    /// Send `json` (a whole command) and return its reply; events are kept
    /// aside.
    pub fn execute(&mut self, json: &str) -> Object {
        self.stream
            .write_all(json.as_bytes())
            .expect("write to the side socket");
        loop {
            let msg = self.next();
            if msg.contains_key("event") {
                self.events.push(msg);
            } else {
                return msg;
            }
        }
    }

    /// The next event named `name`, among those kept or still to come.
    pub fn event(&mut self, name: &str) -> Object {
        if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
            return self.events.remove(i);
        }
        loop {
            let msg = self.next();
            if msg["event"] == name {
                return msg;
            }
        }
    }
}
