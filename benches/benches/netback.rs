//! netback on the simulated host (`xen-sim` via `gnttab` and `evtchn`), through the Rust
//! test netfront and a socket-pair peer as the network, against same-run floors.
//!
//! Cases: frames of 64 B and 1500 B, and 64 KiB TCPv4 GSO packets, in batches, both ways.
//! - `netback/<case>/tx`: the guest sends a batch (netfront → tx ring → grant copy → the
//!   peer socket) and the peer receives every frame;
//! - `netback/<case>/rx`: the peer sends a batch and the guest receives it (socket → grant
//!   copy into posted buffers → rx ring → netfront);
//! - `netback/<case>/socketpair`: the packet side alone, no Xen: the same frames through a
//!   socket pair with the same `virtio_net_hdr` framing (the "two taps without Xen" floor);
//! - `netback/<case>/memcpy`: a copy of the same bytes (the lowest floor).
//!
//! All report bytes per second (packets per second = bytes / frame size). The ratios
//! tx/socketpair, rx/socketpair and tx/memcpy are the figures of merit.
//! `NETBACK_INTERLEAVED=<rounds>` runs each case in short rounds, the variants in rotating
//! order inside each round, and prints median per-packet times, packets/s, bytes/s and the
//! median of the per-round ratios: `NETBACK_INTERLEAVED=15 cargo bench -p benches --bench
//! netback`.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use netback::netfront::{gso_packet, tcp_frame, FrontConfig, Netfront, TxPacket};
use netback::port::{PacketQueue, SocketPorts, VifId};
use netback::wire::{Offload, VnetHdr};
use netback::{Config, NetBack};
use xen_types::DomId;
use xenbus::testing::TestXenstore;
use xenbus::{create_device, Backend, XsStore};

const T: Duration = Duration::from_secs(30);

struct World {
    front: Netfront<XsStore>,
    peer: PacketQueue,
    _backend: Backend,
    _xs: TestXenstore,
}

fn world() -> World {
    let xs = TestXenstore::start().expect("xenstored");
    let host = xen_sim::Host::default();
    let ports = Arc::new(SocketPorts::new());
    let drv = Arc::new(
        NetBack::sim(&host, DomId::DOM0, ports.clone(), Config::default()).expect("backend"),
    );
    let backend = Backend::start(xs.dom0().clone(), DomId::DOM0, drv).expect("backend");
    let fe = DomId(5);
    create_device(
        &**xs.dom0(),
        DomId::DOM0,
        fe,
        "vif",
        0,
        &[("hotplug-status", "connected"), ("handle", "0")],
        &[("handle", "0")],
    )
    .expect("device");
    let front = Netfront::connect(
        &host,
        xs.guest(fe).expect("guest store"),
        fe,
        0,
        FrontConfig::default(),
    )
    .expect("frontend");
    let (peers, _) = ports
        .take(
            VifId {
                domid: fe,
                devid: 0,
            },
            T,
        )
        .expect("peer");
    World {
        front,
        peer: peers.into_iter().next().expect("queue"),
        _backend: backend,
        _xs: xs,
    }
}

#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    size: usize,
    gso: bool,
    batch: usize,
}

const CASES: [Case; 3] = [
    Case {
        name: "64B",
        size: 64,
        gso: false,
        batch: 128,
    },
    Case {
        name: "1500B",
        size: 1500,
        gso: false,
        batch: 128,
    },
    Case {
        name: "64KiB-gso",
        size: 65_535,
        gso: true,
        batch: 16,
    },
];

fn packets(c: Case) -> Vec<TxPacket> {
    let payload: Vec<u8> = (0..c.size - 54).map(|i| i as u8).collect();
    (0..c.batch)
        .map(|_| {
            if c.gso {
                gso_packet(false, &payload, 1448)
            } else {
                TxPacket {
                    data: tcp_frame(false, 1, &payload, false),
                    off: Offload::default(),
                }
            }
        })
        .collect()
}

fn hdr(p: &TxPacket) -> VnetHdr {
    p.off.to_vnet(&p.data).expect("header")
}

/// One batch each way and the floors; each returns the time of one batch.
struct Bench {
    w: World,
    pkts: Vec<TxPacket>,
    hdrs: Vec<VnetHdr>,
    buf: Vec<u8>,
    pair: (PacketQueue, PacketQueue),
    copy_dst: Vec<u8>,
}

