//! Validation and execution of requests, over abstract segment memory.
//!
//! Every field a frontend controls is checked before any I/O, following Linux's blkback
//! (`dispatch_rw_block_io`, `xen_vbd_translate`, `dispatch_discard_io`): an operation we
//! do not support gets `BLKIF_RSP_EOPNOTSUPP`, everything else that is wrong
//! (segment count, sector bounds inside a page, a range past the end of the disk, a write
//! to a read-only disk, a grant that does not map) gets `BLKIF_RSP_ERROR`.

use xen_types::mem::{SharedMemory, SharedMemoryExt};
use xen_types::GrantRef;

use crate::abi::{
    Body, Request, Segment, Status, MAX_DIRECT_SEGMENTS, MAX_INDIRECT_PAGES, SECTORS_PER_PAGE,
    SECTOR_SIZE, SEGMENTS_PER_INDIRECT_PAGE,
};
use crate::disk::{Disk, IoSeg};

const OP_READ: u8 = xen_sys::BLKIF_OP_READ as u8;
const OP_WRITE: u8 = xen_sys::BLKIF_OP_WRITE as u8;
const OP_FLUSH: u8 = xen_sys::BLKIF_OP_FLUSH_DISKCACHE as u8;
const OP_DISCARD: u8 = xen_sys::BLKIF_OP_DISCARD as u8;
const OP_INDIRECT: u8 = xen_sys::BLKIF_OP_INDIRECT as u8;
const DISCARD_SECURE: u8 = xen_sys::BLKIF_DISCARD_SECURE as u8;

/// What the device accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Disk size in 512-byte sectors.
    pub sectors: u64,
    /// Writes, flushes and discards are refused.
    pub readonly: bool,
    /// `feature-max-indirect-segments` (0: no indirect requests).
    pub max_indirect_segments: u32,
    /// `feature-flush-cache`.
    pub flush: bool,
    /// `feature-discard`.
    pub discard: bool,
    /// `discard-secure`.
    pub discard_secure: bool,
}

/// What a valid request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Read into the segments.
    Read,
    /// Write the segments; with `flush`, make them durable before answering
    /// (`BLKIF_OP_FLUSH_DISKCACHE` with data).
    Write {
        /// Flush after writing.
        flush: bool,
    },
    /// Make completed writes durable.
    Flush,
    /// Discard sectors.
    Discard {
        /// Sectors.
        nr_sectors: u64,
        /// Secure erase.
        secure: bool,
    },
}

impl Kind {
    /// True when the backend writes into the frontend's pages.
    pub fn writes_pages(self) -> bool {
        matches!(self, Kind::Read)
    }
}

/// A request that passed the header checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validated {
    /// Echoed in the response.
    pub id: u64,
    /// Operation echoed in the response (for indirect requests, the real one, as Linux does).
    pub operation: u8,
    /// What to do.
    pub kind: Kind,
    /// First sector.
    pub sector: u64,
}

/// Outcome of the header checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Ready to map the segments (left in the caller's vector; may be empty).
    Ready(Validated),
    /// An indirect request: map `grefs` read-only, then call [`read_indirect_segments`] and
    /// [`check_segments`].
    Indirect {
        /// The request.
        v: Validated,
        /// Segments in the indirect pages.
        nr_segments: usize,
        /// The indirect pages' grants actually used.
        grefs: [GrantRef; MAX_INDIRECT_PAGES],
        /// How many of `grefs` are used.
        pages: usize,
    },
}

/// A request that failed: the response to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// Operation to echo.
    pub operation: u8,
    /// Status to send.
    pub status: Status,
}

fn reject(operation: u8, status: Status) -> Rejected {
    Rejected { operation, status }
}

