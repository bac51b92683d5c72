//! The sender's data pipeline with bounded memory: one reader thread cuts the extents into
//! pieces (≤ 1 MiB, at absolute piece boundaries and at the resume point) and reads them; worker
//! threads hash every block, find all-zero blocks and compress data runs; the caller receives
//! the results in offset order. At most `2 × workers + 2` pieces are in flight.

use crate::digest::{self, Hash};
use crate::layout::read::ReadAt;
use crate::layout::RangeSet;
use crate::proto::{Msg, PIECE};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct Blk {
    pub off: u64,
    pub len: u32,
    pub hash: Hash,
    pub zero: bool,
}

pub struct PieceOut {
    pub offset: u64,
    pub len: u64,
    pub blocks: Vec<Blk>,
    /// Ready-made messages (full passes), or none when only hashes were wanted.
    pub msgs: Vec<Msg>,
    /// Raw data, kept for delta passes.
    pub data: Option<Vec<u8>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Hash, zero-detect and compress into messages.
    Send,
    /// Hash and keep the data (delta: the receiver decides what is sent).
    Keep,
    /// Hash only (already durable on the receiver).
    HashOnly,
}

/// Pieces of the extents: cut at absolute PIECE boundaries and at `split`.
pub fn pieces(extents: &RangeSet, split: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(s, e) in extents.ranges() {
        let mut cur = s;
        while cur < e {
            let mut next = ((cur / PIECE) + 1) * PIECE;
            if cur < split && split < next {
                next = split;
            }
            let end = next.min(e);
            out.push((cur, end - cur));
            cur = end;
        }
    }
    out
}

/// Builds Zero/Data messages for consecutive blocks of `data` (which starts at `base`).
pub fn messages(disk: u32, base: u64, data: &[u8], blocks: &[Blk], level: i32) -> Result<Vec<Msg>> {
    let mut msgs = Vec::new();
    let mut i = 0;
    while i < blocks.len() {
        let zero = blocks[i].zero;
        let start = blocks[i].off;
        let mut j = i;
        let mut end = start;
        while j < blocks.len() && blocks[j].zero == zero && blocks[j].off == end {
            end += blocks[j].len as u64;
            j += 1;
        }
        if zero {
            msgs.push(Msg::Zero { disk, offset: start, len: end - start });
        } else {
            let raw = &data[(start - base) as usize..(end - base) as usize];
            let (compressed, bytes) = if level > 0 {
                (true, zstd::bulk::compress(raw, level).context("zstd")?)
            } else {
                (false, raw.to_vec())
            };
            // Incompressible data travels raw.
            let (compressed, bytes) = if compressed && bytes.len() >= raw.len() {
                (false, raw.to_vec())
            } else {
                (compressed, bytes)
            };
            msgs.push(Msg::Data {
                disk,
                offset: start,
                raw_len: raw.len() as u32,
                compressed,
                bytes: bytes.into(),
            });
        }
        i = j;
    }
    Ok(msgs)
}

pub fn hash_blocks(offset: u64, data: &[u8]) -> Vec<Blk> {
    let mut at = 0usize;
    digest::blocks(offset, offset + data.len() as u64)
        .map(|(off, len)| {
            let d = &data[at..at + len as usize];
            at += len as usize;
            let zero = digest::is_zero(d);
            let hash = if zero { digest::zero_hash(len) } else { digest::hash(d) };
            Blk { off, len, hash, zero }
        })
        .collect()
}

/// Ordered results of the pipeline.
pub struct Pipeline {
    rx: Receiver<(u64, Result<PieceOut>)>,
    next: u64,
    pending: BTreeMap<u64, Result<PieceOut>>,
    count: u64,
}

