//! Grant tables and domain memory of the simulated host, each rule checked against the
//! status Xen 4.17 (`xen/common/grant_table.c`, v1 tables) returns.

use xen_sim::grant::{CopyDest, CopySegment, CopySource, GrantStatus, UnmapNotify};
use xen_sim::Host;
use xen_types::mem::{SharedMemory, SharedMemoryExt};
use xen_types::{DomId, Errno, EvtchnPort, GrantRef, Pages, PAGE_SIZE};

const GTF_PERMIT: u16 = xen_sys::GTF_permit_access as u16;
const GTF_READONLY: u16 = xen_sys::GTF_readonly as u16;
const GTF_READING: u16 = xen_sys::GTF_reading as u16;
const GTF_WRITING: u16 = xen_sys::GTF_writing as u16;

fn guest(h: &Host) -> DomId {
    let cfg = xen_sys::xen_domctl_createdomain {
        max_vcpus: 1,
        max_evtchn_port: 1023,
        max_grant_frames: 1,
        max_maptrack_frames: 16,
        grant_opts: 1,
        ..Default::default()
    };
    let d = h.create_domain(DomId::INVALID, &cfg).unwrap();
    h.set_max_mem_kb(d, 4096).unwrap();
    h.increase_reservation(d, Pages(256)).unwrap();
    d
}

/// A guest page with `fill` written in it, granted to dom0.
fn granted_page(h: &Host, g: DomId, readonly: bool, fill: u8) -> GrantRef {
    let pfn = h.alloc_pages(g, 1).unwrap()[0];
    let view = h.guest_pages(g, &[pfn]).unwrap();
    view.fill(0, PAGE_SIZE, fill).unwrap();
    h.grant_access(g, DomId::DOM0, pfn, readonly).unwrap()
}

fn status(e: Result<impl Sized, Vec<GrantStatus>>) -> Vec<GrantStatus> {
    e.err().expect("map should fail")
}

#[test]
fn a_mapping_aliases_the_granting_domains_page() {
    let h = Host::default();
    let g = guest(&h);
    let pfns = h.alloc_pages(g, 2).unwrap();
    let front = h.guest_pages(g, &pfns).unwrap();
    let r0 = h.grant_access(g, DomId::DOM0, pfns[0], false).unwrap();
    let r1 = h.grant_access(g, DomId::DOM0, pfns[1], false).unwrap();
    assert!(
        r0.get() >= xen_sys::GNTTAB_NR_RESERVED_ENTRIES,
        "reserved refs are skipped"
    );
    // Mapped in the other order: page 0 of the mapping is the guest's page 1.
    let back = h.grant_map(DomId::DOM0, g, &[r1, r0], true).unwrap();
    assert_eq!(back.len(), 2 * PAGE_SIZE);
    front.write_obj(PAGE_SIZE + 8, 0xfeed_u32).unwrap();
    assert_eq!(back.read_obj::<u32>(8).unwrap(), 0xfeed);
    back.write_obj(PAGE_SIZE + 100, 0xabcd_u16).unwrap();
    assert_eq!(front.read_obj::<u16>(100).unwrap(), 0xabcd);
    // Atomics on the same word from both sides (ring indexes).
    back.atomic_u32(64)
        .unwrap()
        .store(7, std::sync::atomic::Ordering::Release);
    assert_eq!(
        front
            .atomic_u32(PAGE_SIZE + 64)
            .unwrap()
            .load(std::sync::atomic::Ordering::Acquire),
        7
    );
}

#[test]
fn only_the_grantee_may_map() {
    let h = Host::default();
    let g = guest(&h);
    let g2 = guest(&h);
    let r = granted_page(&h, g, false, 1);
    // g2 is not the grantee: Xen's _set_status "Bad flags or dom" is GNTST_general_error.
    assert_eq!(
        status(h.grant_map(g2, g, &[r], false)),
        vec![GrantStatus::GENERAL_ERROR]
    );
    assert!(h.grant_map(DomId::DOM0, g, &[r], false).is_ok());
}

