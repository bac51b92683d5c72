//! Disk inventory from sysfs: every whole block device that could be a migration target
//! (loop, ram, zram, optical, device-mapper and md devices are left out), with its size,
//! sector sizes, bus, model, serial and read-only flag. A disk that holds the appliance itself
//! (its disk image, or its ISO written to a disk) is marked and never offered as a target.

use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Disk {
    pub name: String,
    pub path: String,
    pub size_bytes: u64,
    pub logical_sector: u32,
    pub physical_sector: u32,
    pub bus: String,
    pub model: String,
    pub serial: String,
    pub read_only: bool,
    /// The appliance's own boot disk: never a target.
    pub appliance: bool,
}

pub use ferry_boot::medium::{
    is_appliance_medium, read_head, APPLIANCE_PARTITION_NAME, APPLIANCE_VOLUME_ID, MEDIUM_HEAD,
};

fn holds_appliance(dev: &Path) -> bool {
    read_head(dev, MEDIUM_HEAD).is_ok_and(|h| is_appliance_medium(&h))
}

const SKIP: &[&str] = &["loop", "ram", "zram", "sr", "dm-", "md", "nbd", "fd"];

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

/// Bus of a block device from the sysfs path of its device and its name.
pub fn bus_of(name: &str, devpath: &str) -> &'static str {
    if name.starts_with("nvme") {
        "nvme"
    } else if name.starts_with("xvd") || devpath.contains("/vbd-") {
        "xen"
    } else if name.starts_with("vd") && devpath.contains("/virtio") {
        "virtio"
    } else if devpath.contains("/ata") {
        "ata"
    } else if name.starts_with("sd") {
        "scsi"
    } else if name.starts_with("mmcblk") {
        "mmc"
    } else {
        "unknown"
    }
}

/// Serial number from a SCSI VPD page 0x80 (4-byte header, then the serial).
fn vpd80_serial(raw: &[u8]) -> Option<String> {
    let len = *raw.get(3)? as usize;
    let s = raw.get(4..4 + len)?;
    Some(String::from_utf8_lossy(s).trim().trim_matches('\0').to_string())
}

fn serial(block: &Path) -> String {
    read(&block.join("serial"))
        .or_else(|| read(&block.join("device/serial")))
        .or_else(|| std::fs::read(block.join("device/vpd_pg80")).ok().and_then(|r| vpd80_serial(&r)))
        .unwrap_or_default()
}

