//! The storage manager's file SR: snapshot and clone time of a 10 GiB VDI with 1 GiB
//! written, and read throughput of a chain three snapshots deep against a flat image
//! holding the same data, in the same run.
//!
//! - `sm/snapshot/10GiB-1GiB-written`, `sm/clone/10GiB-1GiB-written`: `vdi_snapshot` /
//!   `vdi_clone` of a 10 GiB VDI whose chain holds 1 GiB of written data (a snapshot taken
//!   in setup froze it, so each iteration's snapshot is deleted again without copying
//!   data: the deletion, untimed, coalesces an empty image). The peers
//!   `.../1GiB-1GiB-written` (a 1 GiB VDI, the same data) and `.../10GiB-empty` (nothing
//!   written): equal times mean the operation depends on neither the size nor the data.
//!   The file SR is thin: the images are sparse, so this needs 2 GiB of disk, not 10.
//! - `sm/read/flat` and `sm/read/chain3`: 64 KiB sequential reads of 64 MiB through
//!   `sm::image::Image` (the reader blkback's qcow2 disk uses), of a flat copy and of the
//!   disk three snapshots deep (each layer rewrote part of the data), from the page cache.
//! - `sm/guest-read/flat` and `sm/guest-read/chain3`: the same two images read by guests
//!   through blkback on the simulated host (blkfront, 32 requests of 64 KiB in flight):
//!   the guest-visible throughput.
//!
//! `SM_INTERLEAVED=<rounds>` instead alternates the peers in rounds and prints medians
//! (snapshot and clone times of the three VDIs; the per-round throughput ratios chain3/flat):
//! `SM_INTERLEAVED=41 cargo bench -p benches --bench sm`. There the guests also run the
//! e2e storage part's four workloads on both disks (`sm/guest-<case>` rows): random 4 KiB
//! reads one at a time, sequential 64 KiB reads 32 in flight, and the same two as writes,
//! which go to a fresh top layer over the chain each round (a new snapshot's leaf: every
//! write is the first to its cluster there, the copy-up case). `SM_TOP_CLUSTER=<bytes>`
//! gives that top layer another cluster size.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blkback::abi::Status;
use blkback::blkfront::{Blkfront, FrontConfig, IoReq, Op};
use blkback::xen::XenSimGuest;
use blkback::{BlkBack, Config};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sm::file::FileSr;
use sm::image::Image;
use sm::{SrDriver, SrUuid, VdiUuid};
use xen_types::DomId;
use xenbus::testing::TestXenstore;
use xenbus::{create_device, Backend, XsStore};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const READ_SPAN: u64 = 64 * MIB;

fn sr() -> (tempfile::TempDir, FileSr) {
    let dir = tempfile::tempdir().unwrap();
    let sr = FileSr::new(SrUuid::new(), dir.path().join("sr"));
    sr.sr_create().unwrap();
    sr.sr_attach().unwrap();
    (dir, sr)
}

fn write(sr: &FileSr, vdi: VdiUuid, seed: u8, off: u64, len: u64) {
    let img = Image::open(&sr.dir().join(format!("{vdi}.qcow2")), true).unwrap();
    let mut buf = vec![0u8; (4 * MIB) as usize];
    let mut o = off;
    while o < off + len {
        let n = (off + len - o).min(4 * MIB);
        for (i, b) in buf[..n as usize].iter_mut().enumerate() {
            *b = seed ^ ((o as usize + i) / 4096) as u8;
        }
        img.write(&buf[..n as usize], o).unwrap();
        o += n;
    }
    img.flush().unwrap();
}

/// `SM_INTERLEAVED=<rounds>`: interleaved rounds and medians instead of criterion.
fn interleaved() -> Option<usize> {
    std::env::var("SM_INTERLEAVED")
        .ok()
        .and_then(|r| r.parse::<usize>().ok())
        .filter(|&r| r > 0)
}

/// Guests doing I/O on images through blkback on the simulated host.
struct Guests {
    host: xen_sim::Host,
    _backend: Backend,
    next_domid: std::cell::Cell<u16>,
    /// The project's xenstored in process (dropped last).
    xs: TestXenstore,
}

/// A guest's blkfront on one image, with its reusable requests: 32 of 64 KiB, one of 4 KiB.
struct GuestDisk {
    front: Blkfront<XsStore, XenSimGuest>,
    reqs: Vec<IoReq>,
    one: [IoReq; 1],
}

