//! The `vbd` backend driver: the blkif handshake on top of [`xenbus`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use xen_types::DomId;

use evtchn::{EventChannel, Evtchn};
use gnttab::{Access, Gnttab, GrantMap};
use xen_types::mem::SharedMemory;
use xen_types::{EvtchnPort, GrantRef};
use xenbus::{BackendDriver, DeviceInfo, Store};

use crate::abi::{Protocol, MAX_INDIRECT_PAGES, SEGMENTS_PER_INDIRECT_PAGE};
use crate::disk::Disk;
use crate::queue::{Pool, QueueConfig, RingServer};
use crate::request::Limits;
use crate::ring::BackRing;
use crate::xen::{ev, RingChannel};
use crate::Error;

/// Backend settings (what it advertises).
#[derive(Debug, Clone)]
pub struct Config {
    /// `max-ring-page-order`: rings of up to 2^order pages.
    pub max_ring_page_order: u32,
    /// `multi-queue-max-queues`.
    pub max_queues: u32,
    /// `feature-max-indirect-segments` (0 disables indirect requests).
    pub max_indirect_segments: u32,
    /// `feature-persistent`.
    pub persistent: bool,
    /// Persistent grants kept mapped per ring (Linux's `max_pgrants`).
    pub max_persistent_grants: usize,
    /// I/O threads per device.
    pub io_threads: usize,
    /// `feature-discard` (when the image supports it and is writable).
    pub discard: bool,
    /// Backend directory type served: `vbd`, or `qdisk` to stand in for QEMU's block
    /// backend (libxl's `backendtype=qdisk`).
    pub device_type: String,
    /// The longest a ring thread polls its idle ring before it sleeps on the event channel.
    /// The window adapts to the gaps between requests (it grows while a longer poll would
    /// have caught the next request and shrinks while rings stay idle longer), so only rings
    /// whose frontend answers within this time are polled. Zero (the default, until a
    /// same-boot comparison shows polling helps on a one-vCPU dom0): never poll.
    pub idle_poll: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_ring_page_order: 4,
            max_queues: 4,
            max_indirect_segments: 256,
            persistent: true,
            max_persistent_grants: 1056,
            io_threads: 4,
            discard: true,
            device_type: "vbd".into(),
            idle_poll: Duration::ZERO,
        }
    }
}

/// The disk a backend directory describes (`params`, `mode`, `device-type`, `removable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// Image or block device path.
    pub path: String,
    /// `mode` is `r`.
    pub readonly: bool,
    /// `device-type` is `cdrom`.
    pub cdrom: bool,
    /// `removable` is `1`.
    pub removable: bool,
}

impl DiskSpec {
    /// Reads the toolstack's keys of a backend directory.
    pub fn read<S: Store>(dev: &DeviceInfo<S>) -> Result<DiskSpec, Error> {
        let path = dev
            .read_backend("params")?
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Error::Config("no params".into()))?;
        let path = image_path(&path)?.to_string();
        let mode = dev.read_backend("mode")?.unwrap_or_else(|| "w".into());
        let readonly = match mode.as_str() {
            "r" | "ro" => true,
            "w" | "rw" | "w!" => false,
            m => return Err(Error::Config(format!("bad mode {m:?}"))),
        };
        let cdrom = dev.read_backend("device-type")?.as_deref() == Some("cdrom");
        let removable = dev.read_backend("removable")?.as_deref() == Some("1");
        Ok(DiskSpec {
            path,
            readonly: readonly || cdrom,
            cdrom,
            removable,
        })
    }

    /// The `info` key: `VDISK_*` flags.
    pub fn info(&self) -> u32 {
        let mut i = 0;
        if self.readonly {
            i |= xen_sys::VDISK_READONLY;
        }
        if self.cdrom {
            i |= xen_sys::VDISK_CDROM;
        }
        if self.removable {
            i |= xen_sys::VDISK_REMOVABLE;
        }
        i
    }
}

