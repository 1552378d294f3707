//! Where a session's output goes, and how it looks.
//!
//! The session engine decides *what* to print (a reply, an event, a line of
//! text, a diagnostic); an [`Output`] decides *how*: Python-compatible JSON
//! in the chosen style, `--json` lines, colour. Standard output errors are
//! returned (the engine ends the session on them); standard error errors
//! are ignored, so a closed or full stderr never stops the shell.
//!
//! With `--json`, standard error is JSON Lines too: every line one object,
//! an event, or a message as [`message_object`] words it (`{"warning":
//! ...}`, `{"error": {"class": ..., "desc": ...}}`, `{"note": ...}`); the
//! programs' own messages outside a session go through [`eprint`] and
//! [`eprint_error`], which follow [`set_json_stderr`].

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use qmp_client::{Object, Reply};
use serde_json::Value;

use crate::render::{self, Style};

/// `{"error": {"class": CLASS, "desc": DESC}}`: what `--json` prints for
/// an error that no reply carried (a line that did not parse, a target
/// that could not be reached).
pub fn error_object(class: &str, desc: &str) -> Object {
    let mut error = Object::new();
    error.insert("class".to_owned(), Value::from(class));
    error.insert("desc".to_owned(), Value::from(desc));
    let mut body = Object::new();
    body.insert("error".to_owned(), Value::Object(error));
    body
}

/// A message for standard error worded for people (ending with a newline),
/// as a JSON object for `--json`: `warning: W` is `{"warning": W}`,
/// `ERROR: E` is `{"error": {"class": "GenericError", "desc": E}}`, `note:
/// N` and any other text `{"note": N}`, without the final newline.
pub fn message_object(text: &str) -> Object {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_prefix("note: ").unwrap_or(text);
    if let Some(w) = text.strip_prefix("warning: ") {
        let mut obj = Object::new();
        obj.insert("warning".to_owned(), Value::from(w));
        return obj;
    }
    if let Some(e) = text.strip_prefix("ERROR: ") {
        return error_object("GenericError", e);
    }
    let mut obj = Object::new();
    obj.insert("note".to_owned(), Value::from(text));
    obj
}

/// `object` as one compact line.
fn json_line(object: Object) -> String {
    let mut line = render::to_string(&Value::Object(object), Style::default());
    line.push('\n');
    line
}

/// Whether messages outside a session ([`eprint`]) are JSON lines.
static JSON_STDERR: AtomicBool = AtomicBool::new(false);

/// Make [`eprint`] and [`eprint_error`] write JSON lines (`--json`).
pub fn set_json_stderr(json: bool) {
    JSON_STDERR.store(json, Ordering::Relaxed);
}

/// Whether standard error is JSON lines ([`set_json_stderr`]).
pub fn json_stderr() -> bool {
    JSON_STDERR.load(Ordering::Relaxed)
}

/// Write a message (worded for people, ending with a newline) to standard
/// error, as a JSON line ([`message_object`]) after [`set_json_stderr`].
/// Errors writing are ignored.
pub fn eprint(text: &str) {
    if JSON_STDERR.load(Ordering::Relaxed) {
        write_stderr(&json_line(message_object(text)));
    } else {
        write_stderr(text);
    }
}

/// Write `ERROR: DESC` to standard error, or after [`set_json_stderr`]
/// `{"error": {"class": CLASS, "desc": DESC}}`.
pub fn eprint_error(class: &str, desc: &str) {
    if JSON_STDERR.load(Ordering::Relaxed) {
        write_stderr(&json_line(error_object(class, desc)));
    } else {
        write_stderr(&format!("ERROR: {desc}\n"));
    }
}

/// Write `object` to standard error as one JSON line.
pub fn eprint_object(object: Object) {
    write_stderr(&json_line(object));
}

