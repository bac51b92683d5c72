//! `ferry-image customize`: embeds settings into an existing appliance artifact without
//! rebuilding it. `ferry.*` and `ip=` settings go into the initramfs (see [`crate::initrd`]),
//! where the kernel command line overrides them; other kernel parameters from `--cmdline` go on
//! the kernel lines of the artifact's boot menus. The artifact type is recognised by content:
//! an initramfs, an ISO, a disk image (raw or qcow2) or a PXE directory.

use crate::{disk, grub, initrd, iso, pxe, tools, CustomizeArgs};
use anyhow::{bail, Context, Result};
use std::path::Path;

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Initrd,
    Iso,
    Disk,
    PxeDir,
}

fn detect(p: &Path) -> Result<Kind> {
    if p.is_dir() {
        if p.join(pxe::IPXE).exists() && p.join("initramfs.img").exists() {
            return Ok(Kind::PxeDir);
        }
        bail!(
            "{}: a directory, but not a ferry PXE bundle (no {} and initramfs.img)",
            p.display(),
            pxe::IPXE
        );
    }
    let head =
        &ferry_boot::medium::read_head(p, 0x8006).with_context(|| format!("reading {}", p.display()))?;
    Ok(if head.get(0x8001..0x8006) == Some(b"CD001") {
        Kind::Iso
    } else if head.starts_with(b"QFI\xfb") || head.get(512..520) == Some(b"EFI PART") {
        Kind::Disk
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Kind::Initrd
    } else {
        bail!(
            "{}: not a ferry artifact (expected an initramfs, an ISO, a raw or qcow2 disk image, or a PXE directory)",
            p.display()
        )
    })
}

/// The settings words for the initramfs and the kernel parameters for the boot menus.
fn settings(a: &CustomizeArgs) -> Result<(Vec<String>, String)> {
    let mut words = Vec::new();
    if let Some(t) = &a.token {
        let t = if t == "auto" {
            let t = ferry_boot::token::generate()?;
            // The one place it is shown: give it to `ferry send` (--token-file or --token).
            println!("token: {t}");
            t
        } else {
            t.clone()
        };
        words.push(format!("ferry.token={t}"));
    }
    if let Some(l) = &a.listen {
        words.push(format!("ferry.listen={l}"));
    }
    words.extend(a.ip.iter().map(|i| format!("ip={i}")));
    if let Some(x) = &a.after {
        words.push(format!("ferry.after={x}"));
    }
    let mut kernel = Vec::new();
    for w in ferry_boot::cmdline::split(a.cmdline.as_deref().unwrap_or_default()) {
        if w.starts_with("ferry.") || w.starts_with("ip=") {
            words.push(w);
        } else {
            kernel.push(w);
        }
    }
    if words.is_empty() && kernel.is_empty() {
        bail!("nothing to customize: give --token, --listen, --ip, --after or --cmdline");
    }
    Ok((words, kernel.join(" ")))
}

fn customize_file(path: &Path, words: &[String], what: &str) -> Result<()> {
    let data = std::fs::read(path).with_context(|| format!("reading {what}"))?;
    tools::write_atomic(path, &initrd::customize(&data, words, what)?)
}

fn append_file(path: &Path, keyword: &str, args: &str) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    std::fs::write(path, grub::append_args(&text, keyword, args))
        .with_context(|| format!("writing {}", path.display()))
}

pub fn run(a: CustomizeArgs) -> Result<()> {
    let (words, kernel) = settings(&a)?;
    let kind = detect(&a.input)?;
    let work = tools::work_beside(&a.out)?;
    let what = a.input.display().to_string();
    match kind {
        Kind::Initrd => {
            if !kernel.is_empty() {
                bail!("{what} is a bare initramfs: kernel parameters ({kernel}) belong in the boot loader's config");
            }
            let data = std::fs::read(&a.input).with_context(|| format!("reading {what}"))?;
            tools::write_atomic(&a.out, &initrd::customize(&data, &words, &what)?)?;
        }
        Kind::Iso => {
            let s = iso::unpack(&a.input, work.path())?;
            customize_file(&s.tree.join(&grub::INITRD[1..]), &words, &what)?;
            append_file(&s.tree.join(grub::CFG), "linux", &kernel)?;
            iso::assemble(&s, &a.out)?;
        }
        Kind::Disk => {
            let (raw, format, fat) = disk::open(&a.input, work.path())?;
            let (i, c) = (work.path().join("initramfs.img"), work.path().join("grub.cfg"));
            fat.get(grub::INITRD, &i)?;
            fat.get(&format!("/{}", grub::CFG), &c)?;
            customize_file(&i, &words, &what)?;
            append_file(&c, "linux", &kernel)?;
            fat.put(&i, grub::INITRD)?;
            fat.put(&c, &format!("/{}", grub::CFG))?;
            disk::finish(&raw, format, &a.out)?;
        }
        Kind::PxeDir => {
            if a.out != a.input {
                copy_dir(&a.input, &a.out)?;
            }
            customize_file(&a.out.join("initramfs.img"), &words, &what)?;
            for (file, keyword) in pxe::menus(&a.out)? {
                append_file(&file, keyword, &kernel)?;
            }
        }
    }
    eprintln!("ferry-image: {} ({kind:?}) customized into {}", a.input.display(), a.out.display());
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), &dest).with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    Ok(())
}
