//! The newest value of each data source as Prometheus text exposition.

use std::fmt::Write;

use crate::Rrd;

/// Appends one RRD's newest 5-second AVERAGE values as `xen_<ds>{owner="...",uuid="..."} v`
/// lines (names with characters Prometheus does not allow turned into `_`; unknown values
/// left out). `owner` is `host` or `vm`.
pub fn append(out: &mut String, owner: &str, uuid: &str, rrd: &Rrd) {
    let Some(rra) = rrd
        .rras
        .iter()
        .find(|r| r.cf == crate::Cf::Average && r.pdp_cnt == 1)
    else {
        return;
    };
    for (ds, ring) in rrd.dss.iter().zip(&rra.data) {
        let v = ring.peek(0);
        if v.is_nan() {
            continue;
        }
        let name: String = ds
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let _ = writeln!(out, "xen_{owner}_{name}{{uuid=\"{uuid}\"}} {v}");
    }
}
