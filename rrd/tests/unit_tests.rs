//! xapi-rrd's `lib_test/unit_tests.ml`, ported: each suite's tests run on each fixture RRD
//! (`absolute_rrd`, `gauge_rrd`, `ca_322008_rrd`, `ca_329043_rrd_1`, `ca_329813_rrd`), the
//! CP-33354 `create_multi` suite and the regressions (CA-322008, CA-325844 on the flip-flop
//! fixture, CA-329043, CA-329813, CA-404597).

use rrd::updates::create_multi;
use rrd::{Cf, Ds, DsType, DsValue, Fring, Rra, Rrd, Transform};

const ID: Transform = Transform::Identity;

fn tolerance(x: f64) -> f64 {
    (x.abs() * 1e-12).max(1e-4)
}

fn compare_float(msg: &str, x: f64, y: f64) {
    if x == y || (x.is_nan() && y.is_nan()) {
        return;
    }
    assert!((x - y).abs() <= tolerance(x), "{msg}: {x} != {y}");
}

fn assert_rrds_equal(r1: &Rrd, r2: &Rrd) {
    compare_float("last_updated", r1.last_updated, r2.last_updated);
    assert_eq!(r1.timestep, r2.timestep);
    assert_eq!(r1.dss.len(), r2.dss.len());
    for (d1, d2) in r1.dss.iter().zip(&r2.dss) {
        assert_eq!(d1.name, d2.name);
        assert_eq!(d1.ty, d2.ty);
        compare_float("ds_min", d1.min, d2.min);
        compare_float("ds_max", d1.max, d2.max);
        compare_float("ds_mrhb", d1.mrhb, d2.mrhb);
        compare_float("ds_value", d1.value, d2.value);
        compare_float("ds_unknown_sec", d1.unknown_sec, d2.unknown_sec);
    }
    assert_eq!(r1.rras.len(), r2.rras.len());
    for (a1, a2) in r1.rras.iter().zip(&r2.rras) {
        assert_eq!(a1.cf, a2.cf);
        assert_eq!(a1.row_cnt, a2.row_cnt);
        assert_eq!(a1.pdp_cnt, a2.pdp_cnt);
        compare_float("xff", a1.xff, a2.xff);
        for (c1, c2) in a1.cdps.iter().zip(&a2.cdps) {
            compare_float("cdp_value", c1.value, c2.value);
            assert_eq!(c1.unknown_pdps, c2.unknown_pdps);
        }
        for (f1, f2) in a1.data.iter().zip(&a2.data) {
            assert_fring_equal(f1, f2);
        }
    }
}

fn assert_fring_equal(f1: &Fring, f2: &Fring) {
    for i in 0..f1.len() {
        compare_float("Fring value must match", f1.peek(i), f2.peek(i));
    }
}

fn in_range(min: f64, max: f64, values: &[f64]) {
    for &v in values.iter().filter(|v| !v.is_nan()) {
        assert!(min <= v, "value ({v}) higher than min ({min})");
        assert!(max >= v, "value ({v}) <= max ({max})");
    }
}

/// `test_ranges`: every archived value within its data source's range.
fn test_ranges(rrd: &Rrd) {
    for ds in &rrd.dss {
        assert!(ds.min < ds.max, "min ({}) < max ({})", ds.min, ds.max);
    }
    for rra in &rrd.rras {
        for (ds, ring) in rrd.dss.iter().zip(&rra.data) {
            in_range(ds.min, ds.max, &ring.get());
        }
    }
}

fn test_marshall(rrd: &Rrd, json: bool) {
    let out = if json {
        let s = rrd.to_json();
        let v: serde_json::Value = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(v["ds"].as_array().unwrap().len(), rrd.dss.len());
        s
    } else {
        rrd.to_xml(true)
    };
    assert!(!out.is_empty());
}

fn test_marshall_unmarshall(rrd: &Rrd) {
    let back = Rrd::from_xml(&rrd.to_xml(true)).expect("parses");
    assert_rrds_equal(rrd, &back);
}

fn test_length_invariants(rrd: &Rrd) {
    for rra in &rrd.rras {
        assert_eq!(
            rrd.dss.len(),
            rra.data.len(),
            "Number of elements in Datasource must be the same as Frings in a RRA"
        );
        assert_eq!(rrd.dss.len(), rra.cdps.len());
    }
}

fn rrd_suite(rrd: &Rrd) {
    test_marshall(rrd, false); // Save xml to disk
    test_marshall(rrd, true); // Save json to disk
    test_marshall_unmarshall(rrd); // Save and restore from disk
    test_length_invariants(rrd); // Length invariants
    test_ranges(rrd); // Values in range
}

