use super::*;
use std::process::Command;

fn sh(c: &str) {
    assert!(Command::new("bash").arg("-c").arg(c).status().unwrap().success(), "{c}");
}

fn probe_path(p: &std::path::Path) -> Probe {
    probe_file(p).unwrap_or_else(|| panic!("nothing found on {}", p.display()))
}

#[test]
fn real_filesystems() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("x.img");
    let u = "6f1e6c54-3b1c-4bde-a8f2-0123456789ab";
    let p = |fstype, label: &str| Probe { fstype, uuid: u.into(), label: label.into() };
    sh(&format!("truncate -s 64M {0} && mkfs.ext4 -q -F -U {u} -L rootfs {0}", img.display()));
    assert_eq!(probe_path(&img), p(FsType::Ext4, "rootfs"));
    sh(&format!("mkfs.ext2 -q -F -U {u} -L b {0}", img.display()));
    assert_eq!(probe_path(&img), p(FsType::Ext2, "b"));
    sh(&format!("mkfs.ext3 -q -F -U {u} -L c {0}", img.display()));
    assert_eq!(probe_path(&img), p(FsType::Ext3, "c"));
    sh(&format!("rm {0}; truncate -s 320M {0} && mkfs.xfs -q -f -m uuid={u} -L data {0}", img.display()));
    assert_eq!(probe_path(&img), p(FsType::Xfs, "data"));
    sh(&format!("wipefs -qa {0} && mkfs.btrfs -q -f -U {u} -L pool {0}", img.display()));
    assert_eq!(probe_path(&img), p(FsType::Btrfs, "pool"));
    sh(&format!("wipefs -qa {0} && mkswap -q -U {u} -L sw {0}", img.display()));
    assert_eq!(probe_path(&img), p(FsType::Swap, "sw"));
    sh(&format!("wipefs -qa {0} && mkfs.vfat -i 1234ABCD {0} >/dev/null", img.display()));
    assert_eq!(probe_path(&img).uuid, "1234-ABCD");
}

#[test]
fn container_signatures() {
    let mut b = vec![0u8; 1 << 20];
    b[512..520].copy_from_slice(b"LABELONE");
    assert_eq!(probe(&b, 0, b.len() as u64).unwrap().fstype, FsType::LvmPv);
    let mut b = vec![0u8; 1 << 20];
    b[4096..4100].copy_from_slice(&0xa92b_4efcu32.to_le_bytes());
    b[4096 + 16..4096 + 32].copy_from_slice(&[0x11; 16]);
    b[4096 + 32..4096 + 38].copy_from_slice(b"host:0");
    // Without major version 1 it is not an MD superblock.
    assert!(probe(&b, 0, b.len() as u64).is_none());
    b[4100] = 1;
    let p = probe(&b, 0, b.len() as u64).unwrap();
    assert_eq!(
        (p.fstype, p.uuid.as_str(), p.label.as_str()),
        (FsType::MdMember, "11111111-1111-1111-1111-111111111111", "host:0")
    );
    // Metadata 1.1: the superblock at the start.
    let mut b1 = vec![0u8; 1 << 20];
    b1[..4096].copy_from_slice(&b[4096..8192]);
    assert_eq!(probe(&b1, 0, b1.len() as u64).unwrap().fstype, FsType::MdMember);
    let mut b = vec![0u8; 1 << 20];
    b[..6].copy_from_slice(b"LUKS\xba\xbe");
    b[168..204].copy_from_slice(b"0c5cbd7d-7b7e-4a1e-9d3e-1f2a3b4c5d6e");
    assert_eq!(probe(&b, 0, b.len() as u64).unwrap().uuid, "0c5cbd7d-7b7e-4a1e-9d3e-1f2a3b4c5d6e");
}

#[test]
fn short_or_empty_regions_are_nothing() {
    let b = vec![0u8; 1 << 20];
    assert!(probe(&b, 0, b.len() as u64).is_none());
    assert!(probe(&b, 0, 100).is_none());
    assert!(probe(&b, u64::MAX - 10, 1 << 20).is_none());
    assert_eq!(serde_json::to_string(&FsType::LvmPv).unwrap(), "\"LVM2_member\"");
}
