//! [`Store`] over the `xenstore` crate's blocking [`xenstore::Client`].
//!
//! The client has one event stream; a dispatcher thread routes each fired watch to the
//! channel given to [`Store::watch`] (watches are registered under private tokens, and the
//! caller's token is put back on delivery).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use xen_types::{DomId, Errno};
use xenstore::{Access, Client, Perm};

use crate::store::{WatchEvent, WatchId};
use crate::{Error, Store};

struct Route {
    path: String,
    token: String,
    tx: Sender<WatchEvent>,
}

type Routes = Arc<Mutex<HashMap<String, Route>>>;

/// A [`Store`] backed by a xenstored connection.
pub struct XsStore {
    client: Arc<Client>,
    routes: Routes,
    next: AtomicU64,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for XsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XsStore").finish_non_exhaustive()
    }
}

pub(crate) fn xs(e: xenstore::Error) -> Error {
    match e {
        xenstore::Error::Xs(errno) => Error::Store(errno),
        e => Error::Store(e.errno_hint()),
    }
}

trait Hint {
    fn errno_hint(&self) -> Errno;
}

impl Hint for xenstore::Error {
    fn errno_hint(&self) -> Errno {
        match self {
            xenstore::Error::Xs(e) => *e,
            xenstore::Error::Io(e) => e.raw_os_error().map_or(Errno::EIO, Errno),
            xenstore::Error::Closed(_) => Errno::ENOTCONN,
            _ => Errno::EIO,
        }
    }
}

impl XsStore {
    /// Wraps a connected client (dom0's socket, `/dev/xen/xenbus`, or a domain's ring).
    ///
    /// The dispatcher thread blocks on the connection without a time limit (an idle store
    /// costs no wake-ups); dropping the store wakes it through xenstored (see [`Drop`]).
    pub fn new(client: Client) -> Result<XsStore, Error> {
        let client = Arc::new(client);
        let routes: Routes = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, r, s) = (client.clone(), routes.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("xenbus-xs-events".into())
            .spawn(move || loop {
                let Ok(ev) = c.next_event() else {
                    return;
                };
                if s.load(Ordering::SeqCst) {
                    return;
                }
                if let Some(route) = r.lock().get(&ev.token) {
                    let _ = route.tx.send(WatchEvent {
                        path: ev.path,
                        token: route.token.clone(),
                    });
                }
            })
            .map_err(|e| Error::Driver(e.to_string()))?;
        Ok(XsStore {
            client,
            routes,
            next: AtomicU64::new(0),
            stop,
            thread: Some(thread),
        })
    }

    /// Connects to the local xenstored (`XENSTORED_PATH` or its default socket).
    pub fn connect() -> Result<XsStore, Error> {
        XsStore::new(Client::connect().map_err(xs)?)
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Watches set through this store and not removed (for leak checks).
    pub fn watch_count(&self) -> usize {
        self.routes.lock().len()
    }
}

/// The token of the watch that wakes the dispatcher thread when the store is dropped.
const WAKE_TOKEN: &str = "xenbus-rs-wake";

impl XsStore {
    /// Sets the watch that wakes the dispatcher thread: true when the thread wakes (or
    /// ended with the connection). At its watch quota, a guest's store first removes its
    /// own watches.
    fn wake_dispatcher(&self) -> bool {
        let woken = |r: &Result<(), xenstore::Error>| {
            matches!(
                r,
                Ok(()) | Err(xenstore::Error::Closed(_) | xenstore::Error::Io(_))
            )
        };
        let r = self.client.watch("/", WAKE_TOKEN);
        if woken(&r) {
            return true;
        }
        let routes: Vec<(String, Route)> = self.routes.lock().drain().collect();
        for (private, route) in routes {
            let _ = self.client.unwatch(&route.path, &private);
        }
        woken(&self.client.watch("/", WAKE_TOKEN))
    }
}

impl Drop for XsStore {
    /// Stops the dispatcher thread, which blocks on the connection: a watch set under
    /// [`WAKE_TOKEN`] fires at once (xenstored fires every new watch once) and wakes it.
    /// If the connection closed, the thread already ended. If xenstored refuses the watch,
    /// the thread is left blocked, not waited for (it ends when xenstored closes the
    /// connection).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let Some(t) = self.thread.take() else {
            return;
        };
        if t.is_finished() || self.wake_dispatcher() {
            let _ = t.join();
        }
    }
}

impl Store for XsStore {
    fn read(&self, path: &str) -> Result<Option<String>, Error> {
        match self.client.read(path) {
            Ok(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            Err(xenstore::Error::Xs(Errno::ENOENT)) => Ok(None),
            Err(e) => Err(xs(e)),
        }
    }

    fn write(&self, path: &str, value: &str) -> Result<(), Error> {
        self.client.write(path, value).map_err(xs)
    }

    fn write_all(&self, entries: &[(String, String)]) -> Result<(), Error> {
        self.client
            .transaction(|tx| {
                for (p, v) in entries {
                    tx.write(p, v)?;
                }
                Ok(())
            })
            .map_err(xs)
    }

    fn directory(&self, path: &str) -> Result<Vec<String>, Error> {
        match self.client.directory(path) {
            Ok(v) => Ok(v),
            Err(xenstore::Error::Xs(Errno::ENOENT)) => Ok(Vec::new()),
            Err(e) => Err(xs(e)),
        }
    }

    fn rm(&self, path: &str) -> Result<(), Error> {
        match self.client.rm(path) {
            Ok(()) | Err(xenstore::Error::Xs(Errno::ENOENT)) => Ok(()),
            Err(e) => Err(xs(e)),
        }
    }

    fn watch(&self, path: &str, token: &str, tx: Sender<WatchEvent>) -> Result<WatchId, Error> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let private = format!("xenbus-rs-{id}");
        self.routes.lock().insert(
            private.clone(),
            Route {
                path: path.into(),
                token: token.into(),
                tx,
            },
        );
        if let Err(e) = self.client.watch(path, &private) {
            self.routes.lock().remove(&private);
            return Err(xs(e));
        }
        Ok(WatchId(id))
    }

    fn unwatch(&self, id: WatchId) -> Result<(), Error> {
        let private = format!("xenbus-rs-{}", id.0);
        let route = self
            .routes
            .lock()
            .remove(&private)
            .ok_or(Error::NoSuchWatch)?;
        self.client.unwatch(&route.path, &private).map_err(xs)
    }

    fn domain_alive(&self, domid: DomId) -> Result<bool, Error> {
        if domid.is_dom0() {
            return Ok(true);
        }
        // Introduced to xenstored (a running domain), or still described by the toolstack
        // (a domain being built, or one only the toolstack knows of). A dead domain is
        // neither once xenstored released it and the toolstack cleaned up.
        if self.client.is_domain_introduced(domid).unwrap_or(false) {
            return Ok(true);
        }
        Ok(self.read(&crate::paths::domain_path(domid))?.is_some())
    }

    fn set_perms(&self, path: &str, owner: DomId, readers: &[DomId]) -> Result<(), Error> {
        let mut perms = vec![Perm::new(owner, Access::None)];
        perms.extend(readers.iter().map(|d| Perm::new(*d, Access::Read)));
        self.client.set_perms(path, &perms).map_err(xs)
    }
}
