//! The event loop: one thread, a tokio current-thread runtime, one task per connection.
//!
//! Every connection (the dom0 socket, per-domain sockets, in-process streams, and domain rings
//! bridged to in-process streams) is a task that reads a batch of requests (all the complete
//! messages one read returns), runs them through the [`Engine`], appends the changes to the
//! journal, flushes it once for the batch (group commit), then sends what the batch produced.
//! Changes are written before anything that could observe them runs (see `Group`); when a write
//! fails, the changes in it are undone and answered `EIO`. Replies and watch events are encoded
//! straight into each connection's output buffer (one buffer per connection, so a connection
//! sees its events and replies in the order the engine made them); after the journal flush,
//! every connection that got output is written at once with one non-blocking `write` each, from
//! the task that made the output: a write that fans out to 1,000 watchers costs 1,000 `write`s
//! in a row and no task switch. Only output the socket does not take at once is left to the
//! connection's own task, which waits for the socket to drain before it reads more requests. A
//! connection that lets more than [`Quotas::outstanding_bytes`](crate::Quotas) of events pile
//! up unread is closed, so a client that never reads cannot make the daemon hold unbounded
//! memory. An oversized or unframeable message closes only that connection.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use xen_types::mem::SharedMemory;
use xen_types::Errno;
use xen_types::{DomId, EvtchnPort};
use xenstore::ring::{Doorbell, Ring, Side};
use xenstore::wire::{self, Header, Message, Op, TxId};

use crate::engine::{Checkpoint, ConnId, Effect, Engine, IdMap, Outbox};
use crate::journal::Journal;
use crate::{Config, Error, Result};

/// Maps an introduced domain's ring: given the domain, its ring gfn and event channel port,
/// returns the ring page and a doorbell bound to that port. With the simulated host this
/// is a grant/foreign mapping plus an interdomain event channel; tests use local pages and
/// [`EventfdDoorbell`](xenstore::ring::EventfdDoorbell)s.
pub type RingConnector = Arc<dyn Fn(DomId, i64, EvtchnPort) -> io::Result<RingParts> + Send + Sync>;

/// The connector C xenstored uses: map the ring through grant reference
/// `GNTTAB_RESERVED_XENSTORE` (filled by the domain builder) with `gnttab`, and bind an
/// interdomain event channel to the domain's port on a fresh handle from `open_evtchn`
/// (one handle per domain, so each ring's doorbell waits only for its own port). Works on
/// real Xen (`Gnttab::open`, `Evtchn::open`) and on the simulated host (`open_sim`).
pub fn grant_ring_connector(
    gnttab: gnttab::Gnttab,
    open_evtchn: impl Fn() -> evtchn::Result<evtchn::Evtchn> + Send + Sync + 'static,
) -> RingConnector {
    let gnttab = std::sync::Mutex::new(gnttab);
    Arc::new(move |domid, _gfn, port| {
        let map = gnttab
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_one(
                domid,
                xen_types::GrantRef(xen_sys::GNTTAB_RESERVED_XENSTORE),
                gnttab::Access::ReadWrite,
            )
            .map_err(|e| io::Error::from_raw_os_error(e.errno().0))?;
        let ev = open_evtchn().map_err(|e| io::Error::from_raw_os_error(e.errno().0))?;
        let local = ev
            .bind_interdomain(domid, port)
            .map_err(|e| io::Error::from_raw_os_error(e.errno().0))?;
        let mem: Arc<dyn SharedMemory> = Arc::new(map);
        let bell: Arc<dyn Doorbell> = Arc::new(xenstore::ring::EvtchnDoorbell::new(ev, local));
        Ok((mem, bell))
    })
}

/// A mapped ring and its doorbell, as a [`RingConnector`] returns them.
pub type RingParts = (Arc<dyn SharedMemory>, Arc<dyn Doorbell>);

/// What a [`DomainProbe`] found out about an introduced domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainFate {
    /// Shut down or crashed, not yet dying: `@releaseDomain` fires (once).
    ShutDown,
    /// Dying or gone: the domain is released.
    Gone,
}

/// Given the introduced domains, returns those that shut down, are dying or are gone
/// (domains not listed are running).
pub type DomainProbe = Box<dyn FnMut(&[DomId]) -> Vec<(DomId, DomainFate)> + Send>;

/// How the daemon learns that introduced domains died, as C xenstored does with
/// `VIRQ_DOM_EXC` and `xc_domain_getinfo`: `virq` is waited on (a doorbell on the bound
/// virtual IRQ; only its `wait` is used) in a helper thread; after each event `probe` is
/// called on the event loop with the introduced domains: those that are dying or gone are
/// released as by `RELEASE` (their nodes removed, `@releaseDomain` and
/// `@releaseDomain/<domid>` fired, their rings closed); those newly shut down fire
/// `@releaseDomain` once, as C does, so toolstacks waiting for a shutdown see it.
pub struct DomainWatch {
    /// Signalled on every domain exception.
    pub virq: Arc<dyn Doorbell>,
    /// The dying or gone domains among those given.
    pub probe: DomainProbe,
}

impl std::fmt::Debug for DomainWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainWatch").finish_non_exhaustive()
    }
}

/// One connection as the event loop sees it: its socket and its output not yet written.
struct Peer {
    domid: DomId,
    /// The socket, registered for readability only, so a client taking its replies and
    /// events does not wake the event loop: output is written directly (see
    /// [`Peer::flush`]) and only a full socket is waited on ([`Peer::drain`]).
    sock: AsyncFd<StdUnixStream>,
    /// Encoded replies and events; `out[sent..]` is not written yet.
    out: RefCell<Vec<u8>>,
    sent: Cell<usize>,
    /// Queued in [`Shared::dirty`].
    dirty: Cell<bool>,
    /// Set to have the task close the connection.
    closed: Cell<bool>,
    /// Wakes the task: to close, or to wait for output the socket did not take.
    attention: Signal,
}

