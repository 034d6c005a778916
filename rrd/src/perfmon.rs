//! perfmon's alarms (`python3/bin/perfmon`): thresholds from `other-config:perfmon`
//!
//! ```xml
//! <config><variable><name value="cpu_usage"/><alarm_trigger_level value="0.5"/></variable></config>
//! ```
//!
//! with `alarm_trigger_level`, `alarm_trigger_sense` (`high`/`low`), `alarm_trigger_period`,
//! `alarm_auto_inhibit_period`, `alarm_priority`, `consolidation_fn` and `rrd_regex`, and
//! perfmon's defaults per object type. A variable whose level stays bad for the trigger
//! period raises an `ALARM` message, then stays quiet for the inhibit period.

use regex::Regex;

use crate::Error;

/// The kind of object a monitor watches (the message's `cls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A VM (`VMMonitor`).
    Vm,
    /// A host (`HOSTMonitor`).
    Host,
    /// An SR (`SRMonitor`).
    Sr,
}

impl ObjectKind {
    /// The message class name: `VM`, `Host` or `SR`.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Vm => "VM",
            ObjectKind::Host => "Host",
            ObjectKind::Sr => "SR",
        }
    }
}

/// How the matching data sources of one row combine into the variable's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consolidation {
    /// `sum`.
    Sum,
    /// `average` (0 for no values).
    Average,
    /// `max`.
    Max,
    /// `get_percent_sr_usage`: `physical_utilisation / size` of the first two values.
    PercentSrUsage,
    /// `get_percent_fs_usage`, `get_percent_log_fs_usage`, `get_percent_mem_usage`: read
    /// from the host itself by the caller (see [`Monitor::process`]).
    External(String),
}

impl Consolidation {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "sum" => Consolidation::Sum,
            "average" => Consolidation::Average,
            "max" => Consolidation::Max,
            "get_percent_sr_usage" => Consolidation::PercentSrUsage,
            "get_percent_fs_usage" | "get_percent_log_fs_usage" | "get_percent_mem_usage" => {
                Consolidation::External(s.to_owned())
            }
            _ => return None,
        })
    }

    fn apply(&self, v: &[f64], external: &dyn Fn(&str) -> f64) -> f64 {
        match self {
            Consolidation::Sum => v.iter().sum(),
            Consolidation::Average if v.is_empty() => 0.0,
            Consolidation::Average => v.iter().sum::<f64>() / v.len() as f64,
            Consolidation::Max => v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Consolidation::PercentSrUsage => match v {
                [pu, size] if *size != 0.0 => pu / size,
                _ => 0.0,
            },
            Consolidation::External(name) => external(name),
        }
    }
}

/// Whether the alarm is for values above or below the level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sense {
    /// Bad when the value is above the level.
    High,
    /// Bad when the value is below the level.
    Low,
}

/// One `<variable>`'s configuration, defaults filled in as perfmon does.
#[derive(Debug, Clone)]
pub struct VariableConfig {
    /// `name`.
    pub name: String,
    /// `rrd_regex`, anchored.
    pub rrd_regex: Regex,
    /// `consolidation_fn`.
    pub consolidation: Consolidation,
    /// `alarm_trigger_level`.
    pub trigger_level: f64,
    /// `alarm_trigger_period`, seconds.
    pub trigger_period: i64,
    /// `alarm_auto_inhibit_period`, seconds.
    pub auto_inhibit_period: i64,
    /// `alarm_trigger_sense`.
    pub sense: Sense,
    /// `alarm_priority`.
    pub priority: String,
    /// The `<variable>` element's text (compared on reload; quoted in the alarm body).
    pub xml: String,
}

