//! XenStore semantics, through the real client and the daemon's event loop: at least what
//! QEMU's tests/unit/test-xs-node.c covers, plus permissions, quotas and domains.

mod common;

use common::*;
use xen_types::{DomId, Errno, EvtchnPort, Pfn};
use xenstore::{Access, Error, Perm};

fn errno<T: std::fmt::Debug>(r: xenstore::Result<T>) -> Errno {
    match r {
        Err(Error::Xs(e)) => e,
        other => panic!("expected an XS_ERROR reply, got {other:?}"),
    }
}

fn perm(s: &str) -> Perm {
    s.parse().unwrap()
}

#[test]
fn read_write_mkdir_rm_directory() {
    let env = start();
    let xs = env.dom0();
    assert_eq!(errno(xs.read("/nope")), Errno::ENOENT);
    xs.write("/a/b/c", "v").unwrap();
    // Implicit parents are created empty.
    assert_eq!(xs.read("/a").unwrap(), b"");
    assert_eq!(xs.read("/a/b/c").unwrap(), b"v");
    xs.write("/a/bin", b"x\0y\xff").unwrap();
    assert_eq!(xs.read("/a/bin").unwrap(), b"x\0y\xff");
    xs.mkdir("/a/b").unwrap(); // exists: value untouched
    xs.write("/a/b", "keep").unwrap();
    xs.mkdir("/a/b").unwrap();
    assert_eq!(xs.read("/a/b").unwrap(), b"keep");
    assert_eq!(xs.directory("/a").unwrap(), vec!["b", "bin"]);
    // Creation order, as C xenstored lists children.
    assert_eq!(xs.directory("/").unwrap(), vec!["tool", "a"]);
    xs.rm("/a/b").unwrap();
    assert_eq!(errno(xs.read("/a/b/c")), Errno::ENOENT);
    xs.rm("/a/b").unwrap(); // gone, parent exists: fine
    assert_eq!(errno(xs.rm("/x/y")), Errno::ENOENT); // parent missing
    assert_eq!(errno(xs.rm("/")), Errno::EINVAL);
    assert_eq!(errno(xs.write("/bad//path", "")), Errno::EINVAL);
    assert_eq!(errno(xs.write("/bad/", "")), Errno::EINVAL);
    assert_eq!(errno(xs.write("/sp ace", "")), Errno::EINVAL);
    assert_eq!(errno(xs.write("@special", "")), Errno::EINVAL);
    let long = "/".to_string() + &"a".repeat(3072);
    assert_eq!(errno(xs.write(&long, "")), Errno::EINVAL);
}

#[test]
fn relative_paths_resolve_against_the_domain_home() {
    let env = start();
    let xs = env.dom0();
    xs.write("rel", "zero").unwrap();
    assert_eq!(xs.read("/local/domain/0/rel").unwrap(), b"zero");
    assert_eq!(xs.get_domain_path(DomId(7)).unwrap(), "/local/domain/7");
    xs.mkdir("/local/domain/7").unwrap();
    xs.set_perms("/local/domain/7", &[perm("n7")]).unwrap();
    let d7 = env.dom(7);
    d7.write("data/x", "seven").unwrap();
    assert_eq!(xs.read("/local/domain/7/data/x").unwrap(), b"seven");
    assert_eq!(d7.read("/local/domain/7/data/x").unwrap(), b"seven");
    // What a domain creates is its own.
    assert_eq!(
        xs.get_perms("/local/domain/7/data/x").unwrap(),
        vec![perm("n7")]
    );
}

