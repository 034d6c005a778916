//! The operator's web page on the simulated host: xapi serves `/` over HTTP with two running
//! VMs and a few minutes of samples; headless Chromium loads it with a session handed over in
//! the URL, runs its script (JSON-RPC inventory, `/rrd_updates` JSON) and the dumped DOM shows
//! the VMs and canvases with plotted points and inked pixels. A screenshot is written into
//! the test's output directory (`CARGO_TARGET_TMPDIR/web/page.png`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use toolstack::api::{Credentials, Xapi};
use toolstack::backend::Backend;
use toolstack::db::Db;
use toolstack::host::{self, HostConfig};
use toolstack::value::Value;
use xen_types::{DomId, Pages, VcpuId};

const MIB: u64 = 1 << 20;
const SAMPLES: u64 = 24;

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|n| {
            std::env::var_os("PATH")?
                .to_str()?
                .split(':')
                .map(|d| Path::new(d).join(n))
                .find(|p| p.is_file())
        })
}

/// Runs Chromium headless with `args`, stdout into a file; kills it after `timeout`.
fn run_chromium(bin: &Path, out: &Path, args: &[String], timeout: Duration) -> String {
    let stdout = std::fs::File::create(out).unwrap();
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read_to_string(out).unwrap()
}

/// The `name="value"` attribute of the element whose tag starts at `id="ID"`.
fn attr(dom: &str, id: &str, name: &str) -> Option<u64> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let tag = &dom[at..at + dom[at..].find('>')?];
    let v = tag.split(&format!("{name}=\"")).nth(1)?;
    v[..v.find('"')?].parse().ok()
}

struct Sim {
    x: Arc<Xapi>,
    sim: xen_sim::Host,
    s: String,
}

impl Sim {
    fn call(&self, m: &str, args: &[Value]) -> Value {
        let mut p = vec![Value::str(self.s.clone())];
        p.extend_from_slice(args);
        self.x.call(m, &p).unwrap_or_else(|e| panic!("{m}: {e}"))
    }

    fn running_vm(&self, name: &str, mib: u64, vcpus: u32) -> DomId {
        let m = Value::String((mib * MIB).to_string());
        let mut r = std::collections::BTreeMap::new();
        for (k, v) in [
            ("name_label", Value::str(name)),
            ("memory_static_max", m.clone()),
            ("memory_dynamic_max", m.clone()),
            ("memory_dynamic_min", m),
            ("VCPUs_max", Value::str(vcpus.to_string())),
            ("VCPUs_at_startup", Value::str(vcpus.to_string())),
        ] {
            r.insert(k.to_owned(), v);
        }
        let vm = self.call("VM.create", &[Value::Struct(r)]);
        self.call(
            "VM.start",
            &[vm.clone(), Value::Bool(false), Value::Bool(false)],
        );
        let domid = DomId(
            self.call("VM.get_domid", std::slice::from_ref(&vm))
                .as_i64()
                .unwrap() as u16,
        );
        // The guest (played here) brings its first vCPU up: it then runs without blocking.
        self.sim
            .guest_vcpu_set_online(domid, VcpuId(0), true)
            .unwrap();
        domid
    }
}

