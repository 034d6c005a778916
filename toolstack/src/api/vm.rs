//! VM messages: create and destroy, and the lifecycle (start, shutdown, reboot, pause) as
//! the API sees it: power-state checks and the database, over [`crate::xenops`].

use super::*;
use crate::xenops::{self, AfterStop, PowerState, VmConfig};

/// How often the monitor refreshes `VM_metrics` and `VM_guest_metrics`.
pub const METRICS_INTERVAL: Duration = Duration::from_secs(1);

impl Xapi {
    /// VMs the database says run but whose domains are gone are marked Halted (after a
    /// restart of the daemon or of the host).
    pub(super) fn reconcile(&self) -> Result<(), crate::Error> {
        let stale = self.stale_here();
        self.db.write(|tx| {
            // No operation survives a restart (xapi's `Cancel_tasks.cleanup_db`).
            operations::clear_current_operations(tx);
            for vm in &stale {
                // Unless another host restarted it meanwhile (HA).
                if tx.str_field(vm, "resident_on") == self.host {
                    self.mark_halted(tx, vm);
                }
            }
            tx.map_set(
                &self.host,
                "software_version",
                "hypervisor",
                Some(s(self.backend.hypervisor())),
            );
            self.update_host_memory(tx);
            operations::refresh_host(tx, &self.host);
            Ok::<_, crate::Error>(())
        })
    }

    /// VMs recorded running here whose domains are gone.
    pub(super) fn stale_here(&self) -> Vec<String> {
        self.db.read(|v| {
            v.iter_class("VM")
                .filter(|(_, r)| self.is_here(r) && is_guest_with_domain(r))
                .filter(|(_, r)| !self.runs_domain(r))
                .map(|(k, _)| k.clone())
                .collect()
        })
    }

    /// Whether the domain a VM record names runs here and is that VM's (its handle is the
    /// VM's UUID: after the host rebooted, a domid can belong to another VM).
    pub(super) fn runs_domain(&self, rec: &Record) -> bool {
        let domid = rec.get("domid").and_then(Value::as_i64).unwrap_or(-1);
        let uuid = rec.get("uuid").and_then(Value::as_str).unwrap_or("");
        u16::try_from(domid).is_ok_and(|d| {
            self.backend.is_alive(DomId(d))
                && self
                    .backend
                    .xen()
                    .domain_info(DomId(d))
                    .is_ok_and(|i| i.handle.to_string() == uuid)
        })
    }

