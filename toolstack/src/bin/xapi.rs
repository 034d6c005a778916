//! `xapi`: the XenAPI daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use toolstack::api::{Credentials, Xapi};
use toolstack::backend::{self, Backend};
use toolstack::db::{Db, Read};
use toolstack::devices as backend_devices;
use toolstack::host::{self, HostConfig};
use toolstack::{server, Error};

/// Which hypervisor serves the host.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Hypervisor {
    /// xenctrl over the simulated host.
    XenSim,
    /// libxenctrl, in a dom0.
    Real,
    /// Real when /dev/xen/privcmd exists, else xen-sim.
    Auto,
    /// The same as xen-sim.
    Builtin,
}

/// The XenAPI daemon: XML-RPC and JSON-RPC over HTTP, HTTPS and a unix socket.
#[derive(Parser, Debug)]
#[command(name = "xapi", version)]
struct Opts {
    /// Plain HTTP listen address (loopback by default; `none` disables).
    #[arg(long, default_value = "127.0.0.1:80")]
    listen: String,
    /// HTTPS listen address (`none` disables).
    #[arg(long, default_value = "127.0.0.1:443")]
    https_listen: String,
    /// Unix socket for local clients (`none` disables).
    #[arg(long, default_value = toolstack::cli::DEFAULT_SOCKET)]
    socket: String,
    /// State folder: database, password hash, TLS certificate.
    #[arg(long, default_value = "/var/lib/xcp/state")]
    state_dir: PathBuf,
    /// root's password, used at first start only.
    #[arg(long, env = "XAPI_ROOT_PASSWORD", hide_env_values = true)]
    root_password: Option<String>,
    /// Simulated host described by this JSON file (default: a built-in simulated host).
    #[arg(long)]
    host_config: Option<PathBuf>,
    /// Discover NICs and GPUs from /sys and /proc.
    #[arg(long)]
    discover: bool,
    /// Hypervisor: `xen-sim` (xenctrl over the simulated host), `real` (libxenctrl, in a
    /// dom0), `auto` (real when /dev/xen/privcmd exists, else xen-sim; says which),
    /// `builtin` (the same as `xen-sim`).
    #[arg(long, value_enum, default_value_t = Hypervisor::XenSim)]
    hypervisor: Hypervisor,
    /// xenstored's socket; without it a simulated host runs our xenstored in process, and
    /// real Xen uses /var/run/xenstored/socket.
    #[arg(long)]
    xenstored_socket: Option<PathBuf>,
    /// On real Xen: the userspace block backend started as each VM's device model for its
    /// `qdisk` disks (default: `blkbackd` beside this program, else from `$PATH`); `none`:
    /// no device model, disks go to the kernel's blkback.
    #[arg(long)]
    blkbackd: Option<String>,
    /// The backend of a VBD whose `other_config:backend-kind` names none and whose storage
    /// has no preference, as xenopsd's `default-vbd-backend-kind`: `vbd` (the kernel's
    /// blkback) or `qdisk` (the device model; the default unless `--blkbackd none`).
    #[arg(long, value_parser = ["vbd", "qdisk"])]
    default_vbd_backend_kind: Option<String>,
    /// How long `clean_shutdown`/`clean_reboot` wait for the guest, seconds.
    #[arg(long, default_value_t = toolstack::api::CLEAN_SHUTDOWN_TIMEOUT.as_secs())]
    clean_shutdown_timeout: u64,
    /// On real Xen: the vif hotplug script (`none`: no script).
    #[arg(long, default_value = "/etc/xen/scripts/vif-bridge")]
    vif_script: String,
    /// Where `xensource.log` and `audit.log` are written (default: `<state-dir>/log`).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// A log is rotated (`name.1` … `name.N`) when it would grow past this many bytes.
    #[arg(long, default_value_t = 10 << 20)]
    log_max_bytes: u64,
    /// How many rotated files of each log are kept.
    #[arg(long, default_value_t = 5)]
    log_keep: usize,
    /// The pool's database in etcd at these endpoints (comma-separated `http://host:port`);
    /// used at the first start (kept in `pool.etcd`); a host that joins a pool learns them
    /// from its master.
    #[cfg(feature = "etcd")]
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// The pool's name in etcd (its keys live under `/xapi/<name>/`).
    #[cfg(feature = "etcd")]
    #[arg(long, default_value = "pool")]
    pool_name: String,
}

