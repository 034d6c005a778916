//! `allowed_operations`/`current_operations` of VDIs and SRs as XAPI computes and enforces
//! them (xen-api `ocaml/xapi/xapi_vdi.ml` `check_operation_error` and
//! `update_allowed_operations`, `xapi_sr_operations.ml` `valid_operations`,
//! `message_forwarding.ml` `with_sr_andor_vdi`).
//!
//! A storage call marks its SR and/or VDI with its operation under the caller's task while it
//! runs; an operation that meets `OTHER_OPERATION_IN_PROGRESS` waits for the other one to
//! finish and is checked again (`Helpers.retry_with_global_lock`, `Policy.standard`: up to two
//! hours, woken early when the object changes), as XAPI does.

use std::time::{Duration, Instant};

use super::operations::{current_ops, flag};
use super::*;

/// XAPI's codes (`ocaml/xapi-consts/api_errors.ml`) that its published error table
/// (`datamodel_errors.ml`) lacks.
const VDI_IS_SHARABLE: &str = "VDI_IS_SHARABLE";
const ONLY_REVERT_SNAPSHOT: &str = "ONLY_REVERT_SNAPSHOT";

/// The SM features (`Smint.Feature`) of an SR's type: what our drivers do for `ext`/`file`/
/// `lvm` SRs, and records only (create, delete) for the other types.
fn sm_features(r: &impl Read, sr: &str) -> &'static [&'static str] {
    if crate::storage::has_driver(&r.str_field(sr, "type")) {
        &[
            "VDI_CREATE",
            "VDI_DELETE",
            "VDI_RESIZE",
            "VDI_CLONE",
            "VDI_SNAPSHOT",
        ]
    } else {
        &["VDI_CREATE", "VDI_DELETE"]
    }
}

/// The feature a VDI operation needs (`Xapi_vdi.feature_of_op`).
fn vdi_feature(op: &str) -> Option<&'static str> {
    Some(match op {
        "snapshot" => "VDI_SNAPSHOT",
        "destroy" => "VDI_DELETE",
        "resize" => "VDI_RESIZE",
        "update" => "VDI_UPDATE",
        "resize_online" => "VDI_RESIZE_ONLINE",
        "generate_config" => "VDI_GENERATE_CONFIG",
        "clone" | "revert_to" | "revert_from" => "VDI_CLONE",
        "mirror" => "VDI_MIRROR",
        "enable_cbt" | "disable_cbt" | "data_destroy" | "list_changed_blocks" => "VDI_CONFIG_CBT",
        "set_on_boot" => "VDI_RESET_ON_BOOT",
        _ => return None,
    })
}

/// The feature an SR operation needs (`Xapi_sr_operations.sm_cap_table`).
fn sr_feature(op: &str) -> Option<&'static str> {
    Some(match op {
        "vdi_create" => "VDI_CREATE",
        "vdi_destroy" => "VDI_DELETE",
        "vdi_resize" => "VDI_RESIZE",
        "vdi_introduce" => "VDI_INTRODUCE",
        "vdi_mirror" => "VDI_MIRROR",
        "vdi_enable_cbt" | "vdi_disable_cbt" | "vdi_data_destroy" | "vdi_list_changed_blocks" => {
            "VDI_CONFIG_CBT"
        }
        "vdi_set_on_boot" => "VDI_RESET_ON_BOOT",
        "update" => "SR_UPDATE",
        "vdi_revert" => "VDI_REVERT",
        "vdi_snapshot" => "VDI_SNAPSHOT",
        _ => return None,
    })
}

/// The VDI operations `update_allowed_operations` considers (`Xapi_globs.pre_ely_vdi_operations`
/// without `blocked` and `force_unlock`).
const VDI_LISTED: &[&str] = &[
    "clone",
    "copy",
    "resize",
    "resize_online",
    "snapshot",
    "destroy",
    "forget",
    "update",
    "generate_config",
];

/// The SR operations XAPI lists (`Xapi_sr_operations.all_ops`).
const SR_ALL: &[&str] = &[
    "scan",
    "destroy",
    "forget",
    "plug",
    "unplug",
    "vdi_create",
    "vdi_destroy",
    "vdi_resize",
    "vdi_clone",
    "vdi_snapshot",
    "vdi_mirror",
    "vdi_enable_cbt",
    "vdi_disable_cbt",
    "vdi_data_destroy",
    "vdi_list_changed_blocks",
    "vdi_set_on_boot",
    "vdi_introduce",
    "vdi_revert",
    "update",
    "pbd_create",
    "pbd_destroy",
];

