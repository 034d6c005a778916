//! `xenconsoled`: guests' PV consoles to ptys and logs, a drop-in for Xen's daemon.
//!
//! Same options as the C daemon (`tools/console/daemon/main.c`): `--log=none|guest|hv|all`,
//! `--log-dir=DIR`, `-t/--timestamp=none|guest|hv|all`, `-o/--overflow-data=discard|keep`,
//! `--replace-escape`, `--pid-file=PATH`, `-i/--interactive` (stay in the foreground;
//! otherwise the daemon detaches and writes its pid to `--pid-file`, by default
//! `/var/run/xen/xenconsoled.pid`), `-v/--verbose`. SIGHUP reopens the logs; SIGTERM and
//! SIGINT stop it. It needs a Xen dom0 (privcmd, evtchn and, preferably, gntdev) and a
//! running xenstored.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use nix::sys::signal::{SigSet, Signal};
use xenconsoled::{Config, Daemon, Hypervisor};

/// Which logs an option applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    None,
    Guest,
    Hv,
    All,
}

impl Which {
    fn guest(self) -> bool {
        matches!(self, Which::Guest | Which::All)
    }
    fn hv(self) -> bool {
        matches!(self, Which::Hv | Which::All)
    }
}

/// What to do with output a slow pty reader has not taken past the console's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Overflow {
    Discard,
    Keep,
}

/// Xen Console Daemon.
#[derive(Debug, Parser)]
#[command(name = "xenconsoled", version)]
struct Cli {
    /// Be verbose (debug messages to stderr).
    #[arg(short, long)]
    verbose: bool,
    /// Stay in the foreground.
    #[arg(short, long)]
    interactive: bool,
    /// What to log.
    #[arg(long, value_enum, default_value = "none")]
    log: Which,
    /// Where the logs go.
    #[arg(long, default_value = xenconsoled::DEFAULT_LOG_DIR)]
    log_dir: PathBuf,
    /// Where to write the daemon's pid.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Which logs get time stamps.
    #[arg(short, long, value_enum, default_value = "none")]
    timestamp: Which,
    /// Past a console's limit, discard the middle of the output or keep it (the guest
    /// then waits).
    #[arg(short, long, value_enum, default_value = "discard")]
    overflow_data: Overflow,
    /// Replace the ESC character with a dot when writing console logs.
    #[arg(long)]
    replace_escape: bool,
}

impl Cli {
    fn config(&self) -> Config {
        Config {
            log_guest: self.log.guest(),
            log_hv: self.log.hv(),
            timestamp_guest: self.timestamp.guest(),
            timestamp_hv: self.timestamp.hv(),
            log_dir: self.log_dir.clone(),
            discard_overflowed_data: self.overflow_data == Overflow::Discard,
            replace_escape: self.replace_escape,
        }
    }
}

/// Raises the descriptor limit to what every possible domain needs (pty master, slave,
/// log, event channel each), as `increase_fd_limit` does.
fn increase_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let min = u64::from(xen_sys::DOMID_FIRST_RESERVED) * 4 + 1000;
    if let Ok((cur, max)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if cur < min {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, min, min.max(max)) {
                tracing::warn!(
                    "unable to increase fd limit from {{{cur}, {max}}} to {{{min}, {min}}}: {e} \
                     - may run out with lots of domains"
                );
            }
        }
    }
}

/// Writes the pid file, locked, as `daemonize` does.
fn write_pid_file(path: &PathBuf) -> Result<std::fs::File, String> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    nix::fcntl::Flock::lock(
        f.try_clone().map_err(|e| e.to_string())?,
        nix::fcntl::FlockArg::LockExclusiveNonblock,
    )
    .map_err(|(_, e)| format!("{} is locked by another xenconsoled: {e}", path.display()))
    .map(std::mem::forget)?;
    f.set_len(0).map_err(|e| e.to_string())?;
    writeln!(f, "{}", std::process::id())
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(f)
}

fn run(cli: &Cli) -> Result<(), String> {
    // Block SIGTERM and SIGINT before any thread starts: only `wait` below sees them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals
        .thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    increase_fd_limit();
    let xen = xenctrl::Xen::real().map_err(|e| format!("contacting the hypervisor: {e}"))?;
    // The C daemon goes on without gntdev, mapping by frame.
    let gnttab = match gnttab::Gnttab::open() {
        Ok(g) => Some(g),
        Err(e) => {
            tracing::debug!("no grant mapping ({e}): mapping consoles by frame");
            None
        }
    };
    // Fail now, with the reason, rather than at the first guest.
    drop(evtchn::Evtchn::open().map_err(|e| format!("opening event channels: {e}"))?);
    let store = Arc::new(
        xenbus::XsStore::connect()
            .map_err(|e| format!("failed to contact xenstore ({e}); is it running?"))?,
    );
    let hv = Hypervisor {
        xen,
        gnttab,
        open_evtchn: Box::new(evtchn::Evtchn::open),
    };
    let daemon = Daemon::new(cli.config(), hv, store)
        .and_then(Daemon::start)
        .map_err(|e| e.to_string())?;
    daemon.reopen_logs_on_sighup().map_err(|e| e.to_string())?;
    let sig = signals.wait().map_err(|e| format!("waiting: {e}"))?;
    tracing::info!("{sig}: stopping");
    daemon.stop().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.interactive {
        // Before any thread exists: fork, setsid, fds 0-2 to /dev/null, chdir /.
        if let Err(e) = nix::unistd::daemon(false, false) {
            eprintln!("xenconsoled: detaching: {e}");
            return ExitCode::FAILURE;
        }
    }
    let pid_file = cli
        .pid_file
        .clone()
        .or_else(|| (!cli.interactive).then(|| PathBuf::from("/var/run/xen/xenconsoled.pid")));
    let _pid = match pid_file.as_ref().map(write_pid_file).transpose() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("xenconsoled: {e}");
            return ExitCode::FAILURE;
        }
    };
    let filter = if cli.verbose { "debug" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let r = run(&cli);
    if let Some(p) = &pid_file {
        let _ = std::fs::remove_file(p);
    }
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xenconsoled: {e}");
            ExitCode::FAILURE
        }
    }
}
