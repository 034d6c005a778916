//! Same-run peers for xenstored: Debian's C `xenstored` on plain Linux, and
//! helpers to run any xenstored-like daemon as a child process.
//!
//! C xenstored (package `xen-utils-4.17`) needs a hypervisor: it opens
//! libxenctrl, libxenevtchn and libxengnttab handles and maps dom0's xenbus
//! page from `/proc/xen/xsd_kva`. [`CXenstored`] runs it with `-N` under the
//! project's own `LD_PRELOAD` shim (`benches/cpeer/xenstored_shim.c`) that
//! fakes those ~15 calls and redirects the two `/proc/xen` files to memfds,
//! with its socket in a private directory (`XENSTORED_RUNDIR`). Clients reach
//! it through `XENSTORED_PATH`, like on a real dom0.
//!
//! This module needs only `std`, `libc` and `tempfile`, so integration tests
//! of other crates (with those as dependencies) can include it with
//! `#[path = ".../benches/src/cpeer.rs"] mod cpeer;`.

use std::collections::hash_map::DefaultHasher;
use std::ffi::OsString;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// C source of the `LD_PRELOAD` shim.
pub const SHIM_SOURCE: &str = include_str!("../cpeer/xenstored_shim.c");

/// Where Debian's `xen-utils-4.17` installs the C daemon.
pub const DEBIAN_XENSTORED: &str = "/usr/lib/xen-4.17/bin/xenstored";

/// Where Debian's `xen-utils-4.17` installs Xen's xenstore test program.
pub const DEBIAN_TEST_XENSTORE: &str = "/usr/lib/xen-4.17/bin/test-xenstore";

