//! Validation and execution of requests, over abstract segment memory.
//!
//! Every field a frontend controls is checked before any I/O, following Linux's blkback
//! (`dispatch_rw_block_io`, `xen_vbd_translate`, `dispatch_discard_io`): an operation we
//! do not support gets `BLKIF_RSP_EOPNOTSUPP`, everything else that is wrong
//! (segment count, sector bounds inside a page, a range past the end of the disk, a write
//! to a read-only disk, a grant that does not map) gets `BLKIF_RSP_ERROR`.

use std::time::Instant;

use xen_types::mem::{SharedMemory, SharedMemoryExt};
use xen_types::GrantRef;

use crate::abi::{
    Body, Request, Segment, Status, MAX_DIRECT_SEGMENTS, MAX_INDIRECT_PAGES, SECTORS_PER_PAGE,
    SECTOR_SIZE, SEGMENTS_PER_INDIRECT_PAGE,
};
use crate::disk::{Disk, IoOp, IoSeg};

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
    // An empty flush carries no range: Linux's blkfront sends whatever `blk_rq_pos` of
    // the flush request is, often `(sector_t)-1`, and the kernel's blkback and QEMU check
    // the range only when there are sectors.
    if total > 0
        && v.sector
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
    execute_timed(v, segs, pages, disk, iov, Instant::now()).0
}

