//! The shorthand command language of `qmp-shell`, turned into QMP commands.
//!
//! A line is `NAME KEY=VALUE...`; the result is
//! `{"execute": NAME, "arguments": {...}}`. This module is pure: no I/O.
//! It follows the reference (`qemu.qmp` 0.0.6's `_build_cmd`, `_cli_expr`
//! and `_parse_value`) byte for byte, except for the fixes REFERENCE.md
//! lists:
//!
//! * dotted keys nest correctly: `a.b=1 c=2` gives `{"a": {"b": 1}, "c": 2}`
//!   (defect 4);
//! * a quoted value is the text inside its quotes, escapes resolved:
//!   `command-line="info version"` sends `info version` (defect 5);
//! * a value JSON cannot carry (set, bytes, complex, `...`, NaN, infinity,
//!   lone surrogate) is a parse error, not a crash or invalid JSON
//!   (defect 6);
//! * a parse error on the line that opened a transaction abandons the
//!   transaction instead of leaving the shell in `TRANS>` mode (defect 7).
//!
//! See [`Parser::parse_line`] for the transaction rules and
//! [`parse_value`] for the value rules.

mod json;
mod lexer;
mod literal;
mod python;
mod scalar;

use std::collections::HashSet;

use serde_json::Value;

pub use lexer::tokenize;
pub(crate) use lexer::unquote;

/// A JSON object, keys in insertion order.
pub(crate) type Object = serde_json::Map<String, serde_json::Value>;

/// Why a line could not be parsed. The text is the reason exactly as the
/// shell prints it after `Error while parsing command line: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// What a line amounts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A command to send: `{"execute": NAME, "arguments": {...}}`, with
    /// `arguments` always present and the keys in that order.
    Command(Object),
    /// A transaction action was stored, or `transaction(` alone opened a
    /// transaction: nothing to send yet.
    Queued,
    /// Nothing on the line (no tokens at all).
    Empty,
}

/// Parses lines one after the other, remembering an open transaction.
#[derive(Debug, Default)]
pub struct Parser {
    /// The actions of the open transaction, if one is open.
    actions: Option<Vec<Value>>,
    /// Actions dropped unsent, for [`Parser::take_abandoned`].
    abandoned: Option<usize>,
}

const OPEN_TRANSACTION: &str = "transaction(";
const CLOSE_TRANSACTION: &str = ")";

impl Parser {
    /// A parser with no transaction open.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Parse one line.
    ///
    /// * `transaction(` as the first token opens a transaction (dropping one
    ///   already open); the rest of that line, if any, is its first action.
    /// * Inside a transaction, a line whose first token is `)` closes it and
    ///   gives the `transaction` command (anything after the `)` is an
    ///   error, and the transaction is gone); any other line is one action
    ///   `TYPE KEY=VALUE...`, stored as `{"type": TYPE, "data": {...}}`; if
    ///   its last token is `)`, the transaction is closed after it.
    /// * Outside a transaction, the line is a command (`)` included: it is a
    ///   command named `)`, as in the reference).
    ///
    /// A parse error in an action abandons the whole transaction: nothing of
    /// it is sent (the reference drops only the bad line, and stays in the
    /// transaction when the bad line opened it). See
    /// `take_abandoned`.
    pub fn parse_line(&mut self, line: &str) -> Result<Parsed, ParseError> {
        let mut tokens = tokenize(line);
        let mut opened = false;
        if tokens.first().map(String::as_str) == Some(OPEN_TRANSACTION) {
            self.drop_transaction();
            self.actions = Some(Vec::new());
            tokens.remove(0);
            opened = true;
        }
        if let Some(actions) = self.actions.take() {
            if tokens.first().map(String::as_str) == Some(CLOSE_TRANSACTION) {
                if tokens.len() > 1 {
                    return Err(ParseError(
                        "Unexpected input after close of Transaction sub-shell".to_owned(),
                    ));
                }
                return Ok(Parsed::Command(transaction(actions)));
            }
            self.actions = Some(actions);
        }
        let Some(name) = tokens.first() else {
            return Ok(if opened {
                Parsed::Queued
            } else {
                Parsed::Empty
            });
        };
        let Some(actions) = self.actions.as_mut() else {
            let mut arguments = Object::new();
            parse_arguments(&tokens[1..], &mut arguments)?;
            return Ok(Parsed::Command(command(name, arguments)));
        };
        let mut rest = &tokens[1..];
        let finalize = tokens.last().map(String::as_str) == Some(CLOSE_TRANSACTION);
        if finalize {
            // `TYPE )`: the `)` is the last token and not the first.
            rest = &rest[..rest.len().saturating_sub(1)];
        }
        let mut data = Object::new();
        if let Err(e) = parse_arguments(rest, &mut data) {
            self.drop_transaction();
            return Err(e);
        }
        let mut action = Object::new();
        action.insert("type".to_owned(), Value::String(name.clone()));
        action.insert("data".to_owned(), Value::Object(data));
        actions.push(Value::Object(action));
        if finalize {
            let actions = self.actions.take().unwrap_or_default();
            return Ok(Parsed::Command(transaction(actions)));
        }
        Ok(Parsed::Queued)
    }

