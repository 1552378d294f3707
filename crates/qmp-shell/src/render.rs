//! JSON output, byte for byte as Python's `json.dumps` prints it.
//!
//! The reference shell prints every value with `json.dumps(obj)` (compact)
//! or, with `-p`, `json.dumps(obj, indent=4, sort_keys=True)` (pretty). This
//! module reproduces both exactly:
//!
//! * compact: items separated by `, `, keys followed by `: `, the map's own
//!   key order kept;
//! * pretty: an indent of 4 spaces, items separated by `,` and a line break
//!   (no space before it), keys sorted by code point, and `{}` / `[]` for
//!   empty containers;
//! * strings with `ensure_ascii`: `\"`, `\\`, `\n \r \t \b \f`, and every other
//!   character outside printable ASCII (`' '..='~'`, so DEL too) as `\uXXXX`
//!   in lowercase hex, with a surrogate pair above U+FFFF;
//! * integers in full, whatever their size; floats as Python's `repr`
//!   (see [`python_float_repr`]), `Infinity`/`-Infinity`/`NaN` for values
//!   that do not fit an `f64`.
//!
//! With [`Style::color`] keys, strings, numbers and literals are wrapped in
//! ANSI colour codes; removing those codes gives the uncoloured output.
//!
//! The renderer writes straight into one `String`, never allocates per
//! token, and walks the value with an explicit stack, so no nesting depth can
//! overflow the call stack.

use std::fmt::{self, Write as _};

use serde_json::{Map, Number, Value};

mod raw;

/// How JSON is printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Style {
    /// `json.dumps(obj, indent=4, sort_keys=True)` instead of `json.dumps(obj)`.
    pub pretty: bool,
    /// Wrap keys, strings, numbers and `true`/`false`/`null` in ANSI colours.
    pub color: bool,
}

/// Python `json.dumps` rendering of `value`.
///
/// Compact (`pretty: false`) is `json.dumps(value)`; pretty is
/// `json.dumps(value, indent=4, sort_keys=True)`. No trailing newline.
pub fn to_string(value: &Value, style: Style) -> String {
    let mut out = String::with_capacity(initial_capacity(value));
    write_into(&mut out, value, style);
    out
}

/// Appends the Python `json.dumps` rendering of `value` to `out`.
///
/// See [`to_string`]; nothing is written besides the rendering itself.
pub fn write_into(out: &mut String, value: &Value, style: Style) {
    let mut renderer = Renderer {
        out,
        pretty: style.pretty,
        color: style.color,
        stack: Vec::new(),
        spill: None,
        error: None,
    };
    renderer.run(value);
}

/// How much rendered text [`write_to`] holds before handing it to the writer.
const SPILL_AT: usize = 32 * 1024;

/// Writes the Python `json.dumps` rendering of `value` to `w`, in pieces of
/// about 32 KiB, so that a huge reply is never held whole as text.
///
/// The bytes written are exactly those of [`to_string`].
pub(crate) fn write_to<W: std::io::Write>(
    w: &mut W,
    value: &Value,
    style: Style,
) -> std::io::Result<()> {
    // Grown as needed: most replies are a few hundred bytes, and a buffer
    // of SPILL_AT from the start costs a small one its growing and
    // trimming the heap.
    let mut out = String::new();
    let mut renderer = Renderer {
        out: &mut out,
        pretty: style.pretty,
        color: style.color,
        stack: Vec::new(),
        spill: Some(w),
        error: None,
    };
    renderer.run(value);
    if let Some(err) = renderer.error.take() {
        return Err(err);
    }
    w.write_all(out.as_bytes())
}

/// The Python `json.dumps` rendering of JSON *text* (one value), read
/// straight from its bytes: the same text as [`to_string`] of the value
/// `serde_json` reads from `json`, at a fraction of the cost for a large
/// reply, since no tree of values is built (and none dropped). With
/// `omit_key`, that key of the outermost object is left out (the id the
/// client added to a command). `None` when `json` is not one JSON value
/// (or nests deeper than any QEMU reply): parse it and use [`to_string`],
/// which then says what is wrong.
pub fn from_text(json: &[u8], style: Style, omit_key: Option<&str>) -> Option<String> {
    raw::render(json, style, omit_key)
}

