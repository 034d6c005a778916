//! netback against the Rust test frontend on the simulated host (`xen-sim`, through the
//! `gnttab` and `evtchn` traits), our xenstored in process, and socket-pair peers as the
//! network.

use std::sync::Arc;
use std::time::{Duration, Instant};

use evtchn::SimEvtchn;
use gnttab::SimGnttab;
use netback::ctrl::{CtrlStatus, CtrlType};
use netback::hash::{HashAlgorithm, HashConfig, HashTypes};
use netback::netfront::{gso_packet, l4_checksum_ok, tcp_frame, FrontConfig, Netfront, TxPacket};
use netback::port::{PacketQueue, RxOffloads, SocketPorts, VifId};
use netback::wire::{fill_checksum, rsp, rxf, txf, vnet, Gso, GsoKind, Offload, VnetHdr};
use netback::{Config, NetBack};
use xen_sys::netif_tx_request;
use xen_types::DomId;
use xenbus::testing::TestXenstore;
use xenbus::{create_device, Backend, Store, XenbusState, XsStore};

const T: Duration = Duration::from_secs(20);

type Drv = NetBack<SimGnttab, SimEvtchn, SocketPorts>;
type Front = Netfront<XsStore>;

struct Env {
    xs: TestXenstore,
    host: xen_sim::Host,
    drv: Arc<Drv>,
    be: Option<Backend>,
}

fn env(cfg: Config) -> Env {
    let xs = TestXenstore::start().unwrap();
    let host = xen_sim::Host::default();
    let drv =
        Arc::new(NetBack::sim(&host, DomId::DOM0, Arc::new(SocketPorts::new()), cfg).unwrap());
    let be = Backend::start(xs.dom0().clone(), DomId::DOM0, drv.clone()).unwrap();
    Env {
        xs,
        host,
        drv,
        be: Some(be),
    }
}

fn vif(d: u16, devid: u32) -> VifId {
    VifId {
        domid: DomId(d),
        devid,
    }
}

impl Env {
    /// The toolstack's part (libxl's keys); `hotplug`: the script has run.
    fn plug(&self, fe: DomId, devid: u32, hotplug: bool) {
        let mac = format!("00:16:3e:00:{:02x}:{:02x}", fe.0, devid);
        let h = devid.to_string();
        let mut bk = vec![
            ("mac", mac.as_str()),
            ("handle", h.as_str()),
            ("type", "vif"),
            ("script", "/etc/xen/scripts/vif-bridge"),
            ("bridge", "xenbr0"),
        ];
        if hotplug {
            bk.push(("hotplug-status", "connected"));
        }
        create_device(
            &**self.xs.dom0(),
            DomId::DOM0,
            fe,
            "vif",
            devid,
            &bk,
            &[("mac", &mac), ("handle", &h)],
        )
        .unwrap();
    }

    fn front(
        &self,
        fe: DomId,
        devid: u32,
        cfg: FrontConfig,
    ) -> (Front, Vec<PacketQueue>, RxOffloads) {
        self.plug(fe, devid, true);
        let f = Netfront::connect(&self.host, self.xs.guest(fe).unwrap(), fe, devid, cfg).unwrap();
        let (peers, rx) = self
            .drv
            .ports()
            .take(vif(fe.0, devid), T)
            .expect("peer queues");
        (f, peers, rx)
    }

    fn backend_key(&self, fe: DomId, devid: u32, key: &str) -> Option<String> {
        self.xs
            .dom0()
            .read(&format!(
                "/local/domain/0/backend/vif/{}/{devid}/{key}",
                fe.0
            ))
            .unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(b) = self.be.take() {
            b.stop();
        }
    }
}

