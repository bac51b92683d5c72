//! Early mounts: the pseudo filesystems PID 1 needs before anything else.

use nix::mount::{mount, MsFlags};

/// Mounts /proc, /sys, /dev, /dev/pts, /run and /tmp, and points fds 0-2 at /dev/console.
pub fn early() -> Vec<String> {
    let table: &[(&str, &str, &str, MsFlags, &str)] = &[
        ("proc", "/proc", "proc", MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, ""),
        ("sysfs", "/sys", "sysfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, ""),
        ("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, "mode=0755"),
        ("devpts", "/dev/pts", "devpts", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, "gid=5,mode=620"),
        ("tmpfs", "/run", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, "mode=0755"),
        ("tmpfs", "/tmp", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, "mode=1777"),
    ];
    let mut problems = Vec::new();
    for (src, dst, fs, flags, data) in table {
        let _ = std::fs::create_dir_all(dst);
        if let Err(e) = mount(Some(*src), *dst, Some(*fs), *flags, Some(*data)) {
            if e != nix::errno::Errno::EBUSY {
                problems.push(format!("mounting {fs} on {dst}: {e}"));
            }
        }
    }
    if let Ok(c) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/console") {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of our own process.
            unsafe { libc::dup2(c.as_raw_fd(), fd) };
        }
    }
    problems
}
