//! `allowed_operations`, `current_operations` and `blocked_operations` as XAPI computes and
//! enforces them (xen-api `ocaml/xapi/xapi_vm_lifecycle.ml`, `xapi_vif_helpers.ml`,
//! `xapi_vbd_helpers.ml`, `xapi_vm_helpers.ml`).
//!
//! An operation on a VM first passes XAPI's checks (blocked, power state, other operations
//! in progress, template, snapshot, control domain); while it runs its task is in the VM's
//! `current_operations`. XAPI retries an operation that meets `OTHER_OPERATION_IN_PROGRESS`
//! (`Helpers.retry_with_global_lock`, `Policy.standard`: up to two hours, woken early when
//! the other finishes); here that wait is the VM's queue turn, after which the checks run
//! again, so a client sees what XAPI shows.

use super::*;
use crate::xenops::PowerState;

use PowerState::{Halted, Paused, Running, Suspended};

/// XAPI's codes (`ocaml/xapi-consts/api_errors.ml`) that its published error table
/// (`datamodel_errors.ml`) lacks; reached only by snapshots and `revert`.
const VM_IS_SNAPSHOT: &str = "VM_IS_SNAPSHOT";
const REVERT_ONLY_ALLOWED_ON_SNAPSHOT: &str = "REVERT_ONLY_ALLOWED_ON_SNAPSHOT";

/// Power states in which a VM operation may run (`allowed_power_states`).
fn vm_power_states(op: &str, control_domain: bool, snapshot: bool) -> &'static [PowerState] {
    match op {
        "import" => &[],
        "changing_VCPUs" | "changing_static_range" | "changing_memory_limits" => {
            if control_domain {
                &[Halted, Running]
            } else {
                &[Halted]
            }
        }
        "changing_shadow_memory"
        | "changing_NVRAM"
        | "make_into_template"
        | "provision"
        | "start"
        | "start_on"
        | "create_vtpm" => &[Halted],
        "unpause" => &[Paused],
        "csvm" | "resume" | "resume_on" => &[Suspended],
        "awaiting_memory_live"
        | "call_plugin"
        | "clean_reboot"
        | "clean_shutdown"
        | "changing_memory_live"
        | "changing_shadow_memory_live"
        | "changing_VCPUs_live"
        | "data_source_op"
        | "pause"
        | "pool_migrate"
        | "send_sysrq"
        | "send_trigger"
        | "snapshot_with_quiesce"
        | "sysprep"
        | "suspend" => &[Running],
        "changing_dynamic_range" => &[Halted, Running],
        // Suspended too for snapshots (or when the pool allows cloning suspended VMs,
        // which is off by default).
        "clone" | "copy" => {
            if snapshot {
                &[Halted, Suspended]
            } else {
                &[Halted]
            }
        }
        "create_template" | "destroy" | "export" => &[Halted, Suspended],
        "hard_reboot" => &[Paused, Running],
        "checkpoint" | "get_boot_record" | "shutdown" | "hard_shutdown" => {
            &[Paused, Suspended, Running]
        }
        "migrate_send" => &[Halted, Suspended, Running],
        _ => &[Halted, Paused, Suspended, Running],
    }
}

/// Whether `op` may run while `current` run (`is_allowed_concurrently`).
fn vm_concurrent(op: &str, current: &[(String, String)]) -> bool {
    let group =
        |ops: &[&str]| ops.contains(&op) && current.iter().all(|(_, o)| ops.contains(&o.as_str()));
    let states: Vec<&str> = current.iter().map(|(_, o)| o.as_str()).collect();
    let machine = match op {
        "hard_shutdown" => !states.contains(&op),
        "hard_reboot" => !states
            .iter()
            .any(|o| *o == "hard_shutdown" || *o == "hard_reboot"),
        _ => [
            ("snapshot_with_quiesce", "snapshot"),
            ("migrate_send", "metadata_export"),
            ("migrate_send", "clean_shutdown"),
            ("migrate_send", "clean_reboot"),
        ]
        .iter()
        .any(|(state, then)| states == [*state] && *then == op),
    };
    group(&["clone", "copy", "export"])
        || group(&["snapshot", "checkpoint"])
        || group(&["get_boot_record"])
        || machine
}

