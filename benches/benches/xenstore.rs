//! xenstored benchmarks: our daemon, Debian's C xenstored (under the
//! project's shim) and the echo server (the socket round-trip limit),
//! measured in the same run over the same unix-socket protocol.
//!
//! Workloads (each with 1,000 idle connections held open beside):
//! `read` and `write` of a 16-byte value, `directory` of a node with 10,000
//! children (`DIRECTORY_PART` walk where the daemon needs it), `tx-rmw`
//! (read-modify-write transaction) in a store of 100,000 nodes, `read`
//! pipelined over 64 connections x 16 in flight, and `watch-fanout` (one
//! write, until 1,000 watchers have their event).
//!
//! Peers: `ours` (the daemon as the `xenstored` binary runs by default:
//! journalled store), `ours-mem` (in memory, `-I on`), `c` (C xenstored,
//! in memory by default), `echo`, and for `watch-fanout` only `floor` (a
//! store-less server that sends the 1,000 events with one non-blocking write
//! each: the fan-out's socket limit, as `echo` is the requests'). Set
//! `XS_BENCH_PEERS=ours,c,echo,floor` (default: all) to choose. Compare
//! the peers' times within one group: ratios are meaningful, absolute numbers
//! depend on the machine.

use std::time::Duration;

use benches::cpeer::{self, CXenstored, TempDir};
use benches::echo::EchoServer;
use benches::load::{Config, Session, Stop, Workload};
use criterion::{BenchmarkId, Criterion, Throughput};

#[path = "xenstore/fanout_floor.rs"]
mod fanout_floor;
#[path = "xenstore/ours.rs"]
mod ours;

const IDLE: usize = 1000;

struct Peers {
    list: Vec<(&'static str, std::path::PathBuf)>,
    _c: Option<CXenstored>,
    _echo: Option<EchoServer>,
    _floor: Option<fanout_floor::FanoutFloor>,
    _ours: Vec<ours::Ours>,
    _dir: TempDir,
}

fn wanted(name: &str) -> bool {
    std::env::var("XS_BENCH_PEERS")
        .map(|v| v.split(',').any(|p| p.trim() == name))
        .unwrap_or(true)
}

fn peers() -> Peers {
    let dir = cpeer::temp_dir("xs-bench").expect("temp dir");
    let mut list = Vec::new();
    let mut ours = Vec::new();
    for (name, persist) in [("ours", true), ("ours-mem", false)] {
        if wanted(name) {
            let o = ours::Ours::start(dir.path(), name, persist)
                .unwrap_or_else(|e| panic!("starting our xenstored: {e}"));
            list.push((name, o.socket_path().to_owned()));
            ours.push(o);
        }
    }
    let c = if wanted("c") {
        let c = CXenstored::start(&[]).unwrap_or_else(|e| panic!("C xenstored peer: {e}"));
        list.push(("c-xenstored", c.socket_path().to_owned()));
        Some(c)
    } else {
        None
    };
    let echo = if wanted("echo") {
        let e = EchoServer::start(&dir.path().join("echo.sock")).expect("echo server");
        list.push(("echo", e.socket_path().to_owned()));
        Some(e)
    } else {
        None
    };
    let floor = if wanted("floor") {
        let f = fanout_floor::FanoutFloor::start(&dir.path().join("floor.sock"))
            .expect("fan-out floor server");
        list.push(("fanout-floor", f.socket_path().to_owned()));
        Some(f)
    } else {
        None
    };
    Peers {
        list,
        _c: c,
        _echo: echo,
        _floor: floor,
        _ours: ours,
        _dir: dir,
    }
}

struct Case {
    name: &'static str,
    workload: Workload,
    conns: usize,
    depth: usize,
    tweak: fn(&mut Config),
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "read",
            workload: Workload::Read,
            conns: 1,
            depth: 1,
            tweak: |_| {},
        },
        Case {
            name: "write",
            workload: Workload::Write,
            conns: 1,
            depth: 1,
            tweak: |_| {},
        },
        Case {
            name: "read-64conns-x16",
            workload: Workload::Read,
            conns: 64,
            depth: 16,
            tweak: |_| {},
        },
        Case {
            name: "directory-10000",
            workload: Workload::Directory,
            conns: 1,
            depth: 1,
            tweak: |c| c.children = 10_000,
        },
        Case {
            name: "tx-rmw-100000-nodes",
            workload: Workload::TxRmw,
            conns: 1,
            depth: 1,
            tweak: |c| c.tree_nodes = 100_000,
        },
        Case {
            name: "watch-fanout-1000",
            workload: Workload::WatchFanout,
            conns: 1,
            depth: 1,
            tweak: |c| c.watchers = 1000,
        },
    ]
}

fn xenstored(c: &mut Criterion) {
    let peers = peers();
    for case in cases() {
        let mut g = c.benchmark_group(format!("xenstored/{}", case.name));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2))
            .throughput(Throughput::Elements(1));
        for (name, sock) in &peers.list {
            if case.workload == Workload::WatchFanout && *name == "echo" {
                continue; // the echo server sends no watch events
            }
            if case.workload != Workload::WatchFanout && *name == "fanout-floor" {
                continue; // the fan-out floor is for the fan-out only
            }
            let mut cfg = Config::new(sock, case.workload);
            cfg.conns = case.conns;
            cfg.depth = case.depth;
            cfg.idle = IDLE;
            (case.tweak)(&mut cfg);
            let mut session = Session::open(cfg)
                .unwrap_or_else(|e| panic!("{name}: preparing {}: {e}", case.name));
            g.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter_custom(|iters| {
                    let st = session
                        .run(Stop::Ops(iters))
                        .unwrap_or_else(|e| panic!("{name} {}: {e}", case.name));
                    assert_eq!(st.errors, 0, "{name} {}: error replies", case.name);
                    st.elapsed
                })
            });
        }
        g.finish();
    }
}

/// Runs the benchmarks (what `criterion_group!`/`criterion_main!` expand to).
fn main() {
    let mut c = Criterion::default().configure_from_args();
    xenstored(&mut c);
    c.final_summary();
}
