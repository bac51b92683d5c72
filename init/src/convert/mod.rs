//! Offline conversion of a migrated Linux system so it boots on KVM/virtio. Runs in the
//! appliance after the final pass, on the target disks:
//!
//! 1. partitions visible (BLKRRPART), probed (type, UUID, label)
//! 2. inspect read-only: root, distribution, initramfs tool, bootloader, kernels — refuse before
//!    changing anything when no kernel supports virtio
//! 3. repartition for the target size (`repart`), grow the last filesystem with the system's tools
//! 4. mount the tree by fstab, bind the API filesystems (`mount`)
//! 5. fixes: device names → UUID, consoles, network, guest tools, caches (`fixes`, `rewrite`, `netcfg`)
//! 6. initramfs with virtio, GRUB regenerated, boot code reinstalled (`boot`)
//! 7. report in /var/log/ferry/conversion.json; everything unmounted and synced

pub mod boot;
pub mod fixes;
pub mod inspect;
pub mod mount;
pub mod netcfg;
pub mod probe;
pub mod repart;
pub mod rewrite;

use crate::cmd;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Options {
    pub grow: bool,
    /// Where the tree is mounted (and probe mounts go).
    pub workdir: PathBuf,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub ok: bool,
    pub system: Option<inspect::System>,
    pub root: String,
    pub repartition: Vec<repart::Report>,
    pub grown_filesystem: Option<String>,
    pub interfaces: Vec<(String, String)>,
    pub changes: fixes::Changes,
    pub initramfs: Vec<String>,
    pub default_kernel: String,
    pub seconds: f64,
    pub error: Option<String>,
    /// A second run found nothing to change (the system was converted before).
    pub already_converted: bool,
}

/// Finds the root filesystem by mounting candidates read-only.
fn find_root<'a>(parts: &'a [probe::Part], work: &Path) -> Result<(&'a probe::Part, inspect::System)> {
    let probe_dir = work.join("probe");
    for p in parts.iter().filter(|p| matches!(p.fstype.as_str(), "ext2" | "ext3" | "ext4" | "xfs" | "btrfs"))
    {
        let m = match mount::Mount::new(&p.dev, &probe_dir, Some(&p.fstype), nix::mount::MsFlags::MS_RDONLY) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("convert: {e:#}");
                continue;
            }
        };
        if inspect::looks_like_root(&probe_dir) {
            let sys = inspect::inspect(&probe_dir)?;
            drop(m);
            return Ok((p, sys));
        }
    }
    bail!("no partition holds a Linux root filesystem (/etc/fstab and os-release)")
}

/// The names the system's own udev gives the NICs of this VM (the transit VM is the new VM).
fn new_nic_names(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let links = crate::net::links();
    for l in links.iter().filter(|l| l.ethernet) {
        let sys = format!("/sys/class/net/{}", l.name);
        let Ok(props) = cmd::run(Some(root), &["udevadm", "test-builtin", "net_id", &sys]) else { continue };
        let get = |k: &str| props.lines().find_map(|x| x.strip_prefix(&format!("{k}="))).map(String::from);
        if let Some(n) =
            get("ID_NET_NAME_ONBOARD").or_else(|| get("ID_NET_NAME_SLOT")).or_else(|| get("ID_NET_NAME_PATH"))
        {
            out.push(n);
        }
    }
    out
}

fn uses_kernel_names(tree: &mount::Tree) -> bool {
    let g = std::fs::read_to_string(tree.path("etc/default/grub")).unwrap_or_default();
    g.contains("net.ifnames=0")
}

pub fn run(disks: &[PathBuf], o: &Options) -> Report {
    let t0 = std::time::Instant::now();
    let mut rep = Report::default();
    if let Err(e) = convert(disks, o, &mut rep) {
        log::error!("conversion failed: {e:#}");
        rep.error = Some(format!("{e:#}"));
    } else {
        rep.ok = true;
    }
    rep.seconds = t0.elapsed().as_secs_f64();
    rep
}

