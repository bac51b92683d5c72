//! Tests of the LUKS unlock library against volumes made by the real cryptsetup (on plain
//! files: no device-mapper needed), whose `luksDump --dump-volume-key` is the reference for the
//! key and whose `luksDump` text is the reference for the data offset. cryptsetup missing is a
//! failure pointing at ./scripts/setup, never a skip. Corrupted, truncated and foreign devices are
//! in [`hostile`], crafted hostile metadata in [`json`], the dm-crypt table format in [`table`].

mod cryptsetup;
mod hostile;
mod json;
mod table;

use super::{unlock, LuksError, Volume};
use std::path::PathBuf;
use std::process::Command;

pub const PASS: &[u8] = b"correct horse battery staple";
pub const SIZE: u64 = 32 << 20;

/// The cryptsetup binary, or a failure saying how to get it.
fn cryptsetup_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join("cryptsetup")).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("cryptsetup not found (the LUKS tests build their volumes with it): run ./scripts/setup")
    })
}

/// Runs cryptsetup with `args`, failing the test with its stderr if it fails.
pub fn cryptsetup(args: &[&str]) -> String {
    let out = Command::new(cryptsetup_bin()).args(args).output().expect("running cryptsetup");
    assert!(
        out.status.success(),
        "cryptsetup {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A LUKS volume in a 32 MiB file in its own temporary directory.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub img: PathBuf,
    dir: PathBuf,
}

impl Fixture {
    /// `cryptsetup luksFormat --batch-mode --key-file <PASS> <extra…>` on a fresh file.
    pub fn format(extra: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("luks.img");
        std::fs::File::create(&img).unwrap().set_len(SIZE).unwrap();
        let f = Fixture { dir: dir.path().to_owned(), _dir: dir, img };
        let key = f.key_file(PASS);
        let mut args = vec!["luksFormat", "--batch-mode", "--key-file", key.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(f.img.to_str().unwrap());
        cryptsetup(&args);
        f
    }

    /// A key file holding `pass` (named after its bytes' hash so several can coexist).
    pub fn key_file(&self, pass: &[u8]) -> PathBuf {
        let name = format!("key-{:x}", crc32fast::hash(pass));
        let p = self.dir.join(name);
        std::fs::write(&p, pass).unwrap();
        p
    }

    pub fn path(&self) -> &str {
        self.img.to_str().unwrap()
    }

    /// cryptsetup's own idea of the volume key.
    pub fn dumped_key(&self, pass: &[u8]) -> Vec<u8> {
        let out = self.dir.join("vk");
        let key = self.key_file(pass);
        cryptsetup(&[
            "luksDump",
            "--dump-volume-key",
            "--batch-mode",
            "--volume-key-file",
            out.to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
            self.path(),
        ]);
        let vk = std::fs::read(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        vk
    }

    /// (data offset in bytes, encryption sector size) from `luksDump`'s text.
    pub fn dumped_geometry(&self) -> (u64, u32) {
        let text = cryptsetup(&["luksDump", self.path()]);
        if let Some(v) = field(&text, "Payload offset:") {
            return (v.parse::<u64>().unwrap() * 512, 512); // LUKS1: sectors
        }
        let data = text.split("Data segments:").nth(1).expect("luksDump shows data segments");
        let offset = field(data, "offset:").expect("segment offset");
        let sector = field(data, "sector:").expect("segment sector");
        (num(offset), num(sector) as u32)
    }

    pub fn uuid(&self) -> String {
        cryptsetup(&["luksUUID", self.path()]).trim().to_owned()
    }

    pub fn unlock(&self, pass: &[u8]) -> Result<Volume, LuksError> {
        unlock(&std::fs::File::open(&self.img).unwrap(), pass)
    }

    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.img).unwrap()
    }
}

/// The value after the first line starting (after whitespace) with `key`.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.trim_start().strip_prefix(key)).map(str::trim)
}

/// "16777216 [bytes]" → 16777216.
fn num(v: &str) -> u64 {
    v.split_whitespace().next().unwrap().parse().unwrap()
}

/// Asserts the library agrees with cryptsetup on `f` opened with `pass`, and that a wrong
/// passphrase is `WrongKey`. Returns the volume.
pub fn agrees(f: &Fixture, pass: &[u8]) -> Volume {
    let v = f.unlock(pass).unwrap_or_else(|e| panic!("unlock {}: {e}", f.path()));
    assert_eq!(*v.key, f.dumped_key(pass), "volume key differs from cryptsetup's");
    let (offset, sector) = f.dumped_geometry();
    assert_eq!(v.offset_sectors * 512, offset, "data offset");
    assert_eq!(v.sector_size, sector, "sector size");
    assert_eq!(v.uuid, f.uuid());
    match f.unlock(b"wrong passphrase") {
        Err(LuksError::WrongKey) => {}
        other => panic!("wrong passphrase gave {other:?}"),
    }
    v
}

/// Unlocks an in-memory image.
pub fn unlock_bytes(img: &[u8], pass: &[u8]) -> Result<Volume, LuksError> {
    unlock(&img, pass)
}

/// Where the secondary LUKS2 header copy of `img` sits (the primary's hdr_size).
pub fn secondary(img: &[u8]) -> usize {
    u64::from_be_bytes(img[8..16].try_into().unwrap()) as usize
}
