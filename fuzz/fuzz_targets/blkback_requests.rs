//! Arbitrary bytes as blkif ring entries (any of the three layouts) into blkback's ring
//! consumer, each input on a fresh simulated host, guest, disk and backend (so a crash input
//! reproduces alone): every consumed request must be answered exactly once (the backend's own
//! counters) with a valid status, no grant may stay mapped, and nothing may panic. See
//! `blkback::fuzzing::blkback_requests`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    blkback::fuzzing::blkback_requests(data);
});
