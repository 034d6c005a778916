//! Checks the layout that the committed bindings assert (size, alignment, field offsets of
//! every ABI struct, taken by bindgen from clang) against the system C compiler and the
//! installed Xen headers: every assertion bindgen generated is turned into a C
//! `_Static_assert` and compiled with `cc` against `/usr/include/xen*`.
//!
//! Each type's C spelling is found by asking the compiler (`struct T`, `union T`, the typedef
//! `T`, or `__typeof__` of the field that holds it, for the types bindgen names after their
//! parent). An assertion that cannot be spelled in C fails the test unless its type is on
//! [`EXPLAINED`]; the test prints the exact count checked.
//!
//! Needs Debian's libxen-dev (CI installs it); without the headers the test fails and says so.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

const GENERATED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/generated/types.rs");
const ABI_H: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include/abi.h");

/// The only assertions allowed to go unchecked, by the kind of type they are about.
const EXPLAINED: &[(&str, &str)] = &[
    (
        "anonymous member",
        "the type of a C11 anonymous struct/union member (bindgen's `__bindgen_anon_N`) has no \
         C spelling, so its size and alignment cannot be asked; its fields' offsets are still \
         checked, relative to each other, as members of the enclosing type",
    ),
    (
        "__va_list_tag",
        "the compiler's own element type of x86-64 `va_list` (no header declares it); only \
         `xentoollog`'s logger callbacks take a `va_list`, by pointer",
    ),
];

#[derive(Debug)]
enum Check {
    Size(String, usize),
    Align(String, usize),
    Offset(String, String, usize),
}

impl Check {
    fn ty(&self) -> &str {
        match self {
            Self::Size(t, _) | Self::Align(t, _) | Self::Offset(t, _, _) => t,
        }
    }
}

/// The labels bindgen starts its layout assertions with.
const LABELS: [&str; 3] = ["\"Size of ", "\"Alignment of ", "\"Offset of field: "];

