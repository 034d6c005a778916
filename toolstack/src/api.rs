//! The XenAPI: sessions, generic per-class messages, object creation and destruction with
//! XAPI's checks, VM lifecycle over a [`HostBackend`], and `event.from`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use xen_types::DomId;

use crate::backend::{Backend, DeviceKind, DomainConfig, ShutdownReason};
use crate::datamodel::{self, Class, Known, Qual, Ty, NULL_REF};
use crate::db::{Db, Read, Record, Tx};
use crate::error::{codes, ApiError};
use crate::value::Value;

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
    lifecycle: Mutex<()>,
    /// `event.register` subscriptions: session -> (classes, last token).
    registrations: Mutex<HashMap<String, (HashSet<&'static str>, u64)>>,
    /// Live sessions per originator, oldest first (XAPI keeps at most
    /// [`MAX_SESSIONS_PER_ORIGINATOR`] and drops the oldest).
    sessions: Mutex<HashMap<String, std::collections::VecDeque<String>>>,
    /// Upper bound on `event.from` timeouts.
    pub max_event_wait: Duration,
    /// Most live sessions per originator (default [`MAX_SESSIONS_PER_ORIGINATOR`]).
    pub session_limit: std::sync::atomic::AtomicUsize,
    /// How long `clean_shutdown`/`clean_reboot` wait for the guest, milliseconds (default
    /// [`CLEAN_SHUTDOWN_TIMEOUT`]).
    pub clean_shutdown_timeout_ms: std::sync::atomic::AtomicU64,
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

fn arity(method: &str, want: usize, got: usize) -> Result<(), ApiError> {
    if want == got {
        Ok(())
    } else {
        Err(ApiError::new(
            codes::MESSAGE_PARAMETER_COUNT_MISMATCH,
            [method.to_owned(), want.to_string(), got.to_string()],
        ))
    }
}

fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

fn power(p: &str) -> String {
    p.to_ascii_lowercase()
}

fn arg_str<'a>(v: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    v.as_str().ok_or_else(|| ApiError::field_type(name))
}

fn arg_bool(v: &Value, name: &str) -> Result<bool, ApiError> {
    v.as_bool().ok_or_else(|| ApiError::field_type(name))
}

/// The devid and name of a VBD's `userdevice` (xvda = 51712).
pub fn vbd_device(userdevice: u32) -> (u32, String) {
    let name = if userdevice < 26 {
        format!("xvd{}", (b'a' + userdevice as u8) as char)
    } else {
        format!("xvd{userdevice}")
    };
    let devid = if userdevice < 16 {
        (202 << 8) | (userdevice << 4)
    } else {
        (1 << 28) | (userdevice << 8)
    };
    (devid, name)
}

