//! Metrics with history, xcp-rrdd's role in xapi: a sample every 5 s of the host's and each
//! running VM's data sources under xcp-rrdd's names, kept in round-robin archives with
//! xcp-rrdd's layout ([`rrd::archive`]), saved in the state folder so they survive a restart,
//! exported as `/rrd_updates`, `/host_rrd`, `/vm_rrd` and Prometheus text, and watched by
//! perfmon's alarms.
//!
//! Data sources (as xcp-rrdd names them):
//! - host: `cpuN` (busy fraction of physical CPU N: the CPU time of the vCPUs that ran on it),
//!   `cpu_avg`, `memory_total_kib`, `memory_free_kib`, `loadavg` (dom0's `/proc/loadavg`);
//! - VM: `cpuN` (vCPU N's busy fraction), `memory` (bytes the domain has), `memory_target`
//!   (the balloon target from xenstore).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rrd::archive::{self, DsSpec};
use rrd::perfmon::{Alarm, Monitor, ObjectKind};
use rrd::plugin::{FileReader, Owner};
use rrd::{Cf, DsType, DsValue, Rrd, Transform};
use xen_types::DomId;
use xenctrl::{VcpuId, XenControl};

/// Seconds between samples.
pub const STEP: u64 = archive::STEP;

/// Where rrdd plugins write their shared-memory files.
pub const PLUGIN_DIR: &str = "/dev/shm/metrics";

/// Samples between two saves of the archives (one minute).
pub const SAVE_EVERY: u64 = 12;

/// The host's values at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostSample {
    /// Busy seconds of each physical CPU since boot (cumulative).
    pub cpu_busy: Vec<f64>,
    /// Total memory, KiB.
    pub memory_total_kib: u64,
    /// Free memory, KiB.
    pub memory_free_kib: u64,
    /// dom0's 1-minute load average, when known.
    pub loadavg: Option<f64>,
    /// Byte counters by data-source name (`pif_<dev>_rx`/`_tx`), stored as rates.
    pub counters: Vec<(String, f64)>,
}

/// A VM's values at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmSample {
    /// The VM's UUID.
    pub uuid: String,
    /// Seconds each vCPU has run (cumulative).
    pub vcpu_time: Vec<f64>,
    /// Bytes the domain has.
    pub memory: u64,
    /// Balloon target, bytes, when known.
    pub memory_target: Option<u64>,
    /// Counters by data-source name (`vif_<n>_rx`/`_tx`, `vbd_<dev>_read`/`_write` in
    /// bytes, `vbd_<dev>_iops_read`/`_write`/`_total` in requests), stored as rates.
    pub counters: Vec<(String, f64)>,
    /// Latency sources by data-source name (`vbd_<dev>_read_latency`, `_write_latency`,
    /// `_latency`): completed requests and their nanoseconds, cumulative. Stored as the mean
    /// microseconds per request completed during the step (0 when none), as a gauge.
    pub latency: Vec<(String, u64, u64)>,
}

/// `/proc/net/dev`'s interfaces: `(name, rx bytes, tx bytes)`.
pub fn parse_proc_net_dev(text: &str) -> Vec<(String, u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            (f.len() >= 9).then(|| (name.trim().to_owned(), f[0], f[8]))
        })
        .collect()
}

