//! What to send of a source disk: the partition table (GPT or MBR with logical partitions) and,
//! per partition, the free space its filesystem proves unused (ext2/3/4 bitmaps, XFS bnobt,
//! btrfs space no chunk holds, swap: all but the header page), read through LVM physical
//! volumes and MD RAID1 members to the filesystems inside (`lvm`, `md`). Everything else is sent — partition headers, the MBR gap,
//! BIOS boot partitions, EBRs, GPT backup area, unknown filesystems — and the sender turns
//! all-zero blocks into ranges, never data.

pub mod btrfs;
pub mod ext;
pub mod jbd;
mod lvm;
pub(crate) mod md;
pub mod ranges;
pub mod xfs;

pub use ferry_formats::read;
pub use ranges::RangeSet;

use anyhow::{Context, Result};
use ferry_formats::fs::{self, FsType};
use ferry_formats::table;
use read::ReadAt;
use serde::Serialize;
use std::fs::File;

#[derive(Debug, Clone, Serialize)]
pub struct Part {
    pub number: u32,
    pub start: u64,
    pub end: u64,
    pub fs: String,
    /// Left out because the filesystem does not use it (free blocks, swap pages).
    pub free_bytes: u64,
    /// ext: left out unused inode-table blocks and a clean journal's log (counted apart).
    pub inode_table_bytes: u64,
    pub journal_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    pub size: u64,
    pub table: String,
    pub parts: Vec<Part>,
    #[serde(skip)]
    pub extents: RangeSet,
    pub extent_bytes: u64,
    pub last_used: u64,
    pub notes: Vec<String>,
}

/// Size of a file or block device opened for reading.
pub fn size_of(f: &File) -> Result<u64> {
    Ok(ReadAt::size(f)?)
}

fn read_at(f: &dyn ReadAt, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    let _ = f.read_exact_at(&mut b, off);
    b
}

/// What a partition's filesystem leaves out: its type, the absolute ranges not needed, and of
/// them the unused inode-table and journal-log bytes (ext).
struct Analysed {
    fs: String,
    ranges: Vec<(u64, u64)>,
    inode_table_bytes: u64,
    journal_bytes: u64,
}

impl Analysed {
    fn just(fs: &str, ranges: Vec<(u64, u64)>) -> Analysed {
        Analysed { fs: fs.into(), ranges, inode_table_bytes: 0, journal_bytes: 0 }
    }
}

/// How deep containers are opened: an LVM PV inside an MD RAID1 member, a filesystem in either.
const CONTAINER_DEPTH: u8 = 2;

/// Filesystem free space of the region `[start, end)`, as absolute ranges. An LVM PV or MD
/// member is opened and the filesystems inside analysed while `depth` allows (MD then LVM).
fn analyze_region(f: &dyn ReadAt, start: u64, end: u64, depth: u8, notes: &mut Vec<String>) -> Analysed {
    // A partition table may claim anything: a partition past the end of the disk, or ending
    // before it starts, has nothing to analyse (and everything of the disk is sent).
    let Some(len) = end.checked_sub(start).filter(|&l| l > 0) else {
        notes.push(format!(
            "partition at byte {start} ends at {end}, outside the disk or empty; nothing analysed"
        ));
        return Analysed::just("outside", Vec::new());
    };
    // ext and XFS answer relative to the region; containers answer in absolute ranges.
    let fs_free = |kind: &str, r: Result<ext::Free>, notes: &mut Vec<String>| {
        r.map(|free| {
            notes.extend(free.notes);
            Analysed {
                fs: kind.into(),
                ranges: free.ranges.into_iter().map(|(s, e)| (s + start, e + start)).collect(),
                inode_table_bytes: free.inode_table_bytes,
                journal_bytes: free.journal_bytes,
            }
        })
    };
    let (kind, res) = match fs::probe(f, start, len).map(|p| p.fstype) {
        Some(t) if t.is_ext() => ("ext", fs_free("ext", ext::free(f, start, len), notes)),
        Some(FsType::Xfs) => ("xfs", fs_free("xfs", xfs::free(f, start, len), notes)),
        Some(FsType::Btrfs) => ("btrfs", fs_free("btrfs", btrfs::free(f, start, len), notes)),
        Some(FsType::Swap) => return Analysed::just("swap", vec![(start + 4096, end)]),
        Some(FsType::LvmPv) if depth > 0 => ("lvm", lvm::free(f, start, len, notes)),
        Some(FsType::MdMember) if depth > 1 => ("md", md::free(f, start, len, depth - 1, notes)),
        Some(FsType::Luks) => {
            notes.push(format!("LUKS at byte {start}: sent whole (the key is not on the source)"));
            return Analysed::just("luks", Vec::new());
        }
        _ => return Analysed::just("unknown", Vec::new()),
    };
    res.unwrap_or_else(|e| {
        notes.push(format!("{kind} at byte {start}: {e:#}; sending all of it"));
        Analysed::just(kind, Vec::new())
    })
}

