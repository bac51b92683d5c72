//! `ferry send --continuous`: a full pass, then delta passes one after another (or every
//! `interval`) while the services run, each reported with its changed bytes, duration and RPO
//! (how old the newest complete copy on the appliance is); then, when `ferry cutover` (or
//! SIGUSR1) asks, the cutover: the user's command first (`--before`, e.g. stopping the
//! services), the final pass with the filesystems frozen, finalization and the conversion report.
//! A failed pass is retried (the receiver resumes it); five failures in a row end the job.

use super::control::Knobs;
use super::{send, Options, Report};
use crate::receiver::unix_now;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Set by SIGUSR1: cut over after the current pass.
pub static SIGNALLED: AtomicBool = AtomicBool::new(false);
/// Failed passes in a row that end the job.
pub const MAX_FAILURES: u32 = 5;

/// One pass of the job.
#[derive(Debug, Clone, Serialize)]
pub struct PassInfo {
    pub pass: u32,
    /// Unix seconds.
    pub started: f64,
    pub ended: f64,
    pub seconds: f64,
    /// Bytes sent as data (a delta pass: what changed).
    pub changed_bytes: u64,
    pub wire_bytes: u64,
    /// Each disk's mode.
    pub modes: Vec<String>,
    /// How old the newest complete copy was when this pass ended (seconds since it started).
    pub rpo_s: f64,
    pub finalize: bool,
}

/// The whole job.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub passes: Vec<PassInfo>,
    /// The cutover's `--before` command, its exit status and the tail of its output.
    pub before: Option<Before>,
    /// The final (finalizing) pass's report.
    pub report: Report,
}

#[derive(Debug, Clone, Serialize)]
pub struct Before {
    pub command: String,
    pub ok: bool,
    pub output: String,
}

/// What the job needs besides the send options.
pub struct Job<'a> {
    pub o: &'a Options,
    /// Start a pass at most this often (None: one after another).
    pub interval: Option<Duration>,
    /// The `--before` command for a cutover asked without one (by signal).
    pub before: Option<String>,
    pub knobs: Arc<Knobs>,
    /// Called after each pass (progress output).
    pub on_pass: &'a dyn Fn(&PassInfo),
}

fn info(pass: u32, started: f64, rep: &Report, finalize: bool) -> PassInfo {
    let ended = unix_now();
    PassInfo {
        pass,
        started,
        ended,
        seconds: ended - started,
        changed_bytes: rep.disks.iter().map(|d| d.bytes_sent).sum(),
        wire_bytes: rep.wire_bytes,
        modes: rep.disks.iter().map(|d| d.mode.clone()).collect(),
        rpo_s: ended - started,
        finalize,
    }
}

fn cutover_asked(k: &Knobs) -> bool {
    if SIGNALLED.swap(false, Ordering::SeqCst) {
        k.request_cutover(None);
    }
    k.cutover().is_some()
}

fn publish(k: &Knobs, phase: &str, passes: &[PassInfo]) {
    let rpo = passes.last().map(|p| unix_now() - p.started);
    k.set_status(serde_json::json!({ "phase": phase, "passes": passes, "rpo_s": rpo }));
}

/// Runs `sh -c cmd`: its success and the tail of its output.
fn run_before(cmd: &str) -> Before {
    log::info!("cutover: running {cmd:?}");
    let out = std::process::Command::new("sh").arg("-c").arg(cmd).output();
    let (ok, text) = match out {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr),
                if o.status.success() { String::new() } else { format!("({})", o.status) }
            ),
        ),
        Err(e) => (false, format!("cannot run sh: {e}")),
    };
    let tail: String = text.chars().rev().take(2000).collect::<Vec<_>>().into_iter().rev().collect();
    Before { command: cmd.into(), ok, output: tail }
}

/// Runs the job to its cutover.
pub fn run(job: &Job) -> Result<JobReport> {
    let k = &job.knobs;
    let mut passes: Vec<PassInfo> = Vec::new();
    let mut failures = 0;
    let mut n = 0u32;
    while passes.is_empty() || !cutover_asked(k) {
        let t0 = Instant::now();
        let started = unix_now();
        publish(k, "pass", &passes);
        let o = Options { finalize: false, freeze: false, knobs: Some(k.clone()), ..job.o.clone() };
        match send(&o) {
            Ok(rep) => {
                failures = 0;
                n += 1;
                let i = info(n, started, &rep, false);
                (job.on_pass)(&i);
                passes.push(i);
            }
            Err(e) => {
                failures += 1;
                if failures >= MAX_FAILURES {
                    return Err(e.context(format!("{MAX_FAILURES} passes in a row failed")));
                }
                log::warn!("pass failed ({failures} of {MAX_FAILURES} in a row): {e:#}; retrying in 5 s");
                std::thread::sleep(Duration::from_secs(5));
                continue;
            }
        }
        publish(k, "waiting", &passes);
        // The next pass: after the interval (from this pass's start), or now; a cutover request
        // ends the wait at once.
        let wait = job.interval.unwrap_or(Duration::ZERO);
        while t0.elapsed() < wait && !cutover_asked(k) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let before = k.cutover().filter(|b| !b.is_empty()).or_else(|| job.before.clone());
    publish(k, "cutover", &passes);
    let before = match before {
        Some(cmd) => {
            let b = run_before(&cmd);
            if !b.ok {
                bail!("cutover stopped: `{}` failed: {}; nothing was finalized, the appliance keeps the copy of pass {n}", b.command, b.output.trim());
            }
            Some(b)
        }
        None => None,
    };
    let started = unix_now();
    let o = Options { finalize: true, freeze: true, knobs: Some(k.clone()), ..job.o.clone() };
    let report = send(&o).context("the final pass")?;
    let i = info(n + 1, started, &report, true);
    (job.on_pass)(&i);
    passes.push(i);
    publish(k, "done", &passes);
    Ok(JobReport { passes, before, report })
}