/// Parses bindgen's `["Size of T"][size_of::<T>() - N]`-style assertions, however rustfmt
/// wrapped them; panics on one it cannot read, so none is dropped silently.
fn parse_assertions(src: &str) -> Vec<Check> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some((at, label)) = LABELS
        .iter()
        .filter_map(|l| Some((rest.find(l)?, *l)))
        .min()
    {
        let after = &rest[at + label.len()..];
        let (name, tail) = after.split_once('"').expect("a closing quote");
        let (expr, next) = tail.split_once("];").expect("an assertion ends with `];`");
        let n: usize = expr
            .rsplit_once("- ")
            .and_then(|(_, n)| n.trim().strip_suffix("usize"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unreadable assertion {label}{name}: {expr}"));
        out.push(match label {
            "\"Size of " => Check::Size(name.to_string(), n),
            "\"Alignment of " => Check::Align(name.to_string(), n),
            _ => {
                let (t, f) = name.split_once("::").expect("Type::field");
                Check::Offset(t.to_string(), f.to_string(), n)
            }
        });
        rest = next;
    }
    out
}

/// A field of a generated struct or union: its name and its element type (arrays unwrapped,
/// `dims` levels deep).
#[derive(Debug)]
struct Field {
    name: String,
    ty: String,
    dims: usize,
}

/// The fields of every `pub struct`/`pub union` in the generated file, by type name.
fn parse_records(src: &str) -> BTreeMap<String, Vec<Field>> {
    let mut records = BTreeMap::new();
    let mut current: Option<(String, Vec<Field>)> = None;
    for line in src.lines() {
        if let Some((name, fields)) = current.as_mut() {
            if line == "}" {
                records.insert(std::mem::take(name), std::mem::take(fields));
                current = None;
            } else if let Some((f, ty)) = line
                .trim()
                .strip_prefix("pub ")
                .and_then(|l| l.strip_suffix(','))
                .and_then(|l| l.split_once(": "))
            {
                let mut ty = ty;
                let mut dims = 0;
                if let Some(inner) = ty
                    .strip_prefix("__IncompleteArrayField<")
                    .and_then(|t| t.strip_suffix('>'))
                {
                    ty = inner;
                    dims += 1;
                }
                while let Some(inner) = ty.strip_prefix('[') {
                    ty = inner.rsplit_once("; ").map_or(inner, |(t, _)| t);
                    dims += 1;
                }
                fields.push(Field {
                    name: f.to_string(),
                    ty: ty.to_string(),
                    dims,
                });
            }
            continue;
        }
        for kw in ["pub struct ", "pub union "] {
            if let Some(name) = line.strip_prefix(kw).and_then(|l| l.strip_suffix(" {")) {
                current = Some((name.to_string(), Vec::new()));
            }
        }
    }
    records
}

/// The C name of a field bindgen renamed (Rust keywords get a trailing `_`).
fn c_field(f: &str) -> &str {
    const KEYWORDS: &[&str] = &[
        "type", "ref", "in", "fn", "mod", "move", "match", "impl", "loop", "self", "super",
        "trait", "use", "where", "mut", "pub", "crate", "box", "priv", "final", "macro", "yield",
        "async", "await", "dyn", "abstract", "become", "override", "typeof", "unsized", "virtual",
        "try", "gen",
    ];
    match f.strip_suffix('_') {
        Some(base) if KEYWORDS.contains(&base) => base,
        _ => f,
    }
}

fn is_anon_field(f: &str) -> bool {
    f.starts_with("__bindgen_anon_")
}

/// Compiles `c` with the Xen headers; returns the 1-based line numbers the compiler
/// reported errors on, or `None` if it compiled.
fn compile(dir: &Path, name: &str, c: &str) -> Result<(), (BTreeSet<usize>, String)> {
    let file = dir.join(name);
    std::fs::write(&file, c).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args([
            "-std=gnu11",
            "-fsyntax-only",
            "-fmax-errors=0",
            "-D__XEN_TOOLS__=1",
        ])
        .arg(&file)
        .output()
        .expect("run the C compiler");
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let prefix = format!("{}:", file.display());
    let lines = stderr
        .lines()
        .filter(|l| l.contains(": error: "))
        .filter_map(|l| l.strip_prefix(&prefix)?.split(':').next()?.parse().ok())
        .collect();
    Err((lines, stderr))
}

/// Finds the C spelling of every type in `types` by compiling `sizeof` probes, a round per
/// nesting level: `struct T`, `union T`, `T`, then `__typeof__` of a named field of a parent
/// already spelled.
fn spell_types(
    dir: &Path,
    types: &BTreeSet<String>,
    parents: &BTreeMap<String, Vec<(String, String, usize)>>,
) -> BTreeMap<String, String> {
    let header = format!("#include \"{ABI_H}\"\n#include <stddef.h>\n");
    let mut spelled: BTreeMap<String, String> = BTreeMap::new();
    for round in 0.. {
        let mut candidates: Vec<(String, String)> = Vec::new();
        for t in types.iter().filter(|t| !spelled.contains_key(*t)) {
            if round == 0 {
                for c in [format!("struct {t}"), format!("union {t}"), t.clone()] {
                    candidates.push((t.clone(), c));
                }
            }
            for (p, f, dims) in parents.get(t).into_iter().flatten() {
                if let Some(pc) = spelled.get(p) {
                    let index = "[0]".repeat(*dims);
                    let c = format!("__typeof__((({pc} *)0)->{}{index})", c_field(f));
                    candidates.push((t.clone(), c));
                }
            }
        }
        if candidates.is_empty() {
            break;
        }
        let mut c = header.clone();
        let first = c.lines().count() + 1;
        // Each probe in its own function: a wrong `struct T` declares its tag only there.
        for (i, (_, cand)) in candidates.iter().enumerate() {
            writeln!(
                c,
                "void probe{i}(void) {{ _Static_assert(sizeof({cand}) >= 0, \"\"); }}"
            )
            .unwrap();
        }
        let bad = match compile(dir, &format!("probe{round}.c"), &c) {
            Ok(()) => BTreeSet::new(),
            Err((bad, _)) => bad,
        };
        let before = spelled.len();
        for (i, (t, cand)) in candidates.into_iter().enumerate() {
            if !bad.contains(&(first + i)) {
                spelled.entry(t).or_insert(cand);
            }
        }
        if spelled.len() == before {
            break;
        }
    }
    spelled
}

#[test]
fn bindgen_layouts_match_the_c_compiler() {
    assert!(
        Path::new("/usr/include/xen/io/ring.h").exists(),
        "the Xen headers are missing: install Debian's libxen-dev"
    );
    let src = std::fs::read_to_string(GENERATED).unwrap();
    let checks = parse_assertions(&src);
    assert!(
        checks.len() > 1000,
        "parsed only {} assertions",
        checks.len()
    );
    let records = parse_records(&src);

    // Who holds each type: named fields (for `__typeof__`) and anonymous members.
    let mut parents: BTreeMap<String, Vec<(String, String, usize)>> = BTreeMap::new();
    let mut anon_parent: BTreeMap<String, String> = BTreeMap::new();
    for (p, fields) in &records {
        for f in fields {
            if is_anon_field(&f.name) {
                anon_parent.insert(f.ty.clone(), p.clone());
            } else {
                parents
                    .entry(f.ty.clone())
                    .or_default()
                    .push((p.clone(), f.name.clone(), f.dims));
            }
        }
    }

    let dir = tempfile::Builder::new()
        .prefix("xen-sys-layout-")
        .tempdir()
        .unwrap();
    let types: BTreeSet<String> = checks.iter().map(|c| c.ty().to_string()).collect();
    let spelled = spell_types(dir.path(), &types, &parents);

    let offsets: BTreeMap<(&str, &str), usize> = checks
        .iter()
        .filter_map(|c| match c {
            Check::Offset(t, f, n) => Some(((t.as_str(), f.as_str()), *n)),
            _ => None,
        })
        .collect();

    // An anonymous member's fields are members of the nearest spelled ancestor: returns it and
    // the member's first field with an asserted offset (the others are checked relative to it).
    let anon_home = |t: &str| -> Option<(String, String)> {
        let mut p = anon_parent.get(t)?;
        while !spelled.contains_key(p) {
            p = anon_parent.get(p)?;
        }
        let base = records
            .get(t)?
            .iter()
            .find(|f| offsets.contains_key(&(t, f.name.as_str())))?;
        Some((spelled[p].clone(), base.name.clone()))
    };
    let mut c = format!("#include \"{ABI_H}\"\n#include <stddef.h>\n");
    let mut direct = 0;
    let mut relative = 0;
    let mut explained: BTreeMap<&str, usize> = BTreeMap::new();
    let mut unexplained = Vec::new();
    let mut sized = BTreeSet::new();
    for check in &checks {
        let t = check.ty();
        if let Some(ct) = spelled.get(t) {
            let line = match check {
                Check::Size(_, n) => {
                    sized.insert(t.to_string());
                    format!("_Static_assert(sizeof({ct}) == {n}, \"size of {t}\");")
                }
                Check::Align(_, n) => {
                    format!("_Static_assert(_Alignof({ct}) == {n}, \"align of {t}\");")
                }
                // The anonymous member's own offset is not asserted by bindgen.
                Check::Offset(_, f, _) if is_anon_field(f) => {
                    unexplained.push(format!("{check:?}"));
                    continue;
                }
                Check::Offset(_, f, n) => format!(
                    "_Static_assert(offsetof({ct}, {}) == {n}, \"offset of {t}::{f}\");",
                    c_field(f)
                ),
            };
            writeln!(c, "{line}").unwrap();
            direct += 1;
        } else if anon_parent.contains_key(t) {
            match (check, anon_home(t)) {
                (Check::Size(..) | Check::Align(..), _) => {
                    *explained.entry(EXPLAINED[0].0).or_default() += 1;
                }
                (Check::Offset(_, f, n), Some((home, base))) if !is_anon_field(f) => {
                    let b = offsets[&(t, base.as_str())];
                    writeln!(
                        c,
                        "_Static_assert(offsetof({home}, {}) - offsetof({home}, {}) == {n} - {b}, \
                         \"offset of {t}::{f}\");",
                        c_field(f),
                        c_field(&base)
                    )
                    .unwrap();
                    relative += 1;
                }
                _ => unexplained.push(format!("{check:?}")),
            }
        } else if let Some((key, _)) = EXPLAINED.iter().find(|(k, _)| *k == t) {
            *explained.entry(key).or_default() += 1;
        } else {
            unexplained.push(format!("{check:?}"));
        }
    }
    assert!(
        unexplained.is_empty(),
        "{} assertions have no C spelling and are not explained in EXPLAINED:\n{}",
        unexplained.len(),
        unexplained.join("\n")
    );

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
        assert!(sized.contains(t), "no size check was generated for {t}");
    }

    let checked = direct + relative;
    if let Err((_, stderr)) = compile(dir.path(), "layout.c", &c) {
        panic!(
            "{checked} layout assertions; the C compiler disagrees:\n{}",
            stderr.lines().take(40).collect::<Vec<_>>().join("\n")
        );
    }
    let skipped: usize = explained.values().sum();
    assert_eq!(
        checked + skipped,
        checks.len(),
        "every assertion is counted once"
    );
    eprintln!(
        "{checked} of {} bindgen layout assertions hold in C ({direct} directly, {relative} as \
         offsets within anonymous members, over {} types); {skipped} unchecked: {explained:?}",
        checks.len(),
        spelled.len()
    );
}
