//! `ferry-image disk`: a small GPT disk image that boots the appliance on BIOS and UEFI, for
//! clouds that create the transit VM from an image. Partition 1 is a BIOS boot partition with
//! GRUB's core image (the MBR holds GRUB's boot code pointing at it, as grub-bios-setup would
//! write); partition 2 is a FAT32 EFI system partition named [`APPLIANCE_PARTITION_NAME`] with
//! the signed UEFI chain ([`crate::secureboot`]: shim as `EFI/BOOT/BOOTX64.EFI`, Debian's signed
//! GRUB), `/.disk/info` for that GRUB to find it, the boot menu, the kernel and the initramfs. The partition name also
//! tells the appliance that this disk is its own and never a target. qcow2 is made from the raw
//! image by `qemu-img convert`.

use crate::fat::Fat;
use crate::grub::{self, Target};
use crate::tools::{require, run};
use anyhow::{bail, Context, Result};
use ferry_boot::medium::APPLIANCE_PARTITION_NAME;
use ferry_formats::guid;
use gptman::{GPTPartitionEntry, GPT};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;
const BIOS_START: u64 = 2048;
const BIOS_SECTORS: u64 = 2048;
const ESP_START: u64 = BIOS_START + BIOS_SECTORS;
/// FAT32 needs 65525 clusters; with 512-byte clusters that is 32 MiB and a bit.
const ESP_MIN_MIB: u64 = 40;
/// Room for customized initramfs images.
const ESP_SLACK_MIB: u64 = 16;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    Raw,
    Qcow2,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(Format::Raw),
            "qcow2" => Ok(Format::Qcow2),
            o => Err(format!("unknown format {o:?}; expected raw or qcow2")),
        }
    }
}

/// The format of an existing image file, from its magic.
pub fn detect(path: &Path) -> Result<Format> {
    let head =
        ferry_boot::medium::read_head(path, 4).with_context(|| format!("reading {}", path.display()))?;
    Ok(if head == b"QFI\xfb" { Format::Qcow2 } else { Format::Raw })
}

/// A stable GUID (version 4 layout) derived from `seed`, so the same inputs give the same image.
fn stable_guid(seed: &[u8], salt: u64) -> [u8; 16] {
    let f = |s: u64| {
        seed.iter().fold(0xcbf29ce484222325u64 ^ s, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
    };
    let mut g = [0u8; 16];
    g[..8].copy_from_slice(&f(salt).to_le_bytes());
    g[8..].copy_from_slice(&f(salt.wrapping_add(0x9e3779b97f4a7c15)).to_le_bytes());
    g[7] = (g[7] & 0x0f) | 0x40;
    g[8] = (g[8] & 0x3f) | 0x80;
    g
}

/// The files of the ESP: host path → path in the filesystem.
pub struct Contents<'a> {
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    pub menu: &'a str,
}

/// Writes a raw disk image to `out`, working in `work`.
pub fn write_raw(c: &Contents, work: &Path, out: &Path) -> Result<()> {
    let core = work.join("core.img");
    grub::mkimage(Target::BiosCore, work, &core)?;
    let chain = crate::secureboot::chain(false)?;
    let boot_img = Path::new("/usr/lib/grub/i386-pc/boot.img");
    require(&boot_img.display().to_string(), "grub-pc-bin")?;
    let len =
        |p: &Path| std::fs::metadata(p).map(|m| m.len()).with_context(|| format!("reading {}", p.display()));
    let mut content = len(c.vmlinuz)? + len(c.initrd)?;
    for (f, _) in chain.files() {
        content += len(f)?;
    }
    let esp_mib = (content.div_ceil(MIB) + ESP_SLACK_MIB).max(ESP_MIN_MIB);
    let total = ESP_START * 512 + esp_mib * MIB + MIB;
    let seed = std::fs::read(c.initrd)?;

    let _ = std::fs::remove_file(out);
    let mut f = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    f.set_len(total)?;
    let mut gpt = GPT::new_from(&mut f, 512, stable_guid(&seed, 1)).context("creating the GPT")?;
    gpt[1] = GPTPartitionEntry {
        partition_type_guid: guid::BIOS_BOOT,
        unique_partition_guid: stable_guid(&seed, 2),
        starting_lba: BIOS_START,
        ending_lba: BIOS_START + BIOS_SECTORS - 1,
        attribute_bits: 0,
        partition_name: "BIOS boot".into(),
    };
    gpt[2] = GPTPartitionEntry {
        partition_type_guid: guid::ESP,
        unique_partition_guid: stable_guid(&seed, 3),
        starting_lba: ESP_START,
        ending_lba: ESP_START + esp_mib * MIB / 512 - 1,
        attribute_bits: 0,
        partition_name: APPLIANCE_PARTITION_NAME.into(),
    };
    gpt.write_into(&mut f).context("writing the GPT")?;
    GPT::write_protective_mbr_into(&mut f, 512).context("writing the protective MBR")?;
    place_bios_boot(&mut f, boot_img, &core)?;
    drop(f);

    let fat = Fat::format(out, ESP_START * 512, esp_mib * MIB, "FERRY", true)?;
    std::fs::write(work.join("marker"), "ferry appliance medium\n")?;
    fat.put(&work.join("marker"), &format!("/{}", grub::MARKER))?;
    for (f, at) in chain.files() {
        fat.put(f, at)?;
    }
    std::fs::write(work.join("info"), crate::secureboot::disk_info())?;
    fat.put(&work.join("info"), &format!("/{}", crate::secureboot::DISK_INFO))?;
    std::fs::write(work.join("grub.cfg"), c.menu)?;
    fat.put(&work.join("grub.cfg"), &format!("/{}", grub::CFG))?;
    fat.put(c.vmlinuz, grub::KERNEL)?;
    fat.put(c.initrd, grub::INITRD)?;
    Ok(())
}