/// Lists target-capable disks under `sys` (normally `/sys`).
pub fn disks(sys: &Path) -> Vec<Disk> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(sys.join("block")) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if SKIP.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let block = e.path();
        let devpath =
            std::fs::read_link(&block).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let num = |f: &str| read(&block.join(f)).and_then(|s| s.parse::<u64>().ok());
        let size_bytes = num("size").unwrap_or(0) * 512;
        out.push(Disk {
            path: format!("/dev/{name}"),
            size_bytes,
            logical_sector: num("queue/logical_block_size").unwrap_or(512) as u32,
            physical_sector: num("queue/physical_block_size").unwrap_or(512) as u32,
            bus: bus_of(&name, &devpath).to_string(),
            model: read(&block.join("device/model")).unwrap_or_default(),
            serial: serial(&block),
            read_only: num("ro") == Some(1),
            appliance: sys == Path::new("/sys") && holds_appliance(&Path::new("/dev").join(&name)),
            name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn disk(sys: &Path, name: &str, devpath: &str, sectors: u64, files: &[(&str, &[u8])]) {
        let real = sys.join("devices").join(devpath);
        std::fs::create_dir_all(real.join("queue")).unwrap();
        std::fs::create_dir_all(real.join("device")).unwrap();
        std::fs::write(real.join("size"), format!("{sectors}\n")).unwrap();
        std::fs::write(real.join("ro"), "0\n").unwrap();
        std::fs::write(real.join("queue/logical_block_size"), "512\n").unwrap();
        std::fs::write(real.join("queue/physical_block_size"), "4096\n").unwrap();
        for (f, v) in files {
            std::fs::write(real.join(f), v).unwrap();
        }
        std::fs::create_dir_all(sys.join("block")).unwrap();
        symlink(format!("../devices/{devpath}"), sys.join("block").join(name)).unwrap();
    }

    #[test]
    fn recognises_the_appliance_media() {
        let mut iso = vec![0u8; MEDIUM_HEAD];
        iso[0x8001..0x8006].copy_from_slice(b"CD001");
        iso[0x8028..0x8048].copy_from_slice(format!("{APPLIANCE_VOLUME_ID:32}").as_bytes());
        assert!(is_appliance_medium(&iso));
        iso[0x8028..0x8048].copy_from_slice(format!("{:32}", "Debian 12.8.0 amd64 n").as_bytes());
        assert!(!is_appliance_medium(&iso));
        for (sector, name, want) in [
            (512, APPLIANCE_PARTITION_NAME, true),
            (4096, APPLIANCE_PARTITION_NAME, true),
            (512, "ferry-applianceX", false),
        ] {
            let mut disk = std::io::Cursor::new(vec![0u8; 4 << 20]);
            let mut g = gptman::GPT::new_from(&mut disk, sector, [7; 16]).unwrap();
            g[2] = gptman::GPTPartitionEntry {
                partition_type_guid: [1; 16],
                unique_partition_guid: [2; 16],
                starting_lba: g.header.first_usable_lba,
                ending_lba: g.header.first_usable_lba + 8,
                attribute_bits: 0,
                partition_name: name.into(),
            };
            g.write_into(&mut disk).unwrap();
            assert_eq!(is_appliance_medium(&disk.get_ref()[..MEDIUM_HEAD]), want, "{sector} {name}");
        }
        assert!(!is_appliance_medium(&[0u8; 100]));
    }

    #[test]
    fn lists_disks_with_buses_and_serials() {
        let t = tempfile::tempdir().unwrap();
        let s = t.path();
        disk(s, "vda", "pci0000:00/0000:00:04.0/virtio1/block/vda", 2097152, &[("serial", b"VSER1\n")]);
        disk(
            s,
            "sda",
            "pci0000:00/0000:00:05.0/virtio2/host0/target0:0:0/0:0:0:0/block/sda",
            4096,
            &[("device/model", b"QEMU HARDDISK   \n"), ("device/vpd_pg80", b"\x00\x80\x00\x05SSER2")],
        );
        disk(s, "sdb", "pci0000:00/0000:00:1f.2/ata1/host2/target2:0:0/2:0:0:0/block/sdb", 8192, &[]);
        disk(
            s,
            "nvme0n1",
            "pci0000:00/0000:00:06.0/nvme/nvme0/nvme0n1",
            1024,
            &[("device/serial", b"NSER3   \n"), ("device/model", b"QEMU NVMe Ctrl\n")],
        );
        disk(s, "xvda", "vbd-51712/block/xvda", 100, &[]);
        disk(s, "loop0", "virtual/block/loop0", 100, &[]);
        disk(s, "sr0", "pci0000:00/ata2/block/sr0", 100, &[]);
        let d = disks(s);
        let names: Vec<_> = d.iter().map(|d| (d.name.as_str(), d.bus.as_str(), d.serial.as_str())).collect();
        assert_eq!(
            names,
            vec![
                ("nvme0n1", "nvme", "NSER3"),
                ("sda", "scsi", "SSER2"),
                ("sdb", "ata", ""),
                ("vda", "virtio", "VSER1"),
                ("xvda", "xen", ""),
            ]
        );
        assert_eq!(d[3].size_bytes, 1 << 30);
        assert_eq!(d[1].model, "QEMU HARDDISK");
        assert_eq!((d[0].logical_sector, d[0].physical_sector), (512, 4096));
    }
}
