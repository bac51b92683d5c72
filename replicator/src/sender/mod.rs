//! `ferry send`: opens the sources read-only (always), analyses their layouts, authenticates
//! the receiver, sends the plan, then streams each disk in the mode the receiver chose (full,
//! resume or delta) and checks the digests.

pub mod pipeline;
pub mod source;

use crate::auth::{self, ClientStream, Role};
use crate::digest::{hex, Digest};
use crate::layout::{self, Layout};
use crate::progress::{Bucket, Progress, Style};
use crate::proto::{self, write_frame, DiskPlan, DiskResult, Mode, Msg};
use anyhow::{bail, Context, Result};
use pipeline::{PieceOut, Pipeline, Work};
use serde::Serialize;
use std::fs::File;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const DEFAULT_PORT: u16 = 8703;
/// Delta passes compare this much data per round trip.
const DELTA_BATCH: u64 = 16 << 20;

#[derive(Debug, Clone)]
pub struct Options {
    pub to: String,
    pub token: String,
    /// (source path, target selector; empty = next in order)
    pub disks: Vec<(String, String)>,
    /// 0 = off, 1..=10 fast..strong
    pub compress: u8,
    pub bwlimit_mbit: Option<f64>,
    pub verify: bool,
    pub finalize: bool,
    pub fingerprint: Option<String>,
    pub style: Style,
    pub workers: usize,
    /// Freeze the sources' mounted filesystems during a finalizing pass.
    pub freeze: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskReport {
    pub source: String,
    pub target: String,
    pub mode: String,
    pub source_size: u64,
    pub extent_bytes: u64,
    pub bytes_compared: u64,
    pub bytes_sent: u64,
    pub zero_bytes: u64,
    pub wire_bytes: u64,
    pub seconds: f64,
    pub digest: String,
    pub verified: Option<bool>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub disks: Vec<DiskReport>,
    pub wire_bytes: u64,
    pub finalized: bool,
    pub receiver_report: String,
    pub ok: bool,
}

/// zstd level for the 0..=10 scale (0 = no compression).
pub fn zstd_level(c: u8) -> i32 {
    [0, 1, 2, 3, 5, 7, 9, 12, 15, 17, 19][c.min(10) as usize]
}

struct Conn {
    s: ClientStream,
    wire: u64,
    bucket: Option<Bucket>,
}

impl Conn {
    fn send(&mut self, m: &Msg) -> Result<usize> {
        let n = write_frame(&mut self.s, m).context("sending to the receiver")?;
        if let Some(b) = &mut self.bucket {
            b.take(n);
        }
        self.wire += n as u64;
        Ok(n)
    }
}

fn connect(to: &str) -> Result<TcpStream> {
    let addr = if to.contains(':') { to.to_string() } else { format!("{to}:{DEFAULT_PORT}") };
    let addrs: Vec<_> = addr.to_socket_addrs().with_context(|| format!("resolving {addr}"))?.collect();
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map(anyhow::Error::from).unwrap_or_else(|| anyhow::anyhow!("no address")))
        .with_context(|| format!("connecting to {addr}"))
}

