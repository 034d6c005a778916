//! The same-run peers and the load generator, checked against Debian's C
//! xenstored under the shim (needs `xen-utils-4.17` and `xenstore-utils`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use benches::cpeer::{self, CXenstored};
use benches::echo::{self, EchoServer};
use benches::frame::{self, Decoder};
use benches::load::{Config, Session, Stop, Workload};

fn tool(name: &str) -> String {
    let p = format!("/usr/bin/{name}");
    cpeer::require_binary(&p, "xenstore-utils").unwrap_or_else(|e| panic!("{e}"));
    p
}

fn start_c() -> CXenstored {
    CXenstored::start(&[]).unwrap_or_else(|e| panic!("{e}"))
}

fn run_ok(mut c: Command) -> String {
    let out = c.output().expect("spawn client tool");
    assert!(
        out.status.success(),
        "{c:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn c_xenstored_under_the_shim_serves_the_c_tools() {
    let c = start_c();
    let mut w = c.client(tool("xenstore-write"));
    w.args(["/shim/a", "hello", "/shim/b/c", "x y"]);
    run_ok(w);
    let mut r = c.client(tool("xenstore-read"));
    r.args(["/shim/a", "/shim/b/c"]);
    assert_eq!(run_ok(r), "hello\nx y\n");
    let mut ls = c.client(tool("xenstore-list"));
    ls.arg("/shim");
    assert_eq!(run_ok(ls), "a\nb\n");
    // A missing node is an error, reported like on Xen.
    let out = c
        .client(tool("xenstore-read"))
        .arg("/shim/nope")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn c_xenstored_under_the_shim_passes_test_xenstore() {
    let c = start_c();
    let t = cpeer::require_binary(cpeer::DEBIAN_TEST_XENSTORE, "xen-utils-4.17")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = c.client(t).output().unwrap();
    assert!(
        out.status.success(),
        "test-xenstore failed on C xenstored: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn shim_lets_c_xenstored_introduce_and_release_domains() {
    let c = start_c();
    let x = xenstore::Client::connect_socket(c.socket_path()).unwrap();
    let dom = xen_types::DomId(7);
    assert!(!x.is_domain_introduced(dom).unwrap());
    x.watch("@introduceDomain", "intro").unwrap();
    // The watch fires once when set.
    let ev = x
        .next_event_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(ev.token, "intro");
    x.introduce(dom, xen_types::Pfn(0x1234), xen_types::EvtchnPort(3))
        .unwrap();
    let ev = x
        .next_event_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(ev.path, "@introduceDomain");
    assert!(x.is_domain_introduced(dom).unwrap());
    x.release(dom).unwrap();
    assert!(!x.is_domain_introduced(dom).unwrap());
}

#[test]
fn shim_domain_list_decides_which_owners_exist() {
    let perms: Vec<xenstore::Perm> = vec!["n5".parse().unwrap()];
    // Default: every ordinary domid exists, so domain 5 may own a node.
    let c = start_c();
    let x = xenstore::Client::connect_socket(c.socket_path()).unwrap();
    x.write("/owned", "1").unwrap();
    x.set_perms("/owned", &perms).unwrap();
    assert_eq!(x.get_perms("/owned").unwrap(), perms);
    // Only dom0 exists: C xenstored refuses an owner that is not a domain.
    let c = CXenstored::start_with_env(&[], &[("XENSTORED_SHIM_MAX_DOMID", "0")]).unwrap();
    let x = xenstore::Client::connect_socket(c.socket_path()).unwrap();
    x.write("/owned", "1").unwrap();
    let err = x.set_perms("/owned", &perms).unwrap_err();
    assert_eq!(err.errno(), Some(xen_types::Errno::ENOENT));
}

#[test]
fn echo_server_answers_pipelined_requests_in_order() {
    let dir = cpeer::temp_dir("echo-test").unwrap();
    let e = EchoServer::start(&dir.path().join("s")).unwrap();
    let mut s = UnixStream::connect(e.socket_path()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    for i in 0..100u32 {
        let ty = if i % 2 == 0 {
            xen_sys::XS_READ
        } else {
            xen_sys::XS_TRANSACTION_START
        };
        frame::encode(&mut out, ty, i, 0, &[b"/x\0"]);
    }
    s.write_all(&out).unwrap();
    let mut dec = Decoder::new();
    let mut buf = [0u8; 4096];
    let mut next = 0u32;
    while next < 100 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "echo server closed early");
        dec.extend(&buf[..n]);
        while let Some((h, r)) = dec.next_frame().unwrap() {
            assert_eq!(h.req_id, next);
            let want = if next % 2 == 0 {
                xen_sys::XS_READ
            } else {
                xen_sys::XS_TRANSACTION_START
            };
            assert_eq!(h.ty, want);
            assert_eq!(dec.payload(r), echo::reply_payload(want));
            next += 1;
        }
    }
}

#[test]
fn echo_server_drops_a_connection_announcing_an_oversize_payload() {
    let dir = cpeer::temp_dir("echo-test").unwrap();
    let e = EchoServer::start(&dir.path().join("s")).unwrap();
    let mut s = UnixStream::connect(e.socket_path()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let h = frame::Header {
        ty: xen_sys::XS_WRITE,
        req_id: 1,
        tx_id: frame::TxId(0),
        len: xen_sys::XENSTORE_PAYLOAD_MAX + 1,
    };
    s.write_all(&h.to_bytes()).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap(), 0, "connection must be closed");
}

#[test]
fn load_transactions_commit_exactly_once_per_operation() {
    let c = start_c();
    let mut cfg = Config::new(c.socket_path(), Workload::TxRmw);
    cfg.conns = 4;
    cfg.depth = 4;
    cfg.tree_nodes = 500;
    let mut s = Session::open(cfg).unwrap();
    let st = s.run(Stop::Ops(400)).unwrap();
    assert_eq!(st.ops, 400);
    assert_eq!(st.errors, 0);
    assert_eq!(st.latencies_ns.len(), 400);
    // Every committed read-modify-write incremented one counter.
    let x = xenstore::Client::connect_socket(c.socket_path()).unwrap();
    let mut total = 0u64;
    for name in x.directory("/bench/tree").unwrap() {
        if name.starts_with("tx") {
            total += x
                .read_string(&format!("/bench/tree/{name}"))
                .unwrap()
                .parse::<u64>()
                .unwrap();
        }
    }
    assert_eq!(total, 400);
    assert_eq!(x.directory("/bench/tree/n4").unwrap().len(), 100);
}

#[test]
fn load_directory_walks_long_lists_with_directory_part() {
    let c = start_c();
    let mut cfg = Config::new(c.socket_path(), Workload::Directory);
    // ~6 KiB of names: more than one message, so DIRECTORY says E2BIG.
    cfg.children = 1000;
    cfg.depth = 2;
    let mut s = Session::open(cfg).unwrap();
    let st = s.run(Stop::Ops(10)).unwrap();
    assert_eq!((st.ops, st.errors), (10, 0));
}

#[test]
fn load_read_write_pipelined_over_many_connections() {
    let c = start_c();
    for w in [Workload::Read, Workload::Write] {
        let mut cfg = Config::new(c.socket_path(), w);
        cfg.conns = 64;
        cfg.depth = 8;
        cfg.idle = 100;
        let mut s = Session::open(cfg).unwrap();
        let st = s.run(Stop::Ops(2000)).unwrap();
        assert_eq!((st.ops, st.errors), (2000, 0), "{w:?}");
    }
    let x = xenstore::Client::connect_socket(c.socket_path()).unwrap();
    assert_eq!(x.directory("/bench/write").unwrap().len(), 64);
}

#[test]
fn load_watch_fanout_waits_for_every_watcher() {
    let c = start_c();
    let mut cfg = Config::new(c.socket_path(), Workload::WatchFanout);
    cfg.watchers = 50;
    let mut s = Session::open(cfg).unwrap();
    let st = s.run(Stop::Ops(20)).unwrap();
    assert_eq!(st.ops, 20);
    let st = s.run(Stop::Ops(5)).unwrap();
    assert_eq!(st.ops, 5);
}

#[test]
fn load_reports_a_daemon_that_is_not_there() {
    let dir = cpeer::temp_dir("no-daemon").unwrap();
    let cfg = Config::new(dir.path().join("absent"), Workload::Read);
    let err = Session::open(cfg).unwrap_err();
    assert!(err.to_string().contains("socket I/O"), "{err}");
}

#[test]
fn missing_peer_binary_names_its_debian_package() {
    let e = cpeer::require_binary("/nonexistent/xenstored", "xen-utils-4.17").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("/nonexistent/xenstored"), "{msg}");
    assert!(msg.contains("apt-get install xen-utils-4.17"), "{msg}");
}

#[test]
fn shim_is_built_once_when_many_threads_ask_at_once() {
    use std::os::unix::fs::MetadataExt;
    let cache = cpeer::temp_dir("shim-cache").unwrap();
    let start = std::sync::Barrier::new(16);
    let inodes: Vec<(std::path::PathBuf, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let lib = cpeer::build_shim_in(cache.path()).unwrap_or_else(|e| panic!("{e}"));
                    let ino = std::fs::metadata(&lib).unwrap().ino();
                    (lib, ino)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Every thread got the same file: one build, never replaced by a second.
    assert!(inodes.iter().all(|x| *x == inodes[0]), "{inodes:?}");
    let lib = &inodes[0].0;
    let elf = std::fs::read(lib).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    // Nothing left behind but the library and the lock file.
    let mut names: Vec<String> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["lock", "xenstored_shim.so"]);
}
