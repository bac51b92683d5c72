//! A hostile migrated system, mounted for real (root: ext4 images on loop devices): an fstab
//! mount point with `..` that climbs out of the root is refused naming the fstab line, nothing
//! is mounted or created outside, and everything mounted so far is unmounted again; a config
//! file that is a symlink to a device node (`/etc/inittab -> /dev/…`, with the appliance's /dev
//! bound into the tree) is refused, never read.

use ferry_convert::fixes::{self, Changes};
use ferry_convert::mount::Tree;
use ferry_convert::probe::Part;
use ferry_convert::rewrite::DevMap;
use ferry_formats::FsType;
use std::path::{Path, PathBuf};
mod common;
use common::{sh, Loop};

const ROOT_UUID: &str = "0b6c1e3a-5d2f-4c8e-9a7b-1c2d3e4f5a60";
const DATA_UUID: &str = "0b6c1e3a-5d2f-4c8e-9a7b-1c2d3e4f5a61";

fn ext4(t: &Path, name: &str, uuid: &str) -> (PathBuf, Loop) {
    let img = t.join(name);
    sh(&format!("truncate -s 32M {0} && mkfs.ext4 -q -F -U {uuid} {0}", img.display()));
    let l = Loop::attach(&img);
    (img, l)
}

fn part(l: &Loop, number: u32, uuid: &str) -> Part {
    Part {
        dev: PathBuf::from(&l.0),
        disk: 0,
        number,
        fstype: Some(FsType::Ext4),
        uuid: uuid.into(),
        label: String::new(),
        aliases: Vec::new(),
    }
}

fn mounted_under(p: &Path) -> bool {
    let m = std::fs::read_to_string("/proc/self/mounts").unwrap();
    m.lines().any(|l| l.split_whitespace().nth(1).is_some_and(|mp| mp.starts_with(p.to_str().unwrap())))
}

#[test]
fn hostile_fstab_and_device_links() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root (loop devices, mounts)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (_, root_loop) = ext4(t.path(), "root.img", ROOT_UUID);
    let (_, data_loop) = ext4(t.path(), "data.img", DATA_UUID);
    let build = t.path().join("build");
    std::fs::create_dir_all(&build).unwrap();
    sh(&format!("mount {} {}", root_loop.0, build.display()));
    let fstab =
        format!("UUID={ROOT_UUID} / ext4 defaults 0 1\nUUID={DATA_UUID} /../../escape ext4 defaults 0 2\n");
    std::fs::create_dir_all(build.join("etc")).unwrap();
    std::fs::write(build.join("etc/fstab"), fstab).unwrap();
    std::os::unix::fs::symlink(&data_loop.0, build.join("etc/inittab")).unwrap();
    sh(&format!("umount {}", build.display()));

    let parts = [part(&root_loop, 1, ROOT_UUID), part(&data_loop, 2, DATA_UUID)];
    let at = t.path().join("work/root");
    let e = format!("{:#}", Tree::mount(&parts[0], &parts, &DevMap::default(), &at).err().unwrap());
    assert!(e.contains("/etc/fstab line 2") && e.contains("climbs out"), "{e}");
    assert!(!mounted_under(t.path()), "a mount was left behind");
    assert!(!t.path().join("escape").exists() && !t.path().join("work/escape").exists());

    // With a sane fstab the tree mounts; the device link is refused by the essential step.
    sh(&format!("mount {} {}", root_loop.0, build.display()));
    std::fs::write(build.join("etc/fstab"), format!("UUID={ROOT_UUID} / ext4 defaults 0 1\n")).unwrap();
    sh(&format!("umount {}", build.display()));
    {
        let tree = Tree::mount(&parts[0], &parts, &DevMap::default(), &at).unwrap();
        assert!(at.join(data_loop.0.trim_start_matches('/')).exists(), "/dev is bound into the tree");
        let mut c = Changes::default();
        let e = format!("{:#}", fixes::boot_config(tree.guest(), &DevMap::default(), &mut c).unwrap_err());
        assert!(e.contains("/etc/inittab") && e.contains("not the migrated system's"), "{e}");
        // Links into the appliance's own /proc and /dev, bound into the tree for chrooted tools:
        // never read (the kernel command line holds the token), never written.
        let g = tree.guest();
        std::os::unix::fs::symlink("/proc/cmdline", at.join("etc/securetty")).unwrap();
        let e = format!("{:#}", g.read("etc/securetty").unwrap_err());
        assert!(e.contains("/etc/securetty") && e.contains("not the migrated system's"), "{e}");
        std::fs::create_dir_all(at.join("etc/cloud")).unwrap();
        std::fs::write(at.join("etc/cloud/cloud.cfg"), "users: [default]\n").unwrap();
        std::os::unix::fs::symlink("/dev", at.join("etc/cloud/cloud.cfg.d")).unwrap();
        assert!(fixes::cloud_init_network(g, &mut c).is_err());
        assert!(!Path::new("/dev/99-ferry-network.cfg").exists());
        assert!(g.list("etc/cloud/cloud.cfg.d").is_err());
    }
    assert!(!mounted_under(t.path()), "a mount was left behind");
}
