//! Consoles on the simulated host: the console page the builder seeds as grant
//! `GNTTAB_RESERVED_CONSOLE`, the same page by foreign mapping, a guest writing and reading
//! it, and the hypervisor's console ring (`XEN_SYSCTL_readconsole`).

use std::time::Duration;

use xen_ring::console::{ConsoleRing, End};
use xen_sim::console::{GuestConsole, CONRING_SIZE};
use xen_sim::domain::{sample_kernel, small_pv_guest, BuildSpec};
use xen_sim::Host;
use xen_types::{DomId, Errno, EvtchnPort, GrantRef, Pages, Virq};

fn built_guest(h: &Host) -> (DomId, xen_sim::domain::BuildInfo) {
    let d = h
        .create_domain(DomId::INVALID, &small_pv_guest(63))
        .unwrap();
    h.set_max_vcpus(d, 1).unwrap();
    h.set_max_mem_kb(d, 32 << 10).unwrap();
    let console_port = h.evtchn_alloc_unbound(d, DomId::DOM0).unwrap();
    let store_port = h.evtchn_alloc_unbound(d, DomId::DOM0).unwrap();
    let kernel = sample_kernel(1 << 20);
    let spec = BuildSpec {
        kernel: &kernel,
        ramdisk: None,
        cmdline: "console=hvc0",
        memory: Pages::from_mib(16),
        console_port,
        console_domid: DomId::DOM0,
        store_port,
        store_domid: DomId::DOM0,
    };
    let b = h.build_pv(d, &spec).unwrap();
    (d, b)
}

#[test]
fn the_builder_seeds_the_reserved_grants_as_xc_dom_gnttab_init() {
    let h = Host::default();
    let (d, b) = built_guest(&h);
    let permit = xen_sys::GTF_permit_access as u16;
    let con = h
        .grant_entry(d, GrantRef(xen_sys::GNTTAB_RESERVED_CONSOLE))
        .unwrap();
    assert_eq!(
        (con.flags, con.domid, con.frame),
        (permit, DomId::DOM0, b.console_pfn)
    );
    let xs = h
        .grant_entry(d, GrantRef(xen_sys::GNTTAB_RESERVED_XENSTORE))
        .unwrap();
    assert_eq!(
        (xs.flags, xs.domid, xs.frame),
        (permit, DomId::DOM0, b.store_pfn)
    );
    // Another domain than the backend may not map it.
    let other = h
        .create_domain(DomId::INVALID, &small_pv_guest(63))
        .unwrap();
    assert!(h
        .grant_map(
            other,
            d,
            &[GrantRef(xen_sys::GNTTAB_RESERVED_CONSOLE)],
            true
        )
        .is_err());
}

#[test]
fn grant_and_foreign_mappings_alias_the_guests_console_page() {
    let h = Host::default();
    let (d, b) = built_guest(&h);
    let guest = GuestConsole::attach(&h, d).unwrap();
    assert_eq!(guest.port(), b.console_port);
    let by_grant = h
        .grant_map(
            DomId::DOM0,
            d,
            &[GrantRef(xen_sys::GNTTAB_RESERVED_CONSOLE)],
            true,
        )
        .unwrap();
    let by_frame = h
        .map_foreign(DomId::DOM0, d, &[b.console_mfn.0], true)
        .unwrap();
    let back = ConsoleRing::new(by_grant, End::Backend).unwrap();
    let back2 = ConsoleRing::new(by_frame, End::Backend).unwrap();

    guest
        .write_all(b"Booting Linux\n", Duration::from_secs(1))
        .unwrap();
    assert_eq!(
        back2.readable().unwrap(),
        14,
        "the same page by frame number"
    );
    let mut buf = [0u8; 64];
    let n = back.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"Booting Linux\n");
    assert_eq!(back2.readable().unwrap(), 0);

    back.write(b"ls\r").unwrap();
    let got = guest.read_exact_timeout(3, Duration::from_secs(1)).unwrap();
    assert_eq!(got, b"ls\r");
}

