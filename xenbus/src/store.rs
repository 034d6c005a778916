//! The xenstore access a XenBus driver needs, as a small trait, with an in-memory store.
//!
//! [`Store`] is what the device framework uses. [`MemStore`] implements it in memory with
//! xenstore's watch semantics (a watch fires once when set, then for every change at or
//! below its path; `@releaseDomain` fires when a domain is released), for unit tests and
//! the simulated host. An adapter for the `xenstore` crate's client implements the same
//! trait.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use xen_types::DomId;

use crate::Error;

/// Special watch path fired when a domain has been released (died and cleaned up).
pub const RELEASE_DOMAIN: &str = "@releaseDomain";
/// Special watch path fired when a domain is introduced.
pub const INTRODUCE_DOMAIN: &str = "@introduceDomain";

/// A fired watch: the path that changed and the token given when the watch was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Path that changed (or the special path).
    pub path: String,
    /// Token of the watch.
    pub token: String,
}

/// Identifies a watch for [`Store::unwatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WatchId(pub u64);

/// XenStore operations used by XenBus drivers. Paths are absolute.
pub trait Store: Send + Sync + 'static {
    /// The value at `path`, `None` when the node does not exist.
    fn read(&self, path: &str) -> Result<Option<String>, Error>;
    /// Writes `value` at `path`, creating missing parents.
    fn write(&self, path: &str, value: &str) -> Result<(), Error>;
    /// Writes several nodes atomically (one transaction).
    fn write_all(&self, entries: &[(String, String)]) -> Result<(), Error>;
    /// Children of `path` (empty when it does not exist).
    fn directory(&self, path: &str) -> Result<Vec<String>, Error>;
    /// Removes `path` and everything below it (no error when missing).
    fn rm(&self, path: &str) -> Result<(), Error>;
    /// Sets a watch on `path` (or a special `@` path): events go to `tx`.
    fn watch(&self, path: &str, token: &str, tx: Sender<WatchEvent>) -> Result<WatchId, Error>;
    /// Removes a watch.
    fn unwatch(&self, id: WatchId) -> Result<(), Error>;
    /// True while domain `domid` exists (for `@releaseDomain` handling).
    fn domain_alive(&self, domid: DomId) -> Result<bool, Error>;
    /// Sets `path`'s permissions as a toolstack does for device directories: `owner` owns
    /// it (others get no access by default) and each of `readers` may read it.
    fn set_perms(&self, path: &str, owner: DomId, readers: &[DomId]) -> Result<(), Error>;

    /// Reads and parses `path`; `None` when missing, [`Error::BadValue`] when unparsable.
    fn read_parse<T: std::str::FromStr>(&self, path: &str) -> Result<Option<T>, Error>
    where
        Self: Sized,
    {
        match self.read(path)? {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| Error::BadValue {
                path: path.into(),
                value: v,
            }),
        }
    }
}

struct MemWatch {
    path: String,
    token: String,
    tx: Sender<WatchEvent>,
}

#[derive(Default)]
struct MemInner {
    nodes: BTreeMap<String, String>,
    watches: BTreeMap<u64, MemWatch>,
    dead: Vec<DomId>,
}

/// An in-memory [`Store`] with xenstore's tree and watch semantics (no permissions).
#[derive(Default, Clone)]
pub struct MemStore {
    inner: Arc<Mutex<MemInner>>,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStore").finish_non_exhaustive()
    }
}

fn is_at_or_below(path: &str, watched: &str) -> bool {
    path == watched
        || (watched == "/" && path.starts_with('/'))
        || (path.starts_with(watched) && path.as_bytes().get(watched.len()) == Some(&b'/'))
}

fn check_path(path: &str) -> Result<(), Error> {
    let ok = (path.starts_with('/') && !path.ends_with('/') && !path.contains("//"))
        || path == "/"
        || path.starts_with('@');
    if ok && path.len() <= xen_sys::XENSTORE_ABS_PATH_MAX as usize {
        Ok(())
    } else {
        Err(Error::BadPath(path.into()))
    }
}

