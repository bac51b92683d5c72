//! Network bring-up from the `ip=` parameters: static addresses and routes over rtnetlink,
//! DHCP with our own client. Without any `ip=`, every Ethernet link tries DHCP.

pub mod dhcp;
pub mod netlink;

use crate::cmdline::IpConfig;
use anyhow::{Context, Result};
use netlink::{Link, Netlink};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

fn parse_mac(s: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (i, p) in s.split(':').take(6).enumerate() {
        mac[i] = u8::from_str_radix(p, 16).unwrap_or(0);
    }
    mac
}

/// Current links with their addresses (for /status).
pub fn links() -> Vec<Link> {
    Netlink::open().and_then(|mut n| n.links()).unwrap_or_default()
}

fn pick<'a>(links: &'a [Link], iface: &Option<String>) -> Result<&'a Link> {
    match iface {
        Some(name) => links.iter().find(|l| &l.name == name).with_context(|| {
            let names: Vec<_> = links.iter().filter(|l| l.ethernet).map(|l| l.name.as_str()).collect();
            format!("interface {name} not found (have: {})", names.join(", "))
        }),
        None => links.iter().find(|l| l.ethernet).context("no Ethernet interface found"),
    }
}

fn wait_carrier(nl: &mut Netlink, index: u32) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if nl.links().ok().and_then(|ls| ls.into_iter().find(|l| l.index == index)).is_some_and(|l| l.carrier)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn apply_static(
    nl: &mut Netlink,
    link: &Link,
    addr: Ipv4Addr,
    prefix: u8,
    gw: Option<Ipv4Addr>,
) -> Result<()> {
    nl.set_up(link.index)?;
    nl.add_address(link.index, addr, prefix)?;
    if let Some(gw) = gw {
        nl.add_default_route(link.index, gw)?;
    }
    log::info!(
        "network: {} = {addr}/{prefix}{}",
        link.name,
        gw.map(|g| format!(" via {g}")).unwrap_or_default()
    );
    Ok(())
}

fn dhcp(link: &Link) -> Result<()> {
    let mut nl = Netlink::open()?;
    nl.set_up(link.index)?;
    wait_carrier(&mut nl, link.index);
    let lease = dhcp::acquire(&link.name, parse_mac(&link.mac), Duration::from_secs(60))?;
    apply_static(&mut nl, link, lease.addr, lease.prefix, lease.router)?;
    if !lease.dns.is_empty() {
        let conf: String = lease.dns.iter().map(|d| format!("nameserver {d}\n")).collect();
        let _ = std::fs::write("/etc/resolv.conf", conf);
    }
    log::info!("network: DHCP lease on {} from {} for {}s", link.name, lease.server, lease.lease_s);
    Ok(())
}

/// Brings up loopback and every `ip=` configuration. Returns the problems found.
pub fn configure(ips: &[IpConfig]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut nl = match Netlink::open() {
        Ok(n) => n,
        Err(e) => return vec![format!("network: {e:#}")],
    };
    let links = nl.links().unwrap_or_default();
    if let Some(lo) = links.iter().find(|l| l.name == "lo") {
        let _ = nl.set_up(lo.index);
    }
    let default = [IpConfig::Dhcp { iface: None }];
    let ips = if ips.is_empty() { &default[..] } else { ips };
    let mut dhcp_links = Vec::new();
    for ip in ips {
        match ip {
            IpConfig::Static { addr, prefix, gateway, hostname, iface } => {
                let r = pick(&links, iface).and_then(|l| apply_static(&mut nl, l, *addr, *prefix, *gateway));
                if let Err(e) = r {
                    problems.push(format!("ip={addr}: {e:#}"));
                }
                if let Some(h) = hostname {
                    let _ = nix::unistd::sethostname(h);
                }
            }
            IpConfig::Dhcp { iface: Some(name) } => match pick(&links, &Some(name.clone())) {
                Ok(l) => dhcp_links.push(l.clone()),
                Err(e) => problems.push(format!("ip=dhcp: {e:#}")),
            },
            IpConfig::Dhcp { iface: None } => {
                let eth: Vec<_> = links.iter().filter(|l| l.ethernet).cloned().collect();
                if eth.is_empty() {
                    problems.push("ip=dhcp: no Ethernet interface found".into());
                }
                dhcp_links.extend(eth);
            }
        }
    }
    // DHCP on all chosen links in parallel; one failing link is a problem, not a stop.
    let handles: Vec<_> = dhcp_links
        .into_iter()
        .map(|l| std::thread::spawn(move || dhcp(&l).map_err(|e| format!("dhcp on {}: {e:#}", l.name))))
        .collect();
    for h in handles {
        if let Ok(Err(e)) = h.join() {
            problems.push(e);
        }
    }
    problems
}