/// A `(task, op)` map field as pairs, in the map's order.
pub(super) fn current_ops(r: &impl Read, obj: &str) -> Vec<(String, String)> {
    match r.field(obj, "current_operations") {
        Some(Value::Struct(m)) => m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect(),
        _ => Vec::new(),
    }
}

/// `OTHER_OPERATION_IN_PROGRESS [class, ref, op, task]`, several as `{a,b}`
/// (`report_concurrent_operations_error`).
fn in_progress(class: &str, obj: &str, current: &[(String, String)], sep: &str) -> ApiError {
    let (ops, tasks) = match current {
        [(t, o)] => (o.clone(), t.clone()),
        l => (
            format!(
                "{{{}}}",
                l.iter()
                    .map(|(_, o)| o.as_str())
                    .collect::<Vec<_>>()
                    .join(sep)
            ),
            format!(
                "{{{}}}",
                l.iter()
                    .map(|(t, _)| t.as_str())
                    .collect::<Vec<_>>()
                    .join(sep)
            ),
        ),
    };
    ApiError::new(
        codes::OTHER_OPERATION_IN_PROGRESS,
        [class, obj, &ops, &tasks],
    )
}

pub(super) fn flag(r: &impl Read, obj: &str, field: &str) -> bool {
    r.field(obj, field) == Some(&Value::Bool(true))
}

/// Why `op` cannot run on `vm` now, as XAPI reports it (`check_operation_error`).
pub(crate) fn vm_check(r: &impl Read, vm: &str, op: &str) -> Option<ApiError> {
    // Blocked by a user: OPERATION_BLOCKED [ref, reason].
    if let Some(Value::Struct(b)) = r.field(vm, "blocked_operations") {
        if let Some(reason) = b.get(op) {
            return Some(ApiError::new(
                codes::OPERATION_BLOCKED,
                [vm, reason.as_str().unwrap_or_default()],
            ));
        }
    }
    let ctrl = flag(r, vm, "is_control_domain");
    let snapshot = flag(r, vm, "is_a_snapshot");
    let template = flag(r, vm, "is_a_template");
    let power = PowerState::parse(&r.str_field(vm, "power_state"));
    let expected = vm_power_states(op, ctrl, snapshot);
    if !expected.contains(&power) {
        let list: Vec<String> = expected.iter().map(|p| p.lower()).collect();
        return Some(ApiError::new(
            codes::VM_BAD_POWER_STATE,
            [vm.to_owned(), list.join(", "), power.lower()],
        ));
    }
    let current = current_ops(r, vm);
    if !current.is_empty() && !vm_concurrent(op, &current) {
        return Some(in_progress("VM", vm, &current, ","));
    }
    if template && !snapshot {
        let default_template = flag(r, vm, "is_default_template")
            || matches!(r.field(vm, "other_config"), Some(Value::Struct(m))
                if m.get("default_template").and_then(Value::as_str)
                    .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")));
        let ok = [
            "changing_dynamic_range",
            "changing_static_range",
            "changing_memory_limits",
            "changing_shadow_memory",
            "changing_VCPUs",
            "changing_NVRAM",
            "clone",
            "copy",
            "export",
            "metadata_export",
            "provision",
        ]
        .contains(&op)
            || ((op == "destroy" || op == "migrate_send") && !default_template);
        if !ok {
            return Some(ApiError::new(codes::VM_IS_TEMPLATE, [vm, op]));
        }
    }
    if snapshot
        && ![
            "revert",
            "clone",
            "copy",
            "export",
            "destroy",
            "hard_shutdown",
            "metadata_export",
        ]
        .contains(&op)
    {
        return Some(ApiError::new(VM_IS_SNAPSHOT, [vm, op]));
    }
    if op == "provision" && !template {
        return Some(ApiError::new(
            codes::PROVISION_ONLY_ALLOWED_ON_TEMPLATE,
            Vec::<String>::new(),
        ));
    }
    if op == "revert" && !snapshot {
        return Some(ApiError::new(
            REVERT_ONLY_ALLOWED_ON_SNAPSHOT,
            Vec::<String>::new(),
        ));
    }
    if ctrl
        && ![
            "data_source_op",
            "changing_memory_live",
            "awaiting_memory_live",
            "metadata_export",
            "changing_dynamic_range",
            "changing_memory_limits",
            "changing_static_range",
            "start",
            "start_on",
            "changing_VCPUs",
            "destroy",
        ]
        .contains(&op)
    {
        return Some(ApiError::new(
            codes::OPERATION_NOT_ALLOWED,
            ["This operation is not allowed on a control domain"],
        ));
    }
    if ctrl && (op == "changing_VCPUs" || op == "destroy") {
        return Some(ApiError::new(
            codes::OPERATION_NOT_ALLOWED,
            ["This operation is not allowed on dom0"],
        ));
    }
    if op == "snapshot_with_quiesce" {
        return Some(ApiError::new(
            "VM_SNAPSHOT_WITH_QUIESCE_NOT_SUPPORTED",
            [vm],
        ));
    }
    if op == "query_services" {
        return Some(ApiError::new("NOT_SYSTEM_DOMAIN", [vm]));
    }
    None
}

/// Operations `update_allowed_operations` leaves out of `allowed_operations` (`ignored_ops`).
const VM_IGNORED: &[&str] = &[
    "create_template",
    "power_state_reset",
    "csvm",
    "get_boot_record",
    "send_sysrq",
    "send_trigger",
    "query_services",
    "shutdown",
    "call_plugin",
    "changing_memory_live",
    "awaiting_memory_live",
    "changing_memory_limits",
    "changing_shadow_memory_live",
    "changing_VCPUs",
    "assert_operation_valid",
    "data_source_op",
    "update_allowed_operations",
    "import",
    "reverting",
];

fn enum_values(name: &str) -> &'static [&'static str] {
    datamodel::xenapi::enum_def(name).map_or(&[], |e| e.values)
}

