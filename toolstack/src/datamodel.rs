//! The XAPI object model: the classes the project implements, each with exactly XAPI's fields
//! (from the generated [`xenapi`] tables: names, types, qualifiers and defaults as in xen-api's
//! `ocaml/idl/datamodel*.ml`), and the relations whose two ends are kept consistent.

pub mod xenapi;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use self::xenapi::{ClassDef, Dv, FieldDef, Type};
use crate::value::Value;

/// The null reference.
pub const NULL_REF: &str = "OpaqueRef:NULL";

/// The type of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// `string`.
    Str,
    /// `int` (sent as a decimal string, as XAPI does).
    Int,
    /// `float`.
    Float,
    /// `bool`.
    Bool,
    /// `datetime`.
    DateTime,
    /// An enumeration, with its values.
    Enum(&'static [&'static str]),
    /// `<class> ref`.
    Ref(&'static str),
    /// `<class> ref set`.
    RefSet(&'static str),
    /// `string set`.
    StrSet,
    /// `(string -> string) map`.
    Map,
}

impl Ty {
    /// The storage type of a datamodel type.
    pub fn of(t: &'static Type) -> Ty {
        match t {
            Type::String | Type::Void | Type::EventBatch | Type::Record(_) => Ty::Str,
            Type::Int => Ty::Int,
            Type::Float => Ty::Float,
            Type::Bool => Ty::Bool,
            Type::DateTime => Ty::DateTime,
            Type::Enum(_) => Ty::Enum(t.enum_values().unwrap_or(&[])),
            Type::Ref(c) => Ty::Ref(c),
            Type::Set(Type::Ref(c)) => Ty::RefSet(c),
            Type::Set(_) => Ty::StrSet,
            Type::Map(..) => Ty::Map,
            Type::Option(inner) => Ty::of(inner),
        }
    }

    /// The value a field of this type holds when nothing was given.
    pub fn default_value(self) -> Value {
        match self {
            Ty::Str => Value::str(""),
            Ty::Int => Value::str("0"),
            Ty::Float => Value::Double(0.0),
            Ty::Bool => Value::Bool(false),
            Ty::DateTime => Value::DateTime("19700101T00:00:00Z".into()),
            Ty::Enum(vals) => Value::str(vals.first().copied().unwrap_or("")),
            Ty::Ref(_) => Value::str(NULL_REF),
            Ty::RefSet(_) | Ty::StrSet => Value::Array(vec![]),
            Ty::Map => Value::Struct(BTreeMap::new()),
        }
    }

    /// Checks (and normalises) a value given for a field of this type; `None` if it does not fit.
    /// Reference targets are checked by the caller.
    pub fn coerce(self, v: &Value) -> Option<Value> {
        match (self, v) {
            (Ty::Str, Value::String(_)) => Some(v.clone()),
            (Ty::Int, Value::String(s)) => s.parse::<i64>().ok().map(|i| Value::str(i.to_string())),
            (Ty::Int, Value::Int(i)) => Some(Value::str(i.to_string())),
            (Ty::Float, Value::Double(_)) => Some(v.clone()),
            (Ty::Float, Value::Int(i)) => Some(Value::Double(*i as f64)),
            (Ty::Bool, Value::Bool(_)) => Some(v.clone()),
            (Ty::DateTime, Value::DateTime(_) | Value::String(_)) => {
                Some(Value::DateTime(v.as_str().map_or_else(
                    || match v {
                        Value::DateTime(s) => s.clone(),
                        _ => String::new(),
                    },
                    str::to_owned,
                )))
            }
            (Ty::Enum(vals), Value::String(s)) => vals
                .iter()
                .find(|x| x.eq_ignore_ascii_case(s))
                .map(|x| Value::str(*x)),
            (Ty::Ref(_), Value::String(s)) if s.starts_with("OpaqueRef:") => Some(v.clone()),
            (Ty::RefSet(_), Value::Array(a))
                if a.iter()
                    .all(|x| x.as_str().is_some_and(|s| s.starts_with("OpaqueRef:"))) =>
            {
                Some(v.clone())
            }
            (Ty::StrSet, Value::Array(a)) if a.iter().all(|x| x.as_str().is_some()) => {
                Some(v.clone())
            }
            (Ty::Map, Value::Struct(m)) => Some(Value::Struct(
                m.iter()
                    .map(|(k, x)| match x {
                        Value::String(_) => Some((k.clone(), x.clone())),
                        Value::Int(i) => Some((k.clone(), Value::str(i.to_string()))),
                        Value::Bool(b) => Some((k.clone(), Value::str(b.to_string()))),
                        _ => None,
                    })
                    .collect::<Option<_>>()?,
            )),
            _ => None,
        }
    }
}

/// Who may write a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qual {
    /// Read-only, maintained by the server.
    RO,
    /// Given at creation, read-only afterwards.
    StaticRO,
    /// Read-write.
    RW,
}

