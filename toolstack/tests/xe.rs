//! `xe` against a running daemon: command shapes, record layout, filters, errors.

#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;

use std::process::Command;

use common::xe::{ok_raw as ok, raw as xe};
use common::{Daemon, PASSWORD};
use toolstack::value::Value;

fn record(pairs: &[(&str, &str)]) -> Value {
    Value::Struct(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::str(*v)))
            .collect(),
    )
}

#[test]
fn xe_commands() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let mut c = d.client();
    let vm = c
        .call(
            "VM.create",
            &[record(&[
                ("name_label", "web"),
                ("memory_static_max", "536870912"),
                ("memory_dynamic_max", "536870912"),
                ("memory_dynamic_min", "536870912"),
                ("VCPUs_max", "1"),
                ("VCPUs_at_startup", "1"),
            ])],
        )
        .unwrap();
    let vm_uuid = c
        .call("VM.get_uuid", &[vm.clone()])
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();

    // The record layout, exactly.
    let out = ok(&d, &["vm-list", "name-label=web"]);
    assert_eq!(
        out,
        format!(
            "uuid ( RO)           : {vm_uuid}\n     name-label ( RW): web\n    power-state ( RO): halted\n\n\n"
        )
    );
    assert_eq!(
        ok(&d, &["vm-list", "name-label=web", "--minimal"]),
        format!("{vm_uuid}\n")
    );
    assert_eq!(
        ok(&d, &["vm-list", "name-label=nothing", "--minimal"]),
        "\n"
    );
    let out = ok(
        &d,
        &[
            "vm-list",
            "uuid=".to_owned().as_str(),
            "params=name-label,VCPUs-max",
        ],
    );
    assert_eq!(out, "");
    let out = ok(
        &d,
        &[
            "vm-list",
            &format!("uuid={vm_uuid}"),
            "params=name-label,VCPUs-max",
        ],
    );
    assert_eq!(
        out,
        "name-label ( RW)    : web\n     VCPUs-max ( RW): 1\n\n\n"
    );
    let all = ok(&d, &["vm-list", "name-label=web", "params=all"]);
    for needle in [
        "memory-static-max ( RW): 536870912",
        "other-config (MRW): ",
        "is-control-domain ( RO): false",
        "resident-on ( RO): <not in database>",
    ] {
        assert!(all.contains(needle), "{needle:?} missing from\n{all}");
    }
    let dom0 = ok(
        &d,
        &[
            "vm-list",
            "is-control-domain=true",
            "params=name-label,power-state",
        ],
    );
    assert!(
        dom0.contains("Control domain on host: xen-sim") && dom0.contains("running"),
        "{dom0}"
    );

    // Lifecycle.
    ok(&d, &["vm-start", "vm=web"]);
    assert_eq!(
        c.call("VM.get_power_state", &[vm.clone()]).unwrap(),
        Value::str("Running")
    );
    // A shown reference parameter is resolved through the other class's records (the
    // list fetches them only when a shown or filtered parameter needs them).
    let hosts = c.call("host.get_all", &[]).unwrap();
    let host = hosts.as_array().unwrap()[0].clone();
    let host_uuid = c.call("host.get_uuid", &[host]).unwrap();
    assert_eq!(
        ok(
            &d,
            &[
                "vm-list",
                "name-label=web",
                "params=resident-on",
                "--minimal"
            ]
        ),
        format!("{}\n", host_uuid.as_str().unwrap())
    );
    assert_eq!(
        ok(
            &d,
            &[
                "vm-list",
                &format!("resident-on={}", host_uuid.as_str().unwrap()),
                "name-label=web",
                "--minimal"
            ]
        ),
        format!("{vm_uuid}\n")
    );
    assert_eq!(
        ok(
            &d,
            &[
                "vm-list",
                "power-state=running",
                "name-label=web",
                "--minimal"
            ]
        ),
        format!("{vm_uuid}\n")
    );
    let o = xe(&d, &["vm-start", &format!("uuid={vm_uuid}")]);
    assert!(
        !o.ok && o.stderr.contains("Error code: VM_BAD_POWER_STATE"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("halted, running"), "{}", o.stderr);
    ok(&d, &["vm-shutdown", &format!("uuid={vm_uuid}")]);
    assert_eq!(
        c.call("VM.get_power_state", &[vm.clone()]).unwrap(),
        Value::str("Halted")
    );
    // Suspend and resume (the simulated guest needs a kernel to be saved).
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(&kernel, xen_sim::domain::sample_kernel(4 << 20)).unwrap();
    c.call(
        "VM.set_PV_kernel",
        &[vm.clone(), Value::str(kernel.to_str().unwrap())],
    )
    .unwrap();
    ok(&d, &["vm-start", "vm=web"]);
    let domid = c.call("VM.get_domid", &[vm.clone()]).unwrap();
    ok(&d, &["vm-suspend", "vm=web"]);
    assert_eq!(
        c.call("VM.get_power_state", &[vm.clone()]).unwrap(),
        Value::str("Suspended")
    );
    // The image is in a suspend VDI the VM names (xe shows it by uuid).
    let sv = ok(
        &d,
        &[
            "vm-list",
            "name-label=web",
            "params=suspend-VDI",
            "--minimal",
        ],
    );
    let sv = sv.trim().to_owned();
    assert_eq!(sv.len(), 36, "{sv:?}");
    assert_eq!(
        ok(
            &d,
            &[
                "vdi-list",
                &format!("uuid={sv}"),
                "params=type",
                "--minimal"
            ]
        ),
        "suspend\n"
    );
    let o = xe(&d, &["vm-suspend", "vm=web"]);
    assert!(
        !o.ok && o.stderr.contains("Error code: VM_BAD_POWER_STATE"),
        "{}",
        o.stderr
    );
    ok(&d, &["vm-resume", "vm=web"]);
    assert_eq!(
        ok(
            &d,
            &[
                "vm-list",
                "name-label=web",
                "params=suspend-VDI",
                "--minimal"
            ]
        ),
        "<not in database>\n"
    );
    assert_eq!(
        ok(&d, &["vdi-list", &format!("uuid={sv}"), "--minimal"]),
        "\n"
    );
    assert_eq!(
        c.call("VM.get_power_state", &[vm.clone()]).unwrap(),
        Value::str("Running")
    );
    assert_ne!(c.call("VM.get_domid", &[vm.clone()]).unwrap(), domid);
    ok(&d, &["vm-shutdown", "vm=web", "--force"]);
    let o = xe(&d, &["vm-start", "vm=nonexistent"]);
    assert!(
        !o.ok && o.stderr.contains("No matching VMs"),
        "{}",
        o.stderr
    );

    // Every listed class.
    let hosts = ok(&d, &["host-list"]);
    assert!(
        hosts.contains("name-label ( RW): xen-sim") && hosts.contains("name-description ( RW): "),
        "{hosts}"
    );
    let srs = ok(&d, &["sr-list"]);
    assert!(
        srs.contains("name-label ( RW): Local storage") && srs.contains("host ( RO): xen-sim"),
        "{srs}"
    );
    let pifs = ok(&d, &["pif-list", "params=uuid", "--minimal"]);
    assert_eq!(pifs.trim().split(',').count(), 3, "{pifs}");
    let nets = ok(&d, &["network-list", "bridge=xenbr0"]);
    assert!(
        nets.contains("Pool-wide network associated with eth0"),
        "{nets}"
    );
    let pgpus = ok(&d, &["pgpu-list"]);
    assert!(
        pgpus.contains("vendor-name ( RO): NVIDIA Corporation"),
        "{pgpus}"
    );
    let groups = ok(&d, &["gpu-group-list"]);
    assert!(groups.contains("Group of NVIDIA Corporation"), "{groups}");
    let types = ok(&d, &["vgpu-type-list"]);
    assert!(types.contains("model-name ( RO): passthrough"), "{types}");

    // Devices.
    let net_uuid = ok(&d, &["network-create", "name-label=xe-net"])
        .trim()
        .to_owned();
    let net = c
        .call("network.get_by_uuid", &[Value::String(net_uuid.clone())])
        .unwrap();
    c.call(
        "VIF.create",
        &[Value::Struct(
            [
                ("VM", vm.clone()),
                ("network", net.clone()),
                ("device", Value::str("0")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        )],
    )
    .unwrap();
    let vifs = ok(&d, &["vif-list", &format!("vm-uuid={vm_uuid}")]);
    assert!(
        vifs.contains(&format!("network-uuid ( RO): {net_uuid}"))
            && vifs.contains("device ( RO): 0"),
        "{vifs}"
    );
    let sr = c
        .call("SR.get_by_name_label", &[Value::str("Local storage")])
        .unwrap();
    let sr = sr.as_array().unwrap()[0].clone();
    let vdi = c
        .call(
            "VDI.create",
            &[Value::Struct(
                [
                    ("SR", sr),
                    ("name_label", Value::str("disk0")),
                    ("virtual_size", Value::str("1073741824")),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            )],
        )
        .unwrap();
    c.call(
        "VBD.create",
        &[Value::Struct(
            [
                ("VM", vm.clone()),
                ("VDI", vdi),
                ("userdevice", Value::str("1")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        )],
    )
    .unwrap();
    let vdis = ok(&d, &["vdi-list", "name-label=disk0"]);
    assert!(
        vdis.contains("virtual-size ( RO): 1073741824") && vdis.contains("sr-uuid ( RO): "),
        "{vdis}"
    );
    let vbds = ok(&d, &["vbd-list", "vm-name-label=web"]);
    assert!(
        vbds.contains("device ( RO): xvdb") && vbds.contains("vm-name-label ( RO): web"),
        "{vbds}"
    );

    // Bonds.
    let pif_uuids: Vec<String> = ok(&d, &["pif-list", "management=false", "--minimal"])
        .trim()
        .split(',')
        .map(str::to_owned)
        .collect();
    assert_eq!(pif_uuids.len(), 2);
    let bnet = ok(&d, &["network-create", "name-label=bond-net"])
        .trim()
        .to_owned();
    let bond_uuid = ok(
        &d,
        &[
            "bond-create",
            &format!("network-uuid={bnet}"),
            &format!("pif-uuids={}", pif_uuids.join(",")),
            "mode=lacp",
        ],
    )
    .trim()
    .to_owned();
    let bonds = ok(&d, &["bond-list", "params=uuid,slaves,mode"]);
    // `Bond.set_mode` is an explicit message of the datamodel (ocaml/idl/datamodel.ml), so xe
    // shows the field RW.
    assert!(
        bonds.contains(&bond_uuid) && bonds.contains("mode ( RW): lacp"),
        "{bonds}"
    );
    for p in &pif_uuids {
        assert!(bonds.contains(p.as_str()), "{bonds}");
    }
    let o = xe(
        &d,
        &[
            "bond-create",
            &format!("network-uuid={net_uuid}"),
            &format!("pif-uuids={}", pif_uuids.join(",")),
        ],
    );
    assert!(
        !o.ok && o.stderr.contains("PIF_ALREADY_BONDED"),
        "{}",
        o.stderr
    );

    // Errors.
    let o = Command::new(env!("CARGO_BIN_EXE_xe"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["-u", "root", "-pw", "wrong", "vm-list"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("SESSION_AUTHENTICATION_FAILED"));
    let o = xe(&d, &["frob-list"]);
    assert!(
        !o.ok && o.stderr.contains("Unknown command"),
        "{}",
        o.stderr
    );

    // Over the network too: plain HTTP and HTTPS.
    let o = Command::new(env!("CARGO_BIN_EXE_xe"))
        .args([
            "-s",
            "127.0.0.1",
            "-p",
            &d.https.to_string(),
            "--cafile",
            dir.path().join("xapi-ssl.pem").to_str().unwrap(),
            "-pw",
            PASSWORD,
            "host-list",
            "--minimal",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o2 = Command::new(env!("CARGO_BIN_EXE_xe"))
        .args([
            "-s",
            "127.0.0.1",
            "-p",
            &d.http.to_string(),
            "--nossl",
            "-pw",
            PASSWORD,
            "host-list",
            "--minimal",
        ])
        .output()
        .unwrap();
    assert_eq!(o.stdout, o2.stdout);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim().len(), 36);
}
