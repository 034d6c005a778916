//! The front end of a ring: produces requests, consumes responses.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{fence, Ordering};

use xen_types::mem::{Pod, SharedMemory, SharedMemoryExt};
use xen_types::Pages;

use crate::idx;
use crate::layout::{copy_entry, hdr, init_shared_ring, RingLayout, SringField};
use crate::{RingError, Untyped, RING_IDX};

/// The front end of a shared ring (`struct X_front_ring`): the end that issues requests
/// (blkfront, netfront) and consumes responses.
///
/// Requests are written with [`push_request`](Self::push_request) and published with
/// [`push_requests_and_check_notify`](Self::push_requests_and_check_notify); responses are
/// read with [`take_response`](Self::take_response), and
/// [`final_check_for_responses`](Self::final_check_for_responses) arms the event before the
/// caller sleeps.
pub struct FrontRing<M, Req, Rsp> {
    mem: M,
    layout: RingLayout,
    req_prod_pvt: RING_IDX,
    rsp_cons: RING_IDX,
    /// The `req_prod` we last published (the macros re-read it from the page; we trust our
    /// own copy, which the back end cannot change).
    req_pushed: RING_IDX,
    /// The `rsp_prod` we last read and checked.
    rsp_prod_seen: RING_IDX,
    broken: Option<RingError>,
    _types: PhantomData<fn(Req) -> Rsp>,
}

impl<M, Req, Rsp> fmt::Debug for FrontRing<M, Req, Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontRing")
            .field("layout", &self.layout)
            .field("req_prod_pvt", &self.req_prod_pvt)
            .field("rsp_cons", &self.rsp_cons)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<M: SharedMemory, Req: Pod, Rsp: Pod> FrontRing<M, Req, Rsp> {
    /// `XEN_FRONT_RING_INIT`: initialises the shared ring in `mem` (`SHARED_RING_INIT`) and
    /// a front end on it (`FRONT_RING_INIT`). `mem` holds `nr_pages` contiguous pages (a
    /// multi-page ring of `ring-page-order` `log2(nr_pages)`).
    pub fn new(mem: M, nr_pages: Pages) -> Result<Self, RingError> {
        let layout = RingLayout::for_memory::<M, Req, Rsp>(&mem, nr_pages)?;
        init_shared_ring(&mem)?;
        Ok(Self::from_parts(mem, layout, 0))
    }

    /// `FRONT_RING_ATTACH`: a front end on an already initialised shared ring, continuing at
    /// index `idx` (both `req_prod_pvt` and `rsp_cons`), e.g. after a reconnection with no
    /// request outstanding. The shared page is not written.
    pub fn attach(mem: M, nr_pages: Pages, idx: RING_IDX) -> Result<Self, RingError> {
        let layout = RingLayout::for_memory::<M, Req, Rsp>(&mem, nr_pages)?;
        Ok(Self::from_parts(mem, layout, idx))
    }

    /// Writes `req` into the next free slot (`RING_GET_REQUEST(r, req_prod_pvt++)`). The back
    /// end sees it only after a push.
    #[inline]
    pub fn push_request(&mut self, req: Req) -> Result<(), RingError> {
        let off = self.request_slot()?;
        self.mem.write_obj(off, req)?;
        Ok(())
    }

    /// Writes as many of `reqs` as fit; returns how many.
    pub fn push_request_slice(&mut self, reqs: &[Req]) -> Result<usize, RingError> {
        self.check()?;
        let n = reqs.len().min(self.free_requests() as usize);
        let mut prod = self.req_prod_pvt;
        for req in &reqs[..n] {
            self.mem.write_obj(self.layout.slot_offset(prod), *req)?;
            prod = prod.wrapping_add(1);
        }
        self.req_prod_pvt = prod;
        Ok(n)
    }

    /// Copies out the next response (`RING_COPY_RESPONSE`), or `None` when the back end has
    /// published none. An impossible `rsp_prod` (more responses than requests published)
    /// breaks the ring.
    #[inline]
    pub fn take_response(&mut self) -> Result<Option<Rsp>, RingError> {
        match self.response_slot()? {
            Some(off) => Ok(Some(copy_entry(&self.mem, off)?)),
            None => Ok(None),
        }
    }

    /// Copies out up to `out.len()` responses (reading `rsp_prod` once); returns how many.
    /// The batch form of the hot path: one index check per batch, no allocation.
    pub fn take_responses_into(&mut self, out: &mut [Rsp]) -> Result<usize, RingError> {
        self.check()?;
        let n = (self.refresh()? as usize).min(out.len());
        let mut cons = self.rsp_cons;
        for slot in &mut out[..n] {
            *slot = copy_entry(&self.mem, self.layout.slot_offset(cons))?;
            cons = cons.wrapping_add(1);
        }
        self.rsp_cons = cons;
        Ok(n)
    }
}

impl<M: SharedMemory> FrontRing<M, Untyped, Untyped> {
    /// `SHARED_RING_INIT` + `FRONT_RING_INIT` on a ring whose entry layout is known only at
    /// run time: the caller writes requests and reads responses at the offsets that
    /// [`next_request_slot`](Self::next_request_slot) and
    /// [`take_response_slot`](Self::take_response_slot) return.
    pub fn init_with_layout(mem: M, layout: RingLayout) -> Result<Self, RingError> {
        layout.validate(&mem)?;
        init_shared_ring(&mem)?;
        Ok(Self::from_parts(mem, layout, 0))
    }

