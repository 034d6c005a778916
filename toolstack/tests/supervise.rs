//! The supervisor restarts a dying program with doubling delays, stops on a clean exit, and
//! passes a stop on to the child: as a library and as the `xapi-supervise` program.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use toolstack::supervise::{Backoff, Ended, Supervisor};

fn backoff() -> Backoff {
    Backoff {
        min: Duration::from_millis(50),
        max: Duration::from_millis(200),
        stable: Duration::from_secs(30),
    }
}

/// A shell child that counts its runs in `file` and exits with `code` until run `clean_at`
/// (then 0).
fn counting(file: &std::path::Path, code: i32, clean_at: u32) -> Vec<String> {
    vec![
        "-c".into(),
        format!(
            "echo x >> '{f}'; n=$(wc -l < '{f}'); [ \"$n\" -ge {clean_at} ] && exit 0; exit {code}",
            f = file.display()
        ),
    ]
}

fn runs(file: &std::path::Path) -> usize {
    std::fs::read_to_string(file)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn delays_double_up_to_the_maximum_until_a_clean_exit() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("runs");
    let sup = Supervisor::new("sh", counting(&f, 3, 6), backoff());
    let stop = AtomicBool::new(false);
    let mut delays = Vec::new();
    let ended = sup.run(&stop, |r| delays.push(r.delay.as_millis()));
    assert!(matches!(ended, Ended::Clean), "{ended:?}");
    assert_eq!(runs(&f), 6);
    assert_eq!(delays, vec![0, 50, 100, 200, 200, 200]);
}

#[test]
fn a_stop_terminates_the_child_and_a_missing_program_is_an_error() {
    let sup = Supervisor::new("sleep", vec!["30".into()], backoff());
    let stop = AtomicBool::new(false);
    let ended = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::SeqCst);
        });
        sup.run(&stop, |_| {})
    });
    match ended {
        Ended::Stopped(st) => assert_eq!(st.signal(), Some(libc::SIGTERM)),
        other => panic!("{other:?}"),
    }
    let sup = Supervisor::new("/nonexistent/xapi", vec![], backoff());
    let ended = sup.run(&AtomicBool::new(false), |_| {});
    assert!(matches!(ended, Ended::Spawn(ref e) if e.kind() == std::io::ErrorKind::NotFound));
}

#[test]
fn the_program_restarts_a_killed_child_and_forwards_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pids");
    // Each run records its pid and then waits to be killed.
    let script = format!("echo $$ >> '{}'; exec sleep 30", f.display());
    let mut sup = Command::new(env!("CARGO_BIN_EXE_xapi-supervise"))
        .args(["--min-backoff-ms", "50", "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    let pids = |n: usize| -> Vec<i32> {
        let t0 = std::time::Instant::now();
        loop {
            let p: Vec<i32> = std::fs::read_to_string(&f)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if p.len() >= n {
                return p;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "{n} runs: {p:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // kill -9 the supervised program: it comes back with a new pid.
    let first = pids(1)[0];
    // SAFETY: kill(2) on a pid we read from our own child's file.
    unsafe { libc::kill(first, libc::SIGKILL) };
    let second = pids(2)[1];
    assert_ne!(first, second);
    // SIGTERM to the supervisor stops the child and the supervisor.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(sup.id() as i32, libc::SIGTERM) };
    let st = sup.wait().unwrap();
    assert!(st.success(), "{st:?}");
    // SAFETY: signal 0 only checks whether the process exists.
    assert_ne!(unsafe { libc::kill(second, 0) }, 0, "the child was stopped");
    assert_eq!(pids(2).len(), 2, "not restarted after the stop");
}
