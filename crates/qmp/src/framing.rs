//! Splitting a byte stream into top-level JSON values, without I/O.
//!
//! QMP is a stream of JSON values with no framing of its own: QEMU ends its
//! messages with `\r\n`, but clients may send values back to back. The
//! [`Decoder`] finds where each value ends by scanning bytes (tracking strings,
//! escapes and bracket depth iteratively, so any nesting depth is safe), then
//! parses the value with `serde_json`.

use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::message::{Object, Reply};

/// Why a frame could not be turned into an [`Object`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A single message was longer than the decoder's limit; it was discarded.
    #[error("message larger than the limit of {limit} bytes, discarded")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The bytes of the frame are not valid UTF-8.
    #[error("message is not valid UTF-8")]
    InvalidUtf8,
    /// The frame is not valid JSON.
    #[error("invalid JSON ({reason}): {text}")]
    NotJson {
        /// The frame's text, truncated to about 80 characters.
        text: String,
        /// The parser's explanation.
        reason: String,
    },
    /// The frame is valid JSON but not an object (e.g. `[1]` or `42`).
    #[error("JSON value is not an object: {text}")]
    NotAnObject {
        /// The frame's text, truncated to about 80 characters.
        text: String,
    },
}

/// A frame as [`Decoder::next_frame_with_raw`] gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A JSON object, or why the frame is not one.
    Message(Result<Object, FrameError>),
    /// A large successful reply kept as its text ([`Reply::text`]), after
    /// [`Decoder::text_replies`]. Its text is valid JSON, one object with
    /// one `"return"` and no `"QMP"`: read as an object, it would have
    /// been a reply.
    Reply(Reply),
}

/// Serialize a message as compact JSON followed by a newline.
pub fn encode(msg: &Object) -> Vec<u8> {
    // Serializing a `Map<String, Value>` into a Vec cannot fail.
    let mut out = serde_json::to_vec(msg).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Truncate `text` to about `max` characters, marking the cut with `...`.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}...", &text[..cut]),
    }
}

/// Frames nested deeper than this are never kept as text (`serde_json`
/// refuses 128 levels when building a tree; QEMU's replies nest a few).
const TEXT_DEPTH: usize = 100;

/// How much of a frame's text goes into error messages.
const TEXT_IN_ERRORS: usize = 80;

/// Buffer capacity kept when the buffer becomes empty: a large reply's
/// buffer is released at once, so it does not add to the peak memory while
/// that reply is rendered.
const RETAINED_CAPACITY: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Between values: skipping whitespace.
    Idle,
    /// Inside an object or array starting at `start`.
    Value,
    /// Inside something that is not an object or array, up to the next newline.
    Line,
    /// Discarding an oversized object or array until its end.
    SkipValue,
    /// Discarding an oversized line until its newline.
    SkipLine,
}

/// An incremental splitter of a byte stream into top-level JSON values.
///
/// Feed it bytes as they arrive with [`feed`](Decoder::feed), then call
/// [`next_message`](Decoder::next_message) until it returns `None`. The scan
/// position is remembered between calls, so the total work is linear in the
/// input size however the input is split.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Start of the current frame (or of unconsumed data) in `buf`.
    start: usize,
    /// Next byte of `buf` to scan.
    scan: usize,
    depth: usize,
    /// The deepest nesting of the current frame so far.
    deepest: usize,
    in_string: bool,
    escape: bool,
    mode: Mode,
    max_message: usize,
    /// Replies at least this long are kept as text ([`Frame::Reply`]).
    text_replies: Option<usize>,
    /// Bytes examined so far, for the tests of linearity.
    #[cfg(test)]
    scanned: usize,
}

