//! Event channels of the simulated host.
//!
//! Each domain has a port table ([`DomainPorts`]) with Xen's port states: free, unbound
//! (waiting for a named remote domain), interdomain (connected to a remote port) and virq.
//! Port 0 is reserved, as in Xen, and a domain may not use ports above its `max_evtchn_port`.
//! Operations fail with the errno of `xen/common/event_channel.c`:
//!
//! | operation | error | errno |
//! |---|---|---|
//! | any, on an unknown domain | no such domain | `ESRCH` |
//! | allocate a port, table full | `get_free_port` | `ENOSPC` |
//! | allocate a port, domain dying | `get_free_port` | `EINVAL` |
//! | bind interdomain to a port that is not unbound for us | | `EINVAL` |
//! | bind a VIRQ out of range / twice | | `EINVAL` / `EEXIST` |
//! | notify a free or VIRQ port (hypercall level, [`Host::evtchn_send`]) | `evtchn_send` | `EINVAL` |
//! | notify an unbound port | dropped, as Xen does | ok |
//!
//! On top of the hypervisor sits the Linux `/dev/xen/evtchn` driver's behaviour, modelled by
//! [`Handle`] (one per open of the device): a handle owns the ports it bound, may only unbind,
//! notify or unmask those (`ENOTCONN` otherwise, as the driver returns), and receives its
//! ports through a queue with an eventfd for readiness. A delivered port is masked until the
//! handle unmasks it; a notification that arrives meanwhile stays pending and is delivered on
//! unmask. Closing one end of an interdomain channel leaves the other end unbound with the
//! remote domain preserved (Xen's `ECS_UNBOUND`). As in Xen, binding an interdomain channel
//! marks the new local port pending, so a notification sent before the bind is not lost: a
//! handle sees its new port once right after `bind_interdomain`. A table holds at most
//! `EVTCHN_FIFO_NR_CHANNELS` (2^17) ports whatever `max_evtchn_port` says, the FIFO ABI's
//! limit. A handle belongs to the domain it was opened for: destroying the domain closes
//! the handle's ports, and once the domain is gone its operations fail with `ESRCH`, even if
//! the domain id has been reused.
//!
//! # Locking: the notify path does not take the host lock
//!
//! Binding, closing and attaching run under the host lock, as they change two domains at
//! once. Notifying and unmasking do not: as in Xen's `evtchn_send`, a notify takes only the
//! lock of the *local* port (a per-port lock, which close takes too, so the remote end cannot
//! be torn down under the notifier), and sets the remote port's pending bit with an atomic
//! read-modify-write, as Xen sets a bit in the guest's shared pending bitmap. The pending and
//! mask bits of a port live in one atomic word; whichever of notify and unmask sees
//! "pending and not masked" first masks the port and queues it, exactly once.
//!
//! A handle's queue is a two-level bitmap of its domain's ports (like Xen's 2-level ABI:
//! a selector word per 64 ports), so queueing is lock-free and a port read returns ports in
//! ascending order. A thread blocked in [`Handle::wait`] sleeps on a futex of the queue and
//! a delivery wakes it with one `FUTEX_WAKE`; the eventfd is kept in step only once its
//! descriptor has been handed out ([`Handle::fd`], [`AsFd`], [`AsRawFd`]), so a handle used
//! only through `wait`/`read_pending` costs no eventfd system calls. A timed wait sleeps
//! without a kernel timer of its own: it records its deadline in the queue, and one timer
//! thread per process (started by the first timed wait) wakes the queues whose deadline
//! has passed.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
pub use xen_types::PortStatus;
use xen_types::{DomId, Errno, EvtchnPort, Virq};

use crate::host::{Host, HostState};

/// Default highest usable port: the 2-level ABI limit on 64-bit guests (4096 ports).
pub const DEFAULT_MAX_PORT: EvtchnPort = EvtchnPort(4095);

const NR_VIRQS: usize = xen_sys::NR_VIRQS as usize;

/// Ports per allocation bucket (Xen's `EVTCHNS_PER_BUCKET` on 64-bit).
const BUCKET: u32 = 64;

/// The most ports any domain can have: the FIFO ABI's limit (the larger of the two ABIs).
const ABI_MAX_PORTS: u32 = xen_sys::EVTCHN_FIFO_NR_CHANNELS;

/// The port's event is pending (Xen's bit in `evtchn_pending`).
const PENDING: u32 = 1;
/// The port is masked (Xen's bit in `evtchn_mask`; the Linux driver masks on delivery).
const MASKED: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Free,
    Reserved,
    Unbound(DomId),
    Interdomain(DomId, EvtchnPort),
    Virq(Virq),
}

/// The remote end of an interdomain port: where a notify sets pending, and who receives it.
struct Peer {
    table: Arc<PortTable>,
    port: EvtchnPort,
    owner: Option<Arc<Queue>>,
}

impl Peer {
    /// The remote port's cell.
    fn cell(&self) -> Option<&Cell> {
        self.table.cell(self.port)
    }

    fn set_pending(&self) {
        if let Some(cell) = self.cell() {
            cell.set_pending(self.owner.as_deref(), self.port);
        }
    }
}

