//! Conformance with XAPI's published datamodel, generated from the same tables as the server
//! (`toolstack/src/datamodel/generated.rs`, from xen-api's `doc/data/xenapi.json` and
//! `ocaml/idl/datamodel_errors.ml`): every implemented class's `get_all_records` carries exactly
//! the datamodel's fields with its wire types, over XML-RPC and JSON-RPC (1.0 and 2.0); every
//! implemented message counts its parameters as XAPI does; errors carry the datamodel's
//! parameter lists.

#![allow(clippy::cloned_ref_to_slice_refs)]

use std::collections::BTreeSet;
use std::sync::Arc;

use toolstack::api::{Credentials, Xapi};
use toolstack::backend::Backend;
use toolstack::datamodel::xenapi::{self, State, Type};
use toolstack::datamodel::{self, Known};
use toolstack::db::{Db, Read, Record};
use toolstack::host::{self, HostConfig};
use toolstack::server::{handle_jsonrpc, handle_xmlrpc};
use toolstack::value::Value;
use toolstack::{xmlrpc, ApiError};

fn xapi() -> (Arc<Xapi>, Value) {
    let db = Db::in_memory();
    host::bootstrap(&db, &HostConfig::simulated()).unwrap();
    let be = Arc::new(Backend::simulated(4 << 30, 1 << 30, 4).unwrap());
    let x = Xapi::new(db, be, Credentials::new("root", "pw").unwrap()).unwrap();
    let s = x
        .call(
            "session.login_with_password",
            &[Value::str("root"), Value::str("pw")],
        )
        .unwrap();
    // One object of every implemented class that has none yet, with the model's defaults.
    x.db()
        .write(|tx| {
            for k in Known::ALL {
                if tx.all(k.name()).is_empty() {
                    tx.create(k.class(), Record::new());
                }
            }
            Ok::<_, ApiError>(())
        })
        .unwrap();
    (x, s)
}

/// Whether an XML-RPC value has the wire form of datamodel type `t` (XAPI: `int` as a decimal
/// string, `float` as `<double>`, `datetime` as `<dateTime.iso8601>`, references and enums as
/// strings; ocaml-rpc's `Xmlrpc`).
fn xml_fits(v: &Value, t: &Type) -> bool {
    match (t, v) {
        (Type::String, Value::String(_)) => true,
        (Type::Int, Value::String(s)) => s.parse::<i64>().is_ok(),
        (Type::Float, Value::Double(_)) => true,
        (Type::Bool, Value::Bool(_)) => true,
        (Type::DateTime, Value::DateTime(_)) => true,
        (Type::Enum(_), Value::String(s)) => t.enum_values().unwrap().contains(&s.as_str()),
        (Type::Ref(_), Value::String(s)) => s.starts_with("OpaqueRef:"),
        (Type::Set(e), Value::Array(a)) => a.iter().all(|x| xml_fits(x, e)),
        (Type::Map(k, e), Value::Struct(m)) => m
            .iter()
            .all(|(key, x)| xml_fits(&Value::str(key.clone()), k) && xml_fits(x, e)),
        (Type::Option(e), _) => xml_fits(v, e),
        _ => false,
    }
}

/// Whether a JSON value has the wire form of datamodel type `t` on XAPI's JSON-RPC (ocaml-rpc's
/// `Jsonrpc`: `int` and `float` as numbers, `datetime` as a string).
fn json_fits(v: &serde_json::Value, t: &Type) -> bool {
    use serde_json::Value as J;
    match (t, v) {
        (Type::String | Type::DateTime, J::String(_)) => true,
        (Type::Int, J::Number(n)) => n.is_i64(),
        (Type::Float, J::Number(_)) => true,
        (Type::Bool, J::Bool(_)) => true,
        (Type::Enum(_), J::String(s)) => t.enum_values().unwrap().contains(&s.as_str()),
        (Type::Ref(_), J::String(s)) => s.starts_with("OpaqueRef:"),
        (Type::Set(e), J::Array(a)) => a.iter().all(|x| json_fits(x, e)),
        (Type::Map(k, e), J::Object(m)) => m.iter().all(|(key, x)| {
            // Keys are strings on the wire; an int key is its decimal form.
            let key_ok = match k {
                Type::Int => key.parse::<i64>().is_ok(),
                Type::Ref(_) => key.starts_with("OpaqueRef:"),
                Type::Enum(_) => k.enum_values().unwrap().contains(&key.as_str()),
                _ => true,
            };
            key_ok && json_fits(x, e)
        }),
        (Type::Option(e), _) => json_fits(v, e),
        _ => false,
    }
}

