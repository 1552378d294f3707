//! Splitting a command line into raw tokens.
//!
//! The reference splits with
//! `re.findall(r'''(?:[^\s"']|"(?:\\.|[^"])*"|'(?:\\.|[^'])*')+''', line)`.
//! This is that pattern matched by hand, with Python's leftmost-first
//! semantics (the `regex` crate's too, against which a test checks it):
//! compiling a Unicode regex at start-up cost a one-command session more
//! time than the rest of its parsing. Python's `\s` is the Unicode
//! `White_Space` set ([`char::is_whitespace`]) plus the separators
//! U+001C..U+001F.
//!
//! A quoted run `"(?:\\.|[^"])*"` prefers, at each backslash, to take it
//! with the next character (any but a newline, the quote included), and
//! backtracks to the backslash alone only when no quote is left to end the
//! run after that pair: so a run ends at the first quote not taken by a
//! backslash, or, when that leaves it unclosed, at the last quote there is.

/// Whether Python's `\s` matches `c`.
fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Where the quoted run that starts at `start` (a `"` or `'`) in `hay`
/// ends (just past its closing quote), as `"(?:\\.|[^"])*"` (or its
/// single-quote twin) matches it; `last` is the position of the last such
/// quote in `hay`. `None` when the run is never closed.
fn quoted_run_end(hay: &[u8], start: usize, last: Option<usize>) -> Option<usize> {
    let quote = hay[start];
    let last = last.filter(|&l| l > start)?;
    // Invariant: p <= last, and hay[last] is the quote.
    let mut p = start + 1;
    loop {
        match hay[p] {
            b if b == quote => return Some(p + 1),
            // `\\.`: the backslash and the next character (UTF-8: its
            // first byte tells its length), unless that is a newline or
            // would pass the last quote; else `[^"]`, the backslash alone.
            b'\\' => {
                let len = match hay.get(p + 1) {
                    None | Some(b'\n') => 0,
                    Some(&b) if b < 0x80 => 1,
                    Some(&b) if b >= 0xf0 => 4,
                    Some(&b) if b >= 0xe0 => 3,
                    Some(_) => 2,
                };
                p += if len > 0 && p + len < last {
                    1 + len
                } else {
                    1
                };
            }
            // `[^"]`, a byte at a time (no byte of a multi-byte character
            // is a quote or a backslash).
            _ => p += 1,
        }
    }
}

/// The position of the last `"` and of the last `'` in `hay`.
fn last_quotes(hay: &[u8]) -> [Option<usize>; 2] {
    [
        hay.iter().rposition(|&b| b == b'"'),
        hay.iter().rposition(|&b| b == b'\''),
    ]
}

/// The last quote of the kind `quote` (`"` or `'`).
fn last_of(lasts: [Option<usize>; 2], quote: u8) -> Option<usize> {
    lasts[usize::from(quote == b'\'')]
}

/// Where the token that starts at `start` ends (`start` when none starts
/// there): `(?:[^\s"']|"..."|'...')+`, greedy.
fn token_end(line: &str, start: usize, lasts: [Option<usize>; 2]) -> usize {
    let hay = line.as_bytes();
    let mut p = start;
    while let Some(c) = line[p..].chars().next() {
        match c {
            '"' | '\'' => match quoted_run_end(hay, p, last_of(lasts, c as u8)) {
                Some(end) => p = end,
                None => break,
            },
            c if is_space(c) => break,
            c => p += c.len_utf8(),
        }
    }
    p
}

/// Split `line` into raw tokens exactly as the reference's `re.findall` does.
///
/// Tokens are runs of non-whitespace characters in which a `"..."` or
/// `'...'` run (where a backslash escapes the next character) may contain
/// whitespace. Quotes are kept in the tokens. A quote that is never closed
/// matches nothing and is skipped, as `findall` skips it.
///
/// ```
/// use qmp_shell::shorthand::tokenize;
/// assert_eq!(tokenize(r#"cmd a="x y" b=1"#), ["cmd", r#"a="x y""#, "b=1"]);
/// ```
pub fn tokenize(line: &str) -> Vec<String> {
    let lasts = last_quotes(line.as_bytes());
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(c) = line[pos..].chars().next() {
        let end = token_end(line, pos, lasts);
        if end > pos {
            out.push(line[pos..end].to_owned());
            pos = end;
        } else {
            pos += c.len_utf8();
        }
    }
    out
}

