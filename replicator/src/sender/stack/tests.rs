//! The stack resolution on a synthetic sysfs: LVM over two disks (and a third PV holding another
//! LV of the same group), dm-crypt over LVM, MD RAID1, multi-device btrfs, a loop device.

use super::*;

use super::fixture::{tree, MOUNTINFO};

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn up_from_a_disk_through_lvm_and_crypt() {
    let t = tree();
    let s = Sys::new(t.root());
    assert_eq!(s.above("sda"), set(&["sda", "sda1", "sda2", "dm-0"]));
    assert_eq!(s.above("sdc"), set(&["sdc", "sdc1", "dm-1", "dm-2"]));
    assert_eq!(s.above("sdd"), set(&["sdd", "sdd1", "md0"]));
    assert_eq!(s.describe("dm-0"), "dm-0 (vg-root)");
    assert_eq!(s.name_of((253, 2)).as_deref(), Some("dm-2"));
    assert_eq!(s.disk_of("sdb1"), "sdb");
    // A disk with partitions, or a partition under LVM, is never a leaf: what claims it is
    // above it, where ferry looks (a mounted sda1 claims sda too).
    assert!(!s.is_leaf("sda") && !s.is_leaf("sda2") && !s.is_leaf("dm-1"));
    assert!(s.is_leaf("sda1") && s.is_leaf("dm-0") && s.is_leaf("sdg"));
}

#[test]
fn down_to_every_disk_of_the_volume_group() {
    let t = tree();
    let s = Sys::new(t.root());
    // The root LV lives on sda2 and sdb1; the group's other LV on sdc1.
    assert_eq!(s.below("dm-0").unwrap(), set(&["sda", "sdb", "sdc"]));
    assert_eq!(s.below("dm-2").unwrap(), set(&["sda", "sdb", "sdc"]));
    assert_eq!(s.below("md0").unwrap(), set(&["sdd", "sde"]));
    assert_eq!(s.below("sdd1").unwrap(), set(&["sdd"]));
    let e = format!("{:#}", s.below("loop0").unwrap_err());
    assert!(e.contains("/srv/disk.img"), "{e}");
}

#[test]
fn mountinfo_is_parsed_and_unescaped() {
    let m = parse_mountinfo(MOUNTINFO);
    assert_eq!(m.len(), 8);
    assert_eq!(m[2].point, "/srv/my data");
    assert_eq!(m[2].dev, (253, 2));
    assert_eq!(m[4].fstype, "btrfs");
    assert!(m[6].read_only && !m[0].read_only);
}

#[test]
fn filesystems_on_a_disk_include_stacked_and_btrfs_ones() {
    let t = tree();
    let s = Sys::new(t.root());
    let m = parse_mountinfo(MOUNTINFO);
    let points = |disk: &str| -> Vec<String> {
        mounts_on(&s, &m, &s.above(disk)).iter().map(|m| m.point.clone()).collect()
    };
    assert_eq!(points("sda"), vec!["/", "/boot"]);
    assert_eq!(points("sdc"), vec!["/srv/my data"]);
    assert_eq!(points("sde"), vec!["/var/lib/db"]);
    // Two subvolumes of one btrfs: one filesystem to freeze. (The btrfs source is a node under
    // /dev of this machine, so the fixture cannot resolve it: tested on a real btrfs instead.)
    assert!(points("sdg").len() <= 1);
}

#[test]
fn system_disks_follow_root_and_the_local_fstab_mounts() {
    let t = tree();
    let s = Sys::new(t.root());
    let m = parse_mountinfo(MOUNTINFO);
    let fstab = "# comment\n/dev/mapper/vg-root / ext4 defaults 0 1\nUUID=x /boot ext4 defaults 0 2\n\
                 /dev/md0 /var/lib/db ext4 defaults 0 2\nserver:/export /mnt/nfs nfs4 defaults 0 0\n";
    let d = system_disks(&s, &m, fstab).unwrap();
    let names: Vec<&str> = d.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["sda", "sdb", "sdc", "sdd", "sde"]);
    assert_eq!(d[0].1, vec!["/", "/boot"]);
    assert_eq!(d[3].1, vec!["/var/lib/db"]);
}

#[test]
fn root_on_a_loop_device_is_refused_with_the_reason() {
    let t = tree();
    let s = Sys::new(t.root());
    let m = parse_mountinfo("22 1 7:0 / / rw - ext4 /dev/loop0 rw\n");
    let e = format!("{:#}", system_disks(&s, &m, "").unwrap_err());
    assert!(e.contains("pass --disk") && e.contains("/srv/disk.img"), "{e}");
}
