//! Host discovery (simulated configuration or Linux sysfs) and the first-start population of
//! the database: host, pool, dom0, PIFs and networks, local SR, PGPUs.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::api::now_datetime;
use crate::datamodel::{Known, NULL_REF};
use crate::db::{Db, Read, Record};
use crate::value::Value;
use crate::Error;

/// A network interface of the host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Nic {
    /// Device name (`eth0`).
    pub device: String,
    /// MAC address.
    pub mac: String,
    /// MTU.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
}

fn default_mtu() -> u32 {
    1500
}

/// A display-class PCI device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Gpu {
    /// PCI address (`0000:00:02.0`).
    pub pci_id: String,
    /// Vendor name.
    pub vendor_name: String,
    /// Device name.
    pub device_name: String,
}

/// What the toolstack knows of its host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostConfig {
    /// Host name label.
    pub name: String,
    /// Management address.
    #[serde(default)]
    pub address: String,
    /// Total memory, bytes.
    pub memory_total: u64,
    /// Memory used by dom0, bytes.
    pub dom0_memory: u64,
    /// Physical CPU count.
    pub cpu_count: u32,
    /// CPU model name.
    #[serde(default)]
    pub cpu_model: String,
    /// Network interfaces.
    #[serde(default)]
    pub nics: Vec<Nic>,
    /// GPUs.
    #[serde(default)]
    pub gpus: Vec<Gpu>,
}

impl HostConfig {
    /// A simulated host: 16 GiB, 4 CPUs, two NICs, one GPU.
    pub fn simulated() -> Self {
        HostConfig {
            name: "xen-sim".into(),
            address: "127.0.0.1".into(),
            memory_total: 16 << 30,
            dom0_memory: 1 << 30,
            cpu_count: 4,
            cpu_model: "Simulated CPU".into(),
            nics: vec![
                Nic {
                    device: "eth0".into(),
                    mac: "02:16:3e:00:00:01".into(),
                    mtu: 1500,
                },
                Nic {
                    device: "eth1".into(),
                    mac: "02:16:3e:00:00:02".into(),
                    mtu: 1500,
                },
                Nic {
                    device: "eth2".into(),
                    mac: "02:16:3e:00:00:03".into(),
                    mtu: 1500,
                },
            ],
            gpus: vec![Gpu {
                pci_id: "0000:00:02.0".into(),
                vendor_name: "NVIDIA Corporation".into(),
                device_name: "GV100GL [Tesla V100 PCIe 16GB]".into(),
            }],
        }
    }

