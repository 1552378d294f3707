//! Replies and events on their way to the source, with the markers that
//! [`Session::sync`](super::session::Session::sync) waits behind.

use std::collections::VecDeque;
use std::io;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::framing::FrameError;
use crate::message::Object;
use crate::plumbing::lock;

/// A message for the source: a frame, and its text when it is not to be
/// made from the object.
pub(super) struct Item {
    pub(super) frame: Result<Object, FrameError>,
    pub(super) raw: Option<Vec<u8>>,
    /// A `0xFF` delimiter is received first (see `guest-sync-delimited`).
    pub(super) delimited: bool,
}

impl Item {
    /// A JSON object, its text to be made from it, with no delimiter.
    pub(super) fn object(obj: Object) -> Item {
        Item {
            frame: Ok(obj),
            raw: None,
            delimited: false,
        }
    }
}

/// What the queue holds.
pub(super) enum Entry {
    /// A message for the source.
    Item(Item),
    /// A [`Session::sync`](super::session::Session::sync) waits for the
    /// source to get past this.
    Marker(u64),
}

#[derive(Default)]
pub(super) struct QueueState {
    pub(super) entries: VecDeque<Entry>,
    /// The connection or the domain is gone: end once `entries` is empty
    /// and no call is in progress.
    pub(super) ended: bool,
    /// Closed: end now.
    pub(super) closed: bool,
    /// Calls in progress, whose replies are still to come.
    pub(super) calls: usize,
    /// The last marker queued.
    pub(super) last_marker: u64,
    /// The last marker the source got past.
    pub(super) passed: u64,
}

/// Replies and events on their way to the source.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) state: Mutex<QueueState>,
    pub(super) ready: Condvar,
}

impl Queue {
    pub(super) fn push(&self, item: Item) {
        let mut s = lock(&self.state);
        if !s.closed {
            s.entries.push_back(Entry::Item(item));
            self.ready.notify_all();
        }
    }

    pub(super) fn end(&self) {
        lock(&self.state).ended = true;
        self.ready.notify_all();
    }

    pub(super) fn close(&self) {
        let mut s = lock(&self.state);
        s.closed = true;
        s.entries.clear();
        self.ready.notify_all();
    }

    pub(super) fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    pub(super) fn ended(&self) -> bool {
        let s = lock(&self.state);
        s.ended || s.closed
    }

    pub(super) fn begin_call(&self) {
        lock(&self.state).calls += 1;
    }

    /// A call returned, with its reply if it has one.
    pub(super) fn end_call(&self, reply: Option<Item>) {
        let mut s = lock(&self.state);
        s.calls = s.calls.saturating_sub(1);
        if let (Some(item), false) = (reply, s.closed) {
            s.entries.push_back(Entry::Item(item));
        }
        self.ready.notify_all();
    }

    /// The next item, waiting for one; `None` at the end. Markers are
    /// passed by: the source comes back for the next item only once it
    /// handled the one before, so everything before a marker is handled.
    pub(super) fn pop(&self) -> Option<Item> {
        let mut s = lock(&self.state);
        loop {
            if s.closed {
                return None;
            }
            match s.entries.pop_front() {
                Some(Entry::Item(item)) => return Some(item),
                Some(Entry::Marker(n)) => {
                    s.passed = n;
                    self.ready.notify_all();
                    continue;
                }
                None => {}
            }
            if s.ended && s.calls == 0 {
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Queue a marker and wait (at most `timeout`) until the source got
    /// past it, or the queue closed or ran out.
    pub(super) fn mark_and_wait(&self, timeout: Option<Duration>) -> io::Result<()> {
        let deadline = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
        let mut s = lock(&self.state);
        if s.closed {
            return Ok(());
        }
        s.last_marker += 1;
        let n = s.last_marker;
        s.entries.push_back(Entry::Marker(n));
        self.ready.notify_all();
        loop {
            // Ended, with nothing but markers left: the source has returned
            // (or is about to return) the end, and may not come back.
            let over =
                s.ended && s.calls == 0 && s.entries.iter().all(|e| matches!(e, Entry::Marker(_)));
            if s.passed >= n || s.closed || over {
                return Ok(());
            }
            s = match deadline {
                None => self.ready.wait(s).unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let now = std::time::Instant::now();
                    if now >= d {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "timed out waiting for libvirt's events",
                        ));
                    }
                    self.ready
                        .wait_timeout(s, d - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn obj(text: &str) -> Object {
        serde_json::from_str(text).unwrap()
    }

    fn json(item: &Item) -> String {
        match &item.frame {
            Ok(o) => serde_json::to_string(o).unwrap(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn the_queue_ends_after_pending_replies() {
        let q = Queue::default();
        q.begin_call();
        q.end();
        let item = Item {
            frame: Ok(obj(r#"{"return":{}}"#)),
            raw: None,
            delimited: false,
        };
        q.end_call(Some(item));
        assert!(q.pop().is_some());
        assert!(q.pop().is_none());
        let q = Queue::default();
        q.push(Item {
            frame: Ok(Object::new()),
            raw: None,
            delimited: false,
        });
        q.close();
        assert!(q.pop().is_none());
    }

    #[test]
    fn a_marker_is_passed_once_what_is_before_it_was_taken() {
        let q = Arc::new(Queue::default());
        q.push(Item {
            frame: Ok(obj(r#"{"event":"STOP"}"#)),
            raw: None,
            delimited: false,
        });
        let reader = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                let first = q.pop().map(|i| json(&i));
                // The marker is passed on the way to the next item.
                let second = q.pop().map(|i| json(&i));
                (first, second)
            })
        };
        q.mark_and_wait(Some(Duration::from_secs(20)))
            .expect("the reader gets past the marker");
        q.push(Item {
            frame: Ok(obj(r#"{"return":{}}"#)),
            raw: None,
            delimited: false,
        });
        let (first, second) = reader.join().expect("reader");
        assert_eq!(first.as_deref(), Some(r#"{"event":"STOP"}"#));
        assert_eq!(second.as_deref(), Some(r#"{"return":{}}"#));

        // Nobody reads: the wait is bounded; a closed queue ends it at once.
        let q = Queue::default();
        let e = q
            .mark_and_wait(Some(Duration::from_millis(10)))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        q.close();
        q.mark_and_wait(None).expect("closed: nothing to wait for");
        // An ended queue with nothing left: nothing to wait for either.
        let q = Queue::default();
        q.end();
        q.mark_and_wait(None).expect("ended");
    }
}
