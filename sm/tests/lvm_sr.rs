//! The LVM SR on a loop device with Debian's lvm2. Needs root, `lvm` (on `PATH`, or the
//! program named by `SM_LVM`), `losetup` and the kernel's device-mapper; prints SKIP with the
//! reason where one is missing.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use sm::lvm::LvmSr;
use sm::{SrDriver, SrUuid};

const MIB: u64 = 1 << 20;

fn lvm_program() -> String {
    std::env::var("SM_LVM").unwrap_or_else(|_| "lvm".into())
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    let lvm = lvm_program();
    if !Command::new(&lvm)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some(format!(
            "{lvm} does not run (Debian's lvm2 is not installed)"
        ));
    }
    if !kernel_has_device_mapper() {
        return Some("this kernel has no device-mapper (no device-mapper in /proc/misc)".into());
    }
    None
}

/// The kernel's device-mapper driver is there (lvm creates `/dev/mapper/control` itself, so
/// that node says nothing).
fn kernel_has_device_mapper() -> bool {
    std::fs::read_to_string("/proc/misc").is_ok_and(|m| m.contains("device-mapper"))
}

/// A loop device over a sparse file, detached on drop.
struct Loop {
    dev: String,
    _file: tempfile::NamedTempFile,
}

impl Loop {
    fn new(bytes: u64) -> Loop {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(bytes).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop {
            dev: String::from_utf8(out.stdout).unwrap().trim().to_owned(),
            _file: file,
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

fn rw(path: &Path, write: Option<(u8, u64, u64)>, read: (u64, u64)) -> Vec<u8> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(write.is_some())
        .open(path)
        .unwrap();
    if let Some((b, off, len)) = write {
        f.write_all_at(&vec![b; len as usize], off).unwrap();
        f.sync_all().unwrap();
    }
    let mut buf = vec![0u8; read.1 as usize];
    f.read_exact_at(&mut buf, read.0).unwrap();
    buf
}

#[test]
fn lvm_sr_on_a_loop_device() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP lvm_sr_on_a_loop_device: {why}");
        return;
    }
    let lo = Loop::new(512 * MIB);
    let cfg = [("device".to_owned(), lo.dev.clone())]
        .into_iter()
        .collect();
    let sr = LvmSr::from_device_config(SrUuid::new(), &cfg)
        .unwrap()
        .with_lvm(lvm_program());
    assert!(sr.sr_probe().unwrap().is_empty());
    sr.sr_create().unwrap();
    assert_eq!(sr.sr_probe().unwrap(), vec![sr.sr_uuid()]);
    assert_eq!(sr.sr_create().unwrap_err().code(), "SR_BACKEND_FAILURE");
    sr.sr_attach().unwrap();

    let v = sr.vdi_create("disk", 64 * MIB).unwrap();
    assert_eq!(v.virtual_size, 64 * MIB);
    let a = sr.vdi_attach(v.uuid, true).unwrap();
    rw(&a.path, Some((1, 0, 4 * MIB)), (0, 0));
    assert_eq!(sr.vdi_destroy(v.uuid).unwrap_err().code(), "VDI_IN_USE");
    assert_eq!(
        sr.vdi_resize(v.uuid, 128 * MIB).unwrap_err().code(),
        "VDI_IN_USE"
    );
    sr.vdi_detach(v.uuid).unwrap();

    // Snapshot, write more: the snapshot keeps the old data.
    let s = sr.vdi_snapshot(v.uuid).unwrap();
    assert!(s.is_a_snapshot);
    assert_eq!(s.snapshot_of, Some(v.uuid));
    assert_eq!(
        sr.vdi_attach(s.uuid, true).unwrap_err().code(),
        "VDI_IS_A_SNAPSHOT"
    );
    let a = sr.vdi_attach(v.uuid, true).unwrap();
    let got = rw(&a.path, Some((2, MIB, MIB)), (0, 2 * MIB));
    assert!(got[..MIB as usize].iter().all(|&b| b == 1));
    assert!(got[MIB as usize..].iter().all(|&b| b == 2));
    sr.vdi_detach(v.uuid).unwrap();
    let a = sr.vdi_attach(s.uuid, false).unwrap();
    assert!(rw(&a.path, None, (0, 2 * MIB)).iter().all(|&b| b == 1));
    sr.vdi_detach(s.uuid).unwrap();

