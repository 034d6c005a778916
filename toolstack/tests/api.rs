//! The XenAPI logic in process: lifecycle over xenctrl on the simulated host (xen-sim) with
//! our xenstored in process, relations, XAPI's checks, events, persistence.

#![allow(clippy::cloned_ref_to_slice_refs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use toolstack::api::{Credentials, Xapi};
use toolstack::backend::{Backend, ShutdownReason};
use toolstack::db::Db;
use toolstack::host::{self, HostConfig};
use toolstack::simguest::{ShutdownAnswer, SimGuests};
use toolstack::value::Value;
use toolstack::ApiError;
use xen_types::DomId;

const GIB: u64 = 1 << 30;

struct T {
    x: Arc<Xapi>,
    be: Arc<Backend>,
    s: Value,
}

impl T {
    fn new() -> T {
        let db = Db::in_memory();
        Self::with_db(db)
    }

    /// A 4 GiB simulated host, 1 GiB of it for dom0.
    fn with_db(db: Db) -> T {
        let be = Arc::new(Backend::simulated(4 * GIB, GIB, 4).unwrap());
        let cfg = HostConfig::simulated();
        host::bootstrap(&db, &cfg).unwrap();
        let x = Xapi::new(db, be.clone(), Credentials::new("root", "pw").unwrap()).unwrap();
        let s = x
            .call(
                "session.login_with_password",
                &[Value::str("root"), Value::str("pw")],
            )
            .unwrap();
        T { x, be, s }
    }

