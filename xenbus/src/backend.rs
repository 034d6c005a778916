//! The backend half of the framework: one watcher per device type, one thread per device.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};
use parking_lot::Mutex;
use tracing::{debug, warn};
use xen_types::DomId;

use crate::paths::{self, join};
use crate::store::{WatchEvent, WatchId, RELEASE_DOMAIN};
use crate::{Error, Store, XenbusState};

/// What a device thread knows about its device.
#[derive(Debug)]
pub struct DeviceInfo<S: Store> {
    /// The store.
    pub store: Arc<S>,
    /// Our (the backend's) domain.
    pub backend_id: DomId,
    /// The frontend's domain.
    pub frontend_id: DomId,
    /// Device id (e.g. the virtual disk number for vbd).
    pub devid: u32,
    /// Device type (`vbd`, `vif`, ...).
    pub dev_type: String,
    /// Our directory.
    pub backend_path: String,
    /// The frontend's directory (from our `frontend` node).
    pub frontend_path: String,
}

impl<S: Store> DeviceInfo<S> {
    /// Reads `key` in the backend directory.
    pub fn read_backend(&self, key: &str) -> Result<Option<String>, Error> {
        self.store.read(&join(&self.backend_path, key))
    }
    /// Reads `key` in the frontend directory.
    pub fn read_frontend(&self, key: &str) -> Result<Option<String>, Error> {
        self.store.read(&join(&self.frontend_path, key))
    }
    /// Reads and parses `key` in the frontend directory.
    pub fn read_frontend_parse<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, Error> {
        self.store.read_parse(&join(&self.frontend_path, key))
    }
    /// Writes `key` in the backend directory.
    pub fn write_backend(&self, key: &str, value: &str) -> Result<(), Error> {
        self.store.write(&join(&self.backend_path, key), value)
    }
    /// Writes several backend keys in one transaction.
    pub fn write_backend_all(&self, entries: &[(&str, String)]) -> Result<(), Error> {
        let e: Vec<(String, String)> = entries
            .iter()
            .map(|(k, v)| (join(&self.backend_path, k), v.clone()))
            .collect();
        self.store.write_all(&e)
    }
    /// The frontend's current state.
    pub fn frontend_state(&self) -> Result<XenbusState, Error> {
        Ok(XenbusState::from_node(
            self.read_frontend(paths::KEY_STATE)?.as_deref(),
        ))
    }
    /// The backend's state as stored.
    pub fn backend_state(&self) -> Result<XenbusState, Error> {
        Ok(XenbusState::from_node(
            self.read_backend(paths::KEY_STATE)?.as_deref(),
        ))
    }
}

/// A backend device driver: the device-specific steps of the handshake.
///
/// The framework calls, on the device's own thread: [`probe`](Self::probe) when the device
/// appears (then publishes `InitWait`), [`connect`](Self::connect) once the frontend is
/// `Initialised` or `Connected` (then publishes `Connected`), and
/// [`disconnect`](Self::disconnect) when the frontend closes, the device is removed or the
/// frontend's domain dies. A failed `probe` or `connect` writes `error` and closes.
pub trait BackendDriver<S: Store>: Send + Sync + 'static {
    /// A connected device (rings mapped, I/O threads running).
    type Connection: Send + 'static;
    /// Device type served (`vbd`, ...).
    fn device_type(&self) -> &str;
    /// Reads the toolstack's configuration and publishes features.
    fn probe(&self, dev: &DeviceInfo<S>) -> Result<(), Error>;
    /// Whether the device may connect now that the frontend is ready: `false` defers
    /// [`connect`](Self::connect) to a later change of the backend directory (Linux's
    /// netback waits for the hotplug script's `hotplug-status`). Always true by default.
    fn ready(&self, dev: &DeviceInfo<S>) -> Result<bool, Error> {
        let _ = dev;
        Ok(true)
    }
    /// Reads the frontend's rings and event channels and starts serving.
    fn connect(&self, dev: &DeviceInfo<S>) -> Result<Self::Connection, Error>;
    /// Stops serving and releases everything `connect` took. Completes in-flight I/O.
    fn disconnect(&self, dev: &DeviceInfo<S>, conn: Self::Connection);
}

