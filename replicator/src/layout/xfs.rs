//! Free blocks of XFS from each allocation group's free-space-by-block B-tree (bnobt), as
//! partclone does: AGF → root → leftmost leaf → right siblings. An AG whose records do not add
//! up to the AGF's free count is treated as fully used.

use anyhow::{bail, ensure, Context, Result};
pub use ferry_formats::fs::is_xfs;
use ferry_formats::read::ReadAt;

const NULL_AGBLOCK: u32 = 0xffff_ffff;

fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}
fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(b[o..o + 4].try_into().unwrap())
}
fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().unwrap())
}

pub use super::ext::Free;

pub fn free(f: &dyn ReadAt, base: u64, part_len: u64) -> Result<Free> {
    let mut sb = vec![0u8; 512];
    f.read_exact_at(&mut sb, base)?;
    ensure!(is_xfs(&sb), "no XFS superblock");
    let bs = be32(&sb, 4) as u64;
    let dblocks = be64(&sb, 8);
    let agblocks = be32(&sb, 84) as u64;
    let agcount = be32(&sb, 88) as u64;
    let sect = be16(&sb, 102) as u64;
    ensure!(bs.is_power_of_two() && (512..=65536).contains(&bs), "implausible XFS block size {bs}");
    ensure!(sect.is_power_of_two() && sect >= 512, "implausible XFS sector size {sect}");
    ensure!(agblocks > 0 && agcount > 0, "XFS superblock has no allocation groups");
    let fs_bytes = dblocks.checked_mul(bs).filter(|&b| b <= part_len).with_context(|| {
        format!("XFS ({dblocks} blocks of {bs} bytes) is larger than its partition ({part_len})")
    })?;
    ensure!(
        agcount.checked_mul(agblocks).is_some_and(|b| b >= dblocks && b - dblocks < agblocks),
        "XFS: {agcount} allocation groups of {agblocks} blocks do not make {dblocks} blocks"
    );
    let mut ranges = Vec::new();
    let mut notes = Vec::new();
    let mut block = vec![0u8; bs as usize];
    for ag in 0..agcount {
        let ag_start = ag * agblocks;
        let ag_len = agblocks.min(dblocks.saturating_sub(ag_start));
        let mut agf = vec![0u8; sect as usize];
        f.read_exact_at(&mut agf, base + ag_start * bs + sect)?;
        ensure!(&agf[..4] == b"XAGF", "AG {ag}: no AGF magic");
        let root = be32(&agf, 16);
        let levels = be32(&agf, 28);
        let agf_free = be32(&agf, 52) as u64;
        ensure!((1..=10).contains(&levels), "AG {ag}: implausible bnobt height {levels}");
        let read = |agbno: u32, buf: &mut Vec<u8>| -> Result<usize> {
            ensure!((agbno as u64) < ag_len, "AG {ag}: bnobt block {agbno} outside the AG");
            f.read_exact_at(buf, base + (ag_start + agbno as u64) * bs)?;
            Ok(match &buf[..4] {
                b"AB3B" => 56,
                b"ABTB" => 16,
                m => bail!("AG {ag}: block {agbno} is not a bnobt block (magic {m:02x?})"),
            })
        };
        // Down the left edge to the first leaf: at most `levels` steps.
        let mut cur = root;
        let mut depth = 0;
        loop {
            let hdr = read(cur, &mut block)?;
            if be16(&block, 4) == 0 {
                break;
            }
            depth += 1;
            ensure!(depth < levels, "AG {ag}: bnobt deeper than its height {levels}");
            let maxrecs = (bs as usize - hdr) / 12;
            cur = be32(&block, hdr + maxrecs * 8);
        }
        let mut found = Vec::new();
        let mut sum = 0u64;
        let mut hops = 0u64;
        while cur != NULL_AGBLOCK {
            hops += 1;
            ensure!(hops <= ag_len, "AG {ag}: bnobt sibling chain loops");
            let hdr = read(cur, &mut block)?;
            let n = be16(&block, 6) as usize;
            ensure!(hdr + n * 8 <= bs as usize, "AG {ag}: leaf {cur} claims {n} records");
            for i in 0..n {
                let s = be32(&block, hdr + i * 8) as u64;
                let c = be32(&block, hdr + i * 8 + 4) as u64;
                ensure!(s + c <= ag_len, "AG {ag}: free extent {s}+{c} outside the AG");
                found.push(((ag_start + s) * bs, (ag_start + s + c) * bs));
                sum += c;
            }
            cur = be32(&block, 12);
        }
        if sum != agf_free {
            notes.push(format!(
                "XFS AG {ag}: bnobt has {sum} free blocks, AGF says {agf_free}; sending the whole AG"
            ));
            continue;
        }
        ranges.extend(found);
    }
    Ok(Free { ranges, block_size: bs, fs_bytes, notes, inode_table_bytes: 0, journal_bytes: 0 })
}
