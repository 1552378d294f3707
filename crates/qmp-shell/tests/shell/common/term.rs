//! A terminal for the interactive shell: one tmux server (on a private
//! socket, with no configuration file) with one 120x40 pane, in a private
//! directory that is also the shell's `HOME`; dropping the [`Term`] kills the
//! server and everything in it. The program runs inside `sh`, which records
//! its exit status in a file and on the screen, then reads one line (to show
//! that the terminal was left in a usable state) and stays alive so the pane
//! can still be captured.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long to wait for something to appear on the screen, unless
/// [`Term::with_deadline`] says otherwise.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// How often to look at the screen while waiting.
pub const POLL: Duration = Duration::from_millis(50);

/// Quote `s` for `sh`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub struct Term {
    /// The private directory: `home/`, `run.sh`, the `pid`, `sh.pid` and
    /// `exit` files, the tmux socket.
    pub dir: tempfile::TempDir,
    tmux_socket: PathBuf,
    /// How long to wait for something to appear (or for the shell to exit).
    deadline: Duration,
}

impl Term {
    /// Start `qmp-shell ARGS` in a 120x40 tmux pane, with a private empty
    /// `HOME`, `NO_COLOR` unset, and `env` added. Unless ARGS has its own
    /// `--retry`, the shell gets `--retry 50 --retry-delay 0.1`.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Term {
        Term::start_with_home(args, env, |_| {})
    }

    /// [`Term::start`], calling `prepare(home)` before the shell starts
    /// (e.g. to write a history file).
    pub fn start_with_home(
        args: &[&str],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&Path),
    ) -> Term {
        let mut all: Vec<&str> = Vec::new();
        if !args.contains(&"--retry") {
            // A single-client monitor may refuse a connection for a moment
            // after Peer's readiness probe went away (seen under load).
            all.extend(["--retry", "50", "--retry-delay", "0.1"]);
        }
        all.extend(args);
        Term::launch(&super::ours(), &all, env, prepare, "")
    }

    /// Start `PROGRAM ARGS TAIL` in the pane, where `tail` is raw shell
    /// text (a pipe, say) and the rest is quoted.
    pub fn launch(
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&Path),
        tail: &str,
    ) -> Term {
        let dir = tempfile::Builder::new()
            .prefix("qmp-term-")
            .tempdir_in(std::env::temp_dir())
            .expect("create temporary directory");
        let home = dir.path().join("home");
        std::fs::create_dir(&home).expect("mkdir home");
        prepare(&home);
        let exit_file = dir.path().join("exit");
        let mut script = String::from("#!/bin/sh\n");
        script.push_str(&format!("cd {}\n", sh_quote(dir.path().to_str().unwrap())));
        script.push_str("echo $$ > sh.pid\n");
        script.push_str(&format!(
            "export HOME={} LC_ALL=C.UTF-8 LANG=C.UTF-8\n",
            sh_quote(home.to_str().unwrap())
        ));
        script.push_str("unset NO_COLOR QMP_SOCKET PYTHONWARNINGS\n");
        // Ctrl-C while the shell waits (cooked mode) is a SIGINT to the
        // whole foreground group, this script included: an interactive
        // login shell would have put the program in a group of its own.
        // Survive it (a caught signal is reset to default in the program).
        script.push_str("trap : INT\n");
        for (k, v) in env {
            script.push_str(&format!("export {k}={}\n", sh_quote(v)));
        }
        // The shell runs through a script that records its pid (the script
        // replaces itself with the shell: same pid).
        let exec_script = dir.path().join("exec.sh");
        let pid_file = dir.path().join("pid");
        std::fs::write(
            &exec_script,
            format!(
                "echo $$ > {pid}.tmp && mv {pid}.tmp {pid} && exec \"$@\"\n",
                pid = sh_quote(pid_file.to_str().unwrap())
            ),
        )
        .expect("write exec.sh");
        let mut command = format!(
            "sh {} {}",
            sh_quote(exec_script.to_str().unwrap()),
            sh_quote(program.to_str().unwrap())
        );
        for a in args {
            command.push(' ');
            command.push_str(&sh_quote(a));
        }
        command.push_str(tail);
        script.push_str(&command);
        script.push('\n');
        script.push_str(&format!(
            "code=$?\n\
             echo \"EXIT=$code\" > {exit}.tmp && mv {exit}.tmp {exit}\n\
             echo \"EXIT=$code\"\n\
             read line\n\
             echo \"READ=[$line]\"\n\
             exec sleep 600\n",
            exit = sh_quote(exit_file.to_str().unwrap())
        ));
        let script_path = dir.path().join("run.sh");
        std::fs::write(&script_path, script).expect("write run.sh");
        let term = Term {
            tmux_socket: dir.path().join("tmux.sock"),
            dir,
            deadline: DEADLINE,
        };
        let status = term
            .tmux()
            .args(["new-session", "-d", "-s", "main", "-x", "120", "-y", "40"])
            .arg(format!("sh {}", sh_quote(script_path.to_str().unwrap())))
            .status()
            .expect("run tmux (is it installed?)");
        assert!(status.success(), "tmux new-session failed: {status}");
        term
    }

    /// Wait up to `deadline` (instead of [`DEADLINE`]) for what the screen
    /// should show and for the shell to exit.
    pub fn with_deadline(mut self, deadline: Duration) -> Term {
        self.deadline = deadline;
        self
    }

    /// A `tmux` command talking to this terminal's private server.
    pub fn tmux(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.arg("-S")
            .arg(&self.tmux_socket)
            .args(["-f", "/dev/null"])
            .env_remove("TMUX")
            .env("HOME", self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    /// The shell's process id (once it has started).
    pub fn shell_pid(&self) -> u32 {
        let file = self.dir.path().join("pid");
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                return text
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("bad pid file content {text:?}"));
            }
            if start.elapsed() > self.deadline {
                panic!("{}", self.failure("timed out waiting for the shell's pid"));
            }
            thread::sleep(POLL);
        }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn send_keys(&self, literal: bool, keys: &[&str]) {
        let mut cmd = self.tmux();
        cmd.args(["send-keys", "-t", "main"]);
        if literal {
            cmd.arg("-l");
        }
        let out = cmd.arg("--").args(keys).output().expect("tmux send-keys");
        assert!(
            out.status.success(),
            "tmux send-keys {keys:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Type `text` literally.
    pub fn type_text(&self, text: &str) {
        self.send_keys(true, &[text]);
    }

    /// Press keys by tmux name (`Enter`, `Tab`, `C-c`, `C-d`, `Up`...).
    pub fn press(&self, keys: &[&str]) {
        self.send_keys(false, keys);
    }

    /// Type `text` and press Enter.
    pub fn line(&self, text: &str) {
        self.type_text(text);
        self.press(&["Enter"]);
    }

    pub fn capture(&self, escapes: bool) -> String {
        let mut cmd = self.tmux();
        // -J joins wrapped lines; -S - includes the scrollback.
        cmd.args(["capture-pane", "-p", "-J", "-S", "-", "-t", "main"]);
        if escapes {
            cmd.arg("-e");
        }
        let out = cmd.output().expect("tmux capture-pane");
        assert!(
            out.status.success(),
            "tmux capture-pane failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines: Vec<&str> = text.lines().map(str::trim_end).collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines.join("\n")
    }

    /// The whole screen (and scrollback) as text, without attributes.
    pub fn screen(&self) -> String {
        self.capture(false)
    }

    /// The last non-empty line on the screen (the line being edited).
    pub fn current_line(&self) -> String {
        self.screen().lines().last().unwrap_or_default().to_string()
    }

    /// Wait until `pred(screen)` holds; panic with the screen after the
    /// deadline.
    pub fn wait_until(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            if start.elapsed() > self.deadline {
                panic!("{}", self.failure(&format!("timed out waiting for {what}")));
            }
            thread::sleep(POLL);
        }
    }

    /// Wait until the screen contains `needle`.
    pub fn wait_for(&self, needle: &str) -> String {
        self.wait_until(&format!("{needle:?} on the screen"), |s| s.contains(needle))
    }

    /// Wait until `needle` occurs `n` times on the screen.
    pub fn wait_count(&self, needle: &str, n: usize) -> String {
        self.wait_until(&format!("{n} x {needle:?} on the screen"), |s| {
            s.matches(needle).count() >= n
        })
    }

    /// Wait until `n` lines are exactly `line`.
    pub fn wait_count_lines(&self, line: &str, n: usize) -> String {
        self.wait_until(&format!("{n} lines {line:?}"), |s| {
            s.lines().filter(|l| *l == line).count() >= n
        })
    }

    /// Wait until the line being edited is exactly `line`.
    pub fn wait_line(&self, line: &str) -> String {
        self.wait_until(&format!("the current line to be {line:?}"), |s| {
            s.lines().last().unwrap_or_default() == line.trim_end()
        })
    }

    /// Wait until the shell has exited, and return its exit status.
    pub fn wait_exit(&self) -> i32 {
        let file = self.dir.path().join("exit");
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let code = text.trim().strip_prefix("EXIT=").unwrap_or_default();
                return code
                    .parse()
                    .unwrap_or_else(|_| panic!("bad exit file content {text:?}"));
            }
            if start.elapsed() > self.deadline {
                panic!(
                    "{}",
                    self.failure("timed out waiting for the shell to exit")
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Check that the shell left the terminal usable: a line typed at the
    /// `read` that follows it is echoed and read whole.
    pub fn assert_terminal_usable(&self) {
        // (After Ctrl-C in cooked mode, the terminal's own "^C" may
        // precede it on the line.)
        self.wait_until("the EXIT= line", |s| s.lines().any(|l| l.contains("EXIT=")));
        self.line("still-usable");
        self.wait_for("READ=[still-usable]");
        let screen = self.screen();
        assert!(
            screen.lines().any(|l| l.trim() == "still-usable"),
            "{}",
            self.failure("the typed line was not echoed: terminal left in raw mode?")
        );
    }

    pub fn failure(&self, msg: &str) -> String {
        format!(
            "{msg}\n----- screen -----\n{}\n------------------",
            self.screen()
        )
    }

    /// Press Tab (after clearing the line and typing `text`) until the line
    /// being edited becomes `expected`: completion data is learnt in the
    /// background after connecting, and Tab offers nothing until then.
    pub fn tab_until(&self, prompt: &str, text: &str, expected: &str) {
        let want = format!("{prompt} {expected}");
        let start = Instant::now();
        loop {
            self.press(&["C-u"]);
            self.type_text(text);
            self.press(&["Tab"]);
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(500) {
                if self.current_line() == want.trim_end() {
                    return;
                }
                thread::sleep(POLL);
            }
            if start.elapsed() > self.deadline {
                panic!(
                    "{}",
                    self.failure(&format!("Tab after {text:?} never gave {expected:?}"))
                );
            }
        }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        // The pane's `sh` and the shell first, with SIGKILL, and wait until
        // they are gone: `sh` would otherwise write its exit file into the
        // directory while it is being removed, and leave it behind.
        for file in ["sh.pid", "pid"] {
            let Some(pid) = std::fs::read_to_string(self.dir.path().join(file))
                .ok()
                .and_then(|t| t.trim().parse::<libc::pid_t>().ok())
            else {
                continue;
            };
            // SAFETY: kill(2) on a pid this terminal recorded.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let start = Instant::now();
            while start.elapsed() < self.deadline {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let state = stat
                    .rsplit_once(')')
                    .and_then(|(_, r)| r.trim_start().chars().next());
                if matches!(state, None | Some('Z') | Some('X')) {
                    break;
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = self
            .tmux()
            .arg("kill-server")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
