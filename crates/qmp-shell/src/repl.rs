//! The two ways of driving a session.
//!
//! * [`run_script`]: input from a pipe, a file or `-c`. Commands are sent as
//!   soon as they are read, many in flight at once (pipelining), while a
//!   printer thread prints prompts and replies in input order. The output
//!   is byte-identical to the reference's.
//! * [`run_interactive`]: a terminal, with line editing, completion and
//!   history.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, TryRecvError};
use std::sync::Arc;
use std::thread;

use rustyline::config::{CompletionType, Config as EditorConfig};
use rustyline::error::ReadlineError;
use rustyline::history::{DefaultHistory, History};
use rustyline::Editor;

use qmp::Client;

use crate::cli::exit;
use crate::complete::{Names, ShellHelper};
use crate::hmp;
use crate::session::{banner, input_error, Engine, Flow, Item, Printer};

/// How many output items may wait for the printer: bounds the number of
/// commands in flight in pipe mode.
const WINDOW: usize = 256;

/// Entries kept in the history file, as the reference does.
pub const HISTORY_SIZE: usize = 1024;

/// Where input lines come from in script mode.
pub type Lines = Box<dyn Iterator<Item = Result<String, String>> + Send>;

/// Lines of standard input (or any reader): split at `\n` only, like
/// Python's `input()`; a line that is not UTF-8 is reported, not fatal.
pub fn reader_lines<R: BufRead + Send + 'static>(mut reader: R) -> Lines {
    Box::new(std::iter::from_fn(move || {
        let mut buf = Vec::new();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                Some(String::from_utf8(buf).map_err(|_| "input is not valid UTF-8".to_string()))
            }
            Err(err) => {
                eprintln!("ERROR: reading input: {err}");
                None
            }
        }
    }))
}

/// Run a non-interactive session and return the exit status.
///
/// With `prompts`, the banner and a prompt before each line are printed (and
/// a newline at end of input), as the reference does on a pipe.
pub fn run_script(mut engine: Engine, mut lines: Lines, prompts: bool, exit_status: bool) -> i32 {
    let client = engine.client().clone();
    let cfg = engine.config().clone();
    let (tx, rx) = sync_channel::<Item>(WINDOW);

    let printer = thread::spawn(move || {
        let stdout = io::stdout();
        let out = BufWriter::with_capacity(64 * 1024, stdout.lock());
        let mut printer = Printer::new(out, io::stderr(), client, cfg);
        let mut flow = Flow::Continue;
        loop {
            let item = match rx.try_recv() {
                Ok(item) => item,
                Err(TryRecvError::Empty) => {
                    if printer.flush().is_err() {
                        break;
                    }
                    match rx.recv() {
                        Ok(item) => item,
                        Err(_) => break,
                    }
                }
                Err(TryRecvError::Disconnected) => break,
            };
            match printer.emit(item) {
                Ok(Flow::Continue) => {}
                Ok(stop) => {
                    flow = stop;
                    break;
                }
                // Standard output is gone (closed pipe): nothing more to say.
                Err(_) => {
                    flow = Flow::Stop(exit::OK);
                    break;
                }
            }
        }
        let _ = printer.flush();
        (flow, printer.failures())
    });

    let mut items = Vec::new();
    if prompts {
        items.push(Item::Out(banner(engine.config().hmp, engine.client())));
    }
    'input: loop {
        if prompts {
            items.push(Item::Out(engine.prompt().to_string()));
        }
        match lines.next() {
            None => {
                if prompts {
                    items.push(Item::Out("\n".to_string()));
                }
                for item in items.drain(..) {
                    if tx.send(item).is_err() {
                        break 'input;
                    }
                }
                break;
            }
            Some(Ok(line)) => engine.handle_line(&line, &mut items),
            Some(Err(reason)) => items.push(input_error(&reason)),
        }
        for item in items.drain(..) {
            // The printer stopped (disconnected, stdout closed): stop reading.
            if tx.send(item).is_err() {
                break 'input;
            }
        }
    }
    drop(tx);
    let (flow, failures) = printer.join().unwrap_or((Flow::Stop(exit::FATAL), 0));
    match flow {
        Flow::Stop(code) => code,
        Flow::Continue if exit_status && failures > 0 => exit::COMMAND_FAILED,
        Flow::Continue => exit::OK,
    }
}