impl MemInner {
    fn fire(&self, path: &str) {
        for w in self.watches.values() {
            // Watches fire for changes at or below their path, and (as xenstored does) for
            // the removal of a parent of their path.
            if is_at_or_below(path, &w.path) || is_at_or_below(&w.path, path) {
                let _ = w.tx.send(WatchEvent {
                    path: path.into(),
                    token: w.token.clone(),
                });
            }
        }
    }

    fn put(&mut self, path: &str, value: &str) {
        // Create missing parents with empty values, as xenstored does.
        let mut p = path;
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            if p.is_empty() || self.nodes.contains_key(p) {
                break;
            }
            self.nodes.insert(p.to_string(), String::new());
        }
        self.nodes.insert(path.to_string(), value.to_string());
    }
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// Marks `domid` dead, removes `/local/domain/<domid>` and fires `@releaseDomain`, as
    /// xenstored does when the hypervisor reports a domain gone.
    pub fn release_domain(&self, domid: DomId) {
        let mut g = self.inner.lock();
        g.dead.push(domid);
        let dir = crate::paths::domain_path(domid);
        let gone: Vec<String> = g
            .nodes
            .keys()
            .filter(|k| is_at_or_below(k, &dir))
            .cloned()
            .collect();
        for k in &gone {
            g.nodes.remove(k);
        }
        if !gone.is_empty() {
            g.fire(&dir);
        }
        g.fire(RELEASE_DOMAIN);
    }

    /// Number of watches currently set (for leak checks in tests).
    pub fn watch_count(&self) -> usize {
        self.inner.lock().watches.len()
    }
}

impl Store for MemStore {
    fn read(&self, path: &str) -> Result<Option<String>, Error> {
        check_path(path)?;
        Ok(self.inner.lock().nodes.get(path).cloned())
    }

    fn write(&self, path: &str, value: &str) -> Result<(), Error> {
        check_path(path)?;
        let mut g = self.inner.lock();
        g.put(path, value);
        g.fire(path);
        Ok(())
    }

    fn write_all(&self, entries: &[(String, String)]) -> Result<(), Error> {
        for (p, _) in entries {
            check_path(p)?;
        }
        let mut g = self.inner.lock();
        for (p, v) in entries {
            g.put(p, v);
        }
        for (p, _) in entries {
            g.fire(p);
        }
        Ok(())
    }

