//! The queue of what a client received besides replies ([`Incoming`]):
//! events, late replies and warnings, with the events bounded in number and
//! in memory.

use std::collections::VecDeque;

use serde_json::Value;

use super::{Incoming, MAX_QUEUED_EVENTS, MAX_QUEUED_EVENT_BYTES};
use crate::message::Object;

/// Queued items, oldest first, with the bounds on the events among them.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    /// Queued items, with the size of each event as received.
    items: VecDeque<(Incoming, usize)>,
    events: usize,
    event_bytes: usize,
    /// Events dropped since the last warning about it.
    dropped: u64,
}

impl Queue {
    /// Queue `item`; `size` is an event's size as received. Beyond
    /// [`MAX_QUEUED_EVENTS`] events or [`MAX_QUEUED_EVENT_BYTES`] bytes of
    /// them, the oldest events are dropped (and counted).
    pub(crate) fn push(&mut self, item: Incoming, size: usize) {
        if matches!(item, Incoming::Event(_)) {
            while self.events > 0
                && (self.events >= MAX_QUEUED_EVENTS
                    || self.event_bytes + size > MAX_QUEUED_EVENT_BYTES)
            {
                let Some(at) = self
                    .items
                    .iter()
                    .position(|(i, _)| matches!(i, Incoming::Event(_)))
                else {
                    break;
                };
                if let Some((_, old)) = self.items.remove(at) {
                    self.events -= 1;
                    self.event_bytes -= old;
                    self.dropped += 1;
                }
            }
            self.events += 1;
            self.event_bytes += size;
            self.items.push_back((item, size));
        } else {
            self.items.push_back((item, 0));
        }
    }

    /// The oldest item; first a warning if events were dropped.
    pub(crate) fn pop(&mut self) -> Option<Incoming> {
        if self.dropped > 0 {
            let n = std::mem::take(&mut self.dropped);
            return Some(Incoming::Warning(format!(
                "{n} older {} dropped (more than {MAX_QUEUED_EVENTS} events \
                 or {} MiB queued)",
                if n == 1 { "event was" } else { "events were" },
                MAX_QUEUED_EVENT_BYTES >> 20
            )));
        }
        let (item, size) = self.items.pop_front()?;
        if matches!(item, Incoming::Event(_)) {
            self.events -= 1;
            self.event_bytes -= size;
        }
        Some(item)
    }

    /// The oldest queued item that is not an event.
    pub(crate) fn pop_notice(&mut self) -> Option<Incoming> {
        // Everything queued but events is a notice.
        if self.items.len() == self.events {
            return None;
        }
        let at = self
            .items
            .iter()
            .position(|(i, _)| !matches!(i, Incoming::Event(_)))?;
        self.items.remove(at).map(|(item, _)| item)
    }
}

/// An estimate of the heap memory a parsed JSON object takes (maps, their
/// entries and keys, strings, numbers kept as text, arrays), without
/// recursion.
pub fn approx_heap_size(obj: &Object) -> usize {
    // An IndexMap: its table and its entry vector, per entry a hash, a
    // key and a value, plus the allocator's rounding.
    const MAP: usize = 64;
    const ENTRY: usize = 96;
    const VALUE: usize = 32;
    let string = |len: usize| 16 + len.next_multiple_of(16);
    let mut total = MAP + obj.len() * ENTRY;
    let mut stack: Vec<&Value> = Vec::new();
    for (k, v) in obj {
        total += string(k.len());
        stack.push(v);
    }
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                total += MAP + map.len() * ENTRY;
                for (k, v) in map {
                    total += string(k.len());
                    stack.push(v);
                }
            }
            Value::Array(items) => {
                total += 24 + items.len() * VALUE;
                stack.extend(items);
            }
            Value::String(text) => total += string(text.len()),
            // arbitrary_precision keeps numbers as their text.
            Value::Number(n) => total += string(n.as_str().len()),
            Value::Bool(_) | Value::Null => {}
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::testing::*;
    use crate::client::MAX_QUEUED_EVENT_BYTES;

    #[test]
    fn event_queue_is_bounded_by_bytes() {
        // Events of about 64 KiB: far fewer than the count bound fit in
        // the byte bound.
        let per = 64 << 10;
        let n = MAX_QUEUED_EVENT_BYTES / per + 50;
        let client = pair(no_handshake(), move |mut s| {
            read_line(&mut s);
            let pad = "x".repeat(per);
            for i in 0..n {
                let ev =
                    format!("{{\"event\": \"E\", \"data\": {{\"i\": {i}, \"p\": \"{pad}\"}}}}\r\n");
                s.write_all(ev.as_bytes()).unwrap();
            }
            s.write_all(b"{\"return\": {}, \"id\": 1}\r\n").unwrap();
            let _ = s.read_to_end(&mut Vec::new());
        });
        client.execute("x", None, T).unwrap();
        let items = client.drain_incoming();
        let Incoming::Warning(w) = &items[0] else {
            panic!("{:?}", items[0]);
        };
        assert!(w.contains("older events were dropped"), "{w}");
        let kept = items.len() - 1;
        assert!(kept < n && kept * per <= MAX_QUEUED_EVENT_BYTES, "{kept}");
        assert!(kept * per > MAX_QUEUED_EVENT_BYTES / 2, "{kept}");
        // The newest events are the ones kept.
        let Incoming::Event(last) = items.last().unwrap() else {
            panic!()
        };
        assert_eq!(last.body["data"]["i"], Value::from(n - 1));
    }
}
