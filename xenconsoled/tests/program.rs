//! The `xenconsoled` program off Xen: a clear error, not a hang (on a dom0 it is exercised
//! by `cargo xtask e2e`); its options are the C daemon's.

use std::process::Command;

#[test]
fn off_xen_it_exits_with_a_clear_error() {
    if std::path::Path::new("/dev/xen/privcmd").exists() {
        println!("SKIP: this is a Xen domain");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_xenconsoled"))
        .args(["-i", "--log=all", "--timestamp=all", "--overflow-data=keep"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("contacting the hypervisor") && err.contains("not a Xen dom0"),
        "{err}"
    );
}

#[test]
fn unknown_option_values_are_refused() {
    for bad in ["--log=some", "--timestamp=guests", "--overflow-data=drop"] {
        let out = Command::new(env!("CARGO_BIN_EXE_xenconsoled"))
            .args(["-i", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}: clap's usage error");
        let opt = bad.split('=').next().unwrap();
        assert!(String::from_utf8_lossy(&out.stderr).contains(opt), "{bad}");
    }
}
