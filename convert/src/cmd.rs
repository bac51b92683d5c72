//! The one helper that runs external commands: optionally chrooted into a migrated system, the
//! command line in every error with the tail of its output, and safe under a PID 1 reaper
//! (children being waited for are registered; [`is_owned`] tells the reaper to leave them).
//! Conversion steps run commands through the [`Runner`] trait, so tests can record the
//! commands instead of executing them ([`Recorder`]).

use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// How long one command may take: a hung guest tool must not hold the conversion (and PID 1)
/// for ever. Generous: dracut under emulation takes minutes.
pub const TIMEOUT: Duration = Duration::from_secs(3600);

pub fn run_env(root: Option<&Path>, argv: &[&str], env: &[(&str, &str)]) -> Result<String> {
    run_for(root, argv, env, TIMEOUT, log::Level::Info)
}

/// A quick look (a drill's `nft list ruleset`, a trial `grub-mkconfig`): logged at debug level,
/// killed after `limit`.
pub struct Quick(pub Duration);

impl Runner for Quick {
    fn run(&self, root: Option<&Path>, argv: &[&str]) -> Result<String> {
        run_for(root, argv, &[], self.0, log::Level::Debug)
    }
}

fn run_for(
    root: Option<&Path>,
    argv: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
    level: log::Level,
) -> Result<String> {
    let Some(prog) = argv.first() else { bail!("no command to run") };
    let line = match root {
        Some(r) => format!("chroot {} {}", r.display(), argv.join(" ")),
        None => argv.join(" "),
    };
    let mut c = Command::new(prog);
    c.args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c.env_clear()
        .env("PATH", PATH)
        .env("LANG", "C")
        .env("HOME", "/root")
        .env("DEBIAN_FRONTEND", "noninteractive");
    for (k, v) in env {
        c.env(k, v);
    }
    // Its own process group: a timeout kills everything it started.
    c.process_group(0);
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
    log::log!(level, "running: {line}");
    let mut child = c.spawn().with_context(|| format!("starting `{line}`"))?;
    let pid = child.id();
    own(pid, true);
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut b);
            }
            b
        })
    };
    let out_t = drain(child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let err_t = drain(child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let t0 = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Ok(st),
            Ok(None) if t0.elapsed() > limit => {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait();
                break Err(anyhow::anyhow!("`{line}` did not finish within {} s; killed", limit.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => break Err(anyhow::Error::from(e).context(format!("waiting for `{line}`"))),
        }
    };
    // Whatever it left running in its group (a hook's `daemon &`) would hold the output pipes
    // open and the guest's mounts busy: it goes with the command.
    let _ =
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
    own(pid, false);
    let (stdout, stderr) = (out_t.join().unwrap_or_default(), err_t.join().unwrap_or_default());
    let status = status?;
    if !status.success() {
        let tail = |b: &[u8]| {
            let s = String::from_utf8_lossy(b);
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        bail!("`{line}` failed ({status}):\n{}\n{}", tail(&stdout), tail(&stderr));
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
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
        assert!(run(None, &[]).is_err());
    }

    #[test]
    fn a_hung_command_and_its_children_are_killed() {
        let t0 = Instant::now();
        let e = run_for(
            None,
            &["sh", "-c", "sleep 60 & sleep 60"],
            &[],
            Duration::from_millis(300),
            log::Level::Info,
        );
        let e = format!("{:#}", e.unwrap_err());
        assert!(e.contains("did not finish within") && e.contains("sleep 60"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(10), "the background child held the pipes");
    }

    #[test]
    fn what_a_finished_command_left_running_is_killed() {
        let t0 = Instant::now();
        let out = run(None, &["sh", "-c", "sleep 60 & echo done"]).unwrap();
        assert_eq!(out, "done\n");
        assert!(t0.elapsed() < Duration::from_secs(10), "a leftover background child held the pipes");
    }
}
