//! `VM.get_all_records` and `xe vm-list` at 10,000 VMs in interleaved rounds: each round
//! times every step once, in turn, and the medians are printed (so load on a shared machine
//! falls on all of them alike).
//!
//! Steps: the in-process dispatch that builds the reply as a value tree (the peer), the
//! server's XML reply alone (with every record encoded anew, and as kept from the last
//! call), the client's parse of that reply alone, the whole call over XML-RPC on TCP, and
//! `xe vm-list` (login, the call, the output, logout).
//!
//! `cargo bench -p benches --bench toolstack_rounds`; `VMS` and `ROUNDS` in the environment
//! change the size (10,000) and the number of rounds (11).

#![allow(missing_docs)]

use std::time::{Duration, Instant};

use toolstack::db::Db;

#[path = "toolstack/common.rs"]
mod common;

use common::{add_vms, client, server, sim};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    // `cargo test` runs bench targets without `--bench`: one small round, as a check that
    // it works, not a measurement.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let vms = if smoke { 100 } else { env("VMS", 10_000) };
    let rounds = if smoke { 1 } else { env("ROUNDS", 11) };
    let s = server(sim(), Db::in_memory());
    add_vms(&s, vms);
    let mut cl = client(s.port);
    let call =
        toolstack::xmlrpc::encode_call("VM.get_all_records", std::slice::from_ref(&s.session));
    let reply = toolstack::server::handle_xmlrpc(&s.xapi, call.as_bytes());
    let argv: Vec<String> = [
        "-s",
        "127.0.0.1",
        "-p",
        &s.port.to_string(),
        "--nossl",
        "-pw",
        "pw",
        "vm-list",
    ]
    .iter()
    .map(|x| (*x).to_owned())
    .collect();
    let mut listed = Vec::new();
    toolstack::cli::run(&argv, &mut listed).unwrap();
    assert_eq!(
        String::from_utf8(listed)
            .unwrap()
            .matches("uuid ( RO)")
            .count(),
        vms + 1,
        "xe vm-list shows every VM and dom0"
    );
    println!(
        "{vms} VMs, reply {} KiB, {rounds} interleaved rounds, load {}",
        reply.len() / 1024,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    type Step<'a> = (&'static str, Box<dyn FnMut() + 'a>);
    let steps: Vec<Step<'_>> = vec![
        (
            "in-process (value tree)",
            Box::new(|| {
                std::hint::black_box(
                    s.xapi
                        .call("VM.get_all_records", std::slice::from_ref(&s.session))
                        .unwrap(),
                );
            }),
        ),
        (
            "server XML reply, cold",
            Box::new(|| {
                // Every record encoded anew (as after each one changed).
                s.xapi.db().drop_encodings();
                std::hint::black_box(toolstack::server::handle_xmlrpc(&s.xapi, call.as_bytes()));
            }),
        ),
        (
            "server XML reply",
            Box::new(|| {
                std::hint::black_box(toolstack::server::handle_xmlrpc(&s.xapi, call.as_bytes()));
            }),
        ),
        (
            "client parse",
            Box::new(|| {
                std::hint::black_box(toolstack::xmlrpc::parse_response(&reply).unwrap().unwrap());
            }),
        ),
        (
            "xml-rpc call",
            Box::new(move || {
                std::hint::black_box(cl.call("VM.get_all_records", &[]).unwrap());
            }),
        ),
        (
            "xe vm-list",
            Box::new(|| {
                let mut out = Vec::with_capacity(1 << 20);
                toolstack::cli::run(&argv, &mut out).unwrap();
                std::hint::black_box(out);
            }),
        ),
    ];
    let mut steps = steps;
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); steps.len()];
    for _ in 0..rounds {
        for (i, (_, f)) in steps.iter_mut().enumerate() {
            let t = Instant::now();
            f();
            times[i].push(t.elapsed());
        }
    }
    for (i, (name, _)) in steps.iter().enumerate() {
        // Per-round ratio to the in-process peer of the same round, then its median.
        let mut r: Vec<f64> = times[i]
            .iter()
            .zip(&times[0])
            .map(|(t, p)| t.as_secs_f64() / p.as_secs_f64())
            .collect();
        r.sort_by(f64::total_cmp);
        let m = median(times[i].clone());
        println!(
            "{name:<26} median {:>8.1} ms  ({:.2}x the in-process peer, median of rounds)",
            m.as_secs_f64() * 1e3,
            r[r.len() / 2]
        );
    }
}
