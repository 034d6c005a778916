//! A simulated host with guest balloon-driver models, driven by a simulated clock.
//!
//! Each guest's driver moves its memory toward its target at a set rate (KiB per second),
//! stopping once within its inaccuracy, and may stick for a while, stick for good, or hide a
//! floor or ceiling it will not pass, as squeezed's own test harness models them. The host
//! enforces squeezed's invariants at every step and fails with [`Error::Host`] when one
//! breaks: no guest allocates beyond host free memory, no target above maxmem, no maxmem
//! below target.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use xen_types::DomId;

use crate::driver::HostIo;
use crate::error::{Error, Result};
use crate::units::{DomainMemory, HostState, Kib};

/// How a guest's balloon driver behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    /// Moves toward its target at `rate` KiB/s.
    Ideal {
        /// KiB per second.
        rate: u64,
    },
    /// As `Ideal`, but will not go below a floor it does not report.
    HiddenFloor {
        /// KiB per second.
        rate: u64,
        /// The floor.
        floor: Kib,
    },
    /// As `Ideal`, but will not go above a ceiling it does not report.
    HiddenCeiling {
        /// KiB per second.
        rate: u64,
        /// The ceiling.
        ceiling: Kib,
    },
    /// Never moves.
    Stuck,
    /// Moves at `rate` KiB/s, but is stuck for `interval` out of every `2 × interval`.
    Intermittent {
        /// KiB per second.
        rate: u64,
        /// Length of each stuck (and each working) period.
        interval: Duration,
    },
}

/// A guest with a balloon driver.
#[derive(Debug, Clone)]
pub struct Guest {
    /// What squeezed sees of it.
    pub memory: DomainMemory,
    /// How its driver behaves.
    pub behaviour: Behaviour,
    last_update: Duration,
}

impl Guest {
    /// A guest whose memory starts as `memory`.
    pub fn new(memory: DomainMemory, behaviour: Behaviour) -> Self {
        Guest {
            memory,
            behaviour,
            last_update: Duration::ZERO,
        }
    }

    /// Signed change in memory a driver at `rate` makes in `elapsed`: toward the target,
    /// stopping `inaccuracy` short of it.
    fn ideal_delta(&self, rate: u64, elapsed: Duration) -> i64 {
        let m = &self.memory;
        let max_change = (u128::from(rate) * elapsed.as_nanos() / 1_000_000_000) as u64;
        let distance = m.target.abs_diff(m.actual).saturating_sub(m.inaccuracy).0;
        let step = distance.min(max_change) as i64;
        if m.actual > m.target {
            -step
        } else {
            step
        }
    }

    /// The change the driver wants to make between its last update and `now`.
    fn delta(&self, now: Duration) -> i64 {
        let elapsed = now.saturating_sub(self.last_update);
        let actual = self.memory.actual.0 as i64;
        match self.behaviour {
            Behaviour::Ideal { rate } => self.ideal_delta(rate, elapsed),
            Behaviour::HiddenFloor { rate, floor } => {
                let d = self.ideal_delta(rate, elapsed);
                if d >= 0 || actual + d > floor.0 as i64 {
                    d
                } else {
                    floor.0 as i64 - actual
                }
            }
            Behaviour::HiddenCeiling { rate, ceiling } => {
                let d = self.ideal_delta(rate, elapsed);
                if actual + d < ceiling.0 as i64 {
                    d
                } else {
                    ceiling.0 as i64 - actual
                }
            }
            Behaviour::Stuck => 0,
            Behaviour::Intermittent { rate, interval } => {
                let working = |t: Duration| (t.as_nanos() / interval.as_nanos().max(1)) % 2 == 0;
                if working(self.last_update) && working(now) {
                    self.ideal_delta(rate, elapsed)
                } else {
                    0
                }
            }
        }
    }
}

/// A simulated host: free memory, guests and a clock.
#[derive(Debug, Clone, Default)]
pub struct SimHost {
    free: Kib,
    guests: Vec<Guest>,
    index: HashMap<DomId, usize>,
    now: Duration,
    uncooperative: BTreeSet<DomId>,
    steps: u64,
    step_limit: Option<u64>,
}

impl SimHost {
    /// A host with `free` memory and these guests, at time zero.
    pub fn new(free: Kib, guests: Vec<Guest>) -> Self {
        let index = guests
            .iter()
            .enumerate()
            .map(|(i, g)| (g.memory.domid, i))
            .collect();
        SimHost {
            free,
            guests,
            index,
            ..SimHost::default()
        }
    }

