//! Event-channel notify-and-wake round trip between two threads, against a raw eventfd
//! ping-pong between two threads, in the same run.
//!
//! - `evtchn/eventfd_pingpong`: thread A writes eventfd 1 and blocks reading eventfd 2;
//!   thread B blocks reading eventfd 1 and writes eventfd 2 (the floor: two wake-ups).
//! - `evtchn/sim_pingpong`: the same over a simulated interdomain channel (a guest frontend
//!   handle and a dom0 backend handle): notify, wait, read pending, unmask, notify back.
//!
//! - `evtchn/sim_pingpong_poll`: the same, each side waiting the way poll/epoll/async users
//!   do (poll the handle's eventfd, then read pending), so the eventfd is kept in step.
//!
//! The ratio of `sim_pingpong` to `eventfd_pingpong` is the overhead of the event-channel
//! layer (target <= 1.2x). Before the criterion runs, `evtchn/interleaved` prints the same
//! ratio measured over alternating blocks of the two, which holds up better on a busy host.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use evtchn::Evtchn;
use xen_types::{DomId, EvtchnPort};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));

fn eventfd() -> OwnedFd {
    // SAFETY: plain syscall (blocking, close-on-exec eventfd).
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "eventfd");
    // SAFETY: a fresh descriptor we own.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn ring(fd: &OwnedFd) {
    let one = 1u64;
    // SAFETY: writes a live u64 to an eventfd.
    let r = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    assert_eq!(r, 8);
}

fn wait(fd: &OwnedFd) -> u64 {
    let mut v = 0u64;
    // SAFETY: reads into a live u64 from a blocking eventfd.
    let r = unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    assert_eq!(r, 8);
    v
}

fn eventfd_pingpong(iters: u64) -> Duration {
    let ping = Arc::new(eventfd());
    let pong = Arc::new(eventfd());
    let (p2, q2) = (ping.clone(), pong.clone());
    let echo = std::thread::spawn(move || {
        for _ in 0..iters {
            wait(&p2);
            ring(&q2);
        }
    });
    let start = Instant::now();
    for _ in 0..iters {
        ring(&ping);
        wait(&pong);
    }
    let t = start.elapsed();
    echo.join().expect("echo");
    t
}

fn recv(e: &Evtchn, want: EvtchnPort) {
    let mut buf = [EvtchnPort(0); 4];
    let n = e.wait(&mut buf, TIMEOUT).expect("wait");
    assert!(n == 1 && buf[0] == want, "woken by {:?}", &buf[..n]);
    e.unmask(want).expect("unmask");
}

/// Round trips over a fresh guest-dom0 channel, each side receiving with `recv`.
fn pingpong<R>(host: &xen_sim::Host, guest: DomId, iters: u64, recv: R) -> Duration
where
    R: Fn(&Evtchn, EvtchnPort) + Copy + Send + 'static,
{
    let front = Evtchn::open_sim(host, guest).expect("front");
    let back = Evtchn::open_sim(host, DomId::DOM0).expect("back");
    let fp = front.bind_unbound_port(DomId::DOM0).expect("alloc");
    let bp = back.bind_interdomain(guest, fp).expect("bind");
    recv(&back, bp); // the bind-time event
    let echo = std::thread::spawn(move || {
        for _ in 0..iters {
            recv(&back, bp);
            back.notify(bp).expect("notify");
        }
    });
    let start = Instant::now();
    for _ in 0..iters {
        front.notify(fp).expect("notify");
        recv(&front, fp);
    }
    let t = start.elapsed();
    echo.join().expect("echo");
    t
}

/// Waits the way poll/epoll/async users do: poll the handle's descriptor, then read.
fn recv_polled(e: &Evtchn, want: EvtchnPort) {
    let mut buf = [EvtchnPort(0); 4];
    loop {
        let n = e.read_pending(&mut buf).expect("read_pending");
        if n > 0 {
            assert!(n == 1 && buf[0] == want, "woken by {:?}", &buf[..n]);
            break;
        }
        let mut pfd = libc::pollfd {
            fd: e.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, 30_000) };
        assert!(r > 0, "poll timed out or failed");
    }
    e.unmask(want).expect("unmask");
}

/// Alternates blocks of the two ping-pongs and prints the ratio per pair of neighbouring
/// blocks (median) and of the fastest blocks: on a shared, noisy machine, load that comes
/// and goes hits both sides of a pair alike, where criterion measures one after the other.
fn interleaved_ratio(host: &xen_sim::Host, guest: DomId) {
    const BLOCKS: usize = 21;
    const ITERS: u64 = 2000;
    let per = |d: Duration| d.as_secs_f64() * 1e9 / ITERS as f64;
    let (mut raw, mut sim, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..BLOCKS {
        let r = per(eventfd_pingpong(ITERS));
        let s = per(pingpong(host, guest, ITERS, recv));
        raw.push(r);
        sim.push(s);
        ratio.push(s / r);
    }
    for v in [&mut raw, &mut sim, &mut ratio] {
        v.sort_by(f64::total_cmp);
    }
    let m = BLOCKS / 2;
    println!(
        "evtchn/interleaved ({BLOCKS} x {ITERS} round trips): eventfd median {:.0} ns, best {:.0} ns; \
         sim median {:.0} ns, best {:.0} ns; ratio median of pairs {:.3}x, best/best {:.3}x",
        raw[m],
        raw[0],
        sim[m],
        sim[0],
        ratio[m],
        sim[0] / raw[0]
    );
}

fn bench(c: &mut Criterion) {
    let host = xen_sim::Host::default();
    let cfg = xen_sim::domain::small_pv_guest(1023);
    let guest = host.create_domain(DomId::INVALID, &cfg).expect("guest");
    interleaved_ratio(&host, guest);
    let mut g = c.benchmark_group("evtchn");
    g.bench_function("eventfd_pingpong", |b| b.iter_custom(eventfd_pingpong));
    g.bench_function("sim_pingpong", |b| {
        b.iter_custom(|n| pingpong(&host, guest, n, recv))
    });
    g.bench_function("sim_pingpong_poll", |b| {
        b.iter_custom(|n| pingpong(&host, guest, n, recv_polled))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // Defaults for a quick run; `--warm-up-time`, `--measurement-time` and `--sample-size`
    // on the command line override them.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
