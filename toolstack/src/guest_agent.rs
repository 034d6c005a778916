//! What a guest agent publishes in its xenstore directory, read as XAPI's
//! `xapi_guest_agent.ml` reads it into `VM_guest_metrics`.
//!
//! The guest writes under `/local/domain/<domid>`: `attr/PVAddons/*` (its tools' version),
//! `data/os_*` (its OS), `attr/vif/<devid>/ipv4|ipv6/<n>` (or the older
//! `attr/eth<n>/ip`, `attr/eth<n>/ipv6/<m>/addr`) for its addresses, `control/feature-*`,
//! and `data/updated` once a report is complete: nothing counts before that key exists.

use std::collections::BTreeMap;

use xen_types::DomId;
use xenbus::Store;

use crate::Error;

/// `attr/PVAddons/*` and driver keys to `PV_drivers_version` keys.
const PV_DRIVERS_VERSION: &[(&str, &str)] = &[
    ("drivers/xenevtchn", "xenevtchn"),
    ("drivers/xenvbd", "xenvbd"),
    ("drivers/xennet", "xennet"),
    ("attr/PVAddons/MajorVersion", "major"),
    ("attr/PVAddons/MinorVersion", "minor"),
    ("attr/PVAddons/MicroVersion", "micro"),
    ("attr/PVAddons/BuildVersion", "build"),
    ("attr/PVAddons/Application", "application"),
];

/// `data/os_*` keys to `os_version` keys.
const OS_VERSION: &[(&str, &str)] = &[
    ("data/os_name", "name"),
    ("data/os_uname", "uname"),
    ("data/os_distro", "distro"),
    ("data/os_majorver", "major"),
    ("data/os_minorver", "minor"),
    ("attr/os/spmajor", "spmajor"),
    ("attr/os/spminor", "spminor"),
];

/// Interface name prefixes of the older `attr/<iface>` protocol.
const IFACE_PREFIXES: &[&str] = &["eth", "xenbr", "eno", "ens", "emp", "enx"];

/// One guest agent report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestAgent {
    /// `PV_drivers_version` (`major`, `minor`, `micro`, `build`).
    pub pv_drivers_version: BTreeMap<String, String>,
    /// `os_version` (`name`, `uname`, `distro`, `major`, `minor`).
    pub os_version: BTreeMap<String, String>,
    /// `networks` (`0/ip`, `0/ipv4/0`, `0/ipv6/0`).
    pub networks: BTreeMap<String, String>,
    /// `other`: one key per `control/*` node (`feature-shutdown`), and `data-ts`.
    pub other: BTreeMap<String, String>,
    /// `feature/hotplug/vbd` as `yes`, `no` or `unspecified`.
    pub can_use_hotplug_vbd: &'static str,
    /// `feature/hotplug/vif` likewise.
    pub can_use_hotplug_vif: &'static str,
}

impl GuestAgent {
    /// Reads the report of `domid`'s agent; `None` until the guest wrote `data/updated`.
    pub fn read(store: &impl Store, domid: DomId) -> Result<Option<GuestAgent>, Error> {
        let base = xenbus::paths::domain_path(domid);
        let lookup =
            |k: &str| -> Result<Option<String>, Error> { Ok(store.read(&format!("{base}/{k}"))?) };
        let list = |k: &str| -> Result<Vec<String>, Error> {
            Ok(store.directory(&format!("{base}/{k}"))?)
        };
        if lookup("data/updated")?.is_none() {
            return Ok(None);
        }
        let to_map = |keys: &[(&str, &str)]| -> Result<BTreeMap<String, String>, Error> {
            let mut m = BTreeMap::new();
            for (xs, key) in keys {
                if let Some(v) = lookup(xs)? {
                    m.insert((*key).to_owned(), v);
                }
            }
            Ok(m)
        };
        let mut pv_drivers_version = to_map(PV_DRIVERS_VERSION)?;
        // XAPI defaults `micro` while agents learn to write it.
        if !pv_drivers_version.is_empty() {
            pv_drivers_version
                .entry("micro".into())
                .or_insert_with(|| "-1".into());
        }
        let mut networks = BTreeMap::new();
        for (xs, key) in network_keys(&list)? {
            if let Some(v) = lookup(&xs)? {
                networks.insert(key, v);
            }
        }
        let mut other = BTreeMap::new();
        for c in list("control")? {
            if let Some(v) = lookup(&format!("control/{c}"))? {
                other.insert(c, v);
            }
        }
        if let Some(ts) = lookup("data/ts")? {
            other.insert("data-ts".into(), ts);
        }
        let tristate = |k: &str| -> Result<&'static str, Error> {
            Ok(match lookup(k)?.as_deref() {
                Some("1") => "yes",
                Some("0") => "no",
                _ => "unspecified",
            })
        };
        Ok(Some(GuestAgent {
            pv_drivers_version,
            os_version: to_map(OS_VERSION)?,
            networks,
            other,
            can_use_hotplug_vbd: tristate("feature/hotplug/vbd")?,
            can_use_hotplug_vif: tristate("feature/hotplug/vif")?,
        }))
    }
}

