//! The disks to send and what lives on them: each filesystem's type (read by its used blocks, or
//! whole), space and inodes of the mounted ones (conversion writes to / and /boot), and the
//! storage ferry cannot convert or copy well — LVM thin pools, MD RAID, LUKS, a btrfs root,
//! network mounts (not migrated), the system not on the first disk, filesystems `--freeze`
//! cannot freeze.

use super::host::{Host, Usage};
use super::{bytes, pct, Item, Level};
use crate::layout::Layout;
use crate::sender::stack::{self, Mount, Sys};
use ferry_formats::fs::{self, FsType};
use ferry_formats::read::ReadAt;
use std::collections::BTreeSet;

/// Used space or inodes above this is a Warning (Critical on / and /boot).
pub const FULL: f64 = 99.0;

/// Conversion's room: below this much free space (as root) or inodes a full / or /boot is Critical.
pub const ROOM_BYTES: u64 = 1 << 30;
pub const ROOM_INODES: u64 = 10_000;

/// A disk to send.
pub struct Src<'a> {
    pub path: &'a str,
    pub file: &'a dyn ReadAt,
    pub layout: &'a Layout,
}

/// Filesystem types with a freeze implementation (`FIFREEZE` fails with EOPNOTSUPP elsewhere).
const FREEZABLE: &[&str] =
    &["ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "jfs", "reiserfs", "nilfs2", "gfs2", "ocfs2"];

/// The kernel device names each source path stands for (a disk, or loop devices over a file).
pub fn devices(sys: &Sys, sources: &[&str]) -> Vec<BTreeSet<String>> {
    sources.iter().map(|s| crate::sender::freeze::source_devices(sys, s)).collect()
}

/// One item per partition (or the whole disk): what it holds and how it is read.
pub fn fs_types(s: &Src) -> Vec<Item> {
    const T: &str = "Filesystem type";
    let mut out = Vec::new();
    for p in s.layout.parts.iter().filter(|p| p.fs != "extended") {
        let subject =
            if p.number == 0 { s.path.to_string() } else { format!("{} partition {}", s.path, p.number) };
        let len = p.end.saturating_sub(p.start);
        let used = len.saturating_sub(p.free_bytes + p.inode_table_bytes + p.journal_bytes);
        let t = fs::probe(s.file, p.start, len).map(|x| x.fstype);
        let name = t.map_or("unrecognised", |t| t.name());
        let (level, how, fix) = match t {
            Some(t) if t.is_ext() || t == FsType::Xfs || t == FsType::Swap => {
                (Level::Ok, format!("used blocks only: {} of {}", bytes(used), bytes(len)), "")
            }
            Some(FsType::Vfat) => (Level::Ok, format!("read whole (minus zero blocks): {}", bytes(len)), ""),
            Some(FsType::Luks) => (
                Level::Warning,
                format!(
                    "read whole (minus zero blocks): {}; encrypted, conversion cannot open it",
                    bytes(len)
                ),
                "a LUKS data volume migrates as is; a LUKS root cannot be converted yet (see README)",
            ),
            // Read through when the layout could open it (LVM metadata, an MD RAID1 member, btrfs chunks).
            Some(FsType::LvmPv | FsType::MdMember | FsType::Btrfs)
                if (p.fs == "lvm" || p.fs == "btrfs" || p.fs.starts_with("md/"))
                    && !p.fs.ends_with("/unknown")
                    && p.free_bytes > 0 =>
            {
                (
                    Level::Ok,
                    format!("read through to the filesystems inside: {} of {}", bytes(used), bytes(len)),
                    "",
                )
            }
            Some(FsType::LvmPv | FsType::MdMember | FsType::Btrfs) => (
                Level::Warning,
                format!("read whole (minus zero blocks): {}", bytes(len)),
                "expect the whole partition to be read and hashed on every pass",
            ),
            _ => {
                (Level::Warning, format!("unrecognised; read whole (minus zero blocks): {}", bytes(len)), "")
            }
        };
        out.push(
            Item::new("filesystem-type", level, T, format!("{name}, {how}"))
                .on(subject)
                .fix(fix)
                .val("type", name)
                .val("bytes", len)
                .val("bytes_to_read", if level == Level::Ok && t != Some(FsType::Vfat) { used } else { len }),
        );
    }
    out
}

/// Space and inode use of a mounted filesystem on a source.
pub fn usage_items(point: &str, u: &Usage) -> Vec<Item> {
    let system = point == "/" || point == "/boot";
    // Critical only where conversion writes and only when even root (conversion) lacks room:
    // 99 % of a large filesystem can still be plenty.
    let level = |p: f64, short: bool| match p {
        p if p > FULL && system && short => Level::Critical,
        p if p > FULL => Level::Warning,
        _ => Level::Ok,
    };
    let fix = |what: &str| {
        if system {
            format!("conversion writes a new initramfs and configuration here: free {what} on {point} before migrating")
        } else {
            format!("free {what} on {point}: a full filesystem breaks services after the move")
        }
    };
    let space = u.used_percent();
    let inodes = pct(u.files.saturating_sub(u.files_free) as f64, u.files as f64);
    let mut s = Item::new(
        "filesystem-space",
        level(space, u.free < ROOM_BYTES),
        "Space",
        format!("{space:.1} % used, {} available of {}", bytes(u.avail), bytes(u.size)),
    )
    .on(point)
    .val("percent", space)
    .val("available_bytes", u.avail)
    .val("size_bytes", u.size);
    if s.level != Level::Ok {
        s = s.fix(fix("space"));
    }
    let mut i = Item::new(
        "filesystem-inodes",
        level(inodes, u.files_free < ROOM_INODES),
        "Inodes",
        if u.files == 0 {
            "no inode limit (allocated on demand)".to_string()
        } else {
            format!("{inodes:.1} % used, {} free of {}", u.files_free, u.files)
        },
    )
    .on(point)
    .val("percent", inodes)
    .val("free", u.files_free);
    if i.level != Level::Ok {
        i = i.fix(fix("inodes"));
    }
    vec![s, i]
}

/// The devices `name` is built from, itself included (through slaves, not down to disks only).
fn chain(sys: &Sys, name: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![name.to_string()];
    while let Some(n) = todo.pop() {
        if out.insert(n.clone()) {
            todo.extend(sys.slaves(&n));
            let d = sys.disk_of(&n);
            if d != n {
                todo.push(d);
            }
        }
    }
    out
}

/// `ferry send --luks-key-file` was given: an encrypted system is opened in the appliance with
/// it (a wrong key still stops the conversion before it changes anything).
pub fn with_luks_keys(items: &mut [Item]) {
    for i in items.iter_mut().filter(|i| i.id == "storage-luks" && i.level == Level::Critical) {
        i.level = Level::Ok;
        i.detail =
            "the system (/ or /boot) is encrypted: the appliance opens it with the --luks-key-file key"
                .into();
        i.remediation.clear();
    }
}

/// An MD array on the sources: RAID1 with version-1 superblocks is read through and started
/// by conversion in the appliance; other levels and 0.90 superblocks are copied whole and
/// cannot carry the system.
fn md_item(sys: &Sys, d: &str, holds_system: bool) -> Item {
    let name = sys.describe(d);
    let (level, version) = sys.md_kind(d).unwrap_or_default();
    let kind = format!("{level}, metadata {version}");
    if level == "raid1" && version.starts_with("1.") {
        let what = if holds_system {
            format!("the system (/ or /boot) is on MD RAID1 ({kind}): conversion starts the array in the appliance and writes both mirrors")
        } else {
            format!("an MD RAID1 array ({kind}): members read through to the filesystem inside")
        };
        return Item::new("storage-md-raid", Level::Ok, "MD RAID", what)
            .on(name)
            .fix("send every member (--disk per member disk): a member left behind leaves the array degraded on the new VM");
    }
    let level = if holds_system { Level::Critical } else { Level::Warning };
    let what = if holds_system {
        format!("the system (/ or /boot) is on MD RAID ({kind}): conversion starts only RAID1 arrays with version-1 superblocks")
    } else {
        format!("an MD array ({kind}): copied whole, not assembled by conversion")
    };
    Item::new("storage-md-raid", level, "MD RAID", what).on(name).fix(if holds_system {
        "not supported: move the system to RAID1 (metadata 1.x) or a plain disk before migrating"
    } else {
        ""
    })
}

/// The storage stack on the sources: thin pools, MD, LUKS; a btrfs root; network mounts; the
/// system disk's place; filesystems that cannot be frozen.
pub fn stack_items(sys: &Sys, mounts: &[Mount], sources: &[BTreeSet<String>]) -> Vec<Item> {
    let mut out = Vec::new();
    let per_source: Vec<BTreeSet<String>> =
        sources.iter().map(|s| s.iter().flat_map(|d| sys.above(d)).collect()).collect();
    let on: BTreeSet<String> = per_source.iter().flatten().cloned().collect();
    let root = mounts.iter().rev().find(|m| m.point == "/");
    let system: BTreeSet<String> = mounts
        .iter()
        .filter(|m| m.point == "/" || m.point == "/boot")
        .flat_map(|m| sys.mount_devices(m))
        .flat_map(|d| chain(sys, &d))
        .collect();
    for d in &on {
        let uuid = sys.dm_uuid(d).unwrap_or_default();
        let holds_system = system.contains(d);
        let name = sys.describe(d);
        if uuid.starts_with("LVM-") && (uuid.ends_with("-tpool") || uuid.ends_with("-pool")) {
            out.push(
                Item::new("storage-lvm-thin", Level::Warning, "LVM thin pool", "a thin pool is copied whole; thin LVs are not converted yet")
                    .on(name)
                    .fix("move the system off thin LVs before migrating, or expect a whole-disk copy and check the result"),
            );
        } else if uuid.starts_with("CRYPT-LUKS") {
            let level = if holds_system { Level::Critical } else { Level::Warning };
            out.push(
                Item::new("storage-luks", level, "LUKS volume", if holds_system {
                    "the system (/ or /boot) is encrypted: conversion opens it only with a key the sender gives"
                } else {
                    "an encrypted data volume: copied whole, as is"
                })
                .on(name)
                .fix(if holds_system {
                    "ferry send --luks-key-file FILE (a passphrase or key file of the volume, its exact bytes; held in the appliance's memory only)"
                } else {
                    ""
                }),
            );
        } else if d.starts_with("md") {
            out.push(md_item(sys, d, holds_system));
        }
    }
    // The running system is among the sources: its root and its network mounts matter.
    let sent = root.is_some_and(|r| sys.mount_devices(r).iter().any(|d| on.contains(d)));
    if let Some(r) = root.filter(|r| r.fstype == "btrfs" && sent) {
        out.push(
            Item::new("storage-btrfs-root", Level::Warning, "btrfs root", format!("/ is btrfs ({})", r.source))
                .fix("a root in one subvolume (`@`, with others such as `@home` mounted by fstab) is proven to convert; snapshot-booting layouts (snapper's default subvolume) are not: rehearse the migrated system before cutover"),
        );
    }
    for m in mounts.iter().filter(|m| sent && stack::is_network(&m.fstype)) {
        out.push(
            Item::new(
                "network-mounts",
                Level::Warning,
                "Network mount",
                format!("{} from {} is not migrated", m.fstype, m.source),
            )
            .on(&m.point)
            .fix("the new VM mounts it again from its fstab: make sure it can reach the server"),
        );
    }
    if let (Some(first), Some(r)) = (per_source.first(), root) {
        let root_devs: BTreeSet<String> = sys.mount_devices(r).iter().flat_map(|d| chain(sys, d)).collect();
        let elsewhere = per_source.iter().skip(1).any(|s| !s.is_disjoint(&root_devs));
        if first.is_disjoint(&root_devs) && elsewhere {
            out.push(
                Item::new(
                    "system-disk-order",
                    Level::Warning,
                    "System disk order",
                    "/ is not on the first disk sent; the new VM boots its first disk",
                )
                .fix("list the disk that holds / and /boot first (--disk), or map it to the VM's first disk"),
            );
        }
    }
    for m in stack::mounts_on(sys, mounts, &on).into_iter().filter(|m| !m.read_only) {
        if !FREEZABLE.contains(&m.fstype.as_str()) {
            out.push(
                Item::new(
                    "freeze-support",
                    Level::Warning,
                    "Cannot be frozen",
                    format!("{} is {}: --freeze cannot freeze it", m.point, m.fstype),
                )
                .on(&m.point)
                .fix(format!("remount {} read-only (or unmount it) before the final pass", m.point)),
            );
        }
    }
    out
}

/// Space and inodes of every mounted filesystem on the sources.
pub fn mounted_usage(h: &Host, mounts: &[Mount], sources: &[BTreeSet<String>]) -> Vec<Item> {
    let on: BTreeSet<String> = sources.iter().flatten().flat_map(|d| h.sys.above(d)).collect();
    let mut out = Vec::new();
    for m in stack::mounts_on(&h.sys, mounts, &on) {
        match (h.statfs)(&h.at(&m.point)) {
            Ok(u) => out.extend(usage_items(&m.point, &u)),
            Err(e) => out
                .push(Item::new("filesystem-space", Level::Warning, "Space", format!("{e:#}")).on(&m.point)),
        }
    }
    out
}

#[cfg(test)]
mod tests;
