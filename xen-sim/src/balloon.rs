//! Guest balloon drivers: what Linux's `xen-balloon` does inside a simulated domain.
//!
//! Linux reads its target from xenstore's `memory/target` (KiB, turned into pages by
//! `watch_target()`), then gives pages back to Xen (`XENMEM_decrease_reservation`) or asks
//! for more (`XENMEM_populate_physmap`) a batch at a time until its pages reach the target.
//! Here the xenstore side is the caller's (a guest agent reads `memory/target` and calls
//! [`Host::balloon_set_target`]); this module holds the driver: per domain a target, a
//! rate, and a [`BalloonBehaviour`] that can stick for a while, stick for good, or hide a
//! floor or ceiling, as squeezed's own test harness models guests. [`Host::balloon_step`]
//! moves every driver's domain toward its target for the time the host's [`Clock`] advanced
//! since the last step, so a test drives ballooning with a manual clock, deterministically.
//!
//! Pages move through Xen's own accounting: a decrease returns pages to the host, an increase
//! is refused past the domain's `max_pages`, past the host's free pages or into other
//! domains' claims, as Xen refuses it (Xen then gives what it can, and the driver tries again
//! later, as Linux does). Every refused page is counted ([`BalloonStatus`]), so a test can
//! check that no guest ever asked for memory the host did not have. Only a running domain's
//! driver moves (a paused domain's vCPUs do not run).
//!
//! ```
//! use std::time::Duration;
//! use xen_sim::balloon::BalloonBehaviour;
//! use xen_sim::{domain::small_pv_guest, Clock, Host, HostConfig};
//! use xen_types::{DomId, Pages};
//!
//! let host = Host::new(HostConfig { clock: Clock::manual(), ..HostConfig::default() });
//! let dom = host.create_domain(DomId(0), &small_pv_guest(63)).unwrap();
//! host.set_max_mem_kb(dom, 8 << 10).unwrap();
//! host.increase_reservation(dom, Pages::from_mib(8)).unwrap();
//! host.unpause(dom).unwrap();
//! // 1 MiB/s, stopping exactly at the target.
//! host.balloon_load(dom, BalloonBehaviour::Ideal { rate_kib: 1024 }, Pages(0)).unwrap();
//! host.balloon_set_target(dom, 6 << 10).unwrap();
//! host.clock().advance(Duration::from_secs(1));
//! host.balloon_step();
//! assert_eq!(host.balloon_status(dom).unwrap().current, Pages::from_mib(7));
//! host.clock().advance(Duration::from_secs(5));
//! host.balloon_step();
//! assert_eq!(host.balloon_status(dom).unwrap().current, Pages::from_mib(6));
//! ```
//!
//! [`Clock`]: crate::Clock

use std::time::Duration;

use xen_types::{DomId, Errno, Pages};

use crate::domain::{charge_alloc, check_alloc};
use crate::host::{Host, HostState};

/// KiB per page.
const PAGE_KIB: u64 = 4;
/// One page in the unit of a driver's budget (KiB × ns).
const PAGE_BUDGET: u128 = PAGE_KIB as u128 * 1_000_000_000;

/// How a guest's balloon driver behaves (squeezed's test harness's guests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalloonBehaviour {
    /// Moves toward its target at `rate_kib` KiB/s.
    Ideal {
        /// KiB per second.
        rate_kib: u64,
    },
    /// As `Ideal`, but will not go below `floor_kib`, which it does not report.
    HiddenFloor {
        /// KiB per second.
        rate_kib: u64,
        /// The floor, in KiB.
        floor_kib: u64,
    },
    /// As `Ideal`, but will not go above `ceiling_kib`, which it does not report.
    HiddenCeiling {
        /// KiB per second.
        rate_kib: u64,
        /// The ceiling, in KiB.
        ceiling_kib: u64,
    },
    /// Never moves (a hung guest, or a driver that ignores its target).
    Stuck,
    /// Moves at `rate_kib` KiB/s, but is stuck for `interval` out of every `2 × interval`.
    Intermittent {
        /// KiB per second.
        rate_kib: u64,
        /// Length of each stuck (and each working) period.
        interval: Duration,
    },
}

/// One domain's balloon driver.
#[derive(Debug, Clone)]
pub struct BalloonDriver {
    behaviour: BalloonBehaviour,
    /// How far short of its target the driver stops (squeezed's "inaccuracy").
    stop_short: Pages,
    /// The target, in pages (Linux's `balloon_stats.target_pages`).
    target: Pages,
    /// Clock reading up to which the driver has run.
    last_update: Duration,
    /// Budget carried over from the last step (KiB × ns), less than one page.
    carry: u128,
    /// Pages asked for and refused because the host had no free (unclaimed) memory.
    refused_host_free: u64,
    /// Pages asked for and refused because of the domain's `max_pages`.
    refused_max_pages: u64,
}

