//! What is live on the sources, and `--freeze`. The filesystems stacked on each source (through
//! partitions, LVM, dm-crypt, MD, loop devices over the same image file, and btrfs by its
//! members) are found with [`super::stack`]; a finalizing `--freeze` pass freezes them (FIFREEZE)
//! after authentication and the plan check, and they are thawed on every exit path: drop (errors
//! and panics), [`thaw_all`] from the CLI's signal thread (SIGINT, SIGTERM, SIGHUP), and SIGKILL:
//! a guardian process, forked before the first freeze, holds the filesystems' descriptors and
//! thaws them when ferry dies without saying goodbye. A filesystem that cannot be frozen, or a
//! device in use by something ferry cannot see, makes the pass *not crash-consistent*.

use super::stack::{self, Mount, Sys};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Mutex;

nix::ioctl_readwrite!(fifreeze, b'X', 119, libc::c_int);
nix::ioctl_readwrite!(fithaw, b'X', 120, libc::c_int);

/// How consistent a pass's copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// Nothing on the sources was mounted or in use.
    Offline,
    /// Mounted and written to during the pass: finish with a `--freeze` pass.
    Live,
    /// Every writable filesystem on the sources was frozen: crash-consistent.
    Frozen,
    /// `--freeze` was asked but something could not be frozen (see the notes).
    NotCrashConsistent,
}

/// What is live on a set of sources.
#[derive(Debug, Default)]
pub struct Live {
    /// Writable mounted filesystems on the sources, one mount each.
    pub writable: Vec<Mount>,
    /// Read-only mounts (consistent without freezing).
    pub read_only: Vec<String>,
    /// Devices held by something ferry cannot see (another mount namespace, a VM, a database
    /// on the raw device).
    pub invisible: Vec<String>,
}

impl Live {
    pub fn is_idle(&self) -> bool {
        self.writable.is_empty() && self.invisible.is_empty()
    }
}

/// The kernel names of the devices a source path stands for: a block device, or the loop
/// devices over an image file; a loop device also stands for every other loop device over the
/// same file.
pub fn source_devices(sys: &Sys, path: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let backing = match sys.name_of_node(Path::new(path)) {
        Some(n) => {
            let disk = sys.disk_of(&n);
            out.insert(disk.clone());
            sys.loop_backing(&disk)
        }
        None => std::fs::canonicalize(path).ok().map(|p| p.display().to_string()),
    };
    if let Some(b) = backing {
        out.extend(sys.loops_over(&b));
    }
    out
}

/// Can the device be claimed exclusively? (A mounted filesystem, a holder or swap claims it.)
fn claimed(dev: &str) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let node = format!("/dev/{dev}");
    if !Path::new(&node).exists() {
        return false;
    }
    matches!(
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_EXCL).open(&node),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY)
    )
}

fn swaps() -> Vec<String> {
    std::fs::read_to_string("/proc/swaps")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Finds what is mounted or in use on the sources.
pub fn inspect(sys: &Sys, mounts: &[Mount], sources: &[String]) -> Live {
    let mut devs = BTreeSet::new();
    for s in sources {
        for d in source_devices(sys, s) {
            devs.extend(sys.above(&d));
        }
    }
    let mut live = Live::default();
    let on = stack::mounts_on(sys, mounts, &devs);
    let mut seen_devs = BTreeSet::new();
    for m in &on {
        seen_devs.extend(sys.mount_devices(m));
        if m.read_only {
            live.read_only.push(m.point.clone());
        } else {
            live.writable.push((*m).clone());
        }
    }
    let swap_names: Vec<String> = swaps().iter().filter_map(|s| sys.name_of_node(Path::new(s))).collect();
    for d in &devs {
        if sys.is_leaf(d) && !seen_devs.contains(d) && !swap_names.contains(d) && claimed(d) {
            live.invisible.push(format!(
                "{} is in use by something ferry cannot see (a mount in another namespace, a VM or a database on the raw device)",
                sys.describe(d)
            ));
        }
    }
    live
}

/// Descriptors frozen right now, for [`thaw_all`]; and the guardians' pipes.
static FROZEN: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());
static GUARDIANS: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

fn thaw_fd(fd: RawFd) -> nix::Result<libc::c_int> {
    let mut arg: libc::c_int = 0;
    // SAFETY: FITHAW on a directory descriptor we opened.
    unsafe { fithaw(fd, &mut arg) }
}

/// Thaws everything ferry froze (the CLI's signal thread calls this before exiting).
pub fn thaw_all() {
    let fds = std::mem::take(&mut *FROZEN.lock().unwrap_or_else(|e| e.into_inner()));
    for fd in fds.into_iter().rev() {
        let _ = thaw_fd(fd);
    }
    for g in std::mem::take(&mut *GUARDIANS.lock().unwrap_or_else(|e| e.into_inner())) {
        // SAFETY: writing one byte to our own pipe.
        unsafe { libc::write(g, b"T".as_ptr().cast(), 1) };
    }
}

