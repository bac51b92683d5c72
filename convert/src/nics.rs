//! Names the NICs will have on the new machine. By default the kernel's own names, pinned with
//! `net.ifnames=0`: the kernel numbers NICs eth0, eth1… in the order their bus enumerates them,
//! so the names do not depend on which PCI slot a NIC sits in (udev's predictable names do:
//! `ens3` on one VM is `ens4` on the next, and a static configuration on the old name would not
//! come up). The old configuration's interfaces, first to last, become eth0, eth1… Explicit
//! names (`ferry-init convert --nic`) are used as given instead.

use serde::Serialize;

/// How the new machine's NICs are named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Nics {
    /// eth0, eth1… in bus order (`net.ifnames=0`).
    Kernel,
    /// These names, in order.
    Names(Vec<String>),
}

/// Interfaces that are not NICs (bonds, bridges, VLANs, tunnels, Wi-Fi…): never renamed
/// themselves; their references to NICs are.
const VIRTUAL: &[&str] = &[
    "lo", "bond", "br", "team", "vlan", "virbr", "docker", "veth", "tun", "tap", "wg", "vxlan", "dummy",
    "ppp", "wl",
];

/// Whether an old interface name is a NIC's (a `mac:ADDR` pseudo-name is).
pub fn is_nic(name: &str) -> bool {
    name.starts_with("mac:")
        || (!name.contains(['.', ':']) && !VIRTUAL.iter().any(|p| name.starts_with(p)) && !name.is_empty())
}

/// Where a NIC sat on the old machine, as far as its name tells: `ethN` its kernel index,
/// predictable names their bus numbers (`ens192` < `ens224`, `enp0s3` < `enp0s8`), a MAC
/// nothing names last.
fn hardware_order(name: &str) -> (u8, Vec<u64>) {
    if let Some(n) = name.strip_prefix("eth").and_then(|d| d.parse().ok()) {
        return (0, vec![n]);
    }
    if name.starts_with("mac:") {
        return (2, Vec::new());
    }
    let digits = name
        .split(|c: char| !c.is_ascii_digit())
        .filter(|d| !d.is_empty())
        .map(|d| d.parse().unwrap_or(u64::MAX))
        .collect();
    (1, digits)
}

/// The plan: (old, new) for each configured NIC, and whether `net.ifnames=0` is needed. With
/// kernel names, `ethN` keeps its N; the other NICs take the free numbers in the order they
/// had on the old machine's bus (not the order their files happen to be read in).
pub fn plan(old: &[String], nics: &Nics) -> (Vec<(String, String)>, bool) {
    let nics_only: Vec<&String> = old.iter().filter(|n| is_nic(n)).collect();
    match nics {
        Nics::Names(v) if !v.is_empty() => {
            let mut sorted = nics_only.clone();
            sorted.sort_by_key(|n| hardware_order(n));
            (sorted.into_iter().cloned().zip(v.iter().cloned()).collect(), false)
        }
        _ => {
            let mut taken: Vec<u64> =
                nics_only.iter().filter_map(|n| n.strip_prefix("eth")?.parse().ok()).collect();
            let mut rest: Vec<&String> =
                nics_only.iter().copied().filter(|n| hardware_order(n).0 != 0).collect();
            rest.sort_by_key(|n| hardware_order(n));
            let mut pairs: Vec<(u64, String)> = nics_only
                .iter()
                .filter_map(|n| Some((n.strip_prefix("eth")?.parse().ok()?, n.to_string())))
                .collect();
            let mut next = 0u64;
            for n in rest {
                while taken.contains(&next) {
                    next += 1;
                }
                taken.push(next);
                pairs.push((next, n.clone()));
            }
            pairs.sort();
            let out: Vec<(String, String)> = pairs.into_iter().map(|(i, o)| (o, format!("eth{i}"))).collect();
            let needed = !out.is_empty();
            (out, needed)
        }
    }
}

/// The renames to apply, in an order that never renames onto a name still in use: when a new
/// name is also an old one (ens3→eth0 while eth0→eth1), through temporary names first. Names
/// that stay come last as (name, name): their MAC bindings go all the same.
pub fn rename_order(pairs: &[(String, String)]) -> Vec<(String, String)> {
    let moves: Vec<&(String, String)> = pairs.iter().filter(|(a, b)| a != b).collect();
    let stays = pairs.iter().filter(|(a, b)| a == b).cloned();
    let clash = moves.iter().any(|(_, b)| pairs.iter().any(|(a, _)| a == b));
    if !clash {
        return moves.into_iter().cloned().chain(stays).collect();
    }
    let tmp = |i: usize| format!("ferrynic{i}");
    let mut out: Vec<(String, String)> =
        moves.iter().enumerate().map(|(i, (a, _))| (a.clone(), tmp(i))).collect();
    out.extend(moves.iter().enumerate().map(|(i, (_, b))| (tmp(i), b.clone())));
    out.extend(stays);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn kernel_names_in_order() {
        let (p, k) = plan(&s(&["eth0", "eth1"]), &Nics::Kernel);
        assert!(k);
        assert_eq!(rename_order(&p), p, "names that stay are still unbound from their MACs");
        // eth0 keeps its number; ens192 takes the next.
        let (p, _) = plan(&s(&["ens192", "eth0"]), &Nics::Kernel);
        assert_eq!(p, vec![("eth0".into(), "eth0".into()), ("ens192".into(), "eth1".into())]);
        // Explicit names that swap two old ones go through temporary names.
        let (p, _) = plan(&s(&["eth0", "eth1"]), &Nics::Names(s(&["eth1", "eth0"])));
        let r = rename_order(&p);
        assert_eq!(r[0], ("eth0".into(), "ferrynic0".into()));
        assert_eq!(r.last().unwrap(), &("ferrynic1".to_string(), "eth0".to_string()));
        let (p, _) = plan(&s(&["eth0", "ens4"]), &Nics::Kernel);
        assert_eq!(rename_order(&p), vec![("ens4".into(), "eth1".into()), ("eth0".into(), "eth0".into())]);
        assert_eq!(plan(&[], &Nics::Kernel), (vec![], false));
        let (p, k) = plan(&s(&["eth0"]), &Nics::Names(s(&["ens3"])));
        assert_eq!((p, k), (vec![("eth0".into(), "ens3".into())], false));
    }

    #[test]
    fn hardware_order_not_file_order() {
        // Keyfiles read as lan (ens224) then mgmt (ens192): ens192 was first on the bus.
        let (p, _) = plan(&s(&["ens224", "ens192"]), &Nics::Kernel);
        assert_eq!(p, vec![("ens192".into(), "eth0".into()), ("ens224".into(), "eth1".into())]);
        // eth1 alone keeps its number; enp0s8 < enp0s10 numerically.
        assert_eq!(plan(&s(&["eth1"]), &Nics::Kernel).0, vec![("eth1".into(), "eth1".into())]);
        let (p, _) = plan(&s(&["enp0s10", "enp0s8", "eth0"]), &Nics::Kernel);
        assert_eq!(p[1..], [("enp0s8".into(), "eth1".into()), ("enp0s10".into(), "eth2".into())]);
        // Bonds, bridges and VLANs are not NICs.
        let (p, _) = plan(&s(&["bond0", "br0", "ens3.100", "ens3", "ens4"]), &Nics::Kernel);
        assert_eq!(p, vec![("ens3".into(), "eth0".into()), ("ens4".into(), "eth1".into())]);
    }
}
