//! Rendering JSON text straight from its bytes, without a tree of values.
//!
//! The output is exactly what [`super::to_string`] prints for the value
//! `serde_json` reads from the same text (keys in the text's order for
//! compact, sorted for pretty, a key given twice keeping its first place
//! and its last value, as a Python `dict` does). The text is read once,
//! tokens are written as they are read; only the members of each object
//! are kept aside (where their rendering starts and ends in the output, and
//! the key), so that an object whose keys must be reordered is rewritten
//! once its end is seen. Nothing is allocated per value: a large reply
//! (`query-qmp-schema`) costs a pass over its text and a copy per level of
//! nesting of the objects that get reordered.

use super::{write_float, write_integer, write_string, Style};
use super::{KEY_COLOR, LITERAL_COLOR, NUMBER_COLOR, RESET, STRING_COLOR};

/// Containers nested deeper than this are left to the tree path (which
/// refuses what `serde_json` refuses): never reached by QEMU.
const MAX_DEPTH: usize = 100;

/// An open container.
enum Frame {
    /// An array with `count` elements so far.
    Array { count: usize },
    /// An object: its text starts at `content` (just after the `{`), its
    /// members are `members[base..]`.
    Object { content: usize, base: usize },
}

/// Where a key's text is: in the input (no escapes in it) or decoded in
/// the side buffer.
#[derive(Clone, Copy)]
enum Key {
    Input(usize, usize),
    Decoded(usize, usize),
}

/// One member of an open object: its key, and where its rendering (from
/// the key to the end of the value, without separators) is in the output.
struct Member {
    key: Key,
    start: usize,
    end: usize,
}

struct Raw<'a> {
    text: &'a str,
    pos: usize,
    out: String,
    pretty: bool,
    color: bool,
    omit: Option<&'a str>,
    frames: Vec<Frame>,
    members: Vec<Member>,
    /// Keys with escapes, decoded.
    keys: String,
    /// A string value with escapes or non-ASCII text, decoded.
    scratch: String,
    /// A reordered object's members.
    reordered: String,
}

/// Bytes that a string may hold and that Python's `json.dumps` writes as
/// they are: printable ASCII but `"` and `\`.
static PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0x20;
    while i < 0x7f {
        table[i] = true;
        i += 1;
    }
    table[b'"' as usize] = false;
    table[b'\\' as usize] = false;
    table
};

/// The Python `json.dumps` rendering of the JSON text `json` (one value,
/// with whitespace around it), as [`super::to_string`] renders the value
/// that `serde_json` reads from it; with `omit`, that key of the outermost
/// object is left out (the id the client added to a command, say). `None`
/// when `json` is not such a text (nothing is lost: the caller then parses
/// it and renders the tree, which reports the error as before).
pub fn render(json: &[u8], style: Style, omit: Option<&str>) -> Option<String> {
    let text = std::str::from_utf8(json).ok()?;
    let mut raw = Raw {
        text,
        pos: 0,
        out: String::with_capacity(capacity(json.len(), style)),
        pretty: style.pretty,
        color: style.color,
        omit,
        frames: Vec::new(),
        members: Vec::new(),
        keys: String::new(),
        scratch: String::new(),
        reordered: String::new(),
    };
    raw.run()?;
    Some(raw.out)
}

/// A guess of the output size: pretty output of QEMU's replies is about
/// 2.6 times the compact text.
fn capacity(len: usize, style: Style) -> usize {
    let factor = if style.pretty { 3 } else { 1 };
    len.saturating_mul(factor).saturating_add(64)
}

