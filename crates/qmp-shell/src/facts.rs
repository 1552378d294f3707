//! What the safety net needs to know about a server, derived from its QMP
//! schema: which commands, arguments, enum values and events are marked
//! `deprecated` or `unstable`, and which commands may run out of band.
//!
//! Pure: built from a [`Schema`], checked against commands, and written to
//! and read from JSON (so [`crate::store`] can keep it on disk: the facts of
//! a QEMU build are a few kilobytes, its schema half a megabyte that takes
//! QEMU 25 ms to produce).

use std::collections::BTreeMap;

use qmp_client::Object;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::schema::{Mark, Schema, WARNED_FEATURES};

/// The version of the JSON form; another version is ignored (2: the
/// names of every command and event as one string each, the facts of the
/// few that have any apart; 3: the names apart by spaces, which JSON
/// strings hold unescaped, so reading them is one copy).
const FORMAT: u64 = 3;

/// One of [`WARNED_FEATURES`] (a name of its own for the derived reading
/// of [`Command`], which would otherwise ask its input to be `'static`).
type FeatureName = &'static str;

/// Facts about one command. Its JSON form leaves out what is not there:
/// `{"mark": FEATURE, "oob": true, "args": [[PATH, VALUE or null, FEATURE]]}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
struct Command {
    #[serde(default, deserialize_with = "read_mark")]
    mark: Option<FeatureName>,
    #[serde(default)]
    oob: bool,
    #[serde(default, deserialize_with = "read_args")]
    args: Vec<Mark>,
}

impl Command {
    /// Whether there is anything to know about it.
    fn is_plain(&self) -> bool {
        self.mark.is_none() && !self.oob && self.args.is_empty()
    }
}

/// Deprecation marks and out-of-band permissions of a server's commands
/// and events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// Every command the server has.
    command_names: Names,
    /// The facts of the commands that have any (a few of hundreds).
    commands: BTreeMap<String, Command>,
    /// Every event.
    event_names: Names,
    /// The marks of the events that have one.
    events: BTreeMap<String, &'static str>,
}

/// A set of names kept as one sorted string, the names apart by
/// [`Names::SEP`]: read from the cache at the cost of one string (a
/// one-command session reads it at every start), looked up by binary
/// search.
#[derive(Debug, Clone, Default, PartialEq)]
struct Names {
    text: String,
    /// Where each name starts.
    starts: Vec<u32>,
}

impl Names {
    /// What separates the names: a space, which no QMP name has (QAPI
    /// names are letters, digits, `-`, `_` and `.`) and which a JSON
    /// string holds as is.
    const SEP: char = ' ';

    /// The set of `names`, sorted and without duplicates; a name with a
    /// space in it (which no QEMU has) is left out.
    fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Names {
        let mut names: Vec<&str> = names
            .into_iter()
            .filter(|n| !n.contains(Names::SEP))
            .collect();
        names.sort_unstable();
        names.dedup();
        Names::from_text(names.join(Names::SEP.encode_utf8(&mut [0; 4]))).unwrap_or_default()
    }

    /// The names of `text`, apart by [`Names::SEP`]; `None` unless they
    /// are sorted, without duplicates or empty names.
    fn from_text(text: String) -> Option<Names> {
        if text.is_empty() {
            return Some(Names::default());
        }
        let bytes = text.as_bytes();
        let mut starts = Vec::with_capacity(bytes.len() / 16);
        let mut at = 0;
        let mut last: &[u8] = &[];
        loop {
            let end = bytes[at..]
                .iter()
                .position(|b| *b == Names::SEP as u8)
                .map_or(bytes.len(), |n| at + n);
            let name = &bytes[at..end];
            // Sorted and non-empty: each name above the one before (the
            // first above the empty one).
            if name <= last {
                return None;
            }
            starts.push(u32::try_from(at).ok()?);
            last = name;
            if end == bytes.len() {
                break;
            }
            at = end + 1;
        }
        Some(Names { text, starts })
    }

