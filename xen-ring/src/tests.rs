//! Tests of the rings on their own, against hostile peers, and against the C macros.

use std::mem::offset_of;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use xen_sys::{blkif_request, blkif_response, netif_rx_request, netif_rx_response};
use xen_sys::{netif_tx_request, netif_tx_response};
use xen_types::mem::{PageBuf, SharedMemoryExt};
use xen_types::Pages;

use crate::idx;
use crate::testing::{
    run_back, run_back_batched, run_front, run_front_batched, Bells, BlkifWorkload, Doorbell,
    TestReq, TestRsp, TestWorkload,
};
use crate::{BackRing, FrontRing, RingError, RingLayout, SringField};

type TFront = FrontRing<Arc<PageBuf>, TestReq, TestRsp>;
type TBack = BackRing<Arc<PageBuf>, TestReq, TestRsp>;

const TIMEOUT: Duration = Duration::from_secs(20);

fn pair(pages: u64) -> (TFront, TBack, Arc<PageBuf>) {
    let mem = Arc::new(PageBuf::new(pages as usize).unwrap());
    let f = FrontRing::new(mem.clone(), Pages(pages)).unwrap();
    let b = BackRing::new(mem.clone(), Pages(pages)).unwrap();
    (f, b, mem)
}

fn set(mem: &PageBuf, f: SringField, v: u32) {
    mem.write_obj(f.offset(), v).unwrap();
}

fn get(mem: &PageBuf, f: SringField) -> u32 {
    mem.read_obj(f.offset()).unwrap()
}

#[test]
fn new_initialises_the_shared_ring() {
    let mem = Arc::new(PageBuf::new(1).unwrap());
    mem.fill(0, 4096, 0xa5).unwrap();
    let f: TFront = FrontRing::new(mem.clone(), Pages(1)).unwrap();
    assert_eq!(get(&mem, SringField::ReqProd), 0);
    assert_eq!(get(&mem, SringField::RspProd), 0);
    assert_eq!(get(&mem, SringField::ReqEvent), 1);
    assert_eq!(get(&mem, SringField::RspEvent), 1);
    let mut pad = [0xffu8; 48];
    mem.read_bytes(16, &mut pad).unwrap();
    assert_eq!(pad, [0u8; 48]);
    // Entries are left alone.
    assert_eq!(mem.read_obj::<u8>(64).unwrap(), 0xa5);
    // (4096 - 64) / 64 = 63 -> 32 entries.
    assert_eq!(f.ring_size(), 32);
    assert_eq!(f.free_requests(), 32);
}

#[test]
fn bad_memory_is_rejected() {
    let mem = Arc::new(PageBuf::new(1).unwrap());
    let e = TFront::new(mem.clone(), Pages(2)).unwrap_err();
    assert!(matches!(e, RingError::Layout(_)), "{e}");
    assert!(matches!(
        TBack::new(mem.clone(), Pages(0)),
        Err(RingError::Layout(_))
    ));
    let r: Result<BackRing<_, [u8; 8192], u8>, _> = BackRing::new(mem, Pages(1));
    assert!(matches!(r, Err(RingError::Layout(_))));
}

#[test]
fn requests_and_responses_round_trip_with_wraparound() {
    let (mut f, mut b, _mem) = pair(1);
    let size = f.ring_size();
    let mut next_rsp = 0u64;
    for round in 0..200u64 {
        let k = 1 + (round % u64::from(size));
        for i in 0..k {
            f.push_request(TestReq::nth(round * 1000 + i)).unwrap();
        }
        f.push_requests_and_check_notify();
        for i in 0..k {
            let q = b.take_request().unwrap().unwrap();
            assert_eq!(q, TestReq::nth(round * 1000 + i));
            b.push_response(TestRsp {
                id: q.id,
                csum: q.csum,
                status: 0,
            })
            .unwrap();
        }
        assert_eq!(b.take_request().unwrap(), None);
        b.push_responses_and_check_notify();
        for i in 0..k {
            let s = f.take_response().unwrap().unwrap();
            assert_eq!(s.id, round * 1000 + i);
            next_rsp += 1;
        }
        assert_eq!(f.take_response().unwrap(), None);
    }
    assert_eq!(u64::from(f.rsp_cons()), next_rsp);
}