/// What a domain's balloon driver is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalloonStatus {
    /// How it behaves.
    pub behaviour: BalloonBehaviour,
    /// Its target.
    pub target: Pages,
    /// The domain's pages now (`tot_pages`).
    pub current: Pages,
    /// Pages it asked Xen for that the host did not have free (or had claimed for others).
    pub refused_host_free: u64,
    /// Pages it asked Xen for beyond the domain's `max_pages`.
    pub refused_max_pages: u64,
}

impl BalloonDriver {
    /// Signed change in pages the driver wants between its last step and `now`, from
    /// `current` pages; updates the carried budget.
    fn wanted(&mut self, current: Pages, now: Duration) -> i64 {
        let elapsed = now.saturating_sub(self.last_update);
        let rate = match self.behaviour {
            BalloonBehaviour::Stuck => return 0,
            BalloonBehaviour::Intermittent { rate_kib, interval } => {
                let working = |t: Duration| (t.as_nanos() / interval.as_nanos().max(1)) % 2 == 0;
                if !(working(self.last_update) && working(now)) {
                    self.carry = 0;
                    return 0;
                }
                rate_kib
            }
            BalloonBehaviour::Ideal { rate_kib }
            | BalloonBehaviour::HiddenFloor { rate_kib, .. }
            | BalloonBehaviour::HiddenCeiling { rate_kib, .. } => rate_kib,
        };
        let budget = self.carry + u128::from(rate) * elapsed.as_nanos();
        let allowed = u64::try_from(budget / PAGE_BUDGET).unwrap_or(u64::MAX);
        let distance = self
            .target
            .0
            .abs_diff(current.0)
            .saturating_sub(self.stop_short.0);
        let step = distance.min(allowed);
        self.carry = if step == allowed {
            budget - u128::from(step) * PAGE_BUDGET
        } else {
            0
        };
        let (cur, step) = (current.0 as i64, step as i64);
        let delta = if self.target < current { -step } else { step };
        match self.behaviour {
            BalloonBehaviour::HiddenFloor { floor_kib, .. } if delta < 0 => {
                let floor = floor_kib.div_ceil(PAGE_KIB) as i64;
                (cur + delta).max(floor.min(cur)) - cur
            }
            BalloonBehaviour::HiddenCeiling { ceiling_kib, .. } if delta > 0 => {
                let ceiling = (ceiling_kib / PAGE_KIB) as i64;
                (cur + delta).min(ceiling.max(cur)) - cur
            }
            _ => delta,
        }
    }
}

fn driver_mut(st: &mut HostState, dom: DomId) -> Result<&mut BalloonDriver, Errno> {
    st.domains
        .get_mut(&dom)
        .ok_or(Errno::ESRCH)?
        .balloon
        .as_mut()
        .ok_or(Errno::ENOENT)
}

impl Host {
    /// The guest in `dom` loads a balloon driver behaving as `behaviour`, stopping
    /// `stop_short` pages short of each target. Its target starts at the domain's current
    /// pages (as Linux's does at boot); a driver loaded before replaces it. Unknown domain:
    /// `ESRCH`.
    pub fn balloon_load(
        &self,
        dom: DomId,
        behaviour: BalloonBehaviour,
        stop_short: Pages,
    ) -> Result<(), Errno> {
        let mut st = self.lock();
        let now = st.clock.now();
        let d = st.domains.get_mut(&dom).ok_or(Errno::ESRCH)?;
        d.balloon = Some(BalloonDriver {
            behaviour,
            stop_short,
            target: d.tot_pages,
            last_update: now,
            carry: 0,
            refused_host_free: 0,
            refused_max_pages: 0,
        });
        Ok(())
    }

    /// The guest read `target_kib` from its `memory/target` (Linux's `watch_target()`:
    /// KiB rounded down to pages). No driver loaded: `ENOENT`; unknown domain: `ESRCH`.
    pub fn balloon_set_target(&self, dom: DomId, target_kib: u64) -> Result<(), Errno> {
        let mut st = self.lock();
        driver_mut(&mut st, dom)?.target = Pages::from_kib(target_kib);
        Ok(())
    }

    /// What `dom`'s balloon driver is doing. No driver loaded: `ENOENT`; unknown domain:
    /// `ESRCH`.
    pub fn balloon_status(&self, dom: DomId) -> Result<BalloonStatus, Errno> {
        let st = self.lock();
        let d = st.domains.get(&dom).ok_or(Errno::ESRCH)?;
        let b = d.balloon.as_ref().ok_or(Errno::ENOENT)?;
        Ok(BalloonStatus {
            behaviour: b.behaviour,
            target: b.target,
            current: d.tot_pages,
            refused_host_free: b.refused_host_free,
            refused_max_pages: b.refused_max_pages,
        })
    }

