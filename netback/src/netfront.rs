//! A netif frontend in Rust, a guest of the simulated host (`xen-sim`), for tests, benches
//! and fuzzing. It negotiates as Linux's xen-netfront does (`request-rx-copy`,
//! `feature-sg`, `feature-gso-tcpv4/v6`, `multi-queue-num-queues` with `queue-N/`,
//! `event-channel` or `event-channel-tx`/`-rx`), and checks what the backend does: every rx
//! response must sit in its request's slot and carry that request's id.
//!
//! Each queue owns 256 tx pages and 256 rx pages, granted once: tx slot id `i` uses tx page
//! `i`; the rx request at ring index `k` uses rx page `k % 256` and id `k % 256`.
//! [`tcp_frame`] and [`l4_checksum_ok`] build and check frames with real TCP checksums.

use std::sync::Arc;
use std::time::{Duration, Instant};

use xen_ring::FrontRing;
use xen_sim::memory::PageMapping;
use xen_sys::{netif_rx_request, netif_rx_response, netif_tx_request, netif_tx_response};
use xen_types::mem::SharedMemoryExt;
use xen_types::{DomId, GrantRef, Pages, Pfn};
use xenbus::{FrontendDevice, Store, XenbusState};

use crate::ctrl::{CtrlRequest, CtrlResponse};
use crate::wire::{
    csum_add, parse_l4, rsp, rxf, txf, Extra, Gso, GsoKind, Offload, MAX_PACKET, PAGE,
};
use crate::xen::QueueChannel;
use crate::Error;

/// Entries of a one-page netif ring (`__CONST_RING_SIZE(netif_tx, 4096)`).
pub const RING: usize = 256;

/// The frontend's tx ring.
pub type FrontTx = FrontRing<PageMapping, netif_tx_request, netif_tx_response>;
/// The frontend's rx ring.
pub type FrontRx = FrontRing<PageMapping, netif_rx_request, netif_rx_response>;

/// Frontend settings: what it asks for and what it accepts.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    /// Queues wanted (capped by `multi-queue-max-queues`).
    pub queues: u32,
    /// Separate tx and rx event channels, if the backend offers them.
    pub split: bool,
    /// Accept multi-slot rx packets (`feature-sg`).
    pub sg: bool,
    /// Accept TCPv4 / TCPv6 GSO on rx.
    pub gso: bool,
    /// Accept partial checksums on rx (else `feature-no-csum-offload=1`).
    pub csum: bool,
    /// Give the backend a control ring, if it offers one (`feature-ctrl-ring`).
    pub ctrl: bool,
    /// Time limit of every wait.
    pub timeout: Duration,
}

impl Default for FrontConfig {
    fn default() -> Self {
        FrontConfig {
            queues: 1,
            split: true,
            sg: true,
            gso: true,
            csum: true,
            ctrl: false,
            timeout: Duration::from_secs(20),
        }
    }
}

/// A packet to send.
#[derive(Debug, Clone)]
pub struct TxPacket {
    /// The frame.
    pub data: Vec<u8>,
    /// Checksum flags and GSO.
    pub off: Offload,
}

/// A received packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxPacket {
    /// The frame.
    pub data: Vec<u8>,
    /// The first response's flags (`NETRXF_*`).
    pub flags: u16,
    /// The GSO extra info, if any.
    pub gso: Option<Gso>,
    /// The hash extra info, if any: type bit, algorithm, value.
    pub hash: Option<(u8, u8, u32)>,
    /// A response of the packet had an error status.
    pub error: bool,
}

struct Partial {
    pkt: RxPacket,
    /// The extra-info slot comes next.
    extra_next: bool,
    /// More data slots follow.
    more: bool,
}

/// One queue: its rings, event channels and pages.
pub struct FrontQueue {
    tx: FrontTx,
    rx: FrontRx,
    chan: QueueChannel<evtchn::SimEvtchn>,
    tx_pfn: usize,
    rx_pfn: usize,
    tx_grants: Vec<GrantRef>,
    rx_grants: Vec<GrantRef>,
    tx_free: Vec<u16>,
    /// The packet (index in the current [`Netfront::send`] batch) whose first slot uses
    /// each id.
    tx_owner: Vec<Option<usize>>,
    /// The status of each packet of the current batch.
    tx_results: Vec<Option<i16>>,
    rx_partial: Option<Partial>,
}

