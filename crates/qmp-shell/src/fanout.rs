//! One command, many VMs: the same lines run on every target, concurrently,
//! with tagged output.
//!
//! No engine of its own: each target gets the ordinary session engine
//! ([`Engine`], run by [`script::run`]) on its own connection, with a
//! [`TaggedOutput`] that prefixes its lines (`TARGET: `) or adds
//! `"target"` to its JSON objects. At most `jobs` targets are served at
//! once. The exit status sums them up: 1 when a target could not be
//! reached or went away, else 3 when a command failed somewhere, else 0;
//! a one-line summary goes to standard error.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::thread;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use qmp_client::{Client, Object};
use serde_json::Value;

use crate::cli::exit;
use crate::doorbell::Doorbell;
use crate::output::{Output, SharedStreams, TaggedOutput};
use crate::render::{self, Style};
use crate::script;
use crate::session::{Config, Engine};
use crate::signals;
use crate::wording::counted;

/// A progress bar is drawn (on a terminal) for more targets than this.
const BAR_FROM: usize = 5;

/// How to reach one target: the client, and a notice for standard error
/// (libvirt's taint), or the one-line reason it failed.
pub type Connect = Box<dyn FnOnce() -> Result<(Client, Option<String>), String> + Send>;

/// One VM to run the commands on.
pub struct Target {
    /// How its output is tagged: the address, or the domain name.
    pub label: String,
    /// Connect to it (the error is the one-line reason).
    pub connect: Connect,
}

/// What happened on one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Every command answered without error.
    Answered,
    /// Some command failed (an error reply, a line that did not parse).
    Failed,
    /// Could not connect, or the connection was lost (or timed out).
    Unreachable,
    /// Ended by a signal.
    Interrupted(i32),
    /// Ended because standard output could not be written.
    Stopped,
}

