//! Pools on a real etcd (Debian's `etcd-server`): several `xapi` processes on loopback
//! (simulated hosts), joined into one pool. Join, eject and designate; every host sees every
//! object; one master, re-elected after `kill -9`; calls forwarded to the host that runs
//! them (each host's own domains checked); `VM.pool_migrate` and `host.evacuate` move
//! domains.

#![cfg(feature = "etcd")]

#[path = "common/etcd.rs"]
mod etcd;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use toolstack::client::{Client, Endpoint};
use toolstack::value::Value;
use toolstack::Error;

const PASSWORD: &str = "pool pass";

/// One simulated host's xapi with fixed ports (a restart after a change of role binds
/// them again).
struct Host {
    dir: tempfile::TempDir,
    http: u16,
    https: u16,
    child: Option<Child>,
    /// Lines xapi printed (kept drained: the restarted program prints to the same pipe).
    lines: mpsc::Receiver<String>,
}

impl Host {
    fn start(extra: &[&str]) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let (http, https) = (etcd::free_port(), etcd::free_port());
        let (tx, lines) = mpsc::channel();
        let mut h = Host {
            dir,
            http,
            https,
            child: None,
            lines,
        };
        h.spawn(extra, tx);
        h.wait_ready();
        h
    }

    fn spawn(&mut self, extra: &[&str], tx: mpsc::Sender<String>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_xapi"))
            .args(["--listen", &format!("127.0.0.1:{}", self.http)])
            .args(["--https-listen", &format!("127.0.0.1:{}", self.https)])
            .arg("--socket")
            .arg(self.dir.path().join("xapi.sock"))
            .arg("--state-dir")
            .arg(self.dir.path())
            .args(extra)
            .env("XAPI_ROOT_PASSWORD", PASSWORD)
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("POOL_TEST_STDERR").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawn xapi");
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
    }

    /// Waits for the next `ready` (the first start, or a restart after a change of role).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l == "ready" => return,
                Ok(_) => {}
                Err(_) => panic!("xapi did not report ready"),
            }
        }
    }

    fn state(&self) -> &Path {
        self.dir.path()
    }

    /// A client logged in here (a slave answers `HOST_IS_SLAVE`: use `slave_local`).
    fn client(&self) -> Client {
        let mut c = Client::new(Endpoint::Tcp("127.0.0.1".into(), self.http));
        c.login("root", PASSWORD).expect("login");
        c
    }

    /// A client of this host using an existing (pool-wide) session.
    fn with_session(&self, session: &str) -> Client {
        let mut c = Client::new(Endpoint::Tcp("127.0.0.1".into(), self.http));
        c.use_session(session);
        c
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// The domains this host runs: VM UUIDs from `/domains`.
    fn domains(&self, session: &str) -> Vec<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.http)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /domains?session_id={session} HTTP/1.0\r\nHost: x\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| d["uuid"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Starts this host's xapi again after [`Host::kill9`] (its state folder says which
    /// pool it is in).
    fn respawn(&mut self) {
        let (tx, lines) = mpsc::channel();
        self.lines = lines;
        self.spawn(&[], tx);
        self.wait_ready();
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    fn pool_conf(&self) -> String {
        std::fs::read_to_string(self.state().join("pool.conf")).unwrap_or_default()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn s(x: &str) -> Value {
    Value::str(x)
}

fn api_code(e: Error) -> String {
    match e {
        Error::Api(e) => e.code,
        other => panic!("not an API error: {other}"),
    }
}

fn refs(v: Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

/// Polls `f` until it returns `Some`, for up to `secs` seconds.
fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A pool of `n` hosts: the first made the pool (`--etcd`), the others joined it.
struct Pool {
    _etcd: etcd::Etcd,
    hosts: Vec<Host>,
    session: String,
}

impl Pool {
    fn new(e: etcd::Etcd, n: usize) -> Pool {
        let name = format!("p{}", std::process::id());
        let master = Host::start(&["--etcd", &e.endpoint, "--pool-name", &name]);
        let mut hosts = vec![master];
        for _ in 1..n {
            let h = Host::start(&[]);
            h.client()
                .call(
                    "pool.join",
                    &[
                        s(&format!("127.0.0.1:{}", hosts[0].https)),
                        s("root"),
                        s(PASSWORD),
                    ],
                )
                .expect("pool.join");
            h.wait_ready();
            hosts.push(h);
        }
        let mut c = hosts[0].client();
        let session = c.session().unwrap().to_owned();
        eventually(20, "every host in the pool", || {
            (refs(c.call("host.get_all", &[]).unwrap()).len() == n).then_some(())
        });
        Pool {
            _etcd: e,
            hosts,
            session,
        }
    }

    fn on(&self, i: usize) -> Client {
        self.hosts[i].with_session(&self.session)
    }

    /// Host references in start order (matched by their HTTPS port).
    fn host_refs(&self) -> Vec<String> {
        let mut c = self.on(0);
        let all = refs(c.call("host.get_all", &[]).unwrap());
        self.hosts
            .iter()
            .map(|h| {
                all.iter()
                    .find(|r| {
                        let oc = c.call("host.get_other_config", &[s(r)]).unwrap();
                        oc.as_struct()
                            .and_then(|m| m.get("xen-rs:https-port"))
                            .and_then(Value::as_str)
                            == Some(&h.https.to_string())
                    })
                    .expect("host registered")
                    .clone()
            })
            .collect()
    }

    fn master(&self, via: usize) -> String {
        let mut c = self.on(via);
        let p = refs(c.call("pool.get_all", &[]).unwrap()).remove(0);
        c.call("pool.get_master", &[s(&p)])
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }
}

macro_rules! etcd_or_skip {
    () => {
        match etcd::etcd() {
            Ok(e) => e,
            Err(why) => {
                eprintln!("SKIP: {why}");
                return;
            }
        }
    };
}

fn vm(c: &mut Client, name: &str) -> String {
    let mb = (256u64 << 20).to_string();
    let rec: BTreeMap<String, Value> = [
        ("name_label", s(name)),
        ("memory_static_max", s(&mb)),
        ("memory_dynamic_max", s(&mb)),
        ("memory_dynamic_min", s(&mb)),
        ("memory_static_min", s(&mb)),
        ("VCPUs_max", s("1")),
        ("VCPUs_at_startup", s("1")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    c.call("VM.create", &[Value::Struct(rec)])
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

fn uuid(c: &mut Client, r: &str) -> String {
    c.call("VM.get_uuid", &[s(r)])
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn join_eject_and_every_host_sees_every_object() {
    let e = etcd_or_skip!();
    let pool = Pool::new(e, 3);
    let hosts = pool.host_refs();
    // Every host sees the three hosts, one master, and an object made on another host.
    let mut c0 = pool.on(0);
    let v = vm(&mut c0, "seen-everywhere");
    for i in 0..3 {
        let mut c = pool.on(i);
        assert_eq!(refs(c.call("host.get_all", &[]).unwrap()).len(), 3);
        eventually(10, "the VM on every host", || {
            c.call("VM.get_name_label", &[s(&v)]).ok()
        });
        assert_eq!(pool.master(i), hosts[0], "host {i} sees the master");
        // Each host moved its own PIFs and local SR with it.
        let pifs = refs(c.call("host.get_PIFs", &[s(&hosts[i])]).unwrap());
        assert_eq!(pifs.len(), 3, "host {i}'s PIFs");
    }
    assert_eq!(pool.hosts[0].pool_conf(), "master");
    assert_eq!(
        pool.hosts[1].pool_conf(),
        format!("slave:127.0.0.1:{}", pool.hosts[0].https)
    );
    // A slave refuses logins and names the master, as XAPI.
    let mut direct = Client::new(Endpoint::Tcp("127.0.0.1".into(), pool.hosts[2].http));
    let err = direct.login("root", PASSWORD).unwrap_err();
    let Error::Api(err) = err else { panic!() };
    assert_eq!(err.code, "HOST_IS_SLAVE");
    assert_eq!(err.params, [format!("127.0.0.1:{}", pool.hosts[0].https)]);

    // Joins XAPI refuses: wrong password, a slave's address, a host with a running VM.
    let lone = Host::start(&[]);
    let mut lc = lone.client();
    let master_addr = s(&format!("127.0.0.1:{}", pool.hosts[0].https));
    let code = api_code(
        lc.call("pool.join", &[master_addr.clone(), s("root"), s("wrong")])
            .unwrap_err(),
    );
    assert_eq!(code, "SESSION_AUTHENTICATION_FAILED");
    let slave_addr = s(&format!("127.0.0.1:{}", pool.hosts[1].https));
    let code = api_code(
        lc.call("pool.join", &[slave_addr, s("root"), s(PASSWORD)])
            .unwrap_err(),
    );
    assert_eq!(code, "HOST_IS_SLAVE");
    let busy = vm(&mut lc, "busy");
    lc.call(
        "VM.start",
        &[s(&busy), Value::Bool(false), Value::Bool(false)],
    )
    .unwrap();
    let code = api_code(
        lc.call("pool.join", &[master_addr, s("root"), s(PASSWORD)])
            .unwrap_err(),
    );
    assert_eq!(code, "JOINING_HOST_CANNOT_HAVE_RUNNING_OR_SUSPENDED_VMS");
    assert_eq!(refs(lc.call("host.get_all", &[]).unwrap()).len(), 1);

    // The master cannot be ejected; a slave can, and comes back alone.
    let code = api_code(c0.call("pool.eject", &[s(&hosts[0])]).unwrap_err());
    assert_eq!(code, "OPERATION_NOT_ALLOWED");
    let code = api_code(c0.call("host.destroy", &[s(&hosts[0])]).unwrap_err());
    assert_eq!(code, "HOST_CANNOT_DESTROY_SELF");
    let code = api_code(c0.call("host.destroy", &[s(&hosts[2])]).unwrap_err());
    assert_eq!(code, "HOST_IS_LIVE");
    c0.call("pool.eject", &[s(&hosts[2])]).unwrap();
    pool.hosts[2].wait_ready();
    eventually(10, "two hosts left", || {
        (refs(c0.call("host.get_all", &[]).unwrap()).len() == 2).then_some(())
    });
    assert_eq!(pool.hosts[2].pool_conf(), "master");
    let mut alone = pool.hosts[2].client();
    assert_eq!(
        refs(alone.call("host.get_all", &[]).unwrap()),
        [hosts[2].clone()]
    );
}

#[test]
fn the_master_is_unique_designated_and_reelected_after_kill_9() {
    let e = etcd_or_skip!();
    let mut pool = Pool::new(e, 3);
    let hosts = pool.host_refs();
    for i in 0..3 {
        assert_eq!(pool.master(i), hosts[0]);
    }
    // designate_new_master moves the role; pool.conf follows on both sides.
    let mut c = pool.on(0);
    c.call("pool.designate_new_master", &[s(&hosts[1])])
        .unwrap();
    for i in 0..3 {
        eventually(10, "the designated master everywhere", || {
            (pool.master(i) == hosts[1]).then_some(())
        });
    }
    eventually(10, "pool.conf of the new master", || {
        (pool.hosts[1].pool_conf() == "master").then_some(())
    });
    eventually(10, "pool.conf of the old master", || {
        (pool.hosts[0].pool_conf() == format!("slave:127.0.0.1:{}", pool.hosts[1].https))
            .then_some(())
    });
    // And back: the role returns to host 0, host 1 follows it.
    c.call("pool.designate_new_master", &[s(&hosts[0])])
        .unwrap();
    eventually(10, "host 1 a slave again", || {
        (pool.hosts[1].pool_conf() == format!("slave:127.0.0.1:{}", pool.hosts[0].https))
            .then_some(())
    });
    assert_eq!(pool.hosts[0].pool_conf(), "master");
    c.call("pool.designate_new_master", &[s(&hosts[1])])
        .unwrap();
    eventually(10, "host 1 master again", || {
        (pool.hosts[1].pool_conf() == "master").then_some(())
    });
    // The new master answers logins; the old one refuses them.
    pool.hosts[1].client();
    let mut direct = Client::new(Endpoint::Tcp("127.0.0.1".into(), pool.hosts[0].http));
    assert_eq!(
        api_code(direct.login("root", PASSWORD).unwrap_err()),
        "HOST_IS_SLAVE"
    );

    // kill -9 the master: another is elected within seconds.
    let t = Instant::now();
    pool.hosts[1].kill9();
    let new = eventually(30, "a new master", || {
        let m = pool.master(0);
        (m != hosts[1]).then_some(m)
    });
    let took = t.elapsed();
    eprintln!("election after kill -9: {:.2} s", took.as_secs_f64());
    assert!(new == hosts[0] || new == hosts[2]);
    assert_eq!(pool.master(2), new);
    let idx = hosts.iter().position(|h| *h == new).unwrap();
    eventually(10, "pool.conf of the elected master", || {
        (pool.hosts[idx].pool_conf() == "master").then_some(())
    });
    // emergency_transition_to_master on the other survivor takes the role.
    let other = if idx == 0 { 2 } else { 0 };
    pool.on(other)
        .call("pool.emergency_transition_to_master", &[])
        .unwrap();
    assert_eq!(pool.master(other), hosts[other]);
    eventually(10, "every survivor sees the new master", || {
        (pool.master(idx) == hosts[other]).then_some(())
    });
}

#[test]
fn forwarded_calls_run_on_the_right_host_and_domains_move() {
    let e = etcd_or_skip!();
    let pool = Pool::new(e, 3);
    let hosts = pool.host_refs();
    let sess = pool.session.clone();
    let mut c = pool.on(0);
    let doms = |i: usize| pool.hosts[i].domains(&sess);
    // start_on another host: its domain runs there and nowhere else.
    let a = vm(&mut c, "a");
    let ua = uuid(&mut c, &a);
    c.call(
        "VM.start_on",
        &[s(&a), s(&hosts[1]), Value::Bool(false), Value::Bool(false)],
    )
    .unwrap();
    assert_eq!(doms(1), std::slice::from_ref(&ua));
    assert!(doms(0).is_empty() && doms(2).is_empty());
    assert_eq!(
        c.call("VM.get_resident_on", &[s(&a)]).unwrap().as_str(),
        Some(hosts[1].as_str())
    );
    // An operation on it, asked of host 2, runs on host 1.
    let mut c2 = pool.on(2);
    c2.call("VM.pause", &[s(&a)]).unwrap();
    c2.call("VM.unpause", &[s(&a)]).unwrap();
    // VM.start without a host: the host with the most free memory (not host 1, which runs a).
    let b = vm(&mut c, "b");
    let ub = uuid(&mut c, &b);
    eventually(10, "host 2 sees the new VM", || {
        c2.call("VM.get_uuid", &[s(&b)]).ok()
    });
    c2.call("VM.start", &[s(&b), Value::Bool(false), Value::Bool(false)])
        .unwrap();
    let on_b = c.call("VM.get_resident_on", &[s(&b)]).unwrap();
    let ib = hosts
        .iter()
        .position(|h| Some(h.as_str()) == on_b.as_str())
        .unwrap();
    assert_ne!(ib, 1, "b went to a host with more free memory");
    assert_eq!(doms(ib), std::slice::from_ref(&ub));
    // pool_migrate moves a's domain from host 1 to host 2.
    c.call(
        "VM.pool_migrate",
        &[s(&a), s(&hosts[2]), Value::Struct(BTreeMap::new())],
    )
    .unwrap();
    assert!(!doms(1).contains(&ua));
    assert!(doms(2).contains(&ua));
    assert_eq!(
        c.call("VM.get_resident_on", &[s(&a)]).unwrap().as_str(),
        Some(hosts[2].as_str())
    );
    // host.evacuate empties host 2 onto the others; no VM runs on two hosts.
    c.call("host.evacuate", &[s(&hosts[2])]).unwrap();
    assert!(doms(2).is_empty());
    let all: Vec<String> = (0..3).flat_map(doms).collect();
    let mut uniq = all.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(all.len(), uniq.len(), "a VM on two hosts: {all:?}");
    assert!(all.contains(&ua) && all.contains(&ub));
    // A forwarded hard_shutdown stops the domain where it runs.
    c.call("VM.hard_shutdown", &[s(&a)]).unwrap();
    let all: Vec<String> = (0..3).flat_map(doms).collect();
    assert_eq!(all, [ub]);
}

/// Enables HA on the pool with a 3 s timeout (the lease TTL) and makes `name` a VM with
/// `priority`, started on host `on`.
fn ha_vm(pool: &Pool, name: &str, priority: &str, on: &str) -> (String, String) {
    let mut c = pool.on(0);
    let v = vm(&mut c, name);
    c.call("VM.set_ha_restart_priority", &[s(&v), s(priority)])
        .unwrap();
    c.call(
        "VM.start_on",
        &[s(&v), s(on), Value::Bool(false), Value::Bool(false)],
    )
    .unwrap();
    let u = uuid(&mut c, &v);
    (v, u)
}

fn enable_ha(pool: &Pool) {
    let mut c = pool.on(0);
    let p = refs(c.call("pool.get_all", &[]).unwrap()).remove(0);
    let config = |t: &str| Value::Struct([("timeout".to_owned(), s(t))].into_iter().collect());
    // A timeout under 3 s is refused, as any that is not a number.
    for bad in ["2", "soon"] {
        let e = c
            .call("pool.enable_ha", &[Value::Array(vec![]), config(bad)])
            .unwrap_err();
        assert_eq!(api_code(e), "INVALID_VALUE", "timeout {bad}");
    }
    c.call("pool.enable_ha", &[Value::Array(vec![]), config("3")])
        .unwrap();
    let e = c
        .call("pool.enable_ha", &[Value::Array(vec![]), config("3")])
        .unwrap_err();
    assert_eq!(api_code(e), "HA_IS_ENABLED");
    assert_eq!(
        c.call("pool.get_ha_enabled", &[s(&p)]).unwrap(),
        Value::Bool(true)
    );
}

/// Every live host's domains, checked for a VM on two hosts at once.
fn domains_once(pool: &Pool, live: &[usize]) -> BTreeMap<usize, Vec<String>> {
    let all: BTreeMap<usize, Vec<String>> = live
        .iter()
        .map(|&i| (i, pool.hosts[i].domains(&pool.session)))
        .collect();
    let mut seen = BTreeMap::new();
    for (i, doms) in &all {
        for d in doms {
            if let Some(j) = seen.insert(d.clone(), *i) {
                panic!("VM {d} runs on hosts {j} and {i}: {all:?}");
            }
        }
    }
    all
}

/// Waits until `u` runs on one of `live` (checking every observation) and its record says
/// so; the host's index.
fn runs_again(pool: &Pool, live: &[usize], v: &str, u: &str, hosts: &[String]) -> usize {
    let t = Instant::now();
    let i = eventually(20, "the HA VM running again elsewhere", || {
        domains_once(pool, live)
            .into_iter()
            .find(|(_, d)| d.iter().any(|x| x == u))
            .map(|(i, _)| i)
    });
    eprintln!(
        "HA VM running again after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut c = pool.on(live[0]);
    eventually(10, "the record follows the domain", || {
        let r = c.call("VM.get_record", &[s(v)]).unwrap();
        let r = r.as_struct().unwrap();
        (r["power_state"].as_str() == Some("Running")
            && r["resident_on"].as_str() == Some(hosts[i].as_str()))
        .then_some(())
    });
    i
}

#[test]
fn ha_restarts_a_killed_hosts_protected_vms_once_and_the_host_rejoins() {
    let e = etcd_or_skip!();
    let mut pool = Pool::new(e, 3);
    let hosts = pool.host_refs();
    enable_ha(&pool);
    let (v, u) = ha_vm(&pool, "protected", "restart", &hosts[1]);
    let (bv, bu) = ha_vm(&pool, "best", "best-effort", &hosts[1]);
    let (_, plain) = ha_vm(&pool, "plain", "", &hosts[1]);
    // Let every host's engine see the protections.
    std::thread::sleep(Duration::from_secs(1));
    pool.hosts[1].kill9();
    let live = [0usize, 2];
    let i = runs_again(&pool, &live, &v, &u, &hosts);
    runs_again(&pool, &live, &bv, &bu, &hosts);
    // The unprotected VM is not restarted.
    let all: Vec<String> = domains_once(&pool, &live).into_values().flatten().collect();
    assert!(!all.contains(&plain), "{all:?}");
    // The host comes back without manual work: in the pool, its domains gone (it
    // rebooted), the HA VM still running once, on the host that restarted it.
    pool.hosts[1].respawn();
    eventually(20, "host 1 back in the pool", || {
        pool.on(1).call("host.get_all", &[]).ok()
    });
    for _ in 0..20 {
        let d = domains_once(&pool, &[0, 1, 2]);
        assert!(d[&i].contains(&u), "{d:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A protected VM started on the returned host is protected there again: a second
    // failure of host 1 restarts it elsewhere too.
    let (w, wu) = ha_vm(&pool, "again", "restart", &hosts[1]);
    std::thread::sleep(Duration::from_secs(1));
    pool.hosts[1].kill9();
    runs_again(&pool, &live, &w, &wu, &hosts);
}

#[test]
fn ha_fences_a_stopped_host_and_a_clean_stop_or_disable_restarts_nothing() {
    let e = etcd_or_skip!();
    let mut pool = Pool::new(e, 3);
    let hosts = pool.host_refs();
    enable_ha(&pool);
    let (v, u) = ha_vm(&pool, "protected", "restart", &hosts[2]);
    let (h, hu) = ha_vm(&pool, "halted-on-request", "restart", &hosts[2]);
    pool.on(0).call("VM.hard_shutdown", &[s(&h)]).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    // SIGSTOP past the lease: the others restart the VM; when the host resumes, its
    // watchdog has fired and its domain is gone before anyone sees it twice.
    pool.hosts[2].signal("-STOP");
    let i = runs_again(&pool, &[0, 1], &v, &u, &hosts);
    pool.hosts[2].signal("-CONT");
    eventually(20, "host 2's domains gone after its fence", || {
        domains_once(&pool, &[0, 1, 2])[&2].is_empty().then_some(())
    });
    for _ in 0..20 {
        let d = domains_once(&pool, &[0, 1, 2]);
        assert!(
            d[&i].contains(&u) && !d.values().flatten().any(|x| *x == hu),
            "{d:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // disable_ha: no protection is left, so a host's death restarts nothing.
    let mut c = pool.on(0);
    let p = refs(c.call("pool.get_all", &[]).unwrap()).remove(0);
    c.call("pool.disable_ha", &[]).unwrap();
    assert_eq!(
        api_code(c.call("pool.disable_ha", &[]).unwrap_err()),
        "HA_NOT_ENABLED"
    );
    assert_eq!(
        c.call("pool.get_ha_enabled", &[s(&p)]).unwrap(),
        Value::Bool(false)
    );
    pool.hosts[i].kill9();
    std::thread::sleep(Duration::from_secs(6));
    let live: Vec<usize> = (0..3).filter(|&j| j != i).collect();
    let all: Vec<String> = domains_once(&pool, &live).into_values().flatten().collect();
    assert!(!all.contains(&u), "restarted after disable_ha: {all:?}");
}
