//! What arrives from the server, numbered in the order of the wire: the
//! events, and the replies to the session engine's own commands.
//!
//! The replies are delivered on the client's reader thread
//! ([`Client::submit_with`](qmp_client::Client::submit_with)), as the
//! events are tapped, and [`Live`] stamps each with the number of the last
//! thing that came before it ([`Live::arrived`]). So the engine knows
//! exactly where each reply came among the events, whatever the threads'
//! timing: in every session for the events of `/wait` and `/jobs` ("since
//! the previous command was sent"), and at a terminal to print each reply
//! after exactly the events that came before it ([`Live::take_reply`]).
//!
//! At a terminal, events (with warnings and late replies) are also kept
//! until printed, and two parties write to the screen: the session engine,
//! on the main thread, while it runs commands (their replies, notes,
//! errors), and the line editor while it waits for a line (rustyline prints
//! above the half-typed line and redraws it). Never both at once: the
//! screen belongs to the editor from the moment it has drawn its prompt
//! (see [`Live::editor`]) until it returns a line, and to the engine
//! otherwise.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};

use qmp_client::{Error as QmpError, Event, Object, Reply};
use serde_json::Value;

use crate::render::{self, Style};
use crate::wording::{counted, shown};

/// Events kept at most in each of the queues (those the engine did not
/// take yet, those not printed yet, say with the terminal stopped by
/// Ctrl-S); beyond that the oldest are dropped (unprinted ones counted).
pub const MAX_EVENTS: usize = 100_000;

/// Something to print as it arrives (at a terminal).
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// An event.
    Event(Object),
    /// The reply to a command the user abandoned (Ctrl-C), as shown.
    LateReply(Object),
    /// Something unexpected from the server or the client.
    Warning(String),
}

/// Text before a late reply.
pub const LATE_REPLY: &str = "late reply (the command was abandoned): ";

impl Item {
    /// The item as printed: one line (or several, with `-p`) ending with a
    /// newline.
    pub fn render(&self, style: Style) -> String {
        let mut text = match self {
            Item::Event(body) => render::to_string(&Value::Object(body.clone()), style),
            Item::LateReply(body) => format!(
                "{LATE_REPLY}{}",
                render::to_string(&Value::Object(body.clone()), style)
            ),
            Item::Warning(text) => format!("warning: {text}"),
        };
        text.push('\n');
        text
    }
}

/// A reply taken with [`Live::take_reply`].
#[derive(Debug)]
pub struct Taken {
    /// What came before it and was not printed yet (at a terminal): print
    /// it first.
    pub before: Vec<Item>,
    /// The reply, or the error that ended the wait.
    pub result: Result<Reply, QmpError>,
    /// The number of the last thing that came before it.
    pub after: u64,
}

/// A reply that arrived and was not taken yet.
struct Arrived {
    result: Result<Reply, QmpError>,
    /// The number of the last thing that arrived before it.
    after: u64,
}

#[derive(Default)]
struct State {
    /// Numbers given so far.
    numbered: u64,
    /// Events the engine did not take yet, with their numbers.
    events: VecDeque<(u64, Event)>,
    /// Whether events are kept to be printed (a terminal).
    prints: bool,
    /// Not printed yet, oldest first, each with its number.
    items: VecDeque<(u64, Item)>,
    /// Events among `items`.
    unprinted_events: usize,
    /// Events dropped from `items` since the last warning about it.
    dropped: u64,
    /// Replies that arrived and were not taken, by token.
    replies: HashMap<u64, Arrived>,
    /// Tokens of replies nobody waits for any more, with whether to show
    /// them as late replies.
    abandoned: HashMap<u64, bool>,
    next_token: u64,
    /// The line editor owns the screen.
    editor: bool,
    /// The connection is gone: nothing more arrives.
    closed: bool,
}

