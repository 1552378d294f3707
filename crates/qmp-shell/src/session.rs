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

use qmp_client::client::{EventTap, Tapped};
use qmp_client::{Client, Error as QmpError, Event, Incoming, Object, Reply, Request};
use serde_json::Value;

use crate::cli::exit;
use crate::complete::JsonScan;
use crate::doorbell::Doorbell;
use crate::files::{open_private, Existing};
use crate::hmp;
use crate::jobs::{self, Bars, Known, Progress};
use crate::live::{Item, Live, LATE_REPLY};
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
    /// The command line of the QEMU that `qmp-shell-wrap` started, for the
    /// header of a `/record` file.
    pub qemu_command: Option<Vec<String>>,
    /// One of several targets that run the same lines (fan-out): what
    /// makes sense once, not once per target (`/record`), is refused,
    /// said once for all.
    pub fan_out: bool,
}

/// Events kept for `/wait` at most (those since the last command sent).
const MAX_RECENT_EVENTS: usize = 100_000;

/// Commands whose marks (see [`Mark`]) are kept.
const MAX_MARKS: usize = 64;

/// Bytes a `/play` file may have at most (it is read whole).
const MAX_PLAY_BYTES: u64 = 64 << 20;

/// Bytes a raw JSON message may have at most: QEMU's limit for a message.
pub const MAX_RAW_JSON: usize = 64 << 20;

/// JSON tokens a raw JSON message may have at most: QEMU's limit for a
/// message (it refuses more). Held as a `serde_json::Value`, a message of
/// 64 MiB of small numbers would take gigabytes.
pub const MAX_RAW_JSON_TOKENS: u64 = 2 << 20;

/// The error for a raw JSON message over [`MAX_RAW_JSON`] or
/// [`MAX_RAW_JSON_TOKENS`].
fn raw_json_too_large() -> String {
    format!(
        "raw JSON message larger than QEMU takes ({} MiB, {MAX_RAW_JSON_TOKENS} tokens); \
         it was not sent",
        MAX_RAW_JSON >> 20
    )
}

