//! What can change in a running sender, and the local control socket that changes it.
//! [`Knobs`] hold the rate limit, the compression level, pause and a cutover request; the
//! pipeline, the connection and the continuous loop read them at every piece, frame and pause
//! point, so `ferry ctl` takes effect within a second. The socket (a Unix socket, mode 0600 in a
//! 0700 directory) takes one JSON request per connection: `status`, `set` (bwlimit, compress),
//! `pause`, `resume`, `cutover` (whose connection stays open for the final report).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where `ferry send --continuous` listens by default.
pub const DEFAULT_SOCKET: &str = "/run/ferry/send.sock";
/// Longest request line read from the socket.
const MAX_REQUEST: u64 = 64 * 1024;

/// The settings of a running sender.
#[derive(Debug, Default)]
pub struct Knobs {
    /// Mbit/s as f64 bits; 0 = unlimited.
    bwlimit: AtomicU64,
    compress: AtomicU8,
    paused: AtomicBool,
    /// A cutover was asked for: the user command to run first (empty: none).
    cutover: Mutex<Option<String>>,
    /// Connections waiting for the cutover's report.
    waiting: Mutex<Vec<UnixStream>>,
    /// What `status` answers: the continuous job's state (passes, RPO, progress).
    status: Mutex<serde_json::Value>,
}

impl Knobs {
    pub fn new(compress: u8, bwlimit_mbit: Option<f64>) -> Arc<Knobs> {
        let k = Knobs::default();
        k.set_compress(compress);
        k.set_bwlimit(bwlimit_mbit);
        Arc::new(k)
    }

    pub fn bwlimit(&self) -> Option<f64> {
        let v = f64::from_bits(self.bwlimit.load(Ordering::Relaxed));
        (v > 0.0).then_some(v)
    }

    pub fn set_bwlimit(&self, mbit: Option<f64>) {
        let v = mbit.filter(|x| x.is_finite() && *x > 0.0).unwrap_or(0.0);
        self.bwlimit.store(v.to_bits(), Ordering::Relaxed);
    }

    pub fn compress(&self) -> u8 {
        self.compress.load(Ordering::Relaxed)
    }

    pub fn set_compress(&self, c: u8) {
        self.compress.store(c.min(10), Ordering::Relaxed);
    }

    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    pub fn set_paused(&self, p: bool) {
        self.paused.store(p, Ordering::Relaxed);
    }

    /// Asks for a cutover, running `before` first (the first request's command wins).
    pub fn request_cutover(&self, before: Option<String>) {
        let mut c = self.cutover.lock().unwrap_or_else(|e| e.into_inner());
        if c.is_none() {
            *c = Some(before.unwrap_or_default());
        }
    }

    /// The pending cutover request: `Some(before)` (empty = no command).
    pub fn cutover(&self) -> Option<String> {
        self.cutover.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_status(&self, v: serde_json::Value) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = v;
    }

    fn status(&self) -> serde_json::Value {
        let mut v = self.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if !v.is_object() {
            v = serde_json::json!({});
        }
        v["bwlimit_mbit"] = serde_json::json!(self.bwlimit());
        v["compress"] = serde_json::json!(self.compress());
        v["paused"] = serde_json::json!(self.paused());
        v["cutover_requested"] = serde_json::json!(self.cutover().is_some());
        v
    }

    /// Sends `line` (one JSON document) to every `ferry cutover` waiting, and lets them go.
    pub fn tell_waiting(&self, line: &serde_json::Value) {
        for mut s in self.waiting.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = writeln!(s, "{line}");
        }
    }
}

/// One request on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Status,
    Set { bwlimit_mbit: Option<f64>, compress: Option<u8>, unlimited: Option<bool> },
    Pause,
    Resume,
    Cutover { before: Option<String> },
}

/// Applies a request; the answer (a JSON document).
pub fn apply(k: &Knobs, r: &Request) -> Result<serde_json::Value> {
    match r {
        Request::Status => {}
        Request::Set { bwlimit_mbit, compress, unlimited } => {
            if let Some(c) = compress {
                anyhow::ensure!(*c <= 10, "compress must be 0..10, got {c}");
                k.set_compress(*c);
            }
            if let Some(b) = bwlimit_mbit {
                anyhow::ensure!(
                    b.is_finite() && *b > 0.0,
                    "bwlimit must be a positive number of Mbit/s, got {b}"
                );
                k.set_bwlimit(Some(*b));
            }
            if *unlimited == Some(true) {
                k.set_bwlimit(None);
            }
            log::info!("control: now bwlimit {:?} Mbit/s, compress {}", k.bwlimit(), k.compress());
        }
        Request::Pause => {
            k.set_paused(true);
            log::info!("control: paused");
        }
        Request::Resume => {
            k.set_paused(false);
            log::info!("control: resumed");
        }
        Request::Cutover { before } => {
            k.request_cutover(before.clone());
            log::info!("control: cutover requested");
        }
    }
    Ok(k.status())
}

