//! `xenstored`: the native XenStore daemon. Flags follow C xenstored's (Xen 4.17).

use std::path::PathBuf;

use clap::Parser;
use xen_types::DomId;
use xenstored::{Config, Daemon, DomainFate, Quotas, SyncMode};

/// A native XenStore daemon.
#[derive(Debug, Parser)]
#[command(name = "xenstored", disable_help_flag = true)]
struct Cli {
    /// Print help.
    #[arg(short = 'H', long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Do not fork into the background.
    #[arg(short = 'N', long = "no-fork")]
    no_fork: bool,
    /// Write the daemon's pid to this file.
    #[arg(short = 'F', long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Print the daemon's pid on stdout.
    #[arg(short = 'P', long = "output-pid")]
    output_pid: bool,
    /// Log every request and reply to this file.
    #[arg(short = 'T', long = "trace-file")]
    trace_file: Option<PathBuf>,
    /// Do not serve dom0's own kernel ring (`/proc/xen/xsd_kva` and `/proc/xen/xsd_port`),
    /// as C xenstored's flag: dom0's socket clients are served either way.
    #[arg(short = 'D', long = "no-domain-init")]
    no_domain_init: bool,
    /// Limit the number of nodes per domain.
    #[arg(short = 'E', long = "entry-nb")]
    entry_nb: Option<u32>,
    /// Limit the size of a node of a domain.
    #[arg(short = 'S', long = "entry-size")]
    entry_size: Option<usize>,
    /// Limit the number of watches per domain.
    #[arg(short = 'W', long = "watch-nb")]
    watch_nb: Option<u32>,
    /// Limit the number of transactions per domain.
    #[arg(short = 't', long = "transaction")]
    transaction: Option<u32>,
    /// Limit the number of permissions per node.
    #[arg(short = 'A', long = "perm-nb")]
    perm_nb: Option<usize>,
    /// Limit the path length (below the domain's home).
    #[arg(short = 'M', long = "path-max")]
    path_max: Option<usize>,
    /// Set a quota: transaction-nodes=N, outstanding=N (requests of ~1 KiB), memory=N
    /// (accepted, not enforced), nodes/watches/transactions/node-size/permissions/path-max.
    #[arg(short = 'Q', long = "quota", value_name = "WHAT=NB")]
    quota: Vec<String>,
    /// Soft quotas: accepted for compatibility, not enforced.
    #[arg(short = 'q', long = "quota-soft", value_name = "WHAT=NB")]
    quota_soft: Vec<String>,
    /// Timeouts: accepted for compatibility.
    #[arg(short = 'w', long = "timeout", value_name = "WHAT=SECONDS")]
    timeout: Vec<String>,
    /// Accepted for compatibility.
    #[arg(short = 'R', long = "no-recovery")]
    no_recovery: bool,
    /// "on" (default for C xenstored): keep the store in memory only; "off": persist it
    /// (this daemon persists unless told "on" explicitly or --data-dir is "none").
    #[arg(short = 'I', long = "internal-db", num_args = 0..=1, default_missing_value = "on")]
    internal_db: Option<String>,
    /// Keep (give to dom0) the nodes of released domains instead of deleting them.
    #[arg(short = 'K', long = "keep-orphans")]
    keep_orphans: bool,
    /// Verbose logging.
    #[arg(short = 'V', long = "verbose")]
    verbose: bool,
    /// The dom0 socket (default: $XENSTORED_RUNDIR/socket, else /var/run/xenstored/socket).
    #[arg(long = "socket")]
    socket: Option<PathBuf>,
    /// Extra socket whose clients act as unprivileged domain DOMID: DOMID:PATH.
    #[arg(long = "domain-socket", value_name = "DOMID:PATH")]
    domain_socket: Vec<String>,
    /// Where the store is persisted (default: the socket's folder).
    #[arg(long = "data-dir")]
    data_dir: Option<PathBuf>,
    /// Journal sync: "periodic" (write before each reply, fdatasync every second; default),
    /// "always" (fdatasync per batch of requests before replying), "never" (write only).
    #[arg(long = "sync", default_value = "periodic")]
    sync: String,
    /// Journal bytes after which a snapshot is written and older journals are dropped.
    #[arg(long = "snapshot-bytes")]
    snapshot_bytes: Option<u64>,
}

