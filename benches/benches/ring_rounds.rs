//! The ring benches in interleaved rounds: each round runs `ring/loopback` (one thread, both
//! ends, batches of 16) and `ring/two_threads_spin` once for Rust and once for the C macros,
//! in turn, and the medians and their ratio are printed (load on a shared machine falls on
//! both alike).
//!
//! `cargo bench -p benches --bench ring_rounds`; `ROUNDS` in the environment changes the
//! number of rounds (21).

#![allow(missing_docs)]

use std::time::{Duration, Instant};

use xen_ring::testing::{cref, loopback, CKind, EchoWorkload};
use xen_types::mem::PageBuf;

#[path = "ring/common.rs"]
mod common;

use common::{exchange, Pair};

const LOOPBACK: u64 = 100_000;
const SPIN: u64 = 200_000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(21);
    let rust_mem = PageBuf::new(1).expect("page");
    let c_mem = PageBuf::new(1).expect("page");
    type Step<'a> = (&'static str, Box<dyn FnMut() + 'a>);
    let mut steps: Vec<Step<'_>> = vec![
        (
            "loopback rust",
            Box::new(|| {
                let good = loopback::<EchoWorkload, _>(&rust_mem, LOOPBACK, 16).expect("loopback");
                assert_eq!(good, LOOPBACK);
            }),
        ),
        (
            "loopback c",
            Box::new(|| assert_eq!(cref::loopback(CKind::Echo, &c_mem, LOOPBACK, 16), LOOPBACK)),
        ),
        (
            "two_threads_spin rust",
            Box::new(|| {
                std::hint::black_box(exchange(Pair::Rust, SPIN, false));
            }),
        ),
        (
            "two_threads_spin c",
            Box::new(|| {
                std::hint::black_box(exchange(Pair::C, SPIN, false));
            }),
        ),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); steps.len()];
    for _ in 0..rounds {
        for (i, (_, f)) in steps.iter_mut().enumerate() {
            let t = Instant::now();
            f();
            times[i].push(t.elapsed());
        }
    }
    println!(
        "{rounds} interleaved rounds, load {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let med: Vec<Duration> = times.into_iter().map(median).collect();
    for (i, (name, _)) in steps.iter().enumerate() {
        let n = if i < 2 { LOOPBACK } else { SPIN };
        println!(
            "{name:<24} median {:>8.3} ms  {:>6.2} ns/request",
            med[i].as_secs_f64() * 1e3,
            med[i].as_secs_f64() * 1e9 / n as f64
        );
    }
    for (what, r, c) in [("loopback", 0, 1), ("two_threads_spin", 2, 3)] {
        println!(
            "{what}: rust/c = {:.2}",
            med[r].as_secs_f64() / med[c].as_secs_f64()
        );
    }
}
