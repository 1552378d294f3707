//! What the router says on its own, in QEMU's words and QEMU's spelling:
//! the greeting, the capabilities negotiation, and the errors QEMU gives
//! for input it cannot dispatch. Pure functions, no I/O.
//!
//! The texts are QEMU 7.2's (`monitor/qmp.c`, `qapi/qmp-dispatch.c`,
//! `monitor/qmp-cmds-control.c`), checked against a real QEMU by
//! `tests/qmp/router.rs`.

use std::io;

use serde_json::ser::{CharEscape, Formatter};
use serde_json::Value;

use crate::framing::FrameError;
use crate::message::{empty_return, error_reply, generic_error, Greeting, Object};

/// The error QEMU gives to any command but `qmp_capabilities` before
/// capabilities negotiation.
pub const EXPECTING_NEGOTIATION: &str =
    "Expecting capabilities negotiation with 'qmp_capabilities'";

/// Serialize a message the way QEMU does: `", "` and `": "` separators,
/// every character outside printable ASCII as an uppercase `\uXXXX` escape
/// (a surrogate pair beyond the BMP), followed by `\r\n`.
pub fn encode(msg: &Object) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, QemuFormatter);
    // Serializing a map of JSON values into a Vec cannot fail.
    let _ = serde::Serialize::serialize(msg, &mut ser);
    out.extend_from_slice(b"\r\n");
    out
}

/// QEMU's `qobject_to_json` layout.
struct QemuFormatter;

impl Formatter for QemuFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if fragment.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return w.write_all(fragment.as_bytes());
        }
        let mut units = [0u16; 2];
        for c in fragment.chars() {
            if (' '..='~').contains(&c) {
                w.write_all(&[c as u8])?;
            } else {
                for unit in c.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04X}")?;
                }
            }
        }
        Ok(())
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        match escape {
            CharEscape::Quote => w.write_all(b"\\\""),
            CharEscape::ReverseSolidus => w.write_all(b"\\\\"),
            CharEscape::Solidus => w.write_all(b"/"),
            CharEscape::Backspace => w.write_all(b"\\b"),
            CharEscape::FormFeed => w.write_all(b"\\f"),
            CharEscape::LineFeed => w.write_all(b"\\n"),
            CharEscape::CarriageReturn => w.write_all(b"\\r"),
            CharEscape::Tab => w.write_all(b"\\t"),
            CharEscape::AsciiControl(b) => write!(w, "\\u{:04X}", b),
        }
    }
}

/// Why a client is turned away when `max` clients are connected: the
/// `desc` of the error it gets instead of the greeting.
pub fn too_many_clients(max: usize) -> String {
    let clients = if max == 1 { "client" } else { "clients" };
    format!("too many clients: this server serves at most {max} {clients} at once")
}

/// Whether QEMU takes `msg` for an out-of-band command (`qmp_is_oob`):
/// `exec-oob` without `execute`. QEMU handles such a message as soon as it
/// reads it (and refuses it there when out-of-band execution is off), and
/// everything else in the order it came.
pub fn is_oob(msg: &Object) -> bool {
    msg.contains_key("exec-oob") && !msg.contains_key("execute")
}

/// The reply to a frame that is not a JSON object (QEMU answers those
/// without an id).
pub fn frame_error(err: &FrameError) -> Object {
    match err {
        FrameError::NotAnObject { .. } => generic_error(None, "QMP input must be a JSON object"),
        // QEMU's words for a malformed sequence in a string, where they
        // usually are (bytes that can never be UTF-8 draw other errors).
        FrameError::InvalidUtf8 => {
            generic_error(None, "JSON parse error, invalid UTF-8 sequence in string")
        }
        FrameError::NotJson { reason, .. } => {
            generic_error(None, &format!("JSON parse error, {reason}"))
        }
        other => generic_error(None, &format!("JSON parse error, {other}")),
    }
}