/// Operations of this VM that no check refuses (`update_allowed_operations`).
pub(crate) fn vm_allowed(r: &impl Read, vm: &str) -> Vec<&'static str> {
    enum_values("vm_operations")
        .iter()
        .copied()
        .filter(|op| !VM_IGNORED.contains(op))
        .filter(|op| vm_check(r, vm, op).is_none())
        .collect()
}

/// Why `op` cannot run on `vif` now (`xapi_vif_helpers.ml` `valid_operations`; the first
/// error found in XAPI's order wins).
pub(crate) fn vif_check(r: &impl Read, vif: &str, op: &str) -> Option<ApiError> {
    let current = current_ops(r, vif);
    if !current.is_empty() {
        return Some(in_progress("VIF", vif, &current, "; "));
    }
    let vm = r.str_field(vif, "VM");
    if op == "plug" && flag(r, &vm, "is_control_domain") {
        return Some(ApiError::new(
            codes::OPERATION_NOT_ALLOWED,
            ["Control domain does not support hotplug"],
        ));
    }
    let plugged = flag(r, vif, "currently_attached") || flag(r, vif, "reserved");
    let power = PowerState::parse(&r.str_field(&vm, "power_state"));
    match (power, plugged, op) {
        (Running, true, "plug") => {
            return Some(ApiError::new(codes::DEVICE_ALREADY_ATTACHED, [vif]))
        }
        (Running, false, "unplug") => {
            return Some(ApiError::new(codes::DEVICE_ALREADY_DETACHED, [vif]))
        }
        (Running, _, _) | (_, _, "attach") => {}
        (p, _, _) => return Some(bad_power(&vm, p)),
    }
    vm_busy(r, &vm, op)
}

/// `VM_BAD_POWER_STATE [vm, "running", actual]` of a device operation.
fn bad_power(vm: &str, actual: PowerState) -> ApiError {
    ApiError::new(
        codes::VM_BAD_POWER_STATE,
        [vm.to_owned(), "running".into(), actual.lower()],
    )
}

