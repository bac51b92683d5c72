//! The steps that work on the migrated system's files, in order, each with its class and its
//! report entry. They need only a [`GuestRoot`] and a [`Runner`]: golden tests run them on a
//! directory tree with a recording runner, the appliance on the mounted system.

use crate::boot::{self, Boot, GrubConfig};
use crate::cmd::Runner;
use crate::fixes::{self, Changes};
use crate::guest::GuestRoot;
use crate::ifaces;
use crate::inspect::System;
use crate::machine::GrubMode;
use crate::nics::{self, Nics};
use crate::rewrite::{self, DevMap};
use crate::steps::{Class, Log};
use anyhow::Result;
use ferry_formats::FsType;
use std::path::Path;

/// Everything the file steps need to know.
pub struct Job<'a> {
    pub guest: &'a GuestRoot,
    pub run: &'a dyn Runner,
    pub sys: &'a System,
    pub map: &'a DevMap,
    pub root_fs: FsType,
    pub root_uuid: &'a str,
    pub nics: &'a Nics,
    pub grub: GrubMode,
    /// The disk to reinstall BIOS boot code on; `None` leaves boot code as it is.
    pub boot_code: Vec<&'a Path>,
    /// The partition tables changed (a converted system on a bigger disk is converted again).
    pub layout_changed: bool,
    /// The sender's customization hooks, applied last.
    pub hooks: &'a [crate::hooks::Hook],
}

/// What the file steps did, for the report.
#[derive(Debug, Default)]
pub struct Done {
    pub changes: Changes,
    pub interfaces: Vec<(String, String)>,
    pub initramfs: Vec<String>,
    pub already_converted: bool,
    pub hooks: Vec<crate::hooks::HookReport>,
}

/// The boot argument that pins kernel NIC names.
const IFNAMES: &str = "net.ifnames=0";

/// Runs the file steps; an essential step's failure is the error.
pub fn run(j: &Job, log: &mut Log) -> Result<Done> {
    let g = j.guest;
    let mut c = Changes::default();
    let mut extra_args: Vec<&str> = Vec::new();
    log.step("boot-config", Class::Essential, || fixes::boot_config(g, j.map, &mut c))?;
    log.step("device-caches", Class::Essential, || fixes::device_caches(g, &mut c))?;
    let interfaces = log
        .step("network", Class::Essential, || {
            let old = ifaces::old_interfaces(g)?;
            let (pairs, kernel_names) = nics::plan(&old.names, j.nics);
            if kernel_names {
                c.edit(g, "etc/default/grub", |s| rewrite::grub_default_add(s, IFNAMES))?;
                fixes::kernel_args(g, j.map, &[IFNAMES], &mut c)?;
            }
            fixes::cloud_init_network(g, &mut c)?;
            fixes::network(g, &nics::rename_order(&pairs), &old, &mut c)?;
            Ok((pairs, kernel_names))
        })?
        .unwrap_or_default();
    if interfaces.1 {
        extra_args.push(IFNAMES);
    }
    log.step("guest-tools", Class::Improving, || fixes::guest_tools(g, j.run, j.sys, &mut c))?;
    log.step("selinux-relabel", Class::Essential, || fixes::selinux_relabel(g, &mut c))?;
    let mut done = Done { interfaces: interfaces.0, ..Done::default() };
    // Idempotence: a converted system gets no new initramfs, boot code or report.
    let previous = g.read("var/log/ferry/conversion.json").ok().flatten().unwrap_or_default();
    if c.is_empty() && !j.layout_changed && previous.contains("\"ok\": true") {
        log::info!("convert: the system is already converted; nothing changed");
        for (n, class) in [("initramfs", Class::Essential), ("bootloader", Class::Essential)] {
            log.skipped(n, class);
        }
        done.already_converted = true;
    } else {
        done.initramfs = log
            .step("initramfs", Class::Essential, || boot::initramfs(g, j.run, j.sys, j.root_fs, &mut c))?
            .unwrap_or_default();
        log.step("bootloader", Class::Essential, || {
            let grub = match j.grub {
                GrubMode::Regenerate => GrubConfig::Regenerate,
                GrubMode::Rewrite => GrubConfig::Rewrite(j.map, &extra_args),
            };
            if j.grub == GrubMode::Rewrite && !j.sys.uefi && j.boot_code.is_empty() {
                c.notes
                    .push("host mode: BIOS boot code left as it was (partition starts do not move)".into());
            }
            let b = Boot { disks: &j.boot_code, root_uuid: j.root_uuid, grub };
            boot::bootloader(g, j.run, j.sys, b, &mut c)
        })?;
    }
    if !j.hooks.is_empty() {
        done.hooks = log
            .step("hooks", Class::Essential, || crate::hooks::apply(g, j.run, j.hooks, &mut c))?
            .unwrap_or_default();
    }
    done.changes = c;
    Ok(done)
}
