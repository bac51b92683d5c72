//! What an ext4 filesystem's metadata holds when nothing uses it is not read and not sent: the
//! unused tail of each group's inode table and a clean journal's log blocks. The target keeps
//! whatever it had there — here random bytes — and the copy is still a clean filesystem
//! (`e2fsck -fn`) with the source's files. A source whose journal needs recovery (a copy taken
//! while mounted) sends its journal whole, and the copy replays it like the source would.

mod common;
use common::*;
use ferry_replicator::layout;

fn map(img: &std::path::Path) -> layout::Part {
    let f = std::fs::File::open(img).unwrap();
    layout::analyze(&f).unwrap().parts.remove(0)
}

#[test]
fn unused_inode_tables_and_a_clean_journal_stay_out_and_the_copy_checks_clean() {
    let t = tempfile::tempdir().unwrap();
    let src = ext4_with_files(&t.path().join("s"), 512, 300, 16);
    let p = map(&src);
    assert!(p.inode_table_bytes > 0 && p.journal_bytes > 0, "{p:?}");
    let tgt = t.path().join("tgt.img");
    garbage(&tgt, 512 * MIB);
    let r = receiver(&[&tgt], &t.path().join("state"), None);
    let rep = send(&opts(r.addr, &[(&src, "")])).unwrap();
    assert!(rep.ok);
    // Less was read than the blocks the bitmaps call used.
    assert!(rep.disks[0].extent_bytes + p.inode_table_bytes + p.journal_bytes <= 512 * MIB - p.free_bytes);
    sh(&format!("e2fsck -fn {}", tgt.display()));
    assert_eq!(files_of(&src, &t.path().join("m1")), files_of(&tgt, &t.path().join("m2")));
    // The target still holds its random bytes where the journal log was: never written.
    let f = std::fs::File::open(&tgt).unwrap();
    let l = layout::analyze(&std::fs::File::open(&src).unwrap()).unwrap();
    let hole = layout::RangeSet::from_vec(vec![(0, 512 * MIB)]).subtract(&l.extents);
    let mut b = vec![0u8; 4096];
    use std::os::unix::fs::FileExt;
    let (start, _) = hole.ranges()[0];
    f.read_exact_at(&mut b, start).unwrap();
    assert!(b.iter().any(|&x| x != 0));
}

#[test]
fn a_journal_that_needs_recovery_is_sent_whole_and_replays_on_the_target() {
    let t = tempfile::tempdir().unwrap();
    let base = ext4_with_files(&t.path().join("s"), 256, 50, 16);
    // A copy taken while mounted, after writes: needs_recovery set, transactions in the log.
    let l = Loop::new(&base, 0, 256 * MIB);
    let m = Mnt::new(&l.0, &t.path().join("live"));
    for i in 0..40 {
        std::fs::write(m.0.join(format!("late{i}")), prng(900 + i, 8192)).unwrap();
    }
    sh("sync");
    let src = t.path().join("dirty.img");
    std::fs::copy(&base, &src).unwrap();
    drop(m);
    drop(l);
    let p = map(&src);
    assert_eq!(p.journal_bytes, 0, "a journal that needs recovery must be sent: {p:?}");
    let tgt = t.path().join("tgt.img");
    garbage(&tgt, 256 * MIB);
    let r = receiver(&[&tgt], &t.path().join("state"), None);
    assert!(send(&opts(r.addr, &[(&src, "")])).unwrap().ok);
    // Both replay the same journal to the same files.
    for img in [&src, &tgt] {
        let out = std::process::Command::new("e2fsck").arg("-fy").arg(img).output().unwrap();
        assert!(out.status.code().unwrap_or(8) < 4, "{}", String::from_utf8_lossy(&out.stdout));
        sh(&format!("e2fsck -fn {}", img.display()));
    }
    assert_eq!(files_of(&src, &t.path().join("m1")), files_of(&tgt, &t.path().join("m2")));
}
