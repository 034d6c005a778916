//! The XenAPI value type shared by the XML-RPC and JSON-RPC codecs.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

    /// Converts to JSON as XAPI's JSON-RPC sends a value of datamodel type `t` (see
    /// [`Typed`], which writes the same without building a tree).
    pub fn to_json_typed(&self, t: &Type) -> serde_json::Value {
        serde_json::to_value(Typed(self, t)).unwrap_or(serde_json::Value::Null)
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

/// JSON as [`Value::to_json`] gives it (`Nil` as `null`, a non-finite double as `null`).
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::String(x) | Value::DateTime(x) => s.serialize_str(x),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Double(d) if d.is_finite() => s.serialize_f64(*d),
            Value::Double(_) | Value::Nil => s.serialize_unit(),
            Value::Array(a) => s.collect_seq(a),
            Value::Struct(m) => s.collect_map(m),
        }
    }
}

/// From JSON as [`Value::from_json`] reads it, without a `serde_json::Value` in between.
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Nil)
            }
            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::Nil)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
                Value::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
                Ok(Value::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
                Ok(Value::Int(i))
            }
            fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
                Ok(i64::try_from(u).map_or(Value::Double(u as f64), Value::Int))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
                Ok(Value::Double(f))
            }
            fn visit_str<E>(self, s: &str) -> Result<Value, E> {
                Ok(Value::String(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Value, E> {
                Ok(Value::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
                let mut v = Vec::with_capacity(a.size_hint().unwrap_or(0).min(4096));
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Value::Array(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
                let mut m = BTreeMap::new();
                while let Some((k, x)) = a.next_entry::<String, Value>()? {
                    m.insert(k, x);
                }
                Ok(Value::Struct(m))
            }
        }
        d.deserialize_any(V)
    }
}

/// A value serialized as XAPI's JSON-RPC sends a value of datamodel type `t` (ocaml-rpc's
/// `Jsonrpc`: `int` as a number, `float` as a number, `datetime` as a string; map keys as
/// strings; records typed field by field from the class's table, event snapshots by their
/// class). Written straight to the output, with no JSON tree in between.
#[derive(Debug, Clone, Copy)]
pub struct Typed<'a>(pub &'a Value, pub &'a Type);

impl Serialize for Typed<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Typed(v, t) = *self;
        match (t, v) {
            (Type::Int, Value::String(x)) => match x.parse::<i64>() {
                Ok(i) => s.serialize_i64(i),
                Err(_) => v.serialize(s),
            },
            (Type::Float, Value::String(x)) => match x.parse::<f64>() {
                Ok(f) if f.is_finite() => s.serialize_f64(f),
                _ => v.serialize(s),
            },
            (Type::Float, Value::Int(i)) => s.serialize_f64(*i as f64),
            (Type::Set(e), Value::Array(a)) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for x in a {
                    seq.serialize_element(&Typed(x, e))?;
                }
                seq.end()
            }
            (Type::Map(_, e), Value::Struct(m)) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, x) in m {
                    map.serialize_entry(k, &Typed(x, e))?;
                }
                map.end()
            }
            (Type::Option(inner), _) => Typed(v, inner).serialize(s),
            (Type::Record(class), Value::Struct(m)) => record(s, class, m),
            (Type::EventBatch, Value::Struct(m)) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, x) in m {
                    match k.as_str() {
                        "events" => {
                            map.serialize_entry(k, &Typed(x, &Type::Set(&Type::Record("event"))))?
                        }
                        "valid_ref_counts" => map
                            .serialize_entry(k, &Typed(x, &Type::Map(&Type::String, &Type::Int)))?,
                        _ => map.serialize_entry(k, x)?,
                    }
                }
                map.end()
            }
            _ => v.serialize(s),
        }
    }
}

/// A record of `class`, each field typed by the class's table (an event's `snapshot` by the
/// class the event names).
pub fn record<S: Serializer>(
    s: S,
    class: &str,
    m: &BTreeMap<String, Value>,
) -> Result<S::Ok, S::Error> {
    let snapshot_class = (class == "event")
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
    let mut map = s.serialize_map(Some(m.len()))?;
    for (k, x) in m {
        while defs.next_if(|f| f.name < k.as_str()).is_some() {}
        let def = defs.next_if(|f| f.name == k.as_str());
        match (snapshot_class, k.as_str(), def) {
            (Some(c), "snapshot", _) => map.serialize_entry(k, &Typed(x, &Type::Record(c.name)))?,
            (_, _, Some(f)) => map.serialize_entry(k, &Typed(x, f.ty))?,
            _ => map.serialize_entry(k, x)?,
        }
    }
    map.end()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<String>().prop_map(Value::String),
            any::<i64>().prop_map(Value::Int),
            any::<bool>().prop_map(Value::Bool),
            any::<f64>().prop_map(Value::Double),
            Just(Value::Nil),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..6).prop_map(Value::Struct),
            ]
        })
    }

    proptest! {
        #[test]
        fn serde_agrees_with_the_json_tree(v in arb_value()) {
            // Written straight, the JSON is the tree's; read straight, it is what the tree
            // gives.
            let direct = serde_json::to_string(&v).unwrap();
            prop_assert_eq!(&direct, &v.to_json().to_string());
            let tree: serde_json::Value = serde_json::from_str(&direct).unwrap();
            prop_assert_eq!(serde_json::from_str::<Value>(&direct).unwrap(), Value::from_json(&tree));
        }
    }

    #[test]
    fn typed_follows_the_datamodel() {
        let t = Type::Map(&Type::String, &Type::Int);
        let v = Value::Struct(
            [
                ("a".to_owned(), Value::str("12")),
                ("b".to_owned(), Value::str("not a number")),
            ]
            .into_iter()
            .collect(),
        );
        assert_eq!(
            serde_json::to_string(&Typed(&v, &t)).unwrap(),
            r#"{"a":12,"b":"not a number"}"#
        );
        let f = Type::Set(&Type::Float);
        let v = Value::Array(vec![Value::Int(2), Value::str("1.5"), Value::str("inf")]);
        assert_eq!(
            serde_json::to_string(&Typed(&v, &f)).unwrap(),
            r#"[2.0,1.5,"inf"]"#
        );
        assert_eq!(v.to_json_typed(&f), serde_json::json!([2.0, 1.5, "inf"]));
    }

    #[test]
    fn large_unsigned_numbers_read_as_doubles() {
        let v: Value = serde_json::from_str("[18446744073709551615, -3, 1e3, null]").unwrap();
        assert_eq!(
            v,
            Value::Array(vec![
                Value::Double(u64::MAX as f64),
                Value::Int(-3),
                Value::Double(1000.0),
                Value::Nil
            ])
        );
        assert!(serde_json::from_str::<Value>("[1,").is_err());
    }
}
