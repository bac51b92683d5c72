//! Parses the kernel command line into the appliance [`Config`]. Every `ferry.*` key we do not
//! know and every malformed value becomes a problem string (logged and shown in /status); the
//! parse never fails, so the appliance always comes up reachable.

use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddr};

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8703";
pub const DEFAULT_STATUS: &str = "0.0.0.0:8080";

/// What the appliance does when its job ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum After {
    Poweroff,
    Reboot,
    Wait,
}

/// One `ip=` parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum IpConfig {
    Dhcp {
        iface: Option<String>,
    },
    Static {
        addr: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
        hostname: Option<String>,
        iface: Option<String>,
    },
}

/// A command line fit for logs: the value of `ferry.token=` is hidden.
pub fn redact(line: &str) -> String {
    line.split(' ')
        .map(|w| match w.split_once('=') {
            Some(("ferry.token", _)) => "ferry.token=(hidden)".to_string(),
            _ => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    #[serde(skip)]
    pub token: Option<String>,
    pub token_set: bool,
    pub listen: SocketAddr,
    pub status: SocketAddr,
    pub after: After,
    pub debug: bool,
    /// End the job (and follow `after`) when no sender has connected for this many seconds.
    pub idle_s: Option<u64>,
    /// Grow the last partition and its filesystem to the target disk during conversion.
    pub grow: bool,
    /// Convert the received system after the final pass (no: data disks only).
    pub convert: bool,
    pub ip: Vec<IpConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            token: None,
            token_set: false,
            listen: DEFAULT_LISTEN.parse().unwrap(),
            status: DEFAULT_STATUS.parse().unwrap(),
            after: After::Poweroff,
            debug: false,
            idle_s: None,
            grow: true,
            convert: true,
            ip: Vec::new(),
        }
    }
}

/// Splits a command line into words, honouring double quotes like the kernel does.
pub fn split(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
}

/// Parses a whole command line. Returns the config and the problems found.
pub fn parse(line: &str) -> (Config, Vec<String>) {
    parse_words(split(line))
}

/// Where `ferry-image customize` embeds settings inside the appliance's initramfs.
pub const CONFIG_FILE: &str = "/etc/ferry/config";

/// The words of the embedded config file (command-line syntax, one or more words per line, `#`
/// comments) followed by the kernel command line's, so the kernel command line wins key by key:
/// a `ferry.*` key given in both takes the command line's value, and any `ip=` on the command
/// line replaces every `ip=` of the file.
pub fn layered(file: &str, line: &str) -> Vec<String> {
    let cmd = split(line);
    let cmd_has_ip = cmd.iter().any(|w| w == "ip" || w.starts_with("ip="));
    let mut words: Vec<String> = file
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(split)
        .filter(|w| !(cmd_has_ip && (w == "ip" || w.starts_with("ip="))))
        .collect();
    words.extend(cmd);
    words
}

/// Parses command-line words in order (a later `ferry.*` key overrides an earlier one).
pub fn parse_words(words: Vec<String>) -> (Config, Vec<String>) {
    let mut cfg = Config::default();
    let mut problems = Vec::new();
    for word in words {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (word.clone(), None),
        };
        if key == "ip" {
            match value.as_deref().map(parse_ip) {
                Some(Ok(ip)) => cfg.ip.push(ip),
                Some(Err(e)) => problems.push(format!("ip={}: {e}", value.unwrap_or_default())),
                None => problems
                    .push("ip: needs a value (ip=dhcp or ip=<addr>::<gw>:<mask>:<host>:<iface>:none)".into()),
            }
            continue;
        }
        let Some(name) = key.strip_prefix("ferry.") else {
            continue;
        };
        if let Err(e) = apply(&mut cfg, name, value.as_deref()) {
            problems.push(format!("{word}: {e}"));
        }
    }
    (cfg, problems)
}

fn need<'a>(v: Option<&'a str>, what: &str) -> Result<&'a str, String> {
    match v {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(format!("needs a value ({what})")),
    }
}

