//! One decision of the squeezer, and the stuck-driver monitor it keeps between decisions.

use std::collections::HashMap;
use std::time::Duration;

use xen_types::DomId;

use crate::policy;
use crate::units::{DomainMemory, HostState, Kib};

/// A domain making no progress toward its target for this long is inactive and left out.
pub const INACTIVE_AFTER: Duration = Duration::from_secs(5);
/// A domain making no progress toward its target for this long is uncooperative.
pub const UNCOOPERATIVE_AFTER: Duration = Duration::from_secs(20);

/// Fault injection, as squeezed's own tests use it to show why each safeguard exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fistpoint {
    /// Set freeing and taking targets at once (lets a taker allocate memory not yet freed).
    DisableTwoPhaseTargetSets,
    /// Do not allow for balloon drivers stopping short of their target.
    DisableInaccuracyCompensation,
}

/// Set a domain's balloon target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    /// The domain.
    pub domid: DomId,
    /// Its new target.
    pub target: Kib,
}

/// What the squeezer decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Enough memory is free and every active domain has reached its target.
    Success,
    /// Out of options: every domain is at its target or stuck; the stuck balloonable domains.
    Failed(Vec<DomId>),
    /// Change these targets (all freeing, or all taking: never both unless a fistpoint says
    /// so), in the order of the host's domains.
    AdjustTargets(Vec<Action>),
}

/// The result of [`Squeezer::one_iteration`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iteration {
    /// What to do.
    pub decision: Decision,
    /// Domains that became inactive in this iteration, sorted.
    pub declared_inactive: Vec<DomId>,
    /// Domains that became active again in this iteration.
    pub declared_active: Vec<DomId>,
    /// Domains that became uncooperative in this iteration.
    pub declared_uncooperative: Vec<DomId>,
    /// Domains that were uncooperative and made progress again.
    pub declared_cooperative: Vec<DomId>,
    /// Free memory if every active domain reached its dynamic-min.
    pub max_possible_free: Kib,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    last_actual: Kib,
    /// When the domain last moved toward its target, was on it, or could not balloon.
    last_progress: Duration,
    /// When the current call began watching it: inactivity counts from the later of the two.
    watched_since: Duration,
    stuck: bool,
    uncooperative: bool,
    seen: u64,
}

/// State kept between decisions: when each domain last moved toward its target.
#[derive(Debug, Default)]
pub struct Squeezer {
    progress: HashMap<DomId, Progress>,
    epoch: u64,
    non_active: Vec<DomId>,
    scratch: Vec<Kib>,
    seed_uncooperative: Vec<DomId>,
}

/// Which way a domain's memory must move to reach `target`, if it has not reached it.
fn must_grow(d: &DomainMemory, target: Kib) -> Option<bool> {
    if d.has_hit(target) {
        None
    } else {
        Some(target > d.actual)
    }
}

impl Squeezer {
    /// A squeezer that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A squeezer that takes `domids` (marked uncooperative by an earlier one) for
    /// uncooperative until they make progress, when it declares them cooperative.
    pub fn with_uncooperative(domids: impl IntoIterator<Item = DomId>) -> Self {
        Squeezer {
            seed_uncooperative: domids.into_iter().collect(),
            ..Self::default()
        }
    }

    /// A new call (one `change_host_free_memory`) begins at `now`: every domain gets a fresh
    /// [`INACTIVE_AFTER`] to move toward its target, while the time since it last made
    /// progress keeps counting toward [`UNCOOPERATIVE_AFTER`] across calls (as squeezed's
    /// host-wide cooperation table), so a guest that stays stuck through many short calls (a
    /// balancing daemon's rounds) is still marked uncooperative.
    pub fn begin_call(&mut self, now: Duration) {
        for p in self.progress.values_mut() {
            p.stuck = false;
            p.watched_since = now;
        }
        self.non_active.clear();
    }

    /// Whether `domid` is active (seen, not stuck).
    pub fn is_active(&self, domid: DomId) -> bool {
        self.progress.get(&domid).is_some_and(|p| !p.stuck)
    }

    /// Whether `domid` is uncooperative (stuck for [`UNCOOPERATIVE_AFTER`]).
    pub fn is_uncooperative(&self, domid: DomId) -> bool {
        self.progress.get(&domid).is_some_and(|p| p.uncooperative)
    }

    /// Why `d` was left out, for a person.
    pub fn explain(&self, d: &DomainMemory, now: Duration) -> String {
        if !d.can_balloon {
            return "has no working balloon driver".to_owned();
        }
        let Some(p) = self.progress.get(&d.domid) else {
            return "is no longer on the host".to_owned();
        };
        let idle = now.saturating_sub(p.last_progress).as_secs_f64();
        let mut s = format!(
            "balloon driver made no progress toward its target of {} (holds {}, allowed \
             inaccuracy {}) for {idle:.1} s; left out after {} s",
            d.target,
            d.actual,
            d.inaccuracy,
            INACTIVE_AFTER.as_secs()
        );
        if p.uncooperative {
            s += &format!(
                "; marked uncooperative after {} s",
                UNCOOPERATIVE_AFTER.as_secs()
            );
        }
        s
    }