fn fail(msg: String) -> ! {
    eprintln!("xenstored: {msg}");
    std::process::exit(2);
}

fn apply_quota(q: &mut Quotas, spec: &str) {
    let Some((what, val)) = spec.split_once('=') else {
        fail(format!("bad quota {spec:?}: expected WHAT=NB"));
    };
    let n: u64 = val
        .parse()
        .unwrap_or_else(|_| fail(format!("bad quota value {val:?}")));
    match what {
        "transaction-nodes" => q.transaction_nodes = n as usize,
        "outstanding" => q.outstanding_bytes = (n as usize).saturating_mul(1024),
        "memory" => {}
        "nodes" => q.nodes = n as u32,
        "watches" => q.watches = n as u32,
        "transactions" => q.transactions = n as u32,
        "node-size" => q.node_size = n as usize,
        "permissions" | "node-permissions" => q.perms = n as usize,
        "path-max" => q.path_max = n as usize,
        _ => fail(format!("unknown quota {what:?}")),
    }
}

/// `VIRQ_DOM_EXC` on its own event-channel handle, and `xc_domain_getinfolist` to tell
/// which introduced domains are dying or gone.
fn domain_watch() -> Result<xenstored::DomainWatch, String> {
    use std::collections::HashMap;
    use std::sync::Arc;

    let xen = xenctrl::Xen::real().map_err(|e| format!("xenctrl: {e}"))?;
    let ev = evtchn::Evtchn::open().map_err(|e| format!("evtchn: {e}"))?;
    let port = ev
        .bind_virq(xen_types::Virq::DOM_EXC)
        .map_err(|e| format!("binding VIRQ_DOM_EXC: {e}"))?;
    let virq = Arc::new(xenstore::ring::EvtchnDoorbell::new(ev, port));
    let probe = move |doms: &[DomId]| -> Vec<(DomId, DomainFate)> {
        let list = match xen.list_domains() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("xc_domain_getinfolist: {e}");
                return Vec::new();
            }
        };
        // The domains not dying, each with whether it shut down.
        let alive: HashMap<DomId, bool> = list
            .iter()
            .filter(|i| !i.dying())
            .map(|i| (i.domid, i.is_shutdown()))
            .collect();
        doms.iter()
            .filter_map(|d| match alive.get(d) {
                None => Some((*d, DomainFate::Gone)),
                Some(true) => Some((*d, DomainFate::ShutDown)),
                Some(false) => None,
            })
            .collect()
    };
    Ok(xenstored::DomainWatch {
        virq,
        probe: Box::new(probe),
    })
}

