//! `ferry`: the source-side CLI. `ferry check` is the migration drill (nothing written),
//! `ferry send` streams disks to the appliance (after the drill's source checks), `ferry map`
//! shows what would be sent.

use anyhow::{Context, Result};
use argh::FromArgs;
use ferry_replicator::progress::Style;
use ferry_replicator::{layout, sender};

mod check;
mod live;
mod report;

/// ferry: move a Linux server onto a fresh KVM virtual machine (`ferry --version`: its version).
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Check(Check),
    Send(Send),
    Cutover(live::Cutover),
    Ctl(live::Ctl),
    Map(Map),
}

/// The migration drill: what would make a migration fail, on this machine and (with --to) on
/// the path to the appliance. Reads only; writes nothing to a source or a target. Exit code 2
/// when something is Critical.
#[derive(FromArgs)]
#[argh(subcommand, name = "check")]
struct Check {
    /// receiver HOST[:PORT] for the data sync tests (port 8703 by default)
    #[argh(option)]
    to: Option<String>,
    /// the appliance's token (or FERRY_TOKEN, or --token-file)
    #[argh(option)]
    token: Option<String>,
    /// read the token from this file (its first line)
    #[argh(option)]
    token_file: Option<String>,
    /// SRC[=TARGET], as for `ferry send`; default: every disk this system lives on
    #[argh(option)]
    disk: Vec<String>,
    /// pin the receiver's certificate (SHA-256 hex)
    #[argh(option)]
    fingerprint: Option<String>,
    /// the appliance's status port (default 8080)
    #[argh(option, default = "8080")]
    status_port: u16,
    /// compression level to test, as for `ferry send` (default 1)
    #[argh(option, default = "1")]
    compress: u8,
    /// bandwidth limit in Mbit/s to assume in the estimate
    #[argh(option)]
    bwlimit: Option<f64>,
    /// worker threads to assume for compression (default: CPUs)
    #[argh(option)]
    workers: Option<usize>,
    /// seconds for each throughput test (default 3)
    #[argh(option, default = "3.0")]
    seconds: f64,
    /// print the report as JSON
    #[argh(switch)]
    json: bool,
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
    /// start even when `ferry check`'s source checks find something Critical
    #[argh(switch)]
    force: bool,
    /// keep the appliance in step: a full pass, then delta passes until `ferry cutover` (or
    /// SIGUSR1), which runs --before, a frozen final pass and the conversion
    #[argh(switch)]
    continuous: bool,
    /// with --continuous: start a pass at most this often (30s, 5m, 1h; default: back to back)
    #[argh(option)]
    interval: Option<String>,
    /// with --continuous: the command a cutover runs first when `ferry cutover` names none
    /// (e.g. "systemctl stop app")
    #[argh(option)]
    before: Option<String>,
    /// with --continuous: the control socket for `ferry cutover` and `ferry ctl` (default
    /// /run/ferry/send.sock)
    #[argh(option)]
    ctl: Option<String>,
    /// KIND=FILE, repeatable: a script for the conversion, sent with the finalizing pass;
    /// run=FILE runs in the migrated system's chroot at the end of conversion (a failure fails
    /// it), firstboot=FILE runs once on the new VM's first boot
    #[argh(option)]
    hook: Vec<String>,
    /// a passphrase or key file (its exact bytes, as cryptsetup --key-file reads it) that
    /// opens the system's LUKS volumes in the appliance; repeatable. Sent over the
    /// authenticated channel with the finalizing pass, held there in memory only
    #[argh(option)]
    luks_key_file: Vec<String>,
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
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("ferry {}", env!("CARGO_PKG_VERSION"));
        std::process::exit(0);
    }
    let args: Args = argh::from_env();
    let r = match args.cmd {
        Cmd::Check(c) => check::check(c),
        Cmd::Send(s) => send(s),
        Cmd::Cutover(c) => live::cutover(c),
        Cmd::Ctl(c) => live::ctl(c),
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
/// ferry exits (130); SIGUSR1 asks a continuous job to cut over. Blocked here, before any other
/// thread exists, so every thread inherits it.
fn signals() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGUSR1] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        while let Ok(sig) = set.wait() {
            if sig == Signal::SIGUSR1 {
                log::info!("SIGUSR1: cutover after the current pass");
                sender::continuous::SIGNALLED.store(true, std::sync::atomic::Ordering::SeqCst);
                continue;
            }
            sender::freeze::thaw_all();
            ferry_replicator::console::release();
            log::error!("interrupted by {sig:?}; the pass did not finish");
            std::process::exit(130);
        }
    });
}

