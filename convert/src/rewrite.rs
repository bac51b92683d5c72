//! Pure rewrites of the migrated system's boot and mount configuration: device names (xvd*,
//! sd*, hd*, vd*, nvme*) → `UUID=` in fstab, crypttab and kernel command lines (`root=`,
//! `resume=`), and the Xen console (`hvc0`, `xvc0`) → `ttyS0` in GRUB defaults, inittab and
//! securetty. Each function maps text to text; applying and backups live in `fixes.rs`.

use std::collections::BTreeMap;

/// Old device names → the spec that replaces them (`UUID=…`).
#[derive(Debug, Default, Clone)]
pub struct DevMap(pub BTreeMap<String, String>);

const LETTERS: &str = "abcdefghijklmnopqrstuvwxyz";

impl DevMap {
    /// Adds every name disk number `disk` partition `part` may have had on the old hypervisor.
    pub fn add(&mut self, disk: usize, part: u32, spec: &str) {
        let Some(l) = LETTERS.chars().nth(disk) else { return };
        for prefix in ["xvd", "sd", "hd", "vd"] {
            self.0.insert(format!("/dev/{prefix}{l}{part}"), spec.to_string());
        }
        self.0.insert(format!("/dev/nvme{disk}n1p{part}"), spec.to_string());
    }

    pub fn get(&self, dev: &str) -> Option<&str> {
        self.0.get(dev).map(|s| s.as_str())
    }
}

/// fstab: the first field of a line, when it is a device name we know.
pub fn fstab(text: &str, map: &DevMap) -> String {
    field(text, 0, map)
}

/// crypttab: the second field (the encrypted device).
pub fn crypttab(text: &str, map: &DevMap) -> String {
    field(text, 1, map)
}

