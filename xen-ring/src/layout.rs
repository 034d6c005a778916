//! The layout of a shared ring (`struct X_sring` of `DEFINE_RING_TYPES`).

use std::mem::{align_of, offset_of, size_of};

use xen_sys::blkif_sring;
use xen_types::mem::{SharedMemory, SharedMemoryExt};
use xen_types::{Pages, PAGE_SIZE};

use crate::RingError;

// The header of every `X_sring` is the same; take its offsets from one bindgen instance.
const REQ_PROD: usize = offset_of!(blkif_sring, req_prod);
const REQ_EVENT: usize = offset_of!(blkif_sring, req_event);
const RSP_PROD: usize = offset_of!(blkif_sring, rsp_prod);
const RSP_EVENT: usize = offset_of!(blkif_sring, rsp_event);
const PVT: usize = offset_of!(blkif_sring, pvt);
/// End of the header: `ring[]` of blkif starts there (its entries' alignment, 8, divides it).
const HEADER_END: usize = offset_of!(blkif_sring, ring);

const _: () = assert!(HEADER_END % align_of::<xen_sys::blkif_sring_entry>() == 0);
const _: () = assert!(HEADER_END % 64 == 0);

/// A 32-bit field of the shared ring header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SringField {
    /// `req_prod`: requests produced by the front end.
    ReqProd,
    /// `req_event`: the back end wants an event when `req_prod` passes this.
    ReqEvent,
    /// `rsp_prod`: responses produced by the back end.
    RspProd,
    /// `rsp_event`: the front end wants an event when `rsp_prod` passes this.
    RspEvent,
}

impl SringField {
    /// Byte offset of the field in the shared page.
    pub const fn offset(self) -> usize {
        match self {
            SringField::ReqProd => REQ_PROD,
            SringField::ReqEvent => REQ_EVENT,
            SringField::RspProd => RSP_PROD,
            SringField::RspEvent => RSP_EVENT,
        }
    }
}

/// Largest power of two not above `x` (`__RD32`), 0 for 0.
const fn rd32(x: u32) -> u32 {
    if x == 0 {
        0
    } else {
        1 << (31 - x.leading_zeros())
    }
}

/// Where the header and entries of a ring of `Req`/`Rsp` lie in its shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    bytes: usize,
    ring_offset: usize,
    entry_size: usize,
    nr_ents: u32,
}

impl RingLayout {
    /// The layout of `bytes` of shared memory holding entries of `entry_size` bytes aligned to
    /// `entry_align` (`__CONST_RING_SIZE`), or `None` when not even one entry fits.
    pub const fn new(bytes: usize, entry_size: usize, entry_align: usize) -> Option<RingLayout> {
        if entry_size == 0 || entry_align == 0 || !entry_align.is_power_of_two() {
            return None;
        }
        let ring_offset = HEADER_END.next_multiple_of(entry_align);
        if bytes <= ring_offset {
            return None;
        }
        let fit = (bytes - ring_offset) / entry_size;
        // RING_IDX arithmetic needs the ring to be at most 2^31 entries.
        let fit = if fit > u32::MAX as usize {
            u32::MAX
        } else {
            fit as u32
        };
        let nr_ents = rd32(fit);
        if nr_ents == 0 {
            return None;
        }
        Some(RingLayout {
            bytes,
            ring_offset,
            entry_size,
            nr_ents,
        })
    }

    /// The layout of `DEFINE_RING_TYPES(x, Req, Rsp)` over `nr_pages` pages.
    pub const fn of<Req, Rsp>(nr_pages: Pages) -> Option<RingLayout> {
        let entry = union_entry_size::<Req, Rsp>();
        if nr_pages.0 == 0 || nr_pages.0 > (usize::MAX / PAGE_SIZE) as u64 {
            return None;
        }
        RingLayout::new(
            nr_pages.0 as usize * PAGE_SIZE,
            entry,
            union_align::<Req, Rsp>(),
        )
    }

    /// Bytes of shared memory the ring spans.
    pub const fn bytes(&self) -> usize {
        self.bytes
    }

    /// Offset of `ring[0]` (`offsetof(struct X_sring, ring)`).
    pub const fn ring_offset(&self) -> usize {
        self.ring_offset
    }

    /// Size of one entry (`sizeof(union X_sring_entry)`).
    pub const fn entry_size(&self) -> usize {
        self.entry_size
    }

    /// Entries in the ring (`RING_SIZE`, a power of two).
    pub const fn nr_ents(&self) -> u32 {
        self.nr_ents
    }

    /// Offset of the entry for free-running index `idx` (`RING_GET_REQUEST`/`RESPONSE`).
    #[inline]
    pub const fn slot_offset(&self, idx: u32) -> usize {
        self.ring_offset + (idx & (self.nr_ents - 1)) as usize * self.entry_size
    }