impl Decoder {
    /// A decoder that refuses messages longer than `max_message` bytes.
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            start: 0,
            scan: 0,
            depth: 0,
            deepest: 0,
            in_string: false,
            escape: false,
            mode: Mode::Idle,
            max_message,
            text_replies: None,
            #[cfg(test)]
            scanned: 0,
        }
    }

    /// Keep successful replies of at least `min` bytes as text
    /// ([`Frame::Reply`] from [`next_frame_with_raw`](Decoder::next_frame_with_raw))
    /// instead of building their tree of values; `None` (the default):
    /// never.
    pub fn text_replies(&mut self, min: Option<usize>) {
        self.text_replies = min;
    }

    /// Append bytes received from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            // Drop consumed bytes; the unfinished tail is moved once per frame.
            self.buf.drain(..self.start);
            self.scan -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Drop everything buffered, including a partial message.
    pub fn reset(&mut self) {
        self.discard_buffer();
        self.mode = Mode::Idle;
    }

    /// Bytes currently held in the buffer.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Next complete frame, if any. `Ok(Object)` for a JSON object.
    pub fn next_message(&mut self) -> Option<Result<Object, FrameError>> {
        self.next_message_with_raw(&mut |_| {})
    }

    /// Like [`next_message`](Decoder::next_message), but first passes the raw
    /// bytes of the frame to `raw` (for logging). `raw` is not called for
    /// frames discarded as [`FrameError::TooLarge`].
    pub fn next_message_with_raw(
        &mut self,
        raw: &mut dyn FnMut(&[u8]),
    ) -> Option<Result<Object, FrameError>> {
        match self.next_frame_inner(raw, None)? {
            Frame::Message(result) => Some(result),
            Frame::Reply(reply) => Some(Ok(reply.into_body())),
        }
    }

    /// Like [`next_message_with_raw`](Decoder::next_message_with_raw), but
    /// a successful reply as long as [`Decoder::text_replies`] says is kept
    /// as text ([`Frame::Reply`]).
    pub fn next_frame_with_raw(&mut self, raw: &mut dyn FnMut(&[u8])) -> Option<Frame> {
        self.next_frame_inner(raw, self.text_replies)
    }

    fn next_frame_inner(
        &mut self,
        raw: &mut dyn FnMut(&[u8]),
        text_replies: Option<usize>,
    ) -> Option<Frame> {
        loop {
            match self.mode {
                Mode::Idle => {
                    let rest = &self.buf[self.start..];
                    let ws = rest
                        .iter()
                        .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                        .unwrap_or(rest.len());
                    self.start += ws;
                    self.scan = self.start;
                    match self.buf.get(self.start) {
                        None => {
                            self.buf.clear();
                            if self.buf.capacity() > RETAINED_CAPACITY {
                                // Do not keep the memory of a huge message forever.
                                self.buf.shrink_to(RETAINED_CAPACITY);
                            }
                            self.start = 0;
                            self.scan = 0;
                            return None;
                        }
                        Some(b'{') | Some(b'[') => {
                            self.mode = Mode::Value;
                            self.depth = 0;
                            self.deepest = 0;
                            self.in_string = false;
                            self.escape = false;
                        }
                        Some(_) => self.mode = Mode::Line,
                    }
                }
                Mode::Value => {
                    let end = self.scan_value();
                    match end {
                        Some(end) if end - self.start > self.max_message => {
                            self.start = end;
                            self.scan = end;
                            self.mode = Mode::Idle;
                            return Some(Frame::Message(Err(FrameError::TooLarge {
                                limit: self.max_message,
                            })));
                        }
                        Some(end) => {
                            let frame = &self.buf[self.start..end];
                            raw(frame);
                            let result = match text_replies {
                                // Deep nesting is left to the tree, which
                                // refuses what it refuses.
                                Some(min) if frame.len() >= min && self.deepest <= TEXT_DEPTH => {
                                    text_reply(frame).map_or_else(
                                        || Frame::Message(parse_container(frame)),
                                        Frame::Reply,
                                    )
                                }
                                _ => Frame::Message(parse_container(frame)),
                            };
                            self.start = end;
                            self.scan = end;
                            self.mode = Mode::Idle;
                            return Some(result);
                        }
                        None => {
                            if self.scan - self.start > self.max_message {
                                self.discard_buffer();
                                self.mode = Mode::SkipValue;
                            } else {
                                return None;
                            }
                        }
                    }
                }
                Mode::SkipValue => {
                    let end = self.scan_value();
                    self.discard_buffer_until(end);
                    if end.is_some() {
                        self.mode = Mode::Idle;
                        return Some(Frame::Message(Err(FrameError::TooLarge {
                            limit: self.max_message,
                        })));
                    }
                    return None;
                }
                Mode::Line => match self.find_newline() {
                    Some(nl) if nl - self.start > self.max_message => {
                        self.start = nl + 1;
                        self.scan = nl + 1;
                        self.mode = Mode::Idle;
                        return Some(Frame::Message(Err(FrameError::TooLarge {
                            limit: self.max_message,
                        })));
                    }
                    Some(nl) => {
                        let frame = &self.buf[self.start..nl + 1];
                        raw(trim_end(frame));
                        let result = parse_line(frame);
                        self.start = nl + 1;
                        self.scan = nl + 1;
                        self.mode = Mode::Idle;
                        return Some(Frame::Message(Err(result)));
                    }
                    None => {
                        if self.scan - self.start > self.max_message {
                            self.discard_buffer();
                            self.mode = Mode::SkipLine;
                        } else {
                            return None;
                        }
                    }
                },
                Mode::SkipLine => {
                    let nl = self.find_newline();
                    self.discard_buffer_until(nl.map(|n| n + 1));
                    if nl.is_some() {
                        self.mode = Mode::Idle;
                        return Some(Frame::Message(Err(FrameError::TooLarge {
                            limit: self.max_message,
                        })));
                    }
                    return None;
                }
            }
        }
    }

    /// Drop everything buffered (the start of an oversized frame).
    fn discard_buffer(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.scan = 0;
    }

    /// Drop the buffer up to `end` (exclusive), or all of it if `None`.
    fn discard_buffer_until(&mut self, end: Option<usize>) {
        match end {
            Some(end) => {
                self.buf.drain(..end);
                self.start = 0;
                self.scan = 0;
            }
            None => self.discard_buffer(),
        }
    }

    /// Find the next `\n` at or after the scan position, remembering how far
    /// was searched. Returns its index.
    fn find_newline(&mut self) -> Option<usize> {
        match self.buf[self.scan..].iter().position(|&b| b == b'\n') {
            Some(i) => Some(self.scan + i),
            None => {
                #[cfg(test)]
                {
                    self.scanned += self.buf.len() - self.scan;
                }
                self.scan = self.buf.len();
                None
            }
        }
    }

    /// Continue scanning an object or array. Returns the index just past its
    /// closing bracket once found; otherwise remembers the state and returns
    /// `None` (having scanned everything buffered).
    fn scan_value(&mut self) -> Option<usize> {
        let buf = &self.buf;
        let len = buf.len();
        let mut i = self.scan;
        let mut depth = self.depth;
        let mut deepest = self.deepest;
        let mut in_string = self.in_string;
        let mut escape = self.escape;
        let mut found = None;
        while i < len {
            if in_string {
                if escape {
                    escape = false;
                    i += 1;
                    continue;
                }
                // Fast skip to the next quote or backslash.
                match buf[i..].iter().position(|&b| b == b'"' || b == b'\\') {
                    None => {
                        i = len;
                        break;
                    }
                    Some(off) => {
                        i += off;
                        if buf[i] == b'\\' {
                            escape = true;
                        } else {
                            in_string = false;
                        }
                        i += 1;
                    }
                }
                continue;
            }
            match buf[i] {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b'}' | b']' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        found = Some(i + 1);
                        i += 1;
                        break;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        #[cfg(test)]
        {
            self.scanned += i - self.scan;
        }
        self.scan = i;
        self.depth = depth;
        self.deepest = deepest;
        self.in_string = in_string;
        self.escape = escape;
        found
    }
}

/// The frame without trailing whitespace.
fn trim_end(frame: &[u8]) -> &[u8] {
    let keep = frame
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |p| p + 1);
    &frame[..keep]
}

