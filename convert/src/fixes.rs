//! Applies the configuration fixes to the migrated system through the guest root: each
//! modified file first saved under `/var/lib/ferry/pre-ferry/` (once: a second run keeps the
//! original backup and changes nothing), each change recorded for the report.

use crate::guest::{GuestRoot, Kind};
use crate::ifaces::Old;
use crate::inspect::System;
use crate::types::Family;
use crate::{cmd::Runner, netcfg, rewrite};
use anyhow::Result;

/// What changed, for the report.
#[derive(Debug, Default, serde::Serialize)]
pub struct Changes {
    pub files: Vec<String>,
    pub removed: Vec<String>,
    pub packages_removed: Vec<String>,
    pub notes: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.removed.is_empty() && self.packages_removed.is_empty()
    }

    /// Rewrites `rel` with `f`, backing it up first. No file, no change. A file that exists
    /// but cannot be read (not regular, not UTF-8, unreadable) is an error naming it.
    pub fn edit(&mut self, g: &GuestRoot, rel: &str, f: impl FnOnce(&str) -> String) -> Result<bool> {
        let Some(old) = g.read(rel)? else { return Ok(false) };
        let new = f(&old);
        if new == old {
            return Ok(false);
        }
        g.backup_once(rel)?;
        g.write(rel, new.as_bytes())?;
        log::info!("convert: rewrote {rel} (original in /{})", crate::guest::backup_path(rel));
        self.files.push(rel.to_string());
        Ok(true)
    }

    /// Creates or replaces a file ferry owns (no backup: it was not the system's).
    pub fn put(&mut self, g: &GuestRoot, rel: &str, content: &str) -> Result<bool> {
        if g.read(rel)?.as_deref() == Some(content) {
            return Ok(false);
        }
        if let Some((dir, _)) = rel.rsplit_once('/') {
            g.create_dir_all(dir)?;
        }
        g.write(rel, content.as_bytes())?;
        self.files.push(rel.to_string());
        Ok(true)
    }

    /// Moves a file (or link) to the backups (`/var/lib/ferry/pre-ferry/…`, once); removes a
    /// directory tree.
    pub fn remove(&mut self, g: &GuestRoot, rel: &str, why: &str) -> Result<()> {
        match g.lkind(rel)? {
            None => return Ok(()),
            Some(Kind::Dir) => {
                g.remove(rel)?;
            }
            Some(_) => {
                let backup = crate::guest::backup_path(rel);
                if g.lkind(&backup)?.is_none() {
                    if let Some((dir, _)) = backup.rsplit_once('/') {
                        g.create_dir_all(dir)?;
                    }
                    // Across filesystems (a separate /var) the rename cannot work: copy a file.
                    if g.rename(rel, &backup).is_err() && g.is_file(rel) {
                        g.backup_once(rel)?;
                    }
                }
                g.remove(rel)?;
            }
        }
        log::info!("convert: removed {rel} ({why})");
        self.removed.push(rel.to_string());
        Ok(())
    }
}

/// fstab, crypttab, GRUB defaults, inittab, securetty.
pub fn boot_config(g: &GuestRoot, map: &rewrite::DevMap, c: &mut Changes) -> Result<()> {
    c.edit(g, "etc/fstab", |s| rewrite::fstab(s, map))?;
    c.edit(g, "etc/crypttab", |s| rewrite::crypttab(s, map))?;
    c.edit(g, "etc/default/grub", |s| rewrite::grub_default(s, map))?;
    // Ubuntu's cloud images set the console in a drop-in that overrides /etc/default/grub.
    for f in g.list("etc/default/grub.d")? {
        if f.ends_with(".cfg") {
            c.edit(g, &format!("etc/default/grub.d/{f}"), |s| rewrite::grub_default(s, map))?;
        }
    }
    c.edit(g, "etc/inittab", rewrite::inittab)?;
    c.edit(g, "etc/securetty", rewrite::securetty)?;
    kernel_args(g, map, &[], c)
}

