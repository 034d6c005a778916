//! HA on a pool's hosts: the engine ([`crate::ha::Ha`]) runs on every host while
//! `pool.ha_enabled` is set (started again after a restart of xapi or a fence), a VM with a
//! restart priority is protected (owned by its host in etcd) before its domain starts here
//! and released when it stops on request, and the restarts HA asks for run through the
//! toolstack's own `VM.start`, so the records follow: the VM is `Running` and `resident_on`
//! the host that restarted it.

use super::*;
use crate::ha::{Ha, HaConfig, HaHost, HaState, HaVm, Priority};
use crate::xenops::PowerState;

/// HA's timeout when `pool.ha_configuration` names none, seconds.
const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// How often each host looks at `pool.ha_enabled` and at its engine.
const SUPERVISE: Duration = Duration::from_millis(200);
/// How often the VMs running here are protected again (one whose protection failed, e.g.
/// while etcd was away, or whose priority was set on another host).
const RESYNC: Duration = Duration::from_secs(2);

/// HA's timing from `pool.ha_configuration:timeout` (seconds, as xapi's HA timeout): the
/// lease lives `timeout`, the watchdog fires a fifth of it (at least 1 s) earlier, the lease
/// is renewed four times within that window.
pub fn ha_config(prefix: &str, host: &str, timeout: Duration) -> Result<HaConfig, String> {
    let mut c = HaConfig::new(prefix, host);
    c.ttl = timeout;
    c.margin = (timeout / 5).max(Duration::from_secs(1));
    c.renew = timeout.saturating_sub(c.margin) / 4;
    c.scan = Duration::from_millis(200);
    c.validate()?;
    Ok(c)
}

/// The host HA runs on: xapi's hypervisor, its free memory, and `VM.start` for restarts.
struct XapiHaHost {
    backend: Arc<Backend>,
    xapi: Weak<Xapi>,
}

impl HaHost for XapiHaHost {
    fn xen(&self) -> &dyn xenctrl::XenControl {
        &**self.backend.xen()
    }

    fn free_memory(&self) -> u64 {
        self.backend.free_memory()
    }

    fn restart(&self, vm: &HaVm) -> Result<(), String> {
        let x = self.xapi.upgrade().ok_or("xapi is stopping")?;
        x.ha_restart(&vm.vm).map_err(|e| e.to_string())
    }
}

