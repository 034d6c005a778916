//! Shared rings of `xen/io/ring.h` with a per-protocol entry size.
//!
//! The blkif ring's layout depends on the frontend's ABI (entries of 108 or 112 bytes), so
//! these rings take the entry size at run time. The header (`req_prod`, `req_event`,
//! `rsp_prod`, `rsp_event`, padding) is 64 bytes; the entry count is the largest power of
//! two that fits (`__CONST_RING_SIZE`). Indexes are free-running `u32`s.
//!
//! (To be replaced by the `xen-ring` crate's rings once they take a run-time entry size.)

use std::sync::atomic::{fence, AtomicU32, Ordering};

use xen_types::mem::{SharedMemory, SharedMemoryExt};

use crate::Error;

const REQ_PROD: usize = std::mem::offset_of!(xen_sys::blkif_sring, req_prod);
const REQ_EVENT: usize = std::mem::offset_of!(xen_sys::blkif_sring, req_event);
const RSP_PROD: usize = std::mem::offset_of!(xen_sys::blkif_sring, rsp_prod);
const RSP_EVENT: usize = std::mem::offset_of!(xen_sys::blkif_sring, rsp_event);
/// Offset of the first entry.
pub const HEADER: usize = std::mem::offset_of!(xen_sys::blkif_sring, ring);

/// Entries in a ring of `bytes` with entries of `entry_size` (`__CONST_RING_SIZE`).
pub fn ring_size(bytes: usize, entry_size: usize) -> u32 {
    let n = bytes.saturating_sub(HEADER) / entry_size.max(1);
    if n == 0 {
        0
    } else {
        1u32 << (usize::BITS - 1 - n.leading_zeros())
    }
}

fn idx<M: SharedMemory>(mem: &M, off: usize) -> Result<&AtomicU32, Error> {
    Ok(mem.atomic_u32(off)?)
}

/// Backend end of a ring: consumes requests, produces responses.
pub struct BackRing<M: SharedMemory> {
    mem: M,
    entry: usize,
    size: u32,
    req_cons: u32,
    rsp_prod_pvt: u32,
}

impl<M: SharedMemory> std::fmt::Debug for BackRing<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackRing")
            .field("size", &self.size)
            .field("req_cons", &self.req_cons)
            .field("rsp_prod_pvt", &self.rsp_prod_pvt)
            .finish()
    }
}

impl<M: SharedMemory> BackRing<M> {
    /// Attaches to an initialised shared ring (`BACK_RING_ATTACH` at the current `rsp_prod`).
    pub fn attach(mem: M, entry_size: usize) -> Result<Self, Error> {
        let size = ring_size(mem.len(), entry_size);
        if size == 0 {
            return Err(Error::BadRing("ring too small".into()));
        }
        let rsp_prod = idx(&mem, RSP_PROD)?.load(Ordering::Acquire);
        Ok(BackRing {
            mem,
            entry: entry_size,
            size,
            req_cons: rsp_prod,
            rsp_prod_pvt: rsp_prod,
        })
    }

    /// Entries.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The shared memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Requests ready to consume without overrunning responses we still owe
    /// (`RING_UNCONSUMED_REQUESTS`). A frontend that claims more than a ring's worth of
    /// outstanding requests is refused with [`Error::BadRing`].
    pub fn unconsumed(&self) -> Result<u32, Error> {
        let prod = idx(&self.mem, REQ_PROD)?.load(Ordering::Acquire);
        if prod.wrapping_sub(self.rsp_prod_pvt) > self.size {
            return Err(Error::BadRing(format!(
                "req_prod {prod} overruns the ring (rsp_prod {}, size {})",
                self.rsp_prod_pvt, self.size
            )));
        }
        let reqs = prod.wrapping_sub(self.req_cons);
        let room = self.size - self.req_cons.wrapping_sub(self.rsp_prod_pvt);
        Ok(reqs.min(room))
    }

