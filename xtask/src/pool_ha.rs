//! HA in `cargo xtask pool`: `pool.enable_ha` with a short timeout (the lease TTL) and one
//! protected VM started on each host. After a host's fault (kill -9, SIGSTOP past its
//! lease, cut from etcd) its protected VMs must run again on another host within
//! [`bound`] (the TTL plus a restart allowance), never on two hosts at any observed moment
//! (the observer lists every running host's domains, the faulted one included when it
//! still runs); after every step each protected VM runs exactly once, where its record
//! says.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::pool::{Fault, HaHooks, Harness, Observation};

/// `pool.ha_configuration:timeout`, seconds: HA's lease TTL in the harness.
pub const HA_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a restart once the lease expired (claim, record reset, `VM.start`).
pub const RESTART_ALLOWANCE: Duration = Duration::from_secs(3);

/// The failover bound: a protected VM runs again this long after its host's fault.
pub fn bound() -> Duration {
    HA_TIMEOUT + RESTART_ALLOWANCE
}

/// The bound when etcd's leader died with the host: the new leader renews every lease to
/// its full TTL, so the host's lease may last one more TTL (which also covers the election,
/// 1 s of timeout in the harness, and the renewal etcd adds).
pub fn bound_leader_lost() -> Duration {
    bound() + HA_TIMEOUT
}

/// The HA checks.
#[derive(Default)]
pub struct PoolHa {
    /// Protected VMs: reference and UUID.
    vms: Vec<(String, String)>,
    /// Where each protected VM (UUID) ran at the last observation (host index).
    last: BTreeMap<String, usize>,
    /// Seconds from each host fault to its protected VMs running elsewhere, and whether
    /// etcd's leader died with the host.
    pub failovers: Vec<(f64, bool)>,
}

/// Each running host's domains (VM UUIDs), from `/domains`.
fn domains(h: &Harness) -> BTreeMap<usize, Vec<String>> {
    h.running()
        .into_iter()
        .filter_map(|i| Some((i, h.domains_of(i)?)))
        .collect()
}

/// Where each of `vms` runs; an error names a VM seen on two hosts.
fn placement(
    doms: &BTreeMap<usize, Vec<String>>,
    vms: &[(String, String)],
) -> Result<BTreeMap<String, usize>, String> {
    let mut at = BTreeMap::new();
    for (i, ds) in doms {
        for (_, u) in vms {
            if ds.contains(u) {
                if let Some(j) = at.insert(u.clone(), *i) {
                    return Err(format!("protected VM {u} runs on hosts {j} and {i}"));
                }
            }
        }
    }
    Ok(at)
}

impl HaHooks for PoolHa {
    fn setup(&mut self, h: &mut Harness) -> Result<(), String> {
        let config = json!({"timeout": HA_TIMEOUT.as_secs().to_string()});
        h.call_any("pool.enable_ha", json!([[], config]))?;
        let mb = (64u64 << 20).to_string();
        for k in 0..h.hosts.len() {
            let rec = json!({
                "name_label": format!("ha{k}"),
                "memory_static_max": mb, "memory_dynamic_max": mb,
                "memory_dynamic_min": mb, "memory_static_min": mb,
                "VCPUs_max": "1", "VCPUs_at_startup": "1",
            });
            let vm = h.call_any("VM.create", json!([rec]))?;
            let vm = vm.as_str().unwrap_or_default().to_owned();
            h.call_any("VM.set_ha_restart_priority", json!([vm, "restart"]))?;
            let host = h.hosts[k].host_ref.clone();
            h.call_any("VM.start_on", json!([vm, host, false, false]))?;
            let u = h.call_any("VM.get_uuid", json!([vm]))?;
            self.vms
                .push((vm, u.as_str().unwrap_or_default().to_owned()));
        }
        // Every host's engine runs and has protected what it runs (its resync period).
        // Then each runs once (one whose host was fenced meanwhile, on a loaded machine,
        // runs again within the bound).
        std::thread::sleep(Duration::from_millis(2500));
        let deadline = Instant::now() + bound();
        loop {
            let doms = domains(h);
            self.last = placement(&doms, &self.vms)?;
            if self.last.len() == self.vms.len() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "protected VMs {:?} not all running: {doms:?}",
                    self.vms
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!(
            "pool: HA enabled (timeout {} s), {} protected VMs; failover bound {} s (lease TTL + {} s restart allowance), {} s when etcd's leader dies too",
            HA_TIMEOUT.as_secs(),
            self.vms.len(),
            bound().as_secs(),
            RESTART_ALLOWANCE.as_secs(),
            bound_leader_lost().as_secs()
        );
        Ok(())
    }

    fn after_fault(&mut self, h: &mut Harness, f: Fault) -> Result<(), String> {
        let t0 = h.fault_at;
        if let Fault::KillEtcd(_) = f {
            return Ok(());
        }
        // Every host faulted now (faults of one schedule come together).
        let faulted: Vec<usize> = (0..h.hosts.len())
            .filter(|&i| !h.running().contains(&i) || h.hosts[i].partitioned)
            .collect();
        let lost: Vec<String> = self
            .last
            .iter()
            .filter(|(_, i)| faulted.contains(i))
            .map(|(u, _)| u.clone())
            .collect();
        if lost.is_empty() {
            return Ok(());
        }
        let bound = if h.etcd_leader_killed {
            bound_leader_lost()
        } else {
            bound()
        };
        let deadline = t0 + bound + Duration::from_secs(10);
        loop {
            let at = placement(&domains(h), &self.vms)?;
            let moved = lost
                .iter()
                .all(|u| at.get(u).is_some_and(|i| !faulted.contains(i)));
            if moved {
                let took = t0.elapsed();
                self.last = at;
                self.failovers
                    .push((took.as_secs_f64(), h.etcd_leader_killed));
                if took > bound {
                    return Err(format!(
                        "{f:?}: protected VMs ran again after {:.1} s, over the {} s bound{}",
                        took.as_secs_f64(),
                        bound.as_secs(),
                        if h.etcd_leader_killed {
                            " (etcd's leader died too)"
                        } else {
                            ""
                        }
                    ));
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{f:?}: protected VMs {lost:?} not running elsewhere after {:.1} s: {at:?}",
                    t0.elapsed().as_secs_f64()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn check(&mut self, h: &mut Harness, _o: &Observation) -> Vec<String> {
        let mut bad = Vec::new();
        // Every protected VM runs again, once, within the bound of the last healing.
        let mut at = BTreeMap::new();
        let ok = h.until(
            bound().as_secs() + 10,
            "every protected VM running",
            |h| match placement(&domains(h), &self.vms) {
                Ok(a) => {
                    let all = a.len() == self.vms.len();
                    at = a;
                    all
                }
                Err(e) => {
                    bad.push(e);
                    true
                }
            },
        );
        if let Err(e) = ok {
            bad.push(format!("{e}: {at:?}"));
        }
        for (vm, u) in &self.vms {
            let Some(&i) = at.get(u) else { continue };
            let want = h.hosts[i].host_ref.clone();
            let ok = h.until(10, "the record follows the domain", |h| {
                h.call_any("VM.get_resident_on", json!([vm]))
                    .is_ok_and(|r| r.as_str() == Some(want.as_str()))
            });
            if ok.is_err() {
                bad.push(format!(
                    "protected VM {u} runs on host {i} but its record says otherwise"
                ));
            }
        }
        self.last = at;
        bad
    }

    fn failovers(&self) -> Vec<(f64, bool)> {
        self.failovers.clone()
    }
}
