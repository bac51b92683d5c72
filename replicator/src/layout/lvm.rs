//! Used blocks of an LVM physical volume. The PV label and the newest metadata of its metadata
//! areas say where each logical volume's extents lie on this PV. A visible LV made only of linear
//! segments on this PV, and used by no other LV, is analysed through a view of its extents like
//! a partition (ext, XFS, swap; MD and LVM are not opened inside it); extents no LV holds are
//! skipped. Everything else is sent whole, with a note: thin pools and thin LVs, RAID, mirror,
//! cache and snapshot LVs (and the origin of a snapshot, whose old blocks the snapshot still
//! reads), LVs striped or spread over other PVs. The label, the metadata areas and all of the
//! PV outside its data area are always sent.

use super::{analyze_region, Analysed, RangeSet};
use anyhow::{ensure, Context, Result};
use ferry_convert::lvm::meta::{self, Value};
use ferry_formats::read::ReadAt;
use std::collections::BTreeSet;
use std::io;

const SECTOR: u64 = 512;
/// The largest metadata area read (lvm's default is 1 MiB).
const MAX_MDA: u64 = 64 << 20;

/// A logical volume laid end to end from its pieces on the PV: `(lv offset, pv offset, len)`.
struct LvView<'a> {
    f: &'a dyn ReadAt,
    pieces: Vec<(u64, u64, u64)>,
    len: u64,
}

impl ReadAt for LvView<'_> {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let end = off.checked_add(buf.len() as u64).filter(|&e| e <= self.len);
        end.ok_or(io::ErrorKind::UnexpectedEof)?;
        let mut done = 0usize;
        while done < buf.len() {
            let at = off + done as u64;
            let &(lo, po, len) = self
                .pieces
                .iter()
                .find(|(lo, _, len)| (*lo..lo + len).contains(&at))
                .ok_or(io::ErrorKind::UnexpectedEof)?;
            let n = ((lo + len - at) as usize).min(buf.len() - done);
            self.f.read_exact_at(&mut buf[done..done + n], po + (at - lo))?;
            done += n;
        }
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.len)
    }
}

impl LvView<'_> {
    /// LV byte ranges as PV (absolute) byte ranges.
    fn to_pv(&self, ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for &(s, e) in ranges {
            for &(lo, po, len) in &self.pieces {
                let (a, b) = (s.max(lo), e.min(lo + len));
                if a < b {
                    out.push((po + (a - lo), po + (b - lo)));
                }
            }
        }
        out
    }
}

/// The newest VG metadata of the PV at `[start, start + len)`, and the PV's label.
fn read_metadata(f: &dyn ReadAt, start: u64, len: u64) -> Result<(meta::Label, Value)> {
    let mut head = vec![0u8; 2048];
    f.read_exact_at(&mut head, start).context("reading the PV label")?;
    let label = meta::label(&head).context("no LVM label")?;
    let mut best: Option<Value> = None;
    for &(off, size) in &label.mdas {
        ensure!(
            (SECTOR..=MAX_MDA).contains(&size) && off.checked_add(size).is_some_and(|e| e <= len),
            "metadata area at byte {off} of {size} bytes does not fit the PV ({len} bytes, areas up to {MAX_MDA})"
        );
        let mut area = vec![0u8; size as usize];
        f.read_exact_at(&mut area, start + off)
            .with_context(|| format!("reading the metadata area at byte {off}"))?;
        let v = meta::metadata_text(&area).and_then(|t| meta::parse(&t))?;
        let seq = |v: &Value| v.sections().next().and_then(|(_, vg)| vg.int("seqno"));
        if best.as_ref().is_none_or(|b| seq(b) < seq(&v)) {
            best = Some(v);
        }
    }
    Ok((label, best.context("the PV has no metadata area")?))
}

fn nonneg(v: &Value, key: &str) -> Result<u64> {
    let n = v.int(key).with_context(|| format!("no {key}"))?;
    u64::try_from(n).ok().with_context(|| format!("{key} = {n} is negative"))
}

/// One segment's pieces on this PV: `(lv extent, pv extent, extents)`; `linear` when the whole
/// segment is one stripe here.
struct Seg {
    kind: String,
    here: Vec<(u64, u64, u64)>,
    linear_here: bool,
}

/// Most segments an LV may have for its filesystem to be analysed (each read searches them).
const MAX_SEGMENTS: usize = 4096;

