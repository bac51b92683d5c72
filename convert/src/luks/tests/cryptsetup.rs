//! Volumes formatted by cryptsetup with each KDF, sector size, keyslot layout and LUKS version
//! this library supports: the key, offset, sector size and UUID must match cryptsetup's, and a
//! wrong passphrase must be `WrongKey`.

use super::{agrees, cryptsetup, Fixture, PASS};
use crate::luks::LuksError;

const PBKDF2: &[&str] = &["--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];

fn argon2(kind: &'static str) -> Vec<&'static str> {
    vec![
        "--type",
        "luks2",
        "--pbkdf",
        kind,
        "--pbkdf-memory",
        "32768",
        "--pbkdf-force-iterations",
        "4",
        "--pbkdf-parallel",
        "1",
    ]
}

#[test]
fn luks2_pbkdf2_unlocks_like_cryptsetup() {
    let f = Fixture::format(PBKDF2);
    let v = agrees(&f, PASS);
    assert_eq!(v.cipher, "aes-xts-plain64");
    assert_eq!(v.key.len(), 64);
    assert_eq!(v.size_sectors, None);
    assert_eq!(v.iv_tweak, 0);
}

#[test]
fn luks2_argon2id_unlocks_like_cryptsetup() {
    agrees(&Fixture::format(&argon2("argon2id")), PASS);
}

#[test]
fn luks2_argon2i_unlocks_like_cryptsetup() {
    agrees(&Fixture::format(&argon2("argon2i")), PASS);
}

#[test]
fn luks2_sector_sizes_512_and_4096() {
    for size in ["512", "4096"] {
        let mut args = PBKDF2.to_vec();
        args.extend(["--sector-size", size]);
        let v = agrees(&Fixture::format(&args), PASS);
        assert_eq!(v.sector_size.to_string(), size);
    }
}

#[test]
fn luks2_aes128_and_sha512_af() {
    let mut args = PBKDF2.to_vec();
    args.extend(["--key-size", "256", "--hash", "sha512"]);
    let f = Fixture::format(&args);
    assert_eq!(agrees(&f, PASS).key.len(), 32);
}

/// A second passphrase in keyslot 1: opening it means keyslot 0 was tried and failed first;
/// with keyslot 0 killed, only the second passphrase opens.
#[test]
fn luks2_second_keyslot_then_first_killed() {
    let f = Fixture::format(PBKDF2);
    let new = b"second passphrase";
    let (old_k, new_k) = (f.key_file(PASS), f.key_file(new));
    cryptsetup(&[
        "luksAddKey",
        "--batch-mode",
        "--pbkdf",
        "argon2id",
        "--pbkdf-memory",
        "32768",
        "--pbkdf-force-iterations",
        "4",
        "--pbkdf-parallel",
        "1",
        "--key-file",
        old_k.to_str().unwrap(),
        f.path(),
        new_k.to_str().unwrap(),
    ]);
    let key = f.dumped_key(PASS);
    assert_eq!(*f.unlock(new).unwrap().key, key);
    assert_eq!(*f.unlock(PASS).unwrap().key, key);
    cryptsetup(&["luksKillSlot", "--batch-mode", f.path(), "0"]);
    assert_eq!(*agrees(&f, new).key, key);
    assert!(matches!(f.unlock(PASS), Err(LuksError::WrongKey)));
}

/// A keyslot with priority "ignore" (which cryptsetup itself only opens when named) is still
/// tried when nothing else opens.
#[test]
fn luks2_ignore_priority_tried_last() {
    let f = Fixture::format(PBKDF2);
    let key = f.dumped_key(PASS);
    cryptsetup(&["config", "--priority", "ignore", "--key-slot", "0", f.path()]);
    assert!(cryptsetup(&["luksDump", f.path()]).contains("Priority:   ignored"));
    assert_eq!(*f.unlock(PASS).unwrap().key, key);
    assert!(matches!(f.unlock(b"wrong"), Err(LuksError::WrongKey)));
}

#[test]
fn luks1_xts_plain64_unlocks_like_cryptsetup() {
    let f = Fixture::format(&["--type", "luks1", "--pbkdf-force-iterations", "1000"]);
    let v = agrees(&f, PASS);
    assert_eq!(v.cipher, "aes-xts-plain64");
    assert_eq!(v.sector_size, 512);
}

#[test]
fn luks1_cbc_essiv_sha256_unlocks_like_cryptsetup() {
    let f = Fixture::format(&[
        "--type",
        "luks1",
        "--cipher",
        "aes-cbc-essiv:sha256",
        "--key-size",
        "256",
        "--hash",
        "sha1",
        "--pbkdf-force-iterations",
        "1000",
    ]);
    let v = agrees(&f, PASS);
    assert_eq!(v.cipher, "aes-cbc-essiv:sha256");
    assert_eq!(v.key.len(), 32);
}
