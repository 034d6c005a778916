//! The Rust rings against the C macros of Debian's `<xen/io/ring.h>` (`csrc/ring_ref.c`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use xen_sys::{blkif_request, blkif_response};
use xen_sys::{netif_rx_request, netif_rx_response, netif_tx_request, netif_tx_response};
use xen_types::mem::{PageBuf, SharedMemory, SharedMemoryExt};
use xen_types::{Pages, PAGE_SIZE};

use super::{get, set, TBack, TFront, TIMEOUT};
use crate::testing::cref::{self, CError};
use crate::testing::{
    self, run_back, run_front, Bells, BlkifWorkload, CKind, Doorbell, EchoWorkload, Stats, TestReq,
    TestRsp, TestWorkload, Workload,
};
use crate::{idx, BackRing, FrontRing, RingLayout, SringField};

fn rust_layout(kind: CKind, pages: u64) -> RingLayout {
    match kind {
        CKind::Test => RingLayout::of::<TestReq, TestRsp>(Pages(pages)),
        CKind::Blkif => RingLayout::of::<blkif_request, blkif_response>(Pages(pages)),
        CKind::NetifTx => RingLayout::of::<netif_tx_request, netif_tx_response>(Pages(pages)),
        CKind::NetifRx => RingLayout::of::<netif_rx_request, netif_rx_response>(Pages(pages)),
        CKind::Echo => RingLayout::of::<TestReq, TestRsp>(Pages(pages)),
    }
    .unwrap()
}

const KINDS: [CKind; 5] = [
    CKind::Test,
    CKind::Blkif,
    CKind::NetifTx,
    CKind::NetifRx,
    CKind::Echo,
];

#[test]
fn layout_and_ring_sizes_match_the_c_macros() {
    let mem = PageBuf::new(16).unwrap();
    let mut seen = Vec::new();
    for kind in KINDS {
        let c = cref::layout(kind);
        let r = rust_layout(kind, 1);
        assert_eq!(c.ring_offset as usize, r.ring_offset(), "{kind:?}");
        assert_eq!(c.entry_size as usize, r.entry_size(), "{kind:?}");
        assert_eq!(
            c.sring_size as usize,
            r.ring_offset() + r.entry_size(),
            "{kind:?}"
        );
        let fields = [
            SringField::ReqProd,
            SringField::ReqEvent,
            SringField::RspProd,
            SringField::RspEvent,
        ];
        for (i, f) in fields.iter().enumerate() {
            assert_eq!(c.offsets[i] as usize, f.offset(), "{kind:?} {f:?}");
        }
        for order in 0..=4u32 {
            let pages = 1u64 << order;
            let bytes = pages as usize * PAGE_SIZE;
            let r = rust_layout(kind, pages);
            assert_eq!(
                i64::from(r.nr_ents()),
                cref::ring_size(kind, &mem, bytes),
                "{kind:?} order {order}"
            );
            assert_eq!(
                i64::from(r.nr_ents()),
                cref::const_ring_size(kind, bytes),
                "{kind:?} order {order}"
            );
            seen.push((kind, order, r.nr_ents()));
        }
        // Odd sizes, too (the macros accept any byte count).
        for bytes in [65usize, 100, 1000, 3000, 4095, 5000, 12345] {
            let esz = c.entry_size as usize;
            let r = RingLayout::new(bytes, esz, 8.min(esz));
            let c_size = cref::const_ring_size(kind, bytes);
            assert_eq!(
                r.map_or(0, |r| i64::from(r.nr_ents())),
                c_size,
                "{kind:?} {bytes}"
            );
        }
    }
    // The well-known one-page sizes: blkif 32, netif tx 256, rx 256, the test ring 32.
    assert!(seen.contains(&(CKind::Blkif, 0, 32)));
    assert!(seen.contains(&(CKind::NetifTx, 0, 256)));
    assert!(seen.contains(&(CKind::NetifRx, 0, 256)));
    assert!(seen.contains(&(CKind::Test, 0, 32)));
    assert!(seen.contains(&(CKind::Blkif, 4, 512)));
}

#[test]
fn checksum_matches_c() {
    for i in [0u64, 1, 47, 48, 1 << 40, u64::MAX] {
        let q = TestReq::nth(i);
        assert_eq!(q.csum, cref::checksum(q.id, &q.payload, q.len));
        assert_eq!(
            cref::checksum(i, &q.payload, 1000),
            testing::checksum(i, &q.payload, 1000)
        );
    }
}

