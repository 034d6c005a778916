//! squeezed's own scenarios (xapi-project/xen-api `ocaml/squeezed/test/squeeze_test.ml`),
//! ported with the same domains, balloon drivers, host free memory, required memory, fault
//! injection and expected outcome.
//!
//! As there, each scenario (1) frees `required` KiB with the host's free-memory target set
//! to `required`, then checks that the memory stays free even if every guest drifts up to
//! `target + inaccuracy`; (2) lets something else take 500 KiB; (3) gives the rest back to
//! the guests until at most 32 KiB are free and checks the guests cannot over-commit the host.
//! The guests run on `xen-sim` with the project's xenstored, squeezed's [`XenHost`] between
//! them (see `common`); every step checks that no guest allocates beyond host free memory,
//! no target is set above maxmem and no maxmem below target; the clock advances 0.1 s per
//! poll. Xen counts whole 4 KiB pages, so a driver's hidden floor of 1250 KiB keeps 313
//! pages (1252 KiB), and free memory is a multiple of 4 KiB.
//!
//! [`XenHost`]: squeezed::XenHost

mod common;

use std::time::Duration;

use common::{guaranteed_free, Guest, World};
use squeezed::{Config, DomId, DomainMemory, Error, Fistpoint, HostIo, Kib, Squeezed};
use xen_sim::balloon::BalloonBehaviour;

/// More polls than any scenario needs: a loop that does not end is a failure.
const STEP_LIMIT: u64 = 10_000;

/// `domain_make domid can_balloon dynamic_min target dynamic_max actual maxmem inaccuracy`.
fn dom(
    domid: u16,
    min: u64,
    target: u64,
    max: u64,
    actual: u64,
    maxmem: u64,
    inacc: u64,
) -> DomainMemory {
    DomainMemory {
        domid: DomId(domid),
        can_balloon: true,
        dynamic_min: Kib(min),
        target: Kib(target),
        dynamic_max: Kib(max),
        actual: Kib(actual),
        maxmem: Kib(maxmem),
        inaccuracy: Kib(inacc),
    }
}

fn ideal(d: DomainMemory, rate: u64) -> Guest {
    Guest::new(d, BalloonBehaviour::Ideal { rate_kib: rate })
}

fn floor(d: DomainMemory, rate: u64, floor: u64) -> Guest {
    Guest::new(
        d,
        BalloonBehaviour::HiddenFloor {
            rate_kib: rate,
            floor_kib: floor,
        },
    )
}

fn ceiling(d: DomainMemory, rate: u64, ceiling: u64) -> Guest {
    Guest::new(
        d,
        BalloonBehaviour::HiddenCeiling {
            rate_kib: rate,
            ceiling_kib: ceiling,
        },
    )
}

fn intermittent(d: DomainMemory, rate: u64, secs: f64) -> Guest {
    Guest::new(
        d,
        BalloonBehaviour::Intermittent {
            rate_kib: rate,
            interval: Duration::from_secs_f64(secs),
        },
    )
}

fn stuck(d: DomainMemory) -> Guest {
    Guest::new(d, BalloonBehaviour::Stuck)
}

/// Why a simulation failed.
#[derive(Debug)]
enum Failure {
    /// squeezed gave up (or the host refused an operation: an invariant broke).
    Squeezed(Error),
    /// After freeing, the memory was not guaranteed to stay free.
    #[expect(dead_code, reason = "read through Debug in failure messages")]
    NotGuaranteedFree { guaranteed: i64, required: u64 },
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Squeezed(e)
    }
}

struct Done {
    world: World,
}

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "free {}", self.world.free())
    }
}

fn simulate(
    guests: Vec<Guest>,
    free: u64,
    required: u64,
    fistpoints: &[Fistpoint],
) -> Result<Done, Failure> {
    let inaccuracy = guests[0].memory.inaccuracy;
    assert!(guests.iter().all(|g| g.memory.inaccuracy == inaccuracy));
    let world = World::new(Kib(free), &guests, inaccuracy);
    let config = Config {
        target_host_free: Kib(required),
        free_memory_tolerance: Kib(0),
        poll_interval: Duration::from_millis(100),
        fistpoints: fistpoints.to_vec(),
    };
    let mut sq = Squeezed::new(world.io(STEP_LIMIT), config);
    let check = |sq: &mut Squeezed<common::Checked>, required: u64| {
        let guaranteed = guaranteed_free(&sq.io_mut().host_state()?);
        if guaranteed < required as i64 {
            return Err(Failure::NotGuaranteedFree {
                guaranteed,
                required,
            });
        }
        Ok(())
    };
    // Phase 1: free the memory.
    sq.change_host_free_memory(Kib(required), |x| x >= Kib(required))?;
    check(&mut sq, required)?;
    // Phase 2: something (a domain being built) uses 500 KiB of it.
    world
        .take_free(DomId(99), Kib(500))
        .map_err(|e| Error::Host(e.to_string()))?;
    // Phase 3: give the rest back to the guests.
    sq.change_host_free_memory(Kib(0), |x| x <= Kib(32))?;
    check(&mut sq, 0)?;
    drop(sq);
    Ok(Done { world })
}

