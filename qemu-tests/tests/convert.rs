//! A Debian 12 system configured as a Xen guest (xvda names, hvc0, Xen-only initramfs, static IP
//! on eth0 bound to the old MAC) is migrated into the appliance on a larger disk, converted
//! offline, and then boots alone on virtio-blk, virtio-scsi and NVMe to multi-user with root by
//! UUID, the root filesystem grown and the static address on the new NIC. Negative control: the
//! unconverted copy does not reach multi-user on virtio.

use ferry_qemu_tests::{binary, fixture, free_port, sparse_file, Bus, Disk, VmBuilder};
use std::process::Command;
use std::time::Duration;

const MIB: u64 = 1 << 20;
const TOKEN: &str = "convert-test-token";
const MARKER: &str = "FERRY-MARKER multi-user";

fn marker_line(serial: &str) -> String {
    serial.lines().find(|l| l.contains(MARKER)).map(|l| l.trim().to_string()).unwrap_or_default()
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}="))).unwrap_or("")
}

#[test]
fn debian12_xen_guest_boots_on_virtio() {
    let t = tempfile::tempdir().unwrap();
    let src = fixture::debian_xen("bookworm", 2048).unwrap();
    let work = t.path().join("source.img");
    fixture::copy(&src, &work).unwrap();

    // Negative control: as migrated, without conversion, it never reaches multi-user on virtio.
    {
        let mut vm =
            VmBuilder::new("unconverted").disk(Disk::new(&work, Bus::Virtio, "SRC")).start().unwrap();
        assert!(
            vm.wait_serial(MARKER, Duration::from_secs(100)).is_err(),
            "the unconverted system booted on virtio"
        );
    }

    // Migrate into the appliance with a larger disk; it converts and powers off by itself.
    let target = t.path().join("target.img");
    sparse_file(&target, 3072 * MIB).unwrap();
    let (status, data) = (free_port(), free_port());
    let mut app = VmBuilder::new("appliance")
        .memory(1536)
        .appliance(&format!("ip=dhcp ferry.token={TOKEN}"))
        .disk(Disk::new(&target, Bus::Virtio, "TARGET"))
        .forward(status, "", 8080)
        .forward(data, "", 8703)
        .start()
        .unwrap();
    app.wait_phase(status, "receiving", Duration::from_secs(120)).unwrap();
    let out = Command::new(binary("ferry"))
        .args(["send", "--to", &format!("127.0.0.1:{data}"), "--token", TOKEN, "--json"])
        .arg("--disk")
        .arg(format!("{}=vda", work.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ferry send: {}\n{stdout}\n{}", out.status, app.serial());
    let report = stdout.lines().rfind(|l| l.contains("\"report\"")).unwrap();
    let report: serde_json::Value = serde_json::from_str(report).unwrap();
    let conv: serde_json::Value =
        serde_json::from_str(report["report"]["receiver_report"].as_str().unwrap()).unwrap();
    assert_eq!(conv["ok"], true, "{conv:#}");
    // The name the system's own udev gives this VM's NIC (its PCI slot depends on the devices
    // before it); the booted VM must agree.
    assert_eq!(conv["interfaces"][0][0], "eth0", "{conv:#}");
    let nic = conv["interfaces"][0][1].as_str().unwrap().to_string();
    assert!(nic.starts_with("ens") || nic.starts_with("enp"), "{conv:#}");
    assert!(conv["repartition"][0]["grown"]["number"] == 2, "{conv:#}");
    app.wait_exit(Duration::from_secs(120)).unwrap();
    drop(app);

    // The converted system boots alone on each bus.
    for (bus, dev) in [(Bus::Virtio, "/dev/vda2"), (Bus::Scsi, "/dev/sda2"), (Bus::Nvme, "/dev/nvme0n1p2")] {
        let mut vm = VmBuilder::new(&format!("converted-{bus:?}"))
            .disk(Disk::new(&target, bus, "DISK0"))
            .start()
            .unwrap();
        vm.wait_serial(MARKER, Duration::from_secs(300)).unwrap();
        let line = marker_line(&vm.serial());
        assert_eq!(field(&line, "root"), dev, "{line}");
        assert!(field(&line, "cmdline_root").starts_with("UUID="), "{line}");
        let size: u64 = field(&line, "rootsize").parse().unwrap();
        assert!(size > 2800 * MIB, "root filesystem not grown: {line}");
        assert!(field(&line, "addrs").contains(&format!("{nic}=10.0.2.15/24")), "{line}");
        assert!(vm.serial().contains("login:") || vm.wait_serial("login:", Duration::from_secs(60)).is_ok());
    }
}
