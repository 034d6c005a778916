//! Grant copy and grant-mapped access on the simulated host against plain `memcpy` of the
//! same sizes, in the same run.
//!
//! - `gnttab/memcpy`: copy between two private buffers (the peer).
//! - `gnttab/grant_copy`: dom0 copies a guest's granted pages into a local buffer with one
//!   batched grant copy (one 4 KiB segment per page, as a backend copies a request).
//! - `gnttab/mapped_read`: dom0 reads the same bytes through an existing grant mapping.
//! - `gnttab/map_read_unmap`: map, read, unmap per iteration (the cost of a map per request).
//!
//! Each reports bytes per second; the ratio to `memcpy` at the same size is the figure of merit
//! (target: grant copy at 64 KiB >= 70% of memcpy).

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gnttab::{Access, CopyDest, CopySegment, CopySource, Gntshr, Gnttab, GrantStatus};
use xen_types::mem::SharedMemoryExt;
use xen_types::{DomId, GrantRef, Pages, PAGE_SIZE};

fn guest(h: &xen_sim::Host) -> DomId {
    let cfg = xen_sim::domain::small_pv_guest(1023);
    let g = h.create_domain(DomId::INVALID, &cfg).expect("create");
    h.set_max_mem_kb(g, 8192).expect("maxmem");
    h.increase_reservation(g, Pages(1024)).expect("memory");
    g
}

/// One batched grant copy of `refs` (one page each) of guest `g` into `dst`, as a backend
/// copies a request.
fn grant_copy(back: &Gnttab, g: DomId, refs: &[GrantRef], dst: &mut [u8]) {
    let mut segs: Vec<CopySegment<'_>> = dst
        .chunks_mut(PAGE_SIZE)
        .zip(refs)
        .map(|(chunk, r)| CopySegment {
            source: CopySource::Gref {
                domid: g,
                gref: *r,
                offset: 0,
            },
            dest: CopyDest::Local(chunk),
            len: PAGE_SIZE as u16,
            status: GrantStatus::GENERAL_ERROR,
        })
        .collect();
    back.copy(&mut segs).expect("copy");
    debug_assert!(segs.iter().all(|s| s.status.is_ok()));
}

fn bench(c: &mut Criterion) {
    let host = xen_sim::Host::default();
    let g = guest(&host);
    let back = Gnttab::open_sim(&host, DomId::DOM0).expect("gnttab");
    let mut g_ = c.benchmark_group("gnttab");
    g_.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for size in [4096usize, 65536] {
        let pages = size / PAGE_SIZE;
        let shared = Gntshr::open_sim(&host, g)
            .expect("gntshr")
            .share(DomId::DOM0, pages, Access::ReadWrite)
            .expect("share");
        shared.fill(0, size, 0x5a).expect("fill");
        let refs = shared.refs().to_vec();
        let mut dst = vec![0u8; size];
        let plain_src = vec![0x5au8; size];
        // The guest's bytes arrive both ways (checked once, untimed, whichever benchmarks a
        // filter selects).
        grant_copy(&back, g, &refs, &mut dst);
        assert!(dst.iter().all(|&x| x == 0x5a), "grant copy moved the data");
        dst.fill(0);
        let map = back.map(g, &refs, Access::ReadOnly).expect("map");
        map.read_bytes(0, &mut dst).expect("read");
        assert!(dst.iter().all(|&x| x == 0x5a), "the mapping shows the data");
        g_.throughput(Throughput::Bytes(size as u64));

        g_.bench_function(BenchmarkId::new("memcpy", size), |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&plain_src));
                black_box(&dst);
            })
        });
        g_.bench_function(BenchmarkId::new("grant_copy", size), |b| {
            b.iter(|| grant_copy(&back, g, &refs, &mut dst));
            black_box(&dst);
        });
        g_.bench_function(BenchmarkId::new("mapped_read", size), |b| {
            b.iter(|| {
                map.read_bytes(0, &mut dst).expect("read");
                black_box(&dst);
            })
        });
        g_.bench_function(BenchmarkId::new("map_read_unmap", size), |b| {
            b.iter(|| {
                let m = back.map(g, &refs, Access::ReadOnly).expect("map");
                m.read_bytes(0, &mut dst).expect("read");
                black_box(&dst);
            })
        });
    }
    g_.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
