//! Sources: opened read-only (ferry never writes a source), identified for later passes, and
//! checked for being mounted (a live source works, with a consistency warning). Also finds the
//! system disk when no `--disk` is given.

use crate::layout::RangeSet;
use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

pub fn open(path: &str) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("opening source {path} read-only"))
}

/// Identity of a source across passes: its canonical path, size and host.
pub fn source_id(path: &str, size: u64) -> [u8; 32] {
    let canon =
        std::fs::canonicalize(path).map(|p| p.display().to_string()).unwrap_or_else(|_| path.to_string());
    let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    let mut h = blake3::Hasher::new();
    h.update(b"ferry-source-v1\0");
    h.update(canon.as_bytes());
    h.update(&size.to_le_bytes());
    h.update(host.as_bytes());
    *h.finalize().as_bytes()
}

/// Identity of one pass's plan: the source and exactly which extents it sends.
pub fn plan_hash(source_id: &[u8; 32], extents: &RangeSet) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(source_id);
    for (s, e) in extents.ranges() {
        h.update(&s.to_le_bytes());
        h.update(&e.to_le_bytes());
    }
    *h.finalize().as_bytes()
}

fn dev_of(path: &str) -> Option<(u64, u64)> {
    let m = std::fs::metadata(path).ok()?;
    use std::os::unix::fs::FileTypeExt;
    if !m.file_type().is_block_device() {
        return None;
    }
    let r = m.rdev();
    Some((libc::major(r) as u64, libc::minor(r) as u64))
}

/// `maj:min` of every mounted block device (from mountinfo).
fn mounted_devices() -> Vec<((u64, u64), String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (a, b) = f.get(2)?.split_once(':')?;
            Some(((a.parse().ok()?, b.parse().ok()?), f.get(4)?.to_string()))
        })
        .collect()
}

/// The disk (maj:min) a partition or disk device belongs to, via sysfs.
fn disk_of(dev: (u64, u64)) -> Option<String> {
    let p = std::fs::canonicalize(format!("/sys/dev/block/{}:{}", dev.0, dev.1)).ok()?;
    let dir = if p.join("partition").exists() { p.parent()?.to_path_buf() } else { p };
    Some(dir.file_name()?.to_string_lossy().into_owned())
}

/// A warning when the source disk (or one of its partitions) is mounted.
pub fn mounted_warning(path: &str) -> Option<String> {
    let dev = dev_of(path)?;
    let disk = disk_of(dev)?;
    let hits: Vec<String> = mounted_devices()
        .into_iter()
        .filter(|(d, _)| disk_of(*d).as_deref() == Some(&disk))
        .map(|(_, m)| m)
        .collect();
    (!hits.is_empty()).then(|| {
        format!(
            "source {path} is mounted ({}): a live copy may be inconsistent; finish with a pass after stopping services",
            hits.join(", ")
        )
    })
}

/// The disk holding `/`.
pub fn system_disk() -> Result<String> {
    let root = mounted_devices()
        .into_iter()
        .find(|(_, m)| m == "/")
        .map(|(d, _)| d)
        .context("cannot find the device mounted on / (pass --disk)")?;
    let disk = disk_of(root).context("cannot map the root device to a disk (pass --disk)")?;
    let p = format!("/dev/{disk}");
    anyhow::ensure!(Path::new(&p).exists(), "{p} does not exist (pass --disk)");
    Ok(p)
}

nix::ioctl_readwrite!(fifreeze, b'X', 119, libc::c_int);
nix::ioctl_readwrite!(fithaw, b'X', 120, libc::c_int);

/// Mounted filesystems of a source, frozen (FIFREEZE) until dropped (FITHAW).
pub struct Frozen {
    mounts: Vec<(File, String)>,
}

impl Frozen {
    pub fn mountpoints(&self) -> Vec<&str> {
        self.mounts.iter().map(|(_, m)| m.as_str()).collect()
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        for (f, m) in self.mounts.iter().rev() {
            let mut arg: libc::c_int = 0;
            // SAFETY: FITHAW on a directory we opened.
            match unsafe { fithaw(f.as_raw_fd(), &mut arg) } {
                Ok(_) => log::info!("thawed {m}"),
                Err(e) => log::error!("thawing {m} failed: {e}; run `fsfreeze -u {m}`"),
            }
        }
    }
}

/// Freezes every mounted filesystem on the source disk (or partition) `path`.
pub fn freeze(path: &str) -> Result<Frozen> {
    use std::os::fd::AsRawFd;
    let mut fr = Frozen { mounts: Vec::new() };
    let Some(dev) = dev_of(path) else { return Ok(fr) };
    let Some(disk) = disk_of(dev) else { return Ok(fr) };
    for (d, m) in mounted_devices() {
        if disk_of(d).as_deref() != Some(&disk) {
            continue;
        }
        let f = File::open(&m).with_context(|| format!("opening mountpoint {m}"))?;
        let mut arg: libc::c_int = 0;
        // SAFETY: FIFREEZE on a directory we opened.
        unsafe { fifreeze(f.as_raw_fd(), &mut arg) }.with_context(|| format!("freezing {m}"))?;
        log::info!("froze {m} for the final pass");
        fr.mounts.push((f, m));
    }
    Ok(fr)
}