fn segments(lv: &Value, pv_key: &str, pe_count: u64) -> Result<Vec<Seg>> {
    let mut segs: Vec<&Value> =
        lv.sections().filter(|(k, _)| k.starts_with("segment")).map(|(_, v)| v).collect();
    segs.sort_by_key(|s| s.int("start_extent").unwrap_or(0));
    let mut out = Vec::new();
    for s in segs {
        let (start, count) = (nonneg(s, "start_extent")?, nonneg(s, "extent_count")?);
        let kind = s.str("type").unwrap_or("").to_string();
        let mut here = Vec::new();
        // Areas on this PV named by any other list (`mirrors` of a pvmove, and whatever a
        // segment type ferry does not know may use): the whole segment's extents from there.
        let mut other_lists = false;
        if let Value::Section(m) = s {
            for (key, v) in m.iter().filter(|(k, _)| k.as_str() != "stripes") {
                let Value::List(items) = v else { continue };
                for pair in items.chunks(2) {
                    if let [Value::Str(pv), Value::Int(pe)] = pair {
                        other_lists = true;
                        if pv != pv_key {
                            continue;
                        }
                        let pe =
                            u64::try_from(*pe).ok().with_context(|| format!("negative extent in {key}"))?;
                        ensure!(pe < pe_count, "{key}: extent {pe} is past the PV's {pe_count} extents");
                        here.push((start, pe, count.min(pe_count - pe)));
                    }
                }
            }
        }
        let mut stripes_n = 0;
        if let Some(Value::List(stripes)) = s.get("stripes") {
            stripes_n = stripes.len() / 2;
            let per = if stripes_n > 0 { count / stripes_n as u64 } else { 0 };
            for pair in stripes.chunks(2) {
                let [Value::Str(pv), Value::Int(pe)] = pair else { anyhow::bail!("malformed stripes list") };
                if pv != pv_key {
                    continue;
                }
                let pe = u64::try_from(*pe).ok().context("negative stripe extent")?;
                ensure!(
                    pe.checked_add(per).is_some_and(|e| e <= pe_count),
                    "a stripe at extent {pe} of {per} extents is past the PV's {pe_count} extents"
                );
                here.push((start, pe, per));
            }
        }
        let linear_here = kind == "striped" && stripes_n == 1 && here.len() == 1 && !other_lists;
        out.push(Seg { kind, here, linear_here });
    }
    Ok(out)
}

/// Whether an LV's pieces occupy distinct extents of the PV (corrupt metadata could map two LV
/// offsets onto one extent: free at one, used at the other).
fn disjoint(pieces: &[(u64, u64, u64)]) -> bool {
    let mut r: Vec<(u64, u64)> = pieces.iter().map(|&(_, pe, n)| (pe, pe + n)).collect();
    r.sort();
    r.windows(2).all(|w| w[0].1 <= w[1].0)
}

