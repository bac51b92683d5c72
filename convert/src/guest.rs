//! The migrated system's files, reached only through [`GuestRoot`]. The migrated disk is
//! untrusted input: every guest path is resolved by the kernel inside the guest root
//! (`openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`: absolute symlinks are resolved
//! against the guest root, `..` never leaves it, `/proc` magic links are not followed). Reads
//! refuse anything but regular files (a device node where `/etc/inittab` should be is an error,
//! never a read of the disk), are bounded, and an unreadable file is an error naming it, never
//! "absent". Writes go to a temporary file in the resolved directory and are renamed over the
//! old one, keeping its mode and owner; removals and renames act on the final component
//! itself, never through it. Mount points are resolved the same way and mounted through
//! `/proc/self/fd`, so a guest symlink cannot redirect a mount onto the appliance or the host.

use anyhow::{bail, ensure, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::UnlinkatFlags;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The largest configuration file read (a bigger one is an error, not a truncated read).
pub const MAX_READ: u64 = 16 << 20;

/// Where the originals of changed files are kept, by their path.
pub const BACKUPS: &str = "var/lib/ferry/pre-ferry";

/// The backup of guest path `p`.
pub fn backup_path(p: &str) -> String {
    format!("{BACKUPS}/{}", rel(p).trim_end_matches('/'))
}

/// Mode, owner and SELinux label of a file.
#[derive(Debug, Clone)]
struct Perms {
    mode: u32,
    uid: u32,
    gid: u32,
    label: Option<Vec<u8>>,
}

/// What a guest path is, after resolution inside the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// A device node, FIFO, socket: never read or written as a file.
    Other,
}

impl Kind {
    /// The kind a `st_mode` says.
    pub fn of_mode(mode: u32) -> Kind {
        let t = SFlag::from_bits_truncate(mode) & SFlag::S_IFMT;
        if t == SFlag::S_IFREG {
            Kind::File
        } else if t == SFlag::S_IFDIR {
            Kind::Dir
        } else {
            Kind::Other
        }
    }
}

/// A handle on the migrated system's root directory.
#[derive(Debug)]
pub struct GuestRoot {
    path: PathBuf,
    dir: OwnedFd,
    /// The mounts that are the migrated system's own (the root's, then what its fstab mounted):
    /// anything resolving onto another mount (the /proc, /sys, /dev and /run bound in for
    /// chrooted tools) is refused.
    mounts: std::sync::Mutex<Vec<u64>>,
}

/// The id of the mount an open file is on (statx `STATX_MNT_ID`).
fn mount_id(fd: &OwnedFd) -> nix::Result<u64> {
    // SAFETY: statx fills the zeroed struct; the empty path with AT_EMPTY_PATH names `fd`.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::statx(fd.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, libc::STATX_MNT_ID, &mut st)
    };
    if r != 0 {
        return Err(Errno::last());
    }
    if st.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(Errno::ENOSYS);
    }
    Ok(st.stx_mnt_id)
}

/// Errors of resolution, with EXDEV (our refusal of foreign mounts) explained.
fn explain(e: Errno) -> anyhow::Error {
    if e == Errno::EXDEV {
        anyhow::anyhow!("it resolves onto a filesystem that is not the migrated system's (the appliance's /proc, /sys, /dev or /run)")
    } else {
        e.into()
    }
}

