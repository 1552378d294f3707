//! One shell session: lines in, QMP out, replies rendered in input order.
//!
//! An [`Engine`] turns each input line into [`Item`]s: text to print, and
//! replies still in flight ([`qmp::Pending`]). A [`Printer`] resolves those
//! items in order. Interactive mode resolves each line's items at once;
//! pipe mode hands them to a printer thread so that many commands can be in
//! flight while the printer waits for the oldest (see [`crate::repl`]).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use qmp::{Client, Error as QmpError, Event, Incoming, Object, Pending, Reply};
use serde_json::Value;

use crate::cli::exit;
use crate::hmp;
use crate::render::{self, Style};
use crate::shorthand::{Parsed, Parser};

/// Events kept for the next empty line; older ones are dropped beyond this
/// (with a warning), so a server flooding events cannot exhaust memory.
pub const MAX_QUEUED_EVENTS: usize = 100_000;

/// The hint printed after every parse error (the reference forgets the `]`).
pub const COMMAND_FORMAT: &str =
    "command format: <command-name> [arg-name1=arg1] ... [arg-nameN=argN]";

/// How a session prints and behaves.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Talk HMP through `human-monitor-command`.
    pub hmp: bool,
    /// Echo each command object before sending it.
    pub verbose: bool,
    /// JSON style for replies and events.
    pub style: Style,
    /// `--json`: one compact JSON line per reply, events on stderr.
    pub json: bool,
    /// No banner and no prompts (`-c` and `--json`).
    pub quiet: bool,
    /// How long to wait for a reply.
    pub timeout: Option<Duration>,
}

/// Something to print, in input order.
pub enum Item {
    /// Text for standard output, printed as is.
    Out(String),
    /// Text for standard error; `failed` counts it as a failed command.
    Err { text: String, failed: bool },
    /// A reply still to arrive.
    Reply { pending: Pending, hmp: bool },
    /// Print the events received so far (an empty input line).
    Events,
    /// The connection is gone: print `Disconnected` on stderr and stop.
    Disconnected,
}

/// What the printer wants the driver to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on reading input.
    Continue,
    /// Stop now and exit with this status.
    Stop(i32),
}

/// Turns input lines into QMP commands, sends them, and describes the output.
pub struct Engine {
    client: Arc<Client>,
    parser: Parser,
    cpu_index: Option<i64>,
    cfg: Config,
}

impl Engine {
    /// An engine sending through `client`.
    pub fn new(client: Arc<Client>, cfg: Config) -> Engine {
        Engine {
            client,
            parser: Parser::new(),
            cpu_index: None,
            cfg,
        }
    }

