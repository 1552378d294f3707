//! Event taps ([`Client::tap_events`](super::Client::tap_events)): callbacks
//! shown every event as it arrives, and the end of the connection.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::driver::Shared;
use crate::message::Event;
use crate::plumbing::lock;

/// What an event tap ([`Client::tap_events`](super::Client::tap_events)) is
/// shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tapped<'a> {
    /// An event, as it arrived (it is queued for
    /// [`Client::drain_incoming`](super::Client::drain_incoming) as usual).
    Event(&'a Event),
    /// The connection ended; nothing follows.
    Closed,
}

/// A registered event tap; dropping it removes the tap.
pub struct EventTap {
    pub(super) shared: Weak<Shared>,
    pub(super) id: u64,
}

impl std::fmt::Debug for EventTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventTap").field("id", &self.id).finish()
    }
}

impl Drop for EventTap {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.taps.remove(self.id);
        }
    }
}

/// A registered tap.
pub(crate) struct Tap {
    f: Box<dyn Fn(Tapped<'_>) + Send + Sync>,
    /// [`Tapped::Closed`] was delivered (it is delivered once).
    closed: AtomicBool,
}

impl Tap {
    /// Show `what` to the tap.
    pub(crate) fn show(&self, what: Tapped<'_>) {
        (self.f)(what);
    }

    /// Tell the tap the connection ended, unless it was told already.
    pub(crate) fn closed(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            (self.f)(Tapped::Closed);
        }
    }
}

/// The taps of a client, by id.
#[derive(Default)]
pub(crate) struct Taps {
    list: Mutex<Vec<(u64, Arc<Tap>)>>,
    next: AtomicU64,
}

impl Taps {
    /// Register `f`; returns its id and the tap.
    pub(crate) fn add(&self, f: impl Fn(Tapped<'_>) + Send + Sync + 'static) -> (u64, Arc<Tap>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let tap = Arc::new(Tap {
            f: Box::new(f),
            closed: AtomicBool::new(false),
        });
        lock(&self.list).push((id, Arc::clone(&tap)));
        (id, tap)
    }

    fn remove(&self, id: u64) {
        lock(&self.list).retain(|(i, _)| *i != id);
    }

    /// The registered taps, to be called without holding a lock.
    pub(crate) fn all(&self) -> Vec<Arc<Tap>> {
        lock(&self.list)
            .iter()
            .map(|(_, t)| Arc::clone(t))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::testing::*;

    /// Taps see every event (the queue still gets them), stop seeing
    /// them once dropped, and are told once when the connection ends.
    #[test]
    fn event_taps_see_events_and_the_end() {
        let (go_tx, go_rx) = std::sync::mpsc::channel::<&'static [u8]>();
        let client = pair(no_handshake(), move |mut s| {
            while let Ok(bytes) = go_rx.recv() {
                s.write_all(bytes).unwrap();
            }
        });
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let tx2 = Mutex::new(tx.clone());
        let tap = client.tap_events(move |t| {
            let text = match t {
                Tapped::Event(e) => e.name().unwrap_or("?").to_owned(),
                Tapped::Closed => "closed".to_owned(),
            };
            lock(&tx2).send(format!("a:{text}")).unwrap();
        });
        let tx3 = Mutex::new(tx);
        let other = client.tap_events(move |t| {
            if let Tapped::Event(e) = t {
                lock(&tx3)
                    .send(format!("b:{}", e.name().unwrap_or("?")))
                    .unwrap();
            }
        });
        go_tx.send(b"{\"event\": \"ONE\"}\r\n").unwrap();
        let mut got = vec![rx.recv().unwrap(), rx.recv().unwrap()];
        got.sort();
        assert_eq!(got, ["a:ONE", "b:ONE"]);
        drop(other);
        go_tx.send(b"{\"event\": \"TWO\"}\r\n").unwrap();
        assert_eq!(rx.recv().unwrap(), "a:TWO");
        // The queue has both, as without taps.
        let mut names = Vec::new();
        while names.len() < 2 {
            match client.next_incoming(T) {
                Some(Incoming::Event(e)) => names.push(e.name().unwrap().to_owned()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(names, ["ONE", "TWO"]);
        drop(go_tx);
        assert_eq!(rx.recv().unwrap(), "a:closed");
        client.close();
        // Closed is told once; a tap added afterwards is told at once.
        assert!(rx.try_recv().is_err());
        let (late_tx, late_rx) = std::sync::mpsc::channel::<bool>();
        let late_tx = Mutex::new(late_tx);
        let _late = client.tap_events(move |t| {
            lock(&late_tx).send(t == Tapped::Closed).unwrap();
        });
        assert!(late_rx.try_recv().unwrap());
        drop(tap);
    }
}
