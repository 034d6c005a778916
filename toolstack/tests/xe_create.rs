//! `xe vm-create`, `vdi-create`, `vbd-create` and `vif-create` against a running daemon
//! (simulated host): the objects they make, and the errors for missing or wrong parameters.

#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;

use common::xe::{ok, xe};
use common::Daemon;
use toolstack::value::Value;

#[test]
fn xe_creates_a_pv_vm_with_a_disk_and_a_vif() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let mut c = d.client();
    let field = |c: &mut toolstack::client::Client, class: &str, uuid: &str, f: &str| {
        let r = c
            .call(&format!("{class}.get_by_uuid"), &[Value::str(uuid)])
            .unwrap();
        c.call(&format!("{class}.get_{f}"), &[r]).unwrap()
    };

    let vm = ok(
        &d,
        &[
            "vm-create",
            "name-label=guest",
            "memory=256",
            "VCPUs=2",
            "PV-kernel=/boot/vmlinuz",
            "PV-args=console=hvc0 quiet",
        ],
    );
    assert_eq!(
        field(&mut c, "VM", &vm, "memory_static_max"),
        Value::str((256u64 << 20).to_string())
    );
    assert_eq!(field(&mut c, "VM", &vm, "VCPUs_max"), Value::str("2"));
    assert_eq!(
        field(&mut c, "VM", &vm, "PV_kernel"),
        Value::str("/boot/vmlinuz")
    );
    assert_eq!(
        field(&mut c, "VM", &vm, "PV_args"),
        Value::str("console=hvc0 quiet")
    );

    let sr = ok(&d, &["sr-list", "--minimal"]);
    let sr = sr.split(',').next().unwrap();
    let vdi = ok(
        &d,
        &[
            "vdi-create",
            &format!("sr-uuid={sr}"),
            "name-label=disk",
            "virtual-size=1048576",
            "sm-config:path=/images/disk.img",
        ],
    );
    let sm = field(&mut c, "VDI", &vdi, "sm_config");
    assert_eq!(
        sm.as_struct().unwrap().get("path"),
        Some(&Value::str("/images/disk.img"))
    );
    let vbd = ok(
        &d,
        &[
            "vbd-create",
            &format!("vm-uuid={vm}"),
            &format!("vdi-uuid={vdi}"),
            "device=0",
            "other-config:backend-kind=vbd",
        ],
    );
    let oc = field(&mut c, "VBD", &vbd, "other_config");
    assert_eq!(
        oc.as_struct().unwrap().get("backend-kind"),
        Some(&Value::str("vbd"))
    );
    let net = ok(&d, &["network-create", "name-label=guests"]);
    ok(
        &d,
        &[
            "vif-create",
            &format!("vm-uuid={vm}"),
            &format!("network-uuid={net}"),
            "device=0",
            "mac=00:16:3e:00:00:42",
        ],
    );

    // A VM made by vm-create starts.
    let empty = ok(&d, &["vm-create", "name-label=diskless", "memory=64"]);
    assert!(!empty.is_empty());
    ok(&d, &["vm-start", "vm=diskless"]);
    let domid = field(&mut c, "VM", &empty, "domid");
    assert_ne!(domid, Value::str("-1"));

    // Errors: a missing parameter, an unknown object.
    let o = xe(&d, &["vm-create", "name-label=x"]);
    assert!(
        !o.ok && o.stderr.contains("memory is required"),
        "{}",
        o.stderr
    );
    let o = xe(&d, &["vm-create", "name-label=x", "memory=lots"]);
    assert!(!o.ok && o.stderr.contains("MiB"), "{}", o.stderr);
    let o = xe(
        &d,
        &[
            "vbd-create",
            "vm-uuid=00000000-0000-0000-0000-000000000000",
            &format!("vdi-uuid={vdi}"),
            "device=1",
        ],
    );
    assert!(!o.ok && o.stderr.contains("UUID_INVALID"), "{}", o.stderr);
    let o = xe(
        &d,
        &[
            "vif-create",
            &format!("vm-uuid={vm}"),
            &format!("network-uuid={net}"),
            "device=0",
        ],
    );
    assert!(
        !o.ok && o.stderr.contains("DEVICE_ALREADY_EXISTS"),
        "{}",
        o.stderr
    );
}
