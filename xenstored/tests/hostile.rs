//! Hostile and malformed input over raw sockets: every bad message gets the error the
//! protocol prescribes or closes only the offending connection; other clients keep being
//! served.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use xen_types::Errno;
use xenstore::wire::{Decoder, Header, Message, Op, TxId};

struct Raw {
    s: UnixStream,
    dec: Decoder,
}

impl Raw {
    fn new(s: UnixStream) -> Raw {
        s.set_read_timeout(Some(WAIT)).unwrap();
        Raw {
            s,
            dec: Decoder::new(),
        }
    }

    fn send(&mut self, ty: u32, tx: u32, payload: &[u8]) {
        let h = Header {
            ty,
            req_id: 77,
            tx_id: TxId(tx),
            len: payload.len() as u32,
        };
        self.s.write_all(&h.to_bytes()).unwrap();
        self.s.write_all(payload).unwrap();
    }

    /// The next message, or `None` if the daemon closed the connection.
    fn recv(&mut self) -> Option<Message> {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(m) = self.dec.next_message().unwrap() {
                return Some(m);
            }
            match self.s.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.dec.feed(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("no reply within the timeout: {e}"),
            }
        }
    }

    fn errno_of(&mut self, ty: u32, tx: u32, payload: &[u8]) -> Option<Errno> {
        self.send(ty, tx, payload);
        let m = self.recv().expect("a reply");
        assert_eq!(m.header.req_id, 77);
        m.error_errno().map(|r| r.unwrap())
    }
}

#[test]
fn malformed_requests_get_protocol_errors() {
    let env = start();
    let mut r = Raw::new(UnixStream::connect(env.handle.socket_path()).unwrap());
    let read = Op::Read.raw();
    assert_eq!(r.errno_of(read, 0, b"/tool"), Some(Errno::EINVAL)); // no NUL
    assert_eq!(r.errno_of(read, 0, b""), Some(Errno::EINVAL));
    assert_eq!(r.errno_of(read, 0, b"/tool\0extra\0"), Some(Errno::EINVAL));
    assert_eq!(r.errno_of(read, 0, b"/t\xffol\0"), Some(Errno::EINVAL));
    assert_eq!(r.errno_of(read, 0, b"/tool\0"), None);
    assert_eq!(
        r.errno_of(Op::Write.raw(), 0, b"/no-nul"),
        Some(Errno::EINVAL)
    );
    assert_eq!(r.errno_of(20, 0, b""), Some(Errno::ENOSYS)); // removed XS_RESTRICT
    assert_eq!(r.errno_of(23, 0, b""), Some(Errno::ENOSYS));
    assert_eq!(r.errno_of(0xffff, 0, b""), Some(Errno::ENOSYS));
    assert_eq!(r.errno_of(u32::MAX, 0, b""), Some(Errno::ENOSYS));
    assert_eq!(
        r.errno_of(Op::WatchEvent.raw(), 0, b"/a\0t\0"),
        Some(Errno::ENOSYS)
    );
    assert_eq!(
        r.errno_of(Op::Error.raw(), 0, b"EINVAL\0"),
        Some(Errno::ENOSYS)
    );
    assert_eq!(r.errno_of(read, 999, b"/tool\0"), Some(Errno::ENOENT)); // unknown tx
    assert_eq!(
        r.errno_of(Op::TransactionEnd.raw(), 0, b"T\0"),
        Some(Errno::ENOENT)
    );
    assert_eq!(
        r.errno_of(Op::SetPerms.raw(), 0, b"/tool\0"),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        r.errno_of(Op::SetPerms.raw(), 0, b"/tool\0q0\0"),
        Some(Errno::EINVAL)
    );
    // Well-formed but past 16 bits: no such domain (as C xenstored answers).
    assert_eq!(
        r.errno_of(Op::SetPerms.raw(), 0, b"/tool\0r99999\0"),
        Some(Errno::ENOENT)
    );
    assert_eq!(
        r.errno_of(Op::SetPerms.raw(), 0, b"/tool\0r9x\0"),
        Some(Errno::EINVAL)
    );
    assert_eq!(r.errno_of(Op::Watch.raw(), 0, b"/a\0"), Some(Errno::EINVAL));
    assert_eq!(
        r.errno_of(Op::Watch.raw(), 0, b"/a\0t\0-1\0"),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        r.errno_of(Op::DirectoryPart.raw(), 0, b"/tool\0x\0"),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        r.errno_of(Op::Introduce.raw(), 0, b"5\0"),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        r.errno_of(Op::Introduce.raw(), 0, b"0\x001\x002\0"),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        r.errno_of(Op::Release.raw(), 0, b"70000\0"),
        Some(Errno::EINVAL)
    );
    // The connection is still fine.
    assert_eq!(r.errno_of(Op::Write.raw(), 0, b"/ok\0v"), None);
}

