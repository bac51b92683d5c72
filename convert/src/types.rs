//! The closed sets conversion decides on, as enums with the names the JSON reports have always
//! used: distribution family, initramfs tool, bootloader, firmware.

use serde::{Deserialize, Serialize};

/// Which distribution family's conventions (package manager, file locations) apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Debian,
    Rhel,
    Suse,
    Other,
}

impl Family {
    /// From os-release `ID` and `ID_LIKE`.
    pub fn from_os_release(id: &str, like: &str) -> Family {
        let like: Vec<&str> = like.split_whitespace().collect();
        let is = |x: &str| id == x || like.contains(&x);
        if is("debian") || is("ubuntu") {
            Family::Debian
        } else if is("suse") || id.contains("suse") || id == "sles" || id == "sled" {
            Family::Suse
        } else if is("rhel") || is("fedora") || is("centos") {
            Family::Rhel
        } else {
            Family::Other
        }
    }
}

/// The tool that builds the migrated system's initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InitramfsTool {
    #[serde(rename = "initramfs-tools")]
    InitramfsTools,
    #[serde(rename = "dracut")]
    Dracut,
    /// SUSE's mkinitrd (SLES 11/12).
    #[serde(rename = "mkinitrd")]
    Mkinitrd,
    #[serde(rename = "none")]
    None,
}

/// The bootloader whose configuration is regenerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bootloader {
    /// GRUB 2 as Debian names it (`grub-mkconfig`, /boot/grub).
    Grub,
    /// GRUB 2 as RHEL and SUSE name it (`grub2-mkconfig`, /boot/grub2).
    Grub2,
    /// Nothing recognised: the bootloader step refuses rather than guess.
    Unknown,
}

impl Bootloader {
    /// (mkconfig tool, config file, install tool).
    pub fn tools(self) -> Option<(&'static str, &'static str, &'static str)> {
        match self {
            Bootloader::Grub => Some(("grub-mkconfig", "boot/grub/grub.cfg", "grub-install")),
            Bootloader::Grub2 => Some(("grub2-mkconfig", "boot/grub2/grub.cfg", "grub2-install")),
            Bootloader::Unknown => None,
        }
    }
}

/// How the migrated system boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Uefi,
}
