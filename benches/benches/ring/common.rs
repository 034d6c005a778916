//! What the ring benches share: one threaded echo exchange between a Rust or C front end
//! and a Rust or C back end on one page.

use std::sync::Arc;
use std::time::Duration;

use xen_ring::testing::{
    cref, run_back, run_back_batched, run_front, run_front_batched, Bells, CKind, Doorbell,
    EchoWorkload, TestReq, TestRsp,
};
use xen_ring::{BackRing, FrontRing};
use xen_types::mem::PageBuf;
use xen_types::Pages;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Which end is Rust and which is C.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // each bench uses its own pairs
pub enum Pair {
    Rust,
    /// Rust at both ends, on the batch API (`run_front_batched`, `run_back_batched`).
    RustBatched,
    C,
    CFrontRustBack,
    RustFrontCBack,
}

impl Pair {
    /// The peer's name in reports.
    #[allow(dead_code)] // ring_rounds names its steps itself
    pub fn name(self) -> &'static str {
        match self {
            Pair::Rust => "rust",
            Pair::RustBatched => "rust_batched",
            Pair::C => "c",
            Pair::CFrontRustBack => "c_front_rust_back",
            Pair::RustFrontCBack => "rust_front_c_back",
        }
    }
}

/// One exchange of `n` echo requests; returns the notifications sent by both ends.
pub fn exchange(pair: Pair, n: u64, bells: bool) -> u64 {
    let mem = Arc::new(PageBuf::new(1).expect("page"));
    let to_back = Doorbell::new().expect("eventfd");
    let to_front = Doorbell::new().expect("eventfd");
    let (fb, bb) = Bells::pair(&to_back, &to_front, bells);
    let rust_front = matches!(pair, Pair::Rust | Pair::RustBatched | Pair::RustFrontCBack);
    let rust_back = matches!(pair, Pair::Rust | Pair::RustBatched | Pair::CFrontRustBack);
    let batched = matches!(pair, Pair::RustBatched);
    // Each end is built on the thread that runs it, so its private indexes live on that
    // thread's stack (as the C drivers' `fr`/`br` locals do): two ring structs side by side
    // in this frame would share a cache line that both threads write (false sharing).
    if !rust_front {
        cref::shared_ring_init(&*mem);
    }
    let front_mem = mem.clone();
    let back_mem = mem.clone();
    let new_front = move || -> FrontRing<_, TestReq, TestRsp> {
        FrontRing::new(front_mem, Pages(1)).expect("front")
    };
    let mut front = rust_front.then(new_front);
    std::thread::scope(|s| {
        let h = s.spawn(move || {
            if !rust_back {
                return cref::back_run(CKind::Echo, &*back_mem, 1, n, bb, TIMEOUT)
                    .expect("c back")
                    .notifies;
            }
            let mut back: BackRing<_, TestReq, TestRsp> =
                BackRing::new(back_mem, Pages(1)).expect("back");
            if batched {
                run_back_batched::<EchoWorkload, _>(&mut back, n, bb, TIMEOUT)
                    .expect("rust back")
                    .notifies
            } else {
                run_back::<EchoWorkload, _>(&mut back, n, bb, TIMEOUT)
                    .expect("rust back")
                    .notifies
            }
        });
        let f = match front.as_mut() {
            Some(f) if batched => {
                run_front_batched::<EchoWorkload, _>(f, n, fb, TIMEOUT)
                    .expect("rust front")
                    .notifies
            }
            Some(f) => {
                run_front::<EchoWorkload, _>(f, n, fb, TIMEOUT)
                    .expect("rust front")
                    .notifies
            }
            None => {
                cref::front_run(CKind::Echo, &*mem, 1, n, fb, TIMEOUT)
                    .expect("c front")
                    .notifies
            }
        };
        f + h.join().expect("back thread")
    })
}
