//! A blkif frontend in Rust, for tests, benches and fuzzing: a guest of the simulated host
//! ([`XenSimGuest`](crate::xen::XenSimGuest)) or dom0 itself on real Xen
//! ([`Dom0Front`](crate::xen::Dom0Front)).
//!
//! It negotiates like Linux's xen-blkfront (`ring-page-order`/`ring-ref%u`,
//! `multi-queue-num-queues`/`queue-%u/`, `protocol`, `feature-persistent`, indirect
//! requests when the backend offers `feature-max-indirect-segments`), keeps one slot of
//! data pages per in-flight request, and either grants those pages once and reuses them
//! (persistent grants) or grants them per request and ends the grants when the response
//! arrives (which fails if the backend still has them mapped).
//!
//! Data moves in one of two ways:
//! - [`Blkfront::run`] copies [`IoReq`] buffers (ordinary memory) into and out of the
//!   slot's pages, as Linux's blkfront does with persistent grants;
//! - [`Blkfront::run_bufs`] does I/O on [`GuestBuf`]s, buffers allocated in the guest's
//!   own memory ([`Blkfront::alloc_buf`], from [`FrontConfig::buffer_pages`]) whose pages are
//!   granted to the backend themselves, as Linux's blkfront grants bio pages: the backend
//!   reads and writes the caller's buffer directly, with no copy on either side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use evtchn::EventChannel;
use parking_lot::{Mutex, MutexGuard};
use xen_types::mem::{SharedMemory, SharedMemoryExt};
use xen_types::{DomId, GrantRef, PAGE_SIZE};
use xenbus::{FrontendDevice, Store, XenbusState};

use crate::abi::{
    Body, Protocol, Request, Response, Segment, Status, MAX_DIRECT_SEGMENTS, SECTOR_SIZE,
    SEGMENTS_PER_INDIRECT_PAGE,
};
use crate::ring::{layout, FrontRing};
use crate::xen::RingChannel;
use crate::Error;

const OP_READ: u8 = xen_sys::BLKIF_OP_READ as u8;
const OP_WRITE: u8 = xen_sys::BLKIF_OP_WRITE as u8;
const OP_FLUSH: u8 = xen_sys::BLKIF_OP_FLUSH_DISKCACHE as u8;
const OP_DISCARD: u8 = xen_sys::BLKIF_OP_DISCARD as u8;
const OP_INDIRECT: u8 = xen_sys::BLKIF_OP_INDIRECT as u8;

/// What a test frontend needs from the host it runs on, as a guest: what its kernel does
/// (memory, grants of its pages) and an event-channel handle acting as it
/// ([`evtchn::EventChannel`]).
pub trait FrontHost: Clone + Send + Sync + 'static {
    /// The guest's view of its whole memory.
    type Memory: SharedMemory + 'static;
    /// An event-channel handle acting as the guest.
    type Evtchn: EventChannel + 'static;
    /// Gives guest `domid` `pages` pages of memory and returns its view of them: creates the
    /// domain, or takes the pages from one that exists already
    /// ([`XenSimGuest::adopt`](crate::xen::XenSimGuest::adopt)).
    fn create_guest(&self, domid: DomId, pages: usize) -> Result<Self::Memory, Error>;
    /// The guest grants its page `pfn` to `to`.
    fn grant(&self, domid: DomId, pfn: usize, to: DomId, readonly: bool)
        -> Result<GrantRef, Error>;
    /// The guest ends a grant (fails while the grantee has it mapped).
    fn end_grant(&self, domid: DomId, gref: GrantRef) -> Result<(), Error>;
    /// A new event-channel handle acting as guest `domid`.
    fn open_evtchn(&self, domid: DomId) -> Result<Self::Evtchn, Error>;
    /// Destroys the guest (it vanishes without closing anything).
    fn destroy_guest(&self, domid: DomId);
}

/// `pages` pages of a guest's memory starting at page `first`: the guest's own view of, say,
/// its ring pages.
#[derive(Debug)]
pub struct Region<M: SharedMemory> {
    mem: Arc<M>,
    first: usize,
    pages: usize,
}

impl<M: SharedMemory> Clone for Region<M> {
    fn clone(&self) -> Self {
        Region {
            mem: self.mem.clone(),
            first: self.first,
            pages: self.pages,
        }
    }
}

