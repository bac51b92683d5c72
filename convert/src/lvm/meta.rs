//! LVM2 on-disk format, read-only: the PV label (`LABELONE` in one of the first four sectors),
//! the PV header with its data and metadata areas, the metadata area header and its circular
//! buffer, and the text metadata itself (LVM's config syntax: sections, `key = value`, arrays).
//! Only what activation needs is interpreted: PV ids and extents, LV segments.

use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;

const SECTOR: usize = 512;
const MDA_MAGIC: &[u8; 16] = b"\x20LVM2\x20x[5A%r0N*>";

/// A value of the text format.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Str(String),
    List(Vec<Value>),
    Section(BTreeMap<String, Value>),
}

impl Value {
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Section(m) => m.get(key),
            _ => None,
        }
    }
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn sections(&self) -> impl Iterator<Item = (&String, &Value)> {
        let m = match self {
            Value::Section(m) => Some(m),
            _ => None,
        };
        m.into_iter().flatten().filter(|(_, v)| matches!(v, Value::Section(_)))
    }
    /// The strings of a list value (`status = ["READ", "WRITE"]`).
    pub fn strs(&self, key: &str) -> Vec<&str> {
        match self.get(key) {
            Some(Value::List(l)) => l
                .iter()
                .filter_map(|v| match v {
                    Value::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
    /// Sections and lists open now; bounded so hostile text cannot exhaust the stack.
    depth: usize,
}

/// Deepest nesting of sections and lists accepted (lvm's own metadata nests 5 deep).
const MAX_DEPTH: usize = 64;

impl Lexer<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() {
            match self.s[self.i] {
                b' ' | b'\t' | b'\n' | b'\r' => self.i += 1,
                b'#' => {
                    while self.i < self.s.len() && self.s[self.i] != b'\n' {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.i).copied()
    }
    fn expect(&mut self, c: u8) -> Result<()> {
        match self.peek() {
            Some(x) if x == c => {
                self.i += 1;
                Ok(())
            }
            other => bail!(
                "LVM metadata: expected '{}' at byte {}, found {:?}",
                c as char,
                self.i,
                other.map(char::from)
            ),
        }
    }
    fn ident(&mut self) -> Result<String> {
        self.skip_ws();
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || b"_.+-".contains(&self.s[self.i]))
        {
            self.i += 1;
        }
        ensure!(self.i > start, "LVM metadata: expected a name at byte {start}");
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
    fn value(&mut self) -> Result<Value> {
        match self.peek() {
            Some(b'"') => {
                self.i += 1;
                let mut out = Vec::new();
                while let Some(&c) = self.s.get(self.i) {
                    self.i += 1;
                    match c {
                        b'"' => return Ok(Value::Str(String::from_utf8_lossy(&out).into_owned())),
                        b'\\' => {
                            out.extend(self.s.get(self.i));
                            self.i += 1;
                        }
                        _ => out.push(c),
                    }
                }
                bail!("LVM metadata: unterminated string")
            }
            Some(b'[') => {
                self.i += 1;
                self.enter()?;
                let mut items = Vec::new();
                loop {
                    match self.peek() {
                        Some(b']') => {
                            self.i += 1;
                            self.depth -= 1;
                            return Ok(Value::List(items));
                        }
                        Some(b',') => self.i += 1,
                        Some(_) => items.push(self.value()?),
                        None => bail!("LVM metadata: unterminated list"),
                    }
                }
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                let w = self.ident()?;
                // Floats exist in some headers (e.g. `version = 1.0`); keep the integer part.
                let int = w.split('.').next().unwrap_or("");
                Ok(Value::Int(int.parse().with_context(|| format!("LVM metadata: bad number {w:?}"))?))
            }
            other => bail!("LVM metadata: unexpected {:?} at byte {}", other.map(char::from), self.i),
        }
    }
    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        ensure!(self.depth <= MAX_DEPTH, "LVM metadata: nested deeper than {MAX_DEPTH} at byte {}", self.i);
        Ok(())
    }

    fn section_body(&mut self, top: bool) -> Result<BTreeMap<String, Value>> {
        let mut m = BTreeMap::new();
        loop {
            match self.peek() {
                None if top => return Ok(m),
                None => bail!("LVM metadata: unterminated section"),
                Some(b'}') if !top => {
                    self.i += 1;
                    return Ok(m);
                }
                Some(0) if top => return Ok(m),
                _ => {
                    let k = self.ident()?;
                    if self.peek() == Some(b'{') {
                        self.i += 1;
                        self.enter()?;
                        m.insert(k, Value::Section(self.section_body(false)?));
                        self.depth -= 1;
                    } else {
                        self.expect(b'=')?;
                        m.insert(k, self.value()?);
                    }
                }
            }
        }
    }
}

/// Parses metadata text into its top-level section.
pub fn parse(text: &str) -> Result<Value> {
    let mut l = Lexer { s: text.as_bytes(), i: 0, depth: 0 };
    Ok(Value::Section(l.section_body(true)?))
}

/// What the PV label says about a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// 32 characters, without dashes.
    pub pv_uuid: String,
    pub device_size: u64,
    /// Byte offsets of metadata areas on the device.
    pub mdas: Vec<(u64, u64)>,
}

fn u32le(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64le(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Reads the label from the first 2 KiB of a device; `None` when it is not a PV.
pub fn label(head: &[u8]) -> Option<Label> {
    for s in 0..4 {
        let b = head.get(s * SECTOR..(s + 1) * SECTOR)?;
        if &b[..8] != b"LABELONE" || &b[24..32] != b"LVM2 001" {
            continue;
        }
        // The PV header (uuid, size, area lists) must lie inside the label sector.
        let o = u32le(b, 20) as usize;
        if o < 32 || o.checked_add(40)? > SECTOR {
            return None;
        }
        let pv_uuid = String::from_utf8_lossy(b.get(o..o + 32)?).into_owned();
        let device_size = u64le(b, o + 32);
        let mut p = o + 40;
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            while p + 16 <= SECTOR {
                let (off, size) = (u64le(b, p), u64le(b, p + 8));
                p += 16;
                if off == 0 {
                    break;
                }
                list.push((off, size));
            }
        }
        return Some(Label { pv_uuid, device_size, mdas: lists[1].clone() });
    }
    None
}

/// The newest metadata text in a metadata area (`area` is the whole area as read from disk).
pub fn metadata_text(area: &[u8]) -> Result<String> {
    ensure!(area.len() >= SECTOR && &area[4..20] == MDA_MAGIC, "no LVM metadata area header (magic)");
    let size = u64le(area, 32);
    let (off, len) = (u64le(area, 40), u64le(area, 48));
    ensure!(off != 0 && len != 0, "the LVM metadata area is empty");
    // RAW_LOCN_IGNORED (`pvchange --metadataignore`, `vgmetadatacopies`): lvm stops updating the
    // area and skips it; its text is stale and must not be trusted.
    ensure!(u32le(area, 60) & 1 == 0, "the LVM metadata area is marked ignored; its text is stale");
    ensure!(
        size <= area.len() as u64 && off >= SECTOR as u64 && off < size && len <= size - SECTOR as u64,
        "LVM metadata of {len} bytes at {off} does not fit its area ({size} bytes, {} read)",
        area.len()
    );
    let (size, off, len) = (size as usize, off as usize, len as usize);
    // The buffer is circular after the header sector.
    let mut text = Vec::with_capacity(len);
    let first = len.min(size - off);
    text.extend_from_slice(&area[off..off + first]);
    if first < len {
        ensure!(SECTOR + len - first <= size, "LVM metadata wraps past its area");
        text.extend_from_slice(&area[SECTOR..SECTOR + len - first]);
    }
    let crc = u32le(area, 56);
    let got = lvm_crc(&text);
    ensure!(got == crc, "LVM metadata checksum mismatch (stored {crc:#x}, computed {got:#x})");
    let end = text.iter().position(|&c| c == 0).unwrap_or(text.len());
    Ok(String::from_utf8_lossy(&text[..end]).into_owned())
}

/// LVM's crc32: the standard polynomial with initial value 0xf597a6cf and no final inversion.
pub fn lvm_crc(data: &[u8]) -> u32 {
    // crc32fast computes !crc32_update(!init); LVM keeps the raw register.
    let mut h = crc32fast::Hasher::new_with_initial(!0xf597_a6cf);
    h.update(data);
    !h.finalize()
}