    /// Reads a JSON host configuration.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Io(path.display().to_string(), e))?;
        serde_json::from_str(&text).map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))
    }

    /// Discovers the host from Linux: NICs from `<sys>/class/net` (physical ones, i.e. with a
    /// `device` link, else all but `lo`), GPUs from `<sys>/bus/pci/devices/*/class` (class
    /// 0x03, display), memory and CPUs from `<proc>/meminfo` and `<proc>/cpuinfo`.
    pub fn from_sysfs(sys: &Path, proc_: &Path) -> Self {
        let mut nics = Vec::new();
        let mut all = Vec::new();
        if let Ok(rd) = std::fs::read_dir(sys.join("class/net")) {
            for e in rd.flatten() {
                let dev = e.file_name().to_string_lossy().into_owned();
                if dev == "lo" {
                    continue;
                }
                let p = e.path();
                let read = |f: &str| {
                    std::fs::read_to_string(p.join(f))
                        .unwrap_or_default()
                        .trim()
                        .to_owned()
                };
                let nic = Nic {
                    device: dev,
                    mac: read("address"),
                    mtu: read("mtu").parse().unwrap_or(1500),
                };
                if p.join("device").exists() {
                    nics.push(nic.clone());
                }
                all.push(nic);
            }
        }
        if nics.is_empty() {
            nics = all;
        }
        nics.sort_by(|a, b| a.device.cmp(&b.device));
        let mut gpus = Vec::new();
        if let Ok(rd) = std::fs::read_dir(sys.join("bus/pci/devices")) {
            for e in rd.flatten() {
                let p = e.path();
                let read = |f: &str| {
                    std::fs::read_to_string(p.join(f))
                        .unwrap_or_default()
                        .trim()
                        .to_owned()
                };
                let class =
                    u32::from_str_radix(read("class").trim_start_matches("0x"), 16).unwrap_or(0);
                if class >> 16 != 0x03 {
                    continue;
                }
                let vendor = read("vendor");
                let device = read("device");
                gpus.push(Gpu {
                    pci_id: e.file_name().to_string_lossy().into_owned(),
                    vendor_name: vendor_name(&vendor),
                    device_name: format!("Display controller {vendor}:{device}"),
                });
            }
        }
        gpus.sort_by(|a, b| a.pci_id.cmp(&b.pci_id));
        let meminfo = std::fs::read_to_string(proc_.join("meminfo")).unwrap_or_default();
        let mem_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let cpuinfo = std::fs::read_to_string(proc_.join("cpuinfo")).unwrap_or_default();
        let cpu_count = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count()
            .max(1) as u32;
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default();
        let name = std::fs::read_to_string(proc_.join("sys/kernel/hostname"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        let memory_total = mem_kib * 1024;
        HostConfig {
            name,
            address: "127.0.0.1".into(),
            memory_total,
            dom0_memory: memory_total / 8,
            cpu_count,
            cpu_model,
            nics,
            gpus,
        }
    }
}

fn vendor_name(id: &str) -> String {
    match id {
        "0x10de" => "NVIDIA Corporation",
        "0x1002" => "Advanced Micro Devices, Inc. [AMD/ATI]",
        "0x8086" => "Intel Corporation",
        "0x1234" => "QEMU",
        "0x1b36" => "Red Hat, Inc.",
        "0x15ad" => "VMware",
        "0x1013" => "Cirrus Logic",
        "0x102b" => "Matrox Electronics Systems Ltd.",
        other => return format!("Vendor {other}"),
    }
    .to_owned()
}

fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

fn rec<const N: usize>(fields: [(&str, Value); N]) -> Record {
    fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Populates an empty database with the host described by `cfg` (does nothing when a host
/// already exists). Returns the host's reference.
pub fn bootstrap(db: &Db, cfg: &HostConfig) -> Result<String, Error> {
    if let Some(h) = db.read(|v| v.all("host").into_iter().next()) {
        return Ok(h);
    }
    db.write(|tx| {
        let metrics = tx.create(
            Known::host_metrics.class(),
            rec([
                ("memory_total", s(cfg.memory_total.to_string())),
                (
                    "memory_free",
                    s(cfg.memory_total.saturating_sub(cfg.dom0_memory).to_string()),
                ),
                ("live", Value::Bool(true)),
                ("last_updated", now_datetime()),
            ]),
        );
        let mut cpu_info = std::collections::BTreeMap::new();
        cpu_info.insert("cpu_count".to_owned(), s(cfg.cpu_count.to_string()));
        cpu_info.insert("modelname".to_owned(), s(cfg.cpu_model.clone()));
        cpu_info.insert("vendor".to_owned(), s(""));
        let mut sw = std::collections::BTreeMap::new();
        sw.insert("product_brand".to_owned(), s("xen-rs"));
        sw.insert("product_version".to_owned(), s(env!("CARGO_PKG_VERSION")));
        sw.insert(
            "xapi".to_owned(),
            s(format!(
                "{}.{}",
                crate::api::API_VERSION.0,
                crate::api::API_VERSION.1
            )),
        );
        sw.insert("xen".to_owned(), s("4.17"));
        sw.insert("hostname".to_owned(), s(cfg.name.clone()));
        let host = tx.create(
            Known::host.class(),
            rec([
                ("name_label", s(cfg.name.clone())),
                ("hostname", s(cfg.name.clone())),
                ("address", s(cfg.address.clone())),
                (
                    "API_version_major",
                    s(crate::api::API_VERSION.0.to_string()),
                ),
                (
                    "API_version_minor",
                    s(crate::api::API_VERSION.1.to_string()),
                ),
                ("API_version_vendor", s("XenSource")),
                ("software_version", Value::Struct(sw)),
                ("enabled", Value::Bool(true)),
                ("cpu_info", Value::Struct(cpu_info)),
                ("metrics", s(metrics)),
                ("sched_policy", s("credit")),
                ("edition", s("xen-rs")),
                (
                    "capabilities",
                    Value::Array(vec![s("xen-3.0-x86_64"), s("hvm-3.0-x86_64")]),
                ),
            ]),
        );
        let dom0_metrics = tx.create(
            Known::VM_metrics.class(),
            rec([
                ("memory_actual", s(cfg.dom0_memory.to_string())),
                ("VCPUs_number", s(cfg.cpu_count.to_string())),
                ("start_time", now_datetime()),
            ]),
        );
        let m = s(cfg.dom0_memory.to_string());
        tx.create(
            Known::VM.class(),
            rec([
                (
                    "name_label",
                    s(format!("Control domain on host: {}", cfg.name)),
                ),
                (
                    "name_description",
                    s("The domain which manages physical devices and manages other domains"),
                ),
                ("power_state", s("Running")),
                ("domid", s("0")),
                ("is_control_domain", Value::Bool(true)),
                ("resident_on", s(host.clone())),
                ("memory_static_min", m.clone()),
                ("memory_dynamic_min", m.clone()),
                ("memory_dynamic_max", m.clone()),
                ("memory_static_max", m.clone()),
                ("memory_target", m),
                ("VCPUs_max", s(cfg.cpu_count.to_string())),
                ("VCPUs_at_startup", s(cfg.cpu_count.to_string())),
                ("metrics", s(dom0_metrics)),
                ("domarch", s("x64")),
            ]),
        );
        for (i, nic) in cfg.nics.iter().enumerate() {
            let net = tx.create(
                Known::network.class(),
                rec([
                    (
                        "name_label",
                        s(format!("Pool-wide network associated with {}", nic.device)),
                    ),
                    ("bridge", s(format!("xenbr{i}"))),
                    ("MTU", s(nic.mtu.to_string())),
                    ("managed", Value::Bool(true)),
                ]),
            );
            tx.create(
                Known::PIF.class(),
                rec([
                    ("device", s(nic.device.clone())),
                    ("network", s(net)),
                    ("host", s(host.clone())),
                    ("MAC", s(nic.mac.clone())),
                    ("MTU", s(nic.mtu.to_string())),
                    ("VLAN", s("-1")),
                    ("physical", Value::Bool(true)),
                    ("currently_attached", Value::Bool(true)),
                    ("management", Value::Bool(i == 0)),
                    ("managed", Value::Bool(true)),
                    (
                        "ip_configuration_mode",
                        s(if i == 0 { "DHCP" } else { "None" }),
                    ),
                ]),
            );
        }
        let sr = tx.create(
            Known::SR.class(),
            rec([
                ("name_label", s("Local storage")),
                ("type", s("ext")),
                ("content_type", s("user")),
                ("physical_size", s((100u64 << 30).to_string())),
            ]),
        );
        tx.create(
            Known::PBD.class(),
            rec([
                ("host", s(host.clone())),
                ("SR", s(sr.clone())),
                ("currently_attached", Value::Bool(true)),
            ]),
        );
        // As XenServer's first boot: the local SR keeps the host's suspend images.
        tx.set(&host, "suspend_image_sr", s(sr.clone()));
        tx.create(
            Known::pool.class(),
            rec([
                ("master", s(host.clone())),
                ("default_SR", s(sr.clone())),
                ("suspend_image_SR", s(sr.clone())),
                ("crash_dump_SR", s(sr)),
            ]),
        );
        let mut types = std::collections::HashMap::new();
        for gpu in &cfg.gpus {
            let pci = tx.create(
                Known::PCI.class(),
                rec([
                    ("class_name", s("VGA compatible controller")),
                    ("vendor_name", s(gpu.vendor_name.clone())),
                    ("device_name", s(gpu.device_name.clone())),
                    ("host", s(host.clone())),
                    ("pci_id", s(gpu.pci_id.clone())),
                ]),
            );
            let key = (gpu.vendor_name.clone(), gpu.device_name.clone());
            let group = if let Some(g) = types.get(&key) {
                String::clone(g)
            } else {
                let g = tx.create(
                    Known::GPU_group.class(),
                    rec([
                        (
                            "name_label",
                            s(format!(
                                "Group of {} {} GPUs",
                                gpu.vendor_name, gpu.device_name
                            )),
                        ),
                        ("GPU_types", Value::Array(vec![s(gpu.device_name.clone())])),
                        ("allocation_algorithm", s("depth_first")),
                    ]),
                );
                types.insert(key, g.clone());
                g
            };
            let pgpu = tx.create(
                Known::PGPU.class(),
                rec([
                    ("PCI", s(pci)),
                    ("GPU_group", s(group.clone())),
                    ("host", s(host.clone())),
                    ("dom0_access", s("enabled")),
                ]),
            );
            // Every PGPU supports whole-device passthrough.
            let pt = tx
                .iter_class("VGPU_type")
                .find(|(_, r)| {
                    r.get("implementation").and_then(Value::as_str) == Some("passthrough")
                })
                .map(|(k, _)| k.clone());
            let pt = pt.unwrap_or_else(|| {
                tx.create(
                    Known::VGPU_type.class(),
                    rec([
                        ("model_name", s("passthrough")),
                        ("implementation", s("passthrough")),
                        ("identifier", s("passthrough")),
                        ("max_heads", s("0")),
                    ]),
                )
            });
            for (obj, field, item) in [
                (&pgpu, "supported_VGPU_types", &pt),
                (&pgpu, "enabled_VGPU_types", &pt),
                (&pt, "supported_on_PGPUs", &pgpu),
                (&pt, "enabled_on_PGPUs", &pgpu),
                (&group, "supported_VGPU_types", &pt),
                (&group, "enabled_VGPU_types", &pt),
                (&pt, "supported_on_GPU_groups", &group),
                (&pt, "enabled_on_GPU_groups", &group),
            ] {
                let mut v = tx.refs_field(obj, field);
                if !v.contains(item) {
                    v.push(item.clone());
                }
                tx.set(
                    obj,
                    field,
                    Value::Array(v.into_iter().map(Value::String).collect()),
                );
            }
        }
        let _ = NULL_REF;
        Ok(host)
    })
}
