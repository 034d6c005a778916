//! Bad input, reservations, uncooperative domains, and what [`XenHost`] reads and writes.
//!
//! [`XenHost`]: squeezed::XenHost

mod common;

use std::time::Duration;

use common::{guaranteed_free, Guest, World};
use squeezed::{
    Config, DomId, DomainMemory, Error, HostIo, Kib, Pages, ReservationId, Squeezed,
    UNCOOPERATIVE_AFTER,
};
use xen_sim::balloon::BalloonBehaviour;
use xenbus::Store;

const STEP_LIMIT: u64 = 10_000;

fn dom(domid: u16, min: u64, max: u64, actual: u64) -> DomainMemory {
    DomainMemory {
        domid: DomId(domid),
        can_balloon: true,
        dynamic_min: Kib(min),
        target: Kib(actual),
        dynamic_max: Kib(max),
        actual: Kib(actual),
        maxmem: Kib(actual),
        inaccuracy: Kib(4),
    }
}

fn ideal(d: DomainMemory) -> Guest {
    Guest::new(d, BalloonBehaviour::Ideal { rate_kib: 1000 })
}

fn config() -> Config {
    Config {
        poll_interval: Duration::from_millis(100),
        ..Config::default()
    }
}

fn world(free: u64, guests: &[Guest]) -> World {
    World::new(Kib(free), guests, Kib(4))
}

fn target(w: &World, domid: u16) -> Option<String> {
    w.read(&format!("/local/domain/{domid}/memory/target"))
}

fn tot_kib(w: &World, domid: u16) -> Kib {
    w.xen.domain_info(DomId(domid)).unwrap().tot_pages.into()
}

