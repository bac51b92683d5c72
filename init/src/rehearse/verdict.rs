//! The rehearsal's verdict: **pass** (the system is running, every fstab entry is mounted,
//! every configured static address is on its NIC), **degraded** (it booted, but something of
//! that is missing or a unit failed), **fail** (the probe never reported). Without a report the
//! reasons come from the console (kernel panic, no root device, emergency shell) and from what
//! the disks say (the kernel command line's root and console, kernels without virtio).

use super::probe::Findings;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Degraded,
    Fail,
}

impl Verdict {
    /// `ferry-init rehearse`'s exit code: 0 pass, 2 degraded, 3 fail (1 is an error).
    pub fn code(self) -> i32 {
        match self {
            Verdict::Pass => 0,
            Verdict::Degraded => 2,
            Verdict::Fail => 3,
        }
    }
}

/// What the disks say about booting on virtio, read before the VM starts.
#[derive(Debug, Default, Clone, Serialize)]
pub struct BootFacts {
    /// `root=` and `console=` of the default GRUB entry's kernel line.
    pub root_arg: String,
    pub consoles: Vec<String>,
    /// Kernels without virtio drivers, with what they lack.
    pub kernels_without_virtio: Vec<String>,
    /// A ferry conversion report is on the system.
    pub converted: bool,
}

/// The first `linux` line of a grub.cfg: its `root=` and every `console=`.
pub fn kernel_args(grub_cfg: &str) -> (String, Vec<String>) {
    let Some(line) =
        grub_cfg.lines().map(str::trim).find(|l| l.starts_with("linux ") || l.starts_with("linux\t"))
    else {
        return (String::new(), Vec::new());
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let root = words.iter().find_map(|w| w.strip_prefix("root=")).unwrap_or("").to_string();
    let consoles = words.iter().filter_map(|w| w.strip_prefix("console=")).map(String::from).collect();
    (root, consoles)
}

/// Console messages that say why a boot stopped.
const CONSOLE_SIGNS: &[(&str, &str)] = &[
    ("Kernel panic", "kernel panic"),
    ("Gave up waiting for root", "no root device: the initramfs gave up waiting for the root filesystem"),
    ("does not exist.  Dropping to a shell", "no root device: the initramfs dropped to a shell"),
    ("Could not boot", "no root device: dracut could not boot"),
    ("You are in emergency mode", "the system stopped in emergency mode"),
    ("Give root password for maintenance", "the system stopped in emergency mode"),
    ("error: no such device", "GRUB could not find its device"),
    ("grub rescue>", "GRUB fell into its rescue shell"),
];

/// Why a VM that never reported did not boot.
pub fn reasons_without_report(console: &str, facts: &BootFacts) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (sign, why) in CONSOLE_SIGNS {
        if console.contains(sign) && !out.iter().any(|o| o == why) {
            out.push(why.to_string());
        }
    }
    let xen_root = ["/dev/xvd", "/dev/sd", "/dev/hd"].iter().any(|p| facts.root_arg.starts_with(p));
    if xen_root {
        out.push(format!(
            "no root device: the kernel command line has root={}, a name the disk does not have on virtio (/dev/vd*)",
            facts.root_arg
        ));
    }
    if !facts.kernels_without_virtio.is_empty() {
        out.push(format!(
            "no root device: kernels without virtio drivers: {}",
            facts.kernels_without_virtio.join("; ")
        ));
    }
    let serial = facts.consoles.iter().any(|c| c.starts_with("ttyS") || c.starts_with("tty0"));
    if !facts.consoles.is_empty() && !serial {
        out.push(format!(
            "the kernel's console is {} only: nothing of the boot appears on the serial console",
            facts.consoles.join(", ")
        ));
    }
    if !facts.converted {
        out.push(
            "no ferry conversion report on the system (/var/log/ferry/conversion.json): not converted?"
                .into(),
        );
    }
    if out.is_empty() {
        out.push("the probe never reported: see the console log".into());
    }
    out
}

/// The verdict and its reasons from the probe's findings and the configured static addresses.
pub fn judge(
    f: &Findings,
    configured: &[(String, String)],
    console: &str,
    facts: &BootFacts,
) -> (Verdict, Vec<String>) {
    if !f.ended {
        let mut why = reasons_without_report(console, facts);
        if f.began {
            why.insert(0, "the probe started but did not finish".into());
        }
        return (Verdict::Fail, why);
    }
    let mut why = Vec::new();
    if f.state != "running" {
        why.push(format!("the system is {} (not running)", f.state));
    }
    for u in &f.failed_units {
        why.push(format!("unit {u} failed"));
    }
    for (m, ok) in &f.mounts {
        if !ok {
            why.push(format!("fstab entry {m} is not mounted"));
        }
    }
    for (nic, addr) in configured {
        if !f.addresses.iter().any(|(n, a)| n == nic && a == addr) {
            let found: Vec<&str> =
                f.addresses.iter().filter(|(n, _)| n == nic).map(|(_, a)| a.as_str()).collect();
            why.push(format!(
                "{nic} is configured with {addr} but has {}",
                if found.is_empty() { "no address".to_string() } else { found.join(", ") }
            ));
        }
    }
    (if why.is_empty() { Verdict::Pass } else { Verdict::Degraded }, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn booted() -> Findings {
        Findings {
            began: true,
            ended: true,
            state: "running".into(),
            mounts: vec![("/".into(), true)],
            addresses: vec![("eth0".into(), "10.0.2.15/24".into())],
            ..Findings::default()
        }
    }

    #[test]
    fn pass_degraded_fail() {
        let cfg = vec![("eth0".to_string(), "10.0.2.15/24".to_string())];
        let facts = BootFacts { converted: true, ..BootFacts::default() };
        assert_eq!(judge(&booted(), &cfg, "", &facts).0, Verdict::Pass);
        let mut f = booted();
        f.addresses[0].1 = "10.0.2.99/24".into();
        f.mounts.push(("/data".into(), false));
        let (v, why) = judge(&f, &cfg, "", &facts);
        assert_eq!(v, Verdict::Degraded);
        assert!(
            why.iter().any(|w| w.contains("eth0 is configured with 10.0.2.15/24 but has 10.0.2.99/24")),
            "{why:?}"
        );
        assert!(why.iter().any(|w| w.contains("/data")), "{why:?}");
        let (v, why) = judge(&Findings::default(), &cfg, "[ 3.1] Kernel panic - not syncing", &facts);
        assert_eq!(v, Verdict::Fail);
        assert_eq!(why, ["kernel panic"]);
    }

    #[test]
    fn an_unconverted_xen_guest_fails_for_want_of_a_root_device() {
        let cfg = "menuentry 'Debian' {\n\tlinux\t/boot/vmlinuz-6.1.0 root=/dev/xvda2 ro console=hvc0\n}\n";
        let (root, consoles) = kernel_args(cfg);
        let facts = BootFacts { root_arg: root, consoles, kernels_without_virtio: vec![], converted: false };
        let (v, why) = judge(&Findings::default(), &[], "SeaBIOS\nBooting from Hard Disk...", &facts);
        assert_eq!(v, Verdict::Fail);
        assert!(why[0].starts_with("no root device: the kernel command line has root=/dev/xvda2"), "{why:?}");
        assert!(why.iter().any(|w| w.contains("console is hvc0 only")), "{why:?}");
    }
}