/// The control socket: removed when dropped.
pub struct Server {
    path: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listens on `path` (its directory made 0700, the socket 0600) and serves requests from a
/// background thread.
pub fn serve(path: &Path, knobs: Arc<Knobs>) -> Result<Server> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if UnixStream::connect(path).is_ok() {
        bail!("{} is in use: another ferry send --continuous is running", path.display());
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    if dir != Path::new("/tmp") && dir != Path::new(".") {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let k = knobs.clone();
            std::thread::spawn(move || handle(s, &k));
        }
    });
    Ok(Server { path: path.to_path_buf() })
}

fn handle(s: UnixStream, k: &Knobs) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let answer = match BufReader::new((&s).take(MAX_REQUEST)).read_line(&mut line) {
        Ok(_) => serde_json::from_str::<Request>(line.trim())
            .context("a request is one JSON line: {\"cmd\": \"status|set|pause|resume|cutover\", …}")
            .and_then(|r| {
                let v = apply(k, &r)?;
                Ok((r, v))
            }),
        Err(e) => Err(e.into()),
    };
    let mut w = &s;
    match answer {
        Ok((Request::Cutover { .. }, v)) => {
            let _ = writeln!(w, "{}", serde_json::json!({ "accepted": true, "status": v }));
            if let Ok(c) = s.try_clone() {
                let _ = c.set_read_timeout(None);
                k.waiting.lock().unwrap_or_else(|e| e.into_inner()).push(c);
            }
        }
        Ok((_, v)) => {
            let _ = writeln!(w, "{v}");
        }
        Err(e) => {
            let _ = writeln!(w, "{}", serde_json::json!({ "error": format!("{e:#}") }));
        }
    }
}

/// The client side: sends `r` to the socket at `path`; returns the reader for its answers.
pub fn request(path: &Path, r: &Request) -> Result<BufReader<UnixStream>> {
    let mut s = UnixStream::connect(path).with_context(|| {
        format!("connecting to {} (is `ferry send --continuous` running?)", path.display())
    })?;
    writeln!(s, "{}", serde_json::to_string(r)?)?;
    Ok(BufReader::new(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_change_the_knobs() {
        let k = Knobs::new(1, None);
        let v = apply(&k, &Request::Set { bwlimit_mbit: Some(80.0), compress: Some(3), unlimited: None })
            .unwrap();
        assert_eq!((k.bwlimit(), k.compress()), (Some(80.0), 3));
        assert_eq!(v["bwlimit_mbit"], 80.0);
        assert!(
            apply(&k, &Request::Set { bwlimit_mbit: Some(-1.0), compress: None, unlimited: None }).is_err()
        );
        assert!(apply(&k, &Request::Set { bwlimit_mbit: None, compress: Some(11), unlimited: None }).is_err());
        apply(&k, &Request::Set { bwlimit_mbit: None, compress: None, unlimited: Some(true) }).unwrap();
        assert_eq!(k.bwlimit(), None);
        apply(&k, &Request::Pause).unwrap();
        assert!(k.paused());
        apply(&k, &Request::Cutover { before: Some("systemctl stop app".into()) }).unwrap();
        apply(&k, &Request::Cutover { before: None }).unwrap();
        assert_eq!(k.cutover().as_deref(), Some("systemctl stop app"));
        let r: Request =
            serde_json::from_str(r#"{"cmd":"set","bwlimit_mbit":null,"compress":5,"unlimited":null}"#)
                .unwrap();
        assert_eq!(r, Request::Set { bwlimit_mbit: None, compress: Some(5), unlimited: None });
    }

    #[test]
    fn the_socket_answers_and_keeps_cutover_clients() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("ctl/send.sock");
        let k = Knobs::new(1, Some(10.0));
        let _srv = serve(&p, k.clone()).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut line = String::new();
        request(&p, &Request::Pause).unwrap().read_line(&mut line).unwrap();
        assert!(line.contains("\"paused\":true"), "{line}");
        assert!(k.paused());
        let mut r = request(&p, &Request::Cutover { before: None }).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("accepted"), "{line}");
        // The report reaches the waiting client.
        for _ in 0..50 {
            if !k.waiting.lock().unwrap().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        k.tell_waiting(&serde_json::json!({"event": "report", "ok": true}));
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("\"report\""), "{line}");
        // Garbage is answered with an error, not a crash.
        let mut s = UnixStream::connect(&p).unwrap();
        writeln!(s, "nonsense").unwrap();
        line.clear();
        BufReader::new(s).read_line(&mut line).unwrap();
        assert!(line.contains("error"), "{line}");
        assert!(serve(&p, k).is_err(), "a second sender on the same socket");
    }
}
