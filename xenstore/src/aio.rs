//! Async client on tokio (feature `tokio`).
//!
//! [`AsyncClient`] has the blocking client's operations as `async fn`s. A background task
//! reads the socket, completes requests by request id and forwards watch events to the
//! [`Events`] receiver returned by [`AsyncClient::connect_socket`].
//!
//! ```no_run
//! # async fn demo() -> xenstore::Result<()> {
//! let (xs, mut events) = xenstore::aio::AsyncClient::connect().await?;
//! xs.write("/a", "b").await?;
//! xs.watch("/a", "t").await?;
//! let ev = events.recv().await.unwrap();
//! assert_eq!(ev.path, "/a");
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use xen_types::{DomId, Errno};

use crate::wire::{split_strings, Decoder, Message, Op, Perm, TxId};
use crate::{Error, Result, WatchEvent};

type Pending = Arc<Mutex<Option<HashMap<u32, oneshot::Sender<Message>>>>>;

/// Receiver of watch events (a stream: call [`recv`](Events::recv) in a loop).
#[derive(Debug)]
pub struct Events(mpsc::UnboundedReceiver<WatchEvent>);

impl Events {
    /// The next event; `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<WatchEvent> {
        self.0.recv().await
    }

    /// An event that already arrived, without waiting.
    pub fn try_recv(&mut self) -> Option<WatchEvent> {
        self.0.try_recv().ok()
    }
}

/// An async XenStore connection.
#[derive(Debug)]
pub struct AsyncClient {
    tx: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_req: AtomicU32,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for AsyncClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl AsyncClient {
    /// Connects to `XENSTORED_PATH`, else `/var/run/xenstored/socket`.
    pub async fn connect() -> Result<(AsyncClient, Events)> {
        AsyncClient::connect_socket(crate::transport::socket_path()).await
    }

    /// Connects to the unix socket at `path`.
    pub async fn connect_socket(path: impl AsRef<Path>) -> Result<(AsyncClient, Events)> {
        let s = UnixStream::connect(path).await?;
        Ok(AsyncClient::from_stream(s))
    }

    /// A client over a connected stream (must be called inside a tokio runtime).
    pub fn from_stream(s: UnixStream) -> (AsyncClient, Events) {
        let (mut rd, wr) = s.into_split();
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let p2 = pending.clone();
        let reader = tokio::spawn(async move {
            let mut dec = Decoder::new();
            let mut buf = vec![0u8; 8192];
            'outer: loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                dec.feed(&buf[..n]);
                loop {
                    match dec.next_message() {
                        Ok(Some(m)) if m.header.ty == Op::WatchEvent.raw() => {
                            if let Ok(parts) = m.strings() {
                                if parts.len() >= 2 {
                                    let _ = ev_tx.send(WatchEvent {
                                        path: String::from_utf8_lossy(parts[0]).into_owned(),
                                        token: String::from_utf8_lossy(parts[1]).into_owned(),
                                    });
                                }
                            }
                        }
                        Ok(Some(m)) => {
                            let waiter = p2
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .as_mut()
                                .and_then(|p| p.remove(&m.header.req_id));
                            if let Some(w) = waiter {
                                let _ = w.send(m);
                            }
                        }
                        Ok(None) => break,
                        Err(_) => break 'outer,
                    }
                }
            }
            // Fail every waiter: dropping the senders wakes them.
            p2.lock().unwrap_or_else(|p| p.into_inner()).take();
        });
        (
            AsyncClient {
                tx: tokio::sync::Mutex::new(wr),
                pending,
                next_req: AtomicU32::new(1),
                reader,
            },
            Events(ev_rx),
        )
    }

    async fn request(&self, op: Op, tx: TxId, parts: &[&[u8]], raw_last: bool) -> Result<Vec<u8>> {
        let req_id = self.next_req.fetch_add(1, Ordering::Relaxed);
        let msg = Message::request(op, req_id, tx, parts, raw_last)?;
        let (s, r) = oneshot::channel();
        {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            match p.as_mut() {
                Some(p) => p.insert(req_id, s),
                None => return Err(Error::Closed("xenstored closed the connection".into())),
            };
        }
        self.tx.lock().await.write_all(&msg.to_bytes()).await?;
        let reply = r
            .await
            .map_err(|_| Error::Closed("xenstored closed the connection".into()))?;
        if let Some(e) = reply.error_errno() {
            return Err(Error::Xs(e?));
        }
        if reply.header.ty != op.raw() {
            return Err(Error::Protocol("reply type differs from request type"));
        }
        Ok(reply.payload)
    }

