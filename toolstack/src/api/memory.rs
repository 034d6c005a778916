//! Memory messages and the memory side of a VM start, over [`crate::memory::Memory`]:
//! `VM.set_memory_dynamic_range`, `VM.set_memory_target_live`, `host.compute_free_memory`,
//! and `VM_metrics.memory_actual` / `host_metrics.memory_free` from the host's numbers.

use super::*;
use crate::memory::Limits;
use crate::xenops::{PowerState, VmConfig};

/// `HOST_NOT_ENOUGH_FREE_MEMORY [needed, free]` (bytes), as XAPI sends it.
fn not_enough(needed: u64, free: u64) -> ApiError {
    ApiError::new(
        codes::HOST_NOT_ENOUGH_FREE_MEMORY,
        [needed.to_string(), free.to_string()],
    )
}

fn int(v: &Value, name: &str) -> Result<u64, ApiError> {
    v.as_i64()
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| ApiError::field_type(name))
}

impl Xapi {
    /// The VM's memory limits from the database.
    fn memory_limits(&self, vm: &str) -> Limits {
        self.db.read(|v| {
            let get = |k: &str| u64::try_from(v.int_field(vm, k)).unwrap_or(0);
            Limits {
                dynamic_min: get("memory_dynamic_min"),
                dynamic_max: get("memory_dynamic_max"),
                static_max: get("memory_static_max"),
            }
        })
    }

    /// Before a start: reserves the memory the domain will be built with, squeezing running
    /// guests toward their dynamic-min when needed; `HOST_NOT_ENOUGH_FREE_MEMORY` only when
    /// that cannot free enough (the reasons squeezed gave are logged).
    pub(super) fn memory_reserve(
        &self,
        cfg: &VmConfig,
    ) -> Result<squeezed::ReservationId, ApiError> {
        self.memory.reserve(cfg.memory).map_err(|e| {
            tracing::info!(vm = cfg.vm, needed = cfg.memory, %e, "cannot reserve memory");
            match e {
                squeezed::Error::CannotFree { .. }
                | squeezed::Error::DomainsRefused { .. }
                | squeezed::Error::ReservationTooLarge { .. } => {
                    not_enough(cfg.memory, self.memory.compute_free().unwrap_or(0))
                }
                e => ApiError::internal(e),
            }
        })
    }

    /// After a start: the domain owns its reservation and gets its `memory/*` keys; on
    /// failure the reservation is given back.
    pub(super) fn memory_started(
        &self,
        cfg: &VmConfig,
        reservation: squeezed::ReservationId,
        domid: Result<DomId, ApiError>,
    ) -> Result<DomId, ApiError> {
        let domid = match domid {
            Ok(d) => d,
            Err(e) => {
                self.memory.release(reservation);
                return Err(e);
            }
        };
        let limits = self.memory_limits(&cfg.vm);
        if let Err(e) = self.memory.domain_built(reservation, domid, limits) {
            self.memory.release(reservation);
            tracing::warn!(vm = cfg.vm, %e, "memory keys");
        }
        Ok(domid)
    }

    /// `VM.set_memory_dynamic_range`: checks `static_min ≤ min ≤ max ≤ static_max`, records
    /// the range, and on a running VM writes it for squeezed and rebalances the host.
    pub(super) fn vm_set_memory_dynamic_range(&self, vm: &str, min: &Value, max: &Value) -> R {
        let (min, max) = (int(min, "min")?, int(max, "max")?);
        let _turn = self.queues.enter(vm);
        let cfg = self
            .db
            .read(|v| VmConfig::load(v, vm))
            .ok_or_else(|| ApiError::handle_invalid("VM", vm))?;
        let smin = self
            .db
            .read(|v| u64::try_from(v.int_field(vm, "memory_static_min")).unwrap_or(0));
        if !(smin <= min && min <= max && max <= cfg.memory) {
            return Err(ApiError::new(
                "MEMORY_CONSTRAINT_VIOLATION",
                ["Memory limits must satisfy: static_min <= dynamic_min <= dynamic_max <= static_max"],
            ));
        }
        self.db.write(|tx| {
            tx.set(vm, "memory_dynamic_min", s(min.to_string()));
            tx.set(vm, "memory_dynamic_max", s(max.to_string()));
            tx.set(vm, "memory_target", s(max.to_string()));
            Ok::<_, ApiError>(())
        })?;
        self.memory_apply(&cfg, min, max)
    }

