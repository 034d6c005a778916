//! The host below the toolstack: `xenctrl` (real Xen, or its simulated host `xen-sim`) and a
//! xenstore (a running xenstored reached through the `xenstore` client, or the `xenstored`
//! engine in process, reached through the same client).
//!
//! Device directories are written through `xenbus` with the permissions libxl gives them;
//! on the simulated host the guests' side is played by [`crate::simguest`].

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use xen_types::{DomId, Errno, Pages, Pfn};
use xenbus::{Store as _, XsStore};
use xenctrl::{GuestImage, ImageSource, Xen};
use xenstore::{Access, Perm};

use crate::devices::{self, DeviceHosting, DeviceModels};
use crate::simguest::SimGuests;
use crate::Error;

/// What a new domain is made with.
#[derive(Debug, Clone)]
pub struct DomainConfig {
    /// The VM's UUID (the domain handle).
    pub uuid: uuid::Uuid,
    /// Memory to allocate, bytes.
    pub memory: u64,
    /// Maximum vCPUs.
    pub max_vcpus: u32,
    /// PV kernel path (empty: the domain gets its memory but no boot image).
    pub kernel: String,
    /// PV ramdisk path.
    pub ramdisk: String,
    /// Kernel command line.
    pub cmdline: String,
}

/// Why a domain stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownReason {
    /// Powered off.
    Poweroff,
    /// Asked to reboot.
    Reboot,
    /// Suspended.
    Suspend,
    /// Crashed.
    Crash,
}

impl ShutdownReason {
    /// The word written to `control/shutdown` to ask a PV guest for this.
    pub fn control_word(self) -> &'static str {
        match self {
            ShutdownReason::Poweroff => "poweroff",
            ShutdownReason::Reboot => "reboot",
            ShutdownReason::Suspend => "suspend",
            ShutdownReason::Crash => "crash",
        }
    }

    /// The reason a `control/shutdown` word asks for.
    pub fn from_control_word(w: &str) -> Option<Self> {
        Some(match w {
            "poweroff" | "halt" => ShutdownReason::Poweroff,
            "reboot" => ShutdownReason::Reboot,
            "suspend" => ShutdownReason::Suspend,
            "crash" => ShutdownReason::Crash,
            _ => return None,
        })
    }

    pub(crate) fn to_xen(self) -> xenctrl::ShutdownReason {
        match self {
            ShutdownReason::Poweroff => xenctrl::ShutdownReason::Poweroff,
            ShutdownReason::Reboot => xenctrl::ShutdownReason::Reboot,
            ShutdownReason::Suspend => xenctrl::ShutdownReason::Suspend,
            ShutdownReason::Crash => xenctrl::ShutdownReason::Crash,
        }
    }

    fn from_xen(r: Option<xenctrl::ShutdownReason>) -> ShutdownReason {
        match r {
            Some(xenctrl::ShutdownReason::Reboot) => ShutdownReason::Reboot,
            Some(xenctrl::ShutdownReason::Suspend) => ShutdownReason::Suspend,
            Some(xenctrl::ShutdownReason::Crash | xenctrl::ShutdownReason::Watchdog) => {
                ShutdownReason::Crash
            }
            _ => ShutdownReason::Poweroff,
        }
    }
}

/// A kind of split device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// Block device (`vbd`).
    Vbd,
    /// Network device (`vif`).
    Vif,
}

impl DeviceKind {
    /// The xenstore directory name.
    pub fn dir(self) -> &'static str {
        match self {
            DeviceKind::Vbd => "vbd",
            DeviceKind::Vif => "vif",
        }
    }
}

/// Default socket of a running xenstored.
pub const XENSTORED_SOCKET: &str = "/var/run/xenstored/socket";

/// The xenstored engine run in this process on a socket in a private folder.
struct InProcess {
    daemon: Arc<xenstored::DaemonHandle>,
    // Dropped after the daemon (field order): the folder holding its socket.
    _dir: tempfile::TempDir,
}

/// The host: domains through `xenctrl`, xenstore through a xenstored connection.
pub struct Backend {
    xen: Arc<Xen>,
    store: XsStore,
    guests: Option<SimGuests>,
    reported: Mutex<HashSet<u16>>,
    hosting: DeviceHosting,
    models: DeviceModels,
    /// xenstored's socket, for the connection watching `@releaseDomain`.
    socket: std::path::PathBuf,
    /// That connection, opened on first use (`None` inside when it could not be).
    release_watch: Mutex<Option<Option<xenstore::Client>>>,
    // Last: the connection above closes before the in-process daemon stops.
    inproc: Option<InProcess>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("hypervisor", &self.hypervisor())
            .field("xenstored_in_process", &self.inproc.is_some())
            .finish_non_exhaustive()
    }
}