/// The guest device name of a VBD's `devid` (51712 is `xvda`; the extended form
/// `1 << 28 | disk << 8` too), the inverse of [`crate::xenops::vbd_device`].
pub fn vbd_name(devid: u32) -> String {
    let disk = if devid & (1 << 28) != 0 {
        (devid >> 8) & 0xf_ffff
    } else {
        (devid & 0xff) >> 4
    };
    let mut n = disk + 1;
    let mut letters = Vec::new();
    while n > 0 {
        n -= 1;
        letters.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    letters.reverse();
    format!("xvd{}", String::from_utf8_lossy(&letters))
}

/// Where the host's network and block counters are read (`/proc/net/dev`, the kernel
/// blkback's `/sys/bus/xen-backend/devices/vbd-<domid>-<devid>/statistics`, and qdisk
/// backends' QMP sockets `qmp-libxenstat-<domid>`, blkbackd's).
#[derive(Debug, Clone)]
pub struct CounterPaths {
    /// `/proc/net/dev`.
    pub net_dev: PathBuf,
    /// `/sys/bus/xen-backend/devices`.
    pub xen_backend: PathBuf,
    /// The directory of the QMP sockets (`/var/run/xen`); `None`: not read.
    pub qmp_dir: Option<PathBuf>,
}

impl Default for CounterPaths {
    fn default() -> Self {
        CounterPaths {
            net_dev: "/proc/net/dev".into(),
            xen_backend: "/sys/bus/xen-backend/devices".into(),
            qmp_dir: Some("/var/run/xen".into()),
        }
    }
}

/// How long the sampler waits for a QMP answer.
const QMP_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(200);

/// The data sources xcp-rrdd's iostat plugin (`rrdp_iostat.ml`, `vbd_<dev>_<key>`) makes of
/// one disk's cumulative counters: bytes, requests and their times (`None`: not known).
fn vbd_sources(
    vm: &mut VmSample,
    disk: &str,
    bytes: (u64, u64),
    reqs: (u64, u64),
    ns: Option<(u64, u64)>,
) {
    let c = &mut vm.counters;
    c.push((format!("vbd_{disk}_read"), bytes.0 as f64));
    c.push((format!("vbd_{disk}_write"), bytes.1 as f64));
    c.push((format!("vbd_{disk}_iops_read"), reqs.0 as f64));
    c.push((format!("vbd_{disk}_iops_write"), reqs.1 as f64));
    c.push((format!("vbd_{disk}_iops_total"), (reqs.0 + reqs.1) as f64));
    if let Some((rd, wr)) = ns {
        let l = &mut vm.latency;
        l.push((format!("vbd_{disk}_read_latency"), reqs.0, rd));
        l.push((format!("vbd_{disk}_write_latency"), reqs.1, wr));
        l.push((format!("vbd_{disk}_latency"), reqs.0 + reqs.1, rd + wr));
    }
}

/// Adds the counters found under `paths` to the samples: physical interfaces as the host's
/// `pif_<dev>_rx/tx`, `vif<domid>.<n>` as the VM's `vif_<n>_rx/tx` (the guest's receive is
/// dom0's transmit), kernel blkback disks as `vbd_<dev>_read/write` (sectors × 512) and
/// `vbd_<dev>_iops_read/write/total`, and a qdisk backend's disks (QMP `query-blockstats`)
/// as those and `vbd_<dev>_read_latency`/`_write_latency`/`_latency`.
pub fn add_counters(
    paths: &CounterPaths,
    domids: &HashMap<DomId, String>,
    host: &mut HostSample,
    vms: &mut [VmSample],
) {
    let idx: HashMap<String, usize> = vms
        .iter()
        .enumerate()
        .map(|(i, v)| (v.uuid.clone(), i))
        .collect();
    let vm_of = |d: u16| domids.get(&DomId(d)).and_then(|u| idx.get(u).copied());
    if let Ok(text) = std::fs::read_to_string(&paths.net_dev) {
        for (name, rx, tx) in parse_proc_net_dev(&text) {
            if let Some(rest) = name.strip_prefix("vif") {
                let Some((d, n)) = rest.split_once('.') else {
                    continue;
                };
                let (Ok(d), Ok(n)) = (d.parse::<u16>(), n.parse::<u32>()) else {
                    continue;
                };
                if let Some(i) = vm_of(d) {
                    vms[i].counters.push((format!("vif_{n}_rx"), tx as f64));
                    vms[i].counters.push((format!("vif_{n}_tx"), rx as f64));
                }
            } else if name != "lo" && !name.starts_with("tap") {
                host.counters.push((format!("pif_{name}_rx"), rx as f64));
                host.counters.push((format!("pif_{name}_tx"), tx as f64));
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(&paths.xen_backend) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("vbd-") else {
                continue;
            };
            let Some((d, dev)) = rest.split_once('-') else {
                continue;
            };
            let (Ok(d), Ok(dev)) = (d.parse::<u16>(), dev.parse::<u32>()) else {
                continue;
            };
            let Some(i) = vm_of(d) else { continue };
            let stat = |f: &str| {
                std::fs::read_to_string(e.path().join("statistics").join(f))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
            };
            let disk = vbd_name(dev);
            // The kernel's blkback counts requests and sectors, not their times.
            let (Some(rs), Some(ws)) = (stat("rd_sect"), stat("wr_sect")) else {
                continue;
            };
            let (rr, wr) = (stat("rd_req").unwrap_or(0), stat("wr_req").unwrap_or(0));
            vbd_sources(&mut vms[i], &disk, (rs * 512, ws * 512), (rr, wr), None);
        }
    }
    if let Some(dir) = &paths.qmp_dir {
        for (d, _) in domids.iter() {
            let sock = dir.join(format!("qmp-libxenstat-{}", d.0));
            let Some(i) = vm_of(d.0).filter(|_| sock.exists()) else {
                continue;
            };
            match crate::metrics_qmp::blockstats(&sock, QMP_TIMEOUT) {
                Ok(devs) => {
                    for s in devs {
                        vbd_sources(
                            &mut vms[i],
                            &s.device,
                            (s.rd_bytes, s.wr_bytes),
                            (s.rd_operations, s.wr_operations),
                            Some((s.rd_total_time_ns, s.wr_total_time_ns)),
                        );
                    }
                }
                Err(err) => tracing::debug!(path = %sock.display(), err, "QMP blockstats"),
            }
        }
    }
}

/// Reads the host's and the given domains' values through `xenctrl` (`xc_physinfo`,
/// `xc_domain_getinfolist`, `xc_vcpu_getinfo`). `vms` maps running domains to VM UUIDs;
/// `target` reads a domain's `memory/target` (KiB).
pub fn collect(
    xen: &dyn XenControl,
    vms: &HashMap<DomId, String>,
    target: &dyn Fn(DomId) -> Option<u64>,
) -> (HostSample, Vec<VmSample>) {
    let mut host = HostSample::default();
    if let Ok(p) = xen.physinfo() {
        host.memory_total_kib = p.total_pages.bytes() / 1024;
        host.memory_free_kib = p.free_pages.bytes() / 1024;
        host.cpu_busy = vec![0.0; p.nr_cpus as usize];
    }
    host.loadavg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok());
    let mut out = Vec::with_capacity(vms.len());
    for d in xen.list_domains().unwrap_or_default() {
        let Some(max) = d.max_vcpu_id else { continue };
        let mut vcpu_time = Vec::with_capacity(max as usize + 1);
        for v in 0..=max {
            match xen.vcpu_info(d.domid, VcpuId(v)) {
                Ok(i) => {
                    let secs = i.cpu_time.as_secs_f64();
                    vcpu_time.push(secs);
                    if let Some(b) = host.cpu_busy.get_mut(i.cpu as usize) {
                        *b += secs;
                    }
                }
                Err(_) => vcpu_time.push(f64::NAN),
            }
        }
        if let Some(uuid) = vms.get(&d.domid) {
            out.push(VmSample {
                uuid: uuid.clone(),
                vcpu_time,
                memory: d.tot_pages.bytes(),
                memory_target: target(d.domid).map(|k| k * 1024),
                counters: vec![],
                latency: vec![],
            });
        }
    }
    (host, out)
}

fn host_specs(ncpus: usize) -> Vec<DsSpec> {
    let mut v: Vec<DsSpec> = (0..ncpus)
        .map(|i| {
            DsSpec::new(
                &format!("cpu{i}"),
                DsType::Derive,
                0.0,
                1.0,
                "(fraction)",
                &format!("Physical cpu usage for cpu {i}"),
            )
        })
        .collect();
    v.push(DsSpec::new(
        "cpu_avg",
        DsType::Derive,
        0.0,
        1.0,
        "(fraction)",
        "Average physical cpu usage",
    ));
    v.push(DsSpec::new(
        "memory_total_kib",
        DsType::Gauge,
        0.0,
        f64::INFINITY,
        "KiB",
        "Total amount of memory in the host",
    ));
    v.push(DsSpec::new(
        "memory_free_kib",
        DsType::Gauge,
        0.0,
        f64::INFINITY,
        "KiB",
        "Total amount of free memory",
    ));
    v.push(DsSpec::new(
        "loadavg",
        DsType::Gauge,
        0.0,
        f64::INFINITY,
        "(fraction)",
        "Domain0 loadavg",
    ));
    v
}

fn vm_specs(nvcpus: usize) -> Vec<DsSpec> {
    let mut v: Vec<DsSpec> = (0..nvcpus)
        .map(|i| {
            DsSpec::new(
                &format!("cpu{i}"),
                DsType::Derive,
                0.0,
                1.0,
                "(fraction)",
                &format!("CPU{i} usage"),
            )
        })
        .collect();
    v.push(DsSpec::new(
        "memory",
        DsType::Gauge,
        0.0,
        f64::INFINITY,
        "B",
        "Memory currently allocated to VM",
    ));
    v.push(DsSpec::new(
        "memory_target",
        DsType::Gauge,
        0.0,
        f64::INFINITY,
        "B",
        "Target of VM balloon driver",
    ));
    v
}

/// A named value of a sample (data-source name, value).
type Named = (String, f64);

/// An RRD and where each data source of the current layout (`specs(n)`) sits in it: a
/// restored or grown RRD need not follow the layout order.
#[derive(Debug)]
struct Arch {
    rrd: Rrd,
    n: Option<usize>,
    map: Vec<usize>,
}

impl Arch {
    fn new(rrd: Rrd) -> Self {
        Arch {
            rrd,
            n: None,
            map: vec![],
        }
    }

    /// Feeds `values` (layout index, value) taken at `now`, first adding the data sources
    /// the RRD lacks (a vCPU brought online) when the layout changed, then the named counters
    /// (rates) and gauges, each data source made on first sight. `scratch` is reused.
    fn feed(
        &mut self,
        now: f64,
        specs: fn(usize) -> Vec<DsSpec>,
        n: usize,
        values: &[(usize, DsValue)],
        (counters, gauges): (&[Named], &[Named]),
        scratch: &mut Vec<(usize, DsValue, Transform)>,
    ) {
        if self.n != Some(n) {
            self.map.clear();
            for s in specs(n) {
                let i = match self.rrd.ds_index(&s.name) {
                    Some(i) => i,
                    None => {
                        self.rrd.add_ds(now, s.to_ds());
                        self.rrd.dss.len() - 1
                    }
                };
                self.map.push(i);
            }
            self.n = Some(n);
        }
        scratch.clear();
        scratch.extend(
            values
                .iter()
                .map(|&(k, v)| (self.map[k], v, Transform::Identity)),
        );
        let kinds = counters
            .iter()
            .map(|c| (c, DsType::Derive))
            .chain(gauges.iter().map(|g| (g, DsType::Gauge)));
        for ((name, v), ty) in kinds {
            let i = match self.rrd.ds_index(name) {
                Some(i) => i,
                None => {
                    let units = if name.ends_with("latency") {
                        "μs"
                    } else if name.contains("_iops_") {
                        "requests/s"
                    } else {
                        "B/s"
                    };
                    let spec = DsSpec::new(name, ty, 0.0, f64::INFINITY, units, name);
                    let mut d = spec.to_ds();
                    d.last_updated = now;
                    self.rrd.add_ds(now, d);
                    self.rrd.dss.len() - 1
                }
            };
            scratch.push((i, DsValue::Float(*v), Transform::Identity));
        }
        self.rrd.update(now, scratch, false);
    }
}

/// What the sampler keeps: one RRD for the host and one per VM, and perfmon's monitors.
#[derive(Debug, Default)]
struct State {
    host: Option<Arch>,
    vms: BTreeMap<String, Arch>,
    monitors: HashMap<String, Monitor>,
    samples: u64,
    plugin_dir: Option<PathBuf>,
    plugins: BTreeMap<PathBuf, FileReader>,
    plugin_errors: Vec<(PathBuf, String)>,
    scratch: Vec<(usize, DsValue, Transform)>,
    values: Vec<(usize, DsValue)>,
    cadence: PerfmonCadence,
    /// When perfmon runs next (`None`: at the next step).
    perfmon_next: Option<f64>,
    /// The `start` of perfmon's next read: one past the newest row it has read.
    perfmon_start: Option<i64>,
    /// Each VM's latency sources at the previous step: (requests, nanoseconds).
    last_latency: HashMap<String, HashMap<String, (u64, u64)>>,
    gauges: Vec<(String, f64)>,
}

/// perfmon's schedule (python3/bin/perfmon's `interval` and `rrd_step`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerfmonCadence {
    /// Seconds between two reads of `/rrd_updates` (perfmon's default: 300).
    pub interval: f64,
    /// Seconds per row read, 5 or 60 (perfmon's default: 60, the 1-minute averages).
    pub rrd_step: i64,
}