fn xml_call(x: &Arc<Xapi>, method: &str, params: &[Value]) -> Value {
    let body = handle_xmlrpc(x, xmlrpc::encode_call(method, params).as_bytes());
    let v = xmlrpc::parse_response(&body).unwrap().unwrap();
    let m = v.as_struct().unwrap();
    assert_eq!(m["Status"], Value::str("Success"), "{method}: {m:?}");
    m["Value"].clone()
}

fn json_call(x: &Arc<Xapi>, v2: bool, method: &str, params: &[Value]) -> serde_json::Value {
    let params: Vec<_> = params.iter().map(Value::to_json).collect();
    let req = if v2 {
        serde_json::json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 7})
    } else {
        serde_json::json!({"method": method, "params": params, "id": 7})
    };
    let resp: serde_json::Value =
        serde_json::from_str(&handle_jsonrpc(x, req.to_string().as_bytes())).unwrap();
    assert_eq!(resp["id"], 7, "{resp}");
    if v2 {
        assert_eq!(resp["jsonrpc"], "2.0", "{resp}");
        assert!(resp.get("error").is_none(), "{method}: {resp}");
    } else {
        assert!(resp["error"].is_null(), "{method}: {resp}");
    }
    resp["result"].clone()
}

#[test]
fn get_all_records_has_exactly_the_datamodels_fields_and_wire_types() {
    let (x, s) = xapi();
    let (mut classes, mut fields) = (0, 0);
    for k in Known::ALL {
        let def = xenapi::class_def(k.name()).unwrap();
        let want: BTreeSet<&str> = def.fields.iter().map(|f| f.name).collect();
        let method = format!("{}.get_all_records", def.name);
        // XML-RPC (the fast encoder of get_all_records included).
        let all = xml_call(&x, &method, &[s.clone()]);
        let all = all.as_struct().unwrap();
        assert!(!all.is_empty(), "{method}: no objects");
        for (r, rec) in all {
            let rec = rec.as_struct().unwrap();
            let got: BTreeSet<&str> = rec.keys().map(String::as_str).collect();
            assert_eq!(got, want, "{method} over XML-RPC: fields of {r}");
            for f in def.fields {
                assert!(
                    xml_fits(&rec[f.name], f.ty),
                    "{}.{} over XML-RPC: {:?} is not a {}",
                    def.name,
                    f.name,
                    rec[f.name],
                    f.ty
                );
            }
        }
        // JSON-RPC, both envelopes.
        for v2 in [false, true] {
            let all = json_call(&x, v2, &method, &[s.clone()]);
            for (r, rec) in all.as_object().unwrap() {
                let rec = rec.as_object().unwrap();
                let got: BTreeSet<&str> = rec.keys().map(String::as_str).collect();
                assert_eq!(
                    got, want,
                    "{method} over JSON-RPC (v2: {v2}): fields of {r}"
                );
                for f in def.fields {
                    assert!(
                        json_fits(&rec[f.name], f.ty),
                        "{}.{} over JSON-RPC: {} is not a {}",
                        def.name,
                        f.name,
                        rec[f.name],
                        f.ty
                    );
                }
            }
        }
        classes += 1;
        fields += def.fields.len();
    }
    println!("conformance: {classes} classes, {fields} fields, every one over XML-RPC and JSON-RPC 1.0/2.0");
    assert_eq!(classes, Known::ALL.len());
}

