//! Root-only: real ext4/XFS images on loop devices, grown online with the kernel ioctls
//! (`ferry_convert::grow::online`) and checked with e2fsck / xfs_repair.

use ferry_convert::grow::online::{grow_mounted, Fs};
use nix::mount::{mount, umount, umount2, MntFlags, MsFlags};
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loop device, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(img: &Path) -> Loop {
        Loop(run("losetup", &["--show", "-f", img.to_str().unwrap()]).trim().to_string())
    }
    fn path(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A mount, unmounted on drop unless already unmounted.
struct Mounted {
    dir: PathBuf,
    active: bool,
}

impl Mounted {
    fn new(src: &Path, dir: &Path, fstype: &str) -> Mounted {
        fs::create_dir_all(dir).unwrap();
        mount(Some(src), dir, Some(fstype), MsFlags::empty(), None::<&str>)
            .unwrap_or_else(|e| panic!("mount {} on {}: {e}", src.display(), dir.display()));
        Mounted { dir: dir.to_path_buf(), active: true }
    }
    fn unmount(&mut self) {
        self.active = false;
        // A just-finished resize can hold the mount busy for a moment.
        for _ in 0..40 {
            match umount(&self.dir) {
                Err(nix::errno::Errno::EBUSY) => std::thread::sleep(std::time::Duration::from_millis(50)),
                r => return r.unwrap(),
            }
        }
        umount(&self.dir).unwrap();
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.active && umount(&self.dir).is_err() {
            let _ = umount2(&self.dir, MntFlags::MNT_DETACH);
        }
    }
}

fn total_bytes(dir: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(dir).unwrap();
    st.blocks() * st.fragment_size()
}

/// Whether CAP_SYS_RESOURCE (bit 24) is in this process's effective set.
fn has_cap_sys_resource() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap();
    u64::from_str_radix(eff.trim(), 16).unwrap() & (1 << 24) != 0
}

fn fs_name(kind: Fs) -> &'static str {
    match kind {
        Fs::Ext => "ext4",
        Fs::Xfs => "xfs",
        Fs::Btrfs => "btrfs",
    }
}

/// A fresh sparse image of `mib` MiB formatted as `kind`, looped and mounted.
/// Fields drop in declaration order: unmount, then detach, then delete.
struct Fixture {
    mnt: Mounted,
    lo: Loop,
    img: PathBuf,
    _tmp: tempfile::TempDir,
}

fn fixture(kind: Fs, mib: u64) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("fs.img");
    OpenOptions::new().create_new(true).write(true).open(&img).unwrap().set_len(mib * MIB).unwrap();
    let img_s = img.to_str().unwrap();
    match kind {
        Fs::Ext => run("mkfs.ext4", &["-q", "-F", img_s]),
        Fs::Xfs => run("mkfs.xfs", &["-q", "-f", img_s]),
        Fs::Btrfs => run("mkfs.btrfs", &["-q", "-f", img_s]),
    };
    let lo = Loop::attach(&img);
    let mnt = Mounted::new(lo.path(), &tmp.path().join("mnt"), fs_name(kind));
    Fixture { mnt, lo, img, _tmp: tmp }
}