#[test]
fn full_ring_refuses_requests() {
    let (mut f, mut b, _mem) = pair(1);
    for i in 0..32 {
        f.push_request(TestReq::nth(i)).unwrap();
    }
    assert!(f.is_full());
    assert_eq!(f.push_request(TestReq::nth(99)), Err(RingError::Full));
    f.push_requests();
    // The back end may take all 32, then no more until it responds.
    let mut got = [TestReq::default(); 40];
    assert_eq!(b.take_requests_into(&mut got).unwrap(), 32);
    assert_eq!(b.push_response(TestRsp::default()), Ok(()));
    assert_eq!(b.pending(), 31);
    b.push_responses();
    assert_eq!(f.take_response().unwrap(), Some(TestRsp::default()));
    assert_eq!(f.free_requests(), 1);
    assert_eq!(f.push_request_slice(&[TestReq::nth(1); 5]).unwrap(), 1);
}

#[test]
fn response_without_request_is_refused() {
    let (_f, mut b, _mem) = pair(1);
    assert_eq!(
        b.push_response(TestRsp::default()),
        Err(RingError::NoOutstandingRequest)
    );
}

#[test]
fn notifications_follow_the_event_indexes() {
    let (mut f, mut b, mem) = pair(1);
    // Back end idle: it armed req_event = req_cons + 1 = 1.
    assert!(!b.final_check_for_requests().unwrap());
    f.push_request(TestReq::nth(0)).unwrap();
    assert!(f.push_requests_and_check_notify());
    // Until the back end re-arms, more requests need no notification.
    f.push_request(TestReq::nth(1)).unwrap();
    assert!(!f.push_requests_and_check_notify());
    assert!(b.final_check_for_requests().unwrap());
    assert_eq!(
        get(&mem, SringField::ReqEvent),
        1,
        "no re-arm while work is pending"
    );
    b.take_request().unwrap().unwrap();
    b.take_request().unwrap().unwrap();
    assert!(!b.final_check_for_requests().unwrap());
    assert_eq!(get(&mem, SringField::ReqEvent), 3);
    f.push_request(TestReq::nth(2)).unwrap();
    assert!(f.push_requests_and_check_notify());

    // Responses: the front end has not re-armed since init (rsp_event = 1).
    b.push_response(TestRsp::default()).unwrap();
    assert!(b.push_responses_and_check_notify());
    b.push_response(TestRsp::default()).unwrap();
    assert!(!b.push_responses_and_check_notify());
    assert!(f.final_check_for_responses().unwrap());
    f.take_response().unwrap().unwrap();
    f.take_response().unwrap().unwrap();
    assert!(!f.final_check_for_responses().unwrap());
    assert_eq!(get(&mem, SringField::RspEvent), 3);
}

#[test]
fn hostile_front_end_prod_too_far_ahead_breaks_the_ring() {
    let (_f, mut b, mem) = pair(1);
    set(&mem, SringField::ReqProd, 33);
    let e = b.take_request().unwrap_err();
    assert_eq!(
        e,
        RingError::Overflow {
            prod: 33,
            cons: 0,
            size: 32
        }
    );
    // Sticky: fixing the index does not revive the ring.
    set(&mem, SringField::ReqProd, 1);
    assert_eq!(b.take_request(), Err(e));
    assert_eq!(b.final_check_for_requests(), Err(e));
    assert_eq!(b.push_response(TestRsp::default()), Err(e));
    assert_eq!(b.broken(), Some(e));
}

#[test]
fn hostile_front_end_prod_going_backwards_breaks_the_ring() {
    let (mut f, mut b, mem) = pair(1);
    for i in 0..10 {
        f.push_request(TestReq::nth(i)).unwrap();
    }
    f.push_requests();
    for _ in 0..10 {
        b.take_request().unwrap().unwrap();
    }
    // req_cons = 10 and no responses yet: 5 is inside RING_REQUEST_PROD_OVERFLOW's window
    // (5 - 0 <= 32) but behind our consumer.
    set(&mem, SringField::ReqProd, 5);
    assert!(matches!(
        b.final_check_for_requests(),
        Err(RingError::Overflow {
            prod: 5,
            cons: 10,
            ..
        })
    ));
}