/// Plug and unplug wait for no VM shutdown, suspend or pause in progress.
fn vm_busy(r: &impl Read, vm: &str, op: &str) -> Option<ApiError> {
    if op != "plug" && op != "unplug" {
        return None;
    }
    current_ops(r, vm)
        .into_iter()
        .find(|(_, o)| {
            ["clean_shutdown", "hard_shutdown", "suspend", "pause"].contains(&o.as_str())
        })
        .map(|(_, o)| {
            ApiError::new(
                codes::OPERATION_NOT_ALLOWED,
                [format!("Current operation on VM:{vm} is {o}")],
            )
        })
}

/// Why `op` cannot run on `vbd` now (`xapi_vbd_helpers.ml` `valid_operations`, for what
/// this toolstack has: no HVM hotplug rules, no VDI operations; the first error found in
/// XAPI's order wins).
pub(crate) fn vbd_check(r: &impl Read, vbd: &str, op: &str) -> Option<ApiError> {
    let current = current_ops(r, vbd);
    let parallel = |o: &str| o == "pause" || o == "unpause";
    let busy = |ops: &mut dyn Iterator<Item = &(String, String)>| {
        ops.next().map(|(t, o)| {
            ApiError::new(
                codes::OTHER_OPERATION_IN_PROGRESS,
                ["VBD", vbd, o.as_str(), t.as_str()],
            )
        })
    };
    if !parallel(op) {
        if let Some(e) = busy(&mut current.iter()) {
            return Some(e);
        }
    }
    if op == "pause" {
        if let Some(e) = busy(&mut current.iter().filter(|(_, o)| !parallel(o))) {
            return Some(e);
        }
    }
    if op == "unpause" {
        let mut other = current
            .iter()
            .filter(|(_, o)| !parallel(o) && o != "attach");
        if let Some(e) = busy(&mut other) {
            return Some(e);
        }
    }
    let unplug = op == "unplug" || op == "unplug_force";
    if unplug && r.field(vbd, "unpluggable") == Some(&Value::Bool(false)) {
        return Some(ApiError::new("VBD_NOT_UNPLUGGABLE", [vbd]));
    }
    let cd = r.str_field(vbd, "type") == "CD";
    if !cd && (op == "insert" || op == "eject") {
        return Some(ApiError::new("VBD_NOT_REMOVABLE_MEDIA", [vbd]));
    }
    let empty = flag(r, vbd, "empty");
    if empty && op == "eject" {
        return Some(ApiError::new("VBD_IS_EMPTY", [vbd]));
    }
    if !empty && op == "insert" {
        return Some(ApiError::new("VBD_NOT_EMPTY", [vbd]));
    }
    let vm = r.str_field(vbd, "VM");
    let plugged = flag(r, vbd, "currently_attached") || flag(r, vbd, "reserved");
    let power = PowerState::parse(&r.str_field(&vm, "power_state"));
    match (power, plugged) {
        (Running, true) if op == "plug" => {
            return Some(ApiError::new(codes::DEVICE_ALREADY_ATTACHED, [vbd]))
        }
        (Running, false) if unplug => {
            return Some(ApiError::new(codes::DEVICE_ALREADY_DETACHED, [vbd]))
        }
        (Running, _) => {}
        (p, _) if op == "plug" || unplug || (p != Paused && parallel(op)) => {
            return Some(bad_power(&vm, p))
        }
        _ => {}
    }
    if let Some(e) = vm_busy(r, &vm, op) {
        return Some(e);
    }
    if cd && power == Suspended && (op == "insert" || op == "eject") {
        return Some(ApiError::new(
            codes::VM_BAD_POWER_STATE,
            [vm, "halted, running".into(), "suspended".into()],
        ));
    }
    None
}