    /// Checks that `mem` can hold this ring and is writable.
    pub(crate) fn validate<M: SharedMemory>(&self, mem: &M) -> Result<(), RingError> {
        if mem.len() < self.bytes {
            return Err(RingError::Layout("memory is smaller than nr_pages pages"));
        }
        if !mem.writable() {
            return Err(RingError::Layout("memory is read-only"));
        }
        // Both ends write index fields; check once that they are reachable and aligned.
        for f in [
            SringField::ReqProd,
            SringField::ReqEvent,
            SringField::RspProd,
            SringField::RspEvent,
        ] {
            mem.atomic_u32(f.offset())?;
        }
        Ok(())
    }
}

/// `SHARED_RING_INIT`: empty ring, `req_event = rsp_event = 1`, `pvt` and padding zeroed.
/// The front end does this before granting the pages ([`FrontRing::new`](crate::FrontRing::new)
/// calls it).
pub fn init_shared_ring<M: SharedMemory + ?Sized>(mem: &M) -> Result<(), RingError> {
    if !mem.writable() {
        return Err(RingError::Layout("memory is read-only"));
    }
    mem.write_obj(REQ_PROD, 0u32)?;
    mem.write_obj(RSP_PROD, 0u32)?;
    mem.write_obj(REQ_EVENT, 1u32)?;
    mem.write_obj(RSP_EVENT, 1u32)?;
    mem.fill(PVT, HEADER_END - PVT, 0)?;
    Ok(())
}

/// The alignment of `union X_sring_entry` of `DEFINE_RING_TYPES(x, Req, Rsp)`: the larger one.
pub(crate) const fn union_align<Req, Rsp>() -> usize {
    if align_of::<Req>() > align_of::<Rsp>() {
        align_of::<Req>()
    } else {
        align_of::<Rsp>()
    }
}

/// The alignment that every slot of `DEFINE_RING_TYPES(x, Req, Rsp)` has in page-aligned
/// memory (`ring_offset` and the entry size are multiples of it), capped at 16 bytes: the
/// widest store the slot copies use.
pub(crate) const fn slot_align<Req, Rsp>() -> usize {
    let entry = union_entry_size::<Req, Rsp>();
    let ring_offset = HEADER_END.next_multiple_of(union_align::<Req, Rsp>());
    let mut a = 16;
    while entry % a != 0 || ring_offset % a != 0 {
        a /= 2;
    }
    // Both are multiples of the entry's own alignment, which may exceed the cap.
    if union_align::<Req, Rsp>() > a {
        union_align::<Req, Rsp>()
    } else {
        a
    }
}

/// `sizeof(union X_sring_entry)` of `DEFINE_RING_TYPES(x, Req, Rsp)`: a union is as large as
/// its largest member, rounded up to its largest alignment.
pub(crate) const fn union_entry_size<Req, Rsp>() -> usize {
    let size = if size_of::<Req>() > size_of::<Rsp>() {
        size_of::<Req>()
    } else {
        size_of::<Rsp>()
    };
    size.next_multiple_of(union_align::<Req, Rsp>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rd32_is_round_down_to_power_of_two() {
        assert_eq!(rd32(0), 0);
        assert_eq!(rd32(1), 1);
        assert_eq!(rd32(3), 2);
        assert_eq!(rd32(36), 32);
        assert_eq!(rd32(504), 256);
        assert_eq!(rd32(u32::MAX), 1 << 31);
    }

    #[test]
    fn union_entry_size_rounds_to_alignment() {
        // [u8; 12] with u64: the union is 16 bytes, as in C.
        let l = RingLayout::of::<[u8; 12], u64>(Pages(1)).unwrap();
        assert_eq!(l.entry_size(), 16);
        assert_eq!(l.ring_offset(), 64);
        assert_eq!(l.nr_ents(), 128); // (4096 - 64) / 16 = 252 -> 128
    }

    #[test]
    fn slots_are_aligned_to_the_entry_size_up_to_16() {
        assert_eq!(slot_align::<[u8; 64], [u8; 16]>(), 16);
        assert_eq!(slot_align::<[u32; 25], u64>(), 8); // 100 bytes, 8-aligned: 104
        assert_eq!(slot_align::<[u8; 12], [u8; 3]>(), 4);
        assert_eq!(slot_align::<[u8; 3], u8>(), 1);
    }

    #[test]
    fn impossible_layouts_are_rejected() {
        assert!(RingLayout::of::<(), ()>(Pages(1)).is_none());
        assert!(RingLayout::of::<[u8; 4096], u8>(Pages(1)).is_none());
        assert!(RingLayout::of::<u64, u64>(Pages(0)).is_none());
        assert!(RingLayout::new(64, 8, 8).is_none());
        assert!(RingLayout::new(4096, 8, 3).is_none());
        assert_eq!(RingLayout::new(72, 8, 8).unwrap().nr_ents(), 1);
    }
}
