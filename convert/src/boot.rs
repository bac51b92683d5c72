//! Boot stage of the conversion: the initramfs rebuilt with the virtio drivers by the system's
//! own tool (initramfs-tools: modules file + update-initramfs; dracut: --add-drivers now and a
//! dracut.conf.d file for later rebuilds; SUSE mkinitrd), the best virtio-capable kernel as the
//! default, the GRUB configuration regenerated with the system's own tool, BIOS boot code
//! reinstalled, and the UEFI fallback loader ensured.

use crate::cmd::Runner;
use crate::fixes::Changes;
use crate::guest::GuestRoot;
use crate::inspect::System;
use crate::types::{Family, InitramfsTool};
use anyhow::{bail, Context, Result};
use ferry_formats::FsType;
use std::path::Path;

/// What the initramfs needs to find the root disk on KVM: virtio (blk, and scsi with the SCSI
/// disk driver, which is not a module dependency of virtio_scsi), NVMe, and the NIC driver.
pub const DRIVERS: &[&str] =
    &["virtio", "virtio_ring", "virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "virtio_net", "nvme"];

fn is_xen_module(l: &str) -> bool {
    let w = l.trim().replace('_', "-");
    w.starts_with("xen-") || w.starts_with("xenblk") || w.starts_with("xennet")
}

/// /etc/initramfs-tools/modules: Xen-only drivers out, virtio and the root filesystem's driver
/// in (with `MODULES=list` nothing else gets into the initramfs).
pub fn initramfs_tools_modules(text: &str, root_fs: FsType) -> String {
    let mut out: String = text.lines().filter(|l| !is_xen_module(l)).map(|l| format!("{l}\n")).collect();
    let fs = match root_fs {
        t if t.is_ext() => Some("ext4"),
        FsType::Xfs => Some("xfs"),
        FsType::Btrfs => Some("btrfs"),
        _ => None,
    };
    for d in DRIVERS.iter().copied().chain(fs) {
        if !text.lines().any(|l| l.trim() == d) {
            out.push_str(&format!("{d}\n"));
        }
    }
    out
}

/// A dracut configuration file with the Xen drivers taken out of its driver lists (`drivers=`
/// is exclusive: left as it was, the rebuilt initramfs would still hold only those).
pub fn dracut_conf_without_xen(text: &str) -> String {
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        let key = ["drivers", "add_drivers", "force_drivers"]
            .into_iter()
            .find(|k| t.strip_prefix(k).is_some_and(|r| r.starts_with('=') || r.starts_with("+=")));
        match (key, t.split_once('=')) {
            (Some(_), Some((k, v))) => {
                let nl = if line.ends_with('\n') { "\n" } else { "" };
                let v = v.trim_end();
                let q = if v.starts_with('\'') { '\'' } else { '"' };
                let inner = v.trim_matches(q);
                let kept: Vec<&str> = inner.split_whitespace().filter(|m| !is_xen_module(m)).collect();
                if kept.len() == inner.split_whitespace().count() {
                    out.push_str(line);
                } else {
                    out.push_str(&format!("{k}={q} {} {q}{nl}", kept.join(" ")));
                }
            }
            _ => out.push_str(line),
        }
    }
    out
}

fn dracut_conf_files(g: &GuestRoot) -> Result<Vec<String>> {
    let mut files = vec!["etc/dracut.conf".to_string()];
    for n in g.list("etc/dracut.conf.d")? {
        if n.ends_with(".conf") {
            files.push(format!("etc/dracut.conf.d/{n}"));
        }
    }
    Ok(files.into_iter().filter(|f| g.is_file(f)).collect())
}

fn sysconfig_kernel(s: &str) -> String {
    s.split_inclusive('\n')
        .map(|l| match l.trim_end_matches('\n').strip_prefix("INITRD_MODULES=") {
            Some(v) => {
                let mut m: Vec<String> = v
                    .trim_matches('"')
                    .split_whitespace()
                    .filter(|x| !is_xen_module(x))
                    .map(String::from)
                    .collect();
                for d in DRIVERS {
                    if !m.iter().any(|x| x == d) {
                        m.push(d.to_string());
                    }
                }
                format!("INITRD_MODULES=\"{}\"\n", m.join(" "))
            }
            None => l.to_string(),
        })
        .collect()
}

