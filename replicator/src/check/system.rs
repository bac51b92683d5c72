//! The running system, when it is among the disks to send: the questions conversion will ask of
//! the migrated copy, asked now with conversion's own inspection through its guest-root handle
//! on the live `/` — distribution and initramfs tool, architecture, kernels with virtio drivers,
//! the default kernel's files and room in /boot, GRUB (a trial `grub-mkconfig` into a temporary
//! file, the boot code conversion installs), container data.

use super::host::Host;
use super::{bytes, Item, Level};
use crate::sender::stack::Mount;
use ferry_convert::boot::best_kernel;
use ferry_convert::guest::GuestRoot;
use ferry_convert::inspect::{self, System};
use ferry_convert::types::{Bootloader, Family, Firmware, InitramfsTool};

/// Room /boot needs for a rebuilt initramfs, as a multiple of the current one.
pub const INITRAMFS_GROWTH: f64 = 1.5;
/// Assumed initramfs size when there is none to measure.
const ASSUMED_INITRAMFS: u64 = 64 << 20;

/// The live root through conversion's handle: its own block-device mounts (/boot, /boot/efi,
/// /usr…) count as the system's, /proc, /sys, /dev and /run do not.
fn open_root(h: &Host, mounts: &[Mount]) -> anyhow::Result<GuestRoot> {
    let g = GuestRoot::open(&h.root)?;
    for m in mounts.iter().filter(|m| m.point != "/" && !h.sys.mount_devices(m).is_empty()) {
        let _ = g.allow_mount(&h.at(&m.point));
    }
    Ok(g)
}

fn os_value(g: &GuestRoot, key: &str) -> String {
    let text =
        g.read("etc/os-release").ok().flatten().or_else(|| g.read("usr/lib/os-release").ok().flatten());
    text.unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
        .unwrap_or_default()
}

/// Where a distribution stands on ferry's supported list (README "Supported").
pub fn support(id: &str, version: &str, family: Family) -> (Level, &'static str) {
    let major = version.split('.').next().unwrap_or("");
    match (id, family) {
        ("debian", _) if ["11", "12", "13"].contains(&major) => {
            (Level::Ok, "migrated, converted and booted in ferry's QEMU tests")
        }
        (_, Family::Debian) => (
            Level::Warning,
            "Debian family: conversion takes the same steps (initramfs-tools, grub-mkconfig), but this release is not boot-tested",
        ),
        (_, Family::Rhel) if ["7", "8", "9"].contains(&major) => {
            (Level::Warning, "RHEL family: conversion is proven by golden tests on real configuration files, not by a boot test")
        }
        (_, Family::Suse) if ["12", "15"].contains(&major) => {
            (Level::Warning, "SUSE: conversion is proven by golden tests on real configuration files, not by a boot test")
        }
        _ => (Level::Warning, "not on ferry's supported list: conversion may refuse or miss something"),
    }
}

fn distribution(g: &GuestRoot, s: &System) -> Item {
    let (id, version) = (os_value(g, "ID"), os_value(g, "VERSION_ID"));
    let (mut level, why) = support(&id, &version, s.family);
    let tool = serde_json::to_value(s.initramfs)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut detail = format!("{} ({id} {version}), initramfs by {tool}: {why}", s.pretty_name);
    let mut fix = String::new();
    if s.initramfs == InitramfsTool::None {
        level = Level::Critical;
        detail = format!(
            "{} ({id} {version}): no initramfs tool (update-initramfs, dracut, mkinitrd)",
            s.pretty_name
        );
        fix = "install the distribution's initramfs tool: conversion must rebuild the initramfs with virtio drivers".into();
    } else if level == Level::Warning {
        fix = "rehearse the migrated system before cutover".into();
    }
    Item::new("distribution", level, "Distribution", detail)
        .fix(fix)
        .val("id", id)
        .val("version_id", version)
        .val("initramfs_tool", tool)
}

pub fn architecture(arch: &str) -> Item {
    const T: &str = "Architecture";
    match arch {
        "x86_64" => Item::ok("architecture", T, "x86_64"),
        "aarch64" => Item::new(
            "architecture",
            Level::Warning,
            T,
            "aarch64: conversion handles it, but ferry's appliance images are x86_64 only",
        )
        .fix("boot an aarch64 appliance (not built by ferry-image yet), or migrate from an x86_64 system"),
        other => Item::new(
            "architecture",
            Level::Critical,
            T,
            format!("{other}: ferry migrates x86_64 and aarch64 systems"),
        )
        .fix("not supported"),
    }
    .val("machine", arch)
}

