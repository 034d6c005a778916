//! `xapi-supervise`: runs xapi (or any program) and restarts it when it dies, with backoff.
//!
//! `xapi-supervise [--min-backoff-ms N] [--max-backoff-ms N] [--stable-secs N] -- PROGRAM ARGS...`
//! SIGTERM or SIGINT stops the child (SIGTERM) and then the supervisor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use toolstack::supervise::{Backoff, Ended, Supervisor};

/// Restarts a program (xapi) whenever it dies, with a doubling delay.
#[derive(Parser, Debug)]
#[command(name = "xapi-supervise", version)]
struct Opts {
    /// The first restart delay.
    #[arg(long, default_value_t = 200)]
    min_backoff_ms: u64,
    /// The longest restart delay.
    #[arg(long, default_value_t = 30_000)]
    max_backoff_ms: u64,
    /// A run this long resets the delay.
    #[arg(long, default_value_t = 60)]
    stable_secs: u64,
    /// The program and its arguments.
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let o = Opts::parse();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }
    let (program, args) = o.command.split_first().expect("clap requires a command");
    let backoff = Backoff {
        min: Duration::from_millis(o.min_backoff_ms),
        max: Duration::from_millis(o.max_backoff_ms.max(o.min_backoff_ms)),
        stable: Duration::from_secs(o.stable_secs),
    };
    let sup = Supervisor::new(program.clone(), args.to_vec(), backoff);
    let ended = sup.run(&STOP, |r| {
        tracing::info!(pid = r.pid, delay = ?r.delay, "started {program}");
    });
    match ended {
        Ended::Clean => {}
        Ended::Stopped(s) => tracing::info!(%s, "stopped"),
        Ended::Spawn(e) => {
            eprintln!("xapi-supervise: {program}: {e}");
            std::process::exit(1);
        }
        _ => {}
    }
}
