//! The file SR's operations on real files, data checked through our reader and qemu-img.

mod common;

use common::*;
use sm::image::{self, Image};
use sm::{Error, SrDriver, SrUuid, VdiUuid};

const SIZE: u64 = 16 * MIB;

fn code<T: std::fmt::Debug>(r: sm::Result<T>) -> &'static str {
    r.unwrap_err().code()
}

#[test]
fn snapshot_freezes_old_data_and_copies_nothing() {
    let (_d, sr) = new_sr();
    let v = sr.vdi_create("disk", SIZE).unwrap();
    write(&sr, v.uuid, 1, 0, 4 * MIB);
    let before = sr.vdi_info(v.uuid).unwrap().physical_utilisation;
    assert!(before >= 4 * MIB, "4 MiB written: {before}");
    let s = sr.vdi_snapshot(v.uuid).unwrap();
    assert!(s.is_a_snapshot);
    assert_eq!(s.snapshot_of, Some(v.uuid));
    assert_eq!(s.virtual_size, SIZE);
    // The data moved with the frozen image; the disk's new leaf holds only metadata.
    assert_eq!(s.physical_utilisation, before);
    let leaf = sr.vdi_info(v.uuid).unwrap();
    assert_eq!(leaf.parent, Some(s.uuid.into()));
    assert!(
        leaf.physical_utilisation < MIB,
        "{}",
        leaf.physical_utilisation
    );

    write(&sr, v.uuid, 2, MIB, MIB);
    let old = expected(SIZE, &[(1, 0, 4 * MIB)]);
    let new = expected(SIZE, &[(1, 0, 4 * MIB), (2, MIB, MIB)]);
    assert!(
        read(&sr, s.uuid, 0, SIZE) == old,
        "the snapshot reads the old data"
    );
    assert!(
        read(&sr, v.uuid, 0, SIZE) == new,
        "the disk reads the new data"
    );
    qemu_verify(&image(&sr, s.uuid), &old);
    qemu_verify(&image(&sr, v.uuid), &new);
    // A snapshot is read-only: no writable attach, no resize, no snapshot of it.
    assert_eq!(code(sr.vdi_attach(s.uuid, true)), "VDI_IS_A_SNAPSHOT");
    assert_eq!(code(sr.vdi_resize(s.uuid, 2 * SIZE)), "VDI_IS_A_SNAPSHOT");
    assert_eq!(code(sr.vdi_snapshot(s.uuid)), "VDI_IS_A_SNAPSHOT");
}

#[test]
fn clones_diverge_over_a_shared_base() {
    let (_d, sr) = new_sr();
    let v = sr.vdi_create("disk", SIZE).unwrap();
    write(&sr, v.uuid, 1, 0, 2 * MIB);
    let c = sr.vdi_clone(v.uuid).unwrap();
    assert!(!c.is_a_snapshot);
    let base = c.parent.expect("the clone reads through a base");
    assert_eq!(sr.vdi_info(v.uuid).unwrap().parent, Some(base));
    // The base is hidden: not a VDI.
    assert_eq!(sr.sr_scan().unwrap().len(), 2);
    write(&sr, v.uuid, 2, 0, MIB);
    write(&sr, c.uuid, 3, MIB, MIB);
    let vv = expected(SIZE, &[(1, 0, 2 * MIB), (2, 0, MIB)]);
    let cc = expected(SIZE, &[(1, 0, 2 * MIB), (3, MIB, MIB)]);
    assert!(read(&sr, v.uuid, 0, SIZE) == vv);
    assert!(read(&sr, c.uuid, 0, SIZE) == cc);
    qemu_verify(&image(&sr, v.uuid), &vv);
    qemu_verify(&image(&sr, c.uuid), &cc);

    // A clone of a snapshot is a leaf straight over it.
    let s = sr.vdi_snapshot(v.uuid).unwrap();
    let c2 = sr.vdi_clone(s.uuid).unwrap();
    assert_eq!(c2.parent, Some(s.uuid.into()));
    write(&sr, c2.uuid, 4, 3 * MIB, MIB);
    assert!(
        read(&sr, s.uuid, 0, SIZE) == vv,
        "the snapshot is unchanged"
    );

    // Destroying one clone leaves the base with one child, coalesced into it.
    sr.vdi_destroy(c.uuid).unwrap();
    let files = std::fs::read_dir(sr.dir()).unwrap().count();
    assert!(
        !image(&sr, VdiUuid(base.0)).exists(),
        "the base was coalesced ({files} files)"
    );
    assert!(read(&sr, v.uuid, 0, SIZE) == vv);
    assert!(read(&sr, s.uuid, 0, SIZE) == vv);
    qemu_verify(&image(&sr, v.uuid), &vv);
}

