//! What a terminal session prints the moment it arrives (events, late
//! replies, warnings), in the order of the wire, and who prints it.
//!
//! At a terminal two parties write to the screen: the session engine, on
//! the main thread, while it runs commands (their replies, notes, errors),
//! and the line editor while it waits for a line (rustyline prints above
//! the half-typed line and redraws it). Never both at once: the screen
//! belongs to the editor from the moment it has drawn its prompt (see
//! [`Live::editor`]) until it returns a line, and to the engine otherwise.
//!
//! [`Live`] holds what arrived and was not printed yet, numbered in the
//! order it came off the wire. The replies to the engine's commands are
//! stamped in the same sequence (they are delivered on the client's reader
//! thread, as events are, see [`Live::arrived`]), so the engine prints each
//! reply after exactly the events that came before it
//! ([`Live::take_reply`]), whatever the threads' timing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};

use qmp_client::{Error as QmpError, Object, Reply};
use serde_json::Value;

use crate::render::{self, Style};
use crate::wording::{counted, shown};

/// Events kept unprinted at most (while nobody can print, say with the
/// terminal stopped by Ctrl-S); beyond that the oldest are dropped, and
/// counted.
pub const MAX_UNPRINTED_EVENTS: usize = 100_000;

/// Something to print as it arrives.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// An event.
    Event(Object),
    /// The reply to a command the user abandoned (Ctrl-C), as shown.
    LateReply(Object),
    /// Something unexpected from the server or the client.
    Warning(String),
}

impl Item {
    /// The item as printed: one line (or several, with `-p`) ending with a
    /// newline.
    pub fn render(&self, style: Style) -> String {
        let mut text = match self {
            Item::Event(body) => render::to_string(&Value::Object(body.clone()), style),
            Item::LateReply(body) => format!(
                "late reply (the command was abandoned): {}",
                render::to_string(&Value::Object(body.clone()), style)
            ),
            Item::Warning(text) => format!("warning: {text}"),
        };
        text.push('\n');
        text
    }
}

/// A reply that arrived and was not taken yet.
struct Arrived {
    result: Result<Reply, QmpError>,
    /// The number of the last item that arrived before it.
    after: u64,
}

#[derive(Default)]
struct State {
    /// Not printed yet, oldest first, each with its number.
    items: VecDeque<(u64, Item)>,
    /// Numbers given so far.
    numbered: u64,
    /// Events among `items`.
    events: usize,
    /// Events dropped since the last warning about it.
    dropped: u64,
    /// Replies that arrived and were not taken, by token.
    replies: HashMap<u64, Arrived>,
    /// Tokens of replies nobody waits for any more.
    abandoned: HashSet<u64>,
    next_token: u64,
    /// The line editor owns the screen.
    editor: bool,
    /// The connection is gone: nothing more arrives.
    closed: bool,
}

impl State {
    fn push(&mut self, item: Item) {
        if matches!(item, Item::Event(_)) {
            if self.events >= MAX_UNPRINTED_EVENTS {
                if let Some(at) = self
                    .items
                    .iter()
                    .position(|(_, i)| matches!(i, Item::Event(_)))
                {
                    self.items.remove(at);
                    self.events -= 1;
                    self.dropped += 1;
                }
            }
            self.events += 1;
        }
        self.numbered += 1;
        self.items.push_back((self.numbered, item));
    }

