//! Receiving one disk: applies Data/Zero in offset order, folds block hashes into the digest and
//! the hash log, answers delta HashQuery batches, checkpoints, and verifies at the end.

use super::state::{State, Store};
use super::target::Target;
use crate::digest::{self, Digest, Hash, RECORD};
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
}

impl DiskRx {
    pub fn new(
        target: Target,
        name: String,
        store: Store,
        state: State,
        mode: Mode,
        source_size: u64,
        checkpoint_bytes: u64,
    ) -> Result<Self> {
        let mut store = store;
        let (digest, pos) = match mode {
            Mode::Resume { from } => (store.open_log(state.blocks)?, from),
            _ => (store.open_log(0)?, 0),
        };
        Ok(DiskRx {
            target,
            name,
            store,
            state,
            digest,
            mode,
            pos,
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
        self.digest.fold(offset, len, h);
        self.store.append(&digest::record(offset, len, h))?;
        self.pos = offset + len as u64;
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
            self.state.durable = self.pos;
            self.state.blocks = self.digest.blocks;
            self.state.complete = false;
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

    fn join_sync(&mut self) -> Result<()> {
        match self.syncing.take() {
            Some(h) => h.join().map_err(|_| anyhow::anyhow!("checkpoint thread panicked"))?,
            None => Ok(()),
        }
    }

    fn checkpoint(&mut self, complete: bool) -> Result<()> {
        self.join_sync()?;
        self.target.sync()?;
        self.state.durable = self.pos;
        self.state.blocks = self.digest.blocks;
        self.state.complete = complete;
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

    /// Re-reads every block named in the hash log from the device and compares hashes.
    fn verify(&self) -> Result<bool> {
        use std::io::Read;
        self.target.drop_cache();
        let log = std::fs::File::open(self.store.log_path()).context("reopening the hash log")?;
        let mut r = std::io::BufReader::new(log);
        let mut rec = [0u8; RECORD];
        let mut buf = Vec::new();
        while r.read_exact(&mut rec).is_ok() {
            let (o, l, h) = digest::parse_record(&rec);
            buf.resize(l as usize, 0);
            self.target.read(o, &mut buf)?;
            if digest::hash(&buf) != h {
                log::error!("{}: verification failed at byte {o}", self.name);
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Records the start of a new (non-resumed) pass before any write.
    pub fn reset_state(&mut self) -> Result<()> {
        self.state.durable = 0;
        self.state.blocks = 0;
        self.state.complete = false;
        self.store.save(&self.state)
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
