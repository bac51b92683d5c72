//! `ferry-image`: builds the bootable ferry appliance from a stock Debian kernel, and the media
//! that boot it: a hybrid ISO, a PXE bundle and a disk image; `customize` embeds settings into
//! any of them.

mod build;
mod cpio;
mod customize;
mod disk;
mod fat;
mod grub;
mod initrd;
mod iso;
mod kernel;
mod media;
mod pxe;
mod secureboot;
mod tools;

use argh::FromArgs;
use std::path::PathBuf;

/// ferry-image: build the ferry appliance and the media that boot it.
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Build(BuildArgs),
    Iso(IsoArgs),
    Disk(DiskArgs),
    Pxe(PxeArgs),
    Customize(CustomizeArgs),
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

/// Write a hybrid ISO (BIOS and UEFI, CD and USB stick).
#[derive(FromArgs)]
#[argh(subcommand, name = "iso")]
pub struct IsoArgs {
    /// the ISO file to write
    #[argh(option)]
    out: PathBuf,
    /// the appliance directory from `ferry-image build` (default: $FERRY_CACHE/appliance)
    #[argh(option)]
    appliance: Option<PathBuf>,
    /// extra kernel parameters for every boot entry
    #[argh(option, default = "String::new()")]
    cmdline: String,
    /// seconds the boot menu waits (default 5)
    #[argh(option, default = "5")]
    timeout: u32,
}

/// Write a disk image that boots on BIOS and UEFI (for clouds that make VMs from images).
#[derive(FromArgs)]
#[argh(subcommand, name = "disk")]
pub struct DiskArgs {
    /// the image file to write
    #[argh(option)]
    out: PathBuf,
    /// raw or qcow2 (default raw)
    #[argh(option, default = "disk::Format::Raw")]
    format: disk::Format,
    /// the appliance directory from `ferry-image build` (default: $FERRY_CACHE/appliance)
    #[argh(option)]
    appliance: Option<PathBuf>,
    /// extra kernel parameters for every boot entry
    #[argh(option, default = "String::new()")]
    cmdline: String,
    /// seconds the boot menu waits (default 5)
    #[argh(option, default = "5")]
    timeout: u32,
}

/// Write a PXE bundle (a TFTP root): kernel, initramfs, boot.ipxe, pxelinux and GRUB configs.
#[derive(FromArgs)]
#[argh(subcommand, name = "pxe")]
pub struct PxeArgs {
    /// the directory to write
    #[argh(option)]
    out: PathBuf,
    /// per-machine kernel parameters, MAC=ARGS (repeatable)
    #[argh(option)]
    host: Vec<pxe::Host>,
    /// the appliance directory from `ferry-image build` (default: $FERRY_CACHE/appliance)
    #[argh(option)]
    appliance: Option<PathBuf>,
    /// extra kernel parameters for every boot entry
    #[argh(option, default = "String::new()")]
    cmdline: String,
    /// seconds the GRUB menu waits (default 5)
    #[argh(option, default = "5")]
    timeout: u32,
}

/// Embed settings into an initramfs, ISO, disk image or PXE directory without rebuilding it.
#[derive(FromArgs)]
#[argh(subcommand, name = "customize")]
pub struct CustomizeArgs {
    /// the artifact to read
    #[argh(option, long = "in")]
    input: PathBuf,
    /// the artifact to write (may be the same path)
    #[argh(option)]
    out: PathBuf,
    /// the one-time token `ferry send` must present (ferry.token); `auto` generates a 128-bit
    /// token and prints it
    #[argh(option)]
    token: Option<String>,
    /// the address the receiver listens on (ferry.listen)
    #[argh(option)]
    listen: Option<String>,
    /// a network setting as for ip= (repeatable)
    #[argh(option)]
    ip: Vec<String>,
    /// what to do after the job: poweroff, reboot or wait (ferry.after)
    #[argh(option)]
    after: Option<String>,
    /// more parameters: ferry.* and ip= are embedded, others go on the boot menus' kernel lines
    #[argh(option)]
    cmdline: Option<String>,
}

fn main() {
    let args: Args = argh::from_env();
    let r = match args.cmd {
        Cmd::Build(b) => build::run(b),
        Cmd::Iso(a) => media::iso(a),
        Cmd::Disk(a) => media::disk(a),
        Cmd::Pxe(a) => media::pxe(a),
        Cmd::Customize(a) => customize::run(a),
    };
    if let Err(e) = r {
        eprintln!("ferry-image: {e:#}");
        std::process::exit(1);
    }
}
