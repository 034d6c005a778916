//! blkback against the Rust test frontend on the simulated host (`xen-sim`, through the
//! `gnttab` and `evtchn` traits), with our xenstored in process.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blkback::abi::{Body, Protocol, Request, Segment, Status, MAX_DIRECT_SEGMENTS};
use blkback::blkfront::{read_stamp, stamp, Blkfront, BufReq, FrontConfig, FrontHost, IoReq, Op};
use blkback::xen::XenSimGuest;
use blkback::{BlkBack, Config};
use evtchn::SimEvtchn;
use gnttab::SimGnttab;
use xen_types::mem::{SharedMemory, SharedMemoryExt};
use xen_types::{DomId, GrantRef};
use xenbus::testing::TestXenstore;
use xenbus::{create_device, Backend, Store, XenbusState, XsStore};

const MIB: u64 = 1 << 20;
const T: Duration = Duration::from_secs(20);

/// A backend in dom0 of a simulated host (`xen-sim`, through the `gnttab`/`evtchn` traits),
/// our xenstored in process, and guests as frontends.
struct Env {
    /// Our xenstored: the backend is dom0, each frontend its own domain.
    xs: TestXenstore,
    host: XenSimGuest,
    drv: Arc<BlkBack<SimGnttab, SimEvtchn>>,
    be: Option<Backend>,
    dir: tempfile::TempDir,
}