    fn line(&self, i: usize) -> &str {
        let start = self.starts[i] as usize;
        let end = self
            .starts
            .get(i + 1)
            .map_or(self.text.len(), |n| *n as usize - 1);
        &self.text[start..end]
    }

    fn contains(&self, name: &str) -> bool {
        let (mut lo, mut hi) = (0, self.starts.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.line(mid).cmp(name) {
                std::cmp::Ordering::Equal => return true,
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        false
    }
}

/// A feature name from JSON, as one of ours.
fn feature(name: &str) -> Option<&'static str> {
    WARNED_FEATURES.into_iter().find(|f| *f == name)
}

impl Facts {
    /// The facts of `schema`.
    pub(crate) fn from_schema(schema: &Schema) -> Facts {
        let mut facts = Facts {
            command_names: Names::new(schema.command_names()),
            event_names: Names::new(schema.event_names()),
            ..Facts::default()
        };
        for name in schema.command_names() {
            let command = Command {
                mark: schema.command_mark(name),
                oob: schema.allows_oob(name),
                args: schema.marks(name),
            };
            if !command.is_plain() {
                facts.commands.insert(name.to_owned(), command);
            }
        }
        for name in schema.event_names() {
            if let Some(mark) = schema.event_mark(name) {
                facts.events.insert(name.to_owned(), mark);
            }
        }
        facts
    }

    /// Whether the server has command `name`.
    pub(crate) fn knows(&self, name: &str) -> bool {
        self.command_names.contains(name)
    }

    /// Whether command `name` may run out of band.
    pub(crate) fn allows_oob(&self, name: &str) -> bool {
        self.commands.get(name).is_some_and(|c| c.oob)
    }

    /// The commands that may run out of band, sorted.
    pub(crate) fn oob_commands(&self) -> Vec<&str> {
        self.commands
            .iter()
            .filter(|(_, c)| c.oob)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// `deprecated` or `unstable` for event `name`.
    pub(crate) fn event_mark(&self, name: &str) -> Option<&'static str> {
        self.events.get(name).copied()
    }

    /// Whether the server has event `name`.
    pub fn knows_event(&self, name: &str) -> bool {
        self.event_names.contains(name)
    }

