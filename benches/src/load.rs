//! A load generator that drives any xenstored over its unix socket.
//!
//! A [`Session`] opens `conns` client connections (plus `idle` connections
//! that stay silent beside them), prepares the store for one [`Workload`],
//! then runs it for a number of operations or a duration. Each connection
//! keeps `depth` operations in flight (pipelining: `depth` requests written
//! before the first reply is read); an operation that takes several round
//! trips (a transaction, a `DIRECTORY_PART` walk) keeps one request in flight
//! per slot. Latency is measured per whole operation.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::runtime::Runtime;
use tokio::sync::Notify;

use crate::frame::{self, Decoder, FrameError};

/// How long any single reply may take before the run fails.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the load generator.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Socket I/O failed.
    #[error("socket I/O: {0}")]
    Io(#[from] io::Error),
    /// The daemon sent something the protocol does not allow here.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The daemon answered a setup request with an error.
    #[error("daemon refused {what}: {err}")]
    Refused {
        /// The request.
        what: String,
        /// The `XS_ERROR` name.
        err: String,
    },
    /// No reply within [`REPLY_TIMEOUT`].
    #[error("no reply from the daemon within {0:?}")]
    Timeout(Duration),
}

/// What each operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `READ` of one node holding `value_size` bytes.
    Read,
    /// `WRITE` of `value_size` bytes to a node per connection.
    Write,
    /// `DIRECTORY` of a node with `children` children (falling back to
    /// `DIRECTORY_PART` when the list exceeds one message, as libxenstore does).
    Directory,
    /// Read-modify-write transaction (`TRANSACTION_START`, `READ`, `WRITE`,
    /// `TRANSACTION_END`, retried on `EAGAIN`) on a key per slot, in a store
    /// holding `tree_nodes` extra nodes.
    TxRmw,
    /// One `WRITE` to a node watched by `watchers` other connections; the
    /// operation ends when every watcher has received its event.
    WatchFanout,
}

impl Workload {
    /// Every workload, in display order.
    pub const ALL: [Workload; 5] = [
        Workload::Read,
        Workload::Write,
        Workload::Directory,
        Workload::TxRmw,
        Workload::WatchFanout,
    ];

    /// Short name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Read => "read",
            Workload::Write => "write",
            Workload::Directory => "directory",
            Workload::TxRmw => "tx-rmw",
            Workload::WatchFanout => "watch-fanout",
        }
    }

    /// Parses [`Workload::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == s)
    }
}

/// Parameters of a [`Session`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The daemon's unix socket.
    pub socket: PathBuf,
    /// The workload.
    pub workload: Workload,
    /// Active client connections (the watch fan-out uses one writer).
    pub conns: usize,
    /// Operations in flight per connection.
    pub depth: usize,
    /// Silent connections held open beside the active ones.
    pub idle: usize,
    /// Value size for reads and writes.
    pub value_size: usize,
    /// Children of the directory node.
    pub children: usize,
    /// Extra nodes in the store for the transaction workload.
    pub tree_nodes: usize,
    /// Watchers for the fan-out workload.
    pub watchers: usize,
    /// Root of every node the session creates (removed first).
    pub root: String,
    /// Tokio worker threads of the generator.
    pub threads: usize,
}

impl Config {
    /// Defaults: one connection, no pipelining, 16-byte values, 100
    /// children, no tree, 100 watchers, root `/bench`, 2 threads.
    pub fn new(socket: impl Into<PathBuf>, workload: Workload) -> Self {
        Self {
            socket: socket.into(),
            workload,
            conns: 1,
            depth: 1,
            idle: 0,
            value_size: 16,
            children: 100,
            tree_nodes: 0,
            watchers: 100,
            root: "/bench".into(),
            threads: 2,
        }
    }
}

/// When a run ends.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After this many operations (over all connections).
    Ops(u64),
    /// When this much time has passed (operations in flight complete).
    After(Duration),
}

/// Results of one run.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// Operations completed.
    pub ops: u64,
    /// Operations that got an `XS_ERROR` reply (other than retried `EAGAIN`).
    pub errors: u64,
    /// Transaction retries after `EAGAIN`.
    pub retries: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Per-operation latencies in nanoseconds, sorted.
    pub latencies_ns: Vec<u64>,
}

