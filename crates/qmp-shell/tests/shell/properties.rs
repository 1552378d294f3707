//! Property tests of the renderer and the shorthand parser together:
//! `render` output is JSON that means the value rendered (compact and
//! pretty), rendering straight from JSON text gives the same bytes as
//! rendering the value read from it (and refuses exactly what `serde_json`
//! refuses), the shorthand parser reads it back, and `Parser::parse_line`
//! never panics.
//!
//! The fuzz targets in `fuzz/` check the same things on mutated inputs; these
//! run with `cargo test`.

use proptest::prelude::*;
use qmp_shell::render::{self, python_float_repr, to_string, Style};
use qmp_shell::shorthand::{parse_value, tokenize, Parser};
use serde_json::{Map, Number, Value};

const COMPACT: Style = Style {
    pretty: false,
    color: false,
};
const PRETTY: Style = Style {
    pretty: true,
    color: false,
};

/// JSON values: any strings, integers beyond 64 bits, finite floats, objects
/// and arrays nested up to 4 deep.
fn json_value() -> impl Strategy<Value = Value> {
    let string = prop_oneof![
        any::<String>(),
        "[a-z\"'\\\\ {}\\[\\]:,=.()é😀\\u{7f}\\u{1b}\\t\\n\\u{0}]{0,10}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<u64>().prop_map(|n| Value::Number(n.into())),
        "-?[1-9][0-9]{19,50}".prop_map(|t| Value::Number(t.parse::<Number>().unwrap())),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| Value::Number(Number::from_f64(f).unwrap())),
        prop_oneof![
            Just(0.0),
            Just(-0.0),
            Just(1e16),
            Just(1e-5),
            Just(0.1),
            Just(f64::MAX),
            Just(f64::MIN_POSITIVE),
            Just(5e-324)
        ]
        .prop_map(|f| Value::Number(Number::from_f64(f).unwrap())),
        string.clone().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((string.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Whether a number's text is an integer (as opposed to a float).
fn is_integer(n: &Number) -> bool {
    !n.as_str().bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
}

/// Numbers equal in meaning: integers by digits, floats by `f64` value.
fn same_number(a: &Number, b: &Number) -> bool {
    if is_integer(a) != is_integer(b) {
        return false;
    }
    if is_integer(a) {
        let canon = |t: &str| -> String {
            let (neg, digits) = t.strip_prefix('-').map_or((false, t), |d| (true, d));
            let digits = digits.trim_start_matches('0');
            match (neg, digits.is_empty()) {
                (_, true) => "0".to_owned(),
                (true, false) => format!("-{digits}"),
                (false, false) => digits.to_owned(),
            }
        };
        canon(a.as_str()) == canon(b.as_str())
    } else {
        let fa: f64 = a.as_str().parse().unwrap();
        let fb: f64 = b.as_str().parse().unwrap();
        fa == fb && fa.is_sign_negative() == fb.is_sign_negative()
    }
}

/// `a` and `b` are the same value, numbers compared by meaning. With
/// `ordered`, object keys must come in the same order.
fn same(a: &Value, b: &Value, ordered: bool) -> Result<(), String> {
    let fail = || Err(format!("{a} != {b}"));
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if same_number(x, y) {
                Ok(())
            } else {
                fail()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return fail();
            }
            x.iter().zip(y).try_for_each(|(x, y)| same(x, y, ordered))
        }
        (Value::Object(x), Value::Object(y)) => {
            if x.len() != y.len() {
                return fail();
            }
            if ordered && !x.keys().eq(y.keys()) {
                return fail();
            }
            for (k, xv) in x {
                match y.get(k) {
                    Some(yv) => same(xv, yv, ordered)?,
                    None => return fail(),
                }
            }
            Ok(())
        }
        _ if a == b => Ok(()),
        _ => fail(),
    }
}

/// Every object in `v` has its keys in code point order.
fn keys_sorted(v: &Value) -> bool {
    match v {
        Value::Array(items) => items.iter().all(keys_sorted),
        Value::Object(map) => {
            map.keys().zip(map.keys().skip(1)).all(|(a, b)| a < b) && map.values().all(keys_sorted)
        }
        _ => true,
    }
}

/// Lines from the characters the shorthand grammar cares about.
fn grammar_line() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[{}\\[\\]()'\"\\\\=. ,:a1\\-_]{1,8}",
        1 => Just("transaction(".to_owned()),
        1 => Just(" )".to_owned()),
        1 => Just("x=".to_owned()),
        1 => Just("a.b.c=".to_owned()),
        1 => Just("True".to_owned()),
        1 => Just("1e400".to_owned()),
        1 => Just("\\u00e9".to_owned()),
    ];
    prop::collection::vec(piece, 0..10).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn compact_render_is_json_of_the_value(v in json_value()) {
        let text = to_string(&v, COMPACT);
        prop_assert!(text.is_ascii(), "{}", text);
        let back: Value = serde_json::from_str(&text)
            .map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        same(&v, &back, true).map_err(TestCaseError::fail)?;
        prop_assert_eq!(to_string(&back, COMPACT), text);
    }

    #[test]
    fn pretty_render_is_json_of_the_value_sorted(v in json_value()) {
        let text = to_string(&v, PRETTY);
        prop_assert!(text.is_ascii(), "{}", text);
        let back: Value = serde_json::from_str(&text)
            .map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        same(&v, &back, false).map_err(TestCaseError::fail)?;
        prop_assert!(keys_sorted(&back), "{}", text);
        prop_assert_eq!(to_string(&back, PRETTY), text.clone());
        // Rendering compactly loses nothing pretty keeps.
        let via_compact: Value = serde_json::from_str(&to_string(&v, COMPACT)).unwrap();
        prop_assert_eq!(to_string(&via_compact, PRETTY), text);
    }

    #[test]
    fn colour_is_only_added_codes(v in json_value(), pretty in any::<bool>()) {
        let plain = to_string(&v, Style { pretty, color: false });
        let colored = to_string(&v, Style { pretty, color: true });
        let stripped = render::strip_color(&colored);
        prop_assert_eq!(stripped, plain);
    }

    #[test]
    fn shorthand_reads_compact_render_back(v in json_value()) {
        // Objects and arrays: a `KEY=VALUE` value starting with `{` or `[`
        // is JSON; wrap scalars so every generated value is exercised.
        let v = if v.is_object() || v.is_array() { v } else { Value::Array(vec![v]) };
        let text = to_string(&v, COMPACT);
        let parsed = parse_value(&text)
            .map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        same(&v, &parsed, true).map_err(TestCaseError::fail)?;
        prop_assert_eq!(to_string(&parsed, COMPACT), text);
    }

    #[test]
    fn text_rendering_is_the_rendering_of_the_value_read(
        v in json_value(),
        form in 0..3u8,
        pretty in any::<bool>(),
        color in any::<bool>(),
    ) {
        // Compact, spaced over lines, and full of escapes (ours).
        let text = match form {
            0 => serde_json::to_string(&v).unwrap(),
            1 => serde_json::to_string_pretty(&v).unwrap(),
            _ => to_string(&v, COMPACT),
        };
        let style = Style { pretty, color };
        let read: Value = serde_json::from_str(&text).unwrap();
        let got = render::from_text(text.as_bytes(), style, None);
        prop_assert_eq!(got, Some(to_string(&read, style)), "{}", text);
    }

    #[test]
    fn text_rendering_refuses_exactly_what_serde_json_refuses(
        v in json_value(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), r#"[ \\"{}\[\]:,0-9.eE+\-tfnulu/\x00\x1f\x7fé]?"#), 1..4),
        pretty in any::<bool>(),
    ) {
        // Valid text, then a few characters replaced, inserted or removed.
        let mut chars: Vec<char> = to_string(&v, COMPACT).chars().collect();
        for (at, with) in &edits {
            let i = at.index(chars.len() + 1);
            match (with.chars().next(), i < chars.len()) {
                (Some(c), true) if i % 2 == 0 => chars[i] = c,
                (Some(c), _) => chars.insert(i, c),
                (None, true) => { chars.remove(i); }
                (None, false) => {}
            }
        }
        let text: String = chars.into_iter().collect();
        let style = Style { pretty, color: false };
        let read = serde_json::from_str::<Value>(&text).ok();
        let got = render::from_text(text.as_bytes(), style, None);
        prop_assert_eq!(got, read.map(|r| to_string(&r, style)), "{}", text);
    }

    #[test]
    fn python_float_repr_round_trips(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
        let text = python_float_repr(f);
        let back: f64 = text.parse().unwrap();
        prop_assert_eq!(back.to_bits(), f.to_bits(), "{}", text);
        prop_assert!(text.contains('.') || text.contains('e'), "{}", text);
    }

    #[test]
    fn parse_line_never_panics_on_arbitrary_strings(lines in prop::collection::vec(any::<String>(), 1..4)) {
        let mut p = Parser::new();
        for line in &lines {
            let _ = p.parse_line(line);
            let _ = tokenize(line);
            let _ = parse_value(line);
        }
    }

    #[test]
    fn parse_line_never_panics_on_grammar_soup(lines in prop::collection::vec(grammar_line(), 1..6)) {
        let mut p = Parser::new();
        for line in &lines {
            let _ = p.parse_line(line);
            let _ = p.parse_line(&format!("cmd {line}"));
            let _ = p.parse_line(&format!("cmd k={line}"));
            let _ = parse_value(line);
            let _ = p.prompt();
        }
    }
}
