//! XAPI's JSON-RPC over HTTP (`POST /jsonrpc`, as `ocaml/xapi/api_server.ml` serves it), both
//! envelopes, with JSON types: integers as numbers, errors as XAPI writes them.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{Daemon, PASSWORD};
use toolstack::value::Value;
use toolstack::Error;

/// One HTTP/1.1 POST of `body` to `/jsonrpc`; the response's status line and JSON body.
fn post(port: u16, body: &serde_json::Value) -> (String, serde_json::Value) {
    let body = body.to_string();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /jsonrpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, json) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("application/json"), "{head}");
    (
        head.lines().next().unwrap().to_owned(),
        serde_json::from_str(json).unwrap(),
    )
}

#[test]
fn json_rpc_over_http_has_json_types_in_both_envelopes() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let call = |v2: bool, method: &str, params: serde_json::Value| {
        let mut req = serde_json::json!({"method": method, "params": params, "id": "x1"});
        if v2 {
            req["jsonrpc"] = "2.0".into();
        }
        let (status, resp) = post(d.http, &req);
        assert!(status.contains("200"), "{status}");
        assert_eq!(resp["id"], "x1");
        resp
    };
    let login = call(
        false,
        "session.login_with_password",
        serde_json::json!(["root", PASSWORD, "1.0", "test"]),
    );
    assert!(login["error"].is_null(), "{login}");
    let session = login["result"].as_str().unwrap().to_owned();
    // 2.0: integers are numbers (XAPI's Jsonrpc marshalling of Rpc.Int).
    let vms = call(true, "VM.get_all_records", serde_json::json!([session]));
    let (_, dom0) = vms["result"].as_object().unwrap().iter().next().unwrap();
    assert!(
        dom0["memory_static_max"].is_i64(),
        "{}",
        dom0["memory_static_max"]
    );
    assert!(dom0["VCPUs_max"].is_i64());
    assert!(dom0["HVM_shadow_multiplier"].is_f64());
    assert!(dom0["is_a_template"].is_boolean());
    // 1.0: the same values, `error: null` beside the result.
    let v1 = call(false, "VM.get_all_records", serde_json::json!([session]));
    assert!(v1["error"].is_null());
    assert_eq!(v1["result"], vms["result"]);
    // Errors: 2.0 as api_server.ml writes them (code 1, message = the XAPI code, data = the
    // parameters), 1.0 as the ErrorDescription list.
    let e2 = call(
        true,
        "VM.get_record",
        serde_json::json!([session, "OpaqueRef:nope"]),
    );
    assert_eq!(e2["error"]["code"], 1);
    assert_eq!(e2["error"]["message"], "HANDLE_INVALID");
    assert_eq!(
        e2["error"]["data"],
        serde_json::json!(["VM", "OpaqueRef:nope"])
    );
    assert!(e2.get("result").is_none());
    let e1 = call(
        false,
        "VM.get_record",
        serde_json::json!([session, "OpaqueRef:nope"]),
    );
    assert_eq!(
        e1["error"],
        serde_json::json!(["HANDLE_INVALID", "VM", "OpaqueRef:nope"])
    );
    assert!(e1["result"].is_null());
    // Integers given as JSON numbers are accepted where the datamodel has an int.
    let vm = dom0["uuid"].as_str().unwrap();
    let r = call(true, "VM.get_by_uuid", serde_json::json!([session, vm]));
    let r = r["result"].as_str().unwrap().to_owned();
    let set = call(
        true,
        "VM.set_user_version",
        serde_json::json!([session, r, 7]),
    );
    assert!(set.get("error").is_none(), "{set}");
    let got = call(true, "VM.get_user_version", serde_json::json!([session, r]));
    assert_eq!(got["result"], 7);
}

#[test]
fn get_all_records_written_from_the_database_types_records_as_get_record_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let mut c = d.client();
    // `get_all_records` takes the path straight from the database, `get_record` the generic
    // one: each record reads the same, types included, in both envelopes.
    let all = c.call_json("VM.get_all_records", &[]).unwrap();
    let all = all.as_struct().unwrap();
    assert!(!all.is_empty());
    for (r, rec) in all {
        let one = c
            .call_json("VM.get_record", &[Value::str(r.clone())])
            .unwrap();
        assert_eq!(&one, rec, "{r}");
        assert!(matches!(
            rec.as_struct().unwrap()["VCPUs_max"],
            Value::Int(_)
        ));
    }
    let v1 = |session: &str| serde_json::json!({"method": "VM.get_all_records", "params": [session], "id": 3});
    let (_, one) = post(d.http, &v1(c.session().unwrap()));
    assert!(one["error"].is_null());
    assert_eq!(one["id"], 3);
    let (_, two) = post(d.http, &{
        let mut b = v1(c.session().unwrap());
        b["jsonrpc"] = "2.0".into();
        b
    });
    assert_eq!(one["result"], two["result"]);
    // A bad session takes the generic path and its error.
    let (_, bad) = post(d.http, &v1("OpaqueRef:nope"));
    assert_eq!(bad["error"][0], "SESSION_INVALID", "{bad}");
}

#[test]
fn the_client_speaks_json_rpc_with_xapi_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let mut c = d.client();
    let vms = c.call_json("VM.get_all", &[]).unwrap();
    assert_eq!(vms, c.call("VM.get_all", &[]).unwrap());
    match c.call_json("VM.get_record", &[Value::str("OpaqueRef:nope")]) {
        Err(Error::Api(e)) => {
            assert_eq!(e.code, "HANDLE_INVALID");
            assert_eq!(e.params, ["VM", "OpaqueRef:nope"]);
        }
        other => panic!("{other:?}"),
    }
}
