//! The backend framework against a scripted frontend, over the project's xenstored in process:
//! the backend as dom0, the frontend as its own domain (so permissions are xenstored's).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use xen_types::DomId;
use xenbus::testing::TestXenstore;
use xenbus::{
    create_device, destroy_device, paths, Backend, BackendDriver, DeviceInfo, Error,
    FrontendDevice, Store, XenbusState, XsStore,
};

const T: Duration = Duration::from_secs(10);
const FE: DomId = DomId(7);

#[derive(Default)]
struct Counting {
    probes: AtomicUsize,
    connects: AtomicUsize,
    disconnects: AtomicUsize,
}

impl BackendDriver<XsStore> for Counting {
    type Connection = String;
    fn device_type(&self) -> &str {
        "test"
    }
    fn probe(&self, dev: &DeviceInfo<XsStore>) -> Result<(), Error> {
        self.probes.fetch_add(1, Ordering::SeqCst);
        dev.write_backend("feature-x", "1")
    }
    fn connect(&self, dev: &DeviceInfo<XsStore>) -> Result<String, Error> {
        let r = dev
            .read_frontend("ring-ref")?
            .ok_or_else(|| Error::Missing("ring-ref".into()))?;
        self.connects.fetch_add(1, Ordering::SeqCst);
        Ok(r)
    }
    fn disconnect(&self, _dev: &DeviceInfo<XsStore>, _c: String) {
        self.disconnects.fetch_add(1, Ordering::SeqCst);
    }
}

fn setup() -> (TestXenstore, Arc<Counting>, Backend) {
    let xs = TestXenstore::start().unwrap();
    let drv = Arc::new(Counting::default());
    let be = Backend::start(xs.dom0().clone(), DomId::DOM0, drv.clone()).unwrap();
    (xs, drv, be)
}

fn connect(xs: &TestXenstore, devid: u32) -> FrontendDevice<XsStore> {
    create_device(&**xs.dom0(), DomId::DOM0, FE, "test", devid, &[], &[]).unwrap();
    let mut fe = FrontendDevice::open(xs.guest(FE).unwrap(), FE, "test", devid).unwrap();
    fe.wait_backend(|s| s == XenbusState::InitWait, T).unwrap();
    assert_eq!(fe.read_backend("feature-x").unwrap().as_deref(), Some("1"));
    fe.write_all(&[("ring-ref".into(), "8".into())]).unwrap();
    fe.switch_state(XenbusState::Initialised).unwrap();
    fe.wait_backend(|s| s == XenbusState::Connected, T).unwrap();
    fe.switch_state(XenbusState::Connected).unwrap();
    fe
}

fn wait_no_devices(be: &Backend) {
    let deadline = std::time::Instant::now() + T;
    while !be.devices().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "device thread did not end"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn full_handshake_close_and_reconnect() {
    let (xs, drv, be) = setup();
    let mut fe = connect(&xs, 1);
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
    assert!(xs.dom0().watch_count() > 0);
    be.stop();
    assert_eq!(drv.disconnects.load(Ordering::SeqCst), 2);
    assert_eq!(
        xs.dom0().watch_count(),
        0,
        "the backend removed all its watches"
    );
    assert!(fe.store().watch_count() > 0, "the frontend's are still set");
}

#[test]
fn missing_frontend_detail_fails_cleanly_and_other_devices_continue() {
    let (xs, drv, be) = setup();
    create_device(&**xs.dom0(), DomId::DOM0, FE, "test", 2, &[], &[]).unwrap();
    let mut bad = FrontendDevice::open(xs.guest(FE).unwrap(), FE, "test", 2).unwrap();
    bad.wait_backend(|s| s == XenbusState::InitWait, T).unwrap();
    bad.switch_state(XenbusState::Initialised).unwrap(); // no ring-ref written
    bad.wait_backend(|s| s == XenbusState::Closing, T).unwrap();
    let err = bad.read_backend("error").unwrap().unwrap();
    assert!(err.contains("ring-ref"), "{err}");
    let _good = connect(&xs, 3);
    assert_eq!(drv.connects.load(Ordering::SeqCst), 1);
    drop(be);
}

#[test]
fn frontend_domain_death_tears_down() {
    let (xs, drv, be) = setup();
    let fe = connect(&xs, 4);
    let bpath = fe.backend_path.clone();
    drop(fe);
    xs.destroy_domain(FE).unwrap();
    // The device thread ends and marks the backend Closed.
    wait_no_devices(&be);
    assert_eq!(drv.disconnects.load(Ordering::SeqCst), 1);
    assert_eq!(
        xs.dom0()
            .read(&paths::join(&bpath, "state"))
            .unwrap()
            .as_deref(),
        Some("6")
    );
}

#[test]
fn unplug_via_online_zero_then_remove() {
    let (xs, drv, be) = setup();
    let mut fe = connect(&xs, 5);
    xs.dom0()
        .write(&paths::join(&fe.backend_path, "online"), "0")
        .unwrap();
    fe.wait_backend(|s| s == XenbusState::Closing, T).unwrap();
    assert_eq!(drv.disconnects.load(Ordering::SeqCst), 1);
    fe.switch_state(XenbusState::Closing).unwrap();
    fe.switch_state(XenbusState::Closed).unwrap();
    fe.wait_backend(|s| s == XenbusState::Closed, T).unwrap();
    destroy_device(&**xs.dom0(), DomId::DOM0, FE, "test", 5).unwrap();
    wait_no_devices(&be);
    // A new device with the same id is served afresh.
    let _fe2 = connect(&xs, 5);
    assert_eq!(drv.probes.load(Ordering::SeqCst), 2);
}

#[test]
fn frontend_open_needs_the_toolstack_directory() {
    let xs = TestXenstore::start().unwrap();
    assert!(matches!(
        FrontendDevice::open(xs.guest(FE).unwrap(), FE, "test", 9),
        Err(Error::Missing(_))
    ));
}

#[test]
fn a_per_domain_backend_serves_only_its_frontend_domain() {
    let xs = TestXenstore::start().unwrap();
    let drv = Arc::new(Counting::default());
    let be = Backend::start_for(xs.dom0().clone(), DomId::DOM0, FE, drv.clone()).unwrap();
    // Another domain's device first: the scoped backend must leave it alone.
    let other = DomId(8);
    create_device(&**xs.dom0(), DomId::DOM0, other, "test", 1, &[], &[]).unwrap();
    let _fe = connect(&xs, 2);
    assert_eq!(be.devices(), vec![(FE, 2)]);
    assert_eq!(drv.probes.load(Ordering::SeqCst), 1);
    let other_state = paths::join(
        &paths::backend_path(DomId::DOM0, "test", other, 1),
        paths::KEY_STATE,
    );
    assert_eq!(
        xs.dom0().read(&other_state).unwrap().as_deref(),
        Some("1"),
        "the other domain's device is still Initialising"
    );
    drop(be);
}