/// One field of a class.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// XAPI field name.
    pub name: &'static str,
    /// Storage type.
    pub ty: Ty,
    /// Writability.
    pub qual: Qual,
    /// The datamodel's description of the field (wire type, default, lifecycle).
    pub def: &'static FieldDef,
}

impl Field {
    fn of(def: &'static FieldDef) -> Field {
        Field {
            name: def.name,
            ty: Ty::of(def.ty),
            qual: match def.qual {
                xenapi::Qualifier::RW => Qual::RW,
                xenapi::Qualifier::StaticRO => Qual::StaticRO,
                xenapi::Qualifier::DynamicRO => Qual::RO,
            },
            def,
        }
    }

    /// The field's value in a new record: the datamodel's default, or the type's zero when
    /// the datamodel declares none.
    pub fn default_value(&self) -> Value {
        match self.def.default {
            Some(d) => dv_value(&d, self.def.ty),
            None => REQUIRED_DEFAULTS
                .iter()
                .find(|(n, _)| *n == self.name)
                .map_or_else(|| self.ty.default_value(), |(_, v)| Value::str(*v)),
        }
    }
}

/// Values for fields XAPI requires in `VM.create` (no datamodel default) when a caller leaves
/// them out: what XenServer's templates set.
const REQUIRED_DEFAULTS: &[(&str, &str)] = &[
    ("actions_after_shutdown", "destroy"),
    ("actions_after_reboot", "restart"),
    ("actions_after_crash", "restart"),
];

/// A datamodel default as a stored value (`int`s as decimal strings, as on XML-RPC).
fn dv_value(d: &Dv, t: &Type) -> Value {
    let elem = |t: &Type| match t {
        Type::Set(x) | Type::Option(x) => *x,
        _ => &Type::String,
    };
    match d {
        Dv::Str(x) => Value::str(*x),
        Dv::Int(i) => Value::str(i.to_string()),
        Dv::Float(f) => Value::Double(*f),
        Dv::Bool(b) => Value::Bool(*b),
        Dv::DateTime(x) => Value::DateTime((*x).to_owned()),
        Dv::Set(xs) => Value::Array(xs.iter().map(|x| dv_value(x, elem(t))).collect()),
        Dv::Map(kvs) => {
            let vt = match t {
                Type::Map(_, v) => *v,
                _ => &Type::String,
            };
            Value::Struct(
                kvs.iter()
                    .map(|(k, v)| {
                        let key = match dv_value(k, &Type::String) {
                            Value::String(s) => s,
                            other => format!("{other:?}"),
                        };
                        (key, dv_value(v, vt))
                    })
                    .collect(),
            )
        }
    }
}

/// One class of the object model.
#[derive(Debug)]
pub struct Class {
    /// XAPI class name (`VM`, `network`, ...).
    pub name: &'static str,
    /// The datamodel's description of the class.
    pub def: &'static ClassDef,
    /// Fields: exactly the datamodel's, in its order (`uuid` first).
    pub fields: Vec<Field>,
    /// Whether objects survive a restart (sessions and tasks do not).
    pub persistent: bool,
    /// Whether `<class>.create(session, record)` exists.
    pub record_create: bool,
    /// Whether `<class>.destroy(session, ref)` exists.
    pub destroy: bool,
}

