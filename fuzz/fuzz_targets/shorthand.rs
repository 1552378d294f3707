//! The shorthand parser on arbitrary input: every line of the input goes to
//! one `Parser` (so transactions open, collect and close across lines), and
//! the whole input goes to `parse_value` and `tokenize`.
//!
//! Checked: no panic, no hang, no stack overflow; every command produced has
//! the shape `{"execute": NAME, "arguments": {...}}`; and everything produced
//! can be sent as JSON: its rendering is valid JSON (no `NaN`/`Infinity`)
//! that renders back to the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qmp_shell::render::{to_string, Style};
use qmp_shell::shorthand::{parse_value, tokenize, Parsed, Parser};
use serde_json::Value;

/// Nesting depth, without recursion.
fn depth(v: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    max
}

/// What the parser produced must be sendable: valid JSON, stable under
/// parse-and-render.
fn check_sendable(v: &Value) {
    let compact = to_string(v, Style::default());
    assert!(compact.is_ascii(), "rendering is not ASCII: {compact}");
    // serde_json stops at 128 levels; the parser accepts up to 1000.
    if depth(v) > 120 {
        return;
    }
    let back: Value = match serde_json::from_str(&compact) {
        Ok(back) => back,
        Err(e) => panic!("parser produced a value that is not valid JSON ({e}): {compact}"),
    };
    assert_eq!(to_string(&back, Style::default()), compact);
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    let mut parser = Parser::new();
    for line in text.split('\n') {
        match parser.parse_line(line) {
            Ok(Parsed::Command(cmd)) => {
                let mut keys = cmd.keys();
                assert_eq!(keys.next().map(String::as_str), Some("execute"));
                assert_eq!(keys.next().map(String::as_str), Some("arguments"));
                assert!(keys.next().is_none());
                assert!(cmd["execute"].is_string());
                assert!(cmd["arguments"].is_object());
                check_sendable(&Value::Object(cmd));
            }
            Ok(Parsed::Queued) => assert!(parser.in_transaction()),
            Ok(Parsed::Empty) | Err(_) => {}
        }
        let _ = parser.prompt();
    }
    parser.abort_transaction();
    assert!(!parser.in_transaction());

    if let Ok(v) = parse_value(&text) {
        check_sendable(&v);
    }
    for token in tokenize(&text) {
        let _ = parse_value(&token);
    }
});
