//! The project's xenstored in process, for tests, benches and examples (feature `test-utils`).
//!
//! [`TestXenstore`] runs [`xenstored::Daemon`] (the engine that serves real dom0s) on a socket
//! in a temporary folder and hands out [`XsStore`]s over it: dom0's (privileged) and each
//! guest's (a connection acting as that domain, as over its ring), so the permissions a
//! toolstack sets and the watches that fire are xenstored's own. [`SimBalloons`] plays the
//! xenstore side of the simulated guests' balloon drivers (`xen_sim::balloon`).
//!
//! ```
//! use xen_types::DomId;
//! use xenbus::testing::TestXenstore;
//! use xenbus::Store;
//!
//! let xs = TestXenstore::start()?;
//! xs.dom0().write("/local/domain/3/name", "guest")?;
//! xs.dom0().set_perms("/local/domain/3/name", DomId::DOM0, &[])?;
//! let guest = xs.guest(DomId(3))?;
//! assert!(guest.read("/local/domain/3/name").is_err(), "dom0's node, not readable");
//! # Ok::<(), xenbus::Error>(())
//! ```

use std::sync::Arc;

use xen_types::{DomId, EvtchnPort, Pfn};
use xenstore::{Client, FdTransport};
use xenstored::{Config, Daemon, DaemonHandle, SyncMode};

pub use crate::sim_balloon::SimBalloons;
use crate::xs::xs;
use crate::{paths, Error, Store, XsStore};

/// A running in-process xenstored and dom0's connection to it. Dropping it stops the
/// daemon (guests' stores then see their connections closed).
pub struct TestXenstore {
    dom0: Arc<XsStore>,
    daemon: Option<DaemonHandle>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestXenstore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestXenstore")
            .field("socket", &self._dir.path())
            .finish_non_exhaustive()
    }
}

impl TestXenstore {
    /// Starts a daemon that keeps its store in memory (no journal).
    pub fn start() -> Result<TestXenstore, Error> {
        let dir = tempfile::tempdir().map_err(Error::TestXenstored)?;
        let cfg = Config {
            socket_path: dir.path().join("socket"),
            data_dir: None,
            sync: SyncMode::Never,
            ..Config::default()
        };
        let daemon = Daemon::new(cfg)
            .and_then(Daemon::spawn)
            .map_err(|e| Error::TestXenstored(std::io::Error::other(e)))?;
        let client = Client::connect_socket(daemon.socket_path()).map_err(xs)?;
        Ok(TestXenstore {
            dom0: Arc::new(XsStore::new(client)?),
            daemon: Some(daemon),
            _dir: dir,
        })
    }

    /// dom0's (privileged) connection.
    pub fn dom0(&self) -> &Arc<XsStore> {
        &self.dom0
    }

    /// Domain `domid` as a toolstack makes it known once it built the domain (its home
    /// `/local/domain/<domid>`, owned by it, and an introduction to xenstored), and a
    /// connection acting as it (with its permissions and quotas). Each call opens a new
    /// connection.
    pub fn guest(&self, domid: DomId) -> Result<Arc<XsStore>, Error> {
        let home = paths::domain_path(domid);
        if self.dom0.read(&home)?.is_none() {
            self.dom0.write(&home, "")?;
            self.dom0.set_perms(&home, domid, &[])?;
        }
        if !self.dom0.client().is_domain_introduced(domid).map_err(xs)? {
            // No ring is served for it (the daemon has no ring connector): the connection
            // below stands for the domain's ring.
            self.dom0
                .client()
                .introduce(domid, Pfn(0), EvtchnPort(1))
                .map_err(xs)?;
        }
        let conn = self
            .daemon
            .as_ref()
            .ok_or_else(|| Error::TestXenstored(std::io::ErrorKind::NotConnected.into()))?
            .connect_as(domid)
            .map_err(Error::TestXenstored)?;
        let client = Client::with_transport(FdTransport::from(conn)).map_err(xs)?;
        Ok(Arc::new(XsStore::new(client)?))
    }

    /// Domain `domid` is destroyed, in libxl's order: the toolstack removes
    /// `/local/domain/<domid>`, then xenstored, told the domain is gone, releases it (the
    /// nodes it owns go, `@releaseDomain` fires, its connections close).
    pub fn destroy_domain(&self, domid: DomId) -> Result<(), Error> {
        self.dom0.rm(&paths::domain_path(domid))?;
        self.dom0.client().release(domid).map_err(xs)
    }
}

impl Drop for TestXenstore {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            let _ = d.shutdown();
        }
    }
}