impl Guests {
    fn new() -> Guests {
        let xs = TestXenstore::start().unwrap();
        let host = xen_sim::Host::default();
        let drv = Arc::new(BlkBack::sim(&host, DomId::DOM0, Config::default()).unwrap());
        let backend = Backend::start(xs.dom0().clone(), DomId::DOM0, drv).unwrap();
        Guests {
            host,
            _backend: backend,
            next_domid: std::cell::Cell::new(5),
            xs,
        }
    }

    /// A new guest with `image` as its disk, writable unless `ro`.
    fn plug(&self, image: &Path, ro: bool) -> GuestDisk {
        let fe = DomId(self.next_domid.get());
        self.next_domid.set(fe.0 + 1);
        create_device(
            &**self.xs.dom0(),
            DomId::DOM0,
            fe,
            "vbd",
            51712,
            &[
                ("params", image.to_str().unwrap()),
                ("mode", if ro { "r" } else { "w" }),
            ],
            &[],
        )
        .unwrap();
        let front = Blkfront::connect(
            &XenSimGuest::new(&self.host),
            self.xs.guest(fe).unwrap(),
            fe,
            51712,
            FrontConfig {
                max_segments: 16,
                max_inflight: 32,
                ..Default::default()
            },
        )
        .unwrap();
        let reqs = (0..32)
            .map(|_| IoReq::new(Op::Read, 0, vec![0; 64 << 10]))
            .collect();
        GuestDisk {
            front,
            reqs,
            one: [IoReq::new(Op::Read, 0, vec![0; 4096])],
        }
    }
}

impl GuestDisk {
    /// Reads the first `READ_SPAN` bytes, 32 requests of 64 KiB in flight.
    fn read_all(&mut self) {
        self.seq64k(Op::Read);
    }

    /// 64 KiB requests over the first `READ_SPAN` bytes, 32 in flight.
    fn seq64k(&mut self, op: Op) {
        let mut off = 0;
        while off < READ_SPAN {
            for r in &mut self.reqs {
                r.op = op;
                r.sector = off / 512;
                r.status = None;
                off += 64 << 10;
            }
            self.front.run(0, &mut self.reqs).unwrap();
            assert!(self.reqs.iter().all(|r| r.status == Some(Status::Okay)));
        }
    }

    /// `RANDOM_OPS` 4 KiB requests at [`random_offset`]s, one at a time.
    fn random4k(&mut self, op: Op) {
        for i in 0..RANDOM_OPS {
            let r = &mut self.one[0];
            r.op = op;
            r.sector = random_offset(i) / 512;
            if op == Op::Write {
                r.buf.fill(i as u8);
            }
            self.front.run(0, &mut self.one).unwrap();
            assert_eq!(self.one[0].status, Some(Status::Okay));
        }
    }

    /// Runs `case` once; returns its bytes per second.
    fn run(&mut self, case: Case) -> f64 {
        let t = Instant::now();
        let bytes = match case {
            Case::Read4k => {
                self.random4k(Op::Read);
                RANDOM_OPS * 4096
            }
            Case::Write4k => {
                self.random4k(Op::Write);
                RANDOM_OPS * 4096
            }
            Case::Read64kQd32 => {
                self.seq64k(Op::Read);
                READ_SPAN
            }
            Case::Write64kQd32 => {
                self.seq64k(Op::Write);
                READ_SPAN
            }
        };
        bytes as f64 / t.elapsed().as_secs_f64()
    }
}

/// A guest workload of the e2e's storage part, run on one disk.
#[derive(Clone, Copy, Debug)]
enum Case {
    /// 4 KiB reads at random offsets, one at a time.
    Read4k,
    /// 64 KiB sequential reads, 32 in flight.
    Read64kQd32,
    /// 4 KiB writes at random offsets, one at a time, each on a cluster the chain's top
    /// does not hold yet (a fresh top layer each round): the copy-up case.
    Write4k,
    /// 64 KiB sequential writes, 32 in flight, on a fresh top layer.
    Write64kQd32,
}

const CASES: [(&str, Case); 4] = [
    ("read-4k-rand-qd1", Case::Read4k),
    ("read-64k-seq-qd32", Case::Read64kQd32),
    ("write-4k-rand-qd1", Case::Write4k),
    ("write-64k-seq-qd32", Case::Write64kQd32),
];