#[test]
fn hostile_back_end_is_detected() {
    let (mut f, _b, mem) = pair(1);
    for i in 0..4 {
        f.push_request(TestReq::nth(i)).unwrap();
    }
    f.push_requests();
    set(&mem, SringField::RspProd, 5);
    assert_eq!(
        f.take_response(),
        Err(RingError::Overflow {
            prod: 5,
            cons: 0,
            size: 32
        })
    );
    assert!(f.broken().is_some());
    assert_eq!(f.push_request(TestReq::nth(9)), Err(f.broken().unwrap()));

    // Backwards.
    let (mut f, _b, mem) = pair(1);
    f.push_request(TestReq::nth(0)).unwrap();
    f.push_requests();
    set(&mem, SringField::RspProd, u32::MAX);
    assert!(f.final_check_for_responses().is_err());
}

#[test]
fn attach_resumes_at_an_index_across_the_wrap() {
    let mem = Arc::new(PageBuf::new(1).unwrap());
    let start = u32::MAX - 5;
    crate::init_shared_ring(&*mem).unwrap();
    set(&mem, SringField::ReqProd, start);
    set(&mem, SringField::RspProd, start);
    let mut f: TFront = FrontRing::attach(mem.clone(), Pages(1), start).unwrap();
    let mut b: TBack = BackRing::attach(mem.clone(), Pages(1), start).unwrap();
    for i in 0..20 {
        f.push_request(TestReq::nth(i)).unwrap();
    }
    f.push_requests();
    for i in 0..20 {
        let q = b.take_request().unwrap().unwrap();
        assert_eq!(q.id, i);
        b.push_response(TestRsp {
            id: q.id,
            ..Default::default()
        })
        .unwrap();
    }
    b.push_responses();
    for i in 0..20 {
        assert_eq!(f.take_response().unwrap().unwrap().id, i);
    }
    assert_eq!(f.rsp_cons(), start.wrapping_add(20));
    assert_eq!(get(&mem, SringField::ReqProd), 14);
}

fn threaded_rust_exchange(pages: u64, n: u64, bells: bool) {
    threaded_exchange(pages, n, bells, false);
}

/// `n` requests between a Rust front end and back end in two threads, with the per-entry
/// driver loops or the batched ones.
fn threaded_exchange(pages: u64, n: u64, bells: bool, batched: bool) {
    let (mut f, mut b, _mem) = pair(pages);
    let to_back = Doorbell::new().unwrap();
    let to_front = Doorbell::new().unwrap();
    let (fb, bb) = Bells::pair(&to_back, &to_front, bells);
    let (fs, bs) = std::thread::scope(|s| {
        let back = s.spawn(|| match batched {
            true => run_back_batched::<TestWorkload, _>(&mut b, n, bb, TIMEOUT),
            false => run_back::<TestWorkload, _>(&mut b, n, bb, TIMEOUT),
        });
        let fs = match batched {
            true => run_front_batched::<TestWorkload, _>(&mut f, n, fb, TIMEOUT),
            false => run_front::<TestWorkload, _>(&mut f, n, fb, TIMEOUT),
        };
        (fs, back.join().unwrap())
    });
    let (fs, bs) = (fs.unwrap(), bs.unwrap());
    assert_eq!(u64::from(f.rsp_cons()), n);
    assert_eq!(u64::from(b.req_cons()), n);
    if bells {
        // Every sleep was ended by a notification from the other end.
        assert!(
            fs.notifies >= bs.waits && bs.notifies >= fs.waits,
            "{fs:?} {bs:?}"
        );
    }
}

#[test]
fn rust_front_and_back_in_two_threads() {
    threaded_rust_exchange(1, 200_000, true);
    threaded_rust_exchange(4, 100_000, false);
}

#[test]
fn batched_front_and_back_in_two_threads() {
    threaded_exchange(1, 100_000, true, true);
    threaded_exchange(2, 50_000, false, true);
}

