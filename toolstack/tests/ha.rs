//! HA against a real etcd (Debian's `etcd-server`) on loopback: engines of several simulated
//! hosts in this process, each fenced by its simulated host's dom0 watchdog. An observer lists
//! every host's domains every few milliseconds and fails the test if a VM ever runs on two
//! hosts at once.

#![cfg(feature = "etcd")]

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use toolstack::ha::{Ha, HaConfig, HaHost, HaState, HaVm, Priority};
use xen_sim::{Host, HostConfig};
use xen_types::Pages;
use xenctrl::{DomainConfig, Xen, XenControl};

#[path = "common/etcd.rs"]
mod etcd_peer;
use etcd_peer::{etcd, Etcd};

macro_rules! etcd_or_skip {
    () => {
        match etcd() {
            Ok(e) => e,
            Err(why) => {
                eprintln!("SKIP: {why}");
                return;
            }
        }
    };
}

/// A TCP proxy to etcd that can be cut (a network partition of one host).
struct Proxy {
    endpoint: String,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn new(upstream: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", l.local_addr().unwrap());
        l.set_nonblocking(true).unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (c, cs) = (cut.clone(), conns.clone());
        std::thread::spawn(move || {
            while !c.load(Ordering::SeqCst) {
                let Ok((down, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                down.set_nonblocking(false).unwrap();
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let mut list = cs.lock();
                list.push(down.try_clone().unwrap());
                list.push(up.try_clone().unwrap());
                for (mut from, mut to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up, down),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
            // The listener closes here: new connections are refused.
        });
        Proxy {
            endpoint,
            cut,
            conns,
        }
    }

    /// Cuts every connection and refuses new ones.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.conns.lock().iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// A simulated host under HA: VMs are domains whose handle is the VM's uuid.
struct SimHost {
    xen: Xen,
    sim: Host,
}

impl SimHost {
    fn new(memory_mib: u64) -> Arc<SimHost> {
        let sim = Host::new(HostConfig {
            memory: Pages::from_mib(memory_mib),
            ..HostConfig::default()
        });
        Arc::new(SimHost {
            xen: Xen::sim(sim.clone()),
            sim,
        })
    }

    fn start(&self, vm: &HaVm) -> Result<(), String> {
        let mut cfg = DomainConfig::pvh(1);
        cfg.handle = uuid::Uuid::parse_str(&vm.vm).map_err(|e| e.to_string())?;
        let pages = Pages(vm.memory / 4096);
        let dom = self.xen.create_domain(&cfg).map_err(|e| e.to_string())?;
        let r = (|| {
            self.xen.set_max_mem(dom, pages)?;
            self.xen.increase_reservation(dom, pages)?;
            self.xen.unpause(dom)
        })();
        if let Err(e) = r {
            let _ = self.xen.destroy(dom);
            return Err(e.to_string());
        }
        Ok(())
    }

    /// The VMs (domain handles) present on the host, dying ones included.
    fn vms(&self) -> Vec<String> {
        self.xen
            .list_domains()
            .unwrap()
            .iter()
            .filter(|d| !d.handle.is_nil())
            .map(|d| d.handle.to_string())
            .collect()
    }
}

impl HaHost for SimHost {
    fn xen(&self) -> &dyn XenControl {
        &*self.xen
    }

    fn free_memory(&self) -> u64 {
        self.xen.physinfo().unwrap().free_pages.0 * 4096
    }

    fn restart(&self, vm: &HaVm) -> Result<(), String> {
        self.start(vm)
    }
}

/// (vm, host index) -> first and last time seen.
type Sightings = BTreeMap<(String, usize), (Instant, Instant)>;

/// Watches every host's domains; records where and when each VM was seen and fails on a VM
/// seen on two hosts in one pass.
struct Observer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    seen: Arc<Mutex<Sightings>>,
    twice: Arc<Mutex<Vec<String>>>,
    passes: Arc<Mutex<u64>>,
}

impl Observer {
    fn new(hosts: Vec<Arc<SimHost>>) -> Observer {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let twice = Arc::new(Mutex::new(Vec::new()));
        let passes = Arc::new(Mutex::new(0));
        let (st, se, tw, pa) = (stop.clone(), seen.clone(), twice.clone(), passes.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let mut on: HashMap<String, usize> = HashMap::new();
                let now = Instant::now();
                for (i, h) in hosts.iter().enumerate() {
                    for vm in h.vms() {
                        *on.entry(vm.clone()).or_default() += 1;
                        se.lock()
                            .entry((vm, i))
                            .and_modify(|e: &mut (Instant, Instant)| e.1 = now)
                            .or_insert((now, now));
                    }
                }
                for (vm, n) in on {
                    if n > 1 {
                        tw.lock().push(vm);
                    }
                }
                *pa.lock() += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Observer {
            stop,
            thread: Some(thread),
            seen,
            twice,
            passes,
        }
    }

    /// When `vm` was first seen on host `h`.
    fn first(&self, vm: &str, h: usize) -> Option<Instant> {
        self.seen.lock().get(&(vm.to_owned(), h)).map(|e| e.0)
    }

    /// When `vm` was last seen on host `h`.
    fn last(&self, vm: &str, h: usize) -> Option<Instant> {
        self.seen.lock().get(&(vm.to_owned(), h)).map(|e| e.1)
    }

    /// Stops and asserts no VM was ever seen on two hosts.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        let twice = self.twice.lock().clone();
        assert!(twice.is_empty(), "VMs seen on two hosts at once: {twice:?}");
        let n = *self.passes.lock();
        n
    }
}

/// A short lease so tests take seconds: 4 s, fenced 1 s before, renewed every second.
fn cfg(prefix: &str, host: &str) -> HaConfig {
    let mut c = HaConfig::new(prefix, host);
    c.ttl = Duration::from_secs(4);
    c.margin = Duration::from_secs(1);
    c.renew = Duration::from_secs(1);
    c.scan = Duration::from_millis(50);
    c
}

/// Starts HA, retrying while a just-started etcd is not serving yet.
fn start(endpoint: &str, c: HaConfig, host: &Arc<SimHost>) -> Ha {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h: Arc<dyn HaHost> = host.clone();
        match Ha::start(c.clone(), &[endpoint.to_owned()], h) {
            Ok(ha) => return ha,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for etcd: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn vm(priority: Priority, order: i64, mib: u64) -> HaVm {
    HaVm {
        vm: uuid::Uuid::new_v4().to_string(),
        priority,
        order,
        memory: mib << 20,
    }
}

/// Starts `vms` on `host` and protects them through `ha`.
fn run_protected(host: &SimHost, ha: &Ha, vms: &[HaVm]) {
    for v in vms {
        host.start(v).unwrap();
        ha.protect(v).unwrap();
    }
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Instant {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
    Instant::now()
}

/// A small etcd client of the test's own, to watch keys and revoke leases.
struct Probe {
    rt: tokio::runtime::Runtime,
    client: etcd_client::Client,
}

impl Probe {
    fn new(endpoint: &str) -> Probe {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let ep = endpoint.to_owned();
        let client = rt
            .block_on(etcd_client::Client::connect([ep], None))
            .unwrap();
        Probe { rt, client }
    }

    fn exists(&self, key: &str) -> bool {
        let mut c = self.client.clone();
        let k = key.to_owned();
        self.rt
            .block_on(async move { c.get(k, None).await })
            .unwrap()
            .count()
            > 0
    }

    fn mod_revision(&self, key: &str) -> i64 {
        let mut c = self.client.clone();
        let k = key.to_owned();
        let r = self
            .rt
            .block_on(async move { c.get(k, None).await })
            .unwrap();
        r.kvs()[0].mod_revision()
    }

    fn revoke(&self, lease: i64) {
        let mut c = self.client.clone();
        self.rt
            .block_on(async move { c.lease_revoke(lease).await })
            .unwrap();
    }
}

/// Where each of `vms` runs among `hosts` now (index), or `None`.
fn placement(hosts: &[Arc<SimHost>], vm: &HaVm) -> Vec<usize> {
    hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| h.vms().contains(&vm.vm))
        .map(|(i, _)| i)
        .collect()
}

/// The failure scenarios share this: host 0 runs `vms` under HA with hosts 1 and 2 alive;
/// `fail` makes host 0 fail; then every VM must run exactly once on host 1 or 2, and host 0's
/// domains must have died (watchdog reboot) before any of them ran elsewhere. Prints the
/// failover figures. Returns the failed host's engine when `fail` kept it.
fn failover(name: &str, fail: impl FnOnce(Ha, &Probe, &Proxy) -> Option<Ha>) -> Option<Ha> {
    let e = match etcd() {
        Ok(e) => e,
        Err(why) => {
            eprintln!("SKIP: {why}");
            return None;
        }
    };
    let prefix = format!("/xapi/{name}");
    let hosts: Vec<Arc<SimHost>> = (0..3).map(|_| SimHost::new(8192)).collect();
    let proxy = Proxy::new(e.port);
    let probe = Probe::new(&e.endpoint);
    let a = start(&proxy.endpoint, cfg(&prefix, "a"), &hosts[0]);
    let b = start(&e.endpoint, cfg(&prefix, "b"), &hosts[1]);
    let c = start(&e.endpoint, cfg(&prefix, "c"), &hosts[2]);
    let vms = vec![
        vm(Priority::BestEffort, 0, 256),
        vm(Priority::Restart, 2, 256),
        vm(Priority::Restart, 1, 256),
        vm(Priority::BestEffort, 1, 256),
    ];
    run_protected(&hosts[0], &a, &vms);
    let obs = Observer::new(hosts.clone());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(hosts[0].sim.boots(), 1, "a live host must not be fenced");
    let t_fail = Instant::now();
    let a = fail(a, &probe, &proxy);
    let host_key = format!("{prefix}/ha/host/a");
    let t_gone = wait_for("a's lease to end", Duration::from_secs(30), || {
        !probe.exists(&host_key)
    });
    let t_all = wait_for("every VM to run again", Duration::from_secs(30), || {
        vms.iter().all(|v| placement(&hosts[1..], v).len() == 1)
    });
    // Everything settled: nothing is restarted twice later.
    std::thread::sleep(Duration::from_secs(1));
    let pairs = obs.seen.lock().len();
    let t_fenced = vms
        .iter()
        .map(|v| obs.last(&v.vm, 0).expect("seen on a"))
        .max()
        .unwrap();
    let first_elsewhere = vms
        .iter()
        .flat_map(|v| [obs.first(&v.vm, 1), obs.first(&v.vm, 2)])
        .flatten()
        .min()
        .unwrap();
    assert!(
        t_fenced < first_elsewhere,
        "a's domains were last seen after a VM started elsewhere"
    );
    assert_eq!(hosts[0].sim.boots(), 2, "a's watchdog rebooted it");
    assert!(hosts[0].vms().is_empty());
    let mut restarted: Vec<String> = b.restarted();
    restarted.extend(c.restarted());
    restarted.sort();
    let mut want: Vec<String> = vms.iter().map(|v| v.vm.clone()).collect();
    want.sort();
    assert_eq!(restarted, want, "each VM restarted exactly once");
    for v in &vms {
        assert_eq!(placement(&hosts, v).len(), 1, "{} runs once", v.vm);
    }
    // Priorities: every restart VM was taken over before any best-effort one.
    let rev = |v: &HaVm| probe.mod_revision(&format!("{prefix}/ha/vm/{}", v.vm));
    let last_restart = vms
        .iter()
        .filter(|v| v.priority == Priority::Restart)
        .map(rev)
        .max()
        .unwrap();
    let first_best = vms
        .iter()
        .filter(|v| v.priority == Priority::BestEffort)
        .map(rev)
        .min()
        .unwrap();
    assert!(last_restart < first_best, "restart before best-effort");
    let passes_obs = obs.finish();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "HA-METRIC {name}: fenced {:.0} ms after the failure, lease gone {:.0} ms after it \
         (fenced {:+.0} ms from the lease's end); failover (lease gone -> all {} VMs running \
         elsewhere) {:.0} ms, first VM {:.0} ms; observer: {passes_obs} passes, {pairs} \
         (vm, host) pairs",
        ms(t_fenced.saturating_duration_since(t_fail)),
        ms(t_gone.saturating_duration_since(t_fail)),
        ms(t_fenced.saturating_duration_since(t_gone))
            - ms(t_gone.saturating_duration_since(t_fenced)),
        vms.len(),
        ms(t_all.saturating_duration_since(t_gone)),
        ms(first_elsewhere.saturating_duration_since(t_gone)),
    );
    b.stop().unwrap();
    c.stop().unwrap();
    a
}

/// A host whose lease ended while its engine ran knows it is fenced (it stops acting on
/// the pool's behalf and xapi starts HA afresh), whether etcd told it or its own clock did.
fn knows_it_is_fenced(a: Option<Ha>) {
    if let Some(a) = a {
        wait_for("a to see it was fenced", Duration::from_secs(20), || {
            a.state() == HaState::Fenced
        });
    }
}

#[test]
fn a_crashed_xapi_is_fenced_and_its_vms_restart_once_elsewhere() {
    // Dropping the engine is xapi dying: no more renewals, the watchdog stays armed.
    failover("crash", |a, _, _| {
        drop(a);
        None
    });
}

#[test]
fn a_partitioned_host_fences_itself_before_its_lease_expires() {
    let a = failover("partition", |a, _, proxy| {
        proxy.cut();
        Some(a)
    });
    knows_it_is_fenced(a);
}

#[test]
fn a_hung_xapi_is_fenced_by_the_watchdog() {
    failover("hang", |a, _, _| {
        a.hang();
        Some(a)
    });
}

#[test]
fn a_revoked_lease_waits_for_the_fence_deadline() {
    let a = failover("revoke", |a, probe, _| {
        probe.revoke(a.lease());
        Some(a)
    });
    knows_it_is_fenced(a);
}

#[test]
fn a_host_fenced_while_still_connected_gives_its_lease_up() {
    let e = etcd_or_skip!();
    let prefix = "/xapi/stall";
    let (a_host, b_host) = (SimHost::new(8192), SimHost::new(8192));
    let a = start(&e.endpoint, cfg(prefix, "a"), &a_host);
    let b = start(&e.endpoint, cfg(prefix, "b"), &b_host);
    let v = vm(Priority::Restart, 0, 256);
    run_protected(&a_host, &a, std::slice::from_ref(&v));
    let obs = Observer::new(vec![a_host.clone(), b_host.clone()]);
    // A stall longer than the fence window: the watchdog reboots a, then a renews again.
    a.hang();
    wait_for("a's watchdog", Duration::from_secs(20), || {
        a_host.sim.boots() == 2
    });
    a.resume();
    wait_for("a to see it was fenced", Duration::from_secs(20), || {
        a.state() == HaState::Fenced
    });
    wait_for("the VM on b", Duration::from_secs(20), || {
        b_host.vms() == vec![v.vm.clone()]
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(b.restarted(), vec![v.vm.clone()]);
    assert!(a_host.vms().is_empty());
    obs.finish();
    b.stop().unwrap();
}

#[test]
fn scarce_memory_goes_to_restart_priority_then_order() {
    let e = etcd_or_skip!();
    let prefix = "/xapi/scarce";
    let a_host = SimHost::new(8192);
    // 1 GiB free after dom0's 1 GiB: room for one of the VMs below.
    let b_host = SimHost::new(2048);
    let a = start(&e.endpoint, cfg(prefix, "a"), &a_host);
    let b = start(&e.endpoint, cfg(prefix, "b"), &b_host);
    let best = vm(Priority::BestEffort, 0, 768);
    let second = vm(Priority::Restart, 2, 768);
    let first = vm(Priority::Restart, 1, 768);
    run_protected(&a_host, &a, &[best.clone(), second.clone(), first.clone()]);
    drop(a);
    wait_for("a restart", Duration::from_secs(30), || {
        !b.restarted().is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(b.restarted(), vec![first.vm.clone()]);
    assert_eq!(b_host.vms(), vec![first.vm]);
    assert_eq!(a_host.sim.boots(), 2);
    b.stop().unwrap();
}

#[test]
fn protection_is_owned_and_a_clean_stop_restarts_nothing() {
    let e = etcd_or_skip!();
    let prefix = "/xapi/owned";
    let (a_host, b_host) = (SimHost::new(8192), SimHost::new(8192));
    let a = start(&e.endpoint, cfg(prefix, "a"), &a_host);
    let b = start(&e.endpoint, cfg(prefix, "b"), &b_host);
    assert_eq!(a.state(), HaState::Live);
    let v = vm(Priority::Restart, 0, 256);
    run_protected(&a_host, &a, std::slice::from_ref(&v));
    // Protecting twice on the owner is fine; another host cannot take it or drop it.
    a.protect(&v).unwrap();
    assert!(matches!(b.protect(&v), Err(toolstack::Error::Conflict(_))));
    assert!(matches!(
        b.unprotect(&v.vm),
        Err(toolstack::Error::Conflict(_))
    ));
    assert_eq!(
        a_host.sim.watchdogs(xen_types::DomId::DOM0).unwrap().len(),
        1
    );
    let obs = Observer::new(vec![a_host.clone(), b_host.clone()]);
    a.stop().unwrap();
    assert!(a_host
        .sim
        .watchdogs(xen_types::DomId::DOM0)
        .unwrap()
        .is_empty());
    // Well past the lease: nothing fenced, nothing restarted, the VM still runs on a.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(a_host.sim.boots(), 1);
    assert!(b.restarted().is_empty());
    assert_eq!(a_host.vms(), vec![v.vm.clone()]);
    obs.finish();
    b.stop().unwrap();
}

#[test]
fn a_restarted_xapi_adopts_its_lease_and_watchdog() {
    let e = etcd_or_skip!();
    let prefix = "/xapi/adopt";
    let (a_host, b_host) = (SimHost::new(8192), SimHost::new(8192));
    let a = start(&e.endpoint, cfg(prefix, "a"), &a_host);
    let b = start(&e.endpoint, cfg(prefix, "b"), &b_host);
    let v = vm(Priority::Restart, 0, 256);
    run_protected(&a_host, &a, std::slice::from_ref(&v));
    let (lease, wd) = (a.lease(), a.watchdog());
    drop(a); // xapi dies ...
    std::thread::sleep(Duration::from_millis(500));
    let a = start(&e.endpoint, cfg(prefix, "a"), &a_host); // ... and its supervisor restarts it
    assert_eq!((a.lease(), a.watchdog()), (lease, wd));
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(a_host.sim.boots(), 1, "never fenced");
    assert!(b.restarted().is_empty());
    assert_eq!(a_host.vms(), vec![v.vm.clone()]);
    a.stop().unwrap();
    b.stop().unwrap();
}

/// xorshift64*: a small seeded generator, so a failing round replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How a host fails in a randomized round.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Crash,
    Partition,
    Hang,
    Revoke,
}

/// One randomized round: three hosts with random protected VMs; one or two of them fail in
/// random ways, a random time apart. Checked as in `failover`, per failed host.
fn random_round(e: &Etcd, probe: &Probe, seed: u64) -> String {
    let mut rng = Rng(seed | 1);
    let prefix = format!("/xapi/rand-{seed:x}");
    let hosts: Vec<Arc<SimHost>> = (0..3).map(|_| SimHost::new(8192)).collect();
    let proxies: Vec<Proxy> = (0..3).map(|_| Proxy::new(e.port)).collect();
    let mut engines: Vec<Option<Ha>> = (0..3)
        .map(|i| {
            Some(start(
                &proxies[i].endpoint,
                cfg(&prefix, &format!("h{i}")),
                &hosts[i],
            ))
        })
        .collect();
    let n_victims = 1 + rng.below(2) as usize;
    let mut order = [0usize, 1, 2];
    for i in (1..3).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let victims: Vec<usize> = order[..n_victims].to_vec();
    let mut vms: Vec<Vec<HaVm>> = vec![vec![]; 3];
    for (i, list) in vms.iter_mut().enumerate() {
        let n = rng.below(4) + u64::from(victims.contains(&i));
        for _ in 0..n {
            let p = if rng.below(2) == 0 {
                Priority::Restart
            } else {
                Priority::BestEffort
            };
            list.push(vm(p, rng.below(3) as i64, 128 + 128 * rng.below(3)));
        }
        run_protected(&hosts[i], engines[i].as_ref().unwrap(), list);
    }
    let obs = Observer::new(hosts.clone());
    std::thread::sleep(Duration::from_millis(1200));
    let mut faults = vec![];
    let t_fail = Instant::now();
    for &v in &victims {
        let fault = match rng.below(4) {
            0 => Fault::Crash,
            1 => Fault::Partition,
            2 => Fault::Hang,
            _ => Fault::Revoke,
        };
        let ha = engines[v].take().unwrap();
        match fault {
            Fault::Crash => drop(ha),
            Fault::Partition => {
                proxies[v].cut();
                engines[v] = Some(ha);
            }
            Fault::Hang => {
                ha.hang();
                engines[v] = Some(ha);
            }
            Fault::Revoke => {
                probe.revoke(ha.lease());
                engines[v] = Some(ha);
            }
        }
        faults.push((v, fault));
        std::thread::sleep(Duration::from_millis(rng.below(1500)));
    }
    let survivors: Vec<usize> = (0..3).filter(|i| !victims.contains(i)).collect();
    let lost: Vec<&HaVm> = victims.iter().flat_map(|&v| vms[v].iter()).collect();
    let on_survivors = |vm: &HaVm| {
        survivors
            .iter()
            .filter(|&&s| hosts[s].vms().contains(&vm.vm))
            .count()
    };
    let t_all = wait_for(
        "every lost VM to run again",
        Duration::from_secs(40),
        || lost.iter().all(|v| on_survivors(v) == 1),
    );
    std::thread::sleep(Duration::from_secs(1));
    for &v in &victims {
        assert_eq!(hosts[v].sim.boots(), 2, "h{v} fenced");
        assert!(hosts[v].vms().is_empty());
        for vm in &vms[v] {
            let last_here = obs.last(&vm.vm, v).expect("seen before the fault");
            let first_there = survivors
                .iter()
                .filter_map(|&s| obs.first(&vm.vm, s))
                .min()
                .expect("restarted");
            assert!(last_here < first_there, "{} overlapped", vm.vm);
        }
        let rev = |x: &HaVm| probe.mod_revision(&format!("{prefix}/ha/vm/{}", x.vm));
        let last_restart = vms[v]
            .iter()
            .filter(|x| x.priority == Priority::Restart)
            .map(rev)
            .max();
        let first_best = vms[v]
            .iter()
            .filter(|x| x.priority == Priority::BestEffort)
            .map(rev)
            .min();
        if let (Some(r), Some(b)) = (last_restart, first_best) {
            assert!(r < b, "h{v}: restart before best-effort");
        }
    }
    let mut restarted: Vec<String> = survivors
        .iter()
        .flat_map(|&s| engines[s].as_ref().unwrap().restarted())
        .collect();
    restarted.sort();
    let mut want: Vec<String> = lost.iter().map(|v| v.vm.clone()).collect();
    want.sort();
    assert_eq!(restarted, want, "each lost VM restarted exactly once");
    for &s in &survivors {
        assert_eq!(hosts[s].sim.boots(), 1, "h{s} is alive");
        for vm in &vms[s] {
            assert!(hosts[s].vms().contains(&vm.vm), "h{s} kept its own VMs");
        }
    }
    obs.finish();
    for &s in &survivors {
        engines[s].take().unwrap().stop().unwrap();
    }
    format!(
        "faults {faults:?}, {} VMs lost and restarted once, all running {:.0} ms after the first fault",
        lost.len(),
        t_all.saturating_duration_since(t_fail).as_secs_f64() * 1000.0
    )
}

#[test]
fn randomized_failures_never_run_a_vm_twice() {
    let e = etcd_or_skip!();
    let probe = Probe::new(&e.endpoint);
    let seed = std::env::var("HA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let rounds: u64 = std::env::var("HA_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    println!("ha-random: seed {seed} (HA_SEED={seed} replays), {rounds} rounds");
    for r in 0..rounds {
        let round_seed = seed.wrapping_add(r.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let summary = random_round(&e, &probe, round_seed);
        println!("ha-random: round {r} (seed {round_seed}) passed: {summary}");
    }
    println!("ha-random: {rounds} passed, 0 failed (seed {seed})");
}
