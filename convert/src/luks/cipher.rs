//! Decrypting keyslot material as dm-crypt would: 512-byte sectors numbered from 0 at the
//! start of the area, with AES in XTS (`plain64`/`plain` IVs: the sector number little-endian)
//! or CBC (`plain64`/`plain` IVs, or `essiv:<hash>`: the sector number encrypted with AES under
//! the hash of the key). Other ciphers and IV modes are refused by name.

use super::kdf::Hash;
use super::LuksError;
use aes::cipher::consts::U16;
use aes::cipher::{
    BlockCipher, BlockDecrypt, BlockDecryptMut, BlockEncrypt, BlockSizeUser, KeyInit, KeyIvInit,
};
use aes::{Aes128, Aes192, Aes256};
use xts_mode::Xts128;

const SECTOR: usize = 512;

/// A parsed dm-crypt cipher specification for keyslot decryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spec {
    Xts { plain32: bool },
    Cbc { iv: CbcIv },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CbcIv {
    Plain { plain32: bool },
    Essiv(Hash),
}

impl Spec {
    /// `aes-xts-plain64`, `aes-cbc-essiv:sha256`, …
    pub fn parse(spec: &str) -> Result<Spec, LuksError> {
        let unsupported = || LuksError::Unsupported(format!("keyslot cipher {spec:?}"));
        let mut parts = spec.splitn(3, '-');
        let (Some("aes"), Some(mode), Some(iv)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(unsupported());
        };
        match (mode, iv) {
            ("xts", "plain64") => Ok(Spec::Xts { plain32: false }),
            ("xts", "plain") => Ok(Spec::Xts { plain32: true }),
            ("cbc", "plain64") => Ok(Spec::Cbc { iv: CbcIv::Plain { plain32: false } }),
            ("cbc", "plain") => Ok(Spec::Cbc { iv: CbcIv::Plain { plain32: true } }),
            ("cbc", iv) => match iv.strip_prefix("essiv:") {
                Some(h) => Ok(Spec::Cbc { iv: CbcIv::Essiv(Hash::parse(h, "essiv")?) }),
                None => Err(unsupported()),
            },
            _ => Err(unsupported()),
        }
    }

    /// Decrypts `buf` (whole 512-byte sectors) in place under `key`.
    pub fn decrypt(self, key: &[u8], buf: &mut [u8]) -> Result<(), LuksError> {
        if !buf.len().is_multiple_of(SECTOR) {
            return Err(LuksError::Malformed(format!("keyslot area of {} bytes", buf.len())));
        }
        let bad_key = || LuksError::Unsupported(format!("{self:?} with a {}-byte key", key.len()));
        match self {
            Spec::Xts { plain32 } => {
                let tweak = move |sector: u128| {
                    let n = if plain32 { sector as u32 as u128 } else { sector as u64 as u128 };
                    n.to_le_bytes()
                };
                let (k1, k2) = key.split_at(key.len() / 2);
                match key.len() {
                    32 => xts::<Aes128>(k1, k2, buf, tweak),
                    48 => xts::<Aes192>(k1, k2, buf, tweak),
                    64 => xts::<Aes256>(k1, k2, buf, tweak),
                    _ => return Err(bad_key()),
                }
                Ok(())
            }
            Spec::Cbc { iv } => match key.len() {
                16 => cbc::<Aes128>(key, iv, buf),
                24 => cbc::<Aes192>(key, iv, buf),
                32 => cbc::<Aes256>(key, iv, buf),
                _ => Err(bad_key()),
            },
        }
    }
}

fn xts<C>(k1: &[u8], k2: &[u8], buf: &mut [u8], tweak: impl Fn(u128) -> [u8; 16])
where
    C: BlockCipher + KeyInit + BlockEncrypt + BlockDecrypt + BlockSizeUser<BlockSize = U16>,
{
    // Key lengths were matched by the caller, so both halves fit C exactly.
    if let (Ok(c1), Ok(c2)) = (C::new_from_slice(k1), C::new_from_slice(k2)) {
        Xts128::new(c1, c2).decrypt_area(buf, SECTOR, 0, tweak);
    }
}

fn cbc<C>(key: &[u8], iv: CbcIv, buf: &mut [u8]) -> Result<(), LuksError>
where
    C: BlockCipher + KeyInit + BlockDecrypt + BlockSizeUser<BlockSize = U16>,
{
    let essiv = match iv {
        CbcIv::Essiv(h) => {
            let salt = h.digest(&[key]);
            // The ESSIV cipher is AES keyed by the whole digest: sha256 → AES-256.
            match salt.len() {
                32 => Some(Aes256::new_from_slice(&salt).map_err(|_| essiv_err(h))?),
                _ => return Err(essiv_err(h)),
            }
        }
        CbcIv::Plain { .. } => None,
    };
    for (n, sector) in buf.chunks_exact_mut(SECTOR).enumerate() {
        let mut ivb = [0u8; 16];
        match iv {
            CbcIv::Plain { plain32: true } => ivb[..4].copy_from_slice(&(n as u32).to_le_bytes()),
            _ => ivb[..8].copy_from_slice(&(n as u64).to_le_bytes()),
        }
        if let Some(e) = &essiv {
            e.encrypt_block((&mut ivb).into());
        }
        let mut d = ::cbc::Decryptor::<C>::new_from_slices(key, &ivb)
            .map_err(|_| LuksError::Malformed(format!("cbc key of {} bytes", key.len())))?;
        for block in sector.chunks_exact_mut(16) {
            d.decrypt_block_mut(block.into());
        }
    }
    Ok(())
}

fn essiv_err(h: Hash) -> LuksError {
    LuksError::Unsupported(format!("essiv:{h:?} (only essiv:sha256)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luks_cipher_spec_parse() {
        assert_eq!(Spec::parse("aes-xts-plain64").unwrap(), Spec::Xts { plain32: false });
        assert_eq!(
            Spec::parse("aes-cbc-essiv:sha256").unwrap(),
            Spec::Cbc { iv: CbcIv::Essiv(Hash::Sha256) }
        );
        for bad in ["serpent-xts-plain64", "aes-ecb", "aes", "aes-xts-benbi", "aes-cbc-essiv:md5", ""] {
            assert!(matches!(Spec::parse(bad), Err(LuksError::Unsupported(_))), "{bad}");
        }
        let mut buf = [0u8; 512];
        assert!(Spec::parse("aes-xts-plain64").unwrap().decrypt(&[0; 40], &mut buf).is_err());
        assert!(Spec::parse("aes-xts-plain64").unwrap().decrypt(&[0; 64], &mut buf[..100]).is_err());
    }
}
