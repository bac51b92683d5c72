//! Resume state of one target: `<dir>/<name>.json` (what is durable) and `<dir>/<name>.hashlog`
//! (one 44-byte record per folded block). A checkpoint syncs the target and the hash log first,
//! then replaces the JSON atomically (write, fsync, rename, fsync dir): the JSON never claims
//! more than is on disk.

use crate::digest::{Digest, RECORD};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub source_id: String,
    pub plan_hash: String,
    /// Everything before this offset (in extent order) is written and synced.
    pub durable: u64,
    /// Records in the hash log covered by `durable`.
    pub blocks: u64,
    pub complete: bool,
}

pub struct Store {
    json: PathBuf,
    log_path: PathBuf,
    pub log: Option<File>,
}

impl Store {
    pub fn new(dir: &Path, name: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating state dir {}", dir.display()))?;
        let safe: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
            .collect();
        Ok(Store {
            json: dir.join(format!("{safe}.json")),
            log_path: dir.join(format!("{safe}.hashlog")),
            log: None,
        })
    }

    pub fn load(&self) -> Option<State> {
        let s = std::fs::read_to_string(&self.json).ok()?;
        serde_json::from_str(&s).ok()
    }

    /// Opens the hash log keeping its first `blocks` records; returns the digest over them.
    pub fn open_log(&mut self, blocks: u64) -> Result<Digest> {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let keep = blocks * RECORD as u64;
        anyhow::ensure!(
            f.metadata()?.len() >= keep,
            "hash log {} is shorter than its state says",
            self.log_path.display()
        );
        f.set_len(keep)?;
        let mut d = Digest::default();
        let mut r = std::io::BufReader::new(&f);
        let mut rec = [0u8; RECORD];
        for _ in 0..blocks {
            r.read_exact(&mut rec)?;
            d.fold_record(&rec);
        }
        use std::io::Seek;
        f.seek(std::io::SeekFrom::End(0))?;
        self.log = Some(f);
        Ok(d)
    }

    pub fn append(&mut self, rec: &[u8]) -> Result<()> {
        self.log.as_mut().context("hash log not open")?.write_all(rec).context("writing the hash log")
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Syncs the hash log, then atomically replaces the state JSON.
    pub fn save(&mut self, st: &State) -> Result<()> {
        self.persister()?.persist(st)
    }

    /// What a background checkpoint needs: its own handles on the log and the JSON path.
    pub fn persister(&self) -> Result<Persister> {
        let log = match &self.log {
            Some(l) => Some(l.try_clone().context("cloning the hash log handle")?),
            None => None,
        };
        Ok(Persister { log, json: self.json.clone() })
    }
}

/// Makes a state durable: hash log first, then the JSON (write, fsync, rename, fsync dir).
pub struct Persister {
    log: Option<File>,
    json: PathBuf,
}

impl Persister {
    pub fn persist(&self, st: &State) -> Result<()> {
        if let Some(l) = &self.log {
            l.sync_data().context("syncing the hash log")?;
        }
        let tmp = self.json.with_extension("json.tmp");
        let mut f = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(st)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.json).with_context(|| format!("replacing {}", self.json.display()))?;
        if let Some(d) = self.json.parent() {
            if let Ok(d) = File::open(d) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}
