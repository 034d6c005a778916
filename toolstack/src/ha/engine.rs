//! The HA engine: a renewal thread (lease, fence deadline, watchdog) and a recovery thread
//! (orphans taken over in etcd transactions and restarted). See the module docs of
//! [`crate::ha`] for the protocol.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, Txn, TxnOp, WatchOptions,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use xenctrl::WatchdogId;

use super::{HaConfig, HaHost, HaVm};
use crate::Error;

/// What a host publishes under `host/<host>`, bound to its lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HostKey {
    lease: i64,
    watchdog: u32,
    /// Wall-clock ms by which the host's watchdog fires unless renewed again.
    deadline_ms: u64,
}

/// A protected VM's `vm/<vm>` key: the VM and the host that last owned it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Intent {
    #[serde(flatten)]
    vm: HaVm,
    host: String,
}

/// Where HA stands on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaState {
    /// Renewing its lease; the watchdog is kicked after each renewal.
    Live,
    /// The lease is gone (expired or revoked) or the watchdog was lost (the host rebooted):
    /// the host no longer renews nor kicks, so its watchdog fences it; its VMs belong to the
    /// others. A new [`Ha::start`] is needed.
    Fenced,
    /// Stopped through [`Ha::stop`]: the watchdog disarmed, the lease revoked.
    Stopped,
}

struct Shared {
    cfg: HaConfig,
    host: Arc<dyn HaHost>,
    client: Client,
    rt: tokio::runtime::Runtime,
    lease: i64,
    ttl: Duration,
    watchdog: WatchdogId,
    state: Mutex<HaState>,
    /// Ends both threads.
    stop: AtomicBool,
    /// Set by [`Ha::hang`]: renewals stop as in a hung xapi.
    hung: AtomicBool,
    /// The last published fence deadline of each host whose key was deleted, with the
    /// revision of the deletion (from the watch).
    dead: Mutex<HashMap<String, (u64, i64)>>,
    /// VMs this host restarted, in order.
    restarted: Mutex<Vec<String>>,
    /// When the watchdog fires unless kicked again (the last kick's time plus its timeout):
    /// past it the host is fenced, whatever etcd says.
    fence_at: Mutex<Instant>,
    /// When this start did not adopt a previous life's lease (that life's watchdog is gone:
    /// the host rebooted, its domains with it), the store's revision before the start:
    /// protections this host wrote up to it are orphans it may restart at once.
    reborn_before: Option<i64>,
}

/// HA running on one host: see [`crate::ha`].
///
/// Dropping it without [`Ha::stop`] is what a crash of xapi does: the threads end, the
/// watchdog stays armed and the lease is left to expire, so the host fences itself unless a
/// restarted xapi takes them over (a new [`Ha::start`] for the same host adopts a live lease
/// and its watchdog).
pub struct Ha {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Ha {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ha")
            .field("host", &self.shared.cfg.host)
            .field("lease", &self.shared.lease)
            .field("state", &*self.shared.state.lock())
            .finish_non_exhaustive()
    }
}

fn store(e: impl std::fmt::Display) -> Error {
    Error::Store(format!("HA: {e}"))
}

fn wall_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Shared {
    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}/ha/{kind}/{name}", self.cfg.prefix)
    }

    /// Runs `fut` on HA's runtime, giving up after `timeout`.
    fn run<T>(
        &self,
        timeout: Duration,
        fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, Error> {
        block_on(&self.rt, timeout, fut)
    }

    /// Runs the request `f` makes on HA's runtime, giving up after `timeout`; a request that
    /// could not reach an etcd member (it never left: no double application) is sent again,
    /// on whichever member the client picks next.
    fn retry<T, Fut>(&self, timeout: Duration, mut f: impl FnMut(Client) -> Fut) -> Result<T, Error>
    where
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let c = self.client.clone();
        block_on(&self.rt, timeout, async move {
            loop {
                match f(c.clone()).await {
                    Err(e) if crate::db::etcd::unreachable(&e) => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    r => return r,
                }
            }
        })
    }

    fn op_timeout(&self) -> Duration {
        self.cfg.renew.max(Duration::from_millis(500))
    }

    fn publish(&self, deadline_ms: u64, timeout: Duration) -> Result<(), Error> {
        let v = serde_json::to_string(&HostKey {
            lease: self.lease,
            watchdog: self.watchdog.0,
            deadline_ms,
        })
        .map_err(store)?;
        let key = self.key("host", &self.cfg.host);
        let lease = self.lease;
        self.retry(timeout, |mut c| {
            let (key, v) = (key.clone(), v.clone());
            async move {
                c.put(key, v, Some(PutOptions::new().with_lease(lease)))
                    .await
            }
        })
        .map(drop)
    }

    fn set_state(&self, s: HaState) {
        let mut st = self.state.lock();
        if *st == HaState::Live {
            *st = s;
        }
    }
}

