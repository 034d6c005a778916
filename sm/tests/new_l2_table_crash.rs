//! A known crash-safety hole of imago 0.2.6, kept as a failing (ignored) test until it is
//! fixed: a write to a region of the disk with no L2 table yet writes the new table's L1
//! entry to the file before the table's refcount, so a kill -9 in between leaves an L2
//! table with refcount 0, which a later allocation may overwrite. Run it with
//! `cargo test -p sm --test new_l2_table_crash -- --ignored`.

use std::process::Command;

use sm::image::{self, Image};

#[test]
#[ignore = "fails with imago 0.2.6: the L1 entry of a new L2 table reaches the file before its refcount"]
fn kill_9_after_a_write_that_made_a_new_l2_table_leaves_no_refcount_error() {
    if let Ok(p) = std::env::var("SM_L2_CRASH_CHILD") {
        let img = Image::open(std::path::Path::new(&p), true).unwrap();
        // 1 GiB is past the first L2 table's 512 MiB (64 KiB clusters): a new table.
        img.write(&[5u8; 4096], 1 << 30).unwrap();
        // SAFETY: kill(2) on our own pid; no memory is involved.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
    let Some(q) = Command::new("qemu-img")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "qemu-img")
    else {
        eprintln!("SKIP: qemu-img is not installed (Debian's qemu-utils)");
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.qcow2");
    image::create(&p, 2 << 30, None).unwrap();
    let img = Image::open(&p, true).unwrap();
    img.write(&[1u8; 4096], 0).unwrap();
    img.flush().unwrap();
    drop(img);
    let st = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "kill_9_after_a_write_that_made_a_new_l2_table_leaves_no_refcount_error",
        ])
        .env("SM_L2_CRASH_CHILD", &p)
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.status.signal(), Some(libc::SIGKILL));
    // Leaked clusters (exit 3) are allowed after a crash; errors (exit 2) are not.
    let out = Command::new(q).arg("check").arg(&p).output().unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
