//! One queue's two rings: the tx path (guest → packet side, grant copy out of the guest,
//! or grant mapping of large packets' data)
//! and the rx path (packet side → guest, grant copy into the guest's posted buffers), and
//! the thread that serves both.
//!
//! Validation follows Linux's netback (`xenvif_count_requests`, `xenvif_get_extras`):
//! a packet's slots must all be published together; a slot that crosses its page, more than
//! [`FATAL_SLOTS`] slots, a missing or bad extra-info slot, or an impossible producer index
//! is fatal (the queue stops); more than [`MAX_SLOTS`] slots, slot sizes that do not add up,
//! a runt frame, a grant that does not copy or offloads that do not fit the frame drop the
//! packet with `NETIF_RSP_ERROR` responses.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use evtchn::EventChannel;
use gnttab::{Access, CopyDest, CopySegment, CopySource, GrantMap, GrantStatus, Mapping};
use tracing::warn;
use xen_ring::BackRing;
use xen_sys::{netif_rx_request, netif_rx_response, netif_tx_request, netif_tx_response};
use xen_types::mem::SharedMemory;
use xen_types::{DomId, GrantRef};

use crate::hash::{FrameHash, HashAlgorithm};
use crate::port::{PacketQueue, RxOffloads};
use crate::stats::{ticks, Phase, Stats};
use crate::steer::{Steer, Steered};
use crate::wake::Waker;
use crate::wire::{
    fill_checksum, parse_l4, rsp, rxf, txf, Extra, GsoKind, Offload, VnetHdr, ETH_HLEN,
    FATAL_SLOTS, MAX_PACKET, MAX_SLOTS, PAGE,
};
use crate::xen::QueueChannel;
use crate::Error;

/// The backend end of a tx ring.
pub type TxRing<M> = BackRing<M, netif_tx_request, netif_tx_response>;
/// The backend end of an rx ring.
pub type RxRing<M> = BackRing<M, netif_rx_request, netif_rx_response>;

/// What one pass of a path did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Packets moved.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Packets dropped with error responses.
    pub errors: u64,
    /// The frontend asked for an event.
    pub notify: bool,
    /// (rx) A read found the packet side empty: it stays so until `poll` says otherwise.
    pub port_dry: bool,
}

fn fatal(msg: String) -> Error {
    Error::Fatal(msg)
}

/// The tx path of a queue: requests from the guest, frames to the packet side.
pub struct TxPath<M: SharedMemory> {
    ring: TxRing<M>,
    front: DomId,
    /// The packets of a batch, copied out of the guest.
    buf: Vec<u8>,
    /// Where the page-aligned part of `buf` starts.
    base: usize,
    /// The data slots (after the first) of the packets of a batch, in ring order.
    data: Vec<netif_tx_request>,
    /// The packets of a batch.
    batch: Vec<TxPacket>,
    credit: Option<Credit>,
    stats: Arc<Stats>,
    /// Packets of at least this many bytes have their data slots (after the first)
    /// grant-mapped and written to the packet side from the guest's pages, not copied.
    map_min: usize,
    /// The grant references a batch maps, in slot order.
    map_refs: Vec<GrantRef>,
    /// The `iovec`s of the frame being handed out.
    iov: Iovecs,
}

/// The `iovec`s of a frame: pointers into the batch buffer or a grant mapping, valid only
/// while the frame is lent out; stale in between, and never read then.
#[derive(Debug, Default)]
struct Iovecs(Vec<libc::iovec>);

// SAFETY: the pointers are only dereferenced (by `writev`, `TxFrame::to_vec`) during the
// `TxPath::serve` call that made them, on the thread that owns the path; moving the path to
// another thread between calls moves only stale addresses.
unsafe impl Send for Iovecs {}

impl std::ops::Deref for Iovecs {
    type Target = Vec<libc::iovec>;
    fn deref(&self) -> &Vec<libc::iovec> {
        &self.0
    }
}

impl std::ops::DerefMut for Iovecs {
    fn deref_mut(&mut self) -> &mut Vec<libc::iovec> {
        &mut self.0
    }
}

/// A frame the tx path hands to the packet side, as `iovec`s: the first slot's bytes
/// (copied out of the guest), then the rest, copied behind them or in grant-mapped guest
/// pages. Valid while the callback that receives it runs.
#[derive(Debug)]
pub struct TxFrame<'a> {
    iov: &'a [libc::iovec],
    len: usize,
}

impl TxFrame<'_> {
    /// The pieces, for `writev`.
    pub fn iovecs(&self) -> &[libc::iovec] {
        self.iov
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a frame of no bytes (never handed out).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A copy of its bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        for io in self.iov {
            // SAFETY: each iovec covers `iov_len` readable bytes (the batch buffer or a
            // live grant mapping) for as long as the frame is lent out; the guest may change
            // mapped bytes meanwhile, which only changes the values copied.
            v.extend_from_slice(unsafe {
                std::slice::from_raw_parts(io.iov_base as *const u8, io.iov_len)
            });
        }
        v
    }
}