/// The greeting for a client of the router: the upstream's, with the
/// capabilities the router can negotiate per client (`oob` when `oob`,
/// nothing else). Without an upstream greeting (a middleman that hides it),
/// one with version 0.0.0.
pub fn greeting(upstream: Option<&Greeting>, oob: bool) -> Object {
    let mut body = match upstream {
        Some(g) => g.body.clone(),
        None => serde_json::from_str(
            r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 0},
                "package": ""}, "capabilities": []}}"#,
        )
        .unwrap_or_default(),
    };
    let caps: Vec<Value> = if oob {
        vec![Value::from("oob")]
    } else {
        Vec::new()
    };
    match body.get_mut("QMP").and_then(Value::as_object_mut) {
        Some(qmp) => {
            qmp.insert("capabilities".to_owned(), Value::Array(caps));
        }
        None => {
            let mut qmp = Object::new();
            qmp.insert("capabilities".to_owned(), Value::Array(caps));
            body.insert("QMP".to_owned(), Value::Object(qmp));
        }
    }
    body
}

/// QEMU's check of a request's members (`qmp_dispatch_check_obj`), in the
/// message's key order: `execute` (or `exec-oob` when out-of-band is
/// enabled) a string, exactly one of them, `arguments` an object, `id`
/// anything, nothing else.
pub fn check_request(msg: &Object, allow_oob: bool) -> Result<(), String> {
    let mut exec_key: Option<&str> = None;
    for (key, value) in msg {
        match key.as_str() {
            "execute" | "exec-oob" if key == "execute" || allow_oob => {
                if !value.is_string() {
                    return Err(format!("QMP input member '{key}' must be a string"));
                }
                if let Some(first) = exec_key {
                    return Err(format!("QMP input member '{key}' clashes with '{first}'"));
                }
                exec_key = Some(key.as_str());
            }
            "arguments" => {
                if !value.is_object() {
                    return Err("QMP input member 'arguments' must be an object".to_owned());
                }
            }
            "id" => {}
            _ => return Err(format!("QMP input member '{key}' is unexpected")),
        }
    }
    if exec_key.is_none() {
        return Err("QMP input lacks member 'execute'".to_owned());
    }
    Ok(())
}

/// The outcome of a message received before capabilities negotiation.
#[derive(Debug, Clone, PartialEq)]
pub struct BeforeNegotiation {
    /// What to answer.
    pub reply: Object,
    /// `Some(oob)` when this was a successful `qmp_capabilities`: the
    /// session is negotiated, with out-of-band execution if `oob`.
    pub negotiated: Option<bool>,
}