    /// Whether a transaction is open (its lines are being collected).
    pub fn in_transaction(&self) -> bool {
        self.actions.is_some()
    }

    /// The prompt to show: `TRANS> ` inside a transaction, else `(QEMU) `.
    pub fn prompt(&self) -> &'static str {
        if self.in_transaction() {
            "TRANS> "
        } else {
            "(QEMU) "
        }
    }

    /// Drop a half-built transaction (Ctrl-C, end of input); returns how
    /// many actions it had, or `None` when none was open.
    pub fn abort_transaction(&mut self) -> Option<usize> {
        self.actions.take().map(|a| a.len())
    }

    /// How many actions were dropped, unsent, since the last call: a
    /// transaction abandoned by a parse error, or by `transaction(` opening a
    /// new one. `None` when no action was lost.
    pub(crate) fn take_abandoned(&mut self) -> Option<usize> {
        std::mem::take(&mut self.abandoned)
    }

    fn drop_transaction(&mut self) {
        if let Some(n) = self.actions.take().map(|a| a.len()).filter(|n| *n > 0) {
            self.abandoned = Some(self.abandoned.unwrap_or(0) + n);
        }
    }
}

fn command(name: &str, arguments: Object) -> Object {
    let mut cmd = Object::new();
    cmd.insert("execute".to_owned(), Value::String(name.to_owned()));
    cmd.insert("arguments".to_owned(), Value::Object(arguments));
    cmd
}

fn transaction(actions: Vec<Value>) -> Object {
    let mut arguments = Object::new();
    arguments.insert("actions".to_owned(), Value::Array(actions));
    command("transaction", arguments)
}

/// Parse one `VALUE` of `KEY=VALUE`, in this order:
///
/// 1. text containing a quote character `'` or `"` (and not starting with
///    `{` or `[`) is a string: each quoted run loses its quotes and has its
///    backslash escapes resolved (`a"b c"d` is `ab cd`, `"1"` is `"1"`);
/// 2. what Python's `int()` accepts is an integer of any size (sign,
///    leading zeros, `_` between digits, Unicode decimal digits);
/// 3. `true`/`false` in any letter case are booleans;
/// 4. text starting with `{` or `[` is read as JSON the way Python's
///    `json.loads` reads it, else as a Python literal (`ast.literal_eval`,
///    with `true`/`false`/`null` accepted too, tuples as arrays);
/// 5. anything else, including what fails in 4, is the text as typed.
///
/// Errors: a value that parses but that JSON cannot carry (a set, bytes, a
/// complex number, `...`, NaN, an infinity such as `1e400`, a string with a
/// lone surrogate, a dict key that is not a string, number, bool or None),
/// and JSON nested more than 1000 deep.
///
/// ```
/// use qmp_shell::shorthand::parse_value;
/// use serde_json::json;
/// assert_eq!(parse_value("007").unwrap(), json!(7));
/// assert_eq!(parse_value("{'a': (1, True)}").unwrap(), json!({"a": [1, true]}));
/// assert_eq!(parse_value("\"x y\"").unwrap(), json!("x y"));
/// assert!(parse_value("{1,2}").is_err());
/// ```
pub fn parse_value(raw: &str) -> Result<Value, ParseError> {
    literal::parse(raw).map_err(|p| ParseError(p.message(None)))
}

