//! Save and restore in xapi-rrd's XML (`<rrd><version>0003</version>...`), and its JSON
//! export (xapi-rrd writes JSON but reads only XML).

use std::fmt::Write;

use crate::fmt::{parse_f, push_f};
use crate::rrd::omax;
use crate::{CdpPrep, Cf, Ds, DsType, DsValue, Error, Fring, Rra, Rrd};

/// Escapes text for an XML element.
pub(crate) fn escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

fn tag(out: &mut String, name: &str, text: &str) {
    let _ = write!(out, "<{name}>");
    escape(out, text);
    let _ = write!(out, "</{name}>");
}

fn tag_f(out: &mut String, name: &str, v: f64) {
    let _ = write!(out, "<{name}>");
    push_f(out, v);
    let _ = write!(out, "</{name}>");
}

/// The XML declaration Xmlm writes.
pub(crate) const DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

impl Rrd {
    /// xapi-rrd's `xml_to_output`: the XML that `rrdtool restore` and XenCenter read.
    /// `internal` adds each data source's `last_updated` (what a restart needs).
    pub fn to_xml(&self, internal: bool) -> String {
        let rows: usize = self.rras.iter().map(|r| r.row_cnt).sum();
        let mut out = String::with_capacity(256 + rows * self.dss.len() * 16);
        out.push_str(DECL);
        out.push_str("<rrd>");
        tag(&mut out, "version", "0003");
        tag(&mut out, "step", &self.timestep.to_string());
        // An integer: XenCenter and other legacy readers expect one.
        tag(
            &mut out,
            "lastupdate",
            &(self.last_updated as i64).to_string(),
        );
        for ds in &self.dss {
            out.push_str("<ds>");
            tag(&mut out, "name", &ds.name);
            tag(&mut out, "type", ds.ty.as_str());
            tag_f(&mut out, "minimal_heartbeat", ds.mrhb);
            tag_f(&mut out, "min", ds.min);
            tag_f(&mut out, "max", ds.max);
            tag(&mut out, "last_ds", &ds.last.to_xml_string());
            tag_f(&mut out, "value", ds.value);
            tag(
                &mut out,
                "unknown_sec",
                &(ds.unknown_sec as i64).to_string(),
            );
            if internal {
                tag_f(&mut out, "last_updated", ds.last_updated);
            }
            out.push_str("</ds>");
        }
        for rra in &self.rras {
            out.push_str("<rra>");
            tag(&mut out, "cf", rra.cf.as_str());
            tag(&mut out, "pdp_per_row", &rra.pdp_cnt.to_string());
            out.push_str("<params>");
            tag_f(&mut out, "xff", rra.xff);
            out.push_str("</params><cdp_prep>");
            for cdp in &rra.cdps {
                out.push_str("<ds><primary_value>0.0</primary_value>");
                out.push_str("<secondary_value>0.0</secondary_value>");
                tag_f(&mut out, "value", cdp.value);
                tag(
                    &mut out,
                    "unknown_datapoints",
                    &cdp.unknown_pdps.to_string(),
                );
                out.push_str("</ds>");
            }
            out.push_str("</cdp_prep><database>");
            if let Some(first) = rra.data.first() {
                let rows = first.len();
                for row in 0..rows {
                    out.push_str("<row>");
                    for ring in &rra.data {
                        tag_f(&mut out, "v", ring.peek(rows - row - 1));
                    }
                    out.push_str("</row>");
                }
            }
            out.push_str("</database></rra>");
        }
        out.push_str("</rrd>");
        out
    }

