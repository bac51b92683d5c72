//! The ext3/4 journal's log blocks on a clean filesystem. Without `needs_recovery` and with the
//! journal superblock saying the log is empty (`s_start` 0), nothing reads the log before
//! writing it: the kernel (jbd2) resets it at mount and e2fsck only checks the journal
//! superblock and the journal inode's block map. So only the journal superblock (logical block
//! 0) and the extent tree's own blocks are needed; the log blocks are not read and not sent.
//! A dirty, mounted or unusual journal (external, block-mapped, a tree deeper than ext4 makes)
//! is sent whole.

use anyhow::{ensure, Result};
use ferry_formats::read::ReadAt;

const EXTENTS_FL: u32 = 0x80000;
const EXTENT_MAGIC: u16 = 0xF30A;
const JBD2_MAGIC: u32 = 0xC03B3998;
/// ext4 trees are at most 5 deep; more nodes than this is not a journal.
const MAX_DEPTH: u16 = 5;
const MAX_NODES: usize = 4096;
/// More extents than this is not a journal ext4 made.
const MAX_EXTENTS: usize = 1 << 16;

use super::ext::{u16_at, u32_at};

/// Reads an extent tree, bounded by the filesystem and by depth and node count.
struct Tree<'a> {
    f: &'a dyn ReadAt,
    base: u64,
    bs: u64,
    blocks: u64,
    nodes: usize,
}

impl Tree<'_> {
    /// Physical extents (logical block, physical block, length) under a node.
    fn walk(&mut self, node: &[u8], depth_left: u16, out: &mut Vec<(u64, u64, u64)>) -> Result<()> {
        ensure!(node.len() >= 12 && u16_at(node, 0) == EXTENT_MAGIC, "journal inode: no extent header");
        let entries = u16_at(node, 2) as usize;
        let depth = u16_at(node, 6);
        ensure!(depth <= depth_left, "journal inode: extent tree deeper than {MAX_DEPTH}");
        ensure!(12 + entries * 12 <= node.len(), "journal inode: {entries} extents do not fit their node");
        for i in 0..entries {
            let e = &node[12 + i * 12..24 + i * 12];
            if depth == 0 {
                let len = u16_at(e, 4) as u64;
                let len = if len > 32768 { len - 32768 } else { len };
                let start = (u16_at(e, 6) as u64) << 32 | u32_at(e, 8) as u64;
                ensure!(
                    start.saturating_add(len) <= self.blocks,
                    "journal extent at block {start} is outside the filesystem"
                );
                ensure!(out.len() < MAX_EXTENTS, "journal inode: more than {MAX_EXTENTS} extents");
                out.push((u32_at(e, 0) as u64, start, len));
            } else {
                self.nodes += 1;
                ensure!(self.nodes <= MAX_NODES, "journal inode: more than {MAX_NODES} extent nodes");
                let leaf = (u16_at(e, 8) as u64) << 32 | u32_at(e, 4) as u64;
                ensure!(leaf < self.blocks, "journal extent node at block {leaf} is outside the filesystem");
                let mut child = vec![0u8; self.bs as usize];
                self.f.read_exact_at(&mut child, self.base + leaf * self.bs)?;
                self.walk(&child, depth - 1, out)?;
            }
        }
        Ok(())
    }
}

/// Byte ranges (relative to the filesystem) of the log blocks of a clean journal whose inode
/// is at byte `inode_at`; `None` when the journal must be sent whole, with the reason.
pub fn log_blocks(
    f: &dyn ReadAt,
    base: u64,
    bs: u64,
    blocks: u64,
    inode_at: u64,
) -> Result<Option<Vec<(u64, u64)>>> {
    let mut inode = vec![0u8; 128];
    f.read_exact_at(&mut inode, base + inode_at)?;
    if u32_at(&inode, 0x20) & EXTENTS_FL == 0 {
        return Ok(None); // block-mapped (ext3) journal: sent whole
    }
    let mut extents = Vec::new();
    Tree { f, base, bs, blocks, nodes: 0 }.walk(&inode[0x28..0x28 + 60], MAX_DEPTH, &mut extents)?;
    extents.sort();
    let Some(&(0, sb_block, _)) = extents.first() else { return Ok(None) };
    let mut jsb = vec![0u8; 1024];
    f.read_exact_at(&mut jsb, base + sb_block * bs)?;
    let be = |o: usize| u32::from_be_bytes(jsb[o..o + 4].try_into().unwrap());
    if be(0) != JBD2_MAGIC || be(0x1C) != 0 {
        return Ok(None); // not a journal superblock, or a log that holds transactions
    }
    let mut out = Vec::new();
    for (logical, start, len) in extents {
        let (start, len) = if logical == 0 { (start + 1, len.saturating_sub(1)) } else { (start, len) };
        if len > 0 {
            out.push((start * bs, (start + len) * bs));
        }
    }
    Ok(Some(out))
}
