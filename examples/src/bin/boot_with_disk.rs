//! Create and boot a PV domain with a disk served by blkback (see
//! `examples::boot_with_disk`), on the simulated host.

use clap::Parser;

/// Boots a PV guest with a disk, writes blocks from the guest and reads them back.
#[derive(Parser)]
struct Args {
    /// Disk size in MiB.
    #[arg(long, default_value_t = 8)]
    disk_mib: u64,
    /// 4 KiB blocks the guest writes and reads back.
    #[arg(long, default_value_t = 16)]
    blocks: usize,
}

fn main() {
    let args = Args::parse();
    let host = xen_sim::Host::default();
    let result =
        examples::boot_with_disk::run(&host, args.disk_mib, args.blocks, &mut std::io::stdout());
    match result {
        Ok(r) if r.blocks_in_image == args.blocks && r.free_after == r.free_before => {}
        Ok(r) => {
            eprintln!("boot-with-disk: unexpected outcome {r:?}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("boot-with-disk: {e}");
            std::process::exit(1);
        }
    }
}
