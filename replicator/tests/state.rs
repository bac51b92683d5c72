//! Resume and delta that cannot lie: resume state bound to the target it describes, a digest
//! mismatch that heals on the next run, refused plans that change nothing, bounded state, and a
//! lost state (appliance reboot) that ends in a delta pass.

mod common;
use common::*;
use ferry_replicator::layout;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

const WINDOW: u64 = 2 * MIB;

/// Runs a pass through a proxy that cuts it after `cut` bytes; leaves resume state behind.
fn cut_pass(src: &Path, tgt: &Path, state: &Path, cut: u64) {
    let r = receiver(&[tgt], state, Some(WINDOW));
    let (proxy, _) = cutting_proxy(r.addr, cut);
    assert!(send(&opts(proxy, &[(src, "")])).is_err(), "the cut pass succeeded");
    let _ = r.outcomes.recv_timeout(Duration::from_secs(30));
}

fn durable(state: &Path, name: &str) -> u64 {
    let s = std::fs::read_to_string(state.join(format!("{name}.json"))).unwrap();
    serde_json::from_str::<serde_json::Value>(&s).unwrap()["durable"].as_u64().unwrap()
}

#[test]
fn recreated_target_is_not_resumed_over() {
    let t = tempfile::tempdir().unwrap();
    let src = ext4_with_files(t.path(), 128, 400, 64);
    let tgt = t.path().join("tgt.img");
    let state = t.path().join("state");
    garbage(&tgt, 130 * MIB);
    cut_pass(&src, &tgt, &state, 15 * MIB);
    assert!(durable(&state, "tgt.img") > 4 * MIB);
    // The target is deleted and made again under the same name.
    std::fs::remove_file(&tgt).unwrap();
    garbage(&tgt, 130 * MIB);
    let r = receiver(&[&tgt], &state, Some(WINDOW));
    let mut o = opts(r.addr, &[(&src, "")]);
    o.verify = false;
    let rep = send(&o).unwrap();
    assert!(!rep.disks[0].mode.starts_with("Resume"), "resumed over a new target: {}", rep.disks[0].mode);
    assert_extents_equal(&src, &tgt);
}

#[test]
fn another_target_with_the_same_name_is_not_resumed_over() {
    let t = tempfile::tempdir().unwrap();
    let src = ext4_with_files(t.path(), 128, 400, 64);
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let state = t.path().join("state");
    garbage(&a.join("disk.img"), 130 * MIB);
    garbage(&b.join("disk.img"), 130 * MIB);
    cut_pass(&src, &a.join("disk.img"), &state, 15 * MIB);
    let r = receiver(&[&b.join("disk.img")], &state, Some(WINDOW));
    let mut o = opts(r.addr, &[(&src, "")]);
    o.verify = false;
    let rep = send(&o).unwrap();
    assert!(!rep.disks[0].mode.starts_with("Resume"), "resumed onto another file: {}", rep.disks[0].mode);
    assert_extents_equal(&src, &b.join("disk.img"));
}

#[test]
fn digest_mismatch_after_resume_heals_on_the_next_run() {
    let t = tempfile::tempdir().unwrap();
    let src = ext4_with_files(t.path(), 128, 400, 64);
    let tgt = t.path().join("tgt.img");
    let state = t.path().join("state");
    garbage(&tgt, 130 * MIB);
    cut_pass(&src, &tgt, &state, 15 * MIB);
    let upto = durable(&state, "tgt.img");
    // The source changes in place inside what is already durable (same allocation: same plan).
    let l = layout::analyze(&std::fs::File::open(&src).unwrap()).unwrap();
    let &(s, _) = l.extents.ranges().iter().find(|(s, e)| *s >= 2 * MIB && e - s >= 64 * 1024).unwrap();
    assert!(s + 64 * 1024 < upto, "no used range inside the durable part");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&src)
        .unwrap()
        .write_all_at(&prng(4242, 64 * 1024), s)
        .unwrap();
    let r = receiver(&[&tgt], &state, Some(WINDOW));
    let mut o = opts(r.addr, &[(&src, "")]);
    o.verify = false;
    // The resumed pass may find the mismatch; the run after it must heal.
    let _ = send(&o);
    let rep = send(&o).unwrap_or_else(|e| panic!("the run after a digest mismatch failed: {e:#}"));
    assert!(!rep.disks[0].mode.starts_with("Resume"), "{}", rep.disks[0].mode);
    assert_extents_equal(&src, &tgt);
}