/// HA's runtime: the etcd client's connections live on it, and end with it.
fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("xapi-ha")
        .enable_all()
        .build()
        .map_err(|e| Error::Io("HA runtime".into(), e))
}

/// A client of `endpoints` whose requests give up after `timeout`.
fn connect(
    rt: &tokio::runtime::Runtime,
    endpoints: &[String],
    timeout: Duration,
) -> Result<Client, Error> {
    let eps = endpoints.to_vec();
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout);
    block_on(rt, timeout * 2, async move {
        Client::connect(eps, Some(opts)).await
    })
}

/// Runs `fut` on `rt`, giving up after `timeout`.
fn block_on<T>(
    rt: &tokio::runtime::Runtime,
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, Error> {
    rt.block_on(async {
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r.map_err(store),
            Err(_) => Err(store("etcd did not answer in time")),
        }
    })
}

/// Whole seconds from now until `deadline`, when at least one.
fn secs_until(deadline: Instant) -> Option<Duration> {
    let s = deadline.saturating_duration_since(Instant::now()).as_secs();
    (s >= 1).then(|| Duration::from_secs(s))
}

impl Ha {
    /// Starts HA on this host: takes a lease (or adopts the live one a previous xapi of this
    /// host left, with its watchdog), arms the watchdog, publishes the host and starts the
    /// renewal and recovery threads.
    pub fn start(cfg: HaConfig, endpoints: &[String], host: Arc<dyn HaHost>) -> Result<Ha, Error> {
        cfg.validate().map_err(Error::Store)?;
        let rt = runtime()?;
        let host_key = format!("{}/ha/host/{}", cfg.prefix, cfg.host);
        let timeout = cfg.renew.max(Duration::from_millis(500));
        let client = connect(&rt, endpoints, timeout)?;
        let xen = host.xen();
        // A previous xapi of this host may have left a live lease and an armed watchdog.
        let mut c = client.clone();
        let k = host_key.clone();
        let prev = block_on(&rt, timeout, async move { c.get(k, None).await })?;
        let mut adopted = None;
        let before = prev.header().map_or(0, |h| h.revision());
        let old_lease = prev
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice::<HostKey>(kv.value()).ok())
            .map(|k| k.lease);
        if let Some(kv) = prev.kvs().first() {
            if let Ok(old) = serde_json::from_slice::<HostKey>(kv.value()) {
                let t_send = Instant::now();
                let mut c = client.clone();
                let alive = block_on(&rt, timeout, async move {
                    let (mut k, mut s) = c.lease_keep_alive(old.lease).await?;
                    k.keep_alive().await?;
                    Ok(s.message().await?.map(|r| r.ttl()))
                });
                if let Ok(Some(ttl)) = alive {
                    let wd = WatchdogId(old.watchdog);
                    let d = t_send + Duration::from_secs(ttl.max(0) as u64) - cfg.margin;
                    let kicked_at = Instant::now();
                    if let Some(secs) = secs_until(d).filter(|_| ttl > 0) {
                        if xen.watchdog_kick(wd, secs).is_ok() {
                            adopted = Some((
                                old.lease,
                                Duration::from_secs(ttl as u64),
                                wd,
                                kicked_at + secs,
                            ));
                        }
                    }
                }
            }
        }
        if let Some(old) = old_lease.filter(|_| adopted.is_none()) {
            // The previous life's watchdog is gone, so are its domains: its lease (and the
            // ownership bound to it) goes now rather than at its expiry.
            let mut c = client.clone();
            let _ = block_on(&rt, timeout, async move { c.lease_revoke(old).await });
        }
        let reborn_before = adopted.is_none().then_some(before);
        let t_send = Instant::now();
        let wall_send = SystemTime::now();
        let (lease, ttl, watchdog, fence_at) =
            match adopted {
                Some(a) => a,
                None => {
                    let mut c = client.clone();
                    let secs = cfg.ttl.as_secs().max(1) as i64;
                    let g = block_on(&rt, timeout, async move { c.lease_grant(secs, None).await })?;
                    let ttl = Duration::from_secs(g.ttl().max(0) as u64).min(cfg.ttl);
                    let armed_at = Instant::now();
                    let arm = secs_until(t_send + ttl.saturating_sub(cfg.margin))
                        .ok_or_else(|| store("the lease came back too short to fence"))
                        .and_then(|s| {
                            xen.watchdog_arm(s)
                                .map(|wd| (wd, armed_at + s))
                                .map_err(store)
                        });
                    match arm {
                        Ok((wd, fence_at)) => (g.id(), ttl, wd, fence_at),
                        Err(e) => {
                            let mut c = client.clone();
                            let id = g.id();
                            let _ = block_on(&rt, timeout, async move {
                                c.lease_revoke(id).await.map(drop)
                            });
                            return Err(e);
                        }
                    }
                }
            };
        let shared = Arc::new(Shared {
            cfg,
            host,
            client,
            rt,
            lease,
            ttl,
            watchdog,
            state: Mutex::new(HaState::Live),
            stop: AtomicBool::new(false),
            hung: AtomicBool::new(false),
            dead: Mutex::new(HashMap::new()),
            restarted: Mutex::new(Vec::new()),
            fence_at: Mutex::new(fence_at),
            reborn_before,
        });
        let deadline = wall_ms(wall_send) + ms(ttl.saturating_sub(shared.cfg.margin));
        if let Err(e) = shared.publish(deadline, shared.op_timeout()) {
            let _ = shared.host.xen().watchdog_disarm(watchdog);
            return Err(e);
        }
        // Members that refuse connections leave the client's balancer until they answer.
        shared.rt.spawn(crate::db::etcd::follow_endpoints(
            shared.client.clone(),
            endpoints.to_vec(),
        ));
        spawn_watch(&shared);
        let threads = vec![
            spawn(&shared, "ha-renew", renew_loop)?,
            spawn(&shared, "ha-recover", recover_loop)?,
        ];
        tracing::info!(host = %shared.cfg.host, lease, %watchdog, adopted = adopted.is_some(), "HA started");
        Ok(Ha { shared, threads })
    }

    /// The lease this host holds.
    pub fn lease(&self) -> i64 {
        self.shared.lease
    }

    /// The dom0 watchdog HA kicks.
    pub fn watchdog(&self) -> WatchdogId {
        self.shared.watchdog
    }

    /// Where HA stands on this host.
    pub fn state(&self) -> HaState {
        *self.shared.state.lock()
    }

    /// The VMs this host restarted after another host failed, in order.
    pub fn restarted(&self) -> Vec<String> {
        self.shared.restarted.lock().clone()
    }

    /// Protects `vm`, which runs on this host (`VM.start` of a VM with a restart priority):
    /// it is owned through a key bound to this host's lease. Owned by another host: conflict.
    pub fn protect(&self, vm: &HaVm) -> Result<(), Error> {
        let s = &self.shared;
        let intent = serde_json::to_string(&Intent {
            vm: vm.clone(),
            host: s.cfg.host.clone(),
        })
        .map_err(store)?;
        let (owner, key) = (s.key("owner", &vm.vm), s.key("vm", &vm.vm));
        let me = s.cfg.host.clone();
        let lease = s.lease;
        let txn = |cmp: Compare| {
            Txn::new().when([cmp]).and_then([
                TxnOp::put(key.clone(), intent.clone(), None),
                TxnOp::put(
                    owner.clone(),
                    me.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
            ])
        };
        // Unowned, or else already this host's (a restart HA just claimed here): one round
        // trip, the second case as a transaction nested in the first one's else branch.
        let mine = txn(Compare::value(owner.clone(), CompareOp::Equal, me.clone()));
        let both =
            txn(Compare::version(owner.clone(), CompareOp::Equal, 0)).or_else([TxnOp::txn(mine)]);
        let ok = s.retry(s.op_timeout(), |mut c| {
            let both = both.clone();
            async move {
                let r = c.txn(both).await?;
                Ok(r.succeeded()
                    || r.op_responses()
                        .iter()
                        .any(|o| matches!(o, etcd_client::TxnOpResponse::Txn(t) if t.succeeded())))
            }
        })?;
        if ok {
            Ok(())
        } else {
            Err(Error::Conflict(format!("{}: owned by another host", vm.vm)))
        }
    }

    /// Ends the protection of `vm` on this host (a clean shutdown, or its restart priority
    /// cleared). Not owned by this host: conflict.
    pub fn unprotect(&self, vm: &str) -> Result<(), Error> {
        let s = &self.shared;
        let (owner, key) = (s.key("owner", vm), s.key("vm", vm));
        let txn = Txn::new()
            .when([Compare::value(
                owner.clone(),
                CompareOp::Equal,
                s.cfg.host.clone(),
            )])
            .and_then([TxnOp::delete(owner, None), TxnOp::delete(key, None)]);
        if s.retry(s.op_timeout(), |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })?
        .succeeded()
        {
            Ok(())
        } else {
            Err(Error::Conflict(format!("{vm}: not owned by this host")))
        }
    }

    /// Stops renewing, as a hung xapi would (for tests and fire drills): the watchdog is no
    /// longer kicked and fences the host before its lease expires.
    pub fn hang(&self) {
        self.shared.hung.store(true, Ordering::SeqCst);
    }

    /// Renews again after [`Ha::hang`]: if the watchdog fired meanwhile the host is
    /// [`HaState::Fenced`] and gives its lease up.
    pub fn resume(&self) {
        self.shared.hung.store(false, Ordering::SeqCst);
    }

    /// Stops HA on this host in order (`pool.disable_ha`, or the host leaving): drops the
    /// protection of the VMs it owns (their keys), revokes the lease and disarms the watchdog.
    /// Nothing is restarted elsewhere.
    pub fn stop(mut self) -> Result<(), Error> {
        self.end_threads();
        let s = &self.shared;
        let mut c = s.client.clone();
        let prefix = format!("{}/ha/owner/", s.cfg.prefix);
        let owned = s.run(s.op_timeout(), async move {
            c.get(prefix, Some(GetOptions::new().with_prefix())).await
        })?;
        for kv in owned.kvs() {
            if kv.value() == s.cfg.host.as_bytes() {
                if let Some(vm) = kv.key_str().ok().and_then(|k| k.rsplit('/').next()) {
                    self.unprotect(vm)?;
                }
            }
        }
        let mut c = s.client.clone();
        let lease = s.lease;
        s.run(s.op_timeout(), async move { c.lease_revoke(lease).await })?;
        s.host.xen().watchdog_disarm(s.watchdog).map_err(store)?;
        *s.state.lock() = HaState::Stopped;
        Ok(())
    }

    /// Removes every protection of the pool (`pool.disable_ha`, before each host's
    /// [`Ha::stop`]): no VM is an orphan any more, so none is restarted.
    pub fn disable_pool(endpoints: &[String], prefix: &str) -> Result<(), Error> {
        let rt = runtime()?;
        let timeout = Duration::from_secs(5);
        let mut c = connect(&rt, endpoints, timeout)?;
        let key = format!("{prefix}/ha/vm/");
        block_on(&rt, timeout, async move {
            c.delete(key, Some(etcd_client::DeleteOptions::new().with_prefix()))
                .await
        })
        .map(drop)
    }

    fn end_threads(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Ha {
    fn drop(&mut self) {
        self.end_threads();
    }
}

fn spawn(shared: &Arc<Shared>, name: &str, f: fn(&Shared)) -> Result<JoinHandle<()>, Error> {
    let s = shared.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || f(&s))
        .map_err(|e| Error::Io(name.into(), e))
}