/// What a port is bound to. Changed under the host lock and the port's lock; read under the
/// port's lock.
#[derive(Default)]
struct Link {
    state: State,
    /// The handle queue that takes delivery.
    owner: Option<Arc<Queue>>,
    /// The remote end, for an interdomain port.
    peer: Option<Peer>,
}

impl Link {
    fn owned_by(&self, q: &Arc<Queue>) -> bool {
        self.owner.as_ref().is_some_and(|o| Arc::ptr_eq(o, q))
    }
}

/// One port: its pending/mask bits and its binding, in one cache line of its own.
#[repr(align(64))]
#[derive(Default)]
struct Cell {
    flags: AtomicU32,
    link: Mutex<Link>,
}

impl Cell {
    /// `evtchn_port_set_pending`: marks the port pending and delivers it to `owner` if it is
    /// not masked. A port already pending stays as it is (one event until it is read).
    fn set_pending(&self, owner: Option<&Queue>, port: EvtchnPort) {
        let old = self.flags.fetch_or(PENDING, SeqCst);
        if old & (PENDING | MASKED) == 0 {
            if let Some(q) = owner {
                self.deliver(q, port);
            }
        }
    }

    /// The Linux driver's upcall: a pending, unmasked port is masked, its pending bit cleared
    /// and the port queued for user space. Of racing notifiers and unmaskers exactly one
    /// queues it.
    fn deliver(&self, q: &Queue, port: EvtchnPort) {
        let mut cur = self.flags.load(SeqCst);
        while cur & PENDING != 0 && cur & MASKED == 0 {
            match self
                .flags
                .compare_exchange(cur, (cur & !PENDING) | MASKED, SeqCst, SeqCst)
            {
                Ok(_) => return q.push(port),
                Err(now) => cur = now,
            }
        }
    }
}

/// A domain's ports, in buckets of 64 allocated as the table grows (as Xen allocates them),
/// so a handle finds a port without the host lock.
struct PortTable {
    /// Ports `0..len` exist; grows under the host lock only.
    len: AtomicU32,
    buckets: Box<[OnceLock<Box<[Cell]>>]>,
}

impl PortTable {
    fn new(max_port: u32) -> PortTable {
        let ports = max_port.saturating_add(1).min(ABI_MAX_PORTS);
        let n = ports.div_ceil(BUCKET) as usize;
        PortTable {
            len: AtomicU32::new(0),
            buckets: (0..n).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Room for this many ports (whole buckets).
    fn capacity(&self) -> u32 {
        self.buckets.len() as u32 * BUCKET
    }

    fn len(&self) -> u32 {
        self.len.load(SeqCst)
    }

    fn cell(&self, port: EvtchnPort) -> Option<&Cell> {
        let p = port.get();
        if p >= self.len() {
            return None;
        }
        let bucket = self.buckets.get((p / BUCKET) as usize)?.get()?;
        bucket.get((p % BUCKET) as usize)
    }

    /// Adds port `len` (host lock held). The caller checks the domain's limit.
    fn grow(&self) -> Option<EvtchnPort> {
        let p = self.len();
        let bucket = self.buckets.get((p / BUCKET) as usize)?;
        bucket.get_or_init(|| (0..BUCKET).map(|_| Cell::default()).collect());
        self.len.store(p + 1, SeqCst);
        Some(EvtchnPort(p))
    }

    fn ports(&self) -> impl Iterator<Item = (EvtchnPort, &Cell)> {
        (0..self.len()).filter_map(|p| Some((EvtchnPort(p), self.cell(EvtchnPort(p))?)))
    }
}

/// A domain's event-channel port table.
pub struct DomainPorts {
    table: Arc<PortTable>,
    max_port: u32,
    /// No port below this one is free (where the search for a free port starts).
    first_free: u32,
    virq: [u32; NR_VIRQS],
}

impl Default for DomainPorts {
    /// A table limited to [`DEFAULT_MAX_PORT`].
    fn default() -> Self {
        DomainPorts::new(DEFAULT_MAX_PORT)
    }
}

impl fmt::Debug for DomainPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let used = self
            .table
            .ports()
            .filter(|(_, c)| !matches!(c.link.lock().state, State::Free | State::Reserved))
            .count();
        f.debug_struct("DomainPorts")
            .field("max_port", &self.max_port)
            .field("in_use", &used)
            .finish()
    }
}

impl DomainPorts {
    /// A table whose highest usable port is `max_port` (`max_evtchn_port` of
    /// `XEN_DOMCTL_createdomain`; the domain lifecycle passes it at creation), at most the
    /// FIFO ABI's limit.
    pub fn new(max_port: EvtchnPort) -> DomainPorts {
        let table = Arc::new(PortTable::new(max_port.get()));
        let zero = table.grow().expect("a table has room for port 0");
        if let Some(c) = table.cell(zero) {
            c.link.lock().state = State::Reserved;
        }
        DomainPorts {
            table,
            max_port: max_port.get(),
            first_free: 1,
            virq: [0; NR_VIRQS],
        }
    }