/// Remove the quotes of every quoted run in `raw` and resolve the backslash
/// escapes inside them (a backslash makes the next character literal).
///
/// Characters outside quotes are kept as they are, backslashes included. The
/// quoted runs are found as the tokenizer finds them (the same sub-pattern,
/// matched on what is left of `raw`), so a token is split into the same runs
/// the tokenizer saw. A quote character that starts no complete run
/// (possible only when this is called on text that did not come from
/// [`tokenize`]) is kept literally.
pub fn unquote(raw: &str) -> String {
    let hay = raw.as_bytes();
    // What is left of `raw` is a suffix of it: its last quotes are raw's.
    let lasts = last_quotes(hay);
    let mut out = String::with_capacity(raw.len());
    let mut pos = 0;
    while let Some(c) = raw[pos..].chars().next() {
        if c == '"' || c == '\'' {
            if let Some(end) = quoted_run_end(hay, pos, last_of(lasts, c as u8)) {
                // The run starts and ends with the one-byte quote character.
                let mut chars = raw[pos + 1..end - 1].chars();
                while let Some(ch) = chars.next() {
                    if ch == '\\' {
                        // A trailing backslash (the run may end on one
                        // after backtracking) stays literal.
                        out.push(chars.next().unwrap_or('\\'));
                    } else {
                        out.push(ch);
                    }
                }
                pos = end;
                continue;
            }
        }
        out.push(c);
        pos += c.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(line: &str) -> Vec<String> {
        tokenize(line)
    }

    /// The reference's pattern, run by the `regex` crate (leftmost-first,
    /// as Python's `re`): what the hand-written matcher must equal.
    fn by_regex(line: &str) -> Vec<String> {
        let re =
            regex::Regex::new(r#"(?:[^\s\x1c-\x1f"']|"(?:\\.|[^"])*"|'(?:\\.|[^'])*')+"#).unwrap();
        re.find_iter(line).map(|m| m.as_str().to_owned()).collect()
    }

    /// `unquote` as it was written with the regex of one quoted run.
    fn unquote_by_regex(raw: &str) -> String {
        let re = regex::Regex::new(r#"^(?:"(?:\\.|[^"])*"|'(?:\\.|[^'])*')"#).unwrap();
        let mut out = String::new();
        let mut rest = raw;
        while let Some(c) = rest.chars().next() {
            if c == '"' || c == '\'' {
                if let Some(m) = re.find(rest) {
                    let run = m.as_str();
                    let mut chars = run[1..run.len() - 1].chars();
                    while let Some(ch) = chars.next() {
                        out.push(if ch == '\\' {
                            chars.next().unwrap_or('\\')
                        } else {
                            ch
                        });
                    }
                    rest = &rest[run.len()..];
                    continue;
                }
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }

    #[test]
    fn hand_picked_lines_split_as_the_regex_splits_them() {
        for line in [
            r#"a\"b" c"#,
            r#""a\\" b" c""#,
            r#""\"#,
            r#""\""#,
            r#""\"""#,
            r#"'\'' '"#,
            "\"a\\\nb\" c",
            "\"\\\n\"",
            r#"x="a\" y='b\' z"#,
            "\"é\\ü\" \\\"",
            "'\\é' \"\\\u{1F600}\"",
            r#""""''""'"#,
        ] {
            assert_eq!(tokenize(line), by_regex(line), "{line:?}");
            for token in by_regex(line) {
                assert_eq!(unquote(&token), unquote_by_regex(&token), "{token:?}");
            }
            assert_eq!(unquote(line), unquote_by_regex(line), "{line:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn lines_split_as_the_regex_splits_them(
            line in "[ab \\\\\"'=\n\t\u{1c}\u{1f}é\u{3000}\u{1F600}]{0,24}"
        ) {
            proptest::prop_assert_eq!(tokenize(&line), by_regex(&line));
            proptest::prop_assert_eq!(unquote(&line), unquote_by_regex(&line));
            for token in by_regex(&line) {
                proptest::prop_assert_eq!(unquote(&token), unquote_by_regex(&token));
            }
        }
    }

    #[test]
    fn splits_on_whitespace() {
        assert_eq!(toks("a b\tc\n d"), ["a", "b", "c", "d"]);
        assert!(toks("").is_empty());
        assert!(toks("   \t ").is_empty());
    }

    #[test]
    fn python_whitespace_set() {
        // Python's \s: the Unicode White_Space set plus U+001C..U+001F.
        for ws in [
            '\t', '\n', '\x0b', '\x0c', '\r', '\x1c', '\x1d', '\x1e', '\x1f', ' ', '\u{85}',
            '\u{a0}', '\u{1680}', '\u{2000}', '\u{200a}', '\u{2028}', '\u{2029}', '\u{202f}',
            '\u{205f}', '\u{3000}',
        ] {
            assert_eq!(toks(&format!("a{ws}b")), ["a", "b"], "{:?}", ws);
        }
        // Not whitespace for Python either.
        for not_ws in ['\u{180e}', '\u{200b}', '\u{feff}', '\x7f', '\0'] {
            assert_eq!(toks(&format!("a{not_ws}b")).len(), 1, "{:?}", not_ws);
        }
    }

    #[test]
    fn quotes_keep_spaces_and_quotes() {
        assert_eq!(
            toks(r#"cmd a="x y" b='p q'"#),
            ["cmd", r#"a="x y""#, "b='p q'"]
        );
        assert_eq!(toks(r#"a"b c"d e"#), [r#"a"b c"d"#, "e"]);
        assert_eq!(toks(r#""a\" b" c"#), [r#""a\" b""#, "c"]);
        assert_eq!(toks(r#"'it''s' x"#), ["'it''s'", "x"]);
        assert_eq!(toks("\"a\nb\""), ["\"a\nb\""]);
    }

    #[test]
    fn unterminated_quote_is_skipped() {
        assert_eq!(toks(r#"a="b c"#), ["a=", "b", "c"]);
        assert_eq!(toks("x=it's"), ["x=it", "s"]);
        assert_eq!(toks("'"), Vec::<String>::new());
        // Backtracking: the escaped quote becomes the closing one.
        assert_eq!(toks(r#""a\" b"#), [r#""a\""#, "b"]);
    }

    #[test]
    fn unquote_runs() {
        assert_eq!(unquote(r#""info version""#), "info version");
        assert_eq!(unquote(r#"a"b c"d"#), "ab cd");
        assert_eq!(unquote(r#""a\"b""#), "a\"b");
        assert_eq!(unquote(r#"'a\\b'"#), "a\\b");
        assert_eq!(unquote(r#"a\b"c""#), "a\\bc");
        assert_eq!(unquote(r#""it's""#), "it's");
        assert_eq!(unquote(r#"'say "hi"'"#), "say \"hi\"");
        assert_eq!(unquote(r#""a\""#), "a\\");
        assert_eq!(unquote("\"\""), "");
        assert_eq!(unquote("x'"), "x'");
        assert_eq!(unquote("\"é\\ü\""), "éü");
    }
}
