//! The round-robin database and its update rule, as xapi-rrd's `Rrd` module.

use std::collections::HashMap;

use crate::{Error, Fring};

/// How an incoming value turns into a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsType {
    /// The value is already a rate and is stored as given (xapi-rrd CA-404597).
    Absolute,
    /// The value is a level (temperature, memory, load average), stored as given.
    Gauge,
    /// The value is a counter; the rate is its difference over time.
    Derive,
}

impl DsType {
    /// `GAUGE`, `ABSOLUTE` or `DERIVE` (the XML form).
    pub fn as_str(self) -> &'static str {
        match self {
            DsType::Gauge => "GAUGE",
            DsType::Absolute => "ABSOLUTE",
            DsType::Derive => "DERIVE",
        }
    }

    /// Parses the XML form or the plugin protocol's lower-case form.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "gauge" => Some(DsType::Gauge),
            "absolute" => Some(DsType::Absolute),
            "derive" => Some(DsType::Derive),
            _ => None,
        }
    }
}

/// A consolidation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cf {
    /// Mean of the PDPs.
    Average,
    /// Smallest PDP.
    Min,
    /// Largest PDP.
    Max,
    /// Last PDP.
    Last,
}

impl Cf {
    /// `AVERAGE`, `MIN`, `MAX` or `LAST`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cf::Average => "AVERAGE",
            Cf::Min => "MIN",
            Cf::Max => "MAX",
            Cf::Last => "LAST",
        }
    }

    /// Parses [`Cf::as_str`]'s form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "AVERAGE" => Some(Cf::Average),
            "MIN" => Some(Cf::Min),
            "MAX" => Some(Cf::Max),
            "LAST" => Some(Cf::Last),
            _ => None,
        }
    }
}

/// A raw incoming value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DsValue {
    /// A float.
    Float(f64),
    /// A 64-bit integer (counters).
    Int64(i64),
    /// No value.
    Unknown,
}

impl DsValue {
    fn raw(self) -> f64 {
        match self {
            DsValue::Float(f) => f,
            DsValue::Int64(i) => i as f64,
            DsValue::Unknown => f64::NAN,
        }
    }

    /// The XML `last_ds` form.
    pub fn to_xml_string(self) -> String {
        match self {
            DsValue::Float(f) => crate::f_to_s(f),
            DsValue::Int64(i) => i.to_string(),
            DsValue::Unknown => "0.0".into(),
        }
    }
}

/// A transform applied to a PDP before it is stored (`1 - x` for `Inverse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transform {
    /// `x`.
    #[default]
    Identity,
    /// `1 - x`.
    Inverse,
}

impl Transform {
    fn apply(self, x: f64) -> f64 {
        match self {
            Transform::Identity => x,
            Transform::Inverse => 1.0 - x,
        }
    }
}

/// A data source: how incoming data is turned into primary data points.
#[derive(Debug, Clone, PartialEq)]
pub struct Ds {
    /// Name (`cpu0`, `memory`).
    pub name: String,
    /// Rate type.
    pub ty: DsType,
    /// Smallest valid rate.
    pub min: f64,
    /// Largest valid rate.
    pub max: f64,
    /// Maximum time between updates (seconds) before the PDP is unknown.
    pub mrhb: f64,
    /// Last raw value.
    pub last: DsValue,
    /// Rate accumulated for the current PDP.
    pub value: f64,
    /// Unknown seconds in the current PDP.
    pub unknown_sec: f64,
    /// When this data source was last updated.
    pub last_updated: f64,
}

impl Ds {
    /// xapi-rrd's `ds_create`.
    pub fn new(name: &str, ty: DsType, min: f64, max: f64, mrhb: f64, init: DsValue) -> Self {
        Ds {
            name: name.to_owned(),
            ty,
            min,
            max,
            mrhb,
            last: init,
            value: 0.0,
            unknown_sec: 0.0,
            last_updated: 0.0,
        }
    }
}

