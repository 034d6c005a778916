//! The blocking client against a scripted in-process server (the daemon's own tests drive
//! the client against the real xenstored).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use xen_types::mem::PageBuf;
use xen_types::Errno;
use xenstore::ring::{Doorbell, EventfdDoorbell, Ring, RingTransport, Side};
use xenstore::wire::{Decoder, Message, Op};
use xenstore::{Client, Error};

/// Answers each request: READ of "/missing" -> ENOENT, READ -> "v:<path>", anything else OK.
/// Before every reply it sends a watch event, so events interleave with replies.
fn serve(req: &Message) -> Vec<Message> {
    let ev = Message::watch_event(b"/ev", b"tok").unwrap();
    let parts = req.strings().unwrap_or_default();
    let reply = match req.op().unwrap() {
        Op::Read if parts.first() == Some(&&b"/missing"[..]) => {
            Message::error_reply(&req.header, Errno::ENOENT)
        }
        Op::Read => Message::reply(&req.header, [b"v:", parts[0]].concat()),
        Op::TransactionStart => Message::reply(&req.header, b"42\0".to_vec()),
        _ => Message::reply(&req.header, b"OK\0".to_vec()),
    };
    vec![ev, reply]
}

fn socket_server(mut s: UnixStream) {
    let mut dec = Decoder::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        dec.feed(&buf[..n]);
        while let Some(m) = dec.next_message().unwrap() {
            for r in serve(&m) {
                s.write_all(&r.to_bytes()).unwrap();
            }
        }
    }
}

#[test]
fn replies_are_matched_and_events_queued() {
    let (a, b) = UnixStream::pair().unwrap();
    thread::spawn(move || socket_server(b));
    let xs = Arc::new(Client::with_transport(xenstore::FdTransport::from(a)).unwrap());
    assert_eq!(xs.read("/x").unwrap(), b"v:/x");
    assert!(matches!(xs.read("/missing"), Err(Error::Xs(Errno::ENOENT))));
    assert!(!xs.exists("/missing").unwrap());
    xs.write("/a", b"bin\0ary").unwrap();
    // Several threads share the client.
    let hs: Vec<_> = (0..4)
        .map(|i| {
            let xs = xs.clone();
            thread::spawn(move || {
                for j in 0..50 {
                    let p = format!("/t{i}/{j}");
                    assert_eq!(xs.read(&p).unwrap(), format!("v:{p}").into_bytes());
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let ev = xs
        .next_event_timeout(Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert_eq!((ev.path.as_str(), ev.token.as_str()), ("/ev", "tok"));
    let tx = xs.transaction_start().unwrap();
    assert_eq!(tx.id().0, 42);
    tx.commit().unwrap();
}

#[test]
fn closed_connection_is_an_error_not_a_hang() {
    let (a, b) = UnixStream::pair().unwrap();
    drop(b);
    let xs = Client::with_transport(xenstore::FdTransport::from(a)).unwrap();
    assert!(xs.read("/x").is_err());
    assert!(matches!(xs.next_event(), Err(Error::Closed(_))));
}

#[test]
fn oversize_reply_kills_the_connection() {
    let (a, mut b) = UnixStream::pair().unwrap();
    let xs = Client::with_transport(xenstore::FdTransport::from(a)).unwrap();
    let h = thread::spawn(move || {
        let mut buf = [0u8; 64];
        let _ = b.read(&mut buf).unwrap();
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&(Op::Read.raw()).to_ne_bytes());
        hdr[4..8].copy_from_slice(&1u32.to_ne_bytes());
        hdr[12..16].copy_from_slice(&100_000u32.to_ne_bytes());
        b.write_all(&hdr).unwrap();
        b
    });
    assert!(matches!(xs.read("/x"), Err(Error::Closed(_))));
    drop(h.join());
}

#[test]
fn client_over_a_ring_page() {
    let page = Arc::new(PageBuf::new(1).unwrap());
    let (gbell, sbell) = EventfdDoorbell::pair().unwrap();
    let server = Ring::new(page.clone(), Side::Server);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let srv = thread::spawn(move || {
        let mut dec = Decoder::new();
        let mut buf = [0u8; 512];
        let mut out: Vec<u8> = Vec::new();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let n = server.read(&mut buf).unwrap();
            if n > 0 {
                dec.feed(&buf[..n]);
                while let Some(m) = dec.next_message().unwrap() {
                    for r in serve(&m) {
                        out.extend_from_slice(&r.to_bytes());
                    }
                }
                sbell.notify().unwrap();
            }
            if !out.is_empty() {
                let w = server.write(&out).unwrap();
                out.drain(..w);
                sbell.notify().unwrap();
            }
            if n == 0 {
                sbell.wait(Some(Duration::from_millis(5))).unwrap();
            }
        }
    });
    let xs =
        Client::with_transport(RingTransport::new(Ring::new(page, Side::Guest), gbell)).unwrap();
    // Requests much larger than the 1 KiB ring cross it in pieces.
    let long = "/".to_string() + &"a".repeat(3000);
    assert_eq!(xs.read(&long).unwrap(), format!("v:{long}").into_bytes());
    for i in 0..100 {
        let p = format!("/k{i}");
        assert_eq!(xs.read(&p).unwrap(), format!("v:{p}").into_bytes());
    }
    assert!(xs
        .next_event_timeout(Duration::from_secs(5))
        .unwrap()
        .is_some());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    srv.join().unwrap();
}