    // Clone and diverge; delete the origin, the clone and snapshot keep their data.
    let c = sr.vdi_clone(s.uuid).unwrap();
    let a = sr.vdi_attach(c.uuid, true).unwrap();
    let got = rw(&a.path, Some((3, 0, MIB)), (0, 2 * MIB));
    assert!(got[..MIB as usize].iter().all(|&b| b == 3));
    assert!(got[MIB as usize..].iter().all(|&b| b == 1));
    sr.vdi_detach(c.uuid).unwrap();
    sr.vdi_destroy(v.uuid).unwrap();
    let a = sr.vdi_attach(s.uuid, false).unwrap();
    assert!(rw(&a.path, None, (0, 2 * MIB)).iter().all(|&b| b == 1));
    sr.vdi_detach(s.uuid).unwrap();

    // Copy, resize, refusals.
    let k = sr.vdi_copy(c.uuid).unwrap();
    assert_eq!(k.parent, None);
    let a = sr.vdi_attach(k.uuid, false).unwrap();
    assert!(rw(&a.path, None, (0, MIB)).iter().all(|&b| b == 3));
    sr.vdi_detach(k.uuid).unwrap();
    assert_eq!(
        sr.vdi_resize(c.uuid, 128 * MIB).unwrap().virtual_size,
        128 * MIB
    );
    assert_eq!(
        sr.vdi_resize(c.uuid, 64 * MIB).unwrap_err().code(),
        "VDI_TOO_SMALL"
    );
    assert_eq!(sr.vdi_create("big", 1 << 40).unwrap_err().code(), "SR_FULL");
    assert_eq!(sr.sr_delete().unwrap_err().code(), "SR_NOT_EMPTY");
    for i in sr.sr_scan().unwrap() {
        sr.vdi_destroy(i.uuid).unwrap();
    }
    sr.sr_delete().unwrap();
    assert!(sr.sr_probe().unwrap().is_empty());
}

/// Where lvm runs but the kernel has no device-mapper, creating the SR fails at its thin
/// pool with LVM's reason and leaves the device as it was (no volume group, no PV label).
#[test]
fn lvm_sr_create_without_device_mapper_rolls_back() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP lvm_sr_create_without_device_mapper_rolls_back: not root");
        return;
    }
    let lvm = lvm_program();
    if Command::new(&lvm).arg("version").output().is_err() {
        eprintln!("SKIP lvm_sr_create_without_device_mapper_rolls_back: {lvm} does not run");
        return;
    }
    if kernel_has_device_mapper() {
        eprintln!(
            "SKIP lvm_sr_create_without_device_mapper_rolls_back: this kernel has \
             device-mapper (lvm_sr_on_a_loop_device covers it)"
        );
        return;
    }
    let lo = Loop::new(128 * MIB);
    let cfg = [("device".to_owned(), lo.dev.clone())]
        .into_iter()
        .collect();
    let sr = LvmSr::from_device_config(SrUuid::new(), &cfg)
        .unwrap()
        .with_lvm(&lvm);
    let e = sr.sr_create().unwrap_err();
    assert_eq!(e.code(), "SR_BACKEND_FAILURE");
    assert!(e.to_string().contains("thin-pool"), "{e}");
    assert!(
        sr.sr_probe().unwrap().is_empty(),
        "the volume group was removed"
    );
    let out = Command::new(&lvm).args(["pvs", &lo.dev]).output().unwrap();
    assert!(!out.status.success(), "the PV label was wiped");
    assert_eq!(sr.sr_scan().unwrap_err().code(), "SR_HAS_NO_PBDS");
}
