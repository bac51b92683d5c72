//! Offline conversion of a migrated Linux system so it boots on KVM/virtio, as a flat list of
//! named steps (`run` below reads top to bottom like the pipeline):
//!
//! 1. **scan**: partition devices ([`machine`]), probed (`ferry_formats`), LVs activated ([`lvm`])
//! 2. **inspect** read-only: root, distribution, initramfs tool, bootloader, kernels — refuse
//!    before changing anything when no kernel supports virtio ([`inspect`])
//! 3. **repartition** for the target size ([`repart`]), then **mount** the tree by fstab
//!    through the guest root ([`mount`], [`guest`])
//! 4. **grow** the last filesystem (or PV and the root LV on it) with the kernel's ioctls ([`grow`])
//! 5. the file steps ([`tree`]): boot configuration → UUIDs and consoles, device caches,
//!    network names ([`nics`], [`netcfg`]), guest tools, SELinux, initramfs with virtio and
//!    the bootloader ([`boot`])
//! 6. the sender's customization hooks: `run` scripts in the chroot, `firstboot` units ([`hooks`])
//! 7. the report, also in /var/log/ferry/conversion.json; everything unmounted and synced
//!
//! Essential steps abort the conversion; improving ones become warnings ([`steps`]). Every
//! guest file is reached through [`guest::GuestRoot`]; every command through [`cmd::Runner`].

pub mod boot;
pub mod cmd;
pub mod crypt;
pub mod fixes;
pub mod grow;
pub mod guest;
pub mod hooks;
pub mod ifaces;
pub mod inspect;
pub mod luks;
pub mod lvm;
pub mod machine;
pub mod md;
pub mod modules;
pub mod mount;
pub mod netaddrs;
pub mod netcfg;
pub mod nics;
pub mod probe;
pub mod repart;
pub mod rewrite;
pub mod steps;
pub mod tree;
pub mod types;

use anyhow::{bail, Context, Result};
use ferry_formats::{guid, FsType};
use machine::Machine;
use probe::Part;
use serde::Serialize;
use std::path::{Path, PathBuf};
use steps::{Class, Log};

#[derive(Debug, Clone)]
pub struct Options {
    pub grow: bool,
    /// Where the tree is mounted (and probe mounts go).
    pub workdir: PathBuf,
    /// How the new machine's NICs are named.
    pub nics: nics::Nics,
    /// Customization hooks, applied at the end ([`hooks`]).
    pub hooks: Vec<hooks::Hook>,
    /// Passphrases or key files for LUKS volumes ([`crypt`]); held in memory only.
    pub luks_keys: Vec<crypt::Key>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub ok: bool,
    pub machine: &'static str,
    pub system: Option<inspect::System>,
    pub root: String,
    pub repartition: Vec<repart::Report>,
    pub grown_filesystem: Option<String>,
    /// (old name, new name) of each configured interface.
    pub interfaces: Vec<(String, String)>,
    pub changes: fixes::Changes,
    pub initramfs: Vec<String>,
    pub default_kernel: String,
    pub seconds: f64,
    pub error: Option<String>,
    /// Improving steps that failed; the system was converted without them.
    pub warnings: Vec<String>,
    pub steps: Vec<steps::StepReport>,
    /// A second run found nothing to change (the system was converted before).
    pub already_converted: bool,
    /// What each customization hook did.
    pub hooks: Vec<hooks::HookReport>,
    /// How to prove the converted disks boot before cutting over.
    pub rehearse: &'static str,
}

/// The pointer every report carries.
pub const REHEARSE: &str = "before cutting over, boot a copy-on-write overlay of the converted disks in an \
isolated VM on a host with QEMU: ferry-init rehearse --disk IMAGE_OR_DEVICE [--disk …] (the disks are never \
changed; verdict pass/degraded/fail)";

/// Old device names (xvda1, sda1, …) → the UUID spec of the partition now in that slot.
fn device_map(parts: &[Part]) -> rewrite::DevMap {
    let mut map = rewrite::DevMap::default();
    for p in parts.iter().filter(|p| p.number > 0) {
        if let Some(spec) = p.spec() {
            map.add(p.disk, p.number, &spec);
        }
    }
    map
}

