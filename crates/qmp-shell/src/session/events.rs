//! The events a `/wait` or `/jobs` may look at, and where each command sent
//! stands among them.
//!
//! Everything that arrives is numbered in the order of the wire
//! ([`Live::numbered`]). A `/wait` or `/jobs` counts the events that came
//! after the last command before it was sent, as if commands were sent one
//! at a time ([`EventLog::window_start`]); this log keeps those events and
//! the marks that say where each command stands.

use std::collections::VecDeque;

use qmp_client::Event;

use super::Engine;
use crate::jobs::Known;
use crate::live::Live;

/// Events kept for `/wait` at most (those since the last command sent).
const MAX_RECENT_EVENTS: usize = 100_000;

/// Commands whose marks (see [`Mark`]) are kept.
const MAX_MARKS: usize = 64;

/// An event kept for `/wait` and `/jobs`.
pub(super) struct Recent {
    pub(super) seq: u64,
    pub(super) event: Event,
    /// A `/wait` returned it: no later `/wait` does.
    pub(super) consumed: bool,
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

/// Recent events, numbered, and the marks of the last commands sent.
#[derive(Default)]
pub(super) struct EventLog {
    /// Recent events, numbered.
    pub(super) recent: VecDeque<Recent>,
    /// The number of the last event taken from [`Live`].
    pub(super) latest: u64,
    /// The number of the last thing that had arrived when events were last
    /// taken from [`Live`]: every event up to it is in `recent`.
    pub(super) looked: u64,
    /// Commands sent so far.
    sent: u64,
    /// The last commands sent: where they stand among the events.
    marks: VecDeque<Mark>,
}

impl EventLog {
    /// A command was sent when what arrived last was numbered `before`;
    /// returns the command's number.
    pub(super) fn sent(&mut self, before: u64) -> u64 {
        self.sent += 1;
        self.marks.push_back(Mark {
            index: self.sent,
            sent: before,
            answered: None,
        });
        while self.marks.len() > MAX_MARKS {
            self.marks.pop_front();
        }
        self.sent
    }

    /// The last command sent (`None`: none yet): events count for a
    /// `/wait` or `/jobs` from its sending on.
    pub(super) fn last_command(&self) -> Option<u64> {
        (self.sent > 0).then_some(self.sent)
    }

    /// Command `index` got its reply, which came after what is numbered
    /// `after`.
    pub(super) fn answered(&mut self, index: u64, after: u64) {
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
    pub(super) fn window_start(&self, command: Option<u64>) -> u64 {
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

    /// Move the events that arrived into `recent` (each tells `known`
    /// what it knows of jobs), and forget those that no `/wait` or `/jobs`
    /// can need any more: those from before the last command was sent.
    pub(super) fn take(&mut self, live: &Live, known: &mut Known) {
        let (events, looked) = live.take_events();
        self.looked = looked;
        for (seq, event) in events {
            if let Some(name) = event.name() {
                known.event(name, event.body.get("data"));
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
}

impl Engine {
    /// Command `index` got its reply (printed now), which came after
    /// what is numbered `after`.
    pub(super) fn answered(&mut self, index: u64, after: u64) {
        // Also keeps `recent` short: what no `/wait` can need goes.
        self.drain_tap();
        self.events.answered(index, after);
    }

    /// Take the events that arrived from [`Live`] (see [`EventLog::take`]).
    pub(super) fn drain_tap(&mut self) {
        self.events.take(&self.live, &mut self.jobs.known);
    }
}
