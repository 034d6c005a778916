//! Saving a suspended domain and restoring it into a new one (`xc_domain_save` /
//! `xc_domain_restore` on the simulated host): memory and vCPUs carried over, new frames and
//! ports, the grant table seeded again, and every refusal Xen and libxenguest make.

use xen_sim::domain::{sample_kernel, small_pv_guest, BuildInfo, BuildSpec};
use xen_sim::save::RestoreSpec;
use xen_sim::Host;
use xen_types::mem::SharedMemoryExt;
use xen_types::{DomId, Errno, GrantRef, Pages, Pfn, VcpuId};

const MEM: Pages = Pages::from_mib(16);

/// A created domain with one vCPU and room for [`MEM`], not built.
fn empty_domain(h: &Host) -> DomId {
    let d = h
        .create_domain(DomId::INVALID, &small_pv_guest(63))
        .unwrap();
    h.set_max_vcpus(d, 1).unwrap();
    h.set_max_mem_kb(d, (MEM.get() * 4) + 1024).unwrap();
    d
}

fn spec(h: &Host, d: DomId) -> RestoreSpec {
    RestoreSpec {
        console_port: h.evtchn_alloc_unbound(d, DomId::DOM0).unwrap(),
        console_domid: DomId::DOM0,
        store_port: h.evtchn_alloc_unbound(d, DomId::DOM0).unwrap(),
        store_domid: DomId::DOM0,
    }
}

/// A built, running guest that wrote `data` to a page of its own.
fn running_guest(h: &Host, data: &[u8]) -> (DomId, BuildInfo, Pfn) {
    let d = empty_domain(h);
    let s = spec(h, d);
    let kernel = sample_kernel(1 << 20);
    let b = h
        .build_pv(
            d,
            &BuildSpec {
                kernel: &kernel,
                ramdisk: None,
                cmdline: "console=hvc0 e2e=xapi",
                memory: MEM,
                console_port: s.console_port,
                console_domid: DomId::DOM0,
                store_port: s.store_port,
                store_domid: DomId::DOM0,
            },
        )
        .unwrap();
    h.unpause(d).unwrap();
    let pfn = h.alloc_pages(d, 1).unwrap()[0];
    let m = h.guest_pages(d, &[pfn]).unwrap();
    m.write_bytes(100, data).unwrap();
    (d, b, pfn)
}

fn saved(h: &Host, d: DomId) -> Vec<u8> {
    let mut image = Vec::new();
    h.save_domain(d, &mut image).unwrap();
    image
}

#[test]
fn a_suspended_guest_is_restored_with_its_memory_and_vcpus() {
    let h = Host::default();
    let (d, b, pfn) = running_guest(&h, b"counter=41");
    h.shutdown(d, xen_sys::SHUTDOWN_suspend).unwrap();
    let image = saved(&h, d);
    assert_eq!(&image[..8], xen_sim::save::SAVE_MAGIC);
    h.destroy(d).unwrap();
    let free = h.physinfo().free_pages;

    let n = empty_domain(&h);
    assert_ne!(n, d, "a new domain");
    let s = spec(&h, n);
    let r = h.restore_domain(n, image.as_slice(), &s).unwrap();
    // Same guest frames, new machine frames and ports.
    assert_eq!(
        (r.console_pfn, r.store_pfn, r.start_info_pfn),
        (b.console_pfn, b.store_pfn, b.start_info_pfn)
    );
    assert_eq!(
        (r.console_port, r.store_port),
        (s.console_port, s.store_port)
    );
    assert_ne!(r.store_mfn, b.store_mfn);
    assert_eq!(r.cmdline, "console=hvc0 e2e=xapi");
    // The memory came back, charged to the new domain.
    assert_eq!(h.physinfo().free_pages, free - MEM.get());
    let info = h.domain_info(n).unwrap();
    assert_eq!(info.tot_pages, MEM.get());
    let m = h.guest_pages(n, &[pfn]).unwrap();
    let mut got = [0u8; 10];
    m.read_bytes(100, &mut got).unwrap();
    assert_eq!(&got, b"counter=41");
    // The guest's allocator still holds that page: it is not handed out again.
    let more = h.alloc_pages(n, 8).unwrap();
    assert!(!more.contains(&pfn));
    // vCPU 0 is online again; the domain stays paused until the toolstack unpauses it.
    assert!(h.vcpu_info(n, VcpuId(0)).unwrap().online != 0);
    assert_ne!(info.flags & xen_sys::XEN_DOMINF_paused, 0);
    assert_eq!(info.flags & xen_sys::XEN_DOMINF_shutdown, 0);
    // The console and xenstore rings are granted to their backends again.
    let con = h
        .grant_entry(n, GrantRef(xen_sys::GNTTAB_RESERVED_CONSOLE))
        .unwrap();
    assert_eq!((con.domid, con.frame), (DomId::DOM0, b.console_pfn));
    h.unpause(n).unwrap();
}

