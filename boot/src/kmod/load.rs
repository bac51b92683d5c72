//! Loads modules into the running kernel: `finit_module` for plain `.ko` files, userspace
//! decompression plus `init_module` for `.ko.xz` / `.ko.zst`. Also the `modprobe` personality
//! the kernel calls for on-demand loads (`mount -t xfs`, crypto).

use super::ModuleDb;
use anyhow::{Context, Result};
use std::collections::HashSet;
use std::ffi::CString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct Loader {
    pub db: ModuleDb,
    sysfs_module: PathBuf,
    tried: Mutex<HashSet<String>>,
}

/// Decompresses module bytes according to the file name's extension.
pub fn decompress(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    if name.ends_with(".ko") {
        return Ok(raw);
    }
    let mut out = Vec::new();
    if name.ends_with(".xz") {
        lzma_rs::xz_decompress(&mut raw.as_slice(), &mut out)
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .with_context(|| format!("decompressing {name} (xz)"))?;
    } else if name.ends_with(".zst") {
        zstd::stream::read::Decoder::new(raw.as_slice())
            .and_then(|mut d| d.read_to_end(&mut out))
            .with_context(|| format!("decompressing {name} (zstd)"))?;
    } else {
        anyhow::bail!("{name}: unknown module compression (expected .ko, .ko.xz or .ko.zst)");
    }
    Ok(out)
}

impl Loader {
    pub fn new(db: ModuleDb) -> Self {
        Loader { db, sysfs_module: "/sys/module".into(), tried: Mutex::new(HashSet::new()) }
    }

    /// For the running kernel: `/lib/modules/$(uname -r)`.
    pub fn for_running_kernel() -> Result<Self> {
        let rel = nix::sys::utsname::uname().context("uname")?.release().to_string_lossy().into_owned();
        Ok(Self::new(ModuleDb::open(&Path::new("/lib/modules").join(rel))?))
    }

    /// True when the module is live in the kernel (or built in).
    pub fn is_loaded(&self, name: &str) -> bool {
        self.db.builtin.contains(name) || self.sysfs_module.join(name).join("initstate").exists()
    }

    /// Loads `name` (a module or alias) with everything it needs. Returns the modules newly loaded.
    pub fn ensure(&self, name: &str) -> Result<Vec<String>> {
        let mut loaded = Vec::new();
        let targets = self.db.resolve_name(name);
        anyhow::ensure!(!targets.is_empty(), "no module or alias named {name}");
        for target in targets {
            for m in self.db.load_order(&target)? {
                if self.is_loaded(&m) {
                    continue;
                }
                if !self.tried.lock().unwrap().insert(m.clone()) {
                    continue;
                }
                self.insert(&m)?;
                loaded.push(m);
            }
        }
        Ok(loaded)
    }

    fn insert(&self, name: &str) -> Result<()> {
        let rel = self.db.path_of(name).with_context(|| format!("no file for module {name}"))?;
        let path = self.db.dir.join(rel);
        let params = CString::default();
        let res = if rel.ends_with(".ko") {
            let f = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            nix::kmod::finit_module(&f, &params, nix::kmod::ModuleInitFlags::empty())
        } else {
            let raw = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let image = decompress(&path, raw)?;
            nix::kmod::init_module(&image, &params)
        };
        match res {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {
                log::debug!("loaded module {name}");
                Ok(())
            }
            // No such device: the driver found nothing to bind (e.g. a platform probe); harmless.
            Err(nix::errno::Errno::ENODEV) => Ok(()),
            // Under kernel lockdown (Secure Boot) only modules signed by a trusted key load.
            Err(
                e @ (nix::errno::Errno::EKEYREJECTED | nix::errno::Errno::ENOKEY | nix::errno::Errno::EPERM),
            ) => Err(anyhow::anyhow!(
                "loading module {name} from {}: {e}: the kernel refuses it — under Secure Boot \
                     (kernel lockdown) only modules signed by the kernel's vendor load; use the \
                     distribution's own signed module",
                path.display()
            )),
            Err(e) => Err(anyhow::anyhow!("loading module {name} from {}: {e}", path.display())),
        }
    }
}

/// `modprobe [-q] [-b] [--] NAME...` as the kernel's request_module runs it.
pub fn modprobe_main(args: Vec<String>) -> i32 {
    let quiet = args.iter().any(|a| a == "-q" || a == "--quiet");
    let names: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let loader = match Loader::for_running_kernel() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("modprobe: {e:#}");
            return 1;
        }
    };
    let mut rc = 0;
    for n in names {
        if let Err(e) = loader.ensure(n) {
            if !quiet {
                eprintln!("modprobe: {e:#}");
            }
            rc = 1;
        }
    }
    rc
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn decompresses_zstd_and_rejects_unknown() {
        let body = b"\x7fELF fake module".to_vec();
        let z = zstd::encode_all(body.as_slice(), 3).unwrap();
        assert_eq!(decompress(Path::new("a/b.ko.zst"), z).unwrap(), body);
        assert_eq!(decompress(Path::new("a/b.ko"), body.clone()).unwrap(), body);
        assert!(decompress(Path::new("a/b.ko.gz"), body).unwrap_err().to_string().contains(".ko.gz"));
    }

    #[test]
    fn decompresses_xz() {
        let body = b"\x7fELF another fake module, long enough to compress".repeat(10);
        let mut out = Vec::new();
        lzma_rs::xz_compress(&mut body.as_slice(), &mut out).unwrap();
        assert_eq!(decompress(Path::new("m.ko.xz"), out).unwrap(), body);
        let mut bad = Vec::new();
        bad.write_all(b"not xz").unwrap();
        assert!(format!("{:#}", decompress(Path::new("m.ko.xz"), bad).unwrap_err()).contains("m.ko.xz"));
    }
}
