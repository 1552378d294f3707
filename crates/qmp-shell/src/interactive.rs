//! The driver for a terminal.
//!
//! Line editing, history and completion come from rustyline. Events,
//! warnings and late replies are printed the moment they arrive, above the
//! prompt, by a thread that owns rustyline's external printer. Completion
//! data (the QMP schema, HMP command lists, the guest agent's commands) is
//! fetched in the background, out of the `-l` log.
//!
//! Lines typed ahead or pasted all run, in order. Ctrl-C means one thing:
//! stop what is going on. At the prompt it clears the line (twice within a
//! second on an empty line: exit); at a `TRANS>` prompt it abandons the
//! transaction; while replies are awaited it stops waiting for them (late
//! replies are shown as such), drops every line typed or pasted before it
//! and returns to the prompt. It never reaches QEMU.
//!
//! The screen has one writer at a time (see [`crate::live`]): the engine
//! while it runs commands, printing events among the replies in the order
//! of the wire; the line editor while it reads a line. While the shell is
//! busy the terminal does not echo what is typed ahead (the editor shows it
//! at the prompt), so nothing printed ever lands inside a typed line.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustyline::config::{Behavior, CompletionType, Config as EditorConfig};
use rustyline::error::ReadlineError;
use rustyline::history::{DefaultHistory, History};
use rustyline::{
    Cmd, ConditionalEventHandler, Editor, Event, EventContext, EventHandler, ExternalPrinter,
    KeyCode, KeyEvent, Modifiers, RepeatCount,
};
use serde_json::Value;

use qmp_client::{Client, Incoming};

use crate::cli::exit;
use crate::complete::{DrawHook, Knowledge, ShellHelper};
use crate::files::{self, history_path, open_private, Existing};
use crate::hmp;
use crate::live::{Item, Live};
use crate::render::Style;
use crate::session::{Engine, LOOKUP_TIMEOUT};
use crate::signals::{self, Quiet};
use crate::store::{call_unlogged, SCHEMA_LOOKUP};
use crate::wording::{counted, shown};

/// Entries kept in the history file, as the reference does.
pub const HISTORY_SIZE: usize = 1024;

/// Two Ctrl-C on an empty line within this time exit.
const DOUBLE_CTRL_C: Duration = Duration::from_secs(1);