impl<M: SharedMemory> Region<M> {
    /// Pages `first..first+pages` of `mem`.
    pub fn new(mem: Arc<M>, first: usize, pages: usize) -> Result<Region<M>, Error> {
        let total = mem.len() / PAGE_SIZE;
        if first.checked_add(pages).is_none_or(|e| e > total) || pages == 0 {
            return Err(Error::Config(format!(
                "pages {first}+{pages} outside guest memory of {total} pages"
            )));
        }
        Ok(Region { mem, first, pages })
    }
}

// SAFETY: a page-aligned sub-range of a SharedMemory region (which is page-aligned), in
// bounds (checked in `new`), kept alive by the Arc.
unsafe impl<M: SharedMemory> SharedMemory for Region<M> {
    fn as_ptr(&self) -> *mut u8 {
        // SAFETY: in bounds (checked in `new`).
        unsafe { self.mem.as_ptr().add(self.first * PAGE_SIZE) }
    }
    fn len(&self) -> usize {
        self.pages * PAGE_SIZE
    }
    fn writable(&self) -> bool {
        self.mem.writable()
    }
}

/// Ids of raw requests have this bit set (slot ids never do).
pub const RAW_ID: u64 = 1 << 63;

/// Frontend settings.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    /// Queues wanted (capped by `multi-queue-max-queues`).
    pub queues: u32,
    /// Ring page order wanted (capped by `max-ring-page-order`); 0 uses `ring-ref`.
    pub ring_page_order: u32,
    /// Use persistent grants if the backend offers them.
    pub persistent: bool,
    /// Largest request in segments (pages); above 11 needs indirect descriptors.
    pub max_segments: usize,
    /// Use indirect descriptors if the backend offers them.
    pub indirect: bool,
    /// Layout to speak.
    pub protocol: Protocol,
    /// Requests in flight per queue at most (capped by the ring size).
    pub max_inflight: usize,
    /// Time limit of every wait.
    pub timeout: Duration,
    /// Frontend directory type (`device/<type>/<devid>`).
    pub device_type: String,
    /// Guest pages set aside for [`GuestBuf`]s ([`Blkfront::alloc_buf`]); with persistent
    /// grants each is granted once at connection.
    pub buffer_pages: usize,
}

impl Default for FrontConfig {
    fn default() -> Self {
        FrontConfig {
            queues: 1,
            ring_page_order: 0,
            persistent: true,
            max_segments: 32,
            indirect: true,
            protocol: Protocol::Native,
            max_inflight: 32,
            timeout: Duration::from_secs(20),
            device_type: "vbd".into(),
            buffer_pages: 0,
        }
    }
}

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read `buf.len()` bytes.
    Read,
    /// Write `buf`.
    Write,
    /// Write `buf`, then flush (`BLKIF_OP_FLUSH_DISKCACHE` with data).
    WriteFlush,
    /// Flush (no data).
    Flush,
    /// Discard `nr_sectors`.
    Discard {
        /// Sectors.
        nr_sectors: u64,
    },
}

/// One request of a batch.
#[derive(Debug, Clone)]
pub struct IoReq {
    /// Operation.
    pub op: Op,
    /// First 512-byte sector.
    pub sector: u64,
    /// Data to write, or buffer to read into (a multiple of 512 bytes).
    pub buf: Vec<u8>,
    /// Result, once answered.
    pub status: Option<Status>,
}

impl IoReq {
    /// A request.
    pub fn new(op: Op, sector: u64, buf: Vec<u8>) -> IoReq {
        IoReq {
            op,
            sector,
            buf,
            status: None,
        }
    }
}

/// The guest pages that back [`GuestBuf`]s: which are free, and their persistent grants.
struct BufPool {
    first_pfn: usize,
    used: Vec<bool>,
    /// Persistent grant of each page (empty without persistent grants).
    grants: Vec<GrantRef>,
}

/// A buffer in the guest's own memory whose pages are granted to the backend as they are
/// (no bounce copy): what [`Blkfront::run_bufs`] reads into and writes from. Its pages go
/// back to the frontend's pool when it is dropped.
pub struct GuestBuf<M: SharedMemory> {
    mem: Arc<M>,
    pool: Arc<Mutex<BufPool>>,
    /// Index of the first page in the pool.
    first: usize,
    pages: usize,
    len: usize,
    pfn: usize,
    /// Persistent grants of its pages (empty without persistent grants).
    grants: Vec<GrantRef>,
}

impl<M: SharedMemory> std::fmt::Debug for GuestBuf<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestBuf")
            .field("pfn", &self.pfn())
            .field("len", &self.len)
            .finish()
    }
}

