//! A simulated host for squeezed's tests: `xen-sim` (through `xenctrl`), the project's
//! xenstored in process, and the guests' balloon drivers (`xenbus::testing::SimBalloons`).
//!
//! The pacer and a checking wrapper around [`XenHost`] enforce squeezed's invariants at every
//! step, as squeezed's own test harness does: no guest asks Xen for memory the host does not
//! have free (Xen refuses it and the driver's refusal is counted), no target is set above
//! maxmem, no maxmem below target.

#![allow(dead_code, reason = "each test binary uses part of the harness")]

use std::sync::Arc;
use std::time::Duration;

use squeezed::{DomId, DomainMemory, Error, HostIo, HostState, Kib, Pacer, Pages, Result, XenHost};
use xen_sim::balloon::BalloonBehaviour;
use xen_sim::{Clock, Host, HostConfig};
use xenbus::testing::{SimBalloons, TestXenstore};
use xenbus::Store;
use xenctrl::{DomainConfig, Xen};

/// A guest: squeezed's view of it to start with, and how its balloon driver behaves.
#[derive(Debug, Clone, Copy)]
pub struct Guest {
    /// Its memory (KiB values; `actual` and `maxmem` whole pages).
    pub memory: DomainMemory,
    /// Its driver.
    pub behaviour: BalloonBehaviour,
}

impl Guest {
    pub fn new(memory: DomainMemory, behaviour: BalloonBehaviour) -> Self {
        Guest { memory, behaviour }
    }
}

/// Time on the simulated host: each wait is one tick of the guests' drivers, then a check
/// that no driver was refused memory for want of free memory.
pub struct SimPacer {
    pub balloons: Arc<SimBalloons>,
    pub steps: u64,
    pub step_limit: u64,
}

impl Pacer for SimPacer {
    fn now(&self) -> Duration {
        self.balloons.host().clock().now()
    }

