//! The README walk-through: a host, a few guests, an xentop-like view of them, and their
//! lifecycle, through [`xenctrl`]'s public API.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use xenctrl::{
    DomId, DomainConfig, DomainKind, GuestImage, ImageSource, Pages, ShutdownReason, VcpuId, Xen,
};

use crate::top::{self, Sample};

/// Errors of the demo.
#[derive(Debug)]
pub enum DemoError {
    /// A control operation failed.
    Xen(xenctrl::Error),
    /// Writing the output failed.
    Io(io::Error),
}

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DemoError::Xen(e) => write!(f, "{e}"),
            DemoError::Io(e) => write!(f, "output: {e}"),
        }
    }
}

impl std::error::Error for DemoError {}

impl From<xenctrl::Error> for DemoError {
    fn from(e: xenctrl::Error) -> Self {
        DemoError::Xen(e)
    }
}

impl From<io::Error> for DemoError {
    fn from(e: io::Error) -> Self {
        DemoError::Io(e)
    }
}

/// How time passes between two views of the domains.
#[derive(Debug, Clone)]
pub enum Ticker {
    /// The simulated host's manual clock: each tick moves it forward at once.
    Sim(xen_sim::Clock),
    /// Wall-clock time: each tick sleeps.
    Wall(Instant),
}

impl Ticker {
    fn now(&self) -> Duration {
        match self {
            Ticker::Sim(c) => c.now(),
            Ticker::Wall(t0) => t0.elapsed(),
        }
    }

    fn tick(&self, d: Duration) {
        match self {
            Ticker::Sim(c) => {
                c.advance(d);
            }
            Ticker::Wall(_) => std::thread::sleep(d),
        }
    }
}

/// What the demo did, for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Host free memory before any guest existed.
    pub free_before: Pages,
    /// Host free memory after every guest was destroyed.
    pub free_after: Pages,
    /// The guests created.
    pub created: Vec<DomId>,
}

/// A guest of the demo.
struct Guest {
    name: &'static str,
    kind: DomainKind,
    vcpus: u32,
    memory: Pages,
    /// In the simulation, whether the guest idles (its vCPUs block).
    idle: bool,
}

const GUESTS: [Guest; 3] = [
    Guest {
        name: "web",
        kind: DomainKind::Pv,
        vcpus: 2,
        memory: Pages::from_mib(128),
        idle: false,
    },
    Guest {
        name: "db",
        kind: DomainKind::Pvh,
        vcpus: 4,
        memory: Pages::from_mib(256),
        idle: true,
    },
    Guest {
        name: "batch",
        kind: DomainKind::Pv,
        vcpus: 1,
        memory: Pages::from_mib(64),
        idle: false,
    },
];

pub use xen_sim::domain::sample_kernel;

fn mib(p: Pages) -> u64 {
    p.mib()
}

