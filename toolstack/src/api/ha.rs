//! HA's messages on the records (`pool.enable_ha`, `pool.disable_ha`,
//! `pool.ha_compute_max_host_failures_to_tolerate`, `pool.set_ha_host_failures_to_tolerate`,
//! `VM.set_ha_restart_priority`), checked as xapi checks them. The engine that acts on
//! `pool.ha_enabled` is [`crate::ha`].

use super::*;
use crate::ha::plan::{self, HostCapacity};
use crate::ha::{HaVm, Priority};
use crate::xenops::PowerState;

/// `pool.ha_configuration` key holding HA's timeout in seconds (the lease TTL).
pub(super) const TIMEOUT_KEY: &str = "timeout";
/// The shortest timeout HA takes (the watchdog fires at least 1 s earlier, and counts
/// whole seconds from 2).
const MIN_TIMEOUT_SECS: u64 = 3;

impl Xapi {
    /// `pool.disable_ha` in a pool kept in etcd: every protection goes first, so no host
    /// restarts a VM while the hosts stop their engines.
    #[cfg(feature = "etcd")]
    fn ha_disable_pool(&self) -> Result<(), ApiError> {
        let on = self.db.read(|v| {
            v.all("pool")
                .iter()
                .any(|p| v.field(p, "ha_enabled") == Some(&Value::Bool(true)))
        });
        match self.pool() {
            Some(m) if on => crate::ha::Ha::disable_pool(
                &m.settings().endpoints,
                m.prefix().trim_end_matches('/'),
            )
            .map_err(ApiError::internal),
            _ => Ok(()),
        }
    }

    #[cfg(not(feature = "etcd"))]
    fn ha_disable_pool(&self) -> Result<(), ApiError> {
        Ok(())
    }

    /// Without the pool store there is no HA engine: nothing to protect.
    #[cfg(not(feature = "etcd"))]
    pub(super) fn ha_claim(&self, _vm: &str) -> Result<(), ApiError> {
        Ok(())
    }

    #[cfg(not(feature = "etcd"))]
    pub(super) fn ha_release(&self, _vm: &str) {}

    /// HA's messages; `None` for the others.
    pub(super) fn ha_message(
        self: &Arc<Self>,
        class: &'static Class,
        method: &str,
        msg: &str,
        p: &[Value],
    ) -> Option<R> {
        let r = match (class.name, msg) {
            ("pool", "enable_ha") => self.with_session(method, p, 3, |x, p| {
                let config = p[2]
                    .as_struct()
                    .ok_or_else(|| ApiError::field_type("configuration"))?
                    .clone();
                if let Some(t) = config.get(TIMEOUT_KEY) {
                    let t = t.as_str().unwrap_or_default();
                    if !t.parse::<u64>().is_ok_and(|t| t >= MIN_TIMEOUT_SECS) {
                        return Err(ApiError::new("INVALID_VALUE", [TIMEOUT_KEY, t]));
                    }
                }
                x.set_ha_enabled(true, config)
            }),
            ("pool", "disable_ha") => self.with_session(method, p, 1, |x, _| {
                x.ha_disable_pool()?;
                x.set_ha_enabled(false, Record::new())
            }),
            ("pool", "ha_compute_max_host_failures_to_tolerate") => {
                self.with_session(method, p, 1, |x, _| Ok(s(x.ha_max_failures().to_string())))
            }
            ("pool", "set_ha_host_failures_to_tolerate") => {
                self.with_session(method, p, 3, |x, p| {
                    let pool = x.check_ref(&p[1], "pool", "self")?;
                    let n = p[2].as_i64().ok_or_else(|| ApiError::field_type("value"))?;
                    if n < 0 {
                        return Err(ApiError::new(
                            "INVALID_VALUE",
                            ["ha_host_failures_to_tolerate".to_owned(), n.to_string()],
                        ));
                    }
                    let enabled =
                        x.db.read(|v| v.field(&pool, "ha_enabled") == Some(&Value::Bool(true)));
                    if enabled && n > i64::from(x.ha_max_failures()) {
                        return Err(ApiError::new(
                            "HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN",
                            [] as [&str; 0],
                        ));
                    }
                    x.generic(class, method, msg, p)
                })
            }
            ("VM", "set_ha_restart_priority") => self.vm_op(method, p, 3, |x, vm, p| {
                let v = arg_str(&p[2], "value")?;
                if !v.is_empty() && Priority::parse(v).is_none() {
                    return Err(ApiError::new("INVALID_VALUE", ["ha_restart_priority", v]));
                }
                let r = x.generic(class, method, msg, p)?;
                // A VM running here is protected (or released) at once.
                let here = x.db.read(|r| {
                    r.str_field(vm, "resident_on") == x.host
                        && PowerState::parse(&r.str_field(vm, "power_state")).has_domain()
                });
                if here && v.is_empty() {
                    x.ha_release(vm);
                } else if here {
                    x.ha_claim(vm)?;
                }
                Ok(r)
            }),
            _ => return None,
        };
        Some(r)
    }

    /// Sets `pool.ha_enabled` (refusing to enable twice or disable when off, as xapi does)
    /// with its configuration and the failures the current plan covers.
    fn set_ha_enabled(&self, on: bool, config: Record) -> R {
        let max = self.ha_max_failures();
        self.db.write(|tx| {
            let pools = tx.all("pool");
            let pool = pools
                .first()
                .ok_or_else(|| ApiError::internal("no pool object"))?;
            let was = tx.field(pool, "ha_enabled") == Some(&Value::Bool(true));
            match (was, on) {
                (true, true) => return Err(ApiError::new("HA_IS_ENABLED", [] as [&str; 0])),
                (false, false) => return Err(ApiError::new("HA_NOT_ENABLED", [] as [&str; 0])),
                _ => {}
            }
            tx.set(pool, "ha_enabled", Value::Bool(on));
            tx.set(pool, "ha_configuration", Value::Struct(config.clone()));
            let plan = if on { i64::from(max) } else { 0 };
            tx.set(pool, "ha_plan_exists_for", s(plan.to_string()));
            Ok(s(""))
        })
    }

    /// `pool.ha_compute_max_host_failures_to_tolerate` over the records: each host's
    /// `host_metrics.memory_free` and its running VMs' `memory_static_max` by priority.
    pub(super) fn ha_max_failures(&self) -> u32 {
        let hosts = self.db.read(|v| {
            let mut by_host: BTreeMap<String, HostCapacity> = v
                .all("host")
                .into_iter()
                .map(|h| {
                    let m = v.str_field(&h, "metrics");
                    let free = v.int_field(&m, "memory_free").max(0) as u64;
                    (h, HostCapacity { free, vms: vec![] })
                })
                .collect();
            for vm in v.all("VM") {
                let running = PowerState::parse(&v.str_field(&vm, "power_state")).has_domain();
                let prio = Priority::parse(&v.str_field(&vm, "ha_restart_priority"));
                let host = by_host.get_mut(&v.str_field(&vm, "resident_on"));
                if let (true, Some(priority), Some(host)) = (running, prio, host) {
                    host.vms.push(HaVm {
                        vm: v.str_field(&vm, "uuid"),
                        priority,
                        order: v.int_field(&vm, "order"),
                        memory: v.int_field(&vm, "memory_static_max").max(0) as u64,
                    });
                }
            }
            by_host.into_values().collect::<Vec<_>>()
        });
        plan::max_host_failures_to_tolerate(&hosts)
    }
}