#[test]
fn shared_ring_init_matches_c() {
    let a = PageBuf::new(1).unwrap();
    let b = PageBuf::new(1).unwrap();
    a.fill(0, PAGE_SIZE, 0x5c).unwrap();
    b.fill(0, PAGE_SIZE, 0x5c).unwrap();
    cref::shared_ring_init(&a);
    crate::init_shared_ring(&b).unwrap();
    let (mut x, mut y) = ([0u8; 128], [0u8; 128]);
    a.read_bytes(0, &mut x).unwrap();
    b.read_bytes(0, &mut y).unwrap();
    assert_eq!(x, y);
}

enum Side {
    CFrontRustBack,
    RustFrontCBack,
    /// As above, with the Rust driver loop on the batch API.
    CFrontRustBackBatched,
    RustFrontCBackBatched,
}

/// One exchange of `n` requests of kind `W` over `pages` pages, C on one side and Rust on
/// the other, in two threads; returns (front stats, back stats).
fn exchange<W: Workload>(
    kind: CKind,
    side: Side,
    pages: u64,
    n: u64,
    bells: bool,
) -> (Stats, Stats) {
    let mem = Arc::new(PageBuf::new(pages as usize).unwrap());
    // Poison the entries: nothing may be read before it is written.
    mem.fill(0, mem.len(), 0xee).unwrap();
    let to_back = Doorbell::new().unwrap();
    let to_front = Doorbell::new().unwrap();
    let (fb, bb) = Bells::pair(&to_back, &to_front, bells);
    let np = pages as usize;
    let (front, back) = match side {
        Side::CFrontRustBack | Side::CFrontRustBackBatched => {
            cref::shared_ring_init(&*mem);
            let mut b: BackRing<_, W::Req, W::Rsp> =
                BackRing::new(mem.clone(), Pages(pages)).unwrap();
            let batched = matches!(side, Side::CFrontRustBackBatched);
            std::thread::scope(|s| {
                let h = s.spawn(|| match batched {
                    true => testing::run_back_batched::<W, _>(&mut b, n, bb, TIMEOUT),
                    false => run_back::<W, _>(&mut b, n, bb, TIMEOUT),
                });
                let f = cref::front_run(kind, &*mem, np, n, fb, TIMEOUT);
                let b = h.join().unwrap();
                (f.unwrap(), b.unwrap())
            })
        }
        Side::RustFrontCBack | Side::RustFrontCBackBatched => {
            let mut f: FrontRing<_, W::Req, W::Rsp> =
                FrontRing::new(mem.clone(), Pages(pages)).unwrap();
            let batched = matches!(side, Side::RustFrontCBackBatched);
            std::thread::scope(|s| {
                let h = s.spawn(|| cref::back_run(kind, &*mem, np, n, bb, TIMEOUT));
                let fr = match batched {
                    true => testing::run_front_batched::<W, _>(&mut f, n, fb, TIMEOUT),
                    false => run_front::<W, _>(&mut f, n, fb, TIMEOUT),
                };
                let b = h.join().unwrap();
                (fr.unwrap(), b.unwrap())
            })
        }
    };
    // Final indexes as both sides agree: n requests and n responses went through.
    assert_eq!(get(&mem, SringField::ReqProd), n as u32);
    assert_eq!(get(&mem, SringField::RspProd), n as u32);
    if bells {
        // Each sleep ended on a doorbell the other side rang because a check-notify macro
        // said so; nobody slept through a lost notification (that would time out).
        assert!(
            front.notifies >= 1 && back.notifies >= 1,
            "{front:?} {back:?}"
        );
        assert!(front.waits <= back.notifies, "{front:?} {back:?}");
        assert!(back.waits <= front.notifies, "{front:?} {back:?}");
        // A notification only when the peer asked: never more than one per push.
        assert!(front.notifies <= n && back.notifies <= n);
    }
    (front, back)
}

#[test]
fn c_front_rust_back_million_requests() {
    let (f, b) = exchange::<TestWorkload>(CKind::Test, Side::CFrontRustBack, 1, 1_000_000, true);
    eprintln!("C front {f:?}, Rust back {b:?}");
}

