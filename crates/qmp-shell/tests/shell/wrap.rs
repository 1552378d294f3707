//! `qmp-shell-wrap` against real QEMU: the session, and that QEMU is stopped
//! and the private socket directory removed however the session ends (end
//! of input, `quit`, SIGTERM, SIGINT, a QEMU that never connects).
//!
//! Every test runs the wrap with `TMPDIR` set to a directory of its own, so
//! that it can find the wrap's `qmp-shell-wrap-*` directory, and find QEMU
//! in `/proc` by that path on its command line.

use crate::common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use common::*;

const QEMU_ARGS: [&str; 6] = ["--", "qemu-system-x86_64", "-M", "none", "-display", "none"];

fn qemu_args() -> Vec<&'static str> {
    let mut v = QEMU_ARGS.to_vec();
    v.push("-nodefaults");
    v
}

/// The `qmp-shell-wrap-*` entries of `tmp`.
fn wrap_dirs(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", tmp.display()))
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("qmp-shell-wrap-")
        })
        .map(|e| e.path())
        .collect()
}

/// Live (not zombie) processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmdline).contains(needle) {
            continue;
        }
        if !process_alive(pid) {
            continue;
        }
        found.push(pid);
    }
    found
}

/// Whether `pid` exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the `(comm)` field.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("?");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// A running `qmp-shell-wrap` with stdin kept open, with a private
/// `TMPDIR` (where it makes its directory).
struct Wrap {
    run: Running,
    /// `None` once [`Wrap::finish`] handed it out.
    tmp: Option<tempfile::TempDir>,
}

impl Wrap {
    fn start(args: &[&str]) -> Wrap {
        let tmp = tempfile::Builder::new()
            .prefix("qmp-wt-")
            .tempdir()
            .unwrap();
        let run = Running::start(
            &ours_wrap(),
            args,
            &[("TMPDIR", tmp.path().to_str().unwrap())],
        );
        Wrap {
            run,
            tmp: Some(tmp),
        }
    }

    fn tmp_path(&self) -> &Path {
        self.tmp.as_ref().expect("tmp").path()
    }

    fn tmp_str(&self) -> &str {
        self.tmp_path().to_str().unwrap()
    }

    /// Wait until stdout contains `text` (everything read so far counts).
    fn wait_stdout(&mut self, text: &str) {
        self.run.wait_stdout(text);
    }

    fn send(&mut self, line: &str) {
        self.run.send(line);
    }

    fn close_stdin(&mut self) {
        self.run.close_stdin();
    }

    /// The single wrap directory (waiting for it to appear).
    fn dir(&self) -> PathBuf {
        let mut dirs = Vec::new();
        wait_until("the wrap's directory", Duration::from_secs(10), || {
            dirs = wrap_dirs(self.tmp_path());
            !dirs.is_empty()
        });
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        dirs.pop().unwrap()
    }

    /// QEMU's pid: the one live process with our TMPDIR on its command line.
    fn qemu_pid(&self) -> u32 {
        let mut pids = Vec::new();
        wait_until("QEMU to start", Duration::from_secs(10), || {
            pids = processes_mentioning(self.tmp_str());
            !pids.is_empty()
        });
        assert_eq!(pids.len(), 1, "more than one process: {pids:?}");
        let pid = pids[0];
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            cmdline.starts_with("qemu-system-x86_64 ") && cmdline.contains("-qmp unix:"),
            "not QEMU: {cmdline}"
        );
        // It is the wrap's child.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid: u32 = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        assert_eq!(ppid, self.run.pid(), "QEMU is not the wrap's child");
        pid
    }

    /// Wait (bounded) for the wrap to exit, standard input left as it is;
    /// returns status, stdout, stderr and the `TMPDIR`.
    fn finish(mut self, timeout: Duration) -> (ExitStatus, String, String, tempfile::TempDir) {
        let (status, stdout, stderr) = self.run.wait_exit(timeout);
        let tmp = self.tmp.take().unwrap();
        (status, stdout, stderr, tmp)
    }
}

