//! `xe help` and the generic `<object>-param-*` commands against a running daemon, with the
//! behaviour of xe's `ocaml/xapi-cli-server/cli_operations.ml` (`make_param_funs`),
//! `cli_frontend.ml` (`rio_help`) and `cli_printer.ml` (`escape_commas`).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{wait_output, Daemon, PASSWORD};
use toolstack::value::Value;

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn xe(d: Option<&Daemon>, args: &[&str]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xe"));
    if let Some(d) = d {
        cmd.arg("--socket").arg(&d.socket);
    }
    let child = cmd
        .args(["-u", "root", "-pw", PASSWORD])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_output(child, Duration::from_secs(60));
    Out {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn ok(d: &Daemon, args: &[&str]) -> String {
    let o = xe(Some(d), args);
    assert!(o.ok, "xe {args:?} failed: {}", o.stderr);
    o.stdout
}

fn err(d: &Daemon, args: &[&str]) -> String {
    let o = xe(Some(d), args);
    assert!(!o.ok, "xe {args:?} succeeded: {}", o.stdout);
    o.stderr
}

#[test]
fn help_lists_and_describes_commands() {
    // No server needed.
    let o = xe(None, &["help"]);
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stdout.starts_with("Usage:\n  xe <command>\n"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("Common command list\n-------------------\n\n    "),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("vm-list"), "{}", o.stdout);
    let all = xe(None, &["help", "--all"]);
    assert!(all
        .stdout
        .contains("Full command list\n-----------------\n"));
    for c in [
        "vm-param-get",
        "sr-param-set",
        "vif-param-clear",
        "task-param-list",
    ] {
        assert!(all.stdout.contains(c), "{c} missing");
    }
    let one = xe(None, &["help", "vm-param-set"]);
    assert_eq!(
        one.stdout.lines().take(2).collect::<Vec<_>>(),
        [
            "command name            : vm-param-set",
            "        reqd params     : uuid"
        ]
    );
    assert_eq!(
        xe(None, &["help", "no-such-command"]).stdout,
        "Unknown command 'no-such-command'\n"
    );
    let unknown = xe(None, &["no-such-command"]);
    assert!(!unknown.ok);
    assert!(unknown.stderr.contains("Unknown command: no-such-command"));
    assert!(unknown.stderr.contains("For usage run: 'xe help'"));
}

#[test]
fn param_commands_follow_the_datamodel() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let mut c = d.client();
    let mut rec = std::collections::BTreeMap::new();
    rec.insert("name_label".to_owned(), Value::str("a,b\\c"));
    let net = c.call("network.create", &[Value::Struct(rec)]).unwrap();
    let uuid = c.call("network.get_uuid", &[net]).unwrap();
    let uuid = uuid.as_str().unwrap();
    let u = format!("uuid={uuid}");

    // --minimal escapes commas and backslashes (cli_printer.ml `escape_commas`).
    let min = ok(&d, &["network-list", &u, "params=name-label", "--minimal"]);
    assert_eq!(min, "a\\,b\\\\c\n");

    // param-set on a RW field, param-get back.
    ok(&d, &["network-param-set", &u, "name-label=web", "MTU=9000"]);
    assert_eq!(
        ok(&d, &["network-param-get", &u, "param-name=name-label"]),
        "web\n"
    );
    assert_eq!(
        ok(&d, &["network-param-get", &u, "param-name=MTU"]),
        "9000\n"
    );
    // Type checks as xe's (`Parameter MTU must be an integer`).
    assert!(err(&d, &["network-param-set", &u, "MTU=big"]).contains("must be an integer"));
    // Read-only fields are refused.
    assert!(err(&d, &["network-param-set", &u, "bridge=x"]).contains("is read-only"));
    // Maps: name:key=value, param-add, param-get with param-key, param-remove, param-clear.
    ok(&d, &["network-param-set", &u, "other-config:a=1"]);
    ok(&d, &["network-param-set", &u, "other-config:a=2"]);
    ok(
        &d,
        &["network-param-add", &u, "param-name=other-config", "b=3"],
    );
    assert_eq!(
        ok(
            &d,
            &[
                "network-param-get",
                &u,
                "param-name=other-config",
                "param-key=a"
            ]
        ),
        "2\n"
    );
    assert!(err(
        &d,
        &[
            "network-param-get",
            &u,
            "param-name=other-config",
            "param-key=zz"
        ]
    )
    .contains("Key zz not found in map"));
    ok(
        &d,
        &[
            "network-param-remove",
            &u,
            "param-name=other-config",
            "param-key=a",
        ],
    );
    assert!(err(
        &d,
        &[
            "network-param-remove",
            &u,
            "param-name=other-config",
            "param-key=a"
        ]
    )
    .contains("Key a is not in map"));
    assert_eq!(
        ok(&d, &["network-param-get", &u, "param-name=other-config"]),
        "b: 3\n"
    );
    ok(&d, &["network-param-clear", &u, "param-name=other-config"]);
    assert_eq!(
        ok(&d, &["network-param-get", &u, "param-name=other-config"]),
        "\n"
    );
    // Sets: tags.
    ok(
        &d,
        &["network-param-add", &u, "param-name=tags", "param-key=red"],
    );
    ok(
        &d,
        &["network-param-add", &u, "param-name=tags", "param-key=blue"],
    );
    let tags = ok(&d, &["network-param-get", &u, "param-name=tags"]);
    assert!(tags.contains("red") && tags.contains("blue"), "{tags}");
    ok(
        &d,
        &[
            "network-param-remove",
            &u,
            "param-name=tags",
            "param-key=red",
        ],
    );
    assert_eq!(
        ok(&d, &["network-param-get", &u, "param-name=tags"]),
        "blue\n"
    );
    assert!(err(
        &d,
        &[
            "network-param-remove",
            &u,
            "param-name=tags",
            "param-key=red"
        ]
    )
    .contains("Key red is not in the set"));
    // A read-only set cannot be added to.
    assert!(err(
        &d,
        &["network-param-add", &u, "param-name=VIFs", "param-key=x"]
    )
    .contains("read-only"));
    // param-list prints the whole record in the datamodel's order.
    let list = ok(&d, &["network-param-list", &u]);
    let first = list.lines().next().unwrap();
    assert!(first.starts_with("uuid ( RO)"), "{list}");
    let pos = |k: &str| {
        list.find(k)
            .unwrap_or_else(|| panic!("{k} missing:\n{list}"))
    };
    assert!(pos("name-label") < pos("MTU") && pos("MTU") < pos("other-config"));
    // params= prints the record's order, not the requested one.
    let l = ok(&d, &["network-list", &u, "params=MTU,name-label"]);
    assert!(
        l.find("name-label").unwrap() < l.find("MTU").unwrap(),
        "{l}"
    );
    // VMs: an explicit setter of the datamodel (VM.set_VCPUs_max) is a settable field.
    let vms = ok(
        &d,
        &[
            "vm-list",
            "is-control-domain=true",
            "params=uuid",
            "--minimal",
        ],
    );
    let dom0 = format!("uuid={}", vms.trim());
    let vcpus = ok(&d, &["vm-param-get", &dom0, "param-name=VCPUs-max"]);
    assert!(vcpus.trim().parse::<u32>().is_ok(), "{vcpus}");
    // network-destroy, then the object is gone.
    ok(&d, &["network-destroy", &u]);
    assert!(err(&d, &["network-param-list", &u]).contains("UUID_INVALID"));
    // Missing uuid=: xe's message.
    assert!(err(&d, &["vm-param-get", "param-name=VCPUs-max"])
        .contains("Required parameter not found: uuid"));
}
