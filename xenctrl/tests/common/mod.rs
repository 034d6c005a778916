//! Rules of Xen 4.17 that the simulated host reproduces, written once against the control API
//! and run on both backends (`sim_backend.rs` here, `real_xen.rs` in a real dom0).

use std::time::{Duration, Instant};

use xen_types::Errno;
use xenctrl::{DomId, DomainConfig, Error, Pages, Pfn, ShutdownReason, VcpuId, Xen};

/// Waits until `cond` holds, failing the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks, on `x`, the errno of every rule the simulated host claims to share with Xen.
pub fn xen_rules(x: &Xen) {
    let a = x.create_domain(&DomainConfig::pv(2)).unwrap();
    // A requested id in use: EEXIST. The rover does not hand out an id in use.
    let mut again = DomainConfig::pv(1);
    again.domid = Some(a);
    assert!(matches!(
        x.create_domain(&again),
        Err(Error::DomainExists { .. })
    ));
    let b = x.create_domain(&DomainConfig::pv(1)).unwrap();
    assert_ne!(a, b);
    // Bad creation arguments: EINVAL.
    assert!(matches!(
        x.create_domain(&DomainConfig::pv(0)),
        Err(Error::InvalidArgument { .. })
    ));
    // vCPUs: before max_vcpus none exist (ESRCH), past the maximum EINVAL, and the count
    // must be the creation-time one.
    assert!(matches!(
        x.vcpu_info(a, VcpuId(0)),
        Err(Error::NoSuchDomain { .. })
    ));
    assert!(matches!(
        x.vcpu_info(a, VcpuId(2)),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        x.set_max_vcpus(a, 3),
        Err(Error::InvalidArgument { .. })
    ));
    x.set_max_vcpus(a, 2).unwrap();
    let v = x.vcpu_info(a, VcpuId(1)).unwrap();
    assert!(!v.online && !v.running);
    // Memory: past max_pages is ENOMEM and allocates nothing; freeing a frame that is not
    // populated is EINVAL.
    x.set_max_mem(a, Pages::from_mib(1)).unwrap();
    assert!(matches!(
        x.increase_reservation(a, Pages::from_mib(2)),
        Err(Error::OutOfMemory { .. })
    ));
    assert!(x.domain_info(a).unwrap().tot_pages <= Pages::from_mib(1));
    assert!(matches!(
        x.decrease_reservation(a, &[Pfn(0x7_0000)]),
        Err(Error::InvalidArgument { .. })
    ));
    // Pause is counted from 1 (created paused), up to 255, then EOVERFLOW.
    for _ in 1..255 {
        x.pause(a).unwrap();
    }
    assert_eq!(x.pause(a).unwrap_err().errno(), Some(Errno::EOVERFLOW));
    for _ in 0..255 {
        x.unpause(a).unwrap();
    }
    assert!(!x.domain_info(a).unwrap().paused());
    assert!(matches!(x.unpause(a), Err(Error::InvalidArgument { .. })));
    // The caller (dom0) cannot pause or destroy itself.
    assert!(matches!(
        x.pause(DomId::DOM0),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        x.destroy(DomId::DOM0),
        Err(Error::InvalidArgument { .. })
    ));
    // The first shutdown reason sticks.
    x.shutdown(b, ShutdownReason::Crash).unwrap();
    x.shutdown(b, ShutdownReason::Reboot).unwrap();
    wait_for("b to shut down", Duration::from_secs(10), || {
        x.domain_info(b).unwrap().is_shutdown()
    });
    assert_eq!(
        x.domain_info(b).unwrap().shutdown_reason,
        Some(ShutdownReason::Crash)
    );
    // Unknown domains: ESRCH.
    for d in [a, b] {
        x.destroy(d).unwrap();
        wait_for("the domain to go", Duration::from_secs(30), || {
            matches!(x.domain_info(d), Err(Error::NoSuchDomain { .. }))
        });
        assert!(matches!(x.pause(d), Err(Error::NoSuchDomain { .. })));
        assert!(matches!(x.destroy(d), Err(Error::NoSuchDomain { .. })));
        assert!(matches!(
            x.shutdown(d, ShutdownReason::Poweroff),
            Err(Error::NoSuchDomain { .. })
        ));
    }
}
