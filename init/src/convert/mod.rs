//! Offline conversion of a migrated Linux system so it boots on KVM/virtio. Runs in the
//! appliance after the final pass, on the target disks:
//!
//! 1. partitions visible (BLKRRPART), probed (type, UUID, label)
//! 2. inspect read-only: root, distribution, initramfs tool, bootloader, kernels — refuse before
//!    changing anything when no kernel supports virtio
//! 3. repartition for the target size (`repart`); LVs activated (`crate::lvm`); grow the last
//!    filesystem (or PV and the root LV on it) with the system's own tools (`grow`)
//! 4. mount the tree by fstab, bind the API filesystems (`mount`)
//! 5. fixes: device names → UUID, consoles, network, guest tools, caches (`fixes`, `rewrite`, `netcfg`)
//! 6. initramfs with virtio, GRUB regenerated, boot code reinstalled (`boot`)
//! 7. report in /var/log/ferry/conversion.json; everything unmounted and synced

pub mod boot;
pub mod disks;
pub mod fixes;
pub mod grow;
pub mod inspect;
pub mod mount;
pub mod netcfg;
pub mod probe;
pub mod repart;
pub mod rewrite;

use crate::{cmd, lvm};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Options {
    pub grow: bool,
    /// Where the tree is mounted (and probe mounts go).
    pub workdir: PathBuf,
    /// Host mode: the disks are images or devices without kernel partition scanning; each
    /// partition gets a loop device, and BIOS boot code stays as it was (grub-install needs
    /// real partition devices).
    pub host: bool,
    /// Names the NICs will have in the new VM, in order; `None`: ask the system's own udev about
    /// this machine's NICs (in the appliance, the transit VM is the new VM).
    pub nics: Option<Vec<String>>,
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

/// Old device names (xvda1, sda1, …) → the UUID spec of the partition now in that slot.
fn device_map(parts: &[probe::Part]) -> rewrite::DevMap {
    let mut map = rewrite::DevMap::default();
    for p in parts.iter().filter(|p| p.number > 0) {
        if let Some(spec) = p.spec() {
            map.add(p.disk, p.number, &spec);
        }
    }
    map
}

/// A separate /boot (kernels live there) mounted read-only over the probed root.
fn probe_boot(root: &Path, parts: &[probe::Part], map: &rewrite::DevMap) -> Option<mount::Mount> {
    let fstab = std::fs::read_to_string(root.join("etc/fstab")).ok()?;
    let spec = fstab.lines().filter(|l| !l.trim_start().starts_with('#')).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"/boot")).then(|| f[0].to_string())
    })?;
    let p = mount::resolve(&spec, parts, map)?;
    mount::Mount::new(&p.dev, &root.join("boot"), Some(&p.fstype), nix::mount::MsFlags::MS_RDONLY)
        .map_err(|e| log::warn!("convert: /boot: {e:#}"))
        .ok()
}

