//! Network stacks other than ifupdown keep their configuration across a migration: a Debian 12
//! Xen guest whose two NICs are bound by their old MACs — one static (10.0.2.77/24, an address
//! QEMU's DHCP server never hands out, so a lost static address cannot pass unnoticed), one
//! DHCP — is converted with `ferry-init convert` and booted on a VM whose NICs sit in other PCI
//! slots than a default VM's, with new MACs. The static address must come up on the first NIC
//! (eth0) and the second must get its address by DHCP (eth1). One test per stack: netplan
//! (networkd renderer, `match: macaddress` + `set-name`), NetworkManager keyfiles
//! (`mac-address=` only), systemd-networkd (`[Match] MACAddress=` and `.link` names).

use ferry_qemu_tests::{binary, fixture, stage, Bus, Disk, VmBuilder};
use std::process::Command;
use std::time::Duration;

const MIB: u64 = 1 << 20;
const MARKER: &str = "FERRY-MARKER multi-user";

fn migrate_and_boot(stack: &str) {
    let t = tempfile::tempdir().unwrap();
    let src = fixture::net_stack(stack).unwrap();
    let img = t.path().join("disk.img");
    fixture::copy(&src, &img).unwrap();
    std::fs::OpenOptions::new().write(true).open(&img).unwrap().set_len(3072 * MIB).unwrap();
    let out = Command::new(binary("ferry-init"))
        .args(["convert", "--workdir"])
        .arg(t.path().join("work"))
        .arg("--disk")
        .arg(&img)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let rep: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let names: Vec<(String, String)> = serde_json::from_value(rep["interfaces"].clone()).unwrap();
    assert_eq!(names.iter().map(|n| n.1.as_str()).collect::<Vec<_>>(), ["eth0", "eth1"], "{rep:#}");
    stage("converted");

    let mut vm = VmBuilder::new(&format!("net-{stack}"))
        .disk(Disk::new(&img, Bus::Virtio, "DISK0"))
        .nic_slot(0x12)
        .extra_nic("10.0.3.0/24")
        .start()
        .unwrap();
    vm.wait_serial(MARKER, Duration::from_secs(400)).unwrap();
    let serial = vm.serial();
    let line = serial.lines().find(|l| l.contains(MARKER)).unwrap();
    stage("booted");
    let addrs = line.split_whitespace().find_map(|w| w.strip_prefix("addrs=")).unwrap_or("");
    assert!(addrs.contains("eth0=10.0.2.77/24"), "{stack}: static address lost: {line}\n{serial}");
    stage("static-address");
    assert!(addrs.contains("eth1=10.0.3."), "{stack}: no DHCP address on eth1: {line}\n{serial}");
    stage("dhcp");
}

#[test]
fn netplan_networkd_renderer() {
    migrate_and_boot("netplan");
}

#[test]
#[ignore = "matrix: scripts/matrix runs it (netplan stands for the stacks in scripts/test)"]
fn networkmanager_keyfiles() {
    migrate_and_boot("nm");
}

#[test]
#[ignore = "matrix: scripts/matrix runs it (netplan stands for the stacks in scripts/test)"]
fn systemd_networkd_with_link_files() {
    migrate_and_boot("networkd");
}
