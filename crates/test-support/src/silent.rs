//! A TCP peer on 127.0.0.1 that accepts connections and never says a
//! word: an `ssh://` host whose port is open but where no SSH server
//! speaks (a wrong port, a hung sshd). Purpose-built, since no real server
//! does this on demand. Stops, closing what it accepted, when dropped.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// The silent peer. See the [module documentation](self).
pub struct SilentPeer {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl SilentPeer {
    /// Listen on a free port of 127.0.0.1.
    pub fn start() -> SilentPeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, accepted) = (Arc::clone(&stop), Arc::clone(&accepted));
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => accepted.lock().unwrap().push(stream),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(10))
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        SilentPeer {
            port,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    /// How many connections it has taken so far.
    pub fn accepted(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    /// `ssh://127.0.0.1:PORT/PATH`, an address on it.
    pub fn address(&self, path: &str) -> String {
        format!("ssh://127.0.0.1:{}{path}", self.port)
    }

    /// An `ssh` command (`QMP_SSH_COMMAND`) that reads no configuration
    /// file and checks no host key, so that nothing but the silence
    /// stops it; with `pid_file`, it writes ssh's process id there first.
    pub fn ssh_command(pid_file: Option<&Path>) -> String {
        let ssh = "ssh -F /dev/null -o UserKnownHostsFile=/dev/null \
                   -o StrictHostKeyChecking=no";
        match pid_file {
            None => ssh.to_owned(),
            Some(file) => format!(
                "sh -c 'echo $$ > {}; exec ssh \"$@\"' ssh -F /dev/null \
                 -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no",
                file.display()
            ),
        }
    }
}

impl Drop for SilentPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