/// Mounts `p` read-only at `at` and inspects it (with a separate /boot mounted read-only
/// over it); `None` when it is not a Linux root.
fn inspect_candidate(
    p: &Part,
    at: &Path,
    parts: &[Part],
    map: &rewrite::DevMap,
    unmountable: &mut Vec<String>,
) -> Result<Option<inspect::System>> {
    let fs = p.fstype.map(|f| f.name());
    let ro = nix::mount::MsFlags::MS_RDONLY;
    let mut _root = match mount::Mount::new(&p.dev, at, fs, ro) {
        Ok(m) => m,
        Err(e) => {
            log::warn!("convert: {e:#}");
            unmountable.push(format!("{} ({})", p.dev.display(), e.root_cause()));
            return Ok(None);
        }
    };
    let mut g = guest::GuestRoot::open(at)?;
    let mut subvol = None;
    if !inspect::looks_like_root(&g) {
        // btrfs: the root may be a subvolume below the top level (`@`, as Debian's and
        // Ubuntu's installers make it); it is mounted as that subvolume.
        let Some(name) = p.is(FsType::Btrfs).then(|| root_subvolume(&g, at)).flatten() else {
            return Ok(None);
        };
        drop(g);
        drop(_root);
        let data = format!("subvol={name}");
        _root = match mount::Mount::with_data(&p.dev, at, fs, ro, Some(&data)) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("convert: {e:#}");
                unmountable.push(format!("{} subvolume {name} ({})", p.dev.display(), e.root_cause()));
                return Ok(None);
            }
        };
        g = guest::GuestRoot::open(at)?;
        if !inspect::looks_like_root(&g) {
            return Ok(None);
        }
        log::info!("convert: {}: the root is btrfs subvolume {name}", p.dev.display());
        subvol = Some(name);
    }
    let fstab = g.read_or_empty("etc/fstab")?;
    let boot =
        mount::fstab_entries(&fstab).into_iter().find(|e| e.mount_point.trim_end_matches('/') == "/boot");
    let _boot = match boot.and_then(|e| mount::resolve(&e.spec, parts, map)) {
        Some(p) => {
            let target = g.mount_point("boot")?;
            let fs = p.fstype.map(|f| f.name());
            let m = mount::Mount::new(&p.dev, &target, fs, nix::mount::MsFlags::MS_RDONLY)
                .map_err(|e| log::warn!("convert: /boot: {e:#}"))
                .ok();
            if m.is_some() {
                g.allow_mount(&target)?;
            }
            m
        }
        None => None,
    };
    let mut sys = inspect::inspect(&g)?;
    sys.root_subvol = subvol;
    sys.crypttab = g.read_or_empty("etc/crypttab")?;
    Ok(Some(sys))
}

/// The directory at the top of a btrfs filesystem that holds a Linux root (a subvolume such as
/// `@`): the only one, or `@` among several (apt-btrfs-snapshot keeps `@apt-snapshot-*` copies
/// beside it); `None` otherwise. Only real directories are looked at (never through a symlink),
/// at most 256 entries.
fn root_subvolume(g: &guest::GuestRoot, at: &Path) -> Option<String> {
    let mut found = Vec::new();
    for name in g.list("").ok()?.into_iter().take(256) {
        if g.lkind(&name).ok().flatten() != Some(guest::Kind::Dir) || name.contains(',') {
            continue;
        }
        if guest::GuestRoot::open(&at.join(&name)).is_ok_and(|sub| inspect::looks_like_root(&sub)) {
            found.push(name);
        }
    }
    match found.len() {
        1 => found.pop(),
        _ => found.into_iter().find(|n| n == "@"),
    }
}