    /// `VM.set_memory_target_live`: a running VM's target, within its dynamic range; squeezed
    /// keeps it there (its range for squeezed becomes `[target, target]`).
    pub(super) fn vm_set_memory_target_live(&self, vm: &str, target: &Value) -> R {
        let target = int(target, "target")?;
        let _turn = self.queues.enter(vm);
        let cfg = self
            .db
            .read(|v| VmConfig::load(v, vm))
            .ok_or_else(|| ApiError::handle_invalid("VM", vm))?;
        if !matches!(cfg.power_state, PowerState::Running | PowerState::Paused) {
            return Err(ApiError::new(
                codes::VM_BAD_POWER_STATE,
                [vm, "running", &cfg.power_state.lower()],
            ));
        }
        let l = self.memory_limits(vm);
        if !(l.dynamic_min <= target && target <= l.dynamic_max) {
            return Err(ApiError::new(
                "MEMORY_CONSTRAINT_VIOLATION",
                ["target must be within dynamic_min and dynamic_max"],
            ));
        }
        self.db.write(|tx| {
            tx.set(vm, "memory_target", s(target.to_string()));
            Ok::<_, ApiError>(())
        })?;
        self.memory_apply(&cfg, target, target)
    }

    /// A running VM's range goes to squeezed, which rebalances; then the metrics follow.
    fn memory_apply(&self, cfg: &VmConfig, min: u64, max: u64) -> R {
        if let (Some(domid), true) = (cfg.domid, cfg.power_state.has_domain()) {
            if let Err(e) = self.memory.set_dynamic_range(domid, min, max) {
                tracing::info!(vm = cfg.vm, %e, "rebalancing after a memory change");
            }
        }
        self.db.write(|tx| {
            self.update_memory_metrics(tx);
            Ok(s(""))
        })
    }

    /// Starts the thread that shares free memory out to the guests every `every` (squeezed's
    /// daemon loop), logs every domain it gives up on with the reason, and keeps
    /// `VM_metrics.memory_actual` and `host_metrics.memory_free` current.
    pub fn spawn_memory_balancer(self: &Arc<Self>, every: Duration) {
        let weak: Weak<Self> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("xapi-squeezed".into())
            .spawn(move || loop {
                let Some(x) = weak.upgrade() else { return };
                let report = x.memory.balance_round();
                for g in &report.given_up {
                    tracing::warn!(domid = g.domid.0, reason = g.reason, "memory: gave up on");
                }
                if let Some(e) = &report.error {
                    tracing::warn!(%e, "memory: rebalancing failed");
                }
                let _ = x.db.write(|tx| {
                    x.update_memory_metrics(tx);
                    Ok::<_, ApiError>(())
                });
                drop(x);
                std::thread::sleep(every);
            })
            .expect("spawn memory balancer thread");
    }

    /// `host.compute_free_memory`: free memory with every VM squeezed to its dynamic-min.
    pub(super) fn host_compute_free_memory(&self) -> R {
        let free = self.memory.compute_free().map_err(ApiError::internal)?;
        Ok(s(free.to_string()))
    }

    /// `VM_metrics.memory_actual` of every running VM and `host_metrics.memory_free` from
    /// the hypervisor's numbers.
    pub(super) fn update_memory_metrics(&self, tx: &mut Tx<'_>) {
        let running: Vec<(String, DomId)> = tx
            .iter_class("VM")
            .filter(|(_, r)| self.is_here(r))
            .filter(|(_, r)| {
                PowerState::parse(r.get("power_state").and_then(Value::as_str).unwrap_or(""))
                    .has_domain()
            })
            .filter_map(|(k, r)| {
                let d = r.get("domid").and_then(Value::as_i64)?;
                Some((k.clone(), DomId(u16::try_from(d).ok()?)))
            })
            .collect();
        for (vm, domid) in running {
            let m = tx.str_field(&vm, "metrics");
            if let (Some(actual), Some("VM_metrics")) = (self.memory.actual(domid), tx.class_of(&m))
            {
                tx.set(&m, "memory_actual", s(actual.to_string()));
            }
        }
        self.update_host_memory(tx);
    }
}
