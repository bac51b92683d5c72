//! LUKS volumes opened for conversion with the keys the sender gave (`ferry send
//! --luks-key-file`): each key is tried on each volume ([`crate::luks::unlock`], pure Rust), and
//! an unlocked volume becomes a dm-crypt device named as the migrated system's crypttab names it
//! (`/dev/mapper/NAME`, dm uuid `CRYPT-LUKS2-<uuid>-NAME` as cryptsetup makes it), so its own
//! cryptsetup-initramfs recognises the root's device when the initramfs is rebuilt. Keys live
//! in memory only (zeroed when dropped) and never reach a log, a report or the disk. A volume
//! no key opens is named with the reason; the root inside it then is not found, and the
//! conversion stops before it changes anything. The returned guard removes the devices.

use crate::lvm::dm;
use crate::probe::Part;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// Most keys a sender may give, and the most bytes of each (cryptsetup's interactive
/// passphrases are at most 512 bytes; key files are usually 4 KiB or less).
pub const MAX_KEYS: usize = 8;
pub const MAX_KEY_LEN: usize = 64 << 10;

/// A passphrase or key file's bytes. Never printed.
#[derive(Clone)]
pub struct Key(pub Zeroizing<Vec<u8>>);

impl Key {
    pub fn new(bytes: Vec<u8>) -> Key {
        Key(Zeroizing::new(bytes))
    }
}

/// Reads a passphrase or key file: its exact bytes, as `cryptsetup --key-file` uses them (a
/// trailing newline is part of the key), at most [`MAX_KEY_LEN`].
pub fn read_key_file(path: &std::path::Path) -> Result<Key> {
    use std::io::Read;
    let f = std::fs::File::open(path).with_context(|| format!("opening the key file {}", path.display()))?;
    let mut buf = Zeroizing::new(Vec::new());
    f.take(MAX_KEY_LEN as u64 + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading the key file {}", path.display()))?;
    anyhow::ensure!(
        (1..=MAX_KEY_LEN).contains(&buf.len()),
        "the key file {} must hold 1 to {MAX_KEY_LEN} bytes",
        path.display()
    );
    Ok(Key(buf))
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<key of {} bytes>", self.0.len())
    }
}

/// An opened volume.
#[derive(Debug)]
pub struct Volume {
    /// `/dev/mapper/NAME`
    pub dev: PathBuf,
    pub name: String,
    /// The LUKS device it is opened from.
    pub backing: PathBuf,
}

/// Opened volumes; dropping it removes their devices and links.
#[derive(Debug, Default)]
pub struct Active {
    pub volumes: Vec<Volume>,
    /// LUKS devices not opened, and why.
    pub failed: Vec<String>,
}

impl Drop for Active {
    fn drop(&mut self) {
        nix::unistd::sync();
        for v in self.volumes.drain(..).rev() {
            let _ = std::fs::remove_file(&v.dev);
            if let Err(e) = dm::remove(&v.name) {
                log::warn!("crypt: {e:#}");
            }
        }
    }
}

/// A dm name from a migrated system's crypttab, when it is one cryptsetup accepts and that is
/// safe as a file name under /dev/mapper.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 127
        && !n.starts_with('.')
        && n != "control"
        && n.bytes().all(|c| c.is_ascii_alphanumeric() || b"_.+-".contains(&c))
}

/// crypttab's volume names by the LUKS UUID of their source (`UUID=`, or a device name the
/// parts resolve), for the names dm devices get. Names cryptsetup would refuse are skipped.
pub fn crypttab_names(text: &str, parts: &[Part], map: &crate::rewrite::DevMap) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let mut f = line.split_whitespace();
        let (Some(name), Some(source)) = (f.next(), f.next()) else { continue };
        if !valid_name(name) {
            log::warn!("crypt: crypttab name {name:?} is not one cryptsetup accepts; ignored");
            continue;
        }
        if let Some(p) =
            crate::mount::resolve(source, parts, map).filter(|p| p.is(ferry_formats::FsType::Luks))
        {
            out.entry(p.uuid.to_ascii_lowercase()).or_insert_with(|| name.to_string());
        }
    }
    out
}

