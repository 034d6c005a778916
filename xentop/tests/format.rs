//! Cells and lines against C's `printf` with xentop.c's own format strings (through libc's
//! `snprintf`), and the table's layout rules.

use std::ffi::{CStr, CString};
use std::time::Duration;

use xen_types::{DomId, Pages};
use xentop::format::{self, Field, Frame, Options, Widths};
use xentop::{Domain, Network, Node, Vbd, VbdBackend, VbdStats, Vcpu};

fn c_buf(f: impl FnOnce(*mut libc::c_char, usize) -> libc::c_int) -> String {
    let mut buf = vec![0u8; 512];
    let n = f(buf.as_mut_ptr().cast(), buf.len());
    assert!(n >= 0 && (n as usize) < buf.len());
    CStr::from_bytes_until_nul(&buf)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

/// C's `snprintf(fmt, v)` for one `unsigned long long`.
fn c_u64(fmt: &str, v: u64) -> String {
    let fmt = CString::new(fmt).unwrap();
    // SAFETY: `buf` has `len` writable bytes, `fmt` is NUL-terminated and takes exactly one
    // `unsigned long long` (every caller passes a `%...llu` format).
    c_buf(|buf, len| unsafe { libc::snprintf(buf, len, fmt.as_ptr(), v as libc::c_ulonglong) })
}

/// C's `snprintf(fmt, width, v)` for a `*` width and one `unsigned long long`.
fn c_star_u64(fmt: &str, width: usize, v: u64) -> String {
    let fmt = CString::new(fmt).unwrap();
    // SAFETY: as in `c_u64`; the format is `%*llu`: an `int` width, then the number.
    c_buf(|buf, len| unsafe {
        libc::snprintf(
            buf,
            len,
            fmt.as_ptr(),
            width as libc::c_int,
            v as libc::c_ulonglong,
        )
    })
}

/// C's `snprintf(fmt, v)` for one `double`.
fn c_f64(fmt: &str, v: f64) -> String {
    let fmt = CString::new(fmt).unwrap();
    // SAFETY: as in `c_u64`; every caller passes a `%...f` format, which takes a double.
    c_buf(|buf, len| unsafe { libc::snprintf(buf, len, fmt.as_ptr(), v) })
}

/// C's `snprintf(fmt, s)` for one string.
fn c_str(fmt: &str, s: &str) -> String {
    let fmt = CString::new(fmt).unwrap();
    let s = CString::new(s).unwrap();
    // SAFETY: as in `c_u64`; every caller passes a format with one `%s`.
    c_buf(|buf, len| unsafe { libc::snprintf(buf, len, fmt.as_ptr(), s.as_ptr()) })
}

fn info(dom: u16) -> xenctrl::DomainInfo {
    let host = xen_sim::Host::default();
    let mut i = xenctrl::DomainInfo::from(&host.domain_info(DomId::DOM0).unwrap());
    i.domid = DomId(dom);
    i
}

fn domain(name: &str, tot_kib: u64, max_pages: u64, cpu: Duration) -> Domain {
    let mut i = info(1);
    i.tot_pages = Pages(tot_kib / 4);
    i.max_pages = Pages(max_pages);
    i.cpu_time = cpu;
    Domain {
        info: i,
        name: name.into(),
        vcpus: Vec::new(),
        networks: Vec::new(),
        vbds: Vec::new(),
    }
}

fn node(domains: Vec<Domain>) -> Node {
    Node {
        xen_version: "4.17.0".into(),
        cpu_hz: 2_400_000_000,
        num_cpus: 8,
        tot_mem: 8 << 30,
        free_mem: 6 << 30,
        domains,
        warnings: Vec::new(),
    }
}

const NUMBERS: [u64; 9] = [
    0,
    1,
    9,
    99_999,
    1_000_000_000,
    9_999_999_999,
    12_345_678_901,
    u32::MAX as u64,
    u64::MAX / 1024,
];

#[test]
fn integer_columns_print_as_their_c_formats() {
    let opts = Options::default();
    let w = Widths::default();
    for n in NUMBERS {
        let mut d = domain("x", 0, 0, Duration::ZERO);
        d.info.tot_pages = Pages(n / 4);
        d.info.cpu_time = Duration::from_nanos(n);
        d.info.max_pages = Pages(n % (u32::MAX as u64));
        d.info.ssidref = n as u32;
        let nd = node(vec![d.clone()]);
        let f = Frame {
            node: &nd,
            prev: None,
            elapsed: Duration::ZERO,
        };
        assert_eq!(
            format::cell(Field::Cpu, &f, &d, &w, &opts),
            c_u64("%10llu", d.cpu_ns() / 1_000_000_000)
        );
        assert_eq!(
            format::cell(Field::Mem, &f, &d, &w, &opts),
            c_u64("%10llu", d.cur_mem() / 1024)
        );
        assert_eq!(
            format::cell(Field::MaxMem, &f, &d, &w, &opts),
            c_u64("%10llu", d.max_mem().unwrap() / 1024)
        );
        assert_eq!(
            format::cell(Field::Ssid, &f, &d, &w, &opts),
            c_u64("%4llu", u64::from(n as u32))
        );
    }
}

#[test]
fn ssid_vcpus_and_counts_print_as_unsigned() {
    // `%4u`/`%5u` take an unsigned int; print them through `%llu` of the same width.
    let mut d = domain("x", 4, 1, Duration::ZERO);
    d.info.ssidref = 4_000_000_000;
    d.info.max_vcpu_id = Some(127);
    d.networks = vec![Network::default(); 3];
    d.vbds = vec![
        Vbd {
            backend: VbdBackend::BlkBack,
            dev: 51712,
            stats: None
        };
        2
    ];
    let nd = node(vec![d.clone()]);
    let f = Frame {
        node: &nd,
        prev: None,
        elapsed: Duration::ZERO,
    };
    let (o, w) = (Options::default(), Widths::default());
    assert_eq!(
        format::cell(Field::Ssid, &f, &d, &w, &o),
        c_u64("%4llu", 4_000_000_000)
    );
    assert_eq!(
        format::cell(Field::Vcpus, &f, &d, &w, &o),
        c_u64("%5llu", 128)
    );
    assert_eq!(format::cell(Field::Nets, &f, &d, &w, &o), c_u64("%4llu", 3));
    assert_eq!(format::cell(Field::Vbds, &f, &d, &w, &o), c_u64("%4llu", 2));
}

#[test]
fn percentages_round_as_printf_does() {
    let values = [
        0.0,
        0.04,
        0.05,
        0.15,
        0.25,
        0.35,
        0.45,
        1.0 / 3.0,
        12.5,
        99.95,
        99.949_999,
        100.0,
        199.96,
        12_345.678,
        1e7,
    ];
    for v in values {
        assert_eq!(format!("{v:6.1}"), c_f64("%6.1f", v), "{v}");
        assert_eq!(format!("{v:9.1}"), c_f64("%9.1f", v), "{v}");
    }
    // Through the cells: MEM(%) and MAXMEM(%) of an 8 GiB host.
    for kib in [0u64, 4, 1024, 838_860, 838_864, 4_194_304, 8_388_608] {
        let d = domain("x", kib, kib / 4, Duration::ZERO);
        let nd = node(vec![d.clone()]);
        let f = Frame {
            node: &nd,
            prev: None,
            elapsed: Duration::ZERO,
        };
        let (o, w) = (Options::default(), Widths::default());
        let pct = (kib * 1024) as f64 / (8u64 << 30) as f64 * 100.0;
        assert_eq!(
            format::cell(Field::MemPct, &f, &d, &w, &o),
            c_f64("%6.1f", pct)
        );
        assert_eq!(
            format::cell(Field::MaxPct, &f, &d, &w, &o),
            c_f64("%9.1f", pct)
        );
    }
}

#[test]
fn cpu_percent_is_the_share_of_the_time_between_samples() {
    let before = domain("a", 4, 1, Duration::from_millis(500));
    let after = domain("a", 4, 1, Duration::from_millis(2_000));
    let (p, n) = (node(vec![before]), node(vec![after.clone()]));
    let f = Frame {
        node: &n,
        prev: Some(&p),
        elapsed: Duration::from_secs(2),
    };
    assert_eq!(f.cpu_pct(&after), 75.0);
    let (o, w) = (Options::default(), Widths::default());
    assert_eq!(
        format::cell(Field::CpuPct, &f, &after, &w, &o),
        c_f64("%6.1f", 75.0)
    );
    // No previous sample, or the domain is new: 0.0.
    let first = Frame { prev: None, ..f };
    assert_eq!(
        format::cell(Field::CpuPct, &first, &after, &w, &o),
        "   0.0"
    );
    let other = node(vec![]);
    let new = Frame {
        prev: Some(&other),
        ..f
    };
    assert_eq!(new.cpu_pct(&after), 0.0);
}

#[test]
fn names_are_cut_to_ten_or_given_whole_with_a_growing_width() {
    let d = domain("a-rather-long-name", 4, 1, Duration::ZERO);
    let short = domain("dom", 4, 1, Duration::ZERO);
    let nd = node(vec![d.clone(), short.clone()]);
    let f = Frame {
        node: &nd,
        prev: None,
        elapsed: Duration::ZERO,
    };
    let (o, w) = (Options::default(), Widths::default());
    assert_eq!(
        format::cell(Field::Name, &f, &d, &w, &o),
        c_str("%10.10s", "a-rather-long-name")
    );
    assert_eq!(
        format::cell(Field::Name, &f, &short, &w, &o),
        c_str("%10.10s", "dom")
    );
    let full = Options {
        full_name: true,
        ..o
    };
    let mut w = Widths::default();
    let text = format::table(&f, &full, &mut w, 0);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(w.get(Field::Name), 18);
    assert!(lines[0].starts_with(&c_str("%18s", "NAME")), "{}", lines[0]);
    assert!(lines[1].starts_with(&c_str("%18s ", "a-rather-long-name")));
    assert!(lines[2].starts_with(&c_str("%18s ", "dom")));
    // The name width never shrinks (xentop does not reset it).
    let only_short = node(vec![short]);
    let f2 = Frame {
        node: &only_short,
        ..f
    };
    let text = format::table(&f2, &full, &mut w, 0);
    assert!(text
        .lines()
        .nth(1)
        .unwrap()
        .starts_with(&c_str("%18s ", "dom")));
}

#[test]
fn no_limit_and_n_a_for_a_domain_without_a_memory_limit() {
    let d = domain("Domain-0", 1_048_576, u32::MAX as u64, Duration::ZERO);
    let nd = node(vec![d.clone()]);
    let f = Frame {
        node: &nd,
        prev: None,
        elapsed: Duration::ZERO,
    };
    let (o, w) = (Options::default(), Widths::default());
    assert_eq!(
        format::cell(Field::MaxMem, &f, &d, &w, &o),
        c_str("%10s", "no limit")
    );
    assert_eq!(
        format::cell(Field::MaxPct, &f, &d, &w, &o),
        c_str("%9s", "n/a")
    );
    // One page less is a limit.
    let mut d2 = d.clone();
    d2.info.max_pages = Pages(u32::MAX as u64 - 1);
    assert_eq!(
        format::cell(Field::MaxMem, &f, &d2, &w, &o),
        c_u64("%10llu", (u32::MAX as u64 - 1) * 4)
    );
}

#[test]
fn states_print_in_dsbcpr_order() {
    use xenctrl::{DomainFlags, ShutdownReason};
    let nd = node(vec![]);
    let f = Frame {
        node: &nd,
        prev: None,
        elapsed: Duration::ZERO,
    };
    let (o, w) = (Options::default(), Widths::default());
    let mut d = domain("x", 4, 1, Duration::ZERO);
    let cases = [
        (DomainFlags::RUNNING, None, "-----r"),
        (DomainFlags::BLOCKED, None, "--b---"),
        (DomainFlags::PAUSED | DomainFlags::BLOCKED, None, "--b-p-"),
        (
            DomainFlags::SHUTDOWN,
            Some(ShutdownReason::Poweroff),
            "-s----",
        ),
        (DomainFlags::SHUTDOWN, Some(ShutdownReason::Crash), "---c--"),
        (
            DomainFlags::DYING | DomainFlags::SHUTDOWN,
            Some(ShutdownReason::Reboot),
            "ds----",
        ),
        (DomainFlags::empty(), None, "------"),
    ];
    for (flags, reason, want) in cases {
        d.info.flags = flags;
        d.info.shutdown_reason = reason;
        d.info.shutdown_code = reason.map_or(255, |r| r.code());
        assert_eq!(
            format::cell(Field::State, &f, &d, &w, &o),
            want,
            "{flags:?}"
        );
    }
}

fn stats(n: u64) -> VbdStats {
    VbdStats {
        oo_reqs: n,
        rd_reqs: n * 2,
        wr_reqs: n * 3,
        rd_sects: n * 4,
        wr_sects: n * 5,
    }
}

#[test]
fn vbd_counters_sum_readable_disks_and_dash_when_none_is() {
    let mut d = domain("x", 4, 1, Duration::ZERO);
    let disk = |s| Vbd {
        backend: VbdBackend::BlkBack,
        dev: 51712,
        stats: s,
    };
    let nd = node(vec![]);
    let f = Frame {
        node: &nd,
        prev: None,
        elapsed: Duration::ZERO,
    };
    let (o, w) = (Options::default(), Widths::default());
    // No disks: zeros.
    assert_eq!(
        format::cell(Field::VbdRd, &f, &d, &w, &o),
        c_star_u64("%*llu", 8, 0)
    );
    // Only unreadable disks: '-'.
    d.vbds = vec![disk(None)];
    for (fld, width) in [
        (Field::VbdOo, 8),
        (Field::VbdRd, 8),
        (Field::VbdWr, 8),
        (Field::VbdRsect, 10),
        (Field::VbdWsect, 10),
    ] {
        assert_eq!(
            format::cell(fld, &f, &d, &w, &o),
            format!("{:>width$}", "-")
        );
    }
    // Readable ones are summed, the others skipped.
    d.vbds.push(disk(Some(stats(10))));
    d.vbds.push(disk(Some(stats(1))));
    assert_eq!(
        format::cell(Field::VbdOo, &f, &d, &w, &o),
        c_u64("%8llu", 11)
    );
    assert_eq!(
        format::cell(Field::VbdRsect, &f, &d, &w, &o),
        c_star_u64("%*llu", 10, 44)
    );
}

#[test]
fn wide_counters_widen_their_columns_as_int_field_width_does() {
    let mut d = domain("x", 4, 1, Duration::ZERO);
    // 99,999,999 sectors + 1 = 10^8: log10 + 1 = 9 digits.
    d.vbds = vec![Vbd {
        backend: VbdBackend::BlkBack,
        dev: 51712,
        stats: Some(VbdStats {
            rd_reqs: 99_999_999,
            wr_reqs: 99_999_998,
            ..VbdStats::default()
        }),
    }];
    d.networks = vec![Network {
        tbytes: 123_456_789_012 * 1024,
        rbytes: 5 * 1024,
        ..Network::default()
    }];
    let nd = node(vec![d.clone()]);
    let f = Frame {
        node: &nd,
        prev: None,
        elapsed: Duration::ZERO,
    };
    let mut w = Widths::default();
    let o = Options::default();
    let text = format::table(&f, &o, &mut w, 0);
    assert_eq!(w.get(Field::VbdRd), 9);
    assert_eq!(w.get(Field::VbdWr), 8);
    assert_eq!(w.get(Field::NetTx), 12);
    assert_eq!(w.get(Field::NetRx), 8);
    let header = text.lines().next().unwrap();
    assert!(header.contains(&c_str("%9s", "VBD_RD")), "{header}");
    assert!(header.contains(&c_str("%12s", "NETTX(k)")), "{header}");
    let row = text.lines().nth(1).unwrap();
    assert!(
        row.contains(&c_star_u64(" %*llu ", 12, 123_456_789_012)),
        "{row}"
    );
    assert!(row.contains(&c_star_u64(" %*llu ", 9, 99_999_999)), "{row}");
    // The next frame starts from the defaults again.
    let small = domain("x", 4, 1, Duration::ZERO);
    let nd = node(vec![small]);
    let f = Frame { node: &nd, ..f };
    format::table(&f, &o, &mut w, 0);
    assert_eq!(w, Widths::default());
}

#[test]
fn the_header_is_xentops() {
    assert_eq!(
        format::header(&Widths::default()),
        "      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) VCPUS NETS \
         NETTX(k) NETRX(k) VBDS   VBD_OO   VBD_RD   VBD_WR  VBD_RSECT  VBD_WSECT SSID\n"
    );
}

#[test]
fn a_whole_line_is_the_c_cells_joined_by_spaces() {
    let mut d = domain("guest1", 262_144, 65_792, Duration::from_secs(42));
    d.info.flags = xenctrl::DomainFlags::BLOCKED;
    d.info.max_vcpu_id = Some(1);
    d.networks = vec![Network {
        tbytes: 10 << 20,
        rbytes: 3 << 10,
        ..Network::default()
    }];
    d.vbds = vec![Vbd {
        backend: VbdBackend::BlkBack,
        dev: 51712,
        stats: Some(stats(7)),
    }];
    let nd = node(vec![d.clone()]);
    let f = Frame {
        node: &nd,
        prev: None,
        elapsed: Duration::ZERO,
    };
    let want = [
        c_str("%10.10s", "guest1"),
        "--b---".into(),
        c_u64("%10llu", 42),
        c_f64("%6.1f", 0.0),
        c_u64("%10llu", 262_144),
        c_f64("%6.1f", 262_144.0 * 1024.0 / (8u64 << 30) as f64 * 100.0),
        c_u64("%10llu", 263_168),
        c_f64("%9.1f", 263_168.0 * 1024.0 / (8u64 << 30) as f64 * 100.0),
        c_u64("%5llu", 2),
        c_u64("%4llu", 1),
        c_star_u64("%*llu", 8, 10 << 10),
        c_star_u64("%*llu", 8, 3),
        c_u64("%4llu", 1),
        c_u64("%8llu", 7),
        c_star_u64("%*llu", 8, 14),
        c_star_u64("%*llu", 8, 21),
        c_star_u64("%*llu", 10, 28),
        c_star_u64("%*llu", 10, 35),
        c_u64("%4llu", 0),
    ]
    .join(" ")
        + "\n";
    assert_eq!(
        format::domain_line(&f, &d, &Widths::default(), &Options::default()),
        want
    );
}

#[test]
fn extra_lines_for_vcpus_vifs_and_disks() {
    let mut d = domain("x", 4, 1, Duration::ZERO);
    d.vcpus = (0..7)
        .map(|i| Vcpu {
            online: i != 2,
            ns: i * 1_500_000_000,
        })
        .collect();
    let v = format::vcpu_lines(&d);
    let mut want = String::from("VCPUs(sec): ");
    for i in 0..7u64 {
        if i == 2 {
            continue;
        }
        if i == 5 {
            want.push_str("\n        ");
        }
        want.push_str(&c_u64(&format!(" {i:2}: %10llus"), i * 3 / 2));
    }
    want.push('\n');
    assert_eq!(v, want);

    d.networks = vec![Network {
        id: 0,
        rbytes: 1,
        rpackets: 2,
        rerrs: 3,
        rdrop: 4,
        tbytes: 5,
        tpackets: 6,
        terrs: 7,
        tdrop: 8,
    }];
    assert_eq!(
        format::network_lines(&d),
        format!(
            "Net0 RX: {}bytes {}pkts {}err {}drop  TX: {}bytes {}pkts {}err {}drop\n",
            c_u64("%8llu", 1),
            c_u64("%8llu", 2),
            c_u64("%8llu", 3),
            c_u64("%8llu", 4),
            c_u64("%8llu", 5),
            c_u64("%8llu", 6),
            c_u64("%8llu", 7),
            c_u64("%8llu", 8)
        )
    );

    d.vbds = vec![
        Vbd {
            backend: VbdBackend::BlkBack,
            dev: 51712,
            stats: Some(stats(1)),
        },
        Vbd {
            backend: VbdBackend::Unidentified,
            dev: 768,
            stats: None,
        },
    ];
    let lines = format::vbd_lines(&d);
    let mut l = lines.lines();
    assert_eq!(
        l.next().unwrap(),
        format!(
            "VBD BlkBack {} {} OO: {}   RD: {}   WR: {}   RSECT: {}   WSECT: {}",
            c_u64("%4lld", 51712),
            c_u64("[%2llx:", 51712 >> 8) + &c_u64("%2llx] ", 0),
            c_u64("%8llu", 1),
            c_u64("%8llu", 2),
            c_u64("%8llu", 3),
            c_u64("%10llu", 4),
            c_u64("%10llu", 5)
        )
    );
    assert_eq!(
        l.next().unwrap(),
        "VBD Unidentified  768 [ 3: 0]  OO:        -   RD:        -   WR:        -   RSECT:          -   WSECT:          -"
    );
}

#[test]
fn the_summary_counts_each_domain_once() {
    let mut a = domain("a", 4, 1, Duration::ZERO);
    a.info.flags = xenctrl::DomainFlags::RUNNING;
    let mut b = domain("b", 4, 1, Duration::ZERO);
    b.info.flags = xenctrl::DomainFlags::BLOCKED | xenctrl::DomainFlags::PAUSED;
    let mut c = domain("c", 4, 1, Duration::ZERO);
    c.info.flags = xenctrl::DomainFlags::PAUSED;
    let s = format::summary(&node(vec![a, b, c]), "12:34:56");
    assert_eq!(
        s,
        "xentop - 12:34:56   Xen 4.17.0\n\
         3 domains: 1 running, 1 blocked, 1 paused, 0 crashed, 0 dying, 0 shutdown \n\
         Mem: 8388608k total, 2097152k used, 6291456k free    CPUs: 8 @ 2400MHz\n"
    );
}