    /// The prompt for the next line: `(QEMU) `, or `TRANS> ` inside a transaction.
    pub fn prompt(&self) -> &'static str {
        if self.cfg.hmp {
            "(QEMU) "
        } else {
            self.parser.prompt()
        }
    }

    /// Whether a multi-line transaction is being built.
    pub fn in_transaction(&self) -> bool {
        !self.cfg.hmp && self.parser.in_transaction()
    }

    /// The session's configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The client this engine sends through.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// Handle one input line (without its line terminator), sending what it
    /// asks for and appending what is to be printed to `items`.
    pub fn handle_line(&mut self, line: &str, items: &mut Vec<Item>) {
        if line.is_empty() {
            items.push(Item::Events);
            return;
        }
        // Comment lines, for scripts.
        if line.trim_start().starts_with('#') {
            return;
        }
        if self.cfg.hmp {
            self.handle_hmp(line, items);
        } else {
            self.handle_qmp(line, items);
        }
    }

    /// Send a raw QMP message (a line starting with `{`).
    pub fn handle_raw(&mut self, msg: Object, items: &mut Vec<Item>) {
        if self.cfg.verbose && !self.cfg.json {
            items.push(Item::Out(self.render_line(&msg)));
        }
        self.send(msg, false, items);
    }

    fn handle_qmp(&mut self, line: &str, items: &mut Vec<Item>) {
        match self.parser.parse_line(line) {
            Err(err) => items.push(parse_error(&err.to_string())),
            Ok(Parsed::Empty) | Ok(Parsed::Queued) => {}
            Ok(Parsed::Command(cmd)) => {
                if self.cfg.verbose && !self.cfg.json {
                    items.push(Item::Out(self.render_line(&cmd)));
                }
                self.send(cmd, false, items);
            }
        }
    }

    fn handle_hmp(&mut self, line: &str, items: &mut Vec<Item>) {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else {
            return;
        };
        if first == "cpu" {
            let Some(index) = words.next().and_then(hmp::parse_python_int) else {
                items.push(Item::Out(
                    "cpu command takes an integer argument\n".to_string(),
                ));
                return;
            };
            let probe = hmp::command("info version", Some(index));
            match self.client.call(probe, self.cfg.timeout) {
                Ok(reply) if reply.ret().is_some() => self.cpu_index = Some(index),
                Ok(_) => {
                    items.push(Item::Out("bad CPU index\n".to_string()));
                    return;
                }
                Err(QmpError::Disconnected) => {
                    items.push(Item::Disconnected);
                    return;
                }
                Err(err) => {
                    items.push(Item::Err {
                        text: format!("ERROR: {err}\n"),
                        failed: true,
                    });
                    return;
                }
            }
        }
        let cmd = hmp::command(line, self.cpu_index);
        self.send(cmd, true, items);
    }

    fn send(&mut self, msg: Object, hmp: bool, items: &mut Vec<Item>) {
        match self.client.send(msg) {
            Ok(pending) => items.push(Item::Reply { pending, hmp }),
            Err(QmpError::Disconnected) => items.push(Item::Disconnected),
            Err(err) => items.push(Item::Err {
                text: format!("ERROR: {err}\n"),
                failed: true,
            }),
        }
    }

    fn render_line(&self, msg: &Object) -> String {
        let mut text = render::to_string(&Value::Object(msg.clone()), self.cfg.style);
        text.push('\n');
        text
    }
}

/// The item for a line that cannot be used (not parsable, not UTF-8, not a
/// JSON object): the reference's message and hint on stderr, counted as a
/// failed command.
pub fn parse_error(reason: &str) -> Item {
    Item::Err {
        text: format!("Error while parsing command line: {reason}\n{COMMAND_FORMAT}\n"),
        failed: true,
    }
}

/// Resolves [`Item`]s in order onto standard output and standard error.
pub struct Printer<O: Write, E: Write> {
    out: O,
    err: E,
    client: Arc<Client>,
    cfg: Config,
    events: VecDeque<Event>,
    dropped_events: u64,
    failures: u64,
    live_events: bool,
}

impl<O: Write, E: Write> Printer<O, E> {
    /// A printer writing to `out` and `err`.
    pub fn new(out: O, err: E, client: Arc<Client>, cfg: Config) -> Self {
        Printer {
            out,
            err,
            client,
            cfg,
            events: VecDeque::new(),
            dropped_events: 0,
            failures: 0,
            live_events: false,
        }
    }

    /// Events and warnings are printed elsewhere as they arrive: leave the
    /// client's queue alone.
    pub fn set_live_events(&mut self, live: bool) {
        self.live_events = live;
    }

    /// How many commands failed (error replies and unparsable lines).
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Write text to standard output.
    pub fn out(&mut self, text: &str) -> io::Result<()> {
        self.out.write_all(text.as_bytes())
    }

