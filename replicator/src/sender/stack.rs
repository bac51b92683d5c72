//! The storage stack around the sources, from sysfs and mountinfo. Going up from a disk: its
//! partitions and every holder on them, recursively (device-mapper for LVM and dm-crypt, MD
//! arrays, loop devices), and the mounted filesystems on any of those (btrfs by its member
//! devices, since its mounts carry an anonymous device number). Going down from a device: the
//! whole disks it is made of, through slaves, with every PV of an LVM volume group. `--freeze`
//! uses the first, `ferry send` without `--disk` the second.

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A sysfs tree: `/sys`, or a fixture in tests.
pub struct Sys {
    root: PathBuf,
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `st_dev` of the superblock (0:N for btrfs and virtual filesystems).
    pub dev: (u64, u64),
    pub point: String,
    pub fstype: String,
    pub source: String,
    pub read_only: bool,
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let g: Vec<&str> = post.split(' ').collect();
            let (a, b) = f.get(2)?.split_once(':')?;
            let ro = f.get(5)?.split(',').any(|o| o == "ro") || g.get(2)?.split(',').any(|o| o == "ro");
            Some(Mount {
                dev: (a.parse().ok()?, b.parse().ok()?),
                point: unescape(f.get(4)?),
                fstype: g.first()?.to_string(),
                source: unescape(g.get(1)?),
                read_only: ro,
            })
        })
        .collect()
}

/// This process's mounts.
pub fn mounts() -> Result<Vec<Mount>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text))
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

impl Sys {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Sys { root: root.into() }
    }

    pub fn system() -> Self {
        Sys::new("/sys")
    }

    fn class(&self, name: &str) -> PathBuf {
        self.root.join("class/block").join(name)
    }

    /// The kernel name (`sda1`, `dm-0`) of a device number.
    pub fn name_of(&self, dev: (u64, u64)) -> Option<String> {
        let p = std::fs::canonicalize(self.root.join(format!("dev/block/{}:{}", dev.0, dev.1))).ok()?;
        Some(p.file_name()?.to_string_lossy().into_owned())
    }

    /// The kernel name of a block device node (`/dev/mapper/vg-root` → `dm-0`).
    pub fn name_of_node(&self, node: &Path) -> Option<String> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = std::fs::metadata(node).ok()?;
        if !m.file_type().is_block_device() {
            return None;
        }
        self.name_of((libc::major(m.rdev()) as u64, libc::minor(m.rdev()) as u64))
    }

    pub fn is_partition(&self, name: &str) -> bool {
        self.class(name).join("partition").exists()
    }

    /// The whole disk a partition belongs to (a disk is its own).
    pub fn disk_of(&self, name: &str) -> String {
        if self.is_partition(name) {
            if let Some(d) = std::fs::canonicalize(self.class(name)).ok().and_then(|p| {
                p.parent().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned())
            }) {
                return d;
            }
        }
        name.to_string()
    }

    fn entries(&self, name: &str, sub: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.class(name).join(sub))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn partitions(&self, disk: &str) -> Vec<String> {
        let Ok(dir) = std::fs::canonicalize(self.class(disk)) else { return Vec::new() };
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().join("partition").exists())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Nothing is stacked on it: no holders and no partitions. Only a leaf can be in use by
    /// something ferry cannot see (a disk whose partition is mounted is claimed through it).
    pub fn is_leaf(&self, name: &str) -> bool {
        self.holders(name).is_empty() && self.partitions(name).is_empty()
    }

    pub fn slaves(&self, name: &str) -> Vec<String> {
        self.entries(name, "slaves")
    }

    pub fn holders(&self, name: &str) -> Vec<String> {
        self.entries(name, "holders")
    }

    /// The file behind a loop device.
    pub fn loop_backing(&self, disk: &str) -> Option<String> {
        read_trim(&self.class(disk).join("loop/backing_file")).filter(|s| !s.is_empty())
    }

    /// Every loop device over `file`.
    pub fn loops_over(&self, file: &str) -> Vec<String> {
        let Ok(all) = std::fs::read_dir(self.root.join("class/block")) else { return Vec::new() };
        let mut v: Vec<String> = all
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("loop") && self.loop_backing(n).as_deref() == Some(file))
            .collect();
        v.sort();
        v
    }

    /// The device-mapper uuid (`LVM-…`, `CRYPT-LUKS2-…`), if `name` is a dm device.
    pub fn dm_uuid(&self, name: &str) -> Option<String> {
        read_trim(&self.class(name).join("dm/uuid")).filter(|u| !u.is_empty())
    }

    /// An MD array's level and superblock version (`raid1`, `1.2`), if `name` is one.
    pub fn md_kind(&self, name: &str) -> Option<(String, String)> {
        let md = self.class(name).join("md");
        Some((read_trim(&md.join("level"))?, read_trim(&md.join("metadata_version"))?))
    }

    /// A readable name for messages: `dm-0 (vg-root)`, `md0`, `sda2`.
    pub fn describe(&self, name: &str) -> String {
        match read_trim(&self.class(name).join("dm/name")) {
            Some(n) if !n.is_empty() => format!("{name} ({n})"),
            _ => name.to_string(),
        }
    }

    /// The disk, its partitions and every device stacked on any of them.
    pub fn above(&self, disk: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo = vec![disk.to_string()];
        todo.extend(self.partitions(disk));
        while let Some(n) = todo.pop() {
            if out.insert(n.clone()) {
                todo.extend(self.entries(&n, "holders"));
            }
        }
        out
    }

    /// The btrfs filesystem that `member` belongs to: all its member devices.
    pub fn btrfs_members(&self, member: &str) -> Vec<String> {
        let Ok(fss) = std::fs::read_dir(self.root.join("fs/btrfs")) else { return Vec::new() };
        for fs in fss.flatten() {
            let devs = fs.path().join("devices");
            if devs.join(member).exists() {
                let mut v: Vec<String> = std::fs::read_dir(&devs)
                    .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                    .unwrap_or_default();
                v.sort();
                return v;
            }
        }
        Vec::new()
    }

    /// The block devices a mount lives on (none for virtual and network filesystems).
    pub fn mount_devices(&self, m: &Mount) -> Vec<String> {
        if m.dev.0 != 0 {
            return self.name_of(m.dev).into_iter().collect();
        }
        if m.fstype == "btrfs" {
            if let Some(n) = self.name_of_node(Path::new(&m.source)) {
                let all = self.btrfs_members(&n);
                return if all.is_empty() { vec![n] } else { all };
            }
        }
        Vec::new()
    }

    /// Every PV of the LVM volume group an LV (`dm-N` with an `LVM-` uuid) belongs to, as far as
    /// the active LVs of that group show them.
    fn vg_members(&self, name: &str) -> Vec<String> {
        let Some(uuid) = read_trim(&self.class(name).join("dm/uuid")) else { return Vec::new() };
        let Some(rest) = uuid.strip_prefix("LVM-") else { return Vec::new() };
        let vg: String = rest.chars().take(32).collect();
        let Ok(all) = std::fs::read_dir(self.root.join("class/block")) else { return Vec::new() };
        let mut out = Vec::new();
        for e in all.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let u = read_trim(&self.class(&n).join("dm/uuid")).unwrap_or_default();
            if u.strip_prefix("LVM-").is_some_and(|r| r.starts_with(&vg)) {
                out.extend(self.entries(&n, "slaves"));
            }
        }
        out
    }

    /// The whole disks `name` is made of. Fails on a device that is neither a disk nor made of
    /// disks (a loop device over a file, a RAM disk), naming it.
    pub fn below(&self, name: &str) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut todo = vec![name.to_string()];
        while let Some(n) = todo.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            let mut slaves = self.entries(&n, "slaves");
            slaves.extend(self.vg_members(&n));
            if !slaves.is_empty() {
                todo.extend(slaves);
                continue;
            }
            let disk = self.disk_of(&n);
            if disk.starts_with("loop") {
                let file = read_trim(&self.class(&disk).join("loop/backing_file")).unwrap_or_default();
                bail!("{} is a loop device over {file:?}, not a disk", self.describe(&disk));
            }
            if disk.starts_with("ram") || disk.starts_with("zram") {
                bail!("{} is a RAM disk", self.describe(&disk));
            }
            out.insert(disk);
        }
        Ok(out)
    }
}