fn log_dir(o: &Opts) -> PathBuf {
    o.log_dir.clone().unwrap_or_else(|| o.state_dir.join("log"))
}

/// Logs to stderr (filtered by `RUST_LOG`) and to `xensource.log` in the log directory
/// (`RUST_LOG`, else `info` and the toolstack's `debug`, as XAPI's debug-level file).
fn init_logging(o: &Opts) -> std::io::Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let dir = log_dir(o);
    std::fs::create_dir_all(&dir)?;
    let file = toolstack::audit::RotatingFile::open(
        &dir.join("xensource.log"),
        o.log_max_bytes,
        o.log_keep,
    )?;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(EnvFilter::from_default_env()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .with_filter(
                    EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| EnvFilter::new("info,toolstack=debug,xapi=debug")),
                ),
        )
        .init();
    Ok(())
}

/// How the real host's devices are served (`--blkbackd`, `--vif-script`).
fn device_hosting(o: &Opts) -> backend_devices::DeviceHosting {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("blkbackd")))
        .filter(|p| p.exists());
    let blkbackd = match o.blkbackd.as_deref() {
        Some("none") => None,
        Some(p) => Some(PathBuf::from(p)),
        None => Some(beside.unwrap_or_else(|| PathBuf::from("blkbackd"))),
    };
    let default_vbd_backend = match o.default_vbd_backend_kind.as_deref() {
        Some(k) => backend_devices::VbdBackend::parse(k).unwrap_or_default(),
        None if blkbackd.is_some() => backend_devices::VbdBackend::Qdisk,
        None => backend_devices::VbdBackend::Vbd,
    };
    backend_devices::DeviceHosting {
        blkbackd,
        default_vbd_backend,
        vif_script: (o.vif_script != "none").then(|| PathBuf::from(&o.vif_script)),
        block_hotplug: true,
    }
}

fn credentials(o: &Opts) -> Result<Credentials, Error> {
    let path = o.state_dir.join("passwd");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let (user, hash) = text
                .trim_end()
                .split_once(':')
                .ok_or_else(|| Error::Corrupt(format!("{}: expected user:hash", path.display())))?;
            Ok(Credentials {
                user: user.to_owned(),
                hash: hash.to_owned(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pw = o.root_password.as_deref().ok_or_else(|| {
                Error::Corrupt("first start: give --root-password or set XAPI_ROOT_PASSWORD".into())
            })?;
            let c = Credentials::new("root", pw)?;
            toolstack::write_private_file(&path, format!("{}:{}\n", c.user, c.hash).as_bytes())?;
            Ok(c)
        }
        Err(e) => Err(Error::Io(path.display().to_string(), e)),
    }
}

fn addr(s: &str) -> Result<Option<SocketAddr>, Error> {
    if s == "none" {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        Error::Io(
            s.to_owned(),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })
}

/// The simulated host with `--xenstored-socket`'s daemon, or our xenstored in process.
fn simulated(o: &Opts, cfg: &HostConfig) -> Result<Backend, Error> {
    let xen = backend::sim_host(cfg.memory_total, cfg.dom0_memory, cfg.cpu_count);
    match &o.xenstored_socket {
        Some(p) => Backend::with_xenstored(xen, p),
        None => Backend::with_xenstored_in_process(xen),
    }
}

/// Real Xen with its running xenstored.
fn real(o: &Opts) -> Result<Backend, Error> {
    let xen = xenctrl::Xen::real()?;
    let socket = o
        .xenstored_socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(backend::XENSTORED_SOCKET));
    Ok(Backend::with_xenstored(xen, &socket)?.with_device_hosting(device_hosting(o)))
}

