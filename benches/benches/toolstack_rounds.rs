//! The toolstack at 10,000 VMs in interleaved rounds: each round times every step once, in
//! turn, and the medians are printed with each step's per-round ratio to the in-process peer
//! (so load on a shared machine falls on all of them alike).
//!
//! Steps:
//! - `in-process`: `VM.get_all_records` dispatched in process, the reply as a value tree
//!   (the peer);
//! - `xml-rpc call`, `json-rpc call`: the whole call as a client sees it, from the request
//!   to the parsed records (`Value`s) on the client side, over HTTP on TCP;
//! - `xe vm-list`: the `xe` binary run against the server (spawn, login, the call, output to
//!   a pipe read to its end, logout, exit);
//! - diagnostics: the server's XML-RPC reply alone (records encoded anew, and as kept), the
//!   client's parse of that reply alone, and `xe vm-list` run in process;
//! - `event.from` over XML-RPC after one change, on a server with 100 VMs and on one with
//!   the full count: it should cost what changed, not what exists.
//!
//! `cargo build --profile bench -p toolstack --bin xe && cargo bench -p benches --bench
//! toolstack_rounds`; `XE` names another xe binary; `VMS` and `ROUNDS` in the environment
//! change the size (10,000) and the number of rounds (11).

#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use toolstack::db::Db;
use toolstack::value::Value;

#[path = "toolstack/common.rs"]
mod common;

use common::{add_vms, client, server, sim, xe_vm_list_args, Server};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `xe` binary: `$XE`, or the one cargo built next to this bench's directory.
fn xe_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("XE") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("xe");
    p.exists().then_some(p)
}

/// Runs the xe binary to its end; its output.
fn run_xe(xe: &Path, argv: &[String]) -> Vec<u8> {
    let out = Command::new(xe)
        .args(argv)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("xe runs");
    assert!(out.status.success(), "xe failed: {:?}", out.status);
    out.stdout
}

/// A step of a round: runs once and says how long the part it times took.
type Step<'a> = (&'static str, Box<dyn FnMut() -> Duration + 'a>);

/// A step timed whole.
fn whole<'a>(name: &'static str, mut f: impl FnMut() + 'a) -> Step<'a> {
    (
        name,
        Box::new(move || {
            let t = Instant::now();
            f();
            t.elapsed()
        }),
    )
}

/// A change to a VM of `s` (untimed), then `event.from` over `cl` with the token from before
/// the change (timed): exactly one event comes back.
fn event_step<'a>(
    name: &'static str,
    s: &'a Server,
    mut cl: toolstack::client::Client,
) -> Step<'a> {
    let vm = s
        .xapi
        .call("VM.get_all", std::slice::from_ref(&s.session))
        .unwrap()
        .as_array()
        .unwrap()[1]
        .clone();
    let classes = Value::Array(vec![Value::str("*")]);
    let mut n = 0u64;
    let step = move || {
        let token = s
            .xapi
            .call("event.get_current_id", std::slice::from_ref(&s.session))
            .unwrap();
        n += 1;
        s.xapi
            .call(
                "VM.set_name_description",
                &[s.session.clone(), vm.clone(), Value::String(n.to_string())],
            )
            .unwrap();
        let t = Instant::now();
        let r = cl
            .call("event.from", &[classes.clone(), token, Value::Double(0.0)])
            .unwrap();
        assert_eq!(
            r.as_struct().unwrap()["events"].as_array().unwrap().len(),
            1,
            "one change, one event"
        );
        t.elapsed()
    };
    (name, Box::new(step))
}

