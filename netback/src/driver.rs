//! The `vif` backend driver: features, the handshake, one thread per queue.

use std::sync::Arc;
use std::thread::JoinHandle;

use evtchn::{EventChannel, Evtchn};
use gnttab::{Access, Gnttab, GrantMap};
use xen_types::{EvtchnPort, GrantRef, Pages};
use xenbus::{BackendDriver, DeviceInfo, Store};

use crate::ctrl::{CtrlPath, CtrlRing};
use crate::port::{Ports, RxOffloads, TapPorts, VifId};
use crate::queue::{self, QueueServer, Rate, RxCaps, RxPath, RxRing, Stop, TxPath, TxRing};
use crate::stats::Stats;
use crate::steer::Steer;
use crate::xen::{ev, QueueChannel};
use crate::Error;
use tracing::warn;

/// Backend settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Queues offered (`multi-queue-max-queues`).
    pub max_queues: u32,
    /// Wait for the hotplug script's `hotplug-status=connected` before connecting, as
    /// Linux's netback does (libxl runs `vif-bridge` once the backend is in InitWait).
    /// Without it the backend writes `hotplug-status` itself (no script to wait for).
    pub wait_hotplug: bool,
    /// Device type served (`vif`).
    pub device_type: String,
    /// Tx packets of at least this many bytes have their slots after the first
    /// grant-mapped and written to the packet side from the guest's pages (one copy of
    /// those bytes in dom0, as Linux's netback maps them); smaller ones are grant-copied.
    /// `None`: always copy.
    pub tx_map_min: Option<usize>,
}

/// [`Config::tx_map_min`]'s default: packets of more than a few pages (TCP segmentation
/// offload's large packets), whose copy costs more than a map and unmap.
pub const DEFAULT_TX_MAP_MIN: usize = 16 * 1024;

impl Default for Config {
    fn default() -> Self {
        Config {
            max_queues: 4,
            wait_hotplug: true,
            device_type: "vif".into(),
            tx_map_min: Some(DEFAULT_TX_MAP_MIN),
        }
    }
}

/// Opens a new event-channel handle (one per queue).
type OpenEvtchn<E> = dyn Fn() -> evtchn::Result<E> + Send + Sync;

/// The netif backend driver over a [`GrantMap`], an [`EventChannel`] handle per queue and a
/// [`Ports`] packet side. Start it with `xenbus::Backend::start(store, dom,
/// Arc::new(NetBack::open(config)?))`.
pub struct NetBack<G: GrantMap = Gnttab, E: EventChannel = Evtchn, P: Ports = TapPorts> {
    gnttab: Arc<G>,
    open_evtchn: Arc<OpenEvtchn<E>>,
    ports: Arc<P>,
    cfg: Config,
    stats: Arc<Stats>,
}

impl<G: GrantMap, E: EventChannel, P: Ports> std::fmt::Debug for NetBack<G, E, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetBack")
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

impl NetBack<Gnttab, Evtchn, TapPorts> {
    /// A driver on the real devices of a Xen dom0 or driver domain (`/dev/xen/gntdev`,
    /// `/dev/xen/evtchn`) with tap devices. Fails with [`Error::NotXen`] elsewhere.
    pub fn open(cfg: Config) -> Result<Self, Error> {
        let gnttab = Gnttab::open().map_err(gnttab_err)?;
        drop(Evtchn::open().map_err(ev)?);
        Ok(NetBack::new(
            gnttab,
            Evtchn::open,
            Arc::new(TapPorts::new()),
            cfg,
        ))
    }
}

#[cfg(feature = "sim")]
impl<P: Ports> NetBack<gnttab::SimGnttab, evtchn::SimEvtchn, P> {
    /// A driver in domain `dom` of the simulated host `host`, with packet side `ports`.
    pub fn sim(
        host: &xen_sim::Host,
        dom: xen_types::DomId,
        ports: Arc<P>,
        cfg: Config,
    ) -> Result<Self, Error> {
        let gnttab = gnttab::SimGnttab::open(host, dom).map_err(gnttab_err)?;
        let h = host.clone();
        Ok(NetBack::new(
            gnttab,
            move || evtchn::SimEvtchn::open(&h, dom),
            ports,
            cfg,
        ))
    }
}

impl<G: GrantMap, E: EventChannel, P: Ports> NetBack<G, E, P> {
    /// A driver over `gnttab`, event-channel handles from `open_evtchn`, and `ports`.
    pub fn new(
        gnttab: G,
        open_evtchn: impl Fn() -> evtchn::Result<E> + Send + Sync + 'static,
        ports: Arc<P>,
        cfg: Config,
    ) -> Self {
        NetBack {
            gnttab: Arc::new(gnttab),
            open_evtchn: Arc::new(open_evtchn),
            ports,
            cfg,
            stats: Arc::default(),
        }
    }

    /// The counters of every queue this driver served.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The packet side.
    pub fn ports(&self) -> &Arc<P> {
        &self.ports
    }
}