/// Finds the root filesystem by mounting candidates read-only.
fn find_root<'a>(parts: &'a [Part], stack: &Stack, work: &Path) -> Result<(&'a Part, inspect::System)> {
    let probe_dir = work.join("probe");
    let map = device_map(parts);
    let mut unmountable = Vec::new();
    for p in parts.iter().filter(|p| mount::root_candidate(p.fstype)) {
        if let Some(sys) = inspect_candidate(p, &probe_dir, parts, &map, &mut unmountable)
            .with_context(|| format!("inspecting {}", p.dev.display()))?
        {
            return Ok((p, sys));
        }
    }
    unmountable.extend(stack.md.failed.iter().map(|e| format!("MD {e}")));
    unmountable.extend(stack.crypt.failed.iter().cloned());
    if unmountable.is_empty() {
        bail!("no partition holds a Linux root filesystem (/etc/fstab and os-release)")
    }
    bail!(
        "no partition holds a Linux root filesystem (/etc/fstab and os-release); these did not mount: {}",
        unmountable.join(", ")
    )
}

/// The storage started for a scan: MD arrays, LUKS volumes (possibly on them), then LVs
/// (possibly on either). Fields drop in order: LVs first, arrays last.
#[derive(Debug, Default)]
pub struct Stack {
    lvs: lvm::Active,
    crypt: crypt::Active,
    md: md::Assembled,
}

impl Stack {
    /// The disks holding active members of the MD array `dev` (empty when it is no array).
    pub fn member_disks(&self, dev: &Path, parts: &[Part]) -> Vec<usize> {
        let Some(a) = self.md.arrays.iter().find(|a| a.dev == dev) else { return Vec::new() };
        let mut disks: Vec<usize> = a
            .plan
            .members
            .iter()
            .filter_map(|m| parts.iter().find(|p| p.dev == m.dev).map(|p| p.disk))
            .collect();
        disks.dedup();
        disks
    }
}

/// What a scan opens LUKS volumes with: the sender's keys, and the names crypttab gives them
/// (LUKS UUID → name; learnt from the root found by the first scan).
#[derive(Debug, Default, Clone)]
pub struct Unlock {
    pub keys: Vec<crypt::Key>,
    pub names: std::collections::BTreeMap<String, String>,
}

/// The partition devices made to match the tables on disk, probed, plus the MD arrays started,
/// the LUKS volumes opened and the LVs activated on them (the guard closes them all). MD
/// members are never candidates of their own: a 1.0 member, which probes as the filesystem
/// inside, is marked as a member.
fn scan(m: &mut dyn Machine, disks: &[PathBuf], unlock: &Unlock) -> Result<(Stack, Vec<Part>)> {
    m.refresh(disks)?;
    let mut parts = probe::all(m, disks);
    let mut members = Vec::new();
    for p in parts.iter_mut() {
        match md::member(&p.dev) {
            Ok(Some(mem)) => {
                p.fstype = Some(FsType::MdMember);
                p.uuid = mem.sb.uuid_mdadm();
                members.push(mem);
            }
            Ok(None) => {}
            Err(e) if p.is(FsType::MdMember) => log::warn!("md: {e:#}"),
            Err(_) => {}
        }
    }
    let mut stack = Stack { md: md::assemble(&members), ..Stack::default() };
    for a in &stack.md.arrays {
        let first = a.plan.members.first().map(|m| m.dev.as_path());
        parts.push(probe::stacked(&a.dev, a.aliases(), first, &parts));
    }
    let luks: Vec<&Part> = parts.iter().filter(|p| p.is(FsType::Luks)).collect();
    stack.crypt = crypt::open(&luks, &unlock.keys, &unlock.names);
    for v in &stack.crypt.volumes {
        parts.push(probe::stacked(&v.dev, vec![v.dev.display().to_string()], Some(&v.backing), &parts));
    }
    let pvs: Vec<PathBuf> = parts.iter().filter(|p| p.is(FsType::LvmPv)).map(|p| p.dev.clone()).collect();
    if !pvs.is_empty() {
        stack.lvs = lvm::activate(&pvs).context("activating LVM volumes")?;
        for lv in &stack.lvs.lvs {
            parts.push(probe::stacked(&lv.dev, lv.aliases(), lv.pvs.first().map(|p| p.as_path()), &parts));
        }
    }
    Ok((stack, parts))
}

