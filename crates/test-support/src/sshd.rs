//! A real sshd on 127.0.0.1 for tests of `ssh://` addresses: throwaway
//! host and client keys in a private temporary directory, a port picked
//! and verified, and a client configuration to reach it. Killed, and its
//! directory removed, when dropped.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;

const SSHD: &str = "/usr/sbin/sshd";

/// How long sshd may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The host name the client configuration maps to 127.0.0.1.
pub const HOST: &str = "qmp-test-host";

/// A running sshd.
pub struct Sshd {
    child: Child,
    dir: TempDir,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    /// What sshd wrote on standard error (it logs with `-e`).
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    /// Start sshd with the options of PEERS.md.
    pub fn start() -> Sshd {
        Sshd::start_with(&[])
    }

    /// Start sshd with extra `-o` options (`"AllowStreamLocalForwarding=no"`).
    pub fn start_with(extra: &[&str]) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: run scripts/install-deps.sh (openssh-server)"
        );
        // sshd refuses to start without its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let mut dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_owned();
        let d = d.as_path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        keygen(&d.join("other_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys"))
            .expect("authorized_keys");
        // An empty configuration: only the options below, whatever
        // /etc/ssh/sshd_config says.
        std::fs::write(d.join("sshd_config"), "").expect("sshd_config");

        // A free port: bind port 0, release it, and start sshd on it; if
        // something else took it meanwhile, sshd exits and we pick again.
        for _ in 0..10 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let (child, log, listening) = spawn_sshd(d, port, extra);
            let mut sshd = Sshd {
                child,
                dir,
                port,
                log,
            };
            if listening {
                sshd.write_config("ssh_config", &sshd.client_key());
                return sshd;
            }
            let _ = sshd.child.kill();
            let _ = sshd.child.wait();
            let log = sshd.log();
            assert!(
                log.iter().any(|l| l.contains("Address already in use")),
                "sshd did not start: {log:?}"
            );
            // Take the directory back for the next attempt.
            dir = std::mem::replace(&mut sshd.dir, tempfile::tempdir().expect("tempdir"));
        }
        panic!("sshd: no free port after 10 attempts");
    }

    /// The private directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The client key that authorized_keys holds.
    pub fn client_key(&self) -> PathBuf {
        self.dir().join("client_key")
    }

    /// A key the server does not know.
    pub fn other_key(&self) -> PathBuf {
        self.dir().join("other_key")
    }

    /// The client configuration: `ssh -F THIS HOST` reaches the server.
    pub fn config(&self) -> PathBuf {
        self.dir().join("ssh_config")
    }

    /// A `QMP_SSH_COMMAND` value for the server: `ssh -F DIR/ssh_config`.
    pub fn ssh_command(&self) -> String {
        command_for(&self.config())
    }

    /// Write another client configuration `name` that logs in with
    /// `identity`, and return its path.
    pub fn write_config(&self, name: &str, identity: &Path) -> PathBuf {
        let path = self.dir().join(name);
        let text = format!(
            "Host *\n\
             \tHostName 127.0.0.1\n\
             \tPort {}\n\
             \tUser root\n\
             \tIdentityFile {}\n\
             \tIdentitiesOnly yes\n\
             \tStrictHostKeyChecking no\n\
             \tUserKnownHostsFile /dev/null\n\
             \tBatchMode yes\n\
             \tLogLevel ERROR\n",
            self.port,
            identity.display()
        );
        std::fs::write(&path, text).expect("write ssh_config");
        path
    }

    /// A `QMP_SSH_COMMAND` value for the configuration at `config`.
    pub fn command_with(&self, config: &Path) -> String {
        command_for(config)
    }

    /// What sshd logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn command_for(config: &Path) -> String {
    shell_words::join(["ssh", "-F", config.to_str().expect("utf-8 path")])
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "qmp-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("run ssh-keygen (openssh-client)");
    assert!(status.success(), "ssh-keygen failed: {status}");
}

/// Start sshd on `port` and wait until it listens or exits. Its standard
/// error is read by a thread into the returned log.
fn spawn_sshd(dir: &Path, port: u16, extra: &[&str]) -> (Child, Arc<Mutex<Vec<String>>>, bool) {
    let d = dir.display();
    let mut cmd = Command::new(SSHD);
    cmd.args(["-D", "-e"])
        .arg("-f")
        .arg(format!("{d}/sshd_config"))
        .arg("-p")
        .arg(port.to_string())
        .arg("-h")
        .arg(format!("{d}/host_key"))
        .args(["-o", "ListenAddress=127.0.0.1"])
        .args(["-o", "PermitRootLogin=prohibit-password"])
        .arg("-o")
        .arg(format!("AuthorizedKeysFile={d}/authorized_keys"))
        .args(["-o", "StrictModes=no"])
        .args(["-o", "PidFile=none"]);
    let mut has_forwarding = false;
    for opt in extra {
        has_forwarding |= opt.starts_with("AllowStreamLocalForwarding");
        cmd.args(["-o", opt]);
    }
    if !has_forwarding {
        cmd.args(["-o", "AllowStreamLocalForwarding=yes"]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: prctl(2) only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // Never outlive the test process.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start sshd");
    let stderr = child.stderr.take().expect("sshd stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let thread_log = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("Server listening on") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(true);
                }
            }
            thread_log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line);
        }
        // End of its output: sshd exited.
        if let Some(tx) = tx {
            let _ = tx.send(false);
        }
    });
    let listening = rx
        .recv_timeout(START_TIMEOUT)
        .unwrap_or_else(|_| panic!("sshd did not start listening within {START_TIMEOUT:?}"));
    (child, log, listening)
}
