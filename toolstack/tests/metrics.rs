//! Metrics on the simulated host: the sampler driven with an injected clock (xen-sim's manual
//! clock for CPU time, explicit timestamps for the archives), `/rrd_updates` and the other
//! handlers, archives surviving a restart, and perfmon's alarms as `message`s.

use std::sync::Arc;
use std::time::Duration;

use rrd::updates::Updates;
use toolstack::api::{Credentials, Xapi};
use toolstack::backend::Backend;
use toolstack::db::Db;
use toolstack::host::{self, HostConfig};
use toolstack::metrics::PerfmonCadence;
use toolstack::metrics_http::handle;
use toolstack::value::Value;
use xen_types::{DomId, Pages, VcpuId};

const GIB: u64 = 1 << 30;
const T0: i64 = 1_700_000_000;

struct T {
    x: Arc<Xapi>,
    sim: xen_sim::Host,
    s: String,
    t: i64,
}

impl T {
    fn new() -> T {
        let sim = xen_sim::Host::new(xen_sim::HostConfig {
            memory: Pages::from_mib(4096),
            dom0_memory: Pages::from_mib(1024),
            clock: xen_sim::Clock::manual(),
            ..Default::default()
        });
        let be = Backend::with_xenstored_in_process(xenctrl::Xen::sim(sim.clone())).unwrap();
        let db = Db::in_memory();
        host::bootstrap(&db, &HostConfig::simulated()).unwrap();
        let x = Xapi::new(db, Arc::new(be), Credentials::new("root", "pw").unwrap()).unwrap();
        let s = x
            .call(
                "session.login_with_password",
                &[Value::str("root"), Value::str("pw")],
            )
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned();
        T { x, sim, s, t: T0 }
    }

    fn call(&self, m: &str, args: &[Value]) -> Value {
        let mut p = vec![Value::str(self.s.clone())];
        p.extend_from_slice(args);
        self.x.call(m, &p).unwrap_or_else(|e| panic!("{m}: {e}"))
    }

    /// A started VM with 1 vCPU: its reference, UUID and domid.
    fn running_vm(&self) -> (Value, String, DomId) {
        let m = Value::String((GIB / 4).to_string());
        let mut r = std::collections::BTreeMap::new();
        for (k, v) in [
            ("name_label", Value::str("busy")),
            ("memory_static_max", m.clone()),
            ("memory_dynamic_max", m.clone()),
            ("memory_dynamic_min", m),
            ("VCPUs_max", Value::str("1")),
            ("VCPUs_at_startup", Value::str("1")),
        ] {
            r.insert(k.to_owned(), v);
        }
        let vm = self.call("VM.create", &[Value::Struct(r)]);
        self.call(
            "VM.start",
            &[vm.clone(), Value::Bool(false), Value::Bool(false)],
        );
        let uuid = self
            .call("VM.get_uuid", std::slice::from_ref(&vm))
            .as_str()
            .unwrap()
            .to_owned();
        let domid = DomId(
            self.call("VM.get_domid", std::slice::from_ref(&vm))
                .as_i64()
                .unwrap() as u16,
        );
        // The toolstack's builder leaves vCPU 0 offline on the simulated host; the guest
        // (played here) brings it up, and it then runs without blocking: a busy guest.
        self.sim
            .guest_vcpu_set_online(domid, VcpuId(0), true)
            .unwrap();
        (vm, uuid, domid)
    }

    /// One sampler step 5 s after the previous one, the simulated host's clock moved too.
    fn step(&mut self) -> Vec<String> {
        if self.t > T0 {
            self.sim.clock().advance(Duration::from_secs(5));
        }
        let r = self.x.metrics_step(self.t as f64);
        self.t += 5;
        r
    }

    fn get(&self, path: &str, q: &str) -> toolstack::metrics_http::Reply {
        let q = format!("session_id={}&{q}", self.s.replace(':', "%3A"));
        handle(&self.x, path, Some(&q), None).expect("a metrics path")
    }

    fn host_uuid(&self) -> String {
        let h = self.x.host_ref().to_owned();
        self.call("host.get_uuid", &[Value::str(h)])
            .as_str()
            .unwrap()
            .to_owned()
    }
}

