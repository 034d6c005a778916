//! The simulated host's event channels under concurrency: notify and unmask run without the
//! host lock, so these tests race them against each other and against binding and closing,
//! and check Xen's rules still hold: no notification is lost, a masked port's events
//! coalesce into one, a port is queued at most once, and a notify racing a close gets the
//! errno it would get in either order. Every wait is bounded; a lost wake-up fails the test
//! by timing out, never by hanging.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use evtchn::{Evtchn, PortStatus};
use xen_types::{DomId, Errno, EvtchnPort};

const LONG: Option<Duration> = Some(Duration::from_secs(10));

fn guest(host: &xen_sim::Host, max_port: u32) -> DomId {
    let cfg = xen_sim::domain::small_pv_guest(max_port);
    host.create_domain(DomId::INVALID, &cfg).unwrap()
}

/// The domain at the other end of dom0's interdomain port `bp`.
fn remote_of(host: &xen_sim::Host, bp: EvtchnPort) -> DomId {
    match host.evtchn_status(DomId::DOM0, bp).unwrap() {
        PortStatus::Interdomain { remote, .. } => remote,
        s => panic!("unexpected {s:?}"),
    }
}

/// A guest frontend handle and a dom0 backend handle joined by one channel, with the
/// bind-time event consumed and the backend's port unmasked.
fn channel(host: &xen_sim::Host) -> (Evtchn, EvtchnPort, Evtchn, EvtchnPort) {
    let g = guest(host, 1023);
    let front = Evtchn::open_sim(host, g).unwrap();
    let back = Evtchn::open_sim(host, DomId::DOM0).unwrap();
    let fp = front.bind_unbound_port(DomId::DOM0).unwrap();
    let bp = back.bind_interdomain(g, fp).unwrap();
    assert_eq!(back.pending().unwrap(), Some(bp));
    back.unmask(bp).unwrap();
    (front, fp, back, bp)
}

/// Polls `fd` for input for up to `timeout_ms`: true if it is readable.
fn poll_in(fd: i32, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    assert!(r >= 0);
    pfd.revents & libc::POLLIN != 0
}

fn readable(fd: i32) -> bool {
    poll_in(fd, 0)
}

/// Runs `f` on a thread and fails the test if it does not finish within `secs` (a deadlock
/// or a lost wake-up).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let t = thread::spawn(move || {
        let _ = tx.send(f());
    });
    let r = rx
        .recv_timeout(Duration::from_secs(secs))
        .expect("finished in time (no deadlock, no lost wake-up)");
    t.join().unwrap();
    r
}

#[test]
fn a_long_ping_pong_loses_no_wakeup() {
    let host = xen_sim::Host::default();
    let (front, fp, back, bp) = channel(&host);
    const ROUNDS: u32 = 20_000;
    within(60, move || {
        let echo = thread::spawn(move || {
            let mut buf = [EvtchnPort(0); 4];
            for _ in 0..ROUNDS {
                let n = back.wait(&mut buf, LONG).unwrap();
                assert_eq!(&buf[..n], &[bp], "the backend is woken by its port once");
                back.unmask(bp).unwrap();
                back.notify(bp).unwrap();
            }
        });
        let mut buf = [EvtchnPort(0); 4];
        for _ in 0..ROUNDS {
            front.notify(fp).unwrap();
            let n = front.wait(&mut buf, LONG).unwrap();
            assert_eq!(&buf[..n], &[fp], "the frontend is woken by its port once");
            front.unmask(fp).unwrap();
        }
        echo.join().unwrap();
    });
}

