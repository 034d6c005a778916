//! A drop-in for Xen's `xenconsoled` (`tools/console/daemon/`), as a library and a program.
//!
//! For every guest (domains from 1 up, found through `xenctrl` when xenstored fires
//! `@introduceDomain` or `@releaseDomain`), the daemon reads `console/ring-ref`,
//! `console/port` and `console/type` under the guest's xenstore home, maps its console page
//! (grant `GNTTAB_RESERVED_CONSOLE` first, as Xen's daemon does, else the frame
//! `ring-ref` names through a foreign mapping), binds the console event channel, opens a
//! pty and publishes it in `console/tty` (what `xl console` and `xe`'s console access open),
//! and writes the guest's output to `<log-dir>/guest-<name>.log` when asked. With `hv`
//! logging it also copies the hypervisor's console ring to `<log-dir>/hypervisor.log` on
//! each `VIRQ_CON_RING`. Logs are reopened on request ([`DaemonHandle::reopen_logs`], which
//! the program ties to SIGHUP, for log rotation).
//!
//! A guest cannot slow the others: as in io.c, each console may take 30 events per 200 ms
//! before its event channel is left masked until the next period, each event moves at most
//! one ring (2 KiB), and the output waiting for a slow pty reader is bounded by
//! `console/limit` (1 MiB, libxl's value, when the toolstack wrote none), past which the
//! middle is discarded (`--overflow-data=discard`, the default) or the guest is made to wait
//! (`keep`).
//!
//! Everything the daemon touches goes through the project's traits (`xenctrl::XenControl`,
//! `evtchn::EventChannel`, `gnttab::GrantMap`, `xenbus::Store`), so with the `sim` feature
//! it serves guests of the simulated host (`xen_sim`) against the project's xenstored, which
//! is how its tests run:
//!
//! ```
//! # #[cfg(feature = "sim")] {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use xen_types::{DomId, EvtchnPort, Pfn};
//! use xenbus::{testing::TestXenstore, Store};
//! use xenconsoled::{Config, Daemon, Hypervisor};
//! use xenctrl::{DomainConfig, GuestImage, ImageSource, Pages, Xen};
//!
//! let host = xen_sim::Host::default();
//! let xs = TestXenstore::start()?;
//! let logs = tempfile::tempdir()?;
//! let h = host.clone();
//! let daemon = Daemon::new(
//!     Config { log_guest: true, log_dir: logs.path().into(), ..Config::default() },
//!     Hypervisor {
//!         xen: Xen::sim(host.clone()),
//!         gnttab: Some(gnttab::Gnttab::open_sim(&host, DomId::DOM0)?),
//!         open_evtchn: Box::new(move || evtchn::Evtchn::open_sim(&h, DomId::DOM0)),
//!     },
//!     xs.dom0().clone(),
//! )?
//! .start()?;
//!
//! // A toolstack builds a guest, writes its console nodes and introduces it.
//! let xen = Xen::sim(host.clone());
//! let dom = xen.create_domain(&DomainConfig::pv(1))?;
//! xen.set_max_vcpus(dom, 1)?;
//! let kernel = ImageSource::Bytes(xen_sim::domain::sample_kernel(1 << 20));
//! let built = xen.build(dom, &GuestImage::new(kernel, Pages::from_mib(16)))?;
//! let home = format!("/local/domain/{}", dom.0);
//! xs.dom0().write_all(&[
//!     (format!("{home}/name"), "web".into()),
//!     (format!("{home}/console/ring-ref"), built.console.mfn.0.to_string()),
//!     (format!("{home}/console/port"), built.console.port.0.to_string()),
//! ])?;
//! xs.dom0().client().introduce(dom, Pfn(0), EvtchnPort(1))?;
//!
//! // The guest writes its console; the line reaches its log.
//! let guest = xen_sim::console::GuestConsole::attach(&host, dom)?;
//! guest.write_all(b"Linux version 6.1\n", Duration::from_secs(5))?;
//! let log = logs.path().join("guest-web.log");
//! for _ in 0..2000 {
//!     if std::fs::read(&log).unwrap_or_default() == b"Linux version 6.1\n" {
//!         break;
//!     }
//!     std::thread::sleep(Duration::from_millis(5));
//! }
//! assert_eq!(std::fs::read(&log)?, b"Linux version 6.1\n");
//! assert!(daemon.console(dom)?.unwrap().tty.unwrap().starts_with("/dev/pts/"));
//! daemon.stop()?;
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod buffer;
mod console;
mod daemon;
mod log;
mod pty;

