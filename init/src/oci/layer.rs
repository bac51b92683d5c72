//! One OCI layer from a mounted system tree: a tar of the tree, walked without following a
//! single symlink, entries sorted by name, owners numeric, mtimes as on disk (no atime, no
//! ctime), hard links kept, `security.capability` kept as a PAX xattr: the same tree gives the
//! same bytes. [`Trim`] says what stays out (contents of API and scratch directories, /boot,
//! kernel modules, swap files, data-disk mounts) and which files are replaced (fstab,
//! machine-id). Written through sha256 counters on both sides of the compressor: the layer's
//! `diff_id` (uncompressed) and its digest and size (compressed).

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What the layer leaves out or replaces, as paths relative to the root (`boot`, `etc/fstab`).
#[derive(Debug, Default, Clone)]
pub struct Trim {
    /// Directories kept as empty directories (their contents left out).
    pub empty: Vec<String>,
    /// Paths left out entirely (swap files).
    pub skip: Vec<String>,
    /// Files whose contents are replaced.
    pub replace: Vec<(String, Vec<u8>)>,
}

/// A writer that hashes and counts what passes through.
pub struct Counting<W: Write> {
    inner: W,
    pub hash: Sha256,
    pub bytes: u64,
}

impl<W: Write> Counting<W> {
    pub fn new(inner: W) -> Self {
        Counting { inner, hash: Sha256::new(), bytes: 0 }
    }
    pub fn into_parts(self) -> (W, String, u64) {
        (self.inner, ferry_replicator::digest::hex(&self.hash.finalize()), self.bytes)
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.hash.update(&b[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// The layer as written: where, and its identities.
pub struct Written {
    pub file: PathBuf,
    /// sha256 of the uncompressed tar.
    pub diff_id: String,
    /// sha256 and size of the compressed blob.
    pub digest: String,
    pub size: u64,
    pub entries: u64,
}

fn capability(p: &Path) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    let name = c"security.capability";
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and the buffer is as long as we say.
    let n = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n > 0).then(|| {
        buf.truncate(n as usize);
        buf
    })
}

struct Walk<'a, W: Write> {
    tar: tar::Builder<W>,
    root: &'a Path,
    trim: &'a Trim,
    links: HashMap<(u64, u64), PathBuf>,
    entries: u64,
}

impl<W: Write> Walk<'_, W> {
    fn header(m: &std::fs::Metadata, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(m.mode() & 0o7777);
        h.set_uid(m.uid() as u64);
        h.set_gid(m.gid() as u64);
        h.set_mtime(m.mtime().max(0) as u64);
        h.set_size(0);
        h
    }

    /// `rel`: a path relative to the root, as bytes (names need not be UTF-8).
    fn entry(&mut self, rel: &Path) -> Result<()> {
        let path = self.root.join(rel);
        let m = std::fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        let ft = m.file_type();
        let name = rel;
        if let Some(cap) = capability(&path).filter(|_| ft.is_file()) {
            self.tar.append_pax_extensions([("SCHILY.xattr.security.capability", cap.as_slice())])?;
        }
        self.entries += 1;
        if ft.is_dir() {
            let mut h = Self::header(&m, tar::EntryType::Directory);
            return Ok(self.tar.append_data(&mut h, name, std::io::empty())?);
        }
        if ft.is_symlink() {
            let mut h = Self::header(&m, tar::EntryType::Symlink);
            let target = std::fs::read_link(&path)?;
            return Ok(self.tar.append_link(&mut h, name, target)?);
        }
        if let Some((_, data)) = self.trim.replace.iter().find(|(p, _)| Path::new(p) == rel) {
            let mut h = Self::header(&m, tar::EntryType::Regular);
            h.set_size(data.len() as u64);
            return Ok(self.tar.append_data(&mut h, name, data.as_slice())?);
        }
        if m.nlink() > 1 && !ft.is_dir() {
            match self.links.get(&(m.dev(), m.ino())) {
                Some(first) => {
                    let mut h = Self::header(&m, tar::EntryType::Link);
                    let first = first.clone();
                    return Ok(self.tar.append_link(&mut h, name, first)?);
                }
                None => {
                    self.links.insert((m.dev(), m.ino()), rel.to_path_buf());
                }
            }
        }
        if ft.is_file() {
            let mut h = Self::header(&m, tar::EntryType::Regular);
            h.set_size(m.len());
            let f = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            return Ok(self.tar.append_data(&mut h, name, f)?);
        }
        let kind = if ft.is_fifo() {
            tar::EntryType::Fifo
        } else if ft.is_char_device() {
            tar::EntryType::Char
        } else if ft.is_block_device() {
            tar::EntryType::Block
        } else {
            self.entries -= 1;
            return Ok(()); // sockets do not travel
        };
        let mut h = Self::header(&m, kind);
        let rdev = m.rdev();
        h.set_device_major(libc::major(rdev))?;
        h.set_device_minor(libc::minor(rdev))?;
        Ok(self.tar.append_data(&mut h, name, std::io::empty())?)
    }