impl Class {
    /// Looks a field up by name.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Whether a field can be set through a message: RW fields, and the others the datamodel
    /// gives an explicit setter (`VM.set_VCPUs_max`).
    pub fn settable(&self, f: &Field) -> bool {
        f.qual == Qual::RW || self.def.message(&format!("set_{}", f.name)).is_some()
    }

    /// Whether the class has a `name_label` field.
    pub fn has_name_label(&self) -> bool {
        self.field("name_label").is_some()
    }

    /// A record holding every field's default value.
    pub fn default_record(&self) -> BTreeMap<String, Value> {
        self.fields
            .iter()
            .map(|f| (f.name.to_owned(), f.default_value()))
            .collect()
    }
}

/// A relation: `class.field` (a reference) is mirrored by `other.other_field` (a set).
#[derive(Debug, Clone, Copy)]
pub struct Relation {
    /// Class holding the reference.
    pub class: &'static str,
    /// The reference field.
    pub field: &'static str,
    /// Class holding the set.
    pub other: &'static str,
    /// The set field.
    pub other_field: &'static str,
}

/// Every relation kept consistent both ways.
pub const RELATIONS: &[Relation] = &[
    rel("VIF", "network", "network", "VIFs"),
    rel("VIF", "VM", "VM", "VIFs"),
    rel("VBD", "VM", "VM", "VBDs"),
    rel("VBD", "VDI", "VDI", "VBDs"),
    rel("VDI", "SR", "SR", "VDIs"),
    rel("PBD", "SR", "SR", "PBDs"),
    rel("PBD", "host", "host", "PBDs"),
    rel("PIF", "host", "host", "PIFs"),
    rel("PIF", "network", "network", "PIFs"),
    rel("VM", "resident_on", "host", "resident_VMs"),
    rel("PGPU", "host", "host", "PGPUs"),
    rel("PGPU", "GPU_group", "GPU_group", "PGPUs"),
    rel("VGPU", "VM", "VM", "VGPUs"),
    rel("VGPU", "GPU_group", "GPU_group", "VGPUs"),
    rel("VGPU", "type", "VGPU_type", "VGPUs"),
    rel("VGPU", "resident_on", "PGPU", "resident_VGPUs"),
    rel("PIF", "bond_slave_of", "Bond", "slaves"),
    rel("Bond", "master", "PIF", "bond_master_of"),
    rel("VLAN", "tagged_PIF", "PIF", "VLAN_slave_of"),
    rel("task", "subtask_of", "task", "subtasks"),
    rel("PCI", "host", "host", "PCIs"),
];

const fn rel(
    class: &'static str,
    field: &'static str,
    other: &'static str,
    other_field: &'static str,
) -> Relation {
    Relation {
        class,
        field,
        other,
        other_field,
    }
}

