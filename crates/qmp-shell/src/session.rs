//! The session engine: lines in, QMP out, output in input order, and the
//! one place that decides when a session ends and with what exit status.
//!
//! The drivers ([`crate::script`] for pipes and `-c`, [`crate::interactive`]
//! for a terminal) only feed the engine lines and tell it when input ended
//! or the user pressed Ctrl-C. The engine sends each command as soon as it
//! is read (pipelining) and keeps what is to be printed in a queue of
//! [`Slot`]s, in input order; [`Engine::pump`] prints the front of the
//! queue as far as replies have arrived. Nothing in it blocks on a channel:
//! it sleeps on one [`Doorbell`] that replies, events, input and signals
//! ring, so every way of ending (end of input, `quit`, a lost connection, a
//! timeout, a closed standard output, a signal) is noticed at once.
//!
//! An empty line is a barrier: nothing after it is sent until every reply
//! before it was printed, and then the events received so far are printed,
//! so they are exactly the events caused before it (as with the reference,
//! which sends one command at a time).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use qmp::{Client, Error as QmpError, Incoming, Object, Pending, Reply, Request};
use serde_json::Value;

use crate::cli::exit;
use crate::complete::raw_json_incomplete;
use crate::doorbell::Doorbell;
use crate::hmp;
use crate::output::Output;
use crate::schema::Schema;
use crate::shorthand::{Parsed, Parser};
use crate::wording::{client_error, shown};

/// The hint printed after every parse error (the reference forgets the `]`).
pub const COMMAND_FORMAT: &str =
    "command format: <command-name> [arg-name1=arg1] ... [arg-nameN=argN]";

/// Output slots kept at most: bounds the commands in flight on a pipe.
pub const WINDOW: usize = 256;

/// How long look-ups the shell makes on its own (the schema for `help`)
/// may take when `--timeout` is not given.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// What a session does, besides printing.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Talk HMP through `human-monitor-command`.
    pub hmp: bool,
    /// Echo each command object before sending it (`-v`).
    pub verbose: bool,
    /// `--json`: one JSON line per command on standard output.
    pub json: bool,
    /// Print the banner and a prompt before each line (the reference's
    /// behaviour on a pipe).
    pub prompts: bool,
    /// How long to wait for a reply.
    pub timeout: Option<Duration>,
    /// Exit with status 3 when a command failed (`--exit-status`, `-c`).
    pub exit_status: bool,
    /// The peer is a guest agent (`-N`): no schema.
    pub guest_agent: bool,
    /// Events, warnings and late replies are printed by someone else as
    /// they arrive (the terminal's event printer).
    pub live_events: bool,
}

/// One thing to print, in input order.
enum Slot {
    /// Text for standard output.
    Text(String),
    /// A command about to be sent (`-v`).
    Echo(Object),
    /// A failed command that never reached the server (a parse error, say):
    /// `diag` goes to standard error; with `--json` an error object
    /// `{"error": {"class": CLASS, "desc": DESC}}` goes to standard output.
    Failure {
        diag: String,
        class: &'static str,
        desc: String,
    },
    /// A note for standard error.
    Note(String),
    /// A reply still to arrive; `deadline` is set once it is the oldest.
    Reply {
        pending: Pending,
        hmp: bool,
        deadline: Option<Instant>,
    },
    /// An empty line: print the events received so far.
    Barrier,
}

/// Turns input lines into QMP commands, sends them, prints the replies in
/// input order and decides the exit status.
pub struct Engine {
    client: Arc<Client>,
    cfg: Config,
    out: Box<dyn Output>,
    doorbell: Arc<Doorbell>,
    parser: Parser,
    cpu_index: Option<i64>,
    /// A raw JSON message being read over several lines.
    raw: Option<String>,
    queue: VecDeque<Slot>,
    barriers: usize,
    failures: u64,
    stop: Option<i32>,
    schema: Arc<OnceLock<Schema>>,
}

impl Engine {
    /// An engine sending through `client` and printing to `out`. It rings
    /// `doorbell` whenever the client has news.
    pub fn new(
        client: Arc<Client>,
        cfg: Config,
        out: Box<dyn Output>,
        doorbell: Arc<Doorbell>,
    ) -> Engine {
        let bell = Arc::clone(&doorbell);
        client.set_notify(Arc::new(move || bell.ring()));
        Engine {
            client,
            cfg,
            out,
            doorbell,
            parser: Parser::new(),
            cpu_index: None,
            raw: None,
            queue: VecDeque::new(),
            barriers: 0,
            failures: 0,
            stop: None,
            schema: Arc::new(OnceLock::new()),
        }
    }