impl Raw<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// Consume `byte` (after whitespace) or fail.
    fn expect(&mut self, byte: u8) -> Option<()> {
        self.skip_ws();
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    fn newline(&mut self, depth: usize) {
        const SPACES: &str = "                                                                ";
        self.out.push('\n');
        let mut n = depth.saturating_mul(4);
        while n > 0 {
            let chunk = n.min(SPACES.len());
            self.out.push_str(SPACES.get(..chunk).unwrap_or_default());
            n -= chunk;
        }
    }

    /// What goes before item `index` of a container at `depth`.
    fn separator(&mut self, index: usize, depth: usize) {
        if index > 0 {
            self.out.push(',');
            if !self.pretty {
                self.out.push(' ');
            }
        }
        if self.pretty {
            self.newline(depth);
        }
    }

    fn colored(&mut self, color: &'static str, write: impl FnOnce(&mut Self)) {
        if self.color {
            self.out.push_str(color);
            write(self);
            self.out.push_str(RESET);
        } else {
            write(self);
        }
    }

    fn run(&mut self) -> Option<()> {
        self.skip_ws();
        self.value()?;
        loop {
            self.skip_ws();
            let depth = self.frames.len();
            let next = self.peek();
            match self.frames.last_mut() {
                None => return (self.pos == self.text.len()).then_some(()),
                Some(Frame::Array { count }) => {
                    let index = *count;
                    match next? {
                        b',' => {
                            self.pos += 1;
                            *count += 1;
                            self.separator(index, depth);
                            self.skip_ws();
                            self.value()?;
                        }
                        b']' => {
                            self.pos += 1;
                            self.frames.pop();
                            if self.pretty {
                                self.newline(depth - 1);
                            }
                            self.out.push(']');
                        }
                        _ => return None,
                    }
                }
                Some(Frame::Object { .. }) => {
                    let end = self.out.len();
                    if let Some(member) = self.members.last_mut() {
                        member.end = end;
                    }
                    match next? {
                        b',' => {
                            self.pos += 1;
                            self.member()?;
                        }
                        b'}' => {
                            self.pos += 1;
                            self.close_object()?;
                        }
                        _ => return None,
                    }
                }
            }
        }
    }

    /// A value at the current position: a scalar whole, or the opening of
    /// a container and its first item up to that item's value.
    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' => {
                self.pos += 1;
                self.out.push('{');
                self.skip_ws();
                if self.peek()? == b'}' {
                    self.pos += 1;
                    self.out.push('}');
                    return Some(());
                }
                self.open(Frame::Object {
                    content: self.out.len(),
                    base: self.members.len(),
                })?;
                self.member()
            }
            b'[' => {
                self.pos += 1;
                self.out.push('[');
                self.skip_ws();
                if self.peek()? == b']' {
                    self.pos += 1;
                    self.out.push(']');
                    return Some(());
                }
                self.open(Frame::Array { count: 1 })?;
                self.separator(0, self.frames.len());
                self.skip_ws();
                self.value()
            }
            b'"' => {
                if self.color {
                    self.out.push_str(STRING_COLOR);
                }
                self.string(false)?;
                if self.color {
                    self.out.push_str(RESET);
                }
                Some(())
            }
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn open(&mut self, frame: Frame) -> Option<()> {
        if self.frames.len() >= MAX_DEPTH {
            return None;
        }
        self.frames.push(frame);
        Some(())
    }

    fn literal(&mut self, word: &'static str) -> Option<()> {
        let rest = self.text.as_bytes().get(self.pos..)?;
        if !rest.starts_with(word.as_bytes()) {
            return None;
        }
        self.pos += word.len();
        self.colored(LITERAL_COLOR, |r| r.out.push_str(word));
        Some(())
    }

    /// A number, checked against JSON's grammar, written as Python prints
    /// what `json.loads` makes of it.
    fn number(&mut self) -> Option<()> {
        let bytes = self.text.as_bytes();
        let start = self.pos;
        let mut i = start;
        let digits = |i: &mut usize| {
            let from = *i;
            while bytes.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i > from
        };
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        match bytes.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                digits(&mut i);
            }
            _ => return None,
        }
        let mut float = false;
        if bytes.get(i) == Some(&b'.') {
            i += 1;
            float = true;
            if !digits(&mut i) {
                return None;
            }
        }
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            float = true;
            if matches!(bytes.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !digits(&mut i) {
                return None;
            }
        }
        let number = self.text.get(start..i)?;
        self.pos = i;
        self.colored(NUMBER_COLOR, |r| {
            if float {
                match number.parse::<f64>() {
                    Ok(f) => write_float(&mut r.out, f, true),
                    Err(_) => r.out.push_str(number),
                }
            } else {
                write_integer(&mut r.out, number);
            }
        });
        Some(())
    }

    /// The next member of the innermost object: separator, key, `: `; its
    /// value follows.
    fn member(&mut self) -> Option<()> {
        let depth = self.frames.len();
        let (index, _) = self.object_members()?;
        self.separator(index, depth);
        self.skip_ws();
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.out.len();
        if self.color {
            self.out.push_str(KEY_COLOR);
        }
        let key = self.string(true)?;
        if self.color {
            self.out.push_str(RESET);
        }
        self.out.push_str(": ");
        self.members.push(Member {
            key,
            start,
            end: start,
        });
        self.expect(b':')?;
        self.skip_ws();
        self.value()
    }

    /// How many members the innermost object has so far, and where they
    /// start in `members`.
    fn object_members(&self) -> Option<(usize, usize)> {
        match self.frames.last()? {
            Frame::Object { base, .. } => Some((self.members.len() - base, *base)),
            Frame::Array { .. } => None,
        }
    }

    fn key_bytes(&self, key: Key) -> &[u8] {
        let (text, from, to) = match key {
            Key::Input(from, to) => (self.text, from, to),
            Key::Decoded(from, to) => (self.keys.as_str(), from, to),
        };
        text.as_bytes().get(from..to).unwrap_or_default()
    }

    /// The end of the innermost object: its members rewritten when they
    /// must be reordered (pretty), merged (a key given twice) or left out
    /// (`omit`, outermost object only), then the closing bracket.
    fn close_object(&mut self) -> Option<()> {
        let depth = self.frames.len();
        let Some(Frame::Object { content, base }) = self.frames.pop() else {
            return None;
        };
        let members = self.members.get(base..)?;
        let omit = self.omit.filter(|_| depth == 1).map(str::as_bytes);
        let mut ordered = true;
        let mut unique = true;
        for (i, m) in members.iter().enumerate() {
            let key = self.key_bytes(m.key);
            if omit == Some(key) {
                ordered = false;
            }
            if let Some(prev) = i.checked_sub(1).and_then(|p| members.get(p)) {
                match self.key_bytes(prev.key).cmp(key) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => unique = false,
                    std::cmp::Ordering::Greater => {
                        if self.pretty {
                            ordered = false;
                        }
                    }
                }
            }
        }
        if unique && members.len() > 1 {
            // Unsorted keys may still repeat a key further apart.
            unique = !has_duplicates(members, |k| self.key_bytes(k));
        }
        if ordered && unique {
            if self.pretty {
                self.newline(depth - 1);
            }
            self.out.push('}');
            self.members.truncate(base);
            return Some(());
        }
        let order = self.order(base, omit);
        let mut reordered = std::mem::take(&mut self.reordered);
        reordered.clear();
        for (index, &i) in order.iter().enumerate() {
            let m = self.members.get(i)?;
            let text = self.out.get(m.start..m.end)?;
            if index > 0 {
                reordered.push(',');
                if !self.pretty {
                    reordered.push(' ');
                }
            }
            if self.pretty {
                reordered.push('\n');
                for _ in 0..depth {
                    reordered.push_str("    ");
                }
            }
            reordered.push_str(text);
        }
        self.out.truncate(content);
        self.out.push_str(&reordered);
        self.reordered = reordered;
        if self.pretty && !order.is_empty() {
            self.newline(depth - 1);
        }
        self.out.push('}');
        self.members.truncate(base);
        Some(())
    }

    /// The members of the object whose members start at `base`, as indices
    /// into `members`, in the order they are printed: a key given twice
    /// once, with its last value, at its first place (sorted by key when
    /// pretty); `omit` left out.
    fn order(&self, base: usize, omit: Option<&[u8]>) -> Vec<usize> {
        let count = self.members.len() - base;
        let key = |i: usize| {
            self.members
                .get(i)
                .map_or(&[][..], |m| self.key_bytes(m.key))
        };
        // Sorted by key, then position: runs of one key, last value last.
        let mut by_key: Vec<usize> = (base..base + count).collect();
        by_key.sort_by(|&a, &b| key(a).cmp(key(b)).then(a.cmp(&b)));
        let mut order: Vec<(usize, usize)> = Vec::with_capacity(count);
        let mut i = 0;
        while i < by_key.len() {
            let first = by_key[i];
            let mut last = first;
            while by_key.get(i + 1).is_some_and(|&n| key(n) == key(first)) {
                i += 1;
                last = by_key[i];
            }
            i += 1;
            if omit != Some(key(first)) {
                // Placed where the key first came, holding its last value.
                order.push((first, last));
            }
        }
        if !self.pretty {
            order.sort_unstable_by_key(|&(first, _)| first);
        }
        order.into_iter().map(|(_, last)| last).collect()
    }

    /// A string at the current position (its opening quote), written as
    /// `json.dumps` writes it. For a key, where its text is.
    fn string(&mut self, key: bool) -> Option<Key> {
        let bytes = self.text.as_bytes();
        let start = self.pos + 1;
        let mut i = start;
        while bytes.get(i).is_some_and(|&b| PLAIN[usize::from(b)]) {
            i += 1;
        }
        if bytes.get(i) == Some(&b'"') {
            // Printable ASCII only: the rendering is the text itself.
            let span = self.text.get(self.pos..=i)?;
            self.out.push_str(span);
            self.pos = i + 1;
            return Some(Key::Input(start, i));
        }
        let mut decoded = std::mem::take(&mut self.scratch);
        decoded.clear();
        decoded.push_str(self.text.get(start..i)?);
        let end = decode(self.text, i, &mut decoded);
        let result = end.map(|end| {
            self.pos = end;
            write_string(&mut self.out, &decoded);
            if key {
                let from = self.keys.len();
                self.keys.push_str(&decoded);
                Key::Decoded(from, self.keys.len())
            } else {
                Key::Input(0, 0)
            }
        });
        self.scratch = decoded;
        result
    }
}

