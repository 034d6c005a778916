//! xcp-rrdd's transport round trip (`transport-rw`: a writer and a reader of one payload),
//! and the reader's refusals of corrupt files.

use rrd::plugin::{encode, FileReader, FileWriter, Owner, Payload, PluginDs, Reader};
use rrd::{DsType, DsValue, Error, Transform};

fn ds(name: &str, owner: Owner, value: DsValue, ty: DsType) -> PluginDs {
    PluginDs {
        name: name.into(),
        owner,
        description: format!("{name} \"quoted\""),
        units: "B".into(),
        ty,
        value,
        min: f64::NEG_INFINITY,
        max: f64::INFINITY,
        default: true,
        transform: Transform::Identity,
    }
}

fn payload(ts: f64) -> Payload {
    Payload {
        timestamp: ts,
        datasources: vec![
            // Names out of alphabetical order: values must follow the metadata's order.
            ds(
                "zz_memory_reclaimed",
                Owner::Host,
                DsValue::Int64(-42),
                DsType::Absolute,
            ),
            ds(
                "cpu-temp-cpu0",
                Owner::Host,
                DsValue::Float(64.33),
                DsType::Gauge,
            ),
            ds(
                "a_vm_counter",
                Owner::Vm("7b3b1c4e-0000-4000-8000-000000000001".into()),
                DsValue::Int64(1 << 40),
                DsType::Derive,
            ),
            ds(
                "sr_size",
                Owner::Sr("sr-uuid".into()),
                DsValue::Float(1.5e12),
                DsType::Gauge,
            ),
        ],
    }
}

#[test]
fn transport_round_trip() {
    let mut r = Reader::default();
    let p = payload(1_339_685_573.245);
    let got = r.read(&encode(&p).unwrap()).unwrap();
    assert_eq!(got.timestamp, p.timestamp);
    assert_eq!(got.datasources.len(), 4);
    for (a, b) in got.datasources.iter().zip(&p.datasources) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.owner, b.owner);
        assert_eq!(a.value, b.value);
        assert_eq!(a.ty, b.ty);
        assert_eq!(a.description, b.description);
        assert_eq!((a.min, a.max, a.default), (b.min, b.max, b.default));
    }
    // Same bytes again: no update.
    assert!(matches!(r.read(&encode(&p).unwrap()), Err(Error::NoUpdate)));
    // New values, same metadata: read from the cached metadata.
    let mut p2 = payload(1_339_685_578.0);
    p2.datasources[1].value = DsValue::Float(70.0);
    let got = r.read(&encode(&p2).unwrap()).unwrap();
    assert_eq!(got.datasources[1].value, DsValue::Float(70.0));
}

#[test]
fn header_layout_is_big_endian() {
    let p = payload(2.0);
    let b = encode(&p).unwrap();
    assert_eq!(&b[..11], b"DATASOURCES");
    assert_eq!(u32::from_be_bytes(b[19..23].try_into().unwrap()), 4);
    assert_eq!(
        f64::from_bits(u64::from_be_bytes(b[23..31].try_into().unwrap())),
        2.0
    );
    assert_eq!(i64::from_be_bytes(b[31..39].try_into().unwrap()), -42);
    let meta_len = u32::from_be_bytes(b[63..67].try_into().unwrap()) as usize;
    assert_eq!(b.len(), 67 + meta_len);
    let meta_crc = u32::from_be_bytes(b[15..19].try_into().unwrap());
    assert_eq!(meta_crc, crc32fast::hash(&b[67..]));
}

#[test]
fn file_round_trip_through_shared_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin");
    let w = FileWriter::new(&path, 1 << 16);
    let mut r = FileReader::new(&path, 1 << 16);
    w.write(&payload(10.0)).unwrap();
    assert_eq!(r.read().unwrap().timestamp, 10.0);
    w.write(&payload(15.0)).unwrap();
    assert_eq!(r.read().unwrap().timestamp, 15.0);
    assert!(matches!(r.read(), Err(Error::NoUpdate)));
}

#[test]
fn bad_data_crc_is_refused_and_changes_nothing() {
    let mut r = Reader::default();
    let mut b = encode(&payload(1.0)).unwrap();
    b[31] ^= 0xff; // a value byte
    match r.read(&b) {
        Err(Error::InvalidChecksum { what: "data", .. }) => {}
        other => panic!("expected a data checksum error, got {other:?}"),
    }
    // The good payload still reads afterwards.
    assert!(r.read(&encode(&payload(1.0)).unwrap()).is_ok());
}

#[test]
fn bad_metadata_crc_is_refused() {
    let mut r = Reader::default();
    let mut b = encode(&payload(1.0)).unwrap();
    let n = b.len();
    b[n - 3] ^= 0x01;
    assert!(matches!(
        r.read(&b),
        Err(Error::InvalidChecksum {
            what: "metadata",
            ..
        })
    ));
}

