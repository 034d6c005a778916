//! The audit trail of API calls as they arrive over the wire.

use std::path::Path;

use super::*;
use crate::audit::{AuditLog, Entry};

impl Xapi {
    /// Writes an `audit.log` line for every call made through [`Xapi::call_audited`] from now
    /// on (a second call keeps the first log).
    pub fn enable_audit(&self, log: AuditLog) {
        let _ = self.audit.set(log);
    }

    /// Opens `dir/audit.log` (rotated past `max_bytes`, `keep` old files) and enables it.
    pub fn enable_audit_in(&self, dir: &Path, max_bytes: u64, keep: usize) -> std::io::Result<()> {
        self.enable_audit(AuditLog::open(dir, max_bytes, keep)?);
        Ok(())
    }

    /// [`Xapi::call`], recorded in the audit log when one is enabled: who (the session's
    /// user, or the name a login gives), the session (as a tag), the call, the object named
    /// by its first argument after the session, and the result or error code. Passwords and
    /// other arguments are not written.
    pub fn call_audited(self: &Arc<Self>, method: &str, params: &[Value]) -> R {
        let Some(log) = self.audit.get() else {
            return self.call(method, params);
        };
        let login = matches!(
            method,
            "session.login_with_password" | "Async.session.login_with_password"
        );
        let first = params.first().and_then(Value::as_str).unwrap_or("");
        // Before the call: a logout destroys the session's record.
        let user = if login {
            first.to_owned()
        } else {
            self.db.read(|v| v.str_field(first, "auth_user_name"))
        };
        let r = self.call(method, params);
        let session = match (&r, login) {
            (Ok(v), true) => v.as_str().unwrap_or("").to_owned(),
            (_, true) => String::new(),
            _ => first.to_owned(),
        };
        self.write_audit(
            log,
            method,
            params,
            &user,
            &session,
            r.as_ref().map(|_| ()).map_err(|e| e.code.as_str()),
        );
        r
    }

    /// Records a successful call that did not go through [`Xapi::call_audited`] (the
    /// `get_all_records` replies encoded straight from the database), when a log is enabled.
    pub(super) fn audit_success(&self, method: &str, params: &[Value]) {
        let Some(log) = self.audit.get() else {
            return;
        };
        let first = params.first().and_then(Value::as_str).unwrap_or("");
        let user = self.db.read(|v| v.str_field(first, "auth_user_name"));
        self.write_audit(log, method, params, &user, first, Ok(()));
    }

    fn write_audit(
        &self,
        log: &AuditLog,
        method: &str,
        params: &[Value],
        user: &str,
        session: &str,
        result: Result<(), &str>,
    ) {
        let login = matches!(
            method,
            "session.login_with_password" | "Async.session.login_with_password"
        );
        let object = if login {
            None
        } else {
            params
                .get(1)
                .and_then(Value::as_str)
                .filter(|s| s.starts_with("OpaqueRef:"))
        };
        let time = match now_datetime() {
            Value::DateTime(t) => t,
            _ => String::new(),
        };
        match result {
            Ok(()) => tracing::debug!(call = method, user = %user, "API call: OK"),
            Err(code) => tracing::debug!(call = method, user = %user, code, "API call failed"),
        }
        log.record(&Entry {
            time: &time,
            user: if user.is_empty() { "-" } else { user },
            session,
            call: method,
            object,
            result,
        });
    }
}
