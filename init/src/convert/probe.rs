//! Partitions of the target disks and what they hold (filesystem type, UUID, label), read from
//! superblocks without mounting. Also re-reads partition tables after repartitioning.

use anyhow::{Context, Result};
use serde::Serialize;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

nix::ioctl_none!(blkrrpart, 0x12, 95);

#[derive(Debug, Clone, Serialize)]
pub struct Part {
    pub dev: PathBuf,
    pub disk: usize,
    pub number: u32,
    pub fstype: String,
    pub uuid: String,
    pub label: String,
    /// Other names of the device (an LV: `/dev/mapper/VG-LV`, `/dev/VG/LV`); number is 0.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

impl Part {
    /// The fstab spec we prefer for it.
    pub fn spec(&self) -> Option<String> {
        (!self.uuid.is_empty()).then(|| format!("UUID={}", self.uuid))
    }
}

fn uuid_str(b: &[u8]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn cstr(b: &[u8]) -> String {
    String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or(&[])).trim().to_string()
}

/// (fstype, uuid, label) of the filesystem on `dev`.
pub fn probe(dev: &Path) -> Option<(String, String, String)> {
    let f = std::fs::File::open(dev).ok()?;
    // The btrfs superblock is at 64 KiB: read that far (short devices give what they have).
    let mut b = vec![0u8; 0x10100];
    let n = f.read_at(&mut b, 0).ok()?;
    if n < 8192 {
        return None;
    }
    b.truncate(n);
    if &b[1080..1082] == b"\x53\xef" {
        let sb = &b[1024..2048];
        let incompat = u32::from_le_bytes(sb[96..100].try_into().ok()?);
        let compat = u32::from_le_bytes(sb[92..96].try_into().ok()?);
        let t = if incompat & 0x40 != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        return Some((t.into(), uuid_str(&sb[0x68..0x78]), cstr(&sb[0x78..0x88])));
    }
    if &b[..4] == b"XFSB" {
        return Some(("xfs".into(), uuid_str(&b[32..48]), cstr(&b[108..120])));
    }
    if &b[4086..4096] == b"SWAPSPACE2" {
        return Some(("swap".into(), uuid_str(&b[1036..1052]), cstr(&b[1052..1068])));
    }
    if &b[82..87] == b"FAT32" || &b[54..59] == b"FAT16" || &b[54..59] == b"FAT12" {
        let o = if &b[82..87] == b"FAT32" { 67 } else { 39 };
        let id = u32::from_le_bytes(b[o..o + 4].try_into().ok()?);
        return Some(("vfat".into(), format!("{:04X}-{:04X}", id >> 16, id & 0xffff), String::new()));
    }
    if b.get(0x10040..0x10048) == Some(b"_BHRfS_M") {
        return Some(("btrfs".into(), String::new(), String::new()));
    }
    if &b[..6] == b"LUKS\xba\xbe" {
        return Some(("crypto_LUKS".into(), String::new(), String::new()));
    }
    if &b[512..520] == b"LABELONE" {
        return Some(("LVM2_member".into(), String::new(), String::new()));
    }
    None
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

pub fn all(disks: &super::disks::Disks) -> Vec<Part> {
    let mut out = Vec::new();
    for i in 0..disks.paths.len() {
        for (n, dev) in disks.partitions(i) {
            let (fstype, uuid, label) = probe(&dev).unwrap_or_default();
            out.push(Part { dev, disk: i, number: n, fstype, uuid, label, aliases: Vec::new() });
        }
    }
    out
}

/// The activated LVs as parts, on the disk of their first PV.
pub fn lvs(active: &crate::lvm::Active, parts: &[Part]) -> Vec<Part> {
    let mut out = Vec::new();
    for lv in &active.lvs {
        let disk = lv.pvs.first().and_then(|pv| parts.iter().find(|p| &p.dev == pv)).map_or(0, |p| p.disk);
        let (fstype, uuid, label) = probe(&lv.dev).unwrap_or_default();
        out.push(Part { dev: lv.dev.clone(), disk, number: 0, fstype, uuid, label, aliases: lv.aliases() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_real_filesystems() {
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("x.img");
        let run = |c: &str| {
            assert!(std::process::Command::new("bash").arg("-c").arg(c).status().unwrap().success(), "{c}")
        };
        let u = "6f1e6c54-3b1c-4bde-a8f2-0123456789ab";
        run(&format!("truncate -s 64M {0} && mkfs.ext4 -q -F -U {u} -L rootfs {0}", img.display()));
        assert_eq!(probe(&img).unwrap(), ("ext4".into(), u.into(), "rootfs".into()));
        run(&format!("truncate -s 320M {0} && mkfs.xfs -q -f -m uuid={u} -L data {0}", img.display()));
        assert_eq!(probe(&img).unwrap(), ("xfs".into(), u.into(), "data".into()));
        run(&format!("mkswap -q -U {u} -L sw {}", img.display()));
        assert_eq!(probe(&img).unwrap(), ("swap".into(), u.into(), "sw".into()));
        run(&format!("mkfs.vfat -i 1234ABCD {} >/dev/null", img.display()));
        assert_eq!(probe(&img).unwrap().1, "1234-ABCD");
    }
}
