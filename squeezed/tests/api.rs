//! Bad input, reservations, uncooperative domains and the simulated host's own rules.

use std::time::Duration;

use squeezed::sim::{Behaviour, Guest, SimHost};
use squeezed::{
    Config, DomId, DomainMemory, Error, HostIo, Kib, ReservationId, Squeezed, UNCOOPERATIVE_AFTER,
};

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
    Guest::new(d, Behaviour::Ideal { rate: 1000 })
}

fn config() -> Config {
    Config {
        poll_interval: Duration::from_millis(100),
        ..Config::default()
    }
}

#[test]
fn dynamic_min_above_dynamic_max_is_a_typed_error_and_changes_nothing() {
    let bad = dom(3, 3000, 2000, 2500);
    let host = SimHost::new(Kib(0), vec![ideal(dom(1, 1000, 2000, 1500)), ideal(bad)]);
    let mut sq = Squeezed::new(host, config());
    let before = sq.io().guests().to_vec();
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
    let after = sq.io().guests();
    for (b, a) in before.iter().zip(after) {
        assert_eq!(b.memory, a.memory);
    }
    assert!(bad.validate().is_err());
}

#[test]
fn unknown_domain_is_a_typed_error() {
    let mut host = SimHost::new(Kib(0), vec![ideal(dom(1, 1000, 2000, 1500))]);
    assert!(matches!(
        host.set_target(DomId(9), Kib(1)),
        Err(Error::UnknownDomain(DomId(9)))
    ));
    assert!(matches!(
        host.set_maxmem(DomId(9), Kib(1)),
        Err(Error::UnknownDomain(DomId(9)))
    ));
    let mut sq = Squeezed::new(host, config());
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
    let host = SimHost::new(Kib(500), vec![ideal(dom(1, 1000, 2000, 1500))]);
    let mut sq = Squeezed::new(host, config());
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
    assert_eq!(sq.io().guests()[0].memory.target, Kib(1500));
    assert_eq!(sq.io().steps(), 0);
    assert!(matches!(
        sq.delete_reservation(ReservationId(42)),
        Err(Error::UnknownReservation(ReservationId(42)))
    ));
    let e = sq.reserve_memory(Kib(2001)).unwrap_err().to_string();
    assert!(e.contains("2001 KiB") && e.contains("2000 KiB"), "{e}");
}

#[test]
fn a_reservation_squeezes_guests_holds_the_memory_and_hands_it_over() {
    let host = SimHost::new(
        Kib(0),
        vec![
            ideal(dom(1, 1000, 2000, 2000)),
            ideal(dom(2, 1000, 3000, 3000)),
        ],
    );
    let mut sq = Squeezed::new(host, config());
    let r = sq.reserve_memory(Kib(1500)).unwrap();
    assert!(sq.io().free() >= Kib(1500), "free {}", sq.io().free());
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
    assert!(sq.io().free() >= Kib(1500), "free {}", sq.io().free());
    // A new domain is built with it, then owns it.
    sq.io_mut()
        .add_guest(ideal(dom(3, 1500, 1500, 1500)))
        .unwrap();
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
    assert!(sq.io().guaranteed_free() >= 0);
}

#[test]
fn a_reservation_that_cannot_be_freed_is_not_held() {
    let host = SimHost::new(Kib(0), vec![ideal(dom(1, 1800, 2000, 2000))]);
    let mut sq = Squeezed::new(host, config());
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
    let host = SimHost::new(
        Kib(0),
        vec![
            Guest::new(dom(1, 1000, 2000, 2000), Behaviour::Stuck),
            Guest::new(dom(2, 1000, 2000, 2000), Behaviour::Ideal { rate: 10 }),
        ],
    );
    let mut sq = Squeezed::new(host, config());
    let e = sq.free_memory(Kib(1200)).unwrap_err();
    assert!(sq.io().now() > UNCOOPERATIVE_AFTER, "{:?}", sq.io().now());
    assert!(sq.io().uncooperative().contains(&DomId(1)));
    assert!(!sq.io().uncooperative().contains(&DomId(2)));
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
    assert!(sq.io().guests()[1].memory.actual <= Kib(1004));
}

#[test]
fn sim_host_enforces_target_and_maxmem_order() {
    let mut host = SimHost::new(Kib(1000), vec![ideal(dom(1, 1000, 2000, 1500))]);
    let e = host.set_target(DomId(1), Kib(1600)).unwrap_err();
    assert!(e.to_string().contains("above maxmem"), "{e}");
    let e = host.set_maxmem(DomId(1), Kib(1400)).unwrap_err();
    assert!(e.to_string().contains("below target"), "{e}");
    host.set_maxmem(DomId(1), Kib(1600)).unwrap();
    host.set_target(DomId(1), Kib(1600)).unwrap();
    host.wait(Duration::from_secs(1)).unwrap();
    // Stops within its inaccuracy (4 KiB) of the target, taking it from free memory.
    assert_eq!(host.guests()[0].memory.actual, Kib(1596));
    assert_eq!(host.free(), Kib(904));
}
