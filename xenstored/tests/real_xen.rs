//! Tests against a real Xen, run inside a dom0 by `cargo xtask e2e` with the dom0 daemon
//! (ours by default) already running.

use std::time::{Duration, Instant};

use xen_types::{Errno, EvtchnPort, Pfn};
use xenctrl::{DomainConfig, Pages, ShutdownReason, Xen};
use xenstore::{Access, Client, Error, Perm};

const WAIT: Duration = Duration::from_secs(30);

/// Reports that this test cannot run here, and why: `cargo xtask e2e` shows it as SKIP (and
/// fails the run unless the test is on its allow-list). Return right after calling it.
fn skip(reason: &str) {
    println!("E2E-SKIP {reason}");
}

fn dom0_socket() -> Client {
    Client::connect()
        .or_else(|_| Client::connect_socket("/run/xenstored/socket"))
        .expect("connect to the dom0 xenstored socket")
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn release_event(xs: &Client, what: &str) {
    let e = xs
        .next_event_timeout(WAIT)
        .unwrap()
        .unwrap_or_else(|| panic!("no @releaseDomain event for {what}"));
    assert_eq!(
        (e.path.as_str(), e.token.as_str()),
        ("@releaseDomain", "rel")
    );
}

/// Dom0's kernel xenbus (`/dev/xen/xenbus`) talks to xenstored over the ring of
/// `/proc/xen/xsd_kva`: what it writes is seen on the socket and the other way round.
#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn dom0_kernel_ring_is_served() {
    let kernel = Client::open_xenbus().expect("open /dev/xen/xenbus");
    let xs = dom0_socket();
    let path = format!("/e2e-xenstored/ring-{}", std::process::id());
    kernel.write(&path, "via-kernel").unwrap();
    assert_eq!(xs.read(&path).unwrap(), b"via-kernel");
    xs.write(&path, "via-socket").unwrap();
    assert_eq!(kernel.read(&path).unwrap(), b"via-socket");
    // The kernel's connection is dom0's: privileged.
    assert_eq!(kernel.read("/local/domain/0/name").unwrap(), b"Domain-0");
    xs.rm("/e2e-xenstored").unwrap();
    assert!(matches!(kernel.read(&path), Err(Error::Xs(Errno::ENOENT))));
}

/// A domain's shutdown fires `@releaseDomain`; its destruction releases it (nodes removed,
/// no longer introduced), learnt from `VIRQ_DOM_EXC` without any `RELEASE`.
#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn dying_domains_are_released_without_release() {
    // C xenstored refuses to introduce a domain without a ring (it maps it first), and has
    // no `stats` control command: this test is for ours (`--xenstored ours`, the default).
    if dom0_socket().control(&["stats"]).is_err() {
        return skip("dom0 runs C xenstored: this test needs ours");
    }
    let x = Xen::real().expect("open libxenctrl in dom0");
    let dom = x.create_domain(&DomainConfig::pv(1)).unwrap();
    x.set_max_vcpus(dom, 1).unwrap();
    x.set_max_mem(dom, Pages::from_mib(4)).unwrap();
    let xs = dom0_socket();
    let home = format!("/local/domain/{}", dom.0);
    xs.write(&format!("{home}/name"), "e2e-release").unwrap();
    for p in [home.clone(), format!("{home}/name")] {
        xs.set_perms(&p, &[Perm::new(dom, Access::None)]).unwrap();
    }
    // No ring exists for this empty domain: ours records it all the same.
    xs.introduce(dom, Pfn(0), EvtchnPort(1)).unwrap();
    assert!(xs.is_domain_introduced(dom).unwrap());
    xs.watch("@releaseDomain", "rel").unwrap();
    release_event(&xs, "the watch itself");

    x.shutdown(dom, ShutdownReason::Poweroff).unwrap();
    release_event(&xs, "the shutdown");
    assert!(xs.is_domain_introduced(dom).unwrap());
    assert_eq!(xs.read(&format!("{home}/name")).unwrap(), b"e2e-release");

    x.destroy(dom).unwrap();
    release_event(&xs, "the destruction");
    wait_for("the domain to be released", || {
        !xs.is_domain_introduced(dom).unwrap()
    });
    assert!(matches!(xs.read(&home), Err(Error::Xs(Errno::ENOENT))));
    wait_for("the domain to go", || x.domain_info(dom).is_err());
}