fn busy(class: &str, obj: &str, op: &str, task: &str) -> ApiError {
    ApiError::new(codes::OTHER_OPERATION_IN_PROGRESS, [class, obj, op, task])
}

/// Why `op` cannot run on `vdi` now, as XAPI reports it (`Xapi_vdi.check_operation_error`,
/// without HA, rolling upgrade or clustering, which this host has not).
pub(crate) fn vdi_check(r: &impl Read, vdi: &str, op: &str) -> Option<ApiError> {
    let current = current_ops(r, vdi);
    // 1. Any operation but `copy` is exclusive (a destroy during a mirror excepted).
    let mirroring = op == "destroy" && current.iter().any(|(_, o)| o == "mirror");
    if let Some((t, o)) = current.iter().find(|(_, o)| o != "copy") {
        if !mirroring {
            return Some(busy("VDI", vdi, o, t));
        }
    }
    let sr = r.str_field(vdi, "SR");
    if op == "resize" {
        let plugged = r
            .refs_field(&sr, "PBDs")
            .iter()
            .any(|p| flag(r, p, "currently_attached"));
        if !plugged {
            return Some(ApiError::new("SR_HAS_NO_PBDS", [sr.as_str()]));
        }
    }
    // 2. Only a live operation may run while a VBD is attached (copy: read-only VBDs).
    let vbds = r.refs_field(vdi, "VBDs");
    let active: Vec<&String> = vbds
        .iter()
        .filter(|v| flag(r, v, "currently_attached") || flag(r, v, "reserved"))
        .collect();
    let live = [
        "snapshot",
        "resize_online",
        "blocked",
        "clone",
        "revert_to",
        "mirror",
        "enable_cbt",
        "disable_cbt",
        "data_destroy",
    ]
    .contains(&op);
    let blocked = if live {
        false
    } else if op == "copy" {
        active.iter().any(|v| r.str_field(v, "mode") == "RW")
    } else {
        !active.is_empty()
    };
    // list_changed_blocks is allowed on disks attached to VM snapshots only.
    let snapshots_only = op == "list_changed_blocks"
        && active
            .iter()
            .all(|v| flag(r, &r.str_field(v, "VM"), "is_a_snapshot"));
    if blocked && !snapshots_only {
        return Some(ApiError::new(codes::VDI_IN_USE, [vdi, op]));
    }
    // 3. A VBD operation (plug, unplug) in progress serialises.
    if op != "data_destroy" {
        let vbd_op = vbds
            .iter()
            .find_map(|v| current_ops(r, v).into_iter().next());
        if let Some((t, o)) = vbd_op {
            return Some(busy("VDI", vdi, &o, &t));
        }
    }
    // 4. The SR's backend must have the feature.
    if let Some(f) = vdi_feature(op) {
        if !sm_features(r, &sr).contains(&f) {
            return Some(ApiError::new("SR_OPERATION_NOT_SUPPORTED", [sr.as_str()]));
        }
    }
    let ty = r.str_field(vdi, "type");
    let for_cbt_metadata = [
        "blocked",
        "data_destroy",
        "destroy",
        "list_changed_blocks",
        "force_unlock",
        "forget",
        "generate_config",
        "update",
    ]
    .contains(&op);
    if ty == "cbt_metadata" && !for_cbt_metadata {
        return Some(ApiError::new(
            "VDI_INCOMPATIBLE_TYPE",
            [vdi, "cbt_metadata"],
        ));
    }
    let cbt = flag(r, vdi, "cbt_enabled");
    if cbt && (op == "mirror" || op == "set_on_boot") {
        return Some(ApiError::new("VDI_CBT_ENABLED", [vdi]));
    }
    let snapshot = flag(r, vdi, "is_a_snapshot");
    let reset = r.str_field(vdi, "on_boot") == "reset";
    let on_boot = || {
        ApiError::new(
            "VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION",
            Vec::<String>::new(),
        )
    };
    let not_allowed = |m: String| ApiError::new(codes::OPERATION_NOT_ALLOWED, [m]);
    let check_destroy = || {
        if r.str_field(&sr, "type") == "udev" {
            Some(ApiError::new("VDI_IS_A_PHYSICAL_DEVICE", [vdi]))
        } else if flag(r, &sr, "is_tools_sr") {
            Some(ApiError::new("SR_OPERATION_NOT_SUPPORTED", [sr.as_str()]))
        } else if ty == "rrd" {
            Some(ApiError::new("VDI_HAS_RRDS", [vdi]))
        } else {
            None
        }
    };
    match op {
        "forget" if ty == "rrd" => Some(ApiError::new("VDI_HAS_RRDS", [vdi])),
        "destroy" | "revert_from" => check_destroy(),
        "data_destroy" if !snapshot => Some(not_allowed(format!("VDI is not a snapshot: {vdi}"))),
        "data_destroy" if !cbt => Some(ApiError::new("VDI_NO_CBT_METADATA", [vdi])),
        "data_destroy" => check_destroy(),
        "snapshot" if flag(r, vdi, "sharable") => Some(ApiError::new(VDI_IS_SHARABLE, [vdi])),
        "snapshot" | "copy" if reset => Some(on_boot()),
        "snapshot" if current.iter().any(|(_, o)| o == "copy") => Some(not_allowed(
            "Snapshot operation not allowed during copy.".into(),
        )),
        "copy" if ty == "ha_statefile" || ty == "redo_log" => Some(not_allowed(
            "VDI containing HA statefile or redo log cannot be copied (check the VDI's \
             allowed operations)."
                .into(),
        )),
        "enable_cbt" | "disable_cbt" if snapshot => {
            Some(not_allowed(format!("VDI is a snapshot: {vdi}")))
        }
        "enable_cbt" | "disable_cbt" if ty != "user" && ty != "system" => {
            Some(ApiError::new("VDI_INCOMPATIBLE_TYPE", [vdi, ty.as_str()]))
        }
        "enable_cbt" | "disable_cbt" if reset => Some(on_boot()),
        "revert_to" if !snapshot => Some(ApiError::new(ONLY_REVERT_SNAPSHOT, Vec::<String>::new())),
        _ => None,
    }
}