#[test]
fn bad_header_is_refused() {
    let mut b = encode(&payload(1.0)).unwrap();
    b[0] = b'X';
    assert!(matches!(
        Reader::default().read(&b),
        Err(Error::InvalidHeader)
    ));
}

#[test]
fn truncated_payloads_are_refused() {
    let b = encode(&payload(1.0)).unwrap();
    for cut in [0, 5, 11, 20, 30, 40, 66, b.len() - 1] {
        match Reader::default().read(&b[..cut]) {
            Err(Error::Truncated { need, have }) => {
                assert_eq!(have, cut);
                assert!(need > cut);
            }
            other => panic!("cut at {cut}: expected Truncated, got {other:?}"),
        }
    }
}

#[test]
fn oversize_metadata_is_refused() {
    let mut b = encode(&payload(1.0)).unwrap();
    // Claim 4 GiB of metadata.
    b[63..67].copy_from_slice(&u32::MAX.to_be_bytes());
    match Reader::new(1 << 16).read(&b) {
        Err(Error::PayloadTooLarge { limit, size }) => {
            assert_eq!(limit, 1 << 16);
            assert!(size > limit);
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    // A huge data-source count too.
    let mut b = encode(&payload(1.0)).unwrap();
    b[19..23].copy_from_slice(&0x1000_0000u32.to_be_bytes());
    assert!(matches!(
        Reader::new(1 << 16).read(&b),
        Err(Error::PayloadTooLarge { .. })
    ));
    // And the writer refuses to write past its file's size.
    let dir = tempfile::tempdir().unwrap();
    let w = FileWriter::new(&dir.path().join("p"), 64);
    assert!(matches!(
        w.write(&payload(1.0)),
        Err(Error::PayloadTooLarge { .. })
    ));
}

#[test]
fn metadata_that_is_not_the_protocol_is_refused() {
    let meta = br#"{"datasources":{"x":{"value_type":"string"}}}"#;
    let mut b = Vec::new();
    b.extend_from_slice(b"DATASOURCES");
    let vals = [0u8; 16];
    let mut body = Vec::new();
    body.extend_from_slice(&1.0f64.to_bits().to_be_bytes());
    body.extend_from_slice(&vals[..8]);
    b.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    b.extend_from_slice(&crc32fast::hash(meta).to_be_bytes());
    b.extend_from_slice(&1u32.to_be_bytes());
    b.extend_from_slice(&body);
    b.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    b.extend_from_slice(meta);
    match Reader::default().read(&b) {
        Err(Error::InvalidPayload(m)) => assert!(m.contains("value_type"), "{m}"),
        other => panic!("expected InvalidPayload, got {other:?}"),
    }
}

#[test]
fn c_writer_trailing_nul_is_accepted() {
    // The C library counts a NUL terminator in the metadata length and CRC.
    let p = payload(3.0);
    let meta = rrd::plugin::metadata_json(&p.datasources).unwrap() + "\0";
    let mut b = encode(&p).unwrap();
    let n = p.datasources.len();
    let at = 31 + 8 * n;
    b.truncate(at);
    b.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    b.extend_from_slice(meta.as_bytes());
    b[15..19].copy_from_slice(&crc32fast::hash(meta.as_bytes()).to_be_bytes());
    assert_eq!(Reader::default().read(&b).unwrap().datasources.len(), n);
}

mod prop {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any bytes: an answer, never a panic.
        #[test]
        fn any_bytes_get_an_answer(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Reader::default().read(&b);
            let mut with_header = b"DATASOURCES".to_vec();
            with_header.extend_from_slice(&b);
            let _ = Reader::new(4096).read(&with_header);
            if let Ok(s) = std::str::from_utf8(&b) {
                let _ = rrd::Rrd::from_xml(s);
                let _ = rrd::updates::Updates::from_xml(s);
                let _ = rrd::perfmon::parse_config(rrd::perfmon::ObjectKind::Vm, s);
            }
        }

        /// One flipped byte of a valid payload is refused or read consistently; a flipped
        /// timestamp or value byte is always a data checksum error.
        #[test]
        fn flipped_bytes_are_caught(at in 0usize..400, bit in 0u8..8) {
            let good = encode(&payload(5.0)).unwrap();
            let at = at % good.len();
            let mut b = good.clone();
            b[at] ^= 1 << bit;
            let r = Reader::default().read(&b);
            if (23..63).contains(&at) {
                let is_data_crc_error = matches!(r, Err(Error::InvalidChecksum { what: "data", .. }));
                prop_assert!(is_data_crc_error);
            }
            if let Ok(p) = r {
                prop_assert_eq!(p.datasources.len(), 4);
            }
        }
    }
}
