//! Taking a sample: libxenstat's `xenstat_get_node` with every collector.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use xen_types::{DomId, Errno, VcpuId};
use xenbus::Store;
use xenctrl::Xen;

use crate::model::{Domain, Network, Node, Vcpu, PAGE_SIZE};
use crate::{netdev, qmp, sysfs, Error, Result};

/// Where the kernel's and the qdisk backends' statistics are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// `/proc/net/dev`.
    pub proc_net_dev: PathBuf,
    /// `/sys/class/net` (a vif's `device/nodename`).
    pub sys_class_net: PathBuf,
    /// `/sys/bus/xen-backend/devices`.
    pub xen_backend_devices: PathBuf,
    /// `/var/run/xen` (the `qmp-libxenstat-<domid>` sockets).
    pub run_dir: PathBuf,
    /// How long a QMP server may take to answer one command.
    pub qmp_timeout: Duration,
}

impl Default for Sources {
    fn default() -> Self {
        Sources::under(Path::new("/"))
    }
}

impl Sources {
    /// The machine's files with `root` in place of `/` (for tests: a fixture tree).
    pub fn under(root: &Path) -> Sources {
        Sources {
            proc_net_dev: root.join("proc/net/dev"),
            sys_class_net: root.join("sys/class/net"),
            xen_backend_devices: root.join("sys/bus/xen-backend/devices"),
            run_dir: root.join("var/run/xen"),
            qmp_timeout: Duration::from_secs(1),
        }
    }
}

/// Takes samples of the host (libxenstat's handle).
pub struct Collector {
    xen: Xen,
    store: Arc<dyn Store>,
    sources: Sources,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("xen", &self.xen)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// A collector over `xen` (real or simulated), xenstore `store` and `sources`.
    pub fn new(xen: Xen, store: Arc<dyn Store>, sources: Sources) -> Collector {
        Collector {
            xen,
            store,
            sources,
        }
    }

    /// The hypervisor handle.
    pub fn xen(&self) -> &Xen {
        &self.xen
    }

    /// One sample of everything xentop shows (`xenstat_get_node(XENSTAT_ALL)`).
    ///
    /// A domain without a name in xenstore, or whose vCPUs cannot be read, is being built
    /// or destroyed and is left out. An unreadable `/proc/net/dev` (or one without the
    /// kernel's header) is an error, as in libxenstat; a missing
    /// `/sys/bus/xen-backend/devices` means no kernel backends (libxenstat fails there).
    /// What libxenstat would print to stderr is in [`Node::warnings`].
    pub fn node(&self) -> Result<Node> {
        let phys = self.xen.physinfo()?;
        let version = self.xen.version()?;
        let mut node = Node {
            xen_version: version.to_string(),
            cpu_hz: u64::from(phys.cpu_khz) * 1000,
            num_cpus: phys.nr_cpus,
            tot_mem: phys.total_pages.0.saturating_mul(PAGE_SIZE),
            free_mem: phys.free_pages.0.saturating_mul(PAGE_SIZE),
            domains: Vec::new(),
            warnings: Vec::new(),
        };
        for info in self.xen.list_domains()? {
            let path = format!("/local/domain/{}/name", info.domid.get());
            let Some(name) = self.store.read(&path)? else {
                continue;
            };
            match self.vcpus(&info) {
                Ok(vcpus) => node.domains.push(Domain {
                    info,
                    name,
                    vcpus,
                    networks: Vec::new(),
                    vbds: Vec::new(),
                }),
                Err(Error::Xen(e)) if e.errno() != Some(Errno::ENOMEM) => {}
                Err(e) => return Err(e),
            }
        }
        self.networks(&mut node)?;
        self.vbds(&mut node)?;
        Ok(node)
    }

    fn vcpus(&self, info: &xenctrl::DomainInfo) -> Result<Vec<Vcpu>> {
        let n = info.max_vcpu_id.map_or(0, |m| m + 1);
        (0..n)
            .map(|i| {
                let v = self.xen.vcpu_info(info.domid, VcpuId(i))?;
                Ok(Vcpu {
                    online: v.online,
                    ns: u64::try_from(v.cpu_time.as_nanos()).unwrap_or(u64::MAX),
                })
            })
            .collect()
    }

    fn networks(&self, node: &mut Node) -> Result<()> {
        let path = &self.sources.proc_net_dev;
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let nd = netdev::parse(&text).map_err(|reason| Error::Format {
            path: path.clone(),
            reason,
        })?;
        for (line, text) in nd.bad_lines {
            node.warnings.push(format!(
                "{}: line {line} skipped, not an interface line: {text:?}",
                path.display()
            ));
        }
        for c in nd.ifaces {
            let Some((domid, id)) = netdev::vif_ids(&c.name, &self.sources.sys_class_net) else {
                continue;
            };
            let net = Network {
                id,
                rbytes: c.rx_bytes,
                rpackets: c.rx_packets,
                rerrs: c.rx_errs,
                rdrop: c.rx_drop,
                tbytes: c.tx_bytes,
                tpackets: c.tx_packets,
                terrs: c.tx_errs,
                tdrop: c.tx_drop,
            };
            match find(node, domid) {
                Some(d) => d.networks.push(net),
                None => node.warnings.push(format!(
                    "Found interface vif{domid}.{id} but domain {domid} does not exist."
                )),
            }
        }
        Ok(())
    }

    fn vbds(&self, node: &mut Node) -> Result<()> {
        // qdisk backends first, as libxenstat reads them before the kernel's.
        let ids: Vec<DomId> = node
            .domains
            .iter()
            .map(Domain::id)
            .filter(|d| !d.is_dom0())
            .collect();
        for id in ids {
            match qmp::domain_vbds(
                &*self.store,
                &self.sources.run_dir,
                id,
                self.sources.qmp_timeout,
            ) {
                Ok(v) => {
                    if let Some(d) = find(node, u32::from(id.get())) {
                        d.vbds.extend(v);
                    }
                }
                Err(Error::Store(e)) => return Err(Error::Store(e)),
                Err(e) => node.warnings.push(e.to_string()),
            }
        }
        let dir = &self.sources.xen_backend_devices;
        let all = sysfs::read_all(dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        for (domid, vbd) in all {
            match find(node, domid) {
                Some(d) => d.vbds.push(vbd),
                None => node.warnings.push(format!(
                    "Found interface {}-{domid}-{} but domain {domid} does not exist.",
                    if vbd.backend == crate::VbdBackend::BlkTap {
                        "tap"
                    } else {
                        "vbd"
                    },
                    vbd.dev
                )),
            }
        }
        Ok(())
    }
}

fn find(node: &mut Node, domid: u32) -> Option<&mut Domain> {
    node.domains
        .iter_mut()
        .find(|d| u32::from(d.info.domid.get()) == domid)
}
