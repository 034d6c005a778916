//! XAPI's operation rules over the API on the simulated host: `allowed_operations` and
//! `current_operations`, the errors of an operation not allowed, `blocked_operations`,
//! templates, `mac_seed`, device validation and destroy rules. Each test names the xen-api
//! source (`ocaml/xapi/...`) its expectations come from.

#![allow(clippy::cloned_ref_to_slice_refs)]

#[path = "common/api.rs"]
mod api;

use api::{rec, GIB, T};

use std::time::{Duration, Instant};

use toolstack::api::gen_mac;
use toolstack::db::Db;
use toolstack::simguest::ShutdownAnswer;
use toolstack::value::Value;
use toolstack::ApiError;

impl T {
    fn vm_with(&self, extra: &[(&str, Value)]) -> Value {
        let m = Value::String((GIB / 4).to_string());
        let mut r = vec![
            ("name_label", Value::str("v")),
            ("memory_static_max", m.clone()),
            ("memory_dynamic_max", m.clone()),
            ("memory_dynamic_min", m),
            ("VCPUs_max", Value::str("1")),
            ("VCPUs_at_startup", Value::str("1")),
        ];
        r.extend(extra.iter().cloned());
        self.ok("VM.create", &[rec(&r)])
    }

    fn vm(&self) -> Value {
        self.vm_with(&[])
    }

    fn get(&self, class: &str, field: &str, r: &Value) -> Value {
        self.ok(&format!("{class}.get_{field}"), std::slice::from_ref(r))
    }

    fn allowed(&self, class: &str, r: &Value) -> Vec<String> {
        let mut v: Vec<String> = self
            .get(class, "allowed_operations", r)
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    }

    fn start(&self, vm: &Value) {
        self.ok(
            "VM.start",
            &[vm.clone(), Value::Bool(false), Value::Bool(false)],
        );
    }

    fn network(&self) -> Value {
        self.ok("network.create", &[rec(&[("name_label", Value::str("n"))])])
    }

    fn vdi(&self) -> Value {
        let sr = self.ok("SR.get_all", &[]).as_array().unwrap()[0].clone();
        self.ok(
            "VDI.create",
            &[rec(&[("SR", sr), ("virtual_size", Value::str("1024"))])],
        )
    }
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap().to_owned()
}

/// `xapi_vm_lifecycle.ml`: `update_allowed_operations` lists every operation (but
/// `ignored_ops`) that `check_operation_error` allows; the power states come from
/// `allowed_power_states`. The list changes with the power state.
#[test]
fn vm_allowed_operations_follow_xapis_power_state_table() {
    let t = T::new();
    let vm = t.vm();
    let halted = sorted(&[
        "snapshot",
        "clone",
        "copy",
        "start",
        "start_on",
        "changing_dynamic_range",
        "changing_static_range",
        "changing_shadow_memory",
        "changing_NVRAM",
        "make_into_template",
        "migrate_send",
        "export",
        "metadata_export",
        "destroy",
        "create_vtpm",
    ]);
    assert_eq!(t.allowed("VM", &vm), halted);
    t.start(&vm);
    let running = t.allowed("VM", &vm);
    for op in [
        "clean_shutdown",
        "hard_shutdown",
        "clean_reboot",
        "hard_reboot",
        "pause",
        "suspend",
        "checkpoint",
        "snapshot",
        "changing_dynamic_range",
        "changing_VCPUs_live",
        "pool_migrate",
    ] {
        assert!(running.contains(&op.to_owned()), "{op} in {running:?}");
    }
    for op in ["start", "destroy", "unpause", "resume", "clone", "export"] {
        assert!(!running.contains(&op.to_owned()), "{op} in {running:?}");
    }
    t.ok("VM.pause", &[vm.clone()]);
    let paused = t.allowed("VM", &vm);
    for op in ["unpause", "hard_shutdown", "hard_reboot", "checkpoint"] {
        assert!(paused.contains(&op.to_owned()), "{op} in {paused:?}");
    }
    for op in ["pause", "clean_shutdown", "start", "destroy"] {
        assert!(!paused.contains(&op.to_owned()), "{op} in {paused:?}");
    }
    t.ok("VM.hard_shutdown", &[vm.clone()]);
    assert_eq!(t.allowed("VM", &vm), halted);
    // get_record carries the same list.
    let r = t.ok("VM.get_record", &[vm.clone()]);
    assert_eq!(
        r.as_struct().unwrap()["allowed_operations"]
            .as_array()
            .unwrap()
            .len(),
        halted.len()
    );
}

