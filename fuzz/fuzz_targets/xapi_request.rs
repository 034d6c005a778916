//! The XenAPI server on arbitrary request bodies (XML-RPC and JSON-RPC): it must never panic,
//! and every XML-RPC answer must itself parse as a method response.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use toolstack::api::{Credentials, Xapi};
use toolstack::backend::Backend;
use toolstack::db::Db;
use toolstack::host::{self, HostConfig};

fn xapi() -> &'static Arc<Xapi> {
    static X: OnceLock<Arc<Xapi>> = OnceLock::new();
    X.get_or_init(|| {
        let db = Db::in_memory();
        host::bootstrap(&db, &HostConfig::simulated()).unwrap();
        let backend = Arc::new(Backend::simulated(16 << 30, 1 << 30, 4).unwrap());
        Xapi::new(db, backend, Credentials::new("root", "pw").unwrap()).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let x = xapi();
    let out = toolstack::server::handle_xmlrpc(x, data);
    toolstack::xmlrpc::parse_response(&out).expect("the server's answer parses");
    let out = toolstack::server::handle_jsonrpc(x, data);
    serde_json::from_str::<serde_json::Value>(&out).expect("the server's answer is JSON");
});