/// Finds the root filesystem by mounting candidates read-only.
fn find_root<'a>(parts: &'a [probe::Part], work: &Path) -> Result<(&'a probe::Part, inspect::System)> {
    let probe_dir = work.join("probe");
    let map = device_map(parts);
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
            let boot = probe_boot(&probe_dir, parts, &map);
            let sys = inspect::inspect(&probe_dir);
            drop(boot);
            drop(m);
            return Ok((p, sys?));
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

/// Partitions of the disks plus the LVs activated on them (the guard deactivates them).
fn scan(disks: &disks::Disks) -> Result<(lvm::Active, Vec<probe::Part>)> {
    let mut parts = probe::all(disks);
    let pvs: Vec<PathBuf> =
        parts.iter().filter(|p| p.fstype == "LVM2_member").map(|p| p.dev.clone()).collect();
    if pvs.is_empty() {
        return Ok((lvm::Active::default(), parts));
    }
    let active = lvm::activate(&pvs).context("activating LVM volumes")?;
    let lvs = probe::lvs(&active, &parts);
    parts.extend(lvs);
    Ok((active, parts))
}

fn convert(disks: &[PathBuf], o: &Options, rep: &mut Report) -> Result<()> {
    anyhow::ensure!(!disks.is_empty(), "no disk to convert");
    let mut disks = if o.host { disks::Disks::loops(disks) } else { disks::Disks::kernel(disks) };
    disks.refresh()?;
    let (lvs, parts) = scan(&disks)?;
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
    // The root is found again after repartitioning by its filesystem UUID (or its slot).
    let root_key = (root.uuid.clone(), root.disk, root.number);
    let is_root = |p: &probe::Part| {
        if root_key.0.is_empty() {
            (p.disk, p.number) == (root_key.1, root_key.2)
        } else {
            p.uuid == root_key.0 && p.fstype != "LVM2_member"
        }
    };
    // LVs hold their PV partitions open; the kernel re-reads a table only when none is in use.
    drop(lvs);
    disks.release();
    let mut grown_part = None;
    for (i, d) in disks.paths.iter().enumerate() {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(d)
            .with_context(|| format!("opening {}", d.display()))?;
        let r =
            repart::repartition(&mut f, o.grow).with_context(|| format!("repartitioning {}", d.display()))?;
        drop(f);
        if let Some(g) = &r.grown {
            grown_part = Some((i, g.number));
        }
        rep.repartition.push(r);
    }
    disks.refresh()?;
    let (lvs, parts) = scan(&disks)?;
    let root = parts.iter().find(|p| is_root(p)).context("root filesystem vanished after repartitioning")?;
    let map = device_map(&parts);
    let mut grown = grown_part.and_then(|(d, n)| parts.iter().find(|p| (p.disk, p.number) == (d, n)));
    if let Some(p) = grown.filter(|_| o.host) {
        rep.grown_filesystem = grow::ext_offline(p)?;
        if rep.grown_filesystem.is_some() {
            grown = None;
        }
    }
    let tree = mount::Tree::mount(root, &parts, &map, &o.workdir.join("root"))?;
    if let Some(p) = grown {
        rep.grown_filesystem = grow::grow(&tree, p, root, &lvs)?;
    }
    let mut c = fixes::Changes::default();
    fixes::boot_config(&tree, &map, &mut c)?;
    let old = fixes::old_interfaces(&tree);
    let new = match &o.nics {
        _ if uses_kernel_names(&tree) => Vec::new(),
        Some(n) => n.clone(),
        None => new_nic_names(&tree.root),
    };
    let mut extra_args: Vec<&str> = Vec::new();
    if o.nics.as_ref().is_some_and(|n| n.is_empty()) && !old.is_empty() && !uses_kernel_names(&tree) {
        extra_args.push("net.ifnames=0");
        // The new names are unknown here: keep the kernel's names, so eth0 stays eth0.
        c.edit(&tree, "etc/default/grub", |s| rewrite::grub_default_add(s, "net.ifnames=0"))?;
        c.notes.push("NIC names unknown (no --nic): net.ifnames=0 keeps eth0-style names".into());
    }
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
        drop(lvs);
        return Ok(());
    }
    rep.initramfs = boot::initramfs(&tree, &sys, &root.fstype, &mut c)?;
    let boot_disk = &disks.paths[root.disk];
    let bios = !sys.uefi && has_bios_boot(boot_disk);
    if bios && o.host {
        c.notes.push("host mode: BIOS boot code left as it was (partition starts do not move)".into());
    }
    let how =
        if o.host { boot::GrubConfig::Rewrite(&map, &extra_args) } else { boot::GrubConfig::Regenerate };
    let b = boot::Boot { disk: boot_disk, bios: bios && !o.host, root_uuid: &root.uuid, grub: how };
    boot::bootloader(&tree, &sys, b, &mut c)?;
    rep.changes = c;
    // The report goes onto the converted system too.
    let dir = tree.path("var/log/ferry");
    std::fs::create_dir_all(&dir)?;
    rep.ok = true;
    std::fs::write(dir.join("conversion.json"), serde_json::to_string_pretty(&rep)?)?;
    drop(tree);
    drop(lvs);
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

#[cfg(test)]
mod tests;