use std::path::PathBuf;
use std::time::Duration;

pub use daemon::{ConsoleStatus, Daemon, DaemonHandle, Hypervisor};
use xen_types::DomId;

/// Events a console may take in one [`RATE_LIMIT_PERIOD`] (io.c's `RATE_LIMIT_ALLOWANCE`).
pub const RATE_LIMIT_ALLOWANCE: u32 = 30;
/// The rate-limit period (io.c's `RATE_LIMIT_PERIOD`, 200 ms).
pub const RATE_LIMIT_PERIOD: Duration = Duration::from_millis(200);
/// The output limit when `console/limit` is absent (libxl's `LIBXL_XENCONSOLE_LIMIT`).
pub const DEFAULT_LIMIT: usize = 1 << 20;
/// The default log directory (`XEN_LOG_DIR "/console"`).
pub const DEFAULT_LOG_DIR: &str = "/var/log/xen/console";

/// What the daemon does (the C daemon's command-line options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Log guests' output (`--log=guest|all`).
    pub log_guest: bool,
    /// Log the hypervisor's console ring (`--log=hv|all`).
    pub log_hv: bool,
    /// Time-stamp guest logs (`--timestamp=guest|all`).
    pub timestamp_guest: bool,
    /// Time-stamp the hypervisor log (`--timestamp=hv|all`).
    pub timestamp_hv: bool,
    /// Where logs go (`--log-dir`).
    pub log_dir: PathBuf,
    /// Discard the middle of output past the limit (`--overflow-data=discard`, the
    /// default) rather than make the guest wait (`keep`).
    pub discard_overflowed_data: bool,
    /// Write ESC as `.` in logs (`--replace-escape`).
    pub replace_escape: bool,
}

impl Default for Config {
    /// The C daemon's defaults: no logs, no time stamps, discard, `/var/log/xen/console`.
    fn default() -> Self {
        Config {
            log_guest: false,
            log_hv: false,
            timestamp_guest: false,
            timestamp_hv: false,
            log_dir: PathBuf::from(DEFAULT_LOG_DIR),
            discard_overflowed_data: true,
            replace_escape: false,
        }
    }
}

/// Errors of the console daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A xenstore operation failed.
    #[error("xenstore: {0}")]
    Store(#[from] xenbus::Error),
    /// A hypervisor call failed.
    #[error("{0}")]
    Xen(#[from] xenctrl::Error),
    /// An event-channel operation failed.
    #[error("event channel: {0}")]
    Evtchn(#[from] evtchn::Error),
    /// A node the console needs is missing.
    #[error("domain {dom}: {path} is missing")]
    Missing {
        /// The guest.
        dom: DomId,
        /// The node.
        path: String,
    },
    /// A node holds a value that does not parse.
    #[error("domain {dom}: bad value {value:?} at {path}")]
    BadValue {
        /// The guest.
        dom: DomId,
        /// The node.
        path: String,
        /// What it holds.
        value: String,
    },
    /// The console page could not be mapped, neither by grant nor by frame.
    #[error(
        "domain {dom}: cannot map the console page (grant: {grant}; frame {frame:#x}: {foreign})"
    )]
    Map {
        /// The guest.
        dom: DomId,
        /// Why the grant map failed.
        grant: String,
        /// The frame tried.
        frame: u64,
        /// Why the foreign map failed.
        foreign: String,
    },
    /// The guest broke its console ring.
    #[error("domain {dom}: {source}")]
    Ring {
        /// The guest.
        dom: DomId,
        /// What is wrong.
        source: xen_ring::console::ConsoleError,
    },
    /// A file, pty or pipe operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}