#[test]
fn rrd_updates_after_n_samples_has_n_rows_with_xapi_legend() {
    let mut t = T::new();
    let dir = tempfile::tempdir().unwrap();
    t.x.enable_metrics(Some(dir.path()));
    let (_, vm, _) = t.running_vm();
    let host = t.host_uuid();
    let n = 9;
    for _ in 0..n {
        assert!(t.step().is_empty());
    }
    let r = t.get(
        "/rrd_updates",
        &format!("start={T0}&cf=AVERAGE&interval=5&host=true"),
    );
    assert_eq!((r.status, r.content_type), (200, "text/xml"), "{}", r.body);
    let u = Updates::from_xml(&r.body).unwrap();
    assert_eq!(u.data.len(), n, "one row per sample");
    assert_eq!(u.step, 5);
    for ds in [
        "cpu0",
        "cpu_avg",
        "memory_total_kib",
        "memory_free_kib",
        "loadavg",
    ] {
        assert!(
            u.legend.contains(&format!("AVERAGE:host:{host}:{ds}")),
            "host {ds} in {:?}",
            u.legend
        );
    }
    let col = |name: &str| {
        u.legend
            .iter()
            .position(|l| l == &format!("AVERAGE:vm:{vm}:{name}"))
            .unwrap_or_else(|| panic!("vm {name} in {:?}", u.legend))
    };
    let (cpu, mem, target) = (col("cpu0"), col("memory"), col("memory_target"));
    // The guest's one vCPU ran all the time: busy fraction 1 in every row after the first.
    for row in &u.data[..n - 1] {
        assert!(
            (row.data[cpu] - 1.0).abs() < 1e-6,
            "cpu0 {:?}",
            row.data[cpu]
        );
        assert!(
            row.data[mem] >= (GIB / 4) as f64,
            "memory {}",
            row.data[mem]
        );
        assert_eq!(row.data[target], (GIB / 4) as f64);
    }
    let total = u
        .legend
        .iter()
        .position(|l| l.ends_with(":memory_total_kib"))
        .unwrap();
    assert_eq!(u.data[0].data[total], (4096 * 1024) as f64);

    // JSON, as XAPI gives it.
    let j = t.get(
        "/rrd_updates",
        &format!("start={T0}&cf=AVERAGE&host=true&json=true"),
    );
    assert_eq!(j.content_type, "application/json");
    let v: serde_json::Value = serde_json::from_str(&j.body).unwrap();
    assert_eq!(v["meta"]["rows"], n.to_string());
    assert_eq!(v["data"].as_array().unwrap().len(), n);

    // The whole archives and Prometheus text.
    let h = t.get("/host_rrd", "");
    assert_eq!(h.status, 200);
    assert!(rrd::Rrd::from_xml(&h.body)
        .unwrap()
        .ds_index("cpu_avg")
        .is_some());
    let v1 = t.get("/vm_rrd", &format!("uuid={vm}"));
    assert_eq!(rrd::Rrd::from_xml(&v1.body).unwrap().rras.len(), 10);
    assert_eq!(t.get("/vm_rrd", "uuid=nope").status, 404);
    let p = t.get("/metrics", "");
    assert!(
        p.body.contains(&format!("xen_vm_cpu0{{uuid=\"{vm}\"}} 1")),
        "{}",
        p.body
    );
    assert!(p.body.contains("xen_host_memory_total_kib{"));

    // Bad requests get clear answers.
    assert_eq!(t.get("/rrd_updates", "cf=AVERAGE").status, 400);
    assert_eq!(t.get("/rrd_updates", "start=0&cf=MEDIAN").status, 400);
    assert_eq!(t.get("/rrd_updates", "start=0&cf=LAST").status, 404);

    // Archives survive a restart: saved, then loaded by a new set of metrics.
    t.x.metrics().unwrap().save().unwrap();
    let again = toolstack::metrics::Metrics::new(&host, Some(dir.path()));
    let body = again
        .rrd_updates(T0, 5, Some(rrd::Cf::Average), true, None, false)
        .unwrap();
    assert_eq!(body, r.body, "the same export after the restart");
    assert_eq!(Updates::from_xml(&body).unwrap().data.len(), n);
}

#[test]
fn handlers_are_authenticated_as_xapi() {
    let mut t = T::new();
    t.step();
    t.x.enable_metrics(None);
    let r = handle(&t.x, "/rrd_updates", Some("start=0&host=true"), None).unwrap();
    assert_eq!(r.status, 401);
    let r = handle(&t.x, "/metrics", Some("session_id=OpaqueRef%3Abogus"), None).unwrap();
    assert_eq!(r.status, 401);
    let r = handle(&t.x, "/metrics", None, Some("Basic cm9vdDp3cm9uZw==")).unwrap(); // root:wrong
    assert_eq!(r.status, 401);
    let r = handle(&t.x, "/metrics", None, Some("Basic cm9vdDpwdw==")).unwrap(); // root:pw
    assert_eq!(r.status, 200);
    assert!(handle(&t.x, "/other", None, None).is_none());
}

