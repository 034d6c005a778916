//! The daemon: domains followed through xenstore, one poll loop for every console (io.c's
//! `handle_io`), the hypervisor log, and the handle that stops it, reopens its logs and
//! reports what it serves.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use evtchn::{EventChannel, Evtchn};
use gnttab::Gnttab;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use xen_ring::console::OUT_SIZE;
use xen_types::{DomId, Virq};
use xenbus::store::{INTRODUCE_DOMAIN, RELEASE_DOMAIN};
use xenbus::{Store, WatchEvent, WatchId};
use xenctrl::Xen;

use crate::console::Console;
use crate::log::LogFile;
use crate::{io, Config, Error, Result, RATE_LIMIT_ALLOWANCE};

/// Bytes of the hypervisor's ring read at a time (io.c's 16 KiB buffer).
const HV_CHUNK: usize = 16 << 10;
/// The watch token of `@introduceDomain` and `@releaseDomain`.
const DOMLIST: &str = "domlist";

/// How the daemon reaches the hypervisor: real Xen (`Xen::real`, `Gnttab::open`,
/// `Evtchn::open`) or the simulated host (`Xen::sim`, `Gnttab::open_sim`,
/// `Evtchn::open_sim` as dom0).
pub struct Hypervisor {
    /// Domain control: listing domains, foreign mappings, the hypervisor's console ring.
    pub xen: Xen,
    /// Grant mapping (`None`: map by frame only, as the C daemon without gntdev).
    pub gnttab: Option<Gnttab>,
    /// Opens an event-channel handle (one per console, one for `VIRQ_CON_RING`).
    pub open_evtchn: Box<dyn Fn() -> evtchn::Result<Evtchn> + Send + Sync>,
}

impl std::fmt::Debug for Hypervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hypervisor")
            .field("xen", &self.xen.describe())
            .field("gnttab", &self.gnttab.is_some())
            .finish_non_exhaustive()
    }
}

/// What the consoles' code needs from the daemon.
pub(crate) struct Env {
    pub(crate) config: Config,
    pub(crate) xen: Xen,
    pub(crate) gnttab: Option<Gnttab>,
    pub(crate) open_evtchn: Box<dyn Fn() -> evtchn::Result<Evtchn> + Send + Sync>,
    pub(crate) store: Arc<dyn Store>,
}

impl Env {
    /// io.c's `domain_is_valid`.
    pub(crate) fn domain_is_valid(&self, dom: DomId) -> bool {
        self.xen.domain_info(dom).is_ok()
    }
}

/// One console as [`DaemonHandle::status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleStatus {
    /// The guest.
    pub domid: DomId,
    /// Its pty (what `console/tty` says), once created.
    pub tty: Option<String>,
    /// Its log file, when logging.
    pub log: Option<std::path::PathBuf>,
    /// Ring mapped and event channel bound.
    pub connected: bool,
    /// Output waiting for the pty.
    pub buffered: usize,
    /// Events taken in the current rate-limit period.
    pub events_this_period: u32,
    /// The last error met serving it.
    pub error: Option<String>,
}

enum Request {
    Status(Sender<Vec<ConsoleStatus>>),
    Stop,
}

/// Wakes the poll loop: a byte down a non-blocking pipe.
#[derive(Debug)]
struct Waker {
    read: OwnedFd,
    write: OwnedFd,
}

impl Waker {
    fn new() -> Result<Waker> {
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| Error::Io {
                    what: "creating the wake-up pipe".into(),
                    source: std::io::Error::from_raw_os_error(e as i32),
                })?;
        Ok(Waker { read, write })
    }

    fn wake(&self) {
        // A full pipe already wakes the loop.
        let _ = nix::unistd::write(&self.write, &[1]);
    }

    fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(self.read.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
    }
}

/// The console daemon, set up and not yet running. [`Daemon::start`] runs it on its own
/// thread.
pub struct Daemon {
    env: Env,
    waker: Arc<Waker>,
    reload: Arc<AtomicBool>,
    requests: (Sender<Request>, Receiver<Request>),
    events: Receiver<WatchEvent>,
    events_tx: Sender<WatchEvent>,
    domlist_watches: Vec<WatchId>,
    consoles: BTreeMap<DomId, Console>,
    enum_pass: u64,
    hv: Option<HvLog>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("config", &self.env.config)
            .field("consoles", &self.consoles.len())
            .finish_non_exhaustive()
    }
}