/// A connected frontend.
pub struct Netfront<S: Store> {
    dev: FrontendDevice<S>,
    host: xen_sim::Host,
    /// Our domain.
    pub domid: DomId,
    mem: Arc<PageMapping>,
    queues: Vec<FrontQueue>,
    ctrl: Option<FrontCtrl>,
    timeout: Duration,
}

/// The frontend's control ring.
pub type FrontCtrlRing = FrontRing<PageMapping, CtrlRequest, CtrlResponse>;

/// The control ring, its event channel, and a page granted for keys and tables.
struct FrontCtrl {
    ring: FrontCtrlRing,
    chan: QueueChannel<evtchn::SimEvtchn>,
    page: usize,
    grant: GrantRef,
    next_id: u16,
}

impl<S: Store> std::fmt::Debug for Netfront<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netfront")
            .field("domid", &self.domid)
            .field("queues", &self.queues.len())
            .finish()
    }
}

fn cfg_err(s: String) -> Error {
    Error::Config(s)
}

const PAGES_PER_QUEUE: usize = 2 + 2 * RING;

impl<S: Store> Netfront<S> {
    /// Creates guest `domid` on `host` and connects its vif `devid` (whose directories the
    /// toolstack wrote) through `store`, the guest's xenstore connection.
    pub fn connect(
        host: &xen_sim::Host,
        store: Arc<S>,
        domid: DomId,
        devid: u32,
        cfg: FrontConfig,
    ) -> Result<Self, Error> {
        let mut dev = FrontendDevice::open(store, domid, "vif", devid)?;
        let backend = dev.backend_id;
        dev.wait_backend(|s| s == XenbusState::InitWait, cfg.timeout)?;
        let max_q = dev
            .read_backend_parse::<u32>("multi-queue-max-queues")?
            .unwrap_or(1);
        let split =
            cfg.split && dev.read_backend_parse::<u32>("feature-split-event-channels")? == Some(1);
        let nq = cfg.queues.clamp(1, max_q.max(1)) as usize;
        let ctrl = cfg.ctrl && dev.read_backend_parse::<u32>("feature-ctrl-ring")? == Some(1);
        // The control ring's page and its data page follow the queues' pages.
        let pages = nq * PAGES_PER_QUEUE + 2;
        let dcfg = xen_sys::xen_domctl_createdomain {
            max_grant_frames: 64,
            ..xen_sim::domain::small_pv_guest(1023)
        };
        let d = host.create_domain(domid, &dcfg).map_err(Error::Host)?;
        host.set_max_mem_kb(d, (pages as u64 + 16) * 4)
            .map_err(Error::Host)?;
        let pfns: Vec<Pfn> = (0..pages as u64).map(Pfn).collect();
        host.populate_physmap(d, &pfns).map_err(Error::Host)?;
        let mem = Arc::new(host.guest_pages(d, &pfns).map_err(Error::Host)?);
        let grant = |pfn: usize| {
            host.grant_access(domid, backend, Pfn(pfn as u64), false)
                .map_err(Error::Host)
        };
        let mut keys: Vec<(String, String)> = vec![
            ("request-rx-copy".into(), "1".into()),
            ("feature-rx-notify".into(), "1".into()),
            ("feature-sg".into(), u8::from(cfg.sg).to_string()),
            ("feature-gso-tcpv4".into(), u8::from(cfg.gso).to_string()),
            ("feature-gso-tcpv6".into(), u8::from(cfg.gso).to_string()),
            (
                "feature-no-csum-offload".into(),
                u8::from(!cfg.csum).to_string(),
            ),
            (
                "feature-ipv6-csum-offload".into(),
                u8::from(cfg.csum).to_string(),
            ),
        ];
        if nq > 1 {
            keys.push(("multi-queue-num-queues".into(), nq.to_string()));
        }
        let mut queues = Vec::new();
        for q in 0..nq {
            let base = q * PAGES_PER_QUEUE;
            let prefix = if nq > 1 {
                format!("queue-{q}/")
            } else {
                String::new()
            };
            let page = |p: usize| host.guest_pages(d, &[Pfn(p as u64)]).map_err(Error::Host);
            let tx = FrontRing::new(page(base)?, Pages(1))?;
            let rx = FrontRing::new(page(base + 1)?, Pages(1))?;
            keys.push((format!("{prefix}tx-ring-ref"), grant(base)?.0.to_string()));
            keys.push((
                format!("{prefix}rx-ring-ref"),
                grant(base + 1)?.0.to_string(),
            ));
            let handle = evtchn::SimEvtchn::open(host, domid).map_err(crate::xen::ev)?;
            let chan = QueueChannel::unbound(handle, backend, split)?;
            if split {
                keys.push((
                    format!("{prefix}event-channel-tx"),
                    chan.tx_port().0.to_string(),
                ));
                keys.push((
                    format!("{prefix}event-channel-rx"),
                    chan.rx_port().0.to_string(),
                ));
            } else {
                keys.push((
                    format!("{prefix}event-channel"),
                    chan.tx_port().0.to_string(),
                ));
            }
            let tx_pfn = base + 2;
            let rx_pfn = tx_pfn + RING;
            let tx_grants = (0..RING)
                .map(|i| grant(tx_pfn + i))
                .collect::<Result<_, _>>()?;
            let rx_grants = (0..RING)
                .map(|i| grant(rx_pfn + i))
                .collect::<Result<_, _>>()?;
            let mut fq = FrontQueue {
                tx,
                rx,
                chan,
                tx_pfn,
                rx_pfn,
                tx_grants,
                rx_grants,
                tx_free: (0..RING as u16).rev().collect(),
                tx_owner: vec![None; RING],
                tx_results: Vec::new(),
                rx_partial: None,
            };
            fq.post_rx()?;
            queues.push(fq);
        }
        let ctrl = if ctrl {
            let at = nq * PAGES_PER_QUEUE;
            let ring = FrontRing::new(
                host.guest_pages(d, &[Pfn(at as u64)])
                    .map_err(Error::Host)?,
                Pages(1),
            )?;
            let handle = evtchn::SimEvtchn::open(host, domid).map_err(crate::xen::ev)?;
            let chan = QueueChannel::unbound(handle, backend, false)?;
            keys.push(("ctrl-ring-ref".into(), grant(at)?.0.to_string()));
            keys.push(("event-channel-ctrl".into(), chan.tx_port().0.to_string()));
            Some(FrontCtrl {
                ring,
                chan,
                page: at + 1,
                grant: grant(at + 1)?,
                next_id: 0,
            })
        } else {
            None
        };
        dev.write_all(&keys)?;
        dev.switch_state(XenbusState::Connected)?;
        let st = dev.wait_backend(
            |s| s == XenbusState::Connected || s >= XenbusState::Closing,
            cfg.timeout,
        )?;
        if st != XenbusState::Connected {
            let err = dev.read_backend("error")?.unwrap_or_default();
            return Err(cfg_err(format!("backend went {st:?}: {err}")));
        }
        let nf = Netfront {
            dev,
            host: host.clone(),
            domid,
            mem,
            queues,
            ctrl,
            timeout: cfg.timeout,
        };
        for q in &nf.queues {
            q.chan.notify_rx()?;
        }
        Ok(nf)
    }

