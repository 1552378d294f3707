//! `/wait EVENT [KEY=VALUE...]`: a barrier until the event comes.

use std::time::{Duration, Instant};

use qmp_client::Object;

use super::{meta_error, Engine, Slot};
use crate::meta;

/// A `/wait` in the queue: an event named `event` whose data contains
/// `filter`, that came since `command` (the last command sent when `/wait`
/// was read) was sent (see [`super::events::EventLog::window_start`]) and
/// that no `/wait` before returned.
pub(super) struct Wait {
    pub(super) event: String,
    filter: Object,
    command: Option<u64>,
    timeout: Option<Duration>,
    pub(super) deadline: Option<Instant>,
}

impl Engine {
    /// `/wait EVENT KEY=VALUE...`: a barrier until the event comes.
    pub(super) fn wait(&mut self, event: String, filter: Object, timeout: Option<Duration>) {
        if !self.cfg.guest_agent {
            if let Some(facts) = self.store.facts(&self.client) {
                if !facts.knows_event(&event) {
                    return self
                        .meta_failure("/wait", format!("the server has no event named {event}"));
                }
                if let Some(mark) = facts.event_mark(&event) {
                    self.warn_once(format!("event {event} is {mark} (QMP schema)"));
                }
            }
        }
        self.queue.push_back(Slot::Wait(Wait {
            event,
            filter,
            command: self.events.last_command(),
            timeout,
            deadline: None,
        }));
        self.barriers += 1;
    }

    /// The `/wait` at the front: done (`true`) when its event came or its
    /// time is up.
    pub(super) fn pump_wait(&mut self) -> bool {
        self.drain_tap();
        let command = match self.queue.front() {
            Some(Slot::Wait(wait)) => wait.command,
            _ => return false,
        };
        let after = self.events.window_start(command);
        let Some(Slot::Wait(Wait {
            event,
            filter,
            timeout,
            deadline,
            ..
        })) = self.queue.front_mut()
        else {
            return false;
        };
        let found = self.events.recent.iter_mut().find(|r| {
            r.seq > after
                && !r.consumed
                && r.event.name() == Some(event.as_str())
                && meta::matches(r.event.body.get("data"), filter)
        });
        let now = Instant::now();
        if let Some(r) = found {
            r.consumed = true;
            let (seq, body) = (r.seq, r.event.body.clone());
            let note = format!("(/wait: {event} came already, shown above)\n");
            self.pop_barrier();
            // At a terminal, what came before it first; and it is printed
            // once: as the answer, unless it was shown already (it came
            // before the `/wait` was read).
            let (before, unprinted) = self.live.take_event(seq);
            if let Err(err) = self.print_items(before) {
                self.output_failed(&err);
                return true;
            }
            if self.cfg.live_events && !unprinted {
                self.out.diag(&note);
            } else if let Err(err) = self.out.reply(body) {
                self.output_failed(&err);
            }
            return true;
        }
        match (*deadline, *timeout) {
            (None, Some(t)) => *deadline = now.checked_add(t),
            (Some(d), Some(t)) if now >= d => {
                let text = format!("no {event} event within {} s", t.as_secs_f64());
                self.pop_barrier();
                self.print_now(meta_error("/wait", "Timeout", text));
                return true;
            }
            _ => {}
        }
        if !self.client.is_connected() {
            self.front_disconnected();
            return true;
        }
        false
    }
}