#[test]
fn fields_xapi_scripts_read_exist_with_xapi_defaults() {
    // The examples: record["snapshots"], record["guest_metrics"], host["host_CPUs"].
    let (x, s) = xapi();
    let vms = xml_call(&x, "VM.get_all_records", &[s.clone()]);
    let (_, dom0) = vms.as_struct().unwrap().iter().next().unwrap();
    let dom0 = dom0.as_struct().unwrap();
    assert_eq!(dom0["snapshots"], Value::Array(vec![]));
    assert_eq!(dom0["guest_metrics"], Value::str("OpaqueRef:NULL"));
    // datamodel_vm.ml: HVM_shadow_multiplier defaults to 1.0, hardware_platform_version to 0.
    assert_eq!(dom0["HVM_shadow_multiplier"], Value::Double(1.0));
    assert_eq!(dom0["hardware_platform_version"], Value::str("0"));
    let hosts = json_call(&x, true, "host.get_all_records", &[s.clone()]);
    let (_, h) = hosts.as_object().unwrap().iter().next().unwrap();
    assert_eq!(h["host_CPUs"], serde_json::json!([]));
    // Integers are JSON numbers on XAPI's JSON-RPC.
    assert!(
        h["API_version_major"].is_i64(),
        "{}",
        h["API_version_major"]
    );
    let vm = json_call(&x, false, "VM.get_all", &[s.clone()]);
    let vm = Value::from_json(&vm[0]);
    let mem = json_call(
        &x,
        true,
        "VM.get_memory_static_max",
        &[s.clone(), vm.clone()],
    );
    assert!(mem.as_i64().is_some_and(|m| m > 0), "{mem}");
    let mem_xml = xml_call(&x, "VM.get_memory_static_max", &[s.clone(), vm]);
    assert_eq!(mem_xml.as_str().unwrap(), mem.to_string());
}

#[test]
fn parameter_counts_are_xapis_for_every_implemented_message() {
    let (x, _) = xapi();
    let (mut implemented, mut total) = (0, 0);
    let mut wrong = Vec::new();
    for k in Known::ALL {
        let def = xenapi::class_def(k.name()).unwrap();
        for m in def.messages.iter().filter(|m| m.state != State::Removed) {
            total += 1;
            let wire = format!("{}.{}", def.name, m.name);
            // No parameters at all: nothing runs; XAPI answers the count mismatch with
            // `List.length __params - 1` received (gen_server.ml).
            let e = x.call(&wire, &[]).unwrap_err();
            if e.code == "MESSAGE_METHOD_UNKNOWN" {
                continue;
            }
            implemented += 1;
            // Parameters with defaults are not expected (datamodel::PARAM_DEFAULTS).
            let expected = datamodel::expected_params(&wire).unwrap();
            let received = if m.takes_session() { "-1" } else { "0" };
            let want = [wire.clone(), expected.to_string(), received.to_owned()];
            if e.code != "MESSAGE_PARAMETER_COUNT_MISMATCH" || e.params != want {
                wrong.push(format!("{wire}: {e} (want {want:?})"));
            }
        }
    }
    println!("conformance: {implemented} of {total} datamodel messages of the implemented classes answered");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(implemented > 200, "{implemented}");
}

#[test]
fn error_codes_and_parameters_match_the_datamodels_error_table() {
    // Every code the crate names (`error::codes`) is in datamodel_errors.ml.
    let src = include_str!("../src/error.rs");
    let mut named = 0;
    for line in src.lines() {
        let Some(rest) = line.trim().strip_prefix("pub const ") else {
            continue;
        };
        let code = rest.split('"').nth(1).unwrap();
        assert!(xenapi::error_def(code).is_some(), "{code}");
        named += 1;
    }
    assert!(named > 20, "{named}");
    // Failures provoked through the API carry exactly the table's parameter count.
    let (x, s) = xapi();
    let vm = x
        .call("VM.get_all", &[s.clone()])
        .unwrap()
        .as_array()
        .unwrap()[0]
        .clone();
    let bad_ref = Value::str("OpaqueRef:00000000-0000-0000-0000-000000000000");
    let cases: Vec<(&str, Vec<Value>)> = vec![
        ("VM.start", vec![s.clone()]),
        ("VM.get_record", vec![s.clone(), bad_ref.clone()]),
        ("VM.get_by_uuid", vec![s.clone(), Value::str("nope")]),
        ("VM.no_such_message", vec![s.clone()]),
        ("VM.get_all", vec![Value::str("OpaqueRef:bad-session")]),
        (
            "VM.set_VCPUs_max",
            vec![s.clone(), vm.clone(), Value::Bool(true)],
        ),
        (
            "VM.start",
            vec![s.clone(), vm.clone(), false.into(), false.into()],
        ),
        (
            "session.login_with_password",
            vec![Value::str("root"), Value::str("wrong")],
        ),
    ];
    for (m, p) in cases {
        let e = x.call(m, &p).unwrap_err();
        let def = xenapi::error_def(&e.code).unwrap_or_else(|| panic!("{m}: {e} not in the table"));
        // XAPI's own code differs from its table here: ocaml/xapi/xapi_session.ml raises
        // SESSION_AUTHENTICATION_FAILED with [uname; msg] where datamodel_errors.ml declares
        // none; clients see the code's two parameters.
        let want = match e.code.as_str() {
            "SESSION_AUTHENTICATION_FAILED" => 2,
            _ => def.params.len(),
        };
        assert_eq!(e.params.len(), want, "{m}: {e} against {:?}", def.params);
    }
    // gen_server.ml: VM.start's expected count is 3 (vm, start_paused, force), received 1.
    let e = x.call("VM.start", &[s.clone(), vm]).unwrap_err();
    assert_eq!(e.params, ["VM.start", "3", "1"]);
}