/// A migrated system mounted read-write by fstab (without the API filesystems), for tools that
/// add to it without converting it (`ferry-init rehearse` puts its probe into an overlay).
/// Fields drop in order: the tree is unmounted before the LVs are deactivated.
pub struct Opened {
    pub tree: mount::Tree,
    pub sys: inspect::System,
    pub root: Part,
    /// Every partition and LV found.
    pub parts: Vec<Part>,
    _stack: Stack,
}

/// Finds the root on `disks` (as the conversion's scan and inspect steps do) and mounts it.
pub fn open_system(disks: &[PathBuf], m: &mut dyn Machine, workdir: &Path) -> Result<Opened> {
    let (stack, parts) = scan(m, disks, &Unlock::default()).context("scan")?;
    let (root, sys) = find_root(&parts, &stack, workdir).context("inspect")?;
    let map = device_map(&parts);
    let tree =
        mount::Tree::mount_with(root, sys.root_subvol.as_deref(), &parts, &map, &workdir.join("root"), false)
            .context("mount")?;
    let root = root.clone();
    Ok(Opened { tree, sys, root, parts, _stack: stack })
}

/// Converts the system on `disks`. Never panics through; the report says what happened.
pub fn run(disks: &[PathBuf], m: &mut dyn Machine, o: &Options) -> Report {
    let t0 = std::time::Instant::now();
    let mut rep = Report { machine: m.name(), rehearse: REHEARSE, ..Report::default() };
    let mut log = Log::default();
    match convert(disks, m, o, &mut rep, &mut log) {
        Ok(()) => rep.ok = true,
        Err(e) => {
            log::error!("conversion failed: {e:#}");
            rep.error = Some(format!("{e:#}"));
        }
    }
    rep.steps = log.steps;
    rep.warnings = log.warnings;
    rep.seconds = t0.elapsed().as_secs_f64();
    rep
}

