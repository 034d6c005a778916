//! Serving one ring: a thread consumes requests, a worker pool does the I/O.
//!
//! I/O runs on a small pool of threads doing positioned vectored system calls
//! (`preadv`/`pwritev` straight into the grant-mapped pages, `fdatasync`, `fallocate`), so
//! a slow request never stalls the ring: the ring thread keeps validating, mapping and
//! dispatching, and each worker answers as soon as its request completes (responses in
//! completion order). A pool was chosen over io_uring because it works on every kernel
//! and in sandboxes that forbid io_uring, serves files and block devices alike, needs no
//! `unsafe` buffer-lifetime contract with the kernel beyond one call, and at the queue
//! depths a blkfront uses (32-512 per ring) a handful of threads keeps a page-cache or
//! NVMe device busy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{Receiver, Sender};
use parking_lot::Mutex;
use tracing::{debug, warn};
use xen_types::mem::SharedMemory;
use xen_types::{DomId, GrantRef, PAGE_SIZE};

use crate::abi::{Protocol, Request, Response, Segment, Status};
use crate::disk::Disk;
use crate::host::{EventChannel, Host};
use crate::request::{
    check_request, check_segments, execute, read_indirect_segments, Check, Limits, SegmentPages,
    Validated,
};
use crate::ring::BackRing;

/// How long the ring thread sleeps between checks of its stop flag.
const POLL: Duration = Duration::from_millis(50);

/// The mapped data pages of one request.
pub(crate) enum Pages<M> {
    /// No data (flush, discard).
    None,
    /// One batch mapping: segment `i` is page `i`.
    Batch(M),
    /// Persistent grants: one cached mapping per segment.
    Persistent(Vec<Arc<M>>),
}

impl<M: SharedMemory> SegmentPages for Pages<M> {
    fn page(&self, i: usize) -> (&dyn SharedMemory, usize) {
        match self {
            Pages::None => unreachable!("no segments"),
            Pages::Batch(m) => (m, i * PAGE_SIZE),
            Pages::Persistent(v) => (&*v[i], 0),
        }
    }
}

/// State of one ring shared by its thread and the workers.
pub(crate) struct QueueShared<H: Host> {
    ring: Mutex<BackRing<H::Mapping>>,
    chan: H::Channel,
    /// Set when the frontend broke the ring protocol: stop serving it.
    broken: AtomicBool,
}

impl<H: Host> QueueShared<H> {
    fn respond(&self, id: u64, operation: u8, status: Status) {
        let mut r = self.ring.lock();
        let off = r.next_response();
        let rsp = Response {
            id,
            operation,
            status,
        };
        let notify = rsp
            .write(r.memory(), off)
            .map_err(crate::Error::from)
            .and_then(|()| r.push_responses());
        drop(r);
        match notify {
            Ok(true) => {
                // The frontend may be gone; nothing else to do then.
                let _ = self.chan.notify();
            }
            Ok(false) => {}
            Err(e) => warn!("writing a response: {e}"),
        }
    }
}

/// A request handed to the worker pool.
pub(crate) struct Job<H: Host> {
    q: Arc<QueueShared<H>>,
    v: Validated,
    segs: Vec<Segment>,
    pages: Pages<H::Mapping>,
    disk: Arc<Disk>,
}

/// The I/O worker pool of a device.
pub(crate) struct Pool<H: Host> {
    tx: Option<Sender<Job<H>>>,
    threads: Vec<JoinHandle<()>>,
}

