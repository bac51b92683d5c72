//! Used blocks of a btrfs device: only its allocated chunks. The superblock's system chunk
//! array maps the chunk tree; every chunk item in that tree names the stripes that hold it, and
//! the stripes on this device (by its devid) are what a bootable copy needs — with the first
//! MiB (boot area and superblock) and the superblock mirrors at 64 MiB and 256 GiB. Space no
//! chunk covers holds nothing btrfs will read. Free space inside chunks is sent (reading the
//! extent tree would save more; chunks are what btrfs itself balances). Every read is bounded:
//! node sizes, item offsets, tree depth and the number of nodes visited; a node reached twice
//! ends the walk.

use super::ext::Free;
use super::RangeSet;
use anyhow::{bail, ensure, Context, Result};
use ferry_formats::read::ReadAt;
use std::collections::BTreeSet;

const SB_OFF: u64 = 0x10000;
const MIRRORS: [u64; 2] = [64 << 20, 256 << 30];
const SB_LEN: usize = 4096;
const HEADER: usize = 101;
const CHUNK_ITEM: u8 = 228;
const MAX_NODES: usize = 1 << 16;
const MAX_LEVEL: u8 = 7;
/// Most stripes kept in memory from the chunk tree (a real filesystem has a few thousand).
const MAX_STRIPES: usize = 1 << 20;

const RAID0: u64 = 1 << 3;
const RAID1: u64 = 1 << 4;
const DUP: u64 = 1 << 5;
const RAID10: u64 = 1 << 6;
const RAID5: u64 = 1 << 7;
const RAID6: u64 = 1 << 8;
const RAID1C3: u64 = 1 << 9;
const RAID1C4: u64 = 1 << 10;

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// A chunk: logical start and length, profile flags, and its stripes `(devid, physical offset)`.
#[derive(Debug)]
struct Chunk {
    logical: u64,
    length: u64,
    kind: u64,
    sub_stripes: u64,
    stripes: Vec<(u64, u64)>,
}

impl Chunk {
    /// Parses a `btrfs_chunk` at the start of `b`; returns it and its size in bytes.
    fn parse(logical: u64, b: &[u8]) -> Result<(Chunk, usize)> {
        ensure!(b.len() >= 48, "chunk item cut short");
        let n = u16_at(b, 44) as usize;
        let size = 48 + 32 * n;
        ensure!(
            n > 0 && b.len() >= size,
            "chunk at logical {logical} with {n} stripes does not fit its item"
        );
        let stripes = (0..n).map(|i| (u64_at(b, 48 + 32 * i), u64_at(b, 56 + 32 * i))).collect();
        let c = Chunk {
            logical,
            length: u64_at(b, 0),
            kind: u64_at(b, 24),
            sub_stripes: u16_at(b, 46) as u64,
            stripes,
        };
        Ok((c, size))
    }

    /// Bytes of each stripe on its device.
    fn stripe_len(&self) -> Result<u64> {
        let n = self.stripes.len() as u64;
        let k = self.kind;
        let div = |d: u64| {
            ensure!(d > 0, "chunk at logical {} has too few stripes ({n}) for its profile", self.logical);
            Ok(self.length.div_ceil(d))
        };
        if k & (RAID1 | DUP | RAID1C3 | RAID1C4) != 0 || k & (RAID0 | RAID10 | RAID5 | RAID6) == 0 {
            Ok(self.length)
        } else if k & RAID0 != 0 {
            div(n)
        } else if k & RAID10 != 0 {
            div(n / self.sub_stripes.max(1))
        } else if k & RAID5 != 0 {
            div(n.saturating_sub(1))
        } else {
            div(n.saturating_sub(2))
        }
    }

    /// Where logical `l` lies on device `devid` (mirrored or single profiles only).
    fn physical(&self, l: u64, devid: u64) -> Option<u64> {
        let mirrored = self.kind & (RAID0 | RAID10 | RAID5 | RAID6) == 0;
        let inside = l >= self.logical && l - self.logical < self.length;
        let (_, off) = self.stripes.iter().find(|s| s.0 == devid).filter(|_| mirrored && inside)?;
        off.checked_add(l - self.logical)
    }
}

struct Dev<'a> {
    f: &'a dyn ReadAt,
    base: u64,
    len: u64,
    devid: u64,
    nodesize: usize,
}

impl Dev<'_> {
    fn node(&self, chunks: &[Chunk], logical: u64) -> Result<Vec<u8>> {
        let phys = chunks
            .iter()
            .find_map(|c| c.physical(logical, self.devid))
            .with_context(|| format!("tree node at logical {logical} is not on this device"))?;
        ensure!(
            phys.checked_add(self.nodesize as u64).is_some_and(|e| e <= self.len),
            "tree node at logical {logical} (byte {phys}) is past the device's end"
        );
        let mut b = vec![0u8; self.nodesize];
        self.f.read_exact_at(&mut b, self.base + phys)?;
        ensure!(
            u64_at(&b, 0x30) == logical,
            "tree node at logical {logical} names itself {}",
            u64_at(&b, 0x30)
        );
        Ok(b)
    }
}

