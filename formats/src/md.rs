//! MD RAID version-1 superblocks (linux/raid/md_p.h `mdp_superblock_1`): where they sit (1.1 at
//! the member's first byte, 1.2 at 4 KiB, 1.0 near its end), their checksum, and the fields the
//! sender's used-block analysis and the conversion's array assembly need. Every value is
//! checked against the member before it is believed: the superblock must sit where it says,
//! its checksum must hold and its data area must fit the member.

use crate::read::ReadAt;
use anyhow::{ensure, Context, Result};

pub use crate::fs::MD_MAGIC;

/// Bytes read for a superblock: its 256-byte body and up to 384 device roles.
pub const SB_LEN: usize = 1024;
/// A reshape is in progress (feature bit).
pub const FEATURE_RESHAPE_ACTIVE: u32 = 0x4;
/// Role of a spare device in `dev_roles`.
pub const ROLE_SPARE: u16 = 0xffff;
/// Role of a faulty device in `dev_roles`.
pub const ROLE_FAULTY: u16 = 0xfffe;

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]))
}

/// The kernel's `calc_sb_1_csum`: the 32-bit words of the superblock and its device roles with
/// the checksum field zeroed, summed in 64 bits and folded.
pub fn checksum(sb: &[u8]) -> Option<u32> {
    let max_dev = u32_at(sb, 220) as usize;
    let len = 256 + max_dev.checked_mul(2)?;
    let words = sb.get(..len)?;
    let mut sum: u64 = 0;
    for (i, w) in words.chunks(4).enumerate() {
        // An odd max_dev leaves a last 16-bit word.
        let v = match w {
            _ if i == 216 / 4 => 0,
            [a, b, c, d] => u32::from_le_bytes([*a, *b, *c, *d]),
            [a, b] => u16::from_le_bytes([*a, *b]) as u32,
            _ => return None,
        };
        sum += v as u64;
    }
    Some(((sum & 0xffff_ffff) + (sum >> 32)) as u32)
}

/// A checked version-1 superblock of one member.
#[derive(Debug, Clone, PartialEq)]
pub struct Superblock {
    /// 0 (1.0), 1 (1.1) or 2 (1.2).
    pub minor: u32,
    /// Byte offset of the superblock in the member.
    pub at: u64,
    pub set_uuid: [u8; 16],
    /// `homehost:name` as mdadm writes it.
    pub name: String,
    pub level: i32,
    pub raid_disks: u32,
    pub features: u32,
    pub events: u64,
    /// The data area, in bytes from the member's start.
    pub data_start: u64,
    pub data_len: u64,
    /// This member's slot in `dev_roles`, and the role found there (0.. active, or
    /// [`ROLE_SPARE`]/[`ROLE_FAULTY`]).
    pub dev_number: u32,
    pub role: u16,
}

impl Superblock {
    /// The array UUID as mdadm prints it (`xxxxxxxx:xxxxxxxx:xxxxxxxx:xxxxxxxx`).
    pub fn uuid_mdadm(&self) -> String {
        let h: String = self.set_uuid.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}:{}:{}:{}", &h[0..8], &h[8..16], &h[16..24], &h[24..32])
    }

    /// The part of the name after `homehost:` (mdadm's `/dev/md/NAME`).
    pub fn short_name(&self) -> &str {
        self.name.rsplit(':').next().unwrap_or("")
    }
}

/// Where a 1.0 superblock sits in a member of `len` bytes: 8 KiB from the end, 4 KiB aligned.
pub fn v10_offset(len: u64) -> Option<u64> {
    len.checked_sub(8192).map(|o| o & !4095)
}

