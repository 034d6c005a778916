//! A small XML-RPC codec: exactly the subset the XenAPI SDKs speak.
//!
//! Parsing is bounded: nesting deeper than [`MAX_DEPTH`] is rejected, so a hostile body cannot
//! exhaust the stack. The HTTP layer bounds the body size.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::value::Value;

/// Deepest nesting of arrays/structs accepted.
pub const MAX_DEPTH: usize = 64;

/// An XML-RPC decoding error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed XML-RPC at byte {pos}: {msg}")]
pub struct XmlError {
    /// Byte offset of the problem.
    pub pos: usize,
    /// What was wrong.
    pub msg: String,
}

#[derive(Debug, PartialEq)]
enum Tok<'a> {
    Open(&'a str),
    /// A self-closing tag, `<nil/>`.
    Empty(&'a str),
    Close(&'a str),
    /// Character data as it stands in the body (entities resolved when it is used).
    Text(&'a str),
    Eof,
}

/// Which struct members to read: in structs at `depth`, only those named in `names` (the
/// others are skipped without building their values).
#[derive(Debug, Clone, Copy)]
struct Keep<'k> {
    depth: usize,
    names: &'k [&'k str],
}

struct Lexer<'a, 'k> {
    s: &'a str,
    pos: usize,
    peeked: Option<Tok<'a>>,
    keep: Option<Keep<'k>>,
}

impl<'a, 'k> Lexer<'a, 'k> {
    fn new(s: &'a str) -> Self {
        Lexer {
            s,
            pos: 0,
            peeked: None,
            keep: None,
        }
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T, XmlError> {
        Err(XmlError {
            pos: self.pos,
            msg: msg.into(),
        })
    }

    fn peek(&mut self) -> Result<&Tok<'a>, XmlError> {
        if self.peeked.is_none() {
            let t = self.lex()?;
            self.peeked = Some(t);
        }
        Ok(self.peeked.as_ref().expect("just filled"))
    }

    fn next(&mut self) -> Result<Tok<'a>, XmlError> {
        if let Some(t) = self.peeked.take() {
            return Ok(t);
        }
        self.lex()
    }

    /// Consumes `lit` if the body goes on with it and no token is peeked: the fast path for
    /// the compact form without whitespace that our encoder and XAPI write.
    #[inline]
    fn lit(&mut self, lit: &str) -> bool {
        if self.peeked.is_none() && self.s.as_bytes()[self.pos..].starts_with(lit.as_bytes()) {
            self.pos += lit.len();
            true
        } else {
            false
        }
    }

    /// A member written compactly, `<member><name>NAME</name><value>`: its name, with the
    /// lexer just after `<value>`; `None`, having consumed nothing, for any other form.
    fn compact_member(&mut self) -> Result<Option<Cow<'a, str>>, XmlError> {
        let start = self.pos;
        if !self.lit("<member><name>") {
            return Ok(None);
        }
        let s: &'a str = self.s;
        if let Some(end) = memchr::memchr(b'<', &s.as_bytes()[self.pos..]) {
            let raw = &s[self.pos..self.pos + end];
            self.pos += end;
            if self.lit("</name><value>") {
                return self.text(raw).map(Some);
            }
        }
        self.pos = start;
        Ok(None)
    }

    /// The inside of a `<value>` and its `</value>`: bare text (a string, the commonest
    /// value) is taken at once, anything else goes through [`Lexer::value_body`].
    fn value_fast(&mut self, depth: usize) -> Result<Value, XmlError> {
        if self.peeked.is_none() {
            let s: &'a str = self.s;
            let b = &s.as_bytes()[self.pos..];
            if let Some(end) = memchr::memchr(b'<', b) {
                if b[end..].starts_with(b"</value>") {
                    let v = self.text(&s[self.pos..self.pos + end])?.into_owned();
                    self.pos += end + "</value>".len();
                    return Ok(Value::String(v));
                }
            }
        }
        self.value_body(depth)
    }

    fn lex(&mut self) -> Result<Tok<'a>, XmlError> {
        loop {
            let s: &'a str = self.s;
            let rest = &s[self.pos..];
            let b = rest.as_bytes();
            if b.is_empty() {
                return Ok(Tok::Eof);
            }
            if b[0] != b'<' {
                let end = find_byte(b, b'<').unwrap_or(b.len());
                self.pos += end;
                return Ok(Tok::Text(&rest[..end]));
            }
            match b.get(1) {
                Some(b'?') => {
                    let end = rest[2..]
                        .find("?>")
                        .ok_or_else(|| self.mk("unterminated <?"))?;
                    self.pos += 2 + end + 2;
                    continue;
                }
                Some(b'!') => {
                    let Some(r) = rest.strip_prefix("<!--") else {
                        return self.err("DTDs and CDATA are not accepted");
                    };
                    let end = r
                        .find("-->")
                        .ok_or_else(|| self.mk("unterminated comment"))?;
                    self.pos += 4 + end + 3;
                    continue;
                }
                Some(b'/') => {
                    let r = &rest[2..];
                    let end = find_byte(r.as_bytes(), b'>')
                        .ok_or_else(|| self.mk("unterminated end tag"))?;
                    self.pos += 2 + end + 1;
                    return Ok(Tok::Close(r[..end].trim()));
                }
                _ => {}
            }
            let r = &rest[1..];
            // Tags without attributes (all the SDKs send) end at the first `>`.
            let first = r.bytes().position(|c| matches!(c, b'>' | b'"' | b'\''));
            let end = match first {
                Some(e) if r.as_bytes()[e] == b'>' => e,
                _ => tag_end(r).ok_or_else(|| self.mk("unterminated tag"))?,
            };
            let body = &r[..end];
            self.pos += 1 + end + 1;
            let (body, empty) = match body.strip_suffix('/') {
                Some(b) => (b, true),
                None => (body, false),
            };
            let name = if body.bytes().any(|c| c.is_ascii_whitespace()) {
                body.split_ascii_whitespace().next().unwrap_or("")
            } else {
                body
            };
            if name.is_empty() {
                return self.err("empty tag name");
            }
            return Ok(if empty {
                Tok::Empty(name)
            } else {
                Tok::Open(name)
            });
        }
    }

    fn mk(&self, msg: &str) -> XmlError {
        XmlError {
            pos: self.pos,
            msg: msg.to_owned(),
        }
    }

    /// Resolves the entities of `raw`, a slice of the body (errors point at its start).
    fn text(&self, raw: &'a str) -> Result<Cow<'a, str>, XmlError> {
        unescape(raw).map_err(|msg| XmlError {
            pos: raw.as_ptr() as usize - self.s.as_ptr() as usize,
            msg,
        })
    }

    /// Whether `raw` is only whitespace once its entities are resolved.
    fn blank(&self, raw: &'a str) -> Result<bool, XmlError> {
        Ok(self.text(raw)?.trim().is_empty())
    }

    /// Skips whitespace-only text.
    fn skip_ws(&mut self) -> Result<(), XmlError> {
        while let Tok::Text(t) = *self.peek()? {
            if !self.blank(t)? {
                let msg = format!("unexpected text {:?}", self.text(t)?);
                return self.err(msg);
            }
            self.next()?;
        }
        Ok(())
    }

    fn expect_open(&mut self, name: &str) -> Result<(), XmlError> {
        self.skip_ws()?;
        match self.next()? {
            Tok::Open(n) if n == name => Ok(()),
            t => self.err(format!("expected <{name}>, found {t:?}")),
        }
    }

    fn expect_close(&mut self, name: &str) -> Result<(), XmlError> {
        self.skip_ws()?;
        match self.next()? {
            Tok::Close(n) if n == name => Ok(()),
            t => self.err(format!("expected </{name}>, found {t:?}")),
        }
    }

    /// Text up to `</name>` (possibly empty).
    fn text_until_close(&mut self, name: &str) -> Result<Cow<'a, str>, XmlError> {
        let text = match self.peek()? {
            Tok::Text(_) => match self.next()? {
                Tok::Text(t) => self.text(t)?,
                _ => unreachable!("peeked text"),
            },
            _ => Cow::Borrowed(""),
        };
        match self.next()? {
            Tok::Close(n) if n == name => Ok(text),
            t => self.err(format!("expected </{name}>, found {t:?}")),
        }
    }

    /// Skips the inside of a `<value>` and its `</value>` without building it: only the
    /// balance of `<value>` tags is checked. Text and the exact tags `<value>`/`</value>` are
    /// passed over by a byte search; any other markup goes through the lexer.
    fn skip_value_body(&mut self) -> Result<(), XmlError> {
        let mut open = 1usize;
        loop {
            if self.peeked.is_none() {
                let b = &self.s.as_bytes()[self.pos..];
                let Some(i) = memchr::memchr(b'<', b) else {
                    self.pos = self.s.len();
                    return self.err("unterminated <value>");
                };
                let at = &b[i..];
                if at.starts_with(b"<value>") {
                    open += 1;
                    self.pos += i + "<value>".len();
                    continue;
                }
                if at.starts_with(b"</value>") {
                    self.pos += i + "</value>".len();
                    open -= 1;
                    if open == 0 {
                        return Ok(());
                    }
                    continue;
                }
                self.pos += i;
            }
            match self.next()? {
                Tok::Open("value") => open += 1,
                Tok::Close("value") => {
                    open -= 1;
                    if open == 0 {
                        return Ok(());
                    }
                }
                Tok::Eof => return self.err("unterminated <value>"),
                _ => {}
            }
        }
    }

    /// Whether a member named `name` of a struct at `depth` is to be skipped.
    fn skipped(&self, depth: usize, name: &str) -> bool {
        self.keep
            .is_some_and(|k| k.depth == depth && !k.names.contains(&name))
    }

    /// Parses the inside of `<value>` and its `</value>`.
    fn value_body(&mut self, depth: usize) -> Result<Value, XmlError> {
        if depth > MAX_DEPTH {
            return self.err("nesting too deep");
        }
        // Bare text is a string.
        let text = match self.peek()? {
            Tok::Text(_) => match self.next()? {
                Tok::Text(t) => Some(t),
                _ => unreachable!("peeked text"),
            },
            _ => None,
        };
        let typed = |lx: &Self| -> Result<(), XmlError> {
            match text {
                Some(t) if !lx.blank(t)? => lx.err("text before a typed value"),
                _ => Ok(()),
            }
        };
        match self.next()? {
            Tok::Close("value") => Ok(Value::String(match text {
                Some(t) => self.text(t)?.into_owned(),
                None => String::new(),
            })),
            Tok::Empty(tag) => {
                typed(self)?;
                let v = match tag {
                    "nil" => Value::Nil,
                    "string" => Value::String(String::new()),
                    "array" => Value::Array(vec![]),
                    "struct" => Value::Struct(BTreeMap::new()),
                    t => return self.err(format!("empty <{t}/>")),
                };
                self.expect_close("value")?;
                Ok(v)
            }
            Tok::Open(tag) => {
                typed(self)?;
                let v = match tag {
                    "string" | "base64" => Value::String(self.text_until_close(tag)?.into_owned()),
                    "int" | "i4" | "i8" => {
                        let t = self.text_until_close(tag)?;
                        Value::Int(t.trim().parse().or_else(|_| self.err("bad integer"))?)
                    }
                    "boolean" => match self.text_until_close(tag)?.trim() {
                        "1" => Value::Bool(true),
                        "0" => Value::Bool(false),
                        _ => return self.err("bad boolean"),
                    },
                    "double" => {
                        let t = self.text_until_close(tag)?;
                        Value::Double(t.trim().parse().or_else(|_| self.err("bad double"))?)
                    }
                    "dateTime.iso8601" => Value::DateTime(self.text_until_close(tag)?.into_owned()),
                    "nil" => {
                        self.text_until_close(tag)?;
                        Value::Nil
                    }
                    "array" => {
                        let mut items = Vec::new();
                        self.skip_ws()?;
                        match self.next()? {
                            Tok::Open("data") => loop {
                                if self.lit("<value>") {
                                    items.push(self.value_fast(depth + 1)?);
                                    continue;
                                }
                                if self.lit("</data>") {
                                    break;
                                }
                                self.skip_ws()?;
                                match self.next()? {
                                    Tok::Open("value") => items.push(self.value_fast(depth + 1)?),
                                    Tok::Close("data") => break,
                                    t => return self.err(format!("in <data>: {t:?}")),
                                }
                            },
                            Tok::Empty("data") => {}
                            t => return self.err(format!("expected <data>, found {t:?}")),
                        }
                        self.expect_close("array")?;
                        Value::Array(items)
                    }
                    "struct" => {
                        // Members in the order sent (sorted, from our encoder): the map is
                        // built in bulk at the end; a repeated name keeps its last value.
                        let mut members = Vec::new();
                        loop {
                            if let Some(k) = self.compact_member()? {
                                if self.skipped(depth, &k) {
                                    self.skip_value_body()?;
                                } else {
                                    let v = self.value_fast(depth + 1)?;
                                    members.push((k.into_owned(), v));
                                }
                                if !self.lit("</member>") {
                                    self.expect_close("member")?;
                                }
                                continue;
                            }
                            if self.lit("</struct>") {
                                break;
                            }
                            self.skip_ws()?;
                            match self.next()? {
                                Tok::Open("member") => {
                                    self.expect_open("name")?;
                                    let k = self.text_until_close("name")?;
                                    self.expect_open("value")?;
                                    if self.skipped(depth, &k) {
                                        self.skip_value_body()?;
                                    } else {
                                        let v = self.value_fast(depth + 1)?;
                                        members.push((k.into_owned(), v));
                                    }
                                    self.expect_close("member")?;
                                }
                                Tok::Close("struct") => break,
                                t => return self.err(format!("in <struct>: {t:?}")),
                            }
                        }
                        Value::Struct(members.into_iter().collect())
                    }
                    t => return self.err(format!("unknown type <{t}>")),
                };
                if !self.lit("</value>") {
                    self.expect_close("value")?;
                }
                Ok(v)
            }
            t => self.err(format!("in <value>: {t:?}")),
        }
    }

    fn params(&mut self) -> Result<Vec<Value>, XmlError> {
        let mut out = Vec::new();
        self.skip_ws()?;
        match self.peek()? {
            Tok::Empty("params") => {
                self.next()?;
                return Ok(out);
            }
            Tok::Open("params") => {
                self.next()?;
            }
            _ => return Ok(out),
        }
        loop {
            self.skip_ws()?;
            match self.next()? {
                Tok::Open("param") => {
                    self.expect_open("value")?;
                    out.push(self.value_body(0)?);
                    self.expect_close("param")?;
                }
                Tok::Close("params") => return Ok(out),
                t => return self.err(format!("in <params>: {t:?}")),
            }
        }
    }

    fn end(&mut self) -> Result<(), XmlError> {
        self.skip_ws()?;
        match self.next()? {
            Tok::Eof => Ok(()),
            t => self.err(format!("trailing {t:?}")),
        }
    }
}