pub fn send(o: &Options) -> Result<Report> {
    anyhow::ensure!(!o.disks.is_empty(), "nothing to send");
    let mut frozen = Vec::new();
    if o.freeze && o.finalize {
        for (path, _) in &o.disks {
            frozen.push(source::freeze(path)?);
        }
    }
    let mut srcs = Vec::new();
    for (path, sel) in &o.disks {
        let f = source::open(path)?;
        let layout = layout::analyze(&f).with_context(|| format!("analysing {path}"))?;
        for n in &layout.notes {
            log::warn!("{path}: {n}");
        }
        if frozen.is_empty() {
            if let Some(w) = source::mounted_warning(path) {
                log::warn!("{w}");
            }
        }
        srcs.push((path.clone(), sel.clone(), Arc::new(f), layout));
    }
    let sock = connect(&o.to)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(600)))?;
    let s = auth::client(sock, o.fingerprint.clone())?;
    let mut c = Conn { s, wire: 0, bucket: o.bwlimit_mbit.map(Bucket::new) };
    let proof = auth::proof(&c.s.conn, &o.token, Role::Sender)?;
    let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    c.send(&Msg::Hello {
        magic: proto::MAGIC,
        version: proto::VERSION,
        proof,
        client: format!("ferry {} on {host}", env!("CARGO_PKG_VERSION")),
    })?;
    let Msg::Welcome { proof, targets } = proto::expect(&mut c.s, "Welcome")? else { unreachable!() };
    if !auth::check(&c.s.conn, &o.token, Role::Receiver, &proof)? {
        bail!("the receiver could not prove it knows the token: wrong token, or a man in the middle; nothing was sent");
    }
    log::info!(
        "receiver authenticated; targets: {}",
        targets.iter().map(|t| format!("{} ({} bytes)", t.name, t.size_bytes)).collect::<Vec<_>>().join(", ")
    );
    let plans: Vec<DiskPlan> = srcs
        .iter()
        .map(|(path, sel, _, l)| {
            let sid = source::source_id(path, l.size);
            DiskPlan {
                source: path.clone(),
                source_size: l.size,
                source_id: sid,
                plan_hash: source::plan_hash(&sid, &l.extents),
                last_used: l.last_used,
                extent_bytes: l.extent_bytes,
                target: sel.clone(),
            }
        })
        .collect();
    c.send(&Msg::Plan { disks: plans, verify: o.verify })?;
    let Msg::PlanOk { disks: starts } = proto::expect(&mut c.s, "PlanOk")? else { unreachable!() };
    anyhow::ensure!(
        starts.len() == srcs.len(),
        "the receiver answered for {} disks, {} planned",
        starts.len(),
        srcs.len()
    );
    let mut reports = Vec::new();
    for (i, ((path, _, f, layout), start)) in srcs.iter().zip(&starts).enumerate() {
        log::info!(
            "{path} → {} ({:?}): {} bytes to consider of {}",
            start.target.name,
            start.mode,
            layout.extent_bytes,
            layout.size
        );
        let r = send_disk(&mut c, o, i as u32, path, f.clone(), layout, start.mode, &start.target.name)?;
        reports.push(r);
    }
    // The data is all on the receiver: thaw before the (possibly long) finalization.
    drop(frozen);
    c.send(&Msg::Finish { finalize: o.finalize })?;
    // A finalizing pass waits for the conversion, which can take minutes.
    c.s.sock.set_read_timeout(Some(Duration::from_secs(3600)))?;
    let Msg::Finished { report, ok } = proto::expect(&mut c.s, "Finished")? else { unreachable!() };
    Ok(Report { disks: reports, wire_bytes: c.wire, finalized: o.finalize, receiver_report: report, ok })
}

#[allow(clippy::too_many_arguments)]
fn send_disk(
    c: &mut Conn,
    o: &Options,
    disk: u32,
    path: &str,
    f: Arc<File>,
    layout: &Layout,
    mode: Mode,
    target: &str,
) -> Result<DiskReport> {
    let t0 = Instant::now();
    let wire0 = c.wire;
    let from = match mode {
        Mode::Resume { from } => from,
        _ => 0,
    };
    let list = pipeline::pieces(&layout.extents, from);
    let work = move |off: u64| match mode {
        Mode::Full => Work::Send,
        Mode::Resume { from } if off < from => Work::HashOnly,
        Mode::Resume { .. } => Work::Send,
        Mode::Delta => Work::Keep,
    };
    let level = zstd_level(o.compress);
    let mut pipe = Pipeline::start(f, list, disk, level, o.workers, work);
    let mut prog = Progress::new(o.style, &format!("{path} → {target}"), layout.extent_bytes);
    let mut digest = Digest::default();
    let mut rep = DiskReport {
        source: path.into(),
        target: target.into(),
        mode: format!("{mode:?}"),
        source_size: layout.size,
        extent_bytes: layout.extent_bytes,
        bytes_compared: 0,
        bytes_sent: 0,
        zero_bytes: 0,
        wire_bytes: 0,
        seconds: 0.0,
        digest: String::new(),
        verified: None,
        notes: layout.notes.clone(),
    };
    let mut pending_zero: Option<(u64, u64)> = None;
    let mut batch: Vec<PieceOut> = Vec::new();
    let mut batch_bytes = 0u64;
    while let Some(p) = pipe.next_piece() {
        let p = p?;
        prog.done += p.len;
        match mode {
            Mode::Delta => {
                batch_bytes += p.len;
                batch.push(p);
                if batch_bytes >= DELTA_BATCH {
                    delta_batch(c, disk, &mut batch, level, &mut digest, &mut rep)?;
                    batch_bytes = 0;
                }
            }
            _ => {
                for b in &p.blocks {
                    digest.fold(b.off, b.len, &b.hash);
                }
                for m in p.msgs {
                    stream_msg(c, m, &mut pending_zero, &mut rep)?;
                }
            }
        }
        prog.wire = c.wire - wire0;
        prog.tick();
    }
    if !batch.is_empty() {
        delta_batch(c, disk, &mut batch, level, &mut digest, &mut rep)?;
    }
    if let Some((off, len)) = pending_zero.take() {
        c.send(&Msg::Zero { disk, offset: off, len })?;
    }
    let ours = digest.value();
    c.send(&Msg::DiskEnd { disk, digest: ours, blocks: digest.blocks })?;
    prog.wire = c.wire - wire0;
    prog.finish();
    let Msg::DiskDone { result } = proto::expect(&mut c.s, "DiskDone")? else { unreachable!() };
    let DiskResult { digest: theirs, verified, .. } = result;
    anyhow::ensure!(
        theirs == ours,
        "{path}: digest mismatch: ours {}, receiver {}",
        hex(&ours),
        hex(&theirs)
    );
    if verified == Some(false) {
        bail!("{path}: the receiver's verification re-read found different data on {target}");
    }
    rep.digest = hex(&ours);
    rep.verified = verified;
    rep.wire_bytes = c.wire - wire0;
    rep.seconds = t0.elapsed().as_secs_f64();
    Ok(rep)
}

