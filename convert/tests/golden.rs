//! Golden tests of the file steps on real distributions' configuration files (see
//! `testdata/golden/SOURCES.md`): each `testdata/golden/<scenario>/in/` tree is copied to a
//! temp dir, inspected, and converted with a recording runner (no root, no VM). What changed —
//! every file that differs afterwards, the files that went, the commands that would have run,
//! the interfaces, notes and step outcomes — must equal `expected/`. `FERRY_BLESS=1` rewrites
//! `expected/` from the current behaviour (review the diff before committing it). A second run
//! over each converted tree must change nothing.

use ferry_convert::cmd::Recorder;
use ferry_convert::guest::GuestRoot;
use ferry_convert::machine::GrubMode;
use ferry_convert::nics::Nics;
use ferry_convert::rewrite::DevMap;
use ferry_convert::steps::Log;
use ferry_convert::{inspect, tree};
use ferry_formats::FsType;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden")
}

/// A file tree as path → content (`-> target` for symlinks), directories left out.
fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(rel, format!("-> {}", t.display()).into_bytes());
            } else if m.is_dir() {
                stack.push(p);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(st.success());
}

/// The old system's partitions: xvda1… and xvdb1… → fixed UUIDs.
fn devmap() -> DevMap {
    let mut m = DevMap::default();
    for disk in 0..2 {
        for n in 1..=4u32 {
            m.add(disk, n, &format!("UUID=0000000{disk}-0000-4000-8000-00000000000{n}"));
        }
    }
    m
}

fn root_fs(g: &GuestRoot) -> FsType {
    let fstab = g.read_or_empty("etc/fstab").unwrap();
    let t = fstab
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&"/")).then(|| f.get(2).copied().unwrap_or(""))
        })
        .unwrap_or("");
    match t {
        "xfs" => FsType::Xfs,
        "btrfs" => FsType::Btrfs,
        _ => FsType::Ext4,
    }
}

/// Converts a copy of `in/` and renders what happened.
fn convert(scenario: &Path) -> (BTreeMap<String, Vec<u8>>, String) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    copy_tree(&scenario.join("in"), &root);
    let before = snapshot(&root);
    let g = GuestRoot::open(&root).unwrap();
    let sys = inspect::inspect(&g).unwrap();
    let rec = Recorder::default();
    let map = devmap();
    let job = tree::Job {
        guest: &g,
        run: &rec,
        sys: &sys,
        map: &map,
        root_fs: root_fs(&g),
        root_uuid: "00000000-0000-4000-8000-000000000001",
        nics: &Nics::Kernel,
        grub: GrubMode::Regenerate,
        boot_code: if sys.uefi { Vec::new() } else { vec![Path::new("/dev/vda")] },
        hooks: &[],
        layout_changed: true,
    };
    let mut log = Log::default();
    let done = tree::run(&job, &mut log).unwrap();
    let after = snapshot(&root);
    // A second run over the converted tree (as a rerun of the appliance would) changes nothing.
    std::fs::create_dir_all(root.join("var/log/ferry")).unwrap();
    std::fs::write(root.join("var/log/ferry/conversion.json"), "{\"ok\": true}").unwrap();
    let again = tree::Job { layout_changed: false, ..job };
    let second = tree::run(&again, &mut Log::default()).unwrap();
    let mut rerun = snapshot(&root);
    rerun.remove("var/log/ferry/conversion.json");
    assert!(
        second.already_converted,
        "{}: a second run found changes: {:?}",
        scenario.display(),
        second.changes
    );
    assert_eq!(rerun, after, "{}: the second run changed files", scenario.display());
    let mut changed = BTreeMap::new();
    for (k, v) in &after {
        if before.get(k) != Some(v) {
            changed.insert(k.clone(), v.clone());
        }
    }
    let mut r = String::new();
    r.push_str(&format!("system: {}\n", serde_json::to_string(&sys).unwrap()));
    r.push_str(&format!("interfaces: {:?}\n", done.interfaces));
    for k in before.keys().filter(|k| !after.contains_key(*k)) {
        r.push_str(&format!("gone: {k}\n"));
    }
    for c in rec.log.lock().unwrap().iter() {
        r.push_str(&format!("command: {c}\n"));
    }
    for n in &done.changes.notes {
        r.push_str(&format!("note: {n}\n"));
    }
    for s in &log.steps {
        r.push_str(&format!("step: {} {:?} {:?}\n", s.name, s.class, s.outcome));
    }
    (changed, r)
}

fn check(name: &str) {
    let dir = golden_dir().join(name);
    let (changed, report) = convert(&dir);
    let exp = dir.join("expected");
    if std::env::var_os("FERRY_BLESS").is_some() {
        let _ = std::fs::remove_dir_all(&exp);
        for (k, v) in &changed {
            let p = exp.join("files").join(k);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, v).unwrap();
        }
        std::fs::create_dir_all(&exp).unwrap();
        std::fs::write(exp.join("report.txt"), &report).unwrap();
        return;
    }
    let want_report = std::fs::read_to_string(exp.join("report.txt"))
        .unwrap_or_else(|e| panic!("{name}: no expected/report.txt ({e}); run with FERRY_BLESS=1"));
    assert_eq!(report, want_report, "{name}: report differs");
    let want = if exp.join("files").exists() { snapshot(&exp.join("files")) } else { BTreeMap::new() };
    let show = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(show(&changed), show(&want), "{name}: the set of changed files differs");
    for (k, v) in &want {
        assert_eq!(String::from_utf8_lossy(&changed[k]), String::from_utf8_lossy(v), "{name}: {k} differs");
    }
}

/// Every scenario directory has a test; none is forgotten.
#[test]
fn every_scenario() {
    let mut names: Vec<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("in").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 8, "{names:?}");
    for n in names {
        check(&n);
    }
}
