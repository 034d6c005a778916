//! The frontend half of the handshake, and the toolstack's part (creating the directories).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use xen_types::DomId;

use crate::paths::{self, join};
use crate::store::{WatchEvent, WatchId, RELEASE_DOMAIN};
use crate::{Error, Store, XenbusState};

/// Writes both directories of a new device as a toolstack does (one transaction): the
/// backend's (`frontend`, `frontend-id`, `online`=1, `state`=Initialising, plus
/// `backend_keys`) and the frontend's (`backend`, `backend-id`, `state`=Initialising, plus
/// `frontend_keys`).
pub fn create_device<S: Store>(
    store: &S,
    backend: DomId,
    frontend: DomId,
    dev_type: &str,
    devid: u32,
    backend_keys: &[(&str, &str)],
    frontend_keys: &[(&str, &str)],
) -> Result<(), Error> {
    create_device_split(
        store,
        (backend, dev_type),
        (frontend, dev_type),
        devid,
        backend_keys,
        frontend_keys,
    )
}

/// [`create_device`] where the backend directory's type differs from the frontend's, as
/// libxl does for `backendtype=qdisk` (`backend/qdisk/...` serving `device/vbd/...`).
pub fn create_device_split<S: Store>(
    store: &S,
    (backend, backend_type): (DomId, &str),
    (frontend, frontend_type): (DomId, &str),
    devid: u32,
    backend_keys: &[(&str, &str)],
    frontend_keys: &[(&str, &str)],
) -> Result<(), Error> {
    let bpath = paths::backend_path(backend, backend_type, frontend, devid);
    let fpath = paths::frontend_path(frontend, frontend_type, devid);
    let init = XenbusState::Initialising.to_string();
    let mut e: Vec<(String, String)> = vec![
        (join(&bpath, paths::KEY_FRONTEND), fpath.clone()),
        (
            join(&bpath, paths::KEY_FRONTEND_ID),
            frontend.get().to_string(),
        ),
        (join(&bpath, paths::KEY_ONLINE), "1".into()),
        (join(&bpath, paths::KEY_STATE), init.clone()),
        (join(&fpath, paths::KEY_BACKEND), bpath.clone()),
        (
            join(&fpath, paths::KEY_BACKEND_ID),
            backend.get().to_string(),
        ),
        (join(&fpath, paths::KEY_STATE), init),
    ];
    e.extend(
        backend_keys
            .iter()
            .map(|(k, v)| (join(&bpath, k), v.to_string())),
    );
    e.extend(
        frontend_keys
            .iter()
            .map(|(k, v)| (join(&fpath, k), v.to_string())),
    );
    // As libxl does: each end owns its directory and the other end may read it. The
    // directories get their permissions first, so the keys written below inherit them.
    store.write_all(&[
        (fpath.clone(), String::new()),
        (bpath.clone(), String::new()),
    ])?;
    store.set_perms(&fpath, frontend, &[backend])?;
    store.set_perms(&bpath, backend, &[frontend])?;
    store.write_all(&e)
}

/// Removes both directories of a device (the toolstack's unplug after `Closed`).
pub fn destroy_device<S: Store>(
    store: &S,
    backend: DomId,
    frontend: DomId,
    dev_type: &str,
    devid: u32,
) -> Result<(), Error> {
    store.rm(&paths::frontend_path(frontend, dev_type, devid))?;
    store.rm(&paths::backend_path(backend, dev_type, frontend, devid))
}

/// The frontend end of one device: its directory, the backend's, and a watch on the
/// backend's state. Dropping it removes the watches.
pub struct FrontendDevice<S: Store> {
    store: Arc<S>,
    /// Our domain.
    pub domid: DomId,
    /// Device id.
    pub devid: u32,
    /// Our directory.
    pub path: String,
    /// The backend's directory.
    pub backend_path: String,
    /// The backend's domain.
    pub backend_id: DomId,
    state: XenbusState,
    rx: Receiver<WatchEvent>,
    ids: Vec<WatchId>,
}

