//! `ferry-init rehearse`: proves migrated disks boot before anyone cuts over (AWS MGN's test
//! launch, Alibaba SMC's rehearsal). The disks get copy-on-write overlays ([`overlay`]); a
//! probe goes into the overlays only ([`probe`], through the conversion's guest root); a VM
//! boots them isolated ([`qemu`]); the console says how the boot went ([`verdict`]). The disks
//! themselves are never opened for writing.

pub mod overlay;
pub mod probe;
pub mod qemu;
pub mod verdict;

use anyhow::{Context, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;
use verdict::{BootFacts, Verdict};

pub struct Options {
    pub disks: Vec<PathBuf>,
    /// Overlays, the console log and QEMU's output go here.
    pub workdir: PathBuf,
    pub timeout: Duration,
    pub memory_mb: u32,
    /// `None`: detect.
    pub accel: Option<qemu::Accel>,
    /// Keep the overlays (to look at what the boot changed).
    pub keep: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    pub firmware: &'static str,
    pub accel: qemu::Accel,
    /// Wall time from starting the VM to the probe's report (or the end).
    pub seconds: f64,
    pub ended: qemu::End,
    pub findings: probe::Findings,
    /// Static addresses the configuration gives, by interface.
    pub configured_addresses: Vec<(String, String)>,
    pub facts: BootFacts,
    pub console_log: PathBuf,
}

/// What is read from the disks (through the overlay) and what the VM needs.
struct Prepared {
    uefi: bool,
    nics: usize,
    addrs: Vec<(String, String)>,
    facts: BootFacts,
    kernel: Option<PathBuf>,
}

fn prepare(o: &Options, sys: &ferry_convert::Opened) -> Result<Prepared> {
    let g = sys.tree.guest();
    probe::install(g).context("installing the probe in the overlay")?;
    let names = ferry_convert::ifaces::old_interfaces(g)?.names;
    let addrs = ferry_convert::netaddrs::static_addresses(g)?;
    let grub = ["boot/grub/grub.cfg", "boot/grub2/grub.cfg"].iter().find_map(|p| g.read(p).ok().flatten());
    let (root_arg, consoles) = verdict::kernel_args(&grub.unwrap_or_default());
    let facts = BootFacts {
        root_arg,
        consoles,
        kernels_without_virtio: sys
            .sys
            .kernels
            .iter()
            .filter(|k| !k.virtio)
            .map(|k| format!("{} lacks {}", k.version, k.missing.join(", ")))
            .collect(),
        converted: g.exists("var/log/ferry/conversion.json"),
    };
    // The system's newest kernel, for the KVM probe (only needed with /dev/kvm).
    let kernel = match (o.accel, sys.sys.kernels.last()) {
        (None, Some(k)) if std::path::Path::new("/dev/kvm").exists() => {
            let bytes = g.read_bytes(&format!("boot/vmlinuz-{}", k.version))?;
            let out = o.workdir.join("vmlinuz");
            bytes.map(|b| std::fs::write(&out, b)).transpose()?.map(|_| out)
        }
        _ => None,
    };
    Ok(Prepared { uefi: sys.sys.uefi, nics: names.len().clamp(1, 8), addrs, facts, kernel })
}

pub fn run(o: &Options) -> Result<Report> {
    anyhow::ensure!(!o.disks.is_empty(), "at least one --disk is required");
    std::fs::create_dir_all(&o.workdir).with_context(|| format!("creating {}", o.workdir.display()))?;
    let overlays = overlay::create(&o.disks, &o.workdir)?;
    let result = rehearse(o, &overlays);
    if !o.keep {
        for ov in &overlays {
            let _ = std::fs::remove_file(ov);
        }
    }
    result
}

fn rehearse(o: &Options, overlays: &[PathBuf]) -> Result<Report> {
    let p = overlay::with_system(overlays, &o.workdir, |sys| prepare(o, sys))?;
    let accel = o.accel.unwrap_or_else(|| qemu::detect(p.kernel.as_deref(), &o.workdir));
    let console = o.workdir.join("console.log");
    let _ = std::fs::remove_file(&console);
    let vm = qemu::Vm {
        overlays: overlays.to_vec(),
        uefi: p.uefi,
        nics: p.nics,
        memory_mb: o.memory_mb,
        accel,
        console: console.clone(),
    };
    log::info!(
        "rehearse: booting ({:?}, {}) for at most {} s",
        accel,
        if p.uefi { "UEFI" } else { "BIOS" },
        o.timeout.as_secs()
    );
    let (ended, took) = vm.run(&o.workdir, o.timeout)?;
    let text = String::from_utf8_lossy(&std::fs::read(&console).unwrap_or_default()).into_owned();
    let findings = probe::parse(&text);
    let (verdict, mut reasons) = verdict::judge(&findings, &p.addrs, &text, &p.facts);
    if ended == qemu::End::TimedOut && verdict == Verdict::Fail {
        reasons.push(format!("no report within {} s", o.timeout.as_secs()));
    }
    Ok(Report {
        verdict,
        reasons,
        firmware: if p.uefi { "uefi" } else { "bios" },
        accel,
        seconds: took.as_secs_f64(),
        ended,
        findings,
        configured_addresses: p.addrs,
        facts: p.facts,
        console_log: console,
    })
}

/// The table `ferry-init rehearse` prints.
pub fn table(r: &Report) -> String {
    let f = &r.findings;
    let mut s = format!(
        "verdict      {}\nfirmware     {}\naccel        {}\nseconds      {:.0}{}\n",
        format!("{:?}", r.verdict).to_lowercase(),
        r.firmware,
        format!("{:?}", r.accel).to_lowercase(),
        r.seconds,
        f.uptime_s.map(|u| format!(" (booted in {u:.0} s of guest uptime)")).unwrap_or_default()
    );
    if f.ended {
        s += &format!("state        {}\nkernel       {}\nroot         {}\n", f.state, f.kernel, f.root);
        for (m, ok) in &f.mounts {
            s += &format!("mount        {m} {}\n", if *ok { "mounted" } else { "NOT MOUNTED" });
        }
        for (n, a) in &f.addresses {
            s += &format!("address      {n} {a}\n");
        }
        for u in &f.failed_units {
            s += &format!("failed       {u}\n");
        }
    }
    for why in &r.reasons {
        s += &format!("reason       {why}\n");
    }
    s + &format!("console      {}\n", r.console_log.display())
}
