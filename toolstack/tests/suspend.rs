//! `VM.suspend` and `VM.resume` on the simulated host: the guest asked through
//! `control/shutdown`, its memory saved with the save stream into a suspend VDI of the
//! suspend SR (`VM.suspend_VDI` while Suspended, destroyed after the resume) and restored
//! into a new domain with its devices plugged again; the choice of the suspend SR; XAPI's
//! power-state checks and errors; a guest that never acknowledges; `Async.VM.*`; two
//! starts of one VM at once.

#![allow(clippy::cloned_ref_to_slice_refs)]

#[path = "common/api.rs"]
mod api;

use std::time::{Duration, Instant};

use api::{rec, GIB, T};
use toolstack::simguest::ShutdownAnswer;
use toolstack::value::Value;
use xen_types::mem::SharedMemoryExt;
use xen_types::{DomId, Pfn};

/// A simulated guest kernel, written once per test.
fn kernel(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("vmlinuz");
    std::fs::write(&path, xen_sim::domain::sample_kernel(4 << 20)).unwrap();
    path.display().to_string()
}

struct S {
    t: T,
    dir: tempfile::TempDir,
    kernel: String,
}

impl S {
    /// The host's local SR is a file SR in a temporary folder (as the daemon makes it).
    fn new() -> S {
        let t = T::new();
        let dir = tempfile::tempdir().unwrap();
        t.x.attach_local_sr(&dir.path().join("sr")).unwrap();
        let kernel = kernel(&dir);
        S { t, dir, kernel }
    }

    /// A VM of 256 MiB with the simulated kernel, a disk and a network card.
    fn vm(&self, name: &str) -> Value {
        let m = Value::String((GIB / 4).to_string());
        let vm = self.t.ok(
            "VM.create",
            &[rec(&[
                ("name_label", Value::str(name)),
                ("memory_static_max", m.clone()),
                ("memory_dynamic_max", m.clone()),
                ("memory_dynamic_min", m),
                ("VCPUs_max", Value::str("1")),
                ("VCPUs_at_startup", Value::str("1")),
                ("PV_kernel", Value::str(&self.kernel)),
            ])],
        );
        let net = self
            .t
            .ok("network.create", &[rec(&[("name_label", Value::str("n"))])]);
        self.t.ok(
            "VIF.create",
            &[rec(&[
                ("VM", vm.clone()),
                ("network", net),
                ("device", Value::str("0")),
                ("MAC", Value::str("00:16:3e:00:00:01")),
            ])],
        );
        let sr = self.t.ok("SR.get_all", &[]).as_array().unwrap()[0].clone();
        let vdi = self.t.ok(
            "VDI.create",
            &[rec(&[("SR", sr), ("virtual_size", Value::str("1048576"))])],
        );
        self.t.ok(
            "VBD.create",
            &[rec(&[
                ("VM", vm.clone()),
                ("VDI", vdi),
                ("userdevice", Value::str("0")),
            ])],
        );
        vm
    }

    fn get(&self, field: &str, vm: &Value) -> Value {
        self.t
            .ok(&format!("VM.get_{field}"), std::slice::from_ref(vm))
    }

    fn power(&self, vm: &Value) -> String {
        self.get("power_state", vm).as_str().unwrap().to_owned()
    }

    fn domid(&self, vm: &Value) -> i64 {
        self.get("domid", vm).as_i64().unwrap()
    }

    fn start(&self, vm: &Value) -> DomId {
        self.t.ok(
            "VM.start",
            &[vm.clone(), Value::Bool(false), Value::Bool(false)],
        );
        DomId(self.domid(vm) as u16)
    }

    fn resume(&self, vm: &Value) -> Result<Value, toolstack::ApiError> {
        self.t.call(
            "VM.resume",
            &[vm.clone(), Value::Bool(false), Value::Bool(false)],
        )
    }