fn how(flags: OFlag) -> OpenHow {
    // openat2 refuses any flag but O_DIRECTORY, O_NOFOLLOW and O_CLOEXEC with O_PATH.
    let extra =
        if flags.contains(OFlag::O_PATH) { OFlag::O_CLOEXEC } else { OFlag::O_CLOEXEC | OFlag::O_NOCTTY };
    OpenHow::new()
        .flags(flags | extra)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// A guest path relative to the root, with `/` and empty components trimmed.
fn rel(p: &str) -> &str {
    let t = p.trim_start_matches('/');
    if t.is_empty() {
        "."
    } else {
        t
    }
}

/// The last component of `p` and its parent, refusing `.`/`..` as a name.
fn split(p: &str) -> Result<(&str, &str)> {
    let p = rel(p).trim_end_matches('/');
    let (parent, name) = p.rsplit_once('/').unwrap_or(("", p));
    ensure!(!name.is_empty() && name != "." && name != "..", "guest path {p:?} names no file");
    Ok((if parent.is_empty() { "." } else { parent }, name))
}

impl GuestRoot {
    /// Opens the root of a mounted (or unpacked) guest tree.
    pub fn open(path: &Path) -> Result<Self> {
        let path = path.canonicalize().with_context(|| format!("guest root {}", path.display()))?;
        let dir =
            nix::fcntl::open(&path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                .with_context(|| format!("opening the guest root {}", path.display()))?;
        let id = mount_id(&dir).with_context(|| format!("the mount of {}", path.display()))?;
        Ok(GuestRoot { path, dir, mounts: std::sync::Mutex::new(vec![id]) })
    }

    /// Counts the filesystem mounted at `at` (inside the root) as the migrated system's own.
    pub fn allow_mount(&self, at: &Path) -> Result<()> {
        let fd = nix::fcntl::open(at, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .with_context(|| format!("opening {}", at.display()))?;
        let id = mount_id(&fd).with_context(|| format!("the mount of {}", at.display()))?;
        self.mounts.lock().map_err(|_| anyhow::anyhow!("guest root lock poisoned"))?.push(id);
        Ok(())
    }

    /// Where the root is on this machine: only for chrooting the guest's own tools and for
    /// messages, never to build paths to open.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn resolve(&self, p: &str, flags: OFlag) -> nix::Result<OwnedFd> {
        let fd = openat2(self.dir.as_fd(), rel(p), how(flags))?;
        let id = mount_id(&fd)?;
        match self.mounts.lock() {
            Ok(m) if m.contains(&id) => Ok(fd),
            _ => Err(Errno::EXDEV),
        }
    }

    fn kind_of(fd: &OwnedFd) -> Result<Kind> {
        Ok(Kind::of_mode(fstat(fd.as_fd())?.st_mode))
    }

    /// What `p` is, following symlinks inside the root; `None` when it does not exist.
    pub fn kind(&self, p: &str) -> Result<Option<Kind>> {
        match self.resolve(p, OFlag::O_PATH) {
            Ok(fd) => Ok(Some(Self::kind_of(&fd)?)),
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => Ok(None),
            Err(e) => Err(explain(e)).with_context(|| format!("resolving guest /{}", rel(p))),
        }
    }

    /// The size of a regular file (following symlinks inside the root); `None` when it does not
    /// exist or is not a regular file.
    pub fn size(&self, p: &str) -> Result<Option<u64>> {
        match self.resolve(p, OFlag::O_PATH) {
            Ok(fd) => {
                let st = fstat(fd.as_fd())?;
                Ok((Kind::of_mode(st.st_mode) == Kind::File).then_some(st.st_size as u64))
            }
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => Ok(None),
            Err(e) => Err(explain(e)).with_context(|| format!("resolving guest /{}", rel(p))),
        }
    }

    pub fn is_file(&self, p: &str) -> bool {
        matches!(self.kind(p), Ok(Some(Kind::File)))
    }

    pub fn is_dir(&self, p: &str) -> bool {
        matches!(self.kind(p), Ok(Some(Kind::Dir)))
    }

    pub fn exists(&self, p: &str) -> bool {
        matches!(self.kind(p), Ok(Some(_)))
    }

    /// Reopens an `O_PATH` descriptor for real I/O.
    fn reopen(fd: &OwnedFd, flags: OFlag) -> nix::Result<std::fs::File> {
        let magic = format!("/proc/self/fd/{}", fd.as_raw_fd());
        nix::fcntl::open(magic.as_str(), flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY, Mode::empty())
            .map(std::fs::File::from)
    }

    /// The bytes of a regular file; `None` when it does not exist.
    pub fn read_bytes(&self, p: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.read_with_perms(p)?.map(|(b, _)| b))
    }

    /// [`read_bytes`](Self::read_bytes) with the file's mode, owner and SELinux label.
    fn read_with_perms(&self, p: &str) -> Result<Option<(Vec<u8>, Perms)>> {
        let shown = format!("guest /{}", rel(p));
        let fd = match self.resolve(p, OFlag::O_PATH) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(explain(e)).with_context(|| format!("opening {shown}")),
        };
        let kind = Self::kind_of(&fd)?;
        ensure!(kind == Kind::File, "{shown} is not a regular file ({kind:?}); refusing to read it");
        let mut f = Self::reopen(&fd, OFlag::O_RDONLY).with_context(|| format!("opening {shown}"))?;
        let st = fstat(f.as_fd())?;
        let perms = Perms {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            label: xattr::get(&f, xattr::SELINUX),
        };
        let mut buf = Vec::new();
        (&mut f).take(MAX_READ + 1).read_to_end(&mut buf).with_context(|| format!("reading {shown}"))?;
        ensure!(buf.len() as u64 <= MAX_READ, "{shown} is larger than {MAX_READ} bytes; refusing to read it");
        Ok(Some((buf, perms)))
    }

    /// The text of a regular file; `None` when it does not exist. Not UTF-8 is an error.
    pub fn read(&self, p: &str) -> Result<Option<String>> {
        match self.read_bytes(p)? {
            None => Ok(None),
            Some(b) => String::from_utf8(b).map(Some).map_err(|e| {
                anyhow::anyhow!("guest /{} is not UTF-8 text (byte {})", rel(p), e.utf8_error().valid_up_to())
            }),
        }
    }

    /// [`read`](Self::read), with an absent file as empty text.
    pub fn read_or_empty(&self, p: &str) -> Result<String> {
        Ok(self.read(p)?.unwrap_or_default())
    }

    /// Names in a directory, sorted; an absent directory has none. Names that are not UTF-8
    /// are left out (logged): nothing could name them safely in a configuration anyway.
    pub fn list(&self, p: &str) -> Result<Vec<String>> {
        let fd = match self.resolve(p, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(Vec::new()),
            Err(e) => return Err(explain(e)).with_context(|| format!("listing guest /{}", rel(p))),
        };
        let mut dir = nix::dir::Dir::from_fd(fd).with_context(|| format!("listing guest /{}", rel(p)))?;
        let mut out = Vec::new();
        for e in dir.iter() {
            let e = e.with_context(|| format!("listing guest /{}", rel(p)))?;
            match e.file_name().to_str() {
                Ok("." | "..") => {}
                Ok(n) => out.push(n.to_string()),
                Err(_) => log::warn!("guest /{}: skipping a name that is not UTF-8", rel(p)),
            }
        }
        out.sort();
        Ok(out)
    }

    /// Where an open descriptor is, as a path relative to the root (checked to be inside).
    fn inside(&self, fd: &OwnedFd, shown: &str) -> Result<String> {
        let real = nix::fcntl::readlink(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str())
            .with_context(|| format!("locating {shown}"))?;
        let real = PathBuf::from(real);
        let r = real
            .strip_prefix(&self.path)
            .with_context(|| format!("{shown} resolves to {} outside the guest root", real.display()))?;
        let s = r.to_str().with_context(|| format!("{shown}: the resolved path is not UTF-8"))?;
        Ok(if s.is_empty() { ".".into() } else { s.to_string() })
    }

    /// The directory a new or replaced `p` goes in (resolved inside the root) and its name.
    /// An existing `p` (through symlinks inside the root) must be a regular file.
    fn target(&self, p: &str) -> Result<(OwnedFd, String, Option<nix::sys::stat::FileStat>)> {
        let shown = format!("guest /{}", rel(p));
        let (parent, name) = match self.resolve(p, OFlag::O_PATH) {
            Ok(fd) => {
                let kind = Self::kind_of(&fd)?;
                ensure!(
                    kind == Kind::File,
                    "{shown} is not a regular file ({kind:?}); refusing to replace it"
                );
                let real = self.inside(&fd, &shown)?;
                let (parent, name) = split(&real)?;
                (parent.to_string(), name.to_string())
            }
            Err(Errno::ENOENT) => {
                let (parent, name) = split(p)?;
                (parent.to_string(), name.to_string())
            }
            Err(e) => return Err(explain(e)).with_context(|| format!("resolving {shown}")),
        };
        let dir = self
            .resolve(&parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(explain)
            .with_context(|| format!("opening the directory of {shown}"))?;
        let old = match fstatat(dir.as_fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(explain(e)).with_context(|| shown.clone()),
        };
        Ok((dir, name, old))
    }

    /// Replaces (or creates) a regular file atomically: a temporary file in the same
    /// directory, synced, renamed over the old one. Mode, owner and SELinux label of the old
    /// file are kept (a new file is 0644).
    pub fn write(&self, p: &str, data: &[u8]) -> Result<()> {
        self.write_as(p, data, None)
    }

    /// [`write`](Self::write) with `mode` (root-owned): scripts ferry installs.
    pub fn write_mode(&self, p: &str, data: &[u8], mode: u32) -> Result<()> {
        self.write_as(p, data, Some(Perms { mode, uid: 0, gid: 0, label: None }))
    }

    /// Creates (or replaces) the symlink `p` → `target`; `p`'s parent resolved inside the root.
    pub fn symlink(&self, target: &str, p: &str) -> Result<()> {
        let (dir, name) = self.parent_of(p)?;
        let _ = nix::unistd::unlinkat(dir.as_fd(), name.as_str(), UnlinkatFlags::NoRemoveDir);
        nix::unistd::symlinkat(target, dir.as_fd(), name.as_str())
            .with_context(|| format!("linking guest /{} to {target}", rel(p)))
    }

    fn write_as(&self, p: &str, data: &[u8], perms: Option<Perms>) -> Result<()> {
        let shown = format!("guest /{}", rel(p));
        let (dir, name, old) = self.target(p)?;
        let label = match &perms {
            Some(p) => p.label.clone(),
            None => xattr::get_at(&dir, &name, xattr::SELINUX),
        };
        let tmp = format!(".{name}.ferry-tmp");
        let _ = nix::unistd::unlinkat(dir.as_fd(), tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        let old = old.filter(|st| Kind::of_mode(st.st_mode) == Kind::File);
        let (mode, owner) = match (perms, old) {
            (Some(p), _) => (p.mode, Some((p.uid, p.gid))),
            (None, Some(st)) => (st.st_mode & 0o7777, Some((st.st_uid, st.st_gid))),
            (None, None) => (0o644, None),
        };
        let fd = nix::fcntl::openat(
            dir.as_fd(),
            tmp.as_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .with_context(|| format!("creating a temporary file for {shown}"))?;
        let mut f = std::fs::File::from(fd);
        let done = (|| -> Result<()> {
            f.write_all(data)?;
            nix::sys::stat::fchmod(f.as_fd(), Mode::from_bits_truncate(mode))?;
            if let Some((uid, gid)) = owner {
                let _ = nix::unistd::fchown(f.as_fd(), Some(uid.into()), Some(gid.into()));
            }
            if let Some(label) = label {
                xattr::set(&f, xattr::SELINUX, &label);
            }
            f.sync_all()?;
            nix::fcntl::renameat(dir.as_fd(), tmp.as_str(), dir.as_fd(), name.as_str())?;
            Ok(())
        })();
        if done.is_err() {
            let _ = nix::unistd::unlinkat(dir.as_fd(), tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        }
        done.with_context(|| format!("writing {shown}"))
    }

    /// Saves `p` under [`BACKUPS`] unless saved before (the first original is kept), with
    /// its mode, owner and label: a 0600 file with secrets stays 0600. Backups live outside
    /// the configuration directories, where no tool would read them as configuration.
    /// Returns whether a backup was made.
    pub fn backup_once(&self, p: &str) -> Result<bool> {
        let backup = backup_path(p);
        if self.exists(&backup) {
            return Ok(false);
        }
        let Some((data, perms)) = self.read_with_perms(p)? else { return Ok(false) };
        if let Some((dir, _)) = backup.rsplit_once('/') {
            self.create_dir_all(dir)?;
        }
        self.write_as(&backup, &data, Some(perms))?;
        Ok(true)
    }

    /// The parent directory of `p` (resolved inside the root) and `p`'s own name, which is
    /// acted on without following it.
    fn parent_of(&self, p: &str) -> Result<(OwnedFd, String)> {
        let (parent, name) = split(p)?;
        let dir = self
            .resolve(parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(explain)
            .with_context(|| format!("opening guest /{parent}"))?;
        Ok((dir, name.to_string()))
    }

    /// What `p` itself is (a symlink is `Other`), its parent resolved inside the root.
    pub fn lkind(&self, p: &str) -> Result<Option<Kind>> {
        let Ok((dir, name)) = self.parent_of(p) else { return Ok(None) };
        match fstatat(dir.as_fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(Kind::of_mode(st.st_mode))),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(explain(e)).with_context(|| format!("guest /{}", rel(p))),
        }
    }

    /// Renames `from` to `to` (the names themselves, not what they point at).
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (a, an) = self.parent_of(from)?;
        let (b, bn) = self.parent_of(to)?;
        nix::fcntl::renameat(a.as_fd(), an.as_str(), b.as_fd(), bn.as_str())
            .with_context(|| format!("renaming guest /{} to /{}", rel(from), rel(to)))
    }

    /// Removes a file, symlink or directory tree; `false` when there was nothing.
    pub fn remove(&self, p: &str) -> Result<bool> {
        let (dir, name) = match self.parent_of(p) {
            Ok(x) => x,
            Err(_) if !self.exists(split(p)?.0) => return Ok(false),
            Err(e) => return Err(e),
        };
        remove_at(&dir, &name, 0).with_context(|| format!("removing guest /{}", rel(p)))
    }

    /// Creates `p` and its missing parents, each inside the root.
    pub fn create_dir_all(&self, p: &str) -> Result<()> {
        let mut done = String::new();
        for c in rel(p).split('/').filter(|c| !c.is_empty() && *c != ".") {
            let next = if done.is_empty() { c.to_string() } else { format!("{done}/{c}") };
            match self.kind(&next)? {
                Some(Kind::Dir) => {}
                Some(k) => bail!("guest /{next} is not a directory ({k:?})"),
                None => {
                    if self.lkind(&next)?.is_some() {
                        bail!("guest /{next} is a symlink to nothing inside the migrated system");
                    }
                    let (dir, name) = self.parent_of(&next)?;
                    match mkdirat(dir.as_fd(), name.as_str(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(explain(e)).with_context(|| format!("creating guest /{next}")),
                    }
                }
            }
            done = next;
        }
        Ok(())
    }

    /// A directory to mount on: `p` resolved inside the root (created if missing), as the
    /// place on this machine it really is. `..` that would climb above the root is refused
    /// (it can only come from a hostile or broken configuration).
    pub fn mount_point(&self, p: &str) -> Result<PathBuf> {
        let mut depth = 0i32;
        for c in p.split('/').filter(|c| !c.is_empty() && *c != ".") {
            depth += if c == ".." { -1 } else { 1 };
            ensure!(depth >= 0, "mount point {p:?} climbs out of the migrated system's root");
        }
        self.create_dir_all(p)?;
        let fd = self
            .resolve(p, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .map_err(explain)
            .with_context(|| format!("resolving the mount point {p:?}"))?;
        let inner = self.inside(&fd, &format!("mount point {p:?}"))?;
        ensure!(inner != ".", "mount point {p:?} resolves to the root of the migrated system itself");
        Ok(self.path.join(inner))
    }
}

/// Removes `name` in `dir` without following it; directories recursively (bounded depth).
fn remove_at(dir: &OwnedFd, name: &str, depth: u32) -> Result<bool> {
    ensure!(depth < 64, "directory tree deeper than 64 levels");
    let st = match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if Kind::of_mode(st.st_mode) != Kind::Dir {
        nix::unistd::unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir)?;
        return Ok(true);
    }
    let sub = nix::fcntl::openat(
        dir.as_fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let names: Vec<String> = {
        let dup = sub.try_clone()?;
        let mut d = nix::dir::Dir::from_fd(dup)?;
        d.iter()
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().ok().map(String::from))
            .filter(|n| n != "." && n != "..")
            .collect()
    };
    for n in names {
        remove_at(&sub, &n, depth + 1)?;
    }
    nix::unistd::unlinkat(dir.as_fd(), name, UnlinkatFlags::RemoveDir)?;
    Ok(true)
}

mod xattr;

#[cfg(test)]
mod tests;
