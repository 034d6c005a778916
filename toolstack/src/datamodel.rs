//! The XAPI object model: classes, their fields (names as in XAPI's `ocaml/idl/datamodel*.ml`)
//! and the relations whose two ends are kept consistent.

use std::collections::BTreeMap;
use std::sync::OnceLock;

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
    /// The value a field of this type holds when nothing was given.
    pub fn default_value(self) -> Value {
        match self {
            Ty::Str => Value::str(""),
            Ty::Int => Value::str("0"),
            Ty::Float => Value::Double(0.0),
            Ty::Bool => Value::Bool(false),
            Ty::DateTime => Value::DateTime("19700101T00:00:00Z".into()),
            Ty::Enum(vals) => Value::str(vals[0]),
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
    /// Type.
    pub ty: Ty,
    /// Writability.
    pub qual: Qual,
}

/// One class of the object model.
#[derive(Debug)]
pub struct Class {
    /// XAPI class name (`VM`, `network`, ...).
    pub name: &'static str,
    /// Fields, `uuid` first.
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

    /// Whether the class has a `name_label` field.
    pub fn has_name_label(&self) -> bool {
        self.field("name_label").is_some()
    }

    /// A record holding every field's default value.
    pub fn default_record(&self) -> BTreeMap<String, Value> {
        self.fields
            .iter()
            .map(|f| (f.name.to_owned(), f.ty.default_value()))
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

const POWER: &[&str] = &["Halted", "Paused", "Running", "Suspended"];
const TASK_STATUS: &[&str] = &["pending", "success", "failure", "cancelling", "cancelled"];
const VDI_TYPE: &[&str] = &[
    "user",
    "system",
    "ephemeral",
    "suspend",
    "crashdump",
    "ha_statefile",
    "metadata",
    "redo_log",
    "rrd",
    "pvs_cache",
    "cbt_metadata",
];
const BOND_MODE: &[&str] = &["balance-slb", "active-backup", "lacp"];

fn f(name: &'static str, ty: Ty, qual: Qual) -> Field {
    Field { name, ty, qual }
}

use Qual::{StaticRO as S, RO, RW};
use Ty::{Bool, DateTime, Enum, Float, Int, Map, Ref, RefSet, Str, StrSet};

fn named(v: &mut Vec<Field>) {
    v.push(f("name_label", Str, RW));
    v.push(f("name_description", Str, RW));
}

fn ops(v: &mut Vec<Field>) {
    v.push(f("allowed_operations", StrSet, RO));
    v.push(f("current_operations", Map, RO));
}

fn build() -> Vec<Class> {
    let mut out = Vec::new();
    let mut class = |name, persistent, record_create, destroy, fields: Vec<Field>| {
        let mut all = vec![f("uuid", Str, RO)];
        all.extend(fields);
        out.push(Class {
            name,
            fields: all,
            persistent,
            record_create,
            destroy,
        });
    };
    class(
        "session",
        false,
        false,
        false,
        vec![
            f("this_host", Ref("host"), RO),
            f("this_user", Str, RO),
            f("last_active", DateTime, RO),
            f("pool", Bool, RO),
            f("other_config", Map, RW),
            f("is_local_superuser", Bool, RO),
            f("validation_time", DateTime, RO),
            f("auth_user_sid", Str, RO),
            f("auth_user_name", Str, RO),
            f("rbac_permissions", StrSet, RO),
            f("originator", Str, RO),
        ],
    );
    let mut v = vec![];
    named(&mut v);
    ops(&mut v);
    v.extend([
        f("created", DateTime, RO),
        f("finished", DateTime, RO),
        f("status", Enum(TASK_STATUS), RO),
        f("resident_on", Ref("host"), RO),
        f("progress", Float, RO),
        f("type", Str, RO),
        f("result", Str, RO),
        f("error_info", StrSet, RO),
        f("other_config", Map, RW),
        f("subtask_of", Ref("task"), RO),
        f("subtasks", RefSet("task"), RO),
        f("backtrace", Str, RO),
    ]);
    class("task", false, false, true, v);
    let mut v = vec![];
    named(&mut v);
    v.extend([
        f("master", Ref("host"), RO),
        f("default_SR", Ref("SR"), RW),
        f("suspend_image_SR", Ref("SR"), RW),
        f("crash_dump_SR", Ref("SR"), RW),
        f("other_config", Map, RW),
        f("ha_enabled", Bool, RO),
        f("tags", StrSet, RW),
    ]);
    class("pool", true, false, false, v);
    let mut v = vec![];
    named(&mut v);
    ops(&mut v);
    v.extend([
        f("API_version_major", Int, RO),
        f("API_version_minor", Int, RO),
        f("API_version_vendor", Str, RO),
        f("software_version", Map, RO),
        f("enabled", Bool, RO),
        f("other_config", Map, RW),
        f("capabilities", StrSet, RO),
        f("sched_policy", Str, RO),
        f("supported_bootloaders", StrSet, RO),
        f("resident_VMs", RefSet("VM"), RO),
        f("PIFs", RefSet("PIF"), RO),
        f("PBDs", RefSet("PBD"), RO),
        f("PCIs", RefSet("PCI"), RO),
        f("PGPUs", RefSet("PGPU"), RO),
        f("cpu_info", Map, RO),
        f("hostname", Str, RW),
        f("address", Str, RW),
        f("metrics", Ref("host_metrics"), RO),
        f("edition", Str, RO),
        f("tags", StrSet, RW),
    ]);
    class("host", true, false, false, v);
    class(
        "host_metrics",
        true,
        false,
        false,
        vec![
            f("memory_total", Int, RO),
            f("memory_free", Int, RO),
            f("live", Bool, RO),
            f("last_updated", DateTime, RO),
            f("other_config", Map, RW),
        ],
    );
    let mut v = vec![];
    ops(&mut v);
    named(&mut v);
    v.extend([
        f("power_state", Enum(POWER), RO),
        f("user_version", Int, RW),
        f("is_a_template", Bool, RW),
        f("suspend_VDI", Ref("VDI"), RO),
        f("resident_on", Ref("host"), RO),
        f("affinity", Ref("host"), RW),
        f("memory_overhead", Int, RO),
        f("memory_target", Int, RO),
        f("memory_static_max", Int, RW),
        f("memory_dynamic_max", Int, RW),
        f("memory_dynamic_min", Int, RW),
        f("memory_static_min", Int, RW),
        f("VCPUs_params", Map, RW),
        f("VCPUs_max", Int, RW),
        f("VCPUs_at_startup", Int, RW),
        f("actions_after_shutdown", Enum(&["destroy", "restart"]), RW),
        f("actions_after_reboot", Enum(&["restart", "destroy"]), RW),
        f(
            "actions_after_crash",
            Enum(&[
                "restart",
                "destroy",
                "coredump_and_destroy",
                "coredump_and_restart",
                "preserve",
                "rename_restart",
            ]),
            RW,
        ),
        f("VIFs", RefSet("VIF"), RO),
        f("VBDs", RefSet("VBD"), RO),
        f("VGPUs", RefSet("VGPU"), RO),
        f("PV_bootloader", Str, RW),
        f("PV_kernel", Str, RW),
        f("PV_ramdisk", Str, RW),
        f("PV_args", Str, RW),
        f("PV_bootloader_args", Str, RW),
        f("PV_legacy_args", Str, RW),
        f("HVM_boot_policy", Str, RW),
        f("HVM_boot_params", Map, RW),
        f("platform", Map, RW),
        f("PCI_bus", Str, RW),
        f("other_config", Map, RW),
        f("domid", Int, RO),
        f("domarch", Str, RO),
        f("is_control_domain", Bool, RO),
        f("metrics", Ref("VM_metrics"), RO),
        f("recommendations", Str, RW),
        f("xenstore_data", Map, RW),
        f("ha_always_run", Bool, RW),
        f("tags", StrSet, RW),
        f("blocked_operations", Map, RW),
        f(
            "domain_type",
            Enum(&["pv", "hvm", "pv_in_pvh", "pvh", "unspecified"]),
            RW,
        ),
    ]);
    class("VM", true, true, true, v);
    class(
        "VM_metrics",
        true,
        false,
        false,
        vec![
            f("memory_actual", Int, RO),
            f("VCPUs_number", Int, RO),
            f("state", StrSet, RO),
            f("start_time", DateTime, RO),
            f("install_time", DateTime, RO),
            f("last_updated", DateTime, RO),
            f("other_config", Map, RW),
        ],
    );
    let mut v = vec![];
    ops(&mut v);
    named(&mut v);
    v.extend([
        f("VDIs", RefSet("VDI"), RO),
        f("PBDs", RefSet("PBD"), RO),
        f("virtual_allocation", Int, RO),
        f("physical_utilisation", Int, RO),
        f("physical_size", Int, RO),
        f("type", Str, RO),
        f("content_type", Str, RO),
        f("shared", Bool, RO),
        f("other_config", Map, RW),
        f("tags", StrSet, RW),
        f("sm_config", Map, RW),
    ]);
    class("SR", true, false, true, v);
    class(
        "PBD",
        true,
        true,
        true,
        vec![
            f("host", Ref("host"), S),
            f("SR", Ref("SR"), S),
            f("device_config", Map, S),
            f("currently_attached", Bool, RO),
            f("other_config", Map, RW),
        ],
    );
    let mut v = vec![];
    ops(&mut v);
    named(&mut v);
    v.extend([
        f("SR", Ref("SR"), S),
        f("VBDs", RefSet("VBD"), RO),
        f("virtual_size", Int, S),
        f("physical_utilisation", Int, RO),
        f("type", Enum(VDI_TYPE), S),
        f("sharable", Bool, S),
        f("read_only", Bool, S),
        f("other_config", Map, RW),
        f("storage_lock", Bool, RO),
        f("location", Str, RO),
        f("managed", Bool, RO),
        f("missing", Bool, RO),
        f("xenstore_data", Map, RW),
        f("sm_config", Map, RW),
        f("is_a_snapshot", Bool, RO),
        f("tags", StrSet, RW),
    ]);
    class("VDI", true, true, true, v);
    let mut v = vec![];
    ops(&mut v);
    v.extend([
        f("VM", Ref("VM"), S),
        f("VDI", Ref("VDI"), S),
        f("device", Str, RO),
        f("userdevice", Str, RW),
        f("bootable", Bool, RW),
        f("mode", Enum(&["RW", "RO"]), RW),
        f("type", Enum(&["Disk", "CD", "Floppy"]), RW),
        f("unpluggable", Bool, RW),
        f("storage_lock", Bool, RO),
        f("empty", Bool, S),
        f("other_config", Map, RW),
        f("currently_attached", Bool, RO),
        f("status_code", Int, RO),
        f("status_detail", Str, RO),
        f("runtime_properties", Map, RO),
        f("qos_algorithm_type", Str, RW),
        f("qos_algorithm_params", Map, RW),
        f("qos_supported_algorithms", StrSet, RO),
    ]);
    class("VBD", true, true, true, v);
    let mut v = vec![];
    ops(&mut v);
    named(&mut v);
    v.extend([
        f("VIFs", RefSet("VIF"), RO),
        f("PIFs", RefSet("PIF"), RO),
        f("MTU", Int, RW),
        f("other_config", Map, RW),
        f("bridge", Str, S),
        f("managed", Bool, S),
        f("tags", StrSet, RW),
        f("default_locking_mode", Enum(&["unlocked", "disabled"]), RW),
    ]);
    class("network", true, true, true, v);
    class(
        "PIF",
        true,
        false,
        false,
        vec![
            f("device", Str, RO),
            f("network", Ref("network"), RO),
            f("host", Ref("host"), RO),
            f("MAC", Str, RO),
            f("MTU", Int, RO),
            f("VLAN", Int, RO),
            f("physical", Bool, RO),
            f("currently_attached", Bool, RO),
            f(
                "ip_configuration_mode",
                Enum(&["None", "DHCP", "Static"]),
                RO,
            ),
            f("IP", Str, RO),
            f("netmask", Str, RO),
            f("gateway", Str, RO),
            f("DNS", Str, RO),
            f("bond_slave_of", Ref("Bond"), RO),
            f("bond_master_of", RefSet("Bond"), RO),
            f("VLAN_master_of", Ref("VLAN"), RO),
            f("VLAN_slave_of", RefSet("VLAN"), RO),
            f("management", Bool, RO),
            f("other_config", Map, RW),
            f("disallow_unplug", Bool, RW),
            f("managed", Bool, RO),
            f("properties", Map, RO),
            f("capabilities", StrSet, RO),
        ],
    );
    let mut v = vec![];
    ops(&mut v);
    v.extend([
        f("device", Str, S),
        f("network", Ref("network"), S),
        f("VM", Ref("VM"), S),
        f("MAC", Str, S),
        f("MTU", Int, S),
        f("other_config", Map, RW),
        f("currently_attached", Bool, RO),
        f("status_code", Int, RO),
        f("status_detail", Str, RO),
        f("runtime_properties", Map, RO),
        f("qos_algorithm_type", Str, RW),
        f("qos_algorithm_params", Map, RW),
        f("qos_supported_algorithms", StrSet, RO),
        f("MAC_autogenerated", Bool, RO),
        f(
            "locking_mode",
            Enum(&["network_default", "locked", "unlocked", "disabled"]),
            RW,
        ),
        f("ipv4_allowed", StrSet, RW),
        f("ipv6_allowed", StrSet, RW),
    ]);
    class("VIF", true, true, true, v);
    class(
        "Bond",
        true,
        false,
        true,
        vec![
            f("master", Ref("PIF"), RO),
            f("slaves", RefSet("PIF"), RO),
            f("other_config", Map, RW),
            f("primary_slave", Ref("PIF"), RO),
            f("mode", Enum(BOND_MODE), RO),
            f("properties", Map, RO),
            f("links_up", Int, RO),
            f("auto_update_mac", Bool, RO),
        ],
    );
    class(
        "VLAN",
        true,
        false,
        true,
        vec![
            f("tagged_PIF", Ref("PIF"), RO),
            f("untagged_PIF", Ref("PIF"), RO),
            f("tag", Int, RO),
            f("other_config", Map, RW),
        ],
    );
    class(
        "PCI",
        true,
        false,
        false,
        vec![
            f("class_name", Str, RO),
            f("vendor_name", Str, RO),
            f("device_name", Str, RO),
            f("host", Ref("host"), RO),
            f("pci_id", Str, RO),
            f("other_config", Map, RW),
            f("subsystem_vendor_name", Str, RO),
            f("subsystem_device_name", Str, RO),
            f("driver_name", Str, RO),
        ],
    );
    class(
        "PGPU",
        true,
        false,
        false,
        vec![
            f("PCI", Ref("PCI"), RO),
            f("GPU_group", Ref("GPU_group"), RO),
            f("host", Ref("host"), RO),
            f("other_config", Map, RW),
            f("supported_VGPU_types", RefSet("VGPU_type"), RO),
            f("enabled_VGPU_types", RefSet("VGPU_type"), RO),
            f("resident_VGPUs", RefSet("VGPU"), RO),
            f(
                "dom0_access",
                Enum(&[
                    "enabled",
                    "disable_on_reboot",
                    "disabled",
                    "enable_on_reboot",
                ]),
                RO,
            ),
            f("is_system_display_device", Bool, RO),
            f("compatibility_metadata", Map, RO),
        ],
    );
    let mut v = vec![];
    named(&mut v);
    v.extend([
        f("PGPUs", RefSet("PGPU"), RO),
        f("VGPUs", RefSet("VGPU"), RO),
        f("GPU_types", StrSet, RO),
        f("other_config", Map, RW),
        f(
            "allocation_algorithm",
            Enum(&["depth_first", "breadth_first"]),
            RW,
        ),
        f("supported_VGPU_types", RefSet("VGPU_type"), RO),
        f("enabled_VGPU_types", RefSet("VGPU_type"), RO),
    ]);
    class("GPU_group", true, false, true, v);
    class(
        "VGPU",
        true,
        false,
        true,
        vec![
            f("VM", Ref("VM"), RO),
            f("GPU_group", Ref("GPU_group"), RO),
            f("device", Str, RO),
            f("currently_attached", Bool, RO),
            f("other_config", Map, RW),
            f("type", Ref("VGPU_type"), RO),
            f("resident_on", Ref("PGPU"), RO),
            f("scheduled_to_be_resident_on", Ref("PGPU"), RO),
            f("compatibility_metadata", Map, RO),
            f("extra_args", Str, RW),
        ],
    );
    class(
        "VGPU_type",
        true,
        false,
        false,
        vec![
            f("vendor_name", Str, RO),
            f("model_name", Str, RO),
            f("framebuffer_size", Int, RO),
            f("max_heads", Int, RO),
            f("max_resolution_x", Int, RO),
            f("max_resolution_y", Int, RO),
            f("supported_on_PGPUs", RefSet("PGPU"), RO),
            f("enabled_on_PGPUs", RefSet("PGPU"), RO),
            f("VGPUs", RefSet("VGPU"), RO),
            f("supported_on_GPU_groups", RefSet("GPU_group"), RO),
            f("enabled_on_GPU_groups", RefSet("GPU_group"), RO),
            f(
                "implementation",
                Enum(&["passthrough", "nvidia", "nvidia_sriov", "gvt_g", "mxgpu"]),
                RO,
            ),
            f("identifier", Str, RO),
            f("experimental", Bool, RO),
        ],
    );
    crate::api::message::class_fields(&mut class);
    out
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
}

impl Known {
    /// Every variant, in order.
    pub const ALL: [Known; 22] = [
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
    fn known_classes_are_the_model_in_order() {
        assert_eq!(Known::ALL.len(), classes().len());
        for (i, k) in Known::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
            assert_eq!(k.class().name, format!("{k:?}"));
            assert!(std::ptr::eq(class(k.name()).unwrap(), k.class()));
        }
    }
}
