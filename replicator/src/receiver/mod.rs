//! The receiving side (the appliance, or `ferry-init receive` on a host): TLS with an ephemeral
//! identity, token proof both ways, plan check, then the disks. Nothing touches a target before
//! the sender has proven the token and every target has passed its checks.

mod disk;
pub mod state;
pub mod target;

use crate::auth::{self, Identity, Role, ServerStream};
use crate::digest::hex;
use crate::proto::{self, write_frame, DiskPlan, DiskStart, Mode, Msg, TargetInfo};
use anyhow::{bail, Context, Result};
use disk::DiskRx;
use serde::Serialize;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use target::Target;

/// A place data may be written: a path plus how the sender may name it.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    pub path: PathBuf,
    pub name: String,
    pub serial: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DiskProgress {
    pub source: String,
    pub target: String,
    pub mode: String,
    pub total_bytes: u64,
    pub position: u64,
    pub bytes_written: u64,
    pub state: String,
    pub digest: String,
    pub verified: Option<bool>,
}

/// What the receiver publishes (the appliance puts it into /status).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RxStatus {
    pub listen: String,
    pub fingerprint: String,
    pub state: String,
    pub sessions: u64,
    pub failed_auth: u64,
    pub passes_completed: u64,
    pub finalized: bool,
    pub last_error: Option<String>,
    pub disks: Vec<DiskProgress>,
}

/// Called when a finalizing pass has all its data: returns (ok, report) sent back to the sender.
pub type FinalizeHook = Box<dyn Fn(&[TargetInfo]) -> (bool, String) + Send>;

pub struct Receiver {
    pub token: String,
    pub targets: Vec<TargetSpec>,
    pub state_dir: PathBuf,
    pub status: Arc<Mutex<RxStatus>>,
    pub identity: Identity,
    pub finalize: Option<FinalizeHook>,
    /// Bytes between checkpoints (the most a resumed pass resends).
    pub checkpoint_bytes: u64,
    /// Re-lists the targets at each session (the appliance: disks attached after boot).
    pub discover: Option<Box<dyn Fn() -> Vec<TargetSpec> + Send + Sync>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Refused,
    Pass,
    Finalized,
}

impl Receiver {
    pub fn new(token: String, targets: Vec<TargetSpec>, state_dir: PathBuf) -> Result<Self> {
        anyhow::ensure!(token.len() >= 8, "the token must have at least 8 characters");
        let identity = Identity::ephemeral()?;
        let status = Arc::new(Mutex::new(RxStatus {
            fingerprint: identity.fingerprint.clone(),
            state: "waiting".into(),
            ..Default::default()
        }));
        Ok(Receiver {
            token,
            targets,
            state_dir,
            status,
            identity,
            finalize: None,
            checkpoint_bytes: disk::CHECKPOINT_BYTES,
            discover: None,
        })
    }

    fn set(&self, f: impl FnOnce(&mut RxStatus)) {
        f(&mut self.status.lock().unwrap());
    }

    /// Accepts senders until a finalizing pass completes.
    pub fn serve(&self, listener: &TcpListener) -> Result<()> {
        let addr = listener.local_addr()?;
        self.set(|s| s.listen = addr.to_string());
        log::info!("receiver: listening on {addr}, TLS fingerprint {}", self.identity.fingerprint);
        loop {
            let (sock, peer) = listener.accept().context("accepting a sender")?;
            match self.session(sock, peer) {
                Ok(Outcome::Finalized) => return Ok(()),
                Ok(_) => {}
                Err(e) => {
                    log::warn!("receiver: session from {peer} ended: {e:#}");
                    self.set(|s| {
                        s.last_error = Some(format!("{e:#}"));
                        s.state = "waiting".into();
                    });
                }
            }
        }
    }

    fn specs(&self) -> Vec<TargetSpec> {
        match &self.discover {
            Some(d) => d(),
            None => self.targets.clone(),
        }
    }

    fn targets_info(specs: &[TargetSpec]) -> Vec<TargetInfo> {
        specs
            .iter()
            .map(|t| TargetInfo {
                name: t.name.clone(),
                path: t.path.display().to_string(),
                size_bytes: std::fs::File::open(&t.path)
                    .ok()
                    .and_then(|f| crate::layout::size_of(&f).ok())
                    .unwrap_or(0),
                serial: t.serial.clone(),
            })
            .collect()
    }