fn four_rras() -> Vec<Rra> {
    vec![
        Rra::new(Cf::Average, 100, 1, 0.5),
        Rra::new(Cf::Average, 100, 10, 0.5),
        Rra::new(Cf::Average, 100, 100, 0.5),
        Rra::new(Cf::Average, 100, 1000, 0.5),
    ]
}

fn wave(t: f64) -> [f64; 4] {
    [
        0.5 + 0.5 * (t / 10.0).sin(),
        1.5 + 0.5 * (t / 80.0).cos(),
        3.5 + 0.5 * (t / 700.0).sin(),
        6.5 + 0.5 * (t / 5000.0).cos(),
    ]
}

fn wave_rrd(ty: DsType, check_each: bool) -> Rrd {
    let dss = ["foo", "bar", "baz", "boo"]
        .map(|n| Ds::new(n, ty, 0.0, f64::INFINITY, 10.0, DsValue::Float(0.0)));
    let mut rrd = Rrd::new(dss.to_vec(), four_rras(), 1, 1_000_000_000.0);
    for i in 1..=100_000 {
        let t = 1_000_000.0 + 0.7 * i as f64;
        let w = wave(t);
        let vals: Vec<_> = (0..4).map(|k| (k, DsValue::Float(w[k]), ID)).collect();
        rrd.update(t, &vals, false);
        if check_each {
            for (ds, want) in rrd.dss.iter().zip(w) {
                compare_float("CA-404597", ds.value, want);
            }
        }
    }
    rrd
}

fn absolute_rrd() -> Rrd {
    wave_rrd(DsType::Absolute, false)
}

fn gauge_rrd() -> Rrd {
    wave_rrd(DsType::Gauge, false)
}

fn ca_322008_rrd() -> Rrd {
    let ds = Ds::new(
        "even or zero",
        DsType::Derive,
        0.0,
        f64::INFINITY,
        5.0,
        DsValue::Int64(0),
    );
    let rras = vec![
        Rra::new(Cf::Average, 100, 1, 0.5),
        Rra::new(Cf::Min, 100, 1, 0.5),
        Rra::new(Cf::Max, 100, 1, 0.5),
    ];
    let mut rrd = Rrd::new(vec![ds], rras, 5, 0.0);
    for i in 1..=100_000i64 {
        rrd.update(i as f64, &[(0, DsValue::Int64(i * (i % 2)), ID)], false);
    }
    rrd
}

fn ca_329043_rrd_1() -> Rrd {
    let ds = Ds::new(
        "derive_with_min",
        DsType::Derive,
        0.0,
        1.0,
        5.0,
        DsValue::Unknown,
    );
    let rras = vec![
        Rra::new(Cf::Average, 3, 1, 0.5),
        Rra::new(Cf::Min, 3, 1, 0.5),
        Rra::new(Cf::Max, 3, 1, 0.5),
    ];
    let mut rrd = Rrd::new(vec![ds], rras, 5, 0.0);
    for i in 0..=4 {
        let t = 5.0 * i as f64;
        let v = if i == 1 { 0 } else { t as i64 };
        rrd.update(t, &[(0, DsValue::Int64(v), ID)], i == 0);
    }
    rrd
}

fn create_rrd(rows: usize, values: &[i64], min: f64, max: f64) -> Rrd {
    let rras = vec![
        Rra::new(Cf::Average, rows, 10, 0.5),
        Rra::new(Cf::Min, rows, 10, 0.5),
        Rra::new(Cf::Max, rows, 10, 0.5),
        Rra::new(Cf::Last, rows, 10, 0.5),
    ];
    let dss = ["derive", "absolute", "gauge"]
        .map(|n| Ds::new(n, DsType::Derive, min, max, 5.0, DsValue::Unknown));
    let mut rrd = Rrd::new(dss.to_vec(), rras, 5, 0.0);
    for (i, &v) in values.iter().enumerate() {
        rrd.update(5.0 * i as f64, &[(0, DsValue::Int64(v), ID)], i == 0);
    }
    rrd
}

fn ca_329043_rrd_2() -> Rrd {
    create_rrd(
        2,
        &[-3710420213458133667, -4382108469022348614],
        -115833951388699606673086965578224992861890232359671476890007240704.0,
        -13815257.710330,
    )
}

fn ca_329813_rrd() -> Rrd {
    let mut rrd = create_rrd(2, &[0, 5, 10], 0.0, 1.0);
    let new_ds = Ds::new(
        "new!",
        DsType::Derive,
        0.0,
        f64::INFINITY,
        5.0,
        DsValue::Unknown,
    );
    let t = rrd.last_updated;
    rrd.add_ds(t, new_ds);
    rrd
}

#[test]
fn absolute_rrd_suite() {
    rrd_suite(&absolute_rrd());
}

#[test]
fn gauge_rrd_suite() {
    rrd_suite(&gauge_rrd());
}