impl RunStats {
    /// Completed operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-th percentile latency (`p` in 0..=100).
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies_ns.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((p / 100.0) * (self.latencies_ns.len() - 1) as f64).round() as usize;
        Duration::from_nanos(self.latencies_ns[idx.min(self.latencies_ns.len() - 1)])
    }
}

struct Conn {
    id: usize,
    stream: UnixStream,
    dec: Decoder,
}

struct WatchShared {
    received: AtomicU64,
    target: AtomicU64,
    notify: Notify,
}

/// An open load session against one daemon.
pub struct Session {
    rt: Runtime,
    cfg: Arc<Config>,
    conns: Vec<Conn>,
    _idle: Vec<UnixStream>,
    watch: Option<Arc<WatchShared>>,
    watch_writes: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("cfg", &self.cfg).finish()
    }
}

impl Session {
    /// Connects, prepares the store for the workload, and returns a session
    /// ready to [`Session::run`].
    pub fn open(cfg: Config) -> Result<Self, LoadError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.threads.max(1))
            .enable_all()
            .build()?;
        let cfg = Arc::new(cfg);
        let (conns, idle, watch) = rt.block_on(open_all(cfg.clone()))?;
        Ok(Self {
            rt,
            cfg,
            conns,
            _idle: idle,
            watch,
            watch_writes: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Runs the workload until `stop`.
    pub fn run(&mut self, stop: Stop) -> Result<RunStats, LoadError> {
        if let Some(w) = self.watch.clone() {
            let conn = self.conns.first_mut().expect("a writer connection");
            let cfg = self.cfg.clone();
            let start_seq = self.watch_writes;
            let (stats, n) = self
                .rt
                .block_on(run_watch_writer(cfg, conn, w, stop, start_seq))?;
            self.watch_writes += n;
            return Ok(stats);
        }
        let (budget, deadline) = match stop {
            Stop::Ops(n) => (i64::try_from(n).unwrap_or(i64::MAX), None),
            Stop::After(d) => (i64::MAX, Some(Instant::now() + d)),
        };
        let shared = Arc::new(RunShared {
            budget: AtomicI64::new(budget),
            deadline,
        });
        let conns = std::mem::take(&mut self.conns);
        let cfg = self.cfg.clone();
        let t0 = Instant::now();
        let results = self.rt.block_on(async move {
            let handles: Vec<_> = conns
                .into_iter()
                .map(|c| tokio::spawn(run_conn(cfg.clone(), c, shared.clone())))
                .collect();
            let mut out = Vec::with_capacity(handles.len());
            for h in handles {
                out.push(
                    h.await
                        .map_err(|e| LoadError::Protocol(format!("task: {e}")))?,
                );
            }
            Ok::<_, LoadError>(out)
        })?;
        let elapsed = t0.elapsed();
        let mut stats = RunStats {
            elapsed,
            ..RunStats::default()
        };
        let mut first_err = None;
        for r in results {
            match r {
                Ok((conn, part)) => {
                    self.conns.push(conn);
                    stats.ops += part.ops;
                    stats.errors += part.errors;
                    stats.retries += part.retries;
                    stats.latencies_ns.extend(part.latencies_ns);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        stats.latencies_ns.sort_unstable();
        Ok(stats)
    }
}

struct RunShared {
    budget: AtomicI64,
    deadline: Option<Instant>,
}

impl RunShared {
    fn claim(&self) -> bool {
        if let Some(d) = self.deadline {
            if Instant::now() >= d {
                return false;
            }
        }
        self.budget.fetch_sub(1, Ordering::Relaxed) > 0
    }
}

// ---- paths -------------------------------------------------------------------

fn read_path(cfg: &Config) -> String {
    format!("{}/read", cfg.root)
}
fn write_path(cfg: &Config, conn: usize) -> String {
    format!("{}/write/{conn}", cfg.root)
}
fn dir_path(cfg: &Config) -> String {
    format!("{}/dir", cfg.root)
}
fn tx_path(cfg: &Config, conn: usize, slot: usize) -> String {
    format!("{}/tree/tx{conn}-{slot}", cfg.root)
}
fn watch_path(cfg: &Config) -> String {
    format!("{}/watch/node", cfg.root)
}

fn nul(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}

// ---- simple request/reply helpers for setup ----------------------------------

async fn recv(conn: &mut Conn) -> Result<(frame::Header, Vec<u8>), LoadError> {
    let mut buf = [0u8; 8192];
    loop {
        match conn.dec.next_frame() {
            Ok(Some((h, r))) => return Ok((h, conn.dec.payload(r).to_vec())),
            Ok(None) => {}
            Err(FrameError::Oversize(n)) => {
                return Err(LoadError::Protocol(format!("reply of {n} bytes")))
            }
        }
        let n = tokio::time::timeout(REPLY_TIMEOUT, conn.stream.read(&mut buf))
            .await
            .map_err(|_| LoadError::Timeout(REPLY_TIMEOUT))??;
        if n == 0 {
            return Err(LoadError::Protocol("daemon closed the connection".into()));
        }
        conn.dec.extend(&buf[..n]);
    }
}

/// Sends `reqs` (type, payload) with up to 64 in flight; fails on the first
/// error reply not in `ok_errors`.
async fn pipelined(
    conn: &mut Conn,
    reqs: Vec<(u32, Vec<u8>)>,
    ok_errors: &[&str],
) -> Result<(), LoadError> {
    const WINDOW: usize = 64;
    let mut sent = 0usize;
    let mut done = 0usize;
    let mut out = Vec::new();
    while done < reqs.len() {
        out.clear();
        while sent < reqs.len() && sent - done < WINDOW {
            let (ty, p) = &reqs[sent];
            frame::encode(&mut out, *ty, sent as u32, 0, &[p]);
            sent += 1;
        }
        if !out.is_empty() {
            conn.stream.write_all(&out).await?;
        }
        let (h, p) = recv(conn).await?;
        if h.ty == xen_sys::XS_WATCH_EVENT {
            continue;
        }
        if h.ty == xen_sys::XS_ERROR {
            let err = frame::error_name(&p).to_owned();
            if !ok_errors.contains(&err.as_str()) {
                let (ty, what) = &reqs[h.req_id as usize % reqs.len()];
                return Err(LoadError::Refused {
                    what: format!("type {ty} {:?}", String::from_utf8_lossy(what)),
                    err,
                });
            }
        }
        done += 1;
    }
    Ok(())
}

fn write_req(path: &str, value: &[u8]) -> (u32, Vec<u8>) {
    let mut p = nul(path);
    p.extend_from_slice(value);
    (xen_sys::XS_WRITE, p)
}

/// Connects, retrying while the daemon's listen backlog is full (a
/// non-blocking unix-socket connect then fails with `EAGAIN`).
async fn connect_stream(cfg: &Config) -> Result<UnixStream, LoadError> {
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        match UnixStream::connect(&cfg.socket).await {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(LoadError::Timeout(REPLY_TIMEOUT));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn connect(cfg: &Config, id: usize) -> Result<Conn, LoadError> {
    let stream = connect_stream(cfg).await?;
    Ok(Conn {
        id,
        stream,
        dec: Decoder::new(),
    })
}

type Opened = (Vec<Conn>, Vec<UnixStream>, Option<Arc<WatchShared>>);

async fn open_all(cfg: Arc<Config>) -> Result<Opened, LoadError> {
    let nconns = if cfg.workload == Workload::WatchFanout {
        1
    } else {
        cfg.conns.max(1)
    };
    let mut conns = Vec::with_capacity(nconns);
    for i in 0..nconns {
        conns.push(connect(&cfg, i).await?);
    }
    let mut idle = Vec::with_capacity(cfg.idle);
    for _ in 0..cfg.idle {
        idle.push(connect_stream(&cfg).await?);
    }
    let c0 = &mut conns[0];
    pipelined(c0, vec![(xen_sys::XS_RM, nul(&cfg.root))], &["ENOENT"]).await?;
    let value = vec![b'v'; cfg.value_size];
    let mut reqs = Vec::new();
    match cfg.workload {
        Workload::Read => reqs.push(write_req(&read_path(&cfg), &value)),
        Workload::Write => {
            for i in 0..nconns {
                reqs.push(write_req(&write_path(&cfg, i), &value));
            }
        }
        Workload::Directory => {
            let d = dir_path(&cfg);
            reqs.push(write_req(&d, b""));
            for i in 0..cfg.children {
                reqs.push(write_req(&format!("{d}/c{i}"), b""));
            }
        }
        Workload::TxRmw => {
            for i in 0..cfg.tree_nodes {
                reqs.push(write_req(
                    &format!("{}/tree/n{}/{}", cfg.root, i / 100, i % 100),
                    b"x",
                ));
            }
            for c in 0..nconns {
                for s in 0..cfg.depth.max(1) {
                    reqs.push(write_req(&tx_path(&cfg, c, s), b"0"));
                }
            }
        }
        Workload::WatchFanout => reqs.push(write_req(&watch_path(&cfg), b"0")),
    }
    pipelined(c0, reqs, &[]).await?;

    let watch = if cfg.workload == Workload::WatchFanout {
        Some(open_watchers(&cfg).await?)
    } else {
        None
    };
    Ok((conns, idle, watch))
}

async fn open_watchers(cfg: &Arc<Config>) -> Result<Arc<WatchShared>, LoadError> {
    let shared = Arc::new(WatchShared {
        received: AtomicU64::new(0),
        target: AtomicU64::new(cfg.watchers as u64),
        notify: Notify::new(),
    });
    let path = watch_path(cfg);
    for i in 0..cfg.watchers {
        let mut c = connect(cfg, 1 + i).await?;
        let mut p = nul(&path);
        p.extend_from_slice(&nul(&format!("w{i}")));
        let mut out = Vec::new();
        frame::encode(&mut out, xen_sys::XS_WATCH, 0, 0, &[&p]);
        c.stream.write_all(&out).await?;
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                while let Ok(Some((h, _))) = c.dec.next_frame() {
                    if h.ty == xen_sys::XS_WATCH_EVENT {
                        let n = shared.received.fetch_add(1, Ordering::AcqRel) + 1;
                        if n >= shared.target.load(Ordering::Acquire) {
                            shared.notify.notify_one();
                        }
                    }
                }
                match c.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => c.dec.extend(&buf[..n]),
                }
            }
        });
    }
    // Every watch fires once when it is set: wait for all those events.
    wait_events(&shared, cfg.watchers as u64).await?;
    shared.received.store(0, Ordering::Release);
    Ok(shared)
}

async fn wait_events(w: &WatchShared, target: u64) -> Result<(), LoadError> {
    w.target.store(target, Ordering::Release);
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        let notified = w.notify.notified();
        if w.received.load(Ordering::Acquire) >= target {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(LoadError::Protocol(format!(
                "watch events: {} of {target} arrived within {REPLY_TIMEOUT:?}",
                w.received.load(Ordering::Acquire)
            )));
        }
    }
}

async fn run_watch_writer(
    cfg: Arc<Config>,
    conn: &mut Conn,
    w: Arc<WatchShared>,
    stop: Stop,
    start_seq: u64,
) -> Result<(RunStats, u64), LoadError> {
    let path = watch_path(&cfg);
    let (limit, deadline) = match stop {
        Stop::Ops(n) => (n, None),
        Stop::After(d) => (u64::MAX, Some(Instant::now() + d)),
    };
    let per_write = cfg.watchers as u64;
    let mut stats = RunStats::default();
    let mut out = Vec::new();
    let t0 = Instant::now();
    let mut k = 0u64;
    while k < limit && deadline.is_none_or(|d| Instant::now() < d) {
        let seq = start_seq + k + 1;
        let start = Instant::now();
        out.clear();
        let (ty, p) = write_req(&path, seq.to_string().as_bytes());
        frame::encode(&mut out, ty, 0, 0, &[&p]);
        conn.stream.write_all(&out).await?;
        loop {
            let (h, p) = recv(conn).await?;
            if h.ty == xen_sys::XS_ERROR {
                return Err(LoadError::Refused {
                    what: format!("write {path}"),
                    err: frame::error_name(&p).into(),
                });
            }
            if h.ty == xen_sys::XS_WRITE {
                break;
            }
        }
        wait_events(&w, (k + 1) * per_write).await?;
        stats.latencies_ns.push(start.elapsed().as_nanos() as u64);
        k += 1;
    }
    stats.elapsed = t0.elapsed();
    stats.ops = k;
    w.received.store(0, Ordering::Release);
    stats.latencies_ns.sort_unstable();
    Ok((stats, k))
}

// ---- the per-connection engine ---------------------------------------------------

#[derive(Clone, Copy)]
enum Step {
    Idle,
    Single,
    DirPart { off: usize, last: u8 },
    TxStart,
    TxRead(u32),
    TxWrite(u32),
    TxEnd,
}

struct Slot {
    step: Step,
    started: Instant,
}

struct Engine<'a> {
    cfg: &'a Config,
    conn_id: usize,
    out: Vec<u8>,
    value: Vec<u8>,
    read_path: Vec<u8>,
    write_path: Vec<u8>,
    dir_path: Vec<u8>,
    part: RunStats,
}

