//! High availability on etcd: hosts hold leases, running HA VMs are owned through keys bound
//! to their host's lease, and when a host's lease ends the others restart its VMs, while the
//! Xen watchdog makes sure the lost host's domains died first (issue 18, item 3).
//!
//! # Keys (under `<prefix>/ha/`, `<prefix>` being the pool's, e.g. `/xapi/<pool>`)
//!
//! - `host/<host>`: the host's liveness, bound to its lease: its lease id, its watchdog id and
//!   its *fence deadline* (wall-clock ms), the latest moment its domains may still run when it
//!   stops renewing (see below);
//! - `vm/<vm>`: a protected VM that should be running ([`HaVm`]: priority, order, memory, last
//!   host), not bound to any lease;
//! - `owner/<vm>` = host: bound to the owner's lease. It vanishes with the lease.
//!
//! A VM whose `vm/` key exists and whose `owner/` key does not is an orphan. Every live host
//! scans for orphans every [`HaConfig::scan`] and takes them in ([`Priority`], `order`) order,
//! only those that fit its free memory ([`HaHost::free_memory`]), in one etcd transaction
//! each (the owner key must still be absent and the `vm/` key unchanged), so exactly one host
//! wins each VM; the winner starts it ([`HaHost::restart`]).
//!
//! # Fencing
//!
//! dom0's Xen watchdog is armed while HA runs and kicked after each renewal: the renewal
//! thread sends a keep-alive at `t`, the lease then lasts until at least `t + ttl` on the
//! etcd side, so the host publishes the deadline `D = t + ttl - margin` and then kicks the
//! watchdog to fire no later than `D`. A host that cannot renew (etcd unreachable, xapi hung,
//! stopped or dead) stops kicking, and its watchdog reboots it, destroying every domain,
//! before its lease can expire. A host that learns its lease is gone (revoked) stops kicking
//! too. Survivors claim an orphan only once the last published deadline of its previous host
//! has passed (a lease revoked early is thus waited for), or, when that host's deadline was
//! never seen, one TTL after first seeing the orphan. The argument assumes hosts' clocks
//! agree to within `margin` (NTP), as xhad assumes bounded timer drift.
//!
//! # Wiring (for the pool side)
//!
//! xapi does this in `api::ha_host`: each host runs the engine while `pool.ha_enabled`
//! (timeout from `pool.ha_configuration:timeout`), protects a VM before its domain starts
//! and releases it when it stops on request; restarts go through `VM.start`.
//!
//! ```text
//! let ha = Ha::start(HaConfig::new("/xapi/<pool>", host_uuid), &endpoints, Arc::new(my_host))?;
//! ha.protect(&HaVm { vm: vm_uuid, priority: Priority::Restart, order: 0, memory })?; // VM.start here
//! ha.unprotect(&vm_uuid)?;  // clean VM shutdown, or ha_restart_priority set to ""
//! Ha::disable_pool(&endpoints, "/xapi/<pool>")?; // pool.disable_ha, then on each host:
//! ha.stop()?;               // disarm the watchdog, revoke the lease
//! ```
//!
//! [`plan::max_host_failures_to_tolerate`] is `pool.ha_compute_max_host_failures_to_tolerate`.

#[cfg(feature = "etcd")]
mod engine;
pub mod plan;

#[cfg(feature = "etcd")]
pub use engine::{Ha, HaState};

use std::time::Duration;

/// `VM.ha_restart_priority`: what HA does for a VM when its host fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// `"restart"`: restarted, and counted in the failures the pool must tolerate.
    Restart,
    /// `"best-effort"`: restarted after every `restart` VM, if memory is left.
    BestEffort,
}

impl Priority {
    /// The priority named by `VM.ha_restart_priority`; `""` (unprotected) is `None`, as is an
    /// unknown name.
    pub fn parse(s: &str) -> Option<Priority> {
        match s {
            "restart" => Some(Priority::Restart),
            "best-effort" => Some(Priority::BestEffort),
            _ => None,
        }
    }

    /// The name `VM.ha_restart_priority` holds.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Restart => "restart",
            Priority::BestEffort => "best-effort",
        }
    }
}