/// A wake-up for one task of this thread: a flag and the waiting task's waker (what
/// `tokio::sync::Notify` does, without its lock, on the per-request path).
#[derive(Default)]
struct Signal {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Signal {
    fn notify(&self) {
        self.set.set(true);
        let w = self.waker.borrow_mut().take();
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Completes once [`Signal::notify`] was called since the last completion.
    fn wait(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.set.replace(false) {
                return Poll::Ready(());
            }
            let mut w = self.waker.borrow_mut();
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
            Poll::Pending
        })
    }
}

impl Peer {
    /// A connection from `domid` on `sock` with no output yet.
    fn new(domid: DomId, sock: AsyncFd<StdUnixStream>) -> Self {
        Peer {
            domid,
            sock,
            out: RefCell::new(Vec::new()),
            sent: Cell::new(0),
            dirty: Cell::new(false),
            closed: Cell::new(false),
            attention: Signal::default(),
        }
    }

    fn close(&self) {
        self.closed.set(true);
        self.attention.notify();
    }

    fn pending(&self) -> usize {
        self.out.borrow().len() - self.sent.get()
    }

    /// Writes what the socket takes without blocking; true when nothing is left.
    fn flush(&self) -> io::Result<bool> {
        let mut out = self.out.borrow_mut();
        let mut off = self.sent.get();
        let mut sock = self.sock.get_ref();
        while off < out.len() {
            match sock.write(&out[off..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let done = off == out.len();
        if done {
            out.clear();
            off = 0;
            if out.capacity() > 1 << 20 {
                out.shrink_to(4096);
            }
        } else if off >= 64 * 1024 && off * 2 >= out.len() {
            out.drain(..off);
            off = 0;
        }
        self.sent.set(off);
        Ok(done)
    }

    /// Waits until the socket has taken all pending output, through a second,
    /// write-only registration of it (a duplicate descriptor) that lives only while the
    /// socket is full. False if the connection is to close, or the socket failed.
    async fn drain(&self) -> bool {
        let w = match self
            .sock
            .get_ref()
            .try_clone()
            .and_then(|d| register(d, Interest::WRITABLE))
        {
            Ok(w) => w,
            // No descriptor to spare (EMFILE): retry the write every few milliseconds.
            Err(_) => return self.drain_polling().await,
        };
        while self.pending() > 0 {
            if self.closed.get() {
                return false;
            }
            tokio::select! {
                biased;
                _ = self.attention.wait() => {}
                g = w.writable() => {
                    let Ok(mut g) = g else {
                        return false;
                    };
                    match self.flush() {
                        Ok(true) => {}
                        Ok(false) => g.clear_ready(),
                        Err(_) => return false,
                    }
                }
            }
        }
        true
    }

    /// [`Peer::drain`] without a write registration.
    async fn drain_polling(&self) -> bool {
        while self.pending() > 0 {
            if self.closed.get() {
                return false;
            }
            tokio::select! {
                biased;
                _ = self.attention.wait() => {}
                _ = tokio::time::sleep(Duration::from_millis(5)) => {
                    if self.flush().is_err() {
                        return false;
                    }
                }
            }
        }
        true
    }
}

/// Flags for [`Shared::append`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A reply (or event) for the connection that made the request: never dropped.
    Own,
    /// An event for another connection: subject to the outstanding-output quota.
    Other,
}

/// Requests of one connection's batch whose changes are recorded in the journal and not
/// written yet (the group written by one `write`): their replies and events wait for that
/// write. A request that could observe their changes (anything but another change) first
/// has the group written; if the write fails, every request in the group is answered
/// `EIO` and the store returns to the checkpoint taken when the group opened.
#[derive(Default)]
struct Group {
    /// The store before the group's first request; `None` when no group is open.
    checkpoint: Option<Checkpoint>,
    /// The journal's pending bytes when the group opened (older records are not the
    /// group's: they are retried, never dropped).
    mark: usize,
    /// The requesting connection.
    conn: Option<(ConnId, Rc<Peer>)>,
    /// The headers of the group's requests, to answer them with `EIO`.
    reqs: Vec<Header>,
    /// Replies, events and effects, delivered once the group is written.
    outbox: Outbox,
}

/// Requests that join a [`Group`]: changes outside a transaction, and transaction ends.
/// Their only side effects are on the store (undone by a rollback) and, for a transaction
/// end, the end of the transaction.
fn groups(h: &Header) -> bool {
    if h.ty == Op::TransactionEnd.raw() {
        return true;
    }
    h.tx_id == TxId::NONE
        && [Op::Write, Op::Mkdir, Op::Rm, Op::SetPerms]
            .iter()
            .any(|op| op.raw() == h.ty)
}

struct Shared {
    engine: RefCell<Engine>,
    journal: RefCell<Option<Journal>>,
    /// The open group of unwritten changes (only with a journal).
    group: RefCell<Group>,
    group_open: Cell<bool>,
    conns: RefCell<IdMap<ConnId, Rc<Peer>>>,
    /// Connections with output appended since the last [`Shared::flush_dirty`].
    dirty: RefCell<Vec<Rc<Peer>>>,
    /// The buffer every connection reads into.
    read_buf: RefCell<Box<[u8]>>,
    bridges: RefCell<HashMap<DomId, Arc<AtomicBool>>>,
    connector: Option<RingConnector>,
    max_queued: usize,
}

/// A daemon, set up (store recovered, sockets bound) and ready to run.
pub struct Daemon {
    config: Config,
    listener: std::os::unix::net::UnixListener,
    domain_listeners: Vec<(DomId, std::os::unix::net::UnixListener)>,
    engine: Engine,
    journal: Option<Journal>,
    connector: Option<RingConnector>,
    rings: Vec<(DomId, RingParts)>,
    domain_watch: Option<DomainWatch>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("socket", &self.config.socket_path)
            .finish_non_exhaustive()
    }
}

fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    }
    if path.exists() {
        if StdUnixStream::connect(path).is_ok() {
            return Err(Error::Io {
                what: format!("{}: another xenstored is listening", path.display()),
                source: io::ErrorKind::AddrInUse.into(),
            });
        }
        let _ = std::fs::remove_file(path);
    }
    let l = std::os::unix::net::UnixListener::bind(path)
        .map_err(Error::io(format!("binding {}", path.display())))?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    l.set_nonblocking(true)
        .map_err(Error::io("setting the socket non-blocking"))?;
    Ok(l)
}

