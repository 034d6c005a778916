//! Watch domains come and go through xenstore (see `examples::watch_domains`), on the
//! simulated host, or with `--real` on a Xen dom0.

use clap::Parser;
use xenctrl::Xen;

/// Creates domains, records them in xenstore, and watches them come and go.
#[derive(Parser)]
struct Args {
    /// Use the real hypervisor (a Xen dom0) instead of the simulated host.
    #[arg(long)]
    real: bool,
    /// How many domains.
    #[arg(long, default_value_t = 3)]
    count: usize,
}

fn main() {
    let args = Args::parse();
    let xen = if args.real {
        Xen::real()
    } else {
        Ok(Xen::sim(xen_sim::Host::default()))
    };
    let result = xen
        .map_err(Into::into)
        .and_then(|xen| examples::watch_domains::run(&xen, args.count, &mut std::io::stdout()));
    if let Err(e) = result {
        eprintln!("watch-domains: {e}");
        std::process::exit(1);
    }
}
