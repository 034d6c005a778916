//! [`XsStore`] and the framework over the project's xenstored in process
//! ([`TestXenstore`]): the adapter's tree and watch semantics, and a handshake with the
//! backend as dom0 and the frontend as its own domain (so permissions are enforced).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::unbounded;
use xen_types::{DomId, Errno};
use xenbus::store::RELEASE_DOMAIN;
use xenbus::testing::TestXenstore;
use xenbus::{
    create_device, Backend, BackendDriver, DeviceInfo, Error, FrontendDevice, Store, XenbusState,
    XsStore,
};

const T: Duration = Duration::from_secs(10);
const FE: DomId = DomId(7);

#[test]
fn tree_semantics() {
    let xs = TestXenstore::start().unwrap();
    let s = xs.dom0();
    s.write("/a/b/c", "1").unwrap();
    assert_eq!(s.read("/a/b").unwrap().as_deref(), Some(""), "parents made");
    assert_eq!(s.read("/a/b/c").unwrap().as_deref(), Some("1"));
    s.write_all(&[("/a/b/d".into(), "2".into()), ("/a/bb".into(), "3".into())])
        .unwrap();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(s.directory("/a/b").unwrap()), ["c", "d"]);
    assert_eq!(sorted(s.directory("/a").unwrap()), ["b", "bb"]);
    assert!(s.directory("/nope").unwrap().is_empty(), "missing: empty");
    s.rm("/a/b").unwrap();
    assert_eq!(s.read("/a/b/c").unwrap(), None);
    assert_eq!(s.read("/a/bb").unwrap().as_deref(), Some("3"));
    s.rm("/a/b").unwrap(); // already gone: no error
    assert!(matches!(s.read("/a//b"), Err(Error::Store(Errno::EINVAL))));
    s.write("/n", "12").unwrap();
    assert_eq!(s.read_parse::<u32>("/n").unwrap(), Some(12));
    assert!(matches!(s.read_parse::<u8>("/a/bb/x"), Ok(None)));
    s.write("/n", "x").unwrap();
    assert!(matches!(
        s.read_parse::<u32>("/n"),
        Err(Error::BadValue { .. })
    ));
}

#[test]
fn watches_fire_on_set_and_below_and_stop_after_unwatch() {
    let xs = TestXenstore::start().unwrap();
    let s = xs.dom0();
    let (tx, rx) = unbounded();
    let id = s.watch("/x", "tok", tx).unwrap();
    assert_eq!(s.watch_count(), 1);
    let ev = rx.recv_timeout(T).unwrap();
    assert_eq!((ev.path.as_str(), ev.token.as_str()), ("/x", "tok"));
    s.write("/x/y", "1").unwrap();
    let ev = rx.recv_timeout(T).unwrap();
    assert_eq!((ev.path.as_str(), ev.token.as_str()), ("/x/y", "tok"));
    s.write("/xy", "1").unwrap();
    // A later event proves the sibling's write was processed without firing.
    s.write("/x", "2").unwrap();
    assert_eq!(rx.recv_timeout(T).unwrap().path, "/x", "/xy must not fire");
    s.unwatch(id).unwrap();
    assert_eq!(s.watch_count(), 0);
    s.write("/x", "3").unwrap();
    // (The store's events are delivered in order: a second watch's event shows that
    // nothing more came for the removed one.)
    let (tx2, rx2) = unbounded();
    s.watch("/x", "two", tx2).unwrap();
    rx2.recv_timeout(T).unwrap();
    assert!(rx.try_recv().is_err(), "no event after unwatch");
    assert!(matches!(s.unwatch(id), Err(Error::NoSuchWatch)));
}

#[test]
fn a_destroyed_domain_fires_release_and_is_gone() {
    let xs = TestXenstore::start().unwrap();
    let dom0 = xs.dom0();
    let guest = xs.guest(DomId(3)).unwrap();
    guest
        .write("/local/domain/3/device/vbd/1/state", "1")
        .unwrap();
    let (tx, rx) = unbounded();
    dom0.watch(RELEASE_DOMAIN, "r", tx).unwrap();
    rx.recv_timeout(T).unwrap();
    assert!(dom0.domain_alive(DomId(3)).unwrap());
    xs.destroy_domain(DomId(3)).unwrap();
    let ev = rx.recv_timeout(T).unwrap();
    assert_eq!(ev.path, RELEASE_DOMAIN);
    assert!(!dom0.domain_alive(DomId(3)).unwrap());
    assert_eq!(dom0.read("/local/domain/3").unwrap(), None);
    // Its connection is closed.
    assert!(guest.read("/local/domain/3").is_err());
}

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
    let xs = TestXenstore::start().unwrap();
    let dom0 = xs.dom0().clone();
    let guest = xs.guest(FE).unwrap();

    let drv = Arc::new(Driver::default());
    let be = Backend::start(dom0.clone(), DomId::DOM0, drv.clone()).unwrap();
    create_device(&*dom0, DomId::DOM0, FE, "vbd", 768, &[("params", "x")], &[]).unwrap();

    let mut fe = FrontendDevice::open(guest.clone(), FE, "vbd", 768).unwrap();
    fe.wait_backend(|s| s == XenbusState::InitWait, T).unwrap();
    assert_eq!(fe.read_backend("feature-x").unwrap().as_deref(), Some("1"));
    // The guest may not write the backend's directory, nor read another domain's.
    assert!(matches!(
        guest.write(&format!("{}/sectors", fe.backend_path), "1"),
        Err(Error::Store(Errno::EACCES))
    ));
    dom0.write("/local/domain/9/secret", "s").unwrap();
    assert!(matches!(
        guest.read("/local/domain/9/secret"),
        Err(Error::Store(Errno::EACCES))
    ));

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
}