fn payload(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn recv_peer(p: &PacketQueue) -> (VnetHdr, Vec<u8>) {
    let mut buf = vec![0u8; 70_000];
    let (h, n) = p
        .recv_timeout(&mut buf, T)
        .unwrap()
        .expect("a frame on the peer");
    buf.truncate(n);
    (h, buf)
}

/// Frame sizes from the smallest Ethernet frame to the largest netif packet.
const SIZES: [usize; 7] = [60, 64, 1500, 4096, 4097, 9000, 65_535];

#[test]
fn tx_checksummed_payloads_of_every_size_reach_the_peer() {
    let e = env(Config::default());
    let (mut f, peers, _) = e.front(DomId(1), 0, FrontConfig::default());
    for (i, &size) in SIZES.iter().enumerate() {
        let v6 = i % 2 == 1 && size > 74;
        let hdr = if v6 { 74 } else { 54 };
        let data = tcp_frame(v6, i as u32, &payload(size - hdr, i as u8), true);
        assert_eq!(data.len(), size);
        let st = f
            .send(
                0,
                &[TxPacket {
                    data: data.clone(),
                    off: Offload {
                        csum_blank: true,
                        data_validated: true,
                        gso: None,
                    },
                }],
            )
            .unwrap();
        assert_eq!(st, vec![rsp::OKAY], "size {size}");
        let (h, mut got) = recv_peer(&peers[0]);
        assert_eq!(h.flags, vnet::F_NEEDS_CSUM, "size {size}");
        assert_eq!(usize::from(h.csum_start), hdr - 20);
        assert_eq!(h.csum_offset, 16);
        assert_eq!(got, data, "size {size}: bytes as sent");
        fill_checksum(&mut got, h.csum_start.into(), h.csum_offset.into()).unwrap();
        assert!(l4_checksum_ok(&got), "size {size}: checksum completes");
    }
    // A frame with a complete checksum, validated: no offload asked of the peer.
    let data = tcp_frame(false, 9, &payload(500, 3), false);
    let off = Offload {
        data_validated: true,
        ..Offload::default()
    };
    assert_eq!(
        f.send(
            0,
            &[TxPacket {
                data: data.clone(),
                off
            }]
        )
        .unwrap(),
        [rsp::OKAY]
    );
    let (h, got) = recv_peer(&peers[0]);
    assert_eq!(h.flags, vnet::F_DATA_VALID);
    assert!(l4_checksum_ok(&got));
    assert_eq!(e.drv.stats().tx_packets(), SIZES.len() as u64 + 1);
    f.close().unwrap();
}

#[test]
fn rx_checksummed_payloads_of_every_size_reach_the_guest() {
    let e = env(Config::default());
    let (mut f, peers, rx) = e.front(DomId(1), 0, FrontConfig::default());
    assert_eq!(
        rx,
        RxOffloads {
            csum: true,
            tso4: true,
            tso6: true
        }
    );
    for (i, &size) in SIZES.iter().enumerate() {
        let v6 = i % 2 == 0 && size > 74;
        let hdr = if v6 { 74 } else { 54 };
        let partial = i % 3 == 0;
        let data = tcp_frame(v6, i as u32, &payload(size - hdr, i as u8), partial);
        let h = if partial {
            VnetHdr {
                flags: vnet::F_NEEDS_CSUM,
                csum_start: (hdr - 20) as u16,
                csum_offset: 16,
                ..Default::default()
            }
        } else {
            VnetHdr {
                flags: vnet::F_DATA_VALID,
                ..Default::default()
            }
        };
        peers[0].send(&h, &data).unwrap();
        let p = f.recv(0, T).unwrap().expect("packet");
        assert!(!p.error);
        assert_eq!(p.data, data, "size {size}");
        assert_eq!(p.flags & rxf::DATA_VALIDATED, rxf::DATA_VALIDATED);
        assert_eq!(p.flags & rxf::CSUM_BLANK != 0, partial, "size {size}");
        let mut d = p.data.clone();
        if partial {
            fill_checksum(&mut d, hdr - 20, 16).unwrap();
        }
        assert!(l4_checksum_ok(&d), "size {size}");
    }
    assert_eq!(e.drv.stats().rx_packets(), SIZES.len() as u64);
    f.close().unwrap();
}

#[test]
fn gso_of_64k_both_ways_v4_and_v6() {
    let e = env(Config::default());
    let (mut f, peers, _) = e.front(DomId(1), 0, FrontConfig::default());
    for v6 in [false, true] {
        let hdr = if v6 { 74 } else { 54 };
        let p = gso_packet(v6, &payload(65_535 - hdr, 7), 1448);
        assert_eq!(f.send(0, std::slice::from_ref(&p)).unwrap(), [rsp::OKAY]);
        let (h, got) = recv_peer(&peers[0]);
        assert_eq!(got, p.data);
        let kind = if v6 { vnet::GSO_TCPV6 } else { vnet::GSO_TCPV4 };
        assert_eq!(
            (h.gso_type, h.gso_size, usize::from(h.hdr_len)),
            (kind, 1448, hdr)
        );
        assert_eq!(h.flags, vnet::F_NEEDS_CSUM);

        // The other way: a TSO frame from the network to the guest, with its GSO extra info.
        let h = VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            gso_type: kind,
            gso_size: 1400,
            hdr_len: hdr as u16,
            csum_start: (hdr - 20) as u16,
            csum_offset: 16,
        };
        peers[0].send(&h, &p.data).unwrap();
        let r = f.recv(0, T).unwrap().expect("packet");
        assert_eq!(r.data, p.data);
        let k = if v6 { GsoKind::TcpV6 } else { GsoKind::TcpV4 };
        assert_eq!(
            r.gso,
            Some(Gso {
                kind: k,
                size: 1400
            })
        );
        assert_ne!(r.flags & rxf::EXTRA_INFO, 0);
    }
    f.close().unwrap();
}

#[test]
fn frontend_without_offloads_gets_complete_checksums_and_no_gso() {
    let e = env(Config::default());
    let cfg = FrontConfig {
        csum: false,
        gso: false,
        ..FrontConfig::default()
    };
    let (mut f, peers, rx) = e.front(DomId(1), 0, cfg);
    assert_eq!(rx, RxOffloads::default());
    let data = tcp_frame(false, 1, &payload(3000, 1), true);
    let h = VnetHdr {
        flags: vnet::F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 16,
        ..Default::default()
    };
    // A TSO frame it cannot take is dropped; the next frame gets through, its checksum
    // completed by the backend.
    let tso = VnetHdr {
        gso_type: vnet::GSO_TCPV4,
        gso_size: 1000,
        hdr_len: 54,
        ..h
    };
    peers[0].send(&tso, &data).unwrap();
    // So is a runt (no Ethernet header).
    peers[0].send(&VnetHdr::default(), &[]).unwrap();
    peers[0].send(&h, &data).unwrap();
    let p = f.recv(0, T).unwrap().expect("packet");
    assert_eq!(p.flags & rxf::CSUM_BLANK, 0);
    assert!(l4_checksum_ok(&p.data));
    assert_eq!(p.data[54..], data[54..]);
    assert_eq!(e.drv.stats().rx_dropped(), 2);
    f.close().unwrap();
}

