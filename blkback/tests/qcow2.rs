//! blkback serving qcow2 chains of the storage manager's file SR, checked through the
//! verifying test frontend on the simulated host: write, snapshot, write more, read the
//! snapshot (old data) and the disk (new data); clone and diverge; delete the middle of a
//! chain and read everything back; snapshot a disk while its guest writes on (pause,
//! snapshot, resume on the new leaf) and lose nothing.

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
    drv: Arc<BlkBack<SimGnttab, SimEvtchn>>,
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
        drv,
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
    /// The image the backend serves (`params`).
    path: String,
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
            path: a.path.to_str().unwrap().to_owned(),
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

/// One write of the live-snapshot test: blocks `first..first + PER_REQ` stamped with
/// generation `g`, and the test's phase when it was issued and when it was answered
/// (0: before the pause, 1: paused or snapshotting, 2: resumed).
#[derive(Debug, Clone, Copy)]
struct Written {
    first: u64,
    g: u64,
    issued: u8,
    acked: u8,
}

/// Reads the whole disk; every sector must carry its own number and one of the
/// generations `allowed[block]` allows (0: never written).
fn check_allowed(p: &Plugged<'_>, allowed: &[Vec<u64>], what: &str) {
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
        p.front.run(0, chunk).unwrap();
    }
    for (r, req) in reqs.iter().enumerate() {
        assert_eq!(req.status, Some(Status::Okay), "{what}: read {r}");
        for i in 0..PER_REQ {
            let block = r as u64 * PER_REQ + i;
            for s in 0..8 {
                let (sector, g) = read_stamp(&req.buf, (i * 8 + s) as usize);
                let ok = allowed[block as usize].contains(&g)
                    && (g == 0 && sector == 0 || sector == block * 8 + s);
                assert!(
                    ok,
                    "{what}: block {block} sector {s} holds generation {g} (sector {sector}), allowed {:?}",
                    allowed[block as usize]
                );
            }
        }
    }
}