/// Producers publish work (a counter, standing in for ring entries) and notify; the consumer
/// catches up only when woken. If one notification were lost after the last publish, the
/// consumer would never see the final count.
#[test]
fn a_notify_storm_coalesces_but_never_loses_the_last_event() {
    let host = xen_sim::Host::default();
    let (front, fp, back, bp) = channel(&host);
    let front = Arc::new(front);
    let produced = Arc::new(AtomicU64::new(0));
    const PER_THREAD: u64 = 5_000;
    const THREADS: u64 = 3;
    let (deliveries, consumed) = within(60, {
        let produced = produced.clone();
        move || {
            let done = Arc::new(AtomicBool::new(false));
            let consumer = {
                let (produced, done) = (produced.clone(), done.clone());
                thread::spawn(move || {
                    let mut buf = [EvtchnPort(0); 4];
                    let (mut deliveries, mut consumed) = (0u64, 0u64);
                    loop {
                        let n = back
                            .wait(&mut buf, Some(Duration::from_millis(50)))
                            .unwrap();
                        if n > 0 {
                            assert_eq!(&buf[..n], &[bp], "a port is queued at most once");
                            deliveries += 1;
                            // Unmask, then look at the ring: the protocol every backend uses.
                            back.unmask(bp).unwrap();
                            consumed = produced.load(Ordering::SeqCst);
                        }
                        if done.load(Ordering::SeqCst) && consumed == THREADS * PER_THREAD {
                            return (deliveries, consumed);
                        }
                    }
                })
            };
            let producers: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (front, produced) = (front.clone(), produced.clone());
                    thread::spawn(move || {
                        for _ in 0..PER_THREAD {
                            produced.fetch_add(1, Ordering::SeqCst);
                            front.notify(fp).unwrap();
                        }
                    })
                })
                .collect();
            for p in producers {
                p.join().unwrap();
            }
            done.store(true, Ordering::SeqCst);
            consumer.join().unwrap()
        }
    });
    assert_eq!(consumed, THREADS * PER_THREAD);
    assert!(deliveries >= 1);
    assert!(
        deliveries <= THREADS * PER_THREAD,
        "never more deliveries ({deliveries}) than notifications"
    );
}

/// dom0 closes and re-binds its end while the guest notifies: the guest's notify succeeds
/// whichever state it meets (delivered when connected, dropped when unbound), as on Xen.
#[test]
fn closing_while_the_peer_notifies_keeps_xens_errnos() {
    let host = xen_sim::Host::default();
    let (front, fp, back, bp) = channel(&host);
    let guest_dom = remote_of(&host, bp);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let notifier = {
        let (stop, started) = (stop.clone(), started.clone());
        thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(Ordering::SeqCst) {
                assert_eq!(front.notify(fp).map_err(|e| e.errno()), Ok(()));
                sent += 1;
                started.store(true, Ordering::SeqCst);
            }
            (front, sent)
        })
    };
    let back = within(60, move || {
        // Race the notifier for real: start closing only once it is notifying.
        while !started.load(Ordering::SeqCst) {
            thread::yield_now();
        }
        let mut bp = bp;
        for _ in 0..500 {
            back.unbind(bp).unwrap();
            bp = back.bind_interdomain(guest_dom, fp).unwrap();
            // The bind-time event, perhaps with the guest's: one delivery at most.
            let mut buf = [EvtchnPort(0); 4];
            let n = back.read_pending(&mut buf).unwrap();
            assert!(
                n <= 1 && buf[..n].iter().all(|&p| p == bp),
                "{:?}",
                &buf[..n]
            );
            back.unmask(bp).unwrap();
        }
        (back, bp)
    });
    stop.store(true, Ordering::SeqCst);
    let (front, sent) = notifier.join().unwrap();
    assert!(sent > 0);
    let (back, bp) = back;
    assert_eq!(
        host.evtchn_status(guest_dom, fp),
        Ok(PortStatus::Interdomain {
            remote: DomId::DOM0,
            remote_port: bp
        })
    );
    // Still connected and working both ways after the storm.
    while back.pending().unwrap().is_some() {}
    back.unmask(bp).unwrap();
    front.notify(fp).unwrap();
    let mut buf = [EvtchnPort(0); 4];
    assert_eq!(back.wait(&mut buf, LONG).unwrap(), 1);
    assert_eq!(buf[0], bp);
}

