//! One squeezer decision for 10, 100 and 1,000 domains, and a whole `free_memory` on the
//! simulated host (`xen-sim` through `xenctrl`, the project's xenstored in process, the
//! guests' balloon drivers on a manual clock), reported with the simulated seconds it took.
//!
//! Peers in the same run: the pure policy alone (`compute_targets`, the floor of any
//! decision) and a decision by a squeezer that has not seen the host before (cold).

#![allow(missing_docs)] // the group macro generates an undocumented pub fn

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use squeezed::{
    policy, Config, DomId, DomainMemory, HostIo, HostState, Kib, Pacer, Pages, Squeezed, Squeezer,
    XenHost,
};
use xen_sim::balloon::BalloonBehaviour;
use xen_sim::{Clock, Host, HostConfig};
use xenbus::testing::{SimBalloons, TestXenstore};
use xenbus::Store;
use xenctrl::{DomainConfig, Xen};

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

/// Time on the simulated host: a tick of the guests' drivers.
struct Ticks(Arc<SimBalloons>, u64);

impl Pacer for Ticks {
    fn now(&self) -> Duration {
        self.0.host().clock().now()
    }
    fn wait(&mut self, interval: Duration) -> squeezed::Result<()> {
        self.1 += 1;
        self.0
            .tick(interval)
            .map_err(|e| squeezed::Error::Host(e.to_string()))
    }
}

/// The domains of [`host`] on `xen-sim` with their keys in xenstore and drivers freeing
/// 256 MiB/s.
fn sim_host(n: usize, xs: &TestXenstore) -> Squeezed<XenHost<Ticks>> {
    let domains = host(n).domains;
    let total: u64 = domains.iter().map(|d| Pages::from_kib(d.actual.0).0).sum();
    let host = Host::new(HostConfig {
        clock: Clock::manual(),
        memory: Pages(total),
        dom0_memory: Pages::ZERO,
        ..HostConfig::default()
    });
    let xen = Arc::new(Xen::sim(host.clone()));
    let balloons = Arc::new(SimBalloons::new(host));
    let d0 = xs.dom0();
    for d in &domains {
        let cfg = DomainConfig {
            domid: Some(d.domid),
            ..DomainConfig::pv(1)
        };
        xen.create_domain(&cfg).expect("create");
        xen.set_max_mem(d.domid, d.actual.to_pages())
            .expect("maxmem");
        xen.increase_reservation(d.domid, d.actual.to_pages())
            .expect("memory");
        xen.unpause(d.domid).expect("unpause");
        let mem = format!("/local/domain/{}/memory", d.domid.0);
        for (k, v) in [
            ("dynamic-min", d.dynamic_min),
            ("dynamic-max", d.dynamic_max),
            ("target", d.target),
        ] {
            d0.write(&format!("{mem}/{k}"), &v.0.to_string())
                .expect("key");
        }
        let store: Arc<dyn Store> = d0.clone();
        balloons
            .load(
                d.domid,
                store,
                BalloonBehaviour::Ideal { rate_kib: 1 << 18 },
                Pages(1),
            )
            .expect("driver");
    }
    let store: Arc<dyn Store> = d0.clone();
    let config = Config {
        poll_interval: Duration::from_millis(100),
        ..Config::default()
    };
    Squeezed::new(XenHost::new(xen, store, Ticks(balloons, 0), Kib(4)), config)
}

fn convergence(c: &mut Criterion) {
    let mut g = c.benchmark_group("squeezed/free_memory");
    g.sample_size(10);
    for n in SIZES {
        // Once, to report the simulated time the guests needed and one host snapshot.
        let xs = TestXenstore::start().expect("xenstored");
        let mut sq = sim_host(n, &xs);
        let t = Instant::now();
        sq.io_mut().host_state().expect("state");
        let snapshot = t.elapsed();
        let t = Instant::now();
        sq.free_memory(required(n)).expect("free_memory");
        println!(
            "squeezed/free_memory/{n}: converged in {:.1} simulated s, {} polls, {:.3} s wall; \
             one host snapshot (xenctrl + xenstore) {:.3} ms",
            sq.io().now().as_secs_f64(),
            sq.io().pacer().1,
            t.elapsed().as_secs_f64(),
            snapshot.as_secs_f64() * 1e3,
        );
        if n < 1000 {
            g.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter_batched(
                    || {
                        let xs = TestXenstore::start().expect("xenstored");
                        (sim_host(n, &xs), xs)
                    },
                    |(mut sq, _xs)| {
                        sq.free_memory(required(n)).expect("free_memory");
                        black_box(sq.io().pacer().1)
                    },
                    BatchSize::PerIteration,
                );
            });
        }
    }
    g.finish();
}

criterion_group!(benches, decision, convergence);
criterion_main!(benches);
