//! The LUKS anti-forensic merge (cryptsetup's `AF_merge`): the key is split into `stripes`
//! blocks of the key's size; all but the last are XORed together with a hash diffusion after
//! each, and the last XORed onto that gives the key. The diffusion hashes each digest-sized
//! piece of the block with its big-endian 32-bit index in front, the last piece truncated.

use super::kdf::Hash;
use super::LuksError;
use zeroize::Zeroizing;

/// The most stripes accepted (LUKS writes 4000, the only value cryptsetup accepts).
pub const MAX_STRIPES: u32 = 4000;

/// Bytes of split material for a key of `key_len` in `stripes`, rounded up to whole 512-byte
/// sectors (what the keyslot area holds encrypted); `None` when out of bounds.
pub fn split_len(key_len: usize, stripes: u32) -> Option<usize> {
    if key_len == 0 || stripes == 0 || stripes > MAX_STRIPES {
        return None;
    }
    key_len.checked_mul(stripes as usize)?.checked_next_multiple_of(512)
}

/// Recovers the `key_len`-byte key from `material` (at least `key_len * stripes` bytes).
pub fn merge(
    material: &[u8],
    key_len: usize,
    stripes: u32,
    hash: Hash,
) -> Result<Zeroizing<Vec<u8>>, LuksError> {
    let need = split_len(key_len, stripes)
        .and_then(|_| key_len.checked_mul(stripes as usize))
        .filter(|&n| n <= material.len())
        .ok_or_else(|| LuksError::Malformed(format!("AF: {stripes} stripes of {key_len} bytes")))?;
    let mut buf = Zeroizing::new(vec![0u8; key_len]);
    let mut blocks = material[..need].chunks_exact(key_len);
    let last = blocks.next_back().ok_or_else(|| LuksError::Malformed("AF: no stripes".into()))?;
    for block in blocks {
        xor_into(&mut buf, block);
        diffuse(&mut buf, hash);
    }
    xor_into(&mut buf, last);
    Ok(buf)
}

fn xor_into(dst: &mut [u8], src: &[u8]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d ^= s);
}

fn diffuse(buf: &mut [u8], hash: Hash) {
    for (i, piece) in buf.chunks_mut(hash.len()).enumerate() {
        let iv = (i as u32).to_be_bytes();
        let d = hash.digest(&[&iv, piece]);
        let n = piece.len();
        piece.copy_from_slice(&d[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits as cryptsetup's `AF_split` does (random stripes, the last one computed), so
    /// merge must give the key back, for key sizes that do and do not divide the digest.
    fn split(key: &[u8], stripes: u32, hash: Hash, fill: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; key.len()];
        for i in 0..stripes - 1 {
            let block: Vec<u8> =
                (0..key.len()).map(|j| fill ^ (i as u8).wrapping_mul(31) ^ j as u8).collect();
            xor_into(&mut buf, &block);
            diffuse(&mut buf, hash);
            out.extend_from_slice(&block);
        }
        out.extend(buf.iter().zip(key).map(|(b, k)| b ^ k));
        out
    }

    #[test]
    fn luks_af_merge_inverts_split() {
        for hash in [Hash::Sha1, Hash::Sha256, Hash::Sha512] {
            for len in [16, 32, 33, 64] {
                let key: Vec<u8> = (0..len as u8).collect();
                let m = split(&key, 4000, hash, 0x5a);
                assert_eq!(*merge(&m, len, 4000, hash).unwrap(), key, "{hash:?} {len}");
                let mut bad = m.clone();
                bad[7] ^= 1;
                assert_ne!(*merge(&bad, len, 4000, hash).unwrap(), key);
            }
        }
    }

    #[test]
    fn luks_af_bounds() {
        assert!(merge(&[0u8; 100], 32, 4000, Hash::Sha256).is_err());
        assert!(merge(&[0u8; 100], 0, 1, Hash::Sha256).is_err());
        assert!(merge(&[0u8; 100], 1, 0, Hash::Sha256).is_err());
        assert!(merge(&[0u8; 100], 1, 4001, Hash::Sha256).is_err());
        assert_eq!(split_len(64, 4000), Some(256000));
        assert_eq!(split_len(32, 4000), Some(128000));
        assert_eq!(split_len(usize::MAX, 4000), None);
    }
}
