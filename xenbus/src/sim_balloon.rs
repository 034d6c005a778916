//! The guest side of ballooning on the simulated host (feature `test-utils`).
//!
//! Linux's balloon driver announces itself by writing `control/feature-balloon` = `1` in its
//! domain's xenstore home, watches `memory/target` and moves its pages toward it. On
//! `xen-sim` the driver itself is the host's model ([`xen_sim::balloon`]); [`SimBalloons`]
//! is the part that talks to xenstore, through each guest's own connection: it writes the
//! feature flag when a driver loads and, at every [`SimBalloons::tick`], reads each guest's
//! `memory/target` (what its watch would deliver), hands it to the driver, advances the
//! host's clock and runs the drivers. On a manual clock ticks are the only way time passes,
//! so tests are deterministic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use xen_sim::balloon::BalloonBehaviour;
use xen_types::{DomId, Pages};

use crate::{paths, Error, Store};

/// The balloon drivers of a simulated host's guests, and their xenstore side.
pub struct SimBalloons {
    host: xen_sim::Host,
    guests: Mutex<BTreeMap<DomId, Arc<dyn Store>>>,
}

impl std::fmt::Debug for SimBalloons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimBalloons")
            .field("guests", &self.guests.lock().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn sim_err(domid: DomId, what: &str, e: xen_types::Errno) -> Error {
    Error::Driver(format!("domain {domid}: {what}: {e}"))
}

impl SimBalloons {
    /// The balloon side of `host`'s guests (the host's clock must be manual for
    /// [`SimBalloons::tick`] to move it).
    pub fn new(host: xen_sim::Host) -> SimBalloons {
        SimBalloons {
            host,
            guests: Mutex::new(BTreeMap::new()),
        }
    }

    /// The simulated host.
    pub fn host(&self) -> &xen_sim::Host {
        &self.host
    }

    /// The guest in `domid` loads its balloon driver (behaving as `behaviour`, stopping
    /// `stop_short` short of its targets) and announces it, through `store` (the guest's own
    /// connection), with `control/feature-balloon` = `1`.
    ///
    /// # Errors
    /// The write's error ([`Error::Store`] when the guest may not write there), or
    /// [`Error::Driver`] for an unknown domain.
    pub fn load(
        &self,
        domid: DomId,
        store: Arc<dyn Store>,
        behaviour: BalloonBehaviour,
        stop_short: Pages,
    ) -> Result<(), Error> {
        self.host
            .balloon_load(domid, behaviour, stop_short)
            .map_err(|e| sim_err(domid, "balloon driver", e))?;
        let home = paths::domain_path(domid);
        store.write(&format!("{home}/control/feature-balloon"), "1")?;
        self.guests.lock().insert(domid, store);
        Ok(())
    }

    /// Forgets a guest (its domain is gone).
    pub fn remove(&self, domid: DomId) {
        self.guests.lock().remove(&domid);
    }

    /// The guests whose drivers are followed.
    pub fn guests(&self) -> Vec<DomId> {
        self.guests.lock().keys().copied().collect()
    }

    /// Every guest reads its `memory/target` and hands it to its driver (a missing or
    /// unparsable target leaves the driver's as it was, as Linux ignores it). Guests whose
    /// domain is gone are forgotten (their connections closed).
    ///
    /// # Errors
    /// A xenstore read that fails.
    pub fn read_targets(&self) -> Result<(), Error> {
        let guests: Vec<(DomId, Arc<dyn Store>)> = {
            let mut g = self.guests.lock();
            g.retain(|d, _| self.host.balloon_status(*d) != Err(xen_types::Errno::ESRCH));
            g.iter().map(|(d, s)| (*d, s.clone())).collect()
        };
        for (domid, store) in guests {
            let path = format!("{}/memory/target", paths::domain_path(domid));
            let Some(v) = store.read(&path)? else {
                continue;
            };
            if let Ok(kib) = v.trim().parse::<u64>() {
                // A domain that went away keeps no driver: nothing to tell.
                let _ = self.host.balloon_set_target(domid, kib);
            }
        }
        Ok(())
    }

    /// Lets `by` pass: the guests read their targets, the host's clock advances (a manual
    /// one at once; on a system clock this sleeps), and every driver runs for that time.
    ///
    /// # Errors
    /// As [`SimBalloons::read_targets`].
    pub fn tick(&self, by: Duration) -> Result<(), Error> {
        self.read_targets()?;
        if !self.host.clock().advance(by) {
            std::thread::sleep(by);
        }
        self.host.balloon_step();
        Ok(())
    }
}