/// The partitions of a disk or image (number, start byte, end byte), GPT or MBR with logical
/// partitions; extended containers are left out.
pub fn partitions(f: &dyn ReadAt) -> Vec<(u32, u64, u64)> {
    table::partitions(f)
}

/// Analyses a source disk (or image) opened read-only.
pub fn analyze(f: &dyn ReadAt) -> Result<Layout> {
    let size = f.size().context("reading the source size")?;
    let mut notes = Vec::new();
    let mut parts = Vec::new();
    let mut free = Vec::new();
    // One partition (or the whole disk): its filesystem's free space joins `free`.
    let mut add = |number: u32, start: u64, end: u64, notes: &mut Vec<String>| {
        let a = analyze_region(f, start, end.min(size), CONTAINER_DEPTH, notes);
        let skipped = RangeSet::from_vec(a.ranges.clone()).total();
        parts.push(Part {
            number,
            start,
            end,
            fs: a.fs,
            free_bytes: skipped.saturating_sub(a.inode_table_bytes + a.journal_bytes),
            inode_table_bytes: a.inode_table_bytes,
            journal_bytes: a.journal_bytes,
        });
        free.extend(a.ranges);
    };
    let head = read_at(f, 0, 8192.min(size as usize));
    let whole_fs = fs::is_xfs(&head) || head.get(1024..2048).is_some_and(fs::is_ext);
    let mut containers = Vec::new();
    let (table, last_used) = if let Some(gpt) = table::gpt(f) {
        for e in gpt {
            add(e.number, e.start, e.end, &mut notes);
        }
        // The backup GPT lives at the very end: everything up to the end is needed.
        ("gpt".to_string(), size)
    } else if let Some(mbr) = table::mbr(f).filter(|_| !whole_fs && head.get(510..512) == Some(&[0x55, 0xaa]))
    {
        let mut last = 512;
        for table::Entry { number: n, start: s, end: e, extended } in mbr {
            last = last.max(e.min(size));
            if extended {
                // The container holds EBRs and logical partitions (listed on their own).
                containers.push(Part {
                    number: n,
                    start: s,
                    end: e,
                    fs: "extended".into(),
                    free_bytes: 0,
                    inode_table_bytes: 0,
                    journal_bytes: 0,
                });
            } else {
                add(n, s, e, &mut notes);
            }
        }
        ("mbr".to_string(), last)
    } else {
        add(0, 0, size, &mut notes);
        ("none".to_string(), size)
    };
    parts.extend(containers);
    parts.sort_by_key(|p| p.number);
    let extents = RangeSet::from_vec(vec![(0, last_used)]).subtract(&RangeSet::from_vec(free));
    Ok(Layout { size, table, parts, extent_bytes: extents.total(), extents, last_used, notes })
}

#[cfg(test)]
mod tests;
