//! The SELinux label of a file, read and written by descriptor, so a rewritten file keeps the
//! label its original had (an enforcing system would otherwise deny access to it on boot).
//! A filesystem without extended attributes simply has no label.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

pub const SELINUX: &std::ffi::CStr = c"security.selinux";

/// The attribute `name` of the open file `f`; `None` when it has none (or it is over 4 KiB).
pub fn get(f: &impl AsFd, name: &std::ffi::CStr) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: the buffer is writable for its length.
    let n =
        unsafe { libc::fgetxattr(f.as_fd().as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n > 0).then(|| {
        buf.truncate(n as usize);
        buf
    })
}

/// The attribute `name` of `file` in directory `dir` (not following a symlink there).
pub fn get_at(dir: &OwnedFd, file: &str, name: &std::ffi::CStr) -> Option<Vec<u8>> {
    let fd = nix::fcntl::openat(
        dir.as_fd(),
        file,
        nix::fcntl::OFlag::O_RDONLY
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_NONBLOCK
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    let st = nix::sys::stat::fstat(fd.as_fd()).ok()?;
    (super::Kind::of_mode(st.st_mode) == super::Kind::File).then(|| get(&fd, name)).flatten()
}

/// Sets the attribute; failures (no xattr support, no SELinux in this kernel) are ignored:
/// the relabel on first boot covers them.
pub fn set(f: &impl AsFd, name: &std::ffi::CStr, value: &[u8]) {
    // SAFETY: value is readable for its length.
    let _ = unsafe {
        libc::fsetxattr(f.as_fd().as_raw_fd(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0)
    };
}
