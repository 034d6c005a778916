//! The xenstore wire decoder, path and permission parsers on arbitrary bytes: never panic,
//! and whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstore::wire::{validate_path, Decoder, PathKind, Perm};

fuzz_target!(|data: &[u8]| {
    // Split the input into chunks at arbitrary points to exercise partial headers.
    let split = data.first().copied().unwrap_or(1).max(1) as usize;
    let mut dec = Decoder::new();
    let mut consumed = Vec::new();
    for chunk in data.chunks(split) {
        dec.feed(chunk);
        loop {
            match dec.next_message() {
                Ok(Some(m)) => {
                    assert!(m.payload.len() <= xenstore::wire::PAYLOAD_MAX);
                    consumed.extend_from_slice(&m.to_bytes());
                    let _ = m.op();
                    let _ = m.error_errno();
                    if let Ok(parts) = m.strings() {
                        for p in parts {
                            let _ = validate_path(p, PathKind::Any);
                            let _ = Perm::parse(p);
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    assert!(data.starts_with(&consumed));
});