#[test]
fn handlers_are_served_over_http() {
    let mut t = T::new();
    t.step();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let l = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = l.local_addr().unwrap();
    rt.spawn(toolstack::server::serve_tcp(l, Arc::clone(&t.x), None));
    let get = |path: &str, auth: &str| {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    };
    let ok = get(
        "/rrd_updates?start=0&host=true",
        "Authorization: Basic cm9vdDpwdw==\r\n",
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains("<xport>"));
    let no = get("/rrd_updates?start=0&host=true", "");
    assert!(no.starts_with("HTTP/1.1 401"), "{no}");
    // `/` is the web page; other GETs are refused as before.
    assert!(get("/", "").starts_with("HTTP/1.1 200"));
    assert!(get("/nothing", "").starts_with("HTTP/1.1 405"));
}

fn f(v: &Value, k: &str) -> Value {
    v.as_struct()
        .and_then(|m| m.get(k))
        .unwrap_or_else(|| panic!("{k} in {v:?}"))
        .clone()
}

const PERFMON: &str = "<config><variable><name value=\"cpu_usage\"/><alarm_trigger_level value=\"0.5\"/><alarm_trigger_period value=\"30\"/><alarm_auto_inhibit_period value=\"3600\"/></variable></config>";

#[test]
fn alarm_fires_when_cpu_stays_above_threshold_not_when_it_dips() {
    let mut t = T::new();
    let (vm, uuid, domid) = t.running_vm();
    let f_uuid = uuid.clone();
    t.call(
        "VM.add_to_other_config",
        &[vm, Value::str("perfmon"), Value::str(PERFMON)],
    );
    let token = t.call(
        "event.from",
        &[
            Value::Array(vec![Value::str("message")]),
            Value::str(""),
            Value::Double(0.0),
        ],
    );
    let token = f(&token, "token");
    // perfmon run as `perfmon --interval=5 --rrdstep=5`: every 5 s row is evaluated.
    t.x.enable_metrics(None)
        .set_perfmon_cadence(PerfmonCadence {
            interval: 5.0,
            rrd_step: 5,
        });
    let sim = t.sim.clone();
    let block = |b: bool| sim.guest_vcpu_set_blocked(domid, VcpuId(0), b).unwrap();
    // Busy for 20 s, idle for 5 s, again and again: never 30 s above the level.
    let mut fired = Vec::new();
    for i in 0..40 {
        block(i % 5 == 4);
        fired.extend(t.step());
    }
    assert!(fired.is_empty(), "no alarm while the CPU dips: {fired:?}");
    // Busy without a break: an alarm after 30 s (6 samples), one only.
    block(false);
    for _ in 0..12 {
        fired.extend(t.step());
    }
    assert_eq!(fired.len(), 1, "{fired:?}");
    let msgs = t.call("message.get_all_records", &[]);
    let Value::Struct(m) = &msgs else { panic!() };
    assert_eq!(m.len(), 1);
    let rec = &m[&fired[0]];
    assert_eq!(f(rec, "name"), Value::str("ALARM"));
    assert_eq!(f(rec, "cls"), Value::str("VM"));
    assert_eq!(f(rec, "obj_uuid"), Value::str(uuid));
    assert_eq!(f(rec, "priority"), Value::str("3"));
    let body = f(rec, "body");
    let body = body.as_str().unwrap();
    assert!(
        body.starts_with("value: 1.000000\nconfig:\n<variable>"),
        "{body}"
    );
    // Seen through event.from.
    let ev = t.call(
        "event.from",
        &[
            Value::Array(vec![Value::str("message")]),
            token,
            Value::Double(0.0),
        ],
    );
    let evs = f(&ev, "events");
    assert!(evs
        .as_array()
        .unwrap()
        .iter()
        .any(|e| f(e, "class") == Value::str("message")
            && f(e, "operation") == Value::str("add")
            && f(e, "ref") == Value::str(fired[0].clone())));
    // get_since, destroy.
    let since = t.call(
        "message.get_since",
        &[Value::DateTime("19700101T00:00:00Z".into())],
    );
    assert_eq!(since.as_struct().map(|m| m.len()), Some(1));
    t.call("message.destroy", &[Value::str(fired[0].clone())]);
    assert_eq!(t.call("message.get_all", &[]).as_array().unwrap().len(), 0);
    // A destroyed VM's archive goes at the next step.
    let vm = t.call("VM.get_by_uuid", &[Value::str(f_uuid.clone())]);
    t.call("VM.hard_shutdown", std::slice::from_ref(&vm));
    t.call("VM.destroy", &[vm]);
    let m = t.x.metrics().unwrap().clone();
    assert!(m.vm_rrd(&f_uuid, false).is_some());
    t.step();
    assert!(m.vm_rrd(&f_uuid, false).is_none());
}

