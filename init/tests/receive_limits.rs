//! `ferry-init receive` as a real process under a small descriptor limit: a crowd of idle
//! connections makes `accept` fail with EMFILE. The receiver must wait and go on (the idle
//! connections are cut at the handshake deadline), not end; a real sender then gets through.

use ferry_replicator::progress::Style;
use ferry_replicator::sender::{self, Options};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "limits-test-token-42";

/// Kills the receiver whatever happens to the test.
struct Rx(std::process::Child);
impl Drop for Rx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn accept_errors_are_retried() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    let st = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&src).arg("32M").status().unwrap();
    assert!(st.success());
    let tgt = t.path().join("tgt.img");
    std::fs::File::create(&tgt).unwrap().set_len(40 << 20).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut rx = Rx(Command::new("prlimit")
        .arg("--nofile=32")
        .arg(env!("CARGO_BIN_EXE_ferry-init"))
        .args(["receive", "--listen", &format!("127.0.0.1:{port}"), "--token", TOKEN])
        .arg("--target")
        .arg(&tgt)
        .arg("--state-dir")
        .arg(t.path().join("state"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let t0 = Instant::now();
    let mut idle = Vec::new();
    while idle.is_empty() {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            idle.push(s);
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "receiver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Far more idle connections than descriptors.
    for _ in 0..30 {
        if let Ok(s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)) {
            idle.push(s);
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(rx.0.try_wait().unwrap().is_none(), "the receiver ended when accept failed");
    let o = Options {
        to: format!("127.0.0.1:{port}"),
        token: TOKEN.into(),
        disks: vec![(src.display().to_string(), String::new())],
        compress: 1,
        bwlimit_mbit: None,
        verify: true,
        finalize: true,
        fingerprint: None,
        style: Style::Quiet,
        workers: 2,
        freeze: false,
        knobs: None,
        hooks: Vec::new(),
        luks_keys: Vec::new(),
    };
    let sent = std::thread::spawn(move || sender::send(&o));
    let t1 = Instant::now();
    while !sent.is_finished() {
        assert!(t1.elapsed() < Duration::from_secs(90), "the sender did not get through");
        std::thread::sleep(Duration::from_millis(200));
    }
    let rep = sent.join().unwrap().unwrap();
    assert!(rep.ok && rep.disks[0].verified == Some(true));
    assert!(rx.0.wait().unwrap().success());
    drop(idle);
}