/// Random 4 KiB requests per round (QD1 cases).
const RANDOM_OPS: u64 = 512;

/// The `i`-th random 4 KiB-aligned offset of a round: one per 64 KiB cluster of the span,
/// at a random 4 KiB block inside it (a multiplicative walk over the clusters).
fn random_offset(i: u64) -> u64 {
    let clusters = READ_SPAN / (64 << 10);
    let c = (i * 0x9e37_79b9) % clusters;
    let block = (i.wrapping_mul(0x2545_f491) >> 7) % 16;
    c * (64 << 10) + block * 4096
}

/// Reads the first `READ_SPAN` bytes of `img` in pieces of `buf`'s size.
fn read_all(img: &Image, buf: &mut [u8]) {
    let mut o = 0;
    while o < READ_SPAN {
        img.read(buf, o).unwrap();
        o += buf.len() as u64;
    }
}

fn snapshot_and_clone(c: &mut Criterion) {
    let (_d, sr) = sr();
    let big = sr.vdi_create("10GiB", 10 * GIB).unwrap().uuid;
    write(&sr, big, 1, 0, GIB);
    sr.vdi_snapshot(big).unwrap();
    let small = sr.vdi_create("1GiB", GIB).unwrap().uuid;
    write(&sr, small, 2, 0, GIB);
    sr.vdi_snapshot(small).unwrap();
    let empty = sr.vdi_create("empty", 10 * GIB).unwrap().uuid;
    let vdis = [
        ("10GiB-1GiB-written", big),
        ("1GiB-1GiB-written", small),
        ("10GiB-empty", empty),
    ];
    if let Some(rounds) = interleaved() {
        // Each round: snapshot, then clone, of every VDI, in an order that rotates.
        let mut times: Vec<[Vec<f64>; 2]> = vdis.iter().map(|_| Default::default()).collect();
        for r in 0..rounds {
            for k in 0..vdis.len() {
                let which = (k + r) % vdis.len();
                let vdi = vdis[which].1;
                let t = Instant::now();
                let s = sr.vdi_snapshot(vdi).unwrap();
                times[which][0].push(t.elapsed().as_secs_f64() * 1e3);
                sr.vdi_destroy(s.uuid).unwrap();
                let t = Instant::now();
                let s = sr.vdi_clone(vdi).unwrap();
                times[which][1].push(t.elapsed().as_secs_f64() * 1e3);
                sr.vdi_destroy(s.uuid).unwrap();
            }
        }
        for (op, i) in [("snapshot", 0), ("clone", 1)] {
            for ((name, _), t) in vdis.iter().zip(&mut times) {
                let t = &mut t[i];
                let m = median(t);
                println!(
                    "sm/{op}/{name}: median {m:.2} ms, max {:.2} ms over {rounds} rounds",
                    t[rounds - 1]
                );
            }
        }
        return;
    }
    let mut g = c.benchmark_group("sm");
    g.sample_size(30);
    for (name, vdi) in vdis {
        g.bench_function(format!("snapshot/{name}"), |b| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let s = sr.vdi_snapshot(vdi).unwrap();
                    t += start.elapsed();
                    sr.vdi_destroy(s.uuid).unwrap();
                }
                t
            })
        });
        g.bench_function(format!("clone/{name}"), |b| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let s = sr.vdi_clone(vdi).unwrap();
                    t += start.elapsed();
                    sr.vdi_destroy(s.uuid).unwrap();
                }
                t
            })
        });
    }
    g.finish();
}