/// Where dracut's image for kernel `k` goes: the name already there, else the family's.
fn dracut_image(g: &GuestRoot, family: Family, k: &str) -> String {
    let names =
        [format!("boot/initramfs-{k}.img"), format!("boot/initrd-{k}"), format!("boot/initrd.img-{k}")];
    if let Some(n) = names.iter().find(|n| g.exists(n)) {
        return n.clone();
    }
    match family {
        Family::Rhel => names[0].clone(),
        Family::Suse => names[1].clone(),
        Family::Debian | Family::Other => names[2].clone(),
    }
}

/// Rebuilds the initramfs of every virtio-capable kernel with the system's own tool.
pub fn initramfs(
    g: &GuestRoot,
    run: &dyn Runner,
    sys: &System,
    root_fs: FsType,
    c: &mut Changes,
) -> Result<Vec<String>> {
    let mut built = Vec::new();
    let root = Some(g.path());
    let kernels: Vec<&str> = sys.kernels.iter().filter(|k| k.virtio).map(|k| k.version.as_str()).collect();
    match sys.initramfs {
        InitramfsTool::InitramfsTools => {
            c.edit(g, "etc/initramfs-tools/modules", |s| initramfs_tools_modules(s, root_fs))?;
            for k in &kernels {
                run.run(root, &["update-initramfs", "-u", "-k", k])?;
                built.push(format!("/boot/initrd.img-{k}"));
            }
        }
        InitramfsTool::Dracut => {
            for f in dracut_conf_files(g)? {
                c.edit(g, &f, dracut_conf_without_xen)?;
            }
            let conf = format!("add_drivers+=\" {} \"\n", DRIVERS.join(" "));
            c.put(g, "etc/dracut.conf.d/90-ferry-virtio.conf", &conf)?;
            let drivers = DRIVERS.join(" ");
            for k in &kernels {
                let img = format!("/{}", dracut_image(g, sys.family, k));
                run.run(root, &["dracut", "-f", "--add-drivers", &drivers, &img, k])?;
                built.push(img);
            }
        }
        InitramfsTool::Mkinitrd => {
            c.edit(g, "etc/sysconfig/kernel", sysconfig_kernel)?;
            run.run(root, &["mkinitrd"])?;
            built.push("mkinitrd".into());
        }
        InitramfsTool::None => bail!("no supported initramfs tool in the migrated system"),
    }
    Ok(built)
}

/// The kernel to boot: the newest that supports virtio.
pub fn best_kernel(sys: &System) -> Option<&str> {
    sys.kernels.iter().rev().find(|k| k.virtio).map(|k| k.version.as_str())
}

/// Regenerates grub.cfg, reinstalls BIOS boot code, ensures the UEFI fallback loader.
/// How the GRUB configuration is brought up to date.
pub enum GrubConfig<'a> {
    /// With the system's own grub-mkconfig (needs real partition devices for grub-probe).
    Regenerate,
    /// Host mode: the kernel command lines of the existing grub.cfg rewritten in place.
    Rewrite(&'a super::rewrite::DevMap, &'a [&'a str]),
}

/// The id of a kernel's entry in grub-mkconfig's "Advanced options" submenu.
pub fn grub_entry_id(kernel: &str, root_uuid: &str) -> String {
    format!("gnulinux-advanced-{root_uuid}>gnulinux-{kernel}-advanced-{root_uuid}")
}

pub struct Boot<'a> {
    /// The disks that get BIOS boot code (none: UEFI, or left as it was).
    pub disks: &'a [&'a Path],
    pub root_uuid: &'a str,
    pub grub: GrubConfig<'a>,
}