fn grow_doubles(kind: Fs, mib: u64) {
    let mut fx = fixture(kind, mib);
    let data: Vec<u8> = (0..3 * MIB as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let file = fx.mnt.dir.join("data.bin");
    fs::write(&file, &data).unwrap();
    let before = total_bytes(&fx.mnt.dir);

    OpenOptions::new().write(true).open(&fx.img).unwrap().set_len(2 * mib * MIB).unwrap();
    run("losetup", &["-c", &fx.lo.0]);
    let res = grow_mounted(&fx.mnt.dir, fx.lo.path(), kind);
    if kind == Fs::Ext && !has_cap_sys_resource() {
        // ext4_resize_begin() demands CAP_SYS_RESOURCE; without it the kernel
        // refuses (resize2fs fails the same way). Check the error is clear.
        let err = format!("{:#}", res.unwrap_err());
        eprintln!("SKIPPED ext4 growth (no CAP_SYS_RESOURCE): {err}");
        assert!(err.contains("EPERM") && err.contains(fx.mnt.dir.to_str().unwrap()), "{err}");
        assert_eq!(total_bytes(&fx.mnt.dir), before);
        fx.mnt.unmount();
        run("e2fsck", &["-fn", &fx.lo.0]);
        return;
    }
    let g = res.unwrap();
    let after = total_bytes(&fx.mnt.dir);
    eprintln!("{kind:?}: {g:?}; statvfs total {before} -> {after} ({:.3}x)", after as f64 / before as f64);

    assert_eq!(g.old_bytes, mib * MIB);
    assert!(g.new_bytes <= 2 * mib * MIB && g.new_bytes >= 2 * mib * MIB * 97 / 100, "{g:?}");
    // statvfs excludes fixed metadata (journal/log) and the new groups'
    // inode tables, so the total should rise by 90-100% of the added bytes.
    let added = mib * MIB;
    assert!(after - before <= added && after - before >= added * 9 / 10, "statvfs {before} -> {after}");
    assert!(after as f64 >= 1.9 * before as f64, "statvfs {before} -> {after}");
    assert_eq!(fs::read(&file).unwrap(), data);

    fx.mnt.unmount();
    match kind {
        Fs::Ext => run("e2fsck", &["-fn", &fx.lo.0]),
        Fs::Xfs => run("xfs_repair", &["-n", &fx.lo.0]),
        Fs::Btrfs => run("btrfs", &["check", "--readonly", &fx.lo.0]),
    };
}

fn noop_when_not_larger(kind: Fs, mib: u64) {
    let fx = fixture(kind, mib);
    let g = grow_mounted(&fx.mnt.dir, fx.lo.path(), kind).unwrap();
    assert_eq!((g.old_bytes, g.new_bytes), (mib * MIB, mib * MIB));
    // The image file itself (what `mount -o loop` would record) works too.
    let g = grow_mounted(&fx.mnt.dir, &fx.img, kind).unwrap();
    assert_eq!(g.old_bytes, g.new_bytes);
}

#[test]
fn ext4_grows_online() {
    grow_doubles(Fs::Ext, 64);
}

#[test]
fn xfs_grows_online() {
    grow_doubles(Fs::Xfs, 320);
}

/// btrfs counts its space in chunks, so statvfs moves by less than the added bytes: the device
/// size btrfs records (its superblock) is what must follow the device.
#[test]
fn btrfs_grows_online() {
    let mut fx = fixture(Fs::Btrfs, 256);
    fs::write(fx.mnt.dir.join("data.bin"), vec![7u8; MIB as usize]).unwrap();
    let before = total_bytes(&fx.mnt.dir);
    OpenOptions::new().write(true).open(&fx.img).unwrap().set_len(512 * MIB).unwrap();
    run("losetup", &["-c", &fx.lo.0]);
    let g = grow_mounted(&fx.mnt.dir, fx.lo.path(), Fs::Btrfs).unwrap();
    assert_eq!((g.old_bytes, g.new_bytes), (256 * MIB, 512 * MIB));
    let after = total_bytes(&fx.mnt.dir);
    assert!(after as f64 >= 1.8 * before as f64, "statvfs {before} -> {after}");
    run("sync", &[]);
    let again = grow_mounted(&fx.mnt.dir, fx.lo.path(), Fs::Btrfs).unwrap();
    assert_eq!((again.old_bytes, again.new_bytes), (512 * MIB, 512 * MIB), "recorded in the superblock");
    assert_eq!(fs::read(fx.mnt.dir.join("data.bin")).unwrap(), vec![7u8; MIB as usize]);
    fx.mnt.unmount();
    run("btrfs", &["check", "--readonly", &fx.lo.0]);
}

#[test]
fn ext4_noop_when_device_not_larger() {
    noop_when_not_larger(Fs::Ext, 64);
}

#[test]
fn xfs_noop_when_device_not_larger() {
    noop_when_not_larger(Fs::Xfs, 320);
}

#[test]
fn wrong_fs_type_and_device_are_rejected() {
    let fx = fixture(Fs::Ext, 64);
    let err = format!("{:#}", grow_mounted(&fx.mnt.dir, fx.lo.path(), Fs::Xfs).unwrap_err());
    assert!(err.contains(fx.mnt.dir.to_str().unwrap()) && err.contains("XFS"), "{err}");
    let err = format!("{:#}", grow_mounted(&fx.mnt.dir, Path::new("/dev/null"), Fs::Ext).unwrap_err());
    assert!(err.contains("/dev/null"), "{err}");
}

#[test]
fn tmpfs_mountpoint_is_unsupported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tmpfs");
    let _mnt = Mounted::new(Path::new("tmpfs"), &dir, "tmpfs");
    let dev = tmp.path().join("dev.img");
    fs::write(&dev, vec![0u8; 4096]).unwrap();
    let err = format!("{:#}", grow_mounted(&dir, &dev, Fs::Ext).unwrap_err());
    assert!(err.contains(dir.to_str().unwrap()), "{err}");
    let missing = tmp.path().join("missing");
    let err = format!("{:#}", grow_mounted(&missing, &dev, Fs::Xfs).unwrap_err());
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
}
