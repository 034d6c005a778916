//! The XenAPI server on arbitrary request bodies (XML-RPC and JSON-RPC): it must never panic,
//! and every XML-RPC answer must itself parse as a method response.
//!
//! Hermetic: a fresh database, host and server per input (a request may log in, create or
//! destroy objects), so a crash file reproduces alone.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use toolstack::api::{Credentials, Xapi};
use toolstack::backend::SimBackend;
use toolstack::db::Db;
use toolstack::host::{self, HostConfig};

fn xapi() -> Arc<Xapi> {
    let db = Db::in_memory();
    host::bootstrap(&db, &HostConfig::simulated()).unwrap();
    let backend = Arc::new(SimBackend::new(16 << 30, 1 << 30));
    Xapi::new(db, backend, Credentials::new("root", "pw").unwrap()).unwrap()
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
