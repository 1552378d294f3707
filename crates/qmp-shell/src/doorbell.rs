//! A doorbell: one place where the session engine sleeps until something
//! happens (a reply or an event arrived, an input line was read, a signal
//! came, a deadline passed), whoever rings it.

use std::sync::{Condvar, Mutex};
use std::time::Instant;

/// Rung from any thread; waited on by one.
#[derive(Debug, Default)]
pub struct Doorbell {
    rings: Mutex<u64>,
    cond: Condvar,
}

impl Doorbell {
    /// A doorbell nobody rang yet.
    pub fn new() -> Doorbell {
        Doorbell::default()
    }

    /// Wake the waiter (now, or at its next wait if it is busy).
    pub fn ring(&self) {
        let mut n = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.wrapping_add(1);
        self.cond.notify_all();
    }

    /// The number of rings so far: pass it to [`wait`](Doorbell::wait) to
    /// sleep only if nothing rang since.
    pub fn seen(&self) -> u64 {
        *self.rings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleep until the doorbell rings after `seen`, or until `deadline`.
    pub fn wait(&self, seen: u64, deadline: Option<Instant>) {
        let mut n = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        while *n == seen {
            match deadline {
                None => n = self.cond.wait(n).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return;
                    }
                    n = self
                        .cond
                        .wait_timeout(n, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_ring_before_the_wait_is_not_lost() {
        let bell = Doorbell::new();
        let seen = bell.seen();
        bell.ring();
        // Returns at once although no deadline is given.
        bell.wait(seen, None);
    }

    #[test]
    fn a_ring_from_another_thread_wakes_the_waiter() {
        let bell = Arc::new(Doorbell::new());
        let seen = bell.seen();
        let b = Arc::clone(&bell);
        let t = std::thread::spawn(move || b.ring());
        bell.wait(seen, None);
        t.join().unwrap();
        assert_ne!(bell.seen(), seen);
    }

    #[test]
    fn a_passed_deadline_returns() {
        let bell = Doorbell::new();
        bell.wait(bell.seen(), Some(Instant::now() - Duration::from_secs(1)));
    }
}
