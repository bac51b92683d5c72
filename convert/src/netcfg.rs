//! Network configuration of the migrated system: MAC bindings go (persistent-net udev rules,
//! `HWADDR=`/`MACADDR=`, netplan `match: macaddress` and `set-name`, networkd `[Match]
//! MACAddress=`, `hwaddress` lines), static addresses, routes and DNS stay, moved from the old
//! interface name to the name the new VM's NIC will have. DHCP configurations stay DHCP.

/// `w` renamed when it names interface `old`: the name itself, an alias (`old:1`) or a VLAN
/// on it (`old.100`).
pub fn rename_word(w: &str, old: &str, new: &str) -> Option<String> {
    if w == old {
        return Some(new.to_string());
    }
    let rest = w.strip_prefix(old)?;
    (rest.starts_with(':') || rest.starts_with('.')).then(|| format!("{new}{rest}"))
}

/// ifupdown options whose values are interface names (bridges, bonds, VLANs).
const IFUPDOWN_REFS: &[&str] = &[
    "bridge_ports",
    "bridge-ports",
    "bond-slaves",
    "bond_slaves",
    "slaves",
    "bond-primary",
    "bond_primary",
    "vlan-raw-device",
    "vlan_raw_device",
];

/// Renames interface `old` to `new` in /etc/network/interfaces (stanzas, aliases, VLANs and
/// the bridge, bond and VLAN options naming it) and drops `hwaddress` bindings.
pub fn interfaces(text: &str, old: &str, new: &str) -> String {
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with("hwaddress ") {
            continue;
        }
        let words: Vec<&str> = t.split_whitespace().collect();
        let Some(first) = words.first().copied() else {
            out.push_str(line);
            continue;
        };
        let stanza = matches!(first, "auto" | "allow-hotplug" | "allow-auto" | "iface" | "mapping");
        let option = IFUPDOWN_REFS.contains(&first);
        let renamed: Vec<String> = words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let is_name = i >= 1 && ((stanza && (first != "iface" || i == 1)) || option);
                is_name.then(|| rename_word(w, old, new)).flatten().unwrap_or_else(|| w.to_string())
            })
            .collect();
        if renamed.iter().zip(&words).all(|(a, b)| a == b) {
            out.push_str(line);
            continue;
        }
        out.push_str(&line[..line.len() - t.len()]);
        out.push_str(&renamed.join(" "));
        if line.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// RHEL/SUSE ifcfg: drop MAC bindings, point DEVICE/NAME (and a VLAN's PHYSDEV) at the new
/// interface.
pub fn ifcfg(text: &str, old: &str, new: &str) -> String {
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let key = line.split('=').next().unwrap_or("").trim();
        match key {
            "HWADDR" | "MACADDR" => continue,
            "DEVICE" | "NAME" | "PHYSDEV" => {
                let v = line.split_once('=').map(|x| x.1.trim().trim_matches(['"', '\''])).unwrap_or("");
                match rename_word(v, old, new) {
                    Some(n) => out.push_str(&format!("{key}={n}\n")),
                    None => out.push_str(line),
                }
            }
            _ => out.push_str(line),
        }
    }
    out
}

fn indent(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

/// A netplan `interfaces: [a, b]` list (bonds, bridges) with `old` renamed; `None` when the
/// line is something else or does not name it.
fn netplan_list(t: &str, old: &str, new: &str) -> Option<Vec<String>> {
    let list = t.strip_prefix("interfaces:")?.trim().strip_prefix('[')?.strip_suffix(']')?;
    let items: Vec<&str> = list.split(',').map(str::trim).filter(|x| !x.is_empty()).collect();
    let renamed: Vec<String> =
        items.iter().map(|x| rename_word(x, old, new).unwrap_or_else(|| x.to_string())).collect();
    (renamed.iter().zip(&items).any(|(a, b)| a != b)).then_some(renamed)
}

/// netplan YAML: drops `match:` blocks that bind a MAC and `set-name:`, renames the interface.
pub fn netplan(text: &str, old: &str, new: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        let t = l.trim();
        if t == "match:" {
            // Skip the block if it binds a MAC address.
            let ind = indent(l);
            let mut j = i + 1;
            let mut mac = false;
            while j < lines.len() && (lines[j].trim().is_empty() || indent(lines[j]) > ind) {
                mac |= lines[j].trim_start().starts_with("macaddress:");
                j += 1;
            }
            if mac {
                i = j;
                continue;
            }
        }
        if t.starts_with("set-name:") {
            i += 1;
            continue;
        }
        let key = t.strip_suffix(':').and_then(|k| rename_word(k.trim_matches('"'), old, new));
        if let Some(k) = key.filter(|_| !t.contains(' ')) {
            out.push_str(&format!("{}{k}:{}", &l[..indent(l)], if l.ends_with('\n') { "\n" } else { "" }));
        } else if let Some(v) = t.strip_prefix("link:").and_then(|v| rename_word(v.trim(), old, new)) {
            out.push_str(&format!(
                "{}link: {v}{}",
                &l[..indent(l)],
                if l.ends_with('\n') { "\n" } else { "" }
            ));
        } else if let Some(items) = netplan_list(t, old, new) {
            let nl = if l.ends_with('\n') { "\n" } else { "" };
            out.push_str(&format!("{}interfaces: [{}]{nl}", &l[..indent(l)], items.join(", ")));
        } else {
            out.push_str(l);
        }
        i += 1;
    }
    out
}

