//! `ferry check` against a real receiver on loopback: every data sync test runs over the real
//! channel and the target's bytes are unchanged afterwards; a wrong token, a small target and
//! nothing listening are Critical (exit 2). `ferry send` refuses a source whose /boot is full
//! (a real filesystem, mounted on /boot in a private mount namespace) unless `--force`.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry")).args(args).output().unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    })
}

fn item<'a>(v: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    v["items"].as_array().unwrap().iter().find(|i| i["id"] == id).unwrap_or_else(|| panic!("no {id}: {v:#}"))
}

fn source(dir: &Path) -> std::path::PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    fill(&tree, 7, 32);
    let src = dir.join("src.img");
    sh(&format!("mkfs.ext4 -q -F -d {} {} 96M", tree.display(), src.display()));
    src
}

#[test]
fn check_against_a_receiver_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let src = source(t.path());
    let tgt = t.path().join("tgt.img");
    garbage(&tgt, 100 * MIB);
    let before = file_hash(&tgt);
    let r = receiver(&[&tgt], &t.path().join("state"), None);
    let to = r.addr.to_string();
    let disk = format!("{}=tgt.img", src.display());
    let o = ferry(&["check", "--to", &to, "--token", TOKEN, "--disk", &disk, "--seconds", "0.5", "--json"]);
    let v = json(&o);
    assert_eq!(o.status.code(), Some(0), "{v:#}");
    assert_eq!(item(&v, "connect-data")["level"], "ok");
    // No appliance status page on this port: a Warning, not Critical.
    assert_eq!(item(&v, "connect-status")["level"], "warning");
    let auth = item(&v, "authentication");
    assert_eq!(auth["values"]["fingerprint"], r.fingerprint.as_str(), "{auth:#}");
    let plan = item(&v, "target-plan");
    assert_eq!(
        (plan["level"].as_str(), plan["values"]["target"].as_str()),
        (Some("ok"), Some("tgt.img")),
        "{plan:#}"
    );
    assert_eq!(plan["values"]["mode"], "Full");
    for id in ["network-throughput", "read-throughput", "compressed-throughput"] {
        assert!(item(&v, id)["values"]["bytes_per_second"].as_f64().unwrap() > 0.0, "{id}: {v:#}");
    }
    // The sample is the source's own mixed data: it compresses.
    assert!(item(&v, "compressed-throughput")["values"]["ratio"].as_f64().unwrap() > 1.1, "{v:#}");
    assert!(item(&v, "estimate")["values"]["used_bytes"].as_u64().unwrap() > 20 * MIB);
    assert_eq!(item(&v, "filesystem-type")["values"]["type"], "ext4");
    // Nothing changed: target bytes, the receiver's state and its state directory.
    assert_eq!(file_hash(&tgt), before, "ferry check wrote to the target");
    let st = r.status.lock().unwrap().clone();
    assert_eq!((st.checks, st.passes_completed, st.state.as_str()), (1, 0, "waiting"), "{st:?}");
    assert!(std::fs::read_dir(t.path().join("state")).map_or(true, |mut d| d.next().is_none()));
    assert!(matches!(r.outcomes.recv().unwrap(), Ok(ferry_replicator::receiver::Outcome::Checked)));
    // The table form says the same.
    let o = ferry(&["check", "--to", &to, "--token", TOKEN, "--disk", &disk, "--seconds", "0.2"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("Estimated migration time") && text.contains("0 Critical"), "{text}");
    assert_eq!(file_hash(&tgt), before);
}

#[test]
fn wrong_token_small_target_and_no_listener_are_critical() {
    let t = tempfile::tempdir().unwrap();
    let src = source(t.path());
    let small = t.path().join("small.img");
    garbage(&small, 8 * MIB);
    let before = file_hash(&small);
    let r = receiver(&[&small], &t.path().join("state"), None);
    let to = r.addr.to_string();
    let disk = format!("{}=small.img", src.display());
    let o = ferry(&[
        "check",
        "--to",
        &to,
        "--token",
        "not-the-token",
        "--disk",
        &disk,
        "--seconds",
        "0.2",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let a = item(&json(&o), "authentication").clone();
    assert_eq!(a["level"], "critical", "{a:#}");
    assert!(a["remediation"].as_str().unwrap().contains("token"), "{a:#}");
    let o = ferry(&["check", "--to", &to, "--token", TOKEN, "--disk", &disk, "--seconds", "0.2", "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let p = item(&json(&o), "target-plan").clone();
    assert_eq!(p["level"], "critical", "{p:#}");
    assert!(p["detail"].as_str().unwrap().contains("small.img"), "{p:#}");
    assert_eq!(file_hash(&small), before);
    // Nothing listens on the port any more once the listener is gone.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let o = ferry(&["check", "--to", &free.to_string(), "--token", TOKEN, "--disk", &disk, "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let c = item(&json(&o), "connect-data").clone();
    assert!(c["detail"].as_str().unwrap().contains("refused"), "{c:#}");
}

/// A source whose filesystem is mounted on /boot and full: conversion could not write the new
/// initramfs. `ferry send` names the item and sends nothing; `--force` sends anyway.
#[test]
fn send_refuses_a_critical_source_unless_forced() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("boot.img");
    sh(&format!("truncate -s 16M {0} && mkfs.ext4 -q -F -m 0 {0}", src.display()));
    let tgt = t.path().join("tgt.img");
    garbage(&tgt, 17 * MIB);
    let r = receiver(&[&tgt], &t.path().join("state"), None);
    let send = format!(
        "{} send --to {} --token {TOKEN} --disk {}=tgt.img",
        env!("CARGO_BIN_EXE_ferry"),
        r.addr,
        src.display()
    );
    // In a private mount namespace: the image on /boot, filled to the last block.
    let script = |extra: &str| {
        format!(
            "set -e; mount --make-rprivate /; mount -o loop {} /boot; \
             dd if=/dev/zero of=/boot/fill bs=64k 2>/dev/null || true; sync; \
             {send} {extra}; echo sent",
            src.display()
        )
    };
    let o = Command::new("unshare").args(["-m", "sh", "-c", &script("")]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("Critical") && err.contains("filesystem-space /boot") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(r.status.lock().unwrap().sessions, 0, "something reached the receiver");
    let o = Command::new("unshare").args(["-m", "sh", "-c", &script("--force")]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("going on (--force)"), "{err}");
    assert_eq!(r.status.lock().unwrap().passes_completed, 1);
}
