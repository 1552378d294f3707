//! The Python literals the reference accepts: `ast.literal_eval` of the
//! value after `ast.parse(..., mode='eval')`, with the names `true`, `false`
//! and `null` turned into `True`, `False` and `None` (its `FuzzyJSON`).
//!
//! Accepted: strings (single, double and triple quotes, prefixes `r`/`u`,
//! Python escapes, adjacent literals concatenated), bytes (refused), ints
//! (decimal, `0x`, `0o`, `0b`, underscores), floats, imaginary numbers
//! (refused), one unary `+`/`-` on a number, `REAL+IMAG`/`REAL-IMAG`
//! complex sums (refused), `True`/`False`/`None`/`true`/`false`/`null`,
//! `...` (refused), tuples and lists (JSON arrays), dicts, sets and `set()`
//! (refused), comments, line continuations and newlines inside brackets.
//!
//! Anything else is "not a literal" (`None` from [`literal`]): the reference
//! then keeps the value as typed. Brackets nested more than 200 deep are not
//! a literal either (Python's parser gives up there).
//!
//! Known gaps: `\N{NAME}` escapes are refused (no Unicode name table here);
//! identifiers must be ASCII, so a non-ASCII spelling that Python's NFKC
//! normalisation turns into `true` (fullwidth letters, say) is not read as
//! `True`; `(set)()` is not recognised as an empty set.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::scalar::{
    code_points_to_string, float_value, int_number, integral_float_decimal, normalise_int, Big,
};

/// Python's limit on nested brackets (`too many nested parentheses`).
const MAX_BRACKETS: usize = 200;

/// Read `text` as a Python literal. `None`: not a literal.
/// `Some(Err((reason, value)))`: a literal JSON cannot carry (the reference
/// crashed on those); `reason` names the first such thing, `value` has
/// `null` in its place.
pub(crate) fn literal(text: &str) -> Option<Result<Value, (String, Value)>> {
    let toks = lex(text)?;
    let mut parser = Parser { toks, pos: 0 };
    let node = parser.top()?;
    let py = eval(&node)?;
    let mut refusal = None;
    let value = to_json(&py, &mut refusal);
    Some(match refusal {
        Some(reason) => Err((reason, value)),
        None => Ok(value),
    })
}

// ---------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(String),
    Float(f64),
    Imag,
    Str(PyStr),
    Name(String),
    Op(u8),
    Ellipsis,
    Newline,
    End,
}

/// One string literal's value.
#[derive(Debug, Clone, PartialEq, Default)]
struct PyStr {
    cps: Vec<u32>,
    bytes: bool,
    /// It used a `\N{...}` escape, which we cannot resolve.
    named: bool,
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
}

impl Lexer {
    fn peek_at(&self, off: usize) -> Option<char> {
        self.chars.get(self.pos + off).copied()
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || !c.is_ascii()
}

fn lex(text: &str) -> Option<Vec<Tok>> {
    if text.contains('\0') {
        return None; // "source code string cannot contain null bytes"
    }
    // Universal newlines, as Python's compile() reads a string.
    let normalised = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut lx = Lexer {
        chars: normalised.chars().collect(),
        pos: 0,
    };
    let mut toks = Vec::new();
    let mut depth = 0usize;
    while let Some(c) = lx.peek_at(0) {
        match c {
            ' ' | '\t' | '\x0c' => lx.pos += 1,
            '\n' => {
                lx.pos += 1;
                if depth == 0 {
                    toks.push(Tok::Newline);
                }
            }
            '#' => {
                while lx.peek_at(0).is_some_and(|c| c != '\n') {
                    lx.pos += 1;
                }
            }
            '\\' => {
                if lx.peek_at(1) != Some('\n') {
                    return None;
                }
                lx.pos += 2;
            }
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_BRACKETS {
                    return None;
                }
                lx.pos += 1;
                toks.push(Tok::Op(c as u8));
            }
            ')' | ']' | '}' => {
                depth = depth.checked_sub(1)?;
                lx.pos += 1;
                toks.push(Tok::Op(c as u8));
            }
            ',' | ':' | '+' | '-' => {
                lx.pos += 1;
                toks.push(Tok::Op(c as u8));
            }
            '.' if lx.peek_at(1) == Some('.') && lx.peek_at(2) == Some('.') => {
                lx.pos += 3;
                toks.push(Tok::Ellipsis);
            }
            '.' if lx.peek_at(1).is_some_and(|c| c.is_ascii_digit()) => {
                toks.push(number(&mut lx)?);
            }
            '0'..='9' => toks.push(number(&mut lx)?),
            '"' | '\'' => toks.push(Tok::Str(string(&mut lx, false, false)?)),
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = lx.pos;
                while lx.peek_at(0).is_some_and(is_ident_char) {
                    lx.pos += 1;
                }
                let word: String = lx.chars[start..lx.pos].iter().collect();
                if !word.is_ascii() {
                    return None; // see "Known gaps"
                }
                if matches!(lx.peek_at(0), Some('"' | '\'')) {
                    let prefix = word.to_ascii_lowercase();
                    let (raw, bytes) = match prefix.as_str() {
                        "r" => (true, false),
                        "u" => (false, false),
                        "b" => (false, true),
                        "br" | "rb" => (true, true),
                        // f-strings are not literals; other prefixes are
                        // a name followed by a string: a syntax error.
                        _ => return None,
                    };
                    toks.push(Tok::Str(string(&mut lx, raw, bytes)?));
                } else {
                    toks.push(Tok::Name(word));
                }
            }
            _ => return None,
        }
    }
    toks.push(Tok::End);
    Some(toks)
}

