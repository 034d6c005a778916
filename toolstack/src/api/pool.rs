//! Pool messages (`pool.join`, `eject`, `designate_new_master`, the emergency ones), the
//! slave's refusal of logins (`HOST_IS_SLAVE`), VM placement and the forwarding of calls
//! another host must run (as XAPI's `message_forwarding.ml`): a VM's operations go to the
//! host it is resident on, `VM.start_on` and `host.*` to the host named, `VM.start` to the
//! host with the most free memory.

use super::*;
use crate::pool::{EtcdSettings, Member, Role};

/// VM operations run by the host the VM is resident on.
const RESIDENT_OPS: [&str; 12] = [
    "clean_shutdown",
    "shutdown",
    "hard_shutdown",
    "clean_reboot",
    "hard_reboot",
    "suspend",
    "pause",
    "unpause",
    "set_memory_dynamic_range",
    "set_memory_target_live",
    "assert_operation_valid",
    "set_ha_restart_priority",
];

/// host operations run by the host named.
const HOST_OPS: [&str; 2] = ["compute_free_memory", "evacuate"];

fn not_allowed(why: &str) -> ApiError {
    ApiError::new(codes::OPERATION_NOT_ALLOWED, [why])
}

/// `address` or `address:port` as a (host, port) pair (443 by default).
fn split_address(a: &str) -> (String, u16) {
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => match p.parse() {
            Ok(p) => (h.trim_matches(['[', ']']).to_owned(), p),
            Err(_) => (a.to_owned(), 443),
        },
        _ => (a.to_owned(), 443),
    }
}

impl Xapi {
    /// The pool membership, when this host is in a pool kept in etcd.
    pub fn pool(&self) -> Option<&Arc<Member>> {
        self.pool.get()
    }

    /// Makes this xapi a member of its pool (once).
    pub fn set_pool(self: &Arc<Self>, m: Arc<Member>) {
        if self.pool.set(m).is_ok() {
            self.spawn_ha_supervisor();
        }
    }

    /// Pool messages and forwarding; `None`: the call runs here as on a host alone.
    pub(super) fn pool_call(self: &Arc<Self>, method: &str, p: &[Value]) -> Option<R> {
        let (cls, msg) = method.split_once('.')?;
        let r = match (cls, msg) {
            ("session", "login_with_password") => {
                let m = self.pool()?;
                if m.is_master() {
                    return None;
                }
                // The elected master, else the one pool.conf names (a slave just started);
                // a host that is not the elected master never acts as one, even when its
                // pool.conf still says so (a master that lost the election): it answers
                // with an empty address until the next master is known.
                let addr = match m.master().filter(|h| *h != self.host) {
                    Some(h) => m.peer(self, &h).map(|p| p.display()).unwrap_or_default(),
                    None => match self.state_dir.get().map(|d| Role::read(d)) {
                        Some(Ok(Role::Slave(a))) => a,
                        _ => String::new(),
                    },
                };
                Err(ApiError::new("HOST_IS_SLAVE", [addr]))
            }
            ("session", "slave_local_login_with_password") => {
                if p.len() != 2 {
                    return Some(Err(count_mismatch(method, 2, p.len())));
                }
                self.login(p)
            }
            ("pool", "join") => self.with_session(method, p, 4, |x, p| x.pool_join(p)),
            ("pool", "eject") => self.with_session(method, p, 2, |x, p| {
                let h = x.check_ref(&p[1], "host", "host")?;
                x.pool_eject(p, &h)
            }),
            ("pool", "designate_new_master") => self.with_session(method, p, 2, |x, p| {
                let h = x.check_ref(&p[1], "host", "host")?;
                x.pool_designate(&h)
            }),
            ("pool", "emergency_transition_to_master") => {
                self.with_session(method, p, 1, |x, _| {
                    let me = x.host.clone();
                    x.pool_designate(&me)
                })
            }
            ("pool", "emergency_reset_master") => self.with_session(method, p, 2, |x, p| {
                let a = arg_str(&p[1], "master_address")?;
                let dir = x
                    .state_dir
                    .get()
                    .ok_or_else(|| not_allowed("no state folder"))?;
                Role::Slave(a.to_owned())
                    .write(dir)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                Ok(s(""))
            }),
            ("host", "destroy") => self.with_session(method, p, 2, |x, p| {
                let h = x.check_ref(&p[1], "host", "self")?;
                x.host_destroy(&h)
            }),
            _ => {
                self.pool()?;
                return self.forwarded(cls, msg, method, p);
            }
        };
        Some(r)
    }