/// systemd-networkd .network: `[Match] Name=<old>`, or `MACAddress=` one of `macs` (the old
/// interface's addresses), becomes `Name=<new>`.
pub fn networkd(text: &str, old: &str, new: &str, macs: &[String]) -> String {
    let mut out = String::new();
    let mut in_match = false;
    let mut named = false;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') {
            in_match = t == "[Match]";
        }
        let mac = t
            .strip_prefix("MACAddress=")
            .is_some_and(|v| v.split_whitespace().any(|m| macs.iter().any(|x| x.eq_ignore_ascii_case(m))));
        if in_match && (mac || t == format!("Name={old}")) {
            if !named {
                out.push_str(&format!("Name={new}\n"));
                named = true;
            }
            continue;
        }
        out.push_str(line);
    }
    out
}

/// Tracks the section of a keyfile line (`[802-3-ethernet]` is the long name of `[ethernet]`).
pub(crate) fn keyfile_section(t: &str, cur: &mut String) {
    if t.starts_with('[') && t.ends_with(']') {
        *cur = if t == "[802-3-ethernet]" { "[ethernet]".to_string() } else { t.to_string() };
    }
}

/// A keyfile `key=value` line, spaces around `=` allowed.
pub(crate) fn keyfile_kv(t: &str) -> Option<(&str, &str)> {
    t.split_once('=').map(|(k, v)| (k.trim(), v.trim()))
}

/// NetworkManager keyfile: MAC bindings out (`[ethernet] mac-address=`; the connection then
/// applies to the interface it names, or to any ethernet NIC).
pub fn nm_keyfile_unbind(text: &str) -> String {
    let mut sec = String::new();
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        keyfile_section(t, &mut sec);
        let key = keyfile_kv(t).map(|kv| kv.0);
        if sec == "[ethernet]" && matches!(key, Some("mac-address" | "mac-address-blacklist")) {
            continue;
        }
        out.push_str(line);
    }
    out
}

/// `interface-name=<new>` at the end of `out`, before the blank lines that end its section.
fn name_here(out: &mut String, new: &str) {
    let tail = out.split_off(out.trim_end_matches('\n').len());
    out.push_str(&format!("\ninterface-name={new}{}", if tail.is_empty() { "\n" } else { &tail }));
}

/// NetworkManager keyfile: `interface-name=<old>` becomes `<new>` (its id stays); a
/// connection bound only by `[ethernet] mac-address=` one of `macs` (the old interface's
/// addresses) gets `interface-name=<new>`, so it keeps its NIC once the MAC binding goes.
pub fn nm_keyfile(text: &str, old: &str, new: &str, macs: &[String]) -> String {
    let by_mac = crate::ifaces::nm_keyfile_name(text).is_none()
        && crate::ifaces::nm_keyfile_mac(text)
            .is_some_and(|m| macs.iter().any(|x| x.eq_ignore_ascii_case(&m)));
    let mut sec = String::new();
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        let was = sec.clone();
        keyfile_section(t, &mut sec);
        if by_mac && was == "[connection]" && sec != was {
            name_here(&mut out, new);
        }
        let renamed = match t.split_once('=') {
            Some(("interface-name", v)) if sec == "[connection]" => rename_word(v.trim(), old, new),
            Some(("parent", v)) if sec == "[vlan]" => rename_word(v.trim(), old, new),
            _ => None,
        };
        if let (Some(n), Some((k, _))) = (renamed, t.split_once('=')) {
            out.push_str(&format!("{k}={n}\n"));
            continue;
        }
        out.push_str(line);
    }
    if by_mac && sec == "[connection]" {
        name_here(&mut out, new);
    }
    out
}

