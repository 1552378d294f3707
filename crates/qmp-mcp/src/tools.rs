//! The tools: their names, descriptions, input schemas and annotations, and
//! the checking of their arguments. Pure: what they do is in
//! [`crate::calls`].

use std::sync::Arc;
use std::time::Duration;

use qmp_client::Object;
use rmcp::model::{Tool, ToolAnnotations};
use serde_json::{json, Value};

/// The longest `wait_event` may wait, in seconds (MCP clients commonly give
/// up on a request after 60 s).
pub const MAX_WAIT_SECONDS: f64 = 60.0;

/// The tools' names, in the order they are listed.
pub const NAMES: [&str; 6] = [
    "targets",
    "describe",
    "execute",
    "hmp",
    "wait_event",
    "jobs",
];

/// What the server lets through, for the descriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// `--allow-writes`.
    pub allow_writes: bool,
    /// `-N`: the targets are guest agents.
    pub guest_agent: bool,
}

impl Mode {
    /// One sentence on what `execute` sends.
    fn execute_rule(&self) -> &'static str {
        match (self.allow_writes, self.guest_agent) {
            (true, _) => {
                "This server lets EVERY command through (it was started with --allow-writes), \
                 including those that change, pause or end the VM (stop, quit, system_reset, \
                 device_del...): check before you send one."
            }
            (false, false) => {
                "This server is READ-ONLY: it sends only commands that cannot change the VM \
                 (query-*, x-query-*, qom-get, qom-list, qom-list-types, qom-list-properties, \
                 device-list-properties, and human-monitor-command with an `info` command \
                 line); any other command is refused without being sent."
            }
            (false, true) => {
                "This server is READ-ONLY: it sends only guest agent commands that cannot \
                 change the guest (guest-info, guest-ping, guest-get-*); any other command is \
                 refused without being sent."
            }
        }
    }
}

/// The `target` property of every tool that takes one.
fn target_property() -> Value {
    json!({
        "type": "string",
        "description": "The target (VM) to use, by the name the `targets` tool lists. \
                        May be left out when the server has only one target."
    })
}

fn schema(properties: Value, required: &[&str]) -> Arc<Object> {
    let mut obj = Object::new();
    obj.insert("type".into(), json!("object"));
    obj.insert("properties".into(), properties);
    if !required.is_empty() {
        obj.insert("required".into(), json!(required));
    }
    obj.insert("additionalProperties".into(), json!(false));
    Arc::new(obj)
}

fn annotations(title: &str, read_only: bool) -> ToolAnnotations {
    let a = ToolAnnotations::with_title(title)
        .read_only(read_only)
        .open_world(false);
    if read_only {
        a
    } else {
        a.destructive(true).idempotent(false)
    }
}

