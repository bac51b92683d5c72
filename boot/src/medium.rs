//! How the appliance recognises its own boot medium, which `ferry-image` writes: the ISO9660
//! volume id and the GPT partition name, and the bytes of a disk's head needed to tell.

use std::path::Path;

/// The ISO9660 volume id of `ferry-image iso`.
pub const APPLIANCE_VOLUME_ID: &str = "FERRY";
/// The GPT partition name of the ESP in `ferry-image disk` images.
pub const APPLIANCE_PARTITION_NAME: &str = "ferry-appliance";
/// Bytes [`is_appliance_medium`] needs from the start of a disk.
pub const MEDIUM_HEAD: usize = 0x8000 + 2048;

/// Whether the first [`MEDIUM_HEAD`] bytes of a disk are a ferry boot medium: an ISO9660 volume
/// with the appliance's volume id, or a GPT (512- or 4096-byte sectors) with a partition named
/// [`APPLIANCE_PARTITION_NAME`] among its first entries.
pub fn is_appliance_medium(head: &[u8]) -> bool {
    if head.get(0x8001..0x8006) == Some(b"CD001") {
        if let Some(id) = head.get(0x8028..0x8048) {
            if String::from_utf8_lossy(id).trim_end() == APPLIANCE_VOLUME_ID {
                return true;
            }
        }
    }
    let want: Vec<u8> = APPLIANCE_PARTITION_NAME.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    for sector in [512usize, 4096] {
        let Some(hdr) = head.get(sector..sector + 92) else { continue };
        if &hdr[..8] != b"EFI PART" {
            continue;
        }
        let u64_at = |o: usize| u64::from_le_bytes(hdr[o..o + 8].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(hdr[o..o + 4].try_into().unwrap());
        let (start, count, size) =
            (u64_at(72).saturating_mul(sector as u64), u32_at(80) as u64, u32_at(84) as u64);
        if size < 128 {
            continue;
        }
        for i in 0..count {
            let Some(at) = i.checked_mul(size).and_then(|o| o.checked_add(start)) else { break };
            let Some(e) = usize::try_from(at).ok().and_then(|at| head.get(at..at.checked_add(128)?)) else {
                break;
            };
            if e[56..56 + want.len()] == want[..] && e.get(56 + want.len()..58 + want.len()) == Some(&[0, 0])
            {
                return true;
            }
        }
    }
    false
}

/// The first `n` bytes of a file or device (fewer if it is shorter).
pub fn read_head(path: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(n);
    std::fs::File::open(path)?.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}