/// The hypervisor log: io.c's `log_hv_fd`, its `VIRQ_CON_RING` handle and read index.
struct HvLog {
    evtchn: Evtchn,
    log: Option<LogFile>,
    index: u32,
}

/// A running daemon. Dropping it stops the daemon.
pub struct DaemonHandle {
    waker: Arc<Waker>,
    reload: Arc<AtomicBool>,
    requests: Sender<Request>,
    thread: Option<JoinHandle<Result<()>>>,
    /// SIGHUP actions registered, removed when the daemon stops.
    sighup: std::sync::Mutex<Vec<signal_hook::SigId>>,
}

impl std::fmt::Debug for DaemonHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonHandle").finish_non_exhaustive()
    }
}

impl Daemon {
    /// Sets the daemon up as io.c's `xen_setup` and the start of `handle_io` do: watches
    /// `@introduceDomain` and `@releaseDomain`, and with `hv` logging opens
    /// `hypervisor.log`, binds `VIRQ_CON_RING` and copies the boot messages already in the
    /// ring. Errors here are the daemon's start-up errors.
    pub fn new(config: Config, hypervisor: Hypervisor, store: Arc<dyn Store>) -> Result<Daemon> {
        // Every watch sends here; one thread forwards to the loop and wakes it. It ends when
        // the daemon and the store have dropped every sender.
        let (events_tx, raw) = crossbeam_channel::unbounded::<WatchEvent>();
        let (fwd, events) = crossbeam_channel::unbounded();
        let waker = Arc::new(Waker::new()?);
        let w = waker.clone();
        std::thread::Builder::new()
            .name("xenconsoled-watch".into())
            .spawn(move || {
                for ev in raw {
                    if fwd.send(ev).is_err() {
                        return;
                    }
                    w.wake();
                }
            })
            .map_err(io("starting the watch thread"))?;
        let env = Env {
            config,
            xen: hypervisor.xen,
            gnttab: hypervisor.gnttab,
            open_evtchn: hypervisor.open_evtchn,
            store,
        };
        let mut d = Daemon {
            env,
            waker,
            reload: Arc::new(AtomicBool::new(false)),
            requests: crossbeam_channel::unbounded(),
            events,
            events_tx,
            domlist_watches: Vec::new(),
            consoles: BTreeMap::new(),
            enum_pass: 0,
            hv: None,
        };
        if d.env.config.log_hv {
            let evtchn = (d.env.open_evtchn)()?;
            evtchn.bind_virq(Virq::CON_RING)?;
            let mut hv = HvLog {
                evtchn,
                log: Some(d.open_hv_log()?),
                index: 0,
            };
            d.copy_hv_log(&mut hv, true);
            d.hv = Some(hv);
        }
        for path in [INTRODUCE_DOMAIN, RELEASE_DOMAIN] {
            let id = d.watch(path, DOMLIST)?;
            d.domlist_watches.push(id);
        }
        Ok(d)
    }

