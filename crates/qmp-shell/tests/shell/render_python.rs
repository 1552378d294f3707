//! Differential test of `qmp_shell::render` against Python's `json.dumps`.
//!
//! The same JSON text goes to both sides: Python does `json.loads` and then
//! `json.dumps(v)` and `json.dumps(v, indent=4, sort_keys=True)`; we do
//! `serde_json::from_str` and `render::to_string`, and `render::from_text`
//! straight from the text. The outputs must be byte-identical. `python3` is
//! a hard requirement of the test suite.

use std::io::Write as _;
use std::process::{Command, Stdio};

use qmp_shell::render::{self, Style};
use serde_json::{Map, Number, Value};

const COMPACT: Style = Style {
    pretty: false,
    color: false,
};
const PRETTY: Style = Style {
    pretty: true,
    color: false,
};

/// Runs `python3 -c script` with `input` on stdin and returns its stdout.
fn python(script: &str, input: &str) -> String {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 must be installed to run this test suite");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || {
        stdin.write_all(input.as_bytes()).expect("write to python3");
    });
    let output = child.wait_with_output().expect("wait for python3");
    writer.join().expect("writer thread");
    assert!(
        output.status.success(),
        "python3 failed: {:?}",
        output.status
    );
    String::from_utf8(output.stdout).expect("python3 prints UTF-8")
}

const DUMPS_SCRIPT: &str = r#"
import json, sys
if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)
cases = json.loads(sys.stdin.buffer.read().decode("utf-8"))
out = []
for text in cases:
    v = json.loads(text)
    out.append([json.dumps(v), json.dumps(v, indent=4, sort_keys=True)])
sys.stdout.write(json.dumps(out))
"#;