/// After the wrap is gone: QEMU too, and nothing left in TMPDIR.
fn assert_cleaned_up(qemu: u32, tmp: &Path) {
    wait_until("QEMU to be gone", Duration::from_secs(10), || {
        !process_alive(qemu)
    });
    let left = wrap_dirs(tmp);
    assert!(left.is_empty(), "wrap directory left behind: {left:?}");
    let all: Vec<_> = std::fs::read_dir(tmp).unwrap().flatten().collect();
    assert!(all.is_empty(), "TMPDIR not empty: {all:?}");
}

/// Run the wrap to completion with `TMPDIR` private and `stdin` fed.
fn run_wrap(args: &[&str], stdin: &str, timeout: Duration) -> (Output, tempfile::TempDir) {
    let tmp = tempfile::Builder::new()
        .prefix("qmp-wt-")
        .tempdir()
        .unwrap();
    let out = run_shell_env(
        &ours_wrap(),
        args,
        stdin,
        timeout,
        &[("TMPDIR", tmp.path().to_str().unwrap())],
    );
    (out, tmp)
}

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

#[test]
fn session_on_default_argv_then_cleanup() {
    let mut w = Wrap::start(&qemu_args());
    let dir = w.dir();
    let qemu = w.qemu_pid();
    w.send("query-status\n");
    w.wait_stdout("\"running\": true}}\n");
    // While the session runs: a private 0700 directory holding the socket.
    let meta = std::fs::metadata(&dir).unwrap();
    assert!(meta.is_dir());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o700,
        "{}",
        dir.display()
    );
    let cmdline = std::fs::read(format!("/proc/{qemu}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains(&format!("-qmp unix:{}", dir.display())),
        "{cmdline}"
    );
    w.close_stdin();
    let (status, stdout, stderr, tmp) = w.finish(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{stdout}\n{stderr}");
    let version = stdout
        .lines()
        .nth(1)
        .and_then(|l| l.strip_prefix("Connected to QEMU "))
        .unwrap_or_else(|| panic!("no version line: {stdout}"));
    assert!(version.starts_with("7."), "{stdout}");
    assert_eq!(
        stdout,
        format!(
            "Welcome to the QMP low-level shell!\nConnected to QEMU {version}\n\n\
             (QEMU) {{\"return\": {{\"status\": \"running\", \"singlestep\": false, \"running\": true}}}}\n\
             (QEMU) \n"
        ),
        "stderr: {stderr}"
    );
    assert_cleaned_up(qemu, tmp.path());
}

#[test]
fn one_shot_run_prints_banner_and_status() {
    let (out, tmp) = run_wrap(&qemu_args(), "query-status\n", SHELL_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("Welcome to the QMP low-level shell!\nConnected to QEMU 7."),
        "{}",
        show(&out)
    );
    assert!(stdout.contains(r#""status": "running""#), "{}", show(&out));
    assert!(processes_mentioning(tmp.path().to_str().unwrap()).is_empty());
    assert!(wrap_dirs(tmp.path()).is_empty(), "{}", show(&out));
}

#[test]
fn quit_ends_qemu_and_the_wrap() {
    let mut w = Wrap::start(&qemu_args());
    let qemu = w.qemu_pid();
    w.send("quit\n");
    w.wait_stdout("{\"return\": {}}");
    // QEMU exits on its own after `quit` (the wrap has not ended yet).
    wait_until("QEMU to exit after quit", Duration::from_secs(10), || {
        !process_alive(qemu)
    });
    w.close_stdin();
    let (status, stdout, stderr, tmp) = w.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.ends_with("(QEMU) {\"return\": {}}\n(QEMU) \n"),
        "{stdout}"
    );
    assert_cleaned_up(qemu, tmp.path());
}

#[test]
fn quit_piped_exits_zero_without_hanging() {
    // The reference waits for QEMU forever after end of input.
    // run_wrap fails (and kills the wrap) past 10 s.
    let (out, tmp) = run_wrap(&qemu_args(), "quit\n", Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(QEMU) {\"return\": {}}\n"),
        "{}",
        show(&out)
    );
    assert!(processes_mentioning(tmp.path().to_str().unwrap()).is_empty());
    assert!(wrap_dirs(tmp.path()).is_empty());
}

#[test]
fn command_after_quit_reports_disconnected() {
    let mut w = Wrap::start(&qemu_args());
    let qemu = w.qemu_pid();
    w.send("quit\n");
    w.wait_stdout("{\"return\": {}}");
    wait_until("QEMU to exit after quit", Duration::from_secs(10), || {
        !process_alive(qemu)
    });
    // The connection is gone: the next command reports it and the wrap
    // ends at once, without waiting for more input (stdin stays open).
    w.send("query-status\n");
    let (status, _stdout, stderr, tmp) = w.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr, "Disconnected\n");
    assert_cleaned_up(qemu, tmp.path());
}

#[test]
fn banner_and_prompt_come_before_any_input() {
    // A program driving the wrap through pipes waits for the prompt before
    // it writes a command (as with the reference, whose prompt is printed
    // before each read): the banner, the prompt, and the prompt after each
    // reply must be on stdout while the wrap waits for the next line.
    let mut w = Wrap::start(&qemu_args());
    let qemu = w.qemu_pid();
    w.wait_stdout("Connected to QEMU 7.");
    w.wait_stdout("\n\n(QEMU) ");
    w.send("query-status\n");
    w.wait_stdout("\"running\": true}}\n(QEMU) ");
    w.close_stdin();
    let (status, stdout, stderr, tmp) = w.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{stdout}\n{stderr}");
    assert_cleaned_up(qemu, tmp.path());
}

// ---------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------

fn signal_while_waiting(sig: i32) {
    let mut w = Wrap::start(&qemu_args());
    let dir = w.dir();
    let qemu = w.qemu_pid();
    w.send("query-status\n");
    w.wait_stdout("\"running\": true}}\n");
    assert!(dir.is_dir());
    w.run.signal(sig);
    let (status, _stdout, stderr, tmp) = w.finish(Duration::from_secs(15));
    assert_eq!(
        status.code(),
        Some(128 + sig),
        "wrap ended with {status:?} (signal {:?}); stderr: {stderr}",
        status.signal()
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(!stderr.contains("ERROR"), "{stderr}");
    assert_cleaned_up(qemu, tmp.path());
}

#[test]
fn sigterm_stops_qemu_and_removes_the_directory() {
    signal_while_waiting(libc::SIGTERM);
}

#[test]
fn sigint_stops_qemu_and_removes_the_directory() {
    signal_while_waiting(libc::SIGINT);
}

#[test]
fn sighup_stops_qemu_and_removes_the_directory() {
    signal_while_waiting(libc::SIGHUP);
}

#[test]
fn sigkill_of_the_wrap_still_stops_qemu() {
    // The directory cannot be removed after SIGKILL, but QEMU must not
    // outlive the wrap (parent-death signal).
    let mut w = Wrap::start(&qemu_args());
    let qemu = w.qemu_pid();
    w.send("query-status\n");
    w.wait_stdout("\"running\": true}}\n");
    w.run.signal(libc::SIGKILL);
    let (status, _, _, _tmp) = w.finish(Duration::from_secs(10));
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    wait_until("QEMU to die with the wrap", Duration::from_secs(10), || {
        !process_alive(qemu)
    });
}

// ---------------------------------------------------------------------------
// QEMU that cannot start or does not connect
// ---------------------------------------------------------------------------

#[test]
fn missing_qemu_binary() {
    // run_wrap fails (and kills the wrap) past 5 s: an error, not a hang.
    let (out, tmp) = run_wrap(&["--", "/nonexistent/qemu"], "", Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ERROR: QEMU executable '/nonexistent/qemu' not found.\n"
    );
    assert!(out.stdout.is_empty(), "{}", show(&out));
    assert!(wrap_dirs(tmp.path()).is_empty());
}

#[test]
fn qemu_exiting_at_once_is_a_clear_error() {
    // run_wrap fails (and kills the wrap) past 10 s: an error, not a hang.
    let (out, tmp) = run_wrap(
        &["--", "qemu-system-x86_64", "-M", "nosuchmachine"],
        "query-status\n",
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    // QEMU's own complaint, then ours as the last line.
    assert!(err.contains("unsupported machine type"), "{}", show(&out));
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("ERROR: QEMU exited before connecting") && last.contains("1"),
        "{}",
        show(&out)
    );
    assert!(out.stdout.is_empty(), "{}", show(&out));
    assert!(wrap_dirs(tmp.path()).is_empty());
}

#[test]
fn with_json_the_errors_of_the_wrap_and_of_qemu_are_json_lines() {
    let (out, tmp) = run_wrap(
        &["--json", "--", "qemu-system-x86_64", "-M", "nosuchmachine"],
        "query-status\n",
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    // QEMU's own complaint, each of its lines as {"qemu": LINE}, then ours.
    let lines = json_lines(&out.stderr);
    let (last, qemu) = lines.split_last().expect("some lines");
    assert!(!qemu.is_empty(), "{}", show(&out));
    assert!(
        qemu.iter()
            .all(|l| l.as_object().unwrap().keys().eq(["qemu"])),
        "{}",
        show(&out)
    );
    assert!(
        qemu.iter().any(|l| l["qemu"]
            .as_str()
            .unwrap()
            .contains("unsupported machine type")),
        "{}",
        show(&out)
    );
    assert_eq!(last["error"]["class"], "ConnectError", "{}", show(&out));
    assert!(
        last["error"]["desc"]
            .as_str()
            .unwrap()
            .starts_with("QEMU exited before connecting"),
        "{}",
        show(&out)
    );
    assert!(out.stdout.is_empty(), "{}", show(&out));
    assert!(wrap_dirs(tmp.path()).is_empty());
}

#[test]
fn program_that_never_connects_is_killed_on_signal() {
    // A program that never connects (the appended `-qmp unix:...` lands in
    // the shell's positional parameters): the wrap waits for it; SIGTERM
    // must still stop it and clean up.
    let w = Wrap::start(&["--", "sh", "-c", "while :; do sleep 0.1; done", "sh"]);
    let dir = w.dir();
    let pid = w.qemu_pid_of("sh");
    assert!(dir.is_dir());
    w.run.signal(libc::SIGTERM);
    let (status, _, stderr, tmp) = w.finish(Duration::from_secs(15));
    // Exactly the signal's status, not the "exited before connecting"
    // error of the main thread (which sees the program die).
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
    assert_cleaned_up(pid, tmp.path());
}

impl Wrap {
    /// The wrap's child running `program` (for non-QEMU commands).
    fn qemu_pid_of(&self, program: &str) -> u32 {
        let mut pids = Vec::new();
        wait_until("the child to start", Duration::from_secs(10), || {
            pids = processes_mentioning(self.tmp_str());
            !pids.is_empty()
        });
        let pid = pids[0];
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&cmdline).starts_with(program),
            "{:?}",
            String::from_utf8_lossy(&cmdline)
        );
        pid
    }
}

// ---------------------------------------------------------------------------
// Options pass through to the shell
// ---------------------------------------------------------------------------

#[test]
fn hmp_through_the_wrap() {
    let mut args = vec!["-H"];
    args.extend(qemu_args());
    let (out, tmp) = run_wrap(&args, "info version\n", SHELL_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "Welcome to the HMP shell!", "{}", show(&out));
    assert!(lines[1].starts_with("Connected to QEMU 7."));
    assert!(lines[3].starts_with("(QEMU) 7.2."), "{}", show(&out));
    assert_eq!(lines[4], " (QEMU) ", "{}", show(&out));
    assert!(wrap_dirs(tmp.path()).is_empty());
}

#[test]
fn pretty_through_the_wrap() {
    let mut args = vec!["-p"];
    args.extend(qemu_args());
    let (out, _tmp) = run_wrap(&args, "query-status\n", SHELL_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "(QEMU) {\n    \"return\": {\n        \"running\": true,\n        \
             \"singlestep\": false,\n        \"status\": \"running\"\n    }\n}\n"
        ),
        "{}",
        show(&out)
    );
}