#[test]
fn a_full_ring_makes_the_guest_wait_for_the_backend() {
    let h = Host::default();
    let (d, _) = built_guest(&h);
    let guest = GuestConsole::attach(&h, d).unwrap();
    let map = h
        .grant_map(
            DomId::DOM0,
            d,
            &[GrantRef(xen_sys::GNTTAB_RESERVED_CONSOLE)],
            true,
        )
        .unwrap();
    let back = ConsoleRing::new(map, End::Backend).unwrap();
    assert_eq!(guest.write(&[b'x'; 5000]).unwrap(), 2048);
    assert_eq!(guest.write(b"y").unwrap(), 0);
    assert!(matches!(
        guest.write_all(b"y", Duration::from_millis(30)),
        Err(xen_sim::console::GuestConsoleError::Timeout(_))
    ));
    let mut buf = [0u8; 4096];
    assert_eq!(back.read(&mut buf).unwrap(), 2048);
    guest.write_all(b"y", Duration::from_secs(1)).unwrap();
}

#[test]
fn foreign_mapping_rules() {
    let h = Host::default();
    let (d, b) = built_guest(&h);
    let other = h
        .create_domain(DomId::INVALID, &small_pv_guest(63))
        .unwrap();
    assert_eq!(
        h.map_foreign(other, d, &[b.console_mfn.0], true).err(),
        Some(Errno::EPERM)
    );
    assert_eq!(
        h.map_foreign(DomId::DOM0, DomId(777), &[b.console_mfn.0], true)
            .err(),
        Some(Errno::ESRCH)
    );
    assert_eq!(
        h.map_foreign(DomId::DOM0, d, &[u64::MAX - 1], true).err(),
        Some(Errno::EINVAL)
    );
    // The mapping keeps a destroyed domain dying until it goes.
    let m = h
        .map_foreign(DomId::DOM0, d, &[b.console_mfn.0], true)
        .unwrap();
    h.destroy(d).unwrap();
    assert_ne!(
        h.domain_info(d).unwrap().flags & xen_sys::XEN_DOMINF_dying,
        0
    );
    drop(m);
    assert_eq!(h.domain_info(d).err(), Some(Errno::ESRCH));
}

#[test]
fn attaching_to_an_unbuilt_domain_fails_clearly() {
    let h = Host::default();
    let d = h
        .create_domain(DomId::INVALID, &small_pv_guest(63))
        .unwrap();
    let e = GuestConsole::attach(&h, d).unwrap_err();
    assert!(e.to_string().contains("EINVAL"), "{e}");
    assert!(GuestConsole::attach(&h, DomId(900)).is_err());
}

#[test]
fn the_hypervisor_console_ring_reads_like_xen_sysctl_readconsole() {
    let h = Host::default();
    let ev = h.evtchn_open(DomId::DOM0).unwrap();
    let port = ev.bind_virq(Virq::CON_RING).unwrap();
    h.hypervisor_print(b"(XEN) Xen version 4.17\n");
    let mut ports = [EvtchnPort(0); 4];
    assert_eq!(ev.wait(&mut ports, Some(Duration::from_secs(1))), 1);
    assert_eq!(ports[0], port);

    let (data, idx) = h
        .read_console_ring(DomId::DOM0, Some(0), 1024, false)
        .unwrap();
    assert_eq!(data, b"(XEN) Xen version 4.17\n");
    let (data, idx2) = h
        .read_console_ring(DomId::DOM0, Some(idx), 1024, false)
        .unwrap();
    assert!(data.is_empty());
    assert_eq!(idx2, idx);
    h.hypervisor_print(b"more\n");
    let (data, _) = h
        .read_console_ring(DomId::DOM0, Some(idx), 2, false)
        .unwrap();
    assert_eq!(data, b"mo", "bounded by the count");
    // Overrun: the oldest bytes are gone; an index that fell out reads from the oldest kept.
    h.hypervisor_print(&vec![b'z'; CONRING_SIZE + 10]);
    let (data, _) = h
        .read_console_ring(DomId::DOM0, Some(idx), usize::MAX, false)
        .unwrap();
    assert_eq!(data.len(), CONRING_SIZE);
    assert!(data.iter().all(|&c| c == b'z'));
    assert_eq!(
        h.read_console_ring(DomId(3), None, 10, false).err(),
        Some(Errno::EPERM)
    );
}
