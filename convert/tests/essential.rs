//! Essential steps are never lost:
//! - a migrated system that mounts XFS without xfsprogs (and has no e2fsprogs either) is still
//!   grown — by the kernel's ioctls, never the guest's tools — and converted (root: a real XFS
//!   image on a loop device, mounted through `mount::Tree`);
//! - an improving step that fails (purging guest tools) leaves a converted system, with the
//!   initramfs and bootloader steps done and a warning in the log (no root: a temp-dir tree).

use ferry_convert::cmd::Recorder;
use ferry_convert::guest::GuestRoot;
use ferry_convert::machine::GrubMode;
use ferry_convert::nics::Nics;
use ferry_convert::probe::Part;
use ferry_convert::rewrite::DevMap;
use ferry_convert::steps::{Log, Outcome};
use ferry_convert::{grow, inspect, lvm, mount, tree};
use ferry_formats::FsType;
use std::path::{Path, PathBuf};
mod common;
use common::{sh, Loop};

const KERNEL: &str = "6.1.0-18-amd64";
const UUID: &str = "5b0e2a9c-3f6d-4e21-9c1b-7a2f4e6d8c01";

/// A minimal Debian 12 tree: root on XFS by UUID, static eth0, initramfs-tools, GRUB; no
/// filesystem tools at all.
fn debian_tree(root: &Path) {
    let w = |p: &str, s: &str| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    };
    w("etc/os-release", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n");
    w("etc/fstab", &format!("UUID={UUID} / xfs defaults 0 1\n/dev/xvda2 none swap sw 0 0\n"));
    w("etc/network/interfaces", "auto eth0\niface eth0 inet static\n    address 192.0.2.10/24\n");
    w("etc/default/grub", "GRUB_CMDLINE_LINUX=\"console=hvc0\"\n");
    w("etc/initramfs-tools/modules", "xen-blkfront\n");
    w("usr/sbin/update-initramfs", "");
    w("usr/sbin/grub-mkconfig", "");
    w(&format!("boot/vmlinuz-{KERNEL}"), "");
    w(
        &format!("lib/modules/{KERNEL}/modules.dep"),
        "kernel/drivers/virtio/virtio_pci.ko:\nkernel/drivers/block/virtio_blk.ko:\n\
         kernel/drivers/scsi/virtio_scsi.ko:\nkernel/drivers/net/virtio_net.ko:\n",
    );
    assert!(!root.join("sbin/xfs_growfs").exists() && !root.join("usr/sbin/xfs_growfs").exists());
}

fn job<'a>(g: &'a GuestRoot, rec: &'a Recorder, sys: &'a inspect::System, map: &'a DevMap) -> tree::Job<'a> {
    tree::Job {
        guest: g,
        run: rec,
        sys,
        map,
        root_fs: FsType::Xfs,
        root_uuid: UUID,
        nics: &Nics::Kernel,
        grub: GrubMode::Regenerate,
        boot_code: vec![Path::new("/dev/vda")],
        hooks: &[],
        layout_changed: true,
    }
}

