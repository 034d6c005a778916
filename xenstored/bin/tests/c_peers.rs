//! Our `xenstored` binary as a drop-in for C xenstored, proven with Xen's own
//! tools: Xen's `test-xenstore` passes against it, and the `xenstore-*`
//! command-line tools (read, write, ls, list, exists, rm, chmod, watch,
//! control) print exactly what they print against Debian's C
//! xenstored (run in the same test under the project's `LD_PRELOAD` shim,
//! see `benches/src/cpeer.rs`). Domain lifecycle, transaction semantics and
//! protocol limits are compared as transcripts through the `xenstore` client.
//!
//! Needs the Debian packages `xen-utils-4.17` (C xenstored, test-xenstore)
//! and `xenstore-utils` (the tools); the tests fail, naming the package, when
//! they are missing. `XS_LONG_TESTS=1` makes the random `test-xenstore` run
//! last 60 s instead of 10 s.

#[allow(dead_code)]
#[path = "../../../benches/src/cpeer.rs"]
mod cpeer;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cpeer::{CXenstored, DaemonProcess};

/// How long a client tool may run before the test fails.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts our daemon the way C xenstored is started on a dom0: `-N` with
/// the socket folder named by `XENSTORED_RUNDIR`.
fn start_ours() -> DaemonProcess {
    let dir = cpeer::temp_dir("xenstored-cpeer").expect("temp dir");
    let socket = dir.path().join("socket");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xenstored"));
    cmd.arg("-N")
        .env("XENSTORED_RUNDIR", dir.path())
        .env_remove("XENSTORED_PATH")
        .current_dir(dir.path());
    DaemonProcess::spawn(cmd, socket, dir).unwrap_or_else(|e| panic!("our xenstored: {e}"))
}

fn start_c() -> CXenstored {
    CXenstored::start(&[]).unwrap_or_else(|e| panic!("C xenstored peer: {e}"))
}

fn tool(name: &str) -> String {
    let p = format!("/usr/bin/{name}");
    cpeer::require_binary(&p, "xenstore-utils").unwrap_or_else(|e| panic!("{e}"));
    p
}

fn test_xenstore() -> String {
    cpeer::require_binary(cpeer::DEBIAN_TEST_XENSTORE, "xen-utils-4.17")
        .unwrap_or_else(|e| panic!("{e}"))
        .display()
        .to_string()
}

/// Runs `cmd` to completion, failing the test if it outlives [`TOOL_TIMEOUT`].
fn output(cmd: &mut Command) -> std::process::Output {
    cmd.stdin(Stdio::null());
    let what = format!("{cmd:?}");
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(TOOL_TIMEOUT) {
        Ok(r) => r.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            // SAFETY: kill(2) with SIGKILL on the pid of our own child, which the
            // waiting thread has not reaped (it is still blocked in wait).
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            panic!("{what} did not finish within {TOOL_TIMEOUT:?}");
        }
    }
}

fn describe(out: &std::process::Output) -> String {
    format!(
        "{}\n--- stdout:\n{}--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn test_xenstore_lists_its_tests() {
    let out = output(Command::new(test_xenstore()).arg("-l"));
    assert!(out.status.success(), "{}", describe(&out));
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("ta err"), "unexpected list:\n{list}");
}

/// Every test of Xen's test-xenstore, one run each, then 5 iterations of all.
#[test]
fn test_xenstore_every_test_passes() {
    let d = start_ours();
    let list = output(Command::new(test_xenstore()).arg("-l"));
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    let names: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim_end()))
        .collect();
    assert!(names.len() >= 12, "test list too short:\n{list}");
    let mut failures = Vec::new();
    for name in &names {
        let mut c = d.client(test_xenstore());
        c.args(["-t", name]);
        let out = output(&mut c);
        if !out.status.success() {
            failures.push(format!("test-xenstore -t {name:?}: {}", describe(&out)));
        }
    }
    let mut c = d.client(test_xenstore());
    c.args(["-i", "5"]);
    let out = output(&mut c);
    if !out.status.success() {
        failures.push(format!("test-xenstore -i 5: {}", describe(&out)));
    }
    assert!(
        failures.is_empty(),
        "{}\ndaemon log:\n{}",
        failures.join("\n"),
        d.log_contents()
    );
}

