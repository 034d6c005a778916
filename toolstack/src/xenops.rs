//! VM lifecycle on the host: the role of XAPI's xenopsd.
//!
//! A [`VmConfig`] is the typed configuration of a VM and its devices, read once from the
//! database; the functions here realise it on the [`Backend`]: [`start`] (create the domain,
//! write its xenstore directories, build it, plug its devices, unpause), [`clean_shutdown`],
//! [`teardown`], and the device plugs. The API layer (`api::vm`) checks power states and
//! records the outcome in the database.

use std::time::Duration;

use xen_types::DomId;

use crate::backend::{Backend, DeviceKind, DomainConfig, ShutdownReason};
use crate::db::Read;
use crate::devices::DeviceHosting;
pub use crate::devices::VbdBackend;
use crate::error::{codes, ApiError};
use crate::value::Value;
use crate::Error;

/// A VM's power state (`vm_power_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    /// Not running.
    Halted,
    /// Running, paused.
    Paused,
    /// Running.
    Running,
    /// Suspended to disk.
    Suspended,
}

impl PowerState {
    /// The database and wire form (`Running`).
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::Halted => "Halted",
            PowerState::Paused => "Paused",
            PowerState::Running => "Running",
            PowerState::Suspended => "Suspended",
        }
    }

    /// Parses the database form; anything else reads as `Halted`.
    pub fn parse(s: &str) -> PowerState {
        match s {
            "Paused" => PowerState::Paused,
            "Running" => PowerState::Running,
            "Suspended" => PowerState::Suspended,
            _ => PowerState::Halted,
        }
    }

    /// Whether a domain exists for the VM.
    pub fn has_domain(self) -> bool {
        matches!(self, PowerState::Running | PowerState::Paused)
    }

    /// The lower-case form used in `VM_BAD_POWER_STATE`.
    pub fn lower(self) -> String {
        self.as_str().to_ascii_lowercase()
    }
}

/// What happens when a guest stops by itself (`on_normal_exit`, `on_crash_behaviour`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStop {
    /// The VM halts.
    Destroy,
    /// The VM starts again in a new domain.
    Restart,
}

impl AfterStop {
    fn parse(s: &str) -> AfterStop {
        // `restart`, `coredump_and_restart`, `rename_restart`.
        if s.ends_with("restart") {
            AfterStop::Restart
        } else {
            AfterStop::Destroy
        }
    }
}

/// The VBD `other_config` key naming its backend (xapi's `Xapi_globs.vbd_backend_key`).
pub const BACKEND_KIND_KEY: &str = "backend-kind";

/// A block device as the backend sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VbdConfig {
    /// The VBD's reference.
    pub vbd: String,
    /// Xen's device number (`xvda` = 51712).
    pub devid: u32,
    /// The guest's device name (`xvda`).
    pub name: String,
    /// Attached read-only.
    pub read_only: bool,
    /// A CD drive rather than a disk.
    pub cdrom: bool,
    /// What the backend opens: the VDI's location, else its `sm_config:path`, else its UUID
    /// (empty drive: empty).
    pub params: String,
    /// The backend the VBD asks for: its `other_config:backend-kind` (`vbd`, `qdisk`),
    /// which xapi passes to xenopsd among the VBD's backend keys.
    pub backend_kind: Option<String>,
    /// The backend its storage prefers, learnt when its VDI is attached (as xenopsd takes
    /// the `backend_type` of the storage manager's attach): `qdisk` for a qcow2 image.
    pub sm_backend: Option<VbdBackend>,
}

impl VbdConfig {
    /// The backend that serves this VBD, chosen as xenopsd's `device_kind_of`: the VBD's
    /// own `backend-kind`, else its storage's preference, else the host's default
    /// (`default-vbd-backend-kind`). A kind not served here is an error.
    pub fn backend(&self, hosting: &DeviceHosting) -> Result<VbdBackend, Error> {
        match self.backend_kind.as_deref() {
            Some(k) => VbdBackend::parse(k).ok_or_else(|| {
                Error::Device(format!(
                    "VBD {} (device {}): backend-kind {k:?} is not one this host serves \
                     (vbd, qdisk)",
                    self.vbd, self.name
                ))
            }),
            None => Ok(self.sm_backend.unwrap_or(hosting.default_vbd_backend)),
        }
    }
}

