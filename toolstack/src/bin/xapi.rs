//! `xapi`: the XenAPI daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use toolstack::api::{Credentials, Xapi};
use toolstack::backend::{HostBackend, SimBackend};
use toolstack::host::{self, HostConfig};
use toolstack::xenbackend::{Store, XenBackend};
use toolstack::{db::Db, server, Error};

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
    /// dom0), `auto` (real when /dev/xen/privcmd exists), `builtin` (the crate's minimal
    /// simulated host).
    #[arg(long, default_value = "xen-sim")]
    hypervisor: String,
    /// xenstored's socket; without it xenstore entries go to an in-process tree (simulated
    /// hosts only).
    #[arg(long)]
    xenstored_socket: Option<PathBuf>,
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
    host::bootstrap(&db, &cfg)?;
    let backend: Arc<dyn HostBackend> = match o.hypervisor.as_str() {
        "builtin" => Arc::new(SimBackend::new(cfg.memory_total, cfg.dom0_memory)),
        "xen-sim" => {
            let xen = XenBackend::sim_host(cfg.memory_total, cfg.dom0_memory, cfg.cpu_count);
            let store = match &o.xenstored_socket {
                Some(p) => XenBackend::xenstored(p)?,
                None => Store::Memory(Default::default()),
            };
            Arc::new(XenBackend::new(xen, store, true))
        }
        "real" | "auto" => {
            let xen = if o.hypervisor == "real" {
                xenctrl::Xen::real()
            } else {
                xenctrl::Xen::auto()
            }
            .map_err(|e| Error::Backend(e.to_string()))?;
            let sim = xen.backend() == "sim";
            let store = match &o.xenstored_socket {
                Some(p) => XenBackend::xenstored(p)?,
                None if sim => Store::Memory(Default::default()),
                None => XenBackend::xenstored(&PathBuf::from("/var/run/xenstored/socket"))?,
            };
            Arc::new(XenBackend::new(xen, store, sim))
        }
        other => return Err(Error::Backend(format!("unknown hypervisor {other:?}"))),
    };
    let xapi = Xapi::new(db, backend, creds)?;
    xapi.spawn_monitor();
    let mut tasks = Vec::new();
    if let Some(a) = addr(&o.listen)? {
        let l = tokio::net::TcpListener::bind(a)
            .await
            .map_err(|e| Error::Io(a.to_string(), e))?;
        let bound = l.local_addr().map_err(|e| Error::Io(a.to_string(), e))?;
        println!("listening on http://{bound}");
        tasks.push(tokio::spawn(server::serve_tcp(l, Arc::clone(&xapi), None)));
    }
    if let Some(a) = addr(&o.https_listen)? {
        let acc = server::tls_acceptor(&o.state_dir, vec!["localhost".into(), a.ip().to_string()])?;
        let l = tokio::net::TcpListener::bind(a)
            .await
            .map_err(|e| Error::Io(a.to_string(), e))?;
        let bound = l.local_addr().map_err(|e| Error::Io(a.to_string(), e))?;
        println!("listening on https://{bound}");
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
    println!("ready");
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let o = Opts::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(o)) {
        eprintln!("xapi: {e}");
        std::process::exit(1);
    }
}
