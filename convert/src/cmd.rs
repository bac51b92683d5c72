//! The one helper that runs external commands: optionally chrooted into a migrated system, the
//! command line in every error with the tail of its output, and safe under a PID 1 reaper
//! (children being waited for are registered; [`is_owned`] tells the reaper to leave them).
//! Conversion steps run commands through the [`Runner`] trait, so tests can record the
//! commands instead of executing them ([`Recorder`]).

use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Runs (or records) the commands of a conversion.
pub trait Runner {
    /// Runs `argv`, chrooted into `root` when given; returns its stdout.
    fn run(&self, root: Option<&Path>, argv: &[&str]) -> Result<String>;
}

/// The real thing: [`run`].
pub struct System;

impl Runner for System {
    fn run(&self, root: Option<&Path>, argv: &[&str]) -> Result<String> {
        run(root, argv)
    }
}

/// Records each command (as `argv` joined by spaces, `chroot ` first when chrooted) and
/// answers from a script of (command prefix, result): the first matching entry wins; no match
/// is success with empty output.
#[derive(Default)]
pub struct Recorder {
    pub log: Mutex<Vec<String>>,
    pub answers: Vec<(String, std::result::Result<String, String>)>,
}

impl Runner for Recorder {
    fn run(&self, root: Option<&Path>, argv: &[&str]) -> Result<String> {
        let line = format!("{}{}", if root.is_some() { "chroot " } else { "" }, argv.join(" "));
        self.log.lock().unwrap().push(line.clone());
        match self.answers.iter().find(|(p, _)| line.starts_with(p.as_str())) {
            Some((_, Ok(out))) => Ok(out.clone()),
            Some((_, Err(e))) => bail!("`{line}` failed: {e}"),
            None => Ok(String::new()),
        }
    }
}

static OWNED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Whether `pid` is a child [`run`] is waiting for (a reaper must leave it alone).
pub fn is_owned(pid: i32) -> bool {
    OWNED.lock().unwrap().as_ref().is_some_and(|s| s.contains(&pid))
}

fn own(pid: u32, yes: bool) {
    let mut g = OWNED.lock().unwrap();
    let s = g.get_or_insert_with(HashSet::new);
    if yes {
        s.insert(pid as i32);
    } else {
        s.remove(&(pid as i32));
    }
}

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
    own(pid, true);
    let out = child.wait_with_output();
    own(pid, false);
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