/// A network device as the backend sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifConfig {
    /// The VIF's reference.
    pub vif: String,
    /// Device number.
    pub devid: u32,
    /// MAC address.
    pub mac: String,
    /// MTU.
    pub mtu: u32,
    /// The bridge of its network.
    pub bridge: String,
}

/// A VM's configuration, read once from the database.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The VM's reference.
    pub vm: String,
    /// Its UUID.
    pub uuid: uuid::Uuid,
    /// `name_label`.
    pub name: String,
    /// Current power state.
    pub power_state: PowerState,
    /// dom0.
    pub is_control_domain: bool,
    /// A template (cannot start).
    pub is_a_template: bool,
    /// Domain id while it runs.
    pub domid: Option<DomId>,
    /// Memory the domain gets, bytes (`memory_static_max`).
    pub memory: u64,
    /// Balloon target, bytes (`memory_dynamic_max`).
    pub memory_target: u64,
    /// `VCPUs_max`.
    pub vcpus_max: u32,
    /// `VCPUs_at_startup`.
    pub vcpus_at_startup: u32,
    /// PV kernel, ramdisk and command line.
    pub kernel: String,
    /// PV ramdisk.
    pub ramdisk: String,
    /// Kernel command line.
    pub cmdline: String,
    /// After a guest poweroff.
    pub after_shutdown: AfterStop,
    /// After a guest reboot.
    pub after_reboot: AfterStop,
    /// After a crash.
    pub after_crash: AfterStop,
    /// Block devices.
    pub vbds: Vec<VbdConfig>,
    /// Network devices.
    pub vifs: Vec<VifConfig>,
}

/// The devid and name of a VBD's `userdevice` (xvda = 51712).
pub fn vbd_device(userdevice: u32) -> (u32, String) {
    let name = if userdevice < 26 {
        format!("xvd{}", (b'a' + userdevice as u8) as char)
    } else {
        format!("xvd{userdevice}")
    };
    let devid = if userdevice < 16 {
        (202 << 8) | (userdevice << 4)
    } else {
        (1 << 28) | (userdevice << 8)
    };
    (devid, name)
}

