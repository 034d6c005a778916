//! `<object>-param-list/-get/-set/-add/-remove/-clear` for every class, generically from the
//! datamodel: a field is settable when the datamodel has its setter, a map or set is writable
//! when it has `add_to_`/`add_` messages. Behaviour and messages as xe's `make_param_funs`
//! (`ocaml/xapi-cli-server/cli_operations.ml`).

use std::collections::BTreeMap;
use std::io::Write;

use super::{format_records, lookup_for, out_err, params_of, Args, XeError};
use crate::client::Client;
use crate::datamodel::{self, Class, Field, Ty, NULL_REF};
use crate::value::Value;

fn fail(msg: impl Into<String>) -> XeError {
    XeError(format!("Error: {}", msg.into()), 1)
}

fn arg<'a>(a: &'a Args, name: &str) -> Result<&'a str, XeError> {
    a.kv.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| {
            XeError(
                format!("Required parameter not found: {name}\nFor usage run: 'xe help'"),
                1,
            )
        })
}

/// The field behind an xe parameter name (`name-label` is `name_label`).
fn field<'c>(cls: &'c Class, xe_name: &str) -> Option<&'c Field> {
    cls.fields
        .iter()
        .find(|f| f.name.replace('_', "-") == xe_name || f.name == xe_name)
}

fn has(cls: &Class, msg: &str) -> bool {
    cls.def.message(msg).is_some()
}

/// Converts an xe value to the wire value of a field (`Parameter x must be an integer`, ...).
fn wire_value(c: &mut Client, f: &Field, k: &str, v: &str) -> Result<Value, XeError> {
    Ok(match f.ty {
        Ty::Int => {
            v.parse::<i64>()
                .map_err(|_| fail(format!("Parameter {k} must be an integer")))?;
            Value::str(v)
        }
        Ty::Float => Value::Double(
            v.parse()
                .map_err(|_| fail(format!("Parameter {k} must be a floating-point number")))?,
        ),
        Ty::Bool => Value::Bool(match v {
            "true" => true,
            "false" => false,
            _ => {
                return Err(fail(format!(
                    "Parameter {k} must be a boolean (true or false)"
                )))
            }
        }),
        Ty::Ref(target) if !v.is_empty() => {
            c.call(&format!("{target}.get_by_uuid"), &[Value::str(v)])?
        }
        Ty::Ref(_) => Value::str(NULL_REF),
        _ => Value::str(v),
    })
}

