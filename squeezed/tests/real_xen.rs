//! squeezed's host I/O against a real Xen, run inside a dom0 by `cargo xtask e2e` with the
//! dom0 xenstored already running.

use std::sync::Arc;
use std::time::Duration;

use squeezed::{Config, DomId, Error, HostIo, Kib, Pages, RealTime, Squeezed, XenHost};
use xenbus::{Store, XsStore};
use xenctrl::{DomainConfig, Xen};

/// Reports that this test cannot run here, and why: `cargo xtask e2e` shows it as SKIP (and
/// fails the run unless the test is on its allow-list). Return right after calling it.
fn skip(reason: &str) {
    println!("E2E-SKIP {reason}");
}

fn store() -> Option<Arc<XsStore>> {
    XsStore::connect()
        .or_else(|_| {
            xenstore::Client::connect_socket("/run/xenstored/socket")
                .map_err(|e| xenbus::Error::Driver(e.to_string()))
                .and_then(XsStore::new)
        })
        .ok()
        .map(Arc::new)
}

/// A created (not built) domain holding 64 MiB, with the `memory/*` keys a toolstack
/// writes: dynamic range 32–64 MiB, target 64 MiB. Destroyed and its keys removed on drop.
struct Guest<'a> {
    xen: &'a Xen,
    store: Arc<XsStore>,
    dom: DomId,
}

