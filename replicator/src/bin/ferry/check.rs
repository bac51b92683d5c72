//! `ferry check` and `ferry send`'s pre-check: the drill's command line.

use super::{bwlimit, disks, token, workers, Check, Send};
use anyhow::Result;
use ferry_replicator::check::{self, host::Host, remote};
use ferry_replicator::sender;

/// The appliance's data port in `--to`, and its status port.
fn ports(to: &str, status: u16) -> Vec<u16> {
    let data = to.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(sender::DEFAULT_PORT);
    vec![data, status]
}

pub fn check(c: Check) -> Result<i32> {
    anyhow::ensure!(c.compress <= 10, "--compress must be 0..10, got {}", c.compress);
    anyhow::ensure!(c.seconds > 0.0 && c.seconds <= 60.0, "--seconds must be in (0, 60], got {}", c.seconds);
    let (workers, bw) = (workers(c.workers)?, bwlimit(c.bwlimit)?);
    let mut items = Vec::new();
    let mut srcs = Vec::new();
    let disks = disks(&c.disk)?;
    let paths: Vec<&str> = disks.iter().map(|(p, _)| p.as_str()).collect();
    for (path, sel) in &disks {
        match sender::analyse(path, sel) {
            Ok(s) => srcs.push(s),
            Err(e) => items.push(
                check::Item::new("source", check::Level::Critical, "Source", format!("{e:#}"))
                    .on(path)
                    .fix("name a readable block device or image file (as root for devices)"),
            ),
        }
    }
    let (ports, addrs) = match &c.to {
        Some(to) => (ports(to, c.status_port), remote::addresses(to)),
        None => (vec![sender::DEFAULT_PORT, c.status_port], Vec::new()),
    };
    items.extend(check::source_items(&Host::system(), &paths, &srcs, &ports, &addrs));
    if let Some(to) = &c.to {
        let token = token(&c.token, &c.token_file)?;
        let r = remote::Remote {
            to,
            token: &token,
            fingerprint: c.fingerprint.clone(),
            status_port: c.status_port,
            compress: c.compress,
            workers,
            bwlimit_mbit: bw,
            seconds: c.seconds,
        };
        items.extend(remote::items(&r, &srcs));
    }
    let rep = check::Report::new(items);
    if c.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        print!("{}", rep.table());
    }
    Ok(rep.exit_code())
}

/// `ferry send`'s drill: the source checks; Critical stops it unless `--force`.
pub fn precheck(a: &Send, disks: &[(String, String)]) -> Result<()> {
    let mut srcs = Vec::new();
    for (p, sel) in disks {
        srcs.push(sender::analyse(p, sel)?);
    }
    let paths: Vec<&str> = disks.iter().map(|(p, _)| p.as_str()).collect();
    let (ports, addrs) = (ports(&a.to, 8080), remote::addresses(&a.to));
    // A short CPU sample: this runs before every send.
    let mut h = Host::system();
    h.cpu_window = std::time::Duration::from_millis(250);
    let mut items = check::source_items(&h, &paths, &srcs, &ports, &addrs);
    if !a.luks_key_file.is_empty() {
        check::storage::with_luks_keys(&mut items);
    }
    let rep = check::Report::new(items);
    if a.json {
        println!("{}", serde_json::json!({"event": "check", "check": rep}));
    }
    for i in rep.items.iter().filter(|i| i.level == check::Level::Warning) {
        log::warn!(
            "check: {}{}: {}",
            i.title,
            i.subject.as_ref().map(|s| format!(" ({s})")).unwrap_or_default(),
            i.detail
        );
    }
    let crit = rep.critical();
    if crit.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = crit
        .iter()
        .map(|i| {
            format!(
                "{} [{}{}]: {}",
                i.title,
                i.id,
                i.subject.as_ref().map(|s| format!(" {s}")).unwrap_or_default(),
                i.detail
            )
        })
        .collect();
    if a.force {
        for n in &names {
            log::warn!("check: Critical, going on (--force): {n}");
        }
        return Ok(());
    }
    anyhow::bail!(
        "the source check found {} Critical item(s); nothing was sent: {}. Run `ferry check` for the actions, or pass --force",
        names.len(),
        names.join("; ")
    )
}
