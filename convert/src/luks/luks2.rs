//! Opening a LUKS2 volume: each `luks2` keyslot bound (through a digest) to the active data
//! segment is tried — high priority first, then normal, and the "ignore" ones only after all
//! others failed — by deriving the area key, decrypting the area, merging the stripes and
//! checking the candidate against the digest. The first key that verifies is the volume key.

use super::header::Header;
use super::kdf::ct_eq;
use super::meta::{Digest, Keyslot, Metadata};
use super::{af, LuksError, Volume};
use ferry_formats::read::ReadAt;
use zeroize::Zeroizing;

pub fn unlock(
    dev: &dyn ReadAt,
    hdr: &Header,
    meta: &Metadata,
    passphrase: &[u8],
) -> Result<Volume, LuksError> {
    let seg = &meta.segment;
    let mut order: Vec<&(String, u64, Result<Keyslot, LuksError>)> = meta.keyslots.iter().collect();
    // High (2) before normal (1) before ignore (0); by numeric id within a priority.
    order.sort_by_key(|(id, prio, _)| {
        (std::cmp::Reverse(*prio), id.parse::<u64>().unwrap_or(u64::MAX), id.clone())
    });
    let mut tried = 0usize;
    // A digest that did not parse may be the one that binds the keyslots: say so if nothing opens.
    let mut first_err = meta.digests.iter().find_map(|d| d.as_ref().err().map(clone_err));
    for (id, _, ks) in order {
        let ks = match ks {
            Ok(ks) => ks,
            Err(e) => {
                log::warn!("LUKS2 keyslot {id} skipped: {e}");
                first_err.get_or_insert_with(|| clone_err(e));
                continue;
            }
        };
        let Some(digest) = bound_digest(meta, id) else {
            log::debug!("LUKS2 keyslot {id} is not bound to segment {}", meta.segment_id);
            continue;
        };
        match try_keyslot(dev, ks, digest, passphrase) {
            Ok(Some(key)) => {
                return Ok(Volume {
                    version: 2,
                    uuid: hdr.uuid.clone(),
                    cipher: seg.cipher.clone(),
                    key,
                    offset_sectors: seg.offset,
                    size_sectors: seg.size,
                    sector_size: seg.sector_size,
                    iv_tweak: seg.iv_tweak,
                })
            }
            Ok(None) => tried += 1,
            Err(e) => {
                log::warn!("LUKS2 keyslot {id}: {e}");
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) if tried == 0 => Err(e),
        _ if tried == 0 => {
            Err(LuksError::Malformed(format!("no keyslot bound to segment {}", meta.segment_id)))
        }
        _ => Err(LuksError::WrongKey),
    }
}

/// The parsed digest naming both this keyslot and the active segment.
fn bound_digest<'a>(meta: &'a Metadata, keyslot: &str) -> Option<&'a Digest> {
    meta.digests
        .iter()
        .filter_map(|d| d.as_ref().ok())
        .find(|d| d.keyslots.iter().any(|k| k == keyslot) && d.segments.contains(&meta.segment_id))
}

/// The verified volume key, or `None` when this passphrase does not open this keyslot.
fn try_keyslot(
    dev: &dyn ReadAt,
    ks: &Keyslot,
    digest: &Digest,
    passphrase: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>, LuksError> {
    let len = af::split_len(ks.key_size, ks.stripes)
        .ok_or_else(|| LuksError::Malformed("keyslot split size".into()))?;
    let mut material = Zeroizing::new(vec![0u8; len]);
    dev.read_exact_at(&mut material, ks.area_offset)?;
    let area_key = ks.kdf.derive(passphrase, ks.area_key_size)?;
    ks.area_cipher.decrypt(&area_key, &mut material)?;
    let key = af::merge(&material, ks.key_size, ks.stripes, ks.af_hash)?;
    let check = digest.kdf.derive(&key, digest.digest.len())?;
    Ok(ct_eq(&check, &digest.digest).then_some(key))
}

/// Errors are not `Clone` (they may hold an io::Error); keep what a caller matches on.
pub fn clone_err(e: &LuksError) -> LuksError {
    match e {
        LuksError::NotLuks => LuksError::NotLuks,
        LuksError::WrongKey => LuksError::WrongKey,
        LuksError::Unsupported(s) => LuksError::Unsupported(s.clone()),
        LuksError::Malformed(s) => LuksError::Malformed(s.clone()),
        LuksError::Io(io) => LuksError::Malformed(format!("I/O: {io}")),
    }
}
