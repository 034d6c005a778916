//! C xentop's table: its columns, widths, `printf` formats, sort orders and extra lines.
//!
//! Every cell is printed as `tools/xentop/xentop.c` prints it (`%10llu`, `%6.1f`,
//! `%10.10s`, `%*llu` with widths that grow with the numbers, `-` for disks without
//! counters, `no limit` and `n/a` for a domain without a memory limit), so that our
//! output and C xentop's can be compared line by line.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::time::Duration;

use crate::model::{Domain, Node, VbdStats};

/// The columns, in xentop's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// `NAME`.
    Name,
    /// `STATE`.
    State,
    /// `CPU(sec)`.
    Cpu,
    /// `CPU(%)`.
    CpuPct,
    /// `MEM(k)`.
    Mem,
    /// `MEM(%)`.
    MemPct,
    /// `MAXMEM(k)`.
    MaxMem,
    /// `MAXMEM(%)`.
    MaxPct,
    /// `VCPUS`.
    Vcpus,
    /// `NETS`.
    Nets,
    /// `NETTX(k)`.
    NetTx,
    /// `NETRX(k)`.
    NetRx,
    /// `VBDS`.
    Vbds,
    /// `VBD_OO`.
    VbdOo,
    /// `VBD_RD`.
    VbdRd,
    /// `VBD_WR`.
    VbdWr,
    /// `VBD_RSECT`.
    VbdRsect,
    /// `VBD_WSECT`.
    VbdWsect,
    /// `SSID`.
    Ssid,
}

impl Field {
    /// Every column, in order.
    pub const ALL: [Field; 19] = [
        Field::Name,
        Field::State,
        Field::Cpu,
        Field::CpuPct,
        Field::Mem,
        Field::MemPct,
        Field::MaxMem,
        Field::MaxPct,
        Field::Vcpus,
        Field::Nets,
        Field::NetTx,
        Field::NetRx,
        Field::Vbds,
        Field::VbdOo,
        Field::VbdRd,
        Field::VbdWr,
        Field::VbdRsect,
        Field::VbdWsect,
        Field::Ssid,
    ];

    /// The column heading.
    pub fn header(self) -> &'static str {
        match self {
            Field::Name => "NAME",
            Field::State => "STATE",
            Field::Cpu => "CPU(sec)",
            Field::CpuPct => "CPU(%)",
            Field::Mem => "MEM(k)",
            Field::MemPct => "MEM(%)",
            Field::MaxMem => "MAXMEM(k)",
            Field::MaxPct => "MAXMEM(%)",
            Field::Vcpus => "VCPUS",
            Field::Nets => "NETS",
            Field::NetTx => "NETTX(k)",
            Field::NetRx => "NETRX(k)",
            Field::Vbds => "VBDS",
            Field::VbdOo => "VBD_OO",
            Field::VbdRd => "VBD_RD",
            Field::VbdWr => "VBD_WR",
            Field::VbdRsect => "VBD_RSECT",
            Field::VbdWsect => "VBD_WSECT",
            Field::Ssid => "SSID",
        }
    }

    /// The width before any number widens it (xentop's `default_width`).
    pub fn default_width(self) -> usize {
        match self {
            Field::Name | Field::Cpu | Field::Mem | Field::MaxMem => 10,
            Field::State | Field::CpuPct | Field::MemPct => 6,
            Field::MaxPct => 9,
            Field::Vcpus => 5,
            Field::Nets | Field::Vbds | Field::Ssid => 4,
            Field::NetTx | Field::NetRx | Field::VbdOo | Field::VbdRd | Field::VbdWr => 8,
            Field::VbdRsect | Field::VbdWsect => 10,
        }
    }

    /// Its position in [`Field::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The next column (xentop's `s` key), wrapping to the first.
    pub fn next(self) -> Field {
        Field::ALL[(self.index() + 1) % Field::ALL.len()]
    }
}

/// What to show (xentop's options and toggles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `-f`: names not cut to 10 characters.
    pub full_name: bool,
    /// `-v`: a line of vCPU times per domain.
    pub vcpus: bool,
    /// `-n`: a line per vif.
    pub networks: bool,
    /// `-x`: a line per disk.
    pub vbds: bool,
    /// `-r`: the header before every domain.
    pub repeat_header: bool,
    /// `-z`: `Domain-0` first, the others sorted.
    pub dom0_first: bool,
    /// The sort column (xentop starts with the first, `NAME`).
    pub sort: Field,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            full_name: false,
            vcpus: false,
            networks: false,
            vbds: false,
            repeat_header: false,
            dom0_first: false,
            sort: Field::Name,
        }
    }
}

