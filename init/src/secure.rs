//! Secure Boot and kernel lockdown as `/status` reports them: `secure_boot` from what the
//! kernel's EFI stub found (`secure_boot` of the x86 boot parameters, which
//! `/sys/kernel/boot_params/data` exposes) or the firmware's `SecureBoot` variable (efivarfs,
//! when the kernel has it; false on BIOS), and
//! `lockdown` from securityfs — `none`, `integrity` (what Debian's kernel enforces when Secure
//! Boot is on: signed modules only, no /dev/mem, no unsigned kexec) or `confidentiality`.

use nix::mount::{mount, MsFlags};
use serde::Serialize;
use std::path::Path;

const SECURE_BOOT_VAR: &str = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Security {
    pub uefi: bool,
    pub secure_boot: bool,
    /// The active lockdown mode; `None` when the kernel has no lockdown LSM.
    pub lockdown: Option<String>,
}

/// Mounts efivarfs and securityfs where the kernel offers them (errors are not problems: BIOS
/// has no efivars, a kernel may lack securityfs), then reads both under `sys`.
pub fn probe() -> Security {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for (fs, at) in [("efivarfs", "/sys/firmware/efi/efivars"), ("securityfs", "/sys/kernel/security")] {
        if Path::new(at).is_dir() {
            let _ = mount(Some(fs), at, Some(fs), flags | MsFlags::MS_RDONLY, None::<&str>);
        }
    }
    read(Path::new("/sys"))
}

/// What `sys` (a sysfs tree with efivarfs and securityfs mounted in it) says.
pub fn read(sys: &Path) -> Security {
    let uefi = sys.join("firmware/efi").is_dir();
    // 4 bytes of attributes, then the value: 1 when Secure Boot is enforcing.
    let var = std::fs::read(sys.join("firmware/efi/efivars").join(SECURE_BOOT_VAR)).unwrap_or_default();
    // `struct boot_params` byte 0x1ec: efi_secureboot_mode, 3 = enabled.
    let params = std::fs::read(sys.join("kernel/boot_params/data")).unwrap_or_default();
    let secure_boot = (var.len() == 5 && var[4] == 1) || params.get(0x1ec) == Some(&3);
    let lockdown = std::fs::read_to_string(sys.join("kernel/security/lockdown")).ok().and_then(|t| {
        t.split_whitespace().find_map(|w| w.strip_prefix('[')?.strip_suffix(']').map(String::from))
    });
    Security { uefi, secure_boot, lockdown }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_efivars_and_lockdown() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(read(t.path()), Security::default());
        std::fs::create_dir_all(t.path().join("firmware/efi/efivars")).unwrap();
        std::fs::create_dir_all(t.path().join("kernel/security")).unwrap();
        std::fs::write(t.path().join("firmware/efi/efivars").join(SECURE_BOOT_VAR), [6, 0, 0, 0, 1]).unwrap();
        std::fs::write(t.path().join("kernel/security/lockdown"), "none [integrity] confidentiality\n")
            .unwrap();
        assert_eq!(
            read(t.path()),
            Security { uefi: true, secure_boot: true, lockdown: Some("integrity".into()) }
        );
        std::fs::write(t.path().join("firmware/efi/efivars").join(SECURE_BOOT_VAR), [6, 0, 0, 0, 0]).unwrap();
        std::fs::write(t.path().join("kernel/security/lockdown"), "[none] integrity confidentiality\n")
            .unwrap();
        let s = read(t.path());
        assert_eq!((s.secure_boot, s.lockdown.as_deref()), (false, Some("none")));
        // Without efivarfs: the boot parameters the EFI stub filled in.
        std::fs::remove_file(t.path().join("firmware/efi/efivars").join(SECURE_BOOT_VAR)).unwrap();
        std::fs::create_dir_all(t.path().join("kernel/boot_params")).unwrap();
        let mut params = vec![0u8; 4096];
        params[0x1ec] = 2;
        std::fs::write(t.path().join("kernel/boot_params/data"), &params).unwrap();
        assert!(!read(t.path()).secure_boot, "disabled");
        params[0x1ec] = 3;
        std::fs::write(t.path().join("kernel/boot_params/data"), &params).unwrap();
        assert!(read(t.path()).secure_boot, "enabled");
    }
}
