//! The wire protocol: messages (postcard-encoded) inside crc32-checked frames. See PROTOCOL.md.

mod frame;

pub use frame::{read_frame, read_frame_max, write_frame, FrameError, MAX_FRAME};

use serde::{Deserialize, Serialize};

pub const MAGIC: [u8; 8] = *b"FERRY\0\0\x01";
pub const VERSION: u32 = 3;
/// Largest frame accepted before the peer has proved the token.
pub const MAX_PREAUTH_FRAME: u32 = 4096;
/// Granularity of hashing, resume and delta comparison.
pub const BLOCK: u64 = 16 * 1024;
/// Largest data piece in one message.
pub const PIECE: u64 = 1024 * 1024;
/// Most sample blocks a DiskPlan may carry.
pub const MAX_SAMPLES: usize = 64;
/// Most blocks one delta HashQuery may name (the sender asks for 16 MiB, 1024 blocks).
pub const MAX_QUERY_BLOCKS: usize = 4096;

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
    /// Up to MAX_SAMPLES non-zero source blocks (offset, len, hash): without state for a
    /// target, the receiver compares them to tell an earlier copy (delta) from anything else.
    pub samples: Vec<(u64, u32, [u8; 32])>,
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
    /// Sender → receiver: SPAKE2 message A (token as password, identities bound to the TLS
    /// session), and who is calling.
    Hello {
        magic: [u8; 8],
        version: u32,
        pake: serde_bytes::ByteBuf,
        client: String,
    },
    /// Receiver → sender: SPAKE2 message B.
    Challenge {
        pake: serde_bytes::ByteBuf,
    },
    /// Sender → receiver: key confirmation (HMAC under the SPAKE2 key).
    Proof {
        mac: [u8; 32],
    },
    /// Receiver → sender: its key confirmation, and the targets it offers.
    Welcome {
        mac: [u8; 32],
        targets: Vec<TargetInfo>,
    },
    Refused {
        reason: String,
    },
    /// `dry_run`: check the plan and answer PlanOk or Refused, changing nothing; a real Plan
    /// follows (the sender freezes its sources in between).
    Plan {
        disks: Vec<DiskPlan>,
        verify: bool,
        dry_run: bool,
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
    /// `ferry check`, before any plan: data the receiver decodes and discards (a throughput
    /// test over the real channel); bounded like `Data`.
    Sink {
        raw_len: u32,
        compressed: bool,
        bytes: serde_bytes::ByteBuf,
    },
    /// The end of a throughput test: the receiver answers `SinkDone`.
    SinkEnd,
    /// Raw and wire bytes the receiver took since the last `SinkDone`.
    SinkDone {
        raw_bytes: u64,
        wire_bytes: u64,
    },
    /// `ferry check` is done (instead of a real `Plan`): the session ends, nothing changed.
    Bye,
    /// Nothing: a paused sender's sign of life (the receiver's read timeout is 5 minutes).
    Keepalive,
    /// A customization script for the conversion (before a finalizing `Finish`): `run` in the
    /// migrated system's chroot, or `firstboot` as a one-shot unit. At most 16, 1 MiB each.
    Hook {
        kind: ferry_convert::hooks::HookKind,
        name: String,
        body: serde_bytes::ByteBuf,
    },
    /// A passphrase or key file for the migrated system's LUKS volumes (before a finalizing
    /// `Finish`): held in memory for the conversion only. At most 8, 64 KiB each.
    LuksKey {
        key: serde_bytes::ByteBuf,
    },
}

impl Msg {
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::Hello { .. } => "Hello",
            Msg::Challenge { .. } => "Challenge",
            Msg::Proof { .. } => "Proof",
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
            Msg::LuksKey { .. } => "LuksKey",
            Msg::Finished { .. } => "Finished",
            Msg::Error { .. } => "Error",
            Msg::Sink { .. } => "Sink",
            Msg::SinkEnd => "SinkEnd",
            Msg::SinkDone { .. } => "SinkDone",
            Msg::Bye => "Bye",
            Msg::Keepalive => "Keepalive",
            Msg::Hook { .. } => "Hook",
        }
    }
}

/// What a peer says, made safe to log and show: control characters become `?`, and the text
/// is cut to `max` bytes (at a character boundary, marked with `…`).
pub fn sanitize(s: &str, max: usize) -> String {
    let clean: String = s.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
    if clean.len() <= max {
        return clean;
    }
    let mut cut = max.saturating_sub('…'.len_utf8());
    while !clean.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &clean[..cut])
}

/// Longest peer-supplied text kept in an error.
pub const MAX_PEER_TEXT: usize = 400;

fn check(m: Msg) -> anyhow::Result<Msg> {
    match m {
        Msg::Error { message } => {
            anyhow::bail!("peer reported an error: {}", sanitize(&message, MAX_PEER_TEXT))
        }
        Msg::Refused { reason } => {
            anyhow::bail!("refused by the receiver: {}", sanitize(&reason, MAX_PEER_TEXT))
        }
        m => Ok(m),
    }
}

/// Reads one message, turning a peer's `Error`/`Refused` into an error.
pub fn recv<R: std::io::Read>(r: &mut R) -> anyhow::Result<Msg> {
    check(read_frame(r)?)
}

/// Reads one message and fails unless it is of kind `want`.
pub fn expect<R: std::io::Read>(r: &mut R, want: &str) -> anyhow::Result<Msg> {
    expect_max(r, want, MAX_FRAME)
}

/// As [`expect`], for a frame of at most `max` bytes (before authentication).
pub fn expect_max<R: std::io::Read>(r: &mut R, want: &str, max: u32) -> anyhow::Result<Msg> {
    let m = check(read_frame_max(r, max)?)?;
    anyhow::ensure!(m.kind() == want, "protocol error: expected {want}, got {}", m.kind());
    Ok(m)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sanitize_caps_and_cleans() {
        assert_eq!(super::sanitize("a\nb\x1b[2J", 100), "a?b?[2J");
        let long = "é".repeat(1000);
        let s = super::sanitize(&long, 11);
        assert!(s.len() <= 11 && s.ends_with('…'), "{s}");
    }
}
