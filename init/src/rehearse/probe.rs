//! The rehearsal probe: a script and a one-shot unit written into the overlay only. Once the
//! boot has finished it reports on the serial console — the system state, failed units, each
//! fstab entry mounted or not, the addresses per NIC, the booted kernel and root — and powers
//! the VM off. Also what the host reads back: [`parse`] the console into [`Findings`].

use anyhow::{ensure, Result};
use ferry_convert::guest::GuestRoot;
use serde::Serialize;

/// Every probe line starts with this.
pub const TAG: &str = "FERRY-PROBE";
const UNIT: &str = "ferry-rehearse-probe.service";
const SCRIPT: &str = "var/lib/ferry/rehearse-probe";

const PROBE_SH: &str = r#"#!/bin/sh
# ferry rehearsal probe (in a copy-on-write overlay only): reports, then powers off.
# The serial console is opened for every line: a getty starting on it hangs up open files.
out=/dev/ttyS0
[ -c "$out" ] || out=/dev/console
exec >/dev/null 2>&1
say() { echo "FERRY-PROBE $*" >"$out" || echo "FERRY-PROBE $*" >/dev/console; }
say "begin"
# Polled rather than --wait, which needs systemd 240.
i=0
while :; do
  state=$(systemctl is-system-running 2>/dev/null)
  case "$state" in initializing|starting) [ $i -lt 240 ] || break; i=$((i + 1)); sleep 1 ;; *) break ;; esac
done
say "state=${state:-unknown}"
say "kernel=$(uname -r)"
say "root=$(findmnt -n -o SOURCE / 2>/dev/null)"
say "uptime=$(cut -d' ' -f1 /proc/uptime)"
say "rootsize=$(df -B1 --output=size / 2>/dev/null | tail -n 1 | tr -d ' ')"
systemctl --failed --no-legend --plain 2>/dev/null | while read -r u _; do
  case "$u" in *.*) say "failed=$u" ;; esac
done
sed -e 's/#.*//' /etc/fstab | while read -r spec mp type opts _; do
  [ -n "$spec" ] || continue
  case ",$opts," in *,noauto,*) continue ;; esac
  if [ "$type" = swap ]; then
    dev=$(findfs "$spec" 2>/dev/null || echo "$spec")
    dev=$(readlink -f "$dev")
    if grep -q "^$dev " /proc/swaps; then say "swap=$spec ok"; else say "swap=$spec missing"; fi
    continue
  fi
  case "$mp" in /*) ;; *) continue ;; esac
  if mountpoint -q "$mp"; then say "mount=$mp ok"; else say "mount=$mp missing"; fi
done
ip -o addr show 2>/dev/null | while read -r _ dev fam addr _; do
  case "$fam" in inet|inet6) [ "$dev" = lo ] || say "addr=$dev $addr" ;; esac
done
for n in /sys/class/net/*; do
  n=${n##*/}; [ "$n" = lo ] || say "nic=$n $(cat /sys/class/net/$n/operstate 2>/dev/null)"
done
say "end"
sync
systemctl poweroff --no-block
"#;

fn unit() -> String {
    format!(
        "# ferry rehearsal probe; exists only in the rehearsal's overlay.\n\
         [Unit]\nDescription=ferry rehearsal probe\nAfter=multi-user.target\n\n\
         [Service]\nType=simple\nExecStart=/{SCRIPT}\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    )
}

/// Writes the probe into the (overlay's) guest; it needs systemd.
pub fn install(g: &GuestRoot) -> Result<()> {
    ensure!(
        g.exists("lib/systemd/systemd") || g.exists("usr/lib/systemd/systemd"),
        "the system does not use systemd; the rehearsal probe needs it"
    );
    g.create_dir_all("var/lib/ferry")?;
    g.write_mode(SCRIPT, PROBE_SH.as_bytes(), 0o755)?;
    g.create_dir_all("etc/systemd/system/multi-user.target.wants")?;
    g.write(&format!("etc/systemd/system/{UNIT}"), unit().as_bytes())?;
    g.symlink(
        &format!("/etc/systemd/system/{UNIT}"),
        &format!("etc/systemd/system/multi-user.target.wants/{UNIT}"),
    )
}

/// What the probe reported.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Findings {
    /// The probe started at all (userspace reached multi-user).
    pub began: bool,
    /// It reported everything.
    pub ended: bool,
    /// `systemctl is-system-running`: running, degraded, …
    pub state: String,
    pub kernel: String,
    pub root: String,
    /// Bytes of the root filesystem.
    pub root_size: Option<u64>,
    /// Seconds from the kernel's start to the end of the boot (uptime when the probe ran).
    pub uptime_s: Option<f64>,
    pub failed_units: Vec<String>,
    /// (mount point or swap spec, mounted).
    pub mounts: Vec<(String, bool)>,
    /// (interface, ADDR/PREFIX).
    pub addresses: Vec<(String, String)>,
    /// (interface, operstate).
    pub nics: Vec<(String, String)>,
}

