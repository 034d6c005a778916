//! The generic messages of every class: field getters and setters, map and set members,
//! `get_all`/`get_all_records` (also encoded straight to XML-RPC), `get_by_*`, record
//! `create` with type and reference checks, and `destroy` with XAPI's refusals.

use super::*;

impl Xapi {
    /// `<class>.get_all_records` encoded straight from the database as a complete XML-RPC
    /// response (no intermediate copy of the records); `None` when the call is not a valid
    /// one of those (the generic path then answers, errors included).
    pub fn get_all_records_xml(&self, method: &str, params: &[Value]) -> Option<String> {
        let class = Self::all_records_class(method)?;
        if params.len() != 1 {
            return None;
        }
        self.session(&params[0]).ok()?;
        const HEAD: &str = "<?xml version=\"1.0\"?>\n<methodResponse><params><param><value>\
            <struct><member><name>Status</name><value>Success</value></member>\
            <member><name>Value</name><value><struct>";
        const TAIL: &str =
            "</struct></value></member></struct></value></param></params></methodResponse>\n";
        const MEMBER: &str = "<member><name></name><value></value></member>";
        self.audit_success(method, params);
        Some(self.db.read(|v| {
            // The records' kept encodings (made now where missing) are copied into one
            // buffer of their total size.
            let len = v
                .iter_class_xml(class.name)
                .fold(HEAD.len() + TAIL.len(), |n, (r, x)| {
                    n + MEMBER.len() + r.len() + x.len()
                });
            let mut out = String::with_capacity(len);
            out.push_str(HEAD);
            for (r, rec) in v.iter_class_xml(class.name) {
                crate::xmlrpc::open_member(&mut out, r);
                out.push_str("<value>");
                out.push_str(rec);
                out.push_str("</value></member>");
            }
            out.push_str(TAIL);
            out
        }))
    }

    /// `<class>.get_all_records`'s result written as JSON-RPC's `result` into `out`, straight
    /// from the database (each field typed by the class's table, no copy of the records and
    /// no JSON tree); `false`, with nothing written, when the call is not a valid one of those.
    pub fn get_all_records_json(&self, method: &str, params: &[Value], out: &mut Vec<u8>) -> bool {
        let Some(class) = Self::all_records_class(method) else {
            return false;
        };
        if params.len() != 1 || self.session(&params[0]).is_err() {
            return false;
        }
        self.audit_success(method, params);
        self.db.read(|v| {
            // Records serialize into a `Vec` without I/O errors.
            let _ = serde_json::to_writer(
                &mut *out,
                &AllRecords {
                    view: v,
                    class: class.name,
                },
            );
        });
        true
    }