#[test]
fn verbose_and_log_through_the_wrap() {
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("wrap.log");
    let log_s = log.to_str().unwrap().to_string();
    let mut args = vec!["-v", "-l", &log_s];
    args.extend(qemu_args());
    let (out, _tmp) = run_wrap(&args, "query-name\n", SHELL_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "(QEMU) {\"execute\": \"query-name\", \"arguments\": {}}\n{\"return\": {}}\n"
        ),
        "{}",
        show(&out)
    );
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let lines: Vec<serde_json::Value> = BufReader::new(std::fs::File::open(&log).unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).expect("log line is JSON"))
        .collect();
    assert!(lines[0].get("QMP").is_some(), "{lines:?}");
    assert_eq!(lines[1]["execute"], "qmp_capabilities");
    assert!(
        lines.iter().any(|v| v["execute"] == "query-name"),
        "{lines:?}"
    );
}

/// The wrap's `-l` log is appended to: two runs, two sessions in it.
#[test]
fn the_log_of_the_wrap_is_appended_to() {
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("audit.log");
    let log_s = log.to_str().unwrap().to_string();
    for cmd in ["stop", "query-name"] {
        let mut args = vec!["-l", &log_s, "-c", cmd];
        args.extend(qemu_args());
        let (out, _tmp) = run_wrap(&args, "", SHELL_TIMEOUT);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    }
    let lines: Vec<serde_json::Value> = BufReader::new(std::fs::File::open(&log).unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).expect("log line is JSON"))
        .collect();
    assert_eq!(
        lines.iter().filter(|v| v.get("QMP").is_some()).count(),
        2,
        "{lines:?}"
    );
    let stop = lines.iter().position(|v| v["execute"] == "stop");
    let name = lines.iter().position(|v| v["execute"] == "query-name");
    assert!(stop.is_some() && stop < name, "{lines:?}");
}