/// How long [`CXenstored::start`] and [`DaemonProcess::spawn`] wait for the
/// socket to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Errors of the peer harness, with what to install when a peer is missing.
#[derive(Debug)]
pub enum PeerError {
    /// A binary from a Debian package is not installed.
    Missing {
        /// The path looked at.
        path: PathBuf,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// Compiling the shim failed.
    ShimBuild(String),
    /// The daemon exited or did not open its socket in time.
    NotReady(String),
    /// Any other I/O error.
    Io(io::Error),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing { path, package } => write!(
                f,
                "{} not found: install the Debian package `{package}` (apt-get install {package})",
                path.display()
            ),
            Self::ShimBuild(msg) => write!(f, "building the xenstored shim failed: {msg}"),
            Self::NotReady(msg) => write!(f, "daemon not ready: {msg}"),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for PeerError {}

impl From<io::Error> for PeerError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Returns `path` if it exists, or [`PeerError::Missing`] naming `package`.
pub fn require_binary(
    path: impl Into<PathBuf>,
    package: &'static str,
) -> Result<PathBuf, PeerError> {
    let path = path.into();
    if path.exists() {
        Ok(path)
    } else {
        Err(PeerError::Missing { path, package })
    }
}

/// The C xenstored binary: `$XS_C_XENSTORED` or Debian's path.
pub fn c_xenstored_binary() -> Result<PathBuf, PeerError> {
    let path = std::env::var_os("XS_C_XENSTORED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEBIAN_XENSTORED));
    require_binary(path, "xen-utils-4.17")
}

pub use tempfile::TempDir;

/// A fresh private directory named `<prefix>-…` under the system temporary
/// directory, removed on drop.
pub fn temp_dir(prefix: &str) -> io::Result<TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir()
}

/// Path of the compiled shim, building it once on first use.
///
/// Order: `$XENSTORED_SHIM` (a prebuilt `.so`), the copy `benches/build.rs`
/// compiled (when this module is built inside the `benches` crate), else the
/// source is compiled with `$CC` (default `cc`) into [`shim_cache_dir`].
///
/// Safe however many threads and processes ask at once: one build per
/// process (a `OnceLock`), one across processes (an exclusive `flock` on
/// `<cache>/lock`, the library checked again under it), each build in its own
/// fresh directory, published with an atomic rename.
pub fn shim_library() -> Result<PathBuf, PeerError> {
    if let Some(p) = std::env::var_os("XENSTORED_SHIM") {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = option_env!("XS_CPEER_SHIM_BUILT") {
        let p = PathBuf::from(p);
        if p.exists() {
            return Ok(p);
        }
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_shim_in(&shim_cache_dir()).map_err(|e| e.to_string()))
        .clone()
        .map_err(PeerError::ShimBuild)
}

/// Where [`shim_library`] caches the shim it compiles: a folder keyed by a
/// hash of the source under cargo's `target/tmp` (integration tests and
/// benches), else under the system temporary directory.
pub fn shim_cache_dir() -> PathBuf {
    let mut h = DefaultHasher::new();
    SHIM_SOURCE.hash(&mut h);
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    base.join(format!("xen-rs-cpeer-{:016x}", h.finish()))
}

/// Returns `<dir>/xenstored_shim.so`, compiling it first unless present
/// (what [`shim_library`] does with [`shim_cache_dir`]; safe to call from
/// many threads and processes at once).
pub fn build_shim_in(dir: &Path) -> Result<PathBuf, PeerError> {
    let lib = dir.join("xenstored_shim.so");
    if lib.exists() {
        return Ok(lib);
    }
    std::fs::create_dir_all(dir)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))?;
    // Held until `lock` is dropped (closing the file releases it).
    lock_exclusive(&lock)?;
    if lib.exists() {
        // Another process built it while this one waited.
        return Ok(lib);
    }
    let work = tempfile::Builder::new().prefix("build-").tempdir_in(dir)?;
    let src = work.path().join("xenstored_shim.c");
    std::fs::write(&src, SHIM_SOURCE)?;
    let tmp = work.path().join("xenstored_shim.so");
    let cc = std::env::var_os("CC").unwrap_or_else(|| OsString::from("cc"));
    let out = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
        .arg(&tmp)
        .arg(&src)
        .arg("-ldl")
        .output()
        .map_err(|e| PeerError::ShimBuild(format!("running {cc:?}: {e}")))?;
    if !out.status.success() {
        return Err(PeerError::ShimBuild(format!(
            "{cc:?} failed ({}); needs libxen-dev headers:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    // Readers see either no library or the whole one.
    std::fs::rename(&tmp, &lib)?;
    Ok(lib)
}

/// Blocks until this process holds an exclusive `flock` on `file`.
fn lock_exclusive(file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: `flock` only takes a file descriptor, which `file` keeps
        // open for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Waits until a unix socket at `path` accepts connections, or `child`
/// exits, or `timeout` passes.
pub fn wait_for_socket(path: &Path, child: &mut Child, timeout: Duration) -> Result<(), PeerError> {
    let deadline = Instant::now() + timeout;
    loop {
        if UnixStream::connect(path).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            return Err(PeerError::NotReady(format!(
                "exited with {status} before opening {}",
                path.display()
            )));
        }
        if Instant::now() >= deadline {
            return Err(PeerError::NotReady(format!(
                "{} not accepting connections after {timeout:?}",
                path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A xenstored-like daemon running as a child process, killed on drop.
#[derive(Debug)]
pub struct DaemonProcess {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    // Dropped last: holds the socket and the log.
    dir: Option<TempDir>,
}

impl DaemonProcess {
    /// Spawns `cmd` (stdout and stderr go to `<dir>/daemon.log`) and waits
    /// for `socket` to accept connections.
    pub fn spawn(mut cmd: Command, socket: PathBuf, dir: TempDir) -> Result<Self, PeerError> {
        let log = dir.path().join("daemon.log");
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn()?;
        let mut me = Self {
            child,
            socket,
            log,
            dir: Some(dir),
        };
        if let Err(e) = wait_for_socket(&me.socket, &mut me.child, START_TIMEOUT) {
            let log = me.log_contents();
            return Err(match e {
                PeerError::NotReady(m) => PeerError::NotReady(format!("{m}; log:\n{log}")),
                e => e,
            });
        }
        Ok(me)
    }

    /// The daemon's unix socket (give it to clients as `XENSTORED_PATH`).
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The private directory holding the socket and the log.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(TempDir::path)
            .unwrap_or(Path::new("/"))
    }

    /// What the daemon wrote to stdout and stderr so far.
    pub fn log_contents(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Returns the exit status if the daemon has exited (e.g. crashed).
    pub fn try_wait(&mut self) -> io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }

    /// A `Command` for a xenstore client tool pointed at this daemon.
    pub fn client(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("XENSTORED_PATH", &self.socket);
        c
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's C xenstored, running as dom0's daemon under the shim.
#[derive(Debug)]
pub struct CXenstored {
    proc_: DaemonProcess,
}

impl CXenstored {
    /// Starts C xenstored with its socket in a fresh private directory and
    /// waits until the socket accepts connections.
    ///
    /// `extra_args` are appended to `xenstored -N` (e.g. quota options).
    pub fn start(extra_args: &[&str]) -> Result<Self, PeerError> {
        Self::start_with_env(extra_args, &[])
    }

    /// Like [`CXenstored::start`], with extra environment variables for the
    /// daemon and the shim (e.g. `XENSTORED_SHIM_MAX_DOMID`: domains above
    /// it do not exist; default: every ordinary domid exists).
    pub fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> Result<Self, PeerError> {
        let bin = c_xenstored_binary()?;
        let shim = shim_library()?;
        let dir = temp_dir("c-xenstored")?;
        let socket = dir.path().join("socket");
        let mut cmd = Command::new(bin);
        cmd.arg("-N")
            .args(extra_args)
            .env("LD_PRELOAD", &shim)
            .env("XENSTORED_RUNDIR", dir.path())
            // Never let the daemon talk to a real store by accident.
            .env_remove("XENSTORED_PATH")
            .envs(env.iter().copied())
            .current_dir(dir.path());
        let proc_ = DaemonProcess::spawn(cmd, socket, dir)?;
        Ok(Self { proc_ })
    }

    /// The daemon's unix socket.
    pub fn socket_path(&self) -> &Path {
        self.proc_.socket_path()
    }

    /// The underlying process handle.
    pub fn process(&mut self) -> &mut DaemonProcess {
        &mut self.proc_
    }

    /// A `Command` for a xenstore client tool pointed at this daemon.
    pub fn client(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.proc_.client(program)
    }
}