    /// The session's configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The client this engine sends through.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// The doorbell the engine sleeps on.
    pub fn doorbell(&self) -> &Arc<Doorbell> {
        &self.doorbell
    }

    /// The schema cache, shared with completion.
    pub fn schema_cache(&self) -> Arc<OnceLock<Schema>> {
        Arc::clone(&self.schema)
    }

    /// The prompt for the next line: `(QEMU) `, or `TRANS> ` inside a
    /// transaction.
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

    /// The exit status decided so far, if the session must end.
    pub fn stopped(&self) -> Option<i32> {
        self.stop
    }

    /// Whether the engine takes another line now: not while an empty line
    /// waits for the replies before it, nor with a full window.
    pub fn wants_input(&self) -> bool {
        self.stop.is_none() && self.barriers == 0 && self.queue.len() < WINDOW
    }

    /// Nothing is left to print.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// Print the banner.
    pub fn banner(&mut self) {
        let mut text = String::from(if self.cfg.hmp {
            "Welcome to the HMP shell!\n"
        } else {
            "Welcome to the QMP low-level shell!\n"
        });
        match self.client.greeting() {
            None => text.push_str("Connected\n"),
            Some(greeting) => match greeting.version() {
                Some((major, minor, micro)) => {
                    text.push_str(&format!("Connected to QEMU {major}.{minor}.{micro}\n\n"))
                }
                None => text.push_str("Connected\n\n"),
            },
        }
        self.queue.push_back(Slot::Text(text));
    }

    /// Queue the prompt for the next line (when prompts are printed and no
    /// raw JSON message is being continued).
    pub fn queue_prompt(&mut self) {
        if self.cfg.prompts && self.raw.is_none() {
            self.queue.push_back(Slot::Text(self.prompt().to_owned()));
        }
    }

    /// Queue text for standard output.
    pub fn queue_text(&mut self, text: String) {
        self.queue.push_back(Slot::Text(text));
    }

    /// Queue a note for standard error.
    pub fn note(&mut self, text: &str) {
        self.queue.push_back(Slot::Note(text.to_owned()));
    }

    /// The connection dropped while no command was waiting: say so and
    /// end the session.
    pub fn disconnected(&mut self) {
        self.queue.push_back(Slot::Reply {
            pending: ready_err(),
            hmp: false,
            deadline: None,
        });
        self.pump();
    }

    /// Handle one input line (without its line terminator).
    pub fn line(&mut self, line: &str) {
        if self.stop.is_some() {
            return;
        }
        if let Some(raw) = self.raw.as_mut() {
            raw.push('\n');
            raw.push_str(line);
            if !raw_json_incomplete(raw) {
                let text = self.raw.take().unwrap_or_default();
                self.raw_json(&text);
            }
            return;
        }
        if line.is_empty() {
            if !self.cfg.live_events {
                self.queue.push_back(Slot::Barrier);
                self.barriers += 1;
            }
            return;
        }
        let trimmed = line.trim();
        // Comment lines, for scripts.
        if trimmed.starts_with('#') {
            return;
        }
        if self.cfg.hmp {
            return self.hmp(line);
        }
        if !self.parser.in_transaction() {
            if trimmed.starts_with('{') {
                if raw_json_incomplete(trimmed) {
                    self.raw = Some(trimmed.to_owned());
                } else {
                    self.raw_json(trimmed);
                }
                return;
            }
            if !self.cfg.guest_agent && (trimmed == "help" || trimmed.starts_with("help ")) {
                let name = trimmed["help".len()..].trim();
                return self.help((!name.is_empty()).then_some(name));
            }
        }
        self.shorthand(line);
    }

    /// A line that could not be read (not UTF-8, say): a failed command.
    pub fn unreadable_line(&mut self, reason: &str) {
        self.parse_error(reason);
    }

    /// Input ended: an unfinished transaction or raw JSON message is an
    /// error, and nothing of it is sent.
    pub fn end_of_input(&mut self) {
        if self.raw.take().is_some() {
            self.failure(
                "ERROR: end of input inside a raw JSON message; it was not sent\n".to_owned(),
                "ParseError",
                "end of input inside a raw JSON message".to_owned(),
            );
        }
        if let Some(n) = self.parser.abort_transaction() {
            self.failure(
                format!(
                    "ERROR: end of input inside a transaction: {} not sent\n",
                    actions(n)
                ),
                "ParseError",
                "end of input inside a transaction".to_owned(),
            );
        }
        if self.cfg.json && !self.cfg.live_events {
            // The events of the last commands, which over libvirt may trail
            // their replies, are printed before the end.
            self.queue.push_back(Slot::Barrier);
            self.barriers += 1;
        }
    }

