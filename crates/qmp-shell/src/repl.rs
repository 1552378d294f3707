//! The two ways of driving a session.
//!
//! * [`run_script`]: input from a pipe, a file or `-c`. Commands are sent as
//!   soon as they are read, many in flight at once (pipelining), while a
//!   printer thread prints prompts and replies in input order. The output
//!   is byte-identical to the reference's.
//! * [`crate::interactive::run`]: a terminal, with line editing,
//!   completion, history and live events.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufWriter};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, TryRecvError};
use std::thread;

use crate::cli::exit;
use crate::session::{banner, parse_error, Engine, Flow, Item, Printer};

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
/// Unless the configuration is `quiet`, the banner and a prompt before each
/// line are printed (and a newline at end of input), as the reference does
/// on a pipe.
pub fn run_script(mut engine: Engine, lines: Lines, exit_status: bool) -> i32 {
    let client = engine.client().clone();
    let cfg = engine.config().clone();
    let prompts = !cfg.quiet;
    let (tx, rx) = sync_channel::<Item>(WINDOW);
    // Input lines arrive from a reader thread, so that the session can end
    // (say, on `Disconnected`) while standard input stays open and idle.
    let (input_tx, input_rx) = sync_channel::<Input>(WINDOW);
    let stopped_tx = input_tx.clone();
    thread::spawn(move || {
        for line in lines {
            if input_tx.send(Input::Line(line)).is_err() {
                return;
            }
        }
        let _ = input_tx.send(Input::End);
    });

    let printer = thread::spawn(move || {
        let stdout = io::stdout();
        let out = BufWriter::with_capacity(16 * 1024, stdout.lock());
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
        let _ = stopped_tx.send(Input::PrinterDone);
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
        // The banner and the prompt go out before we wait for the next line,
        // so a program driving us through a pipe sees them.
        for item in items.drain(..) {
            if tx.send(item).is_err() {
                break 'input;
            }
        }
        match input_rx.recv() {
            Ok(Input::Line(Ok(line))) => engine.handle_line(&line, &mut items),
            Ok(Input::Line(Err(reason))) => items.push(parse_error(&reason)),
            Ok(Input::End) => {
                if prompts {
                    let _ = tx.send(Item::Out("\n".to_string()));
                }
                break;
            }
            // The printer stopped (disconnected, stdout closed): stop reading.
            Ok(Input::PrinterDone) | Err(_) => break,
        }
        for item in items.drain(..) {
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

/// What the input thread tells the script driver.
enum Input {
    Line(Result<String, String>),
    End,
    PrinterDone,
}

/// `~/.qmp-shell_history`, shared with the reference.
pub fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| Path::new(&home).join(".qmp-shell_history"))
}

/// Open a file that may hold secrets (the `-l` log, the history) for
/// writing: created or truncated, with mode 0600.
pub fn open_private(path: &Path) -> io::Result<File> {
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
