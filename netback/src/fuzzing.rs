//! Fuzzing entry points (feature `test-utils`): arbitrary bytes as tx ring entries.

use gnttab::GrantMap;
use xen_ring::FrontRing;
use xen_sys::{netif_tx_request, netif_tx_response};
use xen_types::mem::SharedMemoryExt;
use xen_types::{DomId, Pages, Pfn, PAGE_SIZE};

use crate::queue::{TxPath, TxRing};
use crate::wire::{rsp, ETH_HLEN, MAX_PACKET};

const FE: DomId = DomId(1);
const PAGES: usize = 24;
const ENTRY: usize = std::mem::size_of::<netif_tx_request>();

/// Puts `data` into a fresh tx ring as request entries (first byte: how far past the
/// written entries the producer index claims, in steps of 37; the rest: 12-byte entries
/// back to back), lets the tx path consume them, and checks that nothing panics, that a
/// pass that did not stop the queue answered every request it consumed with a known
/// status, and that every frame handed on is a whole packet of a valid size.
///
/// Every input runs on a world of its own (a simulated host, a guest with fresh memory and
/// grants: pages 1..=16 read-write, 17..=20 read-only, higher references unused).
pub fn netback_tx(data: &[u8]) {
    let Some((&ctl, body)) = data.split_first() else {
        return;
    };
    let host = xen_sim::Host::default();
    let cfg = xen_sys::xen_domctl_createdomain {
        max_grant_frames: 4,
        ..xen_sim::domain::small_pv_guest(63)
    };
    let d = host.create_domain(FE, &cfg).expect("guest");
    host.set_max_mem_kb(d, (PAGES as u64 + 16) * 4)
        .expect("memory");
    let pfns: Vec<Pfn> = (0..PAGES as u64).map(Pfn).collect();
    host.populate_physmap(d, &pfns).expect("populate");
    let mem = host.guest_pages(d, &pfns).expect("guest memory");
    for p in 1..PAGES {
        mem.fill(p * PAGE_SIZE, PAGE_SIZE, p as u8).expect("fill");
    }
    let ring_ref = host
        .grant_access(FE, DomId::DOM0, Pfn(0), false)
        .expect("grant");
    for p in 1..=20u64 {
        host.grant_access(FE, DomId::DOM0, Pfn(p), p > 16)
            .expect("grant");
    }
    let page = host.guest_pages(d, &[Pfn(0)]).expect("ring page");
    let mut front: FrontRing<_, netif_tx_request, netif_tx_response> =
        FrontRing::new(page, Pages(1)).expect("ring");
    let n = (body.len() / ENTRY).min(front.ring_size() as usize);
    for i in 0..n {
        let e = &body[i * ENTRY..(i + 1) * ENTRY];
        let u16at = |o: usize| u16::from_ne_bytes([e[o], e[o + 1]]);
        front
            .push_request(netif_tx_request {
                gref: u32::from_ne_bytes([e[0], e[1], e[2], e[3]]),
                offset: u16at(4),
                flags: u16at(6),
                id: u16at(8),
                size: u16at(10),
            })
            .expect("free slot");
    }
    front.push_requests();
    if ctl > 0 {
        front
            .memory()
            .write_obj(0, (n as u32).wrapping_add(u32::from(ctl) * 37))
            .expect("req_prod");
    }
    let gnttab = gnttab::SimGnttab::open(&host, DomId::DOM0).expect("gnttab");
    let mapping = gnttab
        .map(FE, &[ring_ref], gnttab::Access::ReadWrite)
        .expect("map ring");
    let mut tx = TxPath::new(TxRing::new(mapping, Pages(1)).expect("attach"), FE);
    // Large packets' data slots by grant mapping, the others by copy: both paths.
    tx.set_map_min(Some(2 * PAGE_SIZE));
    let mut frames = 0u64;
    let result = tx.serve(&gnttab, &mut |_, f| {
        assert!(
            (ETH_HLEN..=MAX_PACKET).contains(&f.len()),
            "frame of {}",
            f.len()
        );
        frames += 1;
    });
    if let Ok(pass) = result {
        assert_eq!(pass.packets, frames);
        assert_eq!(
            tx.ring_mut().pending(),
            0,
            "every consumed request answered"
        );
        if ctl == 0 {
            assert_eq!(tx.ring_mut().req_cons(), n as u32, "every request consumed");
        }
    }
    while let Ok(Some(r)) = front.take_response() {
        assert!(
            [rsp::OKAY, rsp::ERROR, rsp::NULL].contains(&r.status),
            "status {}",
            r.status
        );
    }
}
