//! A receiver no stranger can stall or crash: idle and half-open connections never delay an
//! authenticated sender, what a peer says before authentication is capped and sanitized, and
//! what an authenticated peer says is bounded by the protocol's own sizes and order.

mod common;
use common::*;
use ferry_replicator::proto::{write_frame, Msg, PIECE};
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Case {
    _t: tempfile::TempDir,
    src: std::path::PathBuf,
    tgt: std::path::PathBuf,
    state: std::path::PathBuf,
}

fn case() -> Case {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    sh(&format!("truncate -s 64M {0} && mkfs.ext4 -q -F {0}", src.display()));
    let tgt = t.path().join("tgt.img");
    garbage(&tgt, 80 * MIB);
    let state = t.path().join("state");
    Case { _t: t, src, tgt, state }
}

/// Runs `f` on a thread; fails the test if it takes longer than `limit`.
fn within<T: Send + 'static>(limit: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("{what} took longer than {}s", limit.as_secs()))
}

#[test]
fn idle_connections_never_delay_an_authenticated_sender() {
    let c = case();
    let r = receiver(&[&c.tgt], &c.state, None);
    // One silent TCP connection, one that stops inside the TLS handshake, and a crowd.
    let mut idle = vec![TcpStream::connect(r.addr).unwrap()];
    let mut half = TcpStream::connect(r.addr).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    idle.push(half);
    for _ in 0..200 {
        if let Ok(s) = TcpStream::connect(r.addr) {
            idle.push(s);
        }
    }
    let o = opts(r.addr, &[(&c.src, "")]);
    let rep = within(Duration::from_secs(30), "a send beside idle connections", move || send(&o));
    assert!(rep.unwrap().ok);
    drop(idle);
}

fn last_error(r: &Rcv) -> String {
    r.status.lock().unwrap().last_error.clone().unwrap_or_default()
}

#[test]
fn what_a_stranger_says_is_capped_and_sanitized() {
    let c = case();
    let r = receiver(&[&c.tgt], &c.state, None);
    // Before proving anything: 2 MB of text with newlines and terminal escapes.
    let mut s = tls_client(r.addr);
    let evil = "evil\n\x1b[2J".repeat(180_000);
    let _ = write_frame(&mut s, &Msg::Error { message: evil });
    let _ = s.flush();
    let _ = r.outcomes.recv_timeout(Duration::from_secs(30));
    let e = last_error(&r);
    assert!(e.len() <= 512, "last_error of {} bytes", e.len());
    assert!(!e.chars().any(|c| c.is_control()), "control characters in {e:?}");
}

#[test]
fn decompression_is_bounded_by_the_piece_size() {
    let c = case();
    let r = receiver(&[&c.tgt], &c.state, None);
    let mut s = authenticated(r.addr, &c.src);
    // 256 MiB of zeros compress to a few KiB; raw_len claims 4 GiB.
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
    let zeros = vec![0u8; MIB as usize];
    for _ in 0..256 {
        enc.write_all(&zeros).unwrap();
    }
    let bytes = enc.finish().unwrap();
    assert!(bytes.len() < 1 << 20);
    write_frame(
        &mut s,
        &Msg::Data { disk: 0, offset: 0, raw_len: u32::MAX, compressed: true, bytes: bytes.into() },
    )
    .unwrap();
    s.flush().unwrap();
    let e = r.outcomes.recv_timeout(Duration::from_secs(30)).unwrap().unwrap_err();
    assert!(e.contains(&PIECE.to_string()), "not refused by the piece size: {e}");
}

/// `ferry check`'s throughput data is bounded like `Data`, and only accepted before a plan.
#[test]
fn throughput_data_is_bounded_and_only_before_a_plan() {
    let c = case();
    let r = receiver(&[&c.tgt], &c.state, None);
    let mut s = tls_client(r.addr);
    ferry_replicator::auth::client_handshake(&mut s, TOKEN).unwrap();
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
    for _ in 0..64 {
        enc.write_all(&vec![0u8; MIB as usize]).unwrap();
    }
    let bytes = enc.finish().unwrap();
    write_frame(&mut s, &Msg::Sink { raw_len: u32::MAX, compressed: true, bytes: bytes.into() }).unwrap();
    s.flush().unwrap();
    let e = r.outcomes.recv_timeout(Duration::from_secs(30)).unwrap().unwrap_err();
    assert!(e.contains(&PIECE.to_string()), "not refused by the piece size: {e}");
    // After a real plan, the transfer takes no throughput data.
    let before = file_hash(&c.tgt);
    let mut s = authenticated(r.addr, &c.src);
    write_frame(&mut s, &Msg::Sink { raw_len: 1, compressed: false, bytes: vec![1].into() }).unwrap();
    s.flush().unwrap();
    let e = r.outcomes.recv_timeout(Duration::from_secs(30)).unwrap().unwrap_err();
    assert!(e.contains("unexpected Sink"), "{e}");
    assert_eq!(file_hash(&c.tgt), before);
    assert_eq!(r.status.lock().unwrap().checks, 0);
}