    /// Byte offset of the next request to consume, and consumes it. Call only after
    /// [`unconsumed`](Self::unconsumed) said one is there.
    pub fn next_request(&mut self) -> usize {
        let off = HEADER + (self.req_cons & (self.size - 1)) as usize * self.entry;
        self.req_cons = self.req_cons.wrapping_add(1);
        off
    }

    /// Byte offset where the next response goes; counts it as produced (privately).
    pub fn next_response(&mut self) -> usize {
        let off = HEADER + (self.rsp_prod_pvt & (self.size - 1)) as usize * self.entry;
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        off
    }

    /// Responses produced but not yet consumed by us as requests (in flight).
    pub fn in_flight(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    /// Publishes private responses; true when the frontend must be notified
    /// (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`).
    pub fn push_responses(&mut self) -> Result<bool, Error> {
        let prod = idx(&self.mem, RSP_PROD)?;
        let old = prod.load(Ordering::Relaxed);
        let new = self.rsp_prod_pvt;
        prod.store(new, Ordering::Release);
        fence(Ordering::SeqCst);
        let event = idx(&self.mem, RSP_EVENT)?.load(Ordering::Acquire);
        Ok(new.wrapping_sub(event) < new.wrapping_sub(old))
    }

    /// True when requests are waiting; otherwise arms `req_event` and checks once more
    /// (`RING_FINAL_CHECK_FOR_REQUESTS`).
    pub fn final_check_for_requests(&mut self) -> Result<bool, Error> {
        if self.unconsumed()? > 0 {
            return Ok(true);
        }
        idx(&self.mem, REQ_EVENT)?.store(self.req_cons.wrapping_add(1), Ordering::Release);
        fence(Ordering::SeqCst);
        Ok(self.unconsumed()? > 0)
    }
}

/// Frontend end of a ring: produces requests, consumes responses.
pub struct FrontRing<M: SharedMemory> {
    mem: M,
    entry: usize,
    size: u32,
    req_prod_pvt: u32,
    rsp_cons: u32,
}

impl<M: SharedMemory> std::fmt::Debug for FrontRing<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontRing")
            .field("size", &self.size)
            .field("req_prod_pvt", &self.req_prod_pvt)
            .field("rsp_cons", &self.rsp_cons)
            .finish()
    }
}

impl<M: SharedMemory> FrontRing<M> {
    /// Initialises the shared ring (`SHARED_RING_INIT` + `FRONT_RING_INIT`).
    pub fn init(mem: M, entry_size: usize) -> Result<Self, Error> {
        let size = ring_size(mem.len(), entry_size);
        if size == 0 {
            return Err(Error::BadRing("ring too small".into()));
        }
        mem.fill(0, HEADER, 0)?;
        idx(&mem, REQ_EVENT)?.store(1, Ordering::Relaxed);
        idx(&mem, RSP_EVENT)?.store(1, Ordering::Release);
        Ok(FrontRing {
            mem,
            entry: entry_size,
            size,
            req_prod_pvt: 0,
            rsp_cons: 0,
        })
    }

    /// Entries.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The shared memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Free request slots (`RING_FREE_REQUESTS`).
    pub fn free(&self) -> u32 {
        self.size - self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Byte offset of the next request slot; counts it as produced (privately).
    pub fn next_request(&mut self) -> usize {
        let off = HEADER + (self.req_prod_pvt & (self.size - 1)) as usize * self.entry;
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        off
    }

    /// Publishes requests; true when the backend must be notified.
    pub fn push_requests(&mut self) -> Result<bool, Error> {
        let prod = idx(&self.mem, REQ_PROD)?;
        let old = prod.load(Ordering::Relaxed);
        let new = self.req_prod_pvt;
        prod.store(new, Ordering::Release);
        fence(Ordering::SeqCst);
        let event = idx(&self.mem, REQ_EVENT)?.load(Ordering::Acquire);
        Ok(new.wrapping_sub(event) < new.wrapping_sub(old))
    }

    /// Offset of the next unconsumed response, consuming it.
    pub fn next_response(&mut self) -> Result<Option<usize>, Error> {
        let prod = idx(&self.mem, RSP_PROD)?.load(Ordering::Acquire);
        if prod == self.rsp_cons {
            return Ok(None);
        }
        if prod.wrapping_sub(self.rsp_cons) > self.size {
            return Err(Error::BadRing("rsp_prod overruns the ring".into()));
        }
        let off = HEADER + (self.rsp_cons & (self.size - 1)) as usize * self.entry;
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(off))
    }

