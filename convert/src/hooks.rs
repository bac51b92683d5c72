//! Customization hooks (Forklift's customization scripts, Coriolis' first-boot scripts,
//! virt-p2v's pre/post): scripts the sender sends over the authenticated channel. A `run` hook
//! executes in the migrated system's chroot at the end of conversion (its exit code and output
//! go into the report; a failure fails the conversion); a `firstboot` hook becomes a one-shot
//! systemd unit that runs once on the new VM and removes itself.

use crate::cmd::Runner;
use crate::fixes::Changes;
use crate::guest::GuestRoot;
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

/// Most hooks in one migration, and the largest script.
pub const MAX_HOOKS: usize = 16;
pub const MAX_SCRIPT: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookKind {
    Run,
    Firstboot,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    pub kind: HookKind,
    pub name: String,
    #[serde(skip_serializing)]
    pub body: Vec<u8>,
}

/// What a hook did.
#[derive(Debug, Clone, Serialize)]
pub struct HookReport {
    pub name: String,
    pub kind: HookKind,
    pub ok: bool,
    /// The tail of its output (run), or where it was installed (firstboot).
    pub output: String,
}

/// A hook name becomes a file and unit name: 1..=64 of `[A-Za-z0-9._-]`, not starting with `.`.
pub fn check_name(name: &str) -> Result<()> {
    ensure!(
        !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
        "hook name {name:?}: 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"
    );
    Ok(())
}

/// Checks a set of hooks (count, names, sizes, duplicates) before anything runs.
pub fn validate(hooks: &[Hook]) -> Result<()> {
    ensure!(hooks.len() <= MAX_HOOKS, "{} hooks; at most {MAX_HOOKS}", hooks.len());
    for (i, h) in hooks.iter().enumerate() {
        check_name(&h.name)?;
        ensure!(h.body.len() <= MAX_SCRIPT, "hook {}: {} bytes; at most {MAX_SCRIPT}", h.name, h.body.len());
        if hooks[..i].iter().any(|o| o.name == h.name && o.kind == h.kind) {
            bail!("hook {} is given twice", h.name);
        }
    }
    Ok(())
}

const RUN_DIR: &str = "var/lib/ferry/hooks";
/// What a first-boot unit prints (journal and console) once it has run and removed itself.
pub const DONE: &str = "ferry: first-boot script removed:";
const FIRSTBOOT_DIR: &str = "var/lib/ferry/firstboot";

