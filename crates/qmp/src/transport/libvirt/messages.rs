//! QMP messages to and from what libvirt takes and gives: the command
//! text (without the id, `guest-sync-delimited` as `guest-sync`), replies
//! with the id restored where QEMU puts it, events and the greeting
//! rebuilt as QEMU sends them.

use std::ffi::{c_longlong, c_uint, CString};

use serde_json::Value;

use super::queue::Item;
use crate::framing::{Decoder, FrameError};
use crate::message::{Greeting, Object};

/// The command's name.
pub(super) fn execute_name(msg: &Object) -> Option<&str> {
    msg.get("execute").and_then(Value::as_str)
}

/// The command to give libvirt for `msg` (`None` if it cannot be a C
/// string), and whether its reply is to be preceded by a delimiter.
///
/// libvirt synchronises with a guest agent itself, before every command,
/// and would choke on the 0xFF that `guest-sync-delimited` makes the agent
/// send first: that command goes as `guest-sync`, and the source reports a
/// delimiter before its reply, as the agent would have sent them.
///
/// Everything else goes as it is, `human-monitor-command` included: as
/// QMP, not with libvirt's HMP flag (`VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP`).
/// QEMU's own reply then comes back unchanged, `{"return": TEXT}` or QEMU's
/// error with its class (a bad `cpu-index`, say), byte for byte what a
/// direct socket gets; with the flag libvirt builds the command itself and
/// hands back bare text, or an error of its own instead of QEMU's.
pub(super) fn libvirt_command(
    msg: &Object,
    encoded: &[u8],
    agent: bool,
) -> (Option<CString>, bool) {
    if agent && execute_name(msg) == Some("guest-sync-delimited") {
        let mut m = msg.clone();
        m.insert("execute".to_owned(), Value::from("guest-sync"));
        (command_text(&m, &[]), true)
    } else {
        (command_text(msg, encoded), false)
    }
}

/// The command text for libvirt: the message without its `"id"` (libvirt
/// adds its own and refuses a command that has one), as a C string; made
/// from `msg` unless `encoded` (its JSON text) can be used as it is.
/// `None` if it contains a NUL character (JSON text cannot, unescaped).
pub(super) fn command_text(msg: &Object, encoded: &[u8]) -> Option<CString> {
    let bytes = if msg.contains_key("id") || encoded.is_empty() {
        serde_json::to_vec(&WithoutId(msg)).ok()?
    } else {
        encoded.trim_ascii_end().to_vec()
    };
    CString::new(bytes).ok()
}

/// A message serialised without its `"id"`, the other members in their
/// order: the same text as the message with the id removed.
pub(super) struct WithoutId<'a>(&'a Object);

impl serde::Serialize for WithoutId<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().filter(|(k, _)| k.as_str() != "id"))
    }
}

/// Parse a reply's text as the decoder parses a socket's frames.
pub(super) fn parse_frame(text: &[u8]) -> Result<Object, FrameError> {
    let mut decoder = Decoder::new(usize::MAX);
    decoder.feed(text);
    decoder.next_message().unwrap_or_else(|| {
        let text = String::from_utf8_lossy(text);
        Err(FrameError::NotJson {
            reason: if text.trim().is_empty() {
                "empty reply"
            } else {
                "incomplete JSON"
            }
            .to_owned(),
            text: crate::framing::truncate(&text, 80),
        })
    })
}

/// The reply from libvirt with the message's id restored.
pub(super) fn reply_item(text: &[u8], id: Option<&Value>) -> Item {
    match parse_frame(text) {
        Ok(mut obj) => {
            restore_id(&mut obj, id);
            Item::object(obj)
        }
        Err(e) => Item {
            frame: Err(e),
            raw: Some(text.to_vec()),
            delimited: false,
        },
    }
}

