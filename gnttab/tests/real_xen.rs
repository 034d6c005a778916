//! Grant tables on real Xen, inside a dom0 (run by `cargo xtask e2e`): dom0 shares pages
//! with itself through gntalloc and maps them through gntdev.

use gnttab::{Access, CopyDest, CopySegment, CopySource, Gntshr, Gnttab, GrantStatus};
use xen_types::mem::SharedMemoryExt;
use xen_types::{DomId, PAGE_SIZE};

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn share_with_self_and_map_writes_visible_both_ways() {
    let shr = Gntshr::open().unwrap();
    let area = shr.share(DomId::DOM0, 2, Access::ReadWrite).unwrap();
    let gt = Gnttab::open().unwrap();
    let m = gt.map(DomId::DOM0, area.refs(), Access::ReadWrite).unwrap();
    area.write_obj(PAGE_SIZE + 8, 0x1234_5678_u32).unwrap();
    assert_eq!(m.read_obj::<u32>(PAGE_SIZE + 8).unwrap(), 0x1234_5678);
    m.write_obj(0, 0xaa_u8).unwrap();
    assert_eq!(area.read_obj::<u8>(0).unwrap(), 0xaa);
    let ro = gt
        .map_one(DomId::DOM0, area.refs()[0], Access::ReadOnly)
        .unwrap();
    assert_eq!(ro.read_obj::<u8>(0).unwrap(), 0xaa);
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn read_only_share_cannot_be_mapped_writable() {
    let shr = Gntshr::open().unwrap();
    let area = shr.share(DomId::DOM0, 1, Access::ReadOnly).unwrap();
    let gt = Gnttab::open().unwrap();
    assert!(gt.map(DomId::DOM0, area.refs(), Access::ReadWrite).is_err());
    assert!(gt.map(DomId::DOM0, area.refs(), Access::ReadOnly).is_ok());
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn grant_copy_to_and_from_a_shared_page() {
    let shr = Gntshr::open().unwrap();
    let area = shr.share(DomId::DOM0, 1, Access::ReadWrite).unwrap();
    area.fill(0, PAGE_SIZE, 0x5c).unwrap();
    let gt = Gnttab::open().unwrap();
    let mut out = vec![0u8; 512];
    let data = [0x77u8; 64];
    let mut segs = [
        CopySegment {
            source: CopySource::Gref {
                domid: DomId::DOM0,
                gref: area.refs()[0],
                offset: 256,
            },
            dest: CopyDest::Local(&mut out),
            len: 512,
            status: GrantStatus::GENERAL_ERROR,
        },
        CopySegment {
            source: CopySource::Local(&data),
            dest: CopyDest::Gref {
                domid: DomId::DOM0,
                gref: area.refs()[0],
                offset: 4000,
            },
            len: 64,
            status: GrantStatus::GENERAL_ERROR,
        },
    ];
    gt.copy(&mut segs).unwrap();
    assert_eq!(segs[0].status, GrantStatus::OKAY);
    assert_eq!(segs[1].status, GrantStatus::OKAY);
    assert!(out.iter().all(|&b| b == 0x5c));
    assert_eq!(area.read_obj::<u8>(4063).unwrap(), 0x77);
}
