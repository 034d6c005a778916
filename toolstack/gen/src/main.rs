//! Extracts the XenAPI datamodel facts from xen-api's published description, and generates the
//! toolstack's Rust tables from those facts.
//!
//! Two steps, both deterministic:
//! - `toolstack-gen facts XENAPI_JSON DATAMODEL_ERRORS_ML API_ERRORS_ML COMMIT OUT_JSON`: reads
//!   xen-api's `doc/data/xenapi.json` (the output of its own `ocaml/idl/json_backend`), and the
//!   error table of `ocaml/idl/datamodel_errors.ml` with the codes of
//!   `ocaml/xapi-consts/api_errors.ml`, and writes the facts only (names, types, qualifiers,
//!   defaults, lifecycle states, message parameters and declared errors, error parameters; no
//!   prose);
//! - `toolstack-gen tables FACTS_JSON OUT_RS`: writes the Rust tables; `toolstack-gen check
//!   FACTS_JSON COMMITTED_RS` fails if the committed tables are not what `tables` makes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

/// The facts file.
#[derive(Debug, Serialize, Deserialize)]
struct Facts {
    source: Source,
    classes: Vec<ClassF>,
    enums: Vec<EnumF>,
    errors: Vec<ErrorF>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Source {
    repository: String,
    commit: String,
    files: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ClassF {
    name: String,
    state: String,
    fields: Vec<FieldF>,
    messages: Vec<MessageF>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FieldF {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    qualifier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default: Option<String>,
    state: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct MessageF {
    name: String,
    result: String,
    params: Vec<ParamF>,
    errors: Vec<String>,
    implicit: bool,
    state: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ParamF {
    name: String,
    #[serde(rename = "type")]
    ty: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct EnumF {
    name: String,
    values: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ErrorF {
    code: String,
    params: Vec<String>,
}

type Res<T> = Result<T, String>;

fn read(path: &str) -> Res<String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

fn state(v: &serde_json::Value) -> String {
    v["lifecycle"]["state"]
        .as_str()
        .unwrap_or("Published_s")
        .trim_end_matches("_s")
        .to_owned()
}

fn text(v: &serde_json::Value, key: &str) -> Res<String> {
    v[key]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("missing string {key:?} in {}", short(v)))
}

fn short(v: &serde_json::Value) -> String {
    let s = v.to_string();
    s.chars().take(120).collect()
}

/// Reads xen-api's `xenapi.json` (a list of classes) into facts.
fn classes_of(json: &serde_json::Value) -> Res<(Vec<ClassF>, Vec<EnumF>)> {
    let list = json
        .as_array()
        .ok_or("xenapi.json: expected a list of classes")?;
    let mut classes = Vec::new();
    let mut enums: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in list {
        let mut fields = Vec::new();
        for f in c["fields"].as_array().ok_or("class without fields")? {
            fields.push(FieldF {
                name: text(f, "name")?,
                ty: text(f, "type")?,
                qualifier: text(f, "qualifier")?,
                default: f["default"].as_str().map(str::to_owned),
                state: state(f),
            });
        }
        let mut messages = Vec::new();
        for m in c["messages"].as_array().ok_or("class without messages")? {
            let params = m["params"]
                .as_array()
                .ok_or("message without params")?
                .iter()
                .map(|p| {
                    Ok(ParamF {
                        name: text(p, "name")?,
                        ty: text(p, "type")?,
                    })
                })
                .collect::<Res<Vec<_>>>()?;
            let errors = m["errors"]
                .as_array()
                .ok_or("message without errors")?
                .iter()
                .map(|e| text(e, "name"))
                .collect::<Res<Vec<_>>>()?;
            let result = m["result"]
                .as_array()
                .and_then(|r| r.first())
                .and_then(|r| r.as_str())
                .ok_or_else(|| format!("message without result: {}", short(m)))?
                .to_owned();
            messages.push(MessageF {
                name: text(m, "name")?,
                result,
                params,
                errors,
                implicit: m["implicit"].as_bool().unwrap_or(false),
                state: state(m),
            });
        }
        for e in c["enums"].as_array().ok_or("class without enums")? {
            let values = e["values"]
                .as_array()
                .ok_or("enum without values")?
                .iter()
                .map(|v| text(v, "name"))
                .collect::<Res<Vec<_>>>()?;
            let name = text(e, "name")?;
            if let Some(old) = enums.get(&name) {
                if *old != values {
                    return Err(format!("enum {name} declared twice with other values"));
                }
            }
            enums.insert(name, values);
        }
        classes.push(ClassF {
            name: text(c, "name")?,
            state: state(c),
            fields,
            messages,
        });
    }
    let enums = enums
        .into_iter()
        .map(|(name, values)| EnumF { name, values })
        .collect();
    Ok((classes, enums))
}

/// `let ident = "CODE"` bindings of `api_errors.ml` (also `a ^ b` of earlier bindings and
/// literals).
fn error_codes(ml: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for item in ml.split("\nlet ").skip(1) {
        let ident: String = item
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let Some(expr) = item[ident.len()..].trim_start().strip_prefix('=') else {
            continue;
        };
        let expr = expr.split("\n\n").next().unwrap_or("");
        let value = expr
            .split('^')
            .map(|t| {
                let t = t.trim();
                match t.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
                    Some(lit) => Some(lit.to_owned()),
                    None => out.get(t).cloned(),
                }
            })
            .collect::<Option<String>>();
        if let Some(v) = value {
            out.insert(ident, v);
        }
    }
    out
}

/// `error Api_errors.ident ["p1"; "p2"]` declarations of `datamodel_errors.ml`, in order.
fn error_table(ml: &str, codes: &BTreeMap<String, String>) -> Res<Vec<ErrorF>> {
    const KEY: &str = "error Api_errors.";
    let mut out = Vec::new();
    let mut rest = ml;
    while let Some(i) = rest.find(KEY) {
        rest = &rest[i + KEY.len()..];
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let after = rest[ident.len()..].trim_start();
        let list = after
            .strip_prefix('[')
            .and_then(|l| l.find(']').map(|e| &l[..e]))
            .ok_or_else(|| format!("error {ident}: no parameter list"))?;
        let params = list
            .split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.strip_prefix('"')
                    .and_then(|p| p.strip_suffix('"'))
                    .map(str::to_owned)
                    .ok_or_else(|| format!("error {ident}: parameter {p} is not a literal"))
            })
            .collect::<Res<Vec<_>>>()?;
        let code = codes
            .get(&ident)
            .ok_or_else(|| format!("Api_errors.{ident} has no code in api_errors.ml"))?;
        out.push(ErrorF {
            code: code.clone(),
            params,
        });
    }
    Ok(out)
}

/// Writes the facts with one field, message, enum or error per line (diffs stay readable).
fn facts_json(f: &Facts) -> Res<String> {
    let j = |v: &dyn erased::Ser| v.json();
    let mut out = String::from("{\n");
    writeln!(out, "\"source\": {},", j(&f.source)?).ok();
    out.push_str("\"classes\": [\n");
    for (ci, c) in f.classes.iter().enumerate() {
        writeln!(
            out,
            "{{\"name\": {}, \"state\": {},",
            j(&c.name)?,
            j(&c.state)?
        )
        .ok();
        out.push_str(" \"fields\": [\n");
        for (i, x) in c.fields.iter().enumerate() {
            let sep = if i + 1 < c.fields.len() { "," } else { "" };
            writeln!(out, "  {}{sep}", j(x)?).ok();
        }
        out.push_str(" ],\n \"messages\": [\n");
        for (i, x) in c.messages.iter().enumerate() {
            let sep = if i + 1 < c.messages.len() { "," } else { "" };
            writeln!(out, "  {}{sep}", j(x)?).ok();
        }
        let sep = if ci + 1 < f.classes.len() { "," } else { "" };
        writeln!(out, " ]}}{sep}").ok();
    }
    out.push_str("],\n\"enums\": [\n");
    for (i, x) in f.enums.iter().enumerate() {
        let sep = if i + 1 < f.enums.len() { "," } else { "" };
        writeln!(out, " {}{sep}", j(x)?).ok();
    }
    out.push_str("],\n\"errors\": [\n");
    for (i, x) in f.errors.iter().enumerate() {
        let sep = if i + 1 < f.errors.len() { "," } else { "" };
        writeln!(out, " {}{sep}", j(x)?).ok();
    }
    out.push_str("]\n}\n");
    Ok(out)
}

mod erased {
    /// Serialises any of the facts' parts to one line of JSON.
    pub trait Ser {
        fn json(&self) -> Result<String, String>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> Result<String, String> {
            serde_json::to_string(self).map_err(|e| e.to_string())
        }
    }
}

/// A parsed datamodel type.
#[derive(Debug, Clone)]
enum Ty {
    Prim(&'static str),
    Enum(String),
    Ref(String),
    Record(String),
    Set(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
    Option(Box<Ty>),
}

fn parse_ty(s: &str) -> Res<Ty> {
    let s = s.trim();
    if let Some(inner) = s.strip_suffix(" map") {
        let inner = inner
            .strip_prefix('(')
            .and_then(|i| i.strip_suffix(')'))
            .ok_or_else(|| format!("bad map type {s}"))?;
        let mut depth = 0i32;
        let bytes = inner.as_bytes();
        for i in 0..bytes.len() {
            match bytes[i] {
                b'(' => depth += 1,
                b')' => depth -= 1,
                b'-' if depth == 0 && inner[i..].starts_with("-> ") => {
                    return Ok(Ty::Map(
                        Box::new(parse_ty(&inner[..i])?),
                        Box::new(parse_ty(&inner[i + 2..])?),
                    ));
                }
                _ => {}
            }
        }
        return Err(format!("bad map type {s}"));
    }
    if let Some(inner) = s.strip_suffix(" set") {
        return Ok(Ty::Set(Box::new(parse_ty(inner)?)));
    }
    if let Some(inner) = s.strip_suffix(" option") {
        return Ok(Ty::Option(Box::new(parse_ty(inner)?)));
    }
    if let Some(c) = s.strip_suffix(" ref") {
        return Ok(Ty::Ref(c.to_owned()));
    }
    if let Some(c) = s.strip_suffix(" record") {
        return Ok(Ty::Record(c.to_owned()));
    }
    if let Some(e) = s.strip_prefix("enum ") {
        return Ok(Ty::Enum(e.to_owned()));
    }
    Ok(Ty::Prim(match s {
        "string" => "String",
        "int" => "Int",
        "float" => "Float",
        "bool" => "Bool",
        "datetime" => "DateTime",
        "void" => "Void",
        // `event.from` has a custom marshaller: {events, valid_ref_counts, token}.
        "an event batch" => "EventBatch",
        other => return Err(format!("unknown type {other}")),
    }))
}

fn rust_ty(t: &Ty) -> String {
    match t {
        Ty::Prim(p) => format!("Type::{p}"),
        Ty::Enum(e) => format!("Type::Enum({e:?})"),
        Ty::Ref(c) => format!("Type::Ref({c:?})"),
        Ty::Record(c) => format!("Type::Record({c:?})"),
        Ty::Set(x) => format!("Type::Set(&{})", rust_ty(x)),
        Ty::Map(k, v) => format!("Type::Map(&{}, &{})", rust_ty(k), rust_ty(v)),
        Ty::Option(x) => format!("Type::Option(&{})", rust_ty(x)),
    }
}

/// Splits `a, b, c` at top level (outside quotes and braces).
fn split_top(s: &str, sep: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => quoted = !quoted,
            b'{' if !quoted => depth += 1,
            b'}' if !quoted => depth -= 1,
            _ if !quoted && depth == 0 && s[i..].starts_with(sep) => {
                out.push(s[start..i].to_owned());
                i += sep.len();
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if start < s.len() {
        out.push(s[start..].to_owned());
    }
    out
}

/// A default value as a Rust `Dv` expression.
fn rust_default(t: &Ty, d: &str) -> Res<String> {
    let d = d.trim();
    let bad = || format!("default {d:?} does not fit {t:?}");
    Ok(match t {
        Ty::Prim("String") => {
            let s = d
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .unwrap_or(d);
            format!("Dv::Str({s:?})")
        }
        Ty::Prim("Int") => format!("Dv::Int({})", d.parse::<i64>().map_err(|_| bad())?),
        Ty::Prim("Float") => format!("Dv::Float({:?})", d.parse::<f64>().map_err(|_| bad())?),
        Ty::Prim("Bool") => format!("Dv::Bool({})", d.parse::<bool>().map_err(|_| bad())?),
        Ty::Prim("DateTime") => format!("Dv::DateTime({d:?})"),
        Ty::Enum(_) => format!("Dv::Str({d:?})"),
        Ty::Ref(_) => {
            let r = if d == "Null" || d.is_empty() {
                "OpaqueRef:NULL"
            } else {
                d
            };
            format!("Dv::Str({r:?})")
        }
        Ty::Set(x) => {
            let inner = d
                .strip_prefix('{')
                .and_then(|x| x.strip_suffix('}'))
                .ok_or_else(bad)?;
            let items = split_top(inner, ", ")
                .iter()
                .map(|i| rust_default(x, i))
                .collect::<Res<Vec<_>>>()?;
            format!("Dv::Set(&[{}])", items.join(", "))
        }
        Ty::Map(k, v) => {
            let inner = d
                .strip_prefix('{')
                .and_then(|x| x.strip_suffix('}'))
                .ok_or_else(bad)?;
            let mut items = Vec::new();
            for kv in split_top(inner, ", ") {
                let parts = split_top(&kv, " -> ");
                let [a, b] = parts.as_slice() else {
                    return Err(bad());
                };
                items.push(format!(
                    "({}, {})",
                    rust_default(k, a)?,
                    rust_default(v, b)?
                ));
            }
            format!("Dv::Map(&[{}])", items.join(", "))
        }
        Ty::Option(x) => rust_default(x, d)?,
        _ => return Err(bad()),
    })
}

fn qual(q: &str) -> Res<&'static str> {
    Ok(match q {
        "RW" => "Qualifier::RW",
        "RO/constructor" => "Qualifier::StaticRO",
        "RO/runtime" => "Qualifier::DynamicRO",
        other => return Err(format!("unknown qualifier {other}")),
    })
}

fn lifecycle(s: &str) -> Res<&'static str> {
    Ok(match s {
        "Published" => "State::Published",
        "Prototyped" => "State::Prototyped",
        "Deprecated" => "State::Deprecated",
        "Removed" => "State::Removed",
        "Unreleased" => "State::Unreleased",
        other => return Err(format!("unknown lifecycle state {other}")),
    })
}

/// The Rust tables for a facts file.
fn tables(f: &Facts) -> Res<String> {
    let mut o = String::new();
    writeln!(
        o,
        "// @generated by toolstack-gen from toolstack/datamodel/xenapi.facts.json: do not edit.\n\
         // Regenerate with toolstack/regen.sh.\n"
    )
    .ok();
    writeln!(
        o,
        "/// The repository the facts were extracted from.\npub const SOURCE_REPOSITORY: &str = {:?};",
        f.source.repository
    )
    .ok();
    writeln!(
        o,
        "/// The commit of [`SOURCE_REPOSITORY`] the facts were extracted from.\npub const SOURCE_COMMIT: &str = {:?};\n",
        f.source.commit
    )
    .ok();
    o.push_str("/// Every class of the datamodel, in the datamodel's order.\npub static CLASSES: &[ClassDef] = &[\n");
    for c in &f.classes {
        writeln!(
            o,
            "ClassDef {{ name: {:?}, state: {}, fields: &[",
            c.name,
            lifecycle(&c.state)?
        )
        .ok();
        for x in &f_fields(c) {
            o.push_str(x);
        }
        o.push_str("], messages: &[\n");
        for m in &c.messages {
            let result = if m.result == "void" {
                "None".to_owned()
            } else {
                format!("Some(&{})", rust_ty(&parse_ty(&m.result)?))
            };
            let params = m
                .params
                .iter()
                .map(|p| {
                    Ok(format!(
                        "ParamDef {{ name: {:?}, ty: &{} }}",
                        p.name,
                        rust_ty(&parse_ty(&p.ty)?)
                    ))
                })
                .collect::<Res<Vec<_>>>()?;
            writeln!(
                o,
                "  MessageDef {{ name: {:?}, result: {result}, params: &[{}], errors: &{:?}, implicit: {}, state: {} }},",
                m.name,
                params.join(", "),
                m.errors,
                m.implicit,
                lifecycle(&m.state)?
            )
            .ok();
        }
        o.push_str("] },\n");
    }
    o.push_str("];\n\n/// Every enumeration of the datamodel, by name.\npub static ENUMS: &[EnumDef] = &[\n");
    for e in &f.enums {
        writeln!(
            o,
            "EnumDef {{ name: {:?}, values: &{:?} }},",
            e.name, e.values
        )
        .ok();
    }
    o.push_str("];\n\n/// Every error of the datamodel (`datamodel_errors.ml`), in its order.\npub static ERRORS: &[ErrorDef] = &[\n");
    for e in &f.errors {
        writeln!(
            o,
            "ErrorDef {{ code: {:?}, params: &{:?} }},",
            e.code, e.params
        )
        .ok();
    }
    o.push_str("];\n");
    return Ok(o);

    fn f_fields(c: &ClassF) -> Vec<String> {
        c.fields
            .iter()
            .map(|x| {
                let t = parse_ty(&x.ty).unwrap_or(Ty::Prim("Void"));
                let default = match &x.default {
                    Some(d) => format!("Some({})", rust_default(&t, d).unwrap_or_else(|e| panic!("{}.{}: {e}", c.name, x.name))),
                    None => "None".into(),
                };
                format!(
                    "  FieldDef {{ name: {:?}, ty: &{}, qual: {}, default: {default}, state: {} }},\n",
                    x.name,
                    rust_ty(&t),
                    qual(&x.qualifier).unwrap_or_else(|e| panic!("{}.{}: {e}", c.name, x.name)),
                    lifecycle(&x.state).unwrap_or_else(|e| panic!("{}.{}: {e}", c.name, x.name)),
                )
            })
            .collect()
    }
}

/// Checks the facts before generating: every field and parameter type parses.
fn validate(f: &Facts) -> Res<()> {
    for c in &f.classes {
        for x in &c.fields {
            let t = parse_ty(&x.ty).map_err(|e| format!("{}.{}: {e}", c.name, x.name))?;
            qual(&x.qualifier).map_err(|e| format!("{}.{}: {e}", c.name, x.name))?;
            lifecycle(&x.state)?;
            if let Some(d) = &x.default {
                rust_default(&t, d).map_err(|e| format!("{}.{}: {e}", c.name, x.name))?;
            }
        }
        for m in &c.messages {
            parse_ty(&m.result).map_err(|e| format!("{}.{}: {e}", c.name, m.name))?;
            for p in &m.params {
                parse_ty(&p.ty).map_err(|e| format!("{}.{}: {e}", c.name, m.name))?;
            }
        }
    }
    Ok(())
}

fn load_facts(path: &str) -> Res<Facts> {
    let f: Facts = serde_json::from_str(&read(path)?).map_err(|e| format!("{path}: {e}"))?;
    validate(&f)?;
    Ok(f)
}

fn run(args: &[String]) -> Res<()> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["facts", json, errors_ml, api_errors_ml, commit, out] => {
            let j: serde_json::Value =
                serde_json::from_str(&read(json)?).map_err(|e| format!("{json}: {e}"))?;
            let (classes, enums) = classes_of(&j)?;
            let codes = error_codes(&read(api_errors_ml)?);
            let errors = error_table(&read(errors_ml)?, &codes)?;
            let facts = Facts {
                source: Source {
                    repository: "xapi-project/xen-api".into(),
                    commit: (*commit).to_owned(),
                    files: vec![
                        "doc/data/xenapi.json".into(),
                        "ocaml/idl/datamodel_errors.ml".into(),
                        "ocaml/xapi-consts/api_errors.ml".into(),
                    ],
                },
                classes,
                enums,
                errors,
            };
            validate(&facts)?;
            std::fs::write(out, facts_json(&facts)?).map_err(|e| format!("{out}: {e}"))?;
            Ok(())
        }
        ["tables", facts, out] => {
            let t = tables(&load_facts(facts)?)?;
            std::fs::write(out, t).map_err(|e| format!("{out}: {e}"))
        }
        ["check", facts, committed] => {
            let t = tables(&load_facts(facts)?)?;
            if read(committed)? == t {
                println!("{committed} is what the generator makes from {facts}");
                Ok(())
            } else {
                Err(format!(
                    "{committed} is stale: run toolstack/regen.sh and commit the result"
                ))
            }
        }
        _ => Err("usage: toolstack-gen facts XENAPI_JSON DATAMODEL_ERRORS_ML API_ERRORS_ML COMMIT OUT_JSON\n       toolstack-gen tables FACTS_JSON OUT_RS\n       toolstack-gen check FACTS_JSON COMMITTED_RS".into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("toolstack-gen: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_nested() {
        let t = parse_ty("(string -> (int -> string set) map) map").unwrap();
        assert_eq!(
            rust_ty(&t),
            "Type::Map(&Type::String, &Type::Map(&Type::Int, &Type::Set(&Type::String)))"
        );
        assert_eq!(
            rust_ty(&parse_ty("enum vm_power_state").unwrap()),
            "Type::Enum(\"vm_power_state\")"
        );
        assert!(parse_ty("strng")
            .unwrap_err()
            .contains("unknown type strng"));
        assert!(parse_ty("(string string) map").is_err());
    }

    #[test]
    fn defaults_become_values_of_their_type() {
        let map = parse_ty("(string -> string) map").unwrap();
        assert_eq!(
            rust_default(&map, "{\"address\" -> \"localhost\", \"port\" -> \"27000\"}").unwrap(),
            "Dv::Map(&[(Dv::Str(\"address\"), Dv::Str(\"localhost\")), (Dv::Str(\"port\"), Dv::Str(\"27000\"))])"
        );
        let refs = parse_ty("VM ref").unwrap();
        assert_eq!(
            rust_default(&refs, "Null").unwrap(),
            "Dv::Str(\"OpaqueRef:NULL\")"
        );
        assert_eq!(
            rust_default(&parse_ty("float").unwrap(), "1.").unwrap(),
            "Dv::Float(1.0)"
        );
        assert!(rust_default(&parse_ty("int").unwrap(), "x").is_err());
        assert!(rust_default(&map, "[]").is_err());
    }

    #[test]
    fn error_codes_and_tables_from_ocaml() {
        let consts = error_codes(
            "(* x *)\nlet a = \"A_\"\n\nlet b = \"B\"\n\nlet ab =\n  a ^ b\n\nlet f = function x -> x\n",
        );
        assert_eq!(consts["ab"], "A_B");
        assert!(!consts.contains_key("f"));
        let table = error_table(
            "error Api_errors.ab [\"x\"; \"y\"]\n ~doc:\"d\" () ;\nerror Api_errors.a [] ()",
            &consts,
        )
        .unwrap();
        assert_eq!(table[0].code, "A_B");
        assert_eq!(table[0].params, ["x", "y"]);
        assert!(table[1].params.is_empty());
        assert!(error_table("error Api_errors.zz [] ()", &consts)
            .unwrap_err()
            .contains("no code"));
        assert!(error_table("error Api_errors.a [p] ()", &consts)
            .unwrap_err()
            .contains("not a literal"));
    }
}
