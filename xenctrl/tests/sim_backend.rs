//! The control API over the simulated host: what a toolstack sees, through the trait only.

mod common;

use std::time::Duration;

use xen_sim::{Clock, Host, HostConfig};
use xen_types::PortStatus;
use xenctrl::{
    Capabilities, DomId, DomainConfig, Error, GuestImage, ImageSource, Pages, ShutdownReason,
    VcpuId, Xen, GETINFOLIST_CHUNK,
};

fn sim() -> (Xen, Host) {
    let host = Host::new(HostConfig {
        clock: Clock::manual(),
        ..HostConfig::default()
    });
    (Xen::sim(host.clone()), host)
}

/// A minimal x86-64 Xen ELF kernel (one PT_LOAD of 1 MiB and a "Xen" PT_NOTE).
fn xen_elf() -> Vec<u8> {
    let mut k = vec![0u8; 64 + 2 * 56];
    k[..4].copy_from_slice(b"\x7fELF");
    k[4] = 2;
    k[5] = 1;
    k[6] = 1;
    k[16..18].copy_from_slice(&2u16.to_le_bytes());
    k[18..20].copy_from_slice(&62u16.to_le_bytes());
    k[32..40].copy_from_slice(&64u64.to_le_bytes());
    k[54..56].copy_from_slice(&56u16.to_le_bytes());
    k[56..58].copy_from_slice(&2u16.to_le_bytes());
    let note_off = k.len() as u64;
    for w in [4u32, 6, 6] {
        k.extend_from_slice(&w.to_le_bytes());
    }
    k.extend_from_slice(b"Xen\0linux\0\0\0");
    let len = k.len() as u64;
    let mut ph = |i: usize, ty: u32, off: u64, filesz: u64, memsz: u64| {
        let b = 64 + i * 56;
        k[b..b + 4].copy_from_slice(&ty.to_le_bytes());
        k[b + 8..b + 16].copy_from_slice(&off.to_le_bytes());
        k[b + 32..b + 40].copy_from_slice(&filesz.to_le_bytes());
        k[b + 40..b + 48].copy_from_slice(&memsz.to_le_bytes());
    };
    ph(0, 1, 0, len, 1 << 20);
    ph(1, 4, note_off, 24, 24);
    k
}

#[test]
fn host_information() {
    let (x, _) = sim();
    let v = x.version().unwrap();
    assert_eq!(v.to_string(), "4.17.0-sim");
    let p = x.physinfo().unwrap();
    assert_eq!((p.nr_cpus, p.sockets, p.cores_per_socket), (8, 1, 4));
    assert!(p
        .capabilities
        .contains(Capabilities::PV | Capabilities::HVM | Capabilities::HAP));
    assert_eq!(p.total_pages, Pages::from_mib(8192));
    assert_eq!(p.free_pages, Pages::from_mib(7168));
    assert_eq!(x.backend(), "sim");
}

#[test]
fn listing_goes_through_getinfolist_in_chunks() {
    let (x, _) = sim();
    let n = GETINFOLIST_CHUNK as usize * 2 + 3;
    let mut ids = vec![DomId::DOM0];
    for _ in 0..n {
        ids.push(x.create_domain(&DomainConfig::pv(1)).unwrap());
    }
    let all = x.list_domains().unwrap();
    assert_eq!(all.iter().map(|d| d.domid).collect::<Vec<_>>(), ids);
    let d0 = &all[0];
    assert!(d0.running() && !d0.paused());
    assert_eq!(d0.state_string(), "r-----");
    assert!(all[1..].iter().all(|d| d.paused() && d.online_vcpus == 0));
}