/// The image path of a `params` value: a plain path (`vbd`, as the kernel's blkback
/// takes it from the hotplug script), or `<format>:<path>` as libxl writes it for
/// `backendtype=qdisk` (`raw:/images/a.img`; `aio:` is the older spelling of raw). Only raw
/// images are served: another format is a configuration error, not silently read as raw.
fn image_path(params: &str) -> Result<&str, Error> {
    match params.split_once(':') {
        Some((fmt, rest)) if !fmt.is_empty() && fmt.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            match fmt {
                "raw" | "aio" if !rest.is_empty() => Ok(rest),
                "raw" | "aio" => Err(Error::Config(format!("params {params:?} has no path"))),
                _ => Err(Error::Config(format!(
                    "image format {fmt:?} is not supported (raw images and block devices only)"
                ))),
            }
        }
        _ => Ok(params),
    }
}

/// Opens a new event-channel handle (one per ring).
type OpenEvtchn<E> = dyn Fn() -> evtchn::Result<E> + Send + Sync;

/// What a backend has done so far, across its devices: counters its rings keep.
#[derive(Debug, Default)]
pub struct Stats {
    rings_running: AtomicUsize,
    rings_broken: AtomicUsize,
    requests: AtomicU64,
    responses: AtomicU64,
    polled: AtomicU64,
    sleeps: AtomicU64,
}

impl Stats {
    /// Rings being served now (their threads are running).
    pub fn rings_running(&self) -> usize {
        self.rings_running.load(Ordering::SeqCst)
    }

    /// Rings stopped because their frontend broke the ring protocol (a producer index
    /// claiming more requests than the ring holds, or unusable ring memory).
    pub fn rings_broken(&self) -> usize {
        self.rings_broken.load(Ordering::SeqCst)
    }

    /// Requests consumed from rings.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Responses written (one per consumed request, once it completed).
    pub fn responses(&self) -> u64 {
        self.responses.load(Ordering::SeqCst)
    }

    /// Times a ring thread found new requests by polling its idle ring ([`Config::idle_poll`]):
    /// without an event, a wake-up or a notification from the frontend.
    pub fn polled(&self) -> u64 {
        self.polled.load(Ordering::SeqCst)
    }

    /// Times a ring thread slept on its event channel.
    pub fn sleeps(&self) -> u64 {
        self.sleeps.load(Ordering::SeqCst)
    }