/// `xenctrl`'s handle on a new simulated host with `memory` bytes (`dom0` of them for dom0)
/// and `cpus` CPUs.
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

impl Backend {
    /// `xen` with the xenstored listening at `socket`. On a simulated `xen` the guests are
    /// played through that daemon's dom0 connection (an external daemon cannot be reached as
    /// a guest).
    pub fn with_xenstored(xen: Xen, socket: &Path) -> Result<Self, Error> {
        let client = xenstore::Client::connect_socket(socket)?;
        let xen = Arc::new(xen);
        let guests = (xen.backend() == "sim").then(|| {
            let socket = socket.to_owned();
            SimGuests::new(
                xen.clone(),
                Box::new(move |_| xenstore::Client::connect_socket(&socket)),
            )
        });
        Ok(Backend {
            xen,
            store: XsStore::new(client)?,
            guests,
            reported: Mutex::new(HashSet::new()),
            hosting: DeviceHosting::default(),
            models: DeviceModels::default(),
            socket: socket.to_owned(),
            release_watch: Mutex::new(None),
            inproc: None,
        })
    }

    /// `xen` with the xenstored engine run in this process (on a socket in a new private
    /// folder). On a simulated `xen` each guest is played through its own connection, which
    /// the daemon treats as that domain (permissions enforced).
    pub fn with_xenstored_in_process(xen: Xen) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("xapi-xenstored-")
            .tempdir()
            .map_err(|e| Error::Io("private xenstored folder".into(), e))?;
        let cfg = xenstored::Config {
            socket_path: dir.path().join("socket"),
            data_dir: None,
            sync: xenstored::SyncMode::Never,
            ..xenstored::Config::default()
        };
        let daemon = Arc::new(xenstored::Daemon::new(cfg)?.spawn()?);
        let client = xenstore::Client::connect_socket(daemon.socket_path())?;
        let inject = daemon.clone();
        let xen = Arc::new(xen);
        let guests = (xen.backend() == "sim").then(|| {
            SimGuests::new(
                xen.clone(),
                Box::new(move |domid| {
                    let conn = inject.connect_as(domid)?;
                    xenstore::Client::with_transport(xenstore::FdTransport::from(conn))
                }),
            )
        });
        Ok(Backend {
            xen,
            store: XsStore::new(client)?,
            guests,
            reported: Mutex::new(HashSet::new()),
            hosting: DeviceHosting::default(),
            models: DeviceModels::default(),
            socket: dir.path().join("socket"),
            release_watch: Mutex::new(None),
            inproc: Some(InProcess { daemon, _dir: dir }),
        })
    }

    /// A simulated host (`xen-sim`) with `memory` bytes, `dom0` of them for dom0, `cpus`
    /// CPUs, and the xenstored engine in process.
    pub fn simulated(memory: u64, dom0: u64, cpus: u32) -> Result<Self, Error> {
        Self::with_xenstored_in_process(sim_host(memory, dom0, cpus))
    }

    /// Serves devices as `hosting` says (a real host: device models, hotplug scripts).
    pub fn with_device_hosting(mut self, hosting: DeviceHosting) -> Self {
        self.hosting = hosting;
        self
    }

    /// What serves this host's devices.
    pub fn device_hosting(&self) -> &DeviceHosting {
        &self.hosting
    }

    /// The `xenctrl` handle.
    pub fn xen(&self) -> &Xen {
        &self.xen
    }

    /// Which hypervisor serves the host: `xen` or `xen-sim`.
    pub fn hypervisor(&self) -> &'static str {
        if self.xen.backend() == "sim" {
            "xen-sim"
        } else {
            "xen"
        }
    }

    /// The `xenctrl` handle, shared (squeezed's host I/O holds one).
    pub fn xen_shared(&self) -> Arc<Xen> {
        self.xen.clone()
    }

    /// The dom0 xenstore connection as a `xenbus` store.
    pub fn store(&self) -> &XsStore {
        &self.store
    }

    /// The dom0 xenstore connection.
    pub fn xenstore(&self) -> &xenstore::Client {
        self.store.client()
    }

    /// The in-process xenstored, when this backend runs one.
    pub fn xenstored(&self) -> Option<&xenstored::DaemonHandle> {
        self.inproc.as_ref().map(|i| &*i.daemon)
    }

    /// The simulated guests (on a simulated host).
    pub fn sim_guests(&self) -> Option<&SimGuests> {
        self.guests.as_ref()
    }

    /// Total host memory, bytes.
    pub fn total_memory(&self) -> u64 {
        self.xen.physinfo().map_or(0, |p| p.total_pages.bytes())
    }

    /// Free host memory, bytes.
    pub fn free_memory(&self) -> u64 {
        self.xen.physinfo().map_or(0, |p| p.free_pages.bytes())
    }

    /// Creates a paused domain (`xc_domain_create`, max vCPUs and memory).
    pub fn create_domain(&self, cfg: &DomainConfig) -> Result<DomId, Error> {
        let mut dc = xenctrl::DomainConfig::pv(cfg.max_vcpus);
        dc.handle = cfg.uuid;
        let dom = self.xen.create_domain(&dc)?;
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
            return Err(e.into());
        }
        self.reported.lock().remove(&dom.0);
        Ok(dom)
    }

    /// Writes the domain's xenstore directories with libxl's permissions: the domain and
    /// VM directories owned by dom0 and readable by the guest, the nodes the guest writes
    /// (`control/shutdown`, `data`, ...) owned by the guest.
    pub fn make_domain_dirs(
        &self,
        domid: DomId,
        vm_path: &str,
        entries: &[(String, String)],
    ) -> Result<(), Error> {
        let dom = xenbus::paths::domain_path(domid);
        let ro = [
            Perm::new(DomId::DOM0, Access::None),
            Perm::new(domid, Access::Read),
        ];
        let rw = [Perm::new(domid, Access::None)];
        let c = self.store.client();
        c.transaction(|tx| {
            for p in [&dom, &vm_path.to_owned()] {
                tx.write(p, "")?;
                tx.set_perms(p, &ro)?;
            }
            for sub in ["device", "control"] {
                let p = format!("{dom}/{sub}");
                tx.write(&p, "")?;
                tx.set_perms(&p, &ro)?;
            }
            for sub in [
                "control/shutdown",
                "control/feature-poweroff",
                "control/feature-reboot",
                "control/feature-suspend",
                "control/feature-balloon",
                "control/sysrq",
                "data",
                "drivers",
                "feature",
                "attr",
                "error",
            ] {
                let p = format!("{dom}/{sub}");
                tx.write(&p, "")?;
                tx.set_perms(&p, &rw)?;
            }
            for (k, v) in entries {
                tx.write(k, v)?;
            }
            Ok(())
        })?;
        if let Some(g) = &self.guests {
            g.boot(domid)?;
        }
        Ok(())
    }

    /// Builds the domain's boot image (`xc_dom_*`) and introduces it to xenstored.
    pub fn build_domain(&self, domid: DomId, cfg: &DomainConfig) -> Result<(), Error> {
        let memory = Pages::from_kib(cfg.memory / 1024);
        if cfg.kernel.is_empty() {
            return Ok(self.xen.increase_reservation(domid, memory)?);
        }
        let mut image = GuestImage::new(ImageSource::File(cfg.kernel.clone().into()), memory);
        if !cfg.ramdisk.is_empty() {
            image.ramdisk = Some(ImageSource::File(cfg.ramdisk.clone().into()));
        }
        image.cmdline = cfg.cmdline.clone();
        let built = self.xen.build(domid, &image)?;
        self.publish_rings(
            domid,
            (built.store.mfn, built.store.port),
            (built.console.mfn, built.console.port),
        )
    }

    /// Restores the domain from a saved image at `image`'s offset (`xc_domain_restore`, as
    /// `xl restore`) and introduces it to xenstored, as [`Backend::build_domain`] does for
    /// a new guest.
    pub fn restore_domain(
        &self,
        domid: DomId,
        cfg: &DomainConfig,
        image: &std::fs::File,
    ) -> Result<(), Error> {
        use std::os::fd::AsFd;
        let memory = Pages::from_kib(cfg.memory / 1024);
        let r = self
            .xen
            .restore(domid, image.as_fd(), memory, DomId::DOM0, DomId::DOM0)?;
        self.publish_rings(
            domid,
            (r.store_mfn, r.store_port),
            (r.console_mfn, r.console_port),
        )
    }

    /// Writes the console and xenstore rings of a built or restored guest to its directory
    /// and introduces it to xenstored (libxl's `libxl__build_post`).
    fn publish_rings(
        &self,
        domid: DomId,
        store: (xen_types::Mfn, xen_types::EvtchnPort),
        console: (xen_types::Mfn, xen_types::EvtchnPort),
    ) -> Result<(), Error> {
        let dom = xenbus::paths::domain_path(domid);
        // As libxl: the console for xenconsoled (type first: it reads the ring once
        // ring-ref and port are there).
        self.store.write_all(&[
            (format!("{dom}/console/type"), "xenconsoled".to_owned()),
            (format!("{dom}/console/output"), "pty".to_owned()),
            (format!("{dom}/console/limit"), "1048576".to_owned()),
            (format!("{dom}/console/backend-id"), "0".to_owned()),
        ])?;
        self.store.write_all(&[
            (format!("{dom}/store/ring-ref"), store.0 .0.to_string()),
            (format!("{dom}/store/port"), store.1 .0.to_string()),
            (format!("{dom}/console/ring-ref"), console.0 .0.to_string()),
            (format!("{dom}/console/port"), console.1 .0.to_string()),
        ])?;
        if self.guests.is_none() {
            self.store
                .client()
                .introduce(domid, Pfn(store.0 .0), store.1)?;
        }
        Ok(())
    }

    /// Writes a device's backend and frontend directories through `xenbus` (each end owns
    /// its directory, the other may read it), backend in dom0.
    pub fn add_device(
        &self,
        kind: DeviceKind,
        frontend: DomId,
        devid: u32,
        backend_keys: &[(&str, &str)],
        frontend_keys: &[(&str, &str)],
    ) -> Result<(), Error> {
        Ok(xenbus::create_device(
            &self.store,
            DomId::DOM0,
            frontend,
            kind.dir(),
            devid,
            backend_keys,
            frontend_keys,
        )?)
    }

    /// [`Backend::add_device`] with a backend directory of another type, as libxl writes
    /// `backend/qdisk/...` for a `device/vbd/...` served by a device model.
    pub fn add_device_as(
        &self,
        backend_type: &str,
        kind: DeviceKind,
        frontend: DomId,
        devid: u32,
        backend_keys: &[(&str, &str)],
        frontend_keys: &[(&str, &str)],
    ) -> Result<(), Error> {
        Ok(xenbus::create_device_split(
            &self.store,
            (DomId::DOM0, backend_type),
            (frontend, kind.dir()),
            devid,
            backend_keys,
            frontend_keys,
        )?)
    }

    /// Starts `blkbackd` as `domid`'s device model (see [`Backend::wait_device_model`]).
    pub fn spawn_device_model(&self, domid: DomId) -> Result<(), Error> {
        let Some(bin) = &self.hosting.blkbackd else {
            return Err(Error::Device("no device model configured".into()));
        };
        let _ = std::fs::create_dir_all("/var/log/xen");
        self.models
            .spawn(bin, domid, &Self::device_model_log(domid))
            .map(drop)
    }

    fn device_model_log(domid: DomId) -> String {
        format!("/var/log/xen/blkbackd-{}.log", domid.0)
    }

    /// Waits until `domid`'s device model says `running`
    /// (`/local/domain/0/device-model/<domid>/state`); stops it when it does not.
    pub fn wait_device_model(&self, domid: DomId) -> Result<(), Error> {
        let log = Self::device_model_log(domid);
        let state = format!("/local/domain/0/device-model/{}/state", domid.0);
        let up = devices::wait_until(devices::BACKEND_TIMEOUT, || {
            if let Some(st) = self.models.exited(domid) {
                return Err(Error::Device(format!(
                    "device model of domain {} exited: {st} (see {log})",
                    domid.0
                )));
            }
            Ok(self.xs_read(&state)?.filter(|s| s == "running"))
        })?;
        if up.is_none() {
            self.models.stop(domid, None);
            return Err(Error::Device(format!(
                "device model of domain {} not running after {} s (see {log})",
                domid.0,
                devices::BACKEND_TIMEOUT.as_secs()
            )));
        }
        Ok(())
    }

    /// Stops `domid`'s device model (started by this process, or named by xenstore's
    /// `image/device-model-pid` after a restart) and removes its xenstore directory.
    pub fn stop_device_model(&self, domid: DomId) -> Result<(), Error> {
        let dom = xenbus::paths::domain_path(domid);
        let pid = self
            .xs_read(&format!("{dom}/image/device-model-pid"))?
            .and_then(|p| p.trim().parse().ok());
        self.models.stop(domid, pid);
        self.xs_rm(&format!("/local/domain/0/device-model/{}", domid.0))
    }

    /// Waits for a device's backend to reach `InitWait` and runs the vif hotplug script
    /// `online` (libxl's order: netback waits for `hotplug-status` before connecting).
    pub fn vif_hotplug(&self, domid: DomId, devid: u32) -> Result<(), Error> {
        let Some(script) = &self.hosting.vif_script else {
            return Ok(());
        };
        let state = format!(
            "{}/state",
            xenbus::paths::backend_path(DomId::DOM0, "vif", domid, devid)
        );
        let waiting = devices::wait_until(devices::BACKEND_TIMEOUT, || {
            Ok(self
                .xs_read(&state)?
                .filter(|s| s.parse::<u32>().is_ok_and(|n| n >= 2)))
        })?;
        if waiting.is_none() {
            return Err(Error::Device(format!(
                "{state} did not reach InitWait in {} s (is xen-netback loaded?)",
                devices::BACKEND_TIMEOUT.as_secs()
            )));
        }
        devices::run_vif_script(script, "online", domid, devid)
    }

    /// Unpauses (`xc_domain_unpause`).
    pub fn unpause(&self, domid: DomId) -> Result<(), Error> {
        Ok(self.xen.unpause(domid)?)
    }

    /// Pauses (`xc_domain_pause`).
    pub fn pause(&self, domid: DomId) -> Result<(), Error> {
        Ok(self.xen.pause(domid)?)
    }

    /// Asks the guest to shut down (writes `control/shutdown`, as libxl does) and waits up
    /// to `timeout` for the domain to shut down; returns whether it did.
    pub fn clean_shutdown(
        &self,
        domid: DomId,
        reason: ShutdownReason,
        timeout: Duration,
    ) -> Result<bool, Error> {
        let deadline = Instant::now() + timeout;
        // The toolstack asked: the monitor does not report this one.
        self.reported.lock().insert(domid.0);
        self.store.write(
            &format!("{}/control/shutdown", xenbus::paths::domain_path(domid)),
            reason.control_word(),
        )?;
        loop {
            match self.xen.domain_info(domid) {
                Ok(i) if !i.is_shutdown() => {}
                Ok(_) | Err(xenctrl::Error::NoSuchDomain { .. }) => return Ok(true),
                Err(e) => {
                    self.reported.lock().remove(&domid.0);
                    return Err(e.into());
                }
            }
            let now = Instant::now();
            if now >= deadline {
                self.reported.lock().remove(&domid.0);
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(20).min(deadline - now));
        }
    }

    /// Saves the domain to `image` at its offset, as `xl save` does: asks the guest to
    /// suspend (`control/shutdown` = `suspend`, libxl's `libxl__domain_suspend`), waits up to
    /// `timeout` for it to shut down for suspend, then writes its memory and vCPUs
    /// (`xc_domain_save`). The domain is left shut down for the caller to destroy.
    ///
    /// When the guest did not take the request in time, the request is withdrawn (as libxl
    /// does) and the error is [`Error::SuspendNotAcknowledged`]; when it took it but did not
    /// suspend, [`Error::SuspendTimeout`]; either way the domain runs on. When the save fails
    /// after the guest suspended, the domain is resumed in place (`xc_domain_resume`).
    pub fn save_domain(
        &self,
        domid: DomId,
        image: &std::fs::File,
        timeout: Duration,
    ) -> Result<(), Error> {
        use std::os::fd::AsFd;
        let path = format!("{}/control/shutdown", xenbus::paths::domain_path(domid));
        let mut failure: Option<Error> = None;
        // The toolstack asked: the monitor does not report this shutdown.
        self.reported.lock().insert(domid.0);
        let saved = self.xen.save_domain(domid, image.as_fd(), &mut || {
            let r = self.suspend_guest(domid, &path, timeout);
            r.map_err(|e| {
                failure = Some(e);
                xenctrl::Error::Os {
                    op: "suspending the guest",
                    errno: Errno::ETIMEDOUT,
                }
            })
        });
        let Err(e) = saved else { return Ok(()) };
        let suspended = self.xen.domain_info(domid).is_ok_and(|i| {
            i.is_shutdown() && i.shutdown_reason == Some(xenctrl::ShutdownReason::Suspend)
        });
        if suspended {
            if let Err(r) = self.xen.resume_domain(domid) {
                tracing::warn!(domid = domid.0, %r, "cannot resume after a failed save");
            }
        }
        self.reported.lock().remove(&domid.0);
        Err(failure.unwrap_or(Error::Xen(e)))
    }

    /// The suspend step of a save: the request, then the wait.
    fn suspend_guest(&self, domid: DomId, path: &str, timeout: Duration) -> Result<(), Error> {
        self.store
            .write(path, ShutdownReason::Suspend.control_word())?;
        let deadline = Instant::now() + timeout;
        loop {
            match self.xen.domain_info(domid) {
                Ok(i) if i.is_shutdown() => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // libxl's `domain_suspend_common_guest_timeout`: withdraw a request the guest has
        // not taken (it clears the node when it does).
        let c = self.store.client();
        let withdrawn = c.transaction(|tx| {
            let pending = tx
                .read(path)
                .ok()
                .is_some_and(|v| v == ShutdownReason::Suspend.control_word().as_bytes());
            if pending {
                tx.write(path, "")?;
            }
            Ok(pending)
        })?;
        Err(if withdrawn {
            Error::SuspendNotAcknowledged(domid.0)
        } else {
            Error::SuspendTimeout(domid.0)
        })
    }

    /// Destroys the domain (`xc_domain_destroy`), releases it from xenstored and removes its
    /// xenstore directory. On real Xen the release comes after the destroy: its
    /// `@releaseDomain` then finds the domain dying, so xenconsoled unmaps the console ring
    /// (released first, xenconsoled sees a live domain and keeps the ring mapped, and the
    /// dead domain stays a zombie).
    pub fn destroy_domain(&self, domid: DomId) -> Result<(), Error> {
        if let Some(g) = &self.guests {
            g.gone(domid);
            self.xen.destroy(domid)?;
        } else {
            let destroyed = self.xen.destroy(domid);
            match self.store.client().release(domid) {
                Ok(()) | Err(xenstore::Error::Xs(Errno::ENOENT | Errno::EINVAL)) => {}
                Err(e) => return Err(e.into()),
            }
            destroyed?;
        }
        self.xs_rm(&xenbus::paths::domain_path(domid))
    }

    /// Whether the domain exists and is neither shut down nor dying.
    pub fn is_alive(&self, domid: DomId) -> bool {
        self.xen
            .domain_info(domid)
            .is_ok_and(|i| !i.is_shutdown() && !i.dying())
    }

    /// Removes a xenstore subtree (no error when it is missing).
    pub fn xs_rm(&self, path: &str) -> Result<(), Error> {
        Ok(self.store.rm(path)?)
    }

    /// Reads a xenstore node (`None` when it is missing).
    pub fn xs_read(&self, path: &str) -> Result<Option<String>, Error> {
        Ok(self.store.read(path)?)
    }

    /// Waits up to `timeout` for domains that shut down on their own; returns each once.
    /// Woken by xenstored's `@releaseDomain` (fired when a domain shuts down or dies), and
    /// looks at the domain list every 200 ms besides.
    pub fn wait_shutdowns(&self, timeout: Duration) -> Vec<(DomId, ShutdownReason)> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut out = Vec::new();
            if let Ok(list) = self.xen.list_domains() {
                let mut rep = self.reported.lock();
                for d in list {
                    if d.domid.0 != 0 && d.is_shutdown() && rep.insert(d.domid.0) {
                        out.push((d.domid, ShutdownReason::from_xen(d.shutdown_reason)));
                    }
                }
            }
            let now = Instant::now();
            if !out.is_empty() || now >= deadline {
                return out;
            }
            self.wait_release(Duration::from_millis(200).min(deadline - now));
        }
    }

    /// Waits up to `wait` for an `@releaseDomain` event (or sleeps when no watch could be
    /// set).
    fn wait_release(&self, wait: Duration) {
        let mut w = self.release_watch.lock();
        let client = w.get_or_insert_with(|| {
            let c = xenstore::Client::connect_socket(&self.socket).ok()?;
            c.watch("@releaseDomain", "xapi-release").ok()?;
            Some(c)
        });
        match client {
            Some(c) => {
                if c.next_event_timeout(wait).is_err() {
                    // The connection broke: open a new one next time.
                    *w = None;
                } else {
                    let _ = c.pending_events();
                }
            }
            None => {
                drop(w);
                std::thread::sleep(wait.min(Duration::from_millis(50)));
            }
        }
    }
}
