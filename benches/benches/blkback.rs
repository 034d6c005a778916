//! blkback through the Rust test blkfront on the simulated host (`xen-sim` via `gnttab` and
//! `evtchn`), against `pread`/`pwrite` of the same file from one thread, in the same run.
//!
//! Cases: 4 KiB random and 64 KiB sequential, read and write, queue depth 1 and 32.
//! - `blkback/<case>/direct`: one thread, `pread`/`pwrite` (`FileExt::read_at/write_at`),
//!   the same number of requests per iteration as the queue depth.
//! - `blkback/<case>/blkback`: the same requests as one batch through blkfront → ring →
//!   blkback (persistent grants; indirect descriptors for 64 KiB) → the file, on buffers in
//!   guest memory whose pages are the granted pages (`Blkfront::run_bufs`: no copy on either
//!   side, as Linux's blkfront grants bio pages).
//! - `blkback/<case>/blkback-copy`: the same through `Blkfront::run`, which copies each
//!   request's ordinary buffer into and out of the frontend's granted pages (what the copy
//!   costs; the backend's work is the same).
//!
//! All report bytes per second; the ratio blkback/direct is the figure of merit (target:
//! at least 70% at 64 KiB). At 4 KiB QD1 the difference of the per-request times of
//! `blkback` and `direct` is blkback's per-request overhead (on this kind of machine,
//! thread wake-ups dominate it: the frontend's notification of the ring thread and the
//! ring thread's notification of the frontend).

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use blkback::abi::Status;
use blkback::blkfront::{Blkfront, BufReq, FrontConfig, IoReq, Op};
use blkback::xen::XenSimGuest;
use blkback::{BlkBack, Config, XenHost};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use xen_types::DomId;
use xenbus::{create_device, Backend, MemStore};

const DISK: u64 = 64 << 20;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Offsets (bytes) of the `n` requests of one iteration.
fn offsets(rng: &mut Rng, seq: &mut u64, size: u64, random: bool, n: usize) -> Vec<u64> {
    (0..n)
        .map(|_| {
            if random {
                (rng.next() % (DISK / size)) * size
            } else {
                let o = *seq;
                *seq = (*seq + size) % DISK;
                o
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("disk.img");
    std::fs::write(&path, vec![0x33u8; DISK as usize]).expect("image");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");

    let store = Arc::new(MemStore::new());
    let xs = xen_sim::Host::default();
    let drv = Arc::new(BlkBack::new(
        Arc::new(XenHost::sim(&xs, DomId::DOM0).expect("host")),
        Config::default(),
    ));
    let _backend = Backend::start(store.clone(), DomId::DOM0, drv).expect("backend");
    let fe = DomId(5);
    create_device(
        &*store,
        DomId::DOM0,
        fe,
        "vbd",
        51712,
        &[("params", path.to_str().expect("utf-8")), ("mode", "w")],
        &[],
    )
    .expect("device");
    let front = Blkfront::connect(
        &XenSimGuest::new(&xs),
        store.clone(),
        fe,
        51712,
        FrontConfig {
            max_segments: 16,
            max_inflight: 32,
            buffer_pages: 32 * 16,
            ..Default::default()
        },
    )
    .expect("connect");

    let mut g = c.benchmark_group("blkback");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut seq = 0u64;
    for (size, random, label) in [(4096u64, true, "4k-rand"), (65536, false, "64k-seq")] {
        for write in [false, true] {
            for qd in [1usize, 32] {
                let case = format!("{label}-{}-qd{qd}", if write { "write" } else { "read" });
                g.throughput(Throughput::Bytes(size * qd as u64));
                let mut buf = vec![0x44u8; size as usize];
                g.bench_function(BenchmarkId::new(&case, "direct"), |b| {
                    b.iter(|| {
                        for off in offsets(&mut rng, &mut seq, size, random, qd) {
                            if write {
                                file.write_all_at(&buf, off).expect("pwrite");
                            } else {
                                file.read_exact_at(&mut buf, off).expect("pread");
                            }
                        }
                    })
                });
                let op = if write { Op::Write } else { Op::Read };
                let bufs: Vec<_> = (0..qd)
                    .map(|_| {
                        let b = front.alloc_buf(size as usize).expect("guest buffer");
                        b.fill(0, size as usize, 0x55).expect("fill");
                        b
                    })
                    .collect();
                let mut zreqs: Vec<BufReq<'_, _>> =
                    bufs.iter().map(|b| BufReq::new(op, 0, b)).collect();
                g.bench_function(BenchmarkId::new(&case, "blkback"), |b| {
                    b.iter(|| {
                        for (r, off) in zreqs
                            .iter_mut()
                            .zip(offsets(&mut rng, &mut seq, size, random, qd))
                        {
                            r.sector = off / 512;
                        }
                        front.run_bufs(0, &mut zreqs).expect("run");
                        assert!(zreqs.iter().all(|r| r.status == Some(Status::Okay)));
                    })
                });
                drop(zreqs);
                drop(bufs);
                let mut reqs: Vec<IoReq> = (0..qd)
                    .map(|_| IoReq::new(op, 0, vec![0x55u8; size as usize]))
                    .collect();
                g.bench_function(BenchmarkId::new(&case, "blkback-copy"), |b| {
                    b.iter(|| {
                        for (r, off) in reqs
                            .iter_mut()
                            .zip(offsets(&mut rng, &mut seq, size, random, qd))
                        {
                            r.sector = off / 512;
                        }
                        front.run(0, &mut reqs).expect("run");
                        assert!(reqs.iter().all(|r| r.status == Some(Status::Okay)));
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
