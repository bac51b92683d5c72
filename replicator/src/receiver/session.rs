//! One connection on the receiving side: the TLS handshake, SPAKE2 on the token (with failed
//! attempts rate-limited per peer address), the plan (dry runs first, changing nothing), then the
//! transfer, where every message is bounded by the protocol's own sizes and order.

use super::disk::DiskRx;
use super::{DiskProgress, Outcome, Receiver};
use crate::auth::{self, Pake, Role, ServerStream};
use crate::digest::hex;
use crate::proto::{self, write_frame, Msg, BLOCK, MAX_PREAUTH_FRAME, PIECE};
use anyhow::{bail, ensure, Context, Result};
use ferry_convert::hooks::Hook;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::{Duration, Instant};

/// Failed authentications in a row after which a peer address must wait.
pub const MAX_FAILURES: u32 = 5;
/// How long an authenticated sender waits for the session before it to end.
pub const BUSY_WAIT: Duration = Duration::from_secs(30);
/// Peer addresses remembered at most (the oldest are forgotten first).
const MAX_PEERS: usize = 4096;

/// Failed authentications per peer address.
#[derive(Default)]
pub struct Limiter(Mutex<HashMap<IpAddr, (u32, Instant)>>);

impl Limiter {
    /// How long `ip` must still wait, if it is locked out.
    fn locked(&self, ip: IpAddr, cooldown: Duration) -> Option<Duration> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let &(n, last) = m.get(&ip)?;
        if n < MAX_FAILURES {
            return None;
        }
        match cooldown.checked_sub(last.elapsed()) {
            Some(left) if !left.is_zero() => Some(left),
            _ => {
                m.remove(&ip);
                None
            }
        }
    }

    fn failed(&self, ip: IpAddr) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_PEERS && !m.contains_key(&ip) {
            if let Some(oldest) = m.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k) {
                m.remove(&oldest);
            }
        }
        let e = m.entry(ip).or_insert((0, Instant::now()));
        *e = (e.0.saturating_add(1), Instant::now());
    }

    fn succeeded(&self, ip: IpAddr) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&ip);
    }
}

/// Longest a check session may send throughput data: it holds the one session slot.
pub const MAX_SINK_TIME: Duration = Duration::from_secs(150);

/// A `ferry check` throughput test: data decoded like `Data` and dropped.
#[derive(Default)]
struct Sink {
    raw: u64,
    wire: u64,
}

impl Sink {
    fn take(&mut self, raw_len: u32, compressed: bool, bytes: &[u8], since: Instant) -> Result<()> {
        ensure!(
            since.elapsed() <= MAX_SINK_TIME,
            "a check session may send throughput data for at most {} s",
            MAX_SINK_TIME.as_secs()
        );
        ensure!(
            raw_len as u64 <= PIECE && bytes.len() as u64 <= PIECE,
            "protocol error: throughput data of {raw_len} bytes ({} on the wire); a piece is at most {PIECE} bytes",
            bytes.len()
        );
        let n = if compressed {
            zstd::bulk::decompress(bytes, raw_len as usize).context("decompressing throughput data")?.len()
        } else {
            bytes.len()
        };
        ensure!(n == raw_len as usize, "throughput data: {n} bytes, header says {raw_len}");
        self.raw += n as u64;
        self.wire += bytes.len() as u64;
        Ok(())
    }

    fn totals(self) -> (u64, u64) {
        (self.raw, self.wire)
    }
}

impl Receiver {
    /// Serves one connection to its end. `authed` is set once the peer has proved the token.
    pub(super) fn connection(
        &self,
        sock: TcpStream,
        peer: SocketAddr,
        authed: &AtomicBool,
    ) -> Result<Outcome> {
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(super::HANDSHAKE_DEADLINE))?;
        sock.set_write_timeout(Some(super::HANDSHAKE_DEADLINE))?;
        let mut s = auth::server(sock, &self.identity).with_context(|| format!("TLS with {peer}"))?;
        let Msg::Hello { magic, version, pake, client } =
            proto::expect_max(&mut s, "Hello", MAX_PREAUTH_FRAME)?
        else {
            unreachable!()
        };
        if magic != proto::MAGIC || version != proto::VERSION {
            return self.refuse(
                &mut s,
                format!("protocol version {version} from {peer}; this receiver speaks {}", proto::VERSION),
            );
        }
        if let Some(left) = self.limiter.locked(peer.ip(), self.auth_cooldown) {
            return self.refuse(
                &mut s,
                format!(
                    "too many failed authentications from {}; try again in {} s",
                    peer.ip(),
                    left.as_secs() + 1
                ),
            );
        }
        let (mine, msg) = Pake::start(&s.conn, &self.token, Role::Receiver)?;
        write_frame(&mut s, &Msg::Challenge { pake: msg.into() })?;
        std::io::Write::flush(&mut s)?;
        let Msg::Proof { mac } = proto::expect_max(&mut s, "Proof", MAX_PREAUTH_FRAME)? else {
            unreachable!()
        };
        let key = match mine.finish(&pake) {
            Ok(k) if auth::confirmed(&k, Role::Sender, &mac) => k,
            _ => {
                self.limiter.failed(peer.ip());
                self.set(|st| st.failed_auth += 1);
                return self.refuse(
                    &mut s,
                    format!("authentication failed for {peer} (wrong token, or a man in the middle)"),
                );
            }
        };
        self.limiter.succeeded(peer.ip());
        authed.store(true, Ordering::SeqCst);
        // One session at a time. A sender that re-runs right after an interruption finds the
        // old session still ending (its peer gone, a checkpoint syncing): wait for it a while.
        let waited = Instant::now();
        let _one = loop {
            match self.busy.try_lock() {
                Ok(g) => break g,
                Err(TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(TryLockError::WouldBlock) if waited.elapsed() < BUSY_WAIT => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(TryLockError::WouldBlock) => {
                    return self.refuse(&mut s, "another sender is connected; one pass at a time".into())
                }
            }
        };
        s.sock.set_read_timeout(Some(Duration::from_secs(300)))?;
        s.sock.set_write_timeout(Some(Duration::from_secs(300)))?;
        self.set(|st| st.sessions += 1);
        log::info!("receiver: {} at {peer} authenticated", proto::sanitize(&client, 128));
        self.session(&mut s, &key)
    }

