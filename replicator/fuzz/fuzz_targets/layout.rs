//! Fuzzes the partition-table and filesystem probes on a disk made of the input bytes: GPT,
//! MBR with logical partitions, ext2/3/4 group descriptors and bitmaps, XFS free-space btrees,
//! swap. Any disk must give a layout or an error — never a panic, a hang or a buffer sized by
//! what the disk claims.
#![no_main]

use ferry_replicator::layout;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let disk = data;
    if let Ok(l) = layout::analyze(&disk) {
        assert!(l.extent_bytes <= l.size);
    }
    let _ = layout::ext::free(&disk, 0, data.len() as u64);
    let _ = layout::xfs::free(&disk, 0, data.len() as u64);
});
