//! LUKS1: a 592-byte big-endian header (cipher name and mode, hash, payload offset, key size,
//! the master key's PBKDF2 digest, UUID) and eight keyslots, each with PBKDF2 parameters and the
//! sector of its AF-split material, encrypted with the volume's own cipher. No checksum and no
//! second copy; the data always uses 512-byte sectors with no IV offset.

use super::header::cstr;
use super::kdf::{ct_eq, Hash, Kdf};
use super::{af, cipher::Spec, meta::MAX_KEY, LuksError, Volume};
use ferry_formats::read::ReadAt;
use zeroize::Zeroizing;

const HEADER: usize = 592;
const SLOTS: usize = 8;
const SLOT_ACTIVE: u32 = 0x00AC_71F3;
const SLOT_DISABLED: u32 = 0x0000_DEAD;

pub fn unlock(dev: &dyn ReadAt, size: u64, passphrase: &[u8]) -> Result<Volume, LuksError> {
    if size < HEADER as u64 {
        return Err(LuksError::Malformed(format!("LUKS1 header cut short: device of {size} bytes")));
    }
    let mut h = [0u8; HEADER];
    dev.read_exact_at(&mut h, 0)?;
    let be32 = |off: usize| h.get(off..off + 4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_be_bytes);
    let cipher = format!("{}-{}", cstr(&h[8..40]), cstr(&h[40..72]));
    let hash_name = cstr(&h[72..104]);
    let payload = u64::from(be32(104));
    let key_bytes = be32(108) as usize;
    if !(1..=MAX_KEY).contains(&key_bytes) {
        return Err(LuksError::Unsupported(format!("LUKS1 key_bytes {key_bytes} (at most {MAX_KEY})")));
    }
    if payload.saturating_mul(512) > size {
        return Err(LuksError::Malformed(format!(
            "LUKS1 payload offset {payload} sectors past the device's end"
        )));
    }
    let hash = Hash::parse(&hash_name, "LUKS1 hash_spec")?;
    let spec = Spec::parse(&cipher)?;
    let mk_digest = &h[112..132];
    let mk_kdf = Kdf::pbkdf2(hash, be32(164).into(), h[132..164].to_vec(), "LUKS1 mk_digest")?;
    let mut tried = 0;
    let mut first_err = None;
    for slot in 0..SLOTS {
        let base = 208 + 48 * slot;
        let at = format!("LUKS1 keyslot {slot}");
        match be32(base) {
            SLOT_ACTIVE => {}
            SLOT_DISABLED => continue,
            other => {
                first_err.get_or_insert(LuksError::Malformed(format!("{at}: state {other:#x}")));
                continue;
            }
        }
        let r =
            Kdf::pbkdf2(hash, be32(base + 4).into(), h[base + 8..base + 40].to_vec(), &at).and_then(|kdf| {
                let material_at = u64::from(be32(base + 40)) * 512;
                try_slot(
                    dev,
                    size,
                    &spec,
                    hash,
                    &kdf,
                    (material_at, be32(base + 44)),
                    key_bytes,
                    passphrase,
                    &at,
                )
            });
        match r {
            Ok(key) => {
                let check = mk_kdf.derive(&key, mk_digest.len())?;
                if ct_eq(&check, mk_digest) {
                    let uuid = cstr(&h[168..208]);
                    return Ok(Volume {
                        version: 1,
                        uuid,
                        cipher,
                        key,
                        offset_sectors: payload,
                        size_sectors: None,
                        sector_size: 512,
                        iv_tweak: 0,
                    });
                }
                tried += 1;
            }
            Err(e) => {
                log::warn!("{e}");
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) if tried == 0 => Err(e),
        None if tried == 0 => Err(LuksError::Malformed("LUKS1: no active keyslot".into())),
        _ => Err(LuksError::WrongKey),
    }
}

/// The candidate master key from one keyslot (unverified).
#[allow(clippy::too_many_arguments)]
fn try_slot(
    dev: &dyn ReadAt,
    size: u64,
    spec: &Spec,
    hash: Hash,
    kdf: &Kdf,
    (material_at, stripes): (u64, u32),
    key_bytes: usize,
    passphrase: &[u8],
    at: &str,
) -> Result<Zeroizing<Vec<u8>>, LuksError> {
    let len = af::split_len(key_bytes, stripes)
        .ok_or_else(|| LuksError::Malformed(format!("{at}: {stripes} stripes")))?;
    if material_at.checked_add(len as u64).is_none_or(|end| end > size) {
        return Err(LuksError::Malformed(format!(
            "{at}: key material at {material_at} past the device's end"
        )));
    }
    let mut material = Zeroizing::new(vec![0u8; len]);
    dev.read_exact_at(&mut material, material_at)?;
    let slot_key = kdf.derive(passphrase, key_bytes)?;
    spec.decrypt(&slot_key, &mut material)?;
    af::merge(&material, key_bytes, stripes, hash)
}