fn kernels(s: &System) -> Item {
    const T: &str = "Kernel with virtio drivers";
    let list =
        |ok: bool| s.kernels.iter().filter(|k| k.virtio == ok).map(|k| k.version.clone()).collect::<Vec<_>>();
    let (with, without) = (list(true), list(false));
    let item = match best_kernel(s) {
        None => Item::new("kernel-virtio", Level::Critical, T, format!("none of {} has virtio_pci/virtio_blk (module, modules.builtin or config)", without.join(", ")))
            .fix("install a distribution kernel with virtio drivers (e.g. linux-image-amd64, kernel-core) before migrating; without one the VM panics at boot"),
        Some(best) if Some(best) != s.kernels.last().map(|k| k.version.as_str()) => Item::new(
            "kernel-virtio",
            Level::Warning,
            T,
            format!("{best} will boot; the newest, {}, lacks {}", without.last().cloned().unwrap_or_default(), s.kernels.last().map(|k| k.missing.join(", ")).unwrap_or_default()),
        )
        .fix("conversion makes the newest kernel with virtio the default; update the others if you need them"),
        Some(best) => Item::ok("kernel-virtio", T, format!("{best} will boot ({} of {} kernels have virtio)", with.len(), s.kernels.len())),
    };
    item.val("with_virtio", with).val("without_virtio", without).val("default", best_kernel(s).unwrap_or(""))
}

/// The default kernel's initramfs, by each family's name for it.
fn initramfs_of(g: &GuestRoot, k: &str) -> Option<(String, u64)> {
    [format!("boot/initrd.img-{k}"), format!("boot/initramfs-{k}.img"), format!("boot/initrd-{k}")]
        .into_iter()
        .find_map(|p| g.size(&p).ok().flatten().map(|n| (format!("/{p}"), n)))
}

fn boot(h: &Host, g: &GuestRoot, s: &System) -> Vec<Item> {
    let Some(k) = best_kernel(s) else { return Vec::new() };
    let found = initramfs_of(g, k);
    let files = match &found {
        Some((p, n)) => {
            Item::ok("boot-files", "Boot files", format!("/boot/vmlinuz-{k} and {p} ({})", bytes(*n)))
        }
        None => Item::new(
            "boot-files",
            Level::Warning,
            "Boot files",
            format!("/boot/vmlinuz-{k} has no initramfs"),
        )
        .fix("conversion builds one; check why the system has none (does it boot without?)"),
    };
    let need = (found.as_ref().map_or(ASSUMED_INITRAMFS, |f| f.1) as f64 * INITRAMFS_GROWTH) as u64;
    let space = match (h.statfs)(&h.at("boot")) {
        Ok(u) if u.avail >= need => Item::ok(
            "boot-space",
            "Room in /boot",
            format!("{} available, {} needed for a rebuilt initramfs", bytes(u.avail), bytes(need)),
        ),
        Ok(u) => Item::new(
            "boot-space",
            Level::Critical,
            "Room in /boot",
            format!(
                "{} available, {} needed for a rebuilt initramfs (the current one ×{INITRAMFS_GROWTH})",
                bytes(u.avail),
                bytes(need)
            ),
        )
        .fix("remove old kernels (apt autoremove --purge, dnf remove --oldinstallonly) or grow /boot"),
        Err(e) => Item::new("boot-space", Level::Warning, "Room in /boot", format!("{e:#}")),
    };
    vec![files, space.val("needed_bytes", need)]
}

/// `grub-mkconfig -o FILE` into a private temporary directory, without os-prober. RHEL's
/// `grub2-mkconfig` also rewrites grubenv and BLS entries unless told not to: without that
/// option it is not run (a drill changes nothing).
fn trial_mkconfig(h: &Host, chroot: Option<&std::path::Path>, mkconfig: &str) -> Item {
    const T: &str = "GRUB configuration";
    let mut argv = vec!["env", "GRUB_DISABLE_OS_PROBER=true", mkconfig];
    if mkconfig == "grub2-mkconfig" {
        let help = h.run.run(chroot, &[mkconfig, "--help"]).unwrap_or_default();
        if !help.contains("--no-grubenv-update") {
            return Item::new(
                "grub-mkconfig",
                Level::Warning,
                T,
                format!("{mkconfig} not tried: this version would rewrite grubenv and the BLS entries"),
            )
            .fix(format!(
                "run `{mkconfig} -o /tmp/test.cfg` yourself at a quiet time and check it succeeds"
            ));
        }
        argv.push("--no-grubenv-update");
    }
    let dir = match tempfile::Builder::new().prefix("ferry-check-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            return Item::new("grub-mkconfig", Level::Warning, T, format!("no temporary directory: {e}"))
        }
    };
    let out = dir.path().join("grub.cfg").display().to_string();
    argv.extend(["-o", out.as_str()]);
    match h.run.run(chroot, &argv) {
        Ok(_) => Item::ok("grub-mkconfig", T, format!("{mkconfig} succeeded into a temporary file")),
        Err(e) => Item::new("grub-mkconfig", Level::Critical, T, format!("{e:#}"))
            .fix(format!("fix what {mkconfig} reports: conversion runs it on the migrated system")),
    }
}

/// The removable-media loader names for this architecture.
fn efi_names(arch: &str) -> [&'static str; 3] {
    if arch == "aarch64" {
        ["BOOTAA64.EFI", "shimaa64.efi", "grubaa64.efi"]
    } else {
        ["BOOTX64.EFI", "shimx64.efi", "grubx64.efi"]
    }
}

