//! Free blocks of ext2/3/4 from the block bitmaps (the ext4-view crate cannot give bitmaps, so
//! they are read directly): superblock → group descriptors → one bitmap per group. flex_bg is
//! handled by following each descriptor's bitmap pointer; BLOCK_UNINIT groups count their used
//! blocks (backup superblock and GDT) from the group start. A group whose bitmap disagrees
//! with its descriptor's free count is treated as fully used: never skip what might be data.
//!
//! Metadata that holds nothing is skipped too (not read, not sent, the target left as it is):
//! with checksummed group descriptors (`uninit_bg`/`metadata_csum`) on a filesystem without
//! recorded errors, the inode-table blocks past the last inode a group has ever used
//! (`bg_itable_unused`; all of them in `INODE_UNINIT` groups) — e2fsck does not read them and
//! the kernel zeroes a new inode in full before writing it (and lazily zeroes those tables when
//! `ITABLE_ZEROED` is not set); and the log blocks of a clean journal ([`super::jbd`]).

use anyhow::{bail, ensure, Context, Result};
pub use ferry_formats::fs::is_ext;
use ferry_formats::read::ReadAt;

const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const BG_BLOCK_UNINIT: u16 = 0x2;
const BG_INODE_UNINIT: u16 = 0x1;
const COMPAT_HAS_JOURNAL: u32 = 0x4;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const STATE_ERROR: u16 = 0x2;

pub(super) fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
pub(super) fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

pub struct Free {
    /// Free byte ranges relative to the filesystem start.
    pub ranges: Vec<(u64, u64)>,
    pub block_size: u64,
    pub fs_bytes: u64,
    pub notes: Vec<String>,
    /// Bytes of unused inode tables and of a clean journal's log left out (also in `ranges`).
    pub inode_table_bytes: u64,
    pub journal_bytes: u64,
}

/// Reads the free space of the ext filesystem that starts at byte `base` of `f`.
/// The largest group descriptor table read (16 TiB of 4 KiB blocks needs 8 MiB).
const MAX_GDT: u64 = 64 << 20;