impl Engine<'_> {
    fn begin(&mut self, slot_idx: usize, slot: &mut Slot) {
        slot.started = Instant::now();
        let id = slot_idx as u32;
        match self.cfg.workload {
            Workload::Read => {
                frame::encode(&mut self.out, xen_sys::XS_READ, id, 0, &[&self.read_path]);
                slot.step = Step::Single;
            }
            Workload::Write => {
                frame::encode(
                    &mut self.out,
                    xen_sys::XS_WRITE,
                    id,
                    0,
                    &[&self.write_path, &self.value],
                );
                slot.step = Step::Single;
            }
            Workload::Directory => {
                frame::encode(
                    &mut self.out,
                    xen_sys::XS_DIRECTORY,
                    id,
                    0,
                    &[&self.dir_path],
                );
                slot.step = Step::Single;
            }
            Workload::TxRmw => {
                frame::encode(
                    &mut self.out,
                    xen_sys::XS_TRANSACTION_START,
                    id,
                    0,
                    &[b"\0"],
                );
                slot.step = Step::TxStart;
            }
            Workload::WatchFanout => unreachable!("the fan-out has its own writer"),
        }
    }

    fn dir_part(&mut self, id: u32, off: usize) {
        let off = nul(&off.to_string());
        frame::encode(
            &mut self.out,
            xen_sys::XS_DIRECTORY_PART,
            id,
            0,
            &[&self.dir_path, &off],
        );
    }

    /// Handles a reply for `slot`; returns true when its operation is done.
    fn on_reply(
        &mut self,
        slot_idx: usize,
        slot: &mut Slot,
        h: frame::Header,
        p: &[u8],
    ) -> Result<bool, LoadError> {
        let id = slot_idx as u32;
        let is_err = h.ty == xen_sys::XS_ERROR;
        let tx_key = || nul(&tx_path(self.cfg, self.conn_id, slot_idx));
        match slot.step {
            Step::Idle => {
                return Err(LoadError::Protocol(format!(
                    "reply type {} for idle request id {id}",
                    h.ty
                )))
            }
            Step::Single => {
                if is_err
                    && frame::error_name(p) == "E2BIG"
                    && self.cfg.workload == Workload::Directory
                {
                    self.dir_part(id, 0);
                    slot.step = Step::DirPart { off: 0, last: 0 };
                    return Ok(false);
                }
                if is_err {
                    self.part.errors += 1;
                }
                return Ok(true);
            }
            Step::DirPart { off, last } => {
                if is_err {
                    self.part.errors += 1;
                    return Ok(true);
                }
                let gen_end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
                let rest = p.get(gen_end + 1..).unwrap_or(&[]);
                let new_off = off + rest.len();
                let prev = if rest.len() >= 2 {
                    rest[rest.len() - 2]
                } else {
                    last
                };
                let ends_double_nul = rest.last() == Some(&0) && prev == 0;
                if new_off <= 1 || ends_double_nul || rest.is_empty() {
                    return Ok(true);
                }
                let last = *rest.last().unwrap_or(&0);
                self.dir_part(id, new_off);
                slot.step = Step::DirPart { off: new_off, last };
                return Ok(false);
            }
            Step::TxStart => {
                if is_err {
                    self.part.errors += 1;
                    return Ok(true);
                }
                let tx =
                    std::str::from_utf8(&p[..p.iter().position(|&b| b == 0).unwrap_or(p.len())])
                        .ok()
                        .and_then(|s| s.parse::<u32>().ok())
                        .ok_or_else(|| LoadError::Protocol(format!("bad transaction id {p:?}")))?;
                frame::encode(&mut self.out, xen_sys::XS_READ, id, tx, &[&tx_key()]);
                slot.step = Step::TxRead(tx);
            }
            Step::TxRead(tx) => {
                let n: u64 = if is_err {
                    0
                } else {
                    std::str::from_utf8(p)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0)
                };
                let v = (n + 1).to_string();
                frame::encode(
                    &mut self.out,
                    xen_sys::XS_WRITE,
                    id,
                    tx,
                    &[&tx_key(), v.as_bytes()],
                );
                slot.step = Step::TxWrite(tx);
            }
            Step::TxWrite(tx) => {
                if is_err {
                    self.part.errors += 1;
                }
                frame::encode(
                    &mut self.out,
                    xen_sys::XS_TRANSACTION_END,
                    id,
                    tx,
                    &[b"T\0"],
                );
                slot.step = Step::TxEnd;
            }
            Step::TxEnd => {
                if is_err && frame::error_name(p) == "EAGAIN" {
                    self.part.retries += 1;
                    frame::encode(
                        &mut self.out,
                        xen_sys::XS_TRANSACTION_START,
                        id,
                        0,
                        &[b"\0"],
                    );
                    slot.step = Step::TxStart;
                    return Ok(false);
                }
                if is_err {
                    self.part.errors += 1;
                }
                return Ok(true);
            }
        }
        Ok(false)
    }
}

