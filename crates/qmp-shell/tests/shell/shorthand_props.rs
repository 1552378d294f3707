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
        let tokens = tokenize(&line);
        let mut rest = line.as_str();
        for t in &tokens {
            prop_assert!(!t.is_empty());
            // Every whitespace character of a token is inside a quoted run.
            prop_assert!(
                is_token(t),
                "token {:?} of {:?} has whitespace outside quotes (or is no token)",
                t,
                line
            );
            // Tokens are taken from the line in order, and what lies between
            // them is whitespace or a quote that opens no run.
            let at = rest.find(t.as_str());
            prop_assert!(at.is_some(), "token {:?} not found in order in {:?}", t, line);
            let at = at.unwrap_or_default();
            let gap = &rest[..at];
            prop_assert!(
                gap.chars().all(|c| is_python_space(c) || c == '"' || c == '\''),
                "{:?} between tokens of {:?} was dropped",
                gap,
                line
            );
            rest = &rest[at + t.len()..];
        }
        prop_assert!(
            rest.chars().all(|c| is_python_space(c) || c == '"' || c == '\''),
            "{:?} after the last token of {:?} was dropped",
            rest,
            line
        );
    }

    #[test]
    fn ints_round_trip(n in any::<i128>()) {
        let v = parse_value(&n.to_string()).unwrap();
        prop_assert_eq!(v.to_string(), n.to_string());
    }
}

/// Python's `str.isspace()`, which is what `\s` matches in the reference's
/// token regex: Unicode whitespace plus the separators U+001C..U+001F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Whether `t` is one token as the reference's grammar defines it: one or
/// more pieces, each a character that is neither whitespace nor a quote, or
/// a quoted run (`"..."` or `'...'`, where a backslash escapes the next
/// character) that may hold anything, whitespace included. Written
/// independently of the parser: the set of positions reachable after whole
/// pieces, grown left to right.
fn is_token(t: &str) -> bool {
    let chars: Vec<char> = t.chars().collect();
    let n = chars.len();
    // reachable[i]: `chars[..i]` is a sequence of whole pieces.
    let mut reachable = vec![false; n + 1];
    reachable[0] = true;
    for i in 0..n {
        if !reachable[i] {
            continue;
        }
        let c = chars[i];
        if c == '"' || c == '\'' {
            // Every position where a quoted run opened at `i` can close.
            // Inside, `\\.` or any character but the quote; a backslash may
            // also stand alone (the regex backtracks to that).
            let mut inside = vec![false; n + 1];
            inside[i + 1] = true;
            for j in i + 1..n {
                if !inside[j] {
                    continue;
                }
                if chars[j] == c {
                    reachable[j + 1] = true;
                } else {
                    inside[j + 1] = true;
                }
                if chars[j] == '\\' && j + 1 < n {
                    inside[j + 2] = true;
                }
            }
        } else if !is_python_space(c) {
            reachable[i + 1] = true;
        }
    }
    n > 0 && reachable[n]
}

#[test]
fn is_token_checks_the_grammar() {
    for good in [
        "a",
        "a=1",
        "x=\"a b\"",
        "'a b'c",
        "\"a\\\" b\"",
        "\"a\\\"",
        "a\\",
    ] {
        assert!(is_token(good), "{good:?}");
    }
    // A backslash escapes nothing outside quotes.
    for bad in [
        "", "a b", "a\tb", "a\u{1f}b", "\"a b", "'a", " a", "a\u{a0}b", "a\\ b",
    ] {
        assert!(!is_token(bad), "{bad:?}");
    }
    // Python's str.isspace(), listed.
    const PYTHON_SPACES: &[u32] = &[
        0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001,
        0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029,
        0x202f, 0x205f, 0x3000,
    ];
    for c in (0..0x11_0000).filter_map(char::from_u32) {
        assert_eq!(
            is_python_space(c),
            PYTHON_SPACES.contains(&(c as u32)),
            "U+{:04X}",
            c as u32
        );
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