fn apply(cfg: &mut Config, name: &str, v: Option<&str>) -> Result<(), String> {
    match name {
        "token" => {
            let t = need(v, "the one-time token given to `ferry send`")?;
            if t.len() < 8 {
                return Err(format!("token is {} characters; at least 8 are required", t.len()));
            }
            cfg.token = Some(t.to_string());
            cfg.token_set = true;
        }
        "listen" => cfg.listen = parse_addr(need(v, "ADDR:PORT")?)?,
        "status" => cfg.status = parse_addr(need(v, "ADDR:PORT")?)?,
        "after" => {
            cfg.after = match need(v, "poweroff, reboot or wait")? {
                "poweroff" => After::Poweroff,
                "reboot" => After::Reboot,
                "wait" => After::Wait,
                o => return Err(format!("unknown action {o:?}; expected poweroff, reboot or wait")),
            }
        }
        "debug" => {
            cfg.debug = match v {
                None | Some("1") | Some("yes") | Some("true") => true,
                Some("0") | Some("no") | Some("false") => false,
                Some(o) => return Err(format!("expected no value, 1 or 0, got {o:?}")),
            }
        }
        "grow" => cfg.grow = yes_no(v)?,
        "convert" => cfg.convert = yes_no(v)?,
        "idle" => {
            let s = need(v, "seconds")?;
            let n: u64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
            cfg.idle_s = Some(n);
        }
        other => {
            return Err(format!(
                "unknown parameter ferry.{other} (known: token, listen, status, after, idle, grow, convert, debug)"
            ))
        }
    }
    Ok(())
}

fn yes_no(v: Option<&str>) -> Result<bool, String> {
    match v {
        None | Some("1") | Some("yes") | Some("true") => Ok(true),
        Some("0") | Some("no") | Some("false") => Ok(false),
        Some(o) => Err(format!("expected yes or no, got {o:?}")),
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    // A bare port means all addresses.
    if let Ok(p) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], p)));
    }
    Err(format!("{s:?} is not ADDR:PORT"))
}

fn parse_v4(field: &str, s: &str) -> Result<Ipv4Addr, String> {
    s.parse().map_err(|_| format!("{field} {s:?} is not an IPv4 address"))
}

/// Netmask as dotted quad (must be contiguous) or prefix length.
fn parse_mask(s: &str) -> Result<u8, String> {
    if let Ok(p) = s.parse::<u8>() {
        if p <= 32 {
            return Ok(p);
        }
    }
    let m: Ipv4Addr =
        s.parse().map_err(|_| format!("netmask {s:?} is neither a prefix length nor a dotted mask"))?;
    let bits = u32::from(m);
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        return Err(format!("netmask {s} is not contiguous"));
    }
    Ok(bits.leading_ones() as u8)
}

