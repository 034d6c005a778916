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
//!
//! On a shared, loaded machine criterion's back-to-back windows see different loads (the
//! `direct` time of one case can double between runs). `BLKBACK_INTERLEAVED=<rounds>`
//! instead runs each case in short rounds, the three variants in rotating order inside
//! each round, and prints the median per-iteration times and the median of the per-round
//! ratios (`ROUND_MS` sets a variant's share of a round, default 30 ms):
//! `BLKBACK_INTERLEAVED=20 cargo bench -p benches --bench blkback`.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blkback::abi::Status;
use blkback::blkfront::{Blkfront, BufReq, FrontConfig, GuestBuf, IoReq, Op};
use blkback::xen::XenSimGuest;
use blkback::{BlkBack, Config};
use criterion::{BenchmarkId, Criterion, Throughput};
use xen_types::DomId;
use xenbus::testing::TestXenstore;
use xenbus::{create_device, Backend, XsStore};

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

/// The disk image, the backend serving it and a connected frontend.
struct World {
    _dir: tempfile::TempDir,
    file: File,
    front: Blkfront<XsStore, XenSimGuest>,
    _backend: Backend,
    /// The project's xenstored in process (dropped last).
    _xs: TestXenstore,
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("disk.img");
    std::fs::write(&path, vec![0x33u8; DISK as usize]).expect("image");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    let store = TestXenstore::start().expect("xenstored");
    let xs = xen_sim::Host::default();
    let drv = Arc::new(BlkBack::sim(&xs, DomId::DOM0, Config::default()).expect("backend"));
    let backend = Backend::start(store.dom0().clone(), DomId::DOM0, drv).expect("backend");
    let fe = DomId(5);
    create_device(
        &**store.dom0(),
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
        store.guest(fe).expect("guest connection"),
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
    World {
        _dir: dir,
        file,
        front,
        _backend: backend,
        _xs: store,
    }
}

/// One case: request size, pattern, direction, queue depth.
#[derive(Clone, Copy)]
struct Case {
    size: u64,
    random: bool,
    write: bool,
    qd: usize,
}

impl Case {
    fn all() -> Vec<(String, Case)> {
        let mut v = Vec::new();
        for (size, random, label) in [(4096u64, true, "4k-rand"), (65536, false, "64k-seq")] {
            for write in [false, true] {
                for qd in [1usize, 32] {
                    let name = format!("{label}-{}-qd{qd}", if write { "write" } else { "read" });
                    v.push((
                        name,
                        Case {
                            size,
                            random,
                            write,
                            qd,
                        },
                    ));
                }
            }
        }
        v
    }
}

/// The three ways of doing a case's requests, sharing one offset stream.
struct Runner<'w> {
    w: &'w World,
    c: Case,
    rng: Rng,
    seq: u64,
    buf: Vec<u8>,
    bufs: Vec<GuestBuf<xen_sim::memory::PageMapping>>,
    reqs: Vec<IoReq>,
}

impl<'w> Runner<'w> {
    fn new(w: &'w World, c: Case) -> Self {
        let op = if c.write { Op::Write } else { Op::Read };
        let bufs = (0..c.qd)
            .map(|_| {
                let b = w.front.alloc_buf(c.size as usize).expect("guest buffer");
                b.fill(0, c.size as usize, 0x55).expect("fill");
                b
            })
            .collect();
        Runner {
            w,
            c,
            rng: Rng(0x2545_f491_4f6c_dd1d),
            seq: 0,
            buf: vec![0x44u8; c.size as usize],
            bufs,
            reqs: (0..c.qd)
                .map(|_| IoReq::new(op, 0, vec![0x55u8; c.size as usize]))
                .collect(),
        }
    }

    /// Byte offsets of the next iteration's requests.
    fn offsets(&mut self) -> Vec<u64> {
        let c = self.c;
        (0..c.qd)
            .map(|_| {
                if c.random {
                    (self.rng.next() % (DISK / c.size)) * c.size
                } else {
                    let o = self.seq;
                    self.seq = (self.seq + c.size) % DISK;
                    o
                }
            })
            .collect()
    }