#[test]
fn a_snapshot_of_a_disk_being_written_loses_nothing_and_holds_the_data_before_it() {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

    let e = env();
    let v = e.sr.vdi_create("disk", BLOCKS * 4096).unwrap().uuid;
    let p = e.plug(v, true);
    let phase = AtomicU8::new(0);
    let done = AtomicBool::new(false);
    // Batches the guest began and finished (one is held while the disk is paused).
    let started = AtomicU64::new(0);
    let finished = AtomicU64::new(0);
    let written = std::thread::scope(|scope| {
        // The guest: batches of four 32 KiB writes in flight, round the disk, until told
        // to stop; each generation once.
        let writer = scope.spawn(|| {
            let mut log = Vec::new();
            let mut g = 0u64;
            while !done.load(Ordering::SeqCst) {
                let issued = phase.load(Ordering::SeqCst);
                let mut batch = Vec::new();
                let mut meta = Vec::new();
                for _ in 0..4 {
                    g += 1;
                    let first = ((g - 1) * PER_REQ) % BLOCKS;
                    let mut buf = vec![0u8; (PER_REQ * 4096) as usize];
                    stamp(&mut buf, first * 8, g);
                    batch.push(IoReq::new(Op::Write, first * 8, buf));
                    meta.push((first, g));
                }
                started.fetch_add(1, Ordering::SeqCst);
                p.front.run(0, &mut batch).unwrap();
                finished.fetch_add(1, Ordering::SeqCst);
                let acked = phase.load(Ordering::SeqCst);
                for (r, (first, g)) in batch.iter().zip(meta) {
                    assert_eq!(r.status, Some(Status::Okay), "write of generation {g}");
                    log.push(Written {
                        first,
                        g,
                        issued,
                        acked,
                    });
                }
            }
            log
        });
        // Let the guest write a while, then snapshot as the toolstack does: pause, the
        // SR's snapshot of the (deactivated) leaf, resume on the new leaf.
        std::thread::sleep(Duration::from_millis(300));
        phase.store(1, Ordering::SeqCst);
        e.drv.pause(p.guest, p.devid).unwrap();
        e.sr.vdi_deactivate(v).unwrap();
        let snap = e.sr.vdi_snapshot(v).unwrap().uuid;
        e.sr.vdi_activate(v).unwrap();
        // The guest's requests wait meanwhile: a batch begun after the pause, or the one
        // begun before it and still unanswered (the pause holds what the backend had not
        // taken), is held until the resume.
        let s0 = started.load(Ordering::SeqCst);
        let t = Instant::now();
        let mut held_since: Option<Instant> = None;
        loop {
            if started.load(Ordering::SeqCst) > s0 {
                break;
            }
            if started.load(Ordering::SeqCst) > finished.load(Ordering::SeqCst) {
                let since = *held_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
            } else {
                held_since = None;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the guest issued nothing"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
        // A new image of another size is refused and the disk stays paused.
        let other = e.sr.dir().join("other.qcow2");
        sm::image::create(&other, MIB, None).unwrap();
        let err = e
            .drv
            .resume(p.guest, p.devid, Some(other.to_str().unwrap()))
            .unwrap_err();
        assert!(err.to_string().contains("sectors"), "{err}");
        // Phase 2 before the resume: a held batch is answered after it, so it reads 2.
        phase.store(2, Ordering::SeqCst);
        e.drv.resume(p.guest, p.devid, Some(&p.path)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        done.store(true, Ordering::SeqCst);
        let log = writer.join().unwrap();
        (log, snap)
    });
    let (log, snap) = written;
    assert!(
        log.iter().any(|w| w.issued < 2 && w.acked == 2),
        "no write waited for the resume"
    );
    assert!(
        log.iter().any(|w| w.issued == 2),
        "no write after the resume"
    );
    assert!(
        log.iter().any(|w| w.acked == 0),
        "no write before the pause"
    );
    // The disk: every write, the last generation of each block.
    let mut last = vec![0u64; BLOCKS as usize];
    // The snapshot: what was answered before the pause, and maybe what was in flight.
    let mut before = vec![0u64; BLOCKS as usize];
    let mut maybe: Vec<Vec<u64>> = vec![Vec::new(); BLOCKS as usize];
    for w in &log {
        for b in w.first..w.first + PER_REQ {
            last[b as usize] = w.g;
            if w.acked == 0 {
                before[b as usize] = w.g;
            } else if w.issued < 2 {
                maybe[b as usize].push(w.g);
            }
        }
    }
    let disk_allowed: Vec<Vec<u64>> = last.iter().map(|&g| vec![g]).collect();
    check_allowed(&p, &disk_allowed, "disk after the live snapshot");
    // The guest flushes; a new process reading the disk's image while the backend still
    // runs (as the next start after a hard shutdown that killed it) finds every write.
    let mut flush = [IoReq::new(Op::Flush, 0, Vec::new())];
    p.front.run(0, &mut flush).unwrap();
    assert_eq!(flush[0].status, Some(Status::Okay));
    let on_disk = stamps_on_disk(&e.sr.dir().join(format!("{v}.qcow2")), BLOCKS);
    for (b, got) in on_disk.iter().enumerate() {
        let g = last[b];
        let want = if g == 0 { (0, 0) } else { (b as u64 * 8, g) };
        assert_eq!(*got, want, "disk's image after the flush, block {b}");
    }
    p.unplug();
    let snap_allowed: Vec<Vec<u64>> = before
        .iter()
        .zip(maybe)
        .map(|(&b, m)| {
            std::iter::once(b)
                .chain(m.into_iter().filter(|&g| g > b))
                .collect()
        })
        .collect();
    let s = e.plug(snap, false);
    check_allowed(&s, &snap_allowed, "snapshot taken while the guest wrote");
    s.unplug();
    // Plugged again: the disk kept everything.
    let p = e.plug(v, true);
    check_allowed(&p, &disk_allowed, "disk plugged again");
    p.unplug();
}

#[test]
fn a_disk_closed_while_paused_fails_its_waiting_requests_instead_of_hanging() {
    let e = env();
    let v = e.sr.vdi_create("disk", BLOCKS * 4096).unwrap().uuid;
    let p = e.plug(v, true);
    let mut model = vec![0u64; BLOCKS as usize];
    p.write(0, 8, 1, &mut model);
    // Nothing connected under that name.
    assert!(e.drv.pause(DomId(999), 51712).is_err());
    assert!(e.drv.resume(p.guest, p.devid, None).is_err(), "not paused");
    e.drv.pause(p.guest, p.devid).unwrap();
    let r = std::thread::scope(|scope| {
        let w = scope.spawn(|| {
            let mut req = [IoReq::new(Op::Write, 0, vec![7; 4096])];
            let _ = p.front.run(0, &mut req);
            req[0].status
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(!w.is_finished(), "a request went through a paused disk");
        // The device goes away: the waiting write is failed, not written.
        destroy_device(&**e.xs.dom0(), DomId::DOM0, p.guest, "vbd", p.devid).unwrap();
        e.xs.destroy_domain(p.guest).unwrap();
        w.join().unwrap()
    });
    assert_ne!(
        r,
        Some(Status::Okay),
        "the write waiting on the pause was failed"
    );
    let t = Instant::now();
    while e.be.devices().contains(&(p.guest, p.devid)) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the backend hung on the paused disk"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    e.sr.vdi_deactivate(v).unwrap();
    e.sr.vdi_detach(v).unwrap();
    let img = sm::image::Image::open(&e.sr.dir().join(format!("{v}.qcow2")), false).unwrap();
    let mut b = vec![0u8; 4096];
    img.read(&mut b, 0).unwrap();
    assert_eq!(read_stamp(&b, 0), (0, 1), "the failed write did not land");
}

/// Reads `blocks` 4 KiB blocks from the start of the image file at `path` as a new process
/// would after the backend died without closing it (a device model killed by a hard
/// shutdown), and returns each block's (sector, generation) stamp of its first sector.
fn stamps_on_disk(path: &std::path::Path, blocks: u64) -> Vec<(u64, u64)> {
    let img = sm::image::Image::open(path, false).unwrap();
    let mut buf = vec![0u8; (blocks * 4096) as usize];
    img.read(&mut buf, 0).unwrap();
    (0..blocks)
        .map(|b| read_stamp(&buf, (b * 8) as usize))
        .collect()
}

#[test]
fn a_write_flushed_after_a_live_snapshot_is_in_the_disks_image_before_the_backend_closes() {
    let e = env();
    let v = e.sr.vdi_create("disk", BLOCKS * 4096).unwrap().uuid;
    let p = e.plug(v, true);
    let mut model = vec![0u64; BLOCKS as usize];
    // Pattern A over the first 4 MiB, flushed.
    p.write(0, 1024, 1, &mut model);
    // The live snapshot as the toolstack takes it.
    e.drv.pause(p.guest, p.devid).unwrap();
    e.sr.vdi_deactivate(v).unwrap();
    let snap = e.sr.vdi_snapshot(v).unwrap().uuid;
    e.sr.vdi_activate(v).unwrap();
    e.drv.resume(p.guest, p.devid, Some(&p.path)).unwrap();
    // Writes elsewhere, then pattern B over A, flushed.
    p.write(1024, 512, 2, &mut model);
    p.write(0, 1024, 3, &mut model);
    // What a new process finds in the files while the backend still runs: the guest
    // flushed, so the disk's image holds B and the snapshot's holds A.
    let disk = stamps_on_disk(&e.sr.dir().join(format!("{v}.qcow2")), 1536);
    for (b, got) in disk.iter().enumerate() {
        let want = (b as u64 * 8, model[b]);
        assert_eq!(*got, want, "disk's image, block {b}");
    }
    let s = stamps_on_disk(&e.sr.dir().join(format!("{snap}.qcow2")), 1024);
    for (b, got) in s.iter().enumerate() {
        assert_eq!(*got, (b as u64 * 8, 1), "snapshot's image, block {b}");
    }
    p.check(&model, "disk through the backend");
    p.unplug();
}
