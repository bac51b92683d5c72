//! `ferry`: the source-side CLI. `ferry send` streams disks to the appliance; `ferry map` shows
//! what would be sent.

use anyhow::{Context, Result};
use argh::FromArgs;
use ferry_replicator::progress::Style;
use ferry_replicator::{layout, sender};

/// ferry: move a Linux server onto a fresh KVM virtual machine.
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Send(Send),
    Map(Map),
}

/// Send disks to a ferry appliance (or `ferry-init receive`).
#[derive(FromArgs)]
#[argh(subcommand, name = "send")]
struct Send {
    /// receiver HOST[:PORT] (port 8703 by default)
    #[argh(option)]
    to: String,
    /// the one-time token the appliance was booted with (or set FERRY_TOKEN, or use
    /// --token-file; a token on the command line is visible to other local users)
    #[argh(option)]
    token: Option<String>,
    /// read the token from this file (its first line)
    #[argh(option)]
    token_file: Option<String>,
    /// SRC[=TARGET]: a block device or image file, and the target by name (vda), serial or
    /// index (#0); repeatable; default: every disk under / and the local filesystems of
    /// /etc/fstab (through LVM, MD and dm-crypt)
    #[argh(option)]
    disk: Vec<String>,
    /// compression 0..10 (0 = off, 1 = fast zstd, 10 = strongest); default 1
    #[argh(option, default = "1")]
    compress: u8,
    /// bandwidth limit in Mbit/s
    #[argh(option)]
    bwlimit: Option<f64>,
    /// have the receiver re-read and check everything it wrote
    #[argh(switch)]
    verify: bool,
    /// leave the appliance waiting for further passes (no conversion yet)
    #[argh(switch)]
    no_finalize: bool,
    /// pin the receiver's certificate (SHA-256 hex shown in its log and /status)
    #[argh(option)]
    fingerprint: Option<String>,
    /// JSON line events and a JSON report on stdout
    #[argh(switch)]
    json: bool,
    /// freeze every filesystem on the sources (through partitions, LVM, dm-crypt, MD, btrfs)
    /// during a finalizing pass
    #[argh(switch)]
    freeze: bool,
    /// worker threads for hashing and compression (default: CPUs)
    #[argh(option)]
    workers: Option<usize>,
}

/// Show the partitions, filesystems and byte ranges `ferry send` would read.
#[derive(FromArgs)]
#[argh(subcommand, name = "map")]
struct Map {
    /// block device or image file
    #[argh(positional)]
    source: String,
    /// print JSON (with every extent)
    #[argh(switch)]
    json: bool,
}

fn main() {
    ferry_replicator::console::init_logger();
    signals();
    let args: Args = argh::from_env();
    let r = match args.cmd {
        Cmd::Send(s) => send(s),
        Cmd::Map(m) => map(m),
    };
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            log::error!("{e:#}");
            std::process::exit(1);
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP go to one thread, which thaws whatever `--freeze` froze before
/// ferry exits (130). Blocked here, before any other thread exists, so every thread inherits it.
fn signals() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            sender::freeze::thaw_all();
            ferry_replicator::console::release();
            log::error!("interrupted by {sig:?}; the pass did not finish");
            std::process::exit(130);
        }
    });
}

fn token(a: &Send) -> Result<String> {
    if let Some(p) = &a.token_file {
        let t = std::fs::read_to_string(p).with_context(|| format!("reading --token-file {p}"))?;
        let t = t.lines().next().unwrap_or("").trim().to_string();
        anyhow::ensure!(!t.is_empty(), "--token-file {p} is empty");
        return Ok(t);
    }
    a.token
        .clone()
        .or_else(|| std::env::var("FERRY_TOKEN").ok())
        .context("--token, --token-file or FERRY_TOKEN is required")
}