fn write_stderr(text: &str) {
    // One write for the whole text: lines of threads do not mix.
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// A session's output.
pub trait Output: Send {
    /// Text for standard output, as is (banner, prompts, HMP replies, help).
    fn text(&mut self, text: &str) -> io::Result<()>;

    /// A reply (or, with `--json`, an error object standing for one), on a
    /// line of its own.
    fn reply(&mut self, body: Object) -> io::Result<()>;

    /// A reply as [`reply`](Output::reply) prints it, its `"id"` left out
    /// when the client added it ([`shown`](crate::wording::shown)). One kept
    /// as text ([`Reply::text`]) may be printed from its text; the default
    /// reads it into its object.
    fn reply_of(&mut self, reply: Reply) -> io::Result<()> {
        self.reply(crate::wording::shown(reply))
    }

    /// A command about to be sent (`-v`), on a line of its own.
    fn echo(&mut self, command: &Object) -> io::Result<()>;

    /// An event: on standard output in the reply style, or with `--json`
    /// as a compact line on standard error.
    fn event(&mut self, body: Object) -> io::Result<()>;

    /// A message for standard error: `text` worded for people (ending with
    /// a newline), or with `--json` the one line `object`. Standard output
    /// is flushed first, so the two stay in order on a terminal.
    fn message(&mut self, text: &str, object: Object);

    /// A diagnostic for standard error (ends with a newline); with `--json`
    /// as [`message_object`] words it.
    fn diag(&mut self, text: &str) {
        self.message(text, message_object(text));
    }

    /// An error for standard error: `text` worded for people, or with
    /// `--json` `{"error": {"class": CLASS, "desc": DESC}}`.
    fn error(&mut self, class: &str, desc: &str, text: &str) {
        self.message(text, error_object(class, desc));
    }

    /// An error that is the same for every session sharing this output (a
    /// command refused on every target of a fan-out): as
    /// [`error`](Output::error) says it, but said once however many
    /// sessions meet it, and not tagged with any one target.
    fn error_once(&mut self, class: &str, desc: &str, text: &str) {
        self.error(class, desc, text);
    }

    /// Flush standard output.
    fn flush(&mut self) -> io::Result<()>;

    /// Standard output could not be written (the session ends): say so on
    /// standard error, unless the reader just went away (`| head`).
    fn output_error(&mut self, err: &io::Error) {
        if err.kind() != io::ErrorKind::BrokenPipe {
            self.diag(&format!("ERROR: cannot write to standard output: {err}\n"));
        }
    }

    /// The message that ends a session (the connection lost, a reply that
    /// never came): `text` for standard error; `class` names it where an
    /// object stands for it (with `--json`).
    fn fatal(&mut self, class: &str, text: &str) {
        self.error(class, fatal_desc(text), text);
    }
}

/// What an error object says of a fatal message: its text without the
/// `ERROR: ` and the newline.
fn fatal_desc(text: &str) -> &str {
    text.trim_end().trim_start_matches("ERROR: ")
}

/// Standard output without std's line buffer in between: [`StdOutput`]
/// buffers it itself, so that a flush is one write(2) (a banner and a
/// prompt, say, not a write for each line and one for the rest). Whoever
/// else writes to standard output flushes as it goes.
struct RawStdout;

impl Write for RawStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: write(2) from `buf`, which lives across the call.
        let n = unsafe { libc::write(libc::STDOUT_FILENO, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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
            Box::new(io::BufWriter::with_capacity(16 * 1024, RawStdout)),
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

impl StdOutput {
    fn write_err(&mut self, text: &str) {
        // A failed stdout flush shows up at the next stdout write.
        let _ = self.out.flush();
        let _ = self.err.write_all(text.as_bytes());
        let _ = self.err.flush();
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

    fn reply_of(&mut self, reply: Reply) -> io::Result<()> {
        if let Some(text) = reply.text() {
            let omit = reply.assigned_id.then_some("id");
            if let Some(mut rendered) = render::from_text(text.as_bytes(), self.style, omit) {
                // No tree built, walked or dropped; one write.
                rendered.push('\n');
                return self.out.write_all(rendered.as_bytes());
            }
        }
        self.reply(crate::wording::shown(reply))
    }

    fn echo(&mut self, command: &Object) -> io::Result<()> {
        let mut text = render::to_string(&Value::Object(command.clone()), self.style);
        text.push('\n');
        self.out.write_all(text.as_bytes())
    }

    fn event(&mut self, body: Object) -> io::Result<()> {
        if self.json {
            self.write_err(&json_line(body));
            Ok(())
        } else {
            self.reply(body)
        }
    }

    fn message(&mut self, text: &str, object: Object) {
        if self.json {
            self.write_err(&json_line(object));
        } else {
            self.write_err(text);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The writers that several [`TaggedOutput`]s share, and the progress bar
/// (if any) that their standard error lines must not garble.
pub struct SharedStreams {
    out: Mutex<Box<dyn Write + Send>>,
    err: Mutex<Box<dyn Write + Send>>,
    bar: Mutex<Option<indicatif::ProgressBar>>,
    /// The first error writing standard output: nothing is written after it.
    out_error: Mutex<Option<(io::ErrorKind, String)>>,
    /// The messages said once for all targets ([`Output::error_once`]).
    said: Mutex<std::collections::HashSet<String>>,
}

impl SharedStreams {
    /// Standard output and standard error.
    pub fn stdio() -> Arc<SharedStreams> {
        SharedStreams::new(Box::new(io::stdout()), Box::new(io::stderr()))
    }

    /// Any two writers.
    pub fn new(out: Box<dyn Write + Send>, err: Box<dyn Write + Send>) -> Arc<SharedStreams> {
        Arc::new(SharedStreams {
            out: Mutex::new(out),
            err: Mutex::new(err),
            bar: Mutex::new(None),
            out_error: Mutex::new(None),
            said: Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// Whether `message` is said for the first time (and from now on, it
    /// has been).
    fn first_time(&self, message: &str) -> bool {
        self.said
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(message.to_owned())
    }

    /// Draw standard error lines above `bar` (or plainly, with `None`).
    pub fn set_bar(&self, bar: Option<indicatif::ProgressBar>) {
        *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = bar;
    }

    /// Run `write` with the bar (if any) off the screen: standard output
    /// may be the same terminal.
    fn around_bar<T>(&self, write: impl FnOnce() -> T) -> T {
        let bar = self.bar.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }

    fn write_out(&self, bytes: &[u8]) -> io::Result<()> {
        let mut failed = self.out_error.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((kind, text)) = &*failed {
            return Err(io::Error::new(*kind, text.clone()));
        }
        let written = self.around_bar(|| {
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            out.write_all(bytes)?;
            out.flush()
        });
        if let Err(err) = &written {
            *failed = Some((err.kind(), err.to_string()));
        }
        written
    }

    /// The first error writing standard output, if any (kind and text):
    /// every target's session ends on it, and it is reported once.
    pub fn output_error(&self) -> Option<(io::ErrorKind, String)> {
        self.out_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Write to standard error, errors ignored.
    pub fn write_err(&self, bytes: &[u8]) {
        self.around_bar(|| {
            let mut err = self.err.lock().unwrap_or_else(|e| e.into_inner());
            let _ = err.write_all(bytes);
            let _ = err.flush();
        })
    }
}

/// Output for one target among many (fan-out): every line of text is
/// prefixed with `TARGET: `; with `--json` every object gets a `"target"`
/// member first. Lines are written whole, so targets interleave only
/// between lines.
pub struct TaggedOutput {
    streams: Arc<SharedStreams>,
    target: String,
    style: Style,
    json: bool,
    /// Text of standard output not ended by a newline yet.
    partial: String,
}

impl TaggedOutput {
    /// Output tagged with `target`, written to `streams`.
    pub fn new(
        streams: Arc<SharedStreams>,
        target: &str,
        style: Style,
        json: bool,
    ) -> TaggedOutput {
        TaggedOutput {
            streams,
            target: target.to_owned(),
            style: if json { Style::default() } else { style },
            json,
            partial: String::new(),
        }
    }

    /// `text` (whole lines) with every line prefixed.
    fn prefixed(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 16);
        for line in text.lines() {
            out.push_str(&self.target);
            out.push_str(": ");
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// `body` with `"target"` first.
    fn with_target(&self, body: Object) -> Object {
        let mut obj = Object::new();
        obj.insert("target".to_owned(), Value::String(self.target.clone()));
        for (k, v) in body {
            if k != "target" {
                obj.insert(k, v);
            }
        }
        obj
    }

    fn json_line(&self, body: Object) -> String {
        json_line(self.with_target(body))
    }

    /// A message for standard error, tagged, in the `--json` case as an
    /// object (for an error the caller already worded).
    pub fn tagged_error(&self, class: &str, desc: &str) -> io::Result<()> {
        if self.json {
            self.streams
                .write_out(self.json_line(error_object(class, desc)).as_bytes())
        } else {
            self.streams
                .write_err(self.prefixed(&format!("ERROR: {desc}\n")).as_bytes());
            Ok(())
        }
    }
}

impl Output for TaggedOutput {
    fn text(&mut self, text: &str) -> io::Result<()> {
        self.partial.push_str(text);
        let Some(end) = self.partial.rfind('\n') else {
            return Ok(());
        };
        let whole: String = self.partial.drain(..=end).collect();
        self.streams.write_out(self.prefixed(&whole).as_bytes())
    }

    fn reply(&mut self, body: Object) -> io::Result<()> {
        if self.json {
            let line = self.json_line(body);
            return self.streams.write_out(line.as_bytes());
        }
        let text = render::to_string(&Value::Object(body), self.style);
        self.streams.write_out(self.prefixed(&text).as_bytes())
    }

    fn reply_of(&mut self, reply: Reply) -> io::Result<()> {
        if let (false, Some(text)) = (self.json, reply.text()) {
            let omit = reply.assigned_id.then_some("id");
            if let Some(rendered) = render::from_text(text.as_bytes(), self.style, omit) {
                return self.streams.write_out(self.prefixed(&rendered).as_bytes());
            }
        }
        self.reply(crate::wording::shown(reply))
    }

    fn echo(&mut self, command: &Object) -> io::Result<()> {
        let text = render::to_string(&Value::Object(command.clone()), self.style);
        self.streams.write_out(self.prefixed(&text).as_bytes())
    }

    fn event(&mut self, body: Object) -> io::Result<()> {
        if self.json {
            let line = self.json_line(body);
            self.streams.write_err(line.as_bytes());
            return Ok(());
        }
        self.reply(body)
    }

    fn message(&mut self, text: &str, object: Object) {
        if self.json {
            self.streams.write_err(self.json_line(object).as_bytes());
        } else {
            self.streams.write_err(self.prefixed(text).as_bytes());
        }
    }

    fn error_once(&mut self, class: &str, desc: &str, text: &str) {
        if !self.streams.first_time(text) {
            return;
        }
        if self.json {
            self.streams
                .write_err(json_line(error_object(class, desc)).as_bytes());
        } else {
            self.streams.write_err(text.as_bytes());
        }
    }

    fn fatal(&mut self, class: &str, text: &str) {
        if self.json {
            // On standard output: the target's answer.
            let _ = self.tagged_error(class, fatal_desc(text));
        } else {
            self.diag(text);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn output_error(&mut self, _: &io::Error) {
        // Shared by every target: the fan-out reports it once.
    }
}

impl Drop for TaggedOutput {
    fn drop(&mut self) {
        // What is left without a newline (HMP's trailing space, say).
        let rest = std::mem::take(&mut self.partial);
        if !rest.trim().is_empty() {
            let _ = self.streams.write_out(self.prefixed(&rest).as_bytes());
        }
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

    /// QEMU's real schema reply, kept as text by the client, prints exactly
    /// as the tree of the same reply does, in every style, with the id the
    /// client added left out and a user's id kept.
    #[test]
    fn a_reply_kept_as_text_prints_as_its_tree() {
        use qmp_client::{command, Address, Client, ClientOptions, Request};
        let peer = qmp_test_support::peer::qemu();
        let client = Client::connect(
            &Address::Unix(peer.socket.clone()),
            ClientOptions::default(),
        )
        .unwrap();
        let t = Some(std::time::Duration::from_secs(20));
        let ask = |request: Request| client.submit(request).unwrap().wait(t).unwrap();
        let mut mine = command("query-qmp-schema", None);
        mine.insert("id".into(), Value::from("mine"));
        for msg in [command("query-qmp-schema", None), mine] {
            let kept = ask(Request::new(msg.clone()).text_reply());
            assert!(kept.text().is_some(), "kept as text");
            let tree = ask(Request::new(msg));
            assert!(tree.text().is_none());
            for (pretty, color, json) in [
                (true, false, false),
                (false, false, false),
                (true, true, false),
                (true, true, true),
            ] {
                let style = Style { pretty, color };
                let (mut a, a_out, _) = buffers(style, json);
                a.reply_of(kept.clone()).unwrap();
                a.flush().unwrap();
                let (mut b, b_out, _) = buffers(style, json);
                b.reply(crate::wording::shown(tree.clone())).unwrap();
                b.flush().unwrap();
                assert!(a_out.text() == b_out.text(), "{style:?} json={json}");
                assert!(a_out.text().len() > 100_000);
                // Fan-out's output, each line tagged with its target.
                let tagged = |reply: &dyn Fn(&mut TaggedOutput)| {
                    let out = super::testing::Buffer::default();
                    let streams = SharedStreams::new(Box::new(out.clone()), Box::new(io::sink()));
                    reply(&mut TaggedOutput::new(streams, "vm1", style, json));
                    out.text()
                };
                let a = tagged(&|o| o.reply_of(kept.clone()).unwrap());
                let b = tagged(&|o| o.reply(crate::wording::shown(tree.clone())).unwrap());
                assert!(a == b, "tagged {style:?} json={json}");
                assert!(a.starts_with("vm1: ") || json, "{}", &a[..20]);
            }
        }
    }

    #[test]
    fn tagged_lines_and_objects() {
        use super::testing::Buffer;
        let (out, err) = (Buffer::default(), Buffer::default());
        let streams = SharedStreams::new(Box::new(out.clone()), Box::new(err.clone()));
        let pretty = Style {
            pretty: true,
            color: false,
        };
        let mut a = TaggedOutput::new(Arc::clone(&streams), "vm1", pretty, false);
        a.reply(obj(r#"{"return": {"b": 1}}"#)).unwrap();
        a.text("7.2.22\r\n ").unwrap();
        a.diag("warning: x\n");
        drop(a);
        assert_eq!(
            out.text(),
            "vm1: {\nvm1:     \"return\": {\nvm1:         \"b\": 1\nvm1:     }\nvm1: }\nvm1: 7.2.22\n"
        );
        assert_eq!(err.text(), "vm1: warning: x\n");
        let (out, err) = (Buffer::default(), Buffer::default());
        let streams = SharedStreams::new(Box::new(out.clone()), Box::new(err.clone()));
        let mut b = TaggedOutput::new(streams, "/run/b.sock", pretty, true);
        b.reply(obj(r#"{"return": {}, "id": 3}"#)).unwrap();
        b.event(obj(r#"{"event": "STOP"}"#)).unwrap();
        b.tagged_error("ConnectError", "refused").unwrap();
        assert_eq!(
            out.text(),
            "{\"target\": \"/run/b.sock\", \"return\": {}, \"id\": 3}\n\
             {\"target\": \"/run/b.sock\", \"error\": {\"class\": \"ConnectError\", \"desc\": \"refused\"}}\n"
        );
        assert_eq!(
            err.text(),
            "{\"target\": \"/run/b.sock\", \"event\": \"STOP\"}\n"
        );
    }

    #[test]
    fn messages_as_json_objects() {
        let shape = |text: &str| Value::Object(message_object(text));
        assert_eq!(
            shape("warning: command x is deprecated\n"),
            serde_json::json!({"warning": "command x is deprecated"})
        );
        assert_eq!(
            shape("ERROR: /record: cannot write\n"),
            serde_json::json!({"error": {"class": "GenericError", "desc": "/record: cannot write"}})
        );
        assert_eq!(
            shape("note: libvirt marks it\n"),
            serde_json::json!({"note": "libvirt marks it"})
        );
        assert_eq!(
            shape("(abandoned; a late reply will be shown as such)\n"),
            serde_json::json!({"note": "(abandoned; a late reply will be shown as such)"})
        );
        // Each message one line, whatever it holds.
        let (mut o, _, err) = buffers(Style::default(), true);
        o.diag("two\nlines\n");
        o.error("Timeout", "/wait: no X", "ERROR: /wait: no X\n");
        o.fatal("Disconnected", "Disconnected: gone\n");
        assert_eq!(
            err.text(),
            "{\"note\": \"two\\nlines\"}\n\
             {\"error\": {\"class\": \"Timeout\", \"desc\": \"/wait: no X\"}}\n\
             {\"error\": {\"class\": \"Disconnected\", \"desc\": \"Disconnected: gone\"}}\n"
        );
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