/// Learn completion data in the background (the first prompt never waits),
/// keeping these look-ups out of the `-l` log: the log records what the
/// user did.
fn learn(client: Arc<Client>, knowledge: Knowledge, hmp_mode: bool, guest_agent: bool) {
    let call = |client: &Client, msg| call_unlogged(client, msg, Some(LOOKUP_TIMEOUT));
    let _ = thread::Builder::new()
        .name("learn".to_owned())
        .spawn(move || {
            if hmp_mode {
                let mut list = Vec::new();
                for (query, parse) in [
                    ("help", hmp::names_from_help as fn(&str) -> Vec<String>),
                    ("info", hmp::names_from_info),
                ] {
                    if let Ok(reply) = call(&client, hmp::command(query, None)) {
                        if let Some(text) = reply.ret().and_then(Value::as_str) {
                            list.extend(parse(text));
                        }
                    }
                }
                knowledge.names.set(list);
            } else if guest_agent {
                let Ok(reply) = call(&client, qmp_client::command("guest-info", None)) else {
                    return;
                };
                knowledge.names.set(
                    reply
                        .ret()
                        .and_then(|r| r.get("supported_commands"))
                        .and_then(Value::as_array)
                        .map(|cmds| {
                            cmds.iter()
                                .filter(|c| {
                                    c.get("enabled").and_then(Value::as_bool) != Some(false)
                                })
                                .filter_map(|c| c.get("name").and_then(Value::as_str))
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default(),
                );
            } else {
                // Shared with the engine: fetched once, out of the log.
                // The facts first: they are cached for the next session.
                let _ = knowledge.store.facts(&client);
                let _ = knowledge.store.schema(&client, Some(SCHEMA_LOOKUP));
            }
        });
}

/// Pass warnings and late replies from the client's queue on to `live`
/// (events reach it from the engine's tap, in the order of the wire); when
/// the connection drops, make the editor return so the shell says so at
/// once.
fn relay_notices(client: Arc<Client>, live: Arc<Live>, gone: Arc<AtomicBool>) {
    let _ = thread::Builder::new()
        .name("notices".to_owned())
        .spawn(move || {
            while let Some(incoming) = client.next_incoming(None) {
                match incoming {
                    Incoming::Event(_) => {}
                    Incoming::Warning(warning) => live.push(Item::Warning(warning)),
                    Incoming::LateReply(reply) => live.push(Item::LateReply(shown(reply))),
                }
            }
            live.close();
            gone.store(true, Ordering::SeqCst);
            signals::wake_readline();
            // The editor may be between two reads: keep knocking until the
            // main thread has left it.
            while signals::readline_active() {
                thread::sleep(Duration::from_millis(20));
                signals::wake_readline();
            }
        });
}

/// Print what arrives while the line editor owns the screen, through it
/// (above the line being typed).
fn print_live(live: Arc<Live>, mut printer: Printer, style: Style) {
    let _ = thread::Builder::new()
        .name("events".to_owned())
        .spawn(move || {
            live.serve_editor(|items| {
                // One message: rustyline takes one at a time.
                let text: String = items.iter().map(|i| i.render(style)).collect();
                printer.print(text).is_ok()
            })
        });
}

/// Where live output goes: rustyline's printer when standard output is the
/// terminal, else standard output itself.
enum Printer {
    Editor(Box<dyn ExternalPrinter + Send>),
    Stdout,
}

impl Printer {
    fn print(&mut self, text: String) -> rustyline::Result<()> {
        match self {
            Printer::Editor(p) => p.print(text),
            Printer::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(text.as_bytes())?;
                out.flush()?;
                Ok(())
            }
        }
    }
}

/// Ctrl-C at the prompt: records that it was pressed, and whether on an
/// empty line, then ends the line. (Rustyline's own interrupt would drop
/// whatever was typed ahead after it.)
struct CtrlC {
    pressed: Arc<AtomicBool>,
    reading: Arc<Reading>,
}

impl ConditionalEventHandler for CtrlC {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, _: &EventContext) -> Option<Cmd> {
        if self.reading.dropping.load(Ordering::SeqCst) {
            return Some(Cmd::Noop);
        }
        self.pressed.store(true, Ordering::SeqCst);
        Some(Cmd::AcceptLine)
    }
}

/// The state of the line editor's current read, shared with the hooks
/// that run on its thread.
///
/// After Ctrl-C, what was typed or pasted before it must not run. The
/// terminal flushes its own input queue on Ctrl-C, but the editor reads the
/// terminal in chunks and may hold lines it has read and not returned yet
/// (a paste that arrived as plain keystrokes). [`drop_held`] drops them: it
/// reads once more with every key swallowed and counted ([`Swallow`]),
/// after raising SIGINT on the editor's thread as the read starts, so the
/// editor, which checks for signals only once it has no key left, returns
/// as soon as it has gone through what it held, without waiting for the
/// user.
#[derive(Default)]
struct Reading {
    /// Set before each read; its first drawing clears it.
    armed: AtomicBool,
    /// This read drops what the editor holds.
    dropping: AtomicBool,
    /// Complete lines swallowed so far.
    lines: AtomicUsize,
    /// Text swallowed after the last complete line.
    partial: AtomicBool,
}

impl Reading {
    /// The editor draws the line; the first time in a read, it has just
    /// put the terminal in raw mode and set up its signal handling.
    fn drawn(&self, live: &Live) {
        if !self.armed.swap(false, Ordering::SeqCst) {
            return;
        }
        if self.dropping.load(Ordering::SeqCst) {
            // SAFETY: raise(3) on this thread; the editor's handler records
            // the signal in its pipe, which it reads once no key is left.
            unsafe {
                libc::raise(libc::SIGINT);
            }
        } else {
            live.editor(true);
        }
    }
}

/// While [`drop_held`] reads: every key is swallowed, and lines counted.
struct Swallow {
    reading: Arc<Reading>,
}

