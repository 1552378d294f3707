//! `/oob COMMAND ...`: a command executed out of band (`exec-oob`).

use qmp_client::{Object, Request};
use serde_json::Value;

use super::Engine;

impl Engine {
    /// `/oob COMMAND ...`: only when out-of-band execution was negotiated
    /// and the schema allows it for the command.
    pub(super) fn oob(&mut self, msg: Object) {
        if self.read_only_refuses(&msg) {
            return;
        }
        let name = msg
            .get("exec-oob")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if !self.client.oob_enabled() {
            return self.meta_failure(
                "/oob",
                "out-of-band execution was not negotiated (the server does not offer it)"
                    .to_owned(),
            );
        }
        if let Some(facts) = self.store.marks(&self.client) {
            if facts.knows(&name) && !facts.allows_oob(&name) {
                return self.meta_failure(
                    "/oob",
                    format!(
                        "{name} cannot run out of band (its allow-oob is false in the QMP \
                         schema; these can: {})",
                        facts.oob_commands().join(", ")
                    ),
                );
            }
        }
        self.send(Request::new(msg), false);
    }
}
