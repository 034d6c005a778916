//! A TCP proxy on loopback that can be cut and healed: each pool host reaches each etcd
//! member through its own, so one host can be partitioned from etcd while it still talks
//! to the other hosts.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{io as ioerr, Result};

/// One proxy: `127.0.0.1:<port>` to `127.0.0.1:<upstream>`.
pub struct Proxy {
    /// The port it listens on.
    pub port: u16,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Starts a proxy to `upstream`. It listens only while the upstream answers and the
    /// proxy is not cut, so a client sees a refused connection as it would from the member
    /// itself (etcd's client then leaves that endpoint out).
    pub fn start(upstream: u16) -> Result<Proxy> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(ioerr("bind", "127.0.0.1:0"))?;
        let port = l.local_addr().map_err(ioerr("bind", "127.0.0.1:0"))?.port();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (c, st, cs) = (cut.clone(), stop.clone(), conns.clone());
        std::thread::spawn(move || {
            let mut listener = Some(l);
            let mut probed = std::time::Instant::now();
            let mut up_ok = true;
            while !st.load(Ordering::SeqCst) {
                if probed.elapsed() > Duration::from_millis(100) {
                    probed = std::time::Instant::now();
                    // Down only when the member refuses (it died): a probe that times out on
                    // a loaded machine leaves the proxy as it was.
                    match TcpStream::connect_timeout(
                        &([127, 0, 0, 1], upstream).into(),
                        Duration::from_millis(500),
                    ) {
                        Ok(_) => up_ok = true,
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                            up_ok = false
                        }
                        Err(_) => {}
                    }
                }
                let open = up_ok && !c.load(Ordering::SeqCst);
                match (&listener, open) {
                    (Some(_), false) => listener = None,
                    (None, true) => listener = TcpListener::bind(("127.0.0.1", port)).ok(),
                    _ => {}
                }
                let Some(l) = &listener else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = l.set_nonblocking(true);
                let Ok((down, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = down.set_nonblocking(false);
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (Ok(d2), Ok(u2)) = (down.try_clone(), up.try_clone()) else {
                    continue;
                };
                if let Ok(mut list) = cs.lock() {
                    list.retain(|s: &TcpStream| s.peer_addr().is_ok());
                    if let (Ok(a), Ok(b)) = (down.try_clone(), up.try_clone()) {
                        list.push(a);
                        list.push(b);
                    }
                }
                for (from, to) in [(d2, u2), (up, down)] {
                    std::thread::spawn(move || pump(from, to));
                }
            }
        });
        Ok(Proxy {
            port,
            cut,
            stop,
            conns,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cuts every connection and drops new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Ok(mut list) = self.conns.lock() {
            for s in list.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16384];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
