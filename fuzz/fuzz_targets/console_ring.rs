//! The console ring (`xen_ring::console`, `xen/io/console.h`) as xenconsoled uses it, with a
//! hostile guest: arbitrary index values and bytes written into the page between the
//! backend's reads and writes. Checks: no panic, no access outside the page, never more
//! than a ring's worth read or written, and a ring whose indexes claim more than it holds
//! is reported broken and left untouched.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use xen_ring::console::{ConsoleError, ConsoleRing, End, IN_SIZE, OUT_SIZE};
use xen_types::mem::{PageBuf, SharedMemoryExt};

/// Offsets of the four indexes (`in_cons`, `in_prod`, `out_cons`, `out_prod`).
const IDX: [usize; 4] = [
    std::mem::offset_of!(xen_sys::xencons_interface, in_cons),
    std::mem::offset_of!(xen_sys::xencons_interface, in_prod),
    std::mem::offset_of!(xen_sys::xencons_interface, out_cons),
    std::mem::offset_of!(xen_sys::xencons_interface, out_prod),
];

fuzz_target!(|data: &[u8]| {
    let page = Arc::new(PageBuf::new(1).unwrap());
    let back = ConsoleRing::new(page.clone(), End::Backend).unwrap();
    let mut buf = [0u8; OUT_SIZE + 16];
    let mut input = data;
    while let Some((&op, rest)) = input.split_first() {
        input = rest;
        let snapshot: Vec<u32> = IDX.iter().map(|&o| page.read_obj(o).unwrap()).collect();
        match op % 5 {
            // The guest sets an index to anything.
            0 => {
                let Some((v, rest)) = input.split_first_chunk::<4>() else { break };
                input = rest;
                page.write_obj(IDX[usize::from(op / 5) % 4], u32::from_le_bytes(*v))
                    .unwrap();
            }
            // The guest writes bytes into its output ring.
            1 => {
                let n = usize::from(op).min(input.len());
                let (bytes, rest) = input.split_at(n);
                input = rest;
                let off = std::mem::offset_of!(xen_sys::xencons_interface, out);
                page.write_bytes(off + usize::from(op) % (OUT_SIZE - n.min(OUT_SIZE)), bytes)
                    .unwrap();
            }
            2 => {
                let len = usize::from(op) * 16 % buf.len();
                match back.read(&mut buf[..len]) {
                    Ok(n) => assert!(n <= len && n <= OUT_SIZE),
                    Err(ConsoleError::Broken { size, .. }) => {
                        assert_eq!(size, OUT_SIZE);
                        let now: Vec<u32> =
                            IDX.iter().map(|&o| page.read_obj(o).unwrap()).collect();
                        assert_eq!(now, snapshot, "a broken ring is left untouched");
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            3 => {
                let n = usize::from(op).min(input.len());
                match back.write(&input[..n]) {
                    Ok(w) => assert!(w <= n && w <= IN_SIZE),
                    Err(ConsoleError::Broken { size, .. }) => assert_eq!(size, IN_SIZE),
                    Err(e) => panic!("{e}"),
                }
            }
            _ => {
                if let Ok(n) = back.readable() {
                    assert!(n <= OUT_SIZE);
                }
                if let Ok(n) = back.writable_space() {
                    assert!(n <= IN_SIZE);
                }
            }
        }
    }
});
