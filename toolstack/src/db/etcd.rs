//! The pool store: the database kept in etcd, shared by every xapi of a pool.
//!
//! Each object is one key, `/xapi/<pool>/objects/<ref>`, holding `{"class", "record"}` as
//! JSON. A write is one etcd transaction that compares each touched key's `mod_revision`
//! with the one this xapi's tables hold (a created key must not exist yet), so two xapi
//! writing one object never lose an update: the later one fails with [`Error::Conflict`]
//! and changes nothing. Generations are etcd revisions: an object's generation is its
//! `mod_revision`, its creation generation its `create_revision`, and an `event.from` token
//! is the revision the tables are complete up to. A watch on the prefix applies the other
//! writers' changes to the tables in revision order, so `event.from` on every xapi of the
//! pool sees every change.
//!
//! A watch that fails (its etcd member died) is opened again on another member from the
//! next revision the tables need; only a compaction past it stops this xapi following the
//! pool. The membership keys (election, liveness) live beside `objects/` under the same
//! `/xapi/<pool>/` prefix ([`crate::pool`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Txn, TxnOp, WatchOptions,
};
use parking_lot::Mutex;

use super::{decode_json, Backend, Commit, Db, Inner, Loaded, Record, Shared, StoredRow};
use crate::datamodel::Class;
use crate::Error;

/// How long a write waits for the watch to deliver the revisions before its own.
const CATCH_UP: Duration = Duration::from_secs(10);

/// Another writer's change, as the watch delivers it.
struct Remote {
    rev: u64,
    created: u64,
    r: String,
    /// The record after the change; `None` for a deletion.
    rec: Option<(&'static str, Record)>,
}

pub(crate) struct Etcd {
    rt: Option<tokio::runtime::Runtime>,
    client: Client,
    prefix: String,
    /// The watch's changes, in revision order. Received only with the tables' write lock held.
    events: Arc<Mutex<Receiver<Remote>>>,
    /// Set when the watch ended: the tables no longer follow the pool, so writes are refused.
    lost: Arc<AtomicBool>,
}

fn store_err(e: etcd_client::Error) -> Error {
    Error::Store(e.to_string())
}

fn value_of(class: &str, rec: &Record) -> String {
    serde_json::json!({
        "class": class,
        "record": crate::value::Value::Struct(rec.clone()).to_json(),
    })
    .to_string()
}

/// Decodes one key's value: the class and the record JSON.
fn parse_value(r: &str, v: &[u8]) -> Result<(String, serde_json::Value), Error> {
    let mut j: serde_json::Value =
        serde_json::from_slice(v).map_err(|e| Error::Corrupt(format!("{r}: {e}")))?;
    let class = j["class"]
        .as_str()
        .ok_or_else(|| Error::Corrupt(format!("{r}: no class")))?
        .to_owned();
    Ok((class, j["record"].take()))
}

/// Keeps `client`'s balancer on the endpoints that accept connections: one that refuses is
/// taken out and put back once it answers again (etcd-client's balancer otherwise keeps
/// failing requests on a dead member, etcdv3/etcd-client#39).
pub(crate) async fn follow_endpoints(client: Client, endpoints: Vec<String>) {
    let mut out: std::collections::HashSet<String> = Default::default();
    // Probes in a row that found each endpoint down: a refused connection counts at once, a
    // probe that timed out (a loaded host answers late) only the second time in a row.
    let mut misses: std::collections::HashMap<String, u32> = Default::default();
    loop {
        for e in &endpoints {
            let addr = e
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/')
                .to_owned();
            let probe = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(addr),
            )
            .await;
            let miss = misses.entry(e.clone()).or_default();
            let up = match probe {
                Ok(Ok(_)) => {
                    *miss = 0;
                    true
                }
                Ok(Err(_)) => {
                    *miss = 2;
                    false
                }
                Err(_) => {
                    *miss += 1;
                    *miss < 2
                }
            };
            if !up && endpoints.len() - out.len() > 1 && out.insert(e.clone()) {
                tracing::warn!(
                    endpoint = e,
                    "etcd member unreachable: not used until it answers"
                );
                let _ = client.remove_endpoint(e).await;
            } else if up && out.remove(e) {
                tracing::info!(endpoint = e, "etcd member answers again");
                let _ = client.add_endpoint(e).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether an etcd error is a transport failure (the request never reached a member).
pub(crate) fn unreachable(e: &etcd_client::Error) -> bool {
    /// gRPC's `UNAVAILABLE` status code.
    const UNAVAILABLE: i32 = 14;
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() as i32 == UNAVAILABLE)
        || matches!(e, etcd_client::Error::TransportError(_))
}

impl Etcd {
    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt
            .as_ref()
            .expect("the runtime lives as long as the store")
    }

    /// Runs `fut` on the store's runtime and waits for it (callable from any thread,
    /// including a runtime's).
    fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.rt().spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| Error::Store("the etcd client stopped".into()))
    }