/// One thread unbinds a port of a handle while another notifies on it through the same
/// handle: the notify either happened first (`Ok`) or finds the port gone (`ENOTCONN`).
#[test]
fn unbinding_while_the_same_handle_notifies_gives_ok_or_enotconn() {
    let host = xen_sim::Host::default();
    let g = guest(&host, 1023);
    let front = Arc::new(Evtchn::open_sim(&host, g).unwrap());
    let back = Evtchn::open_sim(&host, DomId::DOM0).unwrap();
    within(60, move || {
        for _ in 0..300 {
            let fp = front.bind_unbound_port(DomId::DOM0).unwrap();
            let bp = back.bind_interdomain(g, fp).unwrap();
            let f2 = front.clone();
            let t = thread::spawn(move || {
                let mut seen_gone = false;
                for _ in 0..200 {
                    match f2.notify(fp).map_err(|e| e.errno()) {
                        Ok(()) => assert!(!seen_gone, "a closed port does not come back"),
                        Err(e) => {
                            assert_eq!(e, Errno::ENOTCONN);
                            seen_gone = true;
                        }
                    }
                }
            });
            front.unbind(fp).unwrap();
            t.join().unwrap();
            assert_eq!(front.notify(fp).unwrap_err().errno(), Errno::ENOTCONN);
            back.unbind(bp).unwrap();
            while back.pending().unwrap().is_some() {}
        }
    });
}

/// Two threads block in `wait` on one handle with one-port buffers; two ports delivered at
/// once wake both (the first passes the wake-up on), each port read exactly once.
#[test]
fn two_waiters_on_one_handle_each_get_a_port() {
    let host = xen_sim::Host::default();
    let g = guest(&host, 1023);
    let front = Evtchn::open_sim(&host, g).unwrap();
    let back = Arc::new(Evtchn::open_sim(&host, DomId::DOM0).unwrap());
    let mut pairs = Vec::new();
    for _ in 0..2 {
        let fp = front.bind_unbound_port(DomId::DOM0).unwrap();
        let bp = back.bind_interdomain(g, fp).unwrap();
        pairs.push((fp, bp));
    }
    while back.pending().unwrap().is_some() {}
    for &(_, bp) in &pairs {
        back.unmask(bp).unwrap();
    }
    for round in 0..200 {
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let back = back.clone();
                thread::spawn(move || {
                    let mut one = [EvtchnPort(0); 1];
                    assert_eq!(back.wait(&mut one, LONG).unwrap(), 1, "woken");
                    one[0]
                })
            })
            .collect();
        for &(fp, _) in &pairs {
            front.notify(fp).unwrap();
        }
        let mut got: Vec<_> = waiters.into_iter().map(|t| t.join().unwrap()).collect();
        got.sort();
        let want: Vec<_> = pairs.iter().map(|&(_, bp)| bp).collect();
        assert_eq!(got, want, "round {round}");
        for &(_, bp) in &pairs {
            back.unmask(bp).unwrap();
        }
    }
}

/// Handles used only through `wait` keep the eventfd quiet; the first time the descriptor is
/// asked for, it becomes readable if ports are already pending.
#[test]
fn the_descriptor_is_readable_at_once_when_asked_for_after_deliveries() {
    let host = xen_sim::Host::default();
    let (front, fp, back, bp) = channel(&host);
    front.notify(fp).unwrap();
    assert!(
        readable(back.as_raw_fd()),
        "pending before the fd was asked for"
    );
    assert_eq!(back.pending().unwrap(), Some(bp));
    assert!(!readable(back.as_raw_fd()));
    back.unmask(bp).unwrap();
    front.notify(fp).unwrap();
    assert!(readable(back.as_raw_fd()));
}

