//! Receiving one disk: applies Data/Zero in offset order, folds block hashes into the digest and
//! the hash log, answers delta HashQuery batches, checkpoints, and verifies at the end.

use super::state::{self, State, Store};
use super::target::Target;
use crate::digest::{self, Digest, Hash};
use crate::proto::{DiskResult, Mode};
use anyhow::{bail, ensure, Context, Result};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Default checkpoint window: at most this much is resent after an interruption.
pub const CHECKPOINT_BYTES: u64 = 64 << 20;
const CHECKPOINT_TIME: Duration = Duration::from_secs(2);

pub struct DiskRx {
    pub target: Target,
    pub name: String,
    store: Store,
    state: State,
    digest: Digest,
    mode: Mode,
    /// Next offset expected (everything before is folded).
    pos: u64,
    /// Delta batch: queried blocks with target hashes; written blocks override them.
    batch: Vec<(u64, u32, Hash)>,
    written: HashMap<u64, Hash>,
    since_checkpoint: u64,
    checkpoint_bytes: u64,
    last_checkpoint: Instant,
    pub bytes_written: u64,
    pub source_size: u64,
    /// A checkpoint syncing in the background (the transfer goes on meanwhile).
    syncing: Option<std::thread::JoinHandle<Result<()>>>,
    /// Closed runs of folded blocks (in the `.runs` file) and the run still growing.
    runs: u64,
    open_run: Option<(u64, u64)>,
}

impl DiskRx {
    #[allow(clippy::too_many_arguments)]
    /// Starts receiving into `target`: a new pass records its start (durable 0) before any
    /// write; a resumed one continues from the saved state.
    pub fn new(
        target: Target,
        name: String,
        mut store: Store,
        state_dir: &std::path::Path,
        mut state: State,
        mode: Mode,
        source_size: u64,
        checkpoint_bytes: u64,
    ) -> Result<Self> {
        if !matches!(mode, Mode::Resume { .. }) {
            state = State {
                source_id: state.source_id,
                plan_hash: state.plan_hash,
                target: state.target,
                ..Default::default()
            };
        }
        let digest = store.open(state_dir, &state)?;
        state.complete = false;
        store.save(&state)?;
        Ok(DiskRx {
            target,
            name,
            store,
            digest,
            mode,
            pos: state.durable,
            runs: state.runs,
            open_run: state.open_run,
            state,
            batch: Vec::new(),
            written: HashMap::new(),
            since_checkpoint: 0,
            checkpoint_bytes,
            last_checkpoint: Instant::now(),
            bytes_written: 0,
            source_size,
            syncing: None,
        })
    }

    fn in_order(&self, offset: u64, len: u64) -> Result<()> {
        ensure!(
            offset >= self.pos,
            "{}: data at {offset} arrived after {} (out of order)",
            self.name,
            self.pos
        );
        ensure!(
            offset.checked_add(len).is_some_and(|e| e <= self.source_size),
            "{}: range {offset}+{len} is beyond the source size {}",
            self.name,
            self.source_size
        );
        Ok(())
    }

    fn fold(&mut self, offset: u64, len: u32, h: &Hash) -> Result<()> {
        if let Some(c) = self.digest.fold(offset, len, h) {
            self.store.push_chunk(&c)?;
        }
        let end = offset + len as u64;
        match &mut self.open_run {
            // Merged only at block boundaries, so verification cuts the same blocks.
            Some((_, e)) if *e == offset && offset.is_multiple_of(crate::proto::BLOCK) => *e = end,
            open => {
                if let Some(r) = open.replace((offset, end)) {
                    self.store.push_run(r)?;
                    self.runs += 1;
                }
            }
        }
        self.pos = end;
        self.since_checkpoint += len as u64;
        Ok(())
    }

    pub fn data(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        self.in_order(offset, bytes.len() as u64)?;
        if !self.batch.is_empty() {
            ensure!(
                self.in_batch(offset, bytes.len() as u64),
                "{}: delta data at {offset} outside the queried batch",
                self.name
            );
        }
        self.target.write(offset, bytes)?;
        self.bytes_written += bytes.len() as u64;
        let mut at = 0usize;
        for (o, l) in digest::blocks(offset, offset + bytes.len() as u64) {
            let h = digest::hash(&bytes[at..at + l as usize]);
            at += l as usize;
            self.block_done(o, l, h)?;
        }
        Ok(())
    }

    pub fn zero(&mut self, offset: u64, len: u64) -> Result<()> {
        self.in_order(offset, len)?;
        if !self.batch.is_empty() {
            ensure!(
                self.in_batch(offset, len),
                "{}: delta zero range at {offset} outside the queried batch",
                self.name
            );
        }
        self.target.zero(offset, len)?;
        for (o, l) in digest::blocks(offset, offset + len) {
            self.block_done(o, l, digest::zero_hash(l))?;
        }
        Ok(())
    }

    fn in_batch(&self, offset: u64, len: u64) -> bool {
        let (Some(f), Some(l)) = (self.batch.first(), self.batch.last()) else { return false };
        offset >= f.0 && offset + len <= l.0 + l.1 as u64
    }

    fn block_done(&mut self, o: u64, l: u32, h: Hash) -> Result<()> {
        if self.batch.is_empty() {
            self.fold(o, l, &h)
        } else {
            self.written.insert(o, h);
            Ok(())
        }
    }

