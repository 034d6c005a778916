//! kill -9 at every step of snapshot, clone and coalesce: a child process runs the
//! operation with `SM_CRASH_AT=op:step` and kills itself there; the next attach (scan)
//! repairs the SR and every flushed byte reads back.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use common::*;
use sm::file::FileSr;
use sm::{SrDriver, SrUuid, VdiUuid};

const SIZE: u64 = 8 * MIB;

/// Run in the child process (by `crash_at`): the operation named by `SM_CRASH_OP` on the
/// SR in `SM_CRASH_DIR`.
#[test]
#[ignore = "the child half of the crash tests; run by them"]
fn crash_child() {
    let dir = std::env::var("SM_CRASH_DIR").expect("run by the crash tests");
    let sr_uuid: SrUuid = std::env::var("SM_CRASH_SR").unwrap().parse().unwrap();
    let vdi: VdiUuid = std::env::var("SM_CRASH_VDI").unwrap().parse().unwrap();
    let sr = FileSr::new(sr_uuid, dir);
    sr.sr_attach().unwrap();
    match std::env::var("SM_CRASH_OP").unwrap().as_str() {
        "snapshot" => drop(sr.vdi_snapshot(vdi).unwrap()),
        "clone" => drop(sr.vdi_clone(vdi).unwrap()),
        "destroy" => sr.vdi_destroy(vdi).unwrap(),
        "write" => write_forever(&image(&sr, vdi)),
        "write4k" => write_4k_forever(&image(&sr, vdi)),
        op => panic!("unknown op {op}"),
    }
}

/// Runs `op` on `vdi` in a child killed at `op_at`; asserts that it died of SIGKILL.
fn crash_at(sr: &FileSr, op: &str, vdi: VdiUuid, at: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "crash_child", "--nocapture"])
        .env("SM_CRASH_DIR", sr.dir())
        .env("SM_CRASH_SR", sr.sr_uuid().to_string())
        .env("SM_CRASH_VDI", vdi.to_string())
        .env("SM_CRASH_OP", op)
        .env("SM_CRASH_AT", at)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "{op} did not reach {at}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Nothing a scan should have removed is left.
fn assert_clean(sr: &FileSr) {
    for e in std::fs::read_dir(sr.dir()).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !n.starts_with("journal-") && !n.ends_with(".tmp"),
            "scan left {n}"
        );
    }
}

fn qcow2_count(sr: &FileSr) -> usize {
    std::fs::read_dir(sr.dir())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".qcow2")
        })
        .count()
}

/// A fresh SR object over the same directory, attached (which scans).
fn reattach(sr: &FileSr) -> FileSr {
    let again = FileSr::new(sr.sr_uuid(), sr.dir());
    again.sr_attach().unwrap();
    assert_clean(&again);
    again
}

#[test]
fn snapshot_killed_at_each_step_is_repaired_by_scan() {
    let layer = [(1, 0, 3 * MIB)];
    for step in 1..=4 {
        let (_d, sr) = new_sr();
        let v = sr.vdi_create("disk", SIZE).unwrap();
        write(&sr, v.uuid, 1, 0, 3 * MIB);
        crash_at(&sr, "snapshot", v.uuid, &format!("snapshot:{step}"));
        let sr = reattach(&sr);
        let vdis = sr.sr_scan().unwrap();
        let snaps: Vec<_> = vdis.iter().filter(|i| i.is_a_snapshot).collect();
        // Rolled back before the image was frozen, finished after.
        assert_eq!(snaps.len(), usize::from(step >= 3), "step {step}: {vdis:?}");
        assert_eq!(vdis.len(), 1 + snaps.len());
        assert!(
            read(&sr, v.uuid, 0, SIZE) == expected(SIZE, &layer),
            "step {step}"
        );
        for s in &snaps {
            assert_eq!(s.snapshot_of, Some(v.uuid));
            assert!(read(&sr, s.uuid, 0, SIZE) == expected(SIZE, &layer));
        }
        qemu_verify(&image(&sr, v.uuid), &expected(SIZE, &layer));
        // The SR works on: the disk is written and snapshot again.
        write(&sr, v.uuid, 2, MIB, MIB);
        let s = sr.vdi_snapshot(v.uuid).unwrap();
        assert!(read(&sr, s.uuid, 0, SIZE) == expected(SIZE, &[(1, 0, 3 * MIB), (2, MIB, MIB)]));
    }
}

