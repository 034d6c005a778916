//! Sessions: login (with a cap per originator), logout, and the checks every message makes
//! on its session and reference arguments.

use super::*;

impl Xapi {
    pub(super) fn logout(&self, method: &str, params: &[Value]) -> R {
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
        Ok(s(""))
    }

    pub(super) fn login(&self, params: &[Value]) -> R {
        if !(2..=4).contains(&params.len()) {
            // XAPI counts the parameters without defaults: uname and pwd (`version` and
            // `originator` have defaults in ocaml/idl/datamodel.ml).
            return Err(count_mismatch(
                "session.login_with_password",
                4,
                params.len(),
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
            // `user ref` in the datamodel (deprecated class): XAPI leaves it null.
            f.insert("this_user".into(), s(NULL_REF));
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
    pub(super) fn session(&self, v: &Value) -> Result<String, ApiError> {
        let r = v.as_str().unwrap_or_default();
        if self.db.read(|db| db.class_of(r)) == Some("session") {
            Ok(r.to_owned())
        } else {
            Err(ApiError::new(codes::SESSION_INVALID, [r]))
        }
    }

    /// Validates a reference argument of `class`.
    pub(super) fn check_ref(&self, v: &Value, class: &str, name: &str) -> Result<String, ApiError> {
        let r = arg_str(v, name)?;
        match self.db.read(|db| db.class_of(r)) {
            Some(c) if c == class => Ok(r.to_owned()),
            _ => Err(ApiError::handle_invalid(class, r)),
        }
    }

    pub(super) fn check_ref_tx(tx: &Tx<'_>, r: &str, class: &str) -> Result<(), ApiError> {
        match tx.class_of(r) {
            Some(c) if c == class => Ok(()),
            _ => Err(ApiError::handle_invalid(class, r)),
        }
    }
}