fn unit(name: &str) -> String {
    let script = format!("/{FIRSTBOOT_DIR}/{name}");
    let unit = format!("ferry-firstboot-{name}.service");
    format!(
        "# Installed by ferry: runs {script} once on the first boot of the migrated system,\n\
         # then removes itself.\n\
         [Unit]\nDescription=ferry first-boot script {name}\nAfter=network-online.target\n\
         Wants=network-online.target\nConditionPathExists={script}\n\n\
         [Service]\nType=oneshot\nExecStart={script}\n\
         ExecStopPost=/bin/sh -c 'rm -f {script} /etc/systemd/system/multi-user.target.wants/{unit} /etc/systemd/system/{unit}; sync; echo \"{DONE} {name}\"'\n\
         StandardOutput=journal+console\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    )
}

/// Installs a first-boot hook: the script, its unit, and the unit enabled.
pub fn install_firstboot(g: &GuestRoot, h: &Hook, c: &mut Changes) -> Result<HookReport> {
    ensure!(
        g.exists("lib/systemd/systemd") || g.exists("usr/lib/systemd/systemd"),
        "first-boot hook {}: the migrated system does not use systemd",
        h.name
    );
    let unit_name = format!("ferry-firstboot-{}.service", h.name);
    g.create_dir_all(FIRSTBOOT_DIR)?;
    g.write_mode(&format!("{FIRSTBOOT_DIR}/{}", h.name), &h.body, 0o700)?;
    g.create_dir_all("etc/systemd/system/multi-user.target.wants")?;
    g.write(&format!("etc/systemd/system/{unit_name}"), unit(&h.name).as_bytes())?;
    g.symlink(
        &format!("/etc/systemd/system/{unit_name}"),
        &format!("etc/systemd/system/multi-user.target.wants/{unit_name}"),
    )?;
    c.files.push(format!("etc/systemd/system/{unit_name}"));
    Ok(HookReport {
        name: h.name.clone(),
        kind: h.kind,
        ok: true,
        output: format!("/etc/systemd/system/{unit_name}"),
    })
}

/// Runs a run hook in the migrated system's chroot; the script is removed afterwards.
pub fn run(g: &GuestRoot, r: &dyn Runner, h: &Hook) -> Result<HookReport> {
    g.create_dir_all(RUN_DIR)?;
    let path = format!("{RUN_DIR}/{}", h.name);
    g.write_mode(&path, &h.body, 0o700)?;
    let out = r.run(Some(g.path()), &[&format!("/{path}")]);
    let _ = g.remove(&path);
    let tail = |s: &str| s.chars().rev().take(4000).collect::<Vec<_>>().into_iter().rev().collect::<String>();
    match out {
        Ok(o) => Ok(HookReport { name: h.name.clone(), kind: h.kind, ok: true, output: tail(&o) }),
        Err(e) => bail!("hook {} failed: {e:#}", h.name),
    }
}

/// Every hook, first-boot ones installed, run ones executed, in order; the first failure ends it.
pub fn apply(g: &GuestRoot, r: &dyn Runner, hooks: &[Hook], c: &mut Changes) -> Result<Vec<HookReport>> {
    validate(hooks)?;
    let mut out = Vec::new();
    for h in hooks {
        out.push(match h.kind {
            HookKind::Firstboot => install_firstboot(g, h, c)?,
            HookKind::Run => run(g, r, h)?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::Recorder;

    fn hook(kind: HookKind, name: &str) -> Hook {
        Hook { kind, name: name.into(), body: b"#!/bin/sh\necho hi\n".to_vec() }
    }

    #[test]
    fn names_and_limits() {
        for bad in ["", ".x", "a/b", "../x", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("setup-app_1.sh").unwrap();
        let dup = [hook(HookKind::Run, "a"), hook(HookKind::Run, "a")];
        assert!(validate(&dup).is_err());
        let big = Hook { body: vec![0; MAX_SCRIPT + 1], ..hook(HookKind::Run, "b") };
        assert!(validate(&[big]).is_err());
    }

    #[test]
    fn firstboot_becomes_a_self_removing_unit_and_run_hooks_run_chrooted() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("lib/systemd")).unwrap();
        std::fs::write(t.path().join("lib/systemd/systemd"), "").unwrap();
        let g = GuestRoot::open(t.path()).unwrap();
        let rec = Recorder {
            answers: vec![("chroot /var/lib/ferry/hooks/fail".into(), Err("exit status 3".into()))],
            ..Default::default()
        };
        let mut c = Changes::default();
        let r = apply(&g, &rec, &[hook(HookKind::Firstboot, "fb"), hook(HookKind::Run, "setup")], &mut c)
            .unwrap();
        assert!(r.iter().all(|h| h.ok) && r.len() == 2);
        let unit =
            std::fs::read_to_string(t.path().join("etc/systemd/system/ferry-firstboot-fb.service")).unwrap();
        assert!(
            unit.contains("ExecStart=/var/lib/ferry/firstboot/fb")
                && unit.contains("ExecStopPost=/bin/sh -c 'rm -f /var/lib/ferry/firstboot/fb ")
                && unit.contains("; sync; echo"),
            "{unit}"
        );
        let link = t.path().join("etc/systemd/system/multi-user.target.wants/ferry-firstboot-fb.service");
        assert_eq!(
            std::fs::read_link(&link).unwrap().to_str(),
            Some("/etc/systemd/system/ferry-firstboot-fb.service")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode =
            std::fs::metadata(t.path().join("var/lib/ferry/firstboot/fb")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(rec.log.lock().unwrap().as_slice(), ["chroot /var/lib/ferry/hooks/setup"]);
        // The run script does not stay behind.
        assert!(!t.path().join("var/lib/ferry/hooks/setup").exists());
        // A failing run hook fails, naming it.
        let e = apply(&g, &rec, &[hook(HookKind::Run, "fail")], &mut c).unwrap_err();
        assert!(format!("{e:#}").contains("hook fail failed"), "{e:#}");
        // Without systemd a first-boot hook is refused.
        std::fs::remove_file(t.path().join("lib/systemd/systemd")).unwrap();
        assert!(apply(&g, &rec, &[hook(HookKind::Firstboot, "x")], &mut c).is_err());
    }
}