#[test]
fn hash_queries_are_bounded_by_the_block_size() {
    let c = case();
    let r = receiver(&[&c.tgt], &c.state, None);
    let mut s = authenticated_with(r.addr, &c.src, |p| p.source_size = 1 << 50);
    write_frame(&mut s, &Msg::HashQuery { disk: 0, blocks: vec![(0, u32::MAX)] }).unwrap();
    s.flush().unwrap();
    let e = r.outcomes.recv_timeout(Duration::from_secs(30)).unwrap().unwrap_err();
    assert!(e.contains("block"), "{e}");
}

/// A receiver whose finalize hook (the conversion) only records that it was called.
fn watched_receiver(c: &Case) -> (Rcv, Arc<AtomicBool>) {
    let called = Arc::new(AtomicBool::new(false));
    let c2 = called.clone();
    let r = receiver_with(&[&c.tgt], &c.state, move |rx| {
        rx.finalize = Some(Box::new(move |_, _| {
            c2.store(true, Ordering::SeqCst);
            ferry_replicator::receiver::Finalized { ok: true, report: serde_json::json!("converted") }
        }))
    });
    (r, called)
}

#[test]
fn finish_before_every_disk_end_never_finalizes() {
    let c = case();
    let (r, called) = watched_receiver(&c);
    let mut s = authenticated(r.addr, &c.src);
    write_frame(&mut s, &Msg::Finish { finalize: true }).unwrap();
    s.flush().unwrap();
    let out = r.outcomes.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(out.is_err(), "{out:?}");
    assert!(!called.load(Ordering::SeqCst), "conversion started on partial disks");
}

/// Each case's messages after authentication end the session with an error naming `want`.
fn refused(c: &Case, r: &Rcv, cases: &[(Vec<Msg>, &str)]) {
    for (msgs, want) in cases {
        let mut s = authenticated(r.addr, &c.src);
        for m in msgs {
            if write_frame(&mut s, m).is_err() {
                break;
            }
        }
        let _ = s.flush();
        let e = r.outcomes.recv_timeout(Duration::from_secs(30)).unwrap().unwrap_err();
        assert!(e.contains(want), "{want}: {e}");
    }
}

/// Customization hooks from the peer are bounded (count, size, names that become file names)
/// and a bad one ends the session before any conversion.
#[test]
fn hooks_are_bounded_and_named_safely() {
    use ferry_convert::hooks::HookKind;
    let c = case();
    let (r, called) = watched_receiver(&c);
    let hook = |name: &str, len: usize| Msg::Hook {
        kind: HookKind::Run,
        name: name.into(),
        body: vec![b'#'; len].into(),
    };
    let cases: [(Vec<Msg>, &str); 3] = [
        (vec![hook("../../etc/passwd", 10)], "hook name"),
        ((0..17).map(|i| hook(&format!("h{i}"), 10)).collect(), "17 hooks"),
        (vec![hook("big", (1 << 20) + 1)], "bytes"),
    ];
    refused(&c, &r, &cases);
    assert!(!called.load(Ordering::SeqCst), "conversion started after a bad hook");
}

/// LUKS keys from the peer are bounded (count, size) and a bad one ends the session before any
/// conversion.
#[test]
fn luks_keys_are_bounded() {
    let c = case();
    let (r, called) = watched_receiver(&c);
    let key = |len: usize| Msg::LuksKey { key: vec![b'k'; len].into() };
    let cases: [(Vec<Msg>, &str); 3] = [
        ((0..9).map(|_| key(16)).collect(), "more than 8 LUKS keys"),
        (vec![key(0)], "a LUKS key of 0 bytes"),
        (vec![key((64 << 10) + 1)], "a LUKS key of 65537 bytes"),
    ];
    refused(&c, &r, &cases);
    assert!(!called.load(Ordering::SeqCst), "conversion started after a bad key");
}

#[test]
fn tls_below_1_3_is_refused() {
    let c = case();
    let r = receiver(&[&c.tgt], &c.state, None);
    let t = Instant::now();
    assert!(tls12_client(r.addr).is_err(), "a TLS 1.2 handshake succeeded");
    assert!(t.elapsed() < Duration::from_secs(10));
}

/// A sender that re-runs right after an interrupted one finds the old session still ending: it
/// waits its turn instead of being refused.
#[test]
fn a_new_sender_waits_for_the_ending_session() {
    let c = case();
    let r = receiver(&[&c.tgt], &c.state, None);
    let old = authenticated(r.addr, &c.src);
    let o = opts(r.addr, &[(&c.src, "")]);
    let next = std::thread::spawn(move || send(&o));
    std::thread::sleep(Duration::from_secs(2));
    drop(old);
    let rep = within(Duration::from_secs(30), "the next send", move || next.join().unwrap());
    assert!(rep.unwrap_or_else(|e| panic!("{e:#}")).ok);
}