    /// The lowest free port (`get_free_port`), growing the table when none is free.
    fn get_free_port(&mut self) -> Result<EvtchnPort, Errno> {
        for p in self.first_free..self.table.len() {
            let port = EvtchnPort(p);
            if self
                .table
                .cell(port)
                .is_some_and(|c| c.link.lock().state == State::Free)
            {
                self.first_free = p;
                return Ok(port);
            }
        }
        self.first_free = self.table.len();
        if self.table.len() > self.max_port || self.table.len() >= self.table.capacity() {
            return Err(Errno::ENOSPC);
        }
        self.table.grow().ok_or(Errno::ENOSPC)
    }
}

impl Drop for DomainPorts {
    /// Breaks the links to other domains' tables (a host dropped with channels still open).
    fn drop(&mut self) {
        for (_, c) in self.table.ports() {
            *c.link.lock() = Link::default();
        }
    }
}

/// A handle's queue of delivered ports, with an eventfd that is readable while it may be
/// non-empty (the Linux driver's per-file ring).
///
/// The queue is a bitmap of the domain's ports with a selector word per 64 of them: a port
/// is queued at most once (it stays masked until unmasked), so a bit is all it needs.
/// Producers set bits lock-free; a thread in [`Handle::wait`] sleeps on the `seq` futex and
/// is woken with one `FUTEX_WAKE`. The eventfd is written only once someone has asked for
/// the descriptor (`polled`), when the queue goes from not signalled to signalled, and read
/// (reset) when it is drained empty.
struct Queue {
    efd: OwnedFd,
    /// The futex word waiters sleep on; bumped by every wake-up.
    seq: AtomicU32,
    /// Threads in `Handle::wait` that may be about to sleep or sleeping.
    waiters: AtomicU32,
    /// The eventfd counter is (or is about to be) non-zero.
    signalled: AtomicBool,
    /// The descriptor has been handed out: keep the eventfd in step.
    polled: AtomicBool,
    /// The earliest deadline (ns on [`mono_ns`]) of a timed waiter, `u64::MAX` if none; may
    /// be stale (early), which costs a spurious wake-up at most.
    deadline: AtomicU64,
    /// Registered with the timer thread.
    timed: AtomicBool,
    /// The selector words, then the port words, in one allocation (for up to 4096 ports
    /// the selector and the first 448 ports share a cache line).
    bits: Box<[AtomicU64]>,
    /// How many selector words lead `bits`.
    nsel: usize,
}

fn bit(i: u32) -> (usize, u64) {
    ((i / 64) as usize, 1u64 << (i % 64))
}

impl Queue {
    fn new(efd: OwnedFd, ports: u32) -> Queue {
        let words = ports.div_ceil(64) as usize;
        let nsel = words.div_ceil(64);
        Queue {
            efd,
            seq: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            signalled: AtomicBool::new(false),
            polled: AtomicBool::new(false),
            deadline: AtomicU64::new(u64::MAX),
            timed: AtomicBool::new(false),
            bits: (0..nsel + words).map(|_| AtomicU64::new(0)).collect(),
            nsel,
        }
    }

    /// Selector words: bit `i % 64` of selector `i / 64` is set while port word `i` may be
    /// non-zero.
    fn selector(&self) -> &[AtomicU64] {
        &self.bits[..self.nsel]
    }

    /// Port words: bit `p % 64` of word `p / 64` is set while port `p` is queued.
    fn words(&self) -> &[AtomicU64] {
        &self.bits[self.nsel..]
    }

    fn push(&self, port: EvtchnPort) {
        let (w, b) = bit(port.get());
        let Some(word) = self.words().get(w) else {
            return;
        };
        if word.fetch_or(b, SeqCst) == 0 {
            let (s, sb) = bit(w as u32);
            self.selector()[s].fetch_or(sb, SeqCst);
        }
        if self.waiters.load(SeqCst) > 0 {
            self.wake_one();
        } else if self.polled.load(SeqCst) && !self.signalled.swap(true, SeqCst) {
            self.write_efd();
        }
    }

    /// Clears the selector bit of word `w` if the word is empty, re-setting it if a producer
    /// filled the word meanwhile.
    fn tidy(&self, w: usize) {
        let (s, sb) = bit(w as u32);
        self.selector()[s].fetch_and(!sb, SeqCst);
        if self.words()[w].load(SeqCst) != 0 {
            self.selector()[s].fetch_or(sb, SeqCst);
        }
    }

    /// Drops a queued delivery of `port`.
    fn remove(&self, port: EvtchnPort) {
        let (w, b) = bit(port.get());
        if let Some(word) = self.words().get(w) {
            if word.fetch_and(!b, SeqCst) == b {
                self.tidy(w);
            }
        }
    }

    fn nonempty(&self) -> bool {
        self.selector().iter().any(|s| s.load(SeqCst) != 0)
    }