/// test-xenstore's random mode: 10 s, or 60 s with `XS_LONG_TESTS=1`.
#[test]
fn test_xenstore_random_run_passes() {
    let secs = if std::env::var_os("XS_LONG_TESTS").is_some_and(|v| v == "1") {
        "60"
    } else {
        "10"
    };
    let d = start_ours();
    let mut c = d.client(test_xenstore());
    c.args(["-r", secs]);
    let out = output(&mut c);
    assert!(
        out.status.success(),
        "test-xenstore -r {secs}: {}\ndaemon log:\n{}",
        describe(&out),
        d.log_contents()
    );
}

/// One step of a tool session: a tool and its arguments.
type Step = (&'static str, &'static [&'static str]);

/// The session run against both daemons. Each step's exit status, stdout
/// and stderr must match byte for byte.
const STEPS: &[Step] = &[
    (
        "xenstore-write",
        &["/t/a", "1", "/t/b/c", "hello world", "/t/e", ""],
    ),
    ("xenstore-read", &["/t/a", "/t/b/c", "/t/e"]),
    ("xenstore-read", &["-p", "/t/a", "/t/b/c"]),
    ("xenstore-read", &["/t/nope"]),
    ("xenstore-read", &["/t/a", "/t/nope", "/t/b/c"]),
    ("xenstore-write", &["-R", "/t/raw", "a\\x01b\\\\c"]),
    ("xenstore-read", &["-R", "/t/raw"]),
    ("xenstore-read", &["/t/raw"]),
    ("xenstore-write", &["/t/bad//path", "x"]),
    ("xenstore-write", &["relative/path", "x"]),
    ("xenstore-write", &["/t/odd"]),
    ("xenstore-write", &["/t/bad name", "x"]),
    ("xenstore-write", &["/t/ok-name_1@x", "y"]),
    ("xenstore-write", &["/t/trailing/", "x"]),
    ("xenstore-read", &["/"]),
    ("xenstore-exists", &["/"]),
    ("xenstore-list", &["/"]),
    ("xenstore-ls", &["/t"]),
    ("xenstore-ls", &["-f", "/t"]),
    ("xenstore-ls", &["-p", "/t"]),
    ("xenstore-ls", &["/t/nope"]),
    ("xenstore-ls", &[]),
    ("xenstore-list", &["/t"]),
    ("xenstore-list", &["-p", "/t", "/t/b"]),
    ("xenstore-list", &["/t/a"]),
    ("xenstore-list", &["/t/nope"]),
    ("xenstore-exists", &["/t/a"]),
    ("xenstore-exists", &["/t/b"]),
    ("xenstore-exists", &["/t/nope"]),
    ("xenstore-exists", &["-p", "/t/a"]),
    ("xenstore-chmod", &["/t/a", "n0", "r1", "w2", "b3"]),
    ("xenstore-ls", &["-p", "/t"]),
    ("xenstore-chmod", &["-r", "/t/b", "b0", "r5"]),
    ("xenstore-ls", &["-p", "/t"]),
    ("xenstore-chmod", &["/t/a", "x7"]),
    // More entries than the per-node quota (-A, 5): dom0 is exempt.
    (
        "xenstore-chmod",
        &[
            "/t/a", "n0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9",
        ],
    ),
    // An owner that cannot be a domain.
    ("xenstore-chmod", &["/t/a", "n70000"]),
    ("xenstore-chmod", &["/t/nope", "n0"]),
    ("xenstore-ls", &["-p", "/t"]),
    ("xenstore-rm", &["/t/a"]),
    ("xenstore-rm", &["/t/nope"]),
    ("xenstore-rm", &["/t/nope/deeper"]),
    ("xenstore-write", &["/t/x/y/z", "deep"]),
    ("xenstore-rm", &["-t", "/t/x/y/z"]),
    ("xenstore-ls", &["/t"]),
    ("xenstore-rm", &["/t/b"]),
    ("xenstore-ls", &["-f", "/t"]),
    ("xenstore-rm", &["/t"]),
    ("xenstore-exists", &["/t"]),
    ("xenstore-rm", &["/"]),
    ("xenstore-control", &["help"]),
    ("xenstore-control", &["quota"]),
    ("xenstore-control", &["quota", "0"]),
    ("xenstore-control", &["check"]),
    ("xenstore-control", &["no-such-command"]),
    ("xenstore-chmod", &["/", "r0"]),
    ("xenstore-ls", &["-p"]),
    ("xenstore-chmod", &["/", "n0"]),
    ("xenstore-ls", &[]),
];

fn run_step(addr: &std::path::Path, (name, args): Step) -> String {
    run_owned(addr, name, args)
}

fn run_owned<S: AsRef<str>>(addr: &std::path::Path, name: &str, args: &[S]) -> String {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let mut c = Command::new(tool(name));
    c.args(&args).env("XENSTORED_PATH", addr);
    let out = output(&mut c);
    format!("$ {name} {}\n{}", args.join(" "), describe(&out))
}

/// Values and paths at and beyond the protocol's limits
/// (`XENSTORE_PAYLOAD_MAX`, `XENSTORE_ABS_PATH_MAX`).
#[test]
fn limits_behave_as_against_c_xenstored() {
    let c = start_c();
    let ours = start_ours();
    let payload_max = xen_sys::XENSTORE_PAYLOAD_MAX as usize;
    let abs_max = xen_sys::XENSTORE_ABS_PATH_MAX as usize;
    let path_of = |len: usize| {
        let mut p = String::from("/l/");
        while p.len() < len {
            p.push_str("abcdefghi/");
        }
        p.truncate(len);
        p.trim_end_matches('/').to_owned()
    };
    let rel_max = xen_sys::XENSTORE_REL_PATH_MAX as usize;
    let near = path_of(abs_max - 8);
    let over = path_of(abs_max + 40);
    // C counts the length below /local/domain/<domid>/ (or the whole path)
    // against -M/--path-max, default XENSTORE_REL_PATH_MAX, for dom0 too.
    let rel_ok = format!("/{}", "r".repeat(rel_max - 1));
    let rel_over = format!("/{}", "r".repeat(rel_max));
    let home_ok = format!("/local/domain/7/{}", "h".repeat(rel_max));
    let home_over = format!("/local/domain/7/{}", "h".repeat(rel_max + 1));
    let big = "v".repeat(2048);
    let too_big = "w".repeat(payload_max);
    let mut steps: Vec<(&str, Vec<String>)> = vec![
        ("xenstore-write", vec!["/l/big".into(), big.clone()]),
        ("xenstore-read", vec!["/l/big".into()]),
        ("xenstore-write", vec!["/l/too-big".into(), too_big]),
        ("xenstore-exists", vec!["/l/too-big".into()]),
    ];
    for p in [rel_ok, rel_over, home_ok, home_over, near, over] {
        steps.push(("xenstore-write", vec![p.clone(), "x".into()]));
        steps.push(("xenstore-exists", vec![p]));
    }
    steps.push(("xenstore-rm", vec!["/l".into()]));
    let mut mismatches = Vec::new();
    for (name, args) in &steps {
        let want = run_owned(c.socket_path(), name, args);
        let got = run_owned(ours.socket_path(), name, args);
        if want != got {
            mismatches.push(format!("=== C xenstored:\n{want}\n=== ours:\n{got}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn tools_print_what_they_print_against_c_xenstored() {
    let c = start_c();
    let ours = start_ours();
    let mut mismatches = Vec::new();
    for step in STEPS {
        let want = run_step(c.socket_path(), *step);
        let got = run_step(ours.socket_path(), *step);
        if want != got {
            mismatches.push(format!("=== C xenstored:\n{want}\n=== ours:\n{got}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} steps differ:\n{}",
        mismatches.len(),
        STEPS.len(),
        mismatches.join("\n")
    );
}

/// Runs `xenstore-watch -n COUNT PATH`, waits for the event the watch fires
/// when it is set, runs `actions` and returns everything the watcher printed.
fn watch_session(addr: &std::path::Path, args: &[&str], actions: &[Step]) -> String {
    let mut cmd = Command::new(tool("xenstore-watch"));
    cmd.args(args)
        .env("XENSTORED_PATH", addr)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn xenstore-watch");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    match rx.recv_timeout(TOOL_TIMEOUT) {
        Ok(l) => lines.push(l),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("xenstore-watch {args:?} printed no initial event");
        }
    }
    let mut acts = String::new();
    for step in actions {
        acts.push_str(&run_step(addr, *step));
    }
    let (stx, srx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let r = child.wait_with_output();
        let _ = stx.send(());
        r
    });
    if srx.recv_timeout(TOOL_TIMEOUT).is_err() {
        panic!("xenstore-watch {args:?} did not exit after its events; got {lines:?}");
    }
    let out = waiter.join().expect("waiter").expect("wait xenstore-watch");
    reader.join().expect("reader");
    lines.extend(rx.try_iter());
    format!(
        "$ xenstore-watch {}\n{}\n--- events:\n{}\n--- actions:\n{acts}",
        args.join(" "),
        describe(&out),
        lines.join("\n")
    )
}

#[test]
fn xenstore_watch_prints_what_it_prints_against_c_xenstored() {
    let c = start_c();
    let ours = start_ours();
    let sessions: &[(&[&str], &[Step])] = &[
        (
            &["-n", "4", "/w"],
            &[
                ("xenstore-write", &["/w/a", "1"]),
                ("xenstore-write", &["/elsewhere", "1"]),
                ("xenstore-write", &["/w/a/b", "2"]),
                ("xenstore-rm", &["/w"]),
            ],
        ),
        // A relative watch: events name the relative path.
        (
            &["-n", "3", "relw"],
            &[
                ("xenstore-write", &["relw/a", "1"]),
                ("xenstore-write", &["/local/domain/0/relw", "2"]),
            ],
        ),
        // Only the event fired when the watch is set: no domain is introduced.
        (&["-n", "1", "@introduceDomain"], &[]),
    ];
    let mut mismatches = Vec::new();
    for (args, actions) in sessions {
        let want = watch_session(c.socket_path(), args, actions);
        let got = watch_session(ours.socket_path(), args, actions);
        if want != got {
            mismatches.push(format!("=== C xenstored:\n{want}\n=== ours:\n{got}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// A transcript of a domain's life as dom0's toolstack sees it: introduce,
/// release, the special watches and what happens to the domain's nodes.
/// Events are collected up to a sentinel write, so no timing is involved.
fn domain_lifecycle_transcript(addr: &std::path::Path) -> String {
    use std::fmt::Write as _;
    use xen_types::{DomId, EvtchnPort, Pfn};
    use xenstore::{Client, Perm};

    let x = Client::connect_socket(addr).expect("connect");
    let mut t = String::new();
    let mut sentinel = 0u32;
    let mut events = |x: &Client, t: &mut String| {
        sentinel += 1;
        x.write("/sentinel", sentinel.to_string())
            .expect("sentinel write");
        loop {
            let ev = x
                .next_event_timeout(TOOL_TIMEOUT)
                .expect("event")
                .unwrap_or_else(|| panic!("no sentinel event within {TOOL_TIMEOUT:?}"));
            if ev.token == "s" {
                break;
            }
            let _ = writeln!(t, "  event {} {}", ev.path, ev.token);
        }
    };
    /// One line: the step and its result, an error as its errno.
    fn step<T: std::fmt::Debug>(t: &mut String, what: &str, r: Result<T, xenstore::Error>) {
        let r = r.map_err(|e| format!("{:?}", e.errno()));
        let _ = writeln!(t, "{what}: {r:?}");
    }

    x.watch("/sentinel", "s").expect("watch sentinel");
    // The event every watch fires when it is set.
    let first = x.next_event_timeout(TOOL_TIMEOUT).expect("event");
    assert_eq!(first.map(|e| e.token).as_deref(), Some("s"));
    x.watch("@introduceDomain", "intro").expect("watch intro");
    x.watch("@releaseDomain", "release").expect("watch release");
    x.watch("/local/domain/7", "home").expect("watch home");
    events(&x, &mut t);

    let d7 = DomId(7);
    let perms: Vec<Perm> = ["n7", "r0"]
        .iter()
        .map(|p| p.parse().expect("perm"))
        .collect();
    step(&mut t, "write home", x.write("/local/domain/7/data", "x"));
    step(&mut t, "set perms", x.set_perms("/local/domain/7", &perms));
    step(
        &mut t,
        "set perms data",
        x.set_perms("/local/domain/7/data", &perms),
    );
    events(&x, &mut t);
    step(&mut t, "introduced before", x.is_domain_introduced(d7));
    step(
        &mut t,
        "introduce",
        x.introduce(d7, Pfn(0x1234), EvtchnPort(5)),
    );
    events(&x, &mut t);
    step(&mut t, "introduced after", x.is_domain_introduced(d7));
    step(
        &mut t,
        "introduce again",
        x.introduce(d7, Pfn(0x1234), EvtchnPort(5)),
    );
    events(&x, &mut t);
    step(&mut t, "domain path", x.get_domain_path(d7));
    step(
        &mut t,
        "introduce port 0",
        x.introduce(DomId(8), Pfn(1), EvtchnPort(0)),
    );
    step(&mut t, "resume", x.resume(d7));
    step(&mut t, "resume unknown", x.resume(DomId(9)));
    step(&mut t, "release", x.release(d7));
    events(&x, &mut t);
    step(&mut t, "introduced released", x.is_domain_introduced(d7));
    step(&mut t, "home after release", x.directory("/local/domain/7"));
    step(
        &mut t,
        "perms after release",
        x.get_perms("/local/domain/7"),
    );
    step(&mut t, "release again", x.release(d7));
    step(&mut t, "release dom0", x.release(DomId(0)));
    events(&x, &mut t);
    t
}

#[test]
fn domain_lifecycle_matches_c_xenstored() {
    let c = start_c();
    let ours = start_ours();
    let want = domain_lifecycle_transcript(c.socket_path());
    let got = domain_lifecycle_transcript(ours.socket_path());
    assert_eq!(got, want, "ours (left) differs from C xenstored (right)");
}

/// A transcript of transaction semantics: which concurrent changes make a
/// commit fail with `EAGAIN`, what a transaction sees, when watches fire,
/// and stale transaction ids.
fn transaction_transcript(addr: &std::path::Path) -> String {
    use std::fmt::Write as _;
    use xenstore::{Client, Op, TxId};

    let x = Client::connect_socket(addr).expect("connect");
    let o = Client::connect_socket(addr).expect("connect other");
    let mut t = String::new();
    let r = |res: Result<(), xenstore::Error>| format!("{:?}", res.map_err(|e| e.errno()));
    let rv = |res: Result<Vec<u8>, xenstore::Error>| {
        format!(
            "{:?}",
            res.map(|v| String::from_utf8_lossy(&v).into_owned())
                .map_err(|e| e.errno())
        )
    };
    for p in ["/tx/x", "/tx/z", "/tx/w", "/tx/d/a", "/tx/r/a"] {
        x.write(p, "0").expect("setup write");
    }
    // Each case: what the transaction does, what another client does
    // meanwhile, then the commit result.
    let cases = [
        "read x, other writes x",
        "read x, other writes z",
        "write w blind, other writes w",
        "directory d, other adds d/b",
        "read missing n, other creates n",
        "rm r, other writes r/a",
        "write q, other reads q",
        "isolation: other writes v then tx reads v",
    ];
    for (i, name) in cases.iter().enumerate() {
        let tx = x.transaction_start().expect("transaction start");
        let seen = match i {
            0 => rv(tx.read("/tx/x")) + &r(tx.write("/tx/y", "1")),
            1 => rv(tx.read("/tx/x")) + &r(tx.write("/tx/y", "2")),
            2 => r(tx.write("/tx/w", "tx")),
            3 => format!("{:?}", tx.directory("/tx/d").map_err(|e| e.errno())),
            4 => rv(tx.read("/tx/n")),
            5 => r(tx.rm("/tx/r")),
            6 => r(tx.write("/tx/q", "1")),
            _ => {
                o.write("/tx/v", "new").unwrap();
                rv(tx.read("/tx/v"))
            }
        };
        match i {
            0 => o.write("/tx/x", "1").unwrap(),
            1 => o.write("/tx/z", "1").unwrap(),
            2 => o.write("/tx/w", "other").unwrap(),
            3 => o.write("/tx/d/b", "1").unwrap(),
            4 => o.write("/tx/n", "1").unwrap(),
            5 => o.write("/tx/r/a", "2").unwrap(),
            6 => drop(o.read("/tx/q")),
            _ => {}
        }
        let _ = writeln!(t, "{name}: {seen} commit {}", r(tx.commit()));
    }
    // Own writes are visible inside, invisible outside until commit; watches
    // fire at commit only.
    x.watch("/tx/seen", "w").unwrap();
    let first = x.next_event_timeout(TOOL_TIMEOUT).unwrap();
    let _ = writeln!(t, "watch set: {:?}", first.map(|e| e.path));
    let tx = x.transaction_start().unwrap();
    let _ = writeln!(t, "tx write: {}", r(tx.write("/tx/seen", "in")));
    let _ = writeln!(t, "tx read own: {}", rv(tx.read("/tx/seen")));
    let _ = writeln!(t, "outside read: {}", rv(o.read("/tx/seen")));
    let id = tx.id();
    let _ = writeln!(t, "commit: {}", r(tx.commit()));
    let ev = x.next_event_timeout(TOOL_TIMEOUT).unwrap();
    let _ = writeln!(t, "event after commit: {:?}", ev.map(|e| e.path));
    let _ = writeln!(t, "outside read after: {}", rv(o.read("/tx/seen")));
    // The committed transaction's id is gone.
    let stale = x.request_raw(Op::Read, id, b"/tx/seen\0".to_vec()).unwrap();
    let _ = writeln!(
        t,
        "stale id read: type {} {:?}",
        stale.header.ty,
        String::from_utf8_lossy(&stale.payload)
    );
    let bogus = x
        .request_raw(Op::TransactionEnd, TxId(0xdead), b"T\0".to_vec())
        .unwrap();
    let _ = writeln!(
        t,
        "end unknown id: type {} {:?}",
        bogus.header.ty,
        String::from_utf8_lossy(&bogus.payload)
    );
    let tx = x.transaction_start().unwrap();
    let _ = writeln!(t, "abort write: {}", r(tx.write("/tx/aborted", "1")));
    let _ = writeln!(t, "abort: {}", r(tx.abort()));
    let _ = writeln!(t, "after abort: {}", rv(x.read("/tx/aborted")));
    t
}

#[test]
fn transactions_match_c_xenstored() {
    let c = start_c();
    let ours = start_ours();
    let want = transaction_transcript(c.socket_path());
    let got = transaction_transcript(ours.socket_path());
    assert_eq!(got, want, "ours (left) differs from C xenstored (right)");
}
