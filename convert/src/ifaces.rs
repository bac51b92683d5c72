//! Which interfaces the old configuration names, first to last, and which MAC addresses the old
//! system bound to which name (systemd `.link` files, persistent-net udev rules), so a
//! configuration that matches a NIC by its MAC follows that interface to its new name. An
//! interface known only by a MAC (a `.network` matching an address nothing names) is
//! `mac:ADDR`.

use crate::guest::GuestRoot;
use crate::netcfg;
use anyhow::Result;
use std::collections::BTreeMap;

/// The old system's interfaces.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Old {
    /// Names (or `mac:ADDR`) in configuration order.
    pub names: Vec<String>,
    /// Lower-case MAC address → the name the old system gave it.
    pub macs: BTreeMap<String, String>,
}

fn indent(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

/// The values of `key=` in the `[Match]` section of a systemd `.network` or `.link` file.
fn match_values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut in_match = false;
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            in_match = t == "[Match]";
        } else if let Some(v) = t.strip_prefix(key).and_then(|r| r.strip_prefix('=')).filter(|_| in_match) {
            out.extend(v.split_whitespace());
        }
    }
    out
}

/// `[Match] MACAddress=` values, lower case.
pub fn match_macs(text: &str) -> Vec<String> {
    match_values(text, "MACAddress").into_iter().map(|m| m.to_ascii_lowercase()).collect()
}

/// A `.link` file's `[Link] Name=`.
fn link_name(text: &str) -> Option<String> {
    let mut sec = "";
    text.lines().find_map(|l| {
        let t = l.trim();
        if t.starts_with('[') {
            sec = t;
        }
        (sec == "[Link]").then(|| t.strip_prefix("Name=")).flatten().map(|v| v.trim().to_string())
    })
}

/// `ATTR{address}=="m" … NAME="n"` of udev rules, lower case.
pub fn udev_macs(text: &str) -> Vec<(String, String)> {
    let field = |l: &str, key: &str| {
        let i = l.find(key)? + key.len();
        let rest = &l[i..];
        Some(rest[..rest.find('"')?].to_string())
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| Some((field(l, "ATTR{address}==\"")?.to_ascii_lowercase(), field(l, "NAME=\"")?)))
        .collect()
}

fn mac_names(g: &GuestRoot) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for f in g.list("etc/udev/rules.d")? {
        let rel = format!("etc/udev/rules.d/{f}");
        if f.ends_with(".rules") && g.is_file(&rel) {
            out.extend(udev_macs(&g.read_or_empty(&rel)?));
        }
    }
    for f in g.list("etc/systemd/network")? {
        let rel = format!("etc/systemd/network/{f}");
        if f.ends_with(".link") && g.is_file(&rel) {
            let text = g.read_or_empty(&rel)?;
            if let Some(n) = link_name(&text) {
                out.extend(match_macs(&text).into_iter().map(|m| (m, n.clone())));
            }
        }
    }
    Ok(out)
}

/// Interfaces the old configuration names (ethX, enoX…), first to last.
pub fn old_interfaces(g: &GuestRoot) -> Result<Old> {
    let mut names: Vec<String> = Vec::new();
    let macs = mac_names(g)?;
    let mut add = |n: &str| {
        if n != "lo" && !n.is_empty() && !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    };
    let mut interfaces = g.read_or_empty("etc/network/interfaces")?;
    for f in g.list("etc/network/interfaces.d")? {
        if g.is_file(&format!("etc/network/interfaces.d/{f}")) {
            interfaces.push_str(&g.read_or_empty(&format!("etc/network/interfaces.d/{f}"))?);
        }
    }
    for l in interfaces.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.first() == Some(&"iface") && w.len() > 1 {
            add(w[1].split(':').next().unwrap_or(""));
        }
    }
    for dir in ["etc/sysconfig/network-scripts", "etc/sysconfig/network"] {
        for f in g.list(dir)? {
            if let Some(n) = f.strip_prefix("ifcfg-").filter(|n| !n.contains('.') && !n.contains('~')) {
                add(n);
            }
        }
    }
    for f in g.list("etc/netplan")? {
        if f.ends_with(".yaml") {
            for n in netplan_names(&g.read_or_empty(&format!("etc/netplan/{f}"))?) {
                add(&n);
            }
        }
    }
    for f in g.list("etc/systemd/network")? {
        if f.ends_with(".network") {
            let text = g.read_or_empty(&format!("etc/systemd/network/{f}"))?;
            for n in networkd_names(&text) {
                add(&n);
            }
            for m in match_macs(&text) {
                match macs.get(&m) {
                    Some(n) => add(&n.clone()),
                    None => add(&format!("mac:{m}")),
                }
            }
        }
    }
    for f in g.list("etc/NetworkManager/system-connections")? {
        if f.ends_with(".nmconnection") {
            let text = g.read_or_empty(&format!("etc/NetworkManager/system-connections/{f}"))?;
            // Bound by name, or only by MAC (`mac:ADDR` unless a rule names that MAC).
            if let Some(n) = nm_keyfile_name(&text) {
                add(&n);
            } else if let Some(m) = nm_keyfile_mac(&text) {
                match macs.get(&m) {
                    Some(n) => add(&n.clone()),
                    None => add(&format!("mac:{m}")),
                }
            }
        }
    }
    Ok(Old { names, macs })
}

/// The interface names a netplan file configures (`ethernets:` keys).
pub fn netplan_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    // (indent of `ethernets:`, indent of its children once seen)
    let mut section: Option<(usize, Option<usize>)> = None;
    for l in text.lines() {
        let t = l.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let ind = indent(l);
        if section.is_some_and(|(s, _)| ind <= s) {
            section = None;
        }
        if t == "ethernets:" {
            section = Some((ind, None));
            continue;
        }
        if let Some((s, child)) = &mut section {
            let c = *child.get_or_insert(ind);
            if ind == c && ind > *s && t.ends_with(':') {
                out.push(t.trim_end_matches(':').trim_matches('"').to_string());
            }
        }
    }
    out
}

/// The interface names a networkd `.network` file matches by exact `Name=` (globs left out).
pub fn networkd_names(text: &str) -> Vec<String> {
    match_values(text, "Name")
        .into_iter()
        .filter(|n| !n.contains(['*', '?', '[']))
        .map(String::from)
        .collect()
}

/// The MAC a NetworkManager keyfile is bound to (`[ethernet] mac-address=`), lower-case.
pub fn nm_keyfile_mac(text: &str) -> Option<String> {
    let mut sec = String::new();
    text.lines().find_map(|l| {
        let t = l.trim();
        netcfg::keyfile_section(t, &mut sec);
        netcfg::keyfile_kv(t)
            .filter(|(k, _)| sec == "[ethernet]" && *k == "mac-address")
            .map(|(_, v)| v.to_ascii_lowercase())
    })
}

/// The interface a NetworkManager keyfile is bound to by name (`[connection] interface-name=`).
pub fn nm_keyfile_name(text: &str) -> Option<String> {
    let mut sec = String::new();
    text.lines().find_map(|l| {
        let t = l.trim();
        netcfg::keyfile_section(t, &mut sec);
        (sec == "[connection]")
            .then(|| t.strip_prefix("interface-name="))
            .flatten()
            .map(|v| v.trim().to_string())
    })
}
