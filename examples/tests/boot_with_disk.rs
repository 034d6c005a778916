//! The boot-with-disk example: a domain built by xenctrl, its disk served by blkback, the
//! guest's blocks on dom0's image, and the host as it was afterwards.

use std::process::Command;

use xen_types::DomId;
use xenbus::XenbusState;

#[test]
fn the_guest_writes_its_disk_and_the_host_is_left_as_it_was() {
    let host = xen_sim::Host::default();
    let xen = xenctrl::Xen::sim(host.clone());
    let mut out = Vec::new();
    let r = examples::boot_with_disk::run(&host, 4, 24, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_ne!(r.domid, DomId::DOM0, "{text}");
    assert_eq!(r.sectors, 4 << 11, "{text}");
    assert_eq!(r.blocks_read_back, 24, "{text}");
    assert_eq!(r.blocks_in_image, 24, "{text}");
    assert_eq!(r.backend_state, XenbusState::Closed, "{text}");
    assert!(
        r.free_running.0 + 8192 <= r.free_before.0,
        "32 MiB in use: {r:?}"
    );
    assert_eq!(r.free_after, r.free_before, "{text}");
    assert_eq!(xen.list_domains().unwrap().len(), 1, "only dom0 is left");
}

#[test]
fn the_binary_runs_on_the_simulated_host() {
    let o = Command::new(env!("CARGO_BIN_EXE_boot-with-disk"))
        .args(["--blocks", "5"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(text.contains("read 5 back equal"), "{text}");
    assert!(text.contains("dom0: 5 of 5 blocks"), "{text}");
}
