//! Fuzzing entry points (feature `test-utils`): arbitrary bytes as ring entries.

use std::sync::{Arc, OnceLock};

use xen_types::mem::SharedMemoryExt;
use xen_types::{DomId, PAGE_SIZE};

use crate::abi::{Protocol, Response};
use crate::disk::Disk;
use crate::host::{GrantMapper, Host};
use crate::queue::{Pool, QueueConfig, RingServer};
use crate::request::Limits;
use crate::ring::{BackRing, FrontRing};
use crate::sim::{GuestMemory, Region, SimHost};

const FE: DomId = DomId(1);
const PAGES: usize = 32;

struct World {
    host: Arc<SimHost>,
    mem: Arc<GuestMemory>,
    disk: Arc<Disk>,
    ring_ref: xen_types::GrantRef,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let host = Arc::new(SimHost::new(DomId::DOM0));
        let mem = host.create_domain(FE, PAGES).expect("guest memory");
        let ring_ref = host.grant(FE, 0, DomId::DOM0, false).expect("grant");
        // Grant refs 9.. : pages 1..=20 read-write, 21..=24 read-only; higher refs unused.
        for p in 1..=24 {
            host.grant(FE, p, DomId::DOM0, p > 20).expect("grant");
        }
        // SAFETY: memfd_create with a valid name.
        let fd = unsafe { libc::memfd_create(c"fuzz-disk".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd");
        // SAFETY: fd was just created and is owned by nothing else.
        let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        file.set_len(1 << 20).expect("disk size");
        let disk = Arc::new(Disk::from_file(file, false).expect("disk"));
        World {
            host,
            mem,
            disk,
            ring_ref,
        }
    })
}

/// Puts `data` into a fresh ring as request entries (first byte: protocol and limits;
/// the rest: entries back to back, the producer index covering as many entries as the
/// bytes fill, possibly more), lets the backend consume them all, and checks that it
/// answered every request it consumed with a well-formed status and kept its mappings
/// balanced.
pub fn blkback_requests(data: &[u8]) {
    let Some((&ctl, body)) = data.split_first() else {
        return;
    };
    let w = world();
    let proto = match ctl & 3 {
        0 => Protocol::Native,
        1 => Protocol::X86_32,
        _ => Protocol::X86_64,
    };
    let region = Region::new(w.mem.clone(), 0, 1).expect("region");
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
    let (port, _fe_chan) = w.host.alloc_unbound(FE, DomId::DOM0).expect("port");
    let chan = w.host.bind_interdomain(FE, port).expect("bind");
    let mapping = w
        .host
        .map_grants(FE, &[w.ring_ref], true)
        .expect("map ring");
    let back = BackRing::with_layout(mapping, layout, 0).expect("attach");
    let limits = Limits {
        sectors: w.disk.sectors(),
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
    };
    let mut pool = Pool::<SimHost>::new(1, "fuzz").expect("pool");
    let mut server = RingServer::new(
        w.host.clone(),
        back,
        chan,
        cfg,
        w.disk.clone(),
        pool.sender(),
    );
    let result = server.drain();
    drop(server);
    pool.shutdown();
    // Every consumed request was answered with a known status.
    let mut answered = 0;
    // (A backend that took the requests claimed past the written ones answers more than
    // this front end pushed, which it refuses as a hostile index: count what it accepts.)
    while let Ok(Some(off)) = front.take_response_slot() {
        let rsp = Response::read(&region, off).expect("response");
        let raw = rsp.status.raw();
        assert!((-2..=0).contains(&raw));
        answered += 1;
    }
    if result.is_ok() && extra == 0 {
        assert_eq!(answered, n, "every request answered");
    }
    assert_eq!(w.host.mapped_count(FE), 0, "mappings leaked");
}
