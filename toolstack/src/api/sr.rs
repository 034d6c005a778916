//! SRs, PBDs and VDIs over the storage manager (`sm`): `SR.create/introduce/forget/destroy/
//! scan/probe`, `PBD.plug/unplug`, `VDI.create/destroy/resize/snapshot/clone/copy` through
//! the SR's driver, with XAPI's errors. SRs of a type without a driver stay records only.

use std::collections::HashMap;

use super::vm_snapshot::DiskOp;
use super::*;
use crate::db::Read as _;

/// The storage manager's error as XAPI raises it, with the error table's parameters.
fn sm_err(e: sm::Error) -> ApiError {
    let code = e.code();
    let mut p = match &e {
        sm::Error::SrFull { needed, free } => vec![needed.to_string(), free.to_string()],
        sm::Error::VdiInUse(u) => vec![u.to_string(), "operation".into()],
        sm::Error::VdiIsASnapshot(u) | sm::Error::VdiMissing(u) => vec![u.to_string()],
        sm::Error::SrNotAttached(u) | sm::Error::SrNotEmpty(u) => vec![u.to_string()],
        _ if code == "SR_BACKEND_FAILURE" => vec![code.into(), String::new(), e.to_string()],
        _ => vec![e.to_string()],
    };
    if let Some(def) = datamodel::xenapi::error_def(code) {
        p.resize(def.params.len(), String::new());
    }
    ApiError::new(code, p)
}

