//! `xe` storage commands with XenServer's parameters (`ocaml/xapi-cli-server/
//! cli_frontend.ml`): `sr-create`, `sr-forget`, `sr-scan`, `pbd-plug`, `pbd-unplug`,
//! `vdi-resize`, `vdi-snapshot`, `vdi-clone`, `vdi-copy`, `vm-snapshot`, `vm-clone`,
//! `vm-copy`, `snapshot-revert` (`sr-destroy` and `vdi-destroy` are the generic
//! `*-destroy`). Commands that make an object print its UUID.

use std::io::Write;

use crate::cli::XeError;
use crate::client::Client;
use crate::value::Value;

fn usage(msg: impl Into<String>) -> XeError {
    XeError(msg.into(), 1)
}

fn get<'a>(kv: &'a [(String, String)], k: &str) -> Option<&'a str> {
    kv.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str())
}

fn need<'a>(kv: &'a [(String, String)], k: &str) -> Result<&'a str, XeError> {
    get(kv, k).ok_or_else(|| {
        usage(format!(
            "Required parameter not found: {k}\nFor usage run: 'xe help'"
        ))
    })
}

/// `PREFIX:KEY=VALUE` parameters as a map.
fn map(kv: &[(String, String)], prefix: &str) -> Value {
    Value::Struct(
        kv.iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(prefix)
                    .map(|k| (k.to_owned(), Value::str(v)))
            })
            .collect(),
    )
}

fn by_uuid(c: &mut Client, class: &str, uuid: &str) -> Result<Value, XeError> {
    Ok(c.call(&format!("{class}.get_by_uuid"), &[Value::str(uuid)])?)
}

/// The VM named by `uuid=` or `vm=` (a UUID or a name label), as xe selects one.
pub(crate) fn one_vm(c: &mut Client, kv: &[(String, String)]) -> Result<Value, XeError> {
    if let Some(u) = get(kv, "uuid") {
        return by_uuid(c, "VM", u);
    }
    let vm = need(kv, "vm")?;
    if let Ok(r) = c.call("VM.get_by_uuid", &[Value::str(vm)]) {
        return Ok(r);
    }
    let found = c.call("VM.get_by_name_label", &[Value::str(vm)])?;
    match found.as_array().unwrap_or_default() {
        [one] => Ok(one.clone()),
        [] => Err(usage(format!("No matching VMs found for vm={vm}"))),
        _ => Err(usage(format!(
            "Multiple VMs match vm={vm}; give uuid= instead"
        ))),
    }
}