/// A udev rules file that only names interfaces by MAC (persistent-net): delete it.
pub fn is_persistent_net_rules(name: &str, text: &str) -> bool {
    name.contains("persistent-net")
        || text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .all(|l| l.contains("SUBSYSTEM==\"net\"") && l.contains("ATTR{address}") && l.contains("NAME="))
            && text.lines().any(|l| l.contains("NAME="))
}

/// A systemd .link file matching a MAC address: the old NIC's name binding.
pub fn is_mac_link(text: &str) -> bool {
    text.lines().any(|l| {
        l.trim_start().starts_with("MACAddress=") || l.trim_start().starts_with("PermanentMACAddress=")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_static_moves_dhcp_stays() {
        let before = "\
source /etc/network/interfaces.d/*
auto lo
iface lo inet loopback

auto eth0
allow-hotplug eth0
iface eth0 inet static
    address 192.0.2.10/24
    gateway 192.0.2.1
    hwaddress ether 00:16:3e:00:00:01
    dns-nameservers 192.0.2.53
iface eth0 inet6 auto
auto eth0:1
iface eth0:1 inet static
    address 192.0.2.11/24
auto eth1
iface eth1 inet dhcp
";
        let after = "\
source /etc/network/interfaces.d/*
auto lo
iface lo inet loopback

auto ens3
allow-hotplug ens3
iface ens3 inet static
    address 192.0.2.10/24
    gateway 192.0.2.1
    dns-nameservers 192.0.2.53
iface ens3 inet6 auto
auto ens3:1
iface ens3:1 inet static
    address 192.0.2.11/24
auto eth1
iface eth1 inet dhcp
";
        assert_eq!(interfaces(before, "eth0", "ens3"), after);
        assert_eq!(interfaces(after, "eth0", "ens3"), after);
    }

    #[test]
    fn references_from_bridges_bonds_and_vlans() {
        let before = "auto br0\niface br0 inet static\n    bridge_ports ens3 ens4\n    address 192.0.2.10/24\nauto ens3.100\niface ens3.100 inet manual\n    vlan-raw-device ens3\n";
        let after = "auto br0\niface br0 inet static\n    bridge_ports eth0 ens4\n    address 192.0.2.10/24\nauto eth0.100\niface eth0.100 inet manual\n    vlan-raw-device eth0\n";
        assert_eq!(interfaces(before, "ens3", "eth0"), after);
        assert_eq!(interfaces(after, "ens3", "eth0"), after);
        let plan = "  bonds:\n    bond0:\n      interfaces: [ens3, ens4]\n  vlans:\n    ens3.100:\n      link: ens3\n";
        assert_eq!(
            netplan(plan, "ens3", "eth0"),
            "  bonds:\n    bond0:\n      interfaces: [eth0, ens4]\n  vlans:\n    eth0.100:\n      link: eth0\n"
        );
        assert_eq!(
            netplan("      interfaces: [ens4,ens5]\n", "ens3", "eth0"),
            "      interfaces: [ens4,ens5]\n"
        );
        let vlan = "[connection]\nid=v100\ninterface-name=ens3.100\ntype=vlan\n[vlan]\nid=100\nparent=ens3\n";
        assert_eq!(
            nm_keyfile(vlan, "ens3", "eth0", &[]),
            "[connection]\nid=v100\ninterface-name=eth0.100\ntype=vlan\n[vlan]\nid=100\nparent=eth0\n"
        );
        assert_eq!(
            ifcfg("DEVICE=ens3.100\nPHYSDEV=ens3\nVLAN=yes\n", "ens3", "eth0"),
            "DEVICE=eth0.100\nPHYSDEV=eth0\nVLAN=yes\n"
        );
        assert_eq!(rename_word("ens30", "ens3", "eth0"), None);
    }

    #[test]
    fn nm_keyfile_bound_by_mac_only_gets_its_new_name() {
        let before = "[connection]\nid=Wired connection 1\ntype=ethernet\n\n[ethernet]\nmac-address=00:16:3E:5E:6C:01\n\n[ipv4]\nmethod=manual\n";
        let macs = vec!["00:16:3e:5e:6c:01".to_string()];
        let named = nm_keyfile(before, "mac:00:16:3e:5e:6c:01", "eth0", &macs);
        assert_eq!(
            named,
            "[connection]\nid=Wired connection 1\ntype=ethernet\ninterface-name=eth0\n\n[ethernet]\nmac-address=00:16:3E:5E:6C:01\n\n[ipv4]\nmethod=manual\n"
        );
        assert_eq!(nm_keyfile(&named, "mac:00:16:3e:5e:6c:01", "eth0", &macs), named, "idempotent");
        assert_eq!(
            nm_keyfile_unbind(&named),
            "[connection]\nid=Wired connection 1\ntype=ethernet\ninterface-name=eth0\n\n[ethernet]\n\n[ipv4]\nmethod=manual\n"
        );
        // The long section name and spaces around `=`, as some writers use them.
        let long = "[connection]\nid=w\n[802-3-ethernet]\nmac-address = 00:16:3e:5e:6c:01\n";
        assert_eq!(
            nm_keyfile_unbind(&nm_keyfile(long, "mac:00:16:3e:5e:6c:01", "eth0", &macs)),
            "[connection]\nid=w\ninterface-name=eth0\n[802-3-ethernet]\n"
        );
        // Another NIC's MAC: left alone.
        assert_eq!(
            nm_keyfile(before, "mac:00:16:3e:5e:6c:02", "eth1", &["00:16:3e:5e:6c:02".into()]),
            before
        );
        // [connection] last in the file.
        assert_eq!(
            nm_keyfile(
                "[ethernet]\nmac-address=00:16:3e:5e:6c:01\n[connection]\nid=x",
                "eth0",
                "eth0",
                &macs
            ),
            "[ethernet]\nmac-address=00:16:3e:5e:6c:01\n[connection]\nid=x\ninterface-name=eth0\n"
        );
    }

    #[test]
    fn ifcfg_drops_mac() {
        let before = "DEVICE=eth0\nHWADDR=00:16:3E:00:00:01\nBOOTPROTO=none\nIPADDR=192.0.2.10\nPREFIX=24\nGATEWAY=192.0.2.1\nDNS1=192.0.2.53\nNAME=\"eth0\"\nONBOOT=yes\n";
        let after = "DEVICE=ens3\nBOOTPROTO=none\nIPADDR=192.0.2.10\nPREFIX=24\nGATEWAY=192.0.2.1\nDNS1=192.0.2.53\nNAME=ens3\nONBOOT=yes\n";
        assert_eq!(ifcfg(before, "eth0", "ens3"), after);
    }

    #[test]
    fn netplan_drops_match_and_set_name() {
        let before = "\
network:
  version: 2
  ethernets:
    eth0:
      match:
        macaddress: 00:16:3e:00:00:01
      set-name: eth0
      addresses: [192.0.2.10/24]
      routes:
        - to: default
          via: 192.0.2.1
      nameservers:
        addresses: [192.0.2.53]
    eth1:
      match:
        driver: ixgbe
      dhcp4: true
";
        let after = "\
network:
  version: 2
  ethernets:
    ens3:
      addresses: [192.0.2.10/24]
      routes:
        - to: default
          via: 192.0.2.1
      nameservers:
        addresses: [192.0.2.53]
    eth1:
      match:
        driver: ixgbe
      dhcp4: true
";
        assert_eq!(netplan(before, "eth0", "ens3"), after);
        assert_eq!(netplan(after, "eth0", "ens3"), after);
    }

    #[test]
    fn networkd_match_by_mac_becomes_name() {
        let before = "[Match]\nMACAddress=00:16:3e:00:00:01\n\n[Network]\nAddress=192.0.2.10/24\nGateway=192.0.2.1\nDNS=192.0.2.53\n";
        let after =
            "[Match]\nName=ens3\n\n[Network]\nAddress=192.0.2.10/24\nGateway=192.0.2.1\nDNS=192.0.2.53\n";
        let macs = vec!["00:16:3E:00:00:01".to_string()];
        assert_eq!(networkd(before, "eth0", "ens3", &macs), after);
        assert_eq!(networkd(before, "eth1", "ens4", &[]), before, "another NIC's MAC stays");
        assert_eq!(
            networkd("[Match]\nName=eth0\n[Network]\nDHCP=yes\n", "eth0", "ens3", &[]),
            "[Match]\nName=ens3\n[Network]\nDHCP=yes\n"
        );
        assert!(is_mac_link("[Match]\nMACAddress=00:16:3e:00:00:01\n[Link]\nName=lan0\n"));
    }

    #[test]
    fn udev_rules() {
        let persistent = "# generated\nSUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:16:3e:5e:6c:01\", KERNEL==\"eth*\", NAME=\"eth0\"\n";
        assert!(is_persistent_net_rules("70-persistent-net.rules", persistent));
        assert!(is_persistent_net_rules("99-names.rules", persistent));
        assert!(!is_persistent_net_rules(
            "60-disks.rules",
            "KERNEL==\"sd*\", ATTR{queue/scheduler}=\"none\"\n"
        ));
    }
}
