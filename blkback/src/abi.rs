//! The blkif wire format (`xen/io/blkif.h`) in its three x86 ABIs.
//!
//! A 64-bit backend serves frontends of either word size: the `protocol` key names the
//! layout. `x86_64-abi` (and the native layout on x86_64) is `xen_sys::blkif_request`: the
//! 64-bit `id` is 8-byte aligned, so a ring entry is 112 bytes. `x86_32-abi` is the i386
//! layout (Linux's `blkif_x86_32_request`, QEMU's `#pragma pack(4)` structs): `id` at
//! offset 4, a ring entry of 108 bytes. Responses have the same field offsets in both
//! (`id` 0, `operation` 8, `status` 10), only the ring stride differs.

use xen_types::mem::{MemError, Pod, SharedMemory, SharedMemoryExt};
use xen_types::GrantRef;

use crate::Error;

/// Segments in a direct request (`BLKIF_MAX_SEGMENTS_PER_REQUEST`).
pub const MAX_DIRECT_SEGMENTS: usize = xen_sys::BLKIF_MAX_SEGMENTS_PER_REQUEST as usize;
/// Indirect pages in one indirect request (`BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`).
pub const MAX_INDIRECT_PAGES: usize = xen_sys::BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST as usize;
/// Segment descriptors per indirect page.
pub const SEGMENTS_PER_INDIRECT_PAGE: usize =
    xen_types::PAGE_SIZE / size_of::<xen_sys::blkif_request_segment>();
/// blkif sectors are always 512 bytes, whatever the disk's `sector-size`.
pub const SECTOR_SIZE: u64 = 512;
/// blkif sectors in a page.
pub const SECTORS_PER_PAGE: u8 = (xen_types::PAGE_SIZE / SECTOR_SIZE as usize) as u8;

/// The request layout a frontend uses (`protocol` key; `XEN_IO_PROTO_ABI_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// The backend's own layout (x86_64 here).
    Native,
    /// 32-bit x86 guests.
    X86_32,
    /// 64-bit x86 guests.
    X86_64,
}

fn proto_str(c: &'static [u8]) -> &'static str {
    // The constants are NUL-terminated ASCII from the header.
    std::str::from_utf8(c.strip_suffix(b"\0").unwrap_or(c)).unwrap_or("")
}

impl Protocol {
    /// Parses a `protocol` node; a missing node means [`Protocol::Native`].
    pub fn from_node(value: Option<&str>) -> Result<Protocol, Error> {
        let Some(v) = value else {
            return Ok(Protocol::Native);
        };
        let v = v.trim_end_matches('\0');
        if v == proto_str(xen_sys::XEN_IO_PROTO_ABI_X86_32) {
            Ok(Protocol::X86_32)
        } else if v == proto_str(xen_sys::XEN_IO_PROTO_ABI_X86_64) {
            Ok(Protocol::X86_64)
        } else if v == proto_str(xen_sys::XEN_IO_PROTO_ABI_NATIVE) {
            Ok(Protocol::Native)
        } else {
            Err(Error::Protocol(v.into()))
        }
    }

    /// The `protocol` value a frontend writes for this layout.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Native => proto_str(xen_sys::XEN_IO_PROTO_ABI_NATIVE),
            Protocol::X86_32 => proto_str(xen_sys::XEN_IO_PROTO_ABI_X86_32),
            Protocol::X86_64 => proto_str(xen_sys::XEN_IO_PROTO_ABI_X86_64),
        }
    }

    /// Alignment of a ring entry (4 for the packed i386 layout).
    pub fn entry_align(self) -> usize {
        match self {
            Protocol::Native => align_of::<xen_sys::blkif_sring_entry>(),
            Protocol::X86_32 => align_of::<X86_32Request>(),
            Protocol::X86_64 => align_of::<X86_64Request>(),
        }
    }

    /// Bytes per ring entry (the union of request and response).
    pub fn entry_size(self) -> usize {
        match self {
            Protocol::Native => size_of::<xen_sys::blkif_sring_entry>(),
            Protocol::X86_32 => size_of::<X86_32Request>(),
            Protocol::X86_64 => size_of::<X86_64Request>(),
        }
    }
}

