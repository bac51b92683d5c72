//! `ferry send`: opens the sources read-only (always), analyses their layouts, authenticates
//! the receiver, sends the plan, then streams each disk in the mode the receiver chose (full,
//! resume or delta) and checks the digests.

pub mod continuous;
pub mod control;
pub mod freeze;
pub mod pipeline;
pub mod source;
pub mod stack;

use crate::auth::{self, ClientStream};
use crate::digest::{hex, Digest};
use crate::layout::{self, Layout};
use crate::progress::{Bucket, Progress, Style};
use crate::proto::{self, write_frame, DiskPlan, DiskResult, Mode, Msg};
use anyhow::{bail, Context, Result};
use pipeline::{PieceOut, Pipeline, Work};
use serde::Serialize;
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
    /// Settings a running sender takes from `ferry ctl` (rate, compression, pause); without,
    /// `compress` and `bwlimit_mbit` hold for the whole pass.
    pub knobs: Option<Arc<control::Knobs>>,
    /// Customization hooks sent with a finalizing pass (`--hook run=FILE`, `firstboot=FILE`).
    pub hooks: Vec<ferry_convert::hooks::Hook>,
    /// Keys for the system's LUKS volumes, sent with a finalizing pass (`--luks-key-file`).
    pub luks_keys: Vec<ferry_convert::crypt::Key>,
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
    /// The receiver's report (the appliance's conversion report), a JSON document.
    pub receiver_report: serde_json::Value,
    pub ok: bool,
    /// How consistent this pass's copy is (offline, live, frozen, not-crash-consistent).
    pub consistency: freeze::Consistency,
    /// Mount points frozen during the pass.
    pub frozen: Vec<String>,
    /// Why a `--freeze` pass is not crash-consistent.
    pub consistency_problems: Vec<String>,
}

/// zstd level for the 0..=10 scale (0 = no compression).
pub fn zstd_level(c: u8) -> i32 {
    [0, 1, 2, 3, 5, 7, 9, 12, 15, 17, 19][c.min(10) as usize]
}

pub(crate) struct Conn {
    pub(crate) s: ClientStream,
    pub(crate) wire: u64,
    pub(crate) bucket: Option<Bucket>,
    pub(crate) knobs: Arc<control::Knobs>,
}

/// A paused sender says it is alive this often.
const KEEPALIVE: Duration = Duration::from_secs(20);

impl Conn {
    pub(crate) fn new(s: ClientStream, knobs: Arc<control::Knobs>) -> Conn {
        Conn { s, wire: 0, bucket: None, knobs }
    }

    pub(crate) fn send(&mut self, m: &Msg) -> Result<usize> {
        if self.knobs.paused() {
            self.pause()?;
        }
        let n = write_frame(&mut self.s, m).context("sending to the receiver")?;
        // The limit as it is now (`ferry ctl --bwlimit` changes it while this runs).
        match self.knobs.bwlimit() {
            Some(mbit) => self.bucket.get_or_insert_with(|| Bucket::new(mbit)).set(mbit).take(n),
            None => self.bucket = None,
        }
        self.wire += n as u64;
        Ok(n)
    }