    fn allowed(&self, vm: &Value) -> Vec<String> {
        self.get("allowed_operations", vm)
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    /// The VM's suspend VDI, `None` when it has none.
    fn suspend_vdi(&self, vm: &Value) -> Option<Value> {
        let v = self.get("suspend_VDI", vm);
        (v != Value::str("OpaqueRef:NULL")).then_some(v)
    }

    /// The VDIs of type `suspend`.
    fn suspend_vdis(&self) -> Vec<String> {
        let all = self.t.ok("VDI.get_all_records", &[]);
        all.as_struct()
            .unwrap()
            .iter()
            .filter(|(_, r)| r.as_struct().unwrap()["type"] == Value::str("suspend"))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The qcow2 image of a VDI of the local SR.
    fn image(&self, vdi: &Value) -> std::path::PathBuf {
        let uuid = self.t.ok("VDI.get_uuid", std::slice::from_ref(vdi));
        self.dir
            .path()
            .join("sr")
            .join(format!("{}.qcow2", uuid.as_str().unwrap()))
    }

    /// `len` bytes at `off` of a VDI's disk (its qcow2 image).
    fn read_vdi(&self, vdi: &Value, off: u64, len: usize) -> Vec<u8> {
        let img = sm::image::Image::open(&self.image(vdi), false).unwrap();
        let mut buf = vec![0; len];
        img.read(&mut buf, off).unwrap();
        buf
    }

    fn write_vdi(&self, vdi: &Value, off: u64, data: &[u8]) {
        let img = sm::image::Image::open(&self.image(vdi), true).unwrap();
        img.write(data, off).unwrap();
        img.flush().unwrap();
    }

    fn xs(&self, path: &str) -> Option<String> {
        self.t.be.xs_read(path).unwrap()
    }

    fn domains(&self) -> usize {
        self.t.be.xen().list_domains().unwrap().len() - 1
    }

    fn set_timeout(&self, d: Duration) {
        self.t
            .x
            .clean_shutdown_timeout_ms
            .store(d.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn suspend_saves_the_guest_and_resume_brings_it_back_in_a_new_domain() {
    let s = S::new();
    let vm = s.vm("sleepy");
    let first = s.start(&vm);
    assert!(s.allowed(&vm).contains(&"suspend".to_owned()));
    // The guest keeps something in its memory.
    let host = s.t.be.xen().sim_host().unwrap();
    let pfn: Pfn = host.alloc_pages(first, 1).unwrap()[0];
    host.guest_pages(first, &[pfn])
        .unwrap()
        .write_bytes(64, b"counter=17")
        .unwrap();
    let free_running = s.t.be.free_memory();

    s.t.ok("VM.suspend", &[vm.clone()]);
    assert_eq!(s.power(&vm), "Suspended");
    assert_eq!(s.domid(&vm), -1);
    assert_eq!(s.domains(), 0, "the domain is gone");
    assert_eq!(s.t.be.free_memory(), free_running + GIB / 4);
    // The image is in a new VDI of the pool's suspend SR, as XAPI makes it.
    let vdi = s
        .suspend_vdi(&vm)
        .expect("suspend_VDI is set while Suspended");
    let r = s.t.ok("VDI.get_record", std::slice::from_ref(&vdi));
    let r = r.as_struct().unwrap();
    let pool = s.t.ok("pool.get_all", &[]).as_array().unwrap()[0].clone();
    let suspend_sr = s.t.ok("pool.get_suspend_image_SR", &[pool]);
    assert_eq!(r["SR"], suspend_sr);
    assert_eq!(r["type"], Value::str("suspend"));
    assert_eq!(r["name_label"], Value::str("Suspend image"));
    let size = toolstack::api::suspend_image_size(GIB / 4);
    assert_eq!(r["virtual_size"], Value::str(size.to_string()));
    assert_eq!(
        r["sm_config"].as_struct().unwrap()["vmhint"],
        s.get("uuid", &vm)
    );
    assert_eq!(s.suspend_vdis(), [vdi.as_str().unwrap()]);
    let image = s.image(&vdi);
    assert!(image.exists());
    // Inside: xenopsd's signature and Libxc record, then the save stream.
    let head = s.read_vdi(&vdi, 0, 31);
    assert_eq!(&head[..15], toolstack::suspend_image::SIGNATURE);
    assert_eq!(head[15..23], 0xf0u64.to_le_bytes());
    assert_ne!(s.read_vdi(&vdi, 31, 4096), vec![0u8; 4096]);
    assert!(s.xs(&format!("/local/domain/{}", first.0)).is_none());
    assert!(s
        .xs(&format!("/local/domain/0/backend/vif/{}", first.0))
        .is_none());
    let ops = s.allowed(&vm);
    assert!(ops.contains(&"resume".to_owned()), "{ops:?}");
    assert!(!ops.contains(&"suspend".to_owned()), "{ops:?}");
    assert!(!ops.contains(&"start".to_owned()), "{ops:?}");

    s.resume(&vm).unwrap();
    assert_eq!(s.power(&vm), "Running");
    let second = DomId(s.domid(&vm) as u16);
    assert_ne!(second, first);
    assert_eq!(s.domains(), 1);
    assert_eq!(s.t.be.free_memory(), free_running);
    // Its memory came back at the same guest frame.
    let mut got = [0u8; 10];
    host.guest_pages(second, &[pfn])
        .unwrap()
        .read_bytes(64, &mut got)
        .unwrap();
    assert_eq!(&got, b"counter=17");
    // Its devices and rings were written again for the new domain.
    let dom = format!("/local/domain/{}", second.0);
    assert!(s.xs(&format!("{dom}/device/vif/0/backend")).is_some());
    assert!(s.xs(&format!("{dom}/device/vbd/51712/backend")).is_some());
    assert!(s
        .xs(&format!("/local/domain/0/backend/vif/{}/0/mac", second.0))
        .is_some_and(|m| m == "00:16:3e:00:00:01"));
    assert!(s.xs(&format!("{dom}/store/ring-ref")).is_some());
    assert!(s.xs(&format!("{dom}/console/port")).is_some());
    // Once it runs, the suspend VDI is destroyed and forgotten.
    assert_eq!(s.suspend_vdi(&vm), None);
    assert!(s.suspend_vdis().is_empty());
    assert_eq!(
        s.t.err("VDI.get_uuid", std::slice::from_ref(&vdi)).code,
        "HANDLE_INVALID"
    );
    assert!(!image.exists(), "its image is gone from the SR");
    // It runs on: a clean shutdown is answered by the resumed guest.
    s.t.ok("VM.clean_shutdown", &[vm.clone()]);
    assert_eq!(s.power(&vm), "Halted");
    assert_eq!(s.domains(), 0);
}

#[test]
fn a_guest_that_never_acknowledges_keeps_running() {
    let s = S::new();
    let vm = s.vm("deaf");
    let domid = s.start(&vm);
    s.set_timeout(Duration::from_millis(300));
    s.t.be
        .sim_guests()
        .unwrap()
        .set_answer(ShutdownAnswer::Ignore);
    let e = s.t.err("VM.suspend", &[vm.clone()]);
    assert_eq!(
        (e.code.as_str(), e.params.as_slice()),
        (
            "VM_FAILED_SUSPEND_ACKNOWLEDGMENT",
            &[vm.as_str().unwrap().to_owned()][..]
        )
    );
    // Nothing changed, the request was withdrawn, no image is left.
    assert_eq!(s.power(&vm), "Running");
    assert_eq!(s.domid(&vm), i64::from(domid.0));
    assert!(s.t.be.is_alive(domid));
    assert_eq!(
        s.xs(&format!("/local/domain/{}/control/shutdown", domid.0))
            .as_deref(),
        Some("")
    );
    assert_eq!(s.suspend_vdi(&vm), None);
    assert!(s.suspend_vdis().is_empty(), "the suspend VDI was destroyed");
    assert!(s.allowed(&vm).contains(&"suspend".to_owned()));
    // A guest that answers late but within the time: suspended.
    s.set_timeout(Duration::from_secs(10));
    s.t.be
        .sim_guests()
        .unwrap()
        .set_answer(ShutdownAnswer::After(Duration::from_millis(100)));
    s.t.ok("VM.suspend", &[vm.clone()]);
    assert_eq!(s.power(&vm), "Suspended");
    s.resume(&vm).unwrap();
    s.t.ok("VM.hard_shutdown", &[vm]);
}

#[test]
fn power_states_are_checked_as_xapi_does() {
    let s = S::new();
    let vm = s.vm("checked");
    let v = vm.as_str().unwrap().to_owned();
    let e = s.t.err("VM.suspend", &[vm.clone()]);
    assert_eq!(e.code, "VM_BAD_POWER_STATE");
    assert_eq!(e.params, [v.clone(), "running".into(), "halted".into()]);
    let e = s.resume(&vm).unwrap_err();
    assert_eq!(e.params, [v.clone(), "suspended".into(), "halted".into()]);
    s.start(&vm);
    let e = s.resume(&vm).unwrap_err();
    assert_eq!(e.params, [v.clone(), "suspended".into(), "running".into()]);
    s.t.ok("VM.pause", &[vm.clone()]);
    let e = s.t.err("VM.suspend", &[vm.clone()]);
    assert_eq!(e.params, [v.clone(), "running".into(), "paused".into()]);
    s.t.ok("VM.unpause", &[vm.clone()]);
    s.t.ok("VM.suspend", &[vm.clone()]);
    for op in ["VM.start", "VM.suspend", "VM.clean_shutdown", "VM.pause"] {
        let args = if op == "VM.start" {
            vec![vm.clone(), Value::Bool(false), Value::Bool(false)]
        } else {
            vec![vm.clone()]
        };
        let e = s.t.err(op, &args);
        assert_eq!(e.code, "VM_BAD_POWER_STATE", "{op}");
        assert_eq!(e.params[2], "suspended", "{op}");
    }
    // The control domain cannot be suspended.
    let dom0 =
        s.t.ok("VM.get_all", &[])
            .as_array()
            .unwrap()
            .iter()
            .find(|r| s.get("is_control_domain", r) == Value::Bool(true))
            .cloned()
            .unwrap();
    assert_eq!(s.t.err("VM.suspend", &[dom0]).code, "OPERATION_NOT_ALLOWED");
    // Not a suspend image: refused, nothing started, the VM stays Suspended with it.
    let vdi = s.suspend_vdi(&vm).unwrap();
    let kept = s.dir.path().join("kept.qcow2");
    std::fs::copy(s.image(&vdi), &kept).unwrap();
    s.write_vdi(&vdi, 0, b"garbage");
    let e = s.resume(&vm).unwrap_err();
    assert_eq!(e.code, "INTERNAL_ERROR");
    assert!(e.params[0].contains("not a valid signature"), "{e}");
    assert_eq!((s.power(&vm).as_str(), s.domains()), ("Suspended", 0));
    assert_eq!(s.suspend_vdi(&vm).as_ref(), Some(&vdi));
    // A corrupt stream behind good headers: the restore fails and leaves no domain.
    std::fs::copy(&kept, s.image(&vdi)).unwrap();
    s.write_vdi(&vdi, 31, &[0xff; 64]);
    let e = s.resume(&vm).unwrap_err();
    assert_eq!(e.code, "INTERNAL_ERROR", "{e}");
    assert_eq!((s.power(&vm).as_str(), s.domains()), ("Suspended", 0));
    assert_eq!(s.t.be.free_memory(), 3 * GIB, "no memory kept");
    std::fs::copy(&kept, s.image(&vdi)).unwrap();
    // A hard shutdown of a Suspended VM destroys its suspend VDI: Halted.
    s.t.ok("VM.hard_shutdown", &[vm.clone()]);
    assert_eq!(s.power(&vm), "Halted");
    assert_eq!(s.suspend_vdi(&vm), None);
    assert!(s.suspend_vdis().is_empty());
    // A suspend VDI destroyed by hand is forgotten (`Xapi_vdi.destroy`); the resume then
    // resets the VM to Halted and fails as XAPI does: VM_HAS_NO_SUSPEND_VDI ["VM", ref].
    s.start(&vm);
    s.t.ok("VM.suspend", &[vm.clone()]);
    let vdi = s.suspend_vdi(&vm).unwrap();
    s.t.ok("VDI.destroy", &[vdi]);
    assert_eq!(s.suspend_vdi(&vm), None);
    let e = s.resume(&vm).unwrap_err();
    assert_eq!(
        (e.code.as_str(), e.params.as_slice()),
        ("VM_HAS_NO_SUSPEND_VDI", &["VM".to_owned(), v.clone()][..])
    );
    assert_eq!((s.power(&vm).as_str(), s.domains()), ("Halted", 0));
}

#[test]
fn the_suspend_sr_is_the_vms_else_the_pools_else_the_hosts() {
    let s = S::new();
    let vm = s.vm("where");
    let local = s.t.ok("SR.get_all", &[]).as_array().unwrap()[0].clone();
    let pool = s.t.ok("pool.get_all", &[]).as_array().unwrap()[0].clone();
    let host = s.t.ok("host.get_all", &[]).as_array().unwrap()[0].clone();
    assert_eq!(
        s.t.ok("host.get_suspend_image_sr", std::slice::from_ref(&host)),
        local
    );
    // A second file SR on this host, named as the VM's own suspend SR.
    let other_dir = s.dir.path().join("other");
    let map = |pairs: &[(&str, &str)]| {
        rec(&pairs
            .iter()
            .map(|(k, v)| (*k, Value::str(*v)))
            .collect::<Vec<_>>())
    };
    let other = s.t.ok(
        "SR.create",
        &[
            host.clone(),
            map(&[("location", other_dir.to_str().unwrap())]),
            Value::str("0"),
            Value::str("other"),
            Value::str(""),
            Value::str("ext"),
            Value::str("user"),
            Value::Bool(false),
            map(&[]),
        ],
    );
    let sr_of = |vm: &Value| {
        let vdi = s.suspend_vdi(vm).unwrap();
        s.t.ok("VDI.get_SR", &[vdi])
    };
    s.t.ok("VM.set_suspend_SR", &[vm.clone(), other.clone()]);
    s.start(&vm);
    s.t.ok("VM.suspend", &[vm.clone()]);
    assert_eq!(sr_of(&vm), other);
    s.resume(&vm).unwrap();
    // Without it, the pool's; without that, the host's.
    s.t.ok(
        "VM.set_suspend_SR",
        &[vm.clone(), Value::str("OpaqueRef:NULL")],
    );
    s.t.ok("pool.set_suspend_image_SR", &[pool.clone(), other.clone()]);
    s.t.ok("VM.suspend", &[vm.clone()]);
    assert_eq!(sr_of(&vm), other);
    s.resume(&vm).unwrap();
    s.t.ok(
        "pool.set_suspend_image_SR",
        &[pool.clone(), Value::str("OpaqueRef:NULL")],
    );
    s.t.ok("VM.suspend", &[vm.clone()]);
    assert_eq!(sr_of(&vm), local);
    s.resume(&vm).unwrap();
    // None at all: VM_NO_SUSPEND_SR, and the VM runs on.
    s.t.ok(
        "host.set_suspend_image_sr",
        &[host, Value::str("OpaqueRef:NULL")],
    );
    let e = s.t.err("VM.suspend", &[vm.clone()]);
    assert_eq!(
        (e.code.as_str(), e.params.as_slice()),
        ("VM_NO_SUSPEND_SR", &[vm.as_str().unwrap().to_owned()][..])
    );
    assert_eq!(s.power(&vm), "Running");
    assert!(s.suspend_vdis().is_empty());
    s.t.ok("VM.hard_shutdown", &[vm]);
}

#[test]
fn async_suspend_and_resume_return_tasks() {
    let s = S::new();
    let vm = s.vm("async");
    s.start(&vm);
    for (op, args, state) in [
        ("Async.VM.suspend", vec![vm.clone()], "Suspended"),
        (
            "Async.VM.resume",
            vec![vm.clone(), Value::Bool(false), Value::Bool(false)],
            "Running",
        ),
    ] {
        let task = s.t.ok(op, &args);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st = s.t.ok("task.get_status", &[task.clone()]);
            if st != Value::str("pending") {
                assert_eq!(st, Value::str("success"), "{op}");
                break;
            }
            assert!(Instant::now() < deadline, "{op} still pending");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(s.power(&vm), state, "{op}");
    }
    s.t.ok("VM.hard_shutdown", &[vm]);
}

#[test]
fn of_two_starts_at_once_one_runs_the_vm_and_the_other_is_refused() {
    let s = S::new();
    let vm = s.vm("twice");
    let results: Vec<Result<Value, toolstack::ApiError>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                sc.spawn(|| {
                    s.t.call(
                        "VM.start",
                        &[vm.clone(), Value::Bool(false), Value::Bool(false)],
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let e = results.into_iter().find_map(Result::err).unwrap();
    assert_eq!(e.code, "VM_BAD_POWER_STATE");
    assert_eq!(&e.params[1..], ["halted", "running"]);
    assert_eq!(s.domains(), 1);
    s.t.ok("VM.hard_shutdown", &[vm]);
}