    /// Flush standard output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Print one item, waiting for its reply if need be.
    pub fn emit(&mut self, item: Item) -> io::Result<Flow> {
        match item {
            Item::Out(text) => self.out.write_all(text.as_bytes())?,
            Item::Err { text, failed } => {
                if failed {
                    self.failures += 1;
                }
                self.write_stderr(&text)?;
            }
            Item::Events => {
                self.collect_incoming()?;
                if self.dropped_events > 0 {
                    let dropped = std::mem::take(&mut self.dropped_events);
                    self.write_stderr(&format!(
                        "warning: {dropped} older events were dropped (more than {MAX_QUEUED_EVENTS} queued)\n"
                    ))?;
                }
                while let Some(event) = self.events.pop_front() {
                    self.render_out(event.body)?;
                }
            }
            Item::Disconnected => {
                self.write_stderr("Disconnected\n")?;
                return Ok(Flow::Stop(exit::FATAL));
            }
            Item::Reply { pending, hmp } => {
                let result = pending.wait(self.cfg.timeout);
                let flow = match result {
                    Ok(reply) => {
                        self.print_reply(reply, hmp)?;
                        Flow::Continue
                    }
                    Err(QmpError::Disconnected) => {
                        self.write_stderr("Disconnected\n")?;
                        Flow::Stop(exit::FATAL)
                    }
                    Err(QmpError::Timeout(limit)) => {
                        self.write_stderr(&format!(
                            "ERROR: no reply within {} s\n",
                            limit.as_secs_f64()
                        ))?;
                        Flow::Stop(exit::FATAL)
                    }
                    Err(err) => {
                        self.failures += 1;
                        self.write_stderr(&format!("ERROR: {err}\n"))?;
                        Flow::Continue
                    }
                };
                self.collect_incoming()?;
                return Ok(flow);
            }
        }
        Ok(Flow::Continue)
    }

    fn print_reply(&mut self, reply: Reply, hmp: bool) -> io::Result<()> {
        if reply.is_error() {
            self.failures += 1;
        }
        // By value: a reply may be very large, and is not copied.
        let body = reply.into_display_body();
        if self.cfg.json || !hmp {
            return self.render_out(body);
        }
        let text = hmp::format_reply(&body);
        self.out.write_all(text.as_bytes())
    }

    fn style(&self) -> Style {
        if self.cfg.json {
            Style {
                pretty: false,
                color: false,
            }
        } else {
            self.cfg.style
        }
    }

    /// Render `body` and a newline straight to standard output, in pieces:
    /// a huge reply is never held whole as text.
    fn render_out(&mut self, body: Object) -> io::Result<()> {
        let style = self.style();
        render::write_to(&mut self.out, &Value::Object(body), style)?;
        self.out.write_all(b"\n")
    }

    fn render(&self, body: Object) -> String {
        let mut text = String::new();
        render::write_into(&mut text, &Value::Object(body), self.style());
        text.push('\n');
        text
    }

    /// Move events and warnings the client queued into our own buffer,
    /// printing warnings (and, with `--json`, events) on standard error.
    fn collect_incoming(&mut self) -> io::Result<()> {
        // Live mode: a thread of the terminal driver prints them as they come.
        if self.live_events {
            return Ok(());
        }
        for incoming in self.client.drain_incoming() {
            match incoming {
                Incoming::Warning(text) => self.write_stderr(&format!("warning: {text}\n"))?,
                Incoming::Event(event) if self.cfg.json => {
                    let text = self.render(event.body);
                    self.write_stderr(&text)?;
                }
                Incoming::Event(event) => {
                    if self.events.len() >= MAX_QUEUED_EVENTS {
                        self.events.pop_front();
                        self.dropped_events += 1;
                    }
                    self.events.push_back(event);
                }
            }
        }
        Ok(())
    }

    fn write_stderr(&mut self, text: &str) -> io::Result<()> {
        self.out.flush()?;
        // A closed stderr must not stop the session.
        let _ = self.err.write_all(text.as_bytes());
        let _ = self.err.flush();
        Ok(())
    }
}

/// The banner printed before the first prompt.
pub fn banner(hmp: bool, client: &Client) -> String {
    let mut text = String::from(if hmp {
        "Welcome to the HMP shell!\n"
    } else {
        "Welcome to the QMP low-level shell!\n"
    });
    match client.greeting() {
        None => text.push_str("Connected\n"),
        Some(greeting) => match greeting.version() {
            Some((major, minor, micro)) => {
                text.push_str(&format!("Connected to QEMU {major}.{minor}.{micro}\n\n"))
            }
            None => text.push_str("Connected\n\n"),
        },
    }
    text
}
