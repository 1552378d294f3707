//! The interactive shell on a terminal.
//!
//! Line editing, history and completion come from rustyline. Events are
//! printed the moment they arrive, above the prompt, by a thread that owns
//! rustyline's external printer. Completion data (the QMP schema, HMP
//! command lists, the guest agent's commands) is fetched in the background.
//! On top of the shorthand language this mode understands `help [NAME]`
//! (from the schema) and raw JSON messages (a line starting with `{`, read
//! over several lines until its braces balance).

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rustyline::config::{CompletionType, Config as EditorConfig};
use rustyline::error::ReadlineError;
use rustyline::history::{DefaultHistory, History};
use rustyline::{Editor, ExternalPrinter};
use serde_json::Value;

use qmp::{Client, Incoming, Object};

use crate::cli::exit;
use crate::complete::{Knowledge, ShellHelper};
use crate::hmp;
use crate::render;
use crate::repl::{history_path, open_private, HISTORY_SIZE};
use crate::schema::Schema;
use crate::session::{banner, parse_error, Engine, Flow, Item, Printer};

/// How long background look-ups may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Learn completion data in the background (the first prompt never waits).
fn learn(client: Arc<Client>, knowledge: Knowledge, hmp_mode: bool, guest_agent: bool) {
    thread::spawn(move || {
        if hmp_mode {
            let mut list = Vec::new();
            for (query, parse) in [
                ("help", hmp::names_from_help as fn(&str) -> Vec<String>),
                ("info", hmp::names_from_info),
            ] {
                if let Ok(reply) = client.call(hmp::command(query, None), Some(LOOKUP_TIMEOUT)) {
                    if let Some(text) = reply.ret().and_then(Value::as_str) {
                        list.extend(parse(text));
                    }
                }
            }
            knowledge.names.set(list);
        } else if guest_agent {
            knowledge.names.set(guest_agent_commands(&client));
        } else {
            if let Ok(schema) = fetch_schema(&client) {
                let _ = knowledge.schema.set(schema);
                return;
            }
            // No schema (a very old QEMU): command names only.
            if let Ok(reply) = client.execute("query-commands", None, Some(LOOKUP_TIMEOUT)) {
                if let Some(cmds) = reply.ret().and_then(Value::as_array) {
                    knowledge.names.set(
                        cmds.iter()
                            .filter_map(|c| c.get("name").and_then(Value::as_str))
                            .map(str::to_string)
                            .collect(),
                    );
                }
            }
        }
    });
}

/// The enabled commands `guest-info` lists.
fn guest_agent_commands(client: &Client) -> Vec<String> {
    let Ok(reply) = client.execute("guest-info", None, Some(LOOKUP_TIMEOUT)) else {
        return Vec::new();
    };
    reply
        .ret()
        .and_then(|r| r.get("supported_commands"))
        .and_then(Value::as_array)
        .map(|cmds| {
            cmds.iter()
                .filter(|c| c.get("enabled").and_then(Value::as_bool) != Some(false))
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn fetch_schema(client: &Client) -> Result<Schema, String> {
    let reply = client
        .execute("query-qmp-schema", None, Some(LOOKUP_TIMEOUT))
        .map_err(|e| e.to_string())?;
    match reply.ret() {
        Some(ret) if ret.is_array() => Ok(Schema::from_value(ret)),
        _ => Err("query-qmp-schema failed".to_string()),
    }
}

/// Print events and warnings as they arrive, above the prompt.
fn print_live(
    client: Arc<Client>,
    mut printer: impl ExternalPrinter + Send + 'static,
    style: render::Style,
) {
    thread::spawn(move || {
        while let Some(incoming) = client.next_incoming(None) {
            let text = match incoming {
                Incoming::Event(event) => {
                    let mut text = render::to_string(&Value::Object(event.body), style);
                    text.push('\n');
                    text
                }
                Incoming::Warning(warning) => format!("warning: {warning}\n"),
            };
            if printer.print(text).is_err() {
                break;
            }
        }
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
    let skip = history.len().saturating_sub(HISTORY_SIZE);
    let mut text = String::new();
    for entry in history.iter().skip(skip) {
        // One entry per line: a multi-line raw JSON entry is joined.
        text.push_str(&entry.replace('\n', " "));
        text.push('\n');
    }
    open_private(path)?.write_all(text.as_bytes())
}

/// `help [NAME]` in QMP mode, from the schema (fetched now if need be).
fn help(knowledge: &Knowledge, client: &Client, name: Option<&str>) -> Item {
    if knowledge.schema.get().is_none() {
        match fetch_schema(client) {
            Ok(schema) => {
                let _ = knowledge.schema.set(schema);
            }
            Err(err) => {
                return Item::Err {
                    text: format!("help: cannot read the QMP schema: {err}\n"),
                    failed: true,
                }
            }
        }
    }
    let Some(schema) = knowledge.schema.get() else {
        return Item::Out(String::new());
    };
    match schema.help(name) {
        Some(mut text) => {
            if !text.ends_with('\n') {
                text.push('\n');
            }
            Item::Out(text)
        }
        None => Item::Err {
            text: format!(
                "help: no command or event named '{}'\n",
                name.unwrap_or_default()
            ),
            failed: true,
        },
    }
}

/// Run an interactive session on the terminal and return the exit status.
///
/// `guest_agent` (`-N`): complete from `guest-info` instead of the schema.
pub fn run(mut engine: Engine, exit_status: bool, guest_agent: bool) -> i32 {
    let client = engine.client().clone();
    let cfg = engine.config().clone();
    // At the prompt Ctrl-C is a key (the terminal is in raw mode); while a
    // reply is awaited it is a signal, which must not end the shell either
    // (nor lose its history): catch it and let the wait go on.
    let _ = signal_hook::flag::register(
        signal_hook::consts::SIGINT,
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
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
    let knowledge = Knowledge::default();
    editor.set_helper(Some(ShellHelper::new(knowledge.clone(), cfg.hmp)));
    learn(client.clone(), knowledge.clone(), cfg.hmp, guest_agent);
    let history = history_path();
    if let Some(path) = &history {
        load_history(&mut editor, path);
    }

    let mut printer = Printer::new(io::stdout(), io::stderr(), client.clone(), cfg.clone());
    if let Ok(external) = editor.create_external_printer() {
        printer.set_live_events(true);
        print_live(client.clone(), external, cfg.style);
    }
    let _ = printer.out(&banner(cfg.hmp, &client));
    let _ = printer.flush();
    let mut code = exit::OK;
    loop {
        knowledge
            .in_transaction
            .store(engine.in_transaction(), Ordering::Relaxed);
        let prompt = engine.prompt();
        let line = match editor.readline(prompt) {
            Ok(line) => line,
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
        };
        // A line starting with a space is kept out of history (secrets).
        if !line.trim().is_empty() && !line.starts_with(' ') {
            let _ = editor.add_history_entry(line.as_str());
        }
        let mut items = Vec::new();
        let trimmed = line.trim();
        if !cfg.hmp && !engine.in_transaction() && trimmed.starts_with('{') {
            match serde_json::from_str::<Object>(trimmed) {
                Ok(msg) => engine.handle_raw(msg, &mut items),
                Err(err) => items.push(parse_error(&format!("not a JSON object: {err}"))),
            }
        } else if !cfg.hmp && !guest_agent && (trimmed == "help" || trimmed.starts_with("help ")) {
            let name = trimmed
                .strip_prefix("help")
                .map(str::trim)
                .filter(|n| !n.is_empty());
            items.push(help(&knowledge, &client, name));
        } else {
            engine.handle_line(&line, &mut items);
        }
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
