//! Arbitrary bytes as blkif ring entries (any of the three layouts) into blkback's ring
//! consumer: every request must be answered with a valid status, no mapping may leak, and
//! nothing may panic. See `blkback::fuzzing::blkback_requests`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    blkback::fuzzing::blkback_requests(data);
});