/// A recording made in the wrap starts with a header that names QEMU's
/// command line (as the wrap started it), its version and the date, in
/// comments that replay skips: it can go into a bug report as it is.
#[test]
fn a_recording_in_the_wrap_names_the_qemu_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("bug.qmp");
    let record = format!("/record {}", rec.display());
    let mut args = vec!["-c", &record, "-c", "query-name", "-c", " query-status"];
    args.extend(qemu_args());
    let (out, _tmp) = run_wrap(&args, "", SHELL_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = std::fs::read_to_string(&rec).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[0].starts_with("# qmp-shell ") && lines[0].ends_with(" UTC"),
        "{text}"
    );
    assert!(lines[1].starts_with("# QEMU 7."), "{text}");
    let command = lines[2]
        .strip_prefix("# QEMU command line: ")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        command.starts_with("qemu-system-x86_64 -M none -display none -nodefaults -qmp unix:"),
        "{text}"
    );
    assert_eq!(
        &lines[3..],
        [
            "query-name",
            "# (a line starting with a space: kept out of the recording)"
        ]
    );
    // Replayed in another wrap: the comments are skipped.
    let mut args = vec!["--exit-status"];
    args.extend(qemu_args());
    let (out, _tmp) = run_wrap(&args, &text, SHELL_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(common::text(&out.stderr), "", "{}", show(&out));
}

