//! Tests against a real Xen, run inside a dom0 by `cargo xtask e2e`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use xenctrl::{
    DomId, DomainConfig, Error, GuestImage, ImageSource, Pages, ShutdownReason, VcpuId, Xen,
};

/// Reports that this test cannot run here, and why: `cargo xtask e2e` shows it as SKIP (and
/// fails the run unless the test is on its allow-list). Return right after calling it.
fn skip(reason: &str) {
    println!("E2E-SKIP {reason}");
}

fn xen() -> Xen {
    Xen::real().expect("open libxenctrl in dom0")
}

/// Waits until `cond` holds, failing the test after `timeout`.
fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Destroys the domain and waits until it is gone.
fn destroy_and_wait(x: &Xen, dom: DomId) {
    x.destroy(dom).unwrap();
    wait_for("the domain to go", Duration::from_secs(30), || {
        matches!(x.domain_info(dom), Err(Error::NoSuchDomain { .. }))
    });
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn version_and_physinfo_are_sane() {
    let x = xen();
    let v = x.version().unwrap();
    assert_eq!((v.major, v.minor), (4, 17), "{v}");
    let p = x.physinfo().unwrap();
    assert!(p.nr_cpus >= 1);
    assert!(p.cpu_khz > 0);
    assert!(p.total_pages.0 > 0 && p.free_pages <= p.total_pages);
    assert!(p.capabilities.contains(xenctrl::Capabilities::PV));
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn getinfolist_includes_a_running_dom0() {
    let x = xen();
    let all = x.list_domains().unwrap();
    let d0 = all
        .iter()
        .find(|d| d.domid == DomId::DOM0)
        .expect("dom0 listed");
    assert!(d0.online_vcpus >= 1);
    assert!(d0.tot_pages.0 > 0);
    assert!(!d0.paused() && !d0.dying());
    let v = x.vcpu_info(DomId::DOM0, VcpuId(0)).unwrap();
    assert!(v.online && v.cpu_time > Duration::ZERO);
    // Xen refuses to pause the caller.
    assert!(matches!(
        x.pause(DomId::DOM0),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        x.pause(DomId(0x7fe0)),
        Err(Error::NoSuchDomain { .. })
    ));
}

fn lifecycle(config: DomainConfig) {
    let x = xen();
    let free0 = x.physinfo().unwrap().free_pages;
    let dom = x.create_domain(&config).unwrap();
    let info = x.domain_info(dom).unwrap();
    assert!(info.paused(), "created paused");
    assert_eq!(info.handle, config.handle);
    x.set_max_vcpus(dom, config.max_vcpus).unwrap();
    x.set_max_mem(dom, Pages::from_mib(16)).unwrap();
    x.increase_reservation(dom, Pages::from_mib(8)).unwrap();
    assert_eq!(x.domain_info(dom).unwrap().tot_pages, Pages::from_mib(8));
    assert!(x.physinfo().unwrap().free_pages < free0);
    x.pause(dom).unwrap();
    x.unpause(dom).unwrap();
    x.unpause(dom).unwrap();
    assert!(!x.domain_info(dom).unwrap().paused());
    assert!(matches!(x.unpause(dom), Err(Error::InvalidArgument { .. })));
    x.shutdown(dom, ShutdownReason::Poweroff).unwrap();
    wait_for("shutdown", Duration::from_secs(10), || {
        x.domain_info(dom).unwrap().shutdown_reason == Some(ShutdownReason::Poweroff)
    });
    destroy_and_wait(&x, dom);
    // Memory comes back (other activity in dom0 may move it a little).
    wait_for("free memory to return", Duration::from_secs(30), || {
        x.physinfo().unwrap().free_pages.0 + 256 >= free0.0
    });
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn create_pause_unpause_destroy_an_empty_pv_domain() {
    lifecycle(DomainConfig::pv(1));
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn create_pause_unpause_destroy_an_empty_pvh_domain() {
    let x = xen();
    if !x
        .physinfo()
        .unwrap()
        .capabilities
        .contains(xenctrl::Capabilities::HVM)
    {
        return skip("no HVM support on this host (nested under emulation): PVH cannot run");
    }
    lifecycle(DomainConfig::pvh(1));
}

/// One page of another domain mapped read-only into this process (libxenforeignmemory); the
/// mapping holds a reference on the page, as Xen's zombie domains show.
struct ForeignPage {
    lib: &'static xen_sys::generated::xenforeignmemory::XenForeignMemoryLib,
    h: *mut xen_sys::xenforeignmemory_handle,
    p: *mut std::ffi::c_void,
}

impl ForeignPage {
    fn map(dom: DomId, frame: u64) -> Option<ForeignPage> {
        let lib = xen_sys::libs::xenforeignmemory().ok()?;
        let open = *lib.xenforeignmemory_open.as_ref().ok()?;
        let map = *lib.xenforeignmemory_map.as_ref().ok()?;
        let close = *lib.xenforeignmemory_close.as_ref().ok()?;
        // SAFETY: default logger, no flags.
        let h = unsafe { open(std::ptr::null_mut(), 0) };
        if h.is_null() {
            return None;
        }
        let frames = [frame as xen_sys::xen_pfn_t];
        let mut err = 0;
        // SAFETY: one frame, read-only; `err` receives its status.
        let p = unsafe { map(h, dom.into(), libc::PROT_READ, 1, frames.as_ptr(), &mut err) };
        if p.is_null() || err != 0 {
            // SAFETY: `h` came from xenforeignmemory_open and is closed once.
            unsafe { close(h) };
            return None;
        }
        Some(ForeignPage { lib, h, p })
    }

    /// Reads byte `off` (< 4096) of the page.
    fn byte(&self, off: usize) -> u8 {
        assert!(off < 4096);
        // SAFETY: in bounds of the one-page mapping; the guest may write concurrently.
        unsafe { std::ptr::read_volatile(self.p.cast::<u8>().add(off)) }
    }

    /// The console output a `xencons_interface` page holds.
    fn console_output(&self) -> String {
        let out = std::mem::offset_of!(xen_sys::xencons_interface, out);
        let prod = std::mem::offset_of!(xen_sys::xencons_interface, out_prod);
        let size = std::mem::size_of::<[std::ffi::c_char; 2048]>();
        let prod = u32::from_le_bytes(std::array::from_fn(|i| self.byte(prod + i)));
        let n = (prod as usize).min(size);
        let bytes: Vec<u8> = (0..n).map(|i| self.byte(out + i)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Drop for ForeignPage {
    fn drop(&mut self) {
        if let (Ok(unmap), Ok(close)) = (
            self.lib.xenforeignmemory_unmap.as_ref(),
            self.lib.xenforeignmemory_close.as_ref(),
        ) {
            // SAFETY: the one-page mapping and the handle made in `map`, released once.
            unsafe {
                unmap(self.h, self.p, 1);
                close(self.h);
            }
        }
    }
}

/// The guest's console output so far, read from its console ring.
fn console_output(dom: DomId, frame: u64) -> Option<String> {
    ForeignPage::map(dom, frame).map(|p| p.console_output())
}

fn first_existing(paths: &[&str]) -> Option<PathBuf> {
    paths
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn build_a_pv_guest_and_see_it_run() {
    let Some(kernel) = first_existing(&["/boot/domu-kernel", "/boot/vmlinuz"]) else {
        panic!("no guest kernel in dom0 (/boot/domu-kernel or /boot/vmlinuz)");
    };
    let ramdisk = first_existing(&["/boot/domu-initrd", "/boot/initrd-domu.cpio.gz"]);
    let x = xen();
    let free0 = x.physinfo().unwrap().free_pages;
    // Peer measurement for the e2e table: our create + build + unpause to the guest's first
    // console output (the harness measures `xl create` to its first console line; xl also
    // sets up the guest's disk and network, this guest has none).
    let started = Instant::now();
    let dom = x.create_domain(&DomainConfig::pv(1)).unwrap();
    x.set_max_vcpus(dom, 1).unwrap();
    let mut image = GuestImage::new(ImageSource::File(kernel), Pages::from_mib(128));
    image.ramdisk = ramdisk.map(ImageSource::File);
    image.cmdline = "console=hvc0".into();
    let built = x.build(dom, &image).unwrap();
    assert_ne!(built.console.port, built.store.port);
    assert_ne!(built.console.pfn, built.store.pfn);
    assert_ne!(built.console.mfn.0, u64::MAX);
    let info = x.domain_info(dom).unwrap();
    assert_eq!(info.online_vcpus, 1);
    assert!(info.tot_pages.0 >= Pages::from_mib(120).0);
    x.unpause(dom).unwrap();
    wait_for(
        "the guest's first console output",
        Duration::from_secs(60),
        || console_output(dom, built.console.mfn.0).is_some_and(|c| !c.is_empty()),
    );
    println!(
        "E2E-METRIC our-create-build-to-first-console-output {} ms",
        started.elapsed().as_millis()
    );
    // The guest runs: its vCPU is charged time, and the kernel writes its banner to the
    // console ring the builder set up.
    wait_for("the guest to run", Duration::from_secs(30), || {
        x.vcpu_info(dom, VcpuId(0)).unwrap().cpu_time > Duration::from_millis(10)
    });
    let mut console = String::new();
    let t0 = Instant::now();
    while !console.contains("Linux version") && t0.elapsed() < Duration::from_secs(80) {
        std::thread::sleep(Duration::from_millis(200));
        console = console_output(dom, built.console.mfn.0).unwrap_or_default();
    }
    eprintln!(
        "guest console ({} bytes): {:?}",
        console.len(),
        console.lines().next()
    );
    assert!(
        console.contains("Linux version"),
        "no kernel banner on the console ring: {console:?}"
    );
    let info = x.domain_info(dom).unwrap();
    assert_ne!(
        info.shutdown_reason,
        Some(ShutdownReason::Crash),
        "the guest crashed"
    );
    destroy_and_wait(&x, dom);
    wait_for("free memory to return", Duration::from_secs(30), || {
        x.physinfo().unwrap().free_pages.0 + 256 >= free0.0
    });
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn the_rules_the_simulated_host_copies_hold_on_real_xen() {
    common::xen_rules(&xen());
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn a_destroyed_domain_stays_dying_while_its_page_is_mapped() {
    let Some(kernel) = first_existing(&["/boot/domu-kernel", "/boot/vmlinuz"]) else {
        panic!("no guest kernel in dom0 (/boot/domu-kernel or /boot/vmlinuz)");
    };
    let x = xen();
    let dom = x.create_domain(&DomainConfig::pv(1)).unwrap();
    x.set_max_vcpus(dom, 1).unwrap();
    // Too little memory for the kernel: ENOMEM, as on the simulated host.
    let small = x.create_domain(&DomainConfig::pv(1)).unwrap();
    x.set_max_vcpus(small, 1).unwrap();
    let tiny = GuestImage::new(ImageSource::File(kernel.clone()), Pages::from_mib(16));
    let e = x.build(small, &tiny).unwrap_err();
    assert!(matches!(e, Error::OutOfMemory { .. }), "{e}");
    destroy_and_wait(&x, small);
    let image = GuestImage::new(ImageSource::File(kernel), Pages::from_mib(128));
    let built = x.build(dom, &image).unwrap();
    let page = ForeignPage::map(dom, built.console.mfn.0).expect("map the console page");
    x.destroy(dom).unwrap();
    let info = x.domain_info(dom).expect("a zombie is still listed");
    assert!(info.dying(), "{:?}", info.flags);
    assert!(
        info.tot_pages.0 >= 1,
        "the mapped page is still the domain's"
    );
    // A dying domain never runs: the controller's pause reference (from creation) can be
    // dropped, the next unpause is EINVAL, and it is not running.
    assert!(info.paused());
    x.unpause(dom).unwrap();
    assert!(matches!(x.unpause(dom), Err(Error::InvalidArgument { .. })));
    assert!(!x.domain_info(dom).unwrap().running());
    // Destroying it again is fine; dropping the mapping lets it go.
    x.destroy(dom).unwrap();
    drop(page);
    wait_for("the zombie to go", Duration::from_secs(30), || {
        matches!(x.domain_info(dom), Err(Error::NoSuchDomain { .. }))
    });
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn the_console_daemons_calls_read_the_hypervisor_log_and_map_a_guest_page() {
    let x = xen();
    // Xen's boot banner is in its console ring; reading on from the returned index gives
    // only what came after.
    let r = x.read_console_ring(0, 64 << 10).unwrap();
    let text = String::from_utf8_lossy(&r.data);
    assert!(
        text.contains("Xen version 4.17"),
        "{:?}",
        text.lines().next()
    );
    let again = x.read_console_ring(r.index, 64 << 10).unwrap();
    assert!(
        again.data.len() < r.data.len(),
        "incremental from the index"
    );

    let Some(kernel) = first_existing(&["/boot/domu-kernel", "/boot/vmlinuz"]) else {
        panic!("no guest kernel in dom0 (/boot/domu-kernel or /boot/vmlinuz)");
    };
    let dom = x.create_domain(&DomainConfig::pv(1)).unwrap();
    x.set_max_vcpus(dom, 1).unwrap();
    let image = GuestImage::new(ImageSource::File(kernel), Pages::from_mib(128));
    let built = x.build(dom, &image).unwrap();
    // Two foreign mappings of the console page alias the same frame.
    use xen_types::mem::SharedMemoryExt;
    let a = x.map_foreign(dom, &[built.console.mfn.0], true).unwrap();
    let b = x.map_foreign(dom, &[built.console.mfn.0], false).unwrap();
    a.write_obj(100, 0x5a5a_u16).unwrap();
    assert_eq!(b.read_obj::<u16>(100).unwrap(), 0x5a5a);
    assert!(b.write_obj(0, 1u8).is_err(), "read-only mapping");
    drop((a, b));
    destroy_and_wait(&x, dom);
}

/// Arms dom0's watchdog with a long timeout (an hour: far past this test), kicks it and
/// disarms it, so the machine is never at risk; then a kick of the freed id is refused.
#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn the_watchdog_arms_kicks_and_disarms() {
    let x = xen();
    let hour = Duration::from_secs(3600);
    let id = x.watchdog_arm(hour).unwrap();
    assert!(id.0 >= 1, "{id}");
    let kicked = x.watchdog_kick(id, hour);
    let disarmed = x.watchdog_disarm(id);
    kicked.unwrap();
    disarmed.unwrap();
    assert!(matches!(
        x.watchdog_kick(id, hour),
        Err(Error::InvalidArgument { .. })
    ));
}