/// One packet of a tx batch, taken from the ring and not yet answered.
#[derive(Debug)]
struct TxPacket {
    first: netif_tx_request,
    extras: usize,
    off: Offload,
    /// Its data slots after the first: `TxPath::data[data]`.
    data: std::ops::Range<usize>,
    /// Bytes of the first slot.
    first_len: usize,
    /// Bytes of the packet.
    total: usize,
    /// Where it lands in `TxPath::buf`.
    at: usize,
    /// Why it is dropped (answered `NETIF_RSP_ERROR` without copying).
    drop: Option<String>,
    /// Its grant copies all succeeded.
    copied: bool,
    /// Its data slots are grant-mapped: the mapping's page of its first data slot.
    mapped: Option<usize>,
}

/// Packets a tx pass copies with one grant-copy call (`IOCTL_GNTDEV_GRANT_COPY`).
const TX_BATCH: usize = 64;
/// The tx batch buffer: room for this many largest packets.
const TX_BUF_PACKETS: usize = 4;

/// A vif's transmit rate limit: the `rate` key of its backend directory, `<bytes>,<usec>`
/// (libxl writes it from the vif's `rate=` setting), as Linux's netback reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Bytes the guest may send per period.
    pub bytes: u64,
    /// The period.
    pub period: Duration,
}

impl std::str::FromStr for Rate {
    type Err = Error;
    fn from_str(s: &str) -> Result<Rate, Error> {
        let bad = || Error::Config(format!("rate {s:?} is not <bytes>,<usec>"));
        let (b, u) = s.split_once(',').ok_or_else(bad)?;
        let bytes: u64 = b.trim().parse().map_err(|_| bad())?;
        let usec: u64 = u.trim().parse().map_err(|_| bad())?;
        if bytes == 0 || usec == 0 {
            return Err(bad());
        }
        Ok(Rate {
            bytes,
            period: Duration::from_micros(usec),
        })
    }
}

/// The credit left of a [`Rate`] in the current period.
#[derive(Debug)]
struct Credit {
    rate: Rate,
    left: u64,
    next: Instant,
}

impl<M: SharedMemory> std::fmt::Debug for TxPath<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxPath").field("ring", &self.ring).finish()
    }
}

impl<M: SharedMemory> TxPath<M> {
    /// The tx path of frontend `front` on `ring`.
    pub fn new(ring: TxRing<M>, front: DomId) -> Self {
        let buf = vec![0; TX_BUF_PACKETS * (MAX_PACKET + PAGE) + PAGE];
        let base = buf.as_ptr().align_offset(PAGE).min(PAGE);
        TxPath {
            ring,
            front,
            buf,
            base,
            data: Vec::with_capacity(TX_BATCH * FATAL_SLOTS),
            batch: Vec::with_capacity(TX_BATCH),
            credit: None,
            stats: Arc::default(),
            map_min: usize::MAX,
            map_refs: Vec::with_capacity(TX_BATCH * FATAL_SLOTS),
            iov: Iovecs(Vec::with_capacity(FATAL_SLOTS + 1)),
        }
    }

    /// Grant-maps the data slots (after the first) of packets of at least `bytes` bytes
    /// instead of copying them: the packet side reads them from the guest's pages (one copy
    /// of those bytes in dom0 instead of two). `None`: always copy.
    pub fn set_map_min(&mut self, bytes: Option<usize>) {
        self.map_min = bytes.unwrap_or(usize::MAX);
    }

    /// Counts into `stats` (a fresh set by default).
    pub fn set_stats(&mut self, stats: Arc<Stats>) {
        self.stats = stats;
    }

    /// Limits what the guest may send to `rate` (none: unlimited).
    pub fn set_rate(&mut self, rate: Option<Rate>) {
        self.credit = rate.map(|rate| Credit {
            rate,
            left: rate.bytes,
            next: Instant::now() + rate.period,
        });
    }

    /// While the guest has used up its credit: when the next period starts. Requests wait
    /// in the ring until then.
    pub fn throttled_until(&mut self) -> Option<Instant> {
        let c = self.credit.as_mut()?;
        let now = Instant::now();
        if now >= c.next {
            c.left = c.rate.bytes;
            c.next = now + c.rate.period;
        }
        (c.left == 0).then_some(c.next)
    }

    /// The ring.
    pub fn ring_mut(&mut self) -> &mut TxRing<M> {
        &mut self.ring
    }

    fn respond(&mut self, id: u16, status: i16) -> Result<(), Error> {
        self.ring.push_response(netif_tx_response { id, status })?;
        Ok(())
    }

    /// Answers packet `i` of the batch: its first slot, its extras (`NETIF_RSP_NULL`), its
    /// data slots.
    fn answer(&mut self, i: usize, status: i16) -> Result<(), Error> {
        let p = &self.batch[i];
        let (first, extras, data) = (p.first.id, p.extras, p.data.clone());
        self.respond(first, status)?;
        for _ in 0..extras {
            self.respond(0, rsp::NULL)?;
        }
        for j in data {
            let id = self.data[j].id;
            self.respond(id, status)?;
        }
        Ok(())
    }

