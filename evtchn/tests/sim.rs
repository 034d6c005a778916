//! The `Evtchn` type over the simulated host: blocking waits, readiness of the descriptor,
//! cross-thread wake-ups, async serving of many channels, and error mapping.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use evtchn::{Error, EventChannel, Evtchn, SimEvtchn};
use xen_types::{DomId, Errno, EvtchnPort};

const LONG: Option<Duration> = Some(Duration::from_secs(10));

/// A loopback channel inside dom0 between two handles; the bind-time event is consumed.
fn pair(host: &xen_sim::Host) -> (Evtchn, EvtchnPort, Evtchn, EvtchnPort) {
    let a = Evtchn::open_sim(host, DomId::DOM0).unwrap();
    let b = Evtchn::open_sim(host, DomId::DOM0).unwrap();
    let pa = a.bind_unbound_port(DomId::DOM0).unwrap();
    let pb = b.bind_interdomain(DomId::DOM0, pa).unwrap();
    assert_eq!(b.pending().unwrap(), Some(pb));
    b.unmask(pb).unwrap();
    (a, pa, b, pb)
}

fn readable(e: &Evtchn) -> bool {
    let mut pfd = libc::pollfd {
        fd: e.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; zero timeout.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    assert!(r >= 0);
    pfd.revents & libc::POLLIN != 0
}

#[test]
fn wait_times_out_with_nothing_pending() {
    let host = xen_sim::Host::default();
    let (_a, _pa, b, _pb) = pair(&host);
    let mut buf = [EvtchnPort(0); 4];
    assert_eq!(
        b.wait(&mut buf, Some(Duration::from_millis(20))).unwrap(),
        0
    );
    assert_eq!(b.pending().unwrap(), None);
}

#[test]
fn the_descriptor_polls_readable_exactly_while_ports_are_pending() {
    let host = xen_sim::Host::default();
    let (a, pa, b, pb) = pair(&host);
    assert!(!readable(&b));
    a.notify(pa).unwrap();
    assert!(readable(&b));
    assert_eq!(b.pending().unwrap(), Some(pb));
    assert!(!readable(&b));
    // A batch larger than the read buffer keeps the descriptor readable.
    let mut extra = Vec::new();
    for _ in 0..3 {
        let p = a.bind_unbound_port(DomId::DOM0).unwrap();
        let q = b.bind_interdomain(DomId::DOM0, p).unwrap();
        extra.push(q);
    }
    let mut one = [EvtchnPort(0); 1];
    assert_eq!(b.read_pending(&mut one).unwrap(), 1);
    assert!(readable(&b));
}

#[test]
fn a_notification_from_another_thread_wakes_the_waiter() {
    let host = xen_sim::Host::default();
    let (a, pa, b, pb) = pair(&host);
    let a = Arc::new(a);
    for _ in 0..50 {
        let a2 = a.clone();
        let t = std::thread::spawn(move || a2.notify(pa).unwrap());
        let mut buf = [EvtchnPort(0); 4];
        let n = b.wait(&mut buf, LONG).unwrap();
        assert_eq!(&buf[..n], &[pb], "woken within the timeout");
        b.unmask(pb).unwrap();
        t.join().unwrap();
    }
}

#[test]
fn errors_keep_the_errno_and_the_operation() {
    let host = xen_sim::Host::default();
    let e = Evtchn::open_sim(&host, DomId::DOM0).unwrap();
    match e.bind_interdomain(DomId(321), EvtchnPort(1)) {
        Err(Error::Op { op, errno }) => {
            assert_eq!(op, "bind_interdomain");
            assert_eq!(errno, Errno::ESRCH);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        e.notify(EvtchnPort(3)).unwrap_err().errno(),
        Errno::ENOTCONN
    );
    assert_eq!(
        Evtchn::open_sim(&host, DomId(40)).unwrap_err().errno(),
        Errno::ESRCH
    );
}

#[cfg(feature = "tokio")]
#[test]
fn one_task_serves_many_channels() {
    use evtchn::AsyncEvtchn;
    let host = xen_sim::Host::default();
    let front = Evtchn::open_sim(&host, DomId::DOM0).unwrap();
    let back = Evtchn::open_sim(&host, DomId::DOM0).unwrap();
    let mut ports = Vec::new();
    for _ in 0..32 {
        let f = front.bind_unbound_port(DomId::DOM0).unwrap();
        let b = back.bind_interdomain(DomId::DOM0, f).unwrap();
        ports.push((f, b));
    }
    let mut buf = [EvtchnPort(0); 64];
    let n = back.read_pending(&mut buf).unwrap();
    assert_eq!(n, 32);
    for p in &buf[..n] {
        back.unmask(*p).unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let back = AsyncEvtchn::new(back).unwrap();
        let fronts: Vec<EvtchnPort> = ports.iter().map(|p| p.0).collect();
        let sender = std::thread::spawn(move || {
            for round in 0..3 {
                for f in &fronts {
                    if (f.get() + round) % 2 == 0 {
                        front.notify(*f).unwrap();
                    }
                }
            }
            front
        });
        let mut seen = std::collections::BTreeSet::new();
        let want: std::collections::BTreeSet<_> = ports.iter().map(|p| p.1).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while seen != want {
            let mut buf = [EvtchnPort(0); 8];
            let n = tokio::time::timeout_at(deadline, back.read_pending(&mut buf))
                .await
                .expect("all channels served before the deadline")
                .unwrap();
            for p in &buf[..n] {
                seen.insert(*p);
                back.get_ref().unmask(*p).unwrap();
            }
        }
        drop(sender.join().unwrap());
    });
}

#[test]
fn no_lost_wakeups_between_a_blocking_waiter_and_a_poller() {
    let host = xen_sim::Host::default();
    let (a, pa, b, pb) = pair(&host);
    const ROUNDS: usize = 2000;
    // `a` answers with blocking waits (the futex path); `b` polls its descriptor.
    let echo = std::thread::spawn(move || {
        let mut buf = [EvtchnPort(0); 4];
        for _ in 0..ROUNDS {
            let n = a.wait(&mut buf, LONG).unwrap();
            assert_eq!(&buf[..n], &[pa], "echo woken in time");
            a.unmask(pa).unwrap();
            a.notify(pa).unwrap();
        }
    });
    for _ in 0..ROUNDS {
        b.notify(pb).unwrap();
        let mut pfd = libc::pollfd {
            fd: b.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, 10_000) };
        assert_eq!(r, 1, "descriptor readable in time");
        assert_eq!(b.pending().unwrap(), Some(pb));
        b.unmask(pb).unwrap();
    }
    echo.join().unwrap();
}