/// Why `op` cannot run on `sr` now (`Xapi_sr_operations.valid_operations`: the first error
/// set for an operation wins, in XAPI's order of checks).
pub(crate) fn sr_check(r: &impl Read, sr: &str, op: &str) -> Option<ApiError> {
    if !SR_ALL.contains(&op) {
        return None;
    }
    // Backend features (the tools SR never creates or deletes VDIs).
    if let Some(f) = sr_feature(op) {
        let tools = flag(r, sr, "is_tools_sr") && (f == "VDI_CREATE" || f == "VDI_DELETE");
        if tools || !sm_features(r, sr).contains(&f) {
            return Some(ApiError::new("SR_OPERATION_NOT_SUPPORTED", [sr]));
        }
    }
    let pbds = r.refs_field(sr, "PBDs");
    // CA-70294: destroy and forget need every PBD unplugged.
    if (op == "destroy" || op == "forget") && pbds.iter().any(|p| flag(r, p, "currently_attached"))
    {
        return Some(ApiError::new(codes::SR_HAS_PBD, [sr]));
    }
    if op == "destroy" && pbds.is_empty() {
        return Some(ApiError::new("SR_HAS_NO_PBDS", [sr]));
    }
    if op == "destroy"
        && r.refs_field(sr, "VDIs")
            .iter()
            .any(|v| flag(r, v, "managed") && r.str_field(v, "type") != "rrd")
    {
        return Some(ApiError::new(codes::SR_NOT_EMPTY, Vec::<String>::new()));
    }
    // Only PBD plugs run in parallel; anything else in progress blocks everything.
    let mut current = current_ops(r, sr);
    current.sort_by(|a, b| a.1.cmp(&b.1));
    current.dedup_by(|a, b| a.1 == b.1);
    if let Some((t, o)) = current.first() {
        if op != "plug" {
            return Some(busy("SR", sr, o, t));
        }
        if let Some((t, o)) = current.iter().find(|(_, o)| o != "plug") {
            return Some(busy("SR", sr, o, t));
        }
    }
    None
}

/// Recomputes a VDI's `allowed_operations` (`Xapi_vdi.update_allowed_operations`).
pub(crate) fn refresh_vdi(tx: &mut Tx<'_>, vdi: &str) {
    if tx.class_of(vdi) != Some("VDI") {
        return;
    }
    let ops: Vec<Value> = VDI_LISTED
        .iter()
        .filter(|op| vdi_check(tx, vdi, op).is_none())
        .map(|op| s(*op))
        .collect();
    if tx.field(vdi, "allowed_operations") != Some(&Value::Array(ops.clone())) {
        tx.set(vdi, "allowed_operations", Value::Array(ops));
    }
}

