//! perfmon's tests (`python3/tests/test_perfmon.py`) as scenarios: the classes' names are
//! kept in the test names.

use rrd::perfmon::{parse_config, reports, Monitor, ObjectKind, ObjectReport, Sense, Variable};
use rrd::updates::Updates;

const UUID: &str = "e1ae3f5d-4c8b-4575-bbb8-2af7e8a2c31e";
const NOW: f64 = 100_000.0;

fn cpus() -> ObjectReport {
    let v = |x: [f64; 5]| x.to_vec();
    vec![
        (
            "cpu0".into(),
            v([0.0063071, 0.0048038, 0.0045862, 0.0048865, 0.0048923]),
        ),
        (
            "cpu1".into(),
            v([0.0067629, 0.0055811, 0.0058988, 0.0058809, 0.0053645]),
        ),
        (
            "cpu2".into(),
            v([0.0088599, 0.0078701, 0.0058573, 0.0063993, 0.0056833]),
        ),
        (
            "cpu3".into(),
            v([0.0085826, 0.0056874, 0.005697, 0.0061155, 0.0048769]),
        ),
        (
            "cpu4".into(),
            v([0.0051265, 0.0045452, 0.0046137, 0.0066399, 0.0050993]),
        ),
        (
            "cpu5".into(),
            v([0.0062369, 0.0053982, 0.0056624, 0.00606, 0.0062017]),
        ),
        (
            "cpu6".into(),
            v([0.006235, 0.0041764, 0.0048101, 0.0053798, 0.0050934]),
        ),
        (
            "cpu7".into(),
            v([0.0050709, 0.005482, 0.0058926, 0.0052934, 0.0049544]),
        ),
        ("memory".into(), vec![2785000000.0; 5]),
    ]
}

const THREE_VARS: &str = r#"<config><variable><name value="fs_usage"/>
<alarm_trigger_level value="0.9"/>
<alarm_trigger_period value="60"/>
<alarm_auto_inhibit_period value="3600"/>
</variable><variable><name value="mem_usage"/>
<alarm_trigger_level value="0.95"/>
<alarm_trigger_period value="60"/>
<alarm_auto_inhibit_period value="3600"/>
</variable><variable><name value="log_fs_usage"/>
<alarm_trigger_level value="0.9"/>
<alarm_trigger_period value="60"/>
<alarm_auto_inhibit_period value="3600"/>
</variable></config>"#;

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-7, "{a} != {b}");
}

#[test]
fn test_vm_monitor_process_rrd_updates() {
    let mut m = Monitor::new(ObjectKind::Vm, UUID);
    m.refresh(Some(THREE_VARS), NOW).unwrap();
    let ext = |f: &str| match f {
        "get_percent_fs_usage" => 0.12,
        "get_percent_mem_usage" => 0.17380,
        "get_percent_log_fs_usage" => f64::NAN,
        _ => panic!("unexpected {f}"),
    };
    let alarms = m.process(&cpus(), 1, 60, NOW, &ext);
    assert!(alarms.is_empty());
    close(m.variables[0].value.unwrap(), 0.12);
    close(m.variables[1].value.unwrap(), 0.17380);
    assert!(m.variables[2].value.unwrap().is_nan());
}