/// A connected vif: its queue threads. Dropping it stops them and unmaps the rings.
pub struct Connection {
    stop: Arc<Stop>,
    queues: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("queues", &self.queues.len())
            .finish()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.stop.stop();
        for t in self.queues.drain(..) {
            let _ = t.join();
        }
    }
}

fn vif_of<S: Store>(dev: &DeviceInfo<S>) -> VifId {
    VifId {
        domid: dev.frontend_id,
        devid: dev.devid,
    }
}

fn flag<S: Store>(dev: &DeviceInfo<S>, key: &str) -> Result<bool, Error> {
    Ok(dev.read_frontend_parse::<u32>(key)?.unwrap_or(0) == 1)
}

impl<G: GrantMap + 'static, E: EventChannel + 'static, P: Ports> NetBack<G, E, P> {
    fn connect_inner<S: Store>(&self, dev: &DeviceInfo<S>) -> Result<Connection, Error> {
        let front = dev.frontend_id;
        if !flag(dev, "request-rx-copy")? {
            return Err(Error::Config(
                "frontend does not request rx-copy (page flipping is not supported)".into(),
            ));
        }
        let nq = dev
            .read_frontend_parse::<u32>("multi-queue-num-queues")?
            .unwrap_or(1);
        if nq == 0 || nq > self.cfg.max_queues.max(1) {
            return Err(Error::Config(format!(
                "{nq} queues requested, {} offered",
                self.cfg.max_queues
            )));
        }
        let caps = RxCaps {
            offloads: RxOffloads {
                csum: !flag(dev, "feature-no-csum-offload")?,
                tso4: flag(dev, "feature-gso-tcpv4")?,
                tso6: flag(dev, "feature-gso-tcpv6")?,
            },
            ipv6_csum: flag(dev, "feature-ipv6-csum-offload")?,
            sg: flag(dev, "feature-sg")?,
        };
        let mut offloads = caps.offloads;
        if !caps.sg {
            offloads.tso4 = false;
            offloads.tso6 = false;
        }
        let rate = dev
            .read_backend("rate")?
            .map(|r| r.parse::<Rate>())
            .transpose()?;
        let mut parts = Vec::new();
        for q in 0..nq {
            let dir = if nq == 1 {
                String::new()
            } else {
                format!("queue-{q}/")
            };
            let need = |k: &str| -> Result<u32, Error> {
                dev.read_frontend_parse::<u32>(&format!("{dir}{k}"))?
                    .ok_or_else(|| Error::Config(format!("frontend has no {dir}{k}")))
            };
            let tx_ref = GrantRef(need("tx-ring-ref")?);
            let rx_ref = GrantRef(need("rx-ring-ref")?);
            let split = dev
                .read_frontend_parse::<u32>(&format!("{dir}event-channel-tx"))?
                .is_some();
            let (txp, rxp) = if split {
                (
                    EvtchnPort(need("event-channel-tx")?),
                    Some(EvtchnPort(need("event-channel-rx")?)),
                )
            } else {
                (EvtchnPort(need("event-channel")?), None)
            };
            let txm = self
                .gnttab
                .map_one(front, tx_ref, Access::ReadWrite)
                .map_err(gnttab_err)?;
            let rxm = self
                .gnttab
                .map_one(front, rx_ref, Access::ReadWrite)
                .map_err(gnttab_err)?;
            let tx = TxRing::new(txm, Pages(1))?;
            let rx = RxRing::new(rxm, Pages(1))?;
            let chan = QueueChannel::bind((self.open_evtchn)().map_err(ev)?, front, txp, rxp)?;
            let mut txp = TxPath::new(tx, front);
            txp.set_rate(rate);
            txp.set_map_min(self.cfg.tx_map_min);
            txp.set_stats(self.stats.clone());
            let mut rxp = RxPath::new(rx, front, caps);
            rxp.set_stats(self.stats.clone());
            parts.push((txp, rxp, chan));
        }
        // The control ring (`feature-ctrl-ring`), if the frontend gave one.
        let ctrl = match dev.read_frontend_parse::<u32>("ctrl-ring-ref")? {
            None => None,
            Some(r) => {
                let port = dev
                    .read_frontend_parse::<u32>("event-channel-ctrl")?
                    .ok_or_else(|| Error::Config("frontend has no event-channel-ctrl".into()))?;
                let m = self
                    .gnttab
                    .map_one(front, GrantRef(r), Access::ReadWrite)
                    .map_err(gnttab_err)?;
                let ring = CtrlRing::new(m, Pages(1))?;
                let chan = QueueChannel::bind(
                    (self.open_evtchn)().map_err(ev)?,
                    front,
                    EvtchnPort(port),
                    None,
                )?;
                Some((ring, chan))
            }
        };
        // Frames steered between queues by the frontend's hash settings.
        let steer = Arc::new(Steer::new(nq as usize)?);
        let ports = self.ports.open(vif_of(dev), nq as usize, offloads)?;
        let stop = Arc::new(Stop::new()?);
        // A queue stopped by a fatal error says why in the backend's `error` node.
        let store = dev.store.clone();
        let error_node = format!("{}/error", dev.backend_path);
        let report: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(move |msg: &str| {
            if let Err(e) = store.write(&error_node, msg) {
                tracing::warn!("writing {error_node}: {e}");
            }
        });
        let mut conn = Connection {
            stop: stop.clone(),
            queues: Vec::new(),
        };
        for (i, ((tx, rx, chan), port)) in parts.into_iter().zip(ports).enumerate() {
            let server = QueueServer {
                gnttab: self.gnttab.clone(),
                tx,
                rx,
                chan,
                port,
                stats: self.stats.clone(),
                steer: (nq > 1 || ctrl.is_some()).then(|| steer.clone()),
                report: report.clone(),
                index: i,
            };
            let name = format!("netback-{}-{}-q{i}", front.get(), dev.devid);
            let st = stop.clone();
            queue::started(&self.stats);
            let n = name.clone();
            match std::thread::Builder::new()
                .name(name)
                .spawn(move || server.run(&st, &n))
            {
                Ok(t) => conn.queues.push(t),
                Err(e) => {
                    queue::not_started(&self.stats);
                    return Err(e.into());
                }
            }
        }
        if let Some((ring, chan)) = ctrl {
            let mut path = CtrlPath::new(ring, front, nq as usize, steer.hash.clone());
            let (gnttab, st, report) = (self.gnttab.clone(), stop.clone(), report.clone());
            let name = format!("netback-{}-{}-ctrl", front.get(), dev.devid);
            let n = name.clone();
            let t = std::thread::Builder::new().name(name).spawn(move || {
                if let Err(e) = serve_ctrl(&mut path, &*gnttab, &chan, &st) {
                    warn!("{n}: stopping the control ring: {e}");
                    report(&format!("control ring: {e}"));
                }
            })?;
            conn.queues.push(t);
        }
        Ok(conn)
    }
}

