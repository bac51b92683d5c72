//! The live-migration lifecycle with the real CLI: `ferry send --continuous` keeps a receiver in
//! step with a mounted source that a writer keeps changing; `ferry cutover --before "kill …"`
//! ends it with a frozen final pass whose copy equals the source file for file; `ferry ctl`
//! changes the rate of a running transfer and pauses and resumes it.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver as Rx};
use std::time::{Duration, Instant};

/// The two tests measure rates and time passes: run one at a time, not side by side.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
}

/// Starts `ferry send --continuous …` with JSON events; its stdout lines arrive on the channel.
fn continuous(args: &[&str]) -> (Child, Rx<serde_json::Value>) {
    let mut child = ferry()
        .args(["send", "--continuous", "--json", "--token", TOKEN])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&l) {
                let _ = tx.send(v);
            }
        }
    });
    (child, rx)
}

fn wait_passes(rx: &Rx<serde_json::Value>, n: usize, limit: Duration) -> Vec<serde_json::Value> {
    let t0 = Instant::now();
    let mut passes = Vec::new();
    while passes.len() < n {
        let left = limit.checked_sub(t0.elapsed()).unwrap_or_else(|| panic!("only {} passes", passes.len()));
        let v = rx.recv_timeout(left).unwrap_or_else(|_| panic!("only {} passes", passes.len()));
        if v["event"] == "pass" {
            passes.push(v["pass"].clone());
        }
    }
    passes
}

#[test]
fn continuous_passes_then_cutover_under_a_writer() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("src.img");
    sh(&format!("truncate -s 96M {0} && mkfs.ext4 -q -F {0}", img.display()));
    let dev = Loop::new(&img, 0, 96 * MIB);
    let m = Mnt::new(&dev.0, &t.path().join("m"));
    fill(&m.0, 11, 16);
    let pid = t.path().join("writer.pid");
    // A writer that keeps changing files while the passes run.
    sh(&format!(
        "(i=0; while true; do head -c 262144 /dev/urandom > {m}/w$((i % 6)); i=$((i+1)); sleep 0.1; done) \
         >/dev/null 2>&1 & echo $! > {pid}",
        m = m.0.display(),
        pid = pid.display()
    ));
    let tgt = t.path().join("tgt.img");
    garbage(&tgt, 100 * MIB);
    let r = receiver(&[&tgt], &t.path().join("state"), None);
    let sock = t.path().join("ctl.sock");
    let disk = format!("{}=tgt.img", dev.0);
    let (mut child, rx) =
        continuous(&["--to", &r.addr.to_string(), "--ctl", sock.to_str().unwrap(), "--disk", &disk]);
    let passes = wait_passes(&rx, 3, Duration::from_secs(120));
    assert_eq!(passes[0]["modes"][0], "Full", "{passes:?}");
    assert_eq!(passes[2]["modes"][0], "Delta", "{passes:?}");
    // The status through the socket shows the job.
    let st = ferry().args(["ctl", "--status", "--ctl", sock.to_str().unwrap()]).output().unwrap();
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert!(st["passes"].as_array().unwrap().len() >= 3, "{st:#}");
    let before = format!("kill $(cat {}); sleep 0.3", pid.display());
    let out = ferry()
        .args(["cutover", "--json", "--ctl", sock.to_str().unwrap(), "--before", &before])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let all = v["job"]["passes"].as_array().unwrap();
    assert!(all.len() >= 4, "{v:#}");
    assert!(all.iter().all(|p| p["rpo_s"].as_f64().is_some_and(|x| x >= 0.0)), "{v:#}");
    assert_eq!(all.last().unwrap()["finalize"], true);
    assert_eq!(v["job"]["report"]["consistency"], "frozen", "{v:#}");
    assert_eq!(v["job"]["before"]["ok"], true);
    assert!(child.wait().unwrap().success());
    let st = r.status.lock().unwrap().clone();
    assert!(st.finalized && st.passes.len() == all.len(), "{st:?}");
    // The copy equals the source, file for file (the writer is gone, nothing changes it now).
    let copy = Loop::new(&tgt, 0, 96 * MIB);
    let c = Mnt::new(&format!("-o ro,noload {}", copy.0), &t.path().join("c"));
    sh(&format!("diff -r {} {}", m.0.display(), c.0.display()));
    drop(c);
}

/// The rate of a running transfer (bytes the receiver has, per second) over `secs`.
fn rate(r: &Rcv, secs: f64) -> f64 {
    let pos = || r.status.lock().unwrap().disks.first().map_or(0, |d| d.position);
    std::thread::sleep(Duration::from_millis(700));
    let (p0, t0) = (pos(), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(secs));
    (pos() - p0) as f64 / t0.elapsed().as_secs_f64()
}

#[test]
fn ctl_changes_the_rate_and_pauses_a_running_transfer() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    // Incompressible data: the wire rate is the data rate.
    std::fs::write(&src, prng(5, 160 * MIB as usize)).unwrap();
    let tgt = t.path().join("tgt.img");
    garbage(&tgt, 160 * MIB);
    let r = receiver(&[&tgt], &t.path().join("state"), None);
    let sock = t.path().join("ctl.sock");
    let s = sock.to_str().unwrap();
    let disk = format!("{}=tgt.img", src.display());
    let (mut child, rx) = continuous(&[
        "--to",
        &r.addr.to_string(),
        "--ctl",
        s,
        "--disk",
        &disk,
        "--compress",
        "0",
        "--bwlimit",
        "160",
    ]);
    let ctl = |args: &[&str]| {
        let o = ferry().arg("ctl").args(args).args(["--ctl", s]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let t0 = Instant::now();
    while !sock.exists() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let fast = rate(&r, 3.0);
    let v = ctl(&["--bwlimit", "80"]);
    assert_eq!(v["bwlimit_mbit"], 80.0);
    let slow = rate(&r, 3.0);
    let ratio = slow / fast;
    assert!(
        (0.35..=0.7).contains(&ratio),
        "rate {fast:.0} → {slow:.0} B/s: ratio {ratio:.2}, not about a half"
    );
    assert_eq!(ctl(&["--pause"])["paused"], true);
    let paused = rate(&r, 1.5);
    assert!(paused < fast * 0.05, "still {paused:.0} B/s while paused (was {fast:.0})");
    ctl(&["--resume", "--unlimited"]);
    wait_passes(&rx, 1, Duration::from_secs(120));
    let out = ferry().args(["cutover", "--json", "--ctl", s]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(child.wait().unwrap().success());
    assert_extents_equal(&src, &tgt);
}
