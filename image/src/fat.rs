//! FAT filesystems (the EFI system partitions) written with mtools into an image file at a byte
//! offset: `mformat` with a fixed volume serial, files copied with `SOURCE_DATE_EPOCH` times, so
//! the result is reproducible and passes `fsck.fat -n` (which fatfs 0.3 output does not).

use crate::tools::{require, run};
use anyhow::{ensure, Context, Result};
use std::path::Path;

pub struct Fat {
    /// `IMAGE@@OFFSET`, mtools' name for a filesystem inside an image file.
    spec: String,
}

impl Fat {
    /// A filesystem already inside `image` at byte `offset`.
    pub fn open(image: &Path, offset: u64) -> Fat {
        Fat { spec: format!("{}@@{offset}", image.display()) }
    }

    /// Formats `size` bytes of `image` at `offset` (FAT32 when `fat32`, else what fits) with
    /// volume `label` and a serial derived from it.
    pub fn format(image: &Path, offset: u64, size: u64, label: &str, fat32: bool) -> Result<Fat> {
        require("mformat", "mtools")?;
        ensure!(size.is_multiple_of(1 << 20), "a FAT filesystem of {size} bytes: expected whole MiB");
        let len = std::fs::metadata(image).with_context(|| format!("reading {}", image.display()))?.len();
        ensure!(offset + size <= len, "{} is {len} bytes; the FAT at {offset} needs {size}", image.display());
        let fat = Fat::open(image, offset);
        let serial = format!("{:08x}", crate::tools::fnv(label.as_bytes(), 0) as u32);
        let sectors = (size / 512).to_string();
        let mut argv = vec![
            "mformat", "-i", &fat.spec, "-T", &sectors, "-h", "64", "-s", "32", "-N", &serial, "-v", label,
        ];
        if fat32 {
            argv.push("-F");
        }
        argv.push("::");
        run(&argv)?;
        Ok(fat)
    }

    /// Creates directory `dir` and its parents (`/EFI/BOOT`).
    pub fn mkdir(&self, dir: &str) -> Result<()> {
        let mut path = String::new();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            path = format!("{path}/{part}");
            if !self.exists(&path)? {
                run(&["mmd", "-i", &self.spec, &format!("::{path}")])?;
            }
        }
        Ok(())
    }

    pub fn exists(&self, path: &str) -> Result<bool> {
        Ok(run(&["mdir", "-b", "-i", &self.spec, &format!("::{path}")]).is_ok())
    }

    /// Copies the host file `src` to `dest` (creating its directory), replacing an old one.
    pub fn put(&self, src: &Path, dest: &str) -> Result<()> {
        if let Some((dir, _)) = dest.rsplit_once('/') {
            self.mkdir(dir)?;
        }
        let s = src.display().to_string();
        run(&["mcopy", "-o", "-i", &self.spec, &s, &format!("::{dest}")])?;
        Ok(())
    }

    /// Copies `path` out of the filesystem to the host file `dest`.
    pub fn get(&self, path: &str, dest: &Path) -> Result<()> {
        let d = dest.display().to_string();
        run(&["mcopy", "-n", "-i", &self.spec, &format!("::{path}"), &d])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have_mtools() -> bool {
        Path::new("/usr/bin/mformat").exists() && Path::new("/usr/sbin/fsck.fat").exists()
    }

    #[test]
    fn reproducible_and_fsck_clean() {
        if !have_mtools() {
            eprintln!("skipped: mtools/dosfstools not installed (scripts/setup installs them)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("BOOTX64.EFI");
        std::fs::write(&src, vec![0x5a; 300_000]).unwrap();
        let mut images = Vec::new();
        for (i, fat32) in [(0, false), (1, false), (2, true)] {
            let img = t.path().join(format!("esp{i}.img"));
            let (off, size) = (1 << 20, if fat32 { 40 << 20 } else { 4 << 20 });
            std::fs::File::create(&img).unwrap().set_len(off + size + (1 << 20)).unwrap();
            let fat = Fat::format(&img, off, size, "FERRY", fat32).unwrap();
            fat.put(&src, "/EFI/BOOT/BOOTX64.EFI").unwrap();
            fat.put(&src, "/EFI/BOOT/BOOTX64.EFI").unwrap(); // replaced, not duplicated
            let back = t.path().join(format!("back{i}"));
            fat.get("/EFI/BOOT/BOOTX64.EFI", &back).unwrap();
            assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&src).unwrap());
            let part = t.path().join(format!("part{i}.img"));
            let all = std::fs::read(&img).unwrap();
            std::fs::write(&part, &all[off as usize..(off + size) as usize]).unwrap();
            run(&["fsck.fat", "-n", &part.display().to_string()]).unwrap();
            images.push(all);
        }
        assert_eq!(images[0], images[1], "same inputs, different bytes");
        assert!(Fat::format(&t.path().join("esp0.img"), 0, 1000, "X", false).is_err());
    }
}