#[test]
fn multi_queue_with_split_and_shared_event_channels() {
    for split in [true, false] {
        let e = env(Config::default());
        let cfg = FrontConfig {
            queues: 4,
            split,
            ..FrontConfig::default()
        };
        let (mut f, peers, _) = e.front(DomId(2), 0, cfg);
        assert_eq!(f.queues(), 4);
        assert_eq!(peers.len(), 4);
        for (q, peer) in peers.iter().enumerate() {
            let pkts: Vec<TxPacket> = (0..40)
                .map(|i| TxPacket {
                    data: tcp_frame(false, i, &payload(100 + 37 * i as usize, q as u8), false),
                    off: Offload::default(),
                })
                .collect();
            let st = f.send(q, &pkts).unwrap();
            assert!(st.iter().all(|&s| s == rsp::OKAY));
            for p in &pkts {
                assert_eq!(recv_peer(peer).1, p.data, "queue {q}");
            }
            for p in &pkts {
                peer.send(&VnetHdr::default(), &p.data).unwrap();
            }
            for p in &pkts {
                assert_eq!(f.recv(q, T).unwrap().expect("rx").data, p.data, "queue {q}");
            }
        }
        assert_eq!(e.drv.stats().queues_running(), 4);
        f.close().unwrap();
    }
}

#[test]
fn rx_waits_for_posted_buffers_beyond_a_ring() {
    // More frames than the rx ring has buffers: the backend waits for the guest to post
    // more, and nothing is lost or reordered.
    let e = env(Config::default());
    let (mut f, peers, _) = e.front(DomId(1), 0, FrontConfig::default());
    let frames: Vec<Vec<u8>> = (0..150)
        .map(|i| tcp_frame(true, i, &payload(6000, i as u8), false))
        .collect();
    let p = &peers[0];
    std::thread::scope(|s| {
        s.spawn(|| {
            for d in &frames {
                p.send(&VnetHdr::default(), d).unwrap();
            }
        });
        for d in &frames {
            assert_eq!(&f.recv(0, T).unwrap().expect("rx").data, d);
        }
    });
    f.close().unwrap();
}

#[test]
fn connected_only_after_the_hotplug_script() {
    let e = env(Config::default());
    let fe = DomId(3);
    e.plug(fe, 0, false);
    assert_eq!(e.drv.ports().created(), Vec::<VifId>::new());
    let store = e.xs.guest(fe).unwrap();
    let host = e.host.clone();
    let t =
        std::thread::spawn(move || Netfront::connect(&host, store, fe, 0, FrontConfig::default()));
    let deadline = Instant::now() + T;
    while e.backend_key(fe, 0, "feature-sg").is_none() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    // The interface exists for the script (vif3.0) before it runs.
    assert_eq!(e.drv.ports().created(), vec![vif(3, 0)]);
    for k in [
        "feature-gso-tcpv4",
        "feature-gso-tcpv6",
        "feature-ipv6-csum-offload",
        "feature-rx-copy",
        "feature-split-event-channels",
    ] {
        assert_eq!(e.backend_key(fe, 0, k).as_deref(), Some("1"), "{k}");
    }
    assert_eq!(
        e.backend_key(fe, 0, "multi-queue-max-queues").as_deref(),
        Some("4")
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        e.backend_key(fe, 0, "state").as_deref(),
        Some(XenbusState::InitWait.to_string().as_str()),
        "no Connected before hotplug-status"
    );
    e.xs.dom0()
        .write(
            "/local/domain/0/backend/vif/3/0/hotplug-status",
            "connected",
        )
        .unwrap();
    let f = t.join().unwrap().unwrap();
    f.close().unwrap();
}