/// The consolidated-data-point scratch area of one data source in one archive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CdpPrep {
    /// The CDP as accumulated so far.
    pub value: f64,
    /// PDPs unknown so far.
    pub unknown_pdps: usize,
}

/// An archive: one consolidation function, `pdp_cnt` PDPs per row, `row_cnt` rows, one ring
/// per data source.
#[derive(Debug, Clone, PartialEq)]
pub struct Rra {
    /// Consolidation function.
    pub cf: Cf,
    /// Rows kept.
    pub row_cnt: usize,
    /// PDPs per row.
    pub pdp_cnt: usize,
    /// Fraction of unknown PDPs above which the row is unknown.
    pub xff: f64,
    /// One ring per data source.
    pub data: Vec<Fring>,
    /// One scratch area per data source.
    pub cdps: Vec<CdpPrep>,
}

impl Rra {
    /// xapi-rrd's `rra_create` (rings are made when the RRD is).
    pub fn new(cf: Cf, row_cnt: usize, pdp_cnt: usize, xff: f64) -> Self {
        Rra {
            cf,
            row_cnt,
            pdp_cnt: pdp_cnt.max(1),
            xff,
            data: vec![],
            cdps: vec![],
        }
    }
}

/// A round-robin database: data sources, archives and the PDP period.
#[derive(Debug, Clone, PartialEq)]
pub struct Rrd {
    /// Time of the last update (seconds).
    pub last_updated: f64,
    /// Seconds per PDP.
    pub timestep: u64,
    /// Data sources.
    pub dss: Vec<Ds>,
    /// Archives.
    pub rras: Vec<Rra>,
}

/// OCaml's `max` on floats (`if x >= y then x else y`): NaN-propagating as xapi-rrd sees it.
pub(crate) fn omax(x: f64, y: f64) -> f64 {
    if x >= y {
        x
    } else {
        y
    }
}

/// OCaml's `min` on floats.
pub(crate) fn omin(x: f64, y: f64) -> f64 {
    if x <= y {
        x
    } else {
        y
    }
}

/// The CDP's starting value for `cf` (CA-329043: kept within the data source's range).
pub(crate) fn cf_init_value(cf: Cf, ds: &Ds) -> f64 {
    let default = match cf {
        Cf::Average => 0.0,
        Cf::Min => f64::INFINITY,
        Cf::Max => f64::NEG_INFINITY,
        Cf::Last => f64::NAN,
    };
    omin(ds.max, omax(ds.min, default))
}

/// Start of the PDP holding `time`, and the time since that start.
pub(crate) fn get_times(time: f64, timestep: u64) -> (i64, f64) {
    let ts = timestep as i64;
    let start = ts * ((time as i64) / ts);
    (start, time - start as f64)
}

fn do_cfs(rra: &mut Rra, start_pdp_offset: usize, i: usize, pdp: f64) {
    let cdp = &mut rra.cdps[i];
    if pdp.is_nan() {
        // Renormalise the average accumulator over the PDPs we still expect.
        let olddiv = rra.pdp_cnt as i64 - cdp.unknown_pdps as i64;
        let newdiv = olddiv - start_pdp_offset as i64;
        if newdiv > 0 {
            cdp.value = cdp.value * olddiv as f64 / newdiv as f64;
            cdp.unknown_pdps += start_pdp_offset;
        }
    } else {
        cdp.value = match rra.cf {
            Cf::Average => cdp.value + pdp * start_pdp_offset as f64 / rra.pdp_cnt as f64,
            Cf::Min => omin(cdp.value, pdp),
            Cf::Max => omax(cdp.value, pdp),
            Cf::Last => pdp,
        };
    }
}