    /// Runs the daemon on a thread of its own.
    pub fn start(self) -> Result<DaemonHandle> {
        let (waker, reload, requests) = (
            self.waker.clone(),
            self.reload.clone(),
            self.requests.0.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("xenconsoled".into())
            .spawn(move || self.run())
            .map_err(io("starting the daemon thread"))?;
        Ok(DaemonHandle {
            waker,
            reload,
            requests,
            thread: Some(thread),
            sighup: std::sync::Mutex::default(),
        })
    }

    /// Sets a watch whose events reach the poll loop.
    fn watch(&self, path: &str, token: &str) -> Result<WatchId> {
        Ok(self.env.store.watch(path, token, self.events_tx.clone())?)
    }

    fn open_hv_log(&self) -> Result<LogFile> {
        let path = self.env.config.log_dir.join("hypervisor.log");
        LogFile::open(
            &path,
            self.env.config.timestamp_hv,
            self.env.config.replace_escape,
        )
        .map_err(io(format!("opening log {}", path.display())))
    }

    /// io.c's `handle_hv_logs`.
    fn copy_hv_log(&self, hv: &mut HvLog, force: bool) {
        let mut port = None;
        if !force {
            match hv.evtchn.pending() {
                Ok(Some(p)) => port = Some(p),
                _ => return,
            }
        }
        loop {
            let r = match self.env.xen.read_console_ring(hv.index, HV_CHUNK) {
                Ok(r) if !r.data.is_empty() => r,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!("reading the hypervisor's console ring: {e}");
                    break;
                }
            };
            hv.index = r.index;
            if let Some(log) = &mut hv.log {
                if let Err(e) = log.write(&r.data) {
                    tracing::error!("failed to write hypervisor log: {e}");
                }
            }
            if r.data.len() < HV_CHUNK {
                break;
            }
        }
        if let Some(p) = port {
            let _ = hv.evtchn.unmask(p);
        }
    }

