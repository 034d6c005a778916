//! xapi's side of the metrics: the sampler step over the backend and database, perfmon's
//! alarms as `message`s, and the HTTP handlers' authentication.

use std::path::Path;

use rrd::perfmon::ObjectKind;

use super::*;
use crate::metrics::{self, Metrics};

impl Xapi {
    /// Turns the metrics on, archives saved under `dir` (reloaded from there), and returns
    /// them; a second call returns the first's.
    pub fn enable_metrics(&self, dir: Option<&Path>) -> Arc<Metrics> {
        self.metrics
            .get_or_init(|| {
                let uuid = self.db.read(|v| v.str_field(&self.host, "uuid"));
                Arc::new(Metrics::new(&uuid, dir))
            })
            .clone()
    }

    /// The metrics, when enabled.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.get()
    }

    /// One sampler step at `now` (seconds since the epoch): reads the host and the running
    /// VMs through the backend, archives the sample, and when perfmon's run is due (see
    /// [`Metrics::evaluate_alarms`]: every 300 s over the 1-minute averages by default)
    /// raises its alarms as messages. Returns the new messages' references.
    pub fn metrics_step(self: &Arc<Self>, now: f64) -> Vec<String> {
        let m = self.enable_metrics(None);
        let (vms, mut configs, known) = self.db.read(|v| {
            let mut vms = HashMap::new();
            let mut configs = Vec::new();
            let mut known = HashSet::new();
            for (_, rec) in v.iter_class("VM") {
                let uuid = rec.get("uuid").and_then(Value::as_str).unwrap_or_default();
                known.insert(uuid.to_owned());
                let running = self.is_here(rec)
                    && matches!(
                        rec.get("power_state").and_then(Value::as_str),
                        Some("Running" | "Paused")
                    );
                let domid = rec.get("domid").and_then(Value::as_i64).unwrap_or(-1);
                if running && (0..i64::from(u16::MAX)).contains(&domid) {
                    vms.insert(DomId(domid as u16), uuid.to_owned());
                    configs.push((ObjectKind::Vm, uuid.to_owned(), perfmon_of(rec)));
                }
            }
            (vms, configs, known)
        });
        // A destroyed VM's history goes with it.
        m.retain_vms(|u| known.contains(u));
        let host_cfg = self.db.read(|v| v.get(&self.host).and_then(perfmon_of));
        configs.push((ObjectKind::Host, m.host_uuid().to_owned(), host_cfg));
        let be = &self.backend;
        let target = |d: DomId| {
            be.xs_read(&format!("/local/domain/{}/memory/target", d.0))
                .ok()
                .flatten()
                .and_then(|t| t.trim().parse().ok())
        };
        let (mut host, mut samples) = metrics::collect(&**be.xen(), &vms, &target);
        if let Some(paths) = m.counter_paths() {
            metrics::add_counters(&paths, &vms, &mut host, &mut samples);
        }
        m.update(now, &host, &samples);
        let (alarms, errors) = m.evaluate_alarms(now, &configs);
        for (uuid, err) in errors {
            tracing::warn!(uuid, err, "perfmon configuration");
        }
        alarms
            .into_iter()
            .filter_map(|a| {
                let prio = a.priority.parse().unwrap_or(3);
                match self.message_create("ALARM", prio, a.cls, &a.obj_uuid, &a.body) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(%e, "raising a perfmon alarm");
                        None
                    }
                }
            })
            .collect()
    }

    /// Starts the thread that samples every [`metrics::STEP`] seconds, on the step boundary.
    pub fn spawn_metrics(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("xapi-rrd".into())
            .spawn(move || loop {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                let step = metrics::STEP as f64;
                let next = (now / step).floor() * step + step;
                std::thread::sleep(Duration::from_secs_f64((next - now).max(0.0)));
                let Some(x) = weak.upgrade() else { return };
                x.metrics_step(next);
            })
            .expect("spawn the sampler thread");
    }

    /// Whether an HTTP request may read the metrics, as XAPI's handlers check: a valid
    /// `session_id`, or the local user's name and password by basic authentication.
    pub fn http_authorised(&self, session_id: Option<&str>, basic: Option<(&str, &str)>) -> bool {
        if let Some(sid) = session_id {
            if self.session(&s(sid)).is_ok() {
                return true;
            }
        }
        basic.is_some_and(|(u, p)| self.creds.check(u, p))
    }
}

fn perfmon_of(rec: &Record) -> Option<String> {
    match rec.get("other_config") {
        Some(Value::Struct(m)) => m.get("perfmon").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}