impl Drop for Guest<'_> {
    fn drop(&mut self) {
        let _ = self.xen.destroy(self.dom);
        let _ = self.store.rm(&format!("/local/domain/{}", self.dom.0));
    }
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn xen_host_reads_dom0_and_a_guest_and_sets_targets_and_maxmem() {
    let xen = Arc::new(Xen::real().expect("open libxenctrl in dom0"));
    let Some(xs) = store() else {
        skip("no xenstored connection in dom0");
        return;
    };
    let dom = xen.create_domain(&DomainConfig::pv(1)).unwrap();
    let g = Guest {
        xen: &xen,
        store: xs.clone(),
        dom,
    };
    xen.set_max_vcpus(dom, 1).unwrap();
    xen.set_max_mem(dom, Pages::from_mib(64)).unwrap();
    xen.increase_reservation(dom, Pages::from_mib(64)).unwrap();
    let mem = format!("/local/domain/{}/memory", dom.0);
    for (k, v) in [
        ("dynamic-min", 32 << 10),
        ("dynamic-max", 64 << 10),
        ("target", 64 << 10),
    ] {
        xs.write(&format!("{mem}/{k}"), &v.to_string()).unwrap();
    }
    let store: Arc<dyn Store> = xs.clone();
    let mut io = XenHost::new(xen.clone(), store, RealTime::default(), Kib(4));

    let state = io.host_state().unwrap();
    let free = xen.physinfo().unwrap();
    assert_eq!(
        state.free,
        Kib::from(Pages(free.free_pages.0 - free.outstanding_pages.0))
    );
    let d = state
        .domains
        .iter()
        .find(|d| d.domid == dom)
        .expect("the guest is managed");
    assert_eq!(
        (d.dynamic_min, d.dynamic_max, d.target, d.actual),
        (Kib(32 << 10), Kib(64 << 10), Kib(64 << 10), Kib(64 << 10))
    );
    // No balloon driver in an empty domain.
    assert!(!d.can_balloon);
    // dom0 is managed only if the toolstack wrote all three keys; what is there is read.
    let d0_target = xs.read("/local/domain/0/memory/target").unwrap();
    if let Some(d0) = state.domains.iter().find(|d| d.domid == DomId::DOM0) {
        assert_eq!(Some(d0.target.0.to_string()), d0_target);
        assert!(d0.actual > Kib(0));
    }
    println!(
        "dom0 memory/target: {d0_target:?}; {} managed domains; left out: {:?}",
        state.domains.len(),
        io.left_out()
    );

    // Targets go to xenstore, maxmem to Xen (rounded up to pages).
    io.set_maxmem(dom, Kib((48 << 10) + 1)).unwrap();
    assert_eq!(
        xen.domain_info(dom).unwrap().max_pages,
        Pages::from_mib(48) + Pages(1)
    );
    io.set_target(dom, Kib(48 << 10)).unwrap();
    assert_eq!(
        xs.read(&format!("{mem}/target")).unwrap().as_deref(),
        Some("49152")
    );
    io.set_uncooperative(dom, true).unwrap();
    assert_eq!(
        xs.read(&format!("{mem}/uncooperative")).unwrap().as_deref(),
        Some("1")
    );
    io.set_uncooperative(dom, false).unwrap();
    assert_eq!(xs.read(&format!("{mem}/uncooperative")).unwrap(), None);

    // squeezed over the real host: asking for what is already free returns at once (when
    // every balloon domain is at its target).
    let settled = state
        .domains
        .iter()
        .filter(|d| d.can_balloon)
        .all(|d| d.has_hit(d.target));
    let mut sq = Squeezed::new(
        io,
        Config {
            poll_interval: Duration::from_millis(100),
            ..Config::default()
        },
    );
    if settled {
        let r = sq.reserve_memory(Kib(4 << 10)).unwrap();
        assert_eq!(sq.reserved(), Kib(4 << 10));
        sq.delete_reservation(r).unwrap();
    } else {
        println!("a balloon domain is off its target: reservation not tried");
    }
    drop(g);
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn a_paused_domain_asked_to_free_memory_is_given_up_on_with_a_reason() {
    let xen = Arc::new(Xen::real().expect("open libxenctrl in dom0"));
    let Some(xs) = store() else {
        skip("no xenstored connection in dom0");
        return;
    };
    // A domain that says it balloons but never runs (created paused): its pages never move.
    let dom = xen.create_domain(&DomainConfig::pv(1)).unwrap();
    let g = Guest {
        xen: &xen,
        store: xs.clone(),
        dom,
    };
    xen.set_max_vcpus(dom, 1).unwrap();
    xen.set_max_mem(dom, Pages::from_mib(64)).unwrap();
    xen.increase_reservation(dom, Pages::from_mib(64)).unwrap();
    let home = format!("/local/domain/{}", dom.0);
    for (k, v) in [
        ("memory/dynamic-min", (32 << 10).to_string()),
        ("memory/dynamic-max", (64 << 10).to_string()),
        ("memory/target", (64 << 10).to_string()),
        ("control/feature-balloon", "1".to_string()),
    ] {
        xs.write(&format!("{home}/{k}"), &v).unwrap();
    }
    let store: Arc<dyn Store> = xs.clone();
    let io = XenHost::new(xen.clone(), store, RealTime::default(), Kib(4));
    let mut sq = Squeezed::new(
        io,
        Config {
            poll_interval: Duration::from_millis(200),
            ..Config::default()
        },
    );
    // 16 MiB more than is free: only this domain can give it.
    let p = xen.physinfo().unwrap();
    let required = Kib::from(Pages(p.free_pages.0 - p.outstanding_pages.0)) + Kib(16 << 10);
    let t0 = std::time::Instant::now();
    let e = sq
        .change_host_free_memory(required, |f| f >= required)
        .unwrap_err();
    println!("after {:.1} s: {e}", t0.elapsed().as_secs_f64());
    match e {
        Error::DomainsRefused { given_up, .. } => {
            let mine = given_up
                .iter()
                .find(|g| g.domid == dom)
                .unwrap_or_else(|| panic!("domain {dom} not given up on: {given_up:?}"));
            assert!(mine.reason.contains("no progress"), "{}", mine.reason);
        }
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() >= squeezed::INACTIVE_AFTER);
    // It was asked to go down, and its maxmem follows, so it cannot take more back.
    let target: u64 = xs
        .read(&format!("{home}/memory/target"))
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    assert!((32 << 10..64 << 10).contains(&target), "{target}");
    let max = xen.domain_info(dom).unwrap().max_pages;
    assert!(
        max <= Pages::from_mib(64) && Kib::from(max) >= Kib(target),
        "{max}"
    );
    drop(g);
}
