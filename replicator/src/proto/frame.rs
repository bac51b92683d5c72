//! Frames: `u32 length (LE) | u32 crc32 of payload (LE) | payload`, payload = postcard(Msg).
//! A bad frame is a [`FrameError`] that says what was wrong, never a panic.

use super::Msg;
use std::io::{Read, Write};

/// Largest payload accepted: a full data piece plus slack for its header.
pub const MAX_FRAME: u32 = 2 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame truncated: {0}")]
    Truncated(std::io::Error),
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: u32, max: u32 },
    #[error("frame crc32 mismatch: header says {expected:08x}, payload has {actual:08x} ({len} bytes)")]
    Crc { expected: u32, actual: u32, len: u32 },
    #[error("undecodable message ({len} bytes): {source}")]
    Decode { len: u32, source: postcard::Error },
    #[error("i/o: {0}")]
    Io(std::io::Error),
}

pub fn write_frame<W: Write>(w: &mut W, m: &Msg) -> std::io::Result<usize> {
    // One buffer, one write: over TLS that is one record train, not a tiny header record.
    let mut buf = postcard::to_extend(m, vec![0u8; 8]).map_err(std::io::Error::other)?;
    let len = (buf.len() - 8) as u32;
    let crc = crc32fast::hash(&buf[8..]);
    buf[..4].copy_from_slice(&len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    w.write_all(&buf)?;
    Ok(buf.len())
}

pub fn read_frame<R: Read>(r: &mut R) -> Result<Msg, FrameError> {
    read_frame_max(r, MAX_FRAME)
}

/// Reads a frame of at most `max` payload bytes (before authentication: a few KiB).
pub fn read_frame_max<R: Read>(r: &mut R, max: u32) -> Result<Msg, FrameError> {
    let mut head = [0u8; 8];
    // Distinguish a clean close before a frame from a cut inside one.
    let mut got = 0;
    while got < 8 {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Truncated(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if got == 0 && e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(FrameError::Closed)
            }
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let len = u32::from_le_bytes(head[..4].try_into().unwrap());
    let expected = u32::from_le_bytes(head[4..].try_into().unwrap());
    if len > max.min(MAX_FRAME) {
        return Err(FrameError::TooLarge { len, max: max.min(MAX_FRAME) });
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).map_err(FrameError::Truncated)?;
    let actual = crc32fast::hash(&payload);
    if actual != expected {
        return Err(FrameError::Crc { expected, actual, len });
    }
    postcard::from_bytes(&payload).map_err(|source| FrameError::Decode { len, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Msg {
        Msg::Data { disk: 1, offset: 4096, raw_len: 5, compressed: false, bytes: b"hello".to_vec().into() }
    }

    #[test]
    fn round_trip_and_errors() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &sample()).unwrap();
        assert_eq!(read_frame(&mut buf.as_slice()).unwrap(), sample());
        let mut bad = buf.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(read_frame(&mut bad.as_slice()), Err(FrameError::Crc { .. })));
        let cut = &buf[..buf.len() - 2];
        assert!(matches!(read_frame(&mut &cut[..]), Err(FrameError::Truncated(_))));
        assert!(matches!(read_frame(&mut &buf[..3]), Err(FrameError::Truncated(_))));
        assert!(matches!(read_frame(&mut &[][..]), Err(FrameError::Closed)));
        let mut big = buf.clone();
        big[..4].copy_from_slice(&(MAX_FRAME + 1).to_le_bytes());
        assert!(read_frame(&mut big.as_slice()).unwrap_err().to_string().contains("exceeds"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read_frame(&mut data.as_slice());
        }

        #[test]
        fn valid_crc_garbage_payload_is_an_error_not_a_panic(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut f = (payload.len() as u32).to_le_bytes().to_vec();
            f.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            f.extend_from_slice(&payload);
            let _ = read_frame(&mut f.as_slice());
        }

        #[test]
        fn data_messages_round_trip(offset in any::<u64>(), bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let m = Msg::Data { disk: 0, offset, raw_len: bytes.len() as u32, compressed: false, bytes: bytes.into() };
            let mut buf = Vec::new();
            write_frame(&mut buf, &m).unwrap();
            prop_assert_eq!(read_frame(&mut buf.as_slice()).unwrap(), m);
        }
    }
}