pub fn bootloader(g: &GuestRoot, run: &dyn Runner, sys: &System, b: Boot, c: &mut Changes) -> Result<()> {
    let Boot { disks, root_uuid, grub: how } = b;
    let Some((mkconfig, cfg, install)) = sys.bootloader.tools() else {
        bail!("no GRUB found in the migrated system (neither /boot/grub nor /boot/grub2); its bootloader is not supported");
    };
    let root = Some(g.path());
    // The newest kernel is GRUB's first entry; if it cannot boot on virtio, pick the best one.
    let newest = sys.kernels.last().map(|k| k.version.as_str());
    if let (Some(best), Some(newest)) = (best_kernel(sys), newest) {
        if best != newest {
            c.notes.push(format!("kernel {newest} lacks virtio drivers; {best} becomes the default"));
            // Menu entry ids grub-mkconfig's 10_linux assigns, independent of distribution titles.
            let entry = format!("GRUB_DEFAULT=\"{}\"", grub_entry_id(best, root_uuid));
            c.edit(g, "etc/default/grub", |s| {
                let mut out: String =
                    s.lines().filter(|l| !l.starts_with("GRUB_DEFAULT=")).map(|l| format!("{l}\n")).collect();
                out.push_str(&entry);
                out.push('\n');
                out
            })?;
        }
    }
    for disk in disks {
        let d = disk.display().to_string();
        run.run(root, &[install, "--target=i386-pc", &d])?;
        c.notes.push(format!("BIOS boot code reinstalled on {d}"));
    }
    match how {
        GrubConfig::Regenerate => {
            run.run(root, &[mkconfig, "-o", &format!("/{cfg}")])?;
        }
        GrubConfig::Rewrite(map, extra) => {
            c.edit(g, cfg, |s| super::rewrite::grub_cfg(s, map, extra))?;
            c.notes.push(format!("host mode: /{cfg} rewritten in place, not regenerated"));
        }
    }
    if sys.uefi {
        uefi_fallback(g, c)?;
    }
    Ok(())
}

/// The removable-media path `EFI/BOOT/BOOTX64.EFI`, which a new VM's firmware boots without
/// NVRAM entries: a copy of the distribution's shim (or GRUB) directory.
fn uefi_fallback(g: &GuestRoot, c: &mut Changes) -> Result<()> {
    const FALLBACK: &str = "boot/efi/EFI/BOOT/BOOTX64.EFI";
    if g.is_file(FALLBACK) {
        return Ok(());
    }
    let vendor = g.list("boot/efi/EFI")?.into_iter().filter(|v| v != "BOOT").find_map(|v| {
        ["shimx64.efi", "grubx64.efi"]
            .iter()
            .find(|f| g.is_file(&format!("boot/efi/EFI/{v}/{f}")))
            .map(|f| (v.clone(), f.to_string()))
    });
    let Some((v, loader)) = vendor else {
        bail!("UEFI system without shimx64.efi or grubx64.efi under /boot/efi/EFI");
    };
    g.create_dir_all("boot/efi/EFI/BOOT")?;
    for f in g.list(&format!("boot/efi/EFI/{v}"))? {
        let from = format!("boot/efi/EFI/{v}/{f}");
        if g.is_file(&from) {
            let data = g.read_bytes(&from)?.with_context(|| format!("{from} vanished"))?;
            g.write(&format!("boot/efi/EFI/BOOT/{f}"), &data)?;
        }
    }
    let data = g.read_bytes(&format!("boot/efi/EFI/{v}/{loader}"))?.context("the EFI loader vanished")?;
    g.write(FALLBACK, &data)?;
    c.files.push(FALLBACK.into());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initramfs_modules_file() {
        let before = "# List of modules\nxen-blkfront\nxen_netfront\nloop\n";
        let after = initramfs_tools_modules(before, FsType::Ext4);
        assert_eq!(after, "# List of modules\nloop\nvirtio\nvirtio_ring\nvirtio_pci\nvirtio_blk\nvirtio_scsi\nsd_mod\nvirtio_net\nnvme\next4\n");
        assert_eq!(initramfs_tools_modules(&after, FsType::Ext4), after);
        assert!(initramfs_tools_modules("ext4\nxen-blkfront\n", FsType::Ext4).matches("ext4").count() == 1);
    }

    #[test]
    fn dracut_driver_lists() {
        let before = "hostonly=\"no\"\ndrivers=\"xen-blkfront xen-netfront xfs\"\nadd_drivers+=' xen_blkfront '\n# drivers=\"xen-blkfront\"\nomit_drivers+=\" floppy \"\n";
        let after = dracut_conf_without_xen(before);
        assert_eq!(
            after,
            "hostonly=\"no\"\ndrivers=\" xfs \"\nadd_drivers+='  '\n# drivers=\"xen-blkfront\"\nomit_drivers+=\" floppy \"\n"
        );
        assert_eq!(dracut_conf_without_xen(&after), after);
    }
}