#[test]
fn a_read_only_grant_cannot_be_mapped_writable() {
    let h = Host::default();
    let g = guest(&h);
    let r = granted_page(&h, g, true, 0x5a);
    assert_eq!(
        status(h.grant_map(DomId::DOM0, g, &[r], true)),
        vec![GrantStatus::GENERAL_ERROR]
    );
    let ro = h.grant_map(DomId::DOM0, g, &[r], false).unwrap();
    assert!(!ro.writable());
    assert_eq!(ro.read_obj::<u8>(17).unwrap(), 0x5a);
    assert!(
        ro.write_obj(0, 1u8).is_err(),
        "writes through a read-only map fail"
    );
    let e = h.grant_entry(g, r).unwrap();
    assert_eq!(e.flags, GTF_PERMIT | GTF_READONLY | GTF_READING);
}

#[test]
fn bad_references_and_domains() {
    let h = Host::default();
    let g = guest(&h);
    let r = granted_page(&h, g, false, 0);
    // Never granted (inside the table): general error; beyond the table: bad gntref.
    let beyond = GrantRef(PAGE_SIZE as u32 / 8); // 1 frame of v1 entries
    assert_eq!(
        status(h.grant_map(DomId::DOM0, g, &[r, GrantRef(200), beyond], false)),
        vec![
            GrantStatus::OKAY,
            GrantStatus::GENERAL_ERROR,
            GrantStatus::BAD_GNTREF
        ]
    );
    // The failed batch mapped nothing: the good entry is not pinned.
    assert_eq!(h.grant_entry(g, r).unwrap().flags, GTF_PERMIT);
    assert_eq!(
        status(h.grant_map(DomId::DOM0, DomId(300), &[r], false)),
        vec![GrantStatus::BAD_DOMAIN]
    );
    // Revoked: general error again.
    h.end_access(g, r).unwrap();
    assert_eq!(
        status(h.grant_map(DomId::DOM0, g, &[r], false)),
        vec![GrantStatus::GENERAL_ERROR]
    );
    assert_eq!(
        h.end_access(g, r),
        Err(Errno::EINVAL),
        "ending access twice"
    );
}

#[test]
fn ending_access_while_mapped_is_refused_and_flags_track_mappings() {
    let h = Host::default();
    let g = guest(&h);
    let r = granted_page(&h, g, false, 0);
    let rw = h.grant_map(DomId::DOM0, g, &[r], true).unwrap();
    assert_eq!(
        h.grant_entry(g, r).unwrap().flags,
        GTF_PERMIT | GTF_READING | GTF_WRITING
    );
    let ro = h.grant_map(DomId::DOM0, g, &[r], false).unwrap();
    assert_eq!(h.end_access(g, r), Err(Errno::EBUSY));
    drop(rw);
    assert_eq!(h.grant_entry(g, r).unwrap().flags, GTF_PERMIT | GTF_READING);
    assert_eq!(h.end_access(g, r), Err(Errno::EBUSY));
    drop(ro);
    assert_eq!(h.grant_entry(g, r).unwrap().flags, GTF_PERMIT);
    assert_eq!(h.end_access(g, r), Ok(()));
    assert_eq!(h.grant_entry(g, r).unwrap().flags, 0);
}

