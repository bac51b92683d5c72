//! GPT partition type GUIDs ferry recognises or writes, in the mixed-endian byte order they have
//! on disk (the first three fields little-endian), parsed at compile time from their canonical
//! text so the tables cannot drift from the specification.

/// A GUID's on-disk bytes from its canonical text (`C12A7328-F81F-11D2-BA4B-00A0C93EC93B`).
/// Panics (at compile time, in a `const`) on malformed text.
pub const fn parse(text: &str) -> [u8; 16] {
    let s = text.as_bytes();
    assert!(s.len() == 36, "a GUID is 36 characters");
    let mut raw = [0u8; 16];
    let (mut i, mut n) = (0, 0);
    while i < 36 {
        if s[i] == b'-' {
            i += 1;
            continue;
        }
        raw[n] = (hex(s[i]) << 4) | hex(s[i + 1]);
        n += 1;
        i += 2;
    }
    assert!(n == 16, "a GUID has 32 hex digits");
    [
        raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6], raw[8], raw[9], raw[10], raw[11],
        raw[12], raw[13], raw[14], raw[15],
    ]
}

const fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("not a hex digit"),
    }
}

/// The canonical (upper-case) text of on-disk GUID bytes.
pub fn text(g: &[u8; 16]) -> String {
    let h = |r: &[u8]| r.iter().map(|b| format!("{b:02X}")).collect::<String>();
    let rev = |r: &[u8]| r.iter().rev().copied().collect::<Vec<u8>>();
    format!(
        "{}-{}-{}-{}-{}",
        h(&rev(&g[0..4])),
        h(&rev(&g[4..6])),
        h(&rev(&g[6..8])),
        h(&g[8..10]),
        h(&g[10..])
    )
}

pub const ESP: [u8; 16] = parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
pub const BIOS_BOOT: [u8; 16] = parse("21686148-6449-6E6F-744E-656564454649");
pub const LINUX_FS: [u8; 16] = parse("0FC63DAF-8483-4772-8E79-3D69D8477DE4");
pub const LINUX_SWAP: [u8; 16] = parse("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F");
pub const LINUX_LVM: [u8; 16] = parse("E6D6D379-F507-44C2-A23C-238F2A3DF928");
pub const LINUX_RAID: [u8; 16] = parse("A19D880F-05FC-4D3B-A006-743F0F84911E");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_disk_order_and_text() {
        assert_eq!(
            ESP,
            [0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b]
        );
        assert_eq!(&BIOS_BOOT, b"Hah!IdontNeedEFI");
        assert_eq!(text(&ESP), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(parse(&text(&LINUX_LVM)), LINUX_LVM);
    }
}
