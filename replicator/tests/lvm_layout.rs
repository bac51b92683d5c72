//! LVM physical volumes are read through their volume group: the label and metadata areas are
//! sent, extents no LV holds are not, and the filesystem inside each plain (linear) LV is
//! analysed like a partition's — across segments laid out of order. LVs ferry cannot read
//! through (a snapshot's origin and COW store, hidden sub-LVs) are sent whole. The copy, on a
//! target full of random bytes, holds the LVs' filesystems clean (`e2fsck -fn`) with the
//! source's files, and the random bytes stay where no LV was.

mod common;
use common::lvm::{self, Lv, EXTENT};
use common::*;
use ferry_replicator::layout::{self, RangeSet};

fn layout_of(img: &std::path::Path) -> layout::Layout {
    layout::analyze(&std::fs::File::open(img).unwrap()).unwrap()
}

#[test]
fn lvs_are_read_through_the_volume_group_and_the_copy_checks_clean() {
    let t = tempfile::tempdir().unwrap();
    let root = ext4_with_files(&t.path().join("root"), 256, 200, 16);
    let root_free = layout::ext::free(&std::fs::File::open(&root).unwrap(), 0, 256 * MIB).unwrap();
    let root_used = 256 * MIB - RangeSet::from_vec(root_free.ranges.clone()).total();
    let swap = t.path().join("swap.img");
    sh(&format!("truncate -s 16M {0} && mkswap -q {0}", swap.display()));
    let raw = t.path().join("raw.img");
    std::fs::write(&raw, prng(7, 8 * MIB as usize)).unwrap();
    // root: two segments, the second before the first on the PV.
    let lvs = [
        Lv::linear("root", &[(100, 32), (10, 32)], Some(root.clone())),
        Lv::linear("swap", &[(60, 4)], Some(swap)),
        Lv::linear("data", &[(70, 2)], Some(raw.clone())),
    ];
    let (img, _vg) = lvm::disk(t.path(), 1024, &lvs);
    let l = layout_of(&img);
    assert_eq!(l.parts[0].fs, "lvm", "{l:?}");
    // Sent: GPT and PV head (2 MiB), root's used blocks, swap's header, all of data, the GPT
    // backup and the PV's tail past its last whole extent; nothing of the 180 free extents.
    let expect = 2 * MIB + root_used + 4096 + 8 * MIB + EXTENT;
    assert!(
        l.extent_bytes >= root_used + 8 * MIB && l.extent_bytes <= expect,
        "{} bytes to send, expected at most {expect} ({root_used} used in root): {:?}",
        l.extent_bytes,
        l.notes
    );
    assert_eq!(l.parts[0].inode_table_bytes, root_free.inode_table_bytes);

    let tgt = t.path().join("tgt.img");
    garbage(&tgt, 1024 * MIB);
    let r = receiver(&[&tgt], &t.path().join("state"), None);
    let rep = send(&opts(r.addr, &[(&img, "")])).unwrap();
    assert!(rep.ok);
    assert_extents_equal(&img, &tgt);
    let copy = t.path().join("root-copy.img");
    lvm::read_lv(&tgt, &lvs[0], &copy);
    sh(&format!("e2fsck -fn {}", copy.display()));
    assert_eq!(files_of(&root, &t.path().join("m1")), files_of(&copy, &t.path().join("m2")));
    let data = t.path().join("data-copy.img");
    lvm::read_lv(&tgt, &lvs[2], &data);
    assert_eq!(file_hash(&data), file_hash(&raw));
    // An extent no LV holds was never written: the target's random bytes are still there.
    let hole = layout::RangeSet::from_vec(vec![(0, 1024 * MIB)]).subtract(&l.extents);
    let free_extent = (lvm::DATA + 200 * EXTENT, lvm::DATA + 201 * EXTENT);
    assert!(hole.ranges().iter().any(|&(s, e)| s <= free_extent.0 && free_extent.1 <= e));
    let mut a = vec![0u8; 4096];
    let mut b = vec![0u8; 4096];
    use std::os::unix::fs::FileExt;
    std::fs::File::open(&tgt).unwrap().read_exact_at(&mut a, free_extent.0).unwrap();
    garbage(&t.path().join("g"), MIB);
    std::fs::File::open(t.path().join("g")).unwrap().read_exact_at(&mut b, free_extent.0 % MIB).unwrap();
    assert_eq!(a, b, "the target was written where no LV is");
}

#[test]
fn lvs_ferry_cannot_read_through_are_sent_whole() {
    let t = tempfile::tempdir().unwrap();
    let root = ext4_with_files(&t.path().join("root"), 128, 20, 16);
    let other = ext4_with_files(&t.path().join("other"), 64, 5, 16);
    let snapshot = r#"segment1 {
start_extent = 0
extent_count = 32
type = "snapshot"
chunk_size = 8
origin = "root"
cow_store = "cow"
}
"#;
    let lvs = [
        Lv::linear("root", &[(10, 32)], Some(root)),
        Lv::linear("cow", &[(50, 4)], None),
        Lv { name: "snapshot0", visible: false, segs: vec![], raw: Some(snapshot.into()), image: None },
        Lv { visible: false, ..Lv::linear("hidden", &[(60, 16)], Some(other.clone())) },
        Lv::linear("plain", &[(80, 16)], Some(other)),
    ];
    let (img, _vg) = lvm::disk(t.path(), 512, &lvs);
    let l = layout_of(&img);
    let all = |lv: &Lv| RangeSet::from_vec(lv.disk_ranges()).subtract(&l.extents).total();
    // The origin of a snapshot, its COW store and a hidden LV: every byte is sent.
    for lv in &lvs[..4] {
        assert_eq!(all(lv), 0, "{} not sent whole: {:?}", lv.name, l.notes);
    }
    // The same filesystem in a plain LV is read through.
    assert!(all(&lvs[4]) > 32 * MIB, "{:?}", l.notes);
    for name in ["root", "cow", "hidden"] {
        assert!(
            l.notes.iter().any(|n| n.contains(&format!("/{name}: hidden or used by another LV"))),
            "{:?}",
            l.notes
        );
    }
}