#[test]
fn a_partial_read_by_a_waiter_leaves_the_descriptor_readable() {
    let host = xen_sim::Host::default();
    let front = Evtchn::open_sim(&host, DomId::DOM0).unwrap();
    let back = Evtchn::open_sim(&host, DomId::DOM0).unwrap();
    let f1 = front.bind_unbound_port(DomId::DOM0).unwrap();
    let f2 = front.bind_unbound_port(DomId::DOM0).unwrap();
    back.bind_interdomain(DomId::DOM0, f1).unwrap();
    back.bind_interdomain(DomId::DOM0, f2).unwrap();
    // Two bind-time events queued; a waiter takes one.
    let mut one = [EvtchnPort(0); 1];
    assert_eq!(back.wait(&mut one, LONG).unwrap(), 1);
    assert!(readable(&back));
    assert_eq!(back.read_pending(&mut one).unwrap(), 1);
    assert!(!readable(&back));
}

/// A backend's receive step written once over the trait: static dispatch on `SimEvtchn`,
/// dynamic through `Evtchn` and `Arc<SimEvtchn>`, the same behaviour.
fn echo_once<E: EventChannel>(back: &E, bp: EvtchnPort) -> usize {
    let mut buf = [EvtchnPort(0); 4];
    let n = back.wait(&mut buf, LONG).unwrap();
    assert_eq!(&buf[..n], &[bp]);
    back.unmask(bp).unwrap();
    back.notify(bp).unwrap();
    n
}

