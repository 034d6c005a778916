//! `/rrd_updates` over xcp-rrdd's archive layout: rows, legend, XML and JSON forms, restore.

use rrd::archive::{self, DsSpec};
use rrd::updates::{create_multi, Updates};
use rrd::{Cf, DsType, DsValue, Rrd, Transform};

const HOST: &str = "2d6ef6a7-7e6b-4b34-b03f-7c1f0e2b0c11";
const VM: &str = "4b1c5d0a-3c3f-4a8e-9e2e-1f2a3b4c5d6e";

fn specs() -> Vec<DsSpec> {
    vec![
        DsSpec::new("cpu0", DsType::Derive, 0.0, 1.0, "(fraction)", "CPU0"),
        DsSpec::new("memory", DsType::Gauge, 0.0, f64::INFINITY, "B", "Memory"),
    ]
}

fn sampled(n: usize, t0: f64) -> Rrd {
    let mut r = archive::fresh(&specs(), true, t0);
    for i in 1..=n {
        let t = t0 + 5.0 * i as f64;
        // cpu0: a counter of CPU seconds growing 0.25 s per second.
        r.update(
            t,
            &[
                (0, DsValue::Float(0.25 * (t - t0)), Transform::Identity),
                (1, DsValue::Int64(1 << 30), Transform::Identity),
            ],
            false,
        );
    }
    r
}

#[test]
fn xcp_rrdd_layout() {
    let r = archive::fresh(&specs(), false, 1000.0);
    let shape: Vec<(Cf, usize, usize)> = r
        .rras
        .iter()
        .map(|a| (a.cf, a.row_cnt, a.pdp_cnt))
        .collect();
    assert_eq!(
        shape,
        [
            (Cf::Average, 120, 1),
            (Cf::Average, 120, 12),
            (Cf::Average, 168, 720),
            (Cf::Average, 366, 17280)
        ]
    );
    let r = archive::fresh(&specs(), true, 1000.0);
    assert_eq!(r.rras.len(), 1 + 3 * 3);
    assert_eq!(r.timestep, 5);
}

#[test]
fn n_samples_give_n_rows_with_xapi_legend() {
    let t0 = 1_700_000_000.0;
    let n = 7;
    let host = sampled(n, t0);
    let vm = sampled(n, t0);
    let start = t0 as i64 + 1;
    let u = create_multi(
        &[(format!("host:{HOST}:"), &host), (format!("vm:{VM}:"), &vm)],
        start,
        5,
        Some(Cf::Average),
    )
    .unwrap();
    assert_eq!(u.step, 5);
    assert_eq!(u.data.len(), n);
    assert_eq!(
        u.legend,
        [
            format!("AVERAGE:host:{HOST}:cpu0"),
            format!("AVERAGE:host:{HOST}:memory"),
            format!("AVERAGE:vm:{VM}:cpu0"),
            format!("AVERAGE:vm:{VM}:memory"),
        ]
    );
    // Newest first, 5 s apart; CPU at 0.25 after the first sample, memory as given.
    assert_eq!(u.data[0].time, t0 as i64 + 5 * n as i64);
    assert_eq!(u.data[1].time, u.data[0].time - 5);
    for row in &u.data[..n - 1] {
        assert!((row.data[0] - 0.25).abs() < 1e-6, "{:?}", row.data);
        assert_eq!(row.data[1], (1u64 << 30) as f64);
    }
    // XML round trip.
    let xml = u.to_xml();
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<xport><meta>"));
    assert_eq!(Updates::from_xml(&xml).unwrap(), u);
    // JSON: XAPI's shape.
    let j: serde_json::Value = serde_json::from_str(&u.to_json()).unwrap();
    assert_eq!(j["meta"]["rows"], n.to_string());
    assert_eq!(j["meta"]["legend"][2], format!("AVERAGE:vm:{VM}:cpu0"));
    assert_eq!(j["data"].as_array().unwrap().len(), n);
    assert_eq!(j["data"][0]["values"][1], "1073741824");
}

#[test]
fn archives_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.xml");
    let t0 = 1_700_000_000.0;
    let mut r = sampled(30, t0);
    r.save(&path).unwrap();
    let mut back = Rrd::load(&path).unwrap();
    let bits = |v: Vec<f64>| v.into_iter().map(f64::to_bits).collect::<Vec<_>>();
    assert_eq!(
        bits(back.rras[0].data[1].get()),
        bits(r.rras[0].data[1].get())
    );
    // Updates continue after the restore as they would have without it (memory is a gauge,
    // so the missing last raw value does not matter).
    let t = t0 + 5.0 * 31.0;
    let v = [(1, DsValue::Int64(2 << 30), Transform::Identity)];
    r.update(t, &v, false);
    back.update(t, &v, false);
    assert_eq!(back.rras[0].data[1].peek(0), r.rras[0].data[1].peek(0));
    assert_eq!(back.rras[0].data[1].peek(0), (2u64 << 30) as f64);
    // A corrupt file is a clear error.
    std::fs::write(&path, "<rrd><version>0003</version><step>five</step></rrd>").unwrap();
    let e = Rrd::load(&path).unwrap_err().to_string();
    assert!(e.contains("step"), "{e}");
    std::fs::write(&path, "<rrd><version>").unwrap();
    assert!(matches!(Rrd::load(&path), Err(rrd::Error::Xml(_))));
}

#[test]
fn relative_start_and_coarser_interval() {
    let r = sampled(30, 1_700_000_000.0);
    let u = create_multi(&[(format!("vm:{VM}:"), &r)], -60, 0, Some(Cf::Average)).unwrap();
    // Rows at last, last-5, ..., last-60: both ends included, as xapi-rrd.
    assert_eq!(u.data.len(), 13);
    let u = create_multi(&[(format!("vm:{VM}:"), &r)], -600, 60, Some(Cf::Max)).unwrap();
    assert_eq!(u.step, 60);
    // From the beginning of time: the coarsest archive (1 day), as xapi-rrd.
    let all = create_multi(&[(format!("vm:{VM}:"), &r)], 0, 0, Some(Cf::Average)).unwrap();
    assert_eq!(all.step, 86400);
    assert!(u.legend[0].starts_with("MAX:vm:"));
    assert!(matches!(
        create_multi(&[(format!("vm:{VM}:"), &r)], 0, 0, Some(Cf::Last)),
        Err(rrd::Error::NoRraAvailable)
    ));
}
