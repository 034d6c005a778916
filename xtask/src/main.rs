//! Project automation: `cargo xtask <command>`.
//!
//! `cargo xtask e2e` boots Debian's Xen 4.17 and Linux dom0 under QEMU (software emulation),
//! starts the Xen daemons in dom0, runs every real-Xen test of the workspace there, boots a PV
//! guest with a blkback disk and a netback vif, prints peer measurements, and exits with the
//! tests' status. See `xtask/README.md`.
//!
//! Real-Xen test convention: a crate with tests that need a Xen dom0 puts them in
//! `<crate>/tests/real_xen.rs`, each `#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]`.
//! The harness discovers such crates by that file, builds the `real_xen` test target, copies the
//! executable (and the libraries it needs) into dom0 and runs each test there with
//! `--ignored --exact <name> --test-threads=1 --nocapture`.

mod build;
mod bzimage;
mod cpio;
mod debs;
mod error;
mod initramfs;
mod pool;
mod pool_ha;
mod proc;
mod proxy;
mod qemu;
mod report;
mod sdk;

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::{io as ioerr, Error, Result};
use crate::proc::Deadline;
use crate::report::Report;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot real Xen under QEMU and run the real-Xen tests, checks and peer measurements in dom0.
    E2e(E2eArgs),
    /// Run a 3-member etcd cluster and a pool of 3 xapi on simulated hosts on loopback
    /// through fault steps and randomized fault schedules (`pool: N passed, M failed`).
    Pool(pool::PoolArgs),
}

/// Which xenstored dom0 runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Xenstored {
    /// The project's own `xenstored` binary.
    Ours,
    /// Debian's C xenstored.
    C,
}

impl Xenstored {
    fn name(self) -> &'static str {
        match self {
            Xenstored::Ours => "ours",
            Xenstored::C => "c",
        }
    }
}

/// Which xenconsoled dom0 runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Xenconsoled {
    /// The project's own `xenconsoled` binary.
    Ours,
    /// Debian's C xenconsoled.
    C,
}

impl Xenconsoled {
    fn name(self) -> &'static str {
        match self {
            Xenconsoled::Ours => "ours",
            Xenconsoled::C => "c",
        }
    }
}

/// Which hotplug scripts set up the guest's backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Hotplug {
    /// `e2e/block-e2e.sh` and `e2e/vif-e2e.sh`.
    E2e,
    /// Debian's `/etc/xen/scripts/block` and `vif-bridge`.
    Debian,
}

/// How a kernel is handed to its loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum KernelFormat {
    /// The ELF `vmlinux`, extracted on the host: nothing to decompress under emulation.
    Elf,
    /// Debian's compressed `vmlinuz`.
    Bzimage,
}

