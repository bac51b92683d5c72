//! The LUKS2 JSON metadata as bounded typed values: the one active data segment, the keyslots
//! (each parsed on its own, so one unsupported keyslot does not hide the others) and the
//! digests binding keyslots to segments. u64 values are decimal strings in LUKS2 JSON; every
//! error names the field's path.

use super::af::{self, MAX_STRIPES};
use super::cipher::Spec;
use super::kdf::{Hash, Kdf};
use super::LuksError;
use base64::Engine as _;
use serde_json::{Map, Value};

/// Volume and keyslot keys longer than this are refused (AES-256-XTS uses 64).
pub const MAX_KEY: usize = 64;

pub struct Metadata {
    /// By id, each with its priority (0 ignore, 1 normal, 2 high) and what parsing it gave.
    pub keyslots: Vec<(String, u64, Result<Keyslot, LuksError>)>,
    pub segment_id: String,
    pub segment: Segment,
    pub digests: Vec<Result<Digest, LuksError>>,
}

pub struct Keyslot {
    pub key_size: usize,
    pub area_offset: u64,
    pub area_cipher: Spec,
    pub area_key_size: usize,
    pub kdf: Kdf,
    pub stripes: u32,
    pub af_hash: Hash,
}

pub struct Segment {
    pub offset: u64,
    pub size: Option<u64>,
    pub iv_tweak: u64,
    pub cipher: String,
    pub sector_size: u32,
}

pub struct Digest {
    pub keyslots: Vec<String>,
    pub segments: Vec<String>,
    pub kdf: Kdf,
    pub digest: Vec<u8>,
}

fn bad(at: &str, what: impl std::fmt::Display) -> LuksError {
    LuksError::Malformed(format!("{at}: {what}"))
}

fn field<'a>(o: &'a Map<String, Value>, key: &str, at: &str) -> Result<&'a Value, LuksError> {
    o.get(key).ok_or_else(|| bad(&format!("{at}.{key}"), "missing"))
}
fn obj<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, LuksError> {
    v.as_object().ok_or_else(|| bad(at, "not an object"))
}
fn sub<'a>(o: &'a Map<String, Value>, key: &str, at: &str) -> Result<&'a Map<String, Value>, LuksError> {
    obj(field(o, key, at)?, &format!("{at}.{key}"))
}
fn text<'a>(o: &'a Map<String, Value>, key: &str, at: &str) -> Result<&'a str, LuksError> {
    field(o, key, at)?.as_str().ok_or_else(|| bad(&format!("{at}.{key}"), "not a string"))
}
/// A u64 spelled as a decimal string (LUKS2's convention).
fn u64s(o: &Map<String, Value>, key: &str, at: &str) -> Result<u64, LuksError> {
    let s = text(o, key, at)?;
    s.parse().map_err(|_| bad(&format!("{at}.{key}"), format!("{s:?} is not a decimal u64")))
}
fn num(o: &Map<String, Value>, key: &str, at: &str) -> Result<u64, LuksError> {
    field(o, key, at)?.as_u64().ok_or_else(|| bad(&format!("{at}.{key}"), "not an unsigned integer"))
}
fn b64(o: &Map<String, Value>, key: &str, at: &str) -> Result<Vec<u8>, LuksError> {
    let s = text(o, key, at)?;
    base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| bad(&format!("{at}.{key}"), e))
}
fn key_len(o: &Map<String, Value>, key: &str, at: &str) -> Result<usize, LuksError> {
    match num(o, key, at)? {
        n @ 1..=64 => Ok(n as usize),
        n => Err(LuksError::Unsupported(format!("{at}.{key}: {n}-byte key (at most {MAX_KEY})"))),
    }
}
fn ids(o: &Map<String, Value>, key: &str, at: &str) -> Result<Vec<String>, LuksError> {
    let arr = field(o, key, at)?.as_array().ok_or_else(|| bad(&format!("{at}.{key}"), "not an array"))?;
    arr.iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| bad(&format!("{at}.{key}"), "non-string id")))
        .collect()
}

impl Metadata {
    /// Parses the JSON of a checksummed header copy for a device of `dev_size` bytes.
    pub fn parse(json: &str, dev_size: u64) -> Result<Metadata, LuksError> {
        let root: Value = serde_json::from_str(json).map_err(|e| bad("JSON area", e))?;
        let root = obj(&root, "JSON")?;
        let config = sub(root, "config", "")?;
        if let Some(req) = config.get("requirements").and_then(|r| r.get("mandatory")) {
            if req.as_array().is_none_or(|a| !a.is_empty()) {
                return Err(LuksError::Unsupported(format!("config.requirements.mandatory {req}")));
            }
        }
        let (segment_id, segment) = active_segment(sub(root, "segments", "")?, dev_size)?;
        let mut keyslots = Vec::new();
        for (id, ks) in sub(root, "keyslots", "")? {
            let at = format!("keyslots.{id}");
            let ks = obj(ks, &at)?;
            if text(ks, "type", &at)? != "luks2" {
                continue;
            }
            let priority = ks.get("priority").and_then(Value::as_u64).unwrap_or(1);
            keyslots.push((id.clone(), priority, keyslot(ks, &at, dev_size)));
        }
        let digests =
            sub(root, "digests", "")?.iter().map(|(id, d)| digest(d, &format!("digests.{id}"))).collect();
        Ok(Metadata { keyslots, segment_id, segment, digests })
    }
}