/// Runs `<object>-param-<verb>` on the object of `class` named by `uuid=`.
pub(super) fn run(
    c: &mut Client,
    class: &str,
    verb: &str,
    a: &Args,
    out: &mut dyn Write,
) -> Result<(), XeError> {
    let cls = datamodel::class(class).ok_or_else(|| fail(format!("unknown class {class}")))?;
    let uuid = arg(a, "uuid")?;
    let r = c.call(&format!("{class}.get_by_uuid"), &[Value::str(uuid)])?;
    let got = c.call(&format!("{class}.get_record"), std::slice::from_ref(&r))?;
    let rec: BTreeMap<String, Value> = match got {
        Value::Struct(m) => m,
        _ => return Err(fail("the server sent no record")),
    };
    let call = |c: &mut Client, msg: &str, args: Vec<Value>| -> Result<(), XeError> {
        let mut p = vec![r.clone()];
        p.extend(args);
        c.call(&format!("{class}.{msg}"), &p)?;
        Ok(())
    };
    match verb {
        "list" => {
            let look = lookup_for(c, class)?;
            out.write_all(format_records(&[params_of(class, &rec, &look)]).as_bytes())
                .map_err(out_err)
        }
        "get" => {
            let name = arg(a, "param-name")?;
            if let Ok(key) = arg(a, "param-key") {
                if let Some(Value::Struct(m)) = field(cls, name).and_then(|f| rec.get(f.name)) {
                    let v = m
                        .get(key)
                        .ok_or_else(|| fail(format!("Key {key} not found in map")))?;
                    return writeln!(out, "{}", super::text(v)).map_err(out_err);
                }
            }
            let look = lookup_for(c, class)?;
            let p = params_of(class, &rec, &look)
                .into_iter()
                .find(|p| p.name == name)
                .ok_or_else(|| fail(format!("Unknown field '{name}'")))?;
            writeln!(out, "{}", p.value).map_err(out_err)
        }
        "set" => {
            for (k, v) in a.kv.iter().filter(|(k, _)| k != "uuid") {
                if let Some((m, key)) = k.split_once(':') {
                    let f = field(cls, m).ok_or_else(|| fail(format!("Unknown field '{m}'")))?;
                    if f.ty != Ty::Map {
                        return Err(fail(format!("Field '{m}' is not a map")));
                    }
                    if !has(cls, &format!("add_to_{}", f.name)) {
                        return Err(fail(format!("Map field '{m}' is read-only.")));
                    }
                    let present = rec
                        .get(f.name)
                        .and_then(Value::as_struct)
                        .is_some_and(|x| x.contains_key(key));
                    if present {
                        call(c, &format!("remove_from_{}", f.name), vec![Value::str(key)])?;
                    }
                    call(
                        c,
                        &format!("add_to_{}", f.name),
                        vec![Value::str(key), Value::str(v.clone())],
                    )?;
                    continue;
                }
                let f = field(cls, k).ok_or_else(|| fail(format!("Unknown field '{k}'")))?;
                if matches!(f.ty, Ty::Map | Ty::StrSet | Ty::RefSet(_)) {
                    if cls.settable(f) || has(cls, &format!("add_to_{}", f.name)) {
                        return Err(fail(format!(
                            "Field '{k}' is a map or set. use the 'name:key=value' syntax."
                        )));
                    }
                    return Err(fail(format!("Field '{k}' is read-only.")));
                }
                if !cls.settable(f) {
                    return Err(fail(format!("Field '{k}' is read-only.")));
                }
                let value = wire_value(c, f, k, v)?;
                call(c, &format!("set_{}", f.name), vec![value])?;
            }
            Ok(())
        }
        "add" | "remove" | "clear" => {
            let name = arg(a, "param-name")?;
            let f = field(cls, name).ok_or_else(|| fail(format!("Unknown field '{name}'")))?;
            let current = rec.get(f.name);
            let is_set = matches!(f.ty, Ty::StrSet | Ty::RefSet(_));
            let is_map = f.ty == Ty::Map;
            let (add_msg, remove_msg) = if is_set {
                (format!("add_{}", f.name), format!("remove_{}", f.name))
            } else {
                (
                    format!("add_to_{}", f.name),
                    format!("remove_from_{}", f.name),
                )
            };
            let writable = (is_set || is_map) && has(cls, &add_msg);
            match verb {
                "add" if writable && is_set => {
                    let key = arg(a, "param-key").map_err(|_| {
                        fail(
                            "When adding a key to a set, use the syntax: *-param-add \
                             param-name=<name> param-key=<key>",
                        )
                    })?;
                    call(c, &add_msg, vec![Value::str(key)])
                }
                "add" if writable => {
                    for (k, v) in a
                        .kv
                        .iter()
                        .filter(|(k, _)| !["uuid", "param-name", "param-key"].contains(&k.as_str()))
                    {
                        call(
                            c,
                            &add_msg,
                            vec![Value::str(k.clone()), Value::str(v.clone())],
                        )?;
                    }
                    Ok(())
                }
                "add" if is_set || is_map => Err(fail("Parameter is read-only")),
                "add" => Err(fail("Can only add to parameters of type Set or Map")),
                "remove" if writable => {
                    let key = arg(a, "param-key")?;
                    let present = match current {
                        Some(Value::Array(xs)) => xs.iter().any(|x| x.as_str() == Some(key)),
                        Some(Value::Struct(m)) => m.contains_key(key),
                        _ => false,
                    };
                    if !present {
                        return Err(fail(if is_set {
                            format!("Key {key} is not in the set")
                        } else {
                            format!("Key {key} is not in map")
                        }));
                    }
                    call(c, &remove_msg, vec![Value::str(key)])
                }
                "remove" if is_set || is_map => {
                    Err(fail("Cannot remove parameters from read-only map"))
                }
                "remove" => Err(fail("Can only remove from parameters of type Set or Map")),
                _ if writable => {
                    let keys: Vec<String> = match current {
                        Some(Value::Array(xs)) => xs
                            .iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect(),
                        Some(Value::Struct(m)) => m.keys().cloned().collect(),
                        _ => Vec::new(),
                    };
                    for k in keys {
                        call(c, &remove_msg, vec![Value::str(k)])?;
                    }
                    Ok(())
                }
                _ if cls.settable(f) && f.ty == Ty::Str => {
                    call(c, &format!("set_{}", f.name), vec![Value::str("")])
                }
                _ if cls.settable(f) => Err(fail("Cannot clear this parameter")),
                _ => Err(fail("Can only clear RW parameters")),
            }
        }
        _ => Err(fail(format!("unknown verb {verb}"))),
    }
}
