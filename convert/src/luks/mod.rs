//! Unlocking a LUKS2 (or LUKS1) volume in pure Rust: from a device and a passphrase to the
//! verified volume key and the data segment's geometry, which is all dm-crypt needs
//! ([`dm_crypt_table`]). Nothing here touches the kernel: activation is the caller's.
//!
//! Everything read from the device is hostile: sizes are bounded before anything is allocated,
//! both LUKS2 header copies are checksummed ([`header`]), the metadata is parsed into bounded
//! typed values ([`meta`]), every keyslot is tried ([`luks2`], [`luks1`]) through the KDF
//! ([`kdf`]), the keyslot cipher ([`cipher`]) and the anti-forensic merge ([`af`]), and only a
//! key that matches the header's digest is returned. Key material lives in [`Zeroizing`].

mod af;
mod cipher;
mod header;
mod kdf;
mod luks1;
mod luks2;
mod meta;
#[cfg(test)]
mod tests;

use ferry_formats::read::ReadAt;
use std::fmt::Write as _;
use zeroize::Zeroizing;

/// What dm-crypt needs to map the plaintext of an unlocked volume.
pub struct Volume {
    /// 1 or 2 (dm-crypt's uuid says `CRYPT-LUKS1-…` or `CRYPT-LUKS2-…`).
    pub version: u8,
    /// The header's UUID (what `/dev/disk/by-uuid` and crypttab name the LUKS device by).
    pub uuid: String,
    /// The data segment's cipher in dm-crypt's spelling, e.g. `aes-xts-plain64`.
    pub cipher: String,
    /// The verified volume key.
    pub key: Zeroizing<Vec<u8>>,
    /// Where the data segment starts, in 512-byte sectors.
    pub offset_sectors: u64,
    /// The data segment's length in 512-byte sectors; `None` runs to the end of the device.
    pub size_sectors: Option<u64>,
    /// The encryption sector size in bytes (512 to 4096).
    pub sector_size: u32,
    /// Added to the sector number for the IV (dm-crypt's `iv_offset`), in 512-byte sectors.
    pub iv_tweak: u64,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("version", &self.version)
            .field("uuid", &self.uuid)
            .field("cipher", &self.cipher)
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("offset_sectors", &self.offset_sectors)
            .field("size_sectors", &self.size_sectors)
            .field("sector_size", &self.sector_size)
            .field("iv_tweak", &self.iv_tweak)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LuksError {
    /// Neither a LUKS1 nor a LUKS2 header (no magic at 0 nor at a secondary header offset).
    #[error("not a LUKS device")]
    NotLuks,
    /// Every keyslot that could be tried was tried; none opened with this passphrase.
    #[error("no keyslot opened with this passphrase")]
    WrongKey,
    /// A cipher, KDF, hash, AF or header feature this library does not implement.
    #[error("unsupported LUKS feature: {0}")]
    Unsupported(String),
    /// A header field out of range or inconsistent: which field, and where.
    #[error("malformed LUKS header: {0}")]
    Malformed(String),
    #[error("reading the LUKS device: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens the volume on `dev` with `passphrase`: LUKS2 by its newest valid header copy, else
/// LUKS1. Only a volume key verified against the header's digest is returned.
pub fn unlock(dev: &dyn ReadAt, passphrase: &[u8]) -> Result<Volume, LuksError> {
    let size = dev.size()?;
    let mut magic = [0u8; 8];
    if size >= magic.len() as u64 {
        dev.read_exact_at(&mut magic, 0)?;
    }
    if magic[..6] == header::MAGIC_PRIMARY && magic[6..8] == [0, 1] {
        return luks1::unlock(dev, size, passphrase);
    }
    let hdr = header::read(dev, size)?;
    let meta = meta::Metadata::parse(&hdr.json, size)?;
    luks2::unlock(dev, &hdr, &meta, passphrase)
}

/// The dm-crypt table line for `v` on the device `dev_majmin` ("maj:min") of `dev_sectors`
/// 512-byte sectors: its length in sectors and the target parameters
/// `<cipher> <key hex> <iv_offset> <maj:min> <offset> [1 sector_size:<n>]` (the dm-crypt
/// documentation's order). The length is 0 when the segment would not fit the device.
pub fn dm_crypt_table(v: &Volume, dev_majmin: &str, dev_sectors: u64) -> (u64, String) {
    let len = match v.size_sectors {
        Some(n) if v.offset_sectors.checked_add(n).is_some_and(|end| end <= dev_sectors) => n,
        Some(_) => 0,
        None => dev_sectors.saturating_sub(v.offset_sectors),
    };
    let mut params = Zeroizing::new(String::with_capacity(v.cipher.len() + 2 * v.key.len() + 64));
    params.push_str(&v.cipher);
    params.push(' ');
    for b in v.key.iter() {
        let _ = write!(params, "{b:02x}");
    }
    let _ = write!(params, " {} {} {}", v.iv_tweak, dev_majmin, v.offset_sectors);
    if v.sector_size != 512 {
        let _ = write!(params, " 1 sector_size:{}", v.sector_size);
    }
    (len, std::mem::take(&mut *params))
}
