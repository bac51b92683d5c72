//! `ferry-init receive` as a real process: SIGKILL it in the middle of a transfer, start it
//! again, run the same send, and the pass resumes from its last checkpoint and ends equal.

use ferry_replicator::progress::Style;
use ferry_replicator::sender::{self, Options};
use std::os::unix::fs::FileExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const TOKEN: &str = "kill-test-token-42";

fn sh(cmd: &str) {
    let st = Command::new("bash").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

fn receiver(port: u16, tgt: &std::path::Path, state: &std::path::Path) -> Child {
    let c = Command::new(env!("CARGO_BIN_EXE_ferry-init"))
        .args(["receive", "--listen", &format!("127.0.0.1:{port}"), "--token", TOKEN])
        .arg("--target")
        .arg(tgt)
        .arg("--state-dir")
        .arg(state)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "receiver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    c
}

#[test]
fn sigkill_receiver_then_resume() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let mut x = 88172645463325252u64;
    for i in 0..48 {
        let mut v = Vec::with_capacity(MIB as usize);
        while v.len() < MIB as usize {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        std::fs::write(tree.join(format!("f{i}")), v).unwrap();
    }
    let src = t.path().join("src.img");
    sh(&format!("mkfs.ext4 -q -F -d {} {} 128M", tree.display(), src.display()));
    let tgt = t.path().join("tgt.img");
    std::fs::File::create(&tgt).unwrap().set_len(128 * MIB).unwrap();
    let state = t.path().join("state");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut o = Options {
        to: format!("127.0.0.1:{port}"),
        token: TOKEN.into(),
        disks: vec![(src.display().to_string(), String::new())],
        compress: 0,
        // ~4 s for the ~50 MB: time to kill it in the middle.
        bwlimit_mbit: Some(100.0),
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
    let mut rx = receiver(port, &tgt, &state);
    let o2 = o.clone();
    let sending = std::thread::spawn(move || sender::send(&o2));
    // Kill once a checkpoint is on disk.
    let t0 = Instant::now();
    let json = state.join("tgt.img.json");
    loop {
        let durable = std::fs::read_to_string(&json)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v["durable"].as_u64())
            .unwrap_or(0);
        if durable > 8 * MIB {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no checkpoint beyond 8 MiB");
        std::thread::sleep(Duration::from_millis(20));
    }
    rx.kill().unwrap(); // SIGKILL
    rx.wait().unwrap();
    assert!(sending.join().unwrap().is_err(), "the send survived a killed receiver");
    let mut rx = receiver(port, &tgt, &state);
    o.bwlimit_mbit = None;
    let rep = sender::send(&o).unwrap();
    rx.wait().unwrap();
    let d = &rep.disks[0];
    assert!(d.mode.starts_with("Resume"), "{}", d.mode);
    assert!(d.bytes_sent < d.extent_bytes - 8 * MIB + 64 * MIB, "{d:?}");
    assert_eq!(d.verified, Some(true));
    // Byte-exact on every used block.
    let l = ferry_replicator::layout::analyze(&std::fs::File::open(&src).unwrap()).unwrap();
    let (s, g) = (std::fs::File::open(&src).unwrap(), std::fs::File::open(&tgt).unwrap());
    for &(a, b) in l.extents.ranges() {
        let (mut p, mut q) = (vec![0u8; (b - a) as usize], vec![0u8; (b - a) as usize]);
        s.read_exact_at(&mut p, a).unwrap();
        g.read_exact_at(&mut q, a).unwrap();
        assert!(p == q, "differs in [{a}, {b})");
    }
}