#[test]
fn rrd_for_ca_322008_suite() {
    rrd_suite(&ca_322008_rrd());
}

#[test]
fn rrd_for_ca_329043_suite() {
    rrd_suite(&ca_329043_rrd_1());
}

#[test]
fn rrd_for_ca_329813_suite() {
    rrd_suite(&ca_329813_rrd());
}

/// CA-322008: a counter that flips between i and 0 never archives more than the time.
#[test]
fn ca_322008() {
    let rrd = ca_322008_rrd();
    for rra in &rrd.rras {
        for (ds, ring) in rrd.dss.iter().zip(&rra.data) {
            in_range(ds.min, rrd.last_updated, &ring.get());
        }
    }
    // And something was archived: the test cannot pass on an all-NaN archive.
    assert!(rrd.rras[0].data[0].get().iter().any(|v| !v.is_nan()));
}

/// CA-325844: the flip-flop fixture (negative rates in an RRD saved with min 0) reads back
/// with every value in range.
#[test]
fn ca_325844() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/flip_flop.xml"
    ))
    .unwrap();
    assert!(
        text.contains("<v>-3.0000</v>"),
        "fixture holds negative values"
    );
    let rrd = Rrd::from_xml(&text).unwrap();
    assert_eq!(rrd.dss[0].name, "flip_flop");
    assert_eq!(rrd.rras.len(), 3);
    assert_eq!(rrd.rras[0].row_cnt, 100);
    test_ranges(&rrd);
    // The newest AVERAGE value is the fixture's last row; the negative one before it is NaN.
    assert_eq!(rrd.rras[0].data[0].peek(0), 19.0);
    assert!(rrd.rras[0].data[0].peek(1).is_nan());
}

#[test]
fn ca_329043_1() {
    test_ranges(&ca_329043_rrd_1());
}

#[test]
fn ca_329043_2() {
    test_ranges(&ca_329043_rrd_2());
}

#[test]
fn ca_329813() {
    let rrd = ca_329813_rrd();
    test_ranges(&rrd);
    assert_eq!(rrd.dss.len(), 4);
    test_length_invariants(&rrd);
}

/// CA-404597 (1): Gauge values are stored as given, whatever the update times.
#[test]
fn ca_404597_1() {
    wave_rrd(DsType::Gauge, true);
}

/// CA-404597 (2): Absolute values are stored as given.
#[test]
fn ca_404597_2() {
    let ds = Ds::new(
        "foo",
        DsType::Absolute,
        0.0,
        f64::INFINITY,
        1000.0,
        DsValue::Float(0.0),
    );
    let mut rrd = Rrd::new(vec![ds], vec![Rra::new(Cf::Average, 100, 1, 0.5)], 1, 0.0);
    for i in 1..=100_000 {
        let t = 300.0 * i as f64;
        let v = 300.0 * i as f64;
        rrd.update(t, &[(0, DsValue::Float(v), ID)], false);
        compare_float("CA-404597", v / 300.0, rrd.dss[0].value);
    }
}

fn assert_size(u: &rrd::updates::Updates) {
    for (i, r) in u.data.iter().enumerate() {
        assert_eq!(
            u.legend.len(),
            r.data.len(),
            "number of cols in legend must match number of cols in row[{i}]"
        );
    }
}

fn multi(rrds: Vec<Rrd>) -> rrd::updates::Updates {
    let named: Vec<(String, &Rrd)> = rrds
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("row[{i}]"), r))
        .collect();
    create_multi(&named, 0, 1, None).unwrap()
}

#[test]
fn cp_33354_no_rrds() {
    assert!(matches!(
        create_multi(&[], 0, 1, None),
        Err(rrd::Error::NoRraAvailable)
    ));
}

#[test]
fn cp_33354_one_rrd() {
    let u = multi(vec![create_rrd(2, &[0, 5, 10], 0.0, 1.0)]);
    assert_size(&u);
    assert_eq!(u.legend.len(), 12);
    assert_eq!(u.legend[0], "AVERAGE:row[0]derive");
}

#[test]
fn cp_33354_rows_with_same_num_cols() {
    let u = multi(vec![
        create_rrd(3, &[0, 5, 10], 0.0, 1.0),
        create_rrd(3, &[1, 6, 11], 0.0, 1.0),
    ]);
    assert_size(&u);
    assert_eq!(u.legend.len(), 24);
}

#[test]
fn cp_33354_rows_with_different_num_cols() {
    let u = multi(vec![
        create_rrd(3, &[0, 5, 10], 0.0, 1.0),
        create_rrd(2, &[1, 6, 11], 0.0, 1.0),
    ]);
    assert_size(&u);
    assert_eq!(u.legend.len(), 12, "the differently shaped RRD is left out");
}
