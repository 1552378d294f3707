//! Tab completion for the interactive shell.
//!
//! The candidate list is filled in the background after connecting (QMP:
//! `query-commands`; HMP: `help` and `info`), so the first prompt never
//! waits for it. Until it arrives, Tab offers nothing.

use std::sync::{Arc, RwLock};

use rustyline::completion::{Completer, Pair};
use rustyline::{Context, Helper, Highlighter, Hinter, Validator};

/// Completion candidates shared between the filler thread and the editor.
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

/// The rustyline helper of the shell.
#[derive(Helper, Hinter, Highlighter, Validator)]
pub struct ShellHelper {
    names: Names,
    whole_line: bool,
}

impl ShellHelper {
    /// A helper completing from `names`. With `whole_line` (HMP, where
    /// candidates look like `info block`), the whole line before the cursor is
    /// the prefix; otherwise only the command name is completed.
    pub fn new(names: Names, whole_line: bool) -> ShellHelper {
        ShellHelper { names, whole_line }
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
        let before = &line[..pos];
        let (start, prefix) = if self.whole_line {
            let start = before.len() - before.trim_start().len();
            (start, &before[start..])
        } else {
            let trimmed = before.trim_start();
            if trimmed.contains(char::is_whitespace) {
                return Ok((pos, Vec::new()));
            }
            (before.len() - trimmed.len(), trimmed)
        };
        let pairs = self
            .names
            .matching(prefix)
            .into_iter()
            .map(|name| Pair {
                display: name.clone(),
                replacement: name,
            })
            .collect();
        Ok((start, pairs))
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
