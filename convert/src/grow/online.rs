//! Grows mounted ext2/3/4, XFS and btrfs filesystems online with the kernel's own
//! ioctls (`EXT4_IOC_RESIZE_FS`, `XFS_IOC_FSGROWFSDATA`, `BTRFS_IOC_RESIZE`), without
//! resize2fs, xfs_growfs or btrfs-progs. Before any resize the mountpoint's statfs type is checked (the
//! ioctl numbers mean nothing elsewhere) and a block device must be the one
//! mounted there. It never shrinks: a device no larger than the fs is a no-op.

use anyhow::{bail, ensure, Context, Result};
use nix::sys::statfs::{fstatfs, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// What a growth did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grown {
    pub old_bytes: u64,
    pub new_bytes: u64,
}

impl Grown {
    fn new(old_bytes: u64, new_bytes: u64) -> Self {
        Grown { old_bytes, new_bytes }
    }
}

/// Filesystem family to grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fs {
    /// ext2/ext3/ext4 (all handled by the ext4 driver's online resize).
    Ext,
    /// XFS (data section only).
    Xfs,
    /// btrfs (the device it is mounted from, by its devid).
    Btrfs,
}

/// `struct btrfs_ioctl_vol_args` from `btrfs.h`: an fd and a name (`"DEVID:max"` to resize).
#[repr(C)]
struct BtrfsVolArgs {
    fd: i64,
    name: [u8; 4088],
}

nix::ioctl_write_ptr!(btrfs_resize, 0x94, 3, BtrfsVolArgs);

/// `struct btrfs_ioctl_fs_info_args` (1 KiB): the mounted filesystem's fsid at byte 16.
#[repr(C)]
struct BtrfsFsInfo {
    head: [u64; 2],
    fsid: [u8; 16],
    rest: [u8; 1024 - 32],
}

nix::ioctl_read!(btrfs_fs_info, 0x94, 31, BtrfsFsInfo);

/// `device` is a block device or file holding the btrfs mounted at `mountpoint` (same fsid).
fn check_btrfs_device(dir: &File, mountpoint: &Path, device: &Path) -> Result<bool> {
    let meta = std::fs::metadata(device).with_context(|| format!("stat of {}", device.display()))?;
    let ft = meta.file_type();
    ensure!(
        ft.is_file() || ft.is_block_device(),
        "{} is neither a block device nor a regular file",
        device.display()
    );
    let mut info = BtrfsFsInfo { head: [0; 2], fsid: [0; 16], rest: [0; 1024 - 32] };
    // SAFETY: valid open fd and a live struct of the size the ioctl number encodes.
    unsafe { btrfs_fs_info(dir.as_raw_fd(), &mut info) }
        .with_context(|| format!("BTRFS_IOC_FS_INFO on {}", mountpoint.display()))?;
    let f = File::open(device).with_context(|| format!("opening {}", device.display()))?;
    let mut fsid = [0u8; 16];
    f.read_exact_at(&mut fsid, 0x10000 + 0x20).with_context(|| format!("reading {}", device.display()))?;
    ensure!(fsid == info.fsid, "{} is not the device mounted at {}", device.display(), mountpoint.display());
    Ok(ft.is_block_device())
}

/// `struct xfs_fsop_geom_v1` from the XFS UAPI header `xfs_fs.h`.
#[repr(C)]
#[derive(Debug, Default)]
struct XfsGeomV1 {
    blocksize: u32,
    rtextsize: u32,
    agblocks: u32,
    agcount: u32,
    logblocks: u32,
    sectsize: u32,
    inodesize: u32,
    imaxpct: u32,
    datablocks: u64,
    rtblocks: u64,
    rtextents: u64,
    logstart: u64,
    uuid: [u8; 16],
    sunit: u32,
    swidth: u32,
    version: i32,
    flags: u32,
    logsectsize: u32,
    rtsectsize: u32,
    dirblocksize: u32,
}

/// `struct xfs_growfs_data` from `xfs_fs.h`.
#[repr(C)]
struct XfsGrowfsData {
    newblocks: u64,
    imaxpct: u32,
}

// The ioctl numbers encode these sizes; on LP64 the C layouts pad to 8.
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(std::mem::size_of::<XfsGeomV1>() == 112);
    assert!(std::mem::size_of::<XfsGrowfsData>() == 16);
};

// EXT4_IOC_RESIZE_FS = _IOW('f', 16, __u64)
nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);
// XFS_IOC_FSGEOMETRY_V1 = _IOR('X', 100, struct xfs_fsop_geom_v1)
nix::ioctl_read!(xfs_fsgeometry_v1, b'X', 100, XfsGeomV1);
// XFS_IOC_FSGROWFSDATA = _IOW('X', 110, struct xfs_growfs_data)
nix::ioctl_write_ptr!(xfs_growfs_data, b'X', 110, XfsGrowfsData);
// BLKGETSIZE64 = _IOR(0x12, 114, size_t), but the kernel always writes a u64.
nix::ioctl_read_bad!(blk_getsize64, nix::request_code_read!(0x12, 114, std::mem::size_of::<usize>()), u64);