/// Trailing parameters with defaults (`param_default` in `ocaml/idl/datamodel*.ml` at the
/// facts' commit; the published `xenapi.json` does not carry them) of the messages the project
/// implements. XAPI accepts calls without them (filling the defaults) and does not count them
/// as expected in `MESSAGE_PARAMETER_COUNT_MISMATCH`.
pub const PARAM_DEFAULTS: &[(&str, &[(&str, Dv)])] = &[
    // datamodel.ml, `Session.login`.
    (
        "session.login_with_password",
        &[("version", Dv::Str("1.1")), ("originator", Dv::Str(""))],
    ),
    // datamodel.ml, `SR.create` (the shared `sm_config` parameter).
    ("SR.create", &[("sm_config", Dv::Map(&[]))]),
    // datamodel.ml, `VDI.snapshot` and `VDI.clone`.
    ("VDI.snapshot", &[("driver_params", Dv::Map(&[]))]),
    ("VDI.clone", &[("driver_params", Dv::Map(&[]))]),
    // datamodel.ml, `VDI.copy` (the destination SR, a base VDI, a VDI to copy into).
    (
        "VDI.copy",
        &[
            ("sr", Dv::Str(NULL_REF)),
            ("base_vdi", Dv::Str(NULL_REF)),
            ("into_vdi", Dv::Str(NULL_REF)),
        ],
    ),
    // datamodel_vm.ml, `VM.snapshot`.
    ("VM.snapshot", &[("ignore_vdis", Dv::Set(&[]))]),
    // datamodel.ml, `Bond.create`.
    (
        "Bond.create",
        &[
            ("mode", Dv::Str("balance-slb")),
            ("properties", Dv::Map(&[])),
        ],
    ),
    // datamodel.ml, `GPU_group.create`.
    (
        "GPU_group.create",
        &[
            ("name_label", Dv::Str("")),
            ("name_description", Dv::Str("")),
            ("other_config", Dv::Map(&[])),
        ],
    ),
    // datamodel.ml, `VGPU.create`.
    (
        "VGPU.create",
        &[
            ("device", Dv::Str("0")),
            ("other_config", Dv::Map(&[])),
            ("type", Dv::Str(NULL_REF)),
        ],
    ),
];

fn defaults_of(wire: &str) -> &'static [(&'static str, Dv)] {
    PARAM_DEFAULTS
        .iter()
        .find(|(n, _)| *n == wire)
        .map_or(&[][..], |(_, d)| d)
}

/// How many of a message's parameters XAPI expects (`gen_server.ml`: the parameters after the
/// session, without defaults); `None` for a message not in the datamodel.
pub fn expected_params(wire: &str) -> Option<usize> {
    let m = xenapi::message_def(wire)?;
    Some(m.counted_params() - defaults_of(wire).len())
}

/// A call's parameters with the defaults XAPI fills in for trailing parameters left out;
/// `None` when nothing is missing or too many are missing (the handler then reports the count).
pub fn with_defaults(wire: &str, params: &[Value]) -> Option<Vec<Value>> {
    let m = xenapi::message_def(wire)?;
    let defaults = defaults_of(wire);
    let full = m.params.len();
    let missing = full.checked_sub(params.len())?;
    if missing == 0 || missing > defaults.len() {
        return None;
    }
    let mut out = params.to_vec();
    for (i, p) in m.params.iter().enumerate().skip(params.len()) {
        let (name, dv) = &defaults[defaults.len() - (full - i)];
        debug_assert_eq!(*name, p.name);
        out.push(dv_value(dv, p.ty));
    }
    Some(out)
}

/// What the project implements of each class: (class, persistent, `create` from a record,
/// `destroy`), in [`Known`]'s order.
const IMPLEMENTED: [(Known, bool, bool, bool); 23] = [
    (Known::session, false, false, false),
    (Known::task, false, false, true),
    (Known::pool, true, false, false),
    (Known::host, true, false, false),
    (Known::host_metrics, true, false, false),
    (Known::VM, true, true, true),
    (Known::VM_metrics, true, false, false),
    (Known::SR, true, false, true),
    (Known::PBD, true, true, true),
    (Known::VDI, true, true, true),
    (Known::VBD, true, true, true),
    (Known::network, true, true, true),
    (Known::PIF, true, false, false),
    (Known::VIF, true, true, true),
    (Known::Bond, true, false, true),
    (Known::VLAN, true, false, true),
    (Known::PCI, true, false, false),
    (Known::PGPU, true, false, false),
    (Known::GPU_group, true, false, true),
    (Known::VGPU, true, false, true),
    (Known::VGPU_type, true, false, false),
    (Known::message, true, false, true),
    (Known::VM_guest_metrics, true, false, false),
];

