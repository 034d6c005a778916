//! The back end of a ring: consumes requests, produces responses.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{fence, Ordering};

use xen_types::mem::{Pod, SharedMemory};
use xen_types::Pages;

use crate::idx;
use crate::layout::{RingLayout, SringField};
use crate::slot::{read_volatile_words, RingMem, Slot, SlotMut};
use crate::{Pushed, RingError, Untyped, RING_IDX};

/// The back end of a shared ring (`struct X_back_ring`): the end that serves requests
/// (blkback, netback) and produces responses.
///
/// The front end is untrusted: [`take_request`](Self::take_request) copies each request out
/// of the shared page (`RING_COPY_REQUEST`, so a request cannot change while it is checked),
/// and an impossible `req_prod` (more than a ring ahead of our responses, or behind our
/// consumer) breaks the ring with [`RingError::Overflow`].
pub struct BackRing<M, Req, Rsp> {
    ring: RingMem<M>,
    rsp_prod_pvt: RING_IDX,
    req_cons: RING_IDX,
    /// The `rsp_prod` we last published.
    rsp_pushed: RING_IDX,
    /// The `req_prod` we last read and checked.
    req_prod_seen: RING_IDX,
    broken: Option<RingError>,
    _types: PhantomData<fn(Req) -> Rsp>,
}

