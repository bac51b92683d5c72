//! Copy-on-write overlays: a qcow2 file per disk under test with the disk as its read-only
//! backing file, so nothing the rehearsal does (the probe, the boot's own writes) reaches the
//! migrated disks. To put the probe in, the overlays are exported as raw files through FUSE by
//! `qemu-storage-daemon` (no nbd or device-mapper needed); [`Export`] stops it on drop, which
//! flushes and unmounts.

use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The format of a migrated disk: raw for a block device; for a file what `qemu-img` sees,
/// refusing one that names other files (a backing file or an external data file): a guest
/// controls its disk's first bytes and could point them at the host's files.
pub fn format_of(disk: &Path) -> Result<String> {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::metadata(disk)
        .with_context(|| format!("--disk {}", disk.display()))?
        .file_type()
        .is_block_device()
    {
        return Ok("raw".into());
    }
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(disk)
        .output()
        .context("running qemu-img (Debian package qemu-utils)")?;
    ensure!(
        out.status.success(),
        "qemu-img info {}: {}",
        disk.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("qemu-img info output")?;
    ensure!(
        v.get("backing-filename").is_none() && v.pointer("/format-specific/data/data-file").is_none(),
        "{}: the image refers to other files (a backing or data file); refusing it",
        disk.display()
    );
    v["format"]
        .as_str()
        .map(String::from)
        .with_context(|| format!("qemu-img info {}: no format", disk.display()))
}

/// An overlay per disk in `dir` (`overlay-N.qcow2`), backed by the disk read-only.
pub fn create(disks: &[PathBuf], dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (i, d) in disks.iter().enumerate() {
        let abs = std::fs::canonicalize(d).with_context(|| format!("--disk {}", d.display()))?;
        let fmt = format_of(&abs)?;
        let ov = dir.join(format!("overlay-{i}.qcow2"));
        let st = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", &fmt, "-b"])
            .arg(&abs)
            .arg(&ov)
            .status()
            .context("running qemu-img create")?;
        ensure!(st.success(), "qemu-img create for {}: {st}", d.display());
        out.push(ov);
    }
    Ok(out)
}

/// The overlays exported as raw files (`export-N.raw`) while this lives.
pub struct Export {
    child: Child,
    pub files: Vec<PathBuf>,
}

fn mounted(p: &Path) -> bool {
    let me = p.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.split_whitespace().nth(4) == Some(&*me)))
        .unwrap_or(false)
}

impl Export {
    pub fn start(overlays: &[PathBuf], dir: &Path) -> Result<Export> {
        let mut c = Command::new("qemu-storage-daemon");
        let mut files = Vec::new();
        for (i, ov) in overlays.iter().enumerate() {
            let f = dir.join(format!("export-{i}.raw"));
            std::fs::write(&f, b"").with_context(|| format!("creating {}", f.display()))?;
            c.arg("--blockdev")
                .arg(format!("driver=file,node-name=f{i},filename={}", ov.display()))
                .arg("--blockdev")
                .arg(format!("driver=qcow2,node-name=q{i},file=f{i}"))
                .arg("--export")
                .arg(format!("type=fuse,id=e{i},node-name=q{i},mountpoint={},writable=on", f.display()));
            files.push(f);
        }
        let log = std::fs::File::create(dir.join("storage-daemon.log"))?;
        let child = c
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting qemu-storage-daemon (Debian package qemu-system-common)")?;
        let mut e = Export { child, files };
        let t = Instant::now();
        while !e.files.iter().all(|f| mounted(f)) {
            if let Some(st) = e.child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("storage-daemon.log")).unwrap_or_default();
                bail!("qemu-storage-daemon exited ({st}) before exporting the overlays: {}", log.trim());
            }
            ensure!(
                t.elapsed() < Duration::from_secs(30),
                "qemu-storage-daemon did not export the overlays in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(e)
    }
}

impl Export {
    /// SIGTERM: the daemon flushes the qcow2 files and unmounts the exports.
    fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::SIGTERM,
        );
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        log::warn!("rehearse: qemu-storage-daemon did not stop in 30 s; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        self.stop();
        // The (now unmounted) export mount points.
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Runs `f` on the migrated system on `overlays`: exported, found and mounted by fstab with
/// conversion's `open_system`; afterwards unmounted, its loop devices detached and the export
/// stopped, in that order (locals drop in reverse).
pub fn with_system<T>(
    overlays: &[PathBuf],
    workdir: &Path,
    f: impl FnOnce(&ferry_convert::Opened) -> Result<T>,
) -> Result<T> {
    let export = Export::start(overlays, workdir)?;
    let mut host = ferry_convert::machine::Host::default();
    let sys = ferry_convert::open_system(&export.files, &mut host, &workdir.join("mnt"))
        .context("finding the migrated system on the disks")?;
    f(&sys)
}