    fn key(&self, r: &str) -> String {
        format!("{}{r}", self.prefix)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Ends the watch (and with it the thread that applies it) without blocking.
            rt.shutdown_background();
        }
    }
}

impl Backend for Etcd {
    fn stores(&self, _class: &Class) -> bool {
        // Every class: sessions and tasks are the pool's too.
        true
    }

    fn commit(&self, c: &Commit<'_>) -> Result<u64, Error> {
        if self.lost.load(Ordering::Acquire) {
            return Err(Error::Store(
                "the etcd watch ended: this xapi no longer follows the pool; restart it".into(),
            ));
        }
        let mut cmps = Vec::new();
        let mut ops = Vec::new();
        for p in &c.puts {
            let key = self.key(p.r);
            cmps.push(match p.prev_gen {
                None => Compare::version(key.clone(), CompareOp::Equal, 0),
                Some(g) => Compare::mod_revision(key.clone(), CompareOp::Equal, g as i64),
            });
            ops.push(TxnOp::put(key, value_of(p.class, p.rec), None));
        }
        for d in &c.dels {
            let key = self.key(d.r);
            cmps.push(Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                d.prev_gen as i64,
            ));
            ops.push(TxnOp::delete(key, None));
        }
        let touched: Vec<&str> = c
            .puts
            .iter()
            .map(|p| p.r)
            .chain(c.dels.iter().map(|d| d.r))
            .collect();
        let client = self.client.clone();
        let txn = Txn::new().when(cmps).and_then(ops);
        // A member that cannot be reached is retried on the others (the request never
        // left: no double application).
        let resp = self
            .run(async move {
                let mut tries = 0;
                loop {
                    match client.clone().txn(txn.clone()).await {
                        Err(e) if unreachable(&e) && tries < 8 => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(150)).await;
                        }
                        r => return r,
                    }
                }
            })?
            .map_err(store_err)?;
        if !resp.succeeded() {
            let mut list = touched
                .iter()
                .take(3)
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            if touched.len() > 3 {
                list.push_str(&format!(" (of {})", touched.len()));
            }
            return Err(Error::Conflict(list));
        }
        resp.header()
            .map(|h| h.revision() as u64)
            .ok_or_else(|| Error::Store("transaction answer without a revision".into()))
    }

    fn catch_up(&self, inner: &mut Inner, gen: u64) {
        let rx = self.events.lock();
        let deadline = Instant::now() + CATCH_UP;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(ev) if ev.rev == gen => return,
                Ok(ev) => {
                    let done = ev.rev > gen;
                    inner.apply_remote(&ev.r, ev.rec, ev.rev, ev.created);
                    if done {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    tracing::warn!(gen, "etcd watch did not deliver this write's revision");
                    return;
                }
            }
        }
    }
}

