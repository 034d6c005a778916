//! Serving one ring: a thread consumes requests, executes fast ones itself and shares
//! the rest with a worker pool.
//!
//! I/O runs as positioned vectored system calls (`preadv`/`pwritev` straight into the
//! grant-mapped pages, `fdatasync`, `fallocate`). A pool was chosen over io_uring because it
//! works on every kernel and in sandboxes that forbid io_uring, serves files and block
//! devices alike, needs no `unsafe` buffer-lifetime contract with the kernel beyond one
//! call, and at the queue depths a blkfront uses (32-512 per ring) a handful of threads
//! keeps a page-cache or NVMe device busy.
//!
//! A thread wake-up costs far more than a page-cache read (tens of microseconds on a busy
//! or virtualised host against about one for a 4 KiB `preadv`), so the ring thread does not
//! hand every request to a worker:
//!
//! - Requests it consumed together form a batch on the pool's queue. While requests are
//!   fast (a running average of execution times below [`INLINE_MAX_NS`]), the ring thread
//!   executes reads and writes from the queue itself and wakes a worker only when the
//!   batch holds enough work to repay the wake-up, at most one per spare CPU. A request at
//!   queue depth 1 thus costs no hop between threads at all.
//! - Flushes, discards and writes with a flush (which wait for the device), and every
//!   request while the average says the device is slow, go to the workers, so the ring
//!   thread keeps consuming and a slow request never stalls the ring.
//! - Responses are written as requests complete (completion order) and published
//!   (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`) when the executor has no further request of
//!   that ring queued, or every [`PUSH_BATCH`] responses: one notification per batch
//!   instead of one per request.
//!
//! Sleeping on the event channel costs the most per request at queue depth 1: the frontend's
//! notification (a hypercall), the interrupt and wake-up, and in user space the system
//! calls around the sleep (poll, read and unmask the port). A ring thread whose ring ran
//! empty therefore first polls the ring for a while ([`IdlePoll`], as KVM polls before
//! halting a vCPU) and re-arms the request event (`RING_FINAL_CHECK_FOR_REQUESTS`) only
//! when it is about to sleep: a request that arrives meanwhile is taken without any of those
//! costs, and the frontend, seeing the event not armed, does not notify.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use evtchn::EventChannel;
use gnttab::{Access, GrantMap, Mapping};
use parking_lot::{Condvar, Mutex};
use tracing::{debug, warn};
use xen_types::mem::SharedMemory;
use xen_types::{DomId, GrantRef, PAGE_SIZE};

use crate::abi::{Protocol, Request, Response, Segment, Status};
use crate::disk::Disk;
use crate::driver::Stats;
use crate::request::{
    check_request, check_segments, execute_timed, read_indirect_segments, Check, Kind, Limits,
    SegmentPages, Validated,
};
use crate::ring::BackRing;
use crate::xen::RingChannel;

/// How long the ring thread sleeps between checks of its stop flag.
const POLL: Duration = Duration::from_millis(50);
/// Requests run on the ring thread while the average request takes less than this (ns).
pub(crate) const INLINE_MAX_NS: u64 = 50_000;
/// The largest execution time one sample adds to the running average (ns).
const SAMPLE_MAX_NS: u64 = 4 * INLINE_MAX_NS;
/// A helper worker is woken only for a batch estimated to take longer than this (ns):
/// about what waking a thread costs.
const WAKE_WORTH_NS: u64 = 40_000;
/// Responses left unpublished at most.
pub(crate) const PUSH_BATCH: u32 = 16;

/// Ring checks between two clock reads while polling an idle ring.
const POLL_CHECKS: u32 = 16;
/// An idle-poll window grows from this (ns).
const IDLE_POLL_START_NS: u64 = 10_000;

/// The adaptive idle-poll window of one ring (KVM's `halt_poll_ns` policy): how long its
/// thread polls the empty ring before sleeping. After a sleep, the time the ring was idle
/// decides: a gap the maximum would have covered grows the window to cover it (doubling at
/// least, so a few gaps suffice); a longer one halves it, down to zero. A ring whose
/// frontend keeps it busy is polled just long enough; an idle one costs no CPU.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdlePoll {
    window_ns: u64,
    max_ns: u64,
}