/// Grows the ext2/3/4 or XFS filesystem mounted at `mountpoint` to fill
/// `device` (the block device or regular file it is mounted from; its size
/// is read with BLKGETSIZE64, or the metadata length for a regular file).
pub fn grow_mounted(mountpoint: &Path, device: &Path, fstype: Fs) -> Result<Grown> {
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(mountpoint)
        .with_context(|| format!("opening mountpoint {}", mountpoint.display()))?;
    check_fs_type(&dir, mountpoint, fstype)?;
    // A btrfs mount's st_dev is an anonymous number, not its device's: the fsid must match.
    let is_block = if fstype == Fs::Btrfs {
        check_btrfs_device(&dir, mountpoint, device)?
    } else {
        check_device(&dir, mountpoint, device)?
    };
    let dev_bytes = device_size(device, is_block)?;
    match fstype {
        Fs::Ext => grow_ext(&dir, mountpoint, device, dev_bytes, is_block),
        Fs::Xfs => grow_xfs(&dir, mountpoint, dev_bytes),
        Fs::Btrfs => grow_btrfs(&dir, mountpoint, device, dev_bytes),
    }
}

fn check_fs_type(dir: &File, mountpoint: &Path, fstype: Fs) -> Result<()> {
    let st = fstatfs(dir).with_context(|| format!("statfs on {}", mountpoint.display()))?;
    let (want, name) = match fstype {
        Fs::Ext => (EXT4_SUPER_MAGIC, "ext2/3/4"),
        Fs::Xfs => (XFS_SUPER_MAGIC, "XFS"),
        Fs::Btrfs => (BTRFS_SUPER_MAGIC, "btrfs"),
    };
    let got = st.filesystem_type();
    ensure!(
        got == want,
        "{} is not on an {name} filesystem (statfs type {:#x})",
        mountpoint.display(),
        got.0
    );
    Ok(())
}

/// Checks `device` is a block device backing `mountpoint` or a regular file;
/// returns whether it is a block device.
fn check_device(dir: &File, mountpoint: &Path, device: &Path) -> Result<bool> {
    let meta = std::fs::metadata(device).with_context(|| format!("stat of {}", device.display()))?;
    let ft = meta.file_type();
    if ft.is_file() {
        return Ok(false);
    }
    ensure!(ft.is_block_device(), "{} is neither a block device nor a regular file", device.display());
    let mnt = dir.metadata().with_context(|| format!("stat of {}", mountpoint.display()))?;
    ensure!(
        meta.rdev() == mnt.dev(),
        "{} is not the device mounted at {}",
        device.display(),
        mountpoint.display()
    );
    Ok(true)
}

fn device_size(device: &Path, is_block: bool) -> Result<u64> {
    let f = File::open(device).with_context(|| format!("opening {}", device.display()))?;
    if !is_block {
        let meta = f.metadata().with_context(|| format!("stat of {}", device.display()))?;
        return Ok(meta.len());
    }
    let mut size = 0u64;
    // SAFETY: valid open fd and a live, properly aligned u64 out-pointer.
    unsafe { blk_getsize64(f.as_raw_fd(), &mut size) }
        .with_context(|| format!("BLKGETSIZE64 on {}", device.display()))?;
    Ok(size)
}

/// Fields of the ext2/3/4 superblock needed for a resize.
struct ExtSuper {
    block_size: u64,
    blocks: u64,
    is_64bit: bool,
}

