//! A small XML-RPC codec: exactly the subset the XenAPI SDKs speak.
//!
//! Parsing is bounded: nesting deeper than [`MAX_DEPTH`] is rejected, so a hostile body cannot
//! exhaust the stack. The HTTP layer bounds the body size.

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
    Text(String),
    Eof,
}

struct Lexer<'a> {
    s: &'a str,
    pos: usize,
    peeked: Option<(Tok<'a>, usize)>,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Self {
        Lexer {
            s,
            pos: 0,
            peeked: None,
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
            self.peeked = Some((t, self.pos));
        }
        Ok(&self.peeked.as_ref().expect("just filled").0)
    }

    fn next(&mut self) -> Result<Tok<'a>, XmlError> {
        if let Some((t, _)) = self.peeked.take() {
            return Ok(t);
        }
        self.lex()
    }

    fn lex(&mut self) -> Result<Tok<'a>, XmlError> {
        loop {
            let rest = &self.s[self.pos..];
            if rest.is_empty() {
                return Ok(Tok::Eof);
            }
            if let Some(r) = rest.strip_prefix("<?") {
                let end = r.find("?>").ok_or_else(|| self.mk("unterminated <?"))?;
                self.pos += 2 + end + 2;
                continue;
            }
            if let Some(r) = rest.strip_prefix("<!--") {
                let end = r
                    .find("-->")
                    .ok_or_else(|| self.mk("unterminated comment"))?;
                self.pos += 4 + end + 3;
                continue;
            }
            if rest.starts_with("<!") {
                return self.err("DTDs and CDATA are not accepted");
            }
            if let Some(r) = rest.strip_prefix("</") {
                let end = r.find('>').ok_or_else(|| self.mk("unterminated end tag"))?;
                let name = r[..end].trim();
                self.pos += 2 + end + 1;
                return Ok(Tok::Close(name));
            }
            if let Some(r) = rest.strip_prefix('<') {
                // Find the end of the tag, skipping quoted attribute values.
                let mut quote = None;
                let mut end = None;
                for (i, c) in r.char_indices() {
                    match (quote, c) {
                        (Some(q), c) if c == q => quote = None,
                        (Some(_), _) => {}
                        (None, '"' | '\'') => quote = Some(c),
                        (None, '>') => {
                            end = Some(i);
                            break;
                        }
                        _ => {}
                    }
                }
                let end = end.ok_or_else(|| self.mk("unterminated tag"))?;
                let body = &r[..end];
                self.pos += 1 + end + 1;
                let (body, empty) = match body.strip_suffix('/') {
                    Some(b) => (b, true),
                    None => (body, false),
                };
                let name = body.split_ascii_whitespace().next().unwrap_or("");
                if name.is_empty() {
                    return self.err("empty tag name");
                }
                return Ok(if empty {
                    Tok::Empty(name)
                } else {
                    Tok::Open(name)
                });
            }
            let end = rest.find('<').unwrap_or(rest.len());
            let raw = &rest[..end];
            let start = self.pos;
            self.pos += end;
            return unescape(raw)
                .map(Tok::Text)
                .map_err(|msg| XmlError { pos: start, msg });
        }
    }

    fn mk(&self, msg: &str) -> XmlError {
        XmlError {
            pos: self.pos,
            msg: msg.to_owned(),
        }
    }

    /// Skips whitespace-only text.
    fn skip_ws(&mut self) -> Result<(), XmlError> {
        while let Tok::Text(t) = self.peek()? {
            if !t.trim().is_empty() {
                let msg = format!("unexpected text {t:?}");
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
    fn text_until_close(&mut self, name: &str) -> Result<String, XmlError> {
        let text = match self.peek()? {
            Tok::Text(_) => match self.next()? {
                Tok::Text(t) => t,
                _ => unreachable!("peeked text"),
            },
            _ => String::new(),
        };
        match self.next()? {
            Tok::Close(n) if n == name => Ok(text),
            t => self.err(format!("expected </{name}>, found {t:?}")),
        }
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
        match self.next()? {
            Tok::Close("value") => Ok(Value::String(text.unwrap_or_default())),
            Tok::Empty(tag) => {
                if text.as_deref().is_some_and(|t| !t.trim().is_empty()) {
                    return self.err("text before a typed value");
                }
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
                if text.as_deref().is_some_and(|t| !t.trim().is_empty()) {
                    return self.err("text before a typed value");
                }
                let v = match tag {
                    "string" | "base64" => Value::String(self.text_until_close(tag)?),
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
                    "dateTime.iso8601" => Value::DateTime(self.text_until_close(tag)?),
                    "nil" => {
                        self.text_until_close(tag)?;
                        Value::Nil
                    }
                    "array" => {
                        let mut items = Vec::new();
                        self.skip_ws()?;
                        match self.next()? {
                            Tok::Open("data") => loop {
                                self.skip_ws()?;
                                match self.next()? {
                                    Tok::Open("value") => items.push(self.value_body(depth + 1)?),
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
                        let mut m = BTreeMap::new();
                        loop {
                            self.skip_ws()?;
                            match self.next()? {
                                Tok::Open("member") => {
                                    self.expect_open("name")?;
                                    let k = self.text_until_close("name")?;
                                    self.expect_open("value")?;
                                    let v = self.value_body(depth + 1)?;
                                    self.expect_close("member")?;
                                    m.insert(k, v);
                                }
                                Tok::Close("struct") => break,
                                t => return self.err(format!("in <struct>: {t:?}")),
                            }
                        }
                        Value::Struct(m)
                    }
                    t => return self.err(format!("unknown type <{t}>")),
                };
                self.expect_close("value")?;
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

fn unescape(raw: &str) -> Result<String, String> {
    if !raw.contains('&') {
        return Ok(raw.to_owned());
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
    Ok(out)
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
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
    let mut lx = Lexer::new(body);
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
pub fn encode_value(out: &mut String, v: &Value) {
    out.push_str("<value>");
    match v {
        Value::String(s) => escape_into(out, s),
        Value::Int(i) => {
            let _ = write!(out, "<int>{i}</int>");
        }
        Value::Bool(b) => {
            let _ = write!(out, "<boolean>{}</boolean>", u8::from(*b));
        }
        Value::Double(d) => {
            let _ = write!(out, "<double>{d:?}</double>");
        }
        Value::DateTime(s) => {
            out.push_str("<dateTime.iso8601>");
            escape_into(out, s);
            out.push_str("</dateTime.iso8601>");
        }
        Value::Array(a) => {
            out.push_str("<array><data>");
            for x in a {
                encode_value(out, x);
            }
            out.push_str("</data></array>");
        }
        Value::Struct(m) => encode_struct(out, m),
        Value::Nil => out.push_str("<nil/>"),
    }
    out.push_str("</value>");
}

/// Appends a `<struct>` (without the enclosing `<value>`) for a borrowed map.
pub fn encode_struct(out: &mut String, m: &BTreeMap<String, Value>) {
    out.push_str("<struct>");
    for (k, x) in m {
        out.push_str("<member><name>");
        escape_into(out, k);
        out.push_str("</name>");
        encode_value(out, x);
        out.push_str("</member>");
    }
    out.push_str("</struct>");
}

/// Appends `<member><name>name</name>` (the caller adds the value and `</member>`).
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
        fn garbage_never_panics(s in ".{0,200}") {
            let _ = parse_call(&s);
            let _ = parse_response(&s);
        }
    }
}
