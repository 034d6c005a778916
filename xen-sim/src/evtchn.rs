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
//! handle sees its new port once right after `bind_interdomain`.

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use xen_types::{DomId, Errno, EvtchnPort, Virq};

use crate::host::{Host, HostState};

/// Default highest usable port: the 2-level ABI limit on 64-bit guests (4096 ports).
pub const DEFAULT_MAX_PORT: EvtchnPort = EvtchnPort(4095);

const NR_VIRQS: usize = xen_sys::NR_VIRQS as usize;

/// The state of a port, as `EVTCHNOP_status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortStatus {
    /// Not in use (`EVTCHNSTAT_closed`).
    Closed,
    /// Allocated for `remote` to bind to (`EVTCHNSTAT_unbound`).
    Unbound {
        /// The only domain that may bind to it.
        remote: DomId,
    },
    /// Connected (`EVTCHNSTAT_interdomain`).
    Interdomain {
        /// The remote domain.
        remote: DomId,
        /// The remote port.
        remote_port: EvtchnPort,
    },
    /// Bound to a virtual interrupt (`EVTCHNSTAT_virq`).
    Virq(Virq),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    Reserved,
    Unbound(DomId),
    Interdomain(DomId, EvtchnPort),
    Virq(Virq),
}

struct Port {
    state: State,
    pending: bool,
    masked: bool,
    owner: Option<Arc<Queue>>,
}

impl Port {
    fn free() -> Port {
        Port {
            state: State::Free,
            pending: false,
            masked: false,
            owner: None,
        }
    }
}

/// A domain's event-channel port table.
pub struct DomainPorts {
    ports: Vec<Port>,
    max_port: u32,
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
            .ports
            .iter()
            .filter(|p| !matches!(p.state, State::Free | State::Reserved))
            .count();
        f.debug_struct("DomainPorts")
            .field("max_port", &self.max_port)
            .field("in_use", &used)
            .finish()
    }
}

impl DomainPorts {
    /// A table whose highest usable port is `max_port` (`max_evtchn_port` of
    /// `XEN_DOMCTL_createdomain`; the domain lifecycle passes it at creation).
    pub fn new(max_port: EvtchnPort) -> DomainPorts {
        DomainPorts {
            ports: vec![Port {
                state: State::Reserved,
                pending: false,
                masked: false,
                owner: None,
            }],
            max_port: max_port.get(),
            virq: [0; NR_VIRQS],
        }
    }

    fn get(&self, port: EvtchnPort) -> Option<&Port> {
        self.ports.get(port.get() as usize)
    }

    fn get_mut(&mut self, port: EvtchnPort) -> Option<&mut Port> {
        self.ports.get_mut(port.get() as usize)
    }

    fn get_free_port(&mut self) -> Result<EvtchnPort, Errno> {
        if let Some(i) = self.ports.iter().position(|p| p.state == State::Free) {
            return Ok(EvtchnPort(i as u32));
        }
        let next = self.ports.len() as u32;
        if next > self.max_port {
            return Err(Errno::ENOSPC);
        }
        self.ports.push(Port::free());
        Ok(EvtchnPort(next))
    }
}

/// A handle's queue of delivered ports, with an eventfd that is readable while it may be
/// non-empty (the Linux driver's per-file ring).
///
/// The eventfd is written only when the queue goes from "not signalled" to "signalled" and
/// read (reset) only when the queue is drained empty, both under the queue lock, so a wake-up
/// costs one `write` on the notifying side and one `read` on the receiving side.
///
/// A thread blocked in [`Handle::wait`] sleeps on a condition variable instead; while one is,
/// a delivery wakes it directly and leaves the eventfd alone (one futex wake, no `write`).
struct Queue {
    efd: OwnedFd,
    inner: Mutex<QueueInner>,
    cond: Condvar,
}

#[derive(Default)]
struct QueueInner {
    ports: VecDeque<EvtchnPort>,
    /// The eventfd counter is non-zero.
    signalled: bool,
    /// Threads blocked in `Handle::wait`.
    waiters: u32,
}