/// The end of a tag's inside (the index of its `>`), skipping quoted attribute values.
fn tag_end(r: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in r.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

/// The index of the first `byte` in `s` (a plain loop: the runs between tags are short).
#[inline]
fn find_byte(s: &[u8], byte: u8) -> Option<usize> {
    s.iter().position(|&c| c == byte)
}

fn unescape(raw: &str) -> Result<Cow<'_, str>, String> {
    if !raw.bytes().fold(false, |any, c| any | (c == b'&')) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let r = &rest[i + 1..];
        let end = r.find(';').ok_or("unterminated entity")?;
        let ent = &r[..end];
        let c = match ent {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32)
                .ok_or("bad character reference")?,
            e if e.starts_with('#') => e[1..]
                .parse::<u32>()
                .ok()
                .and_then(char::from_u32)
                .ok_or("bad character reference")?,
            _ => return Err(format!("unknown entity &{ent};")),
        };
        out.push(c);
        rest = &r[end + 1..];
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

fn escape_into(out: &mut String, s: &str) {
    // Most strings need no escape: one branch-free pass finds out.
    let special = |c: u8| matches!(c, b'<' | b'>' | b'&' | b'\r');
    if !s.bytes().fold(false, |any, c| any | special(c)) {
        out.push_str(s);
        return;
    }
    // Runs without special characters are copied whole.
    let mut done = 0;
    for (i, b) in s.bytes().enumerate() {
        let entity = match b {
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'&' => "&amp;",
            b'\r' => "&#13;",
            _ => continue,
        };
        out.push_str(&s[done..i]);
        out.push_str(entity);
        done = i + 1;
    }
    out.push_str(&s[done..]);
}