/// Parse `KEY=VALUE` tokens into `into`.
///
/// Each token is split at its first `=` (no `=`: `Expected a key=value
/// pair, got 'TOKEN'`). A dotted key `a.b.c` nests: `{"a": {"b": {"c": V}}}`,
/// merging with objects built by earlier keys (or given as values). Errors:
/// `Cannot set "KEY" multiple times` when a key is set again, and
/// `Cannot use "PATH" as both leaf and non-leaf key` when a key is used both
/// as a value and as an object: `PATH` is the conflicting key (`a` for
/// `a=1 a.b=2` and for `a.b=1 a=2`; `a.b` for `a.b.c=1 a.b=2`). When the
/// object was given as a value (`a={"x":1} a=2`), `PATH` is the parent path
/// of the key, as the reference prints it (here the empty string).
///
/// Value errors (see [`parse_value`]; the message names the key, e.g.
/// `Value for "a" cannot be sent as JSON: sets are not supported`) come
/// after every key error of the line, as in the reference, which only fails
/// on such a value when it sends the command. Too-deep JSON fails at once.
/// (`a.b=1 c=x` gives `{"a": {"b": 1}, "c": "x"}`: see the tests.)
pub(crate) fn parse_arguments(tokens: &[String], into: &mut Object) -> Result<(), ParseError> {
    // Objects made by dotted keys (as opposed to objects given as values).
    let mut implicit: HashSet<Vec<&str>> = HashSet::new();
    // The reference only fails on a value JSON cannot carry when it sends
    // the command, after reading the whole line: any error in the line's
    // keys comes first. So the first such value is reported at the end.
    let mut refused: Option<ParseError> = None;
    for token in tokens {
        let Some((key, raw)) = token.split_once('=') else {
            return Err(ParseError(format!(
                "Expected a key=value pair, got '{token}'"
            )));
        };
        let value = match literal::parse(raw) {
            Ok(v) => v,
            // The reference dies while reading such a value: nothing after
            // it matters.
            Err(p @ literal::Problem::TooDeep) => return Err(ParseError(p.message(Some(key)))),
            Err(p @ literal::Problem::Refused(..)) => {
                refused.get_or_insert_with(|| ParseError(p.message(Some(key))));
                match p {
                    literal::Problem::Refused(_, placeholder) => placeholder,
                    literal::Problem::TooDeep => Value::Null,
                }
            }
        };
        let path: Vec<&str> = key.split('.').collect();
        let (leaf, parents) = path.split_last().unwrap_or((&"", &[]));
        let mut node = &mut *into;
        for (depth, seg) in parents.iter().enumerate() {
            let here = &path[..=depth];
            let entry = node.entry((*seg).to_owned()).or_insert_with(|| {
                implicit.insert(here.to_vec());
                Value::Object(Object::new())
            });
            node = match entry {
                Value::Object(obj) => obj,
                _ => return Err(both_leaf_and_non_leaf(&here.join("."))),
            };
        }
        match node.get(*leaf) {
            None => {}
            Some(Value::Object(_)) if implicit.contains(&path) => {
                return Err(both_leaf_and_non_leaf(key));
            }
            Some(Value::Object(_)) => return Err(both_leaf_and_non_leaf(&parents.join("."))),
            Some(_) => return Err(ParseError(format!("Cannot set \"{key}\" multiple times"))),
        }
        node.insert((*leaf).to_owned(), value);
    }
    match refused {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn both_leaf_and_non_leaf(path: &str) -> ParseError {
    ParseError(format!(
        "Cannot use \"{path}\" as both leaf and non-leaf key"
    ))
}

#[cfg(test)]
mod tests;