/// `text` without the colour codes that [`Style::color`] adds (ANSI SGR
/// sequences, `ESC [ ... m`): the uncoloured rendering. The renderer escapes
/// ESC inside strings, so every ESC in its output starts a colour code.
pub fn strip_color(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Python's `repr()` of a float.
///
/// Shortest round-trip digits, fixed notation when the decimal exponent
/// lies in `-4 < decpt <= 16` (always with a digit after the point) and
/// scientific notation otherwise, with a signed exponent of at least two
/// digits: `0.0`, `-0.0`, `1.5`, `100.0`, `0.0001`, `1e-05`, `1e+16`,
/// `1234567890123456.0`, `1.7976931348623157e+308`, `inf`, `-inf`, `nan`.
pub fn python_float_repr(f: f64) -> String {
    let mut out = String::with_capacity(24);
    write_float(&mut out, f, false);
    out
}

// ---------------------------------------------------------------------------
// Colours

const KEY_COLOR: &str = "\x1b[1;34m";
const STRING_COLOR: &str = "\x1b[32m";
const NUMBER_COLOR: &str = "\x1b[36m";
const LITERAL_COLOR: &str = "\x1b[35m";
const RESET: &str = "\x1b[0m";

// ---------------------------------------------------------------------------
// The walk

/// One open container on the explicit stack.
enum Frame<'a> {
    Array(std::slice::Iter<'a, Value>),
    Object(serde_json::map::Iter<'a>),
    Sorted(std::vec::IntoIter<(&'a String, &'a Value)>),
}

struct Renderer<'o, 'a> {
    out: &'o mut String,
    pretty: bool,
    color: bool,
    /// Open containers, each with "no item written yet".
    stack: Vec<(Frame<'a>, bool)>,
    /// Where to hand the text over whenever it grows past [`SPILL_AT`].
    spill: Option<&'o mut dyn std::io::Write>,
    /// The first write error of `spill`; rendering stops there.
    error: Option<std::io::Error>,
}

impl<'a> Renderer<'_, 'a> {
    fn run(&mut self, root: &'a Value) {
        self.open(root);
        loop {
            if self.out.len() >= SPILL_AT {
                if let Some(w) = self.spill.as_mut() {
                    if let Err(err) = w.write_all(self.out.as_bytes()) {
                        self.error = Some(err);
                        return;
                    }
                    self.out.clear();
                }
            }
            let depth = self.stack.len();
            let Some((frame, first)) = self.stack.last_mut() else {
                break;
            };
            let (key, value, closer) = match frame {
                Frame::Array(it) => (None, it.next(), ']'),
                Frame::Object(it) => match it.next() {
                    Some((k, v)) => (Some(k), Some(v), '}'),
                    None => (None, None, '}'),
                },
                Frame::Sorted(it) => match it.next() {
                    Some((k, v)) => (Some(k), Some(v), '}'),
                    None => (None, None, '}'),
                },
            };
            let Some(value) = value else {
                self.stack.pop();
                if self.pretty {
                    self.newline(depth - 1);
                }
                self.out.push(closer);
                continue;
            };
            if std::mem::replace(first, false) {
                // Nothing before the first item.
            } else if self.pretty {
                self.out.push(',');
            } else {
                self.out.push_str(", ");
            }
            if self.pretty {
                self.newline(depth);
            }
            if let Some(key) = key {
                if self.color {
                    self.out.push_str(KEY_COLOR);
                    write_string(self.out, key);
                    self.out.push_str(RESET);
                } else {
                    write_string(self.out, key);
                }
                self.out.push_str(": ");
            }
            self.open(value);
        }
    }

    /// Writes a scalar or an empty container whole, or the opening bracket
    /// of a non-empty container (pushing it on the stack).
    fn open(&mut self, value: &'a Value) {
        match value {
            Value::Null => self.literal("null"),
            Value::Bool(true) => self.literal("true"),
            Value::Bool(false) => self.literal("false"),
            Value::Number(n) => {
                if self.color {
                    self.out.push_str(NUMBER_COLOR);
                    write_number(self.out, n);
                    self.out.push_str(RESET);
                } else {
                    write_number(self.out, n);
                }
            }
            Value::String(s) => {
                if self.color {
                    self.out.push_str(STRING_COLOR);
                    write_string(self.out, s);
                    self.out.push_str(RESET);
                } else {
                    write_string(self.out, s);
                }
            }
            Value::Array(a) if a.is_empty() => self.out.push_str("[]"),
            Value::Array(a) => {
                self.out.push('[');
                self.stack.push((Frame::Array(a.iter()), true));
            }
            Value::Object(m) if m.is_empty() => self.out.push_str("{}"),
            Value::Object(m) => {
                self.out.push('{');
                let frame = if self.pretty && !keys_sorted(m) {
                    let mut entries: Vec<(&String, &Value)> = m.iter().collect();
                    // Keys of a map are unique, so an unstable sort is exact.
                    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                    Frame::Sorted(entries.into_iter())
                } else {
                    Frame::Object(m.iter())
                };
                self.stack.push((frame, true));
            }
        }
    }

    fn literal(&mut self, text: &str) {
        if self.color {
            self.out.push_str(LITERAL_COLOR);
            self.out.push_str(text);
            self.out.push_str(RESET);
        } else {
            self.out.push_str(text);
        }
    }

    fn newline(&mut self, depth: usize) {
        const SPACES: &str = "                                                                ";
        self.out.push('\n');
        let mut n = depth.saturating_mul(4);
        while n > 0 {
            let chunk = n.min(SPACES.len());
            self.out.push_str(&SPACES[..chunk]);
            n -= chunk;
        }
    }
}

/// Whether the keys are already in code point order (the common case for
/// QEMU replies is "no", but checking is cheaper than sorting).
fn keys_sorted(m: &Map<String, Value>) -> bool {
    let mut keys = m.keys();
    let Some(mut prev) = keys.next() else {
        return true;
    };
    for k in keys {
        if k < prev {
            return false;
        }
        prev = k;
    }
    true
}

/// A cheap guess of the output size, so that small values do not start
/// tiny and large ones do not regrow from nothing.
fn initial_capacity(value: &Value) -> usize {
    match value {
        Value::Array(a) => 64usize.saturating_add(a.len().saturating_mul(64)),
        Value::Object(m) => 64usize.saturating_add(m.len().saturating_mul(64)),
        Value::String(s) => s.len().saturating_add(8),
        _ => 32,
    }
}

// ---------------------------------------------------------------------------
// Strings

/// What to do with each byte: 0 copies it, `u` writes `\u00XX`, `U` starts
/// a non-ASCII character, anything else is the letter after a backslash.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if i < 0x20 || i == 0x7f {
            b'u'
        } else if i >= 0x80 {
            b'U'
        } else {
            0
        };
        i += 1;
    }
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[0x08] = b'b';
    table[0x0c] = b'f';
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_unit_escape(out: &mut String, unit: u16) {
    out.push_str("\\u");
    for shift in [12u32, 8, 4, 0] {
        out.push(char::from(HEX[usize::from((unit >> shift) & 0xf)]));
    }
}