impl VmConfig {
    /// Reads `vm` and its devices; `None` when `vm` is not a VM.
    pub fn load(v: &impl Read, vm: &str) -> Option<VmConfig> {
        if v.class_of(vm) != Some("VM") {
            return None;
        }
        let rec = v.get(vm)?;
        let st = |k: &str| rec.get(k).and_then(Value::as_str).unwrap_or("");
        let int = |k: &str| rec.get(k).and_then(Value::as_i64).unwrap_or(0);
        let flag = |k: &str| rec.get(k) == Some(&Value::Bool(true));
        let vbds = v
            .refs_field(vm, "VBDs")
            .into_iter()
            .filter_map(|b| {
                let r = v.get(&b)?;
                let bs = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
                let (devid, name) = vbd_device(bs("userdevice").parse().unwrap_or(0));
                let params = v
                    .get(bs("VDI"))
                    .map(|vdi| {
                        let ds = |k: &str| vdi.get(k).and_then(Value::as_str).unwrap_or("");
                        // No storage manager here: a VDI made with `sm_config:path` is
                        // served from that image or block device.
                        let path = vdi
                            .get("sm_config")
                            .and_then(Value::as_struct)
                            .and_then(|m| m.get("path"))
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        [ds("location"), path, ds("uuid")]
                            .into_iter()
                            .find(|p| !p.is_empty())
                            .unwrap_or("")
                            .to_owned()
                    })
                    .unwrap_or_default();
                let backend_kind = r
                    .get("other_config")
                    .and_then(Value::as_struct)
                    .and_then(|m| m.get(BACKEND_KIND_KEY))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                Some(VbdConfig {
                    backend_kind,
                    sm_backend: None,
                    devid,
                    name,
                    read_only: bs("mode") == "RO",
                    cdrom: bs("type") == "CD",
                    params,
                    vbd: b,
                })
            })
            .collect();
        let vifs = v
            .refs_field(vm, "VIFs")
            .into_iter()
            .filter_map(|i| {
                let r = v.get(&i)?;
                let is = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
                Some(VifConfig {
                    devid: is("device").parse().unwrap_or(0),
                    mac: is("MAC").to_owned(),
                    mtu: is("MTU").parse().ok().filter(|m| *m > 0).unwrap_or(1500),
                    bridge: v.str_field(is("network"), "bridge"),
                    vif: i,
                })
            })
            .collect();
        let memory = u64::try_from(int("memory_static_max")).unwrap_or(0);
        let vcpus_max = u32::try_from(int("VCPUs_max")).unwrap_or(1).max(1);
        Some(VmConfig {
            vm: vm.to_owned(),
            uuid: uuid::Uuid::parse_str(st("uuid")).unwrap_or_default(),
            name: st("name_label").to_owned(),
            power_state: PowerState::parse(st("power_state")),
            is_control_domain: flag("is_control_domain"),
            is_a_template: flag("is_a_template"),
            domid: u16::try_from(int("domid")).ok().map(DomId),
            memory,
            memory_target: u64::try_from(int("memory_dynamic_max")).unwrap_or(memory),
            vcpus_max,
            vcpus_at_startup: u32::try_from(int("VCPUs_at_startup"))
                .unwrap_or(1)
                .clamp(1, vcpus_max),
            kernel: st("PV_kernel").to_owned(),
            ramdisk: st("PV_ramdisk").to_owned(),
            cmdline: st("PV_args").to_owned(),
            after_shutdown: AfterStop::parse(st("actions_after_shutdown")),
            after_reboot: AfterStop::parse(st("actions_after_reboot")),
            after_crash: AfterStop::parse(st("actions_after_crash")),
            vbds,
            vifs,
        })
    }

    /// What happens after the guest stopped by itself for `reason`.
    pub fn after(&self, reason: ShutdownReason) -> AfterStop {
        match reason {
            ShutdownReason::Reboot => self.after_reboot,
            ShutdownReason::Crash => self.after_crash,
            _ => self.after_shutdown,
        }
    }

    /// `/vm/<uuid>`.
    pub fn vm_path(&self) -> String {
        format!("/vm/{}", self.uuid)
    }

    fn domain(&self) -> DomainConfig {
        DomainConfig {
            uuid: self.uuid,
            memory: self.memory,
            max_vcpus: self.vcpus_max,
            kernel: self.kernel.clone(),
            ramdisk: self.ramdisk.clone(),
            cmdline: self.cmdline.clone(),
        }
    }

    /// The toolstack's nodes of the domain (`name`, `memory/*`, `cpu/*`, `/vm/<uuid>`).
    fn xenstore_entries(&self, domid: DomId) -> Vec<(String, String)> {
        let dom = xenbus::paths::domain_path(domid);
        let vm_path = self.vm_path();
        let d = domid.0;
        let mut e: Vec<(String, String)> = vec![
            (format!("{dom}/name"), self.name.clone()),
            (format!("{dom}/domid"), d.to_string()),
            (format!("{dom}/vm"), vm_path.clone()),
            (
                format!("{dom}/control/platform-feature-xs_reset_watches"),
                "1".into(),
            ),
            (
                format!("{dom}/memory/static-max"),
                (self.memory / 1024).to_string(),
            ),
            (
                format!("{dom}/memory/target"),
                (self.memory_target / 1024).to_string(),
            ),
            (
                format!("{dom}/control/platform-feature-multiprocessor-suspend"),
                "1".into(),
            ),
            (format!("{vm_path}/uuid"), self.uuid.to_string()),
            (format!("{vm_path}/name"), self.name.clone()),
            (format!("{vm_path}/domains/{d}"), dom.clone()),
        ];
        e.extend((0..self.vcpus_max).map(|c| {
            let on = c < self.vcpus_at_startup;
            (
                format!("{dom}/cpu/{c}/availability"),
                (if on { "online" } else { "offline" }).to_owned(),
            )
        }));
        e
    }
}