    /// Delta: hashes of the target's current content for the queried blocks.
    pub fn query(&mut self, blocks: &[(u64, u32)]) -> Result<Vec<Hash>> {
        ensure!(self.batch.is_empty(), "{}: a new HashQuery before Commit", self.name);
        let mut out = Vec::with_capacity(blocks.len());
        let mut buf = Vec::new();
        let mut last = self.pos;
        for &(o, l) in blocks {
            self.in_order(o, l as u64)?;
            ensure!(o >= last, "{}: queried blocks out of order at {o}", self.name);
            last = o + l as u64;
            buf.resize(l as usize, 0);
            self.target.read(o, &mut buf)?;
            let h = digest::hash(&buf);
            out.push(h);
            self.batch.push((o, l, h));
        }
        Ok(out)
    }

    /// Delta: folds the batch (written blocks with their new hashes, the rest unchanged).
    pub fn commit(&mut self) -> Result<()> {
        let batch = std::mem::take(&mut self.batch);
        let mut written = std::mem::take(&mut self.written);
        for (o, l, h) in batch {
            let h = written.remove(&o).unwrap_or(h);
            self.fold(o, l, &h)?;
        }
        ensure!(written.is_empty(), "{}: data for blocks that were not queried", self.name);
        Ok(())
    }

    /// Checkpoints when enough data or time has passed since the last one. The sync runs in the
    /// background on a snapshot: everything written before the snapshot is synced before the
    /// state naming it is written, so the state never claims more than is durable.
    pub fn maybe_checkpoint(&mut self) -> Result<()> {
        if self.syncing.as_ref().is_some_and(|h| h.is_finished()) {
            self.join_sync()?;
        }
        if self.syncing.is_none()
            && self.batch.is_empty()
            && (self.since_checkpoint >= self.checkpoint_bytes
                || self.last_checkpoint.elapsed() >= CHECKPOINT_TIME)
        {
            self.note_position(false);
            let snapshot = self.state.clone();
            let target = self.target.file.try_clone().context("cloning the target handle")?;
            let persister = self.store.persister()?;
            let name = self.target.path.display().to_string();
            self.syncing = Some(std::thread::spawn(move || {
                target.sync_data().with_context(|| format!("syncing {name}"))?;
                persister.persist(&snapshot)
            }));
            self.since_checkpoint = 0;
            self.last_checkpoint = Instant::now();
        }
        Ok(())
    }

    /// Copies where the pass is into the state to save.
    fn note_position(&mut self, complete: bool) {
        self.state.durable = self.pos;
        self.state.blocks = self.digest.blocks;
        self.state.runs = self.runs;
        self.state.open_run = self.open_run;
        self.state.tail = state::tail_hex(&self.digest);
        self.state.complete = complete;
    }

    fn join_sync(&mut self) -> Result<()> {
        match self.syncing.take() {
            Some(h) => h.join().map_err(|_| anyhow::anyhow!("checkpoint thread panicked"))?,
            None => Ok(()),
        }
    }

    fn checkpoint(&mut self, complete: bool) -> Result<()> {
        self.join_sync()?;
        self.target.sync()?;
        self.note_position(complete);
        self.store.save(&self.state)?;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Ends the disk: final checkpoint, digest comparison, optional verification.
    pub fn finish(&mut self, their: &Hash, their_blocks: u64, verify: bool) -> Result<DiskResult> {
        ensure!(self.batch.is_empty(), "{}: DiskEnd inside a delta batch", self.name);
        let ours = self.digest.value();
        if ours != *their || self.digest.blocks != their_blocks {
            // Never resume over this: the next pass compares every block.
            self.state.suspect = true;
            self.checkpoint(false)?;
            bail!(
                "{}: digest mismatch: sender {} over {their_blocks} blocks, receiver {} over {} blocks",
                self.name,
                digest::hex(their),
                digest::hex(&ours),
                self.digest.blocks
            );
        }
        self.checkpoint(true)?;
        let verified = if verify { Some(self.verify()?) } else { None };
        log::info!(
            "{}: complete, {} blocks, digest {}, mode {:?}{}",
            self.name,
            self.digest.blocks,
            digest::hex(&ours),
            self.mode,
            match verified {
                Some(true) => ", verified",
                Some(false) => ", VERIFY FAILED",
                None => "",
            }
        );
        Ok(DiskResult {
            target: self.name.clone(),
            digest: ours,
            blocks: self.digest.blocks,
            bytes_written: self.bytes_written,
            verified,
        })
    }

    /// Re-reads every block of the pass from the device and recomputes the digest.
    fn verify(&self) -> Result<bool> {
        self.target.drop_cache();
        let mut runs = self.store.read_runs(self.runs)?;
        runs.extend(self.open_run);
        let mut d = Digest::default();
        let mut buf = Vec::new();
        for (s, e) in runs {
            for (o, l) in digest::blocks(s, e) {
                buf.resize(l as usize, 0);
                self.target.read(o, &mut buf)?;
                d.fold(o, l, &digest::hash(&buf));
            }
        }
        let ok = d.blocks == self.digest.blocks && d.value() == self.digest.value();
        if !ok {
            log::error!("{}: verification failed: the device holds other data than was written", self.name);
        }
        Ok(ok)
    }

    pub fn position(&self) -> u64 {
        self.pos
    }
}

impl Drop for DiskRx {
    /// A session that ends (even by error) lets its checkpoint finish before the next one loads state.
    fn drop(&mut self) {
        if let Err(e) = self.join_sync() {
            log::warn!("{}: last checkpoint failed: {e:#}", self.name);
        }
    }
}
