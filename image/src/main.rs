//! `ferry-image`: builds the bootable ferry appliance from a stock Debian kernel.

mod build;
mod cpio;
mod kernel;

use argh::FromArgs;
use std::path::PathBuf;

/// ferry-image: build the ferry appliance (kernel + initramfs) from a stock Debian kernel.
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Build(BuildArgs),
}

/// Write DIR/vmlinuz and DIR/initramfs.img (cpio newc, zstd) with ferry-init and the module closure.
#[derive(FromArgs)]
#[argh(subcommand, name = "build")]
pub struct BuildArgs {
    /// output directory
    #[argh(option)]
    out: PathBuf,
    /// an extracted Debian kernel package (default: $FERRY_CACHE/kernel from scripts/setup)
    #[argh(option)]
    kernel: Option<PathBuf>,
    /// the static ferry-init binary (default: the ferry-init beside this program)
    #[argh(option)]
    init: Option<PathBuf>,
}

fn main() {
    let args: Args = argh::from_env();
    let r = match args.cmd {
        Cmd::Build(b) => build::run(b),
    };
    if let Err(e) = r {
        eprintln!("ferry-image: {e:#}");
        std::process::exit(1);
    }
}
