//! The `/rrd_updates` export (xapi-rrd's `Rrd_updates`): rows of several RRDs since a start
//! time, with a legend `CF:owner:uuid:ds`, as rrdtool's `<xport>` XML or XAPI's JSON.

use std::fmt::Write;

use crate::fmt::{parse_f, push_f};
use crate::rrd::get_times;
use crate::xml::{escape, Cursor, DECL};
use crate::{Error, Rrd};

/// One row: a time and one value per legend entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Seconds since the epoch.
    pub time: i64,
    /// Values, in legend order.
    pub data: Vec<f64>,
}

/// An export: rows newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Updates {
    /// Time of the first (oldest possible) CDP.
    pub start: i64,
    /// Seconds per row.
    pub step: i64,
    /// Time of the newest CDP.
    pub end: i64,
    /// Column names (`AVERAGE:host:<uuid>:cpu0`).
    pub legend: Vec<String>,
    /// Rows, newest first.
    pub data: Vec<Row>,
}

/// xapi-rrd's `create_multi`: exports `(prefix, rrd)` pairs (prefix such as
/// `host:<uuid>:` or `vm:<uuid>:`) from `start` (negative: relative to the last update) at a
/// resolution of at least `interval` seconds, for consolidation `cf` (all if `None`). RRDs
/// whose timestep or archive shape differ from the first are left out, as xapi-rrd does.
pub fn create_multi(
    prefixed: &[(String, &Rrd)],
    start: i64,
    interval: i64,
    cf: Option<crate::Cf>,
) -> Result<Updates, Error> {
    let (timestep, last_updated) = match prefixed.first() {
        Some((_, r)) => (r.timestep, r.last_updated),
        None => return Err(Error::NoRraAvailable),
    };
    let pdp_interval = (interval / timestep as i64).max(0) as usize;
    let prefixed: Vec<&(String, &Rrd)> = prefixed
        .iter()
        .filter(|(_, r)| r.timestep == timestep)
        .collect();
    let start = prefixed
        .iter()
        .map(|(_, r)| {
            if start < 0 {
                start + r.last_updated as i64
            } else {
                start
            }
        })
        .min()
        .unwrap_or(i64::MAX);
    let mut chosen: Vec<Vec<usize>> = prefixed
        .iter()
        .map(|(_, r)| r.find_best_rras(pdp_interval, cf, start))
        .collect::<Result<_, _>>()?;
    let (first_rrd, first_rra) = chosen
        .iter()
        .enumerate()
        .find_map(|(k, v)| v.first().map(|&i| (k, i)))
        .ok_or(Error::NoRraAvailable)?;
    let first = &prefixed[first_rrd].1.rras[first_rra];
    let (pdp_cnt, row_cnt) = (first.pdp_cnt, first.row_cnt);
    for (k, v) in chosen.iter_mut().enumerate() {
        let r = prefixed[k].1;
        v.retain(|&i| r.rras[i].pdp_cnt == pdp_cnt && r.rras[i].row_cnt == row_cnt);
    }
    let mut legend = Vec::new();
    for ((prefix, r), rras) in prefixed.iter().zip(&chosen) {
        for &i in rras {
            for ds in &r.dss {
                legend.push(format!("{}:{prefix}{}", r.rras[i].cf.as_str(), ds.name));
            }
        }
    }
    let rra_timestep = timestep as i64 * pdp_cnt as i64;
    let (last_cdp_time, _) = get_times(last_updated, rra_timestep as u64);
    let (first_minus_one, _) = get_times(start as f64, rra_timestep as u64);
    let mut data = Vec::new();
    for i in 0..row_cnt {
        let time = last_cdp_time - i as i64 * rra_timestep;
        if time < start {
            break;
        }
        let mut row = Vec::with_capacity(legend.len());
        for ((_, r), rras) in prefixed.iter().zip(&chosen) {
            for &k in rras {
                row.extend(r.rras[k].data.iter().map(|ring| ring.peek(i)));
            }
        }
        data.push(Row { time, data: row });
    }
    Ok(Updates {
        start: first_minus_one + rra_timestep,
        step: rra_timestep,
        end: last_cdp_time,
        legend,
        data,
    })
}