struct DeviceSlot {
    stop: Sender<()>,
    thread: Option<JoinHandle<()>>,
}

/// A running backend for one device type: watches its directory and serves each device on
/// its own thread. Dropping it (or [`Backend::stop`]) tears every device down.
pub struct Backend {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    devices: Arc<Mutex<HashMap<(DomId, u32), DeviceSlot>>>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").finish_non_exhaustive()
    }
}

impl Backend {
    /// Starts watching `/local/domain/<backend_id>/backend/<driver.device_type()>`.
    pub fn start<S: Store, D: BackendDriver<S>>(
        store: Arc<S>,
        backend_id: DomId,
        driver: Arc<D>,
    ) -> Result<Backend, Error> {
        Self::start_inner(store, backend_id, None, driver)
    }

    /// [`Backend::start`] serving only the devices of frontend domain `frontend`, as a
    /// per-domain device model does (QEMU serves the `qdisk` disks of the one domain it was
    /// started for); other domains' directories are left to others.
    pub fn start_for<S: Store, D: BackendDriver<S>>(
        store: Arc<S>,
        backend_id: DomId,
        frontend: DomId,
        driver: Arc<D>,
    ) -> Result<Backend, Error> {
        Self::start_inner(store, backend_id, Some(frontend), driver)
    }

    fn start_inner<S: Store, D: BackendDriver<S>>(
        store: Arc<S>,
        backend_id: DomId,
        only: Option<DomId>,
        driver: Arc<D>,
    ) -> Result<Backend, Error> {
        let root = paths::backend_root(backend_id, driver.device_type());
        let (tx, rx) = unbounded();
        let wid = store.watch(&root, "root", tx)?;
        let (stop_tx, stop_rx) = bounded(1);
        let devices: Arc<Mutex<HashMap<(DomId, u32), DeviceSlot>>> = Arc::default();
        let devs = devices.clone();
        let thread = std::thread::Builder::new()
            .name(format!("xenbus-{}", driver.device_type()))
            .spawn(move || {
                let scope = Scope {
                    backend_id,
                    only,
                    root: &root,
                };
                watch_root(&store, &scope, &driver, &rx, &stop_rx, &devs);
                let _ = store.unwatch(wid);
            })
            .map_err(|e| Error::Driver(e.to_string()))?;
        Ok(Backend {
            stop: Some(stop_tx),
            thread: Some(thread),
            devices,
        })
    }

    /// Devices that have a running handshake thread.
    pub fn devices(&self) -> Vec<(DomId, u32)> {
        let g = self.devices.lock();
        let mut v: Vec<_> = g
            .iter()
            .filter(|(_, s)| s.thread.as_ref().is_some_and(|t| !t.is_finished()))
            .map(|(k, _)| *k)
            .collect();
        v.sort();
        v
    }