#[test]
fn help_and_version() {
    let (out, _tmp) = run_wrap(&["--help"], "", SHELL_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in ["-H", "-v", "-p", "-l", "QEMU ARGV", "Exit status:"] {
        assert!(help.contains(opt), "--help lacks {opt}:\n{help}");
    }
    let (out, tmp) = run_wrap(&["--version"], "", SHELL_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("qmp-shell-wrap {}\n", qmp_shell::cli::VERSION)
    );
    // Neither starts QEMU nor leaves a directory.
    assert!(wrap_dirs(tmp.path()).is_empty());
}

#[test]
fn unwritable_log_stops_qemu_and_cleans_up() {
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("no-such-dir").join("wrap.log");
    let log_s = log.to_str().unwrap().to_string();
    let mut args = vec!["-l", &log_s];
    args.extend(qemu_args());
    let (out, tmp) = run_wrap(&args, "query-status\n", Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    // One error line (QEMU may add its own "terminating on signal" line,
    // in any order, as it is stopped).
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("ERROR: ")).collect();
    assert_eq!(errors.len(), 1, "{}", show(&out));
    assert!(
        errors[0].contains(&log_s) && errors[0].contains("No such file or directory"),
        "{}",
        show(&out)
    );
    assert!(
        err.lines()
            .all(|l| l.starts_with("ERROR: ") || l.starts_with("qemu-system-x86_64: terminating")),
        "{}",
        show(&out)
    );
    assert!(processes_mentioning(tmp.path().to_str().unwrap()).is_empty());
    assert!(wrap_dirs(tmp.path()).is_empty(), "{}", show(&out));
}

// ---------------------------------------------------------------------------
// Nothing left running, whatever starts QEMU
// ---------------------------------------------------------------------------

/// No process in the system mentions `tmp` (QEMU's socket is in it),
/// waiting a bounded time for a daemon to go.
fn nothing_left(tmp: &Path) {
    wait_until(
        "every QEMU of the wrap to be gone",
        Duration::from_secs(20),
        || processes_mentioning(tmp.to_str().unwrap()).is_empty(),
    );
    assert!(wrap_dirs(tmp).is_empty());
}

#[test]
fn a_launcher_script_that_does_not_exec_leaves_nothing_running() {
    let scripts = tempfile::tempdir().unwrap();
    let launcher = scripts.path().join("launch-qemu");
    std::fs::write(
        &launcher,
        "#!/bin/sh\n# A launcher that forks QEMU instead of exec'ing it.\n\
         qemu-system-x86_64 \"$@\"\necho \"launcher: QEMU exited with $?\" >&2\n",
    )
    .unwrap();
    std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (out, tmp) = run_wrap(
        &[
            launcher.to_str().unwrap(),
            "-M",
            "none",
            "-display",
            "none",
            "-nodefaults",
        ],
        "query-status\n",
        SHELL_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("\"running\": true"),
        "{}",
        show(&out)
    );
    // QEMU was asked to quit over QMP: it exited normally, not on a signal.
    assert_eq!(
        text(&out.stderr),
        "launcher: QEMU exited with 0\n",
        "{}",
        show(&out)
    );
    nothing_left(tmp.path());
}

#[test]
fn a_daemonized_qemu_is_stopped_too() {
    let mut args = qemu_args();
    args.push("-daemonize");
    let (out, tmp) = run_wrap(&args, "query-status\n", SHELL_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("\"running\": true"),
        "{}",
        show(&out)
    );
    nothing_left(tmp.path());
}

#[test]
fn qemu_quits_quietly_and_json_stays_clean() {
    for extra in [vec![], vec!["--json"]] {
        let mut args: Vec<&str> = extra.clone();
        args.extend(qemu_args());
        let (out, tmp) = run_wrap(&args, "query-name\nstop\ncont\n", SHELL_TIMEOUT);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("terminating on signal"), "{stderr}");
        if extra.is_empty() {
            assert_eq!(stderr, "", "{}", show(&out));
        } else {
            // Only the events the commands caused, as JSON lines.
            let names: Vec<String> = stderr
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["event"].as_str().unwrap().to_owned()
                })
                .collect();
            assert_eq!(names, ["STOP", "RESUME"], "{stderr}");
        }
        nothing_left(tmp.path());
    }
}