/// A sample with the one before it, for CPU percentages.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// This sample.
    pub node: &'a Node,
    /// The previous one (`None` at the first: every CPU(%) is 0.0).
    pub prev: Option<&'a Node>,
    /// Time between the two samples.
    pub elapsed: Duration,
}

impl Frame<'_> {
    /// CPU use of `d` since the previous sample, in percent of one CPU (`get_cpu_pct`).
    pub fn cpu_pct(&self, d: &Domain) -> f64 {
        let Some(old) = self.prev.and_then(|p| p.domain(d.id())) else {
            return 0.0;
        };
        let us = self.elapsed.as_secs_f64() * 1e6;
        if us <= 0.0 {
            return 0.0;
        }
        (d.cpu_ns() as f64 - old.cpu_ns() as f64) / 10.0 / us
    }
}

fn vbd_field(f: Field) -> fn(&VbdStats) -> u64 {
    match f {
        Field::VbdOo => |s| s.oo_reqs,
        Field::VbdRd => |s| s.rd_reqs,
        Field::VbdWr => |s| s.wr_reqs,
        Field::VbdRsect => |s| s.rd_sects,
        _ => |s| s.wr_sects,
    }
}

/// xentop's `INT_FIELD_WIDTH(n)`: `(unsigned)(log10(n) + 1)`.
fn int_width(n: u64) -> usize {
    ((n as f64).log10() + 1.0) as usize
}

/// Column widths; the numeric ones are reset and widened each frame, the name's (with
/// `-f`) only ever grows, as in xentop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Widths([usize; 19]);

impl Default for Widths {
    fn default() -> Self {
        Widths(Field::ALL.map(Field::default_width))
    }
}

impl Widths {
    /// The width of `f`.
    pub fn get(&self, f: Field) -> usize {
        self.0[f.index()]
    }

    /// `reset_field_widths` then `adjust_field_widths` for each of `domains`.
    pub fn fit(&mut self, domains: &[&Domain], full_name: bool) {
        for f in [
            Field::NetTx,
            Field::NetRx,
            Field::VbdRd,
            Field::VbdWr,
            Field::VbdRsect,
            Field::VbdWsect,
        ] {
            self.0[f.index()] = f.default_width();
        }
        for d in domains {
            let mut grow = |f: Field, w: usize| {
                let slot = &mut self.0[f.index()];
                *slot = (*slot).max(w);
            };
            if full_name {
                grow(Field::Name, d.name.len());
            }
            grow(Field::NetTx, int_width(d.net_bytes(false) / 1024 + 1));
            grow(Field::NetRx, int_width(d.net_bytes(true) / 1024 + 1));
            for f in [Field::VbdRd, Field::VbdWr, Field::VbdRsect, Field::VbdWsect] {
                grow(f, int_width(d.vbd_total(vbd_field(f)).0.wrapping_add(1)));
            }
        }
    }
}

/// Compares two domains by `f` as xentop sorts (names case-blind and ascending, states by
/// xentop's letter order, SSIDs ascending, every other number descending).
pub fn compare(f: Field, frame: &Frame<'_>, a: &Domain, b: &Domain) -> Ordering {
    let desc = |x: u64, y: u64| y.cmp(&x);
    match f {
        Field::Name => a
            .name
            .to_ascii_lowercase()
            .cmp(&b.name.to_ascii_lowercase()),
        Field::State => {
            for ((sa, _), (sb, _)) in a.states().into_iter().zip(b.states()) {
                match (sa, sb) {
                    (true, false) => return Ordering::Less,
                    (false, true) => return Ordering::Greater,
                    _ => {}
                }
            }
            Ordering::Equal
        }
        Field::Cpu => desc(a.cpu_ns(), b.cpu_ns()),
        Field::CpuPct => frame
            .cpu_pct(b)
            .partial_cmp(&frame.cpu_pct(a))
            .unwrap_or(Ordering::Equal),
        Field::Mem | Field::MemPct => desc(a.cur_mem(), b.cur_mem()),
        Field::MaxMem | Field::MaxPct => desc(
            a.max_mem().unwrap_or(u64::MAX),
            b.max_mem().unwrap_or(u64::MAX),
        ),
        Field::Vcpus => desc(a.num_vcpus().into(), b.num_vcpus().into()),
        Field::Nets => desc(a.networks.len() as u64, b.networks.len() as u64),
        Field::NetTx => desc(a.net_bytes(false), b.net_bytes(false)),
        Field::NetRx => desc(a.net_bytes(true), b.net_bytes(true)),
        Field::Vbds => desc(a.vbds.len() as u64, b.vbds.len() as u64),
        Field::VbdOo | Field::VbdRd | Field::VbdWr | Field::VbdRsect | Field::VbdWsect => {
            desc(a.vbd_total(vbd_field(f)).0, b.vbd_total(vbd_field(f)).0)
        }
        Field::Ssid => a.ssid().cmp(&b.ssid()),
    }
}

