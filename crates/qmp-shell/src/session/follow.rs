//! `/jobs [--timeout S]`: following the VM's jobs (block jobs, migration)
//! until none runs, as JSON lines or, at a terminal, progress bars.
//!
//! It polls `query-jobs` and `query-migrate` every
//! [`jobs::POLL_INTERVAL`], and at once when an event tells of a job; what
//! it knows of each job ([`Known`]) outlives it, for the next `/jobs`.

use std::time::{Duration, Instant};

use qmp_client::{Error as QmpError, Reply, Request};

use super::events::Recent;
use super::send::submit;
use super::{meta_error, Engine, Slot};
use crate::jobs::{self, Bars, Known, Progress};
use crate::live::Live;

/// What `/jobs` keeps between one `/jobs` and the next.
#[derive(Default)]
pub(super) struct JobsState {
    /// The number of the last event the last `/jobs` looked at: the next
    /// one starts after it.
    end: u64,
    /// The last real figures of every job seen.
    pub(super) known: Known,
}

/// The state of a `/jobs`.
pub(super) struct Follow {
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
    pub(super) bars: Option<Bars>,
}

impl JobsState {
    /// `follow` stops (done, timed out or abandoned): the replies to the
    /// poll in flight, if any, are dropped, its bars end, and the next
    /// `/jobs` starts after the events it looked at.
    pub(super) fn ended(&mut self, follow: &mut Follow, live: &Live) {
        for (token, result) in follow.polls.iter().flatten().zip(&follow.results) {
            if result.is_none() {
                live.abandon(*token, false);
            }
        }
        self.end = follow.events_seen.unwrap_or(self.end);
        if let Some(bars) = follow.bars.take() {
            bars.finish();
        }
    }
}

impl Follow {
    /// When the engine must look at this `/jobs` again, replies aside: its
    /// time is up, or the next poll is due (not while one is in flight:
    /// its replies ring).
    pub(super) fn wake_at(&self) -> Option<Instant> {
        let poll = self.next_poll.filter(|_| self.polls.is_none());
        match (self.deadline, poll) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Engine {
    /// `/jobs`: a barrier until no job runs any more.
    pub(super) fn follow_jobs(&mut self, timeout: Option<Duration>) {
        self.queue.push_back(Slot::Jobs(Box::new(Follow {
            timeout,
            deadline: None,
            polls: None,
            results: [None, None],
            polled_after: None,
            next_poll: None,
            command: self.events.last_command(),
            events_seen: None,
            started: 0,
            progress: Progress::new(),
            bars: self.cfg.progress_bars.then(Bars::new),
        })));
        self.barriers += 1;
    }

    /// The `/jobs` at the front: poll, print what changed, done (`true`)
    /// when nothing runs any more or its time is up.
    pub(super) fn pump_jobs(&mut self) -> bool {
        self.drain_tap();
        let start = match self.queue.front() {
            Some(Slot::Jobs(follow)) if follow.events_seen.is_none() => {
                Some(self.events.window_start(follow.command).max(self.jobs.end))
            }
            _ => None,
        };
        let latest = self.events.latest;
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
        let mut job_event = follow_events(follow, &self.events.recent, answered, &self.jobs.known);
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
                self.jobs.known.remember(job);
            }
            follow.polls = None;
            follow.next_poll = now.checked_add(jobs::POLL_INTERVAL);
            // What came after the replies.
            job_event |= follow_events(follow, &self.events.recent, None, &self.jobs.known);
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
            let Some(Slot::Jobs(mut follow)) = self.pop_barrier() else {
                unreachable!("the front slot is /jobs");
            };
            self.jobs.ended(&mut follow, &self.live);
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
}

/// Let `follow` take the events it has not looked at yet, up to number
/// `upto` (all with `None`). Returns whether one told about a job (then a
/// poll is due at once).
fn follow_events(
    follow: &mut Follow,
    recent: &std::collections::VecDeque<Recent>,
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
