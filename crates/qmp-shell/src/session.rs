//! The session engine: lines in, QMP out, output in input order, and the
//! one place that decides when a session ends and with what exit status.
//!
//! The drivers ([`crate::script`] for pipes and `-c`, [`crate::interactive`]
//! for a terminal) only feed the engine lines and tell it when input ended
//! or the user pressed Ctrl-C. The engine sends each command as soon as it
//! is read (pipelining) and keeps what is to be printed in a queue of
//! slots, in input order; [`Engine::pump`] prints the front of the
//! queue as far as replies have arrived. Nothing in it blocks on a channel:
//! it sleeps on one [`Doorbell`] that replies, events, input and signals
//! ring, so every way of ending (end of input, `quit`, a lost connection, a
//! timeout, a closed standard output, a signal) is noticed at once.
//!
//! An empty line is a barrier: nothing after it is sent until every reply
//! before it was printed, and then the events received so far are printed,
//! so they are exactly the events caused before it (as with the reference,
//! which sends one command at a time). At a terminal events are printed as
//! they come instead, each reply after exactly the events that preceded it
//! on the wire ([`crate::live`]).

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use qmp_client::client::{EventTap, Tapped};
use qmp_client::{Client, Error as QmpError, Event, Incoming, Object, Pending, Reply, Request};
use serde_json::Value;

use crate::cli::exit;
use crate::complete::raw_json_incomplete;
use crate::doorbell::Doorbell;
use crate::files::{open_private, Existing};
use crate::hmp;
use crate::jobs::{self, Bars, Progress};
use crate::live::{Item, Live};
use crate::meta::{self, Meta};
use crate::output::{error_object, Output};
use crate::readonly;
use crate::shorthand::{Parsed, Parser};
use crate::store::SchemaStore;
use crate::wording::{client_error, python_io_error, shown};

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
    /// Events, warnings and late replies are printed as they arrive (a
    /// terminal): among the replies in the order of the wire, and by the
    /// terminal's driver while its line editor waits (see
    /// [`Engine::live`]).
    pub live_events: bool,
    /// `--read-only`: send only what cannot change the VM.
    pub read_only: bool,
    /// `-e`: stop at the first failed command (exit 3). Commands are then
    /// sent one at a time, so nothing after a failure goes out.
    pub exit_on_error: bool,
    /// `/jobs` draws progress bars (a terminal) rather than JSON lines.
    pub progress_bars: bool,
}

/// Events kept for `/wait` at most (those since the last command sent).
const MAX_RECENT_EVENTS: usize = 100_000;

/// Bytes a `/play` file may have at most (it is read whole).
const MAX_PLAY_BYTES: u64 = 64 << 20;

/// One thing to print, in input order.
enum Slot {
    /// Text for standard output.
    Text(String),
    /// Text for standard output that reports a failed command (HMP's
    /// `bad CPU index`).
    FailedText(String),
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
    /// `index` numbers the commands sent (`None` for output that only
    /// keeps its place among replies).
    Reply {
        pending: Awaited,
        hmp: bool,
        deadline: Option<Instant>,
        index: Option<u64>,
    },
    /// An empty line: print the events received so far.
    Barrier,
    /// `/wait`: an event named `event` whose data contains `filter`,
    /// arrived since the command before the last one got its reply (see
    /// [`Engine::events_since`]).
    Wait {
        event: String,
        filter: Object,
        before: Option<u64>,
        timeout: Option<Duration>,
        deadline: Option<Instant>,
    },
    /// `/jobs`: following jobs until none runs.
    Jobs(Box<Follow>),
}

/// A reply still to come.
enum Awaited {
    /// From the client.
    Pending(Pending),
    /// At a terminal: the token of a command whose reply [`Live`] stamps
    /// in the order of the wire (see [`Engine::live`]).
    Live(u64),
}

/// Events copied from the client for `/wait` and `/jobs`, numbered.
#[derive(Default)]
struct TapBuffer {
    count: AtomicU64,
    events: Mutex<VecDeque<(u64, Event)>>,
}

impl TapBuffer {
    fn push(&self, ev: &Event) {
        let mut q = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let seq = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if q.len() >= MAX_RECENT_EVENTS {
            q.pop_front();
        }
        q.push_back((seq, ev.clone()));
    }

