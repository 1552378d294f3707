//! Sending a command: `--read-only`'s refusal, the deprecation warnings,
//! the `-v` echo, and the reply's place in the queue.

use std::sync::Arc;
use std::time::Instant;

use qmp_client::{Client, Error as QmpError, Object, Request};
use serde_json::Value;

use super::{Awaited, Engine, Slot};
use crate::doorbell::Doorbell;
use crate::live::Live;
use crate::readonly;
use crate::store::Marks;

impl Engine {
    /// Send `request` (with `-v`, echoed first), unless `--read-only`
    /// refuses it.
    pub(super) fn send(&mut self, request: Request, hmp: bool) {
        let mut cold = false;
        if !hmp {
            let msg = request.message();
            if self.read_only_refuses(msg) {
                return;
            }
            self.echo(msg);
            if !self.cfg.guest_agent {
                let name = msg
                    .get("execute")
                    .or_else(|| msg.get("exec-oob"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                cold = self.warn_marked(name, msg.get("arguments").and_then(Value::as_object));
            }
        }
        // What came before this is not this command's.
        let before = self.live.numbered();
        // Printed from its text if large ([`Output::reply_of`](crate::output::Output::reply_of)).
        let request = request.text_reply();
        match submit(&self.client, &self.live, &self.doorbell, request) {
            Ok(pending) => {
                if cold {
                    // After the command: no round trip before it.
                    self.store.start_fetch(&self.client);
                }
                let index = self.events.sent(before);
                self.queue.push_back(Slot::Reply {
                    pending: Awaited::Sent(pending),
                    hmp,
                    deadline: None,
                    index: Some(index),
                })
            }
            Err(err) => self.client_failure(&err),
        }
    }

    /// Whether `--read-only` refuses the QMP command `msg`; if so, the
    /// refusal is queued. Asked before anything is done for the command.
    pub(super) fn read_only_refuses(&mut self, msg: &Object) -> bool {
        if !self.cfg.read_only {
            return false;
        }
        match readonly::refused(msg, self.cfg.guest_agent) {
            Some(name) => {
                self.refuse(&name);
                true
            }
            None => false,
        }
    }

    /// Refuse a command under `--read-only`.
    pub(super) fn refuse(&mut self, name: &str) {
        let text = readonly::refusal(name);
        self.failure(format!("ERROR: {text}\n"), "ReadOnly", text);
    }

    /// Warn (once each per session) about what the command uses that the
    /// live schema marks deprecated or unstable. With nothing cached for
    /// this server (a cold cache) the warnings keep their place in the
    /// queue ([`Slot::Marks`]) and `true` says to fetch the facts once the
    /// command was sent: no round trip comes before it, and its warnings
    /// still come before its reply.
    fn warn_marked(&mut self, name: &str, args: Option<&Object>) -> bool {
        match self.store.marks_now(&self.client) {
            Marks::Ready(facts) => {
                for warning in facts.warnings(name, args) {
                    self.warn_once(warning);
                }
                false
            }
            Marks::Unavailable => false,
            Marks::Cold => {
                self.queue.push_back(Slot::Marks {
                    name: name.to_owned(),
                    args: args.cloned(),
                    since: Instant::now(),
                });
                true
            }
        }
    }

    /// The warnings of a command sent with a cold cache
    /// ([`Engine::warn_marked`]), once the facts arrived (waiting for them
    /// as long as the store's look-ups may take).
    pub(super) fn print_marks(&mut self, name: &str, args: Option<&Object>) {
        let Some(facts) = self.store.marks(&self.client) else {
            return;
        };
        for warning in facts.warnings(name, args) {
            if self.warned.insert(warning.clone()) {
                self.out.diag(&format!("warning: {warning}\n"));
            }
        }
    }

    /// Queue `warning: WARNING` unless this session gave it already.
    pub(super) fn warn_once(&mut self, warning: String) {
        if !self.warned.contains(&warning) {
            self.queue
                .push_back(Slot::Note(format!("warning: {warning}\n")));
            self.warned.insert(warning);
        }
    }

    /// Queue the command for `-v` (not with `--json`).
    fn echo(&mut self, msg: &Object) {
        if self.cfg.verbose && !self.cfg.json {
            self.queue.push_back(Slot::Echo(msg.clone()));
        }
    }
}

/// Queue `request` on `client`; its reply (or the error that ends the
/// wait) is delivered to `live` on the client's reader thread, in the
/// order of the wire, under the token returned, and rings `bell`.
pub(super) fn submit(
    client: &Client,
    live: &Arc<Live>,
    bell: &Arc<Doorbell>,
    request: Request,
) -> Result<u64, QmpError> {
    let token = live.token();
    let (live, bell) = (Arc::clone(live), Arc::clone(bell));
    client.submit_with(request, move |result| {
        live.arrived(token, result);
        bell.ring();
    })?;
    Ok(token)
}