/// Sends a message, merging adjacent zero ranges into one.
fn stream_msg(c: &mut Conn, m: Msg, pending: &mut Option<(u64, u64)>, rep: &mut DiskReport) -> Result<()> {
    match m {
        Msg::Zero { disk, offset, len } => {
            rep.zero_bytes += len;
            match pending {
                Some((o, l)) if *o + *l == offset => *l += len,
                _ => {
                    if let Some((o, l)) = pending.replace((offset, len)) {
                        c.send(&Msg::Zero { disk, offset: o, len: l })?;
                    }
                }
            }
        }
        m => {
            if let Some((o, l)) = pending.take() {
                let disk = match &m {
                    Msg::Data { disk, .. } => *disk,
                    _ => 0,
                };
                c.send(&Msg::Zero { disk, offset: o, len: l })?;
            }
            if let Msg::Data { raw_len, .. } = &m {
                rep.bytes_sent += *raw_len as u64;
            }
            c.send(&m)?;
        }
    }
    Ok(())
}

/// Delta: ask the receiver for its block hashes, send only the blocks that differ.
fn delta_batch(
    c: &mut Conn,
    disk: u32,
    batch: &mut Vec<PieceOut>,
    level: i32,
    digest: &mut Digest,
    rep: &mut DiskReport,
) -> Result<()> {
    let blocks: Vec<(u64, u32)> =
        batch.iter().flat_map(|p| p.blocks.iter().map(|b| (b.off, b.len))).collect();
    c.send(&Msg::HashQuery { disk, blocks: blocks.clone() })?;
    let Msg::Hashes { hashes } = proto::expect(&mut c.s, "Hashes")? else { unreachable!() };
    anyhow::ensure!(
        hashes.len() == blocks.len(),
        "receiver returned {} hashes for {} blocks",
        hashes.len(),
        blocks.len()
    );
    let mut k = 0;
    let mut pending = None;
    for p in batch.drain(..) {
        let data = p.data.as_deref().context("delta piece without data")?;
        let differ: Vec<_> = p
            .blocks
            .iter()
            .filter(|b| {
                let same = hashes[k] == b.hash;
                k += 1;
                !same
            })
            .cloned()
            .collect();
        for b in &p.blocks {
            digest.fold(b.off, b.len, &b.hash);
            rep.bytes_compared += b.len as u64;
        }
        for m in pipeline::messages(disk, p.offset, data, &differ, level)? {
            stream_msg(c, m, &mut pending, rep)?;
        }
    }
    if let Some((o, l)) = pending.take() {
        c.send(&Msg::Zero { disk, offset: o, len: l })?;
    }
    c.send(&Msg::Commit { disk })?;
    Ok(())
}