    /// Takes the next packet's slots off the ring, validated: `Ok(None)` when none is
    /// published. An `Err` is fatal.
    fn take_packet(&mut self, at: usize) -> Result<Option<TxPacket>, Error> {
        let Some(first) = self.ring.take_request()? else {
            return Ok(None);
        };
        if let Some(c) = &mut self.credit {
            c.left = c.left.saturating_sub(u64::from(first.size));
        }
        let mut off = Offload {
            csum_blank: first.flags & txf::CSUM_BLANK != 0,
            data_validated: first.flags & txf::DATA_VALIDATED != 0,
            gso: None,
        };
        let mut extras = 0;
        if first.flags & txf::EXTRA_INFO != 0 {
            loop {
                let x = self.ring.take_request()?.ok_or_else(|| {
                    fatal("extra-info slot missing (not published with its packet)".into())
                })?;
                extras += 1;
                let (e, more) =
                    Extra::from_tx(&x).map_err(|e| fatal(format!("extra info: {e}")))?;
                if let Extra::Gso(g) = e {
                    off.gso = Some(g);
                }
                if !more {
                    break;
                }
            }
        }
        let start = self.data.len();
        let total = usize::from(first.size);
        let mut first_len = total;
        let mut drop: Option<String> = None;
        let mut more = first.flags & txf::MORE_DATA != 0;
        while more {
            // Slots of the packet with the next one.
            let n = self.data.len() - start + 2;
            if n > FATAL_SLOTS {
                return Err(fatal(format!("packet of {n}+ slots (malicious frontend)")));
            }
            let t = self
                .ring
                .take_request()?
                .ok_or_else(|| fatal(format!("slot {n} of a packet not published with it")))?;
            if drop.is_none() && n > MAX_SLOTS {
                drop = Some(format!("more than {MAX_SLOTS} slots"));
            }
            if drop.is_none() && usize::from(t.size) > first_len {
                drop = Some(format!(
                    "slot of {} bytes exceeds the {first_len} left of the packet",
                    t.size
                ));
            }
            first_len = first_len.saturating_sub(usize::from(t.size));
            if usize::from(t.offset) + usize::from(t.size) > PAGE {
                return Err(fatal(format!(
                    "slot at offset {} of {} bytes crosses its page",
                    t.offset, t.size
                )));
            }
            more = t.flags & txf::MORE_DATA != 0;
            self.data.push(t);
        }
        if usize::from(first.offset) + first_len > PAGE {
            return Err(fatal(format!(
                "first slot at offset {} of {first_len} bytes crosses its page",
                first.offset
            )));
        }
        if drop.is_none() && total < ETH_HLEN {
            drop = Some(format!("{total}-byte packet"));
        }
        Ok(Some(TxPacket {
            first,
            extras,
            off,
            data: start..self.data.len(),
            first_len,
            total,
            // Where the data slots (after the first) start on a page of the buffer: each
            // whole-page slot is then one copy.
            at: self.base + (at - self.base + first_len).next_multiple_of(PAGE) - first_len,
            drop,
            copied: false,
            mapped: None,
        }))
    }

