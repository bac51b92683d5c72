//! GRUB for the BIOS side of the appliance media: images made with `grub-mkimage` from the
//! host's GRUB (El Torito for the ISO, core for the disk image, PXE), each with every module it
//! needs built in and an early config that finds the medium by a marker file (UEFI boots
//! Debian's signed GRUB instead: [`crate::secureboot`]), and the boot menu (`grub.cfg`) with a default and a debug entry whose kernel command line is
//! shown and editable at the prompt (`e`).

use crate::tools::{require, run};
use anyhow::Result;
use std::path::Path;

/// A file at the root of every ferry medium; the early config searches for it.
pub const MARKER: &str = ".ferry-appliance";
/// Where the kernel and initramfs live on the ISO and the disk image.
pub const KERNEL: &str = "/boot/vmlinuz";
pub const INITRD: &str = "/boot/initramfs.img";
pub const CFG: &str = "boot/grub/grub.cfg";

/// Kernel parameters of every entry: the console on screen and on the first serial port.
pub const BASE_ARGS: &str = "console=tty0 console=ttyS0,115200n8";
/// Added by the debug entry: verbose log, and the appliance stays up when the job ends.
pub const DEBUG_ARGS: &str = "ferry.debug ferry.after=wait";

const COMMON: &[&str] = &[
    "normal",
    "configfile",
    "linux",
    "search",
    "search_fs_file",
    "echo",
    "test",
    "serial",
    "terminal",
    "part_gpt",
    "part_msdos",
    "fat",
    "iso9660",
    "ls",
    "cat",
    "halt",
    "reboot",
];

#[derive(Clone, Copy)]
pub enum Target {
    /// BIOS boot from CD (El Torito no-emulation) and from the ISO written to a disk.
    BiosEltorito,
    /// BIOS core image for a BIOS boot partition.
    BiosCore,
    /// BIOS PXE network boot program (`grub.pxe`): reads `grub.cfg` from the TFTP server.
    NetBios,
}

/// Builds one GRUB image into `out`.
pub fn mkimage(target: Target, work: &Path, out: &Path) -> Result<()> {
    let (format, dir, extra): (&str, &str, &[&str]) = match target {
        Target::BiosEltorito => ("i386-pc-eltorito", "i386-pc", &["biosdisk"]),
        Target::BiosCore => ("i386-pc", "i386-pc", &["biosdisk"]),
        Target::NetBios => ("i386-pc-pxe", "i386-pc", &["pxe", "net", "tftp"]),
    };
    let net = matches!(target, Target::NetBios);
    require("grub-mkimage", "grub-common")?;
    require(
        &format!("/usr/lib/grub/{dir}/linux.mod"),
        if dir == "i386-pc" { "grub-pc-bin" } else { "grub-efi-amd64-bin" },
    )?;
    let early = work.join("early.cfg");
    std::fs::write(
        &early,
        format!("search --no-floppy --file --set=root /{MARKER}\nset prefix=($root)/boot/grub\n"),
    )?;
    let mut argv = vec![
        "grub-mkimage".to_string(),
        "-O".into(),
        format.into(),
        "-d".into(),
        format!("/usr/lib/grub/{dir}"),
    ];
    if net {
        // The prefix becomes the TFTP server it booted from: (tftp,SERVER)/grub.cfg, after
        // grub.cfg-01-<mac> and the per-IP names.
        argv.extend(["-p".into(), String::new()]);
    } else {
        argv.extend(["-c".into(), early.display().to_string(), "-p".into(), "/boot/grub".into()]);
    }
    argv.extend(["-o".into(), out.display().to_string()]);
    argv.extend(extra.iter().chain(COMMON).map(|m| m.to_string()));
    run(&argv.iter().map(String::as_str).collect::<Vec<_>>())?;
    Ok(())
}

/// The boot menu for files at `kernel`/`initrd`; `extra` is appended to every kernel line.
pub fn menu(kernel: &str, initrd: &str, extra: &str, timeout_s: u32) -> String {
    let args = |more: &str| {
        [BASE_ARGS, more, extra].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join(" ")
    };
    format!(
        "# ferry appliance boot menu (ferry-image). Press e on an entry to edit its kernel command line.
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout={timeout_s}
set default=ferry
menuentry 'ferry appliance' --id ferry {{
\tlinux {kernel} {}
\tinitrd {initrd}
}}
menuentry 'ferry appliance (debug: verbose log, stays up after the job)' --id debug {{
\tlinux {kernel} {}
\tinitrd {initrd}
}}
",
        args(""),
        args(DEBUG_ARGS)
    )
}

/// Appends `args` to every line whose first word is `keyword` (`linux` in grub.cfg, `kernel` in
/// iPXE scripts, `APPEND` in pxelinux files).
pub fn append_args(text: &str, keyword: &str, args: &str) -> String {
    if args.trim().is_empty() {
        return text.to_string();
    }
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line);
        if line.split_whitespace().next() == Some(keyword) {
            out.push(' ');
            out.push_str(args.trim());
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn menu_has_both_entries_and_extra_args() {
        let m = menu(KERNEL, INITRD, "ip=dhcp", 5);
        assert!(m.contains("\tlinux /boot/vmlinuz console=tty0 console=ttyS0,115200n8 ip=dhcp\n"), "{m}");
        assert!(m.contains("ferry.debug ferry.after=wait ip=dhcp\n"), "{m}");
        assert!(m.contains("set timeout=5\n"));
        let m2 = append_args(&m, "linux", "ferry.listen=9000");
        assert_eq!(m2.matches("ip=dhcp ferry.listen=9000\n").count(), 2, "{m2}");
        assert_eq!(append_args(&m, "linux", " "), m);
    }
}
