//! Hostile filesystems: real images from mkfs, then corrupted the way a bad or malicious disk
//! could be. Every probe must answer with an error (or a conservative layout), never a panic,
//! an endless loop or a buffer sized by the disk.

use super::read::ReadAt;
use super::*;

fn image(mkfs: &str, mib: u64) -> Vec<u8> {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("fs.img");
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("truncate -s {mib}M {0} && {mkfs} {0} >/dev/null 2>&1", p.display()))
        .status()
        .unwrap()
        .success();
    assert!(ok, "{mkfs} failed");
    std::fs::read(p).unwrap()
}

fn put32le(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn ext_with_impossible_counts() {
    let img = image("mkfs.ext4 -q -F -O 64bit", 64);
    let len = img.len() as u64;
    assert!(ext::free(&img, 0, len).is_ok());
    // Block count so large that blocks × block size overflows u64.
    let mut bad = img.clone();
    put32le(&mut bad, 1024 + 4, u32::MAX);
    put32le(&mut bad, 1024 + 0x150, u32::MAX);
    assert!(ext::free(&bad, 0, len).is_err());
    // First data block past the end.
    let mut bad = img.clone();
    put32le(&mut bad, 1024 + 20, u32::MAX);
    assert!(ext::free(&bad, 0, len).is_err());
    // A descriptor size that is not a power of two.
    let mut bad = img.clone();
    bad[1024 + 0xFE..1024 + 0x100].copy_from_slice(&65535u16.to_le_bytes());
    assert!(ext::free(&bad, 0, len).is_err());
    // The whole-disk analysis stays conservative (sends everything) rather than failing.
    let l = analyze(&bad).unwrap();
    assert_eq!(l.extent_bytes, len);
}

#[test]
fn xfs_with_a_looping_btree() {
    let img = image("mkfs.xfs -q -f", 300);
    let len = img.len() as u64;
    assert!(xfs::free(&img, 0, len).is_ok());
    let be32 = |b: &[u8], o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap());
    let bs = be32(&img, 4) as usize;
    let sect = u16::from_be_bytes(img[102..104].try_into().unwrap()) as usize;
    // AG 0's bnobt root becomes an interior node pointing at itself.
    let root = be32(&img, sect + 16) as usize;
    let mut bad = img.clone();
    bad[sect + 28..sect + 32].copy_from_slice(&2u32.to_be_bytes());
    let node = root * bs;
    bad[node + 4..node + 6].copy_from_slice(&1u16.to_be_bytes());
    let hdr = if &bad[node..node + 4] == b"AB3B" { 56 } else { 16 };
    let ptr = node + hdr + (bs - hdr) / 12 * 8;
    bad[ptr..ptr + 4].copy_from_slice(&(root as u32).to_be_bytes());
    assert!(xfs::free(&bad, 0, len).is_err());
    // Allocation groups that do not add up.
    let mut bad = img.clone();
    bad[88..92].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(xfs::free(&bad, 0, len).is_err());
    assert!(ReadAt::size(&img).unwrap() == len);
}

/// Partition tables that point past the end of the disk (found by the layout fuzzer): a note,
/// the whole disk sent, no panic.
#[test]
fn partitions_beyond_the_disk() {
    let mut disk = vec![0u8; 64 * 1024];
    disk[510] = 0x55;
    disk[511] = 0xaa;
    // Entry 1: Linux, starting at sector 1000 of a 128-sector disk.
    let e = &mut disk[446..462];
    e[4] = 0x83;
    e[8..12].copy_from_slice(&1000u32.to_le_bytes());
    e[12..16].copy_from_slice(&10u32.to_le_bytes());
    let l = analyze(&disk).unwrap();
    assert!(l.extent_bytes <= l.size);
    assert!(l.notes.iter().any(|n| n.contains("outside the disk")), "{:?}", l.notes);
    // The fuzzer's find, kept as a regression input.
    let crash = include_bytes!("testdata/fuzz-partition-past-end.bin");
    let _ = analyze(&crash.to_vec());
    // mbrman panics on this EBR chain (logical partitions at LBA 0): caught, no table.
    let crash = include_bytes!("testdata/fuzz-mbrman-ebr-panic.bin");
    let l = analyze(&crash.to_vec()).unwrap();
    assert!(l.extent_bytes <= l.size);
}

#[test]
fn ext_metadata_is_skipped_only_when_nothing_needs_it() {
    let img = image("mkfs.ext4 -q -F", 128);
    let len = img.len() as u64;
    let clean = ext::free(&img, 0, len).unwrap();
    assert!(clean.inode_table_bytes > 0 && clean.journal_bytes > 0);
    // A journal that needs recovery is sent whole.
    let mut dirty = img.clone();
    dirty[1024 + 96] |= 0x4;
    let d = ext::free(&dirty, 0, len).unwrap();
    assert_eq!((d.journal_bytes, d.inode_table_bytes), (0, clean.inode_table_bytes));
    // Recorded errors: the inode tables are sent whole (e2fsck may scan every inode).
    let mut err = img.clone();
    err[1024 + 58] |= 0x2;
    assert_eq!(ext::free(&err, 0, len).unwrap().inode_table_bytes, 0);
    // Without checksummed descriptors itable_unused means nothing.
    let old = image("mkfs.ext4 -q -F -O ^metadata_csum,^uninit_bg", 128);
    assert_eq!(ext::free(&old, 0, old.len() as u64).unwrap().inode_table_bytes, 0);
    // An inode in use past bg_itable_unused (the bitmap disagrees): that group's table is sent.
    let mut busy = img.clone();
    let sb = &img[1024..2048];
    let le32 = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let bs = 1024 << le32(sb, 24);
    let ipg = le32(sb, 40);
    let d = (le32(sb, 20) + 1) * bs; // group 0's descriptor
    let ibmp = le32(&img, d + 4) * bs;
    busy[ibmp + (ipg - 1) / 8] |= 1 << ((ipg - 1) % 8);
    let b = ext::free(&busy, 0, len).unwrap();
    assert!(
        b.inode_table_bytes < clean.inode_table_bytes,
        "{} vs {}",
        b.inode_table_bytes,
        clean.inode_table_bytes
    );
    assert!(b.notes.iter().any(|n| n.contains("group 0: inodes in use past")), "{:?}", b.notes);
    // The layout counts them apart from free space.
    let l = analyze(&img).unwrap();
    assert_eq!(l.parts[0].inode_table_bytes, clean.inode_table_bytes);
    assert_eq!(l.parts[0].journal_bytes, clean.journal_bytes);
}
