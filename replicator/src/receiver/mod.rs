//! The receiving side (the appliance, or `ferry-init receive` on a host): TLS 1.3 with an
//! ephemeral identity, SPAKE2 on the token, plan check, then the disks. Nothing touches a target
//! (or its resume state) before the sender has proven the token and the whole plan has passed.
//!
//! Every connection gets its own thread; one that has not authenticated within
//! [`HANDSHAKE_DEADLINE`] is cut, at most [`MAX_PENDING`] wait at once (the oldest go first), and
//! failed `accept`s are retried: no stranger can stall or end the receiver. One authenticated
//! session runs at a time.

mod disk;
mod plan;
mod session;
pub mod state;
pub mod target;

pub use plan::resolve;

use crate::auth::{Identity, ServerStream};
use crate::proto::{self, write_frame, Msg, TargetInfo};
use anyhow::{Context, Result};
use serde::Serialize;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An unauthenticated connection is cut after this long.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// Most unauthenticated connections waiting at once.
pub const MAX_PENDING: usize = 64;
/// Longest error text kept in the status.
const MAX_ERROR: usize = 512;

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

/// One completed pass, as the receiver saw it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PassRecord {
    /// Unix times (seconds) of the plan and of the end of the data.
    pub started: f64,
    pub ended: f64,
    pub bytes_written: u64,
    /// Each disk's mode (Full, Resume, Delta).
    pub modes: Vec<String>,
    pub finalize: bool,
}

/// Passes kept in the history (the oldest go first).
pub const MAX_PASSES: usize = 100;

/// Seconds since the epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
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
    /// `ferry check` sessions served (they change nothing).
    pub checks: u64,
    /// The last passes (at most [`MAX_PASSES`]), oldest first.
    pub passes: Vec<PassRecord>,
    /// Bytes written to targets by every pass since the receiver started.
    pub bytes_received_total: u64,
    pub finalized: bool,
    pub last_error: Option<String>,
    pub disks: Vec<DiskProgress>,
}

/// Called when a finalizing pass has all its data: returns (ok, report) sent back to the sender.
/// Told the outcome of every connection.
pub type Observer = Box<dyn Fn(&Result<Outcome>) + Send + Sync>;

/// What the finalize hook (the appliance's conversion) made of a finalized pass: whether it
/// succeeded and its report, a JSON document (sent to the sender as JSON text).
#[derive(Debug, Clone, PartialEq)]
pub struct Finalized {
    pub ok: bool,
    pub report: serde_json::Value,
}

/// What the sender hands to the conversion with a finalizing pass.
#[derive(Debug, Default)]
pub struct Handover {
    /// Customization hooks (validated).
    pub hooks: Vec<ferry_convert::hooks::Hook>,
    /// Keys for LUKS volumes, in memory only.
    pub luks_keys: Vec<ferry_convert::crypt::Key>,
}

/// Gets the targets and what the sender handed over.
pub type FinalizeHook = Box<dyn Fn(&[TargetInfo], &Handover) -> Finalized + Send + Sync>;

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
    /// Told the outcome of every session (tests).
    pub observer: Option<Observer>,
    /// How long a peer that failed authentication 5 times in a row is refused.
    pub auth_cooldown: Duration,
    limiter: session::Limiter,
    /// Held by the authenticated session.
    busy: Mutex<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Refused,
    Pass,
    Finalized,
    /// A `ferry check` session: throughput and dry-run plans only, nothing changed.
    Checked,
}

