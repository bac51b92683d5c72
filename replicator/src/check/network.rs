//! The path out of this machine: firewall rules (nftables, iptables) that drop or reject
//! outbound traffic to the appliance's ports, and proxy settings in the environment, which
//! ferry does not use (it connects directly).

use super::host::Host;
use super::{Item, Level};
use std::net::IpAddr;

/// Proxy variables ferry ignores.
const PROXY_VARS: &[&str] =
    &["http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"];

pub fn proxy(env: &[(String, String)]) -> Item {
    let set: Vec<String> = env
        .iter()
        .filter(|(k, v)| PROXY_VARS.contains(&k.as_str()) && !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if set.is_empty() {
        return Item::ok("proxy", "Proxy settings", "none in the environment");
    }
    Item::new(
        "proxy",
        Level::Warning,
        "Proxy settings",
        format!("{}: ferry does not use HTTP proxies", set.join(", ")),
    )
    .fix("ferry connects to the appliance directly: make sure its ports are reachable without the proxy")
    .val("variables", set)
}

/// Whether a port expression (`8703`, `8000-9000`, `8000:9000`, `{ 22, 8703 }`, `22,8703`)
/// covers `port`.
fn covers(expr: &str, port: u16) -> bool {
    expr.split([',', ' ', '{', '}']).filter(|s| !s.is_empty()).any(|p| match p.split_once(['-', ':']) {
        Some((a, b)) => {
            matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= port && port <= b)
        }
        None => p.parse::<u16>() == Ok(port),
    })
}

/// The port expression after `key` in a rule (a `{ … }` set whole).
fn after<'a>(rule: &'a str, key: &str) -> Option<&'a str> {
    let rest = rule.split_once(key)?.1.trim_start();
    if let Some(set) = rest.strip_prefix('{') {
        return Some(set.split_once('}').map_or(set, |(s, _)| s));
    }
    rest.split_whitespace().next()
}

