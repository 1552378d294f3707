//! Tab completion and multi-line input for the interactive shell.
//!
//! What to complete is learnt in the background after connecting (QMP: the
//! live `query-qmp-schema`; HMP: `help` and `info`; the guest agent:
//! `guest-info`), so the first prompt never waits for it. Until it arrives,
//! Tab offers nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use rustyline::completion::{Completer, Pair};
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper, Highlighter};

use crate::meta;
use crate::rawjson::raw_json_incomplete;
use crate::schema::Schema;
use crate::store::SchemaStore;

/// Plain completion candidates shared between the filler thread and the editor.
#[derive(Clone, Default)]
pub struct Names(Arc<RwLock<Vec<String>>>);

impl Names {
    /// Replace the candidates (kept sorted and without duplicates).
    pub fn set(&self, mut names: Vec<String>) {
        names.sort();
        names.dedup();
        if let Ok(mut guard) = self.0.write() {
            *guard = names;
        }
    }

    /// Candidates starting with `prefix`.
    pub fn matching(&self, prefix: &str) -> Vec<String> {
        let Ok(guard) = self.0.read() else {
            return Vec::new();
        };
        let start = guard.partition_point(|n| n.as_str() < prefix);
        guard[start..]
            .iter()
            .take_while(|n| n.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// Everything completion knows, shared with the threads that learn it.
#[derive(Clone, Default)]
pub struct Knowledge {
    /// Command names (HMP lines like `info block`, or guest-agent commands).
    pub names: Names,
    /// The server's QMP schema, once fetched (shared with the engine).
    pub store: Arc<SchemaStore>,
    /// The shell is inside a multi-line `transaction(`.
    pub in_transaction: Arc<AtomicBool>,
    /// Ctrl-C was pressed: the line ends whatever it holds.
    pub ctrl_c: Arc<AtomicBool>,
    /// Called on the editor's thread each time it draws the line, first
    /// when a read starts (with the terminal in raw mode).
    pub on_draw: DrawHook,
}

/// What to do when the line editor draws the line (see
/// [`Knowledge::on_draw`]).
#[derive(Clone, Default)]
pub struct DrawHook(Option<Arc<dyn Fn() + Send + Sync>>);

impl DrawHook {
    /// Call `f` at each drawing.
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> DrawHook {
        DrawHook(Some(Arc::new(f)))
    }

    fn call(&self) {
        if let Some(f) = &self.0 {
            f();
        }
    }
}

/// The rustyline helper of the shell.
#[derive(Helper, Highlighter)]
pub struct ShellHelper {
    knowledge: Knowledge,
    whole_line: bool,
}

impl ShellHelper {
    /// A helper completing from `knowledge`. With `whole_line` (HMP, where
    /// candidates look like `info block`), the whole line before the cursor
    /// is the prefix; otherwise the schema decides, or failing that only the
    /// command name is completed.
    pub fn new(knowledge: Knowledge, whole_line: bool) -> ShellHelper {
        ShellHelper {
            knowledge,
            whole_line,
        }
    }

    fn pairs(words: Vec<String>) -> Vec<Pair> {
        words
            .into_iter()
            .map(|word| Pair {
                display: word.clone(),
                replacement: word,
            })
            .collect()
    }

    /// Candidates shown with the schema's mark (`drive-backup
    /// (deprecated)`), inserted without it.
    fn marked(words: Vec<String>, mark: impl Fn(&str) -> Option<&'static str>) -> Vec<Pair> {
        words
            .into_iter()
            .map(|word| {
                let name = word.trim_end_matches(['=', '.', ' ']);
                let display = match mark(name) {
                    Some(m) => format!("{word} ({m})"),
                    None => word.clone(),
                };
                Pair {
                    display,
                    replacement: word,
                }
            })
            .collect()
    }

    /// The shell's own commands: their names, event names after `/wait`,
    /// the commands that may run out of band after `/oob`.
    fn complete_meta(schema: Option<&Schema>, before: &str) -> (usize, Vec<Pair>) {
        let start = before.len() - before.trim_start().len();
        let text = &before[start..];
        let Some((name, rest)) = text.split_once(char::is_whitespace) else {
            let names = meta::NAMES
                .iter()
                .filter(|n| n.starts_with(text))
                .map(|n| n.to_string())
                .collect();
            return (start, Self::pairs(names));
        };
        let rest_start = before.len() - rest.trim_start().len();
        let word = rest.trim_start();
        if word.contains(char::is_whitespace) {
            return (before.len(), Vec::new());
        }
        let Some(schema) = schema else {
            return (before.len(), Vec::new());
        };
        let pairs = match name {
            "/wait" => Self::marked(
                schema
                    .event_names()
                    .into_iter()
                    .filter(|e| e.starts_with(word))
                    .map(str::to_owned)
                    .collect(),
                |n| schema.event_mark(n),
            ),
            "/oob" => Self::marked(
                schema
                    .command_names()
                    .into_iter()
                    .filter(|c| c.starts_with(word) && schema.allows_oob(c))
                    .map(str::to_owned)
                    .collect(),
                |n| schema.command_mark(n),
            ),
            _ => Vec::new(),
        };
        (rest_start, pairs)
    }
}

/// No hints; the editor asks for one each time it draws the line, which is
/// when [`Knowledge::on_draw`] runs.
impl Hinter for ShellHelper {
    type Hint = String;

    fn hint(&self, _line: &str, _pos: usize, _ctx: &Context<'_>) -> Option<String> {
        self.knowledge.on_draw.call();
        None
    }
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = line.get(..pos).unwrap_or(line);
        let schema = self.knowledge.store.schema_if_known();
        if self.whole_line && meta::is_meta(before) {
            // The shell's own commands work in HMP mode too.
            return Ok(Self::complete_meta(schema, before));
        }
        if self.whole_line {
            let start = before.len() - before.trim_start().len();
            let words = self.knowledge.names.matching(&before[start..]);
            return Ok((start, Self::pairs(words)));
        }
        let in_transaction = self.knowledge.in_transaction.load(Ordering::Relaxed);
        if !in_transaction && meta::is_meta(before) {
            return Ok(Self::complete_meta(schema, before));
        }
        if let Some(schema) = schema {
            let (start, words) = schema.complete(before, in_transaction);
            let first_word = !before.trim_start().contains(char::is_whitespace);
            let pairs = if first_word && !in_transaction {
                let mut pairs = Self::marked(words, |n| schema.command_mark(n));
                if before.trim_start().is_empty() {
                    pairs.extend(Self::pairs(
                        meta::NAMES.iter().map(|n| n.to_string()).collect(),
                    ));
                }
                pairs
            } else {
                Self::pairs(words)
            };
            return Ok((start.min(before.len()), pairs));
        }
        let trimmed = before.trim_start();
        if trimmed.contains(char::is_whitespace) {
            return Ok((pos, Vec::new()));
        }
        let start = before.len() - trimmed.len();
        Ok((start, Self::pairs(self.knowledge.names.matching(trimmed))))
    }
}

impl Validator for ShellHelper {
    /// A line starting with `{` is raw JSON: keep reading lines until its
    /// braces balance.
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        if self.whole_line
            || self.knowledge.ctrl_c.load(Ordering::SeqCst)
            || !raw_json_incomplete(ctx.input())
        {
            Ok(ValidationResult::Valid(None))
        } else {
            Ok(ValidationResult::Incomplete)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matching_is_sorted_and_bounded() {
        let names = Names::default();
        names.set(vec![
            "query-status".into(),
            "query-block".into(),
            "quit".into(),
            "query-block".into(),
            "stop".into(),
        ]);
        assert_eq!(names.matching("query-"), ["query-block", "query-status"]);
        assert_eq!(names.matching("q").len(), 3);
        assert!(names.matching("x").is_empty());
        assert_eq!(names.matching("").len(), 4);
    }
}