impl Daemon {
    /// Recovers the persisted store (if `config.data_dir` is set) and binds the sockets.
    pub fn new(config: Config) -> Result<Daemon> {
        let mut engine = Engine::new(config.quotas, config.keep_orphans);
        let journal = match &config.data_dir {
            Some(dir) => {
                let (j, rec) = Journal::open(dir, config.sync, config.snapshot_after).map_err(
                    Error::io(format!("recovering the store in {}", dir.display())),
                )?;
                if !rec.tree.is_empty() {
                    engine.restore(rec.tree, rec.gen);
                }
                tracing::info!(
                    nodes = engine.tree().len(),
                    replayed = rec.replayed,
                    discarded = rec.discarded,
                    "store recovered"
                );
                Some(j)
            }
            None => None,
        };
        let listener = bind(&config.socket_path)?;
        let mut domain_listeners = Vec::new();
        for (d, p) in &config.domain_sockets {
            domain_listeners.push((*d, bind(p)?));
        }
        let mut d = Daemon {
            config,
            listener,
            domain_listeners,
            engine,
            journal,
            connector: None,
            rings: Vec::new(),
            domain_watch: None,
        };
        d.persist_dirty()?;
        Ok(d)
    }

    /// Writes the nodes the engine set up at start (a store that cannot take them is an
    /// error: the daemon does not start on a journal it cannot write).
    fn persist_dirty(&mut self) -> Result<()> {
        let dirty = self.engine.take_dirty();
        if let Some(j) = &mut self.journal {
            for p in dirty {
                j.record(self.engine.tree(), &p);
            }
            j.flush().map_err(Error::io("writing the journal"))?;
        }
        Ok(())
    }

    /// The switches that make the journal's writes fail (tests only).
    #[cfg(test)]
    pub(crate) fn journal_faults(&self) -> Option<Arc<crate::journal::Faults>> {
        self.journal.as_ref().map(Journal::faults)
    }

    /// Sets how introduced domains' rings are mapped. Without one, `INTRODUCE` only records
    /// the domain (enough for toolstacks that talk to the daemon over the socket).
    pub fn set_ring_connector(&mut self, c: RingConnector) {
        self.connector = Some(c);
    }

    /// Serves domain `domid` over an already mapped ring from the start, as C xenstored
    /// serves dom0's own kernel over the page of `/proc/xen/xsd_kva` (see
    /// [`dom0`](crate::dom0)). The other end is kicked once at start, so requests it queued
    /// before the daemon ran are answered.
    pub fn serve_ring(
        &mut self,
        domid: DomId,
        mem: Arc<dyn SharedMemory>,
        bell: Arc<dyn Doorbell>,
    ) {
        self.rings.push((domid, (mem, bell)));
    }

    /// Releases introduced domains when they die (see [`DomainWatch`]).
    pub fn watch_domains(&mut self, w: DomainWatch) {
        self.domain_watch = Some(w);
    }

    /// The dom0 socket path.
    pub fn socket_path(&self) -> &Path {
        &self.config.socket_path
    }