#[test]
fn grant_copy_in_all_directions_with_per_segment_status() {
    let h = Host::default();
    let g = guest(&h);
    let src = granted_page(&h, g, true, 0x11);
    let dst = granted_page(&h, g, false, 0x00);
    let ro_dst = granted_page(&h, g, true, 0x22);
    let mut local = vec![0u8; 64];
    let payload = [0x99u8; 32];
    let mut segs = vec![
        // gref -> local
        CopySegment {
            source: CopySource::Gref {
                domid: g,
                gref: src,
                offset: 100,
            },
            dest: CopyDest::Local(&mut local),
            len: 64,
            status: GrantStatus::GENERAL_ERROR,
        },
        // local -> gref
        CopySegment {
            source: CopySource::Local(&payload),
            dest: CopyDest::Gref {
                domid: g,
                gref: dst,
                offset: 4000,
            },
            len: 32,
            status: GrantStatus::GENERAL_ERROR,
        },
        // gref -> gref
        CopySegment {
            source: CopySource::Gref {
                domid: g,
                gref: src,
                offset: 0,
            },
            dest: CopyDest::Gref {
                domid: g,
                gref: dst,
                offset: 0,
            },
            len: 16,
            status: GrantStatus::GENERAL_ERROR,
        },
        // writing to a read-only grant
        CopySegment {
            source: CopySource::Local(&payload),
            dest: CopyDest::Gref {
                domid: g,
                gref: ro_dst,
                offset: 0,
            },
            len: 8,
            status: GrantStatus::OKAY,
        },
        // crossing the page end
        CopySegment {
            source: CopySource::Local(&payload),
            dest: CopyDest::Gref {
                domid: g,
                gref: dst,
                offset: 4090,
            },
            len: 8,
            status: GrantStatus::OKAY,
        },
        // unknown domain, then a reference beyond the table
        CopySegment {
            source: CopySource::Gref {
                domid: DomId(999),
                gref: src,
                offset: 0,
            },
            dest: CopyDest::Local(&mut []),
            len: 0,
            status: GrantStatus::OKAY,
        },
        CopySegment {
            source: CopySource::Gref {
                domid: g,
                gref: GrantRef(100_000),
                offset: 0,
            },
            dest: CopyDest::Local(&mut []),
            len: 0,
            status: GrantStatus::OKAY,
        },
    ];
    h.grant_copy(DomId::DOM0, &mut segs);
    let st: Vec<_> = segs.iter().map(|s| s.status).collect();
    assert_eq!(
        st,
        vec![
            GrantStatus::OKAY,
            GrantStatus::OKAY,
            GrantStatus::OKAY,
            GrantStatus::GENERAL_ERROR,
            GrantStatus::BAD_COPY_ARG,
            GrantStatus::BAD_DOMAIN,
            GrantStatus::BAD_GNTREF,
        ]
    );
    drop(segs);
    assert!(local.iter().all(|&b| b == 0x11));
    let m = h.grant_map(DomId::DOM0, g, &[dst, ro_dst], false).unwrap();
    let mut buf = [0u8; 32];
    m.read_bytes(4000, &mut buf).unwrap();
    assert_eq!(buf, payload);
    m.read_bytes(0, &mut buf).unwrap();
    assert_eq!(&buf[..16], &[0x11; 16]);
    assert_eq!(&buf[16..], &[0x00; 16]);
    assert_eq!(
        m.read_obj::<u8>(PAGE_SIZE).unwrap(),
        0x22,
        "ro page untouched"
    );
    assert_eq!(
        m.read_obj::<u8>(4095).unwrap(),
        0,
        "no partial write past the end"
    );

    // Copy checks the grantee too.
    let g2 = guest(&h);
    let mut out = [0u8; 4];
    let mut seg = [CopySegment {
        source: CopySource::Gref {
            domid: g,
            gref: src,
            offset: 0,
        },
        dest: CopyDest::Local(&mut out),
        len: 4,
        status: GrantStatus::OKAY,
    }];
    h.grant_copy(g2, &mut seg);
    assert_eq!(seg[0].status, GrantStatus::GENERAL_ERROR);
}

#[test]
fn mappings_keep_a_destroyed_granter_dying_until_the_last_unmap() {
    let h = Host::default();
    let g = guest(&h);
    let r = granted_page(&h, g, false, 0x33);
    let m = h.grant_map(DomId::DOM0, g, &[r], true).unwrap();
    h.destroy(g).unwrap();
    assert!(h.lock().domains.get(&g).is_some_and(|d| d.dying), "zombie");
    // The page is still there and still aliased.
    assert_eq!(m.read_obj::<u8>(0).unwrap(), 0x33);
    drop(m);
    assert!(
        !h.lock().domains.contains_key(&g),
        "reaped after the last unmap"
    );
}

#[test]
fn a_destroyed_granter_without_mappings_goes_at_once() {
    let h = Host::default();
    let g = guest(&h);
    let _r = granted_page(&h, g, false, 0);
    h.destroy(g).unwrap();
    assert!(!h.lock().domains.contains_key(&g));
}

