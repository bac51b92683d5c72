//! Damaged and foreign devices: a broken header copy falls back to the other one, the newest
//! valid copy wins, truncation and random byte flips give errors (never a panic, never a wrong
//! key), and what is not LUKS is `NotLuks`.

use super::{secondary, unlock_bytes, Fixture, PASS};
use crate::luks::header::reseal;
use crate::luks::LuksError;

const PBKDF2: &[&str] = &["--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];

#[test]
fn luks2_broken_primary_uses_secondary_and_both_broken_is_malformed() {
    let f = Fixture::format(PBKDF2);
    let key = f.dumped_key(PASS);
    let mut img = f.bytes();
    let hdr2 = secondary(&img);
    assert_eq!(hdr2, 16384);
    img[4096 + 20] ^= 0x01; // in the primary's JSON
    assert_eq!(*unlock_bytes(&img, PASS).unwrap().key, key);
    img[hdr2 + 4096 + 20] ^= 0x01; // and the secondary's
    match unlock_bytes(&img, PASS) {
        Err(LuksError::Malformed(m)) => assert!(m.contains("checksum"), "{m}"),
        other => panic!("both copies broken gave {other:?}"),
    }

    // A wiped primary (no magic at all): the secondary is found by scanning.
    let mut img = f.bytes();
    img[..4096].fill(0);
    assert_eq!(*unlock_bytes(&img, PASS).unwrap().key, key);
    // A flipped bit in the primary's binary header (its label).
    let mut img = f.bytes();
    img[30] ^= 0x80;
    assert_eq!(*unlock_bytes(&img, PASS).unwrap().key, key);
}

/// Of two valid copies the one with the higher seqid is used.
#[test]
fn luks2_highest_seqid_wins() {
    let f = Fixture::format(PBKDF2);
    let img = f.bytes();
    let hdr2 = secondary(&img);
    for (bump, expect) in [(hdr2, 7), (0, 0)] {
        let mut img = img.clone();
        // Change the secondary's iv_tweak; make `bump`'s copy the newer one.
        let json_at = hdr2 + 4096;
        let end = json_at + img[json_at..].iter().position(|&b| b == 0).unwrap();
        let json = String::from_utf8(img[json_at..end].to_vec()).unwrap();
        let edited = json.replacen("\"iv_tweak\":\"0\"", "\"iv_tweak\":\"7\"", 1);
        assert_ne!(json, edited, "iv_tweak spelled as expected");
        img[json_at..json_at + edited.len()].copy_from_slice(edited.as_bytes());
        let seq = u64::from_be_bytes(img[bump + 16..bump + 24].try_into().unwrap()) + 1;
        img[bump + 16..bump + 24].copy_from_slice(&seq.to_be_bytes());
        reseal(&mut img, 0);
        reseal(&mut img, hdr2);
        assert_eq!(unlock_bytes(&img, PASS).unwrap().iv_tweak, expect, "newer copy at {bump}");
    }
}

#[test]
fn luks_truncated_devices_are_errors() {
    let f = Fixture::format(PBKDF2);
    let img = f.bytes();
    let data = 16 << 20;
    for cut in
        [0, 3, 7, 8, 100, 592, 4095, 4096, 8192, 16383, 16384, 20000, 32768, 100_000, 290_816, data - 1]
    {
        match unlock_bytes(&img[..cut], PASS) {
            Err(LuksError::NotLuks) if cut < 6 => {}
            Err(LuksError::Malformed(_)) if cut >= 6 => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    assert!(unlock_bytes(&img[..data], PASS).is_ok(), "cut at the data offset still has every header byte");

    let f = Fixture::format(&["--type", "luks1", "--pbkdf-force-iterations", "1000"]);
    let img = f.bytes();
    for cut in [8, 100, 591, 592, 1000, 4096, 100_000, (4096 * 512) - 1] {
        assert!(unlock_bytes(&img[..cut], PASS).is_err(), "LUKS1 cut at {cut}");
    }
}

/// Deterministic pseudo-random positions: xorshift.
fn positions(seed: u64, n: usize, range: std::ops::Range<usize>) -> Vec<usize> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            range.start + (x as usize) % (range.end - range.start)
        })
        .collect()
}

/// Any byte of one header copy flipped: the other copy opens the volume. A byte of the keyslot
/// material flipped: WrongKey (the digest catches it). Both copies hit: an error, no panic.
#[test]
fn luks_byte_flips_never_panic_nor_give_a_wrong_key() {
    let f = Fixture::format(PBKDF2);
    let key = f.dumped_key(PASS);
    let mut img = f.bytes();
    let hdr2 = secondary(&img);
    // Flipped in place and back: cloning 32 MiB per case would dominate the test's time.
    for (i, at) in positions(1, 64, 0..2 * hdr2).into_iter().enumerate() {
        img[at] ^= 1 << (i % 8);
        let v = unlock_bytes(&img, PASS).unwrap_or_else(|e| panic!("flip at {at}: {e}"));
        assert_eq!(*v.key, key);
        let other = if at < hdr2 { at + hdr2 } else { at - hdr2 };
        img[other] ^= 0x40;
        assert!(unlock_bytes(&img, PASS).is_err(), "flips at {at} and {other}");
        img[other] ^= 0x40;
        img[at] ^= 1 << (i % 8);
    }
    for at in positions(2, 40, 32768..32768 + 256_000) {
        img[at] ^= 0x10;
        assert!(matches!(unlock_bytes(&img, PASS), Err(LuksError::WrongKey)), "flip at {at}");
        img[at] ^= 0x10;
    }
    assert_eq!(*unlock_bytes(&img, PASS).unwrap().key, key);

    let f = Fixture::format(&["--type", "luks1", "--pbkdf-force-iterations", "1000"]);
    let key = f.dumped_key(PASS);
    let mut img = f.bytes();
    img.truncate(4096 * 512); // the payload is not read
    for (i, at) in positions(3, 150, 0..592).into_iter().enumerate() {
        img[at] ^= 1 << (i % 8);
        if let Ok(v) = unlock_bytes(&img, PASS) {
            // Only bytes no key depends on (UUID, unused fields) may still open it.
            assert_eq!(*v.key, key, "LUKS1 flip at {at}");
        }
        img[at] ^= 1 << (i % 8);
    }
}

#[test]
fn luks_foreign_devices_are_not_luks() {
    let mut noise = vec![0u8; 1 << 20];
    for (i, b) in noise.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0];
    }
    for (what, img) in [
        ("empty", vec![]),
        ("zeros", vec![0u8; 1 << 20]),
        ("noise", noise.clone()),
        ("short", b"LUK".to_vec()),
    ] {
        assert!(matches!(unlock_bytes(&img, PASS), Err(LuksError::NotLuks)), "{what}");
    }
    // LUKS magic in front of noise is a damaged LUKS device, not a foreign one.
    let mut fake = noise;
    fake[..8].copy_from_slice(b"LUKS\xba\xbe\x00\x02");
    assert!(matches!(unlock_bytes(&fake, PASS), Err(LuksError::Malformed(_))));
    fake[6..8].copy_from_slice(&[0, 1]);
    assert!(matches!(unlock_bytes(&fake, PASS), Err(LuksError::Unsupported(_) | LuksError::Malformed(_))));
}
