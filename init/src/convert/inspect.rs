//! Inspection of the migrated system before anything changes: which partition is the root
//! (it has /etc/fstab and an os-release), the distribution family, the initramfs tool, the
//! bootloader, and every installed kernel with whether it can boot on virtio (module file,
//! `modules.builtin`, or `/boot/config-*`).

use anyhow::{bail, Result};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Kernel {
    pub version: String,
    pub virtio: bool,
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct System {
    pub os_id: String,
    pub family: String,
    pub pretty_name: String,
    pub initramfs: String,
    pub bootloader: String,
    pub uefi: bool,
    pub kernels: Vec<Kernel>,
}

/// Drivers a kernel needs to boot and network on KVM.
pub const VIRTIO: &[(&str, &str)] = &[
    ("virtio_pci", "VIRTIO_PCI"),
    ("virtio_blk", "VIRTIO_BLK"),
    ("virtio_scsi", "SCSI_VIRTIO"),
    ("virtio_net", "VIRTIO_NET"),
];

fn os_release(root: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root.join("etc/os-release"))
        .or_else(|_| std::fs::read_to_string(root.join("usr/lib/os-release")))
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

pub fn looks_like_root(root: &Path) -> bool {
    root.join("etc/fstab").is_file() && !os_release(root).is_empty()
}

fn kernel_supports(root: &Path, ver: &str, module: &str, config: &str) -> bool {
    let mdir = ["lib/modules", "usr/lib/modules"].iter().map(|d| root.join(d).join(ver)).find(|p| p.is_dir());
    if let Some(m) = &mdir {
        let builtin = std::fs::read_to_string(m.join("modules.builtin")).unwrap_or_default();
        let alt = module.replace('_', "-");
        if builtin
            .lines()
            .any(|l| l.ends_with(&format!("/{module}.ko")) || l.ends_with(&format!("/{alt}.ko")))
        {
            return true;
        }
        let dep = std::fs::read_to_string(m.join("modules.dep")).unwrap_or_default();
        if dep.lines().any(|l| {
            let p = l.split(':').next().unwrap_or("");
            let f = p.rsplit('/').next().unwrap_or("");
            f.starts_with(&format!("{module}.ko")) || f.starts_with(&format!("{alt}.ko"))
        }) {
            return true;
        }
    }
    let cfg = std::fs::read_to_string(root.join("boot").join(format!("config-{ver}"))).unwrap_or_default();
    cfg.lines().any(|l| l == format!("CONFIG_{config}=y") || l == format!("CONFIG_{config}=m"))
}

fn kernels(root: &Path) -> Vec<Kernel> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root.join("boot")) else { return out };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(ver) = name.strip_prefix("vmlinuz-").or_else(|| name.strip_prefix("vmlinux-")) else {
            continue;
        };
        let missing: Vec<String> = VIRTIO
            .iter()
            .filter(|(m, c)| !kernel_supports(root, ver, m, c))
            .map(|(m, _)| m.to_string())
            .collect();
        out.push(Kernel { version: ver.to_string(), virtio: missing.is_empty(), missing });
    }
    out.sort_by(|a, b| version_cmp(&a.version, &b.version));
    out
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

pub fn inspect(root: &Path) -> Result<System> {
    let os = os_release(root);
    let get = |k: &str| os.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let id = get("ID");
    let like = get("ID_LIKE");
    let family = if id == "debian" || id == "ubuntu" || like.contains("debian") {
        "debian"
    } else if like.contains("suse") || id.contains("suse") || id == "sles" {
        "suse"
    } else if like.contains("rhel")
        || like.contains("fedora")
        || matches!(id.as_str(), "rhel" | "centos" | "fedora")
    {
        "rhel"
    } else {
        "other"
    };
    let exists = |p: &str| root.join(p).exists();
    let initramfs = if exists("usr/sbin/update-initramfs") || exists("sbin/update-initramfs") {
        "initramfs-tools"
    } else if exists("usr/bin/dracut") || exists("usr/sbin/dracut") || exists("sbin/dracut") {
        "dracut"
    } else if exists("sbin/mkinitrd") || exists("usr/sbin/mkinitrd") {
        "mkinitrd"
    } else {
        "none"
    };
    let bootloader = if exists("boot/grub2/grub.cfg") || exists("usr/sbin/grub2-mkconfig") {
        "grub2"
    } else if exists("boot/grub/grub.cfg") || exists("usr/sbin/grub-mkconfig") {
        "grub"
    } else {
        "unknown"
    };
    let fstab = std::fs::read_to_string(root.join("etc/fstab")).unwrap_or_default();
    let uefi = fstab
        .lines()
        .any(|l| !l.trim_start().starts_with('#') && l.split_whitespace().nth(1) == Some("/boot/efi"));
    let ks = kernels(root);
    if ks.is_empty() {
        bail!("no installed kernel found in /boot of the migrated system");
    }
    Ok(System {
        os_id: id,
        family: family.into(),
        pretty_name: get("PRETTY_NAME"),
        initramfs: initramfs.into(),
        bootloader: bootloader.into(),
        uefi,
        kernels: ks,
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
        assert!(looks_like_root(r));
        let s = inspect(r).unwrap();
        assert_eq!((s.family.as_str(), s.initramfs.as_str()), ("debian", "initramfs-tools"));
        let v: Vec<_> = s.kernels.iter().map(|k| (k.version.as_str(), k.virtio)).collect();
        assert_eq!(v, vec![("4.9.0-xen", false), ("6.1.0-9-amd64", true), ("6.1.0-10-amd64", true)]);
        assert_eq!(s.kernels[0].missing.len(), 4);
    }
}
