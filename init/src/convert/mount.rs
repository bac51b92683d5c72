//! Mounting the migrated system: the root, then its fstab entries (specs resolved through
//! probed UUIDs/labels and the old device names), then /dev, /dev/pts, /proc, /sys and a /run
//! tmpfs for chrooted tools. Every mount is an RAII guard; the tree unmounts in reverse order
//! and syncs when dropped, on success and on every error path.

use super::probe::Part;
use super::rewrite::DevMap;
use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Mount {
    target: PathBuf,
}

impl Mount {
    pub fn new(src: &Path, target: &Path, fstype: Option<&str>, flags: MsFlags) -> Result<Self> {
        std::fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
        mount(Some(src), target, fstype, flags, None::<&str>)
            .with_context(|| format!("mounting {} on {}", src.display(), target.display()))?;
        Ok(Mount { target: target.to_path_buf() })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        nix::unistd::sync();
        if let Err(e) = umount2(&self.target, MntFlags::empty()) {
            log::warn!("unmounting {}: {e}; detaching", self.target.display());
            let _ = umount2(&self.target, MntFlags::MNT_DETACH);
        }
    }
}

/// The mounted system. Dropping it unmounts everything, innermost first.
pub struct Tree {
    pub root: PathBuf,
    mounts: Vec<Mount>,
}

impl Drop for Tree {
    fn drop(&mut self) {
        while let Some(m) = self.mounts.pop() {
            drop(m);
        }
        nix::unistd::sync();
    }
}

/// Finds the partition an fstab spec names.
pub fn resolve<'a>(spec: &str, parts: &'a [Part], map: &DevMap) -> Option<&'a Part> {
    let by = |f: &dyn Fn(&Part) -> bool| parts.iter().find(|p| f(p));
    if let Some(p) = by(&|p| p.aliases.iter().any(|a| a == spec)) {
        return Some(p);
    }
    if let Some(u) = spec.strip_prefix("UUID=").or_else(|| spec.strip_prefix("/dev/disk/by-uuid/")) {
        return by(&|p| p.uuid.eq_ignore_ascii_case(u.trim_matches('"')));
    }
    if let Some(l) = spec.strip_prefix("LABEL=").or_else(|| spec.strip_prefix("/dev/disk/by-label/")) {
        return by(&|p| p.label == l.trim_matches('"'));
    }
    let u = map.get(spec)?.strip_prefix("UUID=")?.to_string();
    by(&|p| p.uuid == u)
}

impl Tree {
    /// Mounts `root` read-write at `at`, then the fstab filesystems, then the API filesystems.
    pub fn mount(root: &Part, parts: &[Part], map: &DevMap, at: &Path) -> Result<Self> {
        let mut t = Tree { root: at.to_path_buf(), mounts: Vec::new() };
        t.mounts.push(Mount::new(&root.dev, at, Some(&root.fstype), MsFlags::empty())?);
        let fstab = std::fs::read_to_string(at.join("etc/fstab")).unwrap_or_default();
        let mut entries: Vec<(String, String, String)> = fstab
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3)
                    .then(|| (f[0].to_string(), f[1].to_string(), f.get(3).unwrap_or(&"").to_string()))
            })
            .filter(|(_, mp, o)| mp.starts_with('/') && mp != "/" && !o.split(',').any(|x| x == "noauto"))
            .collect();
        entries.sort_by_key(|(_, mp, _)| mp.matches('/').count());
        for (spec, mp, _) in entries {
            let Some(p) = resolve(&spec, parts, map) else {
                log::info!("fstab: {spec} on {mp} is not on the migrated disks; skipped");
                continue;
            };
            if matches!(p.fstype.as_str(), "swap" | "" | "crypto_LUKS" | "LVM2_member") {
                continue;
            }
            let target = at.join(mp.trim_start_matches('/'));
            t.mounts.push(Mount::new(&p.dev, &target, Some(&p.fstype), MsFlags::empty())?);
        }
        for (src, dst, fs, flags) in [
            ("/dev", "dev", None, MsFlags::MS_BIND),
            ("/dev/pts", "dev/pts", None, MsFlags::MS_BIND),
            ("proc", "proc", Some("proc"), MsFlags::empty()),
            ("sysfs", "sys", Some("sysfs"), MsFlags::empty()),
            ("tmpfs", "run", Some("tmpfs"), MsFlags::empty()),
        ] {
            t.mounts.push(Mount::new(Path::new(src), &at.join(dst), fs, flags)?);
        }
        Ok(t)
    }

    /// Path of a file inside the mounted system.
    pub fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }
}
