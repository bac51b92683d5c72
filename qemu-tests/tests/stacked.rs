//! `ferry send` on stacked storage, for real: a small guest (the appliance's kernel, busybox,
//! the distribution's `lvm` and `mke2fs`, static `ferry` and `ferry-init`) makes an LVM volume
//! group on its first disk, mounts an ext4 LV, and sends the PV's disk to a receiver in the
//! same guest with `--freeze` — the LV's filesystem must be found through device-mapper and
//! frozen, and writable again afterwards. Then, in a chroot whose `/` is that LV, `ferry send`
//! without `--disk` must pick the PV's whole disk, not `/dev/dm-0`. (The host has no
//! device-mapper, so this runs under QEMU.)

use ferry_qemu_tests::{binary, run, sparse_file, Bus, Disk, VmBuilder};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MIB: u64 = 1 << 20;
const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
    "dm-mod",
    "crc16",
    "crc32c_generic",
    "mbcache",
    "jbd2",
    "ext4",
];

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /run/lock/lvm /run/lvm /tmp /mnt
for m in $(cat /modules); do insmod /mod/$m.ko || echo "insmod $m failed"; done
sleep 1
ip link set lo up
C='activation{udev_sync=0 udev_rules=0} devices{obtain_device_list_from_udev=0}'
/usr/sbin/lvm pvcreate -ff -y --config "$C" /dev/vda && /usr/sbin/lvm vgcreate --config "$C" vg /dev/vda && \
  /usr/sbin/lvm lvcreate -y --config "$C" -L 64M -n root vg || echo "LVM FAILED"
/usr/sbin/mke2fs -q -t ext4 /dev/mapper/vg-root && mount /dev/mapper/vg-root /mnt && echo hello > /mnt/a && sync
ferry-init receive --listen 127.0.0.1:8703 --token stacked-token-1 --target /dev/vdb --state-dir /run/st 2>/dev/null &
sleep 2
ferry send --to 127.0.0.1:8703 --token stacked-token-1 --disk /dev/vda --freeze --json > /tmp/out.json 2> /tmp/err.txt
echo "SEND-EXIT $?"
echo "RESULT $(grep '"event":"report"' /tmp/out.json)"
grep froze /tmp/err.txt
echo after > /mnt/b && sync && echo "WRITE-OK"
mkdir -p /mnt/proc /mnt/sys /mnt/dev /mnt/etc
mount --bind /proc /mnt/proc; mount --bind /sys /mnt/sys; mount --bind /dev /mnt/dev
cp /bin/ferry /mnt/ferry
echo "/dev/mapper/vg-root / ext4 defaults 0 1" > /mnt/etc/fstab
chroot /mnt /ferry send --to 127.0.0.1:1 --token stacked-token-1 2>&1 | sed 's/^/SYSDISKS /'
echo "GUEST-DONE"
poweroff -f
"#;

/// Copies `bin` and the shared libraries it needs into `root`.
fn with_libs(root: &Path, bin: &str) {
    let dst = root.join(bin.trim_start_matches('/'));
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(bin, &dst).unwrap();
    let ldd = run(Command::new("ldd").arg(bin)).unwrap();
    for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        let real = std::fs::canonicalize(lib).unwrap();
        let d = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(d.parent().unwrap()).unwrap();
        std::fs::copy(real, d).unwrap();
    }
}

fn initramfs(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("mod")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for b in ["ferry", "ferry-init"] {
        std::fs::copy(binary(b), root.join("bin").join(b)).unwrap();
    }
    for b in ["/usr/sbin/lvm", "/usr/sbin/mke2fs"] {
        with_libs(&root, b);
        let name = Path::new(b).file_name().unwrap();
        std::os::unix::fs::symlink(b, root.join("bin").join(name)).unwrap();
    }
    // The one kernel scripts/setup fetched (the appliance's).
    let mods = ferry_qemu_tests::cache_dir().join("kernel/lib/modules");
    let kernel = std::fs::read_dir(&mods).unwrap().flatten().next().expect("a kernel in the cache").path();
    for m in MODULES {
        let p = run(Command::new("find").arg(&kernel).args(["-name", &format!("{m}.ko")])).unwrap();
        let p = p.lines().next().unwrap_or_else(|| panic!("module {m} not found in {}", kernel.display()));
        std::fs::copy(p, root.join("mod").join(format!("{m}.ko"))).unwrap();
    }
    std::fs::write(root.join("modules"), MODULES.join("\n")).unwrap();
    std::fs::write(root.join("init"), INIT).unwrap();
    run(Command::new("chmod").arg("+x").arg(root.join("init"))).unwrap();
    let img = dir.join("initrd.img");
    run(Command::new("sh").arg("-c").arg(format!(
        "cd {} && find . | cpio -o -H newc --quiet > {}",
        root.display(),
        img.display()
    )))
    .unwrap();
    img
}

#[test]
fn freeze_and_system_disks_through_lvm() {
    let t = tempfile::tempdir().unwrap();
    let initrd = initramfs(t.path());
    let (pv, tgt) = (t.path().join("pv.img"), t.path().join("tgt.img"));
    sparse_file(&pv, 128 * MIB).unwrap();
    sparse_file(&tgt, 128 * MIB).unwrap();
    let vmlinuz = ferry_qemu_tests::appliance().join("vmlinuz");
    let mut vm = VmBuilder::new("stacked")
        .kernel(&vmlinuz, &initrd, "console=ttyS0 panic=-1 rdinit=/init")
        .no_nic()
        .disk(Disk::new(&pv, Bus::Virtio, "PV0"))
        .disk(Disk::new(&tgt, Bus::Virtio, "TGT0"))
        .start()
        .unwrap();
    vm.wait_serial("GUEST-DONE", Duration::from_secs(300)).unwrap();
    let serial = vm.serial();
    for l in serial.lines().filter(|l| l.contains("froze") || l.contains("SYSDISKS") || l.contains("thawed"))
    {
        eprintln!("guest: {l}");
    }
    assert!(serial.contains("SEND-EXIT 0"), "{serial}");
    let report = serial.lines().find_map(|l| l.split_once("RESULT ").map(|(_, r)| r.trim())).unwrap();
    let v: serde_json::Value = serde_json::from_str(report).unwrap_or_else(|e| panic!("{e}: {report}"));
    assert_eq!(v["report"]["frozen"], serde_json::json!(["/mnt"]), "{v:#}");
    assert_eq!(v["report"]["consistency"], "frozen", "{v:#}");
    assert!(serial.contains("WRITE-OK"), "the LV stayed frozen:\n{serial}");
    let sys: Vec<&str> = serial.lines().filter(|l| l.contains("SYSDISKS")).collect();
    assert!(sys.iter().any(|l| l.contains("source /dev/vda (holds /)")), "{sys:#?}");
    assert!(!sys.iter().any(|l| l.contains("/dev/dm-")), "{sys:#?}");
}
