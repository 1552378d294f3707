//! JSON scalars from what the value readers read: integers of any size
//! as decimal text, floats, and strings from Python's code points. Shared
//! by the JSON reader ([`super::json`]), the Python literal reader
//! ([`super::python`]) and [`super::literal`], which uses both: this module
//! imports none of them.

use serde_json::{Number, Value};

/// Decimal text without leading zeros, `-` only when not zero.
pub(crate) fn normalise_int(negative: bool, digits: &str) -> String {
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else if negative {
        format!("-{trimmed}")
    } else {
        trimmed.to_owned()
    }
}

/// A JSON number for normalised integer text (see [`normalise_int`]).
pub(crate) fn int_number(text: &str) -> Number {
    // With arbitrary_precision the text is kept as it is; it is always a
    // valid JSON integer, so the fallback is unreachable.
    text.parse::<Number>().unwrap_or_else(|_| Number::from(0))
}

/// A JSON number for a float, or why it cannot be one. The number's text
/// always has a `.` or an exponent, so it stays distinguishable from an int.
pub(crate) fn float_value(f: f64) -> Result<Value, String> {
    if f.is_nan() {
        return Err("NaN is not supported".to_owned());
    }
    match Number::from_f64(f) {
        Some(n) => Ok(Value::Number(n)),
        None => Err("infinite numbers (Infinity) are not supported".to_owned()),
    }
}

/// Turn Python string code points into a Rust string. A high surrogate
/// followed by a low one is joined into one character (Python's
/// `json.dumps` writes both as `\uXXXX`, which the receiver joins); any
/// other surrogate cannot be sent.
pub(crate) fn code_points_to_string(cps: &[u32]) -> Result<String, String> {
    let mut out = String::with_capacity(cps.len());
    let mut i = 0;
    while i < cps.len() {
        let cp = cps[i];
        let c = if (0xD800..0xDC00).contains(&cp)
            && i + 1 < cps.len()
            && (0xDC00..0xE000).contains(&cps[i + 1])
        {
            i += 1;
            char::from_u32(0x10000 + ((cp - 0xD800) << 10) + (cps[i] - 0xDC00))
        } else {
            char::from_u32(cp)
        };
        match c {
            Some(c) => out.push(c),
            None => {
                return Err(format!(
                    "strings with a lone surrogate (\\u{cp:04x}) are not supported"
                ))
            }
        }
        i += 1;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Small unsigned big integers, for hexadecimal/octal/binary literals and for
// the exact value of large integral floats.

/// An unsigned integer in base 10^9, least significant limb first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Big(Vec<u32>);

const LIMB: u64 = 1_000_000_000;

impl Big {
    /// A big integer from a machine one.
    pub(crate) fn from_u64(mut v: u64) -> Big {
        let mut limbs = Vec::new();
        while v > 0 {
            limbs.push((v % LIMB) as u32);
            v /= LIMB;
        }
        Big(limbs)
    }

    /// `self = self * mul + add`.
    pub(crate) fn mul_add(&mut self, mul: u32, add: u32) {
        let mut carry = u64::from(add);
        for limb in &mut self.0 {
            let v = u64::from(*limb) * u64::from(mul) + carry;
            *limb = (v % LIMB) as u32;
            carry = v / LIMB;
        }
        while carry > 0 {
            self.0.push((carry % LIMB) as u32);
            carry /= LIMB;
        }
    }

    /// Decimal text, `0` for zero.
    pub(crate) fn to_decimal(&self) -> String {
        let mut limbs = self.0.iter().rev().skip_while(|&&l| l == 0);
        let Some(first) = limbs.next() else {
            return "0".to_owned();
        };
        let mut out = first.to_string();
        for limb in limbs {
            out.push_str(&format!("{limb:09}"));
        }
        out
    }
}

/// The exact decimal value of a finite integral float (`-0.0` gives `0`).
pub(crate) fn integral_float_decimal(f: f64) -> String {
    let bits = f.to_bits();
    let negative = f < 0.0;
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let mut mantissa = bits & ((1 << 52) - 1);
    if exp != 0 {
        mantissa |= 1 << 52;
    }
    // value = mantissa * 2^(exp - 1075); an integral value with a
    // negative shift has no fractional bits to lose.
    let shift = exp - 1075;
    let mut big = if shift >= 0 {
        Big::from_u64(mantissa)
    } else {
        Big::from_u64(mantissa.checked_shr(shift.unsigned_abs()).unwrap_or(0))
    };
    for _ in 0..shift.max(0) {
        big.mul_add(2, 0);
    }
    normalise_int(negative, &big.to_decimal())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_helpers() {
        let mut b = Big::default();
        assert_eq!(b.to_decimal(), "0");
        for _ in 0..100 {
            b.mul_add(2, 0);
        }
        assert_eq!(b.to_decimal(), "0");
        b.mul_add(1, 1);
        for _ in 0..70 {
            b.mul_add(2, 0);
        }
        assert_eq!(b.to_decimal(), "1180591620717411303424");
        assert_eq!(integral_float_decimal(0.0), "0");
        assert_eq!(integral_float_decimal(-0.0), "0");
        assert_eq!(integral_float_decimal(1.0), "1");
        assert_eq!(integral_float_decimal(-3.0), "-3");
        assert_eq!(integral_float_decimal(1e16), "10000000000000000");
        assert_eq!(
            integral_float_decimal(2f64.powi(70)),
            "1180591620717411303424"
        );
        assert_eq!(integral_float_decimal(1e22), "10000000000000000000000");
        assert_eq!(integral_float_decimal(f64::MAX).len(), 309);
        assert!(integral_float_decimal(f64::MAX).starts_with("17976931348623157"));
    }

    #[test]
    fn surrogates() {
        assert_eq!(
            code_points_to_string(&[0x61, 0xD83D, 0xDE00]).unwrap(),
            "a😀"
        );
        assert!(code_points_to_string(&[0xDE00, 0xD83D]).is_err());
        assert!(code_points_to_string(&[0xD83D]).is_err());
        assert!(code_points_to_string(&[0xD83D, 0x61]).is_err());
    }
}