impl Rrd {
    /// xapi-rrd's `rrd_create`: rings full of NaN, then one update at `timestamp` with each
    /// data source's initial value.
    pub fn new(dss: Vec<Ds>, rras: Vec<Rra>, timestep: u64, timestamp: f64) -> Self {
        let rras = rras
            .into_iter()
            .map(|mut rra| {
                rra.data = dss
                    .iter()
                    .map(|ds| Fring::new(rra.row_cnt, f64::NAN, ds.min, ds.max))
                    .collect();
                rra.cdps = dss
                    .iter()
                    .map(|ds| CdpPrep {
                        value: cf_init_value(rra.cf, ds),
                        unknown_pdps: 0,
                    })
                    .collect();
                rra
            })
            .collect();
        let mut rrd = Rrd {
            last_updated: 0.0,
            timestep: timestep.max(1),
            dss,
            rras,
        };
        let init: Vec<_> = rrd
            .dss
            .iter()
            .enumerate()
            .map(|(i, ds)| (i, ds.last, Transform::Identity))
            .collect();
        rrd.update(timestamp, &init, true);
        rrd
    }

    /// The data sources' names, in order.
    pub fn ds_names(&self) -> Vec<&str> {
        self.dss.iter().map(|d| d.name.as_str()).collect()
    }

    /// Index of the named data source.
    pub fn ds_index(&self, name: &str) -> Option<usize> {
        self.dss.iter().position(|d| d.name == name)
    }

    /// xapi-rrd's `ds_update`: feeds the data sources named by index with values taken at
    /// `timestamp` (all from one source, so one timestamp). `new_rrd` marks the first update,
    /// where a `Derive` source has no previous value. A `Derive` source whose value changes
    /// type between updates (int then float) gets an unknown PDP.
    pub fn update(
        &mut self,
        timestamp: f64,
        values: &[(usize, DsValue, Transform)],
        new_rrd: bool,
    ) {
        let Some(&(first, _, _)) = values.first() else {
            return; // CA-408841: nothing to update.
        };
        let last_updated = self.dss[first].last_updated;
        let mut interval = timestamp - last_updated;
        if interval < 0.0 {
            interval = 5.0; // the clock went backwards
        }
        let (proc_pdp_st, _) = get_times(last_updated, self.timestep);
        let (occu_pdp_st, occu_pdp_age) = get_times(timestamp, self.timestep);
        let elapsed_pdp_st = ((occu_pdp_st - proc_pdp_st) / self.timestep as i64) as usize;
        let (pre_int, post_int) = if elapsed_pdp_st > 0 {
            (interval - occu_pdp_age, occu_pdp_age)
        } else {
            (interval, 0.0)
        };
        self.last_updated = timestamp;

        // Rates, and the PDP accumulators up to the most recent PDP boundary.
        let mut rates: smallvec_like::Buf = smallvec_like::Buf::with_len(values.len());
        for (k, &(i, value, _)) in values.iter().enumerate() {
            let ds = &mut self.dss[i];
            let v = process_ds_value(ds, value, interval, new_rrd);
            ds.last_updated = timestamp;
            rates.set(k, v);
            if v.is_nan() {
                ds.unknown_sec = pre_int;
            } else {
                match ds.ty {
                    DsType::Gauge | DsType::Absolute => ds.value = v,
                    DsType::Derive => ds.value += pre_int * v / interval,
                }
            }
        }

        if elapsed_pdp_st == 0 {
            return;
        }
        let mut pdps = smallvec_like::Buf::with_len(values.len());
        for (k, &(i, _, transform)) in values.iter().enumerate() {
            let ds = &self.dss[i];
            let pdp = if interval > ds.mrhb {
                f64::NAN
            } else {
                let raw = match ds.ty {
                    DsType::Gauge | DsType::Absolute => ds.value,
                    // get_float_time is the identity, so this is interval - unknown_sec.
                    DsType::Derive => ds.value / (timestamp - last_updated - ds.unknown_sec),
                };
                let raw = transform.apply(raw);
                if ds.ty == DsType::Derive && raw > ds.max && raw < ds.max * 1.05 {
                    ds.max // CA-411679: small overshoots of a rate are capped
                } else if raw < ds.min || raw > ds.max {
                    f64::NAN
                } else {
                    raw
                }
            };
            pdps.set(k, pdp);
        }
        self.rra_update(proc_pdp_st, elapsed_pdp_st, values, &pdps);

        // Reset the PDP accumulators.
        for (k, &(i, _, _)) in values.iter().enumerate() {
            let ds = &mut self.dss[i];
            let v = rates.get(k);
            if v.is_nan() {
                ds.value = 0.0;
                ds.unknown_sec = post_int;
            } else {
                ds.unknown_sec = 0.0;
                match ds.ty {
                    DsType::Gauge | DsType::Absolute => ds.value = v,
                    DsType::Derive => ds.value = post_int * v / interval,
                }
            }
        }
    }

