//! System checks on fixture trees: a sound Debian 12, then one fault at a time.

use super::*;
use crate::check::host::Usage;
use ferry_convert::cmd::Recorder;
use std::fs;
use std::path::Path;

const K: &str = "6.1.0-27-amd64";

fn write(root: &Path, p: &str, data: &str) {
    let f = root.join(p);
    fs::create_dir_all(f.parent().unwrap()).unwrap();
    fs::write(f, data).unwrap();
}

/// A Debian 12 tree whose kernel has virtio modules, GRUB for BIOS and a 30 MiB initramfs.
fn debian(root: &Path) {
    write(
        root,
        "etc/os-release",
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
    );
    write(root, "etc/fstab", "UUID=1 / ext4 defaults 0 1\n");
    write(root, &format!("boot/vmlinuz-{K}"), "kernel");
    let f = fs::File::create(root.join(format!("boot/initrd.img-{K}"))).unwrap();
    f.set_len(30 << 20).unwrap();
    write(
        root,
        &format!("lib/modules/{K}/modules.dep"),
        "kernel/drivers/virtio/virtio_pci.ko.xz:\nkernel/drivers/block/virtio_blk.ko.xz:\nkernel/drivers/scsi/virtio_scsi.ko.xz:\nkernel/drivers/net/virtio_net.ko.xz:\n",
    );
    write(root, "usr/sbin/update-initramfs", "");
    write(root, "usr/sbin/grub-mkconfig", "");
    write(root, "usr/sbin/grub-install", "");
    write(root, "boot/grub/grub.cfg", "");
    write(root, "usr/lib/grub/i386-pc/boot.img", "");
}

fn host(root: &Path, free: u64, rec: Recorder) -> Host {
    let mut h = Host::system();
    h.root = root.into();
    h.arch = "x86_64".into();
    h.privileged = true;
    h.run = Box::new(rec);
    h.statfs =
        Box::new(move |_| Ok(Usage { size: 1 << 30, free, avail: free, files: 1000, files_free: 900 }));
    h
}

fn level(items: &[Item], id: &str) -> Level {
    items.iter().find(|i| i.id == id).unwrap_or_else(|| panic!("no {id} in {items:#?}")).level
}

#[test]
fn a_sound_debian_12_is_all_ok() {
    let t = tempfile::tempdir().unwrap();
    debian(t.path());
    fs::create_dir_all(t.path().join("var/lib/docker")).unwrap();
    let v = items(&host(t.path(), 500 << 20, Recorder::default()), &[]);
    assert!(v.iter().all(|i| i.level == Level::Ok), "{v:#?}");
    let ids: Vec<&str> = v.iter().map(|i| i.id).collect();
    assert_eq!(
        ids,
        [
            "architecture",
            "distribution",
            "kernel-virtio",
            "boot-files",
            "boot-space",
            "grub-mkconfig",
            "grub-boot-code",
            "containers"
        ]
    );
    let k = v.iter().find(|i| i.id == "kernel-virtio").unwrap();
    assert_eq!(k.values["default"], K);
    assert_eq!(v.iter().find(|i| i.id == "boot-space").unwrap().values["needed_bytes"], 45u64 << 20);
}

#[test]
fn a_kernel_without_virtio_is_critical() {
    let t = tempfile::tempdir().unwrap();
    debian(t.path());
    write(t.path(), &format!("lib/modules/{K}/modules.dep"), "kernel/drivers/block/xen-blkfront.ko:\n");
    let v = items(&host(t.path(), 500 << 20, Recorder::default()), &[]);
    assert_eq!(level(&v, "kernel-virtio"), Level::Critical);
    // A newer kernel without virtio next to one with it: the older boots, a Warning.
    write(
        t.path(),
        "boot/config-6.1.0-9-amd64",
        "CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_BLK=y\nCONFIG_SCSI_VIRTIO=y\nCONFIG_VIRTIO_NET=y\n",
    );
    write(t.path(), "boot/vmlinuz-6.1.0-9-amd64", "");
    let v = items(&host(t.path(), 500 << 20, Recorder::default()), &[]);
    assert_eq!(level(&v, "kernel-virtio"), Level::Warning);
    assert_eq!(v.iter().find(|i| i.id == "kernel-virtio").unwrap().values["default"], "6.1.0-9-amd64");
}