impl ConditionalEventHandler for Swallow {
    fn handle(&self, event: &Event, _: RepeatCount, _: bool, _: &EventContext) -> Option<Cmd> {
        let reading = &self.reading;
        if !reading.dropping.load(Ordering::SeqCst) {
            return None;
        }
        let Event::KeySeq(keys) = event else {
            return Some(Cmd::Noop);
        };
        for key in keys {
            let ends_line = matches!(
                key,
                KeyEvent(KeyCode::Enter, _) | KeyEvent(KeyCode::Char('J' | 'M'), Modifiers::CTRL)
            );
            if ends_line {
                if reading.partial.swap(false, Ordering::SeqCst) {
                    reading.lines.fetch_add(1, Ordering::SeqCst);
                }
            } else if let KeyEvent(KeyCode::Char(c), Modifiers::NONE) = key {
                if !c.is_whitespace() {
                    reading.partial.store(true, Ordering::SeqCst);
                }
            }
        }
        Some(Cmd::Noop)
    }
}

/// Drop the lines the editor read from the terminal and holds (after
/// Ctrl-C); returns how many (a line typed without its Enter counts too).
/// The editor ends that read as it ends every read, with a newline on the
/// terminal; `terminal` (writing where the editor draws) takes the cursor
/// back up, so no empty line is left.
fn drop_held(
    editor: &mut Editor<ShellHelper, DefaultHistory>,
    reading: &Reading,
    terminal: Option<&mut (dyn ExternalPrinter + Send)>,
) -> usize {
    reading.lines.store(0, Ordering::SeqCst);
    reading.partial.store(false, Ordering::SeqCst);
    reading.dropping.store(true, Ordering::SeqCst);
    reading.armed.store(true, Ordering::SeqCst);
    signals::in_readline(true);
    signals::echo_on();
    // Ends with the raised SIGINT: as an interruption (or an error).
    let _ = editor.readline("");
    signals::echo_off(Quiet::TypeAhead);
    signals::in_readline(false);
    if let Some(terminal) = terminal {
        // Written at once: the terminal is out of raw mode.
        let _ = terminal.print("\x1b[A".to_owned());
    }
    reading.armed.store(false, Ordering::SeqCst);
    reading.dropping.store(false, Ordering::SeqCst);
    reading.lines.load(Ordering::SeqCst) + usize::from(reading.partial.load(Ordering::SeqCst))
}

/// Whether the line editor edits on this terminal: rustyline reads plain
/// lines, without raw mode or drawing, on the terminals it does not
/// support.
fn editing_terminal() -> bool {
    !matches!(
        std::env::var("TERM").as_deref(),
        Ok("dumb" | "cons25" | "emacs")
    )
}

/// With standard output a pipe (`| tee log`), wait a little until its
/// reader has taken what the shell wrote, so that the prompt, which the
/// editor draws on the terminal itself, comes after it on the screen.
/// Taken is not yet shown: the reader is then given [`PASS_ON`] to write
/// it out (a guess, there is no way to know; enough for `tee` on a busy
/// machine, and not felt at a prompt).
fn let_stdout_drain() {
    use std::os::unix::fs::FileTypeExt;
    if !files::file_type_of(io::stdout()).is_some_and(|t| t.is_fifo()) {
        return;
    }
    for _ in 0..500 {
        let mut unread: libc::c_int = 0;
        // SAFETY: FIONREAD stores the count of unread bytes in `unread`.
        let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::FIONREAD, &mut unread) };
        if rc != 0 || unread <= 0 {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(PASS_ON);
}

/// How long the reader of a piped standard output is given to pass on what
/// it took, before the prompt is drawn ([`let_stdout_drain`]).
const PASS_ON: Duration = Duration::from_millis(10);

/// What Ctrl-C at a prompt does.
#[derive(Default)]
struct CtrlCState {
    /// When Ctrl-C was last pressed on an empty line.
    last_empty: Option<Instant>,
}

impl CtrlCState {
    fn reset(&mut self) {
        self.last_empty = None;
    }

    /// Ctrl-C at the prompt (`empty`: on an empty line). Returns `true`
    /// when the shell should exit: twice on an empty line within
    /// [`DOUBLE_CTRL_C`].
    fn pressed(&mut self, engine: &mut Engine, empty: bool) -> bool {
        if engine.abandon_transaction() || !empty {
            self.reset();
            return false;
        }
        let now = Instant::now();
        if self
            .last_empty
            .is_some_and(|t| now.duration_since(t) < DOUBLE_CTRL_C)
        {
            engine.queue_text("\n".to_owned());
            return true;
        }
        self.last_empty = Some(now);
        engine.note("(to exit, press Ctrl-C again or Ctrl-D)\n");
        false
    }
}