/// Recomputes an SR's `allowed_operations` and its VDIs'
/// (`Xapi_sr_operations.update_allowed_operations`).
pub(crate) fn refresh_storage(tx: &mut Tx<'_>, sr: &str) {
    if tx.class_of(sr) != Some("SR") {
        return;
    }
    let ops: Vec<Value> = SR_ALL
        .iter()
        .filter(|op| sr_check(tx, sr, op).is_none())
        .map(|op| s(*op))
        .collect();
    if tx.field(sr, "allowed_operations") != Some(&Value::Array(ops.clone())) {
        tx.set(sr, "allowed_operations", Value::Array(ops));
    }
    for vdi in tx.refs_field(sr, "VDIs") {
        refresh_vdi(tx, &vdi);
    }
}

/// Most time an operation waits for another on the same SR or VDI (`Policy.standard`).
const MAX_WAIT: Duration = Duration::from_secs(2 * 3600);

impl Xapi {
    /// Runs `f` with `sr` and/or `vdi` marked with their operations
    /// (`Message_forwarding.VDI.with_sr_andor_vdi`, `SR.with_sr_marked`): checked as XAPI
    /// checks, waiting while another operation holds them, recorded in `current_operations`
    /// under the caller's task while it runs.
    pub(super) fn with_storage_operation<T>(
        &self,
        sr: Option<(&str, &str)>,
        vdi: Option<(&str, &str)>,
        f: impl FnOnce() -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let key = crate::tasks::current().map_or_else(crate::db::new_ref, |c| c.task);
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            let gen = self.db.generation();
            let marked = self.db.write(|tx| {
                if let Some((sr, op)) = sr {
                    if let Some(e) = sr_check(tx, sr, op) {
                        return Err(e);
                    }
                    tx.map_set(sr, "current_operations", &key, Some(s(op)));
                }
                if let Some((vdi, op)) = vdi {
                    if let Some(e) = vdi_check(tx, vdi, op) {
                        return Err(e);
                    }
                    tx.map_set(vdi, "current_operations", &key, Some(s(op)));
                }
                Self::refresh_marked(tx, sr, vdi);
                Ok(())
            });
            match marked {
                Ok(()) => break,
                Err(e)
                    if e.code == codes::OTHER_OPERATION_IN_PROGRESS
                        && Instant::now() < deadline =>
                {
                    self.check_cancelled()?;
                    self.db.wait_past(gen, Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
        let out = f();
        let _ = self.db.write(|tx| {
            for (obj, _) in sr.iter().chain(vdi.iter()) {
                if tx.class_of(obj).is_some() {
                    tx.map_set(obj, "current_operations", &key, None);
                }
            }
            Self::refresh_marked(tx, sr, vdi);
            Ok::<_, ApiError>(())
        });
        out
    }

    /// Runs `f` as VDI operation `op`, marking the VDI's SR with `vdi_<op>` for the
    /// operations XAPI marks it for (`Message_forwarding.VDI.destroy`, `resize`, `snapshot`,
    /// `clone`).
    pub(super) fn with_vdi_operation<T>(
        &self,
        vdi: &str,
        op: &str,
        f: impl FnOnce() -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let sr = self.db.read(|v| v.str_field(vdi, "SR"));
        let valid = self.db.read(|v| v.class_of(&sr)) == Some("SR");
        let sr_op = match op {
            "destroy" | "resize" | "snapshot" | "clone" => format!("vdi_{op}"),
            _ => String::new(),
        };
        let sr = (valid && !sr_op.is_empty()).then_some((sr.as_str(), sr_op.as_str()));
        self.with_storage_operation(sr, Some((vdi, op)), f)
    }

    fn refresh_marked(tx: &mut Tx<'_>, sr: Option<(&str, &str)>, vdi: Option<(&str, &str)>) {
        if let Some((sr, _)) = sr {
            refresh_storage(tx, sr);
        }
        if let Some((vdi, _)) = vdi {
            let sr = tx.str_field(vdi, "SR");
            refresh_storage(tx, &sr);
            refresh_vdi(tx, vdi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    fn rec(pairs: &[(&str, Value)]) -> Record {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    /// An `ext` SR with a plugged PBD and one managed user VDI; a VM in `power` with a VBD
    /// on the VDI, attached or not.
    fn setup(power: &str, attached: bool, mode: &str) -> (Db, String, String, String) {
        let db = Db::in_memory();
        let refs = db
            .write(|tx| {
                let sr = tx.create(Known::SR.class(), rec(&[("type", s("ext"))]));
                tx.create(
                    Known::PBD.class(),
                    rec(&[
                        ("SR", s(sr.clone())),
                        ("currently_attached", Value::Bool(true)),
                    ]),
                );
                let vdi = tx.create(
                    Known::VDI.class(),
                    rec(&[
                        ("SR", s(sr.clone())),
                        ("type", s("user")),
                        ("managed", Value::Bool(true)),
                    ]),
                );
                let vm = tx.create(Known::VM.class(), rec(&[("power_state", s(power))]));
                let vbd = tx.create(
                    Known::VBD.class(),
                    rec(&[
                        ("VM", s(vm)),
                        ("VDI", s(vdi.clone())),
                        ("mode", s(mode)),
                        ("currently_attached", Value::Bool(attached)),
                    ]),
                );
                Ok::<_, ApiError>((sr, vdi, vbd))
            })
            .unwrap();
        (db, refs.0, refs.1, refs.2)
    }

    fn code(e: Option<ApiError>) -> Option<(String, Vec<String>)> {
        e.map(|e| (e.code.to_string(), e.params.clone()))
    }

    fn allowed(db: &Db, obj: &str) -> Vec<String> {
        db.write(|tx| {
            refresh_storage(tx, &tx.str_field(obj, "SR"));
            refresh_storage(tx, obj);
            Ok::<_, ApiError>(())
        })
        .unwrap();
        db.read(|v| {
            v.refs_field(obj, "allowed_operations")
                .into_iter()
                .collect()
        })
    }

    /// xapi_vdi.ml `update_allowed_operations`: the pre-Ely operations but `blocked` and
    /// `force_unlock`, less those the SR's backend lacks (no update, resize_online or
    /// generate_config here).
    #[test]
    fn an_idle_vdi_allows_what_its_backend_does() {
        let (db, _, vdi, _) = setup("Halted", false, "RW");
        assert_eq!(
            allowed(&db, &vdi),
            ["clone", "copy", "resize", "snapshot", "destroy", "forget"]
        );
        let e = db.read(|v| code(vdi_check(v, &vdi, "update")));
        assert_eq!(e.unwrap().0, "SR_OPERATION_NOT_SUPPORTED");
    }

    /// xapi_vdi.ml `check_operation_error`: with an attached (or reserved) VBD only the live
    /// operations run (`VDI_IN_USE [vdi, op]`); copy is refused by a RW attach only.
    #[test]
    fn an_attached_vdi_allows_live_operations_only() {
        let (db, _, vdi, _) = setup("Running", true, "RW");
        assert_eq!(allowed(&db, &vdi), ["clone", "snapshot"]);
        let e = db.read(|v| code(vdi_check(v, &vdi, "destroy")));
        assert_eq!(
            e,
            Some(("VDI_IN_USE".into(), vec![vdi.clone(), "destroy".into()]))
        );
        let (db, _, vdi, _) = setup("Running", true, "RO");
        assert_eq!(allowed(&db, &vdi), ["clone", "copy", "snapshot"]);
    }

    /// xapi_vdi.ml: any current operation but `copy` is exclusive
    /// (`OTHER_OPERATION_IN_PROGRESS [VDI, ref, op, task]`); a copy lets a destroy through to
    /// the attach check but refuses a snapshot; a VBD operation serialises too.
    #[test]
    fn current_operations_exclude_others_as_xapi() {
        let (db, _, vdi, vbd) = setup("Halted", false, "RW");
        let mark = |obj: &str, op: Option<&str>| {
            db.write(|tx| {
                tx.map_set(obj, "current_operations", "OpaqueRef:t", op.map(s));
                Ok::<_, ApiError>(())
            })
            .unwrap()
        };
        mark(&vdi, Some("resize"));
        let e = db.read(|v| code(vdi_check(v, &vdi, "clone")));
        assert_eq!(
            e,
            Some((
                "OTHER_OPERATION_IN_PROGRESS".into(),
                ["VDI", &vdi, "resize", "OpaqueRef:t"]
                    .map(String::from)
                    .to_vec()
            ))
        );
        assert!(allowed(&db, &vdi).is_empty());
        mark(&vdi, Some("copy"));
        assert_eq!(
            db.read(|v| code(vdi_check(v, &vdi, "snapshot"))),
            Some((
                "OPERATION_NOT_ALLOWED".into(),
                vec!["Snapshot operation not allowed during copy.".into()]
            ))
        );
        assert!(db.read(|v| vdi_check(v, &vdi, "clone")).is_none());
        mark(&vdi, None);
        mark(&vbd, Some("plug"));
        let e = db.read(|v| code(vdi_check(v, &vdi, "destroy"))).unwrap();
        assert_eq!(e.0, "OTHER_OPERATION_IN_PROGRESS");
        assert_eq!(e.1[2], "plug");
    }

    /// xapi_vdi.ml: a sharable VDI is not snapshotted, an on-boot=reset one neither
    /// snapshotted nor copied, a udev VDI is a physical device, revert_to needs a snapshot.
    #[test]
    fn per_operation_refusals_are_xapis() {
        let (db, sr, vdi, _) = setup("Halted", false, "RW");
        let set = |obj: &str, f: &str, v: Value| {
            db.write(|tx| {
                tx.set(obj, f, v.clone());
                Ok::<_, ApiError>(())
            })
            .unwrap()
        };
        let check = |op: &str| db.read(|v| code(vdi_check(v, &vdi, op))).map(|e| e.0);
        set(&vdi, "sharable", Value::Bool(true));
        assert_eq!(check("snapshot").as_deref(), Some("VDI_IS_SHARABLE"));
        set(&vdi, "sharable", Value::Bool(false));
        set(&vdi, "on_boot", s("reset"));
        let reset = Some("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION");
        assert_eq!(check("snapshot").as_deref(), reset);
        assert_eq!(check("copy").as_deref(), reset);
        assert_eq!(check("revert_to").as_deref(), Some("ONLY_REVERT_SNAPSHOT"));
        set(&sr, "type", s("udev"));
        assert_eq!(
            check("destroy").as_deref(),
            Some("VDI_IS_A_PHYSICAL_DEVICE")
        );
        set(&vdi, "type", s("cbt_metadata"));
        assert_eq!(check("copy").as_deref(), Some("VDI_INCOMPATIBLE_TYPE"));
    }

    /// xapi_sr_operations.ml `valid_operations`: a plugged SR is not destroyed or forgotten
    /// (SR_HAS_PBD), an unplugged one with VDIs not destroyed (SR_NOT_EMPTY); the backend's
    /// features limit the VDI operations; only PBD plugs run in parallel.
    #[test]
    fn sr_operations_are_xapis() {
        let (db, sr, _, _) = setup("Halted", false, "RW");
        let ops = allowed(&db, &sr);
        for op in [
            "scan",
            "plug",
            "unplug",
            "vdi_create",
            "vdi_destroy",
            "vdi_snapshot",
        ] {
            assert!(ops.iter().any(|o| o == op), "{op} in {ops:?}");
        }
        for op in ["destroy", "forget", "vdi_introduce", "vdi_mirror", "update"] {
            assert!(!ops.iter().any(|o| o == op), "{op} in {ops:?}");
        }
        let check = |op: &str| db.read(|v| code(sr_check(v, &sr, op)));
        assert_eq!(
            check("destroy"),
            Some(("SR_HAS_PBD".into(), vec![sr.clone()]))
        );
        let pbd = db.read(|v| v.refs_field(&sr, "PBDs")[0].clone());
        db.write(|tx| {
            tx.set(&pbd, "currently_attached", Value::Bool(false));
            tx.map_set(&sr, "current_operations", "OpaqueRef:p", Some(s("plug")));
            Ok::<_, ApiError>(())
        })
        .unwrap();
        assert_eq!(check("destroy").unwrap().0, "SR_NOT_EMPTY");
        assert!(check("plug").is_none());
        assert_eq!(
            check("scan"),
            Some((
                "OTHER_OPERATION_IN_PROGRESS".into(),
                ["SR", &sr, "plug", "OpaqueRef:p"]
                    .map(String::from)
                    .to_vec()
            ))
        );
        db.write(|tx| {
            tx.map_set(&sr, "current_operations", "OpaqueRef:s", Some(s("scan")));
            Ok::<_, ApiError>(())
        })
        .unwrap();
        assert_eq!(check("plug").unwrap().1[2], "scan");
    }
}