/// Writes `s` as a quoted JSON string with `ensure_ascii`.
fn write_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let action = ESCAPE[usize::from(b)];
        if action == 0 {
            i += 1;
            continue;
        }
        // `start` and `i` are always at character boundaries: runs stop
        // only at ASCII bytes or at the first byte of a character.
        out.push_str(s.get(start..i).unwrap_or_default());
        match action {
            b'u' => {
                push_unit_escape(out, u16::from(b));
                i += 1;
            }
            b'U' => {
                let ch = s.get(i..).and_then(|t| t.chars().next());
                match ch {
                    Some(ch) => {
                        let mut units = [0u16; 2];
                        for unit in ch.encode_utf16(&mut units) {
                            push_unit_escape(out, *unit);
                        }
                        i += ch.len_utf8();
                    }
                    // Unreachable for a `str`; stop rather than loop.
                    None => {
                        i = bytes.len();
                    }
                }
            }
            letter => {
                out.push('\\');
                out.push(char::from(letter));
                i += 1;
            }
        }
        start = i;
    }
    out.push_str(s.get(start..).unwrap_or_default());
    out.push('"');
}

// ---------------------------------------------------------------------------
// Numbers

/// Writes a number the way Python's json module prints what `json.loads`
/// made of its text: an `int` in full, a `float` as its `repr`.
fn write_number(out: &mut String, n: &Number) {
    let text = n.as_str();
    if text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        match text.parse::<f64>() {
            Ok(f) => write_float(out, f, true),
            Err(_) => out.push_str(text),
        }
    } else {
        write_integer(out, text);
    }
}

/// Writes integer text as Python's `int` prints it: no `+`, no leading
/// zeros, and no sign on zero.
fn write_integer(out: &mut String, text: &str) {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, text.get(1..).unwrap_or_default()),
        Some(b'+') => (false, text.get(1..).unwrap_or_default()),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        // Not integer text at all; print it untouched rather than guess.
        out.push_str(text);
        return;
    }
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        out.push('0');
    } else {
        if negative {
            out.push('-');
        }
        out.push_str(significant);
    }
}

/// A small stack buffer for `{:e}` output (at most 24 bytes for an `f64`).
struct StackBuf {
    buf: [u8; 40],
    len: usize,
}

impl fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        let dest = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dest.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Writes Python's `repr(f)`; with `json`, the non-finite values are spelt
/// as `json.dumps` spells them (`Infinity`, `-Infinity`, `NaN`).
fn write_float(out: &mut String, f: f64, json: bool) {
    if f.is_nan() {
        out.push_str(if json { "NaN" } else { "nan" });
        return;
    }
    if f.is_infinite() {
        if f < 0.0 {
            out.push('-');
        }
        out.push_str(if json { "Infinity" } else { "inf" });
        return;
    }
    // `{:e}` gives the shortest digits that round-trip, as Python's repr
    // does: `[-]d[.ddd]e[-]X`.
    let mut buf = StackBuf {
        buf: [0; 40],
        len: 0,
    };
    let heap;
    let sci: &[u8] = if write!(buf, "{f:e}").is_ok() {
        buf.buf.get(..buf.len).unwrap_or_default()
    } else {
        heap = format!("{f:e}");
        heap.as_bytes()
    };

    let (negative, rest) = match sci.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, sci),
    };
    let e_pos = rest.iter().position(|&b| b == b'e').unwrap_or(rest.len());
    let (mantissa, exponent) = rest.split_at(e_pos);
    let mut digit_buf = [0u8; 40];
    let mut n = 0;
    for &b in mantissa {
        if b.is_ascii_digit() {
            if let Some(slot) = digit_buf.get_mut(n) {
                *slot = b;
                n += 1;
            }
        }
    }
    let exp = parse_exponent(exponent.get(1..).unwrap_or_default());
    let Some(digits) = digit_buf.get_mut(..n).filter(|d| !d.is_empty()) else {
        // Cannot happen for a finite float; fall back to Rust's own text.
        let _ = write!(out, "{f:?}");
        return;
    };
    if digits.len() >= 16 && may_be_tie(f) {
        round_half_even(f, digits, exp);
    }
    let digits: &[u8] = digits;
    // Position of the decimal point relative to the start of `digits`.
    let decpt = exp.saturating_add(1);

    if negative {
        out.push('-');
    }
    let push_digits = |out: &mut String, d: &[u8]| {
        for &b in d {
            out.push(char::from(b));
        }
    };
    let push_zeros = |out: &mut String, count: usize| {
        for _ in 0..count {
            out.push('0');
        }
    };
    if -4 < decpt && decpt <= 16 {
        if decpt <= 0 {
            out.push_str("0.");
            push_zeros(out, usize::try_from(-decpt).unwrap_or(0));
            push_digits(out, digits);
        } else {
            let point = usize::try_from(decpt).unwrap_or(0);
            if point < digits.len() {
                let (int_part, frac_part) = digits.split_at(point);
                push_digits(out, int_part);
                out.push('.');
                push_digits(out, frac_part);
            } else {
                push_digits(out, digits);
                push_zeros(out, point - digits.len());
                out.push_str(".0");
            }
        }
    } else {
        let (first, more) = digits.split_at(1);
        push_digits(out, first);
        if !more.is_empty() {
            out.push('.');
            push_digits(out, more);
        }
        let e = decpt - 1;
        out.push('e');
        out.push(if e < 0 { '-' } else { '+' });
        let abs = e.unsigned_abs();
        if abs < 10 {
            out.push('0');
        }
        let _ = write!(out, "{abs}");
    }
}