fn host_backend(o: &Opts, cfg: &HostConfig) -> Result<Backend, Error> {
    match o.hypervisor {
        Hypervisor::Builtin | Hypervisor::XenSim => simulated(o, cfg),
        Hypervisor::Real => real(o),
        Hypervisor::Auto if std::path::Path::new(xenctrl::PRIVCMD).exists() => {
            // A dom0 whose privcmd cannot be opened fails here: no silent fallback.
            println!("hypervisor auto: {} exists, using Xen", xenctrl::PRIVCMD);
            real(o)
        }
        Hypervisor::Auto => {
            println!(
                "hypervisor auto: {} is missing (not a Xen dom0), using the simulated host xen-sim",
                xenctrl::PRIVCMD
            );
            simulated(o, cfg)
        }
    }
}

async fn run(o: Opts) -> Result<(), Error> {
    std::fs::create_dir_all(&o.state_dir)
        .map_err(|e| Error::Io(o.state_dir.display().to_string(), e))?;
    let creds = credentials(&o)?;
    let cfg = match (&o.host_config, o.discover) {
        (Some(p), _) => HostConfig::from_file(p)?,
        (None, true) => HostConfig::from_sysfs("/sys".as_ref(), "/proc".as_ref()),
        (None, false) => HostConfig::simulated(),
    };
    let db = Db::open(&o.state_dir)?;
    let local_host = host::bootstrap(&db, &cfg)?;
    if toolstack::pool::installation_uuid(&o.state_dir).is_none() {
        let uuid = db.read(|v| v.str_field(&local_host, "uuid"));
        toolstack::pool::write_installation_uuid(&o.state_dir, &uuid)?;
    }
    let tls = match addr(&o.https_listen)? {
        Some(a) => Some((
            a,
            server::tls_acceptor(&o.state_dir, vec!["localhost".into(), a.ip().to_string()])?,
        )),
        None => None,
    };
    let backend = Arc::new(host_backend(&o, &cfg)?);
    println!("hypervisor: {}", backend.hypervisor());
    let backend_name = backend.hypervisor().to_string();
    println!(
        "pool role: {:?}",
        toolstack::pool::Role::read(&o.state_dir)?
    );
    #[cfg(feature = "etcd")]
    let (xapi, pool) = match pool_settings(&o)? {
        Some(settings) => {
            let (pool_db, host) = toolstack::pool::open_pool_db(&db, &local_host, &settings)?;
            drop(db);
            println!(
                "pool database: etcd {} pool {}",
                settings.endpoints.join(","),
                settings.pool
            );
            (Xapi::new_on(pool_db, backend, creds, host)?, Some(settings))
        }
        None => (Xapi::new_on(db, backend, creds, local_host)?, None),
    };
    #[cfg(not(feature = "etcd"))]
    let xapi = Xapi::new_on(db, backend, creds, local_host)?;
    xapi.set_state_dir(&o.state_dir);
    xapi.set_restart(restart_hook());
    let logs = log_dir(&o);
    xapi.enable_audit_in(&logs, o.log_max_bytes, o.log_keep)
        .map_err(|e| Error::Io(logs.join("audit.log").display().to_string(), e))?;
    tracing::info!(state_dir = %o.state_dir.display(), hypervisor = backend_name, "xapi starting");
    xapi.clean_shutdown_timeout_ms.store(
        o.clean_shutdown_timeout.saturating_mul(1000),
        std::sync::atomic::Ordering::Relaxed,
    );
    xapi.attach_local_sr(&o.state_dir.join("sr"))
        .map_err(|e| Error::Corrupt(format!("the local SR: {e}")))?;
    for d in xapi.orphan_domains() {
        println!("domain {} runs but no VM has it (left as it is)", d.0);
    }
    xapi.spawn_monitor();
    xapi.spawn_memory_balancer(std::time::Duration::from_secs(5));
    xapi.enable_metrics(Some(&o.state_dir.join("rrd")))
        .set_plugin_dir(Some(std::path::Path::new(toolstack::metrics::PLUGIN_DIR)));
    xapi.spawn_metrics();
    let mut tasks = Vec::new();
    if let Some(a) = addr(&o.listen)? {
        let l = tokio::net::TcpListener::bind(a)
            .await
            .map_err(|e| Error::Io(a.to_string(), e))?;
        let bound = l.local_addr().map_err(|e| Error::Io(a.to_string(), e))?;
        println!("listening on http://{bound}");
        tasks.push(tokio::spawn(server::serve_tcp(l, Arc::clone(&xapi), None)));
    }
    let mut https_bound = None;
    if let Some((a, acc)) = tls {
        let l = tokio::net::TcpListener::bind(a)
            .await
            .map_err(|e| Error::Io(a.to_string(), e))?;
        let bound = l.local_addr().map_err(|e| Error::Io(a.to_string(), e))?;
        println!("listening on https://{bound}");
        https_bound = Some(bound);
        tasks.push(tokio::spawn(server::serve_tcp(
            l,
            Arc::clone(&xapi),
            Some(acc),
        )));
    }
    if o.socket != "none" {
        let p = PathBuf::from(&o.socket);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::Io(dir.display().to_string(), e))?;
        }
        let _ = std::fs::remove_file(&p);
        let l = tokio::net::UnixListener::bind(&p).map_err(|e| Error::Io(o.socket.clone(), e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::Io(o.socket.clone(), e))?;
        println!("listening on unix:{}", p.display());
        tasks.push(tokio::spawn(server::serve_unix(l, Arc::clone(&xapi))));
    }
    #[cfg(feature = "etcd")]
    if let Some(settings) = pool {
        let fingerprint =
            match toolstack::client::TlsVerify::roots_from_pem(&o.state_dir.join("xapi-ssl.pem")) {
                Ok(toolstack::client::TlsVerify::Roots(c)) => c
                    .first()
                    .map(|c| toolstack::client::certificate_fingerprint(c)),
                _ => None,
            };
        let m = toolstack::pool::Member::start(
            &xapi,
            settings,
            &o.state_dir,
            https_bound,
            fingerprint,
        )?;
        xapi.set_pool(m);
    }
    #[cfg(not(feature = "etcd"))]
    let _ = https_bound;
    println!("ready");
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// The pool's etcd settings: `--etcd` at a first start (no `pool.conf` yet), else what
/// `pool.etcd` in the state folder says (written at that first start or by `pool.join`).
#[cfg(feature = "etcd")]
fn pool_settings(o: &Opts) -> Result<Option<toolstack::pool::EtcdSettings>, Error> {
    use toolstack::pool::{EtcdSettings, Role};
    let first = !o.state_dir.join("pool.conf").exists();
    if first && !o.etcd.is_empty() {
        let s = EtcdSettings {
            endpoints: o.etcd.clone(),
            pool: o.pool_name.clone(),
        };
        s.write(&o.state_dir)?;
        Role::Master.write(&o.state_dir)?;
        return Ok(Some(s));
    }
    EtcdSettings::read(&o.state_dir)
}

/// Re-executes this program with its arguments (a change of pool role: XAPI restarts too).
fn restart_hook() -> Arc<dyn Fn() + Send + Sync> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    Arc::new(move || {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        tracing::info!("restarting xapi for its new pool role");
        let e = std::process::Command::new(&exe).args(&args).exec();
        eprintln!("xapi: restarting {}: {e}", exe.display());
        std::process::exit(1);
    })
}

fn main() {
    let o = Opts::parse();
    if let Err(e) = init_logging(&o) {
        eprintln!("xapi: {}: {e}", log_dir(&o).display());
        std::process::exit(1);
    }
    // logrotate moves xensource.log and audit.log away, then sends SIGHUP.
    if let Err(e) = toolstack::audit::reopen_on_sighup() {
        eprintln!("xapi: registering SIGHUP: {e}");
        std::process::exit(1);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(o)) {
        eprintln!("xapi: {e}");
        std::process::exit(1);
    }
}
