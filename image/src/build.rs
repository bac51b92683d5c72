//! `ferry-image build`: the appliance initramfs. It holds `/init` (the static ferry-init),
//! `/sbin/modprobe` (a link to it) and only the modules the appliance needs with their
//! dependency closure, plus matching `modules.dep`/`alias`/`softdep`/`builtin`.

use crate::cpio::{Archive, Node};
use crate::tools::write_atomic;
use crate::{kernel, BuildArgs};
use anyhow::{bail, Context, Result};
use ferry_boot::kmod::ModuleDb;
use std::collections::BTreeSet;

/// Drivers the appliance may need on any transit VM, and filesystems/crypto it mounts.
pub const WANTED: &[&str] = &[
    // buses and disks
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "virtio_rng",
    "virtio_console",
    "xen-blkfront",
    "xen-netfront",
    "nvme",
    "ahci",
    "ata_piix",
    "ata_generic",
    "sd_mod",
    // NICs
    "e1000",
    "e1000e",
    // filesystems and what they request on demand
    "ext4",
    "xfs",
    "btrfs",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_iso8859-1",
    "nls_utf8",
    "crc32c_generic",
    "crc32c-intel",
    "libcrc32c",
    // volume management, MD RAID1, LUKS and loop devices for conversion
    "dm-mod",
    "md-mod",
    "raid1",
    "dm-crypt",
    "xts",
    "ecb",
    "essiv",
    "aesni-intel",
    "loop",
];

fn is_static_elf(bin: &[u8]) -> Result<bool> {
    if bin.len() < 64 || &bin[..4] != b"\x7fELF" || bin[4] != 2 {
        bail!("not a 64-bit ELF executable");
    }
    let u16_at = |o: usize| u16::from_le_bytes([bin[o], bin[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bin[32..40].try_into()?) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let kind = u32::from_le_bytes(bin.get(o..o + 4).context("truncated program headers")?.try_into()?);
        if kind == 3 {
            return Ok(false); // PT_INTERP: needs a dynamic loader
        }
    }
    Ok(true)
}

fn default_init() -> Result<std::path::PathBuf> {
    let me = std::env::current_exe()?;
    Ok(me.with_file_name("ferry-init"))
}

/// The closure of [`WANTED`] in load order; names the kernel lacks are an error unless builtin.
pub fn closure(db: &ModuleDb) -> Result<BTreeSet<String>> {
    let mut set = BTreeSet::new();
    for want in WANTED {
        let order = db.load_order(want).with_context(|| format!("the appliance needs module {want}"))?;
        set.extend(order);
        // Softdeps the kernel lists as pre/post are wishes; include those that exist.
        for m in set.clone() {
            if let Some(sd) = db.softdeps.get(&m) {
                for s in sd.pre.iter().chain(&sd.post) {
                    if let Ok(o) = db.load_order(s) {
                        set.extend(o);
                    }
                }
            }
        }
    }
    Ok(set)
}

fn filter_lines(text: &str, keep: impl Fn(&str) -> bool) -> String {
    text.lines().filter(|l| keep(l)).map(|l| format!("{l}\n")).collect()
}

pub fn run(a: BuildArgs) -> Result<()> {
    let kdir = a.kernel.unwrap_or_else(kernel::default_dir);
    let k = kernel::locate(&kdir)?;
    let init_path = match a.init {
        Some(p) => p,
        None => default_init()?,
    };
    let init = std::fs::read(&init_path).with_context(|| {
        format!("reading {} (build it with scripts/build-init or pass --init)", init_path.display())
    })?;
    if !is_static_elf(&init).with_context(|| format!("checking {}", init_path.display()))? {
        bail!(
            "{} is dynamically linked; PID 1 must be static (build with -C target-feature=+crt-static)",
            init_path.display()
        );
    }
    let db = ModuleDb::open(&k.modules)?;
    let mods = closure(&db)?;

    let mut ar = Archive::default();
    ar.file("init", init, 0o755);
    ar.add("sbin/modprobe", Node::Symlink("/init".into()));
    ar.add("dev/console", Node::CharDev { major: 5, minor: 1 });
    ar.add("dev/null", Node::CharDev { major: 1, minor: 3 });
    for d in ["proc", "sys", "run", "tmp", "etc", "root", "mnt"] {
        ar.add(d, Node::Dir);
    }
    let mdir = format!("lib/modules/{}", k.version);
    let mut dep_lines = String::new();
    let mut size = 0u64;
    for m in &mods {
        let rel = db.path_of(m).with_context(|| format!("module {m} has no file"))?;
        let data = std::fs::read(k.modules.join(rel)).with_context(|| format!("reading module {rel}"))?;
        size += data.len() as u64;
        ar.file(&format!("{mdir}/{rel}"), data, 0o644);
        let deps: Vec<&str> = db.deps[m].1.iter().filter_map(|d| db.path_of(d)).collect();
        dep_lines.push_str(&format!("{rel}: {}\n", deps.join(" ")));
    }
    let read = |f: &str| std::fs::read_to_string(k.modules.join(f)).unwrap_or_default();
    let included = |name: &str| mods.contains(&ferry_boot::kmod::normalize(name));
    ar.file(&format!("{mdir}/modules.dep"), dep_lines.into_bytes(), 0o644);
    let alias = filter_lines(&read("modules.alias"), |l| l.split_whitespace().nth(2).is_some_and(included));
    ar.file(&format!("{mdir}/modules.alias"), alias.into_bytes(), 0o644);
    let softdep =
        filter_lines(&read("modules.softdep"), |l| l.split_whitespace().nth(1).is_some_and(included));
    ar.file(&format!("{mdir}/modules.softdep"), softdep.into_bytes(), 0o644);
    ar.file(&format!("{mdir}/modules.builtin"), read("modules.builtin").into_bytes(), 0o644);

    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let cpio = ar.write(Vec::new())?;
    let z = zstd::bulk::compress(&cpio, 19).context("compressing the initramfs")?;
    write_atomic(&a.out.join("initramfs.img"), &z)?;
    let kernel_bytes =
        std::fs::read(&k.vmlinuz).with_context(|| format!("reading {}", k.vmlinuz.display()))?;
    write_atomic(&a.out.join("vmlinuz"), &kernel_bytes)?;
    let manifest = serde_json_manifest(&k.version, &mods, z.len(), cpio.len());
    write_atomic(&a.out.join("manifest.json"), manifest.as_bytes())?;
    eprintln!(
        "ferry-image: kernel {}, {} modules ({:.1} MiB), initramfs {:.1} MiB (cpio {:.1} MiB) in {}",
        k.version,
        mods.len(),
        size as f64 / 1048576.0,
        z.len() as f64 / 1048576.0,
        cpio.len() as f64 / 1048576.0,
        a.out.display()
    );
    Ok(())
}

fn serde_json_manifest(version: &str, mods: &BTreeSet<String>, z: usize, raw: usize) -> String {
    let list: Vec<String> = mods.iter().map(|m| format!("\"{m}\"")).collect();
    format!(
        "{{\n  \"kernel\": \"{version}\",\n  \"initramfs_bytes\": {z},\n  \"cpio_bytes\": {raw},\n  \"modules\": [{}]\n}}\n",
        list.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_check_reads_program_headers() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // Test binaries are dynamically linked.
        assert!(!is_static_elf(&me).unwrap());
        assert!(is_static_elf(b"#!/bin/sh\n").is_err());
    }
}
