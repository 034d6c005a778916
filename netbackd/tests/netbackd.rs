//! The `netbackd` program off Xen and with bad arguments: it must fail at once with a
//! message that says why, not hang or panic.

use std::process::Command;

fn netbackd(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_netbackd"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn off_xen_netbackd_exits_with_a_clear_error() {
    if std::path::Path::new("/dev/xen/gntdev").exists() {
        eprintln!("SKIP: this is a Xen domain");
        return;
    }
    let (code, err) = netbackd(&["--domid", "5"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("/dev/xen/gntdev") && err.contains("not running in a Xen dom0"),
        "{err}"
    );
}

#[test]
fn netbackd_rejects_bad_configuration_before_touching_xen() {
    let (code, err) = netbackd(&["--max-queues", "0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--max-queues 0 is out of range"), "{err}");
    let (code, err) = netbackd(&["--domid", "0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("backend's own domain"), "{err}");
}

#[test]
fn netbackd_rejects_bad_arguments() {
    let (code, err) = netbackd(&["--domid", "70000"]);
    assert_eq!(code, Some(2), "clap's usage error");
    assert!(err.contains("--domid"), "{err}");
    let (code, err) = netbackd(&["--no-such-flag"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--no-such-flag"), "{err}");
}
