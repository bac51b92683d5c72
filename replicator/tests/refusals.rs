//! Every refusal is clear and leaves the target untouched: wrong token, a man in the middle
//! (relay and impersonation), a wrong certificate pin, corrupted and truncated frames, a
//! too-small target, a target in use.

mod common;
use common::*;
use ferry_replicator::auth::{self, Identity, Role};
use ferry_replicator::proto::{read_frame, write_frame, Msg};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

struct Case {
    _t: tempfile::TempDir,
    src: std::path::PathBuf,
    tgt: std::path::PathBuf,
    before: [u8; 32],
    state: std::path::PathBuf,
}

fn case(tgt_mib: u64) -> Case {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    sh(&format!("truncate -s 64M {0} && mkfs.ext4 -q -F {0}", src.display()));
    let tgt = t.path().join("tgt.img");
    garbage(&tgt, tgt_mib * MIB);
    let before = file_hash(&tgt);
    let state = t.path().join("state");
    Case { _t: t, src, tgt, before, state }
}

fn outcome(r: &Rcv) -> Result<ferry_replicator::receiver::Outcome, String> {
    r.outcomes.recv_timeout(Duration::from_secs(30)).expect("receiver session ended")
}

#[test]
fn wrong_token_is_refused_and_counted() {
    let c = case(80);
    let r = receiver(&[&c.tgt], &c.state, None);
    let mut o = opts(r.addr, &[(&c.src, "")]);
    o.token = "not-the-token".into();
    let e = format!("{:#}", send(&o).unwrap_err());
    assert!(e.contains("authentication failed"), "{e}");
    assert_eq!(r.status.lock().unwrap().failed_auth, 1);
    assert_eq!(file_hash(&c.tgt), c.before);
}

/// A relay that terminates TLS with its own certificate and forwards messages both ways.
fn mitm_relay(upstream: std::net::SocketAddr) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let id = Identity::ephemeral().unwrap();
        let (s, _) = l.accept().unwrap();
        let mut down = auth::server(s, &id).unwrap();
        let mut up = auth::client(TcpStream::connect(upstream).unwrap(), None).unwrap();
        for _ in 0..4 {
            let Ok(m) = read_frame(&mut down) else { return };
            write_frame(&mut up, &m).unwrap();
            let Ok(m) = read_frame(&mut up) else { return };
            let _ = write_frame(&mut down, &m);
            let _ = down.flush();
        }
    });
    addr
}

#[test]
fn man_in_the_middle_relay_is_refused() {
    let c = case(80);
    let r = receiver(&[&c.tgt], &c.state, None);
    let relay = mitm_relay(r.addr);
    let e = format!("{:#}", send(&opts(relay, &[(&c.src, "")])).unwrap_err());
    assert!(e.contains("authentication failed"), "{e}");
    assert!(outcome(&r).is_ok());
    assert_eq!(r.status.lock().unwrap().failed_auth, 1);
    assert_eq!(file_hash(&c.tgt), c.before);
}

/// What a fake receiver (a spoofed address, a typo in `--to`) captures from a real sender.
struct Capture {
    exporter: [u8; 32],
    /// Every frame the sender sent.
    frames: Vec<Msg>,
    /// The key the fake derived with its own guess, and whether the sender's Proof matched it.
    guess_confirmed: bool,
}

const FAKE_GUESS: &str = "wrong-guess-1";

/// A fake receiver that does not know the token: it plays the protocol as far as it can (with a
/// guessed token) and records what the sender sends.
type FakeRun = std::thread::JoinHandle<(Capture, Result<&'static str, String>)>;

fn fake_receiver() -> (std::net::SocketAddr, FakeRun) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let id = Identity::ephemeral().unwrap();
        let (s, _) = l.accept().unwrap();
        let mut s = auth::server(s, &id).unwrap();
        let exporter = auth::exporter_value(&s.conn).unwrap();
        let hello = read_frame(&mut s).unwrap();
        let Msg::Hello { pake, .. } = &hello else { panic!("{hello:?}") };
        let (mine, msg) = auth::Pake::start(&s.conn, FAKE_GUESS, Role::Receiver).unwrap();
        write_frame(&mut s, &Msg::Challenge { pake: msg.into() }).unwrap();
        s.flush().unwrap();
        let proof = read_frame(&mut s).unwrap();
        let Msg::Proof { mac } = &proof else { panic!("{proof:?}") };
        let key = mine.finish(pake).unwrap();
        let guess_confirmed = auth::confirmed(&key, Role::Sender, mac);
        write_frame(&mut s, &Msg::Welcome { mac: [7u8; 32], targets: vec![] }).unwrap();
        s.flush().unwrap();
        // The sender must hang up without sending its plan.
        let next = read_frame(&mut s).map(|m| m.kind()).map_err(|e| e.to_string());
        (Capture { exporter, frames: vec![hello, proof], guess_confirmed }, next)
    });
    (addr, h)
}

/// The v1 offline test: an HMAC keyed by a candidate token over this session's exporter value,
/// looked for in every 32-byte field the sender sent.
fn offline_test(c: &Capture, candidate: &str) -> bool {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, candidate.as_bytes());
    let mut m = b"ferry-v1 sender ".to_vec();
    m.extend_from_slice(&c.exporter);
    c.frames.iter().any(|f| match f {
        Msg::Proof { mac } => ring::hmac::verify(&key, &m, mac).is_ok(),
        Msg::Hello { pake, .. } => pake.windows(32).any(|w| ring::hmac::verify(&key, &m, w).is_ok()),
        _ => false,
    })
}