/// Parses the digits of an exponent, with an optional sign.
fn parse_exponent(text: &[u8]) -> i32 {
    let mut exp: i32 = 0;
    let mut negative = false;
    for &b in text {
        match b {
            b'-' => negative = true,
            b'0'..=b'9' => exp = exp.saturating_mul(10).saturating_add(i32::from(b - b'0')),
            _ => {}
        }
    }
    if negative {
        -exp
    } else {
        exp
    }
}

/// `f` as `m * 2^e` with `m` odd (`None` for zero and non-finite values).
fn odd_binary(f: f64) -> Option<(u64, i32)> {
    if !f.is_finite() {
        return None;
    }
    let bits = f.to_bits();
    let biased = i32::try_from((bits >> 52) & 0x7ff).unwrap_or(0);
    let fraction = bits & ((1u64 << 52) - 1);
    let (mantissa, exp2) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1u64 << 52), biased - 1075)
    };
    if mantissa == 0 {
        return None;
    }
    let tz = mantissa.trailing_zeros();
    Some((
        mantissa >> tz,
        exp2.saturating_add(i32::try_from(tz).unwrap_or(0)),
    ))
}

/// Whether the exact value of `f` could have few enough significant digits
/// (at most 18) to lie exactly half-way between two shortest candidates.
///
/// `f = m * 2^-k` with `m` odd and `k > 0` has exactly `k` decimal places
/// and at least `0.69 * k` significant digits, so `k` must stay below 27.
fn may_be_tie(f: f64) -> bool {
    odd_binary(f).is_some_and(|(_, e)| e >= -30)
}

/// Whether `|f|` is exactly `d * 10^s`.
fn is_exactly(f: f64, d: u64, s: i32) -> bool {
    let Some((m_odd, e)) = odd_binary(f.abs()) else {
        return d == 0;
    };
    if d == 0 {
        return false;
    }
    let dz = d.trailing_zeros();
    let d_odd = u128::from(d >> dz);
    let dz = i32::try_from(dz).unwrap_or(0);
    let m_odd = u128::from(m_odd);
    let five_pow = |j: i32| u32::try_from(j).ok().and_then(|j| 5u128.checked_pow(j));
    if s >= 0 {
        // d_odd * 5^s * 2^(dz + s) == m_odd * 2^e
        dz.saturating_add(s) == e && five_pow(s).and_then(|p| d_odd.checked_mul(p)) == Some(m_odd)
    } else {
        // d_odd * 2^dz == m_odd * 5^-s * 2^(e - s)
        let j = s.saturating_neg();
        dz == e.saturating_add(j) && five_pow(j).and_then(|p| m_odd.checked_mul(p)) == Some(d_odd)
    }
}

