//! Inspection of the migrated system before anything changes: which partition is the root
//! (it has /etc/fstab and an os-release), the distribution family, the initramfs tool, the
//! bootloader, and every installed kernel with whether it can boot on virtio (module file,
//! `modules.builtin`, or `/boot/config-*`).

use crate::guest::GuestRoot;
use crate::types::{Bootloader, Family, Firmware, InitramfsTool};
use anyhow::{bail, Result};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Kernel {
    pub version: String,
    pub virtio: bool,
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct System {
    pub os_id: String,
    pub family: Family,
    pub pretty_name: String,
    pub initramfs: InitramfsTool,
    pub bootloader: Bootloader,
    pub uefi: bool,
    pub firmware: Firmware,
    pub kernels: Vec<Kernel>,
    /// The btrfs subvolume the root lives in (`@`), when it is not the filesystem's top level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_subvol: Option<String>,
    /// /etc/crypttab as found (its names become the names of the opened LUKS volumes).
    #[serde(skip)]
    pub crypttab: String,
}

/// Drivers a kernel needs to boot and network on KVM.
pub const VIRTIO: &[(&str, &str)] = &[
    ("virtio_pci", "VIRTIO_PCI"),
    ("virtio_blk", "VIRTIO_BLK"),
    ("virtio_scsi", "SCSI_VIRTIO"),
    ("virtio_net", "VIRTIO_NET"),
];

fn os_release(g: &GuestRoot) -> Result<Vec<(String, String)>> {
    let text = match g.read("etc/os-release")? {
        Some(t) => t,
        None => g.read_or_empty("usr/lib/os-release")?,
    };
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').trim_matches('\'').to_string()))
        .collect())
}

pub fn looks_like_root(g: &GuestRoot) -> bool {
    g.is_file("etc/fstab") && os_release(g).is_ok_and(|o| !o.is_empty())
}

fn kernel_supports(g: &GuestRoot, ver: &str, module: &str, config: &str) -> Result<bool> {
    let alt = module.replace('_', "-");
    let named = |f: &str| {
        let f = f.rsplit('/').next().unwrap_or("");
        f.starts_with(&format!("{module}.ko")) || f.starts_with(&format!("{alt}.ko"))
    };
    for d in ["lib/modules", "usr/lib/modules"] {
        let m = format!("{d}/{ver}");
        if !g.is_dir(&m) {
            continue;
        }
        let builtin = g.read_or_empty(&format!("{m}/modules.builtin"))?;
        let dep = g.read_or_empty(&format!("{m}/modules.dep"))?;
        if builtin.lines().any(named) || dep.lines().any(|l| named(l.split(':').next().unwrap_or(""))) {
            return Ok(true);
        }
        break;
    }
    let cfg = g.read_or_empty(&format!("boot/config-{ver}"))?;
    Ok(cfg.lines().any(|l| l == format!("CONFIG_{config}=y") || l == format!("CONFIG_{config}=m")))
}

fn kernels(g: &GuestRoot) -> Result<Vec<Kernel>> {
    let mut out = Vec::new();
    for name in g.list("boot")? {
        let Some(ver) = name.strip_prefix("vmlinuz-").or_else(|| name.strip_prefix("vmlinux-")) else {
            continue;
        };
        let mut missing = Vec::new();
        for (m, c) in VIRTIO {
            if !kernel_supports(g, ver, m, c)? {
                missing.push(m.to_string());
            }
        }
        out.push(Kernel { version: ver.to_string(), virtio: missing.is_empty(), missing });
    }
    out.sort_by(|a, b| version_cmp(&a.version, &b.version));
    Ok(out)
}

/// Compares kernel versions numerically where they are numbers ("6.1.0-10" < "6.1.0-9" is false).
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<(u64, String)> {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .map(|p| {
                (
                    p.parse::<u64>().unwrap_or(0),
                    if p.parse::<u64>().is_ok() { String::new() } else { p.to_string() },
                )
            })
            .collect()
    };
    parts(a).cmp(&parts(b))
}