/// The tools as listed to clients.
pub fn list(mode: Mode) -> Vec<Tool> {
    let writes = mode.allow_writes;
    vec![
        Tool::new(
            "targets",
            "List the VMs (targets) this server reaches, each with its state (connected, or \
             unreachable and why) and its QEMU version, and whether the server is read-only. \
             Use a target's name as the `target` argument of the other tools.",
            schema(json!({}), &[]),
        )
        .annotate(annotations("List the VMs", true)),
        Tool::new(
            "describe",
            "Describe a QMP command or event from the VM's own QMP schema, as qmp-shell's \
             `help NAME` does: a command's arguments (names, types, which are optional, enum \
             values, union branches) and its return type; an event's data members. Given a \
             prefix that is not a whole name (`query-`, `block`), list the commands and \
             events whose names start with it; given no name, list every command. Use it \
             before `execute` to get the argument names and types right.",
            schema(
                json!({
                    "name": {
                        "type": "string",
                        "description": "A command or event name (query-status, STOP), or \
                                        the start of some (query-, blockdev-)."
                    },
                    "target": target_property()
                }),
                &[],
            ),
        )
        .annotate(annotations("Describe a QMP command or event", true)),
        Tool::new(
            "execute",
            format!(
                "Run one QMP command on a VM and return QEMU's reply as JSON text: \
                 {{\"return\": ...}}. A QMP error is an error result carrying QEMU's error, \
                 {{\"error\": {{\"class\": ..., \"desc\": ...}}}}. Warnings follow the reply \
                 when the schema marks the command, an argument or a value as deprecated or \
                 unstable. Example: command `qom-get`, arguments {{\"path\": \"/machine\", \
                 \"property\": \"type\"}}. {} File descriptors and out-of-band execution are \
                 not offered.",
                mode.execute_rule()
            ),
            schema(
                json!({
                    "command": {
                        "type": "string",
                        "description": "The QMP command's name, e.g. query-status \
                                        (`describe` lists them)."
                    },
                    "arguments": {
                        "type": "object",
                        "description": "The command's arguments, a JSON object (leave it out \
                                        for none).",
                        "additionalProperties": true
                    },
                    "target": target_property()
                }),
                &["command"],
            ),
        )
        .annotate(annotations("Run a QMP command", !writes)),
        Tool::new(
            "hmp",
            format!(
                "Run a human monitor (HMP) command line on a VM, e.g. `info block` or \
                 `info registers`, and return its text output. {}",
                if writes {
                    "Every HMP command is let through (--allow-writes), including those that \
                     change the VM."
                } else {
                    "This server is READ-ONLY: only `info` command lines are sent; any other \
                     is refused without being sent."
                }
            ),
            schema(
                json!({
                    "command_line": {
                        "type": "string",
                        "description": "The HMP command line, e.g. `info status`."
                    },
                    "target": target_property()
                }),
                &["command_line"],
            ),
        )
        .annotate(annotations("Run an HMP command line", !writes)),
        Tool::new(
            "wait_event",
            format!(
                "Wait for the next QMP event named `event` (STOP, RESUME, SHUTDOWN, \
                 JOB_STATUS_CHANGE, BLOCK_JOB_COMPLETED...) whose data contains the members \
                 of `match`, and return it as JSON. Events that arrived since the start of the \
                 last `execute` or `hmp` call on the target count, so `execute` then \
                 `wait_event` finds the event the command caused; an event is returned once. \
                 Waits at most `timeout` seconds (at most {MAX_WAIT_SECONDS}); no such event \
                 in time is an error result."
            ),
            schema(
                json!({
                    "event": {
                        "type": "string",
                        "description": "The event's name, e.g. STOP."
                    },
                    "match": {
                        "type": "object",
                        "description": "Members the event's data must have, with these \
                                        values (nested objects compare member by member), \
                                        e.g. {\"id\": \"job0\", \"status\": \"concluded\"}.",
                        "additionalProperties": true
                    },
                    "timeout": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "maximum": MAX_WAIT_SECONDS,
                        "description": "Seconds to wait at most."
                    },
                    "target": target_property()
                }),
                &["event", "timeout"],
            ),
        )
        .annotate(annotations("Wait for a QMP event", true)),
        Tool::new(
            "jobs",
            "List a VM's block jobs (query-jobs) and its migration (query-migrate) with \
             their type, status and progress (current-progress, total-progress, percent), \
             as JSON: {\"jobs\": [...]}, empty when none ever ran.",
            schema(json!({ "target": target_property() }), &[]),
        )
        .annotate(annotations("List block jobs and migration", true)),
    ]
}

/// A tool's result: text for the caller, and whether it is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// An error result.
    pub error: bool,
    /// The text items, in order.
    pub texts: Vec<String>,
}

impl Answer {
    /// A result.
    pub fn ok(text: impl Into<String>) -> Answer {
        Answer {
            error: false,
            texts: vec![text.into()],
        }
    }

    /// An error result.
    pub fn error(text: impl Into<String>) -> Answer {
        Answer {
            error: true,
            texts: vec![text.into()],
        }
    }

    /// Add `notes` (warnings, notices) after the result.
    pub fn with_notes(mut self, notes: impl IntoIterator<Item = String>) -> Answer {
        self.texts.extend(notes);
        self
    }
}

/// A tool's arguments, checked one by one; [`Input::finish`] refuses any
/// left unread.
#[derive(Debug)]
pub struct Input {
    tool: &'static str,
    args: Object,
    known: Vec<&'static str>,
}

impl Input {
    /// The arguments of tool `tool` (`None`: none given).
    pub fn new(tool: &'static str, args: Option<Object>) -> Input {
        Input {
            tool,
            args: args.unwrap_or_default(),
            known: Vec::new(),
        }
    }

    /// Take `key`; `null` counts as absent.
    fn take(&mut self, key: &'static str) -> Option<Value> {
        self.known.push(key);
        self.args.shift_remove(key).filter(|v| !v.is_null())
    }