#[test]
fn a_comma_in_tmpdir_is_escaped_for_qemu() {
    let base = tempfile::Builder::new()
        .prefix("qmp-wt-")
        .tempdir()
        .unwrap();
    let tmp = base.path().join("with,comma");
    std::fs::create_dir(&tmp).unwrap();
    let out = run_shell_env(
        &ours_wrap(),
        &qemu_args(),
        "query-status\n",
        SHELL_TIMEOUT,
        &[("TMPDIR", tmp.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("\"running\": true"),
        "{}",
        show(&out)
    );
    nothing_left(&tmp);
}

#[test]
fn dash_c_runs_commands_and_shell_only_options_are_refused() {
    let mut args = vec!["-c", "query-status", "-c", "no-such-command"];
    args.extend(qemu_args());
    let (out, tmp) = run_wrap(&args, "", SHELL_TIMEOUT);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].contains("\"running\": true"), "{stdout}");
    assert!(lines[1].contains("CommandNotFound"), "{stdout}");
    nothing_left(tmp.path());

    for option in ["-N", "--retry", "--skip-negotiation"] {
        let mut args = vec![option];
        args.extend(qemu_args());
        let (out, tmp) = run_wrap(&args, "", SHELL_TIMEOUT);
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        assert!(
            text(&out.stderr).contains(&format!(
                "qmp-shell-wrap: error: {option} is a qmp-shell option; qmp-shell-wrap does not take it"
            )),
            "{}",
            show(&out)
        );
        nothing_left(tmp.path());
    }
}

