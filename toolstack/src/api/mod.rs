//! The XenAPI, transport-independent. This module holds the server's state and the
//! dispatch of a call to its handler; the handlers live by concern:
//!
//! - `session`: login, logout, session and reference checks;
//! - `fields`: the generic per-class messages (`get_*`, `set_*`, maps and sets,
//!   `get_all_records`, `create`/`destroy` with XAPI's refusals);
//! - `vm`: VM creation and destruction, and the lifecycle over [`crate::xenops`];
//! - `network` (networks, VIFs, bonds, VLANs), `storage` (SRs, VBDs), `gpu`;
//! - `events`: `event.from`, `event.register`/`next`.

mod audit;
mod events;
mod fields;
mod gpu;
mod ha;
#[cfg(feature = "etcd")]
mod ha_host;
mod memory;
pub mod message;
mod metrics;
mod network;
mod operations;
#[cfg(feature = "etcd")]
mod pool;
mod session;
mod sr;
mod storage;
mod storage_operations;
mod vm;
mod vm_metrics;
mod vm_snapshot;
mod vm_suspend;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use xen_types::DomId;

pub use self::network::{random_mac, valid_mac};
pub use self::operations::gen_mac;
pub use self::vm::METRICS_INTERVAL;
pub use self::vm_metrics::CpuSamples;
pub use self::vm_suspend::suspend_image_size;
use crate::backend::{Backend, ShutdownReason};
use crate::datamodel::{self, Class, Known, Qual, Ty, NULL_REF};
use crate::db::{Db, Read, Record, Tx};
use crate::error::{codes, ApiError};
use crate::value::Value;
pub use crate::xenops::vbd_device;

/// Most live sessions per originator; logging in once more drops the oldest (as XAPI).
pub const MAX_SESSIONS_PER_ORIGINATOR: usize = 500;

/// API version reported by `host.get_API_version_*` (XenServer 8).
pub const API_VERSION: (i64, i64) = (2, 21);

/// The one local user and its hashed password.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// User name (`root`).
    pub user: String,
    /// SHA-512 crypt hash of the password.
    pub hash: String,
}

impl Credentials {
    /// Hashes `password` for `user`.
    pub fn new(user: &str, password: &str) -> Result<Self, crate::Error> {
        let params = sha_crypt::Sha512Params::new(5000).map_err(|_| crate::Error::Password)?;
        let hash =
            sha_crypt::sha512_simple(password, &params).map_err(|_| crate::Error::Password)?;
        Ok(Credentials {
            user: user.to_owned(),
            hash,
        })
    }

    /// Checks a user name and password.
    pub fn check(&self, user: &str, password: &str) -> bool {
        user == self.user && sha_crypt::sha512_check(password, &self.hash).is_ok()
    }
}

type R = Result<Value, ApiError>;

