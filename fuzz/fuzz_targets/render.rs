//! The `json.dumps` renderer on any JSON value.
//!
//! Checked: compact and pretty renderings (plain and coloured) never panic;
//! they are ASCII; colour codes removed, the coloured rendering is the plain
//! one; unless a float overflows (rendered `Infinity`, as Python does), each
//! rendering is valid JSON that parses back to a value rendering to the same
//! text (so numbers are compared as rendered: `1.50` and `1.5` are one float);
//! and the compact rendering of the pretty one's value is the sorted value
//! (not checked for values with serde_json's reserved raw-value key, which
//! serde_json itself may not read back).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qmp_shell::render::{self, to_string, Style};
use serde_json::Value;

const PLAIN: Style = Style {
    pretty: false,
    color: false,
};
const PRETTY: Style = Style {
    pretty: true,
    color: false,
};

/// Whether some float in `v` does not fit an `f64` (rendered as `Infinity`).
fn has_overflowing_float(v: &Value) -> bool {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Number(n) => {
                let t = n.as_str();
                if t.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
                    && !t.parse::<f64>().map_or(true, f64::is_finite)
                {
                    return true;
                }
            }
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    false
}

/// The key serde_json reserves for its raw values (the client reads
/// replies with its `raw_value` feature): an object whose first key it is
/// reads as a raw value, not an object, so a pretty rendering (keys sorted,
/// `$` before letters) of an object that has it may not parse back.
const RESERVED_KEY: &str = "$serde_json::private::RawValue";

/// Whether some object in `v` has [`RESERVED_KEY`].
fn has_reserved_key(v: &Value) -> bool {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                if map.contains_key(RESERVED_KEY) {
                    return true;
                }
                stack.extend(map.values());
            }
            _ => {}
        }
    }
    false
}

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let compact = to_string(&v, PLAIN);
    let pretty = to_string(&v, PRETTY);
    assert!(compact.is_ascii() && pretty.is_ascii());
    // The escape character itself is written `\u001b`, so stripping is exact.
    let color = to_string(
        &v,
        Style {
            pretty: false,
            color: true,
        },
    );
    assert_eq!(render::strip_color(&color), compact);
    let color_pretty = to_string(
        &v,
        Style {
            pretty: true,
            color: true,
        },
    );
    assert_eq!(render::strip_color(&color_pretty), pretty);

    if has_overflowing_float(&v) {
        assert!(compact.contains("Infinity"));
        return;
    }
    if has_reserved_key(&v) {
        return;
    }
    let back: Value = match serde_json::from_str(&compact) {
        Ok(back) => back,
        Err(e) => panic!("compact rendering is not JSON ({e}): {compact}"),
    };
    assert_eq!(to_string(&back, PLAIN), compact);
    let back_pretty: Value = match serde_json::from_str(&pretty) {
        Ok(back) => back,
        Err(e) => panic!("pretty rendering is not JSON ({e}): {pretty}"),
    };
    assert_eq!(to_string(&back_pretty, PRETTY), pretty);
    // Pretty sorts keys; rendering its value compactly and pretty again from
    // the compact value's re-parse must agree.
    assert_eq!(to_string(&back, PRETTY), pretty);
});
