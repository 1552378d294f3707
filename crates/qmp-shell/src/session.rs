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
//!
//! This file is the engine's core: reading lines, the queue and its pump,
//! and the session's end; [`send`] sends a command (with the safety net
//! around it) and [`print`](mod@print) prints what the pump takes off the
//! queue and what arrives besides. The shell's own commands live beside
//! it, each with its state: [`wait`] (`/wait`), [`follow`] (`/jobs`),
//! [`record`] (`/record` and the recording rules), [`play`] (`/play`),
//! [`oob`] (`/oob`), [`fd`] (`/fd`) and [`help`]; [`raw`] reads raw JSON
//! messages, and [`events`] keeps the events a `/wait` or `/jobs` looks
//! at. The engine's decisions are tested in-process in `session/tests.rs`.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qmp_client::client::{EventTap, Tapped};
use qmp_client::{Client, Error as QmpError, Object, Reply, Request};

use crate::cli::exit;
use crate::doorbell::Doorbell;
use crate::hmp;
use crate::live::Live;
use crate::meta::{self, Meta};
use crate::output::Output;
use crate::readonly;
use crate::shorthand::{Parsed, Parser};
use crate::store::SchemaStore;
use crate::wording::client_error;

mod events;
mod fd;
mod follow;
mod help;
mod oob;
mod play;
mod print;
mod raw;
mod record;
mod send;
mod wait;

use events::EventLog;
use follow::{Follow, JobsState};
use play::Playback;
use raw::RawMessage;
use record::Recorder;
use wait::Wait;

/// The hint printed after every parse error (the reference forgets the `]`).
pub const COMMAND_FORMAT: &str =
    "command format: <command-name> [arg-name1=arg1] ... [arg-nameN=argN]";

/// Output slots kept at most: bounds the commands in flight on a pipe.
pub const WINDOW: usize = 256;

/// How long look-ups the shell makes on its own (the schema for `help`)
/// may take when `--timeout` is not given.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the facts a cold cache is fetching are looked for, while
/// the warnings of a command wait for them ([`Slot::Marks`]).
const MARKS_POLL: Duration = Duration::from_millis(5);

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
    /// The command line of the QEMU that `qmp-shell-wrap` started, for the
    /// header of a `/record` file.
    pub qemu_command: Option<Vec<String>>,
    /// One of several targets that run the same lines (fan-out): what
    /// makes sense once, not once per target (`/record`), is refused,
    /// said once for all.
    pub fan_out: bool,
    /// The process ends with this session (the one session of a
    /// `qmp-shell` process): what the engine holds is left to the exit,
    /// not freed, once its output is flushed.
    pub ends_process: bool,
}

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
    /// A failed command, refused the same way on every target of a
    /// fan-out: as [`Slot::Failure`], but `diag` (or its error object) is
    /// said once for all targets ([`Output::error_once`]).
    FailureOnce { diag: String, desc: String },
    /// A note for standard error.
    Note(String),
    /// The deprecation warnings of the command sent next, worked out once
    /// the facts arrive (a cold cache: they were fetched after it, at
    /// `since`). The engine polls for them ([`MARKS_POLL`]), so that a
    /// signal or Ctrl-C is seen while they are awaited.
    Marks {
        name: String,
        args: Option<Object>,
        since: Instant,
    },
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
    /// `/wait`: waiting for an event.
    Wait(Wait),
    /// `/jobs`: following jobs until none runs.
    Jobs(Box<Follow>),
}

