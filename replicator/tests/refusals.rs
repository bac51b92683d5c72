//! Every refusal is clear and leaves the target untouched: wrong token, a man in the middle
//! (relay and impersonation), a wrong certificate pin, corrupted and truncated frames, a
//! too-small target, a target in use.

mod common;
use common::*;
use ferry_replicator::auth::{self, Identity, Role};
use ferry_replicator::proto::{self, read_frame, write_frame, DiskPlan, Msg};
use ferry_replicator::{layout, sender::source};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
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

#[test]
fn impersonating_receiver_gets_nothing() {
    let c = case(80);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let fake = std::thread::spawn(move || {
        let id = Identity::ephemeral().unwrap();
        let (s, _) = l.accept().unwrap();
        let mut s = auth::server(s, &id).unwrap();
        let Msg::Hello { .. } = read_frame(&mut s).unwrap() else { panic!() };
        write_frame(&mut s, &Msg::Welcome { proof: [7u8; 32], targets: vec![] }).unwrap();
        s.flush().unwrap();
        // The sender must hang up without sending its plan.
        read_frame(&mut s).map(|m| m.kind()).map_err(|e| e.to_string())
    });
    let e = format!("{:#}", send(&opts(addr, &[(&c.src, "")])).unwrap_err());
    assert!(e.contains("could not prove it knows the token"), "{e}");
    assert!(fake.join().unwrap().is_err(), "the sender sent something after a bad proof");
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

/// Authenticates and sends a valid plan, then hands over the raw stream.
fn authenticated(addr: std::net::SocketAddr, src: &Path) -> auth::ClientStream {
    let mut s = auth::client(TcpStream::connect(addr).unwrap(), None).unwrap();
    let proof = auth::proof(&s.conn, TOKEN, Role::Sender).unwrap();
    write_frame(
        &mut s,
        &Msg::Hello { magic: proto::MAGIC, version: proto::VERSION, proof, client: "test".into() },
    )
    .unwrap();
    proto::expect(&mut s, "Welcome").unwrap();
    let l = layout::analyze(&std::fs::File::open(src).unwrap()).unwrap();
    let sid = source::source_id(&src.display().to_string(), l.size);
    let plan = DiskPlan {
        source: src.display().to_string(),
        source_size: l.size,
        source_id: sid,
        plan_hash: source::plan_hash(&sid, &l.extents),
        last_used: l.last_used,
        extent_bytes: l.extent_bytes,
        target: String::new(),
    };
    write_frame(&mut s, &Msg::Plan { disks: vec![plan], verify: false }).unwrap();
    proto::expect(&mut s, "PlanOk").unwrap();
    s
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