    /// Serves every packet published, handing each good one to `out`; then pushes the
    /// responses. Packets are taken in batches whose slots are grant-copied with one call,
    /// then handed out and answered in ring order. An `Err` is fatal: the frontend broke
    /// the protocol and the queue stops.
    pub fn serve<G: GrantMap + ?Sized>(
        &mut self,
        gnttab: &G,
        out: &mut dyn FnMut(&VnetHdr, &TxFrame<'_>),
    ) -> Result<Pass, Error> {
        let mut pass = Pass::default();
        let mut t = ticks();
        loop {
            self.batch.clear();
            self.data.clear();
            let mut at = self.base;
            while self.batch.len() < TX_BATCH
                && at + MAX_PACKET + PAGE <= self.buf.len()
                && self.throttled_until().is_none()
            {
                let Some(p) = self.take_packet(at)? else {
                    break;
                };
                if p.drop.is_none() {
                    at = p.at + p.total;
                }
                self.batch.push(p);
            }
            if self.batch.is_empty() {
                break;
            }
            t = self.stats.lap(Phase::TxRing, t);
            let mapping = self.map_in(gnttab);
            self.copy_in(gnttab);
            t = self.stats.lap(Phase::TxCopy, t);
            for i in 0..self.batch.len() {
                let p = &self.batch[i];
                let status = match &p.drop {
                    Some(why) => {
                        tracing::debug!("dom{} tx: dropping packet: {why}", self.front.get());
                        rsp::ERROR
                    }
                    None if !p.copied => rsp::ERROR,
                    None => {
                        let vnet = match (p.mapped, &mapping) {
                            (Some(page), Some(m)) => self.mapped_frame(i, m, page),
                            _ => self.copied_frame(i),
                        };
                        let p = &self.batch[i];
                        match vnet {
                            Ok(h) => {
                                t = self.stats.lap(Phase::TxRing, t);
                                out(
                                    &h,
                                    &TxFrame {
                                        iov: &self.iov,
                                        len: p.total,
                                    },
                                );
                                t = self.stats.lap(Phase::PortWrite, t);
                                pass.packets += 1;
                                pass.bytes += p.total as u64;
                                rsp::OKAY
                            }
                            Err(_) => rsp::ERROR,
                        }
                    }
                };
                if status != rsp::OKAY {
                    pass.errors += 1;
                }
                self.answer(i, status)?;
            }
        }
        pass.notify = self.ring.push_responses_and_check_notify();
        self.stats.lap(Phase::TxRing, t);
        Ok(pass)
    }

    /// The `iovec` of packet `i`, copied whole into the buffer, and its tap header.
    fn copied_frame(&mut self, i: usize) -> Result<VnetHdr, Error> {
        let p = &self.batch[i];
        let frame = &self.buf[p.at..p.at + p.total];
        self.iov.clear();
        self.iov.push(libc::iovec {
            iov_base: frame.as_ptr() as *mut _,
            iov_len: frame.len(),
        });
        p.off.to_vnet(frame)
    }

    /// The `iovec`s of packet `i`, whose data slots are in `m` from page `page` on, and its
    /// tap header (read from its first slot; if that does not hold the headers, the mapped
    /// bytes are copied behind it and the packet goes out whole from the buffer).
    fn mapped_frame(&mut self, i: usize, m: &Mapping, page: usize) -> Result<VnetHdr, Error> {
        let p = &self.batch[i];
        let head = &self.buf[p.at..p.at + p.first_len];
        if let Ok(h) = p.off.to_vnet(head) {
            self.iov.clear();
            self.iov.push(libc::iovec {
                iov_base: head.as_ptr() as *mut _,
                iov_len: head.len(),
            });
            for (k, t) in self.data[p.data.clone()].iter().enumerate() {
                if t.size == 0 {
                    continue;
                }
                let off = (page + k) * PAGE + usize::from(t.offset);
                debug_assert!(off + usize::from(t.size) <= m.len());
                self.iov.push(libc::iovec {
                    // SAFETY: in bounds of the mapping (one page per data slot; the slot's
                    // offset and size were checked to stay in its page).
                    iov_base: unsafe { m.as_ptr().add(off) }.cast(),
                    iov_len: usize::from(t.size),
                });
            }
            return Ok(h);
        }
        let (at, first_len, range) = (p.at, p.first_len, p.data.clone());
        let mut pos = at + first_len;
        for k in 0..range.len() {
            let t = self.data[range.start + k];
            let off = (page + k) * PAGE + usize::from(t.offset);
            let n = usize::from(t.size);
            // SAFETY: the source is in bounds of the mapping (as above) and readable; the
            // destination is the packet's own room in the buffer (`total` bytes from `at`,
            // the slot sizes adding up to it), which does not overlap guest memory.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    m.as_ptr().add(off),
                    self.buf[pos..pos + n].as_mut_ptr(),
                    n,
                );
            }
            pos += n;
        }
        self.copied_frame(i)
    }

    /// Grant-maps the data slots of the batch's packets of at least `map_min` bytes, with
    /// one call, and marks them mapped. If the mapping fails (a bad reference among them),
    /// they are copied instead, which finds the bad slots.
    fn map_in<G: GrantMap + ?Sized>(&mut self, gnttab: &G) -> Option<Mapping> {
        self.map_refs.clear();
        for p in &mut self.batch {
            if p.drop.is_none() && !p.data.is_empty() && p.total >= self.map_min {
                p.mapped = Some(self.map_refs.len());
                self.map_refs
                    .extend(self.data[p.data.clone()].iter().map(|t| GrantRef(t.gref)));
            }
        }
        if self.map_refs.is_empty() {
            return None;
        }
        match gnttab.map(self.front, &self.map_refs, Access::ReadOnly) {
            Ok(m) => {
                self.stats.add(&self.stats.tx_map_calls, 1);
                self.stats
                    .add(&self.stats.tx_map_pages, self.map_refs.len() as u64);
                Some(m)
            }
            Err(e) => {
                tracing::debug!("dom{} tx: grant map failed, copying: {e}", self.front.get());
                for p in &mut self.batch {
                    p.mapped = None;
                }
                None
            }
        }
    }

    /// Grant-copies the slots of the batch's packets into the buffer, with one call (only
    /// the first slot of a mapped packet); marks the packets whose copies all succeeded.
    fn copy_in<G: GrantMap + ?Sized>(&mut self, gnttab: &G) {
        let front = self.front;
        fn seg(front: DomId, gref: u32, offset: u16, dst: &mut [u8]) -> CopySegment<'_> {
            CopySegment {
                len: dst.len() as u16,
                source: CopySource::Gref {
                    domid: front,
                    gref: GrantRef(gref),
                    offset,
                },
                dest: CopyDest::Local(dst),
                status: GrantStatus::OKAY,
            }
        }
        let mut segs: Vec<CopySegment<'_>> = Vec::with_capacity(self.batch.len() + self.data.len());
        // Each packet's segments: `segs[ranges[i]]` (empty for a dropped one).
        let mut ranges = Vec::with_capacity(self.batch.len());
        let mut rest: &mut [u8] = &mut self.buf;
        let mut pos = 0;
        for p in &self.batch {
            let s0 = segs.len();
            if p.drop.is_none() {
                let (_, r) = std::mem::take(&mut rest).split_at_mut(p.at - pos);
                let (pkt, r) = r.split_at_mut(p.total);
                rest = r;
                pos = p.at + p.total;
                let (head, mut tail) = pkt.split_at_mut(p.first_len);
                if !head.is_empty() {
                    segs.push(seg(front, p.first.gref, p.first.offset, head));
                }
                let data = if p.mapped.is_some() {
                    &[][..]
                } else {
                    &self.data[p.data.clone()]
                };
                for t in data {
                    let (d, r) = std::mem::take(&mut tail).split_at_mut(usize::from(t.size));
                    tail = r;
                    if !d.is_empty() {
                        segs.push(seg(front, t.gref, t.offset, d));
                    }
                }
            }
            ranges.push(s0..segs.len());
        }
        self.stats.add(&self.stats.tx_copy_calls, 1);
        self.stats.add(&self.stats.tx_copy_segs, segs.len() as u64);
        let ok = match gnttab.copy(&mut segs) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("dom{} tx: grant copy failed: {e}", front.get());
                false
            }
        };
        let statuses: Vec<bool> = segs.iter().map(|s| s.status == GrantStatus::OKAY).collect();
        drop(segs);
        for (p, r) in self.batch.iter_mut().zip(ranges) {
            p.copied = p.drop.is_none() && ok && statuses[r].iter().all(|&s| s);
        }
    }
}

