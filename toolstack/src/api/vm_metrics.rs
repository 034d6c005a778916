//! `VM_metrics` and `VM_guest_metrics` of running VMs, kept current by the monitor thread
//! (XAPI's `xapi_xenops` metrics updates and `xapi_guest_agent`).

use std::time::Instant;

use xen_types::VcpuId;

use super::*;
use crate::guest_agent::GuestAgent;
use crate::xenops::PowerState;

/// vCPU time samples between two refreshes, for `VCPUs_utilisation`.
#[derive(Debug, Default)]
pub struct CpuSamples {
    last: HashMap<DomId, (Instant, Vec<Duration>)>,
}

/// What one refresh read of a domain.
struct Sample {
    memory_actual: u64,
    vcpus: u32,
    utilisation: BTreeMap<String, Value>,
    state: Vec<Value>,
    agent: Option<GuestAgent>,
}

fn map(m: &BTreeMap<String, String>) -> Value {
    Value::Struct(m.iter().map(|(k, v)| (k.clone(), s(v.clone()))).collect())
}

impl Xapi {
    /// Reads every running VM's domain and guest agent and records `VM_metrics` and
    /// `VM_guest_metrics` (the latter created on the agent's first report, updated only
    /// when it changed).
    pub fn refresh_metrics(&self, samples: &mut CpuSamples) {
        let running: Vec<(String, DomId)> = self.db.read(|v| {
            v.iter_class("VM")
                .filter(|(_, r)| self.is_here(r))
                .filter(|(_, r)| r.get("is_control_domain") != Some(&Value::Bool(true)))
                .filter(|(_, r)| {
                    PowerState::parse(r.get("power_state").and_then(Value::as_str).unwrap_or(""))
                        .has_domain()
                })
                .filter_map(|(k, r)| {
                    let d = r.get("domid").and_then(Value::as_i64)?;
                    Some((k.clone(), DomId(u16::try_from(d).ok()?)))
                })
                .collect()
        });
        samples
            .last
            .retain(|d, _| running.iter().any(|(_, r)| r == d));
        for (vm, domid) in running {
            let Some(sample) = self.sample(domid, samples) else {
                continue;
            };
            let _ = self.db.write(|tx| {
                self.record_sample(tx, &vm, domid, &sample);
                Ok::<_, ApiError>(())
            });
        }
    }

    fn sample(&self, domid: DomId, samples: &mut CpuSamples) -> Option<Sample> {
        let xen = self.backend.xen();
        let info = xen.domain_info(domid).ok()?;
        let now = Instant::now();
        let times: Vec<Duration> = (0..=info.max_vcpu_id.unwrap_or(0))
            .map(|v| {
                xen.vcpu_info(domid, VcpuId(v))
                    .map_or(Duration::ZERO, |i| i.cpu_time)
            })
            .collect();
        let mut utilisation = BTreeMap::new();
        if let Some((then, before)) = samples.last.get(&domid) {
            let wall = now.duration_since(*then).as_secs_f64();
            if wall > 0.0 {
                for (i, (t, b)) in times.iter().zip(before).enumerate() {
                    let u = t.saturating_sub(*b).as_secs_f64() / wall;
                    utilisation.insert(i.to_string(), Value::Double(u.min(1.0)));
                }
            }
        }
        samples.last.insert(domid, (now, times));
        let mut state = Vec::new();
        for (on, name) in [
            (info.running(), "running"),
            (info.blocked(), "blocked"),
            (info.paused(), "paused"),
            (info.is_shutdown(), "shutdown"),
            (info.dying(), "dying"),
        ] {
            if on {
                state.push(s(name));
            }
        }
        let agent = GuestAgent::read(self.backend.store(), domid)
            .inspect_err(|e| tracing::warn!(domid = domid.0, %e, "reading the guest agent"))
            .ok()
            .flatten();
        Some(Sample {
            memory_actual: info.tot_pages.0 * 4096,
            vcpus: info.online_vcpus,
            utilisation,
            state,
            agent,
        })
    }

    fn record_sample(&self, tx: &mut Tx<'_>, vm: &str, domid: DomId, sm: &Sample) {
        // The VM may have stopped meanwhile.
        if tx.field(vm, "domid").and_then(Value::as_i64) != Some(i64::from(domid.0)) {
            return;
        }
        let m = tx.str_field(vm, "metrics");
        if tx.class_of(&m) == Some("VM_metrics") {
            tx.set(&m, "memory_actual", s(sm.memory_actual.to_string()));
            // Before its vCPUs come up a domain reports none: the number set at start stays.
            if sm.vcpus > 0 {
                tx.set(&m, "VCPUs_number", s(sm.vcpus.to_string()));
            }
            if !sm.utilisation.is_empty() {
                tx.set(
                    &m,
                    "VCPUs_utilisation",
                    Value::Struct(sm.utilisation.clone()),
                );
            }
            tx.set(&m, "state", Value::Array(sm.state.clone()));
            tx.set(&m, "last_updated", now_datetime());
        }
        let Some(agent) = &sm.agent else { return };
        let fields = [
            ("os_version", map(&agent.os_version)),
            ("PV_drivers_version", map(&agent.pv_drivers_version)),
            ("networks", map(&agent.networks)),
            ("other", map(&agent.other)),
            ("can_use_hotplug_vbd", s(agent.can_use_hotplug_vbd)),
            ("can_use_hotplug_vif", s(agent.can_use_hotplug_vif)),
            ("PV_drivers_detected", Value::Bool(true)),
            ("PV_drivers_up_to_date", Value::Bool(true)),
            ("live", Value::Bool(true)),
        ];
        let gm = tx.str_field(vm, "guest_metrics");
        if tx.class_of(&gm) == Some("VM_guest_metrics") {
            // Only a change is written (XAPI ignores repeated reports).
            if fields.iter().all(|(k, v)| tx.field(&gm, k) == Some(v)) {
                return;
            }
            for (k, v) in fields {
                tx.set(&gm, k, v);
            }
            tx.set(&gm, "last_updated", now_datetime());
        } else {
            let mut r: Record = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            r.insert("last_updated".into(), now_datetime());
            r.insert("memory".into(), Value::Struct(BTreeMap::new()));
            r.insert("disks".into(), Value::Struct(BTreeMap::new()));
            let gm = tx.create(Known::VM_guest_metrics.class(), r);
            tx.set(vm, "guest_metrics", s(gm));
        }
    }

    /// The VM no longer runs: its guest metrics go (as XAPI's `force_state_reset`).
    pub(super) fn drop_guest_metrics(&self, tx: &mut Tx<'_>, vm: &str) {
        let gm = tx.str_field(vm, "guest_metrics");
        if tx.class_of(&gm) == Some("VM_guest_metrics") {
            tx.destroy(&gm);
        }
        tx.set(vm, "guest_metrics", s(NULL_REF));
    }
}