impl IdlePoll {
    pub(crate) fn new(max: Duration) -> Self {
        IdlePoll {
            window_ns: 0,
            max_ns: u64::try_from(max.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// How long to poll now.
    pub(crate) fn window(&self) -> Duration {
        Duration::from_nanos(self.window_ns)
    }

    /// The ring was idle for `idle` (polling and sleeping) before its thread woke.
    pub(crate) fn slept(&mut self, idle: Duration) {
        let idle = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
        if idle <= self.max_ns {
            let want = idle.saturating_add(idle / 4);
            self.window_ns = (self.window_ns.saturating_mul(2))
                .max(want)
                .max(IDLE_POLL_START_NS)
                .min(self.max_ns);
        } else {
            self.window_ns /= 2;
            if self.window_ns < IDLE_POLL_START_NS {
                self.window_ns = 0;
            }
        }
    }
}

/// Slots per chunk of a [`Slab`].
const SLAB_CHUNK: usize = 64;

/// The persistent mappings of a ring, append-only: the ring thread adds them, requests in
/// flight hold the slab (one reference count per request, not one per segment) and read
/// them by index. Chunks are allocated as the cache grows; mappings are unmapped when the
/// ring and every request that used the slab are gone.
pub(crate) struct Slab<M> {
    chunks: Box<[OnceLock<Chunk<M>>]>,
}

/// [`SLAB_CHUNK`] slots of a [`Slab`], allocated together.
type Chunk<M> = Box<[OnceLock<M>]>;

impl<M> Slab<M> {
    fn new(capacity: usize) -> Self {
        Slab {
            chunks: (0..capacity.div_ceil(SLAB_CHUNK))
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// Stores mapping `i`; gives it back if `i` is beyond the capacity or already set.
    fn set(&self, i: usize, m: M) -> Result<(), M> {
        let Some(chunk) = self.chunks.get(i / SLAB_CHUNK) else {
            return Err(m);
        };
        chunk.get_or_init(|| (0..SLAB_CHUNK).map(|_| OnceLock::new()).collect())[i % SLAB_CHUNK]
            .set(m)
    }

    /// Mapping `i`, if set.
    fn get(&self, i: usize) -> Option<&M> {
        self.chunks
            .get(i / SLAB_CHUNK)?
            .get()?
            .get(i % SLAB_CHUNK)?
            .get()
    }
}

/// The mapped data pages of one request.
pub(crate) enum Pages<M> {
    /// No data (flush, discard).
    None,
    /// One batch mapping: segment `i` is page `i`.
    Batch(M),
    /// Persistent grants: segment `i` is mapping `idx[i]` of the slab.
    Persistent {
        /// The ring's persistent mappings.
        slab: Arc<Slab<M>>,
        /// Slab index of each segment's mapping.
        idx: Vec<u32>,
    },
}

impl<M: SharedMemory> SegmentPages for Pages<M> {
    fn page(&self, i: usize) -> (&dyn SharedMemory, usize) {
        match self {
            Pages::None => unreachable!("no segments"),
            Pages::Batch(m) => (m, i * PAGE_SIZE),
            Pages::Persistent { slab, idx } => (
                slab.get(idx[i] as usize)
                    .expect("persistent mapping set before use"),
                0,
            ),
        }
    }
}

/// A hasher for grant references (small integers): one multiplication instead of SipHash
/// on the persistent-grant lookup of every segment. Grant references are chosen by the
/// frontend, but a frontend crafting collisions only slows its own ring's lookups, which
/// the cache size bounds.
#[derive(Default)]
pub(crate) struct GrefHasher(u64);

impl Hasher for GrefHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The ring and its count of responses written but not yet published.
struct RingState<M: SharedMemory> {
    ring: BackRing<M>,
    unpushed: u32,
}

/// State of one ring shared by its thread and the workers.
pub(crate) struct QueueShared<E: EventChannel> {
    ring: Mutex<RingState<Mapping>>,
    chan: RingChannel<E>,
    /// The backend's counters.
    stats: Arc<Stats>,
    /// Set when the frontend broke the ring protocol: stop serving it.
    broken: AtomicBool,
    /// Requests of this ring waiting on the pool's queue (not started).
    queued: AtomicUsize,
    /// Requests of this ring handed to the pool and not yet answered.
    outstanding: AtomicUsize,
}

impl<E: EventChannel> QueueShared<E> {
    /// Writes a response; publishes it (and any deferred ones) now when `publish`, or when
    /// [`PUSH_BATCH`] are waiting.
    fn respond(&self, id: u64, operation: u8, status: Status, publish: bool) {
        self.stats.answered();
        let mut r = self.ring.lock();
        let rsp = Response {
            id,
            operation,
            status,
        };
        match r.ring.next_response_slot() {
            Ok(off) => {
                if let Err(e) = rsp.write(r.ring.memory(), off) {
                    warn!("writing a response: {e}");
                }
            }
            // A broken ring (hostile frontend) or no request to answer: nothing to write.
            Err(e) => warn!("response {id}: {e}"),
        }
        r.unpushed += 1;
        if publish || r.unpushed >= PUSH_BATCH {
            self.push_locked(r);
        }
    }

    /// Publishes deferred responses.
    fn publish(&self) {
        let r = self.ring.lock();
        if r.unpushed > 0 {
            self.push_locked(r);
        }
    }

    fn push_locked(&self, mut r: parking_lot::MutexGuard<'_, RingState<Mapping>>) {
        r.unpushed = 0;
        let notify = r.ring.push_responses_and_check_notify();
        drop(r);
        if notify {
            // The frontend may be gone; nothing else to do then.
            let _ = self.chan.notify();
        }
    }
}

/// A validated, mapped request waiting for execution.
pub(crate) struct Job<E: EventChannel> {
    q: Arc<QueueShared<E>>,
    v: Validated,
    segs: Vec<Segment>,
    pages: Pages<Mapping>,
    disk: Arc<Disk>,
}

impl<E: EventChannel> Job<E> {
    /// Reads and writes without a flush: the requests the ring thread may run itself.
    fn inline_ok(&self) -> bool {
        matches!(self.v.kind, Kind::Read | Kind::Write { flush: false })
    }

    /// Executes the request, which starts at `started`, and answers it; returns when its
    /// execution ended (the next request's start, for a caller that runs several). `more`
    /// says the caller runs another request of this ring right after (and will publish).
    /// `fast`: requests are fast, so publishing may wait for the next one.
    fn run(self, iov: &mut Vec<libc::iovec>, more: bool, fast: bool, started: Instant) -> Instant {
        let (status, ended) =
            execute_timed(&self.v, &self.segs, &self.pages, &self.disk, iov, started);
        // Unmap before answering: the frontend may end the grants as soon as it sees the
        // response.
        drop(self.pages);
        // Publish unless another request of this ring is coming soon: its executor
        // publishes both. (When requests are slow, waiting would only add latency.)
        let publish = !fast || (!more && self.q.queued.load(Ordering::Acquire) == 0);
        self.q.respond(self.v.id, self.v.operation, status, publish);
        ended
    }
}

struct PoolState<E: EventChannel> {
    jobs: VecDeque<Job<E>>,
    /// Workers waiting for work and not yet woken.
    idle: usize,
    open: bool,
}

/// What the ring threads and workers of a device share.
pub(crate) struct PoolShared<E: EventChannel> {
    st: Mutex<PoolState<E>>,
    cv: Condvar,
    /// Running average of the execution time of reads and writes, ns (weight 1/8).
    avg_ns: AtomicU64,
    /// Workers worth waking to help the ring thread with fast requests (spare CPUs).
    helpers: usize,
}

impl<E: EventChannel> PoolShared<E> {
    /// Adds the time `d` that `n` reads or writes took to the running average. A sample
    /// counts at most [`SAMPLE_MAX_NS`]: one request delayed by preemption or a rare stall
    /// does not turn a fast device slow, three in a row do.
    fn record(&self, d: Duration, n: usize) {
        let ns = u64::try_from(d.as_nanos() / n.max(1) as u128)
            .unwrap_or(u64::MAX)
            .min(SAMPLE_MAX_NS);
        let avg = self.avg_ns.load(Ordering::Relaxed);
        self.avg_ns.store(avg - avg / 8 + ns / 8, Ordering::Relaxed);
    }

    fn fast(&self) -> bool {
        self.avg_ns.load(Ordering::Relaxed) < INLINE_MAX_NS
    }

    /// True when the ring thread had best run all of `batch` itself, sharing nothing:
    /// requests are fast, none waits for the device, and together they take less than
    /// waking a helper costs (or there is no spare CPU for one).
    fn run_here(&self, batch: &[Job<E>]) -> bool {
        let avg = self.avg_ns.load(Ordering::Relaxed);
        avg < INLINE_MAX_NS
            && batch.iter().all(Job::inline_ok)
            && (self.helpers == 0 || batch.len() as u64 * avg <= WAKE_WORTH_NS)
    }

    /// Queues `batch` and wakes the workers it needs; false (and `batch` untouched) once
    /// the pool is shut down.
    fn submit(&self, batch: &mut Vec<Job<E>>, ring_helps: bool) -> bool {
        let mut st = self.st.lock();
        if !st.open {
            return false;
        }
        let avg = self.avg_ns.load(Ordering::Relaxed).max(1);
        let mut slow = 0usize;
        let mut fast = 0usize;
        for j in batch.drain(..) {
            if ring_helps && j.inline_ok() {
                fast += 1;
            } else {
                slow += 1;
            }
            j.q.queued.fetch_add(1, Ordering::Release);
            j.q.outstanding.fetch_add(1, Ordering::Release);
            st.jobs.push_back(j);
        }
        let helpers = if fast > 1 && fast as u64 * avg > WAKE_WORTH_NS {
            self.helpers.min(fast - 1)
        } else {
            0
        };
        let wake = (slow + helpers).min(st.idle);
        st.idle -= wake;
        drop(st);
        for _ in 0..wake {
            self.cv.notify_one();
        }
        true
    }

    /// A queued job the ring thread may run itself.
    fn take_inline(&self) -> Option<Job<E>> {
        let mut st = self.st.lock();
        let i = st.jobs.iter().position(Job::inline_ok)?;
        let j = st.jobs.remove(i)?;
        j.q.queued.fetch_sub(1, Ordering::AcqRel);
        Some(j)
    }

    /// The next job for a worker; `None` once shut down and drained.
    fn take(&self) -> Option<Job<E>> {
        let mut st = self.st.lock();
        loop {
            if let Some(j) = st.jobs.pop_front() {
                j.q.queued.fetch_sub(1, Ordering::AcqRel);
                return Some(j);
            }
            if !st.open {
                return None;
            }
            st.idle += 1;
            self.cv.wait(&mut st);
        }
    }
}

/// A handle ring threads use to queue work on a device's pool.
pub(crate) type PoolHandle<E> = Arc<PoolShared<E>>;

/// The I/O worker pool of a device.
pub(crate) struct Pool<E: EventChannel> {
    shared: Arc<PoolShared<E>>,
    threads: Vec<JoinHandle<()>>,
}

impl<E: EventChannel + 'static> Pool<E> {
    pub(crate) fn new(workers: usize, name: &str) -> Result<Self, crate::Error> {
        let spare = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .saturating_sub(1);
        let shared = Arc::new(PoolShared {
            st: Mutex::new(PoolState {
                jobs: VecDeque::new(),
                idle: 0,
                open: true,
            }),
            cv: Condvar::new(),
            avg_ns: AtomicU64::new(0),
            helpers: spare.min(workers.max(1)),
        });
        let mut pool = Pool {
            shared,
            threads: Vec::new(),
        };
        for i in 0..workers.max(1) {
            let sh = pool.shared.clone();
            pool.threads.push(
                std::thread::Builder::new()
                    .name(format!("{name}-io{i}"))
                    .spawn(move || {
                        let mut iov = Vec::new();
                        while let Some(job) = sh.take() {
                            let timed = job.inline_ok();
                            let q = job.q.clone();
                            let start = Instant::now();
                            let end = job.run(&mut iov, false, sh.fast(), start);
                            q.outstanding.fetch_sub(1, Ordering::AcqRel);
                            if timed {
                                sh.record(end.saturating_duration_since(start), 1);
                            }
                        }
                    })?,
            );
        }
        Ok(pool)
    }
}

impl<E: EventChannel> Pool<E> {
    /// The handle ring threads queue work with.
    pub(crate) fn sender(&self) -> PoolHandle<E> {
        self.shared.clone()
    }

    /// Finishes every queued job, then stops the workers.
    pub(crate) fn shutdown(&mut self) {
        {
            let mut st = self.shared.st.lock();
            st.open = false;
            st.idle = 0;
        }
        self.shared.cv.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl<E: EventChannel> Drop for Pool<E> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Settings of one ring.
#[derive(Clone)]
pub(crate) struct QueueConfig {
    pub frontend: DomId,
    pub proto: Protocol,
    pub limits: Limits,
    pub persistent: bool,
    pub max_persistent_grants: usize,
    /// The longest idle poll ([`IdlePoll`]).
    pub idle_poll: Duration,
}

/// Serves a ring until `stop` is set, the channel closes or the frontend breaks the
/// protocol.
pub(crate) struct RingServer<G: GrantMap, E: EventChannel> {
    gnttab: Arc<G>,
    q: Arc<QueueShared<E>>,
    cfg: QueueConfig,
    disk: Arc<Disk>,
    pool: PoolHandle<E>,
    /// Slab index of each persistent grant mapped.
    persistent: HashMap<GrantRef, u32, BuildHasherDefault<GrefHasher>>,
    slab: Arc<Slab<Mapping>>,
    segs: Vec<Segment>,
    /// Requests copied out of the ring, then validated and mapped.
    reqs: Vec<Request>,
    batch: Vec<Job<E>>,
    iov: Iov,
}

/// Scratch `iovec`s of the ring thread.
#[derive(Default)]
struct Iov(Vec<libc::iovec>);

// SAFETY: the vector is scratch space: `execute` clears and refills it on every call and
// nothing reads the (stale) pointers left in it between calls, so moving it to another
// thread shares nothing.
unsafe impl Send for Iov {}

impl<G: GrantMap, E: EventChannel> RingServer<G, E> {
    pub(crate) fn new(
        gnttab: Arc<G>,
        ring: BackRing<Mapping>,
        chan: RingChannel<E>,
        cfg: QueueConfig,
        disk: Arc<Disk>,
        pool: PoolHandle<E>,
        stats: Arc<Stats>,
    ) -> Self {
        let slab = Arc::new(Slab::new(if cfg.persistent {
            cfg.max_persistent_grants
        } else {
            0
        }));
        RingServer {
            gnttab,
            q: Arc::new(QueueShared {
                ring: Mutex::new(RingState { ring, unpushed: 0 }),
                chan,
                stats,
                broken: AtomicBool::new(false),
                queued: AtomicUsize::new(0),
                outstanding: AtomicUsize::new(0),
            }),
            cfg,
            disk,
            pool,
            persistent: HashMap::default(),
            slab,
            segs: Vec::with_capacity(64),
            reqs: Vec::new(),
            batch: Vec::new(),
            iov: Iov::default(),
        }
    }

    /// The thread body. The ring counts as running from before its thread starts (see
    /// [`Stats::ring_started`]) until this returns.
    pub(crate) fn run(mut self, stop: &AtomicBool) {
        let mut poll = IdlePoll::new(self.cfg.idle_poll);
        while !stop.load(Ordering::Relaxed) && !self.q.broken.load(Ordering::Relaxed) {
            let idle_since = match self.serve(&poll) {
                Ok(t) => t,
                Err(e) => {
                    warn!("frontend {:?}: {e}; ring stopped", self.cfg.frontend);
                    self.q.broken.store(true, Ordering::Relaxed);
                    self.q.publish();
                    break;
                }
            };
            self.q.stats.slept();
            match self.q.chan.wait(POLL) {
                Ok(_) => {
                    if let Some(t) = idle_since {
                        poll.slept(t.elapsed());
                    }
                }
                Err(e) => {
                    debug!("frontend {:?} event channel: {e}", self.cfg.frontend);
                    break;
                }
            }
        }
        self.q
            .stats
            .ring_stopped(self.q.broken.load(Ordering::Relaxed));
    }

    /// Serves requests until the ring stayed empty through an idle poll of `poll`'s window
    /// and the final check (the request event is then armed); returns when the ring became
    /// idle (`None` without an idle poll: the clock is not read then).
    pub(crate) fn serve(&mut self, poll: &IdlePoll) -> Result<Option<Instant>, crate::Error> {
        let polls = !self.cfg.idle_poll.is_zero();
        loop {
            self.drain_ready()?;
            let idle_since = polls.then(Instant::now);
            if let Some(t) = idle_since {
                if self.poll_idle(t, poll.window())? {
                    self.q.stats.found_by_polling();
                    continue;
                }
            }
            if !self.final_check()? {
                return Ok(idle_since);
            }
        }
    }

    /// Consumes every available request, executing or queueing each, until the ring is
    /// empty; then publishes what is left to publish and re-arms the event (no idle poll:
    /// for tests and the fuzz target).
    #[cfg(any(test, feature = "test-utils"))]
    pub(crate) fn drain(&mut self) -> Result<(), crate::Error> {
        loop {
            self.drain_ready()?;
            if !self.final_check()? {
                return Ok(());
            }
        }
    }

    /// Consumes, executes or queues requests while the ring has some, without re-arming the
    /// request event; publishes what is left to publish once it is empty.
    fn drain_ready(&mut self) -> Result<(), crate::Error> {
        while self.consume()? {
            let mut reqs = std::mem::take(&mut self.reqs);
            for req in reqs.drain(..) {
                self.handle(&req);
            }
            self.reqs = reqs;
            self.dispatch();
        }
        Ok(())
    }

    /// Copies every available request out of the ring; false when there is none (responses
    /// written so far are published then).
    fn consume(&mut self) -> Result<bool, crate::Error> {
        let mut r = self.q.ring.lock();
        if r.ring.unconsumed_requests()? == 0 {
            if r.unpushed > 0 {
                self.q.push_locked(r);
            }
            return Ok(false);
        }
        while let Some(off) = r.ring.take_request_slot()? {
            self.reqs
                .push(Request::read(r.ring.memory(), off, self.cfg.proto)?);
        }
        Ok(true)
    }

    /// Re-arms the request event (`RING_FINAL_CHECK_FOR_REQUESTS`): true when requests
    /// arrived meanwhile.
    fn final_check(&self) -> Result<bool, crate::Error> {
        Ok(self.q.ring.lock().ring.final_check_for_requests()?)
    }

    /// Polls the ring, empty at `start`, for requests until `window` after it, while
    /// requests are fast and none waits for a worker (the workers may need the CPU); true
    /// when some arrived.
    fn poll_idle(&self, start: Instant, window: Duration) -> Result<bool, crate::Error> {
        if window.is_zero() || !self.pool.fast() || self.q.queued.load(Ordering::Acquire) != 0 {
            return Ok(false);
        }
        loop {
            for _ in 0..POLL_CHECKS {
                if self.q.ring.lock().ring.unconsumed_requests()? > 0 {
                    return Ok(true);
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= window {
                return Ok(false);
            }
        }
    }

    /// Executes the batch itself or queues it; while requests are fast, executes queued
    /// reads and writes itself too.
    fn dispatch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let iov = &mut self.iov.0;
        // A lone read or write while none of this ring's requests is at the workers (queue
        // depth 1): the thread would only sleep meanwhile, so it runs it whatever the
        // device's pace (a hand-off costs a wake-up and two thread switches).
        let alone = self.batch.len() == 1
            && self.batch[0].inline_ok()
            && self.q.outstanding.load(Ordering::Acquire) == 0;
        if alone || self.pool.run_here(&self.batch) {
            let n = self.batch.len();
            let start = Instant::now();
            let mut t = start;
            for (i, job) in self.batch.drain(..).enumerate() {
                t = job.run(iov, i + 1 < n, true, t);
            }
            self.pool.record(t.saturating_duration_since(start), n);
            return;
        }
        let fast = self.pool.fast();
        if !self.pool.submit(&mut self.batch, fast) {
            // The pool is shut down: the device is going away.
            for job in self.batch.drain(..) {
                job.q
                    .respond(job.v.id, job.v.operation, Status::Error, false);
            }
            return;
        }
        if fast {
            let start = Instant::now();
            let mut t = start;
            let mut n = 0;
            while let Some(job) = self.pool.take_inline() {
                let q = job.q.clone();
                t = job.run(iov, false, true, t);
                q.outstanding.fetch_sub(1, Ordering::AcqRel);
                n += 1;
            }
            if n > 0 {
                self.pool.record(t.saturating_duration_since(start), n);
            }
        }
    }

    fn reject(&mut self, id: u64, operation: u8, status: Status, segs: Vec<Segment>) {
        self.q.respond(id, operation, status, false);
        self.segs = segs;
    }

    fn handle(&mut self, req: &Request) {
        self.q.stats.consumed(1);
        let mut segs = std::mem::take(&mut self.segs);
        let v = match check_request(req, &self.cfg.limits, &mut segs) {
            Err(rej) => return self.reject(req.id, rej.operation, rej.status, segs),
            Ok(Check::Ready(v)) => v,
            Ok(Check::Indirect {
                v,
                nr_segments,
                grefs,
                pages,
            }) => {
                // With persistent grants the indirect page is persistent too (as in
                // Linux): mapped once and kept; otherwise mapped for this request only.
                // (A failed persistent mapping falls back to the per-request one.)
                let cached = if self.cfg.persistent && pages == 1 {
                    self.persistent_map(grefs[0]).ok().flatten()
                } else {
                    None
                };
                let read = match cached.and_then(|i| self.slab.get(i as usize)) {
                    Some(m) => read_indirect_segments(m, nr_segments, &mut segs),
                    None => self
                        .map_grants(&grefs[..pages], false)
                        .map_err(|_| Status::Error)
                        .and_then(|m| read_indirect_segments(&m, nr_segments, &mut segs)),
                };
                let ok = read.and_then(|()| {
                    check_segments(&v, &segs, &self.cfg.limits).map_err(|r| r.status)
                });
                if let Err(status) = ok {
                    return self.reject(v.id, v.operation, status, segs);
                }
                v
            }
        };
        let pages = match self.map(&segs, v.kind.writes_pages()) {
            Ok(p) => p,
            Err(e) => {
                debug!("mapping segments of request {}: {e}", v.id);
                return self.reject(v.id, v.operation, Status::Error, segs);
            }
        };
        self.segs = Vec::with_capacity(segs.len().max(16));
        self.batch.push(Job {
            q: self.q.clone(),
            v,
            segs,
            pages,
            disk: self.disk.clone(),
        });
    }

    /// The slab index of the persistent mapping of `gref`, mapping it (read-write, as Linux
    /// does: the frontend reuses persistent grants for reads and writes) if the cache has
    /// room; `None` when it is full.
    fn persistent_map(&mut self, gref: GrantRef) -> Result<Option<u32>, crate::Error> {
        if let Some(&i) = self.persistent.get(&gref) {
            return Ok(Some(i));
        }
        let i = self.persistent.len();
        if i >= self.cfg.max_persistent_grants {
            return Ok(None);
        }
        let m = self.map_grants(&[gref], true)?;
        if self.slab.set(i, m).is_err() {
            return Ok(None);
        }
        let i = i as u32;
        self.persistent.insert(gref, i);
        Ok(Some(i))
    }

    /// Maps `refs` of the frontend (`writable`: read-write).
    fn map_grants(&self, refs: &[GrantRef], writable: bool) -> Result<Mapping, crate::Error> {
        let access = if writable {
            Access::ReadWrite
        } else {
            Access::ReadOnly
        };
        self.gnttab
            .map(self.cfg.frontend, refs, access)
            .map_err(|e| crate::Error::Host(e.errno()))
    }

    fn map(&mut self, segs: &[Segment], writable: bool) -> Result<Pages<Mapping>, crate::Error> {
        if segs.is_empty() {
            return Ok(Pages::None);
        }
        if self.cfg.persistent {
            // One lookup per segment; a grant not cached yet is mapped and kept while the
            // cache has room. Once it is full, the request is mapped for itself alone.
            let mut idx = Vec::with_capacity(segs.len());
            for s in segs {
                match self.persistent_map(s.gref)? {
                    Some(i) => idx.push(i),
                    None => break,
                }
            }
            if idx.len() == segs.len() {
                return Ok(Pages::Persistent {
                    slab: self.slab.clone(),
                    idx,
                });
            }
        }
        let refs: Vec<GrantRef> = segs.iter().map(|s| s.gref).collect();
        Ok(Pages::Batch(self.map_grants(&refs, writable)?))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use xen_types::mem::SharedMemoryExt;

    use super::*;
    use crate::abi::{Body, MAX_DIRECT_SEGMENTS};
    use crate::blkfront::{FrontHost, Region};
    use crate::ring::FrontRing;
    use crate::xen::XenSimGuest;

    const FE: DomId = DomId(3);
    const T: Duration = Duration::from_secs(10);

    type Mem = xen_sim::memory::PageMapping;

    struct World {
        guest: XenSimGuest,
        mem: Arc<Mem>,
        front: FrontRing<Region<Mem>>,
        _fe_chan: RingChannel<evtchn::SimEvtchn>,
        server: RingServer<gnttab::SimGnttab, evtchn::SimEvtchn>,
        pool: Pool<evtchn::SimEvtchn>,
        /// Grants of data pages 1..=8.
        data: Vec<GrantRef>,
        _host: xen_sim::Host,
    }

    fn world(workers: usize) -> World {
        world_with(workers, 64)
    }

    fn world_with(workers: usize, max_persistent_grants: usize) -> World {
        let host = xen_sim::Host::default();
        let guest = XenSimGuest::new(&host);
        let mem = Arc::new(guest.create_guest(FE, 16).unwrap());
        let ring_ref = guest.grant(FE, 0, DomId::DOM0, false).unwrap();
        let data = (1..=8)
            .map(|p| guest.grant(FE, p, DomId::DOM0, false).unwrap())
            .collect();
        let layout = crate::ring::layout(PAGE_SIZE, Protocol::Native).unwrap();
        let front =
            FrontRing::init_with_layout(Region::new(mem.clone(), 0, 1).unwrap(), layout).unwrap();
        let file = tempfile::tempfile().unwrap();
        file.set_len(1 << 20).unwrap();
        let disk = Arc::new(Disk::from_file(file, false).unwrap());
        let fe_chan = RingChannel::unbound(guest.open_evtchn(FE).unwrap(), DomId::DOM0).unwrap();
        let be_evtchn = evtchn::SimEvtchn::open(&host, DomId::DOM0).unwrap();
        let chan = RingChannel::bind(be_evtchn, FE, fe_chan.port()).unwrap();
        let gnttab = Arc::new(gnttab::SimGnttab::open(&host, DomId::DOM0).unwrap());
        let back = BackRing::with_layout(
            gnttab.map(FE, &[ring_ref], Access::ReadWrite).unwrap(),
            layout,
            0,
        )
        .unwrap();
        let cfg = QueueConfig {
            frontend: FE,
            proto: Protocol::Native,
            limits: Limits {
                sectors: disk.sectors(),
                readonly: false,
                max_indirect_segments: 0,
                flush: true,
                discard: false,
                discard_secure: false,
            },
            persistent: true,
            max_persistent_grants,
            idle_poll: Duration::from_millis(1),
        };
        let pool = Pool::new(workers, "test").unwrap();
        let server = RingServer::new(gnttab, back, chan, cfg, disk, pool.sender(), Arc::default());
        World {
            guest,
            mem,
            front,
            _fe_chan: fe_chan,
            server,
            pool,
            data,
            _host: host,
        }
    }

    impl World {
        /// Queues a one-page read or write of page `i` at block `block`.
        fn put(&mut self, write: bool, i: usize, block: u64) {
            let mut seg = [Segment::default(); MAX_DIRECT_SEGMENTS];
            seg[0] = Segment {
                gref: self.data[i],
                first_sect: 0,
                last_sect: 7,
            };
            let op = if write {
                xen_sys::BLKIF_OP_WRITE
            } else {
                xen_sys::BLKIF_OP_READ
            };
            let req = Request {
                operation: op as u8,
                id: i as u64,
                sector: block * 8,
                handle: 0,
                body: Body::Direct {
                    nr_segments: 1,
                    seg,
                },
            };
            let off = self.front.next_request_slot().unwrap();
            req.write(self.front.memory(), off, Protocol::Native)
                .unwrap();
        }

        /// Responses published so far (consumed), by id.
        fn take_responses(&mut self) -> Vec<(u64, Status)> {
            let mut out = Vec::new();
            while let Some(off) = self.front.take_response_slot().unwrap() {
                let r = Response::read(self.front.memory(), off).unwrap();
                out.push((r.id, r.status));
            }
            out
        }

        fn wait_responses(&mut self, n: usize) -> Vec<(u64, Status)> {
            let deadline = Instant::now() + T;
            let mut out = Vec::new();
            while out.len() < n {
                assert!(Instant::now() < deadline, "only {} responses", out.len());
                out.extend(self.take_responses());
                std::thread::yield_now();
            }
            out
        }
    }

    /// A read of one page into `gref` at block `block`.
    fn one_page_read(id: u64, gref: GrantRef, block: u64) -> Request {
        let mut seg = [Segment::default(); MAX_DIRECT_SEGMENTS];
        seg[0] = Segment {
            gref,
            first_sect: 0,
            last_sect: 7,
        };
        Request {
            operation: xen_sys::BLKIF_OP_READ as u8,
            id,
            sector: block * 8,
            handle: 0,
            body: Body::Direct {
                nr_segments: 1,
                seg,
            },
        }
    }

    fn sorted(mut v: Vec<(u64, Status)>) -> Vec<(u64, Status)> {
        v.sort_by_key(|r| r.0);
        v
    }

    #[test]
    fn fast_requests_are_answered_by_the_ring_thread_before_drain_returns() {
        let mut w = world(1);
        for i in 0..4 {
            w.mem
                .fill((i + 1) * PAGE_SIZE, PAGE_SIZE, i as u8 + 1)
                .unwrap();
            w.put(true, i, i as u64);
        }
        w.front.push_requests();
        w.server.drain().unwrap();
        // Executed on this thread and published together: all there without waiting.
        let got = sorted(w.take_responses());
        assert_eq!(got, (0..4).map(|i| (i, Status::Okay)).collect::<Vec<_>>());
        // (However long those writes took on a loaded machine, count the device as fast.)
        w.pool.shared.avg_ns.store(0, Ordering::Relaxed);
        for i in 4..8 {
            w.put(false, i, (i - 4) as u64);
        }
        w.front.push_requests();
        w.server.drain().unwrap();
        assert_eq!(w.take_responses().len(), 4);
        for i in 4..8 {
            let mut b = vec![0u8; PAGE_SIZE];
            w.mem.read_bytes((i + 1) * PAGE_SIZE, &mut b).unwrap();
            assert!(b.iter().all(|&x| x == (i - 4) as u8 + 1), "page {i}");
        }
        assert_eq!(w.guest.grants_in_use(FE), 9, "ring and 8 persistent grants");
        w.pool.shutdown();
    }

    #[test]
    fn slow_requests_go_to_the_workers_and_are_all_answered() {
        let mut w = world(2);
        // The device looks slow: the ring thread only queues.
        for _ in 0..32 {
            w.pool.shared.record(Duration::from_millis(1), 1);
        }
        assert!(!w.pool.shared.fast());
        for i in 0..8 {
            w.put(i % 2 == 0, i, i as u64);
        }
        w.front.push_requests();
        w.server.drain().unwrap();
        let got = sorted(w.wait_responses(8));
        assert_eq!(got, (0..8).map(|i| (i, Status::Okay)).collect::<Vec<_>>());
        // Fast requests bring the average back down.
        for _ in 0..64 {
            w.pool.shared.record(Duration::from_micros(1), 1);
        }
        assert!(w.pool.shared.fast());
        w.pool.shutdown();
    }

    #[test]
    fn deferred_responses_are_published_together_or_at_the_cap() {
        let mut w = world(1);
        let q = w.server.q.clone();
        // Consume PUSH_BATCH + 2 requests by hand, then answer without publishing.
        let n = PUSH_BATCH as usize + 2;
        for i in 0..n {
            w.put(false, i % 8, 0);
        }
        w.front.push_requests();
        {
            let mut r = q.ring.lock();
            for _ in 0..n {
                r.ring.take_request_slot().unwrap().unwrap();
            }
        }
        q.respond(100, 0, Status::Okay, false);
        q.respond(101, 0, Status::Okay, false);
        assert!(w.take_responses().is_empty(), "nothing published yet");
        q.publish();
        assert_eq!(w.take_responses().len(), 2);
        for i in 0..PUSH_BATCH as u64 - 1 {
            q.respond(i, 0, Status::Okay, false);
        }
        assert!(w.take_responses().is_empty());
        q.respond(99, 0, Status::Okay, false);
        assert_eq!(
            w.take_responses().len(),
            PUSH_BATCH as usize,
            "published at the cap"
        );
        w.pool.shutdown();
    }

    #[test]
    fn pool_refuses_work_after_shutdown_and_the_ring_answers_with_errors() {
        let mut w = world(1);
        w.pool.shutdown();
        for _ in 0..32 {
            w.pool.shared.record(Duration::from_millis(1), 1);
        }
        // (Two: a lone request would run on the ring thread.)
        w.put(false, 0, 0);
        w.put(false, 1, 1);
        w.front.push_requests();
        w.server.drain().unwrap();
        assert_eq!(
            sorted(w.take_responses()),
            vec![(0, Status::Error), (1, Status::Error)]
        );
    }

    #[test]
    fn a_lone_request_runs_on_the_ring_thread_even_when_the_device_is_slow() {
        let mut w = world(1);
        for _ in 0..32 {
            w.pool.shared.record(Duration::from_millis(1), 1);
        }
        assert!(!w.pool.shared.fast());
        // Queue depth 1: answered (and published) before drain returns, by this thread.
        for i in 0..3 {
            w.put(i % 2 == 0, i, i as u64);
            w.front.push_requests();
            w.server.drain().unwrap();
            assert_eq!(w.take_responses(), vec![(i as u64, Status::Okay)]);
        }
        assert_eq!(w.server.q.outstanding.load(Ordering::Relaxed), 0);
        // Two at once still go to the workers while the device is slow.
        w.put(false, 3, 3);
        w.put(false, 4, 4);
        w.front.push_requests();
        w.server.drain().unwrap();
        assert_eq!(
            sorted(w.wait_responses(2)),
            vec![(3, Status::Okay), (4, Status::Okay)]
        );
        w.pool.shutdown();
        assert_eq!(w.server.q.outstanding.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_full_persistent_cache_falls_back_to_per_request_mappings() {
        let mut w = world_with(1, 3);
        for i in 0..8 {
            w.mem
                .fill((i + 1) * PAGE_SIZE, PAGE_SIZE, 0x40 + i as u8)
                .unwrap();
            w.put(true, i, 8 + i as u64);
        }
        w.front.push_requests();
        w.server.drain().unwrap();
        let got = sorted(w.wait_responses(8));
        assert_eq!(got, (0..8).map(|i| (i, Status::Okay)).collect::<Vec<_>>());
        // The ring and three cached grants stay mapped; the others were released.
        assert_eq!(w.guest.grants_in_use(FE), 4);
        w.mem.fill(PAGE_SIZE, 8 * PAGE_SIZE, 0).unwrap();
        for i in 0..8 {
            w.put(false, i, 8 + i as u64);
        }
        w.front.push_requests();
        w.server.drain().unwrap();
        assert_eq!(w.wait_responses(8).len(), 8);
        for i in 0..8 {
            let mut b = vec![0u8; PAGE_SIZE];
            w.mem.read_bytes((i + 1) * PAGE_SIZE, &mut b).unwrap();
            assert!(b.iter().all(|&x| x == 0x40 + i as u8), "page {i}");
        }
        w.pool.shutdown();
        assert_eq!(w.guest.grants_in_use(FE), 4);
    }

    #[test]
    fn one_stalled_request_does_not_make_the_device_slow() {
        let w = world(1);
        let p = &w.pool.shared;
        for _ in 0..16 {
            p.record(Duration::from_micros(3), 1);
        }
        p.record(Duration::from_millis(20), 1);
        assert!(p.fast(), "one 20 ms outlier");
        p.record(Duration::from_millis(20), 1);
        p.record(Duration::from_millis(20), 1);
        assert!(!p.fast(), "a device that keeps taking long is slow");
        // A batch's time is per request.
        p.avg_ns.store(0, Ordering::Relaxed);
        p.record(Duration::from_micros(320), 32);
        assert_eq!(p.avg_ns.load(Ordering::Relaxed), 10_000 / 8);
    }

    #[test]
    fn slab_is_append_only_and_bounded() {
        let slab = Slab::new(SLAB_CHUNK + 1);
        assert!(slab.get(0).is_none());
        assert_eq!(slab.set(0, 10u32), Ok(()));
        assert_eq!(slab.set(0, 11), Err(11), "set once");
        assert_eq!(slab.set(SLAB_CHUNK, 12), Ok(()));
        assert_eq!(slab.set(2 * SLAB_CHUNK, 13), Err(13), "beyond the capacity");
        assert_eq!((slab.get(0), slab.get(SLAB_CHUNK)), (Some(&10), Some(&12)));
        assert!(slab.get(1).is_none() && slab.get(5 * SLAB_CHUNK).is_none());
        assert!(Slab::<u32>::new(0).set(0, 1).is_err());
    }

    #[test]
    fn idle_poll_window_follows_the_gaps_between_requests() {
        let us = Duration::from_micros;
        let mut p = IdlePoll::new(us(1000));
        assert_eq!(p.window(), Duration::ZERO, "no poll before a gap was seen");
        // A 300 us gap: a poll of 375 us would have caught it.
        p.slept(us(300));
        assert_eq!(p.window(), us(375));
        // Doubling at least, never beyond the maximum.
        p.slept(us(10));
        assert_eq!(p.window(), us(750));
        p.slept(us(900));
        assert_eq!(p.window(), us(1000));
        // Idle longer than the maximum: halved, down to zero.
        p.slept(Duration::from_millis(50));
        assert_eq!(p.window(), us(500));
        for _ in 0..6 {
            p.slept(Duration::from_millis(50));
        }
        assert_eq!(p.window(), Duration::ZERO);
        // Zero maximum: never polls.
        let mut off = IdlePoll::new(Duration::ZERO);
        off.slept(us(1));
        assert_eq!(off.window(), Duration::ZERO);
    }

    #[test]
    fn a_request_found_by_polling_needs_no_notification_until_the_ring_sleeps() {
        let mut w = world(1);
        w.pool.shared.avg_ns.store(0, Ordering::Relaxed);
        w.put(false, 0, 0);
        assert!(
            w.front.push_requests_and_check_notify(),
            "event armed at start"
        );
        w.server.drain_ready().unwrap();
        assert_eq!(w.take_responses(), vec![(0, Status::Okay)]);
        // The ring thread polls without re-arming the event: the frontend need not notify.
        w.put(false, 1, 1);
        assert!(!w.front.push_requests_and_check_notify());
        assert!(
            w.server.poll_idle(Instant::now(), T).unwrap(),
            "seen by polling"
        );
        w.server.drain_ready().unwrap();
        assert_eq!(w.take_responses(), vec![(1, Status::Okay)]);
        // Nothing more: the poll gives up after its window and the final check arms the
        // event, so the next request is notified.
        let t = Instant::now();
        assert!(!w.server.poll_idle(t, Duration::from_millis(2)).unwrap());
        assert!(t.elapsed() >= Duration::from_millis(2));
        assert!(!w.server.final_check().unwrap());
        w.put(false, 2, 2);
        assert!(w.front.push_requests_and_check_notify());
        w.pool.shutdown();
    }

    #[test]
    fn idle_poll_takes_a_request_posted_meanwhile_and_serve_returns_once_idle() {
        let mut w = world(1);
        w.pool.shared.avg_ns.store(0, Ordering::Relaxed);
        let gref = w.data[3];
        let mut front = w.front;
        let poster = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let off = front.next_request_slot().unwrap();
            one_page_read(7, gref, 0)
                .write(front.memory(), off, Protocol::Native)
                .unwrap();
            let notify = front.push_requests_and_check_notify();
            (front, notify)
        });
        // A long window: the request arrives while the thread polls.
        let poll = IdlePoll {
            window_ns: T.as_nanos() as u64,
            max_ns: T.as_nanos() as u64,
        };
        assert!(w.server.poll_idle(Instant::now(), poll.window()).unwrap());
        let (mut front, notify) = poster.join().unwrap();
        assert!(notify, "the first request of a fresh ring is notified");
        // serve() answers it, polls for 1 ms more, arms the event and returns.
        let poll = IdlePoll {
            window_ns: 1_000_000,
            max_ns: 1_000_000,
        };
        w.server.serve(&poll).unwrap();
        let r = front.take_response_slot().unwrap().expect("answered");
        assert_eq!(Response::read(front.memory(), r).unwrap().id, 7);
        let off = front.next_request_slot().unwrap();
        one_page_read(8, gref, 8)
            .write(front.memory(), off, Protocol::Native)
            .unwrap();
        assert!(
            front.push_requests_and_check_notify(),
            "armed before serve returned"
        );
        assert_eq!(w.server.q.stats.polled(), 0);
        // serve() polling for 2 s takes request 9, posted 20 ms into it, and counts it.
        // (Request 8 is answered first, without polling: the window of 1 ms passes.)
        w.server.serve(&poll).unwrap();
        let poster = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let off = front.next_request_slot().unwrap();
            one_page_read(9, gref, 9)
                .write(front.memory(), off, Protocol::Native)
                .unwrap();
            let notify = front.push_requests_and_check_notify();
            (front, notify)
        });
        let poll = IdlePoll {
            window_ns: 2_000_000_000,
            max_ns: 2_000_000_000,
        };
        w.server.serve(&poll).unwrap();
        let (mut front, notify) = poster.join().unwrap();
        // (Notified: the last serve() armed the event before returning; polling spares
        // the notifications of the requests after the first, as tested above.)
        assert!(notify);
        assert_eq!(w.server.q.stats.polled(), 1);
        let mut ids = Vec::new();
        while let Some(r) = front.take_response_slot().unwrap() {
            ids.push(Response::read(front.memory(), r).unwrap().id);
        }
        assert_eq!(ids, [8, 9]);
        w.pool.shutdown();
    }

    #[test]
    fn gref_hasher_spreads_small_keys() {
        use std::hash::BuildHasher;
        let b = BuildHasherDefault::<GrefHasher>::default();
        let mut buckets = [0u32; 64];
        for r in 0..4096u32 {
            buckets[(b.hash_one(GrantRef(r)) >> 58) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| n > 0), "top bits used: {buckets:?}");
    }
}
