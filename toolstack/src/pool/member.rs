//! A host's membership of a pool kept in etcd: its database opened on the pool's store, its
//! liveness key, the master election (etcd's election API: campaign, leader, resign), the
//! master's liveness sweep, and the clients that forward calls to the other hosts.
//!
//! Keys under `/xapi/<pool>/`: `objects/` (the database, [`crate::db::etcd`]),
//! `election` (the election's name; each candidate's key is bound to its lease, the value
//! is its host reference), `alive/<host ref>` (bound to the host's liveness lease),
//! `designated` (the host `pool.designate_new_master` named; others stay out of the
//! election until it leads).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions, PutOptions};
use parking_lot::Mutex;

use super::{EtcdSettings, Role};
use crate::api::Xapi;
use crate::client::{self, Endpoint, TlsVerify};
use crate::datamodel;
use crate::db::{Db, Read};
use crate::value::Value;
use crate::Error;

/// The TTL of a host's election and liveness leases, seconds: a dead master is replaced
/// within about this long.
pub const ELECTION_TTL: i64 = 2;

/// Classes that never move between stores (they belong to one xapi's run).
const TRANSIENT: [&str; 2] = ["session", "task"];

/// Where the HA engine plugs in: called by the pool's membership as roles and liveness
/// change.
pub trait PoolHooks: Send + Sync {
    /// This host became the pool's master.
    fn became_master(&self, _xapi: &Arc<Xapi>) {}
    /// The master saw `host`'s liveness key expire.
    fn host_died(&self, _xapi: &Arc<Xapi>, _host: &str) {}
    /// The master saw `host` come back.
    fn host_back(&self, _xapi: &Arc<Xapi>, _host: &str) {}
}

fn store_err(e: etcd_client::Error) -> Error {
    Error::Store(e.to_string())
}

/// Opens the pool's database for the host whose local database is `local` (its host is
/// `local_host`): the host's reference in the pool. A pool with no host yet is made from
/// the local database (every object moves, with its reference); a pool that does not hold
/// this host is refused (join it first).
pub fn open_pool_db(
    local: &Db,
    local_host: &str,
    settings: &EtcdSettings,
) -> Result<(Db, String), Error> {
    let db = Db::open_etcd(&settings.endpoints, &settings.pool)?;
    let uuid = local.read(|v| v.str_field(local_host, "uuid"));
    if let Some(r) = db.read(|v| v.by_uuid(&uuid).cloned()) {
        if db.read(|v| v.class_of(&r)) == Some("host") {
            return Ok((db, r));
        }
    }
    if db.read(|v| v.count("host")) > 0 {
        return Err(Error::Store(format!(
            "pool {:?} does not hold this host ({uuid}): join it with pool.join",
            settings.pool
        )));
    }
    let rows: Vec<_> = local.read(|v| v.dump());
    copy_rows(
        &db,
        rows.into_iter().filter(|(_, c, _)| !TRANSIENT.contains(c)),
    )?;
    Ok((db, local_host.to_owned()))
}

/// Writes objects with their references, in writes of at most 100 (etcd's transaction
/// size limit is 128 operations by default).
pub(crate) fn copy_rows(
    db: &Db,
    rows: impl Iterator<Item = (String, &'static str, crate::db::Record)>,
) -> Result<(), Error> {
    let rows: Vec<_> = rows.collect();
    for chunk in rows.chunks(100) {
        db.write(|tx| {
            for (r, class, rec) in chunk {
                let cls = datamodel::class(class)
                    .ok_or_else(|| Error::Corrupt(format!("{r}: unknown class {class}")))?;
                tx.insert(r, cls, rec.clone());
            }
            Ok::<_, Error>(())
        })?;
    }
    Ok(())
}

/// How to reach another host's xapi.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub address: String,
    pub port: u16,
    pub fingerprint: Option<String>,
}

