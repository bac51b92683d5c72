//! Migrating into image files (`ferry-init receive --image DIR`): the disks are received into
//! sparse raw files (`DIR/disk-N.raw`, the sizes the user gives, as for a new VM's disks), so
//! resume, delta passes and `--verify` work as on any target. The finalizing pass converts them
//! on this host (host-mode conversion), writes each image in every requested format with
//! `qemu-img convert` (checked with `qemu-img check` where the format has it), and a
//! `manifest.json`: each image with its format, virtual size and SHA-256, the boot firmware,
//! the source as the receiver saw it, and the conversion report.

use anyhow::{bail, ensure, Context, Result};
use ferry_replicator::receiver::{Finalized, RxStatus, TargetSpec};
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// The image formats written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
    Vhdx,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format> {
        Ok(match s {
            "raw" => Format::Raw,
            "qcow2" => Format::Qcow2,
            "vmdk" => Format::Vmdk,
            "vhdx" => Format::Vhdx,
            _ => bail!("--format {s:?}: expected raw, qcow2, vmdk or vhdx"),
        })
    }
    fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhdx => "vhdx",
        }
    }
}

/// A size as `ferry-init receive --size` takes it: bytes, or with K, M, G, T (binary).
pub fn parse_size(s: &str) -> Result<u64> {
    let (num, mult) = match s.trim().char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => bail!("--size {s:?}: expected a number with K, M, G or T"),
            };
            (&s.trim()[..i], m)
        }
        _ => (s.trim(), 1),
    };
    let n: u64 = num.parse().with_context(|| format!("--size {s:?}: not a number"))?;
    let b = n.checked_mul(mult).with_context(|| format!("--size {s:?}: too large"))?;
    ensure!(b >= 1 << 20 && b % 512 == 0, "--size {s:?}: at least 1 MiB, a multiple of 512 bytes");
    Ok(b)
}

/// The staging files, made (sparse) when missing; an existing one keeps its contents (a later
/// pass resumes or runs a delta on it) and must have the size asked for.
pub fn staging(dir: &Path, sizes: &[u64]) -> Result<Vec<TargetSpec>> {
    ensure!(!sizes.is_empty(), "--image needs a --size for each disk");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut out = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let path = dir.join(format!("disk-{i}.raw"));
        match std::fs::metadata(&path) {
            Ok(m) => ensure!(
                m.len() == size,
                "{} exists with {} bytes, not the {size} asked for; move it away or give its size",
                path.display(),
                m.len()
            ),
            Err(_) => {
                let f =
                    std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                f.set_len(size).with_context(|| format!("sizing {}", path.display()))?;
            }
        }
        out.push(TargetSpec { path, name: format!("disk-{i}"), serial: String::new() });
    }
    Ok(out)
}

#[derive(Debug, Serialize)]
pub struct Image {
    pub file: String,
    pub format: Format,
    pub virtual_size: u64,
    pub sha256: String,
    /// The source disk it was received from, as the sender named it.
    pub source: String,
}

#[derive(Debug, Serialize)]
pub struct Manifest {
    pub ferry_version: &'static str,
    /// Unix time the images were written.
    pub created: u64,
    /// `bios` or `uefi`, as the conversion found the system.
    pub firmware: String,
    pub source: serde_json::Value,
    pub images: Vec<Image>,
    pub conversion: serde_json::Value,
}

