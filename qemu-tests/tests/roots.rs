//! Roots on more than a plain partition, each migrated onto a larger disk, converted with
//! `ferry-init convert` and booted alone on virtio to multi-user:
//! - btrfs, root in subvolume `@` and /home in `@home` (Debian's and Ubuntu's installer layout):
//!   found in its subvolume, mounted with fstab's `subvol=` options, the btrfs module kept in the
//!   initramfs, `root=` by UUID with `rootflags=subvol=@` kept, the filesystem grown with the
//!   partition (BTRFS_IOC_RESIZE), GRUB still reading its files from inside `@`.
//!
//! (LVM roots need device-mapper, which host mode may lack: those go through the appliance, in
//! `convert.rs`.)

use ferry_qemu_tests::{binary, fixture, stage, Bus, Disk, VmBuilder};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const MIB: u64 = 1 << 20;
const MARKER: &str = "FERRY-MARKER multi-user";

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}="))).unwrap_or("")
}

/// `ferry-init convert` of `img` grown to `mib`; the conversion report.
fn convert(img: &Path, mib: u64, work: &Path) -> serde_json::Value {
    std::fs::OpenOptions::new().write(true).open(img).unwrap().set_len(mib * MIB).unwrap();
    let out = Command::new(binary("ferry-init"))
        .args(["convert", "--workdir"])
        .arg(work)
        .arg("--disk")
        .arg(img)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stage("converted");
    serde_json::from_str(&stdout).unwrap()
}

/// Boots `img` alone on virtio; the marker line.
fn boot(img: &Path, name: &str) -> String {
    let mut vm = VmBuilder::new(name).disk(Disk::new(img, Bus::Virtio, "DISK0")).start().unwrap();
    vm.wait_serial(MARKER, Duration::from_secs(400)).unwrap();
    stage("booted");
    let serial = vm.serial();
    serial.lines().find(|l| l.contains(MARKER)).unwrap().trim().to_string()
}

#[test]
fn btrfs_subvolume_root_boots_on_virtio() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("disk.img");
    fixture::copy(&fixture::btrfs_root().unwrap(), &img).unwrap();
    let rep = convert(&img, 3072, &t.path().join("work"));
    assert_eq!(rep["system"]["root_subvol"], "@", "{rep:#}");
    let grown = rep["grown_filesystem"].as_str().unwrap_or("");
    assert!(grown.contains("btrfs") && grown.contains("→"), "{rep:#}");
    let line = boot(&img, "btrfs-root");
    // The root is the grown btrfs subvolume on the virtio disk, named by UUID on the kernel line.
    assert!(field(&line, "root").starts_with("/dev/vda2[/@]"), "{line}");
    assert!(field(&line, "cmdline_root").starts_with("UUID="), "{line}");
    let size: u64 = field(&line, "rootsize").parse().unwrap();
    assert!(size > 2560 * MIB, "root not grown: {line}");
    assert!(field(&line, "addrs").contains("eth0=10.0.2.15/24"), "{line}");
}