/// `[0-9](_?[0-9])*` at the cursor; false if there is no digit there.
/// An underscore not followed by a digit is an error (`None`).
fn digit_part(lx: &mut Lexer, radix: u32, out: &mut String) -> Option<bool> {
    let mut any = false;
    loop {
        match lx.peek_at(0) {
            Some('_') if any => {
                let d = lx.peek_at(1)?;
                d.to_digit(radix)?;
                lx.pos += 1;
            }
            Some(d) if d.is_ascii() && d.is_digit(radix) => {
                out.push(d);
                lx.pos += 1;
                any = true;
            }
            _ => return Some(any),
        }
    }
}

fn number(lx: &mut Lexer) -> Option<Tok> {
    let radix = match (lx.peek_at(0), lx.peek_at(1)) {
        (Some('0'), Some('x' | 'X')) => 16,
        (Some('0'), Some('o' | 'O')) => 8,
        (Some('0'), Some('b' | 'B')) => 2,
        _ => 10,
    };
    let tok = if radix != 10 {
        lx.pos += 2;
        // `0x_1` is valid: an underscore may follow the prefix.
        if lx.peek_at(0) == Some('_') {
            lx.pos += 1;
        }
        let mut digits = String::new();
        if !digit_part(lx, radix, &mut digits)? {
            return None;
        }
        let mut big = Big::default();
        for d in digits.chars() {
            big.mul_add(radix, d.to_digit(radix)?);
        }
        Tok::Int(big.to_decimal())
    } else {
        let mut text = String::new();
        let int_digits = digit_part(lx, 10, &mut text)?;
        let mut is_float = false;
        if lx.peek_at(0) == Some('.') {
            lx.pos += 1;
            text.push('.');
            is_float = true;
            let frac = digit_part(lx, 10, &mut text)?;
            if !int_digits && !frac {
                return None;
            }
        }
        if matches!(lx.peek_at(0), Some('e' | 'E')) {
            let (sign, first) = match lx.peek_at(1) {
                Some(s @ ('+' | '-')) => (Some(s), lx.peek_at(2)),
                other => (None, other),
            };
            if first.is_some_and(|c| c.is_ascii_digit()) {
                lx.pos += 1 + usize::from(sign.is_some());
                text.push('e');
                text.extend(sign);
                digit_part(lx, 10, &mut text)?;
                is_float = true;
            } else if sign.is_some() {
                return None; // "invalid decimal literal"
            }
        }
        if matches!(lx.peek_at(0), Some('j' | 'J')) {
            lx.pos += 1;
            Tok::Imag
        } else if is_float {
            Tok::Float(text.parse().ok()?)
        } else {
            let trimmed = text.trim_start_matches('0');
            if !trimmed.is_empty() && trimmed.len() != text.len() {
                return None; // leading zeros in a decimal integer
            }
            Tok::Int(normalise_int(false, &text))
        }
    };
    // A number running into a name or another number is never a literal.
    if lx
        .peek_at(0)
        .is_some_and(|c| is_ident_char(c) || c == '.' && lx.peek_at(1) != Some('.'))
    {
        return None;
    }
    Some(tok)
}