/// Put the message's `id` (or none) on libvirt's reply. libvirt's own id
/// is replaced in place, so QEMU's key order is kept; when the reply has
/// none, the id goes where QEMU puts it: first in an error reply, last
/// otherwise.
pub(super) fn restore_id(obj: &mut Object, id: Option<&Value>) {
    match id {
        None => {
            obj.shift_remove("id");
        }
        Some(id) => {
            if let Some(slot) = obj.get_mut("id") {
                *slot = id.clone();
            } else if obj.contains_key("error") {
                obj.shift_insert(0, "id".to_owned(), id.clone());
            } else {
                obj.insert("id".to_owned(), id.clone());
            }
        }
    }
}

/// An event as QEMU sends it, from what libvirt passes on: the name, the
/// timestamp and the `data` member's JSON text (absent when QEMU sent none).
pub(super) fn event_item(
    name: &str,
    seconds: c_longlong,
    micros: c_uint,
    details: Option<&[u8]>,
) -> Item {
    let mut timestamp = Object::new();
    timestamp.insert("seconds".to_owned(), Value::from(seconds));
    timestamp.insert("microseconds".to_owned(), Value::from(micros));
    let mut obj = Object::new();
    obj.insert("timestamp".to_owned(), Value::Object(timestamp));
    obj.insert("event".to_owned(), Value::from(name));
    if let Some(details) = details.filter(|d| !d.trim_ascii().is_empty()) {
        // `data` is always an object in QMP; parsed as a socket's frames are
        // (no recursion, bounded depth).
        match parse_frame(details) {
            Ok(data) => {
                obj.insert("data".to_owned(), Value::Object(data));
            }
            Err(e) => {
                return Item {
                    frame: Err(e),
                    raw: Some(details.to_vec()),
                    delimited: false,
                }
            }
        }
    }
    Item::object(obj)
}

