//! The rehearsal VM: QEMU with the overlays on virtio-blk, NICs on an isolated user-mode
//! network (`restrict=on`: no route out of the VM), SeaBIOS or OVMF as the system needs, the
//! serial console into a log. KVM only when `/dev/kvm` exists and a probe boot of the system's
//! own kernel under KVM prints its banner; otherwise TCG (detected, never assumed).

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => ["-accel", "tcg", "-cpu", "max"],
        }
    }
}

/// `--accel auto`: KVM if a kernel (the system's own) starts under it within 20 s.
pub fn detect(kernel: Option<&Path>, dir: &Path) -> Accel {
    if !Path::new("/dev/kvm").exists() {
        return Accel::Tcg;
    }
    let Some(kernel) = kernel else { return Accel::Tcg };
    let log = dir.join("kvm-probe.log");
    let child = Command::new("qemu-system-x86_64")
        .args(Accel::Kvm.args())
        .args(["-m", "256", "-display", "none", "-monitor", "none", "-nodefaults", "-no-reboot"])
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return Accel::Tcg };
    let t = Instant::now();
    let mut ok = false;
    while t.elapsed() < Duration::from_secs(20) && !ok {
        ok = std::fs::read_to_string(&log).unwrap_or_default().contains("Linux version");
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    if ok {
        Accel::Kvm
    } else {
        log::info!("rehearse: a kernel does not start under KVM here; using TCG");
        Accel::Tcg
    }
}

pub struct Vm {
    pub overlays: Vec<PathBuf>,
    pub uefi: bool,
    pub nics: usize,
    pub memory_mb: u32,
    pub accel: Accel,
    pub console: PathBuf,
}

/// How the VM ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum End {
    /// The probe said `end` (and the VM powered off or was stopped).
    Reported,
    /// The VM stopped without a complete report.
    Exited,
    TimedOut,
}

impl Vm {
    fn command(&self, dir: &Path) -> Result<Command> {
        let mut c = Command::new("qemu-system-x86_64");
        c.args(self.accel.args())
            .args(["-name", "ferry-rehearse", "-m", &self.memory_mb.to_string(), "-smp", "2"])
            // Reboots are allowed (an SELinux relabel reboots once); the probe powers off.
            .args(["-display", "none", "-monitor", "none", "-vga", "std"])
            .args(["-device", "virtio-rng-pci"])
            .arg("-serial")
            .arg(format!("file:{}", self.console.display()));
        if self.uefi {
            let vars = dir.join("OVMF_VARS.fd");
            std::fs::copy(OVMF_VARS, &vars)
                .with_context(|| format!("copying {OVMF_VARS} (Debian package ovmf)"))?;
            c.arg("-drive")
                .arg(format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"))
                .arg("-drive")
                .arg(format!("if=pflash,format=raw,unit=1,file={}", vars.display()));
        }
        for (i, ov) in self.overlays.iter().enumerate() {
            c.arg("-drive").arg(format!("file={},format=qcow2,if=none,id=d{i}", ov.display()));
            let boot = if i == 0 { ",bootindex=0" } else { "" };
            c.arg("-device").arg(format!("virtio-blk-pci,drive=d{i},serial=ferry-rehearse-{i}{boot}"));
        }
        for i in 0..self.nics.max(1) {
            c.arg("-netdev").arg(format!("user,id=n{i},restrict=on"));
            c.arg("-device").arg(format!("virtio-net-pci,netdev=n{i}"));
        }
        Ok(c)
    }

    /// Boots and waits for the probe's `end`, the VM's exit, or `timeout`.
    pub fn run(&self, dir: &Path, timeout: Duration) -> Result<(End, Duration)> {
        let stderr = std::fs::File::create(dir.join("qemu.stderr"))?;
        let mut c = self.command(dir)?;
        log::debug!("rehearse: {c:?}");
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting qemu-system-x86_64")?;
        let t = Instant::now();
        // Bytes, not text: a console need not be UTF-8.
        let end = format!("{} end", super::probe::TAG).into_bytes();
        let reported = || std::fs::read(&self.console).is_ok_and(|b| b.windows(end.len()).any(|w| w == end));
        loop {
            if let Some(st) = child.try_wait()? {
                if !st.success() && !reported() {
                    let err = std::fs::read_to_string(dir.join("qemu.stderr")).unwrap_or_default();
                    if t.elapsed() < Duration::from_secs(5) {
                        bail!("qemu-system-x86_64 failed to start ({st}): {}", err.trim());
                    }
                }
                return Ok((if reported() { End::Reported } else { End::Exited }, t.elapsed()));
            }
            if reported() {
                // Give the poweroff a moment, then stop it.
                let stop = Instant::now();
                while stop.elapsed() < Duration::from_secs(60) && child.try_wait()?.is_none() {
                    std::thread::sleep(Duration::from_millis(200));
                }
                let _ = child.kill();
                let _ = child.wait();
                return Ok((End::Reported, t.elapsed()));
            }
            if t.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Ok((End::TimedOut, t.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