impl<M: SharedMemory> GuestBuf<M> {
    /// Bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty buffer (never: buffers hold at least one sector).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The guest page number of its first page (its pages are contiguous).
    pub fn pfn(&self) -> usize {
        self.pfn
    }

    fn base(&self) -> usize {
        self.pfn() * PAGE_SIZE
    }

    fn check(&self, offset: usize, len: usize) -> Result<(), Error> {
        if offset.checked_add(len).is_none_or(|e| e > self.len) {
            return Err(cfg_err(format!(
                "{len} bytes at {offset} outside a {}-byte buffer",
                self.len
            )));
        }
        Ok(())
    }

    /// Copies `data` into the buffer at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), Error> {
        self.check(offset, data.len())?;
        Ok(self.mem.write_bytes(self.base() + offset, data)?)
    }

    /// Copies bytes at `offset` out of the buffer.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), Error> {
        self.check(offset, out.len())?;
        Ok(self.mem.read_bytes(self.base() + offset, out)?)
    }

    /// Sets `len` bytes at `offset` to `byte`.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), Error> {
        self.check(offset, len)?;
        Ok(self.mem.fill(self.base() + offset, len, byte)?)
    }
}

impl<M: SharedMemory> Drop for GuestBuf<M> {
    fn drop(&mut self) {
        self.pool.lock().used[self.first..self.first + self.pages].fill(false);
    }
}

/// One request of a zero-copy batch ([`Blkfront::run_bufs`]).
#[derive(Debug)]
pub struct BufReq<'a, M: SharedMemory> {
    /// Operation ([`Op::Read`], [`Op::Write`] or [`Op::WriteFlush`]: the others carry no
    /// data; use [`IoReq`] for them).
    pub op: Op,
    /// First 512-byte sector.
    pub sector: u64,
    /// The data: written from or read into, whole.
    pub buf: &'a GuestBuf<M>,
    /// Result, once answered.
    pub status: Option<Status>,
}

impl<'a, M: SharedMemory> BufReq<'a, M> {
    /// A request on `buf`.
    pub fn new(op: Op, sector: u64, buf: &'a GuestBuf<M>) -> Self {
        BufReq {
            op,
            sector,
            buf,
            status: None,
        }
    }
}

/// Where a request's data is.
enum Data<'a> {
    /// In ordinary memory: copied through the slot's pages.
    Copy(&'a [u8]),
    /// In the guest's buffer pages (`grants`: their persistent grants, if any).
    Guest {
        pfn: usize,
        len: usize,
        grants: &'a [GrantRef],
    },
}

struct Slot {
    data_pfn: usize,
    ind_pfn: usize,
    /// Persistent grants of the data and indirect pages (granted once).
    pgrants: Vec<GrantRef>,
    pind: Vec<GrantRef>,
    /// Per-request grants to end on completion.
    temp: Vec<GrantRef>,
    tag: usize,
    len: usize,
    read: bool,
}

struct FrontQueue<F: FrontHost> {
    ring: FrontRing<Region<F::Memory>>,
    chan: RingChannel<F::Evtchn>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    raw_inflight: usize,
}

/// A connected test frontend.
pub struct Blkfront<S: Store, F: FrontHost> {
    host: F,
    domid: DomId,
    backend: DomId,
    mem: Arc<F::Memory>,
    dev: Mutex<FrontendDevice<S>>,
    queues: Vec<Mutex<FrontQueue<F>>>,
    cfg: FrontConfig,
    scratch_pfn: usize,
    bufs: Arc<Mutex<BufPool>>,
    /// Disk size in 512-byte sectors.
    pub sectors: u64,
    /// `info` (`VDISK_*`).
    pub info: u32,
    /// `sector-size`.
    pub sector_size: u32,
    /// Persistent grants in use.
    pub persistent: bool,
    /// Segments per request usable.
    pub max_segments: usize,
    /// Entries per ring.
    pub ring_entries: u32,
}

impl<S: Store, F: FrontHost> std::fmt::Debug for Blkfront<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blkfront")
            .field("domid", &self.domid)
            .field("queues", &self.queues.len())
            .finish_non_exhaustive()
    }
}

/// Scratch pages at the end of guest memory, for tests that grant pages themselves.
pub const SCRATCH_PAGES: usize = 16;

fn cfg_err(s: impl Into<String>) -> Error {
    Error::Config(s.into())
}

