//! `Gnttab`/`Gntshr` over the simulated host: a guest shares pages, dom0 maps and copies.

use std::time::Duration;

use gnttab::{
    Access, CopyDest, CopySegment, CopySource, Error, Gntshr, Gnttab, GrantMap, GrantShare,
    GrantStatus, SimGntshr, SimGnttab, UnmapNotify,
};
use xen_types::mem::{SharedMemory, SharedMemoryExt};
use xen_types::{DomId, Errno, EvtchnPort, GrantRef, Pages, PAGE_SIZE};

fn host_with_guest() -> (xen_sim::Host, DomId) {
    let h = xen_sim::Host::default();
    let cfg = xen_sim::domain::small_pv_guest(1023);
    let g = h.create_domain(DomId::INVALID, &cfg).unwrap();
    h.set_max_mem_kb(g, 8192).unwrap();
    h.increase_reservation(g, Pages(512)).unwrap();
    (h, g)
}

/// Works on any shared memory: the point of the trait.
fn checksum<M: SharedMemory>(m: &M) -> u64 {
    (0..m.len() / 8)
        .map(|i| m.read_obj::<u64>(i * 8).unwrap())
        .sum()
}

#[test]
fn guest_shares_backend_maps_and_writes_are_seen_both_ways() {
    let (h, g) = host_with_guest();
    let front = Gntshr::open_sim(&h, g)
        .unwrap()
        .share(DomId::DOM0, 4, Access::ReadWrite)
        .unwrap();
    let back = Gnttab::open_sim(&h, DomId::DOM0).unwrap();
    let m = back.map(g, front.refs(), Access::ReadWrite).unwrap();
    assert!(m.writable());
    assert_eq!(m.len(), 4 * PAGE_SIZE);
    front.write_obj(3 * PAGE_SIZE + 16, 42u64).unwrap();
    assert_eq!(m.read_obj::<u64>(3 * PAGE_SIZE + 16).unwrap(), 42);
    m.write_obj(8, 5u64).unwrap();
    assert_eq!(front.read_obj::<u64>(8).unwrap(), 5);
    assert_eq!(checksum(&m), checksum(&front));

    let one = back.map_one(g, front.refs()[1], Access::ReadOnly).unwrap();
    assert!(!one.writable());
    assert!(one.write_obj(0, 1u8).is_err());
}

#[test]
fn failed_maps_report_per_reference_status() {
    let (h, g) = host_with_guest();
    let ro = Gntshr::open_sim(&h, g)
        .unwrap()
        .share(DomId::DOM0, 1, Access::ReadOnly)
        .unwrap();
    let back = Gnttab::open_sim(&h, DomId::DOM0).unwrap();
    match back.map(g, &[ro.refs()[0], GrantRef(1 << 20)], Access::ReadWrite) {
        Err(Error::Map { statuses }) => assert_eq!(
            statuses,
            vec![GrantStatus::GENERAL_ERROR, GrantStatus::BAD_GNTREF]
        ),
        other => panic!("unexpected {other:?}"),
    }
    let e = back.map(g, &[], Access::ReadOnly).unwrap_err();
    assert_eq!(e.errno(), Errno::EINVAL);
    assert_eq!(
        Gnttab::open_sim(&h, DomId(55)).unwrap_err().errno(),
        Errno::ESRCH
    );
    assert_eq!(
        Gntshr::open_sim(&h, DomId(55)).unwrap_err().errno(),
        Errno::ESRCH
    );
}

#[test]
fn batched_grant_copy_both_directions() {
    let (h, g) = host_with_guest();
    let front = Gntshr::open_sim(&h, g)
        .unwrap()
        .share(DomId::DOM0, 2, Access::ReadWrite)
        .unwrap();
    front.fill(0, PAGE_SIZE, 0xab).unwrap();
    let back = Gnttab::open_sim(&h, DomId::DOM0).unwrap();
    let mut out = vec![0u8; PAGE_SIZE];
    let data = vec![0xcd_u8; PAGE_SIZE];
    let mut segs = [
        CopySegment {
            source: CopySource::Gref {
                domid: g,
                gref: front.refs()[0],
                offset: 0,
            },
            dest: CopyDest::Local(&mut out),
            len: PAGE_SIZE as u16,
            status: GrantStatus::GENERAL_ERROR,
        },
        CopySegment {
            source: CopySource::Local(&data),
            dest: CopyDest::Gref {
                domid: g,
                gref: front.refs()[1],
                offset: 0,
            },
            len: PAGE_SIZE as u16,
            status: GrantStatus::GENERAL_ERROR,
        },
        CopySegment {
            source: CopySource::Local(&data[..10]),
            dest: CopyDest::Gref {
                domid: g,
                gref: front.refs()[1],
                offset: 0,
            },
            len: 11,
            status: GrantStatus::OKAY,
        },
    ];
    back.copy(&mut segs).unwrap();
    assert_eq!(
        segs.iter().map(|s| s.status).collect::<Vec<_>>(),
        vec![
            GrantStatus::OKAY,
            GrantStatus::OKAY,
            GrantStatus::BAD_COPY_ARG
        ]
    );
    assert!(out.iter().all(|&b| b == 0xab));
    assert_eq!(front.read_obj::<u8>(PAGE_SIZE + 4095).unwrap(), 0xcd);
}

