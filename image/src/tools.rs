//! External tools for the boot artifacts (GRUB's image maker, mtools, xorriso, qemu-img) and
//! reproducibility: every tool runs with `SOURCE_DATE_EPOCH`, and every staged file gets that
//! time, so the same inputs give the same bytes.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// 2026-01-01T00:00:00Z: the timestamp of every artifact unless `SOURCE_DATE_EPOCH` is set.
pub const DEFAULT_EPOCH: u64 = 1_767_225_600;

/// The build time of the artifacts: `SOURCE_DATE_EPOCH`, else [`DEFAULT_EPOCH`].
pub fn epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        // FAT cannot store times before 1980.
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if n >= 315_532_800 => Ok(n),
            _ => bail!("SOURCE_DATE_EPOCH={v:?}: expected seconds since 1970, at 1980-01-01 or later"),
        },
        Err(_) => Ok(DEFAULT_EPOCH),
    }
}

/// Runs a tool with `SOURCE_DATE_EPOCH` set; the error names the command line and its output.
pub fn run(argv: &[&str]) -> Result<String> {
    let e = epoch()?.to_string();
    ferry_convert::cmd::run_env(
        None,
        argv,
        &[("SOURCE_DATE_EPOCH", &e), ("TZ", "UTC"), ("MTOOLS_SKIP_CHECK", "1")],
    )
}

/// Fails early, naming the package, when a tool or data file is missing.
pub fn require(path: &str, package: &str) -> Result<()> {
    let found = if path.starts_with('/') {
        Path::new(path).exists()
    } else {
        ["/usr/bin", "/usr/sbin", "/bin", "/sbin"].iter().any(|d| Path::new(d).join(path).exists())
    };
    if !found {
        bail!("{path} is missing: install the Debian package {package} (scripts/setup does)");
    }
    Ok(())
}

/// `YYYYMMDDhhmmss` (UTC) of a Unix time.
pub fn utc_stamp(t: u64) -> String {
    let (y, m, d, h, mi, sec) = ferry_boot::civil::utc(t as i64);
    format!("{y:04}{m:02}{d:02}{h:02}{mi:02}{sec:02}")
}

/// Sets the modification time of `dir` and everything below it to `t`.
pub fn set_times(dir: &Path, t: u64) -> Result<()> {
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t);
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            set_times(&p, t)?;
        } else {
            let f = std::fs::File::options()
                .write(true)
                .open(&p)
                .with_context(|| format!("opening {}", p.display()))?;
            f.set_modified(when).with_context(|| format!("setting the time of {}", p.display()))?;
        }
    }
    let f = std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    f.set_modified(when).with_context(|| format!("setting the time of {}", dir.display()))
}

/// FNV-1a of `data`, its offset basis xored with `seed`: stable ids (FAT serials, GPT GUIDs).
pub fn fnv(data: &[u8], seed: u64) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64 ^ seed, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
}

/// A scratch directory beside `out`, so finished files are renamed into place on the same
/// filesystem (and big scratch files do not fill a small /tmp).
pub fn work_beside(out: &Path) -> Result<tempfile::TempDir> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    tempfile::Builder::new()
        .prefix(".ferry-image-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a scratch directory in {}", parent.display()))
}

/// Writes `data` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101000000");
        assert_eq!(utc_stamp(DEFAULT_EPOCH), "20260101000000");
        assert_eq!(utc_stamp(951_782_400 + 3661), "20000229010101");
    }
}