#[test]
fn clone_killed_at_each_step_is_repaired_by_scan() {
    let layer = [(1, 0, 3 * MIB)];
    for step in 1..=5 {
        let (_d, sr) = new_sr();
        let v = sr.vdi_create("disk", SIZE).unwrap();
        write(&sr, v.uuid, 1, 0, 3 * MIB);
        crash_at(&sr, "clone", v.uuid, &format!("clone:{step}"));
        let sr = reattach(&sr);
        let vdis = sr.sr_scan().unwrap();
        assert_eq!(
            vdis.len(),
            if step >= 3 { 2 } else { 1 },
            "step {step}: {vdis:?}"
        );
        for i in &vdis {
            assert!(
                read(&sr, i.uuid, 0, SIZE) == expected(SIZE, &layer),
                "step {step}"
            );
            qemu_verify(&image(&sr, i.uuid), &expected(SIZE, &layer));
        }
        // Rolled back: one flat image; finished: a hidden base and two leaves.
        assert_eq!(qcow2_count(&sr), if step >= 3 { 3 } else { 1 });
    }
}

#[test]
fn coalesce_killed_at_each_step_is_repaired_by_scan() {
    // s <- v; destroying s coalesces s's 4 MiB into v.
    let want = expected(SIZE, &[(1, 0, 4 * MIB), (2, 3 * MIB, 2 * MIB)]);
    for step in 1..=3 {
        let (_d, sr) = new_sr();
        let v = sr.vdi_create("disk", SIZE).unwrap();
        write(&sr, v.uuid, 1, 0, 4 * MIB);
        let s = sr.vdi_snapshot(v.uuid).unwrap();
        write(&sr, v.uuid, 2, 3 * MIB, 2 * MIB);
        crash_at(&sr, "destroy", s.uuid, &format!("coalesce:{step}"));
        // Before scan: the disk reads whole whatever step the coalesce stopped at.
        assert!(
            read(&sr, v.uuid, 0, SIZE) == want,
            "step {step}, before scan"
        );
        let sr = reattach(&sr);
        let vdis = sr.sr_scan().unwrap();
        assert_eq!(vdis.len(), 1, "step {step}: {vdis:?}");
        assert_eq!(vdis[0].parent, None, "the chain was coalesced");
        assert_eq!(qcow2_count(&sr), 1);
        assert!(read(&sr, v.uuid, 0, SIZE) == want, "step {step}");
        qemu_verify(&image(&sr, v.uuid), &want);
    }
}

/// Blocks of the writer's disk and their size.
const WBLOCKS: u64 = 256;
const WBLOCK: u64 = 64 << 10;