impl<S: Store> std::fmt::Debug for FrontendDevice<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontendDevice")
            .field("path", &self.path)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<S: Store> FrontendDevice<S> {
    /// Opens `/local/domain/<domid>/device/<type>/<devid>` (written by the toolstack) and
    /// watches the backend's state.
    pub fn open(store: Arc<S>, domid: DomId, dev_type: &str, devid: u32) -> Result<Self, Error> {
        let path = paths::frontend_path(domid, dev_type, devid);
        let bkey = join(&path, paths::KEY_BACKEND);
        let backend_path = store.read(&bkey)?.ok_or(Error::Missing(bkey))?;
        let idkey = join(&path, paths::KEY_BACKEND_ID);
        let backend_id = DomId(
            store
                .read_parse::<u16>(&idkey)?
                .ok_or(Error::Missing(idkey))?,
        );
        let state = XenbusState::from_node(store.read(&join(&path, paths::KEY_STATE))?.as_deref());
        let (tx, rx) = unbounded();
        let mut ids =
            vec![store.watch(&join(&backend_path, paths::KEY_STATE), "be", tx.clone())?];
        // Guests may not watch special paths on xenstored (XSA-115): best effort.
        if let Ok(id) = store.watch(RELEASE_DOMAIN, "rel", tx) {
            ids.push(id);
        }
        Ok(FrontendDevice {
            store,
            domid,
            devid,
            path,
            backend_path,
            backend_id,
            state,
            rx,
            ids,
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Our state as last written.
    pub fn state(&self) -> XenbusState {
        self.state
    }

    /// Publishes `next` as our state, if the transition is legal.
    pub fn switch_state(&mut self, next: XenbusState) -> Result<(), Error> {
        self.state.transition(next)?;
        self.store
            .write(&join(&self.path, paths::KEY_STATE), &next.to_string())?;
        self.state = next;
        Ok(())
    }

    /// The backend's current state.
    pub fn backend_state(&self) -> Result<XenbusState, Error> {
        Ok(XenbusState::from_node(
            self.store
                .read(&join(&self.backend_path, paths::KEY_STATE))?
                .as_deref(),
        ))
    }

    /// Waits until the backend's state satisfies `pred`, at most `timeout`. Fails with
    /// [`Error::Closed`] if the backend's domain dies.
    pub fn wait_backend(
        &self,
        pred: impl Fn(XenbusState) -> bool,
        timeout: Duration,
    ) -> Result<XenbusState, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.backend_state()?;
            if pred(s) {
                return Ok(s);
            }
            // A guest usually may not ask; then only the timeout ends the wait.
            if !self.store.domain_alive(self.backend_id).unwrap_or(true) {
                return Err(Error::Closed(format!(
                    "backend domain {:?} died",
                    self.backend_id
                )));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.rx.recv_timeout(left).is_err() {
                return Err(Error::Timeout(format!(
                    "{} (backend state {s:?})",
                    self.backend_path
                )));
            }
        }
    }

    /// Reads `key` in the backend's directory.
    pub fn read_backend(&self, key: &str) -> Result<Option<String>, Error> {
        self.store.read(&join(&self.backend_path, key))
    }

    /// Reads and parses `key` in the backend's directory.
    pub fn read_backend_parse<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, Error> {
        self.store.read_parse(&join(&self.backend_path, key))
    }

    /// Writes several keys of our directory in one transaction.
    pub fn write_all(&self, entries: &[(String, String)]) -> Result<(), Error> {
        let e: Vec<(String, String)> = entries
            .iter()
            .map(|(k, v)| (join(&self.path, k), v.clone()))
            .collect();
        self.store.write_all(&e)
    }
}

impl<S: Store> Drop for FrontendDevice<S> {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            let _ = self.store.unwatch(id);
        }
    }
}