/// Parses and checks a superblock read from byte `at` of a member of `len` bytes.
pub fn parse(sb: &[u8], at: u64, len: u64) -> Result<Superblock> {
    ensure!(sb.len() >= SB_LEN, "short superblock read");
    ensure!(u32_at(sb, 0) == MD_MAGIC && u32_at(sb, 4) == 1, "no MD version-1 superblock at byte {at}");
    // A leftover superblock of an earlier array where this one is not: its own offset says.
    ensure!(
        u64_at(sb, 144) == at / 512,
        "the superblock at byte {at} names its place as sector {}",
        u64_at(sb, 144)
    );
    let max_dev = u32_at(sb, 220);
    ensure!(max_dev <= 384, "implausible max_dev {max_dev}");
    let want = u32_at(sb, 216);
    ensure!(checksum(sb) == Some(want), "superblock checksum mismatch (stored {want:#x})");
    let (off, size) = (u64_at(sb, 128), u64_at(sb, 136));
    let data = off.checked_mul(512).zip(size.checked_mul(512));
    let (data_start, data_len) = data.context("data area out of range")?;
    let data_end = data_start.checked_add(data_len).filter(|&e| e <= len && data_len > 0);
    data_end.with_context(|| {
        format!("data area of {data_len} bytes at byte {data_start} does not fit the member ({len} bytes)")
    })?;
    let sb_end = at + SB_LEN as u64;
    let overlaps = data_start < sb_end && at < data_start + data_len;
    ensure!(!overlaps, "data area at byte {data_start} overlaps the superblock at byte {at}");
    let dev_number = u32_at(sb, 160);
    ensure!(dev_number < max_dev, "device number {dev_number} is outside the {max_dev} roles");
    let r = 256 + dev_number as usize * 2;
    let role = u16::from_le_bytes([sb[r], sb[r + 1]]);
    let name = &sb[32..64];
    let name = String::from_utf8_lossy(&name[..name.iter().position(|&c| c == 0).unwrap_or(32)]).into_owned();
    let minor = match at {
        0 => 1,
        4096 => 2,
        _ => 0,
    };
    let mut set_uuid = [0u8; 16];
    set_uuid.copy_from_slice(&sb[16..32]);
    Ok(Superblock {
        minor,
        at,
        set_uuid,
        name,
        level: u32_at(sb, 72) as i32,
        raid_disks: u32_at(sb, 92),
        features: u32_at(sb, 8),
        events: u64_at(sb, 200),
        data_start,
        data_len,
        dev_number,
        role,
    })
}

/// The version-1 superblock of the member at `[start, start + len)` of `f`: 1.2, 1.1, then
/// 1.0; `Ok(None)` when none of the three places holds the magic.
pub fn read(f: &dyn ReadAt, start: u64, len: u64) -> Result<Option<Superblock>> {
    let mut places = vec![4096u64, 0];
    places.extend(v10_offset(len).filter(|&o| o >= 8192));
    let mut sb = vec![0u8; SB_LEN];
    for at in places {
        if at + SB_LEN as u64 > len {
            continue;
        }
        f.read_exact_at(&mut sb, start + at)
            .with_context(|| format!("reading the MD superblock at byte {at}"))?;
        if u32_at(&sb, 0) == MD_MAGIC && u32_at(&sb, 4) == 1 {
            return parse(&sb, at, len).map(Some);
        }
    }
    Ok(None)
}

