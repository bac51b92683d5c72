//! QEMU harness for ferry's tests: builds the appliance once, picks the accelerator (TCG unless a
//! cached probe boot shows KVM works), starts guests with chosen disks and NICs, forwards host
//! ports, captures the serial console to a file, waits for conditions with timeouts, and always
//! kills QEMU on drop. Guests run one at a time (a process-wide lock): TCG guests side by side
//! on two cores time out.

mod accel;
pub mod fixture;
mod vm;

pub use vm::{Bus, Disk, Vm, VmBuilder};

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

pub fn cache_dir() -> PathBuf {
    std::env::var_os("FERRY_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ferry"))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs a command; the error names the command line and shows its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let line = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("starting {line}"))?;
    if !out.status.success() {
        bail!("{line} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The appliance directory (vmlinuz, initramfs.img), built once per test process.
pub fn appliance() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = run(&mut Command::new(repo_root().join("scripts/build"))).expect("building the appliance");
        PathBuf::from(out.trim())
    })
}

/// Release binaries built by `scripts/build` (static, for the host and for guests).
pub fn binary(name: &str) -> PathBuf {
    appliance();
    repo_root().join("target/x86_64-unknown-linux-gnu/release").join(name)
}

/// `ferry-image`, built by `scripts/build` for the host.
pub fn ferry_image() -> PathBuf {
    appliance();
    repo_root().join("target/release/ferry-image")
}

/// The accelerator the harness detected: "kvm" or "tcg" (for tools that start QEMU themselves).
pub fn accel_name() -> &'static str {
    accel::args()[1]
}

/// Marks a stage of a scenario as passed, for `scripts/matrix` (`FERRY-STAGE name` on stderr).
pub fn stage(name: &str) {
    eprintln!("FERRY-STAGE {name}");
}

/// Serialises guests across the tests of one process.
pub fn guest_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// FNV-1a: cache keys for fixtures and probe results.
pub fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` over HTTP/1.0; returns the body of a 200 response.
pub fn http_get(port: u16, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: ferry\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// A sparse file of exactly `size` bytes.
pub fn sparse_file(path: &Path, size: u64) -> Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(size)?;
    Ok(())
}