/// A fresh (empty) top layer over `parent` (a file name in `dir`), as a snapshot leaves.
fn fresh_top(dir: &Path, parent: &str, n: usize) -> std::path::PathBuf {
    let p = dir.join(format!("fresh-{n}.qcow2"));
    let cluster = std::env::var("SM_TOP_CLUSTER")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(sm::image::CLUSTER_SIZE);
    sm::image::create_with_cluster_size(&p, READ_SPAN, Some(parent), cluster).unwrap();
    p
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn reads(c: &mut Criterion) {
    let (_d, sr) = sr();
    let v = sr.vdi_create("disk", READ_SPAN).unwrap().uuid;
    write(&sr, v, 1, 0, READ_SPAN);
    for (i, seed) in [2u8, 3, 4].into_iter().enumerate() {
        sr.vdi_snapshot(v).unwrap();
        if i < 2 {
            write(&sr, v, seed, (i as u64 * 24 + 8) * MIB, 16 * MIB);
        }
    }
    let flat = sr.vdi_copy(v).unwrap().uuid;
    let (chain_path, flat_path) = (
        sr.dir().join(format!("{v}.qcow2")),
        sr.dir().join(format!("{flat}.qcow2")),
    );
    let parent = sm::image::read_header(&chain_path)
        .unwrap()
        .backing_file
        .unwrap();
    let chain = Image::open(&chain_path, false).unwrap();
    let flat = Image::open(&flat_path, false).unwrap();
    let guests = Guests::new();
    let mut guest_flat = guests.plug(&flat_path, false);
    let mut guest_chain = guests.plug(&chain_path, true);
    guest_flat.read_all();
    guest_chain.read_all();
    assert!(
        guest_flat
            .reqs
            .iter()
            .zip(&guest_chain.reqs)
            .all(|(a, b)| a.buf == b.buf),
        "the guests read the same data"
    );
    let mut buf = vec![0u8; (64 << 10) as usize];
    let mut other = vec![0u8; (64 << 10) as usize];
    read_all(&chain, &mut buf);
    read_all(&flat, &mut other);
    assert!(buf == other, "the flat copy reads the same data");

    if let Some(rounds) = interleaved() {
        let mut ratios = Vec::new();
        // Per case: throughput of flat and chain3 (bytes/s), and their ratio, per round.
        let mut guest: Vec<[Vec<f64>; 3]> = CASES.iter().map(|_| Default::default()).collect();
        let mut n = 0;
        for r in 0..rounds {
            for (k, (_, case)) in CASES.iter().enumerate() {
                let write = matches!(case, Case::Write4k | Case::Write64kQd32);
                // The writes go to a fresh top layer over the chain (a new snapshot's leaf).
                let mut fresh = write.then(|| {
                    n += 1;
                    let p = fresh_top(sr.dir(), &parent, n);
                    (guests.plug(&p, false), p)
                });
                let chain_disk = match &mut fresh {
                    Some((d, _)) => d,
                    None => &mut guest_chain,
                };
                let (tf, tc) = if r % 2 == 0 {
                    let f = guest_flat.run(*case);
                    (f, chain_disk.run(*case))
                } else {
                    let c = chain_disk.run(*case);
                    (guest_flat.run(*case), c)
                };
                if let Some((d, p)) = fresh {
                    d.front.close().unwrap();
                    drop(d);
                    std::fs::remove_file(p).unwrap();
                }
                guest[k][0].push(tf);
                guest[k][1].push(tc);
                guest[k][2].push(tc / tf);
            }
            let mut time = |img: &Image| {
                let t = Instant::now();
                read_all(img, &mut buf);
                t.elapsed().as_secs_f64()
            };
            let (tf, tc) = if r % 2 == 0 {
                let f = time(&flat);
                (f, time(&chain))
            } else {
                let c = time(&chain);
                (time(&flat), c)
            };
            ratios.push(tf / tc);
        }
        let mib_s = |v: &mut [f64]| median(v) / MIB as f64;
        for ((name, _), [f, c, ratio]) in CASES.iter().zip(&mut guest) {
            println!(
                "sm/guest-{name}: flat {:.1} MiB/s, chain3 {:.1} MiB/s, chain3/flat median of \
                 {rounds} rounds: {:.3}",
                mib_s(f),
                mib_s(c),
                median(ratio)
            );
        }
        println!(
            "sm/read: chain3 throughput / flat throughput, median of {rounds} rounds: {:.3}",
            median(&mut ratios)
        );
        return;
    }
    let mut g = c.benchmark_group("sm/read");
    g.throughput(Throughput::Bytes(READ_SPAN));
    g.sample_size(20);
    g.bench_function("flat", |b| b.iter(|| read_all(&flat, &mut buf)));
    g.bench_function("chain3", |b| b.iter(|| read_all(&chain, &mut buf)));
    g.finish();
    let mut g = c.benchmark_group("sm/guest-read");
    g.throughput(Throughput::Bytes(READ_SPAN));
    g.sample_size(20);
    g.bench_function("flat", |b| b.iter(|| guest_flat.read_all()));
    g.bench_function("chain3", |b| b.iter(|| guest_chain.read_all()));
    g.finish();
}

criterion_group!(benches, snapshot_and_clone, reads);
criterion_main!(benches);