fn build() -> Vec<Class> {
    IMPLEMENTED
        .iter()
        .map(|&(k, persistent, record_create, destroy)| {
            let name = format!("{k:?}");
            let def = xenapi::class_def(&name)
                .unwrap_or_else(|| panic!("class {name} is not in the datamodel tables"));
            Class {
                name: def.name,
                def,
                fields: def.fields.iter().map(Field::of).collect(),
                persistent,
                record_create,
                destroy,
            }
        })
        .collect()
}

/// Every class of the model, in [`Known`]'s order.
pub fn classes() -> &'static [Class] {
    static C: OnceLock<Vec<Class>> = OnceLock::new();
    C.get_or_init(build)
}

/// A class named in code: its lookup cannot fail (the variant is the class's index in
/// [`classes`], and its name; a test checks both).
#[allow(non_camel_case_types, missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    session,
    task,
    pool,
    host,
    host_metrics,
    VM,
    VM_metrics,
    SR,
    PBD,
    VDI,
    VBD,
    network,
    PIF,
    VIF,
    Bond,
    VLAN,
    PCI,
    PGPU,
    GPU_group,
    VGPU,
    VGPU_type,
    message,
    VM_guest_metrics,
}

impl Known {
    /// Every variant, in order.
    pub const ALL: [Known; 23] = [
        Known::session,
        Known::task,
        Known::pool,
        Known::host,
        Known::host_metrics,
        Known::VM,
        Known::VM_metrics,
        Known::SR,
        Known::PBD,
        Known::VDI,
        Known::VBD,
        Known::network,
        Known::PIF,
        Known::VIF,
        Known::Bond,
        Known::VLAN,
        Known::PCI,
        Known::PGPU,
        Known::GPU_group,
        Known::VGPU,
        Known::VGPU_type,
        Known::message,
        Known::VM_guest_metrics,
    ];

    /// The class.
    pub fn class(self) -> &'static Class {
        &classes()[self as usize]
    }

    /// The class's name.
    pub fn name(self) -> &'static str {
        self.class().name
    }
}

/// Looks a class up by name, ignoring ASCII case (`vm` and `VM` are the same class, as in
/// `event.from`).
pub fn class(name: &str) -> Option<&'static Class> {
    classes()
        .iter()
        .find(|c| c.name == name)
        .or_else(|| classes().iter().find(|c| c.name.eq_ignore_ascii_case(name)))
}

/// The relation a reference field takes part in, if any.
pub fn relation_of(class: &str, field: &str) -> Option<&'static Relation> {
    RELATIONS
        .iter()
        .find(|r| r.class == class && r.field == field)
}

/// The relation whose set end is `class.field`, if any.
pub fn inverse_of(class: &str, field: &str) -> Option<&'static Relation> {
    RELATIONS
        .iter()
        .find(|r| r.other == class && r.other_field == field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_defaults_are_the_messages_trailing_parameters() {
        for (wire, defaults) in PARAM_DEFAULTS {
            let m = xenapi::message_def(wire).unwrap_or_else(|| panic!("{wire}"));
            let tail = &m.params[m.params.len() - defaults.len()..];
            for ((name, _), p) in defaults.iter().zip(tail) {
                assert_eq!(*name, p.name, "{wire}");
            }
        }
        // A call short of defaulted parameters only is completed; one short of more is not.
        let full = with_defaults("VGPU.create", &vec![Value::str("s"); 3]).unwrap();
        assert_eq!(full.len(), 6);
        assert_eq!(full[3], Value::str("0"));
        assert_eq!(full[5], Value::str(NULL_REF));
        assert!(with_defaults("VGPU.create", &vec![Value::str("s"); 2]).is_none());
        assert!(with_defaults("VGPU.create", &vec![Value::str("s"); 6]).is_none());
        assert!(with_defaults("VM.start", &vec![Value::str("s"); 2]).is_none());
    }

    #[test]
    fn known_classes_are_the_model_in_order() {
        assert_eq!(Known::ALL.len(), classes().len());
        for (i, k) in Known::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
            assert_eq!(k.class().name, format!("{k:?}"));
            assert!(std::ptr::eq(class(k.name()).unwrap(), k.class()));
        }
    }
}