fn token(token: &Option<String>, token_file: &Option<String>) -> Result<String> {
    if let Some(p) = token_file {
        let t = std::fs::read_to_string(p).with_context(|| format!("reading --token-file {p}"))?;
        let t = t.lines().next().unwrap_or("").trim().to_string();
        anyhow::ensure!(!t.is_empty(), "--token-file {p} is empty");
        return Ok(t);
    }
    token
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

/// `--disk SRC[=TARGET]...`, or every disk this system lives on.
fn disks(list: &[String]) -> Result<Vec<(String, String)>> {
    if list.is_empty() {
        return system_disks();
    }
    Ok(list
        .iter()
        .map(|d| match d.split_once('=') {
            Some((s, t)) => (s.to_string(), t.to_string()),
            None => (d.clone(), String::new()),
        })
        .collect())
}

/// `--hook run=FILE` / `firstboot=FILE`: read, named after the file, validated.
fn luks_keys(files: &[String]) -> Result<Vec<ferry_convert::crypt::Key>> {
    use ferry_convert::crypt::{read_key_file, MAX_KEYS};
    anyhow::ensure!(files.len() <= MAX_KEYS, "at most {MAX_KEYS} --luks-key-file");
    files.iter().map(|f| read_key_file(f.as_ref()).context("--luks-key-file")).collect()
}

fn hooks(list: &[String]) -> Result<Vec<ferry_convert::hooks::Hook>> {
    use ferry_convert::hooks::{self, Hook, HookKind};
    let mut out = Vec::new();
    for h in list {
        let (kind, file) = match h.split_once('=') {
            Some(("run", f)) => (HookKind::Run, f),
            Some(("firstboot", f)) => (HookKind::Firstboot, f),
            _ => anyhow::bail!("--hook {h:?}: expected run=FILE or firstboot=FILE"),
        };
        let name = std::path::Path::new(file).file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
        let meta = std::fs::metadata(file).with_context(|| format!("--hook {h}"))?;
        anyhow::ensure!(
            meta.len() <= hooks::MAX_SCRIPT as u64,
            "--hook {h}: {} bytes; a hook is at most {} bytes",
            meta.len(),
            hooks::MAX_SCRIPT
        );
        let body = std::fs::read(file).with_context(|| format!("--hook {h}"))?;
        out.push(Hook { kind, name, body });
    }
    hooks::validate(&out).context("--hook")?;
    Ok(out)
}

fn workers(w: Option<usize>) -> Result<usize> {
    anyhow::ensure!(w != Some(0), "--workers must be at least 1");
    Ok(w.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)))
}

fn bwlimit(b: Option<f64>) -> Result<Option<f64>> {
    if let Some(x) = b {
        anyhow::ensure!(x.is_finite() && x > 0.0, "--bwlimit must be a positive number of Mbit/s, got {x}");
    }
    Ok(b)
}

fn send(a: Send) -> Result<i32> {
    let token = token(&a.token, &a.token_file)?;
    anyhow::ensure!(a.compress <= 10, "--compress must be 0..10, got {}", a.compress);
    let disks = disks(&a.disk)?;
    check::precheck(&a, &disks)?;
    let workers = workers(a.workers)?;
    bwlimit(a.bwlimit)?;
    let o = sender::Options {
        to: a.to.clone(),
        token,
        disks,
        compress: a.compress,
        bwlimit_mbit: a.bwlimit,
        verify: a.verify,
        finalize: !a.no_finalize,
        fingerprint: a.fingerprint.clone(),
        style: Style::detect(a.json),
        workers,
        freeze: a.freeze,
        knobs: None,
        hooks: hooks(&a.hook)?,
        luks_keys: luks_keys(&a.luks_key_file)?,
    };
    if a.continuous {
        return live::continuous(&a, o);
    }
    anyhow::ensure!(
        a.interval.is_none() && a.before.is_none() && a.ctl.is_none(),
        "--interval, --before and --ctl need --continuous"
    );
    let rep = sender::send(&o)?;
    Ok(report::print(&rep, a.json))
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
        println!(
            "  part {:>2} {:>14}..{:<14} {:<8} skipped: free {} inode-tables {} journal {}",
            p.number, p.start, p.end, p.fs, p.free_bytes, p.inode_table_bytes, p.journal_bytes
        );
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