    /// Queues connected.
    pub fn queues(&self) -> usize {
        self.queues.len()
    }

    /// Sends `pkts` on queue `q` and waits for every response: the status of each packet
    /// (`NETIF_RSP_OKAY`, or an error).
    pub fn send(&mut self, q: usize, pkts: &[TxPacket]) -> Result<Vec<i16>, Error> {
        let deadline = Instant::now() + self.timeout;
        self.queues[q].tx_results = vec![None; pkts.len()];
        for (n, p) in pkts.iter().enumerate() {
            let chunks = p.data.len().div_ceil(PAGE).max(1);
            let slots = chunks + usize::from(p.off.gso.is_some());
            loop {
                let fq = &mut self.queues[q];
                fq.reap_tx()?;
                if fq.tx_free.len() >= chunks && fq.tx.free_requests() as usize >= slots {
                    break;
                }
                fq.wait(deadline)?;
            }
            let fq = &mut self.queues[q];
            fq.queue_tx(&self.mem, p, n)?;
            if fq.tx.push_requests_and_check_notify() {
                fq.chan.notify_tx()?;
            }
        }
        loop {
            let fq = &mut self.queues[q];
            fq.reap_tx()?;
            if fq.tx_results.iter().all(Option::is_some) {
                return Ok(fq.tx_results.drain(..).flatten().collect());
            }
            fq.wait(deadline)?;
        }
    }

    /// Queues raw requests on queue `q`'s tx ring and publishes them (a hostile frontend):
    /// the backend sees exactly these. Their responses are left unread.
    pub fn send_raw(&mut self, q: usize, reqs: &[netif_tx_request]) -> Result<(), Error> {
        let fq = &mut self.queues[q];
        for r in reqs {
            fq.tx.push_request(*r)?;
        }
        fq.tx.push_requests();
        fq.chan.notify_tx()?;
        Ok(())
    }

