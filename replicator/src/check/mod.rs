//! `ferry check`: the migration drill. Source environment checks (this machine's load, the
//! filesystems and storage on the disks to send, and — when the running system is among them —
//! its kernels, /boot, GRUB, architecture and distribution, inspected with conversion's own
//! code) and, with `--to`, data sync tests against the appliance (connectivity, authentication,
//! a dry-run plan, throughput, an estimate). Each finding is an [`Item`] with a stable id, a
//! level and an action; nothing is ever written to a source or a target.

pub mod host;
pub mod load;
pub mod network;
pub mod remote;
pub mod storage;
pub mod system;

use crate::sender::Src;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// How bad a finding is. `Critical` makes `ferry check` exit 2 and `ferry send` refuse to
/// start without `--force`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

impl Level {
    pub fn label(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "Warning",
            Level::Critical => "Critical",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// Stable identifier (README lists them all).
    pub id: &'static str,
    pub level: Level,
    pub title: String,
    /// What the item is about when there are several of its kind (a mount point, a disk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// What was found, with numbers.
    pub detail: String,
    /// What to do about it (empty when nothing).
    pub remediation: String,
    /// The measured values, machine-readable.
    pub values: BTreeMap<&'static str, serde_json::Value>,
}

impl Item {
    pub fn new(id: &'static str, level: Level, title: &str, detail: impl Into<String>) -> Item {
        Item {
            id,
            level,
            title: title.into(),
            subject: None,
            detail: detail.into(),
            remediation: String::new(),
            values: BTreeMap::new(),
        }
    }

    pub fn ok(id: &'static str, title: &str, detail: impl Into<String>) -> Item {
        Item::new(id, Level::Ok, title, detail)
    }

    pub fn on(mut self, subject: impl Into<String>) -> Item {
        self.subject = Some(subject.into());
        self
    }

    pub fn fix(mut self, remediation: impl Into<String>) -> Item {
        self.remediation = remediation.into();
        self
    }

    pub fn val(mut self, k: &'static str, v: impl Into<serde_json::Value>) -> Item {
        self.values.insert(k, v.into());
        self
    }
}

/// Everything `ferry check` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub items: Vec<Item>,
    /// The worst level found.
    pub level: Option<Level>,
}

impl Report {
    pub fn new(items: Vec<Item>) -> Report {
        let level = items.iter().map(|i| i.level).max();
        Report { items, level }
    }

    pub fn critical(&self) -> Vec<&Item> {
        self.items.iter().filter(|i| i.level == Level::Critical).collect()
    }

    /// 0 when nothing is Critical, 2 when something is.
    pub fn exit_code(&self) -> i32 {
        if self.critical().is_empty() {
            0
        } else {
            2
        }
    }

    /// The table: level, item, what was found and, indented below, the action.
    pub fn table(&self) -> String {
        let name = |i: &Item| match &i.subject {
            Some(s) => format!("{} ({s})", i.title),
            None => i.title.clone(),
        };
        let w = self.items.iter().map(|i| name(i).chars().count()).max().unwrap_or(4).clamp(4, 44);
        let mut out = format!("{:<8}  {:<w$}  FOUND\n", "LEVEL", "ITEM");
        for i in &self.items {
            out.push_str(&format!("{:<8}  {:<w$}  {}\n", i.level.label(), name(i), i.detail));
            if !i.remediation.is_empty() {
                out.push_str(&format!("{:<8}  {:<w$}  → {}\n", "", "", i.remediation));
            }
        }
        let count = |l: Level| self.items.iter().filter(|i| i.level == l).count();
        out.push_str(&format!(
            "{} items: {} OK, {} Warning, {} Critical\n",
            self.items.len(),
            count(Level::Ok),
            count(Level::Warning),
            count(Level::Critical)
        ));
        out
    }
}

/// Is the running system's `/` on one of the sources (device sets from [`storage::devices`])?
fn holds_running_system(h: &host::Host, mounts: &[stack::Mount], sources: &[BTreeSet<String>]) -> bool {
    let Some(root) = mounts.iter().rev().find(|m| m.point == "/") else { return false };
    let on: BTreeSet<String> = sources.iter().flatten().flat_map(|d| h.sys.above(d)).collect();
    h.sys.mount_devices(root).iter().any(|d| on.contains(d))
}

use crate::sender::stack;

/// The source environment checks for the sources at `paths` (`srcs`: those that could be
/// opened and analysed); `ports` and `addrs` are where the appliance listens (for the firewall
/// check; any address when empty).
pub fn source_items(
    h: &host::Host,
    paths: &[&str],
    srcs: &[Src],
    ports: &[u16],
    addrs: &[IpAddr],
) -> Vec<Item> {
    let mounts = h.mounts();
    let devs = storage::devices(&h.sys, paths);
    let cpu = load::start(h);
    let mut out = Vec::new();
    if !h.privileged {
        out.push(
            Item::new(
                "privileges",
                Level::Warning,
                "Privileges",
                "not running as root: disks, GRUB and the firewall cannot all be inspected",
            )
            .fix("run ferry check as root, as ferry send will be"),
        );
    }
    for s in srcs {
        out.extend(storage::fs_types(&storage::Src { path: &s.path, file: s.f.as_ref(), layout: &s.layout }));
    }
    out.extend(storage::mounted_usage(h, &mounts, &devs));
    out.extend(storage::stack_items(&h.sys, &mounts, &devs));
    let sources: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
    for w in crate::sender::freeze::inspect(&h.sys, &mounts, &sources).invisible {
        out.push(
            Item::new("freeze-support", Level::Warning, "Cannot be frozen", w)
                .fix("stop what holds it (a VM, a database on the raw device, a mount in a container) before the final pass"),
        );
    }
    if holds_running_system(h, &mounts, &devs) {
        out.extend(system::items(h, &mounts));
    } else {
        out.push(Item::ok(
            "system-inspection",
            "Running system",
            "not among the disks to send (images or other disks): conversion inspects the migrated system itself",
        ));
    }
    out.push(network::proxy(&h.env));
    out.push(network::firewall(h, ports, addrs));
    let mut load = load::finish(h, cpu);
    load.append(&mut out);
    load
}

/// Bytes as a short human figure (GiB/MiB/KiB, binary).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A percentage with one decimal.
pub fn pct(part: f64, whole: f64) -> f64 {
    if whole <= 0.0 {
        0.0
    } else {
        (part / whole * 1000.0).round() / 10.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_and_table() {
        let r = Report::new(vec![
            Item::ok("cpu-load", "CPU utilisation", "12.0 % over 1 s"),
            Item::new("filesystem-space", Level::Critical, "Space", "99.5 % used").on("/").fix("free space"),
        ]);
        assert_eq!(r.exit_code(), 2);
        assert_eq!(r.level, Some(Level::Critical));
        let t = r.table();
        assert!(t.contains("Critical  Space (/)") && t.contains("→ free space"), "{t}");
        assert!(t.ends_with("2 items: 1 OK, 0 Warning, 1 Critical\n"), "{t}");
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["items"][1]["level"], "critical");
        assert_eq!(j["items"][1]["subject"], "/");
        assert_eq!(Report::new(vec![]).exit_code(), 0);
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(pct(1.0, 3.0), 33.3);
    }
}
