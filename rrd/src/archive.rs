//! xcp-rrdd's archive layout (`rrdd_shared.ml`, `rrdd_monitor.ml`): a 5-second step and four
//! timescales, AVERAGE everywhere and MIN/MAX on the coarser ones when enabled.

use crate::{Cf, Ds, DsType, DsValue, Rra, Rrd};

/// Seconds per PDP.
pub const STEP: u64 = 5;

/// `(rows, PDPs per row)`: 5 s × 120 (10 min), 1 min × 120 (2 h), 1 h × 168 (1 week),
/// 1 day × 366 (1 year).
pub const TIMESCALES: [(usize, usize); 4] = [(120, 1), (120, 12), (168, 720), (366, 17280)];

/// xcp-rrdd's maximum time between updates for its data sources.
pub const MRHB: f64 = 300.0;

/// xcp-rrdd's `create_rras`: AVERAGE (xff 0.5) for each timescale; with `use_min_max`,
/// AVERAGE, MIN and MAX (xff 1.0) for the timescales of more than one PDP per row.
pub fn rras(use_min_max: bool) -> Vec<Rra> {
    TIMESCALES
        .iter()
        .flat_map(|&(n, ns)| {
            if ns > 1 && use_min_max {
                vec![
                    Rra::new(Cf::Average, n, ns, 1.0),
                    Rra::new(Cf::Min, n, ns, 1.0),
                    Rra::new(Cf::Max, n, ns, 1.0),
                ]
            } else {
                vec![Rra::new(Cf::Average, n, ns, 0.5)]
            }
        })
        .collect()
}

/// The description of one data source a sampler or plugin reports.
#[derive(Debug, Clone, PartialEq)]
pub struct DsSpec {
    /// Name (`cpu0`, `memory_total_kib`).
    pub name: String,
    /// Rate type.
    pub ty: DsType,
    /// Smallest valid value.
    pub min: f64,
    /// Largest valid value.
    pub max: f64,
    /// Units (`(fraction)`, `KiB`, `B/s`).
    pub units: String,
    /// Human description.
    pub description: String,
}

impl DsSpec {
    /// A data source description.
    pub fn new(name: &str, ty: DsType, min: f64, max: f64, units: &str, description: &str) -> Self {
        DsSpec {
            name: name.to_owned(),
            ty,
            min,
            max,
            units: units.to_owned(),
            description: description.to_owned(),
        }
    }

    /// The RRD data source for it (xcp-rrdd: heartbeat 300 s, no initial value).
    pub fn to_ds(&self) -> Ds {
        Ds::new(
            &self.name,
            self.ty,
            self.min,
            self.max,
            MRHB,
            DsValue::Unknown,
        )
    }
}

/// xcp-rrdd's `create_fresh_rrd`: an RRD with [`rras`] and [`STEP`] for these data sources.
pub fn fresh(specs: &[DsSpec], use_min_max: bool, timestamp: f64) -> Rrd {
    Rrd::new(
        specs.iter().map(DsSpec::to_ds).collect(),
        rras(use_min_max),
        STEP,
        timestamp,
    )
}