impl<S: Store, F: FrontHost> Blkfront<S, F> {
    /// Creates domain `domid` on `host` (or takes memory in it, for a domain the host
    /// already has: [`FrontHost::create_guest`]), opens its device `devid` (the toolstack
    /// must have written both directories) and connects.
    pub fn connect(
        host: &F,
        store: Arc<S>,
        domid: DomId,
        devid: u32,
        cfg: FrontConfig,
    ) -> Result<Self, Error> {
        let mut dev = FrontendDevice::open(store, domid, &cfg.device_type, devid)?;
        let backend = dev.backend_id;
        dev.wait_backend(|s| s == XenbusState::InitWait, cfg.timeout)?;
        let max_order = dev
            .read_backend_parse::<u32>("max-ring-page-order")?
            .unwrap_or(0);
        let max_q = dev
            .read_backend_parse::<u32>("multi-queue-max-queues")?
            .unwrap_or(1);
        let be_persist = dev.read_backend_parse::<u32>("feature-persistent")? == Some(1);
        let be_ind = dev
            .read_backend_parse::<usize>("feature-max-indirect-segments")?
            .unwrap_or(0);
        let order = cfg.ring_page_order.min(max_order);
        let nq = cfg.queues.clamp(1, max_q.max(1));
        let persistent = cfg.persistent && be_persist;
        let max_segments = if cfg.indirect && be_ind > MAX_DIRECT_SEGMENTS {
            cfg.max_segments.min(be_ind).max(1)
        } else {
            cfg.max_segments.clamp(1, MAX_DIRECT_SEGMENTS)
        };
        let ind_pages = max_segments.div_ceil(SEGMENTS_PER_INDIRECT_PAGE);
        let ring_pages = 1usize << order;
        let ring_layout = layout(ring_pages * PAGE_SIZE, cfg.protocol)?;
        let entries = ring_layout.nr_ents();
        let nslots = cfg.max_inflight.clamp(1, entries as usize);
        let per_queue = ring_pages + nslots * (max_segments + ind_pages);
        let buf_pfn = per_queue * nq as usize;
        let total = buf_pfn + cfg.buffer_pages + SCRATCH_PAGES;
        let mem = Arc::new(host.create_guest(domid, total)?);
        let mut keys: Vec<(String, String)> = vec![
            ("protocol".into(), cfg.protocol.as_str().into()),
            (
                "feature-persistent".into(),
                u8::from(persistent).to_string(),
            ),
        ];
        if nq > 1 {
            keys.push(("multi-queue-num-queues".into(), nq.to_string()));
        }
        if order > 0 {
            keys.push(("ring-page-order".into(), order.to_string()));
        }
        let mut queues = Vec::new();
        for q in 0..nq as usize {
            let base = q * per_queue;
            let region = Region::new(mem.clone(), base, ring_pages)?;
            let ring = FrontRing::init_with_layout(region, ring_layout)?;
            let prefix = if nq > 1 {
                format!("queue-{q}/")
            } else {
                String::new()
            };
            for i in 0..ring_pages {
                let g = host.grant(domid, base + i, backend, false)?;
                let k = if order > 0 {
                    format!("{prefix}ring-ref{i}")
                } else {
                    format!("{prefix}ring-ref")
                };
                keys.push((k, g.0.to_string()));
            }
            let chan = RingChannel::unbound(host.open_evtchn(domid)?, backend)?;
            keys.push((format!("{prefix}event-channel"), chan.port().0.to_string()));
            let mut slots = Vec::new();
            for s in 0..nslots {
                let data_pfn = base + ring_pages + s * (max_segments + ind_pages);
                let ind_pfn = data_pfn + max_segments;
                let (mut pgrants, mut pind) = (Vec::new(), Vec::new());
                if persistent {
                    for p in 0..max_segments {
                        pgrants.push(host.grant(domid, data_pfn + p, backend, false)?);
                    }
                    for p in 0..ind_pages {
                        pind.push(host.grant(domid, ind_pfn + p, backend, false)?);
                    }
                }
                slots.push(Slot {
                    data_pfn,
                    ind_pfn,
                    pgrants,
                    pind,
                    temp: Vec::new(),
                    tag: 0,
                    len: 0,
                    read: false,
                });
            }
            queues.push(Mutex::new(FrontQueue {
                ring,
                chan,
                slots,
                free: (0..nslots).rev().collect(),
                raw_inflight: 0,
            }));
        }
        let mut buf_grants = Vec::new();
        if persistent {
            for p in 0..cfg.buffer_pages {
                buf_grants.push(host.grant(domid, buf_pfn + p, backend, false)?);
            }
        }
        let bufs = Arc::new(Mutex::new(BufPool {
            first_pfn: buf_pfn,
            used: vec![false; cfg.buffer_pages],
            grants: buf_grants,
        }));
        dev.write_all(&keys)?;
        dev.switch_state(XenbusState::Initialised)?;
        let st = dev.wait_backend(
            |s| s == XenbusState::Connected || s == XenbusState::Closing,
            cfg.timeout,
        )?;
        if st != XenbusState::Connected {
            let why = dev.read_backend("error")?.unwrap_or_default();
            return Err(cfg_err(format!("backend refused the connection: {why}")));
        }
        let sectors = dev
            .read_backend_parse::<u64>("sectors")?
            .ok_or_else(|| cfg_err("no sectors"))?;
        let info = dev.read_backend_parse::<u32>("info")?.unwrap_or(0);
        let sector_size = dev.read_backend_parse::<u32>("sector-size")?.unwrap_or(512);
        dev.switch_state(XenbusState::Connected)?;
        Ok(Blkfront {
            host: host.clone(),
            domid,
            backend,
            mem,
            dev: Mutex::new(dev),
            queues,
            cfg,
            scratch_pfn: total - SCRATCH_PAGES,
            bufs,
            sectors,
            info,
            sector_size,
            persistent,
            max_segments,
            ring_entries: entries,
        })
    }

