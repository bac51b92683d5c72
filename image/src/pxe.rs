//! `ferry-image pxe`: a directory to serve as a TFTP root: the kernel and initramfs, an iPXE
//! script, a pxelinux config and a GRUB network-boot config, each with the default entry and
//! optional per-MAC entries (`--host MAC=ARGS`), and a README with a dnsmasq configuration.

use crate::grub::{self, BASE_ARGS, DEBUG_ARGS};
use anyhow::{bail, Context, Result};
use std::path::Path;

pub const IPXE: &str = "boot.ipxe";
pub const PXELINUX: &str = "pxelinux.cfg/default";
pub const GRUB: &str = "grub.cfg";

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
    std::fs::create_dir_all(out.join("pxelinux.cfg"))
        .with_context(|| format!("creating {}", out.display()))?;
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
    w("README.md", readme())?;
    Ok(())
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

Serve this directory as the TFTP root. Clients that run iPXE (QEMU's and many NICs' firmware)
fetch `boot.ipxe`; BIOS PXE ROMs can chain-load iPXE (`undionly.kpxe`) or pxelinux
(`pxelinux.0`, `ldlinux.c32` from Debian's `pxelinux` and `syslinux-common`); UEFI clients can
chain-load `ipxe.efi` (Debian's `ipxe`) or GRUB's network image (`grub-mknetdir`). Copy those
loaders into this directory: ferry-image does not ship them.

- `boot.ipxe`: the iPXE script; per-MAC entries jump by `${netX/mac}`.
- `pxelinux.cfg/default`, `pxelinux.cfg/01-<mac>`: pxelinux menus.
- `grub.cfg`, `grub.cfg-01-<mac>`: GRUB network-boot menus (GRUB tries the per-MAC name first).
- `vmlinuz`, `initramfs.img`: the appliance. Settings can be embedded in the initramfs with
  `ferry-image customize --in DIR --out DIR2 --token ...` instead of the kernel command line.

A dnsmasq configuration (DHCP proxy beside an existing DHCP server, TFTP from this directory):

```
port=0
interface=eth0
dhcp-range=192.168.1.0,proxy
enable-tftp
tftp-root=/srv/ferry-pxe
dhcp-match=set:ipxe,175
dhcp-match=set:efi64,option:client-arch,7
pxe-service=tag:!ipxe,tag:!efi64,x86PC,\"ferry (BIOS)\",undionly.kpxe
pxe-service=tag:!ipxe,tag:efi64,X86-64_EFI,\"ferry (UEFI)\",ipxe.efi
dhcp-boot=tag:ipxe,boot.ipxe
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