/// Writes a valid superblock for tests and fixtures: a RAID1 (or `level`) member of `len`
/// bytes, superblock at `at`, data area `[data_start, data_start + data_len)`.
#[allow(clippy::too_many_arguments)]
pub fn build(
    at: u64,
    set_uuid: [u8; 16],
    name: &str,
    level: i32,
    raid_disks: u32,
    dev_number: u32,
    data_start: u64,
    data_len: u64,
) -> Vec<u8> {
    let mut sb = vec![0u8; SB_LEN];
    sb[0..4].copy_from_slice(&MD_MAGIC.to_le_bytes());
    sb[4..8].copy_from_slice(&1u32.to_le_bytes());
    sb[16..32].copy_from_slice(&set_uuid);
    let n = name.len().min(32);
    sb[32..32 + n].copy_from_slice(&name.as_bytes()[..n]);
    sb[72..76].copy_from_slice(&level.to_le_bytes());
    sb[80..88].copy_from_slice(&(data_len / 512).to_le_bytes());
    sb[92..96].copy_from_slice(&raid_disks.to_le_bytes());
    sb[128..136].copy_from_slice(&(data_start / 512).to_le_bytes());
    sb[136..144].copy_from_slice(&(data_len / 512).to_le_bytes());
    sb[144..152].copy_from_slice(&(at / 512).to_le_bytes());
    sb[160..164].copy_from_slice(&dev_number.to_le_bytes());
    sb[168..184].copy_from_slice(&[dev_number as u8 + 1; 16]);
    sb[200..208].copy_from_slice(&1u64.to_le_bytes());
    sb[208..216].copy_from_slice(&u64::MAX.to_le_bytes());
    sb[220..224].copy_from_slice(&raid_disks.to_le_bytes());
    for d in 0..raid_disks as usize {
        sb[256 + 2 * d..258 + 2 * d].copy_from_slice(&(d as u16).to_le_bytes());
    }
    let c = checksum(&sb).unwrap_or(0);
    sb[216..220].copy_from_slice(&c.to_le_bytes());
    sb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_version_is_found_where_it_sits() {
        let len = 8u64 << 20;
        for (at, minor) in [(4096u64, 2), (0, 1), (v10_offset(len).unwrap(), 0)] {
            let data_start = if minor == 0 { 0 } else { 1 << 20 };
            let data_len = if minor == 0 { at } else { len - data_start };
            let mut m = vec![0u8; len as usize];
            let sb = build(at, [7; 16], "host:0", 1, 2, 1, data_start, data_len);
            m[at as usize..at as usize + SB_LEN].copy_from_slice(&sb);
            let s = read(&m, 0, len).unwrap().unwrap();
            assert_eq!((s.minor, s.at, s.dev_number, s.role, s.level), (minor, at, 1, 1, 1));
            assert_eq!((s.data_start, s.data_len), (data_start, data_len));
            assert_eq!(s.short_name(), "0");
            assert_eq!(s.uuid_mdadm(), "07070707:07070707:07070707:07070707");
        }
    }

    #[test]
    fn hostile_superblocks_are_refused() {
        let len = 8u64 << 20;
        let place = |sb: Vec<u8>| {
            let mut m = vec![0u8; len as usize];
            m[4096..4096 + SB_LEN].copy_from_slice(&sb);
            m
        };
        let fix = |mut sb: Vec<u8>| {
            let c = checksum(&sb).unwrap();
            sb[216..220].copy_from_slice(&c.to_le_bytes());
            sb
        };
        // Data past the member, data over the superblock, a stale checksum, a device number
        // outside the roles, a superblock that is not where it says.
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (build(4096, [1; 16], "h:0", 1, 2, 0, 1 << 20, len), "does not fit"),
            (build(4096, [1; 16], "h:0", 1, 2, 0, 0, 1 << 20), "overlaps"),
            (
                {
                    let mut sb = build(4096, [1; 16], "h:0", 1, 2, 0, 1 << 20, 1 << 20);
                    sb[72] = 5;
                    sb
                },
                "checksum",
            ),
            (
                {
                    let mut sb = build(4096, [1; 16], "h:0", 1, 2, 0, 1 << 20, 1 << 20);
                    sb[160] = 9;
                    fix(sb)
                },
                "device number",
            ),
            (
                {
                    let mut sb = build(4096, [1; 16], "h:0", 1, 2, 0, 1 << 20, 1 << 20);
                    sb[144] = 0;
                    fix(sb)
                },
                "names its place",
            ),
        ];
        for (sb, want) in cases {
            let e = read(&place(sb), 0, len).unwrap_err();
            assert!(format!("{e:#}").contains(want), "{e:#} lacks {want}");
        }
        assert!(read(&vec![0u8; len as usize], 0, len).unwrap().is_none());
    }
}