#[test]
fn xfs_without_xfsprogs_grows_and_converts() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root (loop devices, mounts)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("root.img");
    sh(&format!("truncate -s 320M {0} && mkfs.xfs -q -f -m uuid={UUID} {0}", img.display()));
    let build = t.path().join("build");
    std::fs::create_dir_all(&build).unwrap();
    {
        let l = Loop::attach(&img);
        sh(&format!("mount {} {}", l.0, build.display()));
        debian_tree(&build);
        sh(&format!("umount {}", build.display()));
    }
    // The new disk is twice as big.
    sh(&format!("truncate -s 640M {}", img.display()));
    let l = Loop::attach(&img);
    let part = Part {
        dev: PathBuf::from(&l.0),
        disk: 0,
        number: 1,
        fstype: Some(FsType::Xfs),
        uuid: UUID.into(),
        label: String::new(),
        aliases: Vec::new(),
    };
    let map = DevMap::default();
    let rec = Recorder::default();
    let at = t.path().join("root");
    {
        let tree = mount::Tree::mount(&part, std::slice::from_ref(&part), &map, &at).unwrap();
        let grown = grow::grow(&tree, &rec, &part, &part, &lvm::Active::default()).unwrap();
        assert!(grown.as_deref().unwrap_or("").contains("xfs"), "{grown:?}");
        assert!(rec.log.lock().unwrap().is_empty(), "growth ran guest tools: {:?}", rec.log);
        let st = nix::sys::statvfs::statvfs(&at).unwrap();
        assert!(st.blocks() * st.fragment_size() > 500 << 20, "not grown");
        let sys = inspect::inspect(tree.guest()).unwrap();
        let mut log = Log::default();
        let done = tree::run(&job(tree.guest(), &rec, &sys, &map), &mut log).unwrap();
        assert!(log.warnings.is_empty(), "{:?}", log.warnings);
        let cmds = rec.log.lock().unwrap().clone();
        assert!(cmds.contains(&format!("chroot update-initramfs -u -k {KERNEL}")), "{cmds:?}");
        assert!(cmds.iter().any(|c| c.starts_with("chroot grub-mkconfig")), "{cmds:?}");
        assert!(!cmds.iter().any(|c| c.contains("xfs_growfs") || c.contains("resize2fs")), "{cmds:?}");
        assert!(done.changes.files.contains(&"etc/default/grub".to_string()));
    }
    sh(&format!("xfs_repair -n {}", l.0));
}

/// Runs the file steps on a temp-dir Debian tree with a runner answering `answers`.
fn run_on_tree(
    answers: Vec<(&str, Result<&str, &str>)>,
) -> (tempfile::TempDir, Recorder, Log, anyhow::Result<tree::Done>) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    debian_tree(&root);
    let g = GuestRoot::open(&root).unwrap();
    let sys = inspect::inspect(&g).unwrap();
    let map = DevMap::default();
    let answers =
        answers.into_iter().map(|(p, r)| (p.to_string(), r.map(String::from).map_err(String::from)));
    let rec = Recorder { answers: answers.collect(), ..Recorder::default() };
    let mut log = Log::default();
    let r = tree::run(&job(&g, &rec, &sys, &map), &mut log);
    (t, rec, log, r)
}

#[test]
fn a_failing_improving_step_is_a_warning() {
    let (t, rec, log, r) = run_on_tree(vec![
        ("chroot dpkg-query -W -f=${Status} open-vm-tools", Ok("install ok installed")),
        ("chroot dpkg --purge", Err("dpkg: error processing package open-vm-tools")),
    ]);
    r.unwrap();
    let step = log.steps.iter().find(|s| s.name == "guest-tools").unwrap();
    assert_eq!(step.outcome, Outcome::Warning);
    assert!(log.warnings[0].contains("open-vm-tools"), "{:?}", log.warnings);
    let cmds = rec.log.lock().unwrap().clone();
    let purge = cmds.iter().position(|c| c.starts_with("chroot dpkg --purge")).unwrap();
    let initramfs = cmds.iter().position(|c| c.starts_with("chroot update-initramfs")).unwrap();
    assert!(initramfs > purge, "{cmds:?}");
    assert!(cmds.iter().any(|c| c.starts_with("chroot grub-install --target=i386-pc /dev/vda")), "{cmds:?}");
    for s in ["initramfs", "bootloader", "network", "boot-config"] {
        assert_eq!(log.steps.iter().find(|x| x.name == s).unwrap().outcome, Outcome::Done, "{s}");
    }
    // The essential edits happened.
    let grub = std::fs::read_to_string(t.path().join("root/etc/default/grub")).unwrap();
    assert!(grub.contains("console=ttyS0") && grub.contains("net.ifnames=0"), "{grub}");
}

#[test]
fn a_failing_essential_step_aborts_and_says_which() {
    let (_t, rec, _, r) = run_on_tree(vec![("chroot update-initramfs", Err("out of space"))]);
    let e = format!("{:#}", r.err().unwrap());
    assert!(e.contains("step initramfs") && e.contains("out of space"), "{e}");
    assert!(!rec.log.lock().unwrap().iter().any(|c| c.contains("grub-mkconfig")));
}
