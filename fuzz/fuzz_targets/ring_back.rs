//! A back ring (`xen_ring::BackRing`) driven by a hostile front end: arbitrary producer and
//! event indexes and arbitrary request bytes, interleaved with the back end's operations.
//! Checks: no panic, no hang (every operation is bounded), no access outside the ring, a
//! broken ring stays broken, and the back end never holds more than a ring of requests.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use xen_ring::{BackRing, RingError, SringField};
use xen_sys::{blkif_request, blkif_response};
use xen_types::mem::{PageBuf, SharedMemoryExt};
use xen_types::{Pages, PAGE_SIZE};

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u32(&mut self) -> Option<u32> {
        let mut v = [0u8; 4];
        for b in &mut v {
            *b = self.u8()?;
        }
        Some(u32::from_le_bytes(v))
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(first) = input.u8() else { return };
    let pages = 1u64 << (first % 3); // orders 0..=2
    let mem = Arc::new(PageBuf::new(pages as usize).unwrap());
    xen_ring::init_shared_ring(&*mem).unwrap();
    let start = if first & 0x80 != 0 { u32::MAX - 7 } else { 0 };
    mem.write_obj(SringField::ReqProd.offset(), start).unwrap();
    let mut back: BackRing<_, blkif_request, blkif_response> =
        BackRing::attach(mem.clone(), Pages(pages), start).unwrap();
    let size = back.ring_size();
    let mut broken: Option<RingError> = None;
    let mut batch = [blkif_request::default(); 8];

    while let Some(op) = input.u8() {
        // None: a front-end action (or an infallible push), nothing to check.
        let r: Option<Result<(), RingError>> = match op % 9 {
            // The front end publishes an arbitrary req_prod ...
            0 => {
                let Some(v) = input.u32() else { break };
                mem.write_obj(SringField::ReqProd.offset(), v).unwrap();
                None
            }
            // ... or a plausible one: a few past the back end's consumer.
            1 => {
                let Some(d) = input.u8() else { break };
                let v = back.req_cons().wrapping_add(u32::from(d % 40));
                mem.write_obj(SringField::ReqProd.offset(), v).unwrap();
                None
            }
            // Arbitrary bytes anywhere in the ring pages (entries or header).
            2 => {
                let (Some(off), Some(len)) = (input.u32(), input.u8()) else {
                    break;
                };
                let off = off as usize % (pages as usize * PAGE_SIZE);
                let n = usize::from(len)
                    .min(input.0.len())
                    .min(pages as usize * PAGE_SIZE - off);
                let (bytes, rest) = input.0.split_at(n);
                mem.write_bytes(off, bytes).unwrap();
                input.0 = rest;
                None
            }
            3 => Some(back.take_request().map(|q| {
                if let Some(q) = q {
                    // A request is a copy: reading its fields is plain data.
                    let _ = (q.operation, q.nr_segments, q.id, q.sector_number);
                }
            })),
            4 => Some(back.push_response(blkif_response {
                id: u64::from(op),
                ..Default::default()
            })),
            5 => {
                let _ = back.push_responses_and_check_notify();
                None
            }
            6 => Some(back.final_check_for_requests().map(|_| ())),
            7 => Some(
                back.take_requests_into(&mut batch)
                    .map(|n| assert!(n <= batch.len())),
            ),
            _ => {
                let Some(v) = input.u32() else { break };
                mem.write_obj(SringField::RspEvent.offset(), v).unwrap();
                Some(back.unconsumed_requests().map(|n| assert!(n <= size)))
            }
        };
        let Some(r) = r else {
            assert!(back.pending() <= size);
            continue;
        };
        match r {
            Err(e @ RingError::Overflow { .. }) => {
                assert!(broken.is_none() || broken == Some(e));
                broken = Some(e);
                assert_eq!(back.broken(), Some(e));
            }
            Err(RingError::NoOutstandingRequest) => assert_eq!(back.pending(), 0),
            Err(e) => {
                assert_eq!(Some(e), broken, "only a broken ring fails otherwise");
            }
            Ok(()) => assert!(broken.is_none(), "a broken ring must stay broken"),
        }
        assert!(back.pending() <= size, "more than a ring of requests taken");
    }
});
