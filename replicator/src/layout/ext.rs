//! Free blocks of ext2/3/4 from the block bitmaps (the ext4-view crate cannot give bitmaps, so
//! they are read directly): superblock → group descriptors → one bitmap per group. flex_bg is
//! handled by following each descriptor's bitmap pointer; BLOCK_UNINIT groups count their used
//! blocks (backup superblock and GDT) from the group start. A group whose bitmap disagrees
//! with its descriptor's free count is treated as fully used: never skip what might be data.

use anyhow::{bail, ensure, Context, Result};
pub use ferry_formats::fs::is_ext;
use ferry_formats::read::ReadAt;

const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const BG_BLOCK_UNINIT: u16 = 0x2;

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

pub struct Free {
    /// Free byte ranges relative to the filesystem start.
    pub ranges: Vec<(u64, u64)>,
    pub block_size: u64,
    pub fs_bytes: u64,
    pub notes: Vec<String>,
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
    for g in 0..groups {
        let d = &gdt[(g * desc_size) as usize..((g + 1) * desc_size) as usize];
        let start = first + g * bpg;
        let n = bpg.min(blocks - start);
        let mut desc_free = u16_at(d, 12) as u64;
        let flags = u16_at(d, 18);
        let mut bmp = u32_at(d, 0) as u64;
        if desc_size >= 64 {
            desc_free |= (u16_at(d, 0x2C) as u64) << 16;
            bmp |= (u32_at(d, 0x20) as u64) << 32;
        }
        let mut push = |s: u64, e: u64| {
            if s < e {
                ranges.push((s * bs, e * bs));
            }
        };
        if csum && flags & BG_BLOCK_UNINIT != 0 {
            let used = n.saturating_sub(desc_free);
            push(start + used, start + n);
            total_free += n - used;
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
    Ok(Free { ranges, block_size: bs, fs_bytes, notes })
}
