//! The ring benches in interleaved rounds: each round runs `ring/loopback` (one thread, both
//! ends, batches of 16) and `ring/two_threads_spin` once for Rust and once for the C macros,
//! in turn, and the medians and their ratio are printed (load on a shared machine falls on
//! both alike).
//!
//! `cargo bench -p benches --bench ring_rounds`; `ROUNDS` in the environment changes the
//! number of rounds (21).

#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use xen_ring::testing::{cref, loopback, loopback_batched, CKind, EchoWorkload};
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
    // `cargo test` runs bench targets without `--bench`: one round, as a check that it
    // works, not a measurement.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rounds: usize = if smoke {
        1
    } else {
        std::env::var("ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(21)
    };
    let rust_mem = Arc::new(PageBuf::new(1).expect("page"));
    let batch_mem = Arc::new(PageBuf::new(1).expect("page"));
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
            "loopback rust batched",
            Box::new(|| {
                let good = loopback_batched::<EchoWorkload, _>(&batch_mem, LOOPBACK, 16)
                    .expect("loopback");
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
            "two_threads_spin rust batched",
            Box::new(|| {
                std::hint::black_box(exchange(Pair::RustBatched, SPIN, false));
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
    // Per-round ratios to the C step of the same round, then their median.
    let ratio = |r: usize, c: usize| {
        let mut v: Vec<f64> = times[r]
            .iter()
            .zip(&times[c])
            .map(|(r, c)| r.as_secs_f64() / c.as_secs_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratios = [
        ("loopback rust/c", ratio(0, 2)),
        ("loopback rust batched/c", ratio(1, 2)),
        ("two_threads_spin rust/c", ratio(3, 5)),
        ("two_threads_spin rust batched/c", ratio(4, 5)),
    ];
    for (i, (name, _)) in steps.iter().enumerate() {
        let n = if i < 3 { LOOPBACK } else { SPIN };
        let m = median(times[i].clone());
        println!(
            "{name:<30} median {:>8.3} ms  {:>6.2} ns/request",
            m.as_secs_f64() * 1e3,
            m.as_secs_f64() * 1e9 / n as f64
        );
    }
    for (what, r) in ratios {
        println!("{what:<32} median of per-round ratios {r:.2}");
    }
}
