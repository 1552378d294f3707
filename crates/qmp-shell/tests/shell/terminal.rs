//! The interactive shell on a real pseudo-terminal, driven through tmux:
//! banner and prompt, Tab completion from the live schema, events printed
//! above a half-typed line, `help`, multi-line raw JSON, Ctrl-C and Ctrl-D,
//! history, the guest agent (`-N`), HMP (`-H`), colour, `--retry` and a
//! server that goes away.
//!
//! Every test runs its own tmux server (on a private socket, with no
//! configuration file) in a private directory that is also the shell's
//! `HOME`; dropping the [`Term`] kills the server and everything in it. The
//! shell runs inside `sh`, which records its exit status in a file and on
//! the screen, then reads one line (to show that the terminal was left in a
//! usable state) and stays alive so the pane can still be captured.

use crate::common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::Instant;

use common::term::{sh_quote, Term, DEADLINE, POLL};
use common::*;

/// The QMP prompt.
const PROMPT: &str = "(QEMU)";

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn banner_prompt_command_and_ctrl_d() {
    let peer = Peer::qemu_none();
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_for("Welcome to the QMP low-level shell!");
    t.wait_for("Connected to QEMU ");
    t.wait_line(PROMPT);
    t.line("query-status");
    t.wait_for(r#""status": "running""#);
    t.wait_line(PROMPT);
    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("Ctrl-D: exit status"));
    t.wait_for("EXIT=0");
    t.assert_terminal_usable();
}

#[test]
fn tab_completion_from_the_schema() {
    let peer = Peer::qemu_none();
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);

    // Command names: the common prefix, then the candidates.
    t.tab_until(PROMPT, "query-sta", "query-stat");
    t.press(&["Tab"]);
    let screen = t.wait_for("query-status");
    let listing = screen
        .lines()
        .find(|l| l.contains("query-status") && !l.starts_with(PROMPT))
        .unwrap_or_default();
    assert!(
        listing.contains("query-stats"),
        "{}",
        t.failure("the candidates of query-stat")
    );

    // Argument names and values, from the live schema.
    t.tab_until(PROMPT, "blockdev-add dri", "blockdev-add driver=");
    t.tab_until(
        PROMPT,
        "blockdev-add driver=qcow2 file.dri",
        "blockdev-add driver=qcow2 file.driver=",
    );
    t.tab_until(
        PROMPT,
        "blockdev-add driver=vmd",
        "blockdev-add driver=vmdk",
    );
    t.tab_until(
        PROMPT,
        "blockdev-add driver=qco",
        "blockdev-add driver=qcow",
    );
    t.press(&["Tab"]);
    t.wait_until("the candidates driver=qcow and driver=qcow2", |s| {
        s.lines().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words == ["driver=qcow", "driver=qcow2"]
        })
    });

    // Actions inside transaction(.
    t.tab_until(
        PROMPT,
        "transaction( block-dirty-bitmap-a",
        "transaction( block-dirty-bitmap-add",
    );

    // Keys already on the line are not offered again.
    t.press(&["C-u"]);
    t.type_text("blockdev-add driver=qcow2 node-name=n0 ");
    t.press(&["Tab"]);
    t.press(&["Tab"]);
    let screen = t.wait_for("lazy-refcounts=");
    // The listing: the lines between the edited line and the next prompt.
    let candidates: Vec<&str> = screen
        .lines()
        .skip_while(|l| *l != "(QEMU) blockdev-add driver=qcow2 node-name=n0")
        .skip(1)
        .take_while(|l| !l.starts_with(PROMPT))
        .flat_map(str::split_whitespace)
        .collect();
    assert!(
        candidates.contains(&"discard="),
        "{}",
        t.failure("qcow2's keys")
    );
    for used in ["driver=", "node-name="] {
        assert!(
            !candidates.contains(&used),
            "{}",
            t.failure(&format!("{used} is on the line but was offered"))
        );
    }
}

