//! `VM.snapshot`, `VM.clone`, `VM.copy` and `VM.revert`: a copy of the VM record with its
//! disks snapshotted, cloned or copied through the SR drivers (`sr`).

use super::*;
use crate::db::Read as _;

/// How a VM's disks are carried over to its copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DiskOp {
    /// Read-only snapshots (`VM.snapshot`).
    Snapshot,
    /// Writable clones sharing data (`VM.clone`).
    Clone,
    /// Full copies (`VM.copy`), into the SR given or each disk's own.
    Copy,
}

/// VBD fields a copy keeps.
const VBD_FIELDS: &[&str] = &[
    "userdevice",
    "device",
    "mode",
    "type",
    "bootable",
    "empty",
    "unpluggable",
    "other_config",
    "qos_algorithm_type",
    "qos_algorithm_params",
];

/// VM fields `VM.revert` restores from the snapshot.
const REVERT_FIELDS: &[&str] = &[
    "memory_static_min",
    "memory_static_max",
    "memory_dynamic_min",
    "memory_dynamic_max",
    "VCPUs_max",
    "VCPUs_at_startup",
    "VCPUs_params",
    "platform",
    "PV_kernel",
    "PV_ramdisk",
    "PV_args",
    "PV_bootloader",
    "PV_bootloader_args",
    "HVM_boot_policy",
    "HVM_boot_params",
    "actions_after_shutdown",
    "actions_after_reboot",
    "actions_after_crash",
];

impl Xapi {
    /// A disk for the copy of a VM: the VDI snapshotted, cloned or copied (a record copy on
    /// an SR without a driver).
    fn carry_disk(&self, vdi: &str, op: DiskOp, dest: Option<&str>) -> Result<String, ApiError> {
        let (sr, external) = self
            .db
            .read(|v| (v.str_field(vdi, "SR"), Self::external(v, vdi)));
        // A disk named by `sm_config:path` is not the driver's: its copy is a record.
        if !external && self.attached_driver(&sr)?.is_some() {
            let r = match op {
                DiskOp::Snapshot => self.vdi_snapshot_clone(vdi, true)?,
                DiskOp::Clone => self.vdi_snapshot_clone(vdi, false)?,
                DiskOp::Copy => self.vdi_copy(vdi, dest.unwrap_or(&sr))?,
            };
            return Ok(r.as_str().unwrap_or_default().to_owned());
        }
        self.db.write(|tx| {
            let mut f = tx.get(vdi).cloned().unwrap_or_default();
            f.remove("uuid");
            if op == DiskOp::Snapshot {
                f.insert("is_a_snapshot".into(), Value::Bool(true));
                f.insert("snapshot_of".into(), s(vdi));
                f.insert("snapshot_time".into(), now_datetime());
            } else {
                f.insert("is_a_snapshot".into(), Value::Bool(false));
                f.insert("snapshot_of".into(), s(NULL_REF));
            }
            let r = tx.create(Known::VDI.class(), f);
            if op == DiskOp::Snapshot {
                tx.set_member(vdi, "snapshots", &r, true);
            }
            Ok(r)
        })
    }

    /// Removes VDIs made for a copy that failed.
    fn drop_disks(&self, vdis: &[String]) {
        for v in vdis {
            let _ = self.vdi_destroy(v);
        }
    }

    /// `VM.snapshot`/`clone`/`copy`: a new VM record from `vm` with its disks carried over.
    pub(super) fn vm_copy_as(
        &self,
        vm: &str,
        new_name: &str,
        op: DiskOp,
        dest: Option<&str>,
        ignore: &[String],
    ) -> R {
        let _turn = self.queues.enter(vm);
        let (power, vbds) = self.db.read(|v| {
            let vbds: Vec<(String, Record)> = v
                .refs_field(vm, "VBDs")
                .into_iter()
                .filter_map(|b| Some((v.str_field(&b, "VDI"), v.get(&b)?.clone())))
                .collect();
            (v.str_field(vm, "power_state"), vbds)
        });
        if op != DiskOp::Snapshot && power != "Halted" {
            return Err(ApiError::new(
                codes::VM_BAD_POWER_STATE,
                [vm, "halted", power.to_lowercase().as_str()],
            ));
        }
        let mut made = Vec::new();
        let mut disks = Vec::new();
        for (vdi, rec) in &vbds {
            let carried = if vdi.is_empty() || vdi == NULL_REF || ignore.contains(vdi) {
                None
            } else if rec.get("type").and_then(Value::as_str) == Some("CD") {
                Some(vdi.clone())
            } else {
                match self.carry_disk(vdi, op, dest) {
                    Ok(r) => {
                        made.push(r.clone());
                        Some(r)
                    }
                    Err(e) => {
                        self.drop_disks(&made);
                        return Err(e);
                    }
                }
            };
            disks.push((carried, rec));
        }
        let orig = self.db.read(|v| v.get(vm).cloned()).unwrap_or_default();
        let new = match self.vm_create(&Value::Struct(orig.into_iter().collect())) {
            Ok(v) => v.as_str().unwrap_or_default().to_owned(),
            Err(e) => {
                self.drop_disks(&made);
                return Err(e);
            }
        };
        self.db.write(|tx| {
            tx.set(&new, "name_label", s(new_name));
            if op == DiskOp::Snapshot {
                tx.set(&new, "is_a_snapshot", Value::Bool(true));
                tx.set(&new, "snapshot_of", s(vm));
                tx.set(&new, "snapshot_time", now_datetime());
                tx.set_member(vm, "snapshots", &new, true);
            }
            for (vdi, rec) in disks.clone() {
                let mut f = Record::new();
                for k in VBD_FIELDS {
                    if let Some(x) = rec.get(*k) {
                        f.insert((*k).into(), x.clone());
                    }
                }
                f.insert("VM".into(), s(new.clone()));
                match vdi {
                    Some(v) => f.insert("VDI".into(), s(v)),
                    None => f.insert("empty".into(), Value::Bool(true)),
                };
                tx.create(Known::VBD.class(), f);
            }
            for vif in tx.refs_field(vm, "VIFs") {
                let mut f = tx.get(&vif).cloned().unwrap_or_default();
                f.remove("uuid");
                f.insert("VM".into(), s(new.clone()));
                f.insert("currently_attached".into(), Value::Bool(false));
                tx.create(Known::VIF.class(), f);
            }
            Ok(s(new.clone()))
        })
    }

