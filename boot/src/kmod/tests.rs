use super::*;

const DEP: &str = "\
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/block/xen-blkfront.ko.xz:
kernel/drivers/net/xen-netfront.ko.zst:
kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko
kernel/drivers/nvme/host/nvme-core.ko:
kernel/fs/xfs/xfs.ko: kernel/lib/libcrc32c.ko
kernel/lib/libcrc32c.ko:
kernel/crypto/crc32c_generic.ko:
";
const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias virtio:d00000002v* virtio_blk
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias xen:vbd xen_blkfront
alias xen:vif xen_netfront
alias pci:v*d*sv*sd*bc01sc08i02* nvme
alias fs-xfs xfs
alias pci:v0000[89]086d*sv*sd*bc*sc*i* nvme
";
const SOFTDEP: &str = "softdep libcrc32c pre: crc32c missing_mod\n";
const BUILTIN: &str = "kernel/drivers/virtio/virtio_mmio.ko\n";

fn db() -> ModuleDb {
    ModuleDb::parse(DEP, ALIAS, SOFTDEP, BUILTIN).unwrap()
}

#[test]
fn matches_virtio_pci_and_devices() {
    let db = db();
    assert_eq!(db.lookup_alias("pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"), vec!["virtio_pci"]);
    assert_eq!(db.lookup_alias("virtio:d00000002v00001AF4"), vec!["virtio_blk"]);
    assert_eq!(db.lookup_alias("pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02"), vec!["nvme"]);
    assert!(db.lookup_alias("pci:v00001234d00001111sv00001AF4sd00001100bc03sc00i00").is_empty());
    // Character classes in aliases.
    assert_eq!(db.lookup_alias("pci:v00009086d0000AAAAsv0sd0bc0sc0i0"), vec!["nvme"]);
}

#[test]
fn matches_xen_devices_and_names_with_dashes() {
    let db = db();
    assert_eq!(db.lookup_alias("xen:vbd"), vec!["xen_blkfront"]);
    assert_eq!(db.lookup_alias("xen:vif"), vec!["xen_netfront"]);
    assert_eq!(db.path_of("xen_blkfront"), Some("kernel/drivers/block/xen-blkfront.ko.xz"));
    assert_eq!(db.resolve_name("xen-netfront"), vec!["xen_netfront"]);
}

#[test]
fn dependencies_come_first() {
    let db = db();
    assert_eq!(db.load_order("virtio_blk").unwrap(), vec!["virtio_ring", "virtio", "virtio_blk"]);
    let pci = db.load_order("virtio_pci").unwrap();
    assert_eq!(pci.last().unwrap(), "virtio_pci");
    let pos = |m: &str| pci.iter().position(|x| x == m).unwrap();
    assert!(pos("virtio_ring") < pos("virtio"));
    assert!(pos("virtio_pci_modern_dev") < pos("virtio_pci"));
}

#[test]
fn softdeps_and_aliases_and_builtins() {
    let db = db();
    assert_eq!(db.resolve_name("fs-xfs"), vec!["xfs"]);
    // crc32c is not a module of this kernel; crc32c_generic is unrelated: the softdep is skipped.
    assert_eq!(db.load_order("xfs").unwrap(), vec!["libcrc32c", "xfs"]);
    assert!(db.load_order("virtio_mmio").unwrap().is_empty());
    assert!(db.load_order("nonexistent").unwrap_err().to_string().contains("not in"));
}