/// What the frontend takes on its rx path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxCaps {
    /// Offloads (checksum, TSO).
    pub offloads: RxOffloads,
    /// Partial checksums on IPv6 too (`feature-ipv6-csum-offload`).
    pub ipv6_csum: bool,
    /// Packets over several slots (`feature-sg`).
    pub sg: bool,
}

/// The rx path of a queue: frames from the packet side, copied into the guest's buffers.
pub struct RxPath<M: SharedMemory> {
    ring: RxRing<M>,
    front: DomId,
    caps: RxCaps,
    /// Frames read from the packet side, each at a page boundary of `buf[base..]`.
    buf: Vec<u8>,
    /// Where the page-aligned part of `buf` starts.
    base: usize,
    /// A frame read and not yet delivered (waiting for rx requests), at the start of the
    /// aligned buffer.
    pending: Option<Held>,
    /// The rx requests taken for the frames of a batch, in ring order.
    reqs: Vec<netif_rx_request>,
    /// The frames of a batch.
    batch: Vec<RxFrame>,
    stats: Arc<Stats>,
}

/// A frame's offloads, length and hash (when the frontend enabled hashing).
#[derive(Debug, Clone, Copy)]
struct Held {
    off: Offload,
    len: usize,
    hash: Option<FrameHash>,
}

/// One frame of an rx batch: where it is in the buffer, its first request in `reqs`.
#[derive(Debug, Clone, Copy)]
struct RxFrame {
    held: Held,
    at: usize,
    req: usize,
}

impl RxFrame {
    /// Extra-info slots after its first data slot: GSO, then hash.
    fn extras(&self) -> usize {
        usize::from(self.held.off.gso.is_some()) + usize::from(self.held.hash.is_some())
    }

    /// The request of data chunk `i`: slot 0, then (after the extra slots) the next ones.
    fn data_req(&self, i: usize) -> usize {
        self.req + if i > 0 { i + self.extras() } else { 0 }
    }
}

impl<M: SharedMemory> std::fmt::Debug for RxPath<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxPath").field("ring", &self.ring).finish()
    }
}

/// Frames delivered per batch (one grant-copy call) before the responses are pushed.
const RX_BATCH: usize = 64;
/// Room for one frame read from the packet side.
const RX_FRAME: usize = MAX_PACKET + PAGE;
/// The rx batch buffer: room for this many largest frames (more small ones).
const RX_BUF_FRAMES: usize = 4;

/// Where the frames of an rx pass come from: a queue of the packet side, and with
/// steering, the other queues' threads.
#[derive(Debug, Clone, Copy)]
pub struct RxSource<'a> {
    /// The packet queue.
    pub port: &'a PacketQueue,
    /// The vif's steering (hash settings and inboxes), and this queue's number.
    pub steer: Option<(&'a Steer, usize)>,
    /// Whether to read the packet queue (false: it was found empty and `poll` has not
    /// reported it readable since, so a read would only cost a system call).
    pub read_port: bool,
}

impl<M: SharedMemory> RxPath<M> {
    /// The rx path of frontend `front` on `ring`.
    pub fn new(ring: RxRing<M>, front: DomId, caps: RxCaps) -> Self {
        let buf = vec![0; RX_BUF_FRAMES * RX_FRAME + PAGE];
        let base = buf.as_ptr().align_offset(PAGE).min(PAGE);
        RxPath {
            ring,
            front,
            caps,
            buf,
            base,
            pending: None,
            reqs: Vec::with_capacity(RX_BATCH * (MAX_SLOTS + 2)),
            batch: Vec::with_capacity(RX_BATCH),
            stats: Arc::default(),
        }
    }

    /// Counts into `stats` (a fresh set by default).
    pub fn set_stats(&mut self, stats: Arc<Stats>) {
        self.stats = stats;
    }

    /// True when a frame waits for the guest to post rx buffers.
    pub fn starved(&self) -> bool {
        self.pending.is_some()
    }