async fn run_conn(
    cfg: Arc<Config>,
    mut conn: Conn,
    shared: Arc<RunShared>,
) -> Result<(Conn, RunStats), LoadError> {
    let depth = cfg.depth.max(1);
    let mut eng = Engine {
        cfg: &cfg,
        conn_id: conn.id,
        out: Vec::with_capacity(depth * 64),
        value: vec![b'v'; cfg.value_size],
        read_path: nul(&read_path(&cfg)),
        write_path: nul(&write_path(&cfg, conn.id)),
        dir_path: nul(&dir_path(&cfg)),
        part: RunStats::default(),
    };
    let now = Instant::now();
    let mut slots: Vec<Slot> = (0..depth)
        .map(|_| Slot {
            step: Step::Idle,
            started: now,
        })
        .collect();
    let mut active = 0usize;
    for (i, s) in slots.iter_mut().enumerate() {
        if !shared.claim() {
            break;
        }
        eng.begin(i, s);
        active += 1;
    }
    let mut buf = vec![0u8; 64 * 1024];
    while active > 0 {
        if !eng.out.is_empty() {
            conn.stream.write_all(&eng.out).await?;
            eng.out.clear();
        }
        let n = tokio::time::timeout(REPLY_TIMEOUT, conn.stream.read(&mut buf))
            .await
            .map_err(|_| LoadError::Timeout(REPLY_TIMEOUT))??;
        if n == 0 {
            return Err(LoadError::Protocol("daemon closed the connection".into()));
        }
        conn.dec.extend(&buf[..n]);
        loop {
            let (h, r) = match conn.dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(FrameError::Oversize(n)) => {
                    return Err(LoadError::Protocol(format!("reply of {n} bytes")))
                }
            };
            if h.ty == xen_sys::XS_WATCH_EVENT {
                continue;
            }
            let idx = h.req_id as usize;
            let Some(slot) = slots.get_mut(idx) else {
                return Err(LoadError::Protocol(format!(
                    "reply to unknown request id {idx}"
                )));
            };
            let p = conn.dec.payload(r);
            if eng.on_reply(idx, slot, h, p)? {
                eng.part.ops += 1;
                eng.part
                    .latencies_ns
                    .push(slot.started.elapsed().as_nanos() as u64);
                slot.step = Step::Idle;
                if shared.claim() {
                    eng.begin(idx, slot);
                } else {
                    active -= 1;
                }
            }
        }
    }
    let part = std::mem::take(&mut eng.part);
    Ok((conn, part))
}