fn active_segment(segs: &Map<String, Value>, dev_size: u64) -> Result<(String, Segment), LuksError> {
    let mut active = Vec::new();
    for (id, s) in segs {
        let at = format!("segments.{id}");
        let s = obj(s, &at)?;
        let backup = s
            .get("flags")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|x| x.as_str().is_some_and(|x| x.starts_with("backup-"))));
        if !backup {
            active.push((id, s, at));
        }
    }
    let [(id, s, at)] = active.as_slice() else {
        return Err(LuksError::Unsupported(format!("{} active data segments (reencryption?)", active.len())));
    };
    let kind = text(s, "type", at)?;
    if kind != "crypt" {
        return Err(LuksError::Unsupported(format!("{at}: segment type {kind:?}")));
    }
    if s.get("integrity").is_some_and(|i| !i.is_null()) {
        return Err(LuksError::Unsupported(format!("{at}: dm-integrity")));
    }
    let offset = u64s(s, "offset", at)?;
    if !offset.is_multiple_of(512) || offset > dev_size {
        return Err(bad(&format!("{at}.offset"), format!("{offset} (device has {dev_size} bytes)")));
    }
    let size = match text(s, "size", at)? {
        "dynamic" => None,
        _ => Some(
            Some(u64s(s, "size", at)?)
                .filter(|n| n.is_multiple_of(512))
                .ok_or_else(|| bad(at, "size not in sectors"))?,
        ),
    };
    let sector_size = match num(s, "sector_size", at)? {
        n @ (512 | 1024 | 2048 | 4096) => n as u32,
        n => return Err(bad(&format!("{at}.sector_size"), n)),
    };
    let iv_tweak = u64s(s, "iv_tweak", at)?;
    let cipher = text(s, "encryption", at)?;
    let sane = |c: char| c.is_ascii_alphanumeric() || "-_:()".contains(c);
    if cipher.is_empty() || cipher.len() > 128 || !cipher.chars().all(sane) {
        return Err(bad(&format!("{at}.encryption"), format!("{cipher:?}")));
    }
    let segment = Segment {
        offset: offset / 512,
        size: size.map(|n| n / 512),
        iv_tweak,
        cipher: cipher.to_owned(),
        sector_size,
    };
    Ok((id.to_string(), segment))
}

fn keyslot(ks: &Map<String, Value>, at: &str, dev_size: u64) -> Result<Keyslot, LuksError> {
    let key_size = key_len(ks, "key_size", at)?;
    let area_at = format!("{at}.area");
    let area = sub(ks, "area", at)?;
    let kind = text(area, "type", &area_at)?;
    if kind != "raw" {
        return Err(LuksError::Unsupported(format!("{area_at}: type {kind:?}")));
    }
    let area_cipher = Spec::parse(text(area, "encryption", &area_at)?)?;
    let area_key_size = key_len(area, "key_size", &area_at)?;
    let af_at = format!("{at}.af");
    let afo = sub(ks, "af", at)?;
    let kind = text(afo, "type", &af_at)?;
    if kind != "luks1" {
        return Err(LuksError::Unsupported(format!("{af_at}: type {kind:?}")));
    }
    let stripes = match num(afo, "stripes", &af_at)? {
        n @ 1..=4000 => n as u32,
        n => return Err(bad(&format!("{af_at}.stripes"), format!("{n} (1 to {MAX_STRIPES})"))),
    };
    let af_hash = Hash::parse(text(afo, "hash", &af_at)?, "AF")?;
    let need = af::split_len(key_size, stripes).ok_or_else(|| bad(&af_at, "split size"))? as u64;
    let area_offset = u64s(area, "offset", &area_at)?;
    let area_size = u64s(area, "size", &area_at)?;
    if need > area_size || area_offset.checked_add(need).is_none_or(|end| end > dev_size) {
        return Err(bad(
            &area_at,
            format!("{need} bytes of key material at {area_offset} do not fit (size {area_size}, device {dev_size})"),
        ));
    }
    let kdf = kdf(sub(ks, "kdf", at)?, &format!("{at}.kdf"))?;
    Ok(Keyslot { key_size, area_offset, area_cipher, area_key_size, kdf, stripes, af_hash })
}

fn kdf(k: &Map<String, Value>, at: &str) -> Result<Kdf, LuksError> {
    match text(k, "type", at)? {
        "pbkdf2" => Kdf::pbkdf2(
            Hash::parse(text(k, "hash", at)?, "pbkdf2")?,
            num(k, "iterations", at)?,
            b64(k, "salt", at)?,
            at,
        ),
        t @ ("argon2i" | "argon2id") => Kdf::argon2(
            t == "argon2id",
            num(k, "time", at)?,
            num(k, "memory", at)?,
            num(k, "cpus", at)?,
            b64(k, "salt", at)?,
            at,
        ),
        t => Err(LuksError::Unsupported(format!("{at}: kdf {t:?}"))),
    }
}

fn digest(d: &Value, at: &str) -> Result<Digest, LuksError> {
    let d = obj(d, at)?;
    let kdf = kdf(d, at)?;
    if !matches!(kdf, Kdf::Pbkdf2 { .. }) {
        return Err(LuksError::Unsupported(format!("{at}: digest type {}", text(d, "type", at)?)));
    }
    let digest = b64(d, "digest", at)?;
    if !(16..=64).contains(&digest.len()) {
        return Err(bad(&format!("{at}.digest"), format!("{} bytes", digest.len())));
    }
    Ok(Digest { keyslots: ids(d, "keyslots", at)?, segments: ids(d, "segments", at)?, kdf, digest })
}
