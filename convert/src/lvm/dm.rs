//! The device-mapper ioctl interface (linux/dm-ioctl.h, version 4): create a device, load a
//! table, resume it, remove it. Only what LV activation needs.

use anyhow::{Context, Result};
use std::os::fd::AsRawFd;

const NAME_LEN: usize = 128;
const UUID_LEN: usize = 129;
/// sizeof(struct dm_ioctl).
const HEADER: usize = 312;
/// sizeof(struct dm_target_spec).
const SPEC: usize = 40;
const DM_READONLY_FLAG: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy)]
struct DmIoctl {
    version: [u32; 3],
    data_size: u32,
    data_start: u32,
    target_count: u32,
    open_count: i32,
    flags: u32,
    event_nr: u32,
    padding: u32,
    dev: u64,
    name: [u8; NAME_LEN],
    uuid: [u8; UUID_LEN],
    data: [u8; 7],
}

const _: () = assert!(std::mem::size_of::<DmIoctl>() == HEADER);

nix::ioctl_readwrite!(dm_dev_create, 0xfd, 3, DmIoctl);
nix::ioctl_readwrite!(dm_dev_remove, 0xfd, 4, DmIoctl);
nix::ioctl_readwrite!(dm_dev_suspend, 0xfd, 6, DmIoctl);
nix::ioctl_readwrite!(dm_table_load, 0xfd, 9, DmIoctl);

/// One line of a table: start and length in sectors, target type, parameters.
#[derive(Clone, PartialEq)]
pub struct Target {
    pub start: u64,
    pub len: u64,
    pub kind: String,
    pub params: String,
}

/// A crypt target's parameters hold its key: they are never printed.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let params = if self.kind == "crypt" { "<key withheld>" } else { self.params.as_str() };
        write!(f, "{} {} {} {}", self.start, self.len, self.kind, params)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if self.kind == "crypt" {
            zeroize::Zeroize::zeroize(&mut self.params);
        }
    }
}

fn header(name: &str, uuid: &str, data_size: usize) -> DmIoctl {
    let mut h = DmIoctl {
        version: [4, 0, 0],
        data_size: data_size as u32,
        data_start: HEADER as u32,
        target_count: 0,
        open_count: 0,
        flags: 0,
        event_nr: 0,
        padding: 0,
        dev: 0,
        name: [0; NAME_LEN],
        uuid: [0; UUID_LEN],
        data: [0; 7],
    };
    let n = name.len().min(NAME_LEN - 1);
    h.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let u = uuid.len().min(UUID_LEN - 1);
    h.uuid[..u].copy_from_slice(&uuid.as_bytes()[..u]);
    h
}