/// The kernel command lines outside /etc/default/grub: Boot Loader Specification entries,
/// /etc/kernel/cmdline, GRUB's environment block (`kernelopts`); `extra` words added.
pub fn kernel_args(g: &GuestRoot, map: &rewrite::DevMap, extra: &[&str], c: &mut Changes) -> Result<()> {
    for entry in g.list("boot/loader/entries")? {
        if entry.ends_with(".conf") {
            c.edit(g, &format!("boot/loader/entries/{entry}"), |s| rewrite::bls_entry(s, map, extra))?;
        }
    }
    c.edit(g, "etc/kernel/cmdline", |s| rewrite::kernel_cmdline(s, map, extra))?;
    for env in ["boot/grub2/grubenv", "boot/grub/grubenv"] {
        if g.read(env)?.is_some_and(|s| s.contains("\nkernelopts=")) {
            c.edit(g, env, |s| rewrite::grubenv(s, map, extra).unwrap_or_else(|| s.to_string()))?;
        }
    }
    Ok(())
}

/// cloud-init renders its own network configuration on a machine it does not know (a new
/// instance id), over the static one ferry kept: its network module is turned off.
pub fn cloud_init_network(g: &GuestRoot, c: &mut Changes) -> Result<()> {
    if !g.is_file("etc/cloud/cloud.cfg") {
        return Ok(());
    }
    const FILE: &str = "etc/cloud/cloud.cfg.d/99-ferry-network.cfg";
    let text = "# Written by ferry: keep the migrated network configuration.\nnetwork: {config: disabled}\n";
    if c.put(g, FILE, text)? {
        c.notes.push(format!("cloud-init: network configuration disabled in /{FILE}"));
    }
    Ok(())
}

