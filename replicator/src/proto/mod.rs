//! The wire protocol: messages (postcard-encoded) inside crc32-checked frames. See PROTOCOL.md.

mod frame;

pub use frame::{read_frame, write_frame, FrameError, MAX_FRAME};

use serde::{Deserialize, Serialize};

pub const MAGIC: [u8; 8] = *b"FERRY\0\0\x01";
pub const VERSION: u32 = 1;
/// Granularity of hashing, resume and delta comparison.
pub const BLOCK: u64 = 16 * 1024;
/// Largest data piece in one message.
pub const PIECE: u64 = 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TargetInfo {
    pub name: String,
    pub path: String,
    pub size_bytes: u64,
    pub serial: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskPlan {
    /// The source as the sender names it (path).
    pub source: String,
    pub source_size: u64,
    /// Identity of the source disk, to recognise earlier passes.
    pub source_id: [u8; 32],
    /// Hash of source_id and the extent list: equal plans may resume.
    pub plan_hash: [u8; 32],
    /// One past the last byte that will be written.
    pub last_used: u64,
    /// Bytes covered by the extents.
    pub extent_bytes: u64,
    /// Target selector: name, serial, or `#N`; empty = next in order.
    pub target: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Mode {
    /// Unknown target content: every extent is written.
    Full,
    /// An interrupted pass of the same plan: continue at `from` (everything before is durable).
    Resume { from: u64 },
    /// The target holds an earlier pass of this source: compare block hashes, send differences.
    Delta,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskStart {
    pub target: TargetInfo,
    pub mode: Mode,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskResult {
    pub target: String,
    pub digest: [u8; 32],
    pub blocks: u64,
    pub bytes_written: u64,
    pub verified: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Msg {
    Hello {
        magic: [u8; 8],
        version: u32,
        proof: [u8; 32],
        client: String,
    },
    Welcome {
        proof: [u8; 32],
        targets: Vec<TargetInfo>,
    },
    Refused {
        reason: String,
    },
    Plan {
        disks: Vec<DiskPlan>,
        verify: bool,
    },
    PlanOk {
        disks: Vec<DiskStart>,
    },
    /// Data for `[offset, offset + raw_len)`, zstd-compressed when `compressed`.
    Data {
        disk: u32,
        offset: u64,
        raw_len: u32,
        compressed: bool,
        bytes: serde_bytes::ByteBuf,
    },
    /// `[offset, offset + len)` reads as zeros.
    Zero {
        disk: u32,
        offset: u64,
        len: u64,
    },
    /// Delta: hash these blocks of the target (offset, len).
    HashQuery {
        disk: u32,
        blocks: Vec<(u64, u32)>,
    },
    Hashes {
        hashes: Vec<[u8; 32]>,
    },
    /// Delta: the queried batch is complete (unsent blocks are unchanged).
    Commit {
        disk: u32,
    },
    DiskEnd {
        disk: u32,
        digest: [u8; 32],
        blocks: u64,
    },
    DiskDone {
        result: DiskResult,
    },
    /// The last message of a pass; `finalize` = the data is complete, convert now.
    Finish {
        finalize: bool,
    },
    Finished {
        report: String,
        ok: bool,
    },
    Error {
        message: String,
    },
}

impl Msg {
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::Hello { .. } => "Hello",
            Msg::Welcome { .. } => "Welcome",
            Msg::Refused { .. } => "Refused",
            Msg::Plan { .. } => "Plan",
            Msg::PlanOk { .. } => "PlanOk",
            Msg::Data { .. } => "Data",
            Msg::Zero { .. } => "Zero",
            Msg::HashQuery { .. } => "HashQuery",
            Msg::Hashes { .. } => "Hashes",
            Msg::Commit { .. } => "Commit",
            Msg::DiskEnd { .. } => "DiskEnd",
            Msg::DiskDone { .. } => "DiskDone",
            Msg::Finish { .. } => "Finish",
            Msg::Finished { .. } => "Finished",
            Msg::Error { .. } => "Error",
        }
    }
}

/// Reads one message, turning a peer's `Error`/`Refused` into an error.
pub fn recv<R: std::io::Read>(r: &mut R) -> anyhow::Result<Msg> {
    let m = read_frame(r)?;
    match m {
        Msg::Error { message } => anyhow::bail!("peer reported an error: {message}"),
        Msg::Refused { reason } => anyhow::bail!("refused by the receiver: {reason}"),
        m => Ok(m),
    }
}

/// Reads one message and fails unless it is of kind `want`.
pub fn expect<R: std::io::Read>(r: &mut R, want: &str) -> anyhow::Result<Msg> {
    let m = recv(r)?;
    anyhow::ensure!(m.kind() == want, "protocol error: expected {want}, got {}", m.kind());
    Ok(m)
}