    /// Takes up to `buf.len()` queued ports, lowest first.
    fn take(&self, buf: &mut [EvtchnPort]) -> usize {
        let mut n = 0;
        let words = self.words();
        for (s, sel) in self.selector().iter().enumerate() {
            let mut sbits = sel.load(SeqCst);
            while sbits != 0 && n < buf.len() {
                let w = s * 64 + sbits.trailing_zeros() as usize;
                sbits &= sbits - 1;
                // Take the lowest bits that fit in what is left of `buf`.
                let mut want = words[w].load(SeqCst);
                let room = buf.len() - n;
                while want.count_ones() as usize > room {
                    want &= !(1u64 << (63 - want.leading_zeros()));
                }
                let old = words[w].fetch_and(!want, SeqCst);
                let mut got = old & want;
                while got != 0 {
                    buf[n] = EvtchnPort((w * 64) as u32 + got.trailing_zeros());
                    n += 1;
                    got &= got - 1;
                }
                if old & !want == 0 {
                    self.tidy(w);
                }
            }
            if n == buf.len() {
                break;
            }
        }
        n
    }

    /// After a read: passes a wake-up on to another waiter while ports remain, and keeps the
    /// eventfd readable exactly while ports remain (once it has been handed out).
    fn settle(&self) {
        let nonempty = self.nonempty();
        if nonempty && self.waiters.load(SeqCst) > 0 {
            self.wake_one();
        }
        if !self.polled.load(SeqCst) {
            return;
        }
        if nonempty {
            if !self.signalled.swap(true, SeqCst) {
                self.write_efd();
            }
        } else if self.signalled.load(SeqCst) {
            // Reset the counter first, then the flag, then look again: a producer that saw
            // the flag still set before we cleared it has its port seen here.
            self.read_efd();
            self.signalled.store(false, SeqCst);
            if self.nonempty() && !self.signalled.swap(true, SeqCst) {
                self.write_efd();
            }
        }
    }

    /// Starts keeping the eventfd in step (the descriptor is being handed out).
    fn export_fd(&self) -> RawFd {
        if !self.polled.load(SeqCst) {
            self.polled.store(true, SeqCst);
            self.settle();
        }
        self.efd.as_raw_fd()
    }

    fn wake_one(&self) {
        self.seq.fetch_add(1, SeqCst);
        futex_wake(&self.seq, 1);
    }

    fn wake_all(&self) {
        self.seq.fetch_add(1, SeqCst);
        futex_wake(&self.seq, i32::MAX);
    }

    fn write_efd(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. It cannot block (the
        // counter would need 2^64-2 unread writes); a failure would only cost a wake-up.
        unsafe { libc::write(self.efd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn read_efd(&self) {
        let mut counter = 0u64;
        // SAFETY: reads 8 bytes into a live u64 from our non-blocking eventfd; if the counter
        // is already zero it fails with EAGAIN, which is what we want.
        unsafe { libc::read(self.efd.as_raw_fd(), (&mut counter as *mut u64).cast(), 8) };
    }
}

/// Wakes up to `n` threads sleeping on `word`.
fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: FUTEX_WAKE on an aligned u32 that outlives the call; the kernel only uses the
    // address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            n,
        )
    };
}

/// Sleeps while `word` holds `seen`, up to `timeout` (forever for `None`). True if the
/// timeout expired; spurious returns are possible, so callers re-check their condition.
fn futex_wait(word: &AtomicU32, seen: u32, timeout: Option<Duration>) -> bool {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: t.subsec_nanos().into(),
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT on an aligned u32 that outlives the call, with a null or live
    // relative timeout; the kernel only reads the word and the timespec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            seen,
            tsp,
        )
    };
    r < 0 && Errno::last() == Errno::ETIMEDOUT
}

/// Nanoseconds on the monotonic clock since the first call in this process.
fn mono_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Timeouts of [`Handle::wait`] without a kernel timer per wait.
///
/// A timed `FUTEX_WAIT` arms and cancels a high-resolution timer on every sleep, which cost
/// a quarter of the notify round trip. Instead a waiter records its deadline in its queue
/// (`Queue::deadline`) and sleeps untimed; one thread per process sleeps until the earliest
/// deadline and wakes the queues whose deadline has passed. A waiter only has to wake the
/// timer thread when its deadline is earlier than the one the thread sleeps until, which a
/// loop waiting with the same timeout never is.
struct Timer {
    /// Queues that have had a timed waiter.
    queues: Mutex<Vec<std::sync::Weak<Queue>>>,
    /// The deadline the timer thread sleeps until (`u64::MAX`: none).
    target: AtomicU64,
    /// The timer thread's futex word, bumped to wake it.
    seq: AtomicU32,
}

static TIMER: Timer = Timer {
    queues: Mutex::new(Vec::new()),
    target: AtomicU64::new(u64::MAX),
    seq: AtomicU32::new(0),
};