/// Parses a `<methodCall>` into its method name and parameters.
pub fn parse_call(body: &str) -> Result<(String, Vec<Value>), XmlError> {
    let mut lx = Lexer::new(body);
    lx.expect_open("methodCall")?;
    lx.expect_open("methodName")?;
    let name = lx.text_until_close("methodName")?.trim().to_owned();
    let params = lx.params()?;
    lx.expect_close("methodCall")?;
    lx.end()?;
    Ok((name, params))
}

/// Parses a `<methodResponse>`: the value, or a fault as `Err((code, string))` inside `Ok`.
pub fn parse_response(body: &str) -> Result<Result<Value, Value>, XmlError> {
    response(Lexer::new(body))
}

/// [`parse_response`] for a `get_all_records` reply (`{Status, Value: {ref: record}}`) that
/// reads only the `fields` of each record: the other fields are skipped, not built (their
/// inside is not checked beyond the balance of `<value>` tags).
pub fn parse_records_response(
    body: &str,
    fields: &[&str],
) -> Result<Result<Value, Value>, XmlError> {
    let mut lx = Lexer::new(body);
    // The reply struct is at depth 0, its `Value` at 1, each record at 2.
    lx.keep = Some(Keep {
        depth: 2,
        names: fields,
    });
    response(lx)
}

