//! Where a session's output goes, and how it looks.
//!
//! The session engine decides *what* to print (a reply, an event, a line of
//! text, a diagnostic); an [`Output`] decides *how*: Python-compatible JSON
//! in the chosen style, `--json` lines, colour. Standard output errors are
//! returned (the engine ends the session on them); standard error errors
//! are ignored, so a closed or full stderr never stops the shell.

use std::io::{self, Write};

use qmp::Object;
use serde_json::Value;

use crate::render::{self, Style};

/// A session's output.
pub trait Output: Send {
    /// Text for standard output, as is (banner, prompts, HMP replies, help).
    fn text(&mut self, text: &str) -> io::Result<()>;

    /// A reply (or, with `--json`, an error object standing for one), on a
    /// line of its own.
    fn reply(&mut self, body: Object) -> io::Result<()>;

    /// A command about to be sent (`-v`), on a line of its own.
    fn echo(&mut self, command: &Object) -> io::Result<()>;

    /// An event: on standard output in the reply style, or with `--json`
    /// as a compact line on standard error.
    fn event(&mut self, body: Object) -> io::Result<()>;

    /// A diagnostic for standard error (ends with a newline). Standard
    /// output is flushed first, so the two stay in order on a terminal.
    fn diag(&mut self, text: &str);

    /// Flush standard output.
    fn flush(&mut self) -> io::Result<()>;
}

/// Output to the process's standard output and standard error (or any two
/// writers).
pub struct StdOutput {
    out: Box<dyn Write + Send>,
    err: Box<dyn Write + Send>,
    style: Style,
    json: bool,
}

impl StdOutput {
    /// Standard output (buffered: flushed before waiting and before
    /// diagnostics) and standard error.
    pub fn stdio(style: Style, json: bool) -> StdOutput {
        StdOutput::new(
            Box::new(io::BufWriter::with_capacity(16 * 1024, io::stdout())),
            Box::new(io::stderr()),
            style,
            json,
        )
    }

    /// Output to `out` and `err`. With `json`, replies and events are
    /// compact and uncoloured whatever `style` says.
    pub fn new(
        out: Box<dyn Write + Send>,
        err: Box<dyn Write + Send>,
        style: Style,
        json: bool,
    ) -> StdOutput {
        let style = if json { Style::default() } else { style };
        StdOutput {
            out,
            err,
            style,
            json,
        }
    }
}

impl Output for StdOutput {
    fn text(&mut self, text: &str) -> io::Result<()> {
        self.out.write_all(text.as_bytes())
    }

    fn reply(&mut self, body: Object) -> io::Result<()> {
        // Rendered in pieces: a huge reply is never held whole as text.
        render::write_to(&mut self.out, &Value::Object(body), self.style)?;
        self.out.write_all(b"\n")
    }

    fn echo(&mut self, command: &Object) -> io::Result<()> {
        let mut text = render::to_string(&Value::Object(command.clone()), self.style);
        text.push('\n');
        self.out.write_all(text.as_bytes())
    }

    fn event(&mut self, body: Object) -> io::Result<()> {
        if self.json {
            let mut text = render::to_string(&Value::Object(body), self.style);
            text.push('\n');
            self.diag(&text);
            Ok(())
        } else {
            self.reply(body)
        }
    }

    fn diag(&mut self, text: &str) {
        // A failed stdout flush shows up at the next stdout write.
        let _ = self.out.flush();
        let _ = self.err.write_all(text.as_bytes());
        let _ = self.err.flush();
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! An [`Output`] into shared buffers, for tests.

    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer appending to a shared buffer.
    #[derive(Clone, Default)]
    pub struct Buffer(pub Arc<Mutex<Vec<u8>>>);

    impl Buffer {
        pub fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A StdOutput writing into two buffers.
    pub fn buffers(style: Style, json: bool) -> (StdOutput, Buffer, Buffer) {
        let (out, err) = (Buffer::default(), Buffer::default());
        let o = StdOutput::new(Box::new(out.clone()), Box::new(err.clone()), style, json);
        (o, out, err)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::buffers;
    use super::*;

    fn obj(text: &str) -> Object {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn replies_and_events_in_the_session_style() {
        let (mut o, out, err) = buffers(
            Style {
                pretty: true,
                color: false,
            },
            false,
        );
        o.reply(obj(r#"{"return": {"b": 1, "a": 2}}"#)).unwrap();
        o.event(obj(r#"{"event": "STOP"}"#)).unwrap();
        o.diag("warning: x\n");
        assert_eq!(
            out.text(),
            "{\n    \"return\": {\n        \"a\": 2,\n        \"b\": 1\n    }\n}\n{\n    \"event\": \"STOP\"\n}\n"
        );
        assert_eq!(err.text(), "warning: x\n");
    }

    #[test]
    fn json_mode_is_compact_and_events_go_to_stderr() {
        let (mut o, out, err) = buffers(
            Style {
                pretty: true,
                color: true,
            },
            true,
        );
        o.reply(obj(r#"{"return": {"b": 1}}"#)).unwrap();
        o.event(obj(r#"{"event": "STOP"}"#)).unwrap();
        assert_eq!(out.text(), "{\"return\": {\"b\": 1}}\n");
        assert_eq!(err.text(), "{\"event\": \"STOP\"}\n");
    }
}
