//! The appliance boots under QEMU: disks on every bus with exact sizes, DHCP and static
//! networking, command-line problems, and `ferry.after=poweroff`.

use ferry_qemu_tests::{free_port, sparse_file, Bus, Disk, VmBuilder};
use serde_json::Value;
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn disk<'a>(status: &'a Value, serial: &str) -> &'a Value {
    status["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["serial"] == serial)
        .unwrap_or_else(|| panic!("no disk with serial {serial} in {:#}", status["disks"]))
}

#[test]
fn disks_on_every_bus_and_dhcp() {
    let t = tempfile::tempdir().unwrap();
    let disks = [
        ("VIRTIO1", Bus::Virtio, 1024 * MIB, "virtio"),
        ("SCSI2", Bus::Scsi, 2048 * MIB + 4096, "scsi"),
        ("NVME3", Bus::Nvme, 768 * MIB, "nvme"),
        ("AHCI4", Bus::Ahci, 3072 * MIB + 512 * 1024, "ata"),
    ];
    let port = free_port();
    let mut b = VmBuilder::new("buses")
        .appliance("ip=dhcp ferry.after=wait ferry.token=qemu-test-token")
        .forward(port, "", 8080);
    for (serial, bus, size, _) in &disks {
        let p = t.path().join(format!("{serial}.img"));
        sparse_file(&p, *size).unwrap();
        b = b.disk(Disk::new(p, *bus, serial));
    }
    let mut vm = b.start().unwrap();
    vm.wait_serial("ferry: ready", Duration::from_secs(120)).unwrap();
    let st = vm.wait_phase(port, "receiving", Duration::from_secs(30)).unwrap();
    assert_eq!(st["receiver"]["state"], "waiting", "{st:#}");
    assert_eq!(st["problems"].as_array().unwrap().len(), 0, "{:#}", st["problems"]);
    for (serial, _, size, bus) in &disks {
        let d = disk(&st, serial);
        assert_eq!(d["size_bytes"].as_u64(), Some(*size), "{d:#}");
        assert_eq!(d["bus"], *bus, "{d:#}");
        assert_eq!(d["read_only"], false);
    }
    assert_eq!(st["disks"].as_array().unwrap().len(), 4, "{:#}", st["disks"]);
    let eth = st["network"].as_array().unwrap().iter().find(|l| l["name"] == "eth0").expect("eth0");
    assert!(eth["addresses"].as_array().unwrap().iter().any(|a| a == "10.0.2.15/24"), "{eth:#}");
    assert!(st["ready_uptime_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn static_ip_problems_and_poweroff() {
    let port = free_port();
    let mut vm = VmBuilder::new("static")
        .appliance(
            "ip=10.0.2.77::10.0.2.2:255.255.255.0:transit:eth0:none ferry.token=qemu-test-token ferry.after=explode ferry.frobnicate=1 ferry.idle=25",
        )
        // Only reachable if the static address is really configured.
        .forward(port, "10.0.2.77", 8080)
        .start()
        .unwrap();
    let st = vm.wait_phase(port, "receiving", Duration::from_secs(120)).unwrap();
    let eth = st["network"].as_array().unwrap().iter().find(|l| l["name"] == "eth0").expect("eth0");
    assert_eq!(eth["addresses"][0], "10.0.2.77/24", "{eth:#}");
    let problems: Vec<String> =
        st["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].contains("ferry.after=explode") && problems[0].contains("poweroff, reboot or wait"),
        "{problems:?}"
    );
    assert!(problems[1].contains("unknown parameter ferry.frobnicate"), "{problems:?}");
    // This VM has no disk at all: said, not fatal.
    assert!(problems[2].contains("no writable target disk"), "{problems:?}");
    assert_eq!(st["config"]["after"], "poweroff");
    // ferry.idle ends the job, and the default ferry.after=poweroff stops the VM by itself.
    let exit = vm.wait_exit(Duration::from_secs(90)).unwrap();
    assert!(exit.success(), "{exit}");
    assert!(vm.serial().contains("reboot: Power down"));
}

/// No entropy source at all (no virtio-rng, a CPU without RDRAND) and no token: /status answers
/// at once and names the problem; the appliance makes a token as soon as the kernel can, shows
/// it on the console only, and a sender with it is accepted.
#[test]
fn no_rng_and_no_token() {
    let t = tempfile::tempdir().unwrap();
    let tgt = t.path().join("t.img");
    sparse_file(&tgt, 64 * MIB).unwrap();
    let (port, data) = (free_port(), free_port());
    let mut vm = VmBuilder::new("norng")
        .no_rng()
        .appliance("ip=dhcp ferry.after=wait ferry.convert=no")
        .disk(Disk::new(&tgt, Bus::Virtio, "T0"))
        .forward(port, "", 8080)
        .forward(data, "", 8703)
        .start()
        .unwrap();
    let st = vm.status(port, Duration::from_secs(120)).unwrap();
    eprintln!("no-rng: /status answered after {:.1} s in phase {}", vm.elapsed().as_secs_f64(), st["phase"]);
    let st = vm.wait_phase(port, "receiving", Duration::from_secs(300)).unwrap();
    eprintln!("no-rng: receiving after {:.1} s", vm.elapsed().as_secs_f64());
    assert_eq!(st["token_generated"], true, "{st:#}");
    let serial = vm.serial();
    let token = serial
        .lines()
        .skip_while(|l| !l.contains("this appliance's token is:"))
        .map(str::trim)
        .find(|l| l.len() == 39 && l.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
        .unwrap_or_else(|| panic!("no generated token on the console:\n{serial}"));
    assert_eq!(serial.matches(token).count(), 1, "the token appears more than once on the console");
    assert!(!serde_json::to_string(&st).unwrap().contains(token), "the token is in /status");
    // A small source: the token works.
    let src = t.path().join("src.img");
    ferry_qemu_tests::run(std::process::Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&src).arg("32M"))
        .unwrap();
    let out = std::process::Command::new(ferry_qemu_tests::binary("ferry"))
        .args(["send", "--to", &format!("127.0.0.1:{data}"), "--token", token, "--no-finalize"])
        .arg("--disk")
        .arg(format!("{}=T0", src.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