fn grub(h: &Host, g: &GuestRoot, s: &System) -> Vec<Item> {
    let Some((mkconfig, _, install)) = s.bootloader.tools() else {
        return vec![Item::new("grub-mkconfig", Level::Critical, "GRUB", "no GRUB found (neither /boot/grub nor /boot/grub2, nor grub-mkconfig)")
            .fix("install GRUB 2 (grub-pc or grub-efi-amd64 on Debian, grub2-pc/grub2-efi-x64 on RHEL): conversion regenerates its configuration and boot code")];
    };
    let mut out = Vec::new();
    let chroot = (h.root != std::path::Path::new("/")).then_some(h.root.as_path());
    out.push(if !h.privileged {
        Item::new(
            "grub-mkconfig",
            Level::Warning,
            "GRUB configuration",
            format!("{mkconfig} not tried: not running as root"),
        )
        .fix("run ferry check as root")
    } else {
        trial_mkconfig(h, chroot, mkconfig)
    });
    let lib = if s.bootloader == Bootloader::Grub2 && g.is_dir("usr/lib/grub2") {
        "usr/lib/grub2"
    } else {
        "usr/lib/grub"
    };
    let tool = ["usr/sbin", "sbin", "usr/bin"].iter().any(|d| g.exists(&format!("{d}/{install}")));
    out.push(match s.firmware {
        Firmware::Bios if g.is_file(&format!("{lib}/i386-pc/boot.img")) && tool => {
            Item::ok("grub-boot-code", "GRUB for the firmware", format!("BIOS: {install} and /{lib}/i386-pc present"))
        }
        Firmware::Bios => Item::new("grub-boot-code", Level::Critical, "GRUB for the firmware", format!("BIOS: conversion runs {install} --target=i386-pc, but {} missing", if tool { format!("/{lib}/i386-pc/boot.img is") } else { format!("{install} is") }))
            .fix("install grub-pc-bin (Debian) or grub2-pc-modules (RHEL); a Xen guest booted by pygrub often lacks them"),
        Firmware::Uefi => {
            let [fallback, shim, grub] = efi_names(&h.arch);
            let loader = g.is_file(&format!("boot/efi/EFI/BOOT/{fallback}"))
                || g.list("boot/efi/EFI").unwrap_or_default().iter().any(|v| [shim, grub].iter().any(|f| g.is_file(&format!("boot/efi/EFI/{v}/{f}"))));
            if loader {
                Item::ok("grub-boot-code", "GRUB for the firmware", format!("UEFI: a loader under /boot/efi/EFI{}", if g.is_dir(&format!("{lib}/x86_64-efi")) { format!(", /{lib}/x86_64-efi present") } else { String::new() }))
            } else {
                Item::new("grub-boot-code", Level::Critical, "GRUB for the firmware", format!("UEFI: no {shim}, {grub} or EFI/BOOT/{fallback} under /boot/efi"))
                    .fix("mount the ESP on /boot/efi and reinstall the distribution's EFI GRUB (grub-efi-amd64 / grub2-efi-x64)")
            }
        }
    }
    .val("firmware", if s.firmware == Firmware::Uefi { "uefi" } else { "bios" }));
    out
}

fn containers(g: &GuestRoot) -> Option<Item> {
    let found: Vec<&str> = ["var/lib/docker", "var/lib/containerd", "var/lib/containers"]
        .into_iter()
        .filter(|d| g.is_dir(d))
        .collect();
    (!found.is_empty()).then(|| {
        Item::ok(
            "containers",
            "Container data",
            format!(
                "/{}: copied with the disk like any data; containers start on the new VM as services do",
                found.join(", /")
            ),
        )
        .val("paths", found.iter().map(|p| format!("/{p}")).collect::<Vec<_>>())
    })
}

/// Every system item (conversion's questions, asked of the running system).
pub fn items(h: &Host, mounts: &[Mount]) -> Vec<Item> {
    let mut out = vec![architecture(&h.arch)];
    let g = match open_root(h, mounts) {
        Ok(g) => g,
        Err(e) => {
            out.push(Item::new("system-inspection", Level::Warning, "System inspection", format!("{e:#}")));
            return out;
        }
    };
    let s = match inspect::inspect(&g) {
        Ok(s) => s,
        Err(e) => {
            out.push(
                Item::new(
                    "kernel-virtio",
                    Level::Critical,
                    "Kernel with virtio drivers",
                    format!("{e:#}").replace(" of the migrated system", ""),
                )
                .fix("install a distribution kernel with virtio drivers under /boot"),
            );
            return out;
        }
    };
    out.push(distribution(&g, &s));
    out.push(kernels(&s));
    out.extend(boot(h, &g, &s));
    out.extend(grub(h, &g, &s));
    out.extend(containers(&g));
    out
}

#[cfg(test)]
mod tests;