    fn rra_update(
        &mut self,
        proc_pdp_st: i64,
        elapsed_pdp_st: usize,
        values: &[(usize, DsValue, Transform)],
        pdps: &smallvec_like::Buf,
    ) {
        let timestep = self.timestep as i64;
        for rra in &mut self.rras {
            let pdp_cnt = rra.pdp_cnt;
            let start_pdp_offset =
                pdp_cnt - ((proc_pdp_st / timestep).rem_euclid(pdp_cnt as i64)) as usize;
            let rra_step_cnt = if elapsed_pdp_st < start_pdp_offset {
                0
            } else {
                (elapsed_pdp_st - start_pdp_offset) / pdp_cnt + 1
            };
            let first = start_pdp_offset.min(elapsed_pdp_st);
            for (k, &(i, _, _)) in values.iter().enumerate() {
                do_cfs(rra, first, i, pdps.get(k));
            }
            if rra_step_cnt == 0 {
                continue;
            }
            let allowed = (rra.xff * pdp_cnt as f64) as usize;
            let new_start_pdp_offset = (elapsed_pdp_st - start_pdp_offset) % pdp_cnt;
            for (k, &(i, _, _)) in values.iter().enumerate() {
                // The first CDP from what was accumulated, any further ones are the PDP
                // itself (a CDP of repeated values is that value whatever the CF).
                let cdp = rra.cdps[i];
                let primary = if cdp.unknown_pdps <= allowed {
                    cdp.value
                } else {
                    f64::NAN
                };
                let ring = &mut rra.data[i];
                ring.push(primary);
                for _ in 1..=(rra_step_cnt - 1).min(rra.row_cnt) {
                    ring.push(pdps.get(k));
                }
                rra.cdps[i] = CdpPrep {
                    value: cf_init_value(rra.cf, &self.dss[i]),
                    unknown_pdps: 0,
                };
                do_cfs(rra, new_start_pdp_offset, i, pdps.get(k));
            }
        }
    }

    /// xapi-rrd's `ds_update_named`: values by data-source name (names not in the RRD are
    /// ignored).
    pub fn update_named(
        &mut self,
        timestamp: f64,
        values: &HashMap<String, (DsValue, Transform)>,
        new_rrd: bool,
    ) {
        let arr: Vec<_> = self
            .dss
            .iter()
            .enumerate()
            .filter_map(|(i, ds)| values.get(&ds.name).map(|&(v, t)| (i, v, t)))
            .collect();
        self.update(timestamp, &arr, new_rrd);
    }

    /// xapi-rrd's `rrd_add_ds`: adds a data source (no-op if the name exists), its rings full
    /// of NaN.
    pub fn add_ds(&mut self, timestamp: f64, ds: Ds) {
        if self.ds_index(&ds.name).is_some() {
            return;
        }
        let npdps = (timestamp as i64) / self.timestep as i64;
        for rra in &mut self.rras {
            rra.data
                .push(Fring::new(rra.row_cnt, f64::NAN, ds.min, ds.max));
            rra.cdps.push(CdpPrep {
                value: cf_init_value(rra.cf, &ds),
                unknown_pdps: npdps.rem_euclid(rra.pdp_cnt as i64) as usize,
            });
        }
        self.dss.push(ds);
    }

    /// xapi-rrd's `rrd_remove_ds`: removes the named data source and its data (idempotent).
    pub fn remove_ds(&mut self, name: &str) {
        if let Some(n) = self.ds_index(name) {
            self.dss.remove(n);
            for rra in &mut self.rras {
                rra.data.remove(n);
                rra.cdps.remove(n);
            }
        }
    }