    /// Writes `req_prod` of queue `q`'s tx ring directly (a producer index jumping ahead).
    pub fn set_tx_req_prod(&mut self, q: usize, prod: u32) -> Result<(), Error> {
        let fq = &self.queues[q];
        fq.tx.memory().write_obj(0, prod)?;
        fq.chan.notify_tx()
    }

    /// The grant of tx page `i` of queue `q` (for raw requests), after writing `data` at its
    /// start.
    pub fn tx_page(&self, q: usize, i: usize, data: &[u8]) -> Result<GrantRef, Error> {
        let fq = &self.queues[q];
        self.mem.write_bytes((fq.tx_pfn + i) * PAGE, data)?;
        Ok(fq.tx_grants[i])
    }

    /// Raw tx responses that arrived on queue `q`, waiting up to `timeout` for `n`.
    pub fn raw_responses(
        &mut self,
        q: usize,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<netif_tx_response>, Error> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let fq = &mut self.queues[q];
        while out.len() < n {
            while let Some(r) = fq.tx.take_response()? {
                out.push(r);
            }
            if out.len() >= n || fq.wait(deadline).is_err() {
                break;
            }
        }
        Ok(out)
    }

    /// Receives one packet on queue `q`, waiting up to `timeout` (`None` on time-out).
    pub fn recv(&mut self, q: usize, timeout: Duration) -> Result<Option<RxPacket>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let mem = self.mem.clone();
            let fq = &mut self.queues[q];
            if let Some(p) = fq.poll_rx(&mem)? {
                return Ok(Some(p));
            }
            if fq.wait(deadline).is_err() {
                return Ok(None);
            }
        }
    }

    /// True when the control ring is connected.
    pub fn has_ctrl(&self) -> bool {
        self.ctrl.is_some()
    }

    /// Writes `data` at the start of the control data page; returns its grant (for
    /// `SET_HASH_KEY` and `SET_HASH_MAPPING`).
    pub fn ctrl_page(&self, data: &[u8]) -> Result<GrantRef, Error> {
        let c = self
            .ctrl
            .as_ref()
            .ok_or_else(|| cfg_err("no control ring".into()))?;
        self.mem.write_bytes(c.page * PAGE, data)?;
        Ok(c.grant)
    }

    /// Sends control request `type_` with `data` and waits for its response: its status
    /// and data. Checks that the response echoes the request's id and type.
    pub fn ctrl(&mut self, type_: u16, data: [u32; 3]) -> Result<(u32, u32), Error> {
        let deadline = Instant::now() + self.timeout;
        let c = self
            .ctrl
            .as_mut()
            .ok_or_else(|| cfg_err("no control ring".into()))?;
        let id = c.next_id;
        c.next_id = c.next_id.wrapping_add(1);
        c.ring.push_request(CtrlRequest { id, type_, data })?;
        if c.ring.push_requests_and_check_notify() {
            c.chan.notify_tx()?;
        }
        loop {
            if let Some(r) = c.ring.take_response()? {
                if r.id != id || r.type_ != type_ {
                    return Err(cfg_err(format!(
                        "control response {}/{} for request {id}/{type_}",
                        r.id, r.type_
                    )));
                }
                return Ok((r.status, r.data));
            }
            if c.ring.final_check_for_responses()? {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(cfg_err("timed out waiting for a control response".into()));
            }
            c.chan.wait(left.min(Duration::from_millis(100)))?;
        }
    }

    /// Writes `req_prod` of the control ring directly (a producer index jumping ahead).
    pub fn set_ctrl_req_prod(&mut self, prod: u32) -> Result<(), Error> {
        let c = self
            .ctrl
            .as_ref()
            .ok_or_else(|| cfg_err("no control ring".into()))?;
        c.ring.memory().write_obj(0, prod)?;
        c.chan.notify_tx()
    }

    /// Closes the device (Closing, then Closed once the backend closed).
    pub fn close(mut self) -> Result<(), Error> {
        self.dev.switch_state(XenbusState::Closing)?;
        self.dev
            .wait_backend(|s| s >= XenbusState::Closing, self.timeout)?;
        self.dev.switch_state(XenbusState::Closed)?;
        Ok(())
    }

    /// The guest vanishes: its domain is destroyed without closing anything.
    pub fn vanish(self) {
        let _ = self.host.destroy(self.domid);
    }
}

