//! Accelerator choice: KVM only when `/dev/kvm` exists and a probe boot of the appliance
//! reaches userspace with it; the result is cached under FERRY_CACHE keyed by the kernel and
//! the QEMU version. Otherwise TCG. (On our machines KVM guests hang: the probe says so.)

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn probe(kernel: &std::path::Path, initrd: &std::path::Path, log: &std::path::Path) -> bool {
    let Ok(mut child) = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "512",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 ferry.idle=0 ferry.after=poweroff"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if std::fs::read_to_string(log).unwrap_or_default().contains("ferry: ready") {
            let _ = child.kill();
            let _ = child.wait();
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// `["-accel", "kvm"|"tcg"]` plus the matching `-cpu`.
pub fn args() -> &'static [&'static str] {
    static A: OnceLock<&'static [&'static str]> = OnceLock::new();
    A.get_or_init(|| {
        const TCG: &[&str] = &["-accel", "tcg", "-cpu", "max"];
        const KVM: &[&str] = &["-accel", "kvm", "-cpu", "host"];
        if std::env::var("FERRY_ACCEL").as_deref() == Ok("tcg") || !std::path::Path::new("/dev/kvm").exists()
        {
            return TCG;
        }
        let app = crate::appliance();
        let kver = std::fs::read_to_string(app.join("manifest.json")).unwrap_or_default();
        let qver = crate::run(Command::new("qemu-system-x86_64").arg("--version")).unwrap_or_default();
        let key = format!("{:016x}", crate::fnv(&(kver + &qver)));
        let cached = crate::cache_dir().join(format!("kvm-probe-{key}"));
        let ok = match std::fs::read_to_string(&cached) {
            Ok(s) => s.trim() == "kvm",
            Err(_) => {
                let log = std::env::temp_dir().join(format!("ferry-kvm-probe-{}.log", std::process::id()));
                let ok = probe(&app.join("vmlinuz"), &app.join("initramfs.img"), &log);
                let _ = std::fs::remove_file(&log);
                let _ = std::fs::write(&cached, if ok { "kvm" } else { "tcg" });
                ok
            }
        };
        if ok {
            KVM
        } else {
            TCG
        }
    })
}