/// Python (David Gay's `dtoa`, mode 0) breaks an exact tie between the two
/// nearest shortest candidates towards an even last digit; Rust's shortest
/// formatting may pick the odd one. `digits` (ASCII, scientific exponent
/// `exp`) is Rust's choice for the finite value `f`; replace it by the even
/// candidate when `f` lies exactly half-way and that candidate round-trips.
fn round_half_even(f: f64, digits: &mut [u8], exp: i32) {
    let n = digits.len();
    if n > 17 {
        return;
    }
    let mut r: u64 = 0;
    for &b in digits.iter() {
        r = r * 10 + u64::from(b.wrapping_sub(b'0') % 10);
    }
    let Ok(n_i32) = i32::try_from(n) else {
        return;
    };
    let scale = exp.saturating_sub(n_i32);
    // The two half-way points around `r`, with the candidates either side.
    let below = (r * 10).checked_sub(5).map(|t| (t, r.wrapping_sub(1), r));
    let above = Some((r * 10 + 5, r, r + 1));
    for (tie, lo, hi) in [below, above].into_iter().flatten() {
        if !is_exactly(f, tie, scale) {
            continue;
        }
        let even = if lo % 2 == 0 { lo } else { hi };
        if even == r {
            return;
        }
        let buf = itoa_digits(even);
        let Some(text) = buf.as_str() else {
            return;
        };
        if text.len() != n {
            // The neighbour has another number of digits: not a candidate.
            return;
        }
        let mut check = String::with_capacity(32);
        let _ = write!(check, "{text}e{}", scale.saturating_add(1));
        if check.parse::<f64>().map(f64::abs) == Ok(f.abs()) {
            digits.copy_from_slice(text.as_bytes());
        }
        return;
    }
}

/// The decimal digits of `v` in a stack buffer.
fn itoa_digits(v: u64) -> StackBuf {
    let mut buf = StackBuf {
        buf: [0; 40],
        len: 0,
    };
    let _ = write!(buf, "{v}");
    buf
}