#[test]
fn byte_at_a_time_requests_are_reassembled() {
    let env = start();
    let mut r = Raw::new(UnixStream::connect(env.handle.socket_path()).unwrap());
    let m = Message::request(Op::Write, 5, TxId::NONE, &[b"/slow", b"value"], true).unwrap();
    for b in m.to_bytes() {
        r.s.write_all(&[b]).unwrap();
        r.s.flush().unwrap();
    }
    let reply = r.recv().unwrap();
    assert_eq!((reply.header.req_id, &reply.payload[..]), (5, &b"OK\0"[..]));
    assert_eq!(env.dom0().read("/slow").unwrap(), b"value");
}

#[test]
fn oversize_length_closes_only_that_connection() {
    let env = start();
    let good = env.dom0();
    good.write("/x", "1").unwrap();
    let mut bad = Raw::new(UnixStream::connect(env.handle.socket_path()).unwrap());
    let h = Header {
        ty: Op::Write.raw(),
        req_id: 1,
        tx_id: TxId::NONE,
        len: 4097,
    };
    bad.s.write_all(&h.to_bytes()).unwrap();
    let _ = bad.s.write_all(&[b'a'; 100]);
    assert!(bad.recv().is_none(), "connection must be closed");
    assert_eq!(good.read("/x").unwrap(), b"1");
    // A maximal (4096-byte) payload is fine.
    let mut v = b"/max\0".to_vec();
    v.resize(4096, b'm');
    let mut ok = Raw::new(UnixStream::connect(env.handle.socket_path()).unwrap());
    assert_eq!(ok.errno_of(Op::Write.raw(), 0, &v), None);
    assert_eq!(good.read("/max").unwrap().len(), 4091);
}

#[test]
fn a_client_that_never_reads_is_dropped_and_others_are_served() {
    let env = start_with(|c| c.quotas.outstanding_bytes = 64 * 1024);
    let xs = env.dom0();
    // A watcher that never reads: its queue grows until the daemon drops it.
    let deaf = UnixStream::connect(env.handle.socket_path()).unwrap();
    let mut deaf_raw = Raw::new(deaf.try_clone().unwrap());
    deaf_raw.send(Op::Watch.raw(), 0, b"/flood\0t\0");
    // A flooder that sends requests without reading replies.
    let mut flood = UnixStream::connect(env.handle.socket_path()).unwrap();
    flood
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let req = Message::request(Op::Read, 1, TxId::NONE, &[b"/tool"], false)
        .unwrap()
        .to_bytes();
    for _ in 0..2000 {
        if flood.write_all(&req).is_err() {
            break; // the daemon stopped reading us: backpressure
        }
    }
    for i in 0..3000 {
        xs.write(&format!("/flood/{}", i % 10), vec![b'v'; 100])
            .unwrap();
    }
    // The daemon is still responsive for everyone else.
    assert_eq!(xs.read("/flood/1").unwrap().len(), 100);
    let other = env.dom0();
    assert_eq!(other.read("/flood/2").unwrap().len(), 100);
    // And the deaf watcher was disconnected: draining its socket ends in EOF.
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    let mut s = deaf;
    s.set_read_timeout(Some(WAIT)).unwrap();
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => panic!("deaf client not disconnected: {e}"),
        }
    }
    assert!(total < 3000 * 130, "it did not receive everything");
}