/// The domains in display order: sorted by `opts.sort`, with `Domain-0` first under
/// `opts.dom0_first`.
pub fn sorted<'a>(frame: &Frame<'a>, opts: &Options) -> Vec<&'a Domain> {
    let mut v: Vec<&Domain> = frame.node.domains.iter().collect();
    let mut start = 0;
    if opts.dom0_first {
        if let Some(i) = v.iter().position(|d| d.name == "Domain-0") {
            v.swap(0, i);
            start = 1;
        }
    }
    v[start..].sort_by(|a, b| compare(opts.sort, frame, a, b));
    v
}

/// One cell, as xentop's `print_*` function for `f` prints it.
pub fn cell(f: Field, frame: &Frame<'_>, d: &Domain, w: &Widths, opts: &Options) -> String {
    let tot = frame.node.tot_mem as f64;
    let vbd = |f: Field| {
        let (n, show) = d.vbd_total(vbd_field(f));
        let width = w.get(f);
        if show {
            format!("{n:>width$}")
        } else {
            format!("{:>width$}", '-')
        }
    };
    match f {
        Field::Name => {
            if opts.full_name {
                format!("{:>1$}", d.name, w.get(Field::Name))
            } else {
                format!("{:>10.10}", d.name)
            }
        }
        Field::State => d
            .states()
            .iter()
            .map(|&(on, c)| if on { c } else { '-' })
            .collect(),
        Field::Cpu => format!("{:>10}", d.cpu_ns() / 1_000_000_000),
        Field::CpuPct => format!("{:6.1}", frame.cpu_pct(d)),
        Field::Mem => format!("{:>10}", d.cur_mem() / 1024),
        Field::MemPct => format!("{:6.1}", d.cur_mem() as f64 / tot * 100.0),
        Field::MaxMem => match d.max_mem() {
            None => format!("{:>10}", "no limit"),
            Some(m) => format!("{:>10}", m / 1024),
        },
        Field::MaxPct => match d.max_mem() {
            None => format!("{:>9}", "n/a"),
            Some(m) => format!("{:9.1}", m as f64 / tot * 100.0),
        },
        Field::Vcpus => format!("{:>5}", d.num_vcpus()),
        Field::Nets => format!("{:>4}", d.networks.len()),
        Field::NetTx => format!("{:>1$}", d.net_bytes(false) / 1024, w.get(Field::NetTx)),
        Field::NetRx => format!("{:>1$}", d.net_bytes(true) / 1024, w.get(Field::NetRx)),
        Field::Vbds => format!("{:>4}", d.vbds.len()),
        // VBD_OO's width is not widened: `%8llu` / `%8c`.
        Field::VbdOo => {
            let (n, show) = d.vbd_total(|s| s.oo_reqs);
            if show {
                format!("{n:>8}")
            } else {
                format!("{:>8}", '-')
            }
        }
        Field::VbdRd | Field::VbdWr | Field::VbdRsect | Field::VbdWsect => vbd(f),
        Field::Ssid => format!("{:>4}", d.ssid()),
    }
}

/// The table header (`do_header`), with its newline.
pub fn header(w: &Widths) -> String {
    let cells: Vec<String> = Field::ALL
        .iter()
        .map(|&f| format!("{:>1$}", f.header(), w.get(f)))
        .collect();
    cells.join(" ") + "\n"
}

/// One domain's line (`do_domain`), with its newline.
pub fn domain_line(frame: &Frame<'_>, d: &Domain, w: &Widths, opts: &Options) -> String {
    let cells: Vec<String> = Field::ALL
        .iter()
        .map(|&f| cell(f, frame, d, w, opts))
        .collect();
    cells.join(" ") + "\n"
}