/// A reply still to come.
enum Awaited {
    /// The reply to a command sent: [`Live`] has it once it came, stamped
    /// in the order of the wire.
    Sent(u64),
    /// Output made here that keeps its place among replies.
    Ready(Option<Result<Reply, QmpError>>),
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
    raw: Option<RawMessage>,
    queue: VecDeque<Slot>,
    barriers: usize,
    failures: u64,
    stop: Option<i32>,
    store: Arc<SchemaStore>,
    /// Warnings given already (each once per session).
    warned: HashSet<String>,
    /// `/record`: where command lines go, and the lines of the
    /// transaction or raw JSON message being read.
    record: Recorder,
    /// `/play`: the lines of a file still to run.
    playback: Playback,
    /// The tap that gives [`Live`] every event (kept alive here).
    _tap: EventTap,
    /// What arrived, numbered in the order of the wire: events, and the
    /// replies to the commands sent.
    live: Arc<Live>,
    /// Recent events, and where the commands sent stand among them (for
    /// `/wait` and `/jobs`).
    events: EventLog,
    /// What a `/jobs` leaves to the next.
    jobs: JobsState,
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
        let live = Arc::new(Live::new(cfg.live_events));
        let tap = {
            let live = Arc::clone(&live);
            let bell = Arc::clone(&doorbell);
            client.tap_events(move |t| {
                if let Tapped::Event(ev) = t {
                    live.event(ev);
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
            record: Recorder::default(),
            playback: Playback::default(),
            _tap: tap,
            live,
            events: EventLog::default(),
            jobs: JobsState::default(),
        }
    }

    /// What arrived, in the order of the wire; with live events (a
    /// terminal), what was not printed yet. The engine prints it among the
    /// replies; the terminal's driver has it printed while the line editor
    /// owns the screen.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
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
        self.take_line(line);
    }

    /// Run a line, typed or played, and record it.
    ///
    /// A recording holds what was sent: each line once what it belongs to
    /// is complete (a transaction when it is closed, a raw JSON message
    /// when it ends), as it was typed; what was not sent (a parse error,
    /// a refusal, an abandoned transaction) only as `# not sent: ` comments,
    /// which replay skips; a line starting with a space (kept out of
    /// history too) as a comment saying so. `/record` lines are not
    /// recorded, nor what is not an action at the `TRANS>` prompt (a
    /// shell command, `help`, refused raw JSON); a `/play` line is
    /// recorded as the lines it plays, so a recording plays back alone.
    fn take_line(&mut self, line: &str) {
        let trimmed = line.trim();
        let first = trimmed.split_whitespace().next().unwrap_or_default();
        let not_an_action =
            meta::is_meta(trimmed) || self.help_line(trimmed).is_some() || trimmed.starts_with('{');
        if self.raw.is_none()
            && (first == "/record" || first == "/play" || (self.in_transaction() && not_an_action))
        {
            return self.run_line(line);
        }
        if self.raw.is_some() && self.in_transaction() {
            // The rest of a raw JSON message refused at `TRANS>`.
            return self.run_line(line);
        }
        if self.raw.is_none() && self.in_transaction() && first == "transaction(" {
            // It drops the transaction open so far: none of it was sent.
            self.unit_done(false);
        }
        self.record.keep(line);
        self.record.unsent = false;
        self.run_line(line);
        if self.raw.as_ref().is_some_and(|raw| raw.too_long) {
            // A message refused for its size is not held, nor its lines.
            self.record.unit.clear();
        }
        if self.raw.is_none() && !self.in_transaction() {
            let sent = !self.record.unsent;
            self.unit_done(sent);
        }
    }

    fn run_line(&mut self, line: &str) {
        if self.raw.is_some() {
            return self.raw_line(line);
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
        // The shell's own commands, in HMP mode too: no HMP command starts
        // with `/`.
        if meta::is_meta(trimmed) {
            return if self.parser.in_transaction() {
                self.meta_in_transaction(trimmed)
            } else {
                self.meta(trimmed)
            };
        }
        if self.cfg.hmp {
            if hmp_help_for_shell_commands(trimmed) {
                return self.queue_text(meta::USAGE.to_owned());
            }
            return self.hmp(line);
        }
        if let Some(name) = self.help_line(trimmed) {
            // At the `TRANS>` prompt too, which stays open.
            return self.help((!name.is_empty()).then_some(name));
        }
        if !self.parser.in_transaction() {
            if trimmed.starts_with('{') {
                return self.start_raw(trimmed);
            }
        } else if trimmed.starts_with('{') {
            return self.raw_in_transaction(trimmed);
        }
        self.shorthand(line);
    }

    /// A line that could not be read (not UTF-8, too long): a failed
    /// command, one line on standard error. Inside a raw JSON message it
    /// ends the message, which is not sent: it would lack that line.
    pub fn unreadable_line(&mut self, reason: &str) {
        let text = if self.raw.take().is_some_and(|raw| !raw.too_long) {
            format!("{reason}, inside a raw JSON message: the message was not sent")
        } else {
            reason.to_owned()
        };
        self.failure(format!("ERROR: {text}\n"), "ParseError", text);
    }

    /// Input ended: an unfinished transaction or raw JSON message is an
    /// error, and nothing of it is sent.
    pub fn end_of_input(&mut self) {
        self.unfinished("end of input");
        if self.cfg.json && !self.cfg.live_events {
            // The events of the last commands, which over libvirt may trail
            // their replies, are printed before the end.
            self.queue.push_back(Slot::Barrier);
            self.barriers += 1;
        }
    }

    /// The input that was to finish an open transaction or raw JSON
    /// message ended (`what`: `end of input`, `/play: FILE ends`): it is a
    /// failed command, and nothing of it is sent.
    fn unfinished(&mut self, what: &str) {
        if let Some(raw) = self.raw.take() {
            // One that was too long was reported already.
            if !raw.too_long {
                self.failure(
                    format!("ERROR: {what} inside a raw JSON message; it was not sent\n"),
                    "ParseError",
                    format!("{what} inside a raw JSON message"),
                );
            }
            self.unit_done(false);
        }
        if let Some(n) = self.parser.abort_transaction() {
            let desc = format!("{what} inside a transaction: {} not sent", actions(n));
            self.failure(format!("ERROR: {desc}\n"), "ParseError", desc);
            self.unit_done(false);
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
                self.unit_done(false);
                true
            }
            None => false,
        }
    }

    fn shorthand(&mut self, line: &str) {
        let parsed = self.parser.parse_line(line);
        let abandoned = self.parser.take_abandoned();
        match parsed {
            Err(err) => self.parse_error(&err.to_string()),
            Ok(Parsed::Empty) | Ok(Parsed::Queued) => {}
            Ok(Parsed::Command(cmd)) => self.send(Request::new(cmd), false),
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
                // Nothing sent: a recording keeps it as a comment.
                self.record.unsent = true;
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
                    // Only the check went out.
                    self.record.unsent = true;
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

    /// Run a shell command (`/...`).
    fn meta(&mut self, line: &str) {
        let name = line.split_whitespace().next().unwrap_or("/").to_owned();
        let parsed = match meta::parse(line) {
            Ok(parsed) => parsed,
            Err(err) => {
                self.record.unsent = true;
                return self
                    .queue
                    .push_back(meta_error(&name, "ParseError", err.to_string()));
            }
        };
        match parsed {
            Meta::Oob(msg) => self.oob(msg),
            Meta::Fd {
                read_only,
                path,
                command,
            } => self.fd(read_only, &path, command),
            Meta::Record { file, append } => self.start_record(file.as_deref(), append),
            Meta::Play(path) => self.play(&path),
            Meta::Wait {
                timeout,
                event,
                filter,
            } => self.wait(event, filter, timeout),
            Meta::Jobs { timeout } => self.follow_jobs(timeout),
        }
    }

    fn meta_failure(&mut self, name: &str, text: String) {
        self.record.unsent = true;
        self.queue.push_back(meta_error(name, "GenericError", text));
    }

    /// A shell command at the `TRANS>` prompt: `/record` runs; the others
    /// cannot be part of a transaction and are refused. The transaction
    /// stays open either way.
    fn meta_in_transaction(&mut self, line: &str) {
        let name = line.split_whitespace().next().unwrap_or("/").to_owned();
        if name == "/record" {
            return self.meta(line);
        }
        self.meta_failure(
            &name,
            "not run inside a transaction, which stays open (end it with a line \")\")".to_owned(),
        );
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
        self.record.unsent = true;
        self.queue.push_back(Slot::Failure { diag, class, desc });
    }

    /// Print what can be printed now, without waiting: the front of the
    /// queue up to the first reply that has not arrived. Notices from the
    /// client (warnings, late replies) are printed on the way; so are
    /// events with `--json`. A timed-out reply or a lost connection ends the
    /// session ([`stopped`](Engine::stopped)).
    pub fn pump(&mut self) {
        while self.stop.is_none() {
            // With a `/wait` at the front, what arrived live is printed
            // once the `/wait` looked at it: the event it returns is
            // printed once, as its answer.
            let waiting = matches!(self.queue.front(), Some(Slot::Wait { .. }));
            if let Err(err) = self.notices(waiting.then_some(0)) {
                return self.output_failed(&err);
            }
            match self.queue.front() {
                None => break,
                Some(Slot::Wait { .. }) => {
                    if self.pump_wait() {
                        continue;
                    }
                    if let Err(err) = self.notices(Some(self.events.looked)) {
                        return self.output_failed(&err);
                    }
                    break;
                }
                Some(Slot::Jobs(_)) => {
                    if self.pump_jobs() {
                        continue;
                    }
                    break;
                }
                Some(Slot::Marks { since, .. })
                    if self.store.poll_fetch(&self.client).is_none() =>
                {
                    // The store gives up as its look-ups would; `--timeout`
                    // bounds this wait too: the reply behind these warnings
                    // then has as long again.
                    if self.cfg.timeout.is_none_or(|t| since.elapsed() < t) {
                        // Back to the doorbell: polled again soon.
                        break;
                    }
                    // As a blocking look-up would: not asked again.
                    self.store.give_up_fetch();
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
                    Awaited::Sent(token) => self
                        .live
                        .take_reply(*token)
                        .map(|t| (t.before, t.result, Some(t.after))),
                    Awaited::Ready(result) => result.take().map(|r| (Vec::new(), r, None)),
                };
                let (before, result, after) = match taken {
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
                // What came before it on the wire (at a terminal), first.
                if let Err(err) = self.print_items(before) {
                    return self.output_failed(&err);
                }
                let Some(Slot::Reply { hmp, index, .. }) = self.queue.pop_front() else {
                    unreachable!("the front slot is a reply");
                };
                if let (Some(index), Some(after)) = (index, after) {
                    self.answered(index, after);
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

    /// Forget everything still to print (the session ends).
    fn drop_queue(&mut self) {
        self.queue.clear();
        self.barriers = 0;
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
            // The requests go first: the server works on them while the
            // output is written.
            self.client.send_queued();
            if let Err(err) = self.out.flush() {
                self.output_failed(&err);
            }
        }
    }

    /// When the oldest reply times out, if `--timeout` applies.
    pub fn deadline(&self) -> Option<Instant> {
        match self.queue.front() {
            Some(Slot::Reply { deadline, .. }) | Some(Slot::Wait(Wait { deadline, .. })) => {
                *deadline
            }
            Some(Slot::Jobs(f)) => f.wake_at(),
            // The store's replies ring no doorbell: poll for them.
            Some(Slot::Marks { .. }) => Instant::now().checked_add(MARKS_POLL),
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
                    if let Awaited::Sent(token) = pending {
                        self.live.abandon(token, true);
                        abandoned += 1;
                    }
                }
                Slot::Barrier => {}
                // The warnings of an abandoned command: given if the facts
                // are there, not waited for.
                Slot::Marks { .. } if self.store.poll_fetch(&self.client).is_none() => {}
                Slot::Wait(wait) => stopped = Some(format!("stopped waiting for {}", wait.event)),
                Slot::Jobs(mut follow) => {
                    self.jobs.ended(&mut follow, &self.live);
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

    /// Write out what the output still buffers, as dropping it would, even
    /// once the session stopped (a write error then changes nothing): for
    /// an engine that is not dropped ([`Config::ends_process`]).
    pub fn flush_buffered(&mut self) {
        let _ = self.out.flush();
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

/// Whether an HMP line is `help /...`: the shell's own commands, which
/// QEMU's `help` does not know.
fn hmp_help_for_shell_commands(trimmed: &str) -> bool {
    let mut words = trimmed.split_whitespace();
    words.next() == Some("help") && words.next().is_some_and(|w| w.starts_with('/'))
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
    Awaited::Ready(Some(Ok(Reply::new(body, false))))
}

/// A reply already failed with [`QmpError::Disconnected`].
fn ready_err() -> Awaited {
    Awaited::Ready(Some(Err(QmpError::Disconnected)))
}

#[cfg(test)]
mod tests;
