//! `help [NAME]`: the server's commands and events, from its QMP schema,
//! and the shell's own `/` commands.

use qmp_client::Object;
use serde_json::Value;

use super::{ready, Engine, Slot, LOOKUP_TIMEOUT};
use crate::meta;

impl Engine {
    /// `help [NAME]`, from the schema; the shell's own commands too.
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
        match schema.help(name) {
            Some(mut text) => {
                if name.is_none() {
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
                self.failure(
                    format!("help: no command or event named '{name}'\n"),
                    "GenericError",
                    format!("no command or event named '{name}'"),
                );
            }
        }
    }
}