impl Bench {
    fn new(w: World, c: Case) -> Bench {
        let pkts = packets(c);
        let hdrs = pkts.iter().map(hdr).collect();
        Bench {
            w,
            pkts,
            hdrs,
            buf: vec![0; 70_000],
            pair: PacketQueue::pair().expect("socketpair"),
            copy_dst: vec![0; c.size],
        }
    }

    fn tx(&mut self) {
        let st = self.w.front.send(0, &self.pkts).expect("send");
        assert!(st.iter().all(|&s| s == 0));
        for _ in 0..self.pkts.len() {
            self.w
                .peer
                .recv_timeout(&mut self.buf, T)
                .expect("recv")
                .expect("frame");
        }
    }

    fn rx(&mut self) {
        let n = self.pkts.len();
        let mut got = 0;
        // Interleave sends and receives so the peer's socket never holds the whole batch.
        for (p, h) in self.pkts.iter().zip(&self.hdrs) {
            self.w.peer.send(h, &p.data).expect("peer send");
            while got < n {
                match self.w.front.recv(0, Duration::ZERO).expect("recv") {
                    Some(_) => got += 1,
                    None => break,
                }
            }
        }
        while got < n {
            self.w.front.recv(0, T).expect("recv").expect("packet");
            got += 1;
        }
    }

    fn socketpair(&mut self) {
        for (p, h) in self.pkts.iter().zip(&self.hdrs) {
            self.pair.0.send(h, &p.data).expect("send");
            self.pair
                .1
                .recv_timeout(&mut self.buf, T)
                .expect("recv")
                .expect("frame");
        }
    }

    fn memcpy(&mut self) {
        for p in &self.pkts {
            self.copy_dst[..p.data.len()].copy_from_slice(&p.data);
            std::hint::black_box(&mut self.copy_dst);
        }
    }
}

const VARIANTS: [&str; 4] = ["tx", "rx", "socketpair", "memcpy"];

fn run_variant(b: &mut Bench, v: usize) {
    match v {
        0 => b.tx(),
        1 => b.rx(),
        2 => b.socketpair(),
        _ => b.memcpy(),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Rounds of the four variants in rotating order; medians of per-batch times and of the
/// per-round ratios.
fn interleaved(rounds: usize) {
    let round = Duration::from_millis(
        std::env::var("ROUND_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(40),
    );
    for c in CASES {
        let mut b = Bench::new(world(), c);
        for v in 0..VARIANTS.len() {
            run_variant(&mut b, v); // warm up
        }
        let mut per: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
        let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); 3];
        for r in 0..rounds {
            let mut t = [0f64; 4];
            for k in 0..VARIANTS.len() {
                let v = (r + k) % VARIANTS.len();
                let (mut n, start) = (0u32, Instant::now());
                while start.elapsed() < round || n == 0 {
                    run_variant(&mut b, v);
                    n += 1;
                }
                t[v] = start.elapsed().as_secs_f64() / f64::from(n);
                per[v].push(t[v]);
            }
            ratios[0].push(t[2] / t[0]); // tx vs socketpair (throughput ratio)
            ratios[1].push(t[2] / t[1]); // rx vs socketpair
            ratios[2].push(t[3] / t[0]); // tx vs memcpy
        }
        let bytes = (c.size * c.batch) as f64;
        for (v, name) in VARIANTS.iter().enumerate() {
            let m = median(&mut per[v]);
            println!(
                "netback/{}/{name}: {:.2} us/packet, {:.0} packets/s, {:.1} MB/s",
                c.name,
                m * 1e6 / c.batch as f64,
                c.batch as f64 / m,
                bytes / m / 1e6
            );
        }
        println!(
            "netback/{}: tx/socketpair {:.0}%, rx/socketpair {:.0}%, tx/memcpy {:.1}% (medians of {rounds} rounds)",
            c.name,
            100.0 * median(&mut ratios[0]),
            100.0 * median(&mut ratios[1]),
            100.0 * median(&mut ratios[2]),
        );
    }
}

fn bench(cr: &mut Criterion) {
    if let Some(r) = std::env::var("NETBACK_INTERLEAVED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        interleaved(r);
        return;
    }
    for c in CASES {
        let mut g = cr.benchmark_group(format!("netback/{}", c.name));
        g.throughput(Throughput::Bytes((c.size * c.batch) as u64));
        let mut b = Bench::new(world(), c);
        for (v, name) in VARIANTS.iter().enumerate() {
            g.bench_function(BenchmarkId::from_parameter(name), |x| {
                x.iter(|| run_variant(&mut b, v))
            });
        }
        g.finish();
    }
}

criterion::criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion::criterion_main!(benches);