#[test]
fn a_full_boot_and_a_failing_grub_are_critical() {
    let t = tempfile::tempdir().unwrap();
    debian(t.path());
    let rec = Recorder {
        answers: vec![(
            "chroot env GRUB_DISABLE_OS_PROBER=true grub-mkconfig".into(),
            Err("/usr/sbin/grub-probe: error: failed to get canonical path of `/dev/xvda2'.".into()),
        )],
        ..Default::default()
    };
    // 40 MiB free for a 30 MiB initramfs: 45 MiB needed.
    let v = items(&host(t.path(), 40 << 20, rec), &[]);
    assert_eq!(level(&v, "boot-space"), Level::Critical);
    assert_eq!(level(&v, "grub-mkconfig"), Level::Critical);
    let g = v.iter().find(|i| i.id == "grub-mkconfig").unwrap();
    assert!(g.detail.contains("canonical path"), "{}", g.detail);
    // No BIOS boot code to install.
    fs::remove_file(t.path().join("usr/lib/grub/i386-pc/boot.img")).unwrap();
    let v = items(&host(t.path(), 500 << 20, Recorder::default()), &[]);
    assert_eq!(level(&v, "grub-boot-code"), Level::Critical);
}

#[test]
fn no_initramfs_tool_is_critical_and_other_distributions_warn() {
    let t = tempfile::tempdir().unwrap();
    debian(t.path());
    fs::remove_file(t.path().join("usr/sbin/update-initramfs")).unwrap();
    let v = items(&host(t.path(), 500 << 20, Recorder::default()), &[]);
    assert_eq!(level(&v, "distribution"), Level::Critical);
    assert_eq!(support("rocky", "9.4", Family::Rhel).0, Level::Warning);
    assert_eq!(support("debian", "12", Family::Debian).0, Level::Ok);
    assert_eq!(support("gentoo", "2.15", Family::Other).0, Level::Warning);
    assert_eq!(architecture("riscv64").level, Level::Critical);
    assert_eq!(architecture("aarch64").level, Level::Warning);
}

#[test]
fn uefi_needs_a_loader_on_the_esp() {
    let t = tempfile::tempdir().unwrap();
    debian(t.path());
    write(t.path(), "etc/fstab", "UUID=1 / ext4 defaults 0 1\nUUID=2 /boot/efi vfat umask=0077 0 1\n");
    let v = items(&host(t.path(), 500 << 20, Recorder::default()), &[]);
    assert_eq!(level(&v, "grub-boot-code"), Level::Critical);
    write(t.path(), "boot/efi/EFI/debian/shimx64.efi", "");
    let v = items(&host(t.path(), 500 << 20, Recorder::default()), &[]);
    assert_eq!(level(&v, "grub-boot-code"), Level::Ok);
}

/// A recorder the test can read after the host owns it.
struct Shared(std::sync::Arc<Recorder>);
impl ferry_convert::cmd::Runner for Shared {
    fn run(&self, root: Option<&Path>, argv: &[&str]) -> anyhow::Result<String> {
        self.0.run(root, argv)
    }
}

#[test]
fn grub2_mkconfig_runs_only_when_it_leaves_grubenv_alone() {
    let t = tempfile::tempdir().unwrap();
    debian(t.path());
    write(t.path(), "boot/grub2/grub.cfg", "");
    write(t.path(), "usr/sbin/grub2-install", "");
    let old = std::sync::Arc::new(Recorder::default());
    let mut h = host(t.path(), 500 << 20, Recorder::default());
    h.run = Box::new(Shared(old.clone()));
    let v = items(&h, &[]);
    assert_eq!(level(&v, "grub-mkconfig"), Level::Warning);
    assert!(!old.log.lock().unwrap().iter().any(|l| l.contains(" -o ")), "{:?}", old.log);
    let new = std::sync::Arc::new(Recorder {
        answers: vec![(
            "chroot grub2-mkconfig --help".into(),
            Ok("  --no-grubenv-update  do not update grubenv\n".into()),
        )],
        ..Default::default()
    });
    h.run = Box::new(Shared(new.clone()));
    let v = items(&h, &[]);
    assert_eq!(level(&v, "grub-mkconfig"), Level::Ok);
    let log = new.log.lock().unwrap().clone();
    assert!(
        log.iter().any(|l| l
            .starts_with("chroot env GRUB_DISABLE_OS_PROBER=true grub2-mkconfig --no-grubenv-update -o /")),
        "{log:?}"
    );
}
