//! Checks the layout that the committed bindings assert (size, alignment, field offsets of
//! every ABI struct, taken by bindgen from clang) against the system C compiler and the
//! installed Xen headers: every assertion bindgen generated is turned into a C
//! `_Static_assert` and compiled with `cc` against `/usr/include/xen*`.
//!
//! Needs Debian's libxen-dev (CI installs it); without the headers the test fails and says so.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

const GENERATED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/generated/types.rs");
const ABI_H: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include/abi.h");

#[derive(Debug)]
enum Check {
    Size(String, usize),
    Align(String, usize),
    Offset(String, String, usize),
}

/// Parses bindgen's `["Size of T"][size_of::<T>() - N]`-style assertions.
fn parse_assertions(src: &str) -> Vec<Check> {
    // Join the multi-line forms so that each assertion is on one line.
    let flat = src
        .replace("[\n        \"", "[\"")
        .replace("\",\n    ][", "\"][");
    let mut out = Vec::new();
    for line in flat.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("[\"") else {
            continue;
        };
        let Some((label, tail)) = rest.split_once("\"]") else {
            continue;
        };
        let Some(n) = tail
            .rsplit_once(" - ")
            .and_then(|(_, n)| n.strip_suffix("usize];"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if let Some(t) = label.strip_prefix("Size of ") {
            out.push(Check::Size(t.to_string(), n));
        } else if let Some(t) = label.strip_prefix("Alignment of ") {
            out.push(Check::Align(t.to_string(), n));
        } else if let Some(tf) = label.strip_prefix("Offset of field: ") {
            if let Some((t, f)) = tf.split_once("::") {
                out.push(Check::Offset(t.to_string(), f.to_string(), n));
            }
        }
    }
    out
}

/// How a bindgen type name is spelled in C, if it is a named type of the Xen headers.
fn c_name(name: &str, headers: &str) -> Option<String> {
    if name.contains("__bindgen") || name.starts_with('_') {
        return None;
    }
    // Types that ring.h's DEFINE_RING_TYPES(name, req, rsp) spells by token pasting.
    if headers.contains("DEFINE_RING_TYPES(") {
        for (suffix, kw) in [
            ("_sring_entry", "union"),
            ("_sring", "struct"),
            ("_front_ring", "struct"),
            ("_back_ring", "struct"),
        ] {
            if let Some(base) = name.strip_suffix(suffix) {
                if headers.contains(&format!("DEFINE_RING_TYPES({base},")) {
                    return Some(format!("{kw} {name}"));
                }
            }
        }
    }
    for kw in ["struct", "union"] {
        if headers.contains(&format!("{kw} {name} {{"))
            || headers.contains(&format!("{kw} {name}\n{{"))
        {
            return Some(format!("{kw} {name}"));
        }
    }
    headers
        .contains(&format!(" {name};"))
        .then(|| name.to_string())
}

fn read_headers() -> String {
    let mut text = String::new();
    let mut stack = vec![Path::new("/usr/include/xen").to_path_buf()];
    for entry in std::fs::read_dir("/usr/include").unwrap() {
        let p = entry.unwrap().path();
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        if n.starts_with("xen") && n.ends_with(".h") {
            text.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "h") {
                text.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    text
}

#[test]
fn bindgen_layouts_match_the_c_compiler() {
    assert!(
        Path::new("/usr/include/xen/io/ring.h").exists(),
        "the Xen headers are missing: install Debian's libxen-dev"
    );
    let src = std::fs::read_to_string(GENERATED).unwrap();
    let headers = read_headers();
    let checks = parse_assertions(&src);
    assert!(
        checks.len() > 1000,
        "parsed only {} assertions",
        checks.len()
    );

    let mut c = format!("#include \"{ABI_H}\"\n#include <stddef.h>\n");
    let mut types = BTreeSet::new();
    let mut emitted = 0;
    let mut names = std::collections::HashMap::new();
    let mut c_name = |t: &str, headers: &str| {
        names
            .entry(t.to_string())
            .or_insert_with(|| c_name(t, headers))
            .clone()
    };
    for check in &checks {
        let line = match check {
            Check::Size(t, n) => c_name(t, &headers)
                .map(|c| format!("_Static_assert(sizeof({c}) == {n}, \"size of {t}\");")),
            Check::Align(t, n) => c_name(t, &headers)
                .map(|c| format!("_Static_assert(_Alignof({c}) == {n}, \"align of {t}\");")),
            Check::Offset(t, f, n) => {
                // Skip bindgen's own members (bitfield units, anonymous unions, renamed keywords).
                if f.starts_with('_') || f.ends_with('_') {
                    None
                } else {
                    c_name(t, &headers).map(|c| {
                        format!(
                            "_Static_assert(offsetof({c}, {f}) == {n}, \"offset of {t}::{f}\");"
                        )
                    })
                }
            }
        };
        if let Some(line) = line {
            if let Check::Size(t, _) = check {
                types.insert(t.clone());
            }
            writeln!(c, "{line}").unwrap();
            emitted += 1;
        }
    }
    // The structs the backends and xenstored put on shared pages must all be covered.
    for t in [
        "blkif_request",
        "blkif_response",
        "blkif_request_segment",
        "blkif_sring",
        "netif_tx_request",
        "netif_rx_response",
        "xenstore_domain_interface",
        "xsd_sockmsg",
        "grant_entry_v1",
        "xencons_interface",
    ] {
        assert!(types.contains(t), "no size check was generated for {t}");
    }

    let dir = std::env::temp_dir().join(format!("xen-sys-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("layout.c");
    std::fs::write(&file, &c).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=gnu11", "-fsyntax-only", "-D__XEN_TOOLS__=1"])
        .arg(&file)
        .output()
        .expect("run the C compiler");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{emitted} layout assertions; the C compiler disagrees:\n{}",
        stderr.lines().take(40).collect::<Vec<_>>().join("\n")
    );
    assert!(emitted > 500, "only {emitted} assertions could be checked");
    eprintln!(
        "{emitted} layout assertions of {} types hold in C",
        types.len()
    );
    std::fs::remove_dir_all(&dir).ok();
}
