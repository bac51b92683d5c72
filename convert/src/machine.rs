//! What differs between converting in the appliance and on a host (`ferry-init convert`),
//! behind one trait, the way coreos-installer puts partition-table handling behind a trait:
//! where partition devices come from, how the GRUB configuration is brought up to date,
//! whether BIOS boot code is reinstalled, and how ext filesystems grow.
//!
//! - [`Appliance`]: the kernel scans partition tables (BLKRRPART) and partitions appear as
//!   `/dev/vda1`…; grub-mkconfig regenerates, grub-install writes boot code; ext and XFS grow
//!   online with the kernel's ioctls (PID 1 has every capability).
//! - [`Host`]: there may be no partition scanning at all, so each partition of an image gets a
//!   loop device of its own (`losetup -o START --sizelimit SIZE`), detached on drop; grub.cfg
//!   is rewritten in place (grub-probe needs real partition devices) and boot code stays
//!   (partition starts do not move); ext grows offline with this host's e2fsprogs before
//!   mounting (online growth needs CAP_SYS_RESOURCE, which containers often lack).

use crate::cmd;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// How the GRUB configuration is brought up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrubMode {
    /// With the system's own grub-mkconfig (needs real partition devices for grub-probe).
    Regenerate,
    /// The kernel command lines of the existing grub.cfg rewritten in place.
    Rewrite,
}

pub trait Machine {
    /// `appliance` or `host`, for the report.
    fn name(&self) -> &'static str;
    /// Makes the partition devices match the partition tables on disk.
    fn refresh(&mut self, disks: &[PathBuf]) -> Result<()>;
    /// Lets go of the partition devices (before the tables change).
    fn release(&mut self);
    /// Partition devices of disk `i`, by number.
    fn partitions(&self, disks: &[PathBuf], i: usize) -> Vec<(u32, PathBuf)>;
    fn grub(&self) -> GrubMode;
    /// Reinstall BIOS boot code with the system's grub-install.
    fn reinstall_boot_code(&self) -> bool;
    /// Grow ext filesystems offline with this machine's e2fsprogs (before mounting).
    fn grow_ext_offline(&self) -> bool;
}

pub struct Appliance;

impl Machine for Appliance {
    fn name(&self) -> &'static str {
        "appliance"
    }
    fn refresh(&mut self, disks: &[PathBuf]) -> Result<()> {
        for d in disks {
            crate::probe::reread(d, 1)?;
        }
        Ok(())
    }
    fn release(&mut self) {}
    fn partitions(&self, disks: &[PathBuf], i: usize) -> Vec<(u32, PathBuf)> {
        disks.get(i).map(|d| crate::probe::partitions_of(d)).unwrap_or_default()
    }
    fn grub(&self) -> GrubMode {
        GrubMode::Regenerate
    }
    fn reinstall_boot_code(&self) -> bool {
        true
    }
    fn grow_ext_offline(&self) -> bool {
        false
    }
}

/// A loop device; detached when dropped.
#[derive(Debug)]
pub struct Loop(pub PathBuf);

impl Loop {
    pub fn attach(file: &Path, offset: u64, size: u64) -> Result<Self> {
        let f = file.display().to_string();
        let out = cmd::run(
            None,
            &["losetup", "--show", "-f", "-o", &offset.to_string(), "--sizelimit", &size.to_string(), &f],
        )?;
        Ok(Loop(PathBuf::from(out.trim())))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let d = self.0.display().to_string();
        if let Err(e) = cmd::run(None, &["losetup", "-d", &d]) {
            log::warn!("detaching {d}: {e:#}");
        }
    }
}

/// Host mode: loop devices per partition, per disk.
#[derive(Default)]
pub struct Host {
    loops: Vec<Vec<(u32, Loop)>>,
}

impl Machine for Host {
    fn name(&self) -> &'static str {
        "host"
    }
    fn refresh(&mut self, disks: &[PathBuf]) -> Result<()> {
        self.loops.clear();
        for d in disks {
            let f = std::fs::File::open(d).with_context(|| format!("opening {}", d.display()))?;
            let mut v = Vec::new();
            for (n, start, end) in ferry_formats::table::partitions(&f) {
                v.push((n, Loop::attach(d, start, end.saturating_sub(start))?));
            }
            self.loops.push(v);
        }
        Ok(())
    }
    fn release(&mut self) {
        self.loops.clear();
    }
    fn partitions(&self, _: &[PathBuf], i: usize) -> Vec<(u32, PathBuf)> {
        self.loops.get(i).map(|v| v.iter().map(|(n, lp)| (*n, lp.0.clone())).collect()).unwrap_or_default()
    }
    fn grub(&self) -> GrubMode {
        GrubMode::Rewrite
    }
    fn reinstall_boot_code(&self) -> bool {
        false
    }
    fn grow_ext_offline(&self) -> bool {
        true
    }
}