fn convert(
    disks: &[PathBuf],
    m: &mut dyn Machine,
    o: &Options,
    rep: &mut Report,
    log: &mut Log,
) -> Result<()> {
    anyhow::ensure!(!disks.is_empty(), "no disk to convert");
    let run = cmd::System;
    // The LVs found now hold their PV partitions open; the kernel re-reads a table only when
    // none is in use, so they are deactivated (the guard dropped) at the end of this block.
    let mut unlock = Unlock { keys: o.luks_keys.clone(), ..Unlock::default() };
    let (root, sys) = {
        let (stack, parts) =
            log.step("scan", Class::Essential, || scan(m, disks, &unlock))?.context("scan")?;
        let (root, sys) = log
            .step("inspect", Class::Essential, || find_root(&parts, &stack, &o.workdir))?
            .context("inspect")?;
        // LUKS volumes are opened again under the names the system's crypttab gives them.
        unlock.names = crypt::crypttab_names(&sys.crypttab, &parts, &device_map(&parts));
        (root.clone(), sys)
    };
    log::info!(
        "convert: root {} ({}), {}, {:?}, kernels {:?}",
        root.dev.display(),
        root.fs_name(),
        sys.pretty_name,
        sys.initramfs,
        sys.kernels.iter().map(|k| (&k.version, k.virtio)).collect::<Vec<_>>()
    );
    rep.root = root.dev.display().to_string();
    rep.system = Some(sys.clone());
    rep.default_kernel = log
        .step("virtio-kernel", Class::Essential, || match boot::best_kernel(&sys) {
            Some(k) => Ok(k.to_string()),
            None => bail!(
                "no installed kernel supports virtio ({}); nothing was changed",
                sys.kernels
                    .iter()
                    .map(|k| format!("{} lacks {}", k.version, k.missing.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        })?
        .unwrap_or_default();
    // The root is found again after repartitioning by its filesystem UUID (or its slot).
    let root_key = (root.uuid.clone(), root.disk, root.number);
    let is_root = |p: &Part| {
        if root_key.0.is_empty() {
            (p.disk, p.number) == (root_key.1, root_key.2)
        } else {
            p.uuid == root_key.0 && !p.is(FsType::LvmPv)
        }
    };
    m.release();
    let grown_part = log
        .step("repartition", Class::Essential, || {
            let mut grown = None;
            for (i, d) in disks.iter().enumerate() {
                let mut f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(d)
                    .with_context(|| format!("opening {}", d.display()))?;
                let r = repart::repartition(&mut f, o.grow)
                    .with_context(|| format!("repartitioning {}", d.display()))?;
                if let Some(g) = &r.grown {
                    grown = Some((i, g.number));
                }
                rep.repartition.push(r);
            }
            Ok(grown)
        })?
        .flatten();
    let (stack, parts) =
        log.step("rescan", Class::Essential, || scan(m, disks, &unlock))?.context("rescan")?;
    let root = parts.iter().find(|p| is_root(p)).context("root filesystem vanished after repartitioning")?;
    // Named again: a LUKS root now has crypttab's name.
    rep.root = root.dev.display().to_string();
    let map = device_map(&parts);
    let grown = grown_part.and_then(|(d, n)| parts.iter().find(|p| (p.disk, p.number) == (d, n)));
    let grown_offline = match grown.filter(|p| m.grow_ext_offline() && p.fstype.is_some_and(|f| f.is_ext())) {
        Some(p) => log.step("grow", Class::Improving, || grow::offline_ext(&run, p))?.flatten(),
        None => None,
    };
    let tree = log
        .step("mount", Class::Essential, || {
            mount::Tree::mount_with(
                root,
                sys.root_subvol.as_deref(),
                &parts,
                &map,
                &o.workdir.join("root"),
                true,
            )
        })?
        .context("mount")?;
    rep.grown_filesystem = match (grown, &grown_offline) {
        (_, Some(g)) => Some(g.clone()),
        (Some(p), None) => {
            log.step("grow", Class::Improving, || grow::grow(&tree, &run, p, root, &stack.lvs))?.flatten()
        }
        (None, None) => None,
    };
    // A root on an MD array boots from any of its disks: each gets the boot code.
    let mut boot_disks: Vec<&Path> = stack
        .member_disks(&root.dev, &parts)
        .into_iter()
        .filter_map(|d| disks.get(d))
        .map(|d| d.as_path())
        .collect();
    if boot_disks.is_empty() {
        boot_disks.push(&disks[root.disk]);
    }
    boot_disks.retain(|d| has_bios_boot(d));
    let bios = !sys.uefi && !boot_disks.is_empty();
    let job = tree::Job {
        guest: tree.guest(),
        run: &run,
        sys: &sys,
        map: &map,
        root_fs: root.fstype.unwrap_or(FsType::Ext4),
        root_uuid: &root.uuid,
        nics: &o.nics,
        grub: m.grub(),
        boot_code: if bios && m.reinstall_boot_code() { boot_disks } else { Vec::new() },
        layout_changed: rep.repartition.iter().any(|r| r.changed),
        hooks: &o.hooks,
    };
    let done = tree::run(&job, log)?;
    rep.hooks = done.hooks;
    rep.changes = done.changes;
    rep.interfaces = done.interfaces;
    rep.initramfs = done.initramfs;
    rep.already_converted = done.already_converted;
    if !rep.already_converted {
        // The report goes onto the converted system too.
        rep.ok = true;
        rep.steps = log.steps.clone();
        rep.warnings = log.warnings.clone();
        let text = serde_json::to_string_pretty(&rep)?;
        let g = tree.guest();
        log.step("report", Class::Improving, || {
            g.create_dir_all("var/log/ferry")?;
            g.write("var/log/ferry/conversion.json", text.as_bytes())
        })?;
    }
    Ok(())
}

/// Whether a disk boots through BIOS boot code: a GPT with a BIOS boot partition, or MBR.
fn has_bios_boot(disk: &Path) -> bool {
    let Ok(f) = std::fs::File::open(disk) else { return false };
    ferry_formats::table::gpt_has_type(&f, &guid::BIOS_BOOT).unwrap_or(true)
}