fn sha256(p: &Path) -> Result<String> {
    use sha2::Digest;
    let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).with_context(|| format!("reading {}", p.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(ferry_replicator::digest::hex(&h.finalize()))
}

fn qemu_img(args: &[&str]) -> Result<String> {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .context("running qemu-img (Debian package qemu-utils)")?;
    ensure!(
        out.status.success(),
        "qemu-img {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One staging disk written as `format` next to it; returns the image path.
fn write_image(raw: &Path, format: Format) -> Result<PathBuf> {
    if format == Format::Raw {
        return Ok(raw.to_path_buf()); // the staging file is the raw image
    }
    let out = raw.with_extension(format.name());
    let (src, dst) = (raw.to_string_lossy(), out.to_string_lossy());
    let args = ["convert", "-f", "raw", "-O", format.name(), &*src, &*dst];
    qemu_img(&args)?;
    qemu_img(&["check", "-f", format.name(), &dst]).with_context(|| format!("checking {dst}"))?;
    Ok(out)
}

/// Removes the conversion's (unmounted, empty) mount point directories; never anything else:
/// a directory that is not empty stays.
fn remove_empty_dirs(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// What the finalize hook does in image mode.
pub struct Job {
    pub dir: PathBuf,
    pub formats: Vec<Format>,
    /// Keep the raw staging files after writing the images (for later passes).
    pub keep_raw: bool,
    pub status: Arc<Mutex<RxStatus>>,
}

impl Job {
    /// Converts the received system and writes the images and the manifest.
    pub fn finalize(&self, targets: &[PathBuf], h: &ferry_replicator::receiver::Handover) -> Finalized {
        match self.run(targets, &h.hooks, &h.luks_keys) {
            Ok(m) => Finalized { ok: true, report: serde_json::to_value(&m).unwrap_or_default() },
            Err(e) => {
                Finalized { ok: false, report: serde_json::json!({ "ok": false, "error": format!("{e:#}") }) }
            }
        }
    }

    fn run(
        &self,
        targets: &[PathBuf],
        hooks: &[ferry_convert::hooks::Hook],
        luks_keys: &[ferry_convert::crypt::Key],
    ) -> Result<Manifest> {
        // A run hook is root in a chroot with this host's /dev, /proc and /sys: fine in a
        // throwaway appliance, not on a host that receives images.
        if let Some(h) = hooks.iter().find(|h| h.kind == ferry_convert::hooks::HookKind::Run) {
            bail!("run hook {} refused: run hooks execute only in the appliance, not on a host receiving into --image (firstboot hooks are fine)", h.name);
        }
        let opts = ferry_convert::Options {
            grow: true,
            workdir: self.dir.join(".convert"),
            nics: ferry_convert::nics::Nics::Kernel,
            hooks: hooks.to_vec(),
            luks_keys: luks_keys.to_vec(),
        };
        let rep = ferry_convert::run(targets, &mut ferry_convert::machine::Host::default(), &opts);
        remove_empty_dirs(&opts.workdir);
        let conversion = serde_json::to_value(&rep)?;
        ensure!(rep.ok, "conversion failed: {}", rep.error.as_deref().unwrap_or("see the report"));
        let firmware = if rep.system.as_ref().is_some_and(|s| s.uefi) { "uefi" } else { "bios" };
        let (sources, peer) = {
            let st = self.status.lock().unwrap_or_else(|e| e.into_inner());
            (st.disks.iter().map(|d| d.source.clone()).collect::<Vec<_>>(), st.passes.clone())
        };
        let mut images = Vec::new();
        for (i, raw) in targets.iter().enumerate() {
            for &f in &self.formats {
                let img = write_image(raw, f)?;
                let virtual_size = std::fs::metadata(raw)?.len();
                images.push(Image {
                    file: img.file_name().unwrap_or_default().to_string_lossy().into_owned(),
                    format: f,
                    virtual_size,
                    sha256: sha256(&img)?,
                    source: sources.get(i).cloned().unwrap_or_default(),
                });
            }
        }
        let m = Manifest {
            ferry_version: env!("CARGO_PKG_VERSION"),
            created: ferry_replicator::receiver::unix_now() as u64,
            firmware: firmware.into(),
            source: serde_json::json!({ "disks": sources, "passes": peer }),
            images,
            conversion,
        };
        let path = self.dir.join("manifest.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&m)?)
            .with_context(|| format!("writing {}", path.display()))?;
        if !self.keep_raw && !self.formats.contains(&Format::Raw) {
            for raw in targets {
                let _ = std::fs::remove_file(raw);
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_formats() {
        assert_eq!(parse_size("3G").unwrap(), 3 << 30);
        assert_eq!(parse_size("2048M").unwrap(), 2 << 30);
        assert_eq!(parse_size("1073741824").unwrap(), 1 << 30);
        for bad in ["", "x", "3Q", "100", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(Format::parse("vmdk").unwrap(), Format::Vmdk);
        assert!(Format::parse("ova").is_err());
    }

    #[test]
    fn a_raw_image_is_the_staging_file_itself() {
        let t = tempfile::tempdir().unwrap();
        let s = staging(t.path(), &[4 << 20]).unwrap();
        std::fs::write(&s[0].path, vec![5u8; 4 << 20]).unwrap();
        assert_eq!(write_image(&s[0].path, Format::Raw).unwrap(), s[0].path);
        assert_eq!(std::fs::read(&s[0].path).unwrap(), vec![5u8; 4 << 20]);
    }

    #[test]
    fn staging_files_are_sparse_and_kept() {
        let t = tempfile::tempdir().unwrap();
        let s = staging(t.path(), &[8 << 20, 4 << 20]).unwrap();
        assert_eq!(s[1].path, t.path().join("disk-1.raw"));
        assert_eq!(std::fs::metadata(&s[0].path).unwrap().len(), 8 << 20);
        std::fs::write(&s[1].path, vec![7u8; 4 << 20]).unwrap();
        staging(t.path(), &[8 << 20, 4 << 20]).unwrap();
        assert_eq!(std::fs::read(&s[1].path).unwrap()[0], 7, "an existing staging file was rewritten");
        let e = staging(t.path(), &[8 << 20, 5 << 20]).unwrap_err();
        assert!(format!("{e:#}").contains("disk-1.raw exists with 4194304 bytes"), "{e:#}");
    }
}
