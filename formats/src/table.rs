//! Partition tables: GPT (gptman) or MBR with logical partitions (mbrman), read through
//! [`ReadAt`]. The table crates can panic on hostile tables (mbrman on some EBR chains): a panic
//! there means "no table", never the end of the sender or of PID 1's conversion.

use crate::read::{Cursor, ReadAt};
use serde::{Deserialize, Serialize};

/// Which partition table a disk carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    Gpt,
    Mbr,
    None,
}

/// A used partition: its number (GPT slot or MBR index, logical partitions from 5), byte
/// range, and whether it is an MBR extended container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub number: u32,
    pub start: u64,
    pub end: u64,
    pub extended: bool,
}

pub fn no_panic<T>(f: impl FnOnce() -> Option<T>) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok().flatten()
}

pub fn gpt(f: &dyn ReadAt) -> Option<Vec<Entry>> {
    let mut r = Cursor::new(f).ok()?;
    let gpt = no_panic(|| gptman::GPT::find_from(&mut r).ok())?;
    let ss = gpt.sector_size;
    Some(
        gpt.iter()
            .filter(|(_, p)| p.is_used())
            .map(|(i, p)| Entry {
                number: i,
                start: p.starting_lba.saturating_mul(ss),
                end: p.ending_lba.saturating_add(1).saturating_mul(ss),
                extended: false,
            })
            .collect(),
    )
}

pub fn mbr(f: &dyn ReadAt) -> Option<Vec<Entry>> {
    let mut r = Cursor::new(f).ok()?;
    let mbr = no_panic(|| mbrman::MBR::read_from(&mut r, 512).ok())?;
    let parts: Vec<_> = mbr
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(i, p)| Entry {
            number: i as u32,
            start: p.starting_lba as u64 * 512,
            end: (p.starting_lba as u64 + p.sectors as u64) * 512,
            extended: p.is_extended(),
        })
        .collect();
    (!parts.is_empty()).then_some(parts)
}

/// The partitions of a disk or image (number, start byte, end byte), GPT or MBR with logical
/// partitions; extended containers are left out.
pub fn partitions(f: &dyn ReadAt) -> Vec<(u32, u64, u64)> {
    let entries = gpt(f).or_else(|| mbr(f)).unwrap_or_default();
    entries.into_iter().filter(|e| !e.extended).map(|e| (e.number, e.start, e.end)).collect()
}

/// Whether the GPT of `f` has a used partition of type `guid`; `None` without a GPT.
pub fn gpt_has_type(f: &dyn ReadAt, guid: &[u8; 16]) -> Option<bool> {
    let mut r = Cursor::new(f).ok()?;
    let gpt = no_panic(|| gptman::GPT::find_from(&mut r).ok())?;
    let found = gpt.iter().any(|(_, p)| p.is_used() && &p.partition_type_guid == guid);
    Some(found)
}