impl Default for PerfmonCadence {
    fn default() -> Self {
        PerfmonCadence {
            interval: 300.0,
            rrd_step: 60,
        }
    }
}

/// The host's archives and alarms.
#[derive(Debug)]
pub struct Metrics {
    host_uuid: String,
    dir: Option<PathBuf>,
    use_min_max: bool,
    counters: Mutex<Option<CounterPaths>>,
    state: Mutex<State>,
}

/// Why an export could not be made.
pub type ExportError = rrd::Error;

impl Metrics {
    /// Archives for the host `host_uuid`, saved under `dir` (`None`: kept in memory only).
    /// Archives saved there before are loaded; an unreadable one is logged and left aside
    /// (renamed `*.corrupt`), so a bad file loses nothing else.
    pub fn new(host_uuid: &str, dir: Option<&Path>) -> Metrics {
        let mut st = State::default();
        if let Some(d) = dir {
            let _ = std::fs::create_dir_all(d);
            if let Ok(rd) = std::fs::read_dir(d) {
                for e in rd.flatten() {
                    let p = e.path();
                    let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_owned)
                    else {
                        continue;
                    };
                    let Some(stem) = name.strip_suffix(".xml") else {
                        continue;
                    };
                    match Rrd::load(&p) {
                        Ok(r) if stem == "host" => st.host = Some(Arch::new(r)),
                        Ok(r) => {
                            if let Some(u) = stem.strip_prefix("vm-") {
                                st.vms.insert(u.to_owned(), Arch::new(r));
                            }
                        }
                        Err(err) => {
                            tracing::warn!(path = %p.display(), %err, "unreadable RRD set aside");
                            let _ = std::fs::rename(&p, p.with_extension("corrupt"));
                        }
                    }
                }
            }
        }
        Metrics {
            host_uuid: host_uuid.to_owned(),
            dir: dir.map(Path::to_owned),
            use_min_max: true,
            counters: Mutex::new(Some(CounterPaths::default())),
            state: Mutex::new(st),
        }
    }

    /// The host's UUID.
    pub fn host_uuid(&self) -> &str {
        &self.host_uuid
    }

    /// Records one sample taken at `now` (seconds since the epoch). VMs not in `vms` keep
    /// their archives (a halted VM's history stays, as in xcp-rrdd until it is destroyed).
    pub fn update(&self, now: f64, host: &HostSample, vms: &[VmSample]) {
        let mut st = self.state.lock();
        let st = &mut *st;
        let n = host.cpu_busy.len();
        let mm = self.use_min_max;
        let hrrd = st
            .host
            .get_or_insert_with(|| Arch::new(archive::fresh(&host_specs(n), mm, now)));
        st.values.clear();
        let total: f64 = host.cpu_busy.iter().sum();
        for (i, &b) in host.cpu_busy.iter().enumerate() {
            st.values.push((i, DsValue::Float(b)));
        }
        st.values.push((n, DsValue::Float(total / n.max(1) as f64)));
        st.values
            .push((n + 1, DsValue::Int64(host.memory_total_kib as i64)));
        st.values
            .push((n + 2, DsValue::Int64(host.memory_free_kib as i64)));
        st.values
            .push((n + 3, host.loadavg.map_or(DsValue::Unknown, DsValue::Float)));
        hrrd.feed(
            now,
            host_specs,
            n,
            &st.values,
            (&host.counters, &[]),
            &mut st.scratch,
        );
        for s in vms {
            let n = s.vcpu_time.len();
            let r = match st.vms.get_mut(&s.uuid) {
                Some(r) => r,
                None => st
                    .vms
                    .entry(s.uuid.clone())
                    .or_insert_with(|| Arch::new(archive::fresh(&vm_specs(n), mm, now))),
            };
            st.values.clear();
            for (i, &t) in s.vcpu_time.iter().enumerate() {
                st.values.push((i, DsValue::Float(t)));
            }
            st.values.push((n, DsValue::Int64(s.memory as i64)));
            st.values.push((
                n + 1,
                s.memory_target
                    .map_or(DsValue::Unknown, |t| DsValue::Int64(t as i64)),
            ));
            // Mean microseconds per request completed since the previous step.
            st.gauges.clear();
            let last = st.last_latency.entry(s.uuid.clone()).or_default();
            for (name, reqs, ns) in &s.latency {
                let (r0, n0) = last.insert(name.clone(), (*reqs, *ns)).unwrap_or((0, 0));
                let (dr, dn) = (reqs.saturating_sub(r0), ns.saturating_sub(n0));
                let us = if dr == 0 {
                    0.0
                } else {
                    dn as f64 / dr as f64 / 1000.0
                };
                st.gauges.push((name.clone(), us));
            }
            r.feed(
                now,
                vm_specs,
                n,
                &st.values,
                (&s.counters, &st.gauges),
                &mut st.scratch,
            );
        }
        read_plugins(st);
        st.samples += 1;
        if st.samples % SAVE_EVERY == 0 {
            drop_save(self, st);
        }
    }

    /// Reads rrdd plugins' shared-memory files (protocol v2) from `dir` at each step, as
    /// xcp-rrdd reads `/dev/shm/metrics`: their default-enabled data sources of the host and
    /// of VMs with an archive are added and updated with the plugin's timestamp.
    pub fn set_plugin_dir(&self, dir: Option<&Path>) {
        let mut st = self.state.lock();
        st.plugin_dir = dir.map(Path::to_owned);
        st.plugins.clear();
    }

    /// Where network and block counters are read (`None`: not read).
    pub fn set_counter_paths(&self, p: Option<CounterPaths>) {
        *self.counters.lock() = p;
    }

    /// Where network and block counters are read.
    pub fn counter_paths(&self) -> Option<CounterPaths> {
        self.counters.lock().clone()
    }

    /// The plugin files that could not be read at the last step, and why.
    pub fn plugin_errors(&self) -> Vec<(PathBuf, String)> {
        self.state.lock().plugin_errors.clone()
    }

    /// Forgets the archives of VMs for which `exists` is false (destroyed VMs), on disk too.
    pub fn retain_vms(&self, exists: impl Fn(&str) -> bool) {
        let mut st = self.state.lock();
        let gone: Vec<String> = st.vms.keys().filter(|u| !exists(u)).cloned().collect();
        for uuid in gone {
            st.vms.remove(&uuid);
            st.monitors.remove(&uuid);
            st.last_latency.remove(&uuid);
            if let Some(d) = &self.dir {
                let _ = std::fs::remove_file(d.join(format!("vm-{uuid}.xml")));
            }
        }
    }

    /// Saves every archive now.
    pub fn save(&self) -> Result<(), rrd::Error> {
        let st = self.state.lock();
        save_all(self.dir.as_deref(), &st)
    }

    /// Sets perfmon's cadence (its `--interval` and `--rrdstep` options).
    pub fn set_perfmon_cadence(&self, c: PerfmonCadence) {
        let mut st = self.state.lock();
        st.cadence = c;
        st.perfmon_next = None;
    }

    /// perfmon's loop at `now`: once every [`PerfmonCadence::interval`] seconds it reads the
    /// AVERAGE rows of `rrd_step` seconds made since its last read (from `interval` seconds
    /// back on its first run: `/rrd_updates?start=&cf=AVERAGE&interval=rrd_step&host=true`),
    /// refreshes each object's configuration and updates its variables row by row, each row
    /// counting `rrd_step` seconds towards the trigger period (python3/bin/perfmon `main`,
    /// `RRDUpdates.refresh`, `process_rrd_updates`). Between runs nothing is evaluated.
    /// `configs` holds each object's kind, UUID and `other-config:perfmon` text. Returns the
    /// alarms due and the configuration errors (object UUID, message).
    pub fn evaluate_alarms(
        &self,
        now: f64,
        configs: &[(ObjectKind, String, Option<String>)],
    ) -> (Vec<Alarm>, Vec<(String, String)>) {
        let mut st = self.state.lock();
        let st = &mut *st;
        let mut alarms = Vec::new();
        let mut errors = Vec::new();
        if st.perfmon_next.is_some_and(|n| now < n) {
            return (alarms, errors);
        }
        let c = st.cadence;
        st.perfmon_next = Some(now + c.interval);
        let start = st
            .perfmon_start
            .unwrap_or((now - c.interval).floor() as i64);
        st.monitors
            .retain(|u, _| configs.iter().any(|(_, c, x)| c == u && x.is_some()));
        let mut list: Vec<(String, &Rrd)> = Vec::with_capacity(st.vms.len() + 1);
        if let Some(h) = &st.host {
            list.push((format!("host:{}:", self.host_uuid), &h.rrd));
        }
        for (u, r) in &st.vms {
            list.push((format!("vm:{u}:"), &r.rrd));
        }
        let Ok(u) = rrd::updates::create_multi(&list, start, c.rrd_step, Some(Cf::Average)) else {
            return (alarms, errors);
        };
        // Avoid reading the same rows twice.
        st.perfmon_start = Some(u.end + 1);
        let rows = u.data.len();
        let reports = rrd::perfmon::reports(&u);
        for (kind, uuid, xml) in configs {
            let Some(xml) = xml else { continue };
            let m = st
                .monitors
                .entry(uuid.clone())
                .or_insert_with(|| Monitor::new(*kind, uuid));
            if let Err(e) = m.refresh(Some(xml), now) {
                errors.push((uuid.clone(), e.to_string()));
            }
            let Some((_, _, report)) = reports.iter().find(|(_, u, _)| u == uuid) else {
                continue;
            };
            alarms.extend(m.process(report, rows, c.rrd_step, now, &|_| f64::NAN));
        }
        (alarms, errors)
    }

    /// The `/rrd_updates` export: the host's archive (with `host`) and the VMs' (all, or
    /// those in `vm_uuids`), from `start` at `interval` seconds, as XML or JSON.
    pub fn rrd_updates(
        &self,
        start: i64,
        interval: i64,
        cf: Option<Cf>,
        host: bool,
        vm_uuids: Option<&[String]>,
        json: bool,
    ) -> Result<String, ExportError> {
        let st = self.state.lock();
        let mut list: Vec<(String, &Rrd)> = Vec::with_capacity(st.vms.len() + 1);
        if host {
            if let Some(h) = &st.host {
                list.push((format!("host:{}:", self.host_uuid), &h.rrd));
            }
        }
        for (u, r) in &st.vms {
            if vm_uuids.is_none_or(|f| f.iter().any(|x| x == u)) {
                list.push((format!("vm:{u}:"), &r.rrd));
            }
        }
        let u = rrd::updates::create_multi(&list, start, interval, cf)?;
        Ok(if json { u.to_json() } else { u.to_xml() })
    }

    /// The host's whole RRD (`/host_rrd`), XML or JSON.
    pub fn host_rrd(&self, json: bool) -> Option<String> {
        let st = self.state.lock();
        st.host.as_ref().map(|a| {
            if json {
                a.rrd.to_json()
            } else {
                a.rrd.to_xml(false)
            }
        })
    }

    /// A VM's whole RRD (`/vm_rrd?uuid=`), XML or JSON.
    pub fn vm_rrd(&self, uuid: &str, json: bool) -> Option<String> {
        let st = self.state.lock();
        st.vms.get(uuid).map(|a| {
            if json {
                a.rrd.to_json()
            } else {
                a.rrd.to_xml(false)
            }
        })
    }

    /// The newest values as Prometheus text (`/metrics`).
    pub fn prometheus(&self) -> String {
        let st = self.state.lock();
        let mut out = String::new();
        if let Some(h) = &st.host {
            rrd::prometheus::append(&mut out, "host", &self.host_uuid, &h.rrd);
        }
        for (u, r) in &st.vms {
            rrd::prometheus::append(&mut out, "vm", u, &r.rrd);
        }
        out
    }

    /// Number of VM archives.
    pub fn vm_count(&self) -> usize {
        self.state.lock().vms.len()
    }
}