#[test]
fn message_create_checks_its_arguments() {
    let t = T::new();
    let host = t.host_uuid();
    let r = t.call(
        "message.create",
        &[
            Value::str("HA_POOL_OVERCOMMITTED"),
            Value::Int(2),
            Value::str("Host"),
            Value::str(host.clone()),
            Value::str("b"),
        ],
    );
    assert!(r.as_str().unwrap().starts_with("OpaqueRef:"));
    let mut p = vec![
        Value::str(t.s.clone()),
        Value::str("X"),
        Value::Int(1),
        Value::str("Host"),
        Value::str("not-a-uuid"),
        Value::str(""),
    ];
    assert_eq!(
        t.x.call("message.create", &p).unwrap_err().code,
        "UUID_INVALID"
    );
    p[3] = Value::str("Toaster");
    p[4] = Value::str(host);
    assert_eq!(
        t.x.call("message.create", &p).unwrap_err().code,
        "FIELD_TYPE_ERROR"
    );
    p.pop();
    assert_eq!(
        t.x.call("message.create", &p).unwrap_err().code,
        "MESSAGE_PARAMETER_COUNT_MISMATCH"
    );
}

#[test]
fn plugins_add_data_sources_through_protocol_v2() {
    use rrd::plugin::{FileWriter, Owner, Payload, PluginDs};
    use rrd::{DsType, DsValue, Transform};
    let mut t = T::new();
    let (_, vm, _) = t.running_vm();
    let host = t.host_uuid();
    let dir = tempfile::tempdir().unwrap();
    let m = t.x.enable_metrics(None);
    m.set_plugin_dir(Some(dir.path()));
    let ds = |name: &str, owner: Owner, v: f64| PluginDs {
        name: name.into(),
        owner,
        description: String::new(),
        units: "degC".into(),
        ty: DsType::Gauge,
        value: DsValue::Float(v),
        min: f64::NEG_INFINITY,
        max: f64::INFINITY,
        default: true,
        transform: Transform::Identity,
    };
    let w = FileWriter::new(&dir.path().join("temp"), 1 << 16);
    // A broken plugin next to it changes nothing for the good one.
    std::fs::write(dir.path().join("broken"), b"DATASOURCES\0\0").unwrap();
    for k in 0..6 {
        let ts = t.t as f64;
        w.write(&Payload {
            timestamp: ts,
            datasources: vec![
                ds("cpu-temp-cpu0", Owner::Host, 60.0 + k as f64),
                ds("guest_metric", Owner::Vm(vm.clone()), 7.0),
            ],
        })
        .unwrap();
        t.step();
    }
    let errs = m.plugin_errors();
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].0.ends_with("broken") && errs[0].1.contains("truncated"),
        "{errs:?}"
    );
    let r = t.get(
        "/rrd_updates",
        &format!("start={}&cf=AVERAGE&host=true", T0 + 10),
    );
    let u = Updates::from_xml(&r.body).unwrap();
    let col = |l: String| {
        u.legend
            .iter()
            .position(|x| *x == l)
            .unwrap_or_else(|| panic!("{l}"))
    };
    let temp = col(format!("AVERAGE:host:{host}:cpu-temp-cpu0"));
    let g = col(format!("AVERAGE:vm:{vm}:guest_metric"));
    assert_eq!(u.data[0].data[temp], 65.0);
    assert_eq!(u.data[1].data[temp], 64.0);
    assert_eq!(u.data[0].data[g], 7.0);
}