#[test]
fn deleting_the_middle_of_a_chain_coalesces_into_its_child() {
    let (_d, sr) = new_sr();
    let v = sr.vdi_create("disk", SIZE).unwrap();
    write(&sr, v.uuid, 1, 0, 4 * MIB);
    let s1 = sr.vdi_snapshot(v.uuid).unwrap();
    write(&sr, v.uuid, 2, 2 * MIB, 4 * MIB);
    let s2 = sr.vdi_snapshot(v.uuid).unwrap();
    write(&sr, v.uuid, 3, 5 * MIB, 2 * MIB);
    // Chain: s1 <- s2 <- v.
    assert_eq!(sr.vdi_info(s2.uuid).unwrap().parent, Some(s1.uuid.into()));
    let l1 = [(1, 0, 4 * MIB)];
    let l3 = [
        (1, 0, 4 * MIB),
        (2, 2 * MIB, 4 * MIB),
        (3, 5 * MIB, 2 * MIB),
    ];

    sr.vdi_destroy(s2.uuid).unwrap();
    assert!(!image(&sr, s2.uuid).exists(), "the middle image is gone");
    assert_eq!(sr.vdi_info(v.uuid).unwrap().parent, Some(s1.uuid.into()));
    assert_eq!(code(sr.vdi_info(s2.uuid)), "VDI_MISSING");
    assert!(read(&sr, v.uuid, 0, SIZE) == expected(SIZE, &l3));
    assert!(read(&sr, s1.uuid, 0, SIZE) == expected(SIZE, &l1));
    qemu_verify(&image(&sr, v.uuid), &expected(SIZE, &l3));
    qemu_verify(&image(&sr, s1.uuid), &expected(SIZE, &l1));

    // Deleting the base too leaves one flat image.
    sr.vdi_destroy(s1.uuid).unwrap();
    let info = sr.vdi_info(v.uuid).unwrap();
    assert_eq!(info.parent, None);
    assert_eq!(
        image::read_header(&image(&sr, v.uuid))
            .unwrap()
            .backing_file,
        None
    );
    assert!(read(&sr, v.uuid, 0, SIZE) == expected(SIZE, &l3));
    qemu_verify(&image(&sr, v.uuid), &expected(SIZE, &l3));
    let qcow2s = std::fs::read_dir(sr.dir())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".qcow2")
        })
        .count();
    assert_eq!(qcow2s, 1);
}

#[test]
fn copy_is_a_full_flat_copy() {
    let (_d, sr) = new_sr();
    let v = sr.vdi_create("disk", SIZE).unwrap();
    write(&sr, v.uuid, 1, 0, 2 * MIB);
    sr.vdi_snapshot(v.uuid).unwrap();
    write(&sr, v.uuid, 2, 8 * MIB, MIB);
    let c = sr.vdi_copy(v.uuid).unwrap();
    assert_eq!(c.parent, None);
    assert_eq!(c.virtual_size, SIZE);
    assert!(
        c.physical_utilisation >= 3 * MIB,
        "{}",
        c.physical_utilisation
    );
    let want = expected(SIZE, &[(1, 0, 2 * MIB), (2, 8 * MIB, MIB)]);
    assert!(read(&sr, c.uuid, 0, SIZE) == want);
    write(&sr, v.uuid, 3, 0, MIB);
    assert!(
        read(&sr, c.uuid, 0, SIZE) == want,
        "the copy is independent"
    );
    qemu_verify(&image(&sr, c.uuid), &want);
}

