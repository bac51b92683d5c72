//! Locates the parts of an extracted Debian kernel package: `vmlinuz`, the modules directory
//! and the kernel version, and checks that depmod has run on it.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub struct Kernel {
    pub vmlinuz: PathBuf,
    pub version: String,
    pub modules: PathBuf,
}

pub fn default_dir() -> PathBuf {
    let cache = std::env::var_os("FERRY_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ferry"));
    cache.join("kernel")
}

/// `dir` is an extracted kernel package (`boot/vmlinuz-VER`, `lib/modules/VER`).
pub fn locate(dir: &Path) -> Result<Kernel> {
    let mods = dir.join("lib/modules");
    let mut versions: Vec<String> = std::fs::read_dir(&mods)
        .with_context(|| format!("reading {} (run ./scripts/setup, or pass --kernel DIR)", mods.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort();
    let version = match versions.as_slice() {
        [v] => v.clone(),
        [] => bail!("{} holds no kernel version", mods.display()),
        _ => bail!(
            "{} holds several kernel versions ({}); pass one package",
            mods.display(),
            versions.join(", ")
        ),
    };
    let vmlinuz = dir.join("boot").join(format!("vmlinuz-{version}"));
    if !vmlinuz.is_file() {
        bail!("{} is missing", vmlinuz.display());
    }
    let modules = mods.join(&version);
    if !modules.join("modules.dep").is_file() {
        bail!("{}/modules.dep is missing: run `depmod -b {} {version}`", modules.display(), dir.display());
    }
    Ok(Kernel { vmlinuz, version, modules })
}
