//! The backend of each VBD, chosen per VBD as xenopsd's `device_kind_of` does: the VBD's
//! `other_config:backend-kind`, else its storage's preference (a qcow2 image needs the
//! device model), else the host's `default-vbd-backend-kind`. On the simulated host, with a
//! stand-in device model: the directories libxl writes for each kind (`backend/vbd` with
//! `type=phy`, `backend/qdisk` with `type=qdisk` and `params=raw:<path>`), the device
//! model started for the qdisk disks and stopped with the domain, and the errors.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "common/api.rs"]
mod api;

use api::{rec, GIB, T};
use toolstack::backend::Backend;
use toolstack::db::Db;
use toolstack::devices::{DeviceHosting, VbdBackend};
use toolstack::value::Value;

struct S {
    t: T,
    dir: tempfile::TempDir,
    kernel: String,
}

/// A stand-in for blkbackd: started as `<dm> --domid <N>`, it records its pid and runs
/// until stopped (the test writes the `device-model/<N>/state` blkbackd would).
fn device_model(dir: &Path) -> PathBuf {
    let p = dir.join("dm");
    let script = format!(
        "#!/bin/sh\necho $$ > {}/dm-$2.pid\nexec sleep 600\n",
        dir.display()
    );
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

impl S {
    /// A simulated host whose VBDs default to `default`, with the stand-in device model
    /// when `dm`.
    fn new(default: VbdBackend, dm: bool) -> S {
        let dir = tempfile::tempdir().unwrap();
        let hosting = DeviceHosting {
            blkbackd: dm.then(|| device_model(dir.path())),
            default_vbd_backend: default,
            ..DeviceHosting::default()
        };
        let be = Backend::simulated(4 * GIB, GIB, 4)
            .unwrap()
            .with_device_hosting(hosting);
        let t = T::with_backend(Db::in_memory(), be);
        let kernel = dir.path().join("vmlinuz");
        std::fs::write(&kernel, xen_sim::domain::sample_kernel(4 << 20)).unwrap();
        S {
            t,
            kernel: kernel.display().to_string(),
            dir,
        }
    }

    fn vm(&self) -> Value {
        let m = Value::String((GIB / 8).to_string());
        self.t.ok(
            "VM.create",
            &[rec(&[
                ("name_label", Value::str("disks")),
                ("memory_static_max", m.clone()),
                ("memory_dynamic_max", m.clone()),
                ("memory_dynamic_min", m),
                ("VCPUs_max", Value::str("1")),
                ("VCPUs_at_startup", Value::str("1")),
                ("PV_kernel", Value::str(&self.kernel)),
            ])],
        )
    }

    fn sr(&self) -> Value {
        self.t.ok("SR.get_all", &[]).as_array().unwrap()[0].clone()
    }

    /// A disk image outside any SR (`sm_config:path`).
    fn external_vdi(&self, name: &str) -> (Value, String) {
        let path = self.dir.path().join(name).display().to_string();
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        let vdi = self.t.ok(
            "VDI.create",
            &[rec(&[
                ("SR", self.sr()),
                ("virtual_size", Value::str("1048576")),
                ("sm_config", rec(&[("path", Value::str(&path))])),
            ])],
        );
        (vdi, path)
    }

    /// A VBD at `userdevice`, with `other_config:backend-kind` when `kind` is given.
    fn vbd(&self, vm: &Value, vdi: Value, userdevice: &str, kind: Option<&str>) {
        let oc = kind.map_or_else(|| rec(&[]), |k| rec(&[("backend-kind", Value::str(k))]));
        self.t.ok(
            "VBD.create",
            &[rec(&[
                ("VM", vm.clone()),
                ("VDI", vdi),
                ("userdevice", Value::str(userdevice)),
                ("mode", Value::str("RW")),
                ("type", Value::str("Disk")),
                ("other_config", oc),
            ])],
        );
    }

    fn xs(&self, path: &str) -> Option<String> {
        self.t.be.xs_read(path).unwrap()
    }

    fn domid(&self, vm: &Value) -> u16 {
        let d = self.t.ok("VM.get_domid", std::slice::from_ref(vm));
        d.as_i64().unwrap() as u16
    }

    fn domains(&self) -> usize {
        self.t.be.xen().list_domains().unwrap().len() - 1
    }

    /// `VM.start` as blkbackd's host sees it: once the start wrote a `backend/qdisk`
    /// directory, the device model (the stand-in) says `running`, as blkbackd does.
    fn start_with_device_model(&self, vm: &Value) -> u16 {
        let task = self.t.ok(
            "Async.VM.start",
            &[vm.clone(), Value::Bool(false), Value::Bool(false)],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let domid = loop {
            let doms = self
                .t
                .be
                .xenstore()
                .directory("/local/domain/0/backend/qdisk")
                .unwrap_or_default();
            if let Some(d) = doms.first() {
                break d.clone();
            }
            assert!(Instant::now() < deadline, "no backend/qdisk directory");
            std::thread::sleep(Duration::from_millis(5));
        };
        self.t
            .be
            .xenstore()
            .write(
                &format!("/local/domain/0/device-model/{domid}/state"),
                "running",
            )
            .unwrap();
        loop {
            let st = self.t.ok("task.get_status", std::slice::from_ref(&task));
            if st != Value::str("pending") {
                let e = self
                    .t
                    .ok("task.get_error_info", std::slice::from_ref(&task));
                assert_eq!(st, Value::str("success"), "{e:?}");
                break;
            }
            assert!(Instant::now() < deadline, "VM.start still pending");
            std::thread::sleep(Duration::from_millis(5));
        }
        let d = self.domid(vm);
        assert_eq!(d.to_string(), domid);
        d
    }

    fn dm_pid(&self, domid: u16) -> i32 {
        let f = self.dir.path().join(format!("dm-{domid}.pid"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f.exists() {
            assert!(Instant::now() < deadline, "the device model never ran");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::fs::read_to_string(f).unwrap().trim().parse().unwrap()
    }

    /// The backend keys of a disk at `dir` (`vbd` or `qdisk`).
    fn backend(&self, dir: &str, domid: u16, devid: u32, key: &str) -> Option<String> {
        self.xs(&format!(
            "/local/domain/0/backend/{dir}/{domid}/{devid}/{key}"
        ))
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
        !st.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

#[test]
fn two_vbds_of_one_vm_get_the_two_backend_kinds() {
    // The host serves disks from its device model unless a VBD asks for the kernel.
    let s = S::new(VbdBackend::Qdisk, true);
    let vm = s.vm();
    let (a, pa) = s.external_vdi("a.img");
    let (b, pb) = s.external_vdi("b.img");
    s.vbd(&vm, a, "0", None);
    s.vbd(&vm, b, "1", Some("vbd"));
    let d = s.start_with_device_model(&vm);

    // xvda (51712): the host's default, the device model's `backend/qdisk`.
    for (k, v) in [
        ("type", "qdisk".to_owned()),
        ("params", format!("raw:{pa}")),
        ("mode", "w".into()),
        ("dev", "xvda".into()),
        ("device-type", "disk".into()),
        ("frontend", format!("/local/domain/{d}/device/vbd/51712")),
        ("frontend-id", d.to_string()),
        ("online", "1".into()),
    ] {
        assert_eq!(s.backend("qdisk", d, 51712, k), Some(v), "qdisk {k}");
    }
    assert_eq!(s.backend("vbd", d, 51712, "type"), None);
    // xvdb (51728): `other_config:backend-kind=vbd`, the kernel's `backend/vbd`.
    for (k, v) in [
        ("type", "phy".to_owned()),
        ("params", pb.clone()),
        ("mode", "w".into()),
        ("dev", "xvdb".into()),
        ("frontend", format!("/local/domain/{d}/device/vbd/51728")),
        ("frontend-id", d.to_string()),
    ] {
        assert_eq!(s.backend("vbd", d, 51728, k), Some(v), "vbd {k}");
    }
    assert_eq!(s.backend("qdisk", d, 51728, "type"), None);
    // Both frontends are `device/vbd`, each naming its backend.
    for (devid, dir) in [(51712, "qdisk"), (51728, "vbd")] {
        let fe = format!("/local/domain/{d}/device/vbd/{devid}");
        assert_eq!(
            s.xs(&format!("{fe}/backend")),
            Some(format!("/local/domain/0/backend/{dir}/{d}/{devid}"))
        );
        assert_eq!(s.xs(&format!("{fe}/backend-id")).as_deref(), Some("0"));
        assert_eq!(
            s.xs(&format!("{fe}/virtual-device")),
            Some(devid.to_string())
        );
    }
    let dm = s.dm_pid(d);
    assert!(alive(dm), "the device model runs for the qdisk disk");

    // On the way out the device model stops and both backend directories go.
    s.t.ok("VM.hard_shutdown", &[vm]);
    for dir in ["vbd", "qdisk"] {
        assert_eq!(s.xs(&format!("/local/domain/0/backend/{dir}/{d}")), None);
    }
    assert_eq!(s.xs(&format!("/local/domain/{d}")), None);
    assert!(!alive(dm), "device model {dm} stopped");
    assert_eq!(s.domains(), 0);
}

#[test]
fn a_qcow2_vdi_prefers_the_device_model_over_a_kernel_default() {
    // The host defaults to the kernel's blkback; the SR's qcow2 disk needs the device model
    // (its storage's preference), a raw image outside the SR takes the default, and a VBD
    // can ask for the device model itself.
    let s = S::new(VbdBackend::Vbd, true);
    s.t.x.attach_local_sr(&s.dir.path().join("sr")).unwrap();
    let vm = s.vm();
    let q = s.t.ok(
        "VDI.create",
        &[rec(&[
            ("SR", s.sr()),
            ("virtual_size", Value::str("1048576")),
            ("name_label", Value::str("qcow2 disk")),
        ])],
    );
    let (raw, praw) = s.external_vdi("raw.img");
    let (asks, pasks) = s.external_vdi("asks.img");
    s.vbd(&vm, q, "0", None);
    s.vbd(&vm, raw, "1", None);
    s.vbd(&vm, asks, "2", Some("qdisk"));
    let d = s.start_with_device_model(&vm);
    let qparams = s.backend("qdisk", d, 51712, "params").unwrap();
    let image = qparams.strip_prefix("raw:").unwrap();
    assert!(sm::image::is_qcow2(Path::new(image)).unwrap(), "{qparams}");
    assert_eq!(s.backend("vbd", d, 51712, "type"), None);
    assert_eq!(s.backend("vbd", d, 51728, "params"), Some(praw));
    assert_eq!(s.backend("vbd", d, 51728, "type").as_deref(), Some("phy"));
    assert_eq!(
        s.backend("qdisk", d, 51744, "params"),
        Some(format!("raw:{pasks}"))
    );
    s.t.ok("VM.hard_shutdown", &[vm]);
    assert_eq!(s.domains(), 0);
}

#[test]
fn a_backend_kind_the_host_does_not_serve_fails_the_start_and_leaves_nothing() {
    let s = S::new(VbdBackend::Vbd, false);
    let vm = s.vm();
    let (a, _) = s.external_vdi("a.img");
    let (b, _) = s.external_vdi("b.img");
    s.vbd(&vm, a, "0", None);
    // A kind xenopsd knows but this host does not serve (xenopsd's `Vbd "unsupported"`).
    s.vbd(&vm, b, "1", Some("vbd3"));
    let e = s.t.err(
        "VM.start",
        &[vm.clone(), Value::Bool(false), Value::Bool(false)],
    );
    assert_eq!(e.code, "INTERNAL_ERROR");
    assert!(e.params[0].contains("\"vbd3\""), "{e}");
    assert_eq!(s.domains(), 0);
    let ps = s.t.ok("VM.get_power_state", std::slice::from_ref(&vm));
    assert_eq!(ps, Value::str("Halted"));
    // The first disk's directories, written before the second failed, are gone.
    for dir in ["vbd", "qdisk"] {
        assert!(s
            .t
            .be
            .xenstore()
            .directory(&format!("/local/domain/0/backend/{dir}"))
            .unwrap_or_default()
            .is_empty());
    }
}
