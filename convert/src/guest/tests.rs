//! Crafted hostile guest trees: symlinks out of the root (absolute and relative), `..` in
//! mount points, a FIFO where a file should be. Nothing outside the root is read or changed.

use super::*;
use std::os::unix::fs::symlink;

struct World {
    _t: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

fn world() -> World {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let outside = t.path().join("outside");
    std::fs::create_dir_all(root.join("etc/network")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "host secret\n").unwrap();
    std::fs::write(root.join("etc/real-fstab"), "UUID=1 / ext4 defaults 0 1\n").unwrap();
    symlink("/etc/real-fstab", root.join("etc/fstab")).unwrap();
    symlink(outside.join("secret"), root.join("etc/abs-out")).unwrap();
    symlink(
        "../../../../../..".to_string() + outside.join("secret").to_str().unwrap(),
        root.join("etc/rel-out"),
    )
    .unwrap();
    symlink(&outside, root.join("etc/dir-out")).unwrap();
    nix::unistd::mkfifo(&root.join("etc/inittab"), Mode::from_bits_truncate(0o644)).unwrap();
    World { _t: t, root, outside }
}

fn outside_untouched(w: &World) {
    let names: Vec<_> = std::fs::read_dir(&w.outside).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("secret")]);
    assert_eq!(std::fs::read_to_string(w.outside.join("secret")).unwrap(), "host secret\n");
}

#[test]
fn symlinks_resolve_inside_the_root() {
    let w = world();
    let g = GuestRoot::open(&w.root).unwrap();
    // An absolute symlink is resolved against the guest root.
    assert_eq!(g.read("/etc/fstab").unwrap().unwrap(), "UUID=1 / ext4 defaults 0 1\n");
    // Symlinks pointing out of the root find nothing (the same path inside the root).
    assert_eq!(g.read("etc/abs-out").unwrap(), None);
    assert_eq!(g.read("etc/rel-out").unwrap(), None);
    assert_eq!(g.read("etc/dir-out/secret").unwrap(), None);
    assert_eq!(g.read("../outside/secret").unwrap(), None);
    assert!(g.list("etc/dir-out").unwrap().is_empty());
    outside_untouched(&w);
}

#[test]
fn writes_stay_inside_and_follow_links_within() {
    let w = world();
    let g = GuestRoot::open(&w.root).unwrap();
    g.backup_once("etc/fstab").unwrap();
    g.write("etc/fstab", b"UUID=2 / ext4 defaults 0 1\n").unwrap();
    // The link is kept and its target (inside) changed; the backup is the original.
    assert!(std::fs::symlink_metadata(w.root.join("etc/fstab")).unwrap().file_type().is_symlink());
    assert_eq!(
        std::fs::read_to_string(w.root.join("etc/real-fstab")).unwrap(),
        "UUID=2 / ext4 defaults 0 1\n"
    );
    assert_eq!(
        std::fs::read_to_string(w.root.join("var/lib/ferry/pre-ferry/etc/fstab")).unwrap(),
        "UUID=1 / ext4 defaults 0 1\n"
    );
    assert!(!g.backup_once("etc/fstab").unwrap(), "a second backup must keep the first original");
    // Writing through a link that points out creates nothing outside.
    assert!(g.write("etc/dir-out/secret", b"x").is_err());
    g.write("etc/abs-out", b"replaced\n").unwrap();
    g.create_dir_all("../../outside").unwrap();
    g.write("../../outside/new", b"x").unwrap();
    assert!(w.root.join("outside/new").exists(), "`..` stops at the guest root");
    outside_untouched(&w);
    // Removing a link removes the link, never its target.
    assert!(g.remove("etc/fstab").unwrap());
    assert!(w.root.join("etc/real-fstab").exists());
    assert!(!g.remove("etc/fstab").unwrap());
    std::fs::create_dir_all(w.root.join("opt/tools/bin")).unwrap();
    symlink(&w.outside, w.root.join("opt/tools/bin/out")).unwrap();
    assert!(g.remove("opt/tools").unwrap());
    outside_untouched(&w);
}

#[test]
fn backups_keep_mode_and_live_outside_config_dirs() {
    use std::os::unix::fs::PermissionsExt;
    let w = world();
    let g = GuestRoot::open(&w.root).unwrap();
    let secret = w.root.join("etc/network/wifi.conf");
    std::fs::write(&secret, "psk=hunter2\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(g.backup_once("etc/network/wifi.conf").unwrap());
    let b = w.root.join("var/lib/ferry/pre-ferry/etc/network/wifi.conf");
    assert_eq!(std::fs::metadata(&b).unwrap().permissions().mode() & 0o777, 0o600);
    g.write("etc/network/wifi.conf", b"psk=other\n").unwrap();
    assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(g.list("etc/network").unwrap(), vec!["wifi.conf".to_string()]);
    // A dangling link replaced by a new file gets 0644, not the link's 0777.
    symlink("/nowhere", w.root.join("etc/dangling")).unwrap();
    g.write("etc/dangling", b"x").unwrap();
    assert_eq!(std::fs::metadata(w.root.join("etc/dangling")).unwrap().permissions().mode() & 0o777, 0o644);
}

#[test]
fn special_files_are_refused() {
    let w = world();
    let g = GuestRoot::open(&w.root).unwrap();
    assert_eq!(g.kind("etc/inittab").unwrap(), Some(Kind::Other));
    let e = format!("{:#}", g.read("etc/inittab").unwrap_err());
    assert!(e.contains("/etc/inittab") && e.contains("not a regular file"), "{e}");
    let e = format!("{:#}", g.write("etc/inittab", b"x").unwrap_err());
    assert!(e.contains("/etc/inittab"), "{e}");
    // A link to a device node inside the tree is refused the same way.
    symlink("/etc/inittab", w.root.join("etc/securetty")).unwrap();
    assert!(g.read("etc/securetty").is_err());
    // Not UTF-8: an error naming the file, never "absent".
    std::fs::write(w.root.join("etc/hosts"), b"127.0.0.1 \xff\n").unwrap();
    let e = format!("{:#}", g.read("etc/hosts").unwrap_err());
    assert!(e.contains("/etc/hosts") && e.contains("UTF-8"), "{e}");
    // A directory where a file is expected.
    assert!(g.read("etc/network").is_err());
}

#[test]
fn mount_points_resolve_inside() {
    let w = world();
    let g = GuestRoot::open(&w.root).unwrap();
    let e = format!("{:#}", g.mount_point("/../../x").unwrap_err());
    assert!(e.contains("climbs out"), "{e}");
    assert_eq!(g.mount_point("/srv/data").unwrap(), g.path().join("srv/data"));
    // A link out of the root points at nothing inside it: refused, nothing made outside.
    symlink(&w.outside, w.root.join("mnt")).unwrap();
    let e = format!("{:#}", g.mount_point("/mnt/disk").unwrap_err());
    assert!(e.contains("/mnt") && e.contains("symlink"), "{e}");
    // A link within the root is followed.
    symlink("/srv", w.root.join("data")).unwrap();
    assert_eq!(g.mount_point("/data/x").unwrap(), g.path().join("srv/x"));
    assert!(g.mount_point("/").is_err());
    outside_untouched(&w);
}