#[test]
fn test_host_monitor_process_rrd_updates() {
    let mut m = Monitor::new(ObjectKind::Host, UUID);
    m.refresh(
        Some(r#"<config><variable><name value="cpu_usage"/><alarm_trigger_level value="0.5"/></variable></config>"#),
        NOW,
    )
    .unwrap();
    m.process(&cpus(), 5, 60, NOW, &|_| unreachable!());
    // Average of cpu0-cpu7 in the last row.
    close(m.variables[0].value.unwrap(), 0.005270725);
}

#[test]
fn test_sr_monitor_process_rrd_updates() {
    let mut m = Monitor::new(ObjectKind::Sr, UUID);
    m.refresh(
        Some(r#"<config><variable><name value="physical_utilisation"/><alarm_trigger_level value="0.8"/></variable></config>"#),
        NOW,
    )
    .unwrap();
    let report: ObjectReport = vec![
        ("size".into(), vec![100.0, 200.0, 300.0, 400.0, 500.0]),
        (
            "physical_utilisation".into(),
            vec![2000.0, 3000.0, 4000.0, 5000.0, 6000.0],
        ),
    ];
    m.process(&report, 5, 60, NOW, &|_| unreachable!());
    // get_percent_sr_usage([500, 6000]), in the report's order, as perfmon.
    close(m.variables[0].value.unwrap(), 0.08333333333333333);
}

#[test]
fn test_sr_monitor_alarm_trigger_level_physical_utilisation() {
    let c = parse_config(
        ObjectKind::Sr,
        r#"<config><variable><name value="physical_utilisation"/></variable></config>"#,
    )
    .unwrap();
    assert_eq!(c[0].trigger_level, 0.8);
}

#[test]
fn test_variable_set_active() {
    let c = parse_config(
        ObjectKind::Vm,
        r#"<config><variable><name value="cpu_usage"/><alarm_trigger_level value="0.5"/></variable></config>"#,
    )
    .unwrap();
    let mut var = Variable::new(c[0].clone(), NOW);
    var.set_active(true, NOW);
    assert!(var.active);
    var.set_active(false, NOW);
    assert!(!var.active);
    var.trigger_down_counter = 5;
    var.set_active(true, NOW);
    assert_eq!(
        var.trigger_down_counter, 60,
        "reactivating resets the state"
    );
}

#[test]
fn test_variable_update() {
    let c = parse_config(ObjectKind::Vm, THREE_VARS).unwrap();
    let mut var = Variable::new(c[0].clone(), NOW);
    // Trigger alarm.
    var.trigger_down_counter = 50;
    let alarm = var.update(0.95, 60, NOW);
    assert_eq!(var.trigger_down_counter, 60);
    let body = alarm.expect("an alarm");
    assert!(
        body.starts_with("value: 0.950000\nconfig:\n<variable>"),
        "{body}"
    );
    // Not trigger alarm - time isn't up.
    var.trigger_down_counter = 100;
    assert!(var.update(0.95, 60, NOW).is_none());
    assert_eq!(var.trigger_down_counter, 40);
    // Not trigger alarm - level good.
    var.trigger_down_counter = 50;
    assert!(var.update(0.8, 60, NOW).is_none());
    assert_eq!(var.trigger_down_counter, 60);
}

#[test]
fn defaults_and_errors_as_perfmon() {
    let c = parse_config(
        ObjectKind::Host,
        r#"<config><variable><name value="memory_free_kib"/><alarm_trigger_level value="1024"/></variable></config>"#,
    )
    .unwrap();
    assert_eq!(c[0].sense, Sense::Low);
    assert_eq!((c[0].trigger_period, c[0].auto_inhibit_period), (60, 3600));
    assert_eq!(c[0].priority, "3");
    assert!(c[0].rrd_regex.is_match("memory_free_kib"));
    let err = |x: &str| parse_config(ObjectKind::Vm, x).unwrap_err().to_string();
    assert!(
        err("<config><variable><alarm_trigger_level value=\"1\"/></variable></config>")
            .contains("missing 'name'")
    );
    assert!(
        err(r#"<config><variable><name value="cpu_usage"/></variable></config>"#)
            .contains("no default alarm_trigger_level")
    );
    assert!(err(r#"<config><variable><name value="cpu_usage"/><alarm_trigger_level value="x"/></variable></config>"#)
        .contains("not a float"));
    assert!(err(r#"<config><variable><name value="cpu_usage"/><alarm_trigger_level value="1"/><alarm_trigger_period value="1.5"/></variable></config>"#)
        .contains("not an int"));
    assert!(err(r#"<config><variable><name value="cpu_usage"/><alarm_trigger_level value="1"/><consolidation_fn value="median"/></variable></config>"#)
        .contains("not supported"));
    assert!(err(r#"<config><variable><name value="bogus"/><alarm_trigger_level value="1"/></variable></config>"#)
        .contains("no default rrd_regex"));
    assert!(err("<config><variable>").contains("XML"));
}

/// A VM's CPU above 0.5 for the trigger period raises one alarm, then the inhibit period
/// keeps it quiet; a dip resets the count.
#[test]
fn alarm_fires_when_level_stays_bad_not_when_it_dips() {
    let cfg = r#"<config><variable><name value="cpu_usage"/><alarm_trigger_level value="0.5"/><alarm_trigger_period value="20"/><alarm_auto_inhibit_period value="300"/></variable></config>"#;
    let mut m = Monitor::new(ObjectKind::Vm, UUID);
    m.refresh(Some(cfg), NOW).unwrap();
    let row = |v: f64| -> ObjectReport { vec![("cpu0".into(), vec![v]), ("cpu1".into(), vec![v])] };
    let mut t = NOW;
    let mut step = |m: &mut Monitor, v: f64| {
        t += 5.0;
        m.process(&row(v), 1, 5, t, &|_| 0.0)
    };
    // Dips every third sample: never 20 s of bad level.
    for i in 0..30 {
        let v = if i % 3 == 2 { 0.1 } else { 0.9 };
        assert!(step(&mut m, v).is_empty(), "sample {i}");
    }
    // Four bad samples in a row: 20 s, an alarm.
    assert!(step(&mut m, 0.9).is_empty());
    assert!(step(&mut m, 0.9).is_empty());
    assert!(step(&mut m, 0.9).is_empty());
    let a = step(&mut m, 0.9);
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].cls, a[0].priority.as_str()), ("VM", "3"));
    assert_eq!(a[0].obj_uuid, UUID);
    // Still bad, but inhibited for 300 s.
    for _ in 0..50 {
        assert!(step(&mut m, 0.9).is_empty());
    }
    // Past the inhibit period: alarms again.
    let n: usize = (0..20).map(|_| step(&mut m, 0.9).len()).sum();
    assert_eq!(n, 1);
}

#[test]
fn refresh_keeps_state_of_unchanged_variables() {
    let a = r#"<config><variable><name value="cpu_usage"/><alarm_trigger_level value="0.5"/></variable></config>"#;
    let b = r#"<config><variable><name value="cpu_usage"/><alarm_trigger_level value="0.5"/></variable><variable><name value="network_usage"/><alarm_trigger_level value="1000"/></variable></config>"#;
    let mut m = Monitor::new(ObjectKind::Vm, UUID);
    assert!(m.refresh(Some(a), NOW).unwrap());
    m.variables[0].trigger_down_counter = 7;
    assert!(!m.refresh(Some(a), NOW).unwrap());
    assert!(m.refresh(Some(b), NOW).unwrap());
    assert_eq!(m.variables.len(), 2);
    assert_eq!(m.variables[0].trigger_down_counter, 7);
    m.refresh(None, NOW).unwrap();
    assert!(m.variables.is_empty());
}

/// `TestRRDUpdates.test_refresh`: perfmon's view of an `<xport>`.
#[test]
fn test_rrd_updates_refresh() {
    let vm = "ecd8d7a0-1be3-4d91-bd0e-4888c0e30ab3";
    let mut legend = String::new();
    for cf in ["AVERAGE", "MIN", "MAX", "LAST"] {
        for n in ["cpu1", "cpu0", "memory"] {
            legend += &format!("<entry>{cf}:vm:{vm}:{n}</entry>");
        }
    }
    let row = |t: i64| {
        let mut s = format!("<row><t>{t}</t>");
        for v in [
            "0.0",
            "0.0282",
            "209715200.0000",
            "0.0",
            "0.0201",
            "209715200.0000",
            "0.0",
            "0.0445",
            "209715200.0000",
            "0.0",
            "0.0243",
            "209715200.0000",
        ] {
            s += &format!("<v>{v}</v>");
        }
        s + "</row>"
    };
    let xml = format!(
        "<xport><meta><start>1213578000</start><step>3600</step><end>1213617600</end><rows>2</rows><columns>12</columns><legend>{legend}</legend></meta><data>{}{}</data></xport>",
        row(1213617600),
        row(1213616600)
    );
    let u = Updates::from_xml(&xml).unwrap();
    assert_eq!(u.data.len(), 2);
    let r = reports(&u);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].0.as_str(), r[0].1.as_str()), ("vm", vm));
    assert!(!r.iter().any(|(_, u, _)| u == "123345"));
    let names: Vec<&str> = r[0].2.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["cpu1", "cpu0", "memory"]);
}
