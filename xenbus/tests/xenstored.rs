//! The framework over a real xenstored (the project's, in process) through `XsStore`:
//! backend as dom0, frontend as its own domain (so permissions are enforced).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use xen_types::DomId;
use xenbus::{
    create_device, Backend, BackendDriver, DeviceInfo, Error, FrontendDevice, Store, XenbusState,
    XsStore,
};
use xenstore::{Client, FdTransport};
use xenstored::{Config, Daemon, SyncMode};

const T: Duration = Duration::from_secs(10);
const FE: DomId = DomId(7);

#[derive(Default)]
struct Driver {
    connects: AtomicUsize,
    disconnects: AtomicUsize,
}

impl BackendDriver<XsStore> for Driver {
    type Connection = String;
    fn device_type(&self) -> &str {
        "vbd"
    }
    fn probe(&self, dev: &DeviceInfo<XsStore>) -> Result<(), Error> {
        dev.write_backend_all(&[("feature-x", "1".into()), ("sectors", "100".into())])
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

#[test]
fn handshake_through_xenstored_with_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        socket_path: dir.path().join("socket"),
        data_dir: None,
        sync: SyncMode::Never,
        ..Config::default()
    };
    let daemon = Daemon::new(cfg).unwrap().spawn().unwrap();
    let dom0 =
        Arc::new(XsStore::new(Client::connect_socket(daemon.socket_path()).unwrap()).unwrap());
    let guest_conn = daemon.connect_as(FE).unwrap();
    let guest = Arc::new(
        XsStore::new(Client::with_transport(FdTransport::from(guest_conn)).unwrap()).unwrap(),
    );

    let drv = Arc::new(Driver::default());
    let be = Backend::start(dom0.clone(), DomId::DOM0, drv.clone()).unwrap();
    create_device(&*dom0, DomId::DOM0, FE, "vbd", 768, &[("params", "x")], &[]).unwrap();

    let mut fe = FrontendDevice::open(guest.clone(), FE, "vbd", 768).unwrap();
    fe.wait_backend(|s| s == XenbusState::InitWait, T).unwrap();
    assert_eq!(fe.read_backend("feature-x").unwrap().as_deref(), Some("1"));
    // The guest may not write the backend's directory, nor read another domain's.
    assert!(guest
        .write(&format!("{}/sectors", fe.backend_path), "1")
        .is_err());
    dom0.write("/local/domain/9/secret", "s").unwrap();
    assert!(guest.read("/local/domain/9/secret").is_err());

    fe.write_all(&[("ring-ref".into(), "11".into())]).unwrap();
    fe.switch_state(XenbusState::Initialised).unwrap();
    fe.wait_backend(|s| s == XenbusState::Connected, T).unwrap();
    fe.switch_state(XenbusState::Connected).unwrap();
    assert_eq!(drv.connects.load(Ordering::SeqCst), 1);
    fe.switch_state(XenbusState::Closing).unwrap();
    fe.wait_backend(|s| s == XenbusState::Closing, T).unwrap();
    fe.switch_state(XenbusState::Closed).unwrap();
    fe.wait_backend(|s| s == XenbusState::Closed, T).unwrap();
    assert_eq!(drv.disconnects.load(Ordering::SeqCst), 1);
    be.stop();
    drop(fe);
    daemon.shutdown().unwrap();
}
