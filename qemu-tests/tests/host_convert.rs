//! `ferry-init convert --disk IMG` on a host without partition scanning: each partition gets
//! a loop device, the image is repartitioned for its new size, the system converted with its
//! own tools, and then the image boots under QEMU on virtio. Without `--nic` the interface keeps
//! its kernel name (net.ifnames=0), so the static address stays on eth0. `ferry-init rehearse`
//! proves it: the unconverted copy fails (no root device), the converted one passes with its
//! root on /dev/vda2, grown, and the static address on eth0; neither rehearsal changes the disk.

use ferry_qemu_tests::{accel_name, binary, fixture, guest_lock, stage};
use std::path::Path;
use std::process::Command;

const MIB: u64 = 1 << 20;

fn sha256(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

/// `ferry-init rehearse --json` on `img`: its exit code and report; the disk is unchanged.
fn rehearse(img: &Path, work: &Path, timeout: u32) -> (i32, serde_json::Value) {
    let before = sha256(img);
    let _guest = guest_lock();
    let out = Command::new(binary("ferry-init"))
        .args(["rehearse", "--json", "--accel", accel_name(), "--timeout", &timeout.to_string(), "--workdir"])
        .arg(work)
        .arg("--disk")
        .arg(img)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rep: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(sha256(img), before, "rehearse changed the disk");
    assert!(!work.join("overlay-0.qcow2").exists(), "overlay left behind");
    (out.status.code().unwrap(), rep)
}

#[test]
fn host_mode_converts_an_image_that_then_boots_on_virtio() {
    let t = tempfile::tempdir().unwrap();
    let src = fixture::debian_xen("bookworm", 2048, "gpt-bios-ext4").unwrap();
    let img = t.path().join("disk.img");
    fixture::copy(&src, &img).unwrap();
    // The new VM's disk is larger: the backup GPT is no longer at the end.
    std::fs::OpenOptions::new().write(true).open(&img).unwrap().set_len(3072 * MIB).unwrap();

    // Unconverted, it cannot find its root on virtio: the rehearsal fails and says why.
    let (code, rep) = rehearse(&img, &t.path().join("rehearse-0"), 120);
    assert_eq!((code, rep["verdict"].as_str()), (3, Some("fail")), "{rep:#}");
    let reasons = rep["reasons"].to_string();
    assert!(reasons.contains("no root device") && reasons.contains("root=/dev/xvda"), "{rep:#}");

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
    stage("converted");
    assert!(rep["changes"]["files"].as_array().unwrap().iter().any(|f| f == "etc/fstab"), "{rep:#}");
    // No loop device is left behind.
    let loops = Command::new("losetup").arg("-a").output().unwrap();
    assert!(!String::from_utf8_lossy(&loops.stdout).contains(img.to_str().unwrap()));

    // A second run changes nothing.
    let again = convert();
    let rep2: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(rep2["already_converted"], true, "{rep2:#}");

    let (code, rep) = rehearse(&img, &t.path().join("rehearse-1"), 600);
    assert_eq!((code, rep["verdict"].as_str()), (0, Some("pass")), "{rep:#}");
    stage("rehearsed");
    let f = &rep["findings"];
    assert_eq!(f["root"], "/dev/vda2", "{rep:#}");
    assert_eq!(f["state"], "running", "{rep:#}");
    assert!(f["addresses"].to_string().contains(r#"["eth0","10.0.2.15/24"]"#), "{rep:#}");
    assert_eq!(rep["configured_addresses"], serde_json::json!([["eth0", "10.0.2.15/24"]]), "{rep:#}");
    assert!(f["root_size"].as_u64().unwrap() > 2800 * MIB, "{rep:#}");
    assert!(std::path::Path::new(rep["console_log"].as_str().unwrap()).exists());
}
