//! Test systems built by the generator scripts in `qemu-tests/fixtures/`, cached under
//! `$FERRY_CACHE/fixtures` keyed by the script's text and its arguments, so a second run is
//! quick and a fresh machine still builds them. Tests always work on copies.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A Debian `suite` disk image configured as a Xen guest with the disk layout `profile`
/// (`gpt-bios-ext4`, `gpt-uefi-xfs`, `mbr-lvm`; see `fixtures/debian-xen.sh`).
pub fn debian_xen(suite: &str, size_mib: u64, profile: &str) -> Result<PathBuf> {
    let script = crate::repo_root().join("qemu-tests/fixtures/debian-xen.sh");
    let text = std::fs::read_to_string(&script).with_context(|| format!("reading {}", script.display()))?;
    let key = crate::fnv(&format!("{text}\0{suite}\0{size_mib}\0{profile}"));
    let dir = crate::cache_dir().join("fixtures");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join(format!("debian-{suite}-{profile}-{key:016x}.img"));
    if !out.exists() {
        let tmp = out.with_extension("tmp");
        crate::run(Command::new(&script).arg(&tmp).arg(suite).arg(size_mib.to_string()).arg(profile))?;
        std::fs::rename(&tmp, &out)?;
    }
    Ok(out)
}

/// A sparse copy to work on.
pub fn copy(src: &Path, dst: &Path) -> Result<()> {
    crate::run(Command::new("cp").arg("--sparse=always").arg(src).arg(dst)).map(|_| ())
}

/// The Debian 12 Xen-guest fixture with its network configured by `stack` (`netplan`, `nm`,
/// `networkd`; see `fixtures/net-stack.sh`).
pub fn net_stack(stack: &str) -> Result<PathBuf> {
    derived("net-stack.sh", BOOKWORM, &[stack], &format!("net-{stack}"))
}

/// The Debian 12 Xen-guest fixture with its root on btrfs subvolume `@` and /home in `@home`
/// (see `fixtures/btrfs-root.sh`).
pub fn btrfs_root() -> Result<PathBuf> {
    derived("btrfs-root.sh", BOOKWORM, &[], "btrfs-root")
}

/// The Debian 11 LVM fixture in the RHEL layout: XFS root and a separate XFS /var on LVs of
/// vg0 (see `fixtures/xfs-lvm.sh`).
pub fn xfs_lvm() -> Result<PathBuf> {
    derived("xfs-lvm.sh", ("bullseye", "mbr-lvm"), &[], "xfs-lvm")
}

/// The array UUID of the MD RAID1 fixture.
pub const MD_UUID: [u8; 16] = *b"ferry-md-raid1-0";

/// The Debian 12 Xen-guest fixture with its root on MD RAID1 (metadata 1.2) over partition 2 of
/// two disks (see `fixtures/md-raid1.sh`): the two members, superblocks written here (the host
/// has no md driver) as mdadm writes them for a clean two-disk array.
pub fn md_raid1() -> Result<(PathBuf, PathBuf)> {
    use ferry_formats::md;
    use std::os::unix::fs::FileExt;
    let hex: String = MD_UUID.iter().map(|b| format!("{b:02x}")).collect();
    let uuid = format!("{}:{}:{}:{}", &hex[0..8], &hex[8..16], &hex[16..24], &hex[24..32]);
    let base = derived("md-raid1.sh", BOOKWORM, &[&uuid], "md-raid1")?;
    let out = [base.with_extension("a.img"), base.with_extension("b.img")];
    if out.iter().all(|o| o.exists()) {
        return Ok((out[0].clone(), out[1].clone()));
    }
    let table = crate::run(Command::new("sfdisk").arg("-J").arg(&base))?;
    let table: serde_json::Value = serde_json::from_str(&table)?;
    let p2 = &table["partitiontable"]["partitions"][1];
    let (start, size) =
        (p2["start"].as_u64().context("p2 start")? * 512, p2["size"].as_u64().context("p2 size")? * 512);
    let data_len = (size - (1 << 20)) / (1 << 20) * (1 << 20);
    for (i, o) in out.iter().enumerate() {
        let tmp = o.with_extension("tmp");
        copy(&base, &tmp)?;
        let sb = md::build(4096, MD_UUID, "ferry-md:0", 1, 2, i as u32, 1 << 20, data_len);
        let f = std::fs::OpenOptions::new().write(true).open(&tmp)?;
        f.write_all_at(&sb, start + 4096)?;
        drop(f);
        std::fs::rename(&tmp, o)?;
    }
    Ok((out[0].clone(), out[1].clone()))
}

