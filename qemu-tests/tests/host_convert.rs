//! `ferry-init convert --disk IMG` on a host without partition scanning: each partition gets
//! a loop device, the image is repartitioned for its new size, the system converted with its
//! own tools, and then the image boots under QEMU on virtio. Without `--nic` the interface keeps
//! its kernel name (net.ifnames=0), so the static address stays on eth0.

use ferry_qemu_tests::{binary, fixture, Bus, Disk, VmBuilder};
use std::process::Command;
use std::time::Duration;

const MIB: u64 = 1 << 20;

#[test]
fn host_mode_converts_an_image_that_then_boots_on_virtio() {
    let t = tempfile::tempdir().unwrap();
    let src = fixture::debian_xen("bookworm", 2048, "gpt-bios-ext4").unwrap();
    let img = t.path().join("disk.img");
    fixture::copy(&src, &img).unwrap();
    // The new VM's disk is larger: the backup GPT is no longer at the end.
    std::fs::OpenOptions::new().write(true).open(&img).unwrap().set_len(3072 * MIB).unwrap();

    let work = t.path().join("work");
    let convert = || {
        Command::new(binary("ferry-init"))
            .args(["convert", "--workdir"])
            .arg(&work)
            .arg("--disk")
            .arg(&img)
            .output()
            .unwrap()
    };
    let out = convert();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let rep: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(rep["repartition"][0]["grown"]["number"], 2, "{rep:#}");
    assert!(rep["changes"]["files"].as_array().unwrap().iter().any(|f| f == "etc/fstab"), "{rep:#}");
    // No loop device is left behind.
    let loops = Command::new("losetup").arg("-a").output().unwrap();
    assert!(!String::from_utf8_lossy(&loops.stdout).contains(img.to_str().unwrap()));

    // A second run changes nothing.
    let again = convert();
    let rep2: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(rep2["already_converted"], true, "{rep2:#}");

    let mut vm =
        VmBuilder::new("host-converted").disk(Disk::new(&img, Bus::Virtio, "DISK0")).start().unwrap();
    vm.wait_serial("FERRY-MARKER multi-user", Duration::from_secs(300)).unwrap();
    let serial = vm.serial();
    let line = serial.lines().find(|l| l.contains("FERRY-MARKER")).unwrap();
    assert!(line.contains("root=/dev/vda2 "), "{line}");
    assert!(line.contains("cmdline_root=UUID="), "{line}");
    assert!(line.contains("eth0=10.0.2.15/24"), "{line}");
    let size: u64 =
        line.split_whitespace().find_map(|w| w.strip_prefix("rootsize=")).unwrap().parse().unwrap();
    assert!(size > 2800 * MIB, "{line}");
}
