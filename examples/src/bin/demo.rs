//! `demo`: boots a simulated Xen host (or opens the real one with `--real`), creates and
//! builds a few guests, shows them xentop-style, pauses, unpauses and destroys them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use examples::demo::{self, Ticker};
use xenctrl::{ImageSource, Xen};

/// Walk through domain control on a simulated (default) or real Xen host.
#[derive(Parser, Debug)]
struct Args {
    /// Use the real hypervisor (libxenctrl over /dev/xen/privcmd) instead of a simulated host.
    #[arg(long)]
    real: bool,
    /// Kernel image to build into the guests (default: a tiny built-in Xen ELF image on the
    /// simulated host; none on a real host, where guests are then created but not built).
    #[arg(long)]
    kernel: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (xen, sim, ticker) = if args.real {
        match Xen::real() {
            Ok(x) => (x, None, Ticker::Wall(Instant::now())),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let clock = xen_sim::Clock::manual();
        let host = xen_sim::Host::new(xen_sim::HostConfig {
            clock: clock.clone(),
            ..xen_sim::HostConfig::default()
        });
        (Xen::sim(host.clone()), Some(host), Ticker::Sim(clock))
    };
    let kernel = match (args.kernel, args.real) {
        (Some(p), _) => Some(ImageSource::File(p)),
        (None, false) => Some(ImageSource::Bytes(demo::sample_kernel(8 << 20))),
        (None, true) => None,
    };
    if sim.is_some() {
        println!("(simulated host; time is the simulation's clock, one second per view)");
    }
    let mut out = std::io::stdout().lock();
    match demo::run(&xen, sim.as_ref(), &ticker, kernel, &mut out) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
