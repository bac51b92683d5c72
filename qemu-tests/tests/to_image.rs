//! Migrating into image files: `ferry-init receive --image DIR --size 3G --format qcow2
//! --format vmdk` receives a Debian 12 Xen guest in two passes (a full pass, then a verified
//! delta pass that finalizes), converts it on the host, and writes both images and a
//! manifest. `qemu-img check` is clean, the manifest's SHA-256 and sizes match the files, and
//! the qcow2 boots on virtio: `ferry-init rehearse` passes it.

use ferry_qemu_tests::{accel_name, binary, fixture, free_port, guest_lock};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "image-test-token";

fn sha256(p: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

#[test]
fn a_debian_system_migrates_into_qcow2_and_vmdk_that_boot() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("source.img");
    fixture::copy(&fixture::debian_xen("bookworm", 2048, "gpt-bios-ext4").unwrap(), &src).unwrap();
    let out = t.path().join("images");
    let port = free_port();
    let mut rx = Command::new(binary("ferry-init"))
        .args(["receive", "--listen", &format!("127.0.0.1:{port}"), "--token", TOKEN, "--state-dir"])
        .arg(t.path().join("state"))
        .arg("--image")
        .arg(&out)
        .args(["--size", "3G", "--format", "qcow2", "--format", "vmdk"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(t.path().join("rx.log")).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(30), "receiver did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let send = |extra: &[&str]| {
        let o = Command::new(binary("ferry"))
            .args(["send", "--to", &format!("127.0.0.1:{port}"), "--token", TOKEN, "--json", "--disk"])
            .arg(&src)
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        let log = std::fs::read_to_string(t.path().join("rx.log")).unwrap_or_default();
        assert!(o.status.success(), "{stdout}\n{}\n{log}", String::from_utf8_lossy(&o.stderr));
        let rep = stdout.lines().rfind(|l| l.contains("\"report\"")).unwrap().to_string();
        serde_json::from_str::<serde_json::Value>(&rep).unwrap()["report"].clone()
    };
    let first = send(&["--no-finalize"]);
    assert_eq!(first["disks"][0]["mode"], "Full", "{first:#}");
    let last = send(&["--verify"]);
    assert_eq!(last["disks"][0]["mode"], "Delta", "{last:#}");
    assert_eq!(last["disks"][0]["verified"], true, "{last:#}");
    assert!(rx.wait().unwrap().success());

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest, last["receiver_report"]);
    assert_eq!(manifest["firmware"], "bios");
    assert_eq!(manifest["conversion"]["ok"], true);
    let images = manifest["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{manifest:#}");
    for (img, fmt) in images.iter().zip(["qcow2", "vmdk"]) {
        let file = out.join(img["file"].as_str().unwrap());
        assert_eq!(img["format"], fmt);
        assert_eq!(img["sha256"].as_str().unwrap(), sha256(&file));
        assert_eq!(img["source"].as_str().unwrap(), src.to_str().unwrap());
        let info = Command::new("qemu-img").args(["info", "--output=json"]).arg(&file).output().unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!((info["format"].as_str(), info["virtual-size"].as_u64()), (Some(fmt), Some(3 << 30)));
        assert_eq!(img["virtual_size"], 3u64 << 30);
        let check = Command::new("qemu-img").args(["check", "-f", fmt]).arg(&file).output().unwrap();
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    }
    // The raw staging file is gone (only images were asked for).
    assert!(!out.join("disk-0.raw").exists());

    let _guest = guest_lock();
    let r = Command::new(binary("ferry-init"))
        .args(["rehearse", "--json", "--accel", accel_name(), "--workdir"])
        .arg(t.path().join("rehearse"))
        .arg("--disk")
        .arg(out.join("disk-0.qcow2"))
        .output()
        .unwrap();
    let rep: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!((r.status.code(), rep["verdict"].as_str()), (Some(0), Some("pass")), "{rep:#}");
    assert_eq!(rep["findings"]["root"], "/dev/vda2", "{rep:#}");
}