#[test]
fn frontend_without_rx_copy_is_refused() {
    let e = env(Config::default());
    let fe = DomId(4);
    e.plug(fe, 0, true);
    let store = e.xs.guest(fe).unwrap();
    let fpath = "/local/domain/4/device/vif/0";
    let deadline = Instant::now() + T;
    while e.backend_key(fe, 0, "state").as_deref() != Some("2") {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    store.write(&format!("{fpath}/tx-ring-ref"), "8").unwrap();
    store.write(&format!("{fpath}/state"), "4").unwrap();
    while e.backend_key(fe, 0, "error").is_none() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let err = e.backend_key(fe, 0, "error").unwrap();
    assert!(err.contains("rx-copy"), "{err}");
}

// ---- Hostile frontends -------------------------------------------------------------

fn req(gref: u32, offset: u16, flags: u16, id: u16, size: u16) -> netif_tx_request {
    netif_tx_request {
        gref,
        offset,
        flags,
        id,
        size,
    }
}

/// Two guests: a hostile one (dom 5) and a good one (dom 6), each with a vif.
fn two(e: &Env) -> ((Front, Vec<PacketQueue>), (Front, Vec<PacketQueue>)) {
    let (bad, bp, _) = e.front(DomId(5), 0, FrontConfig::default());
    let (good, gp, _) = e.front(DomId(6), 0, FrontConfig::default());
    ((bad, bp), (good, gp))
}

fn good_still_works(good: &mut Front, peers: &[PacketQueue]) {
    let data = tcp_frame(false, 77, &payload(1400, 9), false);
    let st = good
        .send(
            0,
            &[TxPacket {
                data: data.clone(),
                off: Offload::default(),
            }],
        )
        .unwrap();
    assert_eq!(st, [rsp::OKAY]);
    assert_eq!(recv_peer(&peers[0]).1, data);
    peers[0].send(&VnetHdr::default(), &data).unwrap();
    assert_eq!(good.recv(0, T).unwrap().expect("rx").data, data);
}

/// Waits until `n` queues stopped; the hostile guest's (dom 5) backend directory says why
/// in `error` (with `why` in it), the good guest's has no `error`.
fn wait_broken(e: &Env, n: usize, why: &str) {
    let deadline = Instant::now() + T;
    while e.drv.stats().queues_broken() < n {
        assert!(Instant::now() < deadline, "queue not stopped");
        std::thread::sleep(Duration::from_millis(5));
    }
    let err = e.backend_key(DomId(5), 0, "error").expect("error node");
    assert!(err.starts_with("queue 0: ") && err.contains(why), "{err}");
    assert_eq!(e.backend_key(DomId(6), 0, "error"), None);
}

#[test]
fn bad_grant_and_bad_sizes_get_error_responses() {
    let e = env(Config::default());
    let ((mut bad, bp), (mut good, gp)) = two(&e);
    let g = bad
        .tx_page(0, 0, &tcp_frame(false, 1, &payload(100, 1), false))
        .unwrap();
    let g1 = bad.tx_page(0, 1, &[0u8; 64]).unwrap();
    bad.send_raw(
        0,
        &[
            // A grant reference the guest never made.
            req(9999, 0, 0, 1, 154),
            // A runt.
            req(g.0, 0, 0, 2, 10),
            // Slot sizes that do not add up (second slot larger than what is left).
            req(g.0, 0, txf::MORE_DATA, 3, 100),
            req(g1.0, 0, 0, 4, 200),
            // A good one after them all.
            req(g.0, 0, 0, 5, 154),
        ],
    )
    .unwrap();
    let r = bad.raw_responses(0, 5, T).unwrap();
    let st: Vec<(u16, i16)> = r.iter().map(|r| (r.id, r.status)).collect();
    assert_eq!(
        st,
        [
            (1, rsp::ERROR),
            (2, rsp::ERROR),
            (3, rsp::ERROR),
            (4, rsp::ERROR),
            (5, rsp::OKAY)
        ]
    );
    assert_eq!(recv_peer(&bp[0]).1.len(), 154, "only the good packet");
    assert_eq!(e.drv.stats().tx_errors(), 3);
    assert_eq!(e.drv.stats().queues_broken(), 0);
    good_still_works(&mut good, &gp);
}

#[test]
fn slot_counts_past_the_limit_drop_then_disconnect() {
    let e = env(Config::default());
    let ((mut bad, _bp), (mut good, gp)) = two(&e);
    let g = bad.tx_page(0, 0, &[0u8; 64]).unwrap();
    // 19 slots (more than XEN_NETIF_NR_SLOTS_MIN): dropped with errors.
    let mut reqs = vec![req(g.0, 0, txf::MORE_DATA, 0, 19 * 64)];
    for i in 1..19 {
        let more = if i < 18 { txf::MORE_DATA } else { 0 };
        reqs.push(req(g.0, 0, more, i, 64));
    }
    bad.send_raw(0, &reqs).unwrap();
    let r = bad.raw_responses(0, 19, T).unwrap();
    assert_eq!(r.len(), 19);
    assert!(r.iter().all(|r| r.status == rsp::ERROR));
    assert_eq!(e.drv.stats().queues_broken(), 0);
    // 21 slots (more than Linux's fatal_skb_slots): a malicious frontend; its queue stops,
    // the other guest goes on.
    let mut reqs = vec![req(g.0, 0, txf::MORE_DATA, 0, 21 * 64)];
    for i in 1..21 {
        let more = if i < 20 { txf::MORE_DATA } else { 0 };
        reqs.push(req(g.0, 0, more, i, 64));
    }
    bad.send_raw(0, &reqs).unwrap();
    wait_broken(&e, 1, "slots (malicious frontend)");
    good_still_works(&mut good, &gp);
}

#[test]
fn offset_past_the_page_disconnects_that_vif_only() {
    let e = env(Config::default());
    let ((mut bad, _bad_peers), (mut good, gp)) = two(&e);
    let g = bad.tx_page(0, 0, &[0u8; 64]).unwrap();
    bad.send_raw(0, &[req(g.0, 4000, 0, 1, 200)]).unwrap();
    wait_broken(&e, 1, "crosses its page");
    good_still_works(&mut good, &gp);
}

#[test]
fn producer_jumping_ahead_disconnects_that_vif_only() {
    let e = env(Config::default());
    let ((mut bad, _bad_peers), (mut good, gp)) = two(&e);
    bad.set_tx_req_prod(0, 1000).unwrap();
    wait_broken(&e, 1, "producer index");
    good_still_works(&mut good, &gp);
}

#[test]
fn bad_extra_info_disconnects_that_vif_only() {
    let e = env(Config::default());
    let ((mut bad, _bad_peers), (mut good, gp)) = two(&e);
    let g = bad.tx_page(0, 0, &[0u8; 64]).unwrap();
    // An extra-info slot of GSO size 0.
    let extra = netback::wire::Extra::Gso(Gso {
        kind: GsoKind::TcpV4,
        size: 1,
    })
    .to_tx(false);
    let extra = netif_tx_request {
        gref: extra.gref & 0xffff,
        ..extra
    };
    bad.send_raw(0, &[req(g.0, 0, txf::EXTRA_INFO, 1, 64), extra])
        .unwrap();
    wait_broken(&e, 1, "extra info");
    good_still_works(&mut good, &gp);
}

#[test]
fn frontend_vanishing_mid_packet() {
    let e = env(Config::default());
    let ((mut bad, _bad_peers), (mut good, gp)) = two(&e);
    let g = bad.tx_page(0, 0, &[0u8; 64]).unwrap();
    // The first slot of a two-slot packet, then the guest is gone.
    bad.send_raw(0, &[req(g.0, 0, txf::MORE_DATA, 1, 128)])
        .unwrap();
    bad.vanish();
    e.xs.destroy_domain(DomId(5)).unwrap();
    let deadline = Instant::now() + T;
    while e.be.as_ref().unwrap().devices().contains(&(DomId(5), 0)) {
        assert!(
            Instant::now() < deadline,
            "device of the dead guest still served"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    good_still_works(&mut good, &gp);
    assert_eq!(e.drv.stats().queues_running(), 1);
}

#[test]
fn two_guests_loop_back_through_the_backend() {
    let e = env(Config::default());
    let (mut a, ap, _) = e.front(DomId(7), 0, FrontConfig::default());
    let (mut b, bp, _) = e.front(DomId(8), 0, FrontConfig::default());
    // The "bridge": frames from one vif's packet side go to the other's.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fwd = |from: PacketQueue, to: PacketQueue, stop: Arc<std::sync::atomic::AtomicBool>| {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 70_000];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some((h, n)) = from
                    .recv_timeout(&mut buf, Duration::from_millis(20))
                    .unwrap()
                {
                    to.send(&h, &buf[..n]).unwrap();
                }
            }
        })
    };
    let mut ap = ap.into_iter();
    let mut bp = bp.into_iter();
    let (a0, b0) = (ap.next().unwrap(), bp.next().unwrap());
    let (a0b, b0b) = (
        PacketQueue::new(std::os::fd::AsFd::as_fd(&a0).try_clone_to_owned().unwrap()).unwrap(),
        PacketQueue::new(std::os::fd::AsFd::as_fd(&b0).try_clone_to_owned().unwrap()).unwrap(),
    );
    let t1 = fwd(a0, b0b, stop.clone());
    let t2 = fwd(b0, a0b, stop.clone());
    let sent: Vec<TxPacket> = [60usize, 1500, 20_000]
        .iter()
        .map(|&n| TxPacket {
            data: tcp_frame(false, n as u32, &payload(n, 5), true),
            off: Offload {
                csum_blank: true,
                data_validated: true,
                gso: None,
            },
        })
        .chain([gso_packet(true, &payload(60_000, 6), 1440)])
        .collect();
    assert!(a.send(0, &sent).unwrap().iter().all(|&s| s == rsp::OKAY));
    for p in &sent {
        let r = b.recv(0, T).unwrap().expect("frame from guest a");
        assert_eq!(r.data, p.data);
        assert_eq!(r.gso, p.off.gso);
        assert_ne!(r.flags & rxf::CSUM_BLANK, 0);
    }
    // And back.
    let reply = TxPacket {
        data: tcp_frame(true, 1, &payload(900, 8), false),
        off: Offload::default(),
    };
    assert_eq!(
        b.send(0, std::slice::from_ref(&reply)).unwrap(),
        [rsp::OKAY]
    );
    assert_eq!(a.recv(0, T).unwrap().expect("reply").data, reply.data);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    t1.join().unwrap();
    t2.join().unwrap();
    a.close().unwrap();
    b.close().unwrap();
}