/// Serves a control ring until `stop` or a fatal error: sleeps on its event channel.
fn serve_ctrl<G: GrantMap + ?Sized, E: EventChannel, M: xen_types::mem::SharedMemory>(
    path: &mut CtrlPath<M>,
    gnttab: &G,
    chan: &QueueChannel<E>,
    stop: &Stop,
) -> Result<(), Error> {
    while !stop.stopped() {
        if path.serve(gnttab)? {
            chan.notify_tx()?;
        }
        if path.more()? {
            continue;
        }
        let mut fds = [queue::pollfd(chan), stop.as_pollfd()];
        if queue::sleep(&mut fds, None)? > 0 && fds[0].revents != 0 {
            chan.drain()?;
        }
    }
    Ok(())
}

fn xb(e: Error) -> xenbus::Error {
    match e {
        Error::Xenbus(x) => x,
        e => xenbus::Error::Driver(e.to_string()),
    }
}

impl<S: Store, G: GrantMap + 'static, E: EventChannel + 'static, P: Ports> BackendDriver<S>
    for NetBack<G, E, P>
{
    type Connection = Connection;

    fn device_type(&self) -> &str {
        &self.cfg.device_type
    }

    fn probe(&self, dev: &DeviceInfo<S>) -> Result<(), xenbus::Error> {
        self.ports.create(vif_of(dev)).map_err(xb)?;
        let mut keys: Vec<(&str, String)> = vec![
            ("feature-sg", "1".into()),
            ("feature-gso-tcpv4", "1".into()),
            ("feature-gso-tcpv6", "1".into()),
            ("feature-ipv6-csum-offload", "1".into()),
            ("feature-rx-copy", "1".into()),
            ("feature-rx-flip", "0".into()),
            ("feature-multicast-control", "0".into()),
            ("feature-split-event-channels", "1".into()),
            ("feature-ctrl-ring", "1".into()),
            (
                "multi-queue-max-queues",
                self.cfg.max_queues.max(1).to_string(),
            ),
        ];
        if !self.cfg.wait_hotplug {
            keys.push(("hotplug-status", "connected".into()));
        }
        dev.write_backend_all(&keys)
    }

    fn ready(&self, dev: &DeviceInfo<S>) -> Result<bool, xenbus::Error> {
        Ok(!self.cfg.wait_hotplug
            || dev.read_backend("hotplug-status")?.as_deref() == Some("connected"))
    }

    fn connect(&self, dev: &DeviceInfo<S>) -> Result<Connection, xenbus::Error> {
        self.connect_inner(dev).map_err(xb)
    }

    fn disconnect(&self, dev: &DeviceInfo<S>, conn: Connection) {
        drop(conn);
        tracing::info!(
            "{} disconnected; the backend's totals: {}",
            vif_of(dev).ifname(),
            self.stats
        );
        // The device is going away (unplugged, or its directory removed): so does its
        // interface. A reconnecting frontend keeps it.
        let gone = dev.read_backend("state").ok().flatten().is_none()
            || dev.read_backend("online").ok().flatten().as_deref() == Some("0");
        if gone {
            self.ports.remove(vif_of(dev));
        }
    }
}