impl Updates {
    /// rrdtool's `<xport>` XML, as xcp-rrdd serves it.
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(256 + self.legend.len() * (48 + 16 * self.data.len()));
        out.push_str(DECL);
        let _ = write!(
            out,
            "<xport><meta><start>{}</start><step>{}</step><end>{}</end><rows>{}</rows>\
             <columns>{}</columns><legend>",
            self.start,
            self.step,
            self.end,
            self.data.len(),
            self.legend.len()
        );
        for l in &self.legend {
            out.push_str("<entry>");
            escape(&mut out, l);
            out.push_str("</entry>");
        }
        out.push_str("</legend></meta><data>");
        for row in &self.data {
            let _ = write!(out, "<row><t>{}</t>", row.time);
            for &v in &row.data {
                out.push_str("<v>");
                push_f(&mut out, v);
                out.push_str("</v>");
            }
            out.push_str("</row>");
        }
        out.push_str("</data></xport>");
        out
    }

    /// XAPI's JSON form (`json=true`): the same fields, every number a string, as xapi-rrd.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(256 + self.legend.len() * (48 + 16 * self.data.len()));
        let _ = write!(
            out,
            "{{\"meta\":{{\"start\":\"{}\",\"step\":\"{}\",\"end\":\"{}\",\"rows\":\"{}\",\
             \"columns\":\"{}\",\"legend\":[",
            self.start,
            self.step,
            self.end,
            self.data.len(),
            self.legend.len()
        );
        for (i, l) in self.legend.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::Value::String(l.clone()).to_string());
        }
        out.push_str("]},\"data\":[");
        for (i, row) in self.data.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{{\"t\":\"{}\",\"values\":[", row.time);
            for (j, &v) in row.data.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push('"');
                push_f(&mut out, v);
                out.push('"');
            }
            out.push_str("]}");
        }
        out.push_str("]}");
        out
    }

    /// Parses `<xport>` XML (what perfmon and XenCenter read).
    pub fn from_xml(text: &str) -> Result<Updates, Error> {
        let doc = roxmltree::Document::parse(text).map_err(|e| Error::Xml(e.to_string()))?;
        let root = doc.root_element();
        if root.tag_name().name() != "xport" {
            return Err(Error::Xml("root element is not <xport>".into()));
        }
        let mut c = Cursor::new(root);
        let mut meta = Cursor::new(c.next("meta")?);
        let int = |s: String, w: &str| -> Result<i64, Error> {
            s.trim()
                .parse()
                .map_err(|_| Error::Xml(format!("{w}: not an integer: {s:?}")))
        };
        let start = int(meta.text("start")?, "start")?;
        let step = int(meta.text("step")?, "step")?;
        let end = int(meta.text("end")?, "end")?;
        meta.text("rows")?;
        meta.text("columns")?;
        let mut lc = Cursor::new(meta.next("legend")?);
        let mut legend = Vec::new();
        while lc.peek_is("entry") {
            legend.push(lc.text("entry")?);
        }
        let mut dc = Cursor::new(c.next("data")?);
        let mut data = Vec::new();
        while dc.peek_is("row") {
            let mut rc = Cursor::new(dc.next("row")?);
            let time = int(rc.text("t")?, "t")?;
            let mut vals = Vec::new();
            while rc.peek_is("v") {
                let t = rc.text("v")?;
                vals.push(parse_f(&t).ok_or_else(|| Error::Xml(format!("v: {t:?}")))?);
            }
            data.push(Row { time, data: vals });
        }
        Ok(Updates {
            start,
            step,
            end,
            legend,
            data,
        })
    }
}
