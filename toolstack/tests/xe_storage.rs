//! `xe` storage commands against a running daemon (simulated host) with a file SR in a temp
//! directory: sr-create, vdi-*, vm-snapshot/clone/copy, snapshot-revert, pbd-plug/unplug,
//! sr-scan/forget/destroy, and their refusals.

mod common;

use common::xe::{ok, xe};
use common::Daemon;

fn fails(d: &Daemon, args: &[&str], code: &str) {
    let o = xe(d, args);
    assert!(!o.ok, "xe {args:?} succeeded: {}", o.stdout);
    assert!(o.stderr.contains(code), "xe {args:?}: {}", o.stderr);
}

fn param(d: &Daemon, class: &str, uuid: &str, name: &str) -> String {
    ok(
        d,
        &[
            &format!("{class}-param-get"),
            &format!("uuid={uuid}"),
            &format!("param-name={name}"),
        ],
    )
}

#[test]
fn xe_drives_a_file_sr() {
    let state = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let d = Daemon::start(state.path());
    let loc = format!("device-config:location={}", store.path().display());
    let sr = ok(&d, &["sr-create", "name-label=files", "type=ext", &loc]);
    assert_eq!(param(&d, "sr", &sr, "type"), "ext");

    let vdi = ok(
        &d,
        &[
            "vdi-create",
            &format!("sr-uuid={sr}"),
            "name-label=root",
            "virtual-size=16777216",
        ],
    );
    assert!(store.path().join(format!("{vdi}.qcow2")).exists());
    ok(
        &d,
        &["vdi-resize", &format!("uuid={vdi}"), "disk-size=32MiB"],
    );
    assert_eq!(
        param(&d, "vdi", &vdi, "virtual-size"),
        (32u64 << 20).to_string()
    );
    fails(
        &d,
        &["vdi-resize", &format!("uuid={vdi}"), "disk-size=1MiB"],
        "VDI_TOO_SMALL",
    );

    let snap = ok(&d, &["vdi-snapshot", &format!("uuid={vdi}")]);
    assert_eq!(param(&d, "vdi", &snap, "is-a-snapshot"), "true");
    assert_eq!(param(&d, "vdi", &snap, "snapshot-of"), vdi);
    let clone = ok(
        &d,
        &["vdi-clone", &format!("uuid={snap}"), "new-name-label=clone"],
    );
    assert_eq!(param(&d, "vdi", &clone, "name-label"), "clone");
    let copy = ok(
        &d,
        &["vdi-copy", &format!("uuid={vdi}"), &format!("sr-uuid={sr}")],
    );
    assert_eq!(param(&d, "vdi", &copy, "is-a-snapshot"), "false");

    let vm = ok(&d, &["vm-create", "name-label=guest", "memory=256"]);
    ok(
        &d,
        &[
            "vbd-create",
            &format!("vm-uuid={vm}"),
            &format!("vdi-uuid={vdi}"),
            "device=0",
        ],
    );
    let vsnap = ok(&d, &["vm-snapshot", "vm=guest", "new-name-label=before"]);
    assert_eq!(param(&d, "vm", &vsnap, "is-a-snapshot"), "true");
    assert_eq!(param(&d, "vm", &vsnap, "snapshot-of"), vm);
    let vclone = ok(
        &d,
        &["vm-clone", &format!("uuid={vm}"), "new-name-label=twin"],
    );
    assert_eq!(param(&d, "vm", &vclone, "name-label"), "twin");
    let vcopy = ok(
        &d,
        &[
            "vm-copy",
            "vm=guest",
            "new-name-label=copy",
            &format!("sr-uuid={sr}"),
        ],
    );
    assert_eq!(param(&d, "vm", &vcopy, "is-a-snapshot"), "false");
    ok(&d, &["snapshot-revert", &format!("snapshot-uuid={vsnap}")]);
    // The VM's disk was replaced by a clone of the snapshot's.
    assert!(
        !xe(
            &d,
            &["vdi-param-get", &format!("uuid={vdi}"), "param-name=uuid"]
        )
        .ok
    );
    fails(
        &d,
        &["vm-snapshot", "vm=nosuch", "new-name-label=x"],
        "No matching VMs",
    );

    let pbd = ok(&d, &["pbd-list", &format!("sr-uuid={sr}"), "--minimal"]);
    fails(&d, &["sr-forget", &format!("uuid={sr}")], "SR_HAS_PBD");
    ok(&d, &["pbd-unplug", &format!("uuid={pbd}")]);
    fails(
        &d,
        &["vdi-snapshot", &format!("uuid={copy}")],
        "SR_HAS_NO_PBDS",
    );
    ok(&d, &["pbd-plug", &format!("uuid={pbd}")]);
    ok(&d, &["sr-scan", &format!("uuid={sr}")]);
    // xapi_sr_operations.ml: destroy needs the PBDs unplugged, then an empty SR.
    fails(&d, &["sr-destroy", &format!("uuid={sr}")], "SR_HAS_PBD");
    ok(&d, &["pbd-unplug", &format!("uuid={pbd}")]);
    fails(&d, &["sr-destroy", &format!("uuid={sr}")], "SR_NOT_EMPTY");
}

#[test]
fn the_local_sr_is_a_file_sr_in_the_state_dir() {
    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(state.path());
    let sr = ok(&d, &["sr-list", "name-label=Local storage", "--minimal"]);
    let pbd = ok(&d, &["pbd-list", &format!("sr-uuid={sr}"), "--minimal"]);
    let dir = state.path().join("sr");
    assert_eq!(
        ok(
            &d,
            &[
                "pbd-param-get",
                &format!("uuid={pbd}"),
                "param-name=device-config",
                "param-key=location"
            ]
        ),
        dir.display().to_string()
    );
    let vdi = ok(
        &d,
        &[
            "vdi-create",
            &format!("sr-uuid={sr}"),
            "name-label=local",
            "virtual-size=4194304",
        ],
    );
    assert!(dir.join(format!("{vdi}.qcow2")).exists());
    // A disk named by sm-config:path stays outside the SR, and a scan keeps its record.
    let ext = ok(
        &d,
        &[
            "vdi-create",
            &format!("sr-uuid={sr}"),
            "name-label=external",
            "virtual-size=4194304",
            "sm-config:path=/nonexistent/disk.img",
        ],
    );
    assert!(!dir.join(format!("{ext}.qcow2")).exists());
    ok(&d, &["sr-scan", &format!("uuid={sr}")]);
    assert_eq!(param(&d, "vdi", &ext, "name-label"), "external");
    assert_eq!(param(&d, "vdi", &vdi, "virtual-size"), "4194304");
}