    /// io.c's `enum_domains`.
    fn enum_domains(&mut self) {
        self.enum_pass += 1;
        let domains = match self.env.xen.list_domains() {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("listing domains: {e}");
                return;
            }
        };
        for info in domains
            .iter()
            .filter(|i| i.domid.0 >= 1 && i.domid.is_ordinary())
        {
            let dom = info.domid;
            if info.dying() {
                if self.consoles.contains_key(&dom) {
                    self.shutdown_domain(dom);
                }
            } else if !self.consoles.contains_key(&dom) {
                self.create_domain(dom);
            }
            if let Some(c) = self.consoles.get_mut(&dom) {
                c.last_seen = self.enum_pass;
            }
        }
    }

    /// io.c's `create_domain`: watch its console directory and serve it.
    fn create_domain(&mut self, dom: DomId) {
        let mut c = Console::new(dom);
        match self.watch(&c.xspath, &format!("dom{}", dom.0)) {
            Ok(id) => c.watch = Some(id),
            Err(e) => {
                tracing::error!("domain {dom}: watching its console: {e}");
                return;
            }
        }
        if let Err(e) = c.create_ring(&self.env) {
            c.fail(e);
        }
        tracing::debug!("new domain {dom}");
        self.consoles.insert(dom, c);
    }

    /// io.c's `shutdown_domain`.
    fn shutdown_domain(&mut self, dom: DomId) {
        if let Some(c) = self.consoles.get_mut(&dom) {
            if let Some(id) = c.watch.take() {
                let _ = self.env.store.unwatch(id);
            }
            c.shut_down();
        }
    }

    fn handle_watch(&mut self, ev: &WatchEvent) {
        if ev.token == DOMLIST {
            self.enum_domains();
        } else if let Some(dom) = ev.token.strip_prefix("dom").and_then(|d| d.parse().ok()) {
            // Watches may fire for domains just removed.
            if let Some(c) = self.consoles.get_mut(&DomId(dom)) {
                if !c.is_dead {
                    match c.create_ring(&self.env) {
                        Ok(()) => c.error = None,
                        Err(e) => c.fail(e),
                    }
                }
            }
        }
    }

    /// io.c's `handle_log_reload`.
    fn reload_logs(&mut self) {
        if self.env.config.log_guest {
            for c in self.consoles.values_mut().filter(|c| c.enabled()) {
                c.open_log(&self.env);
            }
        }
        if let Some(mut hv) = self.hv.take() {
            hv.log = None;
            match self.open_hv_log() {
                Ok(l) => hv.log = Some(l),
                Err(e) => tracing::error!("{e}"),
            }
            self.hv = Some(hv);
        }
    }

    fn status(&self) -> Vec<ConsoleStatus> {
        self.consoles
            .values()
            .map(|c| ConsoleStatus {
                domid: c.domid,
                tty: c.pty.as_ref().map(|p| p.name().to_string()),
                log: c.log.as_ref().map(|l| l.path().to_path_buf()),
                connected: c.ring.is_some() && c.chan.is_some(),
                buffered: c.buffer.len(),
                events_this_period: c.event_count,
                error: c.error.clone(),
            })
            .collect()
    }

    /// Serves until stopped (or a poll failure), then closes everything.
    fn run(mut self) -> Result<()> {
        let r = self.serve();
        self.stop();
        r
    }

    /// io.c's `handle_io`, until stopped.
    fn serve(&mut self) -> Result<()> {
        self.enum_domains();
        let mut scratch = [0u8; OUT_SIZE];
        let mut fds: Vec<(i32, PollFlags)> = Vec::new();
        loop {
            fds.clear();
            fds.push((self.waker.read.as_raw_fd(), PollFlags::POLLIN));
            let hv_slot = self.hv.as_ref().map(|hv| {
                fds.push((hv.evtchn.as_fd_raw(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let now = Instant::now();
            let mut next_timeout: Option<Instant> = None;
            let discard = self.env.config.discard_overflowed_data;
            for c in self.consoles.values_mut() {
                c.evtchn_slot = None;
                c.tty_slot = None;
                c.new_period(now);
                if c.event_count >= RATE_LIMIT_ALLOWANCE {
                    next_timeout =
                        Some(next_timeout.map_or(c.next_period, |t| t.min(c.next_period)));
                } else if let Some(chan) = &c.chan {
                    if c.buffer.available(discard) {
                        fds.push((
                            chan.handle.as_fd_raw(),
                            PollFlags::POLLIN | PollFlags::POLLPRI,
                        ));
                        c.evtchn_slot = Some(fds.len() - 1);
                    }
                }
                if let Some(pty) = &c.pty {
                    let mut ev = PollFlags::empty();
                    if !c.is_dead && c.ring_free_bytes() > 0 {
                        ev |= PollFlags::POLLIN;
                    }
                    if !c.buffer.is_empty() {
                        ev |= PollFlags::POLLOUT;
                    }
                    if !ev.is_empty() {
                        fds.push((pty.fd(), ev | PollFlags::POLLPRI));
                        c.tty_slot = Some(fds.len() - 1);
                    }
                }
            }
            let timeout = match next_timeout {
                None => PollTimeout::NONE,
                Some(t) => {
                    let ms = t.saturating_duration_since(now).as_millis().max(1);
                    PollTimeout::try_from(ms.min(i32::MAX as u128) as i32)
                        .unwrap_or(PollTimeout::MAX)
                }
            };
            let revents = poll_raw(&fds, timeout)?;

            if self.reload.swap(false, Ordering::SeqCst) {
                self.reload_logs();
            }
            if let (Some(slot), Some(mut hv)) = (hv_slot, self.hv.take()) {
                if revents[slot].contains(PollFlags::POLLIN) {
                    self.copy_hv_log(&mut hv, false);
                }
                self.hv = Some(hv);
            }
            if !revents[0].is_empty() {
                self.waker.drain();
                while let Ok(req) = self.requests.1.try_recv() {
                    match req {
                        Request::Status(tx) => {
                            let _ = tx.send(self.status());
                        }
                        Request::Stop => return Ok(()),
                    }
                }
                while let Ok(ev) = self.events.try_recv() {
                    self.handle_watch(&ev);
                }
            }
            let mut gone = Vec::new();
            for c in self.consoles.values_mut() {
                if let Some(slot) = c.evtchn_slot.take() {
                    let r = revents[slot];
                    if c.event_count < RATE_LIMIT_ALLOWANCE
                        && r.contains(PollFlags::POLLIN)
                        && !r.intersects(
                            PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL,
                        )
                    {
                        c.handle_ring_read(&self.env, &mut scratch);
                    }
                }
                let mut alive = true;
                if let Some(slot) = c.tty_slot.take() {
                    let r = revents[slot];
                    if r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL) {
                        alive = c.broken_tty(&self.env);
                    } else {
                        if r.contains(PollFlags::POLLIN) {
                            alive = c.handle_tty_read(&self.env);
                        }
                        if alive && r.contains(PollFlags::POLLOUT) {
                            alive = c.handle_tty_write(&self.env);
                        }
                    }
                }
                if !alive || c.last_seen != self.enum_pass || c.is_dead {
                    gone.push(c.domid);
                }
            }
            for dom in gone {
                self.shutdown_domain(dom);
                if self.consoles.remove(&dom).is_some() {
                    tracing::debug!("removing domain {dom}");
                }
            }
        }
    }

    /// Closes every console and removes the daemon's watches.
    fn stop(&mut self) {
        let doms: Vec<DomId> = self.consoles.keys().copied().collect();
        for dom in doms {
            self.shutdown_domain(dom);
        }
        self.consoles.clear();
        for id in self.domlist_watches.drain(..) {
            let _ = self.env.store.unwatch(id);
        }
        self.hv = None;
    }
}

/// `poll` over `(fd, events)`; returns each entry's `revents` (all empty on `EINTR`).
fn poll_raw(fds: &[(i32, PollFlags)], timeout: PollTimeout) -> Result<Vec<PollFlags>> {
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|&(fd, ev)| {
            // SAFETY: every descriptor listed is owned by the daemon (its pipe, its event
            // channel handles, its ptys) and stays open for this call.
            PollFd::new(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }, ev)
        })
        .collect();
    match nix::poll::poll(&mut pfds, timeout) {
        Ok(_) => Ok(pfds
            .iter()
            .map(|p| p.revents().unwrap_or(PollFlags::empty()))
            .collect()),
        Err(nix::errno::Errno::EINTR) => Ok(vec![PollFlags::empty(); fds.len()]),
        Err(e) => Err(Error::Io {
            what: "poll".into(),
            source: std::io::Error::from_raw_os_error(e as i32),
        }),
    }
}

/// The raw descriptor of an event-channel handle.
trait AsFdRaw {
    fn as_fd_raw(&self) -> i32;
}

impl AsFdRaw for Evtchn {
    fn as_fd_raw(&self) -> i32 {
        use std::os::fd::AsFd;
        self.as_fd().as_raw_fd()
    }
}

impl DaemonHandle {
    /// Reopens every log (what SIGHUP does to the C daemon, for log rotation).
    pub fn reopen_logs(&self) {
        self.reload.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Makes SIGHUP reopen the logs ([`DaemonHandle::reopen_logs`]), from a signal handler
    /// that only sets a flag and writes to the daemon's wake-up pipe (removed when the
    /// daemon stops).
    pub fn reopen_logs_on_sighup(&self) -> Result<()> {
        let flag = signal_hook::flag::register(signal_hook::consts::SIGHUP, self.reload.clone())
            .map_err(io("registering a SIGHUP handler"))?;
        let mut ids = self.sighup.lock().unwrap_or_else(|p| p.into_inner());
        ids.push(flag);
        let fd = self
            .waker
            .write
            .try_clone()
            .map_err(io("duplicating the wake-up pipe"))?;
        ids.push(
            signal_hook::low_level::pipe::register(signal_hook::consts::SIGHUP, fd)
                .map_err(io("registering a SIGHUP handler"))?,
        );
        Ok(())
    }

    /// What the daemon serves now.
    pub fn status(&self) -> Result<Vec<ConsoleStatus>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.requests
            .send(Request::Status(tx))
            .map_err(|_| stopped())?;
        self.waker.wake();
        rx.recv().map_err(|_| stopped())
    }

    /// The status of domain `dom`'s console, if served.
    pub fn console(&self, dom: DomId) -> Result<Option<ConsoleStatus>> {
        Ok(self.status()?.into_iter().find(|c| c.domid == dom))
    }

    /// Stops the daemon: every console closed (ptys, logs, mappings, event channels), its
    /// watches removed. Returns the loop's error if it had failed.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        for id in self
            .sighup
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            signal_hook::low_level::unregister(id);
        }
        let Some(t) = self.thread.take() else {
            return Ok(());
        };
        let _ = self.requests.send(Request::Stop);
        self.waker.wake();
        t.join().unwrap_or_else(|_| {
            Err(Error::Io {
                what: "the daemon thread".into(),
                source: std::io::Error::other("panicked"),
            })
        })
    }
}

fn stopped() -> Error {
    Error::Io {
        what: "asking the daemon".into(),
        source: std::io::Error::other("the daemon has stopped"),
    }
}

impl Drop for DaemonHandle {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}
