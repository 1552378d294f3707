//! Property tests of the shorthand parser: it never panics, and JSON goes
//! through a `KEY=VALUE` value unchanged.

use proptest::prelude::*;
use qmp_shell::shorthand::{parse_value, tokenize, Parsed, Parser};
use serde_json::{Map, Number, Value};

/// Arbitrary JSON values (finite floats, big integers, any strings).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        "-?[1-9][0-9]{18,60}".prop_map(|t| Value::Number(t.parse::<Number>().unwrap())),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| Value::Number(Number::from_f64(f).unwrap())),
        any::<String>().prop_map(Value::String),
        "[a-z\"'\\\\ {}\\[\\]:,é😀\\u{7f}\\t]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Lines made of the characters that matter to the parser.
fn shell_line() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("transaction(".to_owned()),
        Just(")".to_owned()),
        Just(" ".to_owned()),
        Just("=".to_owned()),
        Just(".".to_owned()),
        "[a-z0-9]{1,3}",
        "[\\[\\]{}(),:'\"\\\\#\\n\\t +\\-.=_jexbrf0-9]{1,6}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parse_line_never_panics(lines in prop::collection::vec(shell_line(), 1..5)) {
        let mut p = Parser::new();
        for line in &lines {
            let _ = p.parse_line(line);
            let _ = p.prompt();
        }
    }

    #[test]
    fn parse_line_never_panics_on_any_string(line in any::<String>()) {
        let mut p = Parser::new();
        let _ = p.parse_line(&line);
        let _ = p.parse_line(&format!("cmd x={line}"));
        let _ = p.parse_line(&format!("cmd x=[{line}"));
        let _ = p.parse_line(&format!("cmd x={{{line}"));
        let _ = parse_value(&line);
    }

    #[test]
    fn json_round_trips(v in json_value()) {
        let wrapped = Value::Array(vec![v.clone()]);
        let text = serde_json::to_string(&wrapped).unwrap();
        prop_assert_eq!(parse_value(&text).unwrap(), wrapped.clone());
        if v.is_object() || v.is_array() {
            let text = serde_json::to_string(&v).unwrap();
            prop_assert_eq!(parse_value(&text).unwrap(), v.clone());
        }
        // Pretty JSON has newlines; as a value of a line it is still JSON.
        let pretty = serde_json::to_string_pretty(&wrapped).unwrap();
        prop_assert_eq!(parse_value(&pretty).unwrap(), wrapped);
    }

    #[test]
    fn tokens_never_contain_unquoted_whitespace(line in shell_line()) {
        for t in tokenize(&line) {
            prop_assert!(!t.is_empty());
        }
    }

    #[test]
    fn ints_round_trip(n in any::<i128>()) {
        let v = parse_value(&n.to_string()).unwrap();
        prop_assert_eq!(v.to_string(), n.to_string());
    }
}

fn deep(open: &str, close: &str, n: usize) -> String {
    format!("{}{}", open.repeat(n), close.repeat(n))
}

#[test]
fn huge_and_deep_inputs_do_not_overflow() {
    let mut p = Parser::new();
    for value in [
        "[".repeat(100_000),
        "{".repeat(100_000),
        "(".repeat(100_000),
        deep("[", "]", 100_000),
        deep("{\"a\":", "}", 100_000),
        deep("[(", ")]", 50_000),
        format!("[{}1]", "-".repeat(100_000)),
        format!("[1{}]", "+1j".repeat(100_000)),
        format!("['{}']", "a".repeat(100_000)),
        "9".repeat(100_000),
        deep("[", "]", 1000),
        deep("[", "]", 201),
        deep("[", "]", 200),
    ] {
        let _ = p.parse_line(&format!("cmd x={value}"));
        let _ = p.parse_line(&format!("transaction( t x={value} )"));
        let _ = parse_value(&value);
    }
    assert!(matches!(
        p.parse_line(&format!("cmd x={}", deep("[", "]", 1000))),
        Ok(Parsed::Command(_))
    ));
    assert!(p
        .parse_line(&format!("cmd x={}", deep("[", "]", 1001)))
        .is_err());
}

#[test]
fn deep_json_in_a_small_stack() {
    // The parser may run on any thread; deep JSON must not need a big stack.
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let v = parse_value(&deep("[", "]", 1000)).unwrap();
            // Take the value apart without recursion before it is dropped.
            let mut cur = v;
            while let Value::Array(mut items) = cur {
                cur = items.pop().unwrap_or(Value::Null);
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
