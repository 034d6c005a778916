//! vif counters from `/proc/net/dev`, as libxenstat's Linux collector reads them.
//!
//! The file must start with the kernel's two header lines ([`HEADER`]); each further line is
//! `<iface>: <8 receive counters> <8 transmit counters>`. An interface is a vif of domain D,
//! device N when `/sys/class/net/<iface>/device/nodename` reads `backend/vif/D/N`, or else
//! when its name starts `vifD.N`.

use std::path::Path;

/// The two header lines of `/proc/net/dev` (libxenstat's `PROCNETDEV_HEADER`).
pub const HEADER: &str = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n";

/// One interface's line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfaceCounters {
    /// The interface name.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errs: u64,
    /// Receive drops.
    pub rx_drop: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errs: u64,
    /// Transmit drops.
    pub tx_drop: u64,
}

/// What [`parse`] found: the interfaces, and the lines it could not read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetDev {
    /// Well-formed interface lines, in file order.
    pub ifaces: Vec<IfaceCounters>,
    /// Malformed lines (1-based line number and text), skipped.
    pub bad_lines: Vec<(usize, String)>,
}

/// Parses the whole file. `Err` (with the reason) when the header is not the kernel's:
/// then no line can be trusted, as libxenstat refuses the file.
pub fn parse(text: &str) -> Result<NetDev, String> {
    let Some(body) = text.strip_prefix(HEADER) else {
        let got: String = text.lines().take(2).collect::<Vec<_>>().join("\\n");
        return Err(format!("the header is not the kernel's (got {got:?})"));
    };
    let mut out = NetDev::default();
    for (i, line) in body.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Some(c) => out.ifaces.push(c),
            None => out.bad_lines.push((i + 3, line.to_string())),
        }
    }
    Ok(out)
}

/// Parses one interface line; `None` when it is not `<name>: <16 numbers>`.
pub fn parse_line(line: &str) -> Option<IfaceCounters> {
    let (name, rest) = line.split_once(':')?;
    // libxenstat takes the name from its first letter or digit on.
    let name = name.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    let nums = rest
        .split_whitespace()
        .map(|f| f.parse::<u64>().ok())
        .collect::<Option<Vec<u64>>>()?;
    if nums.len() != 16 {
        return None;
    }
    Some(IfaceCounters {
        name: name.to_string(),
        rx_bytes: nums[0],
        rx_packets: nums[1],
        rx_errs: nums[2],
        rx_drop: nums[3],
        tx_bytes: nums[8],
        tx_packets: nums[9],
        tx_errs: nums[10],
        tx_drop: nums[11],
    })
}

/// The domain and device of vif `iface`: from `<sys_class_net>/<iface>/device/nodename`
/// (`backend/vif/D/N`), else from a name starting `vifD.N`; `None` for other interfaces.
pub fn vif_ids(iface: &str, sys_class_net: &Path) -> Option<(u32, u32)> {
    let nodename = sys_class_net.join(iface).join("device/nodename");
    if let Ok(s) = std::fs::read_to_string(nodename) {
        if let Some(ids) = s
            .trim_end()
            .strip_prefix("backend/vif/")
            .and_then(|r| r.split_once('/'))
            .and_then(|(d, n)| Some((d.parse().ok()?, leading_u32(n)?.0)))
        {
            return Some(ids);
        }
    }
    let rest = iface.strip_prefix("vif")?;
    let (dom, rest) = leading_u32(rest)?;
    let (dev, _) = leading_u32(rest.strip_prefix('.')?)?;
    Some((dom, dev))
}

/// The decimal number at the start of `s` and what follows it (as `sscanf("%u")` reads it).
fn leading_u32(s: &str) -> Option<(u32, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    Some((s[..end].parse().ok()?, &s[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "vif3.1: 1000 10 1 2 0 0 0 0  2000 20 3 4 0 0 0 0";

    #[test]
    fn lines_give_the_counters_libxenstat_keeps() {
        let c = parse_line(LINE).unwrap();
        assert_eq!(c.name, "vif3.1");
        assert_eq!(
            (c.rx_bytes, c.rx_packets, c.rx_errs, c.rx_drop),
            (1000, 10, 1, 2)
        );
        assert_eq!(
            (c.tx_bytes, c.tx_packets, c.tx_errs, c.tx_drop),
            (2000, 20, 3, 4)
        );
        // The kernel right-aligns names; a large counter touches the colon.
        let c = parse_line("  eth0:18446744073709551615 1 0 0 0 0 0 0 5 6 0 0 0 0 0 0").unwrap();
        assert_eq!(
            (c.name.as_str(), c.rx_bytes, c.tx_bytes),
            ("eth0", u64::MAX, 5)
        );
    }

    #[test]
    fn malformed_lines_are_refused() {
        for bad in [
            "no colon here 1 2 3",
            "eth0: 1 2 3",
            "eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 x",
            "eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17",
            "eth0: -1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16",
            "eth0: 18446744073709551616 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16",
            ": 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16",
            "a b: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16",
        ] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_file_needs_the_kernels_header_and_keeps_good_lines_around_bad_ones() {
        let text = format!("{HEADER}    lo: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\ngarbage\n{LINE}\n");
        let nd = parse(&text).unwrap();
        assert_eq!(
            nd.ifaces
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>(),
            ["lo", "vif3.1"]
        );
        assert_eq!(nd.bad_lines, vec![(4, "garbage".to_string())]);
        let e = parse("Inter-| something else\n").unwrap_err();
        assert!(e.contains("header"), "{e}");
        assert!(parse("").is_err());
        // A header cut short is refused too.
        assert!(parse(&HEADER[..HEADER.len() - 1]).is_err());
    }

    #[test]
    fn vifs_are_named_by_sysfs_or_by_their_name() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(vif_ids("vif5.2", dir.path()), Some((5, 2)));
        // sscanf("vif%u.%u") also takes what follows the numbers (QEMU's `-emu` taps).
        assert_eq!(vif_ids("vif5.2-emu", dir.path()), Some((5, 2)));
        assert_eq!(vif_ids("eth0", dir.path()), None);
        assert_eq!(vif_ids("vif.2", dir.path()), None);
        assert_eq!(vif_ids("vif5", dir.path()), None);
        assert_eq!(vif_ids("vif99999999999.0", dir.path()), None);
        // A renamed vif is found through its xenbus node name.
        let dev = dir.path().join("guestnet/device");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("nodename"), "backend/vif/7/0\n").unwrap();
        assert_eq!(vif_ids("guestnet", dir.path()), Some((7, 0)));
        // A nodename that is not a vif's falls back to the name.
        std::fs::write(dev.join("nodename"), "backend/vbd/7/0\n").unwrap();
        assert_eq!(vif_ids("guestnet", dir.path()), None);
    }
}
