//! The plan check: every disk of a plan is bounded, matched to a target, and given a mode —
//! without writing anything, so a refused (or dry-run) plan leaves every target and every
//! resume state as it was. Only [`Receiver::begin`], after the whole plan passed, records that
//! new passes start.
//!
//! Modes: a saved state for this very target (same identity) and this source resumes when the
//! plan is the same, the pass unfinished, no digest mismatch was seen and a spot check of the
//! last durable blocks agrees; otherwise it is a delta. Without a usable state, the source's
//! sample blocks decide: most of them already on the target → delta (an earlier copy, e.g.
//! after an appliance reboot lost the state), else full.

use super::disk::DiskRx;
use super::state::{State, Store, TargetId};
use super::target::Target;
use super::{Receiver, TargetSpec};
use crate::digest::{self, hex, RECORD};
use crate::proto::{DiskPlan, DiskStart, Mode, TargetInfo, BLOCK, MAX_SAMPLES};
use anyhow::{bail, ensure, Context, Result};

/// Most disks in one plan.
const MAX_DISKS: usize = 64;
/// Blocks of the partial chunk spot-checked before resuming.
const SPOT_CHECK: usize = 16;

/// One disk of an accepted plan, not yet begun.
pub(super) struct Prepared {
    target: Target,
    name: String,
    store: Store,
    state: State,
    mode: Mode,
    source_size: u64,
}

