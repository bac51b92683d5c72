//! Growing what the repartitioning enlarged, with the migrated system's own tools in a chroot:
//! an ext2/3/4 or XFS filesystem directly (online, it is mounted in the tree); an LVM PV with
//! `pvresize`, then the LV holding the root filesystem with `lvextend` and its filesystem.
//! Other LVs keep their size; the new extents stay free in the VG for the admin.

use super::mount::Tree;
use super::probe::Part;
use crate::{cmd, lvm};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// lvm without udev (the appliance has none) and without event monitoring.
const LVM_CONFIG: &str = "--config=activation { udev_sync = 0 udev_rules = 0 monitoring = 0 } \
                          devices { obtain_device_list_from_udev = 0 }";

fn mounted_at(dev: &Path) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mounts").ok()?;
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (Path::new(f.first()?) == dev).then(|| PathBuf::from(f[1]))
    })
}

/// Grows the filesystem on `p` to its device size; `None` when it is not a growable kind.
fn filesystem(t: &Tree, p: &Part) -> Result<Option<String>> {
    let dev = p.dev.display().to_string();
    match p.fstype.as_str() {
        "ext2" | "ext3" | "ext4" => {
            cmd::run(Some(&t.root), &["resize2fs", &dev])?;
        }
        "xfs" => {
            let mp =
                mounted_at(&p.dev).with_context(|| format!("the XFS filesystem on {dev} is not mounted"))?;
            let inner = mp
                .strip_prefix(&t.root)
                .map(|x| format!("/{}", x.display()))
                .unwrap_or(mp.display().to_string());
            cmd::run(Some(&t.root), &["xfs_growfs", &inner])?;
        }
        _ => return Ok(None),
    }
    Ok(Some(format!("{dev} ({})", p.fstype)))
}

/// Host mode: an ext2/3/4 filesystem grown offline with this host's e2fsprogs before anything
/// mounts it (online growth needs CAP_SYS_RESOURCE, which containers often lack). `None` when
/// `p` holds something else.
pub fn ext_offline(p: &Part) -> Result<Option<String>> {
    if !matches!(p.fstype.as_str(), "ext2" | "ext3" | "ext4") {
        return Ok(None);
    }
    let dev = p.dev.display().to_string();
    cmd::run(None, &["e2fsck", "-f", "-y", &dev])?;
    cmd::run(None, &["resize2fs", &dev])?;
    Ok(Some(format!("{dev} ({}, offline)", p.fstype)))
}

/// Grows what the enlarged partition `p` holds. Returns what was grown, for the report.
pub fn grow(t: &Tree, p: &Part, root: &Part, lvs: &lvm::Active) -> Result<Option<String>> {
    if p.fstype != "LVM2_member" {
        return filesystem(t, p);
    }
    let pv = p.dev.display().to_string();
    cmd::run(Some(&t.root), &["lvm", "pvresize", LVM_CONFIG, &pv])?;
    let Some(lv) = lvs.lvs.iter().find(|l| l.dev == root.dev && l.pvs.contains(&p.dev)) else {
        return Ok(Some(format!("{pv} (LVM PV; the new extents are free in its VG)")));
    };
    let name = format!("{}/{}", lv.vg, lv.name);
    // Allocate on the grown PV only, so a VG spanning disks does not grow onto another one.
    cmd::run(Some(&t.root), &["lvm", "lvextend", LVM_CONFIG, "-l", "+100%PVS", &name, &pv])?;
    let fs = filesystem(t, root)?.unwrap_or_default();
    Ok(Some(format!("{pv} (LVM PV), {name} and its filesystem {fs}")))
}
