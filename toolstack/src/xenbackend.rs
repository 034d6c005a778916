//! [`HostBackend`] over the `xenctrl` crate (real Xen, or its simulated host `xen-sim`) and a
//! xenstore (the `xenstore` client of a running xenstored, or an in-process tree).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use xen_types::{DomId, Pages};
use xenctrl::{GuestImage, ImageSource, Xen};

use crate::backend::{DeviceKind, DomainConfig, HostBackend, ShutdownReason};
use crate::Error;

/// Where xenstore entries go.
pub enum Store {
    /// A xenstored reached through the `xenstore` client.
    Xenstored(xenstore::Client),
    /// An in-process tree (no xenstored running).
    Memory(Mutex<BTreeMap<String, String>>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Store::Xenstored(_) => "Store::Xenstored",
            Store::Memory(_) => "Store::Memory",
        })
    }
}

fn xe(e: xenctrl::Error) -> Error {
    Error::Backend(e.to_string())
}

fn xs(e: xenstore::Error) -> Error {
    Error::Backend(e.to_string())
}

/// Domains driven through `xenctrl`.
#[derive(Debug)]
pub struct XenBackend {
    xen: Xen,
    store: Store,
    /// On the simulated host nobody runs inside the guests: play their part (honour
    /// `control/shutdown` at once).
    simulate_guests: bool,
    reported: Mutex<HashSet<u16>>,
    backends: Mutex<Vec<(DeviceKind, u16, u32)>>,
}

fn to_xen_reason(r: ShutdownReason) -> xenctrl::ShutdownReason {
    match r {
        ShutdownReason::Poweroff => xenctrl::ShutdownReason::Poweroff,
        ShutdownReason::Reboot => xenctrl::ShutdownReason::Reboot,
        ShutdownReason::Suspend => xenctrl::ShutdownReason::Suspend,
        ShutdownReason::Crash => xenctrl::ShutdownReason::Crash,
    }
}

fn from_xen_reason(r: Option<xenctrl::ShutdownReason>) -> ShutdownReason {
    match r {
        Some(xenctrl::ShutdownReason::Reboot) => ShutdownReason::Reboot,
        Some(xenctrl::ShutdownReason::Suspend) => ShutdownReason::Suspend,
        Some(xenctrl::ShutdownReason::Crash | xenctrl::ShutdownReason::Watchdog) => {
            ShutdownReason::Crash
        }
        _ => ShutdownReason::Poweroff,
    }
}

impl XenBackend {
    /// A backend over `xen` writing to `store`; `simulate_guests` for the simulated host.
    pub fn new(xen: Xen, store: Store, simulate_guests: bool) -> Self {
        XenBackend {
            xen,
            store,
            simulate_guests,
            reported: Mutex::new(HashSet::new()),
            backends: Mutex::new(Vec::new()),
        }
    }

    /// A simulated host (`xen-sim`) with `memory` bytes, `dom0` of them for dom0, and an
    /// in-process xenstore.
    pub fn simulated(memory: u64, dom0: u64, cpus: u32) -> Self {
        Self::new(
            Self::sim_host(memory, dom0, cpus),
            Store::Memory(Mutex::new(BTreeMap::new())),
            true,
        )
    }

    /// A `xenctrl` handle on a new simulated host with `memory` bytes (`dom0` for dom0) and
    /// `cpus` CPUs.
    pub fn sim_host(memory: u64, dom0: u64, cpus: u32) -> Xen {
        let cfg = xen_sim::HostConfig {
            memory: Pages(memory / xen_types::PAGE_SIZE as u64),
            dom0_memory: Pages(dom0 / xen_types::PAGE_SIZE as u64),
            sockets: 1,
            cores_per_socket: cpus.max(1),
            threads_per_core: 1,
            ..xen_sim::HostConfig::default()
        };
        Xen::sim(xen_sim::Host::new(cfg))
    }

    /// The `xenctrl` handle.
    pub fn xen(&self) -> &Xen {
        &self.xen
    }

    /// Connects to xenstored at `socket` (real hosts).
    pub fn xenstored(socket: &PathBuf) -> Result<Store, Error> {
        xenstore::Client::connect_socket(socket)
            .map(Store::Xenstored)
            .map_err(xs)
    }
}

impl HostBackend for XenBackend {
    fn total_memory(&self) -> u64 {
        self.xen.physinfo().map_or(0, |p| p.total_pages.bytes())
    }

    fn free_memory(&self) -> u64 {
        self.xen.physinfo().map_or(0, |p| p.free_pages.bytes())
    }

    fn create_domain(&self, cfg: &DomainConfig) -> Result<DomId, Error> {
        let mut dc = xenctrl::DomainConfig::pv(cfg.max_vcpus);
        if let Ok(u) = uuid::Uuid::parse_str(&cfg.uuid) {
            dc.handle = u;
        }
        let dom = self.xen.create_domain(&dc).map_err(xe)?;
        let setup = || -> Result<(), xenctrl::Error> {
            self.xen.set_max_vcpus(dom, cfg.max_vcpus)?;
            self.xen.set_max_mem(
                dom,
                Pages::from_kib(cfg.memory / 1024) + xenctrl::MAXMEM_SLACK,
            )?;
            Ok(())
        };
        if let Err(e) = setup() {
            let _ = self.xen.destroy(dom);
            return Err(xe(e));
        }
        self.reported.lock().remove(&dom.0);
        Ok(dom)
    }

