//! Helpers for host-mode tests: real images made with mkfs/sgdisk/sfdisk, loop devices and
//! mounts as guards, a receiver on loopback, and byte-exact comparisons.
#![allow(dead_code)]

pub mod lvm;

use ferry_replicator::layout;
use ferry_replicator::progress::Style;
use ferry_replicator::receiver::{Outcome, Receiver, RxStatus, TargetSpec};
use ferry_replicator::sender::{self, Options, Report};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver as Rx};
use std::sync::{Arc, Mutex};

pub const MIB: u64 = 1 << 20;
pub const TOKEN: &str = "test-token-0123456789";

pub fn sh(cmd: &str) -> String {
    let out = Command::new("bash").arg("-c").arg(cmd).output().expect("bash");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loop device over a byte range of an image; detached on drop.
pub struct Loop(pub String);
impl Loop {
    pub fn new(img: &Path, offset: u64, size: u64) -> Self {
        let dev = sh(&format!("losetup -f --show -o {offset} --sizelimit {size} {}", img.display()));
        Loop(dev.trim().to_string())
    }
}
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A mount; unmounted on drop.
pub struct Mnt(pub PathBuf);
impl Mnt {
    pub fn new(dev: &str, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        sh(&format!("mount {dev} {}", dir.display()));
        Mnt(dir.to_path_buf())
    }
}
impl Drop for Mnt {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Deterministic pseudo-random bytes.
pub fn prng(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Fills `dir` with ~`mib` MiB of mixed files: text, binaries, random, zeros. Returns the file count.
pub fn fill(dir: &Path, seed: u64, mib: u64) -> usize {
    let mut n = 0;
    let mut total = 0u64;
    let words = "the quick brown ferry carries blocks across the network to a new machine ";
    let bins: Vec<PathBuf> = std::fs::read_dir("/usr/bin")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .take(200)
        .collect();
    while total < mib * MIB {
        let kind = n % 4;
        let size = 4096 + (prng(seed + n as u64, 8)[0] as u64) * 2048;
        let data = match kind {
            0 => words.repeat((size as usize / words.len()) + 1).into_bytes()[..size as usize].to_vec(),
            // A real binary's first bytes: as many as the other kinds, whatever is installed.
            1 => {
                let mut b =
                    std::fs::read(&bins[n % bins.len()]).unwrap_or_else(|_| prng(seed, size as usize));
                b.truncate(size as usize);
                b
            }
            2 => prng(seed * 1000 + n as u64, size as usize),
            _ => vec![0u8; size as usize],
        };
        let sub = dir.join(format!("d{}", n % 16));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("f{n}")), &data).unwrap();
        total += data.len() as u64;
        n += 1;
    }
    n
}

/// A target file of `size` bytes filled with garbage.
pub fn garbage(path: &Path, size: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let block = prng(0xfeed, MIB as usize);
    let mut off = 0;
    while off < size {
        let n = MIB.min(size - off) as usize;
        f.write_all_at(&block[..n], off).unwrap();
        off += MIB;
    }
}

pub fn file_hash(path: &Path) -> [u8; 32] {
    let data = std::fs::read(path).unwrap();
    *blake3::hash(&data).as_bytes()
}

pub struct Rcv {
    pub addr: SocketAddr,
    pub status: Arc<Mutex<RxStatus>>,
    pub outcomes: Rx<Result<Outcome, String>>,
    pub fingerprint: String,
}

/// A receiver on 127.0.0.1 that serves sessions until the test ends; each session's outcome
/// arrives on `outcomes`.
pub fn receiver(targets: &[&Path], state: &Path, checkpoint: Option<u64>) -> Rcv {
    receiver_with(targets, state, move |rx| {
        if let Some(c) = checkpoint {
            rx.checkpoint_bytes = c;
        }
    })
}

/// As [`receiver`], with the receiver adjusted by `f` before it serves.
pub fn receiver_with(targets: &[&Path], state: &Path, f: impl FnOnce(&mut Receiver)) -> Rcv {
    let specs = targets
        .iter()
        .map(|p| TargetSpec {
            path: p.to_path_buf(),
            name: p.file_name().unwrap().to_string_lossy().into(),
            serial: String::new(),
        })
        .collect();
    let mut rx = Receiver::new(TOKEN.into(), specs, state.to_path_buf()).unwrap();
    f(&mut rx);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let status = rx.status.clone();
    let fingerprint = rx.identity.fingerprint.clone();
    let (tx, outcomes) = channel();
    let tx = Mutex::new(tx);
    rx.observer = Some(Box::new(move |r: &anyhow::Result<Outcome>| {
        let _ = tx.lock().unwrap().send(r.as_ref().map(|o| *o).map_err(|e| format!("{e:#}")));
    }));
    std::thread::spawn(move || loop {
        if rx.serve(&l).is_err() {
            return;
        }
    });
    Rcv { addr, status, outcomes, fingerprint }
}

/// A TLS connection to the receiver, nothing sent yet.
pub fn tls_client(addr: SocketAddr) -> ferry_replicator::auth::ClientStream {
    ferry_replicator::auth::client(TcpStream::connect(addr).unwrap(), None).unwrap()
}

/// A TLS 1.2-only handshake with the receiver.
pub fn tls12_client(addr: SocketAddr) -> anyhow::Result<()> {
    let p = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), "ferry-appliance".try_into()?)?;
    let mut sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(())
}