    fn wait(&mut self, interval: Duration) -> Result<()> {
        self.steps += 1;
        if self.steps > self.step_limit {
            return Err(Error::Host(format!(
                "no end after {} steps",
                self.step_limit
            )));
        }
        self.balloons
            .tick(interval)
            .map_err(|e| Error::Host(e.to_string()))?;
        let host = self.balloons.host();
        for info in host.domain_info_list(DomId(0), usize::MAX) {
            if let Ok(s) = host.balloon_status(DomId(info.domain)) {
                if s.refused_host_free > 0 {
                    return Err(Error::Host(format!(
                        "domain {}: allocated {} KiB more than the host had free",
                        info.domain,
                        Pages(s.refused_host_free).kib()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// [`XenHost`] that refuses a target above maxmem and a maxmem below target.
pub struct Checked {
    pub inner: XenHost<SimPacer>,
}

impl Checked {
    fn maxmem(&self, domid: DomId) -> Result<Kib> {
        let info = self
            .inner
            .xen()
            .domain_info(domid)
            .map_err(|_| Error::UnknownDomain(domid))?;
        Ok(info.max_pages.into())
    }

    fn target(&self, domid: DomId) -> Kib {
        let path = format!("/local/domain/{}/memory/target", domid.0);
        let v = self.inner.store().read(&path).ok().flatten();
        Kib(v.and_then(|v| v.parse().ok()).unwrap_or(0))
    }
}

impl HostIo for Checked {
    fn host_state(&mut self) -> Result<HostState> {
        self.inner.host_state()
    }

    fn set_target(&mut self, domid: DomId, target: Kib) -> Result<()> {
        let maxmem = self.maxmem(domid)?;
        if target > maxmem {
            return Err(Error::Host(format!(
                "domain {domid}: target {target} set above maxmem {maxmem}"
            )));
        }
        self.inner.set_target(domid, target)
    }

    fn set_maxmem(&mut self, domid: DomId, maxmem: Kib) -> Result<()> {
        self.maxmem(domid)?;
        let target = self.target(domid);
        if maxmem < target {
            return Err(Error::Host(format!(
                "domain {domid}: maxmem {maxmem} set below target {target}"
            )));
        }
        self.inner.set_maxmem(domid, maxmem)
    }

    fn set_uncooperative(&mut self, domid: DomId, uncooperative: bool) -> Result<()> {
        self.inner.set_uncooperative(domid, uncooperative)
    }

    fn now(&self) -> Duration {
        self.inner.now()
    }

    fn wait(&mut self, interval: Duration) -> Result<()> {
        self.inner.wait(interval)
    }

    fn left_out(&self) -> Vec<squeezed::GivenUp> {
        self.inner.left_out()
    }
}

/// A simulated host with these guests and `free` KiB free. A guest with domid 0 is dom0.
pub struct World {
    pub xs: TestXenstore,
    pub host: Host,
    pub xen: Arc<Xen>,
    pub balloons: Arc<SimBalloons>,
    /// The allowance every guest's driver may stop short of its target.
    pub inaccuracy: Kib,
}

fn pages(k: Kib) -> Pages {
    assert_eq!(k.0 % 4, 0, "{k} is not whole pages");
    Pages::from_kib(k.0)
}

impl World {
    /// Builds the host as a toolstack would: domains created with their memory, then the
    /// `memory/*` keys (dom0's, guest-readable), then each guest loads its driver.
    pub fn new(free: Kib, guests: &[Guest], inaccuracy: Kib) -> World {
        let dom0 = guests.iter().find(|g| g.memory.domid == DomId::DOM0);
        let dom0_memory = dom0.map_or(Pages::ZERO, |g| pages(g.memory.actual));
        let total = guests.iter().map(|g| pages(g.memory.actual).0).sum::<u64>() + pages(free).0;
        let host = Host::new(HostConfig {
            clock: Clock::manual(),
            memory: Pages(total),
            dom0_memory,
            ..HostConfig::default()
        });
        let xen = Arc::new(Xen::sim(host.clone()));
        let xs = TestXenstore::start().expect("xenstored");
        let balloons = Arc::new(SimBalloons::new(host.clone()));
        let world = World {
            xs,
            host,
            xen,
            balloons,
            inaccuracy,
        };
        for g in guests {
            world.add(g).unwrap();
        }
        world
    }

    /// Adds a guest as a toolstack builds one (its memory out of the host's free memory;
    /// domid 0 is dom0, which exists already), writes its `memory/*` keys (dom0's,
    /// guest-readable), then the guest loads its driver.
    pub fn add(&self, g: &Guest) -> Result<(), xenctrl::Error> {
        let (xen, xs) = (&self.xen, &self.xs);
        let m = &g.memory;
        let domid = m.domid;
        if domid != DomId::DOM0 {
            let cfg = DomainConfig {
                domid: Some(domid),
                ..DomainConfig::pv(1)
            };
            xen.create_domain(&cfg)?;
            xen.set_max_vcpus(domid, 1)?;
            xen.set_max_mem(domid, pages(m.actual))?;
            xen.increase_reservation(domid, pages(m.actual))?;
            xen.unpause(domid)?;
        }
        xen.set_max_mem(domid, pages(m.maxmem))?;
        let store: Arc<dyn Store> = if domid == DomId::DOM0 {
            xs.dom0().clone()
        } else {
            xs.guest(domid).unwrap()
        };
        let mem = format!("/local/domain/{}/memory", domid.0);
        let d0 = xs.dom0();
        for (k, v) in [
            ("static-max", m.dynamic_max),
            ("dynamic-min", m.dynamic_min),
            ("dynamic-max", m.dynamic_max),
            ("target", m.target),
        ] {
            let key = format!("{mem}/{k}");
            d0.write(&key, &v.0.to_string()).unwrap();
            d0.set_perms(&key, DomId::DOM0, &[domid]).unwrap();
        }
        d0.set_perms(&mem, DomId::DOM0, &[domid]).unwrap();
        self.balloons
            .load(domid, store, g.behaviour, pages(self.inaccuracy))
            .unwrap();
        Ok(())
    }

    /// A xenstore value (dom0's view).
    pub fn read(&self, path: &str) -> Option<String> {
        self.xs.dom0().read(path).unwrap()
    }

    /// squeezed's host I/O on this world, with the invariant checks, failing after
    /// `step_limit` waits.
    pub fn io(&self, step_limit: u64) -> Checked {
        let pacer = SimPacer {
            balloons: self.balloons.clone(),
            steps: 0,
            step_limit,
        };
        let store: Arc<dyn Store> = self.xs.dom0().clone();
        Checked {
            inner: XenHost::new(self.xen.clone(), store, pacer, self.inaccuracy),
        }
    }

    /// Something outside squeezed (a domain being built) takes `kib` of free memory.
    pub fn take_free(&self, domid: DomId, kib: Kib) -> Result<(), xenctrl::Error> {
        let cfg = DomainConfig {
            domid: Some(domid),
            ..DomainConfig::pv(1)
        };
        self.xen.create_domain(&cfg)?;
        self.xen.set_max_mem(domid, pages(kib))?;
        self.xen.increase_reservation(domid, pages(kib))
    }

    /// Free memory (less claims).
    pub fn free(&self) -> Kib {
        let p = self.xen.physinfo().unwrap();
        Kib::from(Pages(p.free_pages.0 - p.outstanding_pages.0))
    }
}

/// Free memory less what every balloon domain could still take by drifting up to
/// `target + inaccuracy`: memory that is free whatever the guests do (may be negative).
pub fn guaranteed_free(state: &HostState) -> i64 {
    let could_take: i64 = state
        .domains
        .iter()
        .map(|m| (m.target.0 + m.inaccuracy.0) as i64 - m.actual.0 as i64)
        .sum();
    state.free.0 as i64 - could_take
}