    fn refuse(&self, s: &mut ServerStream, reason: String) -> Result<Outcome> {
        log::warn!("receiver: refused: {reason}");
        let _ = write_frame(s, &Msg::Refused { reason: reason.clone() });
        let _ = std::io::Write::flush(s);
        self.set(|st| st.last_error = Some(reason));
        Ok(Outcome::Refused)
    }

    pub fn session(&self, sock: TcpStream, peer: SocketAddr) -> Result<Outcome> {
        sock.set_read_timeout(Some(Duration::from_secs(300)))?;
        sock.set_nodelay(true)?;
        self.set(|s| s.sessions += 1);
        let mut s = auth::server(sock, &self.identity).with_context(|| format!("TLS with {peer}"))?;
        let Msg::Hello { magic, version, proof, client } = proto::expect(&mut s, "Hello")? else {
            unreachable!()
        };
        if magic != proto::MAGIC || version != proto::VERSION {
            return self.refuse(
                &mut s,
                format!("protocol version {version} from {peer}; this receiver speaks {}", proto::VERSION),
            );
        }
        if !auth::check(&s.conn, &self.token, Role::Sender, &proof)? {
            self.set(|st| st.failed_auth += 1);
            return self.refuse(
                &mut s,
                format!("authentication failed for {peer} (wrong token, or a man in the middle)"),
            );
        }
        log::info!("receiver: {client} at {peer} authenticated");
        let specs = self.specs();
        let targets = Self::targets_info(&specs);
        let mine = auth::proof(&s.conn, &self.token, Role::Receiver)?;
        write_frame(&mut s, &Msg::Welcome { proof: mine, targets: targets.clone() })?;
        let Msg::Plan { disks, verify } = proto::expect(&mut s, "Plan")? else { unreachable!() };
        let (mut rx, starts) = match self.check_plan(&disks, &specs, &targets) {
            Ok(x) => x,
            Err(e) => return self.refuse(&mut s, format!("{e:#}")),
        };
        self.set(|st| {
            st.state = "receiving".into();
            st.disks = disks
                .iter()
                .zip(&starts)
                .map(|(d, st)| DiskProgress {
                    source: d.source.clone(),
                    target: st.target.name.clone(),
                    mode: format!("{:?}", st.mode),
                    total_bytes: d.extent_bytes,
                    state: "pending".into(),
                    ..Default::default()
                })
                .collect();
        });
        write_frame(&mut s, &Msg::PlanOk { disks: starts.clone() })?;
        let finalize = self.stream(&mut s, &mut rx, verify)?;
        // Close the targets (and their exclusive claims) before conversion mounts them.
        drop(rx);
        self.set(|st| st.passes_completed += 1);
        let (ok, report) = if finalize {
            self.set(|st| st.state = "finalizing".into());
            match &self.finalize {
                Some(h) => h(&starts.iter().map(|d| d.target.clone()).collect::<Vec<_>>()),
                None => (true, "data complete".to_string()),
            }
        } else {
            (true, "pass complete; waiting for more passes".to_string())
        };
        self.set(|st| {
            st.state = if finalize { "finalized".into() } else { "waiting".into() };
            st.finalized = finalize;
        });
        write_frame(&mut s, &Msg::Finished { report, ok })?;
        std::io::Write::flush(&mut s)?;
        s.conn.send_close_notify();
        let _ = std::io::Write::flush(&mut s);
        Ok(if finalize { Outcome::Finalized } else { Outcome::Pass })
    }