#[test]
fn rate_key_limits_what_the_guest_sends() {
    let e = env(Config::default());
    let fe = DomId(9);
    // 20 000 bytes per 100 ms (libxl's `rate=` as `<bytes>,<usec>`).
    e.xs.dom0()
        .write("/local/domain/0/backend/vif/9/0/rate", "20000,100000")
        .unwrap();
    let (mut f, peers, _) = e.front(fe, 0, FrontConfig::default());
    let pkts: Vec<TxPacket> = (0..10)
        .map(|i| TxPacket {
            data: tcp_frame(false, i, &payload(9946, i as u8), false),
            off: Offload::default(),
        })
        .collect();
    let start = Instant::now();
    assert!(f.send(0, &pkts).unwrap().iter().all(|&s| s == rsp::OKAY));
    // 100 000 bytes at 20 000 per period: the last packets wait for at least 4 periods.
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(350), "took {took:?}");
    for p in &pkts {
        assert_eq!(recv_peer(&peers[0]).1, p.data);
    }
    f.close().unwrap();
}

#[test]
fn bad_rate_key_fails_the_connection() {
    let e = env(Config::default());
    let fe = DomId(10);
    e.xs.dom0()
        .write("/local/domain/0/backend/vif/10/0/rate", "fast")
        .unwrap();
    e.plug(fe, 0, true);
    let err = Netfront::connect(
        &e.host,
        e.xs.guest(fe).unwrap(),
        fe,
        0,
        FrontConfig::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("rate \"fast\""), "{err}");
}

/// The key of Microsoft's RSS verification suite (what Windows PV drivers set too).
const RSS_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

const OK: u32 = CtrlStatus::SUCCESS.0;
const INVALID: u32 = CtrlStatus::INVALID_PARAMETER.0;
const UNSUPPORTED: u32 = CtrlStatus::NOT_SUPPORTED.0;
const OVERFLOW: u32 = CtrlStatus::BUFFER_OVERFLOW.0;

fn ctrl_front(e: &Env, fe: DomId, queues: u32) -> (Front, Vec<PacketQueue>) {
    let cfg = FrontConfig {
        queues,
        ctrl: true,
        ..FrontConfig::default()
    };
    let (f, peers, _) = e.front(fe, 0, cfg);
    assert!(f.has_ctrl(), "the backend offers feature-ctrl-ring");
    assert_eq!(
        e.backend_key(fe, 0, "feature-ctrl-ring").as_deref(),
        Some("1")
    );
    (f, peers)
}

