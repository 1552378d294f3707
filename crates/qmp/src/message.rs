//! QMP message types: greetings, replies, events and commands.
//!
//! Everything here is pure data manipulation; no I/O happens in this module.

use serde_json::Value;

/// A JSON object, keeping the key order of the text it was parsed from.
pub type Object = serde_json::Map<String, Value>;

/// Build a QMP command object: `{"execute": name, "arguments": {...}}`.
///
/// The `"arguments"` key is omitted when `arguments` is `None`.
///
/// ```
/// let cmd = qmp_client::command("query-status", None);
/// assert_eq!(serde_json::to_string(&cmd).unwrap(), r#"{"execute":"query-status"}"#);
/// ```
pub fn command(name: &str, arguments: Option<Object>) -> Object {
    let mut obj = Object::new();
    obj.insert("execute".to_owned(), Value::String(name.to_owned()));
    if let Some(args) = arguments {
        obj.insert("arguments".to_owned(), Value::Object(args));
    }
    obj
}

/// An error reply as QEMU lays it out: `{"id": ..., "error": {"class":
/// ..., "desc": ...}}`, the id first, and none when the request had none.
pub(crate) fn error_reply(id: Option<&Value>, class: &str, desc: &str) -> Object {
    let mut error = Object::new();
    error.insert("class".to_owned(), Value::from(class));
    error.insert("desc".to_owned(), Value::from(desc));
    let mut reply = Object::new();
    if let Some(id) = id {
        reply.insert("id".to_owned(), id.clone());
    }
    reply.insert("error".to_owned(), Value::Object(error));
    reply
}

/// A `GenericError` reply ([`error_reply`] with that class).
pub(crate) fn generic_error(id: Option<&Value>, desc: &str) -> Object {
    error_reply(id, "GenericError", desc)
}

/// An empty success reply as QEMU lays it out: `{"return": {}, "id": ...}`.
pub(crate) fn empty_return(id: Option<&Value>) -> Object {
    let mut reply = Object::new();
    reply.insert("return".to_owned(), Value::Object(Object::new()));
    if let Some(id) = id {
        reply.insert("id".to_owned(), id.clone());
    }
    reply
}

/// The greeting a QMP server sends as soon as a client connects:
/// `{"QMP": {"version": {...}, "capabilities": [...]}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Greeting {
    /// The greeting object exactly as received.
    pub body: Object,
}

impl Greeting {
    /// The QEMU version announced in `QMP.version.qemu` as `(major, minor, micro)`,
    /// or `None` if any of the three is missing or not an unsigned integer.
    pub fn version(&self) -> Option<(u64, u64, u64)> {
        let qemu = self.body.get("QMP")?.get("version")?.get("qemu")?;
        let part = |k: &str| qemu.get(k).and_then(Value::as_u64);
        Some((part("major")?, part("minor")?, part("micro")?))
    }

