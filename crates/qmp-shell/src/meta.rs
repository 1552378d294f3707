//! The shell's own commands: lines starting with `/` (no QMP or HMP
//! command does). Pure parsing, beside the shorthand; the session engine
//! runs them.
//!
//! | command | what it does |
//! | --- | --- |
//! | `/wait [--timeout=SECONDS] EVENT [KEY=VALUE...]` | wait for an event whose `data` matches |
//! | `/jobs [--timeout=SECONDS]` | follow running jobs and migration until none runs |
//! | `/record [--append] FILE`, `/record off` | write the following command lines to FILE |
//! | `/play FILE` | run a script file as if typed |
//! | `/oob COMMAND [KEY=VALUE...]` | send COMMAND out of band (`exec-oob`) |
//! | `/fd [--read-only] PATH COMMAND [KEY=VALUE...]` | send COMMAND with PATH opened and attached |

use std::time::Duration;

use qmp_client::Object;
use serde_json::Value;

use crate::shorthand::{parse_arguments, tokenize, unquote, ParseError};

/// A parsed meta-command.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Meta {
    /// `/wait`: an event named `event` whose `data` has every member of
    /// `filter` (nested objects compared member by member).
    Wait {
        /// Give up after this long (a failed command).
        timeout: Option<Duration>,
        /// The event name.
        event: String,
        /// What its `data` must contain.
        filter: Object,
    },
    /// `/jobs`: follow jobs and a migration until none runs.
    Jobs {
        /// Give up after this long (a failed command; the jobs go on).
        timeout: Option<Duration>,
    },
    /// `/record [--append] FILE`, or `/record off`.
    Record {
        /// The file (`None`: `/record off`).
        file: Option<String>,
        /// `--append`: add to an existing file (else one is refused).
        append: bool,
    },
    /// `/play FILE`.
    Play(String),
    /// `/oob`: the `{"exec-oob": NAME, "arguments": {...}}` to send.
    Oob(Object),
    /// `/fd`: open `path` and send `command` with it attached.
    Fd {
        /// Open read-only (else read-write, created 0600 if missing).
        read_only: bool,
        /// The file to open.
        path: String,
        /// `{"execute": NAME, "arguments": {...}}`.
        command: Object,
    },
}

/// The names of the meta-commands, for completion and help.
pub const NAMES: [&str; 6] = ["/fd", "/jobs", "/oob", "/play", "/record", "/wait"];

/// One line of usage per meta-command.
pub const USAGE: &str = "\
Shell commands:
  /wait [--timeout=SECONDS] EVENT [KEY=VALUE...]
                    wait for an event whose data matches (events since the
                    previous command count)
  /jobs [--timeout=SECONDS]
                    follow jobs (query-jobs) and migration until none runs
  /record [--append] FILE
                    write what is sent from now on to a new FILE (never
                    overwritten: with --append, add to FILE); /record off stops
  /play FILE        run the lines of FILE as if typed
  /oob COMMAND [KEY=VALUE...]
                    send COMMAND out of band (exec-oob)
  /fd [--read-only] PATH COMMAND [KEY=VALUE...]
                    send COMMAND with PATH opened and attached (UNIX socket)
";

/// What the lines of a recording are: a recording's header says so (see
/// [`recorded_modes`]), and `/play` refuses one made in another mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// QMP commands in the shorthand (no `-H`, no `-N`).
    Qmp,
    /// HMP commands (`-H`).
    Hmp,
    /// Guest agent commands (`-N`).
    GuestAgent,
}

/// The first line of a recording's header starts so.
pub const RECORDING_HEADER: &str = "# qmp-shell ";

/// The header line of a recording of HMP commands.
pub const HMP_RECORDING: &str = "# HMP commands: play them with qmp-shell -H";

/// The header line of a recording of guest agent commands.
pub const GUEST_AGENT_RECORDING: &str = "# guest agent commands: play them with qmp-shell -N";

