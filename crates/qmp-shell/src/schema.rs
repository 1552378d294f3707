//! The QMP schema, as told by `query-qmp-schema`, for completion and help.
//!
//! Pure: `Schema::from_value` takes the `"return"` value of the command
//! (see QEMU's `docs/devel/qapi-code-gen.rst`, "Client JSON Protocol
//! introspection") and the rest answers questions about it. Entries the
//! module does not understand are skipped; no schema and no input line makes
//! it panic.
//!
//! Type names other than the builtins (`str`, `int`, `bool`, ...) are masked
//! by QEMU (`"0"`, `"1"`, ...), so help describes types by their structure
//! (`enum`, `object`, `array of ...`) rather than by their QAPI names.
//!
//! This file reads the schema and completes lines; the help text is
//! written in `schema/help.rs`.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

mod help;

/// How deep type references are followed (guards against cyclic or absurdly
/// nested schemas).
const MAX_DEPTH: usize = 32;

/// A member of an object type.
#[derive(Debug, Clone)]
struct Member {
    name: String,
    ty: String,
    optional: bool,
    features: Vec<String>,
}

/// One entry of the schema that describes a type.
#[derive(Debug, Clone)]
enum Type {
    /// A builtin type; the string is its JSON type (`"boolean"`, ...).
    Builtin(String),
    /// An enumeration: its values, and those the schema marks
    /// `deprecated` or `unstable` with the first such feature.
    Enum(Vec<String>, Vec<(String, &'static str)>),
    /// An array and its element type.
    Array(String),
    /// An object: members, and for a union the tag member's name and the
    /// variants as `(case, type)`.
    Object {
        members: Vec<Member>,
        tag: Option<String>,
        variants: Vec<(String, String)>,
    },
    /// An alternate and the types of its branches.
    Alternate(Vec<String>),
}

/// The union of `transaction` actions.
struct ActionUnion<'a> {
    /// `(case, type)` of each variant.
    variants: &'a [(String, String)],
    /// The type of the tag member.
    tag_type: Option<&'a Type>,
}

/// A command or an event.
#[derive(Debug, Clone, Default)]
struct Entity {
    arg_type: Option<String>,
    ret_type: Option<String>,
    features: Vec<String>,
    allow_oob: bool,
}

/// The schema of a QMP server: its commands, events and types.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    types: HashMap<String, Type>,
    commands: BTreeMap<String, Entity>,
    events: BTreeMap<String, Entity>,
}

/// The features that make a name worth a warning.
pub(crate) const WARNED_FEATURES: [&str; 2] = ["deprecated", "unstable"];

/// The first of [`WARNED_FEATURES`] in `features`, if any.
pub(crate) fn warned_feature(features: &[String]) -> Option<&'static str> {
    WARNED_FEATURES
        .into_iter()
        .find(|w| features.iter().any(|f| f == w))
}

/// Something in a command's arguments that the schema marks `deprecated`
/// or `unstable` (see [`Schema::marks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mark {
    /// The dotted path of the argument (array elements add nothing to it).
    pub(crate) path: String,
    /// The enum value marked, or `None` when the argument itself is.
    pub(crate) value: Option<String>,
    /// `deprecated` or `unstable`.
    pub(crate) feature: &'static str,
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn parse_type(meta: &str, entry: &Value) -> Option<Type> {
    Some(match meta {
        "builtin" => Type::Builtin(str_field(entry, "json-type").unwrap_or_default()),
        "enum" => {
            // `members` ([{name}]) is the newer spelling, `values` the older.
            let members = entry.get("members").and_then(Value::as_array);
            let mut values: Vec<String> = members
                .map(|a| a.iter().filter_map(|m| str_field(m, "name")).collect())
                .unwrap_or_default();
            if values.is_empty() {
                values = string_list(entry.get("values"));
            }
            let marked = members
                .into_iter()
                .flatten()
                .filter_map(|m| {
                    let feature = warned_feature(&string_list(m.get("features")))?;
                    Some((str_field(m, "name")?, feature))
                })
                .collect();
            Type::Enum(values, marked)
        }
        "array" => Type::Array(str_field(entry, "element-type")?),
        "object" => {
            let members = entry
                .get("members")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|m| {
                            Some(Member {
                                name: str_field(m, "name")?,
                                ty: str_field(m, "type")?,
                                optional: m.get("default").is_some(),
                                features: string_list(m.get("features")),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            let variants = entry
                .get("variants")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| Some((str_field(v, "case")?, str_field(v, "type")?)))
                        .collect()
                })
                .unwrap_or_default();
            Type::Object {
                members,
                tag: str_field(entry, "tag"),
                variants,
            }
        }
        "alternate" => Type::Alternate(
            entry
                .get("members")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|m| str_field(m, "type")).collect())
                .unwrap_or_default(),
        ),
        _ => return None,
    })
}

