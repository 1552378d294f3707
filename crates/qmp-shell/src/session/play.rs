//! `/play FILE`: the lines of a file run as if typed, after the `/play`
//! line (a recording made with `/record`, say).

use std::collections::VecDeque;
use std::fs::File;
use std::io;

use super::{Engine, Slot};
use crate::meta;
use crate::wording::python_io_error;

/// Bytes a `/play` file may have at most (it is read whole).
const MAX_PLAY_BYTES: u64 = 64 << 20;

/// `/play`'s state: the lines still to run, whether they come from a
/// file, and which.
#[derive(Default)]
pub(super) struct Playback {
    lines: VecDeque<String>,
    playing: bool,
    path: String,
}

impl Engine {
    /// Run the next line of a `/play` file, if one is waiting and the
    /// engine takes input. Returns `true` when it ran one. At a terminal
    /// (live events), the line is shown after its prompt, as if typed.
    /// The file ends what it opened: a transaction or raw JSON message
    /// still open after its last line is abandoned, a failed command.
    pub fn play_next(&mut self) -> bool {
        if !self.wants_input() {
            return false;
        }
        let Some(line) = self.playback.lines.pop_front() else {
            self.playback.playing = false;
            return false;
        };
        if self.cfg.live_events {
            let prompt = if self.raw.is_some() {
                ""
            } else {
                self.prompt()
            };
            self.queue
                .push_back(Slot::Text(format!("{prompt}{line}\n")));
        }
        self.take_line(&line);
        if self.playback.lines.is_empty() && self.playback.playing {
            self.playback.playing = false;
            self.unfinished(&format!("/play: {} ends", self.playback.path));
        }
        true
    }

    /// `/play FILE`: its lines run as if typed, after this one.
    pub(super) fn play(&mut self, path: &str) {
        if self.playback.playing {
            return self.meta_failure("/play", "nested /play is refused".to_owned());
        }
        let text = match File::open(path).and_then(|f| {
            let mut text = String::new();
            io::Read::read_to_string(&mut io::Read::take(f, MAX_PLAY_BYTES + 1), &mut text)?;
            Ok(text)
        }) {
            Ok(text) if text.len() as u64 > MAX_PLAY_BYTES => {
                return self.meta_failure(
                    "/play",
                    format!("{path} is larger than {} MiB", MAX_PLAY_BYTES >> 20),
                )
            }
            Ok(text) => text,
            Err(err) => {
                return self.meta_failure(
                    "/play",
                    format!("cannot read {path}: {}", python_io_error(&err)),
                )
            }
        };
        // A recording says what its lines are: played in another mode,
        // every line would fail, or worse.
        let mode = self.mode();
        if let Some(other) = meta::recorded_modes(&text).into_iter().find(|m| *m != mode) {
            return self.meta_failure("/play", format!("{path} holds {}", other.describe()));
        }
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        self.playback.playing = !lines.is_empty();
        self.playback.path = path.to_owned();
        self.playback.lines.extend(lines);
    }

    /// Drop the rest of a `/play` file (Ctrl-C); returns how many lines.
    /// A transaction the file opened is abandoned.
    pub fn stop_playing(&mut self) -> usize {
        if std::mem::take(&mut self.playback.playing) {
            self.abandon_transaction();
        }
        std::mem::take(&mut self.playback.lines).len()
    }
}