/// Why `op` cannot run on `host` now (`xapi_host_helpers.ml` `valid_operations`, for one
/// host without clustered SRs; the first error found in XAPI's order wins).
pub(crate) fn host_check(r: &impl Read, host: &str, op: &str) -> Option<ApiError> {
    let current = current_ops(r, host);
    let creating = |o: &str| ["provision", "vm_resume", "vm_migrate"].contains(&o);
    let removing = |o: &str| ["evacuate", "reboot", "shutdown"].contains(&o);
    let busy = |(t, o): &(String, String)| {
        ApiError::new(
            codes::OTHER_OPERATION_IN_PROGRESS,
            ["host", host, o.as_str(), t.as_str()],
        )
    };
    if op != "power_on" {
        let against = current
            .iter()
            .find(|(_, o)| (creating(op) && removing(o)) || (removing(op) && creating(o)));
        if let Some(c) = against {
            return Some(busy(c));
        }
    }
    let exclusive: [(&str, &[&str]); 4] = [
        ("reboot", &["shutdown", "apply_updates"]),
        ("shutdown", &["reboot", "apply_updates"]),
        ("apply_updates", &["reboot", "shutdown", "enable"]),
        ("provision", &["provision"]),
    ];
    for (running, blocks) in exclusive {
        if let Some((t, _)) = current.iter().find(|(_, o)| o == running) {
            if blocks.contains(&op) {
                return Some(busy(&(t.clone(), running.to_owned())));
            }
        }
    }
    if flag(r, host, "enabled") && ["reboot", "shutdown", "apply_updates"].contains(&op) {
        return Some(ApiError::new("HOST_NOT_DISABLED", Vec::<String>::new()));
    }
    if op == "power_on" {
        let metrics = r.str_field(host, "metrics");
        if flag(r, &metrics, "live") {
            return Some(ApiError::new("HOST_IS_LIVE", [host]));
        }
        if r.str_field(host, "power_on_mode").is_empty() {
            return Some(ApiError::new(
                "HOST_POWER_ON_MODE_DISABLED",
                Vec::<String>::new(),
            ));
        }
        // This toolstack has no power-on plugin.
        return Some(ApiError::new("XENAPI_MISSING_PLUGIN", ["power-on-host"]));
    }
    None
}

/// Recomputes a host's `allowed_operations`.
pub(crate) fn refresh_host(tx: &mut Tx<'_>, host: &str) {
    if tx.class_of(host) != Some("host") {
        return;
    }
    let ops: Vec<Value> = enum_values("host_allowed_operations")
        .iter()
        .copied()
        .filter(|op| host_check(tx, host, op).is_none())
        .map(s)
        .collect();
    tx.set(host, "allowed_operations", Value::Array(ops));
}

/// Empties every VM's, VBD's, VIF's, host's, VDI's and SR's `current_operations` and
/// recomputes what is allowed: at start, the tasks of a previous run are gone.
pub(crate) fn clear_current_operations(tx: &mut Tx<'_>) {
    for class in ["VM", "VBD", "VIF", "host", "VDI", "SR"] {
        for r in tx.all(class) {
            let busy = matches!(tx.field(&r, "current_operations"),
                Some(Value::Struct(m)) if !m.is_empty());
            if busy {
                tx.set(&r, "current_operations", Value::Struct(BTreeMap::new()));
            }
        }
    }
    for vm in tx.all("VM") {
        refresh_vm(tx, &vm);
    }
    for sr in tx.all("SR") {
        super::storage_operations::refresh_storage(tx, &sr);
    }
}

/// Recomputes `allowed_operations` of a VM and of its VBDs and VIFs.
pub(crate) fn refresh_vm(tx: &mut Tx<'_>, vm: &str) {
    if tx.class_of(vm) != Some("VM") {
        return;
    }
    let ops = vm_allowed(tx, vm);
    tx.set(
        vm,
        "allowed_operations",
        Value::Array(ops.into_iter().map(s).collect()),
    );
    for d in tx.refs_field(vm, "VIFs") {
        refresh_device(tx, &d);
    }
    for d in tx.refs_field(vm, "VBDs") {
        refresh_device(tx, &d);
    }
}

/// Recomputes `allowed_operations` of a VIF or VBD.
pub(crate) fn refresh_device(tx: &mut Tx<'_>, dev: &str) {
    let (class, en) = match tx.class_of(dev) {
        Some("VIF") => ("VIF", "vif_operations"),
        Some("VBD") => ("VBD", "vbd_operations"),
        _ => return,
    };
    let ops: Vec<Value> = enum_values(en)
        .iter()
        .copied()
        .filter(|op| {
            if class == "VIF" {
                vif_check(tx, dev, op).is_none()
            } else {
                vbd_check(tx, dev, op).is_none()
            }
        })
        .map(s)
        .collect();
    tx.set(dev, "allowed_operations", Value::Array(ops));
    // What a VDI allows depends on its VBDs being attached or busy.
    if class == "VBD" {
        let vdi = tx.str_field(dev, "VDI");
        super::storage_operations::refresh_vdi(tx, &vdi);
    }
}

