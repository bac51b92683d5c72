//! Driver coldplug: reads every `/sys/bus/*/devices/*/modalias`, loads the matching modules in
//! dependency order, and repeats until a round finds no new device (loading virtio_pci makes
//! the virtio devices appear, loading a SCSI host makes disks appear, and so on).

use crate::kmod::{Loader, ModuleDb};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// All modaliases currently exposed under `sys/bus/*/devices/*`.
pub fn scan(sys: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(buses) = std::fs::read_dir(sys.join("bus")) else {
        return out;
    };
    for bus in buses.flatten() {
        let Ok(devs) = std::fs::read_dir(bus.path().join("devices")) else {
            continue;
        };
        for dev in devs.flatten() {
            if let Ok(a) = std::fs::read_to_string(dev.path().join("modalias")) {
                let a = a.trim();
                if !a.is_empty() {
                    out.insert(a.to_string());
                }
            }
        }
    }
    out
}

/// Modules wanted for a set of modaliases, in the order they should be loaded.
pub fn plan(db: &ModuleDb, aliases: &BTreeSet<String>) -> Vec<String> {
    let mut order = Vec::new();
    for a in aliases {
        for m in db.lookup_alias(a) {
            if let Ok(list) = db.load_order(&m) {
                for x in list {
                    if !order.contains(&x) {
                        order.push(x);
                    }
                }
            }
        }
    }
    order
}

/// Runs coldplug to a fixed point. Returns the modules loaded; errors are logged and collected.
pub fn run(loader: &Loader, sys: &Path, problems: &mut Vec<String>) -> Vec<String> {
    let start = Instant::now();
    let mut seen = BTreeSet::new();
    let mut loaded = Vec::new();
    let mut quiet_rounds = 0;
    // Devices appear asynchronously after their bus driver loads: wait a few quiet rounds.
    while quiet_rounds < 3 && start.elapsed() < Duration::from_secs(20) {
        let now = scan(sys);
        let new: BTreeSet<String> = now.difference(&seen).cloned().collect();
        if new.is_empty() {
            quiet_rounds += 1;
            std::thread::sleep(Duration::from_millis(150));
            continue;
        }
        quiet_rounds = 0;
        for m in plan(&loader.db, &new) {
            match loader.ensure(&m) {
                Ok(l) => loaded.extend(l),
                Err(e) => {
                    log::warn!("coldplug: {e:#}");
                    problems.push(format!("driver {m}: {e:#}"));
                }
            }
        }
        seen.extend(new);
    }
    log::info!(
        "coldplug: {} devices, loaded {} modules in {:.2}s: {}",
        seen.len(),
        loaded.len(),
        start.elapsed().as_secs_f64(),
        loaded.join(" ")
    );
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(sys: &Path, bus: &str, name: &str, alias: &str) {
        let d = sys.join("bus").join(bus).join("devices").join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("modalias"), format!("{alias}\n")).unwrap();
    }

    #[test]
    fn synthetic_sysfs_with_xen_and_virtio() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path();
        dev(sys, "xen", "vbd-51712", "xen:vbd");
        dev(sys, "xen", "vif-0", "xen:vif");
        dev(sys, "pci", "0000:00:04.0", "pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00");
        dev(sys, "pci", "0000:00:01.0", "pci:v00008086d00007000sv00001AF4sd00001100bc06sc01i00");
        dev(sys, "virtio", "virtio0", "virtio:d00000002v00001AF4");
        std::fs::create_dir_all(sys.join("bus/platform/devices/nomodalias")).unwrap();
        let aliases = scan(sys);
        assert_eq!(aliases.len(), 5);
        let db = ModuleDb::parse(
            "kernel/drivers/block/xen-blkfront.ko:\nkernel/drivers/net/xen-netfront.ko:\n\
             kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko\n\
             kernel/drivers/virtio/virtio.ko:\nkernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko\n\
             kernel/drivers/ata/ata_piix.ko: kernel/drivers/ata/libata.ko\nkernel/drivers/ata/libata.ko:\n",
            "alias xen:vbd xen_blkfront\nalias xen:vif xen_netfront\n\
             alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\nalias virtio:d00000002v* virtio_blk\n\
             alias pci:v00008086d00007010sv*sd*bc*sc*i* ata_piix\n",
            "",
            "",
        )
        .unwrap();
        let p = plan(&db, &aliases);
        assert_eq!(p, vec!["virtio", "virtio_pci", "virtio_blk", "xen_blkfront", "xen_netfront"]);
    }
}
