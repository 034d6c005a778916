//! Building what goes into dom0: the workspace's real-Xen test binaries and its programs.
//!
//! Convention: a crate with tests that need a real Xen dom0 puts them in `tests/real_xen.rs`,
//! each `#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]`. The harness finds those crates
//! by that file, builds the `real_xen` test target of each, and runs it in dom0.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::proc::{self, Deadline};

/// Packages whose programs are host tools or guest tools, not copied into dom0.
pub const NOT_FOR_DOM0: &[&str] = &["xtask", "xen-sys-gen", "blk-load"];

/// Programs for the PV guest, whose initramfs has busybox and no C library: built static
/// (glibc's `+crt-static`) for `GUEST_TRIPLE`. (`net-load` runs at both ends: dom0 gets it
/// too, as a measured program.)
pub const GUEST_TOOLS: &[&str] = &["blk-load", "net-load"];

/// The guest's target triple (an explicit `--target` keeps the static build's artifacts apart
/// from the host builds, so neither invalidates the other).
pub const GUEST_TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// Programs built with `--release` because dom0 measures them against their C peers (and
/// `xs-load`, the load generator that measures the xenstoreds; `blkbackd`, measured against
/// the kernel's blkback from the guest; `netbackd` and its load tool `net-load`, measured
/// against the kernel's netback).
pub const MEASURED: &[&str] = &["xenstored", "xs-load", "blkbackd", "netbackd", "net-load"];

/// A workspace member, as far as the harness cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Package name.
    pub name: String,
    /// The folder of its Cargo.toml.
    pub dir: PathBuf,
    /// Names of its binary targets.
    pub bins: Vec<String>,
}

impl Package {
    /// Whether it has real-Xen tests (`tests/real_xen.rs`).
    pub fn has_real_xen_tests(&self) -> bool {
        self.dir.join("tests/real_xen.rs").is_file()
    }
}

/// A built executable and the package it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Package name.
    pub package: String,
    /// Target name.
    pub target: String,
    /// The executable.
    pub exe: PathBuf,
}

/// What the builds produced, and which packages failed to build.
#[derive(Debug, Default)]
pub struct Built {
    /// `real_xen` test executables.
    pub tests: Vec<Artifact>,
    /// Program executables.
    pub bins: Vec<Artifact>,
    /// Static executables for the guest ([`GUEST_TOOLS`]).
    pub guest: Vec<Artifact>,
    /// `(package, what failed)` for each package whose build failed.
    pub failures: Vec<(String, String)>,
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Parses `cargo metadata --no-deps --format-version 1` output into the workspace's packages.
pub fn parse_metadata(json: &str) -> Result<Vec<Package>> {
    let v: Value = serde_json::from_str(json)
        .map_err(|e| Error::Other(format!("cargo metadata output: {e}")))?;
    let pkgs = v["packages"]
        .as_array()
        .ok_or_else(|| Error::Other("cargo metadata: no packages".into()))?;
    Ok(pkgs
        .iter()
        .filter_map(|p| {
            let name = p["name"].as_str()?.to_string();
            let dir = Path::new(p["manifest_path"].as_str()?)
                .parent()?
                .to_path_buf();
            let bins = p["targets"]
                .as_array()?
                .iter()
                .filter(|t| {
                    t["kind"]
                        .as_array()
                        .is_some_and(|k| k.iter().any(|k| k == "bin"))
                })
                .filter_map(|t| t["name"].as_str().map(str::to_string))
                .collect();
            Some(Package { name, dir, bins })
        })
        .collect())
}

/// The workspace's packages.
pub fn workspace(repo: &Path, deadline: Deadline) -> Result<Vec<Package>> {
    let out = proc::output(
        cargo()
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .current_dir(repo),
        deadline,
    )?;
    parse_metadata(&String::from_utf8_lossy(&out))
}

/// Executables in cargo's `--message-format=json` output, attributed to `packages` by the
/// source path of their target.
pub fn parse_artifacts(json_lines: &str, packages: &[Package]) -> Vec<Artifact> {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact")
        .filter_map(|v| {
            let exe = PathBuf::from(v["executable"].as_str()?);
            let target = v["target"]["name"].as_str()?.to_string();
            let src = Path::new(v["target"]["src_path"].as_str()?);
            // The deepest package folder holding the source wins (packages nest: xen-sys/gen).
            let package = packages
                .iter()
                .filter(|p| src.starts_with(&p.dir))
                .max_by_key(|p| p.dir.components().count())?
                .name
                .clone();
            Some(Artifact {
                package,
                target,
                exe,
            })
        })
        .collect()
}

/// Where and under which limit the builds run.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    repo: &'a Path,
    target_dir: &'a Path,
    all: &'a [Package],
    deadline: Deadline,
    /// `RUSTFLAGS` for the build (the static guest tools).
    rustflags: Option<&'a str>,
}

