//! `xapi --hypervisor auto` says which hypervisor it chose, and `host.software_version`
//! shows which one serves the host.

mod common;

use common::Daemon;
use toolstack::value::Value;

fn software_version(d: &Daemon) -> std::collections::BTreeMap<String, Value> {
    let mut c = d.client();
    let hosts = c.call("host.get_all", &[]).unwrap();
    let host = hosts.as_array().unwrap()[0].clone();
    c.call("host.get_software_version", &[host])
        .unwrap()
        .as_struct()
        .unwrap()
        .clone()
}

#[test]
fn auto_says_which_hypervisor_it_chose() {
    let dir = tempfile::tempdir().unwrap();
    let privcmd = std::path::Path::new(xenctrl::PRIVCMD).exists();
    if privcmd {
        // On a dom0 `auto` must use Xen or fail; the simulated choice is what is tested here.
        println!(
            "SKIP auto_says_which_hypervisor_it_chose: {} exists",
            xenctrl::PRIVCMD
        );
        return;
    }
    let d = Daemon::start_with(dir.path(), &["--hypervisor", "auto"]);
    assert_eq!(d.hypervisor, "xen-sim", "{:?}", d.banner);
    assert!(
        d.banner
            .iter()
            .any(|l| l.contains("hypervisor auto") && l.contains(xenctrl::PRIVCMD)),
        "the choice and its reason are printed: {:?}",
        d.banner
    );
    assert_eq!(
        software_version(&d).get("hypervisor"),
        Some(&Value::str("xen-sim"))
    );
}

#[test]
fn software_version_names_the_simulated_host() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(dir.path(), &["--hypervisor", "builtin"]);
    assert_eq!(d.hypervisor, "xen-sim");
    let sw = software_version(&d);
    assert_eq!(sw.get("hypervisor"), Some(&Value::str("xen-sim")));
    assert_eq!(sw.get("product_brand"), Some(&Value::str("xen-rs")));
}
