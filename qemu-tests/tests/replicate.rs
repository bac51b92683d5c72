//! `ferry check`, then `ferry send`, from the host into the booted appliance over forwarded
//! ports: the drill passes and changes nothing, the target disk ends up equal to the source on
//! every used block, and /status shows progress and the end.

use ferry_qemu_tests::{binary, free_port, run, sparse_file, Bus, Disk, VmBuilder};
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const TOKEN: &str = "qemu-replicate-token";

fn source_image(dir: &std::path::Path) -> std::path::PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let mut x = 0x1234_5678_9abc_def1u64;
    for i in 0..120 {
        let mut v = Vec::with_capacity(256 * 1024);
        while v.len() < 256 * 1024 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Half random, half text: something for zstd to do.
            if i % 2 == 0 {
                v.extend_from_slice(&x.to_le_bytes());
            } else {
                v.extend_from_slice(b"ferry!! ");
            }
        }
        std::fs::write(tree.join(format!("file{i}")), v).unwrap();
    }
    let img = dir.join("source.img");
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&tree).arg(&img).arg("256M")).unwrap();
    img
}

#[test]
fn send_into_the_appliance() {
    let t = tempfile::tempdir().unwrap();
    let src = source_image(t.path());
    let tgt = t.path().join("target.img");
    sparse_file(&tgt, 300 * MIB).unwrap();
    let (status, data) = (free_port(), free_port());
    let mut vm = VmBuilder::new("replicate")
        // A data disk (no system on it): receive only.
        .appliance(&format!("ip=dhcp ferry.token={TOKEN} ferry.after=wait ferry.convert=no"))
        .disk(Disk::new(&tgt, Bus::Virtio, "TARGET0"))
        .forward(status, "", 8080)
        .forward(data, "", 8703)
        .start()
        .unwrap();
    let st = vm.wait_phase(status, "receiving", Duration::from_secs(120)).unwrap();
    assert_eq!(st["receiver"]["state"], "waiting", "{st:#}");
    // ferry's own log hides the token (the kernel's echo of its command line is not ours).
    let serial = vm.serial();
    let start = serial.lines().find(|l| l.contains("ferry-init") && l.contains("starting")).unwrap();
    assert!(!start.contains(TOKEN) && start.contains("ferry.token=(hidden)"), "{start}");
    let fp = st["receiver"]["fingerprint"].as_str().unwrap().to_string();

    // The drill first: every data sync test against the booted appliance, and nothing written.
    let hash = || run(Command::new("sha256sum").arg(&tgt)).unwrap();
    let before = hash();
    let chk = Command::new(binary("ferry"))
        .args(["check", "--to", &format!("127.0.0.1:{data}"), "--status-port", &status.to_string()])
        .args(["--token", TOKEN, "--seconds", "1", "--json"])
        .arg("--disk")
        .arg(format!("{}=TARGET0", src.display()))
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&chk.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&chk.stderr)));
    assert_eq!(chk.status.code(), Some(0), "{report:#}");
    let item = |id: &str| report["items"].as_array().unwrap().iter().find(|i| i["id"] == id).unwrap().clone();
    assert_eq!(item("connect-status")["values"]["phase"], "receiving", "{report:#}");
    assert_eq!(item("authentication")["values"]["fingerprint"], fp.as_str(), "{report:#}");
    assert_eq!(item("authentication")["level"], "ok", "{report:#}");
    assert_eq!(item("target-plan")["values"]["target"], "vda", "{report:#}");
    assert!(item("network-throughput")["values"]["bytes_per_second"].as_f64().unwrap() > 0.0);
    assert!(item("estimate")["values"]["seconds"].as_f64().is_some());
    assert_eq!(hash(), before, "ferry check changed the target disk");
    let st = ferry_qemu_tests::http_get(status, "/status").unwrap();
    let st: serde_json::Value = serde_json::from_str(&st).unwrap();
    assert_eq!(
        (st["receiver"]["checks"].as_u64(), st["receiver"]["state"].as_str()),
        (Some(1), Some("waiting"))
    );

    // A wrong token first: refused and counted.
    let bad = Command::new(binary("ferry"))
        .args(["send", "--to", &format!("127.0.0.1:{data}"), "--token", "wrong-token-123"])
        .arg("--disk")
        .arg(format!("{}=vda", src.display()))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("authentication failed"));

    let mut child = Command::new(binary("ferry"))
        .args(["send", "--to", &format!("127.0.0.1:{data}"), "--token", TOKEN, "--verify", "--json"])
        .args(["--fingerprint", &fp, "--bwlimit", "40"])
        .arg("--disk")
        .arg(format!("{}=TARGET0", src.display()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Progress shows up in /status while the data flows.
    let t0 = Instant::now();
    let mut seen_progress = false;
    while child.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(300) {
        if let Ok(body) = ferry_qemu_tests::http_get(status, "/status") {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let d = &v["receiver"]["disks"][0];
            if d["position"].as_u64().unwrap_or(0) > 0 && d["state"] == "receiving" {
                seen_progress = true;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "ferry send failed: {}", String::from_utf8_lossy(&out.stdout));
    assert!(seen_progress, "no progress seen in /status during the transfer");
    let report =
        String::from_utf8_lossy(&out.stdout).lines().rfind(|l| l.contains("\"report\"")).unwrap().to_string();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let disk = &report["report"]["disks"][0];
    assert_eq!(disk["verified"], true, "{report:#}");
    assert_eq!(disk["target"], "vda");

    // The Prometheus endpoint agrees with the send report.
    let metrics = ferry_qemu_tests::http_get(status, "/metrics").unwrap();
    let metric = |name: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(metric("ferry_passes_total"), 1.0, "{metrics}");
    assert_eq!(metric("ferry_bytes_received_total"), disk["bytes_sent"].as_f64().unwrap(), "{metrics}");
    assert_eq!(metric("ferry_failed_authentications_total"), 1.0);
    assert_eq!(metric("ferry_checks_total"), 1.0);
    assert!(metric("ferry_rpo_seconds") >= 0.0 && metric("ferry_throughput_bytes_per_second") > 0.0);
    assert!(metrics.contains("ferry_info{version=\""), "{metrics}");

    let st = vm.wait_phase(status, "done", Duration::from_secs(30)).unwrap();
    assert_eq!(st["receiver"]["state"], "finalized");
    assert_eq!(st["receiver"]["failed_auth"], 1);
    assert_eq!(st["receiver"]["disks"][0]["state"], "complete");
    assert_eq!(st["receiver"]["disks"][0]["digest"], disk["digest"]);
    drop(vm);

    // Every used block is on the target disk.
    let map = run(Command::new(binary("ferry")).args(["map", "--json"]).arg(&src)).unwrap();
    let map: serde_json::Value = serde_json::from_str(&map).unwrap();
    let (s, d) = (std::fs::File::open(&src).unwrap(), std::fs::File::open(&tgt).unwrap());
    for e in map["extents"].as_array().unwrap() {
        let (a, b) = (e[0].as_u64().unwrap(), e[1].as_u64().unwrap());
        let mut x = vec![0u8; (b - a) as usize];
        let mut y = vec![0u8; (b - a) as usize];
        s.read_exact_at(&mut x, a).unwrap();
        d.read_exact_at(&mut y, a).unwrap();
        assert!(x == y, "target differs in [{a}, {b})");
    }
    run(Command::new("e2fsck").arg("-fn").arg(&tgt)).unwrap();
}
