//! One squeezer decision for 10, 100 and 1,000 domains, and a whole `free_memory` on the
//! simulated host (reported with the simulated seconds it took the guests).
//!
//! Peers in the same run: the pure policy alone (`compute_targets`, the floor of any
//! decision) and a decision by a squeezer that has not seen the host before (cold).

#![allow(missing_docs)] // the group macro generates an undocumented pub fn

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use squeezed::sim::{Behaviour, Guest, SimHost};
use squeezed::{policy, Config, DomId, DomainMemory, HostIo, HostState, Kib, Squeezed, Squeezer};

const SIZES: [usize; 3] = [10, 100, 1000];

/// `n` domains of 1–2 GiB dynamic range at their dynamic-max, none free: every decision
/// must squeeze all of them.
fn host(n: usize) -> HostState {
    HostState {
        free: Kib(0),
        domains: (0..n)
            .map(|i| {
                let min = 1 << 20;
                let max = min + (1 << 20) + (i as u64 % 7) * 4096;
                DomainMemory {
                    domid: DomId(i as u16 + 1),
                    can_balloon: true,
                    dynamic_min: Kib(min),
                    target: Kib(max),
                    dynamic_max: Kib(max),
                    actual: Kib(max),
                    maxmem: Kib(max),
                    inaccuracy: Kib(4),
                }
            })
            .collect(),
    }
}

fn required(n: usize) -> Kib {
    Kib(n as u64 * (1 << 19))
}

fn decision(c: &mut Criterion) {
    let mut g = c.benchmark_group("squeezed/decision");
    for n in SIZES {
        let h = host(n);
        let want = required(n);
        g.bench_with_input(BenchmarkId::new("warm", n), &h, |b, h| {
            let mut sq = Squeezer::new();
            sq.one_iteration(h, want, |f| f >= want, Duration::ZERO, &[]);
            let mut t = Duration::ZERO;
            b.iter(|| {
                t += Duration::from_millis(100);
                black_box(sq.one_iteration(black_box(h), want, |f| f >= want, t, &[]))
            });
        });
        g.bench_with_input(BenchmarkId::new("cold", n), &h, |b, h| {
            b.iter_batched(
                Squeezer::new,
                |mut sq| {
                    black_box(sq.one_iteration(
                        black_box(h),
                        want,
                        |f| f >= want,
                        Duration::ZERO,
                        &[],
                    ))
                },
                BatchSize::SmallInput,
            );
        });
        g.bench_with_input(BenchmarkId::new("policy-only", n), &h, |b, h| {
            let mut out = Vec::with_capacity(n);
            b.iter(|| {
                policy::compute_targets(h.free, black_box(&h.domains), want, true, &mut out);
                black_box(out.len())
            });
        });
    }
    g.finish();
}

fn sim_host(n: usize) -> SimHost {
    let guests = host(n)
        .domains
        .into_iter()
        .map(|d| Guest::new(d, Behaviour::Ideal { rate: 1 << 18 }))
        .collect();
    SimHost::new(Kib(0), guests)
}

fn convergence(c: &mut Criterion) {
    let config = Config {
        poll_interval: Duration::from_millis(100),
        ..Config::default()
    };
    let mut g = c.benchmark_group("squeezed/free_memory");
    g.sample_size(10);
    for n in SIZES {
        // Once, to report the simulated time the guests needed.
        let mut sq = Squeezed::new(sim_host(n), config.clone());
        sq.free_memory(required(n)).expect("free_memory");
        println!(
            "squeezed/free_memory/{n}: converged in {:.1} simulated s, {} polls",
            sq.io().now().as_secs_f64(),
            sq.io().steps()
        );
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_batched(
                || Squeezed::new(sim_host(n), config.clone()),
                |mut sq| {
                    sq.free_memory(required(n)).expect("free_memory");
                    black_box(sq.io().steps())
                },
                BatchSize::LargeInput,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, decision, convergence);
criterion_main!(benches);