/// Turns one watch answer into changes; undecodable ones are logged and skipped.
fn remotes(prefix: &str, resp: &etcd_client::WatchResponse) -> Vec<Remote> {
    let mut out = Vec::new();
    for ev in resp.events() {
        let Some(kv) = ev.kv() else { continue };
        let Some(r) = kv.key_str().ok().and_then(|k| k.strip_prefix(prefix)) else {
            continue;
        };
        let rec = match ev.event_type() {
            EventType::Delete => None,
            EventType::Put => {
                match parse_value(r, kv.value()).and_then(|(class, j)| decode_json(r, &class, &j)) {
                    Ok((cls, rec)) => Some((cls.name, rec)),
                    Err(e) => {
                        tracing::error!(%e, "skipping an undecodable object from etcd");
                        continue;
                    }
                }
            }
        };
        out.push(Remote {
            rev: kv.mod_revision() as u64,
            created: kv.create_revision() as u64,
            r: r.to_owned(),
            rec,
        });
    }
    out
}

/// Applies what the watch delivered, each time it wakes it.
fn apply_loop(shared: Arc<Shared>, events: Arc<Mutex<Receiver<Remote>>>, wake: Receiver<()>) {
    while wake.recv().is_ok() {
        let mut inner = shared.inner.write();
        let before = inner.gen;
        let rx = events.lock();
        loop {
            match rx.try_recv() {
                Ok(ev) => inner.apply_remote(&ev.r, ev.rec, ev.rev, ev.created),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        drop(rx);
        let gen = inner.gen;
        drop(inner);
        if gen != before {
            shared.notify(gen);
        }
    }
}

/// The store's runtime until the store holds it: a failed open drops it without blocking
/// (the caller may be on another runtime, where a blocking drop panics).
struct RuntimeGuard(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for RuntimeGuard {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &tokio::runtime::Runtime {
        self.0
            .as_ref()
            .expect("the runtime is held until the store takes it")
    }
}

impl Drop for RuntimeGuard {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Db {
    /// Opens the database of pool `pool` kept in etcd at `endpoints` (`http://host:port`),
    /// loads every object and follows the other writers' changes.
    pub fn open_etcd(endpoints: &[String], pool: &str) -> Result<Db, Error> {
        if pool.is_empty() || pool.contains('/') {
            return Err(Error::Store(format!("bad pool name {pool:?}")));
        }
        let mut rt = RuntimeGuard(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("xapi-etcd")
                .enable_all()
                .build()
                .map_err(|e| Error::Io("etcd runtime".into(), e))?,
        ));
        let prefix = format!("/xapi/{pool}/objects/");
        let eps = endpoints.to_vec();
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10));
        let (client, resp) = {
            let p = prefix.clone();
            let (tx, rx) = mpsc::sync_channel(1);
            rt.spawn(async move {
                // A member that is down fails the requests the balancer sends it: the load
                // is tried again (on the others) for a while.
                let deadline = Instant::now() + CATCH_UP;
                let res = loop {
                    let res = async {
                        let mut client = Client::connect(eps.clone(), Some(opts.clone())).await?;
                        let resp = client
                            .get(p.clone(), Some(GetOptions::new().with_prefix()))
                            .await?;
                        Ok::<_, etcd_client::Error>((client, resp))
                    }
                    .await;
                    match res {
                        Err(e) if unreachable(&e) && Instant::now() < deadline => {
                            tracing::warn!(%e, "loading the pool's database: trying again");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        r => break r,
                    }
                };
                let _ = tx.send(res);
            });
            rx.recv()
                .map_err(|_| Error::Store("the etcd client stopped".into()))?
                .map_err(store_err)?
        };
        let rev = resp
            .header()
            .map(|h| h.revision() as u64)
            .ok_or_else(|| Error::Store("range answer without a revision".into()))?;
        let mut loaded = Loaded {
            gen: rev,
            // Deletions before the load are not known: older tokens list everything again.
            lost_before: rev,
            ..Loaded::default()
        };
        for kv in resp.kvs() {
            let key = kv.key_str().map_err(store_err)?;
            let r = key.strip_prefix(&prefix).unwrap_or(key);
            let (class, rec) = parse_value(r, kv.value())?;
            loaded.rows.push(StoredRow {
                r: r.to_owned(),
                class,
                data: rec.to_string(),
                gen: kv.mod_revision() as u64,
                created: kv.create_revision() as u64,
            });
        }
        // The watch starts right after the loaded revision: no change falls in between.
        let (ev_tx, ev_rx) = mpsc::channel::<Remote>();
        let (wake_tx, wake_rx): (SyncSender<()>, Receiver<()>) = mpsc::sync_channel(1);
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let lost = Arc::new(AtomicBool::new(false));
        {
            let lost = lost.clone();
            let mut client = client.clone();
            let prefix = prefix.clone();
            rt.spawn(async move {
                // Whatever ends the task, the tables stop following the pool.
                struct Lost(Arc<AtomicBool>);
                impl Drop for Lost {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::Release);
                    }
                }
                let _lost = Lost(lost);
                let mut ready = Some(ready_tx);
                // The next revision the tables need: a watch that fails (its etcd member
                // died) is opened again from there on another member.
                let mut next = rev + 1;
                loop {
                    let opts = WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(next as i64);
                    let (mut watcher, mut stream) =
                        match client.watch(prefix.clone(), Some(opts)).await {
                            Ok(w) => {
                                if let Some(r) = ready.take() {
                                    let _ = r.send(Ok(()));
                                }
                                w
                            }
                            Err(e) => {
                                if let Some(r) = ready.take() {
                                    let _ = r.send(Err(store_err(e)));
                                    return;
                                }
                                tracing::warn!(%e, "etcd watch: opening it again");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                continue;
                            }
                        };
                    // A watch on a member that died may neither fail nor deliver: each
                    // second it is asked for progress, and reopened when two go unanswered.
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    let mut unanswered = 0u32;
                    loop {
                        let msg = tokio::select! {
                            m = stream.message() => m,
                            _ = tick.tick() => {
                                if unanswered >= 2 {
                                    tracing::warn!("etcd watch silent: opening it again");
                                    break;
                                }
                                unanswered += 1;
                                let _ = watcher.request_progress().await;
                                continue;
                            }
                        };
                        unanswered = 0;
                        match msg {
                            Ok(Some(resp)) => {
                                if resp.compact_revision() > 0 {
                                    tracing::error!(
                                        compacted = resp.compact_revision(),
                                        "etcd watch: revisions compacted away: this xapi no longer follows the pool"
                                    );
                                    return;
                                }
                                if resp.canceled() {
                                    tracing::warn!(
                                        reason = resp.cancel_reason(),
                                        "etcd watch cancelled: opening it again"
                                    );
                                    break;
                                }
                                for ev in remotes(&prefix, &resp) {
                                    next = next.max(ev.rev + 1);
                                    if ev_tx.send(ev).is_err() {
                                        return;
                                    }
                                }
                                let _ = wake_tx.try_send(());
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!(%e, "etcd watch failed: opening it again");
                                break;
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
        rt.spawn(follow_endpoints(client.clone(), endpoints.to_vec()));
        ready_rx
            .recv()
            .map_err(|_| Error::Store("the etcd client stopped".into()))??;
        let events = Arc::new(Mutex::new(ev_rx));
        let store = Etcd {
            rt: rt.0.take(),
            client,
            prefix,
            events: events.clone(),
            lost,
        };
        let db = Db::with_store(Box::new(store), loaded)?;
        let shared = db.shared.clone();
        std::thread::Builder::new()
            .name("xapi-etcd-apply".into())
            .spawn(move || apply_loop(shared, events, wake_rx))
            .map_err(|e| Error::Io("etcd watch thread".into(), e))?;
        Ok(db)
    }
}
