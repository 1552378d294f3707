//! Help text (`help [NAME]`): the list of commands, and a command's or an
//! event's description, from the schema's types.

use std::collections::{HashMap, HashSet};

use super::{Entity, Schema, Type, MAX_DEPTH};
use crate::wording::counted;

/// Width that help text is wrapped to.
const WIDTH: usize = 78;
/// Enums with at most this many values are listed wherever they appear;
/// longer ones are listed once per help text and referred to afterwards.
const SMALL_ENUM: usize = 8;
/// Upper bound on the size of one help text, in bytes.
const HELP_LIMIT: usize = 256 * 1024;

impl Schema {
    /// Help text: with no name, the list of commands; with a command's or
    /// event's name, its description. `None` when the name is unknown.
    ///
    /// A command's description lists its arguments (name, type, whether
    /// optional), nested object members indented below their parent, enum
    /// values, union branches under the value of their discriminator, and
    /// the return type. An event's description lists its data members.
    /// Event names are also found case-insensitively (`help shutdown`).
    pub fn help(&self, name: Option<&str>) -> Option<String> {
        let Some(name) = name else {
            return Some(self.command_list());
        };
        if let Some(command) = self.commands.get(name) {
            return Some(self.command_help(name, command));
        }
        let (name, event) = self.events.get_key_value(name).or_else(|| {
            self.events
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
        })?;
        Some(self.event_help(name, event))
    }

    /// Help at the `TRANS>` prompt, where each line is an action: with no
    /// name, the list of actions; with an action's name, its arguments
    /// (what follows the name on an action line); any other name as
    /// [`help`](Schema::help) describes it. `None` when the name is
    /// unknown.
    pub fn action_help(&self, name: Option<&str>) -> Option<String> {
        let Some(name) = name else {
            let names = self.action_names();
            let mut out = in_columns(&names);
            out.push_str(&format!(
                "{} in a transaction; `help NAME` describes one, a line `)` sends them.\n",
                counted(names.len(), "action", "actions")
            ));
            return Some(out);
        };
        let Some(ty) = self.action_data_type(name) else {
            return self.help(Some(name));
        };
        let mut w = HelpWriter::new(self);
        w.line(format!("{name} (transaction action)"));
        w.root("Arguments", Some(ty));
        Some(w.finish())
    }

    fn command_list(&self) -> String {
        let names = self.command_names();
        if names.is_empty() {
            return "No commands known.\n".to_owned();
        }
        let mut out = in_columns(&names);
        out.push_str(&format!(
            "{}; `help NAME` describes a command or an event.\n",
            counted(names.len(), "command", "commands")
        ));
        out
    }

    fn command_help(&self, name: &str, command: &Entity) -> String {
        let mut w = HelpWriter::new(self);
        w.line(format!(
            "{name} (command){}",
            features_suffix(&command.features)
        ));
        if command.allow_oob {
            w.line("Allows out-of-band execution.".to_owned());
        }
        w.root("Arguments", command.arg_type.as_deref());
        let mut w = w.fresh();
        match command.ret_type.as_deref() {
            None => {}
            Some(ret) if self.is_empty_object(ret) => w.line("Returns: nothing".to_owned()),
            Some(ret) => {
                w.line(format!("Returns: {}", self.describe(ret, 0)));
                w.detail(ret, 2, "", 0);
            }
        }
        w.finish()
    }

    fn event_help(&self, name: &str, event: &Entity) -> String {
        let mut w = HelpWriter::new(self);
        w.line(format!(
            "{name} (event){}",
            features_suffix(&event.features)
        ));
        w.root("Data", event.arg_type.as_deref());
        w.finish()
    }

    fn is_empty_object(&self, ty: &str) -> bool {
        matches!(self.types.get(ty), Some(Type::Object { members, variants, .. })
            if members.is_empty() && variants.is_empty())
    }