#[derive(clap::Args)]
struct E2eArgs {
    /// Folder for downloaded packages, unpacked trees, images and logs.
    #[arg(long, default_value = ".xtask-cache")]
    cache_dir: PathBuf,
    /// Overall time limit in seconds, for everything (download, builds, boot).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// The xenstored that dom0 runs.
    #[arg(long, value_enum, default_value_t = Xenstored::Ours)]
    xenstored: Xenstored,
    /// The xenconsoled that dom0 runs (the guest's console log and `xl console` are checked
    /// through it).
    #[arg(long, value_enum, default_value_t = Xenconsoled::Ours)]
    xenconsoled: Xenconsoled,
    /// Iterations of test-xenstore for the xenstored measurement (0: skip it).
    #[arg(long, default_value_t = 20)]
    xs_iters: u32,
    /// Hotplug scripts for the guest's disk and vif: `e2e` (minimal, fast) or `debian` (Debian's
    /// `block` and `vif-bridge`, tens of seconds slower under emulation).
    #[arg(long, value_enum, default_value_t = Hotplug::E2e)]
    hotplug: Hotplug,
    /// Skip the PV guest.
    #[arg(long)]
    no_domu: bool,
    /// Virtual CPUs of the emulated machine.
    #[arg(long, default_value_t = 2)]
    smp: u32,
    /// Memory of the emulated machine in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u32,
    /// dom0's memory in MiB.
    #[arg(long, default_value_t = 1024)]
    dom0_memory: u32,
    /// Per-test time limit inside dom0, in seconds.
    #[arg(long, default_value_t = 120)]
    test_timeout: u32,
    /// Cargo target folder for the builds [default: $CARGO_TARGET_DIR, else <repo>/target].
    #[arg(long)]
    target_dir: Option<PathBuf>,
    /// Serial console log [default: <cache-dir>/serial.log].
    #[arg(long)]
    log: Option<PathBuf>,
    /// Kernel format for the guest: `elf` (extracted vmlinux) or `bzimage` (Debian's vmlinuz).
    #[arg(long, value_enum, default_value_t = KernelFormat::Elf)]
    domu_kernel: KernelFormat,
    /// Kernel format for dom0.
    #[arg(long, value_enum, default_value_t = KernelFormat::Elf)]
    dom0_kernel: KernelFormat,
    /// Extra dom0 kernel arguments.
    #[arg(long, default_value = "")]
    dom0_args: String,
    /// A result (as named in the summary, e.g. `test:xenctrl-real_xen::<test>`) that may report
    /// SKIP; repeatable. Every other skip fails the run.
    #[arg(long = "allow-skip", value_name = "NAME")]
    allow_skip: Vec<String>,
    /// Run only these parts of dom0's script (comma separated, repeatable): `tests` (every
    /// real-Xen test binary), `tests:<binary>` (one, e.g. `tests:squeezed-real_xen`), `xl-domu`,
    /// `xapi` (with the host's SDK run), `xsbench`, or a script's name in `e2e/parts/`. For
    /// working on one part; a partial run says so in its summary. [default: everything]
    #[arg(long, value_delimiter = ',', value_name = "PART")]
    only: Vec<String>,
}

impl E2eArgs {
    /// Whether `part` runs: everything runs when `--only` was not given.
    fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }
}

/// Results that may skip in every run, and why: every other real-Xen test must run.
const ALLOWED_SKIPS: &[(&str, &str)] = &[];

/// Results that may skip when dom0 runs Debian's C xenstored (`--xenstored c`).
const ALLOWED_SKIPS_WITH_C_XENSTORED: &[(&str, &str)] = &[(
    "test:xenstored-real_xen::dying_domains_are_released_without_release",
    "C xenstored introduces no domain without a ring and has no `stats` control command",
)];

/// The names that may skip in a run with these arguments.
fn allowed_skips(args: &E2eArgs) -> Vec<String> {
    let with_c = match args.xenstored {
        Xenstored::C => ALLOWED_SKIPS_WITH_C_XENSTORED,
        Xenstored::Ours => &[],
    };
    ALLOWED_SKIPS
        .iter()
        .chain(with_c)
        .map(|(name, _)| name.to_string())
        .chain(args.allow_skip.iter().cloned())
        .collect()
}

fn repo_root() -> PathBuf {
    // xtask's manifest folder is <repo>/xtask.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repository")
        .to_path_buf()
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Cmd::Pool(args) => {
            let no_ha = args.no_ha;
            let make = move || -> Box<dyn pool::HaHooks + Send> {
                if no_ha {
                    Box::new(pool::NoHa)
                } else {
                    Box::new(pool_ha::PoolHa::default())
                }
            };
            if pool::run(args, &repo_root(), &make) {
                0
            } else {
                1
            }
        }
        Cmd::E2e(args) => match e2e(args) {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                eprintln!("e2e: error: {e}");
                println!("e2e: 0 passed, 1 failed, 0 skipped");
                1
            }
        },
    };
    std::process::exit(code);
}

fn step<T>(name: &str, t: &mut Instant, r: Result<T>) -> Result<T> {
    let v = r?;
    eprintln!("e2e: {name} done in {:.1} s", t.elapsed().as_secs_f64());
    *t = Instant::now();
    Ok(v)
}