    /// The calls of a pool member that another host runs.
    fn forwarded(self: &Arc<Self>, cls: &str, msg: &str, method: &str, p: &[Value]) -> Option<R> {
        let m = Arc::clone(self.pool()?);
        let session_ok = p.first().is_some_and(|v| self.session(v).is_ok());
        if !session_ok {
            return None;
        }
        let arg_ref = |i: usize, class: &str| {
            p.get(i)
                .and_then(Value::as_str)
                .filter(|r| self.db.read(|v| v.class_of(r)) == Some(class))
                .map(str::to_owned)
        };
        match (cls, msg) {
            ("VM", "start") if p.len() == 4 => {
                let vm = arg_ref(1, "VM")?;
                let host = match self.place(&m, &vm) {
                    Ok(Some(h)) => h,
                    Ok(None) => return None,
                    Err(e) => return Some(Err(e)),
                };
                let args = [
                    p[0].clone(),
                    s(vm),
                    s(host.clone()),
                    p[2].clone(),
                    p[3].clone(),
                ];
                Some(m.forward(self, &host, "VM.start_on", &args))
            }
            ("VM", "start_on") if p.len() == 5 => {
                let host = arg_ref(2, "host")?;
                (host != self.host).then(|| self.forward_live(&m, &host, method, p))
            }
            ("VM", "pool_migrate") if p.len() == 4 => {
                let vm = arg_ref(1, "VM")?;
                let dest = arg_ref(2, "host")?;
                let resident = self.db.read(|v| v.str_field(&vm, "resident_on"));
                if resident != self.host && resident != NULL_REF && !resident.is_empty() {
                    return Some(self.forward_live(&m, &resident, method, p));
                }
                Some(self.pool_migrate(&m, p, &vm, &dest))
            }
            ("VM", op) if RESIDENT_OPS.contains(&op) => {
                let vm = arg_ref(1, "VM")?;
                let resident = self.db.read(|v| v.str_field(&vm, "resident_on"));
                (resident != self.host && resident != NULL_REF && !resident.is_empty())
                    .then(|| self.forward_live(&m, &resident, method, p))
            }
            ("host", "evacuate") => {
                let host = arg_ref(1, "host")?;
                if host != self.host {
                    return Some(self.forward_live(&m, &host, method, p));
                }
                Some(self.evacuate(&m, &p[0]))
            }
            ("host", op) if HOST_OPS.contains(&op) => {
                let host = arg_ref(1, "host")?;
                (host != self.host).then(|| self.forward_live(&m, &host, method, p))
            }
            _ => None,
        }
    }

    fn forward_live(&self, m: &Member, host: &str, method: &str, p: &[Value]) -> R {
        if !m.is_live(host) {
            return Err(ApiError::new("HOST_OFFLINE", [host]));
        }
        m.forward(self, host, method, p)
    }

