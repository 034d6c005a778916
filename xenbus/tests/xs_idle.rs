//! [`XsStore`]'s watch dispatcher thread sleeps without a timer while idle, and dropping the
//! store ends it. Its own test binary (one process), so that the only dispatcher threads
//! are this test's.

use std::time::Duration;

use crossbeam_channel::unbounded;
use xen_types::DomId;
use xenbus::testing::TestXenstore;
use xenbus::Store;

/// The thread name as the kernel keeps it (15 bytes).
const COMM: &str = "xenbus-xs-event";

/// This process's dispatcher threads: (tid, context switches so far).
fn dispatchers() -> Vec<(String, u64)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = e.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if comm.trim_end() != COMM {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            continue;
        };
        let switches: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        let tid = dir.file_name().unwrap().to_string_lossy().into_owned();
        v.push((tid, switches));
    }
    v.sort();
    v
}

/// One test (tests of a binary run in parallel and would see each other's threads).
#[test]
fn idle_dispatcher_does_not_wake_and_drop_ends_it() {
    let xs = TestXenstore::start().unwrap();
    // A watch (its first event delivered), then silence.
    let (tx, rx) = unbounded();
    xs.dom0().watch("/idle", "t", tx).unwrap();
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let guest = xs.guest(DomId(3)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let before = dispatchers();
    assert_eq!(before.len(), 2, "dom0's and the guest's: {before:?}");
    std::thread::sleep(Duration::from_millis(1000));
    let after = dispatchers();
    // A 100 ms poll would have switched at least 10 times in that second.
    assert_eq!(before, after, "an idle dispatcher woke");

    // Still delivers.
    xs.dom0().write("/idle", "1").unwrap();
    let ev = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(ev.path, "/idle");

    // Dropping a store wakes and joins its dispatcher; the other goes on.
    drop(guest);
    let left = dispatchers();
    assert_eq!(left.len(), 1, "the guest's dispatcher ended: {left:?}");
    xs.dom0().write("/idle", "2").unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap().path,
        "/idle"
    );

    // At its watch quota a guest's store is refused the wake-up watch at first: it drops
    // its watches and the dispatcher still ends.
    let guest = xs.guest(DomId(4)).unwrap();
    // Fill the guest's watch quota, so that the wake-up watch is refused at first.
    let mut n = 0;
    let (qtx, _qrx) = unbounded();
    while guest
        .watch(&format!("/local/domain/4/w{n}"), "t", qtx.clone())
        .is_ok()
    {
        n += 1;
        assert!(n < 100_000, "no watch quota");
    }
    assert!(n > 0);
    let before = dispatchers().len();
    drop(guest);
    assert_eq!(dispatchers().len(), before - 1, "dispatcher ended");
}