/// Toeplitz with the RSS key, all types, and `table` as the mapping.
fn set_hashing(f: &mut Front, table: &[u32]) {
    let alg = HashAlgorithm::Toeplitz.raw().into();
    assert_eq!(
        f.ctrl(CtrlType::SET_HASH_ALGORITHM.0, [alg, 0, 0]).unwrap(),
        (OK, 0)
    );
    let (st, types) = f.ctrl(CtrlType::GET_HASH_FLAGS.0, [0; 3]).unwrap();
    assert_eq!((st, types), (OK, HashTypes::ALL.0));
    assert_eq!(
        f.ctrl(CtrlType::SET_HASH_FLAGS.0, [types, 0, 0]).unwrap(),
        (OK, 0)
    );
    let g = f.ctrl_page(&RSS_KEY).unwrap();
    assert_eq!(
        f.ctrl(CtrlType::SET_HASH_KEY.0, [g.0, 40, 0]).unwrap(),
        (OK, 0)
    );
    let (st, max) = f.ctrl(CtrlType::GET_HASH_MAPPING_SIZE.0, [0; 3]).unwrap();
    assert_eq!((st, max), (OK, 128));
    let n = table.len() as u32;
    assert_eq!(
        f.ctrl(CtrlType::SET_HASH_MAPPING_SIZE.0, [n, 0, 0])
            .unwrap(),
        (OK, 0)
    );
    let bytes: Vec<u8> = table.iter().flat_map(|q| q.to_ne_bytes()).collect();
    let g = f.ctrl_page(&bytes).unwrap();
    assert_eq!(
        f.ctrl(CtrlType::SET_HASH_MAPPING.0, [g.0, n, 0]).unwrap(),
        (OK, 0)
    );
}

/// A TCP frame from port `sport`.
fn flow_frame(v6: bool, sport: u16, payload_len: usize) -> Vec<u8> {
    let mut f = tcp_frame(
        v6,
        u32::from(sport),
        &payload(payload_len, sport as u8),
        false,
    );
    let l4 = if v6 { 54 } else { 34 };
    f[l4..l4 + 2].copy_from_slice(&sport.to_be_bytes());
    f
}