fn str_map(v: &Value) -> HashMap<String, String> {
    v.as_struct()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn int(v: u64) -> Value {
    s(v.to_string())
}

impl Xapi {
    /// Class messages the storage manager handles; `None` for the others.
    pub(super) fn sr_custom(
        self: &Arc<Self>,
        class: &str,
        method: &str,
        msg: &str,
        p: &[Value],
    ) -> Option<R> {
        let r = match (class, msg) {
            ("SR", "create") => self.with_session(method, p, 10, |x, p| x.sr_create(p)),
            ("SR", "introduce") => self.with_session(method, p, 8, |x, p| x.sr_introduce(p)),
            ("SR", "probe") => self.with_session(method, p, 5, |x, p| x.sr_probe(p)),
            ("SR", "forget" | "destroy" | "scan") => self.with_session(method, p, 2, |x, p| {
                let sr = x.check_ref(&p[1], "SR", "sr")?;
                x.with_storage_operation(Some((&sr, msg)), None, || match msg {
                    "forget" => x.sr_forget(&sr),
                    "destroy" => x.sr_destroy(&sr),
                    _ => x.sr_scan(&sr),
                })
            }),
            ("PBD", "plug" | "unplug") => self.with_session(method, p, 2, |x, p| {
                let pbd = x.check_ref(&p[1], "PBD", "self")?;
                let sr = x.db.read(|v| v.str_field(&pbd, "SR"));
                let sr = (x.db.read(|v| v.class_of(&sr)) == Some("SR")).then_some(sr);
                x.with_storage_operation(sr.as_deref().map(|sr| (sr, msg)), None, || {
                    x.pbd_plug(&pbd, msg == "plug")
                })
            }),
            // Message_forwarding.PBD.create/destroy mark the SR.
            ("PBD", "create") => self.with_session(method, p, 2, |x, p| {
                let sr = p[1]
                    .as_struct()
                    .and_then(|f| f.get("SR"))
                    .and_then(Value::as_str)
                    .filter(|sr| x.db.read(|v| v.class_of(sr)) == Some("SR"));
                x.with_storage_operation(sr.map(|sr| (sr, "pbd_create")), None, || {
                    x.generic(Known::PBD.class(), method, msg, p)
                })
            }),
            ("PBD", "destroy") => self.with_session(method, p, 2, |x, p| {
                let pbd = x.check_ref(&p[1], "PBD", "self")?;
                let sr = x.db.read(|v| v.str_field(&pbd, "SR"));
                let sr = (x.db.read(|v| v.class_of(&sr)) == Some("SR")).then_some(sr);
                x.with_storage_operation(sr.as_deref().map(|sr| (sr, "pbd_destroy")), None, || {
                    x.generic(Known::PBD.class(), method, msg, p)
                })
            }),
            ("VDI", "create") => self.with_session(method, p, 2, |x, p| {
                let sr = p[1]
                    .as_struct()
                    .and_then(|f| f.get("SR"))
                    .and_then(Value::as_str)
                    .filter(|sr| x.db.read(|v| v.class_of(sr)) == Some("SR"));
                x.with_storage_operation(sr.map(|sr| (sr, "vdi_create")), None, || x.vdi_create(p))
            }),
            ("VDI", "destroy") => self.with_session(method, p, 2, |x, p| {
                let vdi = x.check_ref(&p[1], "VDI", "self")?;
                x.with_vdi_operation(&vdi, "destroy", || x.vdi_destroy(&vdi))
            }),
            ("VDI", "resize") => self.with_session(method, p, 3, |x, p| {
                let vdi = x.check_ref(&p[1], "VDI", "vdi")?;
                let size = Ty::Int
                    .coerce(&p[2])
                    .and_then(|v| v.as_i64())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ApiError::field_type("size"))?;
                x.with_vdi_operation(&vdi, "resize", || x.vdi_resize(&vdi, size as u64))
            }),
            ("VDI", "snapshot" | "clone") => self.with_session(method, p, 3, |x, p| {
                let vdi = x.check_ref(&p[1], "VDI", "vdi")?;
                x.with_vdi_operation(&vdi, msg, || x.vdi_snapshot_clone(&vdi, msg == "snapshot"))
            }),
            ("VDI", "copy") => self.with_session(method, p, 5, |x, p| {
                let vdi = x.check_ref(&p[1], "VDI", "vdi")?;
                let sr = x.check_ref(&p[2], "SR", "sr")?;
                x.with_vdi_operation(&vdi, "copy", || x.vdi_copy(&vdi, &sr))
            }),
            ("VM", "snapshot") => self.with_session(method, p, 4, |x, p| {
                let vm = x.check_ref(&p[1], "VM", "vm")?;
                let ignore: Vec<String> = p[3]
                    .as_array()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                let name = arg_str(&p[2], "new_name")?;
                x.vm_copy_as(&vm, name, DiskOp::Snapshot, None, &ignore)
            }),
            ("VM", "clone") => self.with_session(method, p, 3, |x, p| {
                let vm = x.check_ref(&p[1], "VM", "vm")?;
                let name = arg_str(&p[2], "new_name")?;
                x.vm_copy_as(&vm, name, DiskOp::Clone, None, &[])
            }),
            ("VM", "copy") => self.with_session(method, p, 4, |x, p| {
                let vm = x.check_ref(&p[1], "VM", "vm")?;
                let name = arg_str(&p[2], "new_name")?;
                let sr = arg_str(&p[3], "sr")?;
                let dest = if sr == NULL_REF {
                    None
                } else {
                    Some(x.check_ref(&p[3], "SR", "sr")?)
                };
                x.vm_copy_as(&vm, name, DiskOp::Copy, dest.as_deref(), &[])
            }),
            ("VM", "revert") => self.with_session(method, p, 2, |x, p| {
                let snap = x.check_ref(&p[1], "VM", "snapshot")?;
                x.vm_revert(&snap)
            }),
            _ => return None,
        };
        Some(r)
    }

    /// The SR's driver, made on first use from its record and PBD (and attached when the
    /// PBD is plugged, as after a restart); `None` for an SR type without one.
    fn driver(&self, sr: &str) -> Result<Option<Arc<dyn sm::SrDriver>>, ApiError> {
        if let Some(d) = self.storage.get(sr) {
            return Ok(Some(d));
        }
        let (ty, uuid, dc, plugged) = self.db.read(|v| {
            let pbd = v.refs_field(sr, "PBDs").into_iter().next();
            let dc = pbd
                .as_deref()
                .and_then(|p| v.field(p, "device_config"))
                .map(str_map)
                .unwrap_or_default();
            let plugged =
                pbd.is_some_and(|p| v.field(&p, "currently_attached") == Some(&Value::Bool(true)));
            (
                v.str_field(sr, "type"),
                v.str_field(sr, "uuid"),
                dc,
                plugged,
            )
        });
        if !crate::storage::has_driver(&ty) || dc.is_empty() {
            return Ok(None);
        }
        let uuid: sm::SrUuid = uuid
            .parse()
            .map_err(|_| ApiError::new(codes::UUID_INVALID, ["SR", uuid.as_str()]))?;
        let Some(d) = crate::storage::make(&ty, uuid, &dc).map_err(sm_err)? else {
            return Ok(None);
        };
        if plugged {
            d.sr_attach().map_err(sm_err)?;
        }
        self.storage.insert(sr, Arc::clone(&d));
        Ok(Some(d))
    }

    fn sr_create(&self, p: &[Value]) -> R {
        let host = self.check_ref(&p[1], "host", "host")?;
        let dc = Ty::Map
            .coerce(&p[2])
            .ok_or_else(|| ApiError::field_type("device_config"))?;
        let size = Ty::Int
            .coerce(&p[3])
            .ok_or_else(|| ApiError::field_type("physical_size"))?;
        let ty = arg_str(&p[6], "type")?.to_owned();
        let shared = arg_bool(&p[8], "shared")?;
        let mut f = Record::new();
        f.insert("name_label".into(), s(arg_str(&p[4], "name_label")?));
        f.insert(
            "name_description".into(),
            s(arg_str(&p[5], "name_description")?),
        );
        f.insert("type".into(), s(ty.clone()));
        f.insert("content_type".into(), s(arg_str(&p[7], "content_type")?));
        f.insert("shared".into(), Value::Bool(shared));
        f.insert(
            "sm_config".into(),
            Ty::Map
                .coerce(&p[9])
                .ok_or_else(|| ApiError::field_type("sm_config"))?,
        );
        f.insert("physical_size".into(), size);
        let mut driver = None;
        if crate::storage::has_driver(&ty) {
            let uuid = sm::SrUuid::new();
            let d = crate::storage::make(&ty, uuid, &str_map(&dc))
                .map_err(sm_err)?
                .expect("a type with a driver");
            d.sr_create().map_err(sm_err)?;
            d.sr_attach().map_err(sm_err)?;
            let st = d.sr_stats().map_err(sm_err)?;
            f.insert("uuid".into(), s(uuid.to_string()));
            f.insert("physical_size".into(), int(st.physical_size));
            f.insert("physical_utilisation".into(), int(st.physical_utilisation));
            f.insert("virtual_allocation".into(), int(st.virtual_allocation));
            driver = Some(d);
        }
        let sr = self.db.write(|tx| {
            let sr = tx.create(Known::SR.class(), f.clone());
            let mut pbd = Record::new();
            pbd.insert("host".into(), s(host.clone()));
            pbd.insert("SR".into(), s(sr.clone()));
            pbd.insert("device_config".into(), dc.clone());
            pbd.insert("currently_attached".into(), Value::Bool(true));
            tx.create(Known::PBD.class(), pbd);
            Ok::<_, ApiError>(sr)
        })?;
        if let Some(d) = driver {
            self.storage.insert(&sr, d);
        }
        Ok(s(sr))
    }

    fn sr_introduce(&self, p: &[Value]) -> R {
        let uuid = arg_str(&p[1], "uuid")?;
        if uuid.parse::<sm::SrUuid>().is_err() {
            return Err(ApiError::new(codes::UUID_INVALID, ["SR", uuid]));
        }
        if self.db.read(|v| v.by_uuid(uuid).is_some()) {
            return Err(ApiError::new("SR_UUID_EXISTS", [uuid]));
        }
        let mut f = Record::new();
        f.insert("uuid".into(), s(uuid));
        f.insert("name_label".into(), s(arg_str(&p[2], "name_label")?));
        f.insert(
            "name_description".into(),
            s(arg_str(&p[3], "name_description")?),
        );
        f.insert("type".into(), s(arg_str(&p[4], "type")?));
        f.insert("content_type".into(), s(arg_str(&p[5], "content_type")?));
        f.insert("shared".into(), Value::Bool(arg_bool(&p[6], "shared")?));
        f.insert(
            "sm_config".into(),
            Ty::Map
                .coerce(&p[7])
                .ok_or_else(|| ApiError::field_type("sm_config"))?,
        );
        self.db
            .write(|tx| Ok(s(tx.create(Known::SR.class(), f.clone()))))
    }

    /// `SR.probe`: the SRs found on the substrate, as XAPI's XML list.
    fn sr_probe(&self, p: &[Value]) -> R {
        self.check_ref(&p[1], "host", "host")?;
        let dc = str_map(&p[2]);
        let ty = arg_str(&p[3], "type")?;
        let d = crate::storage::make(ty, sm::SrUuid::new(), &dc)
            .map_err(sm_err)?
            .ok_or_else(|| ApiError::new("SR_UNKNOWN_DRIVER", [ty]))?;
        let found = d.sr_probe().map_err(sm_err)?;
        let mut out = String::from("<?xml version=\"1.0\" ?>\n<SRlist>\n");
        for u in found {
            out.push_str(&format!("\t<SR>\n\t\t<UUID>{u}</UUID>\n\t</SR>\n"));
        }
        out.push_str("</SRlist>\n");
        Ok(s(out))
    }

    fn plugged_pbds(&self, sr: &str) -> Vec<String> {
        self.db.read(|v| {
            v.refs_field(sr, "PBDs")
                .into_iter()
                .filter(|p| v.field(p, "currently_attached") == Some(&Value::Bool(true)))
                .collect()
        })
    }

    /// `SR.forget`: the records go (VDIs and PBDs too), the data stays; refused while a PBD
    /// is plugged.
    fn sr_forget(&self, sr: &str) -> R {
        if !self.plugged_pbds(sr).is_empty() {
            return Err(ApiError::new(codes::SR_HAS_PBD, [sr]));
        }
        self.storage.remove(sr);
        self.db.write(|tx| {
            for r in tx.refs_field(sr, "VDIs") {
                for vbd in tx.refs_field(&r, "VBDs") {
                    tx.destroy(&vbd);
                }
                tx.destroy(&r);
            }
            for pbd in tx.refs_field(sr, "PBDs") {
                tx.destroy(&pbd);
            }
            tx.destroy(sr);
            Ok(s(""))
        })
    }

    /// `SR.destroy`: removes the SR from its substrate, then forgets it. As XAPI
    /// (`Xapi_sr_operations` CA-70294), the SR's PBDs must be unplugged and it must hold no
    /// VDIs (checked before, by [`Xapi::with_storage_operation`]); the driver attaches the SR
    /// for the deletion only (SM's `sr_delete` from an unplugged PBD).
    fn sr_destroy(&self, sr: &str) -> R {
        let Some(d) = self.driver(sr)? else {
            return self.db.write(|tx| {
                for pbd in tx.refs_field(sr, "PBDs") {
                    tx.destroy(&pbd);
                }
                self.check_destroy(tx, "SR", sr)?;
                tx.destroy(sr);
                Ok(s(""))
            });
        };
        d.sr_attach().map_err(sm_err)?;
        if let Err(e) = d.sr_delete() {
            let _ = d.sr_detach();
            return Err(sm_err(e));
        }
        // The driver is dropped with the records (a detach now would lock the SR's
        // directory again).
        self.sr_forget(sr)
    }

    /// The driver of a plugged SR; `SR_HAS_NO_PBDS` when it is not plugged.
    pub(super) fn attached_driver(
        &self,
        sr: &str,
    ) -> Result<Option<Arc<dyn sm::SrDriver>>, ApiError> {
        let Some(d) = self.driver(sr)? else {
            return Ok(None);
        };
        if self.plugged_pbds(sr).is_empty() {
            return Err(ApiError::new("SR_HAS_NO_PBDS", [sr]));
        }
        Ok(Some(d))
    }

    /// `SR.scan`: VDI records for every image on the substrate (new ones made, vanished
    /// ones removed, sizes and chains refreshed) and the SR's space.
    fn sr_scan(&self, sr: &str) -> R {
        let Some(d) = self.attached_driver(sr)? else {
            return Ok(s(""));
        };
        let found = d.sr_scan().map_err(sm_err)?;
        self.sync_sr(sr, d.as_ref(), &found, true)?;
        Ok(s(""))
    }

    /// Brings the SR's VDI records in line with the driver's `found` list; `prune` removes
    /// records of VDIs no longer there.
    fn sync_sr(
        &self,
        sr: &str,
        d: &dyn sm::SrDriver,
        found: &[sm::VdiInfo],
        prune: bool,
    ) -> Result<(), ApiError> {
        let st = d.sr_stats().map_err(sm_err)?;
        self.db.write(|tx| {
            let by_uuid: HashMap<String, String> = tx
                .refs_field(sr, "VDIs")
                .into_iter()
                .map(|r| (tx.str_field(&r, "uuid"), r))
                .collect();
            let mut refs = HashMap::new();
            for info in found {
                let u = info.uuid.to_string();
                let r = match by_uuid.get(&u) {
                    Some(r) => r.clone(),
                    None => {
                        let mut f = Record::new();
                        f.insert("uuid".into(), s(u.clone()));
                        f.insert("name_label".into(), s(info.name_label.clone()));
                        f.insert("SR".into(), s(sr));
                        f.insert("type".into(), s("user"));
                        f.insert("location".into(), s(u.clone()));
                        tx.create(Known::VDI.class(), f)
                    }
                };
                refs.insert(u, r);
            }
            for info in found {
                let r = &refs[&info.uuid.to_string()];
                tx.set(r, "virtual_size", int(info.virtual_size));
                tx.set(r, "physical_utilisation", int(info.physical_utilisation));
                tx.set(r, "is_a_snapshot", Value::Bool(info.is_a_snapshot));
                tx.set(r, "read_only", Value::Bool(info.is_a_snapshot));
                tx.set(r, "managed", Value::Bool(true));
                let of = info
                    .snapshot_of
                    .and_then(|u| refs.get(&u.to_string()).cloned())
                    .unwrap_or_else(|| NULL_REF.to_owned());
                tx.set(r, "snapshot_of", s(of));
                let parent = info.parent.map(|p| s(p.to_string()));
                tx.map_set(r, "sm_config", "vhd-parent", parent);
            }
            if prune {
                for (u, r) in &by_uuid {
                    if !refs.contains_key(u) && !Self::external(tx, r) {
                        for vbd in tx.refs_field(r, "VBDs") {
                            tx.destroy(&vbd);
                        }
                        tx.destroy(r);
                    }
                }
            }
            // `snapshots` is the inverse of `snapshot_of`.
            let vdis = tx.refs_field(sr, "VDIs");
            for r in &vdis {
                let snaps: Vec<Value> = vdis
                    .iter()
                    .filter(|o| tx.str_field(o, "snapshot_of") == *r)
                    .map(|o| s(o.as_str()))
                    .collect();
                tx.set(r, "snapshots", Value::Array(snaps));
            }
            tx.set(sr, "physical_size", int(st.physical_size));
            tx.set(sr, "physical_utilisation", int(st.physical_utilisation));
            tx.set(sr, "virtual_allocation", int(st.virtual_allocation));
            // New records (a VM's snapshot, a scan) get what XAPI allows them.
            super::storage_operations::refresh_storage(tx, sr);
            Ok(())
        })
    }

    /// Refreshes the records of the SR's VDIs after an operation.
    pub(super) fn refresh_sr(&self, sr: &str, d: &dyn sm::SrDriver) -> Result<(), ApiError> {
        let uuids: Vec<String> = self.db.read(|v| {
            v.refs_field(sr, "VDIs")
                .iter()
                .map(|r| v.str_field(r, "uuid"))
                .collect()
        });
        let found: Vec<sm::VdiInfo> = uuids
            .iter()
            .filter_map(|u| u.parse().ok())
            .filter_map(|u| d.vdi_info(u).ok())
            .collect();
        self.sync_sr(sr, d, &found, false)
    }

    /// `PBD.plug`/`unplug`: attaches or detaches the SR.
    fn pbd_plug(&self, pbd: &str, plug: bool) -> R {
        let sr = self.db.read(|v| v.str_field(pbd, "SR"));
        if let Some(d) = self.driver(&sr)? {
            if plug {
                d.sr_attach().map_err(sm_err)?;
            } else {
                let busy = self.db.read(|v| {
                    v.refs_field(&sr, "VDIs")
                        .iter()
                        .any(|vdi| self.vdi_running(v, vdi))
                });
                if busy {
                    return Err(ApiError::new(
                        codes::OPERATION_NOT_ALLOWED,
                        ["a VDI of the SR is in use by a running VM"],
                    ));
                }
                d.sr_detach().map_err(sm_err)?;
            }
        }
        self.db.write(|tx| {
            tx.set(pbd, "currently_attached", Value::Bool(plug));
            Ok::<_, ApiError>(())
        })?;
        if plug {
            if let Some(d) = self.driver(&sr)? {
                let found = d.sr_scan().map_err(sm_err)?;
                self.sync_sr(&sr, d.as_ref(), &found, true)?;
            }
        }
        Ok(s(""))
    }

    /// A destroyed VDI that was a VM's suspend image is no longer its `suspend_VDI`
    /// (`Xapi_vdi.destroy`).
    fn forget_suspend_vdi(tx: &mut crate::db::Tx<'_>, vdi: &str) {
        let vms: Vec<String> = tx
            .iter_class("VM")
            .filter(|(_, r)| r.get("suspend_VDI").and_then(Value::as_str) == Some(vdi))
            .map(|(k, _)| k.clone())
            .collect();
        for vm in vms {
            tx.set(&vm, "suspend_VDI", s(NULL_REF));
        }
    }

    /// A VDI served from its `sm_config:path`, not by its SR's driver.
    pub(super) fn external(v: &impl crate::db::Read, vdi: &str) -> bool {
        v.field(vdi, "sm_config")
            .and_then(Value::as_struct)
            .is_some_and(|m| m.contains_key("path"))
    }

    /// Whether a VM that is not halted has a VBD on the VDI.
    fn vdi_running(&self, v: &impl crate::db::Read, vdi: &str) -> bool {
        v.refs_field(vdi, "VBDs").iter().any(|vbd| {
            let vm = v.str_field(vbd, "VM");
            !matches!(v.str_field(&vm, "power_state").as_str(), "Halted" | "")
        })
    }

    pub(super) fn vdi_sr(&self, vdi: &str) -> Result<(String, sm::VdiUuid), ApiError> {
        let (sr, u) = self
            .db
            .read(|v| (v.str_field(vdi, "SR"), v.str_field(vdi, "uuid")));
        let u = u
            .parse()
            .map_err(|_| ApiError::new(codes::UUID_INVALID, ["VDI", u.as_str()]))?;
        Ok((sr, u))
    }

    pub(super) fn vdi_create(&self, p: &[Value]) -> R {
        let rec = &p[1];
        let class = Known::VDI.class();
        let f = self.db.read(|v| {
            let f = rec
                .as_struct()
                .ok_or_else(|| ApiError::field_type("VDI record"))?;
            let sr = f.get("SR").and_then(Value::as_str).unwrap_or(NULL_REF);
            if v.class_of(sr) != Some("SR") {
                return Err(ApiError::handle_invalid("SR", sr));
            }
            Ok((sr.to_owned(), f.clone()))
        });
        let (sr, fields) = f?;
        // A disk the caller names by `sm_config:path` (an image or block device outside the
        // SR) stays a record, served from that path.
        let external = fields
            .get("sm_config")
            .and_then(Value::as_struct)
            .is_some_and(|m| m.contains_key("path"));
        let d = match self.attached_driver(&sr)? {
            Some(d) if !external => d,
            _ => return self.generic(class, "VDI.create", "create", p),
        };
        let size = fields
            .get("virtual_size")
            .and_then(|v| Ty::Int.coerce(v))
            .and_then(|v| v.as_i64())
            .filter(|n| *n > 0)
            .ok_or_else(|| ApiError::field_type("virtual_size"))? as u64;
        let name = fields
            .get("name_label")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let info = d.vdi_create(&name, size).map_err(sm_err)?;
        let r = self.db.write(|tx| {
            let mut f = match self.check_record(tx, class, rec) {
                Ok(f) => f,
                Err(e) => return Err(e),
            };
            f.insert("uuid".into(), s(info.uuid.to_string()));
            f.insert("location".into(), s(info.uuid.to_string()));
            f.insert("virtual_size".into(), int(info.virtual_size));
            f.insert("managed".into(), Value::Bool(true));
            Ok(tx.create(class, f))
        });
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                let _ = d.vdi_destroy(info.uuid);
                return Err(e);
            }
        };
        self.refresh_sr(&sr, d.as_ref())?;
        Ok(s(r))
    }

    pub(super) fn vdi_destroy(&self, vdi: &str) -> R {
        let (sr, u) = self.vdi_sr(vdi)?;
        let d = if self.db.read(|v| Self::external(v, vdi)) {
            None
        } else {
            self.attached_driver(&sr)?
        };
        let Some(d) = d else {
            return self.db.write(|tx| {
                self.check_destroy(tx, "VDI", vdi)?;
                tx.destroy(vdi);
                Self::forget_suspend_vdi(tx, vdi);
                Ok(s(""))
            });
        };
        // As for a record-only VDI (`check_destroy`): refused while any VBD uses it.
        if self.db.read(|v| !v.refs_field(vdi, "VBDs").is_empty()) {
            return Err(ApiError::new(codes::VDI_IN_USE, [vdi, "destroy"]));
        }
        d.vdi_destroy(u).map_err(sm_err)?;
        self.db.write(|tx| {
            tx.destroy(vdi);
            Self::forget_suspend_vdi(tx, vdi);
            Ok::<_, ApiError>(())
        })?;
        self.refresh_sr(&sr, d.as_ref())?;
        Ok(s(""))
    }

    fn vdi_resize(&self, vdi: &str, size: u64) -> R {
        let (sr, u) = self.vdi_sr(vdi)?;
        let Some(d) = self.attached_driver(&sr)? else {
            return Err(ApiError::new("SR_OPERATION_NOT_SUPPORTED", [sr.as_str()]));
        };
        if self.db.read(|v| self.vdi_running(v, vdi)) {
            return Err(ApiError::new(codes::VDI_IN_USE, [vdi, "resize"]));
        }
        d.vdi_resize(u, size).map_err(sm_err)?;
        self.refresh_sr(&sr, d.as_ref())?;
        Ok(s(""))
    }

    pub(super) fn vdi_snapshot_clone(&self, vdi: &str, snapshot: bool) -> R {
        let (sr, u) = self.vdi_sr(vdi)?;
        let Some(d) = self.attached_driver(&sr)? else {
            return Err(ApiError::new("SR_OPERATION_NOT_SUPPORTED", [sr.as_str()]));
        };
        let op = |d: &dyn sm::SrDriver| {
            if snapshot {
                d.vdi_snapshot(u)
            } else {
                d.vdi_clone(u)
            }
        };
        let live = self.db.read(|v| self.datapaths(v, vdi));
        let info = if live.is_empty() {
            op(d.as_ref()).map_err(sm_err)?
        } else {
            self.with_datapaths_paused(d.as_ref(), vdi, u, &live, op)?
        };
        let r = self.new_vdi_record(&sr, vdi, &info, snapshot)?;
        self.refresh_sr(&sr, d.as_ref())?;
        Ok(s(r))
    }

    /// The datapaths serving `vdi` now: each running VM's domain and device id, and
    /// whether the kernel's blkback serves it (its frontend names a `backend/vbd` directory).
    fn datapaths(&self, v: &impl crate::db::Read, vdi: &str) -> Vec<(DomId, u32, bool)> {
        v.refs_field(vdi, "VBDs")
            .into_iter()
            .filter_map(|vbd| {
                let vm = v.str_field(&vbd, "VM");
                if matches!(v.str_field(&vm, "power_state").as_str(), "Halted" | "") {
                    return None;
                }
                let domid = v.field(&vm, "domid").and_then(Value::as_i64)?;
                let domid = u16::try_from(domid).ok().map(DomId)?;
                let userdevice = v.str_field(&vbd, "userdevice").parse().unwrap_or(0);
                let (devid, _) = crate::xenops::vbd_device(userdevice);
                let frontend = format!(
                    "{}/device/vbd/{devid}/backend",
                    xenbus::paths::domain_path(domid)
                );
                let kernel = self
                    .backend
                    .xs_read(&frontend)
                    .ok()
                    .flatten()
                    .is_some_and(|b| b.contains("/backend/vbd/"));
                Some((domid, devid, kernel))
            })
            .collect()
    }

    /// Runs `op` (a snapshot or clone) on `vdi` while running guests use it, as XenServer
    /// does with `tap-ctl pause`, the snapshot, `tap-ctl unpause -a <leaf>`: each datapath
    /// (`blkbackd`, the domain's device model) is paused over QMP (requests wait, those in
    /// flight finish, the image is flushed), the VDI deactivated, `op` run, the VDI activated
    /// again and each datapath resumed on the image its `params` name (the chain's new leaf).
    /// On the simulated host nothing serves the disks, so there is nothing to pause; a disk
    /// the kernel's blkback serves cannot be paused here (`VDI_IN_USE`).
    fn with_datapaths_paused(
        &self,
        d: &dyn sm::SrDriver,
        vdi: &str,
        u: sm::VdiUuid,
        live: &[(DomId, u32, bool)],
        op: impl FnOnce(&dyn sm::SrDriver) -> sm::Result<sm::VdiInfo>,
    ) -> Result<sm::VdiInfo, ApiError> {
        let real = self.backend.hypervisor() == "xen";
        if real && live.iter().any(|(_, _, kernel)| *kernel) {
            return Err(ApiError::new(codes::VDI_IN_USE, [vdi, "snapshot"]));
        }
        let dir = std::path::Path::new(crate::devices::QMP_DIR);
        let failed = |what: &str, e: crate::Error| {
            ApiError::new(
                "SR_BACKEND_FAILURE",
                ["SR_BACKEND_FAILURE", "", &format!("{what}: {e}")],
            )
        };
        let mut paused = Vec::new();
        let resume_all = |paused: &[(DomId, u32)]| -> Result<(), ApiError> {
            let mut first = None;
            for &(domid, devid) in paused {
                let params = self
                    .backend
                    .xs_read(&format!(
                        "/local/domain/0/backend/qdisk/{}/{devid}/params",
                        domid.0
                    ))
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let file = params.strip_prefix("raw:").unwrap_or(&params);
                let args = serde_json::json!({"device": devid.to_string(), "file": file});
                if let Err(e) = crate::devices::qmp_command(dir, domid, "x-blkbackd-resume", args) {
                    tracing::error!("resuming disk {devid} of domain {}: {e}", domid.0);
                    first.get_or_insert(failed("resuming the datapath", e));
                }
            }
            first.map_or(Ok(()), Err)
        };
        if real {
            for &(domid, devid, _) in live {
                let args = serde_json::json!({"device": devid.to_string()});
                if let Err(e) = crate::devices::qmp_command(dir, domid, "x-blkbackd-pause", args) {
                    let _ = resume_all(&paused);
                    return Err(failed("pausing the datapath", e));
                }
                paused.push((domid, devid));
            }
        }
        let t = std::time::Instant::now();
        let r = d.vdi_deactivate(u).and_then(|()| {
            let r = op(d);
            // A failed step leaves a journal: scan finishes or rolls it back, so that the
            // leaf the datapath resumes on exists.
            if r.is_err() {
                let _ = d.sr_scan();
            }
            let a = d.vdi_activate(u);
            r.and_then(|info| a.map(|()| info))
        });
        let resumed = resume_all(&paused);
        tracing::info!(
            "VDI {u}: {} datapath(s) paused for {} ms",
            paused.len(),
            t.elapsed().as_millis()
        );
        let info = r.map_err(sm_err)?;
        resumed?;
        Ok(info)
    }

    /// A record for a VDI the driver just made from `from`, copying its descriptive fields.
    fn new_vdi_record(
        &self,
        sr: &str,
        from: &str,
        info: &sm::VdiInfo,
        snapshot: bool,
    ) -> Result<String, ApiError> {
        self.db.write(|tx| {
            let mut f = Record::new();
            for k in [
                "name_label",
                "name_description",
                "type",
                "sharable",
                "other_config",
            ] {
                if let Some(v) = tx.field(from, k) {
                    f.insert(k.into(), v.clone());
                }
            }
            f.insert("uuid".into(), s(info.uuid.to_string()));
            f.insert("location".into(), s(info.uuid.to_string()));
            f.insert("SR".into(), s(sr));
            f.insert("managed".into(), Value::Bool(true));
            if snapshot {
                f.insert("is_a_snapshot".into(), Value::Bool(true));
                f.insert("snapshot_of".into(), s(from));
                f.insert("snapshot_time".into(), now_datetime());
                f.insert("read_only".into(), Value::Bool(true));
            }
            Ok(tx.create(Known::VDI.class(), f))
        })
    }

    pub(super) fn vdi_copy(&self, vdi: &str, dest: &str) -> R {
        let (sr, u) = self.vdi_sr(vdi)?;
        let Some(d) = self.attached_driver(&sr)? else {
            return Err(ApiError::new("SR_OPERATION_NOT_SUPPORTED", [sr.as_str()]));
        };
        if dest == sr {
            let info = d.vdi_copy(u).map_err(sm_err)?;
            let r = self.new_vdi_record(&sr, vdi, &info, false)?;
            self.refresh_sr(&sr, d.as_ref())?;
            return Ok(s(r));
        }
        let Some(dd) = self.attached_driver(dest)? else {
            return Err(ApiError::new("SR_OPERATION_NOT_SUPPORTED", [dest]));
        };
        let from = d.vdi_info(u).map_err(sm_err)?;
        let info = dd
            .vdi_create(&from.name_label, from.virtual_size)
            .map_err(sm_err)?;
        if let Err(e) = Self::copy_between(d.as_ref(), u, dd.as_ref(), info.uuid, from.virtual_size)
        {
            let _ = dd.vdi_destroy(info.uuid);
            return Err(e);
        }
        let r = self.new_vdi_record(dest, vdi, &info, false)?;
        self.refresh_sr(dest, dd.as_ref())?;
        Ok(s(r))
    }

    /// Copies a VDI's data into a new VDI of another SR, both attached for the copy only.
    fn copy_between(
        d: &dyn sm::SrDriver,
        u: sm::VdiUuid,
        dd: &dyn sm::SrDriver,
        to: sm::VdiUuid,
        size: u64,
    ) -> Result<(), ApiError> {
        let a = d.vdi_attach(u, false).map_err(sm_err)?;
        let b = match dd.vdi_attach(to, true) {
            Ok(b) => b,
            Err(e) => {
                let _ = d.vdi_detach(u);
                return Err(sm_err(e));
            }
        };
        let r = crate::storage::copy_data(&a.path, &b.path, size);
        let _ = d.vdi_detach(u);
        let _ = dd.vdi_detach(to);
        r.map_err(|e| {
            ApiError::new(
                "SR_BACKEND_FAILURE",
                ["SR_BACKEND_FAILURE", "", &format!("copying the data: {e}")],
            )
        })
    }

    /// Attaches and activates the SR-backed VDIs of a VM about to start, pointing each
    /// VBD's backend `params` at the image the driver serves (a file SR's qcow2 leaf, whose
    /// VBD then prefers a `qdisk` backend).
    pub(super) fn sr_attach_vbds(&self, cfg: &mut crate::xenops::VmConfig) -> Result<(), ApiError> {
        let mut done: Vec<(Arc<dyn sm::SrDriver>, sm::VdiUuid)> = Vec::new();
        let release = |done: &[(Arc<dyn sm::SrDriver>, sm::VdiUuid)]| {
            for (d, u) in done {
                let _ = d.vdi_deactivate(*u);
                let _ = d.vdi_detach(*u);
            }
        };
        for b in &mut cfg.vbds {
            let vdi = self.db.read(|v| v.str_field(&b.vbd, "VDI"));
            if vdi.is_empty() || vdi == NULL_REF || self.db.read(|v| Self::external(v, &vdi)) {
                continue;
            }
            let (sr, u) = self.vdi_sr(&vdi)?;
            let d = match self.attached_driver(&sr) {
                Ok(Some(d)) => d,
                Ok(None) => continue,
                Err(e) => {
                    release(&done);
                    return Err(e);
                }
            };
            let info = match d.vdi_attach(u, !b.read_only) {
                Ok(i) => i,
                Err(e) => {
                    release(&done);
                    return Err(sm_err(e));
                }
            };
            done.push((Arc::clone(&d), u));
            if let Err(e) = d.vdi_activate(u) {
                release(&done);
                return Err(sm_err(e));
            }
            b.params = info.path.display().to_string();
            b.read_only |= info.readonly;
            // The storage's preference, as an SM's attach names its `backend_type`: the
            // kernel's blkback reads block devices only, so a qcow2 image needs the device
            // model.
            if sm::image::is_qcow2(&info.path).unwrap_or(false) {
                b.sm_backend = Some(crate::xenops::VbdBackend::Qdisk);
            }
        }
        Ok(())
    }

    /// Deactivates and detaches the SR-backed VDIs of a VM that stopped (or did not start).
    pub(super) fn sr_release_vbds(&self, tx: &impl crate::db::Read, vm: &str) {
        for vbd in tx.refs_field(vm, "VBDs") {
            let vdi = tx.str_field(&vbd, "VDI");
            if Self::external(tx, &vdi) {
                continue;
            }
            let Some(d) = self.storage.get(&tx.str_field(&vdi, "SR")) else {
                continue;
            };
            let Ok(u) = tx.str_field(&vdi, "uuid").parse::<sm::VdiUuid>() else {
                continue;
            };
            let _ = d.vdi_deactivate(u);
            let _ = d.vdi_detach(u);
        }
    }

    /// Makes the pool's default SR (the host's "Local storage", type `ext`) a file SR in
    /// `dir` when its PBD names no storage yet, as XenServer's installer makes the local SR;
    /// then scans it.
    pub fn attach_local_sr(&self, dir: &std::path::Path) -> Result<(), ApiError> {
        let (sr, pbd) = self.db.read(|v| {
            let pool = v.all("pool").into_iter().next().unwrap_or_default();
            let sr = v.str_field(&pool, "default_SR");
            let pbd = v.refs_field(&sr, "PBDs").into_iter().next();
            (sr, pbd)
        });
        let Some(pbd) = pbd else {
            return Ok(());
        };
        let (ty, uuid, has_dc) = self.db.read(|v| {
            let dc = v
                .field(&pbd, "device_config")
                .map(str_map)
                .unwrap_or_default();
            (
                v.str_field(&sr, "type"),
                v.str_field(&sr, "uuid"),
                !dc.is_empty(),
            )
        });
        if !has_dc && matches!(ty.as_str(), "ext" | "file") {
            let uuid: sm::SrUuid = uuid
                .parse()
                .map_err(|_| ApiError::new(codes::UUID_INVALID, ["SR", uuid.as_str()]))?;
            std::fs::create_dir_all(dir)
                .map_err(|e| ApiError::internal(format!("{}: {e}", dir.display())))?;
            let location = dir.display().to_string();
            let dc: HashMap<String, String> = [("location".to_owned(), location.clone())].into();
            let d = crate::storage::make(&ty, uuid, &dc)
                .map_err(sm_err)?
                .expect("a file SR type");
            if !d.sr_probe().map_err(sm_err)?.contains(&uuid) {
                d.sr_create().map_err(sm_err)?;
            }
            self.db.write(|tx| {
                tx.map_set(&pbd, "device_config", "location", Some(s(location.clone())));
                tx.set(&pbd, "currently_attached", Value::Bool(true));
                Ok::<_, ApiError>(())
            })?;
        }
        self.sr_scan(&sr)?;
        Ok(())
    }
}
