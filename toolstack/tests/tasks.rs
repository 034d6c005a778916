//! xenopsd's per-VM queues and XAPI's tasks on the simulated host: `Async.VM.*` returns a
//! task at once; operations on one VM run one at a time, different VMs in parallel; a
//! failed start leaves nothing; a queued operation can be cancelled.

#![allow(clippy::cloned_ref_to_slice_refs)]

#[path = "common/api.rs"]
mod api;

use api::{GIB, T};

use std::time::{Duration, Instant};

use toolstack::simguest::ShutdownAnswer;
use toolstack::value::Value;

impl T {
    fn vm(&self, name: &str, kernel: Option<&str>) -> Value {
        let m = Value::String((GIB / 4).to_string());
        let mut r = vec![
            ("name_label".to_owned(), Value::str(name)),
            ("memory_static_max".to_owned(), m.clone()),
            ("memory_dynamic_max".to_owned(), m.clone()),
            ("memory_dynamic_min".to_owned(), m),
            ("VCPUs_max".to_owned(), Value::str("1")),
            ("VCPUs_at_startup".to_owned(), Value::str("1")),
        ];
        if let Some(k) = kernel {
            r.push(("PV_kernel".to_owned(), Value::str(k)));
        }
        self.ok("VM.create", &[Value::Struct(r.into_iter().collect())])
    }

    fn field(&self, class: &str, field: &str, r: &Value) -> Value {
        self.ok(&format!("{class}.get_{field}"), std::slice::from_ref(r))
    }

    fn power(&self, vm: &Value) -> String {
        self.field("VM", "power_state", vm)
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Starts an `Async.VM.<op>` and returns its task.
    fn spawn(&self, op: &str, vm: &Value) -> Value {
        let args: Vec<Value> = if op == "start" {
            vec![vm.clone(), Value::Bool(false), Value::Bool(false)]
        } else {
            vec![vm.clone()]
        };
        self.ok(&format!("Async.VM.{op}"), &args)
    }

    fn status(&self, task: &Value) -> String {
        self.field("task", "status", task)
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Waits for the task to finish; returns its record.
    fn wait(&self, task: &Value) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st = self.status(task);
            if st != "pending" && st != "cancelling" {
                return self.ok("task.get_record", std::slice::from_ref(task));
            }
            assert!(Instant::now() < deadline, "task still {st} after 30 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn domain_count(&self) -> usize {
        self.be.xen().list_domains().unwrap().len() - 1
    }
}

fn get<'a>(rec: &'a Value, k: &str) -> &'a Value {
    rec.as_struct()
        .and_then(|m| m.get(k))
        .unwrap_or_else(|| panic!("no {k} in {rec:?}"))
}