#[derive(Debug)]
struct AnyCert;
impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// Authenticates as a sender and sends a valid plan for `src`, then hands over the raw stream.
pub fn authenticated(addr: SocketAddr, src: &Path) -> ferry_replicator::auth::ClientStream {
    authenticated_with(addr, src, |_| {})
}

/// As [`authenticated`], with the plan adjusted by `f`.
pub fn authenticated_with(
    addr: SocketAddr,
    src: &Path,
    f: impl FnOnce(&mut ferry_replicator::proto::DiskPlan),
) -> ferry_replicator::auth::ClientStream {
    use ferry_replicator::auth;
    use ferry_replicator::proto::{self, write_frame, DiskPlan, Msg};
    use ferry_replicator::sender::source;
    let mut s = tls_client(addr);
    auth::client_handshake(&mut s, TOKEN).unwrap();
    let l = layout::analyze(&std::fs::File::open(src).unwrap()).unwrap();
    let sid = source::source_id(&src.display().to_string(), l.size);
    let mut plan = DiskPlan {
        source: src.display().to_string(),
        source_size: l.size,
        source_id: sid,
        plan_hash: source::plan_hash(&sid, &l.extents),
        last_used: l.last_used,
        extent_bytes: l.extent_bytes,
        target: String::new(),
        samples: Vec::new(),
    };
    f(&mut plan);
    write_frame(&mut s, &Msg::Plan { disks: vec![plan], verify: false, dry_run: false }).unwrap();
    proto::expect(&mut s, "PlanOk").unwrap();
    s
}

pub fn opts(to: SocketAddr, disks: &[(&Path, &str)]) -> Options {
    Options {
        to: to.to_string(),
        token: TOKEN.into(),
        disks: disks.iter().map(|(p, t)| (p.display().to_string(), t.to_string())).collect(),
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
    }
}

pub fn send(o: &Options) -> anyhow::Result<Report> {
    sender::send(o)
}

/// Every byte the source's layout says is used is equal on the target.
pub fn assert_extents_equal(src: &Path, tgt: &Path) {
    let s = std::fs::File::open(src).unwrap();
    let t = std::fs::File::open(tgt).unwrap();
    let l = layout::analyze(&s).unwrap();
    let mut a = vec![0u8; MIB as usize];
    let mut b = vec![0u8; MIB as usize];
    for &(start, end) in l.extents.ranges() {
        let mut off = start;
        while off < end {
            let n = MIB.min(end - off) as usize;
            s.read_exact_at(&mut a[..n], off).unwrap();
            t.read_exact_at(&mut b[..n], off).unwrap();
            assert!(a[..n] == b[..n], "target differs from source in [{off}, {})", off + n as u64);
            off += n as u64;
        }
    }
}

/// Partition start/size in bytes from sfdisk's JSON.
pub fn partitions(img: &Path) -> Vec<(u64, u64)> {
    let j: serde_json::Value = serde_json::from_str(&sh(&format!("sfdisk -J {}", img.display()))).unwrap();
    j["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["start"].as_u64().unwrap() * 512, p["size"].as_u64().unwrap() * 512))
        .collect()
}

/// A TCP proxy for one connection that cuts both directions after `limit` client→server bytes.
pub fn cutting_proxy(upstream: SocketAddr, limit: u64) -> (SocketAddr, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let fwd = Arc::new(AtomicU64::new(0));
    let f2 = fwd.clone();
    std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut s = TcpStream::connect(upstream).unwrap();
        let (mut c2, mut s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut s2, &mut c2);
            let _ = c2.shutdown(Shutdown::Both);
        });
        let mut buf = vec![0u8; 16384];
        loop {
            let n = match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let left = limit - f2.load(Ordering::SeqCst);
            let k = (n as u64).min(left) as usize;
            if s.write_all(&buf[..k]).is_err() {
                break;
            }
            f2.fetch_add(k as u64, Ordering::SeqCst);
            if k < n {
                break;
            }
        }
        let _ = s.shutdown(Shutdown::Both);
        let _ = c.shutdown(Shutdown::Both);
    });
    (addr, fwd)
}

/// Files of the filesystem image `img` (mounted at `at` while read) with their contents' hashes.
pub fn files_of(img: &Path, at: &Path) -> Vec<(String, [u8; 32])> {
    let size = std::fs::metadata(img).unwrap().len();
    let l = Loop::new(img, 0, size);
    let m = Mnt::new(&l.0, at);
    let out = sh(&format!("cd {} && find . -type f | sort", m.0.display()))
        .lines()
        .map(|f| (f.to_string(), *blake3::hash(&std::fs::read(m.0.join(f)).unwrap()).as_bytes()))
        .collect();
    drop(m);
    out
}

/// An ext4 image of `mib` MiB with `files` files of `file_kib` KiB of pseudo-random data.
pub fn ext4_with_files(dir: &Path, mib: u64, files: usize, file_kib: usize) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let src = dir.join("src.img");
    sh(&format!("truncate -s {mib}M {0} && mkfs.ext4 -q -F {0}", src.display()));
    let l = Loop::new(&src, 0, mib * MIB);
    let m = Mnt::new(&l.0, &dir.join("m"));
    for i in 0..files {
        let sub = m.0.join(format!("d{}", i % 32));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("f{i}")), prng(i as u64 + 1, file_kib * 1024)).unwrap();
    }
    drop(m);
    drop(l);
    src
}