fn main() {
    let cli = Cli::parse();
    let mut cfg = Config::default();
    if let Some(s) = &cli.socket {
        cfg.socket_path = s.clone();
    }
    let q = &mut cfg.quotas;
    if let Some(v) = cli.entry_nb {
        q.nodes = v;
    }
    if let Some(v) = cli.entry_size {
        q.node_size = v;
    }
    if let Some(v) = cli.watch_nb {
        q.watches = v;
    }
    if let Some(v) = cli.transaction {
        q.transactions = v;
    }
    if let Some(v) = cli.perm_nb {
        q.perms = v;
    }
    if let Some(v) = cli.path_max {
        q.path_max = v;
    }
    for s in &cli.quota {
        apply_quota(q, s);
    }
    cfg.keep_orphans = cli.keep_orphans;
    if let Some(b) = cli.snapshot_bytes {
        cfg.snapshot_after = b;
    }
    cfg.sync = match cli.sync.as_str() {
        "always" => SyncMode::Always,
        "periodic" => SyncMode::Periodic,
        "never" => SyncMode::Never,
        s => fail(format!("bad --sync {s:?}: periodic, always or never")),
    };
    for spec in &cli.domain_socket {
        let Some((d, p)) = spec.split_once(':') else {
            fail(format!("bad --domain-socket {spec:?}: expected DOMID:PATH"));
        };
        let d: u16 = d
            .parse()
            .unwrap_or_else(|_| fail(format!("bad domid in {spec:?}")));
        cfg.domain_sockets.push((DomId(d), PathBuf::from(p)));
    }
    let in_memory = cli.internal_db.as_deref() == Some("on");
    cfg.data_dir = match &cli.data_dir {
        Some(d) if d.as_os_str() == "none" => None,
        Some(d) => Some(d.clone()),
        None if in_memory => None,
        None => cfg.socket_path.parent().map(|p| p.to_path_buf()),
    };

    let level = if cli.verbose { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("XENSTORED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    match &cli.trace_file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
                .with_writer(std::sync::Mutex::new(f))
                .with_ansi(false)
                .init();
        }
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }

    // Bind before forking so the socket exists when the parent returns.
    let mut daemon = Daemon::new(cfg).unwrap_or_else(|e| fail(e.to_string()));
    // In a Xen dom0, serve introduced domains' rings through grant 1 and event channels.
    if std::path::Path::new(gnttab::GNTDEV_DEVICE).exists()
        && std::path::Path::new(evtchn::EVTCHN_DEVICE).exists()
    {
        match gnttab::Gnttab::open() {
            Ok(gt) => {
                daemon.set_ring_connector(xenstored::grant_ring_connector(gt, evtchn::Evtchn::open))
            }
            Err(e) => tracing::warn!("grant device unavailable, domain rings not served: {e}"),
        }
    }
    // In a Xen dom0 whose kernel expects a local xenstored: serve its xenbus ring as
    // domain 0, as C xenstored's dom0_init does. Skipped silently elsewhere.
    if !cli.no_domain_init {
        use std::path::Path;
        use xenstored::dom0;
        match dom0::open_dom0_ring(
            Path::new(dom0::XSD_KVA),
            Path::new(dom0::XSD_PORT),
            evtchn::Evtchn::open,
        ) {
            Ok(Some((mem, bell))) => daemon.serve_ring(DomId::DOM0, mem, bell),
            Ok(None) => {}
            Err(e) => fail(format!("dom0's xenstore ring ({}): {e}", dom0::XSD_KVA)),
        }
    }
    // In a Xen dom0: release introduced domains when they die (VIRQ_DOM_EXC).
    if std::path::Path::new(evtchn::EVTCHN_DEVICE).exists() {
        match domain_watch() {
            Ok(w) => daemon.watch_domains(w),
            Err(e) => tracing::warn!("dead domains will only be released by RELEASE: {e}"),
        }
    }
    if !cli.no_fork {
        // SAFETY: no other threads exist yet (the runtime is built after this), so forking
        // is sound; the child continues with the bound sockets.
        if let Err(e) = nix::unistd::daemon(true, false) {
            fail(format!("daemonizing: {e}"));
        }
    }
    let pid = std::process::id();
    if cli.output_pid {
        println!("{pid}");
    }
    if let Some(p) = &cli.pid_file {
        if let Err(e) = std::fs::write(p, format!("{pid}\n")) {
            fail(format!("{}: {e}", p.display()));
        }
    }
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    if let Err(e) = daemon.run(shutdown) {
        fail(e.to_string());
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent_and_takes_c_xenstored_flags() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from([
            "xenstored",
            "-N",
            "-F",
            "/p",
            "-E",
            "5",
            "-S",
            "100",
            "-W",
            "3",
            "-t",
            "2",
            "-A",
            "4",
            "-M",
            "64",
            "-Q",
            "transaction-nodes=9",
            "-I",
            "-K",
            "-V",
        ])
        .unwrap();
        assert!(c.no_fork && c.keep_orphans && c.verbose);
        assert_eq!(
            (c.entry_nb, c.watch_nb, c.path_max),
            (Some(5), Some(3), Some(64))
        );
        assert_eq!(c.internal_db.as_deref(), Some("on"));
        let mut q = Quotas::default();
        apply_quota(&mut q, &c.quota[0]);
        assert_eq!(q.transaction_nodes, 9);
    }
}
