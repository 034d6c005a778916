//! blkback serving qcow2 chains of the storage manager's file SR, checked through the
//! verifying test frontend on the simulated host: write, snapshot, write more, read the
//! snapshot (old data) and the disk (new data); clone and diverge; delete the middle of a
//! chain and read everything back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use blkback::abi::Status;
use blkback::blkfront::{read_stamp, stamp, Blkfront, FrontConfig, IoReq, Op};
use blkback::xen::XenSimGuest;
use blkback::{BlkBack, Config};
use evtchn::SimEvtchn;
use gnttab::SimGnttab;
use sm::file::FileSr;
use sm::{SrDriver, SrUuid, VdiUuid};
use xen_types::DomId;
use xenbus::testing::TestXenstore;
use xenbus::{create_device, destroy_device, Backend, Store, XsStore};

const MIB: u64 = 1 << 20;
/// 4 KiB blocks per disk (8 MiB).
const BLOCKS: u64 = 2048;
/// Blocks per request.
const PER_REQ: u64 = 8;

type Front = Blkfront<XsStore, XenSimGuest>;

struct Env {
    xs: TestXenstore,
    host: XenSimGuest,
    _drv: Arc<BlkBack<SimGnttab, SimEvtchn>>,
    be: Backend,
    sr: FileSr,
    /// Each plug is a new guest (the simulated frontend creates its domain).
    next_guest: std::cell::Cell<u16>,
    _dir: tempfile::TempDir,
}

fn env() -> Env {
    let xs = TestXenstore::start().unwrap();
    let sim = xen_sim::Host::default();
    let drv = Arc::new(BlkBack::sim(&sim, DomId::DOM0, Config::default()).unwrap());
    let be = Backend::start(xs.dom0().clone(), DomId::DOM0, drv.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sr = FileSr::new(SrUuid::new(), dir.path().join("sr"));
    sr.sr_create().unwrap();
    sr.sr_attach().unwrap();
    Env {
        xs,
        host: XenSimGuest::new(&sim),
        _drv: drv,
        be,
        sr,
        next_guest: std::cell::Cell::new(3),
        _dir: dir,
    }
}

/// One VDI plugged into the guest: the SR's attach/activate, the toolstack's device.
struct Plugged<'e> {
    env: &'e Env,
    vdi: VdiUuid,
    guest: DomId,
    devid: u32,
    front: Front,
}

impl Env {
    fn plug(&self, vdi: VdiUuid, writable: bool) -> Plugged<'_> {
        let a = self.sr.vdi_attach(vdi, writable).unwrap();
        self.sr.vdi_activate(vdi).unwrap();
        let (guest, devid) = (DomId(self.next_guest.get()), 51712);
        self.next_guest.set(guest.0 + 1);
        create_device(
            &**self.xs.dom0(),
            DomId::DOM0,
            guest,
            "vbd",
            devid,
            &[
                ("params", a.path.to_str().unwrap()),
                ("mode", if writable { "w" } else { "r" }),
                ("type", "file"),
            ],
            &[("virtual-device", &devid.to_string())],
        )
        .unwrap();
        let store = self.xs.guest(guest).unwrap();
        let front =
            Blkfront::connect(&self.host, store, guest, devid, FrontConfig::default()).unwrap();
        assert_eq!(front.sectors, BLOCKS * 8);
        Plugged {
            env: self,
            vdi,
            guest,
            devid,
            front,
        }
    }
}

impl Plugged<'_> {
    /// Writes generation `g` over `n` blocks from `first`, then flushes.
    fn write(&self, first: u64, n: u64, g: u64, model: &mut [u64]) {
        let mut reqs = Vec::new();
        let mut b = first;
        while b < first + n {
            let len = PER_REQ.min(first + n - b);
            let mut buf = vec![0u8; (len * 4096) as usize];
            for i in 0..len {
                let s = (b + i) * 8;
                stamp(
                    &mut buf[(i * 4096) as usize..((i + 1) * 4096) as usize],
                    s,
                    g,
                );
                model[(b + i) as usize] = g;
            }
            reqs.push(IoReq::new(Op::Write, b * 8, buf));
            b += len;
        }
        for chunk in reqs.chunks_mut(16) {
            self.front.run(0, chunk).unwrap();
            assert!(chunk.iter().all(|r| r.status == Some(Status::Okay)));
        }
        let mut flush = [IoReq::new(Op::Flush, 0, Vec::new())];
        self.front.run(0, &mut flush).unwrap();
        assert_eq!(flush[0].status, Some(Status::Okay));
    }

    /// Reads the whole disk and checks every sector against `model` (0: never written).
    fn check(&self, model: &[u64], what: &str) {
        let mut reqs: Vec<IoReq> = (0..BLOCKS / PER_REQ)
            .map(|r| {
                IoReq::new(
                    Op::Read,
                    r * PER_REQ * 8,
                    vec![0xaa; (PER_REQ * 4096) as usize],
                )
            })
            .collect();
        for chunk in reqs.chunks_mut(16) {
            self.front.run(0, chunk).unwrap();
        }
        for (r, req) in reqs.iter().enumerate() {
            assert_eq!(req.status, Some(Status::Okay), "{what}: read {r}");
            for i in 0..PER_REQ {
                let block = r as u64 * PER_REQ + i;
                let g = model[block as usize];
                for s in 0..8 {
                    let want = if g == 0 { (0, 0) } else { (block * 8 + s, g) };
                    let got = read_stamp(&req.buf, (i * 8 + s) as usize);
                    assert_eq!(got, want, "{what}: block {block} sector {s}");
                }
            }
        }
    }

    /// The guest lets go and shuts down; the device is removed and the VDI detached.
    fn unplug(self) {
        self.front.close().unwrap();
        let e = self.env;
        destroy_device(&**e.xs.dom0(), DomId::DOM0, self.guest, "vbd", self.devid).unwrap();
        // The guest goes away: the backend's device thread ends and its image is closed.
        e.xs.destroy_domain(self.guest).unwrap();
        let t = Instant::now();
        while e.be.devices().contains(&(self.guest, self.devid)) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "backend kept {:?} (unplugging {:?})",
                e.be.devices(),
                (self.guest, self.devid)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        e.sr.vdi_deactivate(self.vdi).unwrap();
        e.sr.vdi_detach(self.vdi).unwrap();
    }
}