/// `ip=dhcp`, `ip=<iface>:dhcp`, or the dracut static form
/// `ip=<client-ip>:[<peer>]:<gateway>:<netmask>:<hostname>:<iface>:none`.
pub fn parse_ip(v: &str) -> Result<IpConfig, String> {
    match v {
        "dhcp" | "on" | "any" => return Ok(IpConfig::Dhcp { iface: None }),
        "" => return Err("empty value".into()),
        _ => {}
    }
    let f: Vec<&str> = v.split(':').collect();
    if f.len() == 2 && matches!(f[1], "dhcp" | "on" | "any") {
        return Ok(IpConfig::Dhcp { iface: Some(f[0].to_string()) });
    }
    if f.len() < 7 {
        return Err(format!(
            "expected dhcp or <client-ip>::<gateway>:<netmask>:<hostname>:<iface>:none ({} fields given, 7 needed)",
            f.len()
        ));
    }
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    match f[6] {
        "none" | "off" | "" => {}
        "dhcp" => return Ok(IpConfig::Dhcp { iface: opt(f[5]) }),
        o => return Err(format!("autoconf {o:?} is not supported (use none or dhcp)")),
    }
    let addr = parse_v4("client address", f[0])?;
    let gateway = if f[2].is_empty() { None } else { Some(parse_v4("gateway", f[2])?) };
    let prefix = if f[3].is_empty() { 24 } else { parse_mask(f[3])? };
    Ok(IpConfig::Static { addr, prefix, gateway, hostname: opt(f[4]), iface: opt(f[5]) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_under_the_command_line() {
        let file = "# written by ferry-image customize\nferry.token=embedded-token ferry.after=wait\nip=10.0.0.5::10.0.0.1:24::eth0:none\n";
        let (c, p) = parse_words(layered(file, "BOOT_IMAGE=/vmlinuz quiet"));
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.token.as_deref(), Some("embedded-token"));
        assert_eq!(c.after, After::Wait);
        assert_eq!(c.ip.len(), 1);
        // The command line wins per key; its ip= replaces the file's.
        let (c, p) = parse_words(layered(file, "ferry.token=cmdline-token ip=dhcp"));
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.token.as_deref(), Some("cmdline-token"));
        assert_eq!(c.after, After::Wait);
        assert_eq!(c.ip, vec![IpConfig::Dhcp { iface: None }]);
        // Quoted words survive.
        assert_eq!(layered("a=\"b c\"\n", "d"), vec!["a=b c".to_string(), "d".to_string()]);
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(redact("quiet ferry.token=abcdefgh1234 ip=dhcp"), "quiet ferry.token=(hidden) ip=dhcp");
        let (c, p) = parse("BOOT_IMAGE=/vmlinuz quiet ferry.token=abcdefgh1234 ferry.after=wait ferry.debug ferry.listen=10.0.0.1:9000 ferry.idle=30 ferry.convert=no");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.token.as_deref(), Some("abcdefgh1234"));
        assert_eq!(c.after, After::Wait);
        assert!(c.debug);
        assert_eq!(c.listen.to_string(), "10.0.0.1:9000");
        assert_eq!(c.status.to_string(), DEFAULT_STATUS);
        assert_eq!(c.idle_s, Some(30));
        assert!(!c.convert && c.grow);
    }

    #[test]
    fn problems_are_reported() {
        let (c, p) =
            parse("ferry.after=explode ferry.bogus=1 ferry.listen=nowhere ip=1.2.3 ferry.token=short");
        assert_eq!(c.after, After::Poweroff);
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(p[0].contains("explode"));
        assert!(p[1].contains("unknown parameter ferry.bogus"));
        assert!(p[2].contains("nowhere"));
        assert!(p[3].starts_with("ip=1.2.3"));
        assert!(p[4].contains("at least 8"));
    }

    #[test]
    fn ip_forms() {
        assert_eq!(parse_ip("dhcp").unwrap(), IpConfig::Dhcp { iface: None });
        assert_eq!(parse_ip("eth1:dhcp").unwrap(), IpConfig::Dhcp { iface: Some("eth1".into()) });
        assert_eq!(
            parse_ip("192.168.7.10::192.168.7.1:255.255.255.0:box:eth0:none").unwrap(),
            IpConfig::Static {
                addr: "192.168.7.10".parse().unwrap(),
                prefix: 24,
                gateway: Some("192.168.7.1".parse().unwrap()),
                hostname: Some("box".into()),
                iface: Some("eth0".into()),
            }
        );
        match parse_ip("10.1.2.3:::20:::off").unwrap() {
            IpConfig::Static { prefix, gateway, iface, .. } => {
                assert_eq!((prefix, gateway, iface), (20, None, None))
            }
            o => panic!("{o:?}"),
        }
        assert!(parse_ip("10.1.2.3::10.1.2.1:255.0.255.0:h:e:none").unwrap_err().contains("contiguous"));
        assert!(parse_ip("10.1.2.300::::::none").unwrap_err().contains("client address"));
        assert!(parse_ip("10.1.2.3::::::ibft").unwrap_err().contains("ibft"));
    }

    #[test]
    fn quotes_group_words() {
        assert_eq!(split(r#"a "b c" d="e f"  g"#), vec!["a", "b c", "d=e f", "g"]);
    }
}