fn load_history(editor: &mut Editor<ShellHelper, DefaultHistory>, path: &Path) {
    // Plain lines, as GNU readline writes them, so the reference and this
    // shell share one file.
    let Ok(text) = std::fs::read(path) else {
        return;
    };
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let skip = lines.len().saturating_sub(HISTORY_SIZE);
    for line in &lines[skip..] {
        let _ = editor.add_history_entry(*line);
    }
}

fn save_history(editor: &Editor<ShellHelper, DefaultHistory>, path: &Path) -> io::Result<()> {
    let history = editor.history();
    let skip = history.len().saturating_sub(HISTORY_SIZE);
    let mut text = String::new();
    for entry in history.iter().skip(skip) {
        // One entry per line: a multi-line raw JSON entry is joined.
        text.push_str(&entry.replace('\n', " "));
        text.push('\n');
    }
    open_private(path, Existing::Truncate)?.write_all(text.as_bytes())
}

/// Run an interactive session on the terminal and return the exit status.
///
/// `style`: how live events are printed (as replies are).
pub fn run(mut engine: Engine, style: Style) -> i32 {
    let client = Arc::clone(engine.client());
    let cfg = engine.config().clone();
    signals::install(false);
    signals::watch(engine.doorbell());
    let stdout_tty = io::stdout().is_terminal();
    let config = EditorConfig::builder()
        .max_history_size(HISTORY_SIZE)
        .map(|b| b.history_ignore_space(true))
        .map(|b| b.auto_add_history(false))
        .map(|b| b.completion_type(CompletionType::List))
        // Standard output is not the terminal (`| tee`): edit on the
        // terminal itself, so no editing codes reach standard output.
        .map(|b| {
            b.behavior(if stdout_tty {
                Behavior::Stdio
            } else {
                Behavior::PreferTerm
            })
        })
        .map(|b| b.build())
        .unwrap_or_default();
    let mut editor: Editor<ShellHelper, DefaultHistory> = match Editor::with_config(config) {
        Ok(editor) => editor,
        Err(err) => {
            let _ = writeln!(io::stderr(), "ERROR: cannot set up the terminal: {err}");
            return exit::FATAL;
        }
    };
    let live = Arc::clone(engine.live());
    let reading = Arc::new(Reading::default());
    let knowledge = Knowledge {
        store: engine.store(),
        on_draw: {
            let (reading, live) = (Arc::clone(&reading), Arc::clone(&live));
            DrawHook::new(move || reading.drawn(&live))
        },
        ..Knowledge::default()
    };
    editor.bind_sequence(
        KeyEvent::ctrl('C'),
        EventHandler::Conditional(Box::new(CtrlC {
            pressed: Arc::clone(&knowledge.ctrl_c),
            reading: Arc::clone(&reading),
        })),
    );
    editor.bind_sequence(
        Event::Any,
        EventHandler::Conditional(Box::new(Swallow {
            reading: Arc::clone(&reading),
        })),
    );
    // Where the editor does not edit, it reads plain lines: nothing is
    // held, and what arrives is printed at once.
    let editing = editing_terminal()
        && (stdout_tty
            || std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/tty")
                .is_ok());
    editor.set_helper(Some(ShellHelper::new(knowledge.clone(), cfg.hmp)));
    learn(
        Arc::clone(&client),
        knowledge.clone(),
        cfg.hmp,
        cfg.guest_agent,
    );
    let history = history_path();
    if let Some(path) = &history {
        load_history(&mut editor, path);
    }

    let gone = Arc::new(AtomicBool::new(false));
    let printer = match (stdout_tty, editor.create_external_printer()) {
        (true, Ok(p)) => Printer::Editor(Box::new(p)),
        _ => Printer::Stdout,
    };
    let mut terminal = editor.create_external_printer().ok();
    relay_notices(Arc::clone(&client), Arc::clone(&live), Arc::clone(&gone));
    print_live(Arc::clone(&live), printer, style);
    // Busy until the first prompt.
    signals::echo_off(Quiet::TypeAhead);

    engine.banner();
    let mut ctrl_c = CtrlCState::default();
    let mut seen_interrupts = signals::interrupts();
    // After Ctrl-C: drop what the editor holds before reading a line.
    let mut drop_typed_ahead = false;
    loop {
        // A signal that ends the session (SIGTERM, SIGHUP) ends any wait.
        engine.settle(&|| signals::terminating().is_some());
        if let Some(sig) = signals::terminating() {
            engine.stop_with(128 + sig);
        }
        if gone.load(Ordering::SeqCst) && engine.stopped().is_none() {
            engine.disconnected();
        }
        if engine.stopped().is_some() {
            break;
        }
        // A Ctrl-C typed while no prompt was shown arrives as a signal:
        // it counts as one at an empty prompt.
        let interrupts = signals::interrupts();
        if interrupts != seen_interrupts {
            seen_interrupts = interrupts;
            drop_typed_ahead = true;
            if ctrl_c.pressed(&mut engine, true) {
                break;
            }
            continue;
        }
        if std::mem::take(&mut drop_typed_ahead) && editing {
            let dropped = drop_held(
                &mut editor,
                &reading,
                terminal
                    .as_mut()
                    .map(|t| t as &mut (dyn ExternalPrinter + Send)),
            );
            if dropped > 0 {
                engine.note(&format!(
                    "({} typed ahead not run)\n",
                    counted(dropped, "line", "lines")
                ));
            }
            continue;
        }
        knowledge
            .in_transaction
            .store(engine.in_transaction(), Ordering::Relaxed);
        let prompt = engine.prompt();
        if !stdout_tty {
            let_stdout_drain();
        }
        signals::in_readline(true);
        // The editor takes the screen once it has drawn its prompt (where
        // it does not edit, at once).
        reading.armed.store(editing, Ordering::SeqCst);
        live.editor(!editing);
        let read = if gone.load(Ordering::SeqCst) || signals::terminating().is_some() {
            // Do not block: the session ends.
            Err(ReadlineError::Interrupted)
        } else {
            // The editor keeps the terminal as it finds it for when it
            // suspends (Ctrl-Z) and returns: as the user had it.
            signals::echo_on();
            let read = editor.readline(prompt);
            signals::echo_off(Quiet::TypeAhead);
            read
        };
        reading.armed.store(false, Ordering::SeqCst);
        live.editor(false);
        signals::in_readline(false);
        match read {
            Ok(text) if knowledge.ctrl_c.swap(false, Ordering::SeqCst) => {
                // The half-typed line is dropped.
                if ctrl_c.pressed(&mut engine, text.is_empty()) {
                    break;
                }
            }
            Ok(text) => {
                ctrl_c.reset();
                let lines: Vec<&str> = text.split('\n').collect();
                for (i, line) in lines.iter().enumerate() {
                    // A line starting with a space stays out of history.
                    if !line.trim().is_empty() && !line.starts_with(' ') {
                        let _ = editor.add_history_entry(*line);
                    }
                    engine.line(line);
                    let before = seen_interrupts;
                    // Ctrl-C stops waiting; so does the end of the session
                    // (SIGTERM, or the terminal closed: SIGHUP).
                    let stop =
                        || signals::interrupts() != before || signals::terminating().is_some();
                    let mut interrupted = engine.settle(&stop);
                    // The lines of a /play file, one after the other.
                    while !interrupted && engine.play_next() {
                        interrupted = engine.settle(&stop);
                    }
                    seen_interrupts = signals::interrupts();
                    drop_typed_ahead |= interrupted;
                    if engine.stopped().is_some() {
                        break;
                    }
                    let rest = lines.len() - i - 1;
                    if interrupted && rest > 0 {
                        engine.note(&format!(
                            "(the {} pasted after it not run)\n",
                            if rest == 1 {
                                "line".to_owned()
                            } else {
                                format!("{rest} lines")
                            }
                        ));
                        break;
                    }
                }
            }
            // A signal (SIGINT sent to wake us): the loop's checks decide.
            Err(ReadlineError::Interrupted) => {}
            Err(ReadlineError::Eof) => {
                engine.end_of_input();
                engine.queue_text("\n".to_owned());
                break;
            }
            Err(err) => {
                engine.note(&format!("ERROR: reading input: {err}\n"));
                engine.stop_with(exit::FATAL);
                break;
            }
        }
    }
    engine.settle(&|| false);
    signals::echo_on();
    if let Some(path) = &history {
        if let Err(err) = save_history(&editor, path) {
            let _ = writeln!(
                io::stderr(),
                "warning: failed to save history file '{}': {err}",
                path.display()
            );
        }
    }
    engine.exit_code()
}