pub fn free(f: &dyn ReadAt, base: u64, part_len: u64) -> Result<Free> {
    let mut sb = vec![0u8; 1024];
    f.read_exact_at(&mut sb, base + 1024)?;
    ensure!(is_ext(&sb), "no ext superblock");
    let log = u32_at(&sb, 24);
    ensure!(log <= 6, "implausible block size (s_log_block_size {log})");
    let bs = 1024u64 << log;
    let incompat = u32_at(&sb, 96);
    let ro = u32_at(&sb, 100);
    if incompat & INCOMPAT_META_BG != 0 {
        bail!("meta_bg layout is not supported for used-block analysis");
    }
    let is64 = incompat & INCOMPAT_64BIT != 0;
    let blocks = u32_at(&sb, 4) as u64 | if is64 { (u32_at(&sb, 0x150) as u64) << 32 } else { 0 };
    let first = u32_at(&sb, 20) as u64;
    let bpg = u32_at(&sb, 32) as u64;
    ensure!(bpg > 0 && bpg <= bs * 8, "implausible blocks per group {bpg}");
    let fs_bytes = blocks.checked_mul(bs).filter(|&b| b <= part_len);
    let fs_bytes = fs_bytes.with_context(|| {
        format!("filesystem ({blocks} blocks of {bs} bytes) is larger than its partition ({part_len})")
    })?;
    ensure!(first < blocks, "first data block {first} is not inside the filesystem ({blocks} blocks)");
    let desc_size = if is64 { (u16_at(&sb, 0xFE) as u64).max(32) } else { 32 };
    ensure!(
        desc_size.is_power_of_two() && desc_size <= 1024,
        "implausible group descriptor size {desc_size}"
    );
    let csum = ro & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM) != 0;
    let groups = (blocks - first).div_ceil(bpg);
    // Bounded by the partition before it sizes a buffer.
    let gdt_bytes = groups * desc_size;
    ensure!(
        gdt_bytes <= MAX_GDT && (first + 1) * bs + gdt_bytes <= part_len,
        "group descriptors ({groups} × {desc_size} bytes) do not fit the filesystem"
    );
    let mut gdt = vec![0u8; gdt_bytes as usize];
    f.read_exact_at(&mut gdt, base + (first + 1) * bs)?;
    let mut notes = Vec::new();
    let mut ranges = Vec::new();
    let mut bitmap = vec![0u8; bs as usize];
    let mut total_free = 0u64;
    let ipg = u32_at(&sb, 40) as u64;
    let isz = if u32_at(&sb, 76) == 0 { 128 } else { u16_at(&sb, 88) as u64 };
    ensure!(isz >= 128 && isz <= bs && isz.is_power_of_two(), "implausible inode size {isz}");
    // Inode tables are skipped only where the descriptors are checksummed and nothing is wrong.
    let itables = csum && u16_at(&sb, 58) & STATE_ERROR == 0 && ipg > 0;
    let itb = (ipg * isz).div_ceil(bs);
    let mut inode_table_bytes = 0u64;
    for g in 0..groups {
        let d = &gdt[(g * desc_size) as usize..((g + 1) * desc_size) as usize];
        let start = first + g * bpg;
        let n = bpg.min(blocks - start);
        let mut desc_free = u16_at(d, 12) as u64;
        let flags = u16_at(d, 18);
        let mut bmp = u32_at(d, 0) as u64;
        let (mut itable, mut unused) = (u32_at(d, 8) as u64, u16_at(d, 0x1C) as u64);
        if desc_size >= 64 {
            desc_free |= (u16_at(d, 0x2C) as u64) << 16;
            bmp |= (u32_at(d, 0x20) as u64) << 32;
            itable |= (u32_at(d, 0x28) as u64) << 32;
            unused |= (u16_at(d, 0x32) as u64) << 16;
        }
        // The unused tail of the group's inode table, as blocks; in an initialised group only
        // when the inode bitmap agrees that nothing past `ipg - unused` is in use.
        let end = itable.checked_add(itb).filter(|&e| e <= blocks);
        let idle = match (itables, flags & BG_INODE_UNINIT != 0, end) {
            (true, true, Some(e)) => Some((itable, e)),
            (true, false, Some(e)) if unused <= ipg => {
                let used = ipg - unused;
                let mut ibmp = u32_at(d, 4) as u64;
                if desc_size >= 64 {
                    ibmp |= (u32_at(d, 0x24) as u64) << 32;
                }
                let agrees = ibmp < blocks && ipg <= bs * 8 && {
                    f.read_exact_at(&mut bitmap, base + ibmp * bs)?;
                    (used..ipg).all(|i| bitmap[(i / 8) as usize] & (1 << (i % 8)) == 0)
                };
                if !agrees {
                    notes.push(format!(
                        "ext group {g}: inodes in use past bg_itable_unused; sending its inode table"
                    ));
                }
                agrees.then(|| (itable + (used * isz).div_ceil(bs), e))
            }
            _ => None,
        }
        .filter(|&(s, e)| s < e);
        let mut push = |s: u64, e: u64| {
            if s < e {
                ranges.push((s * bs, e * bs));
            }
        };
        if csum && flags & BG_BLOCK_UNINIT != 0 {
            let used = n.saturating_sub(desc_free);
            push(start + used, start + n);
            total_free += n - used;
            if let Some((s, e)) = idle {
                push(s, e);
                inode_table_bytes += (e - s) * bs;
            }
            continue;
        }
        ensure!(bmp < blocks, "group {g}: block bitmap at {bmp} is outside the filesystem");
        f.read_exact_at(&mut bitmap, base + bmp * bs)?;
        let is_free = |i: u64| bitmap[(i / 8) as usize] & (1 << (i % 8)) == 0;
        let count = (0..n).filter(|&i| is_free(i)).count() as u64;
        if count != desc_free {
            notes.push(format!(
                "ext group {g}: bitmap has {count} free blocks, descriptor says {desc_free}; sending the whole group"
            ));
            continue;
        }
        total_free += count;
        if let Some((s, e)) = idle {
            push(s, e);
            inode_table_bytes += (e - s) * bs;
        }
        let mut run: Option<u64> = None;
        for i in 0..n {
            match (is_free(i), run) {
                (true, None) => run = Some(i),
                (false, Some(s)) => {
                    push(start + s, start + i);
                    run = None;
                }
                _ => {}
            }
        }
        if let Some(s) = run {
            push(start + s, start + n);
        }
    }
    let sb_free = u32_at(&sb, 12) as u64 | if is64 { (u32_at(&sb, 0x158) as u64) << 32 } else { 0 };
    if sb_free != total_free {
        notes.push(format!(
            "ext: superblock counts {sb_free} free blocks, groups {total_free} (normal on a mounted filesystem)"
        ));
    }
    let journal_bytes = match clean_journal(f, base, &sb, (bs, blocks, isz), &gdt, desc_size) {
        Ok(Some(log)) => {
            let total = log.iter().map(|(s, e)| e - s).sum();
            ranges.extend(log);
            total
        }
        Ok(None) => 0,
        Err(e) => {
            notes.push(format!("ext journal: {e:#}; sending all of it"));
            0
        }
    };
    Ok(Free { ranges, block_size: bs, fs_bytes, notes, inode_table_bytes, journal_bytes })
}

/// The log blocks of the internal journal when the filesystem says it needs no recovery.
fn clean_journal(
    f: &dyn ReadAt,
    base: u64,
    sb: &[u8],
    (bs, blocks, isz): (u64, u64, u64),
    gdt: &[u8],
    desc_size: u64,
) -> Result<Option<Vec<(u64, u64)>>> {
    let (compat, incompat) = (u32_at(sb, 92), u32_at(sb, 96));
    let ino = u32_at(sb, 0xE0) as u64;
    let ipg = u32_at(sb, 40) as u64;
    if compat & COMPAT_HAS_JOURNAL == 0
        || incompat & (INCOMPAT_RECOVER | INCOMPAT_JOURNAL_DEV) != 0
        || ino == 0
    {
        return Ok(None);
    }
    ensure!(ipg > 0 && ino <= u32_at(sb, 0) as u64, "journal inode {ino} is not an inode of the filesystem");
    let (g, i) = ((ino - 1) / ipg, (ino - 1) % ipg);
    let d =
        gdt.get((g * desc_size) as usize..((g + 1) * desc_size) as usize).context("journal inode's group")?;
    let mut itable = u32_at(d, 8) as u64;
    if desc_size >= 64 {
        itable |= (u32_at(d, 0x28) as u64) << 32;
    }
    ensure!(itable < blocks, "inode table at block {itable} is outside the filesystem");
    super::jbd::log_blocks(f, base, bs, blocks, itable * bs + i * isz)
}