#[test]
fn rust_front_c_back_million_requests() {
    let (f, b) = exchange::<TestWorkload>(CKind::Test, Side::RustFrontCBack, 1, 1_000_000, true);
    eprintln!("Rust front {f:?}, C back {b:?}");
}

#[test]
fn batched_rust_against_c_both_ways() {
    for bells in [true, false] {
        exchange::<TestWorkload>(CKind::Test, Side::CFrontRustBackBatched, 1, 50_000, bells);
        exchange::<TestWorkload>(CKind::Test, Side::RustFrontCBackBatched, 1, 50_000, bells);
    }
    exchange::<BlkifWorkload>(CKind::Blkif, Side::CFrontRustBackBatched, 4, 20_000, true);
    exchange::<BlkifWorkload>(CKind::Blkif, Side::RustFrontCBackBatched, 4, 20_000, true);
}

#[test]
fn multi_page_rings_both_ways() {
    for order in 1..=4u32 {
        let pages = 1u64 << order;
        exchange::<TestWorkload>(
            CKind::Test,
            Side::CFrontRustBack,
            pages,
            50_000,
            order % 2 == 0,
        );
        exchange::<TestWorkload>(
            CKind::Test,
            Side::RustFrontCBack,
            pages,
            50_000,
            order % 2 == 1,
        );
        exchange::<BlkifWorkload>(CKind::Blkif, Side::CFrontRustBack, pages, 20_000, true);
        exchange::<BlkifWorkload>(CKind::Blkif, Side::RustFrontCBack, pages, 20_000, false);
        exchange::<EchoWorkload>(CKind::Echo, Side::CFrontRustBack, pages, 20_000, true);
        exchange::<EchoWorkload>(CKind::Echo, Side::RustFrontCBack, pages, 20_000, true);
    }
}

#[test]
fn blkif_both_ways_single_page() {
    exchange::<BlkifWorkload>(CKind::Blkif, Side::CFrontRustBack, 1, 200_000, true);
    exchange::<BlkifWorkload>(CKind::Blkif, Side::RustFrontCBack, 1, 200_000, true);
    exchange::<TestWorkload>(CKind::Test, Side::CFrontRustBack, 1, 200_000, false);
    exchange::<TestWorkload>(CKind::Test, Side::RustFrontCBack, 1, 200_000, false);
}

/// The spinning drivers time out on a silent peer, not on a slow one (their timeout counts
/// from their last progress): a back end that answers one request every 250 ms keeps Rust and
/// C front ends with a 1 s timeout going for 3 s, and one that answers nothing fails them.
#[test]
fn spinning_front_ends_time_out_on_silence_not_on_slowness() {
    const N: u64 = 12;
    let timeout = Duration::from_secs(1);
    for c_front in [false, true] {
        for answers in [true, false] {
            let mem = Arc::new(PageBuf::new(1).unwrap());
            let mut f: Option<TFront> = None;
            if c_front {
                cref::shared_ring_init(&*mem);
            } else {
                f = Some(FrontRing::new(mem.clone(), Pages(1)).unwrap());
            }
            let mut b: TBack = BackRing::new(mem.clone(), Pages(1)).unwrap();
            let stop = AtomicBool::new(false);
            let front_result = std::thread::scope(|s| {
                let stop = &stop;
                s.spawn(move || {
                    let mut served = 0;
                    while answers && served < N && !stop.load(Ordering::Relaxed) {
                        let Some(q) = b.take_request().unwrap() else {
                            std::thread::sleep(Duration::from_millis(1));
                            continue;
                        };
                        std::thread::sleep(Duration::from_millis(250));
                        b.push_response(TestWorkload::serve(&q).unwrap()).unwrap();
                        b.push_responses_and_check_notify();
                        served += 1;
                    }
                });
                let r = match f.as_mut() {
                    Some(f) => run_front::<TestWorkload, _>(f, N, Bells::Spin, timeout)
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    None => cref::front_run(CKind::Test, &*mem, 1, N, Bells::Spin, timeout)
                        .map(|_| ())
                        .map_err(|e| format!("{e:?}")),
                };
                stop.store(true, Ordering::Relaxed);
                r
            });
            let who = if c_front { "C front" } else { "Rust front" };
            if answers {
                front_result.unwrap_or_else(|e| panic!("{who}, slow back end: {e}"));
                assert_eq!(get(&mem, SringField::RspProd), N as u32);
            } else {
                let e = front_result.expect_err("a silent back end must time out");
                assert!(
                    e.contains("TimedOut") || e.contains("timed out"),
                    "{who}: {e}"
                );
            }
        }
    }
}