    /// Makes the frame at `buf[at..at + len]` fit what the frontend takes: completes a
    /// partial checksum it cannot take; refuses segmentation it does not accept.
    fn adapt(&mut self, h: &VnetHdr, at: usize, len: usize) -> Result<Offload, Error> {
        if len < ETH_HLEN {
            return Err(Error::Protocol(format!("{len}-byte frame")));
        }
        let mut off = Offload::from_vnet(h)?;
        let frame = &mut self.buf[at..at + len];
        if let Some(g) = off.gso {
            let ok = self.caps.sg
                && match g.kind {
                    GsoKind::TcpV4 => self.caps.offloads.tso4,
                    GsoKind::TcpV6 => self.caps.offloads.tso6,
                };
            if !ok {
                return Err(Error::Protocol(format!("frontend takes no {:?}", g.kind)));
            }
        }
        if off.csum_blank {
            let v6 = parse_l4(frame).is_some_and(|l| l.v6);
            if !self.caps.offloads.csum || (v6 && !self.caps.ipv6_csum) {
                if off.gso.is_some() {
                    return Err(Error::Protocol("GSO needs checksum offload".into()));
                }
                fill_checksum(frame, h.csum_start.into(), h.csum_offset.into())?;
                off.csum_blank = false;
                off.data_validated = true;
            }
        }
        if !self.caps.sg && len > PAGE {
            return Err(Error::Protocol(format!(
                "{len}-byte frame to a frontend without feature-sg"
            )));
        }
        Ok(off)
    }

    /// The next frame for this queue, read to `buf[at..]`: one handed over by another
    /// queue, or one from the packet side (which, with steering, may belong to another
    /// queue: it is handed over and the next one read). `Ok(None)`: nothing queued.
    fn next_frame(
        &mut self,
        src: RxSource<'_>,
        at: usize,
        pass: &mut Pass,
        t: &mut u64,
    ) -> Result<Option<Held>, Error> {
        if let Some((steer, me)) = src.steer {
            if let Some(f) = steer.take(me) {
                let len = f.data.len().min(RX_FRAME);
                self.buf[at..at + len].copy_from_slice(&f.data[..len]);
                return Ok(Some(Held {
                    off: f.off,
                    len,
                    hash: Some(f.hash),
                }));
            }
        }
        if !src.read_port || pass.port_dry {
            return Ok(None);
        }
        loop {
            *t = self.stats.lap(Phase::RxRing, *t);
            let got = src.port.recv(&mut self.buf[at..at + RX_FRAME])?;
            self.stats.add(&self.stats.port_reads, 1);
            *t = self.stats.lap(Phase::PortRead, *t);
            let Some((h, len)) = got else {
                pass.port_dry = true;
                return Ok(None);
            };
            let off = match self.adapt(&h, at, len) {
                Ok(off) => off,
                Err(e) => {
                    tracing::debug!("dom{} rx: dropping frame: {e}", self.front.get());
                    pass.errors += 1;
                    continue;
                }
            };
            let Some((steer, me)) = src.steer else {
                return Ok(Some(Held {
                    off,
                    len,
                    hash: None,
                }));
            };
            let frame = &self.buf[at..at + len];
            let target = steer.hash.read().steer(frame, steer.queues());
            match target {
                Some((hash, q)) if q != me => {
                    let f = Steered {
                        off,
                        hash,
                        data: frame.to_vec(),
                    };
                    if !steer.give(q, f) {
                        pass.errors += 1;
                    }
                }
                Some((hash, _)) => {
                    return Ok(Some(Held {
                        off,
                        len,
                        hash: Some(hash),
                    }))
                }
                None => {
                    return Ok(Some(Held {
                        off,
                        len,
                        hash: None,
                    }))
                }
            }
        }
    }

    /// Delivers frames from `src` while the guest has posted buffers for them, in batches
    /// copied with one grant-copy call each, then pushes the responses. An `Err` is fatal
    /// (the ring broke, or the packet side failed).
    pub fn serve<G: GrantMap + ?Sized>(
        &mut self,
        gnttab: &G,
        src: RxSource<'_>,
    ) -> Result<Pass, Error> {
        let mut pass = Pass::default();
        let mut t = ticks();
        self.batch.clear();
        self.reqs.clear();
        let end = self.buf.len();
        let mut at = self.base;
        // A frame that waits for buffers: where it was read.
        let mut wait = None;
        while self.batch.len() < RX_BATCH && at + RX_FRAME <= end {
            let held = match self.pending.take() {
                // The waiting frame is at the start of the buffer (`at` is `base` here).
                Some(p) => p,
                None => match self.next_frame(src, at, &mut pass, &mut t)? {
                    Some(h) => h,
                    None => break,
                },
            };
            let need = held.len.div_ceil(PAGE).max(1)
                + usize::from(held.off.gso.is_some())
                + usize::from(held.hash.is_some());
            let mut avail = self.ring.unconsumed_requests()? as usize;
            if avail < need {
                avail = self.ring.request_event_after_published()? as usize;
                if avail < need {
                    wait = Some(at);
                    self.pending = Some(held);
                    break;
                }
            }
            let req = self.reqs.len();
            for _ in 0..need {
                let r = self
                    .ring
                    .take_request()?
                    .ok_or_else(|| fatal("rx requests vanished".into()))?;
                self.reqs.push(r);
            }
            self.batch.push(RxFrame { held, at, req });
            // The next frame starts on a page: each chunk then copies from one page.
            at += held.len.div_ceil(PAGE).max(1) * PAGE;
            pass.packets += 1;
            pass.bytes += held.len as u64;
        }
        if !self.batch.is_empty() {
            t = self.stats.lap(Phase::RxRing, t);
            self.deliver(gnttab)?;
            t = self.stats.lap(Phase::RxCopy, t);
        }
        if let (Some(at), Some(p)) = (wait, self.pending) {
            // The waiting frame goes to the start of the buffer, now that the batch's
            // frames before it were copied out.
            self.buf.copy_within(at..at + p.len, self.base);
        }
        pass.notify = self.ring.push_responses_and_check_notify();
        self.stats.lap(Phase::RxRing, t);
        Ok(pass)
    }