impl State {
    fn event(&mut self, event: &Event) {
        self.numbered += 1;
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back((self.numbered, event.clone()));
        if self.prints {
            if self.unprinted_events >= MAX_EVENTS {
                if let Some(at) = self
                    .items
                    .iter()
                    .position(|(_, i)| matches!(i, Item::Event(_)))
                {
                    self.items.remove(at);
                    self.unprinted_events -= 1;
                    self.dropped += 1;
                }
            }
            self.unprinted_events += 1;
            let item = Item::Event(event.body.clone());
            self.items.push_back((self.numbered, item));
        }
    }

    fn push(&mut self, item: Item) {
        self.numbered += 1;
        self.items.push_back((self.numbered, item));
    }

    /// The number of the last item that may be printed now: before every
    /// reply that arrived and was not taken yet (`None`: no limit).
    fn limit(&self) -> Option<u64> {
        self.replies.values().map(|a| a.after).min()
    }

    /// Take the items numbered up to `last` (all with `None`), with a
    /// warning first if events were dropped.
    fn take_until(&mut self, last: Option<u64>) -> Vec<Item> {
        let mut out = Vec::new();
        if self.dropped > 0 {
            let n = std::mem::take(&mut self.dropped);
            out.push(Item::Warning(format!(
                "{} dropped (more than {MAX_EVENTS} waiting to be printed)",
                counted(n as usize, "older event was", "older events were")
            )));
        }
        while self
            .items
            .front()
            .is_some_and(|(n, _)| last.is_none_or(|last| *n <= last))
        {
            if let Some((_, item)) = self.items.pop_front() {
                if matches!(item, Item::Event(_)) {
                    self.unprinted_events -= 1;
                }
                out.push(item);
            }
        }
        out
    }
}

/// What arrived; see the module documentation.
#[derive(Default)]
pub struct Live {
    state: Mutex<State>,
    cond: Condvar,
}