/// The xenstore keys (relative to the domain) holding addresses, each with its `networks`
/// key. `attr/vif/<devid>` when present, else the older `attr/<iface>`; as XAPI, the first
/// IPv4 address of an interface is also reported as `<n>/ip`.
fn network_keys(
    list: &impl Fn(&str) -> Result<Vec<String>, Error>,
) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    let vifs = list("attr/vif")?;
    if !vifs.is_empty() {
        for vif in vifs {
            for ver in ["ipv4", "ipv6"] {
                let mut ids: Vec<u32> = list(&format!("attr/vif/{vif}/{ver}"))?
                    .iter()
                    .filter_map(|i| i.parse().ok())
                    .collect();
                ids.sort_unstable();
                for (n, id) in ids.iter().enumerate() {
                    let xs = format!("attr/vif/{vif}/{ver}/{id}");
                    if ver == "ipv4" && n == 0 {
                        out.push((xs.clone(), format!("{vif}/ip")));
                    }
                    out.push((xs, format!("{vif}/{ver}/{id}")));
                }
            }
        }
        return Ok(out);
    }
    for iface in list("attr")? {
        let Some(n) = IFACE_PREFIXES
            .iter()
            .find_map(|p| iface.strip_prefix(p))
            .map(str::to_owned)
        else {
            continue;
        };
        let path = format!("attr/{iface}");
        out.push((format!("{path}/ip"), format!("{n}/ip")));
        out.push((format!("{path}/ip"), format!("{n}/ipv4/0")));
        for m in list(&format!("{path}/ipv6"))? {
            out.push((format!("{path}/ipv6/{m}/addr"), format!("{n}/ipv6/{m}")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xenbus::testing::TestXenstore;
    use xenbus::XsStore;

    fn write(s: &XsStore, d: DomId, kv: &[(&str, &str)]) {
        let base = xenbus::paths::domain_path(d);
        for (k, v) in kv {
            s.write(&format!("{base}/{k}"), v).unwrap();
        }
    }

    #[test]
    fn nothing_counts_before_data_updated_then_all_maps_fill() {
        let xs = TestXenstore::start().unwrap();
        let s = xs.dom0().clone();
        let d = DomId(7);
        write(
            &s,
            d,
            &[
                ("attr/PVAddons/MajorVersion", "9"),
                ("attr/PVAddons/MinorVersion", "1"),
                ("data/os_name", "Debian 12"),
                ("data/os_uname", "6.1.0"),
                ("attr/vif/0/ipv4/1", "10.0.0.3"),
                ("attr/vif/0/ipv4/0", "10.0.0.2"),
                ("attr/vif/0/ipv6/0", "fe80::1"),
                ("control/feature-shutdown", "1"),
                ("feature/hotplug/vif", "0"),
            ],
        );
        assert_eq!(GuestAgent::read(&*s, d).unwrap(), None);
        write(&s, d, &[("data/updated", "1")]);
        let g = GuestAgent::read(&*s, d).unwrap().unwrap();
        let m = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            g.pv_drivers_version,
            m(&[("major", "9"), ("minor", "1"), ("micro", "-1")])
        );
        assert_eq!(
            g.os_version,
            m(&[("name", "Debian 12"), ("uname", "6.1.0")])
        );
        assert_eq!(
            g.networks,
            m(&[
                ("0/ip", "10.0.0.2"),
                ("0/ipv4/0", "10.0.0.2"),
                ("0/ipv4/1", "10.0.0.3"),
                ("0/ipv6/0", "fe80::1"),
            ])
        );
        assert_eq!(g.other, m(&[("feature-shutdown", "1")]));
        assert_eq!(g.can_use_hotplug_vif, "no");
        assert_eq!(g.can_use_hotplug_vbd, "unspecified");
    }

    #[test]
    fn older_eth_protocol_when_no_attr_vif() {
        let xs = TestXenstore::start().unwrap();
        let s = xs.dom0().clone();
        let d = DomId(3);
        write(
            &s,
            d,
            &[
                ("attr/eth1/ip", "192.168.1.5"),
                ("attr/eth1/ipv6/0/addr", "fe80::5"),
                ("attr/other/ip", "ignored"),
                ("data/updated", "now"),
            ],
        );
        let g = GuestAgent::read(&*s, d).unwrap().unwrap();
        let keys: Vec<_> = g.networks.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            keys,
            [
                "1/ip=192.168.1.5",
                "1/ipv4/0=192.168.1.5",
                "1/ipv6/0=fe80::5"
            ]
        );
        assert!(
            g.pv_drivers_version.is_empty(),
            "no agent version: no micro"
        );
    }
}
