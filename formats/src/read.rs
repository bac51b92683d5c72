//! Positioned reads from whatever holds a disk: a file or block device, a source opened for
//! direct I/O (`sender::source::Source`), or bytes in memory (fuzzing and tests). gptman and
//! mbrman read through [`Cursor`], a `Read + Seek` view of it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

pub trait ReadAt: Sync {
    /// Fills `buf` from byte `off`; fails (UnexpectedEof) if the end comes first.
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
    /// Size in bytes.
    fn size(&self) -> io::Result<u64>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, off)
    }
    fn size(&self) -> io::Result<u64> {
        let mut f = self;
        f.seek(SeekFrom::End(0))
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let start = usize::try_from(off).ok().filter(|&s| s <= self.len());
        match start.and_then(|s| self.get(s..s.checked_add(buf.len())?)) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

/// Bytes as a disk, sized so they can stand behind a `&dyn ReadAt`.
impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self[..].read_exact_at(buf, off)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

impl ReadAt for &[u8] {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, off)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

/// `Read + Seek` over a [`ReadAt`], for parsers that want a stream.
pub struct Cursor<'a, R: ReadAt + ?Sized> {
    r: &'a R,
    pos: u64,
    size: u64,
}

impl<'a, R: ReadAt + ?Sized> Cursor<'a, R> {
    pub fn new(r: &'a R) -> io::Result<Self> {
        Ok(Cursor { r, pos: 0, size: r.size()? })
    }
}

impl<R: ReadAt + ?Sized> Read for Cursor<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.size.saturating_sub(self.pos)) as usize;
        self.r.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: ReadAt + ?Sized> Seek for Cursor<'_, R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(o) => Some(o),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_and_seek() {
        let v: Vec<u8> = (0..100).collect();
        let mut b = [0u8; 4];
        v[..].read_exact_at(&mut b, 96).unwrap();
        assert_eq!(b, [96, 97, 98, 99]);
        assert!(v[..].read_exact_at(&mut b, 97).is_err());
        assert!(v[..].read_exact_at(&mut b, u64::MAX).is_err());
        let mut c = Cursor::new(&v[..]).unwrap();
        c.seek(SeekFrom::End(-2)).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, vec![98, 99]);
        assert!(c.seek(SeekFrom::Current(-200)).is_err());
    }
}
