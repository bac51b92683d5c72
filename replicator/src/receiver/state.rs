//! Resume state of one target, bounded by the data it describes: `<dir>/<name>.json` (what is
//! durable, which target it is about, the records of the partial digest chunk), `<name>.chunks`
//! (32 bytes per complete digest chunk of 256 blocks) and `<name>.runs` (16 bytes per run of
//! contiguous blocks, for verification). About 1 byte per 128 KiB of data: 16 MiB for 2 TiB.
//!
//! A checkpoint syncs the target, the chunk and run files first, then replaces the JSON
//! atomically (write, fsync, rename, fsync dir): the JSON never claims more than is on disk,
//! and the files may hold more entries than it counts (they are cut back on load).
//! The state names its target by identity ([`TargetId`]), not just by name: a recreated image
//! file, another disk under the same name or another file with the same basename is never
//! resumed over.

use crate::digest::{Digest, Hash, RECORD};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Which target a state describes: for a file its inode and birth time, for a block device its
/// device number, disk sequence number and serial; and its size.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TargetId {
    pub block_device: bool,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
    pub btime: (i64, u32),
    pub rdev: u64,
    pub diskseq: u64,
    pub serial: String,
}

impl TargetId {
    pub fn of(f: &File, size: u64, serial: &str) -> Result<TargetId> {
        use std::os::fd::AsRawFd;
        let mut st: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: statx on our own descriptor with an empty path, into a zeroed struct.
        let rc = unsafe {
            libc::statx(
                f.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                libc::STATX_BASIC_STATS | libc::STATX_BTIME,
                &mut st,
            )
        };
        anyhow::ensure!(rc == 0, "statx: {}", std::io::Error::last_os_error());
        let block_device = (st.stx_mode as u32 & libc::S_IFMT) == libc::S_IFBLK;
        let dev = libc::makedev(st.stx_dev_major, st.stx_dev_minor);
        let (rmaj, rmin) = (st.stx_rdev_major, st.stx_rdev_minor);
        let diskseq = if block_device {
            std::fs::read_to_string(format!("/sys/dev/block/{rmaj}:{rmin}/diskseq"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        } else {
            0
        };
        let has_btime = st.stx_mask & libc::STATX_BTIME != 0;
        Ok(TargetId {
            block_device,
            size,
            dev: if block_device { 0 } else { dev },
            ino: if block_device { 0 } else { st.stx_ino },
            btime: if has_btime && !block_device {
                (st.stx_btime.tv_sec, st.stx_btime.tv_nsec)
            } else {
                (0, 0)
            },
            rdev: if block_device { libc::makedev(rmaj, rmin) } else { 0 },
            diskseq,
            serial: serial.to_string(),
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub source_id: String,
    pub plan_hash: String,
    pub target: TargetId,
    /// Everything before this offset (in extent order) is written and synced.
    pub durable: u64,
    /// Blocks folded into the digest up to `durable`.
    pub blocks: u64,
    /// Entries of the `.runs` file covered by `durable`, and the run still open.
    pub runs: u64,
    pub open_run: Option<(u64, u64)>,
    /// Records of the partial digest chunk, hex (at most 255).
    pub tail: String,
    pub complete: bool,
    /// A digest mismatch was found: the next pass compares everything (delta), never resumes.
    pub suspect: bool,
}

impl State {
    pub fn chunks(&self) -> u64 {
        self.blocks / crate::digest::CHUNK_BLOCKS
    }
}

pub struct Store {
    json: PathBuf,
    chunks_path: PathBuf,
    runs_path: PathBuf,
    chunks: Option<File>,
    runs: Option<File>,
}

/// Bytes of a hex string (the state's `tail`); `None` if it is not hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The largest state JSON read back (a partial chunk of records in hex, and slack).
const MAX_JSON: u64 = 256 * 1024;

impl Store {
    /// The paths for target `name`; nothing is created until [`Store::open`].
    pub fn new(dir: &Path, name: &str) -> Self {
        let safe: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
            .collect();
        Store {
            json: dir.join(format!("{safe}.json")),
            chunks_path: dir.join(format!("{safe}.chunks")),
            runs_path: dir.join(format!("{safe}.runs")),
            chunks: None,
            runs: None,
        }
    }

    /// The saved state, if any and readable (an unreadable one is as good as none).
    pub fn load(&self) -> Option<State> {
        let f = File::open(&self.json).ok()?;
        let mut s = String::new();
        f.take(MAX_JSON).read_to_string(&mut s).ok()?;
        serde_json::from_str(&s).ok()
    }

    fn open_file(p: &Path, keep: u64) -> Result<File> {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)
            .with_context(|| format!("opening {}", p.display()))?;
        anyhow::ensure!(f.metadata()?.len() >= keep, "{} is shorter than its state says", p.display());
        f.set_len(keep)?;
        f.seek(std::io::SeekFrom::End(0))?;
        Ok(f)
    }

    /// Opens the chunk and run files at what `st` counts (creating the state directory), and
    /// rebuilds the digest over the durable blocks.
    pub fn open(&mut self, dir: &Path, st: &State) -> Result<Digest> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating state dir {}", dir.display()))?;
        let n = st.chunks();
        let mut chunks = Self::open_file(&self.chunks_path, n * 32)?;
        self.runs = Some(Self::open_file(&self.runs_path, st.runs * 16)?);
        let mut raw = vec![0u8; (n * 32) as usize];
        chunks.seek(std::io::SeekFrom::Start(0))?;
        chunks.read_exact(&mut raw).context("reading the chunk hashes")?;
        chunks.seek(std::io::SeekFrom::End(0))?;
        self.chunks = Some(chunks);
        let hashes: Vec<Hash> = raw.chunks(32).map(|c| c.try_into().expect("32-byte chunks")).collect();
        let tail = unhex(&st.tail).context("the state's partial chunk is not hex")?;
        let d = Digest::restore(&hashes, &tail).context("the state's partial chunk is malformed")?;
        anyhow::ensure!(
            d.blocks == st.blocks,
            "the state counts {} blocks, its digest {}",
            st.blocks,
            d.blocks
        );
        Ok(d)
    }

    pub fn push_chunk(&mut self, h: &Hash) -> Result<()> {
        self.chunks.as_mut().context("state not open")?.write_all(h).context("writing the chunk hashes")
    }

    pub fn push_run(&mut self, (s, e): (u64, u64)) -> Result<()> {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&s.to_le_bytes());
        b[8..].copy_from_slice(&e.to_le_bytes());
        self.runs.as_mut().context("state not open")?.write_all(&b).context("writing the runs")
    }

    /// The first `n` closed runs.
    pub fn read_runs(&self, n: u64) -> Result<Vec<(u64, u64)>> {
        let mut f = File::open(&self.runs_path).context("reopening the runs")?;
        let mut raw = vec![0u8; (n * 16) as usize];
        f.read_exact(&mut raw).context("reading the runs")?;
        Ok(raw
            .chunks(16)
            .map(|c| {
                (
                    u64::from_le_bytes(c[..8].try_into().unwrap()),
                    u64::from_le_bytes(c[8..].try_into().unwrap()),
                )
            })
            .collect())
    }

    /// Syncs the files, then atomically replaces the state JSON.
    pub fn save(&mut self, st: &State) -> Result<()> {
        self.persister()?.persist(st)
    }

    /// What a background checkpoint needs: its own handles and the JSON path.
    pub fn persister(&self) -> Result<Persister> {
        let clone =
            |f: &Option<File>| f.as_ref().map(File::try_clone).transpose().context("cloning a state file");
        Ok(Persister { files: [clone(&self.chunks)?, clone(&self.runs)?], json: self.json.clone() })
    }
}

/// Hex of the digest's partial chunk, for [`State::tail`].
pub fn tail_hex(d: &Digest) -> String {
    debug_assert!(d.tail().len() < RECORD * crate::digest::CHUNK_BLOCKS as usize);
    crate::digest::hex(d.tail())
}

/// Makes a state durable: the chunk and run files first, then the JSON.
pub struct Persister {
    files: [Option<File>; 2],
    json: PathBuf,
}

impl Persister {
    pub fn persist(&self, st: &State) -> Result<()> {
        for f in self.files.iter().flatten() {
            f.sync_data().context("syncing the resume state")?;
        }
        let tmp = self.json.with_extension("json.tmp");
        let mut f = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(serde_json::to_string(st)?.as_bytes())
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.json).with_context(|| format!("replacing {}", self.json.display()))?;
        if let Some(d) = self.json.parent() {
            if let Ok(d) = File::open(d) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}
