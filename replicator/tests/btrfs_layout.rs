//! A btrfs device is read by its chunks: space no chunk holds is neither read nor sent. The
//! copy, on a target full of random bytes, passes `btrfs check` and mounts with the source's
//! subvolumes and files.

mod common;
use common::*;
use ferry_replicator::layout;

/// Subvolumes and files (with their contents' hashes) of the btrfs image `img`.
fn contents(img: &std::path::Path, at: &std::path::Path) -> (String, Vec<(String, [u8; 32])>) {
    let size = std::fs::metadata(img).unwrap().len();
    let l = Loop::new(img, 0, size);
    let m = Mnt::new(&l.0, at);
    let subvols = sh(&format!("btrfs subvolume list {} | awk '{{print $NF}}'", m.0.display()));
    let files = sh(&format!("cd {} && find . -type f | sort", m.0.display()))
        .lines()
        .map(|f| (f.to_string(), *blake3::hash(&std::fs::read(m.0.join(f)).unwrap()).as_bytes()))
        .collect();
    drop(m);
    (subvols, files)
}

#[test]
fn btrfs_is_read_by_its_chunks_and_the_copy_checks_clean() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    sh(&format!("truncate -s 1G {0} && mkfs.btrfs -q -f {0}", src.display()));
    let allocated: u64 = {
        let l = Loop::new(&src, 0, 1024 * MIB);
        let m = Mnt::new(&l.0, &t.path().join("m"));
        sh(&format!(
            "btrfs subvolume create {0}/@ >/dev/null && btrfs subvolume create {0}/@home >/dev/null",
            m.0.display()
        ));
        fill(&m.0.join("@"), 1, 40);
        fill(&m.0.join("@home"), 2, 20);
        // Written and deleted: its chunks are emptied (and may be removed again).
        std::fs::write(m.0.join("@/big"), prng(3, 200 * MIB as usize)).unwrap();
        sh("sync");
        std::fs::remove_file(m.0.join("@/big")).unwrap();
        sh(&format!("sync && btrfs filesystem sync {}", m.0.display()));
        let usage = sh(&format!("btrfs filesystem usage -b {}", m.0.display()));
        let line = usage.lines().find(|l| l.contains("Device allocated:")).unwrap();
        line.split_whitespace().last().unwrap().parse().unwrap()
    };
    let before = contents(&src, &t.path().join("m"));
    assert!(before.0.contains("@home"), "{}", before.0);
    let l = layout::analyze(&std::fs::File::open(&src).unwrap()).unwrap();
    assert_eq!(l.parts[0].fs, "btrfs", "{l:?}");
    // What btrfs says it allocated, with the first MiB and the 64 MiB superblock mirror.
    let (lo, hi) = (allocated, allocated + MIB + 4096);
    assert!(
        (lo..=hi).contains(&l.extent_bytes) && l.extent_bytes < 1024 * MIB,
        "{} bytes to send, btrfs allocated {allocated}: {:?}",
        l.extent_bytes,
        l.notes
    );

    let tgt = t.path().join("tgt.img");
    garbage(&tgt, 1024 * MIB);
    let r = receiver(&[&tgt], &t.path().join("state"), None);
    assert!(send(&opts(r.addr, &[(&src, "")])).unwrap().ok);
    assert_extents_equal(&src, &tgt);
    sh(&format!("btrfs check --readonly {} 2>&1", tgt.display()));
    assert_eq!(contents(&tgt, &t.path().join("m")), before);
}

#[test]
fn a_damaged_chunk_tree_sends_the_device_whole() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    sh(&format!("truncate -s 256M {0} && mkfs.btrfs -q -f {0}", src.display()));
    let mut img = std::fs::read(&src).unwrap();
    // The superblock's chunk root points somewhere no system chunk maps.
    img[0x10000 + 0x58..0x10000 + 0x60].copy_from_slice(&(1u64 << 50).to_le_bytes());
    let l = layout::analyze(&img).unwrap();
    assert_eq!(l.extent_bytes, img.len() as u64, "{l:?}");
    assert!(l.notes.iter().any(|n| n.contains("btrfs") && n.contains("chunk tree")), "{:?}", l.notes);
    // The target of a device replace in progress (devid 0): whole, whatever its chunks say.
    let mut img = std::fs::read(&src).unwrap();
    img[0x10000 + 0xc9..0x10000 + 0xd1].copy_from_slice(&0u64.to_le_bytes());
    let l = layout::analyze(&img).unwrap();
    assert_eq!(l.extent_bytes, img.len() as u64, "{l:?}");
    assert!(l.notes.iter().any(|n| n.contains("device replace")), "{:?}", l.notes);
}