/// Runs one cargo build over `packages` (with `args`), returning its artifacts; when it fails,
/// retries package by package so that one broken crate does not hide the others.
fn build_each(
    ctx: &Ctx<'_>,
    args: &[&str],
    packages: &[&Package],
    built: &mut Vec<Artifact>,
    failures: &mut Vec<(String, String)>,
) -> Result<()> {
    let Ctx {
        repo,
        target_dir,
        all,
        deadline,
        rustflags,
    } = *ctx;
    if packages.is_empty() {
        return Ok(());
    }
    let run = |pkgs: &[&Package]| -> Result<Vec<Artifact>> {
        let mut cmd = cargo();
        cmd.args(args)
            .arg("--message-format=json-render-diagnostics")
            .arg("--target-dir")
            .arg(target_dir);
        for p in pkgs {
            cmd.args(["-p", &p.name]);
        }
        if let Some(flags) = rustflags {
            cmd.env("RUSTFLAGS", flags);
        }
        let out = proc::output(cmd.current_dir(repo), deadline)?;
        parse_artifacts(&String::from_utf8_lossy(&out), all)
            .into_iter()
            .map(|a| keep(a, target_dir))
            .collect()
    };
    match run(packages) {
        Ok(a) => built.extend(a),
        Err(Error::Timeout(s)) => return Err(Error::Timeout(s)),
        Err(_) if packages.len() > 1 => {
            for p in packages {
                match run(&[*p]) {
                    Ok(a) => built.extend(a),
                    Err(Error::Timeout(s)) => return Err(Error::Timeout(s)),
                    Err(e) => failures.push((p.name.clone(), format!("cargo {}: {e}", args[0]))),
                }
            }
        }
        Err(e) => failures.push((packages[0].name.clone(), format!("cargo {}: {e}", args[0]))),
    }
    Ok(())
}

/// Copies an artifact out of cargo's folders as soon as its build is done: a target folder
/// shared with other checkouts (whose builds take cargo's lock in between this run's builds)
/// may hold another checkout's build of the same program by the time the run stages it.
fn keep(mut a: Artifact, target_dir: &Path) -> Result<Artifact> {
    let dir = kept(target_dir);
    std::fs::create_dir_all(&dir).map_err(crate::error::io("create", &dir))?;
    // Named by its place in the target folder: one program built for dom0 and, static, for
    // the guest (`net-load`) is two artifacts of one name.
    let place = a.exe.strip_prefix(target_dir).unwrap_or(&a.exe);
    let name = place.to_string_lossy().replace(['/', '\\'], "_");
    let out = dir.join(format!("{}-{}", a.package, name));
    std::fs::copy(&a.exe, &out).map_err(crate::error::io("copy", &a.exe))?;
    a.exe = out;
    Ok(a)
}

fn kept(target_dir: &Path) -> PathBuf {
    target_dir.join(format!("xtask-keep-{}", std::process::id()))
}

/// Removes this run's copies ([`keep`]) once they are staged.
pub fn forget_kept(target_dir: &Path) {
    let _ = std::fs::remove_dir_all(kept(target_dir));
}

/// Builds every `real_xen` test target and every program (dev profile; [`MEASURED`] ones release).
pub fn build(
    repo: &Path,
    target_dir: &Path,
    packages: &[Package],
    deadline: Deadline,
) -> Result<Built> {
    let mut b = Built::default();
    let ctx = Ctx {
        repo,
        target_dir,
        all: packages,
        deadline,
        rustflags: None,
    };
    // Guest tools first: the guest's checks need them.
    let guest: Vec<&Package> = packages
        .iter()
        .filter(|p| GUEST_TOOLS.contains(&p.name.as_str()))
        .collect();
    let static_ctx = Ctx {
        rustflags: Some("-C target-feature=+crt-static"),
        ..ctx
    };
    let guest_args = ["build", "--release", "--bins", "--target", GUEST_TRIPLE];
    build_each(
        &static_ctx,
        &guest_args,
        &guest,
        &mut b.guest,
        &mut b.failures,
    )?;
    let with_tests: Vec<&Package> = packages.iter().filter(|p| p.has_real_xen_tests()).collect();
    let test_args = ["test", "--no-run", "--test", "real_xen"];
    build_each(&ctx, &test_args, &with_tests, &mut b.tests, &mut b.failures)?;
    b.tests.retain(|a| a.target == "real_xen");
    let with_bins: Vec<&Package> = packages
        .iter()
        .filter(|p| !p.bins.is_empty() && !NOT_FOR_DOM0.contains(&p.name.as_str()))
        .collect();
    // Programs in the dev profile share the test builds' artifacts; the measured ones are rebuilt
    // optimised so that peers are compared fairly.
    build_each(
        &ctx,
        &["build", "--bins"],
        &with_bins,
        &mut b.bins,
        &mut b.failures,
    )?;
    let measured: Vec<&Package> = with_bins
        .iter()
        .copied()
        .filter(|p| p.bins.iter().any(|n| MEASURED.contains(&n.as_str())))
        .collect();
    let mut optimised = Vec::new();
    build_each(
        &ctx,
        &["build", "--release", "--bins"],
        &measured,
        &mut optimised,
        &mut b.failures,
    )?;
    b.bins
        .retain(|a| !optimised.iter().any(|o| o.target == a.target));
    b.bins.extend(optimised);
    b.bins.retain(|a| {
        packages
            .iter()
            .any(|p| p.name == a.package && p.bins.contains(&a.target))
    });
    Ok(b)
}

