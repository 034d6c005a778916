//! Helpers shared by the SR tests: data patterns, reading and writing VDIs, qemu-img.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use sm::file::FileSr;
use sm::image::Image;
use sm::{SrDriver, SrUuid, VdiUuid};

pub const MIB: u64 = 1 << 20;

/// A new attached file SR in a temporary directory.
pub fn new_sr() -> (tempfile::TempDir, FileSr) {
    let dir = tempfile::tempdir().unwrap();
    let sr = FileSr::new(SrUuid::new(), dir.path().join("sr"));
    sr.sr_create().unwrap();
    sr.sr_attach().unwrap();
    (dir, sr)
}

/// Bytes of pattern `seed` for `len` bytes at `off` (different at every offset).
pub fn pattern(seed: u8, off: u64, len: u64) -> Vec<u8> {
    (off..off + len)
        .map(|i| (i / 512) as u8 ^ seed.wrapping_mul(37) ^ (i as u8).rotate_left(3))
        .collect()
}

/// Writes pattern `seed` over `len` bytes at `off` into the VDI's image, then flushes.
pub fn write(sr: &FileSr, vdi: VdiUuid, seed: u8, off: u64, len: u64) {
    let path = sr.dir().join(format!("{vdi}.qcow2"));
    let img = Image::open(&path, true).unwrap();
    img.write(&pattern(seed, off, len), off).unwrap();
    img.flush().unwrap();
}

/// Reads `len` bytes at `off` of the VDI through its chain.
pub fn read(sr: &FileSr, vdi: VdiUuid, off: u64, len: u64) -> Vec<u8> {
    let img = Image::open(&image(sr, vdi), false).unwrap();
    let mut buf = vec![0u8; len as usize];
    img.read(&mut buf, off).unwrap();
    buf
}

pub fn image(sr: &FileSr, vdi: VdiUuid) -> PathBuf {
    sr.dir().join(format!("{vdi}.qcow2"))
}

/// The whole disk as expected: `layers` of (seed, off, len), later ones on top, zero
/// elsewhere.
pub fn expected(size: u64, layers: &[(u8, u64, u64)]) -> Vec<u8> {
    let mut v = vec![0u8; size as usize];
    for &(seed, off, len) in layers {
        v[off as usize..(off + len) as usize].copy_from_slice(&pattern(seed, off, len));
    }
    v
}

/// `qemu-img`, when the machine has it.
pub fn qemu_img() -> Option<&'static str> {
    let ok = Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some("qemu-img")
    } else {
        eprintln!("SKIP qemu-img checks: qemu-img is not installed (Debian's qemu-utils)");
        None
    }
}

/// `qemu-img check` passes on the image (and its chain) and `qemu-img convert` to raw gives
/// `want`. Returns whether qemu-img ran.
pub fn qemu_verify(path: &Path, want: &[u8]) -> bool {
    let Some(q) = qemu_img() else {
        return false;
    };
    let out = Command::new(q).arg("check").arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img check {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(q)
        .args(["convert", "-O", "raw"])
        .arg(path)
        .arg(raw.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = std::fs::read(raw.path()).unwrap();
    assert_eq!(
        got.len(),
        want.len(),
        "qemu-img's raw size of {}",
        path.display()
    );
    assert!(
        got == want,
        "qemu-img reads different data from {}",
        path.display()
    );
    true
}
