//! Fuzzing entry points (feature `test-utils`): arbitrary bytes as ring entries.

use std::sync::Arc;

use xen_types::mem::SharedMemoryExt;
use xen_types::{DomId, PAGE_SIZE};

use crate::abi::{Protocol, Response};
use crate::blkfront::{FrontHost, Region};
use crate::disk::Disk;
use crate::driver::Stats;
use crate::queue::{Pool, QueueConfig, RingServer};
use crate::request::Limits;
use crate::ring::{BackRing, FrontRing};
use crate::xen::{RingChannel, XenSimGuest};
use gnttab::GrantMap;

const FE: DomId = DomId(1);
const PAGES: usize = 32;

/// Puts `data` into a fresh ring as request entries (first byte: protocol and limits;
/// the rest: entries back to back, the producer index covering as many entries as the
/// bytes fill, possibly more), lets the backend consume them all, and checks, on the
/// backend's own counters, that it answered every request it consumed exactly once with a
/// well-formed status, and that it unmapped every grant.
///
/// Every input runs on a world of its own (a simulated host, a guest with fresh memory and
/// grants, an empty disk, a backend), so a crash input reproduces alone.
pub fn blkback_requests(data: &[u8]) {
    let Some((&ctl, body)) = data.split_first() else {
        return;
    };
    let host = xen_sim::Host::default();
    let guest = XenSimGuest::new(&host);
    let mem = Arc::new(guest.create_guest(FE, PAGES).expect("guest memory"));
    let ring_ref = guest.grant(FE, 0, DomId::DOM0, false).expect("grant");
    // Grant refs 9.. : pages 1..=20 read-write, 21..=24 read-only; higher refs unused.
    for p in 1..=24 {
        guest.grant(FE, p, DomId::DOM0, p > 20).expect("grant");
    }
    // SAFETY: memfd_create with a valid name.
    let fd = unsafe { libc::memfd_create(c"fuzz-disk".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd");
    // SAFETY: fd was just created and is owned by nothing else.
    let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    file.set_len(1 << 20).expect("disk size");
    let disk = Arc::new(Disk::from_file(file, false).expect("disk"));

    let proto = match ctl & 3 {
        0 => Protocol::Native,
        1 => Protocol::X86_32,
        _ => Protocol::X86_64,
    };
    let region = Region::new(mem.clone(), 0, 1).expect("region");
    let layout = crate::ring::layout(PAGE_SIZE, proto).expect("layout");
    let mut front = FrontRing::init_with_layout(region.clone(), layout).expect("ring");
    let esz = proto.entry_size();
    let n = (body.len() / esz).min(front.ring_size() as usize);
    for i in 0..n {
        let off = front.next_request_slot().expect("free slot");
        region
            .write_bytes(off, &body[i * esz..(i + 1) * esz])
            .expect("entry");
    }
    let extra = u32::from(ctl >> 5);
    front.push_requests();
    if extra > 0 {
        // Claim more requests than were written (possibly past the ring size).
        region
            .write_obj(0, (n as u32).wrapping_add(extra * 5))
            .expect("req_prod");
    }
    let fe_chan =
        RingChannel::unbound(guest.open_evtchn(FE).expect("evtchn"), DomId::DOM0).expect("port");
    // The backend, in dom0, through the same traits as on real Xen.
    let gnttab = Arc::new(gnttab::SimGnttab::open(&host, DomId::DOM0).expect("gnttab"));
    let evtchn = evtchn::SimEvtchn::open(&host, DomId::DOM0).expect("evtchn");
    let chan = RingChannel::bind(evtchn, FE, fe_chan.port()).expect("bind");
    let mapping = gnttab
        .map(FE, &[ring_ref], gnttab::Access::ReadWrite)
        .expect("map ring");
    let back = BackRing::with_layout(mapping, layout, 0).expect("attach");
    let limits = Limits {
        sectors: disk.sectors(),
        readonly: ctl & 4 != 0,
        max_indirect_segments: if ctl & 8 != 0 { 0 } else { 64 },
        flush: true,
        discard: ctl & 16 == 0,
        discard_secure: false,
    };
    let cfg = QueueConfig {
        frontend: FE,
        proto,
        limits,
        persistent: ctl & 8 != 0,
        max_persistent_grants: 8,
        idle_poll: std::time::Duration::ZERO,
    };
    let stats = Arc::new(Stats::default());
    let mut pool = Pool::new(1, "fuzz").expect("pool");
    let mut server = RingServer::new(gnttab, back, chan, cfg, disk, pool.sender(), stats.clone());
    let result = server.drain();
    drop(server);
    pool.shutdown();
    // The backend answered each request it consumed exactly once.
    assert_eq!(
        stats.requests(),
        stats.responses(),
        "every request answered once"
    );
    if result.is_ok() && extra == 0 {
        // A well-formed ring: it consumed at least what was pushed. (A request may read
        // disk data into the ring page itself and so move the producer index on: the
        // backend then serves what the index says, as it must; that is the guest's own
        // business, not an error of the backend.)
        assert!(
            stats.requests() >= n as u64,
            "every pushed request consumed"
        );
    }
    // Responses the front end accepts carry a known status.
    while let Ok(Some(off)) = front.take_response_slot() {
        let rsp = Response::read(&region, off).expect("response");
        assert!((-2..=0).contains(&rsp.status.raw()));
    }
    assert_eq!(guest.grants_in_use(FE), 0, "mappings leaked");
}
