//! Blocking client.
//!
//! A [`Client`] is `Send + Sync`: threads may share it. Replies are matched to requests by
//! request id; watch events are queued separately and read with [`Client::next_event`] or
//! [`Client::events`]. There is no reader thread: whichever caller is waiting reads the
//! transport and hands other callers' replies over, so a single-threaded user pays one
//! socket round trip per request and no thread wake-ups.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use xen_types::{DomId, Errno, EvtchnPort, Pfn};

use crate::transport::{self, FdTransport, RecvHalf, SendHalf, Transport};
use crate::wire::{Decoder, Message, Op, Perm, TxId};
use crate::{Error, Result, WatchEvent};

struct State {
    rx: Option<Box<dyn RecvHalf>>,
    dec: Decoder,
    replies: HashMap<u32, Message>,
    events: VecDeque<WatchEvent>,
    dead: Option<String>,
}

/// A blocking XenStore connection.
pub struct Client {
    tx: Mutex<Box<dyn SendHalf>>,
    state: Mutex<State>,
    cv: Condvar,
    next_req: AtomicU32,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Client {
    /// Connects to the daemon's unix socket: `XENSTORED_PATH`, else
    /// `/var/run/xenstored/socket`.
    pub fn connect() -> Result<Client> {
        Client::connect_socket(transport::socket_path())
    }

    /// Connects to the unix socket at `path`.
    pub fn connect_socket(path: impl AsRef<Path>) -> Result<Client> {
        Client::with_transport(FdTransport::connect(path)?)
    }

    /// Opens the kernel's xenbus device (`/dev/xen/xenbus`), as a guest or a dom0 without a
    /// local daemon does.
    pub fn open_xenbus() -> Result<Client> {
        Client::with_transport(FdTransport::open_device(transport::XENBUS_DEVICE)?)
    }

    /// A client over any transport (a connected `UnixStream`, a domain ring, ...).
    pub fn with_transport<T: Transport>(t: T) -> Result<Client> {
        let (tx, rx) = t.split()?;
        Ok(Client {
            tx: Mutex::new(tx),
            state: Mutex::new(State {
                rx: Some(rx),
                dec: Decoder::new(),
                replies: HashMap::new(),
                events: VecDeque::new(),
                dead: None,
            }),
            cv: Condvar::new(),
            next_req: AtomicU32::new(1),
        })
    }

    /// Waits until `take` yields a value, reading the transport when no other caller is.
    /// Returns `Ok(None)` at the deadline.
    fn wait_for<T>(
        &self,
        deadline: Option<Instant>,
        mut take: impl FnMut(&mut State) -> Option<T>,
    ) -> Result<Option<T>> {
        let mut st = lock(&self.state);
        loop {
            if let Some(v) = take(&mut st) {
                return Ok(Some(v));
            }
            if let Some(e) = &st.dead {
                return Err(Error::Closed(e.clone()));
            }
            let remaining = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(r) if !r.is_zero() => Some(r),
                    _ => return Ok(None),
                },
                None => None,
            };
            if let Some(mut rx) = st.rx.take() {
                drop(st);
                let mut buf = [0u8; 8192];
                let r = rx.recv(&mut buf, remaining);
                st = lock(&self.state);
                st.rx = Some(rx);
                match r {
                    Ok(0) => st.dead = Some("xenstored closed the connection".into()),
                    Ok(n) => {
                        st.dec.feed(&buf[..n]);
                        loop {
                            match st.dec.next_message() {
                                Ok(Some(m)) => Self::dispatch(&mut st, m),
                                Ok(None) => break,
                                Err(e) => {
                                    st.dead = Some(e.to_string());
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                    Err(e) => st.dead = Some(e.to_string()),
                }
                self.cv.notify_all();
            } else {
                st = match remaining {
                    Some(r) => {
                        self.cv
                            .wait_timeout(st, r)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                    None => self.cv.wait(st).unwrap_or_else(|p| p.into_inner()),
                };
            }
        }
    }

    fn dispatch(st: &mut State, m: Message) {
        if m.header.ty == Op::WatchEvent.raw() {
            if let Ok(parts) = m.strings() {
                if parts.len() >= 2 {
                    st.events.push_back(WatchEvent {
                        path: String::from_utf8_lossy(parts[0]).into_owned(),
                        token: String::from_utf8_lossy(parts[1]).into_owned(),
                    });
                }
            }
        } else {
            st.replies.insert(m.header.req_id, m);
        }
    }

    /// Sends a raw request and waits for its reply (which may be `XS_ERROR`).
    pub fn request_raw(&self, op: Op, tx: TxId, payload: Vec<u8>) -> Result<Message> {
        let req_id = self.next_req.fetch_add(1, Ordering::Relaxed);
        let msg = Message::new(op, req_id, tx, payload)?;
        lock(&self.tx).send(&msg.to_bytes())?;
        let reply = self.wait_for(None, |st| st.replies.remove(&req_id))?;
        reply.ok_or(Error::Closed("no reply".into()))
    }

    fn request(&self, op: Op, tx: TxId, parts: &[&[u8]], raw_last: bool) -> Result<Vec<u8>> {
        let payload = Message::request(op, 0, tx, parts, raw_last)?.payload;
        let reply = self.request_raw(op, tx, payload)?;
        if let Some(e) = reply.error_errno() {
            return Err(Error::Xs(e?));
        }
        if reply.header.ty != op.raw() {
            return Err(Error::Protocol("reply type differs from request type"));
        }
        Ok(reply.payload)
    }

    fn request_ok(&self, op: Op, tx: TxId, parts: &[&[u8]], raw_last: bool) -> Result<()> {
        self.request(op, tx, parts, raw_last).map(drop)
    }

    /// Next watch event, waiting as long as needed.
    pub fn next_event(&self) -> Result<WatchEvent> {
        self.wait_for(None, |st| st.events.pop_front())?
            .ok_or(Error::Closed("no event".into()))
    }

    /// Next watch event, or `None` after `timeout`.
    pub fn next_event_timeout(&self, timeout: Duration) -> Result<Option<WatchEvent>> {
        self.wait_for(Some(Instant::now() + timeout), |st| st.events.pop_front())
    }

    /// Watch events that have already arrived, without waiting.
    pub fn pending_events(&self) -> Vec<WatchEvent> {
        lock(&self.state).events.drain(..).collect()
    }

    /// Blocking iterator over watch events; ends when the connection fails.
    pub fn events(&self) -> impl Iterator<Item = WatchEvent> + '_ {
        std::iter::from_fn(move || self.next_event().ok())
    }

    /// Starts a transaction.
    pub fn transaction_start(&self) -> Result<Transaction<'_>> {
        let r = self.request(Op::TransactionStart, TxId::NONE, &[b""], false)?;
        let s = r.strip_suffix(&[0]).unwrap_or(&r);
        let id = std::str::from_utf8(s)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(Error::Protocol("bad transaction id"))?;
        Ok(Transaction {
            client: self,
            id: TxId(id),
            done: false,
        })
    }

    /// Runs `f` in a transaction and commits it, retrying the whole closure when the commit
    /// fails with `EAGAIN` (another client changed what it read or wrote). An error from
    /// `f` aborts the transaction and is returned.
    pub fn transaction<T>(&self, mut f: impl FnMut(&Transaction<'_>) -> Result<T>) -> Result<T> {
        loop {
            let tx = self.transaction_start()?;
            let v = match f(&tx) {
                Ok(v) => v,
                Err(e) => {
                    let _ = tx.abort();
                    if e.errno() == Some(Errno::EAGAIN) {
                        continue;
                    }
                    return Err(e);
                }
            };
            match tx.commit() {
                Ok(()) => return Ok(v),
                Err(e) if e.errno() == Some(Errno::EAGAIN) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Adds a watch on `path` (or `@introduceDomain`, `@releaseDomain`,
    /// `@releaseDomain/<domid>`). It fires once immediately.
    pub fn watch(&self, path: &str, token: &str) -> Result<()> {
        self.request_ok(
            Op::Watch,
            TxId::NONE,
            &[path.as_bytes(), token.as_bytes()],
            false,
        )
    }

    /// Adds a watch matching only `depth` levels below `path` (0: the node itself).
    pub fn watch_depth(&self, path: &str, token: &str, depth: u32) -> Result<()> {
        let d = depth.to_string();
        self.request_ok(
            Op::Watch,
            TxId::NONE,
            &[path.as_bytes(), token.as_bytes(), d.as_bytes()],
            false,
        )
    }

    /// Removes a watch.
    pub fn unwatch(&self, path: &str, token: &str) -> Result<()> {
        self.request_ok(
            Op::Unwatch,
            TxId::NONE,
            &[path.as_bytes(), token.as_bytes()],
            false,
        )
    }

    /// Removes all watches and transactions of this connection.
    pub fn reset_watches(&self) -> Result<()> {
        self.request_ok(Op::ResetWatches, TxId::NONE, &[b""], false)
    }

    /// The home path of `domid`: `/local/domain/<domid>`.
    pub fn get_domain_path(&self, domid: DomId) -> Result<String> {
        let d = domid.0.to_string();
        let r = self.request(Op::GetDomainPath, TxId::NONE, &[d.as_bytes()], false)?;
        Ok(string_of(&r))
    }

    /// Tells the daemon to connect to `domid`'s ring at `gfn`, signalled on `port`.
    pub fn introduce(&self, domid: DomId, gfn: Pfn, port: EvtchnPort) -> Result<()> {
        let (d, g, p) = (domid.0.to_string(), gfn.0.to_string(), port.0.to_string());
        self.request_ok(
            Op::Introduce,
            TxId::NONE,
            &[d.as_bytes(), g.as_bytes(), p.as_bytes()],
            false,
        )
    }

    /// Disconnects `domid`.
    pub fn release(&self, domid: DomId) -> Result<()> {
        let d = domid.0.to_string();
        self.request_ok(Op::Release, TxId::NONE, &[d.as_bytes()], false)
    }

    /// Re-arms `@releaseDomain` for `domid` after a resume.
    pub fn resume(&self, domid: DomId) -> Result<()> {
        let d = domid.0.to_string();
        self.request_ok(Op::Resume, TxId::NONE, &[d.as_bytes()], false)
    }

    /// Whether the daemon is connected to `domid`.
    pub fn is_domain_introduced(&self, domid: DomId) -> Result<bool> {
        let d = domid.0.to_string();
        let r = self.request(Op::IsDomainIntroduced, TxId::NONE, &[d.as_bytes()], false)?;
        Ok(r.first() == Some(&b'T'))
    }

    /// Makes `domid` act with `target`'s privileges (device-model stub domains).
    pub fn set_target(&self, domid: DomId, target: DomId) -> Result<()> {
        let (d, t) = (domid.0.to_string(), target.0.to_string());
        self.request_ok(
            Op::SetTarget,
            TxId::NONE,
            &[d.as_bytes(), t.as_bytes()],
            false,
        )
    }

    /// Sends an `XS_CONTROL` command; returns the reply payload.
    pub fn control(&self, args: &[&str]) -> Result<Vec<u8>> {
        let parts: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.request(Op::Control, TxId::NONE, &parts, false)
    }
}

fn string_of(r: &[u8]) -> String {
    String::from_utf8_lossy(r.strip_suffix(&[0]).unwrap_or(r)).into_owned()
}

fn strings_of(r: &[u8]) -> Vec<String> {
    crate::wire::split_strings(r)
        .unwrap_or_default()
        .into_iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn parse_perms(r: &[u8]) -> Result<Vec<Perm>> {
    let parts = crate::wire::split_strings(r)?;
    Ok(Perm::parse_list(parts)?)
}

fn perm_strings(perms: &[Perm]) -> Vec<String> {
    perms.iter().map(Perm::to_string).collect()
}

/// An open transaction; dropped without [`commit`](Transaction::commit) it is aborted.
#[derive(Debug)]
pub struct Transaction<'a> {
    client: &'a Client,
    id: TxId,
    done: bool,
}

impl Transaction<'_> {
    /// The transaction id.
    pub fn id(&self) -> TxId {
        self.id
    }

    /// Commits; `Err` with `EAGAIN` means a conflicting change happened: retry.
    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        self.client
            .request_ok(Op::TransactionEnd, self.id, &[b"T"], false)
    }

    /// Discards the transaction.
    pub fn abort(mut self) -> Result<()> {
        self.done = true;
        self.client
            .request_ok(Op::TransactionEnd, self.id, &[b"F"], false)
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self
                .client
                .request_ok(Op::TransactionEnd, self.id, &[b"F"], false);
        }
    }
}

macro_rules! node_ops {
    ($ty:ty) => {
        impl $ty {
            /// Reads the value at `path`.
            pub fn read(&self, path: &str) -> Result<Vec<u8>> {
                self.cx()
                    .0
                    .request(Op::Read, self.cx().1, &[path.as_bytes()], false)
            }

            /// Reads the value at `path` as (lossy) UTF-8.
            pub fn read_string(&self, path: &str) -> Result<String> {
                self.read(path)
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
            }

            /// Writes `value` at `path`, creating missing parents.
            pub fn write(&self, path: &str, value: impl AsRef<[u8]>) -> Result<()> {
                self.cx().0.request_ok(
                    Op::Write,
                    self.cx().1,
                    &[path.as_bytes(), value.as_ref()],
                    true,
                )
            }

            /// Creates `path` (and parents) if missing.
            pub fn mkdir(&self, path: &str) -> Result<()> {
                self.cx()
                    .0
                    .request_ok(Op::Mkdir, self.cx().1, &[path.as_bytes()], false)
            }

            /// Removes `path` and everything below it.
            pub fn rm(&self, path: &str) -> Result<()> {
                self.cx()
                    .0
                    .request_ok(Op::Rm, self.cx().1, &[path.as_bytes()], false)
            }

            /// Whether `path` exists (and is readable).
            pub fn exists(&self, path: &str) -> Result<bool> {
                match self.read(path) {
                    Ok(_) => Ok(true),
                    Err(Error::Xs(Errno::ENOENT)) => Ok(false),
                    Err(e) => Err(e),
                }
            }

            /// Names of the children of `path` (one `DIRECTORY` request; `E2BIG` for
            /// lists longer than a payload: use [`directory_all`](Self::directory_all)).
            pub fn directory(&self, path: &str) -> Result<Vec<String>> {
                self.cx()
                    .0
                    .request(Op::Directory, self.cx().1, &[path.as_bytes()], false)
                    .map(|r| strings_of(&r))
            }

            /// One `DIRECTORY_PART` request: the node's generation and the children
            /// starting at byte `offset` of the full list; the list ends with an empty
            /// name when it is complete.
            pub fn directory_part(&self, path: &str, offset: usize) -> Result<(u64, Vec<String>)> {
                let off = offset.to_string();
                let r = self.cx().0.request(
                    Op::DirectoryPart,
                    self.cx().1,
                    &[path.as_bytes(), off.as_bytes()],
                    false,
                )?;
                let mut parts = strings_of(&r).into_iter();
                let gen = parts
                    .next()
                    .and_then(|g| g.parse().ok())
                    .ok_or(Error::Protocol("bad generation in DIRECTORY_PART reply"))?;
                Ok((gen, parts.collect()))
            }

            /// All children of `path`, however many, with `DIRECTORY_PART` (restarting if
            /// the node changes in between).
            pub fn directory_all(&self, path: &str) -> Result<Vec<String>> {
                'restart: loop {
                    let mut out = Vec::new();
                    let mut offset = 0;
                    let mut gen0 = None;
                    loop {
                        let (gen, names) = self.directory_part(path, offset)?;
                        if *gen0.get_or_insert(gen) != gen {
                            continue 'restart;
                        }
                        let mut done = names.is_empty();
                        for n in names {
                            if n.is_empty() {
                                done = true;
                                break;
                            }
                            offset += n.len() + 1;
                            out.push(n);
                        }
                        if done {
                            return Ok(out);
                        }
                    }
                }
            }

            /// The permissions of `path` (owner first).
            pub fn get_perms(&self, path: &str) -> Result<Vec<Perm>> {
                let r =
                    self.cx()
                        .0
                        .request(Op::GetPerms, self.cx().1, &[path.as_bytes()], false)?;
                parse_perms(&r)
            }

            /// Sets the permissions of `path` (owner first).
            pub fn set_perms(&self, path: &str, perms: &[Perm]) -> Result<()> {
                let strs = perm_strings(perms);
                let mut parts: Vec<&[u8]> = vec![path.as_bytes()];
                parts.extend(strs.iter().map(|s| s.as_bytes()));
                self.cx()
                    .0
                    .request_ok(Op::SetPerms, self.cx().1, &parts, false)
            }
        }
    };
}

impl Client {
    fn cx(&self) -> (&Client, TxId) {
        (self, TxId::NONE)
    }
}

impl Transaction<'_> {
    fn cx(&self) -> (&Client, TxId) {
        (self.client, self.id)
    }
}

node_ops!(Client);
node_ops!(Transaction<'_>);