#[test]
fn permissions_protect_private_nodes() {
    let env = start();
    let xs = env.dom0();
    for d in [1, 2] {
        xs.mkdir(&format!("/local/domain/{d}")).unwrap();
        xs.set_perms(&format!("/local/domain/{d}"), &[perm(&format!("n{d}"))])
            .unwrap();
    }
    let d1 = env.dom(1);
    let d2 = env.dom(2);
    d1.write("secret", "s").unwrap();
    let p = "/local/domain/1/secret";
    assert_eq!(errno(d2.read(p)), Errno::EACCES);
    assert_eq!(errno(d2.write(p, "x")), Errno::EACCES);
    assert_eq!(errno(d2.rm(p)), Errno::EACCES);
    assert_eq!(errno(d2.directory("/local/domain/1")), Errno::EACCES);
    // Existence is not leaked: a missing node under an unreadable parent is EACCES too.
    assert_eq!(errno(d2.read("/local/domain/1/missing")), Errno::EACCES);
    assert_eq!(errno(d1.read("/local/domain/1/missing")), Errno::ENOENT);
    // Nobody but the owner (or dom0) changes permissions; the owner cannot give a node away.
    assert_eq!(errno(d2.set_perms(p, &[perm("b2")])), Errno::EACCES);
    assert_eq!(errno(d1.set_perms(p, &[perm("n2")])), Errno::EPERM);
    // Grant read to dom2 through the ACL.
    d1.set_perms(p, &[perm("n1"), perm("r2")]).unwrap();
    assert_eq!(d2.read(p).unwrap(), b"s");
    assert_eq!(errno(d2.write(p, "x")), Errno::EACCES);
    // Default access (first entry) applies to everyone else.
    d1.set_perms(p, &[perm("w1")]).unwrap();
    assert_eq!(errno(d2.read(p)), Errno::EACCES);
    d2.write(p, "w").unwrap();
    // The root is not writable by domains.
    assert_eq!(errno(d2.write("/x", "")), Errno::EACCES);
    // Unprivileged domains may not use privileged operations.
    assert_eq!(
        errno(d2.introduce(DomId(5), Pfn(1), EvtchnPort(1))),
        Errno::EACCES
    );
    assert_eq!(errno(d2.is_domain_introduced(DomId(1))), Errno::EACCES);
    assert_eq!(errno(d2.control(&["check"])), Errno::EACCES);
    // Malformed permissions.
    let raw = xs
        .request_raw(
            xenstore::Op::SetPerms,
            xenstore::TxId::NONE,
            b"/local/domain/1\0x9\0".to_vec(),
        )
        .unwrap();
    assert_eq!(raw.error_errno(), Some(Ok(Errno::EINVAL)));
}

#[test]
fn set_target_grants_the_targets_rights() {
    let env = start();
    let xs = env.dom0();
    xs.introduce(DomId(3), Pfn(10), EvtchnPort(1)).unwrap();
    xs.introduce(DomId(4), Pfn(11), EvtchnPort(1)).unwrap();
    xs.write("/local/domain/3/dm", "x").unwrap();
    xs.set_perms("/local/domain/3/dm", &[perm("n3")]).unwrap();
    let d4 = env.dom(4);
    assert_eq!(errno(d4.read("/local/domain/3/dm")), Errno::EACCES);
    xs.set_target(DomId(4), DomId(3)).unwrap();
    assert_eq!(d4.read("/local/domain/3/dm").unwrap(), b"x");
    assert_eq!(errno(xs.set_target(DomId(4), DomId(99))), Errno::ENOENT);
}

#[test]
fn watches_fire_on_register_subtree_depth_and_rm() {
    let env = start();
    let xs = env.dom0();
    let w = env.dom0();
    w.watch("/sync", "sync").unwrap();
    assert_eq!(ev(&w).path, "/sync");
    w.watch("/a", "ta").unwrap();
    assert_eq!((ev(&w).path, "ta"), ("/a".to_string(), "ta"));
    w.watch_depth("/d", "t0", 0).unwrap();
    w.watch_depth("/d", "t1", 1).unwrap();
    assert_eq!(events_until_sync(&w, &xs, "/sync").len(), 2); // initial events
    assert_eq!(errno(w.watch("/a", "ta")), Errno::EEXIST);
    xs.write("/a/b/c", "1").unwrap();
    xs.write("/ab", "not a child").unwrap();
    xs.write("/d", "").unwrap();
    xs.write("/d/e", "").unwrap();
    xs.write("/d/e/f", "").unwrap();
    let got = events_until_sync(&w, &xs, "/sync");
    assert_eq!(
        got,
        vec![
            ("/a/b/c".into(), "ta".into()),
            ("/d".into(), "t0".into()),
            ("/d".into(), "t1".into()),
            ("/d/e".into(), "t1".into()),
        ]
    );
    // Removing a node fires the watches on it and above it, and the watches set exactly on
    // each removed descendant (as C xenstored does).
    w.watch("/a/b/c", "deep").unwrap();
    assert_eq!(ev(&w).token, "deep");
    xs.rm("/a/b").unwrap();
    let mut got = events_until_sync(&w, &xs, "/sync");
    got.sort();
    assert_eq!(
        got,
        vec![
            ("/a/b".into(), "ta".into()),
            ("/a/b/c".into(), "deep".into()),
        ]
    );
    w.unwatch("/a", "ta").unwrap();
    assert_eq!(errno(w.unwatch("/a", "ta")), Errno::ENOENT);
    xs.write("/a/x", "").unwrap();
    assert!(events_until_sync(&w, &xs, "/sync").is_empty());
    // Relative watches report relative paths.
    w.watch("rel", "r").unwrap();
    assert_eq!(ev(&w).path, "rel");
    xs.write("/local/domain/0/rel/x", "").unwrap();
    assert_eq!(
        events_until_sync(&w, &xs, "/sync"),
        vec![("rel/x".to_string(), "r".to_string())]
    );
    // RESET_WATCHES drops them all.
    w.reset_watches().unwrap();
    xs.write("/local/domain/0/rel/y", "").unwrap();
    w.watch("/sync", "sync").unwrap();
    assert_eq!(ev(&w).path, "/sync");
    assert!(events_until_sync(&w, &xs, "/sync").is_empty());
}