#[test]
fn errors_are_typed_with_the_errno_kept() {
    let (x, _) = sim();
    let nobody = DomId(999);
    let e = x.pause(nobody).unwrap_err();
    assert!(matches!(e, Error::NoSuchDomain { dom, .. } if dom == nobody));
    assert_eq!(e.errno(), Some(xen_types::Errno::ESRCH));
    assert!(matches!(
        x.domain_info(nobody),
        Err(Error::NoSuchDomain { .. })
    ));
    assert!(matches!(
        x.pause(DomId::DOM0),
        Err(Error::InvalidArgument { .. })
    ));
    let d = x.create_domain(&DomainConfig::pv(1)).unwrap();
    let mut again = DomainConfig::pv(1);
    again.domid = Some(d);
    assert!(matches!(x.create_domain(&again), Err(Error::DomainExists { dom, .. }) if dom == d));
    assert!(matches!(
        x.create_domain(&DomainConfig::pv(0)),
        Err(Error::InvalidArgument { .. })
    ));
    x.set_max_mem(d, Pages::from_mib(1)).unwrap();
    assert!(matches!(
        x.increase_reservation(d, Pages::from_mib(2)),
        Err(Error::OutOfMemory { .. })
    ));
    assert!(matches!(
        x.shutdown(DomId::DOM0, ShutdownReason::Reboot),
        Err(Error::PermissionDenied { .. })
    ));
}

#[test]
fn build_allocates_rings_and_ports_and_destroy_returns_memory() {
    let (x, host) = sim();
    let free0 = x.physinfo().unwrap().free_pages;
    let dom = x.create_domain(&DomainConfig::pv(2)).unwrap();
    x.set_max_vcpus(dom, 2).unwrap();
    let mut image = GuestImage::new(ImageSource::Bytes(xen_elf()), Pages::from_mib(64));
    image.cmdline = "console=hvc0 root=/dev/xvda".into();
    image.ramdisk = Some(ImageSource::Bytes(vec![1; 100_000]));
    let g = x.build(dom, &image).unwrap();
    assert_ne!(g.console.port, g.store.port);
    assert_ne!(g.console.pfn, g.store.pfn);
    assert_eq!(
        (g.console.backend, g.store.backend),
        (DomId::DOM0, DomId::DOM0)
    );
    // The ports are unbound ends in the guest waiting for dom0.
    for port in [g.console.port, g.store.port] {
        assert_eq!(
            host.evtchn_status(dom, port),
            Ok(PortStatus::Unbound {
                remote: DomId::DOM0
            })
        );
    }
    let info = x.domain_info(dom).unwrap();
    assert_eq!(info.tot_pages, Pages::from_mib(64));
    assert_eq!(info.max_pages, Pages::from_mib(65));
    assert_eq!(info.online_vcpus, 1);
    assert_eq!(
        x.physinfo().unwrap().free_pages,
        free0 - Pages::from_mib(64)
    );
    // Run it for a while on the host's clock.
    x.unpause(dom).unwrap();
    host.clock().advance(Duration::from_millis(1500));
    assert_eq!(
        x.domain_info(dom).unwrap().cpu_time,
        Duration::from_millis(1500)
    );
    let v1 = x.vcpu_info(dom, VcpuId(1)).unwrap();
    assert!(!v1.online && v1.cpu_time.is_zero());
    x.destroy(dom).unwrap();
    assert_eq!(x.physinfo().unwrap().free_pages, free0);
    assert!(x.list_domains().unwrap().iter().all(|d| d.domid != dom));
}

