//! Block hashing and the per-disk digest. Extents are cut into blocks at absolute
//! [`BLOCK`](crate::proto::BLOCK) boundaries; each block is hashed with BLAKE3 into a record
//! `(offset u64 LE, len u32 LE, block hash)`. Records are grouped in order into chunks of
//! [`CHUNK_BLOCKS`]; a chunk's hash is BLAKE3 over its records, and the disk digest is BLAKE3 over
//! the chunk hashes (the last chunk may be short) and the block count (u64 LE). Both ends compute
//! it independently, so it also covers blocks a resumed or delta pass did not resend; the
//! receiver keeps 32 bytes per chunk to resume, not a record per block.

use crate::proto::BLOCK;
use std::sync::OnceLock;

pub type Hash = [u8; 32];
pub const RECORD: usize = 44;

/// Splits `[start, end)` at absolute block boundaries.
pub fn blocks(start: u64, end: u64) -> impl Iterator<Item = (u64, u32)> {
    let mut cur = start;
    std::iter::from_fn(move || {
        if cur >= end {
            return None;
        }
        let next = ((cur / BLOCK) + 1) * BLOCK;
        let e = next.min(end);
        let r = (cur, (e - cur) as u32);
        cur = e;
        Some(r)
    })
}

pub fn hash(data: &[u8]) -> Hash {
    *blake3::hash(data).as_bytes()
}

/// Hash of `len` zero bytes (cached for full blocks).
pub fn zero_hash(len: u32) -> Hash {
    static FULL: OnceLock<Hash> = OnceLock::new();
    if len as u64 == BLOCK {
        return *FULL.get_or_init(|| hash(&vec![0u8; BLOCK as usize]));
    }
    hash(&vec![0u8; len as usize])
}

pub fn is_zero(data: &[u8]) -> bool {
    let (pre, mid, post) = unsafe { data.align_to::<u128>() };
    pre.iter().all(|&b| b == 0) && mid.iter().all(|&w| w == 0) && post.iter().all(|&b| b == 0)
}

pub fn record(offset: u64, len: u32, h: &Hash) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[..8].copy_from_slice(&offset.to_le_bytes());
    r[8..12].copy_from_slice(&len.to_le_bytes());
    r[12..].copy_from_slice(h);
    r
}

pub fn parse_record(r: &[u8]) -> (u64, u32, Hash) {
    (
        u64::from_le_bytes(r[..8].try_into().unwrap()),
        u32::from_le_bytes(r[8..12].try_into().unwrap()),
        r[12..44].try_into().unwrap(),
    )
}

/// Blocks per digest chunk.
pub const CHUNK_BLOCKS: u64 = 256;

/// Running disk digest.
#[derive(Default, Clone)]
pub struct Digest {
    outer: blake3::Hasher,
    chunk: blake3::Hasher,
    /// Records of the chunk being built (at most CHUNK_BLOCKS).
    tail: Vec<u8>,
    pub blocks: u64,
}

impl Digest {
    /// Folds one block; returns the chunk hash when this block completes a chunk.
    pub fn fold(&mut self, offset: u64, len: u32, h: &Hash) -> Option<Hash> {
        self.fold_record(&record(offset, len, h))
    }

    pub fn fold_record(&mut self, r: &[u8]) -> Option<Hash> {
        self.chunk.update(&r[..RECORD]);
        self.tail.extend_from_slice(&r[..RECORD]);
        self.blocks += 1;
        if !self.blocks.is_multiple_of(CHUNK_BLOCKS) {
            return None;
        }
        let h = *self.chunk.finalize().as_bytes();
        self.outer.update(&h);
        self.chunk.reset();
        self.tail.clear();
        Some(h)
    }

    /// Rebuilds a digest from its complete chunks and the records of the partial one.
    pub fn restore(chunks: &[Hash], tail: &[u8]) -> Option<Digest> {
        if !tail.len().is_multiple_of(RECORD) || (tail.len() / RECORD) as u64 >= CHUNK_BLOCKS {
            return None;
        }
        let mut d = Digest::default();
        for c in chunks {
            d.outer.update(c);
        }
        d.blocks = chunks.len() as u64 * CHUNK_BLOCKS;
        for r in tail.chunks(RECORD) {
            d.fold_record(r);
        }
        Some(d)
    }

    /// Records of the partial chunk (what a checkpoint saves beside the chunk hashes).
    pub fn tail(&self) -> &[u8] {
        &self.tail
    }

    pub fn value(&self) -> Hash {
        let mut o = self.outer.clone();
        if !self.tail.is_empty() {
            o.update(self.chunk.finalize().as_bytes());
        }
        o.update(&self.blocks.to_le_bytes());
        *o.finalize().as_bytes()
    }
}

pub fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_align_to_absolute_boundaries() {
        let b: Vec<_> = blocks(BLOCK - 10, 2 * BLOCK + 5).collect();
        assert_eq!(b, vec![(BLOCK - 10, 10), (BLOCK, BLOCK as u32), (2 * BLOCK, 5)]);
        assert_eq!(blocks(5, 5).count(), 0);
        assert!(is_zero(&[0u8; 1000]));
        let mut v = vec![0u8; 1000];
        v[999] = 1;
        assert!(!is_zero(&v));
        assert_eq!(zero_hash(BLOCK as u32), hash(&vec![0u8; BLOCK as usize]));
        let r = record(7, 9, &[3u8; 32]);
        assert_eq!(parse_record(&r), (7, 9, [3u8; 32]));
    }

    #[test]
    fn digest_restores_from_chunks_and_tail() {
        let mut d = Digest::default();
        let mut chunks = Vec::new();
        let n = 2 * CHUNK_BLOCKS + 17;
        for i in 0..n {
            if let Some(c) = d.fold(i * BLOCK, BLOCK as u32, &hash(&i.to_le_bytes())) {
                chunks.push(c);
            }
        }
        assert_eq!(chunks.len(), 2);
        let r = Digest::restore(&chunks, d.tail()).unwrap();
        assert_eq!((r.value(), r.blocks), (d.value(), n));
        // A different block anywhere changes the digest; so does the count.
        let mut e = Digest::default();
        for i in 0..n {
            let h = if i == 5 { [0u8; 32] } else { hash(&i.to_le_bytes()) };
            e.fold(i * BLOCK, BLOCK as u32, &h);
        }
        assert_ne!(e.value(), d.value());
        assert_ne!(
            Digest::default().value(),
            Digest::restore(&[], &[])
                .map(|mut x| {
                    x.blocks = 1;
                    x.value()
                })
                .unwrap()
        );
        assert!(Digest::restore(&[], &[0u8; 45]).is_none());
    }
}
