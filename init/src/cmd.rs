//! The one helper that runs external commands: optionally chrooted into a migrated system, the
//! command line in every error with the tail of its output, and safe under our PID 1 reaper.

use anyhow::{bail, Context, Result};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `argv` (inside `root` when given) and returns its stdout.
pub fn run(root: Option<&Path>, argv: &[&str]) -> Result<String> {
    run_env(root, argv, &[])
}

pub fn run_env(root: Option<&Path>, argv: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let line = match root {
        Some(r) => format!("chroot {} {}", r.display(), argv.join(" ")),
        None => argv.join(" "),
    };
    let mut c = Command::new(argv[0]);
    c.args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c.env_clear()
        .env("PATH", PATH)
        .env("LANG", "C")
        .env("HOME", "/root")
        .env("DEBIAN_FRONTEND", "noninteractive");
    for (k, v) in env {
        c.env(k, v);
    }
    if let Some(r) = root {
        let r = r.to_path_buf();
        // SAFETY: only async-signal-safe calls (chroot, chdir) between fork and exec.
        unsafe {
            c.pre_exec(move || {
                nix::unistd::chroot(&r)?;
                nix::unistd::chdir("/")?;
                Ok(())
            });
        }
    }
    log::info!("running: {line}");
    let child = c.spawn().with_context(|| format!("starting `{line}`"))?;
    let pid = child.id();
    crate::reaper::own(pid, true);
    let out = child.wait_with_output();
    crate::reaper::own(pid, false);
    let out = out.with_context(|| format!("waiting for `{line}`"))?;
    if !out.status.success() {
        let tail = |b: &[u8]| {
            let s = String::from_utf8_lossy(b);
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        bail!("`{line}` failed ({}):\n{}\n{}", out.status, tail(&out.stdout), tail(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_command() {
        assert_eq!(run(None, &["echo", "hi"]).unwrap(), "hi\n");
        let e = format!("{:#}", run(None, &["sh", "-c", "echo oops >&2; exit 3"]).unwrap_err());
        assert!(e.contains("`sh -c echo oops >&2; exit 3` failed") && e.contains("oops"), "{e}");
        assert!(format!("{:#}", run(None, &["/nonexistent/x"]).unwrap_err())
            .contains("starting `/nonexistent/x`"));
    }
}