/// Runs the whole end-to-end test; `Ok(true)` when everything passed.
fn e2e(args: E2eArgs) -> Result<bool> {
    let started = Instant::now();
    let deadline = Deadline::after(args.timeout);
    let repo = repo_root();
    let cache = if args.cache_dir.is_absolute() {
        args.cache_dir.clone()
    } else {
        repo.join(&args.cache_dir)
    };
    std::fs::create_dir_all(&cache).map_err(ioerr("create", &cache))?;
    let target_dir = args
        .target_dir
        .clone()
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| repo.join("target"));
    let mut t = Instant::now();
    let mut report = Report::new(allowed_skips(&args));

    // 1. Packages.
    let kernel_pkg = debs::resolve_kernel(deadline)?;
    let kver = debs::kernel_version(&kernel_pkg).to_string();
    let mut pkgs: Vec<String> = debs::PACKAGES.iter().map(|s| s.to_string()).collect();
    pkgs.push(kernel_pkg);
    let debs = step(
        "packages",
        &mut t,
        debs::download(&cache.join("debs"), &pkgs, deadline),
    )?;
    let root = cache.join("root");
    step("unpack", &mut t, debs::unpack(&debs, &root, deadline))?;

    // 2. Builds.
    let packages = build::workspace(&repo, deadline)?;
    let built = step(
        "cargo builds",
        &mut t,
        build::build(&repo, &target_dir, &packages, deadline),
    )?;
    for (pkg, why) in &built.failures {
        let name = format!("build:{pkg}");
        if !report.checks.iter().any(|c| c.name == name) {
            report.add(&name, false, why.clone());
        }
    }
    let stage = cache.join("stage");
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(ioerr("remove", &stage))?;
    }
    std::fs::create_dir_all(&stage).map_err(ioerr("create", &stage))?;
    let mut tests = Vec::new();
    for a in &built.tests {
        let name = format!("{}-real_xen", a.package);
        let out = stage.join(&name);
        build::strip_into(&a.exe, &out, deadline)?;
        tests.push((name, out));
    }
    let mut bins = Vec::new();
    for a in &built.bins {
        let out = stage.join(&a.target);
        build::strip_into(&a.exe, &out, deadline)?;
        bins.push((a.target.clone(), out));
    }
    let mut guest_tools = Vec::new();
    for a in &built.guest {
        let out = stage.join(format!("guest-{}", a.target));
        build::strip_into(&a.exe, &out, deadline)?;
        guest_tools.push((a.target.clone(), out));
    }
    build::forget_kept(&target_dir);
    let names = |v: &[(String, PathBuf)]| {
        v.iter()
            .map(|t| t.0.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    eprintln!(
        "e2e: real-Xen test binaries: [{}]; programs: [{}]; guest tools: [{}]",
        names(&tests),
        names(&bins),
        names(&guest_tools)
    );
    if args.xenconsoled == Xenconsoled::Ours && !bins.iter().any(|(n, _)| n == "xenconsoled") {
        return Err(Error::Other(
            "--xenconsoled ours: the workspace built no xenconsoled binary".into(),
        ));
    }
    let have_ours = bins.iter().any(|(n, _)| n == "xenstored");
    if args.xenstored == Xenstored::Ours && !have_ours {
        return Err(Error::Other(
            "--xenstored ours: the workspace built no xenstored binary".into(),
        ));
    }

    // 3. Images.
    let xen = cache.join("xen");
    if !xen.is_file() {
        let gz = root.join("boot/xen-4.17-amd64.gz");
        let out = proc::output(
            std::process::Command::new("gzip").arg("-dc").arg(&gz),
            deadline,
        )?;
        std::fs::write(&xen, out).map_err(ioerr("write", &xen))?;
    }
    let (base, base_paths) = initramfs::dom0_base(&root, &kver, &cache, deadline)?;
    let other = match (args.xenstored, have_ours) {
        (Xenstored::C, true) => "ours",
        (Xenstored::Ours, _) => "c",
        (Xenstored::C, false) => "",
    };
    let env = format!(
        "XENSTORED={}\nXENCONSOLED={}\nXENSTORED_OTHER={}\nXENSTORED_OURS_ARGS=\"\"\nXS_ITERS={}\nDOMU={}\nTEST_TIMEOUT={}\nHOTPLUG={}\nDOMU_CPUS=\"{}\"\nE2E_ONLY=\"{}\"\n",
        args.xenstored.name(),
        args.xenconsoled.name(),
        if args.xs_iters > 0 { other } else { "" },
        args.xs_iters,
        u8::from(!args.no_domu),
        args.test_timeout,
        if args.hotplug == Hotplug::E2e { "e2e" } else { "debian" },
        qemu::guest_cpus(args.smp),
        if args.only.is_empty() {
            String::new()
        } else {
            format!(",{},", args.only.join(","))
        },
    );
    let vmlinuz = root.join(format!("boot/vmlinuz-{kver}"));
    let vmlinux = cache.join(format!("vmlinux-{kver}"));
    if !vmlinux.is_file() {
        bzimage::extract_vmlinux(&vmlinuz, &vmlinux)?;
    }
    let pick = |f: KernelFormat| {
        if f == KernelFormat::Elf {
            vmlinux.clone()
        } else {
            vmlinuz.clone()
        }
    };
    let parts = initramfs::parts("parts")?;
    let guest_parts = initramfs::parts("guest-parts")?;
    let initrd = cache.join("dom0-initrd.cpio");
    let extra = initramfs::Dom0Extra {
        env,
        tests: &tests,
        bins: &bins,
        domu_initrd: initramfs::domu(&root, &kver, &guest_tools, &guest_parts)?,
        parts: &parts,
        domu_kernel: pick(args.domu_kernel),
    };
    initramfs::dom0(&base, &base_paths, &root, extra, &initrd, deadline)?;
    let kernel = pick(args.dom0_kernel);
    step("images", &mut t, Ok(()))?;

    // 4. Boot.
    let boot = qemu::Boot {
        xen,
        kernel,
        kernel_args: format!(
            "console=hvc0 earlyprintk=xen rdinit=/init {}",
            args.dom0_args
        )
        .trim()
        .to_string(),
        initrd,
        smp: args.smp,
        memory_mb: args.memory,
        dom0_mem_mb: args.dom0_memory,
        https_forward: if args.no_domu || !args.wants("xapi") {
            None
        } else {
            sdk::free_port()
        },
    };
    let mut host_sdk = boot.https_forward.map(|p| sdk::HostSdk::new(p, "e2e"));
    let log = args.log.clone().unwrap_or_else(|| cache.join("serial.log"));
    let mut last_step = String::from("(nothing from dom0's /init yet)");
    let end = qemu::run(&boot, &log, deadline, |line| {
        if let Some(i) = line.find("E2E-RUN ").or_else(|| line.find("E2E-MARK ")) {
            last_step = line[i..].to_string();
        }
        report.feed(line);
        for l in host_sdk
            .as_mut()
            .map(|s| s.on_line(line))
            .unwrap_or_default()
        {
            report.feed(&l);
        }
    })?;
    for l in host_sdk.map(sdk::HostSdk::finish).unwrap_or_default() {
        report.feed(&l);
    }
    let boot_secs = t.elapsed().as_secs_f64();
    match end {
        qemu::End::TimedOut => report.add(
            "e2e-timeout",
            false,
            format!(
                "killed QEMU at the {} s limit; last step: {last_step}",
                args.timeout
            ),
        ),
        qemu::End::Exited(st) if !report.done => report.add(
            "dom0-finished",
            false,
            format!("QEMU exited ({st}) before E2E-DONE"),
        ),
        qemu::End::Exited(_) => {}
    }
    report.metrics.push(report::Metric {
        name: "boot-to-poweroff".into(),
        value: format!("{boot_secs:.1}"),
        unit: "s".into(),
    });
    report.metrics.push(report::Metric {
        name: "e2e-total-wall".into(),
        value: format!("{:.1}", started.elapsed().as_secs_f64()),
        unit: "s".into(),
    });
    println!("{}", report.summary());
    if !args.only.is_empty() {
        println!(
            "e2e: partial run (--only {}): not the whole end to end",
            args.only.join(",")
        );
    }
    eprintln!(
        "e2e: xenstored in dom0: {}; serial log: {}",
        args.xenstored.name(),
        log.display()
    );
    Ok(report.success())
}