/// i386 `blkif_request` (read/write/flush): `#pragma pack(4)`.
#[repr(C, packed(4))]
#[derive(Debug, Default, Clone, Copy)]
pub struct X86_32Request {
    /// `BLKIF_OP_*`.
    pub operation: u8,
    /// Segments used.
    pub nr_segments: u8,
    /// Virtual device handle.
    pub handle: u16,
    /// Echoed in the response.
    pub id: u64,
    /// First 512-byte sector.
    pub sector_number: u64,
    /// Segments.
    pub seg: [xen_sys::blkif_request_segment; MAX_DIRECT_SEGMENTS],
}

/// i386 `blkif_request_discard`.
#[repr(C, packed(4))]
#[derive(Debug, Default, Clone, Copy)]
pub struct X86_32RequestDiscard {
    /// `BLKIF_OP_DISCARD`.
    pub operation: u8,
    /// `BLKIF_DISCARD_SECURE` or 0.
    pub flag: u8,
    /// Virtual device handle.
    pub handle: u16,
    /// Echoed in the response.
    pub id: u64,
    /// First sector.
    pub sector_number: u64,
    /// Sectors to discard.
    pub nr_sectors: u64,
}

/// i386 `blkif_request_indirect` (Linux pads it to 64 bytes).
#[repr(C, packed(4))]
#[derive(Debug, Default, Clone, Copy)]
pub struct X86_32RequestIndirect {
    /// `BLKIF_OP_INDIRECT`.
    pub operation: u8,
    /// `BLKIF_OP_READ` or `BLKIF_OP_WRITE`.
    pub indirect_op: u8,
    /// Segments in the indirect pages.
    pub nr_segments: u16,
    /// Echoed in the response.
    pub id: u64,
    /// First sector.
    pub sector_number: u64,
    /// Virtual device handle.
    pub handle: u16,
    /// Padding.
    pub _pad1: u16,
    /// Grants of the pages holding the segment descriptors.
    pub indirect_grefs: [u32; MAX_INDIRECT_PAGES],
    /// Padding.
    pub _pad2: u64,
}

/// x86_64 request: the 64-bit layout (8-byte aligned `id`).
pub type X86_64Request = xen_sys::blkif_request;

// SAFETY: packed structs of integers and arrays of `blkif_request_segment` (integers): every
// bit pattern is valid.
unsafe impl Pod for X86_32Request {}
// SAFETY: as above.
unsafe impl Pod for X86_32RequestDiscard {}
// SAFETY: as above.
unsafe impl Pod for X86_32RequestIndirect {}

/// One data segment: a granted page and the 512-byte sectors of it used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    /// Grant of the page.
    pub gref: GrantRef,
    /// First sector in the page (0..=7).
    pub first_sect: u8,
    /// Last sector in the page (first..=7).
    pub last_sect: u8,
}

impl From<xen_sys::blkif_request_segment> for Segment {
    fn from(s: xen_sys::blkif_request_segment) -> Segment {
        Segment {
            gref: GrantRef(s.gref),
            first_sect: s.first_sect,
            last_sect: s.last_sect,
        }
    }
}

impl From<Segment> for xen_sys::blkif_request_segment {
    fn from(s: Segment) -> Self {
        xen_sys::blkif_request_segment {
            gref: s.gref.0,
            first_sect: s.first_sect,
            last_sect: s.last_sect,
        }
    }
}

/// The operation-specific part of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Read, write, flush, barrier and unknown operations: direct segments.
    Direct {
        /// Segments the frontend says it uses (not yet validated).
        nr_segments: u8,
        /// The segment array.
        seg: [Segment; MAX_DIRECT_SEGMENTS],
    },
    /// `BLKIF_OP_INDIRECT`.
    Indirect {
        /// The real operation.
        indirect_op: u8,
        /// Segments in the indirect pages (not yet validated).
        nr_segments: u16,
        /// Grants of the indirect pages.
        grefs: [GrantRef; MAX_INDIRECT_PAGES],
    },
    /// `BLKIF_OP_DISCARD`.
    Discard {
        /// `BLKIF_DISCARD_SECURE` or 0.
        flag: u8,
        /// Sectors to discard.
        nr_sectors: u64,
    },
}

/// A request copied out of the ring (one snapshot: later changes by the frontend are not
/// seen), in a layout-independent form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// `BLKIF_OP_*` as sent.
    pub operation: u8,
    /// Echoed in the response.
    pub id: u64,
    /// First 512-byte sector.
    pub sector: u64,
    /// Virtual device handle.
    pub handle: u16,
    /// Operation-specific part.
    pub body: Body,
}

const OP_INDIRECT: u8 = xen_sys::BLKIF_OP_INDIRECT as u8;
const OP_DISCARD: u8 = xen_sys::BLKIF_OP_DISCARD as u8;

