//! Values: the text after `=` in `KEY=VALUE`.
//!
//! The reference's `_parse_value` tries, in order, Python's `int()`, the
//! words `true`/`false` in any case, and for text starting with `{` or `[`
//! first `json.loads` and then `ast.literal_eval` (with `true`/`false`/`null`
//! accepted as names); anything else is the text as typed. This module does
//! the same, with two fixes (REFERENCE.md defects 5 and 6):
//!
//! * a value containing a quote character (and not starting with `{`/`[`) is
//!   a string: the quoted runs lose their quotes and have their backslash
//!   escapes resolved;
//! * a value that parses but cannot be sent as JSON (a set, bytes, a complex
//!   number, `...`, NaN or an infinity, a string with a lone surrogate) is
//!   refused with an error instead of crashing the shell or sending invalid
//!   JSON.
//!
//! The JSON reader lives in [`super::json`], the Python literal reader in
//! [`super::python`]; the conversions to JSON scalars they share, in
//! [`super::scalar`].

use serde_json::Value;

use super::json::{self, MAX_JSON_DEPTH};
use super::scalar::{int_number, normalise_int};
use super::{lexer, python};

/// Why a value was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    /// It parsed, but JSON cannot carry it: what it is, and the value with
    /// `null` in place of what cannot be sent (the reference keeps reading
    /// the line, so a later key can still conflict with this one).
    Refused(String, Value),
    /// Nested deeper than [`MAX_JSON_DEPTH`].
    TooDeep,
}

impl Problem {
    /// The one-line error message, naming the key when there is one.
    pub(crate) fn message(&self, key: Option<&str>) -> String {
        let subject = match key {
            Some(k) => format!("Value for \"{k}\""),
            None => "Value".to_owned(),
        };
        match self {
            Problem::Refused(reason, _) => format!("{subject} cannot be sent as JSON: {reason}"),
            Problem::TooDeep => {
                format!("{subject} is nested too deeply (more than {MAX_JSON_DEPTH} levels)")
            }
        }
    }
}

/// Parse one value; see the module documentation.
pub(crate) fn parse(raw: &str) -> Result<Value, Problem> {
    let bracketed = raw.starts_with('{') || raw.starts_with('[');
    if !bracketed && raw.contains(['"', '\'']) {
        return Ok(Value::String(lexer::unquote(raw)));
    }
    if let Some(digits) = python_int(raw) {
        return Ok(Value::Number(int_number(&digits)));
    }
    if raw.eq_ignore_ascii_case("true") {
        return Ok(Value::Bool(true));
    }
    if raw.eq_ignore_ascii_case("false") {
        return Ok(Value::Bool(false));
    }
    if bracketed {
        match json::loads(raw) {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err((reason, v))) => return Err(Problem::Refused(reason, v)),
            Err(json::Failure::TooDeep) => return Err(Problem::TooDeep),
            Err(json::Failure::Invalid) => {}
        }
        if let Some(result) = python::literal(raw) {
            return result.map_err(|(reason, v)| Problem::Refused(reason, v));
        }
    }
    Ok(Value::String(raw.to_owned()))
}

// ---------------------------------------------------------------------------
// Python's int()

/// The zero of every run of ten Unicode decimal digits (category Nd) that
/// Python 3.11's `int()` accepts (Unicode 14.0). Each run is `zero..=zero+9`.
const DECIMAL_ZEROS: [u32; 66] = [
    0x30, 0x660, 0x6f0, 0x7c0, 0x966, 0x9e6, 0xa66, 0xae6, 0xb66, 0xbe6, 0xc66, 0xce6, 0xd66,
    0xde6, 0xe50, 0xed0, 0xf20, 0x1040, 0x1090, 0x17e0, 0x1810, 0x1946, 0x19d0, 0x1a80, 0x1a90,
    0x1b50, 0x1bb0, 0x1c40, 0x1c50, 0xa620, 0xa8d0, 0xa900, 0xa9d0, 0xa9f0, 0xaa50, 0xabf0, 0xff10,
    0x104a0, 0x10d30, 0x11066, 0x110f0, 0x11136, 0x111d0, 0x112f0, 0x11450, 0x114d0, 0x11650,
    0x116c0, 0x11730, 0x118e0, 0x11950, 0x11c50, 0x11d50, 0x11da0, 0x16a60, 0x16ac0, 0x16b50,
    0x1d7ce, 0x1d7d8, 0x1d7e2, 0x1d7ec, 0x1d7f6, 0x1e140, 0x1e2f0, 0x1e950, 0x1fbf0,
];

