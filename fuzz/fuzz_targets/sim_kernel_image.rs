//! The simulated host's domain builder on arbitrary kernel images: it must never panic, a
//! refused image must leave the domain and the host's memory untouched, and destroying the
//! domain gives every page back (the host's own free-page count).
//!
//! Hermetic: a fresh host per input, so a crash file reproduces alone.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xen_sim::domain::BuildSpec;
use xen_sim::{Host, HostConfig};
use xen_types::{DomId, Errno, EvtchnPort, Pages};

fuzz_target!(|kernel: &[u8]| {
    let h = Host::new(HostConfig::default());
    let free_at_start = h.physinfo().free_pages;
    let config = xen_sys::xen_domctl_createdomain {
        max_vcpus: 1,
        max_grant_frames: -1,
        max_maptrack_frames: -1,
        grant_opts: 1,
        ..Default::default()
    };
    let dom = h.create_domain(DomId::INVALID, &config).unwrap();
    h.set_max_vcpus(dom, 1).unwrap();
    let mem = Pages::from_mib(16);
    h.set_max_mem_kb(dom, mem.kib()).unwrap();
    let free = h.physinfo().free_pages;
    let spec = BuildSpec {
        kernel,
        ramdisk: None,
        cmdline: "",
        memory: mem,
        console_port: EvtchnPort(1),
        console_domid: DomId::DOM0,
        store_port: EvtchnPort(2),
        store_domid: DomId::DOM0,
    };
    match h.build_pv(dom, &spec) {
        Ok(b) => {
            assert!(b.console_pfn.0 < mem.0 && b.store_pfn.0 < mem.0);
            assert_eq!(h.physinfo().free_pages, free - mem.0);
        }
        Err(e) => {
            assert!(e == Errno::EINVAL || e == Errno::ENOMEM, "{e:?}");
            assert_eq!(h.physinfo().free_pages, free);
            assert_eq!(h.domain_info(dom).unwrap().tot_pages, 0);
        }
    }
    h.destroy(dom).unwrap();
    assert!(
        h.domain_info(dom).is_err(),
        "nothing holds the domain: it is gone"
    );
    assert_eq!(
        h.physinfo().free_pages,
        free_at_start,
        "every page came back"
    );
});
