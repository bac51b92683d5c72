//! A btrfs root in a subvolume (`@`, with `/home` in `@home`, as Debian's and Ubuntu's
//! installers lay it out) is found and mounted as that subvolume, and fstab's `subvol=` options
//! choose what is mounted below it. A top-level symlink is never followed in the search, and a
//! filesystem with two candidate roots (neither `@`) is not guessed at. Real btrfs on a GPT image, opened the
//! way `ferry-init convert` and `rehearse` open a system (`open_system`, host machine).

use ferry_convert::machine::Host;
mod common;
use common::sh;

const KERNEL: &str = "6.1.0-18-amd64";

fn debian_root(root: &std::path::Path, fstab: &str) {
    let w = |p: &str, s: &str| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    };
    w("etc/os-release", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n");
    w("etc/fstab", fstab);
    w(&format!("boot/vmlinuz-{KERNEL}"), "");
    w(
        &format!("lib/modules/{KERNEL}/modules.dep"),
        "kernel/drivers/virtio/virtio_pci.ko:\nkernel/drivers/block/virtio_blk.ko:\n\
         kernel/drivers/scsi/virtio_scsi.ko:\nkernel/drivers/net/virtio_net.ko:\n",
    );
    std::fs::create_dir_all(root.join("home")).unwrap();
}

/// A GPT disk whose partition 1 is btrfs; `build` fills the mounted top level.
fn disk(t: &std::path::Path, build: impl FnOnce(&std::path::Path)) -> std::path::PathBuf {
    let img = t.join("disk.img");
    sh(&format!("truncate -s 300M {0} && sgdisk -n1:2048:0 -t1:8300 {0} >/dev/null", img.display()));
    let fs = t.join("fs.img");
    sh(&format!("truncate -s 200M {0} && mkfs.btrfs -q -f {0}", fs.display()));
    let m = t.join("m");
    std::fs::create_dir_all(&m).unwrap();
    sh(&format!("mount -o loop {} {}", fs.display(), m.display()));
    build(&m);
    sh(&format!("umount {}", m.display()));
    sh(&format!("dd if={} of={} bs=1M seek=1 conv=notrunc,sparse status=none", fs.display(), img.display()));
    img
}

fn skip() -> bool {
    let not_root = !nix::unistd::geteuid().is_root();
    if not_root {
        eprintln!("SKIPPED: needs root (loop devices, mounts)");
    }
    not_root
}

#[test]
fn a_subvolume_root_is_mounted_with_its_fstab_subvolumes() {
    if skip() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = disk(t.path(), |m| {
        sh(&format!(
            "btrfs subvolume create {0}/@ >/dev/null && btrfs subvolume create {0}/@home >/dev/null",
            m.display()
        ));
        debian_root(
            &m.join("@"),
            "/dev/xvda1 / btrfs defaults,subvol=@ 0 0\n/dev/xvda1 /home btrfs defaults,noatime,subvol=@home 0 0\n",
        );
        std::fs::write(m.join("@home/marker"), "home subvolume").unwrap();
        // A symlink at the top level pointing out of the filesystem: never followed.
        std::os::unix::fs::symlink("/", m.join("escape")).unwrap();
    });
    let mut host = Host::default();
    let o = ferry_convert::open_system(&[img], &mut host, &t.path().join("w")).unwrap();
    assert_eq!(o.sys.root_subvol.as_deref(), Some("@"));
    let g = o.tree.guest();
    assert!(g.is_file("etc/os-release"));
    assert_eq!(g.read("home/marker").unwrap().as_deref(), Some("home subvolume"));
    assert!(serde_json::to_string(&o.sys).unwrap().contains("\"root_subvol\":\"@\""));
}

#[test]
fn two_candidate_roots_are_not_guessed_at() {
    if skip() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = disk(t.path(), |m| {
        for s in ["root-a", "root-b"] {
            sh(&format!("btrfs subvolume create {}/{s} >/dev/null", m.display()));
            debian_root(&m.join(s), &format!("/dev/xvda1 / btrfs subvol={s} 0 0\n"));
        }
    });
    let mut host = Host::default();
    let e = ferry_convert::open_system(&[img], &mut host, &t.path().join("w")).err().unwrap();
    assert!(format!("{e:#}").contains("no partition holds a Linux root"), "{e:#}");
}

/// `@` beside snapshots of itself (apt-btrfs-snapshot's `@apt-snapshot-…`) is the root.
#[test]
fn at_is_the_root_beside_its_snapshots() {
    if skip() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = disk(t.path(), |m| {
        for s in ["@", "@apt-snapshot-2026-12-01_10:00:00"] {
            sh(&format!("btrfs subvolume create '{}/{s}' >/dev/null", m.display()));
            debian_root(&m.join(s), &format!("/dev/xvda1 / btrfs subvol={s} 0 0\n"));
        }
    });
    let mut host = Host::default();
    let o = ferry_convert::open_system(&[img], &mut host, &t.path().join("w")).unwrap();
    assert_eq!(o.sys.root_subvol.as_deref(), Some("@"));
}

/// A candidate that does not mount (here an ext4 with an incompatible feature this kernel does
/// not know) is named in the error with the kernel's reason, instead of a bare "no root".
#[test]
fn a_root_that_does_not_mount_is_named() {
    if skip() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("disk.img");
    sh(&format!("truncate -s 100M {0} && sgdisk -n1:2048:0 -t1:8300 {0} >/dev/null", img.display()));
    let fs = t.path().join("fs.img");
    sh(&format!("truncate -s 64M {0} && mkfs.ext4 -q -F {0}", fs.display()));
    // s_feature_incompat (superblock offset 0x60) gains an unknown bit.
    sh(&format!(
        "printf '\\x80' | dd of={} bs=1 seek=$((1024 + 0x63)) count=1 conv=notrunc status=none",
        fs.display()
    ));
    sh(&format!("dd if={} of={} bs=1M seek=1 conv=notrunc,sparse status=none", fs.display(), img.display()));
    let mut host = Host::default();
    let e = ferry_convert::open_system(&[img], &mut host, &t.path().join("w")).err().unwrap();
    let e = format!("{e:#}");
    assert!(e.contains("these did not mount: /dev/loop"), "{e}");
}
