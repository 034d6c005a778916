//! HA's messages on the records, in process on the simulated host (4 GiB, 1 GiB of it
//! dom0's): the checks xapi makes on `pool.enable_ha`/`disable_ha`,
//! `VM.set_ha_restart_priority` and `pool.set_ha_host_failures_to_tolerate`, and
//! `pool.ha_compute_max_host_failures_to_tolerate` from the running VMs.

#![allow(clippy::cloned_ref_to_slice_refs)]

#[path = "common/api.rs"]
mod api;

use api::{rec, GIB, T};
use toolstack::value::Value;

impl T {
    fn pool(&self) -> Value {
        match self.ok("pool.get_all", &[]) {
            Value::Array(a) => a[0].clone(),
            v => panic!("{v:?}"),
        }
    }

    fn vm(&self, mem: u64) -> Value {
        let m = Value::String(mem.to_string());
        self.ok(
            "VM.create",
            &[rec(&[
                ("name_label", Value::str("v")),
                ("memory_static_max", m.clone()),
                ("memory_dynamic_max", m.clone()),
                ("memory_dynamic_min", m),
                ("VCPUs_max", Value::str("1")),
                ("VCPUs_at_startup", Value::str("1")),
            ])],
        )
    }
}

#[test]
fn enable_and_disable_are_checked_and_recorded() {
    let t = T::new();
    let pool = t.pool();
    assert_eq!(t.err("pool.disable_ha", &[]).code, "HA_NOT_ENABLED");
    let conf = rec(&[("timeout", Value::str("10"))]);
    t.ok("pool.enable_ha", &[Value::Array(vec![]), conf.clone()]);
    assert_eq!(
        t.ok("pool.get_ha_enabled", &[pool.clone()]),
        Value::Bool(true)
    );
    assert_eq!(t.ok("pool.get_ha_configuration", &[pool.clone()]), conf);
    assert_eq!(
        t.err("pool.enable_ha", &[Value::Array(vec![]), conf]).code,
        "HA_IS_ENABLED"
    );
    t.ok("pool.disable_ha", &[]);
    assert_eq!(t.ok("pool.get_ha_enabled", &[pool]), Value::Bool(false));
}

#[test]
fn restart_priorities_are_validated() {
    let t = T::new();
    let vm = t.vm(GIB / 4);
    for p in ["restart", "best-effort", ""] {
        t.ok("VM.set_ha_restart_priority", &[vm.clone(), Value::str(p)]);
        assert_eq!(
            t.ok("VM.get_ha_restart_priority", &[vm.clone()]),
            Value::str(p)
        );
    }
    let e = t.err(
        "VM.set_ha_restart_priority",
        &[vm.clone(), Value::str("always")],
    );
    assert_eq!(e.code, "INVALID_VALUE");
    assert_eq!(t.ok("VM.get_ha_restart_priority", &[vm]), Value::str(""));
}

#[test]
fn failures_to_tolerate_follow_the_plan() {
    let t = T::new();
    let pool = t.pool();
    // One host: no failure can be tolerated.
    assert_eq!(
        t.ok("pool.ha_compute_max_host_failures_to_tolerate", &[]),
        Value::str("0")
    );
    let e = t.err(
        "pool.set_ha_host_failures_to_tolerate",
        &[pool.clone(), Value::str("-1")],
    );
    assert_eq!(e.code, "INVALID_VALUE");
    // HA off: any non-negative value is kept.
    t.ok(
        "pool.set_ha_host_failures_to_tolerate",
        &[pool.clone(), Value::str("1")],
    );
    t.ok(
        "pool.set_ha_host_failures_to_tolerate",
        &[pool.clone(), Value::str("0")],
    );
    // HA on: more than the plan covers would break it.
    t.ok("pool.enable_ha", &[Value::Array(vec![]), rec(&[])]);
    assert_eq!(
        t.ok("pool.get_ha_plan_exists_for", &[pool.clone()]),
        Value::str("0")
    );
    let e = t.err(
        "pool.set_ha_host_failures_to_tolerate",
        &[pool.clone(), Value::str("1")],
    );
    assert_eq!(e.code, "HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN");
    t.ok(
        "pool.set_ha_host_failures_to_tolerate",
        &[pool.clone(), Value::str("0")],
    );
    assert_eq!(
        t.ok("pool.get_ha_host_failures_to_tolerate", &[pool]),
        Value::str("0")
    );
}
