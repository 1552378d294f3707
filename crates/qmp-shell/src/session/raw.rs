//! Raw JSON messages: a line starting with `{` is sent as it is, once the
//! object it starts is complete, over as many lines as it takes.

use qmp_client::{Object, Request};

use super::Engine;
use crate::rawjson::JsonScan;

/// Bytes a raw JSON message may have at most: QEMU's limit for a message.
pub const MAX_RAW_JSON: usize = 64 << 20;

/// JSON tokens a raw JSON message may have at most: QEMU's limit for a
/// message (it refuses more). Held as a `serde_json::Value`, a message of
/// 64 MiB of small numbers would take gigabytes.
pub const MAX_RAW_JSON_TOKENS: u64 = 2 << 20;

/// The error for a raw JSON message over [`MAX_RAW_JSON`] or
/// [`MAX_RAW_JSON_TOKENS`].
fn raw_json_too_large() -> String {
    format!(
        "raw JSON message larger than QEMU takes ({} MiB, {MAX_RAW_JSON_TOKENS} tokens); \
         it was not sent",
        MAX_RAW_JSON >> 20
    )
}

/// A raw JSON message being read over several lines: its text so far and
/// where the scan for its end stands. Past [`MAX_RAW_JSON`] the text is
/// dropped (and the message will not be sent) but the scan goes on, so that
/// the shell carries on after the message's end.
pub(super) struct RawMessage {
    text: String,
    scan: JsonScan,
    /// Refused for its size (and reported already).
    pub(super) too_long: bool,
}

impl Engine {
    /// A raw JSON message at the `TRANS>` prompt: refused (actions are
    /// written `TYPE [KEY=VALUE...]`), a failed command; the transaction
    /// stays open. A message over several lines is skipped to its end.
    pub(super) fn raw_in_transaction(&mut self, trimmed: &str) {
        let mut scan = JsonScan::default();
        scan.feed(trimmed);
        if scan.incomplete() {
            // Skipped, not held: see `RawMessage`.
            self.raw = Some(RawMessage {
                text: String::new(),
                scan,
                too_long: true,
            });
        }
        let text = "raw JSON is not an action; the transaction stays open (write each \
                    action as TYPE [KEY=VALUE...], end it with a line \")\")"
            .to_owned();
        self.failure(format!("ERROR: {text}\n"), "GenericError", text);
    }

    /// A line that starts a raw JSON message (`trimmed`, without its
    /// blanks): sent now if it is whole, else kept until the message ends.
    pub(super) fn start_raw(&mut self, trimmed: &str) {
        let mut scan = JsonScan::default();
        scan.feed(trimmed);
        if trimmed.len() > MAX_RAW_JSON || scan.tokens() > MAX_RAW_JSON_TOKENS {
            let text = raw_json_too_large();
            self.failure(format!("ERROR: {text}\n"), "ParseError", text);
            if scan.incomplete() {
                self.raw = Some(RawMessage {
                    text: String::new(),
                    scan,
                    too_long: true,
                });
            }
        } else if scan.incomplete() {
            self.raw = Some(RawMessage {
                text: trimmed.to_owned(),
                scan,
                too_long: false,
            });
        } else {
            self.raw_json(trimmed);
        }
    }

    /// A line inside the raw JSON message being read; the message is sent
    /// when this line ends it.
    pub(super) fn raw_line(&mut self, line: &str) {
        let Some(raw) = self.raw.as_mut() else {
            return;
        };
        raw.scan.feed(line);
        let overflow = !raw.too_long
            && (raw.text.len() + 1 + line.len() > MAX_RAW_JSON
                || raw.scan.tokens() > MAX_RAW_JSON_TOKENS);
        if overflow {
            raw.too_long = true;
            raw.text = String::new();
        } else if !raw.too_long {
            raw.text.push('\n');
            raw.text.push_str(line);
        }
        let complete = !raw.scan.incomplete();
        if overflow {
            let text = raw_json_too_large();
            self.failure(format!("ERROR: {text}\n"), "ParseError", text);
        }
        if complete {
            match self.raw.take() {
                Some(raw) if !raw.too_long => self.raw_json(&raw.text),
                // Refused when it grew too long.
                _ => self.record.unsent = true,
            }
        }
    }

    /// Send the raw JSON message `text`, if it is a JSON object.
    fn raw_json(&mut self, text: &str) {
        match serde_json::from_str::<Object>(text) {
            Ok(msg) => self.send(Request::new(msg), false),
            Err(err) => self.parse_error(&format!("not a JSON object: {err}")),
        }
    }
}