#[test]
fn sharer_going_away_notifies_the_mapper() {
    let (h, g) = host_with_guest();
    let fe = evtchn::Evtchn::open_sim(&h, g).unwrap();
    let be = evtchn::Evtchn::open_sim(&h, DomId::DOM0).unwrap();
    let fp = fe.bind_unbound_port(DomId::DOM0).unwrap();
    let bp = be.bind_interdomain(g, fp).unwrap();
    assert_eq!(be.pending().unwrap(), Some(bp));
    be.unmask(bp).unwrap();

    let mut front = Gntshr::open_sim(&h, g)
        .unwrap()
        .share(DomId::DOM0, 1, Access::ReadWrite)
        .unwrap();
    front.write_obj(0, 1u8).unwrap();
    assert_eq!(
        front
            .set_unmap_notify(UnmapNotify {
                clear_byte: Some(PAGE_SIZE),
                send_event: None
            })
            .unwrap_err()
            .errno(),
        Errno::EINVAL
    );
    front
        .set_unmap_notify(UnmapNotify {
            clear_byte: Some(0),
            send_event: Some(fp),
        })
        .unwrap();
    let back = Gnttab::open_sim(&h, DomId::DOM0).unwrap();
    let m = back.map_one(g, front.refs()[0], Access::ReadWrite).unwrap();
    assert_eq!(m.read_obj::<u8>(0).unwrap(), 1);
    drop(front); // the frontend process dies
    assert_eq!(m.read_obj::<u8>(0).unwrap(), 0, "byte cleared");
    let mut buf = [EvtchnPort(0); 2];
    let n = be.wait(&mut buf, Some(Duration::from_secs(10))).unwrap();
    assert_eq!(&buf[..n], &[bp]);
}

#[test]
fn mapper_going_away_notifies_the_sharer() {
    let (h, g) = host_with_guest();
    let fe = evtchn::Evtchn::open_sim(&h, g).unwrap();
    let be = evtchn::Evtchn::open_sim(&h, DomId::DOM0).unwrap();
    let fp = fe.bind_unbound_port(DomId::DOM0).unwrap();
    let bp = be.bind_interdomain(g, fp).unwrap();
    let front = Gntshr::open_sim(&h, g)
        .unwrap()
        .share(DomId::DOM0, 1, Access::ReadWrite)
        .unwrap();
    front.write_obj(100, 0xffu8).unwrap();
    let back = Gnttab::open_sim(&h, DomId::DOM0).unwrap();
    let mut m = back.map_one(g, front.refs()[0], Access::ReadWrite).unwrap();
    m.set_unmap_notify(UnmapNotify {
        clear_byte: Some(100),
        send_event: Some(bp),
    })
    .unwrap();
    drop(m);
    assert_eq!(front.read_obj::<u8>(100).unwrap(), 0);
    let mut buf = [EvtchnPort(0); 2];
    let n = fe.wait(&mut buf, Some(Duration::from_secs(10))).unwrap();
    assert_eq!(&buf[..n], &[fp]);
}

/// A backend's copy step written once over the trait.
fn copy_page_in<G: GrantMap>(gt: &G, dom: DomId, gref: GrantRef, dst: &mut [u8]) -> GrantStatus {
    let mut seg = [CopySegment {
        source: CopySource::Gref {
            domid: dom,
            gref,
            offset: 0,
        },
        dest: CopyDest::Local(dst),
        len: PAGE_SIZE as u16,
        status: GrantStatus::GENERAL_ERROR,
    }];
    gt.copy(&mut seg).unwrap();
    seg[0].status
}

#[test]
fn code_over_the_traits_runs_on_the_sim_types_and_the_handles() {
    let (h, g) = host_with_guest();
    let shr = SimGntshr::open(&h, g).unwrap();
    let front = shr.share(DomId::DOM0, 1, Access::ReadOnly).unwrap();
    front.write_obj(0, 0xfeed_u32).unwrap();
    let sim = SimGnttab::open(&h, DomId::DOM0).unwrap();
    let mut page = vec![0u8; PAGE_SIZE];
    assert_eq!(
        copy_page_in(&sim, g, front.refs()[0], &mut page),
        GrantStatus::OKAY
    );
    assert_eq!(u32::from_ne_bytes(page[..4].try_into().unwrap()), 0xfeed);
    let boxed = Gnttab::new(sim.clone());
    page.fill(0);
    assert_eq!(
        copy_page_in(&boxed, g, front.refs()[0], &mut page),
        GrantStatus::OKAY
    );
    assert_eq!(u32::from_ne_bytes(page[..4].try_into().unwrap()), 0xfeed);
    // A read-only grant cannot be mapped writable, whichever way it is asked.
    let err = GrantMap::map(&sim, g, front.refs(), Access::ReadWrite).unwrap_err();
    assert!(
        matches!(err, Error::Map { ref statuses } if statuses == &[GrantStatus::GENERAL_ERROR])
    );
}