    /// The class of a `<class>.get_all_records` call, spelt as the datamodel spells it.
    fn all_records_class(method: &str) -> Option<&'static Class> {
        let cname = method.strip_suffix(".get_all_records")?;
        datamodel::class(cname).filter(|c| c.name == cname)
    }

    /// Checks a whole record given to `create`: types, and reference targets.
    pub(super) fn check_record(
        &self,
        tx: &Tx<'_>,
        class: &Class,
        v: &Value,
    ) -> Result<Record, ApiError> {
        let m = v.as_struct().ok_or_else(|| ApiError::field_type("args"))?;
        let mut out = Record::new();
        for (k, x) in m {
            let Some(f) = class.field(k) else { continue };
            if f.qual == Qual::RO || datamodel::inverse_of(class.name, f.name).is_some() {
                continue;
            }
            let x = f.ty.coerce(x).ok_or_else(|| ApiError::field_type(k))?;
            if let Ty::Ref(target) = f.ty {
                let r = x.as_str().unwrap_or(NULL_REF);
                if r != NULL_REF {
                    Self::check_ref_tx(tx, r, target)?;
                }
            }
            out.insert(k.clone(), x);
        }
        Ok(out)
    }

    pub(super) fn generic(&self, class: &'static Class, method: &str, msg: &str, p: &[Value]) -> R {
        let n = p.len();
        let cname = class.name;
        match msg {
            "get_all" => {
                arity(method, 1, n)?;
                self.session(&p[0])?;
                Ok(Value::Array(
                    self.db.read(|v| v.all(cname).into_iter().map(s).collect()),
                ))
            }
            "get_all_records" => {
                arity(method, 1, n)?;
                self.session(&p[0])?;
                Ok(Value::Struct(self.db.read(|v| {
                    v.iter_class(cname)
                        .map(|(k, r)| (k.clone(), Value::Struct(r.clone())))
                        .collect()
                })))
            }
            "get_record" => {
                arity(method, 2, n)?;
                self.session(&p[0])?;
                let r = self.check_ref(&p[1], cname, "self")?;
                self.db
                    .read(|v| v.get(&r).cloned())
                    .map(Value::Struct)
                    .ok_or_else(|| ApiError::handle_invalid(cname, &r))
            }
            "get_by_uuid" => {
                arity(method, 2, n)?;
                self.session(&p[0])?;
                let u = arg_str(&p[1], "uuid")?;
                self.db
                    .read(|v| {
                        v.by_uuid(u)
                            .filter(|r| v.class_of(r) == Some(cname))
                            .cloned()
                    })
                    .map(s)
                    .ok_or_else(|| ApiError::new(codes::UUID_INVALID, [cname, u]))
            }
            "get_by_name_label" if class.has_name_label() => {
                arity(method, 2, n)?;
                self.session(&p[0])?;
                let l = arg_str(&p[1], "label")?;
                Ok(Value::Array(self.db.read(|v| {
                    v.iter_class(cname)
                        .filter(|(_, r)| r.get("name_label").and_then(Value::as_str) == Some(l))
                        .map(|(k, _)| s(k.clone()))
                        .collect()
                })))
            }
            "create" if class.record_create => {
                arity(method, 2, n)?;
                self.session(&p[0])?;
                self.db.write(|tx| {
                    let rec = self.check_record(tx, class, &p[1])?;
                    Ok(s(tx.create(class, rec)))
                })
            }
            "destroy" if class.destroy => {
                arity(method, 2, n)?;
                self.session(&p[0])?;
                let r = self.check_ref(&p[1], cname, "self")?;
                self.db.write(|tx| {
                    self.check_destroy(tx, cname, &r)?;
                    tx.destroy(&r);
                    Ok(s(""))
                })
            }
            _ => self.field_message(class, method, msg, p),
        }
    }

    /// XAPI's refusal to destroy an object others still use.
    pub(super) fn check_destroy(&self, tx: &Tx<'_>, class: &str, r: &str) -> Result<(), ApiError> {
        let busy = |field: &str| tx.refs_field(r, field);
        let attached = |r: &str| tx.field(r, "currently_attached") == Some(&Value::Bool(true));
        match class {
            "network" => {
                let vifs = busy("VIFs");
                if !vifs.is_empty() {
                    return Err(ApiError::new(codes::NETWORK_CONTAINS_VIF, vifs));
                }
                let pifs = busy("PIFs");
                if !pifs.is_empty() {
                    return Err(ApiError::new(codes::NETWORK_CONTAINS_PIF, pifs));
                }
            }
            "VDI" if !busy("VBDs").is_empty() => {
                return Err(ApiError::new(codes::VDI_IN_USE, [r, "destroy"]));
            }
            "SR" => {
                if !busy("VDIs").is_empty() {
                    return Err(ApiError::new(codes::SR_NOT_EMPTY, Vec::<String>::new()));
                }
                if !busy("PBDs").is_empty() {
                    return Err(ApiError::new(codes::SR_HAS_PBD, [r]));
                }
            }
            "GPU_group" => {
                if !busy("PGPUs").is_empty() {
                    return Err(ApiError::new("GPU_GROUP_CONTAINS_PGPU", busy("PGPUs")));
                }
                if !busy("VGPUs").is_empty() {
                    return Err(ApiError::new("GPU_GROUP_CONTAINS_VGPU", busy("VGPUs")));
                }
            }
            // xapi_vbd_helpers.ml `destroy`: attached or reserved, with both UUIDs.
            "VBD" if attached(r) || tx.field(r, "reserved") == Some(&Value::Bool(true)) => {
                let vm = tx.str_field(r, "VM");
                return Err(ApiError::new(
                    codes::OPERATION_NOT_ALLOWED,
                    [format!(
                        "VBD '{}' still attached to '{}'",
                        tx.str_field(r, "uuid"),
                        tx.str_field(&vm, "uuid")
                    )],
                ));
            }
            // xapi_vif_helpers.ml `destroy`: only while its VM runs.
            "VIF" if attached(r) => {
                let vm = tx.str_field(r, "VM");
                if tx.str_field(&vm, "power_state") == "Running" {
                    return Err(ApiError::new(
                        codes::OPERATION_NOT_ALLOWED,
                        ["VIF currently attached to a running VM"],
                    ));
                }
            }
            "PBD" | "VGPU" if attached(r) => {
                return Err(ApiError::new(
                    codes::OPERATION_NOT_ALLOWED,
                    [format!("{class} is currently attached")],
                ));
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn field_message(
        &self,
        class: &'static Class,
        method: &str,
        msg: &str,
        p: &[Value],
    ) -> R {
        let cname = class.name;
        let unknown = || ApiError::new(codes::MESSAGE_METHOD_UNKNOWN, [method]);
        if let Some(fname) = msg.strip_prefix("get_") {
            let f = class.field(fname).ok_or_else(unknown)?;
            arity(method, 2, p.len())?;
            self.session(&p[0])?;
            let r = self.check_ref(&p[1], cname, "self")?;
            return self
                .db
                .read(|v| v.field(&r, f.name).cloned())
                .ok_or_else(|| ApiError::handle_invalid(cname, &r));
        }
        // A field is set through `set_<field>` only when the datamodel has that message with
        // the setter's shape `(session_id, self, value)`: implicit for RW fields, explicit for
        // some others (`VM.set_VCPUs_max`); `host.set_power_on_mode` and the like are not
        // plain setters.
        let setter = class
            .def
            .message(msg)
            .is_some_and(|m| m.params.len() == 3 && m.params[1].name == "self");
        let writable = |fname: &str| class.field(fname).filter(|f| f.qual == Qual::RW);
        if let Some(fname) = msg.strip_prefix("set_") {
            let f = class.field(fname).filter(|_| setter).ok_or_else(unknown)?;
            arity(method, 3, p.len())?;
            self.session(&p[0])?;
            let r = self.check_ref(&p[1], cname, "self")?;
            let v =
                f.ty.coerce(&p[2])
                    .ok_or_else(|| ApiError::field_type(f.name))?;
            return self.db.write(|tx| {
                if let Ty::Ref(target) = f.ty {
                    let t = v.as_str().unwrap_or(NULL_REF);
                    if t != NULL_REF {
                        Self::check_ref_tx(tx, t, target)?;
                    }
                }
                if cname == "VM"
                    && (f.name.starts_with("memory_") || f.name == "VCPUs_max")
                    && tx.str_field(&r, "power_state") != "Halted"
                {
                    return Err(ApiError::new(
                        codes::VM_BAD_POWER_STATE,
                        [
                            r.clone(),
                            "halted".into(),
                            crate::xenops::PowerState::parse(&tx.str_field(&r, "power_state"))
                                .lower(),
                        ],
                    ));
                }
                tx.set(&r, f.name, v.clone());
                Ok(s(""))
            });
        }
        if let Some(fname) = msg.strip_prefix("add_to_") {
            let f = writable(fname)
                .filter(|f| f.ty == Ty::Map)
                .ok_or_else(unknown)?;
            arity(method, 4, p.len())?;
            self.session(&p[0])?;
            let r = self.check_ref(&p[1], cname, "self")?;
            let k = arg_str(&p[2], "key")?;
            let v = arg_str(&p[3], "value")?;
            return self.db.write(|tx| {
                if tx
                    .field(&r, f.name)
                    .and_then(Value::as_struct)
                    .is_some_and(|m| m.contains_key(k))
                {
                    return Err(ApiError::new(
                        codes::MAP_DUPLICATE_KEY,
                        [cname, f.name, &r, k],
                    ));
                }
                tx.map_set(&r, f.name, k, Some(s(v)));
                Ok(s(""))
            });
        }
        if let Some(fname) = msg.strip_prefix("remove_from_") {
            let f = writable(fname)
                .filter(|f| f.ty == Ty::Map)
                .ok_or_else(unknown)?;
            arity(method, 3, p.len())?;
            self.session(&p[0])?;
            let r = self.check_ref(&p[1], cname, "self")?;
            let k = arg_str(&p[2], "key")?;
            return self.db.write(|tx| {
                tx.map_set(&r, f.name, k, None);
                Ok(s(""))
            });
        }
        for (prefix, add) in [("add_", true), ("remove_", false)] {
            if let Some(fname) = msg.strip_prefix(prefix) {
                let f = writable(fname)
                    .filter(|f| f.ty == Ty::StrSet)
                    .ok_or_else(unknown)?;
                arity(method, 3, p.len())?;
                self.session(&p[0])?;
                let r = self.check_ref(&p[1], cname, "self")?;
                let item = arg_str(&p[2], "value")?;
                return self.db.write(|tx| {
                    tx.set_member(&r, f.name, item, add);
                    Ok(s(""))
                });
            }
        }
        Err(unknown())
    }
}

/// A class's records as a JSON map from reference to typed record.
struct AllRecords<'v, 'a> {
    view: &'v crate::db::View<'a>,
    class: &'static str,
}

impl serde::Serialize for AllRecords<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.view.count(self.class)))?;
        for (r, rec) in self.view.iter_class(self.class) {
            map.serialize_entry(r, &TypedRecord(self.class, rec))?;
        }
        map.end()
    }
}

/// One record of a class, typed by its table.
struct TypedRecord<'a>(&'static str, &'a Record);

impl serde::Serialize for TypedRecord<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::value::record(s, self.0, self.1)
    }
}