    /// Arms `rsp_event` and reports whether responses arrived meanwhile
    /// (`RING_FINAL_CHECK_FOR_RESPONSES`).
    pub fn final_check_for_responses(&mut self) -> Result<bool, Error> {
        let prod = idx(&self.mem, RSP_PROD)?;
        if prod.load(Ordering::Acquire) != self.rsp_cons {
            return Ok(true);
        }
        idx(&self.mem, RSP_EVENT)?.store(self.rsp_cons.wrapping_add(1), Ordering::Release);
        fence(Ordering::SeqCst);
        Ok(prod.load(Ordering::Acquire) != self.rsp_cons)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use xen_types::mem::PageBuf;

    use super::*;

    #[test]
    fn sizes_match_const_ring_size() {
        assert_eq!(HEADER, 64);
        assert_eq!(ring_size(4096, 112), 32);
        assert_eq!(ring_size(4096, 108), 32);
        assert_eq!(ring_size(4096 * 2, 112), 64);
        assert_eq!(ring_size(4096 * 16, 112), 512);
        assert_eq!(ring_size(64, 112), 0);
    }

    #[test]
    fn requests_and_responses_flow_and_notify_once() {
        let page = Arc::new(PageBuf::new(1).unwrap());
        let mut f = FrontRing::init(page.clone(), 112).unwrap();
        let mut b = BackRing::attach(page.clone(), 112).unwrap();
        assert!(!b.final_check_for_requests().unwrap());
        for i in 0..3u64 {
            let off = f.next_request();
            page.write_obj(off, i).unwrap();
        }
        assert!(f.push_requests().unwrap(), "backend armed req_event");
        assert_eq!(b.unconsumed().unwrap(), 3);
        for i in 0..3u64 {
            let off = b.next_request();
            assert_eq!(page.read_obj::<u64>(off).unwrap(), i);
        }
        assert!(!f.final_check_for_responses().unwrap());
        let off = b.next_response();
        page.write_obj(off, 7u64).unwrap();
        assert!(b.push_responses().unwrap());
        let off = b.next_response();
        page.write_obj(off, 8u64).unwrap();
        assert!(!b.push_responses().unwrap(), "frontend not re-armed yet");
        assert_eq!(
            f.next_response()
                .unwrap()
                .map(|o| page.read_obj::<u64>(o).unwrap()),
            Some(7)
        );
        assert_eq!(
            f.next_response()
                .unwrap()
                .map(|o| page.read_obj::<u64>(o).unwrap()),
            Some(8)
        );
        assert_eq!(f.next_response().unwrap(), None);
        assert_eq!(b.in_flight(), 1);
        assert_eq!(f.free(), 31);
    }

    #[test]
    fn overrunning_producer_is_refused() {
        let page = Arc::new(PageBuf::new(1).unwrap());
        let mut b = BackRing::attach(page.clone(), 112).unwrap();
        page.atomic_u32(0).unwrap().store(33, Ordering::SeqCst);
        assert!(matches!(b.unconsumed(), Err(Error::BadRing(_))));
        page.atomic_u32(0).unwrap().store(32, Ordering::SeqCst);
        assert_eq!(b.unconsumed().unwrap(), 32);
        for _ in 0..32 {
            b.next_request();
        }
        // No room until responses are produced, even if the frontend moves req_prod on.
        assert_eq!(b.unconsumed().unwrap(), 0);
        b.next_response();
        page.atomic_u32(0).unwrap().store(33, Ordering::SeqCst);
        assert_eq!(b.unconsumed().unwrap(), 1);
    }
}