    /// Ctrl-C at a `TRANS>` prompt: drop the transaction and say so.
    /// Returns `false` when no transaction was open.
    pub fn abandon_transaction(&mut self) -> bool {
        match self.parser.abort_transaction() {
            Some(n) => {
                self.queue.push_back(Slot::Note(format!(
                    "transaction abandoned: {} not sent\n",
                    actions(n)
                )));
                true
            }
            None => false,
        }
    }

    fn raw_json(&mut self, text: &str) {
        match serde_json::from_str::<Object>(text) {
            Ok(msg) => {
                if self.cfg.verbose && !self.cfg.json {
                    self.queue.push_back(Slot::Echo(msg.clone()));
                }
                self.send(Request::new(msg), false);
            }
            Err(err) => self.parse_error(&format!("not a JSON object: {err}")),
        }
    }

    fn shorthand(&mut self, line: &str) {
        let parsed = self.parser.parse_line(line);
        let abandoned = self.parser.take_abandoned();
        match parsed {
            Err(err) => self.parse_error(&err.to_string()),
            Ok(Parsed::Empty) | Ok(Parsed::Queued) => {}
            Ok(Parsed::Command(cmd)) => {
                if self.cfg.verbose && !self.cfg.json {
                    self.queue.push_back(Slot::Echo(cmd.clone()));
                }
                self.send(Request::new(cmd), false);
            }
        }
        if let Some(n) = abandoned {
            self.queue.push_back(Slot::Note(format!(
                "transaction abandoned: {} not sent\n",
                actions(n)
            )));
        }
    }

    fn hmp(&mut self, line: &str) {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else {
            return;
        };
        if first == "cpu" {
            let Some(index) = words.next().and_then(hmp::parse_python_int) else {
                self.queue.push_back(Slot::Text(
                    "cpu command takes an integer argument\n".to_owned(),
                ));
                self.failures += 1;
                return;
            };
            // The reference checks the CPU with `info version` on it.
            let probe = hmp::command("info version", Some(index));
            match self.client.call(probe, self.cfg.timeout) {
                Ok(reply) if reply.ret().is_some() => self.cpu_index = Some(index),
                Ok(_) => {
                    self.queue
                        .push_back(Slot::Text("bad CPU index\n".to_owned()));
                    self.failures += 1;
                    return;
                }
                Err(err) => {
                    self.client_failure(&err);
                    return;
                }
            }
        }
        let cmd = hmp::command(line, self.cpu_index);
        self.send(Request::new(cmd), true);
    }

    /// `help [NAME]`, from the schema.
    fn help(&mut self, name: Option<&str>) {
        let schema = match self.schema() {
            Ok(schema) => schema,
            Err(err) => {
                return self.failure(
                    format!("help: cannot read the QMP schema: {err}\n"),
                    "GenericError",
                    format!("cannot read the QMP schema: {err}"),
                )
            }
        };
        match schema.help(name) {
            Some(mut text) => {
                if self.cfg.json {
                    let mut body = Object::new();
                    body.insert("return".to_owned(), Value::String(text));
                    self.queue.push_back(Slot::Reply {
                        pending: ready(body),
                        hmp: false,
                        deadline: None,
                    });
                    return;
                }
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                self.queue.push_back(Slot::Text(text));
            }
            None => {
                let name = name.unwrap_or_default();
                self.failure(
                    format!("help: no command or event named '{name}'\n"),
                    "GenericError",
                    format!("no command or event named '{name}'"),
                );
            }
        }
    }

    /// The server's schema, fetched (out of the log) on first use.
    pub fn schema(&self) -> Result<&Schema, String> {
        if let Some(schema) = self.schema.get() {
            return Ok(schema);
        }
        let schema = fetch_schema(&self.client, self.cfg.timeout.or(Some(LOOKUP_TIMEOUT)))?;
        Ok(self.schema.get_or_init(|| schema))
    }

    fn send(&mut self, request: Request, hmp: bool) {
        match self.client.submit(request) {
            Ok(pending) => self.queue.push_back(Slot::Reply {
                pending,
                hmp,
                deadline: None,
            }),
            Err(err) => self.client_failure(&err),
        }
    }

    /// A client error for a command that never got a reply.
    fn client_failure(&mut self, err: &QmpError) {
        match err {
            QmpError::Disconnected => self.queue.push_back(Slot::Reply {
                pending: ready_err(),
                hmp: false,
                deadline: None,
            }),
            other => {
                let text = client_error(other);
                self.failure(format!("ERROR: {text}\n"), "GenericError", text)
            }
        }
    }