    /// Runs every running domain's balloon driver up to the clock's current time, in domain
    /// order: each gives pages back or asks Xen for more, as far as its rate and behaviour
    /// allow. A driver of a domain that is not running does not move (and gains no budget).
    pub fn balloon_step(&self) {
        let mut st = self.lock();
        let now = st.clock.now();
        let ids: Vec<DomId> = st
            .domains
            .values()
            .filter(|d| d.balloon.is_some())
            .map(|d| d.id)
            .collect();
        for id in ids {
            step_one(&mut st, id, now);
        }
    }
}

/// Moves one domain's driver up to `now`.
fn step_one(st: &mut HostState, id: DomId, now: Duration) {
    let Some(d) = st.domains.get_mut(&id) else {
        return;
    };
    let (runnable, current) = (d.runnable(), d.tot_pages);
    let Some(b) = d.balloon.as_mut() else {
        return;
    };
    if !runnable {
        b.last_update = now;
        b.carry = 0;
        return;
    }
    let delta = b.wanted(current, now);
    b.last_update = now;
    if delta < 0 {
        // XENMEM_decrease_reservation of the highest frames the guest is not using.
        let keep: Vec<u64> = d
            .built
            .as_ref()
            .map(|b| vec![b.start_info_pfn.0, b.store_pfn.0, b.console_pfn.0])
            .unwrap_or_default();
        let memory = &d.memory;
        let n = d.p2m.remove_top(delta.unsigned_abs(), |f| {
            keep.contains(&f) || memory.in_use(f)
        });
        d.tot_pages = d.tot_pages - Pages(n);
        st.free = st.free + Pages(n);
    } else if delta > 0 {
        // XENMEM_populate_physmap one page at a time: Xen gives what it can.
        let want = delta as u64;
        let (free, claims) = (st.free.0, st.outstanding.0);
        let by_max = d.max_pages.0.saturating_sub(d.tot_pages.0);
        let by_free = free
            .saturating_sub(claims)
            .max(d.outstanding_pages.0.min(free));
        let got = want.min(by_max).min(by_free);
        if got < want {
            let b = d.balloon.as_mut().expect("driver checked above");
            if by_max < want {
                b.refused_max_pages += want - by_max;
            }
            if by_free < want.min(by_max) {
                b.refused_host_free += want.min(by_max) - by_free;
            }
        }
        if got == 0 || check_alloc(st, id, Pages(got)).is_err() {
            return;
        }
        let mut holes = Vec::new();
        let (mut need, mut start) = (got, 0u64);
        while need > 0 {
            let window = need.max(1024);
            for (s, l) in st.domains[&id].p2m.holes(start, window) {
                let take = l.min(need);
                holes.push((s, take));
                need -= take;
                if need == 0 {
                    break;
                }
            }
            start += window;
        }
        for (s, l) in holes {
            let m = crate::domain::alloc_mfns(st, l);
            if let Some(d) = st.domains.get_mut(&id) {
                d.p2m.insert(s, l, m);
            }
        }
        // Checked by check_alloc above.
        let _ = charge_alloc(st, id, Pages(got));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::small_pv_guest;
    use crate::{Clock, HostConfig};

    fn host(memory_kib: u64) -> Host {
        Host::new(HostConfig {
            clock: Clock::manual(),
            memory: Pages::from_kib(memory_kib + 1024),
            dom0_memory: Pages::from_kib(1024),
            ..HostConfig::default()
        })
    }

    fn guest(host: &Host, kib: u64, behaviour: BalloonBehaviour) -> DomId {
        let dom = host.create_domain(DomId(0), &small_pv_guest(63)).unwrap();
        host.set_max_mem_kb(dom, kib).unwrap();
        host.increase_reservation(dom, Pages::from_kib(kib))
            .unwrap();
        host.unpause(dom).unwrap();
        host.balloon_load(dom, behaviour, Pages(1)).unwrap();
        dom
    }

    fn tick(host: &Host, ms: u64) {
        host.clock().advance(Duration::from_millis(ms));
        host.balloon_step();
    }

    #[test]
    fn ideal_driver_moves_at_its_rate_and_stops_short() {
        let host = host(4000);
        // 10 KiB/s: 2.5 pages a second, carried over between steps.
        let dom = guest(&host, 2000, BalloonBehaviour::Ideal { rate_kib: 10 });
        host.balloon_set_target(dom, 1000).unwrap();
        tick(&host, 1000);
        assert_eq!(host.balloon_status(dom).unwrap().current, Pages(498));
        tick(&host, 1000);
        assert_eq!(host.balloon_status(dom).unwrap().current, Pages(495));
        for _ in 0..200 {
            tick(&host, 1000);
        }
        // Stops one page (its inaccuracy) above the 250-page target; the host got the rest.
        assert_eq!(host.balloon_status(dom).unwrap().current, Pages(251));
        assert_eq!(host.physinfo().free_pages, 1000 - 500 + 249);
    }

    #[test]
    fn growth_is_refused_past_max_pages_and_host_free_and_counted() {
        let host = host(2100);
        let dom = guest(&host, 2000, BalloonBehaviour::Ideal { rate_kib: 1 << 20 });
        host.set_max_mem_kb(dom, 2040).unwrap();
        host.balloon_set_target(dom, 3000).unwrap();
        tick(&host, 1000);
        let s = host.balloon_status(dom).unwrap();
        // max_pages 510: 10 pages given; 250 − 1 − 10 refused for max_pages.
        assert_eq!(s.current, Pages(510));
        assert_eq!(s.refused_max_pages, 239);
        assert_eq!(s.refused_host_free, 0);
        host.set_max_mem_kb(dom, 4000).unwrap();
        tick(&host, 1000);
        let s = host.balloon_status(dom).unwrap();
        // The host had 25 − 10 = 15 pages free: the rest is refused for lack of memory.
        assert_eq!(s.current, Pages(525));
        assert_eq!(s.refused_host_free, 224);
        assert_eq!(host.physinfo().free_pages, 0);
    }

    #[test]
    fn stuck_paused_floor_ceiling_and_intermittent_drivers() {
        let host = host(20000);
        let stuck = guest(&host, 2000, BalloonBehaviour::Stuck);
        let floor = guest(
            &host,
            2000,
            BalloonBehaviour::HiddenFloor {
                rate_kib: 1000,
                floor_kib: 1250,
            },
        );
        let ceiling = guest(
            &host,
            2000,
            BalloonBehaviour::HiddenCeiling {
                rate_kib: 1000,
                ceiling_kib: 2200,
            },
        );
        let sticky = guest(
            &host,
            2000,
            BalloonBehaviour::Intermittent {
                rate_kib: 400,
                interval: Duration::from_secs(1),
            },
        );
        let paused = guest(&host, 2000, BalloonBehaviour::Ideal { rate_kib: 1000 });
        host.pause(paused).unwrap();
        host.set_max_mem_kb(ceiling, 4000).unwrap();
        for d in [stuck, floor, sticky, paused] {
            host.balloon_set_target(d, 1000).unwrap();
        }
        host.balloon_set_target(ceiling, 3000).unwrap();
        for _ in 0..10 {
            tick(&host, 500);
        }
        let cur = |d| host.balloon_status(d).unwrap().current;
        assert_eq!(cur(stuck), Pages(500));
        assert_eq!(cur(paused), Pages(500));
        // 1250 KiB is 312.5 pages: the driver keeps 313.
        assert_eq!(cur(floor), Pages(313));
        assert_eq!(cur(ceiling), Pages(550));
        // Moves only in steps that start and end in a working second ([0, 0.5], [2, 2.5],
        // [4, 4.5]): three times 50 pages.
        assert_eq!(cur(sticky), Pages(350));
        assert_eq!(host.balloon_set_target(DomId(0), 1), Err(Errno::ENOENT));
        assert_eq!(host.balloon_status(DomId(99)), Err(Errno::ESRCH));
    }

    #[test]
    fn claims_hold_memory_for_their_domain() {
        let host = host(4000);
        let a = guest(&host, 1000, BalloonBehaviour::Ideal { rate_kib: 1 << 20 });
        let b = guest(&host, 1000, BalloonBehaviour::Ideal { rate_kib: 1 << 20 });
        host.set_max_mem_kb(a, 4000).unwrap();
        host.set_max_mem_kb(b, 4000).unwrap();
        // 500 pages free; a claims 400 more than its 250.
        assert_eq!(host.claim_pages(a, Pages(650)), Ok(()));
        assert_eq!(host.claim_pages(a, Pages(700)), Err(Errno::EINVAL));
        assert_eq!(host.claim_pages(b, Pages(400)), Err(Errno::ENOMEM));
        assert_eq!(host.physinfo().outstanding_pages, 400);
        host.balloon_set_target(b, 4000).unwrap();
        tick(&host, 1000);
        // b gets only the 100 unclaimed pages.
        assert_eq!(host.balloon_status(b).unwrap().current, Pages(350));
        assert_eq!(host.increase_reservation(b, Pages(1)), Err(Errno::ENOMEM));
        // a's own allocation uses its claim.
        host.increase_reservation(a, Pages(150)).unwrap();
        assert_eq!(host.domain_info(a).unwrap().outstanding_pages, 250);
        assert_eq!(host.physinfo().outstanding_pages, 250);
        host.claim_pages(a, Pages::ZERO).unwrap();
        assert_eq!(host.physinfo().outstanding_pages, 0);
    }
}
