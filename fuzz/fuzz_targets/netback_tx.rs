//! Arbitrary bytes as netif tx ring entries (and a producer index possibly past them) into
//! netback's tx path, each input on a fresh simulated host, guest and grants (so a crash
//! input reproduces alone): a pass that did not stop the queue must answer every request it
//! consumed with a known status, every frame handed on must be a whole packet, and nothing
//! may panic. See `netback::fuzzing::netback_tx`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    netback::fuzzing::netback_tx(data);
});
