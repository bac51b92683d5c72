//! Applies the fixes to the mounted system, each logged and each modified file first saved as
//! `<file>.pre-ferry` (once: a second run keeps the original backup and changes nothing).

use super::mount::Tree;
use super::{netcfg, rewrite};
use crate::cmd;
use anyhow::{Context, Result};
use std::path::Path;

/// What changed, for the report.
#[derive(Debug, Default, serde::Serialize)]
pub struct Changes {
    pub files: Vec<String>,
    pub removed: Vec<String>,
    pub packages_removed: Vec<String>,
    pub notes: Vec<String>,
}

impl Changes {
    /// Rewrites `rel` inside the tree with `f`; backs it up first. No file, no change.
    pub fn edit(&mut self, t: &Tree, rel: &str, f: impl FnOnce(&str) -> String) -> Result<bool> {
        let p = t.path(rel);
        let Ok(old) = std::fs::read_to_string(&p) else { return Ok(false) };
        let new = f(&old);
        if new == old {
            return Ok(false);
        }
        let backup = p.with_file_name(format!("{}.pre-ferry", p.file_name().unwrap().to_string_lossy()));
        if !backup.exists() {
            std::fs::copy(&p, &backup).with_context(|| format!("backing up {rel}"))?;
        }
        std::fs::write(&p, new).with_context(|| format!("writing {rel}"))?;
        log::info!("convert: rewrote {rel} (original in {rel}.pre-ferry)");
        self.files.push(rel.to_string());
        Ok(true)
    }

    pub fn remove(&mut self, t: &Tree, rel: &str, why: &str) -> Result<()> {
        let p = t.path(rel);
        if p.symlink_metadata().is_ok() {
            let backup = p.with_file_name(format!("{}.pre-ferry", p.file_name().unwrap().to_string_lossy()));
            if p.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else {
                std::fs::rename(&p, &backup).with_context(|| format!("moving {rel} aside"))?;
            }
            log::info!("convert: removed {rel} ({why})");
            self.removed.push(rel.to_string());
        }
        Ok(())
    }
}

/// fstab, crypttab, GRUB defaults, inittab, securetty.
pub fn boot_config(t: &Tree, map: &rewrite::DevMap, c: &mut Changes) -> Result<()> {
    c.edit(t, "etc/fstab", |s| rewrite::fstab(s, map))?;
    c.edit(t, "etc/crypttab", |s| rewrite::crypttab(s, map))?;
    c.edit(t, "etc/default/grub", |s| rewrite::grub_default(s, map))?;
    c.edit(t, "etc/inittab", rewrite::inittab)?;
    if t.path("etc/securetty").exists() {
        c.edit(t, "etc/securetty", rewrite::securetty)?;
    }
    Ok(())
}

fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Interfaces the old configuration names (ethX, enoX…), first to last.
pub fn old_interfaces(t: &Tree) -> Vec<String> {
    let mut names = Vec::new();
    let interfaces = std::fs::read_to_string(t.path("etc/network/interfaces")).unwrap_or_default();
    for l in interfaces.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.first() == Some(&"iface") && w.len() > 1 {
            let n = w[1].split(':').next().unwrap().to_string();
            if n != "lo" && !names.contains(&n) {
                names.push(n);
            }
        }
    }
    for dir in ["etc/sysconfig/network-scripts", "etc/sysconfig/network"] {
        for f in list(&t.path(dir)) {
            if let Some(n) = f.strip_prefix("ifcfg-") {
                if n != "lo" && !names.contains(&n.to_string()) {
                    names.push(n.to_string());
                }
            }
        }
    }
    names
}

