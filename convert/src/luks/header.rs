//! The LUKS2 binary header (4096 bytes, big-endian) and the JSON area after it, in two copies:
//! the primary at 0 (magic `LUKS\xba\xbe`) and the secondary at the primary's `hdr_size`
//! (magic `SKUL\xba\xbe`). A copy counts only when its checksum — the named hash over its
//! `hdr_size` bytes with the checksum field zeroed — matches; of the valid copies, the one with
//! the highest `seqid` wins. With the primary broken, the secondary is looked for at each
//! offset a LUKS2 header size allows, as cryptsetup does.

use super::kdf::{ct_eq, Hash};
use super::LuksError;
use ferry_formats::read::ReadAt;

pub const MAGIC_PRIMARY: [u8; 6] = *b"LUKS\xba\xbe";
pub const MAGIC_SECONDARY: [u8; 6] = *b"SKUL\xba\xbe";
/// The binary part of a header copy; the JSON area follows it.
pub const BINARY: usize = 4096;
/// The sizes a header copy may have (16 KiB to 4 MiB): its JSON area is at most 4 MiB - 4 KiB.
pub const HDR_SIZES: [u64; 9] =
    [0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000];
const CSUM: std::ops::Range<usize> = 448..512;

/// One valid header copy.
#[derive(Debug)]
pub struct Header {
    pub hdr_size: u64,
    pub seqid: u64,
    pub uuid: String,
    /// The JSON text (up to its terminating NUL).
    pub json: String,
    /// Where this copy was read from (0 for the primary).
    pub offset: u64,
}

/// Why a copy at some offset did not count.
enum Copy {
    Absent,
    Invalid(String),
    Valid(Header),
}

/// The newest valid header copy on `dev` (of `size` bytes).
pub fn read(dev: &dyn ReadAt, size: u64) -> Result<Header, LuksError> {
    let primary = read_copy(dev, size, 0, &MAGIC_PRIMARY)?;
    let mut why = Vec::new();
    let secondary_at: Vec<u64> = match &primary {
        Copy::Valid(h) => vec![h.hdr_size],
        _ => HDR_SIZES.to_vec(),
    };
    let mut best = match primary {
        Copy::Valid(h) => Some(h),
        Copy::Invalid(e) => {
            why.push(format!("primary header: {e}"));
            None
        }
        Copy::Absent => None,
    };
    let mut seen_secondary = false;
    for off in secondary_at {
        match read_copy(dev, size, off, &MAGIC_SECONDARY)? {
            Copy::Valid(h) => {
                seen_secondary = true;
                if best.as_ref().is_none_or(|b| h.seqid > b.seqid) {
                    best = Some(h);
                }
                break;
            }
            Copy::Invalid(e) => {
                seen_secondary = true;
                why.push(format!("secondary header at {off}: {e}"));
            }
            Copy::Absent => {}
        }
    }
    match best {
        Some(h) => {
            for w in &why {
                log::warn!("LUKS2: {w}; using the copy at {} (seqid {})", h.offset, h.seqid);
            }
            Ok(h)
        }
        None if why.is_empty() && !seen_secondary => Err(LuksError::NotLuks),
        None => Err(LuksError::Malformed(why.join("; "))),
    }
}

fn read_copy(dev: &dyn ReadAt, size: u64, offset: u64, magic: &[u8; 6]) -> Result<Copy, LuksError> {
    if offset.checked_add(BINARY as u64).is_none_or(|end| end > size) {
        let mut m = [0u8; 6];
        let cut = offset.checked_add(6).is_some_and(|end| end <= size);
        if cut && dev.read_exact_at(&mut m, offset).is_ok() && m == *magic {
            return Ok(Copy::Invalid(format!("cut short by the device's end ({size} bytes)")));
        }
        return Ok(Copy::Absent);
    }
    let mut bin = vec![0u8; BINARY];
    dev.read_exact_at(&mut bin, offset)?;
    if bin[..6] != magic[..] {
        return Ok(Copy::Absent);
    }
    let be16 = |r: std::ops::Range<usize>| bin.get(r).and_then(|b| b.try_into().ok()).map(u16::from_be_bytes);
    let be64 = |r: std::ops::Range<usize>| bin.get(r).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
    let version = be16(6..8).unwrap_or(0);
    if version != 2 {
        return Ok(Copy::Invalid(format!("version {version}, expected 2")));
    }
    let hdr_size = be64(8..16).unwrap_or(0);
    let seqid = be64(16..24).unwrap_or(0);
    let hdr_offset = be64(256..264).unwrap_or(u64::MAX);
    if !HDR_SIZES.contains(&hdr_size) {
        return Ok(Copy::Invalid(format!("hdr_size {hdr_size} is not a LUKS2 header size")));
    }
    if hdr_offset != offset {
        return Ok(Copy::Invalid(format!("hdr_offset {hdr_offset} but found at {offset}")));
    }
    if offset.checked_add(hdr_size).is_none_or(|end| end > size) {
        return Ok(Copy::Invalid(format!("hdr_size {hdr_size} runs past the device's end ({size})")));
    }
    let csum_alg = cstr(&bin[72..104]);
    let hash = match Hash::parse(&csum_alg, "checksum") {
        Ok(h) => h,
        Err(e) => return Ok(Copy::Invalid(e.to_string())),
    };
    // hdr_size is one of HDR_SIZES (≤ 4 MiB), so this allocation is bounded.
    let mut area = vec![0u8; hdr_size as usize - BINARY];
    dev.read_exact_at(&mut area, offset + BINARY as u64)?;
    let mut zeroed = bin.clone();
    zeroed[CSUM].fill(0);
    let sum = hash.digest(&[&zeroed, &area]);
    let stored = &bin[CSUM];
    if !ct_eq(&stored[..hash.len()], &sum) || stored[hash.len()..].iter().any(|&b| b != 0) {
        return Ok(Copy::Invalid(format!("{csum_alg} checksum mismatch")));
    }
    let end = area.iter().position(|&b| b == 0).unwrap_or(area.len());
    area.truncate(end);
    let json = match String::from_utf8(area) {
        Ok(s) => s,
        Err(_) => return Ok(Copy::Invalid("JSON area is not UTF-8".into())),
    };
    Ok(Copy::Valid(Header { hdr_size, seqid, uuid: cstr(&bin[168..208]), json, offset }))
}

/// A NUL-padded ASCII field.
pub fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Rewrites the checksum of the header copy at `offset` in `img` (tests craft hostile JSON).
#[cfg(test)]
pub fn reseal(img: &mut [u8], offset: usize) {
    let hdr_size = u64::from_be_bytes(img[offset + 8..offset + 16].try_into().unwrap()) as usize;
    let copy = &mut img[offset..offset + hdr_size];
    copy[CSUM].fill(0);
    let sum = Hash::Sha256.digest(&[copy]);
    copy[CSUM][..32].copy_from_slice(&sum);
}
