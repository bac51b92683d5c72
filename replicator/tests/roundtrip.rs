//! Host-mode round trips over loopback with real images (mkfs, sgdisk, sfdisk) onto
//! garbage-filled targets: every used byte equal, filesystems check clean, digests match, and
//! the data sent is close to the filesystems' used size, not the disk size.

mod common;
use common::*;

#[test]
fn ext4_whole_disk_sends_about_the_used_size() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    sh(&format!("truncate -s 512M {0} && mkfs.ext4 -q -F {0}", src.display()));
    {
        let l = Loop::new(&src, 0, 512 * MIB);
        let m = Mnt::new(&l.0, &t.path().join("m"));
        fill(&m.0, 1, 60);
    }
    let used = {
        let out = sh(&format!("dumpe2fs -h {} 2>/dev/null", src.display()));
        let get = |k: &str| -> u64 {
            out.lines().find(|l| l.starts_with(k)).unwrap().split(':').nth(1).unwrap().trim().parse().unwrap()
        };
        (get("Block count") - get("Free blocks")) * get("Block size")
    };
    let tgt = t.path().join("tgt.img");
    garbage(&tgt, 600 * MIB);
    let r = receiver(&[&tgt], &t.path().join("state"), None);
    let rep = send(&opts(r.addr, &[(&src, "")])).unwrap();
    assert!(rep.ok);
    let d = &rep.disks[0];
    assert_eq!(d.verified, Some(true));
    // What is read is the used blocks but the unused inode-table tails and the clean journal's
    // log (plus nothing else); what is sent as data is less still, because all-zero blocks (the
    // zero files) travel as ranges.
    let p = ferry_replicator::layout::analyze(&std::fs::File::open(&src).unwrap()).unwrap().parts.remove(0);
    let needed = used - p.inode_table_bytes - p.journal_bytes;
    assert!(p.inode_table_bytes > 0 && p.journal_bytes > 0, "{p:?}");
    assert!(d.extent_bytes <= needed, "read {} bytes, filesystem needs {needed}", d.extent_bytes);
    assert!(d.extent_bytes >= needed * 9 / 10, "read {} bytes, filesystem needs {needed}", d.extent_bytes);
    assert!(d.bytes_sent < used && d.wire_bytes < used, "{d:?}");
    assert_extents_equal(&src, &tgt);
    sh(&format!("e2fsck -fn {}", tgt.display()));
    assert_eq!(r.status.lock().unwrap().disks[0].state, "complete");
}

#[test]
fn gpt_with_bios_boot_ext4_swap_xfs() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    sh(&format!(
        "truncate -s 700M {0} && sgdisk -n1:2048:+1M -t1:ef02 -n2:0:+200M -t2:8300 -n3:0:+64M -t3:8200 -n4:0:0 -t4:8300 {0} >/dev/null",
        src.display()
    ));
    let p = partitions(&src);
    {
        let f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &prng(42, MIB as usize), p[0].0).unwrap();
        // BIOS boot code
    }
    let l2 = Loop::new(&src, p[1].0, p[1].1);
    let l3 = Loop::new(&src, p[2].0, p[2].1);
    let l4 = Loop::new(&src, p[3].0, p[3].1);
    sh(&format!("mkfs.ext4 -q -F {} && mkswap {} >/dev/null && mkfs.xfs -q -f {}", l2.0, l3.0, l4.0));
    {
        let m2 = Mnt::new(&l2.0, &t.path().join("m2"));
        let m4 = Mnt::new(&l4.0, &t.path().join("m4"));
        fill(&m2.0, 2, 40);
        fill(&m4.0, 3, 60);
    }
    drop((l2, l3, l4));
    let tgt = t.path().join("tgt.img");
    garbage(&tgt, 800 * MIB);
    let r = receiver(&[&tgt], &t.path().join("state"), None);
    let rep = send(&opts(r.addr, &[(&src, "#0")])).unwrap();
    let d = &rep.disks[0];
    assert!(d.extent_bytes < 250 * MIB, "read {} of 700 MiB", d.extent_bytes);
    assert_extents_equal(&src, &tgt);
    let t2 = Loop::new(&tgt, p[1].0, p[1].1);
    sh(&format!("e2fsck -fn {}", t2.0));
    let t4 = Loop::new(&tgt, p[3].0, p[3].1);
    sh(&format!("xfs_repair -n {}", t4.0));
    let t3 = Loop::new(&tgt, p[2].0, p[2].1);
    assert!(sh(&format!("blkid -p {}", t3.0)).contains("swap"));
    let m = Mnt::new(&t4.0, &t.path().join("tm4"));
    assert!(std::fs::read_dir(m.0.join("d1")).unwrap().count() > 10);
}

#[test]
fn mbr_with_logical_partitions() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    sh(&format!("truncate -s 400M {}", src.display()));
    sh(&format!(
        "printf 'label: dos\\n,120M,83\\n,,5\\n,100M,83\\n,64M,82\\n' | sfdisk -q {}",
        src.display()
    ));
    let p = partitions(&src);
    assert_eq!(p.len(), 4, "{p:?}");
    let l1 = Loop::new(&src, p[0].0, p[0].1);
    let l5 = Loop::new(&src, p[2].0, p[2].1);
    let l6 = Loop::new(&src, p[3].0, p[3].1);
    sh(&format!("mkfs.ext4 -q -F {} && mkfs.ext3 -q -F {} && mkswap {} >/dev/null", l1.0, l5.0, l6.0));
    {
        let m1 = Mnt::new(&l1.0, &t.path().join("m1"));
        let m5 = Mnt::new(&l5.0, &t.path().join("m5"));
        fill(&m1.0, 4, 30);
        fill(&m5.0, 5, 20);
    }
    drop((l1, l5, l6));
    let tgt = t.path().join("tgt.img");
    garbage(&tgt, 400 * MIB);
    let r = receiver(&[&tgt], &t.path().join("state"), None);
    let rep = send(&opts(r.addr, &[(&src, "tgt.img")])).unwrap();
    assert!(rep.disks[0].extent_bytes < 200 * MIB, "{:?}", rep.disks[0]);
    assert_extents_equal(&src, &tgt);
    assert_eq!(partitions(&tgt), p, "the logical partitions survive (EBRs were sent)");
    for i in [0, 2] {
        let l = Loop::new(&tgt, p[i].0, p[i].1);
        sh(&format!("e2fsck -fn {}", l.0));
    }
}