#[test]
fn dynamic_min_above_dynamic_max_is_a_typed_error_and_changes_nothing() {
    let w = world(
        0,
        &[
            ideal(dom(1, 1000, 2000, 1500)),
            ideal(dom(3, 3000, 2000, 2500)),
        ],
    );
    let mut sq = Squeezed::new(w.io(STEP_LIMIT), config());
    match sq.free_memory(Kib(100)) {
        Err(Error::InvalidRange {
            domid,
            dynamic_min,
            dynamic_max,
        }) => {
            assert_eq!(
                (domid, dynamic_min, dynamic_max),
                (DomId(3), Kib(3000), Kib(2000))
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(target(&w, 1).as_deref(), Some("1500"));
    assert_eq!(target(&w, 3).as_deref(), Some("2500"));
    assert_eq!(tot_kib(&w, 1), Kib(1500));
    assert_eq!(sq.io().inner.pacer().steps, 0);
}

#[test]
fn unknown_domain_is_a_typed_error() {
    let w = world(0, &[ideal(dom(1, 1000, 2000, 1500))]);
    let mut io = w.io(STEP_LIMIT);
    assert!(matches!(
        io.inner.set_target(DomId(9), Kib(1)),
        Err(Error::UnknownDomain(DomId(9)))
    ));
    assert!(matches!(
        io.inner.set_maxmem(DomId(9), Kib(1)),
        Err(Error::UnknownDomain(DomId(9)))
    ));
    // Nothing was written for the missing domain.
    assert_eq!(target(&w, 9), None);
    let mut sq = Squeezed::new(io, config());
    let r = sq.reserve_memory(Kib(100)).unwrap();
    assert!(matches!(
        sq.transfer_reservation_to_domain(r, DomId(9)),
        Err(Error::UnknownDomain(DomId(9)))
    ));
    // The reservation is still held after the failed transfer.
    assert_eq!(sq.reserved(), Kib(100));
}

#[test]
fn reservation_beyond_the_host_is_a_typed_error_and_moves_nothing() {
    let w = world(500, &[ideal(dom(1, 1000, 2000, 1500))]);
    let mut sq = Squeezed::new(w.io(STEP_LIMIT), config());
    match sq.reserve_memory(Kib(2001)) {
        Err(Error::ReservationTooLarge {
            requested,
            host_total,
        }) => {
            assert_eq!((requested, host_total), (Kib(2001), Kib(2000)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sq.reserved(), Kib(0));
    assert_eq!(target(&w, 1).as_deref(), Some("1500"));
    assert_eq!(sq.io().inner.pacer().steps, 0);
    assert!(matches!(
        sq.delete_reservation(ReservationId(42)),
        Err(Error::UnknownReservation(ReservationId(42)))
    ));
    let e = sq.reserve_memory(Kib(2001)).unwrap_err().to_string();
    assert!(e.contains("2001 KiB") && e.contains("2000 KiB"), "{e}");
}

#[test]
fn a_reservation_squeezes_guests_holds_the_memory_and_hands_it_over() {
    let w = world(
        0,
        &[
            ideal(dom(1, 1000, 2000, 2000)),
            ideal(dom(2, 1000, 3000, 3000)),
        ],
    );
    let mut sq = Squeezed::new(w.io(STEP_LIMIT), config());
    let r = sq.reserve_memory(Kib(1500)).unwrap();
    assert!(w.free() >= Kib(1500), "free {}", w.free());
    // The host has 5000 KiB in all, 1500 of them reserved.
    match sq.reserve_memory(Kib(3501)) {
        Err(Error::ReservationTooLarge {
            requested,
            host_total,
        }) => {
            assert_eq!((requested, host_total), (Kib(3501), Kib(3500)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sq.reserved(), Kib(1500));
    // The reserved memory is not shared out again by a rebalance.
    sq.balance_memory().unwrap();
    assert!(w.free() >= Kib(1500), "free {}", w.free());
    // A new domain is built with it, then owns it.
    w.add(&ideal(dom(3, 1500, 1500, 1500))).unwrap();
    sq.transfer_reservation_to_domain(r, DomId(3)).unwrap();
    assert_eq!(sq.reserved(), Kib(0));
    assert!(matches!(
        sq.delete_reservation(r),
        Err(Error::UnknownReservation(_))
    ));
    // Both reserved and unreserved memory is then balanced out.
    let r2 = sq.reserve_memory(Kib(100)).unwrap();
    sq.delete_reservation(r2).unwrap();
    sq.balance_memory().unwrap();
    assert!(guaranteed_free(&sq.io_mut().host_state().unwrap()) >= 0);
}

#[test]
fn a_reservation_that_cannot_be_freed_is_not_held() {
    let w = world(0, &[ideal(dom(1, 1800, 2000, 2000))]);
    let mut sq = Squeezed::new(w.io(STEP_LIMIT), config());
    let e = sq.reserve_memory(Kib(1000)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::CannotFree {
                required: Kib(1000),
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(sq.reserved(), Kib(0));
}

#[test]
fn a_domain_stuck_for_20_s_while_others_work_is_marked_uncooperative_with_a_reason() {
    // Domain 2 frees slowly (10 KiB/s, 400 KiB: ~40 s), so the squeezer keeps running long
    // after domain 1 is declared inactive.
    let w = world(
        0,
        &[
            Guest::new(dom(1, 1000, 2000, 2000), BalloonBehaviour::Stuck),
            Guest::new(
                dom(2, 1000, 2000, 2000),
                BalloonBehaviour::Ideal { rate_kib: 10 },
            ),
        ],
    );
    let mut sq = Squeezed::new(w.io(STEP_LIMIT), config());
    let e = sq.free_memory(Kib(1200)).unwrap_err();
    assert!(sq.io().now() > UNCOOPERATIVE_AFTER, "{:?}", sq.io().now());
    assert_eq!(
        w.read("/local/domain/1/memory/uncooperative").as_deref(),
        Some("1")
    );
    assert_eq!(w.read("/local/domain/2/memory/uncooperative"), None);
    match e {
        Error::DomainsRefused { required, given_up } => {
            assert_eq!(required, Kib(1200));
            assert_eq!(given_up.len(), 1);
            assert_eq!(given_up[0].domid, DomId(1));
            let reason = &given_up[0].reason;
            assert!(
                reason.contains("no progress") && reason.contains("uncooperative"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Domain 2 freed everything it could.
    assert!(tot_kib(&w, 2) <= Kib(1004), "{}", tot_kib(&w, 2));
}

#[test]
fn a_paused_guest_is_declared_inactive_then_uncooperative_and_cooperative_again() {
    let w = world(
        0,
        &[
            ideal(dom(1, 1000, 2000, 2000)),
            Guest::new(
                dom(2, 1000, 2000, 2000),
                BalloonBehaviour::Ideal { rate_kib: 10 },
            ),
        ],
    );
    w.xen.pause(DomId(1)).unwrap();
    let mut sq = Squeezed::new(w.io(STEP_LIMIT), config());
    let e = sq.free_memory(Kib(1200)).unwrap_err();
    assert!(matches!(&e, Error::DomainsRefused { given_up, .. } if given_up[0].domid == DomId(1)));
    assert_eq!(
        w.read("/local/domain/1/memory/uncooperative").as_deref(),
        Some("1")
    );
    // Unpaused, its driver frees what it was asked to and it is cooperative again.
    w.xen.unpause(DomId(1)).unwrap();
    sq.free_memory(Kib(1200)).unwrap();
    assert_eq!(w.read("/local/domain/1/memory/uncooperative"), None);
    assert!(w.free() >= Kib(1200));
}

#[test]
fn xen_host_reads_the_keys_honours_feature_balloon_and_explains_what_it_leaves_out() {
    let w = world(
        1000,
        &[
            ideal(dom(1, 1000, 2000, 1500)),
            ideal(dom(2, 1000, 2000, 1500)),
            ideal(dom(3, 1000, 2000, 1500)),
        ],
    );
    // Domain 2's driver is gone; domain 3's target is garbage; domain 9 is not managed.
    w.xs.dom0()
        .rm("/local/domain/2/control/feature-balloon")
        .unwrap();
    w.xs.dom0()
        .write("/local/domain/3/memory/target", "lots")
        .unwrap();
    w.take_free(DomId(9), Kib(400)).unwrap();
    let mut io = w.io(STEP_LIMIT);
    let state = io.host_state().unwrap();
    assert_eq!(state.free, Kib(600));
    let ids: Vec<DomId> = state.domains.iter().map(|d| d.domid).collect();
    assert_eq!(ids, [DomId(1), DomId(2)]);
    assert_eq!(state.domains[0], ideal(dom(1, 1000, 2000, 1500)).memory);
    assert!(!state.domains[1].can_balloon);
    let ignored = io.inner.ignored();
    assert_eq!(ignored.len(), 1);
    assert_eq!(ignored[0].domid, DomId(3));
    assert!(
        ignored[0].reason.contains("memory/target is not a number"),
        "{}",
        ignored[0]
    );
    assert!(ignored[0].reason.contains("lots"), "{}", ignored[0]);
    // maxmem is rounded up to whole pages, so it never falls below a target.
    io.set_maxmem(DomId(1), Kib(1501)).unwrap();
    assert_eq!(w.xen.domain_info(DomId(1)).unwrap().max_pages, Pages(376));
    io.set_target(DomId(1), Kib(1501)).unwrap();
    assert_eq!(target(&w, 1).as_deref(), Some("1501"));
    io.set_uncooperative(DomId(1), true).unwrap();
    assert_eq!(
        w.read("/local/domain/1/memory/uncooperative").as_deref(),
        Some("1")
    );
    io.set_uncooperative(DomId(1), false).unwrap();
    assert_eq!(w.read("/local/domain/1/memory/uncooperative"), None);
    // Claimed memory is not free.
    w.xen.set_max_mem(DomId(9), Pages(200)).unwrap();
    w.xen.claim_pages(DomId(9), Pages(150)).unwrap();
    assert_eq!(io.host_state().unwrap().free, Kib(400));
    // A guest cannot set its own target: the keys are dom0's.
    let guest = w.xs.guest(DomId(1)).unwrap();
    assert!(guest
        .write("/local/domain/1/memory/target", "9999999")
        .is_err());
}

#[test]
fn a_balance_round_names_every_domain_given_up_on_with_its_reason() {
    // 4000 KiB free to share out, but domain 1's driver never takes any, and domain 2's
    // dynamic-min is garbage.
    let w = world(
        4000,
        &[
            Guest::new(dom(1, 1000, 3000, 2000), BalloonBehaviour::Stuck),
            ideal(dom(2, 1000, 2000, 1500)),
        ],
    );
    w.xs.dom0()
        .write("/local/domain/2/memory/dynamic-min", "-3")
        .unwrap();
    let mut sq = Squeezed::new(w.io(STEP_LIMIT), config());
    let report = sq.balance_round();
    assert!(report.error.is_none(), "{report:?}");
    let reasons: Vec<String> = report.given_up.iter().map(ToString::to_string).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].starts_with("domain 1: balloon driver made no progress"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("domain 2: /local/domain/2/memory/dynamic-min is not a number"),
        "{reasons:?}"
    );
}

#[test]
fn a_paused_guest_stuck_through_many_short_balance_rounds_is_marked_uncooperative() {
    // A daemon's rounds: each `balance_round` gives up on the paused guest after 5 s (the
    // host is balanced without it), but the time since it last made progress adds up across
    // rounds, so it is marked uncooperative once that passes 20 s.
    let w = world(0, &[ideal(dom(1, 1000, 2000, 2000))]);
    w.xen.pause(DomId(1)).unwrap();
    let mut sq = Squeezed::new(w.io(STEP_LIMIT), config());
    w.xs.dom0()
        .write("/local/domain/1/memory/dynamic-max", "1500")
        .unwrap();
    let mut rounds = 0;
    let mut reason = String::new();
    while w.read("/local/domain/1/memory/uncooperative").is_none() {
        let report = sq.balance_round();
        assert!(report.error.is_none(), "{:?}", report.error);
        // Every round says it left the guest out, and why.
        let g = report.given_up.iter().find(|g| g.domid == DomId(1));
        reason = g.expect("the paused guest is given up on").reason.clone();
        assert!(reason.contains("no progress"), "{reason}");
        sq.io_mut().wait(Duration::from_secs(5)).unwrap();
        rounds += 1;
        assert!(rounds < 10, "not marked after {rounds} rounds");
    }
    assert!(rounds >= 2, "marked after {rounds} round(s)");
    let report = sq.balance_round();
    let g = report
        .given_up
        .iter()
        .find(|g| g.domid == DomId(1))
        .unwrap();
    assert!(
        g.reason.contains("marked uncooperative"),
        "{} / {reason}",
        g.reason
    );
    assert_eq!(target(&w, 1).as_deref(), Some("1500"));
    // Unpaused, it reaches its target and is cooperative again.
    w.xen.unpause(DomId(1)).unwrap();
    for _ in 0..3 {
        sq.balance_round();
    }
    assert_eq!(w.read("/local/domain/1/memory/uncooperative"), None);
    assert!(
        tot_kib(&w, 1).abs_diff(Kib(1500)) <= Kib(4),
        "{}",
        tot_kib(&w, 1)
    );
}