impl Mode {
    /// The header line that says a recording is in this mode (none for
    /// QMP, the default).
    pub fn header_line(self) -> Option<&'static str> {
        match self {
            Mode::Qmp => None,
            Mode::Hmp => Some(HMP_RECORDING),
            Mode::GuestAgent => Some(GUEST_AGENT_RECORDING),
        }
    }

    /// What the lines are, and how to play them, for a refusal.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Qmp => "QMP commands, as its header says: play it without -H or -N",
            Mode::Hmp => "HMP commands, as its header says: play it with qmp-shell -H",
            Mode::GuestAgent => {
                "guest agent commands, as its header says: play it with qmp-shell -N"
            }
        }
    }
}

/// The modes that the headers in a recording declare, in order (a file
/// recorded with `/record --append` has one header per session): each
/// header starts with a `# qmp-shell VERSION recording, DATE` line, and
/// the comment lines that follow it may say [`HMP_RECORDING`] or
/// [`GUEST_AGENT_RECORDING`] (else the header is QMP's). A file written
/// by hand has none.
pub fn recorded_modes(text: &str) -> Vec<Mode> {
    let mut modes = Vec::new();
    let mut in_header = false;
    for line in text.lines() {
        if line.starts_with(RECORDING_HEADER) && line.contains(" recording, ") {
            modes.push(Mode::Qmp);
            in_header = true;
        } else if in_header && line.starts_with("# ") {
            let mode = match line {
                HMP_RECORDING => Mode::Hmp,
                GUEST_AGENT_RECORDING => Mode::GuestAgent,
                _ => continue,
            };
            if let Some(last) = modes.last_mut() {
                *last = mode;
            }
        } else {
            in_header = false;
        }
    }
    modes
}

/// Whether `line` is a meta-command (its first non-blank is `/`).
pub(crate) fn is_meta(line: &str) -> bool {
    line.trim_start().starts_with('/')
}