    /// Where `VM.start` runs `vm`: the live, enabled host with the most free memory that
    /// holds the VM's memory (`None`: here).
    fn place(&self, m: &Member, vm: &str) -> Result<Option<String>, ApiError> {
        let (need, state, mut hosts) = self.db.read(|v| {
            let need = v.int_field(vm, "memory_static_max");
            let state = v.str_field(vm, "power_state");
            let hosts: Vec<(String, i64)> = v
                .all("host")
                .into_iter()
                .filter(|h| v.field(h, "enabled").and_then(Value::as_bool) != Some(false))
                .map(|h| {
                    let metrics = v.str_field(&h, "metrics");
                    (h, v.int_field(&metrics, "memory_free"))
                })
                .collect();
            (need, state, hosts)
        });
        if state != "Halted" {
            return Ok(None);
        }
        hosts.retain(|(h, _)| m.is_live(h));
        hosts.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then_with(|| (a.0 != self.host).cmp(&(b.0 != self.host)))
        });
        match hosts.first() {
            Some((h, free)) if *free >= need => Ok((*h != self.host).then(|| h.clone())),
            Some((_, free)) => Err(ApiError::new(
                codes::HOST_NOT_ENOUGH_FREE_MEMORY,
                [need.to_string(), free.to_string()],
            )),
            None => Err(ApiError::new("NO_HOSTS_AVAILABLE", Vec::<String>::new())),
        }
    }

    /// `VM.pool_migrate` of a VM resident here: its domain is destroyed here and created on
    /// `dest` from the VM's record (the simulated host keeps no memory image to copy); when
    /// the destination fails, the VM starts here again.
    fn pool_migrate(self: &Arc<Self>, m: &Member, p: &[Value], vm: &str, dest: &str) -> R {
        if dest == self.host {
            return Ok(s(""));
        }
        let state = self.db.read(|v| v.str_field(vm, "power_state"));
        if state != "Running" {
            return Err(ApiError::new(
                codes::VM_BAD_POWER_STATE,
                [vm, "running", &state.to_lowercase()],
            ));
        }
        if !m.is_live(dest) {
            return Err(ApiError::new("HOST_OFFLINE", [dest]));
        }
        let (need, free) = self.db.read(|v| {
            let metrics = v.str_field(dest, "metrics");
            (
                v.int_field(vm, "memory_static_max"),
                v.int_field(&metrics, "memory_free"),
            )
        });
        if free < need {
            return Err(ApiError::new(
                codes::HOST_NOT_ENOUGH_FREE_MEMORY,
                [need.to_string(), free.to_string()],
            ));
        }
        self.vm_shutdown(vm, true)?;
        let args = [
            p[0].clone(),
            s(vm),
            s(dest),
            Value::Bool(false),
            Value::Bool(false),
        ];
        match m.forward(self, dest, "VM.start_on", &args) {
            Ok(_) => Ok(s("")),
            Err(e) => {
                tracing::warn!(vm, dest, %e, "migration's start failed; starting here again");
                let _ = self.vm_start(vm, false);
                Err(e)
            }
        }
    }

    /// `host.evacuate` here: every running VM migrates to the live host with the most free
    /// memory.
    fn evacuate(self: &Arc<Self>, m: &Member, session: &Value) -> R {
        let vms: Vec<String> = self.db.read(|v| {
            v.iter_class("VM")
                .filter(|(_, r)| self.is_here(r))
                .filter(|(_, r)| r.get("is_control_domain") != Some(&Value::Bool(true)))
                .filter(|(_, r)| r.get("power_state").and_then(Value::as_str) == Some("Running"))
                .map(|(k, _)| k.clone())
                .collect()
        });
        for vm in vms {
            let dest = self.db.read(|v| {
                let need = v.int_field(&vm, "memory_static_max");
                v.all("host")
                    .into_iter()
                    .filter(|h| *h != self.host && m.is_live(h))
                    .map(|h| {
                        let metrics = v.str_field(&h, "metrics");
                        let free = v.int_field(&metrics, "memory_free");
                        (h, free)
                    })
                    .filter(|(_, free)| *free >= need)
                    .max_by_key(|(_, free)| *free)
                    .map(|(h, _)| h)
            });
            let dest =
                dest.ok_or_else(|| ApiError::new("NO_HOSTS_AVAILABLE", Vec::<String>::new()))?;
            let args = [
                session.clone(),
                s(vm.clone()),
                s(dest.clone()),
                Value::Struct(Record::new()),
            ];
            self.pool_migrate(m, &args, &vm, &dest)?;
        }
        Ok(s(""))
    }

    /// `pool.designate_new_master`: the others leave the election until `host` leads.
    fn pool_designate(&self, host: &str) -> R {
        let Some(m) = self.pool() else {
            return Ok(s(""));
        };
        if m.master().as_deref() == Some(host) && (host != self.host || m.is_master()) {
            return Ok(s(""));
        }
        if !m.is_live(host) {
            return Err(ApiError::new("HOST_OFFLINE", [host]));
        }
        m.designate(host)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            let done = self.db.read(|v| {
                v.all("pool")
                    .first()
                    .is_some_and(|p| v.str_field(p, "master") == host)
            });
            if done && m.master().as_deref() == Some(host) {
                return Ok(s(""));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(ApiError::internal(format!("{host} did not become master")))
    }

    /// `host.destroy`: the records of a dead host leave the pool.
    fn host_destroy(&self, host: &str) -> R {
        if host == self.host {
            return Err(ApiError::new("HOST_CANNOT_DESTROY_SELF", [host]));
        }
        if self.pool().is_some_and(|m| m.is_live(host)) {
            return Err(ApiError::new("HOST_IS_LIVE", [host]));
        }
        self.db.write(|tx| {
            for (r, _, _) in host_objects(tx, host, false) {
                tx.destroy(&r);
            }
            Ok(s(""))
        })
    }

    /// `pool.eject`: on the host ejected (forwarded there), its objects leave the pool's
    /// database, `pool.conf` says `master` again and xapi restarts on its own database.
    fn pool_eject(self: &Arc<Self>, p: &[Value], host: &str) -> R {
        let Some(m) = self.pool().cloned() else {
            return Err(not_allowed("this host is not in a pool"));
        };
        if m.master().as_deref() == Some(host) {
            return Err(not_allowed("Cannot eject the pool master"));
        }
        if host != self.host {
            return self.forward_live(&m, host, "pool.eject", p);
        }
        let running = self.db.read(|v| {
            v.iter_class("VM").any(|(_, r)| {
                self.is_here(r)
                    && r.get("is_control_domain") != Some(&Value::Bool(true))
                    && r.get("power_state").and_then(Value::as_str) != Some("Halted")
            })
        });
        if running {
            return Err(ApiError::new("HOST_HAS_RESIDENT_VMS", [host]));
        }
        let dir = self
            .state_dir
            .get()
            .ok_or_else(|| not_allowed("no state folder"))?
            .clone();
        self.db.write(|tx| {
            for (r, _, _) in host_objects(tx, host, false) {
                tx.destroy(&r);
            }
            Ok::<_, ApiError>(())
        })?;
        let internal = |e: crate::Error| ApiError::internal(e.to_string());
        m.shutdown();
        EtcdSettings::remove(&dir).map_err(internal)?;
        Role::Master.write(&dir).map_err(internal)?;
        self.restart_soon();
        Ok(s(""))
    }

    /// `pool.join`: checks as XAPI's `pre_join_checks`, logs in to the master, moves this
    /// host's objects into the pool's store, records the pool and restarts xapi on it.
    fn pool_join(self: &Arc<Self>, p: &[Value]) -> R {
        let addr = arg_str(&p[1], "master_address")?;
        let user = arg_str(&p[2], "master_username")?;
        let pw = arg_str(&p[3], "master_password")?;
        if let Some(m) = self.pool() {
            if !m.is_master() {
                let a = m
                    .master()
                    .and_then(|h| m.peer(self, &h))
                    .map(|p| p.display())
                    .unwrap_or_default();
                return Err(ApiError::new("HOST_IS_SLAVE", [a]));
            }
            if self.db.read(|v| v.count("host")) > 1 {
                return Err(ApiError::new(
                    "JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS",
                    Vec::<String>::new(),
                ));
            }
        }
        let (busy, shared) = self.db.read(|v| {
            let busy = v.iter_class("VM").any(|(_, r)| {
                r.get("is_control_domain") != Some(&Value::Bool(true))
                    && matches!(
                        r.get("power_state").and_then(Value::as_str),
                        Some("Running" | "Paused" | "Suspended")
                    )
            });
            let shared = v
                .iter_class("SR")
                .any(|(_, r)| r.get("shared") == Some(&Value::Bool(true)));
            (busy, shared)
        });
        if busy {
            return Err(ApiError::new(
                "JOINING_HOST_CANNOT_HAVE_RUNNING_OR_SUSPENDED_VMS",
                Vec::<String>::new(),
            ));
        }
        if shared {
            return Err(ApiError::new(
                "JOINING_HOST_CANNOT_CONTAIN_SHARED_SRS",
                Vec::<String>::new(),
            ));
        }
        let dir = self
            .state_dir
            .get()
            .ok_or_else(|| not_allowed("no state folder"))?
            .clone();
        let (h, port) = split_address(addr);
        // First contact: the master's certificate is not known yet (XAPI's join exchanges
        // certificates after the login); the password goes over TLS unverified.
        let mut c = crate::client::Client::with_tls(
            crate::client::Endpoint::Tls(h, port),
            crate::client::TlsVerify::Insecure,
        );
        let conn_failed = |e: crate::Error| match e {
            crate::Error::Api(e) => e,
            e => {
                tracing::warn!(%e, addr, "pool.join: contacting the master");
                ApiError::new("JOINING_HOST_CONNECTION_FAILED", Vec::<String>::new())
            }
        };
        c.login(user, pw).map_err(conn_failed)?;
        let pool = c.call("pool.get_all", &[]).map_err(conn_failed)?;
        let pool = pool
            .as_array()
            .and_then(|a| a.first())
            .cloned()
            .ok_or_else(|| ApiError::internal("the master has no pool"))?;
        let oc = c
            .call("pool.get_other_config", std::slice::from_ref(&pool))
            .map_err(conn_failed)?;
        let get = |k: &str| {
            oc.as_struct()
                .and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let (Some(eps), Some(name)) = (get("xen-rs:etcd-endpoints"), get("xen-rs:etcd-pool"))
        else {
            return Err(ApiError::new(
                "JOINING_HOST_SERVICE_FAILED",
                Vec::<String>::new(),
            ));
        };
        let master = c
            .call("pool.get_master", std::slice::from_ref(&pool))
            .map_err(conn_failed)?;
        let sw = c
            .call("host.get_software_version", &[master])
            .map_err(conn_failed)?;
        let theirs = sw
            .as_struct()
            .and_then(|m| m.get("product_version"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let ours = self.db.read(|v| {
            v.field(&self.host, "software_version")
                .and_then(Value::as_struct)
                .and_then(|m| m.get("product_version"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        });
        if theirs != ours {
            return Err(ApiError::new(
                "POOL_JOINING_HOST_MUST_HAVE_SAME_PRODUCT_VERSION",
                Vec::<String>::new(),
            ));
        }
        let _ = c.call("session.logout", &[]);
        let settings = EtcdSettings {
            endpoints: eps.split(',').map(str::to_owned).collect(),
            pool: name,
        };
        let internal = |e: crate::Error| ApiError::internal(e.to_string());
        let pool_db =
            crate::db::Db::open_etcd(&settings.endpoints, &settings.pool).map_err(internal)?;
        let mine = self.db.read(|v| host_objects(v, &self.host, true));
        move_into(&pool_db, mine).map_err(internal)?;
        drop(pool_db);
        if let Some(m) = self.pool() {
            m.shutdown();
        }
        settings.write(&dir).map_err(internal)?;
        Role::Slave(addr.to_owned()).write(&dir).map_err(internal)?;
        self.restart_soon();
        Ok(s(""))
    }

    /// Runs the restart hook (the daemon re-executes itself) shortly after the answer.
    fn restart_soon(&self) {
        let Some(hook) = self.restart.get().cloned() else {
            tracing::warn!("pool role changed; restart xapi to follow it");
            return;
        };
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            hook();
        });
    }
}

/// The objects that belong to `host` and move with it: the host and its metrics, its
/// control domain, PIFs, PBDs, local SRs and their VDIs, PCI devices, PGPUs,
/// and the networks, GPU groups and VGPU types they use (merged into the pool's own by
/// bridge or name when it has them).
fn host_objects(
    v: &impl Read,
    host: &str,
    with_shared: bool,
) -> Vec<(String, &'static str, Record)> {
    let mut out: Vec<String> = vec![host.to_owned()];
    let metrics = v.str_field(host, "metrics");
    out.push(metrics);
    let owned = |class: &str, field: &str| -> Vec<String> {
        v.iter_class(class)
            .filter(|(_, r)| r.get(field).and_then(Value::as_str) == Some(host))
            .map(|(k, _)| k.clone())
            .collect()
    };
    for vm in owned("VM", "resident_on") {
        if v.field(&vm, "is_control_domain") == Some(&Value::Bool(true)) {
            out.push(v.str_field(&vm, "metrics"));
            out.push(vm);
        }
    }
    out.extend(owned("PIF", "host"));
    for pbd in owned("PBD", "host") {
        let sr = v.str_field(&pbd, "SR");
        if v.field(&sr, "shared") != Some(&Value::Bool(true)) {
            out.extend(v.refs_field(&sr, "VDIs"));
            out.push(sr);
        }
        out.push(pbd);
    }
    out.extend(owned("PCI", "host"));
    out.extend(owned("PGPU", "host"));
    let mut shared = Vec::new();
    for r in out.iter().filter(|_| with_shared) {
        match v.class_of(r) {
            Some("PIF") => shared.push(v.str_field(r, "network")),
            Some("PGPU") => {
                shared.push(v.str_field(r, "GPU_group"));
                shared.extend(v.refs_field(r, "supported_VGPU_types"));
            }
            _ => {}
        }
    }
    shared.sort();
    shared.dedup();
    out.extend(shared);
    out.into_iter()
        .filter_map(|r| {
            let class = v.class_of(&r)?;
            Some((r.clone(), class, v.get(&r)?.clone()))
        })
        .collect()
}

/// Writes a joining host's objects into the pool: networks by bridge and GPU groups and
/// VGPU types by name become the pool's own when it has them; the rest keep their
/// references.
fn move_into(
    pool: &crate::db::Db,
    objs: Vec<(String, &'static str, Record)>,
) -> Result<(), crate::Error> {
    use std::collections::HashMap;
    let key_of = |class: &str, r: &Record| -> Option<String> {
        let f = match class {
            "network" => "bridge",
            "GPU_group" => "name_label",
            "VGPU_type" => "model_name",
            _ => return None,
        };
        r.get(f)
            .and_then(Value::as_str)
            .map(|v| format!("{class}/{v}"))
    };
    pool.write(|tx| {
        let mut theirs: HashMap<String, String> = HashMap::new();
        for class in ["network", "GPU_group", "VGPU_type"] {
            for (k, r) in tx.iter_class(class) {
                if let Some(key) = key_of(class, r) {
                    theirs.insert(key, k.clone());
                }
            }
        }
        let mut map: HashMap<String, String> = HashMap::new();
        for (r, class, rec) in &objs {
            if let Some(t) = key_of(class, rec).and_then(|k| theirs.get(&k)) {
                map.insert(r.clone(), t.clone());
            }
        }
        let remap = |v: &Value| -> Value {
            match v {
                Value::String(x) => Value::String(map.get(x).cloned().unwrap_or_else(|| x.clone())),
                Value::Array(a) => Value::Array(
                    a.iter()
                        .map(|i| match i {
                            Value::String(x) => {
                                Value::String(map.get(x).cloned().unwrap_or_else(|| x.clone()))
                            }
                            o => o.clone(),
                        })
                        .collect(),
                ),
                o => o.clone(),
            }
        };
        for (r, class, rec) in &objs {
            if map.contains_key(r) {
                continue;
            }
            let rec: Record = rec.iter().map(|(k, v)| (k.clone(), remap(v))).collect();
            let cls = datamodel::class(class)
                .ok_or_else(|| crate::Error::Corrupt(format!("{r}: unknown class {class}")))?;
            tx.insert(r, cls, rec);
        }
        // The pool's own objects now used by the joining host's point back at them.
        for (r, class, rec) in &objs {
            let back: &[(&str, &str)] = match *class {
                "PIF" => &[("network", "PIFs")],
                "PGPU" => &[("GPU_group", "PGPUs")],
                _ => &[],
            };
            for (field, other) in back {
                if let Some(t) = rec
                    .get(*field)
                    .and_then(Value::as_str)
                    .and_then(|x| map.get(x))
                {
                    tx.set_member(t, other, r, true);
                }
            }
            if *class == "PGPU" {
                for f in ["supported_VGPU_types", "enabled_VGPU_types"] {
                    let on = if f.starts_with("supported") {
                        "supported_on_PGPUs"
                    } else {
                        "enabled_on_PGPUs"
                    };
                    for t in rec.get(f).and_then(Value::as_array).into_iter().flatten() {
                        if let Some(t) = t.as_str().and_then(|x| map.get(x)) {
                            tx.set_member(t, on, r, true);
                        }
                    }
                }
            }
        }
        Ok(())
    })
}
