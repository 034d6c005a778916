//! A thin toolstack: the XAPI object model, a XenAPI server (`xapi`) and an `xe` CLI.
//!
//! Layers, bottom up:
//! - [`datamodel`]: XAPI's classes and fields; [`db`]: the object database, written through
//!   to SQLite (crash-safe) with generations for `event.from`;
//! - [`backend`]: the host VM lifecycle drives: `xenctrl` (real Xen or `xen-sim`) and a
//!   xenstored (running, or our engine in process); [`devices`]: what serves a real host's
//!   devices (device models, hotplug); [`simguest`]: the guests' side of the
//!   simulated host;
//! - [`tasks`]: one serialized queue of operations per VM, and `Async.*` calls as tasks;
//! - [`xenops`]: the VM lifecycle on the host (xenopsd's role) from a typed configuration
//!   read once from the database;
//! - [`api`]: the XenAPI messages, split by concern (dispatch, sessions, generic fields,
//!   VMs, networks, storage, GPUs, events); [`server`]: XML-RPC/JSON-RPC over HTTP(S) and a unix
//!   socket; [`client`] and [`cli`]: a client and `xe`.
//!
//! ```
//! use std::sync::Arc;
//! use toolstack::{api::{Credentials, Xapi}, backend::Backend, db::Db, host, value::Value};
//!
//! let db = Db::in_memory();
//! host::bootstrap(&db, &host::HostConfig::simulated()).unwrap();
//! let backend = Arc::new(Backend::simulated(16 << 30, 1 << 30, 4).unwrap());
//! let xapi = Xapi::new(db, backend, Credentials::new("root", "pw").unwrap()).unwrap();
//! let session = xapi
//!     .call("session.login_with_password", &[Value::str("root"), Value::str("pw")])
//!     .unwrap();
//! let vms = xapi.call("VM.get_all", &[session]).unwrap();
//! assert_eq!(vms.as_array().unwrap().len(), 1); // dom0
//! ```

pub mod api;
pub mod audit;
pub mod backend;
pub mod cli;
mod cli_create;
mod cli_memory;
mod cli_storage;
pub mod client;
pub mod datamodel;
pub mod db;
pub mod devices;
pub mod error;
pub mod guest_agent;
pub mod ha;
pub mod host;
pub mod memory;
pub mod metrics;
pub mod metrics_http;
pub mod metrics_qmp;
pub mod pool;
pub mod server;
pub mod simguest;
pub mod storage;
pub mod supervise;
pub mod suspend_image;
pub mod tasks;
pub mod value;
pub mod web;
pub mod xenops;
pub mod xmlrpc;

pub use error::{ApiError, Error};

/// Writes a file readable only by its owner, durably (temporary file, fsync, rename).
pub fn write_private_file(path: &std::path::Path, data: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| Error::Io(path.display().to_string(), e);
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}
