//! The UEFI boot chain every medium carries, signed for Secure Boot: Debian's shim (signed by
//! Microsoft's UEFI CA, which firmware with the Microsoft keys enrolled trusts) as
//! `EFI/BOOT/BOOTX64.EFI`, Debian's signed GRUB beside it as `grubx64.efi` (shim loads it from
//! its own directory and verifies it against Debian's key), and MokManager (`mmx64.efi`, which
//! shim starts when a verification fails). shim's fallback (`fbx64.efi`) is left out: on a
//! removable path it would write boot entries and reboot. The kernel is Debian's own, signed;
//! the initramfs and the menu are not verified by Secure Boot (so `customize` keeps working).
//!
//! Debian's signed GRUB cannot carry ferry's early config. Its built-in one looks for its
//! prefix `/EFI/debian` on the device it was started from, and when that does not exist it
//! searches for the file `/.disk/info` and reads `/boot/grub/grub.cfg` on that device: every
//! medium has [`DISK_INFO`] beside the menu, and no `/EFI/debian`. For network boot the signed
//! `grubnetx64.efi` reads `grub.cfg` from the TFTP server it was loaded from.
//!
//! The files come from Debian's packages `shim-signed`, `shim-helpers-amd64-signed` and
//! `grub-efi-amd64-signed`, unpacked without installing (`scripts/setup` unpacks them into
//! `$FERRY_CACHE/secureboot`: their maintainer scripts would run grub-install on a UEFI build
//! host) or named by `$FERRY_SECUREBOOT`; a copy installed under `/usr/lib` is the last resort.

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// The file the signed GRUB searches for to find the medium's root.
pub const DISK_INFO: &str = ".disk/info";
/// Where shim and GRUB go on an EFI system partition.
pub const SHIM: &str = "/EFI/BOOT/BOOTX64.EFI";
pub const GRUB: &str = "/EFI/BOOT/grubx64.efi";
pub const MOKMANAGER: &str = "/EFI/BOOT/mmx64.efi";

/// The signed programs of the chain.
pub struct Chain {
    pub shim: PathBuf,
    pub grub: PathBuf,
    pub mokmanager: PathBuf,
}

impl Chain {
    /// (host file, path on the ESP) for each program.
    pub fn files(&self) -> [(&Path, &'static str); 3] {
        [(&self.shim, SHIM), (&self.grub, GRUB), (&self.mokmanager, MOKMANAGER)]
    }
}

/// Where to look, in order: the root named explicitly, the one `scripts/setup` unpacked from
/// Debian's packages, then this host's own (on a non-Debian host that would be another
/// vendor's shim, which does not trust Debian's kernel).
fn roots() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(d) = std::env::var_os("FERRY_SECUREBOOT") {
        out.push(PathBuf::from(d));
    }
    let cache = std::env::var_os("FERRY_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ferry")));
    out.extend(cache.map(|c| c.join("secureboot")));
    out.push(PathBuf::from("/"));
    out
}

/// The first root holding every file of `rel`.
fn find(rel: &[&str]) -> Result<Vec<PathBuf>> {
    for r in roots() {
        let paths: Vec<PathBuf> = rel.iter().map(|p| r.join(p)).collect();
        if paths.iter().all(|p| p.is_file()) {
            return Ok(paths);
        }
    }
    bail!(
        "the signed UEFI boot chain is missing: {} not found under / or $FERRY_SECUREBOOT or \
         $FERRY_CACHE/secureboot (install or unpack Debian's shim-signed, shim-helpers-amd64-signed \
         and grub-efi-amd64-signed; scripts/setup unpacks them)",
        rel.join(", ")
    )
}

/// The chain for disks and CDs (`net`: for UEFI network boot).
pub fn chain(net: bool) -> Result<Chain> {
    let grub = if net { "grubnetx64.efi.signed" } else { "grubx64.efi.signed" };
    let grub = format!("usr/lib/grub/x86_64-efi-signed/{grub}");
    let mut f = find(&["usr/lib/shim/shimx64.efi.signed", &grub, "usr/lib/shim/mmx64.efi.signed"])?;
    let mokmanager = f.pop().unwrap_or_default();
    let grub = f.pop().unwrap_or_default();
    let shim = f.pop().unwrap_or_default();
    Ok(Chain { shim, grub, mokmanager })
}

/// The text of [`DISK_INFO`].
pub fn disk_info() -> &'static str {
    "ferry appliance medium\n"
}