/// `~/.qmp-shell_history`, shared with the reference.
pub fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| Path::new(&home).join(".qmp-shell_history"))
}

/// Fill the completion list in the background (the first prompt never waits).
fn fill_names(client: Arc<Client>, names: Names, hmp_mode: bool) {
    thread::spawn(move || {
        let timeout = Some(std::time::Duration::from_secs(30));
        let mut list = Vec::new();
        if hmp_mode {
            for (query, parse) in [
                ("help", hmp::names_from_help as fn(&str) -> Vec<String>),
                ("info", hmp::names_from_info),
            ] {
                if let Ok(reply) = client.call(hmp::command(query, None), timeout) {
                    if let Some(text) = reply.ret().and_then(|r| r.as_str()) {
                        list.extend(parse(text));
                    }
                }
            }
        } else if let Ok(reply) = client.execute("query-commands", None, timeout) {
            if let Some(cmds) = reply.ret().and_then(|r| r.as_array()) {
                list.extend(
                    cmds.iter()
                        .filter_map(|c| c.get("name").and_then(|n| n.as_str()))
                        .map(str::to_string),
                );
            }
        }
        names.set(list);
    });
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
    let len = history.len();
    let skip = len.saturating_sub(HISTORY_SIZE);
    let mut text = String::new();
    for entry in history.iter().skip(skip) {
        text.push_str(entry);
        text.push('\n');
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}

/// Run an interactive session on the terminal and return the exit status.
pub fn run_interactive(mut engine: Engine, exit_status: bool) -> i32 {
    let client = engine.client().clone();
    let cfg = engine.config().clone();
    let config = EditorConfig::builder()
        .max_history_size(HISTORY_SIZE)
        .map(|b| b.history_ignore_space(true))
        .map(|b| b.auto_add_history(false))
        .map(|b| b.completion_type(CompletionType::List))
        .map(|b| b.build())
        .unwrap_or_default();
    let mut editor: Editor<ShellHelper, DefaultHistory> = match Editor::with_config(config) {
        Ok(editor) => editor,
        Err(err) => {
            eprintln!("ERROR: cannot set up the terminal: {err}");
            return exit::FATAL;
        }
    };
    let names = Names::default();
    editor.set_helper(Some(ShellHelper::new(names.clone(), cfg.hmp)));
    fill_names(client.clone(), names, cfg.hmp);
    let history = history_path();
    if let Some(path) = &history {
        load_history(&mut editor, path);
    }

    let mut printer = Printer::new(io::stdout(), io::stderr(), client.clone(), cfg.clone());
    let _ = printer.out(&banner(cfg.hmp, &client));
    let _ = printer.flush();
    let mut code = exit::OK;
    loop {
        let prompt = engine.prompt();
        match editor.readline(prompt) {
            Ok(line) => {
                if !line.is_empty() && !line.starts_with(' ') {
                    let _ = editor.add_history_entry(line.as_str());
                }
                let mut items = Vec::new();
                engine.handle_line(&line, &mut items);
                let mut stop = None;
                for item in items {
                    match printer.emit(item) {
                        Ok(Flow::Continue) => {}
                        Ok(Flow::Stop(c)) => {
                            stop = Some(c);
                            break;
                        }
                        Err(_) => {
                            stop = Some(exit::OK);
                            break;
                        }
                    }
                }
                let _ = printer.flush();
                if let Some(c) = stop {
                    code = c;
                    break;
                }
            }
            // Ctrl-C clears the line; it never ends the shell at the prompt.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => {
                let _ = printer.out("\n");
                let _ = printer.flush();
                break;
            }
            Err(err) => {
                eprintln!("ERROR: reading input: {err}");
                code = exit::FATAL;
                break;
            }
        }
    }
    if let Some(path) = &history {
        if let Err(err) = save_history(&editor, path) {
            eprintln!(
                "warning: failed to save history file '{}': {err}",
                path.display()
            );
        }
    }
    if code == exit::OK && exit_status && printer.failures() > 0 {
        code = exit::COMMAND_FAILED;
    }
    code
}

/// Open the `-l` log file: created (or truncated) with mode 0600.
pub fn open_log(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open: tighten it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}