#[test]
fn resize_grows_and_refuses_what_xapi_refuses() {
    let (_d, sr) = new_sr();
    let v = sr.vdi_create("disk", SIZE).unwrap();
    write(&sr, v.uuid, 1, SIZE - MIB, MIB);
    let r = sr.vdi_resize(v.uuid, 2 * SIZE).unwrap();
    assert_eq!(r.virtual_size, 2 * SIZE);
    assert_eq!(
        Image::open(&image(&sr, v.uuid), false).unwrap().size(),
        2 * SIZE
    );
    let want = expected(2 * SIZE, &[(1, SIZE - MIB, MIB)]);
    assert!(read(&sr, v.uuid, 0, 2 * SIZE) == want);
    qemu_verify(&image(&sr, v.uuid), &want);
    assert!(matches!(
        sr.vdi_resize(v.uuid, SIZE),
        Err(Error::Shrink { .. })
    ));
    sr.vdi_attach(v.uuid, true).unwrap();
    assert_eq!(code(sr.vdi_resize(v.uuid, 4 * SIZE)), "VDI_IN_USE");
    sr.vdi_detach(v.uuid).unwrap();
    // A grown leaf over a smaller snapshot reads zeroes past the snapshot's end.
    let s = sr.vdi_snapshot(v.uuid).unwrap();
    sr.vdi_resize(v.uuid, 3 * SIZE).unwrap();
    let want3 = expected(3 * SIZE, &[(1, SIZE - MIB, MIB)]);
    assert!(read(&sr, v.uuid, 0, 3 * SIZE) == want3);
    assert_eq!(sr.vdi_info(s.uuid).unwrap().virtual_size, 2 * SIZE);
    qemu_verify(&image(&sr, v.uuid), &want3);
}

#[test]
fn in_use_full_and_detached_srs_are_refused_with_xapi_codes() {
    let (_d, sr) = new_sr();
    let v = sr.vdi_create("disk", SIZE).unwrap();
    // Destroying, or detaching the SR under, an attached disk.
    let a = sr.vdi_attach(v.uuid, true).unwrap();
    assert_eq!(a.path, image(&sr, v.uuid));
    assert!(!a.readonly);
    assert_eq!(code(sr.vdi_destroy(v.uuid)), "VDI_IN_USE");
    assert_eq!(code(sr.sr_detach()), "VDI_IN_USE");
    assert_eq!(code(sr.vdi_attach(v.uuid, false)), "VDI_IN_USE");
    // An active disk is neither snapshot nor cloned (its datapath holds the leaf open).
    sr.vdi_activate(v.uuid).unwrap();
    assert_eq!(code(sr.vdi_snapshot(v.uuid)), "VDI_IN_USE");
    assert_eq!(code(sr.vdi_clone(v.uuid)), "VDI_IN_USE");
    assert_eq!(code(sr.vdi_detach(v.uuid)), "VDI_IN_USE");
    sr.vdi_deactivate(v.uuid).unwrap();
    sr.vdi_detach(v.uuid).unwrap();
    // Images are thin: a disk larger than the free space but not the SR is made...
    let st = sr.sr_stats().unwrap();
    let free = st.physical_size - st.physical_utilisation;
    let thin = sr.vdi_create("thin", (free + (1 << 30)).min(st.physical_size) & !511);
    sr.vdi_destroy(thin.unwrap().uuid).unwrap();
    // ...one larger than the whole SR is not, nor a resize beyond it.
    let e = sr
        .vdi_create("huge", (st.physical_size + (1 << 30)) & !511)
        .unwrap_err();
    assert_eq!(e.code(), "SR_FULL");
    assert_eq!(
        code(sr.vdi_resize(v.uuid, (st.physical_size + (1 << 30)) & !511)),
        "SR_FULL"
    );
    assert_eq!(code(sr.vdi_create("odd", 1000)), "INVALID_VALUE");
    assert_eq!(code(sr.vdi_destroy(VdiUuid::new())), "VDI_MISSING");
    // Refused, nothing was lost or left behind.
    assert_eq!(sr.sr_scan().unwrap().len(), 1);
    assert_eq!(sr.sr_stats().unwrap().virtual_allocation, SIZE);
    // Deleting a non-empty SR; the SR detached refuses VDI operations.
    assert_eq!(code(sr.sr_delete()), "SR_NOT_EMPTY");
    sr.sr_detach().unwrap();
    assert_eq!(code(sr.vdi_create("x", SIZE)), "SR_HAS_NO_PBDS");
    assert_eq!(code(sr.sr_scan()), "SR_HAS_NO_PBDS");
    // Re-attached, everything is where it was; emptied, it can be deleted.
    sr.sr_attach().unwrap();
    assert_eq!(sr.sr_scan().unwrap()[0].uuid, v.uuid);
    sr.vdi_destroy(v.uuid).unwrap();
    sr.sr_delete().unwrap();
    assert!(sr.sr_probe().unwrap().is_empty());
}