#[test]
fn shared_pages_revoke_on_drop_deferred_while_mapped() {
    let h = Host::default();
    let g = guest(&h);
    // The guest shares two pages with dom0 (gntalloc in the guest).
    let shared = h.share_pages(g, DomId::DOM0, 2, true).unwrap();
    assert_eq!(shared.refs().len(), 2);
    shared.write_obj(PAGE_SIZE + 4, 0x77_u8).unwrap();
    let m = h.grant_map(DomId::DOM0, g, shared.refs(), true).unwrap();
    assert_eq!(m.read_obj::<u8>(PAGE_SIZE + 4).unwrap(), 0x77);
    let refs = shared.refs().to_vec();
    drop(shared);
    // Still mapped: the revoke is deferred, the page still aliased, new maps refused.
    m.write_obj(0, 1u8).unwrap();
    assert_eq!(
        status(h.grant_map(DomId::DOM0, g, &refs[..1], false)),
        vec![GrantStatus::GENERAL_ERROR]
    );
    drop(m);
    assert_eq!(h.grant_entry(g, refs[0]).unwrap().flags, 0);
    // Read-only sharing: the grantee cannot map it writable.
    let ro = h.share_pages(g, DomId::DOM0, 1, false).unwrap();
    assert_eq!(
        status(h.grant_map(DomId::DOM0, g, ro.refs(), true)),
        vec![GrantStatus::GENERAL_ERROR]
    );
    assert!(ro.writable(), "the sharer's own view is writable");
}

#[test]
fn unmap_notify_clears_a_byte_and_sends_an_event() {
    let h = Host::default();
    let g = guest(&h);
    let front_ev = h.evtchn_open(g).unwrap();
    let back_ev = h.evtchn_open(DomId::DOM0).unwrap();
    let fp = front_ev.bind_unbound_port(DomId::DOM0).unwrap();
    let bp = back_ev.bind_interdomain(g, fp).unwrap();

    let pfn = h.alloc_pages(g, 1).unwrap()[0];
    let front = h.guest_pages(g, &[pfn]).unwrap();
    front.fill(0, PAGE_SIZE, 0xff).unwrap();
    let r = h.grant_access(g, DomId::DOM0, pfn, false).unwrap();
    let mut m = h.grant_map(DomId::DOM0, g, &[r], true).unwrap();
    assert_eq!(
        m.set_unmap_notify(UnmapNotify {
            clear_byte: Some(PAGE_SIZE),
            send_event: None
        }),
        Err(Errno::EINVAL)
    );
    m.set_unmap_notify(UnmapNotify {
        clear_byte: Some(10),
        send_event: Some(bp),
    })
    .unwrap();
    let mut buf = [EvtchnPort(0); 4];
    assert_eq!(front_ev.read_pending(&mut buf), 0);
    drop(m); // e.g. the backend crashed
    assert_eq!(front.read_obj::<u8>(10).unwrap(), 0);
    assert_eq!(front.read_obj::<u8>(11).unwrap(), 0xff);
    assert_eq!(front_ev.read_pending(&mut buf), 1);
    assert_eq!(buf[0], fp);

    // A read-only mapping cannot clear a byte.
    let mut ro = h.grant_map(DomId::DOM0, g, &[r], false).unwrap();
    assert_eq!(
        ro.set_unmap_notify(UnmapNotify {
            clear_byte: Some(0),
            send_event: None
        }),
        Err(Errno::EINVAL)
    );
}

#[test]
fn guest_memory_rules() {
    let h = Host::default();
    let g = guest(&h);
    assert_eq!(h.alloc_pages(g, 257).err(), Some(Errno::ENOMEM));
    let all = h.alloc_pages(g, 256).unwrap();
    assert_eq!(h.alloc_pages(g, 1).err(), Some(Errno::ENOMEM));
    h.free_pages(g, &all[..1]).unwrap();
    assert_eq!(h.alloc_pages(g, 1).unwrap(), all[..1].to_vec());
    // Frames the domain does not have.
    assert_eq!(
        h.guest_pages(g, &[xen_types::Pfn(1 << 20)]).err(),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        h.grant_access(g, DomId::DOM0, xen_types::Pfn(1 << 20), false),
        Err(Errno::EINVAL)
    );
    assert_eq!(h.alloc_pages(DomId(999), 1).err(), Some(Errno::ESRCH));
}