    /// Reads `path`.
    pub async fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.read_in(TxId::NONE, path).await
    }

    /// Reads `path` inside transaction `tx`.
    pub async fn read_in(&self, tx: TxId, path: &str) -> Result<Vec<u8>> {
        self.request(Op::Read, tx, &[path.as_bytes()], false).await
    }

    /// Writes `value` at `path`.
    pub async fn write(&self, path: &str, value: impl AsRef<[u8]>) -> Result<()> {
        self.write_in(TxId::NONE, path, value).await
    }

    /// Writes inside transaction `tx`.
    pub async fn write_in(&self, tx: TxId, path: &str, value: impl AsRef<[u8]>) -> Result<()> {
        self.request(Op::Write, tx, &[path.as_bytes(), value.as_ref()], true)
            .await
            .map(drop)
    }

    /// Creates `path` if missing.
    pub async fn mkdir(&self, path: &str) -> Result<()> {
        self.request(Op::Mkdir, TxId::NONE, &[path.as_bytes()], false)
            .await
            .map(drop)
    }

    /// Removes `path` and its children.
    pub async fn rm(&self, path: &str) -> Result<()> {
        self.rm_in(TxId::NONE, path).await
    }

    /// Removes inside transaction `tx`.
    pub async fn rm_in(&self, tx: TxId, path: &str) -> Result<()> {
        self.request(Op::Rm, tx, &[path.as_bytes()], false)
            .await
            .map(drop)
    }

    /// Children of `path`.
    pub async fn directory(&self, path: &str) -> Result<Vec<String>> {
        let r = self
            .request(Op::Directory, TxId::NONE, &[path.as_bytes()], false)
            .await?;
        Ok(split_strings(&r)?
            .into_iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect())
    }

    /// Permissions of `path`.
    pub async fn get_perms(&self, path: &str) -> Result<Vec<Perm>> {
        let r = self
            .request(Op::GetPerms, TxId::NONE, &[path.as_bytes()], false)
            .await?;
        Ok(Perm::parse_list(split_strings(&r)?)?)
    }

    /// Sets the permissions of `path`.
    pub async fn set_perms(&self, path: &str, perms: &[Perm]) -> Result<()> {
        let strs: Vec<String> = perms.iter().map(Perm::to_string).collect();
        let mut parts: Vec<&[u8]> = vec![path.as_bytes()];
        parts.extend(strs.iter().map(|s| s.as_bytes()));
        self.request(Op::SetPerms, TxId::NONE, &parts, false)
            .await
            .map(drop)
    }

    /// Adds a watch (fires once immediately).
    pub async fn watch(&self, path: &str, token: &str) -> Result<()> {
        self.request(
            Op::Watch,
            TxId::NONE,
            &[path.as_bytes(), token.as_bytes()],
            false,
        )
        .await
        .map(drop)
    }

    /// Removes a watch.
    pub async fn unwatch(&self, path: &str, token: &str) -> Result<()> {
        self.request(
            Op::Unwatch,
            TxId::NONE,
            &[path.as_bytes(), token.as_bytes()],
            false,
        )
        .await
        .map(drop)
    }

    /// Starts a transaction.
    pub async fn transaction_start(&self) -> Result<TxId> {
        let r = self
            .request(Op::TransactionStart, TxId::NONE, &[b""], false)
            .await?;
        let s = r.strip_suffix(&[0]).unwrap_or(&r);
        std::str::from_utf8(s)
            .ok()
            .and_then(|s| s.parse().ok())
            .map(TxId)
            .ok_or(Error::Protocol("bad transaction id"))
    }

    /// Ends a transaction (`commit` false: abort). `EAGAIN` on conflict.
    pub async fn transaction_end(&self, tx: TxId, commit: bool) -> Result<()> {
        let arg: &[u8] = if commit { b"T" } else { b"F" };
        self.request(Op::TransactionEnd, tx, &[arg], false)
            .await
            .map(drop)
    }

    /// The home path of `domid`.
    pub async fn get_domain_path(&self, domid: DomId) -> Result<String> {
        let d = domid.0.to_string();
        let r = self
            .request(Op::GetDomainPath, TxId::NONE, &[d.as_bytes()], false)
            .await?;
        Ok(String::from_utf8_lossy(r.strip_suffix(&[0]).unwrap_or(&r)).into_owned())
    }

    /// Whether the daemon is connected to `domid`.
    pub async fn is_domain_introduced(&self, domid: DomId) -> Result<bool> {
        let d = domid.0.to_string();
        let r = self
            .request(Op::IsDomainIntroduced, TxId::NONE, &[d.as_bytes()], false)
            .await?;
        Ok(r.first() == Some(&b'T'))
    }

    /// Removes all watches and transactions of this connection.
    pub async fn reset_watches(&self) -> Result<()> {
        self.request(Op::ResetWatches, TxId::NONE, &[b""], false)
            .await
            .map(drop)
    }

    /// True when `e` is a transaction conflict worth retrying.
    pub fn is_conflict(e: &Error) -> bool {
        e.errno() == Some(Errno::EAGAIN)
    }
}
