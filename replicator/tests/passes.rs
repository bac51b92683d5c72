//! Resume after a cut connection at many points, and delta passes that send only what changed.

mod common;
use common::*;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[test]
fn resume_after_cuts_at_twenty_four_points() {
    let t = tempfile::tempdir().unwrap();
    let src = ext4_with_files(t.path(), 128, 400, 64);
    let tgt = t.path().join("tgt.img");
    let window = 2 * MIB;
    // Reference: an uninterrupted pass, for the wire size.
    let state = t.path().join("state-ref");
    garbage(&tgt, 130 * MIB);
    let r = receiver(&[&tgt], &state, Some(window));
    let total = send(&opts(r.addr, &[(&src, "")])).unwrap().wire_bytes;
    assert!(total > 20 * MIB, "{total}");
    let mut cuts: Vec<u64> = vec![50, 700, 3000];
    cuts.extend((1..=21).map(|i| total * i / 22));
    for (i, cut) in cuts.iter().enumerate() {
        let state = t.path().join(format!("state{i}"));
        garbage(&tgt, 130 * MIB);
        let r = receiver(&[&tgt], &state, Some(window));
        let (proxy, _) = cutting_proxy(r.addr, *cut);
        assert!(send(&opts(proxy, &[(&src, "")])).is_err(), "cut at {cut} did not fail");
        // Let the receiver notice the cut before the sender comes back.
        let _ = r.outcomes.recv_timeout(std::time::Duration::from_secs(30));
        let rep =
            send(&opts(r.addr, &[(&src, "")])).unwrap_or_else(|e| panic!("resume after cut at {cut}: {e:#}"));
        let d = &rep.disks[0];
        assert_eq!(d.verified, Some(true));
        // At most one checkpoint window (plus one piece and the handshake) is sent again.
        let bound = total.saturating_sub(*cut) + window + MIB + 64 * 1024;
        assert!(
            rep.wire_bytes <= bound,
            "cut at {cut}: resumed pass sent {} bytes, bound {bound} ({})",
            rep.wire_bytes,
            d.mode
        );
        if *cut > total / 4 {
            assert!(d.mode.starts_with("Resume"), "cut at {cut}: mode {}", d.mode);
        }
        assert_extents_equal(&src, &tgt);
    }
    sh(&format!("e2fsck -fn {}", tgt.display()));
}

#[test]
fn delta_pass_sends_about_what_changed() {
    let t = tempfile::tempdir().unwrap();
    let files = 2000;
    let src = ext4_with_files(t.path(), 256, files, 16);
    let tgt = t.path().join("tgt.img");
    garbage(&tgt, 256 * MIB);
    let r = receiver(&[&tgt], &t.path().join("state"), None);
    let mut o = opts(r.addr, &[(&src, "")]);
    o.finalize = false;
    let first = send(&o).unwrap();
    assert_eq!(first.disks[0].mode, "Full");
    // Change 1 % of the files in place.
    {
        let l = Loop::new(&src, 0, 256 * MIB);
        let m = Mnt::new(&l.0, &t.path().join("m"));
        for i in (0..files).step_by(100) {
            let p = m.0.join(format!("d{}", i % 32)).join(format!("f{i}"));
            std::fs::write(p, prng(99_000 + i as u64, 16 * 1024)).unwrap();
        }
    }
    o.finalize = true;
    let second = send(&o).unwrap();
    let d = &second.disks[0];
    assert_eq!(d.mode, "Delta");
    assert_eq!(d.bytes_compared, d.extent_bytes);
    let data = (files * 16 * 1024) as u64;
    // 20 changed files of 16 KiB = 320 KiB of file data (1 %), plus the inode, bitmap and journal
    // blocks ext4 rewrote: measured 2.3 %.
    assert!(
        d.bytes_sent <= data * 3 / 100,
        "delta sent {} bytes for {} bytes changed of {data}",
        d.bytes_sent,
        20 * 16 * 1024
    );
    assert!(
        d.wire_bytes < first.disks[0].wire_bytes / 20,
        "{} vs {}",
        d.wire_bytes,
        first.disks[0].wire_bytes
    );
    assert_eq!(d.verified, Some(true));
    assert_extents_equal(&src, &tgt);
    sh(&format!("e2fsck -fn {}", tgt.display()));
    eprintln!(
        "delta: compared {} bytes, sent {} ({:.2} % of {} file bytes)",
        d.bytes_compared,
        d.bytes_sent,
        100.0 * d.bytes_sent as f64 / data as f64,
        data
    );
}