#[test]
fn event_from_over_json_rpc_types_snapshots_by_their_class() {
    // event.from's batch (datamodel.ml: custom marshaller) over JSON-RPC: the event's `id` and
    // the snapshot's ints are numbers, the snapshot has the class's fields.
    let (x, s) = xapi();
    let batch = json_call(
        &x,
        true,
        "event.from",
        &[
            s,
            Value::Array(vec![Value::str("vm")]),
            Value::str(""),
            Value::Double(0.0),
        ],
    );
    let events = batch["events"].as_array().unwrap();
    assert!(!events.is_empty(), "{batch}");
    assert!(batch["token"].is_string(), "{batch}");
    let vm = xenapi::class_def("VM").unwrap();
    for e in events {
        assert!(e["id"].is_i64(), "{e}");
        let snap = e["snapshot"].as_object().unwrap();
        assert_eq!(snap.len(), vm.fields.len());
        for f in vm.fields {
            assert!(
                json_fits(&snap[f.name], f.ty),
                "VM.{} in an event: {}",
                f.name,
                snap[f.name]
            );
        }
    }
}

/// The source files of the crate, for the static checks below.
fn sources(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("generated.rs") {
            out.push((
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            ));
        }
    }
}

/// Top-level comma-separated items of an array literal's body.
fn count_items(body: &str) -> usize {
    let body = body.trim().trim_end_matches(',').trim();
    if body.is_empty() {
        return 0;
    }
    let (mut depth, mut quoted, mut n) = (0i32, false, 1);
    let mut prev = ' ';
    for ch in body.chars() {
        match ch {
            '"' if prev != '\\' => quoted = !quoted,
            '[' | '(' | '{' if !quoted => depth += 1,
            ']' | ')' | '}' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => n += 1,
            _ => {}
        }
        prev = ch;
    }
    n
}