/// Whether two members share a key (for objects whose keys are not in
/// order, where neighbours tell nothing).
fn has_duplicates<'k>(members: &[Member], key: impl Fn(Key) -> &'k [u8]) -> bool {
    if members.len() <= 8 {
        return members
            .iter()
            .enumerate()
            .any(|(i, a)| members.iter().skip(i + 1).any(|b| key(a.key) == key(b.key)));
    }
    let mut keys: Vec<&[u8]> = members.iter().map(|m| key(m.key)).collect();
    keys.sort_unstable();
    keys.windows(2).any(|w| w[0] == w[1])
}

/// Decode the rest of a JSON string from `text[i..]` (inside the quotes)
/// into `out`, as `serde_json` reads it: escapes, a surrogate pair as one
/// character; a lone surrogate, a control character or a bad escape is an
/// error. Returns the position just past the closing quote.
fn decode(text: &str, mut i: usize, out: &mut String) -> Option<usize> {
    let bytes = text.as_bytes();
    loop {
        let run = i;
        while bytes
            .get(i)
            .is_some_and(|&b| b != b'"' && b != b'\\' && b >= 0x20)
        {
            i += 1;
        }
        out.push_str(text.get(run..i)?);
        match bytes.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => {
                let letter = *bytes.get(i + 1)?;
                i += 2;
                let c = match letter {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    b'u' => {
                        let unit = hex4(bytes, i)?;
                        i += 4;
                        match unit {
                            0xd800..=0xdbff => {
                                if bytes.get(i..i + 2)? != b"\\u" {
                                    return None;
                                }
                                let low = hex4(bytes, i + 2)?;
                                if !(0xdc00..=0xdfff).contains(&low) {
                                    return None;
                                }
                                i += 6;
                                let code = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
                                char::from_u32(code)?
                            }
                            0xdc00..=0xdfff => return None,
                            _ => char::from_u32(unit)?,
                        }
                    }
                    _ => return None,
                };
                out.push(c);
            }
            // A control character inside a string is not JSON.
            _ => return None,
        }
    }
}

/// Four hex digits at `bytes[i..]`.
fn hex4(bytes: &[u8], i: usize) -> Option<u32> {
    let digits = bytes.get(i..i + 4)?;
    let mut v = 0u32;
    for &d in digits {
        v = v * 16 + char::from(d).to_digit(16)?;
    }
    Some(v)
}
