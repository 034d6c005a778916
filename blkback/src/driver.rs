//! The `vbd` backend driver: the blkif handshake on top of [`xenbus`].

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use xen_types::mem::SharedMemory;
use xen_types::{EvtchnPort, GrantRef};
use xenbus::{BackendDriver, DeviceInfo, Store};

use crate::abi::{Protocol, MAX_INDIRECT_PAGES, SEGMENTS_PER_INDIRECT_PAGE};
use crate::disk::Disk;
use crate::host::Host;
use crate::queue::{Pool, QueueConfig, RingServer};
use crate::request::Limits;
use crate::ring::BackRing;
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

/// The blkif backend driver. Start it with
/// `xenbus::Backend::start(store, backend_domid, Arc::new(BlkBack::new(host, config)))`.
#[derive(Debug)]
pub struct BlkBack<H: Host> {
    host: Arc<H>,
    cfg: Config,
}

impl<H: Host> BlkBack<H> {
    /// A driver mapping grants and binding event channels through `host`.
    pub fn new(host: Arc<H>, cfg: Config) -> Self {
        BlkBack { host, cfg }
    }

    fn discard_enabled(&self, spec: &DiskSpec) -> bool {
        self.cfg.discard && !spec.readonly
    }
}

/// A connected device: its rings and I/O threads. Dropping it completes in-flight
/// requests (their data reaches the disk and they are answered), then unmaps everything.
pub struct Connection<H: Host> {
    stop: Arc<AtomicBool>,
    rings: Vec<JoinHandle<()>>,
    pool: Pool<H>,
}

impl<H: Host> std::fmt::Debug for Connection<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("rings", &self.rings.len())
            .finish()
    }
}

impl<H: Host> Drop for Connection<H> {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in self.rings.drain(..) {
            let _ = t.join();
        }
        self.pool.shutdown();
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

impl<H: Host> BlkBack<H> {
    fn connect_inner<S: Store>(&self, dev: &DeviceInfo<S>) -> Result<Connection<H>, Error> {
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
        };
        let mut pool = Pool::<H>::new(
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
            let mem = self.host.map_grants(dev.frontend_id, &refs, true)?;
            let layout = crate::ring::layout(mem.len(), proto)?;
            let ring = BackRing::with_layout(mem, layout, 0)?;
            let chan = self
                .host
                .bind_interdomain(dev.frontend_id, EvtchnPort(port))?;
            servers.push(RingServer::new(
                self.host.clone(),
                ring,
                chan,
                qcfg.clone(),
                disk.clone(),
                pool.sender(),
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
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                    for t in rings {
                        let _ = t.join();
                    }
                    pool.shutdown();
                    return Err(e.into());
                }
            }
        }
        Ok(Connection { stop, rings, pool })
    }
}

fn xb(e: Error) -> xenbus::Error {
    match e {
        Error::Xenbus(x) => x,
        e => xenbus::Error::Driver(e.to_string()),
    }
}

impl<S: Store, H: Host> BackendDriver<S> for BlkBack<H> {
    type Connection = Connection<H>;

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

    fn connect(&self, dev: &DeviceInfo<S>) -> Result<Connection<H>, xenbus::Error> {
        self.connect_inner(dev).map_err(xb)
    }

    fn disconnect(&self, _dev: &DeviceInfo<S>, conn: Connection<H>) {
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