/// Forks a process that thaws `fds` if ferry dies while they are frozen: it waits for one byte
/// (`T`: ferry thawed them itself) or end of file (ferry is gone). Returns its pid and pipe.
fn guardian(fds: &[RawFd]) -> Option<(libc::pid_t, RawFd)> {
    let mut p = [0 as RawFd; 2];
    // SAFETY: plain pipe2 into a local array.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return None;
    }
    let fds: Vec<RawFd> = fds.to_vec();
    // SAFETY: the child only calls async-signal-safe functions (signal, close, read, ioctl, _exit)
    // on memory allocated before the fork.
    match unsafe { libc::fork() } {
        0 => unsafe {
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGPIPE] {
                libc::signal(s, libc::SIG_IGN);
            }
            libc::close(p[1]);
            let mut b = 0u8;
            loop {
                let n = libc::read(p[0], (&mut b as *mut u8).cast(), 1);
                if n == 1 && b == b'T' {
                    libc::_exit(0);
                }
                if n < 0 && *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                break;
            }
            for &fd in fds.iter().rev() {
                let mut arg: libc::c_int = 0;
                libc::ioctl(fd, 0xC004_5878u64 as _, &mut arg);
            }
            libc::_exit(0)
        },
        pid if pid > 0 => {
            // SAFETY: closing our copy of the read end.
            unsafe { libc::close(p[0]) };
            Some((pid, p[1]))
        }
        _ => {
            // SAFETY: fork failed; close both ends.
            unsafe {
                libc::close(p[0]);
                libc::close(p[1]);
            }
            None
        }
    }
}

/// Filesystems frozen until [`Frozen::thaw`] or drop.
pub struct Frozen {
    mounts: Vec<(File, String)>,
    guardian: Option<(libc::pid_t, RawFd)>,
    /// What could not be frozen, and why.
    pub problems: Vec<String>,
}

impl Frozen {
    pub fn mountpoints(&self) -> Vec<String> {
        self.mounts.iter().map(|(_, m)| m.clone()).collect()
    }

    pub fn consistency(&self) -> Consistency {
        if self.problems.is_empty() {
            Consistency::Frozen
        } else {
            Consistency::NotCrashConsistent
        }
    }

    /// Freezes every writable filesystem of `live` (outermost mount points last, so a nested
    /// mount is frozen before the one it sits in).
    pub fn freeze(live: &Live) -> Frozen {
        let mut fr = Frozen { mounts: Vec::new(), guardian: None, problems: live.invisible.clone() };
        let mut opened = Vec::new();
        let mut order: Vec<&Mount> = live.writable.iter().collect();
        order.sort_by_key(|m| std::cmp::Reverse(m.point.len()));
        for m in order {
            match File::open(&m.point) {
                Ok(f) => opened.push((f, m.point.clone())),
                Err(e) => fr.problems.push(format!("cannot open {} to freeze it: {e}", m.point)),
            }
        }
        if opened.is_empty() {
            return fr;
        }
        let fds: Vec<RawFd> = opened.iter().map(|(f, _)| f.as_raw_fd()).collect();
        fr.guardian = guardian(&fds);
        if fr.guardian.is_none() {
            log::warn!("no guardian process: if ferry is killed with SIGKILL, run `fsfreeze -u` yourself");
        }
        if let Some((_, w)) = fr.guardian {
            GUARDIANS.lock().unwrap_or_else(|e| e.into_inner()).push(w);
        }
        let mut devs = Vec::new();
        for (f, point) in opened {
            let mut arg: libc::c_int = 0;
            // SAFETY: FIFREEZE on a directory we opened.
            match unsafe { fifreeze(f.as_raw_fd(), &mut arg) } {
                Ok(_) => {
                    FROZEN.lock().unwrap_or_else(|e| e.into_inner()).push(f.as_raw_fd());
                    if let Ok(st) = nix::sys::stat::fstat(&f) {
                        devs.push(st.st_dev);
                    }
                    log::info!("froze {point} for the final pass");
                    fr.mounts.push((f, point));
                }
                Err(e) => fr.problems.push(format!("cannot freeze {point}: {e}")),
            }
        }
        // From here on, nothing may be written to the frozen filesystems: hold our own output
        // if it goes there.
        crate::console::hold_for(&devs);
        for p in &fr.problems {
            log::warn!("{p}: this pass is not crash-consistent");
        }
        fr
    }

    /// Thaws in reverse order and lets the guardian go.
    pub fn thaw(&mut self) {
        for (f, point) in self.mounts.drain(..).rev() {
            FROZEN.lock().unwrap_or_else(|e| e.into_inner()).retain(|&x| x != f.as_raw_fd());
            match thaw_fd(f.as_raw_fd()) {
                Ok(_) => log::info!("thawed {point}"),
                Err(e) => log::error!("thawing {point} failed: {e}; run `fsfreeze -u {point}`"),
            }
        }
        if let Some((pid, w)) = self.guardian.take() {
            GUARDIANS.lock().unwrap_or_else(|e| e.into_inner()).retain(|&x| x != w);
            // SAFETY: our own pipe and child.
            unsafe {
                libc::write(w, b"T".as_ptr().cast(), 1);
                libc::close(w);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        crate::console::release();
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.thaw();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fithaw_request_number_matches_the_kernel() {
        // _IOWR('X', 120, int), used raw in the guardian after fork.
        assert_eq!(nix::request_code_readwrite!(b'X', 120, std::mem::size_of::<libc::c_int>()), 0xC004_5878);
    }
}