    fn parse_error(&mut self, reason: &str) {
        self.failure(
            format!("Error while parsing command line: {reason}\n{COMMAND_FORMAT}\n"),
            "ParseError",
            reason.to_owned(),
        );
    }

    fn failure(&mut self, diag: String, class: &'static str, desc: String) {
        self.queue.push_back(Slot::Failure { diag, class, desc });
    }

    /// Print what can be printed now, without waiting: the front of the
    /// queue up to the first reply that has not arrived. Notices from the
    /// client (warnings, late replies) are printed on the way; so are
    /// events with `--json`. A timed-out reply or a lost connection ends the
    /// session ([`stopped`](Engine::stopped)).
    pub fn pump(&mut self) {
        while self.stop.is_none() {
            if let Err(err) = self.notices() {
                return self.output_failed(&err);
            }
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            if let Slot::Reply {
                pending, deadline, ..
            } = front
            {
                let result = match pending.try_take() {
                    Some(result) => result,
                    None => {
                        let now = Instant::now();
                        match (*deadline, self.cfg.timeout) {
                            (None, Some(t)) => *deadline = now.checked_add(t),
                            (Some(d), Some(t)) if now >= d => {
                                self.out.diag(&format!(
                                    "ERROR: no reply within {} s\n",
                                    t.as_secs_f64()
                                ));
                                self.stop = Some(exit::FATAL);
                            }
                            _ => {}
                        }
                        break;
                    }
                };
                let Some(Slot::Reply { hmp, .. }) = self.queue.pop_front() else {
                    unreachable!("the front slot is a reply");
                };
                if let Err(err) = self.print_result(result, hmp) {
                    return self.output_failed(&err);
                }
                continue;
            }
            let Some(slot) = self.queue.pop_front() else {
                break;
            };
            if let Err(err) = self.print(slot) {
                return self.output_failed(&err);
            }
        }
        if self.stop.is_some() {
            self.queue.clear();
            self.barriers = 0;
        }
    }

    fn print(&mut self, slot: Slot) -> io::Result<()> {
        match slot {
            Slot::Text(text) => self.out.text(&text),
            Slot::Echo(cmd) => self.out.echo(&cmd),
            Slot::Note(text) => {
                self.out.diag(&text);
                Ok(())
            }
            Slot::Failure { diag, class, desc } => {
                self.failures += 1;
                self.out.diag(&diag);
                if self.cfg.json {
                    let mut error = Object::new();
                    error.insert("class".to_owned(), Value::from(class));
                    error.insert("desc".to_owned(), Value::from(desc));
                    let mut body = Object::new();
                    body.insert("error".to_owned(), Value::Object(error));
                    self.out.reply(body)?;
                }
                Ok(())
            }
            Slot::Barrier => {
                self.barriers -= 1;
                // Over libvirt, events may trail the replies they preceded.
                let _ = self
                    .client
                    .sync(Some(self.cfg.timeout.unwrap_or(LOOKUP_TIMEOUT)));
                for item in self.client.drain_incoming() {
                    self.incoming(item)?;
                }
                Ok(())
            }
            Slot::Reply { .. } => unreachable!("replies are printed by pump"),
        }
    }

    fn print_result(&mut self, result: Result<Reply, QmpError>, hmp: bool) -> io::Result<()> {
        match result {
            Ok(reply) => {
                if reply.is_error() {
                    self.failures += 1;
                }
                let body = shown(reply);
                if self.cfg.json || !hmp {
                    self.out.reply(body)
                } else {
                    self.out.text(&hmp::format_reply(&body))
                }
            }
            Err(QmpError::Disconnected) => {
                let reason = self.client.end_reason();
                self.out.diag(&match reason {
                    Some(why) => format!("Disconnected: {why}\n"),
                    None => "Disconnected\n".to_owned(),
                });
                self.stop = Some(exit::FATAL);
                Ok(())
            }
            Err(err) => {
                let text = client_error(&err);
                self.print(Slot::Failure {
                    diag: format!("ERROR: {text}\n"),
                    class: "GenericError",
                    desc: text,
                })
            }
        }
    }

    /// Print warnings and late replies from the client (and events, with
    /// `--json`), unless someone else prints them live.
    fn notices(&mut self) -> io::Result<()> {
        if self.cfg.live_events {
            return Ok(());
        }
        let items = if self.cfg.json {
            self.client.drain_incoming()
        } else {
            self.client.drain_notices()
        };
        for item in items {
            self.incoming(item)?;
        }
        Ok(())
    }