    fn direct(&mut self) {
        let offs = self.offsets();
        for off in offs {
            if self.c.write {
                self.w.file.write_all_at(&self.buf, off).expect("pwrite");
            } else {
                self.w
                    .file
                    .read_exact_at(&mut self.buf, off)
                    .expect("pread");
            }
        }
    }

    fn zero_copy(&mut self) {
        let op = if self.c.write { Op::Write } else { Op::Read };
        let offs = self.offsets();
        let mut reqs: Vec<BufReq<'_, _>> = self
            .bufs
            .iter()
            .zip(offs)
            .map(|(b, off)| BufReq::new(op, off / 512, b))
            .collect();
        self.w.front.run_bufs(0, &mut reqs).expect("run");
        assert!(reqs.iter().all(|r| r.status == Some(Status::Okay)));
    }

    fn copy(&mut self) {
        let offs = self.offsets();
        for (r, off) in self.reqs.iter_mut().zip(offs) {
            r.sector = off / 512;
        }
        self.w.front.run(0, &mut self.reqs).expect("run");
        assert!(self.reqs.iter().all(|r| r.status == Some(Status::Okay)));
    }

    fn variant(&mut self, v: usize) {
        match v {
            0 => self.direct(),
            1 => self.zero_copy(),
            _ => self.copy(),
        }
    }
}

fn bench(c: &mut Criterion) {
    let w = world();
    let mut g = c.benchmark_group("blkback");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (name, case) in Case::all() {
        g.throughput(Throughput::Bytes(case.size * case.qd as u64));
        let mut r = Runner::new(&w, case);
        for (v, id) in ["direct", "blkback", "blkback-copy"]
            .into_iter()
            .enumerate()
        {
            g.bench_function(BenchmarkId::new(&name, id), |b| b.iter(|| r.variant(v)));
        }
    }
    g.finish();
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `BLKBACK_INTERLEAVED` mode: the variants alternate in short rounds.
fn interleaved(rounds: usize) {
    let round = Duration::from_secs_f64(
        std::env::var("ROUND_MS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(30.0)
            / 1000.0,
    );
    let w = world();
    println!(
        "{:20} {:>10} {:>11} {:>10} {:>8} {:>8}",
        "case (us/iteration)", "direct", "blkback", "copy", "ratio", "copy"
    );
    for (name, case) in Case::all() {
        let mut r = Runner::new(&w, case);
        // Iterations per round from a short warm-up of each variant.
        let mut iters = [0usize; 3];
        for (v, n) in iters.iter_mut().enumerate() {
            let t = Instant::now();
            for _ in 0..10 {
                r.variant(v);
            }
            let per = t.elapsed() / 10;
            *n = (round.as_nanos() / per.as_nanos().max(1)).clamp(3, 1_000_000) as usize;
        }
        let mut times: [Vec<f64>; 3] = Default::default();
        let (mut ratio, mut ratio_copy) = (Vec::new(), Vec::new());
        for k in 0..rounds {
            let mut t = [0f64; 3];
            for j in 0..3 {
                let v = (j + k) % 3;
                let start = Instant::now();
                for _ in 0..iters[v] {
                    r.variant(v);
                }
                t[v] = start.elapsed().as_secs_f64() * 1e6 / iters[v] as f64;
            }
            ratio.push(t[0] / t[1] * 100.0);
            ratio_copy.push(t[0] / t[2] * 100.0);
            for v in 0..3 {
                times[v].push(t[v]);
            }
        }
        let [d, z, c] = &mut times;
        println!(
            "{:20} {:10.2} {:11.2} {:10.2} {:7.0}% {:7.0}%",
            name,
            median(d),
            median(z),
            median(c),
            median(&mut ratio),
            median(&mut ratio_copy)
        );
    }
}

fn main() {
    if let Some(rounds) = std::env::var("BLKBACK_INTERLEAVED")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        interleaved(rounds.max(1));
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
