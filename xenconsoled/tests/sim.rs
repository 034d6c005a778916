//! The console daemon on the simulated host, against the project's xenstored in process:
//! guests built by xenctrl (console page seeded as grant `GNTTAB_RESERVED_CONSOLE`), their
//! console nodes written as libxl writes them, their hvc drivers played by
//! `xen_sim::console::GuestConsole`.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use evtchn::Evtchn;
use gnttab::Gnttab;
use xen_sim::console::GuestConsole;
use xen_sim::Host;
use xen_types::{DomId, GrantRef, Pfn};
use xenbus::testing::TestXenstore;
use xenbus::Store;
use xenconsoled::{Config, ConsoleStatus, Daemon, DaemonHandle, Hypervisor};
use xenctrl::{DomainConfig, GuestImage, ImageSource, Pages, Xen};

const WAIT: Duration = Duration::from_secs(10);

struct World {
    host: Host,
    xen: Xen,
    xs: TestXenstore,
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let host = Host::default();
        World {
            xen: Xen::sim(host.clone()),
            host,
            xs: TestXenstore::start().unwrap(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self) -> Config {
        Config {
            log_guest: true,
            log_dir: self.dir.path().to_path_buf(),
            ..Config::default()
        }
    }

    fn start(&self, config: Config) -> DaemonHandle {
        let h = self.host.clone();
        let hv = Hypervisor {
            xen: Xen::sim(self.host.clone()),
            gnttab: Some(Gnttab::open_sim(&self.host, DomId::DOM0).unwrap()),
            open_evtchn: Box::new(move || Evtchn::open_sim(&h, DomId::DOM0)),
        };
        let store: Arc<dyn Store> = self.xs.dom0().clone();
        Daemon::new(config, hv, store).unwrap().start().unwrap()
    }

    /// Creates and builds a PV guest (not yet made known to xenstore).
    fn build(&self) -> (DomId, xenctrl::BuiltGuest) {
        let dom = self.xen.create_domain(&DomainConfig::pv(1)).unwrap();
        self.xen.set_max_vcpus(dom, 1).unwrap();
        let kernel = xen_sim::domain::sample_kernel(1 << 20);
        let image = GuestImage::new(ImageSource::Bytes(kernel), Pages::from_mib(16));
        let built = self.xen.build(dom, &image).unwrap();
        (dom, built)
    }

    /// The console nodes libxl writes (`libxl__device_console_add`), then the domain's
    /// introduction (`@introduceDomain`).
    fn introduce(&self, dom: DomId, name: &str, console: &[(&str, String)]) {
        let home = format!("/local/domain/{}", dom.0);
        let mut nodes = vec![(format!("{home}/name"), name.to_string())];
        nodes.extend(
            console
                .iter()
                .map(|(k, v)| (format!("{home}/console/{k}"), v.clone())),
        );
        self.xs.dom0().write_all(&nodes).unwrap();
        self.xs
            .dom0()
            .client()
            .introduce(dom, Pfn(0), xen_types::EvtchnPort(1))
            .unwrap();
    }

    /// A guest as `xl create` makes it, with its hvc driver.
    fn guest(&self, name: &str) -> (DomId, GuestConsole) {
        let (dom, built) = self.build();
        self.introduce(dom, name, &libxl_nodes(&built));
        (dom, GuestConsole::attach(&self.host, dom).unwrap())
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("guest-{name}.log"))
    }

    fn destroy(&self, dom: DomId) {
        self.xen.destroy(dom).unwrap();
        self.xs.destroy_domain(dom).unwrap();
    }
}

fn libxl_nodes(b: &xenctrl::BuiltGuest) -> Vec<(&'static str, String)> {
    vec![
        ("ring-ref", b.console.mfn.0.to_string()),
        ("port", b.console.port.0.to_string()),
        ("limit", "1048576".into()),
        ("type", "xenconsoled".into()),
        ("output", "pty".into()),
        ("tty", String::new()),
    ]
}