    /// A short description of type `ty`.
    fn describe(&self, ty: &str, depth: usize) -> String {
        if depth > MAX_DEPTH {
            return "...".to_owned();
        }
        match self.types.get(ty) {
            Some(Type::Builtin(_)) | None => ty.to_owned(),
            Some(Type::Enum(..)) => "enum".to_owned(),
            Some(Type::Object { .. }) => "object".to_owned(),
            Some(Type::Array(e)) => format!("array of {}", self.describe(e, depth + 1)),
            Some(Type::Alternate(branches)) => branches
                .iter()
                .map(|b| self.describe(b, depth + 1))
                .collect::<Vec<_>>()
                .join(" or "),
        }
    }

    /// Does type `ty` have details that help shows below its member line?
    fn has_detail(&self, ty: &str, depth: usize) -> bool {
        match self.types.get(ty) {
            Some(Type::Enum(..)) => true,
            Some(Type::Object { .. }) => !self.is_empty_object(ty),
            Some(Type::Array(e)) => depth < MAX_DEPTH && self.has_detail(e, depth + 1),
            _ => false,
        }
    }
}

/// `names` in columns, down then across, within [`WIDTH`].
fn in_columns(names: &[&str]) -> String {
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0) + 2;
    // The last column needs no padding.
    let columns = ((WIDTH + 2) / width).max(1);
    let rows = names.len().div_ceil(columns);
    let mut out = String::new();
    for row in 0..rows {
        let mut line = String::new();
        for col in 0..columns {
            if let Some(name) = names.get(col * rows + row) {
                line.push_str(&format!("{name:width$}"));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn features_suffix(features: &[String]) -> String {
    if features.is_empty() {
        String::new()
    } else {
        format!(" [{}]", features.join(", "))
    }
}

/// Builds one help text.
struct HelpWriter<'a> {
    schema: &'a Schema,
    out: String,
    truncated: bool,
    /// Types already expanded, and the key path where that happened.
    shown: HashMap<String, String>,
    /// Variant types being expanded (guards against cycles).
    expanding: HashSet<String>,
}

impl<'a> HelpWriter<'a> {
    fn new(schema: &'a Schema) -> HelpWriter<'a> {
        HelpWriter {
            schema,
            out: String::new(),
            truncated: false,
            shown: HashMap::new(),
            expanding: HashSet::new(),
        }
    }

    /// The same text, with no types marked as shown.
    fn fresh(self) -> HelpWriter<'a> {
        HelpWriter {
            shown: HashMap::new(),
            expanding: HashSet::new(),
            ..self
        }
    }

    fn finish(mut self) -> String {
        if self.truncated {
            self.out.push_str("... (truncated)\n");
        }
        self.out
    }

    fn line(&mut self, text: String) {
        if self.out.len() + text.len() > HELP_LIMIT {
            self.truncated = true;
            return;
        }
        self.out.push_str(&text);
        self.out.push('\n');
    }

    /// `head` then `items` separated by commas, wrapped, continuation lines
    /// indented by `indent`, the last item followed by `tail`.
    fn wrapped(&mut self, head: String, items: &[&str], indent: usize, tail: &str) {
        let mut line = head;
        // Whether `line` holds only indentation.
        let mut bare = false;
        for (i, item) in items.iter().enumerate() {
            let piece = if i + 1 == items.len() {
                format!("{item}{tail}")
            } else {
                format!("{item},")
            };
            if !bare && line.len() + 1 + piece.len() > WIDTH && line.len() > indent {
                let next = " ".repeat(indent);
                self.line(std::mem::replace(&mut line, next));
                bare = true;
            }
            if !bare {
                line.push(' ');
            }
            line.push_str(&piece);
            bare = false;
        }
        self.line(line);
    }

    /// `title:` and the members of the arguments or event data `ty`.
    fn root(&mut self, title: &str, ty: Option<&str>) {
        let schema = self.schema;
        match ty {
            None => self.line(format!("{title}: none")),
            Some(ty) if schema.is_empty_object(ty) => self.line(format!("{title}: none")),
            Some(ty) => match schema.types.get(ty) {
                Some(Type::Object { .. }) => {
                    self.line(format!("{title}:"));
                    self.shown.insert(ty.to_owned(), String::new());
                    self.members(ty, 2, "", 0);
                }
                _ => {
                    self.line(format!("{title}: {}", schema.describe(ty, 0)));
                    self.detail(ty, 2, "", 0);
                }
            },
        }
    }

    /// The members of object `ty`, their keys prefixed with `prefix`.
    fn members(&mut self, ty: &str, indent: usize, prefix: &str, depth: usize) {
        let schema = self.schema;
        if depth > MAX_DEPTH || self.truncated {
            return;
        }
        let Some(Type::Object {
            members,
            tag,
            variants,
        }) = schema.types.get(ty)
        else {
            return;
        };
        let pad = " ".repeat(indent);
        for m in members {
            let mut text = format!("{pad}{}: {}", m.name, schema.describe(&m.ty, 0));
            if m.optional {
                text.push_str(" (optional)");
            }
            if tag.as_ref() == Some(&m.name) {
                text.push_str(" (discriminator)");
            }
            text.push_str(&features_suffix(&m.features));
            self.line(text);
            self.detail(&m.ty, indent + 4, &format!("{prefix}{}", m.name), depth + 1);
        }
        let Some(tag) = tag else { return };
        // Cases sharing a type are shown together.
        let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
        for (case, vt) in variants {
            match groups.iter_mut().find(|(t, _)| t == vt) {
                Some((_, cases)) => cases.push(case),
                None => groups.push((vt, vec![case])),
            }
        }
        for (vt, cases) in groups {
            self.wrapped(
                format!("{pad}when {prefix}{tag} is"),
                &cases,
                indent + 4,
                ":",
            );
            if schema.is_empty_object(vt) {
                self.line(format!("{pad}  (nothing more)"));
            } else if !self.expanding.insert(vt.to_owned()) {
                self.line(format!("{pad}  (as above)"));
            } else {
                self.members(vt, indent + 2, prefix, depth + 1);
                self.expanding.remove(vt);
            }
        }
    }

    /// Details of a member of type `ty` at key `path`: enum values, object
    /// members, array elements, alternate branches.
    fn detail(&mut self, ty: &str, indent: usize, path: &str, depth: usize) {
        let schema = self.schema;
        if depth > MAX_DEPTH || self.truncated {
            return;
        }
        let pad = " ".repeat(indent);
        let seen = |shown: &HashMap<String, String>| {
            shown.get(ty).map(|p| {
                if p.is_empty() {
                    "the top level".to_owned()
                } else {
                    p.clone()
                }
            })
        };
        match schema.types.get(ty) {
            Some(Type::Enum(values, _)) => {
                if values.len() > SMALL_ENUM {
                    if let Some(p) = seen(&self.shown) {
                        self.line(format!("{pad}(values as for {p})"));
                        return;
                    }
                    self.shown.insert(ty.to_owned(), path.to_owned());
                }
                let values: Vec<&str> = values.iter().map(String::as_str).collect();
                self.wrapped(format!("{pad}one of:"), &values, indent + 2, "");
            }
            Some(Type::Object { .. }) => {
                if schema.is_empty_object(ty) {
                    return;
                }
                if let Some(p) = seen(&self.shown) {
                    self.line(format!("{pad}(members as for {p})"));
                    return;
                }
                self.shown.insert(ty.to_owned(), path.to_owned());
                self.members(ty, indent, &format!("{path}."), depth + 1);
            }
            Some(Type::Array(element)) => {
                self.detail(element, indent, &format!("{path}[]"), depth + 1);
            }
            Some(Type::Alternate(branches)) => {
                let detailed: Vec<&String> = branches
                    .iter()
                    .filter(|b| schema.has_detail(b, depth))
                    .collect();
                if detailed.len() == 1 {
                    self.detail(detailed[0], indent, path, depth + 1);
                    return;
                }
                for b in detailed {
                    self.line(format!("{pad}as {}:", schema.describe(b, 0)));
                    self.detail(b, indent + 2, path, depth + 1);
                }
            }
            Some(Type::Builtin(_)) | None => {}
        }
    }
}
