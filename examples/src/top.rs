//! An `xentop`-like table: one line per domain, CPU% from the difference of two samples.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use xenctrl::{DomId, DomainInfo, PhysInfo};

/// One sample of every domain, and when it was taken.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When, on the caller's clock.
    pub at: Duration,
    /// The domains, by id.
    pub domains: BTreeMap<DomId, DomainInfo>,
}

impl Sample {
    /// A sample of `domains` taken at `at`.
    pub fn new(at: Duration, domains: Vec<DomainInfo>) -> Sample {
        Sample {
            at,
            domains: domains.into_iter().map(|d| (d.domid, d)).collect(),
        }
    }
}

/// CPU use of a domain between two samples, in percent of one CPU (as xentop shows it).
pub fn cpu_percent(prev: Option<&DomainInfo>, cur: &DomainInfo, elapsed: Duration) -> f64 {
    let Some(prev) = prev else {
        return 0.0;
    };
    if elapsed.is_zero() {
        return 0.0;
    }
    let used = cur.cpu_time.saturating_sub(prev.cpu_time);
    100.0 * used.as_secs_f64() / elapsed.as_secs_f64()
}

/// Renders the table. `names` gives domain names (dom0 is `Domain-0` when missing).
pub fn render(
    prev: Option<&Sample>,
    cur: &Sample,
    host: &PhysInfo,
    names: &BTreeMap<DomId, String>,
) -> String {
    let total_kib = host.total_pages.kib().max(1) as f64;
    let elapsed = prev.map_or(Duration::ZERO, |p| cur.at.saturating_sub(p.at));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>6} {:>9} {:>7} {:>10} {:>6} {:>10} {:>7} {:>5}",
        "NAME",
        "STATE",
        "CPU(sec)",
        "CPU(%)",
        "MEM(k)",
        "MEM(%)",
        "MAXMEM(k)",
        "MAXMEM(%)",
        "VCPUS"
    );
    for (id, d) in &cur.domains {
        let name = names.get(id).cloned().unwrap_or_else(|| {
            if id.is_dom0() {
                "Domain-0".to_string()
            } else {
                format!("dom{id}")
            }
        });
        let pct = cpu_percent(prev.and_then(|p| p.domains.get(id)), d, elapsed);
        let mem = d.tot_pages.kib();
        let max = d.max_pages.kib();
        let _ = writeln!(
            out,
            "{:>12} {:>6} {:>9} {:>7.1} {:>10} {:>6.1} {:>10} {:>9.1} {:>5}",
            name,
            d.state_string(),
            d.cpu_time.as_secs(),
            pct,
            mem,
            100.0 * mem as f64 / total_kib,
            max,
            100.0 * max as f64 / total_kib,
            d.online_vcpus,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_is_the_share_of_elapsed_time() {
        let a = DomainInfo {
            cpu_time: Duration::from_millis(500),
            ..dummy()
        };
        let b = DomainInfo {
            cpu_time: Duration::from_millis(2500),
            ..dummy()
        };
        assert_eq!(cpu_percent(Some(&a), &b, Duration::from_secs(1)), 200.0);
        assert_eq!(cpu_percent(None, &b, Duration::from_secs(1)), 0.0);
        assert_eq!(cpu_percent(Some(&a), &b, Duration::ZERO), 0.0);
    }

    fn dummy() -> DomainInfo {
        DomainInfo::from(&xen_sim::Host::default().domain_info(DomId::DOM0).unwrap())
    }
}
