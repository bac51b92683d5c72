//! Crafted hostile LUKS2 metadata, resealed with a valid checksum in both header copies so it
//! reaches the parser: every out-of-range or inconsistent field is `Malformed` or `Unsupported`
//! naming it, costs beyond the limits are refused before any work or allocation, and nothing
//! panics or opens.

use super::{secondary, unlock_bytes, Fixture, PASS};
use crate::luks::header::reseal;
use crate::luks::LuksError;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Replaces the JSON text of both header copies with `text` (zero-padded) and reseals them.
fn set_json(img: &mut [u8], text: &[u8]) {
    let hdr2 = secondary(img);
    for at in [0, hdr2] {
        let area = &mut img[at + 4096..at + hdr2];
        assert!(text.len() <= area.len(), "crafted JSON does not fit");
        area.fill(0);
        area[..text.len()].copy_from_slice(text);
        reseal(img, at);
    }
}

fn json_of(img: &[u8]) -> Value {
    let area = &img[4096..secondary(img)];
    let end = area.iter().position(|&b| b == 0).unwrap();
    serde_json::from_slice(&area[..end]).unwrap()
}

/// `img` with its metadata changed by `edit`.
fn edited(img: &[u8], edit: impl Fn(&mut Value)) -> Vec<u8> {
    let mut j = json_of(img);
    edit(&mut j);
    let mut out = img[..1 << 20].to_vec(); // headers and keyslot area; the data is never read
    set_json(&mut out, serde_json::to_string(&j).unwrap().as_bytes());
    out
}

fn argon2id() -> Fixture {
    Fixture::format(&[
        "--type",
        "luks2",
        "--pbkdf",
        "argon2id",
        "--pbkdf-memory",
        "32768",
        "--pbkdf-force-iterations",
        "4",
        "--pbkdf-parallel",
        "1",
        "--offset",
        "2048", // data at 1 MiB, so the 1 MiB image `edited` keeps is whole
    ])
}

#[test]
fn luks2_resealed_json_still_opens() {
    let f = argon2id();
    let img = f.bytes();
    let same = edited(&img, |_| {});
    assert_eq!(*unlock_bytes(&same, PASS).unwrap().key, f.dumped_key(PASS), "the crafting itself is sound");
}