/// Runs the walk-through on `xen`, writing to `out`.
///
/// `sim` is the simulated host when `xen` is the simulated backend: the demo then also plays
/// the guests' part (bringing secondary vCPUs up, idling), which on real Xen the guest
/// kernels do. `kernel` is the image to build into each guest; `None` creates the guests
/// with memory but without building them.
pub fn run(
    xen: &Xen,
    sim: Option<&xen_sim::Host>,
    ticker: &Ticker,
    kernel: Option<ImageSource>,
    out: &mut dyn Write,
) -> Result<Summary, DemoError> {
    let v = xen.version()?;
    let p = xen.physinfo()?;
    writeln!(
        out,
        "== host: Xen {v} ({} backend), {} CPUs ({} socket(s) x {} cores x {} threads) at {} MHz, {:?}",
        xen.backend(),
        p.nr_cpus,
        p.sockets,
        p.cores_per_socket,
        p.threads_per_core,
        p.cpu_khz / 1000,
        p.capabilities,
    )?;
    writeln!(
        out,
        "   memory: total {} MiB, free {} MiB",
        mib(p.total_pages),
        mib(p.free_pages)
    )?;
    let free_before = p.free_pages;

    let mut names: BTreeMap<DomId, String> = BTreeMap::new();
    let mut created = Vec::new();
    writeln!(out, "== creating and building guests")?;
    for g in &GUESTS {
        let mut cfg = match g.kind {
            DomainKind::Pv => DomainConfig::pv(g.vcpus),
            _ => DomainConfig::pvh(g.vcpus),
        };
        cfg.max_grant_frames = Some(32);
        let dom = xen.create_domain(&cfg)?;
        created.push(dom);
        names.insert(dom, g.name.to_string());
        xen.set_max_vcpus(dom, g.vcpus)?;
        let built = match &kernel {
            Some(k) => {
                let mut image = GuestImage::new(k.clone(), g.memory);
                image.cmdline = format!("console=hvc0 hostname={}", g.name);
                match xen.build(dom, &image) {
                    Ok(b) => Some(format!(
                        "console pfn {:#x} mfn {:#x} port {}, xenstore pfn {:#x} mfn {:#x} port {}",
                        b.console.pfn.0,
                        b.console.mfn.0,
                        b.console.port,
                        b.store.pfn.0,
                        b.store.mfn.0,
                        b.store.port
                    )),
                    // libxenguest's PVH path (libxl's HVM build) is not wrapped yet.
                    Err(e @ xenctrl::Error::Unsupported { .. }) => {
                        writeln!(out, "   {}: {e}; giving it memory only", g.name)?;
                        None
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            None => None,
        };
        let what = match built {
            Some(w) => w,
            None => {
                xen.set_max_mem(dom, g.memory)?;
                xen.increase_reservation(dom, g.memory)?;
                "not built".to_string()
            }
        };
        writeln!(
            out,
            "   {:<6} {:<3} {} vCPU(s) {:>4} MiB -> domid {dom}: {what}",
            g.name,
            match g.kind {
                DomainKind::Pv => "PV",
                DomainKind::Pvh => "PVH",
                DomainKind::Hvm => "HVM",
            },
            g.vcpus,
            mib(g.memory)
        )?;
        writeln!(
            out,
            "          host free memory: {} MiB",
            mib(xen.physinfo()?.free_pages)
        )?;
    }

    writeln!(out, "== unpausing the guests")?;
    for (g, &dom) in GUESTS.iter().zip(&created) {
        xen.unpause(dom)?;
        if let Some(host) = sim {
            // What the guest kernel does on real Xen: bring up its other vCPUs, or idle.
            for v in 1..g.vcpus {
                host.guest_vcpu_set_online(dom, VcpuId(v), true)
                    .map_err(|e| xenctrl::Error::from_errno("VCPUOP_up", Some(dom), e))?;
            }
            if g.idle {
                for v in 0..g.vcpus {
                    host.guest_vcpu_set_blocked(dom, VcpuId(v), true)
                        .map_err(|e| xenctrl::Error::from_errno("SCHEDOP_block", Some(dom), e))?;
                }
            }
        }
    }
    let mut prev = Sample::new(ticker.now(), xen.list_domains()?);
    let mut view = |title: &str, out: &mut dyn Write| -> Result<(), DemoError> {
        ticker.tick(Duration::from_secs(1));
        let cur = Sample::new(ticker.now(), xen.list_domains()?);
        writeln!(out, "-- {title}")?;
        write!(
            out,
            "{}",
            top::render(Some(&prev), &cur, &xen.physinfo()?, &names)
        )?;
        prev = cur;
        Ok(())
    };
    view("after 1 s", out)?;
    view("after 2 s", out)?;

    let (web, batch) = (created[0], created[2]);
    writeln!(out, "== pausing web")?;
    xen.pause(web)?;
    view("web paused", out)?;
    writeln!(out, "== unpausing web; batch powers off")?;
    xen.unpause(web)?;
    xen.shutdown(batch, ShutdownReason::Poweroff)?;
    view("batch shut down", out)?;

    writeln!(out, "== destroying the guests")?;
    for &dom in &created {
        xen.destroy(dom)?;
        writeln!(
            out,
            "   destroyed {} (domid {dom}): host free memory {} MiB",
            names[&dom],
            mib(xen.physinfo()?.free_pages)
        )?;
    }
    let free_after = xen.physinfo()?.free_pages;
    view("after destruction", out)?;
    writeln!(
        out,
        "== host free memory: {} MiB before, {} MiB after",
        mib(free_before),
        mib(free_after)
    )?;
    Ok(Summary {
        free_before,
        free_after,
        created,
    })
}