    fn incoming(&mut self, item: Incoming) -> io::Result<()> {
        match item {
            Incoming::Event(event) => self.out.event(event.body),
            Incoming::Warning(text) => {
                self.out.diag(&format!("warning: {text}\n"));
                Ok(())
            }
            Incoming::LateReply(reply) => {
                self.out.diag("late reply (the command was abandoned):\n");
                self.out.reply(shown(reply))
            }
        }
    }

    fn output_failed(&mut self, err: &io::Error) {
        // A reader that went away (`| head`) needs no explanation.
        if err.kind() != io::ErrorKind::BrokenPipe {
            self.out
                .diag(&format!("ERROR: cannot write to standard output: {err}\n"));
        }
        self.stop = Some(exit::FATAL);
        self.queue.clear();
        self.barriers = 0;
    }

    /// Flush standard output (before waiting for anything).
    pub fn flush(&mut self) {
        if self.stop.is_none() {
            if let Err(err) = self.out.flush() {
                self.output_failed(&err);
            }
        }
    }

    /// When the oldest reply times out, if `--timeout` applies.
    pub fn deadline(&self) -> Option<Instant> {
        match self.queue.front() {
            Some(Slot::Reply { deadline, .. }) => *deadline,
            _ => None,
        }
    }

    /// Print until nothing is left to print, the session must stop, or
    /// `interrupted()` says the user pressed Ctrl-C: then every reply still
    /// awaited is abandoned (a late one is shown as such). Returns `true`
    /// when interrupted.
    pub fn settle(&mut self, interrupted: &dyn Fn() -> bool) -> bool {
        loop {
            let seen = self.doorbell.seen();
            self.pump();
            if self.stop.is_some() || self.queue.is_empty() {
                self.flush();
                return false;
            }
            if interrupted() {
                self.abandon_replies();
                self.pump();
                self.flush();
                return true;
            }
            self.flush();
            self.doorbell.wait(seen, self.deadline());
        }
    }

    /// Stop waiting for every reply still awaited; their late replies are
    /// shown as such when they come.
    fn abandon_replies(&mut self) {
        let mut abandoned = 0;
        for slot in std::mem::take(&mut self.queue) {
            match slot {
                Slot::Reply { pending, .. } => {
                    pending.abandon(true);
                    abandoned += 1;
                }
                Slot::Barrier => {}
                other => self.queue.push_back(other),
            }
        }
        self.barriers = 0;
        if abandoned > 0 {
            self.queue.push_back(Slot::Note(
                "(abandoned; a late reply will be shown as such)\n".to_owned(),
            ));
        }
    }

    /// End the session: stop with `code` (a signal, say) unless already
    /// stopped.
    pub fn stop_with(&mut self, code: i32) {
        if self.stop.is_none() {
            self.stop = Some(code);
        }
        self.queue.clear();
        self.barriers = 0;
    }

    /// The exit status: the one the session stopped with, or 3 when
    /// failures count and a command failed, or 0.
    pub fn exit_code(&mut self) -> i32 {
        self.flush();
        match self.stop {
            Some(code) => code,
            None if self.cfg.exit_status && self.failures > 0 => exit::COMMAND_FAILED,
            None => exit::OK,
        }
    }

    /// How many commands failed so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

/// "1 action", "2 actions".
fn actions(n: usize) -> String {
    if n == 1 {
        "1 action".to_owned()
    } else {
        format!("{n} actions")
    }
}

/// A [`Pending`] already resolved with `body`, for output that must keep
/// its place among replies.
fn ready(body: Object) -> Pending {
    Pending::resolved(Ok(Reply {
        body,
        assigned_id: false,
    }))
}

/// A [`Pending`] already failed with [`QmpError::Disconnected`].
fn ready_err() -> Pending {
    Pending::resolved(Err(QmpError::Disconnected))
}

/// Fetch and parse the schema, out of the traffic log.
pub fn fetch_schema(client: &Client, timeout: Option<Duration>) -> Result<Schema, String> {
    let request = Request::new(qmp::command("query-qmp-schema", None)).unlogged();
    let reply = client
        .submit(request)
        .and_then(|p| p.wait(timeout))
        .map_err(|e| client_error(&e))?;
    match reply.ret() {
        Some(ret) if ret.is_array() => Ok(Schema::from_value(ret)),
        _ => Err(reply
            .error_desc()
            .map(str::to_owned)
            .unwrap_or_else(|| "query-qmp-schema failed".to_owned())),
    }
}