/// Words of `line` split on whitespace, with their byte offsets.
fn split_words(line: &str) -> Vec<(usize, &str)> {
    let mut words = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                words.push((s, &line[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        words.push((s, &line[s..]));
    }
    words
}

/// A value typed on the command line, without surrounding quotes.
fn unquote(value: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    value
}

/// Sorted, deduplicated candidates starting with `prefix`.
fn matching<'a>(names: impl IntoIterator<Item = &'a str>, prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = names
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

impl Schema {
    /// Build from the `"return"` value of `query-qmp-schema`.
    ///
    /// Entries that are not objects, lack a string `name` or `meta-type`, or
    /// have an unknown meta-type are skipped, as are malformed members; a
    /// value that is not an array gives an empty schema. When a name occurs
    /// twice, the first entry wins.
    pub(crate) fn from_value(ret: &Value) -> Schema {
        let mut schema = Schema::default();
        let Some(entries) = ret.as_array() else {
            return schema;
        };
        for entry in entries {
            let (Some(name), Some(meta)) =
                (str_field(entry, "name"), str_field(entry, "meta-type"))
            else {
                continue;
            };
            let entity = || Entity {
                arg_type: str_field(entry, "arg-type"),
                ret_type: str_field(entry, "ret-type"),
                features: string_list(entry.get("features")),
                allow_oob: entry.get("allow-oob").and_then(Value::as_bool) == Some(true),
            };
            match meta.as_str() {
                "command" => {
                    schema.commands.entry(name).or_insert_with(entity);
                }
                "event" => {
                    schema.events.entry(name).or_insert_with(entity);
                }
                _ => {
                    if let Some(ty) = parse_type(&meta, entry) {
                        schema.types.entry(name).or_insert(ty);
                    }
                }
            }
        }
        schema
    }

    /// The warned feature (`deprecated`, `unstable`) of command `name`.
    pub(crate) fn command_mark(&self, name: &str) -> Option<&'static str> {
        warned_feature(&self.commands.get(name)?.features)
    }

    /// The warned feature (`deprecated`, `unstable`) of event `name`.
    pub(crate) fn event_mark(&self, name: &str) -> Option<&'static str> {
        warned_feature(&self.events.get(name)?.features)
    }

    /// Whether command `name` may run out of band (`false` for an unknown
    /// command).
    pub(crate) fn allows_oob(&self, name: &str) -> bool {
        self.commands.get(name).is_some_and(|c| c.allow_oob)
    }

    /// Every argument of command `name` (dotted paths, through nested
    /// objects, every union variant, arrays and alternates) and every enum
    /// value an argument may take that the schema marks `deprecated` or
    /// `unstable`.
    pub(crate) fn marks(&self, name: &str) -> Vec<Mark> {
        let mut out = Vec::new();
        if let Some(ty) = self.commands.get(name).and_then(|c| c.arg_type.as_deref()) {
            let mut seen = Vec::new();
            self.mark_walk(ty, "", 0, &mut seen, &mut out);
        }
        out.sort_by(|a, b| (&a.path, &a.value).cmp(&(&b.path, &b.value)));
        out.dedup();
        out
    }

    fn mark_walk<'a>(
        &'a self,
        ty: &'a str,
        path: &str,
        depth: usize,
        seen: &mut Vec<&'a str>,
        out: &mut Vec<Mark>,
    ) {
        // Types that contain themselves (a block node's `file`) are cut.
        if depth > MAX_DEPTH || seen.contains(&ty) {
            return;
        }
        seen.push(ty);
        match self.types.get(ty) {
            Some(Type::Object {
                members, variants, ..
            }) => {
                for m in members {
                    let here = if path.is_empty() {
                        m.name.clone()
                    } else {
                        format!("{path}.{}", m.name)
                    };
                    if let Some(feature) = warned_feature(&m.features) {
                        out.push(Mark {
                            path: here.clone(),
                            value: None,
                            feature,
                        });
                    }
                    self.mark_walk(&m.ty, &here, depth + 1, seen, out);
                }
                for (_, vt) in variants {
                    self.mark_walk(vt, path, depth + 1, seen, out);
                }
            }
            Some(Type::Array(element)) => self.mark_walk(element, path, depth + 1, seen, out),
            Some(Type::Alternate(branches)) => {
                for b in branches {
                    self.mark_walk(b, path, depth + 1, seen, out);
                }
            }
            Some(Type::Enum(_, marked)) => {
                out.extend(marked.iter().map(|(value, feature)| Mark {
                    path: path.to_owned(),
                    value: Some(value.clone()),
                    feature,
                }));
            }
            _ => {}
        }
        seen.pop();
    }

    /// Names of all commands, sorted.
    pub fn command_names(&self) -> Vec<&str> {
        self.commands.keys().map(String::as_str).collect()
    }

    /// Names of all events, sorted.
    pub fn event_names(&self) -> Vec<&str> {
        self.events.keys().map(String::as_str).collect()
    }

    /// Names of the actions that `transaction` accepts, sorted.
    pub(crate) fn action_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = match self.action_union() {
            Some(ActionUnion {
                variants: [],
                tag_type: Some(Type::Enum(values, _)),
            }) => values.iter().map(String::as_str).collect(),
            Some(union) => union.variants.iter().map(|(c, _)| c.as_str()).collect(),
            None => Vec::new(),
        };
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Completion of the line before the cursor.
    ///
    /// `line` is the whole text before the cursor; `in_transaction` tells
    /// that the shell is inside a multi-line `transaction(`, where every
    /// line is an action (`TYPE key=value ...`). Returns the byte offset in
    /// `line` where the word being completed starts and the candidates, each
    /// a whole replacement for that word (`driver=qcow2`, `file.`,
    /// `node-name=`), sorted. Nothing sensible gives an empty list.
    pub(crate) fn complete(&self, line: &str, in_transaction: bool) -> (usize, Vec<String>) {
        let words = split_words(line);
        let (start, current, before) = match (line.chars().last(), words.split_last()) {
            (Some(c), Some((&(start, word), rest))) if !c.is_whitespace() => (start, word, rest),
            _ => (line.len(), "", &words[..]),
        };
        let mut before: Vec<&str> = before.iter().map(|&(_, w)| w).collect();
        let mut action = in_transaction;
        if !in_transaction && before.first() == Some(&"transaction(") {
            action = true;
            before.remove(0);
        }
        let Some((&name, args)) = before.split_first() else {
            let candidates = if action {
                matching(self.action_names(), current)
            } else {
                let paren = self
                    .commands
                    .contains_key("transaction")
                    .then_some("transaction(");
                matching(self.command_names().into_iter().chain(paren), current)
            };
            return (start, candidates);
        };
        let root = if action {
            self.action_data_type(name)
        } else {
            self.commands.get(name).and_then(|c| c.arg_type.as_deref())
        };
        let Some(root) = root else {
            return (start, Vec::new());
        };
        let present: HashMap<&str, &str> = args.iter().filter_map(|w| w.split_once('=')).collect();
        let candidates = match current.split_once('=') {
            Some((key, value)) => self.value_candidates(root, key, value, &present),
            None => self.key_candidates(root, current, &present),
        };
        (start, candidates)
    }

    // ---- completion helpers ----

    /// The variants of `transaction`'s action union and its tag's type.
    fn action_union(&self) -> Option<ActionUnion<'_>> {
        let arg = self.commands.get("transaction")?.arg_type.as_deref()?;
        let Some(Type::Object { members, .. }) = self.types.get(arg) else {
            return None;
        };
        let actions = members.iter().find(|m| m.name == "actions")?;
        let Some(Type::Array(element)) = self.types.get(&actions.ty) else {
            return None;
        };
        let Some(Type::Object {
            members,
            tag,
            variants,
        }) = self.types.get(element)
        else {
            return None;
        };
        let tag_type = tag
            .as_ref()
            .and_then(|t| members.iter().find(|m| &m.name == t))
            .and_then(|m| self.types.get(&m.ty));
        Some(ActionUnion { variants, tag_type })
    }

    /// The type of the arguments of transaction action `name`: the `data`
    /// member of its variant when there is one (QEMU wraps them so), else
    /// the variant itself.
    fn action_data_type(&self, name: &str) -> Option<&str> {
        let union = self.action_union()?;
        let (_, ty) = union.variants.iter().find(|(case, _)| case == name)?;
        if let Some(Type::Object { members, .. }) = self.types.get(ty) {
            if let Some(data) = members.iter().find(|m| m.name == "data") {
                if self.has_object(&data.ty) {
                    return Some(&data.ty);
                }
            }
        }
        Some(ty)
    }

    /// Does `ty` have an object form (an object, or an alternate with an
    /// object branch)?
    fn has_object(&self, ty: &str) -> bool {
        match self.types.get(ty) {
            Some(Type::Object { .. }) => true,
            Some(Type::Alternate(branches)) => branches
                .iter()
                .any(|b| matches!(self.types.get(b), Some(Type::Object { .. }))),
            _ => false,
        }
    }

    /// The members available in object `ty` whose keys start with `prefix`
    /// on a line whose keys and values are `present`: the base members and
    /// those of the variant selected by the discriminator. With `loose`, an
    /// unset discriminator selects every variant.
    fn gather<'a>(
        &'a self,
        ty: &str,
        prefix: &str,
        present: &HashMap<&str, &str>,
        loose: bool,
        depth: usize,
        out: &mut Vec<&'a Member>,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        match self.types.get(ty) {
            Some(Type::Object {
                members,
                tag,
                variants,
            }) => {
                out.extend(members);
                let Some(tag) = tag else { return };
                let chosen = present
                    .get(format!("{prefix}{tag}").as_str())
                    .map(|v| unquote(v));
                for (case, vt) in variants {
                    if chosen.map_or(loose, |c| c == case) {
                        self.gather(vt, prefix, present, loose, depth + 1, out);
                    }
                }
            }
            Some(Type::Alternate(branches)) => {
                for b in branches {
                    if matches!(self.types.get(b), Some(Type::Object { .. })) {
                        self.gather(b, prefix, present, loose, depth + 1, out);
                    }
                }
            }
            _ => {}
        }
    }

    /// The type reached from `root` through the dotted key `components`,
    /// and the key prefix of its members.
    fn resolve<'a>(
        &'a self,
        root: &'a str,
        components: &[&str],
        present: &HashMap<&str, &str>,
    ) -> Option<(&'a str, String)> {
        let mut ty = root;
        let mut prefix = String::new();
        for comp in components {
            let mut members = Vec::new();
            self.gather(ty, &prefix, present, true, 0, &mut members);
            ty = &members.iter().find(|m| m.name == *comp)?.ty;
            prefix.push_str(comp);
            prefix.push('.');
        }
        Some((ty, prefix))
    }

    /// Enum values and booleans that a value of type `ty` may take.
    fn scalar_values<'a>(&'a self, ty: &str, depth: usize, out: &mut Vec<&'a str>) {
        match self.types.get(ty) {
            Some(Type::Enum(values, _)) => out.extend(values.iter().map(String::as_str)),
            Some(Type::Builtin(json)) if json == "boolean" => out.extend(["true", "false"]),
            Some(Type::Alternate(branches)) if depth < 2 => {
                for b in branches {
                    self.scalar_values(b, depth + 1, out);
                }
            }
            _ => {}
        }
    }

    fn value_candidates(
        &self,
        root: &str,
        key: &str,
        value: &str,
        present: &HashMap<&str, &str>,
    ) -> Vec<String> {
        let components: Vec<&str> = key.split('.').collect();
        if components.iter().any(|c| c.is_empty()) {
            return Vec::new();
        }
        let Some((ty, _)) = self.resolve(root, &components, present) else {
            return Vec::new();
        };
        let mut values = Vec::new();
        self.scalar_values(ty, 0, &mut values);
        matching(values, value)
            .into_iter()
            .map(|v| format!("{key}={v}"))
            .collect()
    }

    fn key_candidates(&self, root: &str, word: &str, present: &HashMap<&str, &str>) -> Vec<String> {
        let (ty, prefix) = match word.rsplit_once('.') {
            Some((path, _)) => {
                let components: Vec<&str> = path.split('.').collect();
                if components.iter().any(|c| c.is_empty()) {
                    return Vec::new();
                }
                match self.resolve(root, &components, present) {
                    Some(found) => found,
                    None => return Vec::new(),
                }
            }
            None => (root, String::new()),
        };
        let mut members = Vec::new();
        self.gather(ty, &prefix, present, false, 0, &mut members);
        let mut out = Vec::new();
        for m in members {
            let key = format!("{prefix}{}", m.name);
            if present.contains_key(key.as_str()) {
                continue;
            }
            let dotted = format!("{key}.");
            let has_subkeys = present.keys().any(|k| k.starts_with(&dotted));
            if self.has_object(&m.ty) {
                out.push(dotted);
            }
            if !has_subkeys {
                out.push(format!("{key}="));
            }
        }
        matching(out.iter().map(String::as_str), word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::OnceLock;

    fn qemu() -> &'static Schema {
        static SCHEMA: OnceLock<Schema> = OnceLock::new();
        SCHEMA.get_or_init(|| {
            let text = include_str!("../tests/data/schema/qemu-7.2-system.json");
            Schema::from_value(&serde_json::from_str(text).expect("valid JSON"))
        })
    }

    fn qsd() -> Schema {
        let text = include_str!("../tests/data/schema/qsd-7.2.json");
        Schema::from_value(&serde_json::from_str(text).expect("valid JSON"))
    }

    fn complete(line: &str) -> (usize, Vec<String>) {
        qemu().complete(line, false)
    }

    fn words(line: &str) -> Vec<String> {
        complete(line).1
    }

    #[test]
    fn loads_the_real_schemas() {
        let s = qemu();
        let commands = s.command_names();
        assert!(commands.len() > 200, "{}", commands.len());
        assert!(commands.windows(2).all(|w| w[0] < w[1]));
        for c in [
            "blockdev-add",
            "query-status",
            "transaction",
            "qmp_capabilities",
        ] {
            assert!(commands.contains(&c), "{c}");
        }
        let events = s.event_names();
        assert!(events.contains(&"SHUTDOWN"));
        assert!(events.windows(2).all(|w| w[0] < w[1]));

        let d = qsd();
        assert!(d.command_names().contains(&"blockdev-add"));
        assert!(d.command_names().contains(&"nbd-server-start"));
        assert!(d.command_names().len() < commands.len());
        assert_eq!(
            d.complete("blockdev-add driver=vmd", false).1,
            ["driver=vmdk"]
        );
    }

    #[test]
    fn first_word_completes_commands() {
        assert_eq!(
            complete("query-stat"),
            (
                0,
                vec![
                    "query-stats".into(),
                    "query-stats-schemas".into(),
                    "query-status".into()
                ]
            )
        );
        assert_eq!(words("transac"), ["transaction", "transaction("]);
        assert_eq!(complete("  quer").0, 2);
        assert!(words("").len() > 200);
        assert!(words("no-such-").is_empty());
    }

    #[test]
    fn argument_names() {
        let (start, got) = complete("blockdev-add driver=qcow2 file.dri");
        assert_eq!(start, 26);
        assert_eq!(got, ["file.driver="]);

        let got = words("blockdev-add driver=qcow2 ");
        for want in [
            "file=",
            "file.",
            "backing=",
            "backing.",
            "cache=",
            "cache.",
            "node-name=",
            "lazy-refcounts=",
        ] {
            assert!(got.contains(&want.to_owned()), "{want} in {got:?}");
        }
        assert!(!got.contains(&"driver=".to_owned()));
        // A scalar member has no dotted form.
        assert!(!got.contains(&"node-name.".to_owned()));

        // Before the discriminator is set, only the base members.
        let got = words("blockdev-add ");
        assert!(got.contains(&"driver=".to_owned()));
        assert!(got.contains(&"node-name=".to_owned()));
        assert!(!got.contains(&"file=".to_owned()));

        assert_eq!(words("query-status "), Vec::<String>::new());
        assert_eq!(words("device_del i"), ["id="]);
    }

    #[test]
    fn nested_discriminator_under_the_same_prefix() {
        assert_eq!(
            words("blockdev-add driver=qcow2 file.driver=file file.fi"),
            ["file.filename="]
        );
        let got = words("blockdev-add driver=qcow2 file.driver=file file.");
        assert!(got.contains(&"file.filename=".to_owned()));
        assert!(got.contains(&"file.aio=".to_owned()));
        assert!(!got.contains(&"file.driver=".to_owned()));
        // Deeper: the backing file's file.
        assert_eq!(
            words("blockdev-add driver=qcow2 backing.driver=raw backing.file.driver=file backing.file.filen"),
            ["backing.file.filename="]
        );
        assert_eq!(
            words("blockdev-add driver=qcow2 cache.n"),
            ["cache.no-flush="]
        );
    }

    #[test]
    fn keys_are_not_repeated() {
        let got = words("blockdev-add driver=qcow2 node-name=n0 read-only=on file.driver=file ");
        for gone in ["driver=", "node-name=", "read-only=", "file="] {
            assert!(!got.contains(&gone.to_owned()), "{gone} in {got:?}");
        }
        // file. stays: there are more keys below it.
        assert!(got.contains(&"file.".to_owned()));
        assert_eq!(
            words("blockdev-add driver=qcow2 file.driver=file file.filename=a file.fi"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn values() {
        assert_eq!(words("blockdev-add driver=vmd"), ["driver=vmdk"]);
        assert_eq!(
            words("blockdev-add driver=qco"),
            ["driver=qcow", "driver=qcow2"]
        );
        let (start, got) = complete("blockdev-add driver=qcow2 read-only=");
        assert_eq!(start, 26);
        assert_eq!(got, ["read-only=false", "read-only=true"]);
        assert_eq!(
            words("blockdev-add driver=qcow2 file.driver=file file.aio=n"),
            ["file.aio=native"]
        );
        assert_eq!(
            words("blockdev-add driver=qcow2 file.driver=fi"),
            ["file.driver=file"]
        );
        assert_eq!(
            words("blockdev-add driver=qcow2 detect-zeroes="),
            [
                "detect-zeroes=off",
                "detect-zeroes=on",
                "detect-zeroes=unmap"
            ]
        );
        // Strings have no candidates.
        assert!(words("blockdev-add node-name=").is_empty());
    }

    #[test]
    fn transactions() {
        let bitmaps: Vec<String> = [
            "block-dirty-bitmap-add",
            "block-dirty-bitmap-clear",
            "block-dirty-bitmap-disable",
            "block-dirty-bitmap-enable",
            "block-dirty-bitmap-merge",
            "block-dirty-bitmap-remove",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            complete("transaction( block-dirty-b"),
            (13, bitmaps.clone())
        );
        assert_eq!(qemu().complete("abo", true), (0, vec!["abort".into()]));
        assert_eq!(qemu().complete("block-dirty-b", true).1, bitmaps);
        assert_eq!(qemu().action_names().len(), 12);
        // Action arguments come from the variant's `data` member.
        assert_eq!(
            qemu().complete("block-dirty-bitmap-add node=n0 ", true).1,
            ["disabled=", "granularity=", "name=", "persistent="]
        );
        assert_eq!(
            words("transaction( block-dirty-bitmap-add node=n0 na"),
            ["name="]
        );
        assert_eq!(words("transaction( blockdev-backup sync=fu"), ["sync=full"]);
        assert!(qemu().complete("no-such-action ", true).1.is_empty());
        assert!(qemu().complete("abort ", true).1.is_empty());
    }

    #[test]
    fn weird_input_never_panics() {
        let long = "a=b ".repeat(5000);
        let long_dots = format!("blockdev-add {}", "x.".repeat(5000));
        let lines = [
            "",
            " ",
            "===",
            "....",
            "blockdev-add ===",
            "blockdev-add ....",
            "blockdev-add .",
            "blockdev-add file..driver=",
            "blockdev-add =x",
            "blockdev-add driver==",
            "blockdev-add ünïcödé=ö",
            "blockdev-add driver=qcow2 file.ü",
            "déjà vu",
            "transaction(",
            "transaction( ",
            "transaction( )",
            "transaction( abort )",
            ")",
            "\t\u{3000}blockdev-add\u{3000}dri",
            long.as_str(),
            long_dots.as_str(),
        ];
        for s in [qemu(), &Schema::default()] {
            for line in lines {
                for tx in [false, true] {
                    let (start, _) = s.complete(line, tx);
                    assert!(
                        start <= line.len() && line.is_char_boundary(start),
                        "{line:?}"
                    );
                }
            }
        }
        assert_eq!(
            complete("\t\u{3000}blockdev-add\u{3000}dri"),
            (19, vec!["driver=".into()])
        );
    }

    #[test]
    fn every_command_and_event_has_help_and_completes() {
        let s = qemu();
        for name in s.command_names().into_iter().chain(s.event_names()) {
            let help = s.help(Some(name)).expect("known");
            assert!(help.starts_with(name));
            assert!(!help.contains("truncated"), "{name}");
            let _ = s.complete(&format!("{name} "), false);
            let _ = s.complete(&format!("{name} a"), true);
        }
    }

    #[test]
    fn help_lists_commands() {
        let text = qemu().help(None).expect("list");
        for c in qemu().command_names() {
            assert!(text.contains(c), "{c}");
        }
        assert!(text.lines().all(|l| l.len() <= 80));
        assert!(text.lines().count() < qemu().command_names().len());
        assert_eq!(
            Schema::default().help(None).as_deref(),
            Some("No commands known.\n")
        );
    }

    #[test]
    fn help_for_blockdev_add() {
        let text = qemu().help(Some("blockdev-add")).expect("known");
        assert!(text
            .starts_with("blockdev-add (command)\nArguments:\n  driver: enum (discriminator)\n"));
        assert!(text.contains("one of: blkdebug,"));
        assert!(text.contains("vmdk"));
        assert!(text.contains("  node-name: str (optional)\n"));
        assert!(text.contains("  cache: object (optional)\n      direct: bool (optional)\n"));
        assert!(text.contains("when driver is qcow2:"));
        assert!(text.contains("    file: object or str\n        (members as for the top level)\n"));
        assert!(text.contains("    filename: str\n"));
        assert!(text.contains("Returns: nothing"));
        assert!(text.lines().all(|l| l.len() <= 100), "{text}");
        assert!(text.lines().count() < 1500, "{}", text.lines().count());
    }

    #[test]
    fn help_for_query_status_shows_the_return_value() {
        let text = qemu().help(Some("query-status")).expect("known");
        assert!(text.contains("Arguments: none"));
        assert!(text.contains("Returns: object\n"));
        for m in [
            "running: bool",
            "singlestep: bool",
            "status: enum",
            "inmigrate",
            "guest-panicked",
        ] {
            assert!(text.contains(m), "{m} in {text}");
        }
    }

    #[test]
    fn help_for_events() {
        let text = qemu().help(Some("SHUTDOWN")).expect("known");
        assert!(text.starts_with("SHUTDOWN (event)\nData:\n  guest: bool\n  reason: enum\n"));
        assert!(text.contains("host-qmp-quit"));
        assert_eq!(qemu().help(Some("shutdown")), Some(text));
        assert!(qemu().help(Some("no-such-thing")).is_none());
        assert!(qemu().help(Some("")).is_none());
    }

    #[test]
    fn help_for_transaction_shows_actions() {
        let text = qemu().help(Some("transaction")).expect("known");
        assert!(text.contains("  actions: array of object\n"));
        assert!(text.contains("when actions[].type is block-dirty-bitmap-remove,"));
        assert!(text.contains("granularity: int (optional)"));
        assert!(text.contains("drive-backup [deprecated]") || text.contains("drive-backup"));
    }

    #[test]
    fn garbage_schema_gives_an_empty_working_schema() {
        for value in [
            json!([1, {"name": 3}]),
            json!({"name": "x"}),
            json!(null),
            json!([{"name": "c", "meta-type": "command", "arg-type": 5}, {"name": "o", "meta-type": "object", "members": 7}, {"meta-type": "event"}, [], "x"]),
        ] {
            let s = Schema::from_value(&value);
            assert!(s.event_names().is_empty());
            let _ = s.help(None);
            for line in ["", "c ", "c x=", "transaction( a", "o."] {
                let _ = s.complete(line, false);
                let _ = s.complete(line, true);
            }
            for name in s.command_names() {
                let _ = s.help(Some(name));
            }
        }
        let s = Schema::from_value(&json!([1, {"name": 3}]));
        assert!(s.command_names().is_empty());
        assert!(s.event_names().is_empty());
        assert_eq!(s.complete("quer", false), (0, vec![]));
        assert!(s.help(Some("x")).is_none());
    }

    #[test]
    fn synthetic_schema_features() {
        // Newer QEMU spells enum values as members only; a command without
        // arg-type; an alternate of an object and a scalar; a cyclic union.
        let s = Schema::from_value(&json!([
            {"name": "go", "meta-type": "command", "arg-type": "1", "ret-type": "5"},
            {"name": "bare", "meta-type": "command"},
            {"name": "1", "meta-type": "object", "tag": "kind",
             "members": [{"name": "kind", "type": "2"}, {"name": "ref", "type": "3", "default": null}],
             "variants": [{"case": "a", "type": "1"}, {"case": "b", "type": "4"}]},
            {"name": "2", "meta-type": "enum", "members": [{"name": "a"}, {"name": "b"}]},
            {"name": "3", "meta-type": "alternate", "members": [{"type": "1"}, {"type": "str"}]},
            {"name": "4", "meta-type": "object", "members": [{"name": "flag", "type": "bool"}]},
            {"name": "5", "meta-type": "array", "element-type": "5"},
            {"name": "bool", "meta-type": "builtin", "json-type": "boolean"},
            {"name": "str", "meta-type": "builtin", "json-type": "string"},
        ]));
        assert_eq!(s.command_names(), ["bare", "go"]);
        assert_eq!(s.complete("go kind=", false).1, ["kind=a", "kind=b"]);
        assert_eq!(s.complete("go r", false).1, ["ref.", "ref="]);
        assert_eq!(s.complete("go kind=b ", false).1, ["flag=", "ref.", "ref="]);
        assert_eq!(s.complete("go ref.kind=b ref.f", false).1, ["ref.flag="]);
        assert_eq!(
            s.complete("go ref.kind=b ref.flag=t", false).1,
            ["ref.flag=true"]
        );
        assert_eq!(s.complete("go kind=a ", false).1, ["ref.", "ref="]);
        assert!(s.complete("bare ", false).1.is_empty());
        assert!(s.complete("transaction( x", false).1.is_empty());
        let text = s.help(Some("go")).expect("known");
        assert!(text.contains("kind: enum (discriminator)"));
        assert!(text.contains("Returns: array of array of"), "{text}");
        assert_eq!(
            s.help(Some("bare")).as_deref(),
            Some("bare (command)\nArguments: none\n")
        );
    }
}