    /// Waits while paused, with a keepalive now and then so the receiver keeps the session.
    fn pause(&mut self) -> Result<()> {
        log::info!("paused (ferry ctl --resume continues)");
        let mut last = Instant::now();
        while self.knobs.paused() {
            if last.elapsed() >= KEEPALIVE {
                write_frame(&mut self.s, &Msg::Keepalive).context("sending a keepalive")?;
                std::io::Write::flush(&mut self.s)?;
                last = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        log::info!("resumed");
        Ok(())
    }
}

pub(crate) fn connect(to: &str) -> Result<TcpStream> {
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

/// One source: its path, target selector, open handle and layout.
pub struct Src {
    pub path: String,
    pub sel: String,
    pub f: Arc<source::Source>,
    pub layout: Layout,
}

pub fn analyse(path: &str, sel: &str) -> Result<Src> {
    let f = source::open(path)?;
    let layout = layout::analyze(&f).with_context(|| format!("analysing {path}"))?;
    if !f.is_direct() {
        log::debug!("{path}: direct I/O refused; reading buffered and dropping its cache");
    }
    Ok(Src { path: path.into(), sel: sel.into(), f: Arc::new(f), layout })
}

fn plans(srcs: &[Src]) -> Vec<DiskPlan> {
    srcs.iter()
        .map(|s| {
            let l = &s.layout;
            let sid = source::source_id(&s.path, l.size);
            DiskPlan {
                source: s.path.clone(),
                source_size: l.size,
                source_id: sid,
                plan_hash: source::plan_hash(&sid, &l.extents),
                last_used: l.last_used,
                extent_bytes: l.extent_bytes,
                target: s.sel.clone(),
                samples: source::samples(&s.f, &l.extents),
            }
        })
        .collect()
}

pub(crate) fn plan_ok(
    c: &mut Conn,
    srcs: &[Src],
    verify: bool,
    dry_run: bool,
) -> Result<Vec<proto::DiskStart>> {
    c.send(&Msg::Plan { disks: plans(srcs), verify, dry_run })?;
    let Msg::PlanOk { disks: starts } = proto::expect(&mut c.s, "PlanOk")? else { unreachable!() };
    anyhow::ensure!(
        starts.len() == srcs.len(),
        "the receiver answered for {} disks, {} planned",
        starts.len(),
        srcs.len()
    );
    Ok(starts)
}

pub fn send(o: &Options) -> Result<Report> {
    anyhow::ensure!(!o.disks.is_empty(), "nothing to send");
    let mut srcs = Vec::new();
    for (path, sel) in &o.disks {
        let s = analyse(path, sel)?;
        for n in &s.layout.notes {
            log::warn!("{path}: {n}");
        }
        srcs.push(s);
    }
    let sys = stack::Sys::system();
    let paths: Vec<String> = o.disks.iter().map(|(p, _)| p.clone()).collect();
    let live = freeze::inspect(&sys, &stack::mounts().unwrap_or_default(), &paths);
    let freezing = o.freeze && o.finalize;
    if !freezing {
        for m in &live.writable {
            log::warn!(
                "{} is mounted read-write on a source: a live copy may be inconsistent; finish with a --freeze pass after stopping services",
                m.point
            );
        }
        for w in &live.invisible {
            log::warn!("{w}");
        }
    }
    let sock = connect(&o.to)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(600)))?;
    let s = auth::client(sock, o.fingerprint.clone())?;
    let knobs = o.knobs.clone().unwrap_or_else(|| control::Knobs::new(o.compress, o.bwlimit_mbit));
    let mut c = Conn::new(s, knobs);
    let targets = auth::client_handshake(&mut c.s, &o.token)?;
    log::info!(
        "receiver authenticated; targets: {}",
        targets.iter().map(|t| format!("{} ({} bytes)", t.name, t.size_bytes)).collect::<Vec<_>>().join(", ")
    );
    // Freeze only once the receiver is authenticated and has accepted the plan; then analyse
    // again (the filesystems may have allocated blocks meanwhile) and send the real plan.
    let mut frozen = None;
    if freezing {
        plan_ok(&mut c, &srcs, o.verify, true)?;
        let fr = freeze::Frozen::freeze(&live);
        if !fr.mountpoints().is_empty() {
            for s in srcs.iter_mut() {
                *s = analyse(&s.path, &s.sel)?;
            }
        }
        frozen = Some(fr);
    }
    let consistency = match &frozen {
        _ if live.is_idle() => freeze::Consistency::Offline,
        Some(f) => f.consistency(),
        None => freeze::Consistency::Live,
    };
    let starts = plan_ok(&mut c, &srcs, o.verify, false)?;
    let mut reports = Vec::new();
    for (i, (src, start)) in srcs.iter().zip(&starts).enumerate() {
        log::info!(
            "{} → {} ({:?}): {} bytes to consider of {}",
            src.path,
            start.target.name,
            start.mode,
            src.layout.extent_bytes,
            src.layout.size
        );
        let r = send_disk(&mut c, o, i as u32, src, start.mode, &start.target.name)?;
        reports.push(r);
    }
    // The data is all on the receiver: thaw before the (possibly long) finalization.
    let frozen_points = frozen.as_ref().map(|f| f.mountpoints()).unwrap_or_default();
    let problems = frozen.as_ref().map(|f| f.problems.clone()).unwrap_or_default();
    drop(frozen);
    if o.finalize {
        for h in &o.hooks {
            c.send(&Msg::Hook { kind: h.kind, name: h.name.clone(), body: h.body.clone().into() })?;
        }
        for k in &o.luks_keys {
            c.send(&Msg::LuksKey { key: k.0.to_vec().into() })?;
        }
    }
    c.send(&Msg::Finish { finalize: o.finalize })?;
    // A finalizing pass waits for the conversion, which can take minutes.
    c.s.sock.set_read_timeout(Some(Duration::from_secs(3600)))?;
    let Msg::Finished { report, ok } = proto::expect(&mut c.s, "Finished")? else { unreachable!() };
    Ok(Report {
        disks: reports,
        wire_bytes: c.wire,
        finalized: o.finalize,
        // JSON text from the receiver; anything else is kept as the text it is.
        receiver_report: serde_json::from_str(&report).unwrap_or(serde_json::Value::String(report)),
        ok,
        consistency,
        frozen: frozen_points,
        consistency_problems: problems,
    })
}

fn send_disk(
    c: &mut Conn,
    o: &Options,
    disk: u32,
    src: &Src,
    mode: Mode,
    target: &str,
) -> Result<DiskReport> {
    let (path, layout) = (src.path.as_str(), &src.layout);
    src.f.refresh();
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
    let mut pipe = Pipeline::start(src.f.clone(), list, disk, c.knobs.clone(), o.workers, work);
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
                    delta_batch(c, disk, &mut batch, &mut digest, &mut rep)?;
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
        delta_batch(c, disk, &mut batch, &mut digest, &mut rep)?;
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
    let level = zstd_level(c.knobs.compress());
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