    fn set_shutdown_timeout(&self, d: Duration) {
        self.x
            .clean_shutdown_timeout_ms
            .store(d.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn guests(&self) -> &SimGuests {
        self.be.sim_guests().expect("a simulated host")
    }

    fn xs(&self, path: &str) -> Option<String> {
        self.be.xs_read(path).unwrap()
    }

    /// Domains other than dom0.
    fn domain_count(&self) -> usize {
        self.be.xen().list_domains().unwrap().len() - 1
    }

    fn call(&self, m: &str, args: &[Value]) -> Result<Value, ApiError> {
        let mut p = vec![self.s.clone()];
        p.extend_from_slice(args);
        self.x.call(m, &p)
    }

    fn ok(&self, m: &str, args: &[Value]) -> Value {
        self.call(m, args).unwrap_or_else(|e| panic!("{m}: {e}"))
    }

    fn err(&self, m: &str, args: &[Value]) -> ApiError {
        match self.call(m, args) {
            Ok(v) => panic!("{m} succeeded: {v:?}"),
            Err(e) => e,
        }
    }

    fn vm(&self, name: &str, mem: u64) -> Value {
        let m = Value::String(mem.to_string());
        self.ok(
            "VM.create",
            &[rec(&[
                ("name_label", Value::str(name)),
                ("memory_static_max", m.clone()),
                ("memory_dynamic_max", m.clone()),
                ("memory_dynamic_min", m),
                ("VCPUs_max", Value::str("2")),
                ("VCPUs_at_startup", Value::str("1")),
            ])],
        )
    }

    fn get(&self, class: &str, field: &str, r: &Value) -> Value {
        self.ok(&format!("{class}.get_{field}"), std::slice::from_ref(r))
    }
}

fn rec(pairs: &[(&str, Value)]) -> Value {
    Value::Struct(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

fn refs(v: &Value) -> Vec<Value> {
    v.as_array().unwrap().to_vec()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn start_writes_xenstore_and_shutdown_cleans_up() {
    let t = T::new();
    let vm = t.vm("a", GIB / 2);
    let net = t.ok("network.create", &[rec(&[("name_label", Value::str("n"))])]);
    let sr = refs(&t.ok("SR.get_all", &[]))[0].clone();
    let vdi = t.ok(
        "VDI.create",
        &[rec(&[("SR", sr), ("virtual_size", Value::str("1024"))])],
    );
    t.ok(
        "VBD.create",
        &[rec(&[
            ("VM", vm.clone()),
            ("VDI", vdi),
            ("userdevice", Value::str("0")),
        ])],
    );
    let vif = t.ok(
        "VIF.create",
        &[rec(&[
            ("VM", vm.clone()),
            ("network", net.clone()),
            ("device", Value::str("0")),
            ("MAC", Value::str("02:00:00:00:00:aa")),
        ])],
    );
    t.ok(
        "VM.start",
        &[vm.clone(), Value::Bool(false), Value::Bool(false)],
    );
    let domid: u16 = t
        .get("VM", "domid", &vm)
        .as_i64()
        .unwrap()
        .try_into()
        .unwrap();
    let uuid = t.get("VM", "uuid", &vm);
    let xs = |p: &str| t.xs(p);
    let dom = format!("/local/domain/{domid}");
    assert_eq!(xs(&format!("{dom}/name")).as_deref(), Some("a"));
    assert_eq!(
        xs(&format!("{dom}/vm")),
        Some(format!("/vm/{}", uuid.as_str().unwrap()))
    );
    assert_eq!(
        xs(&format!("{dom}/memory/target")),
        Some((GIB / 2 / 1024).to_string())
    );
    assert_eq!(
        xs(&format!("{dom}/device/vbd/51712/backend")),
        Some(format!("/local/domain/0/backend/vbd/{domid}/51712"))
    );
    assert_eq!(
        xs(&format!(
            "/local/domain/0/backend/vbd/{domid}/51712/frontend-id"
        )),
        Some(domid.to_string())
    );
    // Written by the toolstack through xenbus: both ends Initialising.
    for p in [
        format!("/local/domain/0/backend/vbd/{domid}/51712/state"),
        format!("{dom}/device/vbd/51712/state"),
    ] {
        assert_eq!(xs(&p).as_deref(), Some("1"), "{p}");
    }
    assert_eq!(
        xs(&format!("/local/domain/0/backend/vif/{domid}/0/mac")).as_deref(),
        Some("02:00:00:00:00:aa")
    );
    let bridge = t.get("network", "bridge", &net);
    assert_eq!(
        xs(&format!("/local/domain/0/backend/vif/{domid}/0/bridge")).as_deref(),
        bridge.as_str()
    );
    assert_eq!(
        xs(&format!("/vm/{}/uuid", uuid.as_str().unwrap())).as_deref(),
        uuid.as_str()
    );
    assert!(t.be.is_alive(DomId(domid)));
    assert_eq!(t.get("VIF", "currently_attached", &vif), Value::Bool(true));
    // An attached device cannot be destroyed.
    assert_eq!(
        t.err("VIF.destroy", &[vif.clone()]).code,
        "OPERATION_NOT_ALLOWED"
    );

    t.ok("VM.clean_shutdown", &[vm.clone()]);
    for p in [
        dom.clone(),
        format!("/local/domain/0/backend/vbd/{domid}"),
        format!("/local/domain/0/backend/vif/{domid}"),
        format!("/vm/{}", uuid.as_str().unwrap()),
    ] {
        assert_eq!(xs(&p), None, "{p} left behind");
    }
    assert_eq!(t.domain_count(), 0);
    t.ok("VIF.destroy", &[vif]);
}

#[test]
fn memory_accounting() {
    let t = T::new();
    // 4 GiB host, 1 GiB dom0: two 1.25 GiB VMs fit, a third does not.
    let size = GIB + GIB / 4;
    let vms: Vec<Value> = (0..3).map(|i| t.vm(&format!("m{i}"), size)).collect();
    let host = refs(&t.ok("host.get_all", &[]))[0].clone();
    let metrics = t.get("host", "metrics", &host);
    t.ok(
        "VM.start",
        &[vms[0].clone(), Value::Bool(false), Value::Bool(false)],
    );
    t.ok(
        "VM.start",
        &[vms[1].clone(), Value::Bool(true), Value::Bool(false)],
    );
    assert_eq!(t.get("VM", "power_state", &vms[1]), Value::str("Paused"));
    let e = t.err(
        "VM.start",
        &[vms[2].clone(), Value::Bool(false), Value::Bool(false)],
    );
    assert_eq!(e.code, "HOST_NOT_ENOUGH_FREE_MEMORY");
    assert_eq!(e.params, vec![size.to_string(), (GIB / 2).to_string()]);
    assert_eq!(
        t.get("host_metrics", "memory_free", &metrics),
        Value::String((GIB / 2).to_string())
    );
    assert_eq!(t.get("VM", "power_state", &vms[2]), Value::str("Halted"));
    // Paused VMs need a hard shutdown; freeing memory lets the third start.
    assert_eq!(
        t.err("VM.clean_shutdown", &[vms[1].clone()]).code,
        "VM_BAD_POWER_STATE"
    );
    t.ok("VM.hard_shutdown", &[vms[1].clone()]);
    t.ok(
        "VM.start",
        &[vms[2].clone(), Value::Bool(false), Value::Bool(false)],
    );
    assert_eq!(
        t.get("host_metrics", "memory_free", &metrics),
        Value::String((GIB / 2).to_string())
    );
    // Memory of a running VM cannot change.
    let e = t.err(
        "VM.set_memory_static_max",
        &[vms[2].clone(), Value::str("1")],
    );
    assert_eq!(
        e.params,
        vec![
            vms[2].as_str().unwrap().to_owned(),
            "halted".into(),
            "running".into()
        ]
    );
}

#[test]
fn domain_dying_on_its_own_is_noticed() {
    let t = T::new();
    t.x.spawn_monitor();
    let vm = t.vm("crashy", GIB / 4);
    t.ok(
        "VM.set_actions_after_crash",
        &[vm.clone(), Value::str("destroy")],
    );
    t.ok(
        "VM.start",
        &[vm.clone(), Value::Bool(false), Value::Bool(false)],
    );
    let domid = t.get("VM", "domid", &vm).as_i64().unwrap() as u16;
    t.guests()
        .shut_down_on_its_own(DomId(domid), ShutdownReason::Crash)
        .unwrap();
    wait_for("VM halted", || {
        t.get("VM", "power_state", &vm) == Value::str("Halted")
    });
    assert_eq!(t.get("VM", "domid", &vm), Value::str("-1"));
    assert_eq!(t.domain_count(), 0);

    // A guest-initiated reboot restarts it in a new domain.
    t.ok(
        "VM.start",
        &[vm.clone(), Value::Bool(false), Value::Bool(false)],
    );
    let first = t.get("VM", "domid", &vm).as_i64().unwrap() as u16;
    t.guests()
        .shut_down_on_its_own(DomId(first), ShutdownReason::Reboot)
        .unwrap();
    wait_for("VM restarted", || {
        let d = t.get("VM", "domid", &vm).as_i64().unwrap();
        d > 0 && d != i64::from(first) && t.get("VM", "power_state", &vm) == Value::str("Running")
    });
    // A guest that ignores the shutdown request makes clean_shutdown time out.
    t.set_shutdown_timeout(Duration::from_millis(200));
    t.guests().set_answer(ShutdownAnswer::Ignore);
    assert_eq!(
        t.err("VM.clean_shutdown", &[vm.clone()]).code,
        "VM_SHUTDOWN_TIMEOUT"
    );
    t.ok("VM.hard_shutdown", &[vm.clone()]);
    assert_eq!(t.get("VM", "power_state", &vm), Value::str("Halted"));
}

#[test]
fn relations_and_destroy_checks() {
    let t = T::new();
    let vm = t.vm("r", GIB / 4);
    let net = t.ok("network.create", &[rec(&[("name_label", Value::str("n"))])]);
    let net2 = t.ok(
        "network.create",
        &[rec(&[("name_label", Value::str("n2"))])],
    );
    let vif = t.ok(
        "VIF.create",
        &[rec(&[
            ("VM", vm.clone()),
            ("network", net.clone()),
            ("device", Value::str("0")),
        ])],
    );
    assert_eq!(refs(&t.get("network", "VIFs", &net)), vec![vif.clone()]);
    assert_eq!(refs(&t.get("VM", "VIFs", &vm)), vec![vif.clone()]);
    let e = t.err("network.destroy", &[net.clone()]);
    assert_eq!(
        (e.code.as_str(), e.params.clone()),
        (
            "NETWORK_CONTAINS_VIF",
            vec![vif.as_str().unwrap().to_owned()]
        )
    );
    // Wrong class, unknown ref, wrong types, bad MAC, duplicate device.
    assert_eq!(
        t.err("network.get_record", &[vm.clone()]).params[0],
        "network"
    );
    assert_eq!(
        t.err(
            "VIF.create",
            &[rec(&[
                ("VM", net2.clone()),
                ("network", net.clone()),
                ("device", Value::str("1"))
            ])]
        )
        .code,
        "HANDLE_INVALID"
    );
    assert_eq!(
        t.err("VM.set_VCPUs_max", &[vm.clone(), Value::Bool(true)])
            .code,
        "FIELD_TYPE_ERROR"
    );
    assert_eq!(
        t.err("VM.set_power_state", &[vm.clone(), Value::str("Running")])
            .code,
        "MESSAGE_METHOD_UNKNOWN"
    );
    assert_eq!(
        t.err("VM.get_record", &[]).code,
        "MESSAGE_PARAMETER_COUNT_MISMATCH"
    );
    let e = t.err(
        "VM.create",
        &[rec(&[
            ("memory_static_max", Value::str("1")),
            ("memory_dynamic_max", Value::str("2")),
        ])],
    );
    assert_eq!(e.code, "MEMORY_CONSTRAINT_VIOLATION");
    assert_eq!(
        t.x.call("VM.get_all", &[Value::str("OpaqueRef:x")])
            .unwrap_err()
            .code,
        "SESSION_INVALID"
    );
    assert_eq!(
        t.x.call("VM.get_all", &[Value::Int(3)]).unwrap_err().code,
        "SESSION_INVALID"
    );
    // Map and set fields.
    t.ok(
        "VM.add_to_other_config",
        &[vm.clone(), Value::str("a"), Value::str("1")],
    );
    assert_eq!(
        t.err(
            "VM.add_to_other_config",
            &[vm.clone(), Value::str("a"), Value::str("2")]
        )
        .code,
        "MAP_DUPLICATE_KEY"
    );
    t.ok(
        "VM.remove_from_other_config",
        &[vm.clone(), Value::str("a")],
    );
    t.ok("VM.add_tags", &[vm.clone(), Value::str("t1")]);
    assert_eq!(refs(&t.get("VM", "tags", &vm)), vec![Value::str("t1")]);
    // VM.destroy takes its devices along and unlinks them from the network.
    t.ok("VM.destroy", &[vm.clone()]);
    assert!(refs(&t.get("network", "VIFs", &net)).is_empty());
    assert_eq!(t.err("VIF.get_record", &[vif]).code, "HANDLE_INVALID");
    t.ok("network.destroy", &[net]);
    // The control domain stays.
    let dom0 = refs(&t.ok("VM.get_all", &[]))
        .into_iter()
        .find(|v| t.get("VM", "is_control_domain", v) == Value::Bool(true))
        .unwrap();
    // xapi_vm_lifecycle.ml `check_operation_error` checks the power state first: dom0 runs.
    assert_eq!(
        t.err("VM.destroy", &[dom0.clone()]).code,
        "VM_BAD_POWER_STATE"
    );
    assert_eq!(
        t.err("VM.hard_shutdown", &[dom0]).code,
        "OPERATION_NOT_ALLOWED"
    );
}

#[test]
fn vlans_bonds_gpus() {
    let t = T::new();
    let pifs = refs(&t.ok("PIF.get_all", &[]));
    let vnet = t.ok("network.create", &[rec(&[("name_label", Value::str("v"))])]);
    assert_eq!(
        t.err(
            "VLAN.create",
            &[pifs[0].clone(), Value::str("5000"), vnet.clone()]
        )
        .code,
        "VLAN_TAG_INVALID"
    );
    let vlan = t.ok(
        "VLAN.create",
        &[pifs[0].clone(), Value::str("42"), vnet.clone()],
    );
    let untagged = t.get("VLAN", "untagged_PIF", &vlan);
    assert_eq!(t.get("PIF", "VLAN", &untagged), Value::str("42"));
    assert_eq!(t.get("PIF", "VLAN_master_of", &untagged), vlan);
    assert_eq!(
        refs(&t.get("PIF", "VLAN_slave_of", &pifs[0])),
        vec![vlan.clone()]
    );
    assert_eq!(
        refs(&t.get("network", "PIFs", &vnet)),
        vec![untagged.clone()]
    );
    assert_eq!(
        t.err("network.destroy", &[vnet.clone()]).code,
        "NETWORK_CONTAINS_PIF"
    );
    assert_eq!(
        t.err(
            "Bond.create",
            &[
                vnet.clone(),
                Value::Array(vec![untagged.clone(), pifs[1].clone()]),
                Value::str(""),
                Value::str("lacp"),
                rec(&[])
            ]
        )
        .code,
        "PIF_IS_VLAN"
    );
    t.ok("VLAN.destroy", &[vlan]);
    t.ok("network.destroy", &[vnet]);

    let bnet = t.ok("network.create", &[rec(&[("name_label", Value::str("b"))])]);
    let one = Value::Array(vec![pifs[1].clone()]);
    assert_eq!(
        t.err(
            "Bond.create",
            &[
                bnet.clone(),
                one,
                Value::str(""),
                Value::str("lacp"),
                rec(&[])
            ]
        )
        .code,
        "PIF_BOND_NEEDS_MORE_MEMBERS"
    );
    let members = Value::Array(vec![pifs[1].clone(), pifs[2].clone()]);
    assert_eq!(
        t.err(
            "Bond.create",
            &[
                bnet.clone(),
                members.clone(),
                Value::str(""),
                Value::str("round-robin"),
                rec(&[])
            ]
        )
        .code,
        "VALUE_NOT_SUPPORTED"
    );
    let bond = t.ok(
        "Bond.create",
        &[
            bnet.clone(),
            members,
            Value::str(""),
            Value::str("balance-slb"),
            rec(&[]),
        ],
    );
    let master = t.get("Bond", "master", &bond);
    assert_eq!(t.get("PIF", "MAC", &master), t.get("PIF", "MAC", &pifs[1]));
    assert_eq!(t.get("PIF", "bond_slave_of", &pifs[2]), bond);
    assert_eq!(
        refs(&t.get("PIF", "bond_master_of", &master)),
        vec![bond.clone()]
    );
    t.ok("Bond.destroy", &[bond]);
    assert_eq!(
        t.get("PIF", "bond_slave_of", &pifs[2]),
        Value::str("OpaqueRef:NULL")
    );
    assert_eq!(t.err("PIF.get_record", &[master]).code, "HANDLE_INVALID");

    let pgpu = refs(&t.ok("PGPU.get_all", &[]))[0].clone();
    let group = t.get("PGPU", "GPU_group", &pgpu);
    assert_eq!(
        refs(&t.get("GPU_group", "PGPUs", &group)),
        vec![pgpu.clone()]
    );
    assert_eq!(
        t.err("GPU_group.destroy", &[group.clone()]).code,
        "GPU_GROUP_CONTAINS_PGPU"
    );
    let ty = refs(&t.get("PGPU", "supported_VGPU_types", &pgpu))[0].clone();
    let vm = t.vm("g", GIB / 4);
    let vgpu = t.ok(
        "VGPU.create",
        &[
            vm.clone(),
            group.clone(),
            Value::str("0"),
            rec(&[]),
            ty.clone(),
        ],
    );
    assert_eq!(refs(&t.get("VM", "VGPUs", &vm)), vec![vgpu.clone()]);
    assert_eq!(refs(&t.get("VGPU_type", "VGPUs", &ty)), vec![vgpu.clone()]);
    assert_eq!(refs(&t.get("GPU_group", "VGPUs", &group)), vec![vgpu]);
}

#[test]
fn event_from_tokens_and_timeouts() {
    let t = T::new();
    let all = t.ok(
        "event.from",
        &[
            Value::Array(vec![Value::str("*")]),
            Value::str(""),
            Value::Double(0.0),
        ],
    );
    let token = all.as_struct().unwrap()["token"].clone();
    assert!(all.as_struct().unwrap()["events"].as_array().unwrap().len() > 10);
    // Nothing new: returns empty after the timeout, same token.
    let r = t.ok(
        "event.from",
        &[
            Value::Array(vec![Value::str("vm")]),
            token.clone(),
            Value::Double(0.05),
        ],
    );
    assert!(r.as_struct().unwrap()["events"]
        .as_array()
        .unwrap()
        .is_empty());
    // A change on another thread wakes a waiting caller.
    let x = Arc::clone(&t.x);
    let s = t.s.clone();
    let waiter = std::thread::spawn(move || {
        x.call(
            "event.from",
            &[
                s,
                Value::Array(vec![Value::str("network")]),
                token,
                Value::Double(30.0),
            ],
        )
        .unwrap()
    });
    let net = t.ok(
        "network.create",
        &[rec(&[("name_label", Value::str("ev"))])],
    );
    let r = waiter.join().unwrap();
    let evs = r.as_struct().unwrap()["events"]
        .as_array()
        .unwrap()
        .to_vec();
    assert_eq!(evs.len(), 1);
    let e = evs[0].as_struct().unwrap();
    assert_eq!(
        (e["class"].clone(), e["operation"].clone(), e["ref"].clone()),
        (Value::str("network"), Value::str("add"), net.clone())
    );
    let token = r.as_struct().unwrap()["token"].clone();
    t.ok("network.destroy", &[net.clone()]);
    let r = t.ok(
        "event.from",
        &[
            Value::Array(vec![Value::str("network")]),
            token,
            Value::Double(1.0),
        ],
    );
    let e = r.as_struct().unwrap()["events"].as_array().unwrap()[0]
        .as_struct()
        .unwrap()
        .clone();
    assert_eq!(
        (e["operation"].clone(), e["ref"].clone()),
        (Value::str("del"), net)
    );
    assert_eq!(
        t.err(
            "event.from",
            &[
                Value::Array(vec![]),
                Value::str("garbage"),
                Value::Double(0.0)
            ]
        )
        .code,
        "EVENT_FROM_TOKEN_PARSE_FAILURE"
    );
    // event.register/next.
    assert_eq!(t.err("event.next", &[]).code, "SESSION_NOT_REGISTERED");
    t.ok("event.register", &[Value::Array(vec![Value::str("VM")])]);
    let vm = t.vm("n", GIB / 4);
    let evs = t.ok("event.next", &[]);
    assert_eq!(evs.as_array().unwrap()[0].as_struct().unwrap()["ref"], vm);
}

#[test]
fn database_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (vm, net) = {
        let t = T::with_db(Db::open(dir.path()).unwrap());
        let vm = t.vm("keep", GIB / 4);
        let net = t.ok(
            "network.create",
            &[rec(&[("name_label", Value::str("keep"))])],
        );
        t.ok(
            "VIF.create",
            &[rec(&[
                ("VM", vm.clone()),
                ("network", net.clone()),
                ("device", Value::str("0")),
            ])],
        );
        t.ok(
            "VM.start",
            &[vm.clone(), Value::Bool(false), Value::Bool(false)],
        );
        (vm, net)
    };
    let t = T::with_db(Db::open(dir.path()).unwrap());
    assert_eq!(t.get("VM", "name_label", &vm), Value::str("keep"));
    // A fresh simulated host has no domains: the VM is reconciled to Halted.
    assert_eq!(t.get("VM", "power_state", &vm), Value::str("Halted"));
    assert_eq!(refs(&t.get("network", "VIFs", &net)).len(), 1);
    // Exactly one host, pool and dom0 after a second bootstrap.
    assert_eq!(refs(&t.ok("host.get_all", &[])).len(), 1);
    assert_eq!(refs(&t.ok("pool.get_all", &[])).len(), 1);
    assert_eq!(refs(&t.ok("VM.get_all", &[])).len(), 2);
    // Sessions are not persistent.
    assert_eq!(refs(&t.ok("session.get_all", &[])).len(), 1);
}

#[test]
fn sysfs_discovery() {
    let root = tempfile::tempdir().unwrap();
    let sys = root.path().join("sys");
    let proc_ = root.path().join("proc");
    let w = |p: &std::path::Path, s: &str| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    };
    w(&sys.join("class/net/eth0/address"), "52:54:00:12:34:56\n");
    w(&sys.join("class/net/eth0/mtu"), "9000\n");
    std::fs::create_dir_all(sys.join("class/net/eth0/device")).unwrap();
    w(&sys.join("class/net/lo/address"), "00:00:00:00:00:00\n");
    w(&sys.join("class/net/virbr0/address"), "52:54:00:00:00:01\n");
    w(
        &sys.join("bus/pci/devices/0000:00:02.0/class"),
        "0x030000\n",
    );
    w(&sys.join("bus/pci/devices/0000:00:02.0/vendor"), "0x10de\n");
    w(&sys.join("bus/pci/devices/0000:00:02.0/device"), "0x1db4\n");
    w(
        &sys.join("bus/pci/devices/0000:00:03.0/class"),
        "0x020000\n",
    );
    w(
        &proc_.join("meminfo"),
        "MemTotal:       16384000 kB\nMemFree: 1 kB\n",
    );
    w(
        &proc_.join("cpuinfo"),
        "processor\t: 0\nmodel name\t: Test CPU\nprocessor\t: 1\n",
    );
    let cfg = HostConfig::from_sysfs(&sys, &proc_);
    assert_eq!(cfg.nics.len(), 1);
    assert_eq!(
        (
            cfg.nics[0].device.as_str(),
            cfg.nics[0].mac.as_str(),
            cfg.nics[0].mtu
        ),
        ("eth0", "52:54:00:12:34:56", 9000)
    );
    assert_eq!(cfg.gpus.len(), 1);
    assert_eq!(cfg.gpus[0].vendor_name, "NVIDIA Corporation");
    assert_eq!(cfg.memory_total, 16_384_000 * 1024);
    assert_eq!((cfg.cpu_count, cfg.cpu_model.as_str()), (2, "Test CPU"));
    let db = Db::in_memory();
    host::bootstrap(&db, &cfg).unwrap();
}

#[test]
fn lifecycle_over_xenctrl_and_xen_sim() {
    let t = T::new();
    let xb = t.be.clone();
    t.x.spawn_monitor();
    let free0 = xb.free_memory();
    assert_eq!(free0, 3 * GIB);
    let vm = t.vm("xs", GIB);
    let net = t.ok("network.create", &[rec(&[("name_label", Value::str("n"))])]);
    t.ok(
        "VIF.create",
        &[rec(&[
            ("VM", vm.clone()),
            ("network", net),
            ("device", Value::str("0")),
        ])],
    );
    t.ok(
        "VM.start",
        &[vm.clone(), Value::Bool(false), Value::Bool(false)],
    );
    let domid = DomId(t.get("VM", "domid", &vm).as_i64().unwrap() as u16);
    // xen-sim holds the domain, unpaused, with its memory.
    let info = xb.xen().domain_info(domid).unwrap();
    assert!(!info.paused());
    assert_eq!(info.tot_pages.bytes(), GIB);
    assert_eq!(xb.free_memory(), 2 * GIB);
    assert_eq!(
        t.xs(&format!("/local/domain/{}/device/vif/0/state", domid.0))
            .as_deref(),
        Some("1")
    );
    // Pause and unpause reach the hypervisor.
    t.ok("VM.pause", &[vm.clone()]);
    assert!(xb.xen().domain_info(domid).unwrap().paused());
    t.ok("VM.unpause", &[vm.clone()]);
    // Too big for what is left.
    let big = t.vm("big", 3 * GIB);
    let e = t.err(
        "VM.start",
        &[big.clone(), Value::Bool(false), Value::Bool(false)],
    );
    assert_eq!(e.code, "HOST_NOT_ENOUGH_FREE_MEMORY");
    // A kernel that does not exist: the start fails and leaves nothing behind.
    let bad = t.vm("bad", GIB / 4);
    t.ok(
        "VM.set_PV_kernel",
        &[bad.clone(), Value::str("/nonexistent/vmlinuz")],
    );
    let e = t.err(
        "VM.start",
        &[bad.clone(), Value::Bool(false), Value::Bool(false)],
    );
    assert_eq!(e.code, "INTERNAL_ERROR");
    assert!(e.params[0].contains("/nonexistent/vmlinuz"), "{e}");
    assert_eq!(t.get("VM", "power_state", &bad), Value::str("Halted"));
    assert_eq!(xb.free_memory(), 2 * GIB);
    // The guest crashes: noticed, memory back.
    t.ok(
        "VM.set_actions_after_crash",
        &[vm.clone(), Value::str("destroy")],
    );
    xb.xen()
        .shutdown(domid, xenctrl::ShutdownReason::Crash)
        .unwrap();
    wait_for("crashed VM halted", || {
        t.get("VM", "power_state", &vm) == Value::str("Halted")
    });
    assert_eq!(xb.free_memory(), free0);
    assert!(xb.xen().domain_info(domid).is_err());
    // Clean shutdown path.
    t.ok(
        "VM.start",
        &[vm.clone(), Value::Bool(false), Value::Bool(false)],
    );
    t.ok("VM.clean_shutdown", &[vm.clone()]);
    assert_eq!(xb.free_memory(), free0);
    assert_eq!(t.get("VM", "power_state", &vm), Value::str("Halted"));
}

#[test]
fn direct_get_all_records_encoding_matches_the_generic_one() {
    let t = T::new();
    t.vm("a<&>", GIB / 4);
    t.ok("network.create", &[rec(&[("name_label", Value::str("n"))])]);
    for class in ["VM", "network", "PIF", "host", "session"] {
        let m = format!("{class}.get_all_records");
        let fast =
            t.x.get_all_records_xml(&m, std::slice::from_ref(&t.s))
                .unwrap();
        let slow = toolstack::xmlrpc::encode_response(&toolstack::server::wrap_result(
            t.x.call(&m, std::slice::from_ref(&t.s)),
        ));
        assert_eq!(fast, slow, "{class}");
    }
    // Anything but a valid call goes the generic way (which produces the errors).
    assert!(t
        .x
        .get_all_records_xml("VM.get_all_records", &[Value::str("OpaqueRef:bad")])
        .is_none());
    assert!(t
        .x
        .get_all_records_xml("vm.get_all_records", std::slice::from_ref(&t.s))
        .is_none());
    assert!(t
        .x
        .get_all_records_xml("VM.get_all", std::slice::from_ref(&t.s))
        .is_none());
    assert!(t
        .x
        .get_all_records_xml("VM.get_all_records", &[t.s.clone(), t.s.clone()])
        .is_none());
}

mod hostile {
    use proptest::prelude::*;

    use super::*;

    fn server() -> &'static Arc<Xapi> {
        static X: std::sync::OnceLock<Arc<Xapi>> = std::sync::OnceLock::new();
        X.get_or_init(|| T::new().x)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever the body, the server answers with a well-formed response (the same
        /// property the `xapi_request` fuzz target checks).
        #[test]
        fn any_body_gets_a_well_formed_answer(body in prop::collection::vec(any::<u8>(), 0..300)) {
            let x = server();
            let out = toolstack::server::handle_xmlrpc(x, &body);
            prop_assert!(toolstack::xmlrpc::parse_response(&out).is_ok());
            let out = toolstack::server::handle_jsonrpc(x, &body);
            prop_assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok());
        }

        /// Well-formed calls with arbitrary methods and arguments: a XenAPI answer, never a
        /// panic or a transport fault.
        #[test]
        fn any_call_gets_a_xenapi_answer(
            class in prop::sample::select(vec!["VM", "network", "VIF", "Bond", "event", "session", "nope"]),
            msg in "[a-z_]{1,16}",
            args in prop::collection::vec(prop_oneof![
                Just(Value::str("OpaqueRef:NULL")),
                any::<i32>().prop_map(|i| Value::Int(i.into())),
                any::<bool>().prop_map(Value::Bool),
                "[ -~]{0,20}".prop_map(Value::String),
            ], 0..5),
        ) {
            let x = server();
            let body = toolstack::xmlrpc::encode_call(&format!("{class}.{msg}"), &args);
            let out = toolstack::server::handle_xmlrpc(x, body.as_bytes());
            let v = toolstack::xmlrpc::parse_response(&out).unwrap().unwrap();
            let status = v.as_struct().unwrap()["Status"].clone();
            prop_assert!(status == Value::str("Success") || status == Value::str("Failure"));
        }
    }
}

#[test]
fn sessions_are_capped_per_originator() {
    let t = T::new();
    const LIMIT: usize = 5;
    t.x.session_limit
        .store(LIMIT, std::sync::atomic::Ordering::Relaxed);
    let login = |orig: &str| {
        t.x.call(
            "session.login_with_password",
            &[
                Value::str("root"),
                Value::str("pw"),
                Value::str("2.21"),
                Value::str(orig),
            ],
        )
        .unwrap()
    };
    let first = login("leaky");
    let other = login("other");
    for _ in 0..LIMIT {
        login("leaky");
    }
    // The oldest session of the leaky client is gone; others are untouched.
    assert_eq!(
        t.x.call("VM.get_all", &[first]).unwrap_err().code,
        "SESSION_INVALID"
    );
    t.x.call("VM.get_all", &[other.clone()]).unwrap();
    t.x.call("session.logout", &[other.clone()]).unwrap();
    assert_eq!(
        t.x.call("VM.get_all", &[other]).unwrap_err().code,
        "SESSION_INVALID"
    );
    let n = refs(&t.ok("session.get_all", &[])).len();
    assert_eq!(n, LIMIT + 1); // + the test's own
}

/// Device directories carry libxl's permissions, read back through our xenstored with the
/// guest connected as its own domain id: the guest writes its frontend nodes and the
/// control node it answers on, and cannot write its backend's nodes nor the toolstack's.
#[test]
fn guest_writes_its_frontend_and_not_its_backend() {
    let t = T::new();
    let vm = t.vm("perm", GIB / 4);
    let net = t.ok("network.create", &[rec(&[("name_label", Value::str("n"))])]);
    t.ok(
        "VIF.create",
        &[rec(&[
            ("VM", vm.clone()),
            ("network", net),
            ("device", Value::str("0")),
        ])],
    );
    let sr = refs(&t.ok("SR.get_all", &[]))[0].clone();
    let vdi = t.ok(
        "VDI.create",
        &[rec(&[("SR", sr), ("virtual_size", Value::str("1024"))])],
    );
    t.ok("VBD.create", &[rec(&[("VM", vm.clone()), ("VDI", vdi)])]);
    t.ok(
        "VM.start",
        &[vm.clone(), Value::Bool(false), Value::Bool(false)],
    );
    let domid = DomId(t.get("VM", "domid", &vm).as_i64().unwrap() as u16);
    let guest = t.guests().xenstore(domid).expect("the guest's connection");
    let dom = format!("/local/domain/{}", domid.0);
    for (kind, devid) in [("vbd", 51712), ("vif", 0)] {
        let fe = format!("{dom}/device/{kind}/{devid}");
        let be = format!("/local/domain/0/backend/{kind}/{}/{devid}", domid.0);
        // The guest owns its frontend; dom0 (the backend domain) may read it.
        guest.write(&format!("{fe}/state"), "3").unwrap();
        guest.write(&format!("{fe}/ring-ref"), "8").unwrap();
        assert_eq!(t.xs(&format!("{fe}/ring-ref")).as_deref(), Some("8"));
        let perms = t.be.xenstore().get_perms(&fe).unwrap();
        assert_eq!(perms[0].domid, domid, "{fe} owner");
        assert!(perms[1..].iter().any(|p| p.domid == DomId(0)), "{perms:?}");
        // It may read the backend's directory but not write it.
        assert_eq!(
            guest.read_string(&format!("{be}/frontend-id")).unwrap(),
            domid.0.to_string()
        );
        let e = guest.write(&format!("{be}/state"), "4").unwrap_err();
        assert_eq!(e.errno(), Some(xen_types::Errno::EACCES), "{be}: {e}");
        assert_eq!(t.be.xenstore().get_perms(&be).unwrap()[0].domid, DomId(0));
    }
    // The toolstack's nodes are read-only to the guest; its control node is its own.
    assert!(guest.write(&format!("{dom}/name"), "x").is_err());
    assert_eq!(t.xs(&format!("{dom}/name")).as_deref(), Some("perm"));
    guest
        .write(&format!("{dom}/control/feature-poweroff"), "1")
        .unwrap();
    t.ok("VM.hard_shutdown", &[vm]);
}

/// `clean_shutdown` and `clean_reboot` wait for the guest up to the timeout and no longer: a
/// guest that answers within it stops cleanly, one that answers later or never makes the
/// call fail with `VM_SHUTDOWN_TIMEOUT` after the timeout, and leaves the VM running.
#[test]
fn clean_shutdown_times_out() {
    let t = T::new();
    let timeout = Duration::from_millis(400);
    t.set_shutdown_timeout(timeout);
    let vm = t.vm("slow", GIB / 4);
    let start = || {
        t.ok(
            "VM.start",
            &[vm.clone(), Value::Bool(false), Value::Bool(false)],
        );
        DomId(t.get("VM", "domid", &vm).as_i64().unwrap() as u16)
    };
    let timed = |m: &str| {
        let t0 = Instant::now();
        let r = t.call(m, std::slice::from_ref(&vm));
        (r, t0.elapsed())
    };

    // Within the timeout: the toolstack waited for the guest, which stopped by itself.
    let domid = start();
    t.guests()
        .set_answer(ShutdownAnswer::After(Duration::from_millis(150)));
    let (r, took) = timed("VM.clean_shutdown");
    r.unwrap();
    assert!(
        took >= Duration::from_millis(150),
        "returned after {took:?}"
    );
    assert_eq!(t.get("VM", "power_state", &vm), Value::str("Halted"));
    assert!(!t.be.is_alive(domid));

    // Later than the timeout, then never: the call fails at the timeout, not before, and
    // the guest keeps running with the request pending.
    for answer in [
        ShutdownAnswer::After(Duration::from_secs(3)),
        ShutdownAnswer::Ignore,
    ] {
        let domid = start();
        t.guests().set_answer(answer);
        for m in ["VM.clean_shutdown", "VM.clean_reboot"] {
            let (r, took) = timed(m);
            let e = r.unwrap_err();
            assert_eq!(e.code, "VM_SHUTDOWN_TIMEOUT", "{m}: {e}");
            assert!(took >= timeout, "{m} gave up after {took:?}");
            assert!(took < timeout * 5, "{m} waited {took:?}");
            assert_eq!(t.get("VM", "power_state", &vm), Value::str("Running"));
            assert!(t.be.is_alive(domid));
        }
        assert_eq!(
            t.xs(&format!("/local/domain/{}/control/shutdown", domid.0))
                .as_deref(),
            Some("reboot")
        );
        t.ok("VM.hard_shutdown", std::slice::from_ref(&vm));
    }
}

/// `event.from` reads the change log: after a token, each object changed since appears once,
/// with its latest change, in generation order; objects changed before the token, and
/// destroyed ones' earlier changes, do not.
#[test]
fn event_from_reports_each_change_once_in_order() {
    let t = T::new();
    let vms: Vec<Value> = (0..20).map(|i| t.vm(&format!("e{i}"), GIB / 8)).collect();
    let now = t.ok("event.get_current_id", &[]);
    let from = |token: &Value| {
        let r = t.ok(
            "event.from",
            &[
                Value::Array(vec![Value::str("vm")]),
                token.clone(),
                Value::Double(0.0),
            ],
        );
        let evs: Vec<(Value, Value, Value)> = r.as_struct().unwrap()["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let e = e.as_struct().unwrap();
                (e["ref"].clone(), e["operation"].clone(), e["id"].clone())
            })
            .collect();
        (evs, r.as_struct().unwrap()["token"].clone())
    };
    // Changed twice: reported once, with the second change.
    t.ok(
        "VM.set_name_description",
        &[vms[3].clone(), Value::str("a")],
    );
    t.ok(
        "VM.set_name_description",
        &[vms[7].clone(), Value::str("b")],
    );
    t.ok(
        "VM.set_name_description",
        &[vms[3].clone(), Value::str("c")],
    );
    t.ok("VM.destroy", &[vms[9].clone()]);
    let (evs, token) = from(&now);
    let got: Vec<(Value, Value)> = evs.iter().map(|(r, o, _)| (r.clone(), o.clone())).collect();
    assert_eq!(
        got,
        vec![
            (vms[7].clone(), Value::str("mod")),
            (vms[3].clone(), Value::str("mod")),
            (vms[9].clone(), Value::str("del")),
        ]
    );
    let ids: Vec<i64> = evs
        .iter()
        .map(|(_, _, id)| id.as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(t.get("VM", "name_description", &vms[3]), Value::str("c"));
    // Nothing since: nothing.
    assert!(from(&token).0.is_empty());
    // A new VM is an `add`.
    let v = t.vm("late", GIB / 8);
    let (evs, _) = from(&token);
    assert_eq!(evs.len(), 1);
    assert_eq!((evs[0].0.clone(), evs[0].1.clone()), (v, Value::str("add")));
}

#[test]
fn metrics_and_guest_agent_report_as_xapi() {
    let t = T::new();
    let vm = t.vm("metered", GIB / 4);
    t.ok(
        "VM.start",
        &[vm.clone(), Value::Bool(false), Value::Bool(false)],
    );
    let domid = DomId(t.get("VM", "domid", &vm).as_i64().unwrap() as u16);
    assert_eq!(
        t.get("VM", "resident_on", &vm),
        t.ok("host.get_all", &[]).as_array().unwrap()[0]
    );
    let m = t.get("VM", "metrics", &vm);
    assert_eq!(t.get("VM_metrics", "VCPUs_number", &m), Value::str("1"));
    assert_eq!(
        t.get("VM_metrics", "state", &m),
        Value::Array(vec![Value::str("running")])
    );
    let start = t.get("VM_metrics", "start_time", &m);
    assert!(
        matches!(&start, Value::DateTime(d) if !d.starts_with("1970")),
        "{start:?}"
    );
    let null = Value::str("OpaqueRef:NULL");
    assert_eq!(t.get("VM", "guest_metrics", &vm), null);

    let mut samples = toolstack::api::CpuSamples::default();
    t.x.refresh_metrics(&mut samples);
    let actual = t.get("VM_metrics", "memory_actual", &m).as_i64().unwrap();
    let info = t.be.xen().domain_info(domid).unwrap();
    assert_eq!(actual as u64, info.tot_pages.0 * 4096);
    assert!(actual > 0);

    // The guest's agent writes its report; nothing counts before `data/updated`.
    let g = t.guests().xenstore(domid).unwrap();
    let base = format!("/local/domain/{}", domid.0);
    for (k, v) in [
        ("attr/PVAddons/MajorVersion", "9"),
        ("attr/PVAddons/MinorVersion", "2"),
        ("attr/PVAddons/MicroVersion", "0"),
        ("data/os_name", "Debian GNU/Linux 12"),
        ("data/os_distro", "debian"),
        ("attr/vif/0/ipv4/0", "10.1.2.3"),
    ] {
        g.write(&format!("{base}/{k}"), v).unwrap();
    }
    t.x.refresh_metrics(&mut samples);
    assert_eq!(t.get("VM", "guest_metrics", &vm), null);
    g.write(&format!("{base}/data/updated"), "1").unwrap();
    t.x.refresh_metrics(&mut samples);
    let gm = t.get("VM", "guest_metrics", &vm);
    assert_ne!(gm, null);
    let os = t.get("VM_guest_metrics", "os_version", &gm);
    assert_eq!(
        os.as_struct().unwrap().get("distro"),
        Some(&Value::str("debian"))
    );
    let nets = t.get("VM_guest_metrics", "networks", &gm);
    assert_eq!(
        nets.as_struct().unwrap().get("0/ip"),
        Some(&Value::str("10.1.2.3"))
    );
    let pv = t.get("VM_guest_metrics", "PV_drivers_version", &gm);
    assert_eq!(pv.as_struct().unwrap().get("major"), Some(&Value::str("9")));
    assert_eq!(
        t.get("VM_guest_metrics", "PV_drivers_detected", &gm),
        Value::Bool(true)
    );
    let other = t.get("VM_guest_metrics", "other", &gm);
    assert!(
        other.as_struct().unwrap().contains_key("feature-poweroff"),
        "control/* keys in other: {other:?}"
    );
    // Two samples give a utilisation per vCPU, a fraction.
    let util = t.get("VM_metrics", "VCPUs_utilisation", &m);
    let u = util.as_struct().unwrap().get("0").cloned();
    assert!(
        matches!(u, Some(Value::Double(f)) if (0.0..=1.0).contains(&f)),
        "{util:?}"
    );

    // The monitor keeps it current: a new address shows up without a call.
    t.x.spawn_monitor();
    g.write(&format!("{base}/attr/vif/0/ipv4/0"), "10.9.9.9")
        .unwrap();
    wait_for("new address", || {
        t.get("VM_guest_metrics", "networks", &gm)
            .as_struct()
            .and_then(|n| n.get("0/ip").cloned())
            == Some(Value::str("10.9.9.9"))
    });

    // Halted: the guest metrics go, memory_actual is 0.
    t.ok("VM.hard_shutdown", &[vm.clone()]);
    assert_eq!(t.get("VM", "guest_metrics", &vm), null);
    assert_eq!(t.ok("VM_guest_metrics.get_all", &[]), Value::Array(vec![]));
    assert_eq!(t.get("VM_metrics", "memory_actual", &m), Value::str("0"));
    assert_eq!(t.get("VM", "resident_on", &vm), null);
}