#[test]
fn batch_calls_fill_serve_and_take_in_order() {
    let (mut f, mut b, mem) = pair(1);
    // More than fit: the batch stops at the ring's 32 free slots.
    let p = f
        .push_requests_with(40, |slot, k| slot.write(TestReq::nth(u64::from(k))))
        .unwrap();
    assert_eq!(p.count, 32);
    assert_eq!(get(&mem, SringField::ReqProd), 32);
    assert!(f.is_full());
    // A cap below what is published: the rest waits for the next call.
    let p = b
        .serve_requests_with(5, |q, s| {
            s.write(TestRsp {
                id: q.read().id,
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!((p.count, b.req_cons(), b.rsp_prod_pvt()), (5, 5, 5));
    assert_eq!(get(&mem, SringField::RspProd), 5);
    let p = b
        .serve_requests_with(u32::MAX, |q, s| {
            s.set(
                offset_of!(TestRsp, id),
                q.get::<u64>(offset_of!(TestReq, id)),
            );
            s.set(offset_of!(TestRsp, status), 0i32);
        })
        .unwrap();
    assert_eq!(p.count, 27);
    let mut ids = Vec::new();
    assert_eq!(
        f.take_responses_with(u32::MAX, |s| ids.push(s.read().id))
            .unwrap(),
        32
    );
    assert_eq!(ids, (0..32).collect::<Vec<u64>>());
    // Nothing more published: nothing taken, nothing served.
    assert_eq!(f.take_responses_with(u32::MAX, |_| panic!()).unwrap(), 0);
    assert_eq!(
        b.serve_requests_with(u32::MAX, |_, _| panic!())
            .unwrap()
            .count,
        0
    );
}

#[test]
fn idle_batch_calls_leave_the_shared_header_alone() {
    let (mut f, mut b, mem) = pair(1);
    f.push_requests_with(2, |slot, k| slot.write(TestReq::nth(u64::from(k))))
        .unwrap();
    b.serve_requests_with(u32::MAX, |q, s| {
        s.write(TestRsp {
            id: q.read().id,
            ..Default::default()
        })
    })
    .unwrap();
    // Values nobody published: a call with nothing new must not store its index again
    // (an idle poll would otherwise bounce the header's cache line to the peer).
    set(&mem, SringField::RspProd, 77);
    set(&mem, SringField::ReqProd, 2);
    assert_eq!(
        b.serve_requests_with(u32::MAX, |_, _| panic!())
            .unwrap()
            .count,
        0
    );
    assert_eq!(get(&mem, SringField::RspProd), 77);
    set(&mem, SringField::RspProd, 2);
    assert_eq!(f.take_responses_with(u32::MAX, |_| ()).unwrap(), 2);
    set(&mem, SringField::ReqProd, 99);
    let p = f.push_requests_with(0, |_, _| panic!()).unwrap();
    assert_eq!((p.count, p.notify), (0, false));
    assert_eq!(get(&mem, SringField::ReqProd), 99);
}

#[test]
fn batch_calls_refuse_hostile_indexes() {
    let (mut f, mut b, mem) = pair(1);
    f.push_requests_with(4, |slot, k| slot.write(TestReq::nth(u64::from(k))))
        .unwrap();
    // The back end published more responses than there were requests.
    set(&mem, SringField::RspProd, 5);
    assert_eq!(
        f.take_responses_with(u32::MAX, |_| panic!("read past the published requests")),
        Err(RingError::Overflow {
            prod: 5,
            cons: 0,
            size: 32
        })
    );
    assert_eq!(
        f.push_requests_with(1, |_, _| panic!("filled on a broken ring")),
        Err(f.broken().unwrap())
    );
    // The front end published more requests than the ring holds.
    set(&mem, SringField::ReqProd, 33);
    assert!(matches!(
        b.serve_requests_with(u32::MAX, |_, _| panic!("served a hostile index")),
        Err(RingError::Overflow { prod: 33, .. })
    ));
    assert_eq!(b.rsp_prod_pvt(), 0);
}

proptest! {
    #[test]
    fn need_notify_means_event_in_window(old: u32, k in 0u32..=64, d in 0u32..200) {
        let new = old.wrapping_add(k);
        let event = old.wrapping_add(d);
        let expect = d >= 1 && d <= k;
        prop_assert_eq!(idx::need_notify(new, old, event), expect);
    }

    #[test]
    fn unconsumed_requests_never_exceed_the_ring(
        base: u32, pending in 0u32..=32, published in 0u32..=32, size_pow in 0u32..=5,
    ) {
        let size = 1u32 << size_pow;
        let pending = pending.min(size);
        let published = published.min(size - pending);
        let rsp_prod_pvt = base;
        let req_cons = base.wrapping_add(pending);
        let req_prod = req_cons.wrapping_add(published);
        prop_assert!(!idx::bad_request_prod(size, req_prod, req_cons, rsp_prod_pvt));
        prop_assert_eq!(idx::nr_unconsumed_requests(size, req_prod, req_cons, rsp_prod_pvt), published);
        prop_assert_eq!(idx::request_cons_overflow(size, rsp_prod_pvt, req_cons), pending == size);
        // Any index more than a ring ahead, or behind the consumer, is refused.
        let ahead = rsp_prod_pvt.wrapping_add(size + 1 + published);
        prop_assert!(idx::bad_request_prod(size, ahead, req_cons, rsp_prod_pvt));
        if pending > 0 {
            let behind = req_cons.wrapping_sub(1);
            prop_assert!(idx::bad_request_prod(size, behind, req_cons, rsp_prod_pvt));
        }
    }

    /// Rings started anywhere near u32::MAX behave exactly like rings started at 0.
    #[test]
    fn rings_across_the_wrap_behave_as_at_zero(start in (u32::MAX - 100)..=u32::MAX, ops in prop::collection::vec(0u8..4, 1..200)) {
        let run = |start: u32| {
            let mem = Arc::new(PageBuf::new(1).unwrap());
            crate::init_shared_ring(&*mem).unwrap();
            set(&mem, SringField::ReqProd, start);
            set(&mem, SringField::RspProd, start);
            set(&mem, SringField::ReqEvent, start.wrapping_add(1));
            set(&mem, SringField::RspEvent, start.wrapping_add(1));
            let mut f: TFront = FrontRing::attach(mem.clone(), Pages(1), start).unwrap();
            let mut b: TBack = BackRing::attach(mem.clone(), Pages(1), start).unwrap();
            let mut log = Vec::new();
            let mut id = 0;
            for op in &ops {
                match op {
                    0 => { log.push(format!("{:?}", f.push_request(TestReq::nth(id)))); id += 1;
                           log.push(format!("{}", f.push_requests_and_check_notify())); }
                    1 => { let r = b.take_request().unwrap();
                           log.push(format!("{:?}", r.map(|q| q.id)));
                           if let Some(q) = r { b.push_response(TestRsp { id: q.id, ..Default::default() }).unwrap(); } }
                    2 => { log.push(format!("{} {:?}", b.push_responses_and_check_notify(), b.final_check_for_requests())); }
                    _ => { log.push(format!("{:?} {:?}", f.take_response().unwrap().map(|s| s.id), f.final_check_for_responses())); }
                }
                log.push(format!("{} {} {}", f.free_requests(), f.outstanding(), b.pending()));
            }
            log
        };
        prop_assert_eq!(run(start), run(0));
    }
}

#[test]
fn layout_matches_bindgen_srings() {
    use std::mem::{offset_of, size_of};
    let blk = RingLayout::of::<blkif_request, blkif_response>(Pages(1)).unwrap();
    assert_eq!(blk.ring_offset(), offset_of!(xen_sys::blkif_sring, ring));
    assert_eq!(blk.entry_size(), size_of::<xen_sys::blkif_sring_entry>());
    let tx = RingLayout::of::<netif_tx_request, netif_tx_response>(Pages(1)).unwrap();
    assert_eq!(tx.entry_size(), size_of::<xen_sys::netif_tx_sring_entry>());
    let rx = RingLayout::of::<netif_rx_request, netif_rx_response>(Pages(1)).unwrap();
    assert_eq!(rx.entry_size(), size_of::<xen_sys::netif_rx_sring_entry>());
}

#[test]
fn blkif_rust_exchange() {
    let mem = Arc::new(PageBuf::new(2).unwrap());
    let mut f: FrontRing<_, blkif_request, blkif_response> =
        FrontRing::new(mem.clone(), Pages(2)).unwrap();
    let mut b: BackRing<_, blkif_request, blkif_response> =
        BackRing::new(mem.clone(), Pages(2)).unwrap();
    assert_eq!(f.ring_size(), 64);
    std::thread::scope(|s| {
        let h = s.spawn(|| run_back::<BlkifWorkload, _>(&mut b, 20_000, Bells::Spin, TIMEOUT));
        run_front::<BlkifWorkload, _>(&mut f, 20_000, Bells::Spin, TIMEOUT).unwrap();
        h.join().unwrap().unwrap();
    });
}

#[cfg(not(xen_ring_c_ref))]
#[test]
fn c_interop_needs_the_xen_headers() {
    panic!(
        "the C reference ring was not built: /usr/include/xen/io/ring.h (package libxen-dev) \
         was not found or did not compile when xen-ring was built; install libxen-dev (or set \
         XEN_INCLUDE_DIR) and rebuild to run the C interop tests"
    );
}

#[cfg(xen_ring_c_ref)]
mod c_interop;

type UFront = FrontRing<Arc<PageBuf>, crate::Untyped, crate::Untyped>;
type UBack = BackRing<Arc<PageBuf>, crate::Untyped, crate::Untyped>;

/// Run-time layouts of blkif's two entry sizes (x86_32: 108 bytes, 4-aligned; x86_64: 112).
#[test]
fn untyped_rings_move_entries_of_a_run_time_size() {
    for (entry, align) in [(108usize, 4usize), (112, 8)] {
        let mem = Arc::new(PageBuf::new(1).unwrap());
        let layout = RingLayout::new(4096, entry, align).unwrap();
        assert_eq!(layout.nr_ents(), 32, "__CONST_RING_SIZE(blkif, 4096)");
        let mut f = UFront::init_with_layout(mem.clone(), layout).unwrap();
        let mut b = UBack::with_layout(mem.clone(), layout, 0).unwrap();
        let mut next = 0u64;
        let mut seen = 0u64;
        for round in 0..10u64 {
            // Fill the ring, then one more is refused.
            while let Ok(off) = f.next_request_slot() {
                mem.write_obj(off, next).unwrap();
                mem.write_obj(off + entry - 4, next as u32 ^ 0xa5a5)
                    .unwrap();
                next += 1;
            }
            assert_eq!(f.next_request_slot(), Err(RingError::Full));
            assert_eq!(f.outstanding(), 32);
            f.push_requests();
            let mut taken = Vec::new();
            while let Some(off) = b.take_request_slot().unwrap() {
                let v: u64 = mem.read_obj(off).unwrap();
                let tail: u32 = mem.read_obj(off + entry - 4).unwrap();
                assert_eq!(
                    tail,
                    v as u32 ^ 0xa5a5,
                    "entry {v}: bytes past the slot start"
                );
                taken.push(v);
            }
            assert_eq!(taken.len(), 32, "round {round}");
            for v in taken {
                let off = b.next_response_slot().unwrap();
                mem.write_obj(off, !v).unwrap();
            }
            assert_eq!(b.next_response_slot(), Err(RingError::NoOutstandingRequest));
            b.push_responses_and_check_notify();
            while let Some(off) = f.take_response_slot().unwrap() {
                let v: u64 = mem.read_obj(off).unwrap();
                assert_eq!(v, !seen);
                seen += 1;
            }
            assert!(!f.final_check_for_responses().unwrap());
            assert!(!b.final_check_for_requests().unwrap());
        }
        assert_eq!(seen, next);
    }
}

#[test]
fn untyped_back_ring_breaks_on_an_impossible_req_prod() {
    let mem = Arc::new(PageBuf::new(1).unwrap());
    let layout = RingLayout::new(4096, 112, 8).unwrap();
    let _f = UFront::init_with_layout(mem.clone(), layout).unwrap();
    let mut b = UBack::with_layout(mem.clone(), layout, 0).unwrap();
    set(&mem, SringField::ReqProd, 33);
    assert!(matches!(
        b.take_request_slot(),
        Err(RingError::Overflow { prod: 33, .. })
    ));
    // Sticky: a sane index later does not repair it.
    set(&mem, SringField::ReqProd, 1);
    assert!(b.take_request_slot().is_err());
    // Too little memory for the layout is refused up front.
    let small = Arc::new(PageBuf::new(1).unwrap());
    let big = RingLayout::new(8192, 112, 8).unwrap();
    assert!(matches!(
        UBack::with_layout(small, big, 0),
        Err(RingError::Layout(_))
    ));
}

/// A typed front end and an untyped back end agree when the run-time layout is the typed one.
#[test]
fn untyped_and_typed_ends_share_one_layout() {
    let mem = Arc::new(PageBuf::new(1).unwrap());
    let mut f = FrontRing::<_, blkif_request, blkif_response>::new(mem.clone(), Pages(1)).unwrap();
    let layout = RingLayout::new(
        4096,
        size_of::<blkif_request>(),
        align_of::<blkif_request>(),
    )
    .unwrap();
    assert_eq!(&layout, f.layout());
    let mut b = UBack::with_layout(mem.clone(), layout, 0).unwrap();
    for id in 0..5u64 {
        f.push_request(blkif_request {
            id,
            sector_number: id * 8,
            ..Default::default()
        })
        .unwrap();
    }
    f.push_requests();
    for id in 0..5u64 {
        let off = b.take_request_slot().unwrap().unwrap();
        let r: blkif_request = mem.read_obj(off).unwrap();
        assert_eq!((r.id, r.sector_number), (id, id * 8));
        let off = b.next_response_slot().unwrap();
        mem.write_obj(
            off,
            blkif_response {
                id,
                operation: 0,
                status: 0,
            },
        )
        .unwrap();
    }
    b.push_responses_and_check_notify();
    for id in 0..5u64 {
        assert_eq!(f.take_response().unwrap().unwrap().id, id);
    }
}

/// Requests filled in place field by field, read in place on the back end, answered in place,
/// and the in-place API keeps the ring's checks (full ring, unanswered response, hostile index).
#[test]
fn entries_filled_and_read_in_place() {
    use std::mem::offset_of;
    let (mut f, mut b, mem) = pair(1);
    for round in 0..3u64 {
        for i in 0..32u64 {
            let mut s = f.next_request().unwrap();
            s.write(TestReq::nth(0)); // stale bytes from an earlier round are overwritten
            s.set(offset_of!(TestReq, id), round * 100 + i);
            s.set(offset_of!(TestReq, payload), [i as u8; 48]);
        }
        assert_eq!(f.next_request().unwrap_err(), RingError::Full);
        f.push_requests();
        for i in 0..32u64 {
            let q = b.next_request().unwrap().unwrap();
            let id: u64 = q.get(offset_of!(TestReq, id));
            let last: u8 = q.get(offset_of!(TestReq, payload) + 47);
            let whole = q.read();
            assert_eq!((id, last), (round * 100 + i, i as u8));
            assert_eq!(whole.len, TestReq::nth(0).len);
            let mut r = b.next_response().unwrap();
            r.write(TestRsp::default());
            r.set(offset_of!(TestRsp, id), id);
            r.set(offset_of!(TestRsp, status), -(i as i32));
        }
        assert!(b.next_request().unwrap().is_none());
        assert_eq!(
            b.next_response().unwrap_err(),
            RingError::NoOutstandingRequest
        );
        b.push_responses();
        for i in 0..32u64 {
            let s = f.next_response().unwrap().unwrap();
            assert_eq!(s.get::<u64>(offset_of!(TestRsp, id)), round * 100 + i);
            assert_eq!(s.read().status, -(i as i32));
        }
        assert!(f.next_response().unwrap().is_none());
    }
    // A req_prod more than a ring ahead breaks the ring for the in-place API too.
    set(&mem, SringField::ReqProd, b.req_cons().wrapping_add(33));
    assert!(matches!(b.next_request(), Err(RingError::Overflow { .. })));
    assert!(b.next_response().is_err());
}

#[test]
fn request_event_after_published_waits_for_the_next_request() {
    // A back end that needs more requests than are published asks for an event at the
    // first one published after them (req_event = req_prod + 1), not at req_cons + 1.
    let (mut f, mut b, mem) = pair(1);
    for _ in 0..3 {
        f.push_request(TestReq::default()).unwrap();
    }
    f.push_requests();
    assert_eq!(b.request_event_after_published().unwrap(), 3);
    assert_eq!(get(&mem, SringField::ReqEvent), 4);
    f.push_request(TestReq::default()).unwrap();
    assert!(
        f.push_requests_and_check_notify(),
        "the fourth request notifies"
    );
    assert_eq!(b.unconsumed_requests().unwrap(), 4);
}