/// What grub-bios-setup does on GPT: core.img into the BIOS boot partition with the blocklist in
/// its first sector pointing at the rest, and boot.img's code in the MBR pointing at core.img
/// (the partition table in the MBR is kept).
fn place_bios_boot(f: &mut std::fs::File, boot_img: &Path, core_img: &Path) -> Result<()> {
    let mut core = std::fs::read(core_img).with_context(|| format!("reading {}", core_img.display()))?;
    let mut boot = std::fs::read(boot_img).with_context(|| format!("reading {}", boot_img.display()))?;
    let sectors = core.len().div_ceil(512) as u64;
    if sectors > BIOS_SECTORS || boot.len() != 512 {
        bail!("GRUB's core.img is {sectors} sectors (the BIOS boot partition has {BIOS_SECTORS}) or boot.img is not 512 bytes");
    }
    core.resize(sectors as usize * 512, 0);
    core[0x1f4..0x1fc].copy_from_slice(&(BIOS_START + 1).to_le_bytes());
    core[0x1fc..0x1fe].copy_from_slice(&((sectors - 1) as u16).to_le_bytes());
    core[0x1fe..0x200].copy_from_slice(&0x820u16.to_le_bytes());
    boot[0x5c..0x64].copy_from_slice(&BIOS_START.to_le_bytes());
    boot[0x64] = 0xff;
    f.seek(SeekFrom::Start(BIOS_START * 512))?;
    f.write_all(&core)?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&boot[..440])?;
    Ok(())
}

/// Converts a raw image to `format` at `out` (a rename for raw).
pub fn finish(raw: &Path, format: Format, out: &Path) -> Result<()> {
    match format {
        Format::Raw => std::fs::rename(raw, out).with_context(|| format!("renaming to {}", out.display())),
        Format::Qcow2 => {
            require("qemu-img", "qemu-utils")?;
            let tmp = out.with_extension("qcow2.tmp");
            let (r, t) = (raw.display().to_string(), tmp.display().to_string());
            run(&["qemu-img", "convert", "-f", "raw", "-O", "qcow2", &r, &t])?;
            std::fs::remove_file(raw)?;
            std::fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))
        }
    }
}

/// A raw copy of a ferry disk image (raw or qcow2) in `work`, and the ESP inside it.
pub fn open(image: &Path, work: &Path) -> Result<(PathBuf, Format, Fat)> {
    let format = detect(image)?;
    let raw = work.join("disk.raw");
    let (i, r) = (image.display().to_string(), raw.display().to_string());
    match format {
        Format::Raw => {
            std::fs::copy(image, &raw).with_context(|| format!("copying {}", image.display()))?;
        }
        Format::Qcow2 => {
            require("qemu-img", "qemu-utils")?;
            run(&["qemu-img", "convert", "-f", "qcow2", "-O", "raw", &i, &r])?;
        }
    }
    let mut f = std::fs::File::open(&raw)?;
    let gpt = GPT::read_from(&mut f, 512).with_context(|| format!("{}: reading its GPT", image.display()))?;
    let esp = gpt
        .iter()
        .map(|(_, p)| p)
        .find(|p| p.is_used() && p.partition_name.as_str() == APPLIANCE_PARTITION_NAME)
        .with_context(|| {
            format!(
                "{}: no partition named {APPLIANCE_PARTITION_NAME}; not a `ferry-image disk` image",
                image.display()
            )
        })?;
    let fat = Fat::open(&raw, esp.starting_lba * 512);
    Ok((raw, format, fat))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids() {
        assert_eq!(stable_guid(b"a", 1), stable_guid(b"a", 1));
        assert_ne!(stable_guid(b"a", 1), stable_guid(b"a", 2));
        assert_eq!(stable_guid(b"a", 1)[7] >> 4, 4);
    }
}