impl<M, Req, Rsp> fmt::Debug for BackRing<M, Req, Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackRing")
            .field("layout", self.ring.layout())
            .field("rsp_prod_pvt", &self.rsp_prod_pvt)
            .field("req_cons", &self.req_cons)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<M: SharedMemory, Req: Pod, Rsp: Pod> BackRing<M, Req, Rsp> {
    /// `BACK_RING_INIT`: a back end on the shared ring the front end initialised in `mem`
    /// (`nr_pages` contiguous pages, as mapped from the front end's grant references).
    /// The shared page is not written.
    pub fn new(mem: M, nr_pages: Pages) -> Result<Self, RingError> {
        Self::attach(mem, nr_pages, 0)
    }

    /// `BACK_RING_ATTACH`: a back end continuing at index `idx` (both `rsp_prod_pvt` and
    /// `req_cons`).
    pub fn attach(mem: M, nr_pages: Pages, idx: RING_IDX) -> Result<Self, RingError> {
        let layout = RingLayout::of::<Req, Rsp>(nr_pages)
            .ok_or(RingError::Layout("no entry fits in nr_pages pages"))?;
        Ok(Self::from_parts(
            RingMem::typed::<Req, Rsp>(mem, layout)?,
            idx,
        ))
    }

    /// Copies out the next request (`RING_COPY_REQUEST`), or `None` when none is published,
    /// or when a ring's worth of requests is taken and unanswered
    /// (`RING_REQUEST_CONS_OVERFLOW`: push responses first).
    ///
    /// `req_prod` is read (and checked) only when the requests seen last time are all
    /// taken, so a loop of `take_request` checks the front end's index once per batch.
    #[inline]
    pub fn take_request(&mut self) -> Result<Option<Req>, RingError> {
        match self.take_slot()? {
            // SAFETY: `RingMem::typed` checked that a Req fits every slot, aligned.
            Some(idx) => Ok(Some(unsafe { self.copy_out(idx) })),
            None => Ok(None),
        }
    }

    /// The next request, consumed and read in place (`RING_GET_REQUEST(r, req_cons++)`), or
    /// `None` as for [`take_request`](Self::take_request): read each field once with
    /// [`Slot::get`] (or copy it with [`Slot::read`]) before answering it.
    #[inline]
    pub fn next_request(&mut self) -> Result<Option<Slot<'_, Req>>, RingError> {
        match self.take_slot()? {
            // SAFETY: `RingMem::typed` checked that a Req fits every slot, aligned; the slot
            // borrows the ring, which keeps the memory mapped.
            Some(idx) => Ok(Some(unsafe { self.ring.slot::<Req, Rsp, Req>(idx) })),
            None => Ok(None),
        }
    }

    /// Serves up to `max` published requests, reading (and checking) `req_prod` once, with
    /// one read barrier for the batch: `serve(request, response)` reads each request in place
    /// and fills its response slot in place; then the responses are published
    /// (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`, one write barrier and one index store for the
    /// batch, none when nothing is new). The batch form of
    /// [`next_request`](Self::next_request) + [`next_response`](Self::next_response) + push,
    /// answering in order; capped, as those are, by the free response slots.
    ///
    /// The response slot may be the request's own slot (it is whenever every earlier request
    /// is answered): read what you need of the request before writing the response. Both are
    /// volatile views of shared memory, never references, so this is a question of what the
    /// response holds, not of soundness.
    ///
    /// ```
    /// # use std::{mem::offset_of, sync::Arc};
    /// # use xen_ring::{BackRing, FrontRing};
    /// # use xen_sys::{blkif_request, blkif_response};
    /// # use xen_types::{mem::PageBuf, Pages};
    /// let page = Arc::new(PageBuf::new(1).unwrap());
    /// let mut front: FrontRing<_, blkif_request, blkif_response> =
    ///     FrontRing::new(page.clone(), Pages(1)).unwrap();
    /// let mut back: BackRing<_, blkif_request, blkif_response> =
    ///     BackRing::new(page, Pages(1)).unwrap();
    /// front.push_requests_with(3, |q, k| q.set(offset_of!(blkif_request, id), u64::from(k)))
    ///     .unwrap();
    /// let served = back
    ///     .serve_requests_with(u32::MAX, |q, s| {
    ///         let id: u64 = q.get(offset_of!(blkif_request, id));
    ///         s.set(offset_of!(blkif_response, id), id);
    ///         s.set(offset_of!(blkif_response, status), 0i16);
    ///     })
    ///     .unwrap();
    /// assert_eq!(served.count, 3);
    /// ```
    #[inline]
    pub fn serve_requests_with(
        &mut self,
        max: u32,
        mut serve: impl FnMut(&Slot<'_, Req>, &mut SlotMut<'_, Rsp>),
    ) -> Result<Pushed, RingError> {
        self.check()?;
        let count = self.refresh()?.min(max);
        let (cons, prod) = (self.req_cons, self.rsp_prod_pvt);
        for k in 0..count {
            // SAFETY: `RingMem::typed` made the ring for Req/Rsp; the slots live for this
            // iteration, while the ring is borrowed. `refresh` capped `count` so that
            // response slots `prod + k` are never requests not yet consumed (the response
            // slot is request `cons + k`'s own or an answered one's).
            let (q, mut s) = unsafe {
                (
                    self.ring.slot::<Req, Rsp, Req>(cons.wrapping_add(k)),
                    self.ring.slot_mut::<Req, Rsp, Rsp>(prod.wrapping_add(k)),
                )
            };
            serve(&q, &mut s);
        }
        self.req_cons = cons.wrapping_add(count);
        self.rsp_prod_pvt = prod.wrapping_add(count);
        let notify = self.rsp_prod_pvt != self.rsp_pushed && self.push_responses_and_check_notify();
        Ok(Pushed { count, notify })
    }

    /// Copies out up to `out.len()` requests (as many as [`take_request`](Self::take_request)
    /// would return one by one, reading `req_prod` once); returns how many. The batch form
    /// of the hot path: one index check per batch, no allocation.
    pub fn take_requests_into(&mut self, out: &mut [Req]) -> Result<usize, RingError> {
        self.check()?;
        let avail = self.refresh()? as usize;
        let n = avail.min(out.len());
        let mut cons = self.req_cons;
        for slot in &mut out[..n] {
            // SAFETY: `RingMem::typed` checked that a Req fits every slot, aligned.
            *slot = unsafe { self.copy_out(cons) };
            cons = cons.wrapping_add(1);
        }
        self.req_cons = cons;
        Ok(n)
    }

    /// The next response slot, to fill in place (`RING_GET_RESPONSE(r, rsp_prod_pvt++)`):
    /// counted as produced now, seen by the front end after a push. Responses answer taken
    /// requests, one each ([`RingError::NoOutstandingRequest`] otherwise).
    #[inline]
    pub fn next_response(&mut self) -> Result<SlotMut<'_, Rsp>, RingError> {
        let idx = self.response_slot()?;
        // SAFETY: `RingMem::typed` checked that an Rsp fits every slot, aligned; the slot
        // borrows the ring, which keeps the memory mapped.
        Ok(unsafe { self.ring.slot_mut::<Req, Rsp, Rsp>(idx) })
    }

    /// Writes `rsp` into the next response slot (`RING_GET_RESPONSE(r, rsp_prod_pvt++)`);
    /// the front end sees it after a push. Responses answer taken requests, one each.
    #[inline]
    pub fn push_response(&mut self, rsp: Rsp) -> Result<(), RingError> {
        self.next_response()?.write(rsp);
        Ok(())
    }

    /// Writes as many of `rsps` as there are taken, unanswered requests; returns how many.
    pub fn push_response_slice(&mut self, rsps: &[Rsp]) -> Result<usize, RingError> {
        self.check()?;
        let n = rsps.len().min(self.pending() as usize);
        let mut prod = self.rsp_prod_pvt;
        for rsp in &rsps[..n] {
            // SAFETY: `RingMem::typed` checked that an Rsp fits every slot, aligned.
            unsafe { self.ring.slot_mut::<Req, Rsp, Rsp>(prod) }.write(*rsp);
            prod = prod.wrapping_add(1);
        }
        self.rsp_prod_pvt = prod;
        Ok(n)
    }

    /// Copies the request at index `idx` out of the shared page, once.
    ///
    /// # Safety
    ///
    /// A `Req` fits every slot, aligned (`RingMem::typed`).
    #[inline(always)]
    unsafe fn copy_out(&self, idx: RING_IDX) -> Req {
        // SAFETY: the caller's promise, and `slot` is inside the mapping.
        unsafe {
            read_volatile_words(
                self.ring.typed_slot::<Req, Rsp>(idx).as_ptr(),
                align_of::<Req>(),
            )
        }
    }
}

