//! The OCI image around the layer: the config (the system's init as entrypoint in a container,
//! `container=oci`, `SIGRTMIN+3` to stop, labels with the source and the date), the manifest,
//! and the image layout (`oci-layout`, `index.json`, `blobs/sha256/`), per the OCI image spec.
//! Digests are sha256 of the exact bytes written; JSON is written with sorted keys, so the
//! same input gives the same digests.

use super::layer::{Compression, Written};
use anyhow::Result;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::Path;

pub struct Spec {
    pub architecture: String,
    /// Unix time of the image.
    pub created: i64,
    /// A command instead of `/sbin/init`.
    pub cmd: Vec<String>,
    pub source: String,
    pub system: String,
    pub tag: String,
}

/// RFC 3339 in UTC for a Unix time.
pub fn rfc3339(t: i64) -> String {
    let (y, m, d, h, mi, sec) = ferry_boot::civil::utc(t);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{sec:02}Z")
}

/// Writes a blob; returns (`sha256:…`, size).
fn blob(layout: &Path, bytes: &[u8]) -> Result<(String, u64)> {
    let hex = ferry_replicator::digest::hex(&Sha256::digest(bytes));
    std::fs::write(layout.join("blobs/sha256").join(&hex), bytes)?;
    Ok((format!("sha256:{hex}"), bytes.len() as u64))
}

pub fn config(s: &Spec, diff_id: &str) -> serde_json::Value {
    let date = rfc3339(s.created);
    let (entrypoint, cmd) = if s.cmd.is_empty() {
        (json!(["/sbin/init"]), serde_json::Value::Null)
    } else {
        (serde_json::Value::Null, json!(s.cmd))
    };
    let mut cfg = json!({
        "Env": ["container=oci", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "StopSignal": "SIGRTMIN+3",
        "Labels": {
            "org.opencontainers.image.created": date,
            "org.opencontainers.image.title": s.system,
            "org.opencontainers.image.description": "a whole server migrated by ferry (machine-level container)",
            "io.ferry.source": s.source,
            "io.ferry.version": env!("CARGO_PKG_VERSION"),
        },
    });
    if !entrypoint.is_null() {
        cfg["Entrypoint"] = entrypoint;
    }
    if !cmd.is_null() {
        cfg["Cmd"] = cmd;
    }
    json!({
        "created": date,
        "architecture": s.architecture,
        "os": "linux",
        "config": cfg,
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
        "history": [{ "created": date, "created_by": "ferry-init export-oci" }],
    })
}

/// Writes config, manifest, index and `oci-layout`; returns the manifest's digest.
pub fn write_layout(layout: &Path, s: &Spec, l: &Written, c: Compression) -> Result<String> {
    let (cfg_digest, cfg_size) = blob(layout, &serde_json::to_vec(&config(s, &l.diff_id))?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_size },
        "layers": [{ "mediaType": c.media_type(), "digest": format!("sha256:{}", l.digest), "size": l.size }],
    });
    let (m_digest, m_size) = blob(layout, &serde_json::to_vec(&manifest)?)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": m_digest,
            "size": m_size,
            "annotations": { "org.opencontainers.image.ref.name": s.tag },
        }],
    });
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(layout.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(m_digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951782400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1796308661), "2026-12-03T14:37:41Z");
    }

    #[test]
    fn config_runs_init_unless_a_command_is_given() {
        let mut s = Spec {
            architecture: "amd64".into(),
            created: 0,
            cmd: vec![],
            source: "/dev/sda".into(),
            system: "Debian GNU/Linux 12 (bookworm)".into(),
            tag: "latest".into(),
        };
        let c = config(&s, "ab");
        assert_eq!(c["config"]["Entrypoint"], json!(["/sbin/init"]));
        assert_eq!(c["config"]["StopSignal"], "SIGRTMIN+3");
        assert_eq!(c["rootfs"]["diff_ids"], json!(["sha256:ab"]));
        s.cmd = vec!["/bin/sh".into(), "-c".into(), "true".into()];
        let c = config(&s, "ab");
        assert!(c["config"].get("Entrypoint").is_none());
        assert_eq!(c["config"]["Cmd"][0], "/bin/sh");
    }
}
