//! The XenAPI server on arbitrary request bodies (XML-RPC and JSON-RPC): it must never panic,
//! and every XML-RPC answer must itself parse as a method response.
//!
//! Hermetic: a fresh database and server per input (a request may log in, create or destroy
//! objects), so a crash file reproduces alone. The simulated host below is shared: starting
//! an in-process xenstored per input would make the target too slow to fuzz, and one request
//! cannot change it (anything that reaches the host needs a session and an object made by an
//! earlier request, which a fresh database does not have).
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use toolstack::api::{Credentials, Xapi};
use toolstack::backend::Backend;
use toolstack::db::Db;
use toolstack::host::{self, HostConfig};

fn xapi() -> Arc<Xapi> {
    static HOST: OnceLock<Arc<Backend>> = OnceLock::new();
    let backend = HOST.get_or_init(|| Arc::new(Backend::simulated(16 << 30, 1 << 30, 4).unwrap()));
    let db = Db::in_memory();
    host::bootstrap(&db, &HostConfig::simulated()).unwrap();
    Xapi::new(db, Arc::clone(backend), Credentials::new("root", "pw").unwrap()).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let x = xapi();
    let out = toolstack::server::handle_xmlrpc(&x, data);
    // A method response: a result or a fault.
    let _response = toolstack::xmlrpc::parse_response(&out).expect("the server's answer parses");
    let x = xapi();
    let out = toolstack::server::handle_jsonrpc(&x, data);
    serde_json::from_str::<serde_json::Value>(&out).expect("the server's answer is JSON");
});