/// Names of LVs other LVs are built on or read from (sub-LVs of thin pools, RAID, mirrors,
/// caches; snapshot origins and COW stores): every string value of a segment other than its
/// type and its list of PV stripes.
fn referenced(lvs: &Value) -> BTreeSet<String> {
    fn strings(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Str(s) => {
                out.insert(s.clone());
            }
            Value::List(l) => l.iter().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    for (_, lv) in lvs.sections() {
        for (k, s) in lv.sections() {
            if !k.starts_with("segment") {
                continue;
            }
            if let Value::Section(m) = s {
                for (key, v) in m {
                    if key != "type" && key != "stripes" {
                        strings(v, &mut out);
                    }
                }
            }
        }
    }
    out
}

/// Free space of the PV at `[start, start + len)` of `f`, as absolute ranges.
pub(super) fn free(f: &dyn ReadAt, start: u64, len: u64, notes: &mut Vec<String>) -> Result<Analysed> {
    let (label, md) = read_metadata(f, start, len)?;
    let (vgname, vg) = md.sections().next().context("the metadata names no volume group")?;
    let ext =
        nonneg(vg, "extent_size")?.checked_mul(SECTOR).filter(|&e| e > 0).context("extent_size is 0")?;
    let pvs = vg.get("physical_volumes").context("no physical_volumes")?;
    let (pv_key, pv) = pvs
        .sections()
        .find(|(_, p)| p.str("id").unwrap_or("").replace('-', "") == label.pv_uuid)
        .with_context(|| format!("volume group {vgname} does not list this PV ({})", label.pv_uuid))?;
    let pe_start = nonneg(pv, "pe_start")?.checked_mul(SECTOR).context("pe_start out of range")?;
    let pe_count = nonneg(pv, "pe_count")?;
    let data_end = pe_count.checked_mul(ext).and_then(|b| b.checked_add(pe_start)).filter(|&e| e <= len);
    let data_end = data_end.with_context(|| {
        format!("{pe_count} extents of {ext} bytes from byte {pe_start} do not fit the PV ({len} bytes)")
    })?;
    let at = |pe: u64| start + pe_start + pe * ext;
    let lvs = vg.get("logical_volumes");
    let used_by_others = lvs.map(referenced).unwrap_or_default();
    // Bytes of this PV some LV needs; the data area less these is skipped.
    let mut keep = Vec::new();
    let mut out = Analysed::just("lvm", Vec::new());
    for (name, lv) in lvs.map(|l| l.sections().collect::<Vec<_>>()).unwrap_or_default() {
        let segs = segments(lv, pv_key, pe_count).with_context(|| format!("{vgname}/{name}"))?;
        ensure!(segs.len() <= MAX_SEGMENTS * 16, "{vgname}/{name} has {} segments", segs.len());
        let pieces: Vec<(u64, u64, u64)> = segs.iter().flat_map(|s| s.here.iter().copied()).collect();
        if pieces.is_empty() {
            continue;
        }
        let whole = |keep: &mut Vec<(u64, u64)>| {
            keep.extend(pieces.iter().map(|&(_, pe, n)| (at(pe), at(pe + n))));
        };
        let why_whole = if !lv.strs("status").contains(&"VISIBLE") || used_by_others.contains(name) {
            Some("hidden or used by another LV".to_string())
        } else if segs.len() > MAX_SEGMENTS || !disjoint(&pieces) {
            Some(format!("{} segments, or segments sharing extents", segs.len()))
        } else {
            segs.iter().find(|s| !s.linear_here).map(|s| match s.kind.as_str() {
                "striped" => "striped or on other PVs".to_string(),
                k => format!("a {k} LV"),
            })
        };
        if let Some(why) = why_whole {
            notes.push(format!("LVM {vgname}/{name}: {why}; its extents on this PV are sent whole"));
            whole(&mut keep);
            continue;
        }
        // Segments must lay the LV out from extent 0 without holes.
        let mut next = 0u64;
        let contiguous = pieces.iter().all(|&(le, _, n)| {
            let ok = le == next;
            next = le.saturating_add(n);
            ok
        });
        if !contiguous {
            notes.push(format!("LVM {vgname}/{name}: segments leave holes; sent whole"));
            whole(&mut keep);
            continue;
        }
        // Contiguous pieces on this PV: every offset below is bounded by the PV's data area.
        let view = LvView {
            f,
            pieces: pieces.iter().map(|&(le, pe, n)| (le * ext, at(pe), n * ext)).collect(),
            len: pieces.iter().map(|p| p.2 * ext).sum(),
        };
        let a = analyze_region(&view, 0, view.len, 0, notes);
        let lv_free = RangeSet::from_vec(view.to_pv(&a.ranges));
        let lv_all = RangeSet::from_vec(view.pieces.iter().map(|&(_, po, n)| (po, po + n)).collect());
        keep.extend_from_slice(lv_all.subtract(&lv_free).ranges());
        out.inode_table_bytes += a.inode_table_bytes;
        out.journal_bytes += a.journal_bytes;
    }
    let data = RangeSet::from_vec(vec![(start + pe_start, start + data_end)]);
    out.ranges = data.subtract(&RangeSet::from_vec(keep)).ranges().to_vec();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lv(text: &str) -> Value {
        meta::parse(text).unwrap().get("lv").unwrap().clone()
    }

    /// A pvmove in progress: the moving LV's data is in `pvmove0`'s `mirrors` areas on both PVs.
    #[test]
    fn areas_in_any_list_are_kept() {
        let moving = lv(r#"lv { segment1 { start_extent = 0 extent_count = 10 type = "mirror"
            mirror_count = 2 mirrors = ["pv0", 100, "pv1", 0] } }"#);
        let s = segments(&moving, "pv0", 200).unwrap();
        assert_eq!((s[0].here.clone(), s[0].linear_here), (vec![(0, 100, 10)], false));
        let s = segments(&moving, "pv1", 200).unwrap();
        assert_eq!(s[0].here, vec![(0, 0, 10)]);
        // A striped segment placed on an LV (pvmove0) holds nothing on a PV itself.
        let user = lv(r#"lv { segment1 { start_extent = 0 extent_count = 10 type = "striped"
            stripe_count = 1 stripes = ["pvmove0", 0] } }"#);
        assert!(segments(&user, "pv0", 200).unwrap()[0].here.is_empty());
        // An area past the PV is an error (the PV is then sent whole).
        let bad = lv(r#"lv { segment1 { start_extent = 0 extent_count = 10 type = "mirror"
            mirrors = ["pv0", 500] } }"#);
        assert!(segments(&bad, "pv0", 200).is_err());
    }

    #[test]
    fn pieces_sharing_extents_are_not_disjoint() {
        assert!(disjoint(&[(0, 10, 5), (5, 0, 5)]));
        assert!(!disjoint(&[(0, 10, 5), (5, 12, 5)]));
    }
}
