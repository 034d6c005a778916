//! The backend framework against a scripted frontend on the in-memory store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use xen_types::DomId;
use xenbus::{
    create_device, destroy_device, paths, Backend, BackendDriver, DeviceInfo, Error,
    FrontendDevice, MemStore, Store, XenbusState,
};

const T: Duration = Duration::from_secs(10);
const FE: DomId = DomId(7);

#[derive(Default)]
struct Counting {
    probes: AtomicUsize,
    connects: AtomicUsize,
    disconnects: AtomicUsize,
}

impl BackendDriver<MemStore> for Counting {
    type Connection = String;
    fn device_type(&self) -> &str {
        "test"
    }
    fn probe(&self, dev: &DeviceInfo<MemStore>) -> Result<(), Error> {
        self.probes.fetch_add(1, Ordering::SeqCst);
        dev.write_backend("feature-x", "1")
    }
    fn connect(&self, dev: &DeviceInfo<MemStore>) -> Result<String, Error> {
        let r = dev
            .read_frontend("ring-ref")?
            .ok_or_else(|| Error::Missing("ring-ref".into()))?;
        self.connects.fetch_add(1, Ordering::SeqCst);
        Ok(r)
    }
    fn disconnect(&self, _dev: &DeviceInfo<MemStore>, _c: String) {
        self.disconnects.fetch_add(1, Ordering::SeqCst);
    }
}

fn setup() -> (Arc<MemStore>, Arc<Counting>, Backend) {
    let store = Arc::new(MemStore::new());
    let drv = Arc::new(Counting::default());
    let be = Backend::start(store.clone(), DomId::DOM0, drv.clone()).unwrap();
    (store, drv, be)
}

fn connect(store: &Arc<MemStore>, devid: u32) -> FrontendDevice<MemStore> {
    create_device(&**store, DomId::DOM0, FE, "test", devid, &[], &[]).unwrap();
    let mut fe = FrontendDevice::open(store.clone(), FE, "test", devid).unwrap();
    fe.wait_backend(|s| s == XenbusState::InitWait, T).unwrap();
    assert_eq!(fe.read_backend("feature-x").unwrap().as_deref(), Some("1"));
    fe.write_all(&[("ring-ref".into(), "8".into())]).unwrap();
    fe.switch_state(XenbusState::Initialised).unwrap();
    fe.wait_backend(|s| s == XenbusState::Connected, T).unwrap();
    fe.switch_state(XenbusState::Connected).unwrap();
    fe
}

#[test]
fn full_handshake_close_and_reconnect() {
    let (store, drv, be) = setup();
    let mut fe = connect(&store, 1);
    assert_eq!(drv.connects.load(Ordering::SeqCst), 1);
    assert_eq!(be.devices(), vec![(FE, 1)]);
    fe.switch_state(XenbusState::Closing).unwrap();
    fe.wait_backend(|s| s == XenbusState::Closing, T).unwrap();
    assert_eq!(drv.disconnects.load(Ordering::SeqCst), 1);
    fe.switch_state(XenbusState::Closed).unwrap();
    fe.wait_backend(|s| s == XenbusState::Closed, T).unwrap();
    // Reconnect: the backend goes back to InitWait (online is still 1).
    fe.switch_state(XenbusState::Initialising).unwrap();
    fe.wait_backend(|s| s == XenbusState::InitWait, T).unwrap();
    fe.switch_state(XenbusState::Initialised).unwrap();
    fe.wait_backend(|s| s == XenbusState::Connected, T).unwrap();
    assert_eq!(drv.connects.load(Ordering::SeqCst), 2);
    be.stop();
    assert_eq!(drv.disconnects.load(Ordering::SeqCst), 2);
    assert_eq!(
        store.watch_count(),
        2,
        "only the frontend's watches are left"
    );
}

#[test]
fn missing_frontend_detail_fails_cleanly_and_other_devices_continue() {
    let (store, drv, be) = setup();
    create_device(&*store, DomId::DOM0, FE, "test", 2, &[], &[]).unwrap();
    let mut bad = FrontendDevice::open(store.clone(), FE, "test", 2).unwrap();
    bad.wait_backend(|s| s == XenbusState::InitWait, T).unwrap();
    bad.switch_state(XenbusState::Initialised).unwrap(); // no ring-ref written
    bad.wait_backend(|s| s == XenbusState::Closing, T).unwrap();
    let err = bad.read_backend("error").unwrap().unwrap();
    assert!(err.contains("ring-ref"), "{err}");
    let _good = connect(&store, 3);
    assert_eq!(drv.connects.load(Ordering::SeqCst), 1);
    drop(be);
}

#[test]
fn frontend_domain_death_tears_down() {
    let (store, drv, be) = setup();
    let fe = connect(&store, 4);
    let bpath = fe.backend_path.clone();
    drop(fe);
    store.release_domain(FE);
    // The device thread ends and marks the backend Closed.
    let deadline = std::time::Instant::now() + T;
    while !be.devices().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "device thread did not end"
        );
        std::thread::yield_now();
    }
    assert_eq!(drv.disconnects.load(Ordering::SeqCst), 1);
    assert_eq!(
        store
            .read(&paths::join(&bpath, "state"))
            .unwrap()
            .as_deref(),
        Some("6")
    );
}

#[test]
fn unplug_via_online_zero_then_remove() {
    let (store, drv, be) = setup();
    let mut fe = connect(&store, 5);
    store
        .write(&paths::join(&fe.backend_path, "online"), "0")
        .unwrap();
    fe.wait_backend(|s| s == XenbusState::Closing, T).unwrap();
    assert_eq!(drv.disconnects.load(Ordering::SeqCst), 1);
    fe.switch_state(XenbusState::Closing).unwrap();
    fe.switch_state(XenbusState::Closed).unwrap();
    fe.wait_backend(|s| s == XenbusState::Closed, T).unwrap();
    destroy_device(&*store, DomId::DOM0, FE, "test", 5).unwrap();
    let deadline = std::time::Instant::now() + T;
    while !be.devices().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "device thread did not end"
        );
        std::thread::yield_now();
    }
    // A new device with the same id is served afresh.
    let _fe2 = connect(&store, 5);
    assert_eq!(drv.probes.load(Ordering::SeqCst), 2);
}

#[test]
fn frontend_open_needs_the_toolstack_directory() {
    let store = Arc::new(MemStore::new());
    assert!(matches!(
        FrontendDevice::open(store, FE, "test", 9),
        Err(Error::Missing(_))
    ));
}

#[test]
fn a_per_domain_backend_serves_only_its_frontend_domain() {
    let store = Arc::new(MemStore::new());
    let drv = Arc::new(Counting::default());
    let be = Backend::start_for(store.clone(), DomId::DOM0, FE, drv.clone()).unwrap();
    // Another domain's device first: the scoped backend must leave it alone.
    let other = DomId(8);
    create_device(&*store, DomId::DOM0, other, "test", 1, &[], &[]).unwrap();
    let _fe = connect(&store, 2);
    assert_eq!(be.devices(), vec![(FE, 2)]);
    assert_eq!(drv.probes.load(Ordering::SeqCst), 1);
    let other_state = paths::join(
        &paths::backend_path(DomId::DOM0, "test", other, 1),
        paths::KEY_STATE,
    );
    assert_eq!(
        store.read(&other_state).unwrap().as_deref(),
        Some("1"),
        "the other domain's device is still Initialising"
    );
    drop(be);
}