fn segs(
    s: [xen_sys::blkif_request_segment; MAX_DIRECT_SEGMENTS],
) -> [Segment; MAX_DIRECT_SEGMENTS] {
    s.map(Segment::from)
}

fn grefs(g: [u32; MAX_INDIRECT_PAGES]) -> [GrantRef; MAX_INDIRECT_PAGES] {
    g.map(GrantRef)
}

impl Request {
    /// Reads the request at byte `offset` of `mem` in layout `proto`.
    pub fn read<M: SharedMemory + ?Sized>(
        mem: &M,
        offset: usize,
        proto: Protocol,
    ) -> Result<Request, MemError> {
        let op: u8 = mem.read_obj(offset)?;
        Ok(match proto {
            Protocol::Native | Protocol::X86_64 => match op {
                OP_INDIRECT => {
                    let r: xen_sys::blkif_request_indirect = mem.read_obj(offset)?;
                    Request {
                        operation: op,
                        id: r.id,
                        sector: r.sector_number,
                        handle: r.handle,
                        body: Body::Indirect {
                            indirect_op: r.indirect_op,
                            nr_segments: r.nr_segments,
                            grefs: grefs(r.indirect_grefs),
                        },
                    }
                }
                OP_DISCARD => {
                    let r: xen_sys::blkif_request_discard = mem.read_obj(offset)?;
                    Request {
                        operation: op,
                        id: r.id,
                        sector: r.sector_number,
                        handle: r.handle,
                        body: Body::Discard {
                            flag: r.flag,
                            nr_sectors: r.nr_sectors,
                        },
                    }
                }
                _ => {
                    let r: xen_sys::blkif_request = mem.read_obj(offset)?;
                    Request {
                        operation: op,
                        id: r.id,
                        sector: r.sector_number,
                        handle: r.handle,
                        body: Body::Direct {
                            nr_segments: r.nr_segments,
                            seg: segs(r.seg),
                        },
                    }
                }
            },
            Protocol::X86_32 => match op {
                OP_INDIRECT => {
                    let r: X86_32RequestIndirect = mem.read_obj(offset)?;
                    Request {
                        operation: op,
                        id: r.id,
                        sector: r.sector_number,
                        handle: r.handle,
                        body: Body::Indirect {
                            indirect_op: r.indirect_op,
                            nr_segments: r.nr_segments,
                            grefs: grefs(r.indirect_grefs),
                        },
                    }
                }
                OP_DISCARD => {
                    let r: X86_32RequestDiscard = mem.read_obj(offset)?;
                    Request {
                        operation: op,
                        id: r.id,
                        sector: r.sector_number,
                        handle: r.handle,
                        body: Body::Discard {
                            flag: r.flag,
                            nr_sectors: r.nr_sectors,
                        },
                    }
                }
                _ => {
                    let r: X86_32Request = mem.read_obj(offset)?;
                    Request {
                        operation: op,
                        id: r.id,
                        sector: r.sector_number,
                        handle: r.handle,
                        body: Body::Direct {
                            nr_segments: r.nr_segments,
                            seg: segs(r.seg),
                        },
                    }
                }
            },
        })
    }

    /// Writes the request at byte `offset` of `mem` in layout `proto` (frontend side).
    pub fn write<M: SharedMemory + ?Sized>(
        &self,
        mem: &M,
        offset: usize,
        proto: Protocol,
    ) -> Result<(), MemError> {
        let wide = !matches!(proto, Protocol::X86_32);
        match (self.body, wide) {
            (Body::Direct { nr_segments, seg }, true) => mem.write_obj(
                offset,
                xen_sys::blkif_request {
                    operation: self.operation,
                    nr_segments,
                    handle: self.handle,
                    id: self.id,
                    sector_number: self.sector,
                    seg: seg.map(Into::into),
                },
            ),
            (Body::Direct { nr_segments, seg }, false) => mem.write_obj(
                offset,
                X86_32Request {
                    operation: self.operation,
                    nr_segments,
                    handle: self.handle,
                    id: self.id,
                    sector_number: self.sector,
                    seg: seg.map(Into::into),
                },
            ),
            (
                Body::Indirect {
                    indirect_op,
                    nr_segments,
                    grefs,
                },
                true,
            ) => mem.write_obj(
                offset,
                xen_sys::blkif_request_indirect {
                    operation: self.operation,
                    indirect_op,
                    nr_segments,
                    id: self.id,
                    sector_number: self.sector,
                    handle: self.handle,
                    indirect_grefs: grefs.map(|g| g.0),
                },
            ),
            (
                Body::Indirect {
                    indirect_op,
                    nr_segments,
                    grefs,
                },
                false,
            ) => mem.write_obj(
                offset,
                X86_32RequestIndirect {
                    operation: self.operation,
                    indirect_op,
                    nr_segments,
                    id: self.id,
                    sector_number: self.sector,
                    handle: self.handle,
                    indirect_grefs: grefs.map(|g| g.0),
                    ..Default::default()
                },
            ),
            (Body::Discard { flag, nr_sectors }, true) => mem.write_obj(
                offset,
                xen_sys::blkif_request_discard {
                    operation: self.operation,
                    flag,
                    handle: self.handle,
                    id: self.id,
                    sector_number: self.sector,
                    nr_sectors,
                },
            ),
            (Body::Discard { flag, nr_sectors }, false) => mem.write_obj(
                offset,
                X86_32RequestDiscard {
                    operation: self.operation,
                    flag,
                    handle: self.handle,
                    id: self.id,
                    sector_number: self.sector,
                    nr_sectors,
                },
            ),
        }
    }
}