fn hex_escape(lx: &mut Lexer, n: usize) -> Option<u32> {
    let mut v = 0u32;
    for _ in 0..n {
        let c = lx.peek_at(0)?;
        if !c.is_ascii_hexdigit() {
            return None;
        }
        v = v * 16 + c.to_digit(16)?;
        lx.pos += 1;
    }
    Some(v)
}

/// A string literal at the cursor (on its opening quote).
fn string(lx: &mut Lexer, raw: bool, bytes: bool) -> Option<PyStr> {
    let q = lx.peek_at(0)?;
    let triple = lx.peek_at(1) == Some(q) && lx.peek_at(2) == Some(q);
    lx.pos += if triple { 3 } else { 1 };
    let mut s = PyStr {
        bytes,
        ..PyStr::default()
    };
    loop {
        let c = lx.peek_at(0)?;
        lx.pos += 1;
        if bytes && !c.is_ascii() {
            return None; // "bytes can only contain ASCII literal characters"
        }
        match c {
            c if c == q => {
                if !triple {
                    return Some(s);
                }
                if lx.peek_at(0) == Some(q) && lx.peek_at(1) == Some(q) {
                    lx.pos += 2;
                    return Some(s);
                }
                s.cps.push(u32::from(c));
            }
            '\n' if !triple => return None,
            '\\' if raw => {
                let next = lx.peek_at(0)?;
                if bytes && !next.is_ascii() {
                    return None;
                }
                lx.pos += 1;
                s.cps.push(u32::from('\\'));
                s.cps.push(u32::from(next));
            }
            '\\' => escape(lx, &mut s)?,
            c => s.cps.push(u32::from(c)),
        }
    }
}

/// After a backslash in a non-raw string.
fn escape(lx: &mut Lexer, s: &mut PyStr) -> Option<()> {
    let e = lx.peek_at(0)?;
    lx.pos += 1;
    let cp = match e {
        '\n' => return Some(()),
        '\\' | '\'' | '"' => u32::from(e),
        'a' => 0x07,
        'b' => 0x08,
        'f' => 0x0c,
        'n' => 0x0a,
        'r' => 0x0d,
        't' => 0x09,
        'v' => 0x0b,
        '0'..='7' => {
            let mut v = e.to_digit(8)?;
            for _ in 0..2 {
                match lx.peek_at(0).and_then(|c| c.to_digit(8)) {
                    Some(d) => {
                        v = v * 8 + d;
                        lx.pos += 1;
                    }
                    None => break,
                }
            }
            if s.bytes {
                v & 0xff
            } else {
                v
            }
        }
        'x' => hex_escape(lx, 2)?,
        'u' if !s.bytes => hex_escape(lx, 4)?,
        'U' if !s.bytes => {
            let v = hex_escape(lx, 8)?;
            if v > 0x10FFFF {
                return None; // "illegal Unicode character"
            }
            v
        }
        'N' if !s.bytes => {
            if lx.peek_at(0) != Some('{') {
                return None; // "malformed \N character escape"
            }
            let close = lx.chars[lx.pos..].iter().position(|&c| c == '}')?;
            if close < 2 {
                return None;
            }
            lx.pos += close + 1;
            s.named = true;
            return Some(());
        }
        other => {
            if s.bytes && !other.is_ascii() {
                return None;
            }
            // Unknown escapes keep their backslash.
            s.cps.push(u32::from('\\'));
            u32::from(other)
        }
    };
    s.cps.push(cp);
    Some(())
}

// ---------------------------------------------------------------------------
// Syntax tree (just what literal_eval looks at)