/// A raw JSON message being read over several lines: its text so far and
/// where the scan for its end stands. Past [`MAX_RAW_JSON`] the text is
/// dropped (and the message will not be sent) but the scan goes on, so that
/// the shell carries on after the message's end.
struct RawMessage {
    text: String,
    scan: JsonScan,
    too_long: bool,
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
    /// `/wait`: an event named `event` whose data contains `filter`, that
    /// came since `command` (the last command sent when `/wait` was read)
    /// was sent (see [`Engine::window_start`]) and that no `/wait` before
    /// returned.
    Wait {
        event: String,
        filter: Object,
        command: Option<u64>,
        timeout: Option<Duration>,
        deadline: Option<Instant>,
    },
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

/// An event kept for `/wait` and `/jobs`.
struct Recent {
    seq: u64,
    event: Event,
    /// A `/wait` returned it: no later `/wait` does.
    consumed: bool,
}

/// Where a command sent stands among the events (numbers of what
/// arrived, see [`Live::numbered`]).
struct Mark {
    /// The command's number.
    index: u64,
    /// The last thing that came before it was sent.
    sent: u64,
    /// The last thing that came before its reply (once it is printed).
    answered: Option<u64>,
}

/// The state of a `/jobs`.
struct Follow {
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    /// `query-jobs` and `query-migrate` in flight (their [`Live`]
    /// tokens), and their results as they come.
    polls: Option<[u64; 2]>,
    results: [Option<Result<Reply, QmpError>>; 2],
    /// The number of the last thing that came before the reply to
    /// `query-jobs`, once it is in.
    polled_after: Option<u64>,
    /// When to poll next (`None`: now).
    next_poll: Option<Instant>,
    /// The last command sent when `/jobs` was read.
    command: Option<u64>,
    /// The number of the last event looked at (`None`: not started).
    events_seen: Option<u64>,
    /// The number of the last event that came before it started: later
    /// ones tell of jobs that exist while it runs.
    started: u64,
    progress: Progress,
    bars: Option<Bars>,
}

impl Follow {
    /// It stops: the replies to the poll in flight, if any, are dropped.
    fn drop_polls(&self, live: &Live) {
        for (token, result) in self.polls.iter().flatten().zip(&self.results) {
            if result.is_none() {
                live.abandon(*token, false);
            }
        }
    }
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
    /// `/record`: where command lines go.
    record: Option<Recording>,
    /// The lines of the transaction or raw JSON message being read, kept
    /// until it is sent (then recorded) or dropped (then recorded as
    /// comments). `None` stands for a line kept out of recordings.
    unit: Vec<Option<String>>,
    /// The line being run failed before anything was sent (a parse error,
    /// a refusal): it is recorded as a comment.
    unsent: bool,
    /// `/play`: lines still to run, whether they come from a file, and
    /// which.
    playback: VecDeque<String>,
    playing: bool,
    play_path: String,
    /// The tap that gives [`Live`] every event (kept alive here).
    _tap: EventTap,
    /// What arrived, numbered in the order of the wire: events, and the
    /// replies to the commands sent.
    live: Arc<Live>,
    /// Recent events, numbered.
    recent: VecDeque<Recent>,
    /// The number of the last event taken from [`Live`].
    latest: u64,
    /// The number of the last thing that had arrived when events were last
    /// taken from [`Live`]: every event up to it is in `recent`.
    looked: u64,
    /// Commands sent so far.
    sent: u64,
    /// The last commands sent: where they stand among the events.
    marks: VecDeque<Mark>,
    /// The number of the last event the last `/jobs` looked at: the next
    /// one starts after it.
    jobs_end: u64,
    /// The last real figures of every job seen.
    known: Known,
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
            record: None,
            unit: Vec::new(),
            unsent: false,
            playback: VecDeque::new(),
            playing: false,
            play_path: String::new(),
            _tap: tap,
            live,
            recent: VecDeque::new(),
            latest: 0,
            looked: 0,
            sent: 0,
            marks: VecDeque::new(),
            jobs_end: 0,
            known: Known::default(),
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