#[test]
fn c_back_end_refuses_what_rust_refuses() {
    // A hostile req_prod as seen by both back ends.
    let mem = Arc::new(PageBuf::new(1).unwrap());
    crate::init_shared_ring(&*mem).unwrap();
    set(&mem, SringField::ReqProd, 40);
    let mut b: TBack = BackRing::new(mem.clone(), Pages(1)).unwrap();
    assert!(b.take_request().is_err());
    let r = cref::back_run(CKind::Test, &*mem, 1, 1, Bells::Spin, TIMEOUT);
    assert_eq!(r.unwrap_err(), CError::Overflow);
    // And a hostile rsp_prod as seen by both front ends (C: more responses than requests).
    set(&mem, SringField::ReqProd, 0);
    set(&mem, SringField::RspProd, 3);
    let mut f: TFront = FrontRing::attach(mem.clone(), Pages(1), 0).unwrap();
    assert!(f.take_response().is_err());
    let r = cref::front_run(CKind::Test, &*mem, 1, 1, Bells::Spin, TIMEOUT);
    assert_eq!(r.unwrap_err(), CError::Overflow);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// RING_PUSH_*_AND_CHECK_NOTIFY: same decision, same published index, for any indexes
    /// (biased to the wrap at u32::MAX).
    #[test]
    fn push_and_check_notify_matches_c(
        old in prop_oneof![any::<u32>(), (u32::MAX - 40)..=u32::MAX],
        k in 0u32..=32,
        ev_off in -40i64..40,
    ) {
        let new = old.wrapping_add(k);
        let event = (i64::from(old) + ev_off) as u32;
        for requests in [true, false] {
            let (pf, ef) = if requests {
                (SringField::ReqProd, SringField::ReqEvent)
            } else {
                (SringField::RspProd, SringField::RspEvent)
            };
            let c_mem = PageBuf::new(1).unwrap();
            set(&c_mem, pf, old);
            set(&c_mem, ef, event);
            let c = if requests {
                cref::push_requests_check_notify(&c_mem, new)
            } else {
                cref::push_responses_check_notify(&c_mem, new)
            };
            let r_mem = Arc::new(PageBuf::new(1).unwrap());
            set(&r_mem, pf, old);
            set(&r_mem, ef, event);
            let rust = if requests {
                let mut f: TFront = FrontRing::attach(r_mem.clone(), Pages(1), old).unwrap();
                for i in 0..k { f.push_request(TestReq::nth(u64::from(i))).unwrap(); }
                f.push_requests_and_check_notify()
            } else {
                let mut b: TBack = BackRing::attach(r_mem.clone(), Pages(1), old).unwrap();
                // Take k requests first so k responses can be pushed.
                set(&r_mem, SringField::ReqProd, new);
                for _ in 0..k { b.take_request().unwrap().unwrap(); }
                for _ in 0..k { b.push_response(TestRsp::default()).unwrap(); }
                b.push_responses_and_check_notify()
            };
            prop_assert_eq!(rust, c);
            prop_assert_eq!(rust, idx::need_notify(new, old, event));
            prop_assert_eq!(get(&r_mem, pf), get(&c_mem, pf));
        }
    }

    /// RING_FINAL_CHECK_FOR_REQUESTS/RESPONSES: same answer and same event index written,
    /// on well-formed indexes.
    #[test]
    fn final_checks_match_c(
        base in prop_oneof![any::<u32>(), (u32::MAX - 40)..=u32::MAX],
        pending in 0u32..=32,
        published in 0u32..=32,
    ) {
        let published = published.min(32 - pending);
        let rsp_prod_pvt = base;
        let req_cons = base.wrapping_add(pending);
        let req_prod = req_cons.wrapping_add(published);

        let c_mem = PageBuf::new(1).unwrap();
        set(&c_mem, SringField::ReqProd, req_prod);
        let c_work = cref::final_check_for_requests(&c_mem, req_cons, rsp_prod_pvt);
        let r_mem = Arc::new(PageBuf::new(1).unwrap());
        set(&r_mem, SringField::ReqProd, req_prod);
        let mut b: TBack = BackRing::new(r_mem.clone(), Pages(1)).unwrap();
        b.set_indexes(req_cons, rsp_prod_pvt);
        prop_assert_eq!(b.final_check_for_requests().unwrap(), c_work != 0);
        prop_assert_eq!(b.unconsumed_requests().unwrap(), c_work);
        prop_assert_eq!(get(&r_mem, SringField::ReqEvent), get(&c_mem, SringField::ReqEvent));

        // Front: rsp_cons = base, `published` responses waiting of `published + pending`
        // requests.
        let rsp_cons = base;
        let rsp_prod = base.wrapping_add(published);
        let c_mem = PageBuf::new(1).unwrap();
        set(&c_mem, SringField::RspProd, rsp_prod);
        let c_work = cref::final_check_for_responses(&c_mem, rsp_cons);
        let r_mem = Arc::new(PageBuf::new(1).unwrap());
        let mut f: TFront = FrontRing::attach(r_mem.clone(), Pages(1), rsp_cons).unwrap();
        for i in 0..(published + pending) { f.push_request(TestReq::nth(u64::from(i))).unwrap(); }
        f.push_requests();
        set(&r_mem, SringField::RspProd, rsp_prod);
        prop_assert_eq!(f.final_check_for_responses().unwrap(), c_work != 0);
        prop_assert_eq!(f.unconsumed_responses().unwrap(), c_work);
        prop_assert_eq!(get(&r_mem, SringField::RspEvent), get(&c_mem, SringField::RspEvent));
    }

    /// RING_FREE_REQUESTS, RING_FULL and the overflow predicates on arbitrary indexes.
    #[test]
    fn predicates_match_c(
        size_pow in 0u32..=12,
        req_prod_pvt: u32, rsp_cons: u32, rsp_prod_pvt: u32, prod: u32, cons: u32,
        near in any::<bool>(),
    ) {
        let size = 1u32 << size_pow;
        // Half the cases near each other (where the answers change), half anywhere.
        let (rsp_cons, prod, cons) = if near {
            (req_prod_pvt.wrapping_sub(rsp_cons % (size + 2)),
             rsp_prod_pvt.wrapping_add(prod % (size + 2)),
             rsp_prod_pvt.wrapping_add(cons % (size + 2)))
        } else {
            (rsp_cons, prod, cons)
        };
        let (free, full, prod_of, cons_of, rsp_of) =
            cref::predicates(size, req_prod_pvt, rsp_cons, rsp_prod_pvt, prod, cons);
        prop_assert_eq!(idx::free_requests(size, req_prod_pvt, rsp_cons), free);
        prop_assert_eq!(idx::free_requests(size, req_prod_pvt, rsp_cons) == 0, full);
        prop_assert_eq!(idx::request_prod_overflow(size, rsp_prod_pvt, prod), prod_of);
        prop_assert_eq!(idx::request_cons_overflow(size, rsp_prod_pvt, cons), cons_of);
        prop_assert_eq!(idx::response_prod_overflow(size, rsp_cons, prod), rsp_of);
    }
}