#[test]
fn network_and_disk_counters_become_pif_vif_vbd_rates() {
    let mut t = T::new();
    let (_, vm, domid) = t.running_vm();
    let host = t.host_uuid();
    let root = tempfile::tempdir().unwrap();
    let net_dev = root.path().join("net_dev");
    let xb = root.path().join("xen-backend");
    let stats = xb.join(format!("vbd-{}-51712/statistics", domid.0));
    std::fs::create_dir_all(&stats).unwrap();
    let m = t.x.enable_metrics(None);
    m.set_counter_paths(Some(toolstack::metrics::CounterPaths {
        net_dev: net_dev.clone(),
        xen_backend: xb.clone(),
        qmp_dir: None,
    }));
    for k in 0..5u64 {
        // eth0 receives 1000 B/s and sends 500 B/s; the guest's vif0 sends 200 B/s (dom0's
        // rx) and receives 100 B/s; its xvda reads 8 sectors/s and writes 2.
        std::fs::write(
            &net_dev,
            format!(
                "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 99 1 0 0 0 0 0 0 99 1 0 0 0 0 0 0\n  eth0: {} 10 0 0 0 0 0 0 {} 5 0 0 0 0 0 0\nvif{}.0: {} 1 0 0 0 0 0 0 {} 1 0 0 0 0 0 0\n",
                5000 * k,
                2500 * k,
                domid.0,
                1000 * k,
                500 * k
            ),
        )
        .unwrap();
        std::fs::write(stats.join("rd_sect"), (40 * k).to_string()).unwrap();
        std::fs::write(stats.join("wr_sect"), (10 * k).to_string()).unwrap();
        std::fs::write(stats.join("rd_req"), (5 * k).to_string()).unwrap();
        std::fs::write(stats.join("wr_req"), (k).to_string()).unwrap();
        t.step();
    }
    let r = t.get(
        "/rrd_updates",
        &format!("start={}&cf=AVERAGE&host=true", T0 + 15),
    );
    let u = Updates::from_xml(&r.body).unwrap();
    let v = |l: String| {
        let i = u
            .legend
            .iter()
            .position(|x| *x == l)
            .unwrap_or_else(|| panic!("{l} in {:?}", u.legend));
        u.data[0].data[i]
    };
    assert_eq!(v(format!("AVERAGE:host:{host}:pif_eth0_rx")), 1000.0);
    assert_eq!(v(format!("AVERAGE:host:{host}:pif_eth0_tx")), 500.0);
    assert_eq!(v(format!("AVERAGE:vm:{vm}:vif_0_rx")), 100.0);
    assert_eq!(v(format!("AVERAGE:vm:{vm}:vif_0_tx")), 200.0);
    assert_eq!(v(format!("AVERAGE:vm:{vm}:vbd_xvda_read")), 8.0 * 512.0);
    assert_eq!(v(format!("AVERAGE:vm:{vm}:vbd_xvda_write")), 2.0 * 512.0);
    // rrdp_iostat.ml's `iops_read`/`iops_write`/`iops_total` from blkback's rd_req/wr_req;
    // the kernel's blkback has no request times: no latency.
    assert_eq!(v(format!("AVERAGE:vm:{vm}:vbd_xvda_iops_read")), 1.0);
    // The archives hold single-precision values.
    let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-6, "{a} != {b}");
    close(v(format!("AVERAGE:vm:{vm}:vbd_xvda_iops_write")), 0.2);
    close(v(format!("AVERAGE:vm:{vm}:vbd_xvda_iops_total")), 1.2);
    assert!(!u.legend.iter().any(|l| l.contains("latency")));
    assert!(!u.legend.iter().any(|l| l.contains("pif_lo")));
}

#[test]
fn vbd_names_follow_xen_numbering() {
    use toolstack::metrics::vbd_name;
    // Up to xvdz: beyond, xenops names disks `xvd26` where Linux says `xvdaa` (vbd_name).
    for ud in [0u32, 1, 15, 16, 25] {
        let (devid, name) = toolstack::xenops::vbd_device(ud);
        assert_eq!(vbd_name(devid), name, "userdevice {ud}");
    }
    assert_eq!(vbd_name((1 << 28) | (26 << 8)), "xvdaa");
}