impl FrontQueue {
    fn wait(&mut self, deadline: Instant) -> Result<(), Error> {
        if self.tx.final_check_for_responses()? || self.rx.final_check_for_responses()? {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(cfg_err("timed out waiting for the backend".into()));
        }
        self.chan.wait(left.min(Duration::from_millis(100)))?;
        Ok(())
    }

    fn queue_tx(&mut self, mem: &PageMapping, p: &TxPacket, n: usize) -> Result<(), Error> {
        if p.data.len() > MAX_PACKET {
            return Err(cfg_err(format!("{}-byte packet", p.data.len())));
        }
        let chunks: Vec<&[u8]> = if p.data.is_empty() {
            vec![&[][..]]
        } else {
            p.data.chunks(PAGE).collect()
        };
        for (i, c) in chunks.iter().enumerate() {
            let id = self
                .tx_free
                .pop()
                .ok_or_else(|| cfg_err("no free tx id".into()))?;
            mem.write_bytes((self.tx_pfn + usize::from(id)) * PAGE, c)?;
            let mut flags = 0;
            if i + 1 < chunks.len() {
                flags |= txf::MORE_DATA;
            }
            let size = if i == 0 {
                self.tx_owner[usize::from(id)] = Some(n);
                if p.off.csum_blank {
                    flags |= txf::CSUM_BLANK;
                }
                if p.off.data_validated {
                    flags |= txf::DATA_VALIDATED;
                }
                if p.off.gso.is_some() {
                    flags |= txf::EXTRA_INFO;
                }
                p.data.len() as u16
            } else {
                c.len() as u16
            };
            self.tx.push_request(netif_tx_request {
                gref: self.tx_grants[usize::from(id)].0,
                offset: 0,
                flags,
                id,
                size,
            })?;
            if i == 0 {
                if let Some(g) = p.off.gso {
                    self.tx.push_request(Extra::Gso(g).to_tx(false))?;
                }
            }
        }
        Ok(())
    }

    fn reap_tx(&mut self) -> Result<(), Error> {
        while let Some(r) = self.tx.take_response()? {
            if r.status == rsp::NULL {
                continue;
            }
            let id = usize::from(r.id);
            if id >= RING || self.tx_free.contains(&r.id) {
                return Err(cfg_err(format!("tx response for id {id} not in flight")));
            }
            if let Some(n) = self.tx_owner[id].take() {
                if let Some(slot) = self.tx_results.get_mut(n) {
                    *slot = Some(r.status);
                }
            }
            self.tx_free.push(r.id);
        }
        Ok(())
    }

    fn post_rx(&mut self) -> Result<(), Error> {
        let mut posted = false;
        while self.rx.free_requests() > 0 {
            let k = self.rx.req_prod_pvt() as usize % RING;
            self.rx.push_request(netif_rx_request {
                id: k as u16,
                pad: 0,
                gref: self.rx_grants[k].0,
            })?;
            posted = true;
        }
        if posted && self.rx.push_requests_and_check_notify() {
            self.chan.notify_rx()?;
        }
        Ok(())
    }

    fn poll_rx(&mut self, mem: &PageMapping) -> Result<Option<RxPacket>, Error> {
        loop {
            let k = self.rx.rsp_cons() as usize % RING;
            let Some(r) = self.rx.take_response()? else {
                self.post_rx()?;
                return Ok(None);
            };
            let extra_slot = self.rx_partial.as_ref().is_some_and(|p| p.extra_next);
            // An extra-info slot's id bytes are the extra info's; data slots carry their
            // request's id.
            if !extra_slot && usize::from(r.id) != k {
                return Err(cfg_err(format!(
                    "rx response with id {} in slot {k} (not its request's slot)",
                    r.id
                )));
            }
            let done = match self.rx_partial.take() {
                Some(mut p) if p.extra_next => {
                    let (e, more) = Extra::from_rx(&r)?;
                    match e {
                        Extra::Gso(g) => p.pkt.gso = Some(g),
                        Extra::Hash { kind, alg, value } => p.pkt.hash = Some((kind, alg, value)),
                        Extra::Other(_) => {}
                    }
                    p.extra_next = more;
                    if p.more || p.extra_next {
                        self.rx_partial = Some(p);
                        None
                    } else {
                        Some(p.pkt)
                    }
                }
                p => {
                    let mut p = p.unwrap_or(Partial {
                        pkt: RxPacket {
                            data: Vec::new(),
                            flags: r.flags,
                            gso: None,
                            hash: None,
                            error: false,
                        },
                        extra_next: r.flags & rxf::EXTRA_INFO != 0,
                        more: false,
                    });
                    if r.status < 0 {
                        p.pkt.error = true;
                    } else {
                        let n = r.status as usize;
                        let off = usize::from(r.offset);
                        if off + n > PAGE {
                            return Err(cfg_err(format!("rx slot of {n} bytes at {off}")));
                        }
                        let at = p.pkt.data.len();
                        p.pkt.data.resize(at + n, 0);
                        mem.read_bytes((self.rx_pfn + k) * PAGE + off, &mut p.pkt.data[at..])?;
                    }
                    p.more = r.flags & rxf::MORE_DATA != 0;
                    if p.more || p.extra_next {
                        self.rx_partial = Some(p);
                        None
                    } else {
                        Some(p.pkt)
                    }
                }
            };
            if let Some(pkt) = done {
                self.post_rx()?;
                return Ok(Some(pkt));
            }
        }
    }
}