    /// Run the next line of a `/play` file, if one is waiting and the
    /// engine takes input. Returns `true` when it ran one. At a terminal
    /// (live events), the line is shown after its prompt, as if typed.
    /// The file ends what it opened: a transaction or raw JSON message
    /// still open after its last line is abandoned, a failed command.
    pub fn play_next(&mut self) -> bool {
        if !self.wants_input() {
            return false;
        }
        let Some(line) = self.playback.pop_front() else {
            self.playing = false;
            return false;
        };
        if self.cfg.live_events {
            let prompt = if self.raw.is_some() {
                ""
            } else {
                self.prompt()
            };
            self.queue
                .push_back(Slot::Text(format!("{prompt}{line}\n")));
        }
        self.take_line(&line);
        if self.playback.is_empty() && self.playing {
            self.playing = false;
            self.unfinished(&format!("/play: {} ends", self.play_path));
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
        self.unit
            .push((!line.starts_with(' ')).then(|| line.to_owned()));
        self.unsent = false;
        self.run_line(line);
        if self.raw.as_ref().is_some_and(|raw| raw.too_long) {
            // A message refused for its size is not held, nor its lines.
            self.unit.clear();
        }
        if self.raw.is_none() && !self.in_transaction() {
            let sent = !self.unsent;
            self.unit_done(sent);
        }
    }

    /// The lines of the unit (see [`Engine::take_line`]) are done with:
    /// recorded as they are when `sent`, else as comments.
    fn unit_done(&mut self, sent: bool) {
        let lines = std::mem::take(&mut self.unit);
        if self.record.is_none() || lines.is_empty() {
            return;
        }
        let mut text = String::new();
        for line in lines {
            match line {
                None => text.push_str(HIDDEN_LINE),
                Some(line) if sent => text.push_str(&line),
                Some(line) => {
                    text.push_str("# not sent: ");
                    text.push_str(&line);
                }
            }
            text.push('\n');
        }
        self.write_record(&text);
    }

    /// Add `text` to the recording; a write error stops it, with a note.
    fn write_record(&mut self, text: &str) {
        let Some(rec) = self.record.as_mut() else {
            return;
        };
        let ok = rec
            .file
            .write_all(text.as_bytes())
            .and_then(|()| rec.file.flush());
        if let Err(err) = ok {
            self.queue.push_back(Slot::Note(format!(
                "ERROR: /record: cannot write to {}: {}; recording stopped\n",
                rec.path,
                python_io_error(&err)
            )));
            self.record = None;
        }
    }

    fn run_line(&mut self, line: &str) {
        if let Some(raw) = self.raw.as_mut() {
            raw.scan.feed(line);
            let overflow = !raw.too_long
                && (raw.text.len() + 1 + line.len() > MAX_RAW_JSON
                    || raw.scan.tokens() > MAX_RAW_JSON_TOKENS);
            if overflow {
                raw.too_long = true;
                raw.text = String::new();
            } else if !raw.too_long {
                raw.text.push('\n');
                raw.text.push_str(line);
            }
            let complete = !raw.scan.incomplete();
            if overflow {
                let text = raw_json_too_large();
                self.failure(format!("ERROR: {text}\n"), "ParseError", text);
            }
            if complete {
                match self.raw.take() {
                    Some(raw) if !raw.too_long => self.raw_json(&raw.text),
                    // Refused when it grew too long.
                    _ => self.unsent = true,
                }
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
                let mut scan = JsonScan::default();
                scan.feed(trimmed);
                if trimmed.len() > MAX_RAW_JSON || scan.tokens() > MAX_RAW_JSON_TOKENS {
                    let text = raw_json_too_large();
                    self.failure(format!("ERROR: {text}\n"), "ParseError", text);
                    if scan.incomplete() {
                        self.raw = Some(RawMessage {
                            text: String::new(),
                            scan,
                            too_long: true,
                        });
                    }
                } else if scan.incomplete() {
                    self.raw = Some(RawMessage {
                        text: trimmed.to_owned(),
                        scan,
                        too_long: false,
                    });
                } else {
                    self.raw_json(trimmed);
                }
                return;
            }
        } else if trimmed.starts_with('{') {
            return self.raw_in_transaction(trimmed);
        }
        self.shorthand(line);
    }

    /// `help [NAME]` (not for a guest agent, which has no schema): the
    /// name, empty for none.
    fn help_line<'a>(&self, trimmed: &'a str) -> Option<&'a str> {
        if self.cfg.guest_agent || !(trimmed == "help" || trimmed.starts_with("help ")) {
            return None;
        }
        Some(trimmed["help".len()..].trim())
    }