/// Status of a response (`BLKIF_RSP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `BLKIF_RSP_OKAY`.
    Okay,
    /// `BLKIF_RSP_ERROR`.
    Error,
    /// `BLKIF_RSP_EOPNOTSUPP`.
    NotSupported,
}

impl Status {
    /// The wire value.
    pub fn raw(self) -> i16 {
        match self {
            Status::Okay => xen_sys::BLKIF_RSP_OKAY as i16,
            Status::Error => xen_sys::BLKIF_RSP_ERROR as i16,
            Status::NotSupported => xen_sys::BLKIF_RSP_EOPNOTSUPP as i16,
        }
    }

    /// From a wire value (unknown values are errors).
    pub fn from_raw(v: i16) -> Status {
        match v {
            v if v == Status::Okay.raw() => Status::Okay,
            v if v == Status::NotSupported.raw() => Status::NotSupported,
            _ => Status::Error,
        }
    }
}

/// A response: the same field offsets in every layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// The request's operation.
    pub operation: u8,
    /// Result.
    pub status: Status,
}

impl Response {
    /// Writes the response at `offset`. Byte-wise: in an i386 ring, entries are only
    /// 4-byte aligned, so the 64-bit `id` cannot be stored as one aligned `u64`.
    pub fn write<M: SharedMemory + ?Sized>(&self, mem: &M, offset: usize) -> Result<(), MemError> {
        let mut b = [0u8; RESPONSE_BYTES];
        b[ID..ID + 8].copy_from_slice(&self.id.to_ne_bytes());
        b[OPERATION] = self.operation;
        b[STATUS..STATUS + 2].copy_from_slice(&self.status.raw().to_ne_bytes());
        mem.write_bytes(offset, &b)
    }

    /// Reads a response at `offset`.
    pub fn read<M: SharedMemory + ?Sized>(mem: &M, offset: usize) -> Result<Response, MemError> {
        let mut b = [0u8; RESPONSE_BYTES];
        mem.read_bytes(offset, &mut b)?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[ID..ID + 8]);
        Ok(Response {
            id: u64::from_ne_bytes(id),
            operation: b[OPERATION],
            status: Status::from_raw(i16::from_ne_bytes([b[STATUS], b[STATUS + 1]])),
        })
    }
}