    /// The capabilities listed in `QMP.capabilities` (non-string entries are skipped).
    pub fn capabilities(&self) -> Vec<String> {
        self.body
            .get("QMP")
            .and_then(|q| q.get("capabilities"))
            .and_then(Value::as_array)
            .map(|caps| {
                caps.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A reply to a command: an object with a `"return"` or an `"error"` key.
///
/// A large successful reply to a request that asked for it
/// ([`Request::text_reply`](crate::Request::text_reply)) may be kept as
/// the text it arrived as ([`Reply::text`]): then `body` holds every member
/// but `"return"`, whose value is read from the text when first asked for
/// ([`Reply::ret`], [`Reply::into_body`]). Build replies with
/// [`Reply::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The object exactly as received, in the server's key order (without
    /// `"return"` when the reply is kept as text: see [`Reply::text`]).
    pub body: Object,
    /// `true` when the client added the `"id"` to the command itself
    /// (the user did not supply one), so it can be hidden when displaying.
    pub assigned_id: bool,
    /// The text of a reply kept as text, and its `"return"`, once read.
    text: Option<Box<Text>>,
}

/// The text of a reply kept as text.
#[derive(Debug, Clone, PartialEq)]
struct Text {
    /// The whole reply (one JSON object).
    frame: std::sync::Arc<str>,
    /// Where the `"return"` value is in `frame`.
    ret: std::ops::Range<usize>,
    /// The `"return"` value, once read.
    value: std::sync::OnceLock<Value>,
}

impl Reply {
    /// A reply with `body`; `assigned_id` as the field says.
    pub fn new(body: Object, assigned_id: bool) -> Reply {
        Reply {
            body,
            assigned_id,
            text: None,
        }
    }

    /// A reply kept as its text `frame` (a JSON object), whose members but
    /// `"return"` are `others` and whose `"return"` value is `frame[ret]`.
    pub(crate) fn from_text(
        frame: std::sync::Arc<str>,
        ret: std::ops::Range<usize>,
        others: Object,
    ) -> Reply {
        Reply {
            body: others,
            assigned_id: false,
            text: Some(Box::new(Text {
                frame,
                ret,
                value: std::sync::OnceLock::new(),
            })),
        }
    }

    /// The text the reply arrived as (one JSON object, in the server's key
    /// order), when it was kept as text: rendering it from there costs a
    /// fraction of building and walking its tree of values.
    pub fn text(&self) -> Option<&str> {
        self.text.as_ref().map(|t| &*t.frame)
    }

    /// The whole reply as an object (for a reply kept as text, read from
    /// the text now: the same object as the client would have built).
    pub fn into_body(self) -> Object {
        let Some(text) = self.text else {
            return self.body;
        };
        // The text was checked when it was received: it is one object.
        serde_json::from_str(&text.frame).unwrap_or(self.body)
    }

    /// The reply's `"id"`, if any.
    pub fn id(&self) -> Option<&Value> {
        self.body.get("id")
    }

    /// `true` if the reply has an `"error"` key.
    pub fn is_error(&self) -> bool {
        self.body.contains_key("error")
    }

    /// The `"return"` value of a successful reply.
    pub fn ret(&self) -> Option<&Value> {
        match &self.text {
            None => self.body.get("return"),
            Some(t) => Some(t.value.get_or_init(|| {
                serde_json::from_str(&t.frame[t.ret.clone()]).unwrap_or(Value::Null)
            })),
        }
    }

    /// The `"error"."class"` string of an error reply.
    pub fn error_class(&self) -> Option<&str> {
        self.body.get("error")?.get("class")?.as_str()
    }

    /// The `"error"."desc"` string of an error reply.
    pub fn error_desc(&self) -> Option<&str> {
        self.body.get("error")?.get("desc")?.as_str()
    }
}

/// An asynchronous event: an object with an `"event"` key.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event object exactly as received.
    pub body: Object,
}

impl Event {
    /// The event name (`"event"` key), e.g. `"STOP"`.
    pub fn name(&self) -> Option<&str> {
        self.body.get("event")?.as_str()
    }
}

/// Any message a QMP server may send.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// An object with a `"QMP"` key.
    Greeting(Greeting),
    /// An object with a `"return"` or `"error"` key (`assigned_id` is `false`).
    Reply(Reply),
    /// An object with an `"event"` key.
    Event(Event),
    /// Any other object.
    Other(Object),
}

impl Message {
    /// Classify a received object. The keys are tested in this order:
    /// `"QMP"` gives a greeting, `"return"` or `"error"` a reply, `"event"` an event.
    pub fn classify(obj: Object) -> Message {
        if obj.contains_key("QMP") {
            Message::Greeting(Greeting { body: obj })
        } else if obj.contains_key("return") || obj.contains_key("error") {
            Message::Reply(Reply::new(obj, false))
        } else if obj.contains_key("event") {
            Message::Event(Event { body: obj })
        } else {
            Message::Other(obj)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(text: &str) -> Object {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn command_with_and_without_arguments() {
        let c = command("stop", None);
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"execute":"stop"}"#);
        let c = command("eject", Some(obj(r#"{"device":"ide1-cd0","force":true}"#)));
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"execute":"eject","arguments":{"device":"ide1-cd0","force":true}}"#
        );
    }

    #[test]
    fn classify_all_kinds() {
        let g = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7},
                    "package": ""}, "capabilities": ["oob"]}}"#;
        match Message::classify(obj(g)) {
            Message::Greeting(g) => {
                assert_eq!(g.version(), Some((7, 2, 22)));
                assert_eq!(g.capabilities(), vec!["oob".to_owned()]);
            }
            m => panic!("{m:?}"),
        }
        assert!(matches!(
            Message::classify(obj(r#"{"return": {}}"#)),
            Message::Reply(Reply {
                assigned_id: false,
                ..
            })
        ));
        match Message::classify(obj(r#"{"error": {"class": "GenericError", "desc": "no"}}"#)) {
            Message::Reply(r) => {
                assert!(r.is_error());
                assert_eq!(r.error_class(), Some("GenericError"));
                assert_eq!(r.error_desc(), Some("no"));
                assert!(r.ret().is_none());
            }
            m => panic!("{m:?}"),
        }
        match Message::classify(obj(r#"{"event": "STOP", "timestamp": {}}"#)) {
            Message::Event(e) => assert_eq!(e.name(), Some("STOP")),
            m => panic!("{m:?}"),
        }
        assert!(matches!(
            Message::classify(obj(r#"{"foo": 1}"#)),
            Message::Other(_)
        ));
        // The greeting key wins over others.
        assert!(matches!(
            Message::classify(obj(r#"{"return": 1, "QMP": {}}"#)),
            Message::Greeting(_)
        ));
    }

    #[test]
    fn greeting_with_bad_version() {
        let g = Greeting {
            body: obj(r#"{"QMP": {"version": {"qemu": {"major": "7"}}}}"#),
        };
        assert_eq!(g.version(), None);
        assert!(g.capabilities().is_empty());
    }
}
