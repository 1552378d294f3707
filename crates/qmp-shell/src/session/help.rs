//! `help [NAME]`: the server's commands and events, from its QMP schema,
//! and the shell's own `/` commands.

use qmp_client::Object;
use serde_json::Value;

use super::{ready, Engine, Slot, LOOKUP_TIMEOUT};
use crate::meta;

impl Engine {
    /// `help [NAME]` (not for a guest agent, which has no schema): the
    /// name, empty for none.
    pub(super) fn help_line<'a>(&self, trimmed: &'a str) -> Option<&'a str> {
        if self.cfg.guest_agent || !(trimmed == "help" || trimmed.starts_with("help ")) {
            return None;
        }
        Some(trimmed["help".len()..].trim())
    }

    /// `help [NAME]`, from the schema; the shell's own commands too. At the
    /// `TRANS>` prompt, the transaction's actions first.
    pub(super) fn help(&mut self, name: Option<&str>) {
        if name.is_some_and(|n| n.starts_with('/')) {
            return self.queue.push_back(Slot::Text(meta::USAGE.to_owned()));
        }
        let timeout = self.cfg.timeout.or(Some(LOOKUP_TIMEOUT));
        let schema = match self.store.schema(&self.client, timeout) {
            Ok(schema) => schema,
            Err(err) => {
                return self.failure(
                    format!("help: cannot read the QMP schema: {err}\n"),
                    "GenericError",
                    format!("cannot read the QMP schema: {err}"),
                )
            }
        };
        // At `TRANS>`, the actions.
        let in_transaction = self.parser.in_transaction();
        let found = if in_transaction {
            schema.action_help(name)
        } else {
            schema.help(name)
        };
        match found {
            Some(mut text) => {
                if name.is_none() && !in_transaction {
                    if !text.ends_with('\n') {
                        text.push('\n');
                    }
                    text.push('\n');
                    text.push_str(meta::USAGE);
                }
                if self.cfg.json {
                    let mut body = Object::new();
                    body.insert("return".to_owned(), Value::String(text));
                    self.queue.push_back(Slot::Reply {
                        pending: ready(body),
                        hmp: false,
                        deadline: None,
                        index: None,
                    });
                    return;
                }
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                self.queue.push_back(Slot::Text(text));
            }
            None => {
                let name = name.unwrap_or_default();
                let what = if in_transaction {
                    "action, command or event"
                } else {
                    "command or event"
                };
                self.failure(
                    format!("help: no {what} named '{name}'\n"),
                    "GenericError",
                    format!("no {what} named '{name}'"),
                );
            }
        }
    }
}