    /// A raw JSON message at the `TRANS>` prompt: refused (actions are
    /// written `TYPE [KEY=VALUE...]`), a failed command; the transaction
    /// stays open. A message over several lines is skipped to its end.
    fn raw_in_transaction(&mut self, trimmed: &str) {
        let mut scan = JsonScan::default();
        scan.feed(trimmed);
        if scan.incomplete() {
            // Skipped, not held: see `RawMessage`.
            self.raw = Some(RawMessage {
                text: String::new(),
                scan,
                too_long: true,
            });
        }
        let text = "raw JSON is not an action; the transaction stays open (write each \
                    action as TYPE [KEY=VALUE...], end it with a line \")\")"
            .to_owned();
        self.failure(format!("ERROR: {text}\n"), "GenericError", text);
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

    fn raw_json(&mut self, text: &str) {
        match serde_json::from_str::<Object>(text) {
            Ok(msg) => self.send(Request::new(msg), false),
            Err(err) => self.parse_error(&format!("not a JSON object: {err}")),
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
                self.unsent = true;
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
                    self.unsent = true;
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

    /// `help [NAME]`, from the schema; the shell's own commands too. At the
    /// `TRANS>` prompt, the transaction's actions first.
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
        // At `TRANS>`, the actions.
        let in_transaction = self.parser.in_transaction();
        let found = if in_transaction {
            schema.action_help(name)
        } else {
            schema.help(name)
        };
        match found {
            Some(mut text) => {
                if name.is_none() && !in_transaction {
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
                let what = if in_transaction {
                    "action, command or event"
                } else {
                    "command or event"
                };
                self.failure(
                    format!("help: no {what} named '{name}'\n"),
                    "GenericError",
                    format!("no {what} named '{name}'"),
                );
            }
        }
    }

    /// Send `request` (with `-v`, echoed first), unless `--read-only`
    /// refuses it.
    fn send(&mut self, request: Request, hmp: bool) {
        if !hmp {
            let msg = request.message();
            if self.read_only_refuses(msg) {
                return;
            }
            self.echo(msg);
            if !self.cfg.guest_agent {
                let name = msg
                    .get("execute")
                    .or_else(|| msg.get("exec-oob"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.warn_marked(name, msg.get("arguments").and_then(Value::as_object));
            }
        }
        // What came before this is not this command's.
        let before = self.live.numbered();
        match submit(&self.client, &self.live, &self.doorbell, request) {
            Ok(pending) => {
                self.sent += 1;
                self.marks.push_back(Mark {
                    index: self.sent,
                    sent: before,
                    answered: None,
                });
                while self.marks.len() > MAX_MARKS {
                    self.marks.pop_front();
                }
                self.queue.push_back(Slot::Reply {
                    pending: Awaited::Sent(pending),
                    hmp,
                    deadline: None,
                    index: Some(self.sent),
                })
            }
            Err(err) => self.client_failure(&err),
        }
    }

    /// Whether `--read-only` refuses the QMP command `msg`; if so, the
    /// refusal is queued. Asked before anything is done for the command.
    fn read_only_refuses(&mut self, msg: &Object) -> bool {
        if !self.cfg.read_only {
            return false;
        }
        match readonly::refused(msg, self.cfg.guest_agent) {
            Some(name) => {
                self.refuse(&name);
                true
            }
            None => false,
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
                self.unsent = true;
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
            Meta::Jobs { timeout } => {
                self.queue.push_back(Slot::Jobs(Box::new(Follow {
                    timeout,
                    deadline: None,
                    polls: None,
                    results: [None, None],
                    polled_after: None,
                    next_poll: None,
                    command: self.last_command(),
                    events_seen: None,
                    started: 0,
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
            command: self.last_command(),
            timeout,
            deadline: None,
        });
        self.barriers += 1;
    }

    /// The last command sent (`None`: none yet): events count for a
    /// `/wait` or `/jobs` from its sending on.
    fn last_command(&self) -> Option<u64> {
        (self.sent > 0).then_some(self.sent)
    }

    /// Command `index` got its reply (printed now), which came after
    /// what is numbered `after`.
    fn answered(&mut self, index: u64, after: u64) {
        // Also keeps `recent` short: what no `/wait` can need goes.
        self.drain_tap();
        if let Some(mark) = self.marks.iter_mut().find(|m| m.index == index) {
            mark.answered = Some(after);
        }
    }

    /// Where the events of a `/wait` or `/jobs` read after `command` (the
    /// last command sent) start: after those that came before `command`
    /// was sent, and before the reply to the command before it (with
    /// commands pipelined, `command` is sent before that reply, and the
    /// events before it are the earlier commands'). So an event counts
    /// when it came after `command` was sent, as if commands were sent one
    /// at a time. Returns the number of the last event that does not
    /// count.
    fn window_start(&self, command: Option<u64>) -> u64 {
        let Some(index) = command else { return 0 };
        let mark = |i: u64| self.marks.iter().find(|m| m.index == i);
        let sent = mark(index).map_or(0, |m| m.sent);
        let previous = index
            .checked_sub(1)
            .and_then(mark)
            .and_then(|m| m.answered)
            .unwrap_or(0);
        sent.max(previous)
    }

    /// Move the events that arrived into `recent` (each tells [`Known`]
    /// what it knows of jobs), and forget those that no `/wait` or `/jobs`
    /// can need any more: those from before the last command was sent.
    fn drain_tap(&mut self) {
        let (events, looked) = self.live.take_events();
        self.looked = looked;
        for (seq, event) in events {
            if let Some(name) = event.name() {
                self.known.event(name, event.body.get("data"));
            }
            self.latest = seq;
            self.recent.push_back(Recent {
                seq,
                event,
                consumed: false,
            });
        }
        let floor = self.marks.back().map_or(0, |m| m.sent);
        while self
            .recent
            .front()
            .is_some_and(|r| r.seq <= floor || self.recent.len() > MAX_RECENT_EVENTS)
        {
            self.recent.pop_front();
        }
    }

    fn meta_failure(&mut self, name: &str, text: String) {
        self.unsent = true;
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

    /// `/oob COMMAND ...`: only when out-of-band execution was negotiated
    /// and the schema allows it for the command.
    fn oob(&mut self, msg: Object) {
        if self.read_only_refuses(&msg) {
            return;
        }
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
        self.send(Request::new(msg), false);
    }

    /// `/fd [--read-only] PATH COMMAND ...`: the file opened with the
    /// user's rights and handed to QEMU with the command.
    fn fd(&mut self, read_only: bool, path: &str, command: Object) {
        // Before the file is opened (and maybe created).
        if self.read_only_refuses(&command) {
            return;
        }
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
        self.send(
            Request::new(command).with_fds(vec![OwnedFd::from(file)]),
            false,
        );
    }

    /// `/record [--append] FILE` or `/record off` (refused in a fan-out).
    /// A new recording starts with a header of comments. An existing file
    /// is refused unless `append`; if it cannot be opened, a recording
    /// going on goes on.
    fn start_record(&mut self, path: Option<&str>, append: bool) {
        if self.cfg.fan_out {
            // Every target would open the same file.
            let text = match path {
                Some(path) => format!(
                    "/record: not with several targets (each would write to {path}); \
                     record on one target, then /play the file on all"
                ),
                None => "/record: not with several targets".to_owned(),
            };
            self.unsent = true;
            return self.queue.push_back(Slot::FailureOnce {
                diag: format!("ERROR: {text}\n"),
                desc: text,
            });
        }
        let Some(path) = path else {
            self.record = None;
            return;
        };
        let how = if append {
            Existing::Append
        } else {
            Existing::Refuse
        };
        match open_private(Path::new(path), how) {
            Ok(file) => {
                self.record = Some(Recording {
                    file,
                    path: path.to_owned(),
                });
                let header = self.record_header();
                self.write_record(&header);
            }
            Err(err) => {
                let mut text = if err.kind() == io::ErrorKind::AlreadyExists {
                    let quoted = quote_word(path);
                    format!("{path} exists; to add to it: /record --append {quoted}")
                } else {
                    format!("cannot open {path}: {}", python_io_error(&err))
                };
                if let Some(rec) = &self.record {
                    text.push_str(&format!(" (still recording to {})", rec.path));
                }
                self.meta_failure("/record", text);
            }
        }
    }

    /// The comments that start a recording: when, which shell, which QEMU
    /// (its version, and the command line the wrap started it with), and
    /// whether the lines are HMP or guest agent commands.
    fn record_header(&self) -> String {
        let mut text = format!(
            "# qmp-shell {} recording, {}\n",
            env!("CARGO_PKG_VERSION"),
            utc_now()
        );
        let greeting = self.client.greeting();
        if let Some((major, minor, micro)) = greeting.and_then(|g| g.version()) {
            text.push_str(&format!("# QEMU {major}.{minor}.{micro}"));
            let package = greeting
                .and_then(|g| g.body.get("QMP"))
                .and_then(|q| q["version"]["package"].as_str())
                .map(str::trim)
                .unwrap_or_default();
            if !package.is_empty() {
                text.push_str(&format!(" ({package})"));
            }
            text.push('\n');
        }
        if let Some(argv) = &self.cfg.qemu_command {
            let words: Vec<String> = argv.iter().map(|w| quote_word(w)).collect();
            text.push_str(&format!("# QEMU command line: {}\n", words.join(" ")));
        }
        if let Some(line) = self.mode().header_line() {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// What this session's lines are: QMP, HMP or guest agent commands.
    fn mode(&self) -> meta::Mode {
        if self.cfg.hmp {
            meta::Mode::Hmp
        } else if self.cfg.guest_agent {
            meta::Mode::GuestAgent
        } else {
            meta::Mode::Qmp
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
        // A recording says what its lines are: played in another mode,
        // every line would fail, or worse.
        let mode = self.mode();
        if let Some(other) = meta::recorded_modes(&text).into_iter().find(|m| *m != mode) {
            return self.meta_failure("/play", format!("{path} holds {}", other.describe()));
        }
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        self.playing = !lines.is_empty();
        self.play_path = path.to_owned();
        self.playback.extend(lines);
    }

    /// Drop the rest of a `/play` file (Ctrl-C); returns how many lines.
    /// A transaction the file opened is abandoned.
    pub fn stop_playing(&mut self) -> usize {
        if std::mem::take(&mut self.playing) {
            self.abandon_transaction();
        }
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
        self.unsent = true;
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
                    if let Err(err) = self.notices(Some(self.looked)) {
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

    /// The `/wait` at the front: done (`true`) when its event came or its
    /// time is up.
    fn pump_wait(&mut self) -> bool {
        self.drain_tap();
        let command = match self.queue.front() {
            Some(Slot::Wait { command, .. }) => *command,
            _ => return false,
        };
        let after = self.window_start(command);
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
        let found = self.recent.iter_mut().find(|r| {
            r.seq > after
                && !r.consumed
                && r.event.name() == Some(event.as_str())
                && meta::matches(r.event.body.get("data"), filter)
        });
        let now = Instant::now();
        if let Some(r) = found {
            r.consumed = true;
            let (seq, body) = (r.seq, r.event.body.clone());
            let note = format!("(/wait: {event} came already, shown above)\n");
            self.pop_barrier();
            // At a terminal, what came before it first; and it is printed
            // once: as the answer, unless it was shown already (it came
            // before the `/wait` was read).
            let (before, unprinted) = self.live.take_event(seq);
            if let Err(err) = self.print_items(before) {
                self.output_failed(&err);
                return true;
            }
            if self.cfg.live_events && !unprinted {
                self.out.diag(&note);
            } else if let Err(err) = self.out.reply(body) {
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
        let start = match self.queue.front() {
            Some(Slot::Jobs(follow)) if follow.events_seen.is_none() => {
                Some(self.window_start(follow.command).max(self.jobs_end))
            }
            _ => None,
        };
        let latest = self.latest;
        let Some(Slot::Jobs(follow)) = self.queue.front_mut() else {
            return false;
        };
        if let Some(start) = start {
            follow.events_seen = Some(start);
            follow.started = latest;
        }
        // The poll in flight, if it is answered now, and where its replies
        // came among the events: those before are taken first (and at a
        // terminal printed first).
        let mut before = Vec::new();
        if let Some(polls) = follow.polls {
            for (i, (token, result)) in polls.iter().zip(follow.results.iter_mut()).enumerate() {
                if result.is_some() {
                    continue;
                }
                if let Some(taken) = self.live.take_reply(*token) {
                    before.extend(taken.before);
                    if i == 0 {
                        follow.polled_after = Some(taken.after);
                    }
                    *result = Some(taken.result);
                }
            }
        }
        let answered = match &follow.results {
            [Some(_), Some(_)] => follow.polled_after,
            _ => None,
        };
        self.drain_tap();
        if let Err(err) = self.print_items(before) {
            self.output_failed(&err);
            return true;
        }
        let Some(Slot::Jobs(follow)) = self.queue.front_mut() else {
            return false;
        };
        let mut job_event = follow_events(follow, &self.recent, answered, &self.known);
        let now = Instant::now();
        let mut lines = Vec::new();
        let mut done = false;
        if answered.is_some() {
            let [Some(ra), Some(rb)] = std::mem::take(&mut follow.results) else {
                unreachable!("both replies are in");
            };
            if matches!(ra, Err(QmpError::Disconnected)) {
                self.front_disconnected();
                return true;
            }
            let ret = |r: &Result<Reply, QmpError>| r.as_ref().ok().and_then(|r| r.ret().cloned());
            let changed = follow.progress.update(ret(&ra).as_ref(), ret(&rb).as_ref());
            for job in follow.progress.jobs() {
                self.known.remember(job);
            }
            follow.polls = None;
            follow.next_poll = now.checked_add(jobs::POLL_INTERVAL);
            // What came after the replies.
            job_event |= follow_events(follow, &self.recent, None, &self.known);
            match follow.bars.as_mut() {
                Some(bars) => bars.show(follow.progress.jobs()),
                None => lines.extend(changed.iter().map(|j| j.to_json())),
            }
            done = !follow.progress.running();
        }
        if let (None, Some(t)) = (follow.deadline, follow.timeout) {
            follow.deadline = now.checked_add(t);
        }
        if job_event && follow.polls.is_none() {
            follow.next_poll = None;
            done = false;
        }
        if !done && follow.polls.is_none() && follow.next_poll.is_none_or(|t| now >= t) {
            let q = |name| {
                let request = Request::new(qmp_client::command(name, None));
                submit(&self.client, &self.live, &self.doorbell, request)
            };
            match (q("query-jobs"), q("query-migrate")) {
                (Ok(a), Ok(b)) => {
                    follow.polls = Some([a, b]);
                    follow.results = [None, None];
                    follow.polled_after = None;
                }
                _ => {
                    self.front_disconnected();
                    return true;
                }
            }
        }
        let timed_out = !done && follow.deadline.is_some_and(|d| now >= d);
        if done || timed_out {
            let Some(Slot::Jobs(follow)) = self.pop_barrier() else {
                unreachable!("the front slot is /jobs");
            };
            let follow = *follow;
            follow.drop_polls(&self.live);
            self.jobs_end = follow.events_seen.unwrap_or(self.jobs_end);
            if let Some(bars) = follow.bars {
                bars.finish();
            }
            lines.push(follow.progress.final_json());
            // The events that came before the polls' replies, first.
            if let Err(err) = self.notices(None) {
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
            if let Err(err) = self.notices(None) {
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
                self.out.error(class, &desc, &diag);
                if self.cfg.json {
                    self.out.reply(error_object(class, &desc))?;
                }
                Ok(())
            }
            Slot::FailureOnce { diag, desc } => {
                self.failed();
                self.out.error_once("GenericError", &desc, &diag);
                if self.cfg.json {
                    self.out.reply(error_object("GenericError", &desc))?;
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
    /// before the replies still awaited, up to number `upto` (`None`: all).
    fn notices(&mut self, upto: Option<u64>) -> io::Result<()> {
        if !self.cfg.live_events {
            let items = if self.cfg.json {
                self.client.drain_incoming()
            } else {
                self.client.drain_notices()
            };
            for item in items {
                self.incoming(item)?;
            }
        }
        let items = self.live.take_printable(upto);
        self.print_items(items)
    }

    /// Print what arrived live, above the progress bars of a `/jobs` at
    /// the front, if any.
    fn print_items(&mut self, items: Vec<Item>) -> io::Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let above = match self.queue.front() {
            Some(Slot::Jobs(follow)) => follow.bars.as_ref().map(Bars::above),
            _ => None,
        };
        let print = || {
            for item in items {
                self.print_item(item)?;
            }
            self.out.flush()
        };
        match above {
            Some(above) => above.print(print),
            None => print(),
        }
    }

    /// Print what the client queued.
    fn incoming(&mut self, item: Incoming) -> io::Result<()> {
        self.print_item(match item {
            Incoming::Event(event) => Item::Event(event.body),
            Incoming::Warning(text) => Item::Warning(text),
            Incoming::LateReply(reply) => Item::LateReply(shown(reply)),
        })
    }

    /// Print an event, a warning or a late reply as it arrived (at a
    /// terminal as the line editor would).
    fn print_item(&mut self, item: Item) -> io::Result<()> {
        match item {
            Item::Event(body) => self.out.event(body),
            Item::LateReply(body) => {
                if self.cfg.json {
                    // Standard output stays JSON Lines.
                    self.out
                        .diag(&format!("{}\n", LATE_REPLY.trim_end_matches(' ')));
                } else {
                    self.out.text(LATE_REPLY)?;
                }
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
                    if let Awaited::Sent(token) = pending {
                        self.live.abandon(token, true);
                        abandoned += 1;
                    }
                }
                Slot::Barrier => {}
                Slot::Wait { event, .. } => stopped = Some(format!("stopped waiting for {event}")),
                Slot::Jobs(follow) => {
                    follow.drop_polls(&self.live);
                    if let Some(seen) = follow.events_seen {
                        self.jobs_end = seen;
                    }
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

/// What `/record` writes to.
struct Recording {
    file: File,
    /// As the user gave it, for messages.
    path: String,
}

/// What a recording holds for a line that starts with a space.
const HIDDEN_LINE: &str = "# (a line starting with a space: kept out of the recording)";

/// `word` as the shell's tokenizer reads it back: in double quotes (with
/// `\\` and `\"` escaped) if it has blanks or quotes, else as it is. Also
/// readable by a POSIX shell for the usual words.
fn quote_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_alphanumeric() || "-_./=:,@%+^".contains(c));
    if plain {
        return word.to_owned();
    }
    let mut quoted = String::from("\"");
    for c in word.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// The time now, UTC: `2025-06-01 12:34:56 UTC`.
fn utc_now() -> String {
    utc_time(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// `secs` after the Unix epoch, UTC: `2025-06-01 12:34:56 UTC`.
fn utc_time(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

/// Let `follow` take the events it has not looked at yet, up to number
/// `upto` (all with `None`). Returns whether one told about a job (then a
/// poll is due at once).
fn follow_events(
    follow: &mut Follow,
    recent: &VecDeque<Recent>,
    upto: Option<u64>,
    known: &Known,
) -> bool {
    let mut job_event = false;
    let from = follow.events_seen.unwrap_or(0);
    for r in recent
        .iter()
        .filter(|r| r.seq > from && upto.is_none_or(|u| r.seq <= u))
    {
        follow.events_seen = Some(r.seq);
        let Some(name) = r.event.name() else { continue };
        let live = r.seq > follow.started;
        follow
            .progress
            .event(name, r.event.body.get("data"), live, known);
        job_event |= jobs::JOB_EVENTS.contains(&name);
    }
    job_event
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
    Awaited::Ready(Some(Ok(Reply {
        body,
        assigned_id: false,
    })))
}

/// A reply already failed with [`QmpError::Disconnected`].
fn ready_err() -> Awaited {
    Awaited::Ready(Some(Err(QmpError::Disconnected)))
}

/// Queue `request` on `client`; its reply (or the error that ends the
/// wait) is delivered to `live` on the client's reader thread, in the
/// order of the wire, under the token returned, and rings `bell`.
fn submit(
    client: &Client,
    live: &Arc<Live>,
    bell: &Arc<Doorbell>,
    request: Request,
) -> Result<u64, QmpError> {
    let token = live.token();
    let (live, bell) = (Arc::clone(live), Arc::clone(bell));
    client.submit_with(request, move |result| {
        live.arrived(token, result);
        bell.ring();
    })?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shorthand::{tokenize, unquote};

    #[test]
    fn quoted_words_read_back_as_one_token() {
        assert_eq!(quote_word("/tmp/a-b_c.qmp"), "/tmp/a-b_c.qmp");
        assert_eq!(quote_word("my file"), "\"my file\"");
        for word in ["my file", "a\"b", "back\\slash", "$HOME `x`", "it's", ""] {
            let quoted = quote_word(word);
            let tokens = tokenize(&format!("/record --append {quoted}"));
            assert_eq!(tokens.len(), 3, "{word:?}: {tokens:?}");
            assert_eq!(unquote(&tokens[2]), word, "{quoted}");
        }
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_time(1_748_781_296), "2025-06-01 12:34:56 UTC");
        assert_eq!(utc_time(4_102_444_799), "2099-12-31 23:59:59 UTC");
    }
}
