//! `xe` memory commands with XenServer's parameters (`cli_frontend.ml`):
//! `vm-memory-dynamic-range-set` (`VM.set_memory_dynamic_range`) and `vm-memory-target-set`
//! (`VM.set_memory_target_live`). Amounts are bytes, or a number with a `KiB`, `MiB`, `GiB`
//! or `TiB` suffix, as xe reads them.

use crate::cli::XeError;
use crate::cli_storage::one_vm;
use crate::client::Client;
use crate::value::Value;

fn usage(msg: impl Into<String>) -> XeError {
    XeError(msg.into(), 1)
}

fn get<'a>(kv: &'a [(String, String)], k: &str) -> Option<&'a str> {
    kv.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str())
}

fn need<'a>(kv: &'a [(String, String)], k: &str) -> Result<&'a str, XeError> {
    get(kv, k).ok_or_else(|| {
        usage(format!(
            "Required parameter not found: {k}\nFor usage run: 'xe help'"
        ))
    })
}

/// Bytes in `s`: a whole number, optionally followed by `KiB`, `MiB`, `GiB` or `TiB`.
pub(crate) fn bytes(name: &str, s: &str) -> Result<u64, XeError> {
    let bad = || {
        usage(format!(
            "Parameter {name} must be a number of bytes (or KiB, MiB, GiB, TiB): {s:?}"
        ))
    };
    let (digits, shift) = [("KiB", 10), ("MiB", 20), ("GiB", 30), ("TiB", 40)]
        .iter()
        .find_map(|(suffix, shift)| s.strip_suffix(suffix).map(|d| (d, *shift)))
        .unwrap_or((s, 0));
    let n: u64 = digits.trim().parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// Runs `cmd` when it is one of this file's; `None` otherwise.
pub(crate) fn dispatch(
    c: &mut Client,
    cmd: &str,
    kv: &[(String, String)],
) -> Option<Result<(), XeError>> {
    let r = match cmd {
        "vm-memory-dynamic-range-set" => (|| {
            let min = bytes("min", need(kv, "min")?)?;
            let max = bytes("max", need(kv, "max")?)?;
            let vm = one_vm(c, kv)?;
            c.call(
                "VM.set_memory_dynamic_range",
                &[vm, Value::str(min.to_string()), Value::str(max.to_string())],
            )?;
            Ok(())
        })(),
        "vm-memory-target-set" => (|| {
            let target = bytes("target", need(kv, "target")?)?;
            let vm = one_vm(c, kv)?;
            c.call(
                "VM.set_memory_target_live",
                &[vm, Value::str(target.to_string())],
            )?;
            Ok(())
        })(),
        _ => return None,
    };
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn amounts_take_binary_suffixes_and_reject_the_rest() {
        assert_eq!(bytes("m", "4096").unwrap(), 4096);
        assert_eq!(bytes("m", "128MiB").unwrap(), 128 << 20);
        assert_eq!(bytes("m", "2GiB").unwrap(), 2 << 30);
        assert_eq!(bytes("m", "3KiB").unwrap(), 3072);
        for bad in ["", "MiB", "12MB", "-1", "1.5GiB", "99999999999TiB"] {
            let e = bytes("min", bad).unwrap_err();
            assert!(e.0.contains("Parameter min"), "{bad}: {}", e.0);
        }
    }
}