impl Queue {
    fn push(&self, port: EvtchnPort) {
        let mut q = self.inner.lock();
        q.ports.push_back(port);
        if q.waiters > 0 {
            drop(q);
            self.cond.notify_one();
        } else if !q.signalled {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our eventfd. It cannot block (the
            // counter would need 2^64-2 unread writes); a failure would only cost a wake-up.
            unsafe { libc::write(self.efd.as_raw_fd(), (&one as *const u64).cast(), 8) };
            q.signalled = true;
        }
    }

    /// Keeps the eventfd in step with the queue (called with the lock held): reset once the
    /// queue is empty, set while ports remain (e.g. more than a reader's buffer held, or a
    /// condvar waiter took only part of a batch).
    fn settle(&self, q: &mut QueueInner) {
        if q.ports.is_empty() && q.signalled {
            let mut counter = 0u64;
            // SAFETY: reads 8 bytes into a live u64 from our non-blocking eventfd, whose
            // counter is non-zero (`signalled`), so it does not fail or block.
            unsafe { libc::read(self.efd.as_raw_fd(), (&mut counter as *mut u64).cast(), 8) };
            q.signalled = false;
        } else if !q.ports.is_empty() && !q.signalled {
            let one: u64 = 1;
            // SAFETY: as in `push`.
            unsafe { libc::write(self.efd.as_raw_fd(), (&one as *const u64).cast(), 8) };
            q.signalled = true;
        }
    }
}

fn domain_ports(state: &mut HostState, dom: DomId) -> Result<&mut DomainPorts, Errno> {
    state
        .domains
        .get_mut(&dom)
        .map(|d| &mut d.evtchn)
        .ok_or(Errno::ESRCH)
}

/// Marks `port` of `dom` pending and delivers it if it is unmasked and owned by a handle
/// (`evtchn_port_set_pending` plus the Linux driver's upcall).
fn set_pending(state: &mut HostState, dom: DomId, port: EvtchnPort) -> Delivery {
    let Some(p) = state
        .domains
        .get_mut(&dom)
        .and_then(|d| d.evtchn.get_mut(port))
    else {
        return Delivery(None);
    };
    if p.pending {
        return Delivery(None);
    }
    p.pending = true;
    deliver(p, port)
}

/// A port to put on a handle's queue, done once the host lock is released so the woken
/// thread does not run into the lock the notifier still holds.
#[must_use]
struct Delivery(Option<(Arc<Queue>, EvtchnPort)>);

impl Delivery {
    fn push(self) {
        if let Some((q, port)) = self.0 {
            q.push(port);
        }
    }
}

fn deliver(p: &mut Port, port: EvtchnPort) -> Delivery {
    if p.pending && !p.masked {
        if let Some(q) = &p.owner {
            // The driver's handler masks the port and queues it for user space.
            p.pending = false;
            p.masked = true;
            return Delivery(Some((q.clone(), port)));
        }
    }
    Delivery(None)
}

/// `EVTCHNOP_send` from `dom` on `port`: the hypercall itself, with no handle-ownership check
/// (used for `UNMAP_NOTIFY_SEND_EVENT` and by privileged callers).
pub(crate) fn send(state: &mut HostState, dom: DomId, port: EvtchnPort) -> Result<(), Errno> {
    send_deferred(state, dom, port).map(Delivery::push)
}

fn send_deferred(state: &mut HostState, dom: DomId, port: EvtchnPort) -> Result<Delivery, Errno> {
    let table = domain_ports(state, dom)?;
    let p = table.get(port).ok_or(Errno::EINVAL)?;
    match p.state {
        State::Interdomain(rd, rp) => Ok(set_pending(state, rd, rp)),
        // Xen drops a notification on an unbound port silently.
        State::Unbound(_) => Ok(Delivery(None)),
        State::Free | State::Reserved | State::Virq(_) => Err(Errno::EINVAL),
    }
}

/// `evtchn_close`: frees `port` of `dom`; an interdomain peer becomes unbound, waiting for
/// `dom` again.
fn close(state: &mut HostState, dom: DomId, port: EvtchnPort) -> Result<(), Errno> {
    let table = domain_ports(state, dom)?;
    let p = table.get_mut(port).ok_or(Errno::EINVAL)?;
    let old = p.state;
    match old {
        State::Free | State::Reserved => return Err(Errno::EINVAL),
        State::Virq(v) => table.virq[v.get() as usize] = 0,
        State::Unbound(_) => {}
        State::Interdomain(rd, rp) => {
            if let Some(rport) = state
                .domains
                .get_mut(&rd)
                .and_then(|d| d.evtchn.get_mut(rp))
            {
                if rport.state == State::Interdomain(dom, port) {
                    rport.state = State::Unbound(dom);
                }
            }
        }
    }
    if let Some(p) = state
        .domains
        .get_mut(&dom)
        .and_then(|d| d.evtchn.get_mut(port))
    {
        *p = Port::free();
    }
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
    let port = d0.evtchn.virq[slot];
    if port != 0 {
        set_pending(state, DomId::DOM0, EvtchnPort(port)).push();
    }
}

/// Called by the domain lifecycle when `dom` is destroyed (before it is removed): close all of
/// its ports; interdomain peers become unbound as Xen leaves them.
pub(crate) fn on_domain_destroy(state: &mut HostState, dom: DomId) {
    let n = match state.domains.get(&dom) {
        Some(d) => d.evtchn.ports.len(),
        None => return,
    };
    for i in 1..n {
        let _ = close(state, dom, EvtchnPort(i as u32));
    }
}

/// One open of the simulated `/dev/xen/evtchn` by domain `dom`: the ports it binds are
/// delivered to it. Dropping the handle closes all its ports, as closing the device does.
pub struct Handle {
    host: Host,
    dom: DomId,
    queue: Arc<Queue>,
    /// `IOCTL_EVTCHN_RESTRICT_DOMID`: the only domain this handle may bind to.
    restrict: std::sync::OnceLock<DomId>,
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
        if !self.lock().domains.contains_key(&dom) {
            return Err(Errno::ESRCH);
        }
        // SAFETY: plain syscall; flags are valid.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: eventfd returned a fresh descriptor that we now own.
        let efd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Handle {
            host: self.clone(),
            dom,
            restrict: std::sync::OnceLock::new(),
            queue: Arc::new(Queue {
                efd,
                inner: Mutex::new(QueueInner::default()),
                cond: Condvar::new(),
            }),
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
        let p = domain_ports(&mut st, dom)?.get(port).ok_or(Errno::EINVAL)?;
        Ok(match p.state {
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
    let table = domain_ports(state, dom)?;
    if dying {
        return Err(Errno::EINVAL);
    }
    let port = table.get_free_port()?;
    let p = table.get_mut(port).ok_or(Errno::EINVAL)?;
    p.state = State::Unbound(remote);
    p.owner = owner.cloned();
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

    fn owned(&self, state: &mut HostState, port: EvtchnPort) -> Result<(), Errno> {
        let table = domain_ports(state, self.dom)?;
        match table.get(port).and_then(|p| p.owner.as_ref()) {
            Some(q) if Arc::ptr_eq(q, &self.queue) => Ok(()),
            _ => Err(Errno::ENOTCONN),
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
        let lt = domain_ports(&mut st, ld)?;
        if dying {
            return Err(Errno::EINVAL);
        }
        let lport = lt.get_free_port()?;
        // Mark it reserved while we check the remote end (it may be in the same table).
        lt.ports[lport.get() as usize].state = State::Reserved;
        let ok = {
            let rt = domain_ports(&mut st, rd)?;
            match rt.get_mut(remote_port) {
                Some(rp) if rp.state == State::Unbound(ld) => {
                    rp.state = State::Interdomain(ld, lport);
                    true
                }
                _ => false,
            }
        };
        let lt = domain_ports(&mut st, ld)?;
        let lp = &mut lt.ports[lport.get() as usize];
        if !ok {
            *lp = Port::free();
            return Err(Errno::EINVAL);
        }
        lp.state = State::Interdomain(rd, remote_port);
        lp.owner = Some(self.queue.clone());
        // Xen marks the new local port pending so an event sent before the bind is not lost.
        let d = set_pending(&mut st, ld, lport);
        drop(st);
        d.push();
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
        let t = domain_ports(&mut st, self.dom)?;
        if t.virq[slot] != 0 {
            return Err(Errno::EEXIST);
        }
        if dying {
            return Err(Errno::EINVAL);
        }
        let port = t.get_free_port()?;
        let p = &mut t.ports[port.get() as usize];
        p.state = State::Virq(virq);
        p.owner = Some(self.queue.clone());
        t.virq[slot] = port.get();
        Ok(port)
    }

    /// Takes delivery of `port` of this domain that no handle owns (one a privileged caller
    /// allocated with [`Host::evtchn_alloc_unbound`], as a guest kernel owns the ports the
    /// toolstack made for it). `EINVAL` for a free port, `EBUSY` if a handle owns it.
    pub fn attach(&self, port: EvtchnPort) -> Result<(), Errno> {
        let mut st = self.host.lock();
        let t = domain_ports(&mut st, self.dom)?;
        let p = t.get_mut(port).ok_or(Errno::EINVAL)?;
        if matches!(p.state, State::Free | State::Reserved) {
            return Err(Errno::EINVAL);
        }
        if p.owner.is_some() {
            return Err(Errno::EBUSY);
        }
        p.owner = Some(self.queue.clone());
        let d = deliver(p, port);
        drop(st);
        d.push();
        Ok(())
    }

    /// `IOCTL_EVTCHN_UNBIND`: closes a port this handle owns (`ENOTCONN` otherwise).
    pub fn unbind(&self, port: EvtchnPort) -> Result<(), Errno> {
        let mut st = self.host.lock();
        self.owned(&mut st, port)?;
        close(&mut st, self.dom, port)?;
        drop(st);
        // Drop already-queued deliveries of the closed port.
        let mut q = self.queue.inner.lock();
        q.ports.retain(|&p| p != port);
        self.queue.settle(&mut q);
        Ok(())
    }

    /// `IOCTL_EVTCHN_NOTIFY`: notifies the remote end of `port` (`ENOTCONN` if this handle
    /// does not own it; dropped silently if the port is unbound or a VIRQ, as the driver
    /// ignores the result of `EVTCHNOP_send`).
    pub fn notify(&self, port: EvtchnPort) -> Result<(), Errno> {
        let d = {
            let mut st = self.host.lock();
            self.owned(&mut st, port)?;
            // The driver ignores the hypercall's result (`notify_remote_via_evtchn` is void):
            // notifying an owned VIRQ port is a silent no-op, as on Linux.
            send_deferred(&mut st, self.dom, port).unwrap_or(Delivery(None))
        };
        d.push();
        Ok(())
    }

    /// Unmasks `port` (a `write` of the port to the device): a notification that arrived
    /// while it was masked is delivered now. Ports the handle does not own are ignored, as
    /// the driver ignores them.
    pub fn unmask(&self, port: EvtchnPort) -> Result<(), Errno> {
        let mut st = self.host.lock();
        if self.owned(&mut st, port).is_err() {
            return Ok(());
        }
        let t = domain_ports(&mut st, self.dom)?;
        let d = match t.get_mut(port) {
            Some(p) => {
                p.masked = false;
                deliver(p, port)
            }
            None => Delivery(None),
        };
        drop(st);
        d.push();
        Ok(())
    }

    /// Reads delivered ports into `buf` without blocking (a `read` of the device); returns how
    /// many were read, 0 if none is pending.
    pub fn read_pending(&self, buf: &mut [EvtchnPort]) -> usize {
        let mut q = self.queue.inner.lock();
        let n = buf.len().min(q.ports.len());
        for (slot, port) in buf.iter_mut().zip(q.ports.drain(..n)) {
            *slot = port;
        }
        // More than fits in `buf` keeps the descriptor readable.
        self.queue.settle(&mut q);
        n
    }

    /// Waits up to `timeout` (forever for `None`) for delivered ports and reads them into
    /// `buf`; returns how many, 0 on timeout (a blocking `read` of the device).
    pub fn wait(&self, buf: &mut [EvtchnPort], timeout: Option<Duration>) -> usize {
        if buf.is_empty() {
            return 0;
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut q = self.queue.inner.lock();
        loop {
            if !q.ports.is_empty() {
                let n = buf.len().min(q.ports.len());
                for (slot, port) in buf.iter_mut().zip(q.ports.drain(..n)) {
                    *slot = port;
                }
                self.queue.settle(&mut q);
                return n;
            }
            q.waiters += 1;
            let timed_out = match deadline {
                None => {
                    self.queue.cond.wait(&mut q);
                    false
                }
                Some(d) => self.queue.cond.wait_until(&mut q, d).timed_out(),
            };
            q.waiters -= 1;
            if timed_out && q.ports.is_empty() {
                return 0;
            }
        }
    }

    /// The eventfd that is readable when ports may be pending (for poll/epoll/`AsyncFd`).
    pub fn fd(&self) -> RawFd {
        self.queue.efd.as_raw_fd()
    }
}

impl AsFd for Handle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.queue.efd.as_fd()
    }
}

impl AsRawFd for Handle {
    fn as_raw_fd(&self) -> RawFd {
        self.queue.efd.as_raw_fd()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut st = self.host.lock();
        let owned: Vec<EvtchnPort> = match st.domains.get(&self.dom) {
            Some(d) => d
                .evtchn
                .ports
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    p.owner
                        .as_ref()
                        .is_some_and(|q| Arc::ptr_eq(q, &self.queue))
                })
                .map(|(i, _)| EvtchnPort(i as u32))
                .collect(),
            None => return,
        };
        for port in owned {
            let _ = close(&mut st, self.dom, port);
        }
    }
}