fn le32(b: &[u8; 1024], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn parse_ext_super(b: &[u8; 1024]) -> Result<ExtSuper> {
    let magic = u16::from_le_bytes([b[0x38], b[0x39]]);
    ensure!(magic == 0xEF53, "no ext2/3/4 superblock (magic {magic:#x})");
    let log = le32(b, 0x18);
    ensure!(log <= 6, "implausible s_log_block_size {log}");
    let is_64bit = le32(b, 0x60) & 0x80 != 0;
    let hi = u64::from(if is_64bit { le32(b, 0x150) } else { 0 });
    Ok(ExtSuper { block_size: 1024u64 << log, blocks: hi << 32 | u64::from(le32(b, 0x4)), is_64bit })
}

fn read_ext_super(device: &Path) -> Result<ExtSuper> {
    let f = File::open(device).with_context(|| format!("opening {}", device.display()))?;
    let mut buf = [0u8; 1024];
    f.read_exact_at(&mut buf, 1024)
        .with_context(|| format!("reading ext superblock of {}", device.display()))?;
    parse_ext_super(&buf).with_context(|| format!("parsing superblock of {}", device.display()))
}

fn grow_ext(dir: &File, mountpoint: &Path, device: &Path, dev_bytes: u64, is_block: bool) -> Result<Grown> {
    let sb = read_ext_super(device)?;
    let bs = sb.block_size;
    let mut target = dev_bytes / bs;
    if !sb.is_64bit {
        target = target.min(u64::from(u32::MAX));
    }
    let old_bytes = sb.blocks.saturating_mul(bs);
    if target <= sb.blocks {
        return Ok(Grown::new(old_bytes, old_bytes));
    }
    // SAFETY: valid open fd and a live u64 the kernel only reads.
    if let Err(e) = unsafe { ext4_resize_fs(dir.as_raw_fd(), &target) } {
        let hint = match e {
            nix::Error::EPERM => " (needs CAP_SYS_RESOURCE and an error-free filesystem)",
            nix::Error::EOPNOTSUPP => " (online resize unsupported for this feature set)",
            _ => "",
        };
        bail!(
            "EXT4_IOC_RESIZE_FS on {} from {} to {target} blocks of {bs} bytes failed: {e}{hint}",
            mountpoint.display(),
            sb.blocks
        );
    }
    // A block device shares its page cache with the mounted filesystem, so
    // the superblock read back is current; an image file's may lag.
    let new_blocks = if is_block { read_ext_super(device)?.blocks.max(sb.blocks) } else { target };
    let new_bytes = new_blocks.saturating_mul(bs);
    Ok(Grown::new(old_bytes, new_bytes))
}

fn xfs_geometry(dir: &File, mountpoint: &Path) -> Result<XfsGeomV1> {
    let mut geo = XfsGeomV1::default();
    // SAFETY: valid open fd and a live #[repr(C)] struct of the encoded size.
    unsafe { xfs_fsgeometry_v1(dir.as_raw_fd(), &mut geo) }
        .with_context(|| format!("XFS_IOC_FSGEOMETRY_V1 on {}", mountpoint.display()))?;
    ensure!(geo.blocksize > 0, "XFS on {} reports block size 0", mountpoint.display());
    Ok(geo)
}

/// The devid and size btrfs records for `device` (its superblock's `dev_item`).
fn btrfs_dev_item(device: &Path) -> Result<(u64, u64)> {
    let f = File::open(device).with_context(|| format!("opening {}", device.display()))?;
    let mut sb = [0u8; 0x130];
    f.read_exact_at(&mut sb, 0x10000)
        .with_context(|| format!("reading the btrfs superblock of {}", device.display()))?;
    ensure!(&sb[0x40..0x48] == b"_BHRfS_M", "no btrfs superblock on {}", device.display());
    let u64_at = |o: usize| u64::from_le_bytes(sb[o..o + 8].try_into().unwrap());
    Ok((u64_at(0xc9), u64_at(0xd1)))
}

fn grow_btrfs(dir: &File, mountpoint: &Path, device: &Path, dev_bytes: u64) -> Result<Grown> {
    let (devid, old_bytes) = btrfs_dev_item(device)?;
    let new_bytes = dev_bytes / 4096 * 4096;
    if new_bytes <= old_bytes {
        return Ok(Grown::new(old_bytes, old_bytes));
    }
    let mut args = BtrfsVolArgs { fd: 0, name: [0; 4088] };
    let name = format!("{devid}:max");
    args.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: valid open fd and a live, fully initialised struct the kernel only reads.
    unsafe { btrfs_resize(dir.as_raw_fd(), &args) }
        .with_context(|| format!("BTRFS_IOC_RESIZE {name} on {}", mountpoint.display()))?;
    Ok(Grown::new(old_bytes, new_bytes))
}

fn grow_xfs(dir: &File, mountpoint: &Path, dev_bytes: u64) -> Result<Grown> {
    let geo = xfs_geometry(dir, mountpoint)?;
    let bs = u64::from(geo.blocksize);
    let target = dev_bytes / bs;
    let old_bytes = geo.datablocks.saturating_mul(bs);
    if target <= geo.datablocks {
        return Ok(Grown::new(old_bytes, old_bytes));
    }
    let req = XfsGrowfsData { newblocks: target, imaxpct: geo.imaxpct };
    // SAFETY: valid open fd and a live #[repr(C)] struct of the encoded size.
    unsafe { xfs_growfs_data(dir.as_raw_fd(), &req) }.with_context(|| {
        format!(
            "XFS_IOC_FSGROWFSDATA on {} from {} to {target} blocks of {bs} bytes",
            mountpoint.display(),
            geo.datablocks
        )
    })?;
    let new_bytes = xfs_geometry(dir, mountpoint)?.datablocks.saturating_mul(bs);
    Ok(Grown::new(old_bytes, new_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_64bit_superblock() {
        let mut b = [0u8; 1024];
        b[0x38..0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        b[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes());
        b[0x60..0x64].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x4..0x8].copy_from_slice(&5u32.to_le_bytes());
        b[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        let sb = parse_ext_super(&b).unwrap();
        assert_eq!((sb.block_size, sb.blocks), (4096, (1 << 32) | 5));
        b[0x60] = 0;
        assert_eq!(parse_ext_super(&b).unwrap().blocks, 5);
        b[0x38] = 0;
        assert!(parse_ext_super(&b).is_err());
    }
}