impl<M: SharedMemory> BackRing<M, Untyped, Untyped> {
    /// A back end at index `idx` on a ring whose entry layout is known only at run time
    /// (blkif's entries are 108 or 112 bytes depending on the front end's ABI): the requests
    /// and responses are read and written by the caller at the offsets that
    /// [`take_request_slot`](Self::take_request_slot) and
    /// [`next_response_slot`](Self::next_response_slot) return.
    pub fn with_layout(mem: M, layout: RingLayout, idx: RING_IDX) -> Result<Self, RingError> {
        Ok(Self::from_parts(RingMem::new(mem, layout)?, idx))
    }

    /// The offset of the next request, consuming it; `None` as for
    /// [`take_request`](BackRing::take_request). Copy the request out of the shared page
    /// once, then check the copy (`RING_COPY_REQUEST`).
    #[inline]
    pub fn take_request_slot(&mut self) -> Result<Option<usize>, RingError> {
        Ok(self.take_slot()?.map(|i| self.ring.layout().slot_offset(i)))
    }

    /// The offset where the next response goes, counting it as produced (privately, until
    /// a push); one per taken request, as [`push_response`](BackRing::push_response).
    #[inline]
    pub fn next_response_slot(&mut self) -> Result<usize, RingError> {
        let i = self.response_slot()?;
        Ok(self.ring.layout().slot_offset(i))
    }
}

impl<M: SharedMemory, Req, Rsp> BackRing<M, Req, Rsp> {
    fn from_parts(ring: RingMem<M>, idx: RING_IDX) -> Self {
        BackRing {
            ring,
            rsp_prod_pvt: idx,
            req_cons: idx,
            rsp_pushed: idx,
            req_prod_seen: idx,
            broken: None,
            _types: PhantomData,
        }
    }

