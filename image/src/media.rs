//! The media subcommands (`iso`, `disk`, `pxe`): find the appliance built by `ferry-image
//! build`, make the boot menu, write the medium and report its size.

use crate::tools::work_beside;
use crate::{disk, grub, iso, pxe, DiskArgs, IsoArgs, PxeArgs};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// The appliance's kernel and initramfs.
struct Appliance {
    vmlinuz: PathBuf,
    initrd: PathBuf,
}

fn appliance(dir: Option<PathBuf>) -> Result<Appliance> {
    let dir = dir.unwrap_or_else(|| crate::kernel::default_dir().with_file_name("appliance"));
    let a = Appliance { vmlinuz: dir.join("vmlinuz"), initrd: dir.join("initramfs.img") };
    for p in [&a.vmlinuz, &a.initrd] {
        if !p.is_file() {
            bail!(
                "{} is missing: build the appliance first (scripts/build, or ferry-image build --out {})",
                p.display(),
                dir.display()
            );
        }
    }
    Ok(a)
}

fn report(what: &str, out: &Path) -> Result<()> {
    let size = std::fs::metadata(out)?.len();
    eprintln!("ferry-image: {what} {} ({size} bytes, {:.1} MiB)", out.display(), size as f64 / 1048576.0);
    Ok(())
}

pub fn iso(a: IsoArgs) -> Result<()> {
    let app = appliance(a.appliance)?;
    let w = work_beside(&a.out)?;
    let menu = grub::menu(grub::KERNEL, grub::INITRD, &a.cmdline, a.timeout);
    let staged = iso::stage(w.path(), &app.vmlinuz, &app.initrd, &menu)?;
    iso::assemble(&staged, &a.out)?;
    report("ISO", &a.out)
}

pub fn disk(a: DiskArgs) -> Result<()> {
    let app = appliance(a.appliance)?;
    let w = work_beside(&a.out)?;
    let menu = grub::menu(grub::KERNEL, grub::INITRD, &a.cmdline, a.timeout);
    let raw = w.path().join("disk.raw");
    let contents = disk::Contents { vmlinuz: &app.vmlinuz, initrd: &app.initrd, menu: &menu };
    disk::write_raw(&contents, w.path(), &raw)?;
    disk::finish(&raw, a.format, &a.out)?;
    report("disk image", &a.out)
}

pub fn pxe(a: PxeArgs) -> Result<()> {
    let app = appliance(a.appliance)?;
    pxe::write(&app.vmlinuz, &app.initrd, &a.cmdline, &a.host, a.timeout, &a.out)?;
    eprintln!(
        "ferry-image: PXE bundle in {} (serve it as the TFTP root; see its README.md)",
        a.out.display()
    );
    Ok(())
}