/// Runs `cmd` when it is one of this file's; `None` otherwise.
pub(crate) fn dispatch(
    c: &mut Client,
    cmd: &str,
    kv: &[(String, String)],
    out: &mut dyn Write,
) -> Option<Result<(), XeError>> {
    let r = match cmd {
        "sr-create" => sr_create(c, kv).map(|r| Some(("SR", r))),
        "sr-forget" | "sr-scan" => (|| {
            let sr = by_uuid(c, "SR", need(kv, "uuid")?)?;
            let m = if cmd == "sr-scan" {
                "SR.scan"
            } else {
                "SR.forget"
            };
            c.call(m, &[sr])?;
            Ok(None)
        })(),
        "pbd-plug" | "pbd-unplug" => (|| {
            let pbd = by_uuid(c, "PBD", need(kv, "uuid")?)?;
            let m = if cmd == "pbd-plug" {
                "PBD.plug"
            } else {
                "PBD.unplug"
            };
            c.call(m, &[pbd])?;
            Ok(None)
        })(),
        "vdi-resize" => (|| {
            let vdi = by_uuid(c, "VDI", need(kv, "uuid")?)?;
            let size = bytes(need(kv, "disk-size")?)?;
            c.call("VDI.resize", &[vdi, Value::str(size.to_string())])?;
            Ok(None)
        })(),
        "vdi-snapshot" | "vdi-clone" => (|| {
            let vdi = by_uuid(c, "VDI", need(kv, "uuid")?)?;
            let m = if cmd == "vdi-snapshot" {
                "VDI.snapshot"
            } else {
                "VDI.clone"
            };
            let new = c.call(m, &[vdi, map(kv, "driver-params:")])?;
            if let Some(n) = get(kv, "new-name-label") {
                c.call("VDI.set_name_label", &[new.clone(), Value::str(n)])?;
            }
            if let Some(n) = get(kv, "new-name-description") {
                c.call("VDI.set_name_description", &[new.clone(), Value::str(n)])?;
            }
            Ok(Some(("VDI", new)))
        })(),
        "vdi-copy" => (|| {
            let vdi = by_uuid(c, "VDI", need(kv, "uuid")?)?;
            let sr = by_uuid(c, "SR", need(kv, "sr-uuid")?)?;
            let null = Value::str("OpaqueRef:NULL");
            let new = c.call("VDI.copy", &[vdi, sr, null.clone(), null])?;
            Ok(Some(("VDI", new)))
        })(),
        "vm-snapshot" | "vm-clone" | "vm-copy" => (|| {
            let vm = one_vm(c, kv)?;
            let name = Value::str(need(kv, "new-name-label")?);
            let new = match cmd {
                "vm-snapshot" => c.call("VM.snapshot", &[vm, name, Value::Array(vec![])])?,
                "vm-clone" => c.call("VM.clone", &[vm, name])?,
                _ => {
                    let sr = match get(kv, "sr-uuid") {
                        Some(u) => by_uuid(c, "SR", u)?,
                        None => Value::str("OpaqueRef:NULL"),
                    };
                    c.call("VM.copy", &[vm, name, sr])?
                }
            };
            if let Some(d) = get(kv, "new-name-description") {
                c.call("VM.set_name_description", &[new.clone(), Value::str(d)])?;
            }
            Ok(Some(("VM", new)))
        })(),
        "snapshot-revert" => (|| {
            let u = get(kv, "snapshot-uuid")
                .or_else(|| get(kv, "uuid"))
                .ok_or_else(|| usage("Required parameter not found: snapshot-uuid"))?;
            let snap = by_uuid(c, "VM", u)?;
            c.call("VM.revert", &[snap])?;
            Ok(None)
        })(),
        _ => return None,
    };
    Some(r.and_then(|made| {
        let Some((class, r)) = made else {
            return Ok(());
        };
        let uuid = c.call(&format!("{class}.get_uuid"), &[r])?;
        writeln!(out, "{}", uuid.as_str().unwrap_or_default())
            .map_err(|e| usage(format!("writing the output: {e}")))
    }))
}

/// A size as xe reads one: bytes, or a number with a `KiB`/`MiB`/`GiB`/`TiB` suffix.
fn bytes(v: &str) -> Result<u64, XeError> {
    let units = [("KiB", 10), ("MiB", 20), ("GiB", 30), ("TiB", 40)];
    let (num, shift) = units
        .iter()
        .find_map(|(u, s)| v.strip_suffix(u).map(|n| (n, *s)))
        .unwrap_or((v, 0));
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| usage(format!("not a size: {v}")))
}

/// `sr-create name-label= type= [host-uuid=] [device-config:KEY=VALUE...]
/// [physical-size=] [content-type=] [shared=] [sm-config:KEY=VALUE...]
/// [name-description=]`.
fn sr_create(c: &mut Client, kv: &[(String, String)]) -> Result<Value, XeError> {
    let host = match get(kv, "host-uuid") {
        Some(u) => by_uuid(c, "host", u)?,
        None => c
            .call("host.get_all", &[])?
            .as_array()
            .and_then(|a| a.first().cloned())
            .ok_or_else(|| usage("no host"))?,
    };
    let shared = match get(kv, "shared").unwrap_or("false") {
        "true" => true,
        "false" => false,
        other => return Err(usage(format!("shared must be true or false, not {other}"))),
    };
    Ok(c.call(
        "SR.create",
        &[
            host,
            map(kv, "device-config:"),
            Value::str(bytes(get(kv, "physical-size").unwrap_or("0"))?.to_string()),
            Value::str(need(kv, "name-label")?),
            Value::str(get(kv, "name-description").unwrap_or("")),
            Value::str(need(kv, "type")?),
            Value::str(get(kv, "content-type").unwrap_or("user")),
            Value::Bool(shared),
            map(kv, "sm-config:"),
        ],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_xe_reads_them() {
        assert_eq!(bytes("1024").unwrap(), 1024);
        assert_eq!(bytes("2GiB").unwrap(), 2 << 30);
        assert_eq!(bytes("16MiB").unwrap(), 16 << 20);
        assert!(bytes("lots").is_err());
        assert!(bytes("99999999999TiB").is_err());
    }
}