    #[cfg(test)]
    pub(crate) fn set_indexes(&mut self, req_cons: RING_IDX, rsp_prod_pvt: RING_IDX) {
        self.req_cons = req_cons;
        self.req_prod_seen = req_cons;
        self.rsp_prod_pvt = rsp_prod_pvt;
        self.rsp_pushed = rsp_prod_pvt;
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

    /// Next request index to consume (`req_cons`).
    pub fn req_cons(&self) -> RING_IDX {
        self.req_cons
    }

    /// Next response index to fill (`rsp_prod_pvt`).
    pub fn rsp_prod_pvt(&self) -> RING_IDX {
        self.rsp_prod_pvt
    }

    /// The error that broke the ring, if the front end misbehaved.
    pub fn broken(&self) -> Option<RingError> {
        self.broken
    }

    /// Requests taken and not yet answered.
    #[inline]
    pub fn pending(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    /// The index of the next request, consuming it (the index checks of `take_request`).
    /// `req_prod` is read and checked only when the requests seen last time are used up:
    /// the per-request checks are two comparisons of private indexes, as in the C loop
    /// (`req_cons != rp && !RING_REQUEST_CONS_OVERFLOW`).
    #[inline]
    fn take_slot(&mut self) -> Result<Option<RING_IDX>, RingError> {
        // A broken ring keeps `req_prod_seen == req_cons` (see `overflow`), so it always
        // takes this branch: the check is per batch, not per request.
        if self.req_cons == self.req_prod_seen {
            self.check()?;
            if self.refresh()? == 0 {
                return Ok(None);
            }
        }
        if idx::request_cons_overflow(self.ring_size(), self.rsp_prod_pvt, self.req_cons) {
            return Ok(None);
        }
        let i = self.req_cons;
        self.req_cons = i.wrapping_add(1);
        Ok(Some(i))
    }

    /// The index of the next response slot, counting it as produced.
    #[inline]
    fn response_slot(&mut self) -> Result<RING_IDX, RingError> {
        self.check()?;
        if self.rsp_prod_pvt == self.req_cons {
            return Err(RingError::NoOutstandingRequest);
        }
        let i = self.rsp_prod_pvt;
        self.rsp_prod_pvt = i.wrapping_add(1);
        Ok(i)
    }

    #[inline]
    fn check(&self) -> Result<(), RingError> {
        match self.broken {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Reads and checks `req_prod`; returns the requests we may take now
    /// (`XEN_RING_NR_UNCONSUMED_REQUESTS`).
    #[inline(always)]
    fn refresh(&mut self) -> Result<u32, RingError> {
        let prod = self.ring.hdr(SringField::ReqProd).load(Ordering::Relaxed);
        fence(Ordering::Acquire); // xen_rmb: the index before the requests
        let size = self.ring_size();
        if idx::bad_request_prod(size, prod, self.req_cons, self.rsp_prod_pvt) {
            return Err(self.overflow(prod));
        }
        self.req_prod_seen = prod;
        Ok(idx::nr_unconsumed_requests(
            size,
            prod,
            self.req_cons,
            self.rsp_prod_pvt,
        ))
    }

    /// Breaks the ring on an impossible producer index.
    #[inline(always)]
    fn overflow(&mut self, prod: RING_IDX) -> RingError {
        let e = crate::overflow(prod, self.req_cons, self.ring_size());
        self.broken = Some(e);
        // Nothing more to take without a new look at `req_prod` (which `check` refuses).
        self.req_prod_seen = self.req_cons;
        e
    }

    /// `RING_HAS_UNCONSUMED_REQUESTS`: requests published and takeable now (capped by the
    /// response slots left).
    pub fn unconsumed_requests(&mut self) -> Result<u32, RingError> {
        self.check()?;
        self.refresh()
    }

    /// `RING_PUSH_RESPONSES`: publishes queued responses without checking for a
    /// notification.
    #[inline]
    pub fn push_responses(&mut self) {
        fence(Ordering::Release); // xen_wmb
        self.ring
            .hdr(SringField::RspProd)
            .store(self.rsp_prod_pvt, Ordering::Relaxed);
        self.rsp_pushed = self.rsp_prod_pvt;
    }

    /// `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`: publishes queued responses and returns whether
    /// the front end asked for an event.
    #[inline(always)]
    pub fn push_responses_and_check_notify(&mut self) -> bool {
        let old = self.rsp_pushed;
        let new = self.rsp_prod_pvt;
        fence(Ordering::Release); // xen_wmb: front sees responses before the index
        self.ring
            .hdr(SringField::RspProd)
            .store(new, Ordering::Relaxed);
        self.rsp_pushed = new;
        fence(Ordering::SeqCst); // xen_mb: front sees the index before we read rsp_event
        let event = self.ring.hdr(SringField::RspEvent).load(Ordering::Relaxed);
        idx::need_notify(new, old, event)
    }

    /// Asks for an event at the next request published after those seen now
    /// (`req_event = req_prod + 1`, as Linux's netback does while it waits for enough rx
    /// slots), then returns the requests takeable now.
    pub fn request_event_after_published(&mut self) -> Result<u32, RingError> {
        self.check()?;
        self.refresh()?;
        self.ring
            .hdr(SringField::ReqEvent)
            .store(self.req_prod_seen.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::SeqCst); // xen_mb
        self.refresh()
    }

    /// `RING_FINAL_CHECK_FOR_REQUESTS`: true when requests can be taken; otherwise asks for
    /// an event at the next request (`req_event = req_cons + 1`) and checks again. Sleep on
    /// the event channel only when this returns false.
    #[inline(always)]
    pub fn final_check_for_requests(&mut self) -> Result<bool, RingError> {
        self.check()?;
        if self.refresh()? > 0 {
            return Ok(true);
        }
        self.ring
            .hdr(SringField::ReqEvent)
            .store(self.req_cons.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::SeqCst); // xen_mb
        Ok(self.refresh()? > 0)
    }
}
