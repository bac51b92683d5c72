//! Fuzzes the frame decoder: any byte stream must give messages or a FrameError, never a panic,
//! and every decoded message must re-encode to a frame that decodes to the same message.
#![no_main]

use ferry_replicator::proto::{read_frame, write_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    for _ in 0..64 {
        match read_frame(&mut r) {
            Ok(m) => {
                let mut buf = Vec::new();
                write_frame(&mut buf, &m).unwrap();
                assert_eq!(read_frame(&mut buf.as_slice()).unwrap(), m);
            }
            Err(_) => break,
        }
    }
});