#[derive(Debug)]
enum Node {
    Int(String),
    Float(f64),
    Imag,
    Str(PyStr),
    Bool(bool),
    None,
    Ellipsis,
    Tuple(Vec<Node>),
    List(Vec<Node>),
    Set(Vec<Node>),
    SetCall,
    Dict(Vec<(Node, Node)>),
    /// `+x` (false) or `-x` (true).
    Unary(bool, Box<Node>),
    /// `l + r` or `l - r` (the sign does not matter: the result is
    /// either complex, hence refused, or not a literal).
    Bin(Box<Node>, Box<Node>),
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        // The token list always ends with End, and End is never consumed.
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        if t != Tok::End {
            self.pos += 1;
        }
        t
    }

    fn is_op(&self, op: u8) -> bool {
        *self.peek() == Tok::Op(op)
    }

    fn expect(&mut self, op: u8) -> Option<()> {
        self.is_op(op).then(|| {
            self.pos += 1;
        })
    }

    fn starts_expr(&self) -> bool {
        match self.peek() {
            Tok::Int(_)
            | Tok::Float(_)
            | Tok::Imag
            | Tok::Str(_)
            | Tok::Name(_)
            | Tok::Ellipsis => true,
            Tok::Op(op) => b"([{+-".contains(op),
            Tok::Newline | Tok::End => false,
        }
    }

    fn top(&mut self) -> Option<Node> {
        let node = self.expr_list(None)?;
        while *self.peek() == Tok::Newline {
            self.pos += 1;
        }
        (*self.peek() == Tok::End).then_some(node)
    }

    /// `expr (',' expr)* [',']`; a tuple when there is a comma. With a
    /// closer, the list must end with it (and is a tuple even when empty).
    fn expr_list(&mut self, closer: Option<u8>) -> Option<Node> {
        if let Some(c) = closer {
            if self.expect(c).is_some() {
                return Some(Node::Tuple(Vec::new()));
            }
        }
        let first = self.expr()?;
        let node = if self.is_op(b',') {
            let mut items = vec![first];
            while self.expect(b',').is_some() && self.starts_expr() {
                items.push(self.expr()?);
            }
            Node::Tuple(items)
        } else {
            first
        };
        if let Some(c) = closer {
            self.expect(c)?;
        }
        Some(node)
    }

    /// Items up to `closer`, with an optional trailing comma.
    fn items(&mut self, closer: u8, mut items: Vec<Node>) -> Option<Vec<Node>> {
        loop {
            if self.expect(closer).is_some() {
                return Some(items);
            }
            items.push(self.expr()?);
            if self.expect(b',').is_none() {
                self.expect(closer)?;
                return Some(items);
            }
        }
    }

    fn expr(&mut self) -> Option<Node> {
        let mut left = self.unary()?;
        while let Tok::Op(b'+' | b'-') = *self.peek() {
            if matches!(left, Node::Bin(..)) {
                return None; // `a + b + c`: never a literal
            }
            self.pos += 1;
            let right = self.unary()?;
            left = Node::Bin(Box::new(left), Box::new(right));
        }
        Some(left)
    }

    fn unary(&mut self) -> Option<Node> {
        let mut sign = None;
        while let Tok::Op(op @ (b'+' | b'-')) = *self.peek() {
            if sign.is_some() {
                return None; // `--1`: never a literal
            }
            sign = Some(op == b'-');
            self.pos += 1;
        }
        let atom = self.atom()?;
        // Calls, subscripts and attributes are never literals (except set()).
        if self.is_op(b'(') || self.is_op(b'[') {
            return None;
        }
        Some(match sign {
            Some(neg) => Node::Unary(neg, Box::new(atom)),
            None => atom,
        })
    }

    fn atom(&mut self) -> Option<Node> {
        Some(match self.next() {
            Tok::Int(t) => Node::Int(t),
            Tok::Float(f) => Node::Float(f),
            Tok::Imag => Node::Imag,
            Tok::Ellipsis => Node::Ellipsis,
            Tok::Str(mut s) => {
                while let Tok::Str(more) = &self.toks[self.pos] {
                    if more.bytes != s.bytes {
                        return None; // "cannot mix bytes and nonbytes literals"
                    }
                    s.cps.extend_from_slice(&more.cps);
                    s.named |= more.named;
                    self.pos += 1;
                }
                Node::Str(s)
            }
            Tok::Name(n) => match n.as_str() {
                "True" | "true" => Node::Bool(true),
                "False" | "false" => Node::Bool(false),
                "None" | "null" => Node::None,
                "set" if self.is_op(b'(') => {
                    self.pos += 1;
                    self.expect(b')')?;
                    Node::SetCall
                }
                _ => return None,
            },
            Tok::Op(b'(') => self.expr_list(Some(b')'))?,
            Tok::Op(b'[') => Node::List(self.items(b']', Vec::new())?),
            Tok::Op(b'{') => {
                if self.expect(b'}').is_some() {
                    return Some(Node::Dict(Vec::new()));
                }
                let first = self.expr()?;
                if self.expect(b':').is_some() {
                    let mut pairs = vec![(first, self.expr()?)];
                    while self.expect(b',').is_some() {
                        if self.is_op(b'}') {
                            break;
                        }
                        let k = self.expr()?;
                        self.expect(b':')?;
                        pairs.push((k, self.expr()?));
                    }
                    self.expect(b'}')?;
                    Node::Dict(pairs)
                } else {
                    let items = if self.expect(b',').is_some() {
                        self.items(b'}', vec![first])?
                    } else {
                        self.expect(b'}')?;
                        vec![first]
                    };
                    Node::Set(items)
                }
            }
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------------------
// literal_eval

/// A Python value that literal_eval can produce.
#[derive(Debug)]
enum Py {
    Str(PyStr),
    Int(String),
    Float(f64),
    Complex,
    Bool(bool),
    None,
    Ellipsis,
    Tuple(Vec<Py>),
    List(Vec<Py>),
    Set,
    Dict(Vec<(Py, Py)>),
}

/// A number constant (`_convert_num`), with an optional sign applied
/// (`_convert_signed_num`).
fn signed_num(node: &Node) -> Option<Py> {
    match node {
        Node::Unary(neg, inner) => Some(match (**inner).num()? {
            Py::Int(t) if *neg => Py::Int(
                t.strip_prefix('-')
                    .map_or_else(|| normalise_int(true, &t), str::to_owned),
            ),
            Py::Float(f) if *neg => Py::Float(-f),
            other => other,
        }),
        other => other.num(),
    }
}

impl Node {
    fn num(&self) -> Option<Py> {
        match self {
            Node::Int(t) => Some(Py::Int(t.clone())),
            Node::Float(f) => Some(Py::Float(*f)),
            Node::Imag => Some(Py::Complex),
            _ => None,
        }
    }
}

fn eval(node: &Node) -> Option<Py> {
    Some(match node {
        Node::Str(s) => Py::Str(s.clone()),
        Node::Int(t) => Py::Int(t.clone()),
        Node::Float(f) => Py::Float(*f),
        Node::Imag => Py::Complex,
        Node::Bool(b) => Py::Bool(*b),
        Node::None => Py::None,
        Node::Ellipsis => Py::Ellipsis,
        Node::Tuple(items) => Py::Tuple(items.iter().map(eval).collect::<Option<_>>()?),
        Node::List(items) => Py::List(items.iter().map(eval).collect::<Option<_>>()?),
        Node::Set(items) => {
            for item in items {
                eval(item)?;
            }
            Py::Set
        }
        Node::SetCall => Py::Set,
        Node::Dict(pairs) => Py::Dict(
            pairs
                .iter()
                .map(|(k, v)| Some((eval(k)?, eval(v)?)))
                .collect::<Option<_>>()?,
        ),
        Node::Bin(left, right) => {
            let l = signed_num(left)?;
            let r = right.num()?;
            match (l, r) {
                (Py::Int(_) | Py::Float(_), Py::Complex) => Py::Complex,
                _ => return None,
            }
        }
        Node::Unary(..) => signed_num(node)?,
    })
}

// ---------------------------------------------------------------------------
// json.dumps

fn type_name(py: &Py) -> &'static str {
    match py {
        Py::Str(s) if s.bytes => "bytes",
        Py::Str(_) => "str",
        Py::Int(_) => "int",
        Py::Float(_) => "float",
        Py::Complex => "complex",
        Py::Bool(_) => "bool",
        Py::None => "None",
        Py::Ellipsis => "Ellipsis",
        Py::Tuple(_) => "tuple",
        Py::List(_) => "list",
        Py::Set => "set",
        Py::Dict(_) => "dict",
    }
}

fn py_string(s: &PyStr) -> Result<String, String> {
    if s.bytes {
        return Err("bytes are not supported".into());
    }
    if s.named {
        return Err("\\N{...} escapes are not supported".into());
    }
    code_points_to_string(&s.cps)
}

/// Python's `json.dumps`, with `null` for what JSON cannot carry and the
/// first such thing's description in `refusal`.
fn to_json(py: &Py, refusal: &mut Option<String>) -> Value {
    let mut refuse = |reason: String| {
        refusal.get_or_insert(reason);
        Value::Null
    };
    match py {
        Py::Str(s) => py_string(s).map_or_else(refuse, Value::String),
        Py::Int(t) => Value::Number(int_number(t)),
        Py::Float(f) => float_value(*f).unwrap_or_else(refuse),
        Py::Complex => refuse("complex numbers are not supported".into()),
        Py::Bool(b) => Value::Bool(*b),
        Py::None => Value::Null,
        Py::Ellipsis => refuse("Ellipsis (...) is not supported".into()),
        Py::Set => refuse("sets are not supported".into()),
        Py::Tuple(items) | Py::List(items) => {
            Value::Array(items.iter().map(|i| to_json(i, refusal)).collect())
        }
        Py::Dict(pairs) => dict_to_json(pairs, refusal),
    }
}

/// How Python's dict tells keys apart: `1`, `1.0` and `True` are one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyId {
    Str(Vec<u32>),
    /// An integer value (ints, bools, integral floats), as decimal text.
    Int(String),
    /// A non-integral float, by its bits.
    Float(u64),
    None,
}

/// A dict: Python's key identity (first key kept, last value kept), then
/// `json.dumps`'s key conversion (`str` as is, numbers as their text,
/// `True`/`False`/`None` as `true`/`false`/`null`).
fn dict_to_json(pairs: &[(Py, Py)], refusal: &mut Option<String>) -> Value {
    let mut index: HashMap<KeyId, usize> = HashMap::new();
    let mut entries: Vec<(&Py, &Py)> = Vec::new();
    for (k, v) in pairs {
        let id = match k {
            Py::Str(s) if !s.bytes => KeyId::Str(s.cps.clone()),
            Py::Int(t) => KeyId::Int(t.clone()),
            Py::Bool(b) => KeyId::Int(u8::from(*b).to_string()),
            Py::Float(f) if f.is_finite() && f.fract() == 0.0 => {
                KeyId::Int(integral_float_decimal(*f))
            }
            Py::Float(f) => KeyId::Float(f.to_bits()),
            Py::None => KeyId::None,
            other => {
                refusal.get_or_insert(format!(
                    "dictionary keys of type {} are not supported",
                    type_name(other)
                ));
                continue;
            }
        };
        match index.get(&id) {
            Some(&i) => entries[i].1 = v,
            None => {
                index.insert(id, entries.len());
                entries.push((k, v));
            }
        }
    }
    let mut map = Map::new();
    for (k, v) in entries {
        let key = match k {
            Py::Str(s) => match py_string(s) {
                Ok(key) => key,
                Err(reason) => {
                    refusal.get_or_insert(reason);
                    continue;
                }
            },
            Py::Int(t) => t.clone(),
            Py::Bool(b) => b.to_string(),
            Py::Float(f) if f.is_infinite() => {
                if *f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
            }
            Py::Float(f) => crate::render::python_float_repr(*f),
            _ => "null".to_owned(),
        };
        // Two Python keys with one JSON text (`1` and `'1'`): the reference
        // sends both; a JSON object keeps the first position, last value.
        map.insert(key, to_json(v, refusal));
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(text: &str) -> Value {
        match literal(text) {
            Some(Ok(v)) => v,
            other => panic!("{text}: {other:?}"),
        }
    }

    fn text(text: &str) -> String {
        ok(text).to_string()
    }

    fn refused(text: &str) -> String {
        match literal(text) {
            Some(Err((r, _))) => r,
            other => panic!("{text}: expected refusal, got {other:?}"),
        }
    }

    fn not_literal(text: &str) {
        assert_eq!(literal(text), None, "{text}");
    }

    #[test]
    fn containers() {
        assert_eq!(
            ok("{'a': 1, 'b': [2, (3, 4)]}"),
            json!({"a": 1, "b": [2, [3, 4]]})
        );
        assert_eq!(ok("[(1,), (), (1)]"), json!([[1], [], 1]));
        assert_eq!(ok("[1, 2,]"), json!([1, 2]));
        assert_eq!(ok("{'a':1,}"), json!({"a": 1}));
        assert_eq!(ok("[1], [2]"), json!([[1], [2]]));
        assert_eq!(ok("[1],"), json!([[1]]));
        assert_eq!(ok("{}"), json!({}));
        assert_eq!(
            ok("[{'obj': {'prop': \"value\"}}]"),
            json!([{"obj": {"prop": "value"}}])
        );
    }

    #[test]
    fn fuzzy_names() {
        assert_eq!(
            ok("[True, False, None, true, false, null]"),
            json!([true, false, null, true, false, null])
        );
        assert_eq!(
            ok("{true: 1, null: 2, False: 3}"),
            json!({"true": 1, "null": 2, "false": 3})
        );
        not_literal("[TRUE]");
        not_literal("[x]");
        not_literal("[nan]");
        not_literal("[true()]");
        not_literal("[-true]");
    }

    #[test]
    fn whitespace_comments_continuations() {
        assert_eq!(ok("[1,\n 2,\t3,\x0c4]"), json!([1, 2, 3, 4]));
        assert_eq!(ok("[1, # one\n 2]"), json!([1, 2]));
        assert_eq!(ok("[1] # done"), json!([1]));
        assert_eq!(ok("[1]\n\n  # x\n"), json!([1]));
        assert_eq!(ok("[1,\\\n2]"), json!([1, 2]));
        assert_eq!(ok("[1,\r\n2]\r\n"), json!([1, 2]));
        not_literal("[1]\n 2");
        not_literal("[1]\n,[2]");
        not_literal("[1,\\ 2]");
        not_literal("[1,\x0b2]");
        not_literal("[1,\u{a0}2]");
        not_literal("[1]\0");
    }

    #[test]
    fn ints() {
        assert_eq!(
            text("[0, 00, 0_0, 1_000, 0x_1f, 0XFF, 0o17, 0b1_01]"),
            "[0,0,0,1000,31,255,15,5]"
        );
        assert_eq!(text("[-1, +2, -(3), (-4)]"), "[-1,2,-3,-4]");
        assert_eq!(text("[-0]"), "[0]");
        assert_eq!(
            text("[0xffffffffffffffffffffffffffffffff]"),
            "[340282366920938463463374607431768211455]"
        );
        assert_eq!(text("[-0x10]"), "[-16]");
        for bad in [
            "[07]", "[0_7]", "[1__0]", "[1_]", "[0x]", "[0b2]", "[0o8]", "[1a]", "[0x1g]", "[--1]",
            "[-+1]", "[-(-1)]", "[1+2]", "[1-1]",
        ] {
            not_literal(bad);
        }
    }

    #[test]
    fn floats() {
        assert_eq!(
            text("[1.5, .5, 5., 1e5, 1_0.0, 1.e1, 09.5, 1E-2, -2.5, +0.0]"),
            "[1.5,0.5,5.0,100000.0,10.0,10.0,9.5,0.01,-2.5,0.0]"
        );
        assert_eq!(text("[-0.0]"), "[-0.0]");
        assert!(refused("[1e400]").contains("infinite"));
        assert!(refused("[-1e400]").contains("infinite"));
        for bad in ["[1e]", "[1e+]", "[1._5]", "[1.5.5]", "[1..5]", "[1e_5]"] {
            not_literal(bad);
        }
    }

    #[test]
    fn strings() {
        assert_eq!(
            ok("['a', \"b\", '''c\nd''', \"\"\"e'f\"\"\"]"),
            json!(["a", "b", "c\nd", "e'f"])
        );
        assert_eq!(ok("['a' 'b' \"c\"]"), json!(["abc"]));
        assert_eq!(ok("[' a' \n 'b']"), json!([" ab"]));
        assert_eq!(
            ok(r#"['\n\t\\\'\"\a\b\f\v\r']"#),
            json!(["\n\t\\'\"\u{7}\u{8}\u{c}\u{b}\r"])
        );
        assert_eq!(
            ok(r"['\x41\u00e9\U0001F600\101\0\777']"),
            json!(["Aé😀A\u{0}ǿ"])
        );
        assert_eq!(ok(r"['\q\d']"), json!(["\\q\\d"]));
        assert_eq!(ok("['a\\\nb']"), json!(["ab"]));
        assert_eq!(
            ok(r"[r'\n', R'\'', u'x', U'y']"),
            json!(["\\n", "\\'", "x", "y"])
        );
        assert_eq!(ok("['é😀']"), json!(["é😀"]));
        assert_eq!(ok(r"['\ud83d' '\ude00']"), json!(["😀"]));
        assert_eq!(ok("['''a\r\nb''']"), json!(["a\nb"]));
        for bad in [
            "['a]",
            "['a\nb']",
            r"['\x4']",
            r"['\u12']",
            r"['\U00110000']",
            r"['\N']",
            "[f'x']",
            "[F'x']",
            "[rf'x']",
            "[ur'x']",
            "[b'x' 'y']",
            "['x' b'y']",
            "[b'é']",
            "['a'[0]]",
            "['a'.upper()]",
            "[r'\\']",
        ] {
            not_literal(bad);
        }
    }

    #[test]
    fn refused_values() {
        assert_eq!(refused("{1, 2}"), "sets are not supported");
        assert_eq!(refused("[set()]"), "sets are not supported");
        assert_eq!(refused("[set ( )]"), "sets are not supported");
        assert_eq!(refused("[b'x']"), "bytes are not supported");
        assert_eq!(refused("[Rb'x' b\"y\"]"), "bytes are not supported");
        assert_eq!(refused("[1j]"), "complex numbers are not supported");
        assert_eq!(refused("[-1j]"), "complex numbers are not supported");
        assert_eq!(refused("[1+2j]"), "complex numbers are not supported");
        assert_eq!(refused("[(-1.5)-2J]"), "complex numbers are not supported");
        assert_eq!(refused("[...]"), "Ellipsis (...) is not supported");
        assert_eq!(
            refused(r"['\N{BULLET}']"),
            "\\N{...} escapes are not supported"
        );
        assert!(refused(r"['\ud800']").contains("lone surrogate"));
        assert!(refused("{(1, 2): 3}").contains("type tuple"));
        assert!(refused("{[1]: 3}").contains("type list"));
        assert!(refused("{b'k': 3}").contains("type bytes"));
        // A literal that is malformed elsewhere is not a literal at all.
        not_literal("[{1, 2}, x]");
        not_literal("[1j+1]");
        not_literal("[1+2j+3j]");
        not_literal("[set(1)]");
        not_literal("[sets()]");
    }

    #[test]
    fn dict_keys() {
        assert_eq!(
            text("{1: 'a', 1.5: 'b', 1e16: 'c', 1e-5: 'd', -0.0: 'e', 'k': 'f', None: 'g', False: 'h'}"),
            r#"{"1":"a","1.5":"b","1e+16":"c","1e-05":"d","-0.0":"h","k":"f","null":"g"}"#
        );
        assert_eq!(
            text("{1e400: 1, -1e400: 2}"),
            r#"{"Infinity":1,"-Infinity":2}"#
        );
        // Python's key equality: first key, last value.
        assert_eq!(text("{1: 'a', True: 'b'}"), r#"{"1":"b"}"#);
        assert_eq!(text("{True: 'a', 1: 'b', 1.0: 'c'}"), r#"{"true":"c"}"#);
        assert_eq!(
            text("{0.0: 'a', 0: 'b', False: 'c', -0: 'd'}"),
            r#"{"0.0":"d"}"#
        );
        assert_eq!(text("{'a': 1, 'b': 2, 'a': 3}"), r#"{"a":3,"b":2}"#);
        // Different Python keys with one JSON text: merged.
        assert_eq!(text("{1: 'a', '1': 'b'}"), r#"{"1":"b"}"#);
        assert_eq!(
            text("{1e22: 1, 10000000000000000000000: 2}"),
            r#"{"1e+22":2}"#
        );
        assert_eq!(
            text("{9007199254740993: 1, 9007199254740992.0: 2}"),
            r#"{"9007199254740993":1,"9007199254740992.0":2}"#
        );
    }

    #[test]
    fn bracket_depth() {
        let ok200 = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(literal(&ok200).is_some());
        let too_deep = format!("{}{}", "[".repeat(201), "]".repeat(201));
        not_literal(&too_deep);
        not_literal(&format!("[{}1]", "-".repeat(100_000)));
        not_literal(&format!("[1{}]", "+1".repeat(100_000)));
        not_literal(&"(".repeat(100_000));
    }
}