/// Run `lines` on every target and return the exit status.
pub fn run(
    targets: Vec<Target>,
    lines: Vec<Result<String, String>>,
    cfg: Config,
    style: Style,
    jobs: usize,
) -> i32 {
    let streams = SharedStreams::stdio();
    let total = targets.len();
    let queue = Arc::new(Mutex::new(targets.into_iter().collect::<VecDeque<_>>()));
    let outcomes = Arc::new(Mutex::new(Vec::with_capacity(total)));
    // With --json, standard error is JSON lines: no bar.
    let bar = (total > BAR_FROM && !cfg.json && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} {bar:30.cyan/blue} {pos}/{len} targets done ({elapsed})",
        ) {
            bar.set_style(style);
        }
        // Redrawn while a slow target keeps it still, so it shows the
        // latest count and that the shell is alive.
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        // The bar fills the line: a `^C` echoed after it would wrap onto
        // a line of its own, where clearing the bar would not reach it.
        signals::echo_off(signals::Quiet::ControlKeys);
        bar
    });
    streams.set_bar(bar.clone());
    let lines = Arc::new(lines);
    let workers: Vec<_> = (0..jobs.clamp(1, total.max(1)))
        .filter_map(|i| {
            let queue = Arc::clone(&queue);
            let outcomes = Arc::clone(&outcomes);
            let streams = Arc::clone(&streams);
            let lines = Arc::clone(&lines);
            let cfg = cfg.clone();
            let bar = bar.clone();
            thread::Builder::new()
                .name(format!("target-{i}"))
                .spawn(move || loop {
                    if signals::terminating().is_some() || streams.output_error().is_some() {
                        return;
                    }
                    let Some(target) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
                    else {
                        return;
                    };
                    let outcome = serve(target, lines.to_vec(), &cfg, style, &streams);
                    outcomes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(outcome);
                    if let Some(bar) = &bar {
                        bar.inc(1);
                    }
                })
                .ok()
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
        signals::echo_on();
    }
    streams.set_bar(None);
    let outcomes = outcomes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let count = |o: Outcome| outcomes.iter().filter(|x| **x == o).count();
    let (answered, failed, unreachable) = (
        count(Outcome::Answered),
        count(Outcome::Failed),
        count(Outcome::Unreachable),
    );
    let interrupted = outcomes.iter().find_map(|o| match o {
        Outcome::Interrupted(code) => Some(*code),
        _ => None,
    });
    let interrupted_count = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Interrupted(_)))
        .count();
    let not_run = total - outcomes.len();
    let mut summary = format!(
        "qmp-shell: {}: {answered} answered, {failed} with failed commands, \
         {unreachable} unreachable or lost",
        counted(total, "target", "targets")
    );
    if interrupted_count > 0 {
        summary.push_str(&format!(", {interrupted_count} interrupted"));
    }
    let output_error = streams.output_error();
    let stopped = count(Outcome::Stopped) + not_run;
    match &output_error {
        Some((kind, text)) => {
            let why = stop_reason(*kind, text);
            summary.push_str(&format!(", {stopped} stopped ({why})"));
        }
        None if not_run > 0 => summary.push_str(&format!(", {not_run} not run")),
        None => {}
    }
    summary.push('\n');
    if cfg.json {
        // The same figures, as one JSON line.
        let mut counts = Object::new();
        let (stopped, not_run) = match output_error {
            Some(_) => (stopped, 0),
            None => (0, not_run),
        };
        for (key, n) in [
            ("targets", total),
            ("answered", answered),
            ("failed", failed),
            ("unreachable", unreachable),
            ("interrupted", interrupted_count),
            ("stopped", stopped),
            ("not-run", not_run),
        ] {
            counts.insert(key.to_owned(), Value::from(n));
        }
        if let Some((kind, text)) = &output_error {
            counts.insert("why".to_owned(), Value::from(stop_reason(*kind, text)));
        }
        let mut obj = Object::new();
        obj.insert("summary".to_owned(), Value::Object(counts));
        summary = render::to_string(&Value::Object(obj), Style::default());
        summary.push('\n');
    }
    streams.write_err(summary.as_bytes());
    if let Some(code) = interrupted.or(signals::terminating().map(|s| 128 + s)) {
        code
    } else if unreachable > 0 || output_error.is_some() {
        exit::FATAL
    } else if failed > 0 {
        exit::COMMAND_FAILED
    } else {
        exit::OK
    }
}

/// Why targets were stopped: standard output could not be written.
fn stop_reason(kind: std::io::ErrorKind, text: &str) -> String {
    if kind == std::io::ErrorKind::BrokenPipe {
        "standard output closed".to_owned()
    } else {
        format!("cannot write to standard output: {text}")
    }
}

/// Connect to one target and run the lines on it.
fn serve(
    target: Target,
    lines: Vec<Result<String, String>>,
    cfg: &Config,
    style: Style,
    streams: &Arc<SharedStreams>,
) -> Outcome {
    let mut out = TaggedOutput::new(Arc::clone(streams), &target.label, style, cfg.json);
    let Some(connected) = signals::unless_terminated(target.connect) else {
        return Outcome::Interrupted(128 + signals::terminating().unwrap_or(libc::SIGINT));
    };
    let client = match connected {
        Ok((client, notice)) => {
            if let Some(notice) = notice {
                out.diag(&format!("{notice}\n"));
            }
            Arc::new(client)
        }
        Err(msg) => {
            let _ = out.tagged_error("ConnectError", &msg);
            return Outcome::Unreachable;
        }
    };
    let engine = Engine::new(
        Arc::clone(&client),
        cfg.clone(),
        Box::new(out),
        Arc::new(Doorbell::new()),
    );
    let lines: script::Lines = Box::new(lines.into_iter());
    let code = script::run(engine, lines);
    client.close();
    match code {
        exit::OK => Outcome::Answered,
        exit::COMMAND_FAILED => Outcome::Failed,
        exit::FATAL if streams.output_error().is_some() => Outcome::Stopped,
        exit::FATAL => Outcome::Unreachable,
        other => Outcome::Interrupted(other),
    }
}