fn response(mut lx: Lexer<'_, '_>) -> Result<Result<Value, Value>, XmlError> {
    lx.expect_open("methodResponse")?;
    lx.skip_ws()?;
    let r = match lx.peek()? {
        Tok::Open("fault") => {
            lx.next()?;
            lx.expect_open("value")?;
            let v = lx.value_body(0)?;
            lx.expect_close("fault")?;
            Err(v)
        }
        _ => {
            let mut p = lx.params()?;
            if p.len() != 1 {
                return lx.err("a response carries exactly one parameter");
            }
            Ok(p.pop().expect("one"))
        }
    };
    lx.expect_close("methodResponse")?;
    lx.end()?;
    Ok(r)
}

/// Appends the XML-RPC encoding of `v` (a `<value>` element) to `out`.
///
/// Strings are written bare (`<value>text</value>`, as XAPI writes them); each value is a few
/// appends of fixed text and the escaped payload, with no formatting machinery for integers.
pub fn encode_value(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => {
            out.push_str("<value>");
            escape_into(out, s);
            out.push_str("</value>");
        }
        Value::Int(i) => {
            out.push_str("<value><int>");
            out.push_str(itoa::Buffer::new().format(*i));
            out.push_str("</int></value>");
        }
        Value::Bool(true) => out.push_str("<value><boolean>1</boolean></value>"),
        Value::Bool(false) => out.push_str("<value><boolean>0</boolean></value>"),
        Value::Double(d) => {
            let _ = write!(out, "<value><double>{d:?}</double></value>");
        }
        Value::DateTime(s) => {
            out.push_str("<value><dateTime.iso8601>");
            escape_into(out, s);
            out.push_str("</dateTime.iso8601></value>");
        }
        Value::Array(a) => {
            out.push_str("<value><array><data>");
            for x in a {
                encode_value(out, x);
            }
            out.push_str("</data></array></value>");
        }
        Value::Struct(m) => {
            out.push_str("<value>");
            encode_struct(out, m);
            out.push_str("</value>");
        }
        Value::Nil => out.push_str("<value><nil/></value>"),
    }
}

