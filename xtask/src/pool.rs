//! `cargo xtask pool`: a 3-member etcd cluster and 3 `xapi` on simulated hosts on loopback,
//! joined into one pool, driven over JSON-RPC through fault steps (kill -9 a member's xapi,
//! SIGSTOP a member past its lease, kill the master, kill an etcd member, cut a host from
//! etcd through its own proxies while it still reaches the other hosts) and randomized
//! schedules of them (`--steps` faults of a schedule come together; the seed is printed).
//! After every step an observer lists every host's domains and checks:
//! no VM runs on two hosts, the master is unique (and a new one is elected when it dies),
//! every acknowledged change is still there. The last line is `pool: N passed, M failed`.
//!
//! The HA engine plugs in through [`HaHooks`] (`crate::pool_ha`; `--no-ha` leaves it out):
//! it is told of each fault, and adds its own checks (its VMs run again within its bound)
//! to every observation.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{io as ioerr, Error, Result};

/// `cargo xtask pool`'s options.
#[derive(clap::Args, Debug)]
pub struct PoolArgs {
    /// Seed of the randomized schedules (default: from the clock; printed either way).
    #[arg(long)]
    pub seed: Option<u64>,
    /// How many randomized fault schedules to run after the fixed steps (shared among
    /// the pools).
    #[arg(long, default_value_t = 3)]
    pub schedules: usize,
    /// Independent pools (each its own 3-member etcd cluster and 3 hosts) running the
    /// schedules side by side; the first also runs the fixed steps. Pool `k` draws its
    /// schedules from seed `seed + k`.
    #[arg(long, default_value_t = 1)]
    pub pools: usize,
    /// Faults per randomized schedule, injected together (different hosts, at most one
    /// etcd member, one host always untouched).
    #[arg(long, default_value_t = 1)]
    pub steps: usize,
    /// The `xapi` binary (default: built with `--features etcd`).
    #[arg(long)]
    pub xapi: Option<PathBuf>,
    /// Without HA (the pool's own checks only).
    #[arg(long)]
    pub no_ha: bool,
    /// Seconds of each round of the API-rate comparison (0: skip it).
    #[arg(long, default_value_t = 2)]
    pub bench_secs: u64,
}

const PASSWORD: &str = "pool-harness";
/// The lease TTL of xapi's election and liveness keys (toolstack `ELECTION_TTL`).
const LEASE_TTL: Duration = Duration::from_secs(2);

/// A fault the harness injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` of a member's xapi (not the master), then a restart.
    KillMember(usize),
    /// SIGSTOP of a member for longer than its lease, then SIGCONT.
    StopMember(usize),
    /// `kill -9` of the master's xapi, then a restart (it comes back as a member).
    KillMaster,
    /// `kill -9` of one etcd member, then a restart.
    KillEtcd(usize),
    /// A host cut from every etcd member (its proxies cut) while it still talks to the
    /// other hosts, then healed.
    Partition(usize),
}

/// What the observer saw at one moment.
#[derive(Debug, Default)]
pub struct Observation {
    /// Each running host's domains (VM UUIDs), by host index.
    pub domains: BTreeMap<usize, Vec<String>>,
    /// The pool's master as each running host reports it.
    pub masters: BTreeMap<usize, String>,
    /// Running hosts whose `pool.conf` says `master`.
    pub conf_masters: Vec<usize>,
    /// Running hosts that act as master (accept a login; the others answer
    /// `HOST_IS_SLAVE`).
    pub acting: Vec<usize>,
}

/// Where the HA engine's restart logic and checks plug in.
pub trait HaHooks {
    /// Called once the pool is formed (enable HA, protect VMs).
    fn setup(&mut self, _h: &mut Harness) -> std::result::Result<(), String> {
        Ok(())
    }
    /// Called after a fault was injected, before it is healed.
    fn after_fault(&mut self, _h: &mut Harness, _f: Fault) -> std::result::Result<(), String> {
        Ok(())
    }
    /// Extra checks of an observation (empty: all good).
    fn check(&mut self, _h: &mut Harness, _o: &Observation) -> Vec<String> {
        Vec::new()
    }
    /// Seconds from each host fault to its HA VMs running elsewhere, and whether etcd's
    /// leader died with the host.
    fn failovers(&self) -> Vec<(f64, bool)> {
        Vec::new()
    }
}

/// No HA: the pool's own checks only.
pub struct NoHa;
impl HaHooks for NoHa {}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(ioerr("bind", "127.0.0.1:0"))?;
    Ok(l.local_addr().map_err(ioerr("bind", "127.0.0.1:0"))?.port())
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on the pid of a child this process spawned and has not reaped.
    unsafe { libc::kill(pid, sig) };
}

/// A JSON-RPC call over plain HTTP (one connection per call); `Err` holds XAPI's error
/// (`[code, params...]`) or the transport failure.
pub fn rpc(port: u16, method: &str, params: Value) -> std::result::Result<Value, Vec<String>> {
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).to_string();
    let transport = |e: std::io::Error| vec!["TRANSPORT".to_owned(), e.to_string()];
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(3))
        .map_err(transport)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(transport)?;
    write!(
        s,
        "POST /jsonrpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(transport)?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(transport)?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: Value = serde_json::from_str(body)
        .map_err(|e| vec!["PROTOCOL".to_owned(), format!("{e}: {body}")])?;
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        let mut out = vec![e["message"].as_str().unwrap_or("?").to_owned()];
        if let Some(d) = e["data"].as_array() {
            out.extend(d.iter().map(|x| x.as_str().unwrap_or_default().to_owned()));
        }
        return Err(out);
    }
    Ok(v["result"].clone())
}

/// GET `path` over plain HTTP.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    // The server answers an HTTP/1.0 request as HTTP/1.0.
    let status = head.split(' ').nth(1);
    (status == Some("200")).then(|| body.to_owned())
}