/// The members of a JSON object, each value as its text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// `frame` kept as text: a reply with one `"return"`, its other members
/// read, when it is one (valid JSON, an object with one `"return"`, no
/// `"QMP"` and no key twice); otherwise `None` (the frame is then read as
/// usual, which gives the same object or says what is wrong).
fn text_reply(frame: &[u8]) -> Option<Reply> {
    let text = std::str::from_utf8(frame).ok()?;
    // Reading the members checks the whole text, values included, as
    // reading it into a tree would (nesting limit too).
    let Members(members) = serde_json::from_str(text).ok()?;
    let mut others = Object::new();
    let mut ret = None;
    for (key, value) in &members {
        if key == "QMP" || others.contains_key(key.as_str()) {
            return None;
        }
        if key == "return" {
            if ret.is_some() {
                return None;
            }
            let at = value.get().as_ptr() as usize - text.as_ptr() as usize;
            ret = Some(at..at + value.get().len());
        } else {
            others.insert(key.clone(), serde_json::from_str(value.get()).ok()?);
        }
    }
    let ret = ret?;
    Some(Reply::from_text(Arc::from(text), ret, others))
}

fn parse_container(frame: &[u8]) -> Result<Object, FrameError> {
    let text = std::str::from_utf8(frame).map_err(|_| FrameError::InvalidUtf8)?;
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(FrameError::NotAnObject {
            text: truncate(text, TEXT_IN_ERRORS),
        }),
        Err(e) => Err(FrameError::NotJson {
            text: truncate(text, TEXT_IN_ERRORS),
            reason: e.to_string(),
        }),
    }
}

