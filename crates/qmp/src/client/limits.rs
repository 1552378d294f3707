//! What QEMU's JSON parser accepts, checked before a message is sent.

use crate::framing::encode;
use crate::message::Object;

/// Largest message QEMU's JSON parser accepts (`MAX_TOKEN_SIZE` of
/// `qobject/json-streamer.c`), in bytes.
pub const QEMU_MAX_MESSAGE: usize = 64 << 20;

/// Deepest nesting of objects and arrays QEMU's JSON parser accepts
/// (`MAX_NESTING`), the message's own object included.
pub const QEMU_MAX_NESTING: usize = 1024;

/// `msg` as it goes on the wire (compact JSON and a newline), or why it
/// is not sent: QEMU would refuse it before reading its id
/// ([`beyond_qemu_limits`]).
pub(crate) fn encode_for_qemu(msg: &Object) -> Result<Vec<u8>, String> {
    let bytes = encode(msg);
    match beyond_qemu_limits(&bytes) {
        None => Ok(bytes),
        Some(why) => Err(why),
    }
}

/// Why QEMU would refuse `encoded` (compact JSON and a newline) before
/// reading its id, if it would. Its error would then come without an id and
/// answer no request (see [`STRAY_REPLY`](super::STRAY_REPLY)), so such a
/// message is not sent: the request fails with
/// [`Error::Unsupported`](super::Error::Unsupported) instead.
pub(crate) fn beyond_qemu_limits(encoded: &[u8]) -> Option<String> {
    let len = encoded.trim_ascii_end().len();
    if len > QEMU_MAX_MESSAGE {
        return Some(format!(
            "not sent: the message is {len} bytes, more than QEMU accepts ({} MiB)",
            QEMU_MAX_MESSAGE >> 20
        ));
    }
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in encoded {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    (deepest > QEMU_MAX_NESTING).then(|| {
        format!(
            "not sent: the message nests {deepest} levels deep, more than QEMU accepts \
             ({QEMU_MAX_NESTING})"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::command;
    use serde_json::Value;

    /// Arguments `{"v": [[...]]}`, `depth` arrays deep.
    fn arrays(depth: usize) -> Object {
        let mut args = Object::new();
        let mut v = Value::Array(Vec::new());
        for _ in 1..depth {
            v = Value::Array(vec![v]);
        }
        args.insert("v".into(), v);
        args
    }

    #[test]
    fn messages_qemu_would_refuse_before_reading_their_id_are_found() {
        let nested = |depth: usize| encode(&command("x", Some(arrays(depth))));
        // The command object, "arguments" and the arrays.
        assert_eq!(beyond_qemu_limits(&nested(QEMU_MAX_NESTING - 2)), None);
        let why = beyond_qemu_limits(&nested(QEMU_MAX_NESTING - 1)).unwrap();
        assert!(why.contains("1025 levels deep"), "{why}");
        // Brackets inside strings do not count.
        let mut args = Object::new();
        args.insert("s".into(), Value::from("[{\\\"".repeat(2000)));
        assert_eq!(beyond_qemu_limits(&encode(&command("x", Some(args)))), None);
        let mut big = vec![b'x'; QEMU_MAX_MESSAGE + 1];
        big.push(b'\n');
        assert!(beyond_qemu_limits(&big).unwrap().contains("64 MiB"));
    }
}