/// `HOST_NOT_ENOUGH_FREE_MEMORY [needed, free]`.
fn not_enough_memory(needed: u64, free: u64) -> ApiError {
    ApiError::new(
        codes::HOST_NOT_ENOUGH_FREE_MEMORY,
        [needed.to_string(), free.to_string()],
    )
}

/// Maps a failed start: Xen's `ENOMEM` (the host can shrink between the check and the
/// allocation, e.g. by ballooning) is `HOST_NOT_ENOUGH_FREE_MEMORY`, as in XAPI.
pub fn start_error(e: Error, needed: u64, free: u64) -> ApiError {
    if e.is_out_of_memory() {
        not_enough_memory(needed, free)
    } else {
        ApiError::internal(e)
    }
}

/// Starts `cfg` in a new domain, paused or not; on failure nothing is left behind.
/// `progress` hears the fraction done after each step.
pub fn start(
    be: &Backend,
    cfg: &VmConfig,
    paused: bool,
    progress: &dyn Fn(f64),
) -> Result<DomId, ApiError> {
    start_from(be, cfg, paused, progress, None)
}

/// Resumes `cfg` from its suspend image in a new domain (`xl restore`): the domain is
/// restored instead of built, then its devices are plugged as at [`start`] (new backends,
/// the device model started again) and it is unpaused unless `paused`. On failure nothing
/// is left behind and the image is kept.
pub fn resume(
    be: &Backend,
    cfg: &VmConfig,
    image: &std::fs::File,
    paused: bool,
    progress: &dyn Fn(f64),
) -> Result<DomId, ApiError> {
    start_from(be, cfg, paused, progress, Some(image))
}

/// Suspends the running `cfg` into `image` (`xl save`) and tears its domain down; on a
/// failure the VM keeps running in its domain. A guest that does not take the request
/// within `timeout` is `VM_FAILED_SUSPEND_ACKNOWLEDGMENT`, one that takes it but does not
/// suspend `VM_SUSPEND_TIMEOUT`, as xenopsd reports them.
pub fn suspend(
    be: &Backend,
    cfg: &VmConfig,
    domid: DomId,
    image: &std::fs::File,
    timeout: Duration,
) -> Result<(), ApiError> {
    be.save_domain(domid, image, timeout).map_err(|e| match e {
        Error::SuspendNotAcknowledged(_) => {
            ApiError::new(codes::VM_FAILED_SUSPEND_ACKNOWLEDGMENT, [cfg.vm.clone()])
        }
        Error::SuspendTimeout(_) => ApiError::new(
            codes::VM_SUSPEND_TIMEOUT,
            [cfg.vm.clone(), timeout.as_secs_f64().to_string()],
        ),
        e => ApiError::internal(e),
    })?;
    teardown(be, cfg, domid).map_err(ApiError::internal)
}