impl Timer {
    /// The timer, its thread started on first use; `None` if the thread cannot be started
    /// (waiters then fall back to timed futex waits).
    fn get() -> Option<&'static Timer> {
        static STARTED: OnceLock<bool> = OnceLock::new();
        let ok = *STARTED.get_or_init(|| {
            std::thread::Builder::new()
                .name("xen-sim-evtchn-timer".into())
                .spawn(|| TIMER.run())
                .is_ok()
        });
        ok.then_some(&TIMER)
    }

    /// Makes sure `q`'s waiters are woken by `deadline`. Call with the waiter counted in
    /// `q.waiters`.
    fn arm(&self, q: &Arc<Queue>, deadline: u64) {
        if !q.timed.swap(true, SeqCst) {
            self.queues.lock().push(Arc::downgrade(q));
        }
        q.deadline.fetch_min(deadline, SeqCst);
        // Pairs with the rescan in `run`: either the thread sees our deadline, or we see the
        // target it settled on and wake it if ours is earlier.
        if deadline < self.target.load(SeqCst) {
            self.target.fetch_min(deadline, SeqCst);
            self.seq.fetch_add(1, SeqCst);
            futex_wake(&self.seq, 1);
        }
    }

    fn run(&self) {
        loop {
            let seen = self.seq.load(SeqCst);
            let now = mono_ns();
            let next = self.expire(now);
            self.target.store(next, SeqCst);
            // A waiter that armed during the scan and read the old target is seen here.
            if self.expire(now) < next {
                continue;
            }
            let sleep = (next != u64::MAX).then(|| Duration::from_nanos(next - now));
            futex_wait(&self.seq, seen, sleep);
        }
    }

    /// Wakes the waiters of every queue whose deadline is at or before `now`; returns the
    /// earliest deadline still to come. Forgets dropped queues.
    fn expire(&self, now: u64) -> u64 {
        let mut next = u64::MAX;
        self.queues.lock().retain(|w| {
            let Some(q) = w.upgrade() else {
                return false;
            };
            let d = q.deadline.load(SeqCst);
            if d <= now {
                // Waiters with later deadlines wake too, see theirs still ahead and re-arm.
                q.deadline.store(u64::MAX, SeqCst);
                if q.waiters.load(SeqCst) > 0 {
                    q.wake_all();
                }
            } else {
                next = next.min(d);
            }
            true
        });
        next
    }
}

fn domain_ports(state: &mut HostState, dom: DomId) -> Result<&mut DomainPorts, Errno> {
    state
        .domains
        .get_mut(&dom)
        .map(|d| &mut d.evtchn)
        .ok_or(Errno::ESRCH)
}

/// `EVTCHNOP_send` from `dom` on `port`: the hypercall itself, with no handle-ownership check
/// (used for `UNMAP_NOTIFY_SEND_EVENT` and by privileged callers).
pub(crate) fn send(state: &mut HostState, dom: DomId, port: EvtchnPort) -> Result<(), Errno> {
    let table = &domain_ports(state, dom)?.table;
    let cell = table.cell(port).ok_or(Errno::EINVAL)?;
    let link = cell.link.lock();
    send_on(&link)
}

/// Sends on a port whose link is locked: delivers to the remote end of an interdomain port.
fn send_on(link: &Link) -> Result<(), Errno> {
    match link.state {
        State::Interdomain(..) => {
            if let Some(peer) = &link.peer {
                peer.set_pending();
            }
            Ok(())
        }
        // Xen drops a notification on an unbound port silently.
        State::Unbound(_) => Ok(()),
        State::Free | State::Reserved | State::Virq(_) => Err(Errno::EINVAL),
    }
}

/// `evtchn_close`: frees `port` of `dom`; an interdomain peer becomes unbound, waiting for
/// `dom` again.
fn close(ports: &mut DomainPorts, dom: DomId, port: EvtchnPort) -> Result<(), Errno> {
    let cell = ports.table.cell(port).ok_or(Errno::EINVAL)?;
    let mut link = cell.link.lock();
    match link.state {
        State::Free | State::Reserved => return Err(Errno::EINVAL),
        State::Virq(v) => ports.virq[v.get() as usize] = 0,
        State::Unbound(_) => {}
        State::Interdomain(..) => {
            if let Some(rcell) = link.peer.as_ref().and_then(Peer::cell) {
                // Lock order: only host-lock holders take two port locks, one at a time
                // by the host lock, and notifiers take one; so this cannot deadlock.
                let mut rlink = rcell.link.lock();
                if rlink.state == State::Interdomain(dom, port) {
                    rlink.state = State::Unbound(dom);
                    rlink.peer = None;
                }
            }
        }
    }
    *link = Link::default();
    cell.flags.store(0, SeqCst);
    ports.first_free = ports.first_free.min(port.get());
    Ok(())
}

/// Raises the global virtual interrupt `virq` (e.g. `VIRQ_DOM_EXC`) in the domain that
/// handles global VIRQs (dom0), if it has bound it.
pub fn send_global_virq(state: &mut HostState, virq: Virq) {
    let Some(slot) = usize::try_from(virq.get()).ok().filter(|&v| v < NR_VIRQS) else {
        return;
    };
    let Some(d0) = state.domains.get(&DomId::DOM0) else {
        return;
    };
    let port = EvtchnPort(d0.evtchn.virq[slot]);
    if port.get() != 0 {
        if let Some(cell) = d0.evtchn.table.cell(port) {
            let link = cell.link.lock();
            cell.set_pending(link.owner.as_deref(), port);
        }
    }
}

/// Called by the domain lifecycle when `dom` is destroyed (before it is removed): close all of
/// its ports; interdomain peers become unbound as Xen leaves them.
pub(crate) fn on_domain_destroy(state: &mut HostState, dom: DomId) {
    let Ok(ports) = domain_ports(state, dom) else {
        return;
    };
    for i in 1..ports.table.len() {
        let _ = close(ports, dom, EvtchnPort(i));
    }
}

