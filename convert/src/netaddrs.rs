//! The static addresses a system's network configuration gives each interface (ifupdown,
//! ifcfg, netplan, systemd-networkd, NetworkManager keyfiles), as `ADDR/PREFIX`: what a
//! rehearsal compares with the addresses the booted copy has. DHCP configurations have none.

use crate::guest::GuestRoot;
use crate::ifaces::{netplan_names, networkd_names, nm_keyfile_name};
use anyhow::Result;

/// (interface, `ADDR/PREFIX`) in configuration order.
pub type Addresses = Vec<(String, String)>;

/// A dotted netmask as a prefix length (`255.255.255.0` → 24); a number stays as it is.
fn prefix(mask: &str) -> Option<u32> {
    if let Ok(n) = mask.parse::<u32>() {
        return (n <= 128).then_some(n);
    }
    let ip: std::net::Ipv4Addr = mask.parse().ok()?;
    let bits = u32::from(ip);
    (bits.leading_ones() + bits.trailing_zeros() == 32).then_some(bits.leading_ones())
}

fn with_prefix(addr: &str, mask: Option<&str>) -> Option<String> {
    if addr.contains('/') {
        return Some(addr.to_string());
    }
    let p = match mask {
        Some(m) => prefix(m)?,
        None if addr.contains(':') => 64,
        None => 24,
    };
    Some(format!("{addr}/{p}"))
}

/// ifupdown: `iface X inet static` / `inet6 static` stanzas with `address` (and `netmask`).
pub fn ifupdown(text: &str) -> Addresses {
    let mut out = Vec::new();
    let mut cur: Option<(String, Option<String>, Option<String>)> = None;
    let mut flush = |c: &mut Option<(String, Option<String>, Option<String>)>| {
        if let Some((n, Some(a), m)) = c.take() {
            if let Some(a) = with_prefix(&a, m.as_deref()) {
                out.push((n, a));
            }
        }
    };
    for l in text.lines() {
        let w: Vec<&str> = l.split('#').next().unwrap_or("").split_whitespace().collect();
        match w.as_slice() {
            ["iface", name, _, method, ..] => {
                flush(&mut cur);
                cur = (*method == "static").then(|| (name.to_string(), None, None));
            }
            ["auto" | "allow-hotplug" | "mapping" | "source" | "source-directory", ..] => flush(&mut cur),
            ["address", a] => {
                if let Some(c) = cur.as_mut() {
                    c.1 = Some(a.to_string());
                }
            }
            ["netmask", m] => {
                if let Some(c) = cur.as_mut() {
                    c.2 = Some(m.to_string());
                }
            }
            _ => {}
        }
    }
    flush(&mut cur);
    out
}

fn kv<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().trim_matches('"'))
}

/// RHEL ifcfg: `IPADDR=` with `PREFIX=` or `NETMASK=` (BOOTPROTO none/static).
pub fn ifcfg(name: &str, text: &str) -> Addresses {
    if kv(text, "BOOTPROTO")
        .is_some_and(|b| b.eq_ignore_ascii_case("dhcp") || b.eq_ignore_ascii_case("bootp"))
    {
        return Vec::new();
    }
    let name = kv(text, "DEVICE").filter(|d| !d.is_empty()).unwrap_or(name);
    let Some(a) = kv(text, "IPADDR").filter(|a| !a.is_empty()) else { return Vec::new() };
    let mask = kv(text, "PREFIX").or(kv(text, "NETMASK"));
    with_prefix(a, mask).map(|a| vec![(name.to_string(), a)]).unwrap_or_default()
}

/// systemd-networkd `.network`: `Address=` in `[Network]` or `[Address]`, for the `[Match]`
/// names (or `mac:` when it matches by MAC only; `names` gives the interface).
pub fn networkd(text: &str, names: &[String]) -> Addresses {
    let mut sec = String::new();
    let mut addrs = Vec::new();
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            sec = t.to_string();
        } else if sec == "[Network]" || sec == "[Address]" {
            if let Some(a) = t.strip_prefix("Address=") {
                addrs.push(a.trim().to_string());
            }
        }
    }
    names.iter().flat_map(|n| addrs.iter().map(move |a| (n.clone(), a.clone()))).collect()
}

/// NetworkManager keyfile: `address1=ADDR/P[,GW]` (and address2…) in `[ipv4]`/`[ipv6]`.
pub fn nm_keyfile(text: &str) -> Addresses {
    let Some(name) = nm_keyfile_name(text) else { return Vec::new() };
    let mut sec = "";
    let mut out = Vec::new();
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            sec = t;
        } else if sec == "[ipv4]" || sec == "[ipv6]" {
            if let Some((k, v)) = t.split_once('=') {
                if k.trim().starts_with("address") && k.trim()[7..].chars().all(|c| c.is_ascii_digit()) {
                    if let Some(a) = v.split(',').next().and_then(|a| with_prefix(a.trim(), None)) {
                        out.push((name.clone(), a));
                    }
                }
            }
        }
    }
    out
}

