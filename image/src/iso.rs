//! `ferry-image iso`: a hybrid ISO9660 image. BIOS boots GRUB's El Torito image; UEFI boots the
//! signed chain ([`secureboot`]: shim, Debian's signed GRUB) from a FAT image that is both the El
//! Torito EFI entry and GPT partition 2, and GRUB's hybrid MBR makes the same file boot when
//! written raw to a disk (USB stick). All three find the ISO9660 tree — BIOS GRUB by
//! [`grub::MARKER`], the signed GRUB by [`secureboot::DISK_INFO`] — and read its boot menu,
//! kernel and initramfs from there. `unpack` takes such an ISO apart again for `customize`.

use crate::fat::Fat;
use crate::grub::{self, Target};
use crate::secureboot;
use crate::tools::{epoch, require, run, set_times, utc_stamp};
use anyhow::{bail, Context, Result};
use ferry_boot::medium::APPLIANCE_VOLUME_ID;
use std::path::{Path, PathBuf};

const ELTORITO: &str = "boot/grub/i386-pc/eltorito.img";
const HYBRID_MBR: &str = "/usr/lib/grub/i386-pc/boot_hybrid.img";

/// A staged ISO tree and its EFI image, ready for [`assemble`].
pub struct Staged {
    pub tree: PathBuf,
    pub efi: PathBuf,
}

/// Stages a new ISO from the appliance's kernel and initramfs in `work`.
pub fn stage(work: &Path, vmlinuz: &Path, initrd: &Path, menu: &str) -> Result<Staged> {
    let tree = work.join("iso");
    std::fs::create_dir_all(tree.join("boot/grub/i386-pc"))?;
    std::fs::write(tree.join(grub::MARKER), "ferry appliance medium\n")?;
    copy(vmlinuz, &tree.join(&grub::KERNEL[1..]))?;
    copy(initrd, &tree.join(&grub::INITRD[1..]))?;
    std::fs::write(tree.join(grub::CFG), menu)?;
    std::fs::create_dir_all(tree.join(".disk"))?;
    std::fs::write(tree.join(secureboot::DISK_INFO), secureboot::disk_info())?;
    grub::mkimage(Target::BiosEltorito, work, &tree.join(ELTORITO))?;
    let chain = secureboot::chain(false)?;
    let mut content = 0;
    for (f, _) in chain.files() {
        content += std::fs::metadata(f).with_context(|| format!("reading {}", f.display()))?.len();
    }
    let efi = work.join("efi.img");
    let size = (content + (512 << 10)).next_multiple_of(1 << 20);
    std::fs::File::create(&efi)?.set_len(size)?;
    let fat = Fat::format(&efi, 0, size, "FERRY-EFI", false)?;
    for (f, at) in chain.files() {
        fat.put(f, at)?;
    }
    Ok(Staged { tree, efi })
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Writes the ISO to `out` (through a temporary file).
pub fn assemble(s: &Staged, out: &Path) -> Result<()> {
    require("xorriso", "xorriso")?;
    require(HYBRID_MBR, "grub-pc-bin")?;
    let t = epoch()?;
    set_times(&s.tree, t)?;
    let tmp = out.with_extension("iso.tmp");
    let _ = std::fs::remove_file(&tmp);
    let date = format!("--modification-date={}00", utc_stamp(t));
    let (tmp_s, efi_s, tree_s) =
        (tmp.display().to_string(), s.efi.display().to_string(), s.tree.display().to_string());
    run(&[
        "xorriso",
        "-as",
        "mkisofs",
        "-o",
        &tmp_s,
        "-r",
        "-V",
        APPLIANCE_VOLUME_ID,
        &date,
        // BIOS: El Torito no-emulation GRUB, and GRUB's MBR for the USB case.
        "-b",
        ELTORITO,
        "-no-emul-boot",
        "-boot-load-size",
        "4",
        "-boot-info-table",
        "--grub2-boot-info",
        "--grub2-mbr",
        HYBRID_MBR,
        // UEFI: the FAT image as GPT partition 2 and as the El Torito EFI entry.
        "-partition_offset",
        "16",
        "-appended_part_as_gpt",
        "-append_partition",
        "2",
        "0xef",
        &efi_s,
        "-eltorito-alt-boot",
        "-e",
        "--interval:appended_partition_2:all::",
        "-no-emul-boot",
        &tree_s,
    ])?;
    std::fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))
}

/// Takes a ferry ISO apart into `work`: its tree and its EFI image.
pub fn unpack(iso: &Path, work: &Path) -> Result<Staged> {
    require("xorriso", "xorriso")?;
    let tree = work.join("iso");
    let (iso_s, tree_s) = (iso.display().to_string(), tree.display().to_string());
    run(&["xorriso", "-osirrox", "on", "-indev", &iso_s, "-extract", "/", &tree_s])?;
    if !tree.join(grub::MARKER).exists() || !tree.join(grub::CFG).exists() {
        bail!(
            "{}: an ISO9660 image, but not one `ferry-image iso` made (no /{} or /{})",
            iso.display(),
            grub::MARKER,
            grub::CFG
        );
    }
    let _ = std::fs::remove_file(tree.join("boot.catalog"));
    make_writable(&tree)?;
    let efi = work.join("efi.img");
    let mut f = std::fs::File::open(iso).with_context(|| format!("opening {}", iso.display()))?;
    let gpt =
        gptman::GPT::read_from(&mut f, 512).with_context(|| format!("{}: reading its GPT", iso.display()))?;
    let esp = gpt
        .iter()
        .map(|(_, p)| p)
        .find(|p| p.is_used() && p.partition_type_guid == ferry_formats::guid::ESP)
        .with_context(|| format!("{}: no EFI system partition in its GPT", iso.display()))?;
    let (start, len) = (esp.starting_lba * 512, (esp.ending_lba + 1 - esp.starting_lba) * 512);
    let mut data = vec![0u8; len as usize];
    use std::io::{Read, Seek};
    f.seek(std::io::SeekFrom::Start(start))?;
    f.read_exact(&mut data)
        .with_context(|| format!("{}: reading the EFI image at byte {start}", iso.display()))?;
    std::fs::write(&efi, data)?;
    Ok(Staged { tree, efi })
}

fn make_writable(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let mode = if p.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        if p.is_dir() {
            make_writable(&p)?;
        }
    }
    Ok(())
}