/// A line that does not start with `{` or `[` can never be an object.
fn parse_line(frame: &[u8]) -> FrameError {
    let Ok(text) = std::str::from_utf8(frame) else {
        return FrameError::InvalidUtf8;
    };
    let text = text.trim_end();
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(_) => FrameError::NotAnObject {
            text: truncate(text, TEXT_IN_ERRORS),
        },
        Err(e) => FrameError::NotJson {
            text: truncate(text, TEXT_IN_ERRORS),
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Frame {
        fn object(&self) -> &Object {
            match self {
                Frame::Message(Ok(o)) => o,
                other => panic!("{other:?}"),
            }
        }
    }

    fn all(d: &mut Decoder) -> Vec<Result<Object, FrameError>> {
        std::iter::from_fn(|| d.next_message()).collect()
    }

    fn text(r: &Result<Object, FrameError>) -> String {
        match r {
            Ok(o) => serde_json::to_string(o).unwrap(),
            Err(e) => format!("ERR {e:?}"),
        }
    }

    /// Frames as `next_frame_with_raw` gives them, with their raw text.
    fn frames(d: &mut Decoder) -> Vec<(Frame, String)> {
        let mut out = Vec::new();
        loop {
            let mut raw = String::new();
            let Some(f) = d.next_frame_with_raw(&mut |r| raw = String::from_utf8_lossy(r).into())
            else {
                return out;
            };
            out.push((f, raw));
        }
    }

    #[test]
    fn large_replies_are_kept_as_text_only_when_asked_and_read_the_same() {
        let big = "x".repeat(100);
        let reply = format!(
            r#"{{"id": {{"n": [1, 2.50]}}, "return": [{{"b": "{big}", "a": 1e3}}, "\u00e9"], "z": null}}"#
        );
        let input = format!("{reply}\r\n{{\"return\": {{}}, \"id\": 2}}\r\n");
        // Not asked: every frame is an object.
        let mut d = Decoder::new(1 << 20);
        d.feed(input.as_bytes());
        let plain = frames(&mut d);
        assert!(plain
            .iter()
            .all(|(f, _)| matches!(f, Frame::Message(Ok(_)))));
        // Asked: the large one is kept as text, the small one is not.
        let mut d = Decoder::new(1 << 20);
        d.text_replies(Some(100));
        d.feed(input.as_bytes());
        let got = frames(&mut d);
        assert_eq!(got.len(), 2);
        let (Frame::Reply(kept), raw) = &got[0] else {
            panic!("{:?}", got[0]);
        };
        assert_eq!(raw, &reply);
        assert_eq!(kept.text(), Some(reply.as_str()));
        assert_eq!(
            serde_json::to_string(&kept.body).unwrap(),
            r#"{"id":{"n":[1,2.50]},"z":null}"#
        );
        assert_eq!(kept.id(), plain[0].0.object().get("id"));
        assert_eq!(kept.ret(), plain[0].0.object().get("return"));
        assert!(!kept.is_error());
        assert_eq!(&kept.clone().into_body(), plain[0].0.object());
        assert_eq!(got[1].0, plain[1].0);
    }

    #[test]
    fn what_is_not_a_plain_reply_is_read_as_before() {
        let pad = "p".repeat(64);
        let cases = [
            // No "return", a greeting, a key twice, "return" twice, not
            // JSON, not an object, nested too deep.
            format!(r#"{{"error": {{"class": "E", "desc": "{pad}"}}}}"#),
            format!(r#"{{"QMP": {{}}, "return": "{pad}"}}"#),
            format!(r#"{{"id": 1, "return": "{pad}", "id": 2}}"#),
            format!(r#"{{"return": 1, "return": "{pad}"}}"#),
            format!(r#"{{"return": "{pad}", "x": tru}}"#),
            format!(r#"["return", "{pad}"]"#),
            format!(
                r#"{{"return": {}"{pad}"{}}}"#,
                "[".repeat(200),
                "]".repeat(200)
            ),
        ];
        for case in cases {
            let mut eager = Decoder::new(1 << 20);
            eager.feed(case.as_bytes());
            let want = eager.next_message().unwrap();
            let mut d = Decoder::new(1 << 20);
            d.text_replies(Some(10));
            d.feed(case.as_bytes());
            assert_eq!(
                d.next_frame_with_raw(&mut |_| {}),
                Some(Frame::Message(want)),
                "{case}"
            );
        }
    }

    #[test]
    fn whole_and_back_to_back() {
        let mut d = Decoder::new(1 << 20);
        d.feed(b"{\"a\": 1}\r\n{\"b\": [1, {\"c\": 2}]}{\"d\":3}  \n");
        let got: Vec<_> = all(&mut d).iter().map(text).collect();
        assert_eq!(
            got,
            vec![r#"{"a":1}"#, r#"{"b":[1,{"c":2}]}"#, r#"{"d":3}"#]
        );
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn split_across_feeds() {
        let input = b"{\"return\": {\"status\": \"running\", \"x\": \"}{\\\"\"}}\r\n{\"event\": \"STOP\"}\r\n";
        for cut in 0..input.len() {
            let mut d = Decoder::new(1 << 20);
            d.feed(&input[..cut]);
            let mut got = all(&mut d);
            d.feed(&input[cut..]);
            got.extend(all(&mut d));
            let got: Vec<_> = got.iter().map(text).collect();
            assert_eq!(
                got,
                vec![
                    r#"{"return":{"status":"running","x":"}{\""}}"#,
                    r#"{"event":"STOP"}"#
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let input = br#"{"s": "a \\\" b { [ ] } \\\\", "n": [[[]]], "u": "\u00e9"} ["x"] 42
{"last": true}"#;
        let mut d = Decoder::new(1 << 20);
        let mut got = Vec::new();
        for b in input.iter() {
            d.feed(std::slice::from_ref(b));
            got.extend(all(&mut d));
        }
        let got: Vec<_> = got.iter().map(text).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(
            got[0],
            r#"{"s":"a \\\" b { [ ] } \\\\","n":[[[]]],"u":"é"}"#
        );
        assert!(got[1].starts_with("ERR NotAnObject"), "{}", got[1]);
        // `42\n` is a non-object scalar line.
        assert!(got[2].starts_with("ERR NotAnObject"), "{}", got[2]);
        // The last object has no terminator after `}`: it is complete anyway.
        assert_eq!(got[3], r#"{"last":true}"#);
    }

    #[test]
    fn garbage_lines_then_recovery() {
        let mut d = Decoder::new(1 << 20);
        d.feed(b"hello world\n  nul\n\"str\"\n{\"ok\": 1}\n");
        let got = all(&mut d);
        assert_eq!(got.len(), 4);
        match &got[0] {
            Err(FrameError::NotJson { text, reason }) => {
                assert_eq!(text, "hello world");
                assert!(!reason.is_empty());
            }
            r => panic!("{r:?}"),
        }
        assert!(matches!(&got[1], Err(FrameError::NotJson { text, .. }) if text == "nul"));
        assert!(matches!(&got[2], Err(FrameError::NotAnObject { text }) if text == "\"str\""));
        assert_eq!(text(&got[3]), r#"{"ok":1}"#);
    }

    #[test]
    fn invalid_json_inside_brackets() {
        let mut d = Decoder::new(1 << 20);
        d.feed(b"{\"a\" 1}\n{\"b\": 2}\n");
        let got = all(&mut d);
        assert!(matches!(got[0], Err(FrameError::NotJson { .. })));
        assert_eq!(text(&got[1]), r#"{"b":2}"#);
    }

    #[test]
    fn long_text_is_truncated_in_errors() {
        let mut d = Decoder::new(1 << 20);
        let line = format!("{}\n", "x".repeat(500));
        d.feed(line.as_bytes());
        match d.next_message() {
            Some(Err(FrameError::NotJson { text, .. })) => {
                assert!(text.chars().count() <= 83, "{}", text.len());
                assert!(text.ends_with("..."));
            }
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn non_object() {
        let mut d = Decoder::new(1 << 20);
        d.feed(b"[1]\n42\n[]");
        let got = all(&mut d);
        assert_eq!(got.len(), 3);
        assert!(got
            .iter()
            .all(|r| matches!(r, Err(FrameError::NotAnObject { .. }))));
    }

    #[test]
    fn invalid_utf8() {
        let mut d = Decoder::new(1 << 20);
        d.feed(b"{\"a\": \"\xff\xfe\"}\n\xff\n{\"b\": 1}");
        let got = all(&mut d);
        assert_eq!(got[0], Err(FrameError::InvalidUtf8));
        assert_eq!(got[1], Err(FrameError::InvalidUtf8));
        assert_eq!(text(&got[2]), r#"{"b":1}"#);
    }

    #[test]
    fn too_large_is_discarded_without_buffering() {
        let limit = 1000;
        let mut d = Decoder::new(limit);
        d.feed(b"{\"small\": 1}\n");
        let mut results = all(&mut d);
        // A 100 KB object with tricky strings, fed in small pieces.
        let mut big = String::from("{\"data\": [");
        for i in 0..5000 {
            big.push_str(&format!("\"}}]{i}\\\"\", "));
        }
        big.push_str("0]}\r\n{\"after\": true}\n");
        for chunk in big.as_bytes().chunks(97) {
            d.feed(chunk);
            results.extend(all(&mut d));
            assert!(d.buffered() <= limit + 97 + 2, "{}", d.buffered());
        }
        let got: Vec<_> = results.iter().map(text).collect();
        assert_eq!(
            got,
            vec![
                r#"{"small":1}"#.to_owned(),
                "ERR TooLarge { limit: 1000 }".to_owned(),
                r#"{"after":true}"#.to_owned()
            ]
        );
    }

    #[test]
    fn too_large_line_is_discarded() {
        let limit = 100;
        let mut d = Decoder::new(limit);
        let mut results = Vec::new();
        for _ in 0..50 {
            d.feed(&[b'x'; 64]);
            results.extend(all(&mut d));
            assert!(d.buffered() <= limit + 64 + 1);
        }
        d.feed(b"\n{\"a\": 1}\n");
        results.extend(all(&mut d));
        let got: Vec<_> = results.iter().map(text).collect();
        assert_eq!(
            got,
            vec![
                "ERR TooLarge { limit: 100 }".to_owned(),
                r#"{"a":1}"#.to_owned()
            ]
        );
    }

    #[test]
    fn exactly_at_limit_is_accepted() {
        let msg = b"{\"a\": \"0123456789\"}";
        let mut d = Decoder::new(msg.len());
        d.feed(msg);
        d.feed(b"\n");
        assert!(matches!(d.next_message(), Some(Ok(_))));
        let mut d = Decoder::new(msg.len() - 1);
        d.feed(msg);
        assert!(matches!(
            d.next_message(),
            Some(Err(FrameError::TooLarge { .. }))
        ));
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let n = 200_000;
        let mut input = "[".repeat(n);
        input.push_str(&"]".repeat(n));
        input.push_str("\n{\"after\": 1}\n");
        let mut d = Decoder::new(1 << 20);
        // Half of it in a first feed: the scan state must survive.
        d.feed(&input.as_bytes()[..n]);
        assert!(d.next_message().is_none());
        d.feed(&input.as_bytes()[n..]);
        let got = all(&mut d);
        assert_eq!(got.len(), 2);
        assert!(
            matches!(got[0], Err(FrameError::NotJson { .. })),
            "{:?}",
            got[0]
        );
        assert_eq!(text(&got[1]), r#"{"after":1}"#);
        // The same with objects.
        let mut input = "{\"a\":".repeat(n);
        input.push('1');
        input.push_str(&"}".repeat(n));
        let mut d = Decoder::new(1 << 22);
        d.feed(input.as_bytes());
        assert!(matches!(
            d.next_message(),
            Some(Err(FrameError::NotJson { .. }))
        ));
    }

    #[test]
    fn duplicate_keys_first_position_last_value() {
        let mut d = Decoder::new(1 << 20);
        d.feed(br#"{"a": 1, "b": 2, "a": 3}"#);
        let obj = d.next_message().unwrap().unwrap();
        assert_eq!(serde_json::to_string(&obj).unwrap(), r#"{"a":3,"b":2}"#);
    }

    #[test]
    fn numbers_are_kept_exactly() {
        let mut d = Decoder::new(1 << 20);
        d.feed(br#"{"big": 18446744073709551616123, "f": 1.50, "e": 1e400}"#);
        let obj = d.next_message().unwrap().unwrap();
        assert_eq!(
            serde_json::to_string(&obj).unwrap(),
            r#"{"big":18446744073709551616123,"f":1.50,"e":1e+400}"#
        );
    }

    #[test]
    fn raw_callback_sees_trimmed_frame() {
        let mut d = Decoder::new(1 << 20);
        d.feed(b"  {\"a\":  1}\r\n junk \r\n");
        let mut seen = Vec::new();
        while let Some(_r) = d.next_message_with_raw(&mut |raw| seen.push(raw.to_vec())) {}
        assert_eq!(seen, vec![b"{\"a\":  1}".to_vec(), b"junk".to_vec()]);
    }

    #[test]
    fn large_message_in_small_pieces_is_linear() {
        // 16 MiB in 4 KiB pieces.
        let mut big = String::from("{\"return\": [");
        while big.len() < 16 << 20 {
            big.push_str("{\"name\": \"abc\\\"def\", \"v\": [1, 2, 3]}, ");
        }
        big.push_str("0]}\r\n");
        let mut d = Decoder::new(256 << 20);
        let mut n = 0;
        for chunk in big.as_bytes().chunks(4096) {
            d.feed(chunk);
            while let Some(r) = d.next_message() {
                assert!(r.is_ok());
                n += 1;
            }
        }
        assert_eq!(n, 1);
        // Each byte examined once: a decoder rescanning the frame from its
        // start at every piece would count thousands of times more.
        assert!(d.scanned <= big.len(), "{} for {}", d.scanned, big.len());
    }

    #[test]
    fn encode_is_compact_with_newline() {
        let obj: Object = serde_json::from_str(r#"{ "execute" : "stop", "id": 1 }"#).unwrap();
        assert_eq!(encode(&obj), b"{\"execute\":\"stop\",\"id\":1}\n");
    }
}
