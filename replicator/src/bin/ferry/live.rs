//! The live-migration commands: `ferry send --continuous` (the job and its control socket),
//! `ferry cutover` and `ferry ctl` (clients of that socket).

use super::{report, Send};
use anyhow::{Context, Result};
use argh::FromArgs;
use ferry_replicator::sender::continuous::{self, Job, PassInfo};
use ferry_replicator::sender::control::{self, Knobs, Request};
use ferry_replicator::sender::Options;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

/// Cut a running `ferry send --continuous` over: run a command first (stop the services), then
/// the final frozen pass, finalization and conversion; prints the report. Exit code as `ferry
/// send`'s.
#[derive(FromArgs)]
#[argh(subcommand, name = "cutover")]
pub struct Cutover {
    /// command to run before the final pass (e.g. "systemctl stop app"); its failure stops
    /// the cutover
    #[argh(option)]
    before: Option<String>,
    /// the sender's control socket (default /run/ferry/send.sock)
    #[argh(option)]
    ctl: Option<String>,
    /// print the job report as JSON
    #[argh(switch)]
    json: bool,
}

/// Change a running `ferry send --continuous` without restarting it (effective within a second)
/// or show its state.
#[derive(FromArgs)]
#[argh(subcommand, name = "ctl")]
pub struct Ctl {
    /// new bandwidth limit in Mbit/s
    #[argh(option)]
    bwlimit: Option<f64>,
    /// remove the bandwidth limit
    #[argh(switch)]
    unlimited: bool,
    /// new compression level 0..10
    #[argh(option)]
    compress: Option<u8>,
    /// pause sending (the session is kept alive)
    #[argh(switch)]
    pause: bool,
    /// resume sending
    #[argh(switch)]
    resume: bool,
    /// show the job: passes, RPO, settings (the default)
    #[argh(switch)]
    status: bool,
    /// the sender's control socket (default /run/ferry/send.sock)
    #[argh(option)]
    ctl: Option<String>,
}

fn socket(p: &Option<String>) -> PathBuf {
    PathBuf::from(p.as_deref().unwrap_or(control::DEFAULT_SOCKET))
}

/// `30s`, `5m`, `1h`, or seconds.
pub fn duration(s: &str) -> Result<Duration> {
    let (num, unit) =
        s.trim().split_at(s.trim().find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.trim().len()));
    let n: f64 = num.parse().with_context(|| format!("--interval {s:?}: expected 30s, 5m, 1h or seconds"))?;
    let mult = match unit {
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => anyhow::bail!("--interval {s:?}: the unit is s, m or h"),
    };
    anyhow::ensure!(n.is_finite() && n >= 0.0 && n * mult <= 7.0 * 86400.0, "--interval {s:?}: 0 to 7 days");
    Ok(Duration::from_secs_f64(n * mult))
}

fn pass_line(p: &PassInfo, json: bool) {
    if json {
        println!("{}", serde_json::json!({"event": "pass", "pass": p}));
    } else {
        eprintln!(
            "ferry: pass {}{}: {} ({}), {} bytes changed, {} on the wire, {:.1} s; RPO {:.0} s",
            p.pass,
            if p.finalize { " (final)" } else { "" },
            p.modes.join(", "),
            if p.pass == 1 { "full copy" } else { "delta" },
            p.changed_bytes,
            p.wire_bytes,
            p.seconds,
            p.rpo_s
        );
    }
}

/// `ferry send --continuous`.
pub fn continuous(a: &Send, o: Options) -> Result<i32> {
    anyhow::ensure!(!a.no_finalize, "--continuous finalizes at cutover; --no-finalize does not apply");
    let interval = a.interval.as_deref().map(duration).transpose()?;
    let knobs = Knobs::new(o.compress, o.bwlimit_mbit);
    let path = socket(&a.ctl);
    let _srv = control::serve(&path, knobs.clone())?;
    log::info!(
        "continuous: passes until `ferry cutover --ctl {}` (or SIGUSR1 to pid {})",
        path.display(),
        std::process::id()
    );
    let json = a.json;
    let on_pass = move |p: &PassInfo| pass_line(p, json);
    let job = Job { o: &o, interval, before: a.before.clone(), knobs: knobs.clone(), on_pass: &on_pass };
    match continuous::run(&job) {
        Ok(rep) => {
            let code = report::print(&rep.report, json);
            knobs.tell_waiting(&serde_json::json!({"event": "report", "code": code, "job": rep}));
            Ok(code)
        }
        Err(e) => {
            knobs.tell_waiting(&serde_json::json!({"event": "error", "code": 1, "error": format!("{e:#}")}));
            Err(e)
        }
    }
}

/// `ferry cutover`: asks, then waits for the job's report.
pub fn cutover(c: Cutover) -> Result<i32> {
    let mut r = control::request(&socket(&c.ctl), &Request::Cutover { before: c.before })?;
    let mut line = String::new();
    r.read_line(&mut line)?;
    let v: serde_json::Value = serde_json::from_str(&line).context("the sender's answer")?;
    if let Some(e) = v.get("error") {
        anyhow::bail!("the sender refused: {e}");
    }
    eprintln!("ferry: cutover accepted; waiting for the current pass, the final pass and the conversion");
    line.clear();
    r.read_line(&mut line)?;
    let v: serde_json::Value =
        serde_json::from_str(&line).context("the sender ended without a report (see its output)")?;
    if c.json {
        println!("{v}");
    } else if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        eprintln!("ferry: cutover failed: {e}");
    } else {
        for p in v["job"]["passes"].as_array().into_iter().flatten() {
            eprintln!(
                "ferry: pass {}: {} bytes changed in {:.1} s, RPO {:.0} s",
                p["pass"],
                p["changed_bytes"],
                p["seconds"].as_f64().unwrap_or(0.0),
                p["rpo_s"].as_f64().unwrap_or(0.0)
            );
        }
        eprintln!("ferry: receiver: {}", report::receiver_summary(&v["job"]["report"]["receiver_report"]));
    }
    Ok(v["code"].as_i64().unwrap_or(1) as i32)
}

/// `ferry ctl`.
pub fn ctl(c: Ctl) -> Result<i32> {
    anyhow::ensure!(!(c.pause && c.resume), "--pause and --resume together");
    let path = socket(&c.ctl);
    let mut reqs = Vec::new();
    if c.bwlimit.is_some() || c.compress.is_some() || c.unlimited {
        reqs.push(Request::Set {
            bwlimit_mbit: c.bwlimit,
            compress: c.compress,
            unlimited: Some(c.unlimited),
        });
    }
    if c.pause {
        reqs.push(Request::Pause);
    }
    if c.resume {
        reqs.push(Request::Resume);
    }
    if reqs.is_empty() || c.status {
        reqs.push(Request::Status);
    }
    let mut last = String::new();
    for r in &reqs {
        last.clear();
        control::request(&path, r)?.read_line(&mut last)?;
        let v: serde_json::Value = serde_json::from_str(&last).context("the sender's answer")?;
        if let Some(e) = v.get("error") {
            anyhow::bail!("the sender refused: {e}");
        }
    }
    print!("{last}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn intervals() {
        use std::time::Duration;
        assert_eq!(super::duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(super::duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(super::duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(super::duration("12").unwrap(), Duration::from_secs(12));
        assert!(
            super::duration("5x").is_err()
                && super::duration("-1s").is_err()
                && super::duration("9d").is_err()
        );
    }
}