/// This host's membership of its pool.
pub struct Member {
    rt: tokio::runtime::Runtime,
    client: Client,
    settings: EtcdSettings,
    prefix: String,
    host: String,
    state_dir: PathBuf,
    xapi: Weak<Xapi>,
    is_master: AtomicBool,
    /// The elected master's host reference ("" until known).
    master: Mutex<String>,
    /// Hosts whose liveness key exists (the master's sweep).
    live: Mutex<HashSet<String>>,
    hooks: Mutex<Vec<Arc<dyn PoolHooks>>>,
    /// Idle forwarding clients per host.
    clients: Mutex<HashMap<String, Vec<client::Client>>>,
    stop: AtomicBool,
    /// Milliseconds this host waited in its last successful campaign.
    pub last_campaign_ms: AtomicU64,
    /// When the election lease was last refreshed, milliseconds since `epoch`.
    refreshed_ms: Arc<AtomicU64>,
    epoch: Instant,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("pool", &self.settings.pool)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Member {
    /// Joins the election and keeps this host's liveness key for `xapi` (whose database is
    /// the pool's). `https` is where this host's xapi serves HTTPS and `fingerprint` its
    /// certificate's SHA-256 fingerprint: both are registered so the others can forward
    /// calls here and check they reach this host.
    pub fn start(
        xapi: &Arc<Xapi>,
        settings: EtcdSettings,
        state_dir: &Path,
        https: Option<std::net::SocketAddr>,
        fingerprint: Option<String>,
    ) -> Result<Arc<Member>, Error> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("xapi-pool")
            .enable_all()
            .build()
            .map_err(|e| Error::Io("pool runtime".into(), e))?;
        let eps = settings.endpoints.clone();
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(5));
        // Connected on the membership's runtime (the caller may be on another runtime).
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(Client::connect(eps, Some(opts)).await);
        });
        let connected = rx
            .recv()
            .map_err(|_| Error::Store("the pool's etcd client stopped".into()))
            .and_then(|r| r.map_err(store_err))
            .and_then(|c| register(xapi, &settings, https, fingerprint).map(|_| c));
        let client = match connected {
            Ok(c) => c,
            Err(e) => {
                // Dropped without blocking: the caller may be on a runtime.
                rt.shutdown_background();
                return Err(e);
            }
        };
        rt.spawn(crate::db::etcd::follow_endpoints(
            client.clone(),
            settings.endpoints.clone(),
        ));
        let host = xapi.host_ref().to_owned();
        let m = Arc::new(Member {
            prefix: format!("/xapi/{}/", settings.pool),
            rt,
            client,
            settings,
            host,
            state_dir: state_dir.to_owned(),
            xapi: Arc::downgrade(xapi),
            is_master: AtomicBool::new(false),
            master: Mutex::new(String::new()),
            live: Mutex::new(HashSet::new()),
            hooks: Mutex::new(Vec::new()),
            clients: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
            last_campaign_ms: AtomicU64::new(0),
            refreshed_ms: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
        });
        m.rt.spawn(Arc::clone(&m).alive_loop());
        m.rt.spawn(Arc::clone(&m).election_loop());
        m.rt.spawn(Arc::clone(&m).follow_loop());
        Ok(m)
    }

    /// Adds a hook (the HA engine's) called as roles and liveness change.
    pub fn add_hook(&self, h: Arc<dyn PoolHooks>) {
        self.hooks.lock().push(h);
    }

    /// The pool's etcd settings.
    pub fn settings(&self) -> &EtcdSettings {
        &self.settings
    }

    /// The etcd client (shared with hooks that keep their own keys under [`Member::prefix`]).
    pub fn etcd(&self) -> Client {
        self.client.clone()
    }

    /// The pool's key prefix, `/xapi/<pool>/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether this host is the elected master now.
    /// A master whose lease was not refreshed for 60% of its TTL (it was stopped, or lost
    /// etcd) stops acting as master at once, before another can be elected.
    pub fn is_master(&self) -> bool {
        let fresh = self.epoch.elapsed().as_millis() as u64
            - self.refreshed_ms.load(Ordering::Acquire)
            < ELECTION_TTL as u64 * 600;
        self.is_master.load(Ordering::Acquire) && fresh
    }

    /// The elected master's host reference, once known.
    pub fn master(&self) -> Option<String> {
        Some(self.master.lock().clone()).filter(|m| !m.is_empty())
    }

    /// Whether `host` holds its liveness key (this host always does). A host the last
    /// sweep did not see is asked of etcd (it may have started since).
    pub fn is_live(&self, host: &str) -> bool {
        if host == self.host || self.live.lock().contains(host) {
            return true;
        }
        let mut c = self.client.clone();
        let key = self.key(&format!("alive/{host}"));
        self.run(async move { c.get(key, None).await })
            .ok()
            .and_then(Result::ok)
            .is_some_and(|r| !r.kvs().is_empty())
    }

    /// Stops taking part (the host leaves the pool or exits): resigns, ends the leases.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        self.is_master.store(false, Ordering::Release);
    }

    /// Runs `fut` on the membership's runtime and waits for it.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| Error::Store("the pool's etcd client stopped".into()))
    }

    fn key(&self, k: &str) -> String {
        format!("{}{k}", self.prefix)
    }

    /// Names `host` the next master: the others leave the election until it leads.
    pub(crate) fn designate(&self, host: &str) -> Result<(), Error> {
        let mut c = self.client.clone();
        let (k, v) = (self.key("designated"), host.to_owned());
        self.run(async move { c.put(k, v, None).await })?
            .map_err(store_err)?;
        Ok(())
    }

    /// How to reach `host`'s xapi, from its record and certificate.
    pub(crate) fn peer(&self, xapi: &Xapi, host: &str) -> Option<Peer> {
        xapi.db().read(|v| {
            let address = v.str_field(host, "address");
            let port = v
                .field(host, "other_config")
                .and_then(Value::as_struct)
                .and_then(|m| m.get(PORT_KEY))
                .and_then(Value::as_str)
                .and_then(|p| p.parse().ok())
                .unwrap_or(443);
            let fingerprint = v
                .field(host, "other_config")
                .and_then(Value::as_struct)
                .and_then(|m| m.get(FINGERPRINT_KEY))
                .and_then(Value::as_str)
                .map(str::to_owned);
            (!address.is_empty()).then_some(Peer {
                address,
                port,
                fingerprint,
            })
        })
    }

    /// Calls `method` on `host`'s xapi over HTTPS (its registered certificate pinned);
    /// `CANNOT_CONTACT_HOST` when it cannot be reached.
    pub(crate) fn forward(
        &self,
        xapi: &Xapi,
        host: &str,
        method: &str,
        params: &[Value],
    ) -> Result<Value, crate::error::ApiError> {
        use crate::error::ApiError;
        let unreachable = || ApiError::new("CANNOT_CONTACT_HOST", [host]);
        let peer = self.peer(xapi, host).ok_or_else(unreachable)?;
        let fresh = || {
            let verify = match &peer.fingerprint {
                Some(f) => TlsVerify::fingerprint(f).map_err(|_| unreachable())?,
                None => return Err(unreachable()),
            };
            Ok(client::Client::with_tls(
                Endpoint::Tls(peer.address.clone(), peer.port),
                verify,
            ))
        };
        let idle = self.clients.lock().get_mut(host).and_then(Vec::pop);
        let mut c = match idle {
            Some(mut c) => match c.call_raw(method, params) {
                // An idle connection to a peer that restarted since: once more, afresh.
                Err(e) if !matches!(e, Error::Api(_)) => fresh()?,
                r => return self.keep(host, c, r, method),
            },
            None => fresh()?,
        };
        let r = c.call_raw(method, params);
        self.keep(host, c, r, method)
    }

    /// Keeps a forwarding client that answered for the next call to `host`.
    fn keep(
        &self,
        host: &str,
        c: client::Client,
        r: Result<Value, Error>,
        method: &str,
    ) -> Result<Value, crate::error::ApiError> {
        use crate::error::ApiError;
        let unreachable = || ApiError::new("CANNOT_CONTACT_HOST", [host]);
        match r {
            Ok(v) => {
                self.clients
                    .lock()
                    .entry(host.to_owned())
                    .or_default()
                    .push(c);
                Ok(v)
            }
            Err(Error::Api(e)) => {
                self.clients
                    .lock()
                    .entry(host.to_owned())
                    .or_default()
                    .push(c);
                Err(e)
            }
            Err(e) => {
                tracing::warn!(host, method, %e, "forwarding failed");
                Err(unreachable())
            }
        }
    }

    /// Keeps `alive/<host>` bound to a lease of [`ELECTION_TTL`] seconds.
    async fn alive_loop(self: Arc<Self>) {
        let key = self.key(&format!("alive/{}", self.host));
        while !self.stop.load(Ordering::Acquire) {
            let mut c = self.client.clone();
            let lease = match c.lease_grant(ELECTION_TTL, None).await {
                Ok(l) => l.id(),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
            };
            let put = c
                .put(
                    key.clone(),
                    self.host.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )
                .await;
            if put.is_ok() {
                keep_alive(&mut c, lease, &self.stop, None).await;
            }
            let _ = c.lease_revoke(lease).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.client.clone().delete(key, None).await;
    }

    /// Campaigns for mastership; leads until the lease is lost, another host is designated
    /// or the host stops, then campaigns again.
    async fn election_loop(self: Arc<Self>) {
        let name = self.key("election");
        while !self.stop.load(Ordering::Acquire) {
            let mut c = self.client.clone();
            if let Some(d) = self.designated(&mut c).await {
                if d != self.host && self.designee_live(&mut c, &d).await {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
            let lease = match c.lease_grant(ELECTION_TTL, None).await {
                Ok(l) => l.id(),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
            };
            let (lost_tx, mut lost_rx) = tokio::sync::oneshot::channel::<()>();
            let ka = {
                let mut c = c.clone();
                let me = Arc::clone(&self);
                tokio::spawn(async move {
                    let fresh = (Arc::clone(&me.refreshed_ms), me.epoch);
                    keep_alive(&mut c, lease, &me.stop, Some(fresh)).await;
                    let _ = lost_tx.send(());
                })
            };
            let began = Instant::now();
            let mut camp_c = c.clone();
            let campaign = camp_c.campaign(name.clone(), self.host.clone(), lease);
            tokio::pin!(campaign);
            let won = tokio::select! {
                r = &mut campaign => r.ok().and_then(|mut r| r.take_leader()),
                _ = &mut lost_rx => None,
                _ = self.other_designated() => None,
            };
            // A designation made while this host waited in the queue wins over the queue.
            let won = match won {
                Some(l) => match self.designated(&mut c).await {
                    Some(d) if d != self.host && self.designee_live(&mut c, &d).await => {
                        let _ = c
                            .resign(Some(etcd_client::ResignOptions::new().with_leader(l)))
                            .await;
                        None
                    }
                    _ => Some(l),
                },
                None => None,
            };
            if let Some(leader) = won {
                self.last_campaign_ms
                    .store(began.elapsed().as_millis() as u64, Ordering::Relaxed);
                self.became_master().await;
                tokio::select! {
                    _ = &mut lost_rx => {}
                    _ = self.other_designated() => {}
                    _ = self.stopped() => {}
                }
                self.is_master.store(false, Ordering::Release);
                tracing::info!("no longer the pool's master");
                let _ = c
                    .resign(Some(etcd_client::ResignOptions::new().with_leader(leader)))
                    .await;
            }
            ka.abort();
            let _ = c.lease_revoke(lease).await;
        }
    }

    async fn stopped(&self) {
        while !self.stop.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn designated(&self, c: &mut Client) -> Option<String> {
        let r = c.get(self.key("designated"), None).await.ok()?;
        r.kvs()
            .first()
            .and_then(|kv| kv.value_str().ok().map(str::to_owned))
    }

    async fn designee_live(&self, c: &mut Client, host: &str) -> bool {
        c.get(self.key(&format!("alive/{host}")), None)
            .await
            .is_ok_and(|r| !r.kvs().is_empty())
    }

    /// Returns once another live host is designated master.
    async fn other_designated(&self) {
        let mut c = self.client.clone();
        loop {
            if let Some(d) = self.designated(&mut c).await {
                if d != self.host && self.designee_live(&mut c, &d).await {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    async fn became_master(self: &Arc<Self>) {
        self.is_master.store(true, Ordering::Release);
        *self.master.lock() = self.host.clone();
        tracing::info!(host = self.host, "elected the pool's master");
        let mut c = self.client.clone();
        if self.designated(&mut c).await.as_deref() == Some(self.host.as_str()) {
            let _ = c.delete(self.key("designated"), None).await;
        }
        let me = Arc::clone(self);
        let _ = tokio::task::spawn_blocking(move || {
            let Some(x) = me.xapi.upgrade() else { return };
            // The pool's master field follows the election (retried over write conflicts).
            for _ in 0..20 {
                let r = x.db().write(|tx| {
                    for p in tx.all("pool") {
                        if tx.str_field(&p, "master") != me.host {
                            tx.set(&p, "master", Value::str(me.host.clone()));
                        }
                    }
                    Ok::<_, Error>(())
                });
                if r.is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            me.write_role();
            for h in me.hooks.lock().clone() {
                h.became_master(&x);
            }
        })
        .await;
    }

    /// Follows the elected leader (pool.conf of a slave names it) and, on the master,
    /// sweeps liveness into `host_metrics.live`.
    async fn follow_loop(self: Arc<Self>) {
        let name = self.key("election");
        let alive = self.key("alive/");
        let mut c = self.client.clone();
        while !self.stop.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if let Ok(r) = c.leader(name.clone()).await {
                let leader = r
                    .kv()
                    .and_then(|kv| kv.value_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                if !leader.is_empty() {
                    *self.master.lock() = leader;
                }
            }
            self.write_role();
            let Ok(r) = c
                .get(alive.clone(), Some(GetOptions::new().with_prefix()))
                .await
            else {
                continue;
            };
            let now: HashSet<String> = r
                .kvs()
                .iter()
                .filter_map(|kv| kv.value_str().ok().map(str::to_owned))
                .collect();
            let before = std::mem::replace(&mut *self.live.lock(), now.clone());
            if self.is_master() {
                let me = Arc::clone(&self);
                let _ = tokio::task::spawn_blocking(move || me.sweep(&before, &now)).await;
            }
        }
    }

    /// Brings `pool.conf` in line with the election: `master` while this host leads,
    /// else `slave:<the leader's address>` (written only when it changes).
    fn write_role(&self) {
        if self.stop.load(Ordering::Acquire) {
            // Leaving the pool: pool.join or pool.eject writes the role.
            return;
        }
        let role = if self.is_master() {
            Role::Master
        } else {
            let Some(x) = self.xapi.upgrade() else { return };
            let Some(p) = self.master().and_then(|m| self.peer(&x, &m)) else {
                return;
            };
            if self.master().as_deref() == Some(self.host.as_str()) {
                return;
            }
            Role::Slave(p.display())
        };
        if Role::read(&self.state_dir).ok().as_ref() != Some(&role) {
            if let Err(e) = role.write(&self.state_dir) {
                tracing::error!(%e, "writing pool.conf");
            }
        }
    }

    /// The master's sweep: `host_metrics.live` of every host from the liveness keys; hooks
    /// hear of deaths and returns.
    fn sweep(&self, before: &HashSet<String>, now: &HashSet<String>) {
        let Some(x) = self.xapi.upgrade() else { return };
        let _ = x.db().write(|tx| {
            for h in tx.all("host") {
                let live = h == self.host || now.contains(&h);
                let m = tx.str_field(&h, "metrics");
                if tx.class_of(&m) == Some("host_metrics")
                    && tx.field(&m, "live").and_then(Value::as_bool) != Some(live)
                {
                    tx.set(&m, "live", Value::Bool(live));
                }
            }
            Ok::<_, Error>(())
        });
        let hooks = self.hooks.lock().clone();
        for h in before.difference(now) {
            for k in &hooks {
                k.host_died(&x, h);
            }
        }
        for h in now.difference(before) {
            for k in &hooks {
                k.host_back(&x, h);
            }
        }
    }
}

impl Peer {
    /// `address` or `address:port` when the port is not 443 (as `HOST_IS_SLAVE` names it).
    pub(crate) fn display(&self) -> String {
        if self.port == 443 {
            self.address.clone()
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }
}

/// `host.other_config` key holding the port of a host's HTTPS listener.
pub(crate) const PORT_KEY: &str = "xen-rs:https-port";

/// `host.other_config` key holding the SHA-256 fingerprint of a host's TLS certificate (the
/// datamodel here has no `Certificate` objects yet): forwarded calls pin it.
pub(crate) const FINGERPRINT_KEY: &str = "xen-rs:tls-fingerprint";

/// Keeps `lease` alive until a refresh fails or the lease expired (or `stop` is set).
/// `refreshed` records when each refresh succeeded (milliseconds since its instant).
async fn keep_alive(
    c: &mut Client,
    lease: i64,
    stop: &AtomicBool,
    refreshed: Option<(Arc<AtomicU64>, Instant)>,
) {
    let Ok((mut keeper, mut stream)) = c.lease_keep_alive(lease).await else {
        return;
    };
    let period = Duration::from_millis((ELECTION_TTL as u64 * 1000) / 5);
    while !stop.load(Ordering::Acquire) {
        let ok = tokio::time::timeout(period, async {
            keeper.keep_alive().await.ok()?;
            stream.message().await.ok()?.filter(|r| r.ttl() > 0)
        })
        .await;
        if !matches!(ok, Ok(Some(_))) {
            return;
        }
        if let Some((at, epoch)) = &refreshed {
            at.store(epoch.elapsed().as_millis() as u64, Ordering::Release);
        }
        tokio::time::sleep(period).await;
    }
}

/// Records where this host serves HTTPS and its certificate, and the pool's etcd settings
/// in the pool record (a joining host reads them there).
fn register(
    xapi: &Xapi,
    settings: &EtcdSettings,
    https: Option<std::net::SocketAddr>,
    fingerprint: Option<String>,
) -> Result<(), Error> {
    let host = xapi.host_ref().to_owned();
    xapi.db().write(|tx| {
        if let Some(a) = https {
            tx.set(&host, "address", Value::str(a.ip().to_string()));
            tx.map_set(
                &host,
                "other_config",
                PORT_KEY,
                Some(Value::str(a.port().to_string())),
            );
        }
        if let Some(fp) = &fingerprint {
            tx.map_set(
                &host,
                "other_config",
                FINGERPRINT_KEY,
                Some(Value::str(fp.clone())),
            );
        }
        for p in tx.all("pool") {
            tx.map_set(
                &p,
                "other_config",
                "xen-rs:etcd-endpoints",
                Some(Value::str(settings.endpoints.join(","))),
            );
            tx.map_set(
                &p,
                "other_config",
                "xen-rs:etcd-pool",
                Some(Value::str(settings.pool.clone())),
            );
        }
        Ok::<_, Error>(())
    })
}
