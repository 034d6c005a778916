//! blkif shared rings: the `xen-ring` crate's rings with the entry size of the negotiated ABI.
//!
//! A blkif ring's entries are 108 (x86_32) or 112 bytes (x86_64) depending on the frontend's
//! `protocol` key, so blkback uses `xen-ring`'s untyped rings over a run-time
//! [`RingLayout`]: the index protocol (barriers, event thresholds, the sticky check of a
//! hostile `req_prod`) is `xen-ring`'s, and [`crate::abi`] reads and writes the entries at
//! the slot offsets the rings hand out.

pub use xen_ring::RingLayout;
use xen_ring::Untyped;

use crate::abi::Protocol;
use crate::Error;

/// The backend end: consumes requests, produces responses.
pub type BackRing<M> = xen_ring::BackRing<M, Untyped, Untyped>;

/// The frontend end: produces requests, consumes responses.
pub type FrontRing<M> = xen_ring::FrontRing<M, Untyped, Untyped>;

/// The layout of a ring of `bytes` for `proto`'s entries (`__CONST_RING_SIZE`).
pub fn layout(bytes: usize, proto: Protocol) -> Result<RingLayout, Error> {
    RingLayout::new(bytes, proto.entry_size(), proto.entry_align())
        .ok_or_else(|| Error::BadRing(format!("{bytes} bytes hold no {proto:?} ring entry")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkif_ring_sizes_match_the_c_macro() {
        // __CONST_RING_SIZE(blkif, 4096) is 32 for every ABI; a 16-page ring holds 512.
        for p in [Protocol::Native, Protocol::X86_32, Protocol::X86_64] {
            assert_eq!(layout(4096, p).unwrap().nr_ents(), 32, "{p:?}");
            assert_eq!(layout(16 * 4096, p).unwrap().nr_ents(), 512, "{p:?}");
            assert_eq!(layout(4096, p).unwrap().ring_offset(), 64);
        }
        assert!(layout(100, Protocol::X86_64).is_err());
    }
}
