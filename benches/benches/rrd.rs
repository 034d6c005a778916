//! Metrics benchmarks (issue 16): the sampler's cost per VM per 5-second step at 10, 100 and
//! 1,000 VMs, and the `/rrd_updates` build at 1,000 VMs.
//!
//! - `archive_update/N`: one step's archive update ([`Metrics::update`]) for N VMs with
//!   2 vCPUs each, xcp-rrdd's layout with MIN/MAX (10 archives per RRD); throughput is per
//!   VM, so a flat line from 10 to 1,000 means a constant cost per VM.
//! - `sample_and_update/N`: the whole step: reading the host and N domains through
//!   `xenctrl` on xen-sim ([`collect`]) plus the archive update.
//! - `rrd_updates_1000vms/{xml,json}`: the last 10 minutes (119 rows) of the host and 1,000
//!   VMs at 5-second resolution, built as XAPI serves it; XML and JSON are each other's peer.

//!
//! Seen on the shared 2-core machine (load ~12, `CARGO_PROFILE_BENCH_LTO=false`), per VM per
//! step: archive_update 0.50 / 0.43 / 1.8 µs and sample_and_update 2.3 / 0.83 / 4.4 µs at
//! 10 / 100 / 1,000 VMs (at 1,000 the archives, ~33 MB, leave the caches): 4.4 ms per 5 s
//! step at 1,000 VMs is 0.09 % of a core. `/rrd_updates` at 1,000 VMs: 127 ms XML, 122 ms
//! JSON (555 / 448 ms before `%.15g` stopped allocating, same machine).

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::collections::HashMap;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use toolstack::metrics::{collect, HostSample, Metrics, VmSample};
use xen_types::{DomId, VcpuId};

const T0: f64 = 1_700_000_000.0;

fn host_sample(t: f64) -> HostSample {
    HostSample {
        cpu_busy: (0..8).map(|i| t * 0.1 * (i + 1) as f64 / 8.0).collect(),
        memory_total_kib: 16 << 20,
        memory_free_kib: 8 << 20,
        loadavg: Some(0.5),
        counters: vec![],
    }
}

fn vm_samples(n: usize, t: f64) -> Vec<VmSample> {
    (0..n)
        .map(|i| VmSample {
            uuid: format!("00000000-0000-4000-8000-{i:012}"),
            vcpu_time: vec![t * 0.25, t * 0.5],
            memory: 1 << 30,
            memory_target: Some(1 << 30),
            counters: vec![],
            latency: vec![],
        })
        .collect()
}

fn archive_update(c: &mut Criterion) {
    let mut g = c.benchmark_group("archive_update");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    for n in [10usize, 100, 1000] {
        let m = Metrics::new("host", None);
        let mut t = T0;
        let mut samples = vm_samples(n, t);
        m.update(t, &host_sample(t), &samples);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                t += 5.0;
                for s in &mut samples {
                    s.vcpu_time[0] += 1.25;
                    s.vcpu_time[1] += 2.5;
                }
                m.update(t, &host_sample(t), &samples);
            })
        });
    }
    g.finish();
}

fn sample_and_update(c: &mut Criterion) {
    let mut g = c.benchmark_group("sample_and_update");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for n in [10usize, 100, 1000] {
        let sim = xen_sim::Host::new(xen_sim::HostConfig {
            clock: xen_sim::Clock::manual(),
            ..Default::default()
        });
        let mut vms = HashMap::new();
        for i in 0..n {
            let mut cfg = xen_sim::domain::small_pv_guest(63);
            cfg.max_vcpus = 2;
            let d = sim.create_domain(DomId(0), &cfg).unwrap();
            sim.set_max_vcpus(d, 2).unwrap();
            sim.guest_vcpu_set_online(d, VcpuId(0), true).unwrap();
            sim.guest_vcpu_set_online(d, VcpuId(1), true).unwrap();
            sim.unpause(d).unwrap();
            vms.insert(d, format!("00000000-0000-4000-8000-{i:012}"));
        }
        let xen = xenctrl::Xen::sim(sim.clone());
        let m = Metrics::new("host", None);
        let mut t = T0;
        let target = |_: DomId| Some(1 << 20);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                t += 5.0;
                sim.clock().advance(Duration::from_secs(5));
                let (h, s) = collect(&*xen, &vms, &target);
                assert_eq!(s.len(), n);
                m.update(t, &h, &s);
            })
        });
    }
    g.finish();
}

fn rrd_updates(c: &mut Criterion) {
    let mut g = c.benchmark_group("rrd_updates_1000vms");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let m = Metrics::new("host", None);
    let mut samples = vm_samples(1000, T0);
    let mut t = T0;
    for _ in 0..130 {
        t += 5.0;
        for s in &mut samples {
            s.vcpu_time[0] += 1.25;
            s.vcpu_time[1] += 2.5;
        }
        m.update(t, &host_sample(t), &samples);
    }
    // Just inside the 5-second archive (it spans 600 s; a start at its edge moves the
    // export to the 1-minute archive, as xapi-rrd's find_best_rras does).
    let start = t as i64 - 595;
    for (name, json) in [("xml", false), ("json", true)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let out = m
                    .rrd_updates(start, 5, Some(rrd::Cf::Average), true, None, json)
                    .unwrap();
                assert!(out.len() > 4_000_000, "{} bytes", out.len());
                out.len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, archive_update, sample_and_update, rrd_updates);
criterion_main!(benches);
