//! Block hashing and the per-disk digest. Extents are cut into blocks at absolute
//! [`BLOCK`](crate::proto::BLOCK) boundaries; each block is hashed with BLAKE3, and the disk digest
//! is BLAKE3 over the records `(offset u64 LE, len u32 LE, block hash)` in offset order. Both ends
//! compute it independently, so it also covers blocks a resumed or delta pass did not resend.

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

/// Running disk digest.
#[derive(Default)]
pub struct Digest {
    h: blake3::Hasher,
    pub blocks: u64,
}

impl Digest {
    pub fn fold(&mut self, offset: u64, len: u32, h: &Hash) {
        self.h.update(&record(offset, len, h));
        self.blocks += 1;
    }

    pub fn fold_record(&mut self, r: &[u8]) {
        self.h.update(&r[..RECORD]);
        self.blocks += 1;
    }

    pub fn value(&self) -> Hash {
        *self.h.finalize().as_bytes()
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
}
