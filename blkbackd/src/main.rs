//! `blkbackd`: serves Xen block devices with the project's userspace blkback.
//!
//! Watches `/local/domain/<backend-domid>/backend/<type>` in xenstore and runs the blkif
//! handshake for every device that appears there, as QEMU's `xen-block` does for
//! `backendtype=qdisk` disks. With the default `--type qdisk` it serves what
//! `xl block-attach <dom> 'vdev=xvdb, backendtype=qdisk, target=/images/a.img'` (or a
//! toolstack writing the same directories) creates, beside the kernel's `xen-blkback`, which
//! serves `vbd`. A `target` that is a qcow2 image is served with its backing chain (the
//! storage manager's VDIs, crate `sm`). It runs until SIGTERM or SIGINT, then closes every device: in-flight
//! requests complete and are answered before their grants are unmapped.
//!
//! With `--domid N` it is domain N's device model instead, as the QEMU that libxl starts for
//! a PV domain with qdisk disks: it serves only N's devices, records itself where libxl
//! looks for a device model (`/local/domain/N/image/device-model-pid`, and
//! `/local/domain/0/device-model/N/state` = `running`), so that `xl block-attach` and
//! `xl destroy` treat it as one (libxl stops a device model with SIGHUP), and exits once
//! domain N is gone.
//!
//! Like QEMU, it answers libxenstat's QMP queries on `/var/run/xen/qmp-libxenstat-<domid>`
//! (`--qmp-dir`; `--no-qmp` to turn it off) for each domain with connected disks, so that
//! C xentop and ours count its disks ([`qmp`]); on the same socket the toolstack pauses a
//! disk and resumes it on the new leaf of its chain around a snapshot taken while the guest
//! runs (`x-blkbackd-pause`, `x-blkbackd-resume`).

mod qmp;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use blkback::{BlkBack, Config};
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use xen_types::DomId;
use xenbus::{Backend, Store, XsStore};

/// A userspace Xen block backend daemon.
#[derive(Debug, Parser)]
#[command(name = "blkbackd", version)]
struct Cli {
    /// Backend directory type to serve: `qdisk` (libxl's `backendtype=qdisk`), or `vbd`
    /// where the kernel's xen-blkback is not loaded.
    #[arg(long = "type", default_value = "qdisk")]
    device_type: String,
    /// The domain this backend runs in (its directories are under
    /// `/local/domain/<id>/backend`).
    #[arg(long, default_value_t = 0)]
    backend_domid: u16,
    /// Serve only domain DOMID's devices, as its device model (see above).
    #[arg(long, value_name = "DOMID")]
    domid: Option<u16>,
    /// Write the daemon's pid here once it is watching.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// I/O threads per device.
    #[arg(long, default_value_t = Config::default().io_threads)]
    io_threads: usize,
    /// `multi-queue-max-queues`: rings per device.
    #[arg(long, default_value_t = Config::default().max_queues)]
    max_queues: u32,
    /// `max-ring-page-order`: ring pages per queue, as a power of two.
    #[arg(long, default_value_t = Config::default().max_ring_page_order)]
    max_ring_page_order: u32,
    /// `feature-max-indirect-segments` (0: no indirect requests).
    #[arg(long, default_value_t = Config::default().max_indirect_segments)]
    max_indirect_segments: u32,
    /// Do not offer `feature-persistent`.
    #[arg(long)]
    no_persistent: bool,
    /// The longest a ring thread polls its idle ring before sleeping on its event channel,
    /// in microseconds (the window adapts to the frontend's pace; 0: never poll).
    #[arg(long, value_name = "US", default_value_t = Config::default().idle_poll.as_micros() as u64)]
    idle_poll_us: u64,
    /// Do not offer `feature-discard`.
    #[arg(long)]
    no_discard: bool,
    /// Where the `qmp-libxenstat-<domid>` sockets go (libxenstat's `XEN_RUN_DIR`), through
    /// which xentop counts the disks served here.
    #[arg(long, default_value = "/var/run/xen")]
    qmp_dir: PathBuf,
    /// Do not answer libxenstat's QMP queries.
    #[arg(long)]
    no_qmp: bool,
}

impl Cli {
    fn config(&self) -> Config {
        Config {
            device_type: self.device_type.clone(),
            io_threads: self.io_threads.max(1),
            max_queues: self.max_queues.max(1),
            max_ring_page_order: self.max_ring_page_order,
            max_indirect_segments: self.max_indirect_segments,
            persistent: !self.no_persistent,
            discard: !self.no_discard,
            idle_poll: std::time::Duration::from_micros(self.idle_poll_us),
            ..Config::default()
        }
    }
}

