//! `ferry-init export-oci`: machine-level containerization (Alibaba SMC's containerized
//! migration). The migrated system is opened through copy-on-write overlays (the disks are never
//! written; the rehearsal's [`overlay`](crate::rehearse::overlay)), found and mounted by fstab
//! with the conversion's own code, and written as an OCI image of one layer ([`layer`]) with
//! minimal trimming; the image goes into an OCI layout directory ([`image`]) and, with `--push`,
//! to a registry through `skopeo` (the reference client of the distribution API).

pub mod image;
pub mod layer;

use crate::rehearse::overlay;
use anyhow::{ensure, Context, Result};
use ferry_convert::guest::GuestRoot;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Options {
    pub disks: Vec<PathBuf>,
    /// The OCI layout directory to write (or a temporary one when only pushing).
    pub out: Option<PathBuf>,
    /// `REGISTRY/REPO:TAG` to push to.
    pub push: Option<String>,
    /// Push over plain HTTP or without verifying the registry's certificate.
    pub insecure: bool,
    /// The tag in the layout (`org.opencontainers.image.ref.name`).
    pub tag: String,
    /// A command instead of the system's init.
    pub cmd: Vec<String>,
    pub compression: layer::Compression,
    pub workdir: PathBuf,
}

/// What the export made.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub layout: Option<PathBuf>,
    pub pushed: Option<String>,
    pub manifest_digest: String,
    pub layer_digest: String,
    pub layer_size: u64,
    pub diff_id: String,
    pub entries: u64,
    pub architecture: String,
    pub trimmed: Vec<String>,
}

/// The architecture (OCI names) of the guest's `/bin/sh`, from its ELF header.
fn architecture(g: &GuestRoot) -> Result<String> {
    let sh = g.read_bytes("bin/sh")?.context("the system has no /bin/sh")?;
    ensure!(sh.len() > 20 && &sh[..4] == b"\x7fELF", "/bin/sh of the system is not an ELF file");
    // e_ident[EI_DATA]: 1 little-endian, 2 big-endian.
    let machine =
        if sh[5] == 2 { u16::from_be_bytes([sh[18], sh[19]]) } else { u16::from_le_bytes([sh[18], sh[19]]) };
    Ok(match machine {
        0x3e => "amd64",
        0xb7 => "arm64",
        0x03 => "386",
        0x28 => "arm",
        0xf3 => "riscv64",
        0x15 => "ppc64le",
        0x16 => "s390x",
        m => anyhow::bail!("/bin/sh is for ELF machine {m:#x}, which ferry does not name"),
    }
    .into())
}

/// SMC's minimal trimming: API, scratch and boot directories empty, kernel modules, swap
/// files and data-disk mounts out, fstab emptied, machine-id cleared.
fn trim(o: &ferry_convert::Opened) -> Result<layer::Trim> {
    let g = o.tree.guest();
    let mut t = layer::Trim::default();
    for d in ["proc", "sys", "dev", "run", "tmp", "boot", "mnt", "lib/modules", "usr/lib/modules", "var/tmp"]
    {
        if g.lkind(d)? == Some(ferry_convert::guest::Kind::Dir) {
            t.empty.push(d.into());
        }
    }
    let root_path = g.path().to_path_buf();
    for (dev, at) in o.tree.mounted() {
        let on_root_disk = o.parts.iter().find(|p| p.dev == dev).is_some_and(|p| p.disk == o.root.disk);
        if let (false, Ok(rel)) = (on_root_disk, at.strip_prefix(&root_path)) {
            t.empty.push(rel.to_string_lossy().into_owned());
        }
    }
    let fstab = g.read_or_empty("etc/fstab")?;
    for l in fstab.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 3 && f[2] == "swap" && f[0].starts_with('/') && !f[0].starts_with("/dev/") {
            t.skip.push(f[0].trim_start_matches('/').to_string());
        }
    }
    let emptied: String = std::iter::once(
        "# Emptied by ferry export-oci: a container's filesystems come from its runtime.\n".to_string(),
    )
    .chain(fstab.lines().filter(|l| !l.trim().is_empty()).map(|l| format!("# {l}\n")))
    .collect();
    t.replace.push(("etc/fstab".into(), emptied.into_bytes()));
    for id in ["etc/machine-id", "var/lib/dbus/machine-id"] {
        if g.is_file(id) {
            t.replace.push((id.into(), Vec::new()));
        }
    }
    Ok(t)
}