    /// An authenticated session: targets, plan, data, and the end of the pass.
    fn session(&self, s: &mut ServerStream, key: &[u8]) -> Result<Outcome> {
        let specs = self.specs();
        let targets = Self::targets_info(&specs);
        write_frame(
            s,
            &Msg::Welcome { mac: auth::confirmation(key, Role::Receiver), targets: targets.clone() },
        )?;
        let mut sink = Sink::default();
        let since = Instant::now();
        let (prepared, starts, disks, verify) = loop {
            let (disks, verify, dry_run) = match proto::recv(s)? {
                Msg::Plan { disks, verify, dry_run } => (disks, verify, dry_run),
                Msg::Sink { raw_len, compressed, bytes } => {
                    sink.take(raw_len, compressed, &bytes, since)?;
                    continue;
                }
                Msg::SinkEnd => {
                    let (raw_bytes, wire_bytes) = std::mem::take(&mut sink).totals();
                    write_frame(s, &Msg::SinkDone { raw_bytes, wire_bytes })?;
                    std::io::Write::flush(s)?;
                    continue;
                }
                Msg::Keepalive => continue,
                Msg::Bye => {
                    self.set(|st| st.checks += 1);
                    log::info!("receiver: a `ferry check` session ended; nothing changed");
                    return Ok(Outcome::Checked);
                }
                other => bail!("protocol error: expected Plan, got {}", other.kind()),
            };
            let (prepared, starts) = match self.check_plan(&disks, &specs, &targets) {
                Ok(x) => x,
                Err(e) => return self.refuse(s, format!("{e:#}")),
            };
            if !dry_run {
                break (prepared, starts, disks, verify);
            }
            // Nothing was opened for writing or recorded: the real plan follows.
            drop(prepared);
            write_frame(s, &Msg::PlanOk { disks: starts })?;
        };
        let mut rx = self.begin(prepared)?;
        self.set(|st| {
            st.state = "receiving".into();
            st.disks = disks
                .iter()
                .zip(&starts)
                .map(|(d, st)| DiskProgress {
                    source: proto::sanitize(&d.source, 256),
                    target: st.target.name.clone(),
                    mode: format!("{:?}", st.mode),
                    total_bytes: d.extent_bytes,
                    state: "pending".into(),
                    ..Default::default()
                })
                .collect();
        });
        write_frame(s, &Msg::PlanOk { disks: starts.clone() })?;
        let started = super::unix_now();
        let (finalize, handover) = self.stream(s, &mut rx, verify)?;
        let written: u64 = rx.iter().map(|r| r.bytes_written).sum();
        // Close the targets (and their exclusive claims) before conversion mounts them.
        drop(rx);
        let record = super::PassRecord {
            started,
            ended: super::unix_now(),
            bytes_written: written,
            modes: starts
                .iter()
                .map(|d| match d.mode {
                    proto::Mode::Full => "Full".into(),
                    proto::Mode::Resume { .. } => "Resume".into(),
                    proto::Mode::Delta => "Delta".into(),
                })
                .collect(),
            finalize,
        };
        self.set(|st| {
            st.passes_completed += 1;
            st.bytes_received_total += written;
            if st.passes.len() >= super::MAX_PASSES {
                st.passes.remove(0);
            }
            st.passes.push(record);
        });
        let note = |t: &str| super::Finalized { ok: true, report: serde_json::json!({ "note": t }) };
        let done = if finalize {
            self.set(|st| st.state = "finalizing".into());
            match &self.finalize {
                Some(h) => h(&starts.iter().map(|d| d.target.clone()).collect::<Vec<_>>(), &handover),
                None => note("data complete"),
            }
        } else {
            note("pass complete; waiting for more passes")
        };
        let (ok, report) = (done.ok, serde_json::to_string(&done.report).unwrap_or_default());
        self.set(|st| {
            st.state = if finalize { "finalized".into() } else { "waiting".into() };
            st.finalized = finalize;
        });
        write_frame(s, &Msg::Finished { report, ok })?;
        std::io::Write::flush(s)?;
        s.conn.send_close_notify();
        let _ = std::io::Write::flush(s);
        Ok(if finalize { Outcome::Finalized } else { Outcome::Pass })
    }

