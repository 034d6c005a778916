//! The simulated guests' balloon drivers follow `memory/target` through their own xenstore
//! connections, on the simulated host's manual clock.

use std::sync::Arc;
use std::time::Duration;

use xen_sim::balloon::BalloonBehaviour;
use xen_sim::domain::small_pv_guest;
use xen_sim::{Clock, Host, HostConfig};
use xen_types::{DomId, Pages};
use xenbus::testing::{SimBalloons, TestXenstore};
use xenbus::Store;

#[test]
fn a_driver_announces_itself_and_follows_its_target() {
    let host = Host::new(HostConfig {
        clock: Clock::manual(),
        ..HostConfig::default()
    });
    let dom = host.create_domain(DomId(0), &small_pv_guest(63)).unwrap();
    host.set_max_mem_kb(dom, 64 << 10).unwrap();
    host.increase_reservation(dom, Pages::from_mib(64)).unwrap();
    host.unpause(dom).unwrap();
    let xs = TestXenstore::start().unwrap();
    let guest: Arc<dyn Store> = xs.guest(dom).unwrap();
    let balloons = SimBalloons::new(host.clone());
    balloons
        .load(
            dom,
            guest,
            BalloonBehaviour::Ideal { rate_kib: 8 << 10 },
            Pages::ZERO,
        )
        .unwrap();
    let home = format!("/local/domain/{}", dom.0);
    assert_eq!(
        xs.dom0()
            .read(&format!("{home}/control/feature-balloon"))
            .unwrap()
            .as_deref(),
        Some("1")
    );
    // No target yet: the driver stays where it is.
    balloons.tick(Duration::from_secs(1)).unwrap();
    assert_eq!(
        host.balloon_status(dom).unwrap().current,
        Pages::from_mib(64)
    );
    // A garbage target is ignored, as Linux ignores it.
    xs.dom0()
        .write(&format!("{home}/memory/target"), "lots")
        .unwrap();
    balloons.tick(Duration::from_secs(1)).unwrap();
    assert_eq!(
        host.balloon_status(dom).unwrap().current,
        Pages::from_mib(64)
    );
    // 48 MiB at 8 MiB/s: two seconds.
    xs.dom0()
        .write(&format!("{home}/memory/target"), "49152")
        .unwrap();
    balloons.tick(Duration::from_secs(1)).unwrap();
    assert_eq!(
        host.balloon_status(dom).unwrap().current,
        Pages::from_mib(56)
    );
    balloons.tick(Duration::from_secs(5)).unwrap();
    assert_eq!(
        host.balloon_status(dom).unwrap().current,
        Pages::from_mib(48)
    );
    assert_eq!(
        host.balloon_status(dom).unwrap().target,
        Pages::from_mib(48)
    );
}