    /// An optional string.
    pub fn string(&mut self, key: &'static str) -> Result<Option<String>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!(
                "{}: `{key}` must be a string, not {}",
                self.tool,
                kind(&other)
            )),
        }
    }

    /// A string that must be there and not empty.
    pub fn required_string(&mut self, key: &'static str) -> Result<String, String> {
        match self.string(key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(format!("{}: `{key}` is empty", self.tool)),
            None => Err(format!("{}: `{key}` is required", self.tool)),
        }
    }

    /// An optional JSON object.
    pub fn object(&mut self, key: &'static str) -> Result<Option<Object>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(other) => Err(format!(
                "{}: `{key}` must be a JSON object ({{\"name\": value, ...}}), not {}",
                self.tool,
                kind(&other)
            )),
        }
    }

    /// A number of seconds, more than 0 and at most `max`; required.
    pub fn seconds(&mut self, key: &'static str, max: f64) -> Result<Duration, String> {
        let tool = self.tool;
        let value = self
            .take(key)
            .ok_or_else(|| format!("{tool}: `{key}` (seconds, at most {max}) is required"))?;
        let secs = match &value {
            Value::Number(n) => n.as_f64(),
            // Some clients send every value as a string.
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
        .ok_or_else(|| format!("{tool}: `{key}` must be a number of seconds, not {value}"))?;
        if !(secs > 0.0 && secs <= max) {
            return Err(format!(
                "{tool}: `{key}` must be more than 0 and at most {max} seconds, not {secs}"
            ));
        }
        Ok(Duration::from_secs_f64(secs))
    }

    /// Refuse arguments the tool does not take.
    pub fn finish(self) -> Result<(), String> {
        match self.args.keys().next() {
            None => Ok(()),
            Some(unknown) => Err(format!(
                "{}: unknown argument `{unknown}` (it takes: {})",
                self.tool,
                if self.known.is_empty() {
                    "nothing".to_owned()
                } else {
                    self.known.join(", ")
                }
            )),
        }
    }
}

/// What kind of JSON value `v` is, for messages.
fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", Value::String(s.clone())),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(tool: &'static str, v: Value) -> Input {
        match v {
            Value::Object(o) => Input::new(tool, Some(o)),
            _ => unreachable!(),
        }
    }

    #[test]
    fn six_tools_with_object_schemas_and_annotations() {
        for mode in [
            Mode {
                allow_writes: false,
                guest_agent: false,
            },
            Mode {
                allow_writes: true,
                guest_agent: false,
            },
        ] {
            let tools = list(mode);
            let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
            assert_eq!(names, NAMES);
            for t in &tools {
                assert_eq!(t.input_schema.get("type"), Some(&json!("object")));
                let a = t.annotations.as_ref().unwrap();
                let writer = matches!(t.name.as_ref(), "execute" | "hmp");
                assert_eq!(a.read_only_hint, Some(!(writer && mode.allow_writes)));
            }
            let execute = &tools[2];
            let text = execute.description.as_deref().unwrap();
            assert_eq!(text.contains("READ-ONLY"), !mode.allow_writes, "{text}");
        }
    }

    #[test]
    fn arguments_are_checked() {
        let mut i = input(
            "execute",
            json!({"command": "query-status", "arguments": null}),
        );
        assert_eq!(i.required_string("command").unwrap(), "query-status");
        assert_eq!(i.object("arguments").unwrap(), None);
        assert!(i.finish().is_ok());

        let mut i = input("execute", json!({"command": "x", "arguments": [1]}));
        i.required_string("command").unwrap();
        let e = i.object("arguments").unwrap_err();
        assert!(
            e.contains("must be a JSON object") && e.contains("an array"),
            "{e}"
        );

        let mut i = input("execute", json!({"command": 5}));
        assert!(i
            .required_string("command")
            .unwrap_err()
            .contains("must be a string, not the number 5"));
        let mut i = input("execute", json!({}));
        assert_eq!(
            i.required_string("command").unwrap_err(),
            "execute: `command` is required"
        );

        let mut i = input("execute", json!({"command": "x", "argumnets": {}}));
        i.required_string("command").unwrap();
        i.object("arguments").unwrap();
        assert_eq!(
            i.finish().unwrap_err(),
            "execute: unknown argument `argumnets` (it takes: command, arguments)"
        );

        for (v, ok) in [
            (json!(1.5), true),
            (json!("2"), true),
            (json!(0), false),
            (json!(61), false),
            (json!(-1), false),
            (json!("soon"), false),
            (json!(true), false),
        ] {
            let mut i = input("wait_event", json!({ "timeout": v }));
            assert_eq!(i.seconds("timeout", MAX_WAIT_SECONDS).is_ok(), ok, "{v}");
        }
        let mut i = input("wait_event", json!({}));
        assert!(i.seconds("timeout", MAX_WAIT_SECONDS).is_err());
    }
}