fn defaults(kind: ObjectKind, var: &str, tag: &str) -> Result<String, Error> {
    let none = || {
        Error::PerfmonConfig(format!(
            "variable {var}: no default {tag} - please specify one"
        ))
    };
    let dummy = "_$_DUMMY__";
    Ok(match (tag, kind) {
        ("consolidation_fn", ObjectKind::Vm) => match var {
            "cpu_usage" => "average",
            "fs_usage" => "get_percent_fs_usage",
            "log_fs_usage" => "get_percent_log_fs_usage",
            "mem_usage" => "get_percent_mem_usage",
            _ => "sum",
        },
        ("consolidation_fn", ObjectKind::Host) if var == "cpu_usage" => "average",
        ("consolidation_fn", ObjectKind::Sr) if var == "physical_utilisation" => {
            "get_percent_sr_usage"
        }
        ("consolidation_fn", _) => "sum",
        ("rrd_regex", ObjectKind::Vm) => match var {
            "cpu_usage" => "cpu[0-9]+",
            "network_usage" => "vif_[0-9]+_[rt]x",
            "disk_usage" => "vbd_(xvd|hd)[a-z]+_(read|write)",
            "fs_usage" | "log_fs_usage" | "mem_usage" => dummy,
            "memory_internal_free" => var,
            _ => return Err(none()),
        },
        ("rrd_regex", ObjectKind::Host) => match var {
            "cpu_usage" => "cpu[0-9]+",
            "network_usage" => "pif_eth[0-9]+_[rt]x",
            "memory_free_kib" => var,
            v if v.starts_with("sr_io_throughput_total_")
                && v.len() == "sr_io_throughput_total_".len() + 8
                && v[v.len() - 8..].bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                &var[3..]
            }
            _ => return Err(none()),
        },
        ("rrd_regex", ObjectKind::Sr) => match var {
            "physical_utilisation" => "physical_utilisation|size",
            "sr_io_throughput_total_per_host" => dummy,
            _ => return Err(none()),
        },
        ("alarm_trigger_period", _) => "60",
        ("alarm_auto_inhibit_period", _) => "3600",
        ("alarm_trigger_level", ObjectKind::Vm) => match var {
            "fs_usage" | "log_fs_usage" => "0.9",
            "mem_usage" => "0.95",
            _ => return Err(none()),
        },
        ("alarm_trigger_level", ObjectKind::Sr) if var == "physical_utilisation" => "0.8",
        ("alarm_trigger_level", _) => return Err(none()),
        ("alarm_trigger_sense", ObjectKind::Vm) if var == "memory_internal_free" => "low",
        ("alarm_trigger_sense", ObjectKind::Host) if var == "memory_free_kib" => "low",
        ("alarm_trigger_sense", _) => "high",
        ("alarm_priority", _) => "3",
        _ => return Err(none()),
    }
    .to_owned())
}

/// Parses an `other-config:perfmon` document for an object of `kind`: one config per
/// `<variable>`, or perfmon's error for the first bad one.
pub fn parse_config(kind: ObjectKind, xml: &str) -> Result<Vec<VariableConfig>, Error> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| Error::Xml(e.to_string()))?;
    let mut out = Vec::new();
    for node in doc.descendants().filter(|n| n.has_tag_name("variable")) {
        let value_of = |tag: &str| {
            node.descendants()
                .find(|n| n.has_tag_name(tag))
                .map(|n| n.attribute("value").unwrap_or("").to_owned())
        };
        let name = value_of("name")
            .ok_or_else(|| Error::PerfmonConfig("variable missing 'name' tag".into()))?;
        let get = |tag: &str| match value_of(tag) {
            Some(v) => Ok(v),
            None => defaults(kind, &name, tag),
        };
        let err = |m: String| Error::PerfmonConfig(format!("variable {name}: {m}"));
        let rx = get("rrd_regex")?;
        let rrd_regex = Regex::new(&format!(r"\A(?:^{rx}$)"))
            .map_err(|_| err(format!("regex {rx} does not compile")))?;
        let cf = get("consolidation_fn")?;
        let consolidation = Consolidation::parse(&cf)
            .ok_or_else(|| err(format!("consolidation function {cf} not supported")))?;
        let tp = get("alarm_trigger_period")?;
        let trigger_period = tp
            .trim()
            .parse()
            .map_err(|_| err(format!("alarm_trigger_period {tp} not an int")))?;
        let ip = get("alarm_auto_inhibit_period")?;
        let auto_inhibit_period = ip
            .trim()
            .parse()
            .map_err(|_| err(format!("alarm_auto_inhibit_period {ip} not an int")))?;
        let tl = get("alarm_trigger_level")?;
        let trigger_level = crate::fmt::parse_f(&tl)
            .ok_or_else(|| err(format!("alarm_trigger_level {tl} not a float")))?;
        let sense = if get("alarm_trigger_sense")? == "high" {
            Sense::High
        } else {
            Sense::Low
        };
        out.push(VariableConfig {
            rrd_regex,
            consolidation,
            trigger_level,
            trigger_period,
            auto_inhibit_period,
            sense,
            priority: get("alarm_priority")?,
            xml: xml[node.range()].to_owned(),
            name,
        });
    }
    Ok(out)
}