    fn drain(&self) -> Vec<(u64, Event)> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    /// How many events arrived so far.
    fn seen(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }
}

/// The state of a `/jobs`.
struct Follow {
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    /// `query-jobs` and `query-migrate` in flight, and their results as
    /// they come.
    polls: Option<[Pending; 2]>,
    results: [Option<Result<Reply, QmpError>>; 2],
    /// When to poll next (`None`: now).
    next_poll: Option<Instant>,
    /// The command before the last one sent when `/jobs` was read.
    before: Option<u64>,
    /// The number of the last event looked at (`None`: not started).
    events_seen: Option<u64>,
    progress: Progress,
    bars: Option<Bars>,
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
    store: Arc<SchemaStore>,
    /// Warnings given already (each once per session).
    warned: HashSet<String>,
    /// `/record`: where command lines go.
    record: Option<File>,
    /// `/play`: lines still to run, and whether they come from a file.
    playback: VecDeque<String>,
    playing: bool,
    /// A copy of every event, for `/wait` and `/jobs` (kept alive here).
    _tap: EventTap,
    tapped: Arc<TapBuffer>,
    /// Recent events, numbered.
    recent: VecDeque<(u64, Event)>,
    /// Commands sent so far.
    sent: u64,
    /// For the last commands answered: how many events had arrived when
    /// their reply was printed.
    marks: VecDeque<(u64, u64)>,
    /// With live events (a terminal): what arrived and is not printed yet,
    /// in the order of the wire.
    live: Option<Arc<Live>>,
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
        let tapped = Arc::new(TapBuffer::default());
        let live = cfg.live_events.then(|| Arc::new(Live::new()));
        let tap = {
            let tapped = Arc::clone(&tapped);
            let bell = Arc::clone(&doorbell);
            let live = live.clone();
            client.tap_events(move |t| {
                if let Tapped::Event(ev) = t {
                    tapped.push(ev);
                    if let Some(live) = &live {
                        live.push(Item::Event(ev.body.clone()));
                    }
                }
                bell.ring();
            })
        };
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
            store: Arc::new(SchemaStore::new()),
            warned: HashSet::new(),
            record: None,
            playback: VecDeque::new(),
            playing: false,
            _tap: tap,
            tapped,
            recent: VecDeque::new(),
            sent: 0,
            marks: VecDeque::new(),
            live,
        }
    }

    /// With live events (a terminal): what arrived and was not printed yet.
    /// The engine prints it in the order of the wire among the replies;
    /// the terminal's driver has it printed while the line editor owns the
    /// screen. Replies to commands come through it too, stamped among the
    /// events on the client's reader thread.
    pub fn live(&self) -> Option<&Arc<Live>> {
        self.live.as_ref()
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

    /// What is known of the server's schema, shared with completion.
    pub fn store(&self) -> Arc<SchemaStore> {
        Arc::clone(&self.store)
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
    /// waits for the replies before it, nor with a full window, nor (with
    /// `-e`) while a reply is awaited.
    pub fn wants_input(&self) -> bool {
        self.stop.is_none()
            && self.barriers == 0
            && self.queue.len() < WINDOW
            && !(self.cfg.exit_on_error
                && self.queue.iter().any(|s| matches!(s, Slot::Reply { .. })))
    }

    /// Run the next line of a `/play` file, if one is waiting and the
    /// engine takes input. Returns `true` when it ran one.
    pub fn play_next(&mut self) -> bool {
        if !self.wants_input() {
            return false;
        }
        let Some(line) = self.playback.pop_front() else {
            self.playing = false;
            return false;
        };
        self.run_line(&line);
        if self.playback.is_empty() {
            self.playing = false;
        }
        true
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
            index: None,
        });
        self.pump();
    }

    /// Handle one input line (without its line terminator).
    pub fn line(&mut self, line: &str) {
        if self.stop.is_some() {
            return;
        }
        // `/record` lines are not recorded; a `/play` line is recorded as
        // the lines it plays (see `play`), so a recording plays back alone.
        let first = line.split_whitespace().next().unwrap_or_default();
        if first != "/record" && first != "/play" {
            self.record_line(line);
        }
        self.run_line(line);
    }

    fn record_line(&mut self, line: &str) {
        if let Some(file) = self.record.as_mut() {
            let ok = file
                .write_all(line.as_bytes())
                .and_then(|()| file.write_all(b"\n"))
                .and_then(|()| file.flush());
            if let Err(err) = ok {
                self.record = None;
                self.queue.push_back(Slot::Note(format!(
                    "ERROR: /record: cannot write: {}; recording stopped\n",
                    python_io_error(&err)
                )));
            }
        }
    }

    fn run_line(&mut self, line: &str) {
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
            if meta::is_meta(trimmed) {
                return self.meta(trimmed);
            }
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
                self.echo(&msg);
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
                self.echo(&cmd);
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
        if self.cfg.read_only && !readonly::hmp_allowed(line) {
            return self.refuse(first);
        }
        if first == "cpu" {
            let Some(index) = words.next().and_then(hmp::parse_python_int) else {
                self.queue.push_back(Slot::FailedText(
                    "cpu command takes an integer argument\n".to_owned(),
                ));
                return;
            };
            // The reference checks the CPU with `info version` on it.
            let probe = hmp::command("info version", Some(index));
            match self.client.call(probe, self.cfg.timeout) {
                Ok(reply) if reply.ret().is_some() => self.cpu_index = Some(index),
                Ok(_) => {
                    self.queue
                        .push_back(Slot::FailedText("bad CPU index\n".to_owned()));
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

    /// `help [NAME]`, from the schema; the shell's own commands too.
    fn help(&mut self, name: Option<&str>) {
        if name.is_some_and(|n| n.starts_with('/')) {
            return self.queue.push_back(Slot::Text(meta::USAGE.to_owned()));
        }
        let timeout = self.cfg.timeout.or(Some(LOOKUP_TIMEOUT));
        let schema = match self.store.schema(&self.client, timeout) {
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
                if name.is_none() {
                    if !text.ends_with('\n') {
                        text.push('\n');
                    }
                    text.push('\n');
                    text.push_str(meta::USAGE);
                }
                if self.cfg.json {
                    let mut body = Object::new();
                    body.insert("return".to_owned(), Value::String(text));
                    self.queue.push_back(Slot::Reply {
                        pending: ready(body),
                        hmp: false,
                        deadline: None,
                        index: None,
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

    fn send(&mut self, request: Request, hmp: bool) {
        {
            let msg = request.message();
            let name = msg
                .get("execute")
                .or_else(|| msg.get("exec-oob"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let args = msg.get("arguments").and_then(Value::as_object);
            if self.cfg.read_only && !hmp && !readonly::allowed(name, args, self.cfg.guest_agent) {
                return self.refuse(name);
            }
            if !hmp && !self.cfg.guest_agent {
                self.warn_marked(name, args);
            }
        }
        let submitted = match &self.live {
            // Delivered on the reader thread, in the order of the wire.
            Some(live) => {
                let token = live.token();
                let (live, bell) = (Arc::clone(live), Arc::clone(&self.doorbell));
                self.client
                    .submit_with(request, move |result| {
                        live.arrived(token, result);
                        bell.ring();
                    })
                    .map(|()| Awaited::Live(token))
            }
            None => self.client.submit(request).map(Awaited::Pending),
        };
        match submitted {
            Ok(pending) => {
                self.sent += 1;
                self.queue.push_back(Slot::Reply {
                    pending,
                    hmp,
                    deadline: None,
                    index: Some(self.sent),
                })
            }
            Err(err) => self.client_failure(&err),
        }
    }

    /// Refuse a command under `--read-only`.
    fn refuse(&mut self, name: &str) {
        let text = readonly::refusal(name);
        self.failure(format!("ERROR: {text}\n"), "ReadOnly", text);
    }

    /// Warn (once each per session) about what the command uses that the
    /// live schema marks deprecated or unstable.
    fn warn_marked(&mut self, name: &str, args: Option<&Object>) {
        let Some(facts) = self.store.facts(&self.client) else {
            return;
        };
        for warning in facts.warnings(name, args) {
            self.warn_once(warning);
        }
    }

    /// Queue `warning: WARNING` unless this session gave it already.
    fn warn_once(&mut self, warning: String) {
        if !self.warned.contains(&warning) {
            self.queue
                .push_back(Slot::Note(format!("warning: {warning}\n")));
            self.warned.insert(warning);
        }
    }

    /// Queue the command for `-v` (not with `--json`).
    fn echo(&mut self, msg: &Object) {
        if self.cfg.verbose && !self.cfg.json {
            self.queue.push_back(Slot::Echo(msg.clone()));
        }
    }

    /// Run a shell command (`/...`).
    fn meta(&mut self, line: &str) {
        let name = line.split_whitespace().next().unwrap_or("/").to_owned();
        let parsed = match meta::parse(line) {
            Ok(parsed) => parsed,
            Err(err) => {
                return self
                    .queue
                    .push_back(meta_error(&name, "ParseError", err.to_string()))
            }
        };
        match parsed {
            Meta::Oob(msg) => self.oob(msg),
            Meta::Fd {
                read_only,
                path,
                command,
            } => self.fd(read_only, &path, command),
            Meta::Record(path) => self.start_record(path.as_deref()),
            Meta::Play(path) => self.play(&path),
            Meta::Wait {
                timeout,
                event,
                filter,
            } => self.wait(event, filter, timeout),
            Meta::Jobs { timeout } => {
                self.queue.push_back(Slot::Jobs(Box::new(Follow {
                    timeout,
                    deadline: None,
                    polls: None,
                    results: [None, None],
                    next_poll: None,
                    before: self.previous_command(),
                    events_seen: None,
                    progress: Progress::new(),
                    bars: self.cfg.progress_bars.then(Bars::new),
                })));
                self.barriers += 1;
            }
        }
    }

    /// `/wait EVENT KEY=VALUE...`: a barrier until the event comes.
    fn wait(&mut self, event: String, filter: Object, timeout: Option<Duration>) {
        if !self.cfg.guest_agent {
            if let Some(facts) = self.store.facts(&self.client) {
                if !facts.knows_event(&event) {
                    return self
                        .meta_failure("/wait", format!("the server has no event named {event}"));
                }
                if let Some(mark) = facts.event_mark(&event) {
                    self.warn_once(format!("event {event} is {mark} (QMP schema)"));
                }
            }
        }
        self.queue.push_back(Slot::Wait {
            event,
            filter,
            before: self.previous_command(),
            timeout,
            deadline: None,
        });
        self.barriers += 1;
    }

    /// The command sent before the last one, whose reply marks where
    /// `/wait` starts looking (`None`: fewer than two commands sent).
    fn previous_command(&self) -> Option<u64> {
        self.sent.checked_sub(1).filter(|i| *i > 0)
    }

    /// Command `index` got its reply (printed now): remember how many
    /// events had arrived, and forget events no `/wait` can need any more.
    fn answered(&mut self, index: u64) {
        self.drain_tap();
        self.marks.push_back((index, self.tapped.seen()));
        while self.marks.len() > 64 {
            self.marks.pop_front();
        }
        if let Some(&(_, older)) = self.marks.iter().rev().nth(1) {
            self.recent.retain(|(seq, _)| *seq > older);
        }
    }

    /// Events count from here for a `/wait` or `/jobs` read after command
    /// `before`'s successor: as if commands were sent one at a time, the
    /// previous one sent only once `before` was answered.
    fn events_since(&self, before: Option<u64>) -> u64 {
        before
            .and_then(|b| self.marks.iter().find(|(i, _)| *i == b).map(|(_, m)| *m))
            .unwrap_or(0)
    }

    /// Move the tapped events into `recent`.
    fn drain_tap(&mut self) {
        self.recent.extend(self.tapped.drain());
        while self.recent.len() > MAX_RECENT_EVENTS {
            self.recent.pop_front();
        }
    }

    fn meta_failure(&mut self, name: &str, text: String) {
        self.queue.push_back(meta_error(name, "GenericError", text));
    }

    /// `/oob COMMAND ...`: only when out-of-band execution was negotiated
    /// and the schema allows it for the command.
    fn oob(&mut self, msg: Object) {
        let name = msg
            .get("exec-oob")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if !self.client.oob_enabled() {
            return self.meta_failure(
                "/oob",
                "out-of-band execution was not negotiated (the server does not offer it)"
                    .to_owned(),
            );
        }
        if let Some(facts) = self.store.facts(&self.client) {
            if facts.knows(&name) && !facts.allows_oob(&name) {
                return self.meta_failure(
                    "/oob",
                    format!(
                        "{name} cannot run out of band (its allow-oob is false in the QMP \
                         schema; these can: {})",
                        facts.oob_commands().join(", ")
                    ),
                );
            }
        }
        self.echo(&msg);
        self.send(Request::new(msg), false);
    }

    /// `/fd [--read-only] PATH COMMAND ...`: the file opened with the
    /// user's rights and handed to QEMU with the command.
    fn fd(&mut self, read_only: bool, path: &str, command: Object) {
        if !self.client.passes_fds() {
            return self.meta_failure(
                "/fd",
                "this connection cannot pass file descriptors (only a UNIX socket can)".to_owned(),
            );
        }
        let mut opts = std::fs::OpenOptions::new();
        if read_only {
            opts.read(true);
        } else {
            opts.read(true).write(true).create(true).mode(0o600);
        }
        let file = match opts.custom_flags(libc::O_CLOEXEC).open(path) {
            Ok(file) => file,
            Err(err) => {
                return self.meta_failure(
                    "/fd",
                    format!("cannot open {path}: {}", python_io_error(&err)),
                )
            }
        };
        self.echo(&command);
        self.send(
            Request::new(command).with_fds(vec![OwnedFd::from(file)]),
            false,
        );
    }

    /// `/record FILE` or `/record off`.
    fn start_record(&mut self, path: Option<&str>) {
        self.record = None;
        let Some(path) = path else {
            return;
        };
        match open_private(Path::new(path), Existing::Truncate) {
            Ok(file) => self.record = Some(file),
            Err(err) => self.meta_failure(
                "/record",
                format!("cannot open {path}: {}", python_io_error(&err)),
            ),
        }
    }

    /// `/play FILE`: its lines run as if typed, after this one.
    fn play(&mut self, path: &str) {
        if self.playing {
            return self.meta_failure("/play", "nested /play is refused".to_owned());
        }
        let text = match File::open(path).and_then(|f| {
            let mut text = String::new();
            io::Read::read_to_string(&mut io::Read::take(f, MAX_PLAY_BYTES + 1), &mut text)?;
            Ok(text)
        }) {
            Ok(text) if text.len() as u64 > MAX_PLAY_BYTES => {
                return self.meta_failure(
                    "/play",
                    format!("{path} is larger than {} MiB", MAX_PLAY_BYTES >> 20),
                )
            }
            Ok(text) => text,
            Err(err) => {
                return self.meta_failure(
                    "/play",
                    format!("cannot read {path}: {}", python_io_error(&err)),
                )
            }
        };
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        for line in &lines {
            self.record_line(line);
        }
        self.playing = !lines.is_empty();
        self.playback.extend(lines);
    }

    /// Drop the rest of a `/play` file (Ctrl-C); returns how many lines.
    pub fn stop_playing(&mut self) -> usize {
        self.playing = false;
        std::mem::take(&mut self.playback).len()
    }

    /// A client error for a command that never got a reply.
    fn client_failure(&mut self, err: &QmpError) {
        match err {
            QmpError::Disconnected => self.queue.push_back(Slot::Reply {
                pending: ready_err(),
                hmp: false,
                deadline: None,
                index: None,
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
            match self.queue.front() {
                None => break,
                Some(Slot::Wait { .. }) => {
                    if self.pump_wait() {
                        continue;
                    }
                    break;
                }
                Some(Slot::Jobs(_)) => {
                    if self.pump_jobs() {
                        continue;
                    }
                    break;
                }
                _ => {}
            }
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            if let Slot::Reply {
                pending, deadline, ..
            } = front
            {
                let taken = match pending {
                    Awaited::Pending(pending) => pending.try_take().map(|r| (Vec::new(), r)),
                    Awaited::Live(token) => self.live.as_ref().and_then(|l| l.take_reply(*token)),
                };
                let (before, result) = match taken {
                    Some(taken) => taken,
                    None => {
                        let now = Instant::now();
                        match (*deadline, self.cfg.timeout) {
                            (None, Some(t)) => *deadline = now.checked_add(t),
                            (Some(d), Some(t)) if now >= d => {
                                self.out.fatal(
                                    "Timeout",
                                    &format!("ERROR: no reply within {} s\n", t.as_secs_f64()),
                                );
                                self.stop = Some(exit::FATAL);
                            }
                            _ => {}
                        }
                        break;
                    }
                };
                // The events that came before it on the wire, first.
                for item in before {
                    if let Err(err) = self.print_live(item) {
                        return self.output_failed(&err);
                    }
                }
                let Some(Slot::Reply { hmp, index, .. }) = self.queue.pop_front() else {
                    unreachable!("the front slot is a reply");
                };
                if let Some(index) = index {
                    self.answered(index);
                }
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
            self.drop_queue();
        }
    }

    /// The `/wait` at the front: done (`true`) when its event came or its
    /// time is up.
    fn pump_wait(&mut self) -> bool {
        self.drain_tap();
        let before = match self.queue.front() {
            Some(Slot::Wait { before, .. }) => *before,
            _ => return false,
        };
        let after = self.events_since(before);
        let Some(Slot::Wait {
            event,
            filter,
            timeout,
            deadline,
            ..
        }) = self.queue.front_mut()
        else {
            return false;
        };
        let found = self.recent.iter().position(|(seq, ev)| {
            *seq > after
                && ev.name() == Some(event.as_str())
                && meta::matches(ev.body.get("data"), filter)
        });
        let now = Instant::now();
        if let Some(i) = found {
            let body = self.recent[i].1.body.clone();
            self.pop_barrier();
            // At a terminal, the events up to it (it included), first.
            if let Err(err) = self.notices() {
                self.output_failed(&err);
                return true;
            }
            if let Err(err) = self.out.reply(body) {
                self.output_failed(&err);
            }
            return true;
        }
        match (*deadline, *timeout) {
            (None, Some(t)) => *deadline = now.checked_add(t),
            (Some(d), Some(t)) if now >= d => {
                let text = format!("no {event} event within {} s", t.as_secs_f64());
                self.pop_barrier();
                self.print_now(meta_error("/wait", "Timeout", text));
                return true;
            }
            _ => {}
        }
        if !self.client.is_connected() {
            self.front_disconnected();
            return true;
        }
        false
    }

    /// The `/jobs` at the front: poll, print what changed, done (`true`)
    /// when nothing runs any more or its time is up.
    fn pump_jobs(&mut self) -> bool {
        self.drain_tap();
        let since = match self.queue.front() {
            Some(Slot::Jobs(follow)) if follow.events_seen.is_none() => {
                Some(self.events_since(follow.before))
            }
            _ => None,
        };
        let Some(Slot::Jobs(follow)) = self.queue.front_mut() else {
            return false;
        };
        if let Some(since) = since {
            follow.events_seen = Some(since);
        }
        // Job events: what they tell, and a poll at once.
        let mut lines = Vec::new();
        let mut job_event = false;
        let from = follow.events_seen.unwrap_or(0);
        for (seq, ev) in self.recent.iter().filter(|(seq, _)| *seq > from) {
            follow.events_seen = Some(*seq);
            let Some(name) = ev.name() else { continue };
            if let Some(job) = follow.progress.event(name, ev.body.get("data")) {
                if follow.bars.is_none() {
                    lines.push(job.to_json());
                }
            }
            job_event |= matches!(
                name,
                "JOB_STATUS_CHANGE" | "MIGRATION" | "BLOCK_JOB_COMPLETED" | "BLOCK_JOB_READY"
            );
        }
        let now = Instant::now();
        let client = Arc::clone(&self.client);
        if let (None, Some(t)) = (follow.deadline, follow.timeout) {
            follow.deadline = now.checked_add(t);
        }
        if job_event && follow.polls.is_none() {
            follow.next_poll = None;
        }
        if follow.polls.is_none() && follow.next_poll.is_none_or(|t| now >= t) {
            let q = |name| client.submit(Request::new(qmp_client::command(name, None)));
            match (q("query-jobs"), q("query-migrate")) {
                (Ok(a), Ok(b)) => {
                    follow.polls = Some([a, b]);
                    follow.results = [None, None];
                }
                _ => {
                    self.front_disconnected();
                    return true;
                }
            }
        }
        let mut done = false;
        if let Some(polls) = follow.polls.as_mut() {
            for (poll, result) in polls.iter_mut().zip(follow.results.iter_mut()) {
                if result.is_none() {
                    *result = poll.try_take();
                }
            }
            if let [Some(ra), Some(rb)] = &follow.results {
                if matches!(ra, Err(QmpError::Disconnected)) {
                    self.front_disconnected();
                    return true;
                }
                let ret =
                    |r: &Result<Reply, QmpError>| r.as_ref().ok().and_then(|r| r.ret().cloned());
                let changed = follow.progress.update(ret(ra).as_ref(), ret(rb).as_ref());
                follow.polls = None;
                follow.results = [None, None];
                follow.next_poll = now.checked_add(jobs::POLL_INTERVAL);
                match follow.bars.as_mut() {
                    Some(bars) => bars.show(follow.progress.jobs()),
                    None => lines.extend(changed.iter().map(|j| j.to_json())),
                }
                done = !follow.progress.running();
            }
        }
        let timed_out = !done && follow.deadline.is_some_and(|d| now >= d);
        if done || timed_out {
            let Some(Slot::Jobs(follow)) = self.pop_barrier() else {
                unreachable!("the front slot is /jobs");
            };
            let follow = *follow;
            if let Some(bars) = follow.bars {
                bars.finish();
            }
            lines.push(follow.progress.final_json());
            // The events that came before the polls' replies, first.
            if let Err(err) = self.notices() {
                self.output_failed(&err);
                return true;
            }
            for line in lines {
                if let Err(err) = self.out.reply(line) {
                    self.output_failed(&err);
                    return true;
                }
            }
            if timed_out {
                let t = follow.timeout.unwrap_or_default().as_secs_f64();
                let text = format!("jobs still running after {t} s (they go on)");
                self.print_now(meta_error("/jobs", "Timeout", text));
            }
            return true;
        }
        if !lines.is_empty() {
            if let Err(err) = self.notices() {
                self.output_failed(&err);
                return true;
            }
        }
        for line in lines {
            if let Err(err) = self.out.reply(line) {
                self.output_failed(&err);
                return true;
            }
        }
        false
    }

    /// The `/wait` or `/jobs` at the front is over: take it off the queue.
    fn pop_barrier(&mut self) -> Option<Slot> {
        self.barriers -= 1;
        self.queue.pop_front()
    }

    /// The connection went while the `/wait` or `/jobs` at the front was
    /// waiting.
    fn front_disconnected(&mut self) {
        self.pop_barrier();
        self.disconnected();
    }

    /// Print `slot` now (what was before it is printed already).
    fn print_now(&mut self, slot: Slot) {
        if let Err(err) = self.print(slot) {
            self.output_failed(&err);
        }
    }

    /// Forget everything still to print (the session ends).
    fn drop_queue(&mut self) {
        self.queue.clear();
        self.barriers = 0;
    }

    fn print(&mut self, slot: Slot) -> io::Result<()> {
        match slot {
            Slot::Text(text) => self.out.text(&text),
            Slot::FailedText(text) => {
                self.failed();
                self.out.text(&text)
            }
            Slot::Echo(cmd) => self.out.echo(&cmd),
            Slot::Note(text) => {
                self.out.diag(&text);
                Ok(())
            }
            Slot::Failure { diag, class, desc } => {
                self.failed();
                self.out.diag(&diag);
                if self.cfg.json {
                    self.out.reply(error_object(class, &desc))?;
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
            Slot::Reply { .. } | Slot::Wait { .. } | Slot::Jobs(_) => {
                unreachable!("printed by pump")
            }
        }
    }

    fn print_result(&mut self, result: Result<Reply, QmpError>, hmp: bool) -> io::Result<()> {
        match result {
            Ok(reply) => {
                if reply.is_error() {
                    self.failed();
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
                self.out.fatal(
                    "Disconnected",
                    &match reason {
                        Some(why) => format!("Disconnected: {why}\n"),
                        None => "Disconnected\n".to_owned(),
                    },
                );
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
    /// `--json`); with live events, what arrived so far and may be printed
    /// before the replies still awaited.
    fn notices(&mut self) -> io::Result<()> {
        if let Some(live) = self.live.clone() {
            let items = live.take_printable();
            if items.is_empty() {
                return Ok(());
            }
            // Above the progress bars of a `/jobs`, if any.
            let above = match self.queue.front() {
                Some(Slot::Jobs(follow)) => follow.bars.as_ref().map(Bars::above),
                _ => None,
            };
            let print = || {
                for item in items {
                    self.print_live(item)?;
                }
                self.out.flush()
            };
            return match above {
                Some(above) => above.print(print),
                None => print(),
            };
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

    /// Print what arrived live (at a terminal), as the line editor would.
    fn print_live(&mut self, item: Item) -> io::Result<()> {
        match item {
            Item::Event(body) => self.out.event(body),
            Item::LateReply(body) => {
                self.out.text("late reply (the command was abandoned): ")?;
                self.out.reply(body)
            }
            Item::Warning(text) => {
                self.out.diag(&format!("warning: {text}\n"));
                Ok(())
            }
        }
    }

    /// Count a failed command; with `-e`, the session stops after it is
    /// printed.
    fn failed(&mut self) {
        self.failures += 1;
        if self.cfg.exit_on_error && self.stop.is_none() {
            self.stop = Some(exit::COMMAND_FAILED);
        }
    }

    fn output_failed(&mut self, err: &io::Error) {
        self.out.output_error(err);
        self.stop = Some(exit::FATAL);
        self.drop_queue();
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
            Some(Slot::Reply { deadline, .. }) | Some(Slot::Wait { deadline, .. }) => *deadline,
            Some(Slot::Jobs(f)) => match (f.deadline, f.next_poll) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
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
            if self.stop.is_some() {
                return false;
            }
            self.doorbell.wait(seen, self.deadline());
        }
    }

    /// Stop waiting for every reply still awaited; their late replies are
    /// shown as such when they come.
    fn abandon_replies(&mut self) {
        let mut abandoned = 0;
        let mut stopped = None;
        for slot in std::mem::take(&mut self.queue) {
            match slot {
                Slot::Reply { pending, .. } => {
                    match pending {
                        Awaited::Pending(pending) => pending.abandon(true),
                        Awaited::Live(token) => {
                            if let Some(live) = &self.live {
                                live.abandon(token);
                            }
                        }
                    }
                    abandoned += 1;
                }
                Slot::Barrier => {}
                Slot::Wait { event, .. } => stopped = Some(format!("stopped waiting for {event}")),
                Slot::Jobs(follow) => {
                    if let Some(bars) = follow.bars {
                        bars.finish();
                    }
                    stopped = Some("stopped following the jobs; they go on".to_owned());
                }
                other => self.queue.push_back(other),
            }
        }
        self.barriers = 0;
        if abandoned > 0 {
            self.queue.push_back(Slot::Note(
                "(abandoned; a late reply will be shown as such)\n".to_owned(),
            ));
        }
        if let Some(text) = stopped {
            self.queue.push_back(Slot::Note(format!("({text})\n")));
        }
        let dropped = self.stop_playing();
        if dropped > 0 {
            self.queue.push_back(Slot::Note(format!(
                "(the {} of /play not run)\n",
                if dropped == 1 {
                    "remaining line".to_owned()
                } else {
                    format!("{dropped} remaining lines")
                }
            )));
        }
    }

    /// End the session: stop with `code` (a signal, say) unless already
    /// stopped.
    pub fn stop_with(&mut self, code: i32) {
        if self.stop.is_none() {
            self.stop = Some(code);
        }
        self.drop_queue();
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

/// A failed shell command `name` (`/wait`, say): `ERROR: NAME: TEXT` on
/// standard error, and with `--json` an error object of `class`.
fn meta_error(name: &str, class: &'static str, text: String) -> Slot {
    Slot::Failure {
        diag: format!("ERROR: {name}: {text}\n"),
        class,
        desc: format!("{name}: {text}"),
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

/// A reply already resolved with `body`, for output that must keep its
/// place among replies.
fn ready(body: Object) -> Awaited {
    Awaited::Pending(Pending::resolved(Ok(Reply {
        body,
        assigned_id: false,
    })))
}

/// A reply already failed with [`QmpError::Disconnected`].
fn ready_err() -> Awaited {
    Awaited::Pending(Pending::resolved(Err(QmpError::Disconnected)))
}