#[test]
fn impersonating_receiver_gets_nothing() {
    let c = case(80);
    let (addr, fake) = fake_receiver();
    let e = format!("{:#}", send(&opts(addr, &[(&c.src, "")])).unwrap_err());
    assert!(e.contains("could not prove it knows the token"), "{e}");
    let (capture, next) = fake.join().unwrap();
    assert!(next.is_err(), "the sender sent something after a bad proof");
    // Its one online guess failed, and nothing in the capture tests other guesses offline.
    assert!(!capture.guess_confirmed);
    for guess in ["wrong-guess-2", TOKEN, "wrong-guess-3"] {
        assert!(!offline_test(&capture, guess), "the capture confirms the guess {guess:?} offline");
    }
}

#[test]
fn repeated_failures_from_one_peer_are_slowed_down() {
    let c = case(80);
    let r = receiver_with(&[&c.tgt], &c.state, |rx| rx.auth_cooldown = Duration::from_secs(3));
    let mut o = opts(r.addr, &[(&c.src, "")]);
    o.token = "not-the-token".into();
    for _ in 0..5 {
        assert!(send(&o).is_err());
    }
    o.token = TOKEN.into();
    let e = format!("{:#}", send(&o).unwrap_err());
    assert!(e.contains("too many failed"), "{e}");
    assert_eq!(file_hash(&c.tgt), c.before);
    std::thread::sleep(Duration::from_secs(4));
    assert!(send(&o).unwrap().ok);
}

#[test]
fn certificate_pin() {
    let c = case(80);
    let r = receiver(&[&c.tgt], &c.state, None);
    let mut o = opts(r.addr, &[(&c.src, "")]);
    o.fingerprint = Some("00".repeat(32));
    let e = format!("{:#}", send(&o).unwrap_err());
    assert!(e.contains("fingerprint"), "{e}");
    assert_eq!(file_hash(&c.tgt), c.before);
    o.fingerprint = Some(r.fingerprint.clone());
    assert!(send(&o).unwrap().ok);
}

fn data_frame() -> Vec<u8> {
    let m =
        Msg::Data { disk: 0, offset: 0, raw_len: 4096, compressed: false, bytes: vec![0xab; 4096].into() };
    let mut buf = Vec::new();
    write_frame(&mut buf, &m).unwrap();
    buf
}

#[test]
fn corrupted_frame_is_refused_before_any_write() {
    let c = case(80);
    let r = receiver(&[&c.tgt], &c.state, None);
    let mut s = authenticated(r.addr, &c.src);
    let mut f = data_frame();
    f[100] ^= 0xff;
    s.write_all(&f).unwrap();
    s.flush().unwrap();
    let e = outcome(&r).unwrap_err();
    assert!(e.contains("crc32 mismatch"), "{e}");
    assert_eq!(file_hash(&c.tgt), c.before);
}

#[test]
fn truncated_frame_is_refused_before_any_write() {
    let c = case(80);
    let r = receiver(&[&c.tgt], &c.state, None);
    let mut s = authenticated(r.addr, &c.src);
    let f = data_frame();
    s.write_all(&f[..f.len() / 2]).unwrap();
    s.flush().unwrap();
    s.conn.send_close_notify();
    s.flush().unwrap();
    drop(s);
    let e = outcome(&r).unwrap_err();
    assert!(e.contains("truncated"), "{e}");
    assert_eq!(file_hash(&c.tgt), c.before);
}

#[test]
fn too_small_target_names_both_sizes() {
    let c = case(32);
    let r = receiver(&[&c.tgt], &c.state, None);
    let e = format!("{:#}", send(&opts(r.addr, &[(&c.src, "")])).unwrap_err());
    assert!(e.contains(&format!("{} bytes", 32 * MIB)) && e.contains(&format!("{} bytes", 64 * MIB)), "{e}");
    assert_eq!(file_hash(&c.tgt), c.before);
}

#[test]
fn target_in_use_is_refused() {
    let c = case(80);
    let l = Loop::new(&c.tgt, 0, 80 * MIB);
    let r = receiver(&[&c.tgt], &c.state, None);
    let e = format!("{:#}", send(&opts(r.addr, &[(&c.src, "")])).unwrap_err());
    assert!(e.contains("in use") && e.contains(&l.0), "{e}");
    drop(l);
    assert_eq!(file_hash(&c.tgt), c.before);
}

/// `--token-file`: the token from a file's first line (never on a command line other local
/// users can read); an empty file is an error that names it.
#[test]
fn token_from_a_file() {
    let c = case(80);
    let r = receiver(&[&c.tgt], &c.state, None);
    let f = c.state.with_file_name("token");
    let ferry = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["send", "--to", &r.addr.to_string(), "--token-file"])
            .arg(file)
            .arg("--disk")
            .arg(&c.src)
            .output()
            .unwrap()
    };
    std::fs::write(&f, "").unwrap();
    let out = ferry(&f);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is empty") && err.contains(f.to_str().unwrap()), "{err}");
    std::fs::write(&f, format!("{TOKEN}\n")).unwrap();
    let out = ferry(&f);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