    /// Queues in use.
    pub fn queues(&self) -> usize {
        self.queues.len()
    }

    /// Our domain's memory.
    pub fn memory(&self) -> &Arc<F::Memory> {
        &self.mem
    }

    /// Page number of scratch page `i` (< [`SCRATCH_PAGES`]).
    pub fn scratch_pfn(&self, i: usize) -> usize {
        self.scratch_pfn + i
    }

    /// Grants one of our pages to the backend (for hand-made requests).
    pub fn grant(&self, pfn: usize, readonly: bool) -> Result<GrantRef, Error> {
        self.host.grant(self.domid, pfn, self.backend, readonly)
    }

    /// Allocates a [`GuestBuf`] of `len` bytes (a non-zero multiple of 512, at most
    /// [`max_segments`](Self::max_segments) pages) from the buffer pages
    /// ([`FrontConfig::buffer_pages`]).
    pub fn alloc_buf(&self, len: usize) -> Result<GuestBuf<F::Memory>, Error> {
        if len == 0 || len % SECTOR_SIZE as usize != 0 {
            return Err(cfg_err("buffer must be a non-zero multiple of 512 bytes"));
        }
        let pages = len.div_ceil(PAGE_SIZE);
        if pages > self.max_segments {
            return Err(cfg_err(format!("{pages} pages > {}", self.max_segments)));
        }
        let mut p = self.bufs.lock();
        let first = (0..(p.used.len() + 1).saturating_sub(pages))
            .find(|&i| p.used[i..i + pages].iter().all(|u| !u))
            .ok_or_else(|| cfg_err(format!("no {pages} free buffer pages")))?;
        p.used[first..first + pages].fill(true);
        let grants = p.grants.get(first..first + pages).unwrap_or(&[]).to_vec();
        Ok(GuestBuf {
            mem: self.mem.clone(),
            pool: self.bufs.clone(),
            first,
            pages,
            len,
            pfn: p.first_pfn + first,
            grants,
        })
    }

