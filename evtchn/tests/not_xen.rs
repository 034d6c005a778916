//! The real backend on a machine without Xen: a clear, typed error.

use evtchn::{Error, Evtchn, EVTCHN_DEVICE};
use xen_types::Errno;

#[test]
fn opening_without_xen_says_so() {
    if std::path::Path::new(EVTCHN_DEVICE).exists() {
        // Inside a dom0 (the e2e harness): the device opens.
        assert!(Evtchn::open().is_ok());
        return;
    }
    match Evtchn::open() {
        Err(Error::NotXen { path, errno }) => {
            assert_eq!(path, "/dev/xen/evtchn");
            assert_eq!(errno, Errno::ENOENT);
            let msg = Error::NotXen { path, errno }.to_string();
            assert!(msg.contains("not running in a Xen dom0"), "{msg}");
        }
        other => panic!("expected NotXen, got {other:?}"),
    }
}