fn names(t: &[TargetInfo]) -> String {
    t.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// A target named by name (`vda`), serial, or index (`#0`).
pub fn resolve(sel: &str, targets: &[TargetInfo]) -> Result<usize> {
    if let Some(n) = sel.strip_prefix('#') {
        let i: usize = n.parse().with_context(|| format!("target index {sel:?} is not a number"))?;
        ensure!(i < targets.len(), "target index {sel} is out of range ({} targets)", targets.len());
        return Ok(i);
    }
    targets
        .iter()
        .position(|t| t.name == sel || (!t.serial.is_empty() && t.serial == sel) || t.path == sel)
        .with_context(|| format!("no target named {sel:?} (targets: {})", names(targets)))
}

/// What a sender's plan may claim, bounded before anything is opened.
fn bounded(d: &DiskPlan) -> Result<()> {
    ensure!(d.source.len() <= 4096, "a source name of {} bytes", d.source.len());
    ensure!(d.target.len() <= 256, "a target selector of {} bytes", d.target.len());
    ensure!(
        d.last_used <= d.source_size && d.extent_bytes <= d.source_size,
        "source {}: last used byte {} or extent bytes {} beyond its size {}",
        d.source,
        d.last_used,
        d.extent_bytes,
        d.source_size
    );
    ensure!(d.samples.len() <= MAX_SAMPLES, "{} sample blocks; at most {MAX_SAMPLES}", d.samples.len());
    for &(o, l, _) in &d.samples {
        ensure!(
            l > 0 && l as u64 <= BLOCK && o.checked_add(l as u64).is_some_and(|e| e <= d.source_size),
            "sample block at {o} of {l} bytes is not a block of the source"
        );
    }
    Ok(())
}

/// Do the last durable blocks recorded in `st` still read the same on the target?
fn spot_check(target: &Target, st: &State) -> bool {
    let Some(tail) = super::state::unhex(&st.tail) else { return false };
    let recs: Vec<&[u8]> = tail.chunks(RECORD).collect();
    let mut buf = vec![0u8; BLOCK as usize];
    recs.iter().rev().take(SPOT_CHECK).all(|r| {
        if r.len() != RECORD {
            return false;
        }
        let (o, l, h) = digest::parse_record(r);
        let b = &mut buf[..(l as usize).min(BLOCK as usize)];
        target.read(o, b).is_ok() && digest::hash(b) == h
    })
}

/// How many of the source's sample blocks the target already holds.
fn samples_held(target: &Target, samples: &[(u64, u32, [u8; 32])]) -> usize {
    let mut buf = vec![0u8; BLOCK as usize];
    samples
        .iter()
        .filter(|&&(o, l, h)| {
            let b = &mut buf[..l as usize];
            o + l as u64 <= target.size && target.read(o, b).is_ok() && digest::hash(b) == h
        })
        .count()
}

fn choose(prev: Option<&State>, id: &TargetId, sid: &str, ph: &str, target: &Target, d: &DiskPlan) -> Mode {
    match prev {
        Some(p) if p.target == *id && p.source_id == sid => {
            if p.plan_hash == ph && !p.complete && !p.suspect && spot_check(target, p) {
                Mode::Resume { from: p.durable }
            } else {
                Mode::Delta
            }
        }
        _ if !d.samples.is_empty() && 2 * samples_held(target, &d.samples) >= d.samples.len() => Mode::Delta,
        _ => Mode::Full,
    }
}

impl Receiver {
    /// Resolves and checks every target; writes nothing.
    pub(super) fn check_plan(
        &self,
        disks: &[DiskPlan],
        specs: &[TargetSpec],
        targets: &[TargetInfo],
    ) -> Result<(Vec<Prepared>, Vec<DiskStart>)> {
        ensure!(!disks.is_empty(), "the plan names no disk");
        ensure!(disks.len() <= MAX_DISKS, "a plan of {} disks; at most {MAX_DISKS}", disks.len());
        let mut used = Vec::new();
        let mut next = 0usize;
        let mut chosen = Vec::new();
        for d in disks {
            bounded(d)?;
            let idx = if d.target.is_empty() {
                while used.contains(&next) {
                    next += 1;
                }
                next
            } else {
                resolve(&d.target, targets)?
            };
            let t = targets.get(idx).with_context(|| {
                format!(
                    "no target left for source {} ({} targets: {})",
                    d.source,
                    targets.len(),
                    names(targets)
                )
            })?;
            ensure!(!used.contains(&idx), "target {} is named twice in the plan", t.name);
            used.push(idx);
            chosen.push((d, idx));
        }
        let mut prepared = Vec::new();
        let mut starts = Vec::new();
        for (d, idx) in chosen {
            let info = &targets[idx];
            let target = Target::open(&specs[idx].path)?;
            if target.size < d.last_used {
                bail!(
                    "target {} is {} bytes; source {} needs at least {} bytes (its last used byte)",
                    info.name,
                    target.size,
                    d.source,
                    d.last_used
                );
            }
            let id = TargetId::of(&target.file, target.size, &specs[idx].serial)
                .with_context(|| format!("identifying target {}", info.name))?;
            let store = Store::new(&self.state_dir, &info.name);
            let prev = store.load();
            let (sid, ph) = (hex(&d.source_id), hex(&d.plan_hash));
            let mode = choose(prev.as_ref(), &id, &sid, &ph, &target, d);
            let state = match (mode, prev) {
                (Mode::Resume { .. }, Some(p)) => p,
                _ => State { source_id: sid, plan_hash: ph, target: id, ..Default::default() },
            };
            log::info!("receiver: {} → {} ({mode:?})", d.source, info.name);
            prepared.push(Prepared {
                target,
                name: info.name.clone(),
                store,
                state,
                mode,
                source_size: d.source_size,
            });
            starts.push(DiskStart { target: info.clone(), mode });
        }
        Ok((prepared, starts))
    }

    /// Begins an accepted plan: records, per disk, that a new pass starts (or resumes).
    pub(super) fn begin(&self, prepared: Vec<Prepared>) -> Result<Vec<DiskRx>> {
        prepared
            .into_iter()
            .map(|p| {
                DiskRx::new(
                    p.target,
                    p.name,
                    p.store,
                    &self.state_dir,
                    p.state,
                    p.mode,
                    p.source_size,
                    self.checkpoint_bytes,
                )
            })
            .collect()
    }
}
