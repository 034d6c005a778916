//! The XenAPI value type shared by the XML-RPC and JSON-RPC codecs.

use std::collections::BTreeMap;

use crate::datamodel::xenapi::{self, Type};

/// A XenAPI wire value (the XML-RPC data model, which JSON-RPC maps onto).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `<string>` (also references, enums, UUIDs and 64-bit integers, as XAPI sends them).
    String(String),
    /// `<int>` / `<i4>` (32-bit on the XML-RPC wire).
    Int(i64),
    /// `<boolean>`.
    Bool(bool),
    /// `<double>`.
    Double(f64),
    /// `<dateTime.iso8601>`.
    DateTime(String),
    /// `<array>`.
    Array(Vec<Value>),
    /// `<struct>`.
    Struct(BTreeMap<String, Value>),
    /// `<nil/>`.
    Nil,
}

impl Value {
    /// Builds a string value.
    pub fn str(s: impl Into<String>) -> Self {
        Value::String(s.into())
    }

    /// The string inside, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The struct inside, if this is a struct.
    pub fn as_struct(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::Struct(m) => Some(m),
            _ => None,
        }
    }

    /// The array inside, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A 64-bit integer: XAPI sends `int` fields as decimal strings, so both forms are accepted.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// The boolean inside, if this is a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Converts to JSON (JSON-RPC and the on-disk form).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::String(s) | Value::DateTime(s) => J::String(s.clone()),
            Value::Int(i) => J::from(*i),
            Value::Bool(b) => J::Bool(*b),
            Value::Double(d) => serde_json::Number::from_f64(*d).map_or(J::Null, J::Number),
            Value::Array(a) => J::Array(a.iter().map(Value::to_json).collect()),
            Value::Struct(m) => {
                J::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
            Value::Nil => J::Null,
        }
    }

    /// Converts to JSON as XAPI's JSON-RPC sends a value of datamodel type `t` (ocaml-rpc's
    /// `Jsonrpc`: `int` as a number, `float` as a number, `datetime` as a string; map keys as
    /// strings; records typed field by field from the class's table, event snapshots by their
    /// class).
    pub fn to_json_typed(&self, t: &Type) -> serde_json::Value {
        use serde_json::Value as J;
        match (t, self) {
            (Type::Int, Value::String(s)) => {
                s.parse::<i64>().map_or_else(|_| self.to_json(), J::from)
            }
            (Type::Float, Value::String(s)) => s
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or_else(|| self.to_json(), J::Number),
            (Type::Float, Value::Int(i)) => J::from(*i as f64),
            (Type::Set(e), Value::Array(a)) => {
                J::Array(a.iter().map(|x| x.to_json_typed(e)).collect())
            }
            (Type::Map(_, v), Value::Struct(m)) => J::Object(
                m.iter()
                    .map(|(k, x)| (k.clone(), x.to_json_typed(v)))
                    .collect(),
            ),
            (Type::Option(inner), _) => self.to_json_typed(inner),
            (Type::Record(class), Value::Struct(m)) => {
                let snapshot_class = (*class == "event")
                    .then(|| m.get("class").and_then(Value::as_str))
                    .flatten()
                    .and_then(|c| {
                        xenapi::CLASSES
                            .iter()
                            .find(|d| d.name.eq_ignore_ascii_case(c))
                    });
                // Keys and the class's fields are both sorted by name: walk them together.
                let mut defs = xenapi::class_def(class)
                    .map_or(&[][..], |d| d.fields_by_name())
                    .iter()
                    .peekable();
                J::Object(
                    m.iter()
                        .map(|(k, x)| {
                            while defs.next_if(|f| f.name < k.as_str()).is_some() {}
                            let def = defs.next_if(|f| f.name == k.as_str());
                            let j = match (snapshot_class, k.as_str(), def) {
                                (Some(c), "snapshot", _) => x.to_json_typed(&Type::Record(c.name)),
                                (_, _, Some(f)) => x.to_json_typed(f.ty),
                                _ => x.to_json(),
                            };
                            (k.clone(), j)
                        })
                        .collect(),
                )
            }
            (Type::EventBatch, Value::Struct(m)) => J::Object(
                m.iter()
                    .map(|(k, x)| {
                        let j = match k.as_str() {
                            "events" => x.to_json_typed(&Type::Set(&Type::Record("event"))),
                            "valid_ref_counts" => {
                                x.to_json_typed(&Type::Map(&Type::String, &Type::Int))
                            }
                            _ => x.to_json(),
                        };
                        (k.clone(), j)
                    })
                    .collect(),
            ),
            _ => self.to_json(),
        }
    }

    /// Converts from JSON.
    pub fn from_json(j: &serde_json::Value) -> Self {
        use serde_json::Value as J;
        match j {
            J::Null => Value::Nil,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Double(n.as_f64().unwrap_or(0.0)),
            },
            J::String(s) => Value::String(s.clone()),
            J::Array(a) => Value::Array(a.iter().map(Value::from_json).collect()),
            J::Object(m) => Value::Struct(
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