/// The passphrase of the LUKS root fixture (also its key file inside, for unattended boots).
pub const LUKS_KEY: &[u8] = b"ferry luks root passphrase";

/// A partition of an image as a device of its own.
struct Region {
    f: std::fs::File,
    start: u64,
    len: u64,
}

impl ferry_formats::ReadAt for Region {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        if off.checked_add(buf.len() as u64).is_none_or(|e| e > self.len) {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        std::os::unix::fs::FileExt::read_exact_at(&self.f, buf, self.start + off)
    }
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len)
    }
}

/// The Debian 12 Xen-guest fixture with its root in a LUKS2 volume on partition 3 and /boot on
/// partition 2 (see `fixtures/luks-root.sh`), and the key file that opens it. The script leaves
/// the root filesystem as plaintext in the data segment (the host has no dm-crypt); it is
/// encrypted here with the volume key, as dm-crypt would (aes-xts-plain64, 512-byte sectors).
pub fn luks_root() -> Result<(PathBuf, PathBuf)> {
    use aes::cipher::KeyInit;
    use std::os::unix::fs::FileExt;
    let dir = crate::cache_dir().join("fixtures");
    std::fs::create_dir_all(&dir)?;
    let key = dir.join("luks-root.key");
    if std::fs::read(&key).ok().as_deref() != Some(LUKS_KEY) {
        std::fs::write(&key, LUKS_KEY)?;
    }
    let plain = derived("luks-root.sh", BOOKWORM, &[&key.display().to_string()], "luks-root")?;
    let out = plain.with_extension("enc.img");
    if out.exists() {
        return Ok((out, key));
    }
    let tmp = out.with_extension("tmp");
    copy(&plain, &tmp)?;
    let table: serde_json::Value =
        serde_json::from_str(&crate::run(Command::new("sfdisk").arg("-J").arg(&tmp))?)?;
    let p3 = &table["partitiontable"]["partitions"][2];
    let (start, len) =
        (p3["start"].as_u64().context("p3 start")? * 512, p3["size"].as_u64().context("p3 size")? * 512);
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&tmp)?;
    let part = Region { f: f.try_clone()?, start, len };
    let v = ferry_convert::luks::unlock(&part, LUKS_KEY).context("opening the fixture's LUKS header")?;
    anyhow::ensure!(
        v.cipher == "aes-xts-plain64" && v.key.len() == 64 && v.sector_size == 512,
        "unexpected {v:?}"
    );
    let xts =
        xts_mode::Xts128::new(aes::Aes256::new(v.key[..32].into()), aes::Aes256::new(v.key[32..].into()));
    let data = v.offset_sectors * 512;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while data + off < len {
        let n = (len - data - off).min(buf.len() as u64) as usize;
        f.read_exact_at(&mut buf[..n], start + data + off)?;
        xts.encrypt_area(&mut buf[..n], 512, (v.iv_tweak + off / 512) as u128, xts_mode::get_tweak_default);
        f.write_all_at(&buf[..n], start + data + off)?;
        off += n as u64;
    }
    drop(f);
    std::fs::rename(&tmp, &out)?;
    Ok((out, key))
}

const BOOKWORM: (&str, &str) = ("bookworm", "gpt-bios-ext4");

/// A fixture made from a base (suite, profile) by `fixtures/SCRIPT BASE OUT ARGS…`, cached by
/// the script's text, the base (its name holds its own key) and the arguments.
fn derived(script: &str, (suite, profile): (&str, &str), args: &[&str], name: &str) -> Result<PathBuf> {
    let base = debian_xen(suite, 2048, profile)?;
    let script = crate::repo_root().join("qemu-tests/fixtures").join(script);
    let text = std::fs::read_to_string(&script).with_context(|| format!("reading {}", script.display()))?;
    let key = crate::fnv(&format!("{text}\0{}\0{}", base.display(), args.join("\0")));
    let out = crate::cache_dir().join("fixtures").join(format!("debian-{suite}-{name}-{key:016x}.img"));
    if !out.exists() {
        let tmp = out.with_extension("tmp");
        crate::run(Command::new(&script).arg(&base).arg(&tmp).args(args))?;
        std::fs::rename(&tmp, &out)?;
    }
    Ok(out)
}