    /// Stops watching and tears down every device (waits for their threads).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let slots: Vec<DeviceSlot> = self.devices.lock().drain().map(|(_, s)| s).collect();
        for s in &slots {
            let _ = s.stop.send(());
        }
        for mut s in slots {
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Which directories a backend serves.
struct Scope<'a> {
    backend_id: DomId,
    /// Only this frontend domain's devices.
    only: Option<DomId>,
    /// `/local/domain/<backend_id>/backend/<type>`.
    root: &'a str,
}

fn watch_root<S: Store, D: BackendDriver<S>>(
    store: &Arc<S>,
    scope: &Scope<'_>,
    driver: &Arc<D>,
    rx: &Receiver<WatchEvent>,
    stop_rx: &Receiver<()>,
    devices: &Arc<Mutex<HashMap<(DomId, u32), DeviceSlot>>>,
) {
    loop {
        select! {
            recv(rx) -> ev => if ev.is_err() { return },
            recv(stop_rx) -> _ => return,
        }
        while rx.try_recv().is_ok() {}
        if let Err(e) = scan(store, scope, driver, devices) {
            warn!("scanning {}: {e}", scope.root);
        }
    }
}

fn scan<S: Store, D: BackendDriver<S>>(
    store: &Arc<S>,
    scope: &Scope<'_>,
    driver: &Arc<D>,
    devices: &Arc<Mutex<HashMap<(DomId, u32), DeviceSlot>>>,
) -> Result<(), Error> {
    let (backend_id, root) = (scope.backend_id, scope.root);
    let mut present = Vec::new();
    for dom in store.directory(root)? {
        let Ok(dom_n) = dom.parse::<u16>() else {
            continue;
        };
        if scope.only.is_some_and(|d| d != DomId(dom_n)) {
            continue;
        }
        for dev in store.directory(&join(root, &dom))? {
            let Ok(devid) = dev.parse::<u32>() else {
                continue;
            };
            present.push((DomId(dom_n), devid));
        }
    }
    let mut g = devices.lock();
    // Forget devices whose directory is gone (their threads end on their own watch).
    g.retain(|k, s| present.contains(k) || s.thread.as_ref().is_some_and(|t| !t.is_finished()));
    for key in present {
        let bpath = paths::backend_path(backend_id, driver.device_type(), key.0, key.1);
        if let Some(slot) = g.get(&key) {
            // A finished device whose directory the toolstack has since re-created (state
            // back to Initialising) is served afresh; otherwise leave it alone.
            let finished = slot.thread.as_ref().is_none_or(|t| t.is_finished());
            let state =
                XenbusState::from_node(store.read(&join(&bpath, paths::KEY_STATE))?.as_deref());
            if !(finished && state == XenbusState::Initialising) {
                continue;
            }
        }
        // The toolstack writes the whole directory in one transaction; wait for it.
        let Some(fpath) = store.read(&join(&bpath, paths::KEY_FRONTEND))? else {
            continue;
        };
        let info = DeviceInfo {
            store: store.clone(),
            backend_id,
            frontend_id: key.0,
            devid: key.1,
            dev_type: driver.device_type().to_string(),
            backend_path: bpath,
            frontend_path: fpath,
        };
        let (stop_tx, stop_rx) = bounded(1);
        let drv = driver.clone();
        let thread = std::thread::Builder::new()
            .name(format!(
                "xenbus-{}-{}-{}",
                info.dev_type,
                key.0.get(),
                key.1
            ))
            .spawn(move || run_device(&info, &*drv, &stop_rx))
            .map_err(|e| Error::Driver(e.to_string()))?;
        g.insert(
            key,
            DeviceSlot {
                stop: stop_tx,
                thread: Some(thread),
            },
        );
    }
    Ok(())
}

struct DeviceRun<'a, S: Store, D: BackendDriver<S>> {
    dev: &'a DeviceInfo<S>,
    driver: &'a D,
    state: XenbusState,
    conn: Option<D::Connection>,
}

