//! The loop that applies the squeezer's decisions to a host, and reservations.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use xen_types::DomId;

use crate::error::{Error, GivenUp, Result};
use crate::squeezer::{Decision, Fistpoint, Squeezer};
use crate::units::{HostState, Kib};

/// The host side: domains' memory state in, targets and maxmem out, and a clock.
///
/// [`XenHost`](crate::XenHost) implements it over `xenctrl` and xenstore (real or simulated
/// host alike): `host_state` reads `physinfo`, each domain's `tot_pages`/`max_pages` and its
/// `memory/*` xenstore keys; `set_target` writes `memory/target`; `set_maxmem` is
/// `XEN_DOMCTL_max_mem`; `set_uncooperative` writes `memory/uncooperative`.
pub trait HostIo {
    /// A snapshot of free memory (all of it: reservations are subtracted by [`Squeezed`]) and
    /// every domain.
    fn host_state(&mut self) -> Result<HostState>;
    /// Set a domain's balloon target.
    fn set_target(&mut self, domid: DomId, target: Kib) -> Result<()>;
    /// Set a domain's maximum memory.
    fn set_maxmem(&mut self, domid: DomId, maxmem: Kib) -> Result<()>;
    /// Mark (or clear) a domain as uncooperative.
    fn set_uncooperative(&mut self, domid: DomId, uncooperative: bool) -> Result<()>;
    /// The time now, from any fixed origin.
    fn now(&self) -> Duration;
    /// Let `interval` pass (a simulated host advances its clock and its guests).
    fn wait(&mut self, interval: Duration) -> Result<()>;
    /// Domains the last [`HostIo::host_state`] left out, each with the reason (say, keys
    /// that do not parse). None by default.
    fn left_out(&self) -> Vec<GivenUp> {
        Vec::new()
    }
}

/// What one [`Squeezed::balance_round`] did, for a log.
#[derive(Debug, Default)]
pub struct Report {
    /// Every domain given up on, with the reason: drivers left out as inactive (also when
    /// the host was balanced without them), uncooperative ones, and domains whose state
    /// could not be read.
    pub given_up: Vec<GivenUp>,
    /// Why the round failed otherwise (the host refused an operation, bad limits).
    pub error: Option<Error>,
}

/// Tunables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Free memory the host should keep (squeezed's `target_host_free_mem_kib`).
    pub target_host_free: Kib,
    /// How far above `target_host_free` free memory may stay and still count as balanced.
    pub free_memory_tolerance: Kib,
    /// How long to wait between decisions.
    pub poll_interval: Duration,
    /// Fault injection (tests only show what each safeguard prevents).
    pub fistpoints: Vec<Fistpoint>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            target_host_free: Kib(0),
            free_memory_tolerance: Kib(512),
            poll_interval: Duration::from_millis(250),
            fistpoints: Vec::new(),
        }
    }
}

/// A reservation: memory held free for a domain that is being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReservationId(pub u64);

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// squeezed over one host: frees and rebalances memory, and holds reservations.
#[derive(Debug)]
pub struct Squeezed<Io> {
    io: Io,
    config: Config,
    reservations: BTreeMap<ReservationId, Kib>,
    next_reservation: u64,
    /// When each domain last made progress, kept across calls so that a domain stuck
    /// through many short calls (a daemon's rounds) is still marked uncooperative.
    squeezer: Squeezer,
    /// Balloonable domains the last successful call left out (inactive), with the reason.
    left_out: Vec<GivenUp>,
}

impl<Io: HostIo> Squeezed<Io> {
    /// squeezed over `io`.
    pub fn new(io: Io, config: Config) -> Self {
        Squeezed {
            io,
            config,
            reservations: BTreeMap::new(),
            next_reservation: 1,
            squeezer: Squeezer::new(),
            left_out: Vec::new(),
        }
    }

    /// The host.
    pub fn io(&self) -> &Io {
        &self.io
    }

    /// The host, mutably (tests use it to change the world between operations).
    pub fn io_mut(&mut self) -> &mut Io {
        &mut self.io
    }

    /// The tunables.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Memory held by reservations.
    pub fn reserved(&self) -> Kib {
        self.reservations.values().copied().sum()
    }

