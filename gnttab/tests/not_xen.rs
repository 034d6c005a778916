//! The real backends on a machine without Xen: a clear, typed error.

use gnttab::{Error, Gntshr, Gnttab, GNTALLOC_DEVICE, GNTDEV_DEVICE};
use xen_types::Errno;

fn expect_not_xen<T: std::fmt::Debug>(r: Result<T, Error>, device: &str) {
    if std::path::Path::new(device).exists() {
        assert!(r.is_ok(), "{r:?}");
        return;
    }
    match r {
        Err(e @ Error::NotXen { .. }) => {
            let Error::NotXen { path, errno } = &e else {
                unreachable!()
            };
            assert_eq!(*path, device);
            assert_eq!(*errno, Errno::ENOENT);
            assert!(e.to_string().contains("not running in a Xen dom0"));
        }
        other => panic!("expected NotXen, got {other:?}"),
    }
}

#[test]
fn gntdev_missing_is_not_xen() {
    expect_not_xen(Gnttab::open(), GNTDEV_DEVICE);
}

#[test]
fn gntalloc_missing_is_not_xen() {
    expect_not_xen(Gntshr::open(), GNTALLOC_DEVICE);
}