    /// Makes `wait` fail after `limit` steps (a loop that never ends is a bug).
    pub fn with_step_limit(mut self, limit: u64) -> Self {
        self.step_limit = Some(limit);
        self
    }

    /// Free memory.
    pub fn free(&self) -> Kib {
        self.free
    }

    /// The guests.
    pub fn guests(&self) -> &[Guest] {
        &self.guests
    }

    /// Number of `wait` calls so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Domains marked uncooperative.
    pub fn uncooperative(&self) -> &BTreeSet<DomId> {
        &self.uncooperative
    }

    /// Something outside squeezed (a domain being built) takes `kib` of free memory.
    ///
    /// # Errors
    /// [`Error::Host`] when less than `kib` is free.
    pub fn take_free(&mut self, kib: Kib) -> Result<()> {
        if kib > self.free {
            return Err(Error::Host(format!(
                "cannot take {kib}: only {} free",
                self.free
            )));
        }
        self.free = self.free - kib;
        Ok(())
    }

    /// Adds a guest whose memory comes out of the host's free memory.
    ///
    /// # Errors
    /// [`Error::Host`] when less than the guest's memory is free or its id is taken.
    pub fn add_guest(&mut self, mut guest: Guest) -> Result<()> {
        if self
            .guests
            .iter()
            .any(|g| g.memory.domid == guest.memory.domid)
        {
            return Err(Error::Host(format!("domain {} exists", guest.memory.domid)));
        }
        self.take_free(guest.memory.actual)?;
        guest.last_update = self.now;
        self.index.insert(guest.memory.domid, self.guests.len());
        self.guests.push(guest);
        Ok(())
    }

    /// Free memory less what every guest could still take by drifting up to
    /// `target + inaccuracy`: memory that is free whatever the guests do (may be negative).
    pub fn guaranteed_free(&self) -> i64 {
        let could_take: i64 = self
            .guests
            .iter()
            .map(|g| {
                let m = &g.memory;
                (m.target.0 + m.inaccuracy.0) as i64 - m.actual.0 as i64
            })
            .sum();
        self.free.0 as i64 - could_take
    }

    fn guest(&mut self, domid: DomId) -> Result<&mut Guest> {
        let i = *self.index.get(&domid).ok_or(Error::UnknownDomain(domid))?;
        Ok(&mut self.guests[i])
    }
}

impl HostIo for SimHost {
    fn host_state(&mut self) -> Result<HostState> {
        Ok(HostState {
            free: self.free,
            domains: self.guests.iter().map(|g| g.memory).collect(),
        })
    }

    fn set_target(&mut self, domid: DomId, target: Kib) -> Result<()> {
        let g = self.guest(domid)?;
        if target > g.memory.maxmem {
            return Err(Error::Host(format!(
                "domain {domid}: target {target} set above maxmem {}",
                g.memory.maxmem
            )));
        }
        g.memory.target = target;
        Ok(())
    }

    fn set_maxmem(&mut self, domid: DomId, maxmem: Kib) -> Result<()> {
        let g = self.guest(domid)?;
        if maxmem < g.memory.target {
            return Err(Error::Host(format!(
                "domain {domid}: maxmem {maxmem} set below target {}",
                g.memory.target
            )));
        }
        g.memory.maxmem = maxmem;
        Ok(())
    }

    fn set_uncooperative(&mut self, domid: DomId, uncooperative: bool) -> Result<()> {
        self.guest(domid)?;
        if uncooperative {
            self.uncooperative.insert(domid);
        } else {
            self.uncooperative.remove(&domid);
        }
        Ok(())
    }

    fn now(&self) -> Duration {
        self.now
    }

    fn wait(&mut self, interval: Duration) -> Result<()> {
        self.now += interval;
        self.steps += 1;
        if self.step_limit.is_some_and(|l| self.steps > l) {
            return Err(Error::Host(format!(
                "no end after {} steps",
                self.steps - 1
            )));
        }
        let now = self.now;
        for g in &mut self.guests {
            let delta = g.delta(now);
            if delta > self.free.0 as i64 {
                return Err(Error::Host(format!(
                    "domain {}: allocated {delta} KiB with only {} free",
                    g.memory.domid, self.free
                )));
            }
            // Bounded above by free memory (just checked) and below by the guest's own
            // memory (a driver never passes its target).
            self.free = Kib((self.free.0 as i64 - delta) as u64);
            g.memory.actual = Kib((g.memory.actual.0 as i64 + delta) as u64);
            g.last_update = now;
        }
        Ok(())
    }
}