#[test]
fn frozen_live_source_gives_a_clean_copy() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    sh(&format!("truncate -s 128M {0} && mkfs.ext4 -q -F {0}", src.display()));
    let dev = Loop::new(&src, 0, 128 * MIB);
    let m = Mnt::new(&dev.0, &t.path().join("m"));
    // A busy writer on the mounted source.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (dir, s2) = (m.0.clone(), stop.clone());
    let writer = std::thread::spawn(move || {
        let mut i = 0u64;
        while !s2.load(Ordering::SeqCst) {
            std::fs::write(dir.join(format!("w{}", i % 64)), prng(i, 256 * 1024)).unwrap();
            i += 1;
        }
        i
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let tgt = t.path().join("tgt.img");
    garbage(&tgt, 130 * MIB);
    let r = receiver(&[&tgt], &t.path().join("state"), None);
    let mut o = opts(r.addr, &[(Path::new(&dev.0), "")]);
    o.freeze = true;
    let rep = send(&o).unwrap();
    stop.store(true, Ordering::SeqCst);
    assert!(writer.join().unwrap() > 0);
    assert_eq!(rep.disks[0].verified, Some(true));
    drop(m);
    // The copy is a consistent filesystem even though it was written to during the pass.
    sh(&format!("e2fsck -fn {}", tgt.display()));
}

/// The finalize hook's report reaches the sender as a JSON value (not JSON inside a string),
/// with its outcome; a plain pass says so in a note. The sender's customization hooks reach the
/// conversion whole, with the finalizing pass only; so do LUKS keys (in memory; the hook here
/// proves their bytes arrived by hashing them).
#[test]
fn the_receivers_report_is_a_json_document() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    garbage(&src, 8 * MIB);
    let tgt = t.path().join("tgt.img");
    garbage(&tgt, 8 * MIB);
    let r = receiver_with(&[&tgt], &t.path().join("state"), |rx| {
        rx.finalize = Some(Box::new(|targets, h| ferry_replicator::receiver::Finalized {
            ok: false,
            report: serde_json::json!({
                "ok": false, "error": "no root", "targets": targets.len(),
                "hooks": h.hooks.iter().map(|h| (h.kind, &h.name, h.body.len())).collect::<Vec<_>>(),
                "keys": h.luks_keys.iter().map(|k| ferry_replicator::digest::hex(blake3::hash(&k.0).as_bytes())).collect::<Vec<_>>(),
            }),
        }))
    });
    use ferry_convert::hooks::{Hook, HookKind};
    let mut o = opts(r.addr, &[(&src, "")]);
    o.hooks = vec![
        Hook { kind: HookKind::Run, name: "setup.sh".into(), body: vec![b'x'; 300_000] },
        Hook { kind: HookKind::Firstboot, name: "hello".into(), body: b"#!/bin/sh\n".to_vec() },
    ];
    let keys = [b"correct horse battery staple".to_vec(), vec![0xa5; 4096]];
    o.luks_keys = keys.iter().map(|k| ferry_convert::crypt::Key::new(k.clone())).collect();
    o.finalize = false;
    let pass = send(&o).unwrap();
    assert_eq!(pass.receiver_report["note"], "pass complete; waiting for more passes");
    o.finalize = true;
    let last = send(&o).unwrap();
    assert!(!last.ok);
    assert_eq!(last.receiver_report["error"], "no root");
    assert_eq!(last.receiver_report["targets"], 1);
    assert_eq!(
        last.receiver_report["hooks"],
        serde_json::json!([["run", "setup.sh", 300_000], ["firstboot", "hello", 10]])
    );
    let want: Vec<String> =
        keys.iter().map(|k| ferry_replicator::digest::hex(blake3::hash(k).as_bytes())).collect();
    assert_eq!(last.receiver_report["keys"], serde_json::json!(want));
}