    /// The offset of the next request slot, counting it as produced (privately, until a
    /// push); [`RingError::Full`] as for [`push_request`](FrontRing::push_request).
    #[inline]
    pub fn next_request_slot(&mut self) -> Result<usize, RingError> {
        self.request_slot()
    }

    /// The offset of the next published response, consuming it; `None` when there is none.
    #[inline]
    pub fn take_response_slot(&mut self) -> Result<Option<usize>, RingError> {
        self.response_slot()
    }
}

impl<M: SharedMemory, Req, Rsp> FrontRing<M, Req, Rsp> {
    fn from_parts(mem: M, layout: RingLayout, idx: RING_IDX) -> Self {
        FrontRing {
            mem,
            layout,
            req_prod_pvt: idx,
            rsp_cons: idx,
            req_pushed: idx,
            rsp_prod_seen: idx,
            broken: None,
            _types: PhantomData,
        }
    }

    /// The ring's layout.
    pub fn layout(&self) -> &RingLayout {
        &self.layout
    }

    /// Entries in the ring (`RING_SIZE`).
    pub fn ring_size(&self) -> u32 {
        self.layout.nr_ents()
    }

    /// The shared memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Gives the shared memory back.
    pub fn into_memory(self) -> M {
        self.mem
    }

    /// Next request index to fill (`req_prod_pvt`).
    pub fn req_prod_pvt(&self) -> RING_IDX {
        self.req_prod_pvt
    }

    /// Next response index to consume (`rsp_cons`).
    pub fn rsp_cons(&self) -> RING_IDX {
        self.rsp_cons
    }

    /// The error that broke the ring, if the back end misbehaved.
    pub fn broken(&self) -> Option<RingError> {
        self.broken
    }

    /// `RING_FREE_REQUESTS`.
    pub fn free_requests(&self) -> u32 {
        idx::free_requests(self.ring_size(), self.req_prod_pvt, self.rsp_cons)
    }

    /// `RING_FULL`.
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// Requests queued or published whose responses have not been consumed.
    pub fn outstanding(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// The offset of the next free request slot, counting it as produced.
    #[inline]
    fn request_slot(&mut self) -> Result<usize, RingError> {
        self.check()?;
        if self.is_full() {
            return Err(RingError::Full);
        }
        let off = self.layout.slot_offset(self.req_prod_pvt);
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        Ok(off)
    }

    /// The offset of the next published response, consuming it.
    #[inline]
    fn response_slot(&mut self) -> Result<Option<usize>, RingError> {
        self.check()?;
        if self.rsp_cons == self.rsp_prod_seen && self.refresh()? == 0 {
            return Ok(None);
        }
        let off = self.layout.slot_offset(self.rsp_cons);
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(off))
    }

    fn check(&self) -> Result<(), RingError> {
        match self.broken {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// `RING_PUSH_REQUESTS`: publishes the queued requests without checking for a
    /// notification (write barrier, then `req_prod`).
    pub fn push_requests(&mut self) {
        fence(Ordering::Release); // xen_wmb: requests before the index
        hdr(&self.mem, SringField::ReqProd).store(self.req_prod_pvt, Ordering::Relaxed);
        self.req_pushed = self.req_prod_pvt;
    }

    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`: publishes the queued requests and returns
    /// whether the back end asked for an event (notify its event channel when true).
    #[inline]
    pub fn push_requests_and_check_notify(&mut self) -> bool {
        let old = self.req_pushed;
        let new = self.req_prod_pvt;
        fence(Ordering::Release); // xen_wmb: back sees requests before the index
        hdr(&self.mem, SringField::ReqProd).store(new, Ordering::Relaxed);
        self.req_pushed = new;
        fence(Ordering::SeqCst); // xen_mb: back sees the index before we read req_event
        let event = hdr(&self.mem, SringField::ReqEvent).load(Ordering::Relaxed);
        idx::need_notify(new, old, event)
    }

    /// Reads and checks `rsp_prod`; returns the unconsumed responses.
    #[inline]
    fn refresh(&mut self) -> Result<u32, RingError> {
        let prod = hdr(&self.mem, SringField::RspProd).load(Ordering::Relaxed);
        fence(Ordering::Acquire); // xen_rmb: the index before the responses
        if idx::bad_response_prod(prod, self.rsp_cons, self.req_pushed) {
            let e = RingError::Overflow {
                prod,
                cons: self.rsp_cons,
                size: self.ring_size(),
            };
            self.broken = Some(e);
            return Err(e);
        }
        self.rsp_prod_seen = prod;
        Ok(idx::nr_unconsumed_responses(prod, self.rsp_cons))
    }

    /// `RING_HAS_UNCONSUMED_RESPONSES`: published responses not consumed yet.
    pub fn unconsumed_responses(&mut self) -> Result<u32, RingError> {
        self.check()?;
        self.refresh()
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES`: true when responses are waiting; otherwise asks for
    /// an event at the next response (`rsp_event = rsp_cons + 1`), then checks again (a
    /// response published in between is not missed). Sleep on the event channel only when
    /// this returns false.
    pub fn final_check_for_responses(&mut self) -> Result<bool, RingError> {
        self.check()?;
        if self.refresh()? > 0 {
            return Ok(true);
        }
        hdr(&self.mem, SringField::RspEvent)
            .store(self.rsp_cons.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::SeqCst); // xen_mb
        Ok(self.refresh()? > 0)
    }
}
