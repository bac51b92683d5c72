//! A synthetic sysfs for tests: block devices, partitions, holders/slaves and dm names.

use std::fs;
use std::path::Path;

pub struct Tree(pub tempfile::TempDir);

impl Tree {
    pub fn new() -> Tree {
        Tree(tempfile::tempdir().unwrap())
    }

    pub fn root(&self) -> &Path {
        self.0.path()
    }

    /// A block device at `dir` (relative to devices/) named like its last component.
    pub fn dev(&self, dir: &str, num: (u64, u64), partition: bool) -> &Self {
        let d = self.root().join("devices").join(dir);
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        fs::create_dir_all(d.join("holders")).unwrap();
        fs::create_dir_all(d.join("slaves")).unwrap();
        fs::write(d.join("dev"), format!("{}:{}\n", num.0, num.1)).unwrap();
        if partition {
            fs::write(d.join("partition"), "1\n").unwrap();
        }
        let class = self.root().join("class/block");
        fs::create_dir_all(&class).unwrap();
        std::os::unix::fs::symlink(&d, class.join(&name)).unwrap();
        let devb = self.root().join("dev/block");
        fs::create_dir_all(&devb).unwrap();
        std::os::unix::fs::symlink(&d, devb.join(format!("{}:{}", num.0, num.1))).unwrap();
        self
    }

    /// `upper` is stacked on `lower`.
    pub fn stack(&self, lower: &str, upper: &str) -> &Self {
        let c = self.root().join("class/block");
        fs::write(c.join(lower).join("holders").join(upper), "").unwrap();
        fs::write(c.join(upper).join("slaves").join(lower), "").unwrap();
        self
    }

    /// `name` is an MD array of `level` (`raid1`) with superblocks of `version` (`1.2`).
    pub fn md(&self, name: &str, level: &str, version: &str) -> &Self {
        let d = self.root().join("class/block").join(name).join("md");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("level"), format!("{level}\n")).unwrap();
        fs::write(d.join("metadata_version"), format!("{version}\n")).unwrap();
        self
    }

    pub fn dm(&self, name: &str, dmname: &str, uuid: &str) -> &Self {
        let d = self.root().join("class/block").join(name).join("dm");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("name"), format!("{dmname}\n")).unwrap();
        fs::write(d.join("uuid"), format!("{uuid}\n")).unwrap();
        self
    }
}

pub const VG: &str = "aaaaaaaabbbbbbbbccccccccdddddddd";

/// LVM over sda2+sdb1 (and sdc1), dm-crypt over an LV, MD RAID1 over sdd1+sde1, btrfs over
/// sdf1+sdg, a loop device over /srv/disk.img.
pub fn tree() -> Tree {
    let t = Tree::new();
    t.dev("pci/sda", (8, 0), false)
        .dev("pci/sda/sda1", (8, 1), true)
        .dev("pci/sda/sda2", (8, 2), true)
        .dev("pci/sdb", (8, 16), false)
        .dev("pci/sdb/sdb1", (8, 17), true)
        .dev("pci/sdc", (8, 32), false)
        .dev("pci/sdc/sdc1", (8, 33), true)
        .dev("virtual/dm-0", (253, 0), false)
        .dev("virtual/dm-1", (253, 1), false)
        .dev("virtual/dm-2", (253, 2), false)
        .stack("sda2", "dm-0")
        .stack("sdb1", "dm-0")
        .stack("sdc1", "dm-1")
        .stack("dm-1", "dm-2")
        .dm("dm-0", "vg-root", &format!("LVM-{VG}{}", "r".repeat(32)))
        .dm("dm-1", "vg-data", &format!("LVM-{VG}{}", "d".repeat(32)))
        .dm("dm-2", "data_crypt", "CRYPT-LUKS2-0123-data_crypt")
        // MD RAID1 over sdd1 + sde1
        .dev("pci/sdd", (8, 48), false)
        .dev("pci/sdd/sdd1", (8, 49), true)
        .dev("pci/sde", (8, 64), false)
        .dev("pci/sde/sde1", (8, 65), true)
        .dev("virtual/md0", (9, 0), false)
        .stack("sdd1", "md0")
        .stack("sde1", "md0")
        .md("md0", "raid1", "1.2")
        // btrfs over sdf1 + sdg
        .dev("pci/sdf", (8, 80), false)
        .dev("pci/sdf/sdf1", (8, 81), true)
        .dev("pci/sdg", (8, 96), false)
        .dev("virtual/loop0", (7, 0), false);
    let b = t.root().join("fs/btrfs/1111-2222/devices");
    fs::create_dir_all(&b).unwrap();
    fs::write(b.join("sdf1"), "").unwrap();
    fs::write(b.join("sdg"), "").unwrap();
    fs::create_dir_all(t.root().join("class/block/loop0/loop")).unwrap();
    fs::write(t.root().join("class/block/loop0/loop/backing_file"), "/srv/disk.img\n").unwrap();
    t
}

pub const MOUNTINFO: &str = "\
22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw
23 22 0:21 / /proc rw,nosuid - proc proc rw
24 22 253:2 / /srv/my\\040data rw - xfs /dev/mapper/data_crypt rw
25 22 9:0 / /var/lib/db rw - ext4 /dev/md0 rw
26 22 0:45 /@home /home rw - btrfs /dev/sdf1 rw,subvol=/@home
27 22 0:45 /@log /var/log rw - btrfs /dev/sdf1 rw,subvol=/@log
28 22 8:1 / /boot ro,relatime - ext4 /dev/sda1 ro
29 22 0:50 / /mnt/nfs rw - nfs4 server:/export rw
";
