//! Growing what the repartitioning enlarged. Filesystems grow with the kernel's own ioctls
//! (`online`), so growth never depends on the migrated system's tools: a system that mounts XFS
//! without xfsprogs still grows. An LVM PV grows with the system's own `pvresize`, then the LV
//! holding the root filesystem with `lvextend` and that filesystem (online). Other LVs keep
//! their size; the new extents stay free in the VG for the admin. Host mode grows ext offline
//! with this host's e2fsprogs before anything mounts it ([`offline_ext`]).

pub mod online;

use crate::cmd::Runner;
use crate::lvm;
use crate::mount::Tree;
use crate::probe::Part;
use anyhow::{Context, Result};
use ferry_formats::FsType;

/// lvm without udev (the appliance has none) and without event monitoring.
const LVM_CONFIG: &str = "--config=activation { udev_sync = 0 udev_rules = 0 monitoring = 0 } \
                          devices { obtain_device_list_from_udev = 0 }";

/// Grows the mounted filesystem on `p` to its device size; `None` when it is not a growable kind.
fn filesystem(t: &Tree, p: &Part) -> Result<Option<String>> {
    let kind = match p.fstype {
        Some(f) if f.is_ext() => online::Fs::Ext,
        Some(FsType::Xfs) => online::Fs::Xfs,
        Some(FsType::Btrfs) => online::Fs::Btrfs,
        _ => return Ok(None),
    };
    let dev = p.dev.display().to_string();
    let mp = t.mount_of(&p.dev).with_context(|| format!("the filesystem on {dev} is not mounted"))?;
    let g = online::grow_mounted(mp, &p.dev, kind)?;
    Ok(Some(format!("{dev} ({}, {} → {} MiB)", p.fs_name(), g.old_bytes >> 20, g.new_bytes >> 20)))
}

/// Host mode: an ext2/3/4 filesystem grown offline with this host's e2fsprogs before anything
/// mounts it. `None` when `p` holds something else.
pub fn offline_ext(run: &dyn Runner, p: &Part) -> Result<Option<String>> {
    if !p.fstype.is_some_and(|f| f.is_ext()) {
        return Ok(None);
    }
    let dev = p.dev.display().to_string();
    // e2fsck exits 1 when it corrected something: the filesystem is fine to grow then.
    run.run(None, &["sh", "-c", "e2fsck -f -y \"$1\"; [ $? -le 1 ]", "e2fsck", &dev])?;
    run.run(None, &["resize2fs", &dev])?;
    Ok(Some(format!("{dev} ({}, offline)", p.fs_name())))
}

/// Grows what the enlarged partition `p` holds. Returns what was grown, for the report.
pub fn grow(t: &Tree, run: &dyn Runner, p: &Part, root: &Part, lvs: &lvm::Active) -> Result<Option<String>> {
    if !p.is(FsType::LvmPv) {
        return filesystem(t, p);
    }
    let pv = p.dev.display().to_string();
    let chroot = Some(t.guest().path());
    run.run(chroot, &["lvm", "pvresize", LVM_CONFIG, &pv])?;
    let Some(lv) = lvs.lvs.iter().find(|l| l.dev == root.dev && l.pvs.contains(&p.dev)) else {
        return Ok(Some(format!("{pv} (LVM PV; the new extents are free in its VG)")));
    };
    let name = format!("{}/{}", lv.vg, lv.name);
    // Allocate on the grown PV only, so a VG spanning disks does not grow onto another one.
    run.run(chroot, &["lvm", "lvextend", LVM_CONFIG, "-l", "+100%PVS", &name, &pv])?;
    let fs = filesystem(t, root)?.unwrap_or_default();
    Ok(Some(format!("{pv} (LVM PV), {name} and its filesystem {fs}")))
}
