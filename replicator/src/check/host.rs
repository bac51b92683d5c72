//! Where the source checks look: the system's root, `/proc`, `/sys`, the environment, a command
//! runner and `statvfs` — the real machine, or a fixture tree and fakes in tests.

use crate::sender::stack::{self, Mount, Sys};
use anyhow::{Context, Result};
use ferry_convert::cmd::Runner;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Space and inodes of a mounted filesystem (`statvfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub size: u64,
    /// Free bytes (including the root reserve).
    pub free: u64,
    /// Bytes available to writers (`df`'s "Available": without the reserves).
    pub avail: u64,
    pub files: u64,
    pub files_free: u64,
}

impl Usage {
    /// Used space in %, as `df` shows it: used ÷ (used + available).
    pub fn used_percent(&self) -> f64 {
        let used = self.size.saturating_sub(self.free);
        super::pct(used as f64, (used + self.avail) as f64)
    }

    pub fn of(path: &Path) -> Result<Usage> {
        let s = nix::sys::statvfs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
        let frag = s.fragment_size() as u64;
        Ok(Usage {
            size: s.blocks() as u64 * frag,
            free: s.blocks_free() as u64 * frag,
            avail: s.blocks_available() as u64 * frag,
            files: s.files() as u64,
            files_free: s.files_free() as u64,
        })
    }
}

pub type StatFs = dyn Fn(&Path) -> Result<Usage>;

/// The machine being checked.
pub struct Host {
    /// The running system's root (`/`).
    pub root: PathBuf,
    pub proc: PathBuf,
    pub sys: Sys,
    /// The environment (for proxy settings).
    pub env: Vec<(String, String)>,
    pub run: Box<dyn Runner>,
    pub statfs: Box<StatFs>,
    /// `uname -m`.
    pub arch: String,
    /// Running as root (device reads, grub-mkconfig, firewall listing need it).
    pub privileged: bool,
    /// How long CPU use is sampled.
    pub cpu_window: Duration,
}

impl Host {
    pub fn system() -> Host {
        Host {
            root: "/".into(),
            proc: "/proc".into(),
            sys: Sys::system(),
            env: std::env::vars().collect(),
            run: Box::new(ferry_convert::cmd::Quick(Duration::from_secs(120))),
            statfs: Box::new(Usage::of),
            arch: nix::sys::utsname::uname()
                .map(|u| u.machine().to_string_lossy().into_owned())
                .unwrap_or_default(),
            privileged: nix::unistd::geteuid().is_root(),
            cpu_window: Duration::from_secs(1),
        }
    }

    /// A file under /proc, `None` when unreadable.
    pub fn proc_file(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.proc.join(rel)).ok()
    }

    /// This process's mounts.
    pub fn mounts(&self) -> Vec<Mount> {
        stack::parse_mountinfo(&self.proc_file("self/mountinfo").unwrap_or_default())
    }

    /// A path of the running system as seen from here (for statvfs).
    pub fn at(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }
}