impl<S: Store, D: BackendDriver<S>> DeviceRun<'_, S, D> {
    fn switch(&mut self, next: XenbusState) -> Result<(), Error> {
        if self.state == next {
            return Ok(());
        }
        self.state.transition(next)?;
        debug!("{}: {:?} -> {:?}", self.dev.backend_path, self.state, next);
        self.dev
            .write_backend(paths::KEY_STATE, &next.to_string())?;
        self.state = next;
        Ok(())
    }

    fn disconnect(&mut self) {
        if let Some(c) = self.conn.take() {
            self.driver.disconnect(self.dev, c);
        }
    }

    fn fail(&mut self, what: &str, e: &Error) {
        warn!("{}: {what}: {e}", self.dev.backend_path);
        let _ = self.dev.write_backend("error", &format!("{what}: {e}"));
        self.disconnect();
        let _ = self.switch(XenbusState::Closing);
    }

    /// One step of the handshake after any watch fired. `Ok(false)` ends the device.
    fn step(&mut self, seen_frontend: &mut bool) -> Result<bool, Error> {
        let dev = self.dev;
        if dev.read_backend(paths::KEY_STATE)?.is_none() && self.state != XenbusState::Unknown {
            // Our directory was removed by the toolstack.
            return Ok(false);
        }
        if !dev.store.domain_alive(dev.frontend_id)? {
            return Ok(false);
        }
        let online = dev.read_backend(paths::KEY_ONLINE)?.as_deref() != Some("0");
        let fe_exists = dev.store.read(&dev.frontend_path)?.is_some();
        let fe = dev.frontend_state()?;
        if fe_exists {
            *seen_frontend = true;
        }
        match fe {
            XenbusState::Initialised | XenbusState::Connected
                if self.state == XenbusState::InitWait =>
            {
                if !self.driver.ready(dev)? {
                    return Ok(true);
                }
                match self.driver.connect(dev) {
                    Ok(c) => {
                        self.conn = Some(c);
                        self.switch(XenbusState::Connected)?;
                    }
                    Err(e) => self.fail("connecting", &e),
                }
            }
            XenbusState::Closing => {
                self.disconnect();
                self.switch(XenbusState::Closing)?;
            }
            XenbusState::Closed => {
                self.disconnect();
                self.switch(XenbusState::Closed)?;
                if !online {
                    return Ok(false);
                }
            }
            // The frontend reconnects.
            XenbusState::Initialising if self.state == XenbusState::Closed && online => {
                self.switch(XenbusState::InitWait)?;
            }
            // The frontend's directory went away.
            XenbusState::Unknown if *seen_frontend && !fe_exists => return Ok(false),
            _ => {}
        }
        if !online && self.state != XenbusState::Closed {
            // Unplug requested: ask the frontend to close.
            self.disconnect();
            self.switch(XenbusState::Closing)?;
        }
        Ok(true)
    }
}

fn run_device<S: Store, D: BackendDriver<S>>(dev: &DeviceInfo<S>, driver: &D, stop: &Receiver<()>) {
    let (tx, rx) = unbounded();
    let mut ids: Vec<WatchId> = Vec::new();
    let mut run = DeviceRun {
        dev,
        driver,
        state: dev.backend_state().unwrap_or(XenbusState::Unknown),
        conn: None,
    };
    let setup = (|| -> Result<(), Error> {
        ids.push(dev.store.watch(&dev.backend_path, "be", tx.clone())?);
        ids.push(dev.store.watch(
            &join(&dev.frontend_path, paths::KEY_STATE),
            "fe",
            tx.clone(),
        )?);
        ids.push(dev.store.watch(RELEASE_DOMAIN, "rel", tx.clone())?);
        // A reused directory may still say Connected or Closed: start the handshake afresh.
        if run.state != XenbusState::Unknown && run.state != XenbusState::Initialising {
            run.state = XenbusState::Closed;
        }
        driver.probe(dev)?;
        run.switch(XenbusState::InitWait)
    })();
    let mut alive = true;
    if let Err(e) = setup {
        run.fail("probing", &e);
        alive = false;
    }
    let mut seen_frontend = false;
    while alive {
        select! {
            recv(rx) -> ev => if ev.is_err() { break },
            recv(stop) -> _ => break,
        }
        while rx.try_recv().is_ok() {}
        alive = match run.step(&mut seen_frontend) {
            Ok(a) => a,
            Err(e) => {
                run.fail("handshake", &e);
                true
            }
        };
    }
    run.disconnect();
    for id in ids {
        let _ = dev.store.unwatch(id);
    }
    if dev.read_backend(paths::KEY_STATE).ok().flatten().is_some() {
        let _ = run.switch(XenbusState::Closed);
    }
}