/// Every chunk item of the chunk tree rooted at `root`.
fn chunk_tree(dev: &Dev, sys: &[Chunk], root: u64, root_level: u8) -> Result<Vec<Chunk>> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stripes = 0usize;
    let mut stack = vec![(root, root_level)];
    while let Some((logical, want)) = stack.pop() {
        ensure!(seen.insert(logical), "the chunk tree reaches node {logical} twice");
        ensure!(seen.len() <= MAX_NODES, "the chunk tree has more than {MAX_NODES} nodes");
        let b = dev.node(sys, logical)?;
        let (n, level) = (u32_at(&b, 0x60) as usize, b[0x64]);
        ensure!(level == want && level <= MAX_LEVEL, "node {logical} is at level {level}, expected {want}");
        if level > 0 {
            ensure!(HEADER + 33 * n <= b.len(), "node {logical} claims {n} pointers");
            for i in 0..n {
                let p = HEADER + 33 * i;
                stack.push((u64_at(&b, p + 17), level - 1));
            }
            continue;
        }
        ensure!(HEADER + 25 * n <= b.len(), "leaf {logical} claims {n} items");
        for i in 0..n {
            let it = HEADER + 25 * i;
            if b[it + 8] != CHUNK_ITEM {
                continue;
            }
            let (off, size) = (u32_at(&b, it + 17) as usize, u32_at(&b, it + 21) as usize);
            let data = off.checked_add(HEADER).and_then(|s| b.get(s..s.checked_add(size)?));
            let data = data.with_context(|| format!("leaf {logical}: item {i} lies outside the node"))?;
            let c = Chunk::parse(u64_at(&b, it + 9), data)?.0;
            stripes += c.stripes.len();
            ensure!(stripes <= MAX_STRIPES, "the chunk tree names more than {MAX_STRIPES} stripes");
            out.push(c);
        }
    }
    Ok(out)
}

/// Free space of the btrfs device at byte `base` of `f`, `part_len` bytes long.
pub fn free(f: &dyn ReadAt, base: u64, part_len: u64) -> Result<Free> {
    let mut sb = vec![0u8; SB_LEN];
    f.read_exact_at(&mut sb, base + SB_OFF).context("reading the superblock")?;
    ensure!(&sb[0x40..0x48] == b"_BHRfS_M", "no btrfs superblock");
    let nodesize = u32_at(&sb, 0x94) as usize;
    ensure!(
        nodesize.is_power_of_two() && (4096..=65536).contains(&nodesize),
        "implausible node size {nodesize}"
    );
    let (devid, dev_bytes) = (u64_at(&sb, 0xc9), u64_at(&sb, 0xd1));
    // devid 0 is the target of a device replace in progress: no chunk names it yet, but a
    // resumed replace trusts what it has already copied there.
    ensure!(devid != 0, "the device is the target of a btrfs device replace (devid 0)");
    ensure!(
        dev_bytes <= part_len && dev_bytes > SB_OFF,
        "the device claims {dev_bytes} bytes, its partition has {part_len}"
    );
    let sys_len = u32_at(&sb, 0xa0) as usize;
    ensure!(sys_len <= 2048, "system chunk array of {sys_len} bytes");
    let array = &sb[0x32b..0x32b + sys_len];
    let mut sys = Vec::new();
    let mut p = 0;
    while p < array.len() {
        ensure!(p + 17 <= array.len(), "system chunk array cut short");
        if array[p + 8] != CHUNK_ITEM {
            bail!("system chunk array holds key type {}", array[p + 8]);
        }
        let (c, size) = Chunk::parse(u64_at(array, p + 9), &array[p + 17..])?;
        sys.push(c);
        p += 17 + size;
    }
    let dev = Dev { f, base, len: dev_bytes, devid, nodesize };
    let chunks = chunk_tree(&dev, &sys, u64_at(&sb, 0x58), sb[0xc7]).context("reading the chunk tree")?;
    let mut keep = vec![(0, 1 << 20)];
    keep.extend(MIRRORS.iter().map(|&m| (m, m + SB_LEN as u64)));
    for c in chunks.iter().chain(&sys) {
        let len = c.stripe_len()?;
        for &(_, off) in c.stripes.iter().filter(|s| s.0 == devid) {
            let end = off.checked_add(len).filter(|&e| e <= dev_bytes);
            let end = end.with_context(|| format!("chunk at logical {} ends past the device", c.logical))?;
            keep.push((off, end));
        }
    }
    let ranges =
        RangeSet::from_vec(vec![(0, dev_bytes)]).subtract(&RangeSet::from_vec(keep)).ranges().to_vec();
    Ok(Free {
        ranges,
        block_size: 4096,
        fs_bytes: dev_bytes,
        notes: Vec::new(),
        inode_table_bytes: 0,
        journal_bytes: 0,
    })
}