impl RxStatus {
    /// How old the newest complete copy is: seconds since the start of the last completed pass
    /// (what it holds is at least that recent); `None` before the first.
    pub fn rpo_s(&self, now: f64) -> Option<f64> {
        self.passes.last().map(|p| (now - p.started).max(0.0))
    }
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
            observer: None,
            auth_cooldown: Duration::from_secs(30),
            limiter: session::Limiter::default(),
            busy: Mutex::new(()),
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
        listener.set_nonblocking(true).context("making the listener non-blocking")?;
        let done = AtomicBool::new(false);
        let conns: Mutex<Vec<Pending>> = Mutex::new(Vec::new());
        std::thread::scope(|sc| {
            while !done.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((sock, peer)) => self.spawn(sc, sock, peer, &conns, &done),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        sweep(&conns);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => {
                        // EMFILE, ENOBUFS, ECONNABORTED...: wait a little and go on; the
                        // handshake deadline frees the descriptors idle connections hold.
                        log::warn!("receiver: accept failed: {e}; retrying");
                        sweep(&conns);
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
            // Finalized: hang up on whoever is still waiting.
            for p in conns.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                let _ = p.sock.shutdown(Shutdown::Both);
            }
        });
        Ok(())
    }

    /// Serves one connection on its own thread.
    fn spawn<'s>(
        &'s self,
        sc: &'s std::thread::Scope<'s, '_>,
        sock: TcpStream,
        peer: SocketAddr,
        conns: &'s Mutex<Vec<Pending>>,
        done: &'s AtomicBool,
    ) {
        let _ = sock.set_nonblocking(false);
        let authed = Arc::new(AtomicBool::new(false));
        let finished = Arc::new(AtomicBool::new(false));
        if let Ok(c) = sock.try_clone() {
            let mut l = conns.lock().unwrap_or_else(|e| e.into_inner());
            l.push(Pending {
                sock: c,
                since: Instant::now(),
                authed: authed.clone(),
                finished: finished.clone(),
            });
            evict(&mut l);
        }
        let run = move || {
            let r = self.connection(sock, peer, &authed);
            finished.store(true, Ordering::SeqCst);
            if let Some(o) = &self.observer {
                o(&r);
            }
            match r {
                Ok(Outcome::Finalized) => done.store(true, Ordering::SeqCst),
                Ok(_) => {}
                Err(e) => {
                    let msg = proto::sanitize(&format!("{e:#}"), MAX_ERROR);
                    log::warn!("receiver: connection from {peer} ended: {msg}");
                    let was_session = authed.load(Ordering::SeqCst);
                    self.set(|s| {
                        s.last_error = Some(msg);
                        if was_session {
                            s.state = "waiting".into();
                        }
                    });
                }
            }
        };
        // Conversion runs on the session's thread: give it a full-size stack.
        let b = std::thread::Builder::new().name("ferry-rx".into()).stack_size(8 << 20);
        if let Err(e) = b.spawn_scoped(sc, run) {
            log::warn!("receiver: no thread for {peer}: {e}");
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
        let reason = proto::sanitize(&reason, MAX_ERROR);
        log::warn!("receiver: refused: {reason}");
        let _ = write_frame(s, &Msg::Refused { reason: reason.clone() });
        let _ = std::io::Write::flush(s);
        self.set(|st| st.last_error = Some(reason));
        Ok(Outcome::Refused)
    }
}

/// A connection the accept loop watches until it authenticates or ends.
struct Pending {
    sock: TcpStream,
    since: Instant,
    authed: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
}

impl Pending {
    fn waiting(&self) -> bool {
        !self.authed.load(Ordering::SeqCst) && !self.finished.load(Ordering::SeqCst)
    }
}

/// Forgets ended and authenticated connections; cuts those past the handshake deadline.
fn sweep(conns: &Mutex<Vec<Pending>>) {
    let mut l = conns.lock().unwrap_or_else(|e| e.into_inner());
    l.retain(|p| {
        if !p.waiting() {
            return false;
        }
        if p.since.elapsed() >= HANDSHAKE_DEADLINE {
            let _ = p.sock.shutdown(Shutdown::Both);
            return false;
        }
        true
    });
}

/// Cuts the oldest waiting connections beyond [`MAX_PENDING`].
fn evict(l: &mut Vec<Pending>) {
    l.retain(Pending::waiting);
    while l.len() > MAX_PENDING {
        let p = l.remove(0);
        let _ = p.sock.shutdown(Shutdown::Both);
    }
}