#[test]
fn refused_plan_changes_no_state() {
    let t = tempfile::tempdir().unwrap();
    let s0 = ext4_with_files(&t.path().join("s0"), 128, 400, 64);
    let s1 = ext4_with_files(&t.path().join("s1"), 64, 10, 64);
    let (a, small) = (t.path().join("a.img"), t.path().join("small.img"));
    let state = t.path().join("state");
    garbage(&a, 130 * MIB);
    garbage(&small, 16 * MIB);
    cut_pass(&s0, &a, &state, 15 * MIB);
    // A different source for `a` and a too-small second target: refused as a whole.
    let r = receiver(&[&a, &small], &state, Some(WINDOW));
    let e = send(&opts(r.addr, &[(&s1, "a.img"), (&s1, "small.img")])).unwrap_err();
    assert!(format!("{e:#}").contains("small.img"), "{e:#}");
    // The interrupted pass of s0 onto `a` still resumes.
    let rep = send(&opts(r.addr, &[(&s0, "a.img")])).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(rep.disks[0].mode.starts_with("Resume"), "{}", rep.disks[0].mode);
    assert_extents_equal(&s0, &a);
}

fn dir_bytes(d: &Path) -> u64 {
    std::fs::read_dir(d).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum()
}

/// Resume state grows far slower than the data: at most 64 MiB for 2 TiB used (plus a constant).
#[test]
fn resume_state_is_bounded() {
    let t = tempfile::tempdir().unwrap();
    let src = ext4_with_files(t.path(), 256, 2000, 64);
    let tgt = t.path().join("tgt.img");
    let state = t.path().join("state");
    garbage(&tgt, 256 * MIB);
    let r = receiver(&[&tgt], &state, None);
    let rep = send(&opts(r.addr, &[(&src, "")])).unwrap();
    let used = rep.disks[0].extent_bytes;
    assert!(used > 120 * MIB, "{used}");
    let bound = 64 * MIB * used / (2 << 40) + 128 * 1024;
    let size = dir_bytes(&state);
    assert!(size <= bound, "state of {size} bytes for {used} used bytes (bound {bound})");
}

/// An appliance reboot loses the state (it lives in RAM): the next pass must recognise the
/// target as an earlier copy and send only what differs.
#[test]
fn lost_state_ends_in_a_delta_pass() {
    let t = tempfile::tempdir().unwrap();
    let src = ext4_with_files(t.path(), 128, 400, 64);
    let tgt = t.path().join("tgt.img");
    garbage(&tgt, 130 * MIB);
    let state = t.path().join("state");
    let r = receiver(&[&tgt], &state, None);
    let mut o = opts(r.addr, &[(&src, "")]);
    o.finalize = false;
    let first = send(&o).unwrap();
    std::fs::remove_dir_all(&state).unwrap();
    let r = receiver(&[&tgt], &state, None);
    let mut o = opts(r.addr, &[(&src, "")]);
    o.finalize = true;
    let rep = send(&o).unwrap();
    let d = &rep.disks[0];
    assert_eq!(d.mode, "Delta");
    assert!(
        d.bytes_sent < first.disks[0].bytes_sent / 20,
        "{} of {}",
        d.bytes_sent,
        first.disks[0].bytes_sent
    );
    assert_eq!(d.verified, Some(true));
    assert_extents_equal(&src, &tgt);
}
