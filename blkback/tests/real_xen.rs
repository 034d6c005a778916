//! blkback on real Xen, inside a dom0 (run by `cargo xtask e2e`): dom0 serves an image to
//! a Rust frontend in dom0 itself, through the real xenstored, `/dev/xen/gntdev` (backend
//! mappings), `/dev/xen/gntalloc` (frontend pages) and `/dev/xen/evtchn`. The directory
//! types are private (`vbd-rs-e2e`) so Linux's own blkback/blkfront leave them alone.

use std::sync::Arc;
use std::time::Duration;

use blkback::abi::Status;
use blkback::blkfront::{read_stamp, stamp, Blkfront, FrontConfig, IoReq, Op};
use blkback::xen::Dom0Front;
use blkback::{BlkBack, Config};
use xen_types::DomId;
use xenbus::{create_device, destroy_device, Backend, XsStore};

const TYPE: &str = "vbd-rs-e2e";

fn serve_and_verify(devid: u32, persistent: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let store = Arc::new(XsStore::connect().unwrap());
    let drv = Arc::new(
        BlkBack::open(Config {
            device_type: TYPE.into(),
            ..Default::default()
        })
        .unwrap(),
    );
    let be = Backend::start(store.clone(), DomId::DOM0, drv).unwrap();
    let _ = destroy_device(&*store, DomId::DOM0, DomId::DOM0, TYPE, devid);
    create_device(
        &*store,
        DomId::DOM0,
        DomId::DOM0,
        TYPE,
        devid,
        &[("params", path.to_str().unwrap()), ("mode", "w")],
        &[],
    )
    .unwrap();
    let f = Blkfront::connect(
        &Dom0Front::default(),
        store.clone(),
        DomId::DOM0,
        devid,
        FrontConfig {
            device_type: TYPE.into(),
            persistent,
            max_segments: 16,
            max_inflight: 8,
            timeout: Duration::from_secs(60),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(f.sectors, (4 << 20) / 512);
    // 8 writes of 64 KiB (indirect), then read everything back and check the stamps.
    let mut writes: Vec<IoReq> = (0..8u64)
        .map(|i| {
            let mut buf = vec![0u8; 65536];
            for b in 0..16u64 {
                let s = i * 128 + b * 8;
                stamp(
                    &mut buf[(b * 4096) as usize..((b + 1) * 4096) as usize],
                    s,
                    3,
                );
            }
            IoReq::new(Op::Write, i * 128, buf)
        })
        .collect();
    f.run(0, &mut writes).unwrap();
    assert!(writes.iter().all(|r| r.status == Some(Status::Okay)));
    let mut fl = [IoReq::new(Op::Flush, 0, vec![])];
    f.run(0, &mut fl).unwrap();
    assert_eq!(fl[0].status, Some(Status::Okay));
    let mut reads: Vec<IoReq> = (0..8u64)
        .map(|i| IoReq::new(Op::Read, i * 128, vec![0u8; 65536]))
        .collect();
    f.run(0, &mut reads).unwrap();
    for (i, r) in reads.iter().enumerate() {
        assert_eq!(r.status, Some(Status::Okay));
        for s in 0..128 {
            assert_eq!(read_stamp(&r.buf, s), (i as u64 * 128 + s as u64, 3));
        }
    }
    // The file has the data too.
    let data = std::fs::read(&path).unwrap();
    assert_eq!(read_stamp(&data, 1000), (1000, 3));
    f.close().unwrap();
    drop(f);
    destroy_device(&*store, DomId::DOM0, DomId::DOM0, TYPE, devid).unwrap();
    be.stop();
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn dom0_loopback_persistent_grants_verified_io() {
    serve_and_verify(0xe2e0, true);
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn dom0_loopback_per_request_grants_verified_io() {
    serve_and_verify(0xe2e1, false);
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn real_host_opens() {
    BlkBack::open(Config::default()).unwrap();
}
