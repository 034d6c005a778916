//! Booting Xen with its dom0 under `qemu-system-x86_64` (TCG: no nested virtualisation here)
//! and streaming the serial console.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use crate::error::{io as ioerr, Result};
use crate::proc::{self, Deadline};

/// What to boot, and on what machine.
#[derive(Debug, Clone)]
pub struct Boot {
    /// The uncompressed Xen multiboot ELF.
    pub xen: PathBuf,
    /// dom0's kernel.
    pub kernel: PathBuf,
    /// dom0's kernel command line.
    pub kernel_args: String,
    /// dom0's initramfs.
    pub initrd: PathBuf,
    /// Virtual CPUs.
    pub smp: u32,
    /// Machine memory in MiB.
    pub memory_mb: u32,
    /// dom0's memory in MiB.
    pub dom0_mem_mb: u32,
    /// A loopback port of this machine forwarded to dom0's port 443 (an e1000 NIC on
    /// QEMU's user network, dom0 at 10.0.2.15), for the host-side XenAPI SDK.
    pub https_forward: Option<u16>,
}

/// The guest's `cpus` setting for `xl` on a machine of `smp` CPUs: every physical CPU but
/// dom0's (empty with one CPU).
pub fn guest_cpus(smp: u32) -> String {
    match smp {
        0 | 1 => String::new(),
        2 => "1".into(),
        n => format!("1-{}", n - 1),
    }
}

/// How the boot ended.
#[derive(Debug)]
pub enum End {
    /// QEMU exited (dom0 powered off, or QEMU failed).
    Exited(ExitStatus),
    /// The deadline passed; QEMU's process group was killed.
    TimedOut,
}

impl Boot {
    /// Xen's command line. `smap=0 smep=0` is required under TCG: otherwise dom0 dies at once
    /// with `d0v0 Unhandled: vec 14, #PF[0001]`.
    ///
    /// dom0 gets one vCPU pinned to physical CPU 0, and the guest is pinned to the others
    /// ([`guest_cpus`]). With dom0 on two vCPUs sharing physical CPUs with the guest,
    /// dom0's user space crashed at random once the guest ran and the host was busy:
    /// busybox applets faulting on thread-local reads, glibc's `malloc(): corrupted top size`
    /// in multithreaded daemons (seen in 8 of 8 runs on a loaded host, in none of the 6 since with this
    /// layout). Sharing no physical CPU between the two PV domains avoids it.
    pub fn xen_args(&self) -> String {
        format!(
            "console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all dom0_mem={0}M,max:{0}M dom0_max_vcpus=1 dom0_vcpus_pin smap=0 smep=0",
            self.dom0_mem_mb
        )
    }

    /// The QEMU command line.
    pub fn command(&self) -> Command {
        // QEMU splits -initrd at commas: a comma inside an argument is written twice.
        let module = |p: &Path, args: &str| {
            let s = if args.is_empty() {
                p.display().to_string()
            } else {
                format!("{} {args}", p.display())
            };
            s.replace(',', ",,")
        };
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-machine", "pc", "-accel", "tcg", "-cpu", "max"])
            .args([
                "-smp",
                &self.smp.to_string(),
                "-m",
                &self.memory_mb.to_string(),
            ])
            .args([
                "-nographic",
                "-monitor",
                "none",
                "-serial",
                "stdio",
                "-no-reboot",
                "-nodefaults",
            ])
            .args(self.https_forward.iter().flat_map(|p| {
                [
                    "-netdev".to_owned(),
                    format!("user,id=host,hostfwd=tcp:127.0.0.1:{p}-10.0.2.15:443"),
                    "-device".to_owned(),
                    "e1000,netdev=host".to_owned(),
                ]
            }))
            .arg("-kernel")
            .arg(&self.xen)
            .args(["-append", &self.xen_args()])
            .arg("-initrd")
            .arg(format!(
                "{},{}",
                module(&self.kernel, &self.kernel_args),
                module(&self.initrd, "")
            ));
        cmd
    }
}

/// Boots and streams every console line, time-stamped, to stdout and `log`, handing each to
/// `on_line`. Returns when QEMU exits or the deadline passes (then QEMU is killed).
pub fn run(
    boot: &Boot,
    log: &Path,
    deadline: Deadline,
    mut on_line: impl FnMut(&str),
) -> Result<End> {
    let mut log =
        std::io::BufWriter::new(std::fs::File::create(log).map_err(ioerr("create", log))?);
    let mut cmd = boot.command();
    eprintln!("e2e: {}", proc::describe(&cmd));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = proc::spawn_group(&mut cmd)?;
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [
        Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("piped")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            while matches!(r.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                if tx.send(line).is_err() {
                    break;
                }
                buf.clear();
            }
        });
    }
    drop(tx);
    let stdout = std::io::stdout();
    let end = loop {
        let Ok(left) = deadline.remaining() else {
            proc::kill_group(&mut child);
            break End::TimedOut;
        };
        match rx.recv_timeout(left) {
            Ok(line) => {
                let stamped = format!("[{:7.2}] {line}\n", start.elapsed().as_secs_f64());
                let _ = stdout.lock().write_all(stamped.as_bytes());
                let _ = log.write_all(stamped.as_bytes());
                on_line(&line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            // Both pipes closed: QEMU is exiting.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break End::Exited(proc::wait_until(&mut child, deadline)?)
            }
        }
    };
    let _ = log.flush();
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_in_module_arguments_are_escaped() {
        let b = Boot {
            xen: "/c/xen".into(),
            kernel: "/c/vmlinux".into(),
            kernel_args: "console=hvc0 a=1,2".into(),
            initrd: "/c/initrd".into(),
            smp: 2,
            memory_mb: 2048,
            dom0_mem_mb: 1024,
            https_forward: Some(4443),
        };
        let cmd = b.command();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let i = args.iter().position(|a| a == "-initrd").unwrap();
        assert_eq!(args[i + 1], "/c/vmlinux console=hvc0 a=1,,2,/c/initrd");
        let n = args.iter().position(|a| a == "-netdev").unwrap();
        assert_eq!(
            args[n + 1],
            "user,id=host,hostfwd=tcp:127.0.0.1:4443-10.0.2.15:443"
        );
        assert!(b.xen_args().contains("smap=0 smep=0"));
        assert!(b.xen_args().contains("dom0_mem=1024M,max:1024M"));
        assert!(b.xen_args().contains("dom0_max_vcpus=1 dom0_vcpus_pin"));
    }

    #[test]
    fn the_guest_gets_every_cpu_but_dom0s() {
        assert_eq!(guest_cpus(1), "");
        assert_eq!(guest_cpus(2), "1");
        assert_eq!(guest_cpus(4), "1-3");
    }
}