/// Network: MAC bindings removed, static settings moved from `old` to `new` names (a pair
/// with the same name twice only unbinds).
pub fn network(g: &GuestRoot, renames: &[(String, String)], old: &Old, c: &mut Changes) -> Result<()> {
    for f in g.list("etc/udev/rules.d")? {
        let rel = format!("etc/udev/rules.d/{f}");
        if f.ends_with(".rules")
            && g.is_file(&rel)
            && netcfg::is_persistent_net_rules(&f, &g.read_or_empty(&rel)?)
        {
            c.remove(g, &rel, "binds interface names to the old MAC addresses")?;
        }
    }
    for f in g.list("etc/systemd/network")? {
        let rel = format!("etc/systemd/network/{f}");
        if f.ends_with(".link") && g.is_file(&rel) && netcfg::is_mac_link(&g.read_or_empty(&rel)?) {
            c.remove(g, &rel, "names a NIC by its old MAC address")?;
        }
    }
    let mut macs_of: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for (m, n) in &old.macs {
        macs_of.entry(n.clone()).or_default().push(m.clone());
    }
    for (old, new) in renames {
        // The addresses follow the interface (through a temporary name too); a pseudo-name
        // `mac:ADDR` (an interface known only by its MAC) is that address.
        let mut macs = macs_of.get(old).cloned().unwrap_or_default();
        macs.extend(old.strip_prefix("mac:").map(String::from));
        macs_of.entry(new.clone()).or_default().extend(macs.clone());
        c.edit(g, "etc/network/interfaces", |s| netcfg::interfaces(s, old, new))?;
        for f in g.list("etc/network/interfaces.d")? {
            c.edit(g, &format!("etc/network/interfaces.d/{f}"), |s| netcfg::interfaces(s, old, new))?;
        }
        for f in g.list("etc/netplan")? {
            if f.ends_with(".yaml") {
                c.edit(g, &format!("etc/netplan/{f}"), |s| netcfg::netplan(s, old, new))?;
            }
        }
        for f in g.list("etc/systemd/network")? {
            if f.ends_with(".network") {
                c.edit(g, &format!("etc/systemd/network/{f}"), |s| netcfg::networkd(s, old, new, &macs))?;
            }
        }
        for f in g.list("etc/NetworkManager/system-connections")? {
            if f.ends_with(".nmconnection") {
                let rel = format!("etc/NetworkManager/system-connections/{f}");
                c.edit(g, &rel, |s| netcfg::nm_keyfile(s, old, new, &macs))?;
            }
        }
        for dir in ["etc/sysconfig/network-scripts", "etc/sysconfig/network"] {
            let from = format!("{dir}/ifcfg-{old}");
            let to = format!("{dir}/ifcfg-{new}");
            if old == new {
                c.edit(g, &from, |s| netcfg::ifcfg(s, old, new))?;
                continue;
            }
            if g.is_file(&from) && !g.exists(&to) {
                c.edit(g, &from, |s| netcfg::ifcfg(s, old, new))?;
                g.rename(&from, &to)?;
                c.notes.push(format!("{from} renamed to ifcfg-{new}"));
            }
            // VLANs on it: ifcfg-OLD.N becomes ifcfg-NEW.N.
            for f in g.list(dir)? {
                let Some(vlan) = f.strip_prefix(&format!("ifcfg-{old}.")) else { continue };
                let (from, to) = (format!("{dir}/{f}"), format!("{dir}/ifcfg-{new}.{vlan}"));
                c.edit(g, &from, |s| netcfg::ifcfg(s, old, new))?;
                if !g.exists(&to) {
                    g.rename(&from, &to)?;
                    c.notes.push(format!("{from} renamed to ifcfg-{new}.{vlan}"));
                }
            }
            let routes = format!("{dir}/ifroute-{old}");
            if g.is_file(&routes) && !g.exists(&format!("{dir}/ifroute-{new}")) {
                g.rename(&routes, &format!("{dir}/ifroute-{new}"))?;
                c.notes.push(format!("{routes} renamed to ifroute-{new}"));
            }
            for rf in [format!("{dir}/route-{old}"), format!("{dir}/route6-{old}")] {
                if g.is_file(&rf) {
                    let to = rf.replacen(&format!("-{old}"), &format!("-{new}"), 1);
                    if !g.exists(&to) {
                        g.rename(&rf, &to)?;
                        c.notes.push(format!("{rf} renamed to {to}"));
                    }
                }
            }
        }
    }
    // MAC bindings go last: a keyfile bound only by MAC was given its NIC's name above.
    for f in g.list("etc/NetworkManager/system-connections")? {
        let rel = format!("etc/NetworkManager/system-connections/{f}");
        if f.ends_with(".nmconnection") {
            c.edit(g, &rel, netcfg::nm_keyfile_unbind)?;
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
pub fn guest_tools(g: &GuestRoot, run: &dyn Runner, sys: &System, c: &mut Changes) -> Result<()> {
    let root = Some(g.path());
    let installed: Vec<&str> = match sys.family {
        Family::Debian => GUEST_PACKAGES
            .iter()
            .copied()
            .filter(|p| {
                run.run(root, &["dpkg-query", "-W", "-f=${Status}", p])
                    .is_ok_and(|s| s.contains("install ok installed"))
            })
            .collect(),
        Family::Rhel | Family::Suse => GUEST_PACKAGES
            .iter()
            .copied()
            .filter(|p| run.run(root, &["rpm", "-q", p]).is_ok_and(|s| s.starts_with(p)))
            .collect(),
        Family::Other => Vec::new(),
    };
    if !installed.is_empty() {
        let mut argv: Vec<&str> = match sys.family {
            Family::Debian => vec!["dpkg", "--purge"],
            _ => vec!["rpm", "-e", "--nodeps"],
        };
        argv.extend(&installed);
        run.run(root, &argv)?;
        c.packages_removed.extend(installed.iter().map(|s| s.to_string()));
    }
    for l in GUEST_LEFTOVERS {
        c.remove(g, l, "hypervisor guest tools")?;
    }
    Ok(())
}

/// Caches that name the old hypervisor's devices. The LVM devices file is essential: LVM
/// ignores every PV it does not list, so a stale one hides the root volume.
pub fn device_caches(g: &GuestRoot, c: &mut Changes) -> Result<()> {
    for f in
        ["etc/blkid.tab", "etc/blkid/blkid.tab", "etc/lvm/devices/system.devices", "etc/lvm/cache/.cache"]
    {
        c.remove(g, f, "refers to the old hypervisor's devices")?;
    }
    Ok(())
}

/// SELinux: a full relabel on the first boot, since files were written from outside.
pub fn selinux_relabel(g: &GuestRoot, c: &mut Changes) -> Result<()> {
    let se = g.read_or_empty("etc/selinux/config")?;
    let mode = se
        .lines()
        .find_map(|l| l.trim().strip_prefix("SELINUX="))
        .map(|v| v.trim().trim_matches(['"', '\'']));
    let enabled =
        mode.is_some_and(|m| m.eq_ignore_ascii_case("enforcing") || m.eq_ignore_ascii_case("permissive"));
    if enabled && !g.exists(".autorelabel") {
        g.write(".autorelabel", b"")?;
        c.notes.push("SELinux: /.autorelabel created".into());
    }
    Ok(())
}