/// Appends a `<struct>` (without the enclosing `<value>`) for a borrowed map.
pub fn encode_struct(out: &mut String, m: &BTreeMap<String, Value>) {
    out.push_str("<struct>");
    for (k, x) in m {
        open_member(out, k);
        encode_value(out, x);
        out.push_str("</member>");
    }
    out.push_str("</struct>");
}

/// Appends `<member><name>name</name>` (the caller adds the value and `</member>`).
#[inline]
pub fn open_member(out: &mut String, name: &str) {
    out.push_str("<member><name>");
    escape_into(out, name);
    out.push_str("</name>");
}

/// Encodes a successful `<methodResponse>` carrying `v`.
pub fn encode_response(v: &Value) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("<?xml version=\"1.0\"?>\n<methodResponse><params><param>");
    encode_value(&mut out, v);
    out.push_str("</param></params></methodResponse>\n");
    out
}

/// Encodes an XML-RPC fault (used only for requests that are not XML-RPC at all).
pub fn encode_fault(code: i64, msg: &str) -> String {
    let mut m = BTreeMap::new();
    m.insert("faultCode".to_owned(), Value::Int(code));
    m.insert("faultString".to_owned(), Value::str(msg));
    let mut out = String::from("<?xml version=\"1.0\"?>\n<methodResponse><fault>");
    encode_value(&mut out, &Value::Struct(m));
    out.push_str("</fault></methodResponse>\n");
    out
}

