//! An in-process xapi on a simulated host (4 GiB, 1 GiB of it dom0's, 4 CPUs), logged in as
//! root: the harness of the tests that call the XenAPI without a daemon.

#![allow(dead_code)]

use std::sync::Arc;

use toolstack::api::{Credentials, Xapi};
use toolstack::backend::Backend;
use toolstack::db::Db;
use toolstack::host::{self, HostConfig};
use toolstack::value::Value;
use toolstack::ApiError;

pub const GIB: u64 = 1 << 30;
pub const MIB: u64 = 1 << 20;

/// A XenAPI struct of `pairs`.
pub fn rec(pairs: &[(&str, Value)]) -> Value {
    Value::Struct(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

/// The daemon's state, its host, and a root session.
pub struct T {
    pub x: Arc<Xapi>,
    pub be: Arc<Backend>,
    pub s: Value,
}

impl T {
    /// Over a fresh in-memory database.
    pub fn new() -> T {
        Self::with_db(Db::in_memory())
    }

    /// Over `db` (bootstrapped if it is new).
    pub fn with_db(db: Db) -> T {
        Self::with_backend(db, Backend::simulated(4 * GIB, GIB, 4).unwrap())
    }

    /// Over `db` (bootstrapped if it is new) and the host `be`.
    pub fn with_backend(db: Db, be: Backend) -> T {
        let be = Arc::new(be);
        host::bootstrap(&db, &HostConfig::simulated()).unwrap();
        let x = Xapi::new(db, be.clone(), Credentials::new("root", "pw").unwrap()).unwrap();
        let s = x
            .call(
                "session.login_with_password",
                &[Value::str("root"), Value::str("pw")],
            )
            .unwrap();
        T { x, be, s }
    }

    /// `m` with the session first.
    pub fn call(&self, m: &str, args: &[Value]) -> Result<Value, ApiError> {
        let mut p = vec![self.s.clone()];
        p.extend_from_slice(args);
        self.x.call(m, &p)
    }

    /// `m`, which must succeed.
    pub fn ok(&self, m: &str, args: &[Value]) -> Value {
        self.call(m, args).unwrap_or_else(|e| panic!("{m}: {e}"))
    }

    /// `m`, which must fail: its error.
    pub fn err(&self, m: &str, args: &[Value]) -> ApiError {
        match self.call(m, args) {
            Ok(v) => panic!("{m} succeeded: {v:?}"),
            Err(e) => e,
        }
    }
}