fn field(text: &str, idx: usize, map: &DevMap) -> String {
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.trim().is_empty() {
            out.push_str(line);
            continue;
        }
        let f: Vec<&str> = trimmed.split_whitespace().collect();
        match f.get(idx).and_then(|d| map.get(d)) {
            Some(spec) => {
                // Keep the rest of the line as it was; swap only that field.
                let old = f[idx];
                let pos = line.find(old).unwrap();
                out.push_str(&line[..pos]);
                out.push_str(spec);
                out.push_str(&line[pos + old.len()..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

/// Kernel command line words: `root=`/`resume=` device names → UUID, Xen consoles → ttyS0.
pub fn cmdline(args: &str, map: &DevMap) -> String {
    let mut words: Vec<String> = Vec::new();
    for w in args.split_whitespace() {
        let w = match w.split_once('=') {
            Some((k @ ("root" | "resume"), v)) => match map.get(v) {
                Some(spec) => format!("{k}={spec}"),
                None => w.to_string(),
            },
            Some(("console", v)) => {
                let (dev, opts) = v.split_once(',').map(|(d, o)| (d, Some(o))).unwrap_or((v, None));
                if matches!(dev, "hvc0" | "xvc0") {
                    format!(
                        "console=ttyS0{}",
                        opts.map(|o| format!(",{o}")).unwrap_or_else(|| ",115200".into())
                    )
                } else {
                    w.to_string()
                }
            }
            _ => w.to_string(),
        };
        if !words.contains(&w) {
            words.push(w);
        }
    }
    words.join(" ")
}

/// Maps each line's body (without its newline) through `f`; `None` keeps the line as it was.
fn map_lines(text: &str, f: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        match f(line.trim_end_matches('\n')) {
            Some(r) => {
                out.push_str(&r);
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    out
}

/// Kernel arguments `words` with `extra` added (once), rewritten by [`cmdline`].
fn args_with<'a>(mut words: Vec<&'a str>, extra: &[&'a str], map: &DevMap) -> String {
    for e in extra {
        if !words.contains(e) {
            words.push(e);
        }
    }
    cmdline(&words.join(" "), map)
}

/// /etc/default/grub: rewrites the values of GRUB_CMDLINE_LINUX and GRUB_CMDLINE_LINUX_DEFAULT.
pub fn grub_default(text: &str, map: &DevMap) -> String {
    map_lines(text, |body| {
        ["GRUB_CMDLINE_LINUX=", "GRUB_CMDLINE_LINUX_DEFAULT="].iter().find_map(|k| {
            let v = body.strip_prefix(k)?;
            let (q, inner) = match v.chars().next() {
                Some(c @ ('"' | '\'')) => (c.to_string(), v.trim_matches(c)),
                _ => (String::new(), v),
            };
            Some(format!("{k}{q}{}{q}", cmdline(inner, map)))
        })
    })
}

/// grub.cfg: the kernel command lines of `linux` entries, as [`cmdline`] rewrites them, with
/// `extra` words added.
pub fn grub_cfg(text: &str, map: &DevMap, extra: &[&str]) -> String {
    map_lines(text, |body| {
        let indent = &body[..body.len() - body.trim_start().len()];
        let mut w = body.split_whitespace();
        match (w.next(), w.next()) {
            (Some(cmd @ ("linux" | "linux16" | "linuxefi")), Some(kernel)) => {
                Some(format!("{indent}{cmd} {kernel} {}", args_with(w.collect(), extra, map)))
            }
            _ => None,
        }
    })
}

/// A Boot Loader Specification entry (`/boot/loader/entries/*.conf`, RHEL 8+, Fedora): its
/// `options` line as [`cmdline`] rewrites it, with `extra` words added.
pub fn bls_entry(text: &str, map: &DevMap, extra: &[&str]) -> String {
    map_lines(text, |body| {
        let rest = body.strip_prefix("options").filter(|r| r.starts_with([' ', '\t']))?;
        Some(format!("options {}", args_with(rest.split_whitespace().collect(), extra, map)))
    })
}

/// /etc/kernel/cmdline (kernel-install's arguments for new kernels): one command line.
pub fn kernel_cmdline(text: &str, map: &DevMap, extra: &[&str]) -> String {
    let nl = if text.ends_with('\n') { "\n" } else { "" };
    format!("{}{nl}", args_with(text.split_whitespace().collect(), extra, map))
}

/// GRUB's environment block (`/boot/grub2/grubenv`, RHEL 8's `kernelopts`): the
/// `kernelopts=` line rewritten, the block kept at its size by its `#` padding. `None` when
/// the new line does not fit (the block is left alone).
pub fn grubenv(text: &str, map: &DevMap, extra: &[&str]) -> Option<String> {
    let body = map_lines(text.trim_end_matches('#'), |l| {
        let v = l.strip_prefix("kernelopts=")?;
        Some(format!("kernelopts={}", args_with(v.split_whitespace().collect(), extra, map)))
    });
    let pad = text.len().checked_sub(body.len())?;
    Some(format!("{body}{}", "#".repeat(pad)))
}

/// /etc/default/grub: `word` added to GRUB_CMDLINE_LINUX (once).
pub fn grub_default_add(text: &str, word: &str) -> String {
    let mut out = String::new();
    let mut found = false;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        match body.strip_prefix("GRUB_CMDLINE_LINUX=") {
            Some(v) if !found => {
                found = true;
                let q = v
                    .chars()
                    .next()
                    .filter(|c| matches!(c, '"' | '\''))
                    .map(String::from)
                    .unwrap_or_default();
                let inner = v.trim_matches(|c| c == '"' || c == '\'');
                let mut words: Vec<&str> = inner.split_whitespace().collect();
                if !words.contains(&word) {
                    words.push(word);
                }
                out.push_str(&format!("GRUB_CMDLINE_LINUX={q}{}{q}", words.join(" ")));
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            _ => out.push_str(line),
        }
    }
    if !found {
        out.push_str(&format!("GRUB_CMDLINE_LINUX=\"{word}\"\n"));
    }
    out
}

/// inittab: gettys on the Xen console move to the serial port.
pub fn inittab(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|l| {
            if l.trim_start().starts_with('#') {
                l.to_string()
            } else {
                l.replace("hvc0", "ttyS0").replace("xvc0", "ttyS0")
            }
        })
        .collect()
}

/// securetty: root may log in on ttyS0.
pub fn securetty(text: &str) -> String {
    if text.lines().any(|l| l.trim() == "ttyS0") {
        return text.to_string();
    }
    let mut t = text.to_string();
    if !t.is_empty() && !t.ends_with('\n') {
        t.push('\n');
    }
    t.push_str("ttyS0\n");
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> DevMap {
        let mut m = DevMap::default();
        m.add(0, 1, "UUID=1111-aaaa");
        m.add(0, 2, "UUID=2222-bbbb");
        m.add(1, 1, "UUID=3333-cccc");
        m
    }

    #[test]
    fn grubenv_keeps_its_size() {
        let mut env =
            "# GRUB Environment Block\nsaved_entry=x\nkernelopts=root=/dev/xvda2 ro console=hvc0 \n"
                .to_string();
        env.push_str(&"#".repeat(1024 - env.len()));
        let out = grubenv(&env, &map(), &["net.ifnames=0"]).unwrap();
        assert_eq!(out.len(), 1024);
        assert!(
            out.contains("\nkernelopts=root=UUID=2222-bbbb ro console=ttyS0,115200 net.ifnames=0\n#"),
            "{out}"
        );
        assert!(out.starts_with("# GRUB Environment Block\nsaved_entry=x\n"));
        let words: Vec<String> = (0..200).map(|i| format!("a{i}")).collect();
        let full = format!("kernelopts={}\n", words.join(" "));
        assert!(
            grubenv(&full, &map(), &["net.ifnames=0"]).is_none(),
            "a line that no longer fits is refused"
        );
        assert_eq!(
            kernel_cmdline("root=/dev/xvda1 console=hvc0\n", &map(), &[]),
            "root=UUID=1111-aaaa console=ttyS0,115200\n"
        );
    }

    #[test]
    fn grub_cfg_kernel_lines() {
        let mut map = DevMap::default();
        map.add(0, 2, "UUID=abcd");
        let before = "menuentry 'x' {\n    linux /boot/vmlinuz-6.1 root=/dev/xvda2 ro console=hvc0\n    initrd /boot/initrd.img-6.1\n}\n";
        let after = grub_cfg(before, &map, &["net.ifnames=0"]);
        assert_eq!(after, "menuentry 'x' {\n    linux /boot/vmlinuz-6.1 root=UUID=abcd ro console=ttyS0,115200 net.ifnames=0\n    initrd /boot/initrd.img-6.1\n}\n");
        assert_eq!(grub_cfg(&after, &map, &["net.ifnames=0"]), after);
    }

    #[test]
    fn grub_default_gains_a_word_once() {
        let before = "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX=\"console=ttyS0,115200\"\n";
        let after = grub_default_add(before, "net.ifnames=0");
        assert_eq!(after, "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX=\"console=ttyS0,115200 net.ifnames=0\"\n");
        assert_eq!(grub_default_add(&after, "net.ifnames=0"), after);
        assert_eq!(grub_default_add("X=1\n", "a=b"), "X=1\nGRUB_CMDLINE_LINUX=\"a=b\"\n");
    }

    #[test]
    fn fstab_devices_become_uuids() {
        let before = "\
# /etc/fstab: static file system information.
/dev/xvda2\t/\text4\terrors=remount-ro 0 1
/dev/xvda1 none swap sw 0 0
  /dev/sdb1   /srv   xfs   defaults   0 2
UUID=keep-me /boot ext4 defaults 0 2
LABEL=data /data ext4 defaults 0 2
proc /proc proc defaults 0 0
/dev/xvdc1 /mnt ext4 noauto 0 0
";
        let after = "\
# /etc/fstab: static file system information.
UUID=2222-bbbb\t/\text4\terrors=remount-ro 0 1
UUID=1111-aaaa none swap sw 0 0
  UUID=3333-cccc   /srv   xfs   defaults   0 2
UUID=keep-me /boot ext4 defaults 0 2
LABEL=data /data ext4 defaults 0 2
proc /proc proc defaults 0 0
/dev/xvdc1 /mnt ext4 noauto 0 0
";
        assert_eq!(fstab(before, &map()), after);
        assert_eq!(fstab(after, &map()), after, "idempotent");
    }

    #[test]
    fn crypttab_second_field() {
        let before = "cryptroot /dev/xvda2 none luks,discard\nswap /dev/nvme0n1p1 /dev/urandom swap\n";
        let after = "cryptroot UUID=2222-bbbb none luks,discard\nswap UUID=1111-aaaa /dev/urandom swap\n";
        assert_eq!(crypttab(before, &map()), after);
    }

    #[test]
    fn grub_defaults_root_resume_console() {
        let before = "\
GRUB_DEFAULT=0
GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"
GRUB_CMDLINE_LINUX=\"console=hvc0 root=/dev/xvda2 resume=/dev/hda1 console=tty0\"
#GRUB_CMDLINE_LINUX=\"console=hvc0\"
";
        let after = "\
GRUB_DEFAULT=0
GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"
GRUB_CMDLINE_LINUX=\"console=ttyS0,115200 root=UUID=2222-bbbb resume=UUID=1111-aaaa console=tty0\"
#GRUB_CMDLINE_LINUX=\"console=hvc0\"
";
        assert_eq!(grub_default(before, &map()), after);
        assert_eq!(grub_default(after, &map()), after);
        assert_eq!(
            cmdline("console=xvc0,9600n8 root=/dev/vda2", &map()),
            "console=ttyS0,9600n8 root=UUID=2222-bbbb"
        );
    }

    #[test]
    fn consoles_in_inittab_and_securetty() {
        let before =
            "id:2:initdefault:\n1:2345:respawn:/sbin/getty 38400 hvc0\n#x:1:respawn:/sbin/getty xvc0\n";
        let after =
            "id:2:initdefault:\n1:2345:respawn:/sbin/getty 38400 ttyS0\n#x:1:respawn:/sbin/getty xvc0\n";
        assert_eq!(inittab(before), after);
        assert_eq!(securetty("console\nhvc0"), "console\nhvc0\nttyS0\n");
        assert_eq!(securetty("ttyS0\n"), "ttyS0\n");
    }
}
