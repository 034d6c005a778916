//! The `message` class (XAPI's `ocaml/xapi/xapi_message.ml`): alerts such as perfmon's
//! `ALARM`, made with `message.create`, listed with `get_all_records`/`get_since`, removed
//! with `destroy`, and seen through `event.from` as any other class.

use super::*;

/// The classes a message may be about (the datamodel's `cls` enum).
pub const CLS: &[&str] = &[
    "VM",
    "Host",
    "SR",
    "Pool",
    "VMPP",
    "VMSS",
    "PVS_proxy",
    "VDI",
    "Certificate",
    "VM_group",
];

impl Xapi {
    /// `message.create name priority cls obj_uuid body`: a new message, stamped now; the
    /// object must exist (XAPI checks the UUID against the class).
    pub fn message_create(
        &self,
        name: &str,
        priority: i64,
        cls: &str,
        obj_uuid: &str,
        body: &str,
    ) -> Result<String, ApiError> {
        let cls = Ty::Enum(CLS)
            .coerce(&s(cls))
            .ok_or_else(|| ApiError::field_type("cls"))?;
        let obj_class = match cls.as_str() {
            Some("Host") => Some("host"),
            Some(c @ ("VM" | "SR" | "VDI")) => Some(c),
            _ => None,
        };
        if let Some(c) = obj_class {
            let known = self.db.read(|db| {
                db.by_uuid(obj_uuid)
                    .is_some_and(|r| db.class_of(r) == Some(c))
            });
            if !known {
                return Err(ApiError::new(codes::UUID_INVALID, [c, obj_uuid]));
            }
        }
        let mut f = Record::new();
        f.insert("name".into(), s(name));
        f.insert("priority".into(), s(priority.to_string()));
        f.insert("cls".into(), cls);
        f.insert("obj_uuid".into(), s(obj_uuid));
        f.insert("timestamp".into(), now_datetime());
        f.insert("body".into(), s(body));
        let c = Known::message.class();
        self.db.write(|tx| Ok(tx.create(c, f.clone())))
    }

    /// The `message` messages XAPI handles itself; `None` for the generic ones.
    pub(super) fn message(self: &Arc<Self>, method: &str, msg: &str, p: &[Value]) -> Option<R> {
        let r = match msg {
            "create" => self.with_session(method, p, 6, |x, p| {
                let prio = match &p[2] {
                    Value::Int(i) => *i,
                    v => v
                        .as_str()
                        .and_then(|t| t.parse().ok())
                        .ok_or_else(|| ApiError::field_type("priority"))?,
                };
                x.message_create(
                    arg_str(&p[1], "name")?,
                    prio,
                    arg_str(&p[3], "cls")?,
                    arg_str(&p[4], "obj_uuid")?,
                    arg_str(&p[5], "body")?,
                )
                .map(s)
            }),
            "get_since" => self.with_session(method, p, 2, |x, p| {
                let since = match &p[1] {
                    Value::DateTime(t) | Value::String(t) => t.clone(),
                    _ => return Err(ApiError::field_type("since")),
                };
                let since = normalise_datetime(&since);
                let out = x.db.read(|db| {
                    db.iter_class("message")
                        .filter(|(_, rec)| match rec.get("timestamp") {
                            Some(Value::DateTime(t) | Value::String(t)) => {
                                normalise_datetime(t) > since
                            }
                            _ => false,
                        })
                        .map(|(r, rec)| (r.clone(), Value::Struct(rec.clone())))
                        .collect()
                });
                Ok(Value::Struct(out))
            }),
            _ => return None,
        };
        Some(r)
    }
}

/// `YYYYMMDDTHH:MM:SSZ` and `YYYY-MM-DDTHH:MM:SSZ` to one comparable form.
fn normalise_datetime(t: &str) -> String {
    t.chars().filter(|c| c.is_ascii_digit()).collect()
}