    /// Locks queue `q`.
    fn queue(&self, q: usize) -> Result<MutexGuard<'_, FrontQueue<F>>, Error> {
        Ok(self
            .queues
            .get(q)
            .ok_or_else(|| cfg_err("no such queue"))?
            .lock())
    }

    fn build(
        &self,
        q: &mut FrontQueue<F>,
        op: Op,
        sector: u64,
        data: Data<'_>,
        tag: usize,
    ) -> Result<(), Error> {
        let len = match data {
            Data::Copy(b) => b.len(),
            Data::Guest { len, .. } => len,
        };
        let (wire_op, read) = match op {
            Op::Read => (OP_READ, true),
            Op::Write => (OP_WRITE, false),
            Op::WriteFlush => (OP_FLUSH, false),
            Op::Flush => (OP_FLUSH, false),
            Op::Discard { .. } => (OP_DISCARD, false),
        };
        let has_data = matches!(op, Op::Read | Op::Write | Op::WriteFlush);
        if has_data && (len == 0 || len % SECTOR_SIZE as usize != 0) {
            return Err(cfg_err("buffer must be a non-zero multiple of 512 bytes"));
        }
        let nseg = len.div_ceil(PAGE_SIZE);
        if has_data && nseg > self.max_segments {
            return Err(cfg_err(format!("{nseg} segments > {}", self.max_segments)));
        }
        let si = q.free.pop().ok_or_else(|| cfg_err("no free slot"))?;
        let slot = &mut q.slots[si];
        slot.tag = tag;
        // Only copied data is copied back out of the slot's pages.
        slot.len = if has_data && matches!(data, Data::Copy(_)) {
            len
        } else {
            0
        };
        slot.read = read;
        let body_and_op = if has_data {
            let pfn = match data {
                Data::Copy(b) => {
                    if !read {
                        self.mem.write_bytes(slot.data_pfn * PAGE_SIZE, b)?;
                    }
                    slot.data_pfn
                }
                Data::Guest { pfn, .. } => pfn,
            };
            let mut segs = Vec::with_capacity(nseg);
            for i in 0..nseg {
                let bytes = (len - i * PAGE_SIZE).min(PAGE_SIZE);
                let gref = if self.persistent {
                    match data {
                        Data::Copy(_) => slot.pgrants[i],
                        Data::Guest { grants, .. } => grants[i],
                    }
                } else {
                    let g = self.host.grant(self.domid, pfn + i, self.backend, !read)?;
                    slot.temp.push(g);
                    g
                };
                segs.push(Segment {
                    gref,
                    first_sect: 0,
                    last_sect: (bytes / SECTOR_SIZE as usize - 1) as u8,
                });
            }
            if nseg <= MAX_DIRECT_SEGMENTS {
                let mut seg = [Segment::default(); MAX_DIRECT_SEGMENTS];
                seg[..nseg].copy_from_slice(&segs);
                (
                    wire_op,
                    Body::Direct {
                        nr_segments: nseg as u8,
                        seg,
                    },
                )
            } else {
                let sz = size_of::<xen_sys::blkif_request_segment>();
                for (i, s) in segs.iter().enumerate() {
                    self.mem.write_obj(
                        slot.ind_pfn * PAGE_SIZE + i * sz,
                        xen_sys::blkif_request_segment::from(*s),
                    )?;
                }
                let mut grefs = [GrantRef(0); crate::abi::MAX_INDIRECT_PAGES];
                for (p, g) in grefs
                    .iter_mut()
                    .enumerate()
                    .take(nseg.div_ceil(SEGMENTS_PER_INDIRECT_PAGE))
                {
                    *g = if self.persistent {
                        slot.pind[p]
                    } else {
                        let t =
                            self.host
                                .grant(self.domid, slot.ind_pfn + p, self.backend, true)?;
                        slot.temp.push(t);
                        t
                    };
                }
                (
                    OP_INDIRECT,
                    Body::Indirect {
                        indirect_op: if read { OP_READ } else { OP_WRITE },
                        nr_segments: nseg as u16,
                        grefs,
                    },
                )
            }
        } else if let Op::Discard { nr_sectors } = op {
            (
                wire_op,
                Body::Discard {
                    flag: 0,
                    nr_sectors,
                },
            )
        } else {
            (
                wire_op,
                Body::Direct {
                    nr_segments: 0,
                    seg: [Segment::default(); MAX_DIRECT_SEGMENTS],
                },
            )
        };
        let req = Request {
            operation: body_and_op.0,
            id: si as u64,
            sector,
            handle: 0,
            body: body_and_op.1,
        };
        let off = q.ring.next_request_slot()?;
        req.write(q.ring.memory(), off, self.cfg.protocol)?;
        Ok(())
    }

    fn push(&self, q: &mut FrontQueue<F>) -> Result<(), Error> {
        if q.ring.push_requests_and_check_notify() {
            q.chan.notify()?;
        }
        Ok(())
    }

    /// Takes every available response; calls `done(tag, status, slot)` for slot requests,
    /// collects raw ones into `raw`.
    fn reap(
        &self,
        q: &mut FrontQueue<F>,
        raw: &mut Vec<Response>,
        done: &mut dyn FnMut(usize, Status, usize, usize, bool),
    ) -> Result<usize, Error> {
        let mut n = 0;
        loop {
            while let Some(off) = q.ring.take_response_slot()? {
                let rsp = Response::read(q.ring.memory(), off)?;
                n += 1;
                if rsp.id & RAW_ID != 0 {
                    q.raw_inflight = q.raw_inflight.saturating_sub(1);
                    raw.push(rsp);
                    continue;
                }
                let si = usize::try_from(rsp.id)
                    .ok()
                    .filter(|&s| s < q.slots.len() && !q.free.contains(&s))
                    .ok_or_else(|| cfg_err(format!("response with unknown id {}", rsp.id)))?;
                let slot = &mut q.slots[si];
                for g in slot.temp.drain(..) {
                    // Fails (EBUSY) if the backend answered before unmapping.
                    self.host.end_grant(self.domid, g)?;
                }
                done(slot.tag, rsp.status, slot.data_pfn, slot.len, slot.read);
                q.free.push(si);
            }
            if !q.ring.final_check_for_responses()? {
                return Ok(n);
            }
        }
    }

    fn wait(&self, q: &FrontQueue<F>, deadline: Instant) -> Result<(), Error> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(cfg_err("timed out waiting for responses"));
        }
        q.chan.wait(left.min(Duration::from_millis(100)))?;
        Ok(())
    }

    /// Runs a batch on queue `q`: keeps up to the slot count in flight, refilling as
    /// responses arrive; read data lands in each request's `buf`, statuses in `status`.
    pub fn run(&self, q: usize, reqs: &mut [IoReq]) -> Result<(), Error> {
        for r in reqs.iter_mut() {
            r.status = None;
        }
        self.drive(
            q,
            reqs,
            |me, fq, r, i| me.build(fq, r.op, r.sector, Data::Copy(&r.buf), i),
            |me, r, st, pfn, len, read| {
                if read && st == Status::Okay {
                    me.mem.read_bytes(pfn * PAGE_SIZE, &mut r.buf[..len])?;
                }
                r.status = Some(st);
                Ok(())
            },
        )
    }

    /// Runs a batch of zero-copy requests on queue `q`, as [`run`](Self::run) does: the
    /// backend reads into and writes from each request's [`GuestBuf`] directly.
    pub fn run_bufs(&self, q: usize, reqs: &mut [BufReq<'_, F::Memory>]) -> Result<(), Error> {
        for r in reqs.iter_mut() {
            if !Arc::ptr_eq(&r.buf.pool, &self.bufs) {
                return Err(cfg_err("buffer of another frontend"));
            }
            if !matches!(r.op, Op::Read | Op::Write | Op::WriteFlush) {
                return Err(cfg_err(format!("{:?} carries no data", r.op)));
            }
            r.status = None;
        }
        self.drive(
            q,
            reqs,
            |me, fq, r, i| {
                let data = Data::Guest {
                    pfn: r.buf.pfn,
                    len: r.buf.len,
                    grants: &r.buf.grants,
                };
                me.build(fq, r.op, r.sector, data, i)
            },
            |_, r, st, _, _, _| {
                r.status = Some(st);
                Ok(())
            },
        )
    }

    /// The loop of [`run`](Self::run) and [`run_bufs`](Self::run_bufs): `build` puts
    /// request `i` on the ring, `done` takes its answer.
    fn drive<T>(
        &self,
        q: usize,
        reqs: &mut [T],
        build: impl Fn(&Self, &mut FrontQueue<F>, &T, usize) -> Result<(), Error>,
        done: impl Fn(&Self, &mut T, Status, usize, usize, bool) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let n = reqs.len();
        let mut guard = self.queue(q)?;
        let fq = &mut *guard;
        let deadline = Instant::now() + self.cfg.timeout;
        let mut next = 0;
        let mut left = n;
        let mut raw = Vec::new();
        while left > 0 {
            let mut pushed = false;
            while next < n && !fq.free.is_empty() && fq.ring.free_requests() > 0 {
                build(self, fq, &reqs[next], next)?;
                next += 1;
                pushed = true;
            }
            if pushed {
                self.push(fq)?;
            }
            let mut err = None;
            let got = self.reap(fq, &mut raw, &mut |tag, st, pfn, len, read| {
                if let Err(e) = done(self, &mut reqs[tag], st, pfn, len, read) {
                    err.get_or_insert(e);
                }
            })?;
            if let Some(e) = err {
                return Err(e);
            }
            left -= got;
            if got == 0 && left > 0 {
                self.wait(fq, deadline)?;
            }
        }
        Ok(())
    }

    /// Submits `reqs` on queue `q` without waiting (they must fit in the free slots);
    /// tags are their indexes. Collect answers with [`poll`](Self::poll).
    pub fn submit(&self, q: usize, reqs: &[IoReq]) -> Result<(), Error> {
        let mut g = self.queue(q)?;
        for (i, r) in reqs.iter().enumerate() {
            self.build(&mut g, r.op, r.sector, Data::Copy(&r.buf), i)?;
        }
        self.push(&mut g)
    }

    /// Collects answers of [`submit`](Self::submit)ted requests, waiting until at least
    /// one arrives (at most the configured timeout). Returns `(tag, status)` pairs.
    pub fn poll(&self, q: usize) -> Result<Vec<(usize, Status)>, Error> {
        let mut g = self.queue(q)?;
        let deadline = Instant::now() + self.cfg.timeout;
        let mut out = Vec::new();
        let mut raw = Vec::new();
        loop {
            self.reap(&mut g, &mut raw, &mut |tag, st, _, _, _| {
                out.push((tag, st))
            })?;
            if !out.is_empty() {
                return Ok(out);
            }
            self.wait(&g, deadline)?;
        }
    }

    /// Puts a hand-made request on queue `q` (its id gets [`RAW_ID`] set) and waits for
    /// its response.
    pub fn raw(&self, q: usize, mut req: Request) -> Result<Response, Error> {
        self.raw_batch(q, std::slice::from_mut(&mut req))
            .map(|mut v| v.remove(0))
    }

    /// Puts hand-made requests on queue `q` and waits for all their responses (in
    /// completion order).
    pub fn raw_batch(&self, q: usize, reqs: &mut [Request]) -> Result<Vec<Response>, Error> {
        let mut g = self.queue(q)?;
        if reqs.len() > g.ring.free_requests() as usize {
            return Err(cfg_err("batch larger than the free ring slots"));
        }
        for r in reqs.iter_mut() {
            r.id |= RAW_ID;
            let off = g.ring.next_request_slot()?;
            r.write(g.ring.memory(), off, self.cfg.protocol)?;
            g.raw_inflight += 1;
        }
        self.push(&mut g)?;
        let deadline = Instant::now() + self.cfg.timeout;
        let mut raw = Vec::new();
        while raw.len() < reqs.len() {
            let n = self.reap(&mut g, &mut raw, &mut |_, _, _, _, _| {})?;
            if n == 0 {
                self.wait(&g, deadline)?;
            }
        }
        Ok(raw)
    }

    /// Writes raw bytes over the ring's producer index, as a buggy or hostile frontend
    /// might (then notifies).
    pub fn corrupt_req_prod(&self, q: usize, value: u32) -> Result<(), Error> {
        let g = self.queue(q)?;
        g.ring.memory().write_obj(0, value)?;
        g.chan.notify()
    }

    /// The guest vanishes: its domain is destroyed without closing anything.
    pub fn vanish(&self) {
        self.host.destroy_guest(self.domid);
    }

    /// Closes the device (Closing, then Closed once the backend is Closed).
    pub fn close(&self) -> Result<(), Error> {
        let mut dev = self.dev.lock();
        dev.switch_state(XenbusState::Closing)?;
        dev.wait_backend(
            |s| s >= XenbusState::Closing && s <= XenbusState::Closed,
            self.cfg.timeout,
        )?;
        dev.switch_state(XenbusState::Closed)?;
        dev.wait_backend(|s| s == XenbusState::Closed, self.cfg.timeout)?;
        Ok(())
    }
}

/// Fills `buf` (one block) with its sector address and a generation, the pattern the
/// verifying workload checks.
pub fn stamp(buf: &mut [u8], sector: u64, generation: u64) {
    for (i, chunk) in buf.chunks_mut(16).enumerate() {
        let s = sector + (i * 16 / SECTOR_SIZE as usize) as u64;
        chunk[..8].copy_from_slice(&s.to_le_bytes());
        chunk[8..16].copy_from_slice(&generation.to_le_bytes());
    }
}

/// Reads back the `(sector, generation)` stamped at 512-byte sector `i` of `buf`.
pub fn read_stamp(buf: &[u8], i: usize) -> (u64, u64) {
    let o = i * SECTOR_SIZE as usize;
    (
        u64::from_le_bytes(buf[o..o + 8].try_into().unwrap_or_default()),
        u64::from_le_bytes(buf[o + 8..o + 16].try_into().unwrap_or_default()),
    )
}