impl Xapi {
    /// Starts the thread that runs HA on this host while its pool has HA enabled.
    pub(super) fn spawn_ha_supervisor(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("xapi-ha".into())
            .spawn(move || {
                let mut next_sync = std::time::Instant::now();
                let mut warned = false;
                loop {
                    std::thread::sleep(SUPERVISE);
                    let Some(x) = weak.upgrade() else { return };
                    x.ha_supervise(&mut next_sync, &mut warned);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(%e, "cannot start the HA supervisor");
        }
    }

    /// `pool.ha_enabled` and the HA timeout.
    fn ha_settings(&self) -> (bool, Duration) {
        self.db.read(|v| {
            let Some(p) = v.all("pool").into_iter().next() else {
                return (false, Duration::ZERO);
            };
            let on = v.field(&p, "ha_enabled") == Some(&Value::Bool(true));
            let timeout = v
                .field(&p, "ha_configuration")
                .and_then(Value::as_struct)
                .and_then(|m| m.get(super::ha::TIMEOUT_KEY))
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(DEFAULT_TIMEOUT_SECS);
            (on, Duration::from_secs(timeout))
        })
    }

    /// One look: starts HA when enabled, drops a fenced engine (forgetting the domains
    /// the fence took), stops it when disabled, and protects the VMs running here now and
    /// then.
    fn ha_supervise(self: &Arc<Self>, next_sync: &mut std::time::Instant, warned: &mut bool) {
        let Some(m) = self.pool().cloned() else {
            return;
        };
        let (enabled, timeout) = self.ha_settings();
        let state = self.ha.lock().as_ref().map(Ha::state);
        match (enabled, state) {
            (true, None) => {
                let prefix = m.prefix().trim_end_matches('/');
                let cfg = match ha_config(prefix, &self.host, timeout) {
                    Ok(c) => c,
                    Err(e) => {
                        if !std::mem::replace(warned, true) {
                            tracing::error!(%e, "HA configuration");
                        }
                        return;
                    }
                };
                let host = Arc::new(XapiHaHost {
                    backend: Arc::clone(&self.backend),
                    xapi: Arc::downgrade(self),
                });
                match Ha::start(cfg, &m.settings().endpoints, host) {
                    Ok(ha) => {
                        *warned = false;
                        tracing::info!(host = self.host, "HA running on this host");
                        // A fence noticed before the watchdog fired left records of domains
                        // that died since: they are Halted before anything reuses a domid.
                        self.forget_lost_domains();
                        *self.ha.lock() = Some(ha);
                        self.ha_protect_running();
                        *next_sync = std::time::Instant::now() + RESYNC;
                    }
                    Err(e) => {
                        if !std::mem::replace(warned, true) {
                            tracing::warn!(%e, "HA cannot start yet");
                        }
                    }
                }
            }
            (true, Some(HaState::Fenced | HaState::Stopped)) => {
                // Dropped outside the lock: its threads end (one may be restarting a VM).
                let old = self.ha.lock().take();
                drop(old);
                tracing::warn!(
                    host = self.host,
                    "HA fenced this host: its domains are gone"
                );
                self.forget_lost_domains();
            }
            (false, Some(_)) => {
                let old = self.ha.lock().take();
                if let Some(ha) = old {
                    if let Err(e) = ha.stop() {
                        tracing::warn!(%e, "stopping HA");
                    }
                }
            }
            (true, Some(HaState::Live)) if std::time::Instant::now() >= *next_sync => {
                self.ha_protect_running();
                *next_sync = std::time::Instant::now() + RESYNC;
            }
            _ => {}
        }
    }

    /// VMs recorded running here whose domains are gone (the watchdog rebooted the host)
    /// are marked Halted.
    fn forget_lost_domains(&self) {
        let stale = self.stale_here();
        let _ = self.db.write(|tx| {
            for vm in &stale {
                if tx.str_field(vm, "resident_on") == self.host {
                    self.mark_halted(tx, vm);
                }
            }
            self.update_host_memory(tx);
            Ok::<_, ApiError>(())
        });
    }

    /// What HA keeps of `vm` when it has a restart priority.
    fn ha_vm(&self, vm: &str) -> Option<HaVm> {
        self.db.read(|v| {
            let priority = Priority::parse(&v.str_field(vm, "ha_restart_priority"))?;
            Some(HaVm {
                vm: v.str_field(vm, "uuid"),
                priority,
                order: v.int_field(vm, "order"),
                memory: v.int_field(vm, "memory_static_max").max(0) as u64,
            })
        })
    }

    /// Before `vm`'s domain starts here: with HA running on this host and a restart
    /// priority on the VM, this host takes its protection. Owned by another host (which
    /// runs or restarts it), or etcd out of reach: refused.
    pub(super) fn ha_claim(&self, vm: &str) -> Result<(), ApiError> {
        let Some(hv) = self.ha_vm(vm) else {
            return Ok(());
        };
        let g = self.ha.lock();
        let Some(ha) = g.as_ref().filter(|h| h.state() == HaState::Live) else {
            return Ok(());
        };
        ha.protect(&hv).map_err(|e| {
            ApiError::new(
                codes::OPERATION_NOT_ALLOWED,
                [format!("HA protection of {}: {e}", hv.vm)],
            )
        })
    }

    /// After `vm` stopped on request (or failed to start): its protection ends, so HA
    /// restarts it nowhere.
    pub(super) fn ha_release(&self, vm: &str) {
        let uuid = self.db.read(|v| v.str_field(vm, "uuid"));
        let g = self.ha.lock();
        if let Some(ha) = g.as_ref().filter(|h| h.state() == HaState::Live) {
            match ha.unprotect(&uuid) {
                Ok(()) | Err(crate::Error::Conflict(_)) => {}
                Err(e) => tracing::warn!(vm, %e, "HA: releasing the protection"),
            }
        }
    }

    /// Protects every VM with a restart priority whose domain runs here.
    fn ha_protect_running(&self) {
        let vms: Vec<String> = self.db.read(|v| {
            v.iter_class("VM")
                .filter(|(_, r)| self.is_here(r) && super::vm::is_guest_with_domain(r))
                .filter(|(_, r)| {
                    Priority::parse(
                        r.get("ha_restart_priority")
                            .and_then(Value::as_str)
                            .unwrap_or(""),
                    )
                    .is_some()
                })
                .filter(|(_, r)| self.runs_domain(r))
                .map(|(k, _)| k.clone())
                .collect()
        });
        for vm in vms {
            if let Err(e) = self.ha_claim(&vm) {
                tracing::warn!(vm, %e, "HA: a VM running here is not protected");
            }
        }
    }

    /// HA took `uuid` over from a failed host: its record is reset (that host is fenced:
    /// its domain is gone, as xapi's `force_state_reset`) and it starts here.
    fn ha_restart(self: &Arc<Self>, uuid: &str) -> Result<(), ApiError> {
        let vm = self
            .db
            .read(|v| v.by_uuid(uuid).cloned())
            .filter(|r| self.db.read(|v| v.class_of(r)) == Some("VM"))
            .ok_or_else(|| ApiError::handle_invalid("VM", uuid))?;
        let (resident, state, alive) = self.db.read(|v| {
            (
                v.str_field(&vm, "resident_on"),
                PowerState::parse(&v.str_field(&vm, "power_state")),
                v.iter_class("VM")
                    .find(|(k, _)| **k == vm)
                    .is_some_and(|(_, r)| self.runs_domain(r)),
            )
        });
        if resident == self.host && state.has_domain() && alive {
            // Already running here (this host's own VM, taken back after a restart).
            return Ok(());
        }
        self.db.write(|tx| {
            if PowerState::parse(&tx.str_field(&vm, "power_state")) != PowerState::Halted {
                self.mark_halted(tx, &vm);
            }
            tx.set(&vm, "current_operations", Value::Struct(BTreeMap::new()));
            operations::refresh_vm(tx, &vm);
            Ok::<_, ApiError>(())
        })?;
        self.vm_start(&vm, false).map(drop)
    }
}