impl<H: Host> Pool<H> {
    pub(crate) fn new(workers: usize, name: &str) -> Result<Self, crate::Error> {
        let (tx, rx) = crossbeam::channel::unbounded::<Job<H>>();
        let mut threads = Vec::new();
        for i in 0..workers.max(1) {
            let rx: Receiver<Job<H>> = rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("{name}-io{i}"))
                    .spawn(move || {
                        let mut iov = Vec::new();
                        for job in rx {
                            let status =
                                execute(&job.v, &job.segs, &job.pages, &job.disk, &mut iov);
                            // Unmap before answering: the frontend may end the grants as
                            // soon as it sees the response.
                            drop(job.pages);
                            job.q.respond(job.v.id, job.v.operation, status);
                        }
                    })?,
            );
        }
        Ok(Pool {
            tx: Some(tx),
            threads,
        })
    }

    pub(crate) fn sender(&self) -> Sender<Job<H>> {
        self.tx.clone().expect("pool running")
    }

    /// Finishes every queued job, then stops the workers.
    pub(crate) fn shutdown(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl<H: Host> Drop for Pool<H> {
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
}

/// Serves a ring until `stop` is set, the channel closes or the frontend breaks the
/// protocol.
pub(crate) struct RingServer<H: Host> {
    host: Arc<H>,
    q: Arc<QueueShared<H>>,
    cfg: QueueConfig,
    disk: Arc<Disk>,
    jobs: Sender<Job<H>>,
    persistent: HashMap<GrantRef, Arc<H::Mapping>>,
    segs: Vec<Segment>,
}

impl<H: Host> RingServer<H> {
    pub(crate) fn new(
        host: Arc<H>,
        ring: BackRing<H::Mapping>,
        chan: H::Channel,
        cfg: QueueConfig,
        disk: Arc<Disk>,
        jobs: Sender<Job<H>>,
    ) -> Self {
        RingServer {
            host,
            q: Arc::new(QueueShared {
                ring: Mutex::new(ring),
                chan,
                broken: AtomicBool::new(false),
            }),
            cfg,
            disk,
            jobs,
            persistent: HashMap::new(),
            segs: Vec::with_capacity(64),
        }
    }

    /// The thread body.
    pub(crate) fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) && !self.q.broken.load(Ordering::Relaxed) {
            if let Err(e) = self.drain() {
                warn!("frontend {:?}: {e}; ring stopped", self.cfg.frontend);
                self.q.broken.store(true, Ordering::Relaxed);
                break;
            }
            match self.q.chan.wait(POLL) {
                Ok(_) => {}
                Err(e) => {
                    debug!("frontend {:?} event channel: {e}", self.cfg.frontend);
                    break;
                }
            }
        }
    }

    /// Consumes every available request, then re-arms the event.
    pub(crate) fn drain(&mut self) -> Result<(), crate::Error> {
        loop {
            let req = {
                let mut r = self.q.ring.lock();
                if r.unconsumed()? == 0 && !r.final_check_for_requests()? {
                    return Ok(());
                }
                let off = r.next_request();
                Request::read(r.memory(), off, self.cfg.proto)?
            };
            self.handle(&req);
        }
    }

    fn handle(&mut self, req: &Request) {
        let mut segs = std::mem::take(&mut self.segs);
        let v = match check_request(req, &self.cfg.limits, &mut segs) {
            Err(rej) => {
                self.q.respond(req.id, rej.operation, rej.status);
                self.segs = segs;
                return;
            }
            Ok(Check::Ready(v)) => v,
            Ok(Check::Indirect {
                v,
                nr_segments,
                grefs,
                pages,
            }) => {
                // With persistent grants the indirect page is persistent too (as in
                // Linux): mapped once and kept; otherwise mapped for this request only.
                let cached = (self.cfg.persistent && pages == 1)
                    .then(|| self.persistent_map(grefs[0]).ok())
                    .flatten();
                let read = match cached {
                    Some(m) => read_indirect_segments(&*m, nr_segments, &mut segs),
                    None => self
                        .host
                        .map_grants(self.cfg.frontend, &grefs[..pages], false)
                        .map_err(|_| Status::Error)
                        .and_then(|m| read_indirect_segments(&m, nr_segments, &mut segs)),
                };
                let ok = read.and_then(|()| {
                    check_segments(&v, &segs, &self.cfg.limits).map_err(|r| r.status)
                });
                if let Err(status) = ok {
                    self.q.respond(v.id, v.operation, status);
                    self.segs = segs;
                    return;
                }
                v
            }
        };
        let pages = match self.map(&segs, v.kind.writes_pages()) {
            Ok(p) => p,
            Err(e) => {
                debug!("mapping segments of request {}: {e}", v.id);
                self.q.respond(v.id, v.operation, Status::Error);
                self.segs = segs;
                return;
            }
        };
        self.segs = Vec::with_capacity(segs.len().max(16));
        let job = Job {
            q: self.q.clone(),
            v,
            segs,
            pages,
            disk: self.disk.clone(),
        };
        if let Err(e) = self.jobs.send(job) {
            let job = e.into_inner();
            job.q.respond(job.v.id, job.v.operation, Status::Error);
        }
    }

    /// The persistent mapping of `gref`, mapping it (read-write, as Linux does: the
    /// frontend reuses persistent grants for reads and writes) if the cache has room.
    fn persistent_map(&mut self, gref: GrantRef) -> Result<Arc<H::Mapping>, crate::Error> {
        if let Some(m) = self.persistent.get(&gref) {
            return Ok(m.clone());
        }
        if self.persistent.len() >= self.cfg.max_persistent_grants {
            return Err(crate::Error::Config("persistent grant cache full".into()));
        }
        let m = Arc::new(self.host.map_grants(self.cfg.frontend, &[gref], true)?);
        self.persistent.insert(gref, m.clone());
        Ok(m)
    }

    fn map(&mut self, segs: &[Segment], writable: bool) -> Result<Pages<H::Mapping>, crate::Error> {
        if segs.is_empty() {
            return Ok(Pages::None);
        }
        let fe = self.cfg.frontend;
        if self.cfg.persistent {
            let missing = segs
                .iter()
                .filter(|s| !self.persistent.contains_key(&s.gref))
                .count();
            if self.persistent.len() + missing <= self.cfg.max_persistent_grants {
                let mut v = Vec::with_capacity(segs.len());
                for s in segs {
                    v.push(self.persistent_map(s.gref)?);
                }
                return Ok(Pages::Persistent(v));
            }
        }
        let refs: Vec<GrantRef> = segs.iter().map(|s| s.gref).collect();
        Ok(Pages::Batch(self.host.map_grants(fe, &refs, writable)?))
    }
}