    /// Runs in a new thread; the handle stops it.
    pub fn spawn(self) -> Result<DaemonHandle> {
        let (inject_tx, inject_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let socket = self.config.socket_path.clone();
        let thread = std::thread::Builder::new()
            .name("xenstored".into())
            .spawn(move || {
                self.run_with(inject_rx, async {
                    let _ = stop_rx.await;
                })
            })
            .map_err(Error::io("spawning the daemon thread"))?;
        Ok(DaemonHandle {
            socket,
            inject: inject_tx,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Runs on this thread until `shutdown` completes.
    pub fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        let (_tx, rx) = mpsc::unbounded_channel();
        self.run_with(rx, shutdown)
    }

    fn run_with(
        self,
        mut inject: mpsc::UnboundedReceiver<(DomId, StdUnixStream)>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::io("starting the runtime"))?;
        let local = tokio::task::LocalSet::new();
        let shared = Rc::new(Shared {
            engine: RefCell::new(self.engine),
            journal: RefCell::new(self.journal),
            group: RefCell::new(Group::default()),
            group_open: Cell::new(false),
            conns: RefCell::new(IdMap::default()),
            dirty: RefCell::new(Vec::new()),
            read_buf: RefCell::new(vec![0u8; 16 * 1024].into_boxed_slice()),
            bridges: RefCell::new(HashMap::new()),
            connector: self.connector,
            max_queued: self.config.quotas.outstanding_bytes,
        });
        let main = self.listener;
        let extra = self.domain_listeners;
        let rings = self.rings;
        let domain_watch = self.domain_watch;
        let sh = shared.clone();
        local.block_on(&rt, async move {
            if let Some(w) = domain_watch {
                let rx =
                    spawn_virq_waiter(w.virq).map_err(Error::io("starting the VIRQ thread"))?;
                tokio::task::spawn_local(domain_exc_loop(sh.clone(), rx, w.probe));
            }
            for (domid, (mem, bell)) in rings {
                let kick = bell.clone();
                sh.serve_ring(domid, mem, bell)
                    .map_err(Error::io("serving a ring"))?;
                if let Err(e) = kick.notify() {
                    tracing::warn!(%domid, "ring kick: {e}");
                }
            }
            let l = UnixListener::from_std(main).map_err(Error::io("registering the socket"))?;
            tokio::task::spawn_local(accept_loop(sh.clone(), l, DomId::DOM0));
            for (d, l) in extra {
                let l = UnixListener::from_std(l).map_err(Error::io("registering a socket"))?;
                tokio::task::spawn_local(accept_loop(sh.clone(), l, d));
            }
            let sh2 = sh.clone();
            tokio::task::spawn_local(async move {
                while let Some((domid, s)) = inject.recv().await {
                    if s.set_nonblocking(true).is_err() {
                        continue;
                    }
                    if let Ok(s) = UnixStream::from_std(s) {
                        tokio::task::spawn_local(conn_task(sh2.clone(), s, domid));
                    }
                }
            });
            shutdown.await;
            Ok::<(), Error>(())
        })?;
        // Stop bridges and flush what is pending.
        for stop in shared.bridges.borrow().values() {
            stop.store(true, Ordering::Relaxed);
        }
        if let Some(j) = shared.journal.borrow_mut().as_mut() {
            j.flush().map_err(Error::io("flushing the journal"))?;
        }
        Ok(())
    }
}

async fn accept_loop(shared: Rc<Shared>, l: UnixListener, domid: DomId) {
    loop {
        match l.accept().await {
            Ok((s, _)) => {
                tokio::task::spawn_local(conn_task(shared.clone(), s, domid));
            }
            Err(e) => {
                tracing::warn!("accept: {e}");
                // Out of descriptors: back off briefly rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

impl Shared {
    fn process(
        self: &Rc<Self>,
        id: ConnId,
        peer: &Rc<Peer>,
        h: &Header,
        payload: &[u8],
        outbox: &mut Outbox,
    ) {
        let grouped = groups(h) && self.journal.borrow().is_some();
        if self.group_open.get() && !grouped {
            // It could observe the group's changes: they are written first.
            self.close_group();
        }
        outbox.clear();
        let mut eng = self.engine.borrow_mut();
        if eng.read_into(id, h, payload, &mut peer.out.borrow_mut()) {
            if !peer.dirty.replace(true) {
                self.dirty.borrow_mut().push(peer.clone());
            }
            return;
        }
        let m = Message {
            header: *h,
            payload: payload.to_vec(),
        };
        if grouped {
            if self
                .group
                .borrow()
                .conn
                .as_ref()
                .is_some_and(|(c, _)| *c != id)
            {
                drop(eng);
                self.close_group();
                eng = self.engine.borrow_mut();
            }
            let mut g = self.group.borrow_mut();
            if g.checkpoint.is_none() {
                g.checkpoint = Some(eng.checkpoint());
                g.mark = self
                    .journal
                    .borrow()
                    .as_ref()
                    .map_or(0, Journal::pending_len);
                g.conn = Some((id, peer.clone()));
                self.group_open.set(true);
            }
            eng.handle(id, &m, &mut g.outbox);
            self.record_changes(&mut eng);
            g.reqs.push(*h);
            return;
        }
        // Anything else that changes the store (a domain's release) is written before it
        // is answered, alone.
        let checkpoint = self.journal.borrow().is_some().then(|| eng.checkpoint());
        let mark = self
            .journal
            .borrow()
            .as_ref()
            .map_or(0, Journal::pending_len);
        eng.handle(id, &m, outbox);
        self.record_changes(&mut eng);
        drop(eng);
        if let Some(cp) = checkpoint {
            if self.journal_grew(mark) {
                if let Err(e) = self.write_journal() {
                    tracing::error!("journal write failed: {e}; answering EIO, change undone");
                    self.undo(cp, mark);
                    outbox.clear();
                    outbox.msgs.push((id, Message::error_reply(h, Errno::EIO)));
                }
            }
        }
        self.deliver_all(Some((id, peer)), outbox);
    }

    /// True when records were recorded after `mark`.
    fn journal_grew(&self, mark: usize) -> bool {
        self.journal
            .borrow()
            .as_ref()
            .is_some_and(|j| j.pending_len() > mark)
    }

    /// Writes the pending journal records.
    fn write_journal(&self) -> io::Result<()> {
        match self.journal.borrow_mut().as_mut() {
            Some(j) => j.flush(),
            None => Ok(()),
        }
    }

    /// Returns the store to `cp` and drops the journal records recorded after `mark`.
    fn undo(&self, cp: Checkpoint, mark: usize) {
        self.engine.borrow_mut().rollback(cp);
        if let Some(j) = self.journal.borrow_mut().as_mut() {
            j.discard_from(mark);
        }
    }

    /// Writes the open group's changes, then delivers its replies and events; if the write
    /// fails, undoes the changes and answers every request of the group `EIO` instead.
    fn close_group(self: &Rc<Self>) {
        if !self.group_open.replace(false) {
            return;
        }
        let mut g = std::mem::take(&mut *self.group.borrow_mut());
        let (Some(cp), Some((id, peer))) = (g.checkpoint.take(), g.conn.take()) else {
            return;
        };
        if let Err(e) = self.write_journal() {
            tracing::error!(
                conn = id,
                requests = g.reqs.len(),
                "journal write failed: {e}; answering EIO, changes undone"
            );
            self.undo(cp, g.mark);
            g.outbox.clear();
            for h in &g.reqs {
                g.outbox
                    .msgs
                    .push((id, Message::error_reply(h, Errno::EIO)));
            }
        }
        self.deliver_all(Some((id, &peer)), &mut g.outbox);
        // Keep the buffers for the next group.
        g.reqs.clear();
        let mut slot = self.group.borrow_mut();
        slot.reqs = g.reqs;
        slot.outbox = g.outbox;
    }

    /// Appends the nodes `eng` changed since the last call to the journal (written at the
    /// batch's [`Shared::flush_journal`]).
    fn record_changes(&self, eng: &mut Engine) {
        let dirty = eng.take_dirty();
        if dirty.is_empty() {
            return;
        }
        if let Some(j) = self.journal.borrow_mut().as_mut() {
            for p in dirty {
                j.record(eng.tree(), &p);
            }
        }
    }

    /// Appends the outbox's messages to their connections' output (`own` is the
    /// requester, whose replies are never dropped) and runs its effects.
    fn deliver_all(self: &Rc<Self>, own: Option<(ConnId, &Rc<Peer>)>, outbox: &mut Outbox) {
        if !outbox.msgs.is_empty() {
            let conns = self.conns.borrow();
            let mut dirty = self.dirty.borrow_mut();
            for (cid, msg) in outbox.msgs.drain(..) {
                let (peer, origin) = match own {
                    Some((o, p)) if o == cid => (p, Origin::Own),
                    _ => match conns.get(&cid) {
                        Some(p) => (p, Origin::Other),
                        None => continue,
                    },
                };
                if self.append(cid, peer, &msg, origin) && !peer.dirty.replace(true) {
                    dirty.push(peer.clone());
                }
            }
        }
        for e in outbox.effects.drain(..) {
            self.effect(e);
        }
    }

    /// Encodes `msg` into `peer`'s output; false if the peer is being closed for not
    /// reading its events.
    fn append(&self, cid: ConnId, peer: &Peer, msg: &Message, origin: Origin) -> bool {
        let size = wire::HEADER_SIZE + msg.payload.len();
        if origin == Origin::Other
            && self.max_queued != 0
            && peer.pending() + size > self.max_queued
        {
            tracing::warn!(conn = cid, "client does not read its events: closing it");
            peer.close();
            return false;
        }
        msg.encode_into(&mut peer.out.borrow_mut());
        true
    }

    /// Writes the output of every connection that got some since the last call (after the
    /// journal is flushed, so nothing is seen before it is stored). What a socket does not
    /// take at once is left to its connection's task.
    fn flush_dirty(&self) {
        let list = std::mem::take(&mut *self.dirty.borrow_mut());
        for peer in &list {
            peer.dirty.set(false);
            match peer.flush() {
                Ok(true) => {}
                Ok(false) => peer.attention.notify(),
                Err(_) => peer.close(),
            }
        }
        let mut d = self.dirty.borrow_mut();
        if d.is_empty() {
            // Keep the allocation for the next batch.
            *d = list;
            d.clear();
        }
    }

    /// Ends a batch: writes the open group (see [`Shared::close_group`]) and any other
    /// pending records, and starts a snapshot when the journal has grown enough.
    fn flush_journal(self: &Rc<Self>) {
        let grouped = self.group_open.get();
        self.close_group();
        let mut j = self.journal.borrow_mut();
        if let Some(j) = j.as_mut() {
            if !grouped && !j.has_pending() {
                return;
            }
            if let Err(e) = j.flush() {
                // Only changes nobody asked for (a dead domain's nodes) get here: kept, and
                // retried with the next write.
                tracing::error!("journal write failed: {e}; retrying with the next change");
                return;
            }
            let eng = self.engine.borrow();
            if let Err(e) = j.maybe_snapshot(eng.tree(), eng.generation()) {
                tracing::error!("snapshot failed: {e}");
            }
        }
    }

    /// Serves `domid` over a mapped ring: a bridge thread moves its bytes to a socket
    /// pair whose end here is a connection like any other.
    fn serve_ring(
        self: &Rc<Self>,
        domid: DomId,
        mem: Arc<dyn SharedMemory>,
        bell: Arc<dyn Doorbell>,
    ) -> io::Result<()> {
        let (stream, stop) = start_bridge(mem, bell)?;
        self.bridges.borrow_mut().insert(domid, stop);
        let s = UnixStream::from_std(stream)?;
        tokio::task::spawn_local(conn_task(self.clone(), s, domid));
        Ok(())
    }

    fn effect(self: &Rc<Self>, e: Effect) {
        match e {
            Effect::Introduce { domid, gfn, port } => {
                let Some(conn) = &self.connector else {
                    return;
                };
                if self.bridges.borrow().contains_key(&domid) {
                    return;
                }
                match conn(domid, gfn, port) {
                    Ok((mem, bell)) => {
                        if let Err(e) = self.serve_ring(domid, mem, bell) {
                            tracing::error!(%domid, "ring bridge: {e}");
                        }
                    }
                    Err(e) => tracing::error!(%domid, "cannot connect the domain's ring: {e}"),
                }
            }
            Effect::Release { domid } => {
                if let Some(stop) = self.bridges.borrow_mut().remove(&domid) {
                    stop.store(true, Ordering::Relaxed);
                }
                for c in self.conns.borrow().values() {
                    if c.domid == domid {
                        c.close();
                    }
                }
            }
        }
    }
}

/// Forwards each wake-up of `virq` to the event loop; ends when the loop is gone.
fn spawn_virq_waiter(virq: Arc<dyn Doorbell>) -> io::Result<mpsc::UnboundedReceiver<()>> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("xs-dom-exc".into())
        .spawn(move || {
            while !tx.is_closed() {
                match virq.wait(Some(Duration::from_millis(500))) {
                    Ok(true) => {
                        if tx.send(()).is_err() {
                            break;
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(
                            "VIRQ_DOM_EXC wait: {e}; dead domains are no longer noticed"
                        );
                        break;
                    }
                }
            }
        })?;
    Ok(rx)
}

async fn domain_exc_loop(
    shared: Rc<Shared>,
    mut rx: mpsc::UnboundedReceiver<()>,
    mut probe: DomainProbe,
) {
    let mut outbox = Outbox::default();
    while rx.recv().await.is_some() {
        while rx.try_recv().is_ok() {}
        let doms = shared.engine.borrow().introduced_domains();
        if doms.is_empty() {
            continue;
        }
        let gone = probe(&doms);
        if gone.is_empty() {
            continue;
        }
        outbox.clear();
        {
            let mut eng = shared.engine.borrow_mut();
            for (d, fate) in gone {
                match fate {
                    DomainFate::ShutDown => eng.domain_shutdown(d, &mut outbox),
                    DomainFate::Gone => {
                        tracing::info!(domid = %d, "domain died: releasing it");
                        eng.domain_gone(d, &mut outbox);
                    }
                }
            }
            shared.record_changes(&mut eng);
        }
        shared.deliver_all(None, &mut outbox);
        shared.flush_journal();
        shared.flush_dirty();
    }
}

/// Hands each complete message at the start of `buf` to `f`; returns the bytes they took
/// (what follows is the start of a message), or the length field of a header past
/// [`wire::PAYLOAD_MAX`]: the stream has lost framing (the messages before it were handled).
fn frames(buf: &[u8], f: &mut impl FnMut(&Header, &[u8])) -> std::result::Result<usize, u32> {
    let mut off = 0;
    while let Some(Ok(raw)) = buf
        .get(off..off + wire::HEADER_SIZE)
        .map(<&[u8; wire::HEADER_SIZE]>::try_from)
    {
        let h = Header::from_bytes(raw);
        if h.len as usize > wire::PAYLOAD_MAX {
            return Err(h.len);
        }
        let start = off + wire::HEADER_SIZE;
        let Some(payload) = buf.get(start..start + h.len as usize) else {
            break;
        };
        f(&h, payload);
        off = start + payload.len();
    }
    Ok(off)
}

/// Registers a socket with the event loop for `interest` only.
fn register(s: StdUnixStream, interest: Interest) -> io::Result<AsyncFd<StdUnixStream>> {
    // SAFETY: the `AsyncFd` owns the stream, which owns its descriptor: it stays open and
    // names the same socket until the `AsyncFd` (and with it the stream) is dropped, and
    // `as_raw_fd` always returns it.
    unsafe { AsyncFd::register_with_interest(s, interest) }.map_err(|e| e.into_parts().1)
}

async fn conn_task(shared: Rc<Shared>, stream: UnixStream, domid: DomId) {
    let sock = match stream
        .into_std()
        .and_then(|s| register(s, Interest::READABLE))
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%domid, "registering a connection: {e}");
            return;
        }
    };
    let id = shared.engine.borrow_mut().connect(domid);
    let peer = Rc::new(Peer::new(domid, sock));
    shared.conns.borrow_mut().insert(id, peer.clone());
    // The start of a message the last read did not complete.
    let mut partial: Vec<u8> = Vec::new();
    let mut outbox = Outbox::default();
    loop {
        if peer.closed.get() {
            break;
        }
        if peer.pending() > 0 {
            // Output the socket did not take: send it before reading more requests (the
            // client's own backpressure), still closing on request.
            if !peer.drain().await {
                break;
            }
            continue;
        }
        let n = tokio::select! {
            biased;
            _ = peer.attention.wait() => continue,
            g = peer.sock.readable() => {
                let Ok(mut g) = g else {
                    break;
                };
                // One read buffer for all connections: a read and the decoding of what
                // it brought happen without a yield in between.
                let mut buf = shared.read_buf.borrow_mut();
                match peer.sock.get_ref().read(&mut buf[..]) {
                    Ok(0) => break,
                    Ok(n) => {
                        // A read that does not fill the buffer drained the socket: wait
                        // for the next readiness event rather than read again for nothing.
                        if n < buf.len() {
                            g.clear_ready();
                        }
                        n
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        g.clear_ready();
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        };
        // Every complete message is handled straight from the read buffer; only a
        // partial one at the end is copied aside.
        let framed = {
            let rb = shared.read_buf.borrow();
            let data = &rb[..n];
            let mut handle = |h: &Header, p: &[u8]| shared.process(id, &peer, h, p, &mut outbox);
            if partial.is_empty() {
                let r = frames(data, &mut handle);
                if let Ok(used) = r {
                    partial.extend_from_slice(&data[used..]);
                }
                r
            } else {
                partial.extend_from_slice(data);
                let r = frames(&partial, &mut handle);
                if let Ok(used) = r {
                    partial.drain(..used);
                }
                r
            }
        };
        let fatal = match framed {
            Ok(_) => false,
            Err(len) => {
                tracing::warn!(
                    conn = id,
                    %domid,
                    "closing connection: payload of {len} bytes (the limit is {})",
                    wire::PAYLOAD_MAX
                );
                true
            }
        };
        shared.flush_journal();
        shared.flush_dirty();
        if fatal {
            // Replies to the requests before the bad one still go out.
            peer.drain().await;
            break;
        }
    }
    shared.conns.borrow_mut().remove(&id);
    shared.engine.borrow_mut().disconnect(id);
}

/// Bridges a ring to an in-process socket: the daemon serves the other end like any
/// connection. Two threads share the doorbell. Only the incoming side waits on it while the
/// guest's response ring has room, and then it re-checks every 250 ms (to see `stop`); while
/// the outgoing side also waits for room, both re-check every 10 ms, so a wake-up taken by
/// the other thread costs at most that. An idle guest costs 4 wake-ups a second, not 100.
fn start_bridge(
    mem: Arc<dyn SharedMemory>,
    bell: Arc<dyn Doorbell>,
) -> io::Result<(StdUnixStream, Arc<AtomicBool>)> {
    let (ours, theirs) = StdUnixStream::pair()?;
    let stop = Arc::new(AtomicBool::new(false));
    let ring = Arc::new(Ring::new(mem, Side::Server));
    ring.advertise_features(xen_sys::XENSTORE_SERVER_FEATURE_ERROR)
        .map_err(io::Error::from)?;
    let slice = Some(Duration::from_millis(10));
    let idle_slice = Some(Duration::from_millis(250));
    let out_waiting = Arc::new(AtomicBool::new(false));
    {
        let (ring, bell, stop) = (ring.clone(), bell.clone(), stop.clone());
        let out_waiting = out_waiting.clone();
        let mut sock = ours.try_clone()?;
        std::thread::Builder::new()
            .name("xs-ring-in".into())
            .spawn(move || {
                let mut buf = [0u8; 1024];
                while !stop.load(Ordering::Relaxed) {
                    match ring.read(&mut buf) {
                        Ok(0) => {
                            let t = if out_waiting.load(Ordering::Acquire) {
                                slice
                            } else {
                                idle_slice
                            };
                            if bell.wait(t).is_err() {
                                break;
                            }
                        }
                        Ok(n) => {
                            if sock.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            let _ = bell.notify();
                        }
                        Err(e) => {
                            tracing::warn!("domain ring: {e}");
                            let _ = ring.set_error(xen_sys::XENSTORE_ERROR_RINGIDX);
                            break;
                        }
                    }
                }
                let _ = sock.shutdown(std::net::Shutdown::Both);
            })?;
    }
    {
        let mut sock = ours;
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("xs-ring-out".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                'outer: loop {
                    let n = match sock.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let mut data = &buf[..n];
                    while !data.is_empty() {
                        if stop.load(Ordering::Relaxed) {
                            break 'outer;
                        }
                        match ring.write(data) {
                            Ok(0) => {
                                out_waiting.store(true, Ordering::Release);
                                let r = bell.wait(slice);
                                out_waiting.store(false, Ordering::Release);
                                if r.is_err() {
                                    break 'outer;
                                }
                            }
                            Ok(w) => {
                                data = &data[w..];
                                let _ = bell.notify();
                            }
                            Err(_) => {
                                let _ = ring.set_error(xen_sys::XENSTORE_ERROR_RINGIDX);
                                break 'outer;
                            }
                        }
                    }
                }
            })?;
    }
    theirs.set_nonblocking(true)?;
    Ok((theirs, stop))
}

/// A daemon running in a background thread.
#[derive(Debug)]
pub struct DaemonHandle {
    socket: PathBuf,
    inject: mpsc::UnboundedSender<(DomId, StdUnixStream)>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl DaemonHandle {
    /// The dom0 socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// A connection that acts as domain `domid` (as if over its ring), in process.
    pub fn connect_as(&self, domid: DomId) -> io::Result<StdUnixStream> {
        let (a, b) = StdUnixStream::pair()?;
        self.inject
            .send((domid, b))
            .map_err(|_| io::Error::new(io::ErrorKind::NotConnected, "daemon stopped"))?;
        Ok(a)
    }

    /// Stops the daemon and waits for it (pending journal records are flushed).
    pub fn shutdown(mut self) -> Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| {
                Err(Error::Io {
                    what: "daemon thread panicked".into(),
                    source: io::Error::other("panic"),
                })
            }),
            None => Ok(()),
        }
    }
}

impl Drop for DaemonHandle {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::atomic::Ordering::Relaxed;

    use xenstore::Client;

    use super::*;
    use crate::journal::Faults;
    use crate::SyncMode;

    const WAIT: Duration = Duration::from_secs(10);

    /// A daemon journalling to `dir/data`, and the switches that fail its journal writes.
    fn journalled(dir: &Path, name: &str) -> (DaemonHandle, Arc<Faults>) {
        let cfg = Config {
            socket_path: dir.join(name),
            data_dir: Some(dir.join("data")),
            sync: SyncMode::Always,
            ..Config::default()
        };
        let d = Daemon::new(cfg).unwrap();
        let faults = d.journal_faults().expect("a journal");
        (d.spawn().unwrap(), faults)
    }

    fn errno<T: std::fmt::Debug>(r: xenstore::Result<T>) -> Option<Errno> {
        r.expect_err("the request succeeded").errno()
    }

    fn next_event(c: &Client) -> (String, String) {
        let e = c.next_event_timeout(WAIT).unwrap().expect("an event");
        (e.path, e.token)
    }

    #[test]
    fn a_change_that_cannot_be_journalled_is_answered_eio_and_undone() {
        let dir = tempfile::tempdir().unwrap();
        let (h, faults) = journalled(dir.path(), "s1");
        let c = Client::connect_socket(h.socket_path()).unwrap();
        let watcher = Client::connect_socket(h.socket_path()).unwrap();
        c.write("/a/x", "1").unwrap();
        watcher.watch("/a", "t").unwrap();
        assert_eq!(next_event(&watcher), ("/a".into(), "t".into()));

        // A full disk: each write stores half its bytes, then fails.
        faults.partial.store(true, Relaxed);
        faults.fail.store(true, Relaxed);
        assert_eq!(errno(c.write("/a/x", "2")), Some(Errno::EIO));
        assert_eq!(errno(c.write("/a/new/deep", "v")), Some(Errno::EIO));
        assert_eq!(errno(c.mkdir("/a/dir")), Some(Errno::EIO));
        assert_eq!(errno(c.rm("/a/x")), Some(Errno::EIO));
        let perms = [xenstore::wire::Perm::new(
            DomId(5),
            xenstore::wire::Access::Read,
        )];
        assert_eq!(errno(c.set_perms("/a/x", &perms)), Some(Errno::EIO));
        // A transaction commit: its changes are not applied, and it is over.
        let t = c.transaction_start().unwrap();
        let tx = t.id();
        t.write("/a/x", "3").unwrap();
        t.write("/a/t", "3").unwrap();
        assert_eq!(errno(t.commit()), Some(Errno::EIO));
        let r = c.request_raw(Op::Read, tx, b"/a/x\0".to_vec()).unwrap();
        assert_eq!(
            (r.op().unwrap(), &r.payload[..]),
            (Op::Error, &b"ENOENT\0"[..]),
            "the transaction still exists"
        );

        // Nothing changed: values, children, permissions.
        assert_eq!(c.read_string("/a/x").unwrap(), "1");
        assert_eq!(c.directory("/a").unwrap(), ["x"]);
        assert!(!c.exists("/a/new").unwrap());
        assert_eq!(c.get_perms("/a/x").unwrap().len(), 1);

        // No watch event for any of them: the next one is for the next stored change.
        faults.fail.store(false, Relaxed);
        c.write("/a/y", "ok").unwrap();
        assert_eq!(next_event(&watcher), ("/a/y".into(), "t".into()));
        drop((c, watcher));
        h.shutdown().unwrap();

        // The journal holds exactly the acknowledged changes: nothing of the failed
        // writes is left to replay (or to cut off as torn).
        let (j, rec) = Journal::open(&dir.path().join("data"), SyncMode::Never, u64::MAX).unwrap();
        assert_eq!(
            rec.discarded, 0,
            "the failed writes were left in the journal"
        );
        assert_eq!(&*rec.tree.get("/a/x").unwrap().value, b"1");
        assert_eq!(&*rec.tree.get("/a/y").unwrap().value, b"ok");
        for p in ["/a/new", "/a/dir", "/a/t"] {
            assert!(rec.tree.get(p).is_none(), "{p} was stored");
        }
        drop(j);
        let (h, _) = journalled(dir.path(), "s2");
        let c = Client::connect_socket(h.socket_path()).unwrap();
        assert_eq!(c.read_string("/a/x").unwrap(), "1");
        assert_eq!(c.directory("/a").unwrap(), ["x", "y"]);
    }

    /// A request outside the groups that changes the store (a domain's release removes
    /// its nodes) is written alone before its reply; when that fails, the domain stays
    /// introduced and its nodes stay.
    #[test]
    fn a_release_that_cannot_be_journalled_leaves_the_domain_and_its_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let (h, faults) = journalled(dir.path(), "s");
        let c = Client::connect_socket(h.socket_path()).unwrap();
        let d = DomId(7);
        c.introduce(d, xen_types::Pfn(100), xen_types::EvtchnPort(3))
            .unwrap();
        c.write("/local/domain/7/x", "1").unwrap();
        let owner = [xenstore::wire::Perm::new(d, xenstore::wire::Access::None)];
        c.set_perms("/local/domain/7/x", &owner).unwrap();
        c.watch("@releaseDomain", "r").unwrap();
        assert_eq!(next_event(&c), ("@releaseDomain".into(), "r".into()));
        faults.fail.store(true, Relaxed);
        assert_eq!(errno(c.release(d)), Some(Errno::EIO));
        assert!(c.is_domain_introduced(d).unwrap());
        assert_eq!(c.read_string("/local/domain/7/x").unwrap(), "1");
        assert!(c
            .next_event_timeout(Duration::from_millis(200))
            .unwrap()
            .is_none());
        faults.fail.store(false, Relaxed);
        c.release(d).unwrap();
        assert_eq!(next_event(&c), ("@releaseDomain".into(), "r".into()));
        assert!(!c.is_domain_introduced(d).unwrap());
        assert!(!c.exists("/local/domain/7/x").unwrap());
    }

    /// Requests sent together: the changes are written as one group, and when that write
    /// fails every one of them is answered EIO and a read after them sees none of them.
    #[test]
    fn a_failed_group_write_fails_every_change_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let (h, faults) = journalled(dir.path(), "s");
        let watcher = Client::connect_socket(h.socket_path()).unwrap();
        watcher.watch("/b", "t").unwrap();
        assert_eq!(next_event(&watcher), ("/b".into(), "t".into()));
        let mut sock = StdUnixStream::connect(h.socket_path()).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let batch = || {
            let mut out = Vec::new();
            for (i, (op, parts)) in [
                (Op::Write, &[&b"/b"[..], b"1"][..]),
                (Op::Write, &[&b"/b/c"[..], b"2"][..]),
                (Op::Read, &[&b"/b/c"[..]][..]),
            ]
            .into_iter()
            .enumerate()
            {
                let m = Message::request(op, i as u32, TxId::NONE, parts, op == Op::Write);
                m.unwrap().encode_into(&mut out);
            }
            out
        };
        let mut dec = wire::Decoder::new();
        let mut replies = |sock: &mut StdUnixStream| {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while got.len() < 3 {
                if let Some(m) = dec.next_message().unwrap() {
                    got.push((m.header.req_id, m.op().unwrap(), m.payload));
                    continue;
                }
                let n = sock.read(&mut buf).unwrap();
                assert!(n > 0, "connection closed");
                dec.feed(&buf[..n]);
            }
            got
        };
        faults.fail.store(true, Relaxed);
        sock.write_all(&batch()).unwrap();
        assert_eq!(
            replies(&mut sock),
            [
                (0, Op::Error, b"EIO\0".to_vec()),
                (1, Op::Error, b"EIO\0".to_vec()),
                (2, Op::Error, b"ENOENT\0".to_vec()),
            ]
        );
        faults.fail.store(false, Relaxed);
        sock.write_all(&batch()).unwrap();
        assert_eq!(
            replies(&mut sock),
            [
                (0, Op::Write, b"OK\0".to_vec()),
                (1, Op::Write, b"OK\0".to_vec()),
                (2, Op::Read, b"2".to_vec()),
            ]
        );
        // Only the stored changes fired.
        assert_eq!(next_event(&watcher), ("/b".into(), "t".into()));
        assert_eq!(next_event(&watcher), ("/b/c".into(), "t".into()));
        assert!(watcher
            .next_event_timeout(Duration::from_millis(200))
            .unwrap()
            .is_none());
    }

    #[test]
    fn output_beyond_the_socket_buffer_is_drained_whole_and_in_order() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // With the write registration, then the EMFILE fallback that polls.
            for polling in [false, true] {
                let (a, mut b) = StdUnixStream::pair().unwrap();
                a.set_nonblocking(true).unwrap();
                let peer = Peer::new(DomId::DOM0, register(a, Interest::READABLE).unwrap());
                let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
                peer.out.borrow_mut().extend_from_slice(&data);
                assert!(!peer.flush().unwrap(), "2 MB fit a socket buffer");
                assert!(peer.pending() > 0);
                let len = data.len();
                let reader = std::thread::spawn(move || {
                    b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut got = vec![0u8; len];
                    b.read_exact(&mut got).map(|_| got)
                });
                let drained = if polling {
                    peer.drain_polling().await
                } else {
                    peer.drain().await
                };
                assert!(drained);
                assert_eq!(peer.pending(), 0);
                let got = reader.join().unwrap().expect("all the output within 10 s");
                assert!(got == data, "bytes lost, doubled or reordered");
            }
        });
    }
}