impl Live {
    /// Nothing arrived yet. `prints`: events are kept to be printed as
    /// they come (a terminal); the engine owns the screen.
    pub fn new(prints: bool) -> Live {
        let live = Live::default();
        live.lock().prints = prints;
        live
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An event arrived (on the client's reader thread, from a tap: in the
    /// order of the wire).
    pub fn event(&self, event: &Event) {
        self.lock().event(event);
        self.cond.notify_all();
    }

    /// Something else to print arrived (a warning, a late reply).
    pub fn push(&self, item: Item) {
        self.lock().push(item);
        self.cond.notify_all();
    }

    /// The number of the last thing that arrived: what comes later gets a
    /// higher number.
    pub fn numbered(&self) -> u64 {
        self.lock().numbered
    }

    /// The events the engine did not take yet, with their numbers, oldest
    /// first, and the number of the last thing that arrived so far (what
    /// comes later is numbered higher).
    pub fn take_events(&self) -> (Vec<(u64, Event)>, u64) {
        let mut st = self.lock();
        (st.events.drain(..).collect(), st.numbered)
    }

    /// A token for a command about to be sent: its reply is delivered with
    /// [`arrived`](Live::arrived) and taken with
    /// [`take_reply`](Live::take_reply).
    pub fn token(&self) -> u64 {
        let mut st = self.lock();
        st.next_token += 1;
        st.next_token
    }

    /// The reply for `token` arrived: on the client's reader thread, right
    /// after the events that preceded it. The reply to an abandoned command
    /// becomes a late reply (an error, such as the connection lost, is
    /// dropped: the session says so anyway).
    pub fn arrived(&self, token: u64, result: Result<Reply, QmpError>) {
        let mut st = self.lock();
        if let Some(report) = st.abandoned.remove(&token) {
            if let (Ok(reply), true) = (result, report) {
                st.push(Item::LateReply(shown(reply)));
                drop(st);
                self.cond.notify_all();
            }
            return;
        }
        let after = st.numbered;
        st.replies.insert(token, Arrived { result, after });
    }

    /// The reply for `token`, if it arrived, with what came before it and
    /// was not printed yet.
    pub fn take_reply(&self, token: u64) -> Option<Taken> {
        let mut st = self.lock();
        let Arrived { result, after } = st.replies.remove(&token)?;
        let before = st.take_until(Some(after));
        Some(Taken {
            before,
            result,
            after,
        })
    }

    /// The items that may be printed now (those before every reply not
    /// taken yet), up to number `upto` (`None`: all of them).
    pub fn take_printable(&self, upto: Option<u64>) -> Vec<Item> {
        let mut st = self.lock();
        if st.items.is_empty() && st.dropped == 0 {
            // Without a terminal, the usual case: nothing to print.
            return Vec::new();
        }
        let limit = match (st.limit(), upto) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        st.take_until(limit)
    }

    /// For printing event number `seq` now: the items that came before it
    /// and may be printed, and the event itself if it was not printed yet
    /// (then it is taken, not to be printed again).
    pub fn take_event(&self, seq: u64) -> (Vec<Item>, bool) {
        let mut st = self.lock();
        let limit = st.limit().map_or(seq - 1, |l| l.min(seq - 1));
        let before = st.take_until(Some(limit));
        let at = st
            .items
            .iter()
            .position(|(n, i)| *n == seq && matches!(i, Item::Event(_)));
        if let Some(at) = at {
            st.items.remove(at);
            st.unprinted_events -= 1;
        }
        (before, at.is_some())
    }

    /// Nobody waits for the reply of `token` any more: with `report`, when
    /// it comes (or if it came already) it is a late reply, printed in its
    /// place; else it is dropped.
    pub fn abandon(&self, token: u64, report: bool) {
        let mut st = self.lock();
        match st.replies.remove(&token) {
            Some(Arrived {
                result: Ok(reply),
                after,
            }) if report => {
                // In its place among the items: after those before it.
                let at = st.items.partition_point(|(n, _)| *n <= after);
                st.items.insert(at, (after, Item::LateReply(shown(reply))));
                drop(st);
                self.cond.notify_all();
            }
            Some(_) => {}
            None => {
                st.abandoned.insert(token, report);
            }
        }
    }

    /// The line editor owns the screen (`true`: it has drawn its prompt and
    /// prints what arrives above the line) or gives it back (`false`:
    /// returning a line). Once this returns `false`, nothing more is taken
    /// for the editor (what was taken just before may still be on its way
    /// to the screen: it came before anything the engine prints next).
    pub fn editor(&self, owns: bool) {
        self.lock().editor = owns;
        self.cond.notify_all();
    }

    /// Nothing more will arrive (the connection is gone).
    pub fn close(&self) {
        self.lock().closed = true;
        self.cond.notify_all();
    }

    /// Hand what arrives to `print`, all that is there at a time, while
    /// the line editor owns the screen, until [`close`](Live::close).
    /// `print` runs unlocked (rustyline's printer may block until the
    /// editor has taken the previous message); it returns `false` when
    /// printing failed (nothing more is printed then).
    pub fn serve_editor(&self, mut print: impl FnMut(Vec<Item>) -> bool) {
        loop {
            let items = {
                let mut st = self.lock();
                loop {
                    if st.closed {
                        return;
                    }
                    let items = if st.editor {
                        let limit = st.limit();
                        st.take_until(limit)
                    } else {
                        Vec::new()
                    };
                    if !items.is_empty() {
                        break items;
                    }
                    st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            };
            if !print(items) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> Event {
        let mut body = Object::new();
        body.insert("event".to_owned(), Value::from(name));
        Event { body }
    }

    fn item(name: &str) -> Item {
        Item::Event(event(name).body)
    }

    fn reply(n: i64) -> Result<Reply, QmpError> {
        let mut body = Object::new();
        body.insert("return".to_owned(), Value::from(n));
        Ok(Reply::new(body, true))
    }

    #[test]
    fn a_reply_comes_after_the_events_before_it_and_before_those_after() {
        let live = Live::new(true);
        let (a, b) = (live.token(), live.token());
        live.event(&event("STOP"));
        live.arrived(a, reply(1));
        live.event(&event("RESUME"));
        live.arrived(b, reply(2));
        live.event(&event("RESET"));
        // Nothing after the first reply is printable before it is.
        assert_eq!(live.take_printable(None), vec![item("STOP")]);
        let taken = live.take_reply(a).unwrap();
        assert!(taken.before.is_empty());
        assert_eq!(taken.after, 1);
        assert_eq!(taken.result.unwrap().body["return"], 1);
        let taken = live.take_reply(b).unwrap();
        assert_eq!(taken.before, vec![item("RESUME")]);
        assert_eq!(taken.after, 2);
        assert_eq!(live.take_printable(None), vec![item("RESET")]);
        assert!(live.take_reply(b).is_none());
        // The engine gets every event, numbered, whether printed or not.
        let (events, upto) = live.take_events();
        let numbers: Vec<u64> = events.iter().map(|(n, _)| *n).collect();
        assert_eq!((numbers, upto), (vec![1, 2, 3], 3));
        assert!(live.take_events().0.is_empty());
    }

    #[test]
    fn without_a_terminal_events_are_numbered_not_kept_to_print() {
        let live = Live::new(false);
        let a = live.token();
        live.event(&event("STOP"));
        live.arrived(a, reply(1));
        live.event(&event("RESUME"));
        let taken = live.take_reply(a).unwrap();
        assert!(taken.before.is_empty());
        assert_eq!(taken.after, 1);
        assert!(live.take_printable(None).is_empty());
        assert_eq!(live.take_events().0.len(), 2);
        assert_eq!(live.numbered(), 2);
    }

    #[test]
    fn an_event_taken_to_be_printed_now_is_not_printed_again() {
        let live = Live::new(true);
        live.event(&event("A"));
        live.event(&event("B"));
        live.event(&event("C"));
        live.push(Item::Warning("w".to_owned()));
        assert_eq!(live.take_event(2), (vec![item("A")], true));
        // Up to a number: what came after waits.
        assert_eq!(live.take_printable(Some(3)), vec![item("C")]);
        assert_eq!(
            live.take_printable(None),
            vec![Item::Warning("w".to_owned())]
        );
        // Printed already: only what came before it.
        assert_eq!(live.take_event(3), (vec![], false));
    }

    #[test]
    fn an_abandoned_reply_is_late_in_its_place() {
        let live = Live::new(true);
        let (a, b, quiet) = (live.token(), live.token(), live.token());
        live.abandon(a, true);
        live.abandon(quiet, false);
        live.event(&event("STOP"));
        live.arrived(quiet, reply(0));
        live.arrived(a, reply(1));
        live.event(&event("RESUME"));
        // Arrived already when abandoned: in its place too.
        live.arrived(b, reply(2));
        live.event(&event("RESET"));
        live.abandon(b, true);
        let late = |n: i64| Item::LateReply(shown(reply(n).unwrap()));
        assert_eq!(
            live.take_printable(None),
            vec![
                item("STOP"),
                late(1),
                item("RESUME"),
                late(2),
                item("RESET")
            ]
        );
        // A late error is not shown.
        let c = live.token();
        live.abandon(c, true);
        live.arrived(c, Err(QmpError::Disconnected));
        // One dropped after it came.
        let d = live.token();
        live.arrived(d, reply(4));
        live.abandon(d, false);
        assert!(live.take_printable(None).is_empty());
    }

    #[test]
    fn events_beyond_the_bound_drop_the_oldest_with_a_warning() {
        let live = Live::new(true);
        for _ in 0..MAX_EVENTS + 2 {
            live.event(&event("X"));
        }
        let items = live.take_printable(None);
        assert_eq!(items.len(), MAX_EVENTS + 1);
        assert_eq!(
            items[0],
            Item::Warning(format!(
                "2 older events were dropped (more than {MAX_EVENTS} waiting to be printed)"
            ))
        );
        let (events, _) = live.take_events();
        assert_eq!(events.len(), MAX_EVENTS);
        assert_eq!(events[0].0, 3);
    }
}