/// A protected VM, as HA keeps it in etcd.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HaVm {
    /// The VM's identity (its uuid).
    pub vm: String,
    /// Its restart priority.
    #[serde(with = "priority_serde")]
    pub priority: Priority,
    /// `VM.order`: lower first within a priority.
    pub order: i64,
    /// Memory it needs to start (bytes).
    pub memory: u64,
}

mod priority_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &super::Priority, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<super::Priority, D::Error> {
        let s = String::deserialize(d)?;
        super::Priority::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("bad ha_restart_priority {s:?}")))
    }
}

/// What HA asks of the host it runs on.
pub trait HaHost: Send + Sync + 'static {
    /// The hypervisor: its dom0 watchdog fences the host.
    fn xen(&self) -> &dyn xenctrl::XenControl;

    /// Memory free for starting VMs here now (bytes).
    fn free_memory(&self) -> u64;

    /// Starts `vm` on this host (it has just been taken over from a failed host). An error
    /// gives the VM back to the pool for another host to try.
    fn restart(&self, vm: &HaVm) -> Result<(), String>;
}

/// HA's timing and identity.
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// The pool's etcd prefix (no trailing `/`), e.g. `/xapi/<pool>`.
    pub prefix: String,
    /// This host's identity (its uuid or ref).
    pub host: String,
    /// The lease's time to live.
    pub ttl: Duration,
    /// How long before the lease can expire the watchdog fires (covers clock skew and the
    /// watchdog's timer latency). The watchdog counts whole seconds: `ttl - margin` must be at
    /// least 2 s.
    pub margin: Duration,
    /// How often the lease is renewed (and the watchdog kicked).
    pub renew: Duration,
    /// How often the host looks for orphaned VMs.
    pub scan: Duration,
}

impl HaConfig {
    /// A 10 s lease renewed every 2 s, the watchdog 2 s short of it, orphans looked for every
    /// 200 ms.
    pub fn new(prefix: impl Into<String>, host: impl Into<String>) -> HaConfig {
        HaConfig {
            prefix: prefix.into(),
            host: host.into(),
            ttl: Duration::from_secs(10),
            margin: Duration::from_secs(2),
            renew: Duration::from_secs(2),
            scan: Duration::from_millis(200),
        }
    }

    /// Checks the timing: a renewal must fit well inside the fence window.
    pub fn validate(&self) -> Result<(), String> {
        if self.prefix.is_empty() || self.prefix.ends_with('/') {
            return Err(format!("bad HA prefix {:?}", self.prefix));
        }
        if self.host.is_empty() || self.host.contains('/') {
            return Err(format!("bad HA host name {:?}", self.host));
        }
        let window = self.ttl.saturating_sub(self.margin);
        if window < Duration::from_secs(2) {
            return Err(format!(
                "HA ttl {:?} minus margin {:?} is under the watchdog's 2 s",
                self.ttl, self.margin
            ));
        }
        if self.renew * 2 > window {
            return Err(format!(
                "HA renewal every {:?} does not fit twice in {:?}",
                self.renew, window
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_order_and_parse() {
        assert!(Priority::Restart < Priority::BestEffort);
        for p in [Priority::Restart, Priority::BestEffort] {
            assert_eq!(Priority::parse(p.as_str()), Some(p));
        }
        assert_eq!(Priority::parse(""), None);
        assert_eq!(Priority::parse("always"), None);
        let vm = HaVm {
            vm: "v".into(),
            priority: Priority::BestEffort,
            order: 3,
            memory: 1,
        };
        let j = serde_json::to_string(&vm).unwrap();
        assert!(j.contains("\"best-effort\""), "{j}");
        assert_eq!(serde_json::from_str::<HaVm>(&j).unwrap(), vm);
        assert!(serde_json::from_str::<HaVm>(&j.replace("best-effort", "x")).is_err());
    }

    #[test]
    fn timing_is_checked() {
        let ok = HaConfig::new("/xapi/p", "h");
        assert_eq!(ok.validate(), Ok(()));
        let mut c = ok.clone();
        c.margin = Duration::from_secs(9);
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.renew = Duration::from_secs(5);
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.host = "a/b".into();
        assert!(c.validate().is_err());
        let mut c = ok;
        c.prefix = "/xapi/p/".into();
        assert!(c.validate().is_err());
    }
}