#[test]
fn events_appear_above_a_half_typed_line() {
    let peer = Peer::qemu_two_monitors(&["-M", "none"]);
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    t.type_text("query-sta");
    t.wait_line("(QEMU) query-sta");

    let replies = qmp_raw(peer.second_socket(), &[r#"{"execute": "stop"}"#]);
    assert!(replies[0].contains("\"return\""), "stop: {}", replies[0]);

    let screen = t.wait_for(r#""event": "STOP""#);
    let event_at = screen
        .lines()
        .position(|l| l.contains(r#""event": "STOP""#))
        .unwrap();
    assert!(
        screen.lines().nth(event_at).unwrap().starts_with('{'),
        "{}",
        t.failure("the event is not on a line of its own")
    );
    // The half-typed line is redrawn below the event, intact.
    t.wait_line("(QEMU) query-sta");

    t.line("tus");
    t.wait_for(r#""status": "paused""#);
    t.wait_line(PROMPT);
    let screen = t.screen();
    assert!(
        !screen.contains("CommandNotFound"),
        "{}",
        t.failure("the line was not sent as typed")
    );
}

#[test]
fn help_from_the_schema() {
    let peer = Peer::qemu_none();
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);

    t.line("help");
    let screen = t.wait_for("`help NAME`");
    for name in ["query-status", "blockdev-add", "qmp_capabilities"] {
        assert!(
            screen.split_whitespace().any(|w| w == name),
            "{}",
            t.failure(&format!("help does not list {name}"))
        );
    }
    t.wait_line(PROMPT);

    t.line("help query-status");
    t.wait_for("query-status (command)");
    let screen = t.wait_line(PROMPT);
    let after = screen.rsplit("query-status (command)").next().unwrap();
    for member in ["running:", "status:", "paused"] {
        assert!(
            after.contains(member),
            "{}",
            t.failure(&format!("help query-status lacks {member}"))
        );
    }

    t.line("help SHUTDOWN");
    t.wait_for("SHUTDOWN (event)");
    let screen = t.wait_line(PROMPT);
    let after = screen.rsplit("SHUTDOWN (event)").next().unwrap();
    for member in ["guest:", "reason:", "host-qmp-quit"] {
        assert!(
            after.contains(member),
            "{}",
            t.failure(&format!("help SHUTDOWN lacks {member}"))
        );
    }
}

#[test]
fn raw_json_over_two_lines() {
    let peer = Peer::qemu_none();
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    t.line(r#"{"execute":"#);
    t.wait_for(r#"(QEMU) {"execute":"#);
    t.line(r#""query-status"}"#);
    t.wait_for(r#""status": "running""#);
    let screen = t.wait_line(PROMPT);
    // The second line continued the first (no prompt before it), and the
    // first was not sent on its own.
    let lines: Vec<&str> = screen.lines().collect();
    let first = lines
        .iter()
        .position(|l| *l == r#"(QEMU) {"execute":"#)
        .unwrap_or_else(|| panic!("{}", t.failure("the first line")));
    assert_eq!(
        lines.get(first + 1),
        Some(&r#""query-status"}"#),
        "{}",
        t.failure("the continuation line")
    );
    assert!(
        !screen.contains("error"),
        "{}",
        t.failure("raw JSON over two lines")
    );
}

#[test]
fn ctrl_c_clears_the_line_and_ctrl_d_exits() {
    let peer = Peer::qemu_none();
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    t.type_text("query-sta");
    t.wait_line("(QEMU) query-sta");
    t.press(&["C-c"]);
    t.wait_line(PROMPT);
    // Ctrl-C on an empty line: a hint, still not the end.
    t.press(&["C-c"]);
    t.wait_for("(to exit, press Ctrl-C again or Ctrl-D)");
    t.wait_count_lines(PROMPT, 2);
    t.line("query-status");
    t.wait_for(r#""status": "running""#);
    t.wait_line(PROMPT);
    assert!(
        !t.screen().contains("CommandNotFound"),
        "{}",
        t.failure("Ctrl-C left text on the line")
    );
    assert!(
        !t.dir.path().join("exit").exists(),
        "{}",
        t.failure("Ctrl-C ended the shell")
    );
    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("Ctrl-D: exit status"));
    t.assert_terminal_usable();
}

#[test]
fn ctrl_c_twice_on_an_empty_line_exits() {
    let peer = Peer::qemu_none();
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    // Both keys in one go: well within the second that separates them.
    t.press(&["C-c", "C-c"]);
    assert_eq!(
        t.wait_exit(),
        0,
        "{}",
        t.failure("Ctrl-C twice: exit status")
    );
    t.assert_terminal_usable();
}

#[test]
fn history_is_saved_private_and_loaded() {
    let peer = Peer::qemu_none();
    // A file as the reference (GNU readline) writes it: plain lines.
    let t = Term::start_with_home(&[peer.socket_str()], &[], |home| {
        std::fs::write(
            home.join(".qmp-shell_history"),
            "query-name\nquery-version\n",
        )
        .unwrap();
    });
    t.wait_line(PROMPT);
    t.press(&["Up"]);
    t.wait_line("(QEMU) query-version");
    t.press(&["Up"]);
    t.wait_line("(QEMU) query-name");
    t.press(&["Enter"]);
    t.wait_for(r#"{"return": {}}"#);
    t.wait_line(PROMPT);

    t.line("query-status");
    t.wait_for(r#""status": "running""#);
    t.wait_line(PROMPT);
    // A secret: not saved.
    t.line(" query-uuid");
    t.wait_for(r#""UUID""#);
    t.wait_line(PROMPT);
    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("Ctrl-D: exit status"));

    let path = t.home().join(".qmp-shell_history");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "history file mode {mode:o}");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        ["query-name", "query-version", "query-name", "query-status"],
        "history file:\n{text}"
    );
    assert!(!text.contains("uuid"), "history file:\n{text}");
    assert!(!text.starts_with("_HiStOrY_V2_"), "history file:\n{text}");
}

#[test]
fn guest_agent_completion_and_stale_bytes() {
    let peer = Peer::guest_agent();
    // A client that went away in the middle of a command.
    {
        let mut s = UnixStream::connect(peer.socket()).expect("connect qemu-ga");
        s.write_all(br#"{"execute": "guest-pi"#).unwrap();
    }
    let t = Term::start(&["-N", peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    t.line("guest-ping");
    let screen = t.wait_until("a reply to guest-ping", |s| {
        s.lines()
            .skip_while(|l| *l != "(QEMU) guest-ping")
            .nth(1)
            .is_some()
    });
    let reply = screen
        .lines()
        .skip_while(|l| *l != "(QEMU) guest-ping")
        .nth(1)
        .unwrap();
    assert_eq!(reply, r#"{"return": {}}"#, "{}", t.failure("guest-ping"));
    t.wait_line(PROMPT);

    t.tab_until(PROMPT, "guest-p", "guest-ping");
    t.press(&["Enter"]);
    t.wait_count(r#"{"return": {}}"#, 2);
    t.wait_line(PROMPT);
}

/// HMP mode at a terminal: completion of HMP commands and of the shell's
/// own commands, which run there too.
#[test]
fn hmp_completion_and_command() {
    let peer = Peer::qemu_pc();
    let t = Term::start(&["-H", peer.socket_str()], &[]);
    let screen = t.wait_for("Connected to QEMU ");
    let version = screen
        .lines()
        .find_map(|l| l.strip_prefix("Connected to QEMU "))
        .unwrap()
        .trim()
        .to_string();
    t.wait_line("(QEMU)");
    t.tab_until("(QEMU)", "info ver", "info version");
    t.press(&["Enter"]);
    t.wait_until("the version after `info version`", |s| {
        s.lines()
            .skip_while(|l| *l != "(QEMU) info version")
            .skip(1)
            .any(|l| l.starts_with(&version))
    });
    t.wait_line("(QEMU)");
    // The shell's own commands complete in HMP mode too, and run there.
    t.tab_until("(QEMU)", "/wa", "/wait");
    t.press(&["C-u"]);
    t.line("/jobs");
    t.wait_for("(QEMU) /jobs\n{\"jobs\": []}\n");
    t.wait_line("(QEMU)");
}

/// Run `query-status` with `args` and `env`; return the reply line as
/// captured with its attributes.
fn reply_with_attributes(args: &[&str], env: &[(&str, &str)]) -> String {
    let peer = Peer::qemu_none();
    let mut all = args.to_vec();
    all.push(peer.socket_str());
    let t = Term::start(&all, env);
    t.wait_line(PROMPT);
    t.line("query-status");
    t.wait_for("running");
    t.wait_line(PROMPT);
    let coloured = t.capture(true);
    coloured
        .lines()
        .find(|l| l.contains("running") && !l.contains("query-status"))
        .unwrap_or_else(|| panic!("{}", t.failure("no reply line")))
        .to_string()
}

#[test]
fn colour_always_auto_and_never() {
    let always = reply_with_attributes(&["--color", "always"], &[("NO_COLOR", "1")]);
    assert!(
        always.contains("\x1b["),
        "--color always: no escapes in {}",
        escape_visible(always.as_bytes())
    );
    let auto = reply_with_attributes(&[], &[]);
    assert!(
        auto.contains("\x1b["),
        "auto on a terminal: no escapes in {}",
        escape_visible(auto.as_bytes())
    );
    let no_color = reply_with_attributes(&[], &[("NO_COLOR", "1")]);
    assert!(
        !no_color.contains('\x1b'),
        "NO_COLOR=1: escapes in {}",
        escape_visible(no_color.as_bytes())
    );
    let never = reply_with_attributes(&["--color", "never"], &[]);
    assert!(
        !never.contains('\x1b'),
        "--color never: escapes in {}",
        escape_visible(never.as_bytes())
    );
}

/// A listening UNIX socket at `path` whose accept queue is full (backlog 0,
/// one connection already queued): a connect(2) to it blocks, in the
/// kernel's `unix_wait_for_peer`, until the listener goes away, and then
/// fails with ECONNREFUSED (a socket file nobody listens on).
struct FullListener {
    /// Held, never read: closing it is what fails the blocked connect.
    _listener: std::os::fd::OwnedFd,
    _queued: UnixStream,
}

impl FullListener {
    fn bind(path: &Path) -> FullListener {
        use std::os::fd::{AsRawFd, OwnedFd};
        let listener: OwnedFd = std::os::unix::net::UnixListener::bind(path)
            .unwrap_or_else(|e| panic!("bind {}: {e}", path.display()))
            .into();
        // SAFETY: listen(2) on a bound socket we own; it sets the backlog.
        let rc = unsafe { libc::listen(listener.as_raw_fd(), 0) };
        assert_eq!(rc, 0, "listen: {}", std::io::Error::last_os_error());
        let queued = UnixStream::connect(path).expect("fill the accept queue");
        FullListener {
            _listener: listener,
            _queued: queued,
        }
    }
}

/// `--retry`: the shell's first attempt is seen blocked on a listener that
/// never accepts, then refused when that listener closes (the socket file
/// stays, as after a crashed QEMU); only once that attempt has returned is
/// QEMU started on the same path, and the shell, still running, retries and
/// gets it. So at least one attempt failed before QEMU existed.
#[test]
fn retry_waits_for_the_server() {
    let dir = tempfile::Builder::new()
        .prefix("qmp-retry-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let socket = dir.path().join("late.sock");
    let socket_str = socket.to_str().unwrap();
    let full = FullListener::bind(&socket);
    let t = Term::start(&["--retry", "200", "--retry-delay", "0.1", socket_str], &[]);
    let pid = t.shell_pid();
    let connecting = || {
        thread_wchans(pid)
            .iter()
            .any(|w| w.trim() == "unix_wait_for_peer")
    };
    let start = Instant::now();
    while !connecting() {
        if start.elapsed() > DEADLINE {
            panic!(
                "{}",
                t.failure(&format!(
                    "the shell (pid {pid}) never blocked connecting to {socket_str}; \
                     its threads sleep in {:?}",
                    thread_wchans(pid)
                ))
            );
        }
        thread::sleep(POLL);
    }
    // The listener goes: the blocked connect fails with ECONNREFUSED.
    drop(full);
    let start = Instant::now();
    while connecting() {
        assert!(
            start.elapsed() < DEADLINE,
            "{}",
            t.failure("the connect attempt did not return after the listener closed")
        );
        thread::sleep(POLL);
    }
    assert!(
        !t.dir.path().join("exit").exists(),
        "{}",
        t.failure("the shell gave up after one refused attempt")
    );
    assert!(
        !t.screen().contains("Welcome"),
        "{}",
        t.failure("connected to nothing?")
    );
    std::fs::remove_file(&socket).expect("remove the stale socket file");
    let _qemu = OwnQemu::start(&socket);
    t.wait_for("Welcome to the QMP low-level shell!");
    t.wait_line(PROMPT);
    assert_eq!(t.shell_pid(), pid, "the same shell process");
    t.line("query-status");
    t.wait_for(r#""status": "running""#);
}

#[test]
fn vanished_server_exits_1_and_restores_the_terminal() {
    let mut peer = Peer::qemu_none();
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    t.line("quit");
    t.wait_for(r#"{"return": {}}"#);
    assert!(
        peer.wait_exit(DEADLINE).is_some(),
        "QEMU did not exit after quit"
    );
    // Said at once, without waiting for the next command.
    t.wait_for("Disconnected");
    assert_eq!(t.wait_exit(), 1, "{}", t.failure("exit status"));
    t.wait_for("EXIT=1");
    t.assert_terminal_usable();
    let history = std::fs::read_to_string(t.home().join(".qmp-shell_history"))
        .expect("the history is saved also when the server went away");
    assert_eq!(
        history.lines().collect::<Vec<_>>(),
        ["quit"],
        "history file:\n{history}"
    );
}

// ---------------------------------------------------------------------------
// Typed ahead, pasted, interrupted
// ---------------------------------------------------------------------------

/// Paste `text` into the pane; `bracketed`: with the bracketed-paste
/// markers the shell asked for (a modern terminal's paste), else as plain
/// keystrokes (typed ahead).
fn paste(t: &Term, text: &str, bracketed: bool) {
    let status = t
        .tmux()
        .args(["set-buffer", "--", text])
        .status()
        .expect("tmux set-buffer");
    assert!(status.success());
    let mut cmd = t.tmux();
    cmd.args(["paste-buffer", "-t", "main"]);
    if bracketed {
        cmd.arg("-p");
    }
    assert!(cmd.status().expect("tmux paste-buffer").success());
}

#[test]
fn pasted_lines_all_run_in_order() {
    let peer = Peer::qemu_none();
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    // Typed ahead: each line ends with Enter.
    paste(&t, "query-name\nquery-status\nquery-version\n", false);
    let screen = t.wait_for("\"package\"");
    let name = screen.find("{\"return\": {}}").expect("query-name's reply");
    let status = screen
        .find("\"running\": true")
        .expect("query-status's reply");
    let version = screen.find("\"package\"").expect("query-version's reply");
    assert!(name < status && status < version, "{}", t.failure("order"));
    t.wait_line(PROMPT);
    // A bracketed paste lands in the line editor whole; Enter runs it all.
    paste(&t, "query-name\nquery-status\nquery-version", true);
    t.press(&["Enter"]);
    t.wait_count("\"package\"", 2);
    t.wait_count("\"running\": true", 2);
    t.wait_line(PROMPT);
    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("exit status"));
    let history = std::fs::read_to_string(t.home().join(".qmp-shell_history")).unwrap();
    assert_eq!(
        history.lines().collect::<Vec<_>>(),
        [
            "query-name",
            "query-status",
            "query-version",
            "query-name",
            "query-status",
            "query-version"
        ]
    );
}

/// QEMU's run state, asked through the second monitor.
fn run_state(peer: &Peer) -> String {
    let replies = qmp_raw(peer.second_socket(), &[r#"{"execute": "query-status"}"#]);
    let v: serde_json::Value = serde_json::from_str(&replies[0]).expect("query-status reply");
    v["return"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Ctrl-C while the first of several pasted lines waits for a frozen QEMU:
/// none of the others is ever sent. `how` pastes them (into the editor
/// while it reads a line, or while the first command waits).
fn ctrl_c_drops_the_rest_of_a_paste(how: &str) {
    let peer = Peer::qemu_two_monitors(&["-M", "none"]);
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    freeze(peer.pid());
    let expected_note = match how {
        // The editor reads the whole paste at once and holds the lines
        // after the first: the shell drops them and says how many.
        "plain at the prompt" => {
            paste(&t, "query-name\nstop\nquery-status\n", false);
            Some("(2 lines typed ahead not run)")
        }
        // A bracketed paste accepted with Enter: one multi-line input.
        "bracketed" => {
            paste(&t, "query-name\nstop\nquery-status", true);
            t.press(&["Enter"]);
            Some("(the 2 lines pasted after it not run)")
        }
        // Typed ahead while the first command waits: the lines are in the
        // terminal's input queue, which the terminal flushes on Ctrl-C.
        "plain while waiting" => {
            t.line("query-name");
            t.wait_for("(QEMU) query-name");
            paste(&t, "stop\nquery-status\n", false);
            None
        }
        other => unreachable!("{other}"),
    };
    t.wait_for("(QEMU) query-name");
    t.press(&["C-c"]);
    t.wait_for("(abandoned; a late reply will be shown as such)");
    if let Some(note) = expected_note {
        t.wait_for(note);
    }
    t.wait_line(PROMPT);
    thaw(peer.pid());
    t.wait_for("late reply (the command was abandoned): {\"return\": {}}");
    // A command typed now runs: everything sent before it was answered.
    t.line("query-version");
    t.wait_for("\"package\"");
    t.wait_line(PROMPT);
    assert_eq!(
        run_state(&peer),
        "running",
        "{}",
        t.failure(&format!("`stop` ran after Ctrl-C ({how})"))
    );
    let screen = t.screen();
    for sent in ["(QEMU) stop", "\"paused\"", "\"STOP\""] {
        assert!(
            !screen.contains(sent),
            "{}",
            t.failure(&format!("{sent} after Ctrl-C ({how})"))
        );
    }
    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("exit status"));
    t.assert_terminal_usable();
}

#[test]
fn ctrl_c_drops_a_plain_paste_held_by_the_editor() {
    ctrl_c_drops_the_rest_of_a_paste("plain at the prompt");
}

#[test]
fn ctrl_c_drops_a_bracketed_paste() {
    ctrl_c_drops_the_rest_of_a_paste("bracketed");
}

#[test]
fn ctrl_c_drops_lines_typed_ahead_while_waiting() {
    ctrl_c_drops_the_rest_of_a_paste("plain while waiting");
}

/// The screen's lines from the first `(QEMU) stop` on, each reduced to
/// what it is: the command line, `STOP`/`RESUME` for an event, `return` for
/// an empty reply.
fn outline(screen: &str) -> Vec<String> {
    screen
        .lines()
        .skip_while(|l| *l != "(QEMU) stop")
        .filter(|l| *l != PROMPT)
        .map(|l| {
            if let Some(name) = ["STOP", "RESUME"]
                .iter()
                .find(|n| l.starts_with('{') && l.contains(&format!("\"event\": \"{n}\"")))
            {
                name.to_string()
            } else if l == "{\"return\": {}}" {
                "return".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect()
}

#[test]
fn events_and_replies_appear_in_the_order_of_the_wire() {
    // QEMU sends STOP before the reply to `stop`, RESUME before the reply
    // to `cont`: so must the screen show them, every time.
    let peer = Peer::qemu_none();
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    let rounds = 30;
    paste(&t, &"stop\ncont\n".repeat(rounds), false);
    t.wait_count("\"event\": \"RESUME\"", rounds);
    let screen = t.wait_line(PROMPT);
    let expected: Vec<String> = [
        "(QEMU) stop",
        "STOP",
        "return",
        "(QEMU) cont",
        "RESUME",
        "return",
    ]
    .iter()
    .cycle()
    .take(6 * rounds)
    .map(|s| s.to_string())
    .collect();
    assert_eq!(outline(&screen), expected, "{}", t.failure("order"));
    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("exit status"));
}

#[test]
fn an_event_never_splits_a_line_typed_ahead() {
    let peer = Peer::qemu_two_monitors(&["-M", "none"]);
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    // The shell waits (for an event that the test causes later); the user
    // types the next line meanwhile.
    t.line("/wait RESET");
    t.wait_for("(QEMU) /wait RESET");
    t.type_text("query-sta");
    // Another monitor causes an event while the line is half typed.
    let replies = qmp_raw(peer.second_socket(), &[r#"{"execute": "stop"}"#]);
    assert!(replies[0].contains("\"return\""), "stop: {}", replies[0]);
    t.wait_for("\"event\": \"STOP\"");
    let replies = qmp_raw(peer.second_socket(), &[r#"{"execute": "system_reset"}"#]);
    assert!(replies[0].contains("\"return\""), "reset: {}", replies[0]);
    t.wait_line("(QEMU) query-sta");
    t.line("tus");
    t.wait_for("\"running\": false");
    let screen = t.wait_line(PROMPT);
    for l in screen.lines().filter(|l| l.contains("\"event\"")) {
        assert!(
            l.starts_with('{'),
            "{}",
            t.failure(&format!("an event inside a line: {l:?}"))
        );
    }
    assert!(
        screen.lines().any(|l| l == "(QEMU) query-status"),
        "{}",
        t.failure("the typed line, whole")
    );
    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("exit status"));
}

/// The screen's lines that are events named `name`.
fn event_lines<'a>(screen: &'a str, name: &str) -> Vec<&'a str> {
    let needle = format!("\"event\": \"{name}\"");
    screen
        .lines()
        .filter(|l| l.starts_with('{') && l.contains(&needle))
        .collect()
}

/// Wait until the shell is busy with a line (the terminal quiet, see
/// `signals::Quiet::TypeAhead`: no echo, but signals on), rather than
/// reading one (the line editor's raw mode: signals off).
fn wait_busy(t: &Term) {
    let out = t
        .tmux()
        .args(["display", "-p", "-t", "main", "#{pane_tty}"])
        .output()
        .expect("tmux display");
    let tty = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let start = Instant::now();
    loop {
        let out = std::process::Command::new("stty")
            .args(["-a", "-F", &tty])
            .output()
            .expect("stty");
        let modes = String::from_utf8_lossy(&out.stdout).into_owned();
        let words: Vec<&str> = modes.split_whitespace().collect();
        if words.contains(&"isig") && words.contains(&"-echo") {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{}",
            t.failure(&format!("the shell never got busy: {modes}"))
        );
        thread::sleep(POLL);
    }
}

#[test]
fn wait_prints_the_event_it_returns_once() {
    let peer = Peer::qemu_two_monitors(&["-M", "none"]);
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    // Twice in a row: the event comes while `/wait` waits, and is printed
    // once, as its answer.
    for round in 1..=2 {
        t.line("/wait RESET");
        t.wait_count("(QEMU) /wait RESET", round);
        wait_busy(&t);
        let replies = qmp_raw(peer.second_socket(), &[r#"{"execute": "system_reset"}"#]);
        assert!(replies[0].contains("\"return\""), "reset: {}", replies[0]);
        t.wait_count("\"event\": \"RESET\"", round);
        // The prompt is drawn once the `/wait` is over: all it printed is
        // on the screen.
        let screen = t.wait_line(PROMPT);
        assert_eq!(
            event_lines(&screen, "RESET").len(),
            round,
            "{}",
            t.failure(&format!("RESET printed once in round {round}"))
        );
        assert!(
            !screen.contains("came already"),
            "{}",
            t.failure("the event is the answer")
        );
    }
    // With a command in between: `stop`, whose STOP is printed as it comes
    // (before its reply); a `/wait` for it then returns it (it came after
    // the previous command was sent) and says so rather than print it
    // again.
    t.line("stop");
    t.wait_for("{\"return\": {}}");
    t.wait_line(PROMPT);
    t.line("/wait STOP");
    t.wait_for("(/wait: STOP came already, shown above)");
    t.wait_line(PROMPT);
    // Consumed: the next `/wait STOP` waits for another one.
    t.line("/wait --timeout=1 STOP");
    t.wait_for("ERROR: /wait: no STOP event within 1 s");
    let screen = t.wait_line(PROMPT);
    let after_stop: Vec<&str> = screen
        .lines()
        .skip_while(|l| *l != "(QEMU) stop")
        .filter(|l| *l != PROMPT)
        .collect();
    assert_eq!(
        after_stop.len(),
        7,
        "{}",
        t.failure("stop, /wait STOP, /wait STOP")
    );
    assert!(
        after_stop[1].contains("\"event\": \"STOP\""),
        "{after_stop:?}"
    );
    assert_eq!(
        after_stop[2..],
        [
            "{\"return\": {}}",
            "(QEMU) /wait STOP",
            "(/wait: STOP came already, shown above)",
            "(QEMU) /wait --timeout=1 STOP",
            "ERROR: /wait: no STOP event within 1 s",
        ]
    );
    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("exit status"));
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with(['Z', 'X']))
        })
        .unwrap_or(true)
}

#[test]
fn closing_the_terminal_with_input_queued_ends_the_shell() {
    let peer = Peer::qemu_two_monitors(&["-M", "none"]);
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    let pid = t.shell_pid();
    freeze(peer.pid());
    // Held by the editor, and queued in the terminal.
    paste(&t, "query-name\nstop\nquery-status\n", false);
    t.wait_for("(QEMU) query-name");
    paste(&t, "stop\nquery-version\n", false);
    let status = t
        .tmux()
        .args(["kill-pane", "-t", "main"])
        .status()
        .expect("tmux kill-pane");
    assert!(status.success());
    wait_until("the shell to end", DEADLINE, || gone(pid));
    thaw(peer.pid());
    assert_eq!(run_state(&peer), "running", "`stop` ran");
    // It ended the ordinary way (not killed by its own emergency exit
    // after SIGHUP's grace period): the history was saved.
    let history = std::fs::read_to_string(t.home().join(".qmp-shell_history"))
        .expect("the history is saved when the terminal closes");
    assert_eq!(history, "query-name\n");
}

#[test]
fn ctrl_c_stops_a_play_file() {
    let peer = Peer::qemu_two_monitors(&["-M", "none"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("session.qmp");
    std::fs::write(&file, "query-name\nstop\n").unwrap();
    let log = dir.path().join("qmp.log");
    let t = Term::start(&["-l", log.to_str().unwrap(), peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    freeze(peer.pid());
    t.line(&format!("/play {}", file.display()));
    // The first line of the file was sent (and waits for frozen QEMU).
    wait_until("query-name in the log", DEADLINE, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("query-name"))
    });
    t.press(&["C-c"]);
    t.wait_for("(abandoned; a late reply will be shown as such)");
    t.wait_for("(the remaining line of /play not run)");
    t.wait_line(PROMPT);
    thaw(peer.pid());
    t.wait_for("late reply (the command was abandoned): {\"return\": {}}");
    t.line("query-version");
    t.wait_for("\"package\"");
    assert_eq!(run_state(&peer), "running", "{}", t.failure("`stop` ran"));
    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("exit status"));
}

#[test]
fn ctrl_d_typed_while_a_command_waits_ends_the_session_after_it() {
    let peer = Peer::qemu_none();
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    freeze(peer.pid());
    t.line("query-name");
    t.wait_for("(QEMU) query-name");
    // Typed ahead, as lines are: it acts once the command is done.
    t.press(&["C-d"]);
    thaw(peer.pid());
    t.wait_for("{\"return\": {}}");
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("exit status"));
    t.assert_terminal_usable();
}

#[test]
fn ctrl_c_abandons_a_wait_and_the_late_reply_is_shown() {
    let peer = Peer::qemu_none();
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    freeze(peer.pid());
    t.line("query-status");
    t.wait_line("(QEMU) query-status");
    t.press(&["C-c"]);
    t.wait_for("(abandoned; a late reply will be shown as such)");
    t.wait_line(PROMPT);
    thaw(peer.pid());
    t.wait_for("late reply (the command was abandoned): {\"return\": {\"status\": \"running\"");
    // The session goes on, and the shell did not exit.
    t.line("query-name");
    t.wait_for("{\"return\": {}}");
    assert!(
        !t.dir.path().join("exit").exists(),
        "{}",
        t.failure("exited")
    );
    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("exit status"));
    t.assert_terminal_usable();
}

#[test]
fn ctrl_c_and_ctrl_d_inside_a_transaction() {
    let peer = Peer::qemu_none();
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    t.line("transaction(");
    t.wait_line("TRANS>");
    t.line("block-dirty-bitmap-add node=n0 name=b0");
    t.wait_count_lines("TRANS>", 1);
    t.press(&["C-c"]);
    t.wait_for("transaction abandoned: 1 action not sent");
    t.wait_line(PROMPT);
    t.line("transaction(");
    t.wait_line("TRANS>");
    t.line("block-dirty-bitmap-add node=n0 name=b0");
    t.press(&["C-d"]);
    t.wait_for("ERROR: end of input inside a transaction: 1 action not sent");
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("exit status"));
    t.assert_terminal_usable();
}

/// Recording at the terminal: a transaction abandoned with Ctrl-C leaves
/// only comments, so replaying the recording does what the session did
/// (before, the reopened transaction swallowed the `stop` after it). A
/// shell command at `TRANS>` is refused and the transaction stays open.
#[test]
fn a_transaction_abandoned_with_ctrl_c_is_not_replayed() {
    let peer = Peer::qemu_none();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("session.qmp");
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    t.line(&format!("/record {}", rec.display()));
    t.wait_line(PROMPT);
    t.line("transaction(");
    t.wait_line("TRANS>");
    t.line("block-dirty-bitmap-add node=n0 name=b0");
    t.wait_count_lines("TRANS>", 1);
    t.line("/jobs");
    t.wait_for("ERROR: /jobs: not run inside a transaction, which stays open");
    t.wait_line("TRANS>");
    t.press(&["C-c"]);
    t.wait_for("transaction abandoned: 1 action not sent");
    t.wait_line(PROMPT);
    t.line("stop");
    t.wait_for("{\"return\": {}}");
    t.line("/record off");
    t.line("cont");
    t.wait_count("{\"return\": {}}", 2);
    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("exit status"));
    let text = std::fs::read_to_string(&rec).unwrap();
    assert!(
        text.ends_with(
            "\n# not sent: transaction(\n\
             # not sent: block-dirty-bitmap-add node=n0 name=b0\nstop\n"
        ),
        "{text}"
    );
    // Replayed on the running VM: it ends stopped, as the session did.
    let out = run_shell(&ours(), &[peer.socket_str()], &text, SHELL_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let status = qmp_raw(peer.socket(), &[r#"{"execute": "query-status"}"#]);
    assert!(status[0].contains("\"running\": false"), "{status:?}");
}

/// `/play` at the terminal shows each played line after its prompt, then
/// its reply, as if typed.
#[test]
fn play_shows_each_line_with_its_prompt() {
    let peer = Peer::qemu_none();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("s.qmp");
    std::fs::write(&script, "query-name\n# a comment\nquery-status\n").unwrap();
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    t.line(&format!("/play {}", script.display()));
    t.wait_for("\"status\": \"running\"");
    t.wait_line(PROMPT);
    let screen = t.screen();
    let after = screen
        .split_once(&format!("(QEMU) /play {}\n", script.display()))
        .unwrap_or_else(|| panic!("{}", t.failure("the /play line")))
        .1;
    assert!(
        after.starts_with(
            "(QEMU) query-name\n{\"return\": {}}\n(QEMU) # a comment\n(QEMU) query-status\n\
             {\"return\": {\"status\": \"running\""
        ),
        "{}",
        t.failure("played lines")
    );
    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("exit status"));
}

#[test]
fn the_log_leaves_out_what_the_shell_asked_on_its_own() {
    let peer = Peer::qemu_none();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("qmp.log");
    let t = Term::start(&["-l", log.to_str().unwrap(), peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    // Completion works, so the schema was fetched (in the background).
    t.tab_until(PROMPT, "query-nam", "query-name ");
    t.press(&["Enter"]);
    t.wait_for("{\"return\": {}}");
    t.line("help query-status");
    t.wait_for("query-status (command)");
    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("exit status"));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("query-qmp-schema"), "{text}");
    let sent: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["execute"].as_str().map(str::to_owned)
        })
        .collect();
    assert_eq!(sent, ["qmp_capabilities", "query-name"], "{text}");
}

#[test]
fn a_pipe_behind_the_shell_gets_no_editing_codes() {
    let peer = Peer::qemu_none();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("tee.txt");
    let t = Term::launch(
        &ours(),
        &[peer.socket_str()],
        &[],
        |_| {},
        &format!(" | tee {}", sh_quote(file.to_str().unwrap())),
    );
    t.wait_for(PROMPT);
    t.line("query-status");
    t.wait_for("\"running\": true");
    t.press(&["C-d"]);
    t.wait_exit();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains('\x1b'), "escape codes in {text:?}");
    assert!(
        text.starts_with("Welcome to the QMP low-level shell!\n"),
        "{text:?}"
    );
    assert!(
        text.contains(
            "{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}}\n"
        ),
        "{text:?}"
    );
}

#[test]
fn behind_a_pipe_the_prompt_comes_after_what_went_through_it() {
    // `| tee`: the banner and the replies reach the screen through tee, the
    // prompt straight from the line editor; the prompt must still come
    // after them.
    let peer = Peer::qemu_none();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("tee.txt");
    let t = Term::launch(
        &ours(),
        &[peer.socket_str()],
        &[],
        |_| {},
        &format!(" | tee {}", sh_quote(file.to_str().unwrap())),
    );
    // A prompt with something else than the command after it: what came
    // through the pipe landed after the prompt.
    let misplaced = |s: &str| {
        s.lines()
            .any(|l| l.starts_with("(QEMU) ") && l != "(QEMU) query-status")
    };
    let rounds = 20;
    for round in 0..=rounds {
        let screen = t.wait_until("a prompt after the banner and the replies", |s| {
            (s.contains("Connected to QEMU")
                && s.matches("\"running\": true").count() == round
                && s.lines().last() == Some(PROMPT))
                || misplaced(s)
        });
        if misplaced(&screen) || round == rounds {
            break;
        }
        t.line("query-status");
        t.wait_until("the command", |s| {
            s.matches("(QEMU) query-status").count() == round + 1
        });
    }
    let screen = t.screen();
    let lines: Vec<&str> = screen.lines().collect();
    let reply = "{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}}";
    let mut expected = vec![
        "Welcome to the QMP low-level shell!".to_owned(),
        lines.get(1).copied().unwrap_or_default().to_owned(),
        String::new(),
    ];
    for _ in 0..rounds {
        expected.push("(QEMU) query-status".to_owned());
        expected.push(reply.to_owned());
    }
    expected.push(PROMPT.to_owned());
    assert!(
        lines
            .get(1)
            .is_some_and(|l| l.starts_with("Connected to QEMU ")),
        "{}",
        t.failure("the banner first")
    );
    assert_eq!(lines, expected, "{}", t.failure("order on the screen"));
    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("exit status"));
}

#[test]
fn history_symlinked_to_dev_null_is_left_alone() {
    let peer = Peer::qemu_none();
    let before = std::fs::metadata("/dev/null").unwrap().permissions().mode() & 0o7777;
    let t = Term::start_with_home(&[peer.socket_str()], &[], |home| {
        std::os::unix::fs::symlink("/dev/null", home.join(".qmp-shell_history")).unwrap();
    });
    t.wait_line(PROMPT);
    t.line("query-name");
    t.wait_for("{\"return\": {}}");
    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("exit status"));
    let after = std::fs::metadata("/dev/null").unwrap().permissions().mode() & 0o7777;
    assert_eq!(after, before);
    let link = std::fs::symlink_metadata(t.home().join(".qmp-shell_history")).unwrap();
    assert!(link.file_type().is_symlink());
}

// ---------------------------------------------------------------------------
// The wrap at a terminal
// ---------------------------------------------------------------------------

/// The pid of the QEMU the wrap `wrap_pid` started (its only child).
fn child_of(wrap_pid: u32) -> u32 {
    let mut found = None;
    common::wait_until("the wrap's QEMU", DEADLINE, || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{wrap_pid}/task")) else {
            return false;
        };
        for task in tasks.flatten() {
            if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
                if let Some(pid) = children.split_whitespace().next() {
                    found = pid.parse().ok();
                    return found.is_some();
                }
            }
        }
        false
    });
    found.unwrap()
}

#[test]
fn ctrl_c_under_the_wrap_never_reaches_qemu() {
    let t = Term::launch(
        &ours_wrap(),
        &[
            "qemu-system-x86_64",
            "-M",
            "none",
            "-display",
            "none",
            "-nodefaults",
        ],
        &[],
        |_| {},
        "",
    );
    t.wait_line(PROMPT);
    let qemu = child_of(t.shell_pid());
    freeze(qemu);
    t.line("query-status");
    t.wait_line("(QEMU) query-status");
    t.press(&["C-c"]);
    t.wait_for("(abandoned; a late reply will be shown as such)");
    thaw(qemu);
    t.wait_for("late reply (the command was abandoned)");
    // QEMU is still there: it answers.
    t.line("query-name");
    t.wait_for("{\"return\": {}}");
    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("exit status"));
    t.assert_terminal_usable();
}

#[test]
fn the_terminal_is_restored_when_the_wrap_ends_on_a_signal() {
    for sig in [libc::SIGTERM, libc::SIGHUP] {
        let t = Term::launch(
            &ours_wrap(),
            &[
                "qemu-system-x86_64",
                "-M",
                "none",
                "-display",
                "none",
                "-nodefaults",
            ],
            &[],
            |_| {},
            "",
        );
        t.wait_line(PROMPT);
        let wrap = t.shell_pid();
        let qemu = child_of(wrap);
        // Half a line typed: the editor is in raw mode.
        t.type_text("query-sta");
        t.wait_line("(QEMU) query-sta");
        // SAFETY: kill(2) on the wrap we started.
        unsafe {
            libc::kill(wrap as libc::pid_t, sig);
        }
        assert_eq!(t.wait_exit(), 128 + sig, "{}", t.failure("exit status"));
        t.assert_terminal_usable();
        common::wait_until("QEMU gone", DEADLINE, || {
            std::fs::read_to_string(format!("/proc/{qemu}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
        });
    }
}

// ---------------------------------------------------------------------------
// Shell commands at the terminal
// ---------------------------------------------------------------------------

#[test]
fn jobs_shows_a_progress_bar_and_ctrl_c_stops_following() {
    let peer = Peer::qemu_none();
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    t.line("blockdev-add driver=null-co node-name=b1 size=33554432");
    t.line("blockdev-add driver=null-co node-name=b2 size=33554432");
    t.wait_count("{\"return\": {}}", 2);
    // 32 MiB at 4 MiB/s: eight seconds.
    t.line("blockdev-backup job-id=bk device=b1 target=b2 sync=full speed=4194304");
    t.wait_count("{\"return\": {}}", 3);
    t.line("/jobs");
    let screen = t.wait_until("a progress bar", |s| {
        s.lines()
            .any(|l| l.contains("backup bk") && l.contains('%') && l.contains("ETA"))
    });
    assert!(
        screen.contains("running"),
        "{}",
        t.failure("status in the bar")
    );
    t.press(&["C-c"]);
    t.wait_for("(stopped following the jobs; they go on)");
    t.wait_line(PROMPT);
    // The job went on: follow it to the end this time.
    t.line("/jobs");
    t.wait_for("{\"jobs\": [{\"job\": \"bk\", \"type\": \"backup\"");
    t.wait_line(PROMPT);
    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("exit status"));
    t.assert_terminal_usable();
}

/// The progress bars on the screen: label, percent and status of each
/// (a bar as wide as the terminal is joined with the next line).
fn bars(screen: &str) -> Vec<(String, u64, String)> {
    let re =
        regex::Regex::new(r"(\S+(?: \S+)?) [=> ]{30} +(\d+)% +.*? ETA +\S+ ([a-z-]+)").unwrap();
    re.captures_iter(screen)
        .map(|c| (c[1].to_owned(), c[2].parse().unwrap(), c[3].to_owned()))
        .collect()
}

#[test]
fn jobs_bars_follow_events_and_leave_no_stale_bar_behind() {
    let peer = Peer::qemu_none();
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    for line in [
        "blockdev-add driver=null-co node-name=m1 size=16777216",
        "blockdev-add driver=null-co node-name=m2 size=16777216",
        "blockdev-add driver=null-co node-name=b1 size=67108864",
        "blockdev-add driver=null-co node-name=b2 size=67108864",
    ] {
        t.line(line);
    }
    t.wait_count("{\"return\": {}}", 4);
    // The mirror is ready within a second; the backup takes four.
    t.line("blockdev-mirror job-id=m0 device=m1 target=m2 sync=full speed=33554432");
    t.line("blockdev-backup job-id=bk device=b1 target=b2 sync=full speed=16777216");
    t.wait_count("{\"return\": {}}", 6);
    t.line("/jobs");
    // The events are printed as they come, above the bars; the mirror's
    // bar says it is ready while the backup's still runs.
    t.wait_until("the mirror's bar ready beside the running backup", |s| {
        let bars = bars(s);
        bars.iter()
            .any(|(l, p, st)| l == "mirror m0" && *p == 100 && st == "ready")
            && bars
                .iter()
                .any(|(l, _, st)| l == "backup bk" && st == "running")
    });
    t.wait_for("{\"jobs\": [{\"job\": \"bk\"");
    t.wait_line(PROMPT);
    let screen = t.screen();
    assert!(
        screen.contains("\"event\": \"BLOCK_JOB_COMPLETED\""),
        "{}",
        t.failure("events printed while following")
    );
    // Nothing of the bars is left: no copy that an event pushed up.
    assert_eq!(bars(&screen), [], "{}", t.failure("stale progress bars"));
    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("exit status"));
}

#[test]
fn jobs_bar_of_a_migration() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("random.bin");
    let mut bytes = vec![0u8; 16 << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .unwrap();
    std::fs::write(&data, &bytes).unwrap();
    let loader = format!("loader,file={},addr=0x1000000", data.display());
    let peer = Peer::qemu_with_args(&["-M", "pc", "-m", "256", "-S", "-device", &loader]);
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    // 16 MiB of data at 4 MiB/s: four seconds.
    t.line("migrate-set-parameters max-bandwidth=4194304");
    t.line("migrate uri=\"exec:cat > /dev/null\"");
    t.wait_count("{\"return\": {}}", 2);
    t.line("/jobs");
    let screen = t.wait_until("the migration's bar", |s| {
        bars(s).iter().any(|(_, _, st)| st == "active")
    });
    assert_eq!(
        bars(&screen)[0].0,
        "migration",
        "{}",
        t.failure("the bar's label")
    );
    let screen = t.wait_for("\"status\": \"completed\"");
    assert!(
        screen.contains("\"percent\": 100}]}"),
        "{}",
        t.failure("a completed migration at 100%")
    );
    t.wait_line(PROMPT);
    assert_eq!(bars(&t.screen()), [], "{}", t.failure("bars left"));
    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("exit status"));
}

#[test]
fn events_while_jobs_follows_print_above_the_bars() {
    let peer = Peer::qemu_none();
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    t.line("blockdev-add driver=null-co node-name=b1 size=8388608");
    t.line("blockdev-add driver=null-co node-name=b2 size=8388608");
    t.wait_count("{\"return\": {}}", 2);
    // 8 MiB at 4 MiB/s: two seconds, then the job's events as it ends.
    t.line("blockdev-backup job-id=bk device=b1 target=b2 sync=full speed=4194304");
    t.line("/jobs");
    t.wait_until("a progress bar", |s| {
        s.lines().any(|l| l.contains("backup bk"))
    });
    t.wait_for("{\"jobs\": ");
    let screen = t.wait_line(PROMPT);
    // The events came while the bar was drawn: above it, whole lines; no
    // bar was left behind in the middle of them.
    let after_jobs: Vec<&str> = screen
        .lines()
        .skip_while(|l| *l != "(QEMU) /jobs")
        .skip(1)
        .take_while(|l| *l != PROMPT)
        .collect();
    assert!(
        after_jobs
            .iter()
            .any(|l| l.contains("\"BLOCK_JOB_COMPLETED\"")),
        "{}",
        t.failure("the job's events")
    );
    for l in &after_jobs {
        assert!(
            l.starts_with('{'),
            "{}",
            t.failure(&format!("not an event nor the final state: {l:?}"))
        );
    }
    // The final state (job gone: "null") comes after the events that led
    // there, as on the wire, and it has the job whose bar was shown.
    assert!(
        after_jobs
            .last()
            .is_some_and(|l| l.starts_with("{\"jobs\": ")),
        "{}",
        t.failure("the final state last")
    );
    assert!(
        after_jobs
            .last()
            .is_some_and(|l| l.contains("\"job\": \"bk\"")),
        "{}",
        t.failure("the job in the final state")
    );
}

#[test]
fn completion_of_shell_commands_events_and_marks() {
    let peer = Peer::qemu_none();
    let t = Term::start(&[peer.socket_str()], &[]);
    t.wait_line(PROMPT);
    // Once the schema is there (learnt in the background).
    t.tab_until(PROMPT, "query-nam", "query-name ");
    t.press(&["C-u"]);
    t.type_text("/wa");
    t.press(&["Tab"]);
    t.wait_line("(QEMU) /wait");
    t.type_text(" JOB_STATUS_CH");
    t.press(&["Tab"]);
    t.wait_line("(QEMU) /wait JOB_STATUS_CHANGE");
    t.press(&["C-u"]);
    t.type_text("/oob mig");
    t.press(&["Tab"]);
    t.wait_line("(QEMU) /oob migrate-");
    t.press(&["Tab"]);
    t.wait_for("migrate-pause");
    t.wait_for("migrate-recover");
    t.press(&["C-u"]);
    t.type_text("nbd-server-");
    t.press(&["Tab"]);
    t.press(&["Tab"]);
    t.wait_for("nbd-server-add (deprecated)");
    t.wait_for("nbd-server-remove (deprecated)");
    let screen = t.screen();
    assert!(
        screen.contains("nbd-server-start") && !screen.contains("nbd-server-start ("),
        "{}",
        t.failure("unmarked commands have no mark")
    );
    t.press(&["C-u"]);
    t.press(&["C-d"]);
    assert_eq!(t.wait_exit(), 0, "{}", t.failure("exit status"));
}

// ---------------------------------------------------------------------------
// Connecting, and many targets at once
// ---------------------------------------------------------------------------

/// Whether process `pid` has a thread named `name`.
fn has_thread(pid: u32, name: &str) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks.flatten().any(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name)
            })
        })
        .unwrap_or(false)
}

#[test]
fn ctrl_c_while_connecting_to_a_peer_that_never_greets() {
    let hung = Peer::qemu_none();
    freeze(hung.pid());
    let t = Term::start(&["--timeout", "600", hung.socket_str()], &[]);
    let pid = t.shell_pid();
    wait_until("the connection attempt", DEADLINE, || {
        has_thread(pid, "attempt")
    });
    t.press(&["C-c"]);
    let code = t.wait_exit();
    thaw(hung.pid());
    assert_eq!(code, 130, "{}", t.failure("exit status"));
    t.assert_terminal_usable();
}

/// The lines of a fan-out's screen before its summary: every one a reply
/// of one of `peers` (`vmK`); no progress bar is left (nor a `^C` the
/// terminal echoed on its line).
fn check_replies(t: &Term, peers: &[Peer], screen: &str) {
    let lines: Vec<&str> = screen
        .lines()
        .take_while(|l| !l.starts_with("qmp-shell: "))
        .filter(|l| !l.contains("ERROR: Couldn't connect"))
        .collect();
    let mut expected: Vec<String> = peers
        .iter()
        .enumerate()
        .map(|(k, p)| {
            format!(
                "{}: {{\"return\": {{\"name\": \"vm{k}\"}}}}",
                p.socket_str()
            )
        })
        .collect();
    let mut got: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    expected.sort();
    got.sort();
    assert_eq!(
        got,
        expected,
        "{}",
        t.failure("replies garbled by the bar?")
    );
}

#[test]
fn fan_out_shows_progress_and_ctrl_c_ends_it_with_a_summary() {
    let peers: Vec<Peer> = (0..8)
        .map(|k| Peer::qemu_with_args(&["-M", "none", "-name", &format!("vm{k}")]))
        .collect();
    let hung = Peer::qemu_none();
    freeze(hung.pid());
    let targets = |timeout: &'static str| {
        let mut args = vec!["--timeout", timeout, "-j", "3", "-c", "query-name"];
        args.extend(peers.iter().map(Peer::socket_str));
        args.push(hung.socket_str());
        args
    };
    // To the end: the frozen target times out, the bar goes away.
    let t = Term::start(&targets("3"), &[]);
    t.wait_for("8/9 targets done");
    assert_eq!(t.wait_exit(), 1, "{}", t.failure("exit status"));
    let screen = t.wait_for("EXIT=1");
    assert!(
        screen.contains(
            "qmp-shell: 9 targets: 8 answered, 0 with failed commands, 1 unreachable or lost\n"
        ),
        "{}",
        t.failure("the summary")
    );
    check_replies(&t, &peers, &screen);
    // Interrupted: the summary says so, and the bar is gone.
    let t = Term::start(&targets("600"), &[]);
    t.wait_for("8/9 targets done");
    t.press(&["C-c"]);
    let code = t.wait_exit();
    thaw(hung.pid());
    assert_eq!(code, 130, "{}", t.failure("exit status"));
    let screen = t.screen();
    assert!(
        screen.contains(
            "qmp-shell: 9 targets: 8 answered, 0 with failed commands, \
             0 unreachable or lost, 1 interrupted"
        ),
        "{}",
        t.failure("the summary")
    );
    check_replies(&t, &peers, &screen);
    t.assert_terminal_usable();
}
