//! Splitting a command line into raw tokens.
//!
//! The reference splits with
//! `re.findall(r'''(?:[^\s"']|"(?:\\.|[^"])*"|'(?:\\.|[^'])*')+''', line)`.
//! The `regex` crate has the same leftmost-first semantics as Python's `re`,
//! so the same pattern gives the same tokens, with one adjustment: Python's
//! `\s` also matches the separators U+001C..U+001F, which the `regex` crate's
//! Unicode `\s` does not. Everything else Python's `\s` matches (the Unicode
//! `White_Space` set) is identical in both.

use std::sync::OnceLock;

use regex::Regex;

/// The token pattern, with Python's extra whitespace characters added to `\s`.
const TOKEN_PATTERN: &str = r#"(?:[^\s\x1c-\x1f"']|"(?:\\.|[^"])*"|'(?:\\.|[^'])*')+"#;

/// One quoted run (double or single quotes) at the start of a string, with
/// exactly the sub-patterns of [`TOKEN_PATTERN`].
const QUOTED_RUN_PATTERN: &str = r#"^(?:"(?:\\.|[^"])*"|'(?:\\.|[^'])*')"#;

fn token_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(TOKEN_PATTERN).expect("token pattern is valid"))
}

fn quoted_run_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(QUOTED_RUN_PATTERN).expect("quoted-run pattern is valid"))
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
    token_regex()
        .find_iter(line)
        .map(|m| m.as_str().to_owned())
        .collect()
}

/// Remove the quotes of every quoted run in `raw` and resolve the backslash
/// escapes inside them (a backslash makes the next character literal).
///
/// Characters outside quotes are kept as they are, backslashes included. The
/// quoted runs are found with the same sub-patterns as the tokenizer, so a
/// token is split into the same runs the tokenizer saw. A quote character
/// that starts no complete run (possible only when this is called on text
/// that did not come from [`tokenize`]) is kept literally.
pub fn unquote(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(c) = rest.chars().next() {
        if c == '"' || c == '\'' {
            if let Some(m) = quoted_run_regex().find(rest) {
                let run = m.as_str();
                // The run starts and ends with the one-byte quote character.
                let inner = &run[1..run.len() - 1];
                let mut chars = inner.chars();
                while let Some(ch) = chars.next() {
                    if ch == '\\' {
                        // A trailing backslash (the regex may end a run on
                        // one after backtracking) stays literal.
                        out.push(chars.next().unwrap_or('\\'));
                    } else {
                        out.push(ch);
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(line: &str) -> Vec<String> {
        tokenize(line)
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
