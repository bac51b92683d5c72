//! Storage checks on a synthetic sysfs and mountinfo, and filesystem types on real images.

use super::*;
use crate::sender::stack::fixture::{tree, MOUNTINFO};
use std::process::Command;

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn ids(items: &[Item]) -> Vec<(&str, Level, String)> {
    items.iter().map(|i| (i.id, i.level, i.subject.clone().unwrap_or_default())).collect()
}

#[test]
fn luks_md_network_and_freeze_on_the_sources() {
    let t = tree();
    t.dev("virtual/dm-3", (253, 3), false).stack("sdc1", "dm-3").dm(
        "dm-3",
        "vg-pool-tpool",
        &format!("LVM-{}{}-tpool", crate::sender::stack::fixture::VG, "p".repeat(32)),
    );
    let sys = Sys::new(t.root());
    let mut mi = MOUNTINFO.to_string();
    mi.push_str("30 22 8:33 / /srv/fat rw - vfat /dev/sdc1 rw\n");
    let mounts = stack::parse_mountinfo(&mi);
    let srcs = [set(&["sda"]), set(&["sdb"]), set(&["sdc"]), set(&["sdd"]), set(&["sde"])];
    let v = stack_items(&sys, &mounts, &srcs);
    let got = ids(&v);
    assert!(got.contains(&("storage-luks", Level::Warning, "dm-2 (data_crypt)".into())), "{got:?}");
    assert!(got.contains(&("storage-md-raid", Level::Ok, "md0".into())), "{got:?}");
    assert!(got.contains(&("storage-lvm-thin", Level::Warning, "dm-3 (vg-pool-tpool)".into())), "{got:?}");
    assert!(got.contains(&("network-mounts", Level::Warning, "/mnt/nfs".into())), "{got:?}");
    assert!(got.contains(&("freeze-support", Level::Warning, "/srv/fat".into())), "{got:?}");
    assert!(!got.iter().any(|g| g.0 == "system-disk-order"), "{got:?}");
    assert!(v.iter().all(|i| i.level != Level::Critical), "{got:?}");
}

#[test]
fn an_encrypted_or_raid_root_is_critical_and_order_matters() {
    let t = tree();
    let sys = Sys::new(t.root());
    // / on the LUKS volume (253:2), /boot on md0 (9:0).
    let mi = "22 1 253:2 / / rw - xfs /dev/mapper/data_crypt rw\n28 22 9:0 / /boot rw - ext4 /dev/md0 rw\n";
    let mounts = stack::parse_mountinfo(mi);
    let v = stack_items(&sys, &mounts, &[set(&["sdc"]), set(&["sdd"])]);
    let got = ids(&v);
    assert!(got.contains(&("storage-luks", Level::Critical, "dm-2 (data_crypt)".into())), "{got:?}");
    // With ferry send --luks-key-file the encrypted root is opened in the appliance.
    let mut keyed = v.clone();
    with_luks_keys(&mut keyed);
    assert!(
        ids(&keyed).contains(&("storage-luks", Level::Ok, "dm-2 (data_crypt)".into())),
        "{:?}",
        ids(&keyed)
    );
    // RAID1 with 1.x superblocks is converted; another level under /boot is not.
    assert!(got.contains(&("storage-md-raid", Level::Ok, "md0".into())), "{got:?}");
    t.md("md0", "raid5", "1.2");
    let v = stack_items(&sys, &mounts, &[set(&["sdc"]), set(&["sdd"])]);
    assert!(ids(&v).contains(&("storage-md-raid", Level::Critical, "md0".into())), "{:?}", ids(&v));
    // / lives on sda+sdb (LVM): sent second, it is not the disk the VM boots.
    let mounts = stack::parse_mountinfo(MOUNTINFO);
    let v = stack_items(&sys, &mounts, &[set(&["sdd"]), set(&["sda"]), set(&["sdb"])]);
    assert!(ids(&v).contains(&("system-disk-order", Level::Warning, String::new())), "{:?}", ids(&v));
    // btrfs root. (Its real anonymous 0:N device is resolved through /dev, which a fixture
    // cannot provide: here it carries sdf1's number.)
    let mounts = stack::parse_mountinfo("26 1 8:81 /@ / rw - btrfs /dev/sdf1 rw,subvol=/@\n");
    let v = stack_items(&sys, &mounts, &[set(&["sdf"])]);
    assert!(ids(&v).contains(&("storage-btrfs-root", Level::Warning, String::new())), "{:?}", ids(&v));
    // Not when / is not among the sources.
    let v = stack_items(&sys, &mounts, &[set(&["sdd"])]);
    assert!(!ids(&v).iter().any(|i| i.0 == "storage-btrfs-root"), "{:?}", ids(&v));
}