    /// A validated snapshot with reserved memory taken out of the free memory.
    ///
    /// # Errors
    /// [`Error::InvalidRange`] for a domain with dynamic-min above dynamic-max; the host's
    /// errors.
    pub fn host_state(&mut self) -> Result<HostState> {
        let mut host = self.io.host_state()?;
        for d in &host.domains {
            d.validate()?;
        }
        host.free = host.free.saturating_sub(self.reserved());
        Ok(host)
    }

    /// Sets a domain's target and maxmem to `kib`, in the order that never leaves the target
    /// above maxmem.
    fn set_limit(&mut self, domid: DomId, current_maxmem: Kib, kib: Kib) -> Result<()> {
        if kib > current_maxmem {
            self.io.set_maxmem(domid, kib)?;
            self.io.set_target(domid, kib)
        } else {
            self.io.set_target(domid, kib)?;
            self.io.set_maxmem(domid, kib)
        }
    }

    /// Moves memory until `success(free)` holds with every active domain at its target,
    /// aiming for `required` free.
    ///
    /// Every poll: one [`Squeezer::one_iteration`]; each domain's maxmem (and target with
    /// it) is set to its new target, or for a domain just declared inactive to
    /// `min(target, actual)` clipped to its dynamic range, so an inactive domain may free
    /// memory while nobody watches but never take more.
    ///
    /// # Errors
    /// [`Error::CannotFree`] when even every domain at dynamic-min is not enough;
    /// [`Error::DomainsRefused`] naming every balloonable domain given up on, with a reason;
    /// [`Error::InvalidRange`] and the host's errors.
    pub fn change_host_free_memory(
        &mut self,
        required: Kib,
        success: impl Fn(Kib) -> bool,
    ) -> Result<()> {
        let host = self.host_state()?;
        let all_reached = host
            .domains
            .iter()
            .filter(|d| d.can_balloon)
            .all(|d| d.has_hit(d.target));
        if required != self.config.target_host_free && required <= host.free && all_reached {
            return Ok(());
        }
        // Every call gives each domain a fresh INACTIVE_AFTER; the uncooperative clock runs on.
        self.left_out.clear();
        let mut squeezer = std::mem::take(&mut self.squeezer);
        squeezer.begin_call(self.io.now());
        let r = self.squeeze(&mut squeezer, required, success);
        self.squeezer = squeezer;
        r
    }

    /// [`Squeezed::change_host_free_memory`]'s loop, with the call's squeezer.
    fn squeeze(
        &mut self,
        squeezer: &mut Squeezer,
        required: Kib,
        success: impl Fn(Kib) -> bool,
    ) -> Result<()> {
        loop {
            let now = self.io.now();
            let host = self.host_state()?;
            let it =
                squeezer.one_iteration(&host, required, &success, now, &self.config.fistpoints);
            for &domid in &it.declared_uncooperative {
                self.io.set_uncooperative(domid, true)?;
            }
            for &domid in &it.declared_cooperative {
                self.io.set_uncooperative(domid, false)?;
            }
            let actions = match &it.decision {
                Decision::AdjustTargets(actions) => actions.as_slice(),
                _ => &[],
            };
            // Actions come in host order (a subsequence of it), and declared_inactive sorted.
            let mut pending = actions.iter().peekable();
            for d in &host.domains {
                let action = pending.next_if(|a| a.domid == d.domid);
                let limit = if it.declared_inactive.binary_search(&d.domid).is_ok() {
                    d.target.min(d.actual).max(d.dynamic_min).min(d.dynamic_max)
                } else if let Some(a) = action {
                    a.target
                } else {
                    d.target
                };
                // Already there (Xen keeps maxmem in whole pages): nothing to write.
                let holds = d.target == limit && d.maxmem >= limit && d.maxmem.0 - limit.0 < 4;
                if !holds {
                    self.set_limit(d.domid, d.maxmem, limit)?;
                }
            }
            match it.decision {
                Decision::Success => {
                    // Balanced without the domains left out: say which, and why.
                    self.left_out = host
                        .domains
                        .iter()
                        .filter(|d| d.can_balloon && !squeezer.is_active(d.domid))
                        .map(|d| GivenUp {
                            domid: d.domid,
                            reason: squeezer.explain(d, now),
                        })
                        .collect();
                    return Ok(());
                }
                Decision::Failed(domids) if domids.is_empty() || domids == [DomId::DOM0] => {
                    return Err(Error::CannotFree {
                        required,
                        free: host.free,
                        max_possible: it.max_possible_free,
                    });
                }
                Decision::Failed(domids) => {
                    let given_up = host
                        .domains
                        .iter()
                        .filter(|d| domids.contains(&d.domid))
                        .map(|d| GivenUp {
                            domid: d.domid,
                            reason: squeezer.explain(d, now),
                        })
                        .collect();
                    return Err(Error::DomainsRefused { required, given_up });
                }
                Decision::AdjustTargets(_) => {
                    // Targets were set with maxmem above; wait for the drivers.
                    self.io.wait(self.config.poll_interval)?;
                }
            }
        }
    }