    pub(crate) fn found_by_polling(&self) {
        self.polled.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn slept(&self) {
        self.sleeps.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn ring_started(&self) {
        self.rings_running.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn ring_stopped(&self, broken: bool) {
        if broken {
            self.rings_broken.fetch_add(1, Ordering::SeqCst);
        }
        self.rings_running.fetch_sub(1, Ordering::SeqCst);
    }

    pub(crate) fn consumed(&self, n: u64) {
        self.requests.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn answered(&self) {
        self.responses.fetch_add(1, Ordering::Relaxed);
    }
}

/// A connected disk: whose it is, its image and its counters ([`BlkBack::devices`]).
#[derive(Debug, Clone)]
pub struct ConnectedDisk {
    /// The frontend's domain.
    pub frontend: DomId,
    /// The device id (`virtual-device`).
    pub devid: u32,
    /// The image path (from `params`, without a format prefix).
    pub path: String,
    /// The open disk, with its [`crate::disk::IoCounters`].
    pub disk: Arc<Disk>,
}

type Registry = Arc<Mutex<BTreeMap<(DomId, u32), ConnectedDisk>>>;

/// The blkif backend driver, mapping grants through a [`GrantMap`] and binding each ring's
/// event channel on its own [`EventChannel`] handle. Start it with
/// `xenbus::Backend::start(store, backend_domid, Arc::new(BlkBack::open(config)?))`.
pub struct BlkBack<G: GrantMap = Gnttab, E: EventChannel = Evtchn> {
    gnttab: Arc<G>,
    open_evtchn: Arc<OpenEvtchn<E>>,
    cfg: Config,
    stats: Arc<Stats>,
    devices: Registry,
}

impl<G: GrantMap, E: EventChannel> std::fmt::Debug for BlkBack<G, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlkBack")
            .field("gnttab", &self.gnttab)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn gnttab_err(e: gnttab::Error) -> Error {
    match e {
        gnttab::Error::NotXen { .. } => Error::NotXen(e.to_string()),
        e => Error::Host(e.errno()),
    }
}

fn evtchn_err(e: evtchn::Error) -> Error {
    match e {
        evtchn::Error::NotXen { .. } => Error::NotXen(e.to_string()),
        e => ev(e),
    }
}

impl BlkBack<Gnttab, Evtchn> {
    /// A driver on the real devices of a Xen dom0 or driver domain (`/dev/xen/gntdev`,
    /// `/dev/xen/evtchn`). Fails with [`Error::NotXen`] elsewhere.
    pub fn open(cfg: Config) -> Result<Self, Error> {
        let gnttab = Gnttab::open().map_err(gnttab_err)?;
        // Fail now, not at the first connection, if event channels are missing.
        drop(Evtchn::open().map_err(evtchn_err)?);
        Ok(BlkBack::new(gnttab, Evtchn::open, cfg))
    }
}

#[cfg(feature = "sim")]
impl BlkBack<gnttab::SimGnttab, evtchn::SimEvtchn> {
    /// A driver in domain `dom` of the simulated host `host`.
    pub fn sim(host: &xen_sim::Host, dom: xen_types::DomId, cfg: Config) -> Result<Self, Error> {
        let gnttab = gnttab::SimGnttab::open(host, dom).map_err(gnttab_err)?;
        let h = host.clone();
        Ok(BlkBack::new(
            gnttab,
            move || evtchn::SimEvtchn::open(&h, dom),
            cfg,
        ))
    }
}

impl<G: GrantMap, E: EventChannel> BlkBack<G, E> {
    /// A driver mapping grants through `gnttab` and opening an event-channel handle for each
    /// ring with `open_evtchn`.
    pub fn new(
        gnttab: G,
        open_evtchn: impl Fn() -> evtchn::Result<E> + Send + Sync + 'static,
        cfg: Config,
    ) -> Self {
        BlkBack {
            gnttab: Arc::new(gnttab),
            open_evtchn: Arc::new(open_evtchn),
            cfg,
            stats: Arc::default(),
            devices: Registry::default(),
        }
    }

    /// The counters of every ring this driver served.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The disks connected now, by frontend domain and device id.
    pub fn devices(&self) -> Vec<ConnectedDisk> {
        self.devices.lock().values().cloned().collect()
    }

    /// The connected disk of `frontend`'s device `devid`.
    fn device(&self, frontend: DomId, devid: u32) -> Result<Arc<Disk>, Error> {
        self.devices
            .lock()
            .get(&(frontend, devid))
            .map(|d| d.disk.clone())
            .ok_or_else(|| {
                Error::Config(format!(
                    "domain {} has no connected disk {devid}",
                    frontend.get()
                ))
            })
    }

    /// Pauses `frontend`'s disk `devid` ([`Disk::pause`]): requests wait, those in flight
    /// finish, the image is flushed. Then its image may be snapshotted.
    pub fn pause(&self, frontend: DomId, devid: u32) -> Result<(), Error> {
        Ok(self.device(frontend, devid)?.pause()?)
    }

    /// Resumes a paused disk ([`Disk::resume`]) on `path` reopened (the new leaf of its
    /// chain after a snapshot), or on its open image with `None`.
    pub fn resume(&self, frontend: DomId, devid: u32, path: Option<&str>) -> Result<(), Error> {
        let disk = self.device(frontend, devid)?;
        disk.resume(path.map(std::path::Path::new))?;
        if let Some(p) = path {
            if let Some(d) = self.devices.lock().get_mut(&(frontend, devid)) {
                d.path = p.to_owned();
            }
        }
        Ok(())
    }

    fn discard_enabled(&self, spec: &DiskSpec) -> bool {
        self.cfg.discard && !spec.readonly
    }
}

/// A connected device: its rings and I/O threads. Dropping it completes in-flight
/// requests (their data reaches the disk and they are answered), then unmaps everything.
pub struct Connection<E: EventChannel = Evtchn> {
    stop: Arc<AtomicBool>,
    disk: Arc<Disk>,
    rings: Vec<JoinHandle<()>>,
    pool: Pool<E>,
    /// Its entry in [`BlkBack::devices`], removed when it is dropped.
    registered: Option<(Registry, (DomId, u32))>,
}

impl<E: EventChannel> std::fmt::Debug for Connection<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("rings", &self.rings.len())
            .finish()
    }
}

impl<E: EventChannel> Drop for Connection<E> {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // A ring thread may wait on a paused disk: its requests fail instead.
        self.disk.close();
        for t in self.rings.drain(..) {
            let _ = t.join();
        }
        self.pool.shutdown();
        if let Some((reg, key)) = self.registered.take() {
            reg.lock().remove(&key);
        }
    }
}

fn read_ring_refs<S: Store>(
    dev: &DeviceInfo<S>,
    dir: &str,
    order: Option<u32>,
) -> Result<Vec<GrantRef>, Error> {
    let key = |k: &str| {
        if dir.is_empty() {
            k.to_string()
        } else {
            format!("{dir}/{k}")
        }
    };
    let need = |k: String| -> Result<u32, Error> {
        dev.read_frontend_parse::<u32>(&k)?
            .ok_or(Error::Config(format!("frontend has no {k}")))
    };
    match order {
        None => Ok(vec![GrantRef(need(key("ring-ref"))?)]),
        Some(o) => (0..1u32 << o)
            .map(|i| need(key(&format!("ring-ref{i}"))).map(GrantRef))
            .collect(),
    }
}

impl<G: GrantMap + 'static, E: EventChannel + 'static> BlkBack<G, E> {
    fn connect_inner<S: Store>(&self, dev: &DeviceInfo<S>) -> Result<Connection<E>, Error> {
        let spec = DiskSpec::read(dev)?;
        let disk = Arc::new(Disk::open(&spec.path, spec.readonly)?);
        let proto = Protocol::from_node(dev.read_frontend("protocol")?.as_deref())?;
        let persistent =
            self.cfg.persistent && dev.read_frontend_parse::<u32>("feature-persistent")? == Some(1);
        let nq = dev
            .read_frontend_parse::<u32>("multi-queue-num-queues")?
            .unwrap_or(1);
        if nq == 0 || nq > self.cfg.max_queues.max(1) {
            return Err(Error::Config(format!("{nq} queues requested")));
        }
        let order = dev.read_frontend_parse::<u32>("ring-page-order")?;
        if order.is_some_and(|o| o > self.cfg.max_ring_page_order) {
            return Err(Error::Config(format!(
                "ring-page-order {order:?} too large"
            )));
        }
        let limits = Limits {
            sectors: disk.sectors(),
            readonly: spec.readonly,
            max_indirect_segments: self
                .cfg
                .max_indirect_segments
                .min((MAX_INDIRECT_PAGES * SEGMENTS_PER_INDIRECT_PAGE) as u32),
            flush: true,
            discard: self.discard_enabled(&spec),
            discard_secure: disk.is_block_device(),
        };
        let qcfg = QueueConfig {
            frontend: dev.frontend_id,
            proto,
            limits,
            persistent,
            max_persistent_grants: self.cfg.max_persistent_grants,
            idle_poll: self.cfg.idle_poll,
        };
        let mut pool = Pool::<E>::new(
            self.cfg.io_threads,
            &format!("blkback-{}-{}", dev.frontend_id.get(), dev.devid),
        )?;
        // Map and bind every queue before starting any.
        let mut servers = Vec::new();
        for q in 0..nq {
            let dir = if nq == 1 {
                String::new()
            } else {
                format!("queue-{q}")
            };
            let refs = read_ring_refs(dev, &dir, order)?;
            let evk = if dir.is_empty() {
                "event-channel".to_string()
            } else {
                format!("{dir}/event-channel")
            };
            let port = dev
                .read_frontend_parse::<u32>(&evk)?
                .ok_or(Error::Config(format!("frontend has no {evk}")))?;
            let mem = self
                .gnttab
                .map(dev.frontend_id, &refs, Access::ReadWrite)
                .map_err(gnttab_err)?;
            let layout = crate::ring::layout(mem.len(), proto)?;
            let ring = BackRing::with_layout(mem, layout, 0)?;
            let chan = RingChannel::bind(
                (self.open_evtchn)().map_err(ev)?,
                dev.frontend_id,
                EvtchnPort(port),
            )?;
            servers.push(RingServer::new(
                self.gnttab.clone(),
                ring,
                chan,
                qcfg.clone(),
                disk.clone(),
                pool.sender(),
                self.stats.clone(),
            ));
        }
        dev.write_backend_all(&[
            ("sectors", disk.sectors().to_string()),
            ("info", spec.info().to_string()),
            ("sector-size", disk.sector_size().to_string()),
            (
                "physical-sector-size",
                disk.physical_sector_size().to_string(),
            ),
        ])?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut rings = Vec::new();
        for (i, s) in servers.into_iter().enumerate() {
            let st = stop.clone();
            self.stats.ring_started();
            match std::thread::Builder::new()
                .name(format!(
                    "blkback-{}-{}-q{i}",
                    dev.frontend_id.get(),
                    dev.devid
                ))
                .spawn(move || s.run(&st))
            {
                Ok(t) => rings.push(t),
                Err(e) => {
                    self.stats.ring_stopped(false);
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                    for t in rings {
                        let _ = t.join();
                    }
                    pool.shutdown();
                    return Err(e.into());
                }
            }
        }
        let key = (dev.frontend_id, dev.devid);
        self.devices.lock().insert(
            key,
            ConnectedDisk {
                frontend: dev.frontend_id,
                devid: dev.devid,
                path: spec.path.clone(),
                disk: disk.clone(),
            },
        );
        Ok(Connection {
            stop,
            disk,
            rings,
            pool,
            registered: Some((self.devices.clone(), key)),
        })
    }
}

fn xb(e: Error) -> xenbus::Error {
    match e {
        Error::Xenbus(x) => x,
        e => xenbus::Error::Driver(e.to_string()),
    }
}

impl<S: Store, G: GrantMap + 'static, E: EventChannel + 'static> BackendDriver<S>
    for BlkBack<G, E>
{
    type Connection = Connection<E>;

    fn device_type(&self) -> &str {
        &self.cfg.device_type
    }

    fn probe(&self, dev: &DeviceInfo<S>) -> Result<(), xenbus::Error> {
        let spec = DiskSpec::read(dev).map_err(xb)?;
        let disk = Disk::open(&spec.path, spec.readonly).map_err(|e| xb(e.into()))?;
        let mut keys: Vec<(&str, String)> = vec![
            ("feature-flush-cache", "1".into()),
            ("feature-barrier", "0".into()),
            (
                "feature-persistent",
                u8::from(self.cfg.persistent).to_string(),
            ),
            (
                "feature-max-indirect-segments",
                self.cfg.max_indirect_segments.to_string(),
            ),
            (
                "max-ring-page-order",
                self.cfg.max_ring_page_order.to_string(),
            ),
            ("multi-queue-max-queues", self.cfg.max_queues.to_string()),
            ("hotplug-status", "connected".into()),
        ];
        if self.discard_enabled(&spec) {
            keys.extend([
                ("feature-discard", "1".to_string()),
                (
                    "discard-granularity",
                    disk.physical_sector_size().max(4096).to_string(),
                ),
                ("discard-alignment", "0".to_string()),
                (
                    "discard-secure",
                    u8::from(disk.is_block_device()).to_string(),
                ),
            ]);
        } else {
            keys.push(("feature-discard", "0".into()));
        }
        dev.write_backend_all(&keys)
    }

    fn connect(&self, dev: &DeviceInfo<S>) -> Result<Connection<E>, xenbus::Error> {
        self.connect_inner(dev).map_err(xb)
    }

    fn disconnect(&self, _dev: &DeviceInfo<S>, conn: Connection<E>) {
        drop(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_take_libxl_format_prefixes() {
        assert_eq!(image_path("/dev/loop0").unwrap(), "/dev/loop0");
        assert_eq!(image_path("raw:/img/a.img").unwrap(), "/img/a.img");
        assert_eq!(image_path("aio:/img/a.img").unwrap(), "/img/a.img");
        // A colon later in the path is part of the path.
        assert_eq!(image_path("/img/a:b.img").unwrap(), "/img/a:b.img");
        assert_eq!(image_path("./x:y").unwrap(), "./x:y");
        let e = image_path("qcow2:/img/a.qcow2").unwrap_err().to_string();
        assert!(e.contains("qcow2") && e.contains("not supported"), "{e}");
        assert!(image_path("raw:").is_err());
    }
}