#[test]
fn create_probe_and_attach_check_the_substrate() {
    let (_d, sr) = new_sr();
    assert_eq!(sr.sr_probe().unwrap(), vec![sr.sr_uuid()]);
    // A second SR over the same directory is refused, as is attaching the wrong uuid.
    let other = sm::file::FileSr::new(SrUuid::new(), sr.dir());
    assert!(matches!(other.sr_create(), Err(Error::SrExists(_))));
    assert!(matches!(other.sr_attach(), Err(Error::Invalid(_))));
    let mut cfg = std::collections::HashMap::new();
    assert!(sm::file::FileSr::from_device_config(SrUuid::new(), "ext", &cfg).is_err());
    cfg.insert("location".to_owned(), sr.dir().display().to_string());
    let same = sm::file::FileSr::from_device_config(sr.sr_uuid(), "ext", &cfg).unwrap();
    assert_eq!(same.sr_type(), "ext");
    same.sr_attach().unwrap();
    assert!(same.sr_scan().unwrap().is_empty());
    assert!(sm::file::FileSr::from_device_config(SrUuid::new(), "lvm", &cfg).is_err());
}

#[test]
fn two_driver_values_on_one_sr_take_turns() {
    // Two drivers over one directory, as two processes would be: one clones (which leaves
    // a hidden base between its steps), the other destroys disks (whose clean-up removes
    // hidden bases without children). The SR lock keeps them from seeing each other's
    // half-done steps.
    let (_d, sr) = new_sr();
    let other = sm::file::FileSr::new(sr.sr_uuid(), sr.dir());
    other.sr_attach().unwrap();
    let v = sr.vdi_create("disk", SIZE).unwrap();
    write(&sr, v.uuid, 1, 0, MIB);
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..10 {
                sr.vdi_clone(v.uuid).unwrap();
            }
        });
        s.spawn(|| {
            for _ in 0..10 {
                let t = other.vdi_create("scratch", MIB).unwrap();
                other.vdi_destroy(t.uuid).unwrap();
            }
        });
    });
    let vdis = sr.sr_scan().unwrap();
    assert_eq!(vdis.len(), 11);
    for i in vdis {
        assert!(read(&sr, i.uuid, 0, SIZE) == expected(SIZE, &[(1, 0, MIB)]));
    }
}
