//! The index arithmetic of `ring.h`, as pure functions on free-running [`RING_IDX`]es.
//!
//! All arithmetic wraps at 2^32, as unsigned C arithmetic does; the ring size is a power of
//! two of at most 2^31 entries, so differences of indexes are meaningful across the wrap.

use crate::RING_IDX;

/// `RING_PUSH_*_AND_CHECK_NOTIFY`: after moving a producer index from `old` to `new`, does
/// the consumer (which asked for an event when the index passes `event`) need one?
/// True when `event` lies in `(old, new]`.
#[inline]
pub const fn need_notify(new: RING_IDX, old: RING_IDX, event: RING_IDX) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

/// `RING_FREE_REQUESTS`: request slots the front end may still fill.
#[inline]
pub const fn free_requests(size: u32, req_prod_pvt: RING_IDX, rsp_cons: RING_IDX) -> u32 {
    size.wrapping_sub(req_prod_pvt.wrapping_sub(rsp_cons))
}

/// `XEN_RING_NR_UNCONSUMED_REQUESTS`: requests the back end can take now (published ones,
/// capped by the response slots still free).
#[inline]
pub const fn nr_unconsumed_requests(
    size: u32,
    req_prod: RING_IDX,
    req_cons: RING_IDX,
    rsp_prod_pvt: RING_IDX,
) -> u32 {
    let req = req_prod.wrapping_sub(req_cons);
    let rsp = size.wrapping_sub(req_cons.wrapping_sub(rsp_prod_pvt));
    if req < rsp {
        req
    } else {
        rsp
    }
}

/// `XEN_RING_NR_UNCONSUMED_RESPONSES`.
#[inline]
pub const fn nr_unconsumed_responses(rsp_prod: RING_IDX, rsp_cons: RING_IDX) -> u32 {
    rsp_prod.wrapping_sub(rsp_cons)
}

/// `RING_REQUEST_CONS_OVERFLOW`: would consuming request `cons` leave no response slot?
#[inline]
pub const fn request_cons_overflow(size: u32, rsp_prod_pvt: RING_IDX, cons: RING_IDX) -> bool {
    cons.wrapping_sub(rsp_prod_pvt) >= size
}

/// `RING_REQUEST_PROD_OVERFLOW`: can there be this many requests (an ill-behaved front end)?
#[inline]
pub const fn request_prod_overflow(size: u32, rsp_prod_pvt: RING_IDX, prod: RING_IDX) -> bool {
    prod.wrapping_sub(rsp_prod_pvt) > size
}

/// `RING_RESPONSE_PROD_OVERFLOW`: can there be this many responses (an ill-behaved back end)?
#[inline]
pub const fn response_prod_overflow(size: u32, rsp_cons: RING_IDX, prod: RING_IDX) -> bool {
    prod.wrapping_sub(rsp_cons) > size
}

/// The back end's full check of a published `req_prod`: `RING_REQUEST_PROD_OVERFLOW`, plus
/// an index that went backwards past our consumer (which the macro alone would read as up to
/// a ring of stale requests).
#[inline]
pub const fn bad_request_prod(
    size: u32,
    req_prod: RING_IDX,
    req_cons: RING_IDX,
    rsp_prod_pvt: RING_IDX,
) -> bool {
    request_prod_overflow(size, rsp_prod_pvt, req_prod) || req_prod.wrapping_sub(req_cons) > size
}

/// The front end's check of a published `rsp_prod`: no more responses than requests it
/// published (stricter than `RING_RESPONSE_PROD_OVERFLOW`; also catches a backwards index).
#[inline]
pub const fn bad_response_prod(rsp_prod: RING_IDX, rsp_cons: RING_IDX, req_prod: RING_IDX) -> bool {
    rsp_prod.wrapping_sub(rsp_cons) > req_prod.wrapping_sub(rsp_cons)
}