/// The vCPU line (`do_vcpu`): online vCPUs' seconds, five to a line.
pub fn vcpu_lines(d: &Domain) -> String {
    let mut s = String::from("VCPUs(sec): ");
    for (i, v) in d.vcpus.iter().enumerate() {
        if v.online {
            if i != 0 && i % 5 == 0 {
                s.push_str("\n        ");
            }
            let _ = write!(s, " {i:>2}: {:>10}s", v.ns / 1_000_000_000);
        }
    }
    s.push('\n');
    s
}

/// The vif lines (`do_network`).
pub fn network_lines(d: &Domain) -> String {
    let mut s = String::new();
    for (i, n) in d.networks.iter().enumerate() {
        let _ = writeln!(
            s,
            "Net{i} RX: {:>8}bytes {:>8}pkts {:>8}err {:>8}drop  TX: {:>8}bytes {:>8}pkts {:>8}err {:>8}drop",
            n.rbytes, n.rpackets, n.rerrs, n.rdrop, n.tbytes, n.tpackets, n.terrs, n.tdrop
        );
    }
    s
}

/// The disk lines (`do_vbd`), with Linux's `[major:minor]` of the device id.
pub fn vbd_lines(d: &Domain) -> String {
    let mut s = String::new();
    for v in &d.vbds {
        let details = format!("[{:>2x}:{:>2x}] ", v.dev >> 8, v.dev & 0xff);
        let dev = v.dev as i32;
        let name = v.backend.name();
        match &v.stats {
            None => {
                let _ = writeln!(
                    s,
                    "VBD {name} {dev:>4} {details} OO: {:>8}   RD: {:>8}   WR: {:>8}   RSECT: {:>10}   WSECT: {:>10}",
                    '-', '-', '-', '-', '-'
                );
            }
            Some(t) => {
                let _ = writeln!(
                    s,
                    "VBD {name} {dev:>4} {details} OO: {:>8}   RD: {:>8}   WR: {:>8}   RSECT: {:>10}   WSECT: {:>10}",
                    t.oo_reqs, t.rd_reqs, t.wr_reqs, t.rd_sects, t.wr_sects
                );
            }
        }
    }
    s
}

/// The three summary lines above the table in the terminal view (`do_summary`); `time`
/// is the local time as `HH:MM:SS`.
pub fn summary(node: &Node, time: &str) -> String {
    let (mut run, mut block, mut pause, mut crash, mut dying, mut shutdown) = (0, 0, 0, 0, 0, 0);
    for d in &node.domains {
        if d.running() {
            run += 1;
        } else if d.blocked() {
            block += 1;
        } else if d.paused() {
            pause += 1;
        } else if d.shutdown() {
            shutdown += 1;
        } else if d.crashed() {
            crash += 1;
        } else if d.dying() {
            dying += 1;
        }
    }
    let used = node.tot_mem.wrapping_sub(node.free_mem);
    format!(
        "xentop - {time}   Xen {}\n\
         {} domains: {run} running, {block} blocked, {pause} paused, {crash} crashed, {dying} dying, {shutdown} shutdown \n\
         Mem: {}k total, {}k used, {}k free    CPUs: {} @ {}MHz\n",
        node.xen_version,
        node.domains.len(),
        node.tot_mem / 1024,
        used / 1024,
        node.free_mem / 1024,
        node.num_cpus,
        node.cpu_hz / 1_000_000,
    )
}

/// The table as xentop's `top()` prints it after the summary (all of batch mode's output
/// for one iteration): from the `first`th domain in display order, the header once (or
/// before each domain with `repeat_header`), each domain's line and its extra lines.
/// `widths` carries the name width from frame to frame.
pub fn table(frame: &Frame<'_>, opts: &Options, widths: &mut Widths, first: usize) -> String {
    let doms = sorted(frame, opts);
    let first = first.min(doms.len().saturating_sub(1));
    let shown = doms.get(first..).unwrap_or_default();
    widths.fit(shown, opts.full_name);
    let mut s = String::new();
    for (i, d) in shown.iter().enumerate() {
        if i == 0 || opts.repeat_header {
            s.push_str(&header(widths));
        }
        s.push_str(&domain_line(frame, d, widths, opts));
        if opts.vcpus {
            s.push_str(&vcpu_lines(d));
        }
        if opts.networks {
            s.push_str(&network_lines(d));
        }
        if opts.vbds {
            s.push_str(&vbd_lines(d));
        }
    }
    s
}