/// The image's date: the conversion report's, else /etc/fstab's (the same input, the same date).
fn created(root: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    ["var/log/ferry/conversion.json", "etc/fstab", "etc/os-release"]
        .iter()
        .find_map(|p| std::fs::symlink_metadata(root.join(p)).ok())
        .map_or(0, |m| m.mtime())
}

pub fn run(o: &Options) -> Result<Report> {
    ensure!(!o.disks.is_empty(), "at least one --disk is required");
    ensure!(o.out.is_some() || o.push.is_some(), "--out DIR or --push REF is required");
    std::fs::create_dir_all(&o.workdir).with_context(|| format!("creating {}", o.workdir.display()))?;
    let layout = o.out.clone().unwrap_or_else(|| o.workdir.join("layout"));
    let overlays = overlay::create(&o.disks, &o.workdir)?;
    let result = export(o, &overlays, &layout);
    for ov in &overlays {
        let _ = std::fs::remove_file(ov);
    }
    let mut rep = result?;
    if let Some(dest) = &o.push {
        push(&layout, &o.tag, dest, o.insecure)?;
        rep.pushed = Some(dest.clone());
    }
    if o.out.is_none() {
        let _ = std::fs::remove_dir_all(&layout);
        rep.layout = None;
    }
    Ok(rep)
}

fn export(o: &Options, overlays: &[PathBuf], layout: &Path) -> Result<Report> {
    overlay::with_system(overlays, &o.workdir, |sys| export_system(o, sys, layout))
}

fn export_system(o: &Options, sys: &ferry_convert::Opened, layout: &Path) -> Result<Report> {
    let g = sys.tree.guest();
    let arch = architecture(g)?;
    let trim = trim(sys)?;
    let root = g.path().to_path_buf();
    std::fs::create_dir_all(layout.join("blobs/sha256"))?;
    let tmp = layout.join("blobs/sha256/.layer.tmp");
    log::info!("export-oci: writing the layer of {}", sys.sys.pretty_name);
    let level = if o.compression == layer::Compression::Gzip { 6 } else { 3 };
    let l = layer::write(&root, &trim, o.compression, level, &tmp)?;
    std::fs::rename(&tmp, layout.join("blobs/sha256").join(&l.digest))?;
    let spec = image::Spec {
        architecture: arch.clone(),
        created: created(&root),
        cmd: o.cmd.clone(),
        source: o.disks.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(","),
        system: sys.sys.pretty_name.clone(),
        tag: o.tag.clone(),
    };
    let manifest_digest = image::write_layout(layout, &spec, &l, o.compression)?;
    let mut trimmed: Vec<String> = trim.empty.iter().map(|e| format!("/{e}/*")).collect();
    trimmed.extend(trim.skip.iter().map(|s| format!("/{s}")));
    trimmed.extend(trim.replace.iter().map(|(p, _)| format!("/{p} (replaced)")));
    Ok(Report {
        layout: Some(layout.to_path_buf()),
        pushed: None,
        manifest_digest,
        layer_digest: format!("sha256:{}", l.digest),
        layer_size: l.size,
        diff_id: format!("sha256:{}", l.diff_id),
        entries: l.entries,
        architecture: arch,
        trimmed,
    })
}

/// `skopeo copy oci:LAYOUT:TAG docker://DEST`; credentials from `FERRY_REGISTRY_AUTH`
/// (`user:password`) when set.
fn push(layout: &Path, tag: &str, dest: &str, insecure: bool) -> Result<()> {
    let mut c = Command::new("skopeo");
    c.args(["copy", "--quiet"]);
    if insecure {
        c.arg("--dest-tls-verify=false");
    }
    if let Ok(creds) = std::env::var("FERRY_REGISTRY_AUTH") {
        c.arg("--dest-creds").arg(creds);
    }
    c.arg(format!("oci:{}:{tag}", layout.display())).arg(format!("docker://{dest}"));
    let out = c.output().context("running skopeo (Debian package skopeo)")?;
    ensure!(out.status.success(), "pushing to {dest}: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}