#[test]
fn a_thousand_idle_connections_do_not_block_active_ones() {
    let env = start();
    let idle: Vec<UnixStream> = (0..1000)
        .map(|_| UnixStream::connect(env.handle.socket_path()).unwrap())
        .collect();
    let xs = env.dom0();
    for i in 0..200 {
        xs.write(&format!("/busy/{i}"), "x").unwrap();
    }
    assert_eq!(xs.directory("/busy").unwrap().len(), 200);
    let stats = String::from_utf8(xs.control(&["stats"]).unwrap()).unwrap();
    assert!(stats.contains("connections: 1001"), "{stats}");
    drop(idle);
}

#[test]
fn unprivileged_domain_cannot_starve_others_with_transactions_or_watches() {
    let env = start();
    let xs = env.dom0();
    xs.mkdir("/local/domain/9").unwrap();
    xs.set_perms("/local/domain/9", &["n9".parse().unwrap()])
        .unwrap();
    let d9 = env.dom(9);
    let mut n = 0;
    while d9.watch(&format!("w{n}"), "t").is_ok() {
        n += 1;
        assert!(n <= 128, "watch quota not enforced");
    }
    assert_eq!(n, 128);
    // A transaction touching too many nodes is refused, not buffered without bound.
    let tx = d9.transaction_start().unwrap();
    let mut err = None;
    for i in 0..2000 {
        if let Err(e) = tx.read(&format!("missing-{i}")) {
            if e.errno() != Some(Errno::ENOENT) {
                err = e.errno();
                break;
            }
        }
    }
    assert_eq!(err, Some(Errno::ENOSPC));
    tx.abort().unwrap();
    xs.write("/still/fine", "yes").unwrap();
}

#[test]
fn replies_larger_than_the_socket_buffer_arrive_whole_and_in_order() {
    let env = start();
    let xs = env.dom0();
    let value = vec![b'z'; 4000];
    xs.write("/big", value.clone()).unwrap();
    let s = UnixStream::connect(env.handle.socket_path()).unwrap();
    let mut rx = Raw::new(s.try_clone().unwrap());
    // A watch on this connection, fired by another client while its replies pile up.
    rx.send(Op::Watch.raw(), 0, b"/w\0tok\0");
    let n = 600u32; // 600 x 4 KB of replies: far more than a socket buffer holds
    let mut tx = s;
    let writer = std::thread::spawn(move || {
        for i in 0..n {
            let m = Message::request(Op::Read, 1000 + i, TxId::NONE, &[b"/big"], false).unwrap();
            tx.write_all(&m.to_bytes()).unwrap();
        }
    });
    let mut next = 1000u32;
    let mut events = 0;
    while next < 1000 + n {
        let m = rx.recv().expect("the daemon kept the connection");
        match Op::try_from(m.header.ty).unwrap() {
            Op::Watch => assert_eq!(m.payload, b"OK\0"),
            Op::WatchEvent => events += 1,
            Op::Read => {
                assert_eq!(m.header.req_id, next, "replies in request order");
                assert_eq!(m.payload, value);
                next += 1;
                if next == 1001 {
                    // Most of the 2.4 MB of replies are still held by the daemon: the
                    // event joins that queue.
                    xs.write("/w", "1").unwrap();
                }
            }
            op => panic!("unexpected {op}"),
        }
    }
    writer.join().unwrap();
    while events < 2 {
        let m = rx.recv().expect("the watch event");
        assert_eq!(m.header.ty, Op::WatchEvent.raw());
        events += 1;
    }
    assert_eq!(events, 2, "the initial event and the one for the write");
}