    /// xapi-rrd's `from_xml`: reads what [`Rrd::to_xml`] (or xcp-rrdd) wrote. As xapi-rrd:
    /// a data source's `min` below 0 is read as 0 (CA-408126), `last_ds` is not restored, and
    /// repeated data sources are dropped.
    pub fn from_xml(text: &str) -> Result<Rrd, Error> {
        let doc = roxmltree::Document::parse(text).map_err(|e| Error::Xml(e.to_string()))?;
        let root = doc.root_element();
        if root.tag_name().name() != "rrd" {
            return Err(Error::Xml(format!(
                "root element is <{}>, not <rrd>",
                root.tag_name().name()
            )));
        }
        let mut c = Cursor::new(root);
        c.text("version")?;
        let step: u64 = num(&c.text("step")?, "step")?;
        if step == 0 {
            return Err(Error::Xml("step is 0".into()));
        }
        let last_update: f64 = float(&c.text("lastupdate")?, "lastupdate")?;
        let mut dss = Vec::new();
        while c.peek_is("ds") {
            let mut d = Cursor::new(c.next("ds")?);
            let name = d.text("name")?;
            let ty = d.text("type")?;
            let ty = DsType::parse(&ty)
                .filter(|_| ty == ty.to_ascii_uppercase())
                .ok_or_else(|| Error::Xml(format!("data source {name}: bad type {ty}")))?;
            let mrhb = float(&d.text("minimal_heartbeat")?, "minimal_heartbeat")?;
            let min = omax(float(&d.text("min")?, "min")?, 0.0);
            let max = float(&d.text("max")?, "max")?;
            d.text("last_ds")?;
            let value = float(&d.text("value")?, "value")?;
            let unknown_sec = float(&d.text("unknown_sec")?, "unknown_sec")?;
            let last_updated = match d.opt_text("last_updated") {
                Some(t) => parse_f(&t).unwrap_or(last_update),
                None => last_update,
            };
            dss.push(Ds {
                name,
                ty,
                min,
                max,
                mrhb,
                last: DsValue::Unknown,
                value,
                unknown_sec,
                last_updated,
            });
        }
        let mut rras = Vec::new();
        while c.peek_is("rra") {
            let mut r = Cursor::new(c.next("rra")?);
            let cf_s = r.text("cf")?;
            let cf = Cf::parse(&cf_s).ok_or_else(|| Error::Xml(format!("bad cf {cf_s}")))?;
            let pdp_cnt: usize = num(&r.text("pdp_per_row")?, "pdp_per_row")?;
            if pdp_cnt == 0 {
                return Err(Error::Xml("pdp_per_row is 0".into()));
            }
            let xff = float(&Cursor::new(r.next("params")?).text("xff")?, "xff")?;
            let mut cdps = Vec::new();
            let mut prep = Cursor::new(r.next("cdp_prep")?);
            while prep.peek_is("ds") {
                let mut d = Cursor::new(prep.next("ds")?);
                d.text("primary_value")?;
                d.text("secondary_value")?;
                let value = float(&d.text("value")?, "cdp value")?;
                let unknown_pdps = num(&d.text("unknown_datapoints")?, "unknown_datapoints")?;
                cdps.push(CdpPrep {
                    value,
                    unknown_pdps,
                });
            }
            let mut db = Cursor::new(r.next("database")?);
            let mut rows: Vec<Vec<f64>> = Vec::new();
            while db.peek_is("row") {
                let mut row = Cursor::new(db.next("row")?);
                let mut vals = Vec::new();
                while row.peek_is("v") {
                    vals.push(float(&row.text("v")?, "v")?);
                }
                rows.push(vals);
            }
            let cols = rows.first().map_or(0, Vec::len);
            if rows.iter().any(|r| r.len() != cols) || cols != dss.len() || cdps.len() != cols {
                return Err(Error::Xml(format!(
                    "rra {cf_s}: {cols} columns, {} data sources, {} cdp_prep entries",
                    dss.len(),
                    cdps.len()
                )));
            }
            if rows.is_empty() && !dss.is_empty() {
                return Err(Error::Xml(format!("rra {cf_s}: empty database")));
            }
            let data = (0..cols)
                .map(|i| {
                    let mut f = Fring::new(rows.len(), f64::NAN, dss[i].min, dss[i].max);
                    for row in &rows {
                        f.push(row[i]);
                    }
                    f
                })
                .collect();
            rras.push(Rra {
                cf,
                row_cnt: rows.len(),
                pdp_cnt,
                xff,
                data,
                cdps,
            });
        }
        let mut rrd = Rrd {
            last_updated: last_update,
            timestep: step,
            dss,
            rras,
        };
        // Purge repeated data sources, keeping the last of each name (as xapi-rrd).
        loop {
            let names = rrd.ds_names();
            let dup = names
                .iter()
                .enumerate()
                .find(|(i, n)| names[i + 1..].contains(n))
                .map(|(_, n)| n.to_string());
            match dup {
                Some(n) => rrd.remove_ds(&n),
                None => break,
            }
        }
        Ok(rrd)
    }