/// `xapi_vm_lifecycle.ml` `report_power_state_error`: `VM_BAD_POWER_STATE [ref, expected
/// states joined by ", ", actual]`, checked before anything else but `blocked_operations`.
#[test]
fn operations_not_allowed_fail_with_xapis_power_state_parameters() {
    let t = T::new();
    let vm = t.vm();
    let v = str_of(&vm);
    let cases: [(&str, &str); 4] = [
        ("VM.clean_shutdown", "running"),
        ("VM.hard_shutdown", "paused, suspended, running"),
        ("VM.unpause", "paused"),
        ("VM.hard_reboot", "paused, running"),
    ];
    for (m, expected) in cases {
        let e = t.err(m, &[vm.clone()]);
        assert_eq!(e.code, "VM_BAD_POWER_STATE", "{m}");
        assert_eq!(e.params, [v.as_str(), expected, "halted"], "{m}");
    }
    t.start(&vm);
    let e = t.err("VM.destroy", &[vm.clone()]);
    assert_eq!(e.code, "VM_BAD_POWER_STATE");
    assert_eq!(e.params, [v.as_str(), "halted, suspended", "running"]);
    let e = t.err(
        "VM.start",
        &[vm.clone(), Value::Bool(false), Value::Bool(false)],
    );
    assert_eq!(e.params, [v.as_str(), "halted", "running"]);
    // assert_operation_valid answers the same without running anything.
    let e = t.err(
        "VM.assert_operation_valid",
        &[vm.clone(), Value::str("start")],
    );
    assert_eq!(e.params, [v.as_str(), "halted", "running"]);
    t.ok(
        "VM.assert_operation_valid",
        &[vm.clone(), Value::str("pause")],
    );
    // message_forwarding.ml `set_is_a_template`: the `make_into_template` operation.
    let e = t.err("VM.set_is_a_template", &[vm.clone(), Value::Bool(true)]);
    assert_eq!(e.params, [v.as_str(), "halted", "running"]);
    assert_eq!(t.get("VM", "is_a_template", &vm), Value::Bool(false));
    assert_eq!(
        t.err("VM.assert_operation_valid", &[vm, Value::str("fly")])
            .code,
        "FIELD_TYPE_ERROR"
    );
}

/// `xapi_vm_lifecycle.ml` `check_operation_error`: a key of `blocked_operations` fails
/// with `OPERATION_BLOCKED [ref, value]` before any other check; `message_forwarding.ml`
/// recomputes `allowed_operations` when the map changes.
#[test]
fn blocked_operations_are_enforced_with_the_stored_reason() {
    let t = T::new();
    let vm = t.vm();
    t.ok(
        "VM.add_to_blocked_operations",
        &[vm.clone(), Value::str("start"), Value::str("MY_REASON")],
    );
    assert!(!t.allowed("VM", &vm).contains(&"start".to_owned()));
    let e = t.err(
        "VM.start",
        &[vm.clone(), Value::Bool(false), Value::Bool(false)],
    );
    assert_eq!(e.code, "OPERATION_BLOCKED");
    assert_eq!(e.params, [str_of(&vm), "MY_REASON".to_owned()]);
    // Blocked comes first: even in the wrong power state the block is reported.
    t.ok(
        "VM.add_to_blocked_operations",
        &[vm.clone(), Value::str("clean_shutdown"), Value::str("no")],
    );
    assert_eq!(
        t.err("VM.clean_shutdown", &[vm.clone()]).code,
        "OPERATION_BLOCKED"
    );
    assert_eq!(t.get("VM", "power_state", &vm), Value::str("Halted"));
    t.ok(
        "VM.remove_from_blocked_operations",
        &[vm.clone(), Value::str("start")],
    );
    assert!(t.allowed("VM", &vm).contains(&"start".to_owned()));
    t.start(&vm);
    assert_eq!(t.get("VM", "power_state", &vm), Value::str("Running"));
}

