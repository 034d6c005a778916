//! `xe` commands that create a VM and its devices: `vdi-create`, `vbd-create` and
//! `vif-create` with `xe`'s parameter names, and `vm-create` (this project's: a PV VM from a
//! kernel, where XenServer's `xe` installs from a template and sets `PV-*` afterwards).
//! Each prints the new object's UUID.

use std::collections::BTreeMap;
use std::io::Write;

use crate::cli::XeError;
use crate::client::Client;
use crate::value::Value;

fn usage(msg: impl Into<String>) -> XeError {
    XeError(msg.into(), 1)
}

/// Runs `cmd` when it is one of this file's; `None` otherwise.
pub(crate) fn dispatch(
    c: &mut Client,
    cmd: &str,
    kv: &[(String, String)],
    out: &mut dyn Write,
) -> Option<Result<(), XeError>> {
    let r = match cmd {
        "vm-create" => vm_create(c, kv),
        "vdi-create" => vdi_create(c, kv),
        "vbd-create" => vbd_create(c, kv),
        "vif-create" => vif_create(c, kv),
        _ => return None,
    };
    Some(r.and_then(|(class, r)| {
        let uuid = c.call(&format!("{class}.get_uuid"), &[r])?;
        writeln!(out, "{}", uuid.as_str().unwrap_or_default())
            .map_err(|e| usage(format!("writing the output: {e}")))
    }))
}

fn get<'a>(kv: &'a [(String, String)], k: &str) -> Option<&'a str> {
    kv.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str())
}

fn need<'a>(kv: &'a [(String, String)], k: &str) -> Result<&'a str, XeError> {
    get(kv, k).ok_or_else(|| usage(format!("{k} is required")))
}

/// `other-config:KEY=VALUE` parameters as a map.
fn other_config(kv: &[(String, String)]) -> Value {
    Value::Struct(
        kv.iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("other-config:")
                    .map(|k| (k.to_owned(), Value::str(v)))
            })
            .collect(),
    )
}

fn by_uuid(c: &mut Client, class: &str, uuid: &str) -> Result<Value, XeError> {
    Ok(c.call(&format!("{class}.get_by_uuid"), &[Value::str(uuid)])?)
}

type Made = Result<(&'static str, Value), XeError>;

/// `vm-create name-label= memory=<MiB> [VCPUs=] [PV-kernel=] [PV-ramdisk=] [PV-args=]`.
fn vm_create(c: &mut Client, kv: &[(String, String)]) -> Made {
    let mib: u64 = need(kv, "memory")?
        .parse()
        .map_err(|_| usage("memory is a number of MiB"))?;
    let mem = Value::String((mib << 20).to_string());
    let vcpus = get(kv, "VCPUs").unwrap_or("1");
    let mut r = BTreeMap::new();
    r.insert("name_label".to_owned(), Value::str(need(kv, "name-label")?));
    for f in [
        "memory_static_min",
        "memory_dynamic_min",
        "memory_dynamic_max",
        "memory_static_max",
    ] {
        r.insert(f.to_owned(), mem.clone());
    }
    r.insert("VCPUs_max".to_owned(), Value::str(vcpus));
    r.insert("VCPUs_at_startup".to_owned(), Value::str(vcpus));
    for (k, f) in [
        ("PV-kernel", "PV_kernel"),
        ("PV-ramdisk", "PV_ramdisk"),
        ("PV-args", "PV_args"),
    ] {
        if let Some(v) = get(kv, k) {
            r.insert(f.to_owned(), Value::str(v));
        }
    }
    for (k, f) in [
        ("actions-after-shutdown", "actions_after_shutdown"),
        ("actions-after-reboot", "actions_after_reboot"),
        ("actions-after-crash", "actions_after_crash"),
    ] {
        if let Some(v) = get(kv, k) {
            r.insert(f.to_owned(), Value::str(v));
        }
    }
    Ok(("VM", c.call("VM.create", &[Value::Struct(r)])?))
}

/// `vdi-create sr-uuid= name-label= virtual-size= [type=user] [sm-config:path=]`
/// (`sm-config:path`: the image or block device the backend opens).
fn vdi_create(c: &mut Client, kv: &[(String, String)]) -> Made {
    let sr = by_uuid(c, "SR", need(kv, "sr-uuid")?)?;
    let mut r = BTreeMap::new();
    r.insert("SR".to_owned(), sr);
    r.insert("name_label".to_owned(), Value::str(need(kv, "name-label")?));
    r.insert(
        "virtual_size".to_owned(),
        Value::str(get(kv, "virtual-size").unwrap_or("0")),
    );
    r.insert(
        "type".to_owned(),
        Value::str(get(kv, "type").unwrap_or("user")),
    );
    r.insert(
        "sm_config".to_owned(),
        Value::Struct(
            kv.iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix("sm-config:")
                        .map(|k| (k.to_owned(), Value::str(v)))
                })
                .collect(),
        ),
    );
    Ok(("VDI", c.call("VDI.create", &[Value::Struct(r)])?))
}

/// `vbd-create vm-uuid= vdi-uuid= device= [mode=RW|RO] [type=Disk|CD]
/// [other-config:backend-kind=vbd]`.
fn vbd_create(c: &mut Client, kv: &[(String, String)]) -> Made {
    let vm = by_uuid(c, "VM", need(kv, "vm-uuid")?)?;
    let vdi = by_uuid(c, "VDI", need(kv, "vdi-uuid")?)?;
    let mut r = BTreeMap::new();
    r.insert("VM".to_owned(), vm);
    r.insert("VDI".to_owned(), vdi);
    r.insert("userdevice".to_owned(), Value::str(need(kv, "device")?));
    r.insert(
        "mode".to_owned(),
        Value::str(get(kv, "mode").unwrap_or("RW")),
    );
    r.insert(
        "type".to_owned(),
        Value::str(get(kv, "type").unwrap_or("Disk")),
    );
    r.insert("other_config".to_owned(), other_config(kv));
    Ok(("VBD", c.call("VBD.create", &[Value::Struct(r)])?))
}

/// `vif-create vm-uuid= network-uuid= device= [mac=]`.
fn vif_create(c: &mut Client, kv: &[(String, String)]) -> Made {
    let vm = by_uuid(c, "VM", need(kv, "vm-uuid")?)?;
    let net = by_uuid(c, "network", need(kv, "network-uuid")?)?;
    let mut r = BTreeMap::new();
    r.insert("VM".to_owned(), vm);
    r.insert("network".to_owned(), net);
    r.insert("device".to_owned(), Value::str(need(kv, "device")?));
    r.insert(
        "MAC".to_owned(),
        Value::str(get(kv, "mac").unwrap_or_default()),
    );
    r.insert("other_config".to_owned(), other_config(kv));
    Ok(("VIF", c.call("VIF.create", &[Value::Struct(r)])?))
}