/// Costs beyond the limits: refused at once (a 1 TiB argon2 would otherwise allocate or abort).
#[test]
fn luks2_absurd_kdf_costs_refused_before_any_work() {
    let f = argon2id();
    let img = f.bytes();
    let cases: [(&str, &str, Value); 5] = [
        ("kdf", "memory", json!(1u64 << 30)),          // 1 TiB in KiB
        ("kdf", "memory", json!(4 * 1024 * 1024 + 1)), // just over 4 GiB
        ("kdf", "time", json!(u32::MAX)),
        ("kdf", "cpus", json!(1000)),
        ("kdf", "memory", json!(u64::MAX)),
    ];
    for (obj, key, value) in cases {
        let bad = edited(&img, |j| j["keyslots"]["0"][obj][key] = value.clone());
        let t = Instant::now();
        match unlock_bytes(&bad, PASS) {
            Err(LuksError::Unsupported(m)) => assert!(m.contains(key), "{key}={value}: {m}"),
            other => panic!("{key}={value}: {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(1), "{key}={value} took {:?}", t.elapsed());
    }
    let bad = edited(&img, |j| j["digests"]["0"]["iterations"] = json!(1u64 << 40));
    match unlock_bytes(&bad, PASS) {
        Err(LuksError::Unsupported(m)) => assert!(m.contains("iterations"), "{m}"),
        other => panic!("digest iterations 2^40: {other:?}"),
    }
}

/// One field at a time made hostile; each must be an error that is not WrongKey.
#[test]
fn luks2_hostile_fields_are_errors_not_panics() {
    let f = argon2id();
    let img = f.bytes();
    type Edit = Box<dyn Fn(&mut Value)>;
    let set = |path: &'static [&'static str], v: Value| -> Edit {
        Box::new(move |j: &mut Value| {
            let mut at = j;
            for p in path {
                at = &mut at[*p];
            }
            *at = v.clone();
        })
    };
    let edits: Vec<(&str, Edit)> = vec![
        ("key_size huge", set(&["keyslots", "0", "key_size"], json!(1_000_000_000u64))),
        ("key_size 0", set(&["keyslots", "0", "key_size"], json!(0))),
        ("stripes 0", set(&["keyslots", "0", "af", "stripes"], json!(0))),
        ("stripes huge", set(&["keyslots", "0", "af", "stripes"], json!(1u64 << 40))),
        ("af hash", set(&["keyslots", "0", "af", "hash"], json!("md5"))),
        ("af type", set(&["keyslots", "0", "af", "type"], json!("luks3"))),
        ("area offset max", set(&["keyslots", "0", "area", "offset"], json!(u64::MAX.to_string()))),
        ("area offset past end", set(&["keyslots", "0", "area", "offset"], json!("1040000"))),
        ("area offset number", set(&["keyslots", "0", "area", "offset"], json!(32768))),
        ("area offset negative", set(&["keyslots", "0", "area", "offset"], json!("-1"))),
        ("area size 0", set(&["keyslots", "0", "area", "size"], json!("0"))),
        ("area cipher", set(&["keyslots", "0", "area", "encryption"], json!("twofish-xts-plain64"))),
        ("area key_size 40", set(&["keyslots", "0", "area", "key_size"], json!(40))),
        ("area type", set(&["keyslots", "0", "area", "type"], json!("checksum"))),
        ("kdf type", set(&["keyslots", "0", "kdf", "type"], json!("scrypt"))),
        ("kdf salt", set(&["keyslots", "0", "kdf", "salt"], json!("!!!not base64"))),
        ("kdf salt short", set(&["keyslots", "0", "kdf", "salt"], json!("AAAA"))),
        ("kdf time 0", set(&["keyslots", "0", "kdf", "time"], json!(0))),
        ("kdf memory float", set(&["keyslots", "0", "kdf", "memory"], json!(1.5))),
        ("segment offset unaligned", set(&["segments", "0", "offset"], json!("123"))),
        ("segment offset huge", set(&["segments", "0", "offset"], json!("99999999999999999999"))),
        ("segment sector_size", set(&["segments", "0", "sector_size"], json!(333))),
        ("segment cipher", set(&["segments", "0", "encryption"], json!("aes xts 00 8:1"))),
        ("segment size", set(&["segments", "0", "size"], json!("abc"))),
        ("segment type", set(&["segments", "0", "type"], json!("linear"))),
        ("segment integrity", set(&["segments", "0", "integrity"], json!({"type": "hmac(sha256)"}))),
        ("no segments", set(&["segments"], json!({}))),
        ("two segments", Box::new(|j: &mut Value| j["segments"]["1"] = j["segments"]["0"].clone())),
        ("digest empty", set(&["digests", "0", "digest"], json!(""))),
        ("digest type", set(&["digests", "0", "type"], json!("argon2id"))),
        ("digest unbound", set(&["digests", "0", "keyslots"], json!([]))),
        ("digest ids", set(&["digests", "0", "segments"], json!([0]))),
        ("no digests", set(&["digests"], json!({}))),
        ("requirements", set(&["config", "requirements"], json!({"mandatory": ["online-reencrypt"]}))),
        ("keyslots array", set(&["keyslots"], json!([]))),
        ("no keyslots", set(&["keyslots"], json!({}))),
        ("no config", Box::new(|j: &mut Value| drop(j.as_object_mut().unwrap().remove("config")))),
        ("root array", Box::new(|j: &mut Value| *j = json!([]))),
    ];
    for (what, edit) in edits {
        match unlock_bytes(&edited(&img, edit), PASS) {
            Err(LuksError::Malformed(m) | LuksError::Unsupported(m)) => assert!(!m.is_empty(), "{what}"),
            other => panic!("{what}: {other:?}"),
        }
    }

    // Text no JSON parser should accept, or should recurse into.
    let deep = format!("{}{}", "[".repeat(6000), "]".repeat(6000));
    let texts: [&[u8]; 4] = [deep.as_bytes(), b"{\"keyslots\":", b"\xff\xfe{}", b"{}"];
    for text in texts {
        let mut bad = img[..1 << 20].to_vec();
        set_json(&mut bad, text);
        let r = unlock_bytes(&bad, PASS);
        assert!(
            matches!(r, Err(LuksError::Malformed(_))),
            "{:?}: {r:?}",
            String::from_utf8_lossy(&text[..text.len().min(20)])
        );
    }
}
