//! `/record [--append] FILE` and `/record off`: the lines sent, kept in a
//! file that `/play` (or `qmp-shell < FILE`) runs again.
//!
//! A recording holds what was sent: each line once what it belongs to is
//! complete (a transaction when it is closed, a raw JSON message when it
//! ends), as it was typed; what was not sent (a parse error, a refusal, an
//! abandoned transaction) only as `# not sent: ` comments, which replay
//! skips; a line starting with a space (kept out of history too) as a
//! comment saying so. [`Engine::take_line`] applies these rules.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use super::{Engine, Slot};
use crate::files::{open_private, Existing};
use crate::meta;
use crate::wording::python_io_error;

/// What a recording holds for a line that starts with a space.
const HIDDEN_LINE: &str = "# (a line starting with a space: kept out of the recording)";

/// `/record`'s state: where command lines go, and the lines of the unit
/// being read.
#[derive(Default)]
pub(super) struct Recorder {
    /// Where command lines go (`None`: not recording).
    to: Option<Recording>,
    /// The lines of the transaction or raw JSON message being read, kept
    /// until it is sent (then recorded) or dropped (then recorded as
    /// comments). `None` stands for a line kept out of recordings.
    pub(super) unit: Vec<Option<String>>,
    /// The line being run failed before anything was sent (a parse error,
    /// a refusal): it is recorded as a comment.
    pub(super) unsent: bool,
}

/// What `/record` writes to.
struct Recording {
    file: File,
    /// As the user gave it, for messages.
    path: String,
}

impl Recorder {
    /// Keep `line` for the unit being read (a line starting with a space
    /// as a placeholder).
    pub(super) fn keep(&mut self, line: &str) {
        self.unit
            .push((!line.starts_with(' ')).then(|| line.to_owned()));
    }
}

impl Engine {
    /// The lines of the unit (see [`Engine::take_line`]) are done with:
    /// recorded as they are when `sent`, else as comments.
    pub(super) fn unit_done(&mut self, sent: bool) {
        let lines = std::mem::take(&mut self.record.unit);
        if self.record.to.is_none() || lines.is_empty() {
            return;
        }
        let mut text = String::new();
        for line in lines {
            match line {
                None => text.push_str(HIDDEN_LINE),
                Some(line) if sent => text.push_str(&line),
                Some(line) => {
                    text.push_str("# not sent: ");
                    text.push_str(&line);
                }
            }
            text.push('\n');
        }
        self.write_record(&text);
    }

    /// Add `text` to the recording; a write error stops it, with a note.
    fn write_record(&mut self, text: &str) {
        let Some(rec) = self.record.to.as_mut() else {
            return;
        };
        let ok = rec
            .file
            .write_all(text.as_bytes())
            .and_then(|()| rec.file.flush());
        if let Err(err) = ok {
            self.queue.push_back(Slot::Note(format!(
                "ERROR: /record: cannot write to {}: {}; recording stopped\n",
                rec.path,
                python_io_error(&err)
            )));
            self.record.to = None;
        }
    }

    /// `/record [--append] FILE` or `/record off` (refused in a fan-out).
    /// A new recording starts with a header of comments. An existing file
    /// is refused unless `append`; if it cannot be opened, a recording
    /// going on goes on.
    pub(super) fn start_record(&mut self, path: Option<&str>, append: bool) {
        if self.cfg.fan_out {
            // Every target would open the same file.
            let text = match path {
                Some(path) => format!(
                    "/record: not with several targets (each would write to {path}); \
                     record on one target, then /play the file on all"
                ),
                None => "/record: not with several targets".to_owned(),
            };
            self.record.unsent = true;
            return self.queue.push_back(Slot::FailureOnce {
                diag: format!("ERROR: {text}\n"),
                desc: text,
            });
        }
        let Some(path) = path else {
            self.record.to = None;
            return;
        };
        let how = if append {
            Existing::Append
        } else {
            Existing::Refuse
        };
        match open_private(Path::new(path), how) {
            Ok(file) => {
                self.record.to = Some(Recording {
                    file,
                    path: path.to_owned(),
                });
                let header = self.record_header();
                self.write_record(&header);
            }
            Err(err) => {
                let mut text = if err.kind() == io::ErrorKind::AlreadyExists {
                    let quoted = quote_word(path);
                    format!("{path} exists; to add to it: /record --append {quoted}")
                } else {
                    format!("cannot open {path}: {}", python_io_error(&err))
                };
                if let Some(rec) = &self.record.to {
                    text.push_str(&format!(" (still recording to {})", rec.path));
                }
                self.meta_failure("/record", text);
            }
        }
    }

    /// The comments that start a recording: when, which shell, which QEMU
    /// (its version, and the command line the wrap started it with), and
    /// whether the lines are HMP or guest agent commands.
    fn record_header(&self) -> String {
        let mut text = format!(
            "# qmp-shell {} recording, {}\n",
            env!("CARGO_PKG_VERSION"),
            utc_now()
        );
        let greeting = self.client.greeting();
        if let Some((major, minor, micro)) = greeting.and_then(|g| g.version()) {
            text.push_str(&format!("# QEMU {major}.{minor}.{micro}"));
            let package = greeting
                .and_then(|g| g.body.get("QMP"))
                .and_then(|q| q["version"]["package"].as_str())
                .map(str::trim)
                .unwrap_or_default();
            if !package.is_empty() {
                text.push_str(&format!(" ({package})"));
            }
            text.push('\n');
        }
        if let Some(argv) = &self.cfg.qemu_command {
            let words: Vec<String> = argv.iter().map(|w| quote_word(w)).collect();
            text.push_str(&format!("# QEMU command line: {}\n", words.join(" ")));
        }
        if let Some(line) = self.mode().header_line() {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// What this session's lines are: QMP, HMP or guest agent commands.
    pub(super) fn mode(&self) -> meta::Mode {
        if self.cfg.hmp {
            meta::Mode::Hmp
        } else if self.cfg.guest_agent {
            meta::Mode::GuestAgent
        } else {
            meta::Mode::Qmp
        }
    }
}

/// `word` as the shell's tokenizer reads it back: in double quotes (with
/// `\\` and `\"` escaped) if it has blanks or quotes, else as it is. Also
/// readable by a POSIX shell for the usual words.
fn quote_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_alphanumeric() || "-_./=:,@%+^".contains(c));
    if plain {
        return word.to_owned();
    }
    let mut quoted = String::from("\"");
    for c in word.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// The time now, UTC: `2025-06-01 12:34:56 UTC`.
fn utc_now() -> String {
    utc_time(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// `secs` after the Unix epoch, UTC: `2025-06-01 12:34:56 UTC`.
fn utc_time(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shorthand::{tokenize, unquote};

    #[test]
    fn quoted_words_read_back_as_one_token() {
        assert_eq!(quote_word("/tmp/a-b_c.qmp"), "/tmp/a-b_c.qmp");
        assert_eq!(quote_word("my file"), "\"my file\"");
        for word in ["my file", "a\"b", "back\\slash", "$HOME `x`", "it's", ""] {
            let quoted = quote_word(word);
            let tokens = tokenize(&format!("/record --append {quoted}"));
            assert_eq!(tokens.len(), 3, "{word:?}: {tokens:?}");
            assert_eq!(unquote(&tokens[2]), word, "{quoted}");
        }
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_time(1_748_781_296), "2025-06-01 12:34:56 UTC");
        assert_eq!(utc_time(4_102_444_799), "2099-12-31 23:59:59 UTC");
    }
}