#[test]
fn a_full_standard_error_changes_nothing() {
    let tmp = tempfile::Builder::new()
        .prefix("qmp-wt-")
        .tempdir()
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(ours_wrap());
    shell_env(&mut cmd, home.path());
    cmd.args(qemu_args())
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create("/dev/full").unwrap());
    let out = run_configured(
        cmd,
        b"bad line\nquery-status\n",
        Input::Close,
        SHELL_TIMEOUT,
    );
    let (status, stdout) = (out.status, text(&out.stdout));
    assert_eq!(status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("\"running\": true"), "{stdout}");
    nothing_left(tmp.path());
}

/// `--read-only` through the wrap: what could change the VM is refused, and
/// QEMU's own trace (`handle_qmp_command`) shows that nothing but reads
/// reached it during the session; the one exception is the wrap's own
/// `quit` at the end, which stops the QEMU it started.
#[test]
fn read_only_through_the_wrap_sends_nothing_refused() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let log = dir.path().join("log");
    let mut args = vec!["--read-only", "-l", log.to_str().unwrap()];
    args.extend(qemu_args());
    args.extend([
        "-trace",
        "handle_qmp_command",
        "-D",
        trace.to_str().unwrap(),
    ]);
    let (out, _tmp) = run_wrap(
        &args,
        "stop\nsystem_reset\nquit\n{\"execute\": \"query-status\", \"exec-oob\": \"stop\"}\n\
         transaction( abort )\n/oob migrate-pause\nhuman-monitor-command command-line=stop\n\
         query-status\n",
        SHELL_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stderr = text(&out.stderr);
    let refused: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.split_once("refused by --read-only: "))
        .filter_map(|(_, rest)| rest.split_once(' ').map(|(name, _)| name))
        .collect();
    assert_eq!(
        refused,
        [
            "stop",
            "system_reset",
            "quit",
            "stop",
            "transaction",
            "migrate-pause",
            "human-monitor-command"
        ],
        "{}",
        show(&out)
    );
    assert!(
        text(&out.stdout).ends_with(
            "(QEMU) {\"return\": {\"status\": \"running\", \"singlestep\": false, \
             \"running\": true}}\n(QEMU) \n"
        ),
        "{}",
        show(&out)
    );
    let received: Vec<serde_json::Value> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(" req: "))
        .map(|(_, req)| serde_json::from_str(req).unwrap())
        .collect();
    let (last, session) = received.split_last().expect("requests traced");
    assert_eq!(last["execute"], "quit", "the wrap stops QEMU: {received:?}");
    assert!(
        session.iter().any(|r| r["execute"] == "query-status"),
        "{received:?}"
    );
    for req in session {
        let names: Vec<&str> = ["execute", "exec-oob"]
            .iter()
            .filter_map(|k| req[*k].as_str())
            .collect();
        assert!(
            !names.is_empty()
                && names.iter().all(|n| *n == "qmp_capabilities"
                    || n.starts_with("query-")
                    || n.starts_with("x-query-")),
            "QEMU received {req} during a --read-only session"
        );
    }
    // The log holds what was sent in the session, before the wrap's quit.
    let logged = std::fs::read_to_string(&log).unwrap();
    for line in logged.lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in ["execute", "exec-oob"] {
            if let Some(name) = m[key].as_str() {
                assert!(
                    name == "qmp_capabilities" || name.starts_with("query-") || name == "quit",
                    "the log shows {m} sent"
                );
            }
        }
    }
}