/// One etcd member.
struct EtcdMember {
    name: String,
    client: String,
    peer: String,
    /// Its data, on tmpfs when there is one (`/dev/shm`): a kill -9 keeps what the page
    /// cache holds, and the runs do not wait on a disk the machine shares.
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// One simulated host's xapi.
pub struct XapiHost {
    /// Its way to each etcd member (cut to partition it).
    proxies: Vec<crate::proxy::Proxy>,
    /// Cut from etcd.
    pub partitioned: bool,
    /// Plain HTTP port.
    pub http: u16,
    /// HTTPS port (the pool's forwarding).
    pub https: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    /// Stopped with SIGSTOP.
    pub stopped: bool,
    /// Its host reference in the pool.
    pub host_ref: String,
}

/// The pool under test.
pub struct Harness {
    root: PathBuf,
    xapi_bin: PathBuf,
    etcd: Vec<EtcdMember>,
    /// The hosts, in start order (0 made the pool).
    pub hosts: Vec<XapiHost>,
    /// A pool-wide session.
    pub session: String,
    /// Acknowledged writes: VM reference -> the name_description it was given.
    pub ledger: BTreeMap<String, String>,
    /// VM reference -> UUID of every VM the harness made.
    pub vms: BTreeMap<String, String>,
    /// Seconds from each master kill to a new master, as observed.
    pub elections: Vec<f64>,
    /// When the faults being checked were injected.
    pub fault_at: Instant,
    /// Whether those faults killed etcd's leader: the new leader renews every lease to its
    /// full TTL (etcd's lessor `Promote`), so a host lost at the same time loses its lease
    /// up to a TTL later.
    pub etcd_leader_killed: bool,
    rng: u64,
    writes: u64,
    /// Remove the folder of logs and state at the end (nothing failed).
    pub clean: bool,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            if let Some(c) = &mut h.child {
                if h.stopped {
                    signal(c, libc::SIGCONT);
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for e in &mut self.etcd {
            if let Some(c) = &mut e.child {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for e in &self.etcd {
            let _ = std::fs::remove_dir_all(&e.dir);
        }
        if let Some(d) = self.etcd.first().and_then(|e| e.dir.parent()) {
            if d != self.root {
                let _ = std::fs::remove_dir_all(d);
            }
        }
        if self.clean {
            let _ = std::fs::remove_dir_all(&self.root);
        } else {
            println!("pool: logs kept in {}", self.root.display());
        }
    }
}

fn wait_port(port: u16, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl EtcdMember {
    fn start(&mut self, cluster: &str, existing: bool) -> Result<()> {
        let log = std::fs::File::create(&self.log).map_err(ioerr("create", &self.log))?;
        let child = Command::new("etcd")
            .args(["--name", &self.name, "--data-dir"])
            .arg(&self.dir)
            .args(["--listen-client-urls", &self.client])
            .args(["--advertise-client-urls", &self.client])
            .args(["--listen-peer-urls", &self.peer])
            .args(["--initial-advertise-peer-urls", &self.peer])
            .args(["--initial-cluster", cluster])
            .args([
                "--initial-cluster-state",
                if existing { "existing" } else { "new" },
            ])
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            // xapi's start-up reconciliation writes every VM of the host in one transaction
            // (etcd's default is 128 operations; the toolstack's tests use this too).
            .args(["--max-txn-ops", "10000"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| Error::Spawn {
                cmd: "etcd (Debian: etcd-server)".into(),
                source,
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// Whether this member leads the cluster now (its `/v3/maintenance/status`, through the
    /// JSON gateway).
    fn is_leader(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port()).into(),
            Duration::from_secs(2),
        ) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let body = "{}";
        let sent = write!(
            s,
            "POST /v3/maintenance/status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut text = String::new();
        if sent.is_err() || s.read_to_string(&mut text).is_err() {
            return false;
        }
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let me = v["header"]["member_id"].as_str();
        me.is_some() && me == v["leader"].as_str()
    }

    fn port(&self) -> u16 {
        self.client
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }
}

impl XapiHost {
    fn spawn(&mut self, bin: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("xapi.stderr"))
            .map_err(ioerr("open", self.dir.join("xapi.stderr")))?;
        let child = Command::new(bin)
            .args(&self.args)
            .env("XAPI_ROOT_PASSWORD", PASSWORD)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| Error::Spawn {
                cmd: bin.display().to_string(),
                source,
            })?;
        self.child = Some(child);
        self.stopped = false;
        if !wait_port(self.http, 60) {
            return Err(Error::Other(format!(
                "xapi on port {} did not start",
                self.http
            )));
        }
        Ok(())
    }

    fn running(&self) -> bool {
        self.child.is_some() && !self.stopped
    }

    fn pool_conf(&self) -> String {
        std::fs::read_to_string(self.dir.join("pool.conf")).unwrap_or_default()
    }
}

impl Harness {
    /// Starts the etcd cluster and the hosts, and forms the pool.
    pub fn start(xapi_bin: &Path, seed: u64, pool: usize) -> Result<Harness> {
        let root = std::env::temp_dir().join(format!("xen-rs-pool-{}-{pool}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(ioerr("create", &root))?;
        let shm = Path::new("/dev/shm");
        let data = if shm.is_dir() {
            shm.join(root.file_name().unwrap_or_default())
        } else {
            root.clone()
        };
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).map_err(ioerr("create", &data))?;
        let mut etcd = Vec::new();
        for i in 0..3 {
            etcd.push(EtcdMember {
                name: format!("e{i}"),
                client: format!("http://127.0.0.1:{}", free_port()?),
                peer: format!("http://127.0.0.1:{}", free_port()?),
                dir: data.join(format!("etcd{i}")),
                log: root.join(format!("etcd{i}.log")),
                child: None,
            });
        }
        let mut h = Harness {
            root,
            xapi_bin: xapi_bin.to_owned(),
            etcd,
            hosts: Vec::new(),
            session: String::new(),
            ledger: BTreeMap::new(),
            vms: BTreeMap::new(),
            elections: Vec::new(),
            fault_at: Instant::now(),
            etcd_leader_killed: false,
            rng: seed | 1,
            writes: 0,
            clean: false,
        };
        let cluster = h.cluster();
        for e in &mut h.etcd {
            e.start(&cluster, false)?;
        }
        for e in &h.etcd {
            if !wait_port(e.port(), 30) {
                return Err(Error::Other(format!("etcd {} did not start", e.name)));
            }
        }
        let endpoints: Vec<String> = h.etcd.iter().map(|e| e.client.clone()).collect();
        for i in 0..3 {
            let dir = h.root.join(format!("host{i}"));
            std::fs::create_dir_all(&dir).map_err(ioerr("create", &dir))?;
            let (http, https) = (free_port()?, free_port()?);
            let mut args = vec![
                "--listen".to_owned(),
                format!("127.0.0.1:{http}"),
                "--https-listen".to_owned(),
                format!("127.0.0.1:{https}"),
                "--socket".to_owned(),
                dir.join("xapi.sock").display().to_string(),
                "--state-dir".to_owned(),
                dir.display().to_string(),
            ];
            if i == 0 {
                args.extend([
                    "--etcd".to_owned(),
                    endpoints.join(","),
                    "--pool-name".to_owned(),
                    "harness".to_owned(),
                ]);
            }
            let mut x = XapiHost {
                proxies: Vec::new(),
                partitioned: false,
                http,
                https,
                dir,
                args,
                child: None,
                stopped: false,
                host_ref: String::new(),
            };
            x.spawn(&h.xapi_bin)?;
            h.hosts.push(x);
        }
        h.session = h.login(0)?;
        for i in 1..3 {
            let s = rpc(
                h.hosts[i].http,
                "session.login_with_password",
                json!(["root", PASSWORD, "2.21", "harness"]),
            )
            .map_err(|e| Error::Other(format!("login on host {i}: {e:?}")))?;
            let master = format!("127.0.0.1:{}", h.hosts[0].https);
            rpc(
                h.hosts[i].http,
                "pool.join",
                json!([s, master, "root", PASSWORD]),
            )
            .map_err(|e| Error::Other(format!("pool.join of host {i}: {e:?}")))?;
        }
        // The joined hosts restart on the pool's database.
        h.until(30, "three hosts in the pool", |h| {
            h.call(0, "host.get_all", json!([]))
                .ok()
                .and_then(|v| v.as_array().map(Vec::len))
                == Some(3)
        })?;
        // Each host registers its HTTPS port once it runs on the pool's database.
        h.until(30, "every host registered", |h| {
            let Ok(all) = h.call(0, "host.get_all_records", json!([])) else {
                return false;
            };
            let refs: Vec<Option<String>> = h
                .hosts
                .iter()
                .map(|x| {
                    let port = x.https.to_string();
                    all.as_object().and_then(|m| {
                        m.iter()
                            .find(|(_, rec)| {
                                rec["other_config"]["xen-rs:https-port"].as_str()
                                    == Some(port.as_str())
                            })
                            .map(|(k, _)| k.clone())
                    })
                })
                .collect();
            if refs.iter().any(Option::is_none) {
                return false;
            }
            for (x, r) in h.hosts.iter_mut().zip(refs) {
                x.host_ref = r.unwrap_or_default();
            }
            true
        })?;
        for i in 1..3 {
            let s = h.session.clone();
            h.until(30, "every host back after joining", |h| {
                rpc(h.hosts[i].http, "host.get_all", json!([s])).is_ok()
            })?;
        }
        h.route_through_proxies()?;
        Ok(h)
    }

    /// Gives each host its own proxy to each etcd member (`pool.etcd`, then a restart),
    /// so that one host can be cut from etcd alone.
    fn route_through_proxies(&mut self) -> Result<()> {
        for i in 0..self.hosts.len() {
            let mut proxies = Vec::new();
            for e in &self.etcd {
                proxies.push(crate::proxy::Proxy::start(e.port())?);
            }
            let eps: Vec<String> = proxies.iter().map(|p| p.endpoint()).collect();
            let conf = self.hosts[i].dir.join("pool.etcd");
            std::fs::write(
                &conf,
                format!("endpoints={}\npool=harness\n", eps.join(",")),
            )
            .map_err(ioerr("write", &conf))?;
            self.hosts[i].proxies = proxies;
            if let Some(mut c) = self.hosts[i].child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            let bin = self.xapi_bin.clone();
            self.hosts[i].spawn(&bin)?;
            let s = self.session.clone();
            self.until(30, "the host back on its proxies", |h| {
                rpc(h.hosts[i].http, "host.get_all", json!([s])).is_ok()
            })?;
        }
        self.until(30, "one master after routing through proxies", |h| {
            let o = h.observe();
            o.masters.len() == 3 && o.acting.len() == 1
        })?;
        Ok(())
    }

    fn cluster(&self) -> String {
        self.etcd
            .iter()
            .map(|e| format!("{}={}", e.name, e.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn login(&self, i: usize) -> Result<String> {
        let v = rpc(
            self.hosts[i].http,
            "session.login_with_password",
            json!(["root", PASSWORD, "2.21", "harness"]),
        )
        .map_err(|e| Error::Other(format!("login on host {i}: {e:?}")))?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// Calls `method` on host `i` with the pool's session first.
    pub fn call(&self, i: usize, method: &str, args: Value) -> std::result::Result<Value, String> {
        let mut p = vec![json!(self.session)];
        p.extend(args.as_array().cloned().unwrap_or_default());
        rpc(self.hosts[i].http, method, Value::Array(p)).map_err(|e| e.join(" "))
    }

    /// Calls `method` on any running host (the first that answers other than by transport).
    pub fn call_any(&self, method: &str, args: Value) -> std::result::Result<Value, String> {
        let mut last = String::from("no running host");
        for i in self.running() {
            if self.hosts[i].partitioned {
                continue;
            }
            match self.call(i, method, args.clone()) {
                Err(e) if e.starts_with("TRANSPORT") || e.starts_with("CANNOT_CONTACT_HOST") => {
                    last = e
                }
                r => return r,
            }
        }
        Err(last)
    }

    /// Running hosts (not stopped, not killed).
    pub fn running(&self) -> Vec<usize> {
        (0..self.hosts.len())
            .filter(|&i| self.hosts[i].running())
            .collect()
    }

    /// Polls `f` every 100 ms for up to `secs`; the seconds it took.
    pub fn until(
        &mut self,
        secs: u64,
        what: &str,
        mut f: impl FnMut(&mut Harness) -> bool,
    ) -> Result<f64> {
        let t = Instant::now();
        let deadline = t + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if f(self) {
                return Ok(t.elapsed().as_secs_f64());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(Error::Other(format!("timed out after {secs} s: {what}")))
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// The host index whose reference is `r`.
    pub fn index_of(&self, r: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.host_ref == r)
    }

    /// The master as a running host reports it.
    fn master_index(&self) -> Option<usize> {
        let pool = self.call_any("pool.get_all", json!([])).ok()?;
        let p = pool.as_array()?.first()?.clone();
        let m = self.call_any("pool.get_master", json!([p])).ok()?;
        self.index_of(m.as_str()?)
    }

    /// Some work that must survive every fault: a VM made, started where the pool places
    /// it, its description set; the acknowledged ones go in the ledger.
    pub fn workload(&mut self) {
        self.writes += 1;
        let n = self.writes;
        let mb = (64u64 << 20).to_string();
        let rec = json!({
            "name_label": format!("w{n}"),
            "memory_static_max": mb, "memory_dynamic_max": mb,
            "memory_dynamic_min": mb, "memory_static_min": mb,
            "VCPUs_max": "1", "VCPUs_at_startup": "1",
        });
        if let Ok(vm) = self.call_any("VM.create", json!([rec])) {
            let vm = vm.as_str().unwrap_or_default().to_owned();
            if let Ok(u) = self.call_any("VM.get_uuid", json!([vm])) {
                self.vms
                    .insert(vm.clone(), u.as_str().unwrap_or_default().to_owned());
            }
            let _ = self.call_any("VM.start", json!([vm, false, false]));
            let d = format!("written at step {n}");
            if self
                .call_any("VM.set_name_description", json!([vm, d]))
                .is_ok()
            {
                self.ledger.insert(vm, d);
            }
        }
        // At most 12 workload VMs run: the pool's memory lasts any number of schedules.
        if self.vms.len() > 12 {
            let old: Vec<String> = self.vms.keys().cloned().collect();
            let vm = old[self.pick(old.len())].clone();
            let _ = self.call_any("VM.hard_shutdown", json!([vm]));
            self.vms.remove(&vm);
        }
        // Migrate a running VM to another live host now and then.
        if n % 2 == 0 {
            let running: Vec<String> = self.vms.keys().cloned().collect();
            if !running.is_empty() {
                let vm = running[self.pick(running.len())].clone();
                let targets = self.running();
                let t = targets[self.pick(targets.len())];
                let dest = self.hosts[t].host_ref.clone();
                let _ = self.call_any("VM.pool_migrate", json!([vm, dest, {}]));
            }
        }
    }

    /// The VM UUIDs of host `i`'s domains, from its `/domains` (`None`: no answer).
    pub fn domains_of(&self, i: usize) -> Option<Vec<String>> {
        let path = format!("/domains?session_id={}", self.session);
        let body = http_get(self.hosts[i].http, &path)?;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        Some(
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d["uuid"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    /// What every running host reports now.
    pub fn observe(&self) -> Observation {
        let mut o = Observation::default();
        for i in self.running() {
            if let Some(doms) = self.domains_of(i) {
                o.domains.insert(i, doms);
            }
            if let Ok(p) = self.call(i, "pool.get_all", json!([])) {
                if let Some(p) = p.as_array().and_then(|a| a.first()).cloned() {
                    if let Ok(m) = self.call(i, "pool.get_master", json!([p])) {
                        o.masters
                            .insert(i, m.as_str().unwrap_or_default().to_owned());
                    }
                }
            }
            if self.hosts[i].pool_conf() == "master" {
                o.conf_masters.push(i);
            }
            let login = rpc(
                self.hosts[i].http,
                "session.login_with_password",
                json!(["root", PASSWORD, "2.21", "observer"]),
            );
            if let Ok(s) = login {
                o.acting.push(i);
                let _ = rpc(self.hosts[i].http, "session.logout", json!([s]));
            }
        }
        o
    }

    /// The pool's own checks of an observation.
    pub fn check(&self, o: &Observation) -> Vec<String> {
        let mut bad = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, doms) in &o.domains {
            for d in doms {
                if let Some(j) = seen.insert(d, *i) {
                    bad.push(format!("VM {d} runs on hosts {j} and {i}"));
                }
            }
        }
        // A host cut from etcd cannot learn of a new master: its view is not counted (that
        // it does not act as master is, through `acting`).
        let mut masters: Vec<&String> = o
            .masters
            .iter()
            .filter(|(i, _)| !self.hosts[**i].partitioned)
            .map(|(_, m)| m)
            .collect();
        masters.dedup();
        if masters.len() > 1 {
            bad.push(format!("hosts disagree on the master: {:?}", o.masters));
        }
        if let Some(m) = masters.first() {
            match self.index_of(m) {
                Some(i) if self.hosts[i].running() => {}
                _ => bad.push(format!("the master {m} is not a running host")),
            }
        }
        if o.acting.len() > 1 {
            bad.push(format!("hosts {:?} act as master at once", o.acting));
        }
        // Every running host still takes writes (its database follows the pool).
        if let Some(vm) = self.ledger.keys().next() {
            for i in self.running() {
                if self.hosts[i].partitioned {
                    continue;
                }
                let key = format!("probe-{i}");
                if let Err(e) = self.call(i, "VM.remove_from_other_config", json!([vm, key])) {
                    bad.push(format!("host {i} refuses a write: {e}"));
                }
            }
        }
        if !self.ledger.is_empty() {
            match self.call_any("VM.get_all_records", json!([])) {
                Ok(all) => {
                    for (vm, d) in &self.ledger {
                        let got = all[vm.as_str()]["name_description"].as_str();
                        if got != Some(d.as_str()) {
                            bad.push(format!("acknowledged write to {vm} lost: {got:?}"));
                        }
                    }
                }
                Err(e) => bad.push(format!("reading the acknowledged writes: {e}")),
            }
        }
        bad
    }

    /// Injects `f`, lets it last, heals it; returns what went wrong.
    pub fn fault(&mut self, f: Fault, ha: &mut dyn HaHooks) -> Result<Vec<String>> {
        self.faults(&[f], ha)
    }

    /// Injects every fault of `fs` at once (different hosts, at most one etcd member), lets
    /// them last, heals them together; returns what went wrong.
    pub fn faults(&mut self, fs: &[Fault], ha: &mut dyn HaHooks) -> Result<Vec<String>> {
        let mut bad = Vec::new();
        let master = self.master_index();
        let t = Instant::now();
        // The host each fault hits (KillMaster: the master now).
        let mut hit: Vec<(Fault, usize)> = Vec::new();
        for &f in fs {
            let i = match f {
                Fault::KillMember(i) | Fault::StopMember(i) | Fault::Partition(i) => i,
                Fault::KillMaster => {
                    master.ok_or_else(|| Error::Other("no master known".into()))?
                }
                Fault::KillEtcd(k) => {
                    self.etcd_leader_killed = self.etcd[k].is_leader();
                    if let Some(mut c) = self.etcd[k].child.take() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    continue;
                }
            };
            if hit.iter().any(|&(_, j)| j == i) {
                // The master changed since the schedule was drawn (KillMaster and
                // KillMember name one host now): that host is hit once.
                println!("pool:      {f:?} hits host {i}, already hit: left out");
                continue;
            }
            match f {
                Fault::StopMember(_) => {
                    if let Some(c) = &self.hosts[i].child {
                        signal(c, libc::SIGSTOP);
                    }
                    self.hosts[i].stopped = true;
                }
                Fault::Partition(_) => {
                    for p in &self.hosts[i].proxies {
                        p.cut();
                    }
                    self.hosts[i].partitioned = true;
                }
                _ => {
                    if let Some(mut c) = self.hosts[i].child.take() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                }
            }
            hit.push((f, i));
        }
        self.fault_at = t;
        if !fs.iter().any(|f| matches!(f, Fault::KillEtcd(_))) {
            self.etcd_leader_killed = false;
        }
        // A new master, timed from the fault (HA's checks below time their failover from
        // it too).
        let old = master.map(|m| self.hosts[m].host_ref.clone());
        if let (Some(m), Some(old)) = (master, old) {
            if hit
                .iter()
                .any(|(f, i)| *i == m && !matches!(f, Fault::Partition(_)))
            {
                match self.until(30, "a new master", |h| {
                    h.master_index().is_some_and(|x| h.hosts[x].host_ref != old)
                }) {
                    Ok(_) => self.elections.push(t.elapsed().as_secs_f64()),
                    Err(e) => bad.push(e.to_string()),
                }
            }
        }
        for &f in fs {
            if let Err(e) = ha.after_fault(self, f) {
                bad.push(format!("HA after {f:?}: {e}"));
            }
        }
        self.workload();
        if hit.iter().any(|(f, _)| matches!(f, Fault::StopMember(_))) {
            // A stopped host stays stopped past its lease.
            let left = (LEASE_TTL + Duration::from_millis(1500)).saturating_sub(t.elapsed());
            std::thread::sleep(left);
        }
        if fs.iter().any(|f| matches!(f, Fault::KillEtcd(_))) {
            // A host's view follows the pool through a watch that an etcd member's death
            // breaks and reopens: its records may lag a moment (acting masters are checked
            // at once, by the observer's logins).
            let _ = self.until(10, "the hosts' views agree", |h| {
                let o = h.observe();
                let mut m: Vec<&String> = o.masters.values().collect();
                m.dedup();
                m.len() <= 1
            });
        }
        bad.extend(self.check(&self.observe()));
        // Healed together.
        for &f in fs {
            if let Fault::KillEtcd(k) = f {
                let cluster = self.cluster();
                self.etcd[k].start(&cluster, true)?;
                if !wait_port(self.etcd[k].port(), 30) {
                    bad.push(format!("etcd member {k} did not come back"));
                }
            }
        }
        for &(f, i) in &hit {
            match f {
                Fault::StopMember(_) => {
                    if let Some(c) = &self.hosts[i].child {
                        signal(c, libc::SIGCONT);
                    }
                    self.hosts[i].stopped = false;
                }
                Fault::Partition(_) => {
                    for p in &self.hosts[i].proxies {
                        p.heal();
                    }
                    self.hosts[i].partitioned = false;
                }
                _ => {
                    let bin = self.xapi_bin.clone();
                    self.hosts[i].spawn(&bin)?;
                }
            }
        }
        // Each host comes back as a member without manual work.
        for &(_, i) in &hit {
            let s = self.session.clone();
            if let Err(e) = self.until(30, "the host back in the pool", |h| {
                rpc(h.hosts[i].http, "host.get_all", json!([s])).is_ok()
            }) {
                bad.push(format!("host {i}: {e}"));
            }
        }
        // Settled: one master, elected, named by every host and its pool.conf.
        let settled = self.until(
            30,
            "one master, named by every host and its pool.conf",
            |h| {
                let o = h.observe();
                let named: Vec<&String> = o.masters.values().collect();
                let m = named.first().and_then(|m| h.index_of(m));
                o.masters.len() == h.running().len()
                    && named.windows(2).all(|w| w[0] == w[1])
                    && m.is_some_and(|m| o.conf_masters == [m] && o.acting == [m])
            },
        );
        if let Err(e) = settled {
            bad.push(e.to_string());
        }
        let o = self.observe();
        bad.extend(self.check(&o));
        bad.extend(ha.check(self, &o));
        Ok(bad)
    }

    /// A random fault.
    pub fn random_fault(&mut self) -> Fault {
        match self.pick(5) {
            4 => Fault::Partition(self.pick(3)),
            0 => {
                let m = self.master_index().unwrap_or(0);
                let others: Vec<usize> = (0..3).filter(|&i| i != m).collect();
                Fault::KillMember(others[self.pick(2)])
            }
            1 => {
                let i = self.pick(3);
                Fault::StopMember(i)
            }
            2 => Fault::KillMaster,
            _ => Fault::KillEtcd(self.pick(3)),
        }
    }

    /// Up to `n` random faults to inject together: each on a different host, at most one
    /// etcd member, and at least one host left untouched.
    pub fn random_faults(&mut self, n: usize) -> Vec<Fault> {
        let master = self.master_index().unwrap_or(0);
        let mut out: Vec<Fault> = Vec::new();
        let mut hosts_hit: Vec<usize> = Vec::new();
        for _ in 0..n * 4 {
            if out.len() == n {
                break;
            }
            let f = self.random_fault();
            let host = match f {
                Fault::KillMember(i) | Fault::StopMember(i) | Fault::Partition(i) => Some(i),
                Fault::KillMaster => Some(master),
                Fault::KillEtcd(_) => None,
            };
            let ok = match host {
                Some(i) => !hosts_hit.contains(&i) && hosts_hit.len() + 1 < self.hosts.len(),
                None => !out.iter().any(|f| matches!(f, Fault::KillEtcd(_))),
            };
            if ok {
                hosts_hit.extend(host);
                out.push(f);
            }
        }
        out
    }
}

/// Calls per second of `VM.get_record` + `VM.set_name_description` pairs from 4 threads on
/// `port` for `secs` seconds.
fn rate(port: u16, session: &str, vm: &str, secs: u64) -> f64 {
    let stop = Instant::now() + Duration::from_secs(secs);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (s, v) = (session.to_owned(), vm.to_owned());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < stop {
                    if rpc(port, "VM.get_record", json!([s, v])).is_ok() {
                        n += 1;
                    }
                    if rpc(
                        port,
                        "VM.set_name_description",
                        json!([s, v, format!("{t}-{n}")]),
                    )
                    .is_ok()
                    {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let n: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    n as f64 / secs as f64
}

/// The median (upper middle) of `v`; 0 when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// `event.from` latency, ms: a change made through `writer` (`VM.set_name_description`,
/// timed from just before the call) until an `event.from` waiter on `waiter` returns it;
/// one sample per round.
fn event_latency(writer: u16, waiter: u16, session: &str, vm: &str, rounds: usize) -> Vec<f64> {
    let from = |token: &str| rpc(waiter, "event.from", json!([session, ["vm"], token, 5.0]));
    let Ok(first) = from("") else {
        return Vec::new();
    };
    let mut token = first["token"].as_str().unwrap_or_default().to_owned();
    let mut out = Vec::new();
    for r in 0..rounds {
        let want = format!("latency-{r}-{token}");
        let (tx, rx) = std::sync::mpsc::channel();
        let (s, v, w, mut tok) = (
            session.to_owned(),
            vm.to_owned(),
            want.clone(),
            token.clone(),
        );
        let waiting = std::thread::spawn(move || {
            for _ in 0..20 {
                let Ok(ev) = rpc(waiter, "event.from", json!([s, ["vm"], tok, 5.0])) else {
                    return None;
                };
                tok = ev["token"].as_str().unwrap_or_default().to_owned();
                let seen = ev["events"].as_array().is_some_and(|a| {
                    a.iter().any(|e| {
                        e["ref"].as_str() == Some(v.as_str())
                            && e["snapshot"]["name_description"].as_str() == Some(w.as_str())
                    })
                });
                if seen {
                    let _ = tx.send(Instant::now());
                    return Some(tok);
                }
            }
            None
        });
        std::thread::sleep(Duration::from_millis(30));
        let t0 = Instant::now();
        if rpc(
            writer,
            "VM.set_name_description",
            json!([session, vm, want]),
        )
        .is_err()
        {
            let _ = waiting.join();
            continue;
        }
        if let Ok(t1) = rx.recv_timeout(Duration::from_secs(10)) {
            out.push(t1.duration_since(t0).as_secs_f64() * 1000.0);
        }
        match waiting.join() {
            Ok(Some(t)) => token = t,
            _ => break,
        }
    }
    out
}

/// The API-rate comparison: the pool's master against a host alone on SQLite, interleaved
/// rounds, medians.
fn bench(h: &Harness, secs: u64) -> Result<()> {
    let dir = h.root.join("single");
    std::fs::create_dir_all(&dir).map_err(ioerr("create", &dir))?;
    let (http, https) = (free_port()?, free_port()?);
    let mut single = XapiHost {
        proxies: Vec::new(),
        partitioned: false,
        http,
        https,
        args: vec![
            "--listen".into(),
            format!("127.0.0.1:{http}"),
            "--https-listen".into(),
            format!("127.0.0.1:{https}"),
            "--socket".into(),
            dir.join("xapi.sock").display().to_string(),
            "--state-dir".into(),
            dir.display().to_string(),
        ],
        dir,
        child: None,
        stopped: false,
        host_ref: String::new(),
    };
    single.spawn(&h.xapi_bin)?;
    let ss = rpc(
        http,
        "session.login_with_password",
        json!(["root", PASSWORD, "2.21", "bench"]),
    )
    .map_err(|e| Error::Other(format!("{e:?}")))?;
    let ss = ss.as_str().unwrap_or_default().to_owned();
    let mk = |port: u16, s: &str| {
        rpc(
            port,
            "VM.create",
            json!([s, {"name_label": "bench", "memory_static_max": "67108864",
                "memory_dynamic_max": "67108864", "memory_dynamic_min": "67108864",
                "VCPUs_max": "1", "VCPUs_at_startup": "1"}]),
        )
        .map_err(|e| Error::Other(format!("bench: VM.create on port {port}: {e:?}")))
        .map(|v| v.as_str().unwrap_or_default().to_owned())
    };
    let m = h
        .master_index()
        .ok_or_else(|| Error::Other("bench: no master".into()))?;
    let pv = mk(h.hosts[m].http, &h.session)?;
    let sv = mk(http, &ss)?;
    let (mut pool, mut alone) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        pool.push(rate(h.hosts[m].http, &h.session, &pv, secs));
        alone.push(rate(http, &ss, &sv, secs));
    }
    let (p, a) = (median(pool), median(alone));
    println!(
        "pool: bench: API calls/s (get_record + set_name_description, 4 clients, median of 3 interleaved rounds of {secs} s): 3-host pool on etcd {p:.0}, single host on SQLite {a:.0}, ratio {:.2}",
        p / a.max(1.0)
    );
    // event.from: written on the master, waited for on another host of the pool; written
    // and waited for on the host alone. Interleaved rounds of 10.
    let other = (0..h.hosts.len())
        .find(|&i| i != m && h.hosts[i].running())
        .unwrap_or(m);
    let (mut pl, mut al) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        pl.extend(event_latency(
            h.hosts[m].http,
            h.hosts[other].http,
            &h.session,
            &pv,
            10,
        ));
        al.extend(event_latency(http, http, &ss, &sv, 10));
    }
    let (pn, an) = (pl.len(), al.len());
    let (pm, am) = (median(pl), median(al));
    println!(
        "pool: bench: event.from latency (change on one host to a waiter's return), median ms: 3-host pool on etcd (master to another host) {pm:.1} over {pn}, single host on SQLite {am:.1} over {an}, ratio {:.2}",
        pm / am.max(0.001)
    );
    if let Some(mut c) = single.child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(())
}

/// Builds xapi with the pool store (unless given) and returns its path.
fn xapi_binary(args: &PoolArgs, root: &Path) -> Result<PathBuf> {
    if let Some(p) = &args.xapi {
        return Ok(p.clone());
    }
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "-p",
            "toolstack",
            "--features",
            "etcd",
            "--bin",
            "xapi",
        ])
        .current_dir(root)
        .status()
        .map_err(|source| Error::Spawn {
            cmd: "cargo build".into(),
            source,
        })?;
    if !status.success() {
        return Err(Error::Failed {
            cmd: "cargo build -p toolstack --features etcd --bin xapi".into(),
            status: status.to_string(),
            detail: String::new(),
        });
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("debug").join("xapi"))
}

/// What one pool's run gave back.
struct PoolRun {
    harness: Option<Harness>,
    failovers: Vec<(f64, bool)>,
}

/// Counts passed and failed steps across pools; prints each outcome as it comes.
#[derive(Default)]
struct Tally {
    passed: std::sync::atomic::AtomicUsize,
    failed: std::sync::atomic::AtomicUsize,
    random_failed: std::sync::atomic::AtomicUsize,
    random_run: std::sync::atomic::AtomicUsize,
}

impl Tally {
    fn record(&self, tag: &str, name: &str, bad: Vec<String>) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = String::new();
        if bad.is_empty() {
            out.push_str(&format!("pool: ok   {tag}{name}\n"));
            self.passed.fetch_add(1, Relaxed);
        } else {
            out.push_str(&format!("pool: FAIL {tag}{name}\n"));
            for b in bad {
                out.push_str(&format!("pool:      {tag}{b}\n"));
            }
            self.failed.fetch_add(1, Relaxed);
        }
        print!("{out}");
        self.failed.load(Relaxed) == 0
    }
}

/// Pool `k`: formed, checked, the fixed steps (the first pool only), then `schedules` randomized ones.
fn run_pool(
    args: &PoolArgs,
    bin: &Path,
    k: usize,
    seed: u64,
    schedules: usize,
    tally: &Tally,
    ha: &mut dyn HaHooks,
) -> Result<Harness> {
    let tag = if args.pools > 1 {
        format!("[pool {k}] ")
    } else {
        String::new()
    };
    let t = Instant::now();
    let mut h = Harness::start(bin, seed, k)?;
    println!(
        "pool: {tag}formed a 3-host pool in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    ha.setup(&mut h).map_err(Error::Other)?;
    h.workload();
    h.workload();
    let o = h.observe();
    let mut bad = h.check(&o);
    if o.masters.len() != 3 {
        bad.push(format!(
            "not every host reports the master: {:?}",
            o.masters
        ));
    }
    tally.record(&tag, "join: every host sees every object, one master", bad);
    if k == 0 {
        // designate host 1, then back to host 0.
        for target in [1usize, 0] {
            let r = h.hosts[target].host_ref.clone();
            let mut bad = Vec::new();
            if let Err(e) = h.call_any("pool.designate_new_master", json!([r])) {
                bad.push(format!("designate_new_master: {e}"));
            }
            let ok = h.until(20, "the designated master", |h| {
                h.master_index() == Some(target) && h.observe().conf_masters == [target]
            });
            if let Err(e) = ok {
                bad.push(e.to_string());
            }
            bad.extend(h.check(&h.observe()));
            tally.record(&tag, &format!("designate host {target}"), bad);
        }
        let steps = [
            ("kill -9 a member's xapi", Fault::KillMember(2)),
            ("SIGSTOP a member past its lease", Fault::StopMember(1)),
            ("kill -9 the master's xapi", Fault::KillMaster),
            ("kill -9 one etcd member", Fault::KillEtcd(1)),
            (
                "partition a member from etcd (its proxies cut)",
                Fault::Partition(2),
            ),
        ];
        for (name, f) in steps {
            h.workload();
            let bad = h.fault(f, ha)?;
            tally.record(&tag, name, bad);
        }
    }
    for s in 0..schedules {
        let t = Instant::now();
        let fs = h.random_faults(args.steps);
        h.workload();
        let bad = h.faults(&fs, ha)?;
        tally
            .random_run
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !bad.is_empty() {
            tally
                .random_failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let took = t.elapsed().as_secs_f64();
        tally.record(
            &tag,
            &format!("schedule {s} (seed {seed}): {fs:?} ({took:.1} s)"),
            bad,
        );
    }
    Ok(h)
}

/// Runs the harness with hooks made by `make_ha` (one per pool); the summary line is
/// printed last.
pub fn run(
    args: PoolArgs,
    root: &Path,
    make_ha: &(dyn Fn() -> Box<dyn HaHooks + Send> + Sync),
) -> bool {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let pools = args.pools.max(1);
    println!("pool: seed {seed} (replay with --seed {seed} --pools {pools})");
    let tally = Tally::default();
    let started = Instant::now();
    let outcome = (|| -> Result<()> {
        let bin = xapi_binary(&args, root)?;
        let seeds: Vec<u64> = (0..pools).map(|k| seed.wrapping_add(k as u64)).collect();
        let share = |k: usize| args.schedules / pools + usize::from(k < args.schedules % pools);
        let runs: Vec<PoolRun> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..pools)
                .map(|k| {
                    let (args, bin, tally, seed) = (&args, &bin, &tally, seeds[k]);
                    sc.spawn(move || {
                        let mut ha = make_ha();
                        let r = run_pool(args, bin, k, seed, share(k), tally, &mut *ha);
                        let harness = match r {
                            Ok(h) => Some(h),
                            Err(e) => {
                                tally.record(
                                    "",
                                    &format!("harness of pool {k}"),
                                    vec![e.to_string()],
                                );
                                None
                            }
                        };
                        PoolRun {
                            harness,
                            failovers: ha.failovers(),
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or(PoolRun {
                        harness: None,
                        failovers: Vec::new(),
                    })
                })
                .collect()
        });
        let random_failed = tally
            .random_failed
            .load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "pool: randomized: {} of {} fault schedules run, of {} fault(s) each, over {pools} pool(s) (seeds {}), {random_failed} failed",
            tally.random_run.load(std::sync::atomic::Ordering::Relaxed),
            args.schedules,
            args.steps,
            seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        );
        let mut elections = Vec::new();
        let mut failovers = Vec::new();
        let mut kept = Vec::new();
        for r in runs {
            failovers.extend(r.failovers);
            if let Some(mut h) = r.harness {
                elections.extend(h.elections.iter().copied());
                h.clean = tally.failed.load(std::sync::atomic::Ordering::Relaxed) == 0;
                kept.push(h);
            }
        }
        if !elections.is_empty() {
            println!(
                "pool: election after the master's death: median {:.2} s, max {:.2} s over {} (lease TTL {} s)",
                median(elections.clone()),
                elections.iter().cloned().fold(0.0, f64::max),
                elections.len(),
                LEASE_TTL.as_secs()
            );
        }
        let of = |leader_lost: bool| -> Vec<f64> {
            failovers
                .iter()
                .filter(|p| p.1 == leader_lost)
                .map(|p| p.0)
                .collect()
        };
        let (plain, lost) = (of(false), of(true));
        for (what, v, bound) in [
            ("", plain, crate::pool_ha::bound()),
            (
                " with etcd's leader killed too",
                lost,
                crate::pool_ha::bound_leader_lost(),
            ),
        ] {
            if v.is_empty() {
                continue;
            }
            println!(
                "pool: HA failover{what} (host fault to its protected VMs running elsewhere): median {:.2} s, max {:.2} s over {} (bound {} s: HA lease TTL {} s + {} s restart allowance{})",
                median(v.clone()),
                v.iter().cloned().fold(0.0, f64::max),
                v.len(),
                bound.as_secs(),
                crate::pool_ha::HA_TIMEOUT.as_secs(),
                crate::pool_ha::RESTART_ALLOWANCE.as_secs(),
                if what.is_empty() { "" } else { " + one more TTL" },
            );
        }
        // The benchmark runs on the first pool alone: the others stop first.
        let first = (!kept.is_empty()).then(|| kept.remove(0));
        drop(kept);
        if let (Some(h), true) = (&first, args.bench_secs > 0) {
            bench(h, args.bench_secs)?;
        }
        Ok(())
    })();
    if let Err(e) = outcome {
        tally.record("", "harness", vec![e.to_string()]);
    }
    let (passed, failed) = (
        tally.passed.load(std::sync::atomic::Ordering::Relaxed),
        tally.failed.load(std::sync::atomic::Ordering::Relaxed),
    );
    println!("pool: ran in {:.1} s", started.elapsed().as_secs_f64());
    println!("pool: {passed} passed, {failed} failed");
    failed == 0
}