/// Ports in different words and selector words of the queue's bitmap (a guest with 8192
/// ports) are all delivered, lowest first, and batches split across reads lose none.
#[test]
fn ports_across_the_queue_bitmap_are_read_lowest_first() {
    let host = xen_sim::Host::default();
    let g = guest(&host, 8191);
    let a = Evtchn::open_sim(&host, g).unwrap();
    let b = Evtchn::open_sim(&host, g).unwrap();
    let mut pairs = Vec::new();
    for _ in 0..4095 {
        let pa = a.bind_unbound_port(DomId::SELF).unwrap();
        let pb = b.bind_interdomain(DomId::SELF, pa).unwrap();
        pairs.push((pa, pb));
    }
    assert_eq!(a.bind_unbound_port(DomId::SELF).unwrap(), EvtchnPort(8191));
    assert_eq!(
        a.bind_unbound_port(DomId::SELF).unwrap_err().errno(),
        Errno::ENOSPC,
        "ports 1..=8191 in use"
    );
    let mut buf = vec![EvtchnPort(0); 5000];
    let n = b.read_pending(&mut buf).unwrap();
    assert_eq!(n, 4095, "every bind-time event");
    assert!(buf[..n].windows(2).all(|w| w[0] < w[1]), "lowest first");
    for &(_, pb) in &pairs {
        b.unmask(pb).unwrap();
    }
    // Notify a spread of ports, in descending order, across both selector words.
    let picks: Vec<_> = [4094usize, 4000, 2100, 2047, 2046, 64, 63, 0]
        .iter()
        .map(|&i| pairs[i])
        .collect();
    for &(pa, _) in &picks {
        a.notify(pa).unwrap();
    }
    let mut got = Vec::new();
    let mut three = [EvtchnPort(0); 3];
    loop {
        let n = b.read_pending(&mut three).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&three[..n]);
    }
    let mut want: Vec<_> = picks.iter().map(|&(_, pb)| pb).collect();
    want.sort();
    assert_eq!(got, want);
    assert!(
        want.last().unwrap().get() >= 4096,
        "the second selector word is used"
    );
}