/// Without `--disk`: every disk this system lives on.
fn system_disks() -> Result<Vec<(String, String)>> {
    use sender::stack;
    let fstab = std::fs::read_to_string("/etc/fstab").unwrap_or_default();
    let disks = stack::system_disks(&stack::Sys::system(), &stack::mounts()?, &fstab)?;
    for (d, why) in &disks {
        log::info!("source /dev/{d} (holds {})", why.join(", "));
    }
    Ok(disks.into_iter().map(|(d, _)| (format!("/dev/{d}"), String::new())).collect())
}

fn send(a: Send) -> Result<i32> {
    let token = token(&a)?;
    anyhow::ensure!(a.compress <= 10, "--compress must be 0..10, got {}", a.compress);
    let disks = if a.disk.is_empty() {
        system_disks()?
    } else {
        a.disk
            .iter()
            .map(|d| match d.split_once('=') {
                Some((s, t)) => (s.to_string(), t.to_string()),
                None => (d.clone(), String::new()),
            })
            .collect()
    };
    let workers =
        a.workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let o = sender::Options {
        to: a.to,
        token,
        disks,
        compress: a.compress,
        bwlimit_mbit: a.bwlimit,
        verify: a.verify,
        finalize: !a.no_finalize,
        fingerprint: a.fingerprint,
        style: Style::detect(a.json),
        workers,
        freeze: a.freeze,
    };
    let rep = sender::send(&o)?;
    if a.json {
        println!("{}", serde_json::json!({"event": "report", "report": rep}));
    } else {
        for d in &rep.disks {
            eprintln!(
                "ferry: {} → {}: {} mode, {} of {} bytes considered, {} sent as data, {} as zero ranges, {} on the wire, {:.1}s{}",
                d.source,
                d.target,
                d.mode,
                d.extent_bytes,
                d.source_size,
                d.bytes_sent,
                d.zero_bytes,
                d.wire_bytes,
                d.seconds,
                match d.verified {
                    Some(true) => ", verified",
                    _ => "",
                }
            );
            if d.mode == "Delta" {
                eprintln!("ferry:   delta: compared {} bytes, sent {}", d.bytes_compared, d.bytes_sent);
            }
        }
        let frozen =
            if rep.frozen.is_empty() { String::new() } else { format!(" (froze {})", rep.frozen.join(", ")) };
        eprintln!(
            "ferry: consistency: {}{frozen}",
            serde_json::to_value(rep.consistency)?.as_str().unwrap_or("?")
        );
        for p in &rep.consistency_problems {
            eprintln!("ferry:   not crash-consistent: {p}");
        }
        eprintln!("ferry: receiver: {}", receiver_summary(&rep.receiver_report));
    }
    Ok(if rep.ok { 0 } else { 3 })
}

/// One line about the receiver's report: its note, or the conversion's outcome.
fn receiver_summary(r: &serde_json::Value) -> String {
    if let Some(n) = r.get("note").and_then(|n| n.as_str()).or(r.as_str()) {
        return n.to_string();
    }
    match (r.get("ok").and_then(|v| v.as_bool()), r.get("error").and_then(|v| v.as_str())) {
        (Some(true), _) => {
            let w = r.get("warnings").and_then(|w| w.as_array()).map_or(0, |w| w.len());
            format!("converted ({w} warnings; the full report is in --json output)")
        }
        (_, Some(e)) => format!("conversion failed: {e}"),
        _ => r.to_string(),
    }
}

fn map(m: Map) -> Result<i32> {
    let f = sender::source::open(&m.source)?;
    let l = layout::analyze(&f)?;
    if m.json {
        let mut v = serde_json::to_value(&l)?;
        v["extents"] = serde_json::to_value(l.extents.ranges())?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!("{}: {} bytes, partition table: {}", m.source, l.size, l.table);
    for p in &l.parts {
        println!("  part {:>2} {:>14}..{:<14} {:<8} free {}", p.number, p.start, p.end, p.fs, p.free_bytes);
    }
    println!(
        "  to read: {} bytes in {} extents (last used byte {})",
        l.extent_bytes,
        l.extents.ranges().len(),
        l.last_used
    );
    for n in &l.notes {
        println!("  note: {n}");
    }
    Ok(0)
}