    /// xapi-rrd's `find_best_rras`: indices of the archives with consolidation `cf` (any if
    /// `None`) that hold `start` at a resolution of at least `pdp_interval` PDPs; failing that,
    /// the ones with the oldest data.
    pub fn find_best_rras(
        &self,
        pdp_interval: usize,
        cf: Option<Cf>,
        start: i64,
    ) -> Result<Vec<usize>, Error> {
        let rras: Vec<usize> = (0..self.rras.len())
            .filter(|&i| cf.is_none_or(|c| self.rras[i].cf == c))
            .collect();
        if rras.is_empty() {
            return Err(Error::NoRraAvailable);
        }
        let (last_pdp_time, _) = get_times(self.last_updated, self.timestep);
        let span = |rra: &Rra| self.timestep as i64 * (rra.row_cnt * rra.pdp_cnt) as i64;
        let contains =
            |t: i64, rra: &Rra| rra.pdp_cnt >= pdp_interval && t > last_pdp_time - span(rra);
        if let Some(&ok) = rras.iter().find(|&&i| contains(start, &self.rras[i])) {
            let (p, r) = (self.rras[ok].pdp_cnt, self.rras[ok].row_cnt);
            return Ok(rras
                .into_iter()
                .filter(|&i| self.rras[i].pdp_cnt == p && self.rras[i].row_cnt == r)
                .collect());
        }
        let last = &self.rras[*rras.last().expect("non-empty")];
        let newstart = 1 + last_pdp_time - span(last);
        Ok(rras
            .into_iter()
            .filter(|&i| contains(newstart, &self.rras[i]))
            .collect())
    }

    /// xapi-rrd's `query_named_ds`: the newest CDP of the named data source in the best
    /// archive with `cf`.
    pub fn query_named_ds(&self, as_of_time: f64, name: &str, cf: Cf) -> Result<f64, Error> {
        let n = self
            .ds_index(name)
            .ok_or_else(|| Error::InvalidDataSource(name.to_owned()))?;
        let rras = self.find_best_rras(0, Some(cf), as_of_time as i64)?;
        let first = rras.first().ok_or(Error::NoRraAvailable)?;
        Ok(self.rras[*first].data[n].peek(0))
    }
}

/// The rate of one incoming value (xapi-rrd's `process_ds_value`).
fn process_ds_value(ds: &mut Ds, value: DsValue, interval: f64, new_rrd: bool) -> f64 {
    if interval > ds.mrhb {
        return f64::NAN;
    }
    let raw = value.raw();
    let rate = match (ds.ty, new_rrd) {
        (DsType::Derive, true) | (DsType::Gauge, _) => raw,
        (DsType::Absolute, _) => raw / interval,
        (DsType::Derive, false) => match (ds.last, value) {
            (DsValue::Int64(x), DsValue::Int64(y)) => y.wrapping_sub(x) as f64,
            (DsValue::Float(x), DsValue::Float(y)) => y - x,
            _ => f64::NAN,
        },
    };
    ds.last = value;
    rate
}

/// A small per-update scratch buffer that lives on the stack for the usual handful of data
/// sources and on the heap beyond.
mod smallvec_like {
    const INLINE: usize = 32;

    #[allow(clippy::large_enum_variant)] // on the stack on purpose: no allocation per update
    pub(super) enum Buf {
        Inline([f64; INLINE]),
        Heap(Vec<f64>),
    }

    impl Buf {
        pub(super) fn with_len(n: usize) -> Self {
            if n <= INLINE {
                Buf::Inline([0.0; INLINE])
            } else {
                Buf::Heap(vec![0.0; n])
            }
        }

        pub(super) fn set(&mut self, i: usize, v: f64) {
            match self {
                Buf::Inline(a) => a[i] = v,
                Buf::Heap(v2) => v2[i] = v,
            }
        }

        pub(super) fn get(&self, i: usize) -> f64 {
            match self {
                Buf::Inline(a) => a[i],
                Buf::Heap(v) => v[i],
            }
        }
    }
}
