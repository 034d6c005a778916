//! Shared rings as in `xen/io/ring.h`, generic over request/response types and over shared
//! memory.
//!
//! A Xen split driver (blkif, netif, vscsiif, ...) exchanges fixed-size requests and responses
//! through one or more shared pages laid out by the C macro `DEFINE_RING_TYPES`: a 64-byte
//! header (`req_prod`, `req_event`, `rsp_prod`, `rsp_event`, the `pvt` union and padding) then
//! an array of entries, each the size of the union of a request and a response, as many as
//! the largest power of two that fits (`__RING_SIZE`). Both ends run free-running 32-bit
//! indexes masked by the ring size, and decide whether to notify the other end with the
//! `*_event` fields.
//!
//! [`FrontRing`] and [`BackRing`] are that protocol, written once over
//! [`SharedMemory`](xen_types::mem::SharedMemory) so they run unchanged on grant mappings,
//! `gntalloc` pages and simulated memory, with the same layout, index arithmetic, event
//! rules and memory barriers as the C macros (which the tests run against, on one page, in two
//! threads). Unlike the macros, both ends distrust the peer: an impossible producer index
//! from the other domain is reported as [`RingError::Overflow`] and the ring stops (it is
//! *broken*, as Linux blkback halts a ring) instead of reading stale entries or spinning.
//! That check is made once per batch, when the peer's producer index is read.
//!
//! The memory is checked once, when a ring is made (it spans the layout, and typed entries
//! fit their slots, aligned); slots are then reached without a bounds check per access.
//! Entries are written in place through a [`SlotMut`] ([`FrontRing::next_request`],
//! [`BackRing::next_response`]) and read in place through a [`Slot`]
//! ([`BackRing::next_request`], [`FrontRing::next_response`]), or copied whole
//! (`push_request`, `take_request`, ...), always with volatile word accesses.
//!
//! The batch calls are the fast path: [`FrontRing::push_requests_with`],
//! [`BackRing::serve_requests_with`] and [`FrontRing::take_responses_with`] fill, serve and
//! consume a whole batch in place with one index check, one barrier and one index store per
//! batch (none for an empty one), as a C driver's loop over the macros does.
//!
//! ```
//! use xen_ring::{BackRing, FrontRing};
//! use xen_sys::{blkif_request, blkif_response};
//! use xen_types::{mem::PageBuf, Pages};
//! use std::sync::Arc;
//!
//! let page = Arc::new(PageBuf::new(1).unwrap());
//! let mut front: FrontRing<_, blkif_request, blkif_response> =
//!     FrontRing::new(page.clone(), Pages(1)).unwrap();
//! let mut back: BackRing<_, blkif_request, blkif_response> =
//!     BackRing::new(page, Pages(1)).unwrap();
//! assert_eq!(front.ring_size(), 32); // __CONST_RING_SIZE(blkif, 4096)
//!
//! front.push_request(blkif_request { id: 7, ..Default::default() }).unwrap();
//! let notify_back = front.push_requests_and_check_notify();
//! assert!(notify_back); // the back end asked for an event at index 1
//!
//! let req = back.take_request().unwrap().unwrap();
//! back.push_response(blkif_response { id: req.id, ..Default::default() }).unwrap();
//! assert!(back.push_responses_and_check_notify());
//! assert!(!back.final_check_for_requests().unwrap());
//!
//! assert_eq!(front.take_response().unwrap().unwrap().id, 7);
//! assert!(!front.final_check_for_responses().unwrap());
//! ```

#![warn(missing_docs)]

mod back;
pub mod console;
mod front;
pub mod idx;
mod layout;
mod slot;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;

#[cfg(test)]
mod tests;

pub use back::BackRing;
pub use front::FrontRing;
pub use layout::{init_shared_ring, RingLayout, SringField};
pub use slot::{Slot, SlotMut};
pub use xen_sys::RING_IDX;

use xen_types::mem::MemError;

/// The entry type of a ring whose entry layout is known only at run time (blkif's entries
/// are 108 or 112 bytes depending on the front end's ABI, negotiated through xenstore):
/// `BackRing<M, Untyped, Untyped>` and `FrontRing<M, Untyped, Untyped>` give the offsets of
/// their slots, and the caller reads and writes the entries there (`RingLayout::new` with
/// the negotiated size). The index protocol (barriers, events, hostile-index checks) is the
/// same code as the typed rings'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untyped {}

/// Errors of ring operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// No free request slot: `RING_FULL` (wait for responses).
    #[error("ring is full")]
    Full,
    /// The peer published a producer index that cannot be right: more entries than the ring
    /// holds (or than were requested), or an index that went backwards. The ring is broken:
    /// every later operation returns this error.
    #[error("peer producer index {prod} is impossible (consumer at {cons}, ring of {size})")]
    Overflow {
        /// The producer index the peer published.
        prod: RING_IDX,
        /// Our consumer index.
        cons: RING_IDX,
        /// Entries in the ring.
        size: u32,
    },
    /// `push_response` without a consumed request to answer.
    #[error("no consumed request is waiting for a response")]
    NoOutstandingRequest,
    /// The memory cannot hold the ring: fewer bytes than `nr_pages` pages, read-only, zero
    /// pages, or entries too large for even one.
    #[error("bad ring memory: {0}")]
    Layout(&'static str),
    /// An access to the shared memory failed (a mapping that does not honour its length).
    #[error("shared memory access failed: {0}")]
    Memory(#[from] MemError),
}

/// What a batch call published: how many entries, and whether the peer asked for an event
/// (notify its event channel when `notify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// Entries written and published.
    pub count: u32,
    /// The `*_AND_CHECK_NOTIFY` result.
    pub notify: bool,
}

/// The error of an impossible producer index (out of line: the hot paths only test for it,
/// and keep the ring's state in registers).
#[cold]
#[inline(never)]
fn overflow(prod: RING_IDX, cons: RING_IDX, size: u32) -> RingError {
    RingError::Overflow { prod, cons, size }
}