#[test]
fn page_shows_vms_and_live_graphs_in_headless_chromium() {
    let Some(browser) = chromium() else {
        println!("SKIP page_shows_vms_and_live_graphs_in_headless_chromium: no chromium on PATH (scripts/deps.sh installs it)");
        return;
    };
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
    let t = Sim { x, sim, s };
    let web = t.running_vm("web-frontend", 512, 1);
    let db_vm = t.running_vm("database", 768, 2);

    // Counters where the kernel keeps them (a fixture tree in /proc/net/dev's and blkback's
    // sysfs formats): eth0, each VM's vif, and a disk per VM.
    let root = tempfile::tempdir().unwrap();
    let net_dev = root.path().join("net_dev");
    let xb = root.path().join("xen-backend");
    let m = t.x.enable_metrics(Some(&root.path().join("rrd")));
    m.set_counter_paths(Some(toolstack::metrics::CounterPaths {
        net_dev: net_dev.clone(),
        xen_backend: xb.clone(),
        qmp_dir: None,
    }));
    let stats: Vec<PathBuf> = [web, db_vm]
        .iter()
        .map(|d| {
            let p = xb.join(format!("vbd-{}-51712/statistics", d.0));
            std::fs::create_dir_all(&p).unwrap();
            p
        })
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let first = (now / 5) * 5 - 5 * (SAMPLES - 1);
    for k in 0..SAMPLES {
        if k > 0 {
            t.sim.clock().advance(Duration::from_secs(5));
        }
        std::fs::write(
            &net_dev,
            format!(
                "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n  eth0: {} 1 0 0 0 0 0 0 {} 1 0 0 0 0 0 0\nvif{}.0: {} 1 0 0 0 0 0 0 {} 1 0 0 0 0 0 0\nvif{}.0: {} 1 0 0 0 0 0 0 {} 1 0 0 0 0 0 0\n",
                k * k * 20_000,
                k * 9_000,
                web.0,
                k * 15_000,
                k * k * 4_000,
                db_vm.0,
                k * 3_000,
                k * 2_000
            ),
        )
        .unwrap();
        for (i, p) in stats.iter().enumerate() {
            let i = i as u64 + 1;
            std::fs::write(p.join("rd_sect"), (k * 80 * i).to_string()).unwrap();
            std::fs::write(p.join("wr_sect"), (k * k * 10 * i).to_string()).unwrap();
        }
        t.x.metrics_step((first + 5 * k) as f64);
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(toolstack::server::serve_tcp(
        listener,
        Arc::clone(&t.x),
        None,
    ));

    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web");
    std::fs::create_dir_all(&out).unwrap();
    let url = format!(
        "http://127.0.0.1:{port}/#session_id={}",
        t.s.replace(':', "%3A")
    );
    let dom = run_chromium(
        &browser,
        &out.join("page.html"),
        &[
            "--virtual-time-budget=4000".into(),
            "--dump-dom".into(),
            url.clone(),
        ],
        Duration::from_secs(90),
    );
    assert!(
        dom.contains("data-state=\"ready\""),
        "page not ready:\n{dom}"
    );
    assert!(
        dom.contains("<td>web-frontend</td><td>Running</td><td>512</td>"),
        "{dom}"
    );
    assert!(
        dom.contains("<td>database</td><td>Running</td><td>768</td>"),
        "{dom}"
    );
    // CPU and memory: the host, dom0 and both VMs; network: eth0 and the two vifs; disk:
    // the two VMs' disks. Each line has every sample but the first where rates need two.
    for (g, series) in [("cpu", 4), ("memory", 4), ("network", 3), ("disk", 2)] {
        let id = format!("g-{g}");
        let n = attr(&dom, &id, "data-series").unwrap_or_else(|| panic!("{id} series:\n{dom}"));
        let points = attr(&dom, &id, "data-points").unwrap();
        let inked = attr(&dom, &id, "data-inked").unwrap();
        println!("{g}: {n} series, {points} points, {inked} inked pixels");
        assert_eq!(n, series, "{g} series");
        assert!(
            points >= n * (SAMPLES - 1),
            "{g}: {points} points for {n} series"
        );
        assert!(inked > 100, "{g}: only {inked} pixels drawn");
    }

    // A session that is not (or no longer) valid brings the login form back.
    let stale = run_chromium(
        &browser,
        &out.join("stale.html"),
        &[
            "--virtual-time-budget=4000".into(),
            "--dump-dom".into(),
            format!("http://127.0.0.1:{port}/#session_id=OpaqueRef%3Agone"),
        ],
        Duration::from_secs(90),
    );
    assert!(
        stale.contains("Session ended: please log in again."),
        "{stale}"
    );
    assert!(stale.contains("<div id=\"main\" hidden=\"\">"), "{stale}");
    assert!(!stale.contains("<td>web-frontend</td>"), "{stale}");

    // The screenshot, kept in the test's output directory.
    let png = out.join("page.png");
    let _ = std::fs::remove_file(&png);
    run_chromium(
        &browser,
        &out.join("screenshot.log"),
        &[
            "--virtual-time-budget=4000".into(),
            "--window-size=1000,900".into(),
            format!("--screenshot={}", png.display()),
            url,
        ],
        Duration::from_secs(90),
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    println!("screenshot: {} ({} bytes)", png.display(), bytes.len());
    rt.shutdown_background();
}

#[test]
fn page_and_script_are_served_without_a_session() {
    // The page itself is public (it carries the login form); the data behind it is not.
    let sim = xen_sim::Host::new(xen_sim::HostConfig::default());
    let be = Backend::with_xenstored_in_process(xenctrl::Xen::sim(sim)).unwrap();
    let db = Db::in_memory();
    host::bootstrap(&db, &HostConfig::simulated()).unwrap();
    let x = Xapi::new(db, Arc::new(be), Credentials::new("root", "pw").unwrap()).unwrap();
    x.enable_metrics(None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(toolstack::server::serve_tcp(listener, x, None));
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    };
    let page = get("/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("content-type: text/html"), "{page}");
    assert!(page.contains("id=\"login\""));
    let js = get("/app.js");
    assert!(js.contains("session.login_with_password"));
    let data = get("/rrd_updates?start=0&json=true");
    assert!(data.starts_with("HTTP/1.1 401"), "{data}");
    rt.shutdown_background();
}