pub fn inspect(g: &GuestRoot) -> Result<System> {
    let os = os_release(g)?;
    let get = |k: &str| os.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let id = get("ID");
    let family = Family::from_os_release(&id, &get("ID_LIKE"));
    let any = |ps: &[&str]| ps.iter().any(|p| g.exists(p));
    let initramfs = if any(&["usr/sbin/update-initramfs", "sbin/update-initramfs"]) {
        InitramfsTool::InitramfsTools
    } else if any(&["usr/bin/dracut", "usr/sbin/dracut", "sbin/dracut"]) {
        InitramfsTool::Dracut
    } else if any(&["sbin/mkinitrd", "usr/sbin/mkinitrd", "usr/bin/mkinitrd"]) {
        InitramfsTool::Mkinitrd
    } else {
        InitramfsTool::None
    };
    let bootloader = if any(&["boot/grub2/grub.cfg", "usr/sbin/grub2-mkconfig", "sbin/grub2-mkconfig"]) {
        Bootloader::Grub2
    } else if any(&["boot/grub/grub.cfg", "usr/sbin/grub-mkconfig", "sbin/grub-mkconfig"]) {
        Bootloader::Grub
    } else {
        Bootloader::Unknown
    };
    let fstab = g.read_or_empty("etc/fstab")?;
    let uefi = fstab
        .lines()
        .any(|l| !l.trim_start().starts_with('#') && l.split_whitespace().nth(1) == Some("/boot/efi"));
    let ks = kernels(g)?;
    if ks.is_empty() {
        bail!("no installed kernel found in /boot of the migrated system");
    }
    Ok(System {
        os_id: id,
        family,
        pretty_name: get("PRETTY_NAME"),
        initramfs,
        bootloader,
        uefi,
        firmware: if uefi { Firmware::Uefi } else { Firmware::Bios },
        kernels: ks,
        root_subvol: None,
        crypttab: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_and_virtio_support() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/fstab"), "/dev/xvda2 / ext4 defaults 0 1\n").unwrap();
        std::fs::write(
            r.join("etc/os-release"),
            "ID=debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
        )
        .unwrap();
        std::fs::create_dir_all(r.join("boot")).unwrap();
        std::fs::create_dir_all(r.join("usr/sbin")).unwrap();
        std::fs::write(r.join("usr/sbin/update-initramfs"), "").unwrap();
        // 6.1.0-9: modules; 6.1.0-10: built in via config; 4.9-xen: no virtio at all.
        for v in ["6.1.0-9-amd64", "6.1.0-10-amd64", "4.9.0-xen"] {
            std::fs::write(r.join(format!("boot/vmlinuz-{v}")), "").unwrap();
            std::fs::create_dir_all(r.join(format!("lib/modules/{v}"))).unwrap();
        }
        std::fs::write(
            r.join("lib/modules/6.1.0-9-amd64/modules.dep"),
            "kernel/drivers/virtio/virtio_pci.ko.xz:\nkernel/drivers/block/virtio_blk.ko.xz:\nkernel/drivers/scsi/virtio_scsi.ko.xz:\nkernel/drivers/net/virtio_net.ko.xz:\n",
        )
        .unwrap();
        std::fs::write(
            r.join("boot/config-6.1.0-10-amd64"),
            "CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_BLK=y\nCONFIG_SCSI_VIRTIO=m\nCONFIG_VIRTIO_NET=y\n",
        )
        .unwrap();
        std::fs::write(
            r.join("lib/modules/4.9.0-xen/modules.dep"),
            "kernel/drivers/block/xen-blkfront.ko:\n",
        )
        .unwrap();
        let g = GuestRoot::open(r).unwrap();
        assert!(looks_like_root(&g));
        let s = inspect(&g).unwrap();
        assert_eq!((s.family, s.initramfs), (Family::Debian, InitramfsTool::InitramfsTools));
        let v: Vec<_> = s.kernels.iter().map(|k| (k.version.as_str(), k.virtio)).collect();
        assert_eq!(v, vec![("4.9.0-xen", false), ("6.1.0-9-amd64", true), ("6.1.0-10-amd64", true)]);
        assert_eq!(s.kernels[0].missing.len(), 4);
    }
}