fn start_from(
    be: &Backend,
    cfg: &VmConfig,
    paused: bool,
    progress: &dyn Fn(f64),
    image: Option<&std::fs::File>,
) -> Result<DomId, ApiError> {
    let free = be.free_memory();
    if cfg.memory > free {
        return Err(not_enough_memory(cfg.memory, free));
    }
    let dc = cfg.domain();
    let domid = be
        .create_domain(&dc)
        .map_err(|e| start_error(e, cfg.memory, be.free_memory()))?;
    let t0 = std::time::Instant::now();
    let step = |what: &str| {
        tracing::info!(
            vm = cfg.vm,
            domid = domid.0,
            ms = t0.elapsed().as_millis() as u64,
            "start: {what}"
        );
    };
    let plumb = || -> Result<(), Error> {
        be.make_domain_dirs(domid, &cfg.vm_path(), &cfg.xenstore_entries(domid))?;
        progress(0.2);
        match image {
            Some(f) => {
                be.restore_domain(domid, &dc, f)?;
                step("restored");
            }
            None => {
                be.build_domain(domid, &dc)?;
                step("built");
            }
        }
        progress(0.6);
        let mut device_model = false;
        for vbd in &cfg.vbds {
            device_model |= plug_vbd(be, domid, vbd)?;
        }
        // As libxl, devices come up side by side: the device model starts while netback
        // takes the vifs, and is waited for last.
        let device_model = device_model && be.device_hosting().blkbackd.is_some();
        if device_model {
            be.spawn_device_model(domid)?;
        }
        for vif in &cfg.vifs {
            plug_vif(be, domid, vif)?;
        }
        for vif in &cfg.vifs {
            be.vif_hotplug(domid, vif.devid)?;
        }
        step("vifs hotplugged");
        if device_model {
            be.wait_device_model(domid)?;
            step("device model running");
        }
        progress(0.9);
        if !paused {
            be.unpause(domid)?;
        }
        step("unpaused");
        Ok(())
    };
    if let Err(e) = plumb() {
        let _ = teardown(be, cfg, domid);
        return Err(start_error(e, cfg.memory, be.free_memory()));
    }
    Ok(domid)
}

/// Writes a VBD's directories (backend in dom0, frontend in the guest) for the backend
/// [`VbdConfig::backend`] chooses: `backend/qdisk` for the domain's device model
/// (`blkbackd`), `backend/vbd` for the kernel's blkback (with the `block` script's
/// `physical-device` on a real host). Returns whether the device model serves it.
pub fn plug_vbd(be: &Backend, domid: DomId, vbd: &VbdConfig) -> Result<bool, Error> {
    let hosting = be.device_hosting();
    let qdisk = vbd.backend(hosting)? == VbdBackend::Qdisk;
    // On the simulated host nobody serves the disks, whichever directory they have.
    if qdisk && hosting.blkbackd.is_none() && be.hypervisor() == "xen" {
        return Err(Error::Device(format!(
            "VBD {} (device {}) needs a qdisk backend and this host runs no device model \
             (xapi --blkbackd)",
            vbd.vbd, vbd.name
        )));
    }
    let dtype = if vbd.cdrom { "cdrom" } else { "disk" };
    let devid = vbd.devid.to_string();
    let params = if qdisk && !vbd.params.is_empty() {
        format!("raw:{}", vbd.params)
    } else {
        vbd.params.clone()
    };
    let physical = if !qdisk && hosting.block_hotplug {
        Some(crate::devices::physical_device(&vbd.params)?)
    } else {
        None
    };
    let mut keys: Vec<(&str, &str)> = vec![
        ("params", &params),
        ("mode", if vbd.read_only { "r" } else { "w" }),
        ("dev", &vbd.name),
        ("device-type", dtype),
        ("removable", "0"),
        ("type", if qdisk { "qdisk" } else { "phy" }),
    ];
    if let Some(p) = &physical {
        keys.push(("physical-device", p));
        keys.push(("physical-device-path", &vbd.params));
    }
    let fkeys = [("virtual-device", devid.as_str()), ("device-type", dtype)];
    if qdisk {
        be.add_device_as("qdisk", DeviceKind::Vbd, domid, vbd.devid, &keys, &fkeys)?;
    } else {
        be.add_device(DeviceKind::Vbd, domid, vbd.devid, &keys, &fkeys)?;
    }
    Ok(qdisk)
}

/// Writes a VIF's directories (backend in dom0, frontend in the guest).
pub fn plug_vif(be: &Backend, domid: DomId, vif: &VifConfig) -> Result<(), Error> {
    let handle = vif.devid.to_string();
    be.add_device(
        DeviceKind::Vif,
        domid,
        vif.devid,
        &[
            ("mac", &vif.mac),
            ("mtu", &vif.mtu.to_string()),
            ("handle", &handle),
            ("bridge", &vif.bridge),
            ("script", "/etc/xen/scripts/vif-bridge"),
        ],
        &[("handle", &handle), ("mac", &vif.mac)],
    )
}

