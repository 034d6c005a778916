//! Smoke tests of the C-library FFI against a real hypervisor.
//!
//! Like every `tests/real_xen.rs` of the workspace, these tests are `#[ignore]`d: they need a
//! Xen dom0 and are run there by `cargo xtask e2e` (see `xtask/README.md`).

use std::ptr;

use xen_sys::libs;

/// An open `xc_interface`, closed on drop.
struct Xc(*mut xen_sys::xc_interface);

impl Xc {
    fn open() -> Self {
        let lib = libs::xenctrl().expect("libxenctrl loads");
        let open = lib.xc_interface_open.as_ref().expect("xc_interface_open");
        // SAFETY: null loggers select libxenctrl's default stderr logger; flags 0 is documented.
        let xch = unsafe { open(ptr::null_mut(), ptr::null_mut(), 0) };
        assert!(
            !xch.is_null(),
            "xc_interface_open failed: {}",
            std::io::Error::last_os_error()
        );
        Xc(xch)
    }
}

impl Drop for Xc {
    fn drop(&mut self) {
        let lib = libs::xenctrl().expect("libxenctrl loads");
        let close = lib.xc_interface_close.as_ref().expect("xc_interface_close");
        // SAFETY: self.0 came from xc_interface_open and is closed exactly once.
        unsafe { close(self.0) };
    }
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn xc_version_is_4_17() {
    let xc = Xc::open();
    let lib = libs::xenctrl().unwrap();
    let version = lib.xc_version.as_ref().unwrap();
    // SAFETY: XENVER_version takes no argument buffer.
    let v = unsafe { version(xc.0, xen_sys::XENVER_version as i32, ptr::null_mut()) };
    assert!(v >= 0, "xc_version: {}", std::io::Error::last_os_error());
    assert_eq!(
        (v >> 16, v & 0xffff),
        (4, 17),
        "hypervisor version word {v:#x}"
    );
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn xc_physinfo_reports_cpus_and_memory() {
    let xc = Xc::open();
    let lib = libs::xenctrl().unwrap();
    let physinfo = lib.xc_physinfo.as_ref().unwrap();
    // SAFETY: xc_physinfo_t is plain old data; all-zero is a valid value.
    let mut info: xen_sys::xc_physinfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable xc_physinfo_t for the duration of the call.
    let rc = unsafe { physinfo(xc.0, &mut info) };
    assert_eq!(rc, 0, "xc_physinfo: {}", std::io::Error::last_os_error());
    assert!(info.nr_cpus >= 1, "nr_cpus = {}", info.nr_cpus);
    assert!(
        info.total_pages > info.free_pages,
        "total {} free {}",
        info.total_pages,
        info.free_pages
    );
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn dom0_is_listed_by_getinfolist() {
    let xc = Xc::open();
    let lib = libs::xenctrl().unwrap();
    let getinfolist = lib.xc_domain_getinfolist.as_ref().unwrap();
    // SAFETY: xc_domaininfo_t is plain old data; all-zero is a valid value.
    let mut info: [xen_sys::xc_domaininfo_t; 4] = unsafe { std::mem::zeroed() };
    // SAFETY: `info` has room for the 4 entries asked for.
    let n = unsafe { getinfolist(xc.0, 0, 4, info.as_mut_ptr()) };
    assert!(
        n >= 1,
        "xc_domain_getinfolist returned {n}: {}",
        std::io::Error::last_os_error()
    );
    assert_eq!(info[0].domain, 0, "the first domain listed is dom0");
    assert!(info[0].tot_pages > 0, "dom0 owns memory");
}

/// Binds an interdomain channel between two handles of dom0 and checks that a notification
/// sent on one end is delivered, through the hypervisor, on the other.
#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn event_channel_loopback_delivers_a_notification() {
    let lib = libs::xenevtchn().expect("libxenevtchn loads");
    let open = lib.xenevtchn_open.as_ref().unwrap();
    let close = lib.xenevtchn_close.as_ref().unwrap();
    // SAFETY: a null logger selects the default; flags 0 is documented.
    let (a, b) = unsafe { (open(ptr::null_mut(), 0), open(ptr::null_mut(), 0)) };
    assert!(
        !a.is_null() && !b.is_null(),
        "xenevtchn_open: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `a` and `b` are open handles for the rest of this block and closed at its end.
    unsafe {
        let unbound = lib.xenevtchn_bind_unbound_port.as_ref().unwrap()(a, 0);
        assert!(
            unbound >= 0,
            "bind_unbound_port: {}",
            std::io::Error::last_os_error()
        );
        let local = lib.xenevtchn_bind_interdomain.as_ref().unwrap()(b, 0, unbound as u32);
        assert!(
            local >= 0,
            "bind_interdomain: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(
            lib.xenevtchn_notify.as_ref().unwrap()(b, local as u32),
            0,
            "notify"
        );

        let fd = lib.xenevtchn_fd.as_ref().unwrap()(a);
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // Bounded wait: the test fails instead of hanging if the event never arrives.
        let ready = libc::poll(&mut pfd, 1, 10_000);
        assert_eq!(ready, 1, "no event within 10 s");
        let pending = lib.xenevtchn_pending.as_ref().unwrap()(a);
        assert_eq!(
            pending, unbound,
            "the event arrives on the port that was notified"
        );
        assert_eq!(
            lib.xenevtchn_unmask.as_ref().unwrap()(a, pending as u32),
            0,
            "unmask"
        );
        lib.xenevtchn_unbind.as_ref().unwrap()(b, local as u32);
        lib.xenevtchn_unbind.as_ref().unwrap()(a, unbound as u32);
        close(a);
        close(b);
    }
}