    fn update(&mut self, host: &HostState, now: Duration) -> (Vec<DomId>, Vec<DomId>) {
        self.epoch += 1;
        let epoch = self.epoch;
        let (mut unco, mut co) = (Vec::new(), Vec::new());
        for d in &host.domains {
            let dir = must_grow(d, d.target);
            let seeded = &self.seed_uncooperative;
            let p = self.progress.entry(d.domid).or_insert_with(|| Progress {
                last_actual: d.actual,
                last_progress: now,
                watched_since: now,
                stuck: false,
                uncooperative: seeded.contains(&d.domid),
                seen: epoch,
            });
            p.seen = epoch;
            let progressing = (d.actual > p.last_actual && dir == Some(true))
                || (d.actual < p.last_actual && dir == Some(false));
            p.last_actual = d.actual;
            // On its target, or without a driver to ask: nothing is expected of it now, so
            // the clocks start when a new target is set (squeezed: "on or above target OR
            // cannot balloon" counts as cooperative).
            let idle_ok = dir.is_none() || !d.can_balloon;
            if progressing || idle_ok {
                p.last_progress = now;
            }
            // Only progress makes a stuck domain active again: an inactive domain's target is
            // set to what it holds, so being on it says nothing of its driver.
            if progressing {
                p.stuck = false;
            }
            if (progressing || idle_ok) && p.uncooperative {
                p.uncooperative = false;
                co.push(d.domid);
            }
            if dir.is_some() {
                let idle = now.saturating_sub(p.last_progress.max(p.watched_since));
                if idle > INACTIVE_AFTER {
                    p.stuck = true;
                }
                let idle = now.saturating_sub(p.last_progress);
                if idle > UNCOOPERATIVE_AFTER && !p.uncooperative {
                    p.uncooperative = true;
                    unco.push(d.domid);
                }
            }
        }
        // Forget domains that have gone.
        self.progress.retain(|_, p| p.seen == epoch);
        (unco, co)
    }

    /// Given a snapshot of the host and the free memory wanted (`host_target`), decide which
    /// balloon targets to set.
    ///
    /// `success` says whether a given amount of free memory is enough. Freeing targets are
    /// returned before taking ones: a taking target is only set once no domain has memory
    /// left to free toward its target.
    pub fn one_iteration(
        &mut self,
        host: &HostState,
        host_target: Kib,
        success: impl Fn(Kib) -> bool,
        now: Duration,
        fistpoints: &[Fistpoint],
    ) -> Iteration {
        let compensate = !fistpoints.contains(&Fistpoint::DisableInaccuracyCompensation);
        let two_phase = !fistpoints.contains(&Fistpoint::DisableTwoPhaseTargetSets);

        let (declared_uncooperative, declared_cooperative) = self.update(host, now);
        let active: Vec<DomainMemory> = host
            .domains
            .iter()
            .filter(|d| d.can_balloon && self.is_active(d.domid))
            .copied()
            .collect();
        // Sorted, so membership is a binary search however many domains are left out.
        let mut non_active: Vec<DomId> = host
            .domains
            .iter()
            .filter(|d| !(d.can_balloon && self.is_active(d.domid)))
            .map(|d| d.domid)
            .collect();
        non_active.sort_unstable();
        let declared_inactive = non_active
            .iter()
            .filter(|id| self.non_active.binary_search(id).is_err())
            .copied()
            .collect();
        let declared_active = self
            .non_active
            .iter()
            .filter(|id| non_active.binary_search(id).is_err())
            .copied()
            .collect();

        let mut targets = std::mem::take(&mut self.scratch);
        policy::compute_targets(host.free, &active, host_target, compensate, &mut targets);
        let max_possible_free = policy::maximum_free(host.free, &active, compensate);

        let freeing = |d: &DomainMemory, t: Kib| !d.has_hit(t) && t < d.actual;
        let allocation_phase = !active.iter().zip(&targets).any(|(d, &t)| freeing(d, t));
        let chosen: Vec<(&DomainMemory, Kib)> = active
            .iter()
            .zip(targets.iter().copied())
            .filter(|&(d, t)| !two_phase || freeing(d, t) != allocation_phase)
            .collect();

        let all_targets_reached = active.iter().all(|d| d.has_hit(d.target));
        let no_target_changes = chosen.iter().all(|&(d, t)| d.target == t);
        let decision = if !all_targets_reached || !no_target_changes {
            Decision::AdjustTargets(
                chosen
                    .iter()
                    .map(|&(d, t)| Action {
                        domid: d.domid,
                        target: t,
                    })
                    .collect(),
            )
        } else if success(host.free) {
            Decision::Success
        } else {
            Decision::Failed(
                host.domains
                    .iter()
                    .filter(|d| d.can_balloon && non_active.binary_search(&d.domid).is_ok())
                    .map(|d| d.domid)
                    .collect(),
            )
        };
        self.scratch = targets;
        self.non_active = non_active;
        Iteration {
            decision,
            declared_inactive,
            declared_active,
            declared_uncooperative,
            declared_cooperative,
            max_possible_free,
        }
    }
}