/// Sleeps `d` in short steps; false once HA is stopping.
fn nap(s: &Shared, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if s.stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(
            until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(20)),
        );
    }
    !s.stop.load(Ordering::SeqCst)
}

/// How soon a renewal that failed is tried again (on a new keep-alive stream, which the
/// client may open on another etcd member).
const RETRY: Duration = Duration::from_millis(100);

/// How long one renewal attempt (keep-alive, then publishing the deadline) may take: a
/// sixth of the fence window, between 250 ms and 1 s, so that several attempts fit before
/// the watchdog fires.
fn attempt_timeout(cfg: &HaConfig) -> Duration {
    (cfg.ttl.saturating_sub(cfg.margin) / 6)
        .clamp(Duration::from_millis(250), Duration::from_secs(1))
}

/// What one renewal attempt learnt.
enum Renewal {
    /// etcd renewed the lease for this many seconds.
    Renewed(i64),
    /// etcd no longer knows the lease (it expired or was revoked).
    Gone,
    /// No answer in time, or a transport error: try again.
    Failed(String),
}

fn keep_alive_once(
    s: &Shared,
    stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    timeout: Duration,
) -> Renewal {
    let started = Instant::now();
    let mut ks = match stream.take() {
        Some(ks) => ks,
        None => {
            let mut c = s.client.clone();
            let lease = s.lease;
            let opened = s.rt.block_on(async move {
                tokio::time::timeout(timeout, c.lease_keep_alive(lease)).await
            });
            match opened {
                Ok(Ok(ks)) => ks,
                // etcd-client's answer when the first keep-alive comes back with no TTL.
                Ok(Err(etcd_client::Error::LeaseKeepAliveError(m))) if m.contains("not found") => {
                    return Renewal::Gone
                }
                Ok(Err(e)) => return Renewal::Failed(e.to_string()),
                Err(_) => return Renewal::Failed("keep-alive stream: no answer in time".into()),
            }
        }
    };
    let left = timeout.saturating_sub(started.elapsed());
    let answer = s.rt.block_on(async {
        tokio::time::timeout(left, async {
            ks.0.keep_alive().await?;
            ks.1.message().await
        })
        .await
    });
    match answer {
        Ok(Ok(Some(r))) if r.ttl() > 0 => {
            *stream = Some(ks);
            Renewal::Renewed(r.ttl())
        }
        Ok(Ok(Some(_))) => Renewal::Gone,
        Ok(Ok(None)) => Renewal::Failed("keep-alive stream ended".into()),
        Ok(Err(e)) => Renewal::Failed(e.to_string()),
        Err(_) => Renewal::Failed("keep-alive: no answer in time".into()),
    }
}