fn run(cli: &Cli) -> Result<Signal, String> {
    // Every thread started below inherits this mask, so only `wait` sees the signals.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGHUP);
    signals
        .thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    let driver = Arc::new(
        BlkBack::open(cli.config()).map_err(|e| format!("opening grant and event devices: {e}"))?,
    );
    let store = Arc::new(XsStore::connect().map_err(|e| format!("connecting to xenstored: {e}"))?);
    let _qmp = if cli.no_qmp {
        None
    } else {
        let d = driver.clone();
        let source: qmp::Source = Arc::new(move || d.devices());
        match qmp::QmpServer::start(cli.qmp_dir.clone(), cli.domid.map(DomId), source) {
            Ok(s) => Some(s),
            // The disks are served all the same; only xentop does not see them.
            Err(e) => {
                tracing::warn!("no QMP sockets in {}: {e}", cli.qmp_dir.display());
                None
            }
        }
    };
    let stats = driver.stats().clone();
    let backend_id = DomId(cli.backend_domid);
    let backend = match cli.domid {
        None => Backend::start(store.clone(), backend_id, driver),
        Some(d) => Backend::start_for(store.clone(), backend_id, DomId(d), driver),
    }
    .map_err(|e| format!("watching the backend directory: {e}"))?;
    let model = match cli.domid {
        Some(d) => Some(DeviceModel::register(store.clone(), DomId(d))?),
        None => None,
    };
    if let Some(p) = &cli.pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .map_err(|e| format!("writing {}: {e}", p.display()))?;
    }
    tracing::info!(
        "serving /local/domain/{}/backend/{}{}",
        cli.backend_domid,
        cli.device_type,
        cli.domid.map(|d| format!("/{d}")).unwrap_or_default()
    );
    let sig = signals.wait().map_err(|e| format!("waiting: {e}"))?;
    tracing::info!("{sig}: closing {} device(s)", backend.devices().len());
    backend.stop();
    tracing::info!(
        "served {} requests; rings found requests by polling {} times, slept {} times",
        stats.requests(),
        stats.polled(),
        stats.sleeps()
    );
    drop(model);
    if let Some(p) = &cli.pid_file {
        let _ = std::fs::remove_file(p);
    }
    Ok(sig)
}

/// Registration as domain `domid`'s device model, and the watch that ends the daemon when
/// the domain is gone.
struct DeviceModel {
    store: Arc<XsStore>,
    domid: DomId,
}

impl DeviceModel {
    fn pid_path(domid: DomId) -> String {
        format!("/local/domain/{}/image/device-model-pid", domid.get())
    }

    /// dom0's directory for domain `domid`'s device model.
    fn dir(domid: DomId) -> String {
        format!("/local/domain/0/device-model/{}", domid.get())
    }

    fn register(store: Arc<XsStore>, domid: DomId) -> Result<DeviceModel, String> {
        if !store.domain_alive(domid).map_err(|e| e.to_string())? {
            return Err(format!("domain {} does not exist", domid.get()));
        }
        let pid_path = Self::pid_path(domid);
        if let Some(pid) = store.read(&pid_path).map_err(|e| e.to_string())? {
            return Err(format!(
                "domain {} already has a device model (pid {pid})",
                domid.get()
            ));
        }
        store
            .write_all(&[
                (pid_path, std::process::id().to_string()),
                (format!("{}/state", Self::dir(domid)), "running".into()),
            ])
            .map_err(|e| format!("registering as domain {}'s device model: {e}", domid.get()))?;
        // From here on, dropping `m` (on any error below, or at exit) unregisters.
        let m = DeviceModel { store, domid };
        // The domain's death ends the daemon as a signal would.
        let (tx, rx) = crossbeam_channel::unbounded();
        m.store
            .watch(xenbus::store::RELEASE_DOMAIN, "blkbackd", tx)
            .map_err(|e| format!("watching @releaseDomain: {e}"))?;
        let (store, dom) = (m.store.clone(), domid);
        std::thread::Builder::new()
            .name("blkbackd-release".into())
            .spawn(move || {
                for _ in rx {
                    if !store.domain_alive(dom).unwrap_or(true) {
                        tracing::info!("domain {} is gone", dom.get());
                        let _ = nix::sys::signal::kill(nix::unistd::getpid(), Signal::SIGTERM);
                        return;
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(m)
    }
}

impl Drop for DeviceModel {
    /// Removes what [`DeviceModel::register`] wrote, so that libxl does not take a stopped
    /// daemon for a running device model (the pid entry only while it is still ours).
    fn drop(&mut self) {
        let pid_path = Self::pid_path(self.domid);
        if self.store.read(&pid_path).ok().flatten() == Some(std::process::id().to_string()) {
            let _ = self.store.rm(&pid_path);
        }
        let _ = self.store.rm(&Self::dir(self.domid));
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(&cli) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blkbackd: {e}");
            ExitCode::FAILURE
        }
    }
}