/// Reads the probe's lines out of a console log (anything else is ignored; a line a guest
/// could forge only changes its own verdict).
pub fn parse(console: &str) -> Findings {
    let mut f = Findings::default();
    for l in console.lines() {
        let Some(rest) = l.find(TAG).map(|i| l[i + TAG.len()..].trim()) else { continue };
        let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
        let v = v.trim().to_string();
        let pair = |v: &str| v.split_once(' ').map(|(a, b)| (a.to_string(), b.trim().to_string()));
        match k {
            "begin" => f.began = true,
            "end" => f.ended = true,
            "state" => f.state = v,
            "kernel" => f.kernel = v,
            "root" => f.root = v,
            "uptime" => f.uptime_s = v.parse().ok(),
            "rootsize" => f.root_size = v.parse().ok(),
            "failed" => f.failed_units.push(v),
            "mount" | "swap" => {
                if let Some((m, s)) = pair(&v) {
                    f.mounts.push((m, s == "ok"));
                }
            }
            "addr" => f.addresses.extend(pair(&v)),
            "nic" => f.nics.extend(pair(&v)),
            _ => {}
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_installed_in_the_guest() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("lib/systemd")).unwrap();
        std::fs::write(t.path().join("lib/systemd/systemd"), "").unwrap();
        let g = GuestRoot::open(t.path()).unwrap();
        install(&g).unwrap();
        let link = t.path().join("etc/systemd/system/multi-user.target.wants").join(UNIT);
        assert_eq!(
            std::fs::read_link(link).unwrap().to_str().unwrap(),
            format!("/etc/systemd/system/{UNIT}")
        );
        let script = std::fs::read_to_string(t.path().join(SCRIPT)).unwrap();
        assert!(script.starts_with("#!/bin/sh") && script.contains("poweroff"));
        // The script is valid sh.
        let ok = std::process::Command::new("sh").arg("-n").arg(t.path().join(SCRIPT)).status().unwrap();
        assert!(ok.success());
    }

    #[test]
    fn console_lines_become_findings() {
        let log = "noise\r\n[  OK  ] Reached target\nFERRY-PROBE begin\nFERRY-PROBE state=degraded\n\
                   FERRY-PROBE kernel=6.1.0-28-amd64\nFERRY-PROBE root=/dev/vda2\nFERRY-PROBE uptime=41.52\n\
                   FERRY-PROBE failed=foo.service\nFERRY-PROBE mount=/ ok\nFERRY-PROBE mount=/data missing\n\
                   FERRY-PROBE swap=UUID=x ok\nFERRY-PROBE addr=eth0 10.0.2.15/24\nFERRY-PROBE nic=eth0 up\n\
                   FERRY-PROBE end\n";
        let f = parse(log);
        assert!(f.began && f.ended);
        assert_eq!(
            (f.state.as_str(), f.kernel.as_str(), f.root.as_str()),
            ("degraded", "6.1.0-28-amd64", "/dev/vda2")
        );
        assert_eq!(f.uptime_s, Some(41.52));
        assert_eq!(f.failed_units, ["foo.service"]);
        assert_eq!(
            f.mounts,
            [("/".to_string(), true), ("/data".to_string(), false), ("UUID=x".to_string(), true)]
        );
        assert_eq!(f.addresses, [("eth0".to_string(), "10.0.2.15/24".to_string())]);
        assert_eq!(parse("nothing here"), Findings::default());
    }
}