    /// Take the items numbered up to `last` (all with `None`), with a
    /// warning first if events were dropped.
    fn take_until(&mut self, last: Option<u64>) -> Vec<Item> {
        let mut out = Vec::new();
        if self.dropped > 0 {
            let n = std::mem::take(&mut self.dropped);
            out.push(Item::Warning(format!(
                "{} dropped (more than {MAX_UNPRINTED_EVENTS} waiting to be printed)",
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
                    self.events -= 1;
                }
                out.push(item);
            }
        }
        out
    }

    /// The items that may be printed now: those before every reply that
    /// arrived and was not printed yet.
    fn take_printable(&mut self) -> Vec<Item> {
        let limit = self.replies.values().map(|a| a.after).min();
        self.take_until(limit)
    }
}

/// What arrived and was not printed yet; see the module documentation.
#[derive(Default)]
pub struct Live {
    state: Mutex<State>,
    cond: Condvar,
}

impl Live {
    /// Nothing arrived yet; the engine owns the screen.
    pub fn new() -> Live {
        Live::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A token for a command about to be sent: its reply is delivered with
    /// [`arrived`](Live::arrived) and taken with
    /// [`take_reply`](Live::take_reply).
    pub fn token(&self) -> u64 {
        let mut st = self.lock();
        st.next_token += 1;
        st.next_token
    }

    /// Something arrived (on the client's reader thread for events, so in
    /// the order of the wire).
    pub fn push(&self, item: Item) {
        self.lock().push(item);
        self.cond.notify_all();
    }

    /// The reply for `token` arrived: on the client's reader thread, right
    /// after the events that preceded it were [pushed](Live::push). The
    /// reply to an abandoned command becomes a late reply (an error, such
    /// as the connection lost, is dropped: the session says so anyway).
    pub fn arrived(&self, token: u64, result: Result<Reply, QmpError>) {
        let mut st = self.lock();
        if st.abandoned.remove(&token) {
            if let Ok(reply) = result {
                st.push(Item::LateReply(shown(reply)));
                drop(st);
                self.cond.notify_all();
            }
            return;
        }
        let after = st.numbered;
        st.replies.insert(token, Arrived { result, after });
    }

    /// The reply for `token`, if it arrived, with the items that came
    /// before it and were not printed yet (print them first).
    pub fn take_reply(&self, token: u64) -> Option<(Vec<Item>, Result<Reply, QmpError>)> {
        let mut st = self.lock();
        let arrived = st.replies.remove(&token)?;
        let before = st.take_until(Some(arrived.after));
        Some((before, arrived.result))
    }

    /// The items the engine may print now (those before every reply not
    /// printed yet).
    pub fn take_printable(&self) -> Vec<Item> {
        self.lock().take_printable()
    }

    /// Nobody waits for the reply of `token` any more: when it comes (or
    /// if it came already) it is a late reply, printed in its place.
    pub fn abandon(&self, token: u64) {
        let mut st = self.lock();
        match st.replies.remove(&token) {
            Some(Arrived {
                result: Ok(reply),
                after,
            }) => {
                // In its place among the items: after those before it.
                let at = st.items.partition_point(|(n, _)| *n <= after);
                st.items.insert(at, (after, Item::LateReply(shown(reply))));
                drop(st);
                self.cond.notify_all();
            }
            Some(_) => {}
            None => {
                st.abandoned.insert(token);
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
                        st.take_printable()
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

    fn event(name: &str) -> Item {
        let mut body = Object::new();
        body.insert("event".to_owned(), Value::from(name));
        Item::Event(body)
    }

    fn reply(n: i64) -> Result<Reply, QmpError> {
        let mut body = Object::new();
        body.insert("return".to_owned(), Value::from(n));
        Ok(Reply {
            body,
            assigned_id: true,
        })
    }

    #[test]
    fn a_reply_comes_after_the_events_before_it_and_before_those_after() {
        let live = Live::new();
        let (a, b) = (live.token(), live.token());
        live.push(event("STOP"));
        live.arrived(a, reply(1));
        live.push(event("RESUME"));
        live.arrived(b, reply(2));
        live.push(event("RESET"));
        // Nothing after the first reply is printable before it is.
        assert_eq!(live.take_printable(), vec![event("STOP")]);
        let (before, r) = live.take_reply(a).unwrap();
        assert!(before.is_empty());
        assert_eq!(r.unwrap().body["return"], 1);
        let (before, _) = live.take_reply(b).unwrap();
        assert_eq!(before, vec![event("RESUME")]);
        assert_eq!(live.take_printable(), vec![event("RESET")]);
        assert!(live.take_reply(b).is_none());
    }

    #[test]
    fn an_abandoned_reply_is_late_in_its_place() {
        let live = Live::new();
        let (a, b) = (live.token(), live.token());
        live.abandon(a);
        live.push(event("STOP"));
        live.arrived(a, reply(1));
        live.push(event("RESUME"));
        // Arrived already when abandoned: in its place too.
        live.arrived(b, reply(2));
        live.push(event("RESET"));
        live.abandon(b);
        let late = |n: i64| Item::LateReply(shown(reply(n).unwrap()));
        assert_eq!(
            live.take_printable(),
            vec![
                event("STOP"),
                late(1),
                event("RESUME"),
                late(2),
                event("RESET")
            ]
        );
        // A late error is not shown.
        let c = live.token();
        live.abandon(c);
        live.arrived(c, Err(QmpError::Disconnected));
        assert!(live.take_printable().is_empty());
    }

    #[test]
    fn events_beyond_the_bound_drop_the_oldest_with_a_warning() {
        let live = Live::new();
        for _ in 0..MAX_UNPRINTED_EVENTS + 2 {
            live.push(event("X"));
        }
        let items = live.take_printable();
        assert_eq!(items.len(), MAX_UNPRINTED_EVENTS + 1);
        assert_eq!(
            items[0],
            Item::Warning(format!(
                "2 older events were dropped (more than {MAX_UNPRINTED_EVENTS} waiting to be \
                 printed)"
            ))
        );
    }
}