#[test]
fn grant_table_full_is_enospc_and_reserved_entries_can_be_set() {
    let h = Host::default();
    let g = guest(&h);
    let pfn = h.alloc_pages(g, 1).unwrap()[0];
    let per_frame = PAGE_SIZE / 8;
    for _ in xen_sys::GNTTAB_NR_RESERVED_ENTRIES as usize..per_frame {
        h.grant_access(g, DomId::DOM0, pfn, true).unwrap();
    }
    assert_eq!(
        h.grant_access(g, DomId::DOM0, pfn, true),
        Err(Errno::ENOSPC)
    );
    let xs = GrantRef(xen_sys::GNTTAB_RESERVED_XENSTORE);
    h.grant_access_at(g, xs, DomId::DOM0, pfn, false).unwrap();
    assert_eq!(
        h.grant_access_at(g, xs, DomId::DOM0, pfn, false),
        Err(Errno::EBUSY)
    );
    assert!(h.grant_map(DomId::DOM0, g, &[xs], true).is_ok());
}

/// Random grants, maps, unmaps and ends of access; after each step every entry's
/// `GTF_reading`/`GTF_writing` flags match the live mappings, and ending access succeeds
/// exactly when nothing maps the entry.
#[test]
fn random_grant_operations_keep_flags_and_mappings_consistent() {
    let h = Host::default();
    let g = guest(&h);
    let pfns = h.alloc_pages(g, 8).unwrap();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    // (gref, readonly) granted so far; live mappings with their ref and writability.
    let mut granted: Vec<(GrantRef, bool)> = Vec::new();
    let mut maps: Vec<(GrantRef, bool, xen_sim::grant::GrantMapping)> = Vec::new();
    for _ in 0..3000 {
        match rnd(5) {
            0 if granted.len() < 16 => {
                let ro = rnd(2) == 0;
                let r = h
                    .grant_access(g, DomId::DOM0, pfns[rnd(8) as usize], ro)
                    .unwrap();
                granted.push((r, ro));
            }
            1 if !granted.is_empty() => {
                let (r, ro) = granted[rnd(granted.len() as u64) as usize];
                let want_rw = rnd(2) == 0;
                match h.grant_map(DomId::DOM0, g, &[r], want_rw) {
                    Ok(m) => {
                        assert!(!(ro && want_rw), "read-only grant mapped writable");
                        maps.push((r, want_rw, m));
                    }
                    Err(st) => {
                        assert!(ro && want_rw);
                        assert_eq!(st, vec![GrantStatus::GENERAL_ERROR]);
                    }
                }
            }
            2 if !maps.is_empty() => {
                let i = rnd(maps.len() as u64) as usize;
                maps.swap_remove(i);
            }
            3 if !granted.is_empty() => {
                let i = rnd(granted.len() as u64) as usize;
                let r = granted[i].0;
                let mapped = maps.iter().any(|(mr, _, _)| *mr == r);
                match h.end_access(g, r) {
                    Ok(()) => {
                        assert!(!mapped);
                        granted.swap_remove(i);
                    }
                    Err(e) => {
                        assert!(mapped);
                        assert_eq!(e, Errno::EBUSY);
                    }
                }
            }
            _ => {}
        }
        for &(r, ro) in &granted {
            let flags = h.grant_entry(g, r).unwrap().flags;
            let reading = maps.iter().any(|(mr, _, _)| *mr == r);
            let writing = maps.iter().any(|(mr, rw, _)| *mr == r && *rw);
            let mut want = GTF_PERMIT;
            if ro {
                want |= GTF_READONLY;
            }
            if reading {
                want |= GTF_READING;
            }
            if writing {
                want |= GTF_WRITING;
            }
            assert_eq!(flags, want, "entry {r:?}");
        }
    }
}