    /// `VM.revert`: the snapshot's VM gets the snapshot's configuration back and fresh
    /// clones of its disks; the VM's current disks are destroyed.
    pub(super) fn vm_revert(&self, snap: &str) -> R {
        let (is_snap, vm) = self.db.read(|v| {
            (
                v.field(snap, "is_a_snapshot") == Some(&Value::Bool(true)),
                v.str_field(snap, "snapshot_of"),
            )
        });
        if !is_snap {
            return Err(ApiError::new(
                codes::OPERATION_NOT_ALLOWED,
                ["VM.revert needs a snapshot"],
            ));
        }
        if self.db.read(|v| v.class_of(&vm)) != Some("VM") {
            return Err(ApiError::new("VM_REVERT_FAILED", [snap, vm.as_str()]));
        }
        let _turn = self.queues.enter(&vm);
        let power = self.db.read(|v| v.str_field(&vm, "power_state"));
        if power != "Halted" {
            return Err(ApiError::new(
                codes::VM_BAD_POWER_STATE,
                [vm.as_str(), "halted", power.to_lowercase().as_str()],
            ));
        }
        // New disks first: a failure leaves the VM as it was.
        let snap_vbds: Vec<(String, Record)> = self.db.read(|v| {
            v.refs_field(snap, "VBDs")
                .into_iter()
                .filter_map(|b| Some((v.str_field(&b, "VDI"), v.get(&b)?.clone())))
                .collect()
        });
        let mut made = Vec::new();
        let mut disks = Vec::new();
        for (vdi, rec) in &snap_vbds {
            let carried = if vdi.is_empty() || vdi == NULL_REF {
                None
            } else if rec.get("type").and_then(Value::as_str) == Some("CD") {
                Some(vdi.clone())
            } else {
                match self.carry_disk(vdi, DiskOp::Clone, None) {
                    Ok(r) => {
                        made.push(r.clone());
                        Some(r)
                    }
                    Err(e) => {
                        self.drop_disks(&made);
                        return Err(ApiError::new("VM_REVERT_FAILED", [snap, &e.to_string()]));
                    }
                }
            };
            disks.push((carried, rec));
        }
        let old: Vec<(String, String)> = self.db.read(|v| {
            v.refs_field(&vm, "VBDs")
                .into_iter()
                .map(|b| {
                    let vdi = v.str_field(&b, "VDI");
                    let cd = v.str_field(&b, "type") == "CD";
                    (b, if cd { String::new() } else { vdi })
                })
                .collect()
        });
        for (vbd, vdi) in &old {
            self.db.write(|tx| {
                tx.destroy(vbd);
                Ok::<_, ApiError>(())
            })?;
            if !vdi.is_empty() && vdi != NULL_REF {
                self.vdi_destroy(vdi)?;
            }
        }
        self.db.write(|tx| {
            for k in REVERT_FIELDS {
                if let Some(x) = tx.field(snap, k).cloned() {
                    tx.set(&vm, k, x);
                }
            }
            for (vdi, rec) in disks.clone() {
                let mut f = Record::new();
                for k in VBD_FIELDS {
                    if let Some(x) = rec.get(*k) {
                        f.insert((*k).into(), x.clone());
                    }
                }
                f.insert("VM".into(), s(vm.clone()));
                match vdi {
                    Some(v) => f.insert("VDI".into(), s(v)),
                    None => f.insert("empty".into(), Value::Bool(true)),
                };
                tx.create(Known::VBD.class(), f);
            }
            Ok(s(""))
        })
    }
}
