//! Samples of the simulated host with fixture files: what each column is made of.

mod fixtures;

use std::time::Duration;

use xen_types::{DomId, Pages, VcpuId};
use xenbus::testing::TestXenstore;
use xenbus::Store;
use xenctrl::{DomainConfig, Xen};
use xentop::format::{self, Frame, Options, Widths};
use xentop::{Collector, Error, Sources, VbdBackend, VbdStats};

struct World {
    host: xen_sim::Host,
    xs: TestXenstore,
    dir: tempfile::TempDir,
}

fn guest(w: &World, xen: &Xen, name: Option<&str>, mib: u64) -> DomId {
    let dom = xen.create_domain(&DomainConfig::pv(2)).unwrap();
    xen.set_max_vcpus(dom, 2).unwrap();
    xen.set_max_mem(dom, Pages::from_mib(mib)).unwrap();
    xen.increase_reservation(dom, Pages::from_mib(mib)).unwrap();
    w.host.guest_vcpu_set_online(dom, VcpuId(0), true).unwrap();
    xen.unpause(dom).unwrap();
    if let Some(n) = name {
        w.xs.dom0()
            .write(&format!("/local/domain/{}/name", dom.get()), n)
            .unwrap();
    }
    dom
}

fn world() -> (World, Collector) {
    let w = World {
        host: xen_sim::Host::default(),
        xs: TestXenstore::start().unwrap(),
        dir: tempfile::tempdir().unwrap(),
    };
    w.xs.dom0()
        .write("/local/domain/0/name", "Domain-0")
        .unwrap();
    let xen = Xen::sim(w.host.clone());
    assert_eq!(guest(&w, &xen, Some("web"), 256), DomId(1));
    // Being built: no name yet, so not shown.
    assert_eq!(guest(&w, &xen, None, 64), DomId(2));
    fixtures::standard(w.dir.path());
    let c = Collector::new(xen, w.xs.dom0().clone(), Sources::under(w.dir.path()));
    (w, c)
}

#[test]
fn a_sample_holds_what_libxenstat_collects() {
    let (w, c) = world();
    let node = c.node().unwrap();
    let phys = c.xen().physinfo().unwrap();
    assert_eq!(node.tot_mem, phys.total_pages.0 * 4096);
    assert_eq!(node.free_mem, phys.free_pages.0 * 4096);
    assert_eq!(node.num_cpus, phys.nr_cpus);
    assert_eq!(node.cpu_hz, u64::from(phys.cpu_khz) * 1000);
    assert_eq!(node.xen_version, "4.17.0-sim");
    let names: Vec<&str> = node.domains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["Domain-0", "web"]);

    let web = node.domain(DomId(1)).unwrap();
    assert_eq!(web.cur_mem(), 256 << 20);
    assert_eq!(web.max_mem(), Some(256 << 20));
    assert_eq!(web.num_vcpus(), 2);
    assert_eq!(web.vcpus.len(), 2);
    assert!(web.vcpus[0].online && !web.vcpus[1].online);
    assert!(web.running());
    // Both vifs, in file order, with dom0's view of the counters.
    assert_eq!(web.networks.len(), 2);
    assert_eq!((web.networks[0].id, web.networks[0].rbytes), (0, 2048));
    assert_eq!(
        (web.networks[0].tbytes, web.networks[0].tdrop),
        (1_048_576, 4)
    );
    assert_eq!(web.networks[1].id, 1);
    assert_eq!(web.net_bytes(true), 3072);
    // Both disks; the unreadable one without counters.
    assert_eq!(web.vbds.len(), 2);
    assert_eq!(web.vbds[0].backend, VbdBackend::BlkBack);
    assert_eq!(
        web.vbds[0].stats,
        Some(VbdStats {
            oo_reqs: 1,
            rd_reqs: 20,
            wr_reqs: 30,
            rd_sects: 400,
            wr_sects: 500
        })
    );
    assert_eq!((web.vbds[1].dev, web.vbds[1].stats), (51728, None));
    // What libxenstat prints on stderr.
    assert!(
        node.warnings
            .iter()
            .any(|w| w.contains("vif9.0 but domain 9 does not exist")),
        "{:?}",
        node.warnings
    );
    assert!(
        node.warnings.iter().any(|w| w.contains("line 7")),
        "{:?}",
        node.warnings
    );
    drop(w);
}

#[test]
fn the_table_of_a_sample() {
    let (w, c) = world();
    let n1 = c.node().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let n2 = c.node().unwrap();
    let frame = Frame {
        node: &n2,
        prev: Some(&n1),
        elapsed: Duration::from_millis(200),
    };
    let text = format::table(&frame, &Options::default(), &mut Widths::default(), 0);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].trim_start().starts_with("NAME  STATE"));
    let web: Vec<&str> = lines[2].split_whitespace().collect();
    // NAME STATE CPU(sec) CPU(%) MEM(k) MEM(%) MAXMEM(k) MAXMEM(%) VCPUS NETS NETTX(k)
    // NETRX(k) VBDS VBD_OO VBD_RD VBD_WR VBD_RSECT VBD_WSECT SSID
    assert_eq!(web[0], "web");
    assert_eq!(web[1], "-----r");
    let pct: f64 = web[3].parse().unwrap();
    assert!(
        pct > 50.0 && pct < 200.0,
        "one running vCPU over ~200 ms: {pct}"
    );
    assert_eq!(
        &web[4..],
        [
            "262144", "3.1", "262144", "3.1", "2", "2", "1025", "3", "2", "1", "20", "30", "400",
            "500", "0"
        ]
    );
    drop(w);
}

#[test]
fn missing_or_foreign_proc_net_dev_is_an_error_naming_the_file() {
    let (w, c) = world();
    let dev = w.dir.path().join("proc/net/dev");
    std::fs::write(&dev, "Inter-| not the kernel's\n").unwrap();
    let e = c.node().unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e}");
    assert!(e.to_string().contains("proc/net/dev"), "{e}");
    std::fs::remove_file(&dev).unwrap();
    let e = c.node().unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    // Back in place: samples again.
    fixtures::standard(w.dir.path());
    assert_eq!(c.node().unwrap().domains.len(), 2);
}

#[test]
fn no_kernel_backends_means_no_kernel_disks() {
    let (w, c) = world();
    std::fs::remove_dir_all(w.dir.path().join("sys/bus")).unwrap();
    let node = c.node().unwrap();
    assert!(node.domain(DomId(1)).unwrap().vbds.is_empty());
}

#[test]
fn a_destroyed_domain_leaves_the_next_sample() {
    let (w, c) = world();
    assert!(c.node().unwrap().domain(DomId(1)).is_some());
    c.xen().destroy(DomId(1)).unwrap();
    // The toolstack removes its directory (it was never introduced to xenstored).
    w.xs.dom0().rm("/local/domain/1").unwrap();
    let node = c.node().unwrap();
    assert!(node.domain(DomId(1)).is_none());
    // Its vifs are now "of a domain that does not exist".
    assert!(node.warnings.iter().any(|w| w.contains("vif1.0")));
}
