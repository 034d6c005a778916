//! Dynamic memory on the simulated host: VM starts that fit only after squeezing running
//! guests, ones that cannot fit, and the memory messages, through the XenAPI in process
//! (xen-sim, our xenstored, squeezed; the guests' balloon drivers are xen-sim's, 1 GiB/s).

#![allow(clippy::cloned_ref_to_slice_refs)]

#[path = "common/api.rs"]
mod api;

use api::{GIB, MIB, T};

use toolstack::value::Value;
use toolstack::ApiError;
use xen_types::DomId;

impl T {
    /// A VM of `static_max` bytes allowed to balloon between `min` and `max`.
    fn vm(&self, name: &str, min: u64, max: u64, static_max: u64) -> Value {
        let v = |b: u64| Value::String(b.to_string());
        self.ok(
            "VM.create",
            &[Value::Struct(
                [
                    ("name_label", Value::str(name)),
                    ("memory_static_min", v(min)),
                    ("memory_static_max", v(static_max)),
                    ("memory_dynamic_max", v(max)),
                    ("memory_dynamic_min", v(min)),
                    ("VCPUs_max", Value::str("1")),
                    ("VCPUs_at_startup", Value::str("1")),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            )],
        )
    }

    fn start(&self, vm: &Value) -> Result<Value, ApiError> {
        self.call(
            "VM.start",
            &[vm.clone(), Value::Bool(false), Value::Bool(false)],
        )
    }

    fn int(&self, m: &str, r: &Value) -> u64 {
        let v = self.ok(m, std::slice::from_ref(r));
        v.as_i64().unwrap_or_else(|| panic!("{m}: {v:?}")) as u64
    }

    fn actual(&self, vm: &Value) -> u64 {
        let m = self.ok("VM.get_metrics", std::slice::from_ref(vm));
        self.int("VM_metrics.get_memory_actual", &m)
    }

    fn domain_bytes(&self, vm: &Value) -> u64 {
        let d = self.int("VM.get_domid", vm);
        let info = self.be.xen().domain_info(DomId(d as u16)).unwrap();
        info.tot_pages.bytes()
    }

    fn host_free(&self) -> u64 {
        let h = self.ok("host.get_all", &[]);
        let h = h.as_array().unwrap()[0].clone();
        let m = self.ok("host.get_metrics", &[h]);
        self.int("host_metrics.get_memory_free", &m)
    }

    fn compute_free(&self) -> u64 {
        let h = self.ok("host.get_all", &[]);
        let h = h.as_array().unwrap()[0].clone();
        self.int("host.compute_free_memory", &h)
    }
}

/// Within a few pages: balloon drivers and squeezed's allowances work in 4 KiB pages.
fn near(a: u64, b: u64) -> bool {
    a.abs_diff(b) <= 64 * 1024
}

#[test]
fn a_start_squeezes_a_running_guest_and_one_that_cannot_fit_is_refused() {
    let t = T::new();
    // a may balloon between 1 and 2 GiB; b and c need all of theirs.
    let a = t.vm("a", GIB, 2 * GIB, 2 * GIB);
    let b = t.vm("b", GIB + GIB / 2, GIB + GIB / 2, GIB + GIB / 2);
    let c = t.vm("c", GIB, GIB, GIB);
    t.start(&a).unwrap();
    assert_eq!(t.domain_bytes(&a), 2 * GIB);
    assert_eq!(t.compute_free(), 2 * GIB);
    // 1 GiB free, b needs 1.5: a is squeezed to about 1.5 GiB (one γ for the only guest).
    t.start(&b).unwrap();
    assert!(
        near(t.domain_bytes(&a), GIB + GIB / 2),
        "{}",
        t.domain_bytes(&a)
    );
    assert!(near(t.actual(&a), t.domain_bytes(&a)), "{}", t.actual(&a));
    assert_eq!(t.actual(&b), GIB + GIB / 2);
    assert!(t.host_free() < MIB, "{}", t.host_free());
    // c needs 1 GiB; at most about 0.5 GiB can be had (a at its dynamic-min).
    let free = t.compute_free();
    assert!(near(free, GIB / 2), "{free}");
    let e = t.start(&c).unwrap_err();
    assert_eq!(e.code, "HOST_NOT_ENOUGH_FREE_MEMORY");
    assert_eq!(e.params[0], GIB.to_string());
    let said: u64 = e.params[1].parse().unwrap();
    assert!(near(said, GIB / 2), "{e:?}");
    assert_eq!(
        t.ok("VM.get_power_state", &[c.clone()]),
        Value::str("Halted")
    );
    // What was squeezed in vain went back to a.
    assert!(
        near(t.domain_bytes(&a), GIB + GIB / 2),
        "{}",
        t.domain_bytes(&a)
    );
    // Once b stops, c fits without squeezing.
    t.ok("VM.hard_shutdown", &[b.clone()]);
    t.start(&c).unwrap();
    assert_eq!(t.actual(&c), GIB);
}

#[test]
fn dynamic_range_and_live_target_move_the_guest_and_the_metrics_follow() {
    let t = T::new();
    let a = t.vm("a", GIB / 2, 2 * GIB, 2 * GIB);
    t.start(&a).unwrap();
    let v = |b: u64| Value::String(b.to_string());
    t.ok(
        "VM.set_memory_dynamic_range",
        &[a.clone(), v(GIB / 2), v(GIB + GIB / 4)],
    );
    assert!(near(t.actual(&a), GIB + GIB / 4), "{}", t.actual(&a));
    assert!(
        near(t.host_free(), GIB + GIB / 4 + GIB / 2),
        "{}",
        t.host_free()
    );
    assert_eq!(t.int("VM.get_memory_dynamic_max", &a), GIB + GIB / 4);
    t.ok("VM.set_memory_target_live", &[a.clone(), v(GIB)]);
    assert!(near(t.actual(&a), GIB), "{}", t.actual(&a));
    assert_eq!(t.int("VM.get_memory_target", &a), GIB);
    // Bad input: refused, nothing changes.
    let e = t.err(
        "VM.set_memory_dynamic_range",
        &[a.clone(), v(GIB + GIB / 2), v(GIB)],
    );
    assert_eq!(e.code, "MEMORY_CONSTRAINT_VIOLATION");
    let e = t.err(
        "VM.set_memory_dynamic_range",
        &[a.clone(), v(GIB), v(3 * GIB)],
    );
    assert_eq!(e.code, "MEMORY_CONSTRAINT_VIOLATION");
    let e = t.err("VM.set_memory_target_live", &[a.clone(), v(3 * GIB)]);
    assert_eq!(e.code, "MEMORY_CONSTRAINT_VIOLATION");
    let e = t.err(
        "VM.set_memory_target_live",
        &[a.clone(), Value::str("lots")],
    );
    assert_eq!(e.code, "FIELD_TYPE_ERROR");
    assert_eq!(t.int("VM.get_memory_dynamic_min", &a), GIB / 2);
    assert_eq!(t.int("VM.get_memory_dynamic_max", &a), GIB + GIB / 4);
    assert!(near(t.actual(&a), GIB), "{}", t.actual(&a));
    // A halted VM's target cannot be set live.
    t.ok("VM.hard_shutdown", &[a.clone()]);
    let e = t.err("VM.set_memory_target_live", &[a.clone(), v(GIB)]);
    assert_eq!(e.code, "VM_BAD_POWER_STATE");
}

#[test]
fn the_balancer_gives_freed_memory_back_and_keeps_the_metrics_current() {
    let t = T::new();
    let a = t.vm("a", GIB / 2, 2 * GIB, 2 * GIB);
    let b = t.vm("b", GIB, GIB, GIB);
    t.start(&a).unwrap();
    t.start(&b).unwrap();
    // 3 GiB for guests: a holds 2, b 1. a's range is lowered (it frees 1 GiB) and raised
    // again, and b stops: the balancer gives a its 2 GiB back, and 1 GiB stays free.
    let v = |b: u64| Value::String(b.to_string());
    t.ok(
        "VM.set_memory_dynamic_range",
        &[a.clone(), v(GIB / 2), v(GIB)],
    );
    assert!(near(t.actual(&a), GIB), "{}", t.actual(&a));
    t.ok(
        "VM.set_memory_dynamic_range",
        &[a.clone(), v(GIB / 2), v(2 * GIB)],
    );
    t.ok("VM.hard_shutdown", std::slice::from_ref(&b));
    t.x.spawn_memory_balancer(std::time::Duration::from_millis(100));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !near(t.actual(&a), 2 * GIB) {
        assert!(
            std::time::Instant::now() < deadline,
            "a holds {}",
            t.actual(&a)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // a is at its dynamic-max: the rest stays free, and the metrics say so.
    assert!(near(t.host_free(), GIB), "{}", t.host_free());
}
