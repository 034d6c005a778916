//! Toolstack benchmarks: `VM.get_all_records` and `xe vm-list` at 100 / 1,000 / 10,000 VMs,
//! `VM.start` on the simulated host, and API calls/s with 64 concurrent clients.
//!
//! Peers measured in the same run: the in-process dispatch (no transport) for the wire
//! calls, `get_all_records` alone for `xe vm-list`, the in-memory database for `VM.start` on
//! SQLite, and one client for the 64-client throughput.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use toolstack::client::Client;
use toolstack::db::Db;
use toolstack::value::Value;

#[path = "toolstack/common.rs"]
mod common;

use common::{add_vms, client, server, sim, xe_vm_list_args, Server};

fn get_all_records(c: &mut Criterion) {
    let mut g = c.benchmark_group("toolstack/VM.get_all_records");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let s = server(sim(), Db::in_memory());
    let mut have = 1; // dom0
    for n in [100usize, 1_000, 10_000] {
        add_vms(&s, n + 1 - have);
        have = n + 1;
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("in-process", n), |b| {
            b.iter(|| {
                s.xapi
                    .call("VM.get_all_records", std::slice::from_ref(&s.session))
                    .unwrap()
            })
        });
        let mut cl = client(s.port);
        g.bench_function(BenchmarkId::new("xml-rpc", n), |b| {
            b.iter(|| cl.call("VM.get_all_records", &[]).unwrap())
        });
        let argv = xe_vm_list_args(&s);
        g.bench_function(BenchmarkId::new("xe vm-list", n), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(1 << 20);
                toolstack::cli::run(&argv, &mut out).unwrap();
                out
            })
        });
        // Every parameter of every VM, with the records of every class VMs refer to.
        let mut all = argv.clone();
        all.push("params=all".into());
        g.bench_function(BenchmarkId::new("xe vm-list params=all", n), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(1 << 20);
                toolstack::cli::run(&all, &mut out).unwrap();
                out
            })
        });
    }
    g.finish();
}

/// `event.from` with a current token after one change, as the database grows: what it
/// costs should follow what changed (one object), not what exists.
fn event_from(c: &mut Criterion) {
    let mut g = c.benchmark_group("toolstack/event.from");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let s = server(sim(), Db::in_memory());
    let mut have = 1;
    for n in [100usize, 1_000, 10_000] {
        add_vms(&s, n + 1 - have);
        have = n + 1;
        let vm = s
            .xapi
            .call("VM.get_all", std::slice::from_ref(&s.session))
            .unwrap()
            .as_array()
            .unwrap()[1]
            .clone();
        let classes = Value::Array(vec![Value::str("*")]);
        g.bench_function(BenchmarkId::new("one change", n), |b| {
            b.iter(|| {
                let token = s
                    .xapi
                    .call("event.get_current_id", std::slice::from_ref(&s.session))
                    .unwrap();
                s.xapi
                    .call(
                        "VM.set_name_description",
                        &[s.session.clone(), vm.clone(), Value::str("x")],
                    )
                    .unwrap();
                let r = s
                    .xapi
                    .call(
                        "event.from",
                        &[
                            s.session.clone(),
                            classes.clone(),
                            token,
                            Value::Double(0.0),
                        ],
                    )
                    .unwrap();
                assert_eq!(
                    r.as_struct().unwrap()["events"].as_array().unwrap().len(),
                    1
                );
            })
        });
    }
    g.finish();
}

fn vm_start(c: &mut Criterion) {
    let mut g = c.benchmark_group("toolstack/VM.start+hard_shutdown");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    start_and_stop(&mut g, "xenctrl+xen-sim", &server(sim(), Db::in_memory()));
    // The same on the persistent (SQLite, synchronous=FULL) database.
    let dir = std::env::temp_dir().join(format!("toolstack-bench-{}", std::process::id()));
    let s = server(sim(), Db::open(&dir).unwrap());
    start_and_stop(&mut g, "xenctrl+xen-sim, sqlite", &s);
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Benchmarks `VM.start` + `VM.hard_shutdown` of one VM on `s` over XML-RPC, as `name`.
fn start_and_stop(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, s: &Server) {
    add_vms(s, 1);
    let vm = s
        .xapi
        .call(
            "VM.get_by_name_label",
            &[s.session.clone(), Value::str("vm-0")],
        )
        .unwrap()
        .as_array()
        .unwrap()[0]
        .clone();
    let mut cl = client(s.port);
    g.bench_function(name, |b| {
        b.iter(|| {
            cl.call(
                "VM.start",
                &[vm.clone(), Value::Bool(false), Value::Bool(false)],
            )
            .unwrap();
            cl.call("VM.hard_shutdown", std::slice::from_ref(&vm))
                .unwrap();
        })
    });
}

fn concurrent(c: &mut Criterion) {
    let mut g = c.benchmark_group("toolstack/calls");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));
    let s = server(sim(), Db::in_memory());
    add_vms(&s, 100);
    let vm = s
        .xapi
        .call("VM.get_all", std::slice::from_ref(&s.session))
        .unwrap()
        .as_array()
        .unwrap()[1]
        .clone();
    const CALLS: u64 = 200;
    for clients in [1u64, 64] {
        let mut pool: Vec<Client> = (0..clients).map(|_| client(s.port)).collect();
        g.throughput(Throughput::Elements(clients * CALLS));
        g.bench_function(
            BenchmarkId::new("VM.get_power_state", format!("{clients} clients")),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        std::thread::scope(|sc| {
                            for cl in pool.iter_mut() {
                                let vm = vm.clone();
                                sc.spawn(move || {
                                    for _ in 0..CALLS {
                                        cl.call("VM.get_power_state", std::slice::from_ref(&vm))
                                            .unwrap();
                                    }
                                });
                            }
                        });
                        total += start.elapsed();
                    }
                    total
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, get_all_records, event_from, vm_start, concurrent);
criterion_main!(benches);