/// Encodes a `<methodCall>`.
pub fn encode_call(method: &str, params: &[Value]) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("<?xml version=\"1.0\"?>\n<methodCall><methodName>");
    escape_into(&mut out, method);
    out.push_str("</methodName><params>");
    for p in params {
        out.push_str("<param>");
        encode_value(&mut out, p);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>\n");
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_python_style_call() {
        let body = "<?xml version='1.0'?>\n<methodCall>\n<methodName>session.login_with_password</methodName>\n<params>\n<param>\n<value><string>root</string></value>\n</param>\n<param>\n<value><string>a&amp;b&lt;</string></value>\n</param>\n<param>\n<value><int>7</int></value>\n</param>\n<param><value><struct>\n<member>\n<name>k</name>\n<value><boolean>1</boolean></value>\n</member>\n</struct></value></param><param><value><nil/></value></param><param><value>bare</value></param>\n</params>\n</methodCall>\n";
        let (m, p) = parse_call(body).unwrap();
        assert_eq!(m, "session.login_with_password");
        assert_eq!(p[0], Value::str("root"));
        assert_eq!(p[1], Value::str("a&b<"));
        assert_eq!(p[2], Value::Int(7));
        assert_eq!(p[3].as_struct().unwrap()["k"], Value::Bool(true));
        assert_eq!(p[4], Value::Nil);
        assert_eq!(p[5], Value::str("bare"));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "<methodCall>",
            "<methodCall><methodName>x</methodName><params><param><value><int>z</int></value></param></params></methodCall>",
            "<methodCall><methodName>x</methodName></methodCall>junk",
            "<!DOCTYPE x [<!ENTITY a 'b'>]><methodCall/>",
            "<methodCall><methodName>x&bogus;</methodName></methodCall>",
            "<methodCall><methodName>x</methodName><params><param><value><wat>1</wat></value></param></params></methodCall>",
        ] {
            assert!(parse_call(bad).is_err(), "{bad}");
        }
        let deep = format!(
            "<methodCall><methodName>x</methodName><params><param><value>{}1{}</value></param></params></methodCall>",
            "<array><data><value>".repeat(200),
            "</value></data></array>".repeat(200)
        );
        assert!(parse_call(&deep).unwrap_err().msg.contains("deep"));
    }

    fn records_reply() -> Value {
        let rec = |i: i64| {
            Value::Struct(
                [
                    ("uuid", Value::String(format!("u{i}"))),
                    ("name_label", Value::str("a<&>b")),
                    ("other_config", {
                        let inner = [("k".to_owned(), Value::Array(vec![Value::Int(i)]))];
                        Value::Struct(inner.into_iter().collect())
                    }),
                    ("VCPUs", Value::Int(i)),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            )
        };
        let recs = (0..3).map(|i| (format!("OpaqueRef:{i}"), rec(i))).collect();
        Value::Struct(
            [
                ("Status".to_owned(), Value::str("Success")),
                ("Value".to_owned(), Value::Struct(recs)),
            ]
            .into_iter()
            .collect(),
        )
    }

    #[test]
    fn records_reply_keeps_only_the_fields_asked_for() {
        let full = records_reply();
        let body = encode_response(&full);
        let Ok(Value::Struct(got)) =
            parse_records_response(&body, &["name_label", "VCPUs"]).unwrap()
        else {
            panic!("not a struct");
        };
        assert_eq!(got["Status"], Value::str("Success"));
        let want = full.as_struct().unwrap()["Value"].as_struct().unwrap();
        let got = got["Value"].as_struct().unwrap();
        assert_eq!(got.len(), 3);
        for (r, rec) in want {
            let mut rec = rec.as_struct().unwrap().clone();
            rec.retain(|k, _| k == "name_label" || k == "VCPUs");
            assert_eq!(got[r], Value::Struct(rec), "{r}");
        }
        // Nothing asked for: empty records, still one per reference.
        let none = parse_records_response(&body, &[]).unwrap().unwrap();
        let none = none.as_struct().unwrap()["Value"].as_struct().unwrap();
        assert!(none.values().all(|r| r == &Value::Struct(BTreeMap::new())));
        assert_eq!(none.len(), 3);
        // A failure is read whole.
        let fail = encode_response(&Value::Struct(
            [
                ("Status".to_owned(), Value::str("Failure")),
                (
                    "ErrorDescription".to_owned(),
                    Value::Array(vec![Value::str("SESSION_INVALID"), Value::str("x")]),
                ),
            ]
            .into_iter()
            .collect(),
        ));
        assert_eq!(parse_records_response(&fail, &[]), parse_response(&fail));
    }

    #[test]
    fn a_skipped_field_must_still_be_balanced() {
        let body = encode_response(&records_reply());
        // Cut inside a skipped map: an error, not a shorter answer.
        let cut = &body[..body.find("<name>k</name>").unwrap()];
        let e = parse_records_response(cut, &["uuid"]).unwrap_err();
        assert!(e.msg.contains("unterminated <value>"), "{e}");
        // An extra `</value>` in a skipped field ends it early, and the rest does not fit.
        let extra = body.replacen("<name>k</name><value>", "<name>k</name><value></value>", 1);
        assert!(parse_records_response(&extra, &["uuid"]).is_err());
    }

    #[test]
    fn a_skipped_field_may_hold_any_markup() {
        // A comment, a typed value with attributes and a self-closing value inside a skipped
        // field: only real `<value>` tags count.
        let body = "<methodResponse><params><param><value><struct>\
            <member><name>Status</name><value>Success</value></member>\
            <member><name>Value</name><value><struct><member><name>r</name><value><struct>\
            <member><name>skip</name><value><!-- </value> --><array a=\"1\"><data><value/>\
            <value><string>x</string></value></data></array></value></member>\
            <member><name>keep</name><value>k</value></member>\
            </struct></value></member></struct></value></member></struct></value></param></params></methodResponse>";
        let got = parse_records_response(body, &["keep"]).unwrap().unwrap();
        let rec = &got.as_struct().unwrap()["Value"].as_struct().unwrap()["r"];
        assert_eq!(
            rec,
            &Value::Struct([("keep".to_owned(), Value::str("k"))].into_iter().collect())
        );
        // A skipped field that ends in a DTD is refused, as the token loop refuses it.
        let bad = body.replace("<!-- </value> -->", "<!DOCTYPE x>");
        assert!(parse_records_response(&bad, &["keep"]).is_err());
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<String>().prop_map(|s| Value::String(s.replace('\r', ""))),
            any::<i32>().prop_map(|i| Value::Int(i.into())),
            any::<bool>().prop_map(Value::Bool),
            (-1e12f64..1e12).prop_map(Value::Double),
            Just(Value::Nil),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map("[a-zA-Z_ <&>]{0,12}", inner, 0..8)
                    .prop_map(Value::Struct),
            ]
        })
    }

    proptest! {
        #[test]
        fn call_round_trip(m in "[A-Za-z_.]{1,30}", p in prop::collection::vec(arb_value(), 0..5)) {
            let s = encode_call(&m, &p);
            let (m2, p2) = parse_call(&s).unwrap();
            prop_assert_eq!(m2, m);
            // The control characters XML cannot carry aside, values survive unchanged.
            prop_assert_eq!(p2, p);
        }

        #[test]
        fn response_round_trip(v in arb_value()) {
            let s = encode_response(&v);
            prop_assert_eq!(parse_response(&s).unwrap(), Ok(v));
        }

        #[test]
        fn records_reply_reads_what_it_keeps(v in arb_value(), keep in prop::collection::vec("[a-zA-Z_ <&>]{0,12}", 0..4)) {
            // Any value as one record: the kept members are exactly those of the full parse.
            let reply = Value::Struct([
                ("Status".to_owned(), Value::str("Success")),
                ("Value".to_owned(), Value::Struct([("r".to_owned(), v.clone())].into_iter().collect())),
            ].into_iter().collect());
            let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
            let got = parse_records_response(&encode_response(&reply), &keep).unwrap().unwrap();
            let want = match v {
                Value::Struct(mut m) => {
                    m.retain(|k, _| keep.contains(&k.as_str()));
                    Value::Struct(m)
                }
                other => other,
            };
            prop_assert_eq!(&got.as_struct().unwrap()["Value"].as_struct().unwrap()["r"], &want);
        }

        #[test]
        fn spaced_and_compact_replies_parse_alike(v in arb_value(), keep in prop::collection::vec("[a-zA-Z_ <&>]{0,12}", 0..4)) {
            // The compact form takes the fast paths, the spaced one (as Python writes) the
            // token loop: both give the same value, and skip the same members.
            let compact = encode_response(&v);
            let mut spaced = compact.clone();
            for tag in ["<member>", "</member>", "<struct>", "<data>", "</name>", "<param>"] {
                spaced = spaced.replace(tag, &format!("{tag}\n  "));
            }
            prop_assert_eq!(parse_response(&spaced).unwrap(), Ok(v.clone()));
            prop_assert_eq!(parse_response(&compact).unwrap(), Ok(v));
            let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
            prop_assert_eq!(
                parse_records_response(&spaced, &keep).unwrap(),
                parse_records_response(&compact, &keep).unwrap()
            );
        }

        #[test]
        fn garbage_never_panics(s in ".{0,200}") {
            let _ = parse_call(&s);
            let _ = parse_response(&s);
            let _ = parse_records_response(&s, &["a"]);
        }
    }
}
