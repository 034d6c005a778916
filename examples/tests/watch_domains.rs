//! The xenstore watch example sees every domain come and go, and the guests' permissions are
//! the ones libxl gives.

use std::process::Command;

#[test]
fn the_monitor_sees_each_domain_come_and_go() {
    let xen = xenctrl::Xen::sim(xen_sim::Host::default());
    let mut out = Vec::new();
    let seen = examples::watch_domains::run(&xen, 4, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(seen.appeared.len(), 4, "{text}");
    assert_eq!(seen.gone, seen.appeared, "{text}");
    assert_eq!(seen.guest_wrote_data, seen.appeared);
    assert_eq!(seen.guest_refused_name, seen.appeared, "{text}");
    assert_eq!(xen.list_domains().unwrap().len(), 1, "only dom0 is left");
}

#[test]
fn the_binary_runs_on_the_simulated_host() {
    let o = Command::new(env!("CARGO_BIN_EXE_watch-domains"))
        .args(["--count", "2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(text.matches("appeared").count(), 2, "{text}");
    assert_eq!(text.matches("is gone").count(), 2, "{text}");
}
