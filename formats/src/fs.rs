//! What a partition or volume holds, from its signatures: ext2/3/4, XFS, btrfs, swap, FAT,
//! LUKS, an LVM physical volume or an MD RAID member, with the UUID and label a `UUID=` or
//! `LABEL=` spec would name. This is the one probe of the project; the sender's analysis, the
//! conversion's partition list and its growth decisions all ask it.

use crate::read::ReadAt;
use serde::{Deserialize, Serialize};

/// Filesystem (or container) types, named as blkid names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FsType {
    #[serde(rename = "ext2")]
    Ext2,
    #[serde(rename = "ext3")]
    Ext3,
    #[serde(rename = "ext4")]
    Ext4,
    #[serde(rename = "xfs")]
    Xfs,
    #[serde(rename = "btrfs")]
    Btrfs,
    #[serde(rename = "swap")]
    Swap,
    #[serde(rename = "vfat")]
    Vfat,
    #[serde(rename = "crypto_LUKS")]
    Luks,
    #[serde(rename = "LVM2_member")]
    LvmPv,
    #[serde(rename = "linux_raid_member")]
    MdMember,
}

impl FsType {
    /// blkid's name, which is also the mount(2) type for mountable filesystems.
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext2 => "ext2",
            FsType::Ext3 => "ext3",
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Btrfs => "btrfs",
            FsType::Swap => "swap",
            FsType::Vfat => "vfat",
            FsType::Luks => "crypto_LUKS",
            FsType::LvmPv => "LVM2_member",
            FsType::MdMember => "linux_raid_member",
        }
    }

    pub fn is_ext(self) -> bool {
        matches!(self, FsType::Ext2 | FsType::Ext3 | FsType::Ext4)
    }

    /// A filesystem a Linux root (or /boot, /home…) can live on.
    pub fn is_linux_fs(self) -> bool {
        self.is_ext() || matches!(self, FsType::Xfs | FsType::Btrfs)
    }

    /// Mountable as a filesystem (not swap, not a container).
    pub fn mountable(self) -> bool {
        self.is_linux_fs() || self == FsType::Vfat
    }
}

impl std::fmt::Display for FsType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A probe's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub fstype: FsType,
    pub uuid: String,
    pub label: String,
}

/// Bytes read from the start of a region: enough for every signature but btrfs's (64 KiB in).
pub const HEAD: usize = 8192;
const BTRFS_SB: u64 = 0x10000;
const MD_V12: usize = 4096;
/// The MD superblock's magic (little-endian in version 1.x).
pub const MD_MAGIC: u32 = 0xa92b_4efc;

/// An ext2/3/4 superblock (the 1 KiB that starts 1 KiB into the filesystem).
pub fn is_ext(sb: &[u8]) -> bool {
    sb.len() >= 1024 && sb[56..58] == [0x53, 0xef]
}

/// An XFS superblock (the filesystem's first sector).
pub fn is_xfs(sb: &[u8]) -> bool {
    sb.len() >= 4 && &sb[..4] == b"XFSB"
}

/// An LVM physical volume label in the first four sectors.
pub fn is_lvm_pv(head: &[u8]) -> bool {
    (0..4).any(|s| head.get(s * 512..s * 512 + 8) == Some(b"LABELONE"))
}

fn uuid_str(b: &[u8]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn cstr(b: &[u8]) -> String {
    String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or(&[])).trim().to_string()
}

fn u32le(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn probe_head(b: &[u8]) -> Option<Probe> {
    let found = |fstype, uuid, label| Some(Probe { fstype, uuid, label });
    if b.len() < HEAD {
        return None;
    }
    if is_ext(&b[1024..2048]) {
        let sb = &b[1024..2048];
        let (compat, incompat) = (u32le(sb, 92), u32le(sb, 96));
        let t = if incompat & (0x40 | 0x80 | 0x200) != 0 {
            FsType::Ext4
        } else if compat & 0x4 != 0 {
            FsType::Ext3
        } else {
            FsType::Ext2
        };
        return found(t, uuid_str(&sb[0x68..0x78]), cstr(&sb[0x78..0x88]));
    }
    if is_xfs(b) {
        return found(FsType::Xfs, uuid_str(&b[32..48]), cstr(&b[108..120]));
    }
    if &b[4086..4096] == b"SWAPSPACE2" {
        return found(FsType::Swap, uuid_str(&b[1036..1052]), cstr(&b[1052..1068]));
    }
    if &b[..6] == b"LUKS\xba\xbe" {
        return found(FsType::Luks, cstr(&b[168..208]), String::new());
    }
    if is_lvm_pv(b) {
        return found(FsType::LvmPv, String::new(), String::new());
    }
    // MD 1.2 (at 4 KiB) and 1.1 (at the start); 1.0 and 0.90 sit at the end, and their data
    // starts at the member's first byte, so the filesystem inside is found instead.
    for at in [MD_V12, 0] {
        if u32le(b, at) == MD_MAGIC && u32le(b, at + 4) == 1 {
            let sb = &b[at..];
            return found(FsType::MdMember, uuid_str(&sb[16..32]), cstr(&sb[32..64]));
        }
    }
    if b[510..512] == [0x55, 0xaa]
        && (&b[82..87] == b"FAT32" || &b[54..59] == b"FAT16" || &b[54..59] == b"FAT12")
    {
        let o = if &b[82..87] == b"FAT32" { 67 } else { 39 };
        let id = u32le(b, o);
        return found(FsType::Vfat, format!("{:04X}-{:04X}", id >> 16, id & 0xffff), String::new());
    }
    None
}

/// What the region `[start, start + len)` of `f` holds; `None` when no signature matches or the
/// region is too short to tell. Reads at most 8 KiB and one btrfs superblock.
pub fn probe(f: &dyn ReadAt, start: u64, len: u64) -> Option<Probe> {
    let mut b = vec![0u8; HEAD];
    if len < HEAD as u64 || f.read_exact_at(&mut b, start).is_err() {
        return None;
    }
    if let Some(p) = probe_head(&b) {
        return Some(p);
    }
    let mut sb = vec![0u8; 0x1000];
    if len >= BTRFS_SB + sb.len() as u64
        && f.read_exact_at(&mut sb, start.checked_add(BTRFS_SB)?).is_ok()
        && &sb[0x40..0x48] == b"_BHRfS_M"
    {
        return Some(Probe {
            fstype: FsType::Btrfs,
            uuid: uuid_str(&sb[0x20..0x30]),
            label: cstr(&sb[0x12b..0x22b]),
        });
    }
    None
}

/// [`probe`] of a whole file or device.
pub fn probe_file(path: &std::path::Path) -> Option<Probe> {
    let f = std::fs::File::open(path).ok()?;
    let len = ReadAt::size(&f).ok()?;
    probe(&f, 0, len)
}

#[cfg(test)]
mod tests;
