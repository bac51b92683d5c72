//! `ferry-image pxe`: a directory to serve as a TFTP root: the kernel and initramfs, an iPXE
//! script, a pxelinux config, GRUB's network-boot program for BIOS (`grub.0`) and the signed
//! UEFI chain (`bootx64.efi` = shim, which loads Debian's signed network GRUB `grubx64.efi`
//! from the same directory; it reads `grub/grub.cfg`, which picks the per-MAC menu by
//! `$net_default_mac`), each menu with the default entry and optional per-MAC entries
//! (`--host MAC=ARGS`), and a README with a dnsmasq configuration.

use crate::grub::{self, Target, BASE_ARGS, DEBUG_ARGS};
use anyhow::{bail, Context, Result};
use std::path::Path;

pub const IPXE: &str = "boot.ipxe";
pub const PXELINUX: &str = "pxelinux.cfg/default";
pub const GRUB: &str = "grub.cfg";
pub const GRUB_BIOS: &str = "grub.0";
pub const GRUB_EFI: &str = "grubx64.efi";
/// The UEFI boot file: shim, signed for Secure Boot.
pub const SHIM_EFI: &str = "bootx64.efi";
/// What the signed network GRUB reads (its prefix is `/grub` on the server).
pub const GRUB_EFI_CFG: &str = "grub/grub.cfg";

/// One `--host MAC=ARGS`: the MAC in lowercase with colons, and its extra kernel parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub mac: String,
    pub args: String,
}

impl std::str::FromStr for Host {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (mac, args) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected MAC=ARGS"))?;
        let mac = mac.to_ascii_lowercase().replace('-', ":");
        let ok = mac.split(':').count() == 6
            && mac.split(':').all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok());
        if !ok {
            return Err(format!("{s:?}: {mac:?} is not a MAC address like 52:54:00:12:34:56"));
        }
        Ok(Host { mac, args: args.trim().to_string() })
    }
}

fn join(parts: &[&str]) -> String {
    parts.iter().filter(|p| !p.is_empty()).copied().collect::<Vec<_>>().join(" ")
}

/// The iPXE script: a jump to the booting NIC's MAC label, else the default entry.
pub fn ipxe(extra: &str, hosts: &[Host]) -> String {
    let entry = |label: &str, args: &str| {
        format!(
            ":{label}\nkernel vmlinuz initrd=initramfs.img {}\ninitrd initramfs.img\nboot\n",
            join(&[BASE_ARGS, extra, args])
        )
    };
    let mut s =
        String::from("#!ipxe\n# ferry appliance (ferry-image pxe); paths are relative to this script.\n");
    s.push_str("goto mac-${netX/mac:hexhyp} || goto ferry\n");
    for h in hosts {
        s.push_str(&entry(&format!("mac-{}", h.mac.replace(':', "-")), &h.args));
    }
    s.push_str(&entry("ferry", ""));
    s.push_str(&entry("debug", DEBUG_ARGS));
    s
}

fn pxelinux(extra: &str, host_args: &str) -> String {
    let entry = |label: &str, args: &str| {
        format!(
            "LABEL {label}\n  KERNEL vmlinuz\n  APPEND initrd=initramfs.img {}\n",
            join(&[BASE_ARGS, extra, host_args, args])
        )
    };
    format!("DEFAULT ferry\nPROMPT 1\nTIMEOUT 50\n{}{}", entry("ferry", ""), entry("debug", DEBUG_ARGS))
}

/// Writes the bundle into `out` from the appliance's kernel and initramfs.
pub fn write(
    vmlinuz: &Path,
    initrd: &Path,
    extra: &str,
    hosts: &[Host],
    timeout_s: u32,
    out: &Path,
) -> Result<()> {
    if out.exists() && std::fs::read_dir(out)?.next().is_some() && !out.join(IPXE).exists() {
        bail!("{} exists and is not a ferry PXE directory; give an empty or new directory", out.display());
    }
    for d in ["pxelinux.cfg", "grub"] {
        std::fs::create_dir_all(out.join(d)).with_context(|| format!("creating {}", out.display()))?;
    }
    for (from, name) in [(vmlinuz, "vmlinuz"), (initrd, "initramfs.img")] {
        std::fs::copy(from, out.join(name)).with_context(|| format!("copying {}", from.display()))?;
    }
    let w = |name: &str, text: String| {
        std::fs::write(out.join(name), text).with_context(|| format!("writing {name}"))
    };
    w(IPXE, ipxe(extra, hosts))?;
    w(PXELINUX, pxelinux(extra, ""))?;
    w(GRUB, grub::menu("/vmlinuz", "/initramfs.img", extra, timeout_s))?;
    for h in hosts {
        let dashed = h.mac.replace(':', "-");
        w(&format!("pxelinux.cfg/01-{dashed}"), pxelinux(extra, &h.args))?;
        w(
            &format!("grub.cfg-01-{dashed}"),
            grub::menu("/vmlinuz", "/initramfs.img", &join(&[extra, &h.args]), timeout_s),
        )?;
    }
    let work = crate::tools::work_beside(out)?;
    grub::mkimage(Target::NetBios, work.path(), &out.join(GRUB_BIOS))?;
    let chain = crate::secureboot::chain(true)?;
    for (from, name) in [(&chain.shim, SHIM_EFI), (&chain.grub, GRUB_EFI), (&chain.mokmanager, "mmx64.efi")] {
        std::fs::copy(from, out.join(name)).with_context(|| format!("copying {}", from.display()))?;
    }
    w(GRUB_EFI_CFG, efi_dispatch(hosts))?;
    w("README.md", readme())?;
    Ok(())
}