    fn stream(&self, s: &mut ServerStream, rx: &mut [DiskRx], verify: bool) -> Result<bool> {
        let disk_of = |d: u32, rx: &mut [DiskRx]| -> Result<usize> {
            let i = d as usize;
            if i >= rx.len() {
                bail!("message for disk {d}, but the plan has {}", rx.len());
            }
            Ok(i)
        };
        let mut last_publish = std::time::Instant::now();
        loop {
            let m = proto::recv(s)?;
            match m {
                Msg::Data { disk, offset, raw_len, compressed, bytes } => {
                    let i = disk_of(disk, rx)?;
                    let raw = if compressed {
                        let v = zstd::bulk::decompress(&bytes, raw_len as usize)
                            .with_context(|| format!("decompressing data at {offset}"))?;
                        anyhow::ensure!(
                            v.len() == raw_len as usize,
                            "data at {offset}: {} bytes, header says {raw_len}",
                            v.len()
                        );
                        v
                    } else {
                        anyhow::ensure!(bytes.len() == raw_len as usize, "data at {offset}: length mismatch");
                        bytes.into_vec()
                    };
                    rx[i].data(offset, &raw)?;
                    rx[i].maybe_checkpoint()?;
                }
                Msg::Zero { disk, offset, len } => {
                    let i = disk_of(disk, rx)?;
                    rx[i].zero(offset, len)?;
                    rx[i].maybe_checkpoint()?;
                }
                Msg::HashQuery { disk, blocks } => {
                    let i = disk_of(disk, rx)?;
                    let hashes = rx[i].query(&blocks)?;
                    write_frame(s, &Msg::Hashes { hashes })?;
                }
                Msg::Commit { disk } => {
                    let i = disk_of(disk, rx)?;
                    rx[i].commit()?;
                    rx[i].maybe_checkpoint()?;
                }
                Msg::DiskEnd { disk, digest, blocks } => {
                    let i = disk_of(disk, rx)?;
                    let result = rx[i].finish(&digest, blocks, verify)?;
                    self.set(|st| {
                        let d = &mut st.disks[i];
                        d.state = "complete".into();
                        d.position = d.total_bytes;
                        d.bytes_written = result.bytes_written;
                        d.digest = hex(&result.digest);
                        d.verified = result.verified;
                    });
                    write_frame(s, &Msg::DiskDone { result })?;
                }
                Msg::Finish { finalize } => return Ok(finalize),
                other => bail!("protocol error: unexpected {} during the transfer", other.kind()),
            }
            if last_publish.elapsed() >= Duration::from_millis(500) {
                last_publish = std::time::Instant::now();
                self.set(|st| {
                    for (d, r) in st.disks.iter_mut().zip(rx.iter()) {
                        d.position = r.position();
                        d.bytes_written = r.bytes_written;
                        if d.state == "pending" && r.position() > 0 {
                            d.state = "receiving".into();
                        }
                    }
                });
            }
        }
    }

    /// Resolves and checks every target before anything is written.
    fn check_plan(
        &self,
        disks: &[DiskPlan],
        specs: &[TargetSpec],
        targets: &[TargetInfo],
    ) -> Result<(Vec<DiskRx>, Vec<DiskStart>)> {
        anyhow::ensure!(!disks.is_empty(), "the plan names no disk");
        let mut used = Vec::new();
        let mut next = 0usize;
        let mut chosen = Vec::new();
        for d in disks {
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
            anyhow::ensure!(!used.contains(&idx), "target {} is named twice in the plan", t.name);
            used.push(idx);
            chosen.push((d, idx));
        }
        let mut rx = Vec::new();
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
            let store = state::Store::new(&self.state_dir, &info.name)?;
            let prev = store.load();
            let sid = hex(&d.source_id);
            let ph = hex(&d.plan_hash);
            let mode = match &prev {
                Some(p) if p.source_id == sid && p.plan_hash == ph && !p.complete => {
                    Mode::Resume { from: p.durable }
                }
                Some(p) if p.source_id == sid => Mode::Delta,
                _ => Mode::Full,
            };
            let mut st = match (&mode, prev) {
                (Mode::Resume { .. }, Some(p)) => p,
                _ => state::State { source_id: sid, plan_hash: ph, ..Default::default() },
            };
            st.complete = false;
            let r = DiskRx::new(
                target,
                info.name.clone(),
                store,
                st.clone(),
                mode,
                d.source_size,
                self.checkpoint_bytes,
            )?;
            log::info!("receiver: {} → {} ({:?})", d.source, info.name, mode);
            rx.push(r);
            starts.push(DiskStart { target: info.clone(), mode });
        }
        // Every target passed: only now record that new passes begin.
        for (r, st) in rx.iter_mut().zip(&starts) {
            if !matches!(st.mode, Mode::Resume { .. }) {
                r.reset_state()?;
            }
        }
        Ok((rx, starts))
    }
}

fn names(t: &[TargetInfo]) -> String {
    t.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// A target named by name (`vda`), serial, or index (`#0`).
pub fn resolve(sel: &str, targets: &[TargetInfo]) -> Result<usize> {
    if let Some(n) = sel.strip_prefix('#') {
        let i: usize = n.parse().with_context(|| format!("target index {sel:?} is not a number"))?;
        anyhow::ensure!(i < targets.len(), "target index {sel} is out of range ({} targets)", targets.len());
        return Ok(i);
    }
    targets
        .iter()
        .position(|t| t.name == sel || (!t.serial.is_empty() && t.serial == sel) || t.path == sel)
        .with_context(|| format!("no target named {sel:?} (targets: {})", names(targets)))
}