/// netplan: `addresses:` of each `ethernets:` entry, as a flow list or a block list.
pub fn netplan(text: &str) -> Addresses {
    let names = netplan_names(text);
    let mut out = Vec::new();
    let mut cur: Option<&String> = None;
    let mut in_list: Option<usize> = None;
    for l in text.lines() {
        let t = l.trim();
        let ind = l.len() - l.trim_start().len();
        if let Some(n) = t.strip_suffix(':').and_then(|k| names.iter().find(|n| *n == k.trim_matches('"'))) {
            cur = Some(n);
            in_list = None;
            continue;
        }
        if let Some(li) = in_list {
            match t.strip_prefix("- ") {
                Some(a) if ind >= li => {
                    if let Some(n) = cur {
                        out.push((n.clone(), a.trim().trim_matches(|c| c == '"' || c == '\'').to_string()));
                    }
                    continue;
                }
                _ => in_list = None,
            }
        }
        if let (Some(n), Some(v)) = (cur, t.strip_prefix("addresses:")) {
            let v = v.trim();
            if v.starts_with('[') {
                for a in v.trim_matches(|c| c == '[' || c == ']').split(',') {
                    let a = a.trim().trim_matches(|c| c == '"' || c == '\'');
                    if !a.is_empty() {
                        out.push((n.clone(), a.to_string()));
                    }
                }
            } else {
                in_list = Some(ind);
            }
        }
    }
    out
}

/// Every static address the guest's configuration gives, by interface.
pub fn static_addresses(g: &GuestRoot) -> Result<Addresses> {
    let mut out = Vec::new();
    let mut interfaces = g.read_or_empty("etc/network/interfaces")?;
    for f in g.list("etc/network/interfaces.d")? {
        interfaces.push('\n');
        interfaces.push_str(&g.read_or_empty(&format!("etc/network/interfaces.d/{f}"))?);
    }
    out.extend(ifupdown(&interfaces));
    for dir in ["etc/sysconfig/network-scripts", "etc/sysconfig/network"] {
        for f in g.list(dir)? {
            if let Some(n) = f.strip_prefix("ifcfg-").filter(|n| !n.contains('.') && *n != "lo") {
                out.extend(ifcfg(n, &g.read_or_empty(&format!("{dir}/{f}"))?));
            }
        }
    }
    for f in g.list("etc/netplan")?.into_iter().filter(|f| f.ends_with(".yaml")) {
        out.extend(netplan(&g.read_or_empty(&format!("etc/netplan/{f}"))?));
    }
    for f in g.list("etc/systemd/network")?.into_iter().filter(|f| f.ends_with(".network")) {
        let text = g.read_or_empty(&format!("etc/systemd/network/{f}"))?;
        out.extend(networkd(&text, &networkd_names(&text)));
    }
    for f in g.list("etc/NetworkManager/system-connections")? {
        out.extend(nm_keyfile(&g.read_or_empty(&format!("etc/NetworkManager/system-connections/{f}"))?));
    }
    out.retain(|(n, _)| n != "lo");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: &[(&str, &str)]) -> Addresses {
        x.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn every_stack() {
        let i = "auto lo\niface lo inet loopback\nauto eth0\niface eth0 inet static\n  address 10.9.8.7\n  \
                 netmask 255.255.255.0 # lan\n  gateway 10.9.8.1\niface eth1 inet dhcp\n\
                 iface eth2 inet static\n address 192.0.2.5/28\n";
        assert_eq!(ifupdown(i), v(&[("eth0", "10.9.8.7/24"), ("eth2", "192.0.2.5/28")]));
        assert_eq!(
            ifcfg("eth0", "BOOTPROTO=none\nIPADDR=10.1.2.3\nNETMASK=255.255.0.0\n"),
            v(&[("eth0", "10.1.2.3/16")])
        );
        assert!(ifcfg("eth0", "BOOTPROTO=dhcp\n").is_empty());
        assert!(ifcfg("eth0", "BOOTPROTO=dhcp\nIPADDR=10.1.2.3\n").is_empty());
        assert_eq!(
            ifcfg("System_eth0", "DEVICE=eth1\nIPADDR=10.1.2.4\nPREFIX=8\n"),
            v(&[("eth1", "10.1.2.4/8")])
        );
        let n = "[Match]\nName=eth0\n[Network]\nAddress=10.0.0.5/8\n[Address]\nAddress=fd00::5/64\n";
        assert_eq!(networkd(n, &networkd_names(n)), v(&[("eth0", "10.0.0.5/8"), ("eth0", "fd00::5/64")]));
        let k = "[connection]\nid=x\ninterface-name=ens3\n[ipv4]\nmethod=manual\naddress1=172.16.0.9/12,172.16.0.1\n";
        assert_eq!(nm_keyfile(k), v(&[("ens3", "172.16.0.9/12")]));
        let p = "network:\n  version: 2\n  ethernets:\n    eth0:\n      addresses:\n        - 10.3.3.3/24\n        \
                 - \"fd00::3/64\"\n      routes: []\n    eth1:\n      addresses: [10.4.4.4/16]\n    eth2:\n      dhcp4: true\n";
        assert_eq!(
            netplan(p),
            v(&[("eth0", "10.3.3.3/24"), ("eth0", "fd00::3/64"), ("eth1", "10.4.4.4/16")])
        );
        assert_eq!(prefix("255.255.255.128"), Some(25));
        assert_eq!(prefix("255.0.255.0"), None);
    }

    #[test]
    fn on_a_tree() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc/network")).unwrap();
        std::fs::write(
            t.path().join("etc/network/interfaces"),
            "iface eth0 inet static\n address 10.0.2.15/24\n",
        )
        .unwrap();
        let g = GuestRoot::open(t.path()).unwrap();
        assert_eq!(static_addresses(&g).unwrap(), v(&[("eth0", "10.0.2.15/24")]));
    }
}