/// Stops the domain's device model, removes its devices, its xenstore directories and the
/// domain itself (libxl's order for `xl destroy`).
pub fn teardown(be: &Backend, cfg: &VmConfig, domid: DomId) -> Result<(), Error> {
    be.stop_device_model(domid)?;
    for dir in ["vbd", "qdisk", "vif"] {
        be.xs_rm(&xenbus::paths::join(
            &xenbus::paths::backend_root(DomId::DOM0, dir),
            &domid.0.to_string(),
        ))?;
    }
    be.xs_rm(&cfg.vm_path())?;
    be.destroy_domain(domid)
}

/// Asks the guest to stop for `reason` and waits up to `timeout`; `VM_SHUTDOWN_TIMEOUT`
/// when it did not.
pub fn clean_shutdown(
    be: &Backend,
    cfg: &VmConfig,
    domid: DomId,
    reason: ShutdownReason,
    timeout: Duration,
) -> Result<(), ApiError> {
    if be
        .clean_shutdown(domid, reason, timeout)
        .map_err(ApiError::internal)?
    {
        Ok(())
    } else {
        Err(ApiError::new(
            codes::VM_SHUTDOWN_TIMEOUT,
            [cfg.vm.clone(), timeout.as_secs_f64().to_string()],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enomem_from_xen_is_host_not_enough_free_memory() {
        let e = Error::Xen(xenctrl::Error::OutOfMemory {
            op: "xc_domain_populate_physmap",
        });
        let a = start_error(e, 100, 40);
        assert_eq!(a.code, codes::HOST_NOT_ENOUGH_FREE_MEMORY);
        assert_eq!(a.params, ["100", "40"]);
        let e = Error::Xen(xenctrl::Error::InvalidArgument { op: "xc_dom_build" });
        assert_eq!(start_error(e, 100, 40).code, codes::INTERNAL_ERROR);
    }

    #[test]
    fn a_vbds_backend_is_its_own_kind_else_its_storages_else_the_hosts() {
        let vbd = |kind: Option<&str>, sm: Option<VbdBackend>| VbdConfig {
            vbd: "OpaqueRef:v".into(),
            devid: 51712,
            name: "xvda".into(),
            read_only: false,
            cdrom: false,
            params: "/dev/loop0".into(),
            backend_kind: kind.map(str::to_owned),
            sm_backend: sm,
        };
        let host = |d| DeviceHosting {
            default_vbd_backend: d,
            ..DeviceHosting::default()
        };
        use VbdBackend::{Qdisk, Vbd};
        assert_eq!(DeviceHosting::default().default_vbd_backend, Vbd);
        assert_eq!(vbd(None, None).backend(&host(Qdisk)).unwrap(), Qdisk);
        assert_eq!(vbd(None, None).backend(&host(Vbd)).unwrap(), Vbd);
        assert_eq!(vbd(None, Some(Qdisk)).backend(&host(Vbd)).unwrap(), Qdisk);
        assert_eq!(
            vbd(Some("vbd"), Some(Qdisk)).backend(&host(Qdisk)).unwrap(),
            Vbd
        );
        assert_eq!(vbd(Some("qdisk"), None).backend(&host(Vbd)).unwrap(), Qdisk);
        let e = vbd(Some("tap"), None).backend(&host(Vbd)).unwrap_err();
        assert!(e.to_string().contains("\"tap\""), "{e}");
    }

    #[test]
    fn vbd_devices_follow_xen_numbering() {
        assert_eq!(vbd_device(0), (51712, "xvda".into()));
        assert_eq!(vbd_device(1), (51728, "xvdb".into()));
        assert_eq!(vbd_device(16), ((1 << 28) | (16 << 8), "xvdq".into()));
    }
}
