//! Repartitioning for a target disk larger than its source. GPT: the backup header and entry
//! array move to the new end (CRCs recomputed by gptman, which addresses partitions by slot, so
//! numbers, GUIDs and names stay), and the protective MBR is refreshed keeping the boot code and
//! boot flag. MBR: sizes are updated, logical partitions included (the extended container grows
//! with its last logical partition). The last partition grows when it holds a growable
//! filesystem (ext2/3/4, XFS) — never swap or an ESP. Running it twice changes nothing.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use ferry_formats::{guid::ESP, table::Table, FsType};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Grown {
    pub number: u32,
    pub start: u64,
    pub old_end: u64,
    pub new_end: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    pub table: Table,
    pub disk_bytes: u64,
    pub changed: bool,
    pub grown: Option<Grown>,
}

/// Does the partition `[start, start + len)` hold a filesystem (or an LVM PV) we can grow? An
/// MD member never: growing it would move a 1.0 superblock's place (8 KiB from the end) away
/// from where it is, and the array would not start.
pub fn growable_fs(f: &File, start: u64, len: u64) -> bool {
    if !matches!(ferry_formats::md::read(f, start, len), Ok(None)) {
        return false;
    }
    let to_end = ferry_formats::ReadAt::size(f).unwrap_or(0).saturating_sub(start);
    ferry_formats::probe(f, start, to_end)
        .is_some_and(|p| p.fstype.is_ext() || matches!(p.fstype, FsType::Xfs | FsType::Btrfs | FsType::LvmPv))
}

/// Repartitions the disk in `f` for its current size; `grow` allows growing the last partition.
pub fn repartition(f: &mut File, grow: bool) -> Result<Report> {
    let disk_bytes = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    let gpt = ferry_formats::table::no_panic(|| gptman::GPT::find_from(&mut *f).ok());
    if let Some(gpt) = gpt {
        return gpt_repartition(f, gpt, disk_bytes, grow);
    }
    let mut mbr0 = [0u8; 512];
    f.seek(SeekFrom::Start(0))?;
    f.read_exact(&mut mbr0)?;
    if mbr0[510..512] == [0x55, 0xaa] {
        if let Some(mbr) = ferry_formats::table::no_panic(|| mbrman::MBR::read_from(&mut *f, 512).ok()) {
            return mbr_repartition(f, mbr, disk_bytes, grow);
        }
    }
    bail!("no GPT or MBR partition table found")
}

fn gpt_repartition(f: &mut File, mut gpt: gptman::GPT, disk_bytes: u64, grow: bool) -> Result<Report> {
    let ss = gpt.sector_size;
    let before = (gpt.header.backup_lba, gpt.header.last_usable_lba);
    gpt.header.update_from(f, ss).context("relocating the backup GPT")?;
    let mut changed = before != (gpt.header.backup_lba, gpt.header.last_usable_lba);
    let mut grown = None;
    if grow {
        let last = gpt
            .iter()
            .filter(|(_, p)| p.is_used())
            .max_by_key(|(_, p)| p.ending_lba)
            .map(|(i, p)| (i, p.clone()));
        if let Some((i, p)) = last {
            let target_end = gpt.header.last_usable_lba;
            if p.ending_lba < target_end
                && p.partition_type_guid != ESP
                && growable_fs(f, p.starting_lba * ss, (p.ending_lba + 1 - p.starting_lba) * ss)
            {
                grown = Some(Grown {
                    number: i,
                    start: p.starting_lba * ss,
                    old_end: (p.ending_lba + 1) * ss,
                    new_end: (target_end + 1) * ss,
                });
                gpt[i].ending_lba = target_end;
                changed = true;
            }
        }
    }
    if changed {
        gpt.write_into(f).context("writing the GPT")?;
        let mut flag = [0u8; 1];
        f.seek(SeekFrom::Start(446))?;
        f.read_exact(&mut flag)?;
        if flag[0] == 0x80 {
            gptman::GPT::write_bootable_protective_mbr_into(f, ss)?;
        } else {
            gptman::GPT::write_protective_mbr_into(f, ss)?;
        }
        f.sync_all()?;
    }
    Ok(Report { table: Table::Gpt, disk_bytes, changed, grown })
}

fn mbr_repartition(f: &mut File, mut mbr: mbrman::MBR, disk_bytes: u64, grow: bool) -> Result<Report> {
    let disk_sectors = u32::try_from(disk_bytes / 512).unwrap_or(u32::MAX);
    let mut grown = None;
    if grow {
        // The partition that ends last (logical partitions included).
        let last = mbr
            .iter()
            .filter(|(_, p)| p.is_used() && !p.is_extended())
            .max_by_key(|(_, p)| p.starting_lba as u64 + p.sectors as u64)
            .map(|(i, p)| (i, p.starting_lba, p.sectors));
        if let Some((i, start, sectors)) = last {
            let end = start as u64 + sectors as u64;
            if end < disk_sectors as u64 && growable_fs(f, start as u64 * 512, sectors as u64 * 512) {
                let new_sectors = disk_sectors - start;
                if i >= 5 {
                    let ext = (1..=4)
                        .find(|&k| mbr[k].is_extended())
                        .context("logical partition without an extended one")?;
                    let e_start = mbr[ext].starting_lba;
                    mbr[ext].sectors = disk_sectors - e_start;
                }
                mbr[i].sectors = new_sectors;
                grown = Some(Grown {
                    number: i as u32,
                    start: start as u64 * 512,
                    old_end: end * 512,
                    new_end: disk_sectors as u64 * 512,
                });
            }
        }
    }
    let changed = grown.is_some();
    if changed {
        mbr.write_into(f).context("writing the MBR")?;
        f.sync_all()?;
    }
    Ok(Report { table: Table::Mbr, disk_bytes, changed, grown })
}

#[cfg(test)]
mod tests;