#[test]
fn every_error_the_code_raises_has_the_tables_parameter_count() {
    // Every `ApiError::new(code, [..])` with a literal parameter list in the crate's sources:
    // the code is in datamodel_errors.ml and the list has the table's length.
    let consts: std::collections::HashMap<String, String> = include_str!("../src/error.rs")
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("pub const ")?;
            let name = rest.split(':').next()?.trim().to_owned();
            Some((name, rest.split('"').nth(1)?.to_owned()))
        })
        .collect();
    let mut files = Vec::new();
    sources(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let (mut checked, mut wrong) = (0, Vec::new());
    for (path, src) in &files {
        for (at, _) in src.match_indices("ApiError::new(") {
            let rest = src[at + "ApiError::new(".len()..].trim_start();
            let (code, after) = if let Some(r) = rest.strip_prefix("codes::") {
                let name: String = r
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                (consts.get(&name).cloned(), &r[name.len()..])
            } else if let Some(r) = rest.strip_prefix('"') {
                let end = r.find('"').unwrap();
                (Some(r[..end].to_owned()), &r[end + 1..])
            } else {
                continue; // a code computed at run time
            };
            let code = code.unwrap_or_else(|| panic!("{path}: unknown constant"));
            let line = src[..at].matches('\n').count() + 1;
            let Some(def) = xenapi::error_def(&code) else {
                wrong.push(format!(
                    "{path}:{line}: {code} is not in datamodel_errors.ml"
                ));
                continue;
            };
            let after = after.trim_start().trim_start_matches(',').trim_start();
            let Some(list) = after.strip_prefix('[') else {
                continue; // a list built at run time (e.g. the VIFs still on a network)
            };
            let mut depth = 1;
            let end = list
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '[' => depth += 1,
                        ']' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .unwrap()
                .0;
            let n = count_items(&list[..end]);
            // ocaml/xapi/xapi_session.ml raises SESSION_AUTHENTICATION_FAILED with
            // [uname; msg] where the table declares none.
            // ocaml/xapi/xapi_vm_lifecycle.ml raises VM_IS_TEMPLATE with [ref; op]
            // (`check_template`), VM_SNAPSHOT_WITH_QUIESCE_NOT_SUPPORTED with [ref], and
            // OTHER_OPERATION_IN_PROGRESS with [class; ref; op; task]
            // (`report_concurrent_operations_error`, xapi_vbd_helpers.ml too).
            // ocaml/xapi/xapi_xenops.ml `resume` raises VM_HAS_NO_SUSPEND_VDI with
            // ["VM"; ref].
            let want = match code.as_str() {
                "SESSION_AUTHENTICATION_FAILED" | "VM_IS_TEMPLATE" | "VM_HAS_NO_SUSPEND_VDI" => 2,
                "VM_SNAPSHOT_WITH_QUIESCE_NOT_SUPPORTED" => 1,
                "OTHER_OPERATION_IN_PROGRESS" => 4,
                _ => def.params.len(),
            };
            checked += 1;
            if n != want {
                wrong.push(format!(
                    "{path}:{line}: {code} with {n} parameters, the table has {:?}",
                    def.params
                ));
            }
        }
    }
    println!("conformance: {checked} raised errors checked against the error table");
    assert!(checked > 20, "{checked}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn trailing_parameters_with_defaults_may_be_left_out() {
    // datamodel.ml: GPU_group.create's three parameters all have defaults ("", "", {}).
    let (x, s) = xapi();
    let g = x.call("GPU_group.create", &[s.clone()]).unwrap();
    let rec = x.call("GPU_group.get_record", &[s.clone(), g]).unwrap();
    assert_eq!(rec.as_struct().unwrap()["name_label"], Value::str(""));
    // Given, they are used.
    let g = x
        .call(
            "GPU_group.create",
            &[
                s.clone(),
                Value::str("g"),
                Value::str("d"),
                Value::Struct(Default::default()),
            ],
        )
        .unwrap();
    let label = x.call("GPU_group.get_name_label", &[s.clone(), g]).unwrap();
    assert_eq!(label, Value::str("g"));
    // Login: uname and pwd are expected, version and originator have defaults.
    let p = |n: usize| vec![Value::str("root"); n];
    let e = x.call("session.login_with_password", &p(5)).unwrap_err();
    assert_eq!(e.params, ["session.login_with_password", "2", "5"]);
    let e = x.call("session.login_with_password", &p(1)).unwrap_err();
    assert_eq!(e.params, ["session.login_with_password", "2", "1"]);
    // Too few even with the defaults: XAPI's count (VGPU.create expects VM and GPU_group).
    let e = x
        .call("VGPU.create", &[s.clone(), Value::str("OpaqueRef:x")])
        .unwrap_err();
    assert_eq!(e.params, ["VGPU.create", "2", "1"]);
}

#[test]
fn storage_and_snapshot_calls_take_the_datamodels_defaults() {
    let (x, s) = xapi();
    let call = |m: &str, p: &[Value]| {
        let mut all = vec![s.clone()];
        all.extend_from_slice(p);
        x.call(m, &all)
    };
    // datamodel_vm.ml: VM.snapshot's `ignore_vdis` defaults to the empty set.
    let m = Value::str((256u64 << 20).to_string());
    let vm = call(
        "VM.create",
        &[Value::Struct(
            [
                ("name_label", Value::str("v")),
                ("memory_static_max", m.clone()),
                ("memory_dynamic_max", m.clone()),
                ("memory_dynamic_min", m),
                ("VCPUs_max", Value::str("1")),
                ("VCPUs_at_startup", Value::str("1")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        )],
    )
    .unwrap();
    let snap = call("VM.snapshot", &[vm.clone(), Value::str("s")]).unwrap();
    let of = call("VM.get_snapshot_of", &[snap]).unwrap();
    assert_eq!(of, vm);
    // datamodel.ml: VDI.snapshot/clone's `driver_params` default to {}, VDI.copy's `sr`,
    // `base_vdi` and `into_vdi` to the null reference: the call reaches the handler (a
    // VDI of an SR without a driver is not snapshotted), not the parameter count.
    let vdi = x.db().read(|v| v.all("VDI")[0].clone());
    for m in ["VDI.snapshot", "VDI.clone"] {
        let e = call(m, &[Value::str(&vdi)]).unwrap_err();
        assert_ne!(e.code, "MESSAGE_PARAMETER_COUNT_MISMATCH", "{m}: {e}");
    }
    let e = call("VDI.copy", &[Value::str(&vdi)]).unwrap_err();
    assert_eq!(e.code, "HANDLE_INVALID", "{e}");
    // Only the parameters without defaults are counted as expected.
    let e = call("VDI.copy", &[]).unwrap_err();
    assert_eq!(e.params, ["VDI.copy", "1", "0"]);
}

/// The XML encoder of `get_all_records` keeps each record's encoding: every kind of change
/// (a field, a map key, a set member, the other end of a relation, a new object) shows in
/// the next reply, which stays the generic path's answer.
#[test]
fn kept_record_encodings_follow_every_change() {
    let (x, s) = xapi();
    let same = |what: &str| {
        for class in ["VM", "VBD", "VDI"] {
            let method = format!("{class}.get_all_records");
            let fast = xml_call(&x, &method, std::slice::from_ref(&s));
            let generic = x.call(&method, std::slice::from_ref(&s)).unwrap();
            assert_eq!(fast, generic, "{class} after {what}");
        }
    };
    same("nothing");
    let vm = x.call("VM.get_all", std::slice::from_ref(&s)).unwrap();
    let vm = vm.as_array().unwrap()[0].clone();
    x.call(
        "VM.set_name_label",
        &[s.clone(), vm.clone(), Value::str("renamed <&>")],
    )
    .unwrap();
    same("a field");
    x.call(
        "VM.add_to_other_config",
        &[s.clone(), vm.clone(), Value::str("k"), Value::str("v")],
    )
    .unwrap();
    same("a map key");
    x.call("VM.add_tags", &[s.clone(), vm.clone(), Value::str("t")])
        .unwrap();
    same("a set member");
    let vdi = x.call("VDI.get_all", std::slice::from_ref(&s)).unwrap();
    let vdi = vdi.as_array().unwrap()[0].clone();
    let mut rec = std::collections::BTreeMap::new();
    for (k, v) in [
        ("VM", vm.clone()),
        ("VDI", vdi),
        ("userdevice", Value::str("7")),
        ("mode", Value::str("RW")),
        ("type", Value::str("Disk")),
        ("bootable", Value::Bool(false)),
        ("empty", Value::Bool(false)),
        ("other_config", Value::Struct(Default::default())),
        ("qos_algorithm_type", Value::str("")),
        ("qos_algorithm_params", Value::Struct(Default::default())),
    ] {
        rec.insert(k.to_owned(), v);
    }
    x.call("VBD.create", &[s.clone(), Value::Struct(rec)])
        .unwrap();
    same("a relation's other end and a new object");
    // Both paths saw the rename.
    let vms = xml_call(&x, "VM.get_all_records", std::slice::from_ref(&s));
    let rec = vms.as_struct().unwrap()[vm.as_str().unwrap()]
        .as_struct()
        .unwrap();
    assert_eq!(rec["name_label"], Value::str("renamed <&>"));
    assert_eq!(rec["tags"], Value::Array(vec![Value::str("t")]));
}