impl StackBuf {
    fn as_str(&self) -> Option<&str> {
        self.buf
            .get(..self.len)
            .and_then(|b| std::str::from_utf8(b).ok())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn write_to_streams_the_same_bytes_in_pieces() {
        // Larger than SPILL_AT many times over, with every kind of token.
        let item = serde_json::json!({"name": "x\u{e9}\"y", "n": 12345678901234567890u64,
            "f": 1.5, "b": true, "z": null, "list": [1, [2, {}], []]});
        let value = Value::Array(vec![item; 5000]);
        for pretty in [false, true] {
            for color in [false, true] {
                let style = Style { pretty, color };
                let mut streamed = Vec::new();
                write_to(&mut streamed, &value, style).unwrap();
                assert!(streamed.len() > 10 * SPILL_AT);
                assert_eq!(streamed, to_string(&value, style).into_bytes());
            }
        }
    }

    #[test]
    fn write_to_reports_the_writer_error() {
        struct Broken;
        impl std::io::Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let value = Value::Array(vec![Value::String("x".repeat(1000)); 100]);
        let err = write_to(&mut Broken, &value, Style::default()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    }

    use super::*;
    use serde_json::json;

    const COMPACT: Style = Style {
        pretty: false,
        color: false,
    };
    const PRETTY: Style = Style {
        pretty: true,
        color: false,
    };

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("test JSON must parse")
    }

    fn compact(text: &str) -> String {
        to_string(&parse(text), COMPACT)
    }

    fn pretty(text: &str) -> String {
        to_string(&parse(text), PRETTY)
    }

    #[test]
    fn style_default_is_compact_without_colour() {
        assert_eq!(
            Style::default(),
            Style {
                pretty: false,
                color: false
            }
        );
    }

    #[test]
    fn scalars() {
        assert_eq!(compact("null"), "null");
        assert_eq!(compact("true"), "true");
        assert_eq!(compact("false"), "false");
        assert_eq!(compact("\"x\""), "\"x\"");
        assert_eq!(compact("42"), "42");
        assert_eq!(pretty("null"), "null");
        assert_eq!(pretty("\"x\""), "\"x\"");
    }

    #[test]
    fn compact_separators_and_key_order() {
        assert_eq!(
            compact(r#"{"return": {"z": 1, "a": [1, 2, {"b": null}], "m": true}}"#),
            r#"{"return": {"z": 1, "a": [1, 2, {"b": null}], "m": true}}"#
        );
        assert_eq!(compact("[1,2,3]"), "[1, 2, 3]");
        assert_eq!(compact(r#"{"a":1,"b":2}"#), r#"{"a": 1, "b": 2}"#);
    }

    #[test]
    fn empty_containers() {
        assert_eq!(compact("{}"), "{}");
        assert_eq!(compact("[]"), "[]");
        assert_eq!(pretty("{}"), "{}");
        assert_eq!(pretty("[]"), "[]");
        assert_eq!(
            compact(r#"{"a": {}, "b": [[]]}"#),
            r#"{"a": {}, "b": [[]]}"#
        );
        assert_eq!(
            pretty(r#"{"b": [], "a": {}}"#),
            "{\n    \"a\": {},\n    \"b\": []\n}"
        );
    }

    #[test]
    fn pretty_indents_and_sorts() {
        let got = pretty(r#"{"return": {"z": 1, "a": [1, {"y": 2, "x": "s"}]}, "id": 7}"#);
        let want = "{\n    \"id\": 7,\n    \"return\": {\n        \"a\": [\n            1,\n            {\n                \"x\": \"s\",\n                \"y\": 2\n            }\n        ],\n        \"z\": 1\n    }\n}";
        assert_eq!(got, want);
        // No space before any line break.
        assert!(!got.contains(" \n"));
    }

    #[test]
    fn pretty_sorts_by_code_point() {
        // 'B' < '_' < 'a' < 'é' < '中' < '😀' in code point order.
        let got = pretty(r#"{"😀": 1, "a": 2, "中": 3, "é": 4, "_": 5, "B": 6}"#);
        let want = "{\n    \"B\": 6,\n    \"_\": 5,\n    \"a\": 2,\n    \"\\u00e9\": 4,\n    \"\\u4e2d\": 3,\n    \"\\ud83d\\ude00\": 1\n}";
        assert_eq!(got, want);
        // U+FFFD sorts before U+10000 by code point (UTF-16 order would differ).
        let got = pretty(r#"{"😀": 1, "\ufffd": 2}"#);
        assert_eq!(got, "{\n    \"\\ufffd\": 2,\n    \"\\ud83d\\ude00\": 1\n}");
    }

    #[test]
    fn compact_keeps_unsorted_order() {
        assert_eq!(
            compact(r#"{"b": 1, "a": 2, "c": 3}"#),
            r#"{"b": 1, "a": 2, "c": 3}"#
        );
    }

    #[test]
    fn deep_nesting_pretty() {
        let mut v = json!(1);
        for _ in 0..20 {
            v = json!([v]);
        }
        let got = to_string(&v, PRETTY);
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines.len(), 41);
        assert_eq!(lines[20], format!("{}1", " ".repeat(80)));
    }

    /// Builds `depth` nested one-element arrays around `null`, renders it,
    /// and unwinds it by hand (dropping a deep Value recurses in serde_json).
    fn render_deep(depth: usize, style: Style) -> String {
        let mut v = Value::Null;
        for _ in 0..depth {
            v = Value::Array(vec![v]);
        }
        let got = to_string(&v, style);
        while let Value::Array(mut a) = v {
            v = a.pop().unwrap_or(Value::Null);
        }
        got
    }

    #[test]
    fn very_deep_nesting_does_not_overflow() {
        let depth = 200_000;
        let got = render_deep(depth, COMPACT);
        assert_eq!(got.len(), 2 * depth + 4);
        assert!(got.starts_with("[[[") && got.ends_with("]]]"));
        assert_eq!(got.find("null"), Some(depth));

        let depth = 3_000;
        let got = render_deep(depth, PRETTY);
        // Brackets and line breaks, the indents on the way in (4 * 1..=depth)
        // and out (4 * 0..depth), and "null".
        let indent: usize = (1..=depth).map(|d| 4 * d).sum();
        assert_eq!(got.len(), 4 * depth + 2 * indent - 4 * depth + 4);
        let null_line = format!("\n{}null\n", " ".repeat(4 * depth));
        assert!(got.contains(&null_line));
    }

    #[test]
    fn string_escapes() {
        assert_eq!(to_string(&json!("a\"b\\c/d"), COMPACT), r#""a\"b\\c/d""#);
        assert_eq!(
            to_string(&json!("\n\r\t\u{8}\u{c}"), COMPACT),
            r#""\n\r\t\b\f""#
        );
        assert_eq!(
            to_string(&json!("\u{0}\u{1}\u{1f}\u{7f}\u{80}\u{ff}"), COMPACT),
            r#""\u0000\u0001\u001f\u007f\u0080\u00ff""#
        );
        assert_eq!(to_string(&json!(" ~"), COMPACT), r#"" ~""#);
        assert_eq!(
            to_string(&json!("é中\u{ffff}"), COMPACT),
            r#""\u00e9\u4e2d\uffff""#
        );
        assert_eq!(
            to_string(&json!("x😀y\u{10000}\u{10ffff}"), COMPACT),
            r#""x\ud83d\ude00y\ud800\udc00\udbff\udfff""#
        );
        assert_eq!(to_string(&json!(""), COMPACT), r#""""#);
        assert_eq!(to_string(&json!("ABCDEF"), COMPACT), r#""ABCDEF""#);
    }

    #[test]
    fn every_ascii_byte() {
        for b in 0u8..=0x7f {
            let s = char::from(b).to_string();
            let got = to_string(&Value::String(s), COMPACT);
            let want = match b {
                b'"' => "\"\\\"\"".to_string(),
                b'\\' => "\"\\\\\"".to_string(),
                b'\n' => "\"\\n\"".to_string(),
                b'\r' => "\"\\r\"".to_string(),
                b'\t' => "\"\\t\"".to_string(),
                0x08 => "\"\\b\"".to_string(),
                0x0c => "\"\\f\"".to_string(),
                0x20..=0x7e => format!("\"{}\"", char::from(b)),
                _ => format!("\"\\u{b:04x}\""),
            };
            assert_eq!(got, want, "byte {b:#x}");
        }
    }

    #[test]
    fn keys_are_escaped() {
        assert_eq!(
            compact(r#"{"a\"\n\u00e9\ud83d\ude00\u007f": 1}"#),
            r#"{"a\"\n\u00e9\ud83d\ude00\u007f": 1}"#
        );
    }

    #[test]
    fn integers_in_full() {
        assert_eq!(compact("0"), "0");
        assert_eq!(compact("-0"), "0");
        assert_eq!(compact("-17"), "-17");
        assert_eq!(compact("18446744073709551616"), "18446744073709551616");
        let big = format!("-{}", "9".repeat(500));
        assert_eq!(compact(&big), big);
        assert_eq!(
            compact("[123456789012345678901234567890, -98765432109876543210]"),
            "[123456789012345678901234567890, -98765432109876543210]"
        );
    }

    #[test]
    fn integer_text_is_normalised() {
        let mut out = String::new();
        for (text, want) in [
            ("+5", "5"),
            ("007", "7"),
            ("-007", "-7"),
            ("-0", "0"),
            ("+0", "0"),
            ("000", "0"),
            ("-000", "0"),
            ("12", "12"),
        ] {
            out.clear();
            write_integer(&mut out, text);
            assert_eq!(out, want, "{text}");
        }
        out.clear();
        write_integer(&mut out, "");
        assert_eq!(out, "");
        out.clear();
        write_integer(&mut out, "-");
        assert_eq!(out, "-");
    }

    #[test]
    fn numbers_from_rust_values() {
        assert_eq!(to_string(&json!(u64::MAX), COMPACT), "18446744073709551615");
        assert_eq!(to_string(&json!(i64::MIN), COMPACT), "-9223372036854775808");
        assert_eq!(to_string(&json!(1.0), COMPACT), "1.0");
        assert_eq!(to_string(&json!(1e16), COMPACT), "1e+16");
        assert_eq!(to_string(&json!(0.1), COMPACT), "0.1");
        assert_eq!(to_string(&json!(-0.0), COMPACT), "-0.0");
        assert_eq!(to_string(&json!(1e-5), COMPACT), "1e-05");
    }

    #[test]
    fn floats_from_text() {
        assert_eq!(compact("1.5"), "1.5");
        assert_eq!(compact("0.0"), "0.0");
        assert_eq!(compact("-0.0"), "-0.0");
        assert_eq!(compact("1E5"), "100000.0");
        assert_eq!(compact("1e+2"), "100.0");
        assert_eq!(compact("2.50"), "2.5");
        assert_eq!(compact("1e16"), "1e+16");
        assert_eq!(compact("1.0e-4"), "0.0001");
        assert_eq!(compact("0.00001"), "1e-05");
        assert_eq!(compact("0.10000000000000001"), "0.1");
        assert_eq!(compact("1e400"), "Infinity");
        assert_eq!(compact("-1e400"), "-Infinity");
        assert_eq!(compact("1e-400"), "0.0");
        assert_eq!(compact("-1e-400"), "-0.0");
        assert_eq!(compact("[1.0, 2]"), "[1.0, 2]");
    }

    #[test]
    // The tie cases are exact binary values, written in full on purpose.
    #[allow(clippy::excessive_precision)]
    fn float_repr_table() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (-1.0, "-1.0"),
            (1.5, "1.5"),
            (100.0, "100.0"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00012345, "0.00012345"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (9999999999999998.0, "9999999999999998.0"),
            (12345678901234567.0, "1.2345678901234568e+16"),
            (1e22, "1e+22"),
            (1e100, "1e+100"),
            (1e-100, "1e-100"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (5e-324, "5e-324"),
            (-5e-324, "-5e-324"),
            (0.30000000000000004, "0.30000000000000004"),
            (123.456, "123.456"),
            // Exact ties between two shortest candidates: Python rounds
            // half to even, Rust's shortest formatting rounds up.
            (663274634881287.25, "663274634881287.2"),
            (-663274634881287.25, "-663274634881287.2"),
            (76061017966006.125, "76061017966006.12"),
            (778059174166556.25, "778059174166556.2"),
            (1078227662648199.25, "1078227662648199.2"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
        ];
        for &(f, want) in cases {
            assert_eq!(python_float_repr(f), want, "{f:e}");
        }
    }

    #[test]
    #[allow(clippy::excessive_precision)]
    fn exactness_check() {
        assert!(is_exactly(0.5, 5, -1));
        assert!(is_exactly(-0.5, 5, -1));
        assert!(is_exactly(1e16, 1, 16));
        assert!(is_exactly(663274634881287.25, 66327463488128725, -2));
        assert!(!is_exactly(0.1, 1, -1));
        assert!(!is_exactly(0.0, 1, 0));
        assert!(is_exactly(0.0, 0, 0));
        assert!(!is_exactly(f64::NAN, 1, 0));
        assert!(!is_exactly(1e300, 1, 300));
        assert!(!may_be_tie(0.1));
        assert!(!may_be_tie(5e-324));
        assert!(may_be_tie(663274634881287.25));
    }

    #[test]
    fn non_finite_in_json_spelling() {
        let mut out = String::new();
        write_float(&mut out, f64::NAN, true);
        assert_eq!(out, "NaN");
        out.clear();
        write_float(&mut out, f64::INFINITY, true);
        assert_eq!(out, "Infinity");
        out.clear();
        write_float(&mut out, f64::NEG_INFINITY, true);
        assert_eq!(out, "-Infinity");
    }

    #[test]
    fn write_into_appends() {
        let mut out = String::from("> ");
        write_into(&mut out, &json!({"a": [1]}), COMPACT);
        write_into(&mut out, &json!(null), PRETTY);
        assert_eq!(out, r#"> {"a": [1]}null"#);
    }

    #[test]
    fn colour_wraps_tokens() {
        let style = Style {
            pretty: false,
            color: true,
        };
        let got = to_string(&json!({"k": ["s", 1, true, false, null, {}, []]}), style);
        assert_eq!(
            got,
            "{\x1b[1;34m\"k\"\x1b[0m: [\x1b[32m\"s\"\x1b[0m, \x1b[36m1\x1b[0m, \
             \x1b[35mtrue\x1b[0m, \x1b[35mfalse\x1b[0m, \x1b[35mnull\x1b[0m, {}, []]}"
        );
    }

    #[test]
    fn colour_stripped_equals_plain() {
        let v = parse(
            r#"{"return": [{"name": "x\u00e9", "n": -3, "f": 1e-7, "ok": true,
                "nested": {"z": null, "a": [1.5, "\u0001"]}}], "id": "q"}"#,
        );
        for pretty in [false, true] {
            let plain = to_string(
                &v,
                Style {
                    pretty,
                    color: false,
                },
            );
            let coloured = to_string(
                &v,
                Style {
                    pretty,
                    color: true,
                },
            );
            assert_ne!(plain, coloured);
            assert_eq!(strip_color(&coloured), plain);
        }
    }

    #[test]
    fn duplicate_key_keeps_first_position_last_value() {
        assert_eq!(
            compact(r#"{"a": 1, "b": 2, "a": 3}"#),
            r#"{"a": 3, "b": 2}"#
        );
    }

    /// `from_text`, checked against the tree's rendering of the same text.
    fn from_text_as_tree(text: &str, pretty: bool, color: bool) {
        let style = Style { pretty, color };
        assert_eq!(
            from_text(text.as_bytes(), style, None),
            Some(to_string(&parse(text), style)),
            "{text}"
        );
    }

    #[test]
    fn from_text_is_the_rendering_of_the_value_read() {
        for text in [
            r#"{"return": [{"name": "query-status", "ret-type": "1", "meta-type": "command",
                "arg-type": "0"}, {"b": {"d": [{"f": 1, "e": 2}, []], "c": {}}, "a": [[[[]]]]}],
                "id": 7}"#,
            r#"{"b": 1, "a": 2, "b": 3, "c": {"y": [1, 2.50, -0, 1E400], "x": "\u00e9\ud83d\ude00"}}"#,
            r#"{"z": 1, "y": 2, "x": 3, "w": 4, "v": 5, "u": 6, "t": 7, "s": 8, "r": 9, "z": 10}"#,
            r#"{"\u0061": 1, "a": 2, "\n": "\u007f\/\b\f\r\t\"\\", "é": null}"#,
            "  [true, false, null, \"\", {}, [], 0, -1, 0.5e-3]\r\n",
        ] {
            for (pretty, color) in [(false, false), (true, false), (false, true), (true, true)] {
                from_text_as_tree(text, pretty, color);
            }
        }
    }

    #[test]
    fn from_text_leaves_out_a_key_of_the_outermost_object_only() {
        let text = r#"{"id": 3, "return": {"id": 1, "b": []}, "id": 4}"#;
        let compact = Style::default();
        let pretty = Style {
            pretty: true,
            color: false,
        };
        assert_eq!(
            from_text(text.as_bytes(), compact, Some("id")).as_deref(),
            Some(r#"{"return": {"id": 1, "b": []}}"#)
        );
        assert_eq!(
            from_text(text.as_bytes(), pretty, Some("id")).as_deref(),
            Some("{\n    \"return\": {\n        \"b\": [],\n        \"id\": 1\n    }\n}")
        );
        for style in [compact, pretty] {
            assert_eq!(
                from_text(br#"{"id": 1}"#, style, Some("id")).as_deref(),
                Some("{}")
            );
        }
        assert_eq!(
            from_text(br#"[{"id": 1}]"#, compact, Some("id")).as_deref(),
            Some(r#"[{"id": 1}]"#)
        );
    }

    #[test]
    fn from_text_refuses_what_is_not_one_json_value() {
        for text in [
            "",
            " ",
            "{",
            "{}}",
            "{} {}",
            "[1,]",
            "{\"a\" 1}",
            "{\"a\": 1,}",
            "{1: 2}",
            "01",
            "1.",
            ".5",
            "1e",
            "-",
            "+1",
            "tru",
            "nulls",
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            r#""\x""#,
            r#""\u12""#,
            "\"a\u{1}b\"",
            "\"unterminated",
        ] {
            let style = Style::default();
            assert_eq!(from_text(text.as_bytes(), style, None), None, "{text:?}");
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text:?}");
        }
        assert_eq!(from_text(b"[\"\xff\"]", Style::default(), None), None);
        // Deeper than any reply: left to the tree (which may refuse it).
        let deep = format!("{}1{}", "[".repeat(101), "]".repeat(101));
        assert_eq!(from_text(deep.as_bytes(), Style::default(), None), None);
        let fine = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        from_text_as_tree(&fine, true, false);
    }
}