    fn dir(&mut self, rel: &Path) -> Result<()> {
        if !rel.as_os_str().is_empty() {
            self.entry(rel)?;
            if self.trim.empty.iter().any(|e| Path::new(e) == rel) {
                return Ok(());
            }
        }
        let path = self.root.join(rel);
        let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(&path)
            .with_context(|| format!("listing {}", path.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        // Sorted by bytes: the same order whatever the names' encoding.
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        for n in names {
            let child = rel.join(n);
            if self.trim.skip.iter().any(|s| Path::new(s) == child) {
                continue;
            }
            let is_dir = std::fs::symlink_metadata(self.root.join(&child))?.is_dir();
            if is_dir {
                self.dir(&child)?;
            } else {
                self.entry(&child)?;
            }
        }
        Ok(())
    }
}

/// Writes the layer of the tree at `root` into `out` (a new file).
pub fn write(root: &Path, trim: &Trim, c: Compression, level: i32, out: &Path) -> Result<Written> {
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let outer = Counting::new(std::io::BufWriter::new(file));
    let (diff_id, entries, outer) = match c {
        Compression::Gzip => {
            let gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(outer, flate2::Compression::new(level.clamp(0, 9) as u32));
            let (inner, diff_id, entries) = tar_into(root, trim, gz)?;
            (diff_id, entries, inner.finish()?)
        }
        Compression::Zstd => {
            let z = zstd::stream::Encoder::new(outer, level.clamp(1, 19))?;
            let (inner, diff_id, entries) = tar_into(root, trim, z)?;
            (diff_id, entries, inner.finish()?)
        }
    };
    let (mut w, digest, size) = outer.into_parts();
    w.flush()?;
    Ok(Written { file: out.to_path_buf(), diff_id, digest, size, entries })
}

fn tar_into<W: Write>(root: &Path, trim: &Trim, w: W) -> Result<(W, String, u64)> {
    let mut walk =
        Walk { tar: tar::Builder::new(Counting::new(w)), root, trim, links: HashMap::new(), entries: 0 };
    walk.tar.mode(tar::HeaderMode::Complete);
    walk.dir(Path::new(""))?;
    let entries = walk.entries;
    let counting = walk.tar.into_inner()?;
    let (inner, diff_id, _) = counting.into_parts();
    Ok((inner, diff_id, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in ["etc", "proc/1", "boot", "usr/bin", "lib/modules/6.1"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("etc/fstab"), "UUID=x / ext4 defaults 0 1\n").unwrap();
        std::fs::write(r.join("proc/1/status"), "x").unwrap();
        std::fs::write(r.join("boot/vmlinuz"), "k").unwrap();
        std::fs::write(r.join("usr/bin/a"), "aaaa").unwrap();
        std::fs::hard_link(r.join("usr/bin/a"), r.join("usr/bin/b")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd-not-here", r.join("usr/bin/dangling")).unwrap();
        std::fs::write(r.join("swapfile"), "s").unwrap();
        // A name that is not UTF-8.
        use std::os::unix::ffi::OsStrExt;
        std::fs::write(r.join(std::ffi::OsStr::from_bytes(b"bad\xffname")), "x").unwrap();
        t
    }

    fn listing(layer: &Path) -> Vec<(String, tar::EntryType, Vec<u8>)> {
        let f = std::fs::File::open(layer).unwrap();
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                (name, e.header().entry_type(), data)
            })
            .collect()
    }

    #[test]
    fn trimmed_sorted_and_deterministic() {
        let t = tree();
        let trim = Trim {
            empty: vec!["proc".into(), "boot".into(), "lib/modules".into()],
            skip: vec!["swapfile".into()],
            replace: vec![("etc/fstab".into(), b"# emptied\n".to_vec())],
        };
        let o = tempfile::tempdir().unwrap();
        let a = write(t.path(), &trim, Compression::Gzip, 6, &o.path().join("a")).unwrap();
        let b = write(t.path(), &trim, Compression::Gzip, 6, &o.path().join("b")).unwrap();
        assert_eq!((a.digest.clone(), a.diff_id.clone()), (b.digest, b.diff_id));
        assert_eq!(a.size, std::fs::metadata(o.path().join("a")).unwrap().len());
        let l = listing(&o.path().join("a"));
        let names: Vec<&str> = l.iter().map(|(n, _, _)| n.as_str()).collect();
        let want = [
            "bad\u{fffd}name",
            "boot",
            "etc",
            "etc/fstab",
            "lib",
            "lib/modules",
            "proc",
            "usr",
            "usr/bin",
            "usr/bin/a",
            "usr/bin/b",
            "usr/bin/dangling",
        ];
        assert_eq!(names, want);
        assert_eq!(l[3].2, b"# emptied\n");
        assert_eq!(l[10].1, tar::EntryType::Link);
        assert_eq!(l[11].1, tar::EntryType::Symlink);
        // The diff_id is the sha256 of the uncompressed tar.
        let mut raw = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(std::fs::File::open(o.path().join("a")).unwrap()),
            &mut raw,
        )
        .unwrap();
        assert_eq!(a.diff_id, ferry_replicator::digest::hex(&Sha256::digest(&raw)));
    }
}
