//! The storage manager's file SR: snapshot and clone time of a 10 GiB VDI with 1 GiB
//! written, and read throughput of a chain three snapshots deep against a flat image
//! holding the same data, in the same run.
//!
//! - `sm/snapshot/10GiB-1GiB-written`, `sm/clone/10GiB-1GiB-written`: `vdi_snapshot` /
//!   `vdi_clone` of a 10 GiB VDI whose chain holds 1 GiB of written data (a snapshot taken
//!   in setup froze it, so each iteration's snapshot is deleted again without copying
//!   data: the deletion, untimed, coalesces an empty image). The peer
//!   `.../10GiB-empty` is the same on a VDI with nothing written: equal times mean the
//!   operation does not depend on the data.
//! - `sm/read/flat` and `sm/read/chain3`: 64 KiB sequential reads of 64 MiB through
//!   `sm::image::Image` (the reader blkback's qcow2 disk uses), of a flat copy and of the
//!   disk three snapshots deep (each layer rewrote part of the data), from the page cache.
//! - `sm/guest-read/flat` and `sm/guest-read/chain3`: the same two images read by guests
//!   through blkback on the simulated host (blkfront, 32 requests of 64 KiB in flight):
//!   the guest-visible throughput.
//!
//! `SM_INTERLEAVED=<rounds>` instead alternates the peers in rounds and prints medians
//! (snapshot and clone times of both VDIs; the per-round throughput ratios chain3/flat):
//! `SM_INTERLEAVED=41 cargo bench -p benches --bench sm`.

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

/// Guests reading images through blkback on the simulated host.
struct Guests {
    host: xen_sim::Host,
    _backend: Backend,
    /// The project's xenstored in process (dropped last).
    xs: TestXenstore,
}

/// A guest's blkfront on one image, with its 32 reusable 64 KiB read requests.
struct GuestDisk {
    front: Blkfront<XsStore, XenSimGuest>,
    reqs: Vec<IoReq>,
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
            xs,
        }
    }

    fn plug(&self, fe: DomId, image: &Path) -> GuestDisk {
        create_device(
            &**self.xs.dom0(),
            DomId::DOM0,
            fe,
            "vbd",
            51712,
            &[("params", image.to_str().unwrap()), ("mode", "r")],
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
        GuestDisk { front, reqs }
    }
}

impl GuestDisk {
    /// Reads the first `READ_SPAN` bytes, 32 requests of 64 KiB in flight.
    fn read_all(&mut self) {
        let mut off = 0;
        while off < READ_SPAN {
            for r in &mut self.reqs {
                r.sector = off / 512;
                r.status = None;
                off += 64 << 10;
            }
            self.front.run(0, &mut self.reqs).unwrap();
            assert!(self.reqs.iter().all(|r| r.status == Some(Status::Okay)));
        }
    }
}

fn read_all(img: &Image, buf: &mut [u8]) {
    let mut o = 0;
    while o < READ_SPAN {
        img.read(buf, o).unwrap();
        o += buf.len() as u64;
    }
}

fn snapshot_and_clone(c: &mut Criterion) {
    let (_d, sr) = sr();
    let full = sr.vdi_create("full", 10 * GIB).unwrap().uuid;
    write(&sr, full, 1, 0, GIB);
    sr.vdi_snapshot(full).unwrap();
    let empty = sr.vdi_create("empty", 10 * GIB).unwrap().uuid;
    if let Some(rounds) = interleaved() {
        // Each round: snapshot, then clone, of both VDIs, in alternating order.
        let mut times: [Vec<f64>; 4] = Default::default();
        for r in 0..rounds {
            let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
            for which in order {
                let vdi = [full, empty][which];
                let t = Instant::now();
                let s = sr.vdi_snapshot(vdi).unwrap();
                times[which].push(t.elapsed().as_secs_f64() * 1e3);
                sr.vdi_destroy(s.uuid).unwrap();
                let t = Instant::now();
                let s = sr.vdi_clone(vdi).unwrap();
                times[2 + which].push(t.elapsed().as_secs_f64() * 1e3);
                sr.vdi_destroy(s.uuid).unwrap();
            }
        }
        let names = [
            "snapshot/10GiB-1GiB-written",
            "snapshot/10GiB-empty",
            "clone/10GiB-1GiB-written",
            "clone/10GiB-empty",
        ];
        for (name, mut t) in names.into_iter().zip(times) {
            t.sort_by(f64::total_cmp);
            println!(
                "sm/{name}: median {:.2} ms, max {:.2} ms over {rounds} rounds",
                t[rounds / 2],
                t[rounds - 1]
            );
        }
        return;
    }
    let mut g = c.benchmark_group("sm");
    g.sample_size(30);
    for (name, vdi) in [("10GiB-1GiB-written", full), ("10GiB-empty", empty)] {
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
    let chain = Image::open(&chain_path, false).unwrap();
    let flat = Image::open(&flat_path, false).unwrap();
    let guests = Guests::new();
    let mut guest_flat = guests.plug(DomId(5), &flat_path);
    let mut guest_chain = guests.plug(DomId(6), &chain_path);
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
        let mut guest_ratios = Vec::new();
        let mut guest_times = Vec::new();
        for r in 0..rounds {
            let time = |d: &mut GuestDisk| {
                let t = Instant::now();
                d.read_all();
                t.elapsed().as_secs_f64()
            };
            let (tf, tc) = if r % 2 == 0 {
                let f = time(&mut guest_flat);
                (f, time(&mut guest_chain))
            } else {
                let c = time(&mut guest_chain);
                (time(&mut guest_flat), c)
            };
            guest_ratios.push(tf / tc);
            guest_times.push((tf, tc));
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
        ratios.sort_by(f64::total_cmp);
        guest_ratios.sort_by(f64::total_cmp);
        let gib_s = |t: f64| READ_SPAN as f64 / t / GIB as f64;
        let mut f: Vec<f64> = guest_times.iter().map(|t| gib_s(t.0)).collect();
        let mut c: Vec<f64> = guest_times.iter().map(|t| gib_s(t.1)).collect();
        f.sort_by(f64::total_cmp);
        c.sort_by(f64::total_cmp);
        println!(
            "sm/guest-read: median flat {:.2} GiB/s, chain3 {:.2} GiB/s",
            f[rounds / 2],
            c[rounds / 2]
        );
        println!(
            "sm/guest-read: chain3 throughput / flat throughput through blkback, median of \
             {rounds} rounds: {:.3}",
            guest_ratios[rounds / 2]
        );
        println!(
            "sm/read: chain3 throughput / flat throughput, median of {rounds} rounds: {:.3}",
            ratios[rounds / 2]
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