/// Is `ip` inside `net` (an address or CIDR prefix)?
fn in_net(ip: &IpAddr, net: &str) -> bool {
    let (a, bits) = match net.split_once('/') {
        Some((a, b)) => (a, b.parse::<u32>().ok()),
        None => (net, None),
    };
    match (ip, a.parse::<IpAddr>()) {
        (IpAddr::V4(x), Ok(IpAddr::V4(n))) => {
            let b = bits.unwrap_or(32).min(32);
            let mask = if b == 0 { 0 } else { u32::MAX << (32 - b) };
            u32::from(*x) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(x), Ok(IpAddr::V6(n))) => {
            let b = bits.unwrap_or(128).min(128);
            let mask = if b == 0 { 0 } else { u128::MAX << (128 - b) };
            u128::from(*x) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Does a dropping rule hit TCP to `ports` on `addrs`? It must name a port or an address that
/// covers ours, or be a bare verdict (nothing but counters, logging, the protocol and the verdict).
/// Rules with conditions ferry cannot evaluate (connection state, interfaces, negations) are left
/// out: a Warning must not cry wolf.
fn hits(
    rule: &str,
    port_keys: &[&str],
    addr_keys: &[&str],
    neutral: &[&str],
    ports: &[u16],
    addrs: &[IpAddr],
) -> bool {
    if rule.contains("!=") || rule.contains(" ! ") || rule.contains("udp") {
        return false;
    }
    let port = port_keys.iter().find_map(|k| after(rule, k));
    let addr = addr_keys.iter().find_map(|k| after(rule, k));
    if port.is_none() && addr.is_none() {
        let mut words = rule.split_whitespace().peekable();
        while let Some(w) = words.next() {
            let skip_next = matches!(
                w,
                "packets"
                    | "bytes"
                    | "-A"
                    | "-p"
                    | "-j"
                    | "--reject-with"
                    | "with"
                    | "type"
                    | "prefix"
                    | "-m"
            );
            if skip_next {
                words.next();
            } else if !neutral.contains(&w) {
                return false;
            }
        }
        return true;
    }
    let port_hit = port.is_none_or(|e| ports.iter().any(|&p| covers(e, p)));
    let addr_hit = addr.is_none_or(|a| {
        addrs.is_empty()
            || a.split([',', ' ']).filter(|x| !x.is_empty()).any(|n| addrs.iter().any(|ip| in_net(ip, n)))
    });
    port_hit && addr_hit
}

/// Words of a bare nft verdict rule.
const NFT_NEUTRAL: &[&str] = &[
    "counter",
    "log",
    "drop",
    "reject",
    "tcp",
    "meta",
    "l4proto",
    "ip",
    "ip6",
    "icmp",
    "icmpv6",
    "tcp-reset",
    "admin-prohibited",
    "port-unreachable",
    "host-prohibited",
];
/// Words of a bare iptables verdict rule.
const IPT_NEUTRAL: &[&str] = &["DROP", "REJECT"];

/// nftables rules (from `nft list ruleset`) that would stop traffic to the appliance.
pub fn nft_blocks(ruleset: &str, ports: &[u16], addrs: &[IpAddr]) -> Vec<String> {
    let mut out = Vec::new();
    let mut output_chain = false;
    for l in ruleset.lines().map(str::trim) {
        if l.starts_with("chain ") {
            output_chain = false;
        } else if l.starts_with("type filter hook output") {
            output_chain = true;
            if l.contains("policy drop") {
                out.push(format!("nftables output chain: {l}"));
            }
        } else if output_chain
            && (l.ends_with(" drop") || l == "drop" || l.contains(" reject"))
            && hits(l, &["dport"], &["daddr"], NFT_NEUTRAL, ports, addrs)
        {
            out.push(format!("nftables: {l}"));
        }
    }
    out
}

/// iptables rules (from `iptables -S OUTPUT`) that would stop traffic to the appliance.
pub fn iptables_blocks(rules: &str, ports: &[u16], addrs: &[IpAddr]) -> Vec<String> {
    rules
        .lines()
        .map(str::trim)
        .filter(|l| {
            *l == "-P OUTPUT DROP"
                || (l.starts_with("-A OUTPUT")
                    && (l.contains("-j DROP") || l.contains("-j REJECT"))
                    && hits(l, &["--dport ", "--dports "], &["-d "], IPT_NEUTRAL, ports, addrs))
        })
        .map(|l| format!("iptables: {l}"))
        .collect()
}

/// The firewall item: what would drop traffic to `ports` on `addrs` (any address when empty).
pub fn firewall(h: &Host, ports: &[u16], addrs: &[IpAddr]) -> Item {
    const T: &str = "Outbound firewall";
    if !h.privileged {
        return Item::new("firewall", Level::Warning, T, "not inspected: listing the rules needs root")
            .fix("run ferry check as root");
    }
    let mut found = Vec::new();
    let mut looked = Vec::new();
    if let Ok(r) = h.run.run(None, &["nft", "list", "ruleset"]) {
        looked.push("nftables");
        found.extend(nft_blocks(&r, ports, addrs));
    }
    if let Ok(r) = h.run.run(None, &["iptables", "-S", "OUTPUT"]) {
        looked.push("iptables");
        found.extend(iptables_blocks(&r, ports, addrs));
    }
    let list = ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ");
    let i = if found.is_empty() {
        Item::ok(
            "firewall",
            T,
            if looked.is_empty() {
                "no nft or iptables on this machine".to_string()
            } else {
                format!("{}: nothing drops traffic to port {list}", looked.join(" and "))
            },
        )
    } else {
        Item::new("firewall", Level::Warning, T, found.join("; ")).fix(format!(
            "allow outbound TCP to the appliance on port {list} (an earlier accept rule may already do so; chains reached by jump are not followed)"
        ))
    };
    i.val("rules", found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NFT: &str = "table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		tcp dport 8703 drop
	}
	chain output {
		type filter hook output priority filter; policy accept;
		tcp dport { 22, 8703 } reject with icmp type admin-prohibited
		ip daddr 192.0.2.9 tcp dport 8080 drop
		tcp dport 9000-9100 drop
	}
}
";

    #[test]
    fn nft_rules_that_drop_the_appliance_ports() {
        let v = nft_blocks(NFT, &[8703], &[]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("{ 22, 8703 } reject"), "{v:?}");
        // The input chain's rule and other ports do not count.
        assert!(nft_blocks(NFT, &[443], &[]).is_empty());
        assert_eq!(nft_blocks(NFT, &[9050], &[]).len(), 1);
        // An address rule counts only for that address.
        let other: IpAddr = "192.0.2.10".parse().unwrap();
        assert!(nft_blocks(NFT, &[8080], &[other]).is_empty());
        assert_eq!(nft_blocks(NFT, &[8080], &["192.0.2.9".parse().unwrap()]).len(), 1);
        let drop_all = "chain output {\n type filter hook output priority 0; policy drop;\n}\n";
        assert_eq!(nft_blocks(drop_all, &[8703], &[]).len(), 1);
        // Conditions ferry cannot judge are left alone; bare verdicts, CIDRs and sets count.
        let out = |r: &str| {
            format!("chain output {{\n type filter hook output priority 0; policy accept;\n {r}\n}}\n")
        };
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(nft_blocks(&out("ct state invalid drop"), &[8703], &[ip]).is_empty());
        assert!(nft_blocks(&out("oifname \"eth1\" drop"), &[8703], &[ip]).is_empty());
        assert!(nft_blocks(&out("tcp dport != 22 drop"), &[8703], &[ip]).is_empty());
        assert_eq!(nft_blocks(&out("counter packets 0 bytes 0 drop"), &[8703], &[ip]).len(), 1);
        assert_eq!(nft_blocks(&out("ip daddr 10.0.0.0/8 drop"), &[8703], &[ip]).len(), 1);
        assert_eq!(nft_blocks(&out("ip daddr { 192.0.2.1, 10.1.2.3 } reject"), &[8703], &[ip]).len(), 1);
        assert!(nft_blocks(&out("ip daddr 192.168.0.0/16 drop"), &[8703], &[ip]).is_empty());
    }

    #[test]
    fn iptables_rules_that_drop_the_appliance_ports() {
        let rules = "-P OUTPUT ACCEPT\n-A OUTPUT -p tcp -m tcp --dport 8703 -j DROP\n-A OUTPUT -p tcp -m multiport --dports 8000:8100 -j REJECT --reject-with icmp-port-unreachable\n-A OUTPUT -p tcp --dport 22 -j DROP\n";
        assert_eq!(iptables_blocks(rules, &[8703], &[]).len(), 1);
        assert_eq!(iptables_blocks(rules, &[8080], &[]).len(), 1);
        assert!(iptables_blocks(rules, &[443], &[]).is_empty());
        assert_eq!(iptables_blocks("-P OUTPUT DROP\n", &[8703], &[]), ["iptables: -P OUTPUT DROP"]);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(iptables_blocks("-A OUTPUT -j DROP\n", &[8703], &[ip]).len(), 1);
        assert_eq!(
            iptables_blocks(
                "-A OUTPUT -d 10.1.0.0/16 -j REJECT --reject-with icmp-net-prohibited\n",
                &[8703],
                &[ip]
            )
            .len(),
            1
        );
        assert!(
            iptables_blocks("-A OUTPUT -m conntrack --ctstate INVALID -j DROP\n", &[8703], &[ip]).is_empty()
        );
        assert!(iptables_blocks("-A OUTPUT -p udp --dport 8703 -j DROP\n", &[8703], &[ip]).is_empty());
    }

    #[test]
    fn firewall_item_from_the_commands() {
        let mut h = Host::system();
        h.privileged = true;
        h.run = Box::new(ferry_convert::cmd::Recorder {
            answers: vec![("nft".into(), Ok(NFT.into())), ("iptables".into(), Err("not found".into()))],
            ..Default::default()
        });
        let i = firewall(&h, &[8703, 8080], &[]);
        assert_eq!(i.level, Level::Warning);
        assert!(i.detail.contains("reject") && i.remediation.contains("8703, 8080"), "{i:?}");
    }

    #[test]
    fn proxies_are_named() {
        let env = vec![
            ("https_proxy".to_string(), "http://proxy:3128".to_string()),
            ("PATH".into(), "/bin".into()),
        ];
        let i = proxy(&env);
        assert_eq!(i.level, Level::Warning);
        assert!(i.detail.contains("https_proxy=http://proxy:3128"));
        assert_eq!(proxy(&[]).level, Level::Ok);
    }
}