/// A variable's configuration and state.
#[derive(Debug, Clone)]
pub struct Variable {
    /// Configuration.
    pub config: VariableConfig,
    /// Last value.
    pub value: Option<f64>,
    /// When the last alarm was raised.
    pub time_of_last_alarm: f64,
    /// Seconds of bad level left before an alarm.
    pub trigger_down_counter: i64,
    /// Whether the variable is evaluated.
    pub active: bool,
}

impl Variable {
    /// A fresh variable at time `now`: ready to alarm, full trigger period to go.
    pub fn new(config: VariableConfig, now: f64) -> Self {
        Variable {
            time_of_last_alarm: now - config.auto_inhibit_period as f64,
            trigger_down_counter: config.trigger_period,
            value: None,
            active: true,
            config,
        }
    }

    /// perfmon's `set_active`: reactivating resets the state.
    pub fn set_active(&mut self, active: bool, now: f64) {
        if active != self.active {
            self.active = active;
            if active {
                *self = Variable::new(self.config.clone(), now);
            }
        }
    }

    fn bad(&self, v: f64) -> bool {
        match self.config.sense {
            Sense::High => v > self.config.trigger_level,
            Sense::Low => v < self.config.trigger_level,
        }
    }

    /// perfmon's `update`: one value covering `rrd_step` seconds, at time `now`. Returns the
    /// alarm body if an alarm is due (level bad for the trigger period, and not inhibited).
    pub fn update(&mut self, value: f64, rrd_step: i64, now: f64) -> Option<String> {
        self.value = Some(value);
        if !self.bad(value) {
            self.trigger_down_counter = self.config.trigger_period;
            return None;
        }
        self.trigger_down_counter -= rrd_step;
        if self.trigger_down_counter > 0 {
            return None;
        }
        self.trigger_down_counter = self.config.trigger_period;
        if now - self.time_of_last_alarm < self.config.auto_inhibit_period as f64 {
            return None;
        }
        self.time_of_last_alarm = now;
        Some(format!("value: {value:.6}\nconfig:\n{}", self.config.xml))
    }
}

/// One object's values from `/rrd_updates`: per data-source name, its values oldest first,
/// in the order the names first appear.
pub type ObjectReport = Vec<(String, Vec<f64>)>;

/// An alarm to raise as a XAPI message (`message.create "ALARM" priority cls uuid body`).
#[derive(Debug, Clone, PartialEq)]
pub struct Alarm {
    /// Priority (`alarm_priority`).
    pub priority: String,
    /// `VM`, `Host` or `SR`.
    pub cls: &'static str,
    /// The object's UUID.
    pub obj_uuid: String,
    /// `value: ...\nconfig:\n<variable>...`.
    pub body: String,
    /// The variable's name.
    pub variable: String,
}

/// One object's monitor (perfmon's `ObjectMonitor`).
#[derive(Debug)]
pub struct Monitor {
    /// Object kind.
    pub kind: ObjectKind,
    /// Object UUID.
    pub uuid: String,
    xml: Option<String>,
    /// Variables.
    pub variables: Vec<Variable>,
}