/// `--timeout=SECONDS`.
fn parse_timeout(value: &str) -> Result<Duration, ParseError> {
    let secs: f64 = value
        .trim()
        .parse()
        .map_err(|_| ParseError(format!("--timeout: not a number of seconds: {value}")))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 1.0e9 {
        return Err(ParseError(format!(
            "--timeout: must be more than 0 seconds: {value}"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Options given to a meta-command: `(name, value)`.
type Options = Vec<(String, Option<String>)>;

/// Split off leading options (`--NAME` or `--NAME=VALUE`) that `allowed`
/// knows; returns them and the rest.
fn options<'a>(
    tokens: &'a [String],
    allowed: &[&str],
    usage: &str,
) -> Result<(Options, &'a [String]), ParseError> {
    let mut found = Vec::new();
    let mut rest = tokens;
    while let Some(first) = rest.first() {
        let Some(option) = first.strip_prefix("--") else {
            break;
        };
        let (name, value) = match option.split_once('=') {
            Some((n, v)) => (n, Some(unquote(v))),
            None => (option, None),
        };
        if !allowed.contains(&name) {
            return Err(ParseError(format!(
                "unknown option --{name}; usage: {usage}"
            )));
        }
        found.push((name.to_owned(), value));
        rest = &rest[1..];
    }
    Ok((found, rest))
}

fn command(key: &str, name: &str, args: &[String]) -> Result<Object, ParseError> {
    let mut arguments = Object::new();
    parse_arguments(args, &mut arguments)?;
    let mut cmd = Object::new();
    cmd.insert(key.to_owned(), Value::String(name.to_owned()));
    cmd.insert("arguments".to_owned(), Value::Object(arguments));
    Ok(cmd)
}

/// Parse a meta-command line (see [`is_meta`]). The error is the reason,
/// worded for `ERROR: /NAME: REASON`.
pub(crate) fn parse(line: &str) -> Result<Meta, ParseError> {
    let tokens = tokenize(line.trim());
    let Some((name, rest)) = tokens.split_first() else {
        return Err(ParseError("empty command".to_owned()));
    };
    let usage_of = |u: &str| ParseError(format!("usage: {u}"));
    match name.as_str() {
        "/wait" => {
            const U: &str = "/wait [--timeout=SECONDS] EVENT [KEY=VALUE...]";
            let (opts, rest) = options(rest, &["timeout"], U)?;
            let timeout = timeout_option(&opts, U)?;
            let Some((event, filters)) = rest.split_first() else {
                return Err(usage_of(U));
            };
            let mut filter = Object::new();
            parse_arguments(filters, &mut filter)?;
            Ok(Meta::Wait {
                timeout,
                event: unquote(event),
                filter,
            })
        }
        "/jobs" => {
            const U: &str = "/jobs [--timeout=SECONDS]";
            let (opts, rest) = options(rest, &["timeout"], U)?;
            if !rest.is_empty() {
                return Err(usage_of(U));
            }
            Ok(Meta::Jobs {
                timeout: timeout_option(&opts, U)?,
            })
        }
        "/record" => {
            const U: &str = "/record [--append] FILE, or /record off";
            let (opts, rest) = options(rest, &["append"], U)?;
            if opts.iter().any(|(_, v)| v.is_some()) {
                return Err(usage_of(U));
            }
            let append = !opts.is_empty();
            match rest {
                // `--append off` would be ambiguous (`./off` is not).
                [off] if off == "off" && append => Err(usage_of(U)),
                [off] if off == "off" => Ok(Meta::Record { file: None, append }),
                [file] => Ok(Meta::Record {
                    file: Some(unquote(file)),
                    append,
                }),
                _ => Err(usage_of(U)),
            }
        }
        "/play" => match rest {
            [file] => Ok(Meta::Play(unquote(file))),
            _ => Err(usage_of("/play FILE")),
        },
        "/oob" => {
            let Some((cmd, args)) = rest.split_first() else {
                return Err(usage_of("/oob COMMAND [KEY=VALUE...]"));
            };
            Ok(Meta::Oob(command("exec-oob", &unquote(cmd), args)?))
        }
        "/fd" => {
            const U: &str = "/fd [--read-only] PATH COMMAND [KEY=VALUE...]";
            let (opts, rest) = options(rest, &["read-only"], U)?;
            if opts.iter().any(|(_, v)| v.is_some()) {
                return Err(usage_of(U));
            }
            let [path, cmd, args @ ..] = rest else {
                return Err(usage_of(U));
            };
            Ok(Meta::Fd {
                read_only: !opts.is_empty(),
                path: unquote(path),
                command: command("execute", &unquote(cmd), args)?,
            })
        }
        other => Err(ParseError(format!(
            "unknown shell command {other} (shell commands: {})",
            NAMES.join(", ")
        ))),
    }
}

fn timeout_option(opts: &Options, usage: &str) -> Result<Option<Duration>, ParseError> {
    match opts.last() {
        None => Ok(None),
        Some((_, Some(v))) => parse_timeout(v).map(Some),
        Some((_, None)) => Err(ParseError(format!(
            "--timeout needs =SECONDS; usage: {usage}"
        ))),
    }
}

/// Whether `data` contains `filter`: every member of `filter` is in `data`
/// with an equal value, nested objects compared member by member (numbers
/// by value).
pub fn matches(data: Option<&Value>, filter: &Object) -> bool {
    filter.iter().all(|(k, want)| {
        let got = data.and_then(|d| d.get(k));
        match (want, got) {
            (Value::Object(w), Some(g @ Value::Object(_))) => matches(Some(g), w),
            (Value::Number(a), Some(Value::Number(b))) => a.as_f64() == b.as_f64(),
            (w, Some(g)) => w == g,
            (_, None) => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Object {
        match v {
            Value::Object(o) => o,
            _ => unreachable!(),
        }
    }

    #[test]
    fn wait_with_filters_and_timeout() {
        assert_eq!(
            parse("/wait --timeout=2.5 JOB_STATUS_CHANGE id=job0 status=ready").unwrap(),
            Meta::Wait {
                timeout: Some(Duration::from_millis(2500)),
                event: "JOB_STATUS_CHANGE".into(),
                filter: obj(json!({"id": "job0", "status": "ready"})),
            }
        );
        assert_eq!(
            parse("  /wait STOP").unwrap(),
            Meta::Wait {
                timeout: None,
                event: "STOP".into(),
                filter: Object::new()
            }
        );
        assert!(parse("/wait").is_err());
        assert!(parse("/wait --timeout=0 STOP").is_err());
        assert!(parse("/wait --timeout STOP").is_err());
        assert!(parse("/wait --bogus STOP").is_err());
    }

    #[test]
    fn the_others() {
        assert_eq!(parse("/jobs").unwrap(), Meta::Jobs { timeout: None });
        assert_eq!(
            parse("/record off").unwrap(),
            Meta::Record {
                file: None,
                append: false
            }
        );
        assert_eq!(
            parse(r#"/record "my file.txt""#).unwrap(),
            Meta::Record {
                file: Some("my file.txt".into()),
                append: false
            }
        );
        assert_eq!(
            parse("/record --append a.qmp").unwrap(),
            Meta::Record {
                file: Some("a.qmp".into()),
                append: true
            }
        );
        assert!(parse("/record --append off").is_err());
        assert!(parse("/record --append").is_err());
        assert!(parse("/record --append=x a.qmp").is_err());
        assert!(parse("/record a b").is_err());
        assert_eq!(parse("/play a.qmp").unwrap(), Meta::Play("a.qmp".into()));
        assert_eq!(
            parse("/oob migrate-pause").unwrap(),
            Meta::Oob(obj(json!({"exec-oob": "migrate-pause", "arguments": {}})))
        );
        assert_eq!(
            parse("/fd --read-only /tmp/x add-fd fdset-id=3").unwrap(),
            Meta::Fd {
                read_only: true,
                path: "/tmp/x".into(),
                command: obj(json!({"execute": "add-fd", "arguments": {"fdset-id": 3}})),
            }
        );
        assert!(parse("/fd /tmp/x").is_err());
        assert!(parse("/play").is_err());
        let e = parse("/nope").unwrap_err();
        assert!(e.0.contains("unknown shell command /nope"), "{e}");
    }

    #[test]
    fn recorded_modes_come_from_the_headers() {
        let qmp = "# qmp-shell 0.1.0 recording, 2026-01-01 00:00:00 UTC\n# QEMU 7.2.22\n";
        let hmp = format!(
            "# qmp-shell 0.1.0 recording, 2026-01-01 00:00:00 UTC\n# QEMU 7.2.22\n\
             {HMP_RECORDING}\n"
        );
        let ga = format!("# qmp-shell 0.1.0 recording, 2026 UTC\n{GUEST_AGENT_RECORDING}\n");
        assert_eq!(recorded_modes("query-name\n# comment\n"), []);
        assert_eq!(recorded_modes(&format!("{qmp}query-name\n")), [Mode::Qmp]);
        assert_eq!(recorded_modes(&format!("{hmp}info name\n")), [Mode::Hmp]);
        assert_eq!(
            recorded_modes(&format!("{hmp}info name\n{qmp}stop\n{ga}")),
            [Mode::Hmp, Mode::Qmp, Mode::GuestAgent]
        );
        // The marker counts only inside a header.
        assert_eq!(
            recorded_modes(&format!("{qmp}stop\n{HMP_RECORDING}\n")),
            [Mode::Qmp]
        );
    }

    #[test]
    fn filters_match_nested_members() {
        let data = json!({"id": "j", "status": "ready", "n": {"a": 1, "b": [1]}});
        assert!(matches(Some(&data), &obj(json!({}))));
        assert!(matches(Some(&data), &obj(json!({"status": "ready"}))));
        assert!(matches(Some(&data), &obj(json!({"n": {"a": 1.0}}))));
        assert!(matches(Some(&data), &obj(json!({"n": {"b": [1]}}))));
        assert!(!matches(Some(&data), &obj(json!({"status": "running"}))));
        assert!(!matches(Some(&data), &obj(json!({"missing": 1}))));
        assert!(!matches(None, &obj(json!({"status": "ready"}))));
        assert!(matches(None, &Object::new()));
    }
}