/// Answer `msg`, received before negotiation, as QEMU would: only a
/// well-formed `qmp_capabilities` succeeds. `offered_oob`: whether the
/// greeting offered `oob`.
pub fn before_negotiation(msg: &Object, offered_oob: bool) -> BeforeNegotiation {
    let id = msg.get("id");
    let refuse = |reply: Object| BeforeNegotiation {
        reply,
        negotiated: None,
    };
    if let Err(desc) = check_request(msg, false) {
        return refuse(generic_error(id, &desc));
    }
    if msg.get("execute").and_then(Value::as_str) != Some("qmp_capabilities") {
        return refuse(error_reply(id, "CommandNotFound", EXPECTING_NEGOTIATION));
    }
    let no_args = Object::new();
    let args = msg
        .get("arguments")
        .and_then(Value::as_object)
        .unwrap_or(&no_args);
    // The arguments visitor: `enable` first, then unexpected members.
    let mut requested = Vec::new();
    match args.get("enable") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some("oob") => requested.push("oob"),
                    Some(other) => {
                        return refuse(generic_error(
                            id,
                            &format!("Parameter 'null' does not accept value '{other}'"),
                        ))
                    }
                    None => {
                        return refuse(generic_error(
                            id,
                            &format!("Invalid parameter type for 'enable[{i}]', expected: string"),
                        ))
                    }
                }
            }
        }
        Some(_) => {
            return refuse(generic_error(
                id,
                "Invalid parameter type for 'enable', expected: array",
            ))
        }
    }
    if let Some(key) = args.keys().find(|k| *k != "enable") {
        return refuse(generic_error(
            id,
            &format!("Parameter '{key}' is unexpected"),
        ));
    }
    if !requested.is_empty() && !offered_oob {
        return refuse(generic_error(
            id,
            &format!("Capability {} not available", requested.join(", ")),
        ));
    }
    BeforeNegotiation {
        reply: empty_return(id),
        negotiated: Some(!requested.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(text: &str) -> Object {
        serde_json::from_str(text).unwrap()
    }

    fn text(msg: &Object) -> String {
        String::from_utf8(encode(msg)).unwrap()
    }

    #[test]
    fn encoding_is_qemus() {
        assert_eq!(
            text(&obj(r#"{"return":{"a":[1,2,{}],"b":[]},"id":1.50}"#)),
            "{\"return\": {\"a\": [1, 2, {}], \"b\": []}, \"id\": 1.50}\r\n"
        );
        // QEMU's escapes, as a real QEMU 7.2 wrote them.
        assert_eq!(
            text(&obj(
                r#"{"id": "é\u00e9\ud83d\ude00\u007f/\"\\\n\t\u0001"}"#
            )),
            "{\"id\": \"\\u00E9\\u00E9\\uD83D\\uDE00\\u007F/\\\"\\\\\\n\\t\\u0001\"}\r\n"
        );
    }

    #[test]
    fn error_replies_put_the_id_first() {
        let id = Value::from("a");
        assert_eq!(
            text(&error_reply(Some(&id), "CommandNotFound", "x")),
            "{\"id\": \"a\", \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"x\"}}\r\n"
        );
        assert_eq!(
            text(&empty_return(Some(&id))),
            "{\"return\": {}, \"id\": \"a\"}\r\n"
        );
        assert_eq!(text(&empty_return(None)), "{\"return\": {}}\r\n");
    }

    #[test]
    fn request_checks() {
        let check = |t: &str, oob| check_request(&obj(t), oob);
        assert_eq!(check(r#"{"execute": "a", "id": [1]}"#, false), Ok(()));
        assert_eq!(check(r#"{"exec-oob": "a"}"#, true), Ok(()));
        assert_eq!(
            check(r#"{"exec-oob": "a"}"#, false).unwrap_err(),
            "QMP input member 'exec-oob' is unexpected"
        );
        assert_eq!(
            check(r#"{"execute": 3}"#, false).unwrap_err(),
            "QMP input member 'execute' must be a string"
        );
        assert_eq!(
            check(r#"{"execute": "a", "exec-oob": "b"}"#, true).unwrap_err(),
            "QMP input member 'exec-oob' clashes with 'execute'"
        );
        assert_eq!(
            check(r#"{"execute": "a", "arguments": []}"#, false).unwrap_err(),
            "QMP input member 'arguments' must be an object"
        );
        assert_eq!(
            check(r#"{"id": 1}"#, false).unwrap_err(),
            "QMP input lacks member 'execute'"
        );
    }

    #[test]
    fn negotiation() {
        let n = |t: &str, offered| before_negotiation(&obj(t), offered);
        let ok = n(r#"{"execute": "qmp_capabilities", "id": 7}"#, true);
        assert_eq!(ok.negotiated, Some(false));
        assert_eq!(text(&ok.reply), "{\"return\": {}, \"id\": 7}\r\n");
        let ok = n(
            r#"{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}"#,
            true,
        );
        assert_eq!(ok.negotiated, Some(true));
        let no = n(
            r#"{"execute": "qmp_capabilities", "arguments": {"enable": ["oob", "oob"]}}"#,
            false,
        );
        assert_eq!(no.negotiated, None);
        assert_eq!(
            no.reply["error"]["desc"],
            Value::from("Capability oob, oob not available")
        );
        let no = n(r#"{"execute": "query-status", "id": "x"}"#, true);
        assert_eq!(
            text(&no.reply),
            "{\"id\": \"x\", \"error\": {\"class\": \"CommandNotFound\", \"desc\": \
             \"Expecting capabilities negotiation with 'qmp_capabilities'\"}}\r\n"
        );
        for (input, desc) in [
            (
                r#"{"enable": "oob"}"#,
                "Invalid parameter type for 'enable', expected: array",
            ),
            (
                r#"{"enable": null}"#,
                "Invalid parameter type for 'enable', expected: array",
            ),
            (
                r#"{"enable": [1]}"#,
                "Invalid parameter type for 'enable[0]', expected: string",
            ),
            (
                r#"{"enable": ["foo"]}"#,
                "Parameter 'null' does not accept value 'foo'",
            ),
            (r#"{"bogus": 1}"#, "Parameter 'bogus' is unexpected"),
        ] {
            let r = n(
                &format!(r#"{{"execute": "qmp_capabilities", "arguments": {input}}}"#),
                true,
            );
            assert_eq!(r.negotiated, None, "{input}");
            assert_eq!(r.reply["error"]["desc"], Value::from(desc), "{input}");
        }
    }

    #[test]
    fn greetings_offer_only_what_the_router_negotiates() {
        let g = Greeting {
            body: obj(
                r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7},
                "package": "p"}, "capabilities": ["oob", "future"]}}"#,
            ),
        };
        assert_eq!(
            text(&greeting(Some(&g), false)),
            "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, \
             \"package\": \"p\"}, \"capabilities\": []}}\r\n"
        );
        assert_eq!(
            greeting(Some(&g), true)["QMP"]["capabilities"],
            serde_json::json!(["oob"])
        );
        let made_up = greeting(None, false);
        assert_eq!(Greeting { body: made_up }.version(), Some((0, 0, 0)));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;
        use serde_json::{Map, Number};

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| Value::Number(n.into())),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(|f| Value::Number(Number::from_f64(f).unwrap())),
                any::<String>().prop_map(Value::String),
                "(qmp_capabilities|oob|enable|query-status)".prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::vec(("(enable|x|[a-z]{0,3})", inner), 0..4)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
                ]
            })
        }

        fn message() -> impl Strategy<Value = Object> {
            prop::collection::vec(("(execute|exec-oob|arguments|id|x)", json_value()), 0..5)
                .prop_map(|kv| kv.into_iter().collect::<Object>())
        }

        proptest! {
            /// Whatever a client sends before negotiating, the answer is a
            /// QEMU-shaped reply carrying its id, and it never panics.
            #[test]
            fn any_message_before_negotiation_gets_a_reply(msg in message(), oob: bool) {
                let out = before_negotiation(&msg, oob);
                prop_assert!(out.reply.contains_key("return") != out.reply.contains_key("error"));
                prop_assert_eq!(out.negotiated.is_some(), out.reply.contains_key("return"));
                prop_assert_eq!(out.reply.get("id"), msg.get("id"));
                if out.negotiated == Some(true) {
                    prop_assert!(oob);
                }
            }

            /// QEMU's layout is JSON that reads back as what was encoded.
            #[test]
            fn encoding_reads_back(v in json_value(), key in any::<String>()) {
                let mut msg = Object::new();
                msg.insert(key, v);
                let bytes = encode(&msg);
                prop_assert!(bytes.ends_with(b"\r\n"));
                prop_assert!(bytes[..bytes.len() - 2].iter().all(|b| (0x20..0x7f).contains(b)));
                let back: Object = serde_json::from_slice(&bytes).unwrap();
                prop_assert_eq!(back, msg);
            }
        }
    }
}