/// Checks a request's header and, for direct requests, its segments (copied into `segs`).
pub fn check_request(
    req: &Request,
    lim: &Limits,
    segs: &mut Vec<Segment>,
) -> Result<Check, Rejected> {
    segs.clear();
    let op = req.operation;
    match (op, req.body) {
        (OP_READ | OP_WRITE | OP_FLUSH, Body::Direct { nr_segments, seg }) => {
            let n = usize::from(nr_segments);
            let kind = match op {
                OP_READ => Kind::Read,
                OP_WRITE => Kind::Write { flush: false },
                _ if !lim.flush => return Err(reject(op, Status::NotSupported)),
                _ if n == 0 => Kind::Flush,
                _ => Kind::Write { flush: true },
            };
            if n > MAX_DIRECT_SEGMENTS || (n == 0 && kind != Kind::Flush) {
                return Err(reject(op, Status::Error));
            }
            let v = Validated {
                id: req.id,
                operation: op,
                kind,
                sector: req.sector,
            };
            segs.extend_from_slice(&seg[..n]);
            check_segments(&v, segs, lim)?;
            Ok(Check::Ready(v))
        }
        (
            OP_INDIRECT,
            Body::Indirect {
                indirect_op,
                nr_segments,
                grefs,
            },
        ) => {
            let kind = match indirect_op {
                OP_READ => Kind::Read,
                OP_WRITE => Kind::Write { flush: false },
                _ => return Err(reject(indirect_op, Status::Error)),
            };
            if lim.max_indirect_segments == 0 {
                return Err(reject(op, Status::NotSupported));
            }
            let n = usize::from(nr_segments);
            if n == 0 || n > lim.max_indirect_segments as usize {
                return Err(reject(indirect_op, Status::Error));
            }
            let pages = n.div_ceil(SEGMENTS_PER_INDIRECT_PAGE);
            if pages > MAX_INDIRECT_PAGES {
                return Err(reject(indirect_op, Status::Error));
            }
            if kind != Kind::Read && lim.readonly {
                return Err(reject(indirect_op, Status::Error));
            }
            Ok(Check::Indirect {
                v: Validated {
                    id: req.id,
                    operation: indirect_op,
                    kind,
                    sector: req.sector,
                },
                nr_segments: n,
                grefs,
                pages,
            })
        }
        (OP_DISCARD, Body::Discard { flag, nr_sectors }) => {
            let secure = flag & DISCARD_SECURE != 0;
            if !lim.discard || (secure && !lim.discard_secure) {
                return Err(reject(op, Status::NotSupported));
            }
            if lim.readonly
                || req
                    .sector
                    .checked_add(nr_sectors)
                    .is_none_or(|end| end > lim.sectors)
            {
                return Err(reject(op, Status::Error));
            }
            Ok(Check::Ready(Validated {
                id: req.id,
                operation: op,
                kind: Kind::Discard { nr_sectors, secure },
                sector: req.sector,
            }))
        }
        _ => Err(reject(op, Status::NotSupported)),
    }
}

/// Copies `nr_segments` descriptors out of mapped indirect pages (one snapshot).
pub fn read_indirect_segments<M: SharedMemory + ?Sized>(
    pages: &M,
    nr_segments: usize,
    segs: &mut Vec<Segment>,
) -> Result<(), Status> {
    segs.clear();
    let sz = size_of::<xen_sys::blkif_request_segment>();
    for i in 0..nr_segments {
        let s: xen_sys::blkif_request_segment =
            pages.read_obj(i * sz).map_err(|_| Status::Error)?;
        segs.push(s.into());
    }
    Ok(())
}

/// Checks segments against a page and the disk: `first_sect <= last_sect < 8`, the whole
/// range inside the disk, no write to a read-only disk. Returns the sectors covered.
pub fn check_segments(v: &Validated, segs: &[Segment], lim: &Limits) -> Result<u64, Rejected> {
    let err = reject(v.operation, Status::Error);
    if v.kind != Kind::Read && lim.readonly {
        return Err(err);
    }
    let mut total: u64 = 0;
    for s in segs {
        if s.first_sect > s.last_sect || s.last_sect >= SECTORS_PER_PAGE {
            return Err(err);
        }
        total += u64::from(s.last_sect - s.first_sect) + 1;
    }
    if v.sector
        .checked_add(total)
        .is_none_or(|end| end > lim.sectors)
    {
        return Err(err);
    }
    Ok(total)
}

/// Where segment `i`'s page is: a mapping and the page's byte offset in it.
pub trait SegmentPages {
    /// Segment `i`'s page.
    fn page(&self, i: usize) -> (&dyn SharedMemory, usize);
}

/// Performs a validated request on `disk`; `segs` and `pages` describe its data.
/// Returns the response status. `iov` is a scratch buffer reused across calls.
pub fn execute<P: SegmentPages + ?Sized>(
    v: &Validated,
    segs: &[Segment],
    pages: &P,
    disk: &Disk,
    iov: &mut Vec<libc::iovec>,
) -> Status {
    let offset = v.sector * SECTOR_SIZE;
    let res = match v.kind {
        Kind::Read | Kind::Write { .. } => {
            let mut io_local: Vec<IoSeg<'_>> = Vec::with_capacity(segs.len());
            for (i, s) in segs.iter().enumerate() {
                let (mem, base) = pages.page(i);
                io_local.push(IoSeg {
                    mem,
                    offset: base + usize::from(s.first_sect) * SECTOR_SIZE as usize,
                    len: usize::from(s.last_sect - s.first_sect + 1) * SECTOR_SIZE as usize,
                });
            }
            match v.kind {
                Kind::Read => disk.read_at(offset, &io_local, iov),
                Kind::Write { flush } => disk.write_at(offset, &io_local, iov).and_then(|()| {
                    if flush {
                        disk.flush()
                    } else {
                        Ok(())
                    }
                }),
                _ => unreachable!(),
            }
        }
        Kind::Flush => disk.flush(),
        Kind::Discard { nr_sectors, secure } => {
            disk.discard(offset, nr_sectors * SECTOR_SIZE, secure)
        }
    };
    match res {
        Ok(()) => Status::Okay,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Status::NotSupported,
        Err(e) => {
            tracing::warn!("I/O error at sector {}: {e}", v.sector);
            Status::Error
        }
    }
}