fn open_one(p: &Part, keys: &[Key], name: &str) -> Result<Volume> {
    let f = std::fs::File::open(&p.dev).with_context(|| format!("opening {}", p.dev.display()))?;
    let mut last = None;
    let mut vol = None;
    for k in keys {
        match crate::luks::unlock(&f, &k.0) {
            Ok(v) => {
                vol = Some(v);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let v = match (vol, last) {
        (Some(v), _) => v,
        (None, Some(crate::luks::LuksError::WrongKey)) | (None, None) => {
            anyhow::bail!("none of the {} keys given opens it", keys.len())
        }
        (None, Some(e)) => return Err(e).context("unlocking"),
    };
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(&p.dev)?.rdev();
    let majmin = format!("{}:{}", nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let sectors = ferry_formats::ReadAt::size(&f)? / 512;
    let (len, params) = crate::luks::dm_crypt_table(&v, &majmin, sectors);
    let target = dm::Target { start: 0, len, kind: "crypt".into(), params };
    anyhow::ensure!(len > 0, "its data segment does not fit the device ({sectors} sectors)");
    let uuid = format!("CRYPT-LUKS{}-{}-{name}", v.version, v.uuid.replace('-', ""));
    for m in ["dm-crypt", "ecb", "xts", "aesni-intel", "essiv"] {
        crate::modules::load(m);
    }
    let (major, minor) = dm::create(name, &uuid, std::slice::from_ref(&target), false)?;
    let dev = PathBuf::from(format!("/dev/mapper/{name}"));
    if let Err(e) = dm::link(&dev, &dm::node_name(major, minor)) {
        let _ = dm::remove(name);
        return Err(e);
    }
    Ok(Volume { dev, name: name.to_string(), backing: p.dev.clone() })
}

/// Opens every LUKS part with the first of `keys` that fits, named by `names` (LUKS UUID →
/// crypttab name) or `luks-<UUID>` (systemd's name for a volume crypttab does not list).
pub fn open(luks: &[&Part], keys: &[Key], names: &BTreeMap<String, String>) -> Active {
    let mut out = Active::default();
    for p in luks {
        let uuid = p.uuid.to_ascii_lowercase();
        let what = format!("LUKS volume {} (UUID {uuid})", p.dev.display());
        if keys.is_empty() {
            out.failed.push(format!("{what}: no key was given (ferry send --luks-key-file)"));
            continue;
        }
        let name = names.get(&uuid).cloned().unwrap_or_else(|| format!("luks-{uuid}"));
        if !valid_name(&name) {
            out.failed.push(format!("{what}: no usable name"));
            continue;
        }
        match open_one(p, keys, &name) {
            Ok(v) => {
                log::info!("crypt: opened {what} as {}", v.dev.display());
                out.volumes.push(v);
            }
            Err(e) => {
                log::warn!("crypt: {what}: {e:#}");
                out.failed.push(format!("{what}: {e:#}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(dev: &str, uuid: &str) -> Part {
        Part {
            dev: dev.into(),
            disk: 0,
            number: 3,
            fstype: Some(ferry_formats::FsType::Luks),
            uuid: uuid.into(),
            label: String::new(),
            aliases: Vec::new(),
        }
    }

    #[test]
    fn crypttab_names_by_luks_uuid() {
        let parts = [part("/dev/vda3", "0F1E-aa"), part("/dev/vdb1", "bb")];
        let mut map = crate::rewrite::DevMap::default();
        map.add(1, 1, "UUID=bb");
        let text = "# name source key options\nroot_crypt UUID=0f1e-AA /etc/keys/root.key luks\n\
                    ../evil UUID=bb none luks\nsrv_crypt /dev/xvdb1 none luks\nswap /dev/urandom swap\n";
        let names = crypttab_names(text, &parts, &map);
        assert_eq!(names.get("0f1e-aa").map(String::as_str), Some("root_crypt"));
        assert_eq!(names.get("bb").map(String::as_str), Some("srv_crypt"), "{names:?}");
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn without_a_key_each_volume_is_named_with_the_reason() {
        let p = part("/dev/vda3", "abc");
        let a = open(&[&p], &[], &BTreeMap::new());
        assert!(a.volumes.is_empty());
        assert_eq!(
            a.failed,
            ["LUKS volume /dev/vda3 (UUID abc): no key was given (ferry send --luks-key-file)"]
        );
    }

    #[test]
    fn keys_and_crypt_tables_are_never_printed() {
        let k = Key(Zeroizing::new(b"secret passphrase".to_vec()));
        assert_eq!(format!("{k:?}"), "<key of 17 bytes>");
        let t = dm::Target {
            start: 0,
            len: 8,
            kind: "crypt".into(),
            params: "aes-xts-plain64 00ff 0 8:3 32768".into(),
        };
        assert!(!format!("{t:?}").contains("00ff"), "{t:?}");
    }
}