#[test]
fn garbage_kernels_and_missing_files_are_refused() {
    let (x, _) = sim();
    let dom = x.create_domain(&DomainConfig::pv(1)).unwrap();
    x.set_max_vcpus(dom, 1).unwrap();
    let free0 = x.physinfo().unwrap().free_pages;
    let garbage = GuestImage::new(
        ImageSource::Bytes(b"MZ not a kernel".to_vec()),
        Pages::from_mib(32),
    );
    assert!(matches!(
        x.build(dom, &garbage),
        Err(Error::InvalidArgument { .. })
    ));
    let missing = GuestImage::new(
        ImageSource::File("/nonexistent/vmlinuz".into()),
        Pages::from_mib(32),
    );
    let e = x.build(dom, &missing).unwrap_err();
    assert!(matches!(e, Error::Image { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/vmlinuz"));
    assert_eq!(x.physinfo().unwrap().free_pages, free0);
    assert_eq!(x.domain_info(dom).unwrap().tot_pages, Pages::ZERO);
}

#[test]
fn shutdown_reasons_and_pvh_flags_decode() {
    let (x, _) = sim();
    let dom = x.create_domain(&DomainConfig::pvh(4)).unwrap();
    let info = x.domain_info(dom).unwrap();
    assert!(info.hvm() && info.max_vcpu_id.is_none());
    x.set_max_vcpus(dom, 4).unwrap();
    assert_eq!(x.domain_info(dom).unwrap().max_vcpu_id, Some(3));
    for (r, s) in [
        (ShutdownReason::Crash, "--p-c-"),
        (ShutdownReason::Reboot, "--ps--"),
    ] {
        let d = x.create_domain(&DomainConfig::pv(1)).unwrap();
        x.shutdown(d, r).unwrap();
        let i = x.domain_info(d).unwrap();
        assert_eq!((i.shutdown_reason, i.shutdown_code), (Some(r), r.code()));
        assert_eq!(i.state_string(), s);
    }
}

#[test]
fn the_real_backend_says_plainly_that_this_is_not_xen() {
    if std::path::Path::new(xenctrl::PRIVCMD).exists() {
        return; // inside a dom0: real_xen.rs covers it
    }
    let e = Xen::real().unwrap_err();
    assert!(matches!(e, Error::NotOnXen));
    assert_eq!(e.to_string(), "not a Xen dom0: /dev/xen/privcmd is missing");
}

#[test]
fn auto_picks_the_simulated_host_off_xen() {
    let x = Xen::auto().unwrap();
    let expect = if std::path::Path::new(xenctrl::PRIVCMD).exists() {
        "real"
    } else {
        "sim"
    };
    assert_eq!(x.backend(), expect);
    assert!(x.domain_info(DomId::DOM0).is_ok());
}

#[test]
fn the_rules_shared_with_real_xen_hold() {
    let (x, _) = sim();
    common::xen_rules(&x);
}

#[test]
fn the_console_daemons_calls_read_the_hv_ring_and_map_a_guests_frame() {
    use xen_types::mem::SharedMemoryExt;
    let (x, host) = sim();
    host.hypervisor_print(b"(XEN) hello\n");
    let r = x.read_console_ring(0, 4096).unwrap();
    assert_eq!(r.data, b"(XEN) hello\n");
    assert!(x.read_console_ring(r.index, 4096).unwrap().data.is_empty());

    let dom = x.create_domain(&DomainConfig::pv(1)).unwrap();
    x.set_max_vcpus(dom, 1).unwrap();
    let image = GuestImage::new(ImageSource::Bytes(xen_elf()), Pages::from_mib(16));
    let g = x.build(dom, &image).unwrap();
    let m = x.map_foreign(dom, &[g.console.mfn.0], true).unwrap();
    m.write_obj(0, 0xabu8).unwrap();
    let page = host.guest_pages(dom, &[g.console.pfn]).unwrap();
    assert_eq!(page.read_obj::<u8>(0).unwrap(), 0xab);
    assert!(matches!(
        x.map_foreign(dom, &[u64::MAX - 1], true),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn claims_hold_memory_and_are_accounted_in_physinfo_and_domain_info() {
    let (xen, _host) = sim();
    let dom = xen.create_domain(&DomainConfig::pvh(1)).unwrap();
    xen.set_max_mem(dom, Pages::from_mib(64)).unwrap();
    xen.increase_reservation(dom, Pages::from_mib(16)).unwrap();
    xen.claim_pages(dom, Pages::from_mib(48)).unwrap();
    assert_eq!(
        xen.physinfo().unwrap().outstanding_pages,
        Pages::from_mib(32)
    );
    assert_eq!(
        xen.domain_info(dom).unwrap().outstanding_pages,
        Pages::from_mib(32)
    );
    // One claim at a time; a claim must be above the domain's pages and within its maximum.
    assert!(matches!(
        xen.claim_pages(dom, Pages::from_mib(60)),
        Err(Error::InvalidArgument { .. })
    ));
    xen.claim_pages(dom, Pages::ZERO).unwrap();
    assert!(matches!(
        xen.claim_pages(dom, Pages::from_mib(65)),
        Err(Error::InvalidArgument { .. })
    ));
    let free = xen.physinfo().unwrap().free_pages;
    xen.set_max_mem(dom, free + Pages::from_mib(32)).unwrap();
    assert!(matches!(
        xen.claim_pages(dom, free + Pages::from_mib(17)),
        Err(Error::OutOfMemory { .. })
    ));
    xen.increase_reservation(dom, Pages::from_mib(16)).unwrap();
    assert_eq!(xen.physinfo().unwrap().outstanding_pages, Pages::ZERO);
}

#[test]
fn the_watchdog_arms_kicks_disarms_and_reboots_the_host_on_expiry() {
    let (x, host) = sim();
    let s = Duration::from_secs;
    // Bad timeouts and ids are refused before reaching the hypervisor.
    assert!(matches!(
        x.watchdog_arm(Duration::from_millis(999)),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        x.watchdog_disarm(xenctrl::WatchdogId(0)),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        x.watchdog_kick(xenctrl::WatchdogId(1), s(5)),
        Err(Error::InvalidArgument { .. })
    ));
    let a = x.watchdog_arm(s(30)).unwrap();
    let b = x.watchdog_arm(s(30)).unwrap();
    assert_ne!(a, b);
    let third = x.watchdog_arm(s(30)).unwrap_err();
    assert_eq!(third.errno(), Some(xen_types::Errno(libc::ENOSPC)));
    x.watchdog_disarm(b).unwrap();

    let dom = x.create_domain(&DomainConfig::pvh(1)).unwrap();
    x.set_max_mem(dom, Pages::from_mib(16)).unwrap();
    x.increase_reservation(dom, Pages::from_mib(16)).unwrap();
    for _ in 0..5 {
        host.clock().advance(s(29));
        x.watchdog_kick(a, s(30)).unwrap();
    }
    assert!(x.domain_info(dom).is_ok());
    host.clock().advance(s(30));
    assert_eq!(host.run_timers().len(), 1);
    assert!(matches!(
        x.domain_info(dom),
        Err(Error::NoSuchDomain { .. })
    ));
    assert_eq!(host.boots(), 2);
    assert_eq!(x.list_domains().unwrap().len(), 1);
}

/// A built, running guest of 16 MiB.
fn running_guest(x: &Xen) -> DomId {
    let dom = x.create_domain(&DomainConfig::pv(1)).unwrap();
    x.set_max_vcpus(dom, 1).unwrap();
    let image = GuestImage::new(ImageSource::Bytes(xen_elf()), Pages::from_mib(16));
    x.build(dom, &image).unwrap();
    x.unpause(dom).unwrap();
    dom
}

#[test]
fn save_suspends_through_the_callback_and_restore_builds_a_new_domain() {
    use std::os::fd::AsFd;
    let (x, _host) = sim();
    let dom = running_guest(&x);
    let image = tempfile::tempfile().unwrap();
    let mut asked = 0;
    // The guest acknowledges: it shuts itself down for suspend (SCHEDOP_shutdown).
    x.save_domain(dom, image.as_fd(), &mut || {
        asked += 1;
        x.shutdown(dom, ShutdownReason::Suspend)
    })
    .unwrap();
    assert_eq!(asked, 1);
    assert!(image.metadata().unwrap().len() > 0);
    x.destroy(dom).unwrap();
    let free = x.physinfo().unwrap().free_pages;

    let new = x.create_domain(&DomainConfig::pv(1)).unwrap();
    x.set_max_vcpus(new, 1).unwrap();
    use std::io::Seek;
    let mut image = image;
    image.rewind().unwrap();
    let r = x
        .restore(
            new,
            image.as_fd(),
            Pages::from_mib(16),
            DomId::DOM0,
            DomId::DOM0,
        )
        .unwrap();
    assert_ne!(r.console_port, r.store_port);
    let info = x.domain_info(new).unwrap();
    assert_eq!(info.tot_pages, Pages::from_mib(16));
    assert_eq!(info.max_pages, Pages::from_mib(17));
    assert!(info.paused() && !info.is_shutdown());
    assert_eq!(free - x.physinfo().unwrap().free_pages, Pages::from_mib(16));
    x.unpause(new).unwrap();
    x.destroy(new).unwrap();
}

#[test]
fn a_guest_that_does_not_suspend_fails_the_save_and_keeps_running() {
    use std::os::fd::AsFd;
    let (x, _host) = sim();
    let dom = running_guest(&x);
    let image = tempfile::tempfile().unwrap();
    // The suspend step returns but the guest never suspended: xc_domain_save's check.
    let e = x
        .save_domain(dom, image.as_fd(), &mut || Ok(()))
        .unwrap_err();
    assert!(
        matches!(e, Error::NotSuspended { dom: d, reason: None } if d == dom),
        "{e}"
    );
    assert_eq!(image.metadata().unwrap().len(), 0, "nothing written");
    // The suspend step's own error is the save's error.
    let e = x
        .save_domain(dom, image.as_fd(), &mut || {
            Err(Error::Os {
                op: "waiting for the guest",
                errno: xen_types::Errno::ETIMEDOUT,
            })
        })
        .unwrap_err();
    assert_eq!(e.errno(), Some(xen_types::Errno::ETIMEDOUT));
    let info = x.domain_info(dom).unwrap();
    assert!(!info.is_shutdown() && !info.paused());
    // Suspended for another reason: still refused.
    x.shutdown(dom, ShutdownReason::Poweroff).unwrap();
    let e = x
        .save_domain(dom, image.as_fd(), &mut || Ok(()))
        .unwrap_err();
    assert!(matches!(
        e,
        Error::NotSuspended {
            reason: Some(ShutdownReason::Poweroff),
            ..
        }
    ));
    assert!(matches!(
        x.save_domain(DomId(900), image.as_fd(), &mut || Ok(())),
        Err(Error::NoSuchDomain { .. })
    ));
}

#[test]
fn a_suspended_guest_resumes_in_place_and_bad_images_are_refused() {
    use std::os::fd::AsFd;
    let (x, _host) = sim();
    let dom = running_guest(&x);
    x.shutdown(dom, ShutdownReason::Suspend).unwrap();
    x.resume_domain(dom).unwrap();
    assert!(!x.domain_info(dom).unwrap().is_shutdown());
    assert!(matches!(
        x.resume_domain(dom),
        Err(Error::InvalidArgument { .. })
    ));
    // An image that is not one: EINVAL, as libxenguest's header check.
    let mut bad = tempfile::tempfile().unwrap();
    use std::io::{Seek, Write};
    bad.write_all(b"this is no saved domain").unwrap();
    bad.rewind().unwrap();
    let new = x.create_domain(&DomainConfig::pv(1)).unwrap();
    x.set_max_vcpus(new, 1).unwrap();
    assert!(matches!(
        x.restore(
            new,
            bad.as_fd(),
            Pages::from_mib(16),
            DomId::DOM0,
            DomId::DOM0
        ),
        Err(Error::InvalidArgument {
            op: "xc_domain_restore"
        })
    ));
}
