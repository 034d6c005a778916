//! The fan-out floor: a minimal server that is to `watch-fanout` what the echo
//! server is to the request workloads. It keeps no store: it answers every
//! request at once (`OK`-style, as the echo server), remembers each `WATCH`
//! (its connection and the encoded event), sends the initial event, and on
//! every `WRITE` sends its reply and then the remembered event to every
//! watcher, one non-blocking `write` each from one thread. What a watch
//! fan-out costs beyond this is the daemon's own work.

use std::cell::RefCell;
use std::io;
use std::path::Path;
use std::rc::Rc;

use benches::echo::{reply_payload, LocalServer};
use benches::frame::{self, Decoder};
use tokio::io::AsyncReadExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;

/// A running floor server, stopped on drop.
pub struct FanoutFloor(LocalServer);

type Watchers = Rc<RefCell<Vec<(usize, Rc<OwnedWriteHalf>, Vec<u8>)>>>;

impl FanoutFloor {
    /// Binds `path` and serves it on a new thread.
    pub fn start(path: &Path) -> io::Result<Self> {
        LocalServer::start(path, "xs-fanout-floor", || {
            let watchers: Watchers = Rc::default();
            let mut next = 0usize;
            move |s| {
                next += 1;
                serve(s, next, watchers.clone())
            }
        })
        .map(FanoutFloor)
    }

    /// The socket path.
    pub fn socket_path(&self) -> &Path {
        self.0.socket_path()
    }
}

async fn write_all(w: &OwnedWriteHalf, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match w.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => w.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn serve(s: UnixStream, id: usize, watchers: Watchers) {
    let (mut rd, wr) = s.into_split();
    let wr = Rc::new(wr);
    let mut dec = Decoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(4096);
    let mut fan = false;
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        dec.extend(&buf[..n]);
        out.clear();
        while let Ok(Some((h, r))) = dec.next_frame() {
            let p = dec.payload(r);
            // `OK` for a WATCH, as for every request but the few the echo server answers
            // otherwise.
            frame::encode(&mut out, h.ty, h.req_id, h.tx_id.0, &[reply_payload(h.ty)]);
            match h.ty {
                xen_sys::XS_WATCH => {
                    // payload: path NUL token NUL; the event carries the same.
                    let mut ev = Vec::new();
                    frame::encode(&mut ev, xen_sys::XS_WATCH_EVENT, 0, 0, &[p]);
                    out.extend_from_slice(&ev);
                    watchers.borrow_mut().push((id, wr.clone(), ev));
                }
                xen_sys::XS_WRITE => fan = true,
                _ => {}
            }
        }
        if write_all(&wr, &out).await.is_err() {
            break;
        }
        if std::mem::take(&mut fan) {
            for (_, w, ev) in watchers.borrow().iter() {
                let done: usize = w.try_write(ev).unwrap_or_default();
                if done < ev.len() {
                    // The socket did not take the whole event: finish it in a task.
                    let (w, rest) = (w.clone(), ev[done..].to_vec());
                    tokio::task::spawn_local(async move {
                        let _ = write_all(&w, &rest).await;
                    });
                }
            }
        }
    }
    watchers.borrow_mut().retain(|(c, _, _)| *c != id);
}
