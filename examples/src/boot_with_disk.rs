//! Create and boot a PV domain with a disk served by `blkback`, as a toolstack does.
//!
//! The toolstack's part, in libxl's order: create the domain and build a kernel into it
//! (`xenctrl`), make it known to xenstored (its home `/local/domain/<id>` and an
//! introduction), write its `vbd` device (`xenbus::create_device`, with libxl's keys:
//! `params`/`mode`/`type` on the backend side, `virtual-device` on the frontend side), and
//! unpause it. dom0 serves the disk with [`blkback::BlkBack`] under a [`xenbus::Backend`].
//! The guest's part (what Linux's xen-blkfront does) is played by `blkback`'s Rust test
//! frontend, running as the domain the toolstack built: it takes its ring and buffers from
//! the guest's own memory, writes a few blocks and reads them back. Then the guest closes the
//! device and the toolstack removes it and destroys the domain.
//!
//! Uses only public APIs: `xenctrl` (on the simulated host here), the `xenstored` library
//! for a daemon in this process, `xenstore`'s client, `xenbus` and `blkback` (whose
//! `test-utils` feature provides the frontend).

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blkback::abi::Status;
use blkback::blkfront::{Blkfront, FrontConfig, IoReq, Op};
use blkback::xen::XenSimGuest;
use blkback::BlkBack;
use xen_types::{DomId, Pages, Pfn};
use xenbus::{create_device, destroy_device, Backend, Store, XenbusState, XsStore};
use xenctrl::{DomainConfig, GuestImage, ImageSource, Xen};
use xenstore::{Access, Client, FdTransport, Perm};

use crate::demo::sample_kernel;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The disk's `virtual-device`: `xvda` (major 202, minor 0).
pub const XVDA: u32 = 51712;
const BLOCK: usize = 4096;

/// What the walk-through did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The guest's domain id.
    pub domid: DomId,
    /// Disk size the frontend saw, in 512-byte sectors.
    pub sectors: u64,
    /// Blocks written by the guest and read back equal.
    pub blocks_read_back: usize,
    /// Blocks found in the image file in dom0 as the guest wrote them.
    pub blocks_in_image: usize,
    /// The backend's state once the guest closed the device.
    pub backend_state: XenbusState,
    /// Host free memory before the domain was created.
    pub free_before: Pages,
    /// Host free memory while it ran.
    pub free_running: Pages,
    /// Host free memory after it was destroyed.
    pub free_after: Pages,
}

/// What block `i` holds: a line naming it, then its number in every byte.
fn block(dom: DomId, i: usize) -> Vec<u8> {
    let mut b = vec![i as u8; BLOCK];
    let line = format!("block {i} written by domain {}\n", dom.0);
    b[..line.len()].copy_from_slice(line.as_bytes());
    b
}