/// `xapi_vm_helpers.ml` `with_vm_operation`: while an operation runs its task is in
/// `current_operations` and `allowed_operations` shrinks to what `is_allowed_concurrently`
/// permits; `report_concurrent_operations_error` gives `OTHER_OPERATION_IN_PROGRESS
/// ["VM", ref, op, task]`. A conflicting call waits (`Helpers.retry_with_global_lock`,
/// `Policy.standard`) and is checked again when the first finishes.
#[test]
fn current_operations_hold_the_running_task_and_conflicts_are_reported() {
    let t = T::new();
    let vm = t.vm();
    t.start(&vm);
    t.be.sim_guests()
        .unwrap()
        .set_answer(ShutdownAnswer::After(Duration::from_millis(800)));
    let task = t.ok("Async.VM.clean_shutdown", &[vm.clone()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let current = loop {
        let c = t.get("VM", "current_operations", &vm);
        if !c.as_struct().unwrap().is_empty() {
            break c;
        }
        assert!(Instant::now() < deadline, "no current operation seen");
        std::thread::sleep(Duration::from_millis(5));
    };
    let current = current.as_struct().unwrap();
    assert_eq!(current.len(), 1);
    assert_eq!(
        current.get(task.as_str().unwrap()),
        Some(&Value::str("clean_shutdown"))
    );
    // hard_shutdown may run alongside a clean shutdown; pause may not.
    let allowed = t.allowed("VM", &vm);
    assert!(allowed.contains(&"hard_shutdown".to_owned()), "{allowed:?}");
    assert!(!allowed.contains(&"pause".to_owned()), "{allowed:?}");
    let e = t.err(
        "VM.assert_operation_valid",
        &[vm.clone(), Value::str("pause")],
    );
    assert_eq!(e.code, "OTHER_OPERATION_IN_PROGRESS");
    assert_eq!(
        e.params,
        [
            "VM".to_owned(),
            str_of(&vm),
            "clean_shutdown".to_owned(),
            str_of(&task)
        ]
    );
    // A synchronous pause waits for the shutdown, then meets the new power state.
    let e = t.err("VM.pause", &[vm.clone()]);
    assert_eq!(e.code, "VM_BAD_POWER_STATE");
    assert_eq!(e.params[2], "halted");
    // The task records its outcome right after the VM is released.
    while t.get("task", "status", &task) == Value::str("pending") {
        assert!(Instant::now() < deadline, "task still pending");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(t.get("task", "status", &task), Value::str("success"));
    assert!(t
        .get("VM", "current_operations", &vm)
        .as_struct()
        .unwrap()
        .is_empty());
    assert!(t.allowed("VM", &vm).contains(&"start".to_owned()));
}

/// `xapi_vm_lifecycle.ml` `check_template`: a template allows the memory and VCPU changes,
/// clone, copy, export, provision, and destroy and migrate_send (not for default
/// templates); anything else is `VM_IS_TEMPLATE [ref, op]`.
#[test]
fn templates_refuse_start_as_xapi_does() {
    let t = T::new();
    let vm = t.vm_with(&[("is_a_template", Value::Bool(true))]);
    let e = t.err(
        "VM.start",
        &[vm.clone(), Value::Bool(false), Value::Bool(false)],
    );
    assert_eq!(e.code, "VM_IS_TEMPLATE");
    assert_eq!(e.params, [str_of(&vm), "start".to_owned()]);
    let allowed = t.allowed("VM", &vm);
    assert_eq!(
        allowed,
        sorted(&[
            "changing_dynamic_range",
            "changing_static_range",
            "changing_shadow_memory",
            "changing_NVRAM",
            "clone",
            "copy",
            "export",
            "metadata_export",
            "provision",
            "destroy",
            "migrate_send",
        ])
    );
    // A default template cannot be destroyed.
    t.ok(
        "VM.add_to_other_config",
        &[
            vm.clone(),
            Value::str("default_template"),
            Value::str("true"),
        ],
    );
    // Already a template: make_into_template is refused too.
    let e = t.err("VM.set_is_a_template", &[vm.clone(), Value::Bool(true)]);
    assert_eq!(e.params, [str_of(&vm), "make_into_template".to_owned()]);
    let e = t.err("VM.destroy", &[vm.clone()]);
    assert_eq!(e.params, [str_of(&vm), "destroy".to_owned()]);
    // Made a VM again, it starts.
    t.ok("VM.set_is_a_template", &[vm.clone(), Value::Bool(false)]);
    assert!(t.allowed("VM", &vm).contains(&"start".to_owned()));
    t.start(&vm);
}

/// `xapi_vm.ml` `create` adds a random `mac_seed` to `other_config`;
/// `xapi_vif_helpers.ml` `create` derives an empty MAC with `gen_mac (device, seed)` and
/// marks it autogenerated. The expected MACs were computed independently (Python's
/// hashlib MD5, same chain).
#[test]
fn mac_seed_and_macs_derived_as_xapi_derives_them() {
    let seed = "a1b2c3d4-0000-4000-8000-000000000001";
    assert_eq!(gen_mac(0, seed), "c2:91:00:e8:e8:7d");
    assert_eq!(gen_mac(3, seed), "3a:cb:86:be:d5:10");
    let t = T::new();
    let vm = t.vm();
    let oc = t.get("VM", "other_config", &vm);
    let got = str_of(&oc.as_struct().unwrap()["mac_seed"]);
    assert!(uuid::Uuid::parse_str(&got).is_ok(), "{got}");
    // A given seed is kept.
    let vm = t.vm_with(&[("other_config", rec(&[("mac_seed", Value::str(seed))]))]);
    let net = t.network();
    let vif = t.ok(
        "VIF.create",
        &[rec(&[
            ("VM", vm.clone()),
            ("network", net.clone()),
            ("device", Value::str("3")),
        ])],
    );
    assert_eq!(t.get("VIF", "MAC", &vif), Value::str("3a:cb:86:be:d5:10"));
    assert_eq!(t.get("VIF", "MAC_autogenerated", &vif), Value::Bool(true));
    let vif = t.ok(
        "VIF.create",
        &[rec(&[
            ("VM", vm),
            ("network", net),
            ("device", Value::str("0")),
            ("MAC", Value::str("02:00:00:00:00:01")),
        ])],
    );
    assert_eq!(t.get("VIF", "MAC", &vif), Value::str("02:00:00:00:00:01"));
    assert_eq!(t.get("VIF", "MAC_autogenerated", &vif), Value::Bool(false));
}

/// `xapi_vif_helpers.ml` `create` (`valid_device`, `INVALID_DEVICE [device]`, unique
/// device `DEVICE_ALREADY_EXISTS [device]`) and `xapi_vbd.ml` `create` (the same for
/// `userdevice`).
#[test]
fn device_validation_for_vifs_and_vbds() {
    let t = T::new();
    let vm = t.vm();
    let net = t.network();
    let vif = |dev: &str| {
        t.call(
            "VIF.create",
            &[rec(&[
                ("VM", vm.clone()),
                ("network", net.clone()),
                ("device", Value::str(dev)),
            ])],
        )
    };
    let e = vif("eth0").unwrap_err();
    assert_eq!(
        (e.code.as_str(), e.params.clone()),
        ("INVALID_DEVICE", vec!["eth0".to_owned()])
    );
    vif("1").unwrap();
    let e = vif("1").unwrap_err();
    assert_eq!(
        (e.code.as_str(), e.params.clone()),
        ("DEVICE_ALREADY_EXISTS", vec!["1".to_owned()])
    );
    assert_eq!(t.get("VM", "VIFs", &vm).as_array().unwrap().len(), 1);
    let vbd = |ud: &str| {
        let vdi = t.vdi();
        t.call(
            "VBD.create",
            &[rec(&[
                ("VM", vm.clone()),
                ("VDI", vdi),
                ("userdevice", Value::str(ud)),
            ])],
        )
    };
    let e = vbd("xvda").unwrap_err();
    assert_eq!(
        (e.code.as_str(), e.params.clone()),
        ("INVALID_DEVICE", vec!["xvda".to_owned()])
    );
    vbd("2").unwrap();
    let e = vbd("2").unwrap_err();
    assert_eq!(
        (e.code.as_str(), e.params.clone()),
        ("DEVICE_ALREADY_EXISTS", vec!["2".to_owned()])
    );
    assert_eq!(t.get("VM", "VBDs", &vm).as_array().unwrap().len(), 1);
}

/// Destroy rules: `xapi_vbd_helpers.ml` `destroy` (attached or reserved:
/// `OPERATION_NOT_ALLOWED ["VBD '<uuid>' still attached to '<vm uuid>'"]`),
/// `xapi_vif_helpers.ml` `destroy` (attached to a running VM), and VM.destroy of a running
/// VM (`allowed_power_states` of `destroy`). Device `allowed_operations` follow
/// `valid_operations` of both helpers.
#[test]
fn destroy_rules_for_devices_and_running_vms() {
    let t = T::new();
    let vm = t.vm();
    let net = t.network();
    let vif = t.ok(
        "VIF.create",
        &[rec(&[
            ("VM", vm.clone()),
            ("network", net),
            ("device", Value::str("0")),
        ])],
    );
    let vdi = t.vdi();
    let vbd = t.ok(
        "VBD.create",
        &[rec(&[
            ("VM", vm.clone()),
            ("VDI", vdi),
            ("type", Value::str("Disk")),
        ])],
    );
    // Halted: attach only (plug/unplug need a running VM).
    assert_eq!(t.allowed("VIF", &vif), sorted(&["attach"]));
    assert_eq!(t.allowed("VBD", &vbd), sorted(&["attach"]));
    t.start(&vm);
    assert_eq!(t.allowed("VIF", &vif), sorted(&["attach", "unplug"]));
    assert_eq!(
        t.allowed("VBD", &vbd),
        sorted(&["attach", "unplug", "unplug_force", "pause", "unpause"])
    );
    let e = t.err("VBD.destroy", &[vbd.clone()]);
    assert_eq!(e.code, "OPERATION_NOT_ALLOWED");
    assert_eq!(
        e.params,
        [format!(
            "VBD '{}' still attached to '{}'",
            str_of(&t.get("VBD", "uuid", &vbd)),
            str_of(&t.get("VM", "uuid", &vm))
        )]
    );
    let e = t.err("VIF.destroy", &[vif.clone()]);
    assert_eq!(e.code, "OPERATION_NOT_ALLOWED");
    assert_eq!(e.params, ["VIF currently attached to a running VM"]);
    assert_eq!(
        t.err("VM.destroy", &[vm.clone()]).code,
        "VM_BAD_POWER_STATE"
    );
    // Nothing was lost.
    assert_eq!(t.get("VM", "VIFs", &vm).as_array().unwrap().len(), 1);
    assert_eq!(t.get("VM", "VBDs", &vm).as_array().unwrap().len(), 1);
    t.ok("VM.hard_shutdown", &[vm.clone()]);
    assert_eq!(t.allowed("VBD", &vbd), sorted(&["attach"]));
    t.ok("VIF.destroy", &[vif]);
    t.ok("VBD.destroy", &[vbd]);
    t.ok("VM.destroy", &[vm]);
}

/// `xapi_event.ml` `Subscription`: `"vm/<ref>"` selects that object only (`object_matches`);
/// `valid_ref_counts` holds every table, lower case, with its number of rows (`from_inner`).
/// `current_operations` changes are seen as events, as XAPI writes them to the database.
#[test]
fn event_from_per_object_subscriptions_and_valid_ref_counts() {
    let t = T::new();
    let (a, b) = (t.vm(), t.vm());
    let from = |classes: &[&str], token: &str| {
        t.ok(
            "event.from",
            &[
                Value::Array(classes.iter().map(|c| Value::str(*c)).collect()),
                Value::str(token),
                Value::Double(1.0),
            ],
        )
    };
    let sub = format!("vm/{}", str_of(&a));
    let r = from(&[&sub], "");
    let r = r.as_struct().unwrap();
    let refs: Vec<String> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| str_of(&e.as_struct().unwrap()["ref"]))
        .collect();
    assert_eq!(refs, [str_of(&a)]);
    let counts = r["valid_ref_counts"].as_struct().unwrap();
    let vms = t.ok("VM.get_all", &[]).as_array().unwrap().len() as i64;
    assert_eq!(counts["vm"], Value::Int(vms));
    assert_eq!(counts["vif"], Value::Int(0));
    assert!(counts.contains_key("host") && counts.contains_key("task"));
    // A change to b is not delivered to a's subscriber; a change to a is.
    let token = str_of(&r["token"]);
    t.ok("VM.set_name_label", &[b.clone(), Value::str("b2")]);
    let r = from(&[&sub], &token);
    assert!(r.as_struct().unwrap()["events"]
        .as_array()
        .unwrap()
        .is_empty());
    let token = str_of(&r.as_struct().unwrap()["token"]);
    t.start(&a);
    let r = from(&[&sub], &token);
    let events = r.as_struct().unwrap()["events"]
        .as_array()
        .unwrap()
        .to_vec();
    assert!(!events.is_empty());
    for e in &events {
        assert_eq!(str_of(&e.as_struct().unwrap()["ref"]), str_of(&a));
    }
    // The last snapshot shows the VM running with its new allowed operations.
    let snap = events.last().unwrap().as_struct().unwrap()["snapshot"].clone();
    let snap = snap.as_struct().unwrap();
    assert_eq!(snap["power_state"], Value::str("Running"));
    let allowed = snap["allowed_operations"].as_array().unwrap();
    assert!(allowed.contains(&Value::str("clean_shutdown")));
}

/// `xapi_host_helpers.ml` `valid_operations`: an enabled, live host without a power-on
/// plugin allows everything but reboot, shutdown, apply_updates (HOST_NOT_DISABLED) and
/// power_on (HOST_IS_LIVE).
#[test]
fn host_allowed_operations_are_xapis_for_an_enabled_live_host() {
    let t = T::new();
    let host = t.ok("host.get_all", &[]).as_array().unwrap()[0].clone();
    assert_eq!(
        t.allowed("host", &host),
        sorted(&[
            "provision",
            "evacuate",
            "vm_start",
            "vm_resume",
            "vm_migrate",
            "enable",
        ])
    );
}

/// A daemon stopped in the middle of an operation leaves its task in `current_operations`;
/// XAPI clears the operations of tasks that no longer exist at start (`cancel_tasks.ml`
/// `cleanup_db`, `Xapi_vm_lifecycle.cancel_tasks`), so the VM is not blocked forever.
#[test]
fn a_restart_clears_operations_of_tasks_that_died_with_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let vm = {
        let t = T::with_db(Db::open(dir.path()).unwrap());
        let vm = t.vm();
        let r = str_of(&vm);
        // What a crash during VM.start leaves in the database.
        t.x.db()
            .write(|tx| {
                tx.map_set(
                    &r,
                    "current_operations",
                    "OpaqueRef:dead",
                    Some(Value::str("start")),
                );
                tx.set(&r, "allowed_operations", Value::Array(Vec::new()));
                Ok::<_, ApiError>(())
            })
            .unwrap();
        assert_eq!(
            t.err(
                "VM.assert_operation_valid",
                &[vm.clone(), Value::str("start")]
            )
            .code,
            "OTHER_OPERATION_IN_PROGRESS"
        );
        vm
    };
    let t = T::with_db(Db::open(dir.path()).unwrap());
    assert!(t
        .get("VM", "current_operations", &vm)
        .as_struct()
        .unwrap()
        .is_empty());
    assert!(t.allowed("VM", &vm).contains(&"start".to_owned()));
    t.start(&vm);
}
