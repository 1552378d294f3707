//! The human monitor (HMP) tunnelled through QMP's `human-monitor-command`.
//!
//! Pure helpers: building the command, printing a reply the way the
//! reference does, and reading the command names out of `help` and `info`.

use qmp_client::Object;
use serde_json::{Map, Value};

use crate::render::{self, Style};

/// `{"execute": "human-monitor-command", "arguments": {"command-line": LINE}}`,
/// with `cpu-index` only once a CPU was chosen (so `-M none` works).
pub fn command(line: &str, cpu_index: Option<i64>) -> Object {
    let mut args = Map::new();
    args.insert("command-line".into(), Value::String(line.to_string()));
    if let Some(index) = cpu_index {
        args.insert("cpu-index".into(), Value::from(index));
    }
    qmp_client::command("human-monitor-command", Some(args))
}

/// Python's `int()` on one word: optional sign, ASCII digits with single
/// underscores between them. `None` when it is not an integer or does not
/// fit an `i64` (no CPU has such an index).
pub fn parse_python_int(word: &str) -> Option<i64> {
    let word = word.trim();
    let (negative, digits) = match word.as_bytes().first()? {
        b'-' => (true, &word[1..]),
        b'+' => (false, &word[1..]),
        _ => (false, word),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
        || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
    {
        return None;
    }
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    let value: i64 = clean.parse().ok()?;
    Some(if negative { -value } else { value })
}

/// The text the reference prints for an HMP reply: the returned text and one
/// space (nothing when it is empty), or `Class: desc` for an error.
pub fn format_reply(body: &Object) -> String {
    if let Some(ret) = body.get("return") {
        return match ret {
            Value::String(text) if text.is_empty() => String::new(),
            Value::String(text) => format!("{text} "),
            Value::Object(map) if map.is_empty() => String::new(),
            Value::Array(list) if list.is_empty() => String::new(),
            other => format!("{} ", render::to_string(other, Style::default())),
        };
    }
    if let Some(Value::Object(error)) = body.get("error") {
        let class = error.get("class").and_then(Value::as_str);
        let desc = error.get("desc").and_then(Value::as_str);
        if let (Some(class), Some(desc)) = (class, desc) {
            return format!("{class}: {desc}\n");
        }
        return format!(
            "{}: {}\n",
            class.unwrap_or("Error"),
            desc.map(str::to_string).unwrap_or_else(|| {
                render::to_string(&Value::Object(error.clone()), Style::default())
            })
        );
    }
    let mut text = render::to_string(&Value::Object(body.clone()), Style::default());
    text.push('\n');
    text
}

/// Command names for completion from the text of HMP `help`: the first word
/// of each entry, the long name of `long|l` aliases, plus `help NAME`.
pub fn names_from_help(help: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in help.split("\r\n").flat_map(|l| l.split('\n')) {
        if line.is_empty() || line.starts_with('[') || line.starts_with('\t') {
            continue;
        }
        let Some(word) = line.split_whitespace().next() else {
            continue;
        };
        if word == "info" {
            continue;
        }
        let name = match word.split_once('|') {
            Some((a, b)) if a.chars().count() == 1 => b,
            Some((a, _)) => a,
            None => word,
        };
        names.push(name.to_string());
        names.push(format!("help {name}"));
    }
    names.push("help info".to_string());
    names
}

/// `info SUBCOMMAND` completions from the text of HMP `info`.
pub fn names_from_info(info: &str) -> Vec<String> {
    info.split("\r\n")
        .flat_map(|l| l.split('\n'))
        .filter_map(|line| line.split_whitespace().nth(1))
        .map(|sub| format!("info {sub}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Object {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn cpu_index_only_when_chosen() {
        let c = command("info version", None);
        assert_eq!(
            Value::Object(c),
            json!({"execute": "human-monitor-command", "arguments": {"command-line": "info version"}})
        );
        let c = command("info cpus", Some(1));
        assert_eq!(c["arguments"]["cpu-index"], json!(1));
    }

    #[test]
    fn python_int() {
        assert_eq!(parse_python_int("1"), Some(1));
        assert_eq!(parse_python_int("+1_0"), Some(10));
        assert_eq!(parse_python_int("-3"), Some(-3));
        assert_eq!(parse_python_int("007"), Some(7));
        for bad in [
            "",
            "x",
            "1x",
            "_1",
            "1_",
            "1__0",
            "-",
            "99999999999999999999",
        ] {
            assert_eq!(parse_python_int(bad), None, "{bad}");
        }
    }

    #[test]
    fn replies_like_the_reference() {
        assert_eq!(
            format_reply(&obj(json!({"return": "7.2.22\r\n"}))),
            "7.2.22\r\n "
        );
        assert_eq!(format_reply(&obj(json!({"return": ""}))), "");
        assert_eq!(
            format_reply(&obj(
                json!({"error": {"class": "GenericError", "desc": "bad"}})
            )),
            "GenericError: bad\n"
        );
        assert_eq!(
            format_reply(&obj(json!({"error": {"desc": "bad"}}))),
            "Error: bad\n"
        );
        assert_eq!(
            format_reply(&obj(json!({"error": {"class": "X"}}))),
            "X: {\"class\": \"X\"}\n"
        );
    }

    #[test]
    fn help_and_info_names() {
        let help = "announce_self [interfaces] [id] -- Trigger GARP\r\n\
                    balloon target -- request VM to change its memory\r\n\
                    c|cont  -- resume emulation\r\n\
                    gdbserver|gdb [device] -- start gdbserver\r\n\
                    info [subcommand] -- show various information\r\n\
                    \tcontinued line\r\n";
        let names = names_from_help(help);
        assert!(names.contains(&"announce_self".to_string()));
        assert!(names.contains(&"cont".to_string()));
        assert!(names.contains(&"gdbserver".to_string()));
        assert!(names.contains(&"help balloon".to_string()));
        assert!(names.contains(&"help info".to_string()));
        assert!(!names.contains(&"info".to_string()));
        let info = "info balloon  -- show balloon information\r\ninfo block [-n] -- show\r\n";
        assert_eq!(names_from_info(info), ["info balloon", "info block"]);
    }
}