    /// xapi-rrd's `json_to_string`: the RRD as JSON (every number a string, as xapi-rrd).
    pub fn to_json(&self) -> String {
        use serde_json::{json, Value};
        let s = |v: f64| Value::String(crate::f_to_s(v));
        let dss: Vec<Value> = self
            .dss
            .iter()
            .map(|ds| {
                json!({
                    "name": ds.name,
                    "type": ds.ty.as_str(),
                    "minimal_heartbeat": s(ds.mrhb),
                    "min": s(ds.min),
                    "max": s(ds.max),
                    "last_ds": ds.last.to_xml_string(),
                    "value": s(ds.value),
                    "unknown_sec": s(ds.unknown_sec),
                    "last_updated": s(ds.last_updated),
                })
            })
            .collect();
        let rras: Vec<Value> = self
            .rras
            .iter()
            .map(|rra| {
                let rows = rra.data.first().map_or(0, Fring::len);
                let database: Vec<Value> = (0..rows)
                    .map(|row| {
                        Value::Array(rra.data.iter().map(|r| s(r.peek(rows - row - 1))).collect())
                    })
                    .collect();
                json!({
                    "cf": rra.cf.as_str(),
                    "pdp_per_row": rra.pdp_cnt.to_string(),
                    "params": {"xff": s(rra.xff)},
                    "cdp_prep": {"ds": rra.cdps.iter().map(|c| json!({
                        "primary_value": "0.0",
                        "secondary_value": "0.0",
                        "value": s(c.value),
                        "unknown_datapoints": c.unknown_pdps.to_string(),
                    })).collect::<Vec<_>>()},
                    "database": database,
                })
            })
            .collect();
        json!({
            "version": "0003",
            "step": self.timestep.to_string(),
            "lastupdate": s(self.last_updated),
            "ds": dss,
            "rra": rras,
        })
        .to_string()
    }

    /// Writes [`Rrd::to_xml`]`(true)` to `path` durably (temporary file, fsync, rename).
    pub fn save(&self, path: &std::path::Path) -> Result<(), Error> {
        use std::io::Write as _;
        let io = |e| Error::Io(path.display().to_string(), e);
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(self.to_xml(true).as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads an RRD saved by [`Rrd::save`].
    pub fn load(path: &std::path::Path) -> Result<Rrd, Error> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Io(path.display().to_string(), e))?;
        Rrd::from_xml(&text)
    }
}

fn float(s: &str, what: &str) -> Result<f64, Error> {
    parse_f(s).ok_or_else(|| Error::Xml(format!("{what}: not a float: {s:?}")))
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, Error> {
    s.trim()
        .parse()
        .map_err(|_| Error::Xml(format!("{what}: not an integer: {s:?}")))
}

/// Walks an element's child elements in order, as xapi-rrd's Xmlm reader does.
pub(crate) struct Cursor<'a, 'i> {
    parent: &'static str,
    it: std::iter::Peekable<roxmltree::Children<'a, 'i>>,
}

impl<'a, 'i> Cursor<'a, 'i> {
    pub(crate) fn new(node: roxmltree::Node<'a, 'i>) -> Self {
        Cursor {
            parent: "element",
            it: node.children().peekable(),
        }
    }

    fn skip_text(&mut self) {
        while self.it.peek().is_some_and(|n| !n.is_element()) {
            self.it.next();
        }
    }

    pub(crate) fn peek_is(&mut self, name: &str) -> bool {
        self.skip_text();
        self.it.peek().is_some_and(|n| n.tag_name().name() == name)
    }

    pub(crate) fn next(&mut self, name: &str) -> Result<roxmltree::Node<'a, 'i>, Error> {
        self.skip_text();
        match self.it.next() {
            Some(n) if n.tag_name().name() == name => Ok(n),
            Some(n) => Err(Error::Xml(format!(
                "expected <{name}>, found <{}> in {}",
                n.tag_name().name(),
                self.parent
            ))),
            None => Err(Error::Xml(format!("expected <{name}>, found the end"))),
        }
    }

    pub(crate) fn text(&mut self, name: &str) -> Result<String, Error> {
        let n = self.next(name)?;
        Ok(n.text().unwrap_or("").to_owned())
    }

    pub(crate) fn opt_text(&mut self, name: &str) -> Option<String> {
        if self.peek_is(name) {
            self.text(name).ok()
        } else {
            None
        }
    }
}