    /// Domains (but dom0) that no running VM of the database has: found at start, left as
    /// they are, reported.
    pub fn orphan_domains(&self) -> Vec<DomId> {
        let known: std::collections::HashSet<i64> = self.db.read(|v| {
            v.iter_class("VM")
                .filter(|(_, r)| self.is_here(r))
                .filter(|(_, r)| {
                    PowerState::parse(r.get("power_state").and_then(Value::as_str).unwrap_or(""))
                        .has_domain()
                })
                .filter_map(|(_, r)| r.get("domid").and_then(Value::as_i64))
                .collect()
        });
        self.backend
            .xen()
            .list_domains()
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.domid)
            .filter(|d| d.0 != 0 && !known.contains(&i64::from(d.0)))
            .collect()
    }

    /// The domains this host runs (but dom0), as JSON: `domid`, `uuid` (the handle, the
    /// VM's UUID) and `pages` — what a pool's observer compares between hosts.
    pub fn domains_json(&self) -> serde_json::Value {
        let doms = self.backend.xen().list_domains().unwrap_or_default();
        serde_json::Value::Array(
            doms.into_iter()
                .filter(|d| d.domid.0 != 0)
                .map(|d| {
                    serde_json::json!({
                        "domid": d.domid.0,
                        "uuid": d.handle.to_string(),
                        "pages": d.tot_pages.0,
                    })
                })
                .collect(),
        )
    }

    /// Starts the thread that notices domains dying on their own and refreshes the
    /// running VMs' metrics every [`METRICS_INTERVAL`].
    pub fn spawn_monitor(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("xapi-monitor".into())
            .spawn(move || {
                let mut samples = super::vm_metrics::CpuSamples::default();
                let mut next_metrics = std::time::Instant::now();
                loop {
                    let Some(x) = weak.upgrade() else { return };
                    let dead = x.backend.wait_shutdowns(Duration::from_millis(200));
                    for (domid, reason) in dead {
                        x.domain_stopped(domid, reason);
                    }
                    if std::time::Instant::now() >= next_metrics {
                        x.refresh_metrics(&mut samples);
                        next_metrics = std::time::Instant::now() + METRICS_INTERVAL;
                    }
                }
            })
            .expect("spawn monitor thread");
    }

    /// A domain stopped by itself: tear it down, mark its VM halted, restart it when its
    /// actions say so.
    pub(super) fn domain_stopped(self: &Arc<Self>, domid: DomId, reason: ShutdownReason) {
        let vm = self.db.read(|v| {
            v.iter_class("VM")
                .filter(|(_, r)| self.is_here(r))
                .find(|(_, r)| r.get("domid").and_then(Value::as_i64) == Some(i64::from(domid.0)))
                .map(|(k, _)| k.clone())
        });
        let Some(vm) = vm else { return };
        // In the VM's queue: an operation under way finishes first, and what it left is
        // read again.
        let _turn = self.queues.enter(&vm);
        let cfg = self
            .db
            .read(|v| VmConfig::load(v, &vm))
            .filter(|c| c.power_state.has_domain() && c.domid == Some(domid));
        let Some(cfg) = cfg else { return };
        let _ = xenops::teardown(&self.backend, &cfg, domid);
        self.halted(&cfg.vm);
        tracing::info!(
            vm = cfg.vm,
            domid = domid.0,
            ?reason,
            "domain stopped on its own"
        );
        if cfg.after(reason) == AfterStop::Restart && reason != ShutdownReason::Poweroff {
            if let Err(e) = self.start_locked(&cfg.vm, false) {
                tracing::warn!(vm = cfg.vm, %e, "restart failed");
            }
        }
    }

    pub(super) fn vm_create(&self, rec: &Value) -> R {
        let vm_class = Known::VM.class();
        let metrics_class = Known::VM_metrics.class();
        self.db.write(|tx| {
            let mut f = self.check_record(tx, vm_class, rec)?;
            let get = |f: &Record, k: &str| f.get(k).and_then(Value::as_i64).unwrap_or(0);
            let (smin, dmin, dmax, smax) = (
                get(&f, "memory_static_min"),
                get(&f, "memory_dynamic_min"),
                get(&f, "memory_dynamic_max"),
                get(&f, "memory_static_max"),
            );
            if !(smin <= dmin && dmin <= dmax && dmax <= smax) {
                return Err(ApiError::new(
                    "MEMORY_CONSTRAINT_VIOLATION",
                    ["Memory limits must satisfy: static_min <= dynamic_min <= dynamic_max <= static_max"],
                ));
            }
            let (vmax, vstart) = (get(&f, "VCPUs_max"), get(&f, "VCPUs_at_startup"));
            if vstart < 1 || vstart > vmax {
                return Err(ApiError::new(
                    codes::VALUE_NOT_SUPPORTED,
                    ["VCPUs_at_startup", &vstart.to_string(), "value must be between 1 and VCPUs_max"],
                ));
            }
            let mut m = Record::new();
            m.insert("install_time".into(), now_datetime());
            let metrics = tx.create(metrics_class, m);
            f.insert("metrics".into(), s(metrics));
            f.insert("power_state".into(), s("Halted"));
            f.insert("domid".into(), s("-1"));
            f.insert("memory_target".into(), s(dmax.to_string()));
            // XAPI gives every VM a MAC seed (xapi_vm.ml `create`).
            let mut oc = f.get("other_config").and_then(Value::as_struct).cloned().unwrap_or_default();
            oc.entry("mac_seed".into()).or_insert_with(|| s(uuid::Uuid::new_v4().to_string()));
            f.insert("other_config".into(), Value::Struct(oc));
            let vm = tx.create(vm_class, f);
            operations::refresh_vm(tx, &vm);
            Ok(s(vm))
        })
    }

    pub(super) fn vm_destroy(&self, vm: &str) -> R {
        self.with_vm_operation(vm, "destroy", || self.vm_destroy_locked(vm))
    }

    fn vm_destroy_locked(&self, vm: &str) -> R {
        self.db.write(|tx| {
            if tx.field(vm, "is_control_domain") == Some(&Value::Bool(true)) {
                return Err(ApiError::new(
                    codes::OPERATION_NOT_ALLOWED,
                    ["cannot destroy the control domain"],
                ));
            }
            let ps = PowerState::parse(&tx.str_field(vm, "power_state"));
            if ps != PowerState::Halted {
                return Err(ApiError::new(
                    codes::VM_BAD_POWER_STATE,
                    [vm.to_owned(), "halted".into(), ps.lower()],
                ));
            }
            // XAPI destroys a VM's devices with it.
            for field in ["VBDs", "VIFs", "VGPUs"] {
                for d in tx.refs_field(vm, field) {
                    tx.destroy(&d);
                }
            }
            let metrics = tx.str_field(vm, "metrics");
            if tx.class_of(&metrics).is_some() {
                tx.destroy(&metrics);
            }
            self.drop_guest_metrics(tx, vm);
            tx.destroy(vm);
            Ok(s(""))
        })
    }

    pub(super) fn bad_power(vm: &str, expected: &str, actual: PowerState) -> ApiError {
        ApiError::new(codes::VM_BAD_POWER_STATE, [vm, expected, &actual.lower()])
    }

    /// The VM's configuration, read once.
    pub(super) fn vm_config(&self, vm: &str) -> Result<VmConfig, ApiError> {
        self.db
            .read(|v| VmConfig::load(v, vm))
            .ok_or_else(|| ApiError::handle_invalid("VM", vm))
    }

    /// Waits for `vm`'s turn in its queue; `TASK_CANCELLED` when its task was cancelled
    /// meanwhile.
    pub(super) fn turn(&self, vm: &str) -> Result<crate::tasks::VmTurn<'_>, ApiError> {
        let turn = self.queues.enter(vm);
        self.check_cancelled()?;
        Ok(turn)
    }

    pub(super) fn vm_start(self: &Arc<Self>, vm: &str, paused: bool) -> R {
        self.with_vm_operation(vm, "start", || self.start_locked(vm, paused))
    }

    fn start_locked(&self, vm: &str, paused: bool) -> R {
        let mut cfg = self.vm_config(vm)?;
        if cfg.is_control_domain {
            return Err(ApiError::new(
                codes::OPERATION_NOT_ALLOWED,
                ["the control domain is always running"],
            ));
        }
        if cfg.is_a_template {
            return Err(ApiError::new(codes::VM_IS_TEMPLATE, [vm, "start"]));
        }
        if cfg.power_state != PowerState::Halted {
            return Err(Self::bad_power(vm, "halted", cfg.power_state));
        }
        self.ha_claim(vm)?;
        let r = self.run_domain(&mut cfg, paused, None);
        if r.is_err() {
            self.ha_release(vm);
        }
        r
    }

    /// Runs `cfg` in a new domain, built or restored from `image`, and records it.
    pub(super) fn run_domain(
        &self,
        cfg: &mut VmConfig,
        paused: bool,
        image: Option<&std::fs::File>,
    ) -> R {
        let vm = cfg.vm.clone();
        let vm = vm.as_str();
        self.progress(0.1);
        self.sr_attach_vbds(cfg)?;
        let cfg = &*cfg;
        let started = self.memory_reserve(cfg).and_then(|reservation| {
            let progress = |f| self.progress(f);
            let started = match image {
                Some(f) => xenops::resume(&self.backend, cfg, f, paused, &progress),
                None => xenops::start(&self.backend, cfg, paused, &progress),
            };
            self.memory_started(cfg, reservation, started)
        });
        let domid = match started {
            Ok(d) => d,
            Err(e) => {
                self.db.read(|v| self.sr_release_vbds(v, vm));
                return Err(e);
            }
        };
        let state = if paused {
            PowerState::Paused
        } else {
            PowerState::Running
        };
        self.db.write(|tx| {
            tx.set(vm, "power_state", s(state.as_str()));
            tx.set(vm, "domid", s(domid.0.to_string()));
            tx.set(vm, "resident_on", s(self.host.clone()));
            tx.set(vm, "domarch", s("x64"));
            for b in &cfg.vbds {
                tx.set(&b.vbd, "currently_attached", Value::Bool(true));
            }
            for i in &cfg.vifs {
                tx.set(&i.vif, "currently_attached", Value::Bool(true));
            }
            let m = tx.str_field(vm, "metrics");
            if tx.class_of(&m) == Some("VM_metrics") {
                tx.set(&m, "start_time", now_datetime());
                tx.set(&m, "memory_actual", s(cfg.memory.to_string()));
                tx.set(&m, "VCPUs_number", s(cfg.vcpus_at_startup.to_string()));
                tx.set(&m, "VCPUs_utilisation", Value::Struct(BTreeMap::new()));
                tx.set(
                    &m,
                    "state",
                    Value::Array(vec![s(state.as_str().to_lowercase())]),
                );
                tx.set(&m, "current_domain_type", s("pv"));
                tx.set(&m, "hvm", Value::Bool(false));
                tx.set(&m, "last_updated", now_datetime());
            }
            self.update_memory_metrics(tx);
            operations::refresh_vm(tx, vm);
            Ok(s(""))
        })
    }

    pub(super) fn mark_halted(&self, tx: &mut Tx<'_>, vm: &str) {
        self.mark_stopped(tx, vm, PowerState::Halted);
    }

    /// Records that `vm` has no domain any more: Halted, or Suspended (its devices then stay
    /// attached, as XAPI shows them, to come back at resume).
    pub(super) fn mark_stopped(&self, tx: &mut Tx<'_>, vm: &str, state: PowerState) {
        self.sr_release_vbds(tx, vm);
        tx.set(vm, "power_state", s(state.as_str()));
        tx.set(vm, "domid", s("-1"));
        tx.set(vm, "resident_on", s(NULL_REF));
        if state == PowerState::Halted {
            for field in ["VBDs", "VIFs", "VGPUs"] {
                for d in tx.refs_field(vm, field) {
                    tx.set(&d, "currently_attached", Value::Bool(false));
                }
            }
        }
        let m = tx.str_field(vm, "metrics");
        if tx.class_of(&m) == Some("VM_metrics") {
            tx.set(&m, "memory_actual", s("0"));
            tx.set(&m, "VCPUs_utilisation", Value::Struct(BTreeMap::new()));
            tx.set(&m, "state", Value::Array(Vec::new()));
            tx.set(&m, "current_domain_type", s("unspecified"));
            tx.set(&m, "last_updated", now_datetime());
        }
        operations::refresh_vm(tx, vm);
        self.drop_guest_metrics(tx, vm);
    }

    /// Records that `vm` halted, and the host's memory.
    fn halted(&self, vm: &str) {
        let _ = self.db.write(|tx| {
            // Unless another host restarted it meanwhile (HA).
            if tx.str_field(vm, "resident_on") == self.host {
                self.mark_halted(tx, vm);
            }
            self.update_host_memory(tx);
            Ok::<_, ApiError>(())
        });
    }

    pub(super) fn update_host_memory(&self, tx: &mut Tx<'_>) {
        let m = tx.str_field(&self.host, "metrics");
        if tx.class_of(&m) == Some("host_metrics") {
            tx.set(
                &m,
                "memory_total",
                s(self.backend.total_memory().to_string()),
            );
            tx.set(&m, "memory_free", s(self.backend.free_memory().to_string()));
            tx.set(&m, "last_updated", now_datetime());
        }
    }

    /// The configuration and domain of a VM in one of the `allowed` states.
    pub(super) fn running(
        &self,
        vm: &str,
        allowed: &[PowerState],
        expected: &str,
    ) -> Result<(VmConfig, DomId), ApiError> {
        let cfg = self.vm_config(vm)?;
        if cfg.is_control_domain {
            return Err(ApiError::new(
                codes::OPERATION_NOT_ALLOWED,
                ["operation not allowed on the control domain"],
            ));
        }
        if !allowed.contains(&cfg.power_state) {
            return Err(Self::bad_power(vm, expected, cfg.power_state));
        }
        let domid = cfg
            .domid
            .ok_or_else(|| ApiError::internal(format!("{vm} runs without a domain id")))?;
        // After a reboot (a fence) the recorded domid may be another VM's domain.
        if let Ok(i) = self.backend.xen().domain_info(domid) {
            if i.handle.to_string() != cfg.uuid.to_string() {
                return Err(ApiError::internal(format!(
                    "{vm}: domain {} is another VM's (its own is gone)",
                    domid.0
                )));
            }
        }
        Ok((cfg, domid))
    }

    pub(super) fn clean_shutdown_timeout(&self) -> Duration {
        Duration::from_millis(
            self.clean_shutdown_timeout_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Stops the VM's domain (asking the guest first unless `hard`) and marks it halted.
    /// A hard shutdown of a Suspended VM destroys its suspend VDI (`Xapi_vm.hard_shutdown`).
    fn stop(&self, vm: &str, hard: bool, reason: ShutdownReason) -> Result<(), ApiError> {
        let cfg = self.vm_config(vm)?;
        if hard && reason == ShutdownReason::Poweroff && cfg.power_state == PowerState::Suspended {
            self.drop_suspend_vdi(vm);
            return self.db.write(|tx| {
                self.mark_halted(tx, vm);
                Ok(())
            });
        }
        let allowed: &[PowerState] = if hard {
            &[PowerState::Running, PowerState::Paused]
        } else {
            &[PowerState::Running]
        };
        let rec = (allowed.contains(&cfg.power_state) && !cfg.is_control_domain)
            .then(|| self.db.read(|v| v.get(vm).cloned()))
            .flatten();
        if rec.is_some_and(|r| !self.runs_domain(&r)) {
            // The domain the record names is gone (the host rebooted: its watchdog fenced
            // it) and the domid may be another VM's now: nothing to destroy.
            tracing::warn!(vm, domid = ?cfg.domid, "stop: the VM's domain is gone");
            return self.db.write(|tx| {
                self.mark_halted(tx, vm);
                self.update_host_memory(tx);
                Ok(())
            });
        }
        let (cfg, domid) = self.running(vm, allowed, "running")?;
        if !hard {
            xenops::clean_shutdown(
                &self.backend,
                &cfg,
                domid,
                reason,
                self.clean_shutdown_timeout(),
            )?;
        }
        xenops::teardown(&self.backend, &cfg, domid).map_err(ApiError::internal)?;
        self.db.write(|tx| {
            self.mark_halted(tx, vm);
            self.update_host_memory(tx);
            Ok(())
        })
    }

    pub(super) fn vm_shutdown(&self, vm: &str, hard: bool) -> R {
        let op = if hard {
            "hard_shutdown"
        } else {
            "clean_shutdown"
        };
        self.with_vm_operation(vm, op, || self.stop(vm, hard, ShutdownReason::Poweroff))?;
        self.ha_release(vm);
        Ok(s(""))
    }

    pub(super) fn vm_reboot(&self, vm: &str, hard: bool) -> R {
        let op = if hard { "hard_reboot" } else { "clean_reboot" };
        self.with_vm_operation(vm, op, || {
            self.stop(vm, hard, ShutdownReason::Reboot)?;
            self.start_locked(vm, false)
        })
    }

    pub(super) fn vm_pause(&self, vm: &str, pause: bool) -> R {
        let op = if pause { "pause" } else { "unpause" };
        self.with_vm_operation(vm, op, || self.vm_pause_locked(vm, pause))
    }

    fn vm_pause_locked(&self, vm: &str, pause: bool) -> R {
        let (from, to, expected) = if pause {
            (PowerState::Running, PowerState::Paused, "running")
        } else {
            (PowerState::Paused, PowerState::Running, "paused")
        };
        let (_, domid) = self.running(vm, &[from], expected)?;
        if pause {
            self.backend.pause(domid)
        } else {
            self.backend.unpause(domid)
        }
        .map_err(ApiError::internal)?;
        self.db.write(|tx| {
            tx.set(vm, "power_state", s(to.as_str()));
            operations::refresh_vm(tx, vm);
            Ok(s(""))
        })
    }
}

/// A guest (not the control domain) whose power state has a domain.
pub(super) fn is_guest_with_domain(r: &Record) -> bool {
    r.get("is_control_domain") != Some(&Value::Bool(true))
        && PowerState::parse(r.get("power_state").and_then(Value::as_str).unwrap_or(""))
            .has_domain()
}