/// Creates a PV domain on `host` with a `disk_mib` MiB disk (a raw image in a temporary
/// folder) served by `blkback`, lets the guest write `blocks` 4 KiB blocks and read them
/// back, checks the image, and tears everything down.
pub fn run(
    host: &xen_sim::Host,
    disk_mib: u64,
    blocks: usize,
    out: &mut dyn Write,
) -> Result<Report> {
    let xen = Xen::sim(host.clone());
    let free_before = xen.physinfo()?.free_pages;

    // dom0's services: xenstored, and the block backend watching its backend directory.
    let dir = tempfile::tempdir()?;
    let daemon = xenstored::Daemon::new(xenstored::Config {
        socket_path: dir.path().join("socket"),
        data_dir: None,
        ..xenstored::Config::default()
    })?
    .spawn()?;
    let dom0 = Arc::new(XsStore::new(Client::connect_socket(daemon.socket_path())?)?);
    let drv = Arc::new(BlkBack::sim(host, DomId::DOM0, blkback::Config::default())?);
    let backend = Backend::start(dom0.clone(), DomId::DOM0, drv)?;

    // The toolstack: create and build the domain.
    let dom = xen.create_domain(&DomainConfig::pv(1))?;
    xen.set_max_vcpus(dom, 1)?;
    let kernel = ImageSource::Bytes(sample_kernel(2 << 20));
    let built = xen.build(dom, &GuestImage::new(kernel, Pages::from_mib(32)))?;
    let free_running = xen.physinfo()?.free_pages;
    writeln!(
        out,
        "toolstack: built PV domain {} (32 MiB; xenstore ring mfn {:#x}, port {})",
        dom.0, built.store.mfn.0, built.store.port
    )?;

    // Its home in xenstore (libxl's permissions: dom0's, readable by the guest) and the
    // introduction that makes xenstored serve it.
    let home = format!("/local/domain/{}", dom.0);
    dom0.client().transaction(|tx| {
        tx.mkdir(&home)?;
        tx.set_perms(
            &home,
            &[
                Perm::new(DomId::DOM0, Access::None),
                Perm::new(dom, Access::Read),
            ],
        )?;
        tx.write(&format!("{home}/name"), "disk-guest")?;
        tx.write(&format!("{home}/domid"), dom.0.to_string())
    })?;
    // A PV guest's ring is named by its machine frame.
    dom0.client()
        .introduce(dom, Pfn(built.store.mfn.0), built.store.port)?;

    // Its disk: a raw image in dom0, and the device's two directories.
    let image = dir.path().join("disk.img");
    std::fs::File::create(&image)?.set_len(disk_mib << 20)?;
    let params = image.to_str().ok_or("image path is not UTF-8")?;
    create_device(
        &*dom0,
        DomId::DOM0,
        dom,
        "vbd",
        XVDA,
        &[("params", params), ("mode", "w"), ("type", "phy")],
        &[("virtual-device", &XVDA.to_string())],
    )?;
    xen.unpause(dom)?;
    writeln!(
        out,
        "toolstack: vbd {XVDA} -> {params}; domain {} unpaused",
        dom.0
    )?;

    // The guest: its kernel's blkfront, on its own xenstore connection (as over its ring).
    let guest_xs = Arc::new(XsStore::new(Client::with_transport(FdTransport::from(
        daemon.connect_as(dom)?,
    ))?)?);
    let guest = XenSimGuest::new(host);
    guest.adopt(dom)?;
    let front = Blkfront::connect(&guest, guest_xs, dom, XVDA, FrontConfig::default())?;
    writeln!(
        out,
        "guest {}: xvda connected, {} sectors, {} segments per request",
        dom.0, front.sectors, front.max_segments
    )?;

    let mut writes: Vec<IoReq> = (0..blocks)
        .map(|i| IoReq::new(Op::Write, (i * BLOCK / 512) as u64, block(dom, i)))
        .collect();
    front.run(0, &mut writes)?;
    let mut reads: Vec<IoReq> = (0..blocks)
        .map(|i| IoReq::new(Op::Read, (i * BLOCK / 512) as u64, vec![0; BLOCK]))
        .collect();
    front.run(0, &mut reads)?;
    let failed = writes
        .iter()
        .chain(&reads)
        .filter(|r| r.status != Some(Status::Okay))
        .count();
    if failed > 0 {
        return Err(format!("{failed} requests failed").into());
    }
    let blocks_read_back = reads
        .iter()
        .enumerate()
        .filter(|(i, r)| r.buf == block(dom, *i))
        .count();
    writeln!(
        out,
        "guest {}: wrote {blocks} blocks, read {blocks_read_back} back equal",
        dom.0
    )?;

    // The guest closes the device; the toolstack unplugs it and destroys the domain.
    let sectors = front.sectors;
    front.close()?;
    let bpath = xenbus::paths::backend_path(DomId::DOM0, "vbd", dom, XVDA);
    let backend_state = XenbusState::from_node(dom0.read(&format!("{bpath}/state"))?.as_deref());
    // Unplugged: the backend lets the device go when its directory goes.
    drop(front);
    destroy_device(&*dom0, DomId::DOM0, dom, "vbd", XVDA)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !backend.devices().is_empty() {
        if Instant::now() > deadline {
            return Err("the backend did not let the device go".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    xen.destroy(dom)?;
    dom0.rm(&home)?;
    dom0.client().release(dom)?;
    backend.stop();
    let free_after = xen.physinfo()?.free_pages;
    writeln!(
        out,
        "toolstack: device closed (backend {backend_state:?}), domain {} destroyed; host free memory {} MiB before, {} MiB after",
        dom.0,
        free_before.mib(),
        free_after.mib()
    )?;

    // What dom0's image holds now: the guest's blocks.
    let file = std::fs::File::open(&image)?;
    let mut buf = vec![0; BLOCK];
    let mut blocks_in_image = 0;
    for i in 0..blocks {
        file.read_exact_at(&mut buf, (i * BLOCK) as u64)?;
        blocks_in_image += usize::from(buf == block(dom, i));
    }
    writeln!(
        out,
        "dom0: {blocks_in_image} of {blocks} blocks in {params}"
    )?;
    Ok(Report {
        domid: dom,
        sectors,
        blocks_read_back,
        blocks_in_image,
        backend_state,
        free_before,
        free_running,
        free_after,
    })
}