    fn directory(&self, path: &str) -> Result<Vec<String>, Error> {
        check_path(path)?;
        let g = self.inner.lock();
        let prefix = if path == "/" {
            "/".to_string()
        } else {
            format!("{path}/")
        };
        Ok(g.nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| {
                let rest = &k[prefix.len()..];
                (!rest.contains('/')).then(|| rest.to_string())
            })
            .collect())
    }

    fn rm(&self, path: &str) -> Result<(), Error> {
        check_path(path)?;
        let mut g = self.inner.lock();
        let gone: Vec<String> = g
            .nodes
            .keys()
            .filter(|k| is_at_or_below(k, path))
            .cloned()
            .collect();
        for k in &gone {
            g.nodes.remove(k);
        }
        if !gone.is_empty() {
            g.fire(path);
        }
        Ok(())
    }

    fn watch(&self, path: &str, token: &str, tx: Sender<WatchEvent>) -> Result<WatchId, Error> {
        check_path(path)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut g = self.inner.lock();
        // A new watch fires once, immediately.
        let _ = tx.send(WatchEvent {
            path: path.into(),
            token: token.into(),
        });
        g.watches.insert(
            id,
            MemWatch {
                path: path.into(),
                token: token.into(),
                tx,
            },
        );
        Ok(WatchId(id))
    }

    fn unwatch(&self, id: WatchId) -> Result<(), Error> {
        self.inner
            .lock()
            .watches
            .remove(&id.0)
            .map(|_| ())
            .ok_or(Error::NoSuchWatch)
    }

    fn domain_alive(&self, domid: DomId) -> Result<bool, Error> {
        Ok(!self.inner.lock().dead.contains(&domid))
    }

    /// The in-memory store has no permissions: checks the path exists.
    fn set_perms(&self, path: &str, _owner: DomId, _readers: &[DomId]) -> Result<(), Error> {
        check_path(path)?;
        if self.inner.lock().nodes.contains_key(path) {
            Ok(())
        } else {
            Err(Error::Missing(path.into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crossbeam_channel::unbounded;

    use super::*;

    #[test]
    fn tree_semantics() {
        let s = MemStore::new();
        s.write("/a/b/c", "1").unwrap();
        assert_eq!(s.read("/a/b").unwrap().as_deref(), Some(""));
        assert_eq!(s.read("/a/b/c").unwrap().as_deref(), Some("1"));
        s.write("/a/b/d", "2").unwrap();
        s.write("/a/bb", "3").unwrap();
        assert_eq!(s.directory("/a/b").unwrap(), vec!["c", "d"]);
        assert_eq!(s.directory("/a").unwrap(), vec!["b", "bb"]);
        assert!(s.directory("/nope").unwrap().is_empty());
        s.rm("/a/b").unwrap();
        assert_eq!(s.read("/a/b/c").unwrap(), None);
        assert_eq!(s.read("/a/bb").unwrap().as_deref(), Some("3"));
        assert!(matches!(s.write("a/b", "x"), Err(Error::BadPath(_))));
        assert!(matches!(s.read("/a//b"), Err(Error::BadPath(_))));
        assert!(matches!(s.read("/a/"), Err(Error::BadPath(_))));
        s.write("/n", "12").unwrap();
        assert_eq!(s.read_parse::<u32>("/n").unwrap(), Some(12));
        assert!(matches!(s.read_parse::<u8>("/a/bb/x"), Ok(None)));
        s.write("/n", "x").unwrap();
        assert!(matches!(
            s.read_parse::<u32>("/n"),
            Err(Error::BadValue { .. })
        ));
    }

    #[test]
    fn watches_fire_on_set_and_below_and_stop_after_unwatch() {
        let s = MemStore::new();
        let (tx, rx) = unbounded();
        let id = s.watch("/x", "tok", tx).unwrap();
        let t = Duration::from_secs(5);
        assert_eq!(rx.recv_timeout(t).unwrap().path, "/x");
        s.write("/x/y", "1").unwrap();
        let ev = rx.recv_timeout(t).unwrap();
        assert_eq!((ev.path.as_str(), ev.token.as_str()), ("/x/y", "tok"));
        s.write("/xy", "1").unwrap();
        assert!(
            rx.try_recv().is_err(),
            "sibling with common prefix must not fire"
        );
        s.rm("/").unwrap();
        assert!(rx.recv_timeout(t).is_ok(), "removing a parent fires");
        s.unwatch(id).unwrap();
        s.write("/x", "2").unwrap();
        assert!(rx.try_recv().is_err());
        assert!(matches!(s.unwatch(id), Err(Error::NoSuchWatch)));
        assert_eq!(s.watch_count(), 0);
    }

    #[test]
    fn release_domain_fires_and_cleans_up() {
        let s = MemStore::new();
        s.write("/local/domain/3/device/vbd/1/state", "1").unwrap();
        let (tx, rx) = unbounded();
        s.watch(RELEASE_DOMAIN, "r", tx).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(s.domain_alive(DomId(3)).unwrap());
        s.release_domain(DomId(3));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap().path,
            RELEASE_DOMAIN
        );
        assert!(!s.domain_alive(DomId(3)).unwrap());
        assert!(s.directory("/local/domain").unwrap().is_empty());
    }
}