#[test]
fn watch_events_respect_permissions() {
    let env = start();
    let xs = env.dom0();
    xs.write("/sync", "").unwrap();
    xs.set_perms("/sync", &[perm("r0")]).unwrap();
    xs.write("/priv/node", "").unwrap();
    xs.set_perms("/priv", &[perm("n0")]).unwrap();
    xs.set_perms("/priv/node", &[perm("n0")]).unwrap();
    xs.write("/pub/node", "").unwrap();
    xs.set_perms("/pub/node", &[perm("r0")]).unwrap();
    let d5 = env.dom(5);
    d5.watch("/sync", "sync").unwrap();
    d5.watch("/priv", "priv").unwrap();
    d5.watch("/pub", "pub").unwrap();
    assert_eq!(ev(&d5).token, "sync");
    let _ = (ev(&d5), ev(&d5));
    xs.write("/priv/node", "changed").unwrap();
    xs.write("/pub/node", "changed").unwrap();
    assert_eq!(
        events_until_sync(&d5, &xs, "/sync"),
        vec![("/pub/node".to_string(), "pub".to_string())]
    );
}

#[test]
fn special_watches_for_domains() {
    let env = start();
    let xs = env.dom0();
    let w = env.dom0();
    w.watch("/sync", "sync").unwrap();
    assert_eq!(ev(&w).path, "/sync");
    w.watch("@introduceDomain", "intro").unwrap();
    w.watch("@releaseDomain", "rel").unwrap();
    w.watch_depth("@releaseDomain", "reldepth", 1).unwrap();
    w.watch("@releaseDomain/9", "rel9").unwrap();
    assert_eq!(events_until_sync(&w, &xs, "/sync").len(), 4);
    assert!(!xs.is_domain_introduced(DomId(8)).unwrap());
    assert!(xs.is_domain_introduced(DomId(0)).unwrap());
    xs.introduce(DomId(8), Pfn(100), EvtchnPort(3)).unwrap();
    xs.introduce(DomId(9), Pfn(101), EvtchnPort(3)).unwrap();
    assert!(xs.is_domain_introduced(DomId(8)).unwrap());
    xs.write("/local/domain/8/x", "").unwrap();
    xs.set_perms("/local/domain/8", &[perm("n8")]).unwrap();
    xs.set_perms("/local/domain/8/x", &[perm("n8")]).unwrap();
    xs.release(DomId(8)).unwrap();
    xs.release(DomId(9)).unwrap();
    assert_eq!(errno(xs.release(DomId(9))), Errno::ENOENT);
    assert!(!xs.is_domain_introduced(DomId(8)).unwrap());
    // The released domain's nodes went with it.
    assert_eq!(errno(xs.read("/local/domain/8")), Errno::ENOENT);
    let got: Vec<(String, String)> = events_until_sync(&w, &xs, "/sync")
        .into_iter()
        .filter(|(p, _)| p.starts_with('@'))
        .collect();
    assert_eq!(
        got,
        vec![
            ("@introduceDomain".into(), "intro".into()),
            ("@introduceDomain".into(), "intro".into()),
            ("@releaseDomain".into(), "rel".into()),
            ("@releaseDomain/8".into(), "reldepth".into()),
            ("@releaseDomain".into(), "rel".into()),
            ("@releaseDomain/9".into(), "reldepth".into()),
            ("@releaseDomain/9".into(), "rel9".into()),
        ]
    );
    // Domains hear special events only when the special node's permissions allow it.
    let d3 = env.dom(3);
    d3.watch("@introduceDomain", "i").unwrap();
    assert_eq!(ev(&d3).path, "@introduceDomain");
    xs.write("/sync3", "").unwrap();
    xs.set_perms("/sync3", &[perm("r0")]).unwrap();
    d3.watch("/sync3", "sync").unwrap();
    assert_eq!(ev(&d3).token, "sync");
    xs.introduce(DomId(10), Pfn(1), EvtchnPort(1)).unwrap();
    assert!(events_until_sync(&d3, &xs, "/sync3").is_empty());
    xs.set_perms("@introduceDomain", &[perm("n0"), perm("r3")])
        .unwrap();
    xs.introduce(DomId(11), Pfn(1), EvtchnPort(1)).unwrap();
    // Changing the special node's permissions is itself an event on it.
    assert_eq!(
        events_until_sync(&d3, &xs, "/sync3"),
        vec![
            ("@introduceDomain".to_string(), "i".to_string()),
            ("@introduceDomain".to_string(), "i".to_string())
        ]
    );
}

