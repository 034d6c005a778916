//! The front end of a ring: produces requests, consumes responses.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{fence, Ordering};

use xen_types::mem::{Pod, SharedMemory};
use xen_types::Pages;

use crate::idx;
use crate::layout::{init_shared_ring, RingLayout, SringField};
use crate::slot::{read_volatile_words, RingMem, Slot, SlotMut};
use crate::{Pushed, RingError, Untyped, RING_IDX};

/// The front end of a shared ring (`struct X_front_ring`): the end that issues requests
/// (blkfront, netfront) and consumes responses.
///
/// Requests are written in place with [`next_request`](Self::next_request) (or as whole
/// values with [`push_request`](Self::push_request)) and published with
/// [`push_requests_and_check_notify`](Self::push_requests_and_check_notify); responses are
/// read with [`take_response`](Self::take_response), and
/// [`final_check_for_responses`](Self::final_check_for_responses) arms the event before the
/// caller sleeps.
pub struct FrontRing<M, Req, Rsp> {
    ring: RingMem<M>,
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
            .field("layout", self.ring.layout())
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
        let ring = Self::typed(mem, nr_pages)?;
        init_shared_ring(ring.mem())?;
        Ok(Self::from_parts(ring, 0))
    }

    /// `FRONT_RING_ATTACH`: a front end on an already initialised shared ring, continuing at
    /// index `idx` (both `req_prod_pvt` and `rsp_cons`), e.g. after a reconnection with no
    /// request outstanding. The shared page is not written.
    pub fn attach(mem: M, nr_pages: Pages, idx: RING_IDX) -> Result<Self, RingError> {
        Ok(Self::from_parts(Self::typed(mem, nr_pages)?, idx))
    }

    fn typed(mem: M, nr_pages: Pages) -> Result<RingMem<M>, RingError> {
        let layout = RingLayout::of::<Req, Rsp>(nr_pages)
            .ok_or(RingError::Layout("no entry fits in nr_pages pages"))?;
        RingMem::typed::<Req, Rsp>(mem, layout)
    }

    /// The next free request slot, to fill in place (`RING_GET_REQUEST(r, req_prod_pvt++)`):
    /// counted as produced now, seen by the back end after a push; [`RingError::Full`] when
    /// no slot is free.
    ///
    /// ```
    /// # use std::{mem::offset_of, sync::Arc};
    /// # use xen_ring::FrontRing;
    /// # use xen_sys::{blkif_request, blkif_response};
    /// # use xen_types::{mem::PageBuf, Pages};
    /// let page = Arc::new(PageBuf::new(1).unwrap());
    /// let mut front: FrontRing<_, blkif_request, blkif_response> =
    ///     FrontRing::new(page, Pages(1)).unwrap();
    /// let mut slot = front.next_request().unwrap();
    /// slot.set(offset_of!(blkif_request, id), 7u64);
    /// slot.set(offset_of!(blkif_request, nr_segments), 1u8);
    /// front.push_requests();
    /// ```
    #[inline]
    pub fn next_request(&mut self) -> Result<SlotMut<'_, Req>, RingError> {
        let idx = self.request_slot()?;
        // SAFETY: `RingMem::typed` checked that a Req fits every slot, aligned; the slot
        // borrows the ring, which keeps the memory mapped.
        Ok(unsafe { self.ring.slot_mut::<Req, Rsp, Req>(idx) })
    }

    /// Writes `req` into the next free slot (`RING_GET_REQUEST(r, req_prod_pvt++)`). The back
    /// end sees it only after a push.
    #[inline]
    pub fn push_request(&mut self, req: Req) -> Result<(), RingError> {
        self.next_request()?.write(req);
        Ok(())
    }

    /// Writes as many of `reqs` as fit; returns how many.
    pub fn push_request_slice(&mut self, reqs: &[Req]) -> Result<usize, RingError> {
        self.check()?;
        let n = reqs.len().min(self.free_requests() as usize);
        let mut prod = self.req_prod_pvt;
        for req in &reqs[..n] {
            // SAFETY: `RingMem::typed` checked that a Req fits every slot, aligned.
            unsafe { self.ring.slot_mut::<Req, Rsp, Req>(prod) }.write(*req);
            prod = prod.wrapping_add(1);
        }
        self.req_prod_pvt = prod;
        Ok(n)
    }

    /// Copies out the next response (`RING_COPY_RESPONSE`), or `None` when the back end has
    /// published none. An impossible `rsp_prod` (more responses than requests published)
    /// breaks the ring. `rsp_prod` is read (and checked) only when the responses seen last
    /// time are all taken.
    #[inline]
    pub fn take_response(&mut self) -> Result<Option<Rsp>, RingError> {
        match self.response_slot()? {
            // SAFETY: `RingMem::typed` checked that an Rsp fits every slot, aligned.
            Some(idx) => Ok(Some(unsafe { self.copy_out(idx) })),
            None => Ok(None),
        }
    }

    /// The next response, consumed and read in place (`RING_GET_RESPONSE(r, rsp_cons++)`),
    /// or `None` as for [`take_response`](Self::take_response).
    #[inline]
    pub fn next_response(&mut self) -> Result<Option<Slot<'_, Rsp>>, RingError> {
        match self.response_slot()? {
            // SAFETY: `RingMem::typed` checked that an Rsp fits every slot, aligned; the
            // slot borrows the ring, which keeps the memory mapped.
            Some(idx) => Ok(Some(unsafe { self.ring.slot::<Req, Rsp, Rsp>(idx) })),
            None => Ok(None),
        }
    }

    /// Fills up to `n` free request slots in place, `fill(slot, k)` for the `k`th, then
    /// publishes them (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`): the batch form of
    /// [`next_request`](Self::next_request) + push, with one check of the free space, one
    /// write barrier and one index store for the batch (none when nothing is new, so an idle
    /// poll does not write the shared header). Requests queued before and not pushed are
    /// published too.
    ///
    /// ```
    /// # use std::{mem::offset_of, sync::Arc};
    /// # use xen_ring::FrontRing;
    /// # use xen_sys::{blkif_request, blkif_response};
    /// # use xen_types::{mem::PageBuf, Pages};
    /// let page = Arc::new(PageBuf::new(1).unwrap());
    /// let mut front: FrontRing<_, blkif_request, blkif_response> =
    ///     FrontRing::new(page, Pages(1)).unwrap();
    /// let pushed = front
    ///     .push_requests_with(4, |slot, k| slot.set(offset_of!(blkif_request, id), u64::from(k)))
    ///     .unwrap();
    /// assert_eq!(pushed.count, 4);
    /// ```
    #[inline]
    pub fn push_requests_with(
        &mut self,
        n: u32,
        mut fill: impl FnMut(&mut SlotMut<'_, Req>, u32),
    ) -> Result<Pushed, RingError> {
        self.check()?;
        let count = n.min(self.free_requests());
        let prod = self.req_prod_pvt;
        for k in 0..count {
            // SAFETY: `RingMem::typed` made the ring for Req/Rsp; the slot lives for this
            // iteration, while the ring (and so the mapping) is borrowed.
            let mut slot = unsafe { self.ring.slot_mut::<Req, Rsp, Req>(prod.wrapping_add(k)) };
            fill(&mut slot, k);
        }
        self.req_prod_pvt = prod.wrapping_add(count);
        let notify = self.req_prod_pvt != self.req_pushed && self.push_requests_and_check_notify();
        Ok(Pushed { count, notify })
    }

    /// Consumes up to `max` published responses in place, `take(slot)` for each in order,
    /// reading (and checking) `rsp_prod` once, with one read barrier for the batch: the batch
    /// form of [`next_response`](Self::next_response). Returns how many were consumed.
    #[inline]
    pub fn take_responses_with(
        &mut self,
        max: u32,
        mut take: impl FnMut(&Slot<'_, Rsp>),
    ) -> Result<u32, RingError> {
        self.check()?;
        let count = self.refresh()?.min(max);
        let cons = self.rsp_cons;
        for k in 0..count {
            // SAFETY: `RingMem::typed` made the ring for Req/Rsp; the slot lives for this
            // iteration, while the ring (and so the mapping) is borrowed.
            let slot = unsafe { self.ring.slot::<Req, Rsp, Rsp>(cons.wrapping_add(k)) };
            take(&slot);
        }
        self.rsp_cons = cons.wrapping_add(count);
        Ok(count)
    }

    /// Copies out up to `out.len()` responses (reading `rsp_prod` once); returns how many.
    /// The batch form of the hot path: one index check per batch, no allocation.
    pub fn take_responses_into(&mut self, out: &mut [Rsp]) -> Result<usize, RingError> {
        self.check()?;
        let n = (self.refresh()? as usize).min(out.len());
        let mut cons = self.rsp_cons;
        for slot in &mut out[..n] {
            // SAFETY: `RingMem::typed` checked that an Rsp fits every slot, aligned.
            *slot = unsafe { self.copy_out(cons) };
            cons = cons.wrapping_add(1);
        }
        self.rsp_cons = cons;
        Ok(n)
    }

    /// Copies the response at index `idx` out of the shared page, once.
    ///
    /// # Safety
    ///
    /// An `Rsp` fits every slot, aligned (`RingMem::typed`).
    #[inline(always)]
    unsafe fn copy_out(&self, idx: RING_IDX) -> Rsp {
        // SAFETY: the caller's promise, and `slot` is inside the mapping.
        unsafe {
            read_volatile_words(
                self.ring.typed_slot::<Req, Rsp>(idx).as_ptr(),
                align_of::<Rsp>(),
            )
        }
    }
}

impl<M: SharedMemory> FrontRing<M, Untyped, Untyped> {
    /// `SHARED_RING_INIT` + `FRONT_RING_INIT` on a ring whose entry layout is known only at
    /// run time: the caller writes requests and reads responses at the offsets that
    /// [`next_request_slot`](Self::next_request_slot) and
    /// [`take_response_slot`](Self::take_response_slot) return.
    pub fn init_with_layout(mem: M, layout: RingLayout) -> Result<Self, RingError> {
        let ring = RingMem::new(mem, layout)?;
        init_shared_ring(ring.mem())?;
        Ok(Self::from_parts(ring, 0))
    }

    /// The offset of the next request slot, counting it as produced (privately, until a
    /// push); [`RingError::Full`] as for [`push_request`](FrontRing::push_request).
    #[inline]
    pub fn next_request_slot(&mut self) -> Result<usize, RingError> {
        let i = self.request_slot()?;
        Ok(self.ring.layout().slot_offset(i))
    }

    /// The offset of the next published response, consuming it; `None` when there is none.
    #[inline]
    pub fn take_response_slot(&mut self) -> Result<Option<usize>, RingError> {
        Ok(self
            .response_slot()?
            .map(|i| self.ring.layout().slot_offset(i)))
    }
}

impl<M: SharedMemory, Req, Rsp> FrontRing<M, Req, Rsp> {
    fn from_parts(ring: RingMem<M>, idx: RING_IDX) -> Self {
        FrontRing {
            ring,
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
        self.ring.layout()
    }

    /// Entries in the ring (`RING_SIZE`).
    #[inline]
    pub fn ring_size(&self) -> u32 {
        self.ring.layout().nr_ents()
    }

    /// The shared memory.
    pub fn memory(&self) -> &M {
        self.ring.mem()
    }

    /// Gives the shared memory back.
    pub fn into_memory(self) -> M {
        self.ring.into_mem()
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
    #[inline]
    pub fn free_requests(&self) -> u32 {
        idx::free_requests(self.ring_size(), self.req_prod_pvt, self.rsp_cons)
    }

    /// `RING_FULL`.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// Requests queued or published whose responses have not been consumed.
    pub fn outstanding(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// The index of the next free request slot, counting it as produced.
    #[inline]
    fn request_slot(&mut self) -> Result<RING_IDX, RingError> {
        self.check()?;
        if self.is_full() {
            return Err(RingError::Full);
        }
        let i = self.req_prod_pvt;
        self.req_prod_pvt = i.wrapping_add(1);
        Ok(i)
    }

    /// The index of the next published response, consuming it.
    #[inline]
    fn response_slot(&mut self) -> Result<Option<RING_IDX>, RingError> {
        // A broken ring keeps `rsp_prod_seen == rsp_cons` (see `overflow`), so it always
        // takes this branch: the check is per batch, not per response.
        if self.rsp_cons == self.rsp_prod_seen {
            self.check()?;
            if self.refresh()? == 0 {
                return Ok(None);
            }
        }
        let i = self.rsp_cons;
        self.rsp_cons = i.wrapping_add(1);
        Ok(Some(i))
    }

    #[inline]
    fn check(&self) -> Result<(), RingError> {
        match self.broken {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// `RING_PUSH_REQUESTS`: publishes the queued requests without checking for a
    /// notification (write barrier, then `req_prod`).
    #[inline]
    pub fn push_requests(&mut self) {
        fence(Ordering::Release); // xen_wmb: requests before the index
        self.ring
            .hdr(SringField::ReqProd)
            .store(self.req_prod_pvt, Ordering::Relaxed);
        self.req_pushed = self.req_prod_pvt;
    }

    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`: publishes the queued requests and returns
    /// whether the back end asked for an event (notify its event channel when true).
    #[inline(always)]
    pub fn push_requests_and_check_notify(&mut self) -> bool {
        let old = self.req_pushed;
        let new = self.req_prod_pvt;
        fence(Ordering::Release); // xen_wmb: back sees requests before the index
        self.ring
            .hdr(SringField::ReqProd)
            .store(new, Ordering::Relaxed);
        self.req_pushed = new;
        fence(Ordering::SeqCst); // xen_mb: back sees the index before we read req_event
        let event = self.ring.hdr(SringField::ReqEvent).load(Ordering::Relaxed);
        idx::need_notify(new, old, event)
    }

    /// Reads and checks `rsp_prod`; returns the unconsumed responses.
    #[inline(always)]
    fn refresh(&mut self) -> Result<u32, RingError> {
        let prod = self.ring.hdr(SringField::RspProd).load(Ordering::Relaxed);
        fence(Ordering::Acquire); // xen_rmb: the index before the responses
        if idx::bad_response_prod(prod, self.rsp_cons, self.req_pushed) {
            return Err(self.overflow(prod));
        }
        self.rsp_prod_seen = prod;
        Ok(idx::nr_unconsumed_responses(prod, self.rsp_cons))
    }

    /// Breaks the ring on an impossible producer index.
    #[inline(always)]
    fn overflow(&mut self, prod: RING_IDX) -> RingError {
        let e = crate::overflow(prod, self.rsp_cons, self.ring_size());
        self.broken = Some(e);
        // Nothing more to take without a new look at `rsp_prod` (which `check` refuses).
        self.rsp_prod_seen = self.rsp_cons;
        e
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
    #[inline(always)]
    pub fn final_check_for_responses(&mut self) -> Result<bool, RingError> {
        self.check()?;
        if self.refresh()? > 0 {
            return Ok(true);
        }
        self.ring
            .hdr(SringField::RspEvent)
            .store(self.rsp_cons.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::SeqCst); // xen_mb
        Ok(self.refresh()? > 0)
    }
}