/// XAPI's MAC for device `dev` of a VM with `mac_seed` (`Xapi_vif_helpers.gen_mac`): the
/// seed hashed `2 * dev + 1` times with MD5, bytes 0-3 of that and 1-2 of its MD5, made
/// locally administered unicast (`Record_util.mac_from_int_array`).
pub fn gen_mac(dev: u32, seed: &str) -> String {
    use md5::{Digest, Md5};
    let mut h: Vec<u8> = seed.as_bytes().to_vec();
    for _ in 0..(u64::from(dev) * 2 + 1) {
        h = Md5::digest(&h).to_vec();
    }
    let h2 = Md5::digest(&h);
    let b = [(h[0] | 0x02) & !0x01, h[1], h[2], h[3], h2[1], h2[2]];
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5]
    )
}

impl Xapi {
    /// Runs `f` as VM operation `op` (`Xapi_vm_helpers.with_vm_operation`): checked as XAPI
    /// checks, waiting its turn while another operation holds the VM, recorded in
    /// `current_operations` under the caller's task while it runs.
    pub(super) fn with_vm_operation<T>(
        &self,
        vm: &str,
        op: &str,
        f: impl FnOnce() -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        // A failure other than another operation is reported at once, as XAPI's retry
        // loop only waits on OTHER_OPERATION_IN_PROGRESS.
        if let Some(e) = self.db.read(|v| vm_check(v, vm, op)) {
            if e.code != codes::OTHER_OPERATION_IN_PROGRESS {
                return Err(e);
            }
        }
        let turn = self.turn(vm)?;
        let key = crate::tasks::current().map_or_else(crate::db::new_ref, |c| c.task);
        self.db.write(|tx| {
            if tx.class_of(vm) != Some("VM") {
                return Err(ApiError::handle_invalid("VM", vm));
            }
            if let Some(e) = vm_check(tx, vm, op) {
                return Err(e);
            }
            tx.map_set(vm, "current_operations", &key, Some(s(op)));
            refresh_vm(tx, vm);
            Ok(())
        })?;
        let out = f();
        let _ = self.db.write(|tx| {
            if tx.class_of(vm) == Some("VM") {
                tx.map_set(vm, "current_operations", &key, None);
                refresh_vm(tx, vm);
            }
            Ok::<_, ApiError>(())
        });
        drop(turn);
        out
    }

    /// `VM.assert_operation_valid`: the check alone, without waiting.
    pub(super) fn vm_assert_operation_valid(&self, vm: &str, op: &Value) -> R {
        let op = arg_str(op, "op")?;
        if !enum_values("vm_operations").contains(&op) {
            return Err(ApiError::field_type("op"));
        }
        match self.db.read(|v| vm_check(v, vm, op)) {
            Some(e) => Err(e),
            None => Ok(s("")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_table_is_xapis() {
        let cur = |o: &str| vec![("OpaqueRef:t".to_owned(), o.to_owned())];
        assert!(vm_concurrent("hard_shutdown", &cur("clean_shutdown")));
        assert!(!vm_concurrent("hard_shutdown", &cur("hard_shutdown")));
        assert!(!vm_concurrent("hard_reboot", &cur("hard_shutdown")));
        assert!(vm_concurrent("copy", &cur("clone")));
        assert!(!vm_concurrent("start", &cur("clone")));
        assert!(vm_concurrent("clean_shutdown", &cur("migrate_send")));
        assert!(!vm_concurrent("pause", &cur("start")));
    }

    #[test]
    fn gen_mac_is_locally_administered_unicast_and_depends_on_device() {
        let a = gen_mac(0, "seed");
        let b = gen_mac(1, "seed");
        assert_ne!(a, b);
        assert_eq!(a, gen_mac(0, "seed"));
        let first = u8::from_str_radix(&a[..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02);
        assert!(valid_mac(&a));
    }
}
