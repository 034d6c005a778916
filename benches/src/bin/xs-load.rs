//! `xs-load`: drive any xenstored over its unix socket and print ops/s and
//! latency percentiles, for every combination of workload, connection count
//! and pipelining depth asked for.
//!
//! ```text
//! xs-load --socket /run/xenstored/socket                  # a running daemon
//! xs-load --ours target/release/xenstored --c-xenstored --echo   # three-way
//! xs-load --workload read,write --conns 1,64,1000 --depth 1,16 --duration 3
//! ```

use std::path::PathBuf;
use std::time::Duration;

use benches::cpeer::{self, CXenstored, DaemonProcess};
use benches::echo::EchoServer;
use benches::load::{Config, Session, Stop, Workload};
use clap::Parser;

/// Load generator for xenstored daemons (unix socket protocol).
#[derive(Debug, Parser)]
#[command(name = "xs-load")]
struct Args {
    /// Socket of a daemon to drive (repeatable). Defaults to $XENSTORED_PATH
    /// when no other target is given.
    #[arg(long)]
    socket: Vec<PathBuf>,
    /// Also start this xenstored binary (`BIN -N`, socket folder from
    /// `XENSTORED_RUNDIR`, as C xenstored is started) and drive it.
    #[arg(long, value_name = "BIN")]
    ours: Option<PathBuf>,
    /// Extra arguments for `--ours` (e.g. `-I` for an in-memory store).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    ours_arg: Vec<String>,
    /// Also start Debian's C xenstored under the shim and drive it.
    #[arg(long)]
    c_xenstored: bool,
    /// Also start the echo server (the socket round-trip limit) and drive it.
    #[arg(long)]
    echo: bool,
    /// Workloads: read, write, directory, tx-rmw, watch-fanout (comma list).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "read,write,directory,tx-rmw,watch-fanout"
    )]
    workload: Vec<String>,
    /// Active connection counts (comma list).
    #[arg(long, value_delimiter = ',', default_value = "1,64,1000")]
    conns: Vec<usize>,
    /// Requests in flight per connection (comma list; 1 = no pipelining).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    depth: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// Idle connections held open beside the active ones.
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// Value size in bytes for read and write.
    #[arg(long, default_value_t = 16)]
    value_size: usize,
    /// Children of the directory node.
    #[arg(long, default_value_t = 1000)]
    children: usize,
    /// Extra nodes in the store for tx-rmw.
    #[arg(long, default_value_t = 10_000)]
    tree_nodes: usize,
    /// Watchers for watch-fanout (the connection list is ignored there).
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Generator threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("xs-load: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut targets: Vec<(String, PathBuf)> = args
        .socket
        .iter()
        .map(|s| (s.display().to_string(), s.clone()))
        .collect();
    let ours = match &args.ours {
        Some(bin) => {
            let dir = cpeer::temp_dir("xs-load-ours")?;
            let socket = dir.path().join("socket");
            let mut cmd = std::process::Command::new(bin);
            cmd.arg("-N")
                .args(&args.ours_arg)
                .env("XENSTORED_RUNDIR", dir.path())
                .env_remove("XENSTORED_PATH");
            let d = DaemonProcess::spawn(cmd, socket, dir)?;
            targets.push(("ours".into(), d.socket_path().to_owned()));
            Some(d)
        }
        None => None,
    };
    let c = if args.c_xenstored {
        let c = CXenstored::start(&[])?;
        targets.push(("c-xenstored".into(), c.socket_path().to_owned()));
        Some(c)
    } else {
        None
    };
    let echo_dir = cpeer::temp_dir("xs-echo")?;
    let echo = if args.echo {
        let e = EchoServer::start(&echo_dir.path().join("socket"))?;
        targets.push(("echo".into(), e.socket_path().to_owned()));
        Some(e)
    } else {
        None
    };
    if targets.is_empty() {
        let p = std::env::var_os("XENSTORED_PATH")
            .ok_or("no target: give --socket, --c-xenstored, --echo or set XENSTORED_PATH")?;
        targets.push(("XENSTORED_PATH".into(), PathBuf::from(p)));
    }
    let workloads = args
        .workload
        .iter()
        .map(|w| Workload::from_name(w).ok_or_else(|| format!("unknown workload {w:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    let dur = Duration::from_secs_f64(args.duration);

    println!(
        "{:<24} {:<13} {:>6} {:>6} {:>12} {:>10} {:>10} {:>7}",
        "target", "workload", "conns", "depth", "ops/s", "p50 us", "p99 us", "errors"
    );
    for w in workloads {
        // The fan-out is one writer; connections and depth do not apply.
        let shapes: Vec<(usize, usize)> = if w == Workload::WatchFanout {
            vec![(1, 1)]
        } else {
            args.conns
                .iter()
                .flat_map(|&c| args.depth.iter().map(move |&d| (c, d)))
                .collect()
        };
        for &(conns, depth) in &shapes {
            for (name, sock) in &targets {
                if w == Workload::WatchFanout && name == "echo" {
                    // The echo server sends no watch events.
                    continue;
                }
                let mut cfg = Config::new(sock, w);
                cfg.conns = conns;
                cfg.depth = depth;
                cfg.idle = args.idle;
                cfg.value_size = args.value_size;
                cfg.children = args.children;
                cfg.tree_nodes = args.tree_nodes;
                cfg.watchers = args.watchers;
                cfg.threads = args.threads;
                let result = Session::open(cfg).and_then(|mut s| {
                    // A short warm-up, then the measurement.
                    s.run(Stop::After(dur / 5))?;
                    s.run(Stop::After(dur))
                });
                match result {
                    Ok(st) => println!(
                        "{:<24} {:<13} {:>6} {:>6} {:>12.0} {:>10.1} {:>10.1} {:>7}",
                        name,
                        w.name(),
                        conns,
                        depth,
                        st.ops_per_sec(),
                        st.percentile(50.0).as_secs_f64() * 1e6,
                        st.percentile(99.0).as_secs_f64() * 1e6,
                        st.errors
                    ),
                    Err(e) => println!(
                        "{name:<24} {:<13} {conns:>6} {depth:>6} FAILED: {e}",
                        w.name()
                    ),
                }
            }
        }
    }
    drop(echo);
    drop(c);
    drop(ours);
    Ok(())
}