    /// Frees `amount` on top of the host's free-memory target.
    ///
    /// # Errors
    /// As [`Squeezed::change_host_free_memory`].
    pub fn free_memory(&mut self, amount: Kib) -> Result<()> {
        let want = amount + self.config.target_host_free;
        self.change_host_free_memory(want, |free| free >= want)
    }

    /// Shares free memory above the host's target out to the domains, until less than
    /// `free_memory_tolerance` above the target is left or every active domain is at its
    /// dynamic-max (not an error: there is nobody left to give memory to).
    ///
    /// # Errors
    /// [`Error::DomainsRefused`], [`Error::InvalidRange`] and the host's errors.
    pub fn balance_memory(&mut self) -> Result<()> {
        let target = self.config.target_host_free.0 as i128;
        let tolerance = self.config.free_memory_tolerance.0 as i128;
        match self.change_host_free_memory(self.config.target_host_free, |free| {
            (free.0 as i128) - target < tolerance
        }) {
            Err(Error::CannotFree { .. }) => Ok(()),
            r => r,
        }
    }

    /// One round of a balancing daemon: [`Squeezed::balance_memory`], with every domain
    /// given up on and the reason, whatever the outcome.
    pub fn balance_round(&mut self) -> Report {
        let mut report = Report::default();
        match self.balance_memory() {
            Ok(()) => report.given_up = std::mem::take(&mut self.left_out),
            Err(Error::DomainsRefused { given_up, .. }) => report.given_up = given_up,
            Err(e) => report.error = Some(e),
        }
        report.given_up.extend(self.io.left_out());
        report
    }

    /// Frees `amount` and holds it for a domain being built.
    ///
    /// # Errors
    /// [`Error::ReservationTooLarge`] when the host does not have that much memory at all
    /// (free, plus every domain's, less other reservations);
    /// otherwise as [`Squeezed::free_memory`] (nothing is reserved then).
    pub fn reserve_memory(&mut self, amount: Kib) -> Result<ReservationId> {
        let host = self.io.host_state()?;
        let host_total = (host.free + host.domains.iter().map(|d| d.actual).sum())
            .saturating_sub(self.reserved());
        if amount > host_total {
            return Err(Error::ReservationTooLarge {
                requested: amount,
                host_total,
            });
        }
        self.free_memory(amount)?;
        let id = ReservationId(self.next_reservation);
        self.next_reservation += 1;
        self.reservations.insert(id, amount);
        Ok(id)
    }

    /// Hands a reservation's memory to `domid`, whose own pages count it from now on.
    ///
    /// # Errors
    /// [`Error::UnknownReservation`], [`Error::UnknownDomain`]; the reservation stays when
    /// either fails.
    pub fn transfer_reservation_to_domain(
        &mut self,
        id: ReservationId,
        domid: DomId,
    ) -> Result<()> {
        if !self.reservations.contains_key(&id) {
            return Err(Error::UnknownReservation(id));
        }
        let host = self.io.host_state()?;
        if !host.domains.iter().any(|d| d.domid == domid) {
            return Err(Error::UnknownDomain(domid));
        }
        self.reservations.remove(&id);
        Ok(())
    }

    /// Gives a reservation's memory back to the host.
    ///
    /// # Errors
    /// [`Error::UnknownReservation`].
    pub fn delete_reservation(&mut self, id: ReservationId) -> Result<()> {
        self.reservations
            .remove(&id)
            .map(drop)
            .ok_or(Error::UnknownReservation(id))
    }
}