fn error_code(rec: &Value) -> String {
    get(rec, "error_info").as_array().unwrap()[0]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn two_starts_of_one_vm_one_wins_the_other_gets_vm_bad_power_state() {
    let t = T::new();
    let vm = t.vm("a", None);
    let (t1, t2) = (t.spawn("start", &vm), t.spawn("start", &vm));
    assert_ne!(t1, t2);
    let (r1, r2) = (t.wait(&t1), t.wait(&t2));
    let mut statuses = [
        get(&r1, "status").as_str().unwrap(),
        get(&r2, "status").as_str().unwrap(),
    ];
    statuses.sort_unstable();
    assert_eq!(statuses, ["failure", "success"]);
    let failed = if get(&r1, "status").as_str() == Some("failure") {
        &r1
    } else {
        &r2
    };
    let info = get(failed, "error_info").as_array().unwrap();
    assert_eq!(info[0].as_str(), Some("VM_BAD_POWER_STATE"));
    assert_eq!(info[2].as_str(), Some("halted"));
    assert_eq!(info[3].as_str(), Some("running"));
    for r in [&r1, &r2] {
        assert_eq!(get(r, "progress"), &Value::Double(1.0));
        assert_ne!(get(r, "finished"), &Value::str(""));
    }
    assert_eq!(t.power(&vm), "Running");
    assert_eq!(t.domain_count(), 1, "exactly one domain");
    // Both tasks are in task.get_all_records.
    let all = t.ok("task.get_all_records", &[]);
    let all = all.as_struct().unwrap();
    for task in [&t1, &t2] {
        assert!(all.contains_key(task.as_str().unwrap()));
    }
}

#[test]
fn one_vm_waits_its_turn_while_another_vm_goes_ahead() {
    let t = T::new();
    let (a, b) = (t.vm("a", None), t.vm("b", None));
    t.wait(&t.spawn("start", &a));
    t.wait(&t.spawn("start", &b));
    // a's guest takes 1.5 s to stop: a's queue is busy that long.
    t.be.sim_guests()
        .unwrap()
        .set_answer(ShutdownAnswer::After(Duration::from_millis(1500)));
    let stop_a = t.spawn("clean_shutdown", &a);
    std::thread::sleep(Duration::from_millis(100));
    let pause_a = t.spawn("pause", &a);
    // b's operations do not wait for a's.
    let t0 = Instant::now();
    let r = t.wait(&t.spawn("pause", &b));
    assert_eq!(get(&r, "status").as_str(), Some("success"), "{r:?}");
    t.wait(&t.spawn("unpause", &b));
    assert_eq!(
        t.status(&stop_a),
        "pending",
        "b finished while a is stopping"
    );
    assert!(t0.elapsed() < Duration::from_millis(1400));
    // a's pause ran after a's shutdown, and saw it halted.
    assert_eq!(get(&t.wait(&stop_a), "status").as_str(), Some("success"));
    let r = t.wait(&pause_a);
    assert_eq!(error_code(&r), "VM_BAD_POWER_STATE", "{r:?}");
    assert_eq!(t.power(&a), "Halted");
    assert_eq!(t.power(&b), "Running");
}

#[test]
fn failed_start_leaves_no_domain_and_the_task_carries_the_error() {
    let t = T::new();
    let vm = t.vm("broken", Some("/nonexistent/vmlinuz"));
    let r = t.wait(&t.spawn("start", &vm));
    assert_eq!(get(&r, "status").as_str(), Some("failure"));
    assert_eq!(error_code(&r), "INTERNAL_ERROR", "{r:?}");
    assert_eq!(t.domain_count(), 0);
    assert_eq!(t.power(&vm), "Halted");
    assert_eq!(t.field("VM", "domid", &vm), Value::str("-1"));
    // The synchronous call says the same.
    let e = t
        .call("VM.start", &[vm, Value::Bool(false), Value::Bool(false)])
        .unwrap_err();
    assert_eq!(e.code, "INTERNAL_ERROR");
    assert_eq!(t.domain_count(), 0);
}

#[test]
fn a_queued_operation_can_be_cancelled() {
    let t = T::new();
    let vm = t.vm("a", None);
    t.wait(&t.spawn("start", &vm));
    t.be.sim_guests()
        .unwrap()
        .set_answer(ShutdownAnswer::After(Duration::from_millis(800)));
    let reboot = t.spawn("clean_reboot", &vm);
    std::thread::sleep(Duration::from_millis(100));
    let stop = t.spawn("hard_shutdown", &vm);
    t.ok("task.cancel", &[stop.clone()]);
    assert_eq!(t.status(&stop), "cancelling");
    let r = t.wait(&stop);
    assert_eq!(get(&r, "status").as_str(), Some("cancelled"));
    assert_eq!(error_code(&r), "TASK_CANCELLED");
    assert_eq!(get(&t.wait(&reboot), "status").as_str(), Some("success"));
    // The cancelled shutdown never ran.
    assert_eq!(t.power(&vm), "Running");
    // A finished task cannot be cancelled.
    let e = t.call("task.cancel", &[reboot]).unwrap_err();
    assert_eq!(e.code, "OPERATION_NOT_ALLOWED");
}