#[test]
fn only_a_domain_suspended_by_its_guest_can_be_saved() {
    let h = Host::default();
    let (d, _, _) = running_guest(&h, b"x");
    // Running: xc_domain_save's "Domain has not been suspended".
    assert_eq!(h.save_domain(d, Vec::new()), Err(Errno::EINVAL));
    h.shutdown(d, xen_sys::SHUTDOWN_poweroff).unwrap();
    assert_eq!(h.save_domain(d, Vec::new()), Err(Errno::EINVAL));
    assert_eq!(h.save_domain(DomId(999), Vec::new()), Err(Errno::ESRCH));
    assert_eq!(h.save_domain(DomId::DOM0, Vec::new()), Err(Errno::EINVAL));
}

#[test]
fn a_cancelled_suspend_resumes_the_same_domain() {
    let h = Host::default();
    let (d, _, _) = running_guest(&h, b"x");
    assert_eq!(h.resume_domain(d), Err(Errno::EINVAL), "not shut down");
    h.shutdown(d, xen_sys::SHUTDOWN_suspend).unwrap();
    h.resume_domain(d).unwrap();
    let info = h.domain_info(d).unwrap();
    assert_eq!(info.flags & xen_sys::XEN_DOMINF_shutdown, 0);
    assert_ne!(info.flags & xen_sys::XEN_DOMINF_running, 0);
}

#[test]
fn bad_streams_and_unfit_domains_are_refused() {
    let h = Host::default();
    let (d, _, _) = running_guest(&h, b"x");
    h.shutdown(d, xen_sys::SHUTDOWN_suspend).unwrap();
    let image = saved(&h, d);
    h.destroy(d).unwrap();

    // Not an image, truncated, or with a corrupt end.
    for bad in [
        &b"not an image at all"[..],
        &image[..image.len() / 2],
        &image[..image.len() - 1],
    ] {
        let n = empty_domain(&h);
        let s = spec(&h, n);
        assert_eq!(h.restore_domain(n, bad, &s).unwrap_err(), Errno::EINVAL);
        h.destroy(n).unwrap();
    }
    let mut corrupt = image.clone();
    let at = corrupt.len() - 8;
    corrupt[at..].copy_from_slice(b"garbage!");
    let n = empty_domain(&h);
    let s = spec(&h, n);
    assert_eq!(
        h.restore_domain(n, corrupt.as_slice(), &s).unwrap_err(),
        Errno::EINVAL
    );
    h.destroy(n).unwrap();

    // A maximum below the image: ENOMEM, as populate_physmap.
    let free = h.physinfo().free_pages;
    let n = h
        .create_domain(DomId::INVALID, &small_pv_guest(63))
        .unwrap();
    h.set_max_vcpus(n, 1).unwrap();
    h.set_max_mem_kb(n, 4 << 10).unwrap();
    let s = spec(&h, n);
    assert_eq!(
        h.restore_domain(n, image.as_slice(), &s).unwrap_err(),
        Errno::ENOMEM
    );
    h.destroy(n).unwrap();
    assert_eq!(h.physinfo().free_pages, free, "nothing kept");

    // A domain without vCPUs, or one already restored into.
    let n = h
        .create_domain(DomId::INVALID, &small_pv_guest(63))
        .unwrap();
    h.set_max_mem_kb(n, 64 << 10).unwrap();
    let s = spec(&h, n);
    assert_eq!(
        h.restore_domain(n, image.as_slice(), &s).unwrap_err(),
        Errno::EINVAL
    );
    h.destroy(n).unwrap();
    let n = empty_domain(&h);
    let s = spec(&h, n);
    h.restore_domain(n, image.as_slice(), &s).unwrap();
    assert_eq!(
        h.restore_domain(n, image.as_slice(), &s).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        h.restore_domain(DomId(999), image.as_slice(), &s)
            .unwrap_err(),
        Errno::ESRCH
    );
}
