//! Mounting the migrated system: the root, then its fstab entries (specs resolved through
//! probed UUIDs/labels and the old device names; mount points resolved inside the guest root,
//! a `..` that climbs out refused naming the fstab line), then /dev, /dev/pts, /proc, /sys
//! and a /run tmpfs for chrooted tools. Every mount is an RAII guard; the tree unmounts in
//! reverse order and syncs when dropped, on success and on every error path.

use crate::guest::GuestRoot;
use crate::probe::Part;
use crate::rewrite::DevMap;
use anyhow::{Context, Result};
use ferry_formats::FsType;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Mount {
    target: PathBuf,
}

impl Mount {
    /// Mounts `src` on `target`, a directory ferry owns (created when missing).
    pub fn new(src: &Path, target: &Path, fstype: Option<&str>, flags: MsFlags) -> Result<Self> {
        Self::with_data(src, target, fstype, flags, None)
    }

    /// [`new`](Self::new) with filesystem options (`subvol=@` of a btrfs subvolume).
    pub fn with_data(
        src: &Path,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<Self> {
        std::fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
        Self::on_with(src, target, fstype, flags, data)
    }

    /// Mounts on a directory that exists (inside a guest root: from [`GuestRoot::mount_point`]).
    fn on(src: &Path, target: &Path, fstype: Option<&str>, flags: MsFlags) -> Result<Self> {
        Self::on_with(src, target, fstype, flags, None)
    }

    fn on_with(
        src: &Path,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<Self> {
        mount(Some(src), target, fstype, flags, data).with_context(|| {
            format!(
                "mounting {}{} on {}",
                src.display(),
                data.map(|d| format!(" ({d})")).unwrap_or_default(),
                target.display()
            )
        })?;
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

/// (device, mount) of the migrated system's filesystems, then the API filesystems; unmounted
/// innermost first when dropped.
#[derive(Default)]
struct Mounts(Vec<(Option<PathBuf>, Mount)>);

impl Drop for Mounts {
    fn drop(&mut self) {
        while let Some((_, m)) = self.0.pop() {
            drop(m);
        }
        nix::unistd::sync();
    }
}

/// The mounted system. Fields drop in order: the guest root's descriptor (it would keep the
/// root mount busy), then the mounts.
pub struct Tree {
    guest: GuestRoot,
    mounts: Mounts,
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

/// An fstab line to mount: (line number, spec, mount point, options).
pub struct Entry {
    pub line: usize,
    pub spec: String,
    pub mount_point: String,
    pub options: String,
}

/// The options of an fstab entry that choose what of a filesystem is mounted (btrfs
/// `subvol=`/`subvolid=`); the rest (`noatime`, `compress=`…) do not matter to conversion.
pub fn selecting_options(fs: FsType, options: &str) -> Option<String> {
    let keep: Vec<&str> = options
        .split(',')
        .filter(|o| fs == FsType::Btrfs && (o.starts_with("subvol=") || o.starts_with("subvolid=")))
        .collect();
    (!keep.is_empty()).then(|| keep.join(","))
}

/// The fstab entries below `/` that are mounted at boot, shallowest first.
pub fn fstab_entries(fstab: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = fstab
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with('#'))
        .filter_map(|(i, l)| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let noauto = f.get(3).is_some_and(|o| o.split(',').any(|x| x == "noauto"));
            (f.len() >= 3 && f[1].starts_with('/') && f[1] != "/" && !noauto).then(|| Entry {
                line: i + 1,
                spec: f[0].to_string(),
                mount_point: f[1].to_string(),
                options: f.get(3).unwrap_or(&"").to_string(),
            })
        })
        .collect();
    out.sort_by_key(|e| e.mount_point.matches('/').count());
    out
}

impl Tree {
    /// Mounts `root` read-write at `at`, then the fstab filesystems, then the API filesystems.
    pub fn mount(root: &Part, parts: &[Part], map: &DevMap, at: &Path) -> Result<Self> {
        Self::mount_with(root, None, parts, map, at, true)
    }

    /// [`mount`](Self::mount) of the root in btrfs subvolume `subvol` (when given), with the
    /// API filesystems (/dev, /proc, /sys, /run) for chrooted tools only when `api`: without
    /// them the tree shows only the migrated system's own files.
    pub fn mount_with(
        root: &Part,
        subvol: Option<&str>,
        parts: &[Part],
        map: &DevMap,
        at: &Path,
        api: bool,
    ) -> Result<Self> {
        let fstype = root.fstype.map(|t| t.name());
        let data = subvol.map(|s| format!("subvol={s}"));
        let mut mounts = Mounts::default();
        let m = Mount::with_data(&root.dev, at, fstype, MsFlags::empty(), data.as_deref())?;
        mounts.0.push((Some(root.dev.clone()), m));
        // Declared after `mounts`: dropped first on every error path below.
        let guest = GuestRoot::open(at)?;
        let fstab = guest.read_or_empty("etc/fstab")?;
        for e in fstab_entries(&fstab) {
            let Some(p) = resolve(&e.spec, parts, map) else {
                log::info!("fstab: {} on {} is not on the migrated disks; skipped", e.spec, e.mount_point);
                continue;
            };
            let Some(fs) = p.fstype.filter(|f| f.mountable()) else { continue };
            let target = guest
                .mount_point(&e.mount_point)
                .with_context(|| format!("/etc/fstab line {}: {} on {}", e.line, e.spec, e.mount_point))?;
            let data = selecting_options(fs, &e.options);
            let m = Mount::on_with(&p.dev, &target, Some(fs.name()), MsFlags::empty(), data.as_deref())?;
            mounts.0.push((Some(p.dev.clone()), m));
            guest.allow_mount(&target)?;
        }
        if !api {
            return Ok(Tree { guest, mounts });
        }
        // The API filesystems for chrooted tools. Their mount points are resolved (and
        // checked) before any is mounted: once /dev is bound in, the guest root refuses to
        // resolve through it.
        let api = [
            ("/dev", "dev", None, MsFlags::MS_BIND),
            ("/dev/pts", "dev/pts", None, MsFlags::MS_BIND),
            ("proc", "proc", Some("proc"), MsFlags::empty()),
            ("sysfs", "sys", Some("sysfs"), MsFlags::empty()),
            ("tmpfs", "run", Some("tmpfs"), MsFlags::empty()),
        ];
        let mut targets = Vec::new();
        for (src, dst, _, _) in api {
            // A host directory must never appear where a guest symlink points: the mount point
            // is a real directory of the guest (or made as one).
            if let Some(k) = guest.lkind(dst)?.filter(|k| *k != crate::guest::Kind::Dir) {
                anyhow::bail!(
                    "/{dst} of the migrated system is not a directory ({k:?}); refusing to mount {src} there"
                );
            }
            targets.push(guest.mount_point(dst)?);
        }
        for ((src, _, fs, flags), target) in api.into_iter().zip(targets) {
            mounts.0.push((None, Mount::on(Path::new(src), &target, fs, flags)?));
        }
        Ok(Tree { guest, mounts })
    }

    pub fn guest(&self) -> &GuestRoot {
        &self.guest
    }

    /// Each mounted device (the root first, then the fstab filesystems) and where.
    pub fn mounted(&self) -> Vec<(PathBuf, PathBuf)> {
        self.mounts.0.iter().filter_map(|(d, m)| Some((d.clone()?, m.target.clone()))).collect()
    }

    /// Where the migrated system's filesystem on `dev` is mounted.
    pub fn mount_of(&self, dev: &Path) -> Option<&Path> {
        self.mounts.0.iter().find(|(d, _)| d.as_deref() == Some(dev)).map(|(_, m)| m.target.as_path())
    }
}

/// Does this probed type get mounted for a root search?
pub fn root_candidate(t: Option<FsType>) -> bool {
    t.is_some_and(|t| t.is_linux_fs())
}
