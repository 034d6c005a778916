//! `netbackd`: serves Xen network devices (vifs) with the project's userspace netback.
//!
//! Watches `/local/domain/<backend-domid>/backend/vif` in xenstore (libxl always writes vifs
//! there) and runs the netif handshake for every device that appears, where the kernel's
//! `xen-netback` module is not loaded. For each device it creates the tap `vif<domid>.<devid>`
//! before publishing InitWait, so that libxl's hotplug script (`vif-bridge`) finds it, puts
//! it on the bridge and writes `hotplug-status=connected`; only then does the device go
//! Connected (as Linux's netback waits). `/proc/net/dev` shows the tap's counters, where
//! xentop reads vif statistics. It runs until SIGTERM or SIGINT, then closes every device.
//!
//! With `--domid N` it serves only domain N's vifs and exits once domain N is gone.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use netback::{Config, NetBack};
use nix::sys::signal::{SigSet, Signal};
use xen_types::DomId;
use xenbus::{Backend, Store, XsStore};

/// A userspace Xen network backend daemon.
#[derive(Debug, Parser)]
#[command(name = "netbackd", version)]
struct Cli {
    /// The domain this backend runs in (its directories are under
    /// `/local/domain/<id>/backend/vif`).
    #[arg(long, default_value_t = 0)]
    backend_domid: u16,
    /// Serve only domain DOMID's vifs, and exit when it is gone.
    #[arg(long, value_name = "DOMID")]
    domid: Option<u16>,
    /// Write the daemon's pid here once it is watching.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// `multi-queue-max-queues`: queues (ring pairs) per vif, 1 to 64.
    #[arg(long, default_value_t = Config::default().max_queues)]
    max_queues: u32,
    /// Do not wait for the hotplug script: write `hotplug-status=connected` at once (for
    /// toolstacks that run no script).
    #[arg(long)]
    no_hotplug_wait: bool,
    /// Grant-map (instead of copy) the data of tx packets of at least BYTES bytes; 0:
    /// always copy.
    #[arg(long, value_name = "BYTES", default_value_t = netback::driver::DEFAULT_TX_MAP_MIN)]
    tx_map_min: usize,
}

/// Where tap devices are made.
const TUN: &str = "/dev/net/tun";

impl Cli {
    fn config(&self) -> Result<Config, String> {
        if !(1..=64).contains(&self.max_queues) {
            return Err(format!(
                "--max-queues {} is out of range (1 to 64)",
                self.max_queues
            ));
        }
        if self.domid == Some(self.backend_domid) {
            return Err(format!(
                "--domid {} is the backend's own domain",
                self.backend_domid
            ));
        }
        Ok(Config {
            max_queues: self.max_queues,
            wait_hotplug: !self.no_hotplug_wait,
            tx_map_min: (self.tx_map_min > 0).then_some(self.tx_map_min),
            ..Config::default()
        })
    }
}

fn run(cli: &Cli) -> Result<Signal, String> {
    let cfg = cli.config()?;
    // Every thread started below inherits this mask, so only `wait` sees the signals.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGHUP);
    signals
        .thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    let driver =
        Arc::new(NetBack::open(cfg).map_err(|e| format!("opening grant and event devices: {e}"))?);
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(TUN)
        .map_err(|e| format!("{TUN}: {e} (tap devices are needed: load the tun module)"))?;
    let store = Arc::new(XsStore::connect().map_err(|e| format!("connecting to xenstored: {e}"))?);
    let backend_id = DomId(cli.backend_domid);
    if let Some(d) = cli.domid {
        if !store.domain_alive(DomId(d)).map_err(|e| e.to_string())? {
            return Err(format!("domain {d} does not exist"));
        }
    }
    let backend = match cli.domid {
        None => Backend::start(store.clone(), backend_id, driver),
        Some(d) => Backend::start_for(store.clone(), backend_id, DomId(d), driver),
    }
    .map_err(|e| format!("watching the backend directory: {e}"))?;
    if let Some(d) = cli.domid {
        exit_when_gone(store.clone(), DomId(d))?;
    }
    if let Some(p) = &cli.pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .map_err(|e| format!("writing {}: {e}", p.display()))?;
    }
    tracing::info!(
        "serving /local/domain/{}/backend/vif{}",
        cli.backend_domid,
        cli.domid.map(|d| format!("/{d}")).unwrap_or_default()
    );
    let sig = signals.wait().map_err(|e| format!("waiting: {e}"))?;
    tracing::info!("{sig}: closing {} device(s)", backend.devices().len());
    backend.stop();
    if let Some(p) = &cli.pid_file {
        let _ = std::fs::remove_file(p);
    }
    Ok(sig)
}

/// Ends the daemon (as SIGTERM would) once domain `domid` is gone.
fn exit_when_gone(store: Arc<XsStore>, domid: DomId) -> Result<(), String> {
    let (tx, rx) = crossbeam_channel::unbounded();
    store
        .watch(xenbus::store::RELEASE_DOMAIN, "netbackd", tx)
        .map_err(|e| format!("watching @releaseDomain: {e}"))?;
    std::thread::Builder::new()
        .name("netbackd-release".into())
        .spawn(move || {
            for _ in rx {
                if !store.domain_alive(domid).unwrap_or(true) {
                    tracing::info!("domain {} is gone", domid.get());
                    let _ = nix::sys::signal::kill(nix::unistd::getpid(), Signal::SIGTERM);
                    return;
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(&cli) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netbackd: {e}");
            ExitCode::FAILURE
        }
    }
}