/// Renews the lease every `renew`; after each renewal publishes the new fence deadline and
/// then kicks the watchdog to fire by it. A renewal that fails is tried again at once on a
/// new stream, each attempt bounded by [`attempt_timeout`], until the watchdog's time is up:
/// then the host is fenced (its watchdog fired), as it is when etcd says the lease is gone.
fn renew_loop(s: &Shared) {
    let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let timeout = attempt_timeout(&s.cfg);
    let mut wait = s.cfg.renew;
    let mut failures = 0u32;
    while nap(s, wait) {
        wait = s.cfg.renew;
        if s.hung.load(Ordering::SeqCst) || *s.state.lock() != HaState::Live {
            continue;
        }
        if Instant::now() >= *s.fence_at.lock() {
            // No renewal reached etcd in time: the watchdog fired, the domains are gone.
            tracing::error!(host = %s.cfg.host, failures, "HA: no renewal within the fence window: fenced");
            s.set_state(HaState::Fenced);
            continue;
        }
        let t_send = Instant::now();
        let wall_send = SystemTime::now();
        let ttl = match keep_alive_once(s, &mut stream, timeout) {
            Renewal::Renewed(ttl) => ttl,
            Renewal::Gone => {
                tracing::error!(host = %s.cfg.host, "HA lease lost: the watchdog will fence this host");
                s.set_state(HaState::Fenced);
                continue;
            }
            Renewal::Failed(e) => {
                failures += 1;
                tracing::warn!(host = %s.cfg.host, failures, "HA renewal failed: {e}");
                stream = None;
                wait = RETRY;
                continue;
            }
        };
        let window = Duration::from_secs(ttl as u64)
            .min(s.ttl)
            .saturating_sub(s.cfg.margin);
        let left = timeout.saturating_sub(t_send.elapsed()).max(RETRY);
        let published = s.publish(wall_ms(wall_send) + ms(window), left);
        if let Err(e) = published {
            // The watchdog is not kicked past a deadline the others have not seen.
            failures += 1;
            tracing::warn!(host = %s.cfg.host, failures, "HA: publishing the fence deadline: {e}");
            wait = RETRY;
            continue;
        }
        let Some(secs) = secs_until(t_send + window) else {
            wait = RETRY;
            continue;
        };
        let kicked_at = Instant::now();
        if let Err(e) = s.host.xen().watchdog_kick(s.watchdog, secs) {
            // The watchdog is gone: the host was rebooted (fenced), its domains with it. The
            // lease goes now, so the others restart its VMs without waiting for it to expire.
            tracing::error!(host = %s.cfg.host, "HA watchdog lost ({e}): fenced");
            s.set_state(HaState::Fenced);
            let mut c = s.client.clone();
            let lease = s.lease;
            let _ = s.run(s.op_timeout(), async move { c.lease_revoke(lease).await });
            continue;
        }
        *s.fence_at.lock() = kicked_at + secs;
        if failures > 0 {
            tracing::info!(host = %s.cfg.host, failures, "HA renewal recovered");
            failures = 0;
        }
    }
}