/// Network: MAC bindings removed, static settings moved from `old` to `new` names.
pub fn network(t: &Tree, renames: &[(String, String)], c: &mut Changes) -> Result<()> {
    for dir in ["etc/udev/rules.d"] {
        for f in list(&t.path(dir)) {
            let rel = format!("{dir}/{f}");
            if !f.ends_with(".rules") {
                continue;
            }
            let text = std::fs::read_to_string(t.path(&rel)).unwrap_or_default();
            if netcfg::is_persistent_net_rules(&f, &text) {
                c.remove(t, &rel, "binds interface names to the old MAC addresses")?;
            }
        }
    }
    for f in list(&t.path("etc/systemd/network")) {
        let rel = format!("etc/systemd/network/{f}");
        let text = std::fs::read_to_string(t.path(&rel)).unwrap_or_default();
        if f.ends_with(".link") && netcfg::is_mac_link(&text) {
            c.remove(t, &rel, "names a NIC by its old MAC address")?;
        }
    }
    for (old, new) in renames {
        c.edit(t, "etc/network/interfaces", |s| netcfg::interfaces(s, old, new))?;
        for f in list(&t.path("etc/network/interfaces.d")) {
            c.edit(t, &format!("etc/network/interfaces.d/{f}"), |s| netcfg::interfaces(s, old, new))?;
        }
        for f in list(&t.path("etc/netplan")) {
            if f.ends_with(".yaml") {
                c.edit(t, &format!("etc/netplan/{f}"), |s| netcfg::netplan(s, old, new))?;
            }
        }
        for f in list(&t.path("etc/systemd/network")) {
            if f.ends_with(".network") {
                c.edit(t, &format!("etc/systemd/network/{f}"), |s| netcfg::networkd(s, old, new))?;
            }
        }
        for dir in ["etc/sysconfig/network-scripts", "etc/sysconfig/network"] {
            let from = format!("{dir}/ifcfg-{old}");
            if t.path(&from).exists() {
                c.edit(t, &from, |s| netcfg::ifcfg(s, old, new))?;
                std::fs::rename(t.path(&from), t.path(&format!("{dir}/ifcfg-{new}")))?;
                c.notes.push(format!("{from} renamed to ifcfg-{new}"));
            }
        }
    }
    Ok(())
}

const GUEST_PACKAGES: &[&str] = &[
    "xe-guest-utilities",
    "xen-guest-agent",
    "open-vm-tools",
    "open-vm-tools-desktop",
    "vmware-tools",
    "virtualbox-guest-utils",
    "virtualbox-guest-x11",
    "virtualbox-guest-additions-iso",
];
const GUEST_LEFTOVERS: &[&str] = &[
    "etc/vmware-tools",
    "usr/lib/vmware-tools",
    "etc/init.d/vmware-tools",
    "etc/init.d/xe-linux-distribution",
    "usr/sbin/xe-daemon",
    "usr/sbin/xe-update-guest-attrs",
    "etc/init.d/vboxadd",
    "opt/VBoxGuestAdditions",
];

/// Xen/VMware/VirtualBox guest tools: packages through the system's own manager, then leftovers.
pub fn guest_tools(t: &Tree, family: &str, c: &mut Changes) -> Result<()> {
    let installed: Vec<&str> = match family {
        "debian" => GUEST_PACKAGES
            .iter()
            .copied()
            .filter(|p| {
                cmd::run(Some(&t.root), &["dpkg-query", "-W", "-f=${Status}", p])
                    .is_ok_and(|s| s.contains("install ok installed"))
            })
            .collect(),
        "rhel" | "suse" => GUEST_PACKAGES
            .iter()
            .copied()
            .filter(|p| cmd::run(Some(&t.root), &["rpm", "-q", p]).is_ok())
            .collect(),
        _ => Vec::new(),
    };
    if !installed.is_empty() {
        let mut argv: Vec<&str> =
            if family == "debian" { vec!["dpkg", "--purge"] } else { vec!["rpm", "-e", "--nodeps"] };
        argv.extend(&installed);
        cmd::run(Some(&t.root), &argv)?;
        c.packages_removed.extend(installed.iter().map(|s| s.to_string()));
    }
    for l in GUEST_LEFTOVERS {
        c.remove(t, l, "hypervisor guest tools")?;
    }
    Ok(())
}

/// Caches that name old devices, and SELinux relabelling.
pub fn caches_and_selinux(t: &Tree, c: &mut Changes) -> Result<()> {
    for f in
        ["etc/blkid.tab", "etc/blkid/blkid.tab", "etc/lvm/devices/system.devices", "etc/lvm/cache/.cache"]
    {
        c.remove(t, f, "refers to the old hypervisor's devices")?;
    }
    let se = std::fs::read_to_string(t.path("etc/selinux/config")).unwrap_or_default();
    if se.lines().any(|l| l.trim() == "SELINUX=enforcing" || l.trim() == "SELINUX=permissive")
        && !t.path(".autorelabel").exists()
    {
        std::fs::write(t.path(".autorelabel"), "")?;
        c.notes.push("SELinux: /.autorelabel created".into());
    }
    Ok(())
}