fn control() -> Result<std::fs::File> {
    let path = std::path::Path::new("/dev/mapper/control");
    if !path.exists() {
        // Loading dm-mod makes devtmpfs create the node.
        crate::modules::load("dm-mod");
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")
        .context("opening /dev/mapper/control (is dm-mod loaded?)")
}

/// The table-load payload: header, then each target spec followed by its NUL-terminated
/// parameters, padded to 8 bytes, `next` pointing at the following spec.
fn table_buffer(name: &str, targets: &[Target], readonly: bool) -> Vec<u8> {
    let mut body = Vec::new();
    for t in targets {
        let mut spec = vec![0u8; SPEC];
        spec[0..8].copy_from_slice(&t.start.to_ne_bytes());
        spec[8..16].copy_from_slice(&t.len.to_ne_bytes());
        let k = t.kind.len().min(15);
        spec[24..24 + k].copy_from_slice(&t.kind.as_bytes()[..k]);
        let mut params = t.params.as_bytes().to_vec();
        params.push(0);
        while !(SPEC + params.len()).is_multiple_of(8) {
            params.push(0);
        }
        let next = (SPEC + params.len()) as u32;
        spec[20..24].copy_from_slice(&next.to_ne_bytes());
        body.extend(spec);
        body.extend(params);
    }
    let mut h = header(name, "", HEADER + body.len());
    h.target_count = targets.len() as u32;
    if readonly {
        h.flags |= DM_READONLY_FLAG;
    }
    let mut buf = vec![0u8; HEADER];
    // SAFETY: DmIoctl is repr(C) plain data of exactly HEADER bytes.
    buf.copy_from_slice(unsafe { std::slice::from_raw_parts((&h as *const DmIoctl).cast::<u8>(), HEADER) });
    buf.extend(body);
    buf
}

/// Creates `name` with `targets` and makes it live. Returns the device number (major, minor).
pub fn create(name: &str, uuid: &str, targets: &[Target], readonly: bool) -> Result<(u64, u64)> {
    let ctl = control()?;
    let fd = ctl.as_raw_fd();
    let mut h = header(name, uuid, HEADER);
    // SAFETY: h is a valid dm_ioctl of data_size bytes.
    unsafe { dm_dev_create(fd, &mut h) }.with_context(|| format!("device-mapper: creating {name}"))?;
    let dev = h.dev;
    let mut buf = table_buffer(name, targets, readonly);
    // SAFETY: buf starts with a dm_ioctl whose data_size is the buffer length; the kernel reads
    // and writes within data_size. The buffer is 8-byte aligned in practice (Vec<u8> from the
    // global allocator), and dm copies it with copy_from_user, which has no alignment needs.
    let r = unsafe { dm_table_load(fd, buf.as_mut_ptr().cast::<DmIoctl>()) };
    // A crypt table holds a key.
    zeroize::Zeroize::zeroize(&mut buf);
    let r = r.with_context(|| format!("device-mapper: loading the table of {name} ({targets:?})")).and_then(
        |_| {
            let mut h = header(name, "", HEADER);
            // SAFETY: as above; flags 0 means resume.
            unsafe { dm_dev_suspend(fd, &mut h) }.with_context(|| format!("device-mapper: resuming {name}"))
        },
    );
    if let Err(e) = r {
        let _ = remove(name);
        return Err(e);
    }
    // The kernel encodes dev_t the way new_encode_dev does, which glibc's major/minor decode.
    Ok((nix::sys::stat::major(dev), nix::sys::stat::minor(dev)))
}

/// Points `link` (`/dev/mapper/NAME`, `/dev/VG/LV`) at the device node `node` (`dm-3`). Only an
/// old symlink is replaced: a device node or file of this machine never.
pub fn link(link: &std::path::Path, node: &str) -> Result<()> {
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    match std::fs::symlink_metadata(link) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::remove_file(link).with_context(|| format!("replacing the link {}", link.display()))?
        }
        Ok(_) => anyhow::bail!("{} exists and is not a link", link.display()),
        Err(_) => {}
    }
    let target = format!("../{node}");
    std::os::unix::fs::symlink(&target, link)
        .with_context(|| format!("linking {} to {target}", link.display()))
}

/// The kernel's name (`dm-3`) of the block device `major:minor`.
pub fn node_name(major: u64, minor: u64) -> String {
    std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| format!("dm-{minor}"))
}

/// Removes a device.
pub fn remove(name: &str) -> Result<()> {
    let ctl = control()?;
    let mut h = header(name, "", HEADER);
    // SAFETY: h is a valid dm_ioctl.
    unsafe { dm_dev_remove(ctl.as_raw_fd(), &mut h) }
        .with_context(|| format!("device-mapper: removing {name}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_layout() {
        let t = [
            Target { start: 0, len: 8192, kind: "linear".into(), params: "253:3 2048".into() },
            Target { start: 8192, len: 100, kind: "linear".into(), params: "8:1 0".into() },
        ];
        let b = table_buffer("vg0-root", &t, false);
        assert_eq!(u32::from_ne_bytes(b[12..16].try_into().unwrap()) as usize, b.len());
        assert_eq!(u32::from_ne_bytes(b[20..24].try_into().unwrap()), 2);
        assert_eq!(&b[48..56], b"vg0-root");
        let first = &b[HEADER..];
        let next = u32::from_ne_bytes(first[20..24].try_into().unwrap()) as usize;
        assert_eq!(next % 8, 0);
        assert_eq!(&first[24..30], b"linear");
        assert_eq!(&first[SPEC..SPEC + 11], b"253:3 2048\0");
        let second = &first[next..];
        assert_eq!(u64::from_ne_bytes(second[0..8].try_into().unwrap()), 8192);
        assert_eq!(&second[SPEC..SPEC + 6], b"8:1 0\0");
    }
}
