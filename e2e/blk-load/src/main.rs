//! `blk-load`: a small fio-like block workload, built static for the e2e guest.
//!
//! Direct I/O (`O_DIRECT`, page-aligned buffers) on a block device or file, `--qd N`
//! threads each keeping one request in flight (so the device sees N at once, as fio's
//! `numjobs=N`), random offsets aligned to the block size or one shared sequential stream,
//! inside `[--offset, --offset + --span)`. Prints one line per run:
//!
//! ```text
//! blk-load dev=/dev/xvdb op=read bs=4096 pattern=random qd=32 ops=5123 secs=1.000 iops=5123 kib_s=20492 mean_us=6245 p99_us=11800
//! ```

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

/// Direct-I/O block workload.
#[derive(Debug, Parser)]
#[command(name = "blk-load", version)]
struct Args {
    /// Block device or file.
    #[arg(long)]
    dev: PathBuf,
    /// Reads or writes.
    #[arg(long, value_enum)]
    op: Op,
    /// Bytes per request (a multiple of 512).
    #[arg(long, default_value_t = 4096)]
    bs: u64,
    /// Random offsets or one sequential stream.
    #[arg(long, value_enum, default_value_t = Pattern::Random)]
    pattern: Pattern,
    /// Requests in flight (threads).
    #[arg(long, default_value_t = 1)]
    qd: usize,
    /// Milliseconds to run.
    #[arg(long, default_value_t = 1000)]
    ms: u64,
    /// First byte of the region used.
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// Bytes of the region used (0: to the end of the device).
    #[arg(long, default_value_t = 0)]
    span: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Op {
    Read,
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Pattern {
    Random,
    Seq,
}

/// The region's block slots and how to pick the next one.
struct Plan {
    base: u64,
    blocks: u64,
    bs: u64,
    pattern: Pattern,
    next: AtomicU64,
}

impl Plan {
    fn offset(&self, rng: &mut u64) -> u64 {
        let slot = match self.pattern {
            Pattern::Seq => self.next.fetch_add(1, Ordering::Relaxed) % self.blocks,
            Pattern::Random => {
                // xorshift64*
                *rng ^= *rng >> 12;
                *rng ^= *rng << 25;
                *rng ^= *rng >> 27;
                rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % self.blocks
            }
        };
        self.base + slot * self.bs
    }
}

fn device_size(f: &File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    // A block device's metadata length is 0; seeking to the end gives its size.
    let mut f = f;
    f.seek(SeekFrom::End(0))
}

/// One thread: its latencies in microseconds.
fn worker(
    file: &File,
    plan: &Plan,
    op: Op,
    seed: u64,
    stop: &AtomicBool,
) -> std::io::Result<Vec<u32>> {
    let mut buf = memmap2::MmapMut::map_anon(plan.bs as usize)?;
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u64 ^ seed) as u8;
    }
    let mut rng = seed | 1;
    let mut lat = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let off = plan.offset(&mut rng);
        let t = Instant::now();
        let n = match op {
            Op::Read => file.read_at(&mut buf, off)?,
            Op::Write => file.write_at(&buf, off)?,
        };
        if n != buf.len() {
            return Err(std::io::Error::other(format!(
                "short {op:?} at {off}: {n} of {} bytes",
                buf.len()
            )));
        }
        lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
    }
    Ok(lat)
}

fn run(a: &Args) -> Result<String, String> {
    if a.bs == 0 || a.bs % 512 != 0 {
        return Err(format!("--bs {} is not a multiple of 512", a.bs));
    }
    if a.qd == 0 {
        return Err("--qd must be at least 1".into());
    }
    let file = OpenOptions::new()
        .read(true)
        .write(a.op == Op::Write)
        .custom_flags(libc::O_DIRECT)
        .open(&a.dev)
        .map_err(|e| format!("{}: {e}", a.dev.display()))?;
    let size = device_size(&file).map_err(|e| format!("{}: size: {e}", a.dev.display()))?;
    let span = if a.span == 0 {
        size.saturating_sub(a.offset)
    } else {
        a.span
    };
    if a.offset.checked_add(span).is_none_or(|end| end > size) || span < a.bs {
        return Err(format!(
            "region {}+{span} does not fit {} bytes of {}",
            a.offset,
            size,
            a.dev.display()
        ));
    }
    let plan = Plan {
        base: a.offset,
        blocks: span / a.bs,
        bs: a.bs,
        pattern: a.pattern,
        next: AtomicU64::new(0),
    };
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let results: Vec<std::io::Result<Vec<u32>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..a.qd)
            .map(|i| {
                let (file, plan, stop) = (&file, &plan, &stop);
                s.spawn(move || {
                    worker(
                        file,
                        plan,
                        a.op,
                        0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1),
                        stop,
                    )
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(a.ms));
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("worker panicked")))
            })
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    for r in results {
        lat.extend(r.map_err(|e| format!("{}: {e}", a.dev.display()))?);
    }
    if lat.is_empty() {
        return Err("no request completed".into());
    }
    lat.sort_unstable();
    let ops = lat.len() as u64;
    let mean = lat.iter().map(|&l| u64::from(l)).sum::<u64>() / ops;
    let p99 = lat[((lat.len() * 99) / 100).min(lat.len() - 1)];
    Ok(format!(
        "blk-load dev={} op={} bs={} pattern={} qd={} ops={ops} secs={secs:.3} iops={} kib_s={} mean_us={mean} p99_us={p99}",
        a.dev.display(),
        if a.op == Op::Read { "read" } else { "write" },
        a.bs,
        if a.pattern == Pattern::Random { "random" } else { "seq" },
        a.qd,
        (ops as f64 / secs) as u64,
        (ops as f64 * a.bs as f64 / 1024.0 / secs) as u64,
    ))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("blk-load: {e}");
            ExitCode::FAILURE
        }
    }
}