    /// One-line warnings (without the `warning: ` prefix) for what the
    /// command `name` with `args` uses that the schema marks: the command
    /// itself, its arguments, the enum values given. Array elements are
    /// looked into; the paths are dotted.
    pub fn warnings(&self, name: &str, args: Option<&Object>) -> Vec<String> {
        let Some(command) = self.commands.get(name) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(mark) = command.mark {
            out.push(format!("command {name} is {mark} (QMP schema)"));
        }
        if let (Some(args), false) = (args, command.args.is_empty()) {
            let mut stack: Vec<(String, &Value)> =
                args.iter().rev().map(|(k, v)| (k.clone(), v)).collect();
            while let Some((path, value)) = stack.pop() {
                for m in command.args.iter().filter(|m| m.path == path) {
                    match (&m.value, value) {
                        (None, _) => out.push(format!(
                            "argument '{path}' of {name} is {} (QMP schema)",
                            m.feature
                        )),
                        (Some(v), Value::String(s)) if v == s => out.push(format!(
                            "value '{v}' of argument '{path}' of {name} is {} (QMP schema)",
                            m.feature
                        )),
                        _ => {}
                    }
                }
                match value {
                    Value::Object(map) => {
                        for (k, v) in map.iter().rev() {
                            stack.push((format!("{path}.{k}"), v));
                        }
                    }
                    Value::Array(items) => {
                        for v in items.iter().rev() {
                            stack.push((path.clone(), v));
                        }
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// The JSON form (for the disk cache).
    pub(crate) fn to_json(&self) -> Value {
        let commands: serde_json::Map<String, Value> = self
            .commands
            .iter()
            .map(|(name, c)| {
                let mut obj = serde_json::Map::new();
                if let Some(mark) = c.mark {
                    obj.insert("mark".to_owned(), json!(mark));
                }
                if c.oob {
                    obj.insert("oob".to_owned(), json!(true));
                }
                if !c.args.is_empty() {
                    let args: Vec<Value> = c
                        .args
                        .iter()
                        .map(|m| json!([m.path, m.value, m.feature]))
                        .collect();
                    obj.insert("args".to_owned(), Value::Array(args));
                }
                (name.clone(), Value::Object(obj))
            })
            .collect();
        json!({
            "format": FORMAT,
            "commands": self.command_names.text,
            "marked": commands,
            "events": self.event_names.text,
            "marked_events": self.events,
        })
    }

    /// Read the JSON form; `None` for anything else (an older format, a
    /// damaged file).
    #[cfg(test)]
    pub(crate) fn from_json(v: &Value) -> Option<Facts> {
        FactsJson::deserialize(v).ok()?.into_facts()
    }
}

/// The JSON form of [`Facts`] as read: straight into the maps, with no
/// JSON tree in between (a one-command session reads it at every start).
#[derive(Deserialize)]
pub(crate) struct FactsJson {
    format: u64,
    /// Every command, sorted, apart by spaces.
    commands: String,
    marked: BTreeMap<String, Command>,
    /// Every event, sorted, apart by spaces.
    events: String,
    marked_events: BTreeMap<String, Feature>,
}

/// A feature name, one of ours ([`WARNED_FEATURES`]); anything else does
/// not read.
struct Feature(&'static str);

impl<'de> Deserialize<'de> for Feature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Feature, D::Error> {
        // Looked at where it lies, never copied.
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = Feature;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a feature name")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Feature, E> {
                feature(name)
                    .map(Feature)
                    .ok_or_else(|| E::custom("not a feature"))
            }
        }
        d.deserialize_str(Name)
    }
}

/// A command's `mark`.
fn read_mark<'de, D: Deserializer<'de>>(d: D) -> Result<Option<FeatureName>, D::Error> {
    Ok(Option::<Feature>::deserialize(d)?.map(|f| f.0))
}

/// A command's `args`: `[path, value or null, feature]` each.
fn read_args<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Mark>, D::Error> {
    let args = Vec::<(String, Option<String>, Feature)>::deserialize(d)?;
    Ok(args
        .into_iter()
        .map(|(path, value, feature)| Mark {
            path,
            value,
            feature: feature.0,
        })
        .collect())
}

impl FactsJson {
    /// The facts; `None` for another format.
    pub(crate) fn into_facts(self) -> Option<Facts> {
        if self.format != FORMAT {
            return None;
        }
        let command_names = Names::from_text(self.commands)?;
        let event_names = Names::from_text(self.events)?;
        // The facts are of commands and events there are.
        if !self.marked.keys().all(|n| command_names.contains(n))
            || !self.marked_events.keys().all(|n| event_names.contains(n))
        {
            return None;
        }
        Some(Facts {
            command_names,
            commands: self.marked,
            event_names,
            events: self
                .marked_events
                .into_iter()
                .map(|(name, f)| (name, f.0))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu() -> Facts {
        let text = include_str!("../tests/data/schema/qemu-7.2-system.json");
        let v: Value = serde_json::from_str(text).unwrap();
        let ret = v.get("return").cloned().unwrap_or(v);
        Facts::from_schema(&Schema::from_value(&ret))
    }

    fn args(text: &str) -> Object {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn commands_arguments_values_and_events_of_qemu_7_2() {
        let f = qemu();
        let marked = |name| f.warnings(name, None);
        assert_eq!(
            marked("nbd-server-add"),
            ["command nbd-server-add is deprecated (QMP schema)"]
        );
        assert_eq!(
            marked("drive-backup"),
            ["command drive-backup is deprecated (QMP schema)"]
        );
        assert_eq!(
            marked("x-query-jit"),
            ["command x-query-jit is unstable (QMP schema)"]
        );
        assert!(marked("query-status").is_empty());
        assert_eq!(f.event_mark("MEM_UNPLUG_ERROR"), Some("deprecated"));
        assert_eq!(f.event_mark("STOP"), None);
        assert!(f.knows_event("JOB_STATUS_CHANGE") && !f.knows_event("NOPE"));
        assert!(f.allows_oob("migrate-pause") && f.allows_oob("query-yank"));
        assert!(!f.allows_oob("query-status"));
        assert_eq!(
            f.oob_commands(),
            ["migrate-pause", "migrate-recover", "query-yank", "yank"]
        );
        assert_eq!(
            f.warnings("nbd-server-add", Some(&args(r#"{"device": "n0"}"#))),
            ["command nbd-server-add is deprecated (QMP schema)"]
        );
        assert_eq!(
            f.warnings("eject", Some(&args(r#"{"device": "cd0", "force": true}"#))),
            ["argument 'device' of eject is deprecated (QMP schema)"]
        );
        assert_eq!(
            f.warnings(
                "transaction",
                Some(&args(
                    r#"{"actions": [{"type": "abort", "data": {}},
                                    {"type": "drive-backup", "data": {"device": "d"}}]}"#
                ))
            ),
            ["value 'drive-backup' of argument 'actions.type' of transaction is deprecated (QMP schema)"]
        );
        assert!(f.warnings("query-status", None).is_empty());
        assert!(f
            .warnings(
                "blockdev-add",
                Some(&args(r#"{"driver": "null-co", "node-name": "n0"}"#))
            )
            .is_empty());
        assert!(f.warnings("no-such-command", None).is_empty());
    }

    #[test]
    fn json_form_round_trips_and_refuses_others() {
        let f = qemu();
        let text = serde_json::to_string(&f.to_json()).unwrap();
        // Small enough to keep on disk for every QEMU met.
        assert!(text.len() < 64 << 10, "{} bytes", text.len());
        let back = Facts::from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(back, f);
        assert!(Facts::from_json(&json!({"format": 99})).is_none());
        assert!(Facts::from_json(
            &json!({"format": 1, "commands": {"a": {"mark": "odd"}}, "events": {}})
        )
        .is_none());
        let form = |commands: &str, marked: Value| {
            json!({"format": 3, "commands": commands, "marked": marked,
                   "events": "A B", "marked_events": {"B": "deprecated"}})
        };
        let read = Facts::from_json(&form("a b", json!({"b": {"oob": true}}))).unwrap();
        assert!(read.knows("a") && read.knows("b") && !read.knows("c") && !read.knows(""));
        assert!(read.allows_oob("b") && !read.allows_oob("a"));
        assert!(read.knows_event("A") && read.event_mark("B") == Some("deprecated"));
        // Unsorted names, facts of a command there is not, a strange mark.
        assert!(Facts::from_json(&form("b a", json!({}))).is_none());
        assert!(Facts::from_json(&form("a", json!({"z": {"oob": true}}))).is_none());
        assert!(Facts::from_json(&form("a", json!({"a": {"mark": "odd"}}))).is_none());
        assert!(Facts::from_json(&json!([])).is_none());
    }

    #[test]
    fn names_are_found_by_binary_search() {
        let names = Names::new(["query-status", "add-fd", "yank", "query-status", "b", "x y"]);
        assert_eq!(names.text, "add-fd b query-status yank");
        for n in ["add-fd", "b", "query-status", "yank"] {
            assert!(names.contains(n), "{n}");
        }
        for n in ["", "a", "add", "add-fd b", "query", "x y", "x", "z"] {
            assert!(!names.contains(n), "{n}");
        }
        assert!(!Names::default().contains("x"));
        assert_eq!(Names::from_text("a  b".into()), None);
        assert_eq!(Names::from_text("a a".into()), None);
        assert_eq!(Names::from_text(" a".into()), None);
        assert_eq!(Names::from_text("a ".into()), None);
        assert_eq!(Names::from_text("b a".into()), None);
        assert_eq!(
            Names::from_text("ab".into()).map(|n| n.starts),
            Some(vec![0])
        );
    }
}