/// Renders every case with Python and with us, and compares both styles.
fn check_cases(cases: &[String]) {
    let input = serde_json::to_string(cases).expect("cases serialise");
    let output = python(DUMPS_SCRIPT, &input);
    let expected: Vec<(String, String)> =
        serde_json::from_str(&output).expect("python output is a list of pairs");
    assert_eq!(expected.len(), cases.len());
    let mut failures = Vec::new();
    for (text, (want_compact, want_pretty)) in cases.iter().zip(&expected) {
        let value: Value = serde_json::from_str(text).expect("case is valid JSON");
        let got_compact = render::to_string(&value, COMPACT);
        let got_pretty = render::to_string(&value, PRETTY);
        if &got_compact != want_compact {
            failures.push(format!(
                "compact mismatch for {text}\n  python: {want_compact}\n  ours:   {got_compact}"
            ));
        }
        if &got_pretty != want_pretty {
            failures.push(format!(
                "pretty mismatch for {text}\n  python: {want_pretty}\n  ours:   {got_pretty}"
            ));
        }
        for (style, want) in [(COMPACT, want_compact), (PRETTY, want_pretty)] {
            let from_text = render::from_text(text.as_bytes(), style, None);
            if from_text.as_ref() != Some(want) {
                failures.push(format!(
                    "from_text mismatch for {text} ({style:?})\n  python: {want}\n  ours:   {from_text:?}"
                ));
            }
        }
        // The coloured rendering must reduce to the plain one.
        for (style, plain) in [(COMPACT, &got_compact), (PRETTY, &got_pretty)] {
            let coloured = render::to_string(
                &value,
                Style {
                    color: true,
                    ..style
                },
            );
            if &render::strip_color(&coloured) != plain {
                failures.push(format!("colour changes the text of {text}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches, first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// xorshift64*: deterministic, dependency-free randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn finite_f64(&mut self) -> f64 {
        loop {
            let f = f64::from_bits(self.next());
            if f.is_finite() {
                return f;
            }
        }
    }

    fn char(&mut self) -> char {
        let cp = match self.below(10) {
            0..=3 => 0x20 + self.below(0x5f) as u32,
            4 => self.below(0x20) as u32,
            5 => [0x22, 0x5c, 0x7f, 0x2f, 0x08, 0x0c][self.below(6) as usize],
            6 => 0x80 + self.below(0x780) as u32,
            7 => 0x800 + self.below(0xf800) as u32,
            _ => 0x10000 + self.below(0x10_0000) as u32,
        };
        // Surrogate code points are not chars; use U+FFFD for them.
        char::from_u32(cp).unwrap_or('\u{fffd}')
    }

    fn string(&mut self) -> String {
        let len = self.below(12);
        (0..len).map(|_| self.char()).collect()
    }

    fn digits(&mut self, n: u64) -> String {
        let mut s = String::new();
        s.push(char::from(b'1' + self.below(9) as u8));
        for _ in 1..n {
            s.push(char::from(b'0' + self.below(10) as u8));
        }
        s
    }

    fn number_text(&mut self) -> String {
        let sign = if self.below(2) == 0 { "" } else { "-" };
        match self.below(8) {
            0 => format!("{sign}{}", self.below(1000)),
            1 => format!("{}", self.next() as i64),
            2 => {
                let n = 1 + self.below(80);
                format!("{sign}{}", self.digits(n))
            }
            3 => format!("{:e}", self.finite_f64()),
            4 => format!("{:?}", self.finite_f64()),
            5 => {
                let e = self.below(60) as i64 - 30;
                format!("{sign}{}.{}e{e}", self.below(1000), self.below(1000))
            }
            6 => format!("{sign}{}.{}", self.below(100_000), self.digits(6)),
            _ => format!("{sign}{}E+{}", self.below(100), self.below(25)),
        }
    }

    fn value(&mut self, depth: u32) -> Value {
        let container = depth < 5 && self.below(3) == 0;
        if container {
            let len = self.below(6);
            if self.below(2) == 0 {
                Value::Array((0..len).map(|_| self.value(depth + 1)).collect())
            } else {
                let mut m = Map::new();
                for _ in 0..len {
                    let k = self.string();
                    let v = self.value(depth + 1);
                    m.insert(k, v);
                }
                Value::Object(m)
            }
        } else {
            match self.below(6) {
                0 => Value::Null,
                1 => Value::Bool(self.below(2) == 0),
                2 | 3 => {
                    let text = self.number_text();
                    Value::Number(text.parse::<Number>().expect("generated number parses"))
                }
                _ => Value::String(self.string()),
            }
        }
    }
}

#[test]
fn hand_picked_values_match_python() {
    let huge = "1234567890".repeat(50);
    let cases: Vec<String> = [
        "null",
        "true",
        "false",
        "0",
        "-0",
        "42",
        "-17",
        "\"\"",
        "\"plain ascii ~ !\"",
        "[]",
        "{}",
        "[[]]",
        "[{}]",
        r#"{"a": {}, "b": [], "c": [{}, []]}"#,
        r#"{"return": {}}"#,
        r#"{"return": [], "id": 1}"#,
        // Unicode: BMP, astral (raw and escaped), combining marks.
        r#""caf\u00e9 中文 é""#,
        "\"😀 emoji 𝄞 \u{10ffff}\"",
        r#""\ud83d\ude00\ud834\udd1e""#,
        "\"\u{fffd}\u{ffff}\u{e000}\u{800}\u{7ff}\u{80}\"",
        // Control characters and DEL.
        r#""\u0000\u0001\u0007\b\t\n\u000b\f\r\u000e\u001f\u007f \u0080""#,
        r#""quote \" backslash \\ slash \/ /""#,
        r#"{"\n\t\"key\\": "\u007f", "\u00ff": "\ud83d\ude00"}"#,
        // Integers of any size.
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775809",
        "123456789012345678901234567890123456789012345678901234567890",
        // Floats across magnitudes.
        "0.0",
        "-0.0",
        "1.0",
        "1.5",
        "0.1",
        "0.0001",
        "0.00001",
        "1e-05",
        "1.5e-7",
        "1E5",
        "1e+2",
        "2.50",
        "1e15",
        "1e16",
        "1e17",
        "9999999999999998.0",
        "1234567890123456.0",
        "12345678901234567.0",
        "1.7976931348623157e308",
        "2.2250738585072014e-308",
        "5e-324",
        "1e400",
        "-1e400",
        "1e-400",
        "-1e-400",
        "0.30000000000000004",
        "123456789.123456789",
        "[1.0, 2, -3.5e-10, 4E+20, 0.5]",
        // Nested, unsorted keys.
        r#"{"return": {"z": 1, "a": [1, 2, {"y": null, "x": true}], "m": "s"}, "id": "x"}"#,
        r#"{"b": {"d": [{"f": 1, "e": 2}], "c": 3}, "a": [[[[[]]]]], "_": "u", "B": "\u00e9"}"#,
        r#"{"😀": 1, "a": 2, "中": 3, "é": 4, "_": 5, "B": 6, "\ufffd": 7, "": 8}"#,
        r#"[{"name": "query-status", "ret-type": "StatusInfo", "meta-type": "command", "arg-type": "0", "allow-oob": false}]"#,
        r#"{"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}, "timestamp": {"seconds": 1700000000, "microseconds": 123456}}"#,
        // A key repeated: first position, last value (json.loads and serde_json agree).
        r#"{"a": 1, "b": 2, "a": 3}"#,
        r#"{"z": {"b": [1, {"y": 1, "x": 2, "y": 3}], "a": 0, "b": 4}, "a\u0000": 1, "a": 2, "\u0061": 3}"#,
        " \t\r\n{ \"b\" :\n[ 1 , 2 ] , \"a\" : { } }\r\n",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([
        huge.clone(),
        format!("-{huge}"),
        format!("[{huge}, -{huge}, {{\"n\": {huge}}}]"),
        // Longer than Python 3.11's default int string limit of 4300 digits.
        "9".repeat(5000),
        // A long string with escapes sprinkled through plain ASCII runs.
        serde_json::to_string(&"abcdefgh\u{1}ijklmnop\"qrstuvwx\u{e9}yz".repeat(200))
            .expect("serialise"),
    ])
    .collect();
    check_cases(&cases);
}

#[test]
fn random_values_match_python() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let cases: Vec<String> = (0..3000)
        .map(|_| {
            let v = rng.value(0);
            serde_json::to_string(&v).expect("serialise")
        })
        .collect();
    check_cases(&cases);
}

#[test]
fn every_code_point_matches_python() {
    // All non-surrogate code points, in strings of 256 and as keys.
    let chars: Vec<char> = (0..=0x10_FFFFu32).filter_map(char::from_u32).collect();
    let mut cases = Vec::new();
    for chunk in chars.chunks(256) {
        let s: String = chunk.iter().collect();
        let mut m = Map::new();
        for (i, c) in chunk.iter().enumerate().take(16) {
            m.insert(format!("{c}{i}"), Value::from(i));
        }
        let v = serde_json::json!([s, m]);
        cases.push(serde_json::to_string(&v).expect("serialise"));
    }
    check_cases(&cases);
}

#[test]
fn float_repr_matches_python_repr() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut floats: Vec<f64> = vec![
        0.0,
        -0.0,
        1.0,
        0.1,
        0.5,
        1e-4,
        9.999e-5,
        1e-5,
        1e16,
        9.999999999999998e15,
        1e17,
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        5e-324,
        f64::EPSILON,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ];
    // Powers of ten and their neighbours around the notation switches.
    for e in -330..=310 {
        let f: f64 = format!("1e{e}").parse().unwrap_or(0.0);
        floats.push(f);
        floats.push(f64::from_bits(f.to_bits().wrapping_add(1)));
        floats.push(f64::from_bits(f.to_bits().wrapping_sub(1)));
    }
    // Integers and short decimals.
    for i in 0..2000u32 {
        floats.push(f64::from(i) / 8.0);
        floats.push(f64::from(i) / 10.0);
        floats.push(f64::from(i) * 1e13);
    }
    // Random bit patterns.
    for _ in 0..100_000 {
        floats.push(f64::from_bits(rng.next()));
    }
    // Random values in "ordinary" magnitudes.
    for _ in 0..20_000 {
        let mantissa = rng.below(1 << 53) as f64;
        let scale = 2f64.powi(rng.below(120) as i32 - 80);
        floats.push(mantissa * scale);
    }

    // Multiples of small powers of two with 16-17 significant digits: the
    // values that can lie exactly half-way between two shortest candidates.
    for _ in 0..20_000 {
        let mantissa = ((1u64 << 46) + rng.below(1 << 53)) as f64;
        let scale = 2f64.powi(-(rng.below(8) as i32));
        floats.push(mantissa * scale);
        floats.push(-mantissa * scale * 2f64.powi(rng.below(30) as i32));
    }
    // Each line: the float's bits in hex; Python prints repr of each.
    let input: String = floats
        .iter()
        .map(|f| format!("{:016x}\n", f.to_bits()))
        .collect();
    let script = r#"
import struct, sys
out = []
for line in sys.stdin:
    line = line.strip()
    if line:
        out.append(repr(struct.unpack(">d", bytes.fromhex(line))[0]))
sys.stdout.write("\n".join(out) + "\n")
"#;
    let output = python(script, &input);
    let expected: Vec<&str> = output.lines().collect();
    assert_eq!(expected.len(), floats.len());
    let mut failures = Vec::new();
    for (f, want) in floats.iter().zip(&expected) {
        let got = render::python_float_repr(*f);
        if got != *want {
            failures.push(format!("{:016x}: python {want}, ours {got}", f.to_bits()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );

    // The same floats through JSON text (non-finite ones cannot be JSON).
    let finite: Vec<String> = floats
        .iter()
        .filter(|f| f.is_finite())
        .map(|f| format!("{f:e}"))
        .collect();
    let cases: Vec<String> = finite
        .chunks(1000)
        .map(|chunk| format!("[{}]", chunk.join(",")))
        .collect();
    check_cases(&cases);
}