#[test]
fn control_ring_toeplitz_hashing_steers_rx_to_the_mapped_queue() {
    let e = env(Config::default());
    let (mut f, peers) = ctrl_front(&e, DomId(4), 4);
    assert_eq!(f.queues(), 4);
    let table = [3, 1, 2, 0, 0, 2, 1, 3];
    set_hashing(&mut f, &table);
    let cfg = HashConfig {
        alg: HashAlgorithm::Toeplitz,
        types: HashTypes::ALL,
        key: RSS_KEY,
        mapping: table.to_vec(),
    };
    let mut seen = [0usize; 4];
    for i in 0..48u16 {
        let v6 = i % 3 == 0;
        let frame = flow_frame(v6, 1000 + i * 7, 200 + usize::from(i));
        let (h, q) = cfg.steer(&frame, 4).expect("a TCP frame hashes");
        // Whichever tap queue the kernel picks, the frame reaches the mapped queue.
        peers[usize::from(i) % 4]
            .send(&VnetHdr::default(), &frame)
            .unwrap();
        let p = f.recv(q, T).unwrap().expect("rx on the mapped queue");
        assert_eq!(p.data, frame, "frame {i}");
        assert_eq!(
            p.hash,
            Some((h.kind.bit(), HashAlgorithm::Toeplitz.raw(), h.value))
        );
        seen[q] += 1;
    }
    assert!(seen.iter().all(|&n| n > 0), "every queue used: {seen:?}");
    // A 64 KiB GSO frame carries both extra-info slots (GSO, then hash).
    let gso = flow_frame(false, 4242, 65_000);
    let (h, q) = cfg.steer(&gso, 4).unwrap();
    let hdr = VnetHdr {
        flags: vnet::F_NEEDS_CSUM,
        gso_type: vnet::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    peers[0].send(&hdr, &gso).unwrap();
    let p = f.recv(q, T).unwrap().expect("GSO rx on the mapped queue");
    assert_eq!(p.data[54..], gso[54..]);
    assert_eq!(p.gso.map(|g| g.size), Some(1448));
    assert_eq!(p.hash.map(|h| h.2), Some(h.value));
    // Hashing off again: no hash extra, and frames stay on the queue they came in on.
    assert_eq!(
        f.ctrl(CtrlType::SET_HASH_ALGORITHM.0, [0, 0, 0]).unwrap(),
        (OK, 0)
    );
    let frame = flow_frame(false, 77, 100);
    peers[2].send(&VnetHdr::default(), &frame).unwrap();
    let p = f.recv(2, T).unwrap().expect("rx");
    assert_eq!((p.data, p.hash), (frame, None));
    f.close().unwrap();
}

#[test]
fn hostile_control_requests_get_error_statuses_and_change_nothing() {
    let e = env(Config::default());
    let (mut f, peers) = ctrl_front(&e, DomId(5), 2);
    let c = |f: &mut Front, t: CtrlType, d: [u32; 3]| f.ctrl(t.0, d).unwrap().0;
    // No algorithm yet: no flags.
    assert_eq!(c(&mut f, CtrlType::GET_HASH_FLAGS, [0; 3]), UNSUPPORTED);
    assert_eq!(c(&mut f, CtrlType::SET_HASH_FLAGS, [1, 0, 0]), INVALID);
    assert_eq!(c(&mut f, CtrlType::SET_HASH_ALGORITHM, [7, 0, 0]), INVALID);
    // Unknown and unsupported types.
    for t in [0u16, 11, 99, u16::MAX] {
        assert_eq!(f.ctrl(t, [1, 2, 3]).unwrap().0, UNSUPPORTED, "type {t}");
    }
    assert_eq!(
        c(&mut f, CtrlType::GET_GREF_MAPPING_SIZE, [0; 3]),
        UNSUPPORTED
    );
    set_hashing(&mut f, &[1, 0]);
    assert_eq!(c(&mut f, CtrlType::SET_HASH_FLAGS, [1 << 4, 0, 0]), INVALID);
    let g = f.ctrl_page(&[0xff; 64]).unwrap();
    assert_eq!(c(&mut f, CtrlType::SET_HASH_KEY, [g.0, 41, 0]), OVERFLOW);
    assert_eq!(
        c(&mut f, CtrlType::SET_HASH_KEY, [99_999, 40, 0]),
        INVALID,
        "bad grant"
    );
    assert_eq!(
        c(&mut f, CtrlType::SET_HASH_MAPPING_SIZE, [129, 0, 0]),
        INVALID
    );
    let bad_queue: Vec<u8> = [0u32, 2].iter().flat_map(|q| q.to_ne_bytes()).collect();
    let g = f.ctrl_page(&bad_queue).unwrap();
    assert_eq!(
        c(&mut f, CtrlType::SET_HASH_MAPPING, [g.0, 2, 0]),
        INVALID,
        "queue 2 of 2"
    );
    assert_eq!(
        c(&mut f, CtrlType::SET_HASH_MAPPING, [g.0, 3, 0]),
        INVALID,
        "past the size"
    );
    assert_eq!(
        c(&mut f, CtrlType::SET_HASH_MAPPING, [g.0, 1, 2]),
        INVALID,
        "offset past"
    );
    assert_eq!(
        c(&mut f, CtrlType::SET_HASH_MAPPING, [g.0, 1, u32::MAX]),
        INVALID
    );
    assert_eq!(
        c(&mut f, CtrlType::SET_HASH_MAPPING, [g.0, 1025, 0]),
        OVERFLOW
    );
    assert_eq!(
        c(&mut f, CtrlType::SET_HASH_MAPPING, [99_999, 1, 0]),
        INVALID,
        "bad grant"
    );
    // The settings made before are intact: frames go where the table [1, 0] says.
    let cfg = HashConfig {
        alg: HashAlgorithm::Toeplitz,
        types: HashTypes::ALL,
        key: RSS_KEY,
        mapping: vec![1, 0],
    };
    for sport in [1u16, 2, 3, 4] {
        let frame = flow_frame(false, sport, 300);
        let (h, q) = cfg.steer(&frame, 2).unwrap();
        peers[0].send(&VnetHdr::default(), &frame).unwrap();
        let p = f.recv(q, T).unwrap().expect("rx");
        assert_eq!((p.data, p.hash.map(|h| h.2)), (frame, Some(h.value)));
    }
    // Hashing off (frames stay on the queue they come in on); then a control ring whose
    // producer jumps ahead stops, and the data queues go on.
    assert_eq!(c(&mut f, CtrlType::SET_HASH_ALGORITHM, [0, 0, 0]), OK);
    f.set_ctrl_req_prod(1_000).unwrap();
    let deadline = Instant::now() + T;
    while !e
        .backend_key(DomId(5), 0, "error")
        .is_some_and(|m| m.contains("control ring"))
    {
        assert!(
            Instant::now() < deadline,
            "no error for the broken control ring"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    good_still_works(&mut f, &peers[..1]);
    f.close().unwrap();
}

#[test]
fn idle_queues_block_without_wake_ups() {
    // A connected vif with no traffic: its queue threads sleep until an event, not on a
    // timer (a daemon serving idle guests costs no CPU).
    let e = env(Config::default());
    let (mut f, peers, _) = e.front(
        DomId(6),
        0,
        FrontConfig {
            queues: 2,
            ..FrontConfig::default()
        },
    );
    good_still_works(&mut f, &peers[..1]);
    let s = e.drv.stats();
    // Settle: the last pass after the traffic has gone to sleep.
    let mut last = (s.passes(), s.sleeps());
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = (s.passes(), s.sleeps());
        if now == last {
            break;
        }
        last = now;
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!((s.passes(), s.sleeps()), last, "idle queue threads woke up");
    // And they still wake for work.
    good_still_works(&mut f, &peers[..1]);
    assert!(s.passes() > last.0);
    f.close().unwrap();
}

#[test]
fn rx_reads_the_packet_side_again_only_when_poll_says_readable() {
    // Frames one at a time: each costs its read and the read that finds the queue empty;
    // wake-ups for the guest's rx buffers or tx events read nothing more (a read is a
    // system call, which a PV dom0 pays with a trip through Xen).
    let e = env(Config::default());
    let (mut f, peers, _) = e.front(DomId(7), 0, FrontConfig::default());
    const N: u64 = 30;
    for i in 0..N {
        let data = tcp_frame(false, i as u32, &payload(200, i as u8), false);
        let h = VnetHdr {
            flags: vnet::F_DATA_VALID,
            ..Default::default()
        };
        peers[0].send(&h, &data).unwrap();
        let p = f.recv(0, T).unwrap().expect("packet");
        assert_eq!(p.data, data);
    }
    let s = e.drv.stats();
    assert_eq!(s.rx_packets(), N);
    // One read that found nothing at the start, then two per frame.
    assert!(
        s.port_reads() <= 2 * N + 1,
        "{} reads for {N} frames",
        s.port_reads()
    );
    // Frames still flow after the guest's own traffic.
    good_still_works(&mut f, &peers[..1]);
    f.close().unwrap();
}

// ---- Tx by grant mapping -----------------------------------------------------------

#[test]
fn large_tx_packets_are_grant_mapped_small_ones_copied() {
    for map_min in [Some(16 * 1024), None] {
        let e = env(Config {
            tx_map_min: map_min,
            ..Config::default()
        });
        let (mut f, peers, _) = e.front(DomId(1), 0, FrontConfig::default());
        // A batch of GSO packets (mapped) between small frames (copied), both kinds of IP.
        let mut pkts = Vec::new();
        for i in 0..6u8 {
            let v6 = i % 2 == 1;
            let hdr = if v6 { 74 } else { 54 };
            pkts.push(gso_packet(v6, &payload(60_000 - hdr, i), 1448));
            pkts.push(TxPacket {
                data: tcp_frame(v6, u32::from(i), &payload(300, i), false),
                off: Offload::default(),
            });
        }
        let st = f.send(0, &pkts).unwrap();
        assert!(st.iter().all(|&s| s == rsp::OKAY), "{st:?}");
        for p in &pkts {
            let (h, got) = recv_peer(&peers[0]);
            assert_eq!(got, p.data, "map_min {map_min:?}");
            assert_eq!(h, p.off.to_vnet(&p.data).unwrap());
        }
        let s = e.drv.stats();
        match map_min {
            Some(_) => {
                assert!(s.tx_map_calls() >= 1);
                assert!(
                    s.tx_map_pages() >= 6 * 14,
                    "{} pages mapped",
                    s.tx_map_pages()
                );
            }
            None => assert_eq!(s.tx_map_calls(), 0),
        }
        f.close().unwrap();
    }
}

/// A raw packet of `total` bytes: `first` bytes in the first slot (page 0), the rest in
/// whole pages 1.. (their grants from `grefs`, which may include bad ones).
fn raw_packet(
    id: u16,
    first: u16,
    grefs: &[u32],
    flags: u16,
    first_gref: u32,
) -> Vec<netif_tx_request> {
    let total = usize::from(first) + grefs.len() * 4096;
    let mut v = vec![req(first_gref, 0, flags | txf::MORE_DATA, id, total as u16)];
    for (k, &g) in grefs.iter().enumerate() {
        let more = if k + 1 < grefs.len() {
            txf::MORE_DATA
        } else {
            0
        };
        v.push(req(g, 0, more, id + 1 + k as u16, 4096));
    }
    v
}

#[test]
fn a_bad_grant_in_a_mapped_packet_drops_that_packet_only() {
    let e = env(Config::default());
    let ((mut bad, bp), (mut good, gp)) = two(&e);
    let frame = tcp_frame(false, 1, &payload(5 * 4096, 3), false);
    let head = &frame[..154];
    let g0 = bad.tx_page(0, 0, head).unwrap();
    let mut grefs = Vec::new();
    for k in 0..4 {
        let g = bad
            .tx_page(0, k + 1, &frame[154 + k * 4096..154 + (k + 1) * 4096])
            .unwrap();
        grefs.push(g.0);
    }
    // 154 + 4 pages = 16538 bytes: mapped. The first packet has a reference the guest never
    // made among its data slots; the second is good.
    let mut bad_grefs = grefs.clone();
    bad_grefs[2] = 9999;
    let mut reqs = raw_packet(1, 154, &bad_grefs, 0, g0.0);
    reqs.extend(raw_packet(10, 154, &grefs, 0, g0.0));
    bad.send_raw(0, &reqs).unwrap();
    let r = bad.raw_responses(0, 10, T).unwrap();
    let st: Vec<(u16, i16)> = r.iter().map(|r| (r.id, r.status)).collect();
    let mut want: Vec<(u16, i16)> = (1..=5).map(|id| (id, rsp::ERROR)).collect();
    want.extend((10..=14).map(|id| (id, rsp::OKAY)));
    assert_eq!(st, want);
    let got = recv_peer(&bp[0]).1;
    assert_eq!(got, frame[..154 + 4 * 4096], "only the good packet, whole");
    assert_eq!(e.drv.stats().tx_errors(), 1);
    assert_eq!(e.drv.stats().queues_broken(), 0);
    good_still_works(&mut good, &gp);
}

#[test]
fn mapped_packet_with_headers_past_its_first_slot_goes_out_whole() {
    // A blank checksum needs the TCP header, which this packet's 20-byte first slot does
    // not hold: its mapped bytes are gathered behind the first slot.
    let e = env(Config::default());
    let (mut f, peers, _) = e.front(DomId(2), 0, FrontConfig::default());
    let frame = tcp_frame(false, 9, &payload(20 + 4 * 4096 - 54, 5), true);
    let g0 = f.tx_page(0, 0, &frame[..20]).unwrap();
    let mut grefs = Vec::new();
    for k in 0..4 {
        let g = f
            .tx_page(0, k + 1, &frame[20 + k * 4096..20 + (k + 1) * 4096])
            .unwrap();
        grefs.push(g.0);
    }
    f.send_raw(0, &raw_packet(1, 20, &grefs, txf::CSUM_BLANK, g0.0))
        .unwrap();
    let r = f.raw_responses(0, 5, T).unwrap();
    assert!(r.iter().all(|r| r.status == rsp::OKAY), "{r:?}");
    let (h, got) = recv_peer(&peers[0]);
    assert_eq!(got, frame);
    assert_eq!(
        (h.flags, h.csum_start, h.csum_offset),
        (vnet::F_NEEDS_CSUM, 34, 16)
    );
    assert!(e.drv.stats().tx_map_calls() >= 1);
    let mut d = got;
    fill_checksum(&mut d, 34, 16).unwrap();
    assert!(l4_checksum_ok(&d));
}