const ID: usize = std::mem::offset_of!(xen_sys::blkif_response, id);
const OPERATION: usize = std::mem::offset_of!(xen_sys::blkif_response, operation);
const STATUS: usize = std::mem::offset_of!(xen_sys::blkif_response, status);
/// Bytes of a response that carry data (the i386 response is 12 bytes long).
const RESPONSE_BYTES: usize = STATUS + 2;

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use xen_types::mem::PageBuf;

    use super::*;

    #[test]
    fn x86_32_layout_matches_linux_and_qemu() {
        assert_eq!(size_of::<X86_32Request>(), 108);
        assert_eq!(offset_of!(X86_32Request, nr_segments), 1);
        assert_eq!(offset_of!(X86_32Request, handle), 2);
        assert_eq!(offset_of!(X86_32Request, id), 4);
        assert_eq!(offset_of!(X86_32Request, sector_number), 12);
        assert_eq!(offset_of!(X86_32Request, seg), 20);
        assert_eq!(size_of::<X86_32RequestDiscard>(), 28);
        assert_eq!(offset_of!(X86_32RequestDiscard, nr_sectors), 20);
        assert_eq!(size_of::<X86_32RequestIndirect>(), 64);
        assert_eq!(offset_of!(X86_32RequestIndirect, nr_segments), 2);
        assert_eq!(offset_of!(X86_32RequestIndirect, id), 4);
        assert_eq!(offset_of!(X86_32RequestIndirect, handle), 20);
        assert_eq!(offset_of!(X86_32RequestIndirect, indirect_grefs), 24);
        assert_eq!(Protocol::X86_32.entry_size(), 108);
    }

    #[test]
    fn x86_64_layout_is_the_native_one() {
        assert_eq!(size_of::<X86_64Request>(), 112);
        assert_eq!(offset_of!(X86_64Request, id), 8);
        assert_eq!(offset_of!(X86_64Request, seg), 24);
        assert_eq!(
            offset_of!(xen_sys::blkif_request_indirect, indirect_grefs),
            28
        );
        assert_eq!(offset_of!(xen_sys::blkif_response, status), 10);
        assert_eq!(Protocol::X86_64.entry_size(), 112);
        assert_eq!(Protocol::Native.entry_size(), 112);
        assert_eq!(SEGMENTS_PER_INDIRECT_PAGE, 512);
    }

    #[test]
    fn protocol_names() {
        assert_eq!(Protocol::from_node(None).unwrap(), Protocol::Native);
        assert_eq!(
            Protocol::from_node(Some("x86_32-abi")).unwrap(),
            Protocol::X86_32
        );
        assert_eq!(
            Protocol::from_node(Some("x86_64-abi")).unwrap(),
            Protocol::X86_64
        );
        assert!(matches!(
            Protocol::from_node(Some("sparc-abi")),
            Err(Error::Protocol(_))
        ));
        for p in [Protocol::X86_32, Protocol::X86_64] {
            assert_eq!(Protocol::from_node(Some(p.as_str())).unwrap(), p);
        }
    }

    #[test]
    fn requests_round_trip_in_every_layout_and_x86_32_bytes_are_packed() {
        let mut seg = [Segment::default(); MAX_DIRECT_SEGMENTS];
        seg[0] = Segment {
            gref: GrantRef(0x1234),
            first_sect: 1,
            last_sect: 6,
        };
        let reqs = [
            Request {
                operation: 1,
                id: 0x1122_3344_5566_7788,
                sector: 0xaabb_ccdd,
                handle: 0x51,
                body: Body::Direct {
                    nr_segments: 1,
                    seg,
                },
            },
            Request {
                operation: OP_INDIRECT,
                id: 9,
                sector: 77,
                handle: 3,
                body: Body::Indirect {
                    indirect_op: 0,
                    nr_segments: 300,
                    grefs: [GrantRef(5); MAX_INDIRECT_PAGES],
                },
            },
            Request {
                operation: OP_DISCARD,
                id: 10,
                sector: 1 << 40,
                handle: 0,
                body: Body::Discard {
                    flag: 1,
                    nr_sectors: 4096,
                },
            },
        ];
        let page = PageBuf::new(1).unwrap();
        for p in [Protocol::Native, Protocol::X86_32, Protocol::X86_64] {
            for r in reqs {
                page.fill(0, 4096, 0xee).unwrap();
                r.write(&page, 64, p).unwrap();
                assert_eq!(Request::read(&page, 64, p).unwrap(), r, "{p:?}");
            }
        }
        // The i386 bytes: id right after handle, at offset 4.
        reqs[0].write(&page, 0, Protocol::X86_32).unwrap();
        let mut id = [0u8; 8];
        page.read_bytes(4, &mut id).unwrap();
        assert_eq!(u64::from_ne_bytes(id), 0x1122_3344_5566_7788);
        assert_eq!(page.read_obj::<u32>(20).unwrap(), 0x1234);
        reqs[0].write(&page, 0, Protocol::X86_64).unwrap();
        assert_eq!(page.read_obj::<u64>(8).unwrap(), 0x1122_3344_5566_7788);
        // Responses.
        let rsp = Response {
            id: 42,
            operation: 1,
            status: Status::NotSupported,
        };
        // At an i386 ring entry's 4-byte (not 8-byte) aligned offset.
        rsp.write(&page, 172).unwrap();
        assert_eq!(page.read_obj::<i16>(182).unwrap(), -2);
        assert_eq!(Response::read(&page, 172).unwrap(), rsp);
    }
}