/// Waits until `f` gives `Some`, or panics saying what was awaited.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_status(
    d: &DaemonHandle,
    dom: DomId,
    what: &str,
    f: impl Fn(&ConsoleStatus) -> bool,
) -> ConsoleStatus {
    wait_for(what, || d.console(dom).unwrap().filter(|c| f(c)))
}

fn file_contains(path: &Path, want: &[u8]) -> bool {
    std::fs::read(path).is_ok_and(|d| d.windows(want.len()).any(|w| w == want))
}

/// Opens a console's pty as `xl console` does.
fn open_tty(xs: &TestXenstore, dom: DomId) -> std::fs::File {
    let tty = wait_for("console/tty", || {
        xs.dom0()
            .read(&format!("/local/domain/{}/console/tty", dom.0))
            .unwrap()
            .filter(|t| !t.is_empty())
    });
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(&tty)
        .unwrap()
}

fn read_tty_until(tty: &mut std::fs::File, want: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    wait_for("bytes on the pty", || {
        loop {
            match tty.read(&mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        got.windows(want.len()).any(|w| w == want).then_some(())
    });
    got
}

#[test]
fn boot_lines_reach_the_log_and_the_pty() {
    let w = World::new();
    // Written before the daemon runs, as a guest boots before xenconsoled looks.
    let (dom, guest) = w.guest("web1");
    guest
        .write_all(b"Linux version 6.1.0 (Debian)\r\n", WAIT)
        .unwrap();
    let d = w.start(w.config());
    let s = wait_status(&d, dom, "console connected", |c| c.connected);
    guest
        .write_all(b"Run /init as init process\r\n", WAIT)
        .unwrap();
    wait_for("log lines", || {
        file_contains(&w.log("web1"), b"Run /init as init process\r\n").then_some(())
    });
    assert_eq!(
        std::fs::read(w.log("web1")).unwrap(),
        b"Linux version 6.1.0 (Debian)\r\nRun /init as init process\r\n",
        "the log holds the guest's bytes as written"
    );
    assert_eq!(s.log.as_deref(), Some(w.log("web1").as_path()));
    // `console/tty` names the pty; `xl console` reads the same bytes there.
    let mut tty = open_tty(&w.xs, dom);
    assert_eq!(
        Some(
            w.xs.dom0()
                .read(&format!("/local/domain/{}/console/tty", dom.0))
                .unwrap()
                .unwrap()
        ),
        s.tty
    );
    let got = read_tty_until(&mut tty, b"Run /init");
    assert!(got.starts_with(b"Linux version"), "{got:?}");
    assert_eq!(
        w.xs.dom0().watch_count(),
        3,
        "@introduceDomain, @releaseDomain, the guest"
    );
    d.stop().unwrap();
    assert_eq!(w.xs.dom0().watch_count(), 0, "every watch removed");
}

#[test]
fn time_stamps_mark_each_line_as_the_c_daemon() {
    let w = World::new();
    let d = w.start(Config {
        timestamp_guest: true,
        ..w.config()
    });
    let (dom, guest) = w.guest("stamped");
    wait_status(&d, dom, "console connected", |c| c.connected);
    guest.write_all(b"one\r\ntw", WAIT).unwrap();
    guest.write_all(b"o\r\n", WAIT).unwrap();
    wait_for("stamped log", || {
        file_contains(&w.log("stamped"), b"o\r\n").then_some(())
    });
    let log = String::from_utf8(std::fs::read(w.log("stamped")).unwrap()).unwrap();
    let lines: Vec<&str> = log.split_inclusive('\n').collect();
    assert_eq!(lines.len(), 3, "{log:?}");
    for (line, text) in lines.iter().zip(["Logfile Opened\n", "one\r\n", "two\r\n"]) {
        // "[2026-12-07 14:05:09] "
        let (stamp, rest) = line.split_at(22);
        assert_eq!(rest, text, "{log:?}");
        let b = stamp.as_bytes();
        assert!(
            b[0] == b'[' && b[5] == b'-' && b[11] == b' ' && b[14] == b':' && &b[20..] == b"] ",
            "{stamp:?}"
        );
    }
    d.stop().unwrap();
}

#[test]
fn what_is_typed_on_the_pty_reaches_the_guest() {
    let w = World::new();
    let d = w.start(w.config());
    let (dom, guest) = w.guest("typing");
    wait_status(&d, dom, "console connected", |c| c.connected);
    let mut tty = open_tty(&w.xs, dom);
    // More than one read of the pty (80 bytes) and than the input ring (1 KiB) holds.
    let typed: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut sent = 0;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    wait_for("typed bytes in the guest", || {
        if sent < typed.len() {
            if let Ok(n) = tty.write(&typed[sent..]) {
                sent += n;
            }
        }
        let n = guest.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
        (got.len() >= typed.len()).then_some(())
    });
    assert_eq!(got, typed);
    // And back: the guest echoes.
    guest.write_all(b"echo\n", WAIT).unwrap();
    read_tty_until(&mut tty, b"echo\n");
    d.stop().unwrap();
}

#[test]
fn a_flooding_guest_does_not_hold_up_a_quiet_one() {
    let w = World::new();
    let d = w.start(w.config());
    // The flooder's toolstack set a small limit; no one reads its pty.
    let (flood_dom, flood_built) = w.build();
    let mut nodes = libxl_nodes(&flood_built);
    nodes[2].1 = "4096".into();
    w.introduce(flood_dom, "flood", &nodes);
    let flooder = GuestConsole::attach(&w.host, flood_dom).unwrap();
    let (quiet_dom, quiet) = w.guest("quiet");
    wait_status(&d, flood_dom, "flooder connected", |c| c.connected);
    wait_status(&d, quiet_dom, "quiet guest connected", |c| c.connected);

    let latency = |tag: &str| {
        let line = format!("quiet line {tag}\n");
        let t0 = Instant::now();
        quiet.write_all(line.as_bytes(), WAIT).unwrap();
        let deadline = t0 + WAIT;
        while !file_contains(&w.log("quiet"), line.as_bytes()) {
            assert!(
                Instant::now() < deadline,
                "the quiet guest's line {tag} never came"
            );
            std::thread::sleep(Duration::from_micros(100));
        }
        t0.elapsed()
    };
    let flood_log = || std::fs::metadata(w.log("flood")).map_or(0, |m| m.len());

    // The flooder writes as fast as its ring takes output, while `flood` is set.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = Arc::new(AtomicBool::new(false));
    let flooding = {
        let (stop, flood) = (stop.clone(), flood.clone());
        std::thread::spawn(move || {
            let chunk = [b'#'; 1000];
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if flood.load(Ordering::Relaxed) {
                    flooder.write_all(&chunk, WAIT).unwrap();
                    sent += chunk.len() as u64;
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            sent
        })
    };
    // Interleaved rounds: the quiet guest alone, then beside the flood at its rate limit.
    let (mut alone, mut beside) = (Vec::new(), Vec::new());
    let mut max_buffered = 0;
    for round in 0..7 {
        flood.store(false, Ordering::Relaxed);
        // A rate-limit period for the daemon to drain and unmask the flooder.
        std::thread::sleep(xenconsoled::RATE_LIMIT_PERIOD + Duration::from_millis(20));
        alone.push(latency(&format!("alone {round}")));
        flood.store(true, Ordering::Relaxed);
        wait_status(&d, flood_dom, "the flooder rate limited", |c| {
            c.events_this_period >= xenconsoled::RATE_LIMIT_ALLOWANCE
        });
        let before = flood_log();
        beside.push(latency(&format!("flood {round}")));
        let s = d.console(flood_dom).unwrap().unwrap();
        max_buffered = max_buffered.max(s.buffered);
        assert!(
            flood_log() > before || s.events_this_period >= xenconsoled::RATE_LIMIT_ALLOWANCE,
            "the flood went on meanwhile"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let sent = flooding.join().unwrap();
    alone.sort();
    beside.sort();
    let (a, b) = (alone[alone.len() / 2], beside[beside.len() / 2]);
    println!(
        "quiet guest's line to its log, medians of 7 interleaved rounds: alone {a:?}, beside a \
         flooding guest {b:?} (ratio {:.2}); the flooder sent {sent} bytes",
        b.as_secs_f64() / a.as_secs_f64().max(1e-9)
    );
    // What waits for the flooder's (unread) pty stays bounded by its limit.
    assert!(max_buffered <= 4096 * 5 / 4 + 2048, "{max_buffered}");
    assert!(flood_log() > 4096, "the flood is logged in full");
    d.stop().unwrap();
}

fn fds_pointing_at(path: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t == path)
        .count()
}

#[test]
fn a_released_domain_loses_its_pty_and_log_and_its_memory_goes() {
    let w = World::new();
    let d = w.start(w.config());
    let (dom, guest) = w.guest("short");
    let s = wait_status(&d, dom, "console connected", |c| c.connected);
    guest.write_all(b"bye\n", WAIT).unwrap();
    wait_for("log line", || {
        file_contains(&w.log("short"), b"bye\n").then_some(())
    });
    let tty = open_tty(&w.xs, dom);
    assert_eq!(fds_pointing_at(&w.log("short")), 1, "the daemon's log");
    drop(guest);
    w.destroy(dom);
    wait_for("the console gone", || {
        d.console(dom).unwrap().is_none().then_some(())
    });
    // Its pty master is closed: the slave hangs up.
    let mut pfd = [nix::poll::PollFd::new(
        tty.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    nix::poll::poll(&mut pfd, 1000u16).unwrap();
    assert!(
        pfd[0]
            .revents()
            .unwrap()
            .contains(nix::poll::PollFlags::POLLHUP),
        "{:?} (pty {:?})",
        pfd[0].revents(),
        s.tty
    );
    assert_eq!(fds_pointing_at(&w.log("short")), 0, "log closed");
    // The daemon's mapping went: the domain is fully destroyed, its memory returned.
    wait_for("the domain reaped", || {
        w.host.domain_info(dom).is_err().then_some(())
    });
    d.stop().unwrap();
}

#[test]
fn malformed_nodes_are_reported_and_other_guests_still_served() {
    let w = World::new();
    let d = w.start(w.config());
    let (bad_ref, b1) = w.build();
    let mut nodes = libxl_nodes(&b1);
    nodes[0].1 = "garbage".into();
    w.introduce(bad_ref, "badref", &nodes);
    let (no_port, b2) = w.build();
    let mut nodes = libxl_nodes(&b2);
    nodes.remove(1);
    w.introduce(no_port, "noport", &nodes);
    // A domain xenstore knows but the hypervisor does not.
    w.introduce(DomId(77), "ghost", &libxl_nodes(&b2));
    let (good, guest) = w.guest("good");

    let s = wait_status(&d, bad_ref, "the bad ring-ref reported", |c| {
        c.error.is_some()
    });
    assert_eq!(
        s.error.as_deref(),
        Some(&*format!(
            "domain {bad_ref}: bad value \"garbage\" at /local/domain/{}/console/ring-ref",
            bad_ref.0
        ))
    );
    assert!(!s.connected && s.tty.is_none());
    let s = wait_status(&d, no_port, "the missing port reported", |c| {
        c.error.is_some()
    });
    assert_eq!(
        s.error.as_deref(),
        Some(&*format!(
            "domain {no_port}: /local/domain/{}/console/port is missing",
            no_port.0
        ))
    );
    wait_status(&d, good, "the good guest connected", |c| c.connected);
    guest.write_all(b"fine\n", WAIT).unwrap();
    wait_for("the good guest's log", || {
        file_contains(&w.log("good"), b"fine\n").then_some(())
    });
    assert!(
        d.console(DomId(77)).unwrap().is_none(),
        "no console for an unknown domain"
    );
    assert!(!w.log("ghost").exists());

    // Fixed by the toolstack: the watch on the console directory picks it up.
    w.xs.dom0()
        .write(
            &format!("/local/domain/{}/console/ring-ref", bad_ref.0),
            &b1.console.mfn.0.to_string(),
        )
        .unwrap();
    let s = wait_status(&d, bad_ref, "the fixed console connected", |c| c.connected);
    assert_eq!(s.error, None);
    d.stop().unwrap();
}

#[test]
fn a_console_of_another_type_is_left_alone() {
    let w = World::new();
    let d = w.start(w.config());
    let (dom, b) = w.build();
    let mut nodes = libxl_nodes(&b);
    nodes[3].1 = "ioemu".into();
    w.introduce(dom, "hvm", &nodes);
    let (good, _g) = w.guest("other");
    wait_status(&d, good, "the other guest connected", |c| c.connected);
    let s = d.console(dom).unwrap().unwrap();
    assert!(
        !s.connected && s.tty.is_none() && s.error.is_none(),
        "{s:?}"
    );
    d.stop().unwrap();
}

#[test]
fn without_the_grant_the_page_is_mapped_by_frame() {
    let w = World::new();
    let d = w.start(w.config());
    let (dom, b) = w.build();
    // The reserved grant withdrawn: only `ring-ref` (the machine frame) is left.
    w.host
        .end_access(dom, GrantRef(xen_sys::GNTTAB_RESERVED_CONSOLE))
        .unwrap();
    w.introduce(dom, "byframe", &libxl_nodes(&b));
    let guest = GuestConsole::attach(&w.host, dom).unwrap();
    wait_status(&d, dom, "console connected", |c| c.connected);
    guest.write_all(b"mapped by frame\n", WAIT).unwrap();
    wait_for("log", || {
        file_contains(&w.log("byframe"), b"mapped by frame\n").then_some(())
    });
    d.stop().unwrap();
}

#[test]
fn sighup_reopens_the_logs_for_rotation() {
    let w = World::new();
    let d = w.start(w.config());
    d.reopen_logs_on_sighup().unwrap();
    let (dom, guest) = w.guest("rotated");
    wait_status(&d, dom, "console connected", |c| c.connected);
    guest.write_all(b"before\n", WAIT).unwrap();
    wait_for("log", || {
        file_contains(&w.log("rotated"), b"before\n").then_some(())
    });
    let old = w.dir.path().join("guest-rotated.log.1");
    std::fs::rename(w.log("rotated"), &old).unwrap();
    nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for("the log reopened", || {
        w.log("rotated").exists().then_some(())
    });
    guest.write_all(b"after\n", WAIT).unwrap();
    wait_for("new log", || {
        file_contains(&w.log("rotated"), b"after\n").then_some(())
    });
    assert_eq!(std::fs::read(&old).unwrap(), b"before\n");
    assert_eq!(std::fs::read(w.log("rotated")).unwrap(), b"after\n");
    d.stop().unwrap();
}

#[test]
fn the_hypervisor_log_holds_the_boot_messages_and_what_follows() {
    let w = World::new();
    w.host.hypervisor_print(b"(XEN) Xen version 4.17.0-sim\n");
    let d = w.start(Config {
        log_hv: true,
        log_guest: false,
        ..w.config()
    });
    let log = w.dir.path().join("hypervisor.log");
    assert_eq!(
        std::fs::read(&log).unwrap(),
        b"(XEN) Xen version 4.17.0-sim\n"
    );
    w.host.hypervisor_print(b"(XEN) d1v0 crashed\n");
    wait_for("the new message", || {
        file_contains(&log, b"crashed").then_some(())
    });
    assert_eq!(
        std::fs::read(&log).unwrap(),
        b"(XEN) Xen version 4.17.0-sim\n(XEN) d1v0 crashed\n"
    );
    // Guest logging off: no guest log.
    let (dom, guest) = w.guest("nolog");
    wait_status(&d, dom, "console connected", |c| c.connected);
    guest.write_all(b"x\n", WAIT).unwrap();
    assert!(!w.log("nolog").exists());
    d.stop().unwrap();
}

#[test]
fn overflow_keep_makes_the_guest_wait_and_loses_nothing() {
    let w = World::new();
    let d = w.start(Config {
        discard_overflowed_data: false,
        ..w.config()
    });
    let (dom, b) = w.build();
    let mut nodes = libxl_nodes(&b);
    nodes[2].1 = "4096".into();
    w.introduce(dom, "keeper", &nodes);
    let guest = GuestConsole::attach(&w.host, dom).unwrap();
    wait_status(&d, dom, "console connected", |c| c.connected);
    // No one reads the pty: the guest writes until the daemon stops taking its output.
    let mut written: Vec<u8> = Vec::new();
    let mut idle_since = Instant::now();
    let mut i = 0u32;
    while idle_since.elapsed() < xenconsoled::RATE_LIMIT_PERIOD * 3 {
        let chunk = format!("line {i:06}\n");
        let n = guest.write(chunk.as_bytes()).unwrap();
        written.extend_from_slice(&chunk.as_bytes()[..n]);
        if n == 0 {
            std::thread::sleep(Duration::from_millis(2));
        } else {
            idle_since = Instant::now();
            i += u32::from(n == chunk.len());
        }
        assert!(
            written.len() < 64 << 20,
            "the daemon never stopped taking output"
        );
    }
    let s = d.console(dom).unwrap().unwrap();
    assert!(s.buffered >= 4096, "held, not discarded: {s:?}");
    // The log has everything the daemon took; the pty gets everything, in order.
    let mut tty = open_tty(&w.xs, dom);
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    wait_for("everything on the pty", || {
        while let Ok(n) = tty.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        (got.len() >= written.len()).then_some(())
    });
    assert_eq!(got, written, "keep loses nothing");
    wait_for("the log complete", || {
        (std::fs::read(w.log("keeper")).unwrap() == written).then_some(())
    });
    // Drained: the guest may write again.
    guest.write_all(b"more\n", WAIT).unwrap();
    read_tty_until(&mut tty, b"more\n");
    d.stop().unwrap();
}

#[test]
fn a_guest_that_breaks_its_ring_is_reported_and_harms_no_one() {
    use xen_types::mem::SharedMemoryExt;
    let w = World::new();
    let d = w.start(w.config());
    let (bad, b) = w.build();
    w.introduce(bad, "breaker", &libxl_nodes(&b));
    let breaker = GuestConsole::attach(&w.host, bad).unwrap();
    let (good, guest) = w.guest("bystander");
    wait_status(&d, bad, "console connected", |c| c.connected);
    // out_prod far past out_cons: more than the ring holds.
    let page = w.host.guest_pages(bad, &[b.console.pfn]).unwrap();
    let out_prod = std::mem::offset_of!(xen_sys::xencons_interface, out_prod);
    page.write_obj(out_prod, 1_000_000u32).unwrap();
    w.host.evtchn_send(bad, b.console.port).unwrap();
    assert!(breaker.write(b"x").is_err(), "the guest's own view: broken");
    let s = wait_status(&d, bad, "the broken ring reported", |c| c.error.is_some());
    assert!(
        s.error
            .as_deref()
            .unwrap()
            .contains("console out ring is broken"),
        "{s:?}"
    );
    guest.write_all(b"unharmed\n", WAIT).unwrap();
    wait_for("the bystander's log", || {
        file_contains(&w.log("bystander"), b"unharmed\n").then_some(())
    });
    assert!(d.console(good).unwrap().unwrap().error.is_none());
    d.stop().unwrap();
}