/// [`execute`] of a request that started at `started` (a clock read the caller already
/// made: where the clock is a system call, as in a Xen PV dom0 on the `xen` clocksource,
/// a ring thread running requests back to back reads it once per request); also returns
/// when it ended.
pub fn execute_timed<P: SegmentPages + ?Sized>(
    v: &Validated,
    segs: &[Segment],
    pages: &P,
    disk: &Disk,
    iov: &mut Vec<libc::iovec>,
    started: Instant,
) -> (Status, Instant) {
    // Only requests with a range use the offset; it fits (the range is inside the disk).
    // An empty flush's sector is arbitrary (Linux sends `(sector_t)-1`).
    let offset = v.sector.wrapping_mul(SECTOR_SIZE);
    let res = match v.kind {
        Kind::Read | Kind::Write { .. } => {
            let io = segs.iter().enumerate().map(|(i, s)| {
                let (mem, base) = pages.page(i);
                IoSeg {
                    mem,
                    offset: base + usize::from(s.first_sect) * SECTOR_SIZE as usize,
                    len: usize::from(s.last_sect - s.first_sect + 1) * SECTOR_SIZE as usize,
                }
            });
            match v.kind {
                Kind::Read => disk.read_segs(offset, io, iov),
                Kind::Write { flush } => disk.write_segs(offset, io, iov).and_then(|()| {
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
    let op = match v.kind {
        Kind::Read | Kind::Write { .. } => {
            let bytes = segs
                .iter()
                .map(|s| u64::from(s.last_sect - s.first_sect + 1) * SECTOR_SIZE)
                .sum();
            match v.kind {
                Kind::Write { flush } => IoOp::Write(bytes, flush),
                _ => IoOp::Read(bytes),
            }
        }
        Kind::Flush => IoOp::Flush,
        Kind::Discard { .. } => IoOp::Discard,
    };
    let ended = Instant::now();
    disk.io()
        .record_timed(op, res.is_ok(), ended.saturating_duration_since(started));
    let status = match res {
        Ok(()) => Status::Okay,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Status::NotSupported,
        Err(e) => {
            tracing::warn!("I/O error at sector {}: {e}", v.sector);
            Status::Error
        }
    };
    (status, ended)
}

#[cfg(test)]
mod tests {
    use xen_types::mem::{PageBuf, SharedMemoryExt};
    use xen_types::PAGE_SIZE;

    use super::*;

    const LIM: Limits = Limits {
        sectors: 64,
        readonly: false,
        max_indirect_segments: 16,
        flush: true,
        discard: true,
        discard_secure: false,
    };

    fn direct(op: u32, sector: u64, segs: &[(u8, u8)]) -> Request {
        let mut seg = [Segment::default(); MAX_DIRECT_SEGMENTS];
        for (i, (f, l)) in segs.iter().enumerate() {
            seg[i] = Segment {
                gref: GrantRef(i as u32),
                first_sect: *f,
                last_sect: *l,
            };
        }
        Request {
            operation: op as u8,
            id: 77,
            sector,
            handle: 0,
            body: Body::Direct {
                nr_segments: segs.len() as u8,
                seg,
            },
        }
    }

    fn status(r: &Request, lim: &Limits) -> Result<Check, Status> {
        check_request(r, lim, &mut Vec::new()).map_err(|r| r.status)
    }

    #[test]
    fn header_and_segment_checks() {
        use xen_sys::*;
        assert!(matches!(
            status(&direct(BLKIF_OP_READ, 0, &[(0, 7), (0, 7)]), &LIM),
            Ok(Check::Ready(_))
        ));
        assert_eq!(
            status(&direct(BLKIF_OP_READ, 0, &[]), &LIM),
            Err(Status::Error)
        );
        assert_eq!(
            status(&direct(BLKIF_OP_READ, 0, &[(3, 2)]), &LIM),
            Err(Status::Error)
        );
        assert_eq!(
            status(&direct(BLKIF_OP_READ, 0, &[(0, 8)]), &LIM),
            Err(Status::Error)
        );
        // 64 sectors: 56 + 8 fits, 57 + 8 does not.
        assert!(status(&direct(BLKIF_OP_WRITE, 56, &[(0, 7)]), &LIM).is_ok());
        assert_eq!(
            status(&direct(BLKIF_OP_WRITE, 57, &[(0, 7)]), &LIM),
            Err(Status::Error)
        );
        assert_eq!(
            status(&direct(BLKIF_OP_WRITE, u64::MAX, &[(0, 0)]), &LIM),
            Err(Status::Error)
        );
        let ro = Limits {
            readonly: true,
            ..LIM
        };
        assert_eq!(
            status(&direct(BLKIF_OP_WRITE, 0, &[(0, 7)]), &ro),
            Err(Status::Error)
        );
        assert!(status(&direct(BLKIF_OP_READ, 0, &[(0, 7)]), &ro).is_ok());
        assert_eq!(
            status(&direct(BLKIF_OP_WRITE_BARRIER, 0, &[(0, 7)]), &LIM),
            Err(Status::NotSupported)
        );
        assert_eq!(
            status(&direct(200, 0, &[(0, 7)]), &LIM),
            Err(Status::NotSupported)
        );
        let noflush = Limits {
            flush: false,
            ..LIM
        };
        assert_eq!(
            status(&direct(BLKIF_OP_FLUSH_DISKCACHE, 0, &[]), &noflush),
            Err(Status::NotSupported)
        );
        match status(&direct(BLKIF_OP_FLUSH_DISKCACHE, 0, &[]), &LIM) {
            Ok(Check::Ready(v)) => assert_eq!(v.kind, Kind::Flush),
            other => panic!("{other:?}"),
        }
        match status(&direct(BLKIF_OP_FLUSH_DISKCACHE, 0, &[(0, 7)]), &LIM) {
            Ok(Check::Ready(v)) => assert_eq!(v.kind, Kind::Write { flush: true }),
            other => panic!("{other:?}"),
        }
        // Linux's blkfront sends empty flushes at sector (sector_t)-1: no range to check.
        match status(&direct(BLKIF_OP_FLUSH_DISKCACHE, u64::MAX, &[]), &LIM) {
            Ok(Check::Ready(v)) => assert_eq!(v.kind, Kind::Flush),
            other => panic!("{other:?}"),
        }
        // A flush with data is still range-checked.
        assert_eq!(
            status(&direct(BLKIF_OP_FLUSH_DISKCACHE, u64::MAX, &[(0, 7)]), &LIM),
            Err(Status::Error)
        );
    }

    #[test]
    fn indirect_checks_and_echoed_operation() {
        let ind = |op: u8, n: u16| Request {
            operation: OP_INDIRECT,
            id: 5,
            sector: 0,
            handle: 0,
            body: Body::Indirect {
                indirect_op: op,
                nr_segments: n,
                grefs: [GrantRef(1); MAX_INDIRECT_PAGES],
            },
        };
        match status(&ind(OP_WRITE, 16), &LIM) {
            Ok(Check::Indirect {
                v,
                nr_segments,
                pages,
                ..
            }) => {
                assert_eq!((v.operation, nr_segments, pages), (OP_WRITE, 16, 1));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(status(&ind(OP_WRITE, 17), &LIM), Err(Status::Error));
        assert_eq!(status(&ind(OP_DISCARD, 1), &LIM), Err(Status::Error));
        let none = Limits {
            max_indirect_segments: 0,
            ..LIM
        };
        assert_eq!(status(&ind(OP_READ, 1), &none), Err(Status::NotSupported));
        let rej = check_request(&ind(OP_READ, 0), &LIM, &mut Vec::new()).unwrap_err();
        assert_eq!(rej.operation, OP_READ, "Linux echoes the inner operation");
        // Segment descriptors are read from the indirect page and then checked.
        let page = PageBuf::new(1).unwrap();
        for i in 0..3u32 {
            page.write_obj(
                i as usize * 8,
                xen_sys::blkif_request_segment {
                    gref: 40 + i,
                    first_sect: 0,
                    last_sect: 7,
                },
            )
            .unwrap();
        }
        let mut segs = Vec::new();
        read_indirect_segments(&page, 3, &mut segs).unwrap();
        assert_eq!(segs[2].gref, GrantRef(42));
        let v = Validated {
            id: 1,
            operation: OP_READ,
            kind: Kind::Read,
            sector: 40,
        };
        assert_eq!(check_segments(&v, &segs, &LIM), Ok(24));
        let v = Validated { sector: 41, ..v };
        assert!(check_segments(&v, &segs, &LIM).is_err());
    }

    #[test]
    fn discard_checks() {
        let d = |flag: u8, sector: u64, n: u64| Request {
            operation: OP_DISCARD,
            id: 1,
            sector,
            handle: 0,
            body: Body::Discard {
                flag,
                nr_sectors: n,
            },
        };
        assert!(status(&d(0, 0, 64), &LIM).is_ok());
        assert_eq!(status(&d(0, 1, 64), &LIM), Err(Status::Error));
        assert_eq!(
            status(&d(DISCARD_SECURE, 0, 8), &LIM),
            Err(Status::NotSupported)
        );
        let off = Limits {
            discard: false,
            ..LIM
        };
        assert_eq!(status(&d(0, 0, 8), &off), Err(Status::NotSupported));
    }

    struct Pages(Vec<PageBuf>);
    impl SegmentPages for Pages {
        fn page(&self, i: usize) -> (&dyn SharedMemory, usize) {
            (&self.0[i], 0)
        }
    }

    #[test]
    fn execute_moves_exactly_the_described_sectors() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(64 * 512).unwrap();
        let disk = Disk::from_file(f, false).unwrap();
        let pages = Pages(vec![PageBuf::new(1).unwrap(), PageBuf::new(1).unwrap()]);
        pages.0[0].fill(0, PAGE_SIZE, 0x11).unwrap();
        pages.0[1].fill(0, PAGE_SIZE, 0x22).unwrap();
        // Sectors 2..=3 of page 0, then 0..=0 of page 1: 3 sectors written at sector 10.
        let segs = [
            Segment {
                gref: GrantRef(0),
                first_sect: 2,
                last_sect: 3,
            },
            Segment {
                gref: GrantRef(1),
                first_sect: 0,
                last_sect: 0,
            },
        ];
        let w = Validated {
            id: 1,
            operation: OP_WRITE,
            kind: Kind::Write { flush: true },
            sector: 10,
        };
        let mut iov = Vec::new();
        assert_eq!(execute(&w, &segs, &pages, &disk, &mut iov), Status::Okay);
        let out = Pages(vec![PageBuf::new(1).unwrap()]);
        let r = Validated {
            id: 2,
            operation: OP_READ,
            kind: Kind::Read,
            sector: 9,
        };
        let one = [Segment {
            gref: GrantRef(0),
            first_sect: 0,
            last_sect: 4,
        }];
        assert_eq!(execute(&r, &one, &out, &disk, &mut iov), Status::Okay);
        let mut b = vec![0u8; 5 * 512];
        out.0[0].read_bytes(0, &mut b).unwrap();
        assert!(b[..512].iter().all(|&x| x == 0));
        assert!(b[512..1536].iter().all(|&x| x == 0x11));
        assert!(b[1536..2048].iter().all(|&x| x == 0x22));
        assert!(b[2048..].iter().all(|&x| x == 0));
        // A read into a read-only mapping fails cleanly.
        struct Ro(PageBuf);
        // SAFETY: forwards to a PageBuf, reporting it read-only.
        unsafe impl SharedMemory for Ro {
            fn as_ptr(&self) -> *mut u8 {
                self.0.as_ptr()
            }
            fn len(&self) -> usize {
                self.0.len()
            }
            fn writable(&self) -> bool {
                false
            }
        }
        struct RoPages(Ro);
        impl SegmentPages for RoPages {
            fn page(&self, _i: usize) -> (&dyn SharedMemory, usize) {
                (&self.0, 0)
            }
        }
        let ro = RoPages(Ro(PageBuf::new(1).unwrap()));
        assert_eq!(execute(&r, &one, &ro, &disk, &mut iov), Status::Error);
        // Discard punches a hole.
        let d = Validated {
            id: 3,
            operation: OP_DISCARD,
            kind: Kind::Discard {
                nr_sectors: 8,
                secure: false,
            },
            sector: 8,
        };
        assert_eq!(execute(&d, &[], &out, &disk, &mut iov), Status::Okay);
        // An empty flush at Linux's sector (sector_t)-1 just flushes.
        let f = Validated {
            id: 4,
            operation: xen_sys::BLKIF_OP_FLUSH_DISKCACHE as u8,
            kind: Kind::Flush,
            sector: u64::MAX,
        };
        assert_eq!(execute(&f, &[], &out, &disk, &mut iov), Status::Okay);
        let s = Validated {
            kind: Kind::Discard {
                nr_sectors: 8,
                secure: true,
            },
            ..d
        };
        assert_eq!(
            execute(&s, &[], &out, &disk, &mut iov),
            Status::NotSupported
        );
    }
}