/// python3/bin/perfmon's defaults: every 300 s (`interval`) it reads the 1-minute AVERAGE rows
/// (`rrd_step` 60) made since its last read, so a VM busy 25 s of every minute (above the
/// level in its 5 s values, 0.42 on average) raises nothing, and a VM busy without a break
/// raises its alarm at perfmon's next run, not before.
#[test]
fn perfmon_evaluates_minute_averages_every_five_minutes() {
    let mut t = T::new();
    let (vm, _, domid) = t.running_vm();
    let cfg = "<config><variable><name value=\"cpu_usage\"/><alarm_trigger_level value=\"0.5\"/></variable></config>";
    t.call(
        "VM.add_to_other_config",
        &[vm, Value::str("perfmon"), Value::str(cfg)],
    );
    let sim = t.sim.clone();
    let block = |b: bool| sim.guest_vcpu_set_blocked(domid, VcpuId(0), b).unwrap();
    // Ten minutes of 25 s busy, 35 s idle: runs at 0, 300 s and 600 s find no bad minute.
    for i in 0..=120 {
        block(i % 12 >= 5);
        let fired = t.step();
        assert!(fired.is_empty(), "step {i}: {fired:?}");
    }
    // Busy from 605 s: the next run, at 900 s, raises the one alarm.
    block(false);
    let mut at = Vec::new();
    for i in 121..=200 {
        if !t.step().is_empty() {
            at.push(i);
        }
    }
    assert_eq!(at, [180], "alarms at steps {at:?}");
}

/// A qdisk backend's disks (blkbackd answers QMP on `qmp-libxenstat-<domid>` as QEMU does)
/// become rrdp_iostat.ml's `vbd_<dev>_read/write`, `iops_read/write/total` and the
/// `read_latency`/`write_latency`/`latency` gauges (mean µs per request of the step).
#[test]
fn qdisk_blockstats_become_vbd_iops_and_latency() {
    use std::io::{Read, Write};
    let mut t = T::new();
    let (_, vm, domid) = t.running_vm();
    let dir = tempfile::tempdir().unwrap();
    let l = std::os::unix::net::UnixListener::bind(
        dir.path().join(format!("qmp-libxenstat-{}", domid.0)),
    )
    .unwrap();
    // The peer answers as blkbackd's qmp.rs does; each connection is one step later:
    // per step 10 reads of 2 ms and 5 writes of 0.5 ms.
    std::thread::spawn(move || {
        for (k, c) in l.incoming().enumerate() {
            let Ok(mut c) = c else { return };
            let k = k as u64 + 1;
            c.write_all(br#"{"QMP": {"version": {}, "capabilities": []}}"#)
                .unwrap();
            let mut got = String::new();
            let mut buf = [0u8; 512];
            while !got.contains("query-blockstats") {
                let n = c.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
                if got.contains("qmp_capabilities") && !got.contains("caps-done") {
                    c.write_all(br#"{"return": {}}"#).unwrap();
                    got.push_str("caps-done");
                }
            }
            let reply = format!(
                r#"{{"return": [{{"device": "xvdb", "stats": {{"rd_bytes": {}, "wr_bytes": {}, "rd_operations": {}, "wr_operations": {}, "rd_total_time_ns": {}, "wr_total_time_ns": {}}}}}]}}"#,
                k * 40960,
                k * 20480,
                k * 10,
                k * 5,
                k * 10 * 2_000_000,
                k * 5 * 500_000
            );
            c.write_all(reply.as_bytes()).unwrap();
        }
    });
    let m = t.x.enable_metrics(None);
    m.set_counter_paths(Some(toolstack::metrics::CounterPaths {
        net_dev: dir.path().join("none"),
        xen_backend: dir.path().join("none"),
        qmp_dir: Some(dir.path().to_owned()),
    }));
    for _ in 0..5 {
        t.step();
    }
    let r = t.get(
        "/rrd_updates",
        &format!("start={}&cf=AVERAGE&host=true", T0 + 15),
    );
    let u = Updates::from_xml(&r.body).unwrap();
    let v = |name: &str| {
        let l = format!("AVERAGE:vm:{vm}:vbd_xvdb_{name}");
        let i = u
            .legend
            .iter()
            .position(|x| *x == l)
            .unwrap_or_else(|| panic!("{l} in {:?}", u.legend));
        u.data[0].data[i]
    };
    assert_eq!(v("read"), 40960.0 / 5.0);
    assert_eq!(v("write"), 20480.0 / 5.0);
    assert_eq!(v("iops_read"), 2.0);
    assert_eq!(v("iops_write"), 1.0);
    assert_eq!(v("iops_total"), 3.0);
    assert_eq!(v("read_latency"), 2000.0);
    assert_eq!(v("write_latency"), 500.0);
    // (10 × 2 ms + 5 × 0.5 ms) / 15 requests.
    assert_eq!(v("latency"), 1500.0);
}
