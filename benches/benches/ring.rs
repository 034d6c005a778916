//! Shared-ring throughput: our `xen-ring` rings against the C macros of Debian's
//! `<xen/io/ring.h>` (`xen-ring/csrc/ring_ref.c`) driving the same exchange in the same run.
//!
//! - `ring/loopback`: both ends in one thread, batches of 16: per-request cost of the ring
//!   operations without cross-core traffic.
//! - `ring/loopback_checksum`: the same with the checksummed test workload (work per
//!   request: an FNV-1a over the payload on both ends).
//! - `ring/two_threads_spin`: front end and back end in two threads on one page, polling
//!   (notifications computed and counted, not sent; idle rounds yield every 64th time).
//! - `ring/two_threads_eventfd`: the same with eventfd doorbells rung when the check-notify
//!   macros say so, and sleeps after the final checks (event-channel style).
//!
//! The two-thread groups and `ring/loopback` use the echo workload (64-byte request filled,
//! 16-byte response, next to no work), so the ring operations dominate. Both sides touch the
//! same fields: the front end fills all 64 bytes in the slot, the back end reads `id`,
//! `csum` and the last payload byte (in C, `RING_COPY_REQUEST`'s `volatile` qualifies the
//! pointer, not the entry, so GCC loads only the fields `echo_serve` uses; the Rust back end
//! reads those three in place, once each) and writes the 16-byte response, and the front end
//! copies the response out and checks it.
//!
//! Each group reports elements (requests) per second; divide to get ns per request. Peers:
//! `rust` (Rust front + Rust back, per-entry calls), `rust_batched` (the same on the batch
//! API: one index check and one publish per batch), `c` (C front + C back), and the mixed
//! pairs. `ring_rounds` runs the same exchanges in interleaved rounds.

#![allow(missing_docs)] // the group macro generates an undocumented pub fn

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use xen_ring::testing::{cref, loopback, loopback_batched, CKind, EchoWorkload, TestWorkload};
use xen_types::mem::PageBuf;

#[path = "ring/common.rs"]
mod common;

use common::{exchange, Pair};

fn two_threads(c: &mut Criterion, bells: bool, n: u64) {
    let name = if bells {
        "ring/two_threads_eventfd"
    } else {
        "ring/two_threads_spin"
    };
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(n));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    for pair in [
        Pair::Rust,
        Pair::RustBatched,
        Pair::C,
        Pair::CFrontRustBack,
        Pair::RustFrontCBack,
    ] {
        g.bench_function(BenchmarkId::from_parameter(pair.name()), |b| {
            b.iter(|| black_box(exchange(pair, n, bells)))
        });
    }
    g.finish();
}

fn bench_spin(c: &mut Criterion) {
    two_threads(c, false, 200_000);
}

fn bench_eventfd(c: &mut Criterion) {
    two_threads(c, true, 100_000);
}

fn loopback_group(c: &mut Criterion, name: &str, kind: CKind) {
    const N: u64 = 100_000;
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(N));
    g.sample_size(30);
    let rust_mem = Arc::new(PageBuf::new(1).expect("page"));
    g.bench_function("rust", |b| {
        b.iter(|| {
            let good = match kind {
                CKind::Echo => loopback::<EchoWorkload, _>(&rust_mem, N, 16),
                _ => loopback::<TestWorkload, _>(&rust_mem, N, 16),
            };
            assert_eq!(good.expect("loopback"), N);
        })
    });
    g.bench_function("rust_batched", |b| {
        b.iter(|| {
            let good = match kind {
                CKind::Echo => loopback_batched::<EchoWorkload, _>(&rust_mem, N, 16),
                _ => loopback_batched::<TestWorkload, _>(&rust_mem, N, 16),
            };
            assert_eq!(good.expect("loopback"), N);
        })
    });
    let c_mem = PageBuf::new(1).expect("page");
    g.bench_function("c", |b| {
        b.iter(|| assert_eq!(cref::loopback(kind, &c_mem, N, 16), N))
    });
    g.finish();
}

fn bench_loopback(c: &mut Criterion) {
    loopback_group(c, "ring/loopback", CKind::Echo);
    loopback_group(c, "ring/loopback_checksum", CKind::Test);
}

criterion_group!(benches, bench_loopback, bench_spin, bench_eventfd);
criterion_main!(benches);