/// Reads every plugin file once; a file that fails (bad CRC, truncated, too large, bad
/// metadata) is reported and skipped, the others are used.
fn read_plugins(st: &mut State) {
    st.plugin_errors.clear();
    let Some(dir) = st.plugin_dir.clone() else {
        return;
    };
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    st.plugins.retain(|p, _| paths.contains(p));
    for p in paths {
        let reader = st
            .plugins
            .entry(p.clone())
            .or_insert_with(|| FileReader::new(&p, rrd::plugin::DEFAULT_LIMIT));
        let payload = match reader.read() {
            Ok(x) => x,
            Err(rrd::Error::NoUpdate) => continue,
            Err(e) => {
                tracing::warn!(path = %p.display(), %e, "rrdd plugin");
                st.plugin_errors.push((p, e.to_string()));
                continue;
            }
        };
        // One update per owner, all at the plugin's timestamp.
        let mut by_owner: BTreeMap<Option<String>, Vec<(usize, DsValue, Transform)>> =
            BTreeMap::new();
        for ds in payload.datasources.iter().filter(|d| d.default) {
            let (key, arch) = match &ds.owner {
                Owner::Host => (None, st.host.as_mut()),
                Owner::Vm(u) => (Some(u.clone()), st.vms.get_mut(u)),
                _ => continue,
            };
            let Some(arch) = arch else { continue };
            let i = match arch.rrd.ds_index(&ds.name) {
                Some(i) => i,
                None => {
                    let spec =
                        DsSpec::new(&ds.name, ds.ty, ds.min, ds.max, &ds.units, &ds.description);
                    let mut d = spec.to_ds();
                    // Rates from the archive's last update on, not from the epoch.
                    d.last_updated = arch.rrd.last_updated;
                    arch.rrd.add_ds(payload.timestamp, d);
                    arch.rrd.dss.len() - 1
                }
            };
            by_owner
                .entry(key)
                .or_default()
                .push((i, ds.value, ds.transform));
        }
        for (key, vals) in by_owner {
            let arch = match &key {
                None => st.host.as_mut(),
                Some(u) => st.vms.get_mut(u),
            };
            if let Some(a) = arch {
                a.rrd.update(payload.timestamp, &vals, false);
            }
        }
    }
}

fn save_all(dir: Option<&Path>, st: &State) -> Result<(), rrd::Error> {
    let Some(dir) = dir else { return Ok(()) };
    std::fs::create_dir_all(dir).map_err(|e| rrd::Error::Io(dir.display().to_string(), e))?;
    if let Some(h) = &st.host {
        h.rrd.save(&dir.join("host.xml"))?;
    }
    for (u, r) in &st.vms {
        r.rrd.save(&dir.join(format!("vm-{u}.xml")))?;
    }
    Ok(())
}

fn drop_save(m: &Metrics, st: &State) {
    if let Err(err) = save_all(m.dir.as_deref(), st) {
        tracing::warn!(%err, "saving the RRDs failed");
    }
}
