//! An "echo" xenstored: answers every request at once with a fixed reply of
//! the same type, with the same framing as a real daemon. Measures the
//! machine's socket round-trip limit in the same run as the real daemons.
//!
//! Like C xenstored it serves all connections from one thread.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;

use crate::frame::{self, Decoder, Header};

/// The fixed payload the echo server returns for a request type.
pub fn reply_payload(ty: u32) -> &'static [u8] {
    match ty {
        xen_sys::XS_TRANSACTION_START => b"1\0",
        xen_sys::XS_READ => b"echo",
        xen_sys::XS_DIRECTORY => b"a\0b\0",
        // Generation "1", then an empty child list: the last part.
        xen_sys::XS_DIRECTORY_PART => b"1\0\0",
        xen_sys::XS_GET_DOMAIN_PATH => b"/local/domain/0\0",
        _ => b"OK\0",
    }
}

/// A unix-socket server on a thread of its own (one single-threaded runtime, every
/// connection a local task), stopped and its socket removed on drop. The echo server and the
/// fan-out floor run on it.
#[derive(Debug)]
pub struct LocalServer {
    path: PathBuf,
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl LocalServer {
    /// Binds `path` (removing a stale socket there) and serves it on a new thread named
    /// `name`: `make` runs on that thread and returns the handler each accepted connection
    /// is given to (it may keep thread-local state, such as a list of watchers).
    pub fn start<M, F, Fut>(path: &Path, name: &str, make: M) -> io::Result<Self>
    where
        M: FnOnce() -> F + Send + 'static,
        F: FnMut(UnixStream) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let _ = std::fs::remove_file(path);
        let std_listener = std::os::unix::net::UnixListener::bind(path)?;
        std_listener.set_nonblocking(true)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let stop = Arc::new(Notify::new());
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    let Ok(listener) = UnixListener::from_std(std_listener) else {
                        return;
                    };
                    let mut handler = make();
                    loop {
                        tokio::select! {
                            _ = stop2.notified() => break,
                            r = listener.accept() => match r {
                                Ok((s, _)) => { tokio::task::spawn_local(handler(s)); }
                                Err(_) => break,
                            },
                        }
                    }
                });
            })?;
        Ok(Self {
            path: path.to_owned(),
            stop,
            thread: Some(thread),
        })
    }

    /// The socket path.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A running echo server, stopped on drop.
#[derive(Debug)]
pub struct EchoServer(LocalServer);

impl EchoServer {
    /// Binds `path` (removing a stale socket there) and serves it on a new
    /// thread.
    pub fn start(path: &Path) -> io::Result<Self> {
        LocalServer::start(path, "xs-echo", || serve).map(EchoServer)
    }

    /// The socket path.
    pub fn socket_path(&self) -> &Path {
        self.0.socket_path()
    }
}

async fn serve(mut s: UnixStream) {
    let mut dec = Decoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        dec.extend(&buf[..n]);
        out.clear();
        loop {
            match dec.next_frame() {
                Ok(Some((h, _))) => {
                    let p = reply_payload(h.ty);
                    let reply = Header {
                        len: p.len() as u32,
                        ..h
                    };
                    out.extend_from_slice(&reply.to_bytes());
                    out.extend_from_slice(p);
                }
                Ok(None) => break,
                Err(frame::FrameError::Oversize(_)) => {
                    // Like a real daemon: drop the connection.
                    return;
                }
            }
        }
        if !out.is_empty() && s.write_all(&out).await.is_err() {
            return;
        }
    }
}