/// Whether `mac` is `xx:xx:xx:xx:xx:xx`.
pub fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A random locally administered unicast MAC.
pub fn random_mac() -> String {
    let b = *uuid::Uuid::new_v4().as_bytes();
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        (b[0] & 0xfc) | 0x02,
        b[1],
        b[2],
        b[3],
        b[4],
        b[5]
    )
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
        let x = Arc::new(Xapi {
            db,
            backend,
            creds,
            host,
            lifecycle: Mutex::new(()),
            registrations: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            max_event_wait: Duration::from_secs(60),
            session_limit: std::sync::atomic::AtomicUsize::new(MAX_SESSIONS_PER_ORIGINATOR),
            clean_shutdown_timeout_ms: std::sync::atomic::AtomicU64::new(
                CLEAN_SHUTDOWN_TIMEOUT.as_millis() as u64,
            ),
        });
        x.reconcile()?;
        Ok(x)
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

    /// VMs the database says run but whose domains are gone are marked Halted (after a
    /// restart of the daemon or of the host).
    fn reconcile(&self) -> Result<(), crate::Error> {
        let stale: Vec<String> = self.db.read(|v| {
            v.iter_class("VM")
                .filter(|(_, r)| {
                    r.get("is_control_domain") != Some(&Value::Bool(true))
                        && matches!(
                            r.get("power_state").and_then(Value::as_str),
                            Some("Running" | "Paused")
                        )
                })
                .filter(|(_, r)| {
                    let domid = r.get("domid").and_then(Value::as_i64).unwrap_or(-1);
                    !u16::try_from(domid).is_ok_and(|d| self.backend.is_alive(DomId(d)))
                })
                .map(|(k, _)| k.clone())
                .collect()
        });
        self.db.write(|tx| {
            for vm in &stale {
                self.mark_halted(tx, vm);
            }
            tx.map_set(
                &self.host,
                "software_version",
                "hypervisor",
                Some(s(self.backend.hypervisor())),
            );
            self.update_host_memory(tx);
            Ok::<_, crate::Error>(())
        })
    }

    /// Starts the thread that notices domains dying on their own.
    pub fn spawn_monitor(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("xapi-monitor".into())
            .spawn(move || loop {
                let Some(x) = weak.upgrade() else { return };
                let dead = x.backend.wait_shutdowns(Duration::from_millis(200));
                for (domid, reason) in dead {
                    x.domain_stopped(domid, reason);
                }
            })
            .expect("spawn monitor thread");
    }

    fn domain_stopped(self: &Arc<Self>, domid: DomId, reason: ShutdownReason) {
        let _g = self.lifecycle.lock();
        let vm = self.db.read(|v| {
            v.iter_class("VM")
                .find(|(_, r)| {
                    r.get("domid").and_then(Value::as_i64) == Some(i64::from(domid.0))
                        && matches!(
                            r.get("power_state").and_then(Value::as_str),
                            Some("Running" | "Paused")
                        )
                })
                .map(|(k, r)| (k.clone(), r.clone()))
        });
        let Some((vm, rec)) = vm else { return };
        let action = match reason {
            ShutdownReason::Reboot => rec.get("actions_after_reboot"),
            ShutdownReason::Crash => rec.get("actions_after_crash"),
            _ => rec.get("actions_after_shutdown"),
        }
        .and_then(Value::as_str)
        .unwrap_or("destroy")
        .to_owned();
        let _ = self.teardown(&vm, domid);
        let _ = self.db.write(|tx| {
            self.mark_halted(tx, &vm);
            self.update_host_memory(tx);
            Ok::<_, ApiError>(())
        });
        tracing::info!(vm, domid = domid.0, ?reason, "domain stopped on its own");
        if action.ends_with("restart") && reason != ShutdownReason::Poweroff {
            if let Err(e) = self.start_locked(&vm, false) {
                tracing::warn!(vm, %e, "restart failed");
            }
        }
    }

    /// `<class>.get_all_records` encoded straight from the database as a complete XML-RPC
    /// response (no intermediate copy of the records); `None` when the call is not a valid
    /// one of those (the generic path then answers, errors included).
    pub fn get_all_records_xml(&self, method: &str, params: &[Value]) -> Option<String> {
        let cname = method.strip_suffix(".get_all_records")?;
        let class = datamodel::class(cname).filter(|c| c.name == cname)?;
        if params.len() != 1 {
            return None;
        }
        self.session(&params[0]).ok()?;
        Some(self.db.read(|v| {
            let mut out = String::with_capacity(256 + v.count(class.name) * 2048);
            out.push_str("<?xml version=\"1.0\"?>\n<methodResponse><params><param><value><struct>");
            out.push_str("<member><name>Status</name><value>Success</value></member>");
            out.push_str("<member><name>Value</name><value><struct>");
            for (r, rec) in v.iter_class(class.name) {
                crate::xmlrpc::open_member(&mut out, r);
                out.push_str("<value>");
                crate::xmlrpc::encode_struct(&mut out, rec);
                out.push_str("</value></member>");
            }
            out.push_str(
                "</struct></value></member></struct></value></param></params></methodResponse>\n",
            );
            out
        }))
    }

    /// Handles one call: `method` with its wire parameters (session first, but for login).
    pub fn call(self: &Arc<Self>, method: &str, params: &[Value]) -> R {
        if let Some(inner) = method.strip_prefix("Async.") {
            return self.call_async(inner, params);
        }
        match method {
            "session.login_with_password" => return self.login(params),
            "session.logout" => {
                arity(method, 1, params.len())?;
                let sess = self.session(&params[0])?;
                self.db.write(|tx| {
                    tx.destroy(&sess);
                    Ok::<_, ApiError>(())
                })?;
                for q in self.sessions.lock().values_mut() {
                    q.retain(|x| *x != sess);
                }
                self.registrations.lock().remove(&sess);
                return Ok(s(""));
            }
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
        if let Some(r) = self.custom(class, method, msg, params) {
            return r;
        }
        self.generic(class, method, msg, params)
    }

    fn call_async(self: &Arc<Self>, method: &str, params: &[Value]) -> R {
        if params.is_empty() {
            return Err(ApiError::new(
                codes::MESSAGE_PARAMETER_COUNT_MISMATCH,
                [method, "1", "0"],
            ));
        }
        let sess = self.session(&params[0])?;
        let task_class = Known::task.class();
        let task = self.db.write(|tx| {
            let mut f = Record::new();
            f.insert("name_label".into(), s(format!("Async.{method}")));
            f.insert("status".into(), s("pending"));
            f.insert("created".into(), now_datetime());
            f.insert("resident_on".into(), s(self.host.clone()));
            let _ = &sess;
            Ok::<_, ApiError>(tx.create(task_class, f))
        })?;
        let me = Arc::clone(self);
        let (m, p, t) = (method.to_owned(), params.to_vec(), task.clone());
        std::thread::spawn(move || {
            let res = me.call(&m, &p);
            let _ = me.db.write(|tx| {
                if tx.class_of(&t).is_none() {
                    return Ok::<_, ApiError>(());
                }
                match res {
                    Ok(v) => {
                        tx.set(&t, "status", s("success"));
                        let text = match v {
                            Value::String(x) => x,
                            other => {
                                let mut out = String::new();
                                crate::xmlrpc::encode_value(&mut out, &other);
                                out
                            }
                        };
                        tx.set(&t, "result", s(text));
                    }
                    Err(e) => {
                        tx.set(&t, "status", s("failure"));
                        tx.set(
                            &t,
                            "error_info",
                            Value::Array(e.description().into_iter().map(s).collect()),
                        );
                    }
                }
                tx.set(&t, "progress", Value::Double(1.0));
                tx.set(&t, "finished", now_datetime());
                Ok(())
            });
        });
        Ok(s(task))
    }

    fn login(&self, params: &[Value]) -> R {
        if !(2..=4).contains(&params.len()) {
            return Err(ApiError::new(
                codes::MESSAGE_PARAMETER_COUNT_MISMATCH,
                [
                    "session.login_with_password".to_owned(),
                    "4".into(),
                    params.len().to_string(),
                ],
            ));
        }
        let user = arg_str(&params[0], "uname")?;
        let pw = arg_str(&params[1], "pwd")?;
        let originator = params
            .get(3)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if !self.creds.check(user, pw) {
            return Err(ApiError::new(
                codes::SESSION_AUTHENTICATION_FAILED,
                [user, "Authentication failure"],
            ));
        }
        let class = Known::session.class();
        let r = self.db.write(|tx| {
            let mut f = Record::new();
            f.insert("this_host".into(), s(self.host.clone()));
            f.insert("this_user".into(), s(user));
            f.insert("last_active".into(), now_datetime());
            f.insert("validation_time".into(), now_datetime());
            f.insert("is_local_superuser".into(), Value::Bool(true));
            f.insert("auth_user_name".into(), s(user));
            f.insert("originator".into(), s(originator.clone()));
            let r = tx.create(class, f);
            let mut live = self.sessions.lock();
            let q = live.entry(originator.clone()).or_default();
            q.push_back(r.clone());
            let limit = self
                .session_limit
                .load(std::sync::atomic::Ordering::Relaxed)
                .max(1);
            while q.len() > limit {
                if let Some(old) = q.pop_front() {
                    tx.destroy(&old);
                    self.registrations.lock().remove(&old);
                }
            }
            Ok::<_, ApiError>(r)
        })?;
        Ok(s(r))
    }

    /// Validates a session argument.
    fn session(&self, v: &Value) -> Result<String, ApiError> {
        let r = v.as_str().unwrap_or_default();
        if self.db.read(|db| db.class_of(r)) == Some("session") {
            Ok(r.to_owned())
        } else {
            Err(ApiError::new(codes::SESSION_INVALID, [r]))
        }
    }

    /// Validates a reference argument of `class`.
    fn check_ref(&self, v: &Value, class: &str, name: &str) -> Result<String, ApiError> {
        let r = arg_str(v, name)?;
        match self.db.read(|db| db.class_of(r)) {
            Some(c) if c == class => Ok(r.to_owned()),
            _ => Err(ApiError::handle_invalid(class, r)),
        }
    }

    fn check_ref_tx(tx: &Tx<'_>, r: &str, class: &str) -> Result<(), ApiError> {
        match tx.class_of(r) {
            Some(c) if c == class => Ok(()),
            _ => Err(ApiError::handle_invalid(class, r)),
        }
    }

    /// Checks a whole record given to `create`: types, and reference targets.
    fn check_record(&self, tx: &Tx<'_>, class: &Class, v: &Value) -> Result<Record, ApiError> {
        let m = v.as_struct().ok_or_else(|| ApiError::field_type("args"))?;
        let mut out = Record::new();
        for (k, x) in m {
            let Some(f) = class.field(k) else { continue };
            if f.qual == Qual::RO || datamodel::inverse_of(class.name, f.name).is_some() {
                continue;
            }
            let x = f.ty.coerce(x).ok_or_else(|| ApiError::field_type(k))?;
            if let Ty::Ref(target) = f.ty {
                let r = x.as_str().unwrap_or(NULL_REF);
                if r != NULL_REF {
                    Self::check_ref_tx(tx, r, target)?;
                }
            }
            out.insert(k.clone(), x);
        }
        Ok(out)
    }

    fn generic(&self, class: &'static Class, method: &str, msg: &str, p: &[Value]) -> R {
        let n = p.len();
        let cname = class.name;
        match msg {
            "get_all" => {
                arity(method, 1, n)?;
                self.session(&p[0])?;
                Ok(Value::Array(
                    self.db.read(|v| v.all(cname).into_iter().map(s).collect()),
                ))
            }
            "get_all_records" => {
                arity(method, 1, n)?;
                self.session(&p[0])?;
                Ok(Value::Struct(self.db.read(|v| {
                    v.iter_class(cname)
                        .map(|(k, r)| (k.clone(), Value::Struct(r.clone())))
                        .collect()
                })))
            }
            "get_record" => {
                arity(method, 2, n)?;
                self.session(&p[0])?;
                let r = self.check_ref(&p[1], cname, "self")?;
                self.db
                    .read(|v| v.get(&r).cloned())
                    .map(Value::Struct)
                    .ok_or_else(|| ApiError::handle_invalid(cname, &r))
            }
            "get_by_uuid" => {
                arity(method, 2, n)?;
                self.session(&p[0])?;
                let u = arg_str(&p[1], "uuid")?;
                self.db
                    .read(|v| {
                        v.by_uuid(u)
                            .filter(|r| v.class_of(r) == Some(cname))
                            .cloned()
                    })
                    .map(s)
                    .ok_or_else(|| ApiError::new(codes::UUID_INVALID, [cname, u]))
            }
            "get_by_name_label" if class.has_name_label() => {
                arity(method, 2, n)?;
                self.session(&p[0])?;
                let l = arg_str(&p[1], "label")?;
                Ok(Value::Array(self.db.read(|v| {
                    v.iter_class(cname)
                        .filter(|(_, r)| r.get("name_label").and_then(Value::as_str) == Some(l))
                        .map(|(k, _)| s(k.clone()))
                        .collect()
                })))
            }
            "create" if class.record_create => {
                arity(method, 2, n)?;
                self.session(&p[0])?;
                self.db.write(|tx| {
                    let rec = self.check_record(tx, class, &p[1])?;
                    Ok(s(tx.create(class, rec)))
                })
            }
            "destroy" if class.destroy => {
                arity(method, 2, n)?;
                self.session(&p[0])?;
                let r = self.check_ref(&p[1], cname, "self")?;
                self.db.write(|tx| {
                    self.check_destroy(tx, cname, &r)?;
                    tx.destroy(&r);
                    Ok(s(""))
                })
            }
            _ => self.field_message(class, method, msg, p),
        }
    }

    /// XAPI's refusal to destroy an object others still use.
    fn check_destroy(&self, tx: &Tx<'_>, class: &str, r: &str) -> Result<(), ApiError> {
        let busy = |field: &str| tx.refs_field(r, field);
        match class {
            "network" => {
                let vifs = busy("VIFs");
                if !vifs.is_empty() {
                    return Err(ApiError::new(codes::NETWORK_CONTAINS_VIF, vifs));
                }
                let pifs = busy("PIFs");
                if !pifs.is_empty() {
                    return Err(ApiError::new(codes::NETWORK_CONTAINS_PIF, pifs));
                }
            }
            "VDI" if !busy("VBDs").is_empty() => {
                return Err(ApiError::new(codes::VDI_IN_USE, [r, "destroy"]));
            }
            "SR" => {
                if !busy("VDIs").is_empty() {
                    return Err(ApiError::new(codes::SR_NOT_EMPTY, Vec::<String>::new()));
                }
                if !busy("PBDs").is_empty() {
                    return Err(ApiError::new(codes::SR_HAS_PBD, [r]));
                }
            }
            "GPU_group" => {
                if !busy("PGPUs").is_empty() {
                    return Err(ApiError::new("GPU_GROUP_CONTAINS_PGPU", busy("PGPUs")));
                }
                if !busy("VGPUs").is_empty() {
                    return Err(ApiError::new("GPU_GROUP_CONTAINS_VGPU", busy("VGPUs")));
                }
            }
            "VBD" | "VIF" | "PBD" | "VGPU"
                if tx.field(r, "currently_attached") == Some(&Value::Bool(true)) =>
            {
                return Err(ApiError::new(
                    codes::OPERATION_NOT_ALLOWED,
                    [format!("{class} is currently attached")],
                ));
            }
            _ => {}
        }
        Ok(())
    }

    fn field_message(&self, class: &'static Class, method: &str, msg: &str, p: &[Value]) -> R {
        let cname = class.name;
        let unknown = || ApiError::new(codes::MESSAGE_METHOD_UNKNOWN, [method]);
        if let Some(fname) = msg.strip_prefix("get_") {
            let f = class.field(fname).ok_or_else(unknown)?;
            arity(method, 2, p.len())?;
            self.session(&p[0])?;
            let r = self.check_ref(&p[1], cname, "self")?;
            return self
                .db
                .read(|v| v.field(&r, f.name).cloned())
                .ok_or_else(|| ApiError::handle_invalid(cname, &r));
        }
        let writable = |fname: &str| class.field(fname).filter(|f| f.qual == Qual::RW);
        if let Some(fname) = msg.strip_prefix("set_") {
            let f = writable(fname).ok_or_else(unknown)?;
            arity(method, 3, p.len())?;
            self.session(&p[0])?;
            let r = self.check_ref(&p[1], cname, "self")?;
            let v =
                f.ty.coerce(&p[2])
                    .ok_or_else(|| ApiError::field_type(f.name))?;
            return self.db.write(|tx| {
                if let Ty::Ref(target) = f.ty {
                    let t = v.as_str().unwrap_or(NULL_REF);
                    if t != NULL_REF {
                        Self::check_ref_tx(tx, t, target)?;
                    }
                }
                if cname == "VM"
                    && (f.name.starts_with("memory_") || f.name == "VCPUs_max")
                    && tx.str_field(&r, "power_state") != "Halted"
                {
                    return Err(ApiError::new(
                        codes::VM_BAD_POWER_STATE,
                        [
                            r.clone(),
                            "halted".into(),
                            power(&tx.str_field(&r, "power_state")),
                        ],
                    ));
                }
                tx.set(&r, f.name, v);
                Ok(s(""))
            });
        }
        if let Some(fname) = msg.strip_prefix("add_to_") {
            let f = writable(fname)
                .filter(|f| f.ty == Ty::Map)
                .ok_or_else(unknown)?;
            arity(method, 4, p.len())?;
            self.session(&p[0])?;
            let r = self.check_ref(&p[1], cname, "self")?;
            let k = arg_str(&p[2], "key")?;
            let v = arg_str(&p[3], "value")?;
            return self.db.write(|tx| {
                if tx
                    .field(&r, f.name)
                    .and_then(Value::as_struct)
                    .is_some_and(|m| m.contains_key(k))
                {
                    return Err(ApiError::new(
                        codes::MAP_DUPLICATE_KEY,
                        [cname, f.name, &r, k],
                    ));
                }
                tx.map_set(&r, f.name, k, Some(s(v)));
                Ok(s(""))
            });
        }
        if let Some(fname) = msg.strip_prefix("remove_from_") {
            let f = writable(fname)
                .filter(|f| f.ty == Ty::Map)
                .ok_or_else(unknown)?;
            arity(method, 3, p.len())?;
            self.session(&p[0])?;
            let r = self.check_ref(&p[1], cname, "self")?;
            let k = arg_str(&p[2], "key")?;
            return self.db.write(|tx| {
                tx.map_set(&r, f.name, k, None);
                Ok(s(""))
            });
        }
        for (prefix, add) in [("add_", true), ("remove_", false)] {
            if let Some(fname) = msg.strip_prefix(prefix) {
                let f = writable(fname)
                    .filter(|f| f.ty == Ty::StrSet)
                    .ok_or_else(unknown)?;
                arity(method, 3, p.len())?;
                self.session(&p[0])?;
                let r = self.check_ref(&p[1], cname, "self")?;
                let item = arg_str(&p[2], "value")?;
                return self.db.write(|tx| {
                    tx.set_member(&r, f.name, item, add);
                    Ok(s(""))
                });
            }
        }
        Err(unknown())
    }

    /// Class-specific messages; `None` falls through to the generic ones.
    fn custom(
        self: &Arc<Self>,
        class: &'static Class,
        method: &str,
        msg: &str,
        p: &[Value],
    ) -> Option<R> {
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
            ("VM", "clean_shutdown" | "shutdown") => self.vm_op(method, p, 2, |x, vm, _| {
                x.vm_shutdown(vm, false, ShutdownReason::Poweroff)
            }),
            ("VM", "hard_shutdown") => self.vm_op(method, p, 2, |x, vm, _| {
                x.vm_shutdown(vm, true, ShutdownReason::Poweroff)
            }),
            ("VM", "clean_reboot") => self.vm_op(method, p, 2, |x, vm, _| x.vm_reboot(vm, false)),
            ("VM", "hard_reboot") => self.vm_op(method, p, 2, |x, vm, _| x.vm_reboot(vm, true)),
            ("VM", "pause") => self.vm_op(method, p, 2, |x, vm, _| x.vm_pause(vm, true)),
            ("VM", "unpause") => self.vm_op(method, p, 2, |x, vm, _| x.vm_pause(vm, false)),
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
            ("SR", "create") => self.with_session(method, p, 10, |x, p| x.sr_create(p)),
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
            ("GPU_group", "create") => self.with_session(method, p, 4, |x, p| {
                let mut f = Record::new();
                f.insert("name_label".into(), s(arg_str(&p[1], "name_label")?));
                f.insert(
                    "name_description".into(),
                    s(arg_str(&p[2], "name_description")?),
                );
                f.insert(
                    "other_config".into(),
                    Ty::Map
                        .coerce(&p[3])
                        .ok_or_else(|| ApiError::field_type("other_config"))?,
                );
                let c = Known::GPU_group.class();
                x.db.write(|tx| Ok(s(tx.create(c, f))))
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
                x.db.write(|tx| Ok(s(tx.create(c, f))))
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

    fn vm_create(&self, rec: &Value) -> R {
        let vm_class = Known::VM.class();
        let metrics_class = Known::VM_metrics.class();
        self.db.write(|tx| {
            let mut f = self.check_record(tx, vm_class, rec)?;
            let get = |f: &Record, k: &str| f.get(k).and_then(Value::as_i64).unwrap_or(0);
            let (smin, dmin, dmax, smax) = (
                get(&f, "memory_static_min"),
                get(&f, "memory_dynamic_min"),
                get(&f, "memory_dynamic_max"),
                get(&f, "memory_static_max"),
            );
            if !(smin <= dmin && dmin <= dmax && dmax <= smax) {
                return Err(ApiError::new(
                    "MEMORY_CONSTRAINT_VIOLATION",
                    ["Memory limits must satisfy: static_min <= dynamic_min <= dynamic_max <= static_max"],
                ));
            }
            let (vmax, vstart) = (get(&f, "VCPUs_max"), get(&f, "VCPUs_at_startup"));
            if vstart < 1 || vstart > vmax {
                return Err(ApiError::new(
                    codes::VALUE_NOT_SUPPORTED,
                    ["VCPUs_at_startup", &vstart.to_string(), "value must be between 1 and VCPUs_max"],
                ));
            }
            let mut m = Record::new();
            m.insert("install_time".into(), now_datetime());
            let metrics = tx.create(metrics_class, m);
            f.insert("metrics".into(), s(metrics));
            f.insert("power_state".into(), s("Halted"));
            f.insert("domid".into(), s("-1"));
            f.insert("memory_target".into(), s(dmax.to_string()));
            Ok(s(tx.create(vm_class, f)))
        })
    }

    fn vm_destroy(&self, vm: &str) -> R {
        let _g = self.lifecycle.lock();
        self.db.write(|tx| {
            if tx.field(vm, "is_control_domain") == Some(&Value::Bool(true)) {
                return Err(ApiError::new(
                    codes::OPERATION_NOT_ALLOWED,
                    ["cannot destroy the control domain"],
                ));
            }
            let ps = tx.str_field(vm, "power_state");
            if ps != "Halted" {
                return Err(ApiError::new(
                    codes::VM_BAD_POWER_STATE,
                    [vm.to_owned(), "halted".into(), power(&ps)],
                ));
            }
            // XAPI destroys a VM's devices with it.
            for field in ["VBDs", "VIFs", "VGPUs"] {
                for d in tx.refs_field(vm, field) {
                    tx.destroy(&d);
                }
            }
            let metrics = tx.str_field(vm, "metrics");
            if tx.class_of(&metrics).is_some() {
                tx.destroy(&metrics);
            }
            tx.destroy(vm);
            Ok(s(""))
        })
    }

    fn vif_create(&self, rec: &Value) -> R {
        let class = Known::VIF.class();
        self.db.write(|tx| {
            let mut f = self.check_record(tx, class, rec)?;
            for (k, c) in [("VM", "VM"), ("network", "network")] {
                let r = f
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or(NULL_REF)
                    .to_owned();
                Self::check_ref_tx(tx, &r, c)?;
            }
            let vm = f["VM"].as_str().unwrap_or_default().to_owned();
            let device = f
                .get("device")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if device.parse::<u32>().is_err() {
                return Err(ApiError::new(
                    codes::VALUE_NOT_SUPPORTED,
                    ["device", &device, "must be a number"],
                ));
            }
            if tx
                .refs_field(&vm, "VIFs")
                .iter()
                .any(|v| tx.str_field(v, "device") == device)
            {
                return Err(ApiError::new(codes::DEVICE_ALREADY_EXISTS, [device]));
            }
            let mac = f
                .get("MAC")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if mac.is_empty() {
                f.insert("MAC".into(), s(random_mac()));
                f.insert("MAC_autogenerated".into(), Value::Bool(true));
            } else if !valid_mac(&mac) {
                return Err(ApiError::new(codes::MAC_INVALID, [mac]));
            } else {
                f.insert("MAC".into(), s(mac.to_ascii_lowercase()));
            }
            if f.get("MTU").and_then(Value::as_i64).unwrap_or(0) == 0 {
                let net = f["network"].as_str().unwrap_or_default().to_owned();
                let mtu = tx.int_field(&net, "MTU");
                f.insert(
                    "MTU".into(),
                    s(if mtu > 0 { mtu } else { 1500 }.to_string()),
                );
            }
            Ok(s(tx.create(class, f)))
        })
    }

    fn vbd_create(&self, rec: &Value) -> R {
        let class = Known::VBD.class();
        self.db.write(|tx| {
            let mut f = self.check_record(tx, class, rec)?;
            let vm = f
                .get("VM")
                .and_then(Value::as_str)
                .unwrap_or(NULL_REF)
                .to_owned();
            Self::check_ref_tx(tx, &vm, "VM")?;
            let empty = f.get("empty") == Some(&Value::Bool(true));
            let vdi = f
                .get("VDI")
                .and_then(Value::as_str)
                .unwrap_or(NULL_REF)
                .to_owned();
            if !empty || vdi != NULL_REF {
                Self::check_ref_tx(tx, &vdi, "VDI")?;
            }
            let used: Vec<String> = tx
                .refs_field(&vm, "VBDs")
                .iter()
                .map(|v| tx.str_field(v, "userdevice"))
                .collect();
            let mut ud = f
                .get("userdevice")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if ud.is_empty() || ud == "autodetect" {
                ud = (0..)
                    .map(|i: u32| i.to_string())
                    .find(|c| !used.contains(c))
                    .expect("free slot");
            }
            let n: u32 = ud.parse().map_err(|_| {
                ApiError::new(
                    codes::VALUE_NOT_SUPPORTED,
                    ["userdevice", &ud, "must be a number"],
                )
            })?;
            if used.contains(&ud) {
                return Err(ApiError::new(codes::DEVICE_ALREADY_EXISTS, [ud]));
            }
            f.insert("userdevice".into(), s(ud));
            f.insert("device".into(), s(vbd_device(n).1));
            Ok(s(tx.create(class, f)))
        })
    }

    fn network_create(&self, rec: &Value) -> R {
        let class = Known::network.class();
        self.db.write(|tx| {
            let mut f = self.check_record(tx, class, rec)?;
            if f.get("bridge")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                let used: HashSet<String> = tx
                    .iter_class("network")
                    .map(|(k, _)| tx.str_field(k, "bridge"))
                    .collect();
                let b = (0..)
                    .map(|i| format!("xapi{i}"))
                    .find(|b| !used.contains(b))
                    .expect("free name");
                f.insert("bridge".into(), s(b));
            }
            if f.get("MTU").and_then(Value::as_i64).unwrap_or(0) == 0 {
                f.insert("MTU".into(), s("1500"));
            }
            f.entry("managed".into()).or_insert(Value::Bool(true));
            Ok(s(tx.create(class, f)))
        })
    }

    fn sr_create(&self, p: &[Value]) -> R {
        let host = self.check_ref(&p[1], "host", "host")?;
        let dc = Ty::Map
            .coerce(&p[2])
            .ok_or_else(|| ApiError::field_type("device_config"))?;
        let size = Ty::Int
            .coerce(&p[3])
            .ok_or_else(|| ApiError::field_type("physical_size"))?;
        let mut f = Record::new();
        f.insert("name_label".into(), s(arg_str(&p[4], "name_label")?));
        f.insert(
            "name_description".into(),
            s(arg_str(&p[5], "name_description")?),
        );
        f.insert("type".into(), s(arg_str(&p[6], "type")?));
        f.insert("content_type".into(), s(arg_str(&p[7], "content_type")?));
        f.insert("shared".into(), Value::Bool(arg_bool(&p[8], "shared")?));
        f.insert(
            "sm_config".into(),
            Ty::Map
                .coerce(&p[9])
                .ok_or_else(|| ApiError::field_type("sm_config"))?,
        );
        f.insert("physical_size".into(), size);
        self.db.write(|tx| {
            let sr = tx.create(Known::SR.class(), f);
            let mut pbd = Record::new();
            pbd.insert("host".into(), s(host.clone()));
            pbd.insert("SR".into(), s(sr.clone()));
            pbd.insert("device_config".into(), dc);
            pbd.insert("currently_attached".into(), Value::Bool(true));
            tx.create(Known::PBD.class(), pbd);
            Ok(s(sr))
        })
    }

    fn bond_create(&self, p: &[Value]) -> R {
        let net = self.check_ref(&p[1], "network", "network")?;
        let members: Vec<String> = p[2]
            .as_array()
            .ok_or_else(|| ApiError::field_type("members"))?
            .iter()
            .map(|m| self.check_ref(m, "PIF", "members"))
            .collect::<Result<_, _>>()?;
        let mac = arg_str(&p[3], "MAC")?.to_owned();
        let mode = Ty::Enum(&["balance-slb", "active-backup", "lacp"])
            .coerce(&p[4])
            .ok_or_else(|| {
                ApiError::new(
                    codes::VALUE_NOT_SUPPORTED,
                    ["mode", p[4].as_str().unwrap_or(""), "unknown bond mode"],
                )
            })?;
        let props = Ty::Map
            .coerce(&p[5])
            .ok_or_else(|| ApiError::field_type("properties"))?;
        if !mac.is_empty() && !valid_mac(&mac) {
            return Err(ApiError::new(codes::MAC_INVALID, [mac]));
        }
        let uniq: HashSet<&String> = members.iter().collect();
        if uniq.len() < 2 {
            return Err(ApiError::new(
                codes::PIF_BOND_NEEDS_MORE_MEMBERS,
                Vec::<String>::new(),
            ));
        }
        self.db.write(|tx| {
            let host = tx.str_field(&members[0], "host");
            for m in &members {
                if tx.str_field(m, "bond_slave_of") != NULL_REF {
                    return Err(ApiError::new(codes::PIF_ALREADY_BONDED, [m]));
                }
                if !tx.refs_field(m, "bond_master_of").is_empty() {
                    return Err(ApiError::new(codes::PIF_ALREADY_BONDED, [m]));
                }
                if tx.int_field(m, "VLAN") >= 0 && tx.str_field(m, "VLAN_master_of") != NULL_REF {
                    return Err(ApiError::new(codes::PIF_IS_VLAN, [m]));
                }
                if tx.str_field(m, "host") != host {
                    return Err(ApiError::new(
                        "PIF_CANNOT_BOND_CROSS_HOST",
                        Vec::<String>::new(),
                    ));
                }
            }
            if tx.iter_class("PIF").any(|(_, r)| {
                r.get("network").and_then(Value::as_str) == Some(net.as_str())
                    && r.get("host").and_then(Value::as_str) == Some(host.as_str())
            }) {
                return Err(ApiError::new(
                    "NETWORK_ALREADY_CONNECTED",
                    [net.clone(), host.clone()],
                ));
            }
            let used: HashSet<String> = tx
                .iter_class("PIF")
                .map(|(k, _)| tx.str_field(k, "device"))
                .collect();
            let device = (0..)
                .map(|i| format!("bond{i}"))
                .find(|d| !used.contains(d))
                .expect("free");
            let mac = if mac.is_empty() {
                tx.str_field(&members[0], "MAC")
            } else {
                mac.to_ascii_lowercase()
            };
            let mut pif = Record::new();
            pif.insert("device".into(), s(device));
            pif.insert("network".into(), s(net.clone()));
            pif.insert("host".into(), s(host.clone()));
            pif.insert("MAC".into(), s(mac));
            pif.insert(
                "MTU".into(),
                s(tx.int_field(&members[0], "MTU").to_string()),
            );
            pif.insert("VLAN".into(), s("-1"));
            pif.insert("currently_attached".into(), Value::Bool(true));
            pif.insert("managed".into(), Value::Bool(true));
            let master = tx.create(Known::PIF.class(), pif);
            let mut b = Record::new();
            b.insert("master".into(), s(master));
            b.insert("primary_slave".into(), s(members[0].clone()));
            b.insert("mode".into(), mode);
            b.insert("properties".into(), props);
            b.insert("links_up".into(), s(members.len().to_string()));
            b.insert("auto_update_mac".into(), Value::Bool(true));
            let bond = tx.create(Known::Bond.class(), b);
            for m in &members {
                tx.set(m, "bond_slave_of", s(bond.clone()));
            }
            Ok(s(bond))
        })
    }

    fn bond_destroy(&self, bond: &str) -> R {
        self.db.write(|tx| {
            for m in tx.refs_field(bond, "slaves") {
                tx.set(&m, "bond_slave_of", s(NULL_REF));
            }
            let master = tx.str_field(bond, "master");
            tx.destroy(bond);
            if tx.class_of(&master).is_some() {
                tx.destroy(&master);
            }
            Ok(s(""))
        })
    }

    fn vlan_create(&self, p: &[Value]) -> R {
        let tagged = self.check_ref(&p[1], "PIF", "tagged_PIF")?;
        let tag = p[2].as_i64().ok_or_else(|| ApiError::field_type("tag"))?;
        let net = self.check_ref(&p[3], "network", "network")?;
        if !(0..=4094).contains(&tag) {
            return Err(ApiError::new(codes::VLAN_TAG_INVALID, [tag.to_string()]));
        }
        self.db.write(|tx| {
            if tx.int_field(&tagged, "VLAN") >= 0 {
                return Err(ApiError::new(codes::PIF_IS_VLAN, [tagged.clone()]));
            }
            if tx
                .refs_field(&tagged, "VLAN_slave_of")
                .iter()
                .any(|v| tx.int_field(v, "tag") == tag)
            {
                return Err(ApiError::new(
                    "PIF_VLAN_EXISTS",
                    [tx.str_field(&tagged, "device")],
                ));
            }
            let mut pif = Record::new();
            for k in ["device", "host", "MAC", "MTU"] {
                pif.insert(k.into(), tx.field(&tagged, k).cloned().unwrap_or(s("")));
            }
            pif.insert("network".into(), s(net.clone()));
            pif.insert("VLAN".into(), s(tag.to_string()));
            pif.insert("managed".into(), Value::Bool(true));
            let untagged = tx.create(Known::PIF.class(), pif);
            let mut v = Record::new();
            v.insert("tagged_PIF".into(), s(tagged.clone()));
            v.insert("untagged_PIF".into(), s(untagged.clone()));
            v.insert("tag".into(), s(tag.to_string()));
            let vlan = tx.create(Known::VLAN.class(), v);
            tx.set(&untagged, "VLAN_master_of", s(vlan.clone()));
            Ok(s(vlan))
        })
    }

    fn vlan_destroy(&self, vlan: &str) -> R {
        self.db.write(|tx| {
            let untagged = tx.str_field(vlan, "untagged_PIF");
            tx.destroy(vlan);
            if tx.class_of(&untagged).is_some() {
                tx.destroy(&untagged);
            }
            Ok(s(""))
        })
    }

    fn vgpu_create(&self, p: &[Value]) -> R {
        let vm = self.check_ref(&p[1], "VM", "VM")?;
        let group = self.check_ref(&p[2], "GPU_group", "GPU_group")?;
        let device = arg_str(&p[3], "device")?.to_owned();
        let oc = Ty::Map
            .coerce(&p[4])
            .ok_or_else(|| ApiError::field_type("other_config"))?;
        let ty = self.check_ref(&p[5], "VGPU_type", "type")?;
        self.db.write(|tx| {
            if tx
                .refs_field(&vm, "VGPUs")
                .iter()
                .any(|v| tx.str_field(v, "device") == device)
            {
                return Err(ApiError::new(
                    codes::DEVICE_ALREADY_EXISTS,
                    [device.clone()],
                ));
            }
            let mut f = Record::new();
            f.insert("VM".into(), s(vm.clone()));
            f.insert("GPU_group".into(), s(group.clone()));
            f.insert("device".into(), s(device.clone()));
            f.insert("other_config".into(), oc);
            f.insert("type".into(), s(ty.clone()));
            Ok(s(tx.create(Known::VGPU.class(), f)))
        })
    }

    // ---- VM lifecycle -------------------------------------------------------------------

    fn bad_power(vm: &str, expected: &str, actual: &str) -> ApiError {
        ApiError::new(codes::VM_BAD_POWER_STATE, [vm, expected, &power(actual)])
    }

    fn vm_start(self: &Arc<Self>, vm: &str, paused: bool) -> R {
        let _g = self.lifecycle.lock();
        self.start_locked(vm, paused)
    }

    fn start_locked(&self, vm: &str, paused: bool) -> R {
        let (rec, vbds, vifs) = self.db.read(|v| {
            let rec = v.get(vm).cloned().unwrap_or_default();
            let vbds: Vec<(String, Record, Option<Record>)> = v
                .refs_field(vm, "VBDs")
                .into_iter()
                .filter_map(|b| {
                    let r = v.get(&b)?.clone();
                    let vdi = r
                        .get("VDI")
                        .and_then(Value::as_str)
                        .and_then(|d| v.get(d))
                        .cloned();
                    Some((b, r, vdi))
                })
                .collect();
            let vifs: Vec<(String, Record, String)> = v
                .refs_field(vm, "VIFs")
                .into_iter()
                .filter_map(|i| {
                    let r = v.get(&i)?.clone();
                    let bridge = r
                        .get("network")
                        .and_then(Value::as_str)
                        .map(|n| v.str_field(n, "bridge"))
                        .unwrap_or_default();
                    Some((i, r, bridge))
                })
                .collect();
            (rec, vbds, vifs)
        });
        let gs = |k: &str| rec.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let gi = |k: &str| rec.get(k).and_then(Value::as_i64).unwrap_or(0);
        if rec.get("is_control_domain") == Some(&Value::Bool(true)) {
            return Err(ApiError::new(
                codes::OPERATION_NOT_ALLOWED,
                ["the control domain is always running"],
            ));
        }
        if rec.get("is_a_template") == Some(&Value::Bool(true)) {
            return Err(ApiError::new(codes::VM_IS_TEMPLATE, [vm]));
        }
        let ps = gs("power_state");
        if ps != "Halted" {
            return Err(Self::bad_power(vm, "halted", &ps));
        }
        let needed = u64::try_from(gi("memory_static_max")).unwrap_or(0);
        let free = self.backend.free_memory();
        if needed > free {
            return Err(ApiError::new(
                codes::HOST_NOT_ENOUGH_FREE_MEMORY,
                [needed.to_string(), free.to_string()],
            ));
        }
        let uuid = gs("uuid");
        let name = gs("name_label");
        let cfg = DomainConfig {
            uuid: uuid::Uuid::parse_str(&uuid).unwrap_or_default(),
            memory: needed,
            max_vcpus: u32::try_from(gi("VCPUs_max")).unwrap_or(1).max(1),
            kernel: gs("PV_kernel"),
            ramdisk: gs("PV_ramdisk"),
            cmdline: gs("PV_args"),
        };
        let be = &self.backend;
        // Xen's ENOMEM (the host can shrink between the check above and the allocation,
        // e.g. by ballooning) is reported as XAPI does.
        let oom_or = |e: crate::Error| {
            if e.is_out_of_memory() {
                ApiError::new(
                    codes::HOST_NOT_ENOUGH_FREE_MEMORY,
                    [needed.to_string(), be.free_memory().to_string()],
                )
            } else {
                ApiError::internal(e)
            }
        };
        let domid = be.create_domain(&cfg).map_err(oom_or)?;
        let d = domid.0;
        let plumb = || -> Result<(), crate::Error> {
            let dom = format!("/local/domain/{d}");
            let vmpath = format!("/vm/{uuid}");
            let target = u64::try_from(gi("memory_dynamic_max")).unwrap_or(needed);
            let mut entries: Vec<(String, String)> = vec![
                (format!("{dom}/name"), name.clone()),
                (format!("{dom}/domid"), d.to_string()),
                (format!("{dom}/vm"), vmpath.clone()),
                (
                    format!("{dom}/memory/static-max"),
                    (needed / 1024).to_string(),
                ),
                (format!("{dom}/memory/target"), (target / 1024).to_string()),
                (
                    format!("{dom}/control/platform-feature-multiprocessor-suspend"),
                    "1".into(),
                ),
                (format!("{vmpath}/uuid"), uuid.clone()),
                (format!("{vmpath}/name"), name.clone()),
                (format!("{vmpath}/domains/{d}"), dom.clone()),
            ];
            for c in 0..cfg.max_vcpus {
                let on = i64::from(c) < gi("VCPUs_at_startup").max(1);
                entries.push((
                    format!("{dom}/cpu/{c}/availability"),
                    (if on { "online" } else { "offline" }).into(),
                ));
            }
            be.make_domain_dirs(domid, &vmpath, &entries)?;
            be.build_domain(domid, &cfg)?;
            for (_, vbd, vdi) in &vbds {
                let n: u32 = vbd
                    .get("userdevice")
                    .and_then(Value::as_str)
                    .and_then(|u| u.parse().ok())
                    .unwrap_or(0);
                let (devid, dev_name) = vbd_device(n);
                let mode = if vbd.get("mode").and_then(Value::as_str) == Some("RO") {
                    "r"
                } else {
                    "w"
                };
                let dtype = if vbd.get("type").and_then(Value::as_str) == Some("CD") {
                    "cdrom"
                } else {
                    "disk"
                };
                let params = vdi
                    .as_ref()
                    .map(|v| {
                        let loc = v.get("location").and_then(Value::as_str).unwrap_or("");
                        if loc.is_empty() {
                            v.get("uuid")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_owned()
                        } else {
                            loc.to_owned()
                        }
                    })
                    .unwrap_or_default();
                be.add_device(
                    DeviceKind::Vbd,
                    domid,
                    devid,
                    &[
                        ("params", &params),
                        ("mode", mode),
                        ("dev", &dev_name),
                        ("device-type", dtype),
                        ("removable", "0"),
                    ],
                    &[
                        ("virtual-device", &devid.to_string()),
                        ("device-type", dtype),
                    ],
                )?;
            }
            for (_, vif, bridge) in &vifs {
                let devid: u32 = vif
                    .get("device")
                    .and_then(Value::as_str)
                    .and_then(|u| u.parse().ok())
                    .unwrap_or(0);
                let mac = vif.get("MAC").and_then(Value::as_str).unwrap_or("");
                let mtu = vif.get("MTU").and_then(Value::as_str).unwrap_or("1500");
                be.add_device(
                    DeviceKind::Vif,
                    domid,
                    devid,
                    &[
                        ("mac", mac),
                        ("mtu", mtu),
                        ("handle", &devid.to_string()),
                        ("bridge", bridge),
                        ("script", "/etc/xen/scripts/vif-bridge"),
                    ],
                    &[("handle", &devid.to_string()), ("mac", mac)],
                )?;
            }
            if !paused {
                be.unpause(domid)?;
            }
            Ok(())
        };
        if let Err(e) = plumb() {
            let _ = self.teardown(vm, domid);
            return Err(oom_or(e));
        }
        self.db.write(|tx| {
            tx.set(
                vm,
                "power_state",
                s(if paused { "Paused" } else { "Running" }),
            );
            tx.set(vm, "domid", s(d.to_string()));
            tx.set(vm, "resident_on", s(self.host.clone()));
            tx.set(vm, "domarch", s("x64"));
            for (b, _, _) in &vbds {
                tx.set(b, "currently_attached", Value::Bool(true));
            }
            for (i, _, _) in &vifs {
                tx.set(i, "currently_attached", Value::Bool(true));
            }
            let m = tx.str_field(vm, "metrics");
            if tx.class_of(&m) == Some("VM_metrics") {
                tx.set(&m, "start_time", now_datetime());
                tx.set(&m, "memory_actual", s(needed.to_string()));
                tx.set(&m, "VCPUs_number", s(cfg.max_vcpus.to_string()));
                tx.set(&m, "last_updated", now_datetime());
            }
            self.update_host_memory(tx);
            Ok(s(""))
        })
    }

    /// Removes a domain's devices, xenstore entries and the domain itself.
    fn teardown(&self, vm: &str, domid: DomId) -> Result<(), crate::Error> {
        let be = &self.backend;
        for kind in [DeviceKind::Vbd, DeviceKind::Vif] {
            be.xs_rm(&format!(
                "/local/domain/0/backend/{}/{}",
                kind.dir(),
                domid.0
            ))?;
        }
        let uuid = self.db.read(|v| v.str_field(vm, "uuid"));
        be.xs_rm(&format!("/vm/{uuid}"))?;
        be.destroy_domain(domid)
    }

    fn mark_halted(&self, tx: &mut Tx<'_>, vm: &str) {
        tx.set(vm, "power_state", s("Halted"));
        tx.set(vm, "domid", s("-1"));
        tx.set(vm, "resident_on", s(NULL_REF));
        for field in ["VBDs", "VIFs", "VGPUs"] {
            for d in tx.refs_field(vm, field) {
                tx.set(&d, "currently_attached", Value::Bool(false));
            }
        }
        let m = tx.str_field(vm, "metrics");
        if tx.class_of(&m) == Some("VM_metrics") {
            tx.set(&m, "memory_actual", s("0"));
            tx.set(&m, "last_updated", now_datetime());
        }
    }

    fn update_host_memory(&self, tx: &mut Tx<'_>) {
        let m = tx.str_field(&self.host, "metrics");
        if tx.class_of(&m) == Some("host_metrics") {
            tx.set(
                &m,
                "memory_total",
                s(self.backend.total_memory().to_string()),
            );
            tx.set(&m, "memory_free", s(self.backend.free_memory().to_string()));
            tx.set(&m, "last_updated", now_datetime());
        }
    }

    fn running_domid(&self, vm: &str, allowed: &[&str], expected: &str) -> Result<DomId, ApiError> {
        let (ps, domid) = self
            .db
            .read(|v| (v.str_field(vm, "power_state"), v.int_field(vm, "domid")));
        if self
            .db
            .read(|v| v.field(vm, "is_control_domain") == Some(&Value::Bool(true)))
        {
            return Err(ApiError::new(
                codes::OPERATION_NOT_ALLOWED,
                ["operation not allowed on the control domain"],
            ));
        }
        if !allowed.contains(&ps.as_str()) {
            return Err(Self::bad_power(vm, expected, &ps));
        }
        u16::try_from(domid)
            .map(DomId)
            .map_err(|_| ApiError::internal(format!("bad domid {domid}")))
    }

    /// Asks the guest to stop and waits for it up to the clean-shutdown timeout.
    fn clean_shutdown(
        &self,
        vm: &str,
        domid: DomId,
        reason: ShutdownReason,
    ) -> Result<(), ApiError> {
        let timeout = Duration::from_millis(
            self.clean_shutdown_timeout_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        if self
            .backend
            .clean_shutdown(domid, reason, timeout)
            .map_err(ApiError::internal)?
        {
            Ok(())
        } else {
            Err(ApiError::new(
                codes::VM_SHUTDOWN_TIMEOUT,
                [vm.to_owned(), timeout.as_secs_f64().to_string()],
            ))
        }
    }

    fn vm_shutdown(&self, vm: &str, hard: bool, reason: ShutdownReason) -> R {
        let _g = self.lifecycle.lock();
        let allowed: &[&str] = if hard {
            &["Running", "Paused"]
        } else {
            &["Running"]
        };
        let domid = self.running_domid(vm, allowed, "running")?;
        if !hard {
            self.clean_shutdown(vm, domid, reason)?;
        }
        self.teardown(vm, domid).map_err(ApiError::internal)?;
        self.db.write(|tx| {
            self.mark_halted(tx, vm);
            self.update_host_memory(tx);
            Ok(s(""))
        })
    }

    fn vm_reboot(&self, vm: &str, hard: bool) -> R {
        let _g = self.lifecycle.lock();
        let allowed: &[&str] = if hard {
            &["Running", "Paused"]
        } else {
            &["Running"]
        };
        let domid = self.running_domid(vm, allowed, "running")?;
        if !hard {
            self.clean_shutdown(vm, domid, ShutdownReason::Reboot)?;
        }
        self.teardown(vm, domid).map_err(ApiError::internal)?;
        self.db.write(|tx| {
            self.mark_halted(tx, vm);
            Ok::<_, ApiError>(())
        })?;
        self.start_locked(vm, false)
    }

    fn vm_pause(&self, vm: &str, pause: bool) -> R {
        let _g = self.lifecycle.lock();
        let (from, to, expected) = if pause {
            ("Running", "Paused", "running")
        } else {
            ("Paused", "Running", "paused")
        };
        let domid = self.running_domid(vm, &[from], expected)?;
        if pause {
            self.backend.pause(domid)
        } else {
            self.backend.unpause(domid)
        }
        .map_err(ApiError::internal)?;
        self.db.write(|tx| {
            tx.set(vm, "power_state", s(to));
            Ok(s(""))
        })
    }

    // ---- events -------------------------------------------------------------------------

    fn classes_arg(v: &Value) -> Result<Option<HashSet<&'static str>>, ApiError> {
        let a = v
            .as_array()
            .ok_or_else(|| ApiError::field_type("classes"))?;
        let mut out = HashSet::new();
        for c in a {
            let c = c.as_str().ok_or_else(|| ApiError::field_type("classes"))?;
            if c == "*" {
                return Ok(None);
            }
            // XAPI accepts `vm/OpaqueRef:...` too; the class part is what matters here.
            let c = c.split('/').next().unwrap_or(c);
            if let Some(cls) = datamodel::class(c) {
                out.insert(cls.name);
            }
        }
        Ok(Some(out))
    }

    fn event_records(changes: Vec<crate::db::Change>) -> Value {
        Value::Array(
            changes
                .into_iter()
                .map(|c| {
                    let mut m = BTreeMap::new();
                    m.insert("id".into(), s(c.gen.to_string()));
                    m.insert("timestamp".into(), s(c.gen.to_string()));
                    m.insert("class".into(), s(c.class.to_ascii_lowercase()));
                    m.insert("operation".into(), s(c.op));
                    m.insert("ref".into(), s(c.r#ref));
                    m.insert("snapshot".into(), Value::Struct(c.snapshot));
                    Value::Struct(m)
                })
                .collect(),
        )
    }

    fn event(&self, method: &str, msg: &str, p: &[Value]) -> R {
        match msg {
            "from" => {
                arity(method, 4, p.len())?;
                self.session(&p[0])?;
                let classes = Self::classes_arg(&p[1])?;
                let token = arg_str(&p[2], "token")?;
                let since: u64 = if token.is_empty() {
                    0
                } else {
                    token
                        .parse()
                        .map_err(|_| ApiError::new("EVENT_FROM_TOKEN_PARSE_FAILURE", [token]))?
                };
                let timeout = match &p[3] {
                    Value::Double(d) => *d,
                    Value::Int(i) => *i as f64,
                    _ => return Err(ApiError::field_type("timeout")),
                };
                let wait =
                    Duration::from_secs_f64(timeout.clamp(0.0, self.max_event_wait.as_secs_f64()));
                let deadline = std::time::Instant::now() + wait;
                loop {
                    let (changes, gen) = self.db.changes_since(classes.as_ref(), since);
                    let now = std::time::Instant::now();
                    if !changes.is_empty() || since == 0 || now >= deadline {
                        let mut m = BTreeMap::new();
                        m.insert("events".into(), Self::event_records(changes));
                        m.insert("valid_ref_counts".into(), Value::Struct(BTreeMap::new()));
                        m.insert("token".into(), s(gen.to_string()));
                        return Ok(Value::Struct(m));
                    }
                    self.db.wait_past(gen, deadline - now);
                }
            }
            "register" => {
                arity(method, 2, p.len())?;
                let sess = self.session(&p[0])?;
                let classes = Self::classes_arg(&p[1])?
                    .unwrap_or_else(|| datamodel::classes().iter().map(|c| c.name).collect());
                let gen = self.db.generation();
                let mut regs = self.registrations.lock();
                let e = regs.entry(sess).or_insert_with(|| (HashSet::new(), gen));
                e.0.extend(classes);
                Ok(s(""))
            }
            "unregister" => {
                arity(method, 2, p.len())?;
                let sess = self.session(&p[0])?;
                let classes = Self::classes_arg(&p[1])?;
                let mut regs = self.registrations.lock();
                if let Some(e) = regs.get_mut(&sess) {
                    match classes {
                        None => e.0.clear(),
                        Some(c) => e.0.retain(|x| !c.contains(x)),
                    }
                }
                Ok(s(""))
            }
            "next" => {
                arity(method, 1, p.len())?;
                let sess = self.session(&p[0])?;
                let (classes, since) = self
                    .registrations
                    .lock()
                    .get(&sess)
                    .cloned()
                    .ok_or_else(|| ApiError::new(codes::SESSION_NOT_REGISTERED, [sess.clone()]))?;
                let deadline = std::time::Instant::now() + self.max_event_wait;
                loop {
                    let (changes, gen) = self.db.changes_since(Some(&classes), since);
                    if !changes.is_empty() || std::time::Instant::now() >= deadline {
                        if let Some(e) = self.registrations.lock().get_mut(&sess) {
                            e.1 = gen;
                        }
                        return Ok(Self::event_records(changes));
                    }
                    self.db.wait_past(
                        gen,
                        deadline.saturating_duration_since(std::time::Instant::now()),
                    );
                }
            }
            "get_current_id" => {
                arity(method, 1, p.len())?;
                self.session(&p[0])?;
                Ok(s(self.db.generation().to_string()))
            }
            _ => Err(ApiError::new(codes::MESSAGE_METHOD_UNKNOWN, [method])),
        }
    }
}