#[test]
fn transactions_isolate_and_detect_conflicts() {
    let env = start();
    let xs = env.dom0();
    let other = env.dom0();
    xs.write("/t/a", "1").unwrap();
    xs.write("/t/b", "1").unwrap();
    // The transaction's writes are invisible outside it until commit.
    let tx = xs.transaction_start().unwrap();
    assert_eq!(tx.read("/t/a").unwrap(), b"1");
    tx.write("/t/a", "2").unwrap();
    tx.write("/t/new/deep", "n").unwrap();
    assert_eq!(other.read("/t/a").unwrap(), b"1");
    assert_eq!(errno(other.read("/t/new")), Errno::ENOENT);
    assert_eq!(tx.read("/t/new/deep").unwrap(), b"n");
    other.write("/t/b", "other").unwrap(); // not touched by tx: no conflict
    tx.commit().unwrap();
    assert_eq!(other.read("/t/a").unwrap(), b"2");
    assert_eq!(other.read("/t/new/deep").unwrap(), b"n");
    assert_eq!(other.read("/t/b").unwrap(), b"other");
    // A conflicting write makes the commit fail with EAGAIN and change nothing.
    let tx = xs.transaction_start().unwrap();
    assert_eq!(tx.read("/t/b").unwrap(), b"other");
    tx.write("/t/c", "from-tx").unwrap();
    other.write("/t/b", "again").unwrap();
    assert_eq!(errno(tx.commit()), Errno::EAGAIN);
    assert_eq!(errno(other.read("/t/c")), Errno::ENOENT);
    // A node created by someone else after we saw it missing conflicts too.
    let tx = xs.transaction_start().unwrap();
    assert_eq!(errno(tx.read("/t/late")), Errno::ENOENT);
    other.write("/t/late", "x").unwrap();
    tx.write("/t/unrelated", "y").unwrap();
    assert_eq!(errno(tx.commit()), Errno::EAGAIN);
    // As in C xenstored, a node enters the transaction at its first access (not at
    // TRANSACTION_START): a node created by others before that is seen, and no conflict.
    let tx = xs.transaction_start().unwrap();
    other.write("/t/v", "new").unwrap();
    assert_eq!(tx.read("/t/v").unwrap(), b"new");
    tx.commit().unwrap();
    // Later accesses see the transaction's copy (repeatable reads), and a change made
    // outside after the first access conflicts at commit.
    let tx = xs.transaction_start().unwrap();
    assert_eq!(tx.read("/t/v").unwrap(), b"new");
    other.write("/t/v", "newer").unwrap();
    assert_eq!(tx.read("/t/v").unwrap(), b"new");
    assert!(tx.directory("/t").unwrap().contains(&"v".to_string()));
    assert_eq!(errno(tx.commit()), Errno::EAGAIN);
    // A request that fails inside the transaction still fixes what it fetched.
    let tx = xs.transaction_start().unwrap();
    other.write("/t/w", "1").unwrap();
    assert_eq!(errno(tx.rm("/t/w/missing/deeper")), Errno::ENOENT);
    assert_eq!(tx.read("/t/w").unwrap(), b"1");
    tx.commit().unwrap();
    // Abort discards.
    let tx = xs.transaction_start().unwrap();
    tx.rm("/t/a").unwrap();
    tx.abort().unwrap();
    assert_eq!(xs.read("/t/a").unwrap(), b"2");
    // The retry helper: concurrent increments all land.
    xs.write("/ctr", "0").unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let c = env.dom0();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    c.transaction(|tx| {
                        let n: u32 = tx.read_string("/ctr")?.parse().unwrap();
                        tx.write("/ctr", (n + 1).to_string())
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(xs.read("/ctr").unwrap(), b"100");
    // Unknown transaction ids and nested starts.
    let raw = xs
        .request_raw(
            xenstore::Op::Read,
            xenstore::TxId(12345),
            b"/t/a\0".to_vec(),
        )
        .unwrap();
    assert_eq!(raw.error_errno(), Some(Ok(Errno::ENOENT)));
    let tx = xs.transaction_start().unwrap();
    let raw = xs
        .request_raw(xenstore::Op::TransactionStart, tx.id(), b"\0".to_vec())
        .unwrap();
    assert_eq!(raw.error_errno(), Some(Ok(Errno::EBUSY)));
    let raw = xs
        .request_raw(xenstore::Op::TransactionEnd, tx.id(), b"X\0".to_vec())
        .unwrap();
    assert_eq!(raw.error_errno(), Some(Ok(Errno::EINVAL)));
    tx.abort().unwrap();
}

#[test]
fn transaction_events_fire_only_on_commit() {
    let env = start();
    let xs = env.dom0();
    let w = env.dom0();
    w.watch("/sync", "sync").unwrap();
    assert_eq!(ev(&w).path, "/sync");
    w.watch("/tw", "tw").unwrap();
    assert_eq!(events_until_sync(&w, &xs, "/sync").len(), 1);
    let tx = xs.transaction_start().unwrap();
    tx.write("/tw/a", "1").unwrap();
    assert!(events_until_sync(&w, &xs, "/sync").is_empty());
    tx.commit().unwrap();
    assert_eq!(
        events_until_sync(&w, &xs, "/sync"),
        vec![("/tw/a".to_string(), "tw".to_string())]
    );
    let tx = xs.transaction_start().unwrap();
    tx.write("/tw/b", "1").unwrap();
    tx.abort().unwrap();
    assert!(events_until_sync(&w, &xs, "/sync").is_empty());
}

#[test]
fn directory_part_pages_through_ten_thousand_children() {
    let env = start();
    let xs = env.dom0();
    xs.transaction(|tx| {
        for i in 0..10_000 {
            tx.write(&format!("/big/child-{i:05}"), "")?;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(errno(xs.directory("/big")), Errno::E2BIG);
    let all = xs.directory_all("/big").unwrap();
    assert_eq!(all.len(), 10_000);
    assert_eq!(all[0], "child-00000");
    assert_eq!(all[9_999], "child-09999");
    let (g1, first) = xs.directory_part("/big", 0).unwrap();
    assert!(!first.is_empty() && first.iter().all(|n| !n.is_empty()));
    let (g2, _) = xs.directory_part("/big", 0).unwrap();
    assert_eq!(g1, g2);
    xs.write("/big/zz", "").unwrap();
    let (g3, _) = xs.directory_part("/big", 0).unwrap();
    assert_ne!(g1, g3);
    // Past the end: just the generation and the end marker.
    let (_, tail) = xs.directory_part("/big", 1 << 30).unwrap();
    assert_eq!(tail, vec![""]);
}

#[test]
fn quotas_bound_unprivileged_domains() {
    let env = start_with(|c| {
        c.quotas.nodes = 20;
        c.quotas.watches = 3;
        c.quotas.transactions = 2;
        c.quotas.perms = 3;
        c.quotas.node_size = 300;
        c.quotas.path_max = 64;
    });
    let xs = env.dom0();
    xs.mkdir("/local/domain/6").unwrap();
    xs.set_perms("/local/domain/6", &[perm("n6")]).unwrap();
    let d6 = env.dom(6);
    // Nodes.
    let mut created = 0;
    let err = loop {
        match d6.write(&format!("n{created}"), "") {
            Ok(()) => created += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err.errno(), Some(Errno::ENOSPC));
    assert_eq!(created, 19); // 20 including /local/domain/6 it now owns
    d6.rm("n0").unwrap();
    d6.write("again", "").unwrap();
    // Node size.
    assert_eq!(errno(d6.write("n1", vec![b'x'; 400])), Errno::ENOSPC);
    d6.write("n1", vec![b'x'; 200]).unwrap();
    // Permissions per node.
    assert_eq!(
        errno(d6.set_perms("n1", &[perm("n6"), perm("r1"), perm("r2"), perm("r3")])),
        Errno::ENOSPC
    );
    d6.set_perms("n1", &[perm("n6"), perm("r1"), perm("r2")])
        .unwrap();
    // Path length below the home.
    assert_eq!(errno(d6.read(&"p".repeat(65))), Errno::EINVAL);
    // Watches.
    for i in 0..3 {
        d6.watch(&format!("w{i}"), "t").unwrap();
    }
    assert_eq!(errno(d6.watch("w3", "t")), Errno::E2BIG);
    // Transactions.
    let t1 = d6.transaction_start().unwrap();
    let t2 = d6.transaction_start().unwrap();
    assert_eq!(
        d6.transaction_start().unwrap_err().errno(),
        Some(Errno::ENOSPC)
    );
    drop((t1, t2));
    d6.transaction_start().unwrap().abort().unwrap();
    // Dom0 is exempt.
    for i in 0..30 {
        xs.write(&format!("/local/domain/6/dom0-{i}"), vec![b'y'; 1000])
            .unwrap();
    }
}

#[test]
fn ring_connected_domain_is_served() {
    use std::sync::{Arc, Mutex};

    use xen_types::mem::{PageBuf, SharedMemory};
    use xenstore::ring::{Doorbell, EventfdDoorbell, Ring, RingTransport, Side};

    let page = Arc::new(PageBuf::new(1).unwrap());
    let (guest_bell, server_bell) = EventfdDoorbell::pair().unwrap();
    let slot: Arc<Mutex<Option<EventfdDoorbell>>> = Arc::new(Mutex::new(Some(server_bell)));
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = xenstored::Daemon::new(config(&dir)).unwrap();
    let (p2, s2) = (page.clone(), slot.clone());
    daemon.set_ring_connector(Arc::new(move |domid, gfn, port| {
        assert_eq!((domid, gfn, port), (DomId(12), 4242, EvtchnPort(7)));
        let bell = s2.lock().unwrap().take().expect("connected once");
        let mem: Arc<dyn SharedMemory> = p2.clone();
        let bell: Arc<dyn Doorbell> = Arc::new(bell);
        Ok((mem, bell))
    }));
    let handle = daemon.spawn().unwrap();
    let xs = xenstore::Client::connect_socket(handle.socket_path()).unwrap();
    xs.mkdir("/local/domain/12").unwrap();
    xs.set_perms("/local/domain/12", &[perm("n12")]).unwrap();
    xs.introduce(DomId(12), Pfn(4242), EvtchnPort(7)).unwrap();
    let guest = xenstore::Client::with_transport(RingTransport::new(
        Ring::new(page.clone(), Side::Guest),
        guest_bell,
    ))
    .unwrap();
    guest.write("device/vbd/0/state", "1").unwrap();
    assert_eq!(
        xs.read("/local/domain/12/device/vbd/0/state").unwrap(),
        b"1"
    );
    // Larger than the ring: crosses it in pieces both ways.
    let big = vec![b'z'; 1500];
    guest.write("big", &big).unwrap();
    assert_eq!(guest.read("big").unwrap(), big);
    assert_eq!(errno(guest.read("/local/domain/0")), Errno::EACCES);
    assert_ne!(
        Ring::new(page, Side::Guest).server_features().unwrap() & 2,
        0
    );
    guest.watch("device", "dev").unwrap();
    assert_eq!(ev(&guest).path, "device");
    xs.write("/local/domain/12/device/x", "").unwrap();
    assert_eq!(ev(&guest).path, "device/x");
    // Releasing the domain closes its connection (the guest cannot see that on a ring:
    // look at the daemon's connection count).
    let conns = |xs: &xenstore::Client| {
        let s = String::from_utf8(xs.control(&["stats"]).unwrap()).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("connections: "))
            .unwrap()
            .trim_end_matches('\0')
            .parse::<u32>()
            .unwrap()
    };
    assert_eq!(conns(&xs), 2);
    xs.release(DomId(12)).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while conns(&xs) != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "ring connection not closed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn control_and_domain_path() {
    let env = start();
    let xs = env.dom0();
    assert_eq!(xs.control(&["check"]).unwrap(), b"OK\0");
    assert!(String::from_utf8(xs.control(&["quota"]).unwrap())
        .unwrap()
        .contains("nodes: 1000"));
    assert_eq!(errno(xs.control(&["bogus"])), Errno::EINVAL);
    assert_eq!(
        errno(xs.get_domain_path(DomId(1)).and(xs.read("/nope"))),
        Errno::ENOENT
    );
    let raw = xs
        .request_raw(
            xenstore::Op::GetDomainPath,
            xenstore::TxId::NONE,
            b"abc\0".to_vec(),
        )
        .unwrap();
    assert_eq!(raw.error_errno(), Some(Ok(Errno::EINVAL)));
    assert_eq!(Access::Both.letter(), 'b');
}

#[test]
fn simulated_guest_over_grant_and_event_channel() {
    use evtchn::Evtchn;
    use xen_types::{GrantRef, Pages};
    use xenstore::ring::{EvtchnDoorbell, Ring, RingTransport, Side};

    let host = xen_sim::Host::default();
    let cfg = xen_sim::domain::small_pv_guest(1023);
    let g = host.create_domain(DomId::INVALID, &cfg).unwrap();
    host.set_max_mem_kb(g, 8192).unwrap();
    host.increase_reservation(g, Pages(16)).unwrap();
    // What the domain builder and toolstack do: a ring page, grant 1 to dom0, an unbound
    // event channel for dom0.
    let pfn = host.alloc_pages(g, 1).unwrap()[0];
    host.grant_access_at(
        g,
        GrantRef(xen_sys::GNTTAB_RESERVED_XENSTORE),
        DomId::DOM0,
        pfn,
        false,
    )
    .unwrap();
    let guest_ev = Evtchn::open_sim(&host, g).unwrap();
    let port = guest_ev.bind_unbound_port(DomId::DOM0).unwrap();
    let page = host.guest_pages(g, &[pfn]).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut daemon = xenstored::Daemon::new(config(&dir)).unwrap();
    let h2 = host.clone();
    daemon.set_ring_connector(xenstored::grant_ring_connector(
        gnttab::Gnttab::open_sim(&host, DomId::DOM0).unwrap(),
        move || Evtchn::open_sim(&h2, DomId::DOM0),
    ));
    let handle = daemon.spawn().unwrap();
    let xs = xenstore::Client::connect_socket(handle.socket_path()).unwrap();
    let home = xs.get_domain_path(g).unwrap();
    xs.mkdir(&home).unwrap();
    xs.set_perms(&home, &[Perm::new(g, Access::None)]).unwrap();
    xs.introduce(g, Pfn(pfn.0), port).unwrap();
    let guest = xenstore::Client::with_transport(RingTransport::new(
        Ring::new(page, Side::Guest),
        EvtchnDoorbell::new(guest_ev, port),
    ))
    .unwrap();
    guest.write("name", "simulated").unwrap();
    assert_eq!(xs.read(&format!("{home}/name")).unwrap(), b"simulated");
    assert_eq!(guest.read(&format!("{home}/name")).unwrap(), b"simulated");
    assert_eq!(errno(guest.read("/tool/xenstored")), Errno::EACCES);
}

#[test]
fn async_client_against_the_daemon() {
    use xenstore::aio::AsyncClient;

    let env = start();
    let sock = env.handle.socket_path().to_path_buf();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (xs, mut events) = AsyncClient::connect_socket(&sock).await.unwrap();
        xs.write("/async/a", "1").await.unwrap();
        assert_eq!(xs.read("/async/a").await.unwrap(), b"1");
        assert_eq!(xs.directory("/async").await.unwrap(), vec!["a"]);
        xs.watch("/async", "t").await.unwrap();
        let first = tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.path, "/async");
        let tx = xs.transaction_start().await.unwrap();
        xs.write_in(tx, "/async/b", "2").await.unwrap();
        assert!(matches!(
            xs.read("/async/b").await,
            Err(Error::Xs(Errno::ENOENT))
        ));
        xs.transaction_end(tx, true).await.unwrap();
        let ev = tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((ev.path.as_str(), ev.token.as_str()), ("/async/b", "t"));
        assert_eq!(xs.get_perms("/async/b").await.unwrap(), vec![perm("n0")]);
        assert!(xs.is_domain_introduced(DomId(0)).await.unwrap());
        let e = xs.rm("/nope/x").await.unwrap_err();
        assert!(AsyncClient::is_conflict(&Error::Xs(Errno::EAGAIN)));
        assert_eq!(e.errno(), Some(Errno::ENOENT));
    });
}

#[test]
fn ring_served_from_start_answers_requests_queued_before_it_ran() {
    use std::sync::Arc;

    use xen_types::mem::{PageBuf, SharedMemory};
    use xenstore::ring::{Doorbell, EventfdDoorbell, Ring, RingTransport, Side};
    use xenstore::wire::{Message, Op, TxId};

    // Like dom0's kernel, which zeroes its page and may queue requests before xenstored
    // starts.
    let page = Arc::new(PageBuf::new(1).unwrap());
    let (guest_bell, server_bell) = EventfdDoorbell::pair().unwrap();
    let guest_ring = Ring::new(page.clone(), Side::Guest);
    let req = Message::request(Op::Write, 9, TxId::NONE, &[b"/early", b"v"], true).unwrap();
    let bytes = req.to_bytes();
    assert_eq!(guest_ring.write(&bytes).unwrap(), bytes.len());

    let dir = tempfile::tempdir().unwrap();
    let mut daemon = xenstored::Daemon::new(config(&dir)).unwrap();
    let mem: Arc<dyn SharedMemory> = page.clone();
    let bell: Arc<dyn Doorbell> = Arc::new(server_bell);
    daemon.serve_ring(DomId::DOM0, mem, bell);
    let handle = daemon.spawn().unwrap();
    // Kicked at start, then answered.
    assert!(guest_bell.wait(Some(WAIT)).unwrap(), "no kick at start");
    let mut reply = Vec::new();
    let mut dec = xenstore::wire::Decoder::new();
    let deadline = std::time::Instant::now() + WAIT;
    let msg = loop {
        let mut buf = [0u8; 256];
        let n = guest_ring.read(&mut buf).unwrap();
        dec.feed(&buf[..n]);
        reply.extend_from_slice(&buf[..n]);
        if let Some(m) = dec.next_message().unwrap() {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "no reply: {reply:?}");
        let _ = guest_bell.wait(Some(std::time::Duration::from_millis(20)));
    };
    assert_eq!((msg.header.req_id, &msg.payload[..]), (9, &b"OK\0"[..]));
    let xs = xenstore::Client::connect_socket(handle.socket_path()).unwrap();
    assert_eq!(xs.read("/early").unwrap(), b"v");
    // The ring's client is served as dom0: privileged.
    let dom0 =
        xenstore::Client::with_transport(RingTransport::new(guest_ring, guest_bell)).unwrap();
    dom0.write("/local/domain/5/x", "1").unwrap();
    dom0.set_perms("/local/domain/5/x", &[perm("n5")]).unwrap();
    assert_eq!(dom0.read("/local/domain/5/x").unwrap(), b"1");
    assert_eq!(xs.get_perms("/local/domain/5/x").unwrap(), vec![perm("n5")]);
}

#[test]
fn dead_domains_are_released_on_domain_exception() {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    use xenstore::ring::{Doorbell, EventfdDoorbell};

    let (hypervisor, virq) = EventfdDoorbell::pair().unwrap();
    let dead: Arc<Mutex<HashSet<DomId>>> = Arc::default();
    let down: Arc<Mutex<HashSet<DomId>>> = Arc::default();
    let asked: Arc<Mutex<Vec<Vec<DomId>>>> = Arc::default();
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = xenstored::Daemon::new(config(&dir)).unwrap();
    let (d2, a2, s2) = (dead.clone(), asked.clone(), down.clone());
    let virq: Arc<dyn Doorbell> = Arc::new(virq);
    daemon.watch_domains(xenstored::DomainWatch {
        virq,
        probe: Box::new(move |doms| {
            a2.lock().unwrap().push(doms.to_vec());
            let (dead, down) = (d2.lock().unwrap(), s2.lock().unwrap());
            doms.iter()
                .filter_map(|d| {
                    if dead.contains(d) {
                        Some((*d, xenstored::DomainFate::Gone))
                    } else if down.contains(d) {
                        Some((*d, xenstored::DomainFate::ShutDown))
                    } else {
                        None
                    }
                })
                .collect()
        }),
    });
    let handle = daemon.spawn().unwrap();
    let xs = xenstore::Client::connect_socket(handle.socket_path()).unwrap();
    for d in [5u16, 6] {
        xs.write(&format!("/local/domain/{d}/name"), "g").unwrap();
        xs.set_perms(&format!("/local/domain/{d}"), &[perm(&format!("n{d}"))])
            .unwrap();
        xs.set_perms(
            &format!("/local/domain/{d}/name"),
            &[perm(&format!("n{d}"))],
        )
        .unwrap();
        xs.introduce(DomId(d), Pfn(1), EvtchnPort(3)).unwrap();
    }
    xs.watch("@releaseDomain", "r").unwrap();
    assert_eq!(ev(&xs).path, "@releaseDomain");
    // An exception for a domain that is still alive releases nothing.
    hypervisor.notify().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while asked.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "probe never called");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(asked.lock().unwrap()[0], vec![DomId(5), DomId(6)]);
    assert!(xs.is_domain_introduced(DomId(5)).unwrap());
    // Domain 5 shuts down: @releaseDomain fires once, the domain stays introduced.
    down.lock().unwrap().insert(DomId(5));
    hypervisor.notify().unwrap();
    assert_eq!(ev(&xs).path, "@releaseDomain");
    assert!(xs.is_domain_introduced(DomId(5)).unwrap());
    assert_eq!(xs.read("/local/domain/5/name").unwrap(), b"g");
    // RESUME (the domain came back from suspend) re-arms it: a new shutdown fires again.
    xs.resume(DomId(5)).unwrap();
    hypervisor.notify().unwrap();
    assert_eq!(ev(&xs).path, "@releaseDomain");
    hypervisor.notify().unwrap();
    // Domain 5 dies: released, its nodes removed, @releaseDomain fired; 6 stays.
    dead.lock().unwrap().insert(DomId(5));
    hypervisor.notify().unwrap();
    assert_eq!(ev(&xs).path, "@releaseDomain");
    assert!(!xs.is_domain_introduced(DomId(5)).unwrap());
    assert!(xs.is_domain_introduced(DomId(6)).unwrap());
    assert_eq!(errno(xs.read("/local/domain/5/name")), Errno::ENOENT);
    assert_eq!(xs.read("/local/domain/6/name").unwrap(), b"g");
    // No second release on a later exception.
    hypervisor.notify().unwrap();
    xs.write("/marker", "").unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while asked.lock().unwrap().last().unwrap() != &vec![DomId(6)] {
        assert!(
            std::time::Instant::now() < deadline,
            "probe not called again"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // No event was sent since: the next one is the watch's own firing on re-watch.
    xs.unwatch("@releaseDomain", "r").unwrap();
    xs.watch("@releaseDomain", "r2").unwrap();
    assert_eq!(ev(&xs).token, "r2");
}
