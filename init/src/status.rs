//! The appliance's status document and its HTTP endpoint (`GET /status`, JSON). Later stages
//! (transfer, conversion) publish into the same [`State`].

use crate::cmdline::Config;
use serde::Serialize;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default, Serialize)]
pub struct State {
    pub phase: String,
    pub problems: Vec<String>,
    pub config: Option<Config>,
    pub ready_uptime_s: Option<f64>,
    pub modules_loaded: Vec<String>,
    /// The conversion report once conversion has run.
    pub conversion: Option<serde_json::Value>,
    /// The receiver's own status (transfer progress, failed authentications), when it runs.
    #[serde(skip)]
    pub receiver: Option<Arc<Mutex<ferry_replicator::receiver::RxStatus>>>,
}

pub type Shared = Arc<Mutex<State>>;

impl State {
    pub fn set_phase(shared: &Shared, phase: &str) {
        log::info!("phase: {phase}");
        shared.lock().unwrap().phase = phase.to_string();
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
        v["receiver"] = serde_json::to_value(&*rx.lock().unwrap()).unwrap_or_default();
    }
    v["uptime_s"] = serde_json::json!(crate::sysinfo::uptime());
    v["network"] = serde_json::to_value(crate::net::links()).unwrap_or_default();
    v["disks"] =
        serde_json::to_value(crate::inventory::disks(std::path::Path::new("/sys"))).unwrap_or_default();
    v
}

/// Serves `GET /status` on `addr` from a background thread.
pub fn serve(addr: std::net::SocketAddr, shared: Shared) -> anyhow::Result<()> {
    let server =
        tiny_http::Server::http(addr).map_err(|e| anyhow::anyhow!("status endpoint on {addr}: {e}"))?;
    log::info!("status: http://{addr}/status");
    std::thread::Builder::new().name("status".into()).spawn(move || {
        for req in server.incoming_requests() {
            let path = req.url().split('?').next().unwrap_or("").to_string();
            let resp = match (req.method(), path.as_str()) {
                (tiny_http::Method::Get, "/status") | (tiny_http::Method::Get, "/") => {
                    let body = serde_json::to_string_pretty(&document(&shared)).unwrap_or_default();
                    let ct = tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap();
                    tiny_http::Response::from_string(body).with_header(ct)
                }
                _ => tiny_http::Response::from_string("not found; try GET /status\n").with_status_code(404),
            };
            let _ = req.respond(resp);
        }
    })?;
    Ok(())
}