    /// Copies the batch's frames into their posted buffers (one grant-copy call) and
    /// answers each request in its slot.
    fn deliver<G: GrantMap + ?Sized>(&mut self, gnttab: &G) -> Result<(), Error> {
        let front = self.front;
        let mut segs: Vec<CopySegment<'_>> = Vec::with_capacity(self.reqs.len());
        for f in &self.batch {
            for (i, c) in self.buf[f.at..f.at + f.held.len].chunks(PAGE).enumerate() {
                segs.push(CopySegment {
                    len: c.len() as u16,
                    source: CopySource::Local(c),
                    dest: CopyDest::Gref {
                        domid: front,
                        gref: GrantRef(self.reqs[f.data_req(i)].gref),
                        offset: 0,
                    },
                    status: GrantStatus::OKAY,
                });
            }
        }
        self.stats.add(&self.stats.rx_copy_calls, 1);
        self.stats.add(&self.stats.rx_copy_segs, segs.len() as u64);
        let all = match gnttab.copy(&mut segs) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("dom{} rx: grant copy failed: {e}", front.get());
                false
            }
        };
        let ok: Vec<bool> = segs
            .iter()
            .map(|s| all && s.status == GrantStatus::OKAY)
            .collect();
        drop(segs);
        let mut k = 0;
        for fi in 0..self.batch.len() {
            let f = self.batch[fi];
            let chunks = f.held.len.div_ceil(PAGE).max(1);
            for i in 0..chunks {
                let size = if i + 1 == chunks {
                    f.held.len - i * PAGE
                } else {
                    PAGE
                };
                let mut flags = if i == 0 { f.held.off.rx_flags() } else { 0 };
                if i == 0 && f.extras() > 0 {
                    flags |= rxf::EXTRA_INFO;
                }
                if i + 1 < chunks {
                    flags |= rxf::MORE_DATA;
                }
                let status = if ok[k] { size as i16 } else { rsp::ERROR };
                k += 1;
                let r = netif_rx_response {
                    id: self.reqs[f.data_req(i)].id,
                    offset: 0,
                    flags,
                    status,
                };
                // Responses go out in request order, so each lands in its request's slot.
                self.ring.push_response(r)?;
                if i == 0 {
                    if let Some(g) = f.held.off.gso {
                        let more = f.held.hash.is_some();
                        self.ring.push_response(Extra::Gso(g).to_rx(more))?;
                    }
                    if let Some(h) = f.held.hash {
                        let e = Extra::Hash {
                            kind: h.kind.bit(),
                            alg: HashAlgorithm::Toeplitz.raw(),
                            value: h.value,
                        };
                        self.ring.push_response(e.to_rx(false))?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Everything one queue's thread serves.
pub(crate) struct QueueServer<G: GrantMap, E: EventChannel, M: SharedMemory> {
    pub(crate) gnttab: Arc<G>,
    pub(crate) tx: TxPath<M>,
    pub(crate) rx: RxPath<M>,
    pub(crate) chan: QueueChannel<E>,
    pub(crate) port: PacketQueue,
    pub(crate) stats: Arc<Stats>,
    /// The vif's steering, when it has several queues.
    pub(crate) steer: Option<Arc<Steer>>,
    /// Reports a fatal error of the queue (the driver writes it to the backend's `error`).
    pub(crate) report: Arc<dyn Fn(&str) + Send + Sync>,
    /// The queue's number.
    pub(crate) index: usize,
}

/// How long a queue polls its tx ring before it sleeps on the event channel (a wake-up
/// costs tens of microseconds; a guest sending a stream publishes again sooner). Only
/// with more than one CPU: on one, polling keeps the threads that feed it from running.
const SPIN: Duration = Duration::from_micros(30);

/// Whether to poll before sleeping: this machine has more than one CPU.
fn spin_worthwhile() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
}

/// A thread's stop signal: the flag it checks, and a wake-up it sleeps on (so that it
/// sleeps without a time limit).
#[derive(Debug)]
pub(crate) struct Stop {
    flag: AtomicBool,
    waker: Waker,
}

impl Stop {
    pub(crate) fn new() -> std::io::Result<Stop> {
        Ok(Stop {
            flag: AtomicBool::new(false),
            waker: Waker::new()?,
        })
    }

    /// Asks every thread sleeping on it to stop (it stays signalled).
    pub(crate) fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    pub(crate) fn stopped(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    pub(crate) fn as_pollfd(&self) -> libc::pollfd {
        pollfd(&self.waker)
    }
}

pub(crate) fn pollfd(fd: &impl AsFd) -> libc::pollfd {
    libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&fd.as_fd()),
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Sleeps in `poll` on `fds` until one is readable or `timeout` (none: no limit). Returns
/// the number of ready descriptors.
pub(crate) fn sleep(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> Result<usize, Error> {
    let ms = timeout.map_or(-1, |t| {
        i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
    });
    // SAFETY: `fds` is a valid array of pollfds for the duration of the call.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e.into());
        }
        return Ok(0);
    }
    Ok(r as usize)
}

impl<G: GrantMap, E: EventChannel, M: SharedMemory> QueueServer<G, E, M> {
    /// Serves until `stop` or a fatal error.
    pub(crate) fn run(mut self, stop: &Stop, name: &str) {
        let broken = match self.serve(stop) {
            Ok(()) => false,
            Err(e) => {
                warn!("{name}: stopping the queue: {e}");
                (self.report)(&format!("queue {}: {e}", self.index));
                true
            }
        };
        let s = &self.stats;
        if broken {
            s.queues_broken.fetch_add(1, Ordering::SeqCst);
        }
        s.queues_running.fetch_sub(1, Ordering::SeqCst);
    }

    /// Polls the tx ring for [`SPIN`]: true as soon as the guest published requests.
    /// (Shared memory only: no system call, which a PV dom0 pays with a trip through Xen.)
    fn spin(tx: &mut TxPath<M>) -> Result<bool, Error> {
        let until = Instant::now() + SPIN;
        loop {
            for _ in 0..64 {
                if tx.ring_mut().unconsumed_requests()? > 0 {
                    return Ok(true);
                }
                std::hint::spin_loop();
            }
            if Instant::now() >= until {
                return Ok(false);
            }
        }
    }

    fn serve(&mut self, stop: &Stop) -> Result<(), Error> {
        let port = &self.port;
        let spin = spin_worthwhile();
        let steer = self.steer.as_deref().map(|s| (s, self.index));
        // The packet queue was read empty and `poll` has not said readable since.
        let mut port_dry = false;
        while !stop.stopped() {
            self.stats.add(&self.stats.passes, 1);
            let mut tx_errors = 0;
            let stats = &self.stats;
            let tx = self.tx.serve(&*self.gnttab, &mut |h, frame| {
                stats.add(&stats.port_writes, 1);
                // SAFETY: a frame's iovecs are readable while it is lent out (`TxFrame`).
                if let Err(e) = unsafe { port.send_iov(h, frame.iovecs()) } {
                    tracing::debug!("tx: frame dropped: {e}");
                    tx_errors += 1;
                }
            })?;
            let s = &self.stats;
            s.tx_packets
                .fetch_add(tx.packets - tx_errors.min(tx.packets), Ordering::Relaxed);
            s.tx_bytes.fetch_add(tx.bytes, Ordering::Relaxed);
            s.tx_errors.fetch_add(tx.errors, Ordering::Relaxed);
            if tx.packets > 0 {
                // Frames written to the network may have been answered already.
                port_dry = false;
            }
            if tx.notify {
                let t = ticks();
                self.chan.notify_tx()?;
                s.add(&s.notifies, 1);
                s.lap(Phase::Notify, t);
            }
            let read_port = !port_dry;
            let rx = self.rx.serve(
                &*self.gnttab,
                RxSource {
                    port,
                    steer,
                    read_port,
                },
            )?;
            if read_port {
                port_dry = rx.port_dry;
            }
            s.rx_packets.fetch_add(rx.packets, Ordering::Relaxed);
            s.rx_bytes.fetch_add(rx.bytes, Ordering::Relaxed);
            s.rx_dropped.fetch_add(rx.errors, Ordering::Relaxed);
            if rx.notify {
                let t = ticks();
                self.chan.notify_rx()?;
                s.add(&s.notifies, 1);
                s.lap(Phase::Notify, t);
            }
            if rx.packets > 0 && !self.rx.starved() && (!port_dry || steer.is_some()) {
                // Maybe more frames queued than one batch.
                continue;
            }
            let mut timeout = None;
            match self.tx.throttled_until() {
                // Over the rate: the requests wait in the ring until the next period.
                Some(t) => timeout = Some(t.saturating_duration_since(Instant::now())),
                None => {
                    if self.tx.ring_mut().final_check_for_requests()? {
                        continue;
                    }
                    if spin {
                        let t = ticks();
                        let won = Self::spin(&mut self.tx)?;
                        s.lap(Phase::Spin, t);
                        if won {
                            s.add(&s.spins_won, 1);
                            continue;
                        }
                    }
                }
            }
            // Starved: wait for the guest's rx buffers, not for more frames.
            let mut fds = [
                pollfd(&self.chan),
                stop.as_pollfd(),
                pollfd(port),
                pollfd(
                    &self
                        .steer
                        .as_deref()
                        .map_or(&stop.waker, |s| s.waker(self.index)),
                ),
            ];
            let n = if self.rx.starved() { 2 } else { 4 };
            let t = ticks();
            s.add(&s.sleeps, 1);
            let r = sleep(&mut fds[..n], timeout)?;
            let t = s.lap(Phase::Sleep, t);
            // Events only when the channel's descriptor says so (a read costs a system call).
            if r > 0 && fds[0].revents != 0 {
                self.chan.drain()?;
                s.lap(Phase::Notify, t);
            }
            if n > 2 && fds[2].revents != 0 {
                port_dry = false;
            }
        }
        Ok(())
    }
}

pub(crate) fn started(stats: &Stats) {
    stats.queues_running.fetch_add(1, Ordering::SeqCst);
}

pub(crate) fn not_started(stats: &Stats) {
    stats.queues_running.fetch_sub(1, Ordering::SeqCst);
}
