//! A JSON reader that accepts exactly what Python's `json.loads` accepts.
//!
//! Differences from a strict JSON parser, all Python's: `NaN`, `Infinity`
//! and `-Infinity` are read (and then refused by us, since JSON cannot carry
//! them); numbers with a fraction or exponent are floats (`1e400` becomes an
//! infinity and is refused too); integers keep every digit; a repeated key
//! keeps its first position and its last value; a `\uXXXX` escape may leave
//! a lone surrogate (refused). Nesting deeper than [`MAX_JSON_DEPTH`] is an
//! error of its own (the reference dies with a `RecursionError`).

use serde_json::{Map, Value};

use super::scalar::{code_points_to_string, float_value, int_number, normalise_int};

/// Deepest nesting of JSON containers accepted. Python's `json.loads` raises
/// `RecursionError` (a traceback in the reference) a little before this.
pub(crate) const MAX_JSON_DEPTH: usize = 1000;

/// Why the text was not taken as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Not JSON: try the next interpretation.
    Invalid,
    /// Nested too deeply: give up on the value.
    TooDeep,
}

/// Read `text` as `json.loads` would. `Ok(Err((reason, value)))` means it
/// is JSON Python accepts but that cannot be sent: `reason` names the first
/// such thing found, `value` has `null` in its place.
///
/// The reader keeps its own stack of open containers, so deep nesting
/// costs heap, not call stack.
pub(crate) fn loads(text: &str) -> Result<Result<Value, (String, Value)>, Failure> {
    let mut reader = Reader {
        s: text.as_bytes(),
        text,
        pos: 0,
        refusal: None,
    };
    reader.skip_ws();
    let value = reader.document()?;
    reader.skip_ws();
    if reader.pos != reader.s.len() {
        return Err(Failure::Invalid);
    }
    Ok(match reader.refusal {
        Some(reason) => Err((reason, value)),
        None => Ok(value),
    })
}

struct Reader<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
    refusal: Option<String>,
}

/// An open container: its items so far (and, for an object, the key whose
/// value is being read).
enum Open {
    Array(Vec<Value>),
    Object(Map<String, Value>, String),
}

