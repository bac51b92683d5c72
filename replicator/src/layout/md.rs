//! Used blocks of an MD RAID member with a version-1 superblock at its start (1.1) or 4 KiB in
//! (1.2): a RAID1 member's data area holds the array's content whole, so the filesystem (or
//! LVM PV) in it is analysed like a partition's; the superblock, the write-intent bitmap and
//! everything outside the data area are sent. Other levels spread the content over members
//! and are sent whole with a note, as is an array in the middle of a reshape. Metadata 1.0
//! and 0.90 keep their superblock at the end and their data at the member's first byte: the
//! filesystem there is found directly and the superblock lies past it. The superblock itself is
//! read and checked by `ferry_formats::md`.

use super::{analyze_region, Analysed};
use anyhow::{bail, Context, Result};
use ferry_formats::md::{self, FEATURE_RESHAPE_ACTIVE};
use ferry_formats::read::ReadAt;

/// Free space of the MD member at `[start, start + len)`, as absolute ranges.
pub(super) fn free(
    f: &dyn ReadAt,
    start: u64,
    len: u64,
    depth: u8,
    notes: &mut Vec<String>,
) -> Result<Analysed> {
    let sb = md::read(f, start, len)?.context("no MD version-1 superblock at byte 0 or 4096")?;
    if sb.minor == 0 {
        bail!("metadata 1.0 keeps its data at the member's first byte");
    }
    if sb.level != 1 {
        bail!("RAID level {} spreads data over the members", sb.level);
    }
    if sb.features & FEATURE_RESHAPE_ACTIVE != 0 {
        bail!("a reshape is in progress");
    }
    let (data_start, data_end) = (sb.data_start, sb.data_start + sb.data_len);
    let inner = analyze_region(f, start + data_start, start + data_end, depth, notes);
    notes.push(format!(
        "MD RAID1 member at byte {start}: {} inside from byte {}",
        inner.fs,
        start + data_start
    ));
    Ok(Analysed { fs: format!("md/{}", inner.fs), ..inner })
}

#[cfg(test)]
pub(crate) mod tests {
    use ferry_formats::fs::MD_MAGIC;
    use ferry_formats::md::{checksum, SB_LEN};

    /// A RAID1 1.2 member of `len` bytes with data from 1 MiB: the superblock as mdadm writes it.
    pub(crate) fn member(len: u64, level: i32, data: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; len as usize];
        let sb = &mut b[4096..4096 + SB_LEN];
        sb[0..4].copy_from_slice(&MD_MAGIC.to_le_bytes());
        sb[4..8].copy_from_slice(&1u32.to_le_bytes());
        sb[16..32].copy_from_slice(&[0x42; 16]);
        sb[32..38].copy_from_slice(b"host:0");
        sb[72..76].copy_from_slice(&level.to_le_bytes());
        sb[92..96].copy_from_slice(&2u32.to_le_bytes());
        sb[128..136].copy_from_slice(&2048u64.to_le_bytes());
        sb[136..144].copy_from_slice(&((len - (1 << 20)) / 512).to_le_bytes());
        sb[144..152].copy_from_slice(&8u64.to_le_bytes());
        sb[220..224].copy_from_slice(&2u32.to_le_bytes());
        let c = checksum(sb).unwrap();
        sb[216..220].copy_from_slice(&c.to_le_bytes());
        b[1 << 20..(1 << 20) + data.len()].copy_from_slice(data);
        b
    }

    fn ext4(mib: u64) -> Vec<u8> {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("fs.img");
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("truncate -s {mib}M {0} && mkfs.ext4 -q -F {0}", p.display()))
            .status()
            .unwrap()
            .success();
        assert!(ok);
        std::fs::read(p).unwrap()
    }

    #[test]
    fn a_raid1_members_filesystem_is_read_through() {
        let fs = ext4(63);
        let m = member(64 << 20, 1, &fs);
        let l = super::super::analyze(&m).unwrap();
        assert_eq!(l.parts[0].fs, "md/ext", "{l:?}");
        let ext_free = super::super::ext::free(&fs, 0, fs.len() as u64).unwrap();
        let skipped: u64 = ext_free.ranges.iter().map(|(s, e)| e - s).sum();
        assert_eq!(l.extent_bytes, (64 << 20) - skipped);
        // The superblock and the area before the data are sent.
        assert_eq!(l.extents.ranges()[0].0, 0);
        assert!(l.extents.ranges()[0].1 >= 1 << 20);
    }

    #[test]
    fn other_levels_bad_checksums_and_odd_areas_are_sent_whole() {
        let fs = ext4(63);
        let whole = |m: &Vec<u8>, why: &str| {
            let l = super::super::analyze(m).unwrap();
            assert_eq!(l.extent_bytes, m.len() as u64, "{why}: {l:?}");
            assert!(l.notes.iter().any(|n| n.contains(why)), "{why}: {:?}", l.notes);
        };
        whole(&member(64 << 20, 5, &fs), "RAID level 5");
        let mut bad = member(64 << 20, 1, &fs);
        bad[4096 + 72] = 0; // level 0 without a new checksum
        whole(&bad, "checksum mismatch");
        let mut bad = member(64 << 20, 1, &fs);
        bad[4096 + 136..4096 + 144].copy_from_slice(&u64::MAX.to_le_bytes());
        let c = checksum(&bad[4096..4096 + SB_LEN]).unwrap();
        bad[4096 + 216..4096 + 220].copy_from_slice(&c.to_le_bytes());
        whole(&bad, "data area out of range");
        // A superblock that names another place as its own (left over from an earlier array).
        let mut bad = member(64 << 20, 1, &fs);
        bad[4096 + 144..4096 + 152].copy_from_slice(&0u64.to_le_bytes());
        let c = checksum(&bad[4096..4096 + SB_LEN]).unwrap();
        bad[4096 + 216..4096 + 220].copy_from_slice(&c.to_le_bytes());
        whole(&bad, "names its place as sector 0");
    }
}