fn scenario_a_guests() -> Vec<Guest> {
    vec![
        floor(dom(0, 1000, 1500, 2000, 1500, 1500, 4), 100, 1250),
        intermittent(dom(1, 2500, 3500, 4500, 3500, 3500, 4), 500, 0.25),
    ]
}

fn scenario_e_guests() -> Vec<Guest> {
    vec![
        stuck(dom(0, 5000, 7000, 7000, 7000, 7000, 0)),
        ideal(dom(1, 5000, 6000, 11000, 6000, 6000, 0), 100),
    ]
}

fn expect_success(r: Result<Done, Failure>) -> Done {
    match r {
        Ok(done) => done,
        Err(f) => panic!("expected to succeed, failed: {f:?}"),
    }
}

fn expect_failure(r: Result<Done, Failure>) -> Failure {
    match r {
        Ok(done) => panic!("expected to fail, succeeded: {done:?}"),
        Err(f) => f,
    }
}

/// A small domain with a hidden limit and a large domain which exhibits 'sticky' behaviour.
#[test]
fn squeeze_scenario_a() {
    let done = expect_success(simulate(scenario_a_guests(), 0, 1000, &[]));
    assert!(done.world.free() <= Kib(32), "free {}", done.world.free());
}

/// Two domains sticky with different periods: one longer than the stuck interval, one shorter.
#[test]
fn squeeze_scenario_b() {
    let guests = vec![
        intermittent(dom(1, 500, 3500, 4500, 3500, 3500, 4), 100, 3.0),
        intermittent(dom(0, 500, 1500, 2500, 1500, 1500, 4), 100, 1.5),
    ];
    let done = expect_success(simulate(guests, 0, 1000, &[]));
    // As in the original, phase 3 returns at once here: every target is reached and 0 KiB
    // (less than what is free) is asked for, so what is left stays free: the original's
    // 509 KiB, here 512 as Xen moves whole pages.
    assert_eq!(done.world.free(), Kib(512));
}

/// Dynamic-mins too high to allow enough memory to be freed.
#[test]
fn squeeze_scenario_c() {
    let guests = vec![
        ideal(dom(0, 1000, 1500, 2000, 1500, 1500, 0), 100),
        ideal(dom(1, 2000, 2500, 3000, 2500, 2500, 0), 100),
    ];
    let f = expect_failure(simulate(guests, 0, 1500, &[]));
    assert!(
        matches!(
            f,
            Failure::Squeezed(Error::CannotFree {
                required: Kib(1500),
                max_possible: Kib(1000),
                ..
            })
        ),
        "{f:?}"
    );
}

/// Looks fine, but one domain is stuck for good above its dynamic-min.
#[test]
fn squeeze_scenario_d() {
    let guests = vec![
        ideal(dom(0, 1000, 1500, 2000, 1500, 1500, 0), 100),
        floor(dom(1, 2000, 2500, 3000, 2500, 2500, 0), 100, 2250),
    ];
    let f = expect_failure(simulate(guests, 0, 1000, &[]));
    match f {
        Failure::Squeezed(Error::DomainsRefused { required, given_up }) => {
            assert_eq!(required, Kib(1000));
            assert_eq!(given_up.len(), 1, "{given_up:?}");
            assert_eq!(given_up[0].domid, DomId(1));
            assert!(
                given_up[0].reason.contains("no progress"),
                "{}",
                given_up[0].reason
            );
        }
        other => panic!("{other:?}"),
    }
}

/// One domain must free but is stuck; the other must take but cannot, as nothing is free.
/// squeezed must give up on the stuck one and have the other free instead, without taking
/// the second for stuck because it could not allocate.
#[test]
fn squeeze_scenario_e() {
    let done = expect_success(simulate(scenario_e_guests(), 0, 1000, &[]));
    assert!(done.world.free() <= Kib(32), "free {}", done.world.free());
}

/// Scenario e without two-phase target setting: the taker allocates memory not yet freed.
#[test]
fn squeeze_scenario_f() {
    let f = expect_failure(simulate(
        scenario_e_guests(),
        0,
        1000,
        &[Fistpoint::DisableTwoPhaseTargetSets],
    ));
    assert!(
        matches!(&f, Failure::Squeezed(Error::Host(m)) if m.contains("allocated")),
        "{f:?}"
    );
}

/// Scenario a without inaccuracy compensation: drivers stopping 4 KiB short look stuck.
#[test]
fn squeeze_scenario_g() {
    let f = expect_failure(simulate(
        scenario_a_guests(),
        0,
        1000,
        &[Fistpoint::DisableInaccuracyCompensation],
    ));
    // Both drivers stop 4 KiB short, are declared inactive, and without them not enough
    // can be freed.
    assert!(
        matches!(
            f,
            Failure::Squeezed(Error::CannotFree {
                required: Kib(1000),
                ..
            })
        ),
        "{f:?}"
    );
}

/// A small domain with a hidden ceiling and a perfectly working domain that takes the slack.
#[test]
fn squeeze_scenario_h() {
    let guests = vec![
        ceiling(dom(0, 1000, 1500, 2000, 1500, 1500, 4), 100, 1500),
        ideal(dom(1, 1000, 1500, 2000, 1500, 1500, 4), 100),
    ];
    let done = expect_success(simulate(guests, 1000, 0, &[]));
    assert!(done.world.free() <= Kib(32), "free {}", done.world.free());
}