impl Pipeline {
    /// `work(offset)` says what to do with the piece at `offset`.
    pub fn start(
        src: Arc<super::source::Source>,
        list: Vec<(u64, u64)>,
        disk: u32,
        knobs: Arc<super::control::Knobs>,
        workers: usize,
        work: impl Fn(u64) -> Work + Send + 'static,
    ) -> Self {
        let workers = workers.max(1);
        let count = list.len() as u64;
        let (job_tx, job_rx) = sync_channel::<(u64, u64, Result<Vec<u8>>, Work)>(workers + 1);
        let (out_tx, out_rx) = sync_channel(workers + 1);
        std::thread::spawn(move || {
            for (seq, (off, len)) in list.into_iter().enumerate() {
                let mut buf = vec![0u8; len as usize];
                let r = src
                    .read_exact_at(&mut buf, off)
                    .map(|_| buf)
                    .with_context(|| format!("reading the source at byte {off}"));
                if job_tx.send((seq as u64, off, r, work(off))).is_err() {
                    return;
                }
            }
        });
        let job_rx = Arc::new(Mutex::new(job_rx));
        for _ in 0..workers {
            let job_rx = job_rx.clone();
            let out_tx = out_tx.clone();
            let knobs = knobs.clone();
            std::thread::spawn(move || loop {
                let job = job_rx.lock().unwrap().recv();
                let Ok((seq, off, data, work)) = job else { return };
                let out = data.and_then(|data| {
                    let blocks = hash_blocks(off, &data);
                    let len = data.len() as u64;
                    Ok(match work {
                        Work::Send => {
                            // The level as it is now: `ferry ctl --compress` changes it mid-pass.
                            let level = super::zstd_level(knobs.compress());
                            let msgs = messages(disk, off, &data, &blocks, level)?;
                            PieceOut { offset: off, len, blocks, msgs, data: None }
                        }
                        Work::Keep => {
                            PieceOut { offset: off, len, blocks, msgs: Vec::new(), data: Some(data) }
                        }
                        Work::HashOnly => PieceOut { offset: off, len, blocks, msgs: Vec::new(), data: None },
                    })
                });
                if out_tx.send((seq, out)).is_err() {
                    return;
                }
            });
        }
        Pipeline { rx: out_rx, next: 0, pending: BTreeMap::new(), count }
    }

    /// The next piece in order, or None at the end.
    pub fn next_piece(&mut self) -> Option<Result<PieceOut>> {
        if self.next >= self.count {
            return None;
        }
        loop {
            if let Some(p) = self.pending.remove(&self.next) {
                self.next += 1;
                return Some(p);
            }
            match self.rx.recv() {
                Ok((seq, p)) => {
                    self.pending.insert(seq, p);
                }
                Err(_) => return Some(Err(anyhow::anyhow!("the read pipeline stopped early"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::BLOCK;

    #[test]
    fn pieces_split_at_boundaries_and_resume_point() {
        let ext = RangeSet::from_vec(vec![(100, PIECE + 200), (3 * PIECE, 3 * PIECE + 10)]);
        assert_eq!(pieces(&ext, 0), vec![(100, PIECE - 100), (PIECE, 200), (3 * PIECE, 10)]);
        assert_eq!(
            pieces(&ext, 5 * BLOCK),
            vec![(100, 5 * BLOCK - 100), (5 * BLOCK, PIECE - 5 * BLOCK), (PIECE, 200), (3 * PIECE, 10)]
        );
    }

    #[test]
    fn zero_runs_become_ranges() {
        let mut data = vec![0u8; 4 * BLOCK as usize];
        data[(2 * BLOCK) as usize] = 7;
        let blocks = hash_blocks(0, &data);
        let m = messages(3, 0, &data, &blocks, 1).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0], Msg::Zero { disk: 3, offset: 0, len: 2 * BLOCK });
        assert!(
            matches!(&m[1], Msg::Data { offset, raw_len, compressed: true, .. } if *offset == 2 * BLOCK && *raw_len == BLOCK as u32)
        );
        assert_eq!(m[2], Msg::Zero { disk: 3, offset: 3 * BLOCK, len: BLOCK });
    }
}