    fn build_domain(&self, domid: DomId, cfg: &DomainConfig) -> Result<(), Error> {
        let memory = Pages::from_kib(cfg.memory / 1024);
        if cfg.kernel.is_empty() {
            // No kernel: the domain gets its memory but no boot image (as the simulated
            // host's guests without a kernel).
            return self.xen.increase_reservation(domid, memory).map_err(xe);
        }
        let mut image = GuestImage::new(ImageSource::File(PathBuf::from(&cfg.kernel)), memory);
        if !cfg.ramdisk.is_empty() {
            image.ramdisk = Some(ImageSource::File(PathBuf::from(&cfg.ramdisk)));
        }
        image.cmdline = cfg.cmdline.clone();
        let built = self.xen.build(domid, &image).map_err(xe)?;
        let dom = format!("/local/domain/{}", domid.0);
        self.xs_write(
            &format!("{dom}/store/ring-ref"),
            &built.store.mfn.0.to_string(),
        )?;
        self.xs_write(
            &format!("{dom}/store/port"),
            &built.store.port.0.to_string(),
        )?;
        self.xs_write(
            &format!("{dom}/console/ring-ref"),
            &built.console.mfn.0.to_string(),
        )?;
        self.xs_write(
            &format!("{dom}/console/port"),
            &built.console.port.0.to_string(),
        )?;
        if let Store::Xenstored(c) = &self.store {
            c.introduce(domid, built.store.pfn, built.store.port)
                .map_err(xs)?;
        }
        Ok(())
    }

    fn unpause(&self, domid: DomId) -> Result<(), Error> {
        self.xen.unpause(domid).map_err(xe)
    }

    fn pause(&self, domid: DomId) -> Result<(), Error> {
        self.xen.pause(domid).map_err(xe)
    }

    fn clean_shutdown(
        &self,
        domid: DomId,
        reason: ShutdownReason,
        timeout: Duration,
    ) -> Result<bool, Error> {
        let word = match reason {
            ShutdownReason::Poweroff => "poweroff",
            ShutdownReason::Reboot => "reboot",
            ShutdownReason::Suspend => "suspend",
            ShutdownReason::Crash => "crash",
        };
        self.xs_write(&format!("/local/domain/{}/control/shutdown", domid.0), word)?;
        self.reported.lock().insert(domid.0);
        if self.simulate_guests {
            let info = self.xen.domain_info(domid).map_err(xe)?;
            if info.paused() {
                self.reported.lock().remove(&domid.0);
                return Ok(false);
            }
            self.xen
                .shutdown(domid, to_xen_reason(reason))
                .map_err(xe)?;
            return Ok(true);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self
                .xen
                .domain_info(domid)
                .map_or(true, |i| i.is_shutdown())
            {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.reported.lock().remove(&domid.0);
        Ok(false)
    }

    fn destroy_domain(&self, domid: DomId) -> Result<(), Error> {
        if let Store::Xenstored(c) = &self.store {
            let _ = c.release(domid);
        }
        self.xen.destroy(domid).map_err(xe)?;
        self.backends.lock().retain(|b| b.1 != domid.0);
        let _ = self.xs_rm(&format!("/local/domain/{}", domid.0));
        Ok(())
    }

    fn is_alive(&self, domid: DomId) -> bool {
        self.xen
            .domain_info(domid)
            .is_ok_and(|i| !i.is_shutdown() && !i.dying())
    }

    fn xs_write(&self, path: &str, value: &str) -> Result<(), Error> {
        match &self.store {
            Store::Xenstored(c) => c.write(path, value).map_err(xs),
            Store::Memory(m) => {
                xenstore::wire::validate_path(path.as_bytes(), xenstore::wire::PathKind::Absolute)
                    .map_err(|e| Error::Backend(e.to_string()))?;
                m.lock().insert(path.to_owned(), value.to_owned());
                Ok(())
            }
        }
    }

    fn xs_rm(&self, path: &str) -> Result<(), Error> {
        match &self.store {
            Store::Xenstored(c) => match c.rm(path) {
                Ok(()) => Ok(()),
                Err(xenstore::Error::Xs(e)) if e == xen_types::Errno(libc::ENOENT) => Ok(()),
                Err(e) => Err(xs(e)),
            },
            Store::Memory(m) => {
                let sub = format!("{path}/");
                m.lock().retain(|k, _| k != path && !k.starts_with(&sub));
                Ok(())
            }
        }
    }

    fn xs_read(&self, path: &str) -> Option<String> {
        match &self.store {
            Store::Xenstored(c) => c.read_string(path).ok(),
            Store::Memory(m) => m.lock().get(path).cloned(),
        }
    }

    fn start_backend(&self, kind: DeviceKind, frontend: DomId, devid: u32) -> Result<(), Error> {
        // Backend drivers (blkback, netback) watch their xenstore directories; the
        // toolstack's part is the directories, written before this call.
        let be = format!(
            "/local/domain/0/backend/{}/{}/{}",
            kind.dir(),
            frontend.0,
            devid
        );
        if self.xs_read(&format!("{be}/frontend")).is_none() {
            return Err(Error::Backend(format!("{be} not written (ENOENT)")));
        }
        self.backends.lock().push((kind, frontend.0, devid));
        Ok(())
    }

    fn stop_backend(&self, kind: DeviceKind, frontend: DomId, devid: u32) {
        self.backends
            .lock()
            .retain(|b| *b != (kind, frontend.0, devid));
    }

    fn wait_shutdowns(&self, timeout: Duration) -> Vec<(DomId, ShutdownReason)> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut out = Vec::new();
            if let Ok(list) = self.xen.list_domains() {
                let mut rep = self.reported.lock();
                for d in list {
                    if d.domid.0 != 0 && d.is_shutdown() && rep.insert(d.domid.0) {
                        out.push((d.domid, from_xen_reason(d.shutdown_reason)));
                    }
                }
            }
            if !out.is_empty() || Instant::now() >= deadline {
                return out;
            }
            std::thread::sleep(
                Duration::from_millis(50).min(deadline.saturating_duration_since(Instant::now())),
            );
        }
    }
}
