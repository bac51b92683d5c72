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

/// The plan: (old, new) for each configured interface, and whether `net.ifnames=0` is needed.
pub fn plan(old: &[String], nics: &Nics) -> (Vec<(String, String)>, bool) {
    match nics {
        Nics::Names(v) if !v.is_empty() => (old.iter().cloned().zip(v.iter().cloned()).collect(), false),
        _ => {
            let pairs: Vec<(String, String)> =
                old.iter().enumerate().map(|(i, o)| (o.clone(), format!("eth{i}"))).collect();
            let needed = !pairs.is_empty();
            (pairs, needed)
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
        let (p, _) = plan(&s(&["ens192", "eth0"]), &Nics::Kernel);
        assert_eq!(p, vec![("ens192".into(), "eth0".into()), ("eth0".into(), "eth1".into())]);
        let r = rename_order(&p);
        assert_eq!(r[0], ("ens192".into(), "ferrynic0".into()));
        assert_eq!(r.last().unwrap(), &("ferrynic1".to_string(), "eth1".to_string()));
        let (p, _) = plan(&s(&["eth0", "ens4"]), &Nics::Kernel);
        assert_eq!(rename_order(&p), vec![("ens4".into(), "eth1".into()), ("eth0".into(), "eth0".into())]);
        assert_eq!(plan(&[], &Nics::Kernel), (vec![], false));
        let (p, k) = plan(&s(&["eth0"]), &Nics::Names(s(&["ens3"])));
        assert_eq!((p, k), (vec![("eth0".into(), "ens3".into())], false));
    }
}
