//! The metrics' parsers of untrusted bytes: an rrdd plugin's shared-memory file (protocol
//! v2, twice through one reader so the cached-metadata path runs too), a saved RRD, an
//! `<xport>` and a perfmon configuration. None may panic; a plugin payload that reads must
//! encode back to one that reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = rrd::plugin::Reader::new(1 << 16);
    if let Ok(p) = r.read(data) {
        let _ = r.read(data);
        if let Ok(b) = rrd::plugin::encode(&p) {
            let again = rrd::plugin::Reader::default().read(&b).expect("re-encoded payload reads");
            assert_eq!(again.datasources.len(), p.datasources.len());
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = rrd::Rrd::from_xml(s).map(|x| x.to_xml(true));
        let _ = rrd::updates::Updates::from_xml(s);
        let _ = rrd::perfmon::parse_config(rrd::perfmon::ObjectKind::Vm, s);
    }
});
