//! Running commands under one overall deadline; a command still running at the deadline is
//! killed with its whole process group.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The instant by which the whole run must be over.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    secs: u64,
}

impl Deadline {
    /// A deadline `secs` seconds from now.
    pub fn after(secs: u64) -> Self {
        Self {
            at: Instant::now() + Duration::from_secs(secs),
            secs,
        }
    }

    /// Time left, or `Error::Timeout` when none is.
    pub fn remaining(&self) -> Result<Duration> {
        self.at
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(Error::Timeout(self.secs))
    }

    /// The timeout error for this deadline.
    pub fn error(&self) -> Error {
        Error::Timeout(self.secs)
    }
}

/// Renders a command for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Starts `cmd` as the leader of a new process group that dies with this process.
pub fn spawn_group(cmd: &mut Command) -> Result<Child> {
    cmd.process_group(0);
    // SAFETY: the closure runs in the child between fork and exec and calls only prctl(2) and
    // getppid(2), which are async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            // Die with xtask (e.g. on Ctrl-C), so that no QEMU or cargo outlives the run.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() == 1 {
                return Err(std::io::Error::other("parent already exited"));
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|source| Error::Spawn {
        cmd: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })
}

/// Kills the process group led by `child` and reaps the child.
pub fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits for `child` until the deadline; at the deadline kills its process group.
pub fn wait_until(child: &mut Child, deadline: Deadline) -> Result<ExitStatus> {
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| Error::Other(format!("wait: {e}")))?
        {
            return Ok(status);
        }
        if deadline.remaining().is_err() {
            kill_group(child);
            return Err(deadline.error());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` to completion under the deadline, capturing stdout; stderr goes to ours.
/// Fails unless it exits with status 0.
pub fn output(cmd: &mut Command, deadline: Deadline) -> Result<Vec<u8>> {
    let desc = describe(cmd);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut child = spawn_group(cmd)?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let status = wait_until(&mut child, deadline)?;
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(Error::Failed {
            cmd: desc,
            status: status.to_string(),
            detail: String::new(),
        });
    }
    Ok(out)
}

/// Runs `cmd` to completion under the deadline with stdout and stderr inherited.
pub fn run(cmd: &mut Command, deadline: Deadline) -> Result<()> {
    let desc = describe(cmd);
    cmd.stdin(Stdio::null());
    let mut child = spawn_group(cmd)?;
    let status = wait_until(&mut child, deadline)?;
    if !status.success() {
        return Err(Error::Failed {
            cmd: desc,
            status: status.to_string(),
            detail: String::new(),
        });
    }
    Ok(())
}