/// Random binds, closes, notifies and unmasks from several threads at once, then every
/// interdomain port's peer points back at it and no operation failed outside Xen's errnos.
#[test]
fn concurrent_random_operations_keep_channels_consistent() {
    let host = xen_sim::Host::default();
    let doms = [DomId::DOM0, guest(&host, 63), guest(&host, 63)];
    let handles: Vec<Arc<Evtchn>> = doms
        .iter()
        .flat_map(|&d| {
            [
                Arc::new(Evtchn::open_sim(&host, d).unwrap()),
                Arc::new(Evtchn::open_sim(&host, d).unwrap()),
            ]
        })
        .collect();
    let handles = Arc::new(handles);
    within(120, {
        let handles = handles.clone();
        move || {
            let workers: Vec<_> = (0..4u64)
                .map(|t| {
                    let handles = handles.clone();
                    thread::spawn(move || {
                        let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ ((t + 1) * 0x1234_5678);
                        let mut rnd = |n: u64| {
                            seed ^= seed << 13;
                            seed ^= seed >> 7;
                            seed ^= seed << 17;
                            seed % n
                        };
                        let allowed = [
                            Errno::EINVAL,
                            Errno::ENOSPC,
                            Errno::ENOTCONN,
                            Errno::EEXIST,
                            Errno::ESRCH,
                        ];
                        let mut buf = [EvtchnPort(0); 8];
                        for _ in 0..4000 {
                            let hd = &handles[rnd(handles.len() as u64) as usize];
                            let other = doms[rnd(3) as usize];
                            let port = EvtchnPort(rnd(70) as u32);
                            let r = match rnd(6) {
                                0 => hd.bind_unbound_port(other).map(drop),
                                1 => hd.bind_interdomain(other, port).map(drop),
                                2 => hd.unbind(port),
                                3 => hd.notify(port),
                                4 => hd.unmask(port),
                                _ => hd.read_pending(&mut buf).map(drop),
                            };
                            if let Err(e) = r {
                                assert!(allowed.contains(&e.errno()), "unexpected {e:?}");
                            }
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().unwrap();
            }
        }
    });
    for &d in &doms {
        for p in 0..70 {
            if let Ok(PortStatus::Interdomain {
                remote,
                remote_port,
            }) = host.evtchn_status(d, EvtchnPort(p))
            {
                assert_eq!(
                    host.evtchn_status(remote, remote_port),
                    Ok(PortStatus::Interdomain {
                        remote: d,
                        remote_port: EvtchnPort(p)
                    }),
                    "peer of {d}:{p}"
                );
            }
        }
    }
    // Dropping every handle closes every port.
    drop(handles);
    for &d in &doms {
        for p in 1..70 {
            assert!(matches!(
                host.evtchn_status(d, EvtchnPort(p)),
                Ok(PortStatus::Closed) | Err(Errno::EINVAL)
            ));
        }
    }
}

/// Timed waits on several handles, the shorter ones started after the longer ones (so a new
/// waiter's deadline is earlier than the one the timer sleeps until): each returns 0, and
/// none before its own timeout.
#[test]
fn timed_waits_expire_each_at_its_own_deadline() {
    let host = xen_sim::Host::default();
    let waiters: Vec<_> = [300u64, 120, 40, 200, 10]
        .into_iter()
        .map(|ms| {
            let (front, _fp, back, _bp) = channel(&host);
            let t = thread::spawn(move || {
                let _front = front;
                let mut buf = [EvtchnPort(0); 4];
                let start = std::time::Instant::now();
                let n = back
                    .wait(&mut buf, Some(Duration::from_millis(ms)))
                    .unwrap();
                (n, start.elapsed(), Duration::from_millis(ms))
            });
            thread::sleep(Duration::from_millis(5));
            t
        })
        .collect();
    within(30, move || {
        for w in waiters {
            let (n, took, timeout) = w.join().unwrap();
            assert_eq!(n, 0, "nothing was sent");
            assert!(
                took >= timeout,
                "returned after {took:?}, before {timeout:?}"
            );
        }
    });
}

/// Two waiters on one handle: the one with a short timeout leaves, which wakes the other
/// early (their queue shares one deadline); it goes back to sleep and still gets the port
/// notified afterwards.
#[test]
fn a_short_timed_waiter_leaving_does_not_lose_a_long_waiters_event() {
    let host = xen_sim::Host::default();
    let (front, fp, back, bp) = channel(&host);
    let back = Arc::new(back);
    let long = {
        let back = back.clone();
        thread::spawn(move || {
            let mut buf = [EvtchnPort(0); 4];
            let n = back.wait(&mut buf, LONG).unwrap();
            buf[..n].to_vec()
        })
    };
    let mut buf = [EvtchnPort(0); 4];
    assert_eq!(
        back.wait(&mut buf, Some(Duration::from_millis(30)))
            .unwrap(),
        0
    );
    thread::sleep(Duration::from_millis(30));
    front.notify(fp).unwrap();
    let got = within(30, move || long.join().unwrap());
    assert_eq!(got, vec![bp]);
}

/// A zero timeout polls: it returns what is queued, or 0 at once.
#[test]
fn a_zero_timeout_wait_does_not_sleep() {
    let host = xen_sim::Host::default();
    let (front, fp, back, bp) = channel(&host);
    within(30, move || {
        let mut buf = [EvtchnPort(0); 4];
        assert_eq!(back.wait(&mut buf, Some(Duration::ZERO)).unwrap(), 0);
        front.notify(fp).unwrap();
        assert_eq!(back.wait(&mut buf, Some(Duration::ZERO)).unwrap(), 1);
        assert_eq!(buf[0], bp);
    });
}

/// Polls the handle's descriptor (bounded) until a port can be read, as epoll/async users do.
fn recv_polled(e: &Evtchn) -> Vec<EvtchnPort> {
    let mut buf = [EvtchnPort(0); 4];
    loop {
        let n = e.read_pending(&mut buf).unwrap();
        if n > 0 {
            return buf[..n].to_vec();
        }
        assert!(
            poll_in(e.as_raw_fd(), 10_000),
            "the descriptor became readable in time"
        );
    }
}

/// The same long ping-pong with both sides waiting on their descriptors: the eventfd is set
/// and reset from both threads, and a lost signal would leave a side polling forever.
#[test]
fn a_long_polled_ping_pong_loses_no_readiness() {
    let host = xen_sim::Host::default();
    let (front, fp, back, bp) = channel(&host);
    const ROUNDS: u32 = 10_000;
    within(60, move || {
        let echo = thread::spawn(move || {
            for _ in 0..ROUNDS {
                assert_eq!(recv_polled(&back), vec![bp]);
                back.unmask(bp).unwrap();
                back.notify(bp).unwrap();
            }
        });
        for _ in 0..ROUNDS {
            front.notify(fp).unwrap();
            assert_eq!(recv_polled(&front), vec![fp]);
            front.unmask(fp).unwrap();
        }
        echo.join().unwrap();
    });
}

/// Two producers drive two ports of one polled handle, each waiting for its event to be
/// handled before sending the next, so deliveries of one port keep racing the reset of the
/// descriptor after a read of the other. A lost readiness leaves the consumer polling while
/// a port is queued, and fails the poll's bound.
#[test]
fn a_polled_handle_serving_two_busy_ports_keeps_its_readiness() {
    let host = xen_sim::Host::default();
    let g = guest(&host, 1023);
    let back = Evtchn::open_sim(&host, DomId::DOM0).unwrap();
    let fronts: Vec<_> = (0..2)
        .map(|_| {
            let f = Evtchn::open_sim(&host, g).unwrap();
            let fp = f.bind_unbound_port(DomId::DOM0).unwrap();
            let bp = back.bind_interdomain(g, fp).unwrap();
            (f, fp, bp)
        })
        .collect();
    while back.pending().unwrap().is_some() {}
    let bps: Vec<_> = fronts.iter().map(|&(_, _, bp)| bp).collect();
    for &bp in &bps {
        back.unmask(bp).unwrap();
    }
    const ROUNDS: u64 = 5_000;
    let handled: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    within(120, move || {
        let producers: Vec<_> = fronts
            .into_iter()
            .enumerate()
            .map(|(i, (f, fp, _))| {
                let handled = handled.clone();
                thread::spawn(move || {
                    for round in 1..=ROUNDS {
                        f.notify(fp).unwrap();
                        while handled[i].load(Ordering::SeqCst) < round {
                            thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        // An event loop: wait for readiness first, then read until nothing is left.
        let mut done = [false; 2];
        let mut buf = [EvtchnPort(0); 4];
        while done != [true, true] {
            assert!(
                poll_in(back.as_raw_fd(), 10_000),
                "readable while a port is queued"
            );
            loop {
                let n = back.read_pending(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                for &p in &buf[..n] {
                    let i = bps.iter().position(|&bp| bp == p).expect("one of ours");
                    back.unmask(p).unwrap();
                    let n = handled[i].fetch_add(1, Ordering::SeqCst) + 1;
                    done[i] = n >= ROUNDS;
                }
            }
        }
        for p in producers {
            p.join().unwrap();
        }
    });
}

/// The guest is destroyed while both ends notify: dom0's notify always succeeds (delivered,
/// then dropped on the now unbound port), the guest's fails from some point on with
/// `ESRCH` (domain gone) or `ENOTCONN` (port closed), never intermittently.
#[test]
fn destroying_the_guest_while_both_ends_notify() {
    let host = xen_sim::Host::default();
    let (front, fp, back, bp) = channel(&host);
    let g = remote_of(&host, bp);
    let stop = Arc::new(AtomicBool::new(false));
    // Notifies until the first failure, then checks that it keeps failing.
    let guest_side = thread::spawn(move || {
        let e = loop {
            if let Err(e) = front.notify(fp) {
                break e.errno();
            }
        };
        assert!(e == Errno::ESRCH || e == Errno::ENOTCONN, "{e:?}");
        for _ in 0..100 {
            let again = front.notify(fp).map_err(|e| e.errno());
            assert!(
                matches!(again, Err(Errno::ESRCH | Errno::ENOTCONN)),
                "{again:?}"
            );
        }
    });
    let dom0_side = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut buf = [EvtchnPort(0); 4];
            while !stop.load(Ordering::SeqCst) {
                back.notify(bp).unwrap();
                if back.read_pending(&mut buf).unwrap() > 0 {
                    back.unmask(bp).unwrap();
                }
            }
            back
        })
    };
    // Let both sides get going (the outcome does not depend on it).
    thread::sleep(Duration::from_millis(20));
    host.destroy(g).unwrap();
    within(30, move || guest_side.join().unwrap());
    stop.store(true, Ordering::SeqCst);
    let back = within(30, move || dom0_side.join().unwrap());
    assert_eq!(
        host.evtchn_status(DomId::DOM0, bp),
        Ok(PortStatus::Unbound { remote: g })
    );
    assert_eq!(back.notify(bp).map_err(|e| e.errno()), Ok(()));
}