#[test]
fn loopback_rust_and_c_agree() {
    let a = PageBuf::new(1).unwrap();
    let b = Arc::new(PageBuf::new(1).unwrap());
    for (kind, batch) in [(CKind::Test, 7), (CKind::Echo, 16)] {
        assert_eq!(cref::loopback(kind, &a, 10_000, batch), 10_000);
        let good = match kind {
            CKind::Echo => testing::loopback::<EchoWorkload, _>(&b, 10_000, batch),
            _ => testing::loopback::<TestWorkload, _>(&b, 10_000, batch),
        };
        assert_eq!(good.unwrap(), 10_000);
        let (mut x, mut y) = ([0u8; 4096], [0u8; 4096]);
        a.read_bytes(0, &mut x).unwrap();
        b.read_bytes(0, &mut y).unwrap();
        // Same header after the same exchange, and the same entries (the C peer wrote the
        // entries the Rust side would have).
        assert_eq!(x, y, "{kind:?}");
        // The batch API writes the same page.
        let good = match kind {
            CKind::Echo => testing::loopback_batched::<EchoWorkload, _>(&b, 10_000, batch),
            _ => testing::loopback_batched::<TestWorkload, _>(&b, 10_000, batch),
        };
        assert_eq!(good.unwrap(), 10_000);
        b.read_bytes(0, &mut y).unwrap();
        assert_eq!(x, y, "{kind:?} batched");
    }
}