/// One open of the simulated `/dev/xen/evtchn` by domain `dom`: the ports it binds are
/// delivered to it. Dropping the handle closes all its ports, as closing the device does.
pub struct Handle {
    host: Host,
    dom: DomId,
    /// The port table of the domain as it was when the handle was opened; a handle does not
    /// outlive its domain (operations on a destroyed domain fail with `ESRCH`).
    table: Arc<PortTable>,
    queue: Arc<Queue>,
    /// `IOCTL_EVTCHN_RESTRICT_DOMID`: the only domain this handle may bind to.
    restrict: OnceLock<DomId>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("dom", &self.dom)
            .field("fd", &self.queue.efd.as_raw_fd())
            .finish()
    }
}

impl Host {
    /// Opens an event-channel handle acting as domain `dom` (dom0 for backends and
    /// xenstored, a guest's id for a simulated frontend). `ESRCH` if `dom` does not exist.
    pub fn evtchn_open(&self, dom: DomId) -> Result<Handle, Errno> {
        let table = self
            .lock()
            .domains
            .get(&dom)
            .map(|d| d.evtchn.table.clone())
            .ok_or(Errno::ESRCH)?;
        // SAFETY: plain syscall; flags are valid.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: eventfd returned a fresh descriptor that we now own.
        let efd = unsafe { OwnedFd::from_raw_fd(fd) };
        let queue = Arc::new(Queue::new(efd, table.capacity()));
        Ok(Handle {
            host: self.clone(),
            dom,
            table,
            queue,
            restrict: OnceLock::new(),
        })
    }

    /// `EVTCHNOP_alloc_unbound` by a privileged caller on behalf of `dom`: a port of `dom`
    /// that `remote` may bind to, owned by no handle (how the toolstack creates a guest's
    /// xenstore and console channels; the guest takes delivery with [`Handle::attach`]).
    pub fn evtchn_alloc_unbound(&self, dom: DomId, remote: DomId) -> Result<EvtchnPort, Errno> {
        let mut st = self.lock();
        alloc_unbound(&mut st, dom, remote, None)
    }

    /// `EVTCHNOP_status`: the state of `port` of `dom`. `EINVAL` for a port beyond the table.
    pub fn evtchn_status(&self, dom: DomId, port: EvtchnPort) -> Result<PortStatus, Errno> {
        let mut st = self.lock();
        let cell = domain_ports(&mut st, dom)?
            .table
            .cell(port)
            .ok_or(Errno::EINVAL)?;
        let state = cell.link.lock().state;
        Ok(match state {
            State::Free | State::Reserved => PortStatus::Closed,
            State::Unbound(r) => PortStatus::Unbound { remote: r },
            State::Interdomain(r, rp) => PortStatus::Interdomain {
                remote: r,
                remote_port: rp,
            },
            State::Virq(v) => PortStatus::Virq(v),
        })
    }

    /// `EVTCHNOP_send` as `dom` on `port` without a handle (hypercall level): `EINVAL` for a
    /// free or VIRQ port; a notification on an unbound port is dropped.
    pub fn evtchn_send(&self, dom: DomId, port: EvtchnPort) -> Result<(), Errno> {
        send(&mut self.lock(), dom, port)
    }
}

fn is_dying(state: &HostState, dom: DomId) -> bool {
    state.domains.get(&dom).is_some_and(|d| d.dying)
}

fn alloc_unbound(
    state: &mut HostState,
    dom: DomId,
    remote: DomId,
    owner: Option<&Arc<Queue>>,
) -> Result<EvtchnPort, Errno> {
    let remote = if remote == DomId::SELF { dom } else { remote };
    let dying = is_dying(state, dom);
    let ports = domain_ports(state, dom)?;
    if dying {
        return Err(Errno::EINVAL);
    }
    let port = ports.get_free_port()?;
    let cell = ports.table.cell(port).ok_or(Errno::EINVAL)?;
    let mut link = cell.link.lock();
    link.state = State::Unbound(remote);
    link.owner = owner.cloned();
    Ok(port)
}

impl Handle {
    /// The domain this handle acts as.
    pub fn domid(&self) -> DomId {
        self.dom
    }