#[test]
fn code_over_the_trait_runs_on_every_handle_type() {
    let host = xen_sim::Host::default();
    let front = Evtchn::open_sim(&host, DomId::DOM0).unwrap();
    let sim = SimEvtchn::open(&host, DomId::DOM0).unwrap();
    assert_eq!(sim.domid(), DomId::DOM0);
    let fp = front.bind_unbound_port(DomId::DOM0).unwrap();
    let bp = sim.bind_interdomain(DomId::DOM0, fp).unwrap();
    assert_eq!(echo_once(&sim, bp), 1); // the bind-time event
    assert_eq!(front.wait(&mut [EvtchnPort(0); 1], LONG).unwrap(), 1);
    front.unmask(fp).unwrap();

    let shared = Arc::new(sim);
    front.notify(fp).unwrap();
    assert_eq!(echo_once(&shared, bp), 1);
    let back = Evtchn::new(shared);
    front.notify(fp).unwrap();
    assert_eq!(echo_once(&back, bp), 1);
    // The real-only and sim-only operations keep their errnos through the boxed handle.
    assert_eq!(back.attach(bp).unwrap_err().errno(), Errno::EBUSY);
}

/// A handle that keeps the trait's default `wait` and `wait_idle` (poll on the descriptor,
/// then read), as the real device does, over a simulated one.
#[derive(Debug)]
struct PollOnly(SimEvtchn);

impl std::os::fd::AsFd for PollOnly {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl EventChannel for PollOnly {
    fn restrict(&self, dom: DomId) -> evtchn::Result<()> {
        self.0.restrict(dom)
    }
    fn bind_unbound_port(&self, remote: DomId) -> evtchn::Result<EvtchnPort> {
        self.0.bind_unbound_port(remote)
    }
    fn bind_interdomain(&self, remote: DomId, port: EvtchnPort) -> evtchn::Result<EvtchnPort> {
        self.0.bind_interdomain(remote, port)
    }
    fn bind_virq(&self, virq: xen_types::Virq) -> evtchn::Result<EvtchnPort> {
        self.0.bind_virq(virq)
    }
    fn unbind(&self, port: EvtchnPort) -> evtchn::Result<()> {
        self.0.unbind(port)
    }
    fn notify(&self, port: EvtchnPort) -> evtchn::Result<()> {
        self.0.notify(port)
    }
    fn unmask(&self, port: EvtchnPort) -> evtchn::Result<()> {
        self.0.unmask(port)
    }
    fn read_pending(&self, buf: &mut [EvtchnPort]) -> evtchn::Result<usize> {
        self.0.read_pending(buf)
    }
}

#[test]
fn wait_idle_sleeps_first_and_still_sees_what_is_pending() {
    let host = xen_sim::Host::default();
    let front = SimEvtchn::open(&host, DomId::DOM0).unwrap();
    let back = PollOnly(SimEvtchn::open(&host, DomId::DOM0).unwrap());
    let fp = front.bind_unbound_port(DomId::DOM0).unwrap();
    let bp = back.bind_interdomain(DomId::DOM0, fp).unwrap();
    let mut buf = [EvtchnPort(0); 4];
    // The bind-time event is pending already: the poll returns at once and the read takes it.
    assert_eq!(back.wait_idle(&mut buf, LONG).unwrap(), 1);
    assert_eq!(buf[0], bp);
    back.unmask(bp).unwrap();
    // Nothing pending: a time-out, and a zero time-out still reads once.
    let short = Some(Duration::from_millis(20));
    assert_eq!(back.wait_idle(&mut buf, short).unwrap(), 0);
    front.notify(fp).unwrap();
    assert_eq!(back.wait_idle(&mut buf, Some(Duration::ZERO)).unwrap(), 1);
    back.unmask(bp).unwrap();
    // A notification from another thread wakes the sleeper.
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        front.notify(fp).unwrap();
        front
    });
    assert_eq!(back.wait_idle(&mut buf, LONG).unwrap(), 1);
    assert_eq!(buf[0], bp);
    let _front = t.join().unwrap();
    // The default `wait` behaves the same.
    back.unmask(bp).unwrap();
    assert_eq!(back.wait(&mut buf, short).unwrap(), 0);
}
