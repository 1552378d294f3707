//! Raw JSON messages typed over several lines: where a message ends.
//!
//! A line starting with `{` is a raw JSON message; it goes on over the
//! following lines until its braces and brackets balance. The terminal's
//! line editor asks this to know whether to read another line, the session
//! engine to know when a message is whole (and how large it is).

/// Whether `text` starts a raw JSON message (`{`) whose braces and brackets
/// are not yet balanced (strings and escapes are taken into account).
pub fn raw_json_incomplete(text: &str) -> bool {
    let text = text.trim_start();
    if !text.starts_with('{') {
        return false;
    }
    let mut scan = JsonScan::default();
    scan.feed(text);
    scan.incomplete()
}

/// Where a scan for the end of a raw JSON message stands, fed piece by
/// piece (each byte is looked at once, however many lines the message
/// takes): the depth of braces and brackets, whether it is inside a string,
/// just after a backslash, and how many JSON tokens it has at least.
#[derive(Debug, Default, Clone)]
pub struct JsonScan {
    depth: i64,
    in_string: bool,
    escaped: bool,
    tokens: u64,
}

impl JsonScan {
    /// Take in the next piece of the message. The structural characters
    /// are ASCII, which no byte of a multi-byte UTF-8 character can be.
    pub fn feed(&mut self, text: &str) {
        // Locals, not fields, in the loop: it runs over every byte.
        let (mut depth, mut in_string, mut escaped, mut tokens) =
            (self.depth, self.in_string, self.escaped, self.tokens);
        for &b in text.as_bytes() {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
                continue;
            }
            match b {
                b'"' => {
                    in_string = true;
                    tokens += 1;
                }
                b'{' | b'[' => {
                    depth += 1;
                    tokens += 1;
                }
                b'}' | b']' => {
                    depth -= 1;
                    tokens += 1;
                }
                b',' | b':' => tokens += 1,
                _ => {}
            }
        }
        (self.depth, self.in_string, self.escaped, self.tokens) =
            (depth, in_string, escaped, tokens);
    }

    /// How many tokens the message has at least (strings and punctuation;
    /// each number, `true`, `false` and `null` is one more, not counted).
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Whether the braces and brackets fed so far are not balanced yet.
    pub fn incomplete(&self) -> bool {
        self.depth > 0 || self.in_string
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_json_balance() {
        assert!(raw_json_incomplete("{"));
        assert!(raw_json_incomplete(
            "  {\"execute\": \"x\", \"arguments\": {"
        ));
        assert!(raw_json_incomplete("{\"a\": \"}\""));
        assert!(raw_json_incomplete("{\"a\": \"\\\"}"));
        assert!(!raw_json_incomplete("{\"execute\": \"query-status\"}"));
        assert!(!raw_json_incomplete("{\"a\": \"{\"}"));
        assert!(!raw_json_incomplete("query-status"));
        assert!(!raw_json_incomplete("}"));
        // Fed a line at a time, as the session does.
        let mut scan = JsonScan::default();
        for (piece, open) in [
            ("{\"execute\": \"x\", \"arguments\": {\"s\": \"a\\\"", true),
            ("}\"", true),
            ("}", true),
            ("}", false),
        ] {
            scan.feed(piece);
            assert_eq!(scan.incomplete(), open, "{piece}");
        }
    }
}