/// The mounted filesystems living on any of `devs`, one mount per filesystem.
pub fn mounts_on<'a>(sys: &Sys, mounts: &'a [Mount], devs: &BTreeSet<String>) -> Vec<&'a Mount> {
    let mut seen = BTreeSet::new();
    mounts
        .iter()
        .filter(|m| sys.mount_devices(m).iter().any(|d| devs.contains(d)))
        .filter(|m| seen.insert((m.dev, m.source.clone())))
        .collect()
}

/// Network and virtual filesystems: never migrated by block copy.
pub fn is_network(fstype: &str) -> bool {
    matches!(fstype, "nfs" | "nfs4" | "cifs" | "smb3" | "sshfs" | "fuse.sshfs" | "glusterfs" | "ceph" | "9p")
}

/// The disks that make up this system: those below `/` and below every other filesystem of
/// `fstab` that is mounted from a local block device, each with the mount points that need it.
pub fn system_disks(sys: &Sys, mounts: &[Mount], fstab: &str) -> Result<Vec<(String, Vec<String>)>> {
    let wanted: Vec<String> = fstab
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[1].starts_with('/') && !is_network(f[2])).then(|| unescape(f[1]))
        })
        .collect();
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let root = mounts.iter().rev().find(|m| m.point == "/").context("nothing is mounted on /")?;
    for m in mounts.iter().filter(|m| m.point == "/" || wanted.contains(&m.point)) {
        if m.point == "/" && !std::ptr::eq(m, root) {
            continue;
        }
        let devs = sys.mount_devices(m);
        if devs.is_empty() {
            if m.point == "/" {
                bail!("/ is {} from {:?}, not on a local disk: pass --disk", m.fstype, m.source);
            }
            continue;
        }
        for d in devs {
            let disks = match sys.below(&d) {
                Ok(x) => x,
                Err(e) if m.point == "/" => {
                    return Err(e.context(format!("resolving / ({}) to disks; pass --disk", m.source)))
                }
                Err(e) => {
                    log::warn!("{} is not on a disk ({e:#}); it is not sent", m.point);
                    continue;
                }
            };
            for disk in disks {
                match out.iter_mut().find(|(d, _)| *d == disk) {
                    Some((_, why)) if !why.contains(&m.point) => why.push(m.point.clone()),
                    Some(_) => {}
                    None => out.push((disk, vec![m.point.clone()])),
                }
            }
        }
    }
    if out.is_empty() {
        bail!("no disk found under /: pass --disk");
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod fixture;
#[cfg(test)]
mod tests;