impl Monitor {
    /// A monitor with no configuration.
    pub fn new(kind: ObjectKind, uuid: &str) -> Self {
        Monitor {
            kind,
            uuid: uuid.to_owned(),
            xml: None,
            variables: vec![],
        }
    }

    /// perfmon's `refresh_config`: reparses a changed configuration, keeping the state of
    /// variables whose `<variable>` text is unchanged. On a bad configuration the error is
    /// returned and the variables are those parsed before it (as perfmon, which logs it).
    pub fn refresh(&mut self, xml: Option<&str>, now: f64) -> Result<bool, Error> {
        if xml == self.xml.as_deref() {
            return Ok(false);
        }
        self.xml = xml.map(str::to_owned);
        let Some(xml) = xml.filter(|x| !x.is_empty()) else {
            self.variables.clear();
            return Ok(true);
        };
        let configs = parse_config(self.kind, xml)?;
        let mut old = std::mem::take(&mut self.variables);
        for c in configs {
            if self.variables.iter().any(|v| v.config.name == c.name) {
                continue;
            }
            match old
                .iter()
                .position(|v| v.config.name == c.name && v.config.xml == c.xml)
            {
                Some(i) => self.variables.push(old.swap_remove(i)),
                None => self.variables.push(Variable::new(c, now)),
            }
        }
        Ok(true)
    }

    /// perfmon's `process_rrd_updates`: for each row (oldest first) and each active variable,
    /// consolidates the matching data sources and updates the variable. `external` supplies
    /// the values of the `get_percent_*` functions that read the host itself.
    pub fn process(
        &mut self,
        report: &ObjectReport,
        rows: usize,
        rrd_step: i64,
        now: f64,
        external: &dyn Fn(&str) -> f64,
    ) -> Vec<Alarm> {
        let mut alarms = Vec::new();
        for var in self.variables.iter_mut().filter(|v| v.active) {
            let params: Vec<&Vec<f64>> = report
                .iter()
                .filter(|(n, _)| var.config.rrd_regex.is_match(n))
                .map(|(_, v)| v)
                .collect();
            for row in 0..rows {
                let vals: Vec<f64> = params
                    .iter()
                    .map(|v| v.get(row).copied().unwrap_or(0.0))
                    .collect();
                let value = var.config.consolidation.apply(&vals, external);
                if let Some(body) = var.update(value, rrd_step, now) {
                    alarms.push(Alarm {
                        priority: var.config.priority.clone(),
                        cls: self.kind.as_str(),
                        obj_uuid: self.uuid.clone(),
                        body,
                        variable: var.config.name.clone(),
                    });
                }
            }
        }
        alarms
    }
}

/// Splits an `/rrd_updates` export into per-object reports keyed by UUID (perfmon's
/// `RRDContentHandler`): legend `CF:kind:uuid:name`, values oldest first.
pub fn reports(u: &crate::updates::Updates) -> Vec<(String, String, ObjectReport)> {
    let mut out: Vec<(String, String, ObjectReport)> = Vec::new();
    let mut cols = Vec::with_capacity(u.legend.len());
    for l in &u.legend {
        let mut it = l.splitn(4, ':');
        let (_, kind, uuid, name) = (it.next(), it.next(), it.next(), it.next());
        let (Some(kind), Some(uuid), Some(name)) = (kind, uuid, name) else {
            cols.push(None);
            continue;
        };
        let oi = match out.iter().position(|(_, u, _)| u == uuid) {
            Some(i) => i,
            None => {
                out.push((kind.to_owned(), uuid.to_owned(), Vec::new()));
                out.len() - 1
            }
        };
        let rep = &mut out[oi].2;
        let vi = match rep.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                rep.push((name.to_owned(), Vec::new()));
                rep.len() - 1
            }
        };
        cols.push(Some((oi, vi)));
    }
    for row in u.data.iter().rev() {
        for (c, &v) in cols.iter().zip(&row.data) {
            if let Some((oi, vi)) = *c {
                out[oi].2[vi].1.push(v);
            }
        }
    }
    out
}