fn env(cfg: Config) -> Env {
    let xs = TestXenstore::start().unwrap();
    let sim = xen_sim::Host::default();
    let drv = Arc::new(BlkBack::sim(&sim, DomId::DOM0, cfg).unwrap());
    let be = Backend::start(xs.dom0().clone(), DomId::DOM0, drv.clone()).unwrap();
    Env {
        xs,
        host: XenSimGuest::new(&sim),
        drv,
        be: Some(be),
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Env {
    fn disk(&self, fe: DomId, devid: u32, bytes: u64, mode: &str) -> PathBuf {
        let path = self.dir.path().join(format!("d{}-{devid}.img", fe.0));
        std::fs::File::create(&path)
            .unwrap()
            .set_len(bytes)
            .unwrap();
        let p = path.to_str().unwrap().to_string();
        create_device(
            &**self.xs.dom0(),
            DomId::DOM0,
            fe,
            "vbd",
            devid,
            &[("params", &p), ("mode", mode), ("type", "file")],
            &[("virtual-device", &devid.to_string())],
        )
        .unwrap();
        path
    }

    /// Frontend `fe` of device `devid`, on its own xenstore connection as domain `fe`.
    fn front(&self, fe: DomId, devid: u32, cfg: FrontConfig) -> Front {
        let store = self.xs.guest(fe).unwrap();
        Blkfront::connect(&self.host, store, fe, devid, cfg).unwrap()
    }

    fn backend(&self) -> &Backend {
        self.be.as_ref().unwrap()
    }
}

type Front = Blkfront<XsStore, XenSimGuest>;

/// Small deterministic PRNG (xorshift) so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random reads and writes over `blocks` 4 KiB blocks starting at block `first`, every
/// written sector stamped with its address and a generation, every read checked against
/// the model. Requests in one batch never overlap. With `zero_copy`, every other round runs
/// on guest buffers (`run_bufs`: the backend reads and writes the caller's granted pages)
/// instead of copied ones (`run`).
fn workload(
    f: &Front,
    q: usize,
    first: u64,
    blocks: u64,
    seed: u64,
    rounds: usize,
    zero_copy: bool,
) {
    let mut rng = Rng(seed | 1);
    let mut model = vec![0u64; blocks as usize];
    let maxseg = f.max_segments as u64;
    let chunk = maxseg.min(blocks);
    let mut generation = 0;
    for round in 0..rounds {
        let mut reqs = Vec::new();
        let mut spans = Vec::new();
        let nchunks = blocks / chunk;
        let mut used = vec![false; nchunks as usize];
        for _ in 0..rng.below(16) + 1 {
            let c = rng.below(nchunks);
            if used[c as usize] {
                continue;
            }
            used[c as usize] = true;
            let len = rng.below(chunk) + 1;
            let start = c * chunk + rng.below(chunk - len + 1);
            let sector = (first + start) * 8;
            if rng.below(2) == 0 {
                generation += 1;
                let mut buf = vec![0u8; (len * 4096) as usize];
                for b in 0..len {
                    let s = sector + b * 8;
                    stamp(
                        &mut buf[(b * 4096) as usize..((b + 1) * 4096) as usize],
                        s,
                        generation,
                    );
                }
                reqs.push(IoReq::new(Op::Write, sector, buf));
                spans.push((start, len, Some(generation)));
            } else {
                reqs.push(IoReq::new(
                    Op::Read,
                    sector,
                    vec![0xaa; (len * 4096) as usize],
                ));
                spans.push((start, len, None));
            }
        }
        if zero_copy && round % 2 == 1 {
            run_in_guest_buffers(f, q, &mut reqs);
        } else {
            f.run(q, &mut reqs).unwrap();
        }
        for (r, (start, len, g)) in reqs.iter().zip(spans) {
            assert_eq!(r.status, Some(Status::Okay), "{:?} at {}", r.op, r.sector);
            match g {
                Some(g) => {
                    for b in start..start + len {
                        model[b as usize] = g;
                    }
                }
                None => {
                    for b in 0..len {
                        let want_gen = model[(start + b) as usize];
                        for s in 0..8 {
                            let got = read_stamp(&r.buf, (b * 8 + s) as usize);
                            let want = if want_gen == 0 {
                                (0, 0)
                            } else {
                                ((first + start + b) * 8 + s, want_gen)
                            };
                            assert_eq!(got, want, "block {} sector {s}", first + start + b);
                        }
                    }
                }
            }
        }
    }
}

/// Runs `reqs` through guest buffers: write data is put into them first, read data taken
/// out of them after.
fn run_in_guest_buffers(f: &Front, q: usize, reqs: &mut [IoReq]) {
    let bufs: Vec<_> = reqs
        .iter()
        .map(|r| {
            let b = f.alloc_buf(r.buf.len()).unwrap();
            match r.op {
                Op::Read => b.fill(0, b.len(), 0xaa).unwrap(),
                _ => b.write(0, &r.buf).unwrap(),
            }
            b
        })
        .collect();
    let mut zreqs: Vec<BufReq<'_, _>> = reqs
        .iter()
        .zip(&bufs)
        .map(|(r, b)| BufReq::new(r.op, r.sector, b))
        .collect();
    f.run_bufs(q, &mut zreqs).unwrap();
    for ((r, z), b) in reqs.iter_mut().zip(&zreqs).zip(&bufs) {
        r.status = z.status;
        if r.op == Op::Read {
            b.read(0, &mut r.buf).unwrap();
        }
    }
}

fn run_matrix(e: Env, persistent: bool, indirect: bool, queues: u32, order: u32, proto: Protocol) {
    let fe = DomId(5);
    e.disk(fe, 51712, 8 * MIB, "w");
    let f = e.front(
        fe,
        51712,
        FrontConfig {
            queues,
            ring_page_order: order,
            persistent,
            indirect,
            protocol: proto,
            // 16 requests of up to 32 pages per queue at once.
            buffer_pages: 512 * queues as usize,
            ..Default::default()
        },
    );
    assert_eq!(f.sectors, 8 * MIB / 512);
    assert_eq!(f.queues(), queues as usize);
    assert_eq!(f.persistent, persistent);
    assert_eq!(
        f.max_segments,
        if indirect { 32 } else { MAX_DIRECT_SEGMENTS }
    );
    assert_eq!(f.ring_entries, 32 << order);
    // Each queue works on its own part of the disk, all at once.
    let per = 2048 / u64::from(queues);
    std::thread::scope(|s| {
        for q in 0..queues as usize {
            let f = &f;
            s.spawn(move || workload(f, q, q as u64 * per, per, 0x9e37 + q as u64, 40, true));
        }
    });
    f.close().unwrap();
    assert_eq!(e.host.grants_in_use(fe), 0, "every mapping released");
}

#[test]
fn verify_persistent_indirect_multiqueue() {
    run_matrix(env(Config::default()), true, true, 3, 0, Protocol::Native);
}

#[test]
fn verify_no_persistent_no_indirect_single_queue() {
    run_matrix(env(Config::default()), false, false, 1, 0, Protocol::Native);
}

#[test]
fn verify_no_persistent_indirect_multipage_ring_x86_32() {
    run_matrix(env(Config::default()), false, true, 2, 2, Protocol::X86_32);
}

#[test]
fn verify_persistent_direct_multipage_x86_64() {
    run_matrix(env(Config::default()), true, false, 1, 3, Protocol::X86_64);
}

#[test]
fn verify_persistent_indirect_two_queues_multipage() {
    run_matrix(env(Config::default()), true, true, 2, 1, Protocol::Native);
}

#[test]
fn verify_per_request_grants_indirect_x86_32() {
    run_matrix(env(Config::default()), false, true, 1, 0, Protocol::X86_32);
}

fn seg(g: GrantRef, first: u8, last: u8) -> [Segment; MAX_DIRECT_SEGMENTS] {
    let mut s = [Segment::default(); MAX_DIRECT_SEGMENTS];
    s[0] = Segment {
        gref: g,
        first_sect: first,
        last_sect: last,
    };
    s
}

fn rw(op: u32, sector: u64, n: u8, seg: [Segment; MAX_DIRECT_SEGMENTS]) -> Request {
    Request {
        operation: op as u8,
        id: 1,
        sector,
        handle: 0,
        body: Body::Direct {
            nr_segments: n,
            seg,
        },
    }
}

#[test]
fn bad_requests_get_errors_and_the_backend_keeps_serving() {
    let e = env(Config::default());
    let fe = DomId(6);
    e.disk(fe, 1, MIB, "w");
    let f = e.front(
        fe,
        1,
        FrontConfig {
            persistent: false,
            ..Default::default()
        },
    );
    let rw_page = f.grant(f.scratch_pfn(0), false).unwrap();
    let ro_page = f.grant(f.scratch_pfn(1), true).unwrap();
    let last = f.sectors;
    let st = |r: Request| f.raw(0, r).unwrap().status;
    use xen_sys::*;
    // Unsupported operations.
    assert_eq!(st(rw(99, 0, 1, seg(rw_page, 0, 7))), Status::NotSupported);
    assert_eq!(
        st(rw(BLKIF_OP_WRITE_BARRIER, 0, 1, seg(rw_page, 0, 7))),
        Status::NotSupported
    );
    assert_eq!(
        st(rw(BLKIF_OP_RESERVED_1, 0, 1, seg(rw_page, 0, 7))),
        Status::NotSupported
    );
    // Segment counts.
    assert_eq!(
        st(rw(BLKIF_OP_READ, 0, 0, seg(rw_page, 0, 7))),
        Status::Error
    );
    assert_eq!(
        st(rw(BLKIF_OP_READ, 0, 12, seg(rw_page, 0, 7))),
        Status::Error
    );
    // Sectors inside the page.
    assert_eq!(
        st(rw(BLKIF_OP_READ, 0, 1, seg(rw_page, 5, 4))),
        Status::Error
    );
    assert_eq!(
        st(rw(BLKIF_OP_READ, 0, 1, seg(rw_page, 0, 8))),
        Status::Error
    );
    // Past the end of the disk (exactly at the end is fine).
    assert_eq!(
        st(rw(BLKIF_OP_READ, last - 8, 1, seg(rw_page, 0, 7))),
        Status::Okay
    );
    assert_eq!(
        st(rw(BLKIF_OP_READ, last - 7, 1, seg(rw_page, 0, 7))),
        Status::Error
    );
    assert_eq!(
        st(rw(BLKIF_OP_READ, u64::MAX - 2, 1, seg(rw_page, 0, 7))),
        Status::Error
    );
    // Grants: not granted, and read-only for a read (the backend must write the page).
    assert_eq!(
        st(rw(BLKIF_OP_READ, 0, 1, seg(GrantRef(100_000), 0, 7))),
        Status::Error
    );
    assert_eq!(
        st(rw(BLKIF_OP_READ, 0, 1, seg(ro_page, 0, 7))),
        Status::Error
    );
    // A read-only grant is fine for a write (the backend only reads it).
    assert_eq!(
        st(rw(BLKIF_OP_WRITE, 0, 1, seg(ro_page, 0, 7))),
        Status::Okay
    );
    // Indirect: bad inner op, too many segments, ungranted indirect page.
    let ind = |op: u8, n: u16, g: GrantRef| Request {
        operation: BLKIF_OP_INDIRECT as u8,
        id: 2,
        sector: 0,
        handle: 0,
        body: Body::Indirect {
            indirect_op: op,
            nr_segments: n,
            grefs: [g; 8],
        },
    };
    assert_eq!(
        st(ind(BLKIF_OP_FLUSH_DISKCACHE as u8, 1, rw_page)),
        Status::Error
    );
    assert_eq!(st(ind(BLKIF_OP_READ as u8, 257, rw_page)), Status::Error);
    assert_eq!(st(ind(BLKIF_OP_READ as u8, 0, rw_page)), Status::Error);
    assert_eq!(
        st(ind(BLKIF_OP_READ as u8, 1, GrantRef(100_001))),
        Status::Error
    );
    // An indirect page whose descriptor points at an ungranted page.
    let ind_page = f.scratch_pfn(2);
    f.memory()
        .write_obj(
            ind_page * 4096,
            blkif_request_segment {
                gref: 100_002,
                first_sect: 0,
                last_sect: 7,
            },
        )
        .unwrap();
    let ig = f.grant(ind_page, true).unwrap();
    assert_eq!(st(ind(BLKIF_OP_READ as u8, 1, ig)), Status::Error);
    // Secure discard on an image file is not supported; out-of-range discard is an error.
    let disc = |flag: u8, sector: u64, n: u64| Request {
        operation: BLKIF_OP_DISCARD as u8,
        id: 3,
        sector,
        handle: 0,
        body: Body::Discard {
            flag,
            nr_sectors: n,
        },
    };
    assert_eq!(
        st(disc(BLKIF_DISCARD_SECURE as u8, 0, 8)),
        Status::NotSupported
    );
    assert_eq!(st(disc(0, last - 4, 8)), Status::Error);
    // Id and operation are echoed; the device still serves ordinary I/O.
    let r = f
        .raw(0, rw(BLKIF_OP_READ, 8, 1, seg(rw_page, 0, 7)))
        .unwrap();
    assert_eq!(
        (r.id, r.operation, r.status),
        (1 | blkback::blkfront::RAW_ID, 0, Status::Okay)
    );
    let mut reqs = [IoReq::new(Op::Write, 16, vec![7u8; 4096])];
    f.run(0, &mut reqs).unwrap();
    assert_eq!(reqs[0].status, Some(Status::Okay));
}

#[test]
fn read_only_disk_refuses_writes() {
    let e = env(Config::default());
    let fe = DomId(7);
    let path = e.disk(fe, 2, MIB, "r");
    std::fs::write(&path, vec![0x5au8; MIB as usize]).unwrap();
    let f = e.front(fe, 2, FrontConfig::default());
    assert_ne!(f.info & xen_sys::VDISK_READONLY, 0);
    let be = xenbus::paths::backend_path(DomId::DOM0, "vbd", fe, 2);
    assert_eq!(
        e.xs.dom0()
            .read(&format!("{be}/feature-discard"))
            .unwrap()
            .as_deref(),
        Some("0")
    );
    let mut reqs = vec![
        IoReq::new(Op::Write, 0, vec![1u8; 4096]),
        IoReq::new(Op::Read, 0, vec![0u8; 8192]),
        IoReq::new(Op::Discard { nr_sectors: 8 }, 0, vec![]),
        IoReq::new(Op::WriteFlush, 8, vec![1u8; 512]),
    ];
    f.run(0, &mut reqs).unwrap();
    assert_eq!(reqs[0].status, Some(Status::Error));
    assert_eq!(reqs[1].status, Some(Status::Okay));
    assert!(reqs[1].buf.iter().all(|&b| b == 0x5a));
    assert_eq!(reqs[2].status, Some(Status::NotSupported));
    assert_eq!(reqs[3].status, Some(Status::Error));
    // A 32-segment indirect write is refused too, before any mapping.
    let mut big = [IoReq::new(Op::Write, 0, vec![1u8; 32 * 4096])];
    f.run(0, &mut big).unwrap();
    assert_eq!(big[0].status, Some(Status::Error));
    assert!(std::fs::read(&path).unwrap().iter().all(|&b| b == 0x5a));
}

/// Guest buffers: the backend reads and writes the caller's own granted pages; their
/// allocation is bounded and checked, and requests on them are validated like any other.
fn guest_buffers(e: Env, persistent: bool) {
    let fe = DomId(10);
    let path = e.disk(fe, 6, MIB, "w");
    let f = e.front(
        fe,
        6,
        FrontConfig {
            persistent,
            max_segments: 16,
            buffer_pages: 20,
            ..Default::default()
        },
    );
    assert_eq!(f.persistent, persistent);
    // Bad sizes and exhaustion are refused; a dropped buffer's pages are reused.
    assert!(f.alloc_buf(0).is_err());
    assert!(f.alloc_buf(1000).is_err());
    assert!(f.alloc_buf(17 * 4096).is_err(), "more pages than segments");
    let big = f.alloc_buf(16 * 4096).unwrap();
    let small = f.alloc_buf(2 * 4096).unwrap();
    assert!(f.alloc_buf(3 * 4096).is_err(), "only 2 pages left");
    let pfn = big.pfn();
    drop(big);
    let again = f.alloc_buf(12 * 4096).unwrap();
    assert_eq!(again.pfn(), pfn, "first fit reuses the freed pages");
    // Accessors stay inside the buffer.
    assert!(small.write(8190, &[1, 2, 3]).is_err());
    assert!(small.read(usize::MAX, &mut [0u8; 2]).is_err());
    // A write lands in the file from the buffer's pages, a read lands in them.
    for i in 0..12 {
        again.fill(i * 4096, 4096, i as u8 + 1).unwrap();
    }
    small.fill(0, small.len(), 0x77).unwrap();
    let mut reqs = [
        BufReq::new(Op::Write, 8, &again),
        BufReq::new(Op::WriteFlush, 200, &small),
    ];
    f.run_bufs(0, &mut reqs).unwrap();
    assert!(reqs.iter().all(|r| r.status == Some(Status::Okay)));
    let img = std::fs::read(&path).unwrap();
    for i in 0..12 {
        let at = 8 * 512 + i * 4096;
        assert!(
            img[at..at + 4096].iter().all(|&b| b == i as u8 + 1),
            "page {i}"
        );
    }
    assert!(img[200 * 512..200 * 512 + 8192].iter().all(|&b| b == 0x77));
    small.fill(0, small.len(), 0).unwrap();
    let mut rd = [BufReq::new(Op::Read, 8 + 8, &small)];
    f.run_bufs(0, &mut rd).unwrap();
    assert_eq!(rd[0].status, Some(Status::Okay));
    let mut got = vec![0u8; 8192];
    small.read(0, &mut got).unwrap();
    assert!(got[..4096].iter().all(|&b| b == 2) && got[4096..].iter().all(|&b| b == 3));
    // Past the end of the disk: refused by the backend, buffer untouched.
    let mut past = [BufReq::new(Op::Read, MIB / 512 - 8, &small)];
    f.run_bufs(0, &mut past).unwrap();
    assert_eq!(past[0].status, Some(Status::Error));
    small.read(0, &mut got).unwrap();
    assert!(got[..4096].iter().all(|&b| b == 2));
    // Requests without data, and buffers of another frontend, are refused by the frontend.
    let mut fl = [BufReq::new(Op::Flush, 0, &small)];
    assert!(f.run_bufs(0, &mut fl).is_err());
    e.disk(DomId(11), 6, MIB, "w");
    let other = e.front(
        DomId(11),
        6,
        FrontConfig {
            buffer_pages: 4,
            ..Default::default()
        },
    );
    let foreign = other.alloc_buf(4096).unwrap();
    let mut wrong = [BufReq::new(Op::Read, 0, &foreign)];
    assert!(f.run_bufs(0, &mut wrong).is_err());
    f.close().unwrap();
    other.close().unwrap();
    assert_eq!(e.host.grants_in_use(fe), 0, "every mapping released");
}

#[test]
fn guest_buffers_persistent() {
    guest_buffers(env(Config::default()), true);
}

#[test]
fn guest_buffers_per_request_grants() {
    guest_buffers(env(Config::default()), false);
}

#[test]
fn flush_and_discard() {
    let e = env(Config::default());
    let fe = DomId(8);
    let path = e.disk(fe, 3, MIB, "w");
    let f = e.front(fe, 3, FrontConfig::default());
    let mut reqs = vec![
        IoReq::new(Op::Write, 0, vec![0xcc; 16384]),
        IoReq::new(Op::WriteFlush, 64, vec![0xdd; 4096]),
    ];
    f.run(0, &mut reqs).unwrap();
    let mut fl = [IoReq::new(Op::Flush, 0, vec![])];
    f.run(0, &mut fl).unwrap();
    assert_eq!(fl[0].status, Some(Status::Okay));
    let file = std::fs::File::open(&path).unwrap();
    let mut b = [0u8; 4096];
    file.read_exact_at(&mut b, 64 * 512).unwrap();
    assert!(b.iter().all(|&x| x == 0xdd));
    // Discard the middle 8 KiB: it reads back as zeros, the rest is intact.
    let mut d = [IoReq::new(Op::Discard { nr_sectors: 16 }, 8, vec![])];
    f.run(0, &mut d).unwrap();
    assert_eq!(d[0].status, Some(Status::Okay));
    let mut r = [IoReq::new(Op::Read, 0, vec![1; 16384])];
    f.run(0, &mut r).unwrap();
    assert!(r[0].buf[..4096].iter().all(|&x| x == 0xcc));
    assert!(r[0].buf[4096..12288].iter().all(|&x| x == 0));
    assert!(r[0].buf[12288..].iter().all(|&x| x == 0xcc));
    let be = xenbus::paths::backend_path(DomId::DOM0, "vbd", fe, 3);
    for (k, v) in [
        ("feature-discard", "1"),
        ("discard-secure", "0"),
        ("feature-flush-cache", "1"),
        ("feature-persistent", "1"),
        ("sector-size", "512"),
        ("info", "0"),
        ("hotplug-status", "connected"),
    ] {
        assert_eq!(
            e.xs.dom0().read(&format!("{be}/{k}")).unwrap().as_deref(),
            Some(v),
            "{k}"
        );
    }
}

fn vanish(e: Env) {
    let fe = DomId(9);
    let path = e.disk(fe, 4, 4 * MIB, "w");
    let f = e.front(
        fe,
        4,
        FrontConfig {
            persistent: false,
            ..Default::default()
        },
    );
    // 32 writes of 128 KiB in flight at once.
    let reqs: Vec<IoReq> = (0..32u64)
        .map(|i| {
            let mut buf = vec![0u8; 32 * 4096];
            for b in 0..32 {
                let s = i * 256 + b * 8;
                stamp(
                    &mut buf[(b * 4096) as usize..((b + 1) * 4096) as usize],
                    s,
                    7,
                );
            }
            IoReq::new(Op::Write, i * 256, buf)
        })
        .collect();
    f.submit(0, &reqs).unwrap();
    let acked = f.poll(0).unwrap();
    assert!(!acked.is_empty());
    // The guest dies with requests still in flight.
    f.vanish();
    e.xs.destroy_domain(fe).unwrap();
    let deadline = Instant::now() + T;
    while !e.backend().devices().is_empty() {
        assert!(Instant::now() < deadline, "device not torn down");
        std::thread::sleep(Duration::from_millis(5));
    }
    let be = xenbus::paths::backend_path(DomId::DOM0, "vbd", fe, 4);
    assert_eq!(
        e.xs.dom0().read(&format!("{be}/state")).unwrap().as_deref(),
        Some("6")
    );
    // Every acknowledged write is on disk.
    let data = std::fs::read(&path).unwrap();
    for (tag, st) in acked {
        assert_eq!(st, Status::Okay);
        for s in 0..256u64 {
            let sector = tag as u64 * 256 + s;
            assert_eq!(
                read_stamp(&data, sector as usize),
                (sector, 7),
                "acked write {tag} lost"
            );
        }
    }
    drop(f);
}

#[test]
fn frontend_vanishing_mid_request_loses_no_acknowledged_write() {
    vanish(env(Config {
        io_threads: 2,
        ..Default::default()
    }));
}

#[test]
fn corrupt_ring_stops_that_ring_only() {
    let e = env(Config::default());
    let stats = e.drv.stats().clone();
    let (a, b) = (DomId(10), DomId(11));
    e.disk(a, 5, MIB, "w");
    e.disk(b, 5, MIB, "w");
    let fa = e.front(
        a,
        5,
        FrontConfig {
            timeout: Duration::from_millis(500),
            ..Default::default()
        },
    );
    let fb = e.front(b, 5, FrontConfig::default());
    assert_eq!((stats.rings_running(), stats.rings_broken()), (2, 0));
    let mut first = [IoReq::new(Op::Write, 0, vec![1u8; 4096])];
    fa.run(0, &mut first).unwrap();
    assert_eq!(first[0].status, Some(Status::Okay), "ring a served before");

    fa.corrupt_req_prod(0, 1000).unwrap();
    // The backend notices and stops serving that ring: its thread ends, counted as broken.
    let deadline = Instant::now() + T;
    while stats.rings_broken() == 0 {
        assert!(
            Instant::now() < deadline,
            "the corrupt ring was not stopped"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!((stats.rings_running(), stats.rings_broken()), (1, 1));
    // It answers nothing more, even a well-formed request (the frontend's next push
    // rewrites a sane producer index).
    let answered = stats.responses();
    fa.submit(0, &[IoReq::new(Op::Read, 0, vec![0u8; 4096])])
        .unwrap();
    assert!(fa.poll(0).is_err(), "a stopped ring answered");
    // The other ring still serves. Requests in flight together have no order in blkif (the
    // backend completes them as the I/O pool finishes them), so the read goes in a batch of
    // its own after the write.
    let mut write = [IoReq::new(Op::Write, 0, vec![3u8; 4096])];
    fb.run(0, &mut write).unwrap();
    let mut read = [IoReq::new(Op::Read, 0, vec![0u8; 4096])];
    fb.run(0, &mut read).unwrap();
    assert!(
        read[0].buf == vec![3u8; 4096],
        "the healthy ring read back other data"
    );
    assert_eq!(stats.responses(), answered + 2, "only ring b's two answers");
    assert_eq!(stats.rings_running(), 1);
}

#[test]
fn refused_handshakes_report_errors() {
    let e = env(Config {
        max_queues: 2,
        ..Default::default()
    });
    let fe = DomId(12);
    e.disk(fe, 6, MIB, "w");
    let err = Blkfront::connect(
        &e.host,
        e.xs.guest(fe).unwrap(),
        fe,
        6,
        FrontConfig {
            queues: 2,
            ..Default::default()
        },
    );
    assert!(err.is_ok(), "2 queues are allowed");
    // A device whose image does not exist fails at probe with an error node.
    create_device(
        &**e.xs.dom0(),
        DomId::DOM0,
        DomId(13),
        "vbd",
        7,
        &[("params", "/nonexistent/disk.img"), ("mode", "w")],
        &[],
    )
    .unwrap();
    let be = xenbus::paths::backend_path(DomId::DOM0, "vbd", DomId(13), 7);
    let deadline = Instant::now() + T;
    loop {
        let st = e.xs.dom0().read(&format!("{be}/state")).unwrap();
        let st = XenbusState::from_node(st.as_deref());
        if st == XenbusState::Closing || st == XenbusState::Closed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "probe failure not reported: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(e.xs.dom0().read(&format!("{be}/error")).unwrap().is_some());
    // Too many queues, or an unknown protocol, are refused at connect with an error.
    for (i, (k, v)) in [("multi-queue-num-queues", "3"), ("protocol", "sparc-abi")]
        .into_iter()
        .enumerate()
    {
        let dom = DomId(20 + i as u16);
        e.disk(dom, 8, MIB, "w");
        let mut fd = xenbus::FrontendDevice::open(e.xs.guest(dom).unwrap(), dom, "vbd", 8).unwrap();
        fd.wait_backend(|s| s == XenbusState::InitWait, T).unwrap();
        fd.write_all(&[
            (k.to_string(), v.to_string()),
            ("ring-ref".into(), "8".into()),
            ("event-channel".into(), "1".into()),
        ])
        .unwrap();
        fd.switch_state(XenbusState::Initialised).unwrap();
        fd.wait_backend(|s| s == XenbusState::Closing, T).unwrap();
        let err = fd.read_backend("error").unwrap().unwrap();
        assert!(
            err.contains(if i == 0 { "queues" } else { "protocol" }),
            "{err}"
        );
    }
}

#[test]
fn a_frontend_runs_in_a_domain_created_beforehand() {
    let xs = TestXenstore::start().unwrap();
    let sim = xen_sim::Host::default();
    let drv = Arc::new(BlkBack::sim(&sim, DomId::DOM0, Config::default()).unwrap());
    let be = Backend::start(xs.dom0().clone(), DomId::DOM0, drv).unwrap();
    let guests = XenSimGuest::new(&sim);
    let fe = DomId(30);
    let missing = guests.adopt(fe).unwrap_err();
    assert!(
        matches!(missing, blkback::Error::Host(xen_types::Errno::ESRCH)),
        "{missing}"
    );
    // The toolstack's domain: 8 MiB, its first 64 pages in use by the "kernel".
    let cfg = xen_sys::xen_domctl_createdomain {
        max_grant_frames: 64,
        ..xen_sim::domain::small_pv_guest(1023)
    };
    sim.create_domain(fe, &cfg).unwrap();
    sim.set_max_mem_kb(fe, 8 << 10).unwrap();
    let all: Vec<xen_types::Pfn> = (0..2048).map(xen_types::Pfn).collect();
    sim.populate_physmap(fe, &all).unwrap();
    let kernel = sim.alloc_pages(fe, 64).unwrap();
    let kmem = sim.guest_pages(fe, &kernel).unwrap();
    kmem.fill(0, kmem.len(), 0x4b).unwrap();
    guests.adopt(fe).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img).unwrap().set_len(MIB).unwrap();
    create_device(
        &**xs.dom0(),
        DomId::DOM0,
        fe,
        "vbd",
        51712,
        &[("params", img.to_str().unwrap()), ("mode", "w")],
        &[("virtual-device", "51712")],
    )
    .unwrap();
    let f: Front = Blkfront::connect(
        &guests,
        xs.guest(fe).unwrap(),
        fe,
        51712,
        FrontConfig::default(),
    )
    .unwrap();
    workload(&f, 0, 0, 256, 0x51, 10, false);
    // A second frontend in the same domain is refused (its pages would be ambiguous).
    let again = guests.create_guest(fe, 4).unwrap_err();
    assert!(matches!(again, blkback::Error::Config(_)), "{again}");
    f.close().unwrap();
    assert_eq!(guests.grants_in_use(fe), 0, "every mapping released");
    // The frontend's pages were the guest's free ones: the kernel's are untouched.
    let mut k = vec![0u8; kmem.len()];
    kmem.read_bytes(0, &mut k).unwrap();
    assert!(k.iter().all(|&b| b == 0x4b), "kernel pages overwritten");
    drop(f);
    be.stop();
}

#[test]
fn connected_disks_count_their_requests_and_bytes() {
    let e = env(Config::default());
    let fe = DomId(7);
    let path = e.disk(fe, 51712, MIB, "w");
    let f = e.front(fe, 51712, FrontConfig::default());
    let t0 = Instant::now();
    while e.drv.devices().is_empty() {
        assert!(t0.elapsed() < T, "the disk never showed as connected");
        std::thread::sleep(Duration::from_millis(5));
    }
    let d = &e.drv.devices()[0];
    assert_eq!((d.frontend, d.devid), (fe, 51712));
    assert_eq!(d.path, path.to_str().unwrap());
    // Two 4 KiB writes, three 4 KiB reads (one 1 KiB), a flush.
    f.run(
        0,
        &mut [
            IoReq::new(Op::Write, 0, vec![1; 4096]),
            IoReq::new(Op::Write, 8, vec![2; 4096]),
        ],
    )
    .unwrap();
    f.run(
        0,
        &mut [
            IoReq::new(Op::Read, 0, vec![0; 4096]),
            IoReq::new(Op::Read, 8, vec![0; 4096]),
            IoReq::new(Op::Read, 16, vec![0; 1024]),
        ],
    )
    .unwrap();
    f.run(0, &mut [IoReq::new(Op::Flush, 0, Vec::new())])
        .unwrap();
    let io = d.disk.io().snapshot();
    assert_eq!((io.wr_operations, io.wr_bytes), (2, 8192));
    assert_eq!((io.rd_operations, io.rd_bytes), (3, 9216));
    assert_eq!((io.flush_operations, io.failed_operations), (1, 0));
    // A write-and-flush counts as a write and a flush.
    f.run(0, &mut [IoReq::new(Op::WriteFlush, 24, vec![3; 512])])
        .unwrap();
    let io = d.disk.io().snapshot();
    assert_eq!(
        (io.wr_operations, io.wr_bytes, io.flush_operations),
        (3, 8704, 2)
    );
    f.close().unwrap();
    let t0 = Instant::now();
    while !e.drv.devices().is_empty() {
        assert!(t0.elapsed() < T, "a closed disk stayed in the list");
        std::thread::sleep(Duration::from_millis(5));
    }
}