/// The value of a Unicode decimal digit, as Python's `int()` reads it.
fn decimal_digit(c: char) -> Option<u8> {
    let cp = u32::from(c);
    if c.is_ascii() {
        return c.is_ascii_digit().then(|| (cp - 0x30) as u8);
    }
    let i = DECIMAL_ZEROS.partition_point(|&z| z <= cp);
    let zero = DECIMAL_ZEROS[i.checked_sub(1)?];
    (cp - zero < 10).then(|| (cp - zero) as u8)
}

/// Whitespace that `int()` strips: ASCII `\t\n\v\f\r` and space, and every
/// non-ASCII character for which `str.isspace()` holds (but not U+001C..1F).
fn int_space(c: char) -> bool {
    matches!(c, '\t'..='\r' | ' ') || (!c.is_ascii() && c.is_whitespace())
}

/// If Python's `int(raw)` accepts `raw`, its value as normalised decimal
/// text (`-` only for negative values, no leading zeros).
///
/// Accepted: surrounding whitespace, one optional sign, then decimal digits
/// (any Unicode decimal digits) with single underscores between digits.
/// Unlike Python there is no 4300-digit limit.
pub(crate) fn python_int(raw: &str) -> Option<String> {
    let s = raw.trim_matches(int_space);
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut digits = String::with_capacity(body.len());
    let mut after_digit = false;
    for c in body.chars() {
        if c == '_' {
            if !after_digit {
                return None;
            }
            after_digit = false;
        } else {
            digits.push(char::from(b'0' + decimal_digit(c)?));
            after_digit = true;
        }
    }
    if !after_digit {
        return None; // empty, or a trailing underscore
    }
    Some(normalise_int(negative, &digits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn val(raw: &str) -> Value {
        parse(raw).unwrap_or_else(|e| panic!("{raw}: {e:?}"))
    }

    fn refused(raw: &str) -> String {
        match parse(raw) {
            Err(Problem::Refused(r, _)) => r,
            other => panic!("{raw}: expected refusal, got {other:?}"),
        }
    }

    fn num_text(v: &Value) -> String {
        match v {
            Value::Number(n) => n.to_string(),
            other => panic!("not a number: {other:?}"),
        }
    }

    #[test]
    fn ints_like_python_int() {
        assert_eq!(val("1"), json!(1));
        assert_eq!(val("-5"), json!(-5));
        assert_eq!(val("+5"), json!(5));
        assert_eq!(val("007"), json!(7));
        assert_eq!(num_text(&val("-0")), "0");
        assert_eq!(num_text(&val("-000")), "0");
        assert_eq!(val("1_000"), json!(1000));
        assert_eq!(val("0_0"), json!(0));
        for not_int in [
            "1__0", "_1", "1_", "-_1", "+", "-", "", "1.0", "1e3", "0x10", "+ 1", "--1",
        ] {
            assert_eq!(val(not_int), json!(not_int), "{not_int}");
        }
    }

    #[test]
    fn big_ints_exact() {
        let big = "123456789012345678901234567890123456789";
        assert_eq!(num_text(&val(big)), big);
        assert_eq!(num_text(&val(&format!("-{big}"))), format!("-{big}"));
        let huge = "9".repeat(5000);
        assert_eq!(num_text(&val(&huge)), huge);
    }

    #[test]
    fn unicode_digits_and_spaces() {
        assert_eq!(val("١٢"), json!(12)); // Arabic-Indic
        assert_eq!(val("1_٢"), json!(12));
        assert_eq!(val("１２３"), json!(123)); // fullwidth
        assert_eq!(val("𝟗"), json!(9)); // mathematical bold
        assert_eq!(val("\u{a0}7 "), json!(7));
        assert_eq!(val("\x0b1\r"), json!(1));
        assert_eq!(val("\x1c1"), json!("\x1c1"));
        assert_eq!(val("٠x1"), json!("٠x1"));
        assert_eq!(val("²"), json!("²")); // a digit, but not a decimal one
    }

    #[test]
    fn bools_any_case() {
        assert_eq!(val("true"), json!(true));
        assert_eq!(val("TRUE"), json!(true));
        assert_eq!(val("fAlSe"), json!(false));
        assert_eq!(val("yes"), json!("yes"));
        assert_eq!(val("null"), json!("null"));
        assert_eq!(val("True1"), json!("True1"));
    }

    #[test]
    fn quoted_values_are_strings() {
        assert_eq!(val("\"info version\""), json!("info version"));
        assert_eq!(val("a\"b c\"d"), json!("ab cd"));
        assert_eq!(val("\"1\""), json!("1"));
        assert_eq!(val("'true'"), json!("true"));
        assert_eq!(val("'{\"a\":1}'"), json!("{\"a\":1}"));
        assert_eq!(val(r#""a\"b""#), json!("a\"b"));
        assert_eq!(val(r#"x\y"#), json!("x\\y"));
        assert_eq!(val("\"\""), json!(""));
    }

    #[test]
    fn plain_strings() {
        assert_eq!(val("abc"), json!("abc"));
        assert_eq!(val(""), json!(""));
        assert_eq!(val("a=b"), json!("a=b"));
        assert_eq!(val("é✓😀"), json!("é✓😀"));
        assert_eq!(val("1.5"), json!("1.5"));
    }

    #[test]
    fn json_values() {
        assert_eq!(
            val(r#"{"a":[1,2,{"b":null}]}"#),
            json!({"a": [1, 2, {"b": null}]})
        );
        assert_eq!(val("[]"), json!([]));
        assert_eq!(val("{}"), json!({}));
        assert_eq!(val("[true,false,null]"), json!([true, false, null]));
        assert_eq!(val(r#"{"a":1,"b":2,"a":3}"#), json!({"a": 3, "b": 2}));
        let v = val(r#"{"a":1,"b":2,"a":3}"#);
        assert_eq!(
            v.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(
            num_text(&val("[123456789012345678901234567890]")[0]),
            "123456789012345678901234567890"
        );
        assert_eq!(val(r#"["\u00e9\ud83d\ude00"]"#), json!(["é😀"]));
    }

    #[test]
    fn floats_keep_float_text() {
        assert_eq!(num_text(&val("[1.5]")[0]), "1.5");
        assert_eq!(num_text(&val("[1.0]")[0]), "1.0");
        assert_eq!(num_text(&val("[-0.0]")[0]), "-0.0");
        assert_eq!(num_text(&val("[1E2]")[0]), "100.0");
        let t = num_text(&val("[1e16]")[0]);
        assert!(t.contains('e') || t.contains('.'), "{t}");
        assert_eq!(num_text(&val("[1e-400]")[0]), "0.0");
    }

    #[test]
    fn refusals() {
        assert_eq!(refused("[NaN]"), "NaN is not supported");
        assert!(refused("[Infinity]").contains("infinite"));
        assert!(refused("[-Infinity]").contains("infinite"));
        assert!(refused("[1e400]").contains("infinite"));
        assert!(refused(r#"["\ud800"]"#).contains("lone surrogate (\\ud800)"));
        assert!(refused("{1,2}").contains("sets"));
        assert!(refused("[b'x']").contains("bytes"));
        assert!(refused("[1j]").contains("complex"));
        assert!(refused("[...]").contains("Ellipsis"));
    }

    #[test]
    fn problem_messages() {
        let p = Problem::Refused("sets are not supported".into(), Value::Null);
        assert_eq!(
            p.message(Some("a.b")),
            "Value for \"a.b\" cannot be sent as JSON: sets are not supported"
        );
        assert_eq!(
            p.message(None),
            "Value cannot be sent as JSON: sets are not supported"
        );
        assert_eq!(
            Problem::TooDeep.message(Some("x")),
            "Value for \"x\" is nested too deeply (more than 1000 levels)"
        );
    }

    #[test]
    fn not_literals_stay_raw() {
        for raw in [
            "{a:1}", "[1+2]", "[x]", "[nan]", "[1,", "{", "[", "[1]]", "[07]", "[f'x']",
        ] {
            assert_eq!(val(raw), json!(raw), "{raw}");
        }
    }

    #[test]
    fn deep_nesting() {
        let ok = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        assert!(parse(&ok).is_ok());
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH + 1),
            "]".repeat(MAX_JSON_DEPTH + 1)
        );
        assert_eq!(parse(&deep), Err(Problem::TooDeep));
        assert_eq!(parse(&"[".repeat(100_000)), Err(Problem::TooDeep));
        // Invalid JSON nested more than Python's 200 levels: the raw string.
        let py = format!("{}x{}", "[".repeat(300), "]".repeat(300));
        assert_eq!(val(&py), json!(py));
    }
}