/// `grub/grub.cfg` for the signed network GRUB (which does not search `grub.cfg-01-<mac>` by
/// itself): the booting NIC's per-MAC menu, else the default one.
fn efi_dispatch(hosts: &[Host]) -> String {
    let mut s = String::from("# ferry appliance (ferry-image pxe): the signed UEFI GRUB starts here.\n");
    for h in hosts {
        s.push_str(&format!(
            "if [ \"$net_default_mac\" = \"{}\" ]; then configfile /grub.cfg-01-{}; fi\n",
            h.mac,
            h.mac.replace(':', "-")
        ));
    }
    s.push_str("configfile /grub.cfg\n");
    s
}

/// Every boot-menu file of a bundle in `dir` with the keyword its kernel lines start with.
pub fn menus(dir: &Path) -> Result<Vec<(std::path::PathBuf, &'static str)>> {
    let mut out = vec![(dir.join(IPXE), "kernel")];
    for e in std::fs::read_dir(dir.join("pxelinux.cfg"))? {
        out.push((e?.path(), "APPEND"));
    }
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("grub.cfg")) {
            out.push((p, "linux"));
        }
    }
    out.sort();
    Ok(out)
}

fn readme() -> String {
    "# ferry appliance: network boot

Serve this directory as the TFTP root. The bundle boots every common client by itself:

- `grub.0`: GRUB for BIOS PXE ROMs; it reads `grub.cfg-01-<mac>` if it exists, else
  `grub.cfg`, from the server it booted from.
- `bootx64.efi`: UEFI network boot, with or without Secure Boot: Debian's shim (signed by
  Microsoft's UEFI CA), which loads Debian's signed network GRUB `grubx64.efi` from this
  directory; that GRUB reads `grub/grub.cfg`, which picks `grub.cfg-01-<mac>` or `grub.cfg`.
  `mmx64.efi` is shim's MokManager.
- `boot.ipxe`: for clients that already run iPXE (QEMU's NIC ROMs, iPXE builds); per-MAC
  entries jump by `${netX/mac}`.
- `pxelinux.cfg/default`, `pxelinux.cfg/01-<mac>`: for sites that use pxelinux (copy `pxelinux.0`
  and `ldlinux.c32` from Debian's `pxelinux` and `syslinux-common` here).
- `vmlinuz`, `initramfs.img`: the appliance. Settings can be embedded in the initramfs with
  `ferry-image customize --in DIR --out DIR2 --token ...` instead of on kernel command lines.

A dnsmasq configuration serving DHCP and TFTP on an isolated migration network (each client
class gets one boot file: the three tag sets do not overlap):

```
interface=eth1
dhcp-range=192.168.50.100,192.168.50.200,12h
enable-tftp
tftp-root=/srv/ferry-pxe
dhcp-match=set:ipxe,175
dhcp-match=set:efi64,option:client-arch,7
dhcp-match=set:efi64,option:client-arch,9
dhcp-boot=tag:ipxe,boot.ipxe
dhcp-boot=tag:!ipxe,tag:efi64,bootx64.efi
dhcp-boot=tag:!ipxe,tag:!efi64,grub.0
```
"
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_scripts() {
        let h: Host = "52-54-00-AB-cd-01=ferry.token=abcdefgh12 ip=dhcp".parse().unwrap();
        assert_eq!(
            h,
            Host { mac: "52:54:00:ab:cd:01".into(), args: "ferry.token=abcdefgh12 ip=dhcp".into() }
        );
        assert!("52:54:00:ab:cd=x".parse::<Host>().unwrap_err().contains("not a MAC"));
        assert!("nomac".parse::<Host>().unwrap_err().contains("MAC=ARGS"));
        let s = ipxe("ferry.listen=9000", &[h]);
        assert!(s.starts_with("#!ipxe\n"));
        assert!(s.contains(":mac-52-54-00-ab-cd-01\nkernel vmlinuz initrd=initramfs.img console=tty0 console=ttyS0,115200n8 ferry.listen=9000 ferry.token=abcdefgh12 ip=dhcp\n"), "{s}");
        assert!(s.contains(":ferry\nkernel vmlinuz initrd=initramfs.img console=tty0 console=ttyS0,115200n8 ferry.listen=9000\n"), "{s}");
        let p = pxelinux("", "x=1");
        assert!(p.contains("  APPEND initrd=initramfs.img console=tty0 console=ttyS0,115200n8 x=1\n"), "{p}");
    }
}