/// An Ethernet + IPv4 (or IPv6) + TCP frame carrying `payload`, its TCP checksum partial
/// (the pseudo-header sum in the field, as a stack with checksum offload leaves it) when
/// `partial`, else complete.
pub fn tcp_frame(v6: bool, seq: u32, payload: &[u8], partial: bool) -> Vec<u8> {
    let l3 = if v6 { 40 } else { 20 };
    let l4_len = 20 + payload.len();
    let mut f = vec![0u8; 14 + l3 + l4_len];
    f[0..6].copy_from_slice(&[0x00, 0x16, 0x3e, 0, 0, 1]);
    f[6..12].copy_from_slice(&[0x00, 0x16, 0x3e, 0, 0, 2]);
    let (src, dst): (Vec<u8>, Vec<u8>);
    if v6 {
        f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        let ip = &mut f[14..54];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        ip[6] = 6;
        ip[7] = 64;
        ip[8] = 0xfd;
        ip[23] = 1;
        ip[24] = 0xfd;
        ip[39] = 2;
        src = ip[8..24].to_vec();
        dst = ip[24..40].to_vec();
    } else {
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        let tot = (20 + l4_len).min(0xffff) as u16;
        ip[2..4].copy_from_slice(&tot.to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let c = !(csum_add(0, ip) as u16);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        src = ip[12..16].to_vec();
        dst = ip[16..20].to_vec();
    }
    let t = 14 + l3;
    f[t..t + 2].copy_from_slice(&40000u16.to_be_bytes());
    f[t + 2..t + 4].copy_from_slice(&5001u16.to_be_bytes());
    f[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
    f[t + 12] = 5 << 4;
    f[t + 13] = 0x18;
    f[t + 14..t + 16].copy_from_slice(&65535u16.to_be_bytes());
    f[t + 20..].copy_from_slice(payload);
    let pseudo = pseudo_sum(&src, &dst, l4_len);
    if partial {
        // The folded pseudo-header sum, not complemented (CHECKSUM_PARTIAL).
        f[t + 16..t + 18].copy_from_slice(&(pseudo as u16).to_be_bytes());
    } else {
        let c = !(csum_add(pseudo, &f[t..]) as u16);
        f[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
    }
    f
}

fn pseudo_sum(src: &[u8], dst: &[u8], l4_len: usize) -> u32 {
    let mut s = csum_add(0, src);
    s = csum_add(s, dst);
    let mut tail = [0u8; 8];
    tail[0..4].copy_from_slice(&(l4_len as u32).to_be_bytes());
    tail[7] = 6;
    csum_add(s, &tail)
}

/// True when the frame's TCP checksum (with the pseudo-header) is correct.
pub fn l4_checksum_ok(f: &[u8]) -> bool {
    let Some(l4) = parse_l4(f) else {
        return false;
    };
    let (src, dst) = if l4.v6 {
        (&f[22..38], &f[38..54])
    } else {
        (&f[26..30], &f[30..34])
    };
    let pseudo = pseudo_sum(src, dst, f.len() - l4.start);
    csum_add(pseudo, &f[l4.start..]) == 0xffff
}

/// A GSO TCP packet of `payload` bytes (IPv4 or IPv6), partial checksum, segment size
/// `mss`.
pub fn gso_packet(v6: bool, payload: &[u8], mss: u16) -> TxPacket {
    TxPacket {
        data: tcp_frame(v6, 1, payload, true),
        off: Offload {
            csum_blank: true,
            data_validated: true,
            gso: Some(Gso {
                kind: if v6 { GsoKind::TcpV6 } else { GsoKind::TcpV4 },
                size: mss,
            }),
        },
    }
}
