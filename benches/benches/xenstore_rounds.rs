//! xenstored pipelined reads in interleaved rounds: each round runs the `read` workload over
//! 64 connections x 16 in flight (1,000 idle connections beside, as in the `xenstore`
//! bench) once against our daemon (journalled, as the binary runs by default, and in memory)
//! and once against the echo server (the socket round-trip limit), in turn; the medians and
//! the median of the per-round ratios are printed (load on a shared machine falls on all
//! alike).
//!
//! `cargo bench -p benches --bench xenstore_rounds`; `ROUNDS` in the environment changes the
//! number of rounds (21), `OPS` the reads per run (100,000).

#![allow(missing_docs)]

use std::time::Duration;

use benches::cpeer;
use benches::echo::EchoServer;
use benches::load::{Config, Session, Stop, Workload};

#[path = "xenstore/ours.rs"]
mod ours;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo test` runs bench targets without `--bench`: one short round, as a check that
    // it works, not a measurement.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (rounds, ops) = if smoke {
        (1, 2_000)
    } else {
        (env("ROUNDS", 21) as usize, env("OPS", 100_000))
    };
    let dir = cpeer::temp_dir("xs-rounds").expect("temp dir");
    let journalled = ours::Ours::start(dir.path(), "ours", true).expect("our xenstored");
    let in_memory = ours::Ours::start(dir.path(), "ours-mem", false).expect("our xenstored");
    let echo = EchoServer::start(&dir.path().join("echo.sock")).expect("echo server");
    let peers = [
        ("ours", journalled.socket_path()),
        ("ours-mem", in_memory.socket_path()),
        ("echo", echo.socket_path()),
    ];
    let mut sessions: Vec<Session> = peers
        .iter()
        .map(|(name, sock)| {
            let mut cfg = Config::new(sock, Workload::Read);
            cfg.conns = 64;
            cfg.depth = 16;
            cfg.idle = 1000;
            Session::open(cfg).unwrap_or_else(|e| panic!("{name}: preparing: {e}"))
        })
        .collect();
    // One untimed run each: connections warm, buffers grown.
    for s in &mut sessions {
        s.run(Stop::Ops(ops / 4)).expect("warm-up");
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); peers.len()];
    for _ in 0..rounds {
        for (i, s) in sessions.iter_mut().enumerate() {
            let st = s.run(Stop::Ops(ops)).expect("run");
            assert_eq!(st.errors, 0, "{}: error replies", peers[i].0);
            assert_eq!(st.ops, ops, "{}: operations", peers[i].0);
            times[i].push(st.elapsed);
        }
    }
    println!(
        "read 64 conns x 16 in flight, {ops} reads per run, {rounds} interleaved rounds, load {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let echo_i = peers.len() - 1;
    for (i, (name, _)) in peers.iter().enumerate() {
        let m = median(times[i].iter().map(Duration::as_secs_f64).collect());
        // Throughput relative to echo: echo's time over ours, per round.
        let rel = median(
            times[i]
                .iter()
                .zip(&times[echo_i])
                .map(|(t, e)| e.as_secs_f64() / t.as_secs_f64())
                .collect(),
        );
        println!(
            "{name:<9} median {:>8.1} ms  {:>9.0} reads/s  throughput/echo (median of rounds) {:.3}",
            m * 1e3,
            ops as f64 / m,
            rel
        );
    }
}
