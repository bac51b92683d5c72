//! The appliance's status document and its HTTP endpoint (`GET /status`, JSON; `GET /metrics`,
//! Prometheus text): a minimal
//! HTTP/1.1 server with bounded connections, request sizes and time. Later stages (transfer,
//! conversion) publish into the same [`State`].

use crate::cmdline::Config;
use anyhow::Context;
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the appliance is, in order (`/status` `phase`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    #[default]
    Boot,
    Drivers,
    Network,
    Ready,
    MakingToken,
    Receiving,
    Converting,
    Converted,
    ConversionFailed,
    Done,
    IdleTimeout,
    Failed,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = serde_json::to_value(self).map_err(|_| std::fmt::Error)?;
        f.write_str(v.as_str().unwrap_or("?"))
    }
}

#[derive(Debug, Default, Serialize)]
pub struct State {
    pub phase: Phase,
    pub problems: Vec<String>,
    pub config: Option<Config>,
    pub ready_uptime_s: Option<f64>,
    pub modules_loaded: Vec<String>,
    /// No ferry.token was given: the appliance made one and showed it on its console.
    pub token_generated: bool,
    /// UEFI, Secure Boot and the kernel's lockdown mode (flattened: `secure_boot`, `lockdown`).
    #[serde(flatten)]
    pub security: crate::secure::Security,
    /// The conversion report once conversion has run.
    pub conversion: Option<ferry_convert::Report>,
    /// The receiver's own status (transfer progress, failed authentications), when it runs.
    #[serde(skip)]
    pub receiver: Option<Arc<Mutex<ferry_replicator::receiver::RxStatus>>>,
}

pub type Shared = Arc<Mutex<State>>;

impl State {
    pub fn set_phase(shared: &Shared, phase: Phase) {
        log::info!("phase: {phase}");
        shared.lock().unwrap().phase = phase;
    }

    pub fn problem(shared: &Shared, p: String) {
        log::warn!("problem: {p}");
        shared.lock().unwrap().problems.push(p);
    }
}

/// The full JSON document: the shared state plus live uptime, network and disks.
pub fn document(shared: &Shared) -> serde_json::Value {
    let (mut v, rx) = {
        let st = shared.lock().unwrap();
        (serde_json::to_value(&*st).unwrap_or_default(), st.receiver.clone())
    };
    if let Some(rx) = rx {
        let rx = rx.lock().unwrap().clone();
        v["receiver"] = serde_json::to_value(&rx).unwrap_or_default();
        v["receiver"]["rpo_s"] = serde_json::json!(rx.rpo_s(ferry_replicator::receiver::unix_now()));
    }
    v["version"] = serde_json::json!(env!("CARGO_PKG_VERSION"));
    v["uptime_s"] = serde_json::json!(crate::sysinfo::uptime());
    v["network"] = serde_json::to_value(crate::net::links()).unwrap_or_default();
    v["disks"] =
        serde_json::to_value(crate::inventory::disks(std::path::Path::new("/sys"))).unwrap_or_default();
    v
}

/// Most connections served at once; more are answered 503 and closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// A client gets this long to send its request and take the answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head read.
const MAX_REQUEST: usize = 8192;

/// Serves `GET /status` on `addr` from a background thread: one short-lived thread per
/// connection, at most [`MAX_CONNECTIONS`], each cut after [`CLIENT_TIMEOUT`] — idle clients
/// can never use up PID 1's descriptors or stall the endpoint.
pub fn serve(addr: std::net::SocketAddr, shared: Shared) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("status endpoint on {addr}"))?;
    log::info!("status: http://{addr}/status");
    let open = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new().name("status".into()).spawn(move || loop {
        let (sock, _) = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, say: wait and go on; the endpoint never ends.
                log::warn!("status: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let _ = sock.set_read_timeout(Some(CLIENT_TIMEOUT));
        let _ = sock.set_write_timeout(Some(CLIENT_TIMEOUT));
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            let _ = respond(&sock, "503 Service Unavailable", "text/plain", "busy; try again\n");
            continue;
        }
        let (open2, shared) = (open.clone(), shared.clone());
        let spawned = std::thread::Builder::new().name("status-conn".into()).spawn(move || {
            handle(&sock, &shared);
            open2.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::SeqCst);
        }
    })?;
    Ok(())
}

/// Reads one request head (bounded in size and time) and answers it; the connection closes.
fn handle(sock: &TcpStream, shared: &Shared) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let deadline = std::time::Instant::now() + CLIENT_TIMEOUT;
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_REQUEST || std::time::Instant::now() >= deadline {
            let _ = respond(sock, "400 Bad Request", "text/plain", "request too long or too slow\n");
            return;
        }
        match (&*sock).read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head[..head.iter().position(|&b| b == b'\n').unwrap_or(head.len())])
        .into_owned();
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let _ = match (method, path) {
        ("GET", "/status") | ("GET", "/") => {
            let body = serde_json::to_string_pretty(&document(shared)).unwrap_or_default();
            respond(sock, "200 OK", "application/json", &body)
        }
        ("GET", "/metrics") => respond(sock, "200 OK", "text/plain; version=0.0.4", &metrics::text(shared)),
        ("GET", _) => {
            respond(sock, "404 Not Found", "text/plain", "not found; try GET /status or /metrics\n")
        }
        _ => respond(sock, "405 Method Not Allowed", "text/plain", "only GET /status and /metrics\n"),
    };
}

fn respond(mut sock: &TcpStream, status: &str, ctype: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes())?;
    sock.write_all(body.as_bytes())?;
    sock.flush()
}

mod metrics;
#[cfg(test)]
mod tests;