    /// The host this handle belongs to.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// This handle's domain's ports, if the domain is still the one the handle was opened
    /// for (`ESRCH` once it has been destroyed).
    fn my_ports<'a>(&self, state: &'a mut HostState) -> Result<&'a mut DomainPorts, Errno> {
        let ports = domain_ports(state, self.dom)?;
        if Arc::ptr_eq(&ports.table, &self.table) {
            Ok(ports)
        } else {
            Err(Errno::ESRCH)
        }
    }

    /// Runs `f` on the link of `port` if this handle owns it, under the port's lock only.
    fn with_owned<R>(&self, port: EvtchnPort, f: impl FnOnce(&Cell, &Link) -> R) -> Option<R> {
        let cell = self.table.cell(port)?;
        let link = cell.link.lock();
        link.owned_by(&self.queue).then(|| f(cell, &link))
    }

    /// The errno for a port this handle does not own: `ESRCH` once its domain is gone,
    /// `ENOTCONN` otherwise (as the driver returns).
    fn not_owned(&self) -> Errno {
        match self.my_ports(&mut self.host.lock()) {
            Ok(_) => Errno::ENOTCONN,
            Err(e) => e,
        }
    }

    /// `IOCTL_EVTCHN_RESTRICT_DOMID`: from now on this handle may only bind interdomain
    /// channels to `dom` (a deprivileged device model). `EINVAL` for dom0 or a reserved id,
    /// `EACCES` if already restricted.
    pub fn restrict(&self, dom: DomId) -> Result<(), Errno> {
        if self.restrict.get().is_some() {
            return Err(Errno::EACCES);
        }
        if dom.is_dom0() || !dom.is_ordinary() {
            return Err(Errno::EINVAL);
        }
        self.restrict.set(dom).map_err(|_| Errno::EACCES)
    }

    /// `IOCTL_EVTCHN_BIND_UNBOUND_PORT`: a new port that `remote` may bind to (`EACCES` on
    /// a restricted handle).
    pub fn bind_unbound_port(&self, remote: DomId) -> Result<EvtchnPort, Errno> {
        if self.restrict.get().is_some() {
            return Err(Errno::EACCES);
        }
        let mut st = self.host.lock();
        self.my_ports(&mut st)?;
        alloc_unbound(&mut st, self.dom, remote, Some(&self.queue))
    }

    /// `IOCTL_EVTCHN_BIND_INTERDOMAIN`: connects a new local port to `remote_port` of
    /// `remote`, which must be unbound and waiting for this domain (`EINVAL` otherwise,
    /// `ESRCH` for an unknown domain).
    pub fn bind_interdomain(
        &self,
        remote: DomId,
        remote_port: EvtchnPort,
    ) -> Result<EvtchnPort, Errno> {
        if self.restrict.get().is_some_and(|&r| r != remote) {
            return Err(Errno::EACCES);
        }
        let ld = self.dom;
        let rd = if remote == DomId::SELF { ld } else { remote };
        let mut st = self.host.lock();
        if !st.domains.contains_key(&rd) {
            return Err(Errno::ESRCH);
        }
        let dying = is_dying(&st, ld);
        let lt = self.my_ports(&mut st)?;
        if dying {
            return Err(Errno::EINVAL);
        }
        let lport = lt.get_free_port()?;
        let lt = lt.table.clone();
        let rt = domain_ports(&mut st, rd)?.table.clone();
        // The new local port is free, so it is not `remote_port` even in a loopback.
        let rcell = rt.cell(remote_port).ok_or(Errno::EINVAL)?;
        let lcell = lt.cell(lport).ok_or(Errno::EINVAL)?;
        let remote_owner = {
            let mut rlink = rcell.link.lock();
            if rlink.state != State::Unbound(ld) {
                return Err(Errno::EINVAL);
            }
            rlink.state = State::Interdomain(ld, lport);
            rlink.peer = Some(Peer {
                table: lt.clone(),
                port: lport,
                owner: Some(self.queue.clone()),
            });
            rlink.owner.clone()
        };
        let mut llink = lcell.link.lock();
        llink.state = State::Interdomain(rd, remote_port);
        llink.owner = Some(self.queue.clone());
        llink.peer = Some(Peer {
            table: rt,
            port: remote_port,
            owner: remote_owner,
        });
        // Xen marks the new local port pending so an event sent before the bind is not lost.
        lcell.set_pending(Some(&self.queue), lport);
        Ok(lport)
    }

    /// `IOCTL_EVTCHN_BIND_VIRQ`: a port for virtual interrupt `virq` on vCPU 0 (`EINVAL` out
    /// of range, `EEXIST` if this domain has already bound it).
    pub fn bind_virq(&self, virq: Virq) -> Result<EvtchnPort, Errno> {
        if self.restrict.get().is_some() {
            return Err(Errno::EACCES);
        }
        let slot = usize::try_from(virq.get())
            .ok()
            .filter(|&v| v < NR_VIRQS)
            .ok_or(Errno::EINVAL)?;
        let mut st = self.host.lock();
        let dying = is_dying(&st, self.dom);
        let t = self.my_ports(&mut st)?;
        if t.virq[slot] != 0 {
            return Err(Errno::EEXIST);
        }
        if dying {
            return Err(Errno::EINVAL);
        }
        let port = t.get_free_port()?;
        let cell = t.table.cell(port).ok_or(Errno::EINVAL)?;
        let mut link = cell.link.lock();
        link.state = State::Virq(virq);
        link.owner = Some(self.queue.clone());
        t.virq[slot] = port.get();
        Ok(port)
    }

    /// Takes delivery of `port` of this domain that no handle owns (one a privileged caller
    /// allocated with [`Host::evtchn_alloc_unbound`], as a guest kernel owns the ports the
    /// toolstack made for it). `EINVAL` for a free port, `EBUSY` if a handle owns it.
    pub fn attach(&self, port: EvtchnPort) -> Result<(), Errno> {
        let mut st = self.host.lock();
        let t = self.my_ports(&mut st)?;
        let cell = t.table.cell(port).ok_or(Errno::EINVAL)?;
        let mut link = cell.link.lock();
        if matches!(link.state, State::Free | State::Reserved) {
            return Err(Errno::EINVAL);
        }
        if link.owner.is_some() {
            return Err(Errno::EBUSY);
        }
        link.owner = Some(self.queue.clone());
        // The remote end now delivers to us.
        if let Some(rcell) = link.peer.as_ref().and_then(Peer::cell) {
            if let Some(rpeer) = rcell.link.lock().peer.as_mut() {
                rpeer.owner = Some(self.queue.clone());
            }
        }
        cell.deliver(&self.queue, port);
        Ok(())
    }

    /// `IOCTL_EVTCHN_UNBIND`: closes a port this handle owns (`ENOTCONN` otherwise).
    pub fn unbind(&self, port: EvtchnPort) -> Result<(), Errno> {
        let mut st = self.host.lock();
        let t = self.my_ports(&mut st)?;
        // `my_ports` checked that `t` is this handle's table.
        self.with_owned(port, |_, _| ()).ok_or(Errno::ENOTCONN)?;
        close(t, self.dom, port)?;
        drop(st);
        // Drop an already-queued delivery of the closed port.
        self.queue.remove(port);
        self.queue.settle();
        Ok(())
    }

    /// `IOCTL_EVTCHN_NOTIFY`: notifies the remote end of `port` (`ENOTCONN` if this handle
    /// does not own it; dropped silently if the port is unbound or a VIRQ, as the driver
    /// ignores the result of `EVTCHNOP_send`). Takes only the port's own lock.
    pub fn notify(&self, port: EvtchnPort) -> Result<(), Errno> {
        // The driver ignores the hypercall's result (`notify_remote_via_evtchn` is void):
        // notifying an owned VIRQ port is a silent no-op, as on Linux.
        match self.with_owned(port, |_, link| {
            let _ = send_on(link);
        }) {
            Some(()) => Ok(()),
            None => Err(self.not_owned()),
        }
    }

    /// Unmasks `port` (a `write` of the port to the device): a notification that arrived
    /// while it was masked is delivered now. Ports the handle does not own are ignored, as
    /// the driver ignores them. Takes only the port's own lock.
    pub fn unmask(&self, port: EvtchnPort) -> Result<(), Errno> {
        self.with_owned(port, |cell, _| {
            cell.flags.fetch_and(!MASKED, SeqCst);
            cell.deliver(&self.queue, port);
        });
        Ok(())
    }

    /// Reads delivered ports into `buf` without blocking (a `read` of the device); returns how
    /// many were read, 0 if none is pending. Ports come lowest first.
    pub fn read_pending(&self, buf: &mut [EvtchnPort]) -> usize {
        let n = self.queue.take(buf);
        // More than fits in `buf` keeps the descriptor readable.
        self.queue.settle();
        n
    }

    /// Waits up to `timeout` (forever for `None`) for delivered ports and reads them into
    /// `buf`; returns how many, 0 on timeout (a blocking `read` of the device).
    pub fn wait(&self, buf: &mut [EvtchnPort], timeout: Option<Duration>) -> usize {
        if buf.is_empty() {
            return 0;
        }
        let q = &self.queue;
        let mut deadline = None;
        loop {
            let n = q.take(buf);
            if n > 0 {
                q.settle();
                return n;
            }
            let seen = q.seq.load(SeqCst);
            q.waiters.fetch_add(1, SeqCst);
            // A producer that set its bit before our increment is seen here; one after it
            // sees us waiting and bumps `seq`, so the sleep below returns at once.
            if q.nonempty() {
                q.waiters.fetch_sub(1, SeqCst);
                continue;
            }
            let mut expired = false;
            match timeout {
                None => {
                    futex_wait(&q.seq, seen, None);
                }
                Some(t) => {
                    let now = mono_ns();
                    let d = *deadline.get_or_insert_with(|| {
                        now.saturating_add(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX))
                    });
                    if now >= d {
                        expired = true;
                    } else if let Some(timer) = Timer::get() {
                        timer.arm(q, d);
                        futex_wait(&q.seq, seen, None);
                    } else {
                        futex_wait(&q.seq, seen, Some(Duration::from_nanos(d - now)));
                    }
                }
            }
            q.waiters.fetch_sub(1, SeqCst);
            if expired {
                let n = q.take(buf);
                q.settle();
                return n;
            }
        }
    }

    /// The eventfd that is readable when ports may be pending (for poll/epoll/`AsyncFd`).
    pub fn fd(&self) -> RawFd {
        self.queue.export_fd()
    }
}

impl AsFd for Handle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.queue.export_fd();
        self.queue.efd.as_fd()
    }
}

impl AsRawFd for Handle {
    fn as_raw_fd(&self) -> RawFd {
        self.queue.export_fd()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut st = self.host.lock();
        let Ok(t) = self.my_ports(&mut st) else {
            return;
        };
        let owned: Vec<EvtchnPort> = t
            .table
            .ports()
            .filter(|(_, c)| c.link.lock().owned_by(&self.queue))
            .map(|(p, _)| p)
            .collect();
        for port in owned {
            let _ = close(t, self.dom, port);
        }
    }
}