    /// The transfer to its `Finish`: whether to finalize, and what was sent for the conversion.
    fn stream(
        &self,
        s: &mut ServerStream,
        rx: &mut [DiskRx],
        verify: bool,
    ) -> Result<(bool, super::Handover)> {
        // Each disk ends once; nothing may arrive for it afterwards, and Finish only after all.
        let mut ended = vec![false; rx.len()];
        let mut hooks: Vec<Hook> = Vec::new();
        let mut luks_keys = Vec::new();
        let disk_of = |d: u32, ended: &[bool]| -> Result<usize> {
            let i = d as usize;
            if i >= ended.len() {
                bail!("message for disk {d}, but the plan has {}", ended.len());
            }
            ensure!(!ended[i], "protocol error: a message for disk {d} after its DiskEnd");
            Ok(i)
        };
        let mut last_publish = std::time::Instant::now();
        loop {
            let m = proto::recv(s)?;
            match m {
                Msg::Data { disk, offset, raw_len, compressed, bytes } => {
                    let i = disk_of(disk, &ended)?;
                    // Bounded before any allocation: a frame never carries more than a piece.
                    ensure!(
                        raw_len as u64 <= PIECE && bytes.len() as u64 <= PIECE,
                        "protocol error: data at {offset} of {raw_len} bytes ({} on the wire); a piece is at most {PIECE} bytes",
                        bytes.len()
                    );
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
                    let i = disk_of(disk, &ended)?;
                    rx[i].zero(offset, len)?;
                    rx[i].maybe_checkpoint()?;
                }
                Msg::HashQuery { disk, blocks } => {
                    let i = disk_of(disk, &ended)?;
                    ensure!(
                        blocks.len() <= proto::MAX_QUERY_BLOCKS,
                        "protocol error: a hash query of {} blocks; at most {} per query",
                        blocks.len(),
                        proto::MAX_QUERY_BLOCKS
                    );
                    if let Some((o, l)) = blocks.iter().find(|(_, l)| *l == 0 || *l as u64 > BLOCK) {
                        bail!(
                            "protocol error: queried block at {o} of {l} bytes; a block is 1..={BLOCK} bytes"
                        );
                    }
                    let hashes = rx[i].query(&blocks)?;
                    write_frame(s, &Msg::Hashes { hashes })?;
                }
                Msg::Commit { disk } => {
                    let i = disk_of(disk, &ended)?;
                    rx[i].commit()?;
                    rx[i].maybe_checkpoint()?;
                }
                Msg::DiskEnd { disk, digest, blocks } => {
                    let i = disk_of(disk, &ended)?;
                    ended[i] = true;
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
                Msg::Keepalive => {}
                Msg::Hook { kind, name, body } => {
                    hooks.push(Hook { kind, name: proto::sanitize(&name, 80), body: body.into_vec() });
                    ferry_convert::hooks::validate(&hooks).context("protocol error: a customization hook")?;
                }
                Msg::LuksKey { key } => {
                    use ferry_convert::crypt::{Key, MAX_KEYS, MAX_KEY_LEN};
                    let key = Key::new(key.into_vec());
                    ensure!(luks_keys.len() < MAX_KEYS, "protocol error: more than {MAX_KEYS} LUKS keys");
                    ensure!(
                        (1..=MAX_KEY_LEN).contains(&key.0.len()),
                        "protocol error: a LUKS key of {} bytes (1 to {MAX_KEY_LEN})",
                        key.0.len()
                    );
                    luks_keys.push(key);
                }
                Msg::Finish { finalize } => {
                    let open: Vec<String> =
                        rx.iter().zip(&ended).filter(|(_, e)| !**e).map(|(r, _)| r.name.clone()).collect();
                    ensure!(open.is_empty(), "protocol error: Finish before the end of {}", open.join(", "));
                    if !finalize && (!hooks.is_empty() || !luks_keys.is_empty()) {
                        log::warn!(
                            "receiver: {} hook(s) and {} LUKS key(s) sent with a pass that does not finalize; ignored",
                            hooks.len(),
                            luks_keys.len()
                        );
                    }
                    return Ok((finalize, super::Handover { hooks, luks_keys }));
                }
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
}
