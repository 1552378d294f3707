//! [`Pending`]: a request submitted, until its result is collected.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::driver::{Shared, Waited};
use super::Error;
use crate::message::Reply;
use crate::plumbing::lock;

/// A request that was submitted and whose reply has not been collected yet.
///
/// Dropping it without waiting is fine: its reply is discarded on arrival.
pub struct Pending {
    /// `None` for a [`Pending::resolved`] one.
    pub(super) shared: Option<Arc<Shared>>,
    pub(super) seq: u64,
    pub(super) id: Value,
    pub(super) finished: bool,
    pub(super) ready: Option<Result<Reply, Error>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("seq", &self.seq)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// A request answered already, with `result`: for output that must keep
    /// its place among real replies.
    pub fn resolved(result: Result<Reply, Error>) -> Pending {
        Pending {
            shared: None,
            seq: 0,
            id: Value::Null,
            finished: false,
            ready: Some(result),
        }
    }

    /// The id used to route the reply (the caller's, or the one assigned).
    pub fn id(&self) -> &Value {
        &self.id
    }

    /// The result if it has arrived; `None` while the reply is awaited (or
    /// once the result was taken).
    pub fn try_take(&mut self) -> Option<Result<Reply, Error>> {
        if self.finished {
            return None;
        }
        let result = match &self.shared {
            None => self.ready.take(),
            Some(shared) => lock(&shared.state).take_result(self.seq),
        };
        if result.is_some() {
            self.finished = true;
        }
        result
    }

    /// Wait for the reply, up to `timeout` (`None`: forever, or until the
    /// connection drops). On [`Error::Timeout`] the request is abandoned and a
    /// late reply is discarded.
    pub fn wait(mut self, timeout: Option<Duration>) -> Result<Reply, Error> {
        let Some(shared) = self.shared.clone() else {
            self.finished = true;
            return self.ready.take().unwrap_or(Err(Error::Disconnected));
        };
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut p = lock(&shared.state);
        loop {
            if let Some(result) = p.take_result(self.seq) {
                self.finished = true;
                return result;
            }
            if p.is_lost(self.seq) {
                // Should not happen (the end stores a result), but never hang.
                self.finished = true;
                return Err(Error::Disconnected);
            }
            let (q, waited) = shared.wait(&shared.replies, p, deadline);
            match waited {
                Waited::Again => p = q,
                // Drop marks the request abandoned.
                Waited::TimedOut => return Err(Error::Timeout(timeout.unwrap_or_default())),
                Waited::Interrupted => return Err(Error::Interrupted),
            }
        }
    }

    /// Stop waiting. With `report`, the reply is queued as
    /// [`Incoming::LateReply`](super::Incoming::LateReply) when it comes; otherwise it is discarded.
    /// A result that already arrived is reported (or discarded) at once.
    pub fn abandon(mut self, report: bool) {
        self.finished = true;
        if let Some(shared) = &self.shared {
            shared.update(|p| p.abandon(self.seq, report));
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(shared) = &self.shared {
            shared.update(|p| p.forget(self.seq));
        }
    }
}
