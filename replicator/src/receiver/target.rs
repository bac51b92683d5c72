//! One target (block device or image file) on the receiving side: opened exclusively, checked
//! not to be in use, written with positioned writes, zeroed with BLKZEROOUT or hole punching.

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

nix::ioctl_write_ptr_bad!(blkzeroout, 0x127f, [u64; 2]);

pub struct Target {
    pub path: PathBuf,
    pub file: File,
    pub size: u64,
    pub block_device: bool,
}

/// Is a regular file attached to a loop device or mounted?
fn file_in_use(path: &Path) -> Option<String> {
    let canon = std::fs::canonicalize(path).ok()?;
    let loops = std::fs::read_dir("/sys/block").ok()?;
    for l in loops.flatten() {
        let bf = l.path().join("loop/backing_file");
        if let Ok(b) = std::fs::read_to_string(&bf) {
            if Path::new(b.trim()) == canon {
                return Some(format!("attached to /dev/{}", l.file_name().to_string_lossy()));
            }
        }
    }
    None
}

impl Target {
    /// Opens for writing, refusing targets that are mounted or held by someone else.
    pub fn open(path: &Path) -> Result<Self> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("target {} does not exist", path.display()))?;
        let block_device = meta.file_type().is_block_device();
        if !block_device && !meta.is_file() {
            bail!("target {} is neither a block device nor a regular file", path.display());
        }
        if !block_device {
            if let Some(why) = file_in_use(path) {
                bail!("target {} is in use ({why})", path.display());
            }
        }
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        if block_device {
            o.custom_flags(libc::O_EXCL);
        }
        let file = o.open(path).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                anyhow::anyhow!("target {} is in use (mounted or held by another process)", path.display())
            } else {
                anyhow::anyhow!("opening target {}: {e}", path.display())
            }
        })?;
        let size = crate::layout::size_of(&file)?;
        Ok(Target { path: path.to_path_buf(), file, size, block_device })
    }

    fn check(&self, offset: u64, len: u64) -> Result<()> {
        if offset.checked_add(len).is_none_or(|e| e > self.size) {
            bail!(
                "write of {len} bytes at {offset} is beyond the end of {} ({} bytes)",
                self.path.display(),
                self.size
            );
        }
        Ok(())
    }

    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.check(offset, data.len() as u64)?;
        self.file
            .write_all_at(data, offset)
            .with_context(|| format!("writing {} at {offset}", self.path.display()))
    }

    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, offset)
            .with_context(|| format!("reading {} at {offset}", self.path.display()))
    }

    /// Makes `[offset, offset + len)` read as zeros.
    pub fn zero(&self, offset: u64, len: u64) -> Result<()> {
        self.check(offset, len)?;
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        let done = if self.block_device {
            let range = [offset, len];
            // SAFETY: BLKZEROOUT reads a [start, len] pair.
            offset.is_multiple_of(512) && len.is_multiple_of(512) && unsafe { blkzeroout(fd, &range) }.is_ok()
        } else {
            let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
            // SAFETY: plain fallocate on our own descriptor.
            unsafe { libc::fallocate(fd, mode, offset as i64, len as i64) == 0 }
        };
        if !done {
            let zeros = vec![0u8; 1 << 20];
            let mut cur = offset;
            while cur < offset + len {
                let n = (offset + len - cur).min(zeros.len() as u64) as usize;
                self.write(cur, &zeros[..n])?;
                cur += n as u64;
            }
        }
        Ok(())
    }

    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().with_context(|| format!("syncing {}", self.path.display()))
    }

    /// Drops cached pages so a verification reads what is really on the device.
    pub fn drop_cache(&self) {
        use std::os::fd::AsRawFd;
        let _ = self.sync();
        // SAFETY: advisory call on our own descriptor.
        unsafe { libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}