/// A XenAPI server's state and logic, independent of transport.
pub struct Xapi {
    db: Db,
    backend: Arc<Backend>,
    creds: Credentials,
    host: String,
    /// One operation at a time per VM.
    queues: crate::tasks::VmQueues,
    /// The `Async.*` tasks running now.
    tasks: crate::tasks::Tasks,
    /// `event.register` subscriptions: session -> (classes, last token).
    registrations: Mutex<HashMap<String, (HashSet<&'static str>, u64)>>,
    /// Live sessions per originator, oldest first (XAPI keeps at most
    /// [`MAX_SESSIONS_PER_ORIGINATOR`] and drops the oldest).
    sessions: Mutex<HashMap<String, std::collections::VecDeque<String>>>,
    /// Upper bound on `event.from` timeouts.
    pub max_event_wait: Duration,
    /// Most live sessions per originator (default [`MAX_SESSIONS_PER_ORIGINATOR`]).
    pub session_limit: std::sync::atomic::AtomicUsize,
    /// How long `clean_shutdown`/`clean_reboot` and `suspend` wait for the guest,
    /// milliseconds (default
    /// [`CLEAN_SHUTDOWN_TIMEOUT`]).
    pub clean_shutdown_timeout_ms: std::sync::atomic::AtomicU64,
    /// Dynamic memory control (squeezed).
    memory: crate::memory::Memory,
    /// The archives and alarms, once [`Xapi::enable_metrics`] ran.
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
    /// `audit.log`, once [`Xapi::enable_audit`] ran.
    audit: std::sync::OnceLock<crate::audit::AuditLog>,
    /// The SR drivers (storage manager).
    storage: crate::storage::Drivers,
    /// The state folder (`pool.conf`), once [`Xapi::set_state_dir`] ran.
    state_dir: std::sync::OnceLock<std::path::PathBuf>,
    /// Restarts the daemon (after a change of pool role), once set.
    restart: std::sync::OnceLock<Arc<dyn Fn() + Send + Sync>>,
    /// The pool membership, when the database is a pool's.
    #[cfg(feature = "etcd")]
    pool: std::sync::OnceLock<Arc<crate::pool::Member>>,
    /// HA running on this host (while the pool has it enabled).
    #[cfg(feature = "etcd")]
    ha: Mutex<Option<crate::ha::Ha>>,
}

/// How long a clean shutdown or reboot waits for the guest by default.
pub const CLEAN_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

impl std::fmt::Debug for Xapi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xapi")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// Seconds since the epoch as XAPI's `YYYYMMDDTHH:MM:SSZ`.
pub fn now_datetime() -> Value {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    Value::DateTime(format!(
        "{y:04}{m:02}{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    ))
}

/// Checks a call's parameter count (`want` and `got` include the session). The failure counts
/// as XAPI counts: the parameters after the session, for the expected and the received list
/// (`ocaml/idl/ocaml_backend/gen_server.ml`: `parameter_count_mismatch_failure __call
/// <params without defaults> (List.length __params - 1)`).
fn arity(method: &str, want: usize, got: usize) -> Result<(), ApiError> {
    if want == got {
        return Ok(());
    }
    Err(count_mismatch(method, want, got))
}

/// `MESSAGE_PARAMETER_COUNT_MISMATCH [method, expected, received]` as XAPI counts.
fn count_mismatch(method: &str, want: usize, got: usize) -> ApiError {
    let session = datamodel::xenapi::message_def(method).is_none_or(|m| m.takes_session());
    let k = i64::from(session);
    let expected = datamodel::expected_params(method).map_or(want as i64 - k, |e| e as i64);
    ApiError::new(
        codes::MESSAGE_PARAMETER_COUNT_MISMATCH,
        [
            method.to_owned(),
            expected.to_string(),
            (got as i64 - k).to_string(),
        ],
    )
}

fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

fn arg_str<'a>(v: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    v.as_str().ok_or_else(|| ApiError::field_type(name))
}

fn arg_bool(v: &Value, name: &str) -> Result<bool, ApiError> {
    v.as_bool().ok_or_else(|| ApiError::field_type(name))
}

impl Xapi {
    /// Builds the server over a database that already holds this host (see
    /// [`crate::host::bootstrap`]) and reconciles VM states with the backend.
    pub fn new(
        db: Db,
        backend: Arc<Backend>,
        creds: Credentials,
    ) -> Result<Arc<Self>, crate::Error> {
        let host = db
            .read(|v| v.all("host").into_iter().next())
            .ok_or_else(|| crate::Error::Corrupt("no host object".into()))?;
        Self::new_on(db, backend, creds, host)
    }

    /// Builds the server for host `host` of a database that may hold several (a pool's).
    pub fn new_on(
        db: Db,
        backend: Arc<Backend>,
        creds: Credentials,
        host: String,
    ) -> Result<Arc<Self>, crate::Error> {
        if db.read(|v| v.class_of(&host)) != Some("host") {
            return Err(crate::Error::Corrupt(format!("{host} is not a host")));
        }
        let memory = crate::memory::Memory::new(&backend);
        let x = Arc::new(Xapi {
            memory,
            storage: crate::storage::Drivers::default(),
            db,
            backend,
            creds,
            host,
            queues: crate::tasks::VmQueues::default(),
            tasks: crate::tasks::Tasks::default(),
            registrations: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            max_event_wait: Duration::from_secs(60),
            session_limit: std::sync::atomic::AtomicUsize::new(MAX_SESSIONS_PER_ORIGINATOR),
            clean_shutdown_timeout_ms: std::sync::atomic::AtomicU64::new(
                CLEAN_SHUTDOWN_TIMEOUT.as_millis() as u64,
            ),
            metrics: std::sync::OnceLock::new(),
            audit: std::sync::OnceLock::new(),
            state_dir: std::sync::OnceLock::new(),
            restart: std::sync::OnceLock::new(),
            #[cfg(feature = "etcd")]
            pool: std::sync::OnceLock::new(),
            #[cfg(feature = "etcd")]
            ha: Mutex::new(None),
        });
        x.reconcile()?;
        Ok(x)
    }

    /// Records the state folder, where a change of pool role is written (`pool.conf`).
    pub fn set_state_dir(&self, dir: &std::path::Path) {
        let _ = self.state_dir.set(dir.to_owned());
    }

    /// Sets how the daemon restarts itself when its pool role changes (`pool.join`,
    /// `pool.eject`); without it the change waits for the next start.
    pub fn set_restart(&self, f: Arc<dyn Fn() + Send + Sync>) {
        let _ = self.restart.set(f);
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The host backend.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// This host's reference.
    pub fn host_ref(&self) -> &str {
        &self.host
    }

    /// Whether a VM record is resident on this host (a pool's other hosts run the rest).
    pub(crate) fn is_here(&self, rec: &Record) -> bool {
        rec.get("resident_on").and_then(Value::as_str) == Some(self.host.as_str())
    }

    /// Handles one call: `method` with its wire parameters (session first, but for login).
    pub fn call(self: &Arc<Self>, method: &str, params: &[Value]) -> R {
        // Trailing parameters with defaults may be left out, as XAPI allows.
        if let Some(full) = datamodel::with_defaults(method, params) {
            return self.call(method, &full);
        }
        if let Some(inner) = method.strip_prefix("Async.") {
            return self.call_async(inner, params);
        }
        #[cfg(feature = "etcd")]
        if let Some(r) = self.pool_call(method, params) {
            return r;
        }
        match method {
            "session.login_with_password" => return self.login(params),
            "session.logout" => return self.logout(method, params),
            _ => {}
        }
        let (cls, msg) = method
            .split_once('.')
            .ok_or_else(|| ApiError::new(codes::MESSAGE_METHOD_UNKNOWN, [method]))?;
        if cls == "event" {
            return self.event(method, msg, params);
        }
        let class = datamodel::class(cls)
            .filter(|c| c.name == cls)
            .ok_or_else(|| ApiError::new(codes::MESSAGE_METHOD_UNKNOWN, [method]))?;
        if class.name == "message" {
            if let Some(r) = self.message(method, msg, params) {
                return r;
            }
        }
        if let Some(r) = self.sr_custom(class.name, method, msg, params) {
            return r;
        }
        if let Some(r) = self.custom(class, method, msg, params) {
            return r;
        }
        let r = self.generic(class, method, msg, params);
        // XAPI recomputes a VM's allowed operations when what they depend on is set.
        let deps = msg.contains("blocked_operations")
            || msg.ends_with("is_a_template")
            || msg.ends_with("enabled")
            || msg.ends_with("power_on_mode");
        if r.is_ok() && deps {
            if let Some(obj) = params.get(1).and_then(Value::as_str) {
                let _ = self.db.write(|tx| {
                    operations::refresh_vm(tx, obj);
                    operations::refresh_host(tx, obj);
                    Ok::<_, ApiError>(())
                });
            }
        }
        r
    }

    fn call_async(self: &Arc<Self>, method: &str, params: &[Value]) -> R {
        if params.is_empty() {
            let want = datamodel::xenapi::message_def(method).map_or(1, |m| m.params.len());
            return Err(count_mismatch(&format!("Async.{method}"), want, 0));
        }
        self.session(&params[0])?;
        let task_class = Known::task.class();
        let task = self.db.write(|tx| {
            let mut f = Record::new();
            f.insert("name_label".into(), s(format!("Async.{method}")));
            f.insert("status".into(), s("pending"));
            f.insert("progress".into(), Value::Double(0.0));
            f.insert("created".into(), now_datetime());
            f.insert("resident_on".into(), s(self.host.clone()));
            f.insert("allowed_operations".into(), Value::Array(vec![s("cancel")]));
            Ok::<_, ApiError>(tx.create(task_class, f))
        })?;
        // Registered before the call returns: a cancel right after it finds the task.
        let ctx = self.tasks.register(&task);
        let me = Arc::clone(self);
        let (m, p, t) = (method.to_owned(), params.to_vec(), task.clone());
        std::thread::Builder::new()
            .name("xapi-task".into())
            .spawn(move || {
                let res = me.tasks.run_as(ctx, || me.call(&m, &p));
                me.finish_task(&t, res);
            })
            .map_err(|e| ApiError::internal(format!("starting the task's thread: {e}")))?;
        Ok(s(task))
    }

    /// Records a task's outcome: `success` with its result, `cancelled`, or `failure` with
    /// XAPI's error.
    fn finish_task(&self, t: &str, res: R) {
        let _ = self.db.write(|tx| {
            if tx.class_of(t).is_none() {
                return Ok::<_, ApiError>(());
            }
            match res.clone() {
                Ok(v) => {
                    tx.set(t, "status", s("success"));
                    let text = match v {
                        Value::String(x) => x,
                        other => {
                            let mut out = String::new();
                            crate::xmlrpc::encode_value(&mut out, &other);
                            out
                        }
                    };
                    tx.set(t, "result", s(text));
                }
                Err(e) => {
                    let cancelled = e.code == crate::tasks::TASK_CANCELLED;
                    tx.set(
                        t,
                        "status",
                        s(if cancelled { "cancelled" } else { "failure" }),
                    );
                    tx.set(
                        t,
                        "error_info",
                        Value::Array(e.description().into_iter().map(s).collect()),
                    );
                }
            }
            tx.set(t, "progress", Value::Double(1.0));
            tx.set(t, "allowed_operations", Value::Array(Vec::new()));
            tx.set(t, "finished", now_datetime());
            Ok(())
        });
    }

    /// Records the calling task's progress (nothing for a synchronous call).
    pub(crate) fn progress(&self, fraction: f64) {
        if let Some(ctx) = crate::tasks::current() {
            let _ = self.db.write(|tx| {
                if tx.str_field(&ctx.task, "status") == "pending" {
                    tx.set(&ctx.task, "progress", Value::Double(fraction));
                }
                Ok::<_, ApiError>(())
            });
        }
    }

    /// `TASK_CANCELLED` when the calling task was cancelled.
    pub(crate) fn check_cancelled(&self) -> Result<(), ApiError> {
        match crate::tasks::current() {
            Some(ctx) if ctx.cancelled() => Err(ApiError::new(
                crate::tasks::TASK_CANCELLED,
                [ctx.task.as_str()],
            )),
            _ => Ok(()),
        }
    }

    /// `task.cancel`: a running `Async.*` task stops at its next cancellation point (while
    /// it waits for its VM's turn, or between steps); a task a client made and still
    /// pending is cancelled at once; a finished task cannot be.
    fn task_cancel(&self, task: &str) -> R {
        if self.tasks.cancel(task) {
            return self.db.write(|tx| {
                if tx.str_field(task, "status") == "pending" {
                    tx.set(task, "status", s("cancelling"));
                }
                Ok(s(""))
            });
        }
        self.db.write(|tx| {
            if tx.str_field(task, "status") != "pending" {
                return Err(ApiError::new(
                    codes::OPERATION_NOT_ALLOWED,
                    ["the task is not pending"],
                ));
            }
            tx.set(task, "status", s("cancelled"));
            tx.set(task, "finished", now_datetime());
            Ok(s(""))
        })
    }

    /// Class-specific messages; `None` falls through to the generic ones.
    fn custom(
        self: &Arc<Self>,
        class: &'static Class,
        method: &str,
        msg: &str,
        p: &[Value],
    ) -> Option<R> {
        if let Some(r) = self.ha_message(class, method, msg, p) {
            return Some(r);
        }
        let r = match (class.name, msg) {
            ("VM", "start") => self.vm_op(method, p, 4, |x, vm, p| {
                let paused = arg_bool(&p[2], "start_paused")?;
                arg_bool(&p[3], "force")?;
                x.vm_start(vm, paused)
            }),
            ("VM", "start_on") => self.vm_op(method, p, 5, |x, vm, p| {
                let host = x.check_ref(&p[2], "host", "host")?;
                let paused = arg_bool(&p[3], "start_paused")?;
                arg_bool(&p[4], "force")?;
                if host != x.host {
                    return Err(ApiError::handle_invalid("host", &host));
                }
                x.vm_start(vm, paused)
            }),
            ("VM", "clean_shutdown" | "shutdown") => {
                self.vm_op(method, p, 2, |x, vm, _| x.vm_shutdown(vm, false))
            }
            ("VM", "hard_shutdown") => self.vm_op(method, p, 2, |x, vm, _| x.vm_shutdown(vm, true)),
            ("VM", "clean_reboot") => self.vm_op(method, p, 2, |x, vm, _| x.vm_reboot(vm, false)),
            ("VM", "hard_reboot") => self.vm_op(method, p, 2, |x, vm, _| x.vm_reboot(vm, true)),
            ("VM", "suspend") => self.vm_op(method, p, 2, |x, vm, _| x.vm_suspend(vm)),
            ("VM", "resume") => self.vm_op(method, p, 4, |x, vm, p| {
                let paused = arg_bool(&p[2], "start_paused")?;
                arg_bool(&p[3], "force")?;
                x.vm_resume(vm, paused)
            }),
            ("VM", "resume_on") => self.vm_op(method, p, 5, |x, vm, p| {
                let host = x.check_ref(&p[2], "host", "host")?;
                let paused = arg_bool(&p[3], "start_paused")?;
                arg_bool(&p[4], "force")?;
                if host != x.host {
                    return Err(ApiError::handle_invalid("host", &host));
                }
                x.vm_resume(vm, paused)
            }),
            ("VM", "pause") => self.vm_op(method, p, 2, |x, vm, _| x.vm_pause(vm, true)),
            ("VM", "unpause") => self.vm_op(method, p, 2, |x, vm, _| x.vm_pause(vm, false)),
            ("VM", "set_memory_dynamic_range") => self.vm_op(method, p, 4, |x, vm, p| {
                x.vm_set_memory_dynamic_range(vm, &p[2], &p[3])
            }),
            ("VM", "set_memory_target_live") => self.vm_op(method, p, 3, |x, vm, p| {
                x.vm_set_memory_target_live(vm, &p[2])
            }),
            // message_forwarding.ml: making a template is the `make_into_template` operation.
            ("VM", "set_is_a_template") if p.get(2) == Some(&Value::Bool(true)) => {
                self.vm_op(method, p, 3, |x, vm, p| {
                    x.with_vm_operation(vm, "make_into_template", || {
                        x.generic(class, method, msg, p)
                    })
                })
            }
            ("VM", "assert_operation_valid") => self.vm_op(method, p, 3, |x, vm, p| {
                x.vm_assert_operation_valid(vm, &p[2])
            }),
            ("host", "compute_free_memory") => {
                self.with_session(method, p, 2, |x, _| x.host_compute_free_memory())
            }
            ("VM", "create") => self.with_session(method, p, 2, |x, p| x.vm_create(&p[1])),
            ("VM", "destroy") => self.with_session(method, p, 2, |x, p| {
                let vm = x.check_ref(&p[1], "VM", "self")?;
                x.vm_destroy(&vm)
            }),
            ("VIF", "create") => self.with_session(method, p, 2, |x, p| x.vif_create(&p[1])),
            ("VBD", "create") => self.with_session(method, p, 2, |x, p| x.vbd_create(&p[1])),
            ("network", "create") => {
                self.with_session(method, p, 2, |x, p| x.network_create(&p[1]))
            }
            ("Bond", "create") => self.with_session(method, p, 6, |x, p| x.bond_create(p)),
            ("Bond", "destroy") => self.with_session(method, p, 2, |x, p| {
                let b = x.check_ref(&p[1], "Bond", "self")?;
                x.bond_destroy(&b)
            }),
            ("VLAN", "create") => self.with_session(method, p, 4, |x, p| x.vlan_create(p)),
            ("VLAN", "destroy") => self.with_session(method, p, 2, |x, p| {
                let v = x.check_ref(&p[1], "VLAN", "self")?;
                x.vlan_destroy(&v)
            }),
            ("GPU_group", "create") => {
                self.with_session(method, p, 4, |x, p| x.gpu_group_create(p))
            }
            ("task", "cancel") => self.with_session(method, p, 2, |x, p| {
                let t = x.check_ref(&p[1], "task", "task")?;
                x.task_cancel(&t)
            }),
            ("VGPU", "create") => self.with_session(method, p, 6, |x, p| x.vgpu_create(p)),
            ("task", "create") => self.with_session(method, p, 3, |x, p| {
                let mut f = Record::new();
                f.insert("name_label".into(), s(arg_str(&p[1], "label")?));
                f.insert("name_description".into(), s(arg_str(&p[2], "description")?));
                f.insert("status".into(), s("pending"));
                f.insert("created".into(), now_datetime());
                f.insert("resident_on".into(), s(x.host.clone()));
                let c = Known::task.class();
                x.db.write(|tx| Ok(s(tx.create(c, f.clone()))))
            }),
            _ => return None,
        };
        Some(r)
    }

    fn with_session(
        self: &Arc<Self>,
        method: &str,
        p: &[Value],
        n: usize,
        f: impl FnOnce(&Arc<Self>, &[Value]) -> R,
    ) -> R {
        arity(method, n, p.len())?;
        self.session(&p[0])?;
        f(self, p)
    }

    fn vm_op(
        self: &Arc<Self>,
        method: &str,
        p: &[Value],
        n: usize,
        f: impl FnOnce(&Arc<Self>, &str, &[Value]) -> R,
    ) -> R {
        arity(method, n, p.len())?;
        self.session(&p[0])?;
        let vm = self.check_ref(&p[1], "VM", "vm")?;
        f(self, &vm, p)
    }
}
