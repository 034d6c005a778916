//! The simulated host's domain rules, each checked against the errno Xen 4.17 returns.

use std::time::Duration;

use xen_sim::domain::{BuildSpec, ExceptionKind, ImageKind};
use xen_sim::{Clock, Host, HostConfig};
use xen_types::{DomId, Errno, EvtchnPort, Pages, Pfn, VcpuId};

fn host() -> Host {
    Host::new(HostConfig {
        clock: Clock::manual(),
        ..HostConfig::default()
    })
}

fn config(vcpus: u32) -> xen_sys::xen_domctl_createdomain {
    xen_sys::xen_domctl_createdomain {
        max_vcpus: vcpus,
        max_evtchn_port: 1023,
        max_grant_frames: 32,
        max_maptrack_frames: 128,
        grant_opts: 1,
        ..Default::default()
    }
}

fn create(h: &Host) -> DomId {
    h.create_domain(DomId::INVALID, &config(2)).unwrap()
}

fn free(h: &Host) -> u64 {
    h.physinfo().free_pages
}

fn flags(h: &Host, d: DomId) -> u32 {
    h.domain_info(d).unwrap().flags
}

/// A minimal x86-64 Xen ELF kernel: one loadable segment of `mem` bytes and a PT_NOTE with a
/// "Xen" note (XEN_ELFNOTE_GUEST_OS = 6, "linux").
fn xen_elf(mem: u64, with_note: bool) -> Vec<u8> {
    let mut k = vec![0u8; 64 + 2 * 56];
    k[..4].copy_from_slice(b"\x7fELF");
    k[4] = 2; // ELFCLASS64
    k[5] = 1; // little endian
    k[6] = 1;
    k[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    k[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    k[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    k[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    k[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    k[56..58].copy_from_slice(&2u16.to_le_bytes()); // e_phnum
    let note_off = k.len() as u64;
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes());
    note.extend_from_slice(&6u32.to_le_bytes());
    note.extend_from_slice(&6u32.to_le_bytes());
    note.extend_from_slice(if with_note { b"Xen\0" } else { b"GNU\0" });
    note.extend_from_slice(b"linux\0\0\0");
    k.extend_from_slice(&note);
    k.extend_from_slice(&[0x90; 64]);
    let len = k.len() as u64;
    let ph = |k: &mut Vec<u8>, i: usize, ty: u32, off: u64, vaddr: u64, filesz: u64, memsz: u64| {
        let b = 64 + i * 56;
        k[b..b + 4].copy_from_slice(&ty.to_le_bytes());
        k[b + 8..b + 16].copy_from_slice(&off.to_le_bytes());
        k[b + 16..b + 24].copy_from_slice(&vaddr.to_le_bytes());
        k[b + 32..b + 40].copy_from_slice(&filesz.to_le_bytes());
        k[b + 40..b + 48].copy_from_slice(&memsz.to_le_bytes());
    };
    ph(&mut k, 0, 1, 0, 0xffff_ffff_8000_0000, len, mem);
    ph(
        &mut k,
        1,
        4,
        note_off,
        0,
        note.len() as u64,
        note.len() as u64,
    );
    k
}

fn spec<'a>(kernel: &'a [u8], memory: Pages) -> BuildSpec<'a> {
    BuildSpec {
        kernel,
        ramdisk: None,
        cmdline: "console=hvc0",
        memory,
        console_port: EvtchnPort(1),
        console_domid: DomId::DOM0,
        store_port: EvtchnPort(2),
        store_domid: DomId::DOM0,
    }
}

#[test]
fn dom0_is_there_from_boot_and_running() {
    let h = host();
    let cfg = h.config().clone();
    let info = h.domain_info(DomId::DOM0).unwrap();
    assert_eq!(info.tot_pages, cfg.dom0_memory.0);
    assert_eq!(info.nr_online_vcpus, cfg.dom0_vcpus);
    assert_ne!(info.flags & xen_sys::XEN_DOMINF_running, 0);
    assert_eq!(info.flags & xen_sys::XEN_DOMINF_paused, 0);
    assert_eq!(free(&h), cfg.memory.0 - cfg.dom0_memory.0);
    assert_eq!(h.physinfo().nr_cpus, 8);
}

#[test]
fn domids_come_from_a_rover_that_skips_ids_in_use_and_wraps() {
    let h = host();
    let a = create(&h);
    let b = create(&h);
    assert_eq!((a, b), (DomId(1), DomId(2)));
    h.destroy(a).unwrap();
    // The rover does not go back to a freed id.
    assert_eq!(create(&h), DomId(3));
    // A requested free id is used as is and does not move the rover.
    assert_eq!(h.create_domain(DomId(1), &config(1)), Ok(DomId(1)));
    assert_eq!(h.create_domain(DomId(2), &config(1)), Err(Errno::EEXIST));
    // 0 and reserved ids mean "pick one".
    assert_eq!(h.create_domain(DomId(0), &config(1)), Ok(DomId(4)));
    assert_eq!(h.create_domain(DomId::SELF, &config(1)), Ok(DomId(5)));
    // Near the top it wraps to 1 and skips the ids in use (1..=5).
    h.lock().next_domid = DomId::FIRST_RESERVED.0 - 1;
    assert_eq!(create(&h), DomId(DomId::FIRST_RESERVED.0 - 1));
    assert_eq!(create(&h), DomId(6));
}

#[test]
fn bad_creation_arguments_are_einval() {
    let h = Host::new(HostConfig {
        hvm: false,
        hap: false,
        ..HostConfig::default()
    });
    let bad = |f: &dyn Fn(&mut xen_sys::xen_domctl_createdomain)| {
        let mut c = config(1);
        f(&mut c);
        h.create_domain(DomId::INVALID, &c)
    };
    assert_eq!(bad(&|c| c.max_vcpus = 0), Err(Errno::EINVAL));
    assert_eq!(bad(&|c| c.flags = 1 << 20), Err(Errno::EINVAL));
    assert_eq!(
        bad(&|c| c.flags = xen_sys::XEN_DOMCTL_CDF_hap),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        bad(&|c| c.flags = xen_sys::XEN_DOMCTL_CDF_hvm),
        Err(Errno::EINVAL)
    );
    assert_eq!(bad(&|c| c.max_grant_frames = 0), Err(Errno::EINVAL));
    assert_eq!(bad(&|c| c.max_grant_frames = 65), Err(Errno::EINVAL));
    assert_eq!(bad(&|c| c.max_maptrack_frames = 5000), Err(Errno::EINVAL));
    assert_eq!(bad(&|c| c.grant_opts = 0), Err(Errno::EINVAL));
    assert_eq!(bad(&|c| c.grant_opts = 3), Err(Errno::EINVAL));
    assert_eq!(bad(&|c| c.max_vcpus = 9000), Err(Errno::EINVAL));
    // -1 means the host's default.
    let d = bad(&|c| {
        c.max_grant_frames = -1;
        c.max_maptrack_frames = -1
    })
    .unwrap();
    assert_eq!(h.lock().domains[&d].max_grant_frames, 64);
    // Nothing was left behind by the failures but the one domain.
    assert_eq!(h.domain_info_list(DomId(1), 100).len(), 1);

    let hvm_host = host();
    let mut c = config(129);
    c.flags = xen_sys::XEN_DOMCTL_CDF_hvm | xen_sys::XEN_DOMCTL_CDF_hap;
    assert_eq!(
        hvm_host.create_domain(DomId::INVALID, &c),
        Err(Errno::EINVAL)
    );
    c.max_vcpus = 128;
    let d = hvm_host.create_domain(DomId::INVALID, &c).unwrap();
    let f = flags(&hvm_host, d);
    assert_ne!(f & xen_sys::XEN_DOMINF_hvm_guest, 0);
    assert_ne!(f & xen_sys::XEN_DOMINF_hap, 0);
}

#[test]
fn max_vcpus_must_match_creation_and_not_be_dom0() {
    let h = host();
    let d = create(&h);
    assert_eq!(h.vcpu_info(d, VcpuId(0)).err(), Some(Errno::ESRCH));
    assert_eq!(h.vcpu_info(d, VcpuId(2)).err(), Some(Errno::EINVAL));
    assert_eq!(h.set_max_vcpus(d, 3), Err(Errno::EINVAL));
    assert_eq!(h.set_max_vcpus(DomId::DOM0, 2), Err(Errno::EINVAL));
    h.set_max_vcpus(d, 2).unwrap();
    h.set_max_vcpus(d, 2).unwrap();
    let v = h.vcpu_info(d, VcpuId(1)).unwrap();
    assert_eq!((v.online, v.running, v.cpu_time), (0, 0, 0));
    assert!(v.cpu < 8);
    assert_eq!(h.domain_info(d).unwrap().max_vcpu_id, 1);
}

#[test]
fn memory_is_accounted_against_host_free_pages_and_max_pages() {
    let h = host();
    let d = create(&h);
    let before = free(&h);
    // max_pages starts at 0: nothing can be allocated.
    assert_eq!(h.increase_reservation(d, Pages(1)), Err(Errno::ENOMEM));
    h.set_max_mem_kb(d, Pages::from_mib(64).kib()).unwrap();
    assert_eq!(h.domain_info(d).unwrap().max_pages, Pages::from_mib(64).0);
    h.increase_reservation(d, Pages::from_mib(32)).unwrap();
    assert_eq!(free(&h), before - Pages::from_mib(32).0);
    assert_eq!(h.domain_info(d).unwrap().tot_pages, Pages::from_mib(32).0);
    // Past max_pages: ENOMEM and nothing allocated.
    assert_eq!(
        h.increase_reservation(d, Pages::from_mib(33)),
        Err(Errno::ENOMEM)
    );
    assert_eq!(h.domain_info(d).unwrap().tot_pages, Pages::from_mib(32).0);
    // populate_physmap: frames already there are not counted twice, repeats neither.
    let pfns: Vec<Pfn> = [10, 11, 11, 20_000, 20_001].map(Pfn).to_vec();
    h.populate_physmap(d, &pfns).unwrap();
    assert_eq!(
        h.domain_info(d).unwrap().tot_pages,
        Pages::from_mib(32).0 + 2
    );
    // decrease: all or nothing; a hole is EINVAL.
    assert_eq!(
        h.decrease_reservation(d, &[Pfn(10), Pfn(30_000)]),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        h.decrease_reservation(d, &[Pfn(10), Pfn(10)]),
        Err(Errno::EINVAL)
    );
    h.decrease_reservation(d, &[Pfn(10), Pfn(20_001)]).unwrap();
    assert_eq!(h.domain_info(d).unwrap().tot_pages, Pages::from_mib(32).0);
    assert_eq!(h.decrease_reservation(d, &[Pfn(10)]), Err(Errno::EINVAL));
    // Lowering max below the allocation is allowed; allocation then fails.
    h.set_max_mem_kb(d, 4).unwrap();
    assert_eq!(h.populate_physmap(d, &[Pfn(10)]), Err(Errno::ENOMEM));
    // Destroy returns everything.
    h.destroy(d).unwrap();
    assert_eq!(free(&h), before);
}

#[test]
fn a_host_out_of_memory_refuses_with_enomem() {
    let h = host();
    let all = free(&h);
    let a = create(&h);
    let b = create(&h);
    h.set_max_mem_kb(a, u64::MAX / 2).unwrap();
    h.set_max_mem_kb(b, u64::MAX / 2).unwrap();
    assert_eq!(
        h.increase_reservation(a, Pages(all + 1)),
        Err(Errno::ENOMEM)
    );
    assert_eq!(free(&h), all);
    h.increase_reservation(a, Pages(all - 10)).unwrap();
    assert_eq!(h.increase_reservation(b, Pages(11)), Err(Errno::ENOMEM));
    h.increase_reservation(b, Pages(10)).unwrap();
    assert_eq!(free(&h), 0);
    assert_eq!(h.populate_physmap(b, &[Pfn(1 << 30)]), Err(Errno::ENOMEM));
    let kernel = xen_elf(1 << 20, true);
    let c = create(&h);
    h.set_max_vcpus(c, 2).unwrap();
    h.set_max_mem_kb(c, Pages::from_mib(16).kib()).unwrap();
    assert_eq!(
        h.build_pv(c, &spec(&kernel, Pages::from_mib(16))).err(),
        Some(Errno::ENOMEM)
    );
    h.destroy(a).unwrap();
    assert_eq!(free(&h), all - 10);
}

#[test]
fn pause_is_counted_and_refused_on_dom0() {
    let h = host();
    let d = create(&h);
    assert_ne!(flags(&h, d) & xen_sys::XEN_DOMINF_paused, 0);
    h.unpause(d).unwrap();
    assert_eq!(flags(&h, d) & xen_sys::XEN_DOMINF_paused, 0);
    assert_eq!(h.unpause(d), Err(Errno::EINVAL));
    h.pause(d).unwrap();
    h.pause(d).unwrap();
    h.unpause(d).unwrap();
    assert_ne!(flags(&h, d) & xen_sys::XEN_DOMINF_paused, 0);
    h.unpause(d).unwrap();
    for _ in 0..255 {
        h.pause(d).unwrap();
    }
    assert_eq!(h.pause(d), Err(Errno::EOVERFLOW));
    assert_eq!(h.pause(DomId::DOM0), Err(Errno::EINVAL));
    assert_eq!(h.unpause(DomId::DOM0), Err(Errno::EINVAL));
    assert_eq!(h.destroy(DomId::DOM0), Err(Errno::EINVAL));
    assert_eq!(
        h.shutdown(DomId::DOM0, xen_sys::SHUTDOWN_poweroff),
        Err(Errno::EPERM)
    );
}

#[test]
fn unknown_domains_are_esrch_everywhere() {
    let h = host();
    let x = DomId(77);
    assert_eq!(h.pause(x), Err(Errno::ESRCH));
    assert_eq!(h.unpause(x), Err(Errno::ESRCH));
    assert_eq!(h.destroy(x), Err(Errno::ESRCH));
    assert_eq!(h.shutdown(x, 0), Err(Errno::ESRCH));
    assert_eq!(h.set_max_vcpus(x, 1), Err(Errno::ESRCH));
    assert_eq!(h.set_max_mem_kb(x, 1), Err(Errno::ESRCH));
    assert_eq!(h.increase_reservation(x, Pages(1)), Err(Errno::ESRCH));
    assert_eq!(h.decrease_reservation(x, &[Pfn(1)]), Err(Errno::ESRCH));
    assert_eq!(h.populate_physmap(x, &[Pfn(1)]), Err(Errno::ESRCH));
    assert_eq!(h.domain_info(x).err(), Some(Errno::ESRCH));
    assert_eq!(h.vcpu_info(x, VcpuId(0)).err(), Some(Errno::ESRCH));
    assert_eq!(h.domain_ref(x).err(), Some(Errno::ESRCH));
    assert_eq!(
        h.build_pv(x, &spec(&xen_elf(4096, true), Pages(512))).err(),
        Some(Errno::ESRCH)
    );
}

#[test]
fn shutdown_records_the_first_reason_and_raises_dom_exc() {
    let h = host();
    let d = create(&h);
    let seq = h.dom_exc_seq();
    assert_eq!(h.shutdown(d, xen_sys::SHUTDOWN_MAX + 1), Err(Errno::EINVAL));
    h.shutdown(d, xen_sys::SHUTDOWN_crash).unwrap();
    h.shutdown(d, xen_sys::SHUTDOWN_reboot).unwrap();
    let f = flags(&h, d);
    assert_ne!(f & xen_sys::XEN_DOMINF_shutdown, 0);
    let code = (f >> xen_sys::XEN_DOMINF_shutdownshift) & xen_sys::XEN_DOMINF_shutdownmask;
    assert_eq!(code, xen_sys::SHUTDOWN_crash);
    let ex = h.dom_exc_since(seq);
    assert_eq!(ex.len(), 1);
    assert_eq!(
        (ex[0].dom, ex[0].kind),
        (d, ExceptionKind::Shutdown(xen_sys::SHUTDOWN_crash))
    );
}

#[test]
fn dying_domains_keep_their_memory_until_the_last_reference_goes() {
    let h = host();
    let before = free(&h);
    let d = create(&h);
    h.set_max_mem_kb(d, Pages::from_mib(8).kib()).unwrap();
    h.increase_reservation(d, Pages::from_mib(8)).unwrap();
    h.unpause(d).unwrap();
    h.pause(d).unwrap();
    let r = h.domain_ref(d).unwrap();
    let seq = h.dom_exc_seq();
    h.destroy(d).unwrap();
    let info = h.domain_info(d).unwrap();
    assert_ne!(info.flags & xen_sys::XEN_DOMINF_dying, 0);
    assert_eq!(info.tot_pages, Pages::from_mib(8).0);
    assert_eq!(free(&h), before - Pages::from_mib(8).0);
    // Destroying again succeeds; the id stays taken.
    h.destroy(d).unwrap();
    assert_eq!(h.create_domain(d, &config(1)), Err(Errno::EEXIST));
    // A dying domain never runs again: the controller's reference can be dropped, but the
    // next unpause is EINVAL and the domain is not running.
    h.unpause(d).unwrap();
    assert_eq!(h.unpause(d), Err(Errno::EINVAL));
    assert_eq!(flags(&h, d) & xen_sys::XEN_DOMINF_running, 0);
    assert_eq!(h.populate_physmap(d, &[Pfn(1 << 20)]), Err(Errno::ENOMEM));
    drop(r);
    assert_eq!(h.domain_info(d).err(), Some(Errno::ESRCH));
    assert_eq!(free(&h), before);
    let kinds: Vec<_> = h.dom_exc_since(seq).iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![ExceptionKind::Dying, ExceptionKind::Destroyed]);
}

#[test]
fn cpu_time_advances_only_for_running_vcpus() {
    let h = host();
    let clock = h.clock().clone();
    let d = create(&h);
    h.set_max_vcpus(d, 2).unwrap();
    h.set_max_mem_kb(d, Pages::from_mib(32).kib()).unwrap();
    let info = h
        .build_pv(d, &spec(&xen_elf(1 << 20, true), Pages::from_mib(32)))
        .unwrap();
    assert_eq!(info.image, ImageKind::Elf64);
    let secs = |v: u32| h.vcpu_info(d, VcpuId(v)).unwrap().cpu_time;
    // Created paused: no time.
    clock.advance(Duration::from_secs(5));
    assert_eq!(h.domain_info(d).unwrap().cpu_time, 0);
    h.unpause(d).unwrap();
    clock.advance(Duration::from_secs(1));
    assert_eq!((secs(0), secs(1)), (1_000_000_000, 0)); // vCPU 1 is offline
    h.guest_vcpu_set_online(d, VcpuId(1), true).unwrap();
    clock.advance(Duration::from_secs(1));
    assert_eq!((secs(0), secs(1)), (2_000_000_000, 1_000_000_000));
    assert_eq!(h.domain_info(d).unwrap().cpu_time, 3_000_000_000);
    assert_ne!(flags(&h, d) & xen_sys::XEN_DOMINF_running, 0);
    h.guest_vcpu_set_blocked(d, VcpuId(0), true).unwrap();
    clock.advance(Duration::from_secs(1));
    assert_eq!((secs(0), secs(1)), (2_000_000_000, 2_000_000_000));
    let v0 = h.vcpu_info(d, VcpuId(0)).unwrap();
    assert_eq!((v0.online, v0.blocked, v0.running), (1, 1, 0));
    h.pause(d).unwrap();
    clock.advance(Duration::from_secs(10));
    assert_eq!(h.domain_info(d).unwrap().cpu_time, 4_000_000_000);
    h.unpause(d).unwrap();
    h.shutdown(d, xen_sys::SHUTDOWN_poweroff).unwrap();
    clock.advance(Duration::from_secs(10));
    assert_eq!(h.domain_info(d).unwrap().cpu_time, 4_000_000_000);
    assert_eq!(flags(&h, d) & xen_sys::XEN_DOMINF_running, 0);
}

#[test]
fn build_lays_out_rings_in_the_domains_memory() {
    let h = host();
    let d = create(&h);
    let mem = Pages::from_mib(16);
    let before = free(&h);
    // No vCPUs yet: xc_dom_boot_image cannot set vCPU 0's context.
    h.set_max_mem_kb(d, mem.kib()).unwrap();
    let kernel = xen_elf(4 << 20, true);
    assert_eq!(
        h.build_pv(d, &spec(&kernel, mem)).err(),
        Some(Errno::EINVAL)
    );
    h.set_max_vcpus(d, 2).unwrap();
    // Garbage and non-Xen ELF images are EINVAL and allocate nothing.
    assert_eq!(
        h.build_pv(d, &spec(b"garbage", mem)).err(),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        h.build_pv(d, &spec(&xen_elf(4096, false), mem)).err(),
        Some(Errno::EINVAL)
    );
    let mut truncated = kernel.clone();
    truncated.truncate(100);
    assert_eq!(
        h.build_pv(d, &spec(&truncated, mem)).err(),
        Some(Errno::EINVAL)
    );
    // Too little memory for the image.
    assert_eq!(
        h.build_pv(d, &spec(&kernel, Pages(1000))).err(),
        Some(Errno::ENOMEM)
    );
    assert_eq!(free(&h), before);
    let ramdisk = vec![7u8; 3 << 20];
    let mut s = spec(&kernel, mem);
    s.ramdisk = Some(&ramdisk);
    let b = h.build_pv(d, &s).unwrap();
    assert_eq!(b.kernel_pages, Pages(1024));
    assert_eq!(b.ramdisk_pages, Pages(768));
    assert!(b.console_pfn.0 < mem.0 && b.store_pfn.0 < mem.0);
    assert!(b.start_info_pfn.0 >= 1024 + 768);
    assert_ne!(b.console_pfn, b.store_pfn);
    assert_ne!(b.console_mfn.0, b.store_mfn.0);
    assert_eq!(
        (b.console_port, b.store_port),
        (EvtchnPort(1), EvtchnPort(2))
    );
    assert_eq!(free(&h), before - mem.0);
    let info = h.domain_info(d).unwrap();
    assert_eq!((info.tot_pages, info.nr_online_vcpus), (mem.0, 1));
    // Built once only.
    assert_eq!(
        h.build_pv(d, &spec(&kernel, mem)).err(),
        Some(Errno::EINVAL)
    );
}

#[test]
fn bzimages_are_accepted_for_pv_only() {
    let mut k = vec![0u8; 8192];
    k[0x1f1] = 1; // setup_sects
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
    k[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
    k[0x24c..0x250].copy_from_slice(&100u32.to_le_bytes());
    k[0x260..0x264].copy_from_slice(&(2u32 << 20).to_le_bytes());
    k[1024..1026].copy_from_slice(&[0x1f, 0x8b]);
    let h = host();
    let d = create(&h);
    h.set_max_vcpus(d, 2).unwrap();
    h.set_max_mem_kb(d, Pages::from_mib(16).kib()).unwrap();
    let b = h.build_pv(d, &spec(&k, Pages::from_mib(16))).unwrap();
    assert_eq!((b.image, b.kernel_pages), (ImageKind::BzImage, Pages(512)));
    // A payload that is not compressed is refused.
    let mut bad = k.clone();
    bad[1024] = 0;
    let mut c = config(1);
    let e = h.create_domain(DomId::INVALID, &c).unwrap();
    h.set_max_vcpus(e, 1).unwrap();
    h.set_max_mem_kb(e, Pages::from_mib(16).kib()).unwrap();
    assert_eq!(
        h.build_pv(e, &spec(&bad, Pages::from_mib(16))).err(),
        Some(Errno::EINVAL)
    );
    c.flags = xen_sys::XEN_DOMCTL_CDF_hvm;
    let f = h.create_domain(DomId::INVALID, &c).unwrap();
    h.set_max_vcpus(f, 1).unwrap();
    h.set_max_mem_kb(f, Pages::from_mib(16).kib()).unwrap();
    assert_eq!(
        h.build_pv(f, &spec(&k, Pages::from_mib(16))).err(),
        Some(Errno::EINVAL)
    );
    // PVH takes an ELF and its frames are translated (mfn == pfn).
    let b = h
        .build_pv(f, &spec(&xen_elf(1 << 20, true), Pages::from_mib(16)))
        .unwrap();
    assert_eq!(b.console_mfn.0, b.console_pfn.0);
}

#[test]
fn getinfolist_pages_through_domains_in_id_order() {
    let h = host();
    for _ in 0..5 {
        create(&h);
    }
    let first = h.domain_info_list(DomId(0), 2);
    assert_eq!(
        first.iter().map(|i| i.domain).collect::<Vec<_>>(),
        vec![0, 1]
    );
    let next = h.domain_info_list(DomId(first[1].domain + 1), 10);
    assert_eq!(
        next.iter().map(|i| i.domain).collect::<Vec<_>>(),
        vec![2, 3, 4, 5]
    );
    assert!(h.domain_info_list(DomId(6), 10).is_empty());
}

#[test]
fn waiters_wake_on_domain_exceptions() {
    let h = host();
    let d = create(&h);
    let seq = h.dom_exc_seq();
    assert_eq!(h.wait_dom_exc(seq, Duration::from_millis(10)), None);
    let h2 = h.clone();
    let t = std::thread::spawn(move || h2.wait_dom_exc(seq, Duration::from_secs(30)));
    h.destroy(d).unwrap();
    let woke = t.join().unwrap().expect("woken before the timeout");
    assert!(woke > seq);
}
