//! The xenstore access a XenBus driver needs, as a small trait.
//!
//! [`Store`] is what the device framework uses; [`XsStore`](crate::XsStore) implements it
//! over a xenstored connection (a real one, or the project's xenstored in process:
//! `testing`, feature `test-utils`), with xenstore's watch semantics (a watch fires once
//! when set, then for every change at or below its path; `@releaseDomain` fires when a
//! domain is released).

use crossbeam_channel::Sender;
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
