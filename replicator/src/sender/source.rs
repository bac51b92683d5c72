//! Sources: opened read-only (ferry never writes a source), read so that every pass sees what
//! is on the device, and identified for later passes.
//!
//! A source is read with `O_DIRECT` through an aligned bounce buffer: a filesystem mounted on
//! a partition (or through a second loop device over the same image) writes to the device
//! without touching the whole-disk device's page cache, so buffered reads of a live source can
//! return bytes the device no longer holds — and a delta pass would then skip real changes.
//! Where direct I/O is refused (tmpfs, some FUSE files), the source is read buffered and its
//! cache dropped (`POSIX_FADV_DONTNEED`) when it is opened and before each pass.
//! `FERRY_SOURCE_IO=buffered` forces the fallback (benchmarks).

use crate::layout::{read::ReadAt, RangeSet};
use anyhow::{Context, Result};
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};

/// Direct I/O alignment (covers 512- and 4096-byte logical blocks).
const ALIGN: usize = 4096;
/// Largest direct read at once (the bounce buffer's size).
const CHUNK: usize = 1 << 20;

/// A source opened read-only.
pub struct Source {
    file: File,
    direct: bool,
    size: u64,
}

/// Opens `path` read-only for reading by passes.
pub fn open(path: &str) -> Result<Source> {
    let buffered = || {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .with_context(|| format!("opening source {path} read-only"))
    };
    let want_direct = std::env::var("FERRY_SOURCE_IO").map_or(true, |v| v != "buffered");
    let direct = want_direct
        .then(|| OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC | libc::O_DIRECT).open(path).ok())
        .flatten();
    let (file, direct) = match direct {
        Some(f) => (f, true),
        None => (buffered()?, false),
    };
    let size = ReadAt::size(&file).with_context(|| format!("reading the size of {path}"))?;
    let s = Source { file, direct, size };
    // A probe: some files accept O_DIRECT at open and refuse it on read.
    let s = if s.direct && s.size > 0 && s.read_direct(&mut [0u8; 512], 0).is_err() {
        Source { file: buffered()?, direct: false, size }
    } else {
        s
    };
    s.refresh();
    Ok(s)
}

thread_local! {
    static BOUNCE: RefCell<Option<AlignedBuf>> = const { RefCell::new(None) };
}

/// A CHUNK-sized buffer aligned for direct I/O.
struct AlignedBuf(*mut u8);

impl AlignedBuf {
    fn layout() -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(CHUNK, ALIGN).expect("constant layout")
    }
    fn new() -> Self {
        // SAFETY: non-zero size; a null return is handled.
        let p = unsafe { std::alloc::alloc(Self::layout()) };
        if p.is_null() {
            std::alloc::handle_alloc_error(Self::layout());
        }
        AlignedBuf(p)
    }
    fn slice(&mut self, len: usize) -> &mut [u8] {
        // SAFETY: the allocation is CHUNK bytes, owned by self; len is capped.
        unsafe { std::slice::from_raw_parts_mut(self.0, len.min(CHUNK)) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in new() with the same layout.
        unsafe { std::alloc::dealloc(self.0, Self::layout()) }
    }
}

impl Source {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether reads bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Drops the source's cached pages (buffered sources): the next reads come from the device.
    pub fn refresh(&self) {
        if !self.direct {
            // SAFETY: fadvise on an open descriptor; the result is advisory.
            unsafe { libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }

    /// Direct read of `buf` at `off` through the aligned bounce buffer, in CHUNK steps.
    fn read_direct(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        BOUNCE.with(|b| {
            let mut b = b.borrow_mut();
            let bounce = b.get_or_insert_with(AlignedBuf::new);
            let mut done = 0usize;
            while done < buf.len() {
                let pos = off + done as u64;
                let start = pos - pos % ALIGN as u64;
                let skip = (pos - start) as usize;
                let want = (skip + buf.len() - done).div_ceil(ALIGN) * ALIGN;
                let span = bounce.slice(want.min(CHUNK));
                let n = read_full(&self.file, span, start)?;
                if n <= skip {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let take = (n - skip).min(buf.len() - done);
                buf[done..done + take].copy_from_slice(&span[skip..skip + take]);
                done += take;
            }
            Ok(())
        })
    }
}

/// Reads until `buf` is full or the end of the file; returns the bytes read.
fn read_full(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl ReadAt for Source {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        if self.direct {
            self.read_direct(buf, off)
        } else {
            FileExt::read_exact_at(&self.file, buf, off)
        }
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
}

/// Identity of a source across passes: its canonical path, size and host.
pub fn source_id(path: &str, size: u64) -> [u8; 32] {
    let canon =
        std::fs::canonicalize(path).map(|p| p.display().to_string()).unwrap_or_else(|_| path.to_string());
    let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    let mut h = blake3::Hasher::new();
    h.update(b"ferry-source-v1\0");
    h.update(canon.as_bytes());
    h.update(&size.to_le_bytes());
    h.update(host.as_bytes());
    *h.finalize().as_bytes()
}

/// Identity of one pass's plan: the source and exactly which extents it sends.
pub fn plan_hash(source_id: &[u8; 32], extents: &RangeSet) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(source_id);
    for (s, e) in extents.ranges() {
        h.update(&s.to_le_bytes());
        h.update(&e.to_le_bytes());
    }
    *h.finalize().as_bytes()
}

/// Up to [`MAX_SAMPLES`] non-zero blocks spread over the extents, with their hashes: a receiver
/// without state for a target compares them with the target to tell an earlier copy of this
/// source (a delta pass) from anything else (a full pass).
pub fn samples(src: &Source, extents: &RangeSet) -> Vec<(u64, u32, [u8; 32])> {
    use crate::digest;
    use crate::proto::BLOCK;
    let total = extents.total();
    if total == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; BLOCK as usize];
    // Twice as many candidates as wanted: some blocks are zeros.
    let tries = 2 * crate::proto::MAX_SAMPLES as u64;
    let mut last = None;
    let (mut k, mut before) = (0u64, 0u64);
    for &(s, e) in extents.ranges() {
        while k < tries && total / tries * k < before + (e - s) {
            let at = s + (total / tries * k - before);
            k += 1;
            let start = (at / BLOCK * BLOCK).max(s);
            let len = ((start / BLOCK + 1) * BLOCK).min(e) - start;
            if last == Some(start) {
                continue;
            }
            last = Some(start);
            let b = &mut buf[..len as usize];
            if src.read_exact_at(b, start).is_err() || digest::is_zero(b) {
                continue;
            }
            out.push((start, len as u32, digest::hash(b)));
            if out.len() == crate::proto::MAX_SAMPLES {
                return out;
            }
        }
        before += e - s;
    }
    out
}