/// The writer child: generation g fills block g % WBLOCKS with g; after each flush,
/// reports `flushed g` on stdout. Runs until killed.
fn write_forever(path: &std::path::Path) {
    use std::io::Write;
    let img = sm::image::Image::open(path, true).unwrap();
    let mut out = std::io::stdout().lock();
    for g in 1u64.. {
        let buf: Vec<u8> = std::iter::repeat_n(g.to_le_bytes(), (WBLOCK / 8) as usize)
            .flatten()
            .collect();
        img.write(&buf, (g % WBLOCKS) * WBLOCK).unwrap();
        if g % 4 == 0 {
            img.flush().unwrap();
            writeln!(out, "flushed {g}").unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn flushed_writes_survive_kill_9_of_the_writer() {
    let (_d, sr) = new_sr();
    let v = sr.vdi_create("disk", WBLOCKS * WBLOCK).unwrap();
    write(&sr, v.uuid, 1, 0, WBLOCKS * WBLOCK);
    // The writer works on a leaf over a snapshot: every first write is a copy-on-write.
    let s = sr.vdi_snapshot(v.uuid).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "crash_child", "--nocapture", "-q"])
        .env("SM_CRASH_DIR", sr.dir())
        .env("SM_CRASH_SR", sr.sr_uuid().to_string())
        .env("SM_CRASH_VDI", v.uuid.to_string())
        .env("SM_CRASH_OP", "write")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut last = 0u64;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if let Some(g) = line.unwrap().strip_prefix("flushed ") {
            last = g.parse().unwrap();
            if last >= 3 * WBLOCKS {
                break;
            }
        }
    }
    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert!(last >= 3 * WBLOCKS, "the writer stopped early");

    let sr = reattach(&sr);
    let data = read(&sr, v.uuid, 0, WBLOCKS * WBLOCK);
    for b in 0..WBLOCKS {
        let blk = &data[(b * WBLOCK) as usize..((b + 1) * WBLOCK) as usize];
        let g = u64::from_le_bytes(blk[..8].try_into().unwrap());
        assert!(
            blk.chunks(8).all(|w| w == g.to_le_bytes()),
            "block {b} is torn"
        );
        // The newest generation of this block flushed before the kill, or a later one.
        let flushed = (1..=last).rev().find(|g| g % WBLOCKS == b).unwrap();
        assert!(
            g >= flushed && g % WBLOCKS == b,
            "block {b}: {g}, flushed {flushed}"
        );
    }
    // The snapshot under it is untouched.
    assert!(
        read(&sr, s.uuid, 0, WBLOCKS * WBLOCK)
            == expected(WBLOCKS * WBLOCK, &[(1, 0, WBLOCKS * WBLOCK)])
    );
    // qemu-img finds no corruption (leaked clusters, exit 3, are allowed after a crash).
    if let Some(q) = qemu_img() {
        let out = Command::new(q)
            .arg("check")
            .arg(image(&sr, v.uuid))
            .output()
            .unwrap();
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// 4 KiB blocks the partial writer writes in: the second of every four, 1 KiB at 1 KiB into
/// it (part of a cluster of any size, so every first write there copies up the rest).
const P4K: u64 = 4096;
const PART: std::ops::Range<u64> = 1024..2048;
fn partial_block(i: u64) -> u64 {
    let slots = WBLOCKS * WBLOCK / P4K / 4;
    4 * ((i * 5) % slots) + 1
}

/// The partial writer child: generation g fills `PART` of block `partial_block(g)` with g;
/// after each flush, reports `flushed g`. Runs until killed.
fn write_4k_forever(path: &std::path::Path) {
    use std::io::Write;
    let img = sm::image::Image::open(path, true).unwrap();
    let mut out = std::io::stdout().lock();
    for g in 1u64.. {
        let buf: Vec<u8> =
            std::iter::repeat_n(g.to_le_bytes(), (PART.end - PART.start) as usize / 8)
                .flatten()
                .collect();
        img.write(&buf, partial_block(g) * P4K + PART.start)
            .unwrap();
        if g % 8 == 0 {
            img.flush().unwrap();
            writeln!(out, "flushed {g}").unwrap();
            out.flush().unwrap();
        }
    }
}

/// kill -9 of a writer whose 1 KiB writes each land in part of a cluster that the backing
/// file holds (the copy-up case): every flushed write reads back whole, and the parts of
/// each cluster that were never written still read the backing file's data.
#[test]
fn partial_cluster_writes_over_a_snapshot_survive_kill_9() {
    let (_d, sr) = new_sr();
    let size = WBLOCKS * WBLOCK;
    let v = sr.vdi_create("disk", size).unwrap();
    write(&sr, v.uuid, 1, 0, size);
    sr.vdi_snapshot(v.uuid).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "crash_child", "--nocapture", "-q"])
        .env("SM_CRASH_DIR", sr.dir())
        .env("SM_CRASH_SR", sr.sr_uuid().to_string())
        .env("SM_CRASH_VDI", v.uuid.to_string())
        .env("SM_CRASH_OP", "write4k")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let slots = size / P4K / 4;
    let mut last = 0u64;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if let Some(g) = line.unwrap().strip_prefix("flushed ") {
            last = g.parse().unwrap();
            if last >= 2 * slots {
                break;
            }
        }
    }
    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert!(last >= 2 * slots, "the writer stopped early");

    let sr = reattach(&sr);
    let data = read(&sr, v.uuid, 0, size);
    let backing = expected(size, &[(1, 0, size)]);
    for b in 0..size / P4K {
        let at = |r: std::ops::Range<u64>| (b * P4K + r.start) as usize..(b * P4K + r.end) as usize;
        if b % 4 != 1 {
            assert!(
                data[at(0..P4K)] == backing[at(0..P4K)],
                "block {b}, never written, lost its data"
            );
            continue;
        }
        for around in [0..PART.start, PART.end..P4K] {
            assert!(
                data[at(around.clone())] == backing[at(around)],
                "block {b}: the data around the writes was not copied up"
            );
        }
        let blk = &data[at(PART)];
        let g = u64::from_le_bytes(blk[..8].try_into().unwrap());
        assert!(
            blk.chunks(8).all(|w| w == g.to_le_bytes()),
            "block {b} is torn"
        );
        let flushed = (1..=last).rev().find(|&g| partial_block(g) == b).unwrap();
        assert!(
            g >= flushed && partial_block(g) == b,
            "block {b}: {g}, flushed {flushed}"
        );
    }
}
