//! Keeps xapi running: restarts it when it dies, with backoff (xhad's watchdog role for
//! xapi). The `xapi-supervise` program is a thin `main` over [`Supervisor::run`].
//!
//! A child that exits with status 0 stopped on purpose and is not restarted; any other exit
//! or a signal restarts it after a delay that doubles from [`Backoff::min`] up to
//! [`Backoff::max`] while it keeps dying within [`Backoff::stable`] of its start, and falls
//! back to the minimum once a run lasted that long. With HA on, a restarted xapi adopts its
//! host's lease and watchdog ([`crate::ha`]), so a quick restart fences nothing.

use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The restart delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub min: Duration,
    /// The longest delay.
    pub max: Duration,
    /// A run at least this long resets the delay to `min`.
    pub stable: Duration,
}

impl Default for Backoff {
    /// 200 ms doubling to 30 s; reset after a minute up.
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(200),
            max: Duration::from_secs(30),
            stable: Duration::from_secs(60),
        }
    }
}

/// Why [`Supervisor::run`] returned.
#[derive(Debug)]
#[non_exhaustive]
pub enum Ended {
    /// The child exited with status 0.
    Clean,
    /// Stopping was asked for: the child got SIGTERM and was waited for.
    Stopped(ExitStatus),
    /// The child could not be started (the program is missing, ...).
    Spawn(std::io::Error),
}

/// One start of the child, as [`Supervisor::run`] reports it.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// The child's pid.
    pub pid: u32,
    /// The delay waited before this start (zero for the first).
    pub delay: Duration,
}

/// Restarts a command whenever it dies (see the module docs).
#[derive(Debug)]
pub struct Supervisor {
    program: String,
    args: Vec<String>,
    backoff: Backoff,
}

impl Supervisor {
    /// Supervises `program` with `args`.
    pub fn new(program: impl Into<String>, args: Vec<String>, backoff: Backoff) -> Supervisor {
        Supervisor {
            program: program.into(),
            args,
            backoff,
        }
    }

    /// Runs the child until it exits cleanly or `stop` is set (then SIGTERM to the child);
    /// `started` hears of every start.
    pub fn run(&self, stop: &AtomicBool, mut started: impl FnMut(Run)) -> Ended {
        let mut delay = Duration::ZERO;
        loop {
            if !sleep_unless(stop, delay) {
                return Ended::Stopped(ExitStatus::default());
            }
            let t0 = Instant::now();
            let mut child = match Command::new(&self.program).args(&self.args).spawn() {
                Ok(c) => c,
                Err(e) => return Ended::Spawn(e),
            };
            started(Run {
                pid: child.id(),
                delay,
            });
            let status = loop {
                if stop.load(Ordering::SeqCst) {
                    // SAFETY: kill(2) on our own child's pid, which we have not waited for.
                    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                    return match child.wait() {
                        Ok(s) => Ended::Stopped(s),
                        Err(e) => Ended::Spawn(e),
                    };
                }
                match child.try_wait() {
                    Ok(Some(s)) => break s,
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                    Err(e) => return Ended::Spawn(e),
                }
            };
            if status.success() {
                return Ended::Clean;
            }
            delay = if t0.elapsed() >= self.backoff.stable || delay.is_zero() {
                self.backoff.min
            } else {
                (delay * 2).min(self.backoff.max)
            };
            tracing::warn!(program = %self.program, %status, ?delay, "supervised program died; restarting");
        }
    }
}

/// Sleeps `d` unless `stop` is set meanwhile; false when stopped.
fn sleep_unless(stop: &AtomicBool, d: Duration) -> bool {
    let until = Instant::now() + d;
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}