fn convert(disks: &[PathBuf], o: &Options, rep: &mut Report) -> Result<()> {
    anyhow::ensure!(!disks.is_empty(), "no disk to convert");
    for d in disks {
        probe::reread(d, 1)?;
    }
    let parts = probe::all(disks);
    let (root, sys) = find_root(&parts, &o.workdir)?;
    log::info!(
        "convert: root {} ({}), {}, {}, kernels {:?}",
        root.dev.display(),
        root.fstype,
        sys.pretty_name,
        sys.initramfs,
        sys.kernels.iter().map(|k| (&k.version, k.virtio)).collect::<Vec<_>>()
    );
    rep.root = root.dev.display().to_string();
    rep.system = Some(sys.clone());
    let Some(best) = boot::best_kernel(&sys).map(String::from) else {
        bail!(
            "no installed kernel supports virtio ({}); nothing was changed",
            sys.kernels
                .iter()
                .map(|k| format!("{} lacks {}", k.version, k.missing.join(", ")))
                .collect::<Vec<_>>()
                .join("; ")
        );
    };
    rep.default_kernel = best;
    let root_number = (root.disk, root.number);
    // Repartition, then see the new table.
    let mut grown_part = None;
    for (i, d) in disks.iter().enumerate() {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(d)
            .with_context(|| format!("opening {}", d.display()))?;
        let r =
            repart::repartition(&mut f, o.grow).with_context(|| format!("repartitioning {}", d.display()))?;
        drop(f);
        if r.changed {
            probe::reread(d, 1)?;
        }
        if let Some(g) = &r.grown {
            grown_part = Some((i, g.number));
        }
        rep.repartition.push(r);
    }
    let parts = probe::all(disks);
    let root = parts
        .iter()
        .find(|p| (p.disk, p.number) == root_number)
        .context("root partition vanished after repartitioning")?;
    let mut map = rewrite::DevMap::default();
    for p in &parts {
        if let Some(spec) = p.spec() {
            map.add(p.disk, p.number, &spec);
        }
    }
    let tree = mount::Tree::mount(root, &parts, &map, &o.workdir.join("root"))?;
    if let Some((d, n)) = grown_part {
        if let Some(p) = parts.iter().find(|p| (p.disk, p.number) == (d, n)) {
            let dev = p.dev.display().to_string();
            match p.fstype.as_str() {
                "ext2" | "ext3" | "ext4" => {
                    cmd::run(Some(&tree.root), &["resize2fs", &dev])?;
                }
                "xfs" => {
                    let mp = mounted_at(&p.dev).context("the grown XFS filesystem is not mounted")?;
                    let inner = mp
                        .strip_prefix(&tree.root)
                        .map(|x| format!("/{}", x.display()))
                        .unwrap_or(mp.display().to_string());
                    cmd::run(Some(&tree.root), &["xfs_growfs", &inner])?;
                }
                _ => {}
            }
            rep.grown_filesystem = Some(format!("{dev} ({})", p.fstype));
        }
    }
    let mut c = fixes::Changes::default();
    fixes::boot_config(&tree, &map, &mut c)?;
    let old = fixes::old_interfaces(&tree);
    let new = if uses_kernel_names(&tree) { Vec::new() } else { new_nic_names(&tree.root) };
    let renames: Vec<(String, String)> =
        old.iter().zip(new.iter()).filter(|(a, b)| a != b).map(|(a, b)| (a.clone(), b.clone())).collect();
    fixes::network(&tree, &renames, &mut c)?;
    rep.interfaces = renames;
    fixes::guest_tools(&tree, &sys.family, &mut c)?;
    fixes::caches_and_selinux(&tree, &mut c)?;
    // Idempotence: a converted system gets no new initramfs, boot code or report.
    let untouched = c.files.is_empty() && c.removed.is_empty() && c.packages_removed.is_empty();
    let layout_same = rep.repartition.iter().all(|r| !r.changed);
    let previous = std::fs::read_to_string(tree.path("var/log/ferry/conversion.json")).unwrap_or_default();
    if untouched && layout_same && previous.contains("\"ok\": true") {
        log::info!("convert: the system is already converted; nothing changed");
        rep.already_converted = true;
        rep.changes = c;
        drop(tree);
        return Ok(());
    }
    rep.initramfs = boot::initramfs(&tree, &sys, &root.fstype, &mut c)?;
    let boot_disk = &disks[root.disk];
    let bios = !sys.uefi && has_bios_boot(boot_disk);
    boot::bootloader(&tree, &sys, boot_disk, bios, &mut c)?;
    rep.changes = c;
    // The report goes onto the converted system too.
    let dir = tree.path("var/log/ferry");
    std::fs::create_dir_all(&dir)?;
    rep.ok = true;
    std::fs::write(dir.join("conversion.json"), serde_json::to_string_pretty(&rep)?)?;
    drop(tree);
    Ok(())
}

fn has_bios_boot(disk: &Path) -> bool {
    let Ok(mut f) = std::fs::File::open(disk) else { return false };
    match gptman::GPT::find_from(&mut f) {
        Ok(g) => g.iter().any(|(_, p)| {
            p.is_used()
                && p.partition_type_guid
                    == [
                        0x48, 0x61, 0x68, 0x21, 0x49, 0x64, 0x6f, 0x6e, 0x74, 0x4e, 0x65, 0x65, 0x64, 0x45,
                        0x46, 0x49,
                    ]
        }),
        // MBR disks boot through the MBR gap.
        Err(_) => true,
    }
}

fn mounted_at(dev: &Path) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mounts").ok()?;
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (Path::new(f.first()?) == dev).then(|| PathBuf::from(f[1]))
    })
}

#[cfg(test)]
mod tests;
