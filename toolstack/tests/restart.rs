//! Every acknowledged change survives `kill -9` of the daemon.

#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::Daemon;
use toolstack::value::Value;

fn s(x: &str) -> Value {
    Value::str(x)
}

fn record(pairs: &[(&str, Value)]) -> Value {
    Value::Struct(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

#[test]
fn acknowledged_changes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let mut c = d.client();
    let net = c
        .call(
            "network.create",
            &[record(&[("name_label", s("persist-net"))])],
        )
        .unwrap();
    let vm = c
        .call(
            "VM.create",
            &[record(&[
                ("name_label", s("persist-vm")),
                ("memory_static_max", s("268435456")),
                ("memory_dynamic_max", s("268435456")),
                ("memory_dynamic_min", s("268435456")),
                ("VCPUs_max", s("1")),
                ("VCPUs_at_startup", s("1")),
            ])],
        )
        .unwrap();
    let vif = c
        .call(
            "VIF.create",
            &[record(&[
                ("VM", vm.clone()),
                ("network", net.clone()),
                ("device", s("0")),
            ])],
        )
        .unwrap();
    c.call("VM.add_to_other_config", &[vm.clone(), s("k"), s("v")])
        .unwrap();
    c.call("VM.set_name_description", &[vm.clone(), s("described")])
        .unwrap();
    c.call(
        "VM.start",
        &[vm.clone(), Value::Bool(false), Value::Bool(false)],
    )
    .unwrap();
    let mac = c.call("VIF.get_MAC", std::slice::from_ref(&vif)).unwrap();

    // Writers racing the kill: whatever was acknowledged must be there afterwards.
    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let mut c = d.client();
        let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
        writers.push(std::thread::spawn(move || {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let label = format!("w{w}-{i}");
                match c.call(
                    "network.create",
                    &[record(&[("name_label", Value::String(label.clone()))])],
                ) {
                    Ok(r) => acked
                        .lock()
                        .unwrap()
                        .push((r.as_str().unwrap().to_owned(), label)),
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill while the writers are still running: their calls in flight fail, the connection
    // dies and they stop.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while acked.lock().unwrap().len() < 40 {
        assert!(
            std::time::Instant::now() < deadline,
            "writers made no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    d.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 40, "writers made progress before the kill");

    let d = Daemon::start(dir.path());
    let mut c = d.client();
    assert_eq!(
        c.call("network.get_name_label", std::slice::from_ref(&net))
            .unwrap(),
        s("persist-net")
    );
    assert_eq!(
        c.call("VM.get_name_description", std::slice::from_ref(&vm))
            .unwrap(),
        s("described")
    );
    let oc = c
        .call("VM.get_other_config", std::slice::from_ref(&vm))
        .unwrap();
    assert_eq!(oc.as_struct().unwrap().get("k"), Some(&s("v")));
    assert_eq!(
        c.call("VIF.get_MAC", std::slice::from_ref(&vif)).unwrap(),
        mac
    );
    let vifs = c
        .call("network.get_VIFs", std::slice::from_ref(&net))
        .unwrap();
    assert_eq!(vifs.as_array().unwrap(), std::slice::from_ref(&vif));
    // The simulated host lost its domains with the daemon: the VM is noticed Halted.
    assert_eq!(
        c.call("VM.get_power_state", std::slice::from_ref(&vm))
            .unwrap(),
        s("Halted")
    );
    assert_eq!(
        c.call("VIF.get_currently_attached", &[vif]).unwrap(),
        Value::Bool(false)
    );
    let all: BTreeMap<String, Value> = c
        .call("network.get_all_records", &[])
        .unwrap()
        .as_struct()
        .unwrap()
        .clone();
    for (r, label) in &acked {
        let rec = all
            .get(r)
            .unwrap_or_else(|| panic!("acknowledged network {label} lost"));
        assert_eq!(
            rec.as_struct().unwrap()["name_label"],
            Value::String(label.clone())
        );
    }
    // It starts again, and sessions from before the restart are gone.
    c.call(
        "VM.start",
        &[vm.clone(), Value::Bool(false), Value::Bool(false)],
    )
    .unwrap();
    assert_eq!(c.call("VM.get_power_state", &[vm]).unwrap(), s("Running"));
}
