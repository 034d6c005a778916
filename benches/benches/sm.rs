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
//! - `sm/read/flat` and `sm/read/chain3`: 1 MiB sequential reads of 64 MiB through
//!   `sm::image::Image` (the reader blkback's qcow2 disk uses), of a flat copy and of the
//!   disk three snapshots deep (each layer rewrote part of the data), from the page cache.
//!
//! `SM_INTERLEAVED=<rounds>` instead alternates the peers in rounds and prints medians
//! (snapshot and clone times of both VDIs; the per-round throughput ratio chain3/flat):
//! `SM_INTERLEAVED=41 cargo bench -p benches --bench sm`.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sm::file::FileSr;
use sm::image::Image;
use sm::{SrDriver, SrUuid, VdiUuid};

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
    let chain = Image::open(&sr.dir().join(format!("{v}.qcow2")), false).unwrap();
    let flat = Image::open(&sr.dir().join(format!("{flat}.qcow2")), false).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut other = vec![0u8; MIB as usize];
    read_all(&chain, &mut buf);
    read_all(&flat, &mut other);
    assert!(buf == other, "the flat copy reads the same data");

    if let Some(rounds) = interleaved() {
        let mut ratios = Vec::new();
        for r in 0..rounds {
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
}

criterion_group!(benches, snapshot_and_clone, reads);
criterion_main!(benches);