/// Copies `exe` to `out` without debug info (smaller initramfs), or plainly if `strip` fails.
pub fn strip_into(exe: &Path, out: &Path, deadline: Deadline) -> Result<()> {
    let stripped = proc::output(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(out)
            .arg(exe),
        deadline,
    );
    if stripped.is_err() {
        std::fs::copy(exe, out).map_err(crate::error::io("copy", exe))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkgs() -> Vec<Package> {
        parse_metadata(
            r#"{"packages":[
              {"name":"xen-sys","manifest_path":"/r/xen-sys/Cargo.toml","targets":[{"name":"xen_sys","kind":["lib"]}]},
              {"name":"xen-sys-gen","manifest_path":"/r/xen-sys/gen/Cargo.toml","targets":[{"name":"xen-sys-gen","kind":["bin"]}]},
              {"name":"xenstored","manifest_path":"/r/xenstored/Cargo.toml","targets":[{"name":"xenstored","kind":["lib"]},{"name":"xenstored","kind":["bin"]}]}
            ]}"#,
        )
        .unwrap()
    }

    #[test]
    fn metadata_gives_folders_and_binaries() {
        let p = pkgs();
        assert_eq!(p.len(), 3);
        assert_eq!(p[1].dir, Path::new("/r/xen-sys/gen"));
        assert_eq!(p[1].bins, ["xen-sys-gen"]);
        assert!(p[0].bins.is_empty());
        assert_eq!(p[2].bins, ["xenstored"]);
        assert!(parse_metadata("not json").is_err());
        assert!(parse_metadata("{}").is_err());
    }

    #[test]
    fn artifacts_are_attributed_to_the_deepest_package() {
        let lines = [
            r#"{"reason":"compiler-artifact","target":{"name":"real_xen","kind":["test"],"src_path":"/r/xen-sys/tests/real_xen.rs"},"executable":"/t/debug/deps/real_xen-1"}"#,
            r#"{"reason":"compiler-artifact","target":{"name":"xen-sys-gen","kind":["bin"],"src_path":"/r/xen-sys/gen/src/main.rs"},"executable":"/t/release/xen-sys-gen"}"#,
            r#"{"reason":"compiler-artifact","target":{"name":"libc","kind":["lib"],"src_path":"/reg/libc/src/lib.rs"},"executable":null}"#,
            r#"{"reason":"build-finished","success":true}"#,
            "garbage",
        ]
        .join("\n");
        let a = parse_artifacts(&lines, &pkgs());
        assert_eq!(a.len(), 2);
        assert_eq!(
            (a[0].package.as_str(), a[0].target.as_str()),
            ("xen-sys", "real_xen")
        );
        assert_eq!(a[1].package, "xen-sys-gen");
        assert_eq!(a[1].exe, Path::new("/t/release/xen-sys-gen"));
    }

    #[test]
    fn real_xen_tests_are_discovered_by_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/tests")).unwrap();
        std::fs::write(dir.path().join("a/tests/real_xen.rs"), "").unwrap();
        std::fs::create_dir_all(dir.path().join("b/tests")).unwrap();
        std::fs::write(dir.path().join("b/tests/other.rs"), "").unwrap();
        let p = |n: &str| Package {
            name: n.into(),
            dir: dir.path().join(n),
            bins: vec![],
        };
        assert!(p("a").has_real_xen_tests());
        assert!(!p("b").has_real_xen_tests());
    }
}