type R<T> = Result<T, Failure>;

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, word: &str) -> bool {
        if self.s[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    fn refuse(&mut self, reason: String) -> Value {
        self.refusal.get_or_insert(reason);
        Value::Null
    }

    /// One complete value at the cursor.
    fn document(&mut self) -> R<Value> {
        let mut stack: Vec<Open> = Vec::new();
        'value: loop {
            // Read a value, or open a container and go read its first item.
            let mut done = match self.peek().ok_or(Failure::Invalid)? {
                open @ (b'[' | b'{') => {
                    if stack.len() >= MAX_JSON_DEPTH {
                        return Err(Failure::TooDeep);
                    }
                    self.pos += 1;
                    self.skip_ws();
                    if open == b'[' {
                        if self.peek() == Some(b']') {
                            self.pos += 1;
                            Value::Array(Vec::new())
                        } else {
                            stack.push(Open::Array(Vec::new()));
                            continue 'value;
                        }
                    } else if self.peek() == Some(b'}') {
                        self.pos += 1;
                        Value::Object(Map::new())
                    } else {
                        let key = self.key()?;
                        stack.push(Open::Object(Map::new(), key));
                        continue 'value;
                    }
                }
                _ => self.scalar()?,
            };
            // Hand the finished value to the open containers, closing them
            // as their closing brackets come.
            loop {
                let Some(top) = stack.last_mut() else {
                    return Ok(done);
                };
                match top {
                    Open::Array(items) => items.push(done),
                    Open::Object(map, key) => {
                        // IndexMap: a repeated key keeps its first position.
                        map.insert(std::mem::take(key), done);
                    }
                }
                self.skip_ws();
                let close = match (self.peek(), &mut *top) {
                    (Some(b','), Open::Array(_)) => {
                        self.pos += 1;
                        self.skip_ws();
                        continue 'value;
                    }
                    (Some(b','), Open::Object(_, key)) => {
                        self.pos += 1;
                        self.skip_ws();
                        *key = self.key()?;
                        continue 'value;
                    }
                    (Some(b']'), Open::Array(_)) | (Some(b'}'), Open::Object(..)) => true,
                    _ => false,
                };
                if !close {
                    return Err(Failure::Invalid);
                }
                self.pos += 1;
                done = match stack.pop() {
                    Some(Open::Array(items)) => Value::Array(items),
                    Some(Open::Object(map, _)) => Value::Object(map),
                    None => return Err(Failure::Invalid),
                };
            }
        }
    }

    /// `"KEY" :` and the whitespace after it.
    fn key(&mut self) -> R<String> {
        if self.peek() != Some(b'"') {
            return Err(Failure::Invalid);
        }
        self.pos += 1;
        let cps = self.string()?;
        let key = match code_points_to_string(&cps) {
            Ok(k) => k,
            Err(reason) => {
                self.refuse(reason);
                String::new()
            }
        };
        self.skip_ws();
        if self.peek() != Some(b':') {
            return Err(Failure::Invalid);
        }
        self.pos += 1;
        self.skip_ws();
        Ok(key)
    }

    /// A string, number or word.
    fn scalar(&mut self) -> R<Value> {
        match self.peek().ok_or(Failure::Invalid)? {
            b'"' => {
                self.pos += 1;
                let cps = self.string()?;
                Ok(match code_points_to_string(&cps) {
                    Ok(s) => Value::String(s),
                    Err(reason) => self.refuse(reason),
                })
            }
            b'n' if self.eat("null") => Ok(Value::Null),
            b't' if self.eat("true") => Ok(Value::Bool(true)),
            b'f' if self.eat("false") => Ok(Value::Bool(false)),
            b'N' if self.eat("NaN") => Ok(self.refuse("NaN is not supported".into())),
            b'I' | b'-' if self.eat("Infinity") || self.eat("-Infinity") => {
                Ok(self.refuse("infinite numbers (Infinity) are not supported".into()))
            }
            _ => self.number(),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// Python's `_match_number`: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`.
    fn number(&mut self) -> R<Value> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Failure::Invalid),
        }
        let int_end = self.pos;
        let mut is_float = false;
        if self.peek() == Some(b'.') && matches!(self.s.get(self.pos + 1), Some(b'0'..=b'9')) {
            self.pos += 1;
            self.digits();
            is_float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let e_start = self.pos;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() > 0 {
                is_float = true;
            } else {
                self.pos = e_start;
            }
        }
        if is_float {
            // Python's float(): correctly rounded, overflow to infinity.
            let f: f64 = self.text[start..self.pos]
                .parse()
                .map_err(|_| Failure::Invalid)?;
            Ok(match float_value(f) {
                Ok(v) => v,
                Err(reason) => self.refuse(reason),
            })
        } else {
            let text = normalise_int(negative, &self.text[int_start..int_end]);
            Ok(Value::Number(int_number(&text)))
        }
    }

    /// The rest of a string after its opening quote, as code points (a
    /// `\uXXXX` escape may give a lone surrogate).
    fn string(&mut self) -> R<Vec<u32>> {
        let mut out = Vec::new();
        loop {
            let c = self.text[self.pos..]
                .chars()
                .next()
                .ok_or(Failure::Invalid)?;
            self.pos += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let e = self.peek().ok_or(Failure::Invalid)?;
                    self.pos += 1;
                    let cp = match e {
                        b'"' => 0x22,
                        b'\\' => 0x5c,
                        b'/' => 0x2f,
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => 0x0a,
                        b'r' => 0x0d,
                        b't' => 0x09,
                        b'u' => self.unicode_escape()?,
                        _ => return Err(Failure::Invalid),
                    };
                    out.push(cp);
                }
                c if u32::from(c) < 0x20 => return Err(Failure::Invalid),
                c => out.push(u32::from(c)),
            }
        }
    }

    /// After `\u`: one code unit, or a joined surrogate pair.
    fn unicode_escape(&mut self) -> R<u32> {
        let hi = self.hex4()?;
        if (0xD800..0xDC00).contains(&hi) && self.s[self.pos..].starts_with(b"\\u") {
            let save = self.pos;
            self.pos += 2;
            let lo = self.hex4()?;
            if (0xDC00..0xE000).contains(&lo) {
                return Ok(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00));
            }
            self.pos = save;
        }
        Ok(hi)
    }

    fn hex4(&mut self) -> R<u32> {
        let hex = self.s.get(self.pos..self.pos + 4).ok_or(Failure::Invalid)?;
        let mut v = 0;
        for &h in hex {
            v = v * 16 + char::from(h).to_digit(16).ok_or(Failure::Invalid)?;
        }
        self.pos += 4;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(text: &str) -> Value {
        match loads(text) {
            Ok(Ok(v)) => v,
            other => panic!("{text}: {other:?}"),
        }
    }

    fn invalid(text: &str) {
        assert_eq!(loads(text), Err(Failure::Invalid), "{text}");
    }

    #[test]
    fn accepts_what_python_accepts() {
        assert_eq!(ok(" [1, 2 ,3 ] \n"), json!([1, 2, 3]));
        assert_eq!(ok("{\"a\" : {\"b\":[]}}"), json!({"a": {"b": []}}));
        assert_eq!(
            ok("[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\\u00E9\"]"),
            json!(["\"\\/\u{8}\u{c}\n\r\tAé"])
        );
        assert_eq!(ok("[\"\u{7f}é😀\"]"), json!(["\u{7f}é😀"]));
        assert_eq!(ok("[-0]").to_string(), "[0]");
        assert_eq!(ok("[0.5e1]").to_string(), "[5.0]");
        assert_eq!(ok("[1E+2,1e-2]").to_string(), "[100.0,0.01]");
    }

    #[test]
    fn rejects_what_python_rejects() {
        for t in [
            "[01]",
            "[1.]",
            "[.5]",
            "[+1]",
            "[1e]",
            "[1,]",
            "{\"a\":1,}",
            "{'a':1}",
            "{a:1}",
            "[\"a\tb\"]",
            "[\"\\x41\"]",
            "[\"\\u12\"]",
            "[\"\\ud800\\u12x4\"]",
            "[nan]",
            "[inf]",
            "[True]",
            "[1] x",
            "[",
            "[1",
            "{\"a\"}",
            "[\"a]",
            "[-]",
            "[- 1]",
            "[\"\\\"]",
            "{1:2}",
        ] {
            invalid(t);
        }
    }

    #[test]
    fn refusals() {
        assert!(matches!(loads("[NaN]"), Ok(Err((r, _))) if r.contains("NaN")));
        assert!(matches!(loads("[Infinity]"), Ok(Err((r, _))) if r.contains("infinite")));
        assert!(matches!(loads("[-Infinity]"), Ok(Err((r, _))) if r.contains("infinite")));
        assert!(matches!(loads("[1e999]"), Ok(Err((r, _))) if r.contains("infinite")));
        assert!(matches!(loads("[\"\\udc00\"]"), Ok(Err((r, _))) if r.contains("surrogate")));
        assert!(matches!(loads("{\"\\ud800x\":1}"), Ok(Err((r, _))) if r.contains("surrogate")));
        // Refusal only when the whole text is JSON.
        invalid("[NaN, x]");
    }

    #[test]
    fn surrogate_pairs_join() {
        assert_eq!(ok("[\"\\ud83d\\ude00\"]"), json!(["😀"]));
        assert!(matches!(loads("[\"\\ud83d\\u0041\"]"), Ok(Err(_))));
    }

    #[test]
    fn depth() {
        let n = MAX_JSON_DEPTH;
        assert!(loads(&format!("{}{}", "[".repeat(n), "]".repeat(n))).is_ok());
        assert_eq!(loads(&"[".repeat(n + 1)), Err(Failure::TooDeep));
        assert_eq!(loads(&"{\"a\":".repeat(n + 1)), Err(Failure::TooDeep));
    }

    #[test]
    fn duplicate_keys() {
        let v = ok("{\"b\":1,\"a\":2,\"b\":3}");
        assert_eq!(v.to_string(), "{\"b\":3,\"a\":2}");
    }
}
