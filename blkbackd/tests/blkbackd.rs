//! The `blkbackd` program off Xen: it must fail at once with a message that says why, not
//! hang or panic (on a dom0 it is exercised by `cargo xtask e2e`, serving a Linux guest).

use std::process::Command;

#[test]
fn off_xen_blkbackd_exits_with_a_clear_error() {
    if std::path::Path::new("/dev/xen/gntdev").exists() {
        eprintln!("skipped: this is a Xen domain");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_blkbackd"))
        .args(["--domid", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/dev/xen/gntdev") && err.contains("not running in a Xen dom0"),
        "{err}"
    );
}

#[test]
fn blkbackd_rejects_bad_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_blkbackd"))
        .args(["--domid", "70000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--domid"));
}