fn main() {
    // `cargo test` runs bench targets without `--bench`: one small round, as a check that
    // it works, not a measurement.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let vms = if smoke { 100 } else { env("VMS", 10_000) };
    let rounds = if smoke { 1 } else { env("ROUNDS", 11) };
    let s = server(sim(), Db::in_memory());
    add_vms(&s, vms);
    let small = server(sim(), Db::in_memory());
    add_vms(&small, 100);
    let mut cl = client(s.port);
    let mut jcl = client(s.port);
    let call =
        toolstack::xmlrpc::encode_call("VM.get_all_records", std::slice::from_ref(&s.session));
    let reply = toolstack::server::handle_xmlrpc(&s.xapi, call.as_bytes());
    let argv = xe_vm_list_args(&s);
    let xe = xe_binary();

    // Every path gives the same records.
    let want = s
        .xapi
        .call("VM.get_all_records", std::slice::from_ref(&s.session))
        .unwrap();
    assert_eq!(cl.call("VM.get_all_records", &[]).unwrap(), want);
    let json = jcl.call_json("VM.get_all_records", &[]).unwrap();
    assert_eq!(
        json.as_struct().unwrap().len(),
        vms + 1,
        "JSON-RPC lists every VM and dom0"
    );
    let mut listed = Vec::new();
    toolstack::cli::run(&argv, &mut listed).unwrap();
    let count = |out: &[u8]| String::from_utf8_lossy(out).matches("uuid ( RO)").count();
    assert_eq!(
        count(&listed),
        vms + 1,
        "xe vm-list shows every VM and dom0"
    );
    match &xe {
        Some(xe) => assert_eq!(count(&run_xe(xe, &argv)), vms + 1, "the xe binary too"),
        None => println!(
            "SKIP xe vm-list (binary): no xe binary next to this bench; build it with \
             `cargo build --profile bench -p toolstack --bin xe` or name one in XE"
        ),
    }
    println!(
        "{vms} VMs, XML-RPC reply {} KiB, JSON-RPC reply {} KiB, {rounds} interleaved rounds, load {}",
        reply.len() / 1024,
        toolstack::server::handle_jsonrpc(&s.xapi, json_body(&s.session).as_bytes())
        .len()
            / 1024,
        load()
    );

    let jbody = json_body(&s.session);
    let mut steps: Vec<Step<'_>> = vec![
        whole("in-process (value tree)", || {
            std::hint::black_box(
                s.xapi
                    .call("VM.get_all_records", std::slice::from_ref(&s.session))
                    .unwrap(),
            );
        }),
        whole("xml-rpc call", move || {
            std::hint::black_box(cl.call("VM.get_all_records", &[]).unwrap());
        }),
        whole("json-rpc call", move || {
            std::hint::black_box(jcl.call_json("VM.get_all_records", &[]).unwrap());
        }),
    ];
    if let Some(xe) = xe.clone() {
        let argv = argv.clone();
        steps.push(whole("xe vm-list (binary)", move || {
            std::hint::black_box(run_xe(&xe, &argv));
        }));
    }
    steps.extend([
        whole("  server XML reply, cold", || {
            // Every record encoded anew (as after each one changed).
            s.xapi.db().drop_encodings();
            std::hint::black_box(toolstack::server::handle_xmlrpc(&s.xapi, call.as_bytes()));
        }),
        whole("  server XML reply", || {
            std::hint::black_box(toolstack::server::handle_xmlrpc(&s.xapi, call.as_bytes()));
        }),
        whole("  client XML parse", || {
            std::hint::black_box(toolstack::xmlrpc::parse_response(&reply).unwrap().unwrap());
        }),
        whole("  server JSON reply", || {
            std::hint::black_box(toolstack::server::handle_jsonrpc(&s.xapi, jbody.as_bytes()));
        }),
        whole("  xe vm-list in process", || {
            let mut out = Vec::with_capacity(1 << 20);
            toolstack::cli::run(&argv, &mut out).unwrap();
            std::hint::black_box(out);
        }),
        event_step("event.from, 100 VMs", &small, client(small.port)),
        event_step("event.from, all VMs", &s, client(s.port)),
    ]);
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); steps.len()];
    for _ in 0..rounds {
        for (i, (_, f)) in steps.iter_mut().enumerate() {
            times[i].push(f());
        }
    }
    let ratio = |a: &[Duration], b: &[Duration]| {
        let mut r: Vec<f64> = a
            .iter()
            .zip(b)
            .map(|(t, p)| t.as_secs_f64() / p.as_secs_f64())
            .collect();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    let find = |name: &str| steps.iter().position(|(n, _)| *n == name).unwrap();
    for (i, (name, _)) in steps.iter().enumerate() {
        let m = median(times[i].clone());
        if name.starts_with("event.from") {
            println!("{name:<26} median {:>8.3} ms", m.as_secs_f64() * 1e3);
        } else {
            // Per-round ratio to the in-process peer of the same round, then its median.
            println!(
                "{name:<26} median {:>8.1} ms  ({:.2}x the in-process peer, median of rounds)",
                m.as_secs_f64() * 1e3,
                ratio(&times[i], &times[0])
            );
        }
    }
    println!(
        "event.from at {} VMs / at 100 VMs: {:.2}x (median of rounds); load {}",
        vms,
        ratio(
            &times[find("event.from, all VMs")],
            &times[find("event.from, 100 VMs")]
        ),
        load()
    );
}

/// A JSON-RPC 2.0 `VM.get_all_records` request body.
fn json_body(session: &Value) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","method":"VM.get_all_records","params":[{:?}],"id":1}}"#,
        session.as_str().unwrap_or_default()
    )
}