/// Follows host keys' deletions to learn each lost host's last fence deadline.
fn spawn_watch(s: &Arc<Shared>) {
    let weak = Arc::downgrade(s);
    let mut c = s.client.clone();
    let key = s.key("host", "");
    s.rt.spawn(async move {
        // Reopened from the next revision whenever it breaks (an etcd member died): a
        // deletion missed would leave survivors a TTL longer on the lost host's VMs.
        let mut next_rev = 0i64;
        loop {
            let mut opts = WatchOptions::new().with_prefix().with_prev_key();
            if next_rev > 0 {
                opts = opts.with_start_revision(next_rev);
            }
            if let Ok((_w, mut stream)) = c.watch(key.clone(), Some(opts)).await {
                while let Ok(Some(resp)) = stream.message().await {
                    if resp.canceled() {
                        // Compacted past `next_rev`: from now on.
                        next_rev = 0;
                        break;
                    }
                    let Some(s) = weak.upgrade() else { return };
                    // A watch opened at "now" (revision R) delivers from R + 1.
                    if let (true, 0, Some(h)) = (resp.created(), next_rev, resp.header()) {
                        next_rev = h.revision() + 1;
                    }
                    for ev in resp.events() {
                        if let Some(kv) = ev.kv() {
                            next_rev = next_rev.max(kv.mod_revision() + 1);
                        }
                        if ev.event_type() != EventType::Delete {
                            continue;
                        }
                        let Some(prev) = ev.prev_kv() else { continue };
                        let deleted_at = ev.kv().map_or(0, |kv| kv.mod_revision());
                        let (Ok(k), Ok(hk)) = (
                            prev.key_str(),
                            serde_json::from_slice::<HostKey>(prev.value()),
                        ) else {
                            continue;
                        };
                        if let Some(h) = k.strip_prefix(&key) {
                            s.dead
                                .lock()
                                .insert(h.to_owned(), (hk.deadline_ms, deleted_at));
                        }
                    }
                }
            }
            if weak.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// One scan's view of the HA keys.
#[derive(Default)]
struct View {
    /// Live hosts.
    hosts: BTreeMap<String, HostKey>,
    /// Protected VMs with their `vm/` key's mod revision.
    intents: BTreeMap<String, (Intent, i64)>,
    /// Owned VMs.
    owners: BTreeMap<String, String>,
}

fn view(s: &Shared) -> Result<View, Error> {
    let prefix = format!("{}/ha/", s.cfg.prefix);
    let resp = s.retry(s.op_timeout(), |mut c| {
        let p = prefix.clone();
        async move { c.get(p, Some(GetOptions::new().with_prefix())).await }
    })?;
    let mut v = View::default();
    for kv in resp.kvs() {
        let Some(rest) = kv.key_str().ok().and_then(|k| k.strip_prefix(&prefix)) else {
            continue;
        };
        let Some((kind, name)) = rest.split_once('/') else {
            continue;
        };
        match kind {
            "host" => {
                if let Ok(h) = serde_json::from_slice(kv.value()) {
                    v.hosts.insert(name.to_owned(), h);
                }
            }
            "vm" => match serde_json::from_slice::<Intent>(kv.value()) {
                Ok(i) => {
                    v.intents.insert(name.to_owned(), (i, kv.mod_revision()));
                }
                Err(e) => tracing::warn!(vm = name, "HA: undecodable protection: {e}"),
            },
            "owner" => {
                v.owners.insert(
                    name.to_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                );
            }
            _ => {}
        }
    }
    Ok(v)
}

/// Looks for orphans every `scan` and takes over those this host may restart.
fn recover_loop(s: &Shared) {
    // When each orphan was first seen (for hosts whose last deadline is unknown).
    let mut first_seen: HashMap<String, Instant> = HashMap::new();
    // VMs whose restart failed here, not retried before this.
    let mut backoff: HashMap<String, Instant> = HashMap::new();
    while nap(s, s.cfg.scan) {
        if *s.state.lock() != HaState::Live || s.hung.load(Ordering::SeqCst) {
            continue;
        }
        let Ok(v) = view(s) else { continue };
        let mut orphans: Vec<&(Intent, i64)> = v
            .intents
            .iter()
            .filter(|(vm, _)| !v.owners.contains_key(*vm))
            .map(|(_, i)| i)
            .collect();
        first_seen.retain(|vm, _| orphans.iter().any(|(i, _)| &i.vm.vm == vm));
        orphans.sort_by(|a, b| {
            (a.0.vm.priority, a.0.vm.order, &a.0.vm.vm).cmp(&(
                b.0.vm.priority,
                b.0.vm.order,
                &b.0.vm.vm,
            ))
        });
        // One clock reading and one copy of the lost hosts' deadlines per scan, so every
        // orphan of one host becomes eligible in the same scan, in priority order.
        let now = Instant::now();
        let wall = wall_ms(SystemTime::now());
        let dead = s.dead.lock().clone();
        for (intent, rev) in orphans {
            let vm = &intent.vm;
            let seen = *first_seen.entry(vm.vm.clone()).or_insert(now);
            if backoff.get(&vm.vm).is_some_and(|t| now < *t) {
                continue;
            }
            // The last host must be fenced by now: its last published deadline (plus the
            // margin for clock skew) has passed, or, unknown, one TTL since first seen. A
            // deadline is that of the host's life that owned the VM only if its deletion
            // came after the VM's protection was written.
            let fenced = if intent.host == s.cfg.host
                && s.reborn_before.is_some_and(|before| *rev <= before)
            {
                true
            } else if v.hosts.contains_key(&intent.host) && intent.host != s.cfg.host {
                false
            } else if let Some((d, _)) = dead.get(&intent.host).filter(|(_, at)| at >= rev) {
                wall >= d + ms(s.cfg.margin)
            } else {
                now >= seen + s.ttl
            };
            if !fenced || vm.memory > s.host.free_memory() {
                continue;
            }
            if !claim(s, intent, *rev) {
                continue;
            }
            tracing::info!(host = %s.cfg.host, vm = %vm.vm, from = %intent.host, "HA: restarting");
            match s.host.restart(vm) {
                Ok(()) => s.restarted.lock().push(vm.vm.clone()),
                Err(e) => {
                    tracing::warn!(vm = %vm.vm, "HA restart failed here: {e}");
                    backoff.insert(vm.vm.clone(), Instant::now() + s.cfg.scan * 5);
                    release(s, &vm.vm);
                }
            }
        }
    }
}

/// Takes `intent`'s VM over in one transaction: its owner key must still be absent and its
/// protection unchanged since the scan.
fn claim(s: &Shared, intent: &Intent, rev: i64) -> bool {
    let vm = &intent.vm.vm;
    let (owner, key) = (s.key("owner", vm), s.key("vm", vm));
    let Ok(value) = serde_json::to_string(&Intent {
        vm: intent.vm.clone(),
        host: s.cfg.host.clone(),
    }) else {
        return false;
    };
    let txn = Txn::new()
        .when([
            Compare::version(owner.clone(), CompareOp::Equal, 0),
            Compare::mod_revision(key.clone(), CompareOp::Equal, rev),
        ])
        .and_then([
            TxnOp::put(
                owner,
                s.cfg.host.clone(),
                Some(PutOptions::new().with_lease(s.lease)),
            ),
            TxnOp::put(key, value, None),
        ]);
    s.retry(s.op_timeout(), |mut c| {
        let txn = txn.clone();
        async move { c.txn(txn).await }
    })
    .is_ok_and(|r| r.succeeded())
}

/// Gives a VM this host could not restart back to the pool.
fn release(s: &Shared, vm: &str) {
    let owner = s.key("owner", vm);
    let txn = Txn::new()
        .when([Compare::value(
            owner.clone(),
            CompareOp::Equal,
            s.cfg.host.clone(),
        )])
        .and_then([TxnOp::delete(owner, None)]);
    let _ = s.retry(s.op_timeout(), |mut c| {
        let txn = txn.clone();
        async move { c.txn(txn).await }
    });
}
