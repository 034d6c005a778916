//! What the toolstack benches share: a XenAPI server on the simulated host, clients, VMs.

use std::sync::Arc;

use toolstack::api::{Credentials, Xapi};
use toolstack::backend::Backend;
use toolstack::client::{Client, Endpoint};
use toolstack::db::Db;
use toolstack::host::{self, HostConfig};
use toolstack::value::Value;

const GIB: u64 = 1 << 30;

/// xenctrl over xen-sim (16 GiB, 1 GiB for dom0) with our xenstored in process.
pub fn sim() -> Arc<Backend> {
    Arc::new(Backend::simulated(16 * GIB, GIB, 4).unwrap())
}

/// A XenAPI server on a port, with a session of its own for in-process calls.
pub struct Server {
    /// The server.
    pub xapi: Arc<Xapi>,
    /// Its plain-HTTP port on 127.0.0.1.
    pub port: u16,
    /// A session for in-process calls.
    pub session: Value,
}

/// Bootstraps the host in `db` and serves XML-RPC on a free port of 127.0.0.1.
pub fn server(backend: Arc<Backend>, db: Db) -> Server {
    host::bootstrap(&db, &HostConfig::simulated()).unwrap();
    let xapi = Xapi::new(db, backend, Credentials::new("root", "pw").unwrap()).unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let x = Arc::clone(&xapi);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            toolstack::server::serve_tcp(l, x, None).await;
        });
    });
    let session = xapi
        .call(
            "session.login_with_password",
            &[Value::str("root"), Value::str("pw")],
        )
        .unwrap();
    Server {
        xapi,
        port,
        session,
    }
}

/// A logged-in client of the server on `port`.
pub fn client(port: u16) -> Client {
    let mut c = Client::new(Endpoint::Tcp("127.0.0.1".into(), port));
    c.login("root", "pw").unwrap();
    c
}

/// Creates `n` halted VMs (`vm-<i>`, 256 MiB, 1 vCPU).
pub fn add_vms(s: &Server, n: usize) {
    for i in 0..n {
        let m = Value::str("268435456");
        let rec = Value::Struct(
            [
                ("name_label", Value::String(format!("vm-{i}"))),
                ("memory_static_max", m.clone()),
                ("memory_dynamic_max", m.clone()),
                ("memory_dynamic_min", m),
                ("VCPUs_max", Value::str("1")),
                ("VCPUs_at_startup", Value::str("1")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        );
        s.xapi.call("VM.create", &[s.session.clone(), rec]).unwrap();
    }
}

/// `xe vm-list` against `s` over plain HTTP, as xe's own argument list.
pub fn xe_vm_list_args(s: &Server) -> Vec<String> {
    [
        "-s",
        "127.0.0.1",
        "-p",
        &s.port.to_string(),
        "--nossl",
        "-pw",
        "pw",
        "vm-list",
    ]
    .iter()
    .map(|x| (*x).to_owned())
    .collect()
}