#[test]
fn a_full_system_filesystem_is_critical() {
    let u = Usage { size: 1000 << 20, free: 5 << 20, avail: 5 << 20, files: 65536, files_free: 30000 };
    let v = usage_items("/", &u);
    assert_eq!((v[0].id, v[0].level), ("filesystem-space", Level::Critical));
    assert_eq!(v[0].values["percent"], 99.5);
    assert!(v[0].remediation.contains("free space on /"), "{}", v[0].remediation);
    assert_eq!((v[1].id, v[1].level), ("filesystem-inodes", Level::Ok));
    // 99.5 % of a large root still leaves conversion room: a Warning.
    let big =
        Usage { size: 4000 << 30, free: 20 << 30, avail: 20 << 30, files: 1 << 30, files_free: 1 << 20 };
    assert_eq!(usage_items("/", &big)[0].level, Level::Warning);
    // Elsewhere a full filesystem is a Warning; inodes count too.
    let u = Usage { size: 1000 << 20, free: 1 << 20, avail: 1 << 20, files: 10000, files_free: 50 };
    let v = usage_items("/srv", &u);
    assert_eq!((v[0].level, v[1].level), (Level::Warning, Level::Warning));
    let v = usage_items("/boot", &Usage { size: 100, free: 50, avail: 50, files: 100, files_free: 0 });
    assert_eq!((v[0].level, v[1].level), (Level::Ok, Level::Critical));
    // btrfs reports no inode limit.
    let v = usage_items("/", &Usage { size: 100, free: 50, avail: 50, files: 0, files_free: 0 });
    assert_eq!(v[1].level, Level::Ok);
}

#[test]
fn filesystem_types_say_how_they_are_read() {
    let t = tempfile::tempdir().unwrap();
    let ext = t.path().join("ext.img");
    let ok = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&ext).arg("16M").status().unwrap();
    assert!(ok.success());
    let f = std::fs::File::open(&ext).unwrap();
    let l = crate::layout::analyze(&f).unwrap();
    let v = fs_types(&Src { path: "ext.img", file: &f, layout: &l });
    assert_eq!(
        (v[0].id, v[0].level, v[0].values["type"].as_str()),
        ("filesystem-type", Level::Ok, Some("ext4"))
    );
    assert!(v[0].values["bytes_to_read"].as_u64().unwrap() < 16 << 20);
    // A LUKS header: read whole, and conversion cannot open it.
    let luks = t.path().join("luks.img");
    let mut b = vec![0u8; 1 << 20];
    b[..6].copy_from_slice(b"LUKS\xba\xbe");
    b[6..8].copy_from_slice(&2u16.to_be_bytes());
    std::fs::write(&luks, &b).unwrap();
    let f = std::fs::File::open(&luks).unwrap();
    let l = crate::layout::analyze(&f).unwrap();
    let v = fs_types(&Src { path: "luks.img", file: &f, layout: &l });
    assert_eq!((v[0].level, v[0].values["type"].as_str()), (Level::Warning, Some("crypto_LUKS")), "{v:?}");
    assert_eq!(v[0].values["bytes_to_read"], 1u64 << 20);
    // An MD RAID1 member: read through to its ext4.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("truncate -s 63M {0} && mkfs.ext4 -q -F {0}", t.path().join("fs.img").display()))
        .status()
        .unwrap();
    assert!(out.success());
    let m = crate::layout::md::tests::member(64 << 20, 1, &std::fs::read(t.path().join("fs.img")).unwrap());
    let md = t.path().join("md.img");
    std::fs::write(&md, &m).unwrap();
    let f = std::fs::File::open(&md).unwrap();
    let l = crate::layout::analyze(&f).unwrap();
    let v = fs_types(&Src { path: "md.img", file: &f, layout: &l });
    assert_eq!((v[0].level, v[0].values["type"].as_str()), (Level::Ok, Some("linux_raid_member")), "{v:?}");
    assert!(v[0].values["bytes_to_read"].as_u64().unwrap() < 16 << 20, "{v:?}");
}
