//! Partitions of the target disks and what they hold (through `ferry_formats::fs::probe`),
//! plus the activated LVs as parts of their own.

use crate::machine::Machine;
use anyhow::{Context, Result};
use ferry_formats::FsType;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

nix::ioctl_none!(blkrrpart, 0x12, 95);

#[derive(Debug, Clone, Serialize)]
pub struct Part {
    pub dev: PathBuf,
    pub disk: usize,
    pub number: u32,
    pub fstype: Option<FsType>,
    pub uuid: String,
    pub label: String,
    /// Other names of the device (an LV: `/dev/mapper/VG-LV`, `/dev/VG/LV`); number is 0.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

impl Part {
    fn probed(dev: PathBuf, disk: usize, number: u32, aliases: Vec<String>) -> Part {
        let p = ferry_formats::fs::probe_file(&dev);
        let (fstype, uuid, label) = p.map(|p| (Some(p.fstype), p.uuid, p.label)).unwrap_or_default();
        Part { dev, disk, number, fstype, uuid, label, aliases }
    }

    /// The fstab spec we prefer for it (none for an MD member: its array is what is named).
    pub fn spec(&self) -> Option<String> {
        (!self.uuid.is_empty() && !self.is(FsType::MdMember)).then(|| format!("UUID={}", self.uuid))
    }

    pub fn is(&self, t: FsType) -> bool {
        self.fstype == Some(t)
    }

    pub fn fs_name(&self) -> &'static str {
        self.fstype.map_or("unknown", |t| t.name())
    }
}

/// Makes the kernel re-read a disk's partition table and waits for the partition nodes.
pub fn reread(disk: &Path, expect: usize) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    // SAFETY: BLKRRPART takes no argument.
    unsafe { blkrrpart(f.as_raw_fd()) }
        .with_context(|| format!("re-reading the partition table of {}", disk.display()))?;
    drop(f);
    let t = Instant::now();
    while partitions_of(disk).len() < expect && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Partition device nodes of a whole disk, by number (from sysfs).
pub fn partitions_of(disk: &Path) -> Vec<(u32, PathBuf)> {
    let name = disk.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(Path::new("/sys/block").join(&name)) {
        for e in rd.flatten() {
            if let Ok(n) = std::fs::read_to_string(e.path().join("partition")) {
                let dev = Path::new("/dev").join(e.file_name());
                if let Ok(n) = n.trim().parse() {
                    if dev.exists() {
                        out.push((n, dev));
                    }
                }
            }
        }
    }
    out.sort();
    out
}

/// Every partition of the disks, probed.
pub fn all(m: &dyn Machine, disks: &[PathBuf]) -> Vec<Part> {
    let mut out = Vec::new();
    for i in 0..disks.len() {
        for (n, dev) in m.partitions(disks, i) {
            out.push(Part::probed(dev, i, n, Vec::new()));
        }
    }
    out
}

/// A device stacked on others (an MD array, an opened LUKS volume, an LV) as a part of its own,
/// on the disk of `lower` (its first member, backing device or PV).
pub fn stacked(dev: &Path, aliases: Vec<String>, lower: Option<&Path>, parts: &[Part]) -> Part {
    let disk = lower.and_then(|d| parts.iter().find(|p| p.dev == d)).map_or(0, |p| p.disk);
    Part::probed(dev.to_path_buf(), disk, 0, aliases)
}
