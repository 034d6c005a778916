//! `xentop`: C xentop's options, batch mode and terminal view over the `xentop` library.
//!
//! On a Xen dom0 it reads the hypervisor and the system's xenstored; elsewhere it runs on a
//! simulated host (it says so on stderr), with a xenstored in process and `--sim-guests N`
//! running guests to look at.

mod tui;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use xen_types::{DomId, Pages, VcpuId};
use xenbus::testing::TestXenstore;
use xenbus::{Store, XsStore};
use xenctrl::{DomainConfig, Xen};
use xentop::format::{self, Frame, Options, Widths};
use xentop::{Collector, Sources};

/// Displays ongoing information about xen vm resources.
#[derive(Debug, Parser)]
#[command(name = "xentop", disable_version_flag = true)]
struct Cli {
    /// Output version information and exit.
    #[arg(short = 'V', long)]
    version: bool,
    /// Seconds between updates.
    #[arg(
        short,
        long,
        value_name = "SECONDS",
        default_value_t = 3.0,
        allow_negative_numbers = true
    )]
    delay: f64,
    /// Output vif network data.
    #[arg(short, long)]
    networks: bool,
    /// Output vbd block device data.
    #[arg(short = 'x', long)]
    vbds: bool,
    /// Repeat table header before each domain.
    #[arg(short, long)]
    repeat_header: bool,
    /// Output vcpu data.
    #[arg(short, long)]
    vcpus: bool,
    /// Output in batch mode, no user input accepted.
    #[arg(short, long)]
    batch: bool,
    /// Number of iterations before exiting (0: no end).
    #[arg(short, long, value_name = "N")]
    iterations: Option<u32>,
    /// Output the full domain name (not truncated).
    #[arg(short, long)]
    full_name: bool,
    /// Display dom0 first (ignore sorting).
    #[arg(short = 'z', long)]
    dom0_first: bool,
    /// Read /proc, /sys and /var/run/xen under DIR instead of / (for tests).
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// On the simulated host: start N running guests (guest1, guest2, ...).
    #[arg(long, value_name = "N", default_value_t = 0)]
    sim_guests: u16,
}

const VERSION: &str = "xentop 1.0 (xen-rs)\n\
Written by Judy Fischbach, David Hendricks, Josh Triplett (C xentop); this one in Rust.\n";

/// The host to look at: the hypervisor and xenstore, or a simulated host and a xenstored in
/// process (kept alive as long as this).
struct Host {
    collector: Collector,
    _xenstore: Option<TestXenstore>,
}

fn open(cli: &Cli) -> Result<Host, String> {
    let auto = Xen::auto().map_err(|e| e.to_string())?;
    let mut sources = Sources::under(&cli.root);
    sources.qmp_timeout = Duration::from_secs(1);
    if !auto.is_simulated() {
        if cli.sim_guests > 0 {
            return Err("--sim-guests is for the simulated host only".into());
        }
        let store = XsStore::connect().map_err(|e| format!("connecting to xenstored: {e}"))?;
        return Ok(Host {
            collector: Collector::new(auto, Arc::new(store), sources),
            _xenstore: None,
        });
    }
    eprintln!("xentop: {}", auto.describe());
    let host = xen_sim::Host::default();
    let xen = Xen::sim(host.clone());
    let xs = TestXenstore::start().map_err(|e| format!("starting xenstored: {e}"))?;
    let err = |e: &dyn std::fmt::Display| format!("simulated host: {e}");
    xs.dom0()
        .write("/local/domain/0/name", "Domain-0")
        .map_err(|e| err(&e))?;
    for i in 1..=cli.sim_guests {
        let vcpus = 1 + u32::from(i % 2);
        let dom = xen
            .create_domain(&DomainConfig::pv(vcpus))
            .map_err(|e| err(&e))?;
        xen.set_max_vcpus(dom, vcpus).map_err(|e| err(&e))?;
        let mem = Pages::from_mib(128 * u64::from(i));
        xen.set_max_mem(dom, mem + xenctrl::MAXMEM_SLACK)
            .map_err(|e| err(&e))?;
        xen.increase_reservation(dom, mem).map_err(|e| err(&e))?;
        for v in 0..vcpus {
            host.guest_vcpu_set_online(dom, VcpuId(v), true)
                .map_err(|e| err(&format!("{e:?}")))?;
        }
        xen.unpause(dom).map_err(|e| err(&e))?;
        name_guest(&**xs.dom0(), dom, &format!("guest{i}")).map_err(|e| err(&e))?;
    }
    Ok(Host {
        collector: Collector::new(xen, xs.dom0().clone(), sources),
        _xenstore: Some(xs),
    })
}

fn name_guest(store: &dyn Store, dom: DomId, name: &str) -> Result<(), xenbus::Error> {
    store.write(&format!("/local/domain/{}/name", dom.get()), name)
}

fn options(cli: &Cli) -> Options {
    Options {
        full_name: cli.full_name,
        vcpus: cli.vcpus,
        networks: cli.networks,
        vbds: cli.vbds,
        repeat_header: cli.repeat_header,
        dom0_first: cli.dom0_first,
        ..Options::default()
    }
}

fn delay(cli: &Cli) -> Result<Duration, String> {
    Duration::try_from_secs_f64(cli.delay).map_err(|_| format!("bad delay {}", cli.delay))
}

/// Batch mode: the table every `delay`, `iterations` times (0 or none: until killed).
fn batch(cli: &Cli, host: &Host) -> Result<(), String> {
    let opts = options(cli);
    let delay = delay(cli)?;
    let mut widths = Widths::default();
    let mut prev: Option<(xentop::Node, Instant)> = None;
    let mut done = 0u32;
    let mut out = std::io::stdout().lock();
    loop {
        let now = Instant::now();
        let node = host
            .collector
            .node()
            .map_err(|e| format!("Failed to retrieve statistics from libxenstat: {e}"))?;
        for w in &node.warnings {
            eprintln!("{w}");
        }
        let frame = Frame {
            node: &node,
            prev: prev.as_ref().map(|p| &p.0),
            elapsed: prev.as_ref().map_or(Duration::ZERO, |p| now - p.1),
        };
        let text = format::table(&frame, &opts, &mut widths, 0);
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| format!("writing: {e}"))?;
        done += 1;
        if cli.iterations.is_some_and(|n| n != 0 && done >= n) {
            return Ok(());
        }
        std::thread::sleep(delay);
        prev = Some((node, now));
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.version {
        print!("{VERSION}");
        return ExitCode::SUCCESS;
    }
    let run = open(&cli).and_then(|host| {
        if cli.batch {
            batch(&cli, &host)
        } else {
            tui::run(&host.collector, options(&cli), delay(&cli)?, cli.iterations)
        }
    });
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xentop: {e}");
            ExitCode::FAILURE
        }
    }
}