#[test]
fn snapshot_clone_and_chain_deletion_through_blkback() {
    let e = env();
    let v = e.sr.vdi_create("disk", BLOCKS * 4096).unwrap().uuid;
    let mut disk = vec![0u64; BLOCKS as usize];

    // Write, snapshot, write more.
    let p = e.plug(v, true);
    p.write(0, 512, 1, &mut disk);
    p.check(&disk, "disk before the snapshot");
    p.unplug();
    let snap_model = disk.clone();
    let s1 = e.sr.vdi_snapshot(v).unwrap().uuid;
    let p = e.plug(v, true);
    p.check(&disk, "disk right after the snapshot");
    p.write(256, 512, 2, &mut disk);
    p.check(&disk, "disk after writing on");
    p.unplug();

    // The snapshot reads the old data and refuses writes.
    let s = e.plug(s1, false);
    s.check(&snap_model, "snapshot");
    let mut w = [IoReq::new(Op::Write, 0, vec![1; 4096])];
    s.front.run(0, &mut w).unwrap();
    assert_eq!(w[0].status, Some(Status::Error), "a snapshot is read-only");
    s.unplug();

    // Clone and diverge: both plugged at once.
    let c = e.sr.vdi_clone(v).unwrap().uuid;
    let mut clone = disk.clone();
    let (pv, pc) = (e.plug(v, true), e.plug(c, true));
    pv.write(0, 64, 3, &mut disk);
    pc.write(64, 64, 4, &mut clone);
    pv.check(&disk, "disk after the clone diverged");
    pc.check(&clone, "clone");
    pv.unplug();
    pc.unplug();

    // Delete the middle of the chain: s1 <- hidden base <- {v, c}. s1 goes hidden and is
    // coalesced into the base; then the clone goes and the base is coalesced into v.
    e.sr.vdi_destroy(s1).unwrap();
    assert_eq!(e.sr.sr_scan().unwrap().len(), 2);
    let (pv, pc) = (e.plug(v, true), e.plug(c, true));
    pv.check(&disk, "disk after deleting its snapshot");
    pc.check(&clone, "clone after deleting the snapshot");
    pv.unplug();
    pc.unplug();
    e.sr.vdi_destroy(c).unwrap();
    let info = e.sr.vdi_info(v).unwrap();
    assert_eq!(
        info.parent, None,
        "the whole chain was coalesced into the disk"
    );
    let p = e.plug(v, true);
    p.check(&disk, "flat disk");
    p.write(1000, 8, 5, &mut disk);
    p.check(&disk, "flat disk written again");
    p.unplug();
    assert!(info.physical_utilisation >= 3 * MIB);
}

#[test]
fn a_qcow2_image_whose_backing_file_is_gone_is_refused_with_an_error_node() {
    let e = env();
    let dir = e.sr.dir();
    let top = dir.join("orphan.qcow2");
    sm::image::create(&top, MIB, Some("missing-base.qcow2")).unwrap();
    let fe = DomId(40);
    create_device(
        &**e.xs.dom0(),
        DomId::DOM0,
        fe,
        "vbd",
        51712,
        &[("params", top.to_str().unwrap()), ("mode", "w")],
        &[],
    )
    .unwrap();
    let be = xenbus::paths::backend_path(DomId::DOM0, "vbd", fe, 51712);
    let t = Instant::now();
    let err = loop {
        if let Some(err) = e.xs.dom0().read(&format!("{be}/error")).unwrap() {
            break err;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no error reported");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(err.contains("missing-base.qcow2"), "{err}");
    // The image is left as it was.
    assert_eq!(
        sm::image::read_header(&top)
            .unwrap()
            .backing_file
            .as_deref(),
        Some("missing-base.qcow2")
    );
}