/// The greeting QEMU would have sent, from libvirt's `query-version` reply.
pub(super) fn greeting_from(text: &[u8]) -> Result<Greeting, String> {
    let reply = parse_frame(text).map_err(|e| format!("query-version: {e}"))?;
    let Some(Value::Object(version)) = reply.get("return") else {
        return Err(format!(
            "query-version: unexpected reply: {}",
            crate::framing::truncate(&String::from_utf8_lossy(text), 80)
        ));
    };
    let mut qmp = Object::new();
    qmp.insert("version".to_owned(), Value::Object(version.clone()));
    qmp.insert("capabilities".to_owned(), Value::Array(Vec::new()));
    let mut body = Object::new();
    body.insert("QMP".to_owned(), Value::Object(qmp));
    Ok(Greeting { body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::generic_error;

    fn obj(text: &str) -> Object {
        serde_json::from_str(text).unwrap()
    }

    fn json(item: &Item) -> String {
        match &item.frame {
            Ok(o) => serde_json::to_string(o).unwrap(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn ids_are_restored_in_qemus_places() {
        let id = Value::from("x");
        let r = reply_item(br#"{"return":{"a":1},"id":"libvirt-7"}"#, Some(&id));
        assert_eq!(json(&r), r#"{"return":{"a":1},"id":"x"}"#);
        let r = reply_item(
            br#"{"id":"libvirt-7","error":{"class":"C","desc":"d"}}"#,
            Some(&Value::from(3)),
        );
        assert_eq!(json(&r), r#"{"id":3,"error":{"class":"C","desc":"d"}}"#);
        let r = reply_item(br#"{"return":{},"id":"libvirt-7"}"#, None);
        assert_eq!(json(&r), r#"{"return":{}}"#);
        // No id from libvirt (no "execute" in the command): QEMU's places.
        let r = reply_item(br#"{"error":{"class":"C","desc":"d"}}"#, Some(&id));
        assert_eq!(json(&r), r#"{"id":"x","error":{"class":"C","desc":"d"}}"#);
        let r = reply_item(br#"{"return":{}}"#, Some(&id));
        assert_eq!(json(&r), r#"{"return":{},"id":"x"}"#);
    }

    #[test]
    fn bad_replies_are_frame_errors_with_their_text() {
        let r = reply_item(b"{\"return\": ", None);
        assert!(
            matches!(r.frame, Err(FrameError::NotJson { .. })),
            "{}",
            json(&r)
        );
        assert_eq!(r.raw.as_deref(), Some(&b"{\"return\": "[..]));
        let r = reply_item(b"[1]", None);
        assert!(matches!(r.frame, Err(FrameError::NotAnObject { .. })));
        let r = reply_item(b"", None);
        assert!(r.frame.is_err());
        let r = reply_item(b"{\"a\": \"\xff\"}", None);
        assert_eq!(r.frame, Err(FrameError::InvalidUtf8));
        let deep = "[".repeat(100_000);
        let r = reply_item(deep.as_bytes(), None);
        assert!(r.frame.is_err());
    }

    #[test]
    fn error_replies_look_like_qemus() {
        let e = generic_error(Some(&Value::from(1)), "boom");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"id":1,"error":{"class":"GenericError","desc":"boom"}}"#
        );
        let e = generic_error(None, "boom");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"error":{"class":"GenericError","desc":"boom"}}"#
        );
    }

    #[test]
    fn events_are_rebuilt_like_qemus() {
        let e = event_item("STOP", 1700000000, 12, None);
        assert_eq!(
            json(&e),
            r#"{"timestamp":{"seconds":1700000000,"microseconds":12},"event":"STOP"}"#
        );
        let e = event_item(
            "SHUTDOWN",
            5,
            6,
            Some(br#"{"guest":false,"reason":"host-qmp-quit"}"#),
        );
        assert_eq!(
            json(&e),
            r#"{"timestamp":{"seconds":5,"microseconds":6},"event":"SHUTDOWN","data":{"guest":false,"reason":"host-qmp-quit"}}"#
        );
        let e = event_item("X", -1, 0, Some(b"{oops"));
        assert!(e.frame.is_err());
    }

    #[test]
    fn the_message_goes_without_its_id() {
        let m = obj(r#"{"execute":"query-status","id":"a"}"#);
        let c = command_text(&m, &crate::encode(&m)).unwrap();
        assert_eq!(c.to_str().unwrap(), r#"{"execute":"query-status"}"#);
        let m = obj(r#"{"execute":"query-status"}"#);
        let c = command_text(&m, &crate::encode(&m)).unwrap();
        assert_eq!(c.to_str().unwrap(), r#"{"execute":"query-status"}"#);
        let m = obj(r#"{"execute":"a\u0000b","id":1}"#);
        let c = command_text(&m, &crate::encode(&m)).unwrap();
        assert_eq!(c.to_str().unwrap(), r#"{"execute":"a\u0000b"}"#);
    }

    #[test]
    fn the_text_without_the_id_is_the_text_of_the_message_without_it() {
        for text in [
            r#"{"execute":"query-status","id":"a"}"#,
            r#"{"id":1,"execute":"x","arguments":{"id":2,"b":[1.50,{"id":3}]}}"#,
            r#"{"execute":"x","arguments":{"z":1,"a":2},"id":{"n":18446744073709551616}}"#,
            r#"{"id":null}"#,
            r#"{"execute":"a\u0000b\u00e9\"\\\n","id":1,"control":{"run-oob":true}}"#,
            r#"{"execute":"query-status"}"#,
            r#"{}"#,
        ] {
            let m = obj(text);
            let mut old = m.clone();
            old.shift_remove("id");
            assert_eq!(
                serde_json::to_vec(&WithoutId(&m)).unwrap(),
                serde_json::to_vec(&old).unwrap(),
                "{text}"
            );
        }
    }

    #[test]
    fn greeting_is_made_from_query_version() {
        let g = greeting_from(
            br#"{"return":{"qemu":{"micro":22,"minor":2,"major":7},"package":"Debian"},"id":"libvirt-1"}"#,
        )
        .unwrap();
        assert_eq!(g.version(), Some((7, 2, 22)));
        assert_eq!(
            serde_json::to_string(&g.body).unwrap(),
            r#"{"QMP":{"version":{"qemu":{"micro":22,"minor":2,"major":7},"package":"Debian"},"capabilities":[]}}"#
        );
        assert!(greeting_from(br#"{"error":{}}"#).is_err());
    }
}
